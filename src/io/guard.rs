//! A worker's handler on its socket thread, with a guard thread beside it.
//!
//! A worker that runs its handler on the socket thread makes no thread hop per request,
//! but it cannot heartbeat while the handler runs. So the socket lives behind a mutex
//! that the socket thread gives up only for the handler's duration, and a guard thread
//! (the one that called the worker's `run`) takes it then: it sends a heartbeat whenever
//! nothing went to the peer for an interval, and on shutdown it says goodbye at once,
//! kills the process groups of the `exec` commands the handler runs, and returns without
//! waiting for the handler, whose reply is then never sent. The heartbeats are honest
//! only as far as the handler makes progress: a handler that never returns keeps its
//! worker looking alive and busy, so a command's handler is bounded by its timeout
//! ([`crate::io::handler::ExecOptions`]).
//!
//! A zmq socket is not thread-safe, but libzmq lets it move between threads across a
//! full memory barrier (zmq(7), "Thread safety"). The mutex is that barrier: exactly one
//! thread holds the socket at any time, and each hand-over is a lock release followed by
//! a lock acquire. The guard never waits for the lock (it only tries it), so it can
//! never hold up the socket thread for longer than one send.
//!
//! The guard looks every quarter interval (at most every [`io::SHUTDOWN_CHECK`]), so
//! the longest silence while a handler runs is 1.25 intervals. On the fast path the
//! socket thread pays two uncontended lock operations and three atomic stores per
//! request; the guard wakes only on its tick.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::io::driver::Sockets;
use crate::io::handler::Commands;
use crate::io::ppworker::WorkerStats;
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::frames::Frames;

const IDLE: u64 = u64::MAX;

/// What a worker's socket thread and guard share.
pub(crate) struct Guarded {
    /// The DEALER to the peer while a handler runs (lent by the socket thread); empty
    /// otherwise. Only then may the guard use it.
    socket: Mutex<Option<zmq::Socket>>,
    /// Where the worker's sockets come from. The guard closes it (which flushes its
    /// goodbye within the linger) when it stops for a busy handler.
    transport: Transport,
    origin: Instant,
    /// Microseconds since `origin` when the running handler started; `IDLE` if none.
    busy_since: AtomicU64,
    /// Microseconds since `origin` when the last message went to the peer.
    last_sent: AtomicU64,
    /// The guard said goodbye: the socket thread must send nothing more and stop.
    farewell: AtomicBool,
    /// Requests handled and replied to.
    pub handled: AtomicU64,
    /// Fresh sockets opened after the first.
    pub reconnects: AtomicU64,
    /// The commands the worker's `exec` handlers are running: killed on stop.
    pub(crate) commands: Commands,
}

/// Locks `m`, ignoring poisoning: no code panics while holding these locks (handler
/// panics are caught), and the data stays consistent if one did.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Guarded {
    /// Shared state for a worker whose sockets come from `transport`.
    pub(crate) fn new(transport: Transport) -> Arc<Self> {
        Arc::new(Guarded {
            socket: Mutex::new(None),
            transport,
            origin: io::now(),
            busy_since: AtomicU64::new(IDLE),
            last_sent: AtomicU64::new(0),
            farewell: AtomicBool::new(false),
            handled: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            commands: Commands::default(),
        })
    }

    /// What the worker did so far.
    pub(crate) fn stats(&self) -> WorkerStats {
        WorkerStats {
            handled: self.handled.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Records that a message went to the peer now.
    pub(crate) fn sent(&self) {
        self.last_sent
            .store(self.micros(io::now()), Ordering::Relaxed);
    }

    /// Whether the guard said goodbye (the socket thread must stop, sending nothing).
    pub(crate) fn farewell(&self) -> bool {
        self.farewell.load(Ordering::SeqCst)
    }

    /// Runs `handle` with socket 0 of `sockets` lent to the guard, and takes it back
    /// (gone if the guard said goodbye meanwhile: see [`Guarded::farewell`]). The
    /// commands `handle` starts are the worker's (killed on stop).
    pub(crate) fn while_handling<R>(&self, sockets: &mut Sockets, handle: impl FnOnce() -> R) -> R {
        *lock(&self.socket) = sockets.take(0);
        self.busy_since
            .store(self.micros(io::now()), Ordering::SeqCst);
        let result = self.commands.enter(handle);
        // Idle again under the lock: a guard that takes the lock after this sees idle
        // and leaves the socket alone; one that took it before has finished with it.
        let mut slot = lock(&self.socket);
        self.busy_since.store(IDLE, Ordering::SeqCst);
        sockets.put(0, slot.take());
        drop(slot);
        result
    }

    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_micros()).unwrap_or(IDLE - 1)
    }
}

