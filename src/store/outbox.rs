//! A client's pending requests: stored before they are sent, removed when their reply
//! arrives (or they are dead-lettered), re-sent with their original ids after a restart.
//!
//! The guarantee, by [`Durability`]:
//! - `every`: once [`Outbox::append`] returned `Ok`, the request survives a crash.
//! - `batched`: once [`Outbox::commit`] listed its id, the request survives a crash. The
//!   caller sends a request only then.
//! - `none`: no promise; sled's background flush (every 500 ms) bounds the loss.
//!
//! An [`Outbox::ack`] is not flushed by itself: it becomes durable with the next flush
//! (the next `every` append, the next commit). A crash before that brings the request
//! back and it is sent again: a duplicate, which receivers suppress by id, never a loss.
//!
//! # Record layout (version 1)
//! Key: the message id (16 bytes). Value, integers big-endian (see `codec` for items):
//!
//! | field | layout |
//! | --- | --- |
//! | version | 1 byte, 1 |
//! | created at | 8, ms since the Unix epoch |
//! | deadline | 8, ms since the Unix epoch; 0 = none |
//! | attempts | 4 |
//! | service | optional bytes |
//! | payload | frames |
//! | headers | count (4), then per header key bytes and value bytes (UTF-8) |

use std::collections::BTreeMap;

use uuid::Uuid;

use super::codec::{self, Reader, Writer};
use super::{DecodeError, Durability, StoreError, Tree};
use crate::proto::envelope::{Envelope, Meta};
use crate::proto::frames::Frames;

/// The outbox's tree.
pub(crate) const TREE: &str = "outbox";
const VERSION: u8 = 1;

/// One pending request, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The message id (UUID v7), the same on every send.
    pub id: Uuid,
    /// The service it is for (Majordomo), if any.
    pub service: Option<Vec<u8>>,
    /// The application's frames.
    pub payload: Frames,
    /// When the request was created, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When the client stops trying, in ms since the Unix epoch (None: never).
    pub deadline_ms: Option<u64>,
    /// How many times it has been sent so far (0 before its first send).
    pub attempts: u32,
    /// The metadata headers it is sent with.
    pub headers: BTreeMap<String, String>,
}

impl OutboxRecord {
    /// A request of `payload` with no service, deadline or headers, not yet sent.
    pub fn new(id: Uuid, created_at_ms: u64, payload: Frames) -> Self {
        OutboxRecord {
            id,
            service: None,
            payload,
            created_at_ms,
            deadline_ms: None,
            attempts: 0,
            headers: BTreeMap::new(),
        }
    }

    /// The record of a request about to be sent as `envelope` (its attempt counts as
    /// sent) to `service`.
    pub fn from_envelope(service: Option<Vec<u8>>, envelope: &Envelope) -> Self {
        let m = &envelope.meta;
        OutboxRecord {
            id: m.id,
            service,
            payload: envelope.payload.clone(),
            created_at_ms: m.created_at_ms,
            deadline_ms: m.deadline_ms,
            attempts: m.attempt,
            headers: m.headers.clone(),
        }
    }

    /// The request as an envelope for its next send: attempt `attempts + 1`.
    pub fn envelope(&self) -> Envelope {
        let mut meta = Meta::new(self.id, self.created_at_ms);
        meta.attempt = self.attempts.saturating_add(1);
        meta.deadline_ms = self.deadline_ms;
        meta.headers = self.headers.clone();
        Envelope {
            meta,
            payload: self.payload.clone(),
        }
    }

    /// The stored value (the key is the id).
    pub fn encode(&self) -> Vec<u8> {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum();
        let size = 1
            + 8
            + 8
            + 4
            + codec::opt_bytes_size(self.service.as_deref())
            + codec::frames_size(&self.payload)
            + 4
            + headers;
        let mut w = Writer::new(VERSION, size);
        w.u64(self.created_at_ms);
        w.u64(self.deadline_ms.unwrap_or(0));
        w.u32(self.attempts);
        w.opt_bytes(self.service.as_deref());
        w.frames(&self.payload);
        w.u32(u32::try_from(self.headers.len()).unwrap_or(u32::MAX));
        for (k, v) in &self.headers {
            w.bytes(k.as_bytes());
            w.bytes(v.as_bytes());
        }
        w.finish()
    }

