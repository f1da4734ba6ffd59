//! Harness of the Majordomo simulation tests: virtual time, 7/MDP message builders as
//! the broker's ROUTER delivers them, a decoder of what the broker sends, and a seeded
//! lossy network that keeps each path in order (as TCP does) but loses, duplicates and
//! delays messages.
//!
//! No sockets, no sleeps, no threads: the clock is read once, in [`Clock::new`], for an
//! arbitrary origin, and time only moves when a test moves it.

// Not every test uses every helper.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bosun::proto::broker::{Broker, Event as BrokerEvent};
use bosun::proto::frames::mdp::{self, Command, ToWorker};
use bosun::proto::frames::Frames;
use bosun::Heartbeat;

// Virtual time and the small helpers are the Lazy Pirate / 6/PPP harness's own.
#[path = "../sim/mod.rs"]
mod base;
pub use base::{envelope, frames, ms, rejected, Clock, NS};

/// A heartbeat of `interval_ms` × `liveness`.
pub fn hb(interval_ms: u64, liveness: u32) -> Heartbeat {
    Heartbeat {
        interval: ms(interval_ms),
        liveness,
    }
}

// ---- messages as the broker's ROUTER delivers them: [sender identity][7/MDP...] ----

fn routed_from(identity: &[u8], msg: Frames) -> Frames {
    let mut out = Vec::with_capacity(msg.len() + 1);
    out.push(identity.to_vec());
    out.extend(msg);
    out
}

/// READY from `worker` for `service` (capacity frame only when `capacity > 1`).
pub fn ready(worker: &[u8], service: &[u8], capacity: u32) -> Frames {
    routed_from(worker, mdp::ready(service, capacity))
}

/// A command without arguments (HEARTBEAT, DISCONNECT) from `worker`.
pub fn cmd(worker: &[u8], command: Command) -> Frames {
    routed_from(worker, mdp::command(None, command))
}

/// A REPLY from `worker` for `client`.
pub fn reply(worker: &[u8], client: &[u8], body: Frames) -> Frames {
    routed_from(worker, mdp::routed(None, Command::Reply, client, body))
}

/// A request from `client` for `service`.
pub fn request(client: &[u8], service: &[u8], body: Frames) -> Frames {
    routed_from(client, mdp::client_request(service, body))
}

/// A request from `client` whose body is one plain frame.
pub fn plain(client: &[u8], service: &[u8], body: &[u8]) -> Frames {
    request(client, service, vec![body.to_vec()])
}

/// What the broker sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A REQUEST to `worker`.
    Request {
        worker: Vec<u8>,
        client: Vec<u8>,
        body: Frames,
    },
    /// A HEARTBEAT to a worker.
    Heartbeat(Vec<u8>),
    /// A DISCONNECT to a worker.
    Disconnect(Vec<u8>),
    /// A reply to `client`.
    Reply {
        client: Vec<u8>,
        service: Vec<u8>,
        body: Frames,
    },
}

impl Out {
    /// A REQUEST of one plain frame.
    pub fn req(worker: &[u8], client: &[u8], body: &[u8]) -> Out {
        Out::Request {
            worker: worker.to_vec(),
            client: client.to_vec(),
            body: vec![body.to_vec()],
        }
    }

    /// A reply of one plain frame.
    pub fn rep(client: &[u8], service: &[u8], body: &[u8]) -> Out {
        Out::Reply {
            client: client.to_vec(),
            service: service.to_vec(),
            body: vec![body.to_vec()],
        }
    }
}

/// Splits a ROUTER-bound message into its destination and the frames the peer gets.
pub fn route(mut msg: Frames) -> (Vec<u8>, Frames) {
    assert!(!msg.is_empty(), "a ROUTER message needs an identity frame");
    let rest = msg.split_off(1);
    (msg.pop().unwrap_or_default(), rest)
}

