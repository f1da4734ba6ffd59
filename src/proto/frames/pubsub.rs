//! Reliable pub/sub frames (bosun's own protocol, `BSP`), parsed once at the edge.
//!
//! # On the PUB socket
//! - data: `[topic][payload frame 1]...[payload frame N][pubsub metadata]`, N >= 1;
//! - heartbeat: `[HEARTBEAT_TOPIC][pubsub metadata, kind heartbeat]`.
//!
//! A plain ZeroMQ SUB socket subscribing to a topic prefix gets the topic frame first,
//! the payload frames, and a trailing metadata frame it may ignore. The heartbeat topic
//! starts with 0xFF, which never starts UTF-8 text, so no text prefix matches it.
//!
//! # The pubsub metadata frame (integers big-endian)
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `FF 42 53 50` (`\xffBSP`) |
//! | 4 | 1 | version 1 |
//! | 5 | 1 | kind: 0 data, 1 heartbeat |
//! | 6 | 2 | heartbeat: the publisher's heartbeat interval, ms, saturating at 65535 (0: not said); data: 0 (ignored when read) |
//! | 8 | 16 | publisher id (UUID) |
//! | 24 | 8 | data: its sequence; heartbeat: the last sequence published (0 = none) |
//! | 32 | 8 | published at, ms since the Unix epoch |
//! | 40 | 8 | heartbeat: oldest sequence retained (0 = none); data: 0 |
//! | 48 | 2 | length L of the replay endpoint (heartbeat; 0 for data) |
//! | 50 | L | the replay endpoint, UTF-8 (heartbeat only) |
//!
//! # The replay channel (subscriber DEALER to publisher ROUTER)
//! Every command starts with the protocol frame [`PROTOCOL`] (`BSP-R1`), then the
//! command name in ASCII:
//! - `[BSP-R1][REPLAY][publisher 16][from u64][max u32]`, optionally followed by
//!   `[since u64]` (ms since the Unix epoch: start at the first retained message
//!   published at or after it, if that is later than `from`), and
//!   `[BSP-R1][ACK][publisher 16][seq u64][subscriber name]` (subscriber to publisher);
//! - `[BSP-R1][DATA][topic][payload...][metadata]`, `[BSP-R1][END][from u64][last u64]`,
//!   `[BSP-R1][TRIMMED][from u64][oldest u64]`, `[BSP-R1][UNKNOWN][publisher 16]`,
//!   `[BSP-R1][SINCE][from u64][first u64]` (the answer to a `REPLAY` with a time whose
//!   first message is later than `from`: ask again from `first`)
//!   (publisher to subscriber).
//!
//! Every parser returns a typed message or a [`ProtocolError`] saying what was expected
//! and what arrived; none indexes into peer data or panics.

use uuid::Uuid;

use super::wire::WireQueue;
use super::{preview, Frames};
use crate::error::ProtocolError;

const NAME: &str = "BSP";

/// The topic frame of a heartbeat: `\xffBSN.hb`.
pub const HEARTBEAT_TOPIC: &[u8] = b"\xffBSN.hb";
/// The first four bytes of a pubsub metadata frame: `\xffBSP`.
pub const MAGIC: [u8; 4] = *b"\xffBSP";
/// The metadata layout version this code writes and reads.
pub const VERSION: u8 = 1;
/// The size of the metadata frame without the replay endpoint.
pub const FIXED: usize = 50;
/// The first frame of every replay-channel command.
pub const PROTOCOL: &[u8] = b"BSP-R1";
/// Longest subscriber name an ACK may carry (a data dir path, a host name): 1 KiB.
pub const MAX_NAME: usize = 1024;

/// The replay-channel commands, as their ASCII frames.
pub mod command {
    /// Subscriber: send me data from a sequence.
    pub const REPLAY: &[u8] = b"REPLAY";
    /// Subscriber: I have processed everything up to a sequence.
    pub const ACK: &[u8] = b"ACK";
    /// Publisher: one retained message.
    pub const DATA: &[u8] = b"DATA";
    /// Publisher: the batch is over.
    pub const END: &[u8] = b"END";
    /// Publisher: what was asked for is no longer retained.
    pub const TRIMMED: &[u8] = b"TRIMMED";
    /// Publisher: what was published since the time asked starts at a later sequence.
    pub const SINCE: &[u8] = b"SINCE";
    /// Publisher: I am not that publisher.
    pub const UNKNOWN: &[u8] = b"UNKNOWN";
}

