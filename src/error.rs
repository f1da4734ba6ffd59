//! Errors, one enum per layer, joined into [`Error`](enum@Error).
//!
//! Expected outcomes (a duplicate, a stale reply, no worker yet) are not errors:
//! they are events of the protocol cores. These enums are for what a caller must act on.

use thiserror::Error;

/// A message from the network that does not follow the protocol.
///
/// Returned by the frame parsers in [`crate::proto`]; the drivers log it and drop
/// the message. It never panics and never stops a peer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A message with no frames at all.
    #[error("{protocol}: empty message")]
    Empty {
        /// The protocol whose parser saw it.
        protocol: &'static str,
    },
    /// The message had a number of frames this command cannot have.
    #[error("{protocol}: {what}: expected {expected} frames, got {got}")]
    FrameCount {
        /// The protocol whose parser saw it.
        protocol: &'static str,
        /// Which message was being parsed.
        what: &'static str,
        /// What the protocol allows, in words ("1", "at least 3").
        expected: &'static str,
        /// How many frames arrived.
        got: usize,
    },
    /// A command frame whose value the protocol does not define.
    #[error("{protocol}: unknown command {command:02x?}")]
    UnknownCommand {
        /// The protocol whose parser saw it.
        protocol: &'static str,
        /// The command frame as it arrived (at most 8 bytes shown).
        command: Vec<u8>,
    },
    /// An address envelope without its empty delimiter frame.
    #[error("{protocol}: {what}: no empty delimiter frame")]
    MissingDelimiter {
        /// The protocol whose parser saw it.
        protocol: &'static str,
        /// Which message was being parsed.
        what: &'static str,
    },
    /// A frame that should be empty was not.
    #[error("{protocol}: {what}: expected an empty frame, got {got} bytes")]
    NotEmpty {
        /// The protocol whose parser saw it.
        protocol: &'static str,
        /// Which frame.
        what: &'static str,
        /// Its length.
        got: usize,
    },
    /// The body is not a bosun envelope.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A frame whose contents the protocol does not allow (a pub/sub metadata frame
    /// that does not decode, an integer frame of the wrong size).
    #[error("{protocol}: {what}: {reason}")]
    Malformed {
        /// The protocol whose parser saw it.
        protocol: &'static str,
        /// Which frame or message.
        what: &'static str,
        /// Why, in words.
        reason: String,
    },
}

/// An [`crate::Envelope`] could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The frame does not start with the metadata magic `\xffBSN`.
    #[error("metadata: missing magic \\xffBSN (frame of {len} bytes)")]
    BadMagic {
        /// Length of the rejected frame.
        len: usize,
    },
    /// The frame is larger than [`crate::proto::envelope::MAX_META_BYTES`].
    #[error("metadata: {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length of the rejected frame.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The frame ends before a field it announces.
    #[error("metadata: truncated: {len} bytes, a field needs {needed}")]
    Truncated {
        /// Length of the frame.
        len: usize,
        /// Bytes the next field needs.
        needed: usize,
    },
    /// A field has a value the layout does not allow.
    #[error("metadata: bad {field}: {reason}")]
    Field {
        /// Which field.
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
}

/// A configuration value that cannot work.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The named field has a value that is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field (as its command-line flag where there is one).
        field: &'static str,
        /// Why, in words.
        reason: String,
    },
}

/// A ZeroMQ call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A socket operation failed.
    #[error("{op} {endpoint}: {source}")]
    Zmq {
        /// What was being done ("bind", "connect", "send", ...).
        op: &'static str,
        /// The endpoint involved, or "" when none.
        endpoint: String,
        /// The libzmq error.
        #[source]
        source: zmq::Error,
    },
    /// The transport was closed (its peer is stopping); no socket can be made.
    #[error("the transport is closed")]
    Closed,
}

