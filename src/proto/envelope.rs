//! bosun's message on the wire: the application's payload frames, unchanged, followed by
//! one metadata frame that a foreign peer can ignore.
//!
//! ```text
//! [payload frame 1]...[payload frame N][metadata]
//! ```
//!
//! The metadata frame has a fixed binary layout (all integers big-endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FF 42 53 4E` (`\xffBSN`; `0xFF` never starts valid UTF-8 text) |
//! | 4 | 1 | layout version, 1 |
//! | 5 | 1 | [`Status`]: 0 ok, 1 handler error, 2 refused |
//! | 6 | 1 | flags, 0 (reserved) |
//! | 7 | 1 | length of the fixed part, [`FIXED_LEN`] (44) in version 1 |
//! | 8 | 16 | message id (UUID v7) |
//! | 24 | 4 | attempt, from 1 |
//! | 28 | 8 | created at, ms since the Unix epoch |
//! | 36 | 8 | deadline, ms since the Unix epoch; 0 = none |
//! | fixed length | 2 | number of headers |
//! | then | | per header: key length (2), key (UTF-8), value length (4), value (UTF-8) |
//!
//! The id sits at offset 8 in every version: a later version may add fields to the fixed
//! part only at its end (and raise byte 7), so [`peek_id`] and older readers keep
//! working; a reader skips fixed bytes it does not know by byte 7.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::frames::Frames;
use crate::error::EnvelopeError;

/// First four bytes of every metadata frame.
pub const MAGIC: [u8; 4] = [0xFF, b'B', b'S', b'N'];
/// The layout version this code writes.
pub const VERSION: u8 = 1;
/// Length of the fixed part of a version-1 metadata frame.
pub const FIXED_LEN: usize = 44;
/// Offset of the 16-byte id in every version.
pub const ID_OFFSET: usize = 8;
/// Offset of the 4-byte attempt in every version.
pub const ATTEMPT_OFFSET: usize = 24;
/// Offset of the 8-byte deadline in every version.
pub const DEADLINE_OFFSET: usize = 36;
/// Largest metadata frame accepted: 64 KiB of headers is far beyond any real use, and
/// bounds what a peer can make a receiver parse.
pub const MAX_META_BYTES: usize = 64 << 10;
/// Largest payload (all frames together) a bosun client sends: 64 MiB. A bound socket
/// refuses larger frames (`ZMQ_MAXMSGSIZE`), so a larger request could never arrive.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// What a reply says about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
#[non_exhaustive]
pub enum Status {
    /// A request, or a reply whose payload is the handler's answer.
    #[default]
    Ok = 0,
    /// The handler failed (an error, a panic, a failed command); the payload is one
    /// frame with its message.
    Error = 1,
    /// The peer refused the request without handling it (a full queue, say); the
    /// payload is one frame with the reason.
    Refused = 2,
}

impl Status {
    fn from_byte(b: u8) -> Result<Self, EnvelopeError> {
        match b {
            0 => Ok(Status::Ok),
            1 => Ok(Status::Error),
            2 => Ok(Status::Refused),
            other => Err(EnvelopeError::Field {
                field: "status",
                reason: format!("unknown value {other}"),
            }),
        }
    }
}

/// bosun's metadata of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Message id, a UUID v7: the same on every attempt of a message.
    pub id: Uuid,
    /// Which send of this message this is, from 1; a reply carries its request's.
    pub attempt: u32,
    /// When the message was created, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When the sender stops waiting for it, in ms since the Unix epoch (None: never).
    pub deadline_ms: Option<u64>,
    /// What a reply says about its request; [`Status::Ok`] on requests.
    pub status: Status,
    /// Free-form metadata; costs two bytes when empty.
    pub headers: BTreeMap<String, String>,
}

impl Meta {
    /// Metadata of a new message: attempt 1, no deadline, no headers. The id and the
    /// time come from the caller (the drivers read the clock and the RNG, never this).
    pub fn new(id: Uuid, created_at_ms: u64) -> Self {
        Meta {
            id,
            attempt: 1,
            created_at_ms,
            deadline_ms: None,
            status: Status::Ok,
            headers: BTreeMap::new(),
        }
    }

