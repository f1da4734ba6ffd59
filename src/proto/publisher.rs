//! The reliable publisher core: sequence numbers, retention, heartbeats, and the replay
//! server (see [`crate::proto::frames::pubsub`] for the frames).
//!
//! Each message gets the next sequence number of this publisher (from 1, across
//! topics), is kept in a [`Retention`] (a bounded ring in memory, [`MemoryRing`], or the
//! sled tree of [`crate::store::published`]) and only then is queued for the PUB socket.
//! Retention is bounded by a count and an age and trims oldest first. Every heartbeat
//! interval, busy or idle, a heartbeat carries the last sequence, the oldest retained
//! and the replay endpoint, so that subscribers can tell silence from death, find a
//! lost tail and learn where to ask for a replay while the stream flows.
//!
//! The replay server answers `REPLAY` on the ROUTER (socket 1): the retained messages
//! from the asked sequence, at most [`PublisherConfig::replay_batch`], then `END` with
//! the last sequence; `TRIMMED` with the oldest retained when the asked sequence is no
//! longer kept; `UNKNOWN` when the request names another publisher; `SINCE` with the
//! first message published at or after the request's time, when it has one and that
//! is later than the asked sequence. `ACK`s of durable
//! subscribers are recorded by name ([`Publisher::acked`]); retention is trimmed only by
//! its bounds, so an ACK never holds messages beyond them. Garbage is counted, reported
//! as an event and dropped.
//!
//! # Contract
//! No clock reads and no ids made here: `now` (monotonic) and `now_ms` (wall clock, ms
//! since the Unix epoch) are inputs, and the publisher id is given. After any `handle_*`
//! or [`Publisher::publish`], drain [`Publisher::poll_transmit`] (or
//! [`Publisher::poll_send`], the same messages borrowed from the core's buffer, which a
//! driver sends without an allocation per frame) and [`Publisher::poll_event`], then
//! ask [`Publisher::poll_timeout`] when to call [`Publisher::handle_timeout`].
//!
//! # Cost
//! Publishing moves the topic and payload into the retention and copies their bytes
//! once, into one reused buffer of outgoing messages ([`WireQueue`]), metadata frame
//! included: no allocation per message beyond what the retention keeps.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{ConfigError, ProtocolError};
use crate::proto::frames::pubsub::{self, Data, Heartbeat, Reply, Request};
use crate::proto::frames::wire::{Parts, WireQueue};
use crate::proto::frames::Frames;
use crate::store::StoreError;

/// Default of [`PublisherConfig::retain_count`]: a million messages, minutes of a busy
/// stream, so that a subscriber restarting or stuck for a while still finds its gap.
pub const DEFAULT_RETAIN_COUNT: u64 = 1_000_000;
/// Default of [`PublisherConfig::retain_age`]: one hour.
pub const DEFAULT_RETAIN_AGE: Duration = Duration::from_secs(3600);
/// Default of [`PublisherConfig::replay_batch`]: 1000 messages per answer, the
/// default high-water mark of a ZeroMQ socket, so one answer fits its pipe.
pub const DEFAULT_REPLAY_BATCH: u32 = 1000;

/// Settings of a [`Publisher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublisherConfig {
    /// A heartbeat goes out every interval, among the messages of a busy stream too.
    /// Default 1 s.
    pub heartbeat_interval: Duration,
    /// The most messages retained for replay. Default [`DEFAULT_RETAIN_COUNT`].
    pub retain_count: u64,
    /// Messages older than this are trimmed. Default [`DEFAULT_RETAIN_AGE`] (1 h).
    pub retain_age: Duration,
    /// The most messages in one replay answer (a subscriber asking for more gets this
    /// many). Default [`DEFAULT_REPLAY_BATCH`]; the driver lowers it to half the
    /// socket's send high-water mark, so that an answer is never dropped there.
    pub replay_batch: u32,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            heartbeat_interval: Duration::from_secs(1),
            retain_count: DEFAULT_RETAIN_COUNT,
            retain_age: DEFAULT_RETAIN_AGE,
            replay_batch: DEFAULT_REPLAY_BATCH,
        }
    }
}

