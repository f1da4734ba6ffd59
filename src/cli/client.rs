//! `bosun client`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use uuid::Uuid;

use super::args::{parse_in_flight, parse_service};
use super::{exit, json, RetryArgs};
use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::freelance::FreelanceClient;
use crate::io::lazy_pirate::LazyPirateClient;
use crate::io::mdclient::MajordomoClient;
use crate::io::outbox::{self, OutboxConfig, SharedOutbox, DEFAULT_OUTBOX_LIMIT};
use crate::io::{Shutdown, SHUTDOWN_CHECK};
use crate::proto::envelope::Status;
use crate::proto::freelance::FreelanceConfig;
use crate::store::{Durability, OutboxRecord, Store};

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
    /// (input line number; for a request recovered from the outbox, its message id,
    /// with `recovered` true), `service`, `status` (ok, failed, refused, no_reply,
    /// too_large, outbox_full, not_stored, unanswered), `attempt` (the one answered;
    /// null when unknown), `rtt_ms` (from the first send to the outcome, retries
    /// included), and `encoding` (utf8 or base64) with `payload` for a reply, `error`
    /// for anything else.
    #[arg(long)]
    pub json: bool,
    /// Requests on stdin and replies on stdout end with a NUL byte instead of a
    /// newline, so that they may contain newlines (with --json, only the input).
    #[arg(long, short = '0')]
    pub null: bool,
    /// Retry settings.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Outbox settings.
    #[command(flatten)]
    pub outbox: OutboxArgs,
}

/// `--data-dir`, `--durability`, `--outbox-limit`: the client's outbox.
#[derive(Debug, Clone, Args)]
pub struct OutboxArgs {
    /// Keep every request in an outbox in DIR (a sled database, created when missing;
    /// one process at a time) from before it is sent until it is answered; on start,
    /// re-send what a crash left there, with the original ids, before reading input.
    /// Requests given up on go to DIR's dead letters (see `bosun dlq`).
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: when the outbox flushes. `every`: before each request is sent;
    /// `batched`: one flush for the requests sent together, before they are sent;
    /// `none`: sled's background flush only (a crash may lose the last 500 ms).
    #[arg(long, env = "BOSUN_DURABILITY", value_name = "MODE", default_value = "batched", value_parser = parse_durability, requires = "data_dir")]
    pub durability: Durability,
    /// With --data-dir: the most requests pending in the outbox; beyond it a request
    /// is refused, exit 75.
    #[arg(long, env = "BOSUN_OUTBOX_LIMIT", value_name = "N", default_value_t = DEFAULT_OUTBOX_LIMIT, requires = "data_dir")]
    pub outbox_limit: usize,
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse()
}

impl OutboxArgs {
    /// Opens the store of `--data-dir`, if given, with the outbox settings.
    pub fn open(&self) -> Result<Option<(Store, OutboxConfig)>, Error> {
        let Some(dir) = &self.data_dir else {
            return Ok(None);
        };
        let config = OutboxConfig {
            durability: self.durability,
            limit: self.outbox_limit,
        };
        config.validate()?;
        Ok(Some((Store::open(dir)?, config)))
    }
}

/// Gives a client builder the outbox, if there is one.
pub(super) trait WithOutbox: Sized {
    fn outbox(self, store: &Store, config: OutboxConfig) -> Self;

    fn maybe_outbox(self, outbox: &Option<(Store, OutboxConfig)>) -> Self {
        match outbox {
            Some((store, config)) => self.outbox(store, *config),
            None => self,
        }
    }
}

impl WithOutbox for crate::io::lazy_pirate::LazyPirateClientBuilder {
    fn outbox(self, store: &Store, config: OutboxConfig) -> Self {
        self.outbox(store, config)
    }
}

impl WithOutbox for crate::io::mdclient::MajordomoClientBuilder {
    fn outbox(self, store: &Store, config: OutboxConfig) -> Self {
        self.outbox(store, config)
    }
}

impl WithOutbox for crate::io::mdclient::AsyncMajordomoClientBuilder {
    fn outbox(self, store: &Store, config: OutboxConfig) -> Self {
        self.outbox(store, config)
    }
}

