//! Freelance (10/FLP): brokerless request-reply with failover between N servers.
//!
//! The client's ROUTER connects to every server; each server's ROUTER uses its public
//! endpoint as its routing identity, so the client addresses a server by endpoint.
//! The client pings every server (`["PING"]`, answered `["PONG"]`); a server that has
//! not answered for `server_ttl` is down. A request `[control][envelope]` goes to the
//! first server that is up; the server returns the control frame unchanged followed by
//! the reply. When an attempt times out, that server is taken as down until it answers
//! a ping again, and the request goes to the next server that is up. The control frame
//! is the request id, so a late or duplicate reply is dropped, never returned twice.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::backoff;
use super::envelope::Envelope;
use super::frames::Frames;
use super::timer::Timers;
use crate::config::Retry;
use crate::error::{ClientError, ProtocolError};

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
        /// The reply body.
        body: Vec<u8>,
    },
    /// Every attempt timed out.
    GaveUp {
        /// The request id.
        id: Uuid,
        /// Attempts made.
        attempts: u32,
        /// The request body, handed back.
        body: Vec<u8>,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Ping,
    Attempt,
    Backoff,
}

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
    timers: Timers<Timer>,
    transmits: VecDeque<Frames>,
    events: VecDeque<Event>,
}

impl Freelance {
    /// A client of `servers` (their endpoints, which are also their identities); pings
    /// them all at once.
    pub fn new(now: Instant, servers: &[String], cfg: FreelanceConfig, seed: u64) -> Self {
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
            timers: Timers::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        client.ping_all(now);
        client
    }

    /// Starts `envelope` as the outstanding request. It goes out at once if a server is
    /// up, else as soon as one answers a ping (within the attempt timeout).
    pub fn send(&mut self, now: Instant, mut envelope: Envelope) -> Result<Uuid, ClientError> {
        if self.outstanding.is_some() {
            return Err(ClientError::Busy);
        }
        envelope.attempt = 0;
        let id = envelope.id;
        self.outstanding = Some(Outstanding {
            envelope,
            server: None,
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
            return self.events.push_back(Event::Malformed {
                server,
                error: ProtocolError::UnknownCommand {
                    protocol: "10/FLP",
                    command: b"unknown server".to_vec(),
                },
            });
        };
        match rest.as_slice() {
            [pong] if pong == PONG => self.heard(now, index),
            // A server that probes new connections (ZMQ_PROBE_ROUTER) says hello with an
            // empty message: ping it at once instead of waiting for the next round.
            [hello] if hello.is_empty() => self.transmits.push_back(vec![server, PING.to_vec()]),
            [control, body] => {
                self.heard(now, index);
                self.reply(now, index, control, body);
            }
            _ => self.events.push_back(Event::Malformed {
                server,
                error: ProtocolError::FrameCount {
                    protocol: "10/FLP",
                    what: "server message",
                    expected: "1 (PONG) or 2 ([control][reply])",
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
                Timer::Attempt => self.attempt_timed_out(now),
                Timer::Backoff => self.attempt(now),
            }
        }
        for s in &mut self.servers {
            if s.up && s.expires <= now {
                s.up = false;
                self.events.push_back(Event::ServerDown {
                    server: s.endpoint.clone(),
                });
            }
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

    fn reply(&mut self, _now: Instant, index: usize, control: &[u8], body: &[u8]) {
        let control_id = Uuid::from_slice(control).ok();
        let matches = self
            .outstanding
            .as_ref()
            .is_some_and(|o| Some(o.envelope.id) == control_id);
        if !matches {
            return self.events.push_back(Event::Duplicate { id: control_id });
        }
        let reply = match Envelope::decode(body) {
            Ok(e) => e,
            Err(e) => {
                let server = self.servers.get(index).map(|s| s.endpoint.clone());
                return self.events.push_back(Event::Malformed {
                    server: server.unwrap_or_default(),
                    error: e.into(),
                });
            }
        };
        self.outstanding = None;
        self.timers.cancel(Timer::Attempt);
        self.timers.cancel(Timer::Backoff);
        self.events.push_back(Event::Reply {
            id: reply.id,
            server: self
                .servers
                .get(index)
                .map(|s| s.endpoint.clone())
                .unwrap_or_default(),
            body: reply.body,
        });
    }

    /// Starts the next attempt: to the first server that is up, or waiting for one.
    fn attempt(&mut self, now: Instant) {
        let Some(out) = self.outstanding.as_mut() else {
            return;
        };
        out.envelope.attempt += 1;
        out.server = None;
        self.timers
            .set(Timer::Attempt, now + self.cfg.retry.timeout);
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
        self.transmits.push_back(vec![
            server.endpoint.clone(),
            out.envelope.id.as_bytes().to_vec(),
            out.envelope.encode(),
        ]);
    }

    fn attempt_timed_out(&mut self, now: Instant) {
        let Some(out) = self.outstanding.as_ref() else {
            return;
        };
        if let Some(s) = out.server.and_then(|i| self.servers.get_mut(i)) {
            if s.up {
                s.up = false;
                self.events.push_back(Event::ServerDown {
                    server: s.endpoint.clone(),
                });
            }
        }
        let attempts = out.envelope.attempt;
        if attempts >= self.cfg.retry.retries {
            if let Some(out) = self.outstanding.take() {
                self.events.push_back(Event::GaveUp {
                    id: out.envelope.id,
                    attempts,
                    body: out.envelope.body,
                });
            }
            return;
        }
        // Another server may be up already: fail over at once; else back off.
        if self.servers.iter().any(|s| s.up) {
            self.attempt(now);
        } else {
            let after = backoff::delay(&self.cfg.retry.backoff, attempts, self.rng.f64());
            self.timers.set(Timer::Backoff, now + after);
        }
    }
}

/// What a Freelance server does with one message `[client][...]` from its ROUTER:
/// the reply to send, if any. `handle` turns a request body into a reply body.
pub fn serve(
    frames: Frames,
    handle: &mut dyn FnMut(Frames) -> Frames,
) -> Result<Frames, ProtocolError> {
    let mut it = frames.into_iter();
    let client = it
        .next()
        .ok_or(ProtocolError::Empty { protocol: "10/FLP" })?;
    let rest: Frames = it.collect();
    match rest.as_slice() {
        [ping] if ping == PING => Ok(vec![client, PONG.to_vec()]),
        [_control, _, ..] => {
            let mut rest = rest.into_iter();
            let control = rest.next().unwrap_or_default();
            let mut out = vec![client, control];
            out.extend(handle(rest.collect()));
            Ok(out)
        }
        _ => Err(ProtocolError::FrameCount {
            protocol: "10/FLP",
            what: "client message",
            expected: "1 (PING) or at least 2 ([control][body...])",
            got: rest.len(),
        }),
    }
}
