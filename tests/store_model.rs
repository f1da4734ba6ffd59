//! The store against a model, across crashes.
//!
//! - A property test drives an [`Outbox`] and an in-memory model through random
//!   append / ack / commit / crash / reopen sequences, on both backends: the memory store
//!   (a crash keeps the flushed writes and a random prefix of the rest), and sled in a
//!   child process (a crash is a SIGKILL of that process: sled flushes when it is
//!   dropped, so only a killed process shows what a crash leaves).
//! - Real kill -9 tests: a child appends as fast as it can and prints each id once it is
//!   confirmed; the test kills it mid-stream, reopens the directory and finds every
//!   printed id pending.
//! - Opening a data directory that is a file, holds garbage, or is held by another
//!   process fails with an error that names it.
//!
//! The child processes are this test binary, re-executed with [`CHILD_ROLE`] set and
//! `child_process_entry` as the filter.
//!
//! # The invariant
//! After a crash and a reopen, the pending requests `P` satisfy `must ⊆ P ⊆ may`:
//! - `must`: every request confirmed (`every`: append returned; `batched`: a commit
//!   listed it) and not acked. Losing one is a bug.
//! - `may`: every request appended and not acked-and-flushed. An ack that no flush made
//!   durable may come back: the request is sent again, and the receiver's dedup window
//!   suppresses the duplicate. An unconfirmed append may survive or not.
//!
//! After a clean close and reopen, `P` is exactly what was pending.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bosun::store::{Appended, Durability, Outbox, OutboxRecord, Store, StoreError};
use common::{deadline, Proc};
use proptest::prelude::*;
use uuid::Uuid;

/// Set in a child process to the role it plays: `serve`, `stream` or `hold`.
const CHILD_ROLE: &str = "BOSUN_STORE_CHILD";
const CHILD_DIR: &str = "BOSUN_STORE_DIR";
const CHILD_DURABILITY: &str = "BOSUN_STORE_DURABILITY";
const CHILD_LIMIT: &str = "BOSUN_STORE_LIMIT";
const CHILD_FIRST_ID: &str = "BOSUN_STORE_FIRST_ID";

/// How long any one answer of a child may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------
// Shared pieces

/// A fresh path under the system temp dir, removed (with everything in it) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "bosun-store-model-{name}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The request with id `n`: its payload is a function of `n`, so that whoever reads it
/// back can check it.
fn record(n: u128) -> OutboxRecord {
    let payload = vec![
        n.to_be_bytes()[..(n % 17) as usize].to_vec(),
        vec![b'x'; (n % 50) as usize],
    ];
    OutboxRecord::new(Uuid::from_u128(n), 1_700_000_000_000 + n as u64, payload)
}

/// The ids of the pending requests, each checked against [`record`].
fn pending_ids(outbox: &Outbox) -> Vec<u128> {
    let pending = outbox.pending().expect("pending");
    for r in &pending {
        assert_eq!(
            *r,
            record(r.id.as_u128()),
            "a pending record came back altered"
        );
    }
    pending.iter().map(|r| r.id.as_u128()).collect()
}

/// This test binary as a child playing `role` on data dir `dir`.
fn child(role: &str, dir: &Path, durability: Durability) -> std::process::Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = common::command(exe.to_str().expect("exe path is UTF-8"));
    cmd.args([
        "--exact",
        "child_process_entry",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ROLE, role)
    .env(CHILD_DIR, dir)
    .env(CHILD_DURABILITY, durability.to_string())
    .env_remove("RUST_LOG");
    cmd
}

fn numbers(lines: &[String], prefix: &str) -> BTreeSet<u128> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|n| n.parse().expect("a number"))
        .collect()
}

