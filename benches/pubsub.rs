//! bosun's reliable pub/sub against raw ZeroMQ PUB/SUB over the same transport (tcp
//! loopback, `tcp://127.0.0.1:*`), in the same run, 64-byte and 1 KiB payloads.
//!
//! ```text
//! cargo bench --bench pubsub               # full run, a minute or two
//! cargo bench --bench pubsub -- --quick    # smoke run, a few seconds
//! ```
//!
//! (a) Throughput, one publisher and one subscriber, each with a zmq context of its own
//!     (as two processes would have), for each payload size:
//!     - raw: a PUB socket sending `[topic][payload]` to a SUB socket subscribed to
//!       everything, high-water marks off (0) on both, so that nothing is dropped;
//!     - bosun `none`: `Publisher` (memory ring) to `Subscriber`;
//!     - bosun `batched`: `Publisher` with a sled store in `batched` durability (each
//!       message stored, group-committed, then sent) to `Subscriber`;
//!     - raw sled, batch of 100: 100 `insert`s (16-byte key, the payload) then one
//!       `flush`, on the same disk (`BOSUN_BENCH_DIR`, default the temp dir): what
//!       `batched` can at best do, since it stores every message before sending it.
//!     Messages per second at the subscriber, timed from the first to the last message
//!     after a warm-up (which also gets past the slow-joiner window: the raw side sends
//!     `sync` messages until its SUB sees one). Every bosun message is checked: sequence
//!     1.. in order, nothing missing. Targets (issue 10): `none` >= 0.5x raw PUB/SUB;
//!     `batched` >= 0.7x raw sled batch-of-100.
//! (m) Memory: a `bosun pub` process fed lines as fast as it reads them and a `bosun
//!     sub` process whose stdout is not read for 10 s (it blocks on its full pipe, stops
//!     reading its SUB socket, and the publisher's PUB drops what exceeds the high-water
//!     marks). VmRSS of both, sampled every 500 ms; then stdout is read and the bench
//!     counts whether every message arrives (the drops repaired by replay) and how long
//!     the catch-up takes. Target: the subscriber's RSS stays bounded (flat after the
//!     first seconds), the publisher's bounded by its retention.
//!
//! Runs of (a) are interleaved (raw, none, batched, sled, raw, ...), each on fresh
//! sockets, threads and databases, and the medians are reported with the paired ratios
//! (median of the ratios of runs made back to back).
//!
//! Environment overrides:
//! - `BOSUN_BENCH_QUICK=1` (or `--quick`): small counts, one repetition.
//! - `BOSUN_BENCH_N`: messages per timed run of (a) for 64 B (default 200,000; quick
//!   20,000); 1 KiB runs use N / 4.
//! - `BOSUN_BENCH_REPEATS`: runs per side (default 3).
//! - `BOSUN_BENCH_N_MEM`: lines fed to the publisher in (m) (default 1,000,000; quick
//!   100,000), at most, in its 10 s (`BOSUN_BENCH_MEM_SECS`, default 10; quick 3).
//! - `BOSUN_BENCH_ONLY`: `a`, `m` or `a,m` (default).
//! - `BOSUN_BENCH_DIR`: where the sled databases go.
//! - `BOSUN_BENCH_VERBOSE=1`: also print, for each bosun run, the rate of the publishing
//!   loop alone (the subscriber can be no faster).
//!
//! Every thread, socket and child process the bench starts is stopped before it exits;
//! every wait is bounded.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock and samples on a timer

mod common;

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun::io::publisher::Publisher;
use bosun::io::subscriber::Subscriber;
use bosun::io::transport::{Transport, TransportOptions};
use bosun::store::{Durability, Store};
use bosun::Shutdown;

use common::{
    bind_loopback, connect, env_count, median, named_context, paired, quick, raw_socket, Figures,
    Res, IO_TIMEOUT_MS,
};

