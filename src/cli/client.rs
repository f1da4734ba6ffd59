//! `bosun client`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::mpsc;

use clap::Args;

use super::RetryArgs;
use crate::error::{ClientError, Error};
use crate::io::freelance::FreelanceClient;
use crate::io::lazy_pirate::LazyPirateClient;
use crate::io::{Shutdown, SHUTDOWN_CHECK};
use crate::proto::freelance::FreelanceConfig;

/// Options of `bosun client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, queue frontend or broker; several, comma-separated, for Freelance
    /// (brokerless failover between servers).
    #[arg(long, env = "BOSUN_CONNECT", default_value = "tcp://127.0.0.1:5555")]
    pub connect: String,
    /// Send this one request; without it, each line of stdin is one request, in order.
    #[arg(long)]
    pub request: Option<String>,
    /// Speak Majordomo (7/MDP) and send to this service; without it, Lazy Pirate.
    #[arg(long, env = "BOSUN_SERVICE")]
    pub service: Option<String>,
    /// Majordomo only: keep up to N requests in flight (replies still print in order).
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Speak Freelance (10/FLP) even to a single server (implied by several --connect).
    #[arg(long)]
    pub freelance: bool,
    /// At exit, print `client: sent N, answered N, retries N, discarded N` on stderr.
    #[arg(long)]
    pub summary: bool,
    /// Retry settings.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Sends each request, prints each reply on its own line; exits 1 with a one-line
/// reason on stderr when a request gets no reply after every attempt.
pub fn run(args: ClientArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    let requests = match args.request.clone() {
        Some(one) => {
            let (tx, rx) = mpsc::channel();
            let _ = tx.send(one.into_bytes());
            rx
        }
        None => stdin_lines(),
    };
    if let Some(service) = args.service.clone() {
        return super::mdclient::run(&ctx, &args, &service, requests, shutdown);
    }
    if args.freelance || args.connect.contains(',') {
        return run_freelance(&ctx, &args, requests, shutdown);
    }
    let mut client = LazyPirateClient::new(&ctx, &args.connect, args.retry.retry())?
        .with_shutdown(shutdown.clone());
    let (code, _, _) = request_lines(&requests, shutdown, |body| client.request(body))?;
    if args.summary {
        let s = client.stats();
        eprintln!(
            "client: sent {}, answered {}, retries {}, discarded {}",
            s.requests, s.answered, s.retries, s.discarded
        );
    }
    Ok(code)
}

fn run_freelance(
    ctx: &zmq::Context,
    args: &ClientArgs,
    requests: mpsc::Receiver<Vec<u8>>,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    let endpoints: Vec<String> = args
        .connect
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let cfg = FreelanceConfig {
        retry: args.retry.retry(),
        ..FreelanceConfig::default()
    };
    let mut client = FreelanceClient::new(ctx, &endpoints, cfg)?.with_shutdown(shutdown.clone());
    let (code, sent, answered) = request_lines(&requests, shutdown, |body| client.request(body))?;
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {answered}, retries {}, discarded 0",
            client.failovers()
        );
    }
    Ok(code)
}

/// Sends each line of `requests` with `request`, one at a time and in order, printing
/// each reply on its own line. A request the peer answered with a failure (its handler
/// failed) is reported on stderr with its line number and the next line is sent; the
/// exit code is then 1. Stops at the end of input or on Ctrl-C, or at the first request
/// that gets no answer at all (a one-line reason on stderr, exit 1): the peer is gone.
/// Returns the exit code and how many requests were sent and answered.
pub(super) fn request_lines(
    requests: &mpsc::Receiver<Vec<u8>>,
    shutdown: &Shutdown,
    mut request: impl FnMut(Vec<u8>) -> Result<Vec<u8>, Error>,
) -> Result<(ExitCode, u64, u64), Error> {
    let (mut sent, mut answered, mut failed) = (0u64, 0u64, false);
    let code = loop {
        let line = match requests.recv_timeout(SHUTDOWN_CHECK) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) if !shutdown.is_triggered() => continue,
            Err(_) => break ExitCode::SUCCESS,
        };
        sent += 1;
        match request(line) {
            Ok(reply) => {
                answered += 1;
                print_reply(&reply)?;
            }
            Err(Error::Client(ClientError::Interrupted)) => break ExitCode::SUCCESS,
            Err(e @ Error::Client(ClientError::Remote { .. })) => {
                report_failure(sent, &e);
                failed = true;
            }
            Err(e) => {
                eprintln!("bosun client: line {sent}: {e}");
                break ExitCode::FAILURE;
            }
        }
    };
    let code = if failed { ExitCode::FAILURE } else { code };
    Ok((code, sent, answered))
}

/// Says on stderr that the request of input line `line` failed.
pub(super) fn report_failure(line: u64, e: &dyn std::fmt::Display) {
    eprintln!("bosun client: line {line}: {e}");
}

/// Writes one reply and a newline to stdout, flushed so a reader sees it at once.
pub(super) fn print_reply(reply: &[u8]) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(reply)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("write reply to stdout", e))
}

/// Lines of stdin as bytes (any bytes: a line need not be UTF-8), without their
/// `\n` (nothing else is changed), read on a thread so that Ctrl-C is seen while stdin is quiet. A
/// read error ends the input with a message on stderr.
fn stdin_lines() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("bosun client: reading stdin: {e}");
                    return;
                }
            }
        }
    });
    rx
}