/// Not a test of its own: the entry point of the child processes the other tests start.
/// Without [`CHILD_ROLE`] it does nothing.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is set"));
    // The harness has printed `test child_process_entry ... ` with no newline: end that
    // line, so that every line of ours starts a line.
    println!();
    let dir = PathBuf::from(var(CHILD_DIR));
    let durability: Durability = var(CHILD_DURABILITY).parse().expect("durability");
    match role.as_str() {
        "serve" => serve(&dir, durability, var(CHILD_LIMIT).parse().expect("limit")),
        "stream" => stream(&dir, durability, var(CHILD_FIRST_ID).parse().expect("id")),
        "hold" => hold(&dir),
        other => panic!("unknown child role {other}"),
    }
    // Leave before the test harness prints its summary.
    std::process::exit(0);
}

// ---------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
enum Op {
    Append,
    /// Acks the pending request at this index (modulo their number), if any.
    Ack(usize),
    Commit,
    /// A crash; the memory store keeps this many of its unflushed writes (modulo).
    Crash(usize),
    /// A clean close and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Append),
        3 => any::<usize>().prop_map(Op::Ack),
        2 => Just(Op::Commit),
        1 => any::<usize>().prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::None),
        Just(Durability::Batched),
        Just(Durability::Every)
    ]
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ready,
    Staged,
    Full,
}

/// An outbox on some backend, as the model drives it.
trait Subject {
    fn append(&mut self, id: u128) -> Outcome;
    fn ack(&mut self, id: u128) -> bool;
    fn commit(&mut self) -> Vec<u128>;
    fn pending(&mut self) -> Vec<u128>;
    fn crash(&mut self, kept: usize);
    fn reopen(&mut self);
}

/// What the outbox must, may and does hold.
struct Model {
    durability: Durability,
    limit: usize,
    /// Pending now, as the running process sees it.
    live: BTreeSet<u128>,
    /// Appended since the last commit (`batched`).
    staged: Vec<u128>,
    /// Must survive a crash: confirmed and not acked.
    must: BTreeSet<u128>,
    /// May be found after a crash: appended, and not acked-and-flushed.
    may: BTreeSet<u128>,
    /// Something was written since the last flush.
    dirty: bool,
    next_id: u128,
}

impl Model {
    fn new(durability: Durability, limit: usize) -> Model {
        Model {
            durability,
            limit,
            live: BTreeSet::new(),
            staged: Vec::new(),
            must: BTreeSet::new(),
            may: BTreeSet::new(),
            dirty: false,
            next_id: 1,
        }
    }

    /// A flush made the live state durable.
    fn flushed(&mut self) {
        self.must = self.live.clone();
        self.may = self.live.clone();
        self.staged.clear();
        self.dirty = false;
    }

    /// The subject came back (after a crash or a close) holding `found`.
    fn restarted(&mut self, found: Vec<u128>) {
        self.live = found.into_iter().collect();
        self.flushed();
    }

