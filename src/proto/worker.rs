//! The Majordomo (7/MDP) worker core.
//!
//! Each request passes the worker's [`Gate`] on arrival and on its answer: duplicate
//! suppression with a reply cache, deadlines, re-runs and dead letters, all off unless
//! [`MdWorker::set_policy`] turns them on (see [`crate::proto::gate`]). A copy of a
//! running request is answered at the client address frame of its own REQUEST, with its
//! own attempt.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use foldhash::HashMap;

use super::backoff::Reconnects;
use super::envelope::{Reply, Request};
use super::frames::mdp::{self, Command, ToWorker};
use super::frames::Frames;
use super::gate::{Admit, Done, Gate, Note, Policy, Record, Running};
use super::timer::Timers;
use crate::config::{Backoff, Heartbeat};
use crate::error::{ConfigError, ProtocolError};

/// What the driver must do to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Open a fresh DEALER and connect it to the broker.
    Connect,
    /// Close the socket.
    Disconnect,
    /// Send this message.
    Send(Frames),
}

/// What the application (or the log) should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request to handle; answer with [`MdWorker::reply`] and the same `token`.
    Request {
        /// Names the request in [`MdWorker::reply`].
        token: u64,
        /// The request: its metadata (from a bosun client), service and payload.
        request: Request,
    },
    /// The broker was silent for `liveness × interval`; reconnecting after `after`.
    BrokerLost {
        /// Reconnect attempt that comes next, from 1.
        attempt: u32,
        /// The backoff before it.
        after: Duration,
    },
    /// The broker sent DISCONNECT; a fresh socket was opened and READY sent.
    DisconnectedByBroker,
    /// A fresh socket connected and READY was sent.
    Connected,
    /// A message that breaks the protocol was dropped.
    Malformed(ProtocolError),
    /// The gate answered or held a request without the application, or is running one
    /// again or gave up on it (see [`crate::proto::gate`]).
    Gated(Note),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Heartbeat,
    Expiry,
    Reconnect,
}

