//! The reliable subscriber core: per-publisher order, gap repair by replay, duplicate
//! suppression, liveness by heartbeats, durable cursors and slow-subscriber detection
//! (see [`crate::proto::frames::pubsub`] for the frames).
//!
//! # Sockets
//! Socket 0 is a SUB socket subscribed to everything (topics are filtered here, so that
//! every sequence gap is visible; the cost is the bandwidth of unwanted topics). Socket
//! `i >= 1` is a DEALER to replay endpoint `i - 1`: the endpoints given at construction,
//! then those learned from heartbeats ([`Transmit::Connect`] adds one).
//!
//! # Per publisher
//! The subscriber keeps `next`, the next sequence it expects, and `head`, the highest
//! sequence it knows was published (from data and heartbeats):
//! - `seq == next`: delivered (when its topic matches a prefix), `next += 1`, then any
//!   buffered messages that follow;
//! - `seq < next`: a duplicate, dropped and counted;
//! - `seq > next`: a gap; the live message is buffered (at most
//!   [`SubscriberConfig::max_behind`]) and `REPLAY` from `next` is asked; replayed
//!   messages are delivered in order, then the buffered ones. Never out of order;
//! - a heartbeat with `last >= next`: a lost tail, repaired the same way;
//! - `TRIMMED`: what is no longer retained is reported as [`Event::Lost`] and the
//!   subscriber goes on from the oldest retained;
//! - a replay with no answer within [`SubscriberConfig::timeout`] is asked again (on a
//!   fresh DEALER), so a repair is never stuck;
//! - nothing on SUB from a publisher for `heartbeat.interval × heartbeat.liveness`:
//!   [`Event::PublisherDead`]; its DEALER is re-made, and the SUB too when every known
//!   publisher is silent, again after a capped backoff while it stays silent.
//!
//! First contact with a publisher starts at its durable cursor + 1 when one is known,
//! else at 1 with `from_start` (the late joiner's history), else at the first live
//! sequence seen (or after the last one a heartbeat announces).
//!
//! Which replay endpoint serves which publisher: the one a publisher announces in its
//! heartbeat when it is connectable, else the given endpoints are tried in turn (an
//! endpoint serving another publisher answers `UNKNOWN`); the first that answers with
//! data, `END` or `TRIMMED` is that publisher's from then on.
//!
//! # Contract
//! No clock reads: `now` is an input. After any `handle_*`, drain
//! [`Subscriber::poll_transmit`] and [`Subscriber::poll_event`], then ask
//! [`Subscriber::poll_timeout`] when to call [`Subscriber::handle_timeout`].

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::{ConfigError, ProtocolError};
use crate::proto::backoff::Reconnects;
use crate::proto::frames::pubsub::{self, Data, Live, Reply, Request};
use crate::proto::frames::Frames;

/// Default of [`SubscriberConfig::max_behind`]: 100,000 messages.
pub const DEFAULT_MAX_BEHIND: u64 = 100_000;
/// Default of [`SubscriberConfig::timeout`]: 2 s for a replay answer to start.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most replay endpoints (DEALER sockets) one subscriber keeps: given plus learned.
pub const MAX_REPLAY_ENDPOINTS: usize = 15;

/// What a subscriber does when it falls more than `max_behind` behind a publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnSlow {
    /// Catch up by replay (live messages beyond the buffer are dropped and replayed
    /// later). The default.
    #[default]
    Replay,
    /// Fail: [`Event::TooSlow`], which the driver turns into an error.
    Fail,
}

impl FromStr for OnSlow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "replay" => Ok(OnSlow::Replay),
            "fail" => Ok(OnSlow::Fail),
            other => Err(format!("unknown {other:?}: expected replay or fail")),
        }
    }
}

/// Settings of a [`Subscriber`].
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberConfig {
    /// Topic prefixes delivered; empty (the default) delivers every topic.
    pub topics: Vec<Vec<u8>>,
    /// On first contact with a publisher with no cursor, ask for its retained history
    /// (from sequence 1). Default false: start with the first live message.
    pub from_start: bool,
    /// On first contact with a publisher with no cursor and without `from_start`:
    /// deliver every message it published from this time on (ms since the Unix epoch,
    /// compared with the publisher's clock), fetched by replay before the live stream.
    /// So a subscriber started before its publisher, or following a publisher that
    /// restarts with a new id, misses nothing the slow join of a SUB socket dropped.
    /// When no replay endpoint answers within twice `timeout` plus a heartbeat
    /// interval, delivery starts with the live stream ([`Event::JoinedLive`]).
    /// Default None: start with the first live message. The driver sets its start time.
    pub since_ms: Option<u64>,
    /// The publishers' heartbeat interval, and how many may be missed before a
    /// publisher is dead. Default 1 s × 3.
    pub heartbeat: Heartbeat,
    /// How long a replay request may go unanswered before it is asked again.
    /// Default [`DEFAULT_TIMEOUT`] (2 s).
    pub timeout: Duration,
    /// How far behind a publisher (messages published but not delivered) the
    /// subscriber may fall before [`SubscriberConfig::on_slow`] applies; also the most
    /// live messages buffered per publisher during a repair. Default
    /// [`DEFAULT_MAX_BEHIND`].
    pub max_behind: u64,
    /// What to do beyond `max_behind`. Default [`OnSlow::Replay`].
    pub on_slow: OnSlow,
    /// The most messages asked in one replay request. Default 1000.
    pub replay_batch: u32,
    /// Pause before re-making the sockets of a dead publisher, doubling while it stays
    /// dead. Default [`RECONNECT`] (1 s to 32 s).
    pub reconnect: Backoff,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            topics: Vec::new(),
            from_start: false,
            since_ms: None,
            heartbeat: Heartbeat::default(),
            timeout: DEFAULT_TIMEOUT,
            max_behind: DEFAULT_MAX_BEHIND,
            on_slow: OnSlow::Replay,
            replay_batch: crate::proto::publisher::DEFAULT_REPLAY_BATCH,
            reconnect: RECONNECT,
        }
    }
}