    fn run(&mut self, subject: &mut dyn Subject, ops: &[Op]) -> Result<(), TestCaseError> {
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Append => {
                    let id = self.next_id;
                    self.next_id += 1;
                    let got = subject.append(id);
                    if self.live.len() >= self.limit {
                        prop_assert_eq!(got, Outcome::Full, "step {}: a full outbox", step);
                        continue;
                    }
                    self.live.insert(id);
                    self.may.insert(id);
                    self.dirty = true;
                    match self.durability {
                        Durability::None => prop_assert_eq!(got, Outcome::Ready),
                        Durability::Batched => {
                            prop_assert_eq!(got, Outcome::Staged);
                            self.staged.push(id);
                        }
                        Durability::Every => {
                            prop_assert_eq!(got, Outcome::Ready);
                            self.flushed();
                        }
                    }
                }
                Op::Ack(i) => {
                    let Some(&id) = self.live.iter().nth(i % self.live.len().max(1)) else {
                        continue;
                    };
                    prop_assert!(subject.ack(id), "step {step}: ack {id} found nothing");
                    self.live.remove(&id);
                    self.must.remove(&id);
                    self.staged.retain(|s| *s != id);
                    self.dirty = true;
                }
                Op::Commit => {
                    let got = subject.commit();
                    if self.durability == Durability::None || !self.dirty {
                        prop_assert!(got.is_empty(), "step {step}: commit {got:?}");
                    } else {
                        prop_assert_eq!(&got, &self.staged, "step {}: commit", step);
                        self.flushed();
                    }
                }
                Op::Crash(kept) => {
                    subject.crash(*kept);
                    let found = subject.pending();
                    let set: BTreeSet<u128> = found.iter().copied().collect();
                    let lost: Vec<_> = self.must.difference(&set).collect();
                    prop_assert!(lost.is_empty(), "step {step}: lost {lost:?} in a crash");
                    let foreign: Vec<_> = set.difference(&self.may).collect();
                    prop_assert!(
                        foreign.is_empty(),
                        "step {step}: {foreign:?} came back acked and flushed, or never appended"
                    );
                    self.restarted(found);
                    continue;
                }
                Op::Reopen => {
                    subject.reopen();
                    let found = subject.pending();
                    prop_assert_eq!(
                        &found.iter().copied().collect::<BTreeSet<_>>(),
                        &self.live,
                        "step {}: a clean reopen",
                        step
                    );
                    self.restarted(found);
                    continue;
                }
            }
            let found: BTreeSet<u128> = subject.pending().into_iter().collect();
            prop_assert_eq!(&found, &self.live, "step {}: pending after {:?}", step, op);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The memory backend

struct MemorySubject {
    store: Store,
    outbox: Outbox,
    limit: usize,
    durability: Durability,
}

impl MemorySubject {
    fn new(limit: usize, durability: Durability) -> Self {
        let store = Store::memory();
        let outbox = store.outbox(limit, durability).expect("outbox");
        MemorySubject {
            store,
            outbox,
            limit,
            durability,
        }
    }

    fn restart(&mut self, store: Store) {
        self.outbox = store.outbox(self.limit, self.durability).expect("outbox");
        assert_eq!(self.outbox.len(), self.outbox.pending().unwrap().len());
        self.store = store;
    }
}

fn outcome(r: Result<Appended, StoreError>) -> Outcome {
    match r {
        Ok(Appended::Ready) => Outcome::Ready,
        Ok(Appended::Staged) => Outcome::Staged,
        Err(StoreError::OutboxFull { .. }) => Outcome::Full,
        Err(e) => panic!("append: {e}"),
    }
}

impl Subject for MemorySubject {
    fn append(&mut self, id: u128) -> Outcome {
        outcome(self.outbox.append(&record(id)))
    }

    fn ack(&mut self, id: u128) -> bool {
        self.outbox.ack(Uuid::from_u128(id)).expect("ack")
    }

    fn commit(&mut self) -> Vec<u128> {
        let ids = self.outbox.commit().expect("commit");
        ids.iter().map(|u| u.as_u128()).collect()
    }

    fn pending(&mut self) -> Vec<u128> {
        let ids = pending_ids(&self.outbox);
        assert_eq!(ids.len(), self.outbox.len());
        ids
    }

    fn crash(&mut self, kept: usize) {
        let kept = kept % (self.store.unflushed_writes() + 1);
        let store = self
            .store
            .crash_and_reopen_after(kept)
            .expect("a memory store");
        self.restart(store);
    }

    fn reopen(&mut self) {
        // A clean close flushes (sled does so when dropped).
        self.store.flush().expect("flush");
        let store = self.store.crash_and_reopen().expect("a memory store");
        self.restart(store);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_outbox_matches_the_model_across_crashes(
        durability in durability(),
        limit in 1usize..10,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut subject = MemorySubject::new(limit, durability);
        Model::new(durability, limit).run(&mut subject, &ops)?;
    }
}

// ---------------------------------------------------------------------------------
// The sled backend, in a child process that can be killed

/// The child side: an outbox on `dir`, driven by one command per stdin line, one answer
/// per stdout line.
fn serve(dir: &Path, durability: Durability, limit: usize) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("open: {e}"));
    let mut outbox = store.outbox(limit, durability).expect("outbox");
    let list = |ids: Vec<u128>| {
        ids.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let (cmd, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let answer = match cmd {
            "append" => format!(
                "{:?}",
                outcome(outbox.append(&record(arg.parse().expect("id"))))
            ),
            "ack" => outbox
                .ack(Uuid::from_u128(arg.parse().expect("id")))
                .expect("ack")
                .to_string(),
            "commit" => list(
                outbox
                    .commit()
                    .expect("commit")
                    .iter()
                    .map(|u| u.as_u128())
                    .collect(),
            ),
            "pending" => {
                let ids = pending_ids(&outbox);
                assert_eq!(ids.len(), outbox.len());
                list(ids)
            }
            "close" => break,
            other => panic!("unknown command {other}"),
        };
        println!("= {answer}");
    }
    drop(outbox);
    drop(store);
    println!("closed");
}

struct SledSubject<'a> {
    dir: &'a Path,
    limit: usize,
    durability: Durability,
    child: Proc,
}