impl WithOutbox for crate::io::freelance::FreelanceClientBuilder {
    fn outbox(self, store: &Store, config: OutboxConfig) -> Self {
        self.outbox(store, config)
    }
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
    let store = args.outbox.open()?;
    if let Some(service) = args.service.clone() {
        return super::mdclient::run(&ctx, &args, &service, &store, requests, &mut out, shutdown);
    }
    if args.freelance || args.connect.contains(',') {
        return run_freelance(&ctx, &args, &store, requests, &mut out, shutdown);
    }
    let mut client = LazyPirateClient::builder(&args.connect)
        .context(&ctx)
        .retry(args.retry.retry())
        .shutdown(shutdown)
        .maybe_outbox(&store)
        .connect()?;
    let retry = args.retry.retry();
    let pending = client.pending()?;
    log_recovery(client.outbox(), pending.len());
    let (_, _, go_on) = resend_pending(
        pending,
        &mut out,
        |record| {
            let before = client.stats().retries;
            let result = client.resend(record).map(|f| f.concat());
            let attempt = attempts_since(before, client.stats().retries);
            (result, Some(attempt.saturating_add(record.attempts)))
        },
        || probe(&ctx, &args.connect, None, &retry, shutdown),
    )?;
    if go_on {
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
            || probe(&ctx, &args.connect, None, &retry, shutdown),
        )?;
    }
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
    store: &Option<(Store, OutboxConfig)>,
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
        .maybe_outbox(store)
        .connect()?;
    let pending = client.pending()?;
    log_recovery(client.outbox(), pending.len());
    // Freelance does not say which attempt was answered: `attempt` is null.
    let (mut sent, mut answered, go_on) = resend_pending(
        pending,
        out,
        |record| (client.resend(record).map(|f| f.concat()), None),
        || None,
    )?;
    if go_on {
        let (s, a) = request_lines(
            &requests,
            shutdown,
            out,
            |body| (client.request(body), None),
            || None,
        )?;
        sent += s;
        answered += a;
    }
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
        let tag = Tag::Line(line_no);
        match report(out, tag, result, attempt, rtt, &mut diagnose)? {
            Reported::Answered => {
                sent += 1;
                answered += 1;
            }
            Reported::Failed => sent += 1,
            Reported::NotSent => {}
            Reported::Stop { sent: s } => {
                sent += u64::from(s);
                break;
            }
        }
    }
    Ok((sent, answered))
}

/// What [`report`] made of one outcome.
enum Reported {
    /// A reply.
    Answered,
    /// Sent, and failed at the peer; go on.
    Failed,
    /// Not sent (too large); go on.
    NotSent,
    /// Stop sending: the peer is gone, the client was interrupted, or the outbox cannot
    /// take more. Whether the request was sent.
    Stop { sent: bool },
}

/// Writes the outcome of one request to `out`, as [`request_lines`] describes.
fn report(
    out: &mut Output,
    tag: Tag,
    result: Result<Vec<u8>, Error>,
    attempt: Option<u32>,
    rtt: Duration,
    diagnose: &mut impl FnMut() -> Option<String>,
) -> Result<Reported, Error> {
    Ok(match result {
        Ok(reply) => {
            out.reply(tag, attempt, rtt, &reply)?;
            Reported::Answered
        }
        Err(Error::Client(ClientError::Interrupted)) => Reported::Stop { sent: true },
        Err(e @ Error::Client(ClientError::TooLarge { .. })) => {
            out.failure(tag, None, None, &e, None)?;
            Reported::NotSent
        }
        Err(e @ Error::Client(ClientError::Remote { .. })) => {
            out.failure(tag, attempt, Some(rtt), &e, None)?;
            Reported::Failed
        }
        Err(e @ Error::Client(ClientError::GaveUp { attempts, .. })) => {
            let why = diagnose();
            out.failure(tag, Some(attempts), Some(rtt), &e, why.as_deref())?;
            Reported::Stop { sent: true }
        }
        Err(e @ Error::Client(ClientError::OutboxFull { .. } | ClientError::NotStored { .. })) => {
            out.failure(tag, None, None, &e, None)?;
            Reported::Stop { sent: false }
        }
        Err(e) => return Err(e),
    })
}

/// Logs what the client found in its outbox on start (info level), if it has one.
pub(super) fn log_recovery(outbox: Option<&SharedOutbox>, pending: usize) {
    if let Some(outbox) = outbox {
        outbox::log_recovery(&crate::io::guard::lock(outbox), pending);
    }
}

