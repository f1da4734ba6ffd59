//! Reliable pub/sub with real processes (`bosun pub`, `bosun sub`), counting what was
//! published, delivered, duplicated and lost; the only acceptable figure for lost and
//! duplicated is zero.
//!
//! - A publisher with `--data-dir` and `--durability batched`, SIGKILLed at a random
//!   point (seeded, printed) and restarted on its data dir: the subscriber prints
//!   sequence 1..N exactly once, in order, each with the payload of input line N.
//! - A durable subscriber (`--data-dir`) SIGKILLed and restarted: the two runs' outputs
//!   together have no gap and no duplicate.
//! - A durable subscriber writing to a file (`--output`) SIGKILLed five times: the file
//!   holds each message exactly once; what cannot be trusted (a file cut by another, a
//!   data dir of another output) is refused.
//! - A subscriber whose stdout is not read for a while (so that it stops reading its SUB
//!   socket, whose queue fills up to its high-water mark, after which the publisher drops
//!   its messages): the drops are repaired by replay, nothing is lost.
//! - A late joiner with `--from-start` gets the retained history, then the live stream,
//!   with no seam.
//! - Garbage on the replay endpoint (a raw DEALER) is logged and dropped; the publisher
//!   keeps serving the same peer and a real subscriber.
//! - Bad flags are refused with exit status 64 and a message naming them.
//!
//! N of the kill test is `BOSUN_TEST_PUBSUB_N` (default [`DEFAULT_N`]); the kill point
//! comes from `BOSUN_TEST_SEED` (default: from the clock), printed so that a failure
//! can be replayed. Every wait is a condition with a deadline; every child process is
//! killed and reaped when its guard (`common::Proc`) drops, also when an assertion fails.

mod common;

use std::collections::BTreeSet;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{bosun, deadline, free_port, junk, now, raw_socket, recv_until, run, send, Proc};

/// Messages of the publisher kill test unless `BOSUN_TEST_PUBSUB_N` says otherwise.
const DEFAULT_N: u64 = 100_000;
/// Heartbeats every 100 ms on both sides: a dead publisher is noticed after 300 ms.
const HB: &str = "100ms";
const SECS_10: Duration = Duration::from_secs(10);
const SECS_30: Duration = Duration::from_secs(30);
/// The longest any one stream of a test may take to arrive in full (debug builds, two
/// cores, other tests running alongside).
const STREAM_LIMIT: Duration = Duration::from_secs(120);

/// The most messages a durable `bosun sub` may have in doubt when it stops (printed
/// into its pipe, not yet taken by the reader): 10 batches of at most 1000. They come
/// again marked redelivered.
const MAX_IN_DOUBT: usize = 10_000;

/// The topic of the heartbeat messages on the PUB socket (the contract's wire section).
const HEARTBEAT_TOPIC: &[u8] = b"\xffBSN.hb";
/// First bytes of the pub/sub metadata frame.
const META_MAGIC: &[u8] = b"\xffBSP";
/// The replay channel's protocol frame.
const REPLAY_PROTOCOL: &[u8] = b"BSP-R1";

// ---------------------------------------------------------------------------------
// Set-up

/// A fresh temporary directory, removed (with everything in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "bosun-process-pubsub-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temp dir");
        TempDir(path)
    }

    fn join(&self, name: &str) -> String {
        path_str(&self.0.join(name)).to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// A loopback endpoint on a free port (a publisher restarted on its data dir must come
/// back at the same address, so the tests choose the ports).
fn loopback() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// The publisher's two endpoints.
#[derive(Clone)]
struct Endpoints {
    publish: String,
    replay: String,
}

impl Endpoints {
    fn new() -> Endpoints {
        Endpoints {
            publish: loopback(),
            replay: loopback(),
        }
    }
}

/// The seed of a test's random choices: `BOSUN_TEST_SEED`, or one from the clock;
/// printed either way.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("BOSUN_TEST_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("{test}: seed {seed} (BOSUN_TEST_SEED={seed} repeats this run)");
    seed
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The payload of input line `i` (sequence `i` when nothing was lost on the way).
fn line(i: u64) -> String {
    format!("m-{i}")
}

// ---------------------------------------------------------------------------------
// The publisher

/// What a publisher said when it started.
struct Started {
    /// The publisher id (a UUID), from its start line.
    id: String,
    /// The sequence its next message gets.
    next: u64,
}

/// Starts `bosun -v pub --bind .. --replay .. --heartbeat-interval HB extra..` with stdin
/// piped and waits for its start line, `publisher <uuid> ... next sequence S` (INFO).
fn start_pub(name: &str, eps: &Endpoints, extra: &[&str]) -> (Proc, Started) {
    let mut args = vec![
        "-v",
        "pub",
        "--bind",
        eps.publish.as_str(),
        "--replay",
        eps.replay.as_str(),
        "--heartbeat-interval",
        HB,
    ];
    args.extend_from_slice(extra);
    let mut cmd = bosun(&args);
    cmd.stdin(Stdio::piped());
    let mut publisher = Proc::spawn(name, &mut cmd);
    let line = publisher
        .expect_stderr("the start line", SECS_10, |l| {
            l.contains("publisher") && l.contains("next sequence")
        })
        .text;
    let started = parse_start(&line).unwrap_or_else(|| panic!("start line {line:?}"));
    (publisher, started)
}

/// The publisher id and next sequence of a start line.
fn parse_start(line: &str) -> Option<Started> {
    let id = line
        .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| w.len() == 36 && uuid::Uuid::parse_str(w).is_ok())?
        .to_string();
    let rest = &line[line.find("next sequence")? + "next sequence".len()..];
    let next = rest
        .trim_start_matches([' ', '=', ':'])
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some(Started { id, next })
}

/// Writes input lines to a publisher's stdin on a thread of its own (so that the test
/// goes on watching while the pipe is full), then closes it.
struct Feeder(Option<JoinHandle<u64>>);

impl Feeder {
    /// Writes `line(i)` for every `i` in `from..=to`. Stops at the first write error
    /// (the publisher was killed).
    fn start(stdin: Option<ChildStdin>, from: u64, to: u64) -> Feeder {
        let stdin = stdin.expect("stdin was piped");
        Feeder(Some(std::thread::spawn(move || {
            let mut out = BufWriter::with_capacity(64 << 10, stdin);
            let mut written = 0;
            for i in from..=to {
                if writeln!(out, "{}", line(i)).is_err() {
                    return written;
                }
                written += 1;
            }
            let _ = out.flush();
            written
        })))
    }

    /// Lines handed to the pipe (some may have been lost with a killed reader).
    fn join(mut self) -> u64 {
        self.0
            .take()
            .map_or(0, |t| t.join().expect("feeder thread"))
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        // The publisher is killed by its own guard; the thread then ends at a write error.
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------
// The subscriber's output

/// One `bosun sub --json` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    publisher: String,
    seq: u64,
    topic: String,
    payload: String,
    /// Marked `"redelivered":true`: a durable subscriber may have printed it before it
    /// was stopped.
    redelivered: bool,
}

/// The value of `"key":"..."` in a JSON line (the values tested here have no escapes).
fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = line[start..].find('"')?;
    Some(&line[start..start + end])
}