impl<'a> SledSubject<'a> {
    fn new(dir: &'a Path, limit: usize, durability: Durability) -> Self {
        let child = Self::start(dir, limit, durability);
        SledSubject {
            dir,
            limit,
            durability,
            child,
        }
    }

    fn start(dir: &Path, limit: usize, durability: Durability) -> Proc {
        let mut cmd = child("serve", dir, durability);
        cmd.env(CHILD_LIMIT, limit.to_string())
            .stdin(std::process::Stdio::piped());
        let mut proc = Proc::spawn("outbox child", &mut cmd);
        proc.expect_stdout("ready", ANSWER_WITHIN);
        proc
    }

    fn ask(&mut self, command: &str) -> String {
        self.child.write_stdin(&format!("{command}\n"));
        match self
            .child
            .stdout
            .wait_for(deadline(ANSWER_WITHIN), |l| l.starts_with("= "))
        {
            Some(line) => line.text[2..].to_string(),
            None => panic!("no answer to {command}\n{}", self.child.dump()),
        }
    }

    fn ids(answer: &str) -> Vec<u128> {
        answer
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("an id"))
            .collect()
    }
}

impl Subject for SledSubject<'_> {
    fn append(&mut self, id: u128) -> Outcome {
        match self.ask(&format!("append {id}")).as_str() {
            "Ready" => Outcome::Ready,
            "Staged" => Outcome::Staged,
            "Full" => Outcome::Full,
            other => panic!("append answered {other}"),
        }
    }

    fn ack(&mut self, id: u128) -> bool {
        self.ask(&format!("ack {id}")) == "true"
    }

    fn commit(&mut self) -> Vec<u128> {
        Self::ids(&self.ask("commit"))
    }

    fn pending(&mut self) -> Vec<u128> {
        Self::ids(&self.ask("pending"))
    }

    fn crash(&mut self, _kept: usize) {
        self.child.kill(); // SIGKILL, then reaped
        self.child = Self::start(self.dir, self.limit, self.durability);
    }

    fn reopen(&mut self) {
        self.child.write_stdin("close\n");
        self.child.expect_stdout("closed", ANSWER_WITHIN);
        let status = self.child.expect_exit(ANSWER_WITHIN);
        assert!(status.success(), "{status}\n{}", self.child.dump());
        self.child = Self::start(self.dir, self.limit, self.durability);
    }
}

proptest! {
    // Each case starts a process per crash or reopen, so fewer cases than in memory.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sled_outbox_matches_the_model_across_kills(
        durability in durability(),
        limit in 1usize..10,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let dir = TempDir::new("model");
        let mut subject = SledSubject::new(dir.path(), limit, durability);
        Model::new(durability, limit).run(&mut subject, &ops)?;
    }
}

// ---------------------------------------------------------------------------------
// kill -9 mid-stream

/// Most ids a child appends in one batch (`batched`).
const MAX_BATCH: u128 = 40;

