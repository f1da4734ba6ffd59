//! The 7/MDP client core: requests to services through a Majordomo broker, each with its
//! own timeout and retries, replies matched to requests by id. The blocking
//! [`MajordomoClient`](crate::io::mdclient::MajordomoClient) and the pipelined
//! [`AsyncMajordomoClient`](crate::io::mdclient::AsyncMajordomoClient) both drive it.
//!
//! A request is `[""][MDPC01][service][payload...][metadata]`; a bosun broker's reply
//! carries metadata with the same id (it adds it to a foreign worker's plain reply). The
//! first reply for an id completes it; any later reply for that id (the answer to an
//! earlier attempt, or a worker that ran it twice) is dropped, so the application gets
//! each reply once.
//!
//! Two modes:
//! - [`Mode::Blocking`]: one request at a time; every timed-out attempt makes the
//!   driver re-make its socket ([`Transmit::Reset`]), so no late reply to an earlier
//!   attempt can arrive, and a plain reply (from a foreign broker) answers the one
//!   outstanding request.
//! - [`Mode::Pipelined`]: many requests over one socket; a reply without metadata cannot
//!   be matched to a request and is reported as [`Event::Unmatched`] and dropped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use uuid::Uuid;

use super::backoff;
use super::envelope::{Answer, Envelope, Status};
use super::frames::mdp;
use super::frames::Frames;
use super::lazy_pirate::{attempt_ends, check_size, gives_up, session_attempts, start_request};
use crate::config::Retry;
use crate::error::{ClientError, ConfigError, ProtocolError};

/// How the client uses its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One request at a time; a fresh socket for every attempt; plain replies accepted.
    Blocking,
    /// Many requests in flight on one socket; only replies with metadata are matched.
    Pipelined,
}

/// What the driver must do to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send this message on the DEALER.
    Send(Frames),
    /// Close the socket (linger 0) and connect a fresh one (blocking mode, after a
    /// timed-out attempt).
    Reset,
}

/// What the application should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to request `id`. Emitted at most once per id.
    Reply {
        /// The request id.
        id: Uuid,
        /// The service that answered.
        service: Vec<u8>,
        /// The attempt that was answered: the reply's own, or for a plain reply (blocking
        /// mode), the attempt that was waiting.
        attempt: u32,
        /// The handler's payload, or the failure the worker or broker reported.
        answer: Answer,
    },
    /// An attempt of request `id` timed out; the next starts after `after`.
    Retrying {
        /// The request id.
        id: Uuid,
        /// The attempt that timed out, from 1.
        attempt: u32,
        /// The pause before the next.
        after: Duration,
    },
    /// Every attempt of request `id` timed out.
    GaveUp {
        /// The request id.
        id: Uuid,
        /// How many attempts were made.
        attempts: u32,
        /// The request payload, handed back.
        payload: Frames,
    },
    /// A reply for an id that is not outstanding (late or duplicate) was dropped.
    Duplicate {
        /// Its id.
        id: Uuid,
    },
    /// A reply without metadata arrived in pipelined mode: it cannot be matched to a
    /// request, so it was dropped.
    Unmatched {
        /// The service it came from.
        service: Vec<u8>,
    },
    /// A message that is not a Majordomo reply was dropped.
    Malformed(ProtocolError),
}

#[derive(Debug)]
struct Outstanding {
    service: Vec<u8>,
    envelope: Envelope,
    /// The attempt it was started with: the retry budget counts from here.
    first: u32,
    /// Key in `MdpClient::deadlines`.
    deadline: (Instant, u64),
    /// When the request's overall budget ends, with a [`Retry::deadline`].
    give_up_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the reply to the current attempt.
    Waiting,
    /// Backing off before the next attempt.
    Backoff,
}