    /// The metadata of a reply to this request: same id and attempt, `status`.
    pub fn reply(&self, status: Status) -> Self {
        Meta {
            id: self.id,
            attempt: self.attempt,
            created_at_ms: self.created_at_ms,
            deadline_ms: None,
            status,
            headers: BTreeMap::new(),
        }
    }

    /// The metadata frame.
    pub fn encode(&self) -> Vec<u8> {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| 6 + k.len() + v.len())
            .sum();
        let mut out = Vec::with_capacity(FIXED_LEN + 2 + headers);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&[VERSION, self.status as u8, 0, FIXED_LEN as u8]);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.attempt.to_be_bytes());
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        out.extend_from_slice(&self.deadline_ms.unwrap_or(0).to_be_bytes());
        // Header counts and lengths past the u16/u32 range cannot be written; such a
        // header set would exceed MAX_META_BYTES anyway, and is cut here rather than
        // written corrupt.
        let count = self.headers.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(count as u16).to_be_bytes());
        for (k, v) in self.headers.iter().take(count) {
            let k = &k.as_bytes()[..k.len().min(usize::from(u16::MAX))];
            let v = &v.as_bytes()[..v.len().min(u32::MAX as usize)];
            out.extend_from_slice(&(k.len() as u16).to_be_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Whether `frame` is meant as a metadata frame (starts with the magic). A frame
    /// that is but does not decode is malformed metadata, not payload.
    pub fn looks_like(frame: &[u8]) -> bool {
        frame.starts_with(&MAGIC)
    }

    /// Decodes a metadata frame. Anything else is a typed error, never a panic, and
    /// never an allocation larger than the frame.
    pub fn decode(frame: &[u8]) -> Result<Self, EnvelopeError> {
        if frame.len() > MAX_META_BYTES {
            return Err(EnvelopeError::TooLarge {
                len: frame.len(),
                max: MAX_META_BYTES,
            });
        }
        if !Self::looks_like(frame) {
            return Err(EnvelopeError::BadMagic { len: frame.len() });
        }
        let mut r = Reader { frame, at: 4 };
        let version = r.u8()?;
        if version == 0 {
            return Err(field("version", "0 is not a version"));
        }
        let status = Status::from_byte(r.u8()?)?;
        let _flags = r.u8()?;
        let fixed = usize::from(r.u8()?);
        if fixed < FIXED_LEN {
            return Err(field(
                "fixed length",
                format!("{fixed} is below {FIXED_LEN}"),
            ));
        }
        let id = Uuid::from_bytes(r.array()?);
        let attempt = u32::from_be_bytes(r.array()?);
        let created_at_ms = u64::from_be_bytes(r.array()?);
        let deadline = u64::from_be_bytes(r.array()?);
        // Fields of a later version that this one does not know.
        r.take(fixed - FIXED_LEN)?;
        let count = u16::from_be_bytes(r.array()?);
        let mut headers = BTreeMap::new();
        for _ in 0..count {
            let klen = usize::from(u16::from_be_bytes(r.array()?));
            let key = r.text(klen, "header key")?;
            let vlen = u32::from_be_bytes(r.array()?) as usize;
            let value = r.text(vlen, "header value")?;
            headers.insert(key, value);
        }
        Ok(Meta {
            id,
            attempt,
            created_at_ms,
            deadline_ms: (deadline != 0).then_some(deadline),
            status,
            headers,
        })
    }
}

/// Reads fields off a metadata frame without ever indexing out of range.
struct Reader<'a> {
    frame: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.frame.len());
        let Some(end) = end else {
            return Err(EnvelopeError::Truncated {
                len: self.frame.len(),
                needed: self.at.saturating_add(n),
            });
        };
        let out = &self.frame[self.at..end]; // in range: checked just above
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0]) // `take(1)` returned exactly one byte
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EnvelopeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn text(&mut self, n: usize, what: &'static str) -> Result<String, EnvelopeError> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| field(what, "not UTF-8"))
    }
}

