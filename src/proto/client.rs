//! The asynchronous Majordomo client core: many requests in flight over one DEALER,
//! each with its own timeout and retries, replies matched to requests by id.
//!
//! A request is `[""][MDPC01][service][envelope]`; the reply carries an envelope with
//! the same id. The first reply for an id completes it; any later reply for that id (the
//! answer to an earlier attempt, or a worker that ran it twice) is dropped, so the
//! application gets each reply once.

use std::collections::{BTreeMap, VecDeque};

use foldhash::HashMap;
use std::time::Instant;

use uuid::Uuid;

use super::backoff;
use super::envelope::Envelope;
use super::frames::mdp;
use super::frames::Frames;
use crate::config::Retry;
use crate::error::ProtocolError;

/// What the application should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to request `id`. Emitted at most once per id.
    Reply {
        /// The request id.
        id: Uuid,
        /// The service that answered.
        service: Vec<u8>,
        /// The reply body.
        body: Vec<u8>,
    },
    /// Every attempt of request `id` timed out.
    GaveUp {
        /// The request id.
        id: Uuid,
        /// How many attempts were made.
        attempts: u32,
        /// The request body, handed back.
        body: Vec<u8>,
    },
    /// A reply for an id that is not outstanding (late or duplicate) was dropped.
    Duplicate {
        /// Its id.
        id: Uuid,
    },
    /// A message that is not a Majordomo reply with an envelope was dropped.
    Malformed(ProtocolError),
}

#[derive(Debug)]
struct Outstanding {
    service: Vec<u8>,
    envelope: Envelope,
    /// Key in `AsyncClient::deadlines`.
    deadline: (Instant, u64),
}

/// The asynchronous Majordomo client state machine.
///
/// Contract: after [`AsyncClient::send`], [`AsyncClient::handle_frames`] and
/// [`AsyncClient::handle_timeout`], drain [`AsyncClient::poll_transmit`] (messages for
/// the DEALER), drain [`AsyncClient::poll_event`], and call
/// [`AsyncClient::handle_timeout`] no later than [`AsyncClient::poll_timeout`].
#[derive(Debug)]
pub struct AsyncClient {
    retry: Retry,
    rng: fastrand::Rng,
    outstanding: HashMap<Uuid, Outstanding>,
    /// Per request: when its current attempt times out (or its backoff ends).
    deadlines: BTreeMap<(Instant, u64), (Uuid, Phase)>,
    next_key: u64,
    transmits: VecDeque<Frames>,
    events: VecDeque<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the reply to the current attempt.
    Waiting,
    /// Backing off before the next attempt.
    Backoff,
}

impl AsyncClient {
    /// A client with the given per-request retry policy; `seed` drives the jitter.
    pub fn new(retry: Retry, seed: u64) -> Self {
        AsyncClient {
            retry,
            rng: fastrand::Rng::with_seed(seed),
            outstanding: HashMap::default(),
            deadlines: BTreeMap::new(),
            next_key: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts `envelope` as a request to `service` (attempt 1); returns its id.
    pub fn send(&mut self, now: Instant, service: &[u8], mut envelope: Envelope) -> Uuid {
        envelope.attempt = 1;
        let id = envelope.id;
        let deadline = self.key(now + self.retry.timeout);
        self.deadlines.insert(deadline, (id, Phase::Waiting));
        self.transmits
            .push_back(mdp::client_request(service, vec![envelope.encode()]));
        self.outstanding.insert(
            id,
            Outstanding {
                service: service.to_vec(),
                envelope,
                deadline,
            },
        );
        id
    }

    /// Feeds a message the DEALER received.
    pub fn handle_frames(&mut self, _now: Instant, frames: Frames) {
        let (service, body) = match mdp::parse_client_reply(frames) {
            Ok(r) => r,
            Err(e) => return self.events.push_back(Event::Malformed(e)),
        };
        let envelope = match <[Vec<u8>; 1]>::try_from(body) {
            Ok([frame]) => match Envelope::decode(&frame) {
                Ok(e) => e,
                Err(e) => return self.events.push_back(Event::Malformed(e.into())),
            },
            Err(body) => {
                return self
                    .events
                    .push_back(Event::Malformed(ProtocolError::FrameCount {
                        protocol: "7/MDP",
                        what: "client reply body",
                        expected: "1 (an envelope)",
                        got: body.len(),
                    }))
            }
        };
        match self.outstanding.remove(&envelope.id) {
            Some(out) => {
                self.deadlines.remove(&out.deadline);
                self.events.push_back(Event::Reply {
                    id: envelope.id,
                    service,
                    body: envelope.body,
                });
            }
            None => self.events.push_back(Event::Duplicate { id: envelope.id }),
        }
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
            match phase {
                Phase::Waiting if out.envelope.attempt >= self.retry.retries => {
                    if let Some(out) = self.outstanding.remove(&id) {
                        self.events.push_back(Event::GaveUp {
                            id,
                            attempts: out.envelope.attempt,
                            body: out.envelope.body,
                        });
                    }
                }
                Phase::Waiting => {
                    let after =
                        backoff::delay(&self.retry.backoff, out.envelope.attempt, self.rng.f64());
                    self.next_key += 1;
                    let key = (now + after, self.next_key);
                    out.deadline = key;
                    self.deadlines.insert(key, (id, Phase::Backoff));
                }
                Phase::Backoff => {
                    out.envelope.attempt += 1;
                    self.next_key += 1;
                    let key = (now + self.retry.timeout, self.next_key);
                    out.deadline = key;
                    self.deadlines.insert(key, (id, Phase::Waiting));
                    self.transmits.push_back(mdp::client_request(
                        &out.service,
                        vec![out.envelope.encode()],
                    ));
                }
            }
        }
    }

    /// The next message for the DEALER.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Frames> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`AsyncClient::handle_timeout`] next; `None` when nothing is out.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|k| k.0)
    }

    /// Requests sent and not yet answered or given up.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    fn key(&mut self, at: Instant) -> (Instant, u64) {
        self.next_key += 1;
        (at, self.next_key)
    }
}
