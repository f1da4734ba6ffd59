//! 7/MDP (MDP/0.1), the Majordomo Protocol, and bosun's one extension to it.
//!
//! Frames as the broker's ROUTER sees them after the sender identity is removed, and
//! as a DEALER client or worker sends them:
//!
//! | message | frames |
//! | --- | --- |
//! | client REQUEST / REPLY | `[""][MDPC01][service][body...]` |
//! | worker READY | `[""][MDPW01][0x01][service]` (bosun: optionally `[capacity=K]` after) |
//! | broker REQUEST | `[""][MDPW01][0x02][client address][""][body...]` |
//! | worker REPLY | `[""][MDPW01][0x03][client address][""][body...]` |
//! | HEARTBEAT | `[""][MDPW01][0x04]` |
//! | DISCONNECT | `[""][MDPW01][0x05]` |
//!
//! **Capacity extension.** A bosun worker that handles up to K requests at once adds one
//! frame `capacity=K` (ASCII decimal) after the service name in READY. It sends it only
//! when K > 1, so a plain 7/MDP broker never sees it from a default worker; a plain
//! 7/MDP worker never sends it, and the bosun broker then treats it as K = 1.

use super::{preview, Frames};
use crate::error::ProtocolError;

const PROTOCOL: &str = "7/MDP";

/// The client protocol header, `MDPC01`.
pub const CLIENT: &[u8] = b"MDPC01";
/// The worker protocol header, `MDPW01`.
pub const WORKER: &[u8] = b"MDPW01";
/// Prefix of the READY frame by which a bosun worker declares its capacity.
pub const CAPACITY_PREFIX: &[u8] = b"capacity=";
/// Largest capacity a worker may declare; more is a protocol error. 1000 is libzmq's
/// default high-water mark: the broker's ROUTER silently drops messages to a peer whose
/// pipe holds that many, and a request dropped there would hold one of the worker's
/// slots for as long as it lives. With at most this many requests in flight to one
/// worker, only heartbeats can ever reach the mark (a worker that reads nothing for
/// about a thousand intervals), never a request.
pub const MAX_CAPACITY: u32 = 1000;

/// The worker commands of 7/MDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// Worker to broker: I serve this service.
    Ready = 0x01,
    /// Broker to worker: a request.
    Request = 0x02,
    /// Worker to broker: a reply.
    Reply = 0x03,
    /// Either way: I am alive.
    Heartbeat = 0x04,
    /// Either way: I am gone / go away and come back.
    Disconnect = 0x05,
}

impl TryFrom<&[u8]> for Command {
    type Error = ProtocolError;
    fn try_from(frame: &[u8]) -> Result<Self, ProtocolError> {
        match frame {
            [0x01] => Ok(Command::Ready),
            [0x02] => Ok(Command::Request),
            [0x03] => Ok(Command::Reply),
            [0x04] => Ok(Command::Heartbeat),
            [0x05] => Ok(Command::Disconnect),
            other => Err(ProtocolError::UnknownCommand {
                protocol: PROTOCOL,
                command: preview(other),
            }),
        }
    }
}

/// A message to the broker (sender identity removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToBroker {
    /// A client request.
    Client {
        /// The service asked for.
        service: Vec<u8>,
        /// The request body frames (possibly none).
        body: Frames,
    },
    /// A worker command.
    Worker(FromWorker),
}

/// A worker command, as the broker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// READY for `service`, handling up to `capacity` requests at once (1 unless the
    /// worker used the capacity extension).
    Ready {
        /// The service name.
        service: Vec<u8>,
        /// How many requests it takes at once.
        capacity: u32,
    },
    /// A reply for the client at `client`.
    Reply {
        /// The client's address (one frame).
        client: Vec<u8>,
        /// The reply body frames.
        body: Frames,
    },
    /// HEARTBEAT.
    Heartbeat,
    /// DISCONNECT.
    Disconnect,
}

/// A broker command, as the worker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// A request from the client at `client`.
    Request {
        /// The client's address, to put in the reply.
        client: Vec<u8>,
        /// The request body frames.
        body: Frames,
    },
    /// HEARTBEAT.
    Heartbeat,
    /// DISCONNECT: close the socket, reconnect on a new one, send READY.
    Disconnect,
}

