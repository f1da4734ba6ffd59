//! What must survive a crash: one database per peer, with a tree per concern.
//!
//! | tree | key | value | type |
//! | --- | --- | --- | --- |
//! | `outbox` | message id (16 bytes) | a client's pending request | [`Outbox`] |
//! | `dedup` | message id | an id a receiver handed to its application, and its reply | [`DedupLog`] |
//! | `dead_letters` | message id | a request given up on | [`DeadLetters`] |
//! | `cursors` | stream name (a subscriber's: the publisher id, 16 bytes) | the last sequence number read from it (big-endian u64) | [`Store::cursor`] |
//! | `published` | sequence (big-endian u64) | a message a publisher retains for replay | [`published::PublishedLog`] |
//! | `publisher` | `id`, `trimmed` | the publisher's id (16 bytes); the highest sequence trimmed (u64) | [`published::open`] |
//! | `meta` | `format`, `closes` | the format version ([`FORMAT_VERSION`], big-endian u32); clean closes so far (u64) | |
//!
//! Ids are UUID v7 and keys are their 16 bytes, so iteration is in creation order.
//! Values have small length-prefixed binary layouts with a version byte, documented on
//! each record type; a value that does not decode is a [`StoreError::Corrupt`] naming
//! the tree and the key, never a panic.
//!
//! A [`Store`] is opened on a data directory over sled ([`Store::open`]), or made in
//! memory ([`Store::memory`]) for simulations and tests. Both have the same interface;
//! the memory store also models a crash: writes since its last flush are lost, unless a
//! test keeps some of them ([`Store::crash_and_reopen_after`]).
//!
//! # Durability
//! Nothing written is durable until a flush; one flush makes every tree's earlier
//! writes durable (sled has one log for all trees). A crash keeps the flushed writes
//! and possibly some later ones, in the order they were made. Each user of the store
//! takes a [`Durability`] that says when it flushes.
//!
//! # Opening, and what is refused
//! [`Store::open`] never resets anything silently. What it does is decided from the
//! directory's contents before anything is written in it: a directory that is missing or
//! empty gets a new store (bosun writes its marker, `bosun.state`, first, then sled makes
//! its files); a directory that holds files must hold that marker. One that holds files
//! but no marker (another program's files, a sled database bosun did not make) is refused
//! as not a bosun store, and nothing in it is touched: not even `bosun.lock` is created.
//! [`Store::open_existing`] (what `bosun dlq` uses) never creates a store: it refuses a
//! missing or empty directory too.
//!
//! A marked directory is then opened, and refused, with an error that names the path,
//! when: it holds no sled database (files `conf` and `db`); sled cannot read the database
//! (garbage, truncated: sled's errors and panics are both caught); the database has no
//! bosun format version, or one this code does not know; the store lost entries since it
//! was last closed cleanly (sled opens some truncated files with entries silently
//! missing: see `bosun.state` below); another process (or another [`Store`] in this one)
//! has the directory open, detected by a lock on `bosun.lock` inside it. A database file
//! the process may not read or write (EACCES, EPERM, EROFS, as sled reports it) is a
//! [`StoreError::Io`], not damage.
//!
//! A real store refused as damaged is not guaranteed untouched: by the time bosun can
//! tell (only after sled has read it), sled's recovery may have rewritten parts of its
//! files (extended or zeroed the tail of `db`, rewritten `conf`), and bosun has taken
//! `bosun.lock`. bosun itself resets nothing and does not write `bosun.state` then;
//! keep a copy of a damaged store before opening it again if its bytes matter.
//!
//! Beside sled's files, a data directory holds `bosun.lock` and `bosun.state`: the
//! number of clean closes and each tree's entry count at the last one, or `open` while
//! the store is open (or was when its process died). After a crash sled's recovery is
//! trusted, as it must be: damage that follows a crash cannot be told from it.

mod codec;
pub mod dead_letter;
pub mod dedup;
pub mod outbox;
pub mod output;
pub mod published;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;

pub use dead_letter::{DeadLetter, DeadLetters, DeadReason};
pub use dedup::{DedupLog, Recovered};
pub use outbox::{Appended, Outbox, OutboxRecord};
pub use output::OutputRecord;

/// The store format this code writes and reads, recorded in the `meta` tree.
pub const FORMAT_VERSION: u32 = 1;

/// The file inside a data directory whose lock says that a process has it open.
pub const LOCK_FILE: &str = "bosun.lock";

