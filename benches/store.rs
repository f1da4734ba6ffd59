//! The outbox's append-and-confirm path against raw sled, in the same run, on the same
//! disk, with the same sled settings (page cache size).
//!
//! | case | one confirmation is |
//! | --- | --- |
//! | raw sled, batch of 100 | 100 `insert`s (16-byte key, the 64-byte payload), one `flush` |
//! | outbox `batched` | 100 [`Outbox::append`]s, one [`Outbox::commit`] |
//! | raw sled, flush each | one `insert`, one `flush` |
//! | outbox `every` | one [`Outbox::append`] |
//! | raw sled, no flush | one `insert` |
//! | outbox `none` | one [`Outbox::append`] |
//!
//! After an untimed warm-up round, each round runs every case once, in turn, each on a
//! fresh database; the figures are
//! the median over rounds of requests confirmed per second, and the 99th percentile of
//! the time one confirmation takes (a batch, or a single request), pooled over rounds.
//! The ratio outbox / raw is what the store costs on top of sled (issue 10 wants
//! `batched` at 0.7x raw batch-of-100 or more, `every` at 0.8x raw flush-each or more).
//!
//! ```text
//! cargo bench --bench store             # 5 rounds
//! cargo bench --bench store -- --quick  # 3 short rounds
//! ```
//! `BOSUN_BENCH_DIR` chooses where the databases go (default: the system temp dir); each
//! is removed after its case.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun::store::{Appended, Durability, OutboxRecord, Store};
use uuid::Uuid;

/// Payload bytes of every request, as in the other benches.
const BODY: usize = 64;
/// Requests per group commit.
const BATCH: usize = 100;
/// Largest page cache sled may use, the store's own setting (see `bosun::store`).
const CACHE_BYTES: u64 = 64 << 20;

struct Settings {
    rounds: usize,
    /// Requests per round in the cases that flush per batch or never.
    batched: usize,
    /// Requests per round in the cases that flush per request.
    every: usize,
    dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    RawBatch,
    OutboxBatched,
    RawEach,
    OutboxEvery,
    RawNoFlush,
    OutboxNone,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::RawBatch,
        Case::OutboxBatched,
        Case::RawEach,
        Case::OutboxEvery,
        Case::RawNoFlush,
        Case::OutboxNone,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::RawBatch => "raw sled, 100 inserts + flush",
            Case::OutboxBatched => "outbox batched, 100 + commit",
            Case::RawEach => "raw sled, insert + flush",
            Case::OutboxEvery => "outbox every",
            Case::RawNoFlush => "raw sled, insert, no flush",
            Case::OutboxNone => "outbox none",
        }
    }

    /// Requests per confirmation.
    fn group(self) -> usize {
        match self {
            Case::RawBatch | Case::OutboxBatched => BATCH,
            _ => 1,
        }
    }

    fn count(self, s: &Settings) -> usize {
        match self {
            Case::RawEach | Case::OutboxEvery => s.every,
            _ => s.batched,
        }
    }
}

/// What one case measured in one round.
struct Run {
    per_sec: f64,
    /// Time of each confirmation (a group of [`Case::group`] requests).
    confirms: Vec<Duration>,
}

fn payload(n: u128) -> Vec<u8> {
    let mut p = vec![0u8; BODY];
    p[..16].copy_from_slice(&n.to_be_bytes());
    p
}