    /// Decodes the value stored at `key`: exactly what [`OutboxRecord::encode`] wrote,
    /// or an error; never a panic, never an allocation larger than `value`.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, DecodeError> {
        let id = codec::id_key(key)?;
        let mut r = Reader::new(value, VERSION)?;
        let created_at_ms = r.u64("created at")?;
        let deadline = r.u64("deadline")?;
        let attempts = r.u32("attempts")?;
        let service = r.opt_bytes("service")?;
        let payload = r.frames("payload")?;
        let count = r.u32("header count")?;
        let mut headers = BTreeMap::new();
        for _ in 0..count {
            let k = r.text("header key")?;
            let v = r.text("header value")?;
            headers.insert(k, v);
        }
        r.finish()?;
        Ok(OutboxRecord {
            id,
            service,
            payload,
            created_at_ms,
            deadline_ms: (deadline != 0).then_some(deadline),
            attempts,
            headers,
        })
    }
}

/// What became of an appended request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a staged request may only be sent after a commit confirms it"]
pub enum Appended {
    /// It may be sent now: on disk with `every`, with no promise with `none`.
    Ready,
    /// `batched`: staged; send it once [`Outbox::commit`] lists its id.
    Staged,
}

/// A client's pending requests, bounded, in id order. See the module docs for what
/// each [`Durability`] promises.
pub struct Outbox {
    tree: Tree,
    limit: usize,
    durability: Durability,
    len: usize,
    /// Appended since the last commit (`batched`), in append order.
    staged: Vec<Uuid>,
    /// Written since the last flush (acks and attempt counts too).
    dirty: bool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("len", &self.len)
            .field("limit", &self.limit)
            .field("durability", &self.durability)
            .field("staged", &self.staged.len())
            .finish()
    }
}

impl Outbox {
    pub(crate) fn open(
        tree: Tree,
        limit: usize,
        durability: Durability,
    ) -> Result<Outbox, StoreError> {
        let len = tree.len();
        Ok(Outbox {
            tree,
            limit,
            durability,
            len,
            staged: Vec::new(),
            dirty: false,
        })
    }

    /// Stores `record` (replacing a record with its id, if any). With `every` it is on
    /// disk when this returns; with `batched` it is staged until [`Outbox::commit`].
    ///
    /// A full outbox refuses with [`StoreError::OutboxFull`] and stores nothing. An
    /// append that fails otherwise is taken back from the outbox, but a crash may still
    /// bring it back after a restart (and it is then sent: a duplicate at worst).
    pub fn append(&mut self, record: &OutboxRecord) -> Result<Appended, StoreError> {
        if self.len >= self.limit {
            return Err(StoreError::OutboxFull { limit: self.limit });
        }
        let key = record.id.as_bytes();
        let replaced = self.tree.insert(key, record.encode())?;
        if !replaced {
            self.len += 1;
        }
        self.dirty = true;
        match self.durability {
            Durability::None => Ok(Appended::Ready),
            Durability::Every => match self.tree.flush() {
                Ok(()) => {
                    self.dirty = false;
                    Ok(Appended::Ready)
                }
                Err(e) => {
                    if !replaced && self.tree.remove(key).unwrap_or(false) {
                        self.len -= 1;
                    }
                    Err(e)
                }
            },
            Durability::Batched => {
                self.staged.push(record.id);
                Ok(Appended::Staged)
            }
        }
    }

    /// Flushes once, making everything written so far durable, and returns the ids staged
    /// since the last commit in append order (empty with `every` and `none`): those
    /// requests may now be sent. With `none` it does nothing.
    ///
    /// If the flush fails, the staged ids stay staged (not confirmed) for the next commit.
    pub fn commit(&mut self) -> Result<Vec<Uuid>, StoreError> {
        if self.durability == Durability::None || !self.dirty {
            return Ok(Vec::new());
        }
        self.tree.flush()?;
        self.dirty = false;
        Ok(std::mem::take(&mut self.staged))
    }

    /// Removes the request `id` (its reply arrived, or it was dead-lettered); whether it
    /// was there. Durable with the next flush.
    pub fn ack(&mut self, id: Uuid) -> Result<bool, StoreError> {
        let removed = self.tree.remove(id.as_bytes())?;
        if removed {
            self.len -= 1;
            self.dirty = true;
            if let Some(at) = self.staged.iter().position(|s| *s == id) {
                self.staged.remove(at);
            }
        }
        Ok(removed)
    }

    /// Records that request `id` has been sent `attempts` times; whether it is pending.
    /// Durable with the next flush (a crash may count a send less).
    pub fn set_attempts(&mut self, id: Uuid, attempts: u32) -> Result<bool, StoreError> {
        let Some(mut record) = self.get(id)? else {
            return Ok(false);
        };
        record.attempts = attempts;
        self.tree.insert(id.as_bytes(), record.encode())?;
        self.dirty = true;
        Ok(true)
    }

