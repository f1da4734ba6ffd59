//! `bosun pub` and `bosun sub`: reliable pub/sub from the command line.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use uuid::Uuid;

use super::{json, parse_duration};
use crate::config::Heartbeat;
use crate::error::{ClientError, ConfigError, Error};
use crate::io::publisher::Publisher;
use crate::io::sink::FileSink;
use crate::io::subscriber::{Message, OnSlow, Subscriber};
use crate::io::transport::{check_endpoint, Side};
use crate::io::Counting;
use crate::io::Shutdown;
use crate::proto::envelope::MAX_PAYLOAD_BYTES;
use crate::proto::publisher::{DEFAULT_RETAIN_AGE, DEFAULT_RETAIN_COUNT};
use crate::proto::subscriber::{DEFAULT_MAX_BEHIND, DEFAULT_TIMEOUT};
use crate::store::{Durability, Store};

/// Lines published in one driver turn at most (one commit of a `batched` store).
const PUBLISH_BATCH: usize = 1000;
/// How long the publisher serves replays and heartbeats between looks at stdin.
const IDLE_SLICE: Duration = Duration::from_millis(2);

/// Options of `bosun pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    /// Where to bind the PUB socket (`tcp://127.0.0.1:*` picks a free port).
    #[arg(long, env = "BOSUN_BIND")]
    pub bind: String,
    /// Where to bind the replay ROUTER that subscribers repair gaps from.
    #[arg(long, env = "BOSUN_REPLAY")]
    pub replay: String,
    /// The topic of every message.
    #[arg(long, env = "BOSUN_TOPIC", default_value = "")]
    pub topic: String,
    /// Retain messages in DIR (a sled database, created when missing; one process at a
    /// time) instead of memory, and keep the publisher's id and sequence there: a
    /// restart on DIR continues where it stopped.
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: when retained messages are flushed. `batched`: once for the
    /// messages read together, before they are sent; `every`: each before it is sent;
    /// `none`: sled's background flush only (a crash may lose the last 500 ms).
    /// [default: batched]
    #[arg(long, env = "BOSUN_DURABILITY", value_name = "MODE", value_parser = parse_durability)]
    pub durability: Option<Durability>,
    /// A heartbeat goes out every interval, among the messages of a busy stream too.
    #[arg(long, env = "BOSUN_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The most messages retained for replay.
    #[arg(long, env = "BOSUN_RETAIN_COUNT", value_name = "N", default_value_t = DEFAULT_RETAIN_COUNT)]
    pub retain_count: u64,
    /// How long messages are retained for replay.
    #[arg(long, env = "BOSUN_RETAIN_AGE", value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub retain_age: Duration,
}

/// Checks endpoints before any socket is made, so that a bad one is reported as the
/// flag it came from (`field`: the configuration field, shown as its flag).
fn check_endpoints(field: &'static str, endpoints: &[String], side: Side) -> Result<(), Error> {
    for e in endpoints {
        check_endpoint(e, side).map_err(|err| ConfigError::Invalid {
            field,
            reason: err.to_string(),
        })?;
    }
    Ok(())
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse()
}

fn parse_on_slow(s: &str) -> Result<OnSlow, String> {
    s.parse()
}