impl SubscriberConfig {
    /// Refuses settings that cannot work, naming the field.
    pub fn validate_at(&self, now: Instant) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.into(),
            })
        };
        self.heartbeat.validate_at(now)?;
        if self.timeout.is_zero() {
            return invalid("timeout", "must be greater than zero");
        }
        crate::config::fits("timeout", now, self.timeout)?;
        if self.max_behind == 0 {
            return invalid("max_behind", "must be at least 1");
        }
        if self.replay_batch == 0 {
            return invalid("replay_batch", "must be at least 1");
        }
        self.reconnect.validate("reconnect")?;
        Ok(())
    }

    fn wants(&self, topic: &[u8]) -> bool {
        self.topics.is_empty() || self.topics.iter().any(|p| topic.starts_with(p))
    }
}

/// One message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its publisher.
    pub publisher: Uuid,
    /// Its sequence at that publisher.
    pub seq: u64,
    /// Its topic.
    pub topic: Vec<u8>,
    /// Its payload frames.
    pub payload: Frames,
    /// When it was published, ms since the Unix epoch (the publisher's clock).
    pub published_at_ms: u64,
    /// Set on a message a durable subscriber may have handed out before it stopped
    /// (see `io::subscriber`, "Durable cursors"): the application may have acted on it
    /// already. The core always sets false.
    pub redelivered: bool,
}

/// What the subscriber reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The next message, in order.
    Delivered(Message),
    /// First contact with a publisher: delivery starts at `from` (with
    /// [`SubscriberConfig::since_ms`], at the first message published since then, which
    /// a replay finds).
    Joined {
        /// The publisher.
        publisher: Uuid,
        /// The first sequence to deliver: where the history, a cursor or the live
        /// stream starts (with `since_ms`, 1, until the replay says where that time is).
        from: u64,
        /// Joining by time: the first message published since then comes first.
        since_ms: Option<u64>,
    },
    /// Joining with [`SubscriberConfig::since_ms`], no replay endpoint answered in time,
    /// or there is none to ask (none given, and the publisher announces none that can
    /// be connected to): delivery starts with the live stream at `from`; what the
    /// publisher sent between `since_ms` and then was not fetched.
    JoinedLive {
        /// The publisher.
        publisher: Uuid,
        /// The first sequence delivered.
        from: u64,
    },
    /// Messages `from..=to` of `publisher` are no longer retained there: lost.
    Lost {
        /// The publisher.
        publisher: Uuid,
        /// The first lost sequence.
        from: u64,
        /// The last lost sequence.
        to: u64,
    },
    /// Joining `publisher` (see [`SubscriberConfig::since_ms`]): some of what it
    /// published since the join time is no longer retained there, so it is lost (how
    /// many is not known); delivery starts at `oldest`, the oldest retained.
    TrimmedSinceStart {
        /// The publisher.
        publisher: Uuid,
        /// The first sequence delivered.
        oldest: u64,
    },
    /// `publisher` has a gap to repair, but no replay endpoint was given and the one
    /// it announces (`endpoint`) cannot be connected to (a wildcard address): the gap
    /// is skipped (history silently, anything else reported [`Event::Lost`]). Once per
    /// publisher.
    NoReplay {
        /// The publisher.
        publisher: Uuid,
        /// The replay endpoint it announces.
        endpoint: String,
    },
    /// Nothing was heard from `publisher` for its liveness; its sockets are re-made.
    PublisherDead {
        /// The publisher.
        publisher: Uuid,
    },
    /// A publisher thought dead was heard again.
    PublisherBack {
        /// The publisher.
        publisher: Uuid,
    },
    /// More than `max_behind` behind `publisher`: catching up by replay.
    Behind {
        /// The publisher.
        publisher: Uuid,
        /// Messages published but not delivered.
        behind: u64,
    },
    /// More than `max_behind` behind `publisher` with [`OnSlow::Fail`].
    TooSlow {
        /// The publisher.
        publisher: Uuid,
        /// Messages published but not delivered.
        behind: u64,
        /// The limit.
        max_behind: u64,
    },
    /// A replay request got no answer in time; it is asked again.
    ReplayTimedOut {
        /// The publisher.
        publisher: Uuid,
        /// The replay endpoint asked.
        endpoint: String,
    },
    /// A replay endpoint answered that it is another publisher.
    Unknown {
        /// The publisher asked for.
        publisher: Uuid,
        /// The endpoint.
        endpoint: String,
    },
    /// A replay endpoint was learned from a publisher's heartbeat.
    Learned {
        /// The publisher.
        publisher: Uuid,
        /// Its replay endpoint.
        endpoint: String,
    },
    /// Nothing at all (no message, no heartbeat) was heard from any publisher for
    /// `silent` since the subscriber started: said once.
    NothingHeard {
        /// How long: the heartbeat liveness.
        silent: Duration,
        /// Messages received meanwhile that were not a bosun publisher's (garbage,
        /// dropped): a peer of another kind is there.
        dropped: u64,
    },
    /// `publisher`'s heartbeats come about every `every`, more than twice the
    /// interval this subscriber expects: it will find the publisher dead between two
    /// heartbeats. Said once per publisher.
    SlowHeartbeats {
        /// The publisher.
        publisher: Uuid,
        /// The gap seen between two of its heartbeats.
        every: Duration,
        /// The interval this subscriber expects.
        expected: Duration,
    },
    /// A message that is not the protocol arrived on `socket`: dropped.
    Garbage {
        /// 0 for SUB, else the replay socket.
        socket: usize,
        /// What was wrong.
        error: ProtocolError,
    },
}

