//! The Majordomo broker core: 7/MDP routing by service, 8/MMI, and service statistics.
//!
//! Unlike the reference broker it heartbeats and expires busy workers too, puts a
//! request held by a worker that died back at the front of its service queue, bounds
//! and expires requests waiting for a service with no workers, and drops (never
//! asserts on) malformed input.
//!
//! It also stops multiplying work. A bosun request (one whose last frame is bosun
//! metadata) is indexed by its message id while it is queued or held by a worker: a
//! retry of that id is not queued a second time but joined to the first copy, whose
//! reply goes to the retry's address with the retry's attempt. A queued request whose
//! deadline (in its metadata) has passed is dropped, never dispatched. A request whose
//! workers died holding it `max_deliveries` times is not re-queued again: it is
//! dead-lettered ([`Event::DeadLettered`]) and a bosun client is told.

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashSet};
use std::collections::hash_map::Entry;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::envelope::{self, HandlerError, Meta, Request as AppRequest, Status};
use super::frames::mdp::{self, Command, FromWorker, ToBroker};
use super::frames::Frames;
use super::stats::{escape_name, Rates, Window};
use super::timer::Timers;
use crate::config::Heartbeat;
use crate::error::{ConfigError, ProtocolError};

/// Service names with this prefix are the broker's own (8/MMI).
pub const MMI_PREFIX: &[u8] = b"mmi.";

/// Longest service name the broker takes, in bytes.
pub const MAX_SERVICE_NAME: usize = 255;

/// How often the broker sums up the requests it dropped or refused: one
/// [`Event::DropSummary`] per service and reason per interval, never one per request.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Most (service, reason) pairs counted in one [`DROP_REPORT_INTERVAL`]; the drops of
/// further ones are summed under "other services".
const MAX_DROP_KEYS: usize = 256;

/// Most expired workers remembered, to measure the heartbeat interval of one that is
/// heard from again (see [`Event::HeartbeatMismatch`]).
const MAX_REMEMBERED_EXPIRED: usize = 1024;

/// Most dead-lettered ids remembered (each for at most `request_ttl`), so that a
/// client's retry of a request the broker just dead-lettered is answered with the same
/// error instead of killing `max_deliveries` more workers. A client retries within its
/// own budget, seconds; 1024 ids cover a burst of poison requests at a few dozen bytes
/// each.
const MAX_REMEMBERED_DEAD: usize = 1024;

/// Checks a service name. A valid name is 1 to [`MAX_SERVICE_NAME`] bytes, any bytes:
/// 7/MDP puts no rule on them, so spaces, newlines, `=` and non-UTF-8 bytes are all
/// taken (`mmi.stats` escapes them, see [`crate::proto::stats::escape_name`]). Names
/// starting `mmi.` are the broker's own (8/MMI). An empty name is refused: a client
/// that sends one has almost always lost its setting (`BOSUN_SERVICE=`), and a worker
/// registered under it could be asked for by mistake.
pub fn check_service_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("the service name is empty")
    } else if name.len() > MAX_SERVICE_NAME {
        Err("the service name is longer than 255 bytes")
    } else {
        Ok(())
    }
}

/// Settings of a [`Broker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Heartbeat with the workers. Default 2500 ms × 3, the 7/MDP reference values, so
    /// workers written against the Guide keep their registration.
    pub heartbeat: Heartbeat,
    /// Most requests waiting per service. Default 100,000: a standard 7/MDP client may
    /// send its whole batch at once (the Guide's mdclient2 sends 100,000 requests before
    /// reading a reply), and each waiting request costs the broker about a hundred bytes
    /// of bookkeeping beyond its frames, which `max_queue_bytes` bounds. (The old
    /// default, 1000, libzmq's high-water mark, lost 978 of a burst of 2,000.) Beyond it
    /// a request is refused: a bosun client is told (status `Refused`), a foreign one
    /// hears nothing and retries.
    pub max_queue: usize,
    /// Most bytes (the request frames, metadata included) waiting per service. Default
    /// 256 MiB: a burst of 100,000 requests of 2 KiB fits, or four of the largest request
    /// a bosun client sends (64 MiB), while a service with no worker cannot make the
    /// broker hold more than that. An empty queue takes any request, however large, so
    /// no request is refused for its size alone. Beyond it a request is refused as for
    /// `max_queue`.
    pub max_queue_bytes: usize,
    /// How long a request may wait for a worker before it is dropped. Default 30 s:
    /// far beyond any client's retry budget, so only abandoned requests are dropped.
    pub request_ttl: Duration,
    /// Most distinct services tracked at once. Default 65,536: a client cannot make the
    /// broker grow without bound by asking for ever new names.
    pub max_services: usize,
    /// Span of the sliding window of `mmi.stats`. Default 10 s.
    pub stats_window: Duration,
    /// How many times one request may be handed to a worker that then dies holding it
    /// (expires, or registers again with a second READY) before the broker stops
    /// re-queueing it: it is dead-lettered and a bosun client gets an error. A worker
    /// that says DISCONNECT hands its requests back cleanly; that does not count.
    /// Default 3: one death is an accident (a crash, a kill, a lost connection); the
    /// same request killing three workers in a row is a poison message, and every
    /// further delivery costs one more worker.
    pub max_deliveries: u32,
}

impl BrokerConfig {
    /// Checks every field against the clock reading `now` (see [`Broker::new`]).
    pub fn validate_at(&self, now: Instant) -> Result<(), ConfigError> {
        self.heartbeat.validate_at(now)?;
        let positive = |field: &'static str, n: usize| {
            if n == 0 {
                Err(ConfigError::Invalid {
                    field,
                    reason: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("max_queue", self.max_queue)?;
        positive("max_queue_bytes", self.max_queue_bytes)?;
        positive("max_services", self.max_services)?;
        positive("max_deliveries", self.max_deliveries as usize)?;
        for (field, d) in [
            ("request_ttl", self.request_ttl),
            ("stats_window", self.stats_window),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    field,
                    reason: "must be greater than zero".into(),
                });
            }
            crate::config::fits(field, now, d)?;
        }
        Ok(())
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            heartbeat: Heartbeat {
                interval: Duration::from_millis(2500),
                liveness: 3,
            },
            max_queue: 100_000,
            max_queue_bytes: 256 << 20,
            request_ttl: Duration::from_secs(30),
            max_services: 65_536,
            stats_window: Duration::from_secs(10),
            max_deliveries: 3,
        }
    }
}

