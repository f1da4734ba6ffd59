//! The reliable subscriber's driver: a SUB socket (slot 0) connected to every publisher
//! and a DEALER per replay endpoint (slots 1..), around
//! [`crate::proto::subscriber::Subscriber`], in the one driver loop.
//!
//! [`Subscriber::recv`] blocks until the next message in order (or shutdown);
//! [`Subscriber::recv_timeout`] waits at most a while. Events other than deliveries are
//! logged: a loss the publisher can no longer repair (`TRIMMED`) at WARN, a dead
//! publisher at WARN, garbage at WARN at most once a second.
//!
//! # Durable cursors
//! With a store ([`SubscriberBuilder::store`]) the subscriber resumes, per publisher,
//! after the last sequence it recorded (the `cursors` tree, keyed by the publisher id).
//! A message counts as processed once the application asks for the next one, or calls
//! [`Subscriber::commit`]: the cursors of the messages handed out so far are written
//! and flushed, then acknowledged to their publishers. `recv` commits by itself at
//! most every heartbeat interval or every 1000 messages, and dropping the subscriber
//! commits (with automatic commits on). So after a crash the messages handed out since the last commit are
//! delivered again (at least once).
//!
//! A program that acts on batches can say exactly which messages are in doubt after a
//! crash: it turns automatic commits off ([`SubscriberBuilder::auto_commit`]), calls
//! [`Subscriber::hold`] before it acts on what it received (the highest sequence
//! handed out per publisher is flushed to the store, under the key `ID#handing` of the
//! `cursors` tree) and [`Subscriber::commit`] after. After a crash between the two, the
//! held messages are delivered again with [`Message::redelivered`] set; no message is
//! skipped, and none comes twice without that flag. `bosun sub` works this way into a
//! pipe. (Acting on a message and recording that it was acted on cannot be one step
//! when the action is a write to a pipe, so exactly once is not possible there; the flag
//! says where a reader must look.)
//!
//! # Exactly once
//! Where the action and the record can be one step, each message is acted on once: a
//! program that keeps, in the same transaction as what it does with a message, the
//! last sequence it processed per publisher, starts the subscriber with those
//! positions ([`SubscriberBuilder::resume`], and [`SubscriberBuilder::since`] with the
//! time it first subscribed) instead of a store, and tells the publishers how far it
//! got with [`Subscriber::acknowledge`]. Into a file, [`crate::io::sink::FileSink`]
//! does this (`bosun sub --output FILE --data-dir DIR`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::{Backoff, Heartbeat};
use crate::error::{ClientError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::frames::Frames;
use crate::proto::subscriber::{self as core, Event, Transmit};
pub use crate::proto::subscriber::{Message, OnSlow, SubscriberConfig, SubscriberStats};
use crate::store::Store;

/// Messages handed out between two automatic commits of the cursors, at most.
pub const COMMIT_EVERY: u64 = 1000;

impl Core for core::Subscriber {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, socket: usize, frames: Frames) {
        core::Subscriber::handle_input(self, now, socket, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        core::Subscriber::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            Transmit::Send(i, f) => Op::Send(i, f),
            Transmit::Reset(i) => Op::Reset(i),
            Transmit::Connect(endpoint) => Op::Add {
                kind: zmq::DEALER,
                endpoints: vec![endpoint],
            },
        })
    }
    fn poll_event(&mut self) -> Option<Event> {
        core::Subscriber::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        core::Subscriber::poll_timeout(self)
    }
}

/// Settings of a [`Subscriber`], from [`Subscriber::builder`];
/// [`SubscriberBuilder::connect`] makes it.
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    connect: Vec<String>,
    replay: Vec<String>,
    transport: Option<Transport>,
    config: SubscriberConfig,
    store: Option<Store>,
    name: Option<Vec<u8>>,
    shutdown: Shutdown,
    auto_commit: bool,
    since_start: bool,
    resume: Option<Vec<(Uuid, u64)>>,
}

