//! A Majordomo (7/MDP) client: [`bosun::io::mdclient::MajordomoClient`] sends a few
//! requests to the service `echo` through the broker, one at a time, and prints each
//! reply, or the remote error when the worker's handler failed on the request.
//!
//! One request is `fail`, which the worker example's handler refuses: the client gets
//! [`ClientError::Remote`] with the handler's message (not a reply, and not a retry:
//! the request was delivered and answered), and goes on with the next request. A
//! request that gets no answer at all is retried on a fresh socket (2.5 s per attempt,
//! three attempts, [`bosun::Retry::default`]); after the last one the client prints the
//! error and exits with status 1.
//!
//! ```text
//! cargo run --example majordomo_broker                          # tcp://127.0.0.1:5555
//! cargo run --example majordomo_worker
//! cargo run --example majordomo_client                          # tcp://127.0.0.1:5555
//! cargo run --example majordomo_client -- tcp://127.0.0.1:6000  # another broker
//! ```
//!
//! Start the client before the worker and its requests wait in the broker until the
//! worker registers. Ctrl-C stops the client at once.

use std::io::IsTerminal;
use std::process::ExitCode;

use bosun::error::ClientError;
use bosun::io::mdclient::MajordomoClient;
use bosun::{Error, Retry, Shutdown};
use tracing_subscriber::EnvFilter;

/// The broker the client connects to when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

/// The service the requests are for.
const SERVICE: &str = "echo";

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
    // Ctrl-C sets the flag, which interrupts a request in flight.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    // Each request is a list of payload frames; the worker sees the same frames.
    let requests: Vec<Vec<Vec<u8>>> = vec![
        vec![b"hello".to_vec()],
        vec![b"two".to_vec(), b"frames".to_vec()],
        vec![b"fail".to_vec()],
        vec![b"bye".to_vec()],
    ];

    let retry = Retry::default();
    println!(
        "client: sending {} requests to {SERVICE:?} via {endpoint} (timeout {:?}, {} attempts per request)",
        requests.len(),
        retry.timeout,
        retry.retries
    );
    let mut client = MajordomoClient::builder(endpoint)
        .retry(retry)
        .shutdown(&shutdown)
        .connect()?;

    let (mut answered, mut failed) = (0, 0);
    for payload in requests {
        let shown = show(&payload);
        println!("client: sending {shown}");
        match client.request_frames(SERVICE, payload) {
            Ok(reply) => {
                answered += 1;
                println!("client: reply to {shown}: {}", show(&reply));
            }
            // The worker's handler failed on this request (an error, a panic) or the
            // broker refused it; the message says which request and why.
            Err(Error::Client(e @ ClientError::Remote { .. })) => {
                failed += 1;
                println!("client: remote error for {shown}: {e}");
            }
            Err(Error::Client(ClientError::Interrupted)) => {
                println!("client: interrupted");
                return Ok(());
            }
            // ClientError::GaveUp: no broker, or no worker for the service; its message
            // says where and after how many attempts, and it hands the body back.
            Err(e) => return Err(e.into()),
        }
    }
    println!(
        "client: done: {answered} replies, {failed} failed remotely, {} retries",
        client.retries()
    );
    Ok(())
}

/// Payload frames as text, for printing: `["two", "frames"]`.
fn show(frames: &[Vec<u8>]) -> String {
    let frames: Vec<String> = frames
        .iter()
        .map(|f| format!("{:?}", String::from_utf8_lossy(f)))
        .collect();
    format!("[{}]", frames.join(", "))
}

/// Logs of the library on stderr (a retry is a warning), or what `RUST_LOG` asks for.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
