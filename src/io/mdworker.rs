//! Driver of the Majordomo worker: a DEALER to the broker and the core.
//!
//! A worker of capacity 1 runs the handler on its socket thread (no thread hop per
//! request), and a guard thread keeps heartbeats flowing while the handler runs and says
//! DISCONNECT at once on Ctrl-C even mid-request. A worker of capacity K > 1 hands
//! requests to a pool of K handler threads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::{Error, TransportError};
use crate::io::guard::{run_guarded, GuardFrames, Guarded, SocketGuard};
use crate::io::pool::{Outcome, Pool};
use crate::io::{self, handler, Shutdown};
use crate::proto::broker::BrokerConfig;
use crate::proto::frames::mdp::{self, Command, MAX_CAPACITY};
use crate::proto::worker::{Event, MdWorker, Transmit};

/// A request handler that many threads may call at once.
pub type SharedHandler = Arc<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>;

/// What a worker did before it stopped (the same as a Paranoid Pirate worker's).
pub type MdWorkerStats = crate::io::ppworker::WorkerStats;

/// A Majordomo (7/MDP) worker for one service.
///
/// ```no_run
/// let shutdown = bosun::Shutdown::new();
/// bosun::Worker::new("tcp://127.0.0.1:5555", "echo")
///     .run(std::sync::Arc::new(|body| body), &shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct Worker {
    ctx: zmq::Context,
    settings: Settings,
}

/// How requests reach the handler.
enum Exec {
    /// On the socket thread (capacity 1).
    Inline(handler::Handler),
    /// Through the pool of handler threads.
    Pool(Pool),
}

impl Worker {
    /// A worker of `service` for the broker at `endpoint`: capacity 1, the 7/MDP
    /// reference heartbeat (2500 ms × 3), reconnect 1 s doubling to 32 s.
    pub fn new(endpoint: &str, service: &str) -> Self {
        Worker {
            ctx: zmq::Context::new(),
            settings: Settings {
                endpoint: endpoint.to_string(),
                service: service.to_string(),
                capacity: 1,
                heartbeat: BrokerConfig::default().heartbeat,
                reconnect: RECONNECT,
            },
        }
    }

    /// Uses `ctx` instead of a context of its own. The DISCONNECT sent on shutdown leaves
    /// when the last handle of the context is dropped (libzmq flushes within the linger,
    /// 200 ms): drop yours after `run` returns rather than exit the process with it.
    pub fn context(mut self, ctx: &zmq::Context) -> Self {
        self.ctx = ctx.clone();
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

    /// Sets the heartbeat (must match the broker's).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.settings.heartbeat = heartbeat;
        self
    }

    /// Sets the reconnect backoff.
    pub fn reconnect(mut self, reconnect: Backoff) -> Self {
        self.settings.reconnect = reconnect;
        self
    }

    /// Serves requests until `shutdown` is triggered, then sends DISCONNECT. A handler
    /// still running then is not waited for: its request goes back to the broker.
    pub fn run(self, handler: SharedHandler, shutdown: &Shutdown) -> Result<MdWorkerStats, Error> {
        let Worker { ctx, settings } = self;
        settings.heartbeat.validate()?;
        settings
            .reconnect
            .validate("--reconnect-initial/--reconnect-max")?;
        if settings.capacity == 0 || settings.capacity > MAX_CAPACITY {
            return Err(crate::error::ConfigError::Invalid {
                field: "--capacity",
                reason: format!("must be between 1 and {MAX_CAPACITY}"),
            }
            .into());
        }
        if settings
            .service
            .as_bytes()
            .starts_with(crate::proto::broker::MMI_PREFIX)
        {
            return Err(crate::error::ConfigError::Invalid {
                field: "--service",
                reason: "names starting with mmi. belong to the broker".into(),
            }
            .into());
        }
        // The context moves into `shared`, never into the socket thread: a guard that
        // says goodbye for a busy handler drops it to flush the DISCONNECT.
        let shared = Guarded::new(ctx);
        if settings.capacity == 1 {
            settings.run_inline(handler, &shared, shutdown)?;
        } else {
            settings.run_pool(handler, &shared, shutdown)?;
        }
        Ok(shared.stats())
    }
}

