//! Freelance (10/FLP): brokerless request-reply with failover between N servers.
//!
//! The client's ROUTER connects to every server and names each connection by the
//! endpoint it connected to (`ZMQ_CONNECT_ROUTING_ID`, set by
//! [`crate::io::transport::Transport::connect`]), so the client addresses a server by
//! that endpoint whatever identity the server announces: `tcp://localhost:P` reaches a
//! server bound to `tcp://127.0.0.1:P` or `tcp://*:P`. (A bosun server still takes its
//! endpoint as its identity, for clients written after the Guide's flclient3.)
//! The client pings every server (`["PING"]`, answered `["PONG"]`); a server that has
//! not answered for `server_ttl` is down. A request `[control][payload...][metadata]`
//! goes to the first server that is up; the server returns the control frame unchanged
//! followed by the reply (a foreign server's plain payload is accepted: the control frame
//! alone matches it). When an attempt times out, that server is taken as down until it
//! answers a ping again, and the request goes to the next server that is up. The control
//! frame is the request id, so a late or duplicate reply is dropped, never returned
//! twice. A server speaks only when spoken to: nothing reaches a client before its first
//! PING or request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::backoff;
use super::envelope::{self, Answer, Envelope, Meta, Reply, Request, Status};
use super::frames::Frames;
use super::lazy_pirate::{attempt_ends, check_size, gives_up, session_attempts, start_request};
use super::timer::Timers;
use crate::config::{fits, Retry};
use crate::error::{ClientError, ConfigError, ProtocolError};

/// The ping frame.
pub const PING: &[u8] = b"PING";
/// The ping answer frame.
pub const PONG: &[u8] = b"PONG";

/// Settings of a [`Freelance`] client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreelanceConfig {
    /// How often every server is pinged. Default 2000 ms, the 10/FLP reference value.
    pub ping_interval: Duration,
    /// A server silent this long is down. Default 6000 ms (three pings), the reference.
    pub server_ttl: Duration,
    /// Per-attempt timeout, attempts in all, and the pause between attempts.
    pub retry: Retry,
}

impl FreelanceConfig {
    /// Checks that no interval is zero and no duration overflows the clock after `now`.
    pub fn validate_at(&self, now: Instant) -> Result<(), ConfigError> {
        for (field, d) in [
            ("ping_interval", self.ping_interval),
            ("server_ttl", self.server_ttl),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than zero".into(),
                });
            }
            fits(field, now, d)?;
        }
        self.retry.validate_at(now)
    }
}

impl Default for FreelanceConfig {
    fn default() -> Self {
        FreelanceConfig {
            ping_interval: Duration::from_millis(2000),
            server_ttl: Duration::from_millis(6000),
            retry: Retry::default(),
        }
    }
}

/// What the application (or the log) should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to the outstanding request; at most once per request.
    Reply {
        /// The request id.
        id: Uuid,
        /// The server that answered.
        server: Vec<u8>,
        /// The attempt the reply answered (a plain reply: the attempt that was out).
        attempt: u32,
        /// The handler's payload, or the failure the server reported.
        answer: Answer,
    },
    /// An attempt timed out; the next goes to another server at once when one is up,
    /// else after `after`.
    Retrying {
        /// The request id.
        id: Uuid,
        /// The attempt that timed out.
        attempt: u32,
        /// The pause before the next (zero: failed over at once).
        after: Duration,
    },
    /// Every attempt timed out.
    GaveUp {
        /// The request id.
        id: Uuid,
        /// Attempts made.
        attempts: u32,
        /// The request payload, handed back.
        payload: Frames,
    },
    /// A message came from a peer whose identity is none of the servers. With the
    /// client's ROUTER naming each connection by its endpoint this cannot come from a
    /// server it connected to; a driver over a socket that does not (so that the
    /// server's own identity is used) sees it for a server whose identity is not the
    /// endpoint text the client used.
    UnknownServer {
        /// The identity it used.
        identity: Vec<u8>,
    },
    /// A server answered a ping (or a request) after being down or unknown.
    ServerUp {
        /// Its endpoint.
        server: Vec<u8>,
    },
    /// A server went silent, or did not answer an attempt in time.
    ServerDown {
        /// Its endpoint.
        server: Vec<u8>,
    },
    /// A reply to a request that is not outstanding was dropped.
    Duplicate {
        /// The control frame it carried, as an id when it is one.
        id: Option<Uuid>,
    },
    /// A message that breaks the protocol was dropped.
    Malformed {
        /// The sender.
        server: Vec<u8>,
        /// What was wrong.
        error: ProtocolError,
    },
}