/// The key of the `cursors` tree under which a durable subscriber keeps its join
/// boundary (Unix ms, set at its first start): after a restart it still gets what each
/// new publisher published since then, not only since the restart.
const SINCE_KEY: &[u8] = b"#since";

/// The suffix of a publisher id's key under which [`Subscriber::hold`] records what
/// was handed out.
const HANDING: &[u8] = b"#handing";

fn split(endpoints: &str) -> impl Iterator<Item = String> + '_ {
    endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
}

impl SubscriberBuilder {
    /// Uses `ctx` instead of a context of its own (the default).
    pub fn context(self, ctx: &zmq::Context) -> Self {
        self.transport(&Transport::with_context(ctx))
    }

    /// Makes its sockets with `transport`. Default: a transport of its own.
    pub fn transport(mut self, transport: &Transport) -> Self {
        self.transport = Some(transport.clone());
        self
    }

    /// Also subscribes to the publisher(s) at `endpoints` (comma-separated).
    pub fn also(mut self, endpoints: &str) -> Self {
        self.connect.extend(split(endpoints));
        self
    }

    /// A replay endpoint (or several, comma-separated) to repair gaps from. Default:
    /// none, learned from the publishers' heartbeats (when they announce a connectable
    /// one). With several publishers, which endpoint is whose is found by asking.
    pub fn replay(mut self, endpoints: &str) -> Self {
        self.replay.extend(split(endpoints));
        self
    }

    /// Delivers topics starting with `prefix` (may be given several times). Default:
    /// every topic.
    pub fn topic(mut self, prefix: &[u8]) -> Self {
        self.config.topics.push(prefix.to_vec());
        self
    }

    /// On first contact with a publisher (no cursor), asks for its retained history.
    /// Default false: starts with the first live message.
    pub fn from_start(mut self, yes: bool) -> Self {
        self.config.from_start = yes;
        self
    }

    /// On first contact with a publisher (no cursor, no `from_start`), delivers
    /// everything it published since this subscriber was made, fetched by replay before
    /// the live stream ([`SubscriberConfig::since_ms`]): a subscriber started before
    /// its publisher, or one that follows a publisher restarted with a new id, misses
    /// nothing that the slow join of a SUB socket dropped. Default true; false starts
    /// with the first live message.
    pub fn since_start(mut self, yes: bool) -> Self {
        self.since_start = yes;
        self
    }

    /// The publishers' heartbeat interval and liveness. Default 1 s × 3.
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// How long a replay request may go unanswered before it is asked again.
    /// Default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// How far behind a publisher the subscriber may fall (default 100,000), and what
    /// it does beyond that (default [`OnSlow::Replay`]).
    pub fn max_behind(mut self, n: u64, on_slow: OnSlow) -> Self {
        self.config.max_behind = n;
        self.config.on_slow = on_slow;
        self
    }