/// What the log should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A worker registered.
    WorkerReady {
        /// Its routing identity.
        identity: Vec<u8>,
        /// Its service.
        service: Vec<u8>,
        /// How many requests it takes at once.
        capacity: u32,
    },
    /// A worker was removed; `requeued` requests it held went back to the front of
    /// its service queue.
    WorkerGone {
        /// Its routing identity.
        identity: Vec<u8>,
        /// Why.
        reason: GoneReason,
        /// Requests put back in the queue.
        requeued: usize,
    },
    /// DISCONNECT was sent to a peer that broke the protocol in a valid way.
    Disconnected {
        /// Its routing identity.
        identity: Vec<u8>,
        /// Why, in words.
        reason: &'static str,
    },
    /// A request was dropped by an explicit rule (a bosun client was answered with
    /// status `Refused` and the reason). One per request: for the log, use
    /// [`Event::DropSummary`], which counts them.
    RequestDropped {
        /// The service.
        service: Vec<u8>,
        /// Which rule.
        reason: DropReason,
    },
    /// How many requests were dropped for one service and reason over the last
    /// [`DROP_REPORT_INTERVAL`] (at most one per service and reason per interval).
    DropSummary {
        /// The service, or `None` for the sum over services beyond the ones counted
        /// one by one in an interval.
        service: Option<Vec<u8>>,
        /// Which rule.
        reason: DropReason,
        /// Requests dropped.
        count: u64,
    },
    /// A worker expired and was then heard from again (or expired while it heartbeated
    /// far faster than the broker): its heartbeat interval is not the broker's. Said
    /// once per service, so the log explains the flapping instead of repeating it.
    HeartbeatMismatch {
        /// The service.
        service: Vec<u8>,
        /// The worker's heartbeat interval, as measured between its messages.
        worker_interval: Duration,
        /// The broker's heartbeat interval.
        broker_interval: Duration,
        /// The broker's liveness: a worker silent for `liveness × broker_interval`
        /// expires.
        liveness: u32,
    },
    /// A REPLY that answers no request the worker holds (or from an unregistered
    /// worker) was dropped.
    ReplyDropped {
        /// The worker.
        identity: Vec<u8>,
        /// The client address it named.
        client: Vec<u8>,
    },
    /// A message that breaks the protocol was dropped.
    Malformed {
        /// The sender's identity.
        identity: Vec<u8>,
        /// What was wrong.
        error: ProtocolError,
    },
    /// A retry of a request the broker holds (queued, or in flight on a worker) was not
    /// queued again: the first copy's reply will go to the retry's address, with its
    /// attempt.
    RetryJoined {
        /// The service.
        service: Vec<u8>,
        /// The message id.
        id: Uuid,
        /// The retry's attempt.
        attempt: u32,
    },
    /// A request was given up on: `deliveries` workers died holding it
    /// ([`BrokerConfig::max_deliveries`]). A bosun client was answered with status
    /// `Error` and a message saying so; a foreign one hears nothing. Carries everything
    /// a dead-letter store keeps.
    DeadLettered {
        /// The service.
        service: Vec<u8>,
        /// The message id (`None` for a foreign client's request, which has none).
        id: Option<Uuid>,
        /// The application's payload frames, metadata left off.
        payload: Frames,
        /// The request's metadata, with the latest attempt the client made (`None`
        /// for a foreign client's request).
        meta: Option<Meta>,
        /// How many workers it was handed to that died holding it.
        deliveries: u32,
        /// Why it was given up on.
        reason: DeadLetterReason,
        /// The last worker that died holding it.
        last_worker: Vec<u8>,
    },
    /// A retry of a request the broker dead-lettered lately was answered with the same
    /// error, not queued.
    RetryDeadLettered {
        /// The service.
        service: Vec<u8>,
        /// The message id.
        id: Uuid,
        /// The retry's attempt.
        attempt: u32,
    },
}

/// Why a request was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// Every worker it was handed to died holding it, `max_deliveries` times.
    WorkersDied,
}

impl DeadLetterReason {
    /// The message a bosun client gets, for a request handed to `deliveries` workers.
    pub fn message(self, deliveries: u32) -> String {
        match self {
            DeadLetterReason::WorkersDied => format!(
                "dead-lettered by the broker after {deliveries} deliveries whose workers \
                 died holding it (its --max-deliveries): a request that kills its workers \
                 is not re-queued"
            ),
        }
    }
}

/// Why a worker was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoneReason {
    /// Silent for `liveness × interval`.
    Expired,
    /// It sent DISCONNECT.
    Disconnected,
    /// It broke the protocol (second READY); it was sent DISCONNECT.
    ProtocolError,
}

/// Why a request was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The service queue held `max_queue` requests.
    QueueFull,
    /// The service queue held requests of `max_queue_bytes` bytes with this one.
    QueueBytes,
    /// The service name is not valid ([`check_service_name`]).
    BadServiceName,
    /// It waited `request_ttl` with no worker to take it.
    Expired,
    /// `max_services` services exist already.
    TooManyServices,
    /// The deadline in its metadata passed while it waited (or before it arrived). The
    /// client is not answered: its own budget has ended.
    DeadlinePassed,
}

/// A snapshot of one service, as `mmi.stats` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStats {
    /// The service name.
    pub service: Vec<u8>,
    /// Workers with no request.
    pub idle: usize,
    /// Workers with at least one request.
    pub busy: usize,
    /// Requests waiting now.
    pub queued: usize,
    /// Requests the registered workers can hold at once (the sum of their capacities).
    pub capacity: u64,
    /// Rates over the window.
    pub rates: Rates,
}

impl ServiceStats {
    /// Utilisation ρ = λ/μ_max, where μ_max = capacity / mean service time is the most
    /// the registered workers can complete per second: below 1 the queue drains, at 1 or
    /// more it grows. (λ over the achieved completion rate μ would read about 1 for any
    /// stable load.) 0 while nothing has completed in the window.
    pub fn utilisation(&self) -> f64 {
        let r = &self.rates;
        if r.mean_service > 0.0 && self.capacity > 0 {
            r.arrival_rate * r.mean_service / self.capacity as f64
        } else {
            0.0
        }
    }

