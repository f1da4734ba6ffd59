//! Lazy Pirate: a client that never hangs on a dead server.
//!
//! One request at a time over a REQ socket. Send; wait up to `timeout` for the reply;
//! on a timeout, have the driver close the socket (linger 0) and open a fresh one, back
//! off, and send the same request again, up to `retries` attempts in all; then give up
//! with the request handed back.
//!
//! On the wire a request is the payload frames and bosun's metadata frame (see
//! [`super::envelope`]). A bosun server answers with metadata of the same id and
//! attempt; a reply whose id or attempt is not the outstanding one is discarded, never
//! returned. A plain reply (a foreign REP server's, with no metadata) is taken as the
//! answer to the outstanding attempt: the socket is re-made for every attempt, so no
//! reply to an earlier one can arrive on it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::backoff;
use super::envelope::{Answer, Envelope, Status, MAX_PAYLOAD_BYTES};
use super::frames::Frames;
use super::timer::Timers;
use crate::config::Retry;
use crate::error::{ClientError, ConfigError, ProtocolError};

/// What the driver must do to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send this message.
    Send(Frames),
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
    /// Its metadata frame does not decode.
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
        /// The handler's payload, or the failure the server reported.
        answer: Answer,
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
        /// The request payload, handed back.
        payload: Frames,
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
    /// When the request's overall budget ends, with a [`Retry::deadline`].
    give_up_at: Option<Instant>,
    /// The attempt it was started with: the retry budget counts from here.
    first: u32,
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
    /// A client with the given retry policy; `seed` drives the backoff jitter. Fails on
    /// a policy that could spin or overflow the clock after `now`.
    pub fn new(now: Instant, retry: Retry, seed: u64) -> Result<Self, ConfigError> {
        retry.validate_at(now)?;
        Ok(LazyPirate {
            retry,
            rng: fastrand::Rng::with_seed(seed),
            outstanding: None,
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The retry policy in force.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// True while a request is outstanding.
    pub fn is_busy(&self) -> bool {
        self.outstanding.is_some()
    }

    /// Starts `envelope` as the outstanding request, with its attempt as it is (at
    /// least 1): a new request is attempt 1, and one re-sent from an outbox after a
    /// restart continues its count. The retry budget (`retries` attempts) counts from
    /// this attempt. Fails with [`ClientError::Busy`] while another request is
    /// outstanding, and with [`ClientError::TooLarge`] for a payload no bosun peer
    /// would accept.
    pub fn send(&mut self, now: Instant, mut envelope: Envelope) -> Result<Uuid, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        check_size(&envelope)?;
        let (first, give_up_at) = start_request(&mut envelope, &self.retry, now);
        let id = envelope.meta.id;
        self.outstanding = Some(Outstanding {
            envelope,
            first,
            give_up_at,
        });
        self.transmit_attempt(now);
        Ok(id)
    }

    /// Feeds a message that arrived on the socket.
    pub fn handle_reply(&mut self, _now: Instant, frames: Frames) {
        let (payload, meta) = match Envelope::split(frames) {
            Ok(split) => split,
            Err(e) => return self.discard(Discard::Malformed(e.into())),
        };
        let waiting = self.timers.get(Timer::Reply).is_some();
        let Some(out) = self.outstanding.as_ref() else {
            return self.discard(Discard::Unsolicited);
        };
        let (id, attempt) = (out.envelope.meta.id, out.envelope.meta.attempt);
        let status = match &meta {
            Some(m) if !waiting || m.id != id || m.attempt != attempt => {
                return self.discard(Discard::Stale {
                    id: m.id,
                    attempt: m.attempt,
                })
            }
            Some(m) => m.status,
            None if !waiting => return self.discard(Discard::Unsolicited),
            None => Status::Ok,
        };
        self.timers.cancel(Timer::Reply);
        self.outstanding = None;
        self.events.push_back(Event::Reply {
            id,
            attempt,
            answer: Answer::from_reply(status, payload),
        });
    }

    /// Feeds the passing of time; call when [`LazyPirate::poll_timeout`] is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Reply => self.attempt_timed_out(now),
                Timer::Backoff => {
                    if let Some(out) = self.outstanding.as_mut() {
                        out.envelope.meta.attempt += 1;
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
            self.timers
                .set(Timer::Reply, attempt_ends(&self.retry, now, out.give_up_at));
        }
    }

    fn attempt_timed_out(&mut self, now: Instant) {
        let Some(out) = self.outstanding.as_ref() else {
            return;
        };
        let attempt = out.envelope.meta.attempt;
        let made = session_attempts(out.first, attempt);
        // The REQ socket is stuck waiting for a reply that may never come.
        self.transmits.push_back(Transmit::Reset);
        let after = backoff::delay(&self.retry.backoff, made, self.rng.f64());
        if gives_up(&self.retry, made, now, after, out.give_up_at) {
            let Some(out) = self.outstanding.take() else {
                return;
            };
            self.events.push_back(Event::GaveUp {
                id: out.envelope.meta.id,
                attempts: attempt,
                payload: out.envelope.payload,
            });
            return;
        }
        self.timers.set(Timer::Backoff, now + after);
        self.events.push_back(Event::Retrying {
            id: out.envelope.meta.id,
            attempt,
            after,
        });
    }

    fn discard(&mut self, why: Discard) {
        self.events.push_back(Event::Discarded(why));
    }
}

/// Starts `envelope` as a request sent at `now` under `retry`, and returns the attempt
/// its retry budget counts from and the moment to give up (see [`Retry::give_up_at`]).
/// A new request is attempt 1 and, unless it carries a deadline already (the caller's
/// own), gets `created_at + budget` as its deadline. A request resumed from an outbox
/// keeps its attempt (the budget counts from there) and its stored deadline, if any; it
/// gets none stamped, since its creation time is from an earlier session. Every client
/// core starts its requests here, so every pattern has the same retry policy (see
/// [`Retry::budget`]).
pub fn start_request(
    envelope: &mut Envelope,
    retry: &Retry,
    now: Instant,
) -> (u32, Option<Instant>) {
    envelope.meta.attempt = envelope.meta.attempt.max(1);
    let first = envelope.meta.attempt;
    if first == 1 && envelope.meta.deadline_ms.is_none() {
        let ms = u64::try_from(retry.budget().as_millis()).unwrap_or(u64::MAX);
        envelope.meta.deadline_ms = Some(envelope.meta.created_at_ms.saturating_add(ms));
    }
    (first, retry.give_up_at(now))
}

/// When the reply to an attempt started at `now` stops being waited for: one timeout
/// later, or at `give_up_at` if that comes first.
pub fn attempt_ends(retry: &Retry, now: Instant, give_up_at: Option<Instant>) -> Instant {
    let end = now + retry.timeout;
    give_up_at.map_or(end, |g| end.min(g))
}

/// Whether a request that just timed out at `now` after `made` attempts in this session
/// (see [`session_attempts`]) is given up: it had its last attempt, or the next would start (after `pause`) at or past `give_up_at`.
pub fn gives_up(
    retry: &Retry,
    made: u32,
    now: Instant,
    pause: Duration,
    give_up_at: Option<Instant>,
) -> bool {
    made >= retry.retries || give_up_at.is_some_and(|g| now + pause >= g)
}

/// How many attempts a request started at attempt `first` has made once attempt
/// `attempt` is out: what the retry budget and the backoff count.
pub fn session_attempts(first: u32, attempt: u32) -> u32 {
    attempt.saturating_sub(first).saturating_add(1)
}

/// Refuses a payload larger than [`MAX_PAYLOAD_BYTES`]: a bosun peer's socket would drop
/// it, and the request would look like a dead server.
pub fn check_size(envelope: &Envelope) -> Result<(), ClientError> {
    let len = envelope.payload_len();
    if len > MAX_PAYLOAD_BYTES {
        return Err(ClientError::TooLarge {
            len,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}
