//! A reliable subscriber: [`bosun::Subscriber`], printing each message of topic
//! `ticks` once, in order, with the publisher's history first (a late joiner).
//!
//! ```text
//! cargo run --example publisher
//! cargo run --example subscriber                       # tcp://127.0.0.1:5556, replay :5557
//! cargo run --example subscriber -- tcp://127.0.0.1:5556 tcp://127.0.0.1:5557 10   # 10, then exit
//! ```
//!
//! A gap (a message lost on the way, a subscriber that started late) is repaired from
//! the publisher's replay endpoint before anything after it is printed. Ctrl-C stops it.

use std::io::IsTerminal;
use std::process::ExitCode;

use bosun::error::ClientError;
use bosun::{Error, Shutdown, Subscriber};
use tracing_subscriber::EnvFilter;

const DEFAULT_PUB: &str = "tcp://127.0.0.1:5556";
const DEFAULT_REPLAY: &str = "tcp://127.0.0.1:5557";

fn main() -> ExitCode {
    init_logging();
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| DEFAULT_PUB.to_string());
    let replay = args.next().unwrap_or_else(|| DEFAULT_REPLAY.to_string());
    let count = match args
        .next()
        .map(|c| c.parse::<u64>().map_err(|_| c))
        .transpose()
    {
        Ok(c) => c,
        Err(bad) => {
            eprintln!("subscriber: the count {bad:?} is not a number of messages");
            eprintln!("usage: subscriber [PUB_ENDPOINT [REPLAY_ENDPOINT [COUNT]]]");
            return ExitCode::from(64);
        }
    };
    match run(&endpoint, &replay, count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subscriber: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str, replay: &str, count: Option<u64>) -> Result<(), Box<dyn std::error::Error>> {
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.trigger())?;

    let mut subscriber = Subscriber::builder(endpoint)
        .replay(replay)
        .topic(b"ticks")
        .from_start(true)
        .shutdown(&shutdown)
        .connect()?;
    println!("subscriber: following {endpoint} (replay {replay})");
    let mut got = 0u64;
    while count.map_or(true, |c| got < c) {
        let msg = match subscriber.recv() {
            Ok(m) => m,
            Err(Error::Client(ClientError::Interrupted)) => break,
            Err(e) => return Err(e.into()),
        };
        got += 1;
        let text: Vec<String> = msg
            .payload
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        println!("subscriber: #{} {:?}", msg.seq, text.concat());
    }
    println!("subscriber: done: {got} messages");
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