/// The Majordomo worker state machine: one service, up to `capacity` requests at once.
///
/// Contract: feed [`MdWorker::handle_wall_clock`] before [`MdWorker::handle_frames`]
/// (deadlines and the duplicate window are judged against it). After
/// [`MdWorker::new`] and every `handle_*`, [`MdWorker::reply`] or
/// [`MdWorker::disconnect`] call, drain [`MdWorker::poll_record`] into the store first
/// (before anything queued with it is sent), then drain [`MdWorker::poll_transmit`] and
/// act on each item in order, drain [`MdWorker::poll_event`], and call
/// [`MdWorker::handle_timeout`] no later than [`MdWorker::poll_timeout`].
///
/// Requests are never dropped for lack of capacity: after a reconnect a new broker may
/// hand out requests while old ones still run, and the driver queues them.
#[derive(Debug)]
pub struct MdWorker {
    service: Vec<u8>,
    capacity: u32,
    heartbeat: Heartbeat,
    reconnects: Reconnects,
    connected: bool,
    /// Requests handed out and not replied to: the client address their reply goes to,
    /// and what the gate tracks of them.
    inflight: HashMap<u64, (Vec<u8>, Running)>,
    gate: Gate<Vec<u8>>,
    next_token: u64,
    timers: Timers<Timer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl MdWorker {
    /// A worker for `service` that connects at once and sends READY (with the capacity
    /// extension frame only when `capacity > 1`). `seed` drives the backoff jitter.
    /// Fails on a setting that could make it spin or overflow: a zero heartbeat or
    /// backoff, a capacity outside `1..=1000`, an `mmi.` service name.
    pub fn new(
        now: Instant,
        service: &[u8],
        capacity: u32,
        heartbeat: Heartbeat,
        reconnect: Backoff,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        heartbeat.validate_at(now)?;
        reconnect.validate_at("reconnect", now)?;
        if capacity == 0 || capacity > mdp::MAX_CAPACITY {
            return Err(ConfigError::Invalid {
                field: "capacity",
                reason: format!("must be between 1 and {}", mdp::MAX_CAPACITY),
            });
        }
        if service.starts_with(crate::proto::broker::MMI_PREFIX) {
            return Err(ConfigError::Invalid {
                field: "service",
                reason: "names starting with mmi. belong to the broker".into(),
            });
        }
        let mut w = MdWorker {
            service: service.to_vec(),
            capacity,
            heartbeat,
            reconnects: Reconnects::new(reconnect, seed),
            connected: false,
            inflight: HashMap::default(),
            gate: Gate::default(),
            next_token: 0,
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        w.connect(now);
        w.events.push_back(Event::Connected);
        Ok(w)
    }

    /// Sets what the gate does (default: nothing; see [`crate::proto::gate`]). Call
    /// before the first request: requests in flight are tracked by the old gate's rules.
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

    /// The gate, to look at.
    pub fn gate(&self) -> &Gate<Vec<u8>> {
        &self.gate
    }

    /// Feeds a message from the broker.
    pub fn handle_frames(&mut self, now: Instant, frames: Frames) {
        if !self.connected {
            return;
        }
        let msg = match mdp::parse_to_worker(frames) {
            Ok(m) => m,
            Err(e) => return self.events.push_back(Event::Malformed(e)),
        };
        // Any valid command is a sign of life.
        self.reconnects.reset();
        self.timers
            .set(Timer::Expiry, now + self.heartbeat.expiry());
        match msg {
            ToWorker::Heartbeat => {}
            ToWorker::Request { client, body } => {
                let (request, bad) = Request::parse(Some(self.service.clone()), body);
                if let Some(e) = bad {
                    self.events
                        .push_back(Event::Malformed(ProtocolError::Envelope(e)));
                }
                match self.gate.admit(now, &request, client, true) {
                    Admit::Run(client, running) => {
                        self.next_token += 1;
                        let token = self.next_token;
                        self.inflight.insert(token, (client, running));
                        self.events.push_back(Event::Request { token, request });
                    }
                    Admit::Answer(client, body, note) => {
                        self.send_reply(&client, body);
                        self.events.push_back(Event::Gated(note));
                    }
                    Admit::Held(note) => self.events.push_back(Event::Gated(note)),
                }
            }
            ToWorker::Disconnect => {
                self.transmits.push_back(Transmit::Disconnect);
                self.connect(now);
                self.events.push_back(Event::DisconnectedByBroker);
            }
        }
    }

    /// Sends the answer to request `token`: the payload (or the error) and, when the
    /// client is a bosun peer, the metadata with its id, attempt and status; and the same
    /// answer to every copy of it the gate held, each with its own attempt. A failure
    /// that the gate runs again is not sent: the request comes back as an
    /// [`Event::Request`] with the same token. An unknown token (answered already) is
    /// ignored.
    pub fn reply(&mut self, now: Instant, token: u64, reply: Reply) {
        let Some((client, running)) = self.inflight.remove(&token) else {
            return;
        };
        match self.gate.finish(now, running, reply) {
            Done::Rerun(running, request, note) => {
                self.inflight.insert(token, (client, running));
                self.events.push_back(Event::Gated(note));
                self.events.push_back(Event::Request { token, request });
            }
            Done::Answered { first, held, note } => {
                self.send_reply(&client, first);
                for (client, body) in held {
                    self.send_reply(&client, body);
                }
                if let Some(note) = note {
                    self.events.push_back(Event::Gated(note));
                }
            }
        }
    }

    /// A REPLY of `body` to `client`, when connected.
    fn send_reply(&mut self, client: &[u8], body: Frames) {
        if self.connected {
            self.transmits.push_back(Transmit::Send(mdp::routed(
                None,
                Command::Reply,
                client,
                body,
            )));
        }
    }

    /// Says goodbye: DISCONNECT to the broker. The driver then closes the socket.
    pub fn disconnect(&mut self) {
        if self.connected {
            self.transmits
                .push_back(Transmit::Send(mdp::command(None, Command::Disconnect)));
            self.transmits.push_back(Transmit::Disconnect);
            self.connected = false;
        }
        self.timers = Timers::new();
    }

    /// Feeds the passing of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Heartbeat => {
                    self.transmits
                        .push_back(Transmit::Send(mdp::command(None, Command::Heartbeat)));
                    self.timers
                        .set(Timer::Heartbeat, now + self.heartbeat.interval);
                }
                Timer::Expiry => {
                    let (attempt, after) = self.reconnects.failed();
                    self.transmits.push_back(Transmit::Disconnect);
                    self.connected = false;
                    self.timers.cancel(Timer::Heartbeat);
                    self.timers.set(Timer::Reconnect, now + after);
                    self.events.push_back(Event::BrokerLost { attempt, after });
                }
                Timer::Reconnect => {
                    self.connect(now);
                    self.events.push_back(Event::Connected);
                }
            }
        }
    }

    /// The next thing to do to the socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`MdWorker::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Requests handed out and not yet replied to.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether a socket is connected.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn connect(&mut self, now: Instant) {
        self.connected = true;
        self.transmits.push_back(Transmit::Connect);
        self.transmits
            .push_back(Transmit::Send(mdp::ready(&self.service, self.capacity)));
        self.timers
            .set(Timer::Heartbeat, now + self.heartbeat.interval);
        self.timers
            .set(Timer::Expiry, now + self.heartbeat.expiry());
    }
}
