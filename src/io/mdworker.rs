//! Driver of the Majordomo worker: a DEALER to the broker and the core.
//!
//! A worker of capacity 1 runs the handler on its socket thread (no thread hop per
//! request), and a guard thread keeps heartbeats flowing while the handler runs and says
//! DISCONNECT at once on Ctrl-C even mid-request. A worker of capacity K > 1 hands
//! requests to a pool of K handler threads.
//!
//! With [`WorkerBuilder::receiver`] the worker suppresses duplicates, re-runs failing
//! handlers and dead-letters what keeps failing (see [`crate::io::receiver`]); what the
//! core decides is written to the store before the replies it goes with are sent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::{ConfigError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::guard::{run_guarded, GuardFrames, Guarded};
use crate::io::handler::{self, Handler};
use crate::io::pool::Pool;
use crate::io::receiver::{self, ReceiverOptions, Recorder};
use crate::io::transport::{check_endpoint, Side, Transport};
use crate::io::{self, Shutdown};
use crate::proto::broker::BrokerConfig;
use crate::proto::frames::mdp::{self, Command};
use crate::proto::frames::Frames;
use crate::proto::worker::{Event, MdWorker, Transmit};

impl Core for MdWorker {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        // Deadlines and the duplicate window are wall-clock times: the core is told the
        // time before every message (a vDSO read, tens of nanoseconds).
        self.handle_wall_clock(now, io::unix_ms());
        self.handle_frames(now, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        MdWorker::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            Transmit::Connect => Op::Open(0),
            Transmit::Disconnect => Op::Close(0),
            Transmit::Send(f) => Op::Send(0, f),
        })
    }
    fn poll_event(&mut self) -> Option<Event> {
        MdWorker::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        MdWorker::poll_timeout(self)
    }
}

/// What a worker did before it stopped (the same as a Paranoid Pirate worker's).
pub type MdWorkerStats = crate::io::ppworker::WorkerStats;

/// Settings of a [`Worker`], from [`Worker::builder`]; [`WorkerBuilder::connect`]
/// makes the worker.
#[derive(Debug, Clone)]
pub struct WorkerBuilder {
    transport: Option<Transport>,
    settings: Settings,
}

impl WorkerBuilder {
    /// Uses `ctx` instead of a context of its own (the default). The DISCONNECT sent on
    /// shutdown leaves when the last handle of the context is dropped (libzmq flushes
    /// within the linger, 200 ms): drop yours after [`Worker::run`] returns rather than
    /// exit the process with it.
    pub fn context(self, ctx: &zmq::Context) -> Self {
        self.transport(&Transport::with_context(ctx))
    }

    /// Makes its sockets with `transport` (and its context; see
    /// [`WorkerBuilder::context`]). Default: a transport of its own,
    /// [`Transport::default`].
    pub fn transport(mut self, transport: &Transport) -> Self {
        self.transport = Some(transport.clone());
        self
    }

    /// Handles up to `k` requests at once. With `k = 1` (the default) the handler runs
    /// on the socket thread, with a guard thread that heartbeats while it runs; with
    /// `k > 1`, on a pool of `k` threads, and READY carries the capacity extension (a
    /// plain 7/MDP broker gives such a worker one request at a time only if it ignores
    /// the extra frame, so keep 1 there).
    pub fn capacity(mut self, k: u32) -> Self {
        self.settings.capacity = k;
        self
    }

    /// Sets the heartbeat, which must match the broker's (default: the 7/MDP reference,
    /// 2500 ms × 3, [`BrokerConfig::default`]'s).
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

    /// Checks the settings (heartbeat, backoff, capacity, service name, receiver
    /// options) and the endpoint, and makes the worker. Its socket is made and connected by
    /// [`Worker::run`], which registers with READY at once.
    pub fn connect(self) -> Result<Worker, Error> {
        // A core made now only to check the settings; `run` makes the one it drives,
        // so that its timers start when it does.
        self.settings.core()?;
        self.settings.receiver.validate()?;
        check_endpoint(&self.settings.endpoint, Side::Connect)?;
        Ok(Worker {
            transport: self.transport.unwrap_or_default(),
            settings: self.settings,
        })
    }
}

