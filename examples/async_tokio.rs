//! The async Majordomo client on tokio: [`bosun::io::async_client::AsyncClient`] sends N
//! requests to a service at once, from N tasks, and prints each reply as it comes.
//!
//! ```text
//! bosun broker                              # in one terminal: tcp://127.0.0.1:5555
//! bosun worker --service echo --capacity 4  # in another
//! cargo run --example async_tokio                       # 20 requests to echo
//! cargo run --example async_tokio -- tcp://127.0.0.1:5555 200        # 200 requests
//! cargo run --example async_tokio -- tcp://127.0.0.1:6000 200 upper  # another service
//! ```
//!
//! (`cargo run -- broker` and `cargo run -- worker --service echo` do the same from a
//! checkout.) The client is a handle: each task gets a clone, and one driver thread owns
//! the socket and completes the futures, so bosun needs no runtime of its own and tokio
//! needs nothing from bosun. Each request waits up to 2.5 s for its reply and is retried,
//! three attempts in all ([`bosun::Retry::default`]); with no broker or no worker every
//! request ends in a give-up after about 8 s. A request whose handler failed (try
//! `bosun worker --service echo --exec 'exit 3'`) prints the worker's message. The
//! program exits 1 if any request failed. Ctrl-C stops the client at once
//! ([`AsyncClient::shutdown`]): the requests still waiting end as interrupted, and the
//! program exits 130.

use std::process::ExitCode;

use bosun::error::ClientError;
use bosun::io::async_client::AsyncClient;
use bosun::Error;

/// Requests sent when no count is given.
const DEFAULT_COUNT: usize = 20;
/// The service asked when none is given.
const DEFAULT_SERVICE: &str = "echo";
/// Where the broker is when no endpoint is given.
const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5555";

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let count = match args.next().map(|n| n.parse::<usize>()) {
        None => DEFAULT_COUNT,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("usage: async_tokio [ENDPOINT [COUNT [SERVICE]]]: COUNT: {e}");
            return ExitCode::from(64);
        }
    };
    let service = args.next().unwrap_or_else(|| DEFAULT_SERVICE.to_string());

    let client = match AsyncClient::connect(&endpoint) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("async_tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on_ctrl_c = client.clone();
    if let Err(e) = ctrlc::set_handler(move || on_ctrl_c.shutdown()) {
        eprintln!("async_tokio: Ctrl-C handler: {e}");
    }
    let started = bosun::io::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=count {
        let (client, service) = (client.clone(), service.clone());
        tasks.spawn(async move {
            let body = format!("request {i}").into_bytes();
            (i, client.request(&service, vec![body]).await)
        });
    }
    let (mut failed, mut interrupted) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, Ok(frames))) => {
                println!("{i}: {}", String::from_utf8_lossy(&frames.concat()))
            }
            Ok((_, Err(Error::Client(ClientError::Interrupted)))) => interrupted += 1,
            Ok((i, Err(e))) => {
                failed += 1;
                eprintln!("{i}: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("a task failed: {e}");
            }
        }
    }
    eprintln!(
        "{} of {count} answered in {:.1} ms ({} retries)",
        count - failed - interrupted,
        started.elapsed().as_secs_f64() * 1e3,
        client.retries()
    );
    if interrupted > 0 {
        eprintln!("interrupted: {interrupted} requests got no answer");
        ExitCode::from(130)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