fn field(field: &'static str, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Field {
        field,
        reason: reason.into(),
    }
}

/// The id of a message whose last frame is a metadata frame, read from the fixed
/// layout without decoding anything else (routers match replies by id on every
/// message). `None` when the message carries no metadata.
pub fn peek_id(frames: &[Vec<u8>]) -> Option<Uuid> {
    let last = frames.last()?;
    if !Meta::looks_like(last) || last.len() < FIXED_LEN {
        return None;
    }
    let bytes: [u8; 16] = last.get(ID_OFFSET..ID_OFFSET + 16)?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

/// The fixed part of the metadata frame that ends `frames`, if it has one: the frame
/// starts with the magic and is long enough for every version-1 field.
fn fixed_part(frames: &[Vec<u8>]) -> Option<&[u8; FIXED_LEN]> {
    let last = frames.last()?;
    if !Meta::looks_like(last) {
        return None;
    }
    last.get(..FIXED_LEN)?.try_into().ok()
}

/// A big-endian field of `N` bytes at `offset` of a fixed part.
fn be_field<const N: usize>(fixed: &[u8; FIXED_LEN], offset: usize) -> Option<[u8; N]> {
    fixed.get(offset..offset + N)?.try_into().ok()
}

/// The attempt of a message whose last frame is a metadata frame, read from the fixed
/// layout like [`peek_id`]. `None` when the message carries no metadata.
pub fn peek_attempt(frames: &[Vec<u8>]) -> Option<u32> {
    let fixed = fixed_part(frames)?;
    be_field(fixed, ATTEMPT_OFFSET).map(u32::from_be_bytes)
}

/// The deadline (ms since the Unix epoch) of a message whose last frame is a metadata
/// frame, read from the fixed layout like [`peek_id`]. `None` when the message carries
/// no metadata or its deadline is 0 (none).
pub fn peek_deadline(frames: &[Vec<u8>]) -> Option<u64> {
    let fixed = fixed_part(frames)?;
    be_field(fixed, DEADLINE_OFFSET)
        .map(u64::from_be_bytes)
        .filter(|&d| d != 0)
}

/// Writes `attempt` into the metadata frame `frame` in place (the field has a fixed
/// offset in every version, so nothing else is decoded or moved). Returns false, and
/// leaves the frame as it was, when `frame` is not a metadata frame or is too short to
/// hold the fixed part. A router uses it to answer the latest attempt of a retried
/// request with the reply to its first copy.
pub fn set_attempt(frame: &mut [u8], attempt: u32) -> bool {
    if !Meta::looks_like(frame) || frame.len() < FIXED_LEN {
        return false;
    }
    match frame.get_mut(ATTEMPT_OFFSET..ATTEMPT_OFFSET + 4) {
        Some(field) => {
            field.copy_from_slice(&attempt.to_be_bytes());
            true
        }
        None => false,
    }
}

/// A message: payload frames and, from a bosun peer, its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// bosun's metadata.
    pub meta: Meta,
    /// The application's frames, exactly as sent.
    pub payload: Frames,
}

impl Envelope {
    /// A new request of `payload` with the given id and creation time, attempt 1.
    pub fn new(id: Uuid, created_at_ms: u64, payload: Frames) -> Self {
        Envelope {
            meta: Meta::new(id, created_at_ms),
            payload,
        }
    }

    /// The message id.
    pub fn id(&self) -> Uuid {
        self.meta.id
    }

    /// The frames on the wire: the payload, then the metadata frame.
    pub fn encode(&self) -> Frames {
        let mut out = Vec::with_capacity(self.payload.len() + 1);
        out.extend(self.payload.iter().cloned());
        out.push(self.meta.encode());
        out
    }

    /// [`Envelope::encode`], consuming the envelope (no copy of the payload).
    pub fn into_frames(self) -> Frames {
        let mut out = self.payload;
        out.push(self.meta.encode());
        out
    }

    /// A reply to this request: same id and attempt, status ok, `payload`.
    pub fn reply(&self, payload: Frames) -> Envelope {
        Envelope {
            meta: self.meta.reply(Status::Ok),
            payload,
        }
    }

