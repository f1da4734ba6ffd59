//! The Majordomo (7/MDP) worker core.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::backoff::Reconnects;
use super::frames::mdp::{self, Command, ToWorker};
use super::frames::Frames;
use super::timer::Timers;
use crate::config::{Backoff, Heartbeat};
use crate::error::ProtocolError;

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
    /// A request to handle; answer with [`MdWorker::reply`] and the same `client`.
    Request {
        /// The client address, to hand back with the reply.
        client: Vec<u8>,
        /// The request body frames.
        body: Frames,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Heartbeat,
    Expiry,
    Reconnect,
}

/// The Majordomo worker state machine: one service, up to `capacity` requests at once.
///
/// Contract: after [`MdWorker::new`] and every `handle_*`, [`MdWorker::reply`] or
/// [`MdWorker::disconnect`] call, drain [`MdWorker::poll_transmit`] and act on each item
/// in order, drain [`MdWorker::poll_event`], and call [`MdWorker::handle_timeout`] no
/// later than [`MdWorker::poll_timeout`].
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
    inflight: usize,
    timers: Timers<Timer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl MdWorker {
    /// A worker for `service` that connects at once and sends READY (with the capacity
    /// extension frame only when `capacity > 1`). `seed` drives the backoff jitter.
    pub fn new(
        now: Instant,
        service: &[u8],
        capacity: u32,
        heartbeat: Heartbeat,
        reconnect: Backoff,
        seed: u64,
    ) -> Self {
        let mut w = MdWorker {
            service: service.to_vec(),
            capacity: capacity.max(1),
            heartbeat,
            reconnects: Reconnects::new(reconnect, seed),
            connected: false,
            inflight: 0,
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        w.connect(now);
        w.events.push_back(Event::Connected);
        w
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
                self.inflight += 1;
                self.events.push_back(Event::Request { client, body });
            }
            ToWorker::Disconnect => {
                self.transmits.push_back(Transmit::Disconnect);
                self.connect(now);
                self.events.push_back(Event::DisconnectedByBroker);
            }
        }
    }

    /// Sends the reply to the request from `client`.
    pub fn reply(&mut self, _now: Instant, client: &[u8], body: Frames) {
        self.inflight = self.inflight.saturating_sub(1);
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
        self.inflight
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
