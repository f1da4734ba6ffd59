//! The client side of the store: every client (Lazy Pirate, Majordomo blocking and
//! pipelined, Freelance) keeps its requests in an outbox through this one hook.
//!
//! The driver records what the core reports; the core decides, the store remembers.
//! Concretely, [`Stored`] wraps a client core ([`ClientCore`]) and is itself the
//! [`Core`] the driver loop runs, so no driver writes the store by hand:
//!
//! | when | what the hook does |
//! | --- | --- |
//! | accepted ([`Stored::submit`]) | appends the request to the outbox before it is sent ([`ClientOutbox::accept`]); a full outbox refuses it with [`ClientError::OutboxFull`] |
//! | the end of a driver turn ([`Core::poll_op`] once the core has no event left for the application) | `batched`: one flush confirms every request accepted since the last commit (group commit: all those sent while a burst of replies was handed out, say), and only then are they handed to the core and sent |
//! | an attempt timed out | records the attempts made, so that a restart continues the count |
//! | answered (a reply, or a remote error answer) | acks: removes the request from the outbox |
//! | abandoned (every attempt timed out) | moves the request to the dead letters ([`DeadReason::GaveUp`], "no reply after N attempts"), then acks it |
//! | recovery ([`Stored::resume`]) | re-sends a pending request with its original id and creation time; its attempt count continues |
//!
//! # What is guaranteed
//! A request that `send`/`request` accepted with durability `every` (flushed before the
//! call returns) or `batched` (flushed before it is sent) is never lost across a crash
//! of the client: after a restart on the same store it is pending, and recovery sends
//! it again with its original id, so a receiver that suppresses duplicates by id
//! answers it once. With `none`, only what sled flushed in the background (every
//! 500 ms) survives. An ack is durable with the next flush: a crash just after a reply
//! may bring its request back, to be sent again (a duplicate, never a loss). A request
//! interrupted (Ctrl-C) stays pending. One client per store: the outbox counts its
//! requests in memory.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use uuid::Uuid;

use crate::error::{ClientError, ConfigError, Error};
use crate::io::driver::{Core, Op};
use crate::io::guard::lock;
use crate::proto::envelope::Envelope;
use crate::proto::frames::Frames;
use crate::proto::lazy_pirate::check_size;
use crate::store::{
    Appended, DeadLetter, DeadLetters, DeadReason, Durability, Outbox, OutboxRecord, Store,
    StoreError,
};

/// The default most requests an outbox holds: 10,000. Far more than any client keeps in
/// flight (the command line's `--in-flight` is typically tens), so only a peer that
/// stays unreachable while its application keeps sending reaches it; a record is its
/// payload plus about 40 bytes, so 10,000 requests of 1 KiB are about 10 MiB on disk.
pub const DEFAULT_OUTBOX_LIMIT: usize = 10_000;

/// How a client's outbox stores its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// When the outbox flushes. Default [`Durability::Batched`]: one flush per driver
    /// turn confirms every request accepted in it, and none is sent before that.
    pub durability: Durability,
    /// The most requests pending at once; `send` fails with
    /// [`ClientError::OutboxFull`] beyond it. Default [`DEFAULT_OUTBOX_LIMIT`]
    /// (10,000). At least 1.
    pub limit: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            durability: Durability::default(),
            limit: DEFAULT_OUTBOX_LIMIT,
        }
    }
}

impl OutboxConfig {
    /// Checks that the limit is at least 1 (an outbox of none could send nothing).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::Invalid {
                field: "outbox_limit",
                reason: "must be at least 1 (an outbox of 0 requests could send nothing)".into(),
            });
        }
        Ok(())
    }
}

/// A client's outbox and dead letters in one store: the writes of the hook. The
/// drivers reach it through [`Stored`]; a program may read it (what is pending, how
/// many dead letters) through a client's accessors.
pub struct ClientOutbox {
    outbox: Outbox,
    dead: DeadLetters,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for ClientOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOutbox")
            .field("outbox", &self.outbox)
            .field("path", &self.path)
            .finish()
    }
}

impl ClientOutbox {
    /// The outbox and dead letters of `store`, as `config` says. One per store.
    pub fn open(store: &Store, config: OutboxConfig) -> Result<ClientOutbox, Error> {
        config.validate()?;
        Ok(ClientOutbox {
            outbox: store.outbox(config.limit, config.durability)?,
            dead: store.dead_letters()?,
            path: store.path().map(PathBuf::from),
        })
    }