/// How much memory sled may use for its page cache. sled's own default is 1 GiB; a
/// peer's store holds at most an outbox, a dedup window and dead letters, each bounded
/// well below this, so 64 MiB keeps the hot set cached without letting RSS grow to a
/// gigabyte.
const SLED_CACHE_BYTES: u64 = 64 << 20;

const META_TREE: &str = "meta";
const FORMAT_KEY: &[u8] = b"format";
/// How many times the store was closed cleanly (big-endian u64), see `state`.
const CLOSES_KEY: &[u8] = b"closes";
const CURSORS_TREE: &str = "cursors";
/// The trees whose entry counts a clean close records.
const COUNTED: [&str; 7] = [
    outbox::TREE,
    output::TREE,
    dedup::TREE,
    dead_letter::TREE,
    CURSORS_TREE,
    published::TREE,
    published::META_TREE,
];

/// A stored value that could not be decoded: why, in words.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{reason}")]
pub struct DecodeError {
    /// What is wrong with the bytes.
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        DecodeError {
            reason: reason.into(),
        }
    }
}

/// The store layer's errors. Opening errors name the data directory.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory path exists and is not a directory.
    #[error("data dir {}: not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Another process (or another [`Store`] in this process) has the directory open.
    #[error("data dir {} is in use by another process (its {LOCK_FILE} is locked)", path.display())]
    InUse {
        /// The data directory.
        path: PathBuf,
    },
    /// The directory holds something that is not a bosun store; it was left alone.
    #[error("data dir {}: not a bosun store: {reason}", path.display())]
    NotAStore {
        /// The data directory.
        path: PathBuf,
        /// What was found, in words.
        reason: String,
    },
    /// sled could not read the database (an error or a panic while opening it). bosun
    /// reset nothing.
    #[error("data dir {}: the store cannot be read, so it was not opened (nothing was reset): {reason}", path.display())]
    Damaged {
        /// The data directory.
        path: PathBuf,
        /// sled's error or panic message.
        reason: String,
    },
    /// The store was written in a format this code does not know.
    #[error("data dir {}: store format version {found}; this bosun reads version {FORMAT_VERSION}", path.display())]
    UnsupportedVersion {
        /// The data directory.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// An operating-system call on the data directory failed.
    #[error("data dir {}: {op}: {source}", path.display())]
    Io {
        /// The data directory.
        path: PathBuf,
        /// What was being done ("create", "lock", "list").
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// sled failed to read or write a tree of an open store.
    #[error("store {store}: {op} {tree}: {source}")]
    Backend {
        /// The store: its data directory, or `memory`.
        store: String,
        /// The tree.
        tree: &'static str,
        /// What was being done ("insert into", "flush", ...).
        op: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A stored value does not decode.
    #[error("store {store}: tree {tree}: key {key}: {source}")]
    Corrupt {
        /// The store: its data directory, or `memory`.
        store: String,
        /// The tree.
        tree: &'static str,
        /// The key, in hex.
        key: String,
        /// What is wrong.
        #[source]
        source: DecodeError,
    },
    /// The outbox holds its limit of pending requests; the request was not stored (the
    /// caller still has it). Backpressure: wait for replies, then retry.
    #[error("outbox full: {limit} requests pending")]
    OutboxFull {
        /// The outbox's limit.
        limit: usize,
    },
    /// The store holds another kind of peer's state than the one opening it (a
    /// subscriber's cursors in a publisher's data dir, say); nothing was written.
    #[error("store {store} holds {found}; a {peer} cannot share it: give each peer a --data-dir of its own")]
    OtherPeer {
        /// The store: its data directory, or `memory`.
        store: String,
        /// The peer opening it.
        peer: &'static str,
        /// What it holds, in words.
        found: &'static str,
    },
}

/// When a writer of the store flushes to disk.
///
/// Parsed from and shown as `none`, `batched`, `every` (the `--durability` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Never flush explicitly; sled flushes in the background (every 500 ms) and on a
    /// clean close. A crash may lose recent writes. The fastest.
    None,
    /// Group commit: writes are staged and one flush ([`Outbox::commit`]) confirms all
    /// staged ones. A request may be sent only once a commit has confirmed it. The
    /// default: near the speed of `none` under load, with the guarantee of `every`.
    #[default]
    Batched,
    /// Flush inside every write, before it returns.
    Every,
}

impl Durability {
    /// The flag value: `none`, `batched` or `every`.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Batched => "batched",
            Durability::Every => "every",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Durability::None),
            "batched" => Ok(Durability::Batched),
            "every" => Ok(Durability::Every),
            other => Err(format!(
                "unknown durability {other:?}: expected none, batched or every"
            )),
        }
    }
}

