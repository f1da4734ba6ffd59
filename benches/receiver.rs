//! What the receiver's gate costs per request: the Majordomo worker core alone (no
//! sockets, virtual time), one request in (`handle_frames`), handed over, answered
//! (`reply`), its REPLY drained, with the gate off, with a window in memory, with
//! `max_attempts` too (a copy of the payload kept for re-runs), and with the records
//! written through the [`Recorder`] to a memory store and to sled (`none`, and `batched`
//! with a flush per request, which is what a worker of capacity 1 does, and per 100,
//! what a pool's batch of replies gets). Then a duplicate answered from the cache. Each
//! request has a new id, 64-byte body, so the window fills to its 100,000 ids and then
//! evicts one per request: the steady state of a busy worker.
//!
//! ```text
//! cargo bench --bench receiver             # full run
//! cargo bench --bench receiver -- --quick  # smoke run
//! ```
//! `BOSUN_BENCH_DIR` chooses where the sled databases go (default: the system temp dir);
//! each is removed after its case.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bosun::io::receiver::{self, ReceiverOptions, Recorder};
use bosun::proto::dedup::{Limits, Window};
use bosun::proto::envelope::Envelope;
use bosun::proto::frames::mdp::{self, Command};
use bosun::proto::frames::Frames;
use bosun::proto::gate::Policy;
use bosun::proto::worker::{Event, MdWorker};
use bosun::store::{Durability, Store};
use bosun::{Backoff, Heartbeat};
use uuid::Uuid;

/// Payload bytes of every request, as in the other benches.
const BODY: usize = 64;
/// The wall clock the core is told (any fixed value: time is virtual).
const T0_MS: u64 = 1_700_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Off,
    Window,
    WindowAttempts,
    MemoryStore,
    SledNone,
    SledBatched1,
    SledBatched100,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Off => "gate off (the library default)",
            Case::Window => "window in memory (--dedup)",
            Case::WindowAttempts => "window + max attempts 3",
            Case::MemoryStore => "  + records to a memory store",
            Case::SledNone => "  + records to sled, none",
            Case::SledBatched1 => "  + records to sled, batched, flush per request",
            Case::SledBatched100 => "  + records to sled, batched, flush per 100",
        }
    }
}

fn worker(t: Instant, policy: Policy) -> MdWorker {
    let hb = Heartbeat {
        interval: Duration::from_secs(3600),
        liveness: 3,
    };
    let backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(1),
        jitter: 0.0,
    };
    let mut w = MdWorker::new(t, b"echo", 1, hb, backoff, 1).expect("settings");
    w.set_policy(policy).expect("policy");
    w.handle_wall_clock(t, T0_MS);
    while w.poll_transmit().is_some() {}
    while w.poll_event().is_some() {}
    w
}

/// A REQUEST as the worker receives it, id `n`, attempt `attempt`.
fn request(n: u64, attempt: u32) -> Frames {
    let mut e = Envelope::new(Uuid::from_u128(n.into()), T0_MS, vec![vec![7; BODY]]);
    e.meta.attempt = attempt;
    mdp::routed(None, Command::Request, b"client", e.encode())
}

