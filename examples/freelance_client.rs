//! A Freelance (10/FLP) client: [`bosun::io::freelance::FreelanceClient`] connects to
//! one or more servers directly (no broker), pings them all, and sends each request to
//! one that is up, failing over to another when a server stops answering.
//!
//! It sends a few numbered requests, one at a time, and prints each reply (the server
//! example prefixes its endpoint, so you can see which server answered). Each attempt
//! waits up to 2.5 s, three attempts in all ([`FreelanceConfig::default`]); when no
//! server answers a request the client prints the error and exits with status 1.
//!
//! ```text
//! cargo run --example freelance_server                          # tcp://127.0.0.1:5555
//! cargo run --example freelance_client                          # tcp://127.0.0.1:5555
//! cargo run --example freelance_client -- tcp://127.0.0.1:5555 tcp://127.0.0.1:5556
//! ```
//!
//! An endpoint may be spelled differently from the server's bind address
//! (`tcp://localhost:5555` for a server bound to `tcp://127.0.0.1:5555`).
//! Ctrl-C stops the client at once.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use bosun::config::FreelanceConfig;
use bosun::error::ClientError;
use bosun::io::freelance::FreelanceClient;
use bosun::{Error, Shutdown};
use tracing_subscriber::EnvFilter;

/// The server the client connects to when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

/// How many requests to send.
const REQUESTS: u32 = 5;

/// Pause between one reply and the next request, so that there is time to stop a
/// server while the client runs.
const PAUSE: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    init_logging();
    let mut endpoints: Vec<String> = std::env::args().skip(1).collect();
    if endpoints.is_empty() {
        endpoints.push(DEFAULT_ENDPOINT.to_string());
    }
    match run(&endpoints) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("freelance client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoints: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C sets the flag (which interrupts a request in flight) and wakes the pause
    // between requests.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    let (interrupt, interrupted) = mpsc::channel();
    ctrlc::set_handler(move || {
        flag.trigger();
        let _ = interrupt.send(());
    })?;

    let cfg = FreelanceConfig::default();
    println!(
        "freelance client: connecting to {} (ping every {:?}, a server is down after {:?} of silence)",
        endpoints.join(" "),
        cfg.ping_interval,
        cfg.server_ttl
    );
    let mut client = FreelanceClient::builder(endpoints)
        .config(cfg)
        .shutdown(&shutdown)
        .connect()?;

    for n in 1..=REQUESTS {
        let request = format!("request {n}");
        println!("freelance client: sending {request:?}");
        match client.request(request.into_bytes()) {
            Ok(reply) => println!(
                "freelance client: reply {:?}",
                String::from_utf8_lossy(&reply)
            ),
            Err(Error::Client(ClientError::Interrupted)) => {
                println!("freelance client: interrupted");
                return Ok(());
            }
            // ClientError::GaveUp: no server answered; ClientError::Remote: the
            // server's handler failed on the request. Their messages say which.
            Err(e) => return Err(e.into()),
        }
        if n < REQUESTS && interrupted.recv_timeout(PAUSE).is_ok() {
            println!("freelance client: interrupted");
            return Ok(());
        }
    }
    println!(
        "freelance client: done: {REQUESTS} replies, {} failovers",
        client.failovers()
    );
    Ok(())
}

/// Logs of the library on stderr (a server going down is a warning), or what
/// `RUST_LOG` asks for.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
