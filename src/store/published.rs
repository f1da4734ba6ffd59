//! A publisher's retained messages, for replay, and its identity: what lets a
//! publisher restarted on the same data dir keep its id and continue its sequence.
//!
//! [`PublishedLog`] is the sled [`Retention`] of [`crate::proto::publisher`]: messages
//! keyed by their sequence (big-endian u64, so iteration is in order), contiguous from
//! the oldest retained to the newest. [`open`] reads (or makes) the publisher id and
//! finds the next sequence: one past the newest retained, or past the highest ever
//! trimmed when retention emptied.
//!
//! The guarantee, by [`Durability`]:
//! - `every`: [`Retention::keep`] flushes before it returns, so a message is on disk
//!   before it is sent;
//! - `batched`: the driver flushes the store once per turn, before the turn's messages
//!   are sent (group commit);
//! - `none`: sled's background flush (every 500 ms) bounds what a crash loses; a
//!   publisher restarted after losing sequences it had sent reuses them, and
//!   subscribers that saw the first ones drop the new ones as duplicates.
//!
//! # Record layout (version 1)
//! Key: the sequence (8 bytes, big-endian). Value (see `codec`):
//!
//! | field | layout |
//! | --- | --- |
//! | version | 1 byte, 1 |
//! | published at | 8, ms since the Unix epoch |
//! | topic | bytes |
//! | payload | frames |
//!
//! The `publisher` tree holds `id` (16 bytes) and `trimmed` (the highest sequence
//! trimmed so far, big-endian u64).

use uuid::Uuid;

use super::codec::{self, Reader, Writer};
use super::{DecodeError, Durability, Store, StoreError, Tree};
use crate::proto::publisher::{Retained, Retention};

/// The retained messages' tree.
pub(crate) const TREE: &str = "published";
/// The publisher's id and trim mark.
pub(crate) const META_TREE: &str = "publisher";
const VERSION: u8 = 1;
const ID_KEY: &[u8] = b"id";
const TRIMMED_KEY: &[u8] = b"trimmed";

/// A publisher's retained messages in a store. See the module docs.
pub struct PublishedLog {
    tree: Tree,
    meta: Tree,
    durability: Durability,
    /// The oldest retained: sequence and publication time.
    oldest: Option<(u64, u64)>,
    /// The newest retained (meaningful when `oldest` is set).
    newest: u64,
}

impl std::fmt::Debug for PublishedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedLog")
            .field("oldest", &self.oldest)
            .field("newest", &self.newest)
            .finish_non_exhaustive()
    }
}

/// Opens the publisher state of `store`: its id (made with `new_id` and flushed the
/// first time), the next sequence to publish, and the retained messages.
pub fn open(
    store: &Store,
    durability: Durability,
    new_id: impl FnOnce() -> Uuid,
) -> Result<(Uuid, u64, PublishedLog), StoreError> {
    store.refuse_other_peers("publisher", &[META_TREE, TREE])?;
    let meta = store.tree(META_TREE)?;
    let id = match meta.get(ID_KEY)? {
        Some(v) => codec::id_key(&v).map_err(|e| meta.corrupt(ID_KEY, e))?,
        None => {
            let id = new_id();
            meta.insert(ID_KEY, id.as_bytes().to_vec())?;
            meta.flush()?;
            id
        }
    };
    let trimmed = match meta.get(TRIMMED_KEY)? {
        Some(v) => u64_value(&v).map_err(|e| meta.corrupt(TRIMMED_KEY, e))?,
        None => 0,
    };
    let tree = store.tree(TREE)?;
    let first = tree.scan(&[], 1)?.into_iter().next();
    let last = tree.last()?;
    let mut log = PublishedLog {
        tree,
        meta,
        durability,
        oldest: None,
        newest: 0,
    };
    if let (Some((fk, fv)), Some((lk, _))) = (first, last) {
        let seq = log.key_seq(&fk)?;
        let at = log.at_ms(&fk, &fv)?;
        log.oldest = Some((seq, at));
        log.newest = log.key_seq(&lk)?;
    }
    let next = log.newest.max(trimmed).saturating_add(1);
    Ok((id, next, log))
}

fn u64_value(v: &[u8]) -> Result<u64, DecodeError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| DecodeError::new(format!("{} bytes, expected 8", v.len())))?;
    Ok(u64::from_be_bytes(b))
}

impl PublishedLog {
    fn key_seq(&self, key: &[u8]) -> Result<u64, StoreError> {
        u64_value(key).map_err(|e| self.tree.corrupt(key, e))
    }