    /// One line of `key=value` fields, as `mmi.stats` sends it. The service name is
    /// escaped ([`escape_name`]), so the line has no space, newline or `=` but the
    /// separators, and a name made of letters, digits and `.-_:/` is unchanged.
    pub fn to_line(&self) -> String {
        let r = &self.rates;
        let rho = self.utilisation();
        // Every figure is a count, a rate or a time: never negative, and never printed
        // "-0.000" when rounding leaves a hair below zero.
        let fix = |v: f64| if v.is_finite() && v > 0.0 { v } else { 0.0 };
        format!(
            "service={} idle={} busy={} capacity={} queued={} l_avg={:.3} lambda={:.3} mu={:.3} rho={:.3} wait_ms={:.3} service_ms={:.3}",
            escape_name(&self.service),
            self.idle,
            self.busy,
            self.capacity,
            self.queued,
            fix(r.mean_queue),
            fix(r.arrival_rate),
            fix(r.completion_rate),
            fix(rho),
            fix(r.mean_wait * 1e3),
            fix(r.mean_service * 1e3),
        )
    }
}

#[derive(Debug)]
struct Request {
    client: Vec<u8>,
    body: Frames,
    /// The bytes of `body`, counted against `max_queue_bytes` while it waits.
    bytes: usize,
    id: Option<Uuid>,
    arrived: Instant,
    /// When the deadline in its metadata passes, if it does before `request_ttl`.
    deadline: Option<Instant>,
    /// How many workers died holding it.
    deaths: u32,
    /// Key in `Broker::ttl`: the earlier of its TTL and its deadline.
    key: (Instant, u64),
    /// Whether `key` is in `Broker::ttl`: a request handed to a worker on arrival
    /// never waits, so it is never put there.
    in_ttl: bool,
    dispatched: Option<Instant>,
}

/// What the broker knows of a bosun request it holds (queued or in flight), by id.
#[derive(Debug)]
struct Held {
    /// The latest attempt seen: the first copy's, or a later retry's.
    attempt: u32,
    /// Where the reply goes when a retry came: the latest retry's address (a blocking
    /// client makes a new socket per attempt). `None`: the first copy's.
    reply_to: Option<Vec<u8>>,
}

/// A request dead-lettered lately, by id.
#[derive(Debug)]
struct DeadMemo {
    service: Vec<u8>,
    deliveries: u32,
    at: Instant,
}

#[derive(Debug)]
struct Service {
    requests: VecDeque<Request>,
    /// The ids of its bosun requests that are queued or in flight: bounded by them.
    ids: HashMap<Uuid, Held>,
    /// The bytes of `requests`.
    queued_bytes: usize,
    /// Workers with spare capacity, least recently used first.
    available: VecDeque<Vec<u8>>,
    workers: usize,
    stats: Window,
}

#[derive(Debug)]
struct Worker {
    service: Vec<u8>,
    capacity: u32,
    /// In dispatch order; replies mostly answer the oldest, so removal is cheap.
    inflight: VecDeque<Request>,
    /// Key in `Broker::expiries`. It may be earlier than `deadline`: a message from
    /// the worker only moves `deadline`, and [`Broker::expire`] re-files the entry when
    /// it comes due, so the hot path never touches the tree.
    expiry: (Instant, u64),
    /// When the worker expires unless it is heard from.
    deadline: Instant,
    /// When it was last heard from.
    heard: Instant,
    /// When its last HEARTBEAT came.
    beat: Option<Instant>,
    /// The last gap between two of its HEARTBEATs: its heartbeat interval (a worker
    /// sends one when it has sent nothing else for an interval, so the gap is never
    /// shorter than its interval).
    gap: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Heartbeat,
    /// Sum up the drops counted since the last report.
    DropReport,
}

/// The Majordomo broker state machine.
///
/// Contract: feed [`Broker::handle_wall_clock`] before [`Broker::handle_message`] (the
/// driver does before every message; deadlines are judged against it). After every
/// [`Broker::handle_message`] and [`Broker::handle_timeout`],
/// drain [`Broker::poll_transmit`] (each item is a message for the ROUTER socket, its
/// first frame the destination identity), drain [`Broker::poll_event`], and call
/// [`Broker::handle_timeout`] no later than [`Broker::poll_timeout`].
///
/// Costs: dispatch and replies are O(1) in the number of services and workers (hash
/// lookups and deque ends; a bosun request's id is looked up once on arrival and once
/// with its reply); only heartbeats (once per interval) visit every worker.
#[derive(Debug)]
pub struct Broker {
    cfg: BrokerConfig,
    services: HashMap<Vec<u8>, Service>,
    workers: HashMap<Vec<u8>, Worker>,
    expiries: BTreeMap<(Instant, u64), Vec<u8>>,
    /// Request deadlines, earliest first, to the service holding the request.
    ttl: BTreeMap<(Instant, u64), Vec<u8>>,
    next_key: u64,
    timers: Timers<Timer>,
    transmits: VecDeque<Frames>,
    events: VecDeque<Event>,
    /// Drops since the last [`Event::DropSummary`], by service (`None`: the others).
    drops: BTreeMap<(Option<Vec<u8>>, DropReason), u64>,
    /// Workers that expired lately: their service and when they were last heard from.
    expired: HashMap<Vec<u8>, (Vec<u8>, Instant)>,
    /// Services whose heartbeat mismatch was reported.
    hinted: HashSet<Vec<u8>>,
    /// The last wall-clock reading: at this instant, this many ms since the Unix epoch.
    wall: Option<(Instant, u64)>,
    /// Requests dead-lettered lately, at most [`MAX_REMEMBERED_DEAD`].
    dead: HashMap<Uuid, DeadMemo>,
    /// The ids of `dead`, oldest first, with when each was put there.
    dead_order: VecDeque<(Instant, Uuid)>,
}

impl Broker {
    /// A broker with no services; the first heartbeat goes out one interval after `now`.
    /// Fails on a setting that would stop all traffic or overflow the clock: a zero
    /// heartbeat, `max_queue`, `max_services` or `stats_window`, or a `request_ttl` of
    /// zero or beyond 100 years.
    pub fn new(now: Instant, cfg: BrokerConfig) -> Result<Self, ConfigError> {
        cfg.validate_at(now)?;
        let mut timers = Timers::new();
        timers.set(Timer::Heartbeat, now + cfg.heartbeat.interval);
        Ok(Broker {
            cfg,
            services: HashMap::default(),
            workers: HashMap::default(),
            expiries: BTreeMap::new(),
            ttl: BTreeMap::new(),
            next_key: 0,
            timers,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            drops: BTreeMap::new(),
            expired: HashMap::default(),
            hinted: HashSet::default(),
            wall: None,
            dead: HashMap::default(),
            dead_order: VecDeque::new(),
        })
    }