/// What the subscriber asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Send on socket `i` (a replay DEALER).
    Send(usize, Frames),
    /// Close socket `i` at once and make a fresh one, connected as before.
    Reset(usize),
    /// Add a DEALER connected to this endpoint, as the next socket.
    Connect(String),
}

/// Counters of a [`Subscriber`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Messages in order whose topic matched no prefix.
    pub filtered: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Gaps found (a sequence jump or a heartbeat ahead).
    pub gaps: u64,
    /// Replay requests sent.
    pub replays: u64,
    /// Replay requests that timed out.
    pub replay_timeouts: u64,
    /// Messages reported lost (trimmed at the publisher).
    pub lost: u64,
    /// Live messages not buffered (the buffer was full); replayed later.
    pub overflow: u64,
    /// Garbage messages dropped.
    pub garbage: u64,
    /// Times a publisher was found dead.
    pub dead: u64,
}

#[derive(Debug)]
struct Pending {
    from: u64,
    slot: usize,
    deadline: Instant,
}

#[derive(Debug)]
struct Feed {
    next: u64,
    head: u64,
    buffer: BTreeMap<u64, Data>,
    replay: Option<Pending>,
    retry_at: Option<Instant>,
    /// The replay socket confirmed to serve this publisher.
    slot: Option<usize>,
    /// The socket of the endpoint it announces.
    hint: Option<usize>,
    /// Endpoints tried so far without a confirmed one.
    tried: usize,
    /// Still fetching the history asked with `from_start` (trimmed history is not loss).
    history: bool,
    /// Joining with `since_ms`: the time asked for, and when to give up and go live.
    joining: Option<(u64, Instant)>,
    /// The last sequence published before first contact: the subscriber is behind
    /// only past it.
    baseline: u64,
    /// Slowness is judged once the feed has caught up, or from this time on.
    judged_from: Instant,
    caught_up: bool,
    heard_at: Instant,
    /// When its last heartbeat came, the gap before it, and whether slow heartbeats
    /// were reported.
    heartbeat_at: Option<Instant>,
    heartbeat_gap: Option<Duration>,
    slow_reported: bool,
    dead: bool,
    recheck_at: Instant,
    reconnects: Reconnects,
    behind_reported: bool,
    /// [`Event::NoReplay`] was reported.
    no_replay_reported: bool,
}

impl Feed {
    /// Whether `seq` is the next sequence of a live feed with nothing missing:
    /// nothing known past what was delivered, nothing buffered.
    fn in_order(&self, seq: u64) -> bool {
        !self.dead && seq == self.next && self.head < self.next && self.buffer.is_empty()
    }
}

#[derive(Debug)]
struct Slot {
    endpoint: String,
    /// The publisher whose replay is in flight on it.
    busy: Option<Uuid>,
}

/// The subscriber core. See the module docs for the behaviour and the contract.
#[derive(Debug)]
pub struct Subscriber {
    cfg: SubscriberConfig,
    slots: Vec<Slot>,
    feeds: BTreeMap<Uuid, Feed>,
    cursors: BTreeMap<Uuid, u64>,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: SubscriberStats,
    seed: u64,
    /// Since when nothing has been heard from any publisher (None: something was, or
    /// it was said).
    silent_since: Option<Instant>,
}

impl Subscriber {
    /// A subscriber with the given replay endpoints (socket `i + 1` for endpoint `i`;
    /// may be empty: endpoints are then learned from heartbeats), resuming from
    /// `cursors` (the last sequence delivered, per publisher) where it has them. `seed`
    /// drives the reconnect jitter.
    pub fn new(
        cfg: SubscriberConfig,
        replay_endpoints: &[String],
        cursors: impl IntoIterator<Item = (Uuid, u64)>,
        now: Instant,
        seed: u64,
    ) -> Result<Self, ConfigError> {
        cfg.validate_at(now)?;
        if replay_endpoints.len() > MAX_REPLAY_ENDPOINTS {
            return Err(ConfigError::Invalid {
                field: "replay",
                reason: format!(
                    "{} replay endpoints, at most {MAX_REPLAY_ENDPOINTS}",
                    replay_endpoints.len()
                ),
            });
        }
        Ok(Subscriber {
            cfg,
            slots: replay_endpoints
                .iter()
                .map(|e| Slot {
                    endpoint: e.clone(),
                    busy: None,
                })
                .collect(),
            feeds: BTreeMap::new(),
            cursors: cursors.into_iter().collect(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: SubscriberStats::default(),
            seed,
            silent_since: Some(now),
        })
    }

    /// The counters.
    pub fn stats(&self) -> SubscriberStats {
        self.stats
    }

    /// The publishers known, each with the next sequence expected from it.
    pub fn positions(&self) -> impl Iterator<Item = (Uuid, u64)> + '_ {
        self.feeds.iter().map(|(id, f)| (*id, f.next))
    }

    /// How many replay sockets there are (sockets 1 to this).
    pub fn replay_sockets(&self) -> usize {
        self.slots.len()
    }

