//! Driver of the Paranoid Pirate worker: a DEALER to the queue and the core. The handler
//! runs on the socket thread (no thread hop per request) while a guard thread keeps
//! heartbeats flowing (see `io::guard`).
//!
//! With [`PpWorkerBuilder::receiver`] the worker suppresses duplicates, re-runs failing
//! handlers and dead-letters what keeps failing (see [`crate::io::receiver`]); what the
//! core decides is written to the store before the reply it goes with is sent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::{ConfigError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::guard::{run_guarded, GuardFrames, Guarded};
use crate::io::handler::{self, Handler};
use crate::io::receiver::{self, ReceiverOptions, Recorder};
use crate::io::transport::{check_endpoint, Side, Transport};
use crate::io::{self, Shutdown};
use crate::proto::frames::ppp::Command;
use crate::proto::frames::Frames;
use crate::proto::paranoid_pirate::{Worker, WorkerEvent, WorkerTransmit};

impl Core for Worker {
    type Event = WorkerEvent;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        // Deadlines and the duplicate window are wall-clock times.
        self.handle_wall_clock(now, io::unix_ms());
        self.handle_frames(now, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Worker::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            WorkerTransmit::Connect => Op::Open(0),
            // 6/PPP has no goodbye: what the old socket holds is of no use.
            WorkerTransmit::Disconnect => Op::Discard(0),
            WorkerTransmit::Send(f) => Op::Send(0, f),
        })
    }
    fn poll_event(&mut self) -> Option<WorkerEvent> {
        Worker::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Worker::poll_timeout(self)
    }
}

/// What a worker (Paranoid Pirate or Majordomo) did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Requests handled and answered (failed ones included).
    pub handled: u64,
    /// Fresh sockets opened after the first (the queue or broker lost, or DISCONNECT).
    pub reconnects: u64,
}

/// Settings of a [`PpWorker`], from [`PpWorker::builder`]; [`PpWorkerBuilder::connect`]
/// makes the worker.
#[derive(Debug, Clone)]
pub struct PpWorkerBuilder {
    transport: Option<Transport>,
    settings: Settings,
}

impl PpWorkerBuilder {
    /// Uses `ctx` instead of a context of its own (the default). What the worker sends
    /// last leaves when the last handle of `ctx` is dropped (libzmq flushes within the
    /// linger): drop yours after [`PpWorker::run`] returns.
    pub fn context(self, ctx: &zmq::Context) -> Self {
        self.transport(&Transport::with_context(ctx))
    }

    /// Makes its sockets with `transport` (and its context; see
    /// [`PpWorkerBuilder::context`]). Default: a transport of its own,
    /// [`Transport::default`].
    pub fn transport(mut self, transport: &Transport) -> Self {
        self.transport = Some(transport.clone());
        self
    }

    /// Sets the heartbeat interval and liveness, which must match the queue's (default
    /// [`Heartbeat::default`]: 1 s × 3).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.settings.heartbeat = heartbeat;
        self
    }

    /// Sets the reconnect backoff (default [`RECONNECT`]: 1 s doubling to 32 s).
    pub fn reconnect(mut self, reconnect: Backoff) -> Self {
        self.settings.reconnect = reconnect;
        self
    }

    /// Sets duplicate suppression, re-runs, dead letters and their store (default:
    /// none of them; see [`ReceiverOptions`]).
    pub fn receiver(mut self, options: ReceiverOptions) -> Self {
        self.settings.receiver = options;
        self
    }

    /// Checks the settings (heartbeat, backoff, receiver options) and the endpoint, and
    /// makes the worker. Its socket is made and connected by [`PpWorker::run`], which
    /// says READY at once.
    pub fn connect(self) -> Result<PpWorker, Error> {
        // A core made now only to check the settings; `run` makes the one it drives,
        // so that its timers start when it does.
        self.settings.core()?;
        self.settings.receiver.validate()?;
        check_endpoint(&self.settings.endpoint, Side::Connect)?;
        Ok(PpWorker {
            transport: self.transport.unwrap_or_default(),
            settings: self.settings,
        })
    }
}

/// A Paranoid Pirate (6/PPP) worker, ready to [`PpWorker::run`].
///
/// ```no_run
/// let shutdown = bosun::Shutdown::new();
/// bosun::PpWorker::connect("tcp://127.0.0.1:5556")?
///     .run(bosun::io::handler::echo(), &shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct PpWorker {
    transport: Transport,
    settings: Settings,
}

/// A worker's settings, without its transport.
#[derive(Debug, Clone)]
struct Settings {
    endpoint: String,
    heartbeat: Heartbeat,
    reconnect: Backoff,
    receiver: ReceiverOptions,
}

impl Settings {
    /// A core with these settings, starting now; fails on a setting that cannot work.
    fn core(&self) -> Result<Worker, ConfigError> {
        Worker::new(io::now(), self.heartbeat, self.reconnect, fastrand::u64(..))
    }
}