    /// Stores a request about to be sent as `envelope` to `service`. With `every` it is
    /// on disk when this returns; with `batched` it is staged until [`Self::commit`]
    /// ([`Appended::Staged`]), and must not be sent before. A full outbox refuses with
    /// [`ClientError::OutboxFull`] (the body handed back) and stores nothing.
    pub fn accept(
        &mut self,
        service: Option<&[u8]>,
        envelope: &Envelope,
    ) -> Result<Appended, Error> {
        let record = OutboxRecord::from_envelope(service.map(<[u8]>::to_vec), envelope);
        match self.outbox.append(&record) {
            Ok(appended) => Ok(appended),
            Err(StoreError::OutboxFull { limit }) => Err(ClientError::OutboxFull {
                limit,
                body: envelope.payload.concat(),
            }
            .into()),
            Err(e) => Err(ClientError::NotStored {
                reason: e.to_string(),
                body: envelope.payload.concat(),
            }
            .into()),
        }
    }

    /// One flush: every request accepted so far (and every ack) is durable once this
    /// returns `Ok`. Does nothing with `none`, or when nothing was written since.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.outbox.commit().map(drop)
    }

    /// Request `id` was answered: removes it (durable with the next flush). A store
    /// that fails here is logged: the request may come back after a restart and be sent
    /// again, a duplicate, never a loss.
    pub fn answered(&mut self, id: Uuid) {
        if let Err(e) = self.outbox.ack(id) {
            tracing::warn!(%id, error = %e, "outbox: could not remove an answered request; it may be sent again after a restart");
        }
    }

    /// Attempt `attempt` of request `id` timed out: records it as sent that many times,
    /// so that a restart continues the count.
    pub fn retried(&mut self, id: Uuid, attempt: u32) {
        if let Err(e) = self.outbox.set_attempts(id, attempt) {
            tracing::warn!(%id, error = %e, "outbox: could not record an attempt");
        }
    }

    /// Every attempt of request `id` timed out: moves it to the dead letters (reason
    /// [`DeadReason::GaveUp`], error "no reply after N attempts"). The ack is written
    /// first and the dead letter's flush makes both durable at once, so a crash leaves
    /// the request either pending or dead-lettered, never both nor neither. On a store
    /// error it stays pending (logged), to be re-sent by the next recovery.
    pub fn abandoned(&mut self, id: Uuid, attempts: u32, at_ms: u64) {
        let s = if attempts == 1 { "" } else { "s" };
        let error = format!("no reply after {attempts} attempt{s}");
        self.dead_letter(id, attempts, at_ms, DeadReason::GaveUp, error);
    }

    /// Request `id` was refused by its peer (a full queue, a deadline that passed, an
    /// unknown service: status refused), so it was not handled and will not be unless
    /// it is sent again: moves it to the dead letters (reason [`DeadReason::Refused`],
    /// with the peer's message), as [`ClientOutbox::abandoned`] does, for `bosun dlq
    /// replay`.
    pub fn refused(&mut self, id: Uuid, attempt: u32, message: &str, at_ms: u64) {
        self.dead_letter(id, attempt, at_ms, DeadReason::Refused, message.to_string());
    }

    fn dead_letter(
        &mut self,
        id: Uuid,
        attempts: u32,
        at_ms: u64,
        reason: DeadReason,
        last_error: String,
    ) {
        let record = match self.outbox.get(id) {
            Ok(Some(record)) => record,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(%id, error = %e, "outbox: could not read a request given up on; it stays pending");
                return;
            }
        };
        let letter = DeadLetter {
            id,
            service: record.service.clone(),
            payload: record.payload.clone(),
            attempts,
            last_error,
            reason,
            at_ms,
        };
        let moved = self.outbox.ack(id).and_then(|_| self.dead.put(&letter));
        match moved {
            Ok(()) => {
                tracing::info!(%id, attempts, reason = reason.as_str(), "request moved to the dead letters")
            }
            Err(e) => {
                tracing::error!(%id, error = %e, "outbox: could not dead-letter a request given up on; it stays pending");
                // Put it back, so that a later flush does not make the ack durable alone.
                if !self.contains(id).unwrap_or(true) {
                    let _ = self.outbox.append(&record);
                }
            }
        }
    }

    /// Whether request `id` is pending.
    pub fn contains(&self, id: Uuid) -> Result<bool, StoreError> {
        self.outbox.get(id).map(|r| r.is_some())
    }

    /// Every pending request, in id order (the order they were made in).
    pub fn pending(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        self.outbox.pending()
    }

    /// How many requests are pending.
    pub fn len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether no request is pending.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// How many dead letters the store holds (this client's and any other's).
    pub fn dead_letters(&self) -> usize {
        self.dead.len()
    }

    /// When the outbox flushes.
    pub fn durability(&self) -> Durability {
        self.outbox.durability()
    }

    /// The data directory, or `None` for a memory store.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }
}