/// Feeds `requests`, answering each with its payload, the records written through
/// `recorder` (committed every `commit_every` requests); ns per request.
fn run(
    w: &mut MdWorker,
    recorder: &mut Option<Recorder>,
    requests: Vec<Frames>,
    commit_every: usize,
    t: Instant,
) -> f64 {
    let n = requests.len();
    let start = Instant::now();
    for (i, frames) in requests.into_iter().enumerate() {
        w.handle_frames(t, frames);
        if let Some(r) = recorder.as_mut() {
            while let Some(rec) = w.poll_record() {
                r.write(rec).expect("write");
            }
        }
        while let Some(e) = w.poll_event() {
            if let Event::Request { token, request } = e {
                w.reply(t, token, Ok(request.payload));
            }
        }
        if let Some(r) = recorder.as_mut() {
            while let Some(rec) = w.poll_record() {
                r.write(rec).expect("write");
            }
            if (i + 1) % commit_every == 0 {
                r.commit().expect("commit");
            }
        }
        let mut sent = 0;
        while w.poll_transmit().is_some() {
            sent += 1;
        }
        assert_eq!(sent, 1, "one REPLY per request");
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn dir_root() -> PathBuf {
    std::env::var_os("BOSUN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// One case: ns per new request, and ns per duplicate answered from the cache.
fn case(c: Case, n: usize) -> (f64, f64) {
    let t = Instant::now();
    let dir = dir_root().join(format!("bosun-bench-receiver-{}-{c:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let window = || Some(Window::new(Limits::default()));
    let (policy, mut recorder, commit_every) = match c {
        Case::Off => (Policy::default(), None, 1),
        Case::Window => (
            Policy {
                window: window(),
                ..Policy::default()
            },
            None,
            1,
        ),
        Case::WindowAttempts => (
            Policy {
                window: window(),
                max_attempts: Some(3),
                dead_letters_kept: false,
            },
            None,
            1,
        ),
        Case::MemoryStore | Case::SledNone | Case::SledBatched1 | Case::SledBatched100 => {
            let (store, durability, every) = match c {
                Case::MemoryStore => (Store::memory(), Durability::Batched, 1),
                Case::SledNone => (Store::open(&dir).expect("store"), Durability::None, 1),
                Case::SledBatched1 => (Store::open(&dir).expect("store"), Durability::Batched, 1),
                _ => (Store::open(&dir).expect("store"), Durability::Batched, 100),
            };
            let options = ReceiverOptions {
                store: Some(store),
                durability,
                max_attempts: Some(3),
                ..ReceiverOptions::default()
            };
            let (policy, recorder) = receiver::open(&options, T0_MS).expect("open");
            (policy, Some(recorder), every)
        }
    };
    let mut w = worker(t, policy);
    let fresh: Vec<Frames> = (0..n as u64).map(|i| request(i, 1)).collect();
    let new_ns = run(&mut w, &mut recorder, fresh, commit_every, t);
    // Copies of the last (finished) request: answered from the cache, or run again when
    // the gate is off.
    let last = n as u64 - 1;
    let copies = (n / 10).max(100);
    let dups: Vec<Frames> = (0..copies).map(|_| request(last, 2)).collect();
    let dup_ns = run(&mut w, &mut recorder, dups, commit_every, t);
    drop((w, recorder));
    let _ = std::fs::remove_dir_all(&dir);
    (new_ns, dup_ns)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("BOSUN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    // Beyond the window's 100,000 ids, so the steady state (one eviction per request)
    // is measured; fewer where every request waits for a flush.
    let n = if quick { 20_000 } else { 200_000 };
    let n_flush = if quick { 500 } else { 3_000 };
    println!(
        "receiver gate, Majordomo worker core, {BODY}-byte bodies, ns per request (best of 3)"
    );
    println!("{:<50} {:>12} {:>16}", "case", "new request", "duplicate");
    let mut off = f64::NAN;
    for c in [
        Case::Off,
        Case::Window,
        Case::WindowAttempts,
        Case::MemoryStore,
        Case::SledNone,
        Case::SledBatched100,
        Case::SledBatched1,
    ] {
        let count = if c == Case::SledBatched1 { n_flush } else { n };
        let rounds = if c == Case::SledBatched1 { 1 } else { 3 };
        let (mut new_ns, mut dup_ns) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..rounds {
            let (a, b) = case(c, count);
            new_ns = new_ns.min(a);
            dup_ns = dup_ns.min(b);
        }
        if c == Case::Off {
            off = new_ns;
        }
        println!(
            "{:<50} {:>9.0} ns {:>13.0} ns   ({:.2}x off, n={count})",
            c.name(),
            new_ns,
            dup_ns,
            new_ns / off
        );
    }
}
