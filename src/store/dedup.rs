//! The receiver's duplicate window on disk, so that it survives a restart: the entries
//! of a [`Window`] (ids handed to the application, and their replies), written as the
//! window changes and read back by [`DedupLog::load`].
//!
//! The receiver mirrors every change of its window: [`DedupLog::begin`] after
//! [`Window::begin`], [`DedupLog::finish`] after [`Window::finish`], and
//! [`DedupLog::forget`] with every id a window call evicted or abandoned. With
//! [`Durability::Every`], `begin` and `finish` flush before they return; with
//! `batched`, the receiver calls [`DedupLog::flush`] once per batch; with `none`, never.
//!
//! To answer a retry from the cache after a crash, a reply's `finish` must be durable
//! before the reply is sent. To know that a handler was interrupted by a crash (rather
//! than never started), its `begin` must be durable before the handler runs. Entries
//! found running on start are reported by [`DedupLog::load`] as
//! [`Recovered::interrupted`]: the handler may or may not have done its work.
//!
//! # Record layout (version 1)
//! Key: the message id (16 bytes). Value (see `codec` for items):
//!
//! | field | layout |
//! | --- | --- |
//! | version | 1 byte, 1 |
//! | state | 1 byte: 0 running, 1 finished with its reply, 2 finished, reply not kept |
//! | at | 8, ms since the Unix epoch: when it began (0) or finished (1, 2) |
//! | reply metadata | bytes (state 1 only) |
//! | reply frames | frames (state 1 only) |

use uuid::Uuid;

use super::codec::{self, Reader, Writer};
use super::{DecodeError, Durability, StoreError, Tree};
use crate::proto::dedup::{CachedReply, Limits, Window};

/// The dedup log's tree.
pub(crate) const TREE: &str = "dedup";
const VERSION: u8 = 1;

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const DONE_NO_REPLY: u8 = 2;

/// One entry of the log, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// Handed to the application at `at_ms`, no reply recorded.
    Running {
        /// When it began, ms since the Unix epoch.
        at_ms: u64,
    },
    /// Finished at `at_ms`, with its reply unless that was too large to keep.
    Done {
        /// When it finished, ms since the Unix epoch.
        at_ms: u64,
        /// The reply, if kept.
        reply: Option<CachedReply>,
    },
}

impl LogEntry {
    /// The stored value (the key is the id).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LogEntry::Running { at_ms } => encode_parts(RUNNING, *at_ms, None),
            LogEntry::Done { at_ms, reply: None } => encode_parts(DONE_NO_REPLY, *at_ms, None),
            LogEntry::Done {
                at_ms,
                reply: Some(r),
            } => encode_parts(DONE, *at_ms, Some(r)),
        }
    }

    /// Decodes a stored value: exactly what [`LogEntry::encode`] wrote, or an error;
    /// never a panic.
    pub fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(value, VERSION)?;
        let state = r.u8("state")?;
        let at_ms = r.u64("at")?;
        let entry = match state {
            RUNNING => LogEntry::Running { at_ms },
            DONE_NO_REPLY => LogEntry::Done { at_ms, reply: None },
            DONE => {
                let meta = r.bytes("reply metadata")?;
                let frames = r.frames("reply frames")?;
                LogEntry::Done {
                    at_ms,
                    reply: Some(CachedReply { frames, meta }),
                }
            }
            other => {
                return Err(DecodeError::new(format!(
                    "state {other}, expected 0, 1 or 2"
                )))
            }
        };
        r.finish()?;
        Ok(entry)
    }
}

fn encode_parts(state: u8, at_ms: u64, reply: Option<&CachedReply>) -> Vec<u8> {
    let size = 1 + 1 + 8 + reply.map_or(0, |r| 4 + r.meta.len() + codec::frames_size(&r.frames));
    let mut w = Writer::new(VERSION, size);
    w.u8(state);
    w.u64(at_ms);
    if let Some(r) = reply {
        w.bytes(&r.meta);
        w.frames(&r.frames);
    }
    w.finish()
}

/// An id that was running when the receiver stopped: its handler was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    /// The message id.
    pub id: Uuid,
    /// When its handler began, ms since the Unix epoch.
    pub began_at_ms: u64,
}

