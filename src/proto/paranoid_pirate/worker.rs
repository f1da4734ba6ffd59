//! The 6/PPP worker core.
//!
//! Each request passes the worker's [`Gate`] on arrival and on its answer (see
//! [`crate::proto::gate`]; off unless [`Worker::set_policy`] turns it on). A copy of the
//! running request that arrives while the worker is busy is held and answered at its own
//! routing envelope, with its own attempt, when the first copy's reply is sent; any other
//! request that arrives while busy is dropped, as before.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{Backoff, Heartbeat};
use crate::error::{ConfigError, ProtocolError};
use crate::proto::backoff::Reconnects;
use crate::proto::envelope::{Reply, Request};
use crate::proto::frames::ppp::{self, Command, FromQueue};
use crate::proto::frames::Frames;
use crate::proto::gate::{Admit, Done, Gate, Note, Policy, Record, Running};
use crate::proto::timer::Timers;

/// What the driver must do to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Open a fresh DEALER (new identity) and connect it to the queue.
    Connect,
    /// Close the socket with linger 0.
    Disconnect,
    /// Send this message on the socket.
    Send(Frames),
}

/// What the application (or the log) should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request to handle; answer with [`Worker::reply`].
    Request {
        /// The request: its metadata (from a bosun client) and payload.
        request: Request,
    },
    /// The queue was silent for `liveness × interval`; the socket was closed and a new
    /// one will connect after `after`.
    QueueLost {
        /// The reconnect attempt that comes next, from 1.
        attempt: u32,
        /// The backoff before it.
        after: Duration,
    },
    /// A fresh socket connected and READY was sent.
    Connected,
    /// A request arrived while the worker was busy; 6/PPP queues never do this, so
    /// it is dropped (its client's retry recovers it).
    DroppedWhileBusy,
    /// A message that breaks the protocol was dropped.
    Malformed(ProtocolError),
    /// The gate answered or held a request without the application, or is running one
    /// again or gave up on it (see [`crate::proto::gate`]).
    Gated(Note),
}

/// [`Worker::reply`] was called with no request outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no request is outstanding")]
pub struct NotBusy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Send a HEARTBEAT.
    Heartbeat,
    /// The queue is dead when nothing was heard from it by then.
    Expiry,
    /// The backoff before reconnecting ends.
    Reconnect,
}