/// A worker's settings, without its context.
struct Settings {
    endpoint: String,
    service: String,
    capacity: u32,
    heartbeat: Heartbeat,
    reconnect: Backoff,
}

impl Settings {
    /// Capacity 1: the socket thread runs the handler; this thread is the guard.
    fn run_inline(
        self,
        handler: SharedHandler,
        shared: &Arc<Guarded>,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        let frames = GuardFrames {
            heartbeat: mdp::command(None, Command::Heartbeat),
            goodbye: Some(mdp::command(None, Command::Disconnect)),
        };
        let interval = self.heartbeat.interval;
        run_guarded(shared, interval, frames, shutdown, move |s, stop| {
            let inline: handler::Handler = Box::new(move |b| handler(b));
            self.drive(s, Exec::Inline(inline), stop)
        })
    }

    /// Capacity K > 1: this thread drives the socket and a pool of K threads handles.
    fn run_pool(
        self,
        handler: SharedHandler,
        shared: &Guarded,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        let pool = Pool::start(self.capacity, &handler)?;
        // Dropping the pool at the end stops its threads once they are idle.
        self.drive(shared, Exec::Pool(pool), shutdown)
    }

    fn drive(&self, shared: &Guarded, mut exec: Exec, shutdown: &Shutdown) -> Result<(), Error> {
        let mut core = MdWorker::new(
            io::now(),
            self.service.as_bytes(),
            self.capacity,
            self.heartbeat,
            self.reconnect,
            fastrand::u64(..),
        );
        let mut socket = shared.socket();
        let mut opened = 0u64;
        // Transmits taken from the core while reading the socket, applied first.
        let mut held: Vec<Transmit> = Vec::new();
        loop {
            // Read the flag once: were it set between two reads (Ctrl-C wakes `poll` with
            // EINTR while the handler thread sets it), the worker would leave without
            // saying DISCONNECT, and the broker would hold its requests until expiry.
            let stopping = shutdown.is_triggered();
            if stopping {
                core.disconnect();
            }
            let mut transmits = std::mem::take(&mut held);
            transmits.extend(std::iter::from_fn(|| core.poll_transmit()));
            for t in transmits {
                match t {
                    Transmit::Connect => {
                        let Some(ctx) = shared.context() else {
                            return Ok(());
                        };
                        let s = io::socket(&ctx, zmq::DEALER, io::SHUTDOWN_LINGER)?;
                        io::connect(&s, &self.endpoint)?;
                        *socket = Some(s);
                        opened += 1;
                        shared.reconnects.store(opened - 1, Ordering::Relaxed);
                    }
                    Transmit::Disconnect => *socket = None,
                    Transmit::Send(frames) => {
                        if let Some(s) = socket.as_ref() {
                            io::send_or_log(s, frames, "broker");
                            shared.sent();
                        }
                    }
                }
            }
            if stopping {
                *socket = None;
                return Ok(());
            }
            let mut replied_inline = false;
            while let Some(event) = core.poll_event() {
                match event {
                    Event::Request { client, body } => match &mut exec {
                        Exec::Inline(handler) => {
                            // The guard may use the socket (heartbeats, DISCONNECT on
                            // Ctrl-C) only while the handler runs.
                            let (s, answer) = shared
                                .while_handling(socket, || handler::answer_or_panic(handler, body));
                            socket = s;
                            if shared.farewell() {
                                // The guard said DISCONNECT: the request is the broker's
                                // again, so the reply must not go out.
                                return Ok(());
                            }
                            match answer {
                                Ok(reply) => {
                                    core.reply(io::now(), &client, reply);
                                    shared.handled.fetch_add(1, Ordering::Relaxed);
                                    replied_inline = true;
                                }
                                Err(why) => return Err(panicked(&mut core, &socket, why)),
                            }
                        }
                        Exec::Pool(pool) => pool.submit(client, body),
                    },
                    Event::BrokerLost { attempt, after } => {
                        tracing::warn!(endpoint = %self.endpoint, attempt, ?after, "broker silent; reconnecting")
                    }
                    Event::DisconnectedByBroker => {
                        tracing::info!(endpoint = %self.endpoint, "broker sent DISCONNECT; registering again")
                    }
                    Event::Connected => {
                        tracing::info!(endpoint = %self.endpoint, service = %self.service, "connected; READY sent")
                    }
                    Event::Malformed(e) => tracing::warn!(error = %e, "malformed message dropped"),
                }
            }
            // An inline reply is waiting in the core: round again to send it before
            // waiting on anything (the socket is read, and then the timers run, next
            // time round).
            if replied_inline {
                continue;
            }
            let timeout = io::poll_millis(io::now(), core.poll_timeout());
            let pool = match &exec {
                Exec::Pool(pool) => Some(pool),
                Exec::Inline(_) => None,
            };
            let (sock_ready, replies_ready) =
                wait(socket.as_ref(), pool.map(Pool::doorbell), timeout)?;
            if sock_ready {
                if let Some(s) = socket.as_ref() {
                    while let Ok(frames) = io::recv_frames(s, zmq::DONTWAIT) {
                        core.handle_frames(io::now(), frames);
                        // After a DISCONNECT the core replaces the socket. What is still
                        // queued on this one belongs to the old registration (a broker
                        // answers each stale HEARTBEAT with another DISCONNECT) and is
                        // left unread: a second DISCONNECT would open yet another socket
                        // and close the fresh one after its READY went out, leaving the
                        // broker a registered worker that never answers.
                        held.extend(std::iter::from_fn(|| core.poll_transmit()));
                        if held.iter().any(|t| matches!(t, Transmit::Disconnect)) {
                            break;
                        }
                    }
                }
            }
            if let (true, Some(pool)) = (replies_ready, pool) {
                for outcome in pool.outcomes() {
                    match outcome {
                        Outcome::Replied { client, body } => {
                            core.reply(io::now(), &client, body);
                            shared.handled.fetch_add(1, Ordering::Relaxed);
                        }
                        Outcome::Panicked(why) => return Err(panicked(&mut core, &socket, why)),
                    }
                }
            }
            core.handle_timeout(io::now());
        }
    }
}