/// The value of `"key":N` in a JSON line.
fn json_num(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn parse_got(line: &str) -> Option<Got> {
    Some(Got {
        publisher: json_str(line, "publisher")?.to_string(),
        seq: json_num(line, "seq")?,
        topic: json_str(line, "topic").unwrap_or_default().to_string(),
        payload: json_str(line, "payload")?.to_string(),
        redelivered: line.contains("\"redelivered\":true"),
    })
}

/// Every line of a subscriber's stdout seen so far, parsed; panics on a line that is not
/// a delivered message.
fn delivered(sub: &Proc) -> Vec<Got> {
    sub.stdout
        .texts()
        .iter()
        .map(|l| parse_got(l).unwrap_or_else(|| panic!("{}: not a message: {l:?}", sub.name)))
        .collect()
}

/// The highest sequence in a `--json` line, if it is one.
fn seq_of(line: &str) -> Option<u64> {
    json_num(line, "seq")
}

/// What the subscriber runs printed, against sequence 1..=published.
#[derive(Debug, Default)]
struct Tally {
    published: u64,
    delivered: usize,
    duplicated: usize,
    /// Copies marked redelivered of a message already printed (not in `duplicated`).
    redelivered_copies: usize,
    /// Messages marked redelivered, copies or not.
    marked: usize,
    out_of_order: usize,
    wrong_payload: usize,
    publishers: BTreeSet<String>,
    lost: Vec<u64>,
}

impl Tally {
    /// Counts `runs` (the outputs of one subscriber's successive runs, in order) against
    /// sequences 1..=published, message i carrying `line(i)`.
    fn of(runs: &[&[Got]], published: u64) -> Tally {
        let mut t = Tally {
            published,
            ..Tally::default()
        };
        let mut seen = BTreeSet::new();
        let mut last = 0;
        for got in runs.iter().flat_map(|r| r.iter()) {
            t.delivered += 1;
            t.publishers.insert(got.publisher.clone());
            t.marked += usize::from(got.redelivered);
            if !seen.insert(got.seq) {
                if got.redelivered {
                    t.redelivered_copies += 1;
                } else {
                    t.duplicated += 1;
                }
                continue;
            }
            if got.seq < last {
                t.out_of_order += 1;
            }
            last = last.max(got.seq);
            if got.payload != line(got.seq) {
                t.wrong_payload += 1;
            }
        }
        t.lost = (1..=published).filter(|i| !seen.contains(i)).collect();
        t
    }

    fn line(&self) -> String {
        let lost: Vec<u64> = self.lost.iter().take(10).copied().collect();
        format!(
            "published {}, delivered {}, duplicated {}, redelivered copies {} (marked {}), \
             lost {} (first {lost:?}), out of order {}, wrong payload {}, publisher ids {}",
            self.published,
            self.delivered,
            self.duplicated,
            self.redelivered_copies,
            self.marked,
            self.lost.len(),
            self.out_of_order,
            self.wrong_payload,
            self.publishers.len()
        )
    }

    /// Every sequence exactly once, in order, with its payload, from one publisher id.
    fn assert_exact(&self, context: &str) {
        self.assert_exact_but_marked(0, context);
    }

    /// Every sequence at least once, in order, with its payload, from one publisher id;
    /// a second copy only when marked redelivered, and at most `max_marked` messages
    /// marked at all.
    fn assert_exact_but_marked(&self, max_marked: usize, context: &str) {
        println!("{}", self.line());
        assert!(
            self.lost.is_empty()
                && self.duplicated == 0
                && self.out_of_order == 0
                && self.wrong_payload == 0
                && self.publishers.len() == 1
                && self.marked <= max_marked
                && self.delivered as u64 == self.published + self.redelivered_copies as u64,
            "{}\n{context}",
            self.line()
        );
    }
}

/// `bosun sub --connect P --replay R --json --heartbeat-interval HB extra..`.
fn start_sub(name: &str, eps: &Endpoints, extra: &[&str]) -> Proc {
    let mut args = vec![
        "-v",
        "sub",
        "--connect",
        eps.publish.as_str(),
        "--replay",
        eps.replay.as_str(),
        "--json",
        "--heartbeat-interval",
        HB,
    ];
    args.extend_from_slice(extra);
    Proc::spawn(name, &mut bosun(&args))
}

/// Waits up to `limit` for a `--count N` subscriber to exit 0, then checks that it
/// printed sequence 1..=n exactly once, in order, each with its payload.
fn expect_exact_run(sub: &mut Proc, publisher: &mut Proc, limit: Duration, n: u64) {
    let status = sub.wait_exit(limit);
    sub.drain(SECS_10);
    if !status.is_some_and(|s| s.success()) {
        panic!("{status:?}\n{}\n{}", tail(sub), tail(publisher));
    }
    let got = delivered(sub);
    Tally::of(&[&got], n).assert_exact(&tail(sub));
}

/// The tail of a process's output, for assertion messages about long streams.
fn tail(p: &mut Proc) -> String {
    p.stdout.read_available();
    p.stderr.read_available();
    let last = |lines: Vec<String>, n: usize| -> String {
        let skip = lines.len().saturating_sub(n);
        lines[skip..].join("\n")
    };
    format!(
        "--- {0}: {1} stdout lines, the last:\n{2}\n--- {0} stderr (last 60):\n{3}",
        p.name,
        p.stdout.seen.len(),
        last(p.stdout.texts(), 5),
        last(p.stderr.texts(), 60)
    )
}

// ---------------------------------------------------------------------------------
// A raw SUB socket reading the publisher's heartbeats (the contract's wire section).

/// What a heartbeat says.
#[derive(Debug, Clone)]
struct Heartbeat {
    publisher: [u8; 16],
    last: u64,
    oldest: u64,
    replay: String,
}

/// Parses `[HEARTBEAT_TOPIC][metadata]`; None for anything else.
fn parse_heartbeat(frames: &[Vec<u8>]) -> Option<Heartbeat> {
    let [topic, meta] = frames else { return None };
    if topic.as_slice() != HEARTBEAT_TOPIC || meta.len() < 50 || &meta[..4] != META_MAGIC {
        return None;
    }
    let u64_at = |at: usize| u64::from_be_bytes(meta[at..at + 8].try_into().expect("8 bytes"));
    if meta[4] != 1 || meta[5] != 1 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([meta[48], meta[49]]));
    if meta.len() != 50 + len {
        return None;
    }
    Some(Heartbeat {
        publisher: meta[8..24].try_into().expect("16 bytes"),
        last: u64_at(24),
        oldest: u64_at(40),
        replay: String::from_utf8(meta[50..].to_vec()).ok()?,
    })
}

/// A raw SUB socket subscribed to the heartbeat topic of the publisher at `endpoint`.
struct HeartbeatWatch {
    _ctx: zmq::Context,
    sub: zmq::Socket,
}

impl HeartbeatWatch {
    fn new(endpoint: &str) -> HeartbeatWatch {
        let ctx = zmq::Context::new();
        let sub = raw_socket(&ctx, zmq::SUB);
        sub.set_subscribe(HEARTBEAT_TOPIC).expect("subscribe");
        sub.connect(endpoint).expect("connect");
        HeartbeatWatch { _ctx: ctx, sub }
    }