/// One database per peer. Cheap to clone: clones share the database, and the data
/// directory stays locked until the last clone and every handle made from it (outbox,
/// dedup log, dead letters) are dropped; sled then flushes what was written, and the
/// clean close is recorded (see the module docs).
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("at", &self.shared.name)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// `memory`, or the data directory as shown in errors.
    name: String,
    path: Option<PathBuf>,
    backend: Backend,
    /// Clean closes so far (sled stores), read when opened.
    closes: AtomicU64,
    /// Set once opening succeeded: only then does dropping record a clean close.
    opened: AtomicBool,
    /// Held for the store's lifetime; declared after `backend` so that sled closes (and
    /// flushes) before the directory is unlocked.
    _lock: Option<File>,
}

impl Drop for Shared {
    /// The last handle is gone: record a clean close (see `state`). On failure the state
    /// file keeps saying `open`, and the next start trusts sled as after a crash.
    fn drop(&mut self) {
        if let (Backend::Sled(db), Some(path)) = (&self.backend, &self.path) {
            if self.opened.load(Ordering::Relaxed) {
                let closes = self.closes.load(Ordering::Relaxed) + 1;
                let _ = close_cleanly(db, path, closes);
            }
        }
    }
}

fn close_cleanly(
    db: &sled::Db,
    path: &Path,
    closes: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    db.open_tree(META_TREE)?
        .insert(CLOSES_KEY, &closes.to_be_bytes())?;
    let mut counts = Vec::new();
    for tree in COUNTED {
        counts.push((tree.to_string(), db.open_tree(tree)?.len()));
    }
    db.flush()?;
    state::write(path, &state::DirState::Closed { closes, counts })?;
    Ok(())
}

enum Backend {
    Sled(sled::Db),
    Memory(Arc<Mutex<MemDb>>),
}

