//! Requests given up on, kept for a person to inspect, re-send or delete (`bosun dlq`).
//!
//! A dead letter is written by the peer that gave up: a worker whose handler failed
//! `--max-attempts` times, a broker after `--max-deliveries` deliveries that killed
//! their workers, a client after all its retries. [`DeadLetters::put`] flushes before it
//! returns, so a request moved from an outbox to the dead letters (put, then ack) is
//! never lost in between: the store keeps writes in order, so a crash that keeps the ack
//! keeps the put.
//!
//! # Record layout (version 1)
//! Key: the message id (16 bytes). Value (see `codec` for items):
//!
//! | field | layout |
//! | --- | --- |
//! | version | 1 byte, 1 |
//! | reason | 1 byte, [`DeadReason`] code |
//! | at | 8, ms since the Unix epoch |
//! | attempts | 4 |
//! | service | optional bytes |
//! | payload | frames |
//! | last error | bytes (UTF-8) |

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::codec::{self, Reader, Writer};
use super::{DecodeError, StoreError, Tree};
use crate::proto::frames::Frames;

/// The dead letters' tree.
pub(crate) const TREE: &str = "dead_letters";
const VERSION: u8 = 1;

/// Why a request was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum DeadReason {
    /// Its handler failed (an error, a panic, a failed command, a timeout) on every
    /// attempt allowed.
    HandlerFailed = 1,
    /// The client gave up after all its retries without a reply.
    GaveUp = 2,
    /// Poison: it was in flight on too many workers that died with it.
    Poison = 3,
    /// Its deadline passed before it could be handled.
    Expired = 4,
    /// Its peer refused it unhandled (a full queue, a deadline passed on arrival).
    Refused = 5,
}

impl DeadReason {
    /// Every reason, in code order.
    pub const ALL: [DeadReason; 5] = [
        DeadReason::HandlerFailed,
        DeadReason::GaveUp,
        DeadReason::Poison,
        DeadReason::Expired,
        DeadReason::Refused,
    ];

    /// A short name for the command line and JSON: `handler-failed`, `gave-up`,
    /// `poison`, `expired`, `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::HandlerFailed => "handler-failed",
            DeadReason::GaveUp => "gave-up",
            DeadReason::Poison => "poison",
            DeadReason::Expired => "expired",
            DeadReason::Refused => "refused",
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == code)
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeadReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown reason {s:?}: expected handler-failed, gave-up, poison, expired or refused")
            })
    }
}

/// A request given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message id.
    pub id: Uuid,
    /// The service it was for (Majordomo), if any.
    pub service: Option<Vec<u8>>,
    /// The application's frames, as sent.
    pub payload: Frames,
    /// How many times it was tried (handled, delivered or sent, by `reason`).
    pub attempts: u32,
    /// The last failure, in words (empty when there was none, such as for a timeout).
    pub last_error: String,
    /// Why it was given up on.
    pub reason: DeadReason,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
}

impl DeadLetter {
    /// The stored value (the key is the id).
    pub fn encode(&self) -> Vec<u8> {
        let size = 1
            + 1
            + 8
            + 4
            + codec::opt_bytes_size(self.service.as_deref())
            + codec::frames_size(&self.payload)
            + 4
            + self.last_error.len();
        let mut w = Writer::new(VERSION, size);
        w.u8(self.reason as u8);
        w.u64(self.at_ms);
        w.u32(self.attempts);
        w.opt_bytes(self.service.as_deref());
        w.frames(&self.payload);
        w.bytes(self.last_error.as_bytes());
        w.finish()
    }

    /// Decodes the value stored at `key`: exactly what [`DeadLetter::encode`] wrote, or
    /// an error; never a panic.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self, DecodeError> {
        let id = codec::id_key(key)?;
        let mut r = Reader::new(value, VERSION)?;
        let code = r.u8("reason")?;
        let reason = DeadReason::from_code(code)
            .ok_or_else(|| DecodeError::new(format!("unknown reason code {code}")))?;
        let at_ms = r.u64("at")?;
        let attempts = r.u32("attempts")?;
        let service = r.opt_bytes("service")?;
        let payload = r.frames("payload")?;
        let last_error = r.text("last error")?;
        r.finish()?;
        Ok(DeadLetter {
            id,
            service,
            payload,
            attempts,
            last_error,
            reason,
            at_ms,
        })
    }
}

/// A peer's dead letters, in id order.
pub struct DeadLetters {
    tree: Tree,
}