    /// The first heartbeat for which `pred` holds, within `limit`.
    fn wait(&self, limit: Duration, mut pred: impl FnMut(&Heartbeat) -> bool) -> Option<Heartbeat> {
        let until = deadline(limit);
        while let Some(frames) = recv_until(&self.sub, until) {
            if let Some(hb) = parse_heartbeat(&frames) {
                if pred(&hb) {
                    return Some(hb);
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------
// (a) The publisher is SIGKILLed and restarted on its data dir.

/// N messages from stdin through `bosun pub --data-dir D --durability batched`; the
/// publisher is SIGKILLed once the subscriber has printed a random number of them
/// (seeded), then restarted on its data dir, and is given the input lines from its next
/// sequence on. The subscriber (`--from-start --count N`) prints sequence 1..N exactly
/// once, in order, each with the payload of its input line, all from one publisher id.
///
/// Also checks that the restarted publisher keeps its id and continues its sequence from
/// at least the highest one the subscriber saw (a message is sent only once stored), and
/// that the subscriber noticed the dead publisher.
///
/// Catches: a sequence that restarts or reuses numbers after the crash (duplicates or
/// wrong payloads), a message sent before it was stored (its sequence reused), stored
/// messages never sent, gaps not repaired by replay, and a new id after restart.
#[test]
fn a_publisher_killed_and_restarted_on_its_data_dir_loses_and_repeats_nothing() {
    let n = env_u64("BOSUN_TEST_PUBSUB_N", DEFAULT_N).max(20);
    let seed = seed("publisher kill");
    let mut rng = fastrand::Rng::with_seed(seed);
    let kill_after = rng.u64(n / 10..=n * 9 / 10);
    println!("publisher kill: N {n}, SIGKILL once the subscriber printed {kill_after}");
    let dir = TempDir::new("publisher-kill");
    let data = dir.join("publisher");
    let eps = Endpoints::new();
    let extra = ["--data-dir", data.as_str(), "--durability", "batched"];

    let (mut first, started) = start_pub("publisher 1", &eps, &extra);
    assert_eq!(started.next, 1, "a new data dir starts at 1");
    let count = n.to_string();
    let mut sub = start_sub("subscriber", &eps, &["--from-start", "--count", &count]);
    let feeder = Feeder::start(first.stdin.take(), 1, n);

    let start = now();
    let printed = sub
        .stdout
        .wait_count(deadline(STREAM_LIMIT), kill_after as usize, |_| true);
    assert_eq!(
        printed as u64,
        kill_after,
        "the subscriber printed {printed} of {kill_after} before the kill\n{}\n{}",
        tail(&mut sub),
        tail(&mut first)
    );
    first.kill();
    let fed = feeder.join();
    let seen_max = sub
        .stdout
        .texts()
        .iter()
        .filter_map(|l| seq_of(l))
        .max()
        .unwrap_or(0);
    println!(
        "publisher kill: killed after {:?}; {fed} lines handed to it",
        now() - start
    );

    let (mut second, restarted) = start_pub("publisher 2", &eps, &extra);
    assert_eq!(
        restarted.id, started.id,
        "the same publisher id after a restart"
    );
    let persisted = restarted.next - 1;
    println!("publisher kill: restarted at sequence {}", restarted.next);
    assert!(
        persisted >= seen_max && persisted <= n,
        "restarted at {} but the subscriber had seen {seen_max} (of {n}): a message was sent \
         before it was stored",
        restarted.next
    );
    let _feeder = Feeder::start(second.stdin.take(), restarted.next, n);

    let status = sub.wait_exit(STREAM_LIMIT);
    sub.drain(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "subscriber: {status:?}\n{}\n{}",
        tail(&mut sub),
        tail(&mut second)
    );
    println!(
        "publisher kill: all {n} delivered after {:?}",
        now() - start
    );
    let got = delivered(&sub);
    let tally = Tally::of(&[&got], n);
    tally.assert_exact(&tail(&mut sub));
    assert_eq!(
        tally.publishers.iter().next().map(String::as_str),
        Some(started.id.as_str()),
        "the messages carry the publisher's id"
    );
    assert!(second.is_running(), "{}", tail(&mut second));
}

// ---------------------------------------------------------------------------------
// (b) A durable subscriber is SIGKILLed and restarted.

/// A durable subscriber (`--data-dir`, `--from-start`) is SIGKILLed at a random point
/// (seeded) of a stream of N messages and restarted on its data dir WITHOUT
/// `--from-start`: it resumes from its cursor, so the two runs' outputs together hold
/// sequence 1..N with no gap, in order, and no second copy of a message unless it is
/// marked redelivered: only the batch being printed at the kill (at most 1000, held
/// before printing) may be printed again, and then it says so.
///
/// Catches: no cursor (the second run would start at the live stream, a gap), a cursor
/// stored ahead of what was printed (a gap), a cursor stored long after printing
/// (duplicates), a batch printed again without the mark, and a resume that does not
/// replay.
#[test]
fn a_durable_subscriber_killed_and_restarted_resumes_with_no_gap_and_no_duplicate() {
    let n = env_u64("BOSUN_TEST_PUBSUB_DURABLE_N", 20_000).max(20);
    let seed = seed("durable subscriber kill");
    let mut rng = fastrand::Rng::with_seed(seed);
    let kill_after = rng.u64(n / 10..=n * 9 / 10);
    println!("durable subscriber kill: N {n}, SIGKILL after {kill_after} printed");
    let dir = TempDir::new("durable-sub");
    let data = dir.join("subscriber");
    let eps = Endpoints::new();
    let (mut publisher, started) = start_pub("publisher", &eps, &[]);
    let mut first = start_sub(
        "subscriber 1",
        &eps,
        &["--data-dir", data.as_str(), "--from-start"],
    );
    let _feeder = Feeder::start(publisher.stdin.take(), 1, n);

    let printed = first
        .stdout
        .wait_count(deadline(STREAM_LIMIT), kill_after as usize, |_| true);
    assert_eq!(printed as u64, kill_after, "{}", tail(&mut first));
    first.kill();
    // Whatever it wrote before the kill is still in the pipe: read it all.
    assert!(first.drain(SECS_10), "{}", tail(&mut first));
    let run1 = delivered(&first);
    let last1 = run1.last().map_or(0, |g| g.seq);
    println!(
        "durable subscriber kill: run 1 printed {} (last sequence {last1})",
        run1.len()
    );

    let mut second = start_sub("subscriber 2", &eps, &["--data-dir", data.as_str()]);
    let end = second
        .stdout
        .wait_for(deadline(STREAM_LIMIT), |l| seq_of(l) == Some(n));
    assert!(
        end.is_some(),
        "run 2 never printed sequence {n}\n{}\n{}",
        tail(&mut second),
        tail(&mut publisher)
    );
    second.signal(libc::SIGTERM);
    second.expect_done(SECS_10);
    let run2 = delivered(&second);
    let first2 = run2.first().map_or(0, |g| g.seq);
    println!(
        "durable subscriber kill: run 2 printed {} (first sequence {first2})",
        run2.len()
    );
    assert!(
        run1.iter().all(|g| !g.redelivered),
        "a first run has nothing to redeliver"
    );
    let tally = Tally::of(&[&run1, &run2], n);
    tally.assert_exact_but_marked(
        MAX_IN_DOUBT,
        &format!("{}\n{}", tail(&mut first), tail(&mut second)),
    );
    assert_eq!(
        tally.publishers.iter().next(),
        Some(&started.id),
        "the messages carry the publisher's id"
    );
}

/// The lines of an `--output` file so far (a last line still being written is left
/// out: it has no newline yet).
fn file_lines(path: &str) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&text[..end])
        .lines()
        .map(str::to_string)
        .collect()
}

/// How many times a subscriber's run said it cut an uncommitted tail off its file.
fn cut_offs(sub: &Proc) -> usize {
    sub.stderr
        .texts()
        .iter()
        .filter(|l| l.contains("cut off"))
        .count()
}

/// A durable subscriber writing to a file (`--output FILE --data-dir DIR`) is SIGKILLed
/// five times at random points (seeded) of a stream of N messages and restarted each
/// time: the file ends holding sequence 1..N exactly once, in order, none marked
/// redelivered, whatever each kill interrupted (writing a batch, syncing it, or
/// recording it).
///
/// Catches: a record written before the file (a gap after a kill between the two),
/// a batch written again without cutting what the killed run wrote past its record (a
/// duplicate), a resume from anything but the record, and a join boundary that moves
/// with each restart.
#[test]
fn a_subscriber_writing_to_a_file_holds_each_message_once_across_kills() {
    let n = env_u64("BOSUN_TEST_PUBSUB_DURABLE_N", 20_000).max(40);
    let seed = seed("file subscriber kills");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut kills: Vec<u64> = (0..5).map(|_| rng.u64(n / 10..=n * 9 / 10)).collect();
    kills.sort_unstable();
    println!("file subscriber kills: N {n}, SIGKILL once the file holds {kills:?} lines");
    let dir = TempDir::new("file-sub");
    let data = dir.join("subscriber");
    let file = dir.join("out.jsonl");
    let eps = Endpoints::new();
    let (mut publisher, _started) = start_pub("publisher", &eps, &[]);
    let sub_args = |first: bool| {
        let mut a = vec!["--data-dir", data.as_str(), "--output", file.as_str()];
        if first {
            a.push("--from-start");
        }
        a
    };
    let _feeder = Feeder::start(publisher.stdin.take(), 1, n);
    let mut cuts = 0;
    for (i, at) in kills.iter().enumerate() {
        let mut sub = start_sub(&format!("subscriber {}", i + 1), &eps, &sub_args(i == 0));
        let reached = common::wait_until(STREAM_LIMIT, || file_lines(&file).len() as u64 >= *at);
        assert!(
            reached,
            "the file never held {at} lines\n{}",
            tail(&mut sub)
        );
        sub.kill();
        sub.drain(SECS_10);
        cuts += cut_offs(&sub);
    }
    let name = format!("subscriber {}", kills.len() + 1);
    let mut last = start_sub(&name, &eps, &sub_args(false));
    let done = common::wait_until(STREAM_LIMIT, || {
        file_lines(&file)
            .last()
            .is_some_and(|l| seq_of(l) == Some(n))
    });
    assert!(
        done,
        "the file never held sequence {n}\n{}\n{}",
        tail(&mut last),
        tail(&mut publisher)
    );
    last.signal(libc::SIGTERM);
    last.expect_done(SECS_10);
    cuts += cut_offs(&last);
    assert!(
        last.stdout.texts().is_empty(),
        "with --output, stdout stays empty"
    );
    let got: Vec<Got> = file_lines(&file)
        .iter()
        .map(|l| parse_got(l).unwrap_or_else(|| panic!("not a message: {l:?}")))
        .collect();
    println!("file subscriber kills: {cuts} restarts cut an uncommitted tail off the file");
    Tally::of(&[&got], n).assert_exact(&tail(&mut last));
}

/// What `--output` cannot trust is refused with the reason, exit 64 (74 for a path that
/// cannot be a file), before anything is written: the file cut shorter than its record by
/// something else, the file continued in another format, a data dir whose positions
/// belong to stdout output (or the other way round), a directory as the file.
#[test]
fn an_output_file_or_data_dir_that_cannot_be_trusted_is_refused_with_the_reason() {
    let dir = TempDir::new("file-refusals");
    let (data, file) = (dir.join("data"), dir.join("out.txt"));
    std::fs::write(&file, b"a line of someone else's\n").expect("write the file");
    let eps = Endpoints::new(); // nobody publishes: the refusals come first
                                // A first run records the file as it is (25 bytes), then is stopped.
    let mut first = start_sub(
        "subscriber",
        &eps,
        &["--data-dir", data.as_str(), "--output", file.as_str()],
    );
    first.expect_stderr("the start line", SECS_10, |l| l.contains("subscribed to"));
    first.signal(libc::SIGTERM);
    first.expect_done(SECS_10);
    assert_eq!(
        std::fs::read(&file).expect("read"),
        b"a line of someone else's\n",
        "a file of someone else's is appended to, never cut"
    );
    let sub = |extra: &[&str]| {
        let mut args = vec!["sub", "--connect", eps.publish.as_str()];
        args.extend_from_slice(extra);
        run(&args, &[], SECS_10)
    };
    let expect = |out: common::Outcome, code: i32, words: &[&str]| {
        let text = out.stderr.join("\n");
        assert_eq!(out.status.code(), Some(code), "{text}");
        assert!(
            words.iter().all(|w| text.contains(w)),
            "{words:?} in {text}"
        );
    };
    // Stdout output on the data dir of a file's positions, and the other way round.
    expect(
        sub(&["--data-dir", data.as_str()]),
        64,
        &["--data-dir", "--output file", "a --data-dir of its own"],
    );
    // The same file continued as plain lines after --json ones.
    expect(
        sub(&["--data-dir", data.as_str(), "--output", file.as_str()]),
        64,
        &["--output", "written as json", "as lines"],
    );
    // The file cut shorter than its record.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(3))
        .expect("cut the file");
    expect(
        sub(&[
            "--json",
            "--data-dir",
            data.as_str(),
            "--output",
            file.as_str(),
        ]),
        64,
        &["--output", "holds 3 bytes", "25 bytes", "move it aside"],
    );
    // A directory as the file.
    expect(
        sub(&["--output", dir.join("").as_str()]),
        74,
        &["--output", "Is a directory"],
    );
}

/// A publisher whose replay endpoint is a wildcard (`--replay tcp://*:PORT`, which its
/// heartbeats announce as is) and a late joiner given no `--replay`: the history cannot
/// be fetched. The subscriber says so, naming the flag to give, and goes on with the
/// live stream (it waited forever, silently, before).
#[test]
fn a_subscriber_with_nowhere_to_ask_for_history_says_so_and_goes_on_live() {
    let port = free_port();
    let eps = Endpoints {
        publish: loopback(),
        replay: format!("tcp://*:{port}"),
    };
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    let history: String = (1..=50).map(|i| format!("{}\n", line(i))).collect();
    publisher.write_stdin(&history);
    let args = [
        "sub",
        "--connect",
        eps.publish.as_str(),
        "--from-start",
        "--json",
    ];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--heartbeat-interval", HB, "--count", "10"]);
    let mut sub = Proc::spawn("subscriber", &mut bosun(&args));
    sub.expect_stderr("the warning", SECS_10, |l| {
        l.contains("cannot be connected to") && l.contains("give --replay")
    });
    let live: String = (51..=60).map(|i| format!("{}\n", line(i))).collect();
    publisher.write_stdin(&live);
    let status = sub.wait_exit(SECS_30);
    sub.drain(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}\n{}",
        tail(&mut sub),
        tail(&mut publisher)
    );
    let got: Vec<u64> = delivered(&sub).iter().map(|g| g.seq).collect();
    assert_eq!(got, (51..=60).collect::<Vec<u64>>(), "{}", tail(&mut sub));
}

// ---------------------------------------------------------------------------------
// (c) A slow consumer: its SUB socket's high-water mark overflows.

/// A pipe whose read end the test holds: a subscriber writing its stdout into it blocks
/// once the pipe is full, until the test reads.
fn pipe() -> (std::fs::File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    }
}

/// A subscriber whose stdout is not read until the publisher has published all N
/// messages: it blocks writing to stdout, stops reading its SUB socket, whose queue fills
/// up to the high-water mark, and the publisher drops what does not fit (plain ZeroMQ
/// PUB/SUB loses those messages for good). Once the test reads its output, the
/// subscriber sees the sequence jump, repairs it by replay, and prints 1..N exactly once,
/// in order. The publisher's log must show replays served (the drops happened, or the
/// test proved nothing).
#[test]
fn a_slow_subscriber_repairs_high_water_mark_drops_by_replay() {
    let n = env_u64("BOSUN_TEST_PUBSUB_SLOW_N", 100_000).max(20);
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &["-vv"]);
    let count = n.to_string();
    let (mut out, write_end) = pipe();
    let mut cmd = bosun(&[
        "-v",
        "sub",
        "--connect",
        eps.publish.as_str(),
        "--replay",
        eps.replay.as_str(),
        "--json",
        "--heartbeat-interval",
        HB,
        "--from-start",
        "--count",
        &count,
    ]);
    cmd.stdout(Stdio::from(write_end));
    let mut sub = Proc::spawn("slow subscriber", &mut cmd);
    // The command holds the pipe's write end: drop it, or the reader never sees the end.
    drop(cmd);
    // The subscriber has heard the publisher (a heartbeat, with nothing published yet)
    // before anything is published: every replay served later repairs a drop.
    sub.expect_stderr("the subscriber's first contact", SECS_10, |l| {
        l.contains("following a publisher")
    });

