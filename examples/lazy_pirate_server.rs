//! A Lazy Pirate server: [`bosun::io::server::Server`] (a REP socket) with a handler
//! closure of type [`bosun::io::handler::Handler`].
//!
//! It answers every request with `echo: <request>`. Given a second argument `N`, it
//! drops every Nth request it receives, retries included, unanswered (the REP socket is
//! closed and bound again, as a server that crashed and came back would), so that you
//! can watch a Lazy Pirate client time out and retry.
//!
//! ```text
//! cargo run --example lazy_pirate_server                          # tcp://127.0.0.1:5555
//! cargo run --example lazy_pirate_server -- tcp://127.0.0.1:6000  # another endpoint
//! cargo run --example lazy_pirate_server -- tcp://127.0.0.1:5555 3  # lose every 3rd
//! ```
//!
//! Then, in another terminal: `cargo run --example lazy_pirate_client`.
//! Ctrl-C stops it. `RUST_LOG=debug` shows more of what the library does.

use std::process::ExitCode;

use bosun::io::handler::{self, Handler};
use bosun::io::server::{Faults, Server};
use bosun::Shutdown;
use tracing_subscriber::EnvFilter;

/// Where the server binds when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

fn main() -> ExitCode {
    init_logging();
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let fail_every = match args.next().map(|n| n.parse::<u64>()) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => {
            eprintln!("lazy_pirate_server: the second argument must be a whole number > 0");
            return ExitCode::FAILURE;
        }
    };
    match run(&endpoint, fail_every) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazy_pirate_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str, fail_every: Option<u64>) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C (or SIGTERM) sets the flag; the server checks it at least every 100 ms.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    let faults = Faults {
        fail_every,
        ..Faults::default()
    };
    let server = Server::builder(endpoint).faults(faults).bind()?;
    println!("server: listening on {}", server.endpoint());
    if let Some(n) = fail_every {
        println!("server: 1 request in {n} received will be dropped unanswered");
    }

    // The handler sees only the request body (its payload frames joined). The server
    // sends the reply back with the request's id and attempt in a trailing metadata
    // frame, so the client can match it to its request.
    let handler: Handler = handler::bytes(|body: Vec<u8>| {
        let text = String::from_utf8_lossy(&body);
        println!("server: answering {text:?}");
        format!("echo: {text}").into_bytes()
    });

    server.run(handler, &shutdown)?;
    println!("server: stopped");
    Ok(())
}

/// Logs of the library on stderr: warnings and above, or what `RUST_LOG` asks for.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
