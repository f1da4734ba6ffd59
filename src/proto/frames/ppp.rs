//! 6/PPP, the Paranoid Pirate Protocol.
//!
//! Worker to queue: `[0x01]` READY, `[0x02]` HEARTBEAT, or a reply
//! `[client address...][""][body...]`. Queue to worker: `[0x02]` HEARTBEAT or a request
//! `[client address...][""][body...]`. A DEALER worker sends no empty frame after its own
//! identity; the queue's ROUTER adds and strips that identity.

use super::{delimiter, preview, Frames};
use crate::error::ProtocolError;

const PROTOCOL: &str = "6/PPP";

/// The one-byte commands of 6/PPP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// The worker is ready for a request. Its first message, and only then.
    Ready = 0x01,
    /// I am alive.
    Heartbeat = 0x02,
}

impl TryFrom<u8> for Command {
    type Error = ProtocolError;
    fn try_from(b: u8) -> Result<Self, ProtocolError> {
        match b {
            0x01 => Ok(Command::Ready),
            0x02 => Ok(Command::Heartbeat),
            _ => Err(unknown(&[b])),
        }
    }
}

impl Command {
    /// The message carrying this command: one frame of one byte.
    pub fn frames(self) -> Frames {
        vec![vec![self as u8]]
    }
}

/// What a worker sends, as the queue sees it after removing the worker's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// READY.
    Ready,
    /// HEARTBEAT.
    Heartbeat,
    /// A reply, still framed `[client address...][""][body...]`, to forward as it is.
    Reply(Frames),
}

/// What the queue sends, as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromQueue {
    /// HEARTBEAT.
    Heartbeat,
    /// A request for the client at `address`.
    Request {
        /// The client's routing envelope, to put back in front of the reply.
        address: Frames,
        /// The request body frames.
        body: Frames,
    },
}

/// Parses a worker's message (its identity already removed).
pub fn parse_from_worker(frames: Frames) -> Result<FromWorker, ProtocolError> {
    match frames.as_slice() {
        [] => Err(ProtocolError::Empty { protocol: PROTOCOL }),
        [one] => match Command::try_from(single_byte(one)?)? {
            Command::Ready => Ok(FromWorker::Ready),
            Command::Heartbeat => Ok(FromWorker::Heartbeat),
        },
        _ => {
            routed(&frames, "worker reply")?;
            Ok(FromWorker::Reply(frames))
        }
    }
}

/// Parses a message from the queue, as the worker's DEALER receives it.
pub fn parse_from_queue(mut frames: Frames) -> Result<FromQueue, ProtocolError> {
    match frames.as_slice() {
        [] => Err(ProtocolError::Empty { protocol: PROTOCOL }),
        [one] => match Command::try_from(single_byte(one)?)? {
            Command::Heartbeat => Ok(FromQueue::Heartbeat),
            Command::Ready => Err(unknown(one)),
        },
        _ => {
            let at = routed(&frames, "queue request")?;
            let body = frames.split_off(at + 1);
            frames.truncate(at);
            Ok(FromQueue::Request {
                address: frames,
                body,
            })
        }
    }
}

/// Checks a client request as the queue's frontend ROUTER delivers it:
/// `[client identity][...][""][body...]`.
pub fn check_request(frames: &[Vec<u8>]) -> Result<(), ProtocolError> {
    if frames.is_empty() {
        return Err(ProtocolError::Empty { protocol: PROTOCOL });
    }
    routed(frames, "client request").map(|_| ())
}

/// A reply `[address...][""][body...]` for the worker to send back.
pub fn reply(address: &[Vec<u8>], body: Frames) -> Frames {
    let mut out = Vec::with_capacity(address.len() + 1 + body.len());
    out.extend(address.iter().cloned());
    out.push(Vec::new());
    out.extend(body);
    out
}

fn single_byte(frame: &[u8]) -> Result<u8, ProtocolError> {
    match frame {
        [b] => Ok(*b),
        _ => Err(ProtocolError::FrameCount {
            protocol: PROTOCOL,
            what: "one-frame message (a command must be one byte)",
            expected: "a 1-byte command, or at least 3 frames",
            got: 1,
        }),
    }
}

fn routed(frames: &[Vec<u8>], what: &'static str) -> Result<usize, ProtocolError> {
    if frames.len() < 3 {
        return Err(ProtocolError::FrameCount {
            protocol: PROTOCOL,
            what,
            expected: "at least 3 ([address][\"\"][body])",
            got: frames.len(),
        });
    }
    delimiter(frames).ok_or(ProtocolError::MissingDelimiter {
        protocol: PROTOCOL,
        what,
    })
}

fn unknown(frame: &[u8]) -> ProtocolError {
    ProtocolError::UnknownCommand {
        protocol: PROTOCOL,
        command: preview(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[&[u8]]) -> Frames {
        v.iter().map(|x| x.to_vec()).collect()
    }

    #[test]
    fn worker_commands_and_replies() {
        assert_eq!(parse_from_worker(f(&[b"\x01"])), Ok(FromWorker::Ready));
        assert_eq!(parse_from_worker(f(&[b"\x02"])), Ok(FromWorker::Heartbeat));
        let r = f(&[b"client", b"", b"body"]);
        assert_eq!(parse_from_worker(r.clone()), Ok(FromWorker::Reply(r)));
    }

    #[test]
    fn worker_garbage_is_typed() {
        assert!(matches!(
            parse_from_worker(vec![]),
            Err(ProtocolError::Empty { .. })
        ));
        assert!(matches!(
            parse_from_worker(f(&[b"\x07"])),
            Err(ProtocolError::UnknownCommand { .. })
        ));
        // "\001" written as text is four ASCII bytes, not the command.
        assert!(parse_from_worker(f(&[b"0x01"])).is_err());
        assert!(parse_from_worker(f(&[b""])).is_err());
        assert!(matches!(
            parse_from_worker(f(&[b"a", b"b"])),
            Err(ProtocolError::FrameCount { got: 2, .. })
        ));
        assert!(matches!(
            parse_from_worker(f(&[b"a", b"b", b"c"])),
            Err(ProtocolError::MissingDelimiter { .. })
        ));
    }

    #[test]
    fn queue_messages() {
        assert_eq!(parse_from_queue(f(&[b"\x02"])), Ok(FromQueue::Heartbeat));
        assert!(parse_from_queue(f(&[b"\x01"])).is_err());
        assert_eq!(
            parse_from_queue(f(&[b"c1", b"c2", b"", b"x", b"y"])),
            Ok(FromQueue::Request {
                address: f(&[b"c1", b"c2"]),
                body: f(&[b"x", b"y"]),
            })
        );
        assert_eq!(
            reply(&f(&[b"c1", b"c2"]), f(&[b"r"])),
            f(&[b"c1", b"c2", b"", b"r"])
        );
    }

    #[test]
    fn client_requests() {
        assert!(check_request(&f(&[b"id", b"", b"x"])).is_ok());
        assert!(check_request(&f(&[b"id", b"x"])).is_err());
        assert!(check_request(&[]).is_err());
    }
}