/// What the guard sends.
pub(crate) struct GuardFrames {
    /// The heartbeat, as the worker's DEALER sends it.
    pub heartbeat: Frames,
    /// The goodbye on shutdown, if the protocol has one.
    pub goodbye: Option<Frames>,
}

/// Runs `socket_thread` on a thread of its own and guards it from this thread until it
/// returns, or until `shutdown` while its handler runs (then returns `Ok` at once).
pub(crate) fn run_guarded(
    guarded: &Arc<Guarded>,
    interval: Duration,
    frames: GuardFrames,
    shutdown: &Shutdown,
    socket_thread: impl FnOnce(&Arc<Guarded>, &Shutdown) -> Result<(), Error> + Send + 'static,
) -> Result<(), Error> {
    let (done_tx, done) = mpsc::channel();
    let (shared, stop) = (Arc::clone(guarded), shutdown.clone());
    let socket = std::thread::Builder::new()
        .name("bosun-socket".into())
        .spawn(move || {
            let _ = done_tx.send(socket_thread(&shared, &stop));
        })
        .map_err(|e| Error::io("spawn worker socket thread", e))?;
    let tick = (interval / 4)
        .min(io::SHUTDOWN_CHECK)
        .max(Duration::from_millis(1));
    let interval_us = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
    loop {
        match done.recv_timeout(tick) {
            Ok(result) => {
                // Let it drop its handle first: the last handle of the context must go
                // here, where the caller waits, so that the linger can flush the goodbye
                // before the process may exit.
                let _ = socket.join();
                return result;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::io(
                    "worker socket thread",
                    std::io::Error::other("stopped without a result"),
                ))
            }
        }
        if guarded.busy_since.load(Ordering::SeqCst) == IDLE {
            continue;
        }
        // Free only while the handler runs (or as the socket thread leaves).
        let Ok(mut socket) = guarded.socket.try_lock() else {
            continue;
        };
        if guarded.busy_since.load(Ordering::SeqCst) == IDLE {
            continue;
        }
        if shutdown.is_triggered() {
            if let (Some(s), Some(bye)) = (socket.take(), frames.goodbye.as_ref()) {
                if let Err(e) = io::send_frames(&s, bye, zmq::DONTWAIT) {
                    tracing::warn!(error = %e, "goodbye not sent");
                }
            }
            guarded.farewell.store(true, Ordering::SeqCst);
            drop(socket);
            // After the farewell: the handler that returns because its command was
            // killed finds it, and sends nothing.
            let killed = guarded.commands.kill_all();
            tracing::info!(
                commands_killed = killed,
                "stopped while the handler runs; its reply will not be sent"
            );
            // Dropping the last handle of the context waits (up to the linger) for the
            // goodbye to leave; the socket thread makes no socket any more.
            guarded.transport.close();
            return Ok(());
        }
        let now = guarded.micros(io::now());
        if now.saturating_sub(guarded.last_sent.load(Ordering::Relaxed)) >= interval_us {
            if let Some(s) = socket.as_ref() {
                if io::send_frames(s, &frames.heartbeat, zmq::DONTWAIT).is_ok() {
                    guarded.last_sent.store(now, Ordering::Relaxed);
                }
            }
        }
    }
}