/// Re-sends the requests a crash left in the outbox (`records`, in the order they were
/// made) one at a time with `resend`, and writes each outcome to `out` as recovered.
/// Returns how many were sent and answered, and whether to go on with the input: not
/// after a request that got no answer at all, an interruption or a full outbox (the
/// rest stay pending for the next start).
pub(super) fn resend_pending(
    records: Vec<OutboxRecord>,
    out: &mut Output,
    mut resend: impl FnMut(&OutboxRecord) -> (Result<Vec<u8>, Error>, Option<u32>),
    mut diagnose: impl FnMut() -> Option<String>,
) -> Result<(u64, u64, bool), Error> {
    let (mut sent, mut answered) = (0u64, 0u64);
    for record in &records {
        if out.is_closed() {
            return Ok((sent, answered, false));
        }
        let start = crate::io::now();
        let (result, attempt) = resend(record);
        let rtt = crate::io::now() - start;
        let tag = Tag::Recovered(record.id);
        match report(out, tag, result, attempt, rtt, &mut diagnose)? {
            Reported::Answered => {
                sent += 1;
                answered += 1;
            }
            Reported::Failed => sent += 1,
            Reported::NotSent => {}
            Reported::Stop { sent: s } => {
                sent += u64::from(s);
                return Ok((sent, answered, false));
            }
        }
    }
    Ok((sent, answered, true))
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
    // Its own short budget: the request's deadline may be over already.
    let quick = Retry {
        timeout: retry.timeout.min(Duration::from_secs(1)),
        retries: 1,
        deadline: None,
        ..*retry
    };
    let longer = if retry.deadline.is_some() {
        "--deadline or --timeout"
    } else {
        "--timeout"
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
            "the broker has a worker for service {s:?}, but no reply came in time: it is busy or slow (try a longer {longer})"
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

/// Which request an outcome belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    /// The request of input line N (from 1).
    Line(u64),
    /// A request recovered from the outbox, by its message id (it has no input line).
    Recovered(Uuid),
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
    not_stored: bool,
    /// The data dir whose dead letters keep what is given up or refused.
    data_dir: Option<PathBuf>,
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
            not_stored: false,
            data_dir: args.outbox.data_dir.clone(),
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
        } else if self.not_stored || STDIN_FAILED.load(std::sync::atomic::Ordering::SeqCst) {
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
        tag: Tag,
        status: &str,
        attempt: Option<u32>,
        rtt: Option<Duration>,
    ) -> json::Object {
        let o = match tag {
            Tag::Line(line) => json::Object::new().opt_u64("id", Some(line)),
            Tag::Recovered(id) => json::Object::new()
                .str("id", &id.to_string())
                .raw("recovered", "true"),
        };
        let o = o
            .opt_str("service", self.service.as_deref())
            .str("status", status)
            .opt_u64("attempt", attempt.map(u64::from));
        match rtt {
            Some(rtt) => o.num("rtt_ms", (rtt.as_secs_f64() * 1e6).round() / 1e3),
            None => o.raw("rtt_ms", "null"),
        }
    }

    /// The reply to the request `tag`. A recovered request's is also told on stderr.
    pub(super) fn reply(
        &mut self,
        tag: Tag,
        attempt: Option<u32>,
        rtt: Duration,
        body: &[u8],
    ) -> Result<(), Error> {
        if let Tag::Recovered(id) = tag {
            eprintln!("bosun client: recovered request {id}: answered");
        }
        if self.json {
            let o = self
                .record(tag, "ok", attempt, Some(rtt))
                .bytes("payload", body);
            self.write(o.finish().as_bytes(), b'\n')
        } else {
            self.write(body, self.terminator)
        }
    }

    /// The failure of the request `tag`: on stderr, `note` (what a probe found) on the
    /// same line; with `--json` also on stdout.
    pub(super) fn failure(
        &mut self,
        tag: Tag,
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
            Error::Client(ClientError::OutboxFull { .. }) => {
                self.refused = true;
                "outbox_full"
            }
            Error::Client(ClientError::NotStored { .. }) => {
                self.not_stored = true;
                "not_stored"
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
        let kept = matches!(status, "no_reply" | "refused");
        if let (true, Some(dir)) = (kept, &self.data_dir) {
            message = format!(
                "{message}; kept in the dead letters of {} (bosun dlq list)",
                dir.display()
            );
        }
        eprintln!("bosun client: {}: {message}", tag.words());
        if self.json {
            let o = self
                .record(tag, status, attempt, rtt)
                .str("error", &message);
            self.write(o.finish().as_bytes(), b'\n')?;
        }
        Ok(())
    }

    /// Input line `line` got no outcome before the client stopped. Nothing is said when
    /// the client stopped because its reader closed stdout: nobody wants the rest.
    pub(super) fn unanswered(&mut self, tag: Tag) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        let message = "no answer before the client stopped";
        eprintln!("bosun client: {}: {message}", tag.words());
        if self.json {
            let o = self
                .record(tag, "unanswered", None, None)
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

impl Tag {
    /// `line N`, or `recovered request ID`.
    fn words(self) -> String {
        match self {
            Tag::Line(n) => format!("line {n}"),
            Tag::Recovered(id) => format!("recovered request {id}"),
        }
    }
}

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