/// Parses a message the broker's ROUTER received, its identity frame removed.
pub fn parse_to_broker(mut frames: Frames) -> Result<ToBroker, ProtocolError> {
    let Some([empty, header]) = take_front(&mut frames) else {
        return Err(count("message", "at least 3 ([\"\"][header][...])", 0));
    };
    expect_empty(&empty, "first frame")?;
    match header.as_slice() {
        CLIENT => {
            let [service] =
                take_front(&mut frames).ok_or_else(|| count("client request", "at least 3", 2))?;
            Ok(ToBroker::Client {
                service,
                body: frames,
            })
        }
        WORKER => parse_worker_command(frames).map(ToBroker::Worker),
        other => Err(ProtocolError::UnknownCommand {
            protocol: PROTOCOL,
            command: preview(other),
        }),
    }
}

fn parse_worker_command(mut args: Frames) -> Result<FromWorker, ProtocolError> {
    let [command] =
        take_front(&mut args).ok_or_else(|| count("worker message", "at least 3", 2))?;
    match (Command::try_from(command.as_slice())?, args.as_slice()) {
        (Command::Ready, [service]) => Ok(FromWorker::Ready {
            service: service.clone(),
            capacity: 1,
        }),
        (Command::Ready, [service, cap]) => Ok(FromWorker::Ready {
            service: service.clone(),
            capacity: parse_capacity(cap)?,
        }),
        (Command::Ready, _) => Err(count("READY", "4 or 5", args.len() + 3)),
        (Command::Reply, _) => {
            let (client, body) = split_client(args, "REPLY")?;
            Ok(FromWorker::Reply { client, body })
        }
        (Command::Heartbeat, []) => Ok(FromWorker::Heartbeat),
        (Command::Disconnect, []) => Ok(FromWorker::Disconnect),
        (Command::Heartbeat | Command::Disconnect, _) => {
            Err(count("HEARTBEAT/DISCONNECT", "3", args.len() + 3))
        }
        (Command::Request, _) => Err(ProtocolError::UnknownCommand {
            protocol: PROTOCOL,
            command: vec![Command::Request as u8],
        }),
    }
}

/// Parses what a worker's DEALER received from the broker.
pub fn parse_to_worker(mut frames: Frames) -> Result<ToWorker, ProtocolError> {
    let got = frames.len();
    let Some([empty, header, command]) = take_front(&mut frames) else {
        return Err(count("broker message", "at least 3", got));
    };
    expect_empty(&empty, "first frame")?;
    if header != WORKER {
        return Err(ProtocolError::UnknownCommand {
            protocol: PROTOCOL,
            command: preview(&header),
        });
    }
    let args = frames;
    match (Command::try_from(command.as_slice())?, args.is_empty()) {
        (Command::Request, _) => {
            let (client, body) = split_client(args, "REQUEST")?;
            Ok(ToWorker::Request { client, body })
        }
        (Command::Heartbeat, true) => Ok(ToWorker::Heartbeat),
        (Command::Disconnect, true) => Ok(ToWorker::Disconnect),
        (Command::Heartbeat | Command::Disconnect, false) => {
            Err(count("HEARTBEAT/DISCONNECT", "3", got))
        }
        (c @ (Command::Ready | Command::Reply), _) => Err(ProtocolError::UnknownCommand {
            protocol: PROTOCOL,
            command: vec![c as u8],
        }),
    }
}

/// Parses a reply as a client's DEALER receives it: `[""][MDPC01][service][body...]`.
/// (A REQ client's socket strips the empty frame; put it back before calling.)
pub fn parse_client_reply(mut frames: Frames) -> Result<(Vec<u8>, Frames), ProtocolError> {
    let got = frames.len();
    let Some([empty, header, service]) = take_front(&mut frames) else {
        return Err(count("client reply", "at least 3", got));
    };
    expect_empty(&empty, "first frame")?;
    if header != CLIENT {
        return Err(ProtocolError::UnknownCommand {
            protocol: PROTOCOL,
            command: preview(&header),
        });
    }
    Ok((service, frames))
}