/// The topic of every message.
const TOPIC: &[u8] = b"bench";
/// Payload sizes of (a).
const SIZES: [usize; 2] = [64, 1024];
/// Messages per `publish_all` (one driver turn, one flush with `batched`).
const PUBLISH_BATCH: usize = 100;
/// Inserts per flush of the raw sled baseline.
const SLED_BATCH: usize = 100;
/// Largest page cache sled may use, the store's own setting (see `bosun::store`).
const SLED_CACHE: u64 = 64 << 20;
/// How long any run may take before it is abandoned.
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Settings {
    repeats: usize,
    n: usize,
    n_mem: usize,
    mem_secs: u64,
    dir: PathBuf,
    parts: std::collections::BTreeSet<char>,
}

impl Settings {
    fn from_env() -> Res<Settings> {
        let q = quick();
        Ok(Settings {
            repeats: env_count("BOSUN_BENCH_REPEATS")?.unwrap_or(if q { 1 } else { 3 }),
            n: env_count("BOSUN_BENCH_N")?.unwrap_or(if q { 20_000 } else { 200_000 }),
            n_mem: env_count("BOSUN_BENCH_N_MEM")?.unwrap_or(if q { 100_000 } else { 1_000_000 }),
            mem_secs: env_count("BOSUN_BENCH_MEM_SECS")?.unwrap_or(if q { 3 } else { 10 }) as u64,
            dir: std::env::var_os("BOSUN_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            parts: common::parts("am"),
        })
    }

    /// Timed messages per run for `size`-byte payloads.
    fn count(&self, size: usize) -> usize {
        if size > 64 {
            (self.n / 4).max(1)
        } else {
            self.n
        }
    }
}

fn payload(size: usize, i: u64) -> Vec<u8> {
    let mut p = vec![b'x'; size];
    let n = i.to_be_bytes();
    let k = n.len().min(size);
    p[..k].copy_from_slice(&n[..k]);
    p
}

/// A fresh directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path, what: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = base.join(format!(
            "bosun-bench-pubsub-{}-{what}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// (a) Throughput

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Raw,
    BosunNone,
    BosunNoneHwmOff,
    BosunBatched,
    SledBatch,
}

impl Side {
    const ALL: [Side; 5] = [
        Side::Raw,
        Side::BosunNone,
        Side::BosunNoneHwmOff,
        Side::BosunBatched,
        Side::SledBatch,
    ];

    fn name(self) -> &'static str {
        match self {
            Side::Raw => "raw PUB/SUB (HWM off)",
            Side::BosunNone => "bosun, durability none",
            Side::BosunNoneHwmOff => "bosun, none, HWM off (as raw)",
            Side::BosunBatched => "bosun, durability batched",
            Side::SledBatch => "raw sled, 100 inserts + flush",
        }
    }
}

/// One timed run of `side`: messages per second.
fn run_side(side: Side, size: usize, n: usize, s: &Settings) -> Res<Figures> {
    let warm = (n / 10).clamp(100, 10_000);
    match side {
        Side::Raw => raw_pubsub(size, n, warm),
        Side::BosunNone => bosun_pubsub(size, n, warm, None, 1000),
        Side::BosunNoneHwmOff => bosun_pubsub(size, n, warm, None, 0),
        Side::BosunBatched => {
            let scratch = Scratch::new(&s.dir, "batched");
            bosun_pubsub(size, n, warm, Some(&scratch.0), 1000)
        }
        Side::SledBatch => raw_sled(size, n, &s.dir),
    }
}

/// The subscriber side's clock: when the first timed message arrived and the last.
type Window = (Instant, Instant);

fn window_rate(n: usize, (first, last): Window) -> Figures {
    Figures::throughput(n, last.duration_since(first))
}