/// What a metadata frame describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A published message.
    Data = 0,
    /// A heartbeat (every interval, busy or idle).
    Heartbeat = 1,
}

impl TryFrom<u8> for Kind {
    type Error = ProtocolError;
    fn try_from(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0 => Ok(Kind::Data),
            1 => Ok(Kind::Heartbeat),
            other => Err(bad("metadata", format!("unknown kind {other}"))),
        }
    }
}

/// The pubsub metadata frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Data or heartbeat.
    pub kind: Kind,
    /// The publisher's id.
    pub publisher: Uuid,
    /// Data: the message's sequence; heartbeat: the last published (0 = none).
    pub seq: u64,
    /// When it was published (data) or sent (heartbeat), ms since the Unix epoch.
    pub at_ms: u64,
    /// Heartbeat: the oldest sequence retained (0 = none). Data: 0.
    pub oldest: u64,
    /// Heartbeat: the publisher's replay endpoint (may be empty). Data: empty.
    pub replay: String,
    /// Heartbeat: the publisher's heartbeat interval in ms, saturating at 65535 (0:
    /// not said). Data: 0.
    pub interval_ms: u16,
}

impl Meta {
    /// The frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.replay.len());
        self.write(&mut out);
        out
    }

    /// Appends the frame to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let beat = Beat {
            oldest: self.oldest,
            endpoint: self.replay.as_bytes(),
            interval_ms: self.interval_ms,
        };
        write_meta(out, self.kind, self.publisher, self.seq, self.at_ms, beat);
    }

    /// Decodes a metadata frame: the exact length its endpoint field announces, known
    /// magic, version and kind, a UTF-8 endpoint.
    pub fn decode(frame: &[u8]) -> Result<Meta, ProtocolError> {
        let Some((fixed, endpoint)) = frame.split_first_chunk::<FIXED>() else {
            return Err(bad(
                "metadata",
                format!("{} bytes, at least {FIXED} expected", frame.len()),
            ));
        };
        let (magic, rest) = fixed.split_at(4);
        if magic != MAGIC {
            return Err(bad(
                "metadata",
                format!("missing magic \\xffBSP (starts {:02x?})", preview(frame)),
            ));
        }
        let [version, kind, i0, i1, rest @ ..] = rest else {
            return Err(bad("metadata", "truncated header".into()));
        };
        if *version != VERSION {
            return Err(bad(
                "metadata",
                format!("version {version}, expected {VERSION}"),
            ));
        }
        let kind = Kind::try_from(*kind)?;
        let interval_ms = match kind {
            Kind::Heartbeat => u16::from_be_bytes([*i0, *i1]),
            Kind::Data => 0,
        };
        let (id, rest) = rest.split_at(16);
        let publisher = Uuid::from_slice(id).map_err(|e| bad("metadata", e.to_string()))?;
        let (seq, rest) = u64_at(rest);
        let (at_ms, rest) = u64_at(rest);
        let (oldest, rest) = u64_at(rest);
        let len = match rest {
            [a, b] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return Err(bad("metadata", "truncated header".into())),
        };
        if endpoint.len() != len {
            return Err(bad(
                "metadata",
                format!(
                    "endpoint length {len}, but {} bytes follow the header",
                    endpoint.len()
                ),
            ));
        }
        let replay = std::str::from_utf8(endpoint)
            .map_err(|_| bad("metadata", "replay endpoint is not UTF-8".into()))?
            .to_string();
        if kind == Kind::Data && (oldest != 0 || !replay.is_empty()) {
            return Err(bad(
                "metadata",
                "a data message carries an oldest sequence or an endpoint".into(),
            ));
        }
        if kind == Kind::Data && seq == 0 {
            return Err(bad(
                "metadata",
                "data sequence 0 (sequences start at 1)".into(),
            ));
        }
        if seq == u64::MAX {
            return Err(bad(
                "metadata",
                "sequence 2^64 - 1 (no sequence could follow it)".into(),
            ));
        }
        Ok(Meta {
            kind,
            publisher,
            seq,
            at_ms,
            oldest,
            replay,
            interval_ms,
        })
    }
}