/// A Majordomo (7/MDP) worker for one service, ready to [`Worker::run`].
///
/// ```no_run
/// let shutdown = bosun::Shutdown::new();
/// bosun::Worker::builder("tcp://127.0.0.1:5555", "echo")
///     .capacity(4)
///     .connect()?
///     .run(bosun::io::handler::echo(), &shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct Worker {
    transport: Transport,
    settings: Settings,
}

impl Worker {
    /// The settings of a worker of `service` for the broker at `endpoint`: by default
    /// capacity 1, the 7/MDP reference heartbeat (2500 ms × 3), reconnect 1 s doubling
    /// to 32 s; [`WorkerBuilder::connect`] makes it.
    pub fn builder(endpoint: &str, service: &str) -> WorkerBuilder {
        WorkerBuilder {
            transport: None,
            settings: Settings {
                endpoint: endpoint.to_string(),
                service: service.to_string(),
                capacity: 1,
                heartbeat: BrokerConfig::default().heartbeat,
                reconnect: RECONNECT,
                receiver: ReceiverOptions::default(),
            },
        }
    }

    /// A worker of `service` for the broker at `endpoint` with the default settings
    /// (its own context; see [`Worker::builder`]).
    pub fn connect(endpoint: &str, service: &str) -> Result<Self, Error> {
        Self::builder(endpoint, service).connect()
    }

    /// Serves requests until `shutdown` is triggered, then sends DISCONNECT. A handler
    /// still running then is not waited for: its request goes back to the broker, and
    /// the process groups of the `exec` commands still running are killed (their output
    /// is never sent). A handler that fails once the stop was asked for is taken to have
    /// failed because of it: its request goes back too. A handler that fails or panics
    /// otherwise fails its request (its client gets the message), unless the receiver
    /// options run it again; the worker goes on. With a store, the worker first loads
    /// its duplicate window and logs what it recovered; a store that fails while it runs
    /// stops it with [`Error::Store`].
    pub fn run(self, handler: Handler, shutdown: &Shutdown) -> Result<MdWorkerStats, Error> {
        let Worker {
            transport,
            settings,
        } = self;
        let (policy, mut hook) = receiver::open(&settings.receiver, io::unix_ms())?;
        let mut core = settings.core()?;
        core.set_policy(policy)?;
        let sockets = Sockets::connecting(
            &transport,
            zmq::DEALER,
            std::slice::from_ref(&settings.endpoint),
            false,
        )?;
        // The transport moves into `shared`: a guard that says goodbye for a busy
        // handler closes it to flush the DISCONNECT.
        let shared = Guarded::new(transport);
        if settings.capacity == 1 {
            let frames = GuardFrames {
                heartbeat: mdp::command(None, Command::Heartbeat),
                goodbye: Some(mdp::command(None, Command::Disconnect)),
            };
            let result = run_guarded(
                &shared,
                settings.heartbeat.interval,
                frames,
                shutdown,
                move |g, stop| {
                    let mut d = Driver::new(core, sockets, stop);
                    d.sockets.report_sends_to(Arc::clone(g));
                    settings.drive(&mut d, g, Exec::Inline(&handler, stop), &mut hook)
                },
            );
            // What the guard killed is killed; this catches a command started since.
            shared.commands.kill_all();
            result?;
        } else {
            let pool = Pool::start(settings.capacity, &shared.commands.scoped(&handler))?;
            // Dropping the pool at the end stops its threads once they are idle.
            let mut d = Driver::new(core, sockets, shutdown);
            let result = settings.drive(&mut d, &shared, Exec::Pool(&pool), &mut hook);
            // The requests of the commands still running went back with DISCONNECT;
            // their replies are never sent (the loop is over).
            let killed = shared.commands.kill_all();
            if killed > 0 {
                tracing::info!(commands_killed = killed, "stopped; running commands killed");
            }
            result?;
        }
        Ok(shared.stats())
    }
}

