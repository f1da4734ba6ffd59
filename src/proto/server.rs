//! The server cores: a plain REP server for Lazy Pirate clients, and a Freelance
//! (10/FLP) server. Both hand the application each request (metadata, payload frames)
//! and take its reply; neither has timers of its own.
//!
//! The REP server also carries the fault switches that demos and tests use to make a
//! server lose replies, stall, or crash.
//!
//! Each request that passes the fault switches passes the server's [`Gate`] (see
//! [`crate::proto::gate`]; off unless [`Server::set_policy`] turns it on). A REP socket
//! answers only the request it holds, so a REP server never holds a copy of a running
//! request: such a copy is refused at once. With bosun's drivers that never happens,
//! since a REP server runs its handler before it reads the next request: a retry is read
//! after the first copy was answered, and is answered from the reply cache, with the
//! retry's own attempt. A Freelance server holds copies like a worker.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use super::envelope::{Reply, Request};
use super::frames::Frames;
use super::freelance::{self, Incoming, ReplyTo};
use super::gate::{Admit, Done, Gate, Note, Policy, Record, Running};
use crate::error::{ConfigError, ProtocolError};

/// Which protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// A REP socket: one request at a time, the reply must go before the next is read.
    Rep,
    /// A ROUTER speaking 10/FLP: PING/PONG and `[control][payload...]` requests.
    Freelance,
}

/// Fault switches of the REP server. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop every Nth request unanswered, as a server that crashed and came back would:
    /// the REP socket is closed and bound again.
    pub fail_every: Option<u64>,
    /// Stall every Nth request for `delay` before answering.
    pub delay_every: Option<u64>,
    /// How long a stall lasts.
    pub delay: Duration,
    /// Stop after receiving this many requests, leaving the last one unanswered: a crash.
    pub crash_after: Option<u64>,
}

/// What the driver must do to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send this message.
    Send(Frames),
    /// Close the socket (dropping what it holds) and bind a fresh one.
    Rebind,
}

/// What the application (or the log) should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request to handle; answer with [`Server::reply`] and the same `token`.
    Request {
        /// Names the request in [`Server::reply`].
        token: u64,
        /// The request.
        request: Request,
        /// A simulated stall to wait out before handling it (fault switch).
        stall: Option<Duration>,
    },
    /// Request number `received` was dropped on purpose (fault switch).
    Dropped {
        /// Requests received so far.
        received: u64,
    },
    /// Request number `received` was the last: the server simulates a crash.
    Crashed {
        /// Requests received so far.
        received: u64,
    },
    /// A message that breaks the protocol was dropped.
    Malformed(ProtocolError),
    /// The gate answered or held a request without the application, or is running one
    /// again or gave up on it (see [`crate::proto::gate`]).
    Gated(Note),
}

/// Where an answer goes.
#[derive(Debug)]
enum To {
    /// The request the REP socket holds.
    Rep,
    /// A Freelance client, with the control frame to echo.
    Freelance(ReplyTo),
}

impl To {
    /// The message for the socket carrying `body` (payload and metadata frames).
    fn route(self, body: Frames) -> Frames {
        match self {
            To::Rep => body,
            To::Freelance(to) => to.route(body),
        }
    }
}

