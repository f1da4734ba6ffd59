//! A Majordomo (7/MDP) worker: [`bosun::Worker`] registers with the broker for the
//! service `echo`, heartbeats, and answers each request with a handler of type
//! [`bosun::io::handler::Handler`].
//!
//! The handler prints what a request carries besides its payload (the request
//! context: id, attempt, service, headers) and answers with the payload frames
//! upper-cased, one reply frame per request frame. A request whose payload is `fail`
//! makes the handler return a [`HandlerError`]: the worker goes on serving, and the
//! client gets the message as a remote error ([`bosun::error::ClientError::Remote`]),
//! not as a reply; `cargo run --example majordomo_client` shows what that looks like.
//! A handler that panics is treated the same way.
//!
//! ```text
//! cargo run --example majordomo_broker                          # tcp://127.0.0.1:5555
//! cargo run --example majordomo_worker                          # connects to it
//! cargo run --example majordomo_worker -- tcp://127.0.0.1:6000  # another broker
//! cargo run --example majordomo_client
//! ```
//!
//! When the broker goes away the worker reconnects (1 s doubling to 32 s) and
//! registers again. Ctrl-C stops it: it sends DISCONNECT, and a request it was still
//! handling goes back to the broker for another worker.

use std::io::IsTerminal;
use std::process::ExitCode;

use bosun::io::handler::{self, Handler, HandlerError, Request};
use bosun::{zmq, Shutdown, Worker};
use tracing_subscriber::EnvFilter;

/// The broker the worker connects to when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

/// The service this worker offers.
const SERVICE: &str = "echo";

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

    // The handler sees the whole request. It returns the reply's payload frames, or a
    // HandlerError whose message the client receives.
    let handler: Handler = handler::from_fn(|req: Request| {
        let service = req
            .service
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        // `id` is None only for a request from a foreign 7/MDP client, which sends no
        // bosun metadata; its attempt is then 1 and it has no headers.
        let id = req.id().map_or("none".to_string(), |id| id.to_string());
        let headers = req
            .meta
            .as_ref()
            .map(|m| m.headers.clone())
            .unwrap_or_default();
        let frames: Vec<String> = req
            .payload
            .iter()
            .map(|f| format!("{:?}", String::from_utf8_lossy(f)))
            .collect();
        println!(
            "worker: request id={id} attempt={} service={service} headers={headers:?} payload=[{}]",
            req.attempt(),
            frames.join(", ")
        );
        if req.body() == b"fail" {
            println!("worker: failing request {id}");
            return Err(HandlerError::new(
                "the example worker fails every request whose payload is \"fail\"",
            ));
        }
        Ok(req.payload.iter().map(|f| f.to_ascii_uppercase()).collect())
    });

    let ctx = zmq::Context::new();
    // A context of the program's own, shared with the worker (without `.context`, the
    // worker makes one of its own).
    let worker = Worker::builder(endpoint, SERVICE).context(&ctx).connect()?;
    println!("worker: serving {SERVICE:?} for the broker at {endpoint}");
    let stats = worker.run(handler, &shutdown)?;
    // Dropping the context (after `run` returned) flushes the DISCONNECT to the broker.
    drop(ctx);
    println!(
        "worker: stopped after {} requests and {} reconnects",
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
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