/// A worker's settings, without its transport.
#[derive(Debug, Clone)]
struct Settings {
    endpoint: String,
    service: String,
    capacity: u32,
    heartbeat: Heartbeat,
    reconnect: Backoff,
    receiver: ReceiverOptions,
}

/// How requests reach the handler.
enum Exec<'a> {
    /// On the socket thread (capacity 1), with the socket lent to the guard; the flag
    /// is the worker's stop.
    Inline(&'a Handler, &'a Shutdown),
    /// Through the pool of handler threads.
    Pool(&'a Pool),
}

impl Settings {
    /// A core with these settings, starting now; fails on a setting that cannot work.
    fn core(&self) -> Result<MdWorker, ConfigError> {
        MdWorker::new(
            io::now(),
            self.service.as_bytes(),
            self.capacity,
            self.heartbeat,
            self.reconnect,
            fastrand::u64(..),
        )
    }

    fn drive(
        &self,
        d: &mut Driver<MdWorker>,
        g: &Guarded,
        exec: Exec<'_>,
        hook: &mut Recorder,
    ) -> Result<(), Error> {
        let endpoint = self.endpoint.as_str();
        let wake = match &exec {
            Exec::Pool(pool) => Some(pool.doorbell()),
            Exec::Inline(..) => None,
        };
        let ended = d.run(None, wake, |d, input| {
            match input {
                Input::Event(Event::Request { token, request }) => {
                    // Its "running" entry (and evictions) before the handler starts.
                    if let Err(e) = hook.record(&mut d.core) {
                        return Flow::Break(Err(receiver::store_failed(e)));
                    }
                    match &exec {
                        Exec::Inline(handler, stop) => {
                            let reply = g
                                .while_handling(&mut d.sockets, || handler::call(handler, request));
                            if g.farewell() {
                                // The guard said DISCONNECT: the request is the broker's
                                // again, so the reply must not go out.
                                return Flow::Break(Ok(()));
                            }
                            if reply.is_err() && stop.is_triggered() {
                                // Stopped, and the handler failed before the guard saw
                                // the stop: it may have failed because of it (its command
                                // killed), so its error is no answer. DISCONNECT without
                                // replying: the broker re-queues the request.
                                d.core.disconnect();
                                return Flow::Break(Ok(()));
                            }
                            let before = d.core.inflight();
                            d.core.reply(io::now(), token, reply);
                            // Recorded (and flushed) before the pump sends the reply.
                            if let Err(e) = hook.settle(&mut d.core) {
                                return Flow::Break(Err(receiver::store_failed(e)));
                            }
                            if d.core.inflight() < before {
                                g.handled.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Exec::Pool(pool) => pool.submit(token, request),
                    }
                }
                Input::Wake => {
                    if let Exec::Pool(pool) = &exec {
                        for (token, reply) in pool.outcomes() {
                            let before = d.core.inflight();
                            d.core.reply(io::now(), token, reply);
                            if d.core.inflight() < before {
                                g.handled.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // One flush for every reply that came back at once.
                        if let Err(e) = hook.settle(&mut d.core) {
                            return Flow::Break(Err(receiver::store_failed(e)));
                        }
                    }
                }
                Input::Event(Event::Gated(note)) => receiver::log_note(&note),
                Input::Event(Event::BrokerLost { attempt, after }) => {
                    tracing::warn!(endpoint, attempt, ?after, "broker silent; reconnecting")
                }
                Input::Event(Event::DisconnectedByBroker) => {
                    tracing::info!(endpoint, "broker sent DISCONNECT; registering again")
                }
                Input::Event(Event::Connected) => {
                    g.reconnects.store(d.sockets.reopened(0), Ordering::Relaxed);
                    tracing::info!(endpoint, service = %self.service, "connected; READY sent")
                }
                Input::Event(Event::Malformed(e)) => {
                    tracing::warn!(error = %e, "{}", io::malformed_what(&e))
                }
                Input::Stop => {
                    d.core.disconnect();
                    return Flow::Break(Ok(()));
                }
            }
            Flow::Continue
        })?;
        ended.unwrap_or(Ok(()))
    }
}