#[derive(Debug)]
struct Server {
    endpoint: Vec<u8>,
    up: bool,
    /// Down when nothing was heard by then.
    expires: Instant,
}

#[derive(Debug)]
struct Outstanding {
    envelope: Envelope,
    /// Index of the server the current attempt went to, if it went anywhere.
    server: Option<usize>,
    /// When the request's overall budget ends, with a [`Retry::deadline`].
    give_up_at: Option<Instant>,
    /// The attempt it was started with: the retry budget counts from here.
    first: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Ping,
    /// Ping the servers that are down again, sooner than the next round.
    Probe,
    Attempt,
    Backoff,
}

/// First pause before servers that are down (or not yet heard from) are pinged again.
/// A server that does not probe new connections cannot be reached until the
/// connection is made, and a ping sent before that is dropped by the ROUTER: probing
/// at 10 ms, doubling up to the ping interval, finds a fresh server within a few
/// milliseconds of its connection, at the cost of about eight extra pings per server
/// each time one goes down.
pub const FIRST_PROBE: Duration = Duration::from_millis(10);

/// The Freelance client state machine.
///
/// Contract: after [`Freelance::new`], [`Freelance::send`], [`Freelance::handle_frames`]
/// and [`Freelance::handle_timeout`], drain [`Freelance::poll_transmit`] (each item is
/// a message for the ROUTER, its first frame the server endpoint), drain
/// [`Freelance::poll_event`], and call [`Freelance::handle_timeout`] no later than
/// [`Freelance::poll_timeout`].
#[derive(Debug)]
pub struct Freelance {
    cfg: FreelanceConfig,
    rng: fastrand::Rng,
    servers: Vec<Server>,
    outstanding: Option<Outstanding>,
    /// The pause before the next probe of the servers that are down.
    probe: Duration,
    timers: Timers<Timer>,
    transmits: VecDeque<Frames>,
    events: VecDeque<Event>,
}

impl Freelance {
    /// A client of `servers` (their endpoints, which are also their identities); pings
    /// them all at once. Fails with no server, or on a setting that could spin.
    pub fn new(
        now: Instant,
        servers: &[String],
        cfg: FreelanceConfig,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        cfg.validate_at(now)?;
        if servers.is_empty() {
            return Err(ConfigError::Invalid {
                field: "servers",
                reason: "no server endpoint given".into(),
            });
        }
        let mut client = Freelance {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            servers: servers
                .iter()
                .map(|s| Server {
                    endpoint: s.as_bytes().to_vec(),
                    up: false,
                    expires: now,
                })
                .collect(),
            outstanding: None,
            probe: FIRST_PROBE,
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        client.ping_all(now);
        client.start_probing(now);
        Ok(client)
    }

    /// Starts `envelope` as the outstanding request, with its attempt as it is (at
    /// least 1: a new request is attempt 1, one re-sent from an outbox after a restart
    /// continues its count; the retry budget counts from it). It goes out at once if a
    /// server is up, else as soon as one answers a ping (within the attempt timeout).
    pub fn send(&mut self, now: Instant, mut envelope: Envelope) -> Result<Uuid, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        check_size(&envelope)?;
        let (first, give_up_at) = start_request(&mut envelope, &self.cfg.retry, now);
        let id = envelope.meta.id;
        self.outstanding = Some(Outstanding {
            envelope,
            server: None,
            first,
            give_up_at,
        });
        self.attempt(now);
        Ok(id)
    }

    /// Feeds a message the ROUTER received: `[server endpoint][...]`.
    pub fn handle_frames(&mut self, now: Instant, frames: Frames) {
        let mut it = frames.into_iter();
        let Some(server) = it.next() else { return };
        let rest: Frames = it.collect();
        let Some(index) = self.servers.iter().position(|s| s.endpoint == server) else {
            return self
                .events
                .push_back(Event::UnknownServer { identity: server });
        };
        match rest.as_slice() {
            [pong] if pong == PONG => self.heard(now, index),
            // A server that probes new connections (ZMQ_PROBE_ROUTER) says hello with an
            // empty message: ping it at once instead of waiting for the next round.
            [hello] if hello.is_empty() => self.transmits.push_back(vec![server, PING.to_vec()]),
            [_, _, ..] => {
                self.heard(now, index);
                let mut rest = rest;
                let control = rest.remove(0);
                self.reply(now, index, &control, rest);
            }
            _ => self.events.push_back(Event::Malformed {
                server,
                error: ProtocolError::FrameCount {
                    protocol: "10/FLP",
                    what: "server message",
                    expected: "1 (PONG) or at least 2 ([control][reply...])",
                    got: rest.len(),
                },
            }),
        }
    }