/// The child side: appends `first..` as fast as it can, printing `confirmed N` once `N`
/// is confirmed, acking every fourth one and printing `acked N` once that returned.
/// Stops by itself after a minute, should nobody kill it.
fn stream(dir: &Path, durability: Durability, first: u128) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("open: {e}"));
    let mut outbox = store.outbox(usize::MAX, durability).expect("outbox");
    println!("ready");
    let stop = deadline(Duration::from_secs(60));
    let mut next = first;
    while common::now() < stop {
        let batch = match durability {
            Durability::Batched => 1 + next % MAX_BATCH,
            _ => 1,
        };
        let ids: Vec<u128> = (next..next + batch).collect();
        next += batch;
        for &n in &ids {
            let appended = outbox.append(&record(n)).expect("append");
            if durability == Durability::Every {
                assert_eq!(appended, Appended::Ready);
            }
        }
        if durability == Durability::Batched {
            let confirmed = outbox.commit().expect("commit");
            assert_eq!(confirmed.len(), ids.len());
        }
        for &n in &ids {
            println!("confirmed {n}");
            if n % 4 == 0 {
                outbox.ack(Uuid::from_u128(n)).expect("ack");
                println!("acked {n}");
            }
        }
    }
}

/// Kills a streaming child three times on the same directory, at different points, and
/// checks after each kill that every confirmed, unacked id is pending.
fn kill_mid_stream(durability: Durability) {
    let dir = TempDir::new(&format!("kill-{durability}"));
    let mut must = BTreeSet::new();
    let (mut confirmed_total, mut acked_total, mut back_total) = (0, 0, 0);
    for (round, kill_after) in [(1u128, 120usize), (2, 700), (3, 40)] {
        let first = round * 1_000_000;
        let mut cmd = child("stream", dir.path(), durability);
        cmd.env(CHILD_FIRST_ID, first.to_string());
        let mut proc = Proc::spawn("streaming child", &mut cmd);
        proc.expect_stdout("ready", ANSWER_WITHIN);
        let seen = proc
            .stdout
            .wait_count(deadline(Duration::from_secs(60)), kill_after, |l| {
                l.starts_with("confirmed ")
            });
        assert!(seen >= kill_after, "only {seen} confirmed\n{}", proc.dump());
        proc.kill(); // SIGKILL mid-stream
        assert!(proc.drain(ANSWER_WITHIN), "the pipes close after a kill");
        let lines = proc.stdout.texts();
        let confirmed = numbers(&lines, "confirmed ");
        let acked = numbers(&lines, "acked ");
        must.extend(confirmed.difference(&acked));
        let max_confirmed = confirmed.iter().max().copied().unwrap_or(first);

        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("reopen: {e}"));
        let outbox = store.outbox(usize::MAX, durability).expect("outbox");
        let pending: BTreeSet<u128> = pending_ids(&outbox).into_iter().collect();
        let lost: Vec<_> = must.difference(&pending).collect();
        assert!(
            lost.is_empty(),
            "{durability} round {round}: {} confirmed ids lost, first {:?}",
            lost.len(),
            lost.iter().take(5).collect::<Vec<_>>()
        );
        // Anything else pending is an acked one come back, or one in flight at the kill.
        for id in pending.iter().filter(|id| **id >= first) {
            assert!(
                confirmed.contains(id) || (*id > max_confirmed && *id <= max_confirmed + MAX_BATCH),
                "{durability} round {round}: {id} was pending but never appended"
            );
        }
        let back = pending.intersection(&acked).count();
        confirmed_total += confirmed.len();
        acked_total += acked.len();
        back_total += back;
        must = pending.difference(&acked).copied().collect();
    }
    eprintln!(
        "kill -9 {durability}: 3 kills, {confirmed_total} confirmed, {acked_total} acked, \
         0 lost, {back_total} acked ids back after a kill (re-sent, then deduplicated)"
    );
}

#[test]
fn kill_9_loses_no_request_confirmed_by_every() {
    kill_mid_stream(Durability::Every);
}

#[test]
fn kill_9_loses_no_request_confirmed_by_a_batched_commit() {
    kill_mid_stream(Durability::Batched);
}

// ---------------------------------------------------------------------------------
// Opening errors

/// The child side: holds the store open until stdin closes.
fn hold(dir: &Path) {
    let store = Store::open(dir).unwrap_or_else(|e| panic!("open: {e}"));
    println!("holding");
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    drop(store);
}

