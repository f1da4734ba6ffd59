//! A Majordomo (7/MDP) broker: [`bosun::io::broker::BrokerDriver`] binds one ROUTER
//! socket that clients and workers both connect to, and routes each request to a worker
//! of its service.
//!
//! Requests for a service with no worker yet wait in the broker (up to
//! [`BrokerConfig::request_ttl`], 30 s by default) and go to the first worker that
//! registers. A worker that stops heartbeating is forgotten after three heartbeats
//! (2.5 s each by default, the 7/MDP reference values), and the requests it held are
//! handed to another worker. The broker also answers the 8/MMI services
//! (`mmi.service`, `mmi.stats`).
//!
//! ```text
//! cargo run --example majordomo_broker                          # tcp://127.0.0.1:5555
//! cargo run --example majordomo_broker -- tcp://127.0.0.1:6000  # another endpoint
//! ```
//!
//! Then, in other terminals: `cargo run --example majordomo_worker` and
//! `cargo run --example majordomo_client`. Ctrl-C stops it; `RUST_LOG=info` shows
//! workers come and go.

use std::io::IsTerminal;
use std::process::ExitCode;

use bosun::config::BrokerConfig;
use bosun::io::broker::BrokerDriver;
use bosun::Shutdown;
use tracing_subscriber::EnvFilter;

/// Where the broker binds when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

fn main() -> ExitCode {
    init_logging();
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    match run(&endpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C (or SIGTERM) sets the flag; the broker checks it at least every 100 ms.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    // Every setting has a documented default in `bosun::config`; the heartbeat must
    // match the workers' (`bosun::Worker` defaults to the same values).
    let cfg = BrokerConfig::default();
    let broker = BrokerDriver::builder(endpoint).config(cfg).bind()?;
    println!(
        "broker: listening on {} (heartbeat every {:?}, a worker is dead after {:?} of silence)",
        broker.endpoint(),
        cfg.heartbeat.interval,
        cfg.heartbeat.expiry()
    );
    broker.run(&shutdown)?;
    println!("broker: stopped");
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