    /// Feeds the passing of time.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Ping => self.ping_all(now),
                Timer::Probe => self.probe_down(now),
                Timer::Attempt => self.attempt_timed_out(now),
                Timer::Backoff => self.attempt(now),
            }
        }
        let mut went_down = false;
        for s in &mut self.servers {
            if s.up && s.expires <= now {
                s.up = false;
                went_down = true;
                self.events.push_back(Event::ServerDown {
                    server: s.endpoint.clone(),
                });
            }
        }
        if went_down {
            self.start_probing(now);
        }
    }

    /// Pings the servers that are down again soon ([`FIRST_PROBE`]), then less and less
    /// often, up to the ping interval.
    fn start_probing(&mut self, now: Instant) {
        self.probe = FIRST_PROBE.min(self.cfg.ping_interval);
        self.timers.set(Timer::Probe, now + self.probe);
    }

    fn probe_down(&mut self, now: Instant) {
        let mut any = false;
        for s in self.servers.iter().filter(|s| !s.up) {
            any = true;
            self.transmits
                .push_back(vec![s.endpoint.clone(), PING.to_vec()]);
        }
        if any && self.probe < self.cfg.ping_interval {
            self.probe = self.probe.saturating_mul(2).min(self.cfg.ping_interval);
            self.timers.set(Timer::Probe, now + self.probe);
        }
    }

    /// The next message for the ROUTER.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Frames> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Freelance::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self
            .servers
            .iter()
            .filter(|s| s.up)
            .map(|s| s.expires)
            .min();
        [self.timers.next(), expiry].into_iter().flatten().min()
    }

    /// Endpoints of the servers that are up now.
    pub fn servers_up(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.up)
            .map(|s| String::from_utf8_lossy(&s.endpoint).into_owned())
            .collect()
    }

    fn ping_all(&mut self, now: Instant) {
        for s in &self.servers {
            self.transmits
                .push_back(vec![s.endpoint.clone(), PING.to_vec()]);
        }
        self.timers.set(Timer::Ping, now + self.cfg.ping_interval);
    }

    fn heard(&mut self, now: Instant, index: usize) {
        let ttl = self.cfg.server_ttl;
        let Some(s) = self.servers.get_mut(index) else {
            return;
        };
        s.expires = now + ttl;
        if !s.up {
            s.up = true;
            self.events.push_back(Event::ServerUp {
                server: s.endpoint.clone(),
            });
            // A request waiting for any server to come up can go now.
            if self
                .outstanding
                .as_ref()
                .is_some_and(|o| o.server.is_none())
                && self.timers.get(Timer::Backoff).is_none()
            {
                self.send_to(now, index);
            }
        }
    }

    fn reply(&mut self, _now: Instant, index: usize, control: &[u8], body: Frames) {
        let control_id = Uuid::from_slice(control).ok();
        let matches = self
            .outstanding
            .as_ref()
            .is_some_and(|o| Some(o.envelope.meta.id) == control_id);
        let server = self
            .servers
            .get(index)
            .map(|s| s.endpoint.clone())
            .unwrap_or_default();
        let (payload, meta) = match Envelope::split(body) {
            Ok(split) => split,
            Err(e) => {
                return self.events.push_back(Event::Malformed {
                    server,
                    error: e.into(),
                })
            }
        };
        let Some(out) = self.outstanding.as_ref().filter(|_| matches) else {
            return self.events.push_back(Event::Duplicate { id: control_id });
        };
        // A bosun server answers with the attempt it got; a reply to an earlier attempt
        // still answers the request (the id matched), so it is taken.
        let status = meta.as_ref().map_or(Status::Ok, |m| m.status);
        let attempt = meta
            .as_ref()
            .map_or(out.envelope.meta.attempt, |m| m.attempt);
        let id = out.envelope.meta.id;
        self.outstanding = None;
        self.timers.cancel(Timer::Attempt);
        self.timers.cancel(Timer::Backoff);
        self.events.push_back(Event::Reply {
            id,
            server,
            attempt,
            answer: Answer::from_reply(status, payload),
        });
    }

    /// Starts the current attempt: to the first server that is up, or waiting for one.
    fn attempt(&mut self, now: Instant) {
        let Some(out) = self.outstanding.as_mut() else {
            return;
        };
        out.server = None;
        self.timers.set(
            Timer::Attempt,
            attempt_ends(&self.cfg.retry, now, out.give_up_at),
        );
        if let Some(index) = self.servers.iter().position(|s| s.up) {
            self.send_to(now, index);
        }
    }

    fn send_to(&mut self, _now: Instant, index: usize) {
        let Some(out) = self.outstanding.as_mut() else {
            return;
        };
        let Some(server) = self.servers.get(index) else {
            return;
        };
        out.server = Some(index);
        let mut msg = Vec::with_capacity(out.envelope.payload.len() + 3);
        msg.push(server.endpoint.clone());
        msg.push(out.envelope.meta.id.as_bytes().to_vec());
        msg.extend(out.envelope.encode());
        self.transmits.push_back(msg);
    }

    fn attempt_timed_out(&mut self, now: Instant) {
        let Some(out) = self.outstanding.as_ref() else {
            return;
        };
        let mut went_down = false;
        if let Some(s) = out.server.and_then(|i| self.servers.get_mut(i)) {
            if s.up {
                s.up = false;
                went_down = true;
                self.events.push_back(Event::ServerDown {
                    server: s.endpoint.clone(),
                });
            }
        }
        if went_down {
            self.start_probing(now);
        }
        let Some(out) = self.outstanding.as_ref() else {
            return;
        };
        let attempts = out.envelope.meta.attempt;
        let made = session_attempts(out.first, attempts);
        let id = out.envelope.meta.id;
        // A fail-over starts the next attempt at once; a backoff after `after`.
        let after = if self.servers.iter().any(|s| s.up) {
            Duration::ZERO
        } else {
            backoff::delay(&self.cfg.retry.backoff, made, self.rng.f64())
        };
        if gives_up(&self.cfg.retry, made, now, after, out.give_up_at) {
            if let Some(out) = self.outstanding.take() {
                self.events.push_back(Event::GaveUp {
                    id: out.envelope.meta.id,
                    attempts,
                    payload: out.envelope.payload,
                });
            }
            return;
        }
        if let Some(out) = self.outstanding.as_mut() {
            out.envelope.meta.attempt += 1;
        }
        // Another server may be up already: fail over at once; else back off.
        self.events.push_back(Event::Retrying {
            id,
            attempt: attempts,
            after,
        });
        if after.is_zero() {
            self.attempt(now);
        } else {
            self.timers.set(Timer::Backoff, now + after);
        }
    }
}

