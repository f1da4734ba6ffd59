//! Lazy Pirate: a client that never hangs on a dead server.
//!
//! One request at a time over a REQ socket. Send; wait up to `timeout` for the reply;
//! on a timeout, have the driver close the socket (linger 0) and open a fresh one, back
//! off, and send the same request again, up to `retries` attempts in all; then give up
//! with the request handed back.
//!
//! On the wire a request is one frame, an encoded [`Envelope`]; the server answers with
//! an envelope of the same id and attempt (a plain echo server does exactly that). A
//! reply whose id or attempt is not the outstanding one is discarded, never returned.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::backoff;
use super::envelope::Envelope;
use super::timer::Timers;
use crate::config::Retry;
use crate::error::{ClientError, ProtocolError};

/// What the driver must do to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send this one-frame message.
    Send(Vec<u8>),
    /// Close the socket with linger 0 and open and connect a fresh one: a REQ socket
    /// that lost a reply can never send again.
    Reset,
}

/// Why a reply was thrown away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// It answers an earlier attempt or an earlier request.
    Stale {
        /// The id the reply carried.
        id: Uuid,
        /// The attempt the reply carried.
        attempt: u32,
    },
    /// No request is outstanding.
    Unsolicited,
    /// It is not a bosun envelope of one frame.
    Malformed(ProtocolError),
}

/// What the application (or the log) should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to the outstanding request. Emitted once per request.
    Reply {
        /// The request's id.
        id: Uuid,
        /// The attempt that was answered.
        attempt: u32,
        /// The reply body.
        body: Vec<u8>,
    },
    /// An attempt timed out; the next starts after `after`.
    Retrying {
        /// The request's id.
        id: Uuid,
        /// The attempt that timed out.
        attempt: u32,
        /// The backoff before the next attempt.
        after: Duration,
    },
    /// Every attempt timed out.
    GaveUp {
        /// The request's id.
        id: Uuid,
        /// How many attempts were made.
        attempts: u32,
        /// The request body, handed back.
        body: Vec<u8>,
    },
    /// A reply was discarded.
    Discarded(Discard),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The outstanding attempt gets no reply after this.
    Reply,
    /// The backoff after a timed-out attempt ends.
    Backoff,
}

#[derive(Debug)]
struct Outstanding {
    envelope: Envelope,
}

/// The Lazy Pirate state machine.
///
/// Contract: after [`LazyPirate::send`], [`LazyPirate::handle_reply`] or
/// [`LazyPirate::handle_timeout`], drain [`LazyPirate::poll_transmit`] and act on every
/// item in order, drain [`LazyPirate::poll_event`], then wait until
/// [`LazyPirate::poll_timeout`] (or a reply) and call back in.
#[derive(Debug)]
pub struct LazyPirate {
    retry: Retry,
    rng: fastrand::Rng,
    outstanding: Option<Outstanding>,
    timers: Timers<Timer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl LazyPirate {
    /// A client with the given retry policy; `seed` drives the backoff jitter.
    pub fn new(retry: Retry, seed: u64) -> Self {
        LazyPirate {
            retry,
            rng: fastrand::Rng::with_seed(seed),
            outstanding: None,
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The retry policy in force.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// True while a request is outstanding.
    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// Starts `envelope` as the outstanding request (its attempt is set to 1).
    /// Fails with [`ClientError::Busy`] while another request is outstanding.
    pub fn send(&mut self, now: Instant, mut envelope: Envelope) -> Result<Uuid, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        envelope.attempt = 1;
        let id = envelope.id;
        self.outstanding = Some(Outstanding { envelope });
        self.transmit_attempt(now);
        Ok(id)
    }

    /// Feeds a message that arrived on the socket.
    pub fn handle_reply(&mut self, _now: Instant, frames: Vec<Vec<u8>>) {
        let reply = match <[Vec<u8>; 1]>::try_from(frames) {
            Ok([frame]) => match Envelope::decode(&frame) {
                Ok(e) => e,
                Err(e) => return self.discard(Discard::Malformed(e.into())),
            },
            Err(frames) => {
                return self.discard(Discard::Malformed(ProtocolError::FrameCount {
                    protocol: "lazy pirate",
                    what: "reply",
                    expected: "1",
                    got: frames.len(),
                }))
            }
        };
        let waiting = self.timers.get(Timer::Reply).is_some();
        let Some(out) = self.outstanding.as_ref() else {
            return self.discard(Discard::Unsolicited);
        };
        if !waiting || reply.id != out.envelope.id || reply.attempt != out.envelope.attempt {
            return self.discard(Discard::Stale {
                id: reply.id,
                attempt: reply.attempt,
            });
        }
        self.timers.cancel(Timer::Reply);
        self.outstanding = None;
        self.events.push_back(Event::Reply {
            id: reply.id,
            attempt: reply.attempt,
            body: reply.body,
        });
    }

    /// Feeds the passing of time; call when [`LazyPirate::poll_timeout`] is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Reply => self.attempt_timed_out(now),
                Timer::Backoff => {
                    if let Some(out) = self.outstanding.as_mut() {
                        out.envelope.attempt += 1;
                        self.transmit_attempt(now);
                    }
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

    /// When to call [`LazyPirate::handle_timeout`] next; `None` when idle.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    fn transmit_attempt(&mut self, now: Instant) {
        if let Some(out) = self.outstanding.as_ref() {
            self.transmits
                .push_back(Transmit::Send(out.envelope.encode()));
            self.timers.set(Timer::Reply, now + self.retry.timeout);
        }
    }

    fn attempt_timed_out(&mut self, now: Instant) {
        let Some(out) = self.outstanding.as_ref() else {
            return;
        };
        let attempt = out.envelope.attempt;
        // The REQ socket is stuck waiting for a reply that may never come.
        self.transmits.push_back(Transmit::Reset);
        if attempt >= self.retry.retries {
            let Some(out) = self.outstanding.take() else {
                return;
            };
            self.events.push_back(Event::GaveUp {
                id: out.envelope.id,
                attempts: attempt,
                body: out.envelope.body,
            });
            return;
        }
        let after = backoff::delay(&self.retry.backoff, attempt, self.rng.f64());
        self.timers.set(Timer::Backoff, now + after);
        self.events.push_back(Event::Retrying {
            id: out.envelope.id,
            attempt,
            after,
        });
    }

    fn discard(&mut self, why: Discard) {
        self.events.push_back(Event::Discarded(why));
    }
}
