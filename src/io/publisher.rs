//! The reliable publisher's driver: a PUB socket (slot 0) and the replay ROUTER
//! (slot 1) around [`crate::proto::publisher::Publisher`], in the one driver loop.
//!
//! Each [`Publisher::publish`] assigns the next sequence, retains the message (in
//! memory, or in the store given with [`PublisherBuilder::store`]), then, in the same
//! call, serves what the replay socket holds and sends. With [`Durability::Batched`] the
//! store is flushed once per driver turn before anything of that turn is sent (group
//! commit; [`Publisher::publish_all`] makes a turn of many messages); with
//! [`Durability::Every`] each message is flushed as it is retained. Between publishes,
//! [`Publisher::serve`] or [`Publisher::run_until_stopped`] keep heartbeating and
//! answering replays.
//!
//! With a store the publisher keeps its id and continues its sequence across restarts
//! ([`crate::store::published`]); its first heartbeat, sent at once, tells subscribers
//! the last sequence, so what was stored but never sent is replayed to them.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::{ClientError, ConfigError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::envelope::MAX_PAYLOAD_BYTES;
use crate::proto::frames::wire::Parts;
use crate::proto::frames::Frames;
use crate::proto::publisher::{
    self as core, Event, MemoryRing, PublisherConfig, PublisherStats, Retention,
};
use crate::store::{published, Durability, Store, StoreError};

/// The publisher core with its store's group commit: the [`Core`] the driver runs.
struct Committing {
    core: core::Publisher,
    /// The store to flush before sending (`batched`).
    commit: Option<Store>,
    /// Messages were retained since the last flush.
    dirty: bool,
    /// A commit failed: what it said (reported once as an event).
    failed: Option<StoreError>,
}

impl Committing {
    /// Flushes what was retained since the last commit. On failure nothing of this turn
    /// is sent: the messages were not made durable.
    fn commit(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let Some(store) = &self.commit else {
            return;
        };
        if let Err(e) = store.flush() {
            self.core.discard_transmits();
            self.failed = Some(e);
        }
    }
}

impl Core for Committing {
    type Event = Event;
    fn handle_input(&mut self, _now: Instant, socket: usize, frames: Frames) {
        if socket == 1 {
            self.core.handle_replay_input(frames);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_wall_clock(io::unix_ms());
        self.core.handle_timeout(now);
        // Trims by age are writes too.
        self.dirty = true;
    }
    fn poll_op(&mut self) -> Option<Op> {
        None // every send is queued in the core's buffer: poll_send
    }
    fn poll_send(&mut self) -> Option<(usize, Parts<'_>)> {
        if self.core.has_transmit() {
            self.commit();
        }
        // The core's socket numbers are the slots of `bind`: PUB 0, ROUTER 1.
        self.core.poll_send()
    }
    fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.failed.take() {
            return Some(Event::RetentionFailed(e));
        }
        self.core.poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
}

/// Settings of a [`Publisher`], from [`Publisher::builder`]; [`PublisherBuilder::bind`]
/// makes it.
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    endpoint: String,
    replay: Option<String>,
    transport: Option<Transport>,
    config: PublisherConfig,
    store: Option<(Store, Durability)>,
}

impl PublisherBuilder {
    /// Uses `ctx` instead of a context of its own (the default).
    pub fn context(self, ctx: &zmq::Context) -> Self {
        self.transport(&Transport::with_context(ctx))
    }

    /// Makes its sockets with `transport`. Default: a transport of its own.
    pub fn transport(mut self, transport: &Transport) -> Self {
        self.transport = Some(transport.clone());
        self
    }

    /// Where to bind the replay ROUTER (required): subscribers ask it for what they
    /// missed. Its bound endpoint is announced in heartbeats.
    pub fn replay(mut self, endpoint: &str) -> Self {
        self.replay = Some(endpoint.to_string());
        self
    }

    /// A heartbeat goes out when nothing was published for this long. Default 1 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// The most messages retained for replay. Default 1,000,000.
    pub fn retain_count(mut self, n: u64) -> Self {
        self.config.retain_count = n;
        self
    }

    /// How long messages are retained for replay. Default 1 h.
    pub fn retain_age(mut self, age: Duration) -> Self {
        self.config.retain_age = age;
        self
    }

    /// Every setting at once (see [`PublisherConfig`]).
    pub fn config(mut self, config: PublisherConfig) -> Self {
        self.config = config;
        self
    }

    /// Retains messages in `store` (and keeps the publisher's id and sequence there),
    /// flushed as `durability` says. Default: a ring in memory, a new id each start.
    pub fn store(mut self, store: &Store, durability: Durability) -> Self {
        self.store = Some((store.clone(), durability));
        self
    }

