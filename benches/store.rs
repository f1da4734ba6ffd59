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
//! That is part (a), "append". Part (d), "disk", measures what a long run leaves behind
//! (issue 9, item 8): the data directory's size on disk and the process's RSS over
//! 1,000,000 requests sent and answered, each case on a fresh data dir:
//!
//! | case | per request |
//! | --- | --- |
//! | client outbox, 64 B | [`Outbox::append`] (`batched`, [`Outbox::commit`] every 100), [`Outbox::ack`] 100 appends later |
//! | client outbox, 1 KiB | the same with a 1 KiB payload |
//! | worker dedup log, 64 B replies | [`DedupLog::finish`] with the reply, [`DedupLog::forget`] what the [`Window`] (default limits: 100,000 ids) evicts, [`DedupLog::flush`] every 100, as a `batched` receiver does |
//!
//! Every tenth of the run it prints the requests done, the data dir's size (sum of the
//! file sizes under it, and of the blocks allocated: `st_blocks` * 512) and VmRSS; the
//! peak disk is sampled every 1,000 requests (MB are 10^6 bytes). The targets (issue 9):
//! disk under 100 MB after 1,000,000 requests, and RSS flat: within 10% from the first
//! tenth to the end (for the dedup log, from when its window is full); the growth over
//! the second half is printed beside it. VmRSS is the whole process's, and part (a)
//! leaves it higher: run (d) alone for its RSS figures. The disk figures settle because
//! sled 0.34 cleans a log segment once at most half of it is live (its live pages are
//! rewritten, the segment reused), not because the store compacts anything.
//!
//! ```text
//! cargo bench --bench store                         # (a) 5 rounds, then (d) 1,000,000 requests a case
//! cargo bench --bench store -- --quick              # (a) 3 short rounds, (d) 100,000
//! BOSUN_BENCH_ONLY=disk cargo bench --bench store   # only (d); `append` (or `a`) only (a)
//! ```
//! - `BOSUN_BENCH_DIR` chooses where the databases go (default: the system temp dir); each
//!   is removed after its case.
//! - `BOSUN_BENCH_ONLY`: the parts, by first letter, e.g. `a,d` (the default) or `disk`.
//! - `BOSUN_BENCH_QUICK=1` is `--quick`; `BOSUN_BENCH_N_DISK` the requests of each case
//!   of (d) (default 1,000,000; quick 100,000).
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun::proto::dedup::{CachedReply, Limits, Window};
use bosun::store::{Appended, DedupLog, Durability, Outbox, OutboxRecord, Store};
use common::{count, parts, quick, rss_kib, verdict, DataDir};
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
    for part in parts("ad") {
        match part {
            'a' => part_append()?,
            'd' => part_disk()?,
            other => {
                return Err(format!(
                    "unknown part {other:?} in BOSUN_BENCH_ONLY (a: append, d: disk)"
                ))
            }
        }
    }
    Ok(())
}

/// Part (a): the append-and-confirm rates, outbox against raw sled.
fn part_append() -> Result<(), String> {
    // `cargo bench` passes `--bench`; only `--quick` means something here.
    let quick = quick();
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

// ---------------------------------------------------------------------------------------
// Part (d): disk use and RSS over a long run

/// Requests in flight in (d): each is answered (acked, or finished at a worker) 100
/// requests after it was appended.
const IN_FLIGHT: usize = 100;
/// The larger payload of (d).
const LARGE: usize = 1024;
/// Disk target after the whole run (issue 9): 100 MB.
const DISK_TARGET: u64 = 100_000_000;
/// RSS target: at most 10% more at the end than after the first tenth.
const RSS_GROWTH: f64 = 0.10;
/// Requests between two samples of the disk size for its peak.
const PEAK_EVERY: usize = 1_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum DiskCase {
    Outbox64,
    Outbox1K,
    Dedup64,
}

impl DiskCase {
    const ALL: [DiskCase; 3] = [DiskCase::Outbox64, DiskCase::Outbox1K, DiskCase::Dedup64];

    fn name(self) -> &'static str {
        match self {
            DiskCase::Outbox64 => "client outbox, 64 B payload",
            DiskCase::Outbox1K => "client outbox, 1 KiB payload",
            DiskCase::Dedup64 => "worker dedup log, 64 B replies",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            DiskCase::Outbox64 => "disk-outbox-64",
            DiskCase::Outbox1K => "disk-outbox-1k",
            DiskCase::Dedup64 => "disk-dedup-64",
        }
    }
}