impl fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetters").finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub(crate) fn new(tree: Tree) -> Self {
        DeadLetters { tree }
    }

    /// Stores `letter` (replacing one with its id) and flushes before returning.
    pub fn put(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.tree.insert(letter.id.as_bytes(), letter.encode())?;
        self.tree.flush()
    }

    /// The dead letter `id`, if any.
    pub fn get(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
        let key = id.as_bytes();
        match self.tree.get(key)? {
            None => Ok(None),
            Some(v) => DeadLetter::decode(key, &v)
                .map(Some)
                .map_err(|e| self.tree.corrupt(key, e)),
        }
    }

    /// Every dead letter, in id order (creation order of the requests).
    pub fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        self.tree.for_each(|k, v| {
            out.push(DeadLetter::decode(k, v).map_err(|e| self.tree.corrupt(k, e))?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes the dead letter `id` (after a replay, say), flushed; whether it was there.
    pub fn remove(&self, id: Uuid) -> Result<bool, StoreError> {
        let removed = self.tree.remove(id.as_bytes())?;
        if removed {
            self.tree.flush()?;
        }
        Ok(removed)
    }

    /// Deletes every dead letter, flushed; how many there were. Entries that do not
    /// decode are deleted too.
    pub fn purge(&self) -> Result<usize, StoreError> {
        let mut keys = Vec::new();
        self.tree.for_each(|k, _| {
            keys.push(k.to_vec());
            Ok(())
        })?;
        for k in &keys {
            self.tree.remove(k)?;
        }
        if !keys.is_empty() {
            self.tree.flush()?;
        }
        Ok(keys.len())
    }

    /// How many dead letters there are.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TestDir;
    use super::super::Store;
    use super::*;
    use proptest::prelude::*;

    fn letter(n: u128, reason: DeadReason) -> DeadLetter {
        DeadLetter {
            id: Uuid::from_u128(n),
            service: Some(b"echo".to_vec()),
            payload: vec![b"a".to_vec(), vec![]],
            attempts: 3,
            last_error: "exit status: 3 — ünïcode".into(),
            reason,
            at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn reasons_have_stable_codes_and_names() {
        let codes: Vec<u8> = DeadReason::ALL.iter().map(|r| *r as u8).collect();
        assert_eq!(codes, [1, 2, 3, 4]);
        for r in DeadReason::ALL {
            assert_eq!(r.to_string().parse::<DeadReason>(), Ok(r));
            assert_eq!(DeadReason::from_code(r as u8), Some(r));
        }
        assert!("poisoned".parse::<DeadReason>().is_err());
        assert_eq!(DeadReason::from_code(0), None);
    }

    #[test]
    fn letters_round_trip_and_garbage_is_an_error() {
        for r in DeadReason::ALL {
            let l = letter(1, r);
            let bytes = l.encode();
            assert_eq!(bytes.capacity(), bytes.len());
            assert_eq!(DeadLetter::decode(l.id.as_bytes(), &bytes).unwrap(), l);
            for cut in 0..bytes.len() {
                assert!(DeadLetter::decode(l.id.as_bytes(), &bytes[..cut]).is_err());
            }
        }
        let mut bad = letter(1, DeadReason::Poison).encode();
        bad[1] = 9;
        let err = DeadLetter::decode(&[0; 16], &bad).unwrap_err();
        assert!(err.reason.contains("reason code 9"), "{err}");
    }

    #[test]
    fn put_list_get_remove_purge() {
        let dir = TestDir::new("dlq");
        {
            let store = Store::open(dir.path()).unwrap();
            let dlq = store.dead_letters().unwrap();
            dlq.put(&letter(3, DeadReason::GaveUp)).unwrap();
            dlq.put(&letter(1, DeadReason::HandlerFailed)).unwrap();
            dlq.put(&letter(2, DeadReason::Expired)).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let dlq = store.dead_letters().unwrap();
        let ids: Vec<u128> = dlq.list().unwrap().iter().map(|l| l.id.as_u128()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            dlq.get(Uuid::from_u128(2)).unwrap(),
            Some(letter(2, DeadReason::Expired))
        );
        assert!(dlq.remove(Uuid::from_u128(2)).unwrap());
        assert!(!dlq.remove(Uuid::from_u128(2)).unwrap());
        assert_eq!(dlq.len(), 2);
        assert_eq!(dlq.purge().unwrap(), 2);
        assert!(dlq.is_empty());
        assert_eq!(dlq.purge().unwrap(), 0);
    }

    #[test]
    fn put_is_durable_at_once_and_corrupt_entries_are_named() {
        let store = Store::memory();
        let dlq = store.dead_letters().unwrap();
        dlq.put(&letter(1, DeadReason::Poison)).unwrap();
        assert_eq!(store.unflushed_writes(), 0);
        let crashed = store.crash_and_reopen().unwrap();
        assert_eq!(crashed.dead_letters().unwrap().len(), 1);
        store.tree(TREE).unwrap().insert(&[7; 16], vec![1]).unwrap();
        let err = dlq.list().unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Corrupt {
                    tree: "dead_letters",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&"07".repeat(16)), "{err}");
        assert_eq!(dlq.purge().unwrap(), 2, "purge clears garbage too");
    }

    proptest! {
        #[test]
        fn decode_never_panics(value in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = DeadLetter::decode(&[0; 16], &value);
            let mut v = vec![VERSION, 1];
            v.extend_from_slice(&value);
            let _ = DeadLetter::decode(&[0; 16], &v);
        }
    }
}