    /// The endpoint of replay socket `i` (from 1).
    pub fn replay_endpoint(&self, i: usize) -> Option<&str> {
        self.slots
            .get(i.wrapping_sub(1))
            .map(|s| s.endpoint.as_str())
    }

    /// Tells `publisher` (over its replay socket, once one is known) that durable
    /// subscriber `name` has processed everything up to `seq`. Call once the cursor is
    /// persisted.
    pub fn ack(&mut self, publisher: Uuid, seq: u64, name: &[u8]) {
        let Some(f) = self.feeds.get(&publisher) else {
            return;
        };
        let Some(slot) = f.slot.or(f.hint) else {
            return;
        };
        let req = Request::Ack {
            publisher,
            seq,
            name: name.iter().copied().take(pubsub::MAX_NAME).collect(),
        };
        self.out.push_back(Transmit::Send(slot, req.encode()));
    }

    /// A message arrived on socket `socket` (0: SUB; else a replay DEALER).
    pub fn handle_input(&mut self, now: Instant, socket: usize, frames: Frames) {
        if socket == 0 {
            match pubsub::parse_live(frames) {
                Ok(Live::Data(d)) => self.on_data(now, d, true),
                Ok(Live::Heartbeat(hb)) => self.on_heartbeat(now, hb),
                Err(error) => self.garbage(socket, error),
            }
            return;
        }
        if socket > self.slots.len() {
            return;
        }
        match pubsub::parse_reply(frames) {
            Ok(Reply::Data(d)) => {
                if self.slots[socket - 1].busy == Some(d.publisher) {
                    self.confirm(d.publisher, socket);
                }
                self.on_data(now, d, false)
            }
            Ok(Reply::End { from, last }) => self.on_end(now, socket, from, last),
            Ok(Reply::Trimmed { from, oldest }) => self.on_trimmed(now, socket, from, oldest),
            Ok(Reply::Since { from, first }) => self.on_since(now, socket, from, first),
            Ok(Reply::Unknown { publisher }) => self.on_unknown(now, socket, publisher),
            Err(error) => self.garbage(socket, error),
        }
    }

    fn garbage(&mut self, socket: usize, error: ProtocolError) {
        self.stats.garbage += 1;
        self.events.push_back(Event::Garbage { socket, error });
    }

    /// The feed of `publisher`, made on first contact: `live` is the first live
    /// sequence seen, `last` a heartbeat's last sequence.
    fn contact(&mut self, now: Instant, publisher: Uuid, live: Option<u64>, last: Option<u64>) {
        if self.feeds.contains_key(&publisher) {
            return;
        }
        let cursor = self.cursors.get(&publisher).copied();
        let live_start = match (live, last) {
            (Some(s), _) => s,
            (None, Some(l)) => l.saturating_add(1),
            (None, None) => 1,
        };
        let (mut next, history) = match (cursor, self.cfg.from_start) {
            (Some(c), _) => (c.saturating_add(1), false),
            (None, true) => (1, true),
            (None, false) => (live_start, false),
        };
        let mut joining = None;
        if let (None, false, Some(since)) = (cursor, self.cfg.from_start, self.cfg.since_ms) {
            if next > 1 {
                // Ask from 1 with the time; the answer starts where that time does.
                let by = now
                    .checked_add(self.start_window())
                    .unwrap_or(now + self.cfg.timeout);
                joining = Some((since, by));
                next = 1;
            }
        }
        // History, a backlog after a restart and a join are not falling behind: only
        // what was published after first contact counts.
        let baseline = live_start - 1;
        let judged_from = now.checked_add(self.start_window()).unwrap_or(now);
        let seed = self.seed ^ publisher.as_u128() as u64;
        self.feeds.insert(
            publisher,
            Feed {
                next,
                head: next - 1,
                buffer: BTreeMap::new(),
                replay: None,
                retry_at: None,
                slot: None,
                hint: None,
                tried: 0,
                history,
                joining,
                baseline,
                judged_from,
                caught_up: false,
                heard_at: now,
                heartbeat_at: None,
                heartbeat_gap: None,
                slow_reported: false,
                dead: false,
                recheck_at: now,
                reconnects: Reconnects::new(self.cfg.reconnect, seed),
                behind_reported: false,
                no_replay_reported: false,
            },
        );
        let since_ms = joining.map(|(since, _)| since);
        self.events.push_back(Event::Joined {
            publisher,
            from: next,
            since_ms,
        });
    }

    /// A publisher whose heartbeat says its interval (`said_ms`, 0: not said) is
    /// judged by it: more than twice this subscriber's interval is a different setting,
    /// reported at once; anything else never is (long gaps are then restarts or
    /// outages). A publisher that does not say heartbeats every interval all the same,
    /// busy or idle: two gaps in a row between its heartbeats, both more than twice this
    /// subscriber's interval and within a quarter of each other, mean the two intervals
    /// were set differently (a single long gap is a restart or an outage).
    fn check_heartbeat_gap(&mut self, now: Instant, publisher: Uuid, said_ms: u16) {
        let expected = self.cfg.heartbeat.interval;
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        let long = |g: Duration| g > expected.saturating_mul(2);
        let last = f.heartbeat_at.replace(now);
        let slow = if said_ms != 0 {
            let said = Duration::from_millis(u64::from(said_ms));
            long(said).then_some(said)
        } else {
            let Some(gap) = last.map(|t| now.saturating_duration_since(t)) else {
                return;
            };
            let previous = f.heartbeat_gap.replace(gap);
            let steady =
                previous.is_some_and(|p| long(p) && p.max(gap) - p.min(gap) <= p.max(gap) / 4);
            (long(gap) && steady).then_some(gap)
        };
        if let Some(every) = slow.filter(|_| !f.slow_reported) {
            f.slow_reported = true;
            self.events.push_back(Event::SlowHeartbeats {
                publisher,
                every,
                expected,
            });
        }
    }

