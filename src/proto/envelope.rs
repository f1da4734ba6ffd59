//! The bosun message envelope: id, attempt, creation time, headers and body, as
//! MessagePack behind a 4-byte magic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EnvelopeError;

/// First four bytes of every encoded envelope. A frame without them is not an envelope,
/// so a foreign peer's plain body is never mistaken for one.
pub const MAGIC: &[u8; 4] = b"BSN1";

/// Largest encoded envelope [`Envelope::decode`] accepts: 64 MiB. Larger frames are
/// rejected before any parsing, so a peer cannot make a receiver allocate without bound.
pub const MAX_ENVELOPE_BYTES: usize = 64 << 20;

/// One application message as bosun carries it.
///
/// The `id` is the same on every attempt of a message (receivers deduplicate on it);
/// `attempt` counts sends from 1, so replies can be matched to the attempt they answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Message id, a UUID v7: unique and ordered by creation time.
    pub id: Uuid,
    /// Which send of this message this is, from 1.
    pub attempt: u32,
    /// When the message was created, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Free-form metadata. Empty by default; costs one byte when empty.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The application payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Envelope {
    /// A new envelope for `body` with a fresh UUID v7, attempt 1 and the current time.
    pub fn new(body: Vec<u8>) -> Self {
        let id = Uuid::now_v7();
        let created_at_ms = id
            .get_timestamp()
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                secs * 1000 + u64::from(nanos) / 1_000_000
            })
            .unwrap_or(0);
        Envelope {
            id,
            attempt: 1,
            created_at_ms,
            headers: BTreeMap::new(),
            body,
        }
    }

    /// A reply to `self`: same id and attempt, so the sender can match it, new body.
    pub fn reply(&self, body: Vec<u8>) -> Self {
        Envelope {
            id: self.id,
            attempt: self.attempt,
            created_at_ms: self.created_at_ms,
            headers: BTreeMap::new(),
            body,
        }
    }

    /// Encodes as `MAGIC` followed by MessagePack (a map with named fields, so later
    /// versions can add fields without breaking older readers).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 48 + self.body.len());
        out.extend_from_slice(MAGIC);
        // Writing to a Vec cannot fail, and every field type is serializable.
        rmp_serde::encode::write_named(&mut out, self).expect("encoding into a Vec cannot fail");
        out
    }

    /// Decodes a frame made by [`Envelope::encode`]. Anything else is a typed error,
    /// never a panic, and never an allocation larger than the frame.
    pub fn decode(frame: &[u8]) -> Result<Self, EnvelopeError> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                len: frame.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let payload = frame
            .strip_prefix(MAGIC.as_slice())
            .ok_or(EnvelopeError::BadMagic { len: frame.len() })?;
        rmp_serde::from_slice(payload).map_err(|e| EnvelopeError::Decode(e.to_string()))
    }

    /// The id of an encoded envelope, read without decoding the rest (routers match
    /// replies by id on every message). The fast path reads the layout
    /// [`Envelope::encode`] writes (a 5-entry map whose first entry is `id` as 16 bytes of
    /// bin); anything else falls back to a MessagePack decode of the `id` field alone.
    /// `None` when `frame` is not an envelope.
    pub fn peek_id(frame: &[u8]) -> Option<Uuid> {
        const FAST: &[u8] = &[0x85, 0xa2, b'i', b'd', 0xc4, 0x10];
        let payload = frame.strip_prefix(MAGIC.as_slice())?;
        if let Some(bytes) = payload.strip_prefix(FAST).and_then(|r| r.get(..16)) {
            return Uuid::from_slice(bytes).ok();
        }
        #[derive(Deserialize)]
        struct IdOnly {
            id: Uuid,
        }
        rmp_serde::from_slice::<IdOnly>(payload).ok().map(|e| e.id)
    }

    /// True when `frame` starts with the envelope magic (a cheap check before decoding).
    pub fn looks_like(frame: &[u8]) -> bool {
        frame.starts_with(MAGIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let mut e = Envelope::new(b"hello".to_vec());
        e.attempt = 3;
        e.headers.insert("k".into(), "v".into());
        let bytes = e.encode();
        assert!(Envelope::looks_like(&bytes));
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        assert_eq!(e.id.get_version_num(), 7);
        assert!(e.created_at_ms > 1_600_000_000_000);
    }

    #[test]
    fn reply_keeps_id_and_attempt() {
        let mut e = Envelope::new(b"q".to_vec());
        e.attempt = 2;
        let r = e.reply(b"a".to_vec());
        assert_eq!((r.id, r.attempt, r.body.as_slice()), (e.id, 2, &b"a"[..]));
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert!(matches!(
            Envelope::decode(b""),
            Err(EnvelopeError::BadMagic { len: 0 })
        ));
        assert!(matches!(
            Envelope::decode(b"hello world"),
            Err(EnvelopeError::BadMagic { .. })
        ));
        assert!(matches!(
            Envelope::decode(b"BSN1\xc1\xff"),
            Err(EnvelopeError::Decode(_))
        ));
        let mut truncated = Envelope::new(vec![7; 100]).encode();
        truncated.truncate(60);
        assert!(matches!(
            Envelope::decode(&truncated),
            Err(EnvelopeError::Decode(_))
        ));
        // A header claiming a 4 GiB body must not allocate it.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0x85, 0xc6, 0xff, 0xff, 0xff, 0xff]);
        assert!(Envelope::decode(&huge).is_err());
        let big = vec![0u8; MAX_ENVELOPE_BYTES + 1];
        assert!(matches!(
            Envelope::decode(&big),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn peek_id_reads_the_id_without_decoding() {
        let mut e = Envelope::new(vec![1; 300]);
        e.headers.insert("k".into(), "v".into());
        assert_eq!(Envelope::peek_id(&e.encode()), Some(e.id));
        assert_eq!(Envelope::peek_id(b"plain body"), None);
        assert_eq!(Envelope::peek_id(b"BSN1"), None);
        assert_eq!(Envelope::peek_id(b"BSN1\x85\xa2id\xc4\x10short"), None);
        // Another field order (a foreign encoder) takes the slow path.
        #[derive(Serialize)]
        struct Reordered<'a> {
            attempt: u32,
            id: Uuid,
            #[serde(with = "serde_bytes")]
            body: &'a [u8],
        }
        let mut other = MAGIC.to_vec();
        rmp_serde::encode::write_named(
            &mut other,
            &Reordered {
                attempt: 1,
                id: e.id,
                body: b"x",
            },
        )
        .unwrap();
        assert_eq!(Envelope::peek_id(&other), Some(e.id));
    }

    proptest! {
        #[test]
        fn peek_id_agrees_with_decode(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let e = Envelope::new(body);
            prop_assert_eq!(Envelope::peek_id(&e.encode()), Some(e.id));
        }

        #[test]
        fn decode_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut frame = MAGIC.to_vec();
            frame.extend_from_slice(&tail);
            let _ = Envelope::decode(&frame);
            let _ = Envelope::decode(&tail);
        }
    }
}