    /// Pause before re-making the sockets of a dead publisher (doubling). Default
    /// 1 s to 32 s.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.config.reconnect = backoff;
        self
    }

    /// Every core setting at once (see [`SubscriberConfig`]).
    pub fn config(mut self, config: SubscriberConfig) -> Self {
        self.config = config;
        self
    }

    /// Resumes after the given last sequence per publisher, as a durable subscriber
    /// resumes after its stored cursors: for a program that keeps its positions itself,
    /// in the same transaction as what it does with each message, which makes the
    /// pair exactly once (see the module docs). Not with [`SubscriberBuilder::store`].
    pub fn resume(mut self, positions: &[(Uuid, u64)]) -> Self {
        self.resume = Some(positions.to_vec());
        self
    }

    /// The join boundary, Unix ms (see [`SubscriberBuilder::since_start`]): for a
    /// program that keeps its positions itself, the time it first subscribed. Default:
    /// the time of the first start (kept in the store of a durable subscriber), or of
    /// `connect`.
    pub fn since(mut self, unix_ms: u64) -> Self {
        self.config.since_ms = Some(unix_ms);
        self.since_start = true;
        self
    }

    /// Keeps durable cursors in `store` (see the module docs). Default: none; a
    /// restart starts afresh.
    pub fn store(mut self, store: &Store) -> Self {
        self.store = Some(store.clone());
        self
    }

    /// The name a durable subscriber acknowledges with. Default: the store's data dir.
    pub fn name(mut self, name: &[u8]) -> Self {
        self.name = Some(name.to_vec());
        self
    }

    /// Whether `recv` commits by itself (every 1000 messages or heartbeat interval).
    /// Default true (and dropping the subscriber commits). Off, only
    /// [`Subscriber::commit`] commits, dropping does not: for a program that acts on
    /// batches and calls [`Subscriber::hold`] first, so that a batch it could not
    /// finish (its output closed, an error) comes again, marked redelivered.
    pub fn auto_commit(mut self, yes: bool) -> Self {
        self.auto_commit = yes;
        self
    }

    /// `recv` returns [`ClientError::Interrupted`] once `shutdown` is triggered.
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = shutdown.clone();
        self
    }

    /// Whether a store was given.
    pub(crate) fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Checks the settings, loads the cursors, connects every socket.
    pub fn connect(self) -> Result<Subscriber, Error> {
        let now = io::now();
        let mut cursors = self.resume.clone().unwrap_or_default();
        let mut held = BTreeMap::new();
        let mut config = self.config.clone();
        if self.resume.is_some() && self.store.is_some() {
            return Err(crate::error::ConfigError::Invalid {
                field: "resume",
                reason: "a subscriber resumes from the cursors of its store or from \
                         positions the application kept, not both"
                    .into(),
            }
            .into());
        }
        if let Some(store) = &self.store {
            store.claim_for_subscriber()?;
            if self.since_start && config.since_ms.is_none() {
                let since = match store.cursor(SINCE_KEY)? {
                    Some(ms) => ms,
                    None => {
                        let ms = io::unix_ms();
                        store.set_cursor(SINCE_KEY, ms)?;
                        store.flush()?;
                        ms
                    }
                };
                config.since_ms = Some(since);
            }
            for (key, seq) in store.cursors()? {
                if let Ok(id) = Uuid::from_slice(&key) {
                    cursors.push((id, seq));
                } else if let Some(id) = key
                    .strip_suffix(HANDING)
                    .and_then(|k| Uuid::from_slice(k).ok())
                {
                    held.insert(id, seq);
                }
            }
        }
        // Held past the cursor: handed out, perhaps acted on, never committed.
        held.retain(|id, seq| cursors.iter().all(|(c, at)| c != id || *at < *seq));
        for (id, seq) in &held {
            let from = match cursors.iter().find(|(c, _)| c == id) {
                Some((_, at)) => at + 1,
                None => {
                    // Handed out before any commit: its position is the start.
                    cursors.push((*id, 0));
                    1
                }
            };
            tracing::warn!(
                publisher = %id,
                from,
                to = seq,
                "messages {from}..={seq} were being acted on when this subscriber stopped: \
                 they are delivered again, marked redelivered"
            );
        }
        #[allow(clippy::disallowed_methods)] // a seed for the reconnect jitter
        let seed = Uuid::now_v7().as_u128() as u64;
        if self.since_start && config.since_ms.is_none() {
            config.since_ms = Some(io::unix_ms());
        }
        let core = core::Subscriber::new(config, &self.replay, cursors, now, seed)?;
        if self.connect.is_empty() {
            return Err(crate::error::ConfigError::Invalid {
                field: "connect",
                reason: "a subscriber needs at least one publisher endpoint".into(),
            }
            .into());
        }
        let transport = self.transport.unwrap_or_default();
        let mut sockets = Sockets::connecting(&transport, zmq::SUB, &self.connect, true)?;
        for e in &self.replay {
            sockets.add_connecting(zmq::DEALER, std::slice::from_ref(e), true)?;
        }
        let name = self.name.unwrap_or_else(|| match &self.store {
            Some(s) => s
                .path()
                .map_or(b"memory".to_vec(), |p| p.display().to_string().into_bytes()),
            None => Vec::new(),
        });
        let interval = self.config.heartbeat.interval;
        Ok(Subscriber {
            driver: Driver::new(core, sockets, &self.shutdown),
            store: self.store,
            name,
            handed: BTreeMap::new(),
            committed: BTreeMap::new(),
            held,
            auto_commit: self.auto_commit,
            since_commit: 0,
            commit_every: interval,
            committed_at: now,
            garbage_logged: None,
        })
    }
}