/// Publishes each line of stdin (bytes, the newline removed), then serves replays and
/// heartbeats until stopped.
pub fn run_pub(args: PubArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    debug_assert_eq!(DEFAULT_RETAIN_AGE, Duration::from_secs(3600));
    check_endpoints("bind", std::slice::from_ref(&args.bind), Side::Bind)?;
    check_endpoints("replay", std::slice::from_ref(&args.replay), Side::Bind)?;
    if args.durability.is_some() && args.data_dir.is_none() {
        // Said here rather than by clap, which would not name a BOSUN_DURABILITY.
        return Err(ConfigError::Invalid {
            field: "durability",
            reason: "it needs --data-dir: without one, messages are retained in memory \
                     and never flushed"
                .into(),
        }
        .into());
    }
    let ctx = zmq::Context::new();
    let mut builder = Publisher::builder(&args.bind)
        .context(&ctx)
        .replay(&args.replay)
        .heartbeat_interval(args.heartbeat_interval)
        .retain_count(args.retain_count)
        .retain_age(args.retain_age);
    let store = match &args.data_dir {
        Some(dir) => Some(Store::open(dir)?),
        None => None,
    };
    if let Some(store) = &store {
        builder = builder.store(store, args.durability.unwrap_or(Durability::Batched));
    }
    let mut publisher = builder.bind()?;
    // On stdout like every bound command (a `*` port is resolved here).
    println!(
        "pub bound={} replay={}",
        publisher.endpoint(),
        publisher.replay_endpoint()
    );
    tracing::info!(
        "publisher {} bound at {}, replay at {}, next sequence {}",
        publisher.id(),
        publisher.endpoint(),
        publisher.replay_endpoint(),
        publisher.next_seq()
    );
    let topic = args.topic.into_bytes();
    let max_line = MAX_PAYLOAD_BYTES.saturating_sub(topic.len());
    let lines = stdin_lines(max_line);
    let mut published = 0u64;
    let mut line_no = 0u64;
    let mut refused = 0u64;
    let mut open = true;
    while open && !shutdown.is_triggered() {
        let mut batch = Vec::new();
        loop {
            match lines.try_recv() {
                Ok(Err(len)) => {
                    line_no += 1;
                    refused += 1;
                    eprintln!(
                        "bosun pub: line {line_no} is {len} bytes, over the {max_line} a \
                         message may carry (64 MiB with its topic, what a subscriber \
                         accepts): not published"
                    );
                }
                Ok(Ok(line)) => {
                    line_no += 1;
                    batch.push((topic.clone(), vec![line]));
                    if batch.len() >= PUBLISH_BATCH {
                        break;
                    }
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if batch.is_empty() {
            if open {
                publisher.serve(IDLE_SLICE, shutdown)?;
            }
            continue;
        }
        published += batch.len() as u64;
        publisher.publish_all(batch)?;
    }
    let interrupted = open.then(super::signal_received).flatten();
    if open {
        tracing::warn!(
            "stopped before the end of stdin: published {published} message(s) (last \
             sequence {}); lines not yet read were not published",
            publisher.last_seq()
        );
    } else {
        tracing::info!(
            "published {published} message(s) (last sequence {}); serving replay until \
             stopped",
            publisher.last_seq()
        );
    }
    publisher.run_until_stopped(shutdown)?;
    if STDIN_FAILED.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(ExitCode::from(super::exit::IO));
    }
    if let Some(sig) = interrupted {
        // Its input was cut short: interrupted, not done.
        return Ok(ExitCode::from(super::interrupted_code(sig)));
    }
    if refused > 0 {
        eprintln!("bosun pub: {refused} line(s) too large, not published");
        return Ok(ExitCode::from(super::exit::DATA));
    }
    Ok(ExitCode::SUCCESS)
}

/// Set when reading stdin failed: the input ended early, so the exit status is 74.
static STDIN_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lines of stdin as bytes (any bytes), each without its newline, read on a thread.
fn stdin_lines(max: usize) -> mpsc::Receiver<Result<Vec<u8>, u64>> {
    let (tx, rx) = mpsc::sync_channel(4 * PUBLISH_BATCH);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let item = match read_line(&mut input, max) {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(e) => {
                    eprintln!("bosun pub: reading stdin: {e}");
                    STDIN_FAILED.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line of `input` without its newline (None at the end), or, for a line
/// longer than `max` bytes, its length: such a line is read past, never held whole.
fn read_line(
    input: &mut impl BufRead,
    max: usize,
) -> std::io::Result<Option<Result<Vec<u8>, u64>>> {
    let mut line = Vec::new();
    let cap = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = std::io::Read::take(&mut *input, cap).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(Ok(line)));
    }
    if line.len() <= max {
        return Ok(Some(Ok(line))); // the last line, with no newline
    }
    // Too long: count the rest up to the newline, a buffer at a time.
    let mut len = line.len() as u64;
    drop(line);
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                len += i as u64;
                input.consume(i + 1);
                break;
            }
            None => {
                let k = buf.len();
                len += k as u64;
                input.consume(k);
            }
        }
    }
    Ok(Some(Err(len)))
}