    fn heard(&mut self, now: Instant, publisher: Uuid) {
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        f.heard_at = now;
        if f.dead {
            f.dead = false;
            f.reconnects.reset();
            self.events.push_back(Event::PublisherBack { publisher });
        }
    }

    fn on_data(&mut self, now: Instant, mut d: Data, live: bool) {
        let publisher = d.publisher;
        if live {
            if let Some(f) = self.feeds.get_mut(&publisher) {
                if f.in_order(d.seq) {
                    // What the general path below comes to for the next live message
                    // of a live publisher with nothing missing, in one look-up: heard,
                    // delivered, caught up, nothing to drain or to ask.
                    f.heard_at = now;
                    f.head = d.seq;
                    f.next = d.seq + 1;
                    f.behind_reported = false;
                    f.caught_up = true;
                    self.hand_out(d);
                    return;
                }
            }
        }
        if live {
            self.contact(now, publisher, Some(d.seq), None);
            self.heard(now, publisher);
        }
        let cap = self.buffer_cap();
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return; // replayed data of a publisher never heard live: not asked for
        };
        if !live {
            f.joining = None; // the publisher answered the join with data: from `next`
        }
        let was_repairing = f.head >= f.next;
        f.head = f.head.max(d.seq);
        if d.seq < f.next {
            self.stats.duplicates += 1;
            return;
        }
        if d.seq == f.next {
            self.deliver(d);
            self.drain(publisher);
        } else {
            if !was_repairing {
                self.stats.gaps += 1;
            }
            if f.buffer.contains_key(&d.seq) {
                self.stats.duplicates += 1;
            } else if live && f.buffer.len() >= cap {
                self.stats.overflow += 1;
            } else {
                // The payload is the frame list the message arrived in, sized for a
                // whole message: a buffer of up to `max_behind` keeps only what it holds.
                d.payload.shrink_to_fit();
                f.buffer.insert(d.seq, d);
            }
        }
        self.check_slow(now, publisher);
        self.ask(now, publisher);
    }

    fn buffer_cap(&self) -> usize {
        usize::try_from(self.cfg.max_behind).unwrap_or(usize::MAX)
    }

    fn on_heartbeat(&mut self, now: Instant, hb: pubsub::Heartbeat) {
        let publisher = hb.publisher;
        self.contact(now, publisher, None, Some(hb.last));
        self.heard(now, publisher);
        self.check_heartbeat_gap(now, publisher, hb.interval_ms);
        self.learn(publisher, &hb.replay);
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        if hb.last >= f.next && f.head < f.next {
            self.stats.gaps += 1;
        }
        f.head = f.head.max(hb.last);
        // Joining with nowhere to ask (no endpoint given, none connectable announced):
        // no answer can come, so the live stream starts now, not when the window ends.
        let nowhere = self.slots.is_empty() && !connectable(&hb.replay);
        if nowhere && f.joining.is_some() {
            let from = self.go_live(publisher);
            self.events.push_back(Event::JoinedLive { publisher, from });
        } else if nowhere && f.next <= f.head {
            // A gap (history, a cursor's backlog, drops on the way) that nothing can
            // repair: said once, then skipped (history silently, the rest as lost)
            // instead of waiting forever.
            if !f.no_replay_reported {
                f.no_replay_reported = true;
                self.events.push_back(Event::NoReplay {
                    publisher,
                    endpoint: hb.replay.clone(),
                });
            }
            let (first_live, target) = (f.baseline.saturating_add(1), f.head.saturating_add(1));
            if f.history && first_live > f.next {
                self.skip_to(publisher, first_live.min(target)); // history: not lost
            }
            if let Some(f) = self.feeds.get_mut(&publisher) {
                f.history = false;
            }
            self.skip_to(publisher, target);
        }
        self.check_slow(now, publisher);
        self.ask(now, publisher);
    }

    /// Takes the replay endpoint a heartbeat announces, when it can be connected to.
    fn learn(&mut self, publisher: Uuid, endpoint: &str) {
        if !connectable(endpoint) {
            return;
        }
        let Some(f) = self.feeds.get(&publisher) else {
            return;
        };
        if f.hint.is_some() {
            return;
        }
        let slot = match self.slots.iter().position(|s| s.endpoint == endpoint) {
            Some(i) => i + 1,
            None => {
                if self.slots.len() >= MAX_REPLAY_ENDPOINTS {
                    return;
                }
                self.slots.push(Slot {
                    endpoint: endpoint.to_string(),
                    busy: None,
                });
                self.out.push_back(Transmit::Connect(endpoint.to_string()));
                self.events.push_back(Event::Learned {
                    publisher,
                    endpoint: endpoint.to_string(),
                });
                self.slots.len()
            }
        };
        if let Some(f) = self.feeds.get_mut(&publisher) {
            f.hint = Some(slot);
        }
    }

    fn deliver(&mut self, d: Data) {
        if let Some(f) = self.feeds.get_mut(&d.publisher) {
            f.next = d.seq + 1;
        }
        self.hand_out(d);
    }

    /// Hands `d` to the application if its topic is wanted.
    fn hand_out(&mut self, d: Data) {
        if self.cfg.wants(&d.topic) {
            self.stats.delivered += 1;
            self.events.push_back(Event::Delivered(Message {
                publisher: d.publisher,
                seq: d.seq,
                topic: d.topic,
                payload: d.payload,
                published_at_ms: d.published_at_ms,
                redelivered: false,
            }));
        } else {
            self.stats.filtered += 1;
        }
    }

    /// Delivers the buffered messages that now follow in order.
    fn drain(&mut self, publisher: Uuid) {
        loop {
            let Some(f) = self.feeds.get_mut(&publisher) else {
                return;
            };
            while f.buffer.first_key_value().is_some_and(|(k, _)| *k < f.next) {
                f.buffer.pop_first();
            }
            let Some(d) = f.buffer.remove(&f.next) else {
                return;
            };
            self.deliver(d);
        }
    }

    /// Goes on from `target`: what is buffered below it is delivered, the rest of
    /// `next..target` reported lost (unless it is history a late joiner asked for).
    fn skip_to(&mut self, publisher: Uuid, target: u64) {
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        let history = std::mem::take(&mut f.history);
        loop {
            let Some(f) = self.feeds.get_mut(&publisher) else {
                return;
            };
            let from = f.next;
            let first = f.buffer.first_key_value().map(|(k, _)| *k);
            let upto = match first {
                Some(k) if k < target => k,
                _ => target,
            };
            if upto > from {
                f.next = upto;
                if !history {
                    self.stats.lost += upto - from;
                    self.events.push_back(Event::Lost {
                        publisher,
                        from,
                        to: upto - 1,
                    });
                }
            }
            if upto == target {
                break;
            }
            self.drain(publisher);
        }
        self.drain(publisher);
    }

    /// Ends a join: delivery goes on with the first live message buffered (or after
    /// the last one known), and what precedes it is not reported lost.
    fn go_live(&mut self, publisher: Uuid) -> u64 {
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return 0;
        };
        f.joining = None;
        let after_head = f.head.saturating_add(1);
        let target = f
            .buffer
            .first_key_value()
            .map_or(after_head, |(k, _)| (*k).min(after_head));
        if target > f.next {
            f.history = true;
            self.skip_to(publisher, target);
        }
        target
    }

    /// How long after first contact a feed may take to start: learn the replay
    /// endpoint from a heartbeat and ask twice. Joining gives up after it, and
    /// slowness is not judged before it unless the feed caught up sooner.
    fn start_window(&self) -> Duration {
        self.cfg
            .timeout
            .saturating_mul(2)
            .saturating_add(self.cfg.heartbeat.interval)
    }

    /// Reports a feed more than `max_behind` behind, once until it catches up. Not
    /// before it first caught up or its start window passed: fetching history or a
    /// backlog, or waiting for the replay endpoint, is not being slow.
    fn check_slow(&mut self, now: Instant, publisher: Uuid) {
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        let behind = f
            .head
            .saturating_sub(f.next.saturating_sub(1).max(f.baseline));
        if behind == 0 {
            f.behind_reported = false;
            // Caught up only with everything known delivered: a heartbeat at first
            // contact says nothing new, but the history behind it is still to come.
            f.caught_up = f.caught_up || f.next > f.head;
            return;
        }
        if !f.caught_up && now < f.judged_from {
            return;
        }
        if behind <= self.cfg.max_behind || f.behind_reported {
            return;
        }
        f.behind_reported = true;
        self.events.push_back(match self.cfg.on_slow {
            OnSlow::Replay => Event::Behind { publisher, behind },
            OnSlow::Fail => Event::TooSlow {
                publisher,
                behind,
                max_behind: self.cfg.max_behind,
            },
        });
    }

    /// The replay socket to ask for `publisher`: its confirmed one, the one it
    /// announces, or the given endpoints in turn.
    fn slot_for(&self, f: &Feed) -> Option<usize> {
        if let Some(s) = f.slot.or(f.hint) {
            return Some(s);
        }
        if self.slots.is_empty() {
            return None;
        }
        Some(1 + f.tried % self.slots.len())
    }

    /// Asks for a replay from `next` if there is a gap and none is in flight.
    fn ask(&mut self, now: Instant, publisher: Uuid) {
        let Some(f) = self.feeds.get(&publisher) else {
            return;
        };
        if f.replay.is_some() || f.next > f.head {
            return;
        }
        let slot = self.slot_for(f);
        let free = slot.filter(|s| {
            self.slots
                .get(s - 1)
                .is_some_and(|sl| sl.busy.is_none() || sl.busy == Some(publisher))
        });
        let timeout = self.cfg.timeout;
        let batch = self.cfg.replay_batch;
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        let Some(slot) = free else {
            // No endpoint yet, or it is busy with another publisher: try again later.
            f.retry_at.get_or_insert(now + timeout);
            return;
        };
        let from = f.next;
        f.replay = Some(Pending {
            from,
            slot,
            deadline: now + timeout,
        });
        f.retry_at = None;
        self.slots[slot - 1].busy = Some(publisher);
        self.stats.replays += 1;
        let req = Request::Replay {
            publisher,
            from,
            max: batch,
            since_ms: f.joining.map(|(since, _)| since),
        };
        self.out.push_back(Transmit::Send(slot, req.encode()));
    }

    fn confirm(&mut self, publisher: Uuid, socket: usize) {
        if let Some(f) = self.feeds.get_mut(&publisher) {
            f.slot = Some(socket);
        }
    }

    /// The replay in flight on `socket` whose batch starts at `from`, ended: its
    /// publisher.
    fn finish(&mut self, socket: usize, from: u64) -> Option<(Uuid, u64)> {
        let publisher = self.slots.get(socket - 1)?.busy?;
        let f = self.feeds.get_mut(&publisher)?;
        let pending = f.replay.as_ref()?;
        if pending.slot != socket || pending.from != from {
            return None; // an answer to an earlier request
        }
        f.replay = None;
        self.slots[socket - 1].busy = None;
        Some((publisher, from))
    }

    /// The replay in flight on `socket` from `from` was answered: its publisher, now
    /// known to be served by `socket`.
    fn answered(&mut self, socket: usize, from: u64) -> Option<Uuid> {
        let (publisher, _) = self.finish(socket, from)?;
        self.confirm(publisher, socket);
        Some(publisher)
    }

    fn on_end(&mut self, now: Instant, socket: usize, from: u64, last: u64) {
        let Some(publisher) = self.answered(socket, from) else {
            return;
        };
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        f.history = false;
        f.head = f.head.max(last);
        f.joining = None;
        if f.next <= f.head {
            if f.next > from {
                self.ask(now, publisher); // progress: the next batch at once
            } else {
                f.retry_at = Some(now + self.cfg.timeout);
            }
        }
        self.check_slow(now, publisher);
    }

    fn on_trimmed(&mut self, now: Instant, socket: usize, from: u64, oldest: u64) {
        let Some(publisher) = self.answered(socket, from) else {
            return;
        };
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        let target = if oldest == 0 {
            f.head.saturating_add(1)
        } else {
            oldest
        };
        if f.joining.take().is_some() {
            // The answer to a join: what was published since the join time starts
            // before `target` and was trimmed. Skipped up to the first message seen
            // live without a count (what precedes the join time is not lost, and where
            // it ends is not known); a live message trimmed too is lost as usual.
            self.events.push_back(Event::TrimmedSinceStart {
                publisher,
                oldest: target,
            });
            let upto = target.min(f.baseline.saturating_add(1));
            if upto > f.next {
                f.history = true;
                self.skip_to(publisher, upto);
            }
        }
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        if target > f.next {
            self.skip_to(publisher, target);
        }
        if let Some(f) = self.feeds.get_mut(&publisher) {
            f.history = false;
        }
        self.ask(now, publisher);
    }

    /// The join's answer: what was published since the join time starts at `first`;
    /// what precedes it was published before, and is skipped without being lost.
    fn on_since(&mut self, now: Instant, socket: usize, from: u64, first: u64) {
        let Some(publisher) = self.answered(socket, from) else {
            return;
        };
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        if f.joining.take().is_none() {
            // Not joining any more (it went live meanwhile): go on from where it is.
            self.ask(now, publisher);
            return;
        }
        // Never past the first message seen live: a clock ahead of the publisher's
        // (or a wrong answer) must not skip what was published after contact.
        let first = first.min(f.baseline.saturating_add(1));
        if first > f.next {
            f.history = true;
            self.skip_to(publisher, first);
        }
        self.ask(now, publisher);
    }

    fn on_unknown(&mut self, now: Instant, socket: usize, asked: Uuid) {
        let endpoint = self
            .slots
            .get(socket - 1)
            .map(|s| s.endpoint.clone())
            .unwrap_or_default();
        let Some(publisher) = self.slots.get(socket - 1).and_then(|s| s.busy) else {
            return;
        };
        if publisher != asked {
            return;
        }
        self.slots[socket - 1].busy = None;
        let n = self.slots.len();
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        f.replay = None;
        if f.slot == Some(socket) {
            f.slot = None;
        }
        if f.hint == Some(socket) {
            f.hint = None;
        }
        f.tried += 1;
        self.events.push_back(Event::Unknown {
            publisher,
            endpoint,
        });
        if f.tried % n.max(1) == 0 {
            f.retry_at = Some(now + self.cfg.timeout); // every endpoint tried: pause
        } else {
            self.ask(now, publisher);
        }
    }

    /// Time passed: replay timeouts and retries, publisher liveness.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<Uuid> = self.feeds.keys().copied().collect();
        let expiry = self.cfg.heartbeat.expiry();
        if self.silent_since.is_some_and(|t| now >= t + expiry) {
            self.silent_since = None;
            if self.feeds.is_empty() {
                self.events.push_back(Event::NothingHeard {
                    silent: expiry,
                    dropped: self.stats.garbage,
                });
            }
        }
        for publisher in ids {
            let Some(f) = self.feeds.get_mut(&publisher) else {
                continue;
            };
            if let Some(p) = f.replay.as_ref().filter(|p| now >= p.deadline) {
                let slot = p.slot;
                f.replay = None;
                if f.slot != Some(slot) {
                    f.tried += 1;
                }
                if let Some(s) = self.slots.get_mut(slot - 1) {
                    if s.busy == Some(publisher) {
                        s.busy = None;
                    }
                }
                self.stats.replay_timeouts += 1;
                self.out.push_back(Transmit::Reset(slot));
                self.events.push_back(Event::ReplayTimedOut {
                    publisher,
                    endpoint: self.slots[slot - 1].endpoint.clone(),
                });
                self.ask(now, publisher);
            }
            let Some(f) = self.feeds.get_mut(&publisher) else {
                continue;
            };
            if f.joining.is_some_and(|(_, by)| now >= by) {
                let from = self.go_live(publisher);
                self.events.push_back(Event::JoinedLive { publisher, from });
            }
            let Some(f) = self.feeds.get_mut(&publisher) else {
                continue;
            };
            if f.retry_at.is_some_and(|at| now >= at) {
                f.retry_at = None;
                self.ask(now, publisher);
            }
            let Some(f) = self.feeds.get_mut(&publisher) else {
                continue;
            };
            let due = if f.dead {
                now >= f.recheck_at
            } else {
                now >= f.heard_at + expiry
            };
            if due {
                if !f.dead {
                    f.dead = true;
                    self.stats.dead += 1;
                    self.events.push_back(Event::PublisherDead { publisher });
                }
                self.reconnect(now, publisher);
            }
        }
    }

    /// Re-makes the sockets of a dead publisher: its replay DEALER, and the SUB when
    /// every known publisher is silent; the next attempt after a backoff.
    fn reconnect(&mut self, now: Instant, publisher: Uuid) {
        let all_dead = self.feeds.values().all(|f| f.dead);
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        let (_, pause) = f.reconnects.failed();
        f.recheck_at = now + pause;
        let slot = f.slot.or(f.hint);
        // A replay socket another live publisher is served by (a publisher restarted
        // without a store, with a new id, on the same endpoint) is left alone.
        let shared = slot.is_some_and(|s| {
            self.feeds
                .iter()
                .any(|(id, g)| *id != publisher && !g.dead && g.slot.or(g.hint) == Some(s))
        });
        let Some(f) = self.feeds.get_mut(&publisher) else {
            return;
        };
        if let Some(slot) = slot.filter(|_| !shared) {
            self.out.push_back(Transmit::Reset(slot));
            if let Some(p) = f.replay.take() {
                if let Some(s) = self.slots.get_mut(p.slot - 1) {
                    s.busy = None;
                }
            }
        }
        if all_dead {
            self.out.push_back(Transmit::Reset(0));
        }
        self.ask(now, publisher);
    }

    /// The next thing to do to a socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Subscriber::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.cfg.heartbeat.expiry();
        let silent = self.silent_since.map(|t| t + expiry);
        self.feeds
            .values()
            .flat_map(|f| {
                [
                    f.replay.as_ref().map(|p| p.deadline),
                    f.retry_at,
                    f.joining.map(|(_, by)| by),
                    Some(if f.dead {
                        f.recheck_at
                    } else {
                        f.heard_at + expiry
                    }),
                ]
            })
            .flatten()
            .chain(silent)
            .min()
    }
}

