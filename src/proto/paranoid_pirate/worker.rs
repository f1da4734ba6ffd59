//! The 6/PPP worker core.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{Backoff, Heartbeat};
use crate::error::{ConfigError, ProtocolError};
use crate::proto::backoff::Reconnects;
use crate::proto::envelope::{self, Meta, Reply, Request};
use crate::proto::frames::ppp::{self, Command, FromQueue};
use crate::proto::frames::Frames;
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
/// Contract: after [`Worker::new`] and every `handle_*` or [`Worker::reply`] call,
/// drain [`Worker::poll_transmit`] and act on each item in order, drain
/// [`Worker::poll_event`], and call [`Worker::handle_timeout`] no later than
/// [`Worker::poll_timeout`].
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
    /// The client address and metadata of the request being handled.
    busy: Option<(Frames, Option<Meta>)>,
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
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        w.connect(now);
        Ok(w)
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
                if self.busy.is_some() {
                    self.events.push_back(Event::DroppedWhileBusy);
                } else {
                    let (request, bad) = Request::parse(None, body);
                    if let Some(e) = bad {
                        self.events
                            .push_back(Event::Malformed(ProtocolError::Envelope(e)));
                    }
                    self.busy = Some((address, request.meta.clone()));
                    self.events.push_back(Event::Request { request });
                }
            }
        }
    }

    /// Sends the answer to the outstanding request: the payload (or the error) and,
    /// when the client is a bosun peer, the metadata with its id, attempt and status.
    pub fn reply(&mut self, now: Instant, reply: Reply) -> Result<(), NotBusy> {
        let (address, meta) = self.busy.take().ok_or(NotBusy)?;
        if self.connected {
            let body = envelope::answer(meta.as_ref(), reply);
            self.transmits
                .push_back(Transmit::Send(ppp::reply(&address, body)));
            if !self.registered {
                // Reconnected while busy: register now that a request can be taken.
                self.register(now);
            }
        }
        Ok(())
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
