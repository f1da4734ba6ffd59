//! Shared harness of the simulation tests: virtual time, a seeded lossy link, models of
//! the REQ and ROUTER sockets, and small helpers.
//!
//! No sockets, no sleeps, no threads. The clock is read exactly once, in
//! [`Clock::new`], to get an arbitrary origin; from then on time only moves when a test
//! advances it by a [`Duration`], so a 30-second scenario runs in microseconds and every
//! run with the same seed is the same run.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bosun::error::ConfigError;
use bosun::proto::frames::Frames;
use bosun::Envelope;
use uuid::Uuid;

/// One nanosecond: "just before a deadline" is `deadline - NS`.
pub const NS: Duration = Duration::from_nanos(1);

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A frame list from byte-string literals.
pub fn frames(parts: &[&[u8]]) -> Frames {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// The field a core constructor's error names ("accepted" when there is none), checking
/// that its message names it too.
pub fn rejected<T>(r: Result<T, ConfigError>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => {
            let ConfigError::Invalid { field, .. } = &e else {
                panic!("{e:?}")
            };
            assert!(e.to_string().contains(field), "{e} does not name {field}");
            field
        }
    }
}

/// An envelope with a deterministic id (`Envelope::new` reads the wall clock and a
/// random source, which would make a seeded run irreproducible).
pub fn envelope(id: u128, body: &[u8]) -> Envelope {
    Envelope::new(Uuid::from_u128(id), 0, vec![body.to_vec()])
}

/// Virtual time: a fixed origin and a "now" that only moves forward, by `Duration`s.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    t0: Instant,
    now: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock at its origin.
    pub fn new() -> Self {
        #[allow(clippy::disallowed_methods)] // the one clock read: an arbitrary origin
        let t0 = Instant::now();
        Clock { t0, now: t0 }
    }

    /// The origin.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant `offset` after the origin.
    pub fn at(&self, offset: Duration) -> Instant {
        self.t0 + offset
    }

    /// How far virtual time has advanced since the origin.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// Moves time forward by `d` and returns the new now.
    pub fn advance(&mut self, d: Duration) -> Instant {
        self.now += d;
        self.now
    }

    /// Moves time to `t`, which must not be in the past.
    pub fn advance_to(&mut self, t: Instant) -> Instant {
        assert!(t >= self.now, "virtual time must not go backwards");
        self.now = t;
        self.now
    }

    /// Sets now to `offset` after the origin (forward only).
    pub fn set(&mut self, offset: Duration) -> Instant {
        self.advance_to(self.t0 + offset)
    }
}

/// How badly a [`Link`] treats its messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message that is not lost arrives twice.
    pub duplicate: f64,
    /// Shortest one-way delay.
    pub delay_min: Duration,
    /// Longest one-way delay; each copy draws its delay independently, so messages
    /// may overtake each other.
    pub delay_max: Duration,
}

impl LinkConfig {
    /// No loss, no duplication, no delay.
    pub const PERFECT: LinkConfig = LinkConfig {
        loss: 0.0,
        duplicate: 0.0,
        delay_min: Duration::ZERO,
        delay_max: Duration::ZERO,
    };
}

/// What a [`Link`] did to the traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages handed to the link.
    pub sent: u64,
    /// Messages lost.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies delivered.
    pub delivered: u64,
}

/// A seeded lossy link carrying messages of type `M` (each message names its own
/// destination). Loss, duplication and delay are drawn from one seeded generator, so a
/// run is a pure function of its seed and its inputs.
#[derive(Debug)]
pub struct Link<M> {
    cfg: LinkConfig,
    rng: fastrand::Rng,
    /// In flight, keyed by (delivery time, sequence) so equal times deliver in send order.
    in_flight: BTreeMap<(Instant, u64), M>,
    seq: u64,
    /// What the link did so far.
    pub stats: LinkStats,
}

impl<M: Clone> Link<M> {
    /// A link with the given behaviour and seed.
    pub fn new(cfg: LinkConfig, seed: u64) -> Self {
        Link {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            in_flight: BTreeMap::new(),
            seq: 0,
            stats: LinkStats::default(),
        }
    }