/// Whether a subscriber can connect to an endpoint a publisher announces: not a
/// wildcard bind address.
fn connectable(endpoint: &str) -> bool {
    if endpoint.is_empty() {
        return false;
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return endpoint.contains("://");
    };
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    !(host.is_empty() || host == "*" || host == "0.0.0.0" || host == "[::]" || host == "::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_endpoints_are_not_learned() {
        assert!(connectable("tcp://127.0.0.1:5557"));
        assert!(connectable("ipc:///tmp/x"));
        assert!(!connectable("tcp://0.0.0.0:5557"));
        assert!(!connectable("tcp://*:5557"));
        assert!(!connectable(""));
    }

    fn data(seq: u64, topic: &[u8]) -> Data {
        Data {
            publisher: Uuid::from_u128(7),
            seq,
            published_at_ms: 1000 + seq,
            topic: topic.to_vec(),
            payload: vec![seq.to_be_bytes().to_vec()],
        }
    }

    #[test]
    fn in_order_messages_around_a_repaired_gap_are_delivered_once_and_filtered() {
        #[allow(clippy::disallowed_methods)] // the origin of virtual time
        let t = Instant::now();
        let cfg = SubscriberConfig {
            topics: vec![b"a".to_vec()],
            ..SubscriberConfig::default()
        };
        let mut s = Subscriber::new(cfg, &["tcp://p:1".to_string()], [], t, 1).unwrap();
        let live = |s: &mut Subscriber, seq, topic: &[u8]| {
            s.handle_input(t, 0, data(seq, topic).encode());
        };
        live(&mut s, 1, b"a");
        live(&mut s, 2, b"b"); // in order, not wanted
        live(&mut s, 3, b"a");
        live(&mut s, 3, b"a"); // a duplicate
        live(&mut s, 5, b"a"); // 4 is missing: buffered, asked for
        live(&mut s, 6, b"a");
        let asked: Vec<Transmit> = std::iter::from_fn(|| s.poll_transmit()).collect();
        assert_eq!(asked.len(), 1, "{asked:?}");
        let mut reply = Reply::Data(data(4, b"a")).encode();
        s.handle_input(t, 1, std::mem::take(&mut reply));
        live(&mut s, 7, b"a");
        live(&mut s, 8, b"b");
        live(&mut s, 9, b"a");
        let delivered: Vec<(u64, Frames)> = std::iter::from_fn(|| s.poll_event())
            .filter_map(|e| match e {
                Event::Delivered(m) => Some((m.seq, m.payload)),
                _ => None,
            })
            .collect();
        let want = [1u64, 3, 4, 5, 6, 7, 9];
        assert_eq!(
            delivered,
            want.iter()
                .map(|q| (*q, vec![q.to_be_bytes().to_vec()]))
                .collect::<Vec<_>>()
        );
        let st = s.stats();
        assert_eq!(
            (st.delivered, st.filtered, st.duplicates, st.gaps),
            (7, 2, 1, 1)
        );
        assert_eq!(
            s.positions().collect::<Vec<_>>(),
            vec![(Uuid::from_u128(7), 10)]
        );
    }

    #[test]
    fn on_slow_parses() {
        assert_eq!("replay".parse(), Ok(OnSlow::Replay));
        assert_eq!("fail".parse(), Ok(OnSlow::Fail));
        assert!("Fail".parse::<OnSlow>().is_err());
    }
}