/// What [`DedupLog::load`] found.
#[derive(Debug)]
pub struct Recovered {
    /// The window of finished ids, within its limits.
    pub window: Window,
    /// Ids that were running when the receiver stopped, in id order. They stay in the
    /// log until the caller decides: [`DedupLog::forget`] lets a copy run again (run
    /// twice, perhaps), [`DedupLog::finish`] with a failure reply answers copies with it.
    /// They are not in [`Recovered::window`].
    pub interrupted: Vec<Interrupted>,
    /// Finished entries dropped from the log as expired or over the limits.
    pub forgotten: usize,
}

/// The persistent side of a receiver's [`Window`]. See the module docs.
pub struct DedupLog {
    tree: Tree,
    durability: Durability,
}

impl std::fmt::Debug for DedupLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupLog")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl DedupLog {
    pub(crate) fn new(tree: Tree, durability: Durability) -> Self {
        DedupLog { tree, durability }
    }

    /// Records that `id` was handed to the application at `at_ms`.
    pub fn begin(&self, id: Uuid, at_ms: u64) -> Result<(), StoreError> {
        self.put(id, LogEntry::Running { at_ms }.encode())
    }

    /// Records that `id` finished at `at_ms` with `reply` (`None` when the window did
    /// not keep it).
    pub fn finish(
        &self,
        id: Uuid,
        reply: Option<&CachedReply>,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let state = if reply.is_some() { DONE } else { DONE_NO_REPLY };
        self.put(id, encode_parts(state, at_ms, reply))
    }

    /// Forgets `ids` (evicted from the window, or abandoned). Not flushed: a crash may
    /// bring some back, and [`DedupLog::load`] drops them again if they are expired.
    pub fn forget(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        for id in ids {
            self.tree.remove(id.as_bytes())?;
        }
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush()
    }

    /// How many entries the log holds.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds the window at start-up, at `now_ms`: finished entries within `limits`
    /// go into it; expired ones and the oldest beyond the limits are removed from the
    /// log; running ones are returned as [`Recovered::interrupted`]. A value that does not
    /// decode fails the load with [`StoreError::Corrupt`].
    pub fn load(&self, limits: Limits, now_ms: u64) -> Result<Recovered, StoreError> {
        let mut entries = Vec::new();
        self.tree.for_each(|k, v| {
            let id = codec::id_key(k).map_err(|e| self.tree.corrupt(k, e))?;
            let entry = LogEntry::decode(v).map_err(|e| self.tree.corrupt(k, e))?;
            entries.push((id, entry));
            Ok(())
        })?;
        let mut window = Window::new(limits);
        let mut interrupted = Vec::new();
        let mut drop = Vec::new();
        for (id, entry) in entries {
            match entry {
                LogEntry::Running { at_ms } => interrupted.push(Interrupted {
                    id,
                    began_at_ms: at_ms,
                }),
                LogEntry::Done { at_ms, reply } => drop.extend(window.restore(id, reply, at_ms)),
            }
        }
        drop.extend(window.expire(now_ms));
        self.forget(&drop)?;
        Ok(Recovered {
            window,
            interrupted,
            forgotten: drop.len(),
        })
    }

    fn put(&self, id: Uuid, value: Vec<u8>) -> Result<(), StoreError> {
        self.tree.insert(id.as_bytes(), value)?;
        if self.durability == Durability::Every {
            self.tree.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TestDir;
    use super::super::Store;
    use super::*;
    use crate::proto::dedup::Decision;
    use std::time::Duration;

    const T0: u64 = 1_700_000_000_000;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn reply(text: &str) -> CachedReply {
        CachedReply {
            frames: vec![text.as_bytes().to_vec(), vec![]],
            meta: vec![0xff, b'B', b'S', b'N'],
        }
    }

    fn limits(max_ids: usize, max_age_ms: u64) -> Limits {
        Limits {
            max_ids,
            max_age: Duration::from_millis(max_age_ms),
            max_reply_bytes: 1 << 20,
        }
    }

    #[test]
    fn entries_round_trip_and_garbage_is_an_error() {
        for e in [
            LogEntry::Running { at_ms: T0 },
            LogEntry::Done {
                at_ms: T0,
                reply: None,
            },
            LogEntry::Done {
                at_ms: u64::MAX,
                reply: Some(reply("hi")),
            },
        ] {
            let bytes = e.encode();
            assert_eq!(bytes.capacity(), bytes.len());
            assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
            for cut in 0..bytes.len() {
                assert!(LogEntry::decode(&bytes[..cut]).is_err());
            }
        }
        assert!(LogEntry::decode(&[1, 9, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(LogEntry::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn a_restart_keeps_replies_and_reports_interrupted_handlers() {
        let dir = TestDir::new("dedup");
        {
            let store = Store::open(dir.path()).unwrap();
            let log = store.dedup_log(Durability::Every).unwrap();
            let mut w = Window::new(limits(100, 60_000));
            for n in 1..=3 {
                assert!(w.begin(id(n), T0).is_empty());
                log.begin(id(n), T0).unwrap();
            }
            assert!(w.finish(id(1), reply("one"), T0 + 1).is_empty());
            log.finish(id(1), Some(&reply("one")), T0 + 1).unwrap();
            assert!(w.finish(id(2), reply("two"), T0 + 2).is_empty());
            log.finish(id(2), None, T0 + 2).unwrap();
            // id 3 is still running when the process stops.
        }
        let store = Store::open(dir.path()).unwrap();
        let log = store.dedup_log(Durability::Every).unwrap();
        let r = log.load(limits(100, 60_000), T0 + 10).unwrap();
        assert_eq!(
            r.interrupted,
            [Interrupted {
                id: id(3),
                began_at_ms: T0
            }]
        );
        assert_eq!(r.forgotten, 0);
        assert_eq!(r.window.len(), 2);
        assert_eq!(
            r.window.decide(id(1), T0 + 10),
            Decision::Replay(reply("one").into())
        );
        assert_eq!(r.window.decide(id(2), T0 + 10), Decision::Handled);
        assert_eq!(r.window.decide(id(3), T0 + 10), Decision::New);
        assert_eq!(log.len(), 3, "the interrupted entry waits for the caller");
    }

    #[test]
    fn load_drops_expired_and_surplus_entries_from_the_log() {
        let store = Store::memory();
        let log = store.dedup_log(Durability::None).unwrap();
        for n in 1..=5u64 {
            log.finish(id(n.into()), Some(&reply("r")), T0 + n * 1_000)
                .unwrap();
        }
        // At T0 + 4_500 with a 2 s window, entries 1 and 2 have expired; a limit of two
        // ids then drops 3 as well.
        let r = log.load(limits(2, 2_000), T0 + 4_500).unwrap();
        assert_eq!(r.forgotten, 3);
        assert_eq!(r.window.len(), 2);
        assert_eq!(log.len(), 2);
        assert!(r.window.get(id(4)).is_some() && r.window.get(id(5)).is_some());
    }

    #[test]
    fn a_corrupt_entry_fails_the_load_naming_tree_and_key() {
        let store = Store::memory();
        let log = store.dedup_log(Durability::None).unwrap();
        log.begin(id(1), T0).unwrap();
        store
            .tree(TREE)
            .unwrap()
            .insert(id(2).as_bytes(), vec![1, 7])
            .unwrap();
        let err = log.load(Limits::default(), T0).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { tree: "dedup", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("02"), "{err}");
        store.tree(TREE).unwrap().insert(b"short", vec![]).unwrap();
        assert!(log.load(Limits::default(), T0).is_err());
    }

    #[test]
    fn batched_writes_wait_for_the_flush() {
        let store = Store::memory();
        let log = store.dedup_log(Durability::Batched).unwrap();
        log.begin(id(1), T0).unwrap();
        log.finish(id(1), Some(&reply("x")), T0).unwrap();
        assert_eq!(store.unflushed_writes(), 2);
        let lost = store.crash_and_reopen().unwrap();
        assert!(lost.dedup_log(Durability::Batched).unwrap().is_empty());
        log.flush().unwrap();
        let kept = store.crash_and_reopen().unwrap();
        let r = kept
            .dedup_log(Durability::Batched)
            .unwrap()
            .load(Limits::default(), T0)
            .unwrap();
        assert!(matches!(
            r.window.get(id(1)),
            Some(crate::proto::dedup::State::Done(Some(_)))
        ));
        let every = store.dedup_log(Durability::Every).unwrap();
        every.begin(id(2), T0).unwrap();
        assert_eq!(store.unflushed_writes(), 0);
    }
}