#[test]
fn a_data_dir_held_by_another_process_is_refused_by_name() {
    let dir = TempDir::new("held");
    Store::open(dir.path()).expect("create");
    let mut cmd = child("hold", dir.path(), Durability::default());
    cmd.stdin(std::process::Stdio::piped());
    let mut holder = Proc::spawn("holding child", &mut cmd);
    holder.expect_stdout("holding", ANSWER_WITHIN);

    let err = Store::open(dir.path()).expect_err("the directory is held");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::InUse { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "data dir {} is in use by another process (its bosun.lock is locked)",
            dir.path().display()
        )
    );

    holder.close_stdin();
    assert!(
        holder.expect_exit(ANSWER_WITHIN).success(),
        "{}",
        holder.dump()
    );
    Store::open(dir.path()).expect("free once the holder is gone");
}

#[test]
fn opening_a_file_or_garbage_fails_naming_the_path() {
    let file = TempDir::new("file");
    std::fs::write(file.path(), b"not a directory").unwrap();
    let err = Store::open(file.path()).expect_err("a file");
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("data dir {}: not a directory", file.path().display())
    );

    let dir = TempDir::new("garbage");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("conf"), common::junk(62, 1)).unwrap();
    std::fs::write(dir.path().join("db"), common::junk(4096, 2)).unwrap();
    // bosun's marker, as a store whose files were damaged since would have it.
    std::fs::write(dir.path().join("bosun.state"), b"bosun-state 1\nopen\n").unwrap();
    let err = Store::open(dir.path()).expect_err("garbage");
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    eprintln!("garbage: {err}");

    let dir = TempDir::new("other");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = Store::open(dir.path()).expect_err("other files");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert!(!dir.path().join("db").exists(), "left alone");
    eprintln!("other files: {err}");
}

/// Copies a (closed) store directory: its files and its empty `blobs` directory.
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(target).unwrap();
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// [`record`] with 1000 more bytes, so that a few thousand fill several sled segments.
fn big_record(n: u128) -> OutboxRecord {
    let mut r = record(n);
    r.payload.push(vec![7; 1000]);
    r
}

/// A store several sled segments long, cut short or zeroed at places: each copy either
/// fails to open with an error naming it (sled errors, panics, reads it as an empty
/// database, which has no format version, or as one with fewer entries than its last
/// clean close recorded), or opens with every request intact. It never opens with
/// requests missing, nor panics out of `Store::open`. Two layouts: a flush every 100
/// appends, and one flush at the end (with which sled, unchecked, opens a copy cut at
/// nine tenths with a tenth of the requests silently gone).
#[test]
fn truncated_or_zeroed_stores_are_refused_never_reset() {
    const N: u128 = 3_000;
    for flush_every in [100, N] {
        let good = TempDir::new("good");
        {
            let store = Store::open(good.path()).unwrap();
            let mut outbox = store.outbox(N as usize, Durability::Batched).unwrap();
            for n in 1..=N {
                let _ = outbox.append(&big_record(n)).unwrap();
                if n % flush_every == 0 {
                    outbox.commit().unwrap();
                }
            }
        }
        let db_len = std::fs::metadata(good.path().join("db")).unwrap().len();
        let (mut refused, mut intact) = (0, 0);
        for tenth in 1..10u64 {
            for how in ["truncated", "zeroed"] {
                let dir = TempDir::new(&format!("{how}-{tenth}"));
                copy_store(good.path(), dir.path());
                let db = dir.path().join("db");
                let at = db_len * tenth / 10;
                if how == "truncated" {
                    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
                    f.set_len(at).unwrap();
                } else {
                    let mut bytes = std::fs::read(&db).unwrap();
                    bytes[at as usize..at as usize + 4096].fill(0);
                    std::fs::write(&db, bytes).unwrap();
                }
                match Store::open(dir.path()) {
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
                        refused += 1;
                    }
                    Ok(store) => {
                        let outbox = store.outbox(N as usize, Durability::Batched).unwrap();
                        let pending = outbox.pending().expect("pending");
                        let whole = (1..=N).map(big_record).collect::<Vec<_>>();
                        assert!(
                            pending == whole,
                            "{how} at {tenth}/10, flush every {flush_every}: opened with {} \
                             of {N} requests, or altered",
                            pending.len()
                        );
                        intact += 1;
                    }
                }
            }
        }
        eprintln!(
            "flush every {flush_every}: damaged copies of a {db_len}-byte db: \
             {refused} refused, {intact} opened intact"
        );
        assert!(refused > 0);
    }
}