    /// Checks the settings, opens the store's publisher state, binds both sockets.
    pub fn bind(self) -> Result<Publisher, Error> {
        self.config.validate()?;
        let Some(replay) = self.replay else {
            return Err(ConfigError::Invalid {
                field: "replay",
                reason: "a publisher needs a replay endpoint (.replay(..), --replay)".into(),
            }
            .into());
        };
        let any_port = replay.ends_with(":*") || replay.ends_with(":0");
        if replay == self.endpoint && !any_port {
            return Err(ConfigError::Invalid {
                field: "replay",
                reason: format!(
                    "the replay endpoint must differ from the PUB endpoint ({replay}): \
                     they are two sockets"
                ),
            }
            .into());
        }
        let transport = self.transport.unwrap_or_default();
        // A ROUTER drops what goes past its high-water mark to a peer, silently: one
        // answer (its messages and END) must fit, with room for a retried request's.
        // (A high-water mark of 0 is no limit.)
        let hwm = transport.options().send_hwm;
        let fits = u32::try_from(hwm / 2).unwrap_or(0);
        let mut config = self.config;
        if hwm > 0 {
            config.replay_batch = config.replay_batch.min(fits.max(1));
        }
        #[allow(clippy::disallowed_methods)] // the driver makes the publisher's id
        let new_id = Uuid::now_v7;
        let (id, next, retention, commit): (_, _, Box<dyn Retention>, _) = match &self.store {
            Some((store, durability)) => {
                let (id, next, log) = published::open(store, *durability, new_id)?;
                let commit = (*durability == Durability::Batched).then(|| store.clone());
                (id, next, Box::new(log), commit)
            }
            None => (new_id(), 1, Box::new(MemoryRing::new()), None),
        };
        let sockets = Sockets::bound(
            &transport,
            &[(zmq::PUB, &self.endpoint), (zmq::ROUTER, &replay)],
        )?;
        let core =
            core::Publisher::new(config, id, next, retention, &sockets.endpoint(1), io::now())?;
        let committing = Committing {
            core,
            commit,
            dirty: false,
            failed: None,
        };
        Ok(Publisher {
            driver: Driver::new(committing, sockets, &Shutdown::new()),
            log: Limiter::default(),
        })
    }
}

/// A reliable publisher: a bound PUB socket and its replay ROUTER.
///
/// ```no_run
/// use std::time::Duration;
/// use bosun::io::publisher::Publisher;
/// let shutdown = bosun::Shutdown::new();
/// let mut publisher = Publisher::builder("tcp://127.0.0.1:5556")
///     .replay("tcp://127.0.0.1:5557")
///     .heartbeat_interval(Duration::from_secs(1))
///     .bind()?;
/// let seq = publisher.publish(b"prices", vec![b"42".to_vec()])?;
/// assert_eq!(seq, 1);
/// publisher.run_until_stopped(&shutdown)?; // heartbeats, answers replays
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct Publisher {
    driver: Driver<Committing>,
    log: Limiter,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("core", &self.driver.core.core)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// The settings of a publisher whose PUB socket binds `endpoint`;
    /// [`PublisherBuilder::replay`] is required, then [`PublisherBuilder::bind`].
    pub fn builder(endpoint: &str) -> PublisherBuilder {
        PublisherBuilder {
            endpoint: endpoint.to_string(),
            replay: None,
            transport: None,
            config: PublisherConfig::default(),
            store: None,
        }
    }

    /// A publisher at `endpoint` with its replay ROUTER at `replay`, every other
    /// setting at its default (memory retention).
    pub fn bind(endpoint: &str, replay: &str) -> Result<Self, Error> {
        Self::builder(endpoint).replay(replay).bind()
    }

    /// The publisher's id (kept across restarts with a store).
    pub fn id(&self) -> Uuid {
        self.driver.core.core.id()
    }

    /// The sequence the next message gets.
    pub fn next_seq(&self) -> u64 {
        self.driver.core.core.next_seq()
    }

    /// The last sequence published (0: none).
    pub fn last_seq(&self) -> u64 {
        self.driver.core.core.last_seq()
    }

    /// The PUB socket's bound endpoint, its port resolved.
    pub fn endpoint(&self) -> String {
        self.driver.sockets.endpoint(0)
    }

    /// The replay ROUTER's bound endpoint, its port resolved.
    pub fn replay_endpoint(&self) -> String {
        self.driver.sockets.endpoint(1)
    }

    /// The counters.
    pub fn stats(&self) -> PublisherStats {
        self.driver.core.core.stats()
    }

    /// How many messages are retained for replay.
    pub fn retained(&self) -> u64 {
        self.driver.core.core.retained()
    }

    /// The last sequence acknowledged by each durable subscriber, by name.
    pub fn acked(&self) -> &std::collections::BTreeMap<Vec<u8>, u64> {
        self.driver.core.core.acked()
    }

    /// Publishes `payload` on `topic` and returns its sequence. The message is retained
    /// (and, with a `batched` or `every` store, flushed) before it is sent. Over 64 MiB
    /// (topic and payload together): [`ClientError::TooLarge`], nothing published.
    pub fn publish(&mut self, topic: &[u8], payload: Frames) -> Result<u64, Error> {
        check_size(topic, &payload)?;
        let seq = self.stage(io::now(), io::unix_ms(), topic.to_vec(), payload)?;
        self.turn()?;
        Ok(seq)
    }

    /// Publishes every `(topic, payload)` in one driver turn (one flush of a `batched`
    /// store); returns the last sequence (0 when there was nothing). A message too
    /// large refuses the whole batch before any is published. The clocks are read once
    /// for the batch: its messages carry one publication time.
    pub fn publish_all(
        &mut self,
        messages: impl IntoIterator<Item = (Vec<u8>, Frames)>,
    ) -> Result<u64, Error> {
        let messages: Vec<(Vec<u8>, Frames)> = messages.into_iter().collect();
        for (topic, payload) in &messages {
            check_size(topic, payload)?;
        }
        let (now, now_ms) = (io::now(), io::unix_ms());
        let mut last = 0;
        for (topic, payload) in messages {
            last = self.stage(now, now_ms, topic, payload)?;
        }
        self.turn()?;
        Ok(last)
    }

    /// Publishes one message whose size was checked.
    fn stage(
        &mut self,
        now: Instant,
        now_ms: u64,
        topic: Vec<u8>,
        payload: Frames,
    ) -> Result<u64, Error> {
        let c = &mut self.driver.core;
        let seq = c.core.publish(now, now_ms, topic, payload)?;
        c.dirty = true;
        Ok(seq)
    }

    /// One turn without waiting: what the replay socket holds is answered, then
    /// everything is committed and sent; events are logged.
    fn turn(&mut self) -> Result<(), Error> {
        self.driver.take_ready()?;
        self.driver.flush()?;
        while let Some(e) = self.driver.core.poll_event() {
            self.log.event(e)?;
        }
        Ok(())
    }

    /// Heartbeats and answers replays for `period` (or until `shutdown`).
    pub fn serve(&mut self, period: Duration, shutdown: &Shutdown) -> Result<(), Error> {
        self.driver.set_shutdown(shutdown);
        let until = io::now() + period;
        let log = &mut self.log;
        let r = self.driver.run(Some(until), None, |_, input| match input {
            Input::Event(e) => match log.event(e) {
                Ok(()) => Flow::Continue,
                Err(e) => Flow::Break(Err(e)),
            },
            Input::Wake => Flow::Continue,
            Input::Stop => Flow::Break(Ok(())),
        })?;
        r.unwrap_or(Ok(()))
    }

    /// Heartbeats and answers replays until `shutdown` is triggered.
    pub fn run_until_stopped(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        while !shutdown.is_triggered() {
            self.serve(Duration::from_secs(3600), shutdown)?;
        }
        self.driver.core.dirty = true;
        self.driver.core.commit();
        Ok(())
    }
}