/// The fields of a metadata frame that only a heartbeat fills (all zero for data).
#[derive(Default)]
struct Beat<'a> {
    oldest: u64,
    endpoint: &'a [u8],
    interval_ms: u16,
}

/// Appends a metadata frame to `out` (see the module docs for the layout).
fn write_meta(out: &mut Vec<u8>, kind: Kind, publisher: Uuid, seq: u64, at_ms: u64, beat: Beat) {
    let Beat {
        oldest,
        endpoint,
        interval_ms,
    } = beat;
    // The endpoint is the publisher's own bound endpoint; longer than u16 it would
    // not be an endpoint at all, and it is then left out rather than cut.
    let endpoint = if endpoint.len() > usize::from(u16::MAX) {
        &[][..]
    } else {
        endpoint
    };
    let mut fixed = [0u8; FIXED];
    fixed[..4].copy_from_slice(&MAGIC);
    fixed[4] = VERSION;
    fixed[5] = kind as u8;
    fixed[6..8].copy_from_slice(&interval_ms.to_be_bytes());
    fixed[8..24].copy_from_slice(publisher.as_bytes());
    fixed[24..32].copy_from_slice(&seq.to_be_bytes());
    fixed[32..40].copy_from_slice(&at_ms.to_be_bytes());
    fixed[40..48].copy_from_slice(&oldest.to_be_bytes());
    // In range: checked against u16::MAX above.
    fixed[48..50].copy_from_slice(&(endpoint.len() as u16).to_be_bytes());
    out.reserve(FIXED + endpoint.len());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(endpoint);
}

/// Appends the metadata frame of a data message.
fn write_data_meta(out: &mut Vec<u8>, publisher: Uuid, seq: u64, at_ms: u64) {
    write_meta(out, Kind::Data, publisher, seq, at_ms, Beat::default());
}

/// Splits a u64 off the front of a slice known (by the fixed header length) to hold one.
fn u64_at(s: &[u8]) -> (u64, &[u8]) {
    match s.split_first_chunk::<8>() {
        Some((head, rest)) => (u64::from_be_bytes(*head), rest),
        None => (0, &[]), // unreachable: every caller slices within the fixed header
    }
}

/// One published message as it travels (live or replayed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// Its publisher.
    pub publisher: Uuid,
    /// Its sequence (from 1, per publisher).
    pub seq: u64,
    /// When it was published, ms since the Unix epoch.
    pub published_at_ms: u64,
    /// The topic frame.
    pub topic: Vec<u8>,
    /// The payload frames (at least one).
    pub payload: Frames,
}