impl PpWorker {
    /// The settings of a worker for the queue backend at `endpoint`: by default the
    /// 6/PPP reference heartbeat (1 s × 3) and reconnect (1 s doubling to 32 s);
    /// [`PpWorkerBuilder::connect`] makes it.
    pub fn builder(endpoint: &str) -> PpWorkerBuilder {
        PpWorkerBuilder {
            transport: None,
            settings: Settings {
                endpoint: endpoint.to_string(),
                heartbeat: Heartbeat::default(),
                reconnect: RECONNECT,
                receiver: ReceiverOptions::default(),
            },
        }
    }

    /// A worker for the queue backend at `endpoint` with the default settings (its own
    /// context; see [`PpWorker::builder`]).
    pub fn connect(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).connect()
    }

    /// Serves requests with `handler` until `shutdown` is triggered. The handler runs on
    /// a socket thread of its own; this thread heartbeats the queue while it runs, and on
    /// `shutdown` returns without waiting for it (6/PPP has no goodbye: the queue expires
    /// the worker and the client retries the request), having killed the process group
    /// of the `exec` command it runs, whose output is never sent. A handler that fails
    /// once the stop was asked for is taken to have failed because of it: nothing is sent
    /// for it either. A handler that fails or panics otherwise fails its request, unless
    /// the receiver options run it again; the worker goes on. With a store, the worker
    /// first loads its duplicate window and logs what it recovered; a store that fails
    /// while it runs stops it with [`Error::Store`].
    pub fn run(self, handler: Handler, shutdown: &Shutdown) -> Result<WorkerStats, Error> {
        let PpWorker {
            transport,
            settings,
        } = self;
        let (policy, hook) = receiver::open(&settings.receiver, io::unix_ms())?;
        let mut core = settings.core()?;
        core.set_policy(policy)?;
        let shared = Guarded::new(transport.clone());
        let frames = GuardFrames {
            heartbeat: Command::Heartbeat.frames(),
            goodbye: None,
        };
        let result = run_guarded(
            &shared,
            settings.heartbeat.interval,
            frames,
            shutdown,
            move |g, stop| {
                let sockets = Sockets::connecting(
                    &transport,
                    zmq::DEALER,
                    std::slice::from_ref(&settings.endpoint),
                    false,
                )?;
                drive_guarded(
                    Driver::new(core, sockets, stop),
                    g,
                    &handler,
                    &settings.endpoint,
                    stop,
                    hook,
                )
            },
        );
        // What the guard killed is killed; this catches a command started since.
        shared.commands.kill_all();
        result?;
        Ok(shared.stats())
    }
}

fn drive_guarded(
    mut d: Driver<Worker>,
    g: &Arc<Guarded>,
    handler: &Handler,
    endpoint: &str,
    stop: &Shutdown,
    mut hook: Recorder,
) -> Result<(), Error> {
    d.sockets.report_sends_to(Arc::clone(g));
    let ended = d.run(None, None, |d, input| {
        match input {
            Input::Event(WorkerEvent::Request { request }) => {
                // Its "running" entry (and evictions) before the handler starts.
                if let Err(e) = hook.record(&mut d.core) {
                    return Flow::Break(Err(receiver::store_failed(e)));
                }
                let reply = g.while_handling(&mut d.sockets, || handler::call(handler, request));
                if g.farewell() {
                    return Flow::Break(Ok(()));
                }
                if reply.is_err() && stop.is_triggered() {
                    // Stopped, and the handler failed before the guard saw the stop: it
                    // may have failed because of it (its command killed), so its error
                    // is no answer. Nothing is sent: the client's retry finds another
                    // worker.
                    let _ = d.sockets.apply(Op::Close(0));
                    return Flow::Break(Ok(()));
                }
                if d.core.reply(io::now(), reply).is_ok() && !d.core.is_busy() {
                    g.handled.fetch_add(1, Ordering::Relaxed);
                }
                // Recorded (and flushed) before the pump sends the reply.
                if let Err(e) = hook.settle(&mut d.core) {
                    return Flow::Break(Err(receiver::store_failed(e)));
                }
            }
            Input::Event(WorkerEvent::Gated(note)) => receiver::log_note(&note),
            Input::Event(WorkerEvent::QueueLost { attempt, after }) => {
                tracing::warn!(endpoint, attempt, ?after, "queue silent; reconnecting")
            }
            Input::Event(WorkerEvent::Connected) => {
                g.reconnects.store(d.sockets.reopened(0), Ordering::Relaxed);
                tracing::info!(endpoint, "connected; READY sent")
            }
            Input::Event(WorkerEvent::DroppedWhileBusy) => {
                tracing::warn!("request while busy dropped")
            }
            Input::Event(WorkerEvent::Malformed(e)) => {
                tracing::warn!(error = %e, "{}", io::malformed_what(&e))
            }
            Input::Wake => {}
            Input::Stop => {
                let _ = d.sockets.apply(Op::Close(0));
                return Flow::Break(Ok(()));
            }
        }
        Flow::Continue
    })?;
    ended.unwrap_or(Ok(()))
}