/// Every file of `dir` (recursively) with its bytes, to tell whether anything changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.insert(entry.path(), b"<dir>".to_vec());
            out.extend(snapshot(&entry.path()));
        } else {
            out.insert(entry.path(), std::fs::read(entry.path()).unwrap());
        }
    }
    out
}

/// A directory that holds files but not bosun's marker is refused before anything is
/// written in it: not sled's files, not `blobs/`, not even `bosun.lock`. A sled
/// database bosun did not make is someone else's too.
#[test]
fn a_refused_data_dir_is_left_exactly_as_it_was() {
    let dir = TempDir::new("foreign");
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(dir.path().join("conf"), b"x").unwrap();
    std::fs::write(dir.path().join("db"), b"important\n").unwrap();
    let before = snapshot(dir.path());
    for open in [Store::open, Store::open_existing] {
        let err = open(dir.path()).expect_err("not a bosun store");
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert!(err.to_string().contains("bosun.state"), "{err}");
        assert_eq!(snapshot(dir.path()), before, "{err}");
    }

    let other = TempDir::new("other-sled");
    drop(sled::open(other.path()).unwrap());
    let before = snapshot(other.path());
    let err = Store::open(other.path()).expect_err("someone else's sled database");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert_eq!(snapshot(other.path()), before);
}

/// `open_existing` never makes a store: a missing or empty directory is refused and left
/// as it was; a store made by `open` opens.
#[test]
fn open_existing_never_creates_a_store() {
    let dir = TempDir::new("existing");
    let err = Store::open_existing(dir.path()).expect_err("missing");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(!dir.path().exists());
    std::fs::create_dir_all(dir.path()).unwrap();
    let err = Store::open_existing(dir.path()).expect_err("empty");
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("empty"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    drop(Store::open(dir.path()).expect("create"));
    assert!(dir.path().join("bosun.state").is_file());
    // Another test of this binary may be starting a child process right now: between
    // its fork and its exec the child shares our lock's file description, so the lock
    // can stay taken for that moment after the drop above. Wait it out, bounded.
    let until = deadline(std::time::Duration::from_secs(10));
    loop {
        match Store::open_existing(dir.path()) {
            Ok(store) => break drop(store),
            Err(StoreError::InUse { .. }) if common::now() < until => std::thread::yield_now(),
            Err(e) => panic!("a store: {e:?}"),
        }
    }
}

/// Makes a file immutable (chattr +i, which binds root too) until dropped.
struct Immutable(PathBuf);

impl Immutable {
    fn new(path: &Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A database file the process may not write is an I/O error, not a damaged store.
#[test]
fn an_unwritable_database_is_an_io_error_not_damage() {
    let dir = TempDir::new("unwritable");
    drop(Store::open(dir.path()).unwrap());
    let db = dir.path().join("db");
    let mut perms = std::fs::metadata(&db).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&db, perms.clone()).unwrap();
    // As root, permissions do not bind: make the file immutable instead.
    let _guard = if std::fs::OpenOptions::new().write(true).open(&db).is_ok() {
        match Immutable::new(&db) {
            Some(guard) => Some(guard),
            None => {
                eprintln!("skipped: the db file stays writable (root without chattr)");
                return;
            }
        }
    } else {
        None
    };
    let err = Store::open(dir.path()).expect_err("unwritable");
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    drop(_guard);
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&db, perms).unwrap();
    drop(Store::open(dir.path()).expect("writable again"));
}
