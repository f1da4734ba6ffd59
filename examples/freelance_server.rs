//! A Freelance (10/FLP) server: [`bosun::io::freelance::FreelanceServer`], a brokerless
//! server that answers pings and requests from Freelance clients.
//!
//! It answers each request with `<endpoint>: <request>`, so that a client with several
//! servers can tell which one answered. A client may spell the address its own way
//! (`tcp://localhost:5555` reaches a server bound to `tcp://127.0.0.1:5555`): it knows
//! each server by the connection it made.
//!
//! ```text
//! cargo run --example freelance_server                          # tcp://127.0.0.1:5555
//! cargo run --example freelance_server -- tcp://127.0.0.1:5556  # a second server
//! cargo run --example freelance_client -- tcp://127.0.0.1:5555 tcp://127.0.0.1:5556
//! ```
//!
//! Stop one server while the client runs and the client fails over to the other.
//! Ctrl-C stops it.

use std::io::IsTerminal;
use std::process::ExitCode;

use bosun::io::freelance::FreelanceServer;
use bosun::io::handler::{self, Handler};
use bosun::Shutdown;
use tracing_subscriber::EnvFilter;

/// Where the server binds when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

fn main() -> ExitCode {
    init_logging();
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    match run(&endpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("freelance server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C (or SIGTERM) sets the flag; the server checks it at least every 100 ms.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    let server = FreelanceServer::bind(endpoint)?;
    let me = server.endpoint();
    println!("freelance server: listening on {me}");

    // The same handler type as every worker and server: here, one that thinks in bytes.
    let name = me.clone();
    let handler: Handler = handler::bytes(move |body: Vec<u8>| {
        let text = String::from_utf8_lossy(&body);
        println!("freelance server: answering {text:?}");
        format!("{name}: {text}").into_bytes()
    });

    server.run(handler, &shutdown)?;
    println!("freelance server: stopped");
    Ok(())
}

/// Logs of the library on stderr: warnings and above, or what `RUST_LOG` asks for.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