/// Waits up to `timeout_ms` for the broker socket (if any) and the pool's reply socket
/// (if any); which are readable.
fn wait(
    socket: Option<&zmq::Socket>,
    replies: Option<&zmq::Socket>,
    timeout_ms: i64,
) -> Result<(bool, bool), TransportError> {
    let mut items: Vec<zmq::PollItem> = Vec::with_capacity(2);
    items.extend(socket.map(|s| s.as_poll_item(zmq::POLLIN)));
    items.extend(replies.map(|s| s.as_poll_item(zmq::POLLIN)));
    io::poll(&mut items, timeout_ms)?;
    let mut ready = items.iter().map(|i| i.is_readable());
    let sock_ready = socket.is_some() && ready.next().unwrap_or(false);
    let replies_ready = replies.is_some() && ready.next().unwrap_or(false);
    Ok((sock_ready, replies_ready))
}

/// A handler panicked: says DISCONNECT (its request goes back to the queue) and gives
/// the error that stops the worker.
fn panicked(core: &mut MdWorker, socket: &SocketGuard<'_>, why: String) -> Error {
    tracing::error!(panic = %why, "request handler panicked; worker stops");
    core.disconnect();
    while let Some(t) = core.poll_transmit() {
        if let (Transmit::Send(f), Some(s)) = (t, socket.as_ref()) {
            io::send_or_log(s, f, "broker");
        }
    }
    Error::HandlerPanicked(why)
}