/// A client request as a DEALER sends it: `[""][MDPC01][service][body...]`.
pub fn client_request(service: &[u8], body: Frames) -> Frames {
    let mut out = Vec::with_capacity(3 + body.len());
    out.push(Vec::new());
    out.push(CLIENT.to_vec());
    out.push(service.to_vec());
    out.extend(body);
    out
}

/// A reply from the broker to the client at `client`:
/// `[client][""][MDPC01][service][body...]` (the first frame is for the ROUTER).
pub fn client_reply(client: Vec<u8>, service: &[u8], body: Frames) -> Frames {
    let mut out = Vec::with_capacity(4 + body.len());
    out.push(client);
    out.push(Vec::new());
    out.push(CLIENT.to_vec());
    out.push(service.to_vec());
    out.extend(body);
    out
}

/// A worker command without arguments, optionally routed to `identity` (broker side).
pub fn command(identity: Option<&[u8]>, cmd: Command) -> Frames {
    command_with_room(identity, cmd, 0)
}

/// [`command`], with room for `more` frames after it.
fn command_with_room(identity: Option<&[u8]>, cmd: Command, more: usize) -> Frames {
    let mut out = Vec::with_capacity(4 + more);
    if let Some(id) = identity {
        out.push(id.to_vec());
    }
    out.push(Vec::new());
    out.push(WORKER.to_vec());
    out.push(vec![cmd as u8]);
    out
}

/// READY for `service`; the capacity frame is added only when `capacity > 1`.
pub fn ready(service: &[u8], capacity: u32) -> Frames {
    let mut out = command(None, Command::Ready);
    out.push(service.to_vec());
    if capacity > 1 {
        out.push([CAPACITY_PREFIX, capacity.to_string().as_bytes()].concat());
    }
    out
}

/// A REQUEST to the worker at `identity` (broker side), or a REPLY from a worker
/// (`identity` None): `[""][MDPW01][cmd][client][""][body...]`.
pub fn routed(identity: Option<&[u8]>, cmd: Command, client: &[u8], body: Frames) -> Frames {
    let mut out = command_with_room(identity, cmd, 2 + body.len());
    out.push(client.to_vec());
    out.push(Vec::new());
    out.extend(body);
    out
}

fn parse_capacity(frame: &[u8]) -> Result<u32, ProtocolError> {
    let bad = || ProtocolError::UnknownCommand {
        protocol: PROTOCOL,
        command: preview(frame),
    };
    let digits = frame.strip_prefix(CAPACITY_PREFIX).ok_or_else(bad)?;
    let k: u32 = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    if (1..=MAX_CAPACITY).contains(&k) {
        Ok(k)
    } else {
        Err(bad())
    }
}

fn split_client(mut args: Frames, what: &'static str) -> Result<(Vec<u8>, Frames), ProtocolError> {
    let got = args.len() + 3;
    let Some([client, empty]) = take_front(&mut args) else {
        return Err(count(what, "at least 5", got));
    };
    expect_empty(&empty, "delimiter after the client address")?;
    Ok((client, args))
}

/// Takes the first `N` frames off `frames` (the rest move down in place, so the
/// remaining frames need no new vector), or `None`, leaving `frames` as it was, when
/// there are fewer.
fn take_front<const N: usize>(frames: &mut Frames) -> Option<[Vec<u8>; N]> {
    if frames.len() < N {
        return None;
    }
    let mut front = frames.drain(..N);
    Some(std::array::from_fn(|_| front.next().unwrap_or_default()))
}

fn expect_empty(frame: &[u8], what: &'static str) -> Result<(), ProtocolError> {
    if frame.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::NotEmpty {
            protocol: PROTOCOL,
            what,
            got: frame.len(),
        })
    }
}