impl PublisherConfig {
    /// Refuses zero intervals and bounds, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        if self.heartbeat_interval.is_zero() {
            return invalid("heartbeat.interval", "must be greater than zero");
        }
        if self.heartbeat_interval > crate::config::MAX_DURATION {
            return invalid("heartbeat.interval", "must be at most 100 years");
        }
        if self.retain_count == 0 {
            return invalid(
                "retain_count",
                "must be at least 1 (nothing retained, nothing could be replayed)",
            );
        }
        if self.retain_age.is_zero() {
            return invalid("retain_age", "must be greater than zero");
        }
        if self.replay_batch == 0 {
            return invalid("replay_batch", "must be at least 1");
        }
        Ok(())
    }
}

/// One retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Its sequence.
    pub seq: u64,
    /// When it was published, ms since the Unix epoch.
    pub at_ms: u64,
    /// Its topic.
    pub topic: Vec<u8>,
    /// Its payload frames.
    pub payload: Frames,
}

/// Where a publisher keeps its messages for replay. Sequences kept are contiguous:
/// `oldest..=newest`, appended at the top and trimmed at the bottom.
pub trait Retention: Send {
    /// Keeps `msg`, whose sequence is one more than the newest kept (or the first).
    fn keep(&mut self, msg: Retained) -> Result<(), StoreError>;
    /// Up to `max` messages from `from` (inclusive), in order.
    fn range(&self, from: u64, max: usize) -> Result<Vec<Retained>, StoreError>;
    /// The oldest kept: its sequence and publication time (ms since the Unix epoch).
    fn oldest(&self) -> Option<(u64, u64)>;
    /// How many messages are kept.
    fn len(&self) -> u64;
    /// Whether nothing is kept.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Drops the oldest message.
    fn trim_oldest(&mut self) -> Result<(), StoreError>;
    /// The sequence of the first message kept that was published at or after `at_ms`
    /// (None: none was). A binary search over [`Retention::range`], which assumes
    /// publication times do not go down (a wall clock stepped back makes the answer
    /// one of the messages around the step).
    fn first_since(&self, at_ms: u64) -> Result<Option<u64>, StoreError> {
        let Some((oldest, _)) = self.oldest() else {
            return Ok(None);
        };
        // Invariant: everything below `lo` is older than `at_ms`; `hi` is past the end
        // or at a message at or after it.
        let (mut lo, mut hi) = (oldest, oldest + self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.range(mid, 1)?.first() {
                Some(m) if m.at_ms < at_ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok((lo < oldest + self.len()).then_some(lo))
    }
}

/// Retention in memory: a ring of the messages (durability `none`). Its size is bounded
/// by the publisher's retention bounds.
#[derive(Debug, Default)]
pub struct MemoryRing {
    ring: VecDeque<Retained>,
}

impl MemoryRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Retention for MemoryRing {
    fn keep(&mut self, msg: Retained) -> Result<(), StoreError> {
        self.ring.push_back(msg);
        Ok(())
    }

    fn range(&self, from: u64, max: usize) -> Result<Vec<Retained>, StoreError> {
        let Some(first) = self.ring.front() else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from.saturating_sub(first.seq)).unwrap_or(usize::MAX);
        Ok(self.ring.iter().skip(skip).take(max).cloned().collect())
    }

    fn oldest(&self) -> Option<(u64, u64)> {
        self.ring.front().map(|m| (m.seq, m.at_ms))
    }

    fn len(&self) -> u64 {
        self.ring.len() as u64
    }

    fn trim_oldest(&mut self) -> Result<(), StoreError> {
        self.ring.pop_front();
        Ok(())
    }
}

/// The socket of [`Transmit::Publish`] in [`Publisher::poll_send`]: the PUB socket.
pub const PUB: usize = 0;
/// The socket of [`Transmit::Reply`] in [`Publisher::poll_send`]: the replay ROUTER.
pub const ROUTER: usize = 1;

/// What the publisher asks its driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A message or heartbeat for the PUB socket (socket 0).
    Publish(Frames),
    /// An answer for the ROUTER (socket 1): `[identity][BSP-R1]...`.
    Reply(Frames),
}