/// A reliable subscriber. See the module docs.
///
/// ```no_run
/// use bosun::io::subscriber::Subscriber;
/// let mut subscriber = Subscriber::builder("tcp://127.0.0.1:5556")
///     .replay("tcp://127.0.0.1:5557")
///     .topic(b"prices")
///     .from_start(true)
///     .connect()?;
/// let msg = subscriber.recv()?;
/// println!("{} #{}: {:?}", msg.publisher, msg.seq, msg.payload);
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct Subscriber {
    driver: Driver<core::Subscriber>,
    store: Option<Store>,
    name: Vec<u8>,
    /// The last sequence handed out, per publisher.
    handed: BTreeMap<Uuid, u64>,
    /// The last sequence committed, per publisher.
    committed: BTreeMap<Uuid, u64>,
    /// Up to which sequence, per publisher, messages are delivered marked redelivered:
    /// held (see [`Subscriber::hold`]) when the last run stopped.
    held: BTreeMap<Uuid, u64>,
    auto_commit: bool,
    since_commit: u64,
    commit_every: Duration,
    committed_at: Instant,
    garbage_logged: Option<Instant>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("core", &self.driver.core)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// The settings of a subscriber to the publisher(s) at `endpoints`
    /// (comma-separated); [`SubscriberBuilder::connect`] makes it.
    pub fn builder(endpoints: &str) -> SubscriberBuilder {
        SubscriberBuilder {
            connect: split(endpoints).collect(),
            replay: Vec::new(),
            transport: None,
            config: SubscriberConfig::default(),
            store: None,
            name: None,
            shutdown: Shutdown::new(),
            auto_commit: true,
            since_start: true,
            resume: None,
        }
    }

    /// A subscriber to `endpoints` repairing gaps from `replay`, every other setting at
    /// its default (all topics, live from now, no store).
    pub fn connect(endpoints: &str, replay: &str) -> Result<Self, Error> {
        Self::builder(endpoints).replay(replay).connect()
    }

    /// The counters.
    pub fn stats(&self) -> SubscriberStats {
        self.driver.core.stats()
    }

    /// The publishers known, each with the next sequence expected from it.
    pub fn positions(&self) -> Vec<(Uuid, u64)> {
        self.driver.core.positions().collect()
    }

    /// The next message in order; blocks until one arrives. Fails with
    /// [`ClientError::Interrupted`] on shutdown, [`ClientError::FellBehind`] when it
    /// fell behind with [`OnSlow::Fail`], or a store error when a commit fails.
    pub fn recv(&mut self) -> Result<Message, Error> {
        loop {
            if let Some(m) = self.recv_until(None)? {
                return Ok(m);
            }
        }
    }

    /// The next message in order, waiting at most `timeout` (`None`: none came).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>, Error> {
        self.recv_until(Some(io::now() + timeout))
    }

    /// The next message in order if one is already here (read from the sockets
    /// without waiting), else `None`.
    pub fn try_recv(&mut self) -> Result<Option<Message>, Error> {
        if let Some(m) = self.recv_until(Some(io::now()))? {
            return Ok(Some(m));
        }
        self.driver.take_ready()?;
        self.recv_until(Some(io::now()))
    }

    fn recv_until(&mut self, until: Option<Instant>) -> Result<Option<Message>, Error> {
        if self.auto_commit
            && (self.since_commit >= COMMIT_EVERY
                || (self.since_commit > 0
                    && io::now().duration_since(self.committed_at) >= self.commit_every))
        {
            self.commit()?;
        }
        let garbage_logged = &mut self.garbage_logged;
        let got = self.driver.run(until, None, |_, input| match input {
            Input::Event(Event::Delivered(m)) => Flow::Break(Ok(m)),
            Input::Event(Event::TooSlow {
                publisher,
                behind,
                max_behind,
            }) => Flow::Break(Err(Error::from(ClientError::FellBehind {
                publisher,
                behind,
                max_behind,
            }))),
            Input::Event(other) => {
                log_event(other, garbage_logged);
                Flow::Continue
            }
            Input::Wake => Flow::Continue,
            Input::Stop => Flow::Break(Err(ClientError::Interrupted.into())),
        })?;
        match got {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(mut m)) => {
                if let Some(&to) = self.held.get(&m.publisher) {
                    m.redelivered = m.seq <= to;
                    if m.seq >= to {
                        self.held.remove(&m.publisher);
                    }
                }
                self.handed.insert(m.publisher, m.seq);
                self.since_commit += 1;
                Ok(Some(m))
            }
        }
    }

    /// Records, durably, that the messages handed out since the last commit are about
    /// to be acted on: if this process stops before the next [`Subscriber::commit`],
    /// the next run delivers them again with [`Message::redelivered`] set. Without a
    /// store, does nothing. One flush.
    pub fn hold(&mut self) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut any = false;
        for (p, s) in &self.handed {
            if self.committed.get(p) != Some(s) {
                store.set_cursor(&[p.as_bytes().as_slice(), HANDING].concat(), *s)?;
                any = true;
            }
        }
        if any {
            store.flush()?;
        }
        Ok(())
    }

    /// Records the messages handed out so far as processed: with a store, writes and
    /// flushes their cursors, then acknowledges them to their publishers.
    pub fn commit(&mut self) -> Result<(), Error> {
        self.since_commit = 0;
        self.committed_at = io::now();
        let all: Vec<(Uuid, u64)> = self.handed.iter().map(|(p, s)| (*p, *s)).collect();
        self.commit_through(&all)
    }

    /// Records as processed, per publisher, the messages up to the sequence given (at
    /// most what was handed out; later ones stay in doubt): for a program that knows
    /// exactly how far it got.
    pub fn commit_through(&mut self, positions: &[(Uuid, u64)]) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let changed: Vec<(Uuid, u64)> = positions
            .iter()
            .filter_map(|(p, s)| {
                let s = (*s).min(*self.handed.get(p)?);
                (self.committed.get(p).map_or(true, |c| *c < s)).then_some((*p, s))
            })
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        for (p, s) in &changed {
            store.set_cursor(p.as_bytes(), *s)?;
        }
        store.flush()?;
        for (p, s) in changed {
            self.committed.insert(p, s);
            self.driver.core.ack(p, s, &self.name);
        }
        self.driver.flush()?;
        Ok(())
    }
}