/// Bytes under `dir`, recursively: (sum of file sizes, sum of `st_blocks` * 512).
fn dir_size(dir: &Path) -> Result<(u64, u64), String> {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        // A file sled removes between the listing and the stat counts for nothing.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            let (len, blocks) = dir_size(&entry.path())?;
            total.0 += len;
            total.1 += blocks;
        } else {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    Ok(total)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn kib_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// One sample of (d).
struct Sample {
    done: usize,
    len: u64,
    blocks: u64,
    rss_kib: u64,
}

/// What one case of (d) measured.
struct DiskRun {
    samples: Vec<Sample>,
    peak: u64,
    peak_blocks: u64,
    /// (file sizes, blocks) once the store is closed.
    closed: (u64, u64),
    rss_before_kib: u64,
    elapsed: Duration,
}

/// Where one case of (d) is: what it drives and what it has seen.
struct Tracker<'a> {
    dir: &'a Path,
    n: usize,
    step: usize,
    samples: Vec<Sample>,
    peak: u64,
    peak_blocks: u64,
}

impl Tracker<'_> {
    /// After request `done` (counted from 1): the peak every [`PEAK_EVERY`], a printed
    /// sample every `step`.
    fn after(&mut self, done: usize) -> Result<(), String> {
        if done % PEAK_EVERY != 0 && done % self.step != 0 && done != self.n {
            return Ok(());
        }
        let (len, blocks) = dir_size(self.dir)?;
        self.peak = self.peak.max(len);
        self.peak_blocks = self.peak_blocks.max(blocks);
        if done % self.step == 0 || done == self.n {
            let rss = rss_kib()?;
            println!(
                "  {done:>9} {:>10.1} {:>12.1} {:>8.1}",
                mb(len),
                mb(blocks),
                kib_mb(rss)
            );
            self.samples.push(Sample {
                done,
                len,
                blocks,
                rss_kib: rss,
            });
        }
        Ok(())
    }
}

fn request(size: usize, now_ms: u64) -> OutboxRecord {
    let mut payload = vec![0u8; size];
    fastrand::fill(&mut payload);
    OutboxRecord {
        service: Some(b"echo".to_vec()),
        deadline_ms: Some(now_ms + 30_000),
        attempts: 1,
        ..OutboxRecord::new(Uuid::now_v7(), now_ms, vec![payload])
    }
}

/// A client with [`IN_FLIGHT`] requests out: append (staged), commit every
/// [`BATCH`] as the client's group commit does (the batch may then be sent), ack each
/// [`IN_FLIGHT`] appends after it (answered).
fn drive_outbox(outbox: &mut Outbox, size: usize, t: &mut Tracker) -> Result<(), String> {
    let err = |e: bosun::store::StoreError| format!("outbox: {e}");
    let mut out = std::collections::VecDeque::with_capacity(IN_FLIGHT + BATCH);
    for i in 0..t.n {
        let record = request(size, bosun::io::unix_ms());
        if outbox.append(&record).map_err(err)? != Appended::Staged {
            return Err("outbox: a batched append was not staged".into());
        }
        out.push_back(record.id);
        if (i + 1) % BATCH == 0 || i + 1 == t.n {
            let staged = outbox.staged().len();
            let confirmed = outbox.commit().map_err(err)?.len();
            if confirmed != staged {
                return Err(format!("outbox: commit confirmed {confirmed} of {staged}"));
            }
        }
        if out.len() > IN_FLIGHT {
            let id = out.pop_front().expect("more than IN_FLIGHT out");
            if !outbox.ack(id).map_err(err)? {
                return Err(format!("outbox: ack of {id}: not pending"));
            }
        }
        t.after(i + 1)?;
    }
    for id in out.drain(..) {
        outbox.ack(id).map_err(err)?;
    }
    outbox.commit().map_err(err)?;
    if !outbox.is_empty() {
        return Err(format!("outbox: {} left after the run", outbox.len()));
    }
    Ok(())
}

