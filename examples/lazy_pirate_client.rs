//! A Lazy Pirate client: [`bosun::LazyPirateClient`] sends a few numbered requests, one
//! at a time, and prints each reply.
//!
//! Each request waits up to 2.5 s for its reply; on a timeout the client closes its
//! socket, opens a fresh one, backs off and sends the same request again, three attempts
//! in all ([`bosun::Retry::default`]). When a request gets no reply after every attempt,
//! or the server answers that its handler failed on it, the client prints the error and
//! exits with status 1.
//!
//! ```text
//! cargo run --example lazy_pirate_server             # in one terminal
//! cargo run --example lazy_pirate_client             # in another: tcp://127.0.0.1:5555
//! cargo run --example lazy_pirate_client -- tcp://127.0.0.1:6000
//! ```
//!
//! It talks to anything that answers a REQ socket: the server example, `bosun server`,
//! or the frontend of `bosun queue` with workers behind it. Stop the server while the
//! client runs to see it retry, and start it again within a few seconds to see it
//! recover. Ctrl-C stops the client at once.

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use bosun::error::ClientError;
use bosun::{Error, LazyPirateClient, Retry, Shutdown};
use tracing_subscriber::EnvFilter;

/// Where the client connects when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

/// How many requests to send.
const REQUESTS: u32 = 10;

/// Pause between one reply and the next request, so that there is time to stop and
/// restart the server while the client runs.
const PAUSE: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    init_logging();
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    match run(&endpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C sets the flag (which interrupts a request in flight) and wakes the pause
    // between requests.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    let (interrupt, interrupted) = mpsc::channel();
    ctrlc::set_handler(move || {
        flag.trigger();
        let _ = interrupt.send(());
    })?;

    let retry = Retry::default();
    println!(
        "client: connecting to {endpoint} (timeout {:?}, {} attempts per request)",
        retry.timeout, retry.retries
    );
    let mut client = LazyPirateClient::builder(endpoint)
        .retry(retry)
        .shutdown(&shutdown)
        .connect()?;

    for n in 1..=REQUESTS {
        let request = format!("request {n}");
        println!("client: sending {request:?}");
        match client.request(request.into_bytes()) {
            Ok(reply) => println!("client: reply {:?}", String::from_utf8_lossy(&reply)),
            Err(Error::Client(ClientError::Interrupted)) => {
                println!("client: interrupted");
                return Ok(());
            }
            // ClientError::GaveUp: the server is down or too slow. Its message says
            // where and after how many attempts; it also hands the request body back.
            // ClientError::Remote: the server's handler failed on this request (an
            // error, a panic, a failed command); its message says why.
            Err(e) => return Err(e.into()),
        }
        if n < REQUESTS && interrupted.recv_timeout(PAUSE).is_ok() {
            println!("client: interrupted");
            return Ok(());
        }
    }
    let stats = client.stats();
    println!(
        "client: done: {} requests, {} answered, {} retries, {} replies discarded",
        stats.requests, stats.answered, stats.retries, stats.discarded
    );
    Ok(())
}

/// Logs of the library on stderr (a retry is a warning), or what `RUST_LOG` asks for.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