impl Data {
    /// The metadata frame of this message.
    pub fn meta(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED);
        write_data_meta(&mut out, self.publisher, self.seq, self.published_at_ms);
        out
    }

    /// The message as sent on PUB: `[topic][payload...][metadata]` (an empty payload is
    /// sent as one empty frame).
    pub fn encode(&self) -> Frames {
        let mut out = Vec::with_capacity(self.payload.len() + 2);
        out.push(self.topic.clone());
        if self.payload.is_empty() {
            out.push(Vec::new());
        } else {
            out.extend(self.payload.iter().cloned());
        }
        out.push(self.meta());
        out
    }

    /// Queues the message as sent on PUB (as [`Data::encode`] gives it) on `socket` of
    /// `out`, from borrowed parts: nothing is copied but into the queue's buffer.
    pub fn queue(
        out: &mut WireQueue,
        socket: usize,
        publisher: Uuid,
        seq: u64,
        published_at_ms: u64,
        topic: &[u8],
        payload: &[Vec<u8>],
    ) {
        out.begin(socket);
        Self::frames_into(out, publisher, seq, published_at_ms, topic, payload);
    }

    /// Queues the message as a replay answer, `[identity][BSP-R1][DATA][topic]
    /// [payload...][metadata]`, on `socket` of `out` (the ROUTER): as [`Reply::encode`]
    /// gives it after the identity.
    #[allow(clippy::too_many_arguments)] // the parts of one frame layout, borrowed
    pub fn queue_replayed(
        out: &mut WireQueue,
        socket: usize,
        identity: &[u8],
        publisher: Uuid,
        seq: u64,
        published_at_ms: u64,
        topic: &[u8],
        payload: &[Vec<u8>],
    ) {
        out.begin(socket);
        out.frame(identity);
        out.frame(PROTOCOL);
        out.frame(command::DATA);
        Self::frames_into(out, publisher, seq, published_at_ms, topic, payload);
    }

    /// Adds `[topic][payload...][metadata]` to the message `out` has begun.
    fn frames_into(
        out: &mut WireQueue,
        publisher: Uuid,
        seq: u64,
        published_at_ms: u64,
        topic: &[u8],
        payload: &[Vec<u8>],
    ) {
        out.frame(topic);
        if payload.is_empty() {
            out.frame(&[]);
        }
        for f in payload {
            out.frame(f);
        }
        out.frame_with(|b| write_data_meta(b, publisher, seq, published_at_ms));
    }

    /// `[topic][payload...][metadata]`, already split from a message; `what` names it in
    /// errors.
    fn from_frames(mut frames: Frames, what: &'static str) -> Result<Data, ProtocolError> {
        if !frames.last().is_some_and(|m| m.starts_with(&MAGIC)) {
            return Err(bad(
                what,
                format!(
                    "no bosun metadata: the last of its {} frames does not start with \\xffBSP \
                     (a plain ZeroMQ publisher, not a bosun one?)",
                    frames.len()
                ),
            ));
        }
        if frames.len() < 3 {
            return Err(count(what, "at least 3", frames.len()));
        }
        let meta = frames.pop().unwrap_or_default(); // at least 3 frames: checked above
        let meta = Meta::decode(&meta)?;
        if meta.kind != Kind::Data {
            return Err(bad(what, "metadata of a heartbeat".into()));
        }
        // The frame list becomes the payload: no new list per message.
        let topic = frames.remove(0); // at least 2 frames left: checked above
        let payload = frames;
        Ok(Data {
            publisher: meta.publisher,
            seq: meta.seq,
            published_at_ms: meta.at_ms,
            topic,
            payload,
        })
    }
}

/// A heartbeat: sent every interval, busy or idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// Its publisher.
    pub publisher: Uuid,
    /// The last sequence published (0: none yet).
    pub last: u64,
    /// When it was sent, ms since the Unix epoch.
    pub at_ms: u64,
    /// The oldest sequence still retained (0: none).
    pub oldest: u64,
    /// The publisher's replay endpoint (may be empty).
    pub replay: String,
    /// The publisher's heartbeat interval in ms, saturating at 65535 (0: not said).
    pub interval_ms: u16,
}

impl Heartbeat {
    /// The heartbeat as sent on PUB: `[HEARTBEAT_TOPIC][metadata]`.
    pub fn encode(&self) -> Frames {
        let meta = Meta {
            kind: Kind::Heartbeat,
            publisher: self.publisher,
            seq: self.last,
            at_ms: self.at_ms,
            oldest: self.oldest,
            replay: self.replay.clone(),
            interval_ms: self.interval_ms,
        };
        vec![HEARTBEAT_TOPIC.to_vec(), meta.encode()]
    }
}

/// What arrives on a SUB socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// A published message.
    Data(Data),
    /// A heartbeat.
    Heartbeat(Heartbeat),
}

/// Parses a message from a SUB socket.
pub fn parse_live(frames: Frames) -> Result<Live, ProtocolError> {
    match frames.as_slice() {
        [] => Err(ProtocolError::Empty { protocol: NAME }),
        [topic, meta] if topic.as_slice() == HEARTBEAT_TOPIC => {
            let m = Meta::decode(meta)?;
            if m.kind != Kind::Heartbeat {
                return Err(bad("heartbeat", "metadata of a data message".into()));
            }
            Ok(Live::Heartbeat(Heartbeat {
                publisher: m.publisher,
                last: m.seq,
                at_ms: m.at_ms,
                oldest: m.oldest,
                replay: m.replay,
                interval_ms: m.interval_ms,
            }))
        }
        _ => Data::from_frames(frames, "data").map(Live::Data),
    }
}