/// What the publisher reports.
#[derive(Debug)]
pub enum Event {
    /// A replay request was answered.
    Replayed {
        /// The first sequence asked for.
        from: u64,
        /// How many messages were sent.
        sent: usize,
    },
    /// A replay asked for messages no longer retained; TRIMMED was answered.
    Trimmed {
        /// The sequence asked for.
        from: u64,
        /// The oldest retained (0: none).
        oldest: u64,
    },
    /// A replay request named another publisher; UNKNOWN was answered.
    Unknown {
        /// The publisher asked for.
        publisher: Uuid,
    },
    /// A durable subscriber acknowledged up to `seq`.
    Acked {
        /// Its name.
        subscriber: Vec<u8>,
        /// The last sequence it processed.
        seq: u64,
    },
    /// Something on the replay socket that is not the protocol: dropped.
    Garbage(ProtocolError),
    /// The retention could not be read to answer a replay; nothing was answered (the
    /// subscriber retries).
    RetentionFailed(StoreError),
}

/// Counters of a [`Publisher`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages published.
    pub published: u64,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Replay requests answered (END or TRIMMED).
    pub replays: u64,
    /// Messages sent in replay answers.
    pub replayed: u64,
    /// Messages trimmed from retention.
    pub trimmed: u64,
    /// Garbage messages dropped from the replay socket.
    pub garbage: u64,
}