/// A `batched` receiver with the default window: each request begins (not written with
/// `batched`), finishes with its 64-byte reply written to the log, and the ids the
/// window evicts are forgotten; a flush every [`BATCH`] finished.
fn drive_dedup(log: &DedupLog, t: &mut Tracker) -> Result<(), String> {
    let err = |e: bosun::store::StoreError| format!("dedup log: {e}");
    let mut window = Window::new(Limits::default());
    let mut running = std::collections::VecDeque::with_capacity(IN_FLIGHT + 1);
    let mut finished = 0;
    for i in 0..t.n {
        let now = bosun::io::unix_ms();
        let id = Uuid::now_v7();
        let evicted = window.begin(id, now);
        log.forget(&evicted).map_err(err)?;
        running.push_back(id);
        // Answered IN_FLIGHT requests after it began (the last ones at the end).
        while running.len() > IN_FLIGHT || (i + 1 == t.n && !running.is_empty()) {
            let id = running.pop_front().expect("a running id");
            let mut frame = vec![0u8; BODY];
            fastrand::fill(&mut frame);
            let reply = CachedReply {
                frames: vec![frame],
                meta: Vec::new(),
            };
            log.finish(id, Some(&reply), now).map_err(err)?;
            let evicted = window.finish(id, reply, now);
            log.forget(&evicted).map_err(err)?;
            finished += 1;
            if finished % BATCH == 0 {
                log.flush().map_err(err)?;
            }
        }
        t.after(i + 1)?;
    }
    log.flush().map_err(err)?;
    let limit = Limits::default().max_ids;
    if log.len() > limit {
        return Err(format!(
            "dedup log: {} entries after the run, window {limit}",
            log.len()
        ));
    }
    Ok(())
}

fn disk_run(case: DiskCase, n: usize) -> Result<DiskRun, String> {
    let data = DataDir::new(case.tag())?;
    let rss_before_kib = rss_kib()?;
    let store = Store::open(&data.0).map_err(|e| format!("{}: {e}", case.name()))?;
    let mut t = Tracker {
        dir: &data.0,
        n,
        step: (n / 10).max(1),
        samples: Vec::new(),
        peak: 0,
        peak_blocks: 0,
    };
    println!(
        "(d) {}: {n} requests, {IN_FLIGHT} in flight, flushed every {BATCH} (batched), in {}",
        case.name(),
        data.0.display()
    );
    println!(
        "  {:>9} {:>10} {:>12} {:>8}",
        "requests", "disk MB", "allocated MB", "RSS MB"
    );
    let start = Instant::now();
    match case {
        DiskCase::Outbox64 | DiskCase::Outbox1K => {
            let size = if case == DiskCase::Outbox64 {
                BODY
            } else {
                LARGE
            };
            let mut outbox = store
                .outbox(bosun::io::outbox::DEFAULT_OUTBOX_LIMIT, Durability::Batched)
                .map_err(|e| format!("{}: {e}", case.name()))?;
            drive_outbox(&mut outbox, size, &mut t)?;
        }
        DiskCase::Dedup64 => {
            let log = store
                .dedup_log(Durability::Batched)
                .map_err(|e| format!("{}: {e}", case.name()))?;
            drive_dedup(&log, &mut t)?;
        }
    }
    let elapsed = start.elapsed();
    drop(store);
    let closed = dir_size(&data.0)?;
    Ok(DiskRun {
        samples: t.samples,
        peak: t.peak.max(closed.0),
        peak_blocks: t.peak_blocks.max(closed.1),
        closed,
        rss_before_kib,
        elapsed,
    })
}