    let feeder = Feeder::start(publisher.stdin.take(), 1, n);
    publisher.expect_stderr("all published", STREAM_LIMIT, |l| {
        l.contains(&format!("published {n} message(s)"))
    });
    assert_eq!(feeder.join(), n);

    // Now read: everything, in order, once.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let status = sub.wait_exit(STREAM_LIMIT);
    // The subscriber has exited (or is killed below), so the pipe ends: a bounded wait.
    if status.is_none() {
        sub.kill_group();
    }
    let text = reader.join().expect("reader thread");
    assert!(
        status.is_some_and(|s| s.success()),
        "subscriber: {status:?}\n{}\n{}",
        tail(&mut sub),
        tail(&mut publisher)
    );
    let got: Vec<Got> = text
        .lines()
        .map(|l| parse_got(l).unwrap_or_else(|| panic!("not a message: {l:?}")))
        .collect();
    Tally::of(&[&got], n).assert_exact(&tail(&mut sub));
    // Replays served, logged at most once a second with the count of those not logged
    // (`more=`).
    publisher.stderr.read_available();
    let replays: Vec<String> = publisher
        .stderr
        .texts()
        .into_iter()
        .filter(|l| l.contains("served a replay request"))
        .collect();
    let served: u64 = replays
        .iter()
        .map(|l| {
            1 + common::field(l, "more")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    println!(
        "slow subscriber: {served} replays served; logged:\n{}",
        replays.join("\n")
    );
    assert!(
        served > 0,
        "no replay was served: the high-water mark never overflowed, so this test proved \
         nothing\n{}",
        tail(&mut publisher)
    );
}

// ---------------------------------------------------------------------------------
// (d) A late joiner.

/// A publisher has published H messages before a subscriber starts with `--from-start`;
/// more are published while it catches up. It prints 1..H+L exactly once, in order: the
/// retained history, then the live stream, with no seam (no gap, no duplicate where
/// replay hands over to live messages).
///
/// Catches: a late joiner that gets no history, history and live stream interleaved out
/// of order, or the messages at the hand-over twice.
#[test]
fn a_late_joiner_gets_the_history_then_the_live_stream_without_a_seam() {
    let history = env_u64("BOSUN_TEST_PUBSUB_HISTORY", 5_000);
    let live = history;
    let total = history + live;
    let eps = Endpoints::new();
    let (mut publisher, started) = start_pub("publisher", &eps, &[]);
    let watch = HeartbeatWatch::new(&eps.publish);
    let mut stdin = publisher.stdin.take();
    // The history, all published (a heartbeat says so) before the subscriber starts.
    {
        let stdin = stdin.as_mut().expect("stdin was piped");
        let text: String = (1..=history).map(|i| format!("{}\n", line(i))).collect();
        stdin.write_all(text.as_bytes()).expect("write the history");
        stdin.flush().expect("flush");
    }
    let hb = watch.wait(SECS_30, |hb| hb.last == history);
    assert!(
        hb.is_some(),
        "no heartbeat with last sequence {history}\n{}",
        tail(&mut publisher)
    );
    let hb = hb.expect("checked");
    assert_eq!(uuid::Uuid::from_bytes(hb.publisher).to_string(), started.id);
    assert_eq!(
        hb.replay, eps.replay,
        "the heartbeat names the replay endpoint"
    );
    assert_eq!(hb.oldest, 1, "everything is retained");

    let count = total.to_string();
    let mut sub = start_sub("late joiner", &eps, &["--from-start", "--count", &count]);
    // The live part starts as soon as the subscriber runs, while it replays the history.
    let _feeder = Feeder::start(stdin, history + 1, total);
    expect_exact_run(&mut sub, &mut publisher, STREAM_LIMIT, total);
}

// ---------------------------------------------------------------------------------
// (e) Garbage on the replay endpoint.

/// A raw DEALER sends garbage to the replay endpoint: a lone empty frame, junk, the
/// protocol frame alone, another protocol, an unknown command, REPLAY with short or
/// missing fields, an ACK with short fields, 100 junk frames, a 1 MiB frame. The
/// publisher logs and drops each and keeps serving: the same DEALER then gets an
/// UNKNOWN for a wrong publisher id and a real replay (DATA... END), and a bosun
/// subscriber joining late gets every message.
#[test]
fn garbage_on_the_replay_endpoint_is_logged_and_dropped() {
    const N: u64 = 50;
    let eps = Endpoints::new();
    let (mut publisher, started) = start_pub("publisher", &eps, &["-vv"]);
    let watch = HeartbeatWatch::new(&eps.publish);
    let stdin = publisher.stdin.as_mut().expect("stdin was piped");
    let text: String = (1..=N).map(|i| format!("{}\n", line(i))).collect();
    stdin.write_all(text.as_bytes()).expect("write");
    stdin.flush().expect("flush");
    let hb = watch
        .wait(SECS_30, |hb| hb.last == N)
        .unwrap_or_else(|| panic!("no heartbeat with last {N}\n{}", tail(&mut publisher)));
    let id = hb.publisher.to_vec();

    let ctx = zmq::Context::new();
    let dealer = raw_socket(&ctx, zmq::DEALER);
    dealer.connect(&eps.replay).expect("connect");
    let p = REPLAY_PROTOCOL.to_vec();
    let cmd = |c: &str| c.as_bytes().to_vec();
    let garbage: Vec<Vec<Vec<u8>>> = vec![
        vec![Vec::new()],
        vec![junk(40, 1)],
        vec![p.clone()],
        vec![
            b"BSP-R9".to_vec(),
            cmd("REPLAY"),
            id.clone(),
            1u64.to_be_bytes().to_vec(),
            10u32.to_be_bytes().to_vec(),
        ],
        vec![p.clone(), cmd("NOPE")],
        vec![p.clone(), cmd("REPLAY")],
        vec![
            p.clone(),
            cmd("REPLAY"),
            id[..7].to_vec(),
            vec![0; 3],
            vec![0; 2],
        ],
        vec![
            p.clone(),
            cmd("REPLAY"),
            id.clone(),
            vec![0; 3],
            10u32.to_be_bytes().to_vec(),
        ],
        vec![
            p.clone(),
            cmd("REPLAY"),
            id.clone(),
            1u64.to_be_bytes().to_vec(),
        ],
        vec![p.clone(), cmd("ACK"), id.clone(), vec![1]],
        vec![p.clone(), cmd("DATA"), b"t".to_vec(), b"x".to_vec()],
        common::many_frames(100),
        vec![p.clone(), vec![0xAB; 1 << 20]],
    ];
    for frames in &garbage {
        send(&dealer, frames);
    }
    // A REPLAY for another publisher id: UNKNOWN, as the contract says.
    let other = vec![0xEE; 16];
    send(
        &dealer,
        &[
            p.clone(),
            cmd("REPLAY"),
            other.clone(),
            1u64.to_be_bytes().to_vec(),
            10u32.to_be_bytes().to_vec(),
        ],
    );
    // Then a real replay of 10 from 1: DATA 1..10, END(1, N). Nothing else comes back:
    // the garbage drew no answer.
    send(
        &dealer,
        &[
            p.clone(),
            cmd("REPLAY"),
            id.clone(),
            1u64.to_be_bytes().to_vec(),
            10u32.to_be_bytes().to_vec(),
        ],
    );
    let until = deadline(SECS_10);
    let mut answers = Vec::new();
    while let Some(frames) = recv_until(&dealer, until) {
        let end = frames.get(1).is_some_and(|c| c.as_slice() == b"END");
        answers.push(frames);
        if end || answers.len() > 20 {
            break;
        }
    }
    let shown: Vec<String> = answers
        .iter()
        .map(|f| {
            f.iter()
                .map(|x| String::from_utf8_lossy(&x[..x.len().min(24)]).into_owned())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    let context = format!("answers:\n{}\n{}", shown.join("\n"), tail(&mut publisher));
    assert_eq!(answers.len(), 12, "UNKNOWN, 10 DATA, END\n{context}");
    assert_eq!(
        answers[0],
        vec![p.clone(), cmd("UNKNOWN"), other],
        "{context}"
    );
    for (i, frames) in answers[1..11].iter().enumerate() {
        let seq = i as u64 + 1;
        assert!(
            frames.len() == 5 && frames[..2] == [p.clone(), cmd("DATA")],
            "{context}"
        );
        assert_eq!(frames[3], line(seq).into_bytes(), "{context}");
        let meta = &frames[4];
        assert_eq!(&meta[..4], META_MAGIC, "{context}");
        assert_eq!(&meta[8..24], id.as_slice(), "{context}");
        assert_eq!(meta[24..32], seq.to_be_bytes(), "{context}");
    }
    assert_eq!(
        answers[11],
        vec![
            p.clone(),
            cmd("END"),
            1u64.to_be_bytes().to_vec(),
            N.to_be_bytes().to_vec()
        ],
        "{context}"
    );

    // A real subscriber still gets everything.
    let count = N.to_string();
    let mut sub = start_sub("subscriber", &eps, &["--from-start", "--count", &count]);
    let status = sub.expect_done(SECS_30);
    assert!(status.success(), "{}\n{}", sub.dump(), tail(&mut publisher));
    Tally::of(&[&delivered(&sub)], N).assert_exact(&sub.dump());
    assert_eq!(
        delivered(&sub)[0].publisher,
        started.id,
        "the subscriber reports the publisher id"
    );

    // The garbage was logged (debug or warn, rate-limited), and the publisher runs on.
    assert!(publisher.is_running(), "{}", tail(&mut publisher));
    publisher.stderr.read_available();
    let logged = publisher
        .stderr
        .texts()
        .iter()
        .filter(|l| {
            let l = l.to_lowercase();
            [
                "garbage",
                "malformed",
                "invalid",
                "dropped",
                "unknown command",
                "bad ",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .count();
    println!("garbage: {logged} publisher log lines about it");
    assert!(
        logged > 0,
        "the garbage was logged\n{}",
        tail(&mut publisher)
    );
}

// ---------------------------------------------------------------------------------
// (f) Bad flags.

/// Missing `--bind`/`--connect`, bad endpoints and a zero heartbeat interval are refused
/// at once with exit status 64 and a line on stderr naming what is wrong.
#[test]
fn bad_flags_are_refused_naming_them() {
    let (p, r) = (loopback(), loopback());
    // `bosun pub` / `bosun sub` with good endpoints, then `extra`.
    let with = |cmd: &'static str, extra: &[&'static str]| -> Vec<String> {
        let peer = if cmd == "pub" { "--bind" } else { "--connect" };
        let mut args: Vec<String> = [cmd, peer, &p, "--replay", &r]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let own = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (own(&["pub", "--replay", &r]), "--bind"),
        (
            own(&["pub", "--bind", "nonsense", "--replay", &r]),
            "nonsense",
        ),
        (
            own(&["pub", "--bind", &p, "--replay", "tcp://127.0.0.1:99999"]),
            "99999",
        ),
        (
            with("pub", &["--heartbeat-interval", "0s"]),
            "--heartbeat-interval",
        ),
        (with("pub", &["--durability", "sometimes"]), "--durability"),
        // Durability without a store is meaningless.
        (with("pub", &["--durability", "every"]), "--data-dir"),
        // The same endpoint twice.
        (own(&["pub", "--bind", &p, "--replay", &p]), "--replay"),
        (
            own(&["pub", "--bind", "foo", "--replay", &r]),
            "not an endpoint",
        ),
        (
            own(&["pub", "--bind", &p, "--replay", "foo"]),
            "invalid --replay",
        ),
        (
            own(&["sub", "--connect", &p, "--replay", "bar"]),
            "invalid --replay",
        ),
        (own(&["sub", "--replay", &r]), "--connect"),
        (
            own(&["sub", "--connect", "nonsense", "--replay", &r]),
            "nonsense",
        ),
        (
            with("sub", &["--heartbeat-interval", "0s"]),
            "--heartbeat-interval",
        ),
        (
            with("sub", &["--heartbeat-liveness", "0"]),
            "--heartbeat-liveness",
        ),
        (with("sub", &["--on-slow", "panic"]), "--on-slow"),
    ];
    for (args, named) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &[], SECS_10);
        assert_eq!(
            out.status.code(),
            Some(64),
            "usage error for {args:?}: {out:?}"
        );
        assert!(
            out.stderr.iter().any(|l| l.contains(named)),
            "{args:?}: stderr names {named:?}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------
// (f) What a new user meets: joining before the publisher, no --replay, a closed
// stdout, a line too large.

/// Writes `line(i)` for i = 1, 2, ... one every millisecond (a stream that never falls
/// silent for a heartbeat interval) until stopped, a write fails, or `limit` passes.
struct PacedFeeder {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl PacedFeeder {
    fn start(stdin: Option<ChildStdin>, limit: Duration) -> PacedFeeder {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut stdin = stdin.expect("stdin was piped");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let (s, w) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            let end = deadline(limit);
            let mut i = 1;
            while !s.load(Ordering::SeqCst) && now() < end {
                if writeln!(stdin, "{}", line(i)).is_err() || stdin.flush().is_err() {
                    return;
                }
                w.store(i, Ordering::SeqCst);
                i += 1;
                // Pacing the load (a message a millisecond), not waiting for a
                // condition: nothing here is synchronised by time.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        PacedFeeder {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for PacedFeeder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A subscriber given no `--replay` learns the endpoint from heartbeats, which a busy
/// publisher sends among its messages too: `--from-start` history is fetched while the
/// stream flows (a message every millisecond, never silent for a heartbeat interval).
///
/// Catches: heartbeats only when idle, so that a subscriber without `--replay` prints
/// nothing until the publisher falls silent.
#[test]
fn a_subscriber_without_replay_learns_the_endpoint_while_the_stream_flows() {
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    let feeder = PacedFeeder::start(publisher.stdin.take(), STREAM_LIMIT);
    assert!(
        common::wait_until(SECS_30, || feeder.written() >= 300),
        "the feeder did not get going"
    );
    let mut cmd = bosun(&[
        "-v",
        "sub",
        "--connect",
        eps.publish.as_str(),
        "--json",
        "--heartbeat-interval",
        HB,
        "--from-start",
        "--count",
        "1000",
    ]);
    let mut sub = Proc::spawn("subscriber without --replay", &mut cmd);
    expect_exact_run(&mut sub, &mut publisher, SECS_30, 1000);
    let still_flowing = feeder.written();
    assert!(
        sub.stderr
            .texts()
            .iter()
            .any(|l| l.contains("learned from a heartbeat")),
        "the endpoint came from a heartbeat\n{}",
        tail(&mut sub)
    );
    drop(feeder);
    println!("fetched history 1..=1000 while the feeder had written {still_flowing}");
}

/// A subscriber running before its publisher starts prints every message the publisher
/// publishes, from sequence 1, although its SUB socket joins after the first ones went
/// out (ZeroMQ's slow joiner). Then the publisher, which has no data dir, is killed and a
/// new one (a new id, sequences from 1 again) starts on the same endpoints: its stream
/// arrives whole too.
///
/// Catches: starting at the first live message seen (plain ZeroMQ loses the first
/// messages of each publisher that starts after the subscriber).
#[test]
fn a_subscriber_started_before_its_publisher_misses_nothing() {
    let n = env_u64("BOSUN_TEST_PUBSUB_EARLY_N", 5_000).max(20);
    let eps = Endpoints::new();
    let total = (2 * n).to_string();
    let mut sub = start_sub("early subscriber", &eps, &["--count", &total]);
    sub.expect_stderr("the subscriber's start", SECS_10, |l| {
        l.contains("subscribed to")
    });
    let mut ids = Vec::new();
    for run in 1..=2 {
        let (mut publisher, started) = start_pub(&format!("publisher {run}"), &eps, &[]);
        ids.push(started.id.clone());
        let feeder = Feeder::start(publisher.stdin.take(), 1, n);
        assert_eq!(feeder.join(), n);
        let printed = sub
            .stdout
            .wait_count(deadline(STREAM_LIMIT), (run * n) as usize, |_| true);
        assert_eq!(
            printed as u64,
            run * n,
            "publisher {run}\n{}\n{}",
            tail(&mut sub),
            tail(&mut publisher)
        );
        publisher.kill();
    }
    let status = sub.wait_exit(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        tail(&mut sub)
    );
    let got = delivered(&sub);
    for (run, id) in ids.iter().enumerate() {
        let mine: Vec<Got> = got.iter().filter(|g| &g.publisher == id).cloned().collect();
        println!("publisher {}:", run + 1);
        Tally::of(&[&mine], n).assert_exact(&tail(&mut sub));
    }
}

/// `bosun sub | head -1`: once `head` has its line and exits, the subscriber ends too
/// (exit 0), although the publisher is idle and no further message would reveal the
/// closed pipe.
#[test]
fn a_subscriber_whose_reader_is_gone_ends_while_the_publisher_is_idle() {
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    publisher.write_stdin("one\ntwo\n");
    let (out, write_end) = pipe();
    let mut cmd = bosun(&[
        "sub",
        "--connect",
        eps.publish.as_str(),
        "--replay",
        eps.replay.as_str(),
        "--from-start",
    ]);
    cmd.stdout(Stdio::from(write_end));
    let mut sub = Proc::spawn("subscriber into a pipe", &mut cmd);
    drop(cmd);
    // Read the first line, then close the read end, as `head -1` does.
    let mut reader = std::io::BufReader::new(out);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).expect("read a line");
    assert_eq!(first, "one\n");
    drop(reader);
    let status = sub.wait_exit(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "the subscriber did not end with its reader: {status:?}\n{}",
        tail(&mut sub)
    );
}

/// A line over 64 MiB is refused by `bosun pub` with a sentence naming the line, and
/// the lines after it are published (the subscriber gets them as sequences 1 and 2);
/// the exit status is 65 (bad data).
#[test]
fn a_line_over_64_mib_is_refused_and_the_rest_published() {
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    let mut sub = start_sub("subscriber", &eps, &["--from-start", "--count", "2"]);
    {
        let stdin = publisher.stdin.as_mut().expect("stdin was piped");
        let big = vec![b'x'; (64 << 20) + 1];
        stdin.write_all(&big).expect("write the big line");
        stdin.write_all(b"\nafter-1\nafter-2\n").expect("write");
    }
    publisher.close_stdin();
    publisher.expect_stderr("the refusal", SECS_30, |l| {
        l.contains("line 1 is 67108865 bytes") && l.contains("not published")
    });
    let status = sub.wait_exit(SECS_30);
    sub.drain(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        tail(&mut sub)
    );
    let got: Vec<(u64, String)> = delivered(&sub)
        .into_iter()
        .map(|g| (g.seq, g.payload))
        .collect();
    assert_eq!(
        got,
        vec![(1, "after-1".to_string()), (2, "after-2".to_string())]
    );
    // Stopped after its stdin ended (not interrupted): the refused line sets the status.
    publisher.expect_stderr("the end of stdin", SECS_10, |l| {
        l.contains("serving replay until stopped")
    });
    publisher.signal(libc::SIGTERM);
    let status = publisher.expect_exit(SECS_10);
    assert_eq!(status.code(), Some(65), "{}", tail(&mut publisher));
}

/// A subscriber aimed at a port where no publisher is says so (once, at WARN) after the
/// heartbeat liveness, and keeps listening; a subscriber expecting heartbeats five times
/// as often as its publisher sends them names both intervals.
#[test]
fn a_subscriber_says_when_it_hears_nothing_or_heartbeats_are_slower_than_expected() {
    let eps = Endpoints::new();
    let mut lonely = start_sub("subscriber of nothing", &eps, &[]);
    lonely.expect_stderr("the silence warning", SECS_10, |l| {
        l.contains("nothing heard from any publisher") && l.contains("--heartbeat-interval")
    });
    assert!(lonely.is_running(), "it keeps listening");

    let eps = Endpoints::new();
    let mut cmd = bosun(&[
        "pub",
        "--bind",
        eps.publish.as_str(),
        "--replay",
        eps.replay.as_str(),
        "--heartbeat-interval",
        "500ms",
    ]);
    cmd.stdin(Stdio::piped());
    let _publisher = Proc::spawn("slow-heartbeat publisher", &mut cmd);
    let mut sub = start_sub("subscriber", &eps, &[]);
    sub.expect_stderr("the interval mismatch", SECS_30, |l| {
        l.contains("heartbeats about every") && l.contains("expects one every 100ms")
    });
}

/// A publisher's data dir is refused by a subscriber, and a subscriber's by a
/// publisher (exit 64, naming what the dir holds); nothing is written to it.
#[test]
fn a_data_dir_of_the_other_kind_of_peer_is_refused() {
    let dir = TempDir::new("other-kind");
    let (pub_dir, sub_dir) = (dir.join("publisher"), dir.join("subscriber"));
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &["--data-dir", pub_dir.as_str()]);
    publisher.write_stdin("one\n");
    let mut sub = start_sub(
        "subscriber",
        &eps,
        &[
            "--data-dir",
            sub_dir.as_str(),
            "--from-start",
            "--count",
            "1",
        ],
    );
    let status = sub.wait_exit(SECS_30);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        tail(&mut sub)
    );
    publisher.signal(libc::SIGTERM);
    publisher.expect_exit(SECS_10);

    // Exit 64, and stderr says what the dir holds.
    let refused = |args: &[&str], holds: &str| {
        let out = run(args, &[], SECS_10);
        let said = out.stderr.join("\n");
        assert_eq!(out.status.code(), Some(64), "{said}");
        assert!(said.contains(holds), "{said}");
    };
    let other = Endpoints::new();
    refused(
        &["sub", "--connect", &other.publish, "--data-dir", &pub_dir],
        "holds a publisher's id",
    );
    refused(
        &[
            "pub",
            "--bind",
            &other.publish,
            "--replay",
            &other.replay,
            "--data-dir",
            &sub_dir,
        ],
        "holds a subscriber's cursors",
    );
}

/// A durable subscriber whose reader goes away after 10 lines (`| head`), in the middle
/// of a batch of up to 1000: the next run on its data dir prints that batch again,
/// marked redelivered, so that the two runs together skip nothing.
///
/// Catches: the batch committed when the subscriber stopped although its lines never
/// reached anyone (the next run started after it: hundreds lost).
#[test]
fn a_durable_subscriber_whose_reader_goes_away_skips_nothing() {
    let n = 5_000u64;
    let dir = TempDir::new("reader-gone");
    let data = dir.join("subscriber");
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    let feeder = Feeder::start(publisher.stdin.take(), 1, n);
    assert_eq!(feeder.join(), n);
    publisher.expect_stderr("all published", SECS_30, |l| {
        l.contains(&format!("published {n} message(s)"))
    });
    let (out, write_end) = pipe();
    let mut cmd = bosun(&[
        "sub",
        "--connect",
        eps.publish.as_str(),
        "--replay",
        eps.replay.as_str(),
        "--json",
        "--from-start",
        "--data-dir",
        data.as_str(),
    ]);
    cmd.stdout(Stdio::from(write_end));
    let mut first = Proc::spawn("subscriber 1", &mut cmd);
    drop(cmd);
    // Byte by byte: the pipe gives up exactly the 10 lines counted here (a reader that
    // takes more and drops it, as a buffered one does, cannot be told from one that
    // used it).
    let mut out = out;
    let mut run1 = Vec::new();
    let mut l = Vec::new();
    while run1.len() < 10 {
        let mut byte = [0u8; 1];
        out.read_exact(&mut byte).expect("read a byte");
        if byte[0] != b'\n' {
            l.push(byte[0]);
            continue;
        }
        let text = String::from_utf8_lossy(&l).to_string();
        run1.push(parse_got(&text).unwrap_or_else(|| panic!("not a message: {text:?}")));
        l.clear();
    }
    drop(out);
    let status = first.wait_exit(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        tail(&mut first)
    );

    let count = (n - 10 + 1000).to_string();
    let mut second = start_sub(
        "subscriber 2",
        &eps,
        &["--data-dir", data.as_str(), "--count", &count],
    );
    let end = second
        .stdout
        .wait_for(deadline(STREAM_LIMIT), |l| seq_of(l) == Some(n));
    assert!(
        end.is_some(),
        "run 2 never printed {n}\n{}",
        tail(&mut second)
    );
    second.signal(libc::SIGTERM);
    second.expect_done(SECS_10);
    let run2 = delivered(&second);
    let tally = Tally::of(&[&run1, &run2], n);
    tally.assert_exact_but_marked(MAX_IN_DOUBT, &tail(&mut second));
    assert!(
        run2.first().is_some_and(|g| g.redelivered && g.seq <= 11),
        "run 2 starts with the unfinished batch, marked: {:?}",
        run2.first()
    );
}

/// `bosun pub` stopped before the end of its stdin exits 143 (SIGTERM: interrupted, its
/// input cut short) and says how far it got; stopped after its stdin ended (serving
/// replays), it exits 0, its normal way to end.
#[test]
fn a_publisher_stopped_before_the_end_of_its_input_says_it_was_interrupted() {
    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    publisher.write_stdin("one\ntwo\n");
    // Its stdin stays open: whatever it has read so far, its input is not over.
    publisher.signal(libc::SIGTERM);
    let status = publisher.expect_exit(SECS_10);
    assert_eq!(status.code(), Some(143), "{}", tail(&mut publisher));
    publisher.expect_stderr("how far it got", SECS_10, |l| {
        l.contains("stopped before the end of stdin")
    });

    let eps = Endpoints::new();
    let (mut publisher, _) = start_pub("publisher", &eps, &[]);
    publisher.write_stdin("one\n");
    publisher.close_stdin();
    publisher.expect_stderr("stdin ended", SECS_10, |l| {
        l.contains("published 1 message(s)")
    });
    publisher.signal(libc::SIGTERM);
    let status = publisher.expect_exit(SECS_10);
    assert_eq!(status.code(), Some(0), "{}", tail(&mut publisher));
}