/// A fresh directory for one case, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(base: &Path, case: Case, round: usize) -> Scratch {
        let path = base.join(format!(
            "bosun-bench-store-{}-{case:?}-{round}",
            std::process::id()
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

fn run(case: Case, s: &Settings, round: usize) -> Result<Run, String> {
    let scratch = Scratch::new(&s.dir, case, round);
    let n = case.count(s);
    let group = case.group();
    let mut confirms = Vec::with_capacity(n / group);
    let first = (round as u128) << 64; // distinct ids in every round
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", case.name());
    let start;
    match case {
        Case::RawBatch | Case::RawEach | Case::RawNoFlush => {
            let db = sled::Config::new()
                .path(&scratch.0)
                .cache_capacity(CACHE_BYTES)
                .open()
                .map_err(|e| err(&e))?;
            let tree = db.open_tree("outbox").map_err(|e| err(&e))?;
            start = Instant::now();
            for g in 0..n / group {
                let t = Instant::now();
                for i in 0..group {
                    let id = first + (g * group + i) as u128;
                    tree.insert(Uuid::from_u128(id).as_bytes(), payload(id))
                        .map_err(|e| err(&e))?;
                }
                if case != Case::RawNoFlush {
                    tree.flush().map_err(|e| err(&e))?;
                }
                confirms.push(t.elapsed());
            }
        }
        Case::OutboxBatched | Case::OutboxEvery | Case::OutboxNone => {
            let durability = match case {
                Case::OutboxBatched => Durability::Batched,
                Case::OutboxEvery => Durability::Every,
                _ => Durability::None,
            };
            let store = Store::open(&scratch.0).map_err(|e| err(&e))?;
            let mut outbox = store.outbox(usize::MAX, durability).map_err(|e| err(&e))?;
            start = Instant::now();
            for g in 0..n / group {
                let t = Instant::now();
                for i in 0..group {
                    let id = first + (g * group + i) as u128;
                    let record = OutboxRecord::new(Uuid::from_u128(id), 0, vec![payload(id)]);
                    let appended = outbox.append(&record).map_err(|e| err(&e))?;
                    debug_assert_eq!(appended == Appended::Staged, group > 1);
                }
                if group > 1 {
                    let confirmed = outbox.commit().map_err(|e| err(&e))?;
                    if confirmed.len() != group {
                        return Err(format!(
                            "{}: commit confirmed {}",
                            case.name(),
                            confirmed.len()
                        ));
                    }
                }
                confirms.push(t.elapsed());
            }
        }
    }
    let elapsed = start.elapsed();
    Ok(Run {
        per_sec: (n / group * group) as f64 / elapsed.as_secs_f64(),
        confirms,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

fn main() {
    if let Err(e) = try_main() {
        eprintln!("bench store: {e}");
        std::process::exit(1);
    }
}

fn try_main() -> Result<(), String> {
    // `cargo bench` passes `--bench`; only `--quick` means something here.
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = std::env::var_os("BOSUN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let s = if quick {
        Settings {
            rounds: 3,
            batched: 20_000,
            every: 500,
            dir,
        }
    } else {
        Settings {
            rounds: 5,
            batched: 100_000,
            every: 2_000,
            dir,
        }
    };
    println!(
        "store bench: {} rounds; {} requests a round flushed per batch or never, {} flushed \
         each; {BODY}-byte payloads; databases in {}",
        s.rounds,
        s.batched,
        s.every,
        s.dir.display()
    );
    // One short untimed round first: sled's threads, the allocator and the disk's caches
    // warm up, so that the first timed case is not the one that pays for it.
    let warm = Settings {
        rounds: 1,
        batched: s.batched / 10,
        every: s.every / 10,
        dir: s.dir.clone(),
    };
    for case in Case::ALL {
        run(case, &warm, usize::MAX)?;
    }
    let mut per_sec: Vec<Vec<f64>> = vec![Vec::new(); Case::ALL.len()];
    let mut confirms: Vec<Vec<Duration>> = vec![Vec::new(); Case::ALL.len()];
    for round in 0..s.rounds {
        for (i, case) in Case::ALL.iter().enumerate() {
            let r = run(*case, &s, round)?;
            per_sec[i].push(r.per_sec);
            confirms[i].extend(r.confirms);
        }
    }
    let med: Vec<f64> = per_sec.into_iter().map(median).collect();
    let tails: Vec<Duration> = confirms.into_iter().map(p99).collect();
    println!(
        "{:<32} {:>12} {:>16}",
        "case", "requests/s", "p99 per confirm"
    );
    for (i, case) in Case::ALL.iter().enumerate() {
        println!(
            "{:<32} {:>12.0} {:>13.3} ms",
            case.name(),
            med[i],
            tails[i].as_secs_f64() * 1e3
        );
    }
    let ratio = |outbox: Case, raw: Case| med[outbox as usize] / med[raw as usize];
    let added = |outbox: Case, raw: Case| {
        (tails[outbox as usize].as_secs_f64() - tails[raw as usize].as_secs_f64()) * 1e3
    };
    println!(
        "ratio outbox/raw: batched {:.2} (target >= 0.70, p99 {:+.3} ms, target <= +2 ms), \
         every {:.2} (target >= 0.80), none {:.2}",
        ratio(Case::OutboxBatched, Case::RawBatch),
        added(Case::OutboxBatched, Case::RawBatch),
        ratio(Case::OutboxEvery, Case::RawEach),
        ratio(Case::OutboxNone, Case::RawNoFlush),
    );
    Ok(())
}