impl Subscriber {
    /// Tells the publishers that the messages up to these sequences were processed, as
    /// a commit does, without writing a store: for a program that keeps its positions
    /// itself ([`SubscriberBuilder::resume`]).
    pub fn acknowledge(&mut self, positions: &[(Uuid, u64)]) -> Result<(), Error> {
        for (p, s) in positions {
            self.driver.core.ack(*p, *s, &self.name);
        }
        self.driver.flush()
    }
}

impl Drop for Subscriber {
    /// With automatic commits, dropping commits what was handed out. Without them,
    /// nothing: what was not committed is delivered again by the next run (marked
    /// redelivered when it was held), since the application never said it was done.
    fn drop(&mut self) {
        if !self.auto_commit {
            return;
        }
        if let Err(e) = self.commit() {
            tracing::warn!(error = %e, "subscriber: the last cursors were not committed");
        }
    }
}

/// Logs one event that is not a delivery.
fn log_event(e: Event, garbage_logged: &mut Option<Instant>) {
    match e {
        Event::Delivered(_) | Event::TooSlow { .. } => {}
        Event::Joined {
            publisher,
            since_ms: Some(_),
            ..
        } => tracing::info!(
            %publisher,
            "following a publisher, from the first message it published since this \
             subscriber started"
        ),
        Event::Joined {
            publisher, from, ..
        } => tracing::info!(%publisher, from, "following a publisher"),
        Event::JoinedLive { publisher, from } => tracing::warn!(
            %publisher,
            from,
            "no replay endpoint answered in time, or none can be asked: starting with the \
             live stream at {from}; what the publisher sent since this subscriber started and before \
             that was not fetched (give --replay, or check that the publisher's replay \
             endpoint is reachable)"
        ),
        Event::Lost {
            publisher,
            from,
            to,
        } => tracing::warn!(
            %publisher,
            from,
            to,
            "lost messages {from}..={to} of publisher {publisher}: no longer retained there"
        ),
        Event::TrimmedSinceStart { publisher, oldest } => tracing::warn!(
            %publisher,
            oldest,
            "publisher {publisher} no longer retains all it published since this \
             subscriber started: some messages before sequence {oldest} are lost; \
             starting at {oldest} (its retention, --retain-count and --retain-age, is \
             shorter than this subscriber was away)"
        ),
        Event::NoReplay {
            publisher,
            endpoint,
        } => tracing::warn!(
            %publisher,
            %endpoint,
            "publisher {publisher} announces its replay endpoint as {endpoint}, which \
             cannot be connected to, and no --replay was given: what it sent before this \
             subscriber joined or what was dropped on the way cannot be fetched, and is \
             skipped (a loss is reported as such); give --replay tcp://HOST:PORT"
        ),
        Event::PublisherDead { publisher } => {
            tracing::warn!(%publisher, "publisher silent past its liveness; reconnecting")
        }
        Event::PublisherBack { publisher } => tracing::info!(%publisher, "publisher back"),
        Event::Behind { publisher, behind } => tracing::warn!(
            %publisher,
            behind,
            "fell behind a publisher; catching up by replay"
        ),
        Event::ReplayTimedOut {
            publisher,
            endpoint,
        } => tracing::info!(%publisher, %endpoint, "replay request timed out; asking again"),
        Event::Unknown {
            publisher,
            endpoint,
        } => tracing::debug!(%publisher, %endpoint, "replay endpoint serves another publisher"),
        Event::Learned {
            publisher,
            endpoint,
        } => tracing::info!(%publisher, %endpoint, "replay endpoint learned from a heartbeat"),
        Event::NothingHeard { silent, dropped: 0 } => tracing::warn!(
            "nothing heard from any publisher in {silent:?} (no message, no heartbeat): is a \
             bosun publisher bound at the --connect endpoint, with the same \
             --heartbeat-interval? (still listening)"
        ),
        Event::NothingHeard { silent, dropped } => tracing::warn!(
            "no bosun publisher heard in {silent:?}, but {dropped} message(s) that are not \
             a bosun publisher's were dropped: the --connect endpoint is another kind of \
             peer (a plain ZeroMQ publisher, a broker?) (still listening)"
        ),
        Event::SlowHeartbeats {
            publisher,
            every,
            expected,
        } => tracing::warn!(
            %publisher,
            "publisher {publisher} heartbeats about every {every:?}, but this subscriber \
             expects one every {expected:?} (--heartbeat-interval): it is found dead between \
             heartbeats; give the subscriber the publisher's interval"
        ),
        Event::Garbage { socket, error } => {
            let now = io::now();
            if !garbage_logged.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                *garbage_logged = Some(now);
                tracing::warn!(socket, %error, "garbage dropped");
            }
        }
    }
}