impl Store {
    /// Opens the store in data directory `path`, creating the directory and a new store
    /// when it does not exist or is empty. See the module docs for what is refused.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, true)
    }

    /// Opens the store in data directory `path`, which must hold one: a missing or empty
    /// directory is refused as [`StoreError::NotAStore`], and nothing is created (for
    /// tools that read a peer's store, such as `bosun dlq`). Otherwise as [`Store::open`].
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Store, StoreError> {
        let io = |op: &'static str| {
            move |source: std::io::Error| StoreError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let not_a_store = |reason: String| StoreError::NotAStore {
            path: path.to_path_buf(),
            reason,
        };
        match fs::metadata(path) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::NotADirectory {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                fs::create_dir_all(path).map_err(io("create"))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_a_store("it does not exist".into()))
            }
            Err(e) => return Err(io("inspect")(e)),
        }
        // Decided from the directory's contents before anything is written in it (not
        // even the lock file): files without bosun's marker are someone else's.
        let survey = Survey::of(path).map_err(io("list"))?;
        if let Some(reason) = survey.refusal(create) {
            return Err(not_a_store(reason));
        }
        let lock = lock_dir(path)?;
        // Under the lock, look again: another process may have made a store meanwhile.
        let survey = Survey::of(path).map_err(io("list"))?;
        if let Some(reason) = survey.refusal(create) {
            return Err(not_a_store(reason));
        }
        let fresh = survey.others.is_empty();
        if fresh {
            // The marker first, so that an interrupted creation is still recognised.
            state::write(path, &state::DirState::Open).map_err(io("write bosun.state"))?;
        }
        let has_sled = path.join("conf").is_file() && path.join("db").is_file();
        if !fresh && !has_sled {
            let mut others = survey.others;
            others.sort();
            others.truncate(5);
            return Err(not_a_store(format!(
                "it holds files ({}) but no sled database (files `conf` and `db`)",
                others.join(", ")
            )));
        }
        let recorded = if fresh { None } else { state::read(path) };
        let db = open_sled(path)?;
        let shared = Shared {
            name: path.display().to_string(),
            path: Some(path.to_path_buf()),
            backend: Backend::Sled(db),
            closes: AtomicU64::new(0),
            opened: AtomicBool::new(false),
            _lock: Some(lock),
        };
        let store = Store {
            shared: Arc::new(shared),
        };
        store.check_format(
            fresh,
            matches!(recorded, Some(state::DirState::Closed { .. })),
        )?;
        store.check_clean_close(recorded)?;
        state::write(path, &state::DirState::Open).map_err(io("write bosun.state"))?;
        store.shared.opened.store(true, Ordering::Relaxed);
        Ok(store)
    }

    /// A store in memory, with the interface of a sled one, for simulations and tests.
    /// Its flushed writes survive [`Store::crash_and_reopen`]; nothing survives the
    /// process.
    pub fn memory() -> Store {
        let store = Store::from_mem(MemDb::default());
        // The memory store records its format like a sled one, so a test can corrupt it.
        store
            .check_format(true, false)
            .expect("a memory store cannot fail to write"); // memory writes never fail
        store
    }

    fn from_mem(db: MemDb) -> Store {
        Store {
            shared: Arc::new(Shared {
                name: "memory".into(),
                path: None,
                backend: Backend::Memory(Arc::new(Mutex::new(db))),
                closes: AtomicU64::new(0),
                opened: AtomicBool::new(true),
                _lock: None,
            }),
        }
    }

    /// The data directory, or `None` for a memory store.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// Makes every write so far durable, in every tree.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree(META_TREE)?.flush()
    }

    /// The last sequence number recorded for `stream` (a subscriber's cursor into one
    /// publisher), if any.
    pub fn cursor(&self, stream: &[u8]) -> Result<Option<u64>, StoreError> {
        let tree = self.tree(CURSORS_TREE)?;
        let Some(value) = tree.get(stream)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value.as_slice().try_into().map_err(|_| {
            tree.corrupt(
                stream,
                DecodeError::new(format!("cursor of {} bytes, expected 8", value.len())),
            )
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Every cursor recorded: stream name and last sequence number (a subscriber
    /// loads them all when it starts).
    pub fn cursors(&self) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        let tree = self.tree(CURSORS_TREE)?;
        let mut out = Vec::new();
        tree.for_each(|k, v| {
            let bytes: [u8; 8] = v.try_into().map_err(|_| {
                tree.corrupt(
                    k,
                    DecodeError::new(format!("cursor of {} bytes, expected 8", v.len())),
                )
            })?;
            out.push((k.to_vec(), u64::from_be_bytes(bytes)));
            Ok(())
        })?;
        Ok(out)
    }

    /// Records `seq` as the last sequence number read from `stream`. Not flushed: a
    /// crash may take the cursor back, and the subscriber then sees messages again
    /// (which its dedup suppresses).
    pub fn set_cursor(&self, stream: &[u8], seq: u64) -> Result<(), StoreError> {
        self.tree(CURSORS_TREE)?
            .insert(stream, seq.to_be_bytes().to_vec())
            .map(drop)
    }

    /// The memory store as a crash would leave it: a new store holding only what was
    /// flushed. The old store and its handles live on, unaffected, like a process that
    /// no longer matters. `None` for a sled store: crash the process instead.
    pub fn crash_and_reopen(&self) -> Option<Store> {
        self.crash_and_reopen_after(0)
    }

    /// Like [`Store::crash_and_reopen`], but the crash also keeps the first `kept`
    /// writes made since the last flush (sled writes its log in order, and a crash may
    /// come after some of it reached the disk).
    pub fn crash_and_reopen_after(&self, kept: usize) -> Option<Store> {
        let Backend::Memory(db) = &self.shared.backend else {
            return None;
        };
        let db = lock(db);
        let mut durable = db.durable.clone();
        for (tree, key, value) in db.journal.iter().take(kept) {
            apply(&mut durable, tree, key, value.clone());
        }
        Some(Store::from_mem(MemDb {
            live: durable.clone(),
            durable,
            journal: Vec::new(),
        }))
    }

    /// How many writes a memory store holds that a crash would lose (0 for sled).
    pub fn unflushed_writes(&self) -> usize {
        match &self.shared.backend {
            Backend::Memory(db) => lock(db).journal.len(),
            Backend::Sled(_) => 0,
        }
    }

    /// The outbox of a client: see [`Outbox`]. Make one per store: it counts its
    /// requests in memory, so two would each think the other's appends absent.
    pub fn outbox(&self, limit: usize, durability: Durability) -> Result<Outbox, StoreError> {
        Outbox::open(self.tree(outbox::TREE)?, limit, durability)
    }

    /// The dedup log of a receiver: see [`DedupLog`].
    pub fn dedup_log(&self, durability: Durability) -> Result<DedupLog, StoreError> {
        Ok(DedupLog::new(self.tree(dedup::TREE)?, durability))
    }

    /// The dead letters of a peer: see [`DeadLetters`].
    pub fn dead_letters(&self) -> Result<DeadLetters, StoreError> {
        Ok(DeadLetters::new(self.tree(dead_letter::TREE)?))
    }

    /// Refuses the store when it holds the state of another kind of peer than `peer`,
    /// whose own trees are `mine`: a publisher's id and messages, a subscriber's
    /// cursors, a client's outbox, a worker's or server's dedup records.
    pub(crate) fn refuse_other_peers(
        &self,
        peer: &'static str,
        mine: &[&'static str],
    ) -> Result<(), StoreError> {
        let kinds: [(&'static str, &'static str); 5] = [
            (published::META_TREE, "a publisher's id and messages"),
            (CURSORS_TREE, "a subscriber's cursors"),
            (output::TREE, "a subscriber's output file position"),
            (outbox::TREE, "a client's outbox"),
            (
                dedup::TREE,
                "a worker's or server's records of requests handled",
            ),
        ];
        for (tree, found) in kinds {
            if mine.contains(&tree) {
                continue;
            }
            if !self.tree(tree)?.scan(&[], 1)?.is_empty() {
                return Err(StoreError::OtherPeer {
                    store: self.shared.name.clone(),
                    peer,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Refuses the store for a durable subscriber when another kind of peer's state
    /// is in it ([`StoreError::OtherPeer`]).
    pub(crate) fn claim_for_subscriber(&self) -> Result<(), StoreError> {
        self.refuse_other_peers("subscriber", &[CURSORS_TREE, output::TREE])
    }

    pub(crate) fn tree(&self, name: &'static str) -> Result<Tree, StoreError> {
        let kind = match &self.shared.backend {
            Backend::Sled(db) => {
                TreeKind::Sled(db.open_tree(name).map_err(|source| StoreError::Backend {
                    store: self.shared.name.clone(),
                    tree: name,
                    op: "open",
                    source,
                })?)
            }
            Backend::Memory(db) => TreeKind::Memory(Arc::clone(db)),
        };
        Ok(Tree {
            name,
            kind,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Writes the format version into a fresh store, or checks the one found.
    /// `was_closed`: the state file says the store was closed cleanly, so a database with
    /// no version at all is a damaged one.
    fn check_format(&self, fresh: bool, was_closed: bool) -> Result<(), StoreError> {
        let meta = self.tree(META_TREE)?;
        let path = || self.shared.path.clone().unwrap_or_default();
        match meta.get(FORMAT_KEY)? {
            None if fresh => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION.to_be_bytes().to_vec())?;
                meta.flush()
            }
            None if was_closed => Err(StoreError::Damaged {
                path: path(),
                reason: format!(
                    "it has no bosun format version, but it was closed cleanly as a bosun \
                     store (see its {}): the database file is truncated or damaged (sled \
                     reads some damaged files as an empty database)",
                    state::STATE_FILE
                ),
            }),
            None => Err(StoreError::NotAStore {
                path: path(),
                reason: "it holds a sled database with no bosun format version: another \
                         program's database, one whose creation was interrupted, or a \
                         damaged one (sled reads some damaged files as an empty \
                         database); move it away to start afresh"
                    .into(),
            }),
            Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
                Ok(b) if u32::from_be_bytes(b) == FORMAT_VERSION => Ok(()),
                Ok(b) => Err(StoreError::UnsupportedVersion {
                    path: path(),
                    found: u32::from_be_bytes(b),
                }),
                Err(_) => Err(StoreError::Damaged {
                    path: path(),
                    reason: format!("format version of {} bytes, expected 4", v.len()),
                }),
            },
        }
    }

    /// Compares the database with what its last clean close recorded (see `state`), and
    /// reads the number of clean closes so far.
    fn check_clean_close(&self, recorded: Option<state::DirState>) -> Result<(), StoreError> {
        let meta = self.tree(META_TREE)?;
        let damaged = |reason: String| StoreError::Damaged {
            path: self.shared.path.clone().unwrap_or_default(),
            reason,
        };
        let closes =
            match meta.get(CLOSES_KEY)? {
                None => 0,
                Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                    damaged(format!("close count of {} bytes, expected 8", v.len()))
                })?),
            };
        self.shared.closes.store(closes, Ordering::Relaxed);
        let Some(state::DirState::Closed {
            closes: expected,
            counts,
        }) = recorded
        else {
            return Ok(()); // open at a crash, or nothing recorded: trust sled's recovery
        };
        let lost = "since then: the database file is truncated or damaged (not opened with \
                    entries missing)";
        if closes != expected {
            return Err(damaged(format!(
                "it records {closes} clean closes, {} says {expected}, so it lost writes \
                 {lost}",
                state::STATE_FILE
            )));
        }
        for (tree, count) in counts {
            let Some(&tree) = COUNTED.iter().find(|t| **t == tree) else {
                continue; // a tree this version does not know
            };
            let found = self.tree(tree)?.len();
            if found != count {
                return Err(damaged(format!(
                    "tree {tree} holds {found} entries, {count} at its last clean close; \
                     it lost entries {lost}"
                )));
            }
        }
        Ok(())
    }
}

/// What a data directory holds, looked at before anything is written in it.
struct Survey {
    /// Names other than bosun's own files (lock, state, its temporary file).
    others: Vec<String>,
    /// Whether bosun's marker, [`state::STATE_FILE`], is there: written when a store is
    /// created, before sled makes its files.
    marked: bool,
}

impl Survey {
    fn of(path: &Path) -> std::io::Result<Survey> {
        let mut others = Vec::new();
        let mut marked = false;
        for entry in fs::read_dir(path)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name == state::STATE_FILE {
                marked = true;
            } else if name != LOCK_FILE && !state::is_ours(&name) {
                others.push(name.into_owned());
            }
        }
        Ok(Survey { others, marked })
    }

    /// Why the directory is not opened as a store, if it is not: it holds files but no
    /// marker (someone else's), or, when a store may not be `create`d, it holds none.
    fn refusal(&self, create: bool) -> Option<String> {
        if !self.marked && !self.others.is_empty() {
            let mut others = self.others.clone();
            others.sort();
            others.truncate(5);
            return Some(format!(
                "it holds files ({}) but no {}, the file bosun writes in a store it \
                 creates; nothing in it was touched",
                others.join(", "),
                state::STATE_FILE
            ));
        }
        if !create && self.others.is_empty() {
            return Some("it holds no store (it is empty), and none was created".into());
        }
        None
    }
}

/// Takes the directory's lock file, or says who has it.
fn lock_dir(path: &Path) -> Result<File, StoreError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.join(LOCK_FILE))
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            op: "open lock file",
            source,
        })?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own; it has no memory effects. The lock is
        // released when the file is closed, that is when the store is dropped.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(StoreError::InUse {
                    path: path.to_path_buf(),
                });
            }
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                op: "lock",
                source: err,
            });
        }
    }
    Ok(file)
}