/// Options of `bosun sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// The publishers' PUB endpoints, comma-separated (or the flag repeated).
    #[arg(long, env = "BOSUN_CONNECT", value_delimiter = ',', required = true)]
    pub connect: Vec<String>,
    /// The publishers' replay endpoints, comma-separated (or the flag repeated); which
    /// is whose is found by asking. Without it, endpoints are learned from heartbeats.
    #[arg(long, env = "BOSUN_REPLAY", value_delimiter = ',')]
    pub replay: Vec<String>,
    /// Deliver only topics starting with T (repeatable) [default: every topic].
    #[arg(long = "topic", env = "BOSUN_TOPIC", value_name = "T")]
    pub topics: Vec<String>,
    /// On first contact with a publisher, get its retained history first (a late
    /// joiner); without it, start with the live stream.
    #[arg(long, env = "BOSUN_FROM_START")]
    pub from_start: bool,
    /// Keep a cursor per publisher in DIR (a sled database): a restart resumes after
    /// the last batch printed; a batch whose printing a crash interrupted is printed
    /// again, said on stderr and marked redelivered in --json.
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Append the messages to FILE (created when missing) instead of printing them.
    /// With --data-dir, FILE holds each message exactly once, whatever the moment
    /// `bosun sub` is killed: lines written but not yet committed are cut off at the
    /// next start and written again (the positions are kept with the file's length).
    #[arg(long, env = "BOSUN_OUTPUT", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print each message as a JSON object: publisher, seq, topic, encoding, payload,
    /// and `"redelivered":true` on a message a durable subscriber may have printed
    /// before it was stopped.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 after N messages.
    #[arg(long, env = "BOSUN_COUNT", value_name = "N")]
    pub count: Option<u64>,
    /// The publishers' heartbeat interval.
    #[arg(long, env = "BOSUN_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which a publisher is dead (and reconnected).
    #[arg(long, env = "BOSUN_HEARTBEAT_LIVENESS", default_value_t = 3)]
    pub heartbeat_liveness: u32,
    /// How long a replay request may go unanswered before it is asked again.
    #[arg(long, env = "BOSUN_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How far behind a publisher (messages) before --on-slow applies.
    #[arg(long, env = "BOSUN_MAX_BEHIND", value_name = "N", default_value_t = DEFAULT_MAX_BEHIND)]
    pub max_behind: u64,
    /// Beyond --max-behind: `replay` catches up by replay; `fail` exits 75.
    #[arg(long, env = "BOSUN_ON_SLOW", value_name = "MODE", default_value = "replay", value_parser = parse_on_slow)]
    pub on_slow: OnSlow,
}

impl SubArgs {
    /// Whether the command has an end of its own (`--count`).
    pub fn is_batch(&self) -> bool {
        self.count.is_some()
    }
}