/// The outbox as the drivers share it: the pipelined handle appends in the caller's
/// thread, its driver thread acks.
pub type SharedOutbox = Arc<Mutex<ClientOutbox>>;

/// Logs, at info level, what a client recovered from its outbox on start:
/// `recovered: N pending re-sent, K dead letters`.
pub fn log_recovery(outbox: &ClientOutbox, pending: usize) {
    let dir = outbox
        .path()
        .map_or_else(|| "memory".to_string(), |p| p.display().to_string());
    let dead = outbox.dead_letters();
    tracing::info!(
        data_dir = %dir,
        pending,
        dead_letters = dead,
        "recovered: {pending} pending re-sent, {dead} dead letters"
    );
}

/// What an event of a client core means for its stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The request was answered: a reply, or a failure its peer reported.
    Answered(Uuid),
    /// An attempt timed out; another follows.
    Retrying {
        /// The request id.
        id: Uuid,
        /// The attempt that timed out.
        attempt: u32,
    },
    /// The peer refused the request (status refused): it was not handled.
    Refused {
        /// The request id.
        id: Uuid,
        /// The attempt that was refused.
        attempt: u32,
        /// The peer's message.
        message: String,
    },
    /// Every attempt timed out: the client gave up.
    GaveUp {
        /// The request id.
        id: Uuid,
        /// Attempts made in all.
        attempts: u32,
    },
}

/// What an answer to request `id` (its attempt `attempt`) means for the outbox: a
/// refusal is kept as a dead letter; anything else (a reply, a handler's failure)
/// completes the request.
pub fn answered(id: Uuid, attempt: u32, answer: &crate::proto::envelope::Answer) -> Report {
    use crate::proto::envelope::{Answer, Status};
    match answer {
        Answer::Failed {
            status: Status::Refused,
            message,
        } => Report::Refused {
            id,
            attempt,
            message: message.clone(),
        },
        _ => Report::Answered(id),
    }
}

/// A client core the outbox can wrap: it starts requests and reports their fate.
pub trait ClientCore: Core {
    /// Starts `envelope` (its attempt as given, at least 1) as a request to `service`
    /// (ignored by the patterns without services); see the core's own `send`.
    fn start(
        &mut self,
        now: Instant,
        service: Option<&[u8]>,
        envelope: Envelope,
    ) -> Result<Uuid, ClientError>;

    /// What `event` means for a stored request, if anything.
    fn report(event: &Self::Event) -> Option<Report>;
}

/// What a [`Stored`] core reports: its client core's events, and requests it could not
/// send because the outbox could not make them durable.
#[derive(Debug)]
pub enum Event<E> {
    /// An event of the client core (already recorded in the outbox).
    Core(E),
    /// A `batched` commit failed: request `id` was not sent, and is no longer pending.
    Unsent {
        /// The request id.
        id: Uuid,
        /// Why: [`ClientError::NotStored`], with the body.
        error: ClientError,
    },
}

/// A request accepted but waiting for the next commit (`batched`).
#[derive(Debug)]
struct Waiting {
    now: Instant,
    service: Option<Vec<u8>>,
    envelope: Envelope,
}

/// A client core with an outbox (or without one: then every call passes through). The
/// driver runs it like the core it wraps; see the [module docs](self).
///
/// Contract: the wrapped core's. [`Core::poll_op`] commits what is staged once the core
/// has no event left for the application (that is, before the driver waits), and only
/// then hands the staged requests to the core: a request accepted with `batched` goes
/// out only after the one flush that confirms it and every request accepted in the
/// same turn (while a burst of replies was handed out, say).
#[derive(Debug)]
pub struct Stored<C: ClientCore> {
    core: C,
    /// Where requests go, for the log.
    peer: String,
    outbox: Option<SharedOutbox>,
    waiting: Vec<Waiting>,
    events: VecDeque<Event<C::Event>>,
}