    /// Total payload bytes.
    pub fn payload_len(&self) -> usize {
        self.payload.iter().map(Vec::len).sum()
    }

    /// Splits a message into payload and metadata. A message whose last frame is not a
    /// metadata frame is all payload (a foreign peer's); one whose last frame starts with
    /// the magic but does not decode is an error.
    pub fn split(mut frames: Frames) -> Result<(Frames, Option<Meta>), EnvelopeError> {
        match frames.last() {
            Some(last) if Meta::looks_like(last) => {
                let meta = Meta::decode(last)?;
                frames.pop();
                Ok((frames, Some(meta)))
            }
            _ => Ok((frames, None)),
        }
    }

    /// Decodes a message that must carry metadata.
    pub fn decode(frames: Frames) -> Result<Envelope, EnvelopeError> {
        let len = frames.last().map_or(0, Vec::len);
        match Self::split(frames)? {
            (payload, Some(meta)) => Ok(Envelope { meta, payload }),
            (_, None) => Err(EnvelopeError::BadMagic { len }),
        }
    }
}

/// Why a handler did not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// What went wrong, in words; a bosun client receives it as a remote error.
    pub message: String,
}

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }
}

/// What a handler returns: the reply's payload frames, or why there is none.
pub type Reply = Result<Frames, HandlerError>;

/// Prefix of the one-frame reply a foreign requester (one that sent no metadata) gets
/// when the handler fails: it has no metadata frame to read a status from.
pub const FOREIGN_ERROR_PREFIX: &[u8] = b"error: ";

/// A request as a worker or server hands it to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// bosun's metadata; `None` when the request came from a foreign peer.
    pub meta: Option<Meta>,
    /// The service it was sent to (Majordomo), if any.
    pub service: Option<Vec<u8>>,
    /// The application's frames, exactly as sent.
    pub payload: Frames,
}

impl Request {
    /// Reads a request off the wire: its payload frames and, if the last frame is a
    /// valid metadata frame, its metadata. A last frame that looks like metadata but
    /// does not decode is handed over as payload, with the error.
    pub fn parse(service: Option<Vec<u8>>, frames: Frames) -> (Request, Option<EnvelopeError>) {
        let bad = frames
            .last()
            .filter(|f| Meta::looks_like(f))
            .and_then(|f| Meta::decode(f).err());
        if let Some(e) = bad {
            let request = Request {
                meta: None,
                service,
                payload: frames,
            };
            return (request, Some(e));
        }
        // A last frame that fails to decode was handled above, so this is `Ok`.
        let (payload, meta) = Envelope::split(frames).unwrap_or_default();
        (
            Request {
                meta,
                service,
                payload,
            },
            None,
        )
    }

    /// The message id, when a bosun peer sent it.
    pub fn id(&self) -> Option<Uuid> {
        self.meta.as_ref().map(|m| m.id)
    }

    /// The attempt, from 1 (1 for a foreign peer's request, which says nothing).
    pub fn attempt(&self) -> u32 {
        self.meta.as_ref().map_or(1, |m| m.attempt)
    }

    /// The headers (empty for a foreign peer's request).
    pub fn header(&self, key: &str) -> Option<&str> {
        self.meta
            .as_ref()
            .and_then(|m| m.headers.get(key))
            .map(String::as_str)
    }

    /// The payload frames joined into one buffer (most handlers want bytes).
    pub fn body(&self) -> Vec<u8> {
        self.payload.concat()
    }
}

/// The frames that answer a request whose metadata was `meta`, given the handler's
/// `reply`. A bosun requester gets the payload (or the error message) and a metadata
/// frame with the request's id and attempt and the status; a foreign one gets the plain
/// payload, or on failure one frame [`FOREIGN_ERROR_PREFIX`] + message.
pub fn answer(meta: Option<&Meta>, reply: Reply) -> Frames {
    match (meta, reply) {
        (Some(m), Ok(mut payload)) => {
            payload.push(m.reply(Status::Ok).encode());
            payload
        }
        (Some(m), Err(e)) => vec![e.message.into_bytes(), m.reply(Status::Error).encode()],
        (None, Ok(payload)) => payload,
        (None, Err(e)) => vec![[FOREIGN_ERROR_PREFIX, e.message.as_bytes()].concat()],
    }
}