/// The Paranoid Pirate worker state machine.
///
/// Contract: feed [`Worker::handle_wall_clock`] before [`Worker::handle_frames`]
/// (deadlines and the duplicate window are judged against it). After [`Worker::new`]
/// and every `handle_*` or [`Worker::reply`] call, drain [`Worker::poll_record`] into the
/// store first (before anything queued with it is sent), then drain
/// [`Worker::poll_transmit`] and act on each item in order, drain [`Worker::poll_event`],
/// and call [`Worker::handle_timeout`] no later than [`Worker::poll_timeout`].
///
/// One request at a time. The driver's guard keeps heartbeats flowing while a slow
/// request is handled.
#[derive(Debug)]
pub struct Worker {
    heartbeat: Heartbeat,
    reconnects: Reconnects,
    connected: bool,
    /// Whether the queue knows this socket (READY was sent on it).
    registered: bool,
    /// The client address of the request being handled, and what the gate tracks of it.
    busy: Option<(Frames, Running)>,
    gate: Gate<Frames>,
    timers: Timers<Timer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Worker {
    /// A worker that connects at once and sends READY. `seed` drives the backoff jitter.
    /// Fails on a zero heartbeat or backoff, or durations that overflow the clock.
    pub fn new(
        now: Instant,
        heartbeat: Heartbeat,
        reconnect: Backoff,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        heartbeat.validate_at(now)?;
        reconnect.validate_at("reconnect", now)?;
        let mut w = Worker {
            heartbeat,
            reconnects: Reconnects::new(reconnect, seed),
            connected: false,
            registered: false,
            busy: None,
            gate: Gate::default(),
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        w.connect(now);
        Ok(w)
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

    /// The gate, to look at.
    pub fn gate(&self) -> &Gate<Frames> {
        &self.gate
    }

    /// Feeds a message that arrived from the queue.
    pub fn handle_frames(&mut self, now: Instant, frames: Frames) {
        if !self.connected {
            return;
        }
        let msg = match ppp::parse_from_queue(frames) {
            Ok(m) => m,
            Err(e) => return self.events.push_back(Event::Malformed(e)),
        };
        // Any valid message is a sign of life.
        self.reconnects.reset();
        if self.registered {
            self.timers
                .set(Timer::Expiry, now + self.heartbeat.expiry());
        }
        match msg {
            FromQueue::Heartbeat => {}
            FromQueue::Request { address, body } => {
                let (request, bad) = Request::parse(None, body);
                if self.busy.is_some() {
                    // Only a copy of the running request is kept; anything else (bad
                    // metadata included) is dropped unread, as 6/PPP queues never send it.
                    match self.gate.join(&request, address) {
                        Ok(note) => self.events.push_back(Event::Gated(note)),
                        Err(_) => self.events.push_back(Event::DroppedWhileBusy),
                    }
                    return;
                }
                if let Some(e) = bad {
                    self.events
                        .push_back(Event::Malformed(ProtocolError::Envelope(e)));
                }
                // Idle, so nothing runs: a copy can only be answered now.
                match self.gate.admit(now, &request, address, false) {
                    Admit::Run(address, running) => {
                        self.busy = Some((address, running));
                        self.events.push_back(Event::Request { request });
                    }
                    Admit::Answer(address, body, note) => {
                        self.send_reply(&address, body);
                        self.events.push_back(Event::Gated(note));
                    }
                    Admit::Held(note) => self.events.push_back(Event::Gated(note)),
                }
            }
        }
    }

    /// Sends the answer to the outstanding request: the payload (or the error) and,
    /// when the client is a bosun peer, the metadata with its id, attempt and status; and
    /// the same answer to every copy of it the gate held, each with its own attempt. A
    /// failure that the gate runs again is not sent: the request comes back as an
    /// [`Event::Request`] and the worker stays busy.
    pub fn reply(&mut self, now: Instant, reply: Reply) -> Result<(), NotBusy> {
        let (address, running) = self.busy.take().ok_or(NotBusy)?;
        match self.gate.finish(now, running, reply) {
            Done::Rerun(running, request, note) => {
                self.busy = Some((address, running));
                self.events.push_back(Event::Gated(note));
                self.events.push_back(Event::Request { request });
            }
            Done::Answered { first, held, note } => {
                self.send_reply(&address, first);
                for (address, body) in held {
                    self.send_reply(&address, body);
                }
                if let Some(note) = note {
                    self.events.push_back(Event::Gated(note));
                }
                if self.connected && !self.registered {
                    // Reconnected while busy: register now that a request can be taken.
                    self.register(now);
                }
            }
        }
        Ok(())
    }

    /// The answer `body` to the client at `address`, when connected.
    fn send_reply(&mut self, address: &Frames, body: Frames) {
        if self.connected {
            self.transmits
                .push_back(Transmit::Send(ppp::reply(address, body)));
        }
    }

    /// Feeds the passing of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Heartbeat => {
                    self.transmits
                        .push_back(Transmit::Send(Command::Heartbeat.frames()));
                    self.timers
                        .set(Timer::Heartbeat, now + self.heartbeat.interval);
                }
                Timer::Expiry => {
                    let (attempt, after) = self.reconnects.failed();
                    self.transmits.push_back(Transmit::Disconnect);
                    self.connected = false;
                    self.registered = false;
                    self.timers.cancel(Timer::Heartbeat);
                    self.timers.set(Timer::Reconnect, now + after);
                    self.events.push_back(Event::QueueLost { attempt, after });
                }
                Timer::Reconnect => self.connect(now),
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

    /// When to call [`Worker::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Whether a request is being handled.
    pub fn is_busy(&self) -> bool {
        self.busy.is_some()
    }

    /// Whether a socket is connected (as opposed to backing off before reconnecting).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    fn connect(&mut self, now: Instant) {
        self.transmits.push_back(Transmit::Connect);
        self.connected = true;
        self.events.push_back(Event::Connected);
        if self.busy.is_none() {
            self.register(now);
        }
    }

    /// READY, then heartbeats, and from now on the queue must be heard from.
    fn register(&mut self, now: Instant) {
        self.registered = true;
        self.transmits
            .push_back(Transmit::Send(Command::Ready.frames()));
        self.timers
            .set(Timer::Heartbeat, now + self.heartbeat.interval);
        self.timers
            .set(Timer::Expiry, now + self.heartbeat.expiry());
    }
}