impl<C: ClientCore> Stored<C> {
    /// `core`, with `outbox` (or none); `peer` names where its requests go in the log.
    pub fn new(core: C, outbox: Option<SharedOutbox>, peer: &str) -> Self {
        Stored {
            core,
            peer: peer.to_string(),
            outbox,
            waiting: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// The client core.
    pub fn core(&self) -> &C {
        &self.core
    }

    /// The client core, to call it directly (what it does is not recorded).
    pub fn core_mut(&mut self) -> &mut C {
        &mut self.core
    }

    /// Puts `core` in place of the client core (a blocking client starting over after
    /// Ctrl-C); what was outstanding stays pending in the outbox.
    pub fn replace_core(&mut self, core: C) {
        self.core = core;
        self.waiting.clear();
    }

    /// The outbox, if any.
    pub fn outbox(&self) -> Option<&SharedOutbox> {
        self.outbox.as_ref()
    }

    /// Locks the outbox, if any.
    pub fn lock_outbox(&self) -> Option<MutexGuard<'_, ClientOutbox>> {
        self.outbox.as_deref().map(lock)
    }

    /// Starts a new request: checks its size, stores it (see [`ClientOutbox::accept`]),
    /// then hands it to the core now (`every`, `none`, no outbox) or after the next
    /// commit (`batched`). Fails with [`ClientError::TooLarge`],
    /// [`ClientError::OutboxFull`] or the core's own errors, having sent nothing.
    pub fn submit(
        &mut self,
        now: Instant,
        service: Option<&[u8]>,
        envelope: Envelope,
    ) -> Result<Uuid, Error> {
        check_size(&envelope)?;
        let appended = match self.lock_outbox() {
            Some(mut outbox) => outbox.accept(service, &envelope)?,
            None => Appended::Ready,
        };
        self.submit_accepted(now, service, envelope, appended)
    }

    /// Starts a request that [`ClientOutbox::accept`] already stored (in the caller's
    /// thread, as the pipelined handle does), as it answered.
    pub fn submit_accepted(
        &mut self,
        now: Instant,
        service: Option<&[u8]>,
        envelope: Envelope,
        appended: Appended,
    ) -> Result<Uuid, Error> {
        let id = envelope.meta.id;
        match appended {
            Appended::Ready => self.start(now, service, envelope, true),
            Appended::Staged => {
                self.waiting.push(Waiting {
                    now,
                    service: service.map(<[u8]>::to_vec),
                    envelope,
                });
                Ok(id)
            }
        }
    }

    /// Re-sends a stored request with its original id and creation time, its attempt
    /// continuing from the record's count. A record that is not in this client's outbox
    /// (a dead letter replayed) is stored first, as a new request is.
    pub fn resume(&mut self, now: Instant, record: &OutboxRecord) -> Result<Uuid, Error> {
        let envelope = record.envelope();
        let service = record.service.as_deref();
        let stored = match self.lock_outbox() {
            Some(outbox) => outbox.contains(record.id)?,
            None => true,
        };
        if stored {
            self.start(now, service, envelope, false)
        } else {
            self.submit(now, service, envelope)
        }
    }

    /// Every pending request, in id order (empty without an outbox).
    pub fn pending(&self) -> Result<Vec<OutboxRecord>, StoreError> {
        match self.lock_outbox() {
            Some(outbox) => outbox.pending(),
            None => Ok(Vec::new()),
        }
    }

    /// Hands a stored request to the core. When the core refuses a request just
    /// accepted (`new`), it is taken out of the outbox again: it was never sent, so
    /// nothing will answer it. A recovered one stays pending whatever happens.
    fn start(
        &mut self,
        now: Instant,
        service: Option<&[u8]>,
        envelope: Envelope,
        new: bool,
    ) -> Result<Uuid, Error> {
        let id = envelope.meta.id;
        let attempt = envelope.meta.attempt;
        match self.core.start(now, service, envelope) {
            Ok(id) => {
                match service {
                    Some(s) => {
                        tracing::debug!(%id, attempt, peer = %self.peer, service = %String::from_utf8_lossy(s), "request sent")
                    }
                    None => tracing::debug!(%id, attempt, peer = %self.peer, "request sent"),
                }
                Ok(id)
            }
            Err(e) => {
                if new {
                    if let Some(mut outbox) = self.lock_outbox() {
                        outbox.answered(id);
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Makes what is staged durable with one flush and hands it to the core; on a
    /// failed flush, reports each as [`Event::Unsent`] instead.
    fn commit_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let committed = match self.lock_outbox() {
            Some(mut outbox) => outbox.commit(),
            None => Ok(()),
        };
        let waiting = std::mem::take(&mut self.waiting);
        match committed {
            Ok(()) => {
                for w in waiting {
                    let id = w.envelope.meta.id;
                    if let Err(e) = self.start(w.now, w.service.as_deref(), w.envelope, true) {
                        let error = match e {
                            Error::Client(c) => c,
                            other => ClientError::NotStored {
                                reason: other.to_string(),
                                body: Vec::new(),
                            },
                        };
                        self.events.push_back(Event::Unsent { id, error });
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = waiting.len(), "outbox: commit failed; the requests are not sent");
                let reason = e.to_string();
                for w in waiting {
                    let id = w.envelope.meta.id;
                    if let Some(mut outbox) = self.lock_outbox() {
                        outbox.answered(id);
                    }
                    self.events.push_back(Event::Unsent {
                        id,
                        error: ClientError::NotStored {
                            reason: reason.clone(),
                            body: w.envelope.payload.concat(),
                        },
                    });
                }
            }
        }
    }

    /// How many requests wait for the next commit.
    pub fn staged(&self) -> usize {
        self.waiting.len()
    }

    /// Commits what is staged now and hands it to the core, whatever events are
    /// pending (the driver otherwise waits until the application has taken them).
    pub fn commit_now(&mut self) {
        self.commit_waiting();
    }

    /// The core's next event, recorded in the outbox.
    fn next_core_event(&mut self) -> Option<Event<C::Event>> {
        let event = self.core.poll_event()?;
        if let (Some(report), Some(mut outbox)) = (C::report(&event), self.lock_outbox()) {
            match report {
                Report::Answered(id) => outbox.answered(id),
                Report::Refused {
                    id,
                    attempt,
                    message,
                } => outbox.refused(id, attempt, &message, unix_ms()),
                Report::Retrying { id, attempt } => outbox.retried(id, attempt),
                Report::GaveUp { id, attempts } => outbox.abandoned(id, attempts, unix_ms()),
            }
        }
        Some(Event::Core(event))
    }
}

/// The wall clock in ms since the Unix epoch, for dead letters' times (the cores take
/// time as an input; the hook is where it is read).
fn unix_ms() -> u64 {
    crate::io::unix_ms()
}

impl<C: ClientCore> Core for Stored<C> {
    type Event = Event<C::Event>;

    fn handle_input(&mut self, now: Instant, socket: usize, frames: Frames) {
        self.core.handle_input(now, socket, frames)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now)
    }

    fn poll_op(&mut self) -> Option<Op> {
        if !self.waiting.is_empty() {
            // Group commit: while the core still has events for the application (a
            // burst of replies being handed out one by one), more requests may be
            // accepted in this same turn; commit once it has none, that is before the
            // driver waits. An event fetched to find out is kept, in order.
            if self.events.is_empty() {
                if let Some(e) = self.next_core_event() {
                    self.events.push_back(e);
                }
            }
            if self.events.is_empty() {
                self.commit_waiting();
            }
        }
        self.core.poll_op()
    }

    fn poll_event(&mut self) -> Option<Self::Event> {
        self.events.pop_front().or_else(|| self.next_core_event())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
}

/// What a blocking client's `recover` returns: each re-sent request's id and outcome,
/// in the order the requests were made.
pub type Resent = Vec<(Uuid, Result<Frames, Error>)>;

/// Re-sends `records` one at a time with `resend` (a blocking client's), in order;
/// stops after the first that gets no reply at all or is interrupted (the peer is gone,
/// or the program is stopping: the rest stay pending). The outcome of each sent.
pub(crate) fn recover_each(
    records: Vec<OutboxRecord>,
    mut resend: impl FnMut(&OutboxRecord) -> Result<Frames, Error>,
) -> Resent {
    let mut out = Vec::with_capacity(records.len());
    for record in &records {
        let result = resend(record);
        let stop = matches!(
            result,
            Err(Error::Client(
                ClientError::GaveUp { .. } | ClientError::Interrupted
            ))
        );
        out.push((record.id, result));
        if stop {
            break;
        }
    }
    out
}
