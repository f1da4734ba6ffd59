//! The receiving side of the durability layer, as the drivers of workers and servers
//! use it: [`ReceiverOptions`] say what a receiver's gate does (see
//! [`crate::proto::gate`]) and where it keeps what must survive a crash; the drivers
//! open that store when they start (loading the duplicate window and logging what they
//! recovered), and write what the core decided through one hook, before they send what
//! the core queued with it.
//!
//! # What is written, and when it is durable
//! With a store, every request with bosun metadata leaves an entry in the dedup log:
//! "finished" with its reply when it is answered (and, with `every`, "running" when its
//! handler starts); an id is forgotten when it leaves the window. A request given up on after
//! `max_attempts` goes to the dead letters. [`Durability`] says when these are flushed:
//!
//! | durability | "running" | "finished" | a crash loses |
//! | --- | --- | --- | --- |
//! | `every` | written and flushed before the handler runs | flushed before the reply is sent | nothing |
//! | `batched` (default) | not written | flushed before the reply is sent: one flush for all the replies ready at once (a pool's, or one at a time) | nothing that was answered; interrupted handlers go unreported |
//! | `none` | not written | not flushed (sled flushes every 500 ms) | the last half second: those ids' retries run again |
//!
//! Dead letters are flushed before the error that names them is sent, whatever the
//! durability.
//!
//! # Recovery
//! On start a receiver with a store loads the window ([`DedupLog::load`]: finished ids
//! within the limits, with their replies) and logs at INFO
//! `recovered: M ids in the dedup window, K interrupted handlers, D dead letters`.
//! Interrupted handlers (ids found running: the process died while their handler ran;
//! only `every` records them) are abandoned: forgotten, so that a copy of the request
//! **may run again** (the handler may or may not have done its work before the crash;
//! bosun cannot know). Whatever the durability, a handler that was running when the
//! process died may run again.

use crate::error::{ConfigError, Error};
use crate::proto::dedup::{Limits, Window};
use crate::proto::gate::{Note, Policy, Record};
use crate::proto::{paranoid_pirate, server, worker};
use crate::store::{DeadLetter, DeadLetters, DeadReason, DedupLog, Durability, Store, StoreError};

/// What a worker's or server's gate does, and where it keeps it. The default does
/// nothing (a receiver behaves as it did without the durability layer): no duplicate
/// window, a failure answered once, nothing kept.
///
/// A Majordomo worker that hands each id to its handler once, across restarts, and
/// dead-letters what fails three times (as `bosun worker --data-dir DIR`):
///
/// ```no_run
/// use bosun::io::receiver::ReceiverOptions;
/// use bosun::store::Store;
///
/// let options = ReceiverOptions {
///     store: Some(Store::open(std::path::Path::new("/var/lib/bosun/worker-1"))?),
///     max_attempts: Some(3),
///     ..ReceiverOptions::default()
/// };
/// let shutdown = bosun::Shutdown::new();
/// bosun::Worker::builder("tcp://127.0.0.1:5555", "echo")
///     .receiver(options)
///     .connect()?
///     .run(bosun::io::handler::echo(), &shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// The duplicate window's bounds. `None` (the default) with no store: no duplicate
    /// suppression; with a store, [`Limits::default`].
    pub dedup: Option<Limits>,
    /// Where the window and the dead letters are kept, so that they survive a restart.
    /// `None` (the default): the window lives in memory only, and no dead letter is
    /// kept. One receiver per store ([`Store::open`] refuses a directory in use).
    pub store: Option<Store>,
    /// When the store is flushed (see the module docs). Default
    /// [`Durability::Batched`].
    pub durability: Durability,
    /// The attempt on which a failing handler is given up on (and dead-lettered, with a
    /// store); earlier failures run it again at once. At least 1. `None` (the default):
    /// a failure is answered as it is, once. See [`crate::proto::gate`].
    pub max_attempts: Option<u32>,
    /// Test only: SIGKILL the process right after the first reply was recorded as
    /// finished (and flushed, unless the durability is `none`), before it is sent: a
    /// crash between handler and reply, for the kill tests. The command line sets it
    /// from the environment variable `BOSUN_TEST_CRASH_AFTER_HANDLER=1`.
    #[doc(hidden)]
    pub crash_after_handler: bool,
}

impl ReceiverOptions {
    /// Checks the limits and `max_attempts`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(limits) = &self.dedup {
            limits.validate()?;
        }
        Policy {
            max_attempts: self.max_attempts,
            ..Policy::default()
        }
        .validate()
    }

    /// The window's bounds, if there is a window.
    fn limits(&self) -> Option<Limits> {
        self.dedup
            .or_else(|| self.store.as_ref().map(|_| Limits::default()))
    }
}

/// A core whose gate queues records for the store.
pub(crate) trait Recorded {
    /// The next record.
    fn next_record(&mut self) -> Option<Record>;
}

impl Recorded for worker::MdWorker {
    fn next_record(&mut self) -> Option<Record> {
        self.poll_record()
    }
}

impl Recorded for paranoid_pirate::Worker {
    fn next_record(&mut self) -> Option<Record> {
        self.poll_record()
    }
}

impl Recorded for server::Server {
    fn next_record(&mut self) -> Option<Record> {
        self.poll_record()
    }
}

/// Writes a receiver core's [`Record`]s to its store: the one hook through which a
/// driver records what the core decided. Made by [`open`]; without a store it writes
/// nothing. Simulations drive it with [`Store::memory`] like a driver does.
#[derive(Debug)]
pub struct Recorder {
    log: Option<DedupLog>,
    dead: Option<DeadLetters>,
    durability: Durability,
    /// Finished entries written since the last commit.
    finished: bool,
    crash_after_handler: bool,
}