/// What a subscriber sends on the replay channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Send me `publisher`'s messages from `from` (inclusive), at most `max`; with
    /// `since_ms`, none published before that time (a subscriber joining asks for
    /// what was published since it started).
    Replay {
        /// The publisher asked.
        publisher: Uuid,
        /// The first sequence wanted.
        from: u64,
        /// The most messages wanted.
        max: u32,
        /// Only messages published at or after this time, ms since the Unix epoch
        /// (the sixth frame; absent: no bound).
        since_ms: Option<u64>,
    },
    /// Durable subscriber `name` has processed everything up to `seq`.
    Ack {
        /// The publisher acknowledged.
        publisher: Uuid,
        /// The last sequence processed.
        seq: u64,
        /// The subscriber's name (any bytes, at most [`MAX_NAME`]).
        name: Vec<u8>,
    },
}

impl Request {
    /// The command's frames (as a DEALER sends them, with no identity).
    pub fn encode(&self) -> Frames {
        match self {
            Request::Replay {
                publisher,
                from,
                max,
                since_ms,
            } => {
                let mut out = vec![
                    PROTOCOL.to_vec(),
                    command::REPLAY.to_vec(),
                    publisher.as_bytes().to_vec(),
                    from.to_be_bytes().to_vec(),
                    max.to_be_bytes().to_vec(),
                ];
                out.extend(since_ms.map(|s| s.to_be_bytes().to_vec()));
                out
            }
            Request::Ack {
                publisher,
                seq,
                name,
            } => vec![
                PROTOCOL.to_vec(),
                command::ACK.to_vec(),
                publisher.as_bytes().to_vec(),
                seq.to_be_bytes().to_vec(),
                name.clone(),
            ],
        }
    }
}

/// Parses a subscriber's command as a ROUTER delivers it: `[identity][BSP-R1]...`.
/// Returns the identity (to route the answer by) and the command.
pub fn parse_request(frames: Frames) -> Result<(Vec<u8>, Request), ProtocolError> {
    let mut frames = frames.into_iter();
    let Some(identity) = frames.next() else {
        return Err(ProtocolError::Empty { protocol: NAME });
    };
    let rest: Frames = frames.collect();
    let request = match rest.as_slice() {
        [] => return Err(count("request", "at least 2 after the identity", 0)),
        [p, ..] if p.as_slice() != PROTOCOL => return Err(not_protocol(p)),
        [_] => return Err(count("request", "at least 2 after the identity", 1)),
        [_, c, args @ ..] => match c.as_slice() {
            command::REPLAY => match args {
                [id, from, max, since @ ..] if since.len() <= 1 => Request::Replay {
                    publisher: uuid(id)?,
                    from: u64_frame(from, "REPLAY from")?,
                    max: u32_frame(max, "REPLAY max")?,
                    since_ms: match since {
                        [s] => Some(u64_frame(s, "REPLAY since")?),
                        _ => None,
                    },
                },
                _ => return Err(count("REPLAY", "5 or 6", rest.len())),
            },
            command::ACK => match args {
                [id, seq, name] => {
                    if name.len() > MAX_NAME {
                        return Err(bad(
                            "ACK",
                            format!("name of {} bytes, at most {MAX_NAME}", name.len()),
                        ));
                    }
                    Request::Ack {
                        publisher: uuid(id)?,
                        seq: u64_frame(seq, "ACK seq")?,
                        name: name.clone(),
                    }
                }
                _ => return Err(count("ACK", "5", rest.len())),
            },
            other => return Err(unknown(other)),
        },
    };
    Ok((identity, request))
}

/// What a publisher answers on the replay channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// One retained message.
    Data(Data),
    /// The batch starting at `from` is over; `last` is the last sequence published.
    End {
        /// The batch's first sequence, as asked.
        from: u64,
        /// The last sequence published so far.
        last: u64,
    },
    /// `from` is older than what is retained; `oldest` is the oldest still retained
    /// (0 = nothing retained).
    /// The first message published at or after the time of a `REPLAY` is `first`,
    /// later than the `from` asked: ask again from `first` (nothing is sent with it).
    Since {
        /// The sequence asked for.
        from: u64,
        /// The first message published since the time asked (one past the last
        /// published when there is none).
        first: u64,
    },
    Trimmed {
        /// The sequence asked for.
        from: u64,
        /// The oldest retained.
        oldest: u64,
    },
    /// The endpoint belongs to another publisher than `publisher`.
    Unknown {
        /// The publisher that was asked for.
        publisher: Uuid,
    },
}