/// A server state machine.
///
/// Contract: feed [`Server::handle_wall_clock`] before [`Server::handle_frames`]
/// (deadlines and the duplicate window are judged against it). After every
/// [`Server::handle_frames`] and [`Server::reply`], drain [`Server::poll_record`] into
/// the store first (before anything queued with it is sent), then
/// [`Server::poll_transmit`] and [`Server::poll_event`]. A REP server must be answered
/// (or its socket re-bound) before the driver reads the next request.
#[derive(Debug)]
pub struct Server {
    dialect: Dialect,
    faults: Faults,
    received: u64,
    next_token: u64,
    pending: HashMap<u64, (To, Running)>,
    gate: Gate<To>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Server {
    /// A server of `dialect` with the given fault switches.
    pub fn new(dialect: Dialect, faults: Faults) -> Self {
        Server {
            dialect,
            faults,
            received: 0,
            next_token: 0,
            pending: HashMap::default(),
            gate: Gate::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Sets what the gate does (default: nothing; see [`crate::proto::gate`]). Call
    /// before the first request.
    pub fn set_policy(&mut self, policy: Policy) -> Result<(), ConfigError> {
        policy.validate()?;
        self.gate = Gate::new(policy);
        Ok(())
    }

    /// Feeds a reading of the wall clock (see [`Gate::handle_wall_clock`]).
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.gate.handle_wall_clock(now, unix_ms);
    }

    /// The next record for the store (see [`crate::proto::gate::Record`]).
    #[must_use]
    pub fn poll_record(&mut self) -> Option<Record> {
        self.gate.poll_record()
    }

    /// Feeds a message the socket received.
    pub fn handle_frames(&mut self, now: Instant, frames: Frames) {
        let (to, request) = match self.dialect {
            Dialect::Rep => {
                let (request, bad) = Request::parse(None, frames);
                if let Some(e) = bad {
                    self.events.push_back(Event::Malformed(e.into()));
                }
                (To::Rep, request)
            }
            Dialect::Freelance => match freelance::parse_incoming(frames) {
                Ok(Incoming::Ping(pong)) => return self.transmits.push_back(Transmit::Send(pong)),
                Ok(Incoming::Request(to, request)) => (To::Freelance(to), request),
                Err(e) => return self.events.push_back(Event::Malformed(e)),
            },
        };
        self.received += 1;
        let n = self.received;
        let hits = |every: Option<u64>| every.is_some_and(|e| e > 0 && n % e == 0);
        if self.faults.crash_after == Some(n) {
            return self.events.push_back(Event::Crashed { received: n });
        }
        if hits(self.faults.fail_every) {
            if self.dialect == Dialect::Rep {
                self.transmits.push_back(Transmit::Rebind);
            }
            return self.events.push_back(Event::Dropped { received: n });
        }
        let can_hold = self.dialect == Dialect::Freelance;
        let to = match self.gate.admit(now, &request, to, can_hold) {
            Admit::Run(to, running) => (to, running),
            Admit::Answer(to, body, note) => {
                self.transmits.push_back(Transmit::Send(to.route(body)));
                return self.events.push_back(Event::Gated(note));
            }
            Admit::Held(note) => return self.events.push_back(Event::Gated(note)),
        };
        let stall = hits(self.faults.delay_every).then_some(self.faults.delay);
        self.next_token += 1;
        let token = self.next_token;
        self.pending.insert(token, to);
        self.events.push_back(Event::Request {
            token,
            request,
            stall,
        });
    }

    /// Sends the answer to request `token`: the payload (or the error) and, when the
    /// client is a bosun peer, the metadata with its id, attempt and status; and the same
    /// answer to every copy the gate held (Freelance only), each with its own attempt. A
    /// failure that the gate runs again is not sent: the request comes back as an
    /// [`Event::Request`] with the same token (and no stall). An unknown token is
    /// ignored.
    pub fn reply(&mut self, now: Instant, token: u64, reply: Reply) {
        let Some((to, running)) = self.pending.remove(&token) else {
            return;
        };
        match self.gate.finish(now, running, reply) {
            Done::Rerun(running, request, note) => {
                self.pending.insert(token, (to, running));
                self.events.push_back(Event::Gated(note));
                self.events.push_back(Event::Request {
                    token,
                    request,
                    stall: None,
                });
            }
            Done::Answered { first, held, note } => {
                self.transmits.push_back(Transmit::Send(to.route(first)));
                for (to, body) in held {
                    self.transmits.push_back(Transmit::Send(to.route(body)));
                }
                if let Some(note) = note {
                    self.events.push_back(Event::Gated(note));
                }
            }
        }
    }

    /// The next thing to do to the socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The protocol it speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Requests received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envelope::{Envelope, HandlerError, Status};
    use uuid::Uuid;

    #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    fn request(server: &mut Server) -> (u64, Request) {
        match server.poll_event() {
            Some(Event::Request { token, request, .. }) => (token, request),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn freelance_keeps_frames_and_control_and_answers_errors_with_status() {
        let mut s = Server::new(Dialect::Freelance, Faults::default());
        let now = t0();
        s.handle_frames(now, vec![b"C".to_vec(), b"PING".to_vec()]);
        assert_eq!(
            s.poll_transmit(),
            Some(Transmit::Send(vec![b"C".to_vec(), b"PONG".to_vec()]))
        );
        let e = Envelope::new(Uuid::from_u128(9), 1, vec![b"a".to_vec(), b"b".to_vec()]);
        let mut msg = vec![b"C".to_vec(), b"ctl".to_vec()];
        msg.extend(e.encode());
        s.handle_frames(now, msg);
        let (token, req) = request(&mut s);
        assert_eq!(req.payload, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(req.id(), Some(Uuid::from_u128(9)));
        s.reply(now, token, Err(HandlerError::new("bad input")));
        let Some(Transmit::Send(out)) = s.poll_transmit() else {
            panic!("no answer")
        };
        assert_eq!(&out[..2], &[b"C".to_vec(), b"ctl".to_vec()]);
        let answer = Envelope::decode(out[2..].to_vec()).unwrap();
        assert_eq!(answer.meta.status, Status::Error);
        assert_eq!(answer.payload, vec![b"bad input".to_vec()]);
        // Twice is once.
        s.reply(now, token, Ok(vec![]));
        assert_eq!(s.poll_transmit(), None);
    }

    #[test]
    fn rep_faults_drop_rebind_stall_and_crash() {
        let faults = Faults {
            fail_every: Some(2),
            delay_every: Some(3),
            delay: Duration::from_millis(5),
            crash_after: Some(4),
        };
        let mut s = Server::new(Dialect::Rep, faults);
        let now = t0();
        s.handle_frames(now, vec![b"1".to_vec()]);
        let (token, req) = request(&mut s);
        assert_eq!(req.meta, None);
        s.reply(now, token, Ok(req.payload));
        assert_eq!(s.poll_transmit(), Some(Transmit::Send(vec![b"1".to_vec()])));
        s.handle_frames(now, vec![b"2".to_vec()]);
        assert_eq!(s.poll_transmit(), Some(Transmit::Rebind));
        assert_eq!(s.poll_event(), Some(Event::Dropped { received: 2 }));
        s.handle_frames(now, vec![b"3".to_vec()]);
        assert!(matches!(
            s.poll_event(),
            Some(Event::Request { stall: Some(d), .. }) if d == Duration::from_millis(5)
        ));
        s.handle_frames(now, vec![b"4".to_vec()]);
        assert_eq!(s.poll_event(), Some(Event::Crashed { received: 4 }));
    }
}
