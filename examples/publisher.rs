//! A reliable publisher: [`bosun::Publisher`], publishing `tick N` on topic `ticks`
//! every 100 ms, with a replay endpoint that subscribers repair gaps from.
//!
//! ```text
//! cargo run --example publisher                      # PUB tcp://127.0.0.1:5556, replay :5557
//! cargo run --example subscriber                     # in another terminal
//! cargo run --example publisher -- tcp://127.0.0.1:5556 tcp://127.0.0.1:5557
//! ```
//!
//! Stop the subscriber for a while and start it again with the same arguments: with
//! `--from-start`-like history (the example subscriber asks for it) it gets every tick
//! from 1, in order, once. Ctrl-C stops the publisher.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use bosun::{Publisher, Shutdown};
use tracing_subscriber::EnvFilter;

/// Where the publisher binds when no endpoints are given.
const DEFAULT_PUB: &str = "tcp://127.0.0.1:5556";
const DEFAULT_REPLAY: &str = "tcp://127.0.0.1:5557";
/// The pause between two ticks.
const TICK: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    init_logging();
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| DEFAULT_PUB.to_string());
    let replay = args.next().unwrap_or_else(|| DEFAULT_REPLAY.to_string());
    match run(&endpoint, &replay) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("publisher: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str, replay: &str) -> Result<(), Box<dyn std::error::Error>> {
    // Ctrl-C (or SIGTERM) sets the flag; the publisher checks it at least every 100 ms.
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    let mut publisher = Publisher::builder(endpoint)
        .replay(replay)
        .heartbeat_interval(Duration::from_secs(1))
        .bind()?;
    println!(
        "publisher: listening on {} replay {} (id {})",
        publisher.endpoint(),
        publisher.replay_endpoint(),
        publisher.id()
    );
    let mut n = 0u64;
    while !shutdown.is_triggered() {
        n += 1;
        let seq = publisher.publish(b"ticks", vec![format!("tick {n}").into_bytes()])?;
        println!("publisher: published #{seq}");
        // Between ticks: heartbeats and replay answers.
        publisher.serve(TICK, &shutdown)?;
    }
    println!("publisher: stopped after {n} messages");
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