    /// Feeds a reading of the wall clock: at `now` it reads `unix_ms` ms since the Unix
    /// epoch. Request deadlines are wall-clock times (they cross machines), so the
    /// broker maps each to its own clock on arrival, from the last reading moved on by
    /// the time passed since. The driver feeds one before every message; until the
    /// first, no deadline is judged.
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
    }

    /// Feeds a message from the ROUTER socket: `[sender identity][7/MDP message...]`.
    pub fn handle_message(&mut self, now: Instant, mut frames: Frames) {
        if frames.is_empty() {
            return self.malformed(Vec::new(), ProtocolError::Empty { protocol: "7/MDP" });
        }
        self.expire(now);
        let identity = frames.remove(0);
        match mdp::parse_to_broker(frames) {
            Err(error) => self.malformed(identity, error),
            Ok(ToBroker::Client { service, body }) => {
                self.client_request(now, identity, service, body)
            }
            Ok(ToBroker::Worker(cmd)) => self.worker_command(now, identity, cmd),
        }
    }

    /// Feeds the passing of time: heartbeats every worker, idle and busy, expires
    /// silent workers (re-queueing their requests) and requests past their TTL.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Heartbeat => {
                    for identity in self.workers.keys() {
                        self.transmits
                            .push_back(mdp::command(Some(identity), Command::Heartbeat));
                    }
                    self.timers
                        .set(Timer::Heartbeat, now + self.cfg.heartbeat.interval);
                }
                Timer::DropReport => {
                    for ((service, reason), count) in std::mem::take(&mut self.drops) {
                        self.events.push_back(Event::DropSummary {
                            service,
                            reason,
                            count,
                        });
                    }
                }
            }
        }
        self.expire(now);
        while let Some(entry) = self.ttl.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = *entry.key();
            let name = entry.remove();
            let Some(service) = self.services.get_mut(&name) else {
                continue;
            };
            if let Some(pos) = service.requests.iter().position(|r| r.key == key) {
                if let Some(req) = service.requests.remove(pos) {
                    service.queued_bytes -= req.bytes;
                    service.stats.queue_length(now, service.requests.len());
                    let held = req.id.and_then(|id| service.ids.remove(&id));
                    if req.deadline.is_some_and(|d| d <= now) {
                        self.count_drop(now, &name, DropReason::DeadlinePassed);
                    } else {
                        let why = format!(
                            "expired: no worker of service {} took it within {} (the broker's request TTL)",
                            escape_name(&name),
                            humanize(self.cfg.request_ttl)
                        );
                        let (client, body) = latest(req.client, req.body, held);
                        self.drop_request(now, client, &name, &body, DropReason::Expired, &why);
                    }
                }
            }
            self.forget_if_empty(&name);
        }
    }

    /// Removes every worker whose deadline has passed. Called before any input too, so
    /// that a request arriving after a worker's deadline (but before the driver's next
    /// `handle_timeout`) is never handed to that worker.
    fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut refreshed = Vec::new();
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let identity = entry.remove();
            match self.workers.get(&identity) {
                Some(w) if w.deadline > now => refreshed.push((w.deadline, identity)),
                Some(_) => expired.push(identity),
                None => {}
            }
        }
        for (deadline, identity) in refreshed {
            let key = self.key(deadline);
            if let Some(w) = self.workers.get_mut(&identity) {
                w.expiry = key;
                self.expiries.insert(key, identity);
            }
        }
        // Out of dispatch first, all of them: a request re-queued from one expired
        // worker must not be handed to another that expires at the same instant.
        for identity in &expired {
            if let Some(s) = self
                .workers
                .get(identity)
                .and_then(|w| self.services.get_mut(&w.service))
            {
                s.available.retain(|i| i != identity);
            }
        }
        for identity in expired {
            self.remove_worker(now, identity, GoneReason::Expired);
        }
    }

    /// The next message for the ROUTER socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Frames> {
        self.transmits.pop_front()
    }

    /// The next event for the log.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Broker::handle_timeout`] next. It may be earlier than needed (a
    /// worker heard from since its expiry was filed), never later.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.next(),
            self.expiries.keys().next().map(|k| k.0),
            self.ttl.keys().next().map(|k| k.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// How many workers are registered.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// How many requests the worker holds, if it is registered.
    pub fn inflight(&self, identity: &[u8]) -> Option<usize> {
        self.workers.get(identity).map(|w| w.inflight.len())
    }

    /// How many requests wait for `service`.
    pub fn queued(&self, service: &[u8]) -> usize {
        self.services.get(service).map_or(0, |s| s.requests.len())
    }

    /// Whether the bosun request `id` for `service` is queued or in flight (a retry of
    /// it would be joined to it).
    pub fn holds(&self, service: &[u8], id: &Uuid) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.ids.contains_key(id))
    }

    /// How many request ids the broker indexes, over every service: never more than the
    /// requests queued and in flight. Visits every service (for tests and checks, not
    /// the hot path).
    pub fn indexed(&self) -> usize {
        self.services.values().map(|s| s.ids.len()).sum()
    }

    /// Statistics of every service (or of `only`), sorted by name.
    pub fn stats(&mut self, now: Instant, only: Option<&[u8]>) -> Vec<ServiceStats> {
        let mut out: Vec<ServiceStats> = Vec::new();
        for (name, service) in self.services.iter_mut() {
            if only.is_some_and(|o| o != name.as_slice()) {
                continue;
            }
            let (mut idle, mut busy, mut capacity) = (0, 0, 0u64);
            // Only mmi.stats walks the workers, never the dispatch path.
            for w in self.workers.values().filter(|w| &w.service == name) {
                capacity += u64::from(w.capacity);
                if w.inflight.is_empty() {
                    idle += 1;
                } else {
                    busy += 1;
                }
            }
            out.push(ServiceStats {
                service: name.clone(),
                idle,
                busy,
                capacity,
                queued: service.requests.len(),
                rates: service.stats.rates(now),
            });
        }
        out.sort_by(|a, b| a.service.cmp(&b.service));
        out
    }

    fn client_request(&mut self, now: Instant, client: Vec<u8>, service: Vec<u8>, body: Frames) {
        if service.starts_with(MMI_PREFIX) {
            return self.mmi(now, client, service, body);
        }
        if let Err(why) = check_service_name(&service) {
            let why = format!("refused by the broker: {why}");
            return self.drop_request(
                now,
                client,
                &service,
                &body,
                DropReason::BadServiceName,
                &why,
            );
        }
        if !self.services.contains_key(&service) && self.services.len() >= self.cfg.max_services {
            let why = format!(
                "refused by the broker: it tracks {} services already (its --max-services), none of them {}",
                self.cfg.max_services,
                escape_name(&service)
            );
            return self.drop_request(
                now,
                client,
                &service,
                &body,
                DropReason::TooManyServices,
                &why,
            );
        }
        let id = body_id(&body);
        if let Some(id) = id {
            if !self.dead.is_empty() && self.dead_letter_again(now, &client, &service, &body, id) {
                return;
            }
        }
        let deadline = self.deadline_at(now, &body);
        let key = self.key(deadline.flatten().unwrap_or(now + self.cfg.request_ttl));
        let (max_queue, max_bytes) = (self.cfg.max_queue, self.cfg.max_queue_bytes);
        let bytes: usize = body.iter().map(Vec::len).sum();
        let s = service_entry(&mut self.services, self.cfg.stats_window, now, &service);
        // One lookup of the id: a retry of a request held is joined to it; a new id's
        // slot is kept for when the request is accepted.
        let slot = match id.map(|id| s.ids.entry(id)) {
            Some(Entry::Occupied(mut held)) => {
                let attempt = envelope::peek_attempt(&body).unwrap_or(1);
                let held_now = held.get_mut();
                // A late copy of an older attempt (a network duplicate) changes nothing.
                if attempt >= held_now.attempt {
                    held_now.attempt = attempt;
                    held_now.reply_to = Some(client);
                }
                let id = *held.key();
                self.events.push_back(Event::RetryJoined {
                    service,
                    id,
                    attempt,
                });
                return;
            }
            Some(Entry::Vacant(slot)) => Some(slot),
            None => None,
        };
        let Some(deadline) = deadline else {
            // Its client's own budget has ended: nobody waits for an answer.
            self.count_drop(now, &service, DropReason::DeadlinePassed);
            return self.forget_if_empty(&service);
        };
        s.stats.arrived(now);
        let full = if s.requests.len() >= max_queue {
            Some((
                DropReason::QueueFull,
                format!(
                    "refused by the broker: {} requests already wait for service {} (its --max-queue); try again later",
                    s.requests.len(),
                    escape_name(&service)
                ),
            ))
        } else if !s.requests.is_empty() && s.queued_bytes.saturating_add(bytes) > max_bytes {
            Some((
                DropReason::QueueBytes,
                format!(
                    "refused by the broker: requests of {} bytes already wait for service {}, and this one's {} bytes would pass its --max-queue-bytes {}; try again later",
                    s.queued_bytes,
                    escape_name(&service),
                    bytes,
                    max_bytes
                ),
            ))
        } else {
            None
        };
        if let Some((reason, why)) = full {
            return self.drop_request(now, client, &service, &body, reason, &why);
        }
        s.queued_bytes += bytes;
        if let Some(slot) = slot {
            slot.insert(Held {
                attempt: envelope::peek_attempt(&body).unwrap_or(1),
                reply_to: None,
            });
        }
        // Handed to a worker at once (nothing waits ahead of it and a worker has room):
        // then it never waits, and its TTL need not be filed.
        let waits = !s.requests.is_empty()
            || !s
                .available
                .front()
                .is_some_and(|w| self.workers.contains_key(w));
        s.requests.push_back(Request {
            client,
            body,
            bytes,
            id,
            arrived: now,
            deadline,
            deaths: 0,
            key,
            in_ttl: waits,
            dispatched: None,
        });
        if waits {
            s.stats.queue_length(now, s.requests.len());
            self.ttl.insert(key, service.clone());
        }
        self.dispatch(now, &service);
    }

    fn worker_command(&mut self, now: Instant, identity: Vec<u8>, cmd: FromWorker) {
        let known = self.workers.contains_key(&identity);
        if known {
            if let Some(w) = self.workers.get_mut(&identity) {
                w.heard = now;
                if matches!(cmd, FromWorker::Heartbeat) {
                    if let Some(beat) = w.beat {
                        w.gap = Some(now.saturating_duration_since(beat));
                    }
                    w.beat = Some(now);
                }
            }
        } else if let Some((service, heard)) = self.expired.remove(&identity) {
            // Heard from after it expired: if the whole silence was its heartbeat
            // interval, it is longer than the broker allows.
            self.mismatch(service, now.saturating_duration_since(heard));
        }
        match cmd {
            FromWorker::Ready { service, capacity } => {
                if known {
                    self.disconnect(identity.clone(), "second READY");
                    return self.remove_worker(now, identity, GoneReason::ProtocolError);
                }
                if service.starts_with(MMI_PREFIX) {
                    return self.disconnect(identity, "READY for an mmi. service");
                }
                if let Err(why) = check_service_name(&service) {
                    return self.disconnect(identity, why);
                }
                self.register(now, identity, service, capacity);
            }
            FromWorker::Heartbeat if known => self.refresh(now, &identity),
            FromWorker::Reply { client, body } if known => self.reply(now, identity, client, body),
            FromWorker::Reply { client, .. } => {
                // A worker the broker expired (or a previous broker knew) may still
                // answer. Its request was re-queued (or died with the old broker and the
                // client retries), so the reply is dropped: forwarded, a plain REQ client
                // could take it for the answer to a later request. Then it must register
                // again.
                self.events.push_back(Event::ReplyDropped {
                    identity: identity.clone(),
                    client,
                });
                self.disconnect(identity, "REPLY from an unregistered worker");
            }
            FromWorker::Heartbeat => {
                // How workers re-register after a broker restart.
                self.disconnect(identity, "HEARTBEAT from an unregistered worker")
            }
            FromWorker::Disconnect => {
                if known {
                    self.remove_worker(now, identity, GoneReason::Disconnected);
                }
            }
        }
    }

    fn register(&mut self, now: Instant, identity: Vec<u8>, service: Vec<u8>, capacity: u32) {
        if !self.services.contains_key(&service) && self.services.len() >= self.cfg.max_services {
            return self.disconnect(identity, "too many services");
        }
        let deadline = now + self.cfg.heartbeat.expiry();
        let expiry = self.key(deadline);
        self.expiries.insert(expiry, identity.clone());
        self.workers.insert(
            identity.clone(),
            Worker {
                service: service.clone(),
                capacity,
                inflight: VecDeque::new(),
                expiry,
                deadline,
                heard: now,
                beat: None,
                gap: None,
            },
        );
        let s = self.service(now, &service);
        s.workers += 1;
        s.available.push_back(identity.clone());
        self.events.push_back(Event::WorkerReady {
            identity,
            service: service.clone(),
            capacity,
        });
        self.dispatch(now, &service);
    }

    fn reply(&mut self, now: Instant, identity: Vec<u8>, client: Vec<u8>, mut body: Frames) {
        self.refresh(now, &identity);
        let Some(w) = self.workers.get_mut(&identity) else {
            return;
        };
        let was_full = w.inflight.len() >= w.capacity as usize;
        // The request answered is the one from `client` with the reply's envelope id; a
        // plain reply answers the oldest request of `client`. A reply that matches
        // nothing (say, the late answer to a request held before the worker registered
        // again) is passed on but completes nothing, so the request the worker does hold
        // is neither lost nor joined by one more than its capacity.
        let id = body_id(&body);
        let pos = w
            .inflight
            .iter()
            .position(|r| r.client == client && (id.is_none() || r.id == id));
        // `remove`, not `swap_remove`: `inflight` stays in dispatch order, the order in
        // which the requests go back to the queue if the worker dies.
        let done = pos.and_then(|p| w.inflight.remove(p));
        let service = w.service.clone();
        let now_free = w.inflight.len() < w.capacity as usize;
        let Some(req) = done else {
            // It answers nothing this worker holds (a request re-queued away from it, or
            // an id it never had): forwarding it could hand a plain client a wrong answer.
            // (Nothing was removed, so the worker's room did not change.)
            self.events
                .push_back(Event::ReplyDropped { identity, client });
            return self.dispatch(now, &service);
        };
        if id.is_none() {
            // A foreign worker answered with a plain payload: give the reply the
            // metadata of the request it answers, so that a bosun client (which matches
            // replies by id) can take it.
            if let Some(meta) = req.body.last().and_then(|f| Meta::decode(f).ok()) {
                body.push(meta.reply(Status::Ok).encode());
            }
        }
        let mut held = None;
        if let Some(s) = self.services.get_mut(&service) {
            held = req.id.and_then(|rid| s.ids.remove(&rid));
            let service_time = req.dispatched.map_or(Duration::ZERO, |d| now - d);
            s.stats.completed(now, service_time);
            if was_full && now_free {
                s.available.push_back(identity);
            }
        }
        let mut to = client;
        if let Some(Held {
            attempt,
            reply_to: Some(latest),
        }) = held
        {
            // A retry was joined to this request: the reply goes to the retry's
            // address, as the answer to its attempt.
            if body_id(&body) == req.id {
                if let Some(meta) = body.last_mut() {
                    envelope::set_attempt(meta, attempt);
                }
            }
            to = latest;
        }
        self.transmits
            .push_back(mdp::client_reply(to, &service, body));
        self.dispatch(now, &service);
    }

    fn remove_worker(&mut self, now: Instant, identity: Vec<u8>, reason: GoneReason) {
        let Some(w) = self.workers.remove(&identity) else {
            return;
        };
        self.expiries.remove(&w.expiry);
        if reason == GoneReason::Expired {
            // A worker that heartbeats much faster than the broker expects the broker's
            // heartbeats as often, and leaves when they do not come.
            if let Some(gap) = w.gap {
                if gap.saturating_mul(2) < self.cfg.heartbeat.interval {
                    self.mismatch(w.service.clone(), gap);
                }
            }
            if self.expired.len() >= MAX_REMEMBERED_EXPIRED {
                self.expired.clear();
            }
            self.expired
                .insert(identity.clone(), (w.service.clone(), w.heard));
        }
        // A worker that said DISCONNECT handed its requests back; one that went silent
        // or registered again (it restarted under the same identity) died with them.
        let died = matches!(reason, GoneReason::Expired | GoneReason::ProtocolError);
        let mut requeued = 0;
        let mut dead = Vec::new();
        if let Some(s) = self.services.get_mut(&w.service) {
            s.workers = s.workers.saturating_sub(1);
            s.available.retain(|i| *i != identity);
            // Back to the front, oldest first, keeping their original TTL. They were
            // accepted once: they go back whatever the bounds say.
            for mut req in w.inflight.into_iter().rev() {
                if died {
                    req.deaths = req.deaths.saturating_add(1);
                    if req.deaths >= self.cfg.max_deliveries {
                        dead.push(req);
                        continue;
                    }
                }
                req.dispatched = None;
                req.in_ttl = true;
                self.ttl.insert(req.key, w.service.clone());
                s.queued_bytes += req.bytes;
                s.requests.push_front(req);
                requeued += 1;
            }
            s.stats.queue_length(now, s.requests.len());
        }
        self.events.push_back(Event::WorkerGone {
            identity: identity.clone(),
            reason,
            requeued,
        });
        // In dispatch order (they were collected newest first).
        for req in dead.into_iter().rev() {
            self.dead_letter(now, &w.service, &identity, req);
        }
        self.dispatch(now, &w.service);
        self.forget_if_empty(&w.service);
    }

    fn dispatch(&mut self, now: Instant, name: &[u8]) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        // Requests at the front whose deadline passed before the TTL sweep saw them.
        let mut late = 0;
        while let Some(front) = s.requests.front() {
            if front.deadline.is_some_and(|d| d <= now) {
                if let Some(req) = s.requests.pop_front() {
                    s.queued_bytes -= req.bytes;
                    if req.in_ttl {
                        self.ttl.remove(&req.key);
                    }
                    if let Some(id) = req.id {
                        s.ids.remove(&id);
                    }
                    late += 1;
                }
                continue;
            }
            let Some(identity) = s.available.pop_front() else {
                break;
            };
            let Some(w) = self.workers.get_mut(&identity) else {
                continue;
            };
            let Some(mut req) = s.requests.pop_front() else {
                break;
            };
            s.queued_bytes -= req.bytes;
            if req.in_ttl {
                self.ttl.remove(&req.key);
                req.in_ttl = false;
            }
            s.stats
                .dispatched(now, now.saturating_duration_since(req.arrived));
            req.dispatched = Some(now);
            self.transmits.push_back(mdp::routed(
                Some(&identity),
                Command::Request,
                &req.client,
                req.body.clone(),
            ));
            w.inflight.push_back(req);
            if w.inflight.len() < w.capacity as usize {
                s.available.push_back(identity);
            }
        }
        s.stats.queue_length(now, s.requests.len());
        for _ in 0..late {
            self.count_drop(now, name, DropReason::DeadlinePassed);
        }
    }

    /// When the request's deadline passes on the broker's clock: `Some(None)` when it
    /// has none, no wall-clock reading came yet, or it passes after its TTL anyway;
    /// `None` when it has passed.
    fn deadline_at(&self, now: Instant, body: &[Vec<u8>]) -> Option<Option<Instant>> {
        let (Some(deadline_ms), Some((at, unix_ms))) = (envelope::peek_deadline(body), self.wall)
        else {
            return Some(None);
        };
        // The wall clock now, moved on from the last reading.
        let wall_now = match now.checked_duration_since(at) {
            Some(d) => unix_ms.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => {
                unix_ms.saturating_sub(u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX))
            }
        };
        if deadline_ms <= wall_now {
            return None;
        }
        let left = Duration::from_millis(deadline_ms - wall_now);
        Some((left < self.cfg.request_ttl).then(|| now + left))
    }

    /// Gives up on `req`, which `deliveries` workers died holding (the last one
    /// `worker`): answers a bosun client (at its latest address and attempt) with
    /// status `Error`, remembers the id for a while so that a retry gets the same
    /// answer, and reports [`Event::DeadLettered`].
    #[cold]
    fn dead_letter(&mut self, now: Instant, service: &[u8], worker: &[u8], req: Request) {
        let held = req
            .id
            .and_then(|id| self.services.get_mut(service)?.ids.remove(&id));
        let (client, body) = latest(req.client, req.body, held);
        let (request, _) = AppRequest::parse(None, body);
        let reason = DeadLetterReason::WorkersDied;
        let message = reason.message(req.deaths);
        if let Some(meta) = &request.meta {
            let answer = envelope::answer(Some(meta), Err(HandlerError::new(message)));
            self.transmits
                .push_back(mdp::client_reply(client, service, answer));
        }
        if let Some(id) = req.id {
            self.remember_dead(now, id, service, req.deaths);
        }
        self.events.push_back(Event::DeadLettered {
            service: service.to_vec(),
            id: req.id,
            payload: request.payload,
            meta: request.meta,
            deliveries: req.deaths,
            reason,
            last_worker: worker.to_vec(),
        });
    }

    #[cold]
    fn remember_dead(&mut self, now: Instant, id: Uuid, service: &[u8], deliveries: u32) {
        let ttl = self.cfg.request_ttl;
        while let Some(&(at, old)) = self.dead_order.front() {
            let stale = now.saturating_duration_since(at) > ttl;
            if !stale && self.dead_order.len() < MAX_REMEMBERED_DEAD {
                break;
            }
            self.dead_order.pop_front();
            // Only the entry this one filed: the id may have been filed again since.
            if self.dead.get(&old).is_some_and(|m| m.at == at) {
                self.dead.remove(&old);
            }
        }
        self.dead.insert(
            id,
            DeadMemo {
                service: service.to_vec(),
                deliveries,
                at: now,
            },
        );
        self.dead_order.push_back((now, id));
    }

    /// Answers a retry of a request dead-lettered within the last `request_ttl` with the
    /// same error, so that it does not run (and kill workers) again. True when it was
    /// one.
    #[cold]
    fn dead_letter_again(
        &mut self,
        now: Instant,
        client: &[u8],
        service: &[u8],
        body: &[Vec<u8>],
        id: Uuid,
    ) -> bool {
        if self.dead.is_empty() {
            return false;
        }
        let Some(memo) = self.dead.get(&id) else {
            return false;
        };
        if memo.service != service || now.saturating_duration_since(memo.at) > self.cfg.request_ttl
        {
            return false;
        }
        let deliveries = memo.deliveries;
        let attempt = envelope::peek_attempt(body).unwrap_or(1);
        if let Some(meta) = body.last().and_then(|f| Meta::decode(f).ok()) {
            let message = DeadLetterReason::WorkersDied.message(deliveries);
            let answer = envelope::answer(Some(&meta), Err(HandlerError::new(message)));
            self.transmits
                .push_back(mdp::client_reply(client.to_vec(), service, answer));
        }
        self.events.push_back(Event::RetryDeadLettered {
            service: service.to_vec(),
            id,
            attempt,
        });
        true
    }

    /// Answers an 8/MMI request: to a bosun client with the request's id and attempt
    /// (so it matches the reply), to a foreign one with one plain frame. `mmi.stats`
    /// answers `200` and one line per service.
    fn mmi(&mut self, now: Instant, client: Vec<u8>, service: Vec<u8>, body: Frames) {
        let (request, _) = AppRequest::parse(None, body);
        let asked = request.body();
        let answer = match service.as_slice() {
            b"mmi.service" => {
                let known = self.services.get(&asked).is_some_and(|s| s.workers > 0);
                if known { "200" } else { "404" }.to_string()
            }
            b"mmi.stats" => {
                let only = (!asked.is_empty()).then_some(asked.as_slice());
                let mut text = String::from("200");
                for s in self.stats(now, only) {
                    text.push('\n');
                    text.push_str(&s.to_line());
                }
                text
            }
            _ => "501".to_string(),
        };
        let reply = envelope::answer(request.meta.as_ref(), Ok(vec![answer.into_bytes()]));
        self.transmits
            .push_back(mdp::client_reply(client, &service, reply));
    }

    fn service(&mut self, now: Instant, name: &[u8]) -> &mut Service {
        service_entry(&mut self.services, self.cfg.stats_window, now, name)
    }

    /// Drops a service with no workers and no requests, so that names asked for once
    /// do not accumulate.
    fn forget_if_empty(&mut self, name: &[u8]) {
        if self
            .services
            .get(name)
            .is_some_and(|s| s.workers == 0 && s.requests.is_empty())
        {
            self.services.remove(name);
        }
    }

    fn refresh(&mut self, now: Instant, identity: &[u8]) {
        if let Some(w) = self.workers.get_mut(identity) {
            w.deadline = now + self.cfg.heartbeat.expiry();
        }
    }

    /// Drops a request by `reason`: a bosun client (its body ends with metadata) is
    /// answered with status `Refused` and `why`; a foreign one is not answered (a plain
    /// frame would read as the reply), so it retries or gives up as it would on a lost
    /// request. Counted for the next [`Event::DropSummary`].
    #[cold]
    fn drop_request(
        &mut self,
        now: Instant,
        client: Vec<u8>,
        service: &[u8],
        body: &[Vec<u8>],
        reason: DropReason,
        why: &str,
    ) {
        if let Some(meta) = body.last().and_then(|f| Meta::decode(f).ok()) {
            self.transmits.push_back(mdp::client_reply(
                client,
                service,
                envelope::refusal(Some(&meta), why),
            ));
        }
        self.count_drop(now, service, reason);
    }

    /// Counts a dropped request for the next [`Event::DropSummary`], and reports it.
    #[cold]
    fn count_drop(&mut self, now: Instant, service: &[u8], reason: DropReason) {
        self.events.push_back(Event::RequestDropped {
            service: service.to_vec(),
            reason,
        });
        let key = (Some(service.to_vec()), reason);
        let key = if self.drops.len() < MAX_DROP_KEYS || self.drops.contains_key(&key) {
            key
        } else {
            (None, reason)
        };
        *self.drops.entry(key).or_insert(0) += 1;
        if self.timers.get(Timer::DropReport).is_none() {
            self.timers
                .set(Timer::DropReport, now + DROP_REPORT_INTERVAL);
        }
    }

    /// Reports, once per service, a worker whose heartbeat interval (`measured`) is not
    /// the broker's.
    fn mismatch(&mut self, service: Vec<u8>, measured: Duration) {
        if self.hinted.contains(&service) || self.hinted.len() >= self.cfg.max_services {
            return;
        }
        self.hinted.insert(service.clone());
        self.events.push_back(Event::HeartbeatMismatch {
            service,
            worker_interval: measured,
            broker_interval: self.cfg.heartbeat.interval,
            liveness: self.cfg.heartbeat.liveness,
        });
    }

    fn disconnect(&mut self, identity: Vec<u8>, reason: &'static str) {
        self.transmits
            .push_back(mdp::command(Some(&identity), Command::Disconnect));
        self.events
            .push_back(Event::Disconnected { identity, reason });
    }

    fn malformed(&mut self, identity: Vec<u8>, error: ProtocolError) {
        self.events.push_back(Event::Malformed { identity, error });
    }

    fn key(&mut self, at: Instant) -> (Instant, u64) {
        self.next_key += 1;
        (at, self.next_key)
    }
}