/// The sample RSS is judged from: the first (a tenth of the run in), or for the dedup
/// log the first once its window is full (it holds [`Limits::max_ids`] ids from then
/// on); `None` when that is the last sample.
fn rss_base(case: DiskCase, samples: &[Sample]) -> Option<&Sample> {
    let from = match case {
        DiskCase::Dedup64 => Limits::default().max_ids,
        _ => 0,
    };
    let base = samples.iter().find(|s| s.done >= from)?;
    (samples.len() > 1 && !std::ptr::eq(base, samples.last()?)).then_some(base)
}

/// Part (d): disk and RSS over a long run, each case of [`DiskCase`] in turn.
fn part_disk() -> Result<(), String> {
    let n = count(
        "BOSUN_BENCH_N_DISK",
        if quick() { 100_000 } else { 1_000_000 },
    )?;
    let mut all_met = true;
    let mut summary = Vec::new();
    for case in DiskCase::ALL {
        let r = disk_run(case, n)?;
        let last = r
            .samples
            .last()
            .ok_or_else(|| format!("{}: no samples", case.name()))?;
        let half = r.samples.iter().find(|s| s.done >= n / 2).unwrap_or(last);
        let disk_ok = last.len < DISK_TARGET && r.peak < DISK_TARGET;
        let growth = |from: &Sample| last.rss_kib as f64 / from.rss_kib.max(1) as f64 - 1.0;
        let rss = match rss_base(case, &r.samples) {
            Some(base) => {
                let ok = growth(base) <= RSS_GROWTH;
                all_met &= ok;
                format!(
                    "RSS {:.1} MB at {} vs {:.1} MB at {} ({:+.1} MB, {:+.1}%): {} (over the \
                     second half, from {}: {:+.1}%)",
                    kib_mb(base.rss_kib),
                    base.done,
                    kib_mb(last.rss_kib),
                    last.done,
                    kib_mb(last.rss_kib) - kib_mb(base.rss_kib),
                    growth(base) * 100.0,
                    verdict(ok),
                    half.done,
                    growth(half) * 100.0,
                )
            }
            None => format!(
                "RSS {:.1} MB at {} (not judged: the window fills at {} ids)",
                kib_mb(last.rss_kib),
                last.done,
                Limits::default().max_ids
            ),
        };
        all_met &= disk_ok;
        println!(
            "  {} requests in {:.1}s ({:.0} req/s); disk MB: peak {:.1} (allocated {:.1}), at \
             the end {:.1} ({:.1}), after close {:.1} ({:.1}); RSS before the case {:.1} MB, \
             growth over the second half {:+.1}%",
            last.done,
            r.elapsed.as_secs_f64(),
            last.done as f64 / r.elapsed.as_secs_f64().max(1e-9),
            mb(r.peak),
            mb(r.peak_blocks),
            mb(last.len),
            mb(last.blocks),
            mb(r.closed.0),
            mb(r.closed.1),
            kib_mb(r.rss_before_kib),
            growth(half) * 100.0,
        );
        summary.push(format!(
            "  {}: disk peak {:.1} MB, final {:.1} MB (< {:.0} MB: {}); {rss}",
            case.name(),
            mb(r.peak),
            mb(last.len),
            mb(DISK_TARGET),
            verdict(disk_ok),
        ));
    }
    println!(
        "(d) after {n} requests a case (targets: disk < {:.0} MB, RSS within {:.0}%): {}",
        mb(DISK_TARGET),
        RSS_GROWTH * 100.0,
        verdict(all_met)
    );
    for line in summary {
        println!("{line}");
    }
    Ok(())
}