/// The 7/MDP client state machine.
///
/// Contract: after [`MdpClient::send`], [`MdpClient::handle_frames`] and
/// [`MdpClient::handle_timeout`], drain [`MdpClient::poll_transmit`] and act on each item
/// in order, drain [`MdpClient::poll_event`], and call [`MdpClient::handle_timeout`] no
/// later than [`MdpClient::poll_timeout`].
#[derive(Debug)]
pub struct MdpClient {
    mode: Mode,
    retry: Retry,
    rng: fastrand::Rng,
    outstanding: HashMap<Uuid, Outstanding>,
    /// Per request: when its current attempt times out (or its backoff ends).
    deadlines: BTreeMap<(Instant, u64), (Uuid, Phase)>,
    next_key: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl MdpClient {
    /// A client with the given per-request retry policy; `seed` drives the jitter.
    /// Fails on a policy that could spin or overflow the clock after `now`.
    pub fn new(now: Instant, mode: Mode, retry: Retry, seed: u64) -> Result<Self, ConfigError> {
        retry.validate_at(now)?;
        Ok(MdpClient {
            mode,
            retry,
            rng: fastrand::Rng::with_seed(seed),
            outstanding: HashMap::default(),
            deadlines: BTreeMap::new(),
            next_key: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The retry policy in force.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// Starts `envelope` as a request to `service`, with its attempt as it is (at least
    /// 1: a new request is attempt 1, one re-sent from an outbox after a restart
    /// continues its count; the retry budget counts from it); returns its id. In
    /// blocking mode, fails with [`ClientError::Busy`] while a request is outstanding;
    /// fails with [`ClientError::TooLarge`] for a payload no bosun peer would accept.
    pub fn send(
        &mut self,
        now: Instant,
        service: &[u8],
        mut envelope: Envelope,
    ) -> Result<Uuid, ClientError> {
        if self.mode == Mode::Blocking && !self.outstanding.is_empty() {
            return Err(ClientError::Busy);
        }
        check_size(&envelope)?;
        let (first, give_up_at) = start_request(&mut envelope, &self.retry, now);
        let id = envelope.meta.id;
        let deadline = self.key(attempt_ends(&self.retry, now, give_up_at));
        self.deadlines.insert(deadline, (id, Phase::Waiting));
        self.transmits.push_back(Transmit::Send(mdp::client_request(
            service,
            envelope.encode(),
        )));
        self.outstanding.insert(
            id,
            Outstanding {
                service: service.to_vec(),
                envelope,
                first,
                deadline,
                give_up_at,
            },
        );
        Ok(id)
    }

    /// Feeds a message the DEALER received.
    pub fn handle_frames(&mut self, _now: Instant, frames: Frames) {
        let (service, body) = match mdp::parse_client_reply(frames) {
            Ok(r) => r,
            Err(e) => return self.events.push_back(Event::Malformed(e)),
        };
        let (payload, meta) = match Envelope::split(body) {
            Ok(split) => split,
            Err(e) => return self.events.push_back(Event::Malformed(e.into())),
        };
        let (id, status, attempt) = match meta {
            Some(m) => (m.id, m.status, Some(m.attempt)),
            None => match self.plain_reply_target() {
                Some(id) => (id, Status::Ok, None),
                None => return self.events.push_back(Event::Unmatched { service }),
            },
        };
        match self.outstanding.remove(&id) {
            Some(out) => {
                self.deadlines.remove(&out.deadline);
                self.events.push_back(Event::Reply {
                    id,
                    service,
                    attempt: attempt.unwrap_or(out.envelope.meta.attempt),
                    answer: Answer::from_reply(status, payload),
                });
            }
            None => self.events.push_back(Event::Duplicate { id }),
        }
    }

    /// The request a reply without metadata answers: in blocking mode, the one
    /// outstanding request while its attempt waits for a reply.
    fn plain_reply_target(&self) -> Option<Uuid> {
        if self.mode != Mode::Blocking {
            return None;
        }
        self.outstanding
            .iter()
            .next()
            .filter(|(id, out)| self.deadlines.get(&out.deadline) == Some(&(**id, Phase::Waiting)))
            .map(|(id, _)| *id)
    }

    /// Feeds the passing of time: retries or gives up on every request that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(entry) = self.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (id, phase) = entry.remove();
            let Some(out) = self.outstanding.get_mut(&id) else {
                continue;
            };
            let attempt = out.envelope.meta.attempt;
            let made = session_attempts(out.first, attempt);
            match phase {
                Phase::Waiting => {
                    if self.mode == Mode::Blocking {
                        self.transmits.push_back(Transmit::Reset);
                    }
                    let after = backoff::delay(&self.retry.backoff, made, self.rng.f64());
                    if gives_up(&self.retry, made, now, after, out.give_up_at) {
                        if let Some(out) = self.outstanding.remove(&id) {
                            self.events.push_back(Event::GaveUp {
                                id,
                                attempts: attempt,
                                payload: out.envelope.payload,
                            });
                        }
                        continue;
                    }
                    self.next_key += 1;
                    let key = (now + after, self.next_key);
                    out.deadline = key;
                    self.deadlines.insert(key, (id, Phase::Backoff));
                    self.events
                        .push_back(Event::Retrying { id, attempt, after });
                }
                Phase::Backoff => {
                    out.envelope.meta.attempt += 1;
                    self.next_key += 1;
                    let key = (
                        attempt_ends(&self.retry, now, out.give_up_at),
                        self.next_key,
                    );
                    out.deadline = key;
                    self.deadlines.insert(key, (id, Phase::Waiting));
                    self.transmits.push_back(Transmit::Send(mdp::client_request(
                        &out.service,
                        out.envelope.encode(),
                    )));
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

    /// When to call [`MdpClient::handle_timeout`] next; `None` when nothing is out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|k| k.0)
    }

    /// Requests sent and not yet answered or given up.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Whether request `id` is outstanding.
    pub fn is_outstanding(&self, id: Uuid) -> bool {
        self.outstanding.contains_key(&id)
    }

    /// Forgets every outstanding request (their replies will count as duplicates);
    /// returns how many there were.
    pub fn abandon(&mut self) -> usize {
        let n = self.outstanding.len();
        self.outstanding.clear();
        self.deadlines.clear();
        n
    }

    fn key(&mut self, at: Instant) -> (Instant, u64) {
        self.next_key += 1;
        (at, self.next_key)
    }
}