/// The service `name`, made on first use. Looked up before it is made, so that the
/// common case (the service exists) copies no name.
fn service_entry<'a>(
    services: &'a mut HashMap<Vec<u8>, Service>,
    window: Duration,
    now: Instant,
    name: &[u8],
) -> &'a mut Service {
    if !services.contains_key(name) {
        services.insert(
            name.to_vec(),
            Service {
                requests: VecDeque::new(),
                ids: HashMap::default(),
                queued_bytes: 0,
                available: VecDeque::new(),
                workers: 0,
                stats: Window::new(now, window),
            },
        );
    }
    services
        .get_mut(name)
        .expect("the service was inserted just above")
}

/// Where the answer to a request from `client` goes, and the request's frames with the
/// attempt it answers: the latest retry's address and attempt when one was joined to it
/// (`held`), else the request's own.
fn latest(client: Vec<u8>, mut body: Frames, held: Option<Held>) -> (Vec<u8>, Frames) {
    match held {
        Some(Held {
            attempt,
            reply_to: Some(to),
        }) => {
            if let Some(meta) = body.last_mut() {
                envelope::set_attempt(meta, attempt);
            }
            (to, body)
        }
        _ => (client, body),
    }
}

/// A duration in words for a message: whole seconds as `30s`, else milliseconds.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The message id of a body whose last frame is bosun metadata, read from its fixed
/// layout without copying or decoding anything else.
pub fn body_id(body: &[Vec<u8>]) -> Option<Uuid> {
    envelope::peek_id(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_is_offered_load_over_what_the_workers_can_complete() {
        let stats = |capacity, arrival_rate, mean_service| ServiceStats {
            service: b"s".to_vec(),
            idle: 0,
            busy: 0,
            capacity,
            queued: 0,
            rates: Rates {
                arrival_rate,
                completion_rate: arrival_rate,
                mean_wait: 0.0,
                mean_service,
                mean_queue: 0.0,
            },
        };
        // 10 requests/s of 50 ms each on one worker: half busy.
        assert!((stats(1, 10.0, 0.05).utilisation() - 0.5).abs() < 1e-9);
        // The same load on capacity 4: an eighth.
        assert!((stats(4, 10.0, 0.05).utilisation() - 0.125).abs() < 1e-9);
        // Overload reads above 1 even though completions keep pace with arrivals.
        assert!(stats(1, 30.0, 0.05).utilisation() > 1.0);
        assert_eq!(stats(0, 10.0, 0.05).utilisation(), 0.0);
        assert_eq!(stats(1, 10.0, 0.0).utilisation(), 0.0);
        assert!(stats(2, 1.0, 0.1).to_line().contains(" capacity=2 "));
    }

    #[test]
    fn a_worker_past_its_deadline_gets_no_request_even_before_handle_timeout() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let cfg = BrokerConfig {
            heartbeat: Heartbeat {
                interval: Duration::from_millis(100),
                liveness: 3,
            },
            ..BrokerConfig::default()
        };
        let f = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Frames>();
        let mut b = Broker::new(t0, cfg).unwrap();
        b.handle_message(t0, f(&[b"W", b"", b"MDPW01", b"\x01", b"echo"]));
        assert_eq!(b.workers(), 1);
        while b.poll_transmit().is_some() {}
        // The worker's deadline is t0 + 300 ms; the request arrives exactly then, before
        // the driver has called handle_timeout.
        let at = t0 + Duration::from_millis(300);
        b.handle_message(at, f(&[b"C", b"", b"MDPC01", b"echo", b"x"]));
        let sent: Vec<Frames> = std::iter::from_fn(|| b.poll_transmit()).collect();
        assert!(
            sent.iter()
                .all(|m| m.first().map(Vec::as_slice) != Some(b"W")),
            "{sent:?}"
        );
        assert_eq!((b.workers(), b.queued(b"echo")), (0, 1));
    }
}