impl Reply {
    /// The answer's frames, without the ROUTER identity.
    pub fn encode(&self) -> Frames {
        let head = |c: &[u8]| vec![PROTOCOL.to_vec(), c.to_vec()];
        match self {
            Reply::Data(d) => {
                let mut out = head(command::DATA);
                out.extend(d.encode());
                out
            }
            Reply::End { from, last } => {
                let mut out = head(command::END);
                out.push(from.to_be_bytes().to_vec());
                out.push(last.to_be_bytes().to_vec());
                out
            }
            Reply::Since { from, first } => {
                let mut out = head(command::SINCE);
                out.push(from.to_be_bytes().to_vec());
                out.push(first.to_be_bytes().to_vec());
                out
            }
            Reply::Trimmed { from, oldest } => {
                let mut out = head(command::TRIMMED);
                out.push(from.to_be_bytes().to_vec());
                out.push(oldest.to_be_bytes().to_vec());
                out
            }
            Reply::Unknown { publisher } => {
                let mut out = head(command::UNKNOWN);
                out.push(publisher.as_bytes().to_vec());
                out
            }
        }
    }
}

/// Parses a publisher's answer as a DEALER receives it: `[BSP-R1][command]...`.
pub fn parse_reply(frames: Frames) -> Result<Reply, ProtocolError> {
    match frames.as_slice() {
        [] => return Err(ProtocolError::Empty { protocol: NAME }),
        [p, ..] if p.as_slice() != PROTOCOL => return Err(not_protocol(p)),
        [_] => return Err(count("reply", "at least 2", 1)),
        _ => {}
    }
    let mut it = frames.into_iter();
    let _protocol = it.next();
    let command = it.next().unwrap_or_default(); // at least 2 frames: matched above
    let args: Frames = it.collect();
    match command.as_slice() {
        command::DATA => Data::from_frames(args, "DATA").map(Reply::Data),
        command::END => match args.as_slice() {
            [from, last] => Ok(Reply::End {
                from: u64_frame(from, "END from")?,
                last: u64_frame(last, "END last")?,
            }),
            _ => Err(count("END", "4", args.len() + 2)),
        },
        command::SINCE => match args.as_slice() {
            [from, first] => Ok(Reply::Since {
                from: u64_frame(from, "SINCE from")?,
                first: u64_frame(first, "SINCE first")?,
            }),
            _ => Err(count("SINCE", "4", args.len() + 2)),
        },
        command::TRIMMED => match args.as_slice() {
            [from, oldest] => Ok(Reply::Trimmed {
                from: u64_frame(from, "TRIMMED from")?,
                oldest: u64_frame(oldest, "TRIMMED oldest")?,
            }),
            _ => Err(count("TRIMMED", "4", args.len() + 2)),
        },
        command::UNKNOWN => match args.as_slice() {
            [id] => Ok(Reply::Unknown {
                publisher: uuid(id)?,
            }),
            _ => Err(count("UNKNOWN", "3", args.len() + 2)),
        },
        other => Err(unknown(other)),
    }
}

fn uuid(frame: &[u8]) -> Result<Uuid, ProtocolError> {
    let bytes: [u8; 16] = frame.try_into().map_err(|_| {
        bad(
            "publisher id",
            format!("{} bytes, expected 16", frame.len()),
        )
    })?;
    Ok(Uuid::from_bytes(bytes))
}

