//! The 6/PPP queue core.

use std::collections::{BTreeMap, VecDeque};

use foldhash::HashMap;
use std::time::Instant;

use crate::config::Heartbeat;
use crate::error::{ConfigError, ProtocolError};
use crate::proto::envelope::{self, Meta};
use crate::proto::frames::ppp::{self, Command, FromWorker};
use crate::proto::frames::Frames;
use crate::proto::timer::Timers;

/// Settings of a [`Queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Heartbeat interval and liveness, shared with the workers.
    pub heartbeat: Heartbeat,
    /// Most client requests held while no worker is idle. Default 100,000, so that a
    /// client (or many) sending a burst before reading a reply loses none of it (the
    /// old default, 1000, libzmq's high-water mark, dropped the rest of a burst of
    /// 2,000); memory is bounded by [`MAX_QUEUE_BYTES`] as well. Beyond either bound a
    /// request is refused: a bosun client is answered with status `Refused` and the
    /// reason, a foreign one hears nothing and its retry takes over.
    pub max_queue: usize,
}

/// Most bytes of client requests (every frame, the client's address included) the
/// queue holds while no worker is idle: 256 MiB, a burst of 100,000 requests of 2 KiB
/// or four of the largest a bosun client sends. An empty queue takes any one request.
pub const MAX_QUEUE_BYTES: usize = 256 << 20;

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            heartbeat: Heartbeat::default(),
            max_queue: 100_000,
        }
    }
}

/// Which of the queue's two sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The ROUTER the clients connect to.
    Frontend,
    /// The ROUTER the workers connect to.
    Backend,
}

/// A message for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// To a client, via the frontend ROUTER (first frame: the client's identity).
    Frontend(Frames),
    /// To a worker, via the backend ROUTER (first frame: the worker's identity).
    Backend(Frames),
}

/// What the log should hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker sent READY and is now idle.
    WorkerReady {
        /// Its routing identity.
        identity: Vec<u8>,
    },
    /// A known worker sent READY again. If it was busy, its request is lost (the client
    /// will retry); it is idle now.
    WorkerReadyAgain {
        /// Its routing identity.
        identity: Vec<u8>,
        /// Whether it had a request.
        was_busy: bool,
    },
    /// A worker was silent for `liveness × interval` and is gone.
    WorkerExpired {
        /// Its routing identity.
        identity: Vec<u8>,
        /// Whether it died holding a request (the client's retry recovers it).
        was_busy: bool,
    },
    /// A client request could not be held: the queue was full (`max_queue` requests, or
    /// [`MAX_QUEUE_BYTES`]); a bosun client was answered with status `Refused`.
    RequestDropped {
        /// How many requests were waiting.
        queued: usize,
    },
    /// A message that breaks the protocol was dropped.
    Malformed {
        /// Where it came from.
        side: Side,
        /// The sender's identity, when there was one.
        identity: Vec<u8>,
        /// What was wrong.
        error: ProtocolError,
    },
    /// A HEARTBEAT from a worker the queue does not know (it sent no READY, or it
    /// expired): ignored; the worker will time out and reconnect with READY.
    UnknownWorker {
        /// Its routing identity.
        identity: Vec<u8>,
    },
}