/// Opens sled, turning its errors and its panics into [`StoreError`]s.
fn open_sled(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(SLED_CACHE_BYTES);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    let damaged = |reason: String| StoreError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        // sled's own lock on its `db` file: held by a program that is not bosun, since
        // bosun takes the lock file first.
        Ok(Err(e)) if e.to_string().contains("could not acquire lock") => Err(StoreError::InUse {
            path: path.to_path_buf(),
        }),
        // Not allowed to read or write its files: an I/O error, not damage.
        Ok(Err(sled::Error::Io(e))) if is_permission(&e) => Err(StoreError::Io {
            path: path.to_path_buf(),
            op: "open the sled database",
            source: e,
        }),
        Ok(Err(e)) => Err(damaged(format!("sled: {e}"))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Err(damaged(format!("sled panicked: {msg}")))
        }
    }
}

/// Whether `e` says the process may not do what it tried (EACCES, EPERM, EROFS).
fn is_permission(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied
        || matches!(
            e.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EROFS)
        )
}

/// One named tree of a store: the few operations the stores need, over sled or memory.
pub(crate) struct Tree {
    name: &'static str,
    kind: TreeKind,
    shared: Arc<Shared>,
}

enum TreeKind {
    Sled(sled::Tree),
    Memory(Arc<Mutex<MemDb>>),
}