    /// Hands `msg` to the link at `now`.
    pub fn send(&mut self, now: Instant, msg: M) {
        self.stats.sent += 1;
        if self.rng.f64() < self.cfg.loss {
            self.stats.dropped += 1;
            return;
        }
        if self.rng.f64() < self.cfg.duplicate {
            self.stats.duplicated += 1;
            self.schedule(now, msg.clone());
        }
        self.schedule(now, msg);
    }

    /// When the next message arrives, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|k| k.0)
    }

    /// The earliest message due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<M> {
        let entry = self.in_flight.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        self.stats.delivered += 1;
        Some(entry.remove())
    }

    /// How many copies are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A uniform draw from the link's generator, for callers that want their own
    /// randomness to stay on the seed.
    pub fn rng(&mut self) -> &mut fastrand::Rng {
        &mut self.rng
    }

    fn schedule(&mut self, now: Instant, msg: M) {
        let span = self.cfg.delay_max.saturating_sub(self.cfg.delay_min);
        let delay = self.cfg.delay_min + span.mul_f64(self.rng.f64());
        self.seq += 1;
        self.in_flight.insert((now + delay, self.seq), msg);
    }
}

/// Splits a message a ROUTER is asked to send into the peer identity it is routed by
/// and the frames the peer receives (a ROUTER strips the identity frame).
pub fn route(mut frames: Frames) -> Option<(Vec<u8>, Frames)> {
    if frames.is_empty() {
        return None;
    }
    let rest = frames.split_off(1);
    frames.pop().map(|identity| (identity, rest))
}

/// A REQ socket as libzmq 4.3 behaves (strict mode, no request correlation), reduced to
/// what a Lazy Pirate client relies on:
///
/// - `send` adds the empty delimiter; a second `send` before a reply was received is
///   an error (EFSM), modelled as a panic because the core must never ask for it;
/// - messages that arrive are queued in the socket in arrival order, whether or not a
///   reply is awaited; `recv` returns the first one only while a reply is awaited and
///   strips the `[""]` delimiter (a message without it is skipped);
/// - a socket that is closed loses its queue, and its replacement has a new identity,
///   so replies routed to the old identity are lost.
#[derive(Debug)]
pub struct ReqSocket {
    /// The routing identity the peer ROUTER sees.
    pub identity: Vec<u8>,
    awaiting: bool,
    inbox: VecDeque<Frames>,
}

impl ReqSocket {
    /// A fresh socket with `identity`.
    pub fn new(identity: Vec<u8>) -> Self {
        ReqSocket {
            identity,
            awaiting: false,
            inbox: VecDeque::new(),
        }
    }

    /// Sends `body`; returns what the peer ROUTER receives: `[identity][""][body...]`.
    pub fn send(&mut self, body: Frames) -> Frames {
        assert!(
            !self.awaiting,
            "EFSM: a REQ socket cannot send again before it has received a reply"
        );
        self.awaiting = true;
        let mut out = Vec::with_capacity(body.len() + 2);
        out.push(self.identity.clone());
        out.push(Vec::new());
        out.extend(body);
        out
    }

    /// A message arrived from the peer ROUTER (the identity frame already removed).
    pub fn deliver(&mut self, frames: Frames) {
        self.inbox.push_back(frames);
    }

    /// The next reply the application reads, delimiter stripped; `None` while no reply
    /// is awaited or none has arrived.
    pub fn recv(&mut self) -> Option<Frames> {
        while self.awaiting {
            let mut msg = self.inbox.pop_front()?;
            if msg.len() >= 2 && msg[0].is_empty() {
                self.awaiting = false;
                return Some(msg.split_off(1));
            }
        }
        None
    }

    /// Whether a reply is awaited.
    pub fn awaiting(&self) -> bool {
        self.awaiting
    }
}

/// A proptest configuration of `default` cases, or of `PROPTEST_CASES` when that is set
/// (so CI or a curious developer can run deeper than the quick default). Failures are
/// not persisted to files: proptest prints the minimal failing input, and integration
/// tests have no `lib.rs` for it to find its regression directory from.
pub fn cases(default: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}