impl Recorder {
    /// Writes `record`: "running" entries only with `every` (see the module docs);
    /// with `every` entries are flushed as they are written; dead letters always are.
    pub fn write(&mut self, record: Record) -> Result<(), StoreError> {
        match record {
            Record::Began { id, at_ms } => {
                // Only `every` makes a start durable before the handler runs, and only a
                // durable start tells an interrupted handler from one never started; with
                // `batched` or `none` the write would cost a sled insert per request for
                // a report that a crash may lose anyway.
                if let (Some(log), Durability::Every) = (&self.log, self.durability) {
                    log.begin(id, at_ms)?;
                }
            }
            Record::Finished { id, reply, at_ms } => {
                if let Some(log) = &self.log {
                    log.finish(id, reply.as_deref(), at_ms)?;
                }
                self.finished = true;
            }
            Record::Forgotten { ids } => {
                if let Some(log) = &self.log {
                    log.forget(&ids)?;
                }
            }
            Record::DeadLettered {
                id,
                service,
                payload,
                attempts,
                last_error,
                at_ms,
            } => {
                if let Some(dead) = &self.dead {
                    dead.put(&DeadLetter {
                        id,
                        service,
                        payload,
                        attempts,
                        last_error,
                        reason: DeadReason::HandlerFailed,
                        at_ms,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Makes the finished entries written since the last commit durable (`batched`
    /// flushes here; `every` did as it wrote them; `none` never does). Call once the
    /// answers are recorded, before they are sent.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        if !self.finished {
            return Ok(());
        }
        self.finished = false;
        if let (Some(log), Durability::Batched) = (&self.log, self.durability) {
            log.flush()?;
        }
        if self.crash_after_handler {
            // Test only (see ReceiverOptions::crash_after_handler): a crash after the
            // reply was recorded and before it leaves. SIGKILL, as `kill -9` would: no
            // destructor runs, no core file is written.
            eprintln!(
                "bosun: BOSUN_TEST_CRASH_AFTER_HANDLER: killing this process after the handler"
            );
            // SAFETY: kill(2) of this very process has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        Ok(())
    }

    /// Writes what the core decided so far. Call before anything the core queued with it
    /// is sent.
    pub(crate) fn record(&mut self, core: &mut impl Recorded) -> Result<(), StoreError> {
        while let Some(record) = core.next_record() {
            self.write(record)?;
        }
        Ok(())
    }

    /// [`Recorder::record`], then [`Recorder::commit`]: call once the handlers' answers
    /// are in the core, before they are sent.
    pub(crate) fn settle(&mut self, core: &mut impl Recorded) -> Result<(), StoreError> {
        self.record(core)?;
        self.commit()
    }
}

/// Opens what `options` ask for: checks them, loads the window from the store as it
/// stands at `now_ms` (ms since the Unix epoch: the drivers pass [`crate::io::unix_ms`],
/// simulations their virtual wall clock), logging the recovery line and abandoning
/// interrupted handlers (see the module docs), and returns the gate's policy (for the
/// core's `set_policy`) and the recorder that writes into the store.
pub fn open(options: &ReceiverOptions, now_ms: u64) -> Result<(Policy, Recorder), Error> {
    options.validate()?;
    let limits = options.limits();
    let mut hook = Recorder {
        log: None,
        dead: None,
        durability: options.durability,
        finished: false,
        crash_after_handler: options.crash_after_handler,
    };
    let window = match (&options.store, limits) {
        (Some(store), Some(limits)) => {
            let log = store.dedup_log(options.durability)?;
            let recovered = log.load(limits, now_ms)?;
            let interrupted: Vec<_> = recovered.interrupted.iter().map(|i| i.id).collect();
            // Abandoned: a copy may run again (see the module docs).
            log.forget(&interrupted)?;
            log.flush()?;
            let dead = store.dead_letters()?;
            let data_dir = store
                .path()
                .map_or_else(|| "memory".to_string(), |p| p.display().to_string());
            tracing::info!(
                data_dir,
                forgotten = recovered.forgotten,
                "recovered: {} ids in the dedup window, {} interrupted handlers, {} dead letters",
                recovered.window.len(),
                interrupted.len(),
                dead.len(),
            );
            if !interrupted.is_empty() {
                tracing::warn!(
                    ids = ?interrupted,
                    "{} handlers were running when this peer stopped: their requests may run again",
                    interrupted.len()
                );
            }
            hook.log = Some(log);
            hook.dead = Some(dead);
            Some(recovered.window)
        }
        (_, limits) => limits.map(Window::new),
    };
    let policy = Policy {
        window,
        max_attempts: options.max_attempts,
        dead_letters_kept: hook.dead.is_some(),
    };
    Ok((policy, hook))
}

/// Logs what the gate did.
pub(crate) fn log_note(note: &Note) {
    match note {
        Note::Replayed { id, attempt }
        | Note::Joined { id, attempt }
        | Note::StillRunning { id, attempt }
        | Note::AlreadyHandled { id, attempt } => {
            tracing::info!(%id, attempt, "{note}")
        }
        Note::DeadlinePassed {
            id,
            attempt,
            late_ms,
        } => tracing::warn!(%id, attempt, late_ms, "{note}"),
        Note::Rerun {
            id,
            attempt,
            max_attempts,
            error,
        } => tracing::info!(%id, attempt, max_attempts, %error, "{note}"),
        Note::GaveUp {
            id,
            attempts,
            error,
            ..
        } => tracing::warn!(%id, attempts, %error, "{note}"),
    }
}

/// Logs a store failure that stops a receiver: the guarantees of the store cannot be
/// kept without it, so the receiver stops rather than answer unrecorded.
pub(crate) fn store_failed(e: StoreError) -> Error {
    tracing::error!(error = %e, "the store failed; stopping");
    Error::Store(e)
}