fn u64_frame(frame: &[u8], what: &'static str) -> Result<u64, ProtocolError> {
    let bytes: [u8; 8] = frame
        .try_into()
        .map_err(|_| bad(what, format!("{} bytes, expected 8", frame.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

fn u32_frame(frame: &[u8], what: &'static str) -> Result<u32, ProtocolError> {
    let bytes: [u8; 4] = frame
        .try_into()
        .map_err(|_| bad(what, format!("{} bytes, expected 4", frame.len())))?;
    Ok(u32::from_be_bytes(bytes))
}

fn bad(what: &'static str, reason: String) -> ProtocolError {
    ProtocolError::Malformed {
        protocol: NAME,
        what,
        reason,
    }
}

fn count(what: &'static str, expected: &'static str, got: usize) -> ProtocolError {
    ProtocolError::FrameCount {
        protocol: NAME,
        what,
        expected,
        got,
    }
}

fn unknown(command: &[u8]) -> ProtocolError {
    ProtocolError::UnknownCommand {
        protocol: NAME,
        command: preview(command),
    }
}

fn not_protocol(frame: &[u8]) -> ProtocolError {
    bad(
        "replay channel",
        format!("protocol frame {:02x?}, expected BSP-R1", preview(frame)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Uuid {
        Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)
    }

    fn data(seq: u64) -> Data {
        Data {
            publisher: id(),
            seq,
            published_at_ms: 1_700_000_000_000,
            topic: b"prices.eu".to_vec(),
            payload: vec![b"a".to_vec(), Vec::new(), vec![0xff, 0]],
        }
    }

    fn hb() -> Heartbeat {
        Heartbeat {
            publisher: id(),
            last: 42,
            at_ms: 7,
            oldest: 3,
            replay: "tcp://127.0.0.1:5557".into(),
            interval_ms: 1500,
        }
    }

    #[test]
    fn live_messages_round_trip() {
        let d = data(9);
        assert_eq!(parse_live(d.encode()), Ok(Live::Data(d.clone())));
        let h = hb();
        assert_eq!(parse_live(h.encode()), Ok(Live::Heartbeat(h)));
        let mut empty = data(1);
        empty.payload.clear();
        let Ok(Live::Data(back)) = parse_live(empty.encode()) else {
            panic!()
        };
        assert_eq!(back.payload, vec![Vec::<u8>::new()], "one empty frame");
    }

    #[test]
    fn the_metadata_layout_is_the_documented_one() {
        let f = hb().encode();
        assert_eq!(f[0], b"\xff\x42\x53\x4e\x2e\x68\x62");
        let m = &f[1];
        assert_eq!(&m[0..4], b"\xffBSP");
        assert_eq!(m[4], 1);
        assert_eq!(m[5], 1);
        assert_eq!(&m[8..24], id().as_bytes());
        assert_eq!(&m[24..32], &42u64.to_be_bytes());
        assert_eq!(&m[32..40], &7u64.to_be_bytes());
        assert_eq!(&m[40..48], &3u64.to_be_bytes());
        assert_eq!(&m[48..50], &20u16.to_be_bytes());
        assert_eq!(&m[50..], b"tcp://127.0.0.1:5557");
        assert_eq!(data(1).meta().len(), FIXED);
    }

    #[test]
    fn replay_commands_round_trip() {
        let reqs = [
            Request::Replay {
                publisher: id(),
                from: 5,
                max: 1000,
                since_ms: None,
            },
            Request::Replay {
                publisher: id(),
                from: 1,
                max: 10,
                since_ms: Some(1_700_000_000_123),
            },
            Request::Ack {
                publisher: id(),
                seq: 77,
                name: b"sub-a".to_vec(),
            },
        ];
        for r in reqs {
            let mut frames = vec![b"peer".to_vec()];
            frames.extend(r.encode());
            assert_eq!(parse_request(frames), Ok((b"peer".to_vec(), r)));
        }
        let replies = [
            Reply::Data(data(3)),
            Reply::End { from: 1, last: 9 },
            Reply::Trimmed { from: 1, oldest: 4 },
            Reply::Since { from: 1, first: 40 },
            Reply::Unknown { publisher: id() },
        ];
        for r in replies {
            assert_eq!(parse_reply(r.encode()), Ok(r));
        }
    }

    #[test]
    fn every_malformed_metadata_is_refused() {
        let good = data(1).meta();
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), good[..49].to_vec()];
        let mut m = good.clone();
        m[0] = b'x';
        cases.push(m);
        let mut m = good.clone();
        m[4] = 2;
        cases.push(m);
        let mut m = good.clone();
        m[5] = 7;
        cases.push(m);
        let mut m = good.clone();
        m.push(0);
        cases.push(m); // trailing byte
        let mut m = good.clone();
        m[49] = 3; // announces an endpoint that is not there
        cases.push(m);
        let mut m = good.clone();
        m[24..32].copy_from_slice(&0u64.to_be_bytes());
        cases.push(m); // data sequence 0
        let mut m = good.clone();
        m[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        cases.push(m); // a sequence nothing could follow
        let mut m = hb().encode().pop().unwrap();
        m[55] = 0xff; // endpoint not UTF-8
        cases.push(m);
        let mut m = good.clone();
        m[47] = 1; // data with an oldest
        cases.push(m);
        for c in cases {
            assert!(Meta::decode(&c).is_err(), "{c:02x?}");
        }
    }

    #[test]
    fn every_malformed_message_is_refused() {
        let meta = data(1).meta();
        let hbm = hb().encode().pop().unwrap();
        let live: Vec<Frames> = vec![
            vec![],
            vec![b"t".to_vec()],
            vec![b"t".to_vec(), meta.clone()],  // no payload
            vec![b"t".to_vec(), b"p".to_vec()], // no metadata
            vec![b"t".to_vec(), b"p".to_vec(), hbm.clone()], // data with heartbeat meta
            vec![HEARTBEAT_TOPIC.to_vec(), meta.clone()], // heartbeat with data meta
            vec![HEARTBEAT_TOPIC.to_vec(), b"x".to_vec(), hbm.clone()],
        ];
        for f in live {
            assert!(parse_live(f.clone()).is_err(), "{f:?}");
        }
        let f = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Frames>();
        let id16 = id().as_bytes().to_vec();
        let requests = vec![
            f(&[]),
            f(&[b"peer"]),
            f(&[b"peer", b"BSP-R2", b"REPLAY"]),
            f(&[b"peer", PROTOCOL]),
            f(&[b"peer", PROTOCOL, b"NOPE"]),
            f(&[b"peer", PROTOCOL, b"REPLAY", &id16, &[0; 8]]),
            f(&[b"peer", PROTOCOL, b"REPLAY", &id16[..15], &[0; 8], &[0; 4]]),
            f(&[b"peer", PROTOCOL, b"REPLAY", &id16, &[0; 7], &[0; 4]]),
            f(&[b"peer", PROTOCOL, b"REPLAY", &id16, &[0; 8], &[0; 5]]),
            f(&[b"peer", PROTOCOL, b"REPLAY", &id16, &[0; 8], &[0; 4], b"x"]),
            f(&[
                b"peer", PROTOCOL, b"REPLAY", &id16, &[0; 8], &[0; 4], &[0; 8], &[0; 8],
            ]),
            f(&[b"peer", PROTOCOL, b"ACK", &id16, &[0; 8]]),
            f(&[
                b"peer",
                PROTOCOL,
                b"ACK",
                &id16,
                &[0; 8],
                &[0; MAX_NAME + 1],
            ]),
        ];
        for r in requests {
            assert!(parse_request(r.clone()).is_err(), "{r:?}");
        }
        let replies = vec![
            f(&[]),
            f(&[PROTOCOL]),
            f(&[b"BSP", b"END", &[0; 8], &[0; 8]]),
            f(&[PROTOCOL, b"WHAT"]),
            f(&[PROTOCOL, b"END", &[0; 8]]),
            f(&[PROTOCOL, b"END", &[0; 8], &[0; 9]]),
            f(&[PROTOCOL, b"TRIMMED", &[0; 8], &[0; 8], &[0; 8]]),
            f(&[PROTOCOL, b"SINCE", &[0; 8]]),
            f(&[PROTOCOL, b"SINCE", &[0; 8], &[0; 7]]),
            f(&[PROTOCOL, b"UNKNOWN", &id16[..3]]),
            f(&[PROTOCOL, b"DATA", b"t", b"p"]),
            f(&[PROTOCOL, b"DATA", b"t", b"p", &hbm]),
        ];
        for r in replies {
            assert!(parse_reply(r.clone()).is_err(), "{r:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let good = data(3).encode();
        for _ in 0..20_000 {
            let mut frames = good.clone();
            let n = rng.usize(0..frames.len());
            let frame = &mut frames[n];
            if !frame.is_empty() {
                let at = rng.usize(0..frame.len());
                frame[at] = rng.u8(..);
            }
            if rng.bool() {
                let cut = rng.usize(0..=frames[n].len());
                frames[n].truncate(cut);
            }
            let _ = parse_live(frames.clone());
            let _ = parse_reply(frames.clone());
            let _ = parse_request(frames);
        }
    }
}