impl TransportError {
    /// Wraps a libzmq error with what was being done and where.
    pub fn zmq(op: &'static str, endpoint: impl Into<String>, source: zmq::Error) -> Self {
        TransportError::Zmq {
            op,
            endpoint: endpoint.into(),
            source,
        }
    }
}

/// A request could not be completed by a client.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Every attempt timed out. The request may or may not have been executed.
    #[error("no reply from {endpoint} after {attempts} attempt{}", if *attempts == 1 { "" } else { "s" })]
    GaveUp {
        /// How many times the request was sent.
        attempts: u32,
        /// Where it was sent.
        endpoint: String,
        /// The request body, handed back so it is not lost.
        body: Vec<u8>,
    },
    /// The peer answered with an error: its handler failed (an error, a panic, a
    /// failed command) or it refused the request unhandled.
    #[error("{peer}: request {id} {}: {message}", match status {
        crate::proto::envelope::Status::Refused => "was refused",
        _ => "failed",
    })]
    Remote {
        /// The request id.
        id: uuid::Uuid,
        /// Where it was sent.
        peer: String,
        /// What kind of failure.
        status: crate::proto::envelope::Status,
        /// The peer's message.
        message: String,
    },
    /// The request is larger than a bosun peer accepts; it was not sent.
    #[error("request of {len} bytes exceeds the limit of {max} bytes; not sent")]
    TooLarge {
        /// Payload bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A request is already outstanding; Lazy Pirate has one at a time.
    #[error("a request is already in flight")]
    Busy,
    /// The client was asked to stop (Ctrl-C) before a reply arrived. With an outbox,
    /// the request stays in it and is re-sent by the next recovery.
    #[error("interrupted before a reply arrived")]
    Interrupted,
    /// Backpressure: the client's outbox holds its limit of pending requests, so the
    /// request was neither stored nor sent. Wait for replies (or recover and answer what
    /// is pending), then try again.
    #[error("outbox full: {limit} requests pending (--outbox-limit); not sent, try again once replies have come")]
    OutboxFull {
        /// The outbox's limit.
        limit: usize,
        /// The request body (its frames joined), handed back.
        body: Vec<u8>,
    },
    /// A subscriber fell more than its `max_behind` behind a publisher and was told to
    /// fail rather than catch up ([`OnSlow::Fail`](crate::proto::subscriber::OnSlow)).
    #[error("fell behind publisher {publisher} by {behind} messages, more than the {max_behind} allowed (--max-behind); stopping instead of catching up by replay, as --on-slow fail says")]
    FellBehind {
        /// The publisher.
        publisher: uuid::Uuid,
        /// Messages published but not delivered.
        behind: u64,
        /// The limit.
        max_behind: u64,
    },
    /// The outbox holds requests for another kind of client: Majordomo requests (with
    /// a service) opened by a client that sends without one (Lazy Pirate, Freelance),
    /// or the other way round. Nothing is sent or removed; run the kind of client that
    /// made them on the data dir to deliver them.
    #[error("{place} holds {count} pending request(s) {what}; {this}: run that kind of client on it to deliver them (nothing was sent or removed)")]
    OutboxOfAnotherKind {
        /// The data dir, in words.
        place: String,
        /// How many pending requests are of the other kind.
        count: usize,
        /// What they are for, in words.
        what: String,
        /// What this client is, in words.
        this: String,
    },
    /// The outbox could not make the request durable (the store failed to write or
    /// flush it), so it was not sent.
    #[error("the outbox could not store the request, so it was not sent: {reason}")]
    NotStored {
        /// The store's error, in words.
        reason: String,
        /// The request body (its frames joined), handed back.
        body: Vec<u8>,
    },
}

/// Every error bosun returns.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ProtocolError`].
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// See [`EnvelopeError`].
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// See [`ConfigError`].
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// See [`TransportError`].
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// See [`ClientError`].
    #[error(transparent)]
    Client(#[from] ClientError),
    /// See [`StoreError`](crate::store::StoreError).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Reading stdin, writing stdout, or running a handler command failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// `Result` with [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