/// The publisher core. See the module docs for the contract.
pub struct Publisher {
    cfg: PublisherConfig,
    id: Uuid,
    replay_endpoint: String,
    next: u64,
    retention: Box<dyn Retention>,
    heartbeat_at: Option<Instant>,
    now_ms: u64,
    /// The publication time of the newest message trimmed (an upper bound of it after a
    /// restart, when the oldest retained is past 1): a join from a time before this
    /// lost messages, and is answered `TRIMMED`.
    trimmed_at_ms: Option<u64>,
    acks: BTreeMap<Vec<u8>, u64>,
    /// What waits to be sent, by socket ([`PUB`] or [`ROUTER`]), in order.
    out: WireQueue,
    events: VecDeque<Event>,
    stats: PublisherStats,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("id", &self.id)
            .field("next", &self.next)
            .field("retained", &self.retention.len())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher `id` whose next sequence is `next` (1 for a new one; one past the
    /// last persisted after a restart), keeping messages in `retention`, answering
    /// replays at `replay_endpoint` (announced in heartbeats). The first heartbeat is
    /// due at once, so that subscribers learn the last sequence of a restarted
    /// publisher (and replay what it stored but never sent).
    pub fn new(
        cfg: PublisherConfig,
        id: Uuid,
        next: u64,
        retention: Box<dyn Retention>,
        replay_endpoint: &str,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        crate::config::fits("heartbeat.interval", now, cfg.heartbeat_interval)?;
        // Messages before the oldest retained were trimmed by an earlier run, published
        // at its time or before.
        let trimmed_at_ms = retention
            .oldest()
            .and_then(|(seq, at_ms)| (seq > 1).then_some(at_ms));
        Ok(Publisher {
            cfg,
            id,
            replay_endpoint: replay_endpoint.to_string(),
            next: next.max(1),
            retention,
            heartbeat_at: Some(now),
            now_ms: 0,
            trimmed_at_ms,
            acks: BTreeMap::new(),
            out: WireQueue::new(),
            events: VecDeque::new(),
            stats: PublisherStats::default(),
        })
    }

    /// The publisher's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The sequence the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The last sequence published (0: none).
    pub fn last_seq(&self) -> u64 {
        self.next - 1
    }

    /// The oldest sequence retained (0: none).
    pub fn oldest_retained(&self) -> u64 {
        self.retention.oldest().map_or(0, |(s, _)| s)
    }

    /// How many messages are retained.
    pub fn retained(&self) -> u64 {
        self.retention.len()
    }

    /// The last sequence acknowledged by each durable subscriber, by name.
    pub fn acked(&self) -> &BTreeMap<Vec<u8>, u64> {
        &self.acks
    }

    /// The counters.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// The replay endpoint announced in heartbeats.
    pub fn set_replay_endpoint(&mut self, endpoint: &str) {
        self.replay_endpoint = endpoint.to_string();
    }

    /// The wall clock (ms since the Unix epoch), for retention by age and the times
    /// carried in messages.
    pub fn handle_wall_clock(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Publishes `payload` on `topic`: assigns the next sequence, keeps the message in
    /// the retention, queues it for PUB and trims what the bounds no longer allow.
    /// Returns the sequence. When the retention fails, nothing is queued and the
    /// sequence is not used.
    pub fn publish(
        &mut self,
        now: Instant,
        now_ms: u64,
        topic: Vec<u8>,
        payload: Frames,
    ) -> Result<u64, StoreError> {
        self.now_ms = now_ms;
        let seq = self.next;
        // Queued first (it goes nowhere before the caller polls), taken back when the
        // retention refuses it: so the message is moved into the retention, not copied.
        Data::queue(&mut self.out, PUB, self.id, seq, now_ms, &topic, &payload);
        let kept = self.retention.keep(Retained {
            seq,
            at_ms: now_ms,
            topic,
            payload,
        });
        if let Err(e) = kept {
            self.out.discard_last();
            return Err(e);
        }
        self.next += 1;
        self.stats.published += 1;
        self.heartbeat_if_due(now);
        self.trim()?;
        Ok(seq)
    }

    /// Trims the oldest messages beyond the count or older than the age.
    fn trim(&mut self) -> Result<(), StoreError> {
        let age_ms = u64::try_from(self.cfg.retain_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.now_ms.saturating_sub(age_ms);
        while let Some((_, at_ms)) = self.retention.oldest() {
            let over = self.retention.len() > self.cfg.retain_count;
            let old = self.now_ms > age_ms && at_ms < cutoff;
            if !over && !old {
                break;
            }
            self.retention.trim_oldest()?;
            self.trimmed_at_ms = Some(self.trimmed_at_ms.map_or(at_ms, |t| t.max(at_ms)));
            self.stats.trimmed += 1;
        }
        Ok(())
    }

    /// Time passed: a heartbeat when one is due; retention by age.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.trim() {
            self.events.push_back(Event::RetentionFailed(e));
        }
        self.heartbeat_if_due(now);
    }

    /// A heartbeat every interval, busy or idle: a busy stream carries one among its
    /// messages, so that a subscriber learns the replay endpoint (and repairs an early
    /// gap) without waiting for the publisher to fall silent.
    fn heartbeat_if_due(&mut self, now: Instant) {
        if self.heartbeat_at.is_some_and(|at| now >= at) {
            let hb = Heartbeat {
                publisher: self.id,
                last: self.last_seq(),
                at_ms: self.now_ms,
                oldest: self.oldest_retained(),
                replay: self.replay_endpoint.clone(),
                interval_ms: u16::try_from(self.cfg.heartbeat_interval.as_millis())
                    .unwrap_or(u16::MAX),
            };
            self.out.push(PUB, hb.encode());
            self.stats.heartbeats += 1;
            self.heartbeat_at = Some(now + self.cfg.heartbeat_interval);
        }
    }

    /// A message arrived on the replay ROUTER: `[identity][BSP-R1]...`.
    pub fn handle_replay_input(&mut self, frames: Frames) {
        let (identity, request) = match pubsub::parse_request(frames) {
            Ok(r) => r,
            Err(e) => {
                self.stats.garbage += 1;
                self.events.push_back(Event::Garbage(e));
                return;
            }
        };
        match request {
            Request::Replay {
                publisher,
                from,
                max,
                since_ms,
            } => {
                if publisher != self.id {
                    self.reply(&identity, &Reply::Unknown { publisher });
                    self.events.push_back(Event::Unknown { publisher });
                    return;
                }
                self.replay(&identity, from.max(1), max, since_ms);
            }
            Request::Ack {
                publisher,
                seq,
                name,
            } => {
                if publisher != self.id {
                    self.stats.garbage += 1;
                    return;
                }
                let seq = seq.min(self.last_seq());
                let entry = self.acks.entry(name.clone()).or_insert(0);
                if seq > *entry {
                    *entry = seq;
                    self.events.push_back(Event::Acked {
                        subscriber: name,
                        seq,
                    });
                }
            }
        }
    }

    /// Answers a replay from `from`; with `since_ms`, `SINCE` when the first retained
    /// message published at or after it is later than `from`, unless messages
    /// published since then were trimmed: then `TRIMMED`, which tells a joining
    /// subscriber that it lost some.
    fn replay(&mut self, identity: &[u8], from: u64, max: u32, since_ms: Option<u64>) {
        let last = self.last_seq();
        let oldest = self.oldest_retained();
        let since_ms = since_ms.filter(|since| self.trimmed_at_ms.map_or(true, |t| t < *since));
        if let Some(since) = since_ms {
            let first = match self.retention.first_since(since) {
                Ok(first) => first.unwrap_or(last + 1),
                Err(e) => {
                    self.events.push_back(Event::RetentionFailed(e));
                    return;
                }
            };
            if first > from {
                self.stats.replays += 1;
                self.reply(identity, &Reply::Since { from, first });
                self.events.push_back(Event::Replayed { from, sent: 0 });
                return;
            }
        }
        let trimmed = if self.retention.is_empty() {
            from <= last
        } else {
            from < oldest
        };
        self.stats.replays += 1;
        if trimmed {
            self.reply(identity, &Reply::Trimmed { from, oldest });
            self.events.push_back(Event::Trimmed { from, oldest });
            return;
        }
        let max = max.clamp(1, self.cfg.replay_batch) as usize;
        let batch = if from <= last {
            match self.retention.range(from, max) {
                Ok(b) => b,
                Err(e) => {
                    self.events.push_back(Event::RetentionFailed(e));
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let sent = batch.len();
        for m in batch {
            Data::queue_replayed(
                &mut self.out,
                ROUTER,
                identity,
                self.id,
                m.seq,
                m.at_ms,
                &m.topic,
                &m.payload,
            );
        }
        self.stats.replayed += sent as u64;
        self.reply(identity, &Reply::End { from, last });
        self.events.push_back(Event::Replayed { from, sent });
    }

    fn reply(&mut self, identity: &[u8], reply: &Reply) {
        self.out.begin(ROUTER);
        self.out.frame(identity);
        for f in reply.encode() {
            self.out.frame(&f);
        }
    }

    /// The next message to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_owned().map(|(socket, frames)| match socket {
            PUB => Transmit::Publish(frames),
            _ => Transmit::Reply(frames),
        })
    }

    /// The next message to send, as [`Publisher::poll_transmit`] gives it but borrowed
    /// from the core's buffer until the next call: the socket ([`PUB`] for
    /// [`Transmit::Publish`], [`ROUTER`] for [`Transmit::Reply`]) and the frames.
    #[must_use]
    pub fn poll_send(&mut self) -> Option<(usize, Parts<'_>)> {
        self.out.pop()
    }

    /// Drops everything waiting to be sent (a driver whose commit failed).
    pub fn discard_transmits(&mut self) {
        self.out.clear();
    }

    /// Whether messages wait to be sent (a driver commits its store before sending).
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Publisher::handle_timeout`] next: the heartbeat.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.heartbeat_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frames::pubsub::{parse_live, parse_reply, Live};

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)] // the origin of virtual time
        Instant::now()
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn publisher(cfg: PublisherConfig, now: Instant) -> Publisher {
        Publisher::new(cfg, id(), 1, Box::new(MemoryRing::new()), "tcp://p:1", now).unwrap()
    }

    fn drain(p: &mut Publisher) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit()).collect()
    }

    fn replies(p: &mut Publisher) -> Vec<Reply> {
        drain(p)
            .into_iter()
            .filter_map(|t| match t {
                Transmit::Reply(mut f) => {
                    assert_eq!(f.remove(0), b"sub");
                    Some(parse_reply(f).unwrap())
                }
                Transmit::Publish(_) => None,
            })
            .collect()
    }

    fn ask(p: &mut Publisher, from: u64, max: u32) -> Vec<Reply> {
        let mut f = vec![b"sub".to_vec()];
        f.extend(
            Request::Replay {
                publisher: id(),
                from,
                max,
                since_ms: None,
            }
            .encode(),
        );
        p.handle_replay_input(f);
        replies(p)
    }

    fn ask_since(p: &mut Publisher, from: u64, since_ms: u64) -> Vec<Reply> {
        let mut f = vec![b"sub".to_vec()];
        let req = Request::Replay {
            publisher: id(),
            from,
            max: 100,
            since_ms: Some(since_ms),
        };
        f.extend(req.encode());
        p.handle_replay_input(f);
        replies(p)
    }

    fn seqs(replies: &[Reply]) -> Vec<u64> {
        replies
            .iter()
            .filter_map(|r| match r {
                Reply::Data(d) => Some(d.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replay_since_a_time_starts_at_the_first_message_published_then() {
        let t = t0();
        let cfg = PublisherConfig {
            retain_count: 6,
            ..PublisherConfig::default()
        };
        let mut p = publisher(cfg, t);
        // Sequence i published at 1000 + 10 i ms; 1..=4 trimmed (6 retained).
        for i in 1..=10u64 {
            p.publish(t, 1000 + 10 * i, b"t".to_vec(), vec![vec![1]])
                .unwrap();
        }
        let _ = drain(&mut p);
        for (since, first) in [(1075, 8), (1070, 7), (1041, 5), (1101, 11)] {
            // 1041: after the newest trimmed (4, at 1040), so nothing of it was lost.
            let r = ask_since(&mut p, 1, since);
            assert_eq!(r, vec![Reply::Since { from: 1, first }], "since {since}");
        }
        for since in [0, 1040] {
            // Messages published since then were trimmed: the joiner lost some.
            let r = ask_since(&mut p, 1, since);
            assert_eq!(
                r,
                vec![Reply::Trimmed { from: 1, oldest: 5 }],
                "since {since}"
            );
        }
        // A `from` at or after the time's first message: a replay as without a time.
        let r = ask_since(&mut p, 9, 1000);
        assert_eq!(seqs(&r), vec![9, 10]);
        assert_eq!(r.last(), Some(&Reply::End { from: 9, last: 10 }));
        assert_eq!(MemoryRing::new().first_since(5).unwrap(), None);
    }

    #[test]
    fn after_a_restart_a_join_from_before_the_oldest_retained_is_told_it_may_have_lost() {
        let t = t0();
        let mut ring = MemoryRing::new();
        for seq in 5..=6u64 {
            let at_ms = 1000 + 10 * seq;
            let m = Retained {
                seq,
                at_ms,
                topic: b"t".to_vec(),
                payload: vec![vec![1]],
            };
            ring.keep(m).unwrap();
        }
        let cfg = PublisherConfig::default();
        let mut p = Publisher::new(cfg, id(), 7, Box::new(ring), "tcp://p:1", t).unwrap();
        let _ = drain(&mut p);
        // 1..=4 were trimmed by the last run, published at 1050 (the oldest's time) or
        // before: a join from then or before may have lost some of them.
        let r = ask_since(&mut p, 1, 1050);
        assert_eq!(r, vec![Reply::Trimmed { from: 1, oldest: 5 }]);
        let r = ask_since(&mut p, 1, 1051);
        assert_eq!(r, vec![Reply::Since { from: 1, first: 6 }]);
    }

    #[test]
    fn sequences_start_at_one_and_heartbeats_come_every_interval() {
        let t = t0();
        let mut p = publisher(PublisherConfig::default(), t);
        p.handle_timeout(t);
        let first = drain(&mut p);
        assert_eq!(first.len(), 1, "a heartbeat at once");
        for i in 1..=3u64 {
            assert_eq!(p.publish(t, 1000, b"t".to_vec(), vec![vec![1]]).unwrap(), i);
        }
        let sent = drain(&mut p);
        let seqs: Vec<u64> = sent
            .into_iter()
            .map(|t| match t {
                Transmit::Publish(f) => match parse_live(f).unwrap() {
                    Live::Data(d) => d.seq,
                    Live::Heartbeat(_) => 0,
                },
                Transmit::Reply(_) => u64::MAX,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        p.handle_timeout(t + Duration::from_millis(999));
        assert!(
            drain(&mut p).is_empty(),
            "no interval since the last heartbeat yet"
        );
        p.handle_timeout(t + Duration::from_secs(1));
        let hb = drain(&mut p);
        let [Transmit::Publish(f)] = hb.as_slice() else {
            panic!("{hb:?}")
        };
        let Live::Heartbeat(h) = parse_live(f.clone()).unwrap() else {
            panic!()
        };
        assert_eq!((h.last, h.oldest, h.replay.as_str()), (3, 1, "tcp://p:1"));
    }

    #[test]
    fn a_busy_stream_carries_a_heartbeat_every_interval() {
        let t = t0();
        let mut p = publisher(PublisherConfig::default(), t);
        p.handle_timeout(t);
        let _ = drain(&mut p);
        // One message every 10 ms for 3.5 s, with no handle_timeout at all: the
        // heartbeats come from publish itself, after the message that made one due.
        let mut heartbeats = Vec::new();
        for i in 1..=350u64 {
            let at = t + Duration::from_millis(i * 10);
            p.publish(at, 1000 + i, b"t".to_vec(), vec![vec![1]])
                .unwrap();
            for tx in drain(&mut p) {
                let Transmit::Publish(f) = tx else { panic!() };
                if let Live::Heartbeat(h) = parse_live(f).unwrap() {
                    heartbeats.push(h.last);
                }
            }
        }
        assert_eq!(
            heartbeats,
            vec![100, 200, 300],
            "one per second, after seq N"
        );
    }

    #[test]
    fn replays_in_batches_trims_and_unknown() {
        let t = t0();
        let cfg = PublisherConfig {
            retain_count: 5,
            replay_batch: 2,
            ..PublisherConfig::default()
        };
        let mut p = publisher(cfg, t);
        drain(&mut p);
        assert_eq!(ask(&mut p, 1, 10), vec![Reply::End { from: 1, last: 0 }]);
        for _ in 0..8 {
            p.publish(t, 5, b"t".to_vec(), vec![b"x".to_vec()]).unwrap();
        }
        drain(&mut p);
        assert_eq!(p.oldest_retained(), 4);
        assert_eq!(
            ask(&mut p, 2, 10),
            vec![Reply::Trimmed { from: 2, oldest: 4 }]
        );
        let r = ask(&mut p, 4, 10);
        assert_eq!(r.len(), 3, "capped at the batch: {r:?}");
        assert!(matches!(&r[0], Reply::Data(d) if d.seq == 4));
        assert!(matches!(&r[1], Reply::Data(d) if d.seq == 5));
        assert_eq!(r[2], Reply::End { from: 4, last: 8 });
        assert_eq!(ask(&mut p, 9, 10), vec![Reply::End { from: 9, last: 8 }]);
        let mut f = vec![b"sub".to_vec()];
        f.extend(
            Request::Replay {
                publisher: Uuid::from_u128(99),
                from: 1,
                max: 1,
                since_ms: None,
            }
            .encode(),
        );
        p.handle_replay_input(f);
        assert_eq!(
            replies(&mut p),
            vec![Reply::Unknown {
                publisher: Uuid::from_u128(99)
            }]
        );
    }

    #[test]
    fn retention_by_age_and_acks_and_garbage() {
        let t = t0();
        let cfg = PublisherConfig {
            retain_age: Duration::from_secs(10),
            ..PublisherConfig::default()
        };
        let mut p = publisher(cfg, t);
        p.publish(t, 1_000, b"t".to_vec(), vec![vec![]]).unwrap();
        p.publish(t, 5_000, b"t".to_vec(), vec![vec![]]).unwrap();
        p.handle_wall_clock(12_000);
        p.handle_timeout(t);
        assert_eq!(p.oldest_retained(), 2);
        p.handle_wall_clock(16_000);
        p.handle_timeout(t);
        assert_eq!(p.retained(), 0);
        let r = ask(&mut p, 1, 10);
        assert_eq!(r, vec![Reply::Trimmed { from: 1, oldest: 0 }]);
        let mut f = vec![b"sub".to_vec()];
        f.extend(
            Request::Ack {
                publisher: id(),
                seq: 2,
                name: b"durable".to_vec(),
            }
            .encode(),
        );
        p.handle_replay_input(f);
        assert_eq!(p.acked().get(&b"durable"[..]), Some(&2));
        p.handle_replay_input(vec![b"sub".to_vec(), b"junk".to_vec()]);
        assert_eq!(p.stats().garbage, 1);
        let events: Vec<Event> = std::iter::from_fn(|| p.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(e, Event::Garbage(_))));
    }

    /// A retention that refuses every message.
    struct Full;

    impl Retention for Full {
        fn keep(&mut self, _: Retained) -> Result<(), StoreError> {
            Err(StoreError::NotADirectory {
                path: "full".into(),
            })
        }
        fn range(&self, _: u64, _: usize) -> Result<Vec<Retained>, StoreError> {
            Ok(Vec::new())
        }
        fn oldest(&self) -> Option<(u64, u64)> {
            None
        }
        fn len(&self) -> u64 {
            0
        }
        fn trim_oldest(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn the_borrowed_sends_are_the_transmits_in_the_same_order() {
        let t = t0();
        let cfg = PublisherConfig {
            replay_batch: 10,
            ..PublisherConfig::default()
        };
        let (mut a, mut b) = (publisher(cfg, t), publisher(cfg, t));
        for p in [&mut a, &mut b] {
            p.publish(t, 5, b"t".to_vec(), vec![b"x".to_vec(), Vec::new()])
                .unwrap();
            p.publish(t, 6, b"u".to_vec(), Vec::new()).unwrap();
            let mut f = vec![b"sub".to_vec()];
            f.extend(
                Request::Replay {
                    publisher: id(),
                    from: 1,
                    max: 5,
                    since_ms: None,
                }
                .encode(),
            );
            p.handle_replay_input(f);
            p.handle_timeout(t + Duration::from_secs(1));
        }
        let owned = drain(&mut a);
        let borrowed: Vec<Transmit> = std::iter::from_fn(|| {
            b.poll_send().map(|(socket, parts)| {
                let frames: Frames = parts.map(<[u8]>::to_vec).collect();
                match socket {
                    PUB => Transmit::Publish(frames),
                    _ => Transmit::Reply(frames),
                }
            })
        })
        .collect();
        // A message, the heartbeat due since the start, a message, two replayed and
        // END, the next heartbeat.
        assert_eq!(owned.len(), 7, "{owned:?}");
        assert_eq!(owned, borrowed);
        let Transmit::Publish(f) = &owned[0] else {
            panic!("{owned:?}")
        };
        let data = Data {
            publisher: id(),
            seq: 1,
            published_at_ms: 5,
            topic: b"t".to_vec(),
            payload: vec![b"x".to_vec(), Vec::new()],
        };
        assert_eq!(f, &data.encode());
        let Transmit::Reply(r) = &owned[3] else {
            panic!("{owned:?}")
        };
        assert_eq!(parse_reply(r[1..].to_vec()).unwrap(), Reply::Data(data));
        let Transmit::Publish(empty) = &owned[2] else {
            panic!("{owned:?}")
        };
        assert_eq!(empty[1], b"", "an empty payload goes as one empty frame");
    }

    #[test]
    fn a_message_the_retention_refuses_is_not_sent_and_keeps_no_sequence() {
        let t = t0();
        let mut p =
            Publisher::new(PublisherConfig::default(), id(), 1, Box::new(Full), "", t).unwrap();
        p.handle_timeout(t);
        assert!(p.publish(t, 1, b"t".to_vec(), vec![vec![1]]).is_err());
        let sent = drain(&mut p);
        assert_eq!(sent.len(), 1, "the heartbeat only: {sent:?}");
        assert_eq!((p.next_seq(), p.stats().published), (1, 0));
    }

    #[test]
    fn zero_settings_are_refused_by_name() {
        let t = t0();
        let bad = |cfg: PublisherConfig| match Publisher::new(
            cfg,
            id(),
            1,
            Box::new(MemoryRing::new()),
            "",
            t,
        ) {
            Err(ConfigError::Invalid { field, .. }) => field,
            Ok(_) => "accepted",
        };
        let d = PublisherConfig::default();
        assert_eq!(
            bad(PublisherConfig {
                heartbeat_interval: Duration::ZERO,
                ..d
            }),
            "heartbeat.interval"
        );
        assert_eq!(
            bad(PublisherConfig {
                retain_count: 0,
                ..d
            }),
            "retain_count"
        );
        assert_eq!(
            bad(PublisherConfig {
                retain_age: Duration::ZERO,
                ..d
            }),
            "retain_age"
        );
        assert_eq!(
            bad(PublisherConfig {
                replay_batch: 0,
                ..d
            }),
            "replay_batch"
        );
        assert_eq!(bad(d), "accepted");
    }
}