/// Refuses a message whose topic and payload together exceed
/// [`MAX_PAYLOAD_BYTES`] (64 MiB): a subscriber's socket would drop it, and every replay
/// of it, so its sequence could never be delivered.
fn check_size(topic: &[u8], payload: &Frames) -> Result<(), ClientError> {
    let len = topic.len() + payload.iter().map(Vec::len).sum::<usize>();
    if len > MAX_PAYLOAD_BYTES {
        return Err(ClientError::TooLarge {
            len,
            max: MAX_PAYLOAD_BYTES,
        });
    }
    Ok(())
}

/// Logs the publisher's events; repeated ones (replays, garbage) at most once a second
/// with the count of those not logged.
#[derive(Debug, Default)]
struct Limiter {
    replays: Quiet,
    garbage: Quiet,
}

#[derive(Debug, Default)]
struct Quiet {
    last: Option<Instant>,
    held: u64,
}

impl Quiet {
    /// Whether to log now; if so, how many were held back since the last line.
    fn pass(&mut self) -> Option<u64> {
        let now = io::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

impl Limiter {
    fn event(&mut self, e: Event) -> Result<(), Error> {
        match e {
            Event::Replayed { from, sent } => {
                if let Some(held) = self.replays.pass() {
                    tracing::info!(from, sent, more = held, "served a replay request");
                }
            }
            Event::Trimmed { from, oldest } => {
                tracing::warn!(
                    from,
                    oldest,
                    "replay asked for messages no longer retained; answered TRIMMED"
                )
            }
            Event::Unknown { publisher } => {
                tracing::info!(%publisher, "replay asked for another publisher; answered UNKNOWN")
            }
            Event::Acked { subscriber, seq } => tracing::debug!(
                subscriber = %String::from_utf8_lossy(&subscriber),
                seq,
                "durable subscriber acknowledged"
            ),
            Event::Garbage(error) => {
                if let Some(held) = self.garbage.pass() {
                    tracing::warn!(%error, more = held, "garbage on the replay socket dropped");
                }
            }
            Event::RetentionFailed(e) => return Err(e.into()),
        }
        Ok(())
    }
}