impl Tree {
    fn backend(&self, op: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Backend {
            store: self.shared.name.clone(),
            tree: self.name,
            op,
            source,
        }
    }

    /// A [`StoreError::Corrupt`] for the value at `key` of this tree.
    pub(crate) fn corrupt(&self, key: &[u8], source: DecodeError) -> StoreError {
        StoreError::Corrupt {
            store: self.shared.name.clone(),
            tree: self.name,
            key: hex(key),
            source,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => Ok(t
                .get(key)
                .map_err(self.backend("read from"))?
                .map(|v| v.to_vec())),
            TreeKind::Memory(db) => Ok(lock(db)
                .live
                .get(self.name)
                .and_then(|t| t.get(key))
                .cloned()),
        }
    }

    /// Writes `value` at `key`; whether a value was there before.
    pub(crate) fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<bool, StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => Ok(t
                .insert(key, value)
                .map_err(self.backend("insert into"))?
                .is_some()),
            TreeKind::Memory(db) => Ok(lock(db).write(self.name, key, Some(value))),
        }
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn remove(&self, key: &[u8]) -> Result<bool, StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => Ok(t
                .remove(key)
                .map_err(self.backend("remove from"))?
                .is_some()),
            TreeKind::Memory(db) => Ok(lock(db).write(self.name, key, None)),
        }
    }

    /// Calls `f` on every entry in key order, stopping at its first error. `f` must not
    /// use the store (the memory store is locked meanwhile).
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => {
                for entry in t.iter() {
                    let (k, v) = entry.map_err(self.backend("read from"))?;
                    f(&k, &v)?;
                }
                Ok(())
            }
            TreeKind::Memory(db) => {
                let db = lock(db);
                for (k, v) in db.live.get(self.name).into_iter().flatten() {
                    f(k, v)?;
                }
                Ok(())
            }
        }
    }

    /// At most `max` entries from `from` (inclusive) on, in key order.
    pub(crate) fn scan(&self, from: &[u8], max: usize) -> Result<Vec<Entry>, StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => {
                let mut out = Vec::new();
                for entry in t.range(from..).take(max) {
                    let (k, v) = entry.map_err(self.backend("read from"))?;
                    out.push((k.to_vec(), v.to_vec()));
                }
                Ok(out)
            }
            TreeKind::Memory(db) => Ok(lock(db)
                .live
                .get(self.name)
                .into_iter()
                .flat_map(|t| t.range(from.to_vec()..))
                .take(max)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
        }
    }

    /// The entry with the largest key, if any.
    pub(crate) fn last(&self) -> Result<Option<Entry>, StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => Ok(t
                .last()
                .map_err(self.backend("read from"))?
                .map(|(k, v)| (k.to_vec(), v.to_vec()))),
            TreeKind::Memory(db) => Ok(lock(db)
                .live
                .get(self.name)
                .and_then(|t| t.last_key_value())
                .map(|(k, v)| (k.clone(), v.clone()))),
        }
    }

    /// The number of entries (sled counts them: O(n)).
    pub(crate) fn len(&self) -> usize {
        match &self.kind {
            TreeKind::Sled(t) => t.len(),
            TreeKind::Memory(db) => lock(db).live.get(self.name).map_or(0, BTreeMap::len),
        }
    }

    /// Makes every write so far durable, in every tree of the store.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        match &self.kind {
            TreeKind::Sled(t) => t.flush().map(drop).map_err(self.backend("flush")),
            TreeKind::Memory(db) => {
                lock(db).flush();
                Ok(())
            }
        }
    }
}