#[derive(Debug)]
struct WorkerState {
    busy: bool,
    /// Key of this worker in `Queue::expiries`.
    expiry: (Instant, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Heartbeat,
}

/// The Paranoid Pirate queue state machine.
///
/// Contract: after every `handle_*` call, drain [`Queue::poll_transmit`] (send each
/// message on the socket it names), drain [`Queue::poll_event`], and call
/// [`Queue::handle_timeout`] no later than [`Queue::poll_timeout`].
///
/// Dispatch is O(1): idle workers wait in a least-recently-used queue; expiries are kept
/// in an ordered index, so no message scans all workers.
#[derive(Debug)]
pub struct Queue {
    cfg: QueueConfig,
    workers: HashMap<Vec<u8>, WorkerState>,
    /// Idle workers, least recently used first.
    idle: VecDeque<Vec<u8>>,
    /// Worker expiry deadlines, earliest first; the u64 makes keys unique.
    expiries: BTreeMap<(Instant, u64), Vec<u8>>,
    next_key: u64,
    requests: VecDeque<Frames>,
    /// The bytes of `requests`.
    queued_bytes: usize,
    /// [`MAX_QUEUE_BYTES`]; smaller in unit tests.
    max_bytes: usize,
    timers: Timers<Timer>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Queue {
    /// A queue with no workers; the first heartbeat goes out one interval after `now`.
    /// Fails on a zero heartbeat, one that overflows the clock, or `max_queue` 0
    /// (a queue that could hold nothing would drop every request).
    pub fn new(now: Instant, cfg: QueueConfig) -> Result<Self, ConfigError> {
        cfg.heartbeat.validate_at(now)?;
        if cfg.max_queue == 0 {
            return Err(ConfigError::Invalid {
                field: "max_queue",
                reason: "must be at least 1".into(),
            });
        }
        let mut timers = Timers::new();
        timers.set(Timer::Heartbeat, now + cfg.heartbeat.interval);
        Ok(Queue {
            cfg,
            workers: HashMap::default(),
            idle: VecDeque::new(),
            expiries: BTreeMap::new(),
            next_key: 0,
            requests: VecDeque::new(),
            queued_bytes: 0,
            max_bytes: MAX_QUEUE_BYTES,
            timers,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Feeds a message from the frontend ROUTER: `[client identity][""][body...]`.
    pub fn handle_frontend(&mut self, now: Instant, frames: Frames) {
        // A worker past its deadline is dead even if `handle_timeout` has not run yet
        // (the driver feeds what it read before it calls `handle_timeout`): never
        // route to it.
        self.expire(now);
        if let Err(error) = ppp::check_request(&frames) {
            let identity = frames.into_iter().next().unwrap_or_default();
            return self.events.push_back(Event::Malformed {
                side: Side::Frontend,
                identity,
                error,
            });
        }
        let bytes: usize = frames.iter().map(Vec::len).sum();
        let why = if self.requests.len() >= self.cfg.max_queue {
            Some(format!(
                "refused by the queue: {} requests already wait for a worker (its --max-queue); try again later",
                self.requests.len()
            ))
        } else if !self.requests.is_empty()
            && self.queued_bytes.saturating_add(bytes) > self.max_bytes
        {
            Some(format!(
                "refused by the queue: requests of {} bytes already wait for a worker; try again later",
                self.queued_bytes
            ))
        } else {
            None
        };
        if let Some(why) = why {
            // A bosun client is told; a foreign one would take any frame for its reply.
            let meta = frames.last().and_then(|f| Meta::decode(f).ok());
            if let (Some(meta), Some(client)) = (meta, frames.first()) {
                let mut reply = vec![client.clone(), Vec::new()];
                reply.extend(envelope::refusal(Some(&meta), &why));
                self.transmits.push_back(Transmit::Frontend(reply));
            }
            return self.events.push_back(Event::RequestDropped {
                queued: self.requests.len(),
            });
        }
        self.queued_bytes += bytes;
        self.requests.push_back(frames);
        self.dispatch();
    }

    /// Feeds a message from the backend ROUTER: `[worker identity][6/PPP message...]`.
    pub fn handle_backend(&mut self, now: Instant, mut frames: Frames) {
        // As in `handle_frontend`; and a worker heard from after its deadline is not
        // revived by the order in which the driver happened to call us.
        self.expire(now);
        if frames.is_empty() {
            return self.events.push_back(Event::Malformed {
                side: Side::Backend,
                identity: Vec::new(),
                error: ProtocolError::Empty { protocol: "6/PPP" },
            });
        }
        let rest = frames.split_off(1);
        let identity = frames.pop().unwrap_or_default();
        match ppp::parse_from_worker(rest) {
            Err(error) => self.events.push_back(Event::Malformed {
                side: Side::Backend,
                identity,
                error,
            }),
            Ok(FromWorker::Ready) => self.ready(now, identity),
            Ok(FromWorker::Heartbeat) => {
                if self.workers.contains_key(&identity) {
                    self.refresh(now, &identity);
                } else {
                    self.events.push_back(Event::UnknownWorker { identity });
                }
            }
            Ok(FromWorker::Reply(reply)) => {
                // Forward even from an unknown or expired worker: the reply may still
                // be the one a client waits for, and the client discards stale ones.
                self.transmits.push_back(Transmit::Frontend(reply));
                if let Some(w) = self.workers.get_mut(&identity) {
                    if w.busy {
                        w.busy = false;
                        self.idle.push_back(identity.clone());
                    }
                    self.refresh(now, &identity);
                    self.dispatch();
                }
            }
        }
    }

    /// Feeds the passing of time: sends heartbeats to every worker, idle and busy, and
    /// expires every worker silent for `liveness × interval`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Timer::Heartbeat) = self.timers.pop_expired(now) {
            for identity in self.workers.keys() {
                let mut msg = Command::Heartbeat.frames();
                msg.insert(0, identity.clone());
                self.transmits.push_back(Transmit::Backend(msg));
            }
            self.timers
                .set(Timer::Heartbeat, now + self.cfg.heartbeat.interval);
        }
        self.expire(now);
    }

    /// Removes every worker whose deadline is at or before `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(entry) = self.expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let identity = entry.remove();
            let was_busy = self.workers.remove(&identity).is_some_and(|w| w.busy);
            if !was_busy {
                self.idle.retain(|i| *i != identity);
            }
            self.events
                .push_back(Event::WorkerExpired { identity, was_busy });
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the log.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Queue::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiries.keys().next().map(|k| k.0);
        match (self.timers.next(), expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many workers are registered (idle or busy).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// How many workers are idle.
    pub fn idle_workers(&self) -> usize {
        self.idle.len()
    }

    /// How many client requests wait for a worker.
    pub fn queued(&self) -> usize {
        self.requests.len()
    }

    /// Whether the worker with this identity is registered and busy.
    pub fn is_busy(&self, identity: &[u8]) -> Option<bool> {
        self.workers.get(identity).map(|w| w.busy)
    }

    fn ready(&mut self, now: Instant, identity: Vec<u8>) {
        match self.workers.get_mut(&identity) {
            Some(w) => {
                let was_busy = w.busy;
                if was_busy {
                    w.busy = false;
                    self.idle.push_back(identity.clone());
                }
                self.refresh(now, &identity);
                self.events
                    .push_back(Event::WorkerReadyAgain { identity, was_busy });
            }
            None => {
                let key = self.expiry_key(now);
                self.expiries.insert(key, identity.clone());
                self.workers.insert(
                    identity.clone(),
                    WorkerState {
                        busy: false,
                        expiry: key,
                    },
                );
                self.idle.push_back(identity.clone());
                self.events.push_back(Event::WorkerReady { identity });
            }
        }
        self.dispatch();
    }

    fn refresh(&mut self, now: Instant, identity: &[u8]) {
        let key = self.expiry_key(now);
        if let Some(w) = self.workers.get_mut(identity) {
            if let Some(id) = self.expiries.remove(&w.expiry) {
                self.expiries.insert(key, id);
            }
            w.expiry = key;
        }
    }

    fn expiry_key(&mut self, now: Instant) -> (Instant, u64) {
        self.next_key += 1;
        (now + self.cfg.heartbeat.expiry(), self.next_key)
    }

    fn dispatch(&mut self) {
        while !self.requests.is_empty() {
            let Some(identity) = self.idle.pop_front() else {
                return;
            };
            let Some(w) = self.workers.get_mut(&identity) else {
                continue;
            };
            let Some(request) = self.requests.pop_front() else {
                return;
            };
            self.queued_bytes -= request.iter().map(Vec::len).sum::<usize>();
            w.busy = true;
            let mut msg = Vec::with_capacity(request.len() + 1);
            msg.push(identity);
            msg.extend(request);
            self.transmits.push_back(Transmit::Backend(msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envelope::{Envelope, Status};
    use crate::Heartbeat;
    use std::time::Duration;

    #[test]
    fn a_full_queue_tells_a_bosun_client_and_bounds_bytes() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let cfg = QueueConfig {
            heartbeat: Heartbeat {
                interval: Duration::from_secs(60),
                liveness: 3,
            },
            max_queue: 1,
        };
        assert_eq!(QueueConfig::default().max_queue, 100_000);
        let mut q = Queue::new(t0, cfg).unwrap();
        let req = |client: &[u8], body: Frames| {
            let mut f = vec![client.to_vec(), Vec::new()];
            f.extend(body);
            f
        };
        q.handle_frontend(t0, req(b"c", vec![b"first".to_vec()]));
        let env = Envelope::new(uuid::Uuid::from_u128(9), 0, vec![b"x".to_vec()]);
        q.handle_frontend(t0, req(b"b", env.encode()));
        q.handle_frontend(t0, req(b"f", vec![b"foreign".to_vec()]));
        let sent: Vec<Transmit> = std::iter::from_fn(|| q.poll_transmit()).collect();
        let [Transmit::Frontend(reply)] = &sent[..] else {
            panic!("{sent:?}")
        };
        assert_eq!(&reply[..2], &[b"b".to_vec(), Vec::new()]);
        let meta = Meta::decode(reply.last().unwrap()).unwrap();
        assert_eq!((meta.id.as_u128(), meta.status), (9, Status::Refused));
        assert!(String::from_utf8_lossy(&reply[2]).contains("refused by the queue"));
        let events: Vec<Event> = std::iter::from_fn(|| q.poll_event()).collect();
        assert_eq!(events, vec![Event::RequestDropped { queued: 1 }; 2]);

        // Bytes: with room for many requests, one that would pass the byte bound is
        // refused, while an empty queue takes it.
        let mut q = Queue::new(
            t0,
            QueueConfig {
                max_queue: 10,
                ..cfg
            },
        )
        .unwrap();
        q.max_bytes = 1000;
        let big = vec![0u8; 600];
        q.handle_frontend(t0, req(b"c", vec![big.clone()]));
        q.handle_frontend(t0, req(b"c", vec![big]));
        assert_eq!(q.queued(), 1);
        assert_eq!(
            std::iter::from_fn(|| q.poll_event()).collect::<Vec<_>>(),
            vec![Event::RequestDropped { queued: 1 }]
        );
        // A worker takes it; the bytes are released.
        q.handle_backend(t0, vec![b"w".to_vec(), vec![0x01]]);
        assert_eq!(q.queued(), 0);
        q.handle_frontend(t0, req(b"c", vec![vec![0u8; 600]]));
        q.handle_frontend(t0, req(b"c", vec![b"small".to_vec()]));
        assert_eq!(q.queued(), 2);
    }
}