    /// The pending request `id`, if any.
    pub fn get(&self, id: Uuid) -> Result<Option<OutboxRecord>, StoreError> {
        let key = id.as_bytes();
        match self.tree.get(key)? {
            None => Ok(None),
            Some(v) => OutboxRecord::decode(key, &v)
                .map(Some)
                .map_err(|e| self.tree.corrupt(key, e)),
        }
    }

    /// Every pending request (staged ones included), in id order: after a restart, the
    /// requests to send again.
    pub fn pending(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        let mut out = Vec::with_capacity(self.len);
        self.tree.for_each(|k, v| {
            out.push(OutboxRecord::decode(k, v).map_err(|e| self.tree.corrupt(k, e))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The ids appended since the last commit (`batched`), not yet confirmed.
    pub fn staged(&self) -> &[Uuid] {
        &self.staged
    }

    /// How many requests are pending (staged ones included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no request is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most requests the outbox holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// When the outbox flushes.
    pub fn durability(&self) -> Durability {
        self.durability
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TestDir;
    use super::super::Store;
    use super::*;
    use proptest::prelude::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn record(n: u128) -> OutboxRecord {
        OutboxRecord::new(
            id(n),
            1_700_000_000_000 + n as u64,
            vec![n.to_be_bytes().to_vec()],
        )
    }

    fn full_record() -> OutboxRecord {
        let mut r = record(9);
        r.service = Some(b"echo".to_vec());
        r.payload = vec![vec![], b"two".to_vec(), vec![0xff; 1000]];
        r.deadline_ms = Some(1_700_000_009_000);
        r.attempts = 3;
        r.headers.insert("trace".into(), "abc".into());
        r.headers.insert("".into(), "é".into());
        r
    }

    #[test]
    fn records_round_trip_and_their_size_is_exact() {
        for r in [record(1), full_record()] {
            let bytes = r.encode();
            assert_eq!(bytes.capacity(), bytes.len(), "capacity computed exactly");
            assert_eq!(OutboxRecord::decode(r.id.as_bytes(), &bytes).unwrap(), r);
        }
    }

    #[test]
    fn records_and_envelopes_agree() {
        let r = full_record();
        let e = r.envelope();
        assert_eq!(e.meta.attempt, 4);
        let back = OutboxRecord::from_envelope(r.service.clone(), &e);
        assert_eq!(back.attempts, 4);
        assert_eq!(
            OutboxRecord {
                attempts: 3,
                ..back
            },
            r
        );
    }

    #[test]
    fn every_cut_and_every_flipped_version_is_an_error() {
        let r = full_record();
        let bytes = r.encode();
        for cut in 0..bytes.len() {
            assert!(
                OutboxRecord::decode(r.id.as_bytes(), &bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(OutboxRecord::decode(r.id.as_bytes(), &longer).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(OutboxRecord::decode(r.id.as_bytes(), &v2).is_err());
        assert!(OutboxRecord::decode(b"short", &bytes).is_err());
    }

    #[test]
    fn a_corrupt_record_names_tree_and_key() {
        let store = Store::memory();
        let mut outbox = store.outbox(10, Durability::None).unwrap();
        let _ = outbox.append(&record(1)).unwrap();
        store
            .tree(TREE)
            .unwrap()
            .insert(id(2).as_bytes(), vec![1, 2, 3])
            .unwrap();
        let err = outbox.pending().unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::Corrupt { tree: "outbox", .. }),
            "{msg}"
        );
        assert!(
            msg.contains(&"0".repeat(31)) && msg.contains("truncated"),
            "{msg}"
        );
        assert!(outbox.get(id(2)).is_err());
        assert_eq!(outbox.get(id(1)).unwrap(), Some(record(1)));
    }

    #[test]
    fn a_full_outbox_refuses_and_never_grows() {
        let store = Store::memory();
        let mut outbox = store.outbox(2, Durability::Every).unwrap();
        assert_eq!(outbox.append(&record(1)).unwrap(), Appended::Ready);
        assert_eq!(outbox.append(&record(2)).unwrap(), Appended::Ready);
        let err = outbox.append(&record(3)).unwrap_err();
        assert!(matches!(err, StoreError::OutboxFull { limit: 2 }), "{err}");
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.pending().unwrap().len(), 2);
        assert!(outbox.ack(id(1)).unwrap());
        assert!(!outbox.ack(id(1)).unwrap());
        assert_eq!(outbox.append(&record(3)).unwrap(), Appended::Ready);
        let ids: Vec<_> = outbox.pending().unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [id(2), id(3)]);
    }

    #[test]
    fn replacing_a_record_does_not_count_twice() {
        let store = Store::memory();
        let mut outbox = store.outbox(5, Durability::Every).unwrap();
        let _ = outbox.append(&record(1)).unwrap();
        let _ = outbox.append(&record(1)).unwrap();
        assert_eq!(outbox.len(), 1);
        assert!(outbox.set_attempts(id(1), 2).unwrap());
        assert!(!outbox.set_attempts(id(7), 2).unwrap());
        assert_eq!(outbox.get(id(1)).unwrap().unwrap().attempts, 2);
    }

    #[test]
    fn every_is_durable_when_append_returns() {
        let store = Store::memory();
        let mut outbox = store.outbox(10, Durability::Every).unwrap();
        let _ = outbox.append(&record(1)).unwrap();
        assert_eq!(store.unflushed_writes(), 0);
        outbox.ack(id(1)).unwrap();
        assert_eq!(store.unflushed_writes(), 1, "acks wait for the next flush");
        let crashed = store.crash_and_reopen().unwrap();
        let again = crashed.outbox(10, Durability::Every).unwrap();
        assert_eq!(again.len(), 1, "an unflushed ack may bring a request back");
    }

    #[test]
    fn batched_confirms_at_commit_with_one_flush() {
        let store = Store::memory();
        let mut outbox = store.outbox(10, Durability::Batched).unwrap();
        for n in 1..=3 {
            assert_eq!(outbox.append(&record(n)).unwrap(), Appended::Staged);
        }
        outbox.ack(id(2)).unwrap();
        assert_eq!(outbox.staged(), [id(1), id(3)]);
        // Before the commit a crash may lose them all.
        let crashed = store.crash_and_reopen().unwrap();
        assert_eq!(crashed.outbox(10, Durability::Batched).unwrap().len(), 0);
        assert_eq!(outbox.commit().unwrap(), [id(1), id(3)]);
        assert_eq!(store.unflushed_writes(), 0);
        assert!(outbox.staged().is_empty());
        assert!(
            outbox.commit().unwrap().is_empty(),
            "nothing new to confirm"
        );
        let crashed = store.crash_and_reopen().unwrap();
        let ids: Vec<_> = crashed
            .outbox(10, Durability::Batched)
            .unwrap()
            .pending()
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, [id(1), id(3)]);
    }

    #[test]
    fn none_never_flushes() {
        let store = Store::memory();
        let mut outbox = store.outbox(10, Durability::None).unwrap();
        assert_eq!(outbox.append(&record(1)).unwrap(), Appended::Ready);
        assert!(outbox.commit().unwrap().is_empty());
        assert_eq!(store.unflushed_writes(), 1);
    }

    #[test]
    fn sled_outbox_survives_a_reopen() {
        let dir = TestDir::new("outbox");
        {
            let store = Store::open(dir.path()).unwrap();
            let mut outbox = store.outbox(10, Durability::Batched).unwrap();
            let _ = outbox.append(&full_record()).unwrap();
            let _ = outbox.append(&record(1)).unwrap();
            outbox.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let outbox = store.outbox(10, Durability::Batched).unwrap();
        assert_eq!(outbox.len(), 2);
        assert_eq!(outbox.pending().unwrap(), [record(1), full_record()]);
    }

    proptest! {
        #[test]
        fn any_record_round_trips(
            raw in any::<u128>(),
            service in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            payload in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..5),
            created in any::<u64>(),
            deadline in proptest::option::of(1u64..),
            attempts in any::<u32>(),
            headers in proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
        ) {
            let r = OutboxRecord {
                id: Uuid::from_u128(raw), service, payload, created_at_ms: created,
                deadline_ms: deadline, attempts, headers,
            };
            prop_assert_eq!(OutboxRecord::decode(r.id.as_bytes(), &r.encode()).unwrap(), r);
        }

        #[test]
        fn decode_never_panics(key in proptest::collection::vec(any::<u8>(), 0..20),
                               value in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = OutboxRecord::decode(&key, &value);
            let mut v = vec![VERSION];
            v.extend_from_slice(&value);
            let _ = OutboxRecord::decode(&key, &v);
        }
    }
}