/// What a Freelance server makes of one message `[client][...]` from its ROUTER.
#[derive(Debug, Clone, PartialEq, Eq)]
// One value per message, made and taken apart at once: boxing the request would cost an
// allocation per message to save stack bytes for a moment.
#[allow(clippy::large_enum_variant)]
pub enum Incoming {
    /// A PING: send this PONG.
    Ping(Frames),
    /// A request: hand it to the handler, then send [`ReplyTo::answer`].
    Request(ReplyTo, Request),
}

/// Where the answer to a Freelance request goes, and what it must carry back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    client: Vec<u8>,
    control: Vec<u8>,
    meta: Option<Meta>,
}

impl ReplyTo {
    /// The message for the ROUTER: `[client][control][answer...]`.
    pub fn answer(self, reply: Reply) -> Frames {
        let mut out = vec![self.client, self.control];
        out.extend(envelope::answer(self.meta.as_ref(), reply));
        out
    }

    /// The message for the ROUTER carrying an answer already made (payload and
    /// metadata frames): `[client][control][body...]`.
    pub fn route(self, body: Frames) -> Frames {
        let mut out = Vec::with_capacity(2 + body.len());
        out.push(self.client);
        out.push(self.control);
        out.extend(body);
        out
    }
}

/// Reads one message a Freelance server's ROUTER received. Payload frames are kept as
/// they came (never joined); metadata is split off when the client is a bosun peer.
pub fn parse_incoming(frames: Frames) -> Result<Incoming, ProtocolError> {
    let mut it = frames.into_iter();
    let client = it
        .next()
        .ok_or(ProtocolError::Empty { protocol: "10/FLP" })?;
    let rest: Frames = it.collect();
    match rest.as_slice() {
        [ping] if ping == PING => Ok(Incoming::Ping(vec![client, PONG.to_vec()])),
        [_control, _, ..] => {
            let mut rest = rest.into_iter();
            let control = rest.next().unwrap_or_default();
            let (request, bad) = Request::parse(None, rest.collect());
            if let Some(e) = bad {
                return Err(e.into());
            }
            let reply_to = ReplyTo {
                client,
                control,
                meta: request.meta.clone(),
            };
            Ok(Incoming::Request(reply_to, request))
        }
        _ => Err(ProtocolError::FrameCount {
            protocol: "10/FLP",
            what: "client message",
            expected: "1 (PING) or at least 2 ([control][body...])",
            got: rest.len(),
        }),
    }
}
