//! `bosun client`.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;

use super::args::{parse_in_flight, parse_service};
use super::{exit, json, RetryArgs};
use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::freelance::FreelanceClient;
use crate::io::lazy_pirate::LazyPirateClient;
use crate::io::mdclient::MajordomoClient;
use crate::io::{Shutdown, SHUTDOWN_CHECK};
use crate::proto::envelope::Status;
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
    /// Speak Majordomo (7/MDP) and send to this service (not empty); without it, Lazy
    /// Pirate.
    #[arg(long, env = "BOSUN_SERVICE", value_parser = parse_service, conflicts_with = "freelance")]
    pub service: Option<String>,
    /// Majordomo only (needs --service): keep up to N requests in flight, N at least 1
    /// (replies still print in order).
    #[arg(long, default_value_t = 1, value_parser = parse_in_flight, requires = "service")]
    pub in_flight: usize,
    /// Speak Freelance (10/FLP) even to a single server (implied by several --connect).
    #[arg(long)]
    pub freelance: bool,
    /// At exit, print `client: sent N, answered N, retries N, discarded N` on stderr.
    #[arg(long)]
    pub summary: bool,
    /// Print one JSON object per request on stdout instead of the bare reply: `id`
    /// (input line number), `service`, `status` (ok, failed, refused, no_reply,
    /// too_large, unanswered), `attempt` (the one answered; null when unknown),
    /// `rtt_ms` (from the first send to the outcome, retries included), and `encoding`
    /// (utf8 or base64) with `payload` for a reply, `error` for anything else.
    #[arg(long)]
    pub json: bool,
    /// Requests on stdin and replies on stdout end with a NUL byte instead of a
    /// newline, so that they may contain newlines (with --json, only the input).
    #[arg(long, short = '0')]
    pub null: bool,
    /// Retry settings.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Sends each request, prints each reply on its own line; a failed request is
/// reported on stderr with its input line and the next is sent; the exit code says
/// what went wrong (see [`super::EXIT_CODES`]).
pub fn run(args: ClientArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    let terminator = if args.null { b'\0' } else { b'\n' };
    let requests = match args.request.clone() {
        Some(one) => {
            let (tx, rx) = mpsc::channel();
            let _ = tx.send(one.into_bytes());
            rx
        }
        None => stdin_lines(terminator),
    };
    let mut out = Output::new(&args);
    if let Some(service) = args.service.clone() {
        return super::mdclient::run(&ctx, &args, &service, requests, &mut out, shutdown);
    }
    if args.freelance || args.connect.contains(',') {
        return run_freelance(&ctx, &args, requests, &mut out, shutdown);
    }
    let mut client = LazyPirateClient::builder(&args.connect)
        .context(&ctx)
        .retry(args.retry.retry())
        .shutdown(shutdown)
        .connect()?;
    let retry = args.retry.retry();
    let probe = || probe(&ctx, &args.connect, None, &retry, shutdown);
    request_lines(
        &requests,
        shutdown,
        &mut out,
        |body| {
            let before = client.stats().retries;
            let result = client.request(body);
            let attempt = attempts_since(before, client.stats().retries);
            (result, Some(attempt))
        },
        probe,
    )?;
    if args.summary {
        let s = client.stats();
        eprintln!(
            "client: sent {}, answered {}, retries {}, discarded {}",
            s.requests, s.answered, s.retries, s.discarded
        );
    }
    Ok(out.code())
}

/// The attempt that was answered, from a retry counter before and after a request.
pub(super) fn attempts_since(before: u64, after: u64) -> u32 {
    u32::try_from(after.saturating_sub(before).saturating_add(1)).unwrap_or(u32::MAX)
}

fn run_freelance(
    ctx: &zmq::Context,
    args: &ClientArgs,
    requests: mpsc::Receiver<Vec<u8>>,
    out: &mut Output,
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
    let mut client = FreelanceClient::builder(&endpoints)
        .context(ctx)
        .config(cfg)
        .shutdown(shutdown)
        .connect()?;
    // Freelance does not say which attempt was answered: `attempt` is null.
    let (sent, answered) = request_lines(
        &requests,
        shutdown,
        out,
        |body| (client.request(body), None),
        || None,
    )?;
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {answered}, retries {}, discarded 0",
            client.failovers()
        );
    }
    Ok(out.code())
}