/// A key and its value.
pub(crate) type Entry = (Vec<u8>, Vec<u8>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type Trees = HashMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

/// The memory backend: what the process sees, what a crash would keep, and the writes
/// in between, in order.
#[derive(Default)]
struct MemDb {
    live: Trees,
    durable: Trees,
    journal: Vec<Write>,
}

/// One write of the memory backend: tree, key, and the value (`None`: removed).
type Write = (&'static str, Vec<u8>, Option<Vec<u8>>);

impl MemDb {
    fn write(&mut self, tree: &'static str, key: &[u8], value: Option<Vec<u8>>) -> bool {
        self.journal.push((tree, key.to_vec(), value.clone()));
        apply(&mut self.live, tree, key, value)
    }

    fn flush(&mut self) {
        for (tree, key, value) in std::mem::take(&mut self.journal) {
            apply(&mut self.durable, tree, &key, value);
        }
    }
}

/// Writes or removes one entry; whether the key was there.
fn apply(trees: &mut Trees, tree: &'static str, key: &[u8], value: Option<Vec<u8>>) -> bool {
    let t = trees.entry(tree).or_default();
    match value {
        Some(v) => t.insert(key.to_vec(), v).is_some(),
        None => t.remove(key).is_some(),
    }
}

/// Locks the memory backend. A panic elsewhere while it was held leaves whole entries
/// (every change is one map operation), so the data is still consistent.
fn lock(db: &Mutex<MemDb>) -> MutexGuard<'_, MemDb> {
    db.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Temporary data directories for the unit tests, removed on drop.
#[cfg(test)]
pub(crate) mod testdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, not yet existing path under the system temp dir.
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        pub(crate) fn new(name: &str) -> TestDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "bosun-store-unit-{name}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            TestDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testdir::TestDir;
    use super::*;

    #[test]
    fn handles_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Store>();
        send::<Outbox>();
        send::<DedupLog>();
        send::<DeadLetters>();
    }

    #[test]
    fn durability_parses_and_shows_its_flag_values() {
        for d in [Durability::None, Durability::Batched, Durability::Every] {
            assert_eq!(d.to_string().parse::<Durability>(), Ok(d));
        }
        assert!("Every".parse::<Durability>().is_err());
        assert_eq!(Durability::default(), Durability::Batched);
    }

    #[test]
    fn a_new_store_records_its_format_and_reopens() {
        let dir = TestDir::new("format");
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.path(), Some(dir.path()));
        store.set_cursor(b"pub-1", 41).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.cursor(b"pub-1").unwrap(), Some(41));
        assert_eq!(store.cursor(b"pub-2").unwrap(), None);
    }

    #[test]
    fn a_second_open_in_the_same_process_is_refused() {
        let dir = TestDir::new("twice");
        let store = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        drop(store);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn unknown_format_versions_are_refused() {
        let dir = TestDir::new("version");
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.tree(META_TREE).unwrap();
            meta.insert(FORMAT_KEY, 2u32.to_be_bytes().to_vec())
                .unwrap();
            meta.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedVersion { found: 2, .. }),
            "{err}"
        );
        {
            // Remove the version, behind the store's back.
            let db = sled::open(dir.path()).unwrap();
            db.open_tree(META_TREE).unwrap().remove(FORMAT_KEY).unwrap();
            db.flush().unwrap();
        }
        // It was closed cleanly as a bosun store: damaged.
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
        // Without that record: some sled database.
        fs::remove_file(dir.path().join(state::STATE_FILE)).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    }

    #[test]
    fn entries_lost_since_a_clean_close_are_found_not_ignored() {
        let dir = TestDir::new("lost");
        let ids = [1u128, 2, 3].map(uuid::Uuid::from_u128);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut outbox = store.outbox(10, Durability::Every).unwrap();
            for id in ids {
                let _ = outbox.append(&OutboxRecord::new(id, 1, vec![])).unwrap();
            }
        }
        // Reopening after a clean close checks, and counts this close too.
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(
            state::read(dir.path()),
            Some(state::DirState::Closed {
                closes: 2,
                counts: COUNTED
                    .iter()
                    .map(|t| (t.to_string(), if *t == outbox::TREE { 3 } else { 0 }))
                    .collect()
            })
        );
        {
            // One request disappears while the store is closed.
            let db = sled::open(dir.path()).unwrap();
            db.open_tree(outbox::TREE)
                .unwrap()
                .remove(ids[1].as_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Damaged { .. }), "{msg}");
        assert!(
            msg.contains("tree outbox holds 2 entries, 3 at its last clean close"),
            "{msg}"
        );
        // After a crash (the state says open) sled's recovery is trusted.
        state::write(dir.path(), &state::DirState::Open).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox(10, Durability::Every).unwrap().len(), 2);
        // A failed open records no close.
        drop(store);
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree(META_TREE)
                .unwrap()
                .insert(CLOSES_KEY, &7u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let before = state::read(dir.path());
        let err = Store::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("it records 7 clean closes"),
            "{err}"
        );
        assert_eq!(state::read(dir.path()), before);
    }

    #[test]
    fn memory_crashes_keep_what_was_flushed_and_an_optional_prefix() {
        let store = Store::memory();
        store.set_cursor(b"a", 1).unwrap();
        store.flush().unwrap();
        store.set_cursor(b"a", 2).unwrap();
        store.set_cursor(b"b", 7).unwrap();
        assert_eq!(store.unflushed_writes(), 2);
        let crashed = store.crash_and_reopen().unwrap();
        assert_eq!(crashed.cursor(b"a").unwrap(), Some(1));
        assert_eq!(crashed.cursor(b"b").unwrap(), None);
        let partial = store.crash_and_reopen_after(1).unwrap();
        assert_eq!(partial.cursor(b"a").unwrap(), Some(2));
        assert_eq!(partial.cursor(b"b").unwrap(), None);
        // The old store is unaffected.
        assert_eq!(store.cursor(b"b").unwrap(), Some(7));
        let dir = TestDir::new("nocrash");
        assert!(Store::open(dir.path())
            .unwrap()
            .crash_and_reopen()
            .is_none());
    }

    #[test]
    fn a_bad_cursor_value_is_corrupt_not_a_panic() {
        let store = Store::memory();
        store
            .tree(CURSORS_TREE)
            .unwrap()
            .insert(b"s", vec![1, 2, 3])
            .unwrap();
        let err = store.cursor(b"s").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    tree: "cursors",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("key 73"), "{err}");
    }
}