    fn at_ms(&self, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
        let mut r = Reader::new(value, VERSION).map_err(|e| self.tree.corrupt(key, e))?;
        r.u64("published at").map_err(|e| self.tree.corrupt(key, e))
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<Retained, StoreError> {
        let seq = self.key_seq(key)?;
        let decode = || -> Result<Retained, DecodeError> {
            let mut r = Reader::new(value, VERSION)?;
            let at_ms = r.u64("published at")?;
            let topic = r.bytes("topic")?;
            let payload = r.frames("payload")?;
            r.finish()?;
            Ok(Retained {
                seq,
                at_ms,
                topic,
                payload,
            })
        };
        decode().map_err(|e| self.tree.corrupt(key, e))
    }

    /// The stored value of `msg` (the key is its sequence).
    pub fn encode(msg: &Retained) -> Vec<u8> {
        let size = 1 + 8 + 4 + msg.topic.len() + codec::frames_size(&msg.payload);
        let mut w = Writer::new(VERSION, size);
        w.u64(msg.at_ms);
        w.bytes(&msg.topic);
        w.frames(&msg.payload);
        w.finish()
    }
}

impl Retention for PublishedLog {
    fn keep(&mut self, msg: Retained) -> Result<(), StoreError> {
        self.tree
            .insert(&msg.seq.to_be_bytes(), Self::encode(&msg))?;
        if self.durability == Durability::Every {
            self.tree.flush()?;
        }
        if self.oldest.is_none() {
            self.oldest = Some((msg.seq, msg.at_ms));
        }
        self.newest = msg.seq;
        Ok(())
    }

    fn range(&self, from: u64, max: usize) -> Result<Vec<Retained>, StoreError> {
        self.tree
            .scan(&from.to_be_bytes(), max)?
            .iter()
            .map(|(k, v)| self.decode(k, v))
            .collect()
    }

    fn oldest(&self) -> Option<(u64, u64)> {
        self.oldest
    }

    fn len(&self) -> u64 {
        self.oldest.map_or(0, |(o, _)| self.newest - o + 1)
    }

    fn trim_oldest(&mut self) -> Result<(), StoreError> {
        let Some((seq, _)) = self.oldest else {
            return Ok(());
        };
        self.meta.insert(TRIMMED_KEY, seq.to_be_bytes().to_vec())?;
        self.tree.remove(&seq.to_be_bytes())?;
        self.oldest = None;
        if seq < self.newest {
            let key = (seq + 1).to_be_bytes();
            if let Some(v) = self.tree.get(&key)? {
                self.oldest = Some((seq + 1, self.at_ms(&key, &v)?));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Retained {
        Retained {
            seq,
            at_ms: 1000 + seq,
            topic: b"t".to_vec(),
            payload: vec![seq.to_be_bytes().to_vec(), vec![]],
        }
    }

    #[test]
    fn identity_and_sequence_survive_a_crash_and_trimming() {
        let store = Store::memory();
        let (id, next, mut log) = open(&store, Durability::Batched, || Uuid::from_u128(5)).unwrap();
        assert_eq!((id, next, log.len()), (Uuid::from_u128(5), 1, 0));
        for s in 1..=5 {
            log.keep(msg(s)).unwrap();
        }
        store.flush().unwrap();
        log.keep(msg(6)).unwrap(); // not committed
        assert_eq!(log.range(2, 2).unwrap(), vec![msg(2), msg(3)]);
        let crashed = store.crash_and_reopen().unwrap();
        let (id, next, mut log) = open(&crashed, Durability::Every, || Uuid::from_u128(9)).unwrap();
        assert_eq!((id, next, log.len()), (Uuid::from_u128(5), 6, 5));
        assert_eq!(log.oldest(), Some((1, 1001)));
        for _ in 0..5 {
            log.trim_oldest().unwrap();
        }
        assert_eq!(log.len(), 0);
        crashed.flush().unwrap();
        let again = crashed.crash_and_reopen().unwrap();
        let (_, next, log) = open(&again, Durability::Every, || Uuid::from_u128(9)).unwrap();
        assert_eq!(
            (next, log.len()),
            (6, 0),
            "the trim mark keeps the sequence"
        );
    }

    #[test]
    fn a_bad_record_is_corrupt_not_a_panic() {
        let store = Store::memory();
        let (_, _, log) = open(&store, Durability::None, Uuid::nil).unwrap();
        store
            .tree(TREE)
            .unwrap()
            .insert(&1u64.to_be_bytes(), vec![1, 2])
            .unwrap();
        let err = log.range(1, 10).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    tree: "published",
                    ..
                }
            ),
            "{err}"
        );
        store.tree(TREE).unwrap().insert(b"short", vec![1]).unwrap();
        assert!(open(&store, Durability::None, Uuid::nil).is_err());
    }
}