/// Decodes one message the broker sent; the broker must only ever send valid 7/MDP.
pub fn decode(msg: Frames) -> Out {
    let (to, rest) = route(msg);
    match rest.get(1).map(Vec::as_slice) {
        Some(mdp::WORKER) => match mdp::parse_to_worker(rest) {
            Ok(ToWorker::Request { client, body }) => Out::Request {
                worker: to,
                client,
                body,
            },
            Ok(ToWorker::Heartbeat) => Out::Heartbeat(to),
            Ok(ToWorker::Disconnect) => Out::Disconnect(to),
            Err(e) => panic!("broker sent invalid worker message: {e}"),
        },
        Some(mdp::CLIENT) => match mdp::parse_client_reply(rest) {
            Ok((service, body)) => Out::Reply {
                client: to,
                service,
                body,
            },
            Err(e) => panic!("broker sent invalid client reply: {e}"),
        },
        _ => panic!("broker sent a message with no 7/MDP header: {rest:?}"),
    }
}

/// Drains the broker's transmits (decoded) and events.
pub fn drain(b: &mut Broker) -> (Vec<Out>, Vec<BrokerEvent>) {
    let mut out = Vec::new();
    while let Some(m) = b.poll_transmit() {
        out.push(decode(m));
    }
    let mut events = Vec::new();
    while let Some(e) = b.poll_event() {
        events.push(e);
    }
    (out, events)
}

/// Drains the broker and returns only what it sent.
pub fn sent(b: &mut Broker) -> Vec<Out> {
    drain(b).0
}

/// Drains the broker and returns what it sent, heartbeats left out.
pub fn sent_no_hb(b: &mut Broker) -> Vec<Out> {
    drain(b)
        .0
        .into_iter()
        .filter(|o| !matches!(o, Out::Heartbeat(_)))
        .collect()
}

// ---- a seeded lossy network ----

/// How badly a [`Net`] treats its messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetConfig {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message that is not lost arrives twice.
    pub duplicate: f64,
    /// Shortest one-way delay.
    pub delay_min: Duration,
    /// Longest one-way delay.
    pub delay_max: Duration,
}

/// What a [`Net`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub delivered: u64,
    pub cut: u64,
}

/// A seeded network of numbered nodes. Each message is lost with probability `loss`,
/// else delivered after a random delay, and once more (later) with probability
/// `duplicate`. Messages on one path (from, to) never overtake each other, as on one
/// TCP connection; messages on different paths may.
#[derive(Debug)]
pub struct Net<M> {
    cfg: NetConfig,
    rng: fastrand::Rng,
    in_flight: BTreeMap<(Instant, u64), (usize, usize, M)>,
    last: HashMap<(usize, usize), Instant>,
    seq: u64,
    pub stats: NetStats,
}

impl<M: Clone> Net<M> {
    /// A network with the given behaviour and seed.
    pub fn new(cfg: NetConfig, seed: u64) -> Self {
        Net {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            in_flight: BTreeMap::new(),
            last: HashMap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Sends `msg` from node `from` to node `to` at `now`; false if it was lost.
    pub fn send(&mut self, now: Instant, from: usize, to: usize, msg: M) -> bool {
        self.stats.sent += 1;
        if self.rng.f64() < self.cfg.loss {
            self.stats.lost += 1;
            return false;
        }
        let copies = if self.rng.f64() < self.cfg.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let span = self.cfg.delay_max.saturating_sub(self.cfg.delay_min);
            let mut at = now + self.cfg.delay_min + span.mul_f64(self.rng.f64());
            // In order on one path.
            if let Some(&last) = self.last.get(&(from, to)) {
                at = at.max(last);
            }
            self.last.insert((from, to), at);
            self.seq += 1;
            self.in_flight
                .insert((at, self.seq), (from, to, msg.clone()));
        }
        true
    }

    /// When the next message arrives.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|k| k.0)
    }

    /// The earliest message due at or before `now`: `(from, to, msg)`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, usize, M)> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        self.stats.delivered += 1;
        Some(entry.remove())
    }

    /// Loses every message in flight from or to `node` (its connections broke).
    pub fn cut(&mut self, node: usize) {
        let before = self.in_flight.len();
        self.in_flight
            .retain(|_, (from, to, _)| *from != node && *to != node);
        self.stats.cut += (before - self.in_flight.len()) as u64;
    }

    /// From now on, no loss and no duplication (delays stay).
    pub fn heal(&mut self) {
        self.cfg.loss = 0.0;
        self.cfg.duplicate = 0.0;
    }
}