/// The answer a requester gets from a peer that refused its request unhandled.
pub fn refusal(meta: Option<&Meta>, reason: &str) -> Frames {
    match meta {
        Some(m) => vec![
            reason.as_bytes().to_vec(),
            m.reply(Status::Refused).encode(),
        ],
        None => vec![[FOREIGN_ERROR_PREFIX, reason.as_bytes()].concat()],
    }
}

/// What a client made of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The handler's payload.
    Ok(Frames),
    /// The handler failed, or the request was refused: the peer's message.
    Failed {
        /// Which status the reply carried.
        status: Status,
        /// The peer's message.
        message: String,
    },
}

impl Answer {
    /// Reads the payload and status of a reply carrying `meta`.
    pub fn from_reply(status: Status, payload: Frames) -> Answer {
        match status {
            Status::Ok => Answer::Ok(payload),
            other => Answer::Failed {
                status: other,
                message: String::from_utf8_lossy(&payload.concat()).into_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn round_trip_with_headers_and_deadline() {
        let mut m = Meta::new(id(7), 1_700_000_000_000);
        m.attempt = 3;
        m.deadline_ms = Some(1_700_000_005_000);
        m.headers.insert("k".into(), "v".into());
        m.headers.insert("trace".into(), "abc".into());
        let frame = m.encode();
        assert!(Meta::looks_like(&frame));
        assert_eq!(Meta::decode(&frame).unwrap(), m);
        assert_eq!(frame.len(), FIXED_LEN + 2 + (6 + 1 + 1) + (6 + 5 + 3));
    }

    #[test]
    fn the_id_is_at_a_fixed_offset_whatever_follows() {
        let mut m = Meta::new(id(42), 1);
        m.headers.insert("x".repeat(300), "y".repeat(3000));
        let mut frames = vec![b"payload".to_vec(), m.encode()];
        assert_eq!(peek_id(&frames), Some(id(42)));
        // A later version with a longer fixed part: the id is still found, the rest skipped.
        let mut later = m.encode();
        later[7] = (FIXED_LEN + 4) as u8;
        later.splice(FIXED_LEN..FIXED_LEN, [9, 9, 9, 9]);
        assert_eq!(Meta::decode(&later).unwrap(), m);
        frames[1] = later;
        assert_eq!(peek_id(&frames), Some(id(42)));
        assert_eq!(peek_id(&[b"plain".to_vec()]), None);
        assert_eq!(peek_id(&[]), None);
        assert_eq!(peek_id(&[MAGIC.to_vec()]), None);
    }

    #[test]
    fn attempt_and_deadline_are_read_and_the_attempt_rewritten_in_place() {
        let mut m = Meta::new(id(3), 1_700_000_000_000);
        m.attempt = 1;
        m.deadline_ms = Some(1_700_000_009_000);
        m.headers.insert("k".into(), "v".into());
        let mut frames = vec![b"p".to_vec(), m.encode()];
        assert_eq!(peek_attempt(&frames), Some(1));
        assert_eq!(peek_deadline(&frames), Some(1_700_000_009_000));
        assert!(set_attempt(&mut frames[1], 4));
        // Only the attempt changed: everything else decodes as before.
        let back = Meta::decode(&frames[1]).unwrap();
        assert_eq!(
            back,
            Meta {
                attempt: 4,
                ..m.clone()
            }
        );
        assert_eq!(peek_attempt(&frames), Some(4));
        assert_eq!(peek_id(&frames), Some(id(3)));
        // No deadline reads as none; frames that are not metadata are left alone.
        let plain = Meta::new(id(1), 1).encode();
        assert_eq!(peek_deadline(&[plain]), None);
        for mut not_meta in [b"payload".to_vec(), MAGIC.to_vec(), Vec::new()] {
            let before = not_meta.clone();
            assert!(!set_attempt(&mut not_meta, 9));
            assert_eq!(not_meta, before);
            assert_eq!(peek_attempt(&[not_meta.clone()]), None);
            assert_eq!(peek_deadline(&[not_meta]), None);
        }
        let mut short = m.encode()[..FIXED_LEN - 1].to_vec();
        assert!(!set_attempt(&mut short, 9));
        assert_eq!(peek_attempt(&[]), None);
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert!(matches!(
            Meta::decode(b""),
            Err(EnvelopeError::BadMagic { len: 0 })
        ));
        assert!(matches!(
            Meta::decode(b"hello world"),
            Err(EnvelopeError::BadMagic { .. })
        ));
        let good = Meta::new(id(1), 1).encode();
        for cut in 0..good.len() {
            assert!(Meta::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_status = good.clone();
        bad_status[5] = 9;
        assert!(matches!(
            Meta::decode(&bad_status),
            Err(EnvelopeError::Field {
                field: "status",
                ..
            })
        ));
        let mut short_fixed = good.clone();
        short_fixed[7] = 10;
        assert!(Meta::decode(&short_fixed).is_err());
        // A header claiming 4 GiB must not allocate it.
        let mut huge = good[..FIXED_LEN].to_vec();
        huge.extend_from_slice(&[0, 1, 0, 1, b'k', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Meta::decode(&huge),
            Err(EnvelopeError::Truncated { .. })
        ));
        let big = [MAGIC.to_vec(), vec![0; MAX_META_BYTES]].concat();
        assert!(matches!(
            Meta::decode(&big),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn foreign_messages_are_all_payload() {
        let frames = vec![b"a".to_vec(), b"b".to_vec()];
        assert_eq!(Envelope::split(frames.clone()).unwrap(), (frames, None));
        let (req, err) = Request::parse(None, vec![b"x".to_vec(), MAGIC.to_vec()]);
        assert!(err.is_some());
        assert_eq!(req.payload.len(), 2);
        assert_eq!(req.attempt(), 1);
    }

    #[test]
    fn answers_mirror_the_request() {
        let m = Meta::new(id(5), 10);
        let ok = answer(Some(&m), Ok(vec![b"A".to_vec(), b"B".to_vec()]));
        let e = Envelope::decode(ok).unwrap();
        assert_eq!(
            (e.meta.id, e.meta.status, e.payload.len()),
            (id(5), Status::Ok, 2)
        );
        let failed = Envelope::decode(answer(Some(&m), Err(HandlerError::new("boom")))).unwrap();
        assert_eq!(
            Answer::from_reply(failed.meta.status, failed.payload),
            Answer::Failed {
                status: Status::Error,
                message: "boom".into()
            }
        );
        assert_eq!(answer(None, Ok(vec![b"p".to_vec()])), vec![b"p".to_vec()]);
        assert_eq!(
            answer(None, Err(HandlerError::new("no"))),
            vec![b"error: no".to_vec()]
        );
    }

    proptest! {
        #[test]
        fn payload_frames_round_trip_with_their_metadata(
            payload in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6),
            raw_id in any::<u128>(),
            attempt in 1u32..1000,
            created in any::<u64>(),
            deadline in proptest::option::of(1u64..u64::MAX),
            headers in proptest::collection::btree_map("[a-z]{0,8}", "\\PC{0,16}", 0..4),
        ) {
            let mut e = Envelope::new(Uuid::from_u128(raw_id), created, payload.clone());
            e.meta.attempt = attempt;
            e.meta.deadline_ms = deadline;
            e.meta.headers = headers;
            let frames = e.encode();
            prop_assert_eq!(frames.len(), payload.len() + 1);
            prop_assert_eq!(&frames[..payload.len()], &payload[..]);
            prop_assert_eq!(peek_id(&frames), Some(e.meta.id));
            prop_assert_eq!(Envelope::decode(frames).unwrap(), e);
        }

        #[test]
        fn decode_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let frame = [MAGIC.as_slice(), &tail].concat();
            let _ = Meta::decode(&frame);
            let _ = Meta::decode(&tail);
            let _ = peek_id(&[frame]);
        }
    }
}