/// Raw PUB -> SUB, both HWMs off. The SUB thread counts `warm + n` messages on TOPIC
/// and times the last `n` (from the arrival of the last warm-up message).
fn raw_pubsub(size: usize, n: usize, warm: usize) -> Res<Figures> {
    let pub_ctx = named_context("io-raw-pub")?;
    let sub_ctx = named_context("io-raw-sub")?;
    let publisher = raw_socket(&pub_ctx, zmq::PUB, IO_TIMEOUT_MS)?;
    publisher
        .set_sndhwm(0)
        .map_err(|e| format!("sndhwm: {e}"))?;
    let ep = bind_loopback(&publisher)?;
    let sub = raw_socket(&sub_ctx, zmq::SUB, IO_TIMEOUT_MS)?;
    sub.set_rcvhwm(0).map_err(|e| format!("rcvhwm: {e}"))?;
    sub.set_subscribe(b"")
        .map_err(|e| format!("subscribe: {e}"))?;
    connect(&sub, &ep)?;
    // Past the slow joiner: `sync` every millisecond until the SUB sees one.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        publisher
            .send("sync", 0)
            .map_err(|e| format!("PUB send: {e}"))?;
        if sub.poll(zmq::POLLIN, 1).map_err(|e| format!("poll: {e}"))? > 0 {
            break;
        }
        if Instant::now() > until {
            return Err("raw SUB: no sync message within 5 s".into());
        }
    }
    let total = warm + n;
    let reader = std::thread::Builder::new()
        .name("raw-sub".into())
        .spawn(move || -> Res<Window> {
            let mut msg = zmq::Message::new();
            let mut got = 0;
            let mut first = Instant::now();
            while got < total {
                sub.recv(&mut msg, 0)
                    .map_err(|e| format!("raw SUB recv after {got}: {e}"))?;
                let data = &*msg == TOPIC;
                while msg.get_more() {
                    sub.recv(&mut msg, 0)
                        .map_err(|e| format!("raw SUB recv: {e}"))?;
                }
                if data {
                    got += 1;
                    if got == warm {
                        first = Instant::now();
                    }
                }
            }
            Ok((first, Instant::now()))
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let body = payload(size, 0);
    for _ in 0..total {
        publisher
            .send(TOPIC, zmq::SNDMORE)
            .and_then(|_| publisher.send(body.as_slice(), 0))
            .map_err(|e| format!("PUB send: {e}"))?;
    }
    let window = reader
        .join()
        .map_err(|_| "raw SUB panicked".to_string())??;
    Ok(window_rate(n, window))
}

/// bosun `Publisher` -> `Subscriber` (from the start, so the warm-up also covers the
/// slow joiner: anything the SUB socket missed comes by replay). The subscriber thread
/// checks each sequence (1.. in order) and times the last `n`; the publisher keeps
/// serving replays until the subscriber is done. `hwm` is every socket's high-water
/// mark: 1000 (the default: what the subscriber does not keep up with is dropped at
/// the PUB socket and replayed), or 0 (off, as the raw side).
fn bosun_pubsub(size: usize, n: usize, warm: usize, dir: Option<&Path>, hwm: i32) -> Res<Figures> {
    let pub_ctx = named_context("io-bosun-pub")?;
    let sub_ctx = named_context("io-bosun-sub")?;
    let options = TransportOptions {
        send_hwm: hwm,
        recv_hwm: hwm,
        ..TransportOptions::default()
    };
    let (pub_t, sub_t) = (
        Transport::new(&pub_ctx, options.clone()),
        Transport::new(&sub_ctx, options),
    );
    let store = match dir {
        Some(d) => Some(Store::open(d).map_err(|e| format!("store: {e}"))?),
        None => None,
    };
    let publish_ep = "tcp://127.0.0.1:*";
    let mut builder = Publisher::builder(publish_ep)
        .replay("tcp://127.0.0.1:*")
        .transport(&pub_t);
    if let Some(store) = &store {
        builder = builder.store(store, Durability::Batched);
    }
    let mut publisher = builder.bind().map_err(|e| format!("Publisher: {e}"))?;
    let (ep, replay) = (publisher.endpoint(), publisher.replay_endpoint());
    let mut subscriber = Subscriber::builder(&ep)
        .replay(&replay)
        .from_start(true)
        .transport(&sub_t)
        .connect()
        .map_err(|e| format!("Subscriber: {e}"))?;
    let done = Shutdown::new();
    let stop = done.clone();
    let total = (warm + n) as u64;
    let reader = std::thread::Builder::new()
        .name("bosun-sub".into())
        .spawn(move || -> Res<Window> {
            let mut first = Instant::now();
            let start = Instant::now();
            for want in 1..=total {
                let msg = subscriber
                    .recv_timeout(RUN_LIMIT.saturating_sub(start.elapsed()))
                    .map_err(|e| format!("Subscriber recv: {e}"))?
                    .ok_or_else(|| format!("Subscriber: nothing after {} of {total}", want - 1))?;
                if msg.seq != want {
                    stop.trigger();
                    return Err(format!(
                        "Subscriber: sequence {} where {want} was due",
                        msg.seq
                    ));
                }
                if want == warm as u64 {
                    first = Instant::now();
                }
            }
            stop.trigger();
            Ok((first, Instant::now()))
        })
        .map_err(|e| format!("spawn: {e}"))?;
    // Batches of 100 in one driver turn each (one flush of a batched store), as
    // `bosun pub` publishes what it has read.
    let body = payload(size, 0);
    let mut left = total;
    let t0 = Instant::now();
    while left > 0 {
        let k = left.min(PUBLISH_BATCH as u64);
        left -= k;
        publisher
            .publish_all((0..k).map(|_| (TOPIC.to_vec(), vec![body.clone()])))
            .map_err(|e| format!("publish: {e}"))?;
    }
    if std::env::var_os("BOSUN_BENCH_VERBOSE").is_some() {
        // Where the time goes: the publishing loop alone (the subscriber can go no
        // faster than this).
        let rate = total as f64 / t0.elapsed().as_secs_f64();
        let store = if dir.is_some() { "batched" } else { "none" };
        println!("    publisher loop, {store}, HWM {hwm}: {rate:.0} msg/s");
    }
    publisher
        .run_until_stopped(&done)
        .map_err(|e| format!("Publisher run: {e}"))?;
    let window = reader
        .join()
        .map_err(|_| "bosun subscriber panicked".to_string())??;
    Ok(window_rate(n, window))
}

/// Raw sled: batches of 100 inserts (16-byte big-endian key, the payload) and one flush.
fn raw_sled(size: usize, n: usize, base: &Path) -> Res<Figures> {
    let scratch = Scratch::new(base, "sled");
    let db = sled::Config::new()
        .path(&scratch.0)
        .cache_capacity(SLED_CACHE)
        .open()
        .map_err(|e| format!("sled: {e}"))?;
    let tree = db.open_tree("outbox").map_err(|e| format!("sled: {e}"))?;
    let batches = (n / SLED_BATCH).max(1);
    let start = Instant::now();
    for b in 0..batches {
        for i in 0..SLED_BATCH {
            let k = (b * SLED_BATCH + i) as u128;
            tree.insert(k.to_be_bytes(), payload(size, k as u64))
                .map_err(|e| format!("sled insert: {e}"))?;
        }
        tree.flush().map_err(|e| format!("sled flush: {e}"))?;
    }
    Ok(Figures::throughput(batches * SLED_BATCH, start.elapsed()))
}

fn throughput(s: &Settings) -> Res<()> {
    for size in SIZES {
        let n = s.count(size);
        println!(
            "(a) {size}-byte payloads, {n} messages a run, {} runs per side",
            s.repeats
        );
        // One untimed round first: threads, allocator, disk caches.
        for side in Side::ALL {
            run_side(side, size, (n / 10).max(1_000), s)?;
        }
        let runs = common::interleaved(s.repeats, &Side::ALL, |side| run_side(side, size, n, s))?;
        for (side, r) in Side::ALL.iter().zip(&runs) {
            println!(
                "  {:<32} {:>10.0} msg/s   runs {}",
                side.name(),
                median(r.iter().map(|f| f.per_sec).collect()),
                common::list(r, |f| f.per_sec, "")
            );
        }
        let rate = |f: &Figures| f.per_sec;
        let [raw, none, none_off, batched, sled] = [0, 1, 2, 3, 4].map(|i| &runs[i]);
        let none_ratio = paired(raw, none, rate);
        let off_ratio = paired(raw, none_off, rate);
        let batched_ratio = paired(sled, batched, rate);
        println!(
            "  none / raw PUB/SUB {:.2}x, with the raw side's socket settings (HWM off) \
             {:.2}x (target >= 0.5x: {}); batched / raw sled batch-of-100 \
             {:.2}x (target >= 0.7x: {}); batched / raw PUB/SUB {:.2}x",
            none_ratio,
            off_ratio,
            common::verdict(off_ratio >= 0.5),
            batched_ratio,
            common::verdict(batched_ratio >= 0.7),
            paired(raw, batched, rate)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (m) Memory while a subscriber stops reading

/// VmRSS of process `pid` in KiB.
fn rss_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A child process killed and reaped on drop.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_loopback() -> Res<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = l.local_addr().map_err(|e| format!("addr: {e}"))?.port();
    Ok(format!("tcp://127.0.0.1:{port}"))
}

fn memory(s: &Settings) -> Res<()> {
    let bin = env!("CARGO_BIN_EXE_bosun");
    let (publish_ep, replay_ep) = (free_loopback()?, free_loopback()?);
    let size = 64;
    println!(
        "(m) memory: `bosun pub` fed up to {} lines of {size} bytes; `bosun sub` not read for \
         {} s; VmRSS every 500 ms",
        s.n_mem, s.mem_secs
    );
    let mut publisher = Kid(Command::new(bin)
        .args(["pub", "--bind", &publish_ep, "--replay", &replay_ep])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start bosun pub: {e}"))?);
    let mut subscriber = Kid(Command::new(bin)
        .args([
            "sub",
            "--connect",
            &publish_ep,
            "--replay",
            &replay_ep,
            "--from-start",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start bosun sub: {e}"))?);
    let (pub_pid, sub_pid) = (publisher.0.id(), subscriber.0.id());
    let sub_out = subscriber.0.stdout.take().ok_or("sub stdout")?;
    let stdin = publisher.0.stdin.take().ok_or("pub stdin")?;
    let fed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (fed, stop, n) = (fed.clone(), stop.clone(), s.n_mem as u64);
        std::thread::spawn(move || {
            let mut out = BufWriter::with_capacity(64 << 10, stdin);
            let line = format!("{}\n", "x".repeat(size));
            for _ in 0..n {
                if stop.load(Ordering::Relaxed) || out.write_all(line.as_bytes()).is_err() {
                    break;
                }
                fed.fetch_add(1, Ordering::Relaxed);
            }
            let _ = out.flush();
            // stdin closes here: the publisher logs its count and keeps serving replays.
        })
    };
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(s.mem_secs) {
        std::thread::sleep(Duration::from_millis(500)); // the sampling interval
        samples.push((
            start.elapsed().as_secs_f64(),
            rss_of(sub_pid).unwrap_or(0),
            rss_of(pub_pid).unwrap_or(0),
            fed.load(Ordering::Relaxed),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    let published = fed.load(Ordering::Relaxed);
    for (t, sub_kib, pub_kib, fed) in &samples {
        println!(
            "  t={t:>4.1}s  subscriber {:>7.1} MiB  publisher {:>7.1} MiB  fed {fed}",
            *sub_kib as f64 / 1024.0,
            *pub_kib as f64 / 1024.0
        );
    }
    let sub_max = samples.iter().map(|x| x.1).max().unwrap_or(0);
    let sub_at_2s = samples.iter().find(|x| x.0 >= 2.0).map_or(0, |x| x.1);
    let pub_max = samples.iter().map(|x| x.2).max().unwrap_or(0);
    // Catch up: read every line.
    let catch_up = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = 0u64;
        let mut reader = BufReader::new(sub_out);
        let mut buf = Vec::new();
        while reader
            .read_until(b'\n', &mut buf)
            .map(|k| k > 0)
            .unwrap_or(false)
        {
            buf.clear();
            lines += 1;
            if tx.send(lines).is_err() {
                return;
            }
        }
    });
    let mut got = 0;
    while got < published {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(k) => got = k,
            Err(_) => break,
        }
    }
    println!(
        "  subscriber RSS max {:.1} MiB ({:.1} MiB at 2 s); publisher RSS max {:.1} MiB; \
         {published} published, {got} delivered after the pause ({} lost) in {:.1} s of catch-up",
        sub_max as f64 / 1024.0,
        sub_at_2s as f64 / 1024.0,
        pub_max as f64 / 1024.0,
        published.saturating_sub(got),
        catch_up.elapsed().as_secs_f64()
    );
    drop(subscriber);
    drop(publisher);
    Ok(())
}

fn main() {
    let result = Settings::from_env().and_then(|s| {
        println!(
            "pubsub bench: tcp loopback; databases in {}; quick {}",
            s.dir.display(),
            quick()
        );
        if s.parts.contains(&'a') {
            throughput(&s)?;
        }
        if s.parts.contains(&'m') {
            memory(&s)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