fn count(what: &'static str, expected: &'static str, got: usize) -> ProtocolError {
    ProtocolError::FrameCount {
        protocol: PROTOCOL,
        what,
        expected,
        got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: &[&[u8]]) -> Frames {
        v.iter().map(|x| x.to_vec()).collect()
    }

    #[test]
    fn client_request_round_trip() {
        let req = client_request(b"echo", f(&[b"a", b"b"]));
        assert_eq!(req, f(&[b"", b"MDPC01", b"echo", b"a", b"b"]));
        assert_eq!(
            parse_to_broker(req),
            Ok(ToBroker::Client {
                service: b"echo".to_vec(),
                body: f(&[b"a", b"b"])
            })
        );
        let reply = client_reply(b"C".to_vec(), b"echo", f(&[b"x"]));
        assert_eq!(reply, f(&[b"C", b"", b"MDPC01", b"echo", b"x"]));
        assert_eq!(
            parse_client_reply(reply[1..].to_vec()),
            Ok((b"echo".to_vec(), f(&[b"x"])))
        );
    }

    #[test]
    fn worker_commands() {
        assert_eq!(ready(b"s", 1), f(&[b"", b"MDPW01", b"\x01", b"s"]));
        assert_eq!(
            parse_to_broker(ready(b"s", 1)),
            Ok(ToBroker::Worker(FromWorker::Ready {
                service: b"s".to_vec(),
                capacity: 1
            }))
        );
        assert_eq!(
            parse_to_broker(ready(b"s", 8)),
            Ok(ToBroker::Worker(FromWorker::Ready {
                service: b"s".to_vec(),
                capacity: 8
            }))
        );
        let reply = routed(None, Command::Reply, b"C", f(&[b"r"]));
        assert_eq!(reply, f(&[b"", b"MDPW01", b"\x03", b"C", b"", b"r"]));
        assert_eq!(
            parse_to_broker(reply),
            Ok(ToBroker::Worker(FromWorker::Reply {
                client: b"C".to_vec(),
                body: f(&[b"r"])
            }))
        );
        assert_eq!(
            parse_to_broker(command(None, Command::Heartbeat)),
            Ok(ToBroker::Worker(FromWorker::Heartbeat))
        );
        assert_eq!(
            parse_to_broker(command(None, Command::Disconnect)),
            Ok(ToBroker::Worker(FromWorker::Disconnect))
        );
        let req = routed(Some(b"W"), Command::Request, b"C", f(&[b"q"]));
        assert_eq!(req, f(&[b"W", b"", b"MDPW01", b"\x02", b"C", b"", b"q"]));
        assert_eq!(
            parse_to_worker(req[1..].to_vec()),
            Ok(ToWorker::Request {
                client: b"C".to_vec(),
                body: f(&[b"q"])
            })
        );
        assert_eq!(
            parse_to_worker(command(None, Command::Disconnect)),
            Ok(ToWorker::Disconnect)
        );
    }

    #[test]
    fn garbage_is_typed() {
        assert!(parse_to_broker(vec![]).is_err());
        assert!(parse_to_broker(f(&[b""])).is_err());
        assert!(parse_to_broker(f(&[b"x", b"MDPC01", b"s"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPX01", b"s"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPC01"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x09"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"0x01", b"s"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x01"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x01", b"s", b"capacity=0"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x01", b"s", b"capacity=x"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x01", b"s", b"capacity=1001"])).is_err());
        assert_eq!(
            parse_to_broker(f(&[b"", b"MDPW01", b"\x01", b"s", b"capacity=1000"])),
            Ok(ToBroker::Worker(FromWorker::Ready {
                service: b"s".to_vec(),
                capacity: MAX_CAPACITY
            }))
        );
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x01", b"s", b"junk"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x03", b"C"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x03", b"C", b"x", b"r"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x04", b"extra"])).is_err());
        assert!(parse_to_broker(f(&[b"", b"MDPW01", b"\x02", b"C", b"", b"r"])).is_err());
        assert!(parse_to_worker(f(&[b"", b"MDPW01", b"\x01", b"s"])).is_err());
        assert!(parse_to_worker(f(&[b"", b"MDPC01", b"\x04"])).is_err());
        assert!(parse_client_reply(f(&[b"", b"MDPW01", b"s"])).is_err());
    }
}
