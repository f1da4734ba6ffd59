//! A Paranoid Pirate (6/PPP) worker: [`bosun::PpWorker`] connects to the backend of a
//! `bosun queue`, sends READY, heartbeats every second, and answers each request with
//! `<pid>: <request>` so that you can tell the workers apart.
//!
//! When the queue is silent for three heartbeats, the worker closes its socket and
//! reconnects on a fresh one, backing off from 1 s up to 32 s. The handler runs on the
//! socket thread while a guard thread keeps heartbeats flowing.
//!
//! ```text
//! cargo run --release -- queue                        # frontend :5555, backend :5556
//! cargo run --example paranoid_pirate_worker          # connects to tcp://127.0.0.1:5556
//! cargo run --example paranoid_pirate_worker -- tcp://127.0.0.1:6001
//! cargo run --example lazy_pirate_client              # requests via the frontend :5555
//! ```
//!
//! Start two workers and the requests alternate between them; kill one and the queue
//! forgets it within three seconds; stop the queue and the workers reconnect once it is
//! back. Ctrl-C stops the worker.

use std::process::ExitCode;

use bosun::io::handler::{self, Handler};
use bosun::{Heartbeat, PpWorker, Shutdown};
use tracing_subscriber::EnvFilter;

/// The queue backend the worker connects to when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5556";

fn main() -> ExitCode {
    init_logging();
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    match run(&endpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C (or SIGTERM) sets the flag; the worker checks it at least every 100 ms.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    let pid = std::process::id();
    // The handler sees only the request body (its payload frames joined). The worker
    // keeps the client's address and sends the reply back with the request's id and
    // attempt in a trailing metadata frame.
    let handler: Handler = handler::bytes(move |body: Vec<u8>| {
        let text = String::from_utf8_lossy(&body);
        println!("worker {pid}: handling {text:?}");
        format!("{pid}: {text}").into_bytes()
    });

    let ctx = zmq::Context::new();
    // The heartbeat must match the queue's (`bosun queue` defaults to the same values).
    let heartbeat = Heartbeat::default();
    println!(
        "worker {pid}: connecting to {endpoint} (heartbeat every {:?}, queue dead after {:?})",
        heartbeat.interval,
        heartbeat.expiry()
    );
    let stats = PpWorker::builder(endpoint)
        .context(&ctx)
        .heartbeat(heartbeat)
        .connect()?
        .run(handler, &shutdown)?;
    println!(
        "worker {pid}: stopped after {} requests and {} reconnects",
        stats.handled, stats.reconnects
    );
    Ok(())
}

/// Logs of the library on stderr: connections at info level, or what `RUST_LOG` asks for.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