/// Sends each line of `requests` with `request` (which returns the outcome and, when
/// it knows, the attempt that was answered), one at a time and in order, writing each
/// outcome to `out`. A request that failed at the peer (its handler failed, or it was
/// refused) or that is too large to send is reported with its line number and the next
/// line is sent. Stops at the end of input, on Ctrl-C, when stdout is closed, or at the
/// first request that gets no answer at all: the peer is gone, and `diagnose` may say
/// why on the same line. Returns how many requests were sent and answered.
pub(super) fn request_lines(
    requests: &mpsc::Receiver<Vec<u8>>,
    shutdown: &Shutdown,
    out: &mut Output,
    mut request: impl FnMut(Vec<u8>) -> (Result<Vec<u8>, Error>, Option<u32>),
    mut diagnose: impl FnMut() -> Option<String>,
) -> Result<(u64, u64), Error> {
    let (mut line_no, mut sent, mut answered) = (0u64, 0u64, 0u64);
    while !out.is_closed() {
        let line = match requests.recv_timeout(SHUTDOWN_CHECK) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) if !shutdown.is_triggered() => continue,
            Err(_) => break,
        };
        line_no += 1;
        let start = crate::io::now();
        let (result, attempt) = request(line);
        let rtt = crate::io::now() - start;
        match result {
            Ok(reply) => {
                sent += 1;
                answered += 1;
                out.reply(line_no, attempt, rtt, &reply)?;
            }
            Err(Error::Client(ClientError::Interrupted)) => {
                sent += 1;
                break;
            }
            Err(e @ Error::Client(ClientError::TooLarge { .. })) => {
                out.failure(line_no, None, None, &e, None)?;
            }
            Err(e @ Error::Client(ClientError::Remote { .. })) => {
                sent += 1;
                out.failure(line_no, attempt, Some(rtt), &e, None)?;
            }
            Err(e @ Error::Client(ClientError::GaveUp { attempts, .. })) => {
                sent += 1;
                let why = diagnose();
                out.failure(line_no, Some(attempts), Some(rtt), &e, why.as_deref())?;
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((sent, answered))
}

/// After a request got no reply at all: asks the peer at `endpoint`, once and briefly,
/// whether it is a Majordomo broker (8/MMI `mmi.service`), and says what that shows.
/// `service` is the service the client asked for (Majordomo) or `None` (Lazy Pirate).
pub(super) fn probe(
    ctx: &zmq::Context,
    endpoint: &str,
    service: Option<&str>,
    retry: &Retry,
    shutdown: &Shutdown,
) -> Option<String> {
    if shutdown.is_triggered() {
        return None;
    }
    let quick = Retry {
        timeout: retry.timeout.min(Duration::from_secs(1)),
        retries: 1,
        ..*retry
    };
    let mut client = MajordomoClient::builder(endpoint)
        .context(ctx)
        .retry(quick)
        .shutdown(shutdown)
        .connect()
        .ok()?;
    let asked = service.unwrap_or("echo");
    let answer = client.request("mmi.service", asked.as_bytes().to_vec());
    Some(match (service, answer) {
        (Some(s), Ok(code)) if code == b"404" => {
            format!("the broker answered: no worker for service {s:?}")
        }
        (Some(s), Ok(code)) if code == b"200" => format!(
            "the broker has a worker for service {s:?}, but no reply came in time: it is busy or slow (try a longer --timeout)"
        ),
        (None, Ok(code)) if code == b"200" || code == b"404" => {
            "a Majordomo broker answers there, not a Lazy Pirate server: give --service NAME"
                .to_string()
        }
        (_, Ok(code)) if code == asked.as_bytes() => {
            "a plain server echoed a Majordomo probe: it is up but did not answer in time".into()
        }
        (Some(_), Ok(_)) => "the peer is not a Majordomo broker (it did not answer mmi.service with 200 or 404)".into(),
        (None, Ok(_)) => "something answered a Majordomo probe, but not the request".into(),
        (Some(_), Err(_)) => "no broker answered there either".into(),
        (None, Err(_)) => {
            "nothing answers there: no server running, a queue with no worker, or a stuck server"
                .into()
        },
    })
}

/// Where outcomes go: each reply on stdout (bare or as JSON), each failure on stderr
/// (and as JSON on stdout with `--json`); and what the exit code will be.
pub(super) struct Output {
    json: bool,
    terminator: u8,
    service: Option<String>,
    closed: bool,
    failed: bool,
    refused: bool,
    too_large: bool,
    gave_up: bool,
}

impl Output {
    pub(super) fn new(args: &ClientArgs) -> Self {
        Output {
            json: args.json,
            terminator: if args.null && !args.json {
                b'\0'
            } else {
                b'\n'
            },
            service: args.service.clone(),
            closed: false,
            failed: false,
            refused: false,
            too_large: false,
            gave_up: false,
        }
    }

    /// Whether stdout was closed by its reader: nothing more is wanted.
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The exit code the outcomes so far make (see [`super::EXIT_CODES`]).
    pub(super) fn code(&self) -> ExitCode {
        ExitCode::from(if self.gave_up {
            exit::UNAVAILABLE
        } else if STDIN_FAILED.load(std::sync::atomic::Ordering::SeqCst) {
            exit::IO
        } else if self.refused {
            exit::TEMPFAIL
        } else if self.too_large {
            exit::DATA
        } else if self.failed {
            exit::FAILED
        } else {
            exit::OK
        })
    }

    fn record(
        &self,
        line: u64,
        status: &str,
        attempt: Option<u32>,
        rtt: Option<Duration>,
    ) -> json::Object {
        let o = json::Object::new()
            .opt_u64("id", Some(line))
            .opt_str("service", self.service.as_deref())
            .str("status", status)
            .opt_u64("attempt", attempt.map(u64::from));
        match rtt {
            Some(rtt) => o.num("rtt_ms", (rtt.as_secs_f64() * 1e6).round() / 1e3),
            None => o.raw("rtt_ms", "null"),
        }
    }

    /// The reply to input line `line`.
    pub(super) fn reply(
        &mut self,
        line: u64,
        attempt: Option<u32>,
        rtt: Duration,
        body: &[u8],
    ) -> Result<(), Error> {
        if self.json {
            let o = self
                .record(line, "ok", attempt, Some(rtt))
                .bytes("payload", body);
            self.write(o.finish().as_bytes(), b'\n')
        } else {
            self.write(body, self.terminator)
        }
    }

    /// The failure of input line `line`: on stderr, `note` (what a probe found) on the
    /// same line; with `--json` also on stdout.
    pub(super) fn failure(
        &mut self,
        line: u64,
        attempt: Option<u32>,
        rtt: Option<Duration>,
        e: &Error,
        note: Option<&str>,
    ) -> Result<(), Error> {
        let status = match e {
            Error::Client(ClientError::Remote { status, .. }) if *status == Status::Refused => {
                self.refused = true;
                "refused"
            }
            Error::Client(ClientError::Remote { .. }) => {
                self.failed = true;
                "failed"
            }
            Error::Client(ClientError::TooLarge { .. }) => {
                self.too_large = true;
                "too_large"
            }
            Error::Client(ClientError::GaveUp { .. }) => {
                self.gave_up = true;
                "no_reply"
            }
            _ => {
                self.failed = true;
                "error"
            }
        };
        let mut message = super::describe(e);
        if let Some(note) = note {
            message = format!("{message} ({note})");
        }
        eprintln!("bosun client: line {line}: {message}");
        if self.json {
            let o = self
                .record(line, status, attempt, rtt)
                .str("error", &message);
            self.write(o.finish().as_bytes(), b'\n')?;
        }
        Ok(())
    }

    /// Input line `line` got no outcome before the client stopped. Nothing is said when
    /// the client stopped because its reader closed stdout: nobody wants the rest.
    pub(super) fn unanswered(&mut self, line: u64) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        let message = "no answer before the client stopped";
        eprintln!("bosun client: line {line}: {message}");
        if self.json {
            let o = self
                .record(line, "unanswered", None, None)
                .str("error", message);
            self.write(o.finish().as_bytes(), b'\n')?;
        }
        Ok(())
    }

    /// Writes `bytes` and `end` to stdout, flushed so a reader sees them at once. A
    /// reader that has gone away (EPIPE) is not an error: the output is closed.
    fn write(&mut self, bytes: &[u8], end: u8) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match out
            .write_all(bytes)
            .and_then(|_| out.write_all(&[end]))
            .and_then(|_| out.flush())
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::debug!("stdout closed by its reader; sending no more requests");
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(Error::io("write reply to stdout", e)),
        }
    }
}

/// Requests of stdin as bytes (any bytes: a request need not be UTF-8), each ended by
/// Set when reading stdin failed: the input ended early, so the exit status is 74.
static STDIN_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Requests of stdin as bytes (any bytes: a request need not be UTF-8), each ended by
/// `terminator` (newline, or NUL with `--null`), which is removed (nothing else is
/// changed); read on a thread so that Ctrl-C is seen while stdin is quiet. A read error
/// ends the input with a message on stderr and makes the exit status 74 (I/O error).
fn stdin_lines(terminator: u8) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::sync_channel(64);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(terminator, &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&terminator) {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("bosun client: reading stdin: {e}");
                    STDIN_FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    rx
}