/// Prints each message delivered, one per line, until stopped or `--count`.
pub fn run_sub(args: SubArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    debug_assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(2));
    check_endpoints("connect", &args.connect, Side::Connect)?;
    check_endpoints("replay", &args.replay, Side::Connect)?;
    let ctx = zmq::Context::new();
    let mut builder = Subscriber::builder(&args.connect.join(","))
        .context(&ctx)
        .replay(&args.replay.join(","))
        .from_start(args.from_start)
        .heartbeat(Heartbeat {
            interval: args.heartbeat_interval,
            liveness: args.heartbeat_liveness,
        })
        .timeout(args.timeout)
        .max_behind(args.max_behind, args.on_slow)
        .auto_commit(false)
        .shutdown(shutdown);
    for t in &args.topics {
        builder = builder.topic(t.as_bytes());
    }
    let store = match &args.data_dir {
        Some(dir) => Some(Store::open(dir)?),
        None => None,
    };
    let mut out = match (&args.output, &store) {
        (Some(path), store) => {
            if let Some(store) = store {
                store.claim_for_subscriber()?;
                if !store.cursors()?.is_empty() {
                    return Err(mixed_modes(&args, "printed to stdout").into());
                }
            }
            let format = if args.json { "json" } else { "lines" };
            let sink = FileSink::open(path, store.as_ref(), format)?;
            if let (Some(since), Some(dir)) = (sink.since_ms(), &args.data_dir) {
                builder = builder
                    .resume(&sink.positions())
                    .since(since)
                    .name(dir.display().to_string().as_bytes());
            }
            Output::File(sink)
        }
        (None, Some(store)) => {
            if store.output_record()?.is_some() {
                return Err(mixed_modes(&args, "written to an --output file").into());
            }
            builder = builder.store(store);
            Output::stdout(stdout_is_pipe())
        }
        (None, None) => Output::stdout(false),
    };
    let mut sub = builder.connect()?;
    tracing::info!(
        "subscribed to {}; replay {}",
        args.connect.join(","),
        if args.replay.is_empty() {
            "endpoints learned from heartbeats".to_string()
        } else {
            args.replay.join(",")
        }
    );
    let mut printed = 0u64;
    let left = |printed: u64| args.count.map_or(u64::MAX, |c| c.saturating_sub(printed));
    while left(printed) > 0 {
        let first = match sub.recv_timeout(STDOUT_CHECK) {
            Ok(Some(m)) => m,
            Ok(None) => match &mut out {
                Output::Stdout { .. } if stdout_closed() => return Ok(ExitCode::SUCCESS),
                Output::Stdout { out, committer } => {
                    committer.when_read(&mut sub, out.get_ref().written)?;
                    continue;
                }
                Output::File(_) => continue,
            },
            Err(Error::Client(ClientError::Interrupted)) => break,
            Err(e) => return Err(e),
        };
        let mut batch = vec![first];
        while (batch.len() as u64) < left(printed).min(1000) {
            match sub.try_recv()? {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        match &mut out {
            Output::Stdout { out, committer } => {
                // Held, printed, committed: a crash while printing skips nothing; the
                // next run prints the held batch again, marked redelivered.
                sub.hold()?;
                for m in &batch {
                    if write_message(out, m, args.json).is_err() {
                        return Ok(ExitCode::SUCCESS); // stdout closed: nobody is reading
                    }
                }
                if out.flush().is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
                committer.printed(&mut sub, &batch, out.get_ref().written, shutdown)?;
            }
            Output::File(sink) => {
                // Written, then committed with the file's length: a crash in between
                // leaves bytes past the record, cut off at the next start.
                for m in &batch {
                    write_message(sink, m, args.json)
                        .map_err(|e| Error::io("write --output", e))?;
                }
                let positions = sink.commit(&batch)?;
                sub.acknowledge(&positions)?;
            }
        }
        printed += batch.len() as u64;
    }
    if let Output::Stdout { out, committer } = &mut out {
        committer.finish(&mut sub, out.get_ref().written, shutdown)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `bosun sub` writes: stdout (committed as its reader takes the lines, see
/// [`Committer`]) or an `--output` file.
enum Output {
    Stdout {
        out: std::io::BufWriter<Counting<std::io::StdoutLock<'static>>>,
        committer: Committer,
    },
    File(FileSink),
}

impl Output {
    /// Stdout; `pipe`: a durable subscriber writing into a pipe (commits wait for the
    /// reader).
    fn stdout(pipe: bool) -> Output {
        let stdout = Counting {
            inner: std::io::stdout().lock(),
            written: 0,
        };
        Output::Stdout {
            out: std::io::BufWriter::with_capacity(1 << 16, stdout),
            committer: Committer {
                pipe,
                pending: VecDeque::new(),
            },
        }
    }
}

/// A data dir whose positions were kept for another output than this run's.
fn mixed_modes(args: &SubArgs, before: &str) -> ConfigError {
    ConfigError::Invalid {
        field: "data_dir",
        reason: format!(
            "{} holds the positions of a subscriber whose messages were {before}; this run \
             {}, so it would resume from the wrong place: give it a --data-dir of its own",
            args.data_dir
                .as_deref()
                .map_or(String::new(), |d| d.display().to_string()),
            if args.output.is_some() {
                "writes to --output"
            } else {
                "prints to stdout"
            }
        ),
    }
}

/// Commits what a durable `bosun sub` printed. Into a file or a terminal, each batch
/// once it is written. Into a pipe, each batch once its reader has taken its last byte
/// from the pipe (the bytes written less those still unread): a reader that goes away
/// leaves the lines still in the pipe unread, and they must come again (marked
/// redelivered) at the next start, not be counted as done. At most [`MAX_UNREAD`]
/// batches wait so; then printing waits for the reader.
struct Committer {
    pipe: bool,
    /// Each batch written into the pipe and not yet committed: the byte offset its
    /// last line ends at, and the highest sequence in it per publisher.
    pending: VecDeque<(u64, Vec<(Uuid, u64)>)>,
}

/// Batches printed into a pipe and not yet read before `bosun sub` waits for its reader.
const MAX_UNREAD: usize = 10;
/// How long `bosun sub` waits at its end for its reader to empty the pipe.
const DRAIN_AT_END: Duration = Duration::from_secs(5);

impl Committer {
    /// `batch` was printed and flushed; `written` bytes have gone to stdout so far.
    fn printed(
        &mut self,
        sub: &mut Subscriber,
        batch: &[Message],
        written: u64,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        if !self.pipe {
            return sub.commit();
        }
        let mut highest: BTreeMap<Uuid, u64> = BTreeMap::new();
        for m in batch {
            let h = highest.entry(m.publisher).or_insert(0);
            *h = (*h).max(m.seq);
        }
        self.pending
            .push_back((written, highest.into_iter().collect()));
        if self.pending.len() >= MAX_UNREAD {
            wait_drained(shutdown, None);
        }
        self.when_read(sub, written)
    }

    /// Commits the batches whose every byte the reader has taken.
    fn when_read(&mut self, sub: &mut Subscriber, written: u64) -> Result<(), Error> {
        let Some(unread) = unread_in_stdout() else {
            return Ok(());
        };
        let taken = written.saturating_sub(unread as u64);
        let mut through: BTreeMap<Uuid, u64> = BTreeMap::new();
        while self.pending.front().is_some_and(|(end, _)| *end <= taken) {
            let Some((_, highest)) = self.pending.pop_front() else {
                break;
            };
            for (p, s) in highest {
                let t = through.entry(p).or_insert(0);
                *t = (*t).max(s);
            }
        }
        if through.is_empty() {
            return Ok(());
        }
        sub.commit_through(&through.into_iter().collect::<Vec<_>>())
    }

    /// At the end: waits (a while) for the reader to take the rest, then commits what
    /// it took; what it never took comes again at the next start.
    fn finish(
        &mut self,
        sub: &mut Subscriber,
        written: u64,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        wait_drained(shutdown, Some(DRAIN_AT_END));
        self.when_read(sub, written)
    }
}

/// Whether stdout is a pipe (a FIFO).
fn stdout_is_pipe() -> bool {
    // SAFETY: fstat fills the zeroed struct it is given for a valid descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::fstat(libc::STDOUT_FILENO, &mut st) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

/// Bytes in stdout's pipe that its reader has not taken yet (None: not known).
fn unread_in_stdout() -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer it is given.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::FIONREAD, &mut n) };
    (rc == 0).then(|| usize::try_from(n).unwrap_or(0))
}

/// Waits until stdout's pipe is empty (true), or its reader is gone, shutdown is asked
/// for, or `limit` passes (false). Looks every 10 ms: a pipe says when it has room,
/// not when it is empty.
fn wait_drained(shutdown: &Shutdown, limit: Option<Duration>) -> bool {
    let end = limit.map(|l| crate::io::now() + l);
    loop {
        match unread_in_stdout() {
            Some(0) => return true,
            None => return false,
            Some(_) => {}
        }
        if stdout_closed() || shutdown.is_triggered() {
            return false;
        }
        if end.is_some_and(|e| crate::io::now() >= e) {
            return false;
        }
        let mut fd = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd; returns at once when the reader goes (POLLERR).
        unsafe { libc::poll(&mut fd, 1, 10) };
    }
}

/// While no message comes, how often `bosun sub` looks whether its stdout was closed
/// (`bosun sub | head -1` ends when `head` does, not at the next message).
const STDOUT_CHECK: Duration = Duration::from_millis(200);

/// Whether stdout is a pipe or socket whose reader has gone (poll says POLLERR or
/// POLLHUP); a terminal or a file never is.
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call, zero timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Writes one message.
fn write_message(out: &mut impl Write, m: &Message, as_json: bool) -> std::io::Result<()> {
    if as_json {
        let o = json::Object::new()
            .str("publisher", &m.publisher.to_string())
            .raw("seq", &m.seq.to_string());
        let o = match std::str::from_utf8(&m.topic) {
            Ok(t) => o.str("topic", t),
            Err(_) => o
                .str("topic_encoding", "base64")
                .str("topic", &json::base64(&m.topic)),
        };
        let o = o.bytes("payload", &m.payload.concat());
        let line = if m.redelivered {
            o.raw("redelivered", "true").finish()
        } else {
            o.finish()
        };
        return writeln!(out, "{line}");
    }
    for frame in &m.payload {
        out.write_all(frame)?;
    }
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, u64>> {
        let mut r = std::io::BufReader::with_capacity(4, input);
        std::iter::from_fn(|| read_line(&mut r, max).unwrap()).collect()
    }

    #[test]
    fn lines_over_the_limit_are_measured_and_skipped_never_held() {
        let got = lines(b"abc\n\nabcd\nabcdefghij\nxy\nabcde", 4);
        assert_eq!(
            got,
            vec![
                Ok(b"abc".to_vec()),
                Ok(Vec::new()),
                Ok(b"abcd".to_vec()), // exactly the limit
                Err(10),
                Ok(b"xy".to_vec()),
                Err(5), // the last line, with no newline, one over
            ]
        );
        assert_eq!(lines(b"abcd", 4), vec![Ok(b"abcd".to_vec())]);
        assert!(lines(b"", 4).is_empty());
    }
}
