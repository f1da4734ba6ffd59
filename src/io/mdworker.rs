//! Driver of the Majordomo worker: a DEALER to the broker, the core, and a pool of
//! `capacity` handler threads, so that heartbeats flow while handlers run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::{Error, TransportError};
use crate::io::{self, handler, Shutdown};
use crate::proto::broker::BrokerConfig;
use crate::proto::frames::mdp::MAX_CAPACITY;
use crate::proto::worker::{Event, MdWorker, Transmit};

/// A request handler that many threads may call at once.
pub type SharedHandler = Arc<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A request for the handler pool: the client address and the body frames.
type Job = (Vec<u8>, Vec<Vec<u8>>);

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MdWorkerStats {
    /// Requests handled and replied to.
    pub handled: u64,
    /// Fresh sockets opened after the first (broker lost or DISCONNECT).
    pub reconnects: u64,
}

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
    endpoint: String,
    service: String,
    capacity: u32,
    heartbeat: Heartbeat,
    reconnect: Backoff,
    inline: bool,
}

impl Worker {
    /// A worker of `service` for the broker at `endpoint`: capacity 1, the 7/MDP
    /// reference heartbeat (2500 ms × 3), reconnect 1 s doubling to 32 s.
    pub fn new(endpoint: &str, service: &str) -> Self {
        Worker {
            ctx: zmq::Context::new(),
            endpoint: endpoint.to_string(),
            service: service.to_string(),
            capacity: 1,
            heartbeat: BrokerConfig::default().heartbeat,
            reconnect: RECONNECT,
            inline: false,
        }
    }

    /// Runs the handler on the socket thread instead of a pool (capacity is then 1).
    /// That saves a thread hop per request, but no heartbeat goes out while the handler
    /// runs: use it only for handlers much faster than `liveness × interval`.
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        if inline {
            self.capacity = 1;
        }
        self
    }

    /// Uses `ctx` instead of a context of its own.
    pub fn context(mut self, ctx: &zmq::Context) -> Self {
        self.ctx = ctx.clone();
        self
    }

    /// Handles up to `k` requests at once (a pool of `k` threads). With `k > 1` READY
    /// carries the capacity extension; a plain 7/MDP broker gives such a worker one
    /// request at a time only if it ignores the extra frame, so keep 1 there.
    pub fn capacity(mut self, k: u32) -> Self {
        self.capacity = k;
        self
    }

    /// Sets the heartbeat (must match the broker's).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the reconnect backoff.
    pub fn reconnect(mut self, reconnect: Backoff) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Serves requests until `shutdown` is triggered, then sends DISCONNECT.
    pub fn run(self, handler: SharedHandler, shutdown: &Shutdown) -> Result<MdWorkerStats, Error> {
        self.heartbeat.validate()?;
        self.reconnect
            .validate("--reconnect-initial/--reconnect-max")?;
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(crate::error::ConfigError::Invalid {
                field: "--capacity",
                reason: format!("must be between 1 and {MAX_CAPACITY}"),
            }
            .into());
        }
        if self
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
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pipe = format!(
            "inproc://bosun-mdworker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The pool's inproc sockets live in a context of their own. A handler still busy
        // at shutdown keeps its socket, and so its context, open until the process exits;
        // in `self.ctx` that would stop the context of the broker socket from being
        // terminated, and the process could exit before the I/O thread sent the final
        // DISCONNECT (the broker would hold the request until expiry). Kept apart, the
        // caller dropping its context flushes the DISCONNECT within the linger.
        let pool_ctx = zmq::Context::new();
        let replies = io::socket(&pool_ctx, zmq::PULL, Duration::ZERO)?;
        io::bind(&replies, &pipe)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = if self.inline { 0 } else { self.capacity };
        for n in 0..threads {
            let push = io::socket(&pool_ctx, zmq::PUSH, Duration::ZERO)?;
            io::connect(&push, &pipe)?;
            let rx = Arc::clone(&rx);
            let handler = Arc::clone(&handler);
            std::thread::Builder::new()
                .name(format!("bosun-handler-{n}"))
                .spawn(move || pool_thread(&rx, &push, &handler))
                .map_err(|e| Error::io("spawn handler thread", e))?;
        }
        // Dropping `jobs` at the end stops the pool threads once they are idle.
        self.drive(&replies, &jobs, &handler, shutdown)
    }

    fn drive(
        &self,
        replies: &zmq::Socket,
        jobs: &mpsc::Sender<Job>,
        handler: &SharedHandler,
        shutdown: &Shutdown,
    ) -> Result<MdWorkerStats, Error> {
        // Made once, not per request: the inline path runs on every message.
        let mut inline_handler: handler::Handler = {
            let shared = Arc::clone(handler);
            Box::new(move |b| shared(b))
        };
        let mut core = MdWorker::new(
            io::now(),
            self.service.as_bytes(),
            if self.inline { 1 } else { self.capacity },
            self.heartbeat,
            self.reconnect,
            fastrand::u64(..),
        );
        let mut socket: Option<zmq::Socket> = None;
        let mut stats = MdWorkerStats::default();
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
                        let s = io::socket(&self.ctx, zmq::DEALER, io::SHUTDOWN_LINGER)?;
                        io::connect(&s, &self.endpoint)?;
                        socket = Some(s);
                        opened += 1;
                        stats.reconnects = opened - 1;
                    }
                    Transmit::Disconnect => socket = None,
                    Transmit::Send(frames) => {
                        if let Some(s) = socket.as_ref() {
                            io::send_or_log(s, frames, "broker");
                        }
                    }
                }
            }
            if stopping {
                return Ok(stats);
            }
            let mut replied_inline = false;
            while let Some(event) = core.poll_event() {
                match event {
                    Event::Request { client, body } if self.inline => {
                        match handler::answer_or_panic(&mut inline_handler, body) {
                            Ok(reply) => {
                                core.reply(io::now(), &client, reply);
                                stats.handled += 1;
                                replied_inline = true;
                            }
                            Err(why) => {
                                tracing::error!(panic = %why, "request handler panicked; worker stops");
                                return Err(Error::HandlerPanicked(why));
                            }
                        }
                    }
                    Event::Request { client, body } => {
                        let _ = jobs.send((client, body));
                    }
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
            // An inline reply is waiting in the core: send it before waiting on anything.
            let timeout = if replied_inline {
                0
            } else {
                io::poll_millis(io::now(), core.poll_timeout())
            };
            let (sock_ready, replies_ready) = match socket.as_ref() {
                Some(s) => {
                    let mut items = [
                        s.as_poll_item(zmq::POLLIN),
                        replies.as_poll_item(zmq::POLLIN),
                    ];
                    io::poll(&mut items, timeout)?;
                    (items[0].is_readable(), items[1].is_readable())
                }
                None => {
                    let mut items = [replies.as_poll_item(zmq::POLLIN)];
                    io::poll(&mut items, timeout)?;
                    (false, items[0].is_readable())
                }
            };
            if sock_ready {
                if let Some(s) = socket.as_ref() {
                    while let Ok(frames) = s.recv_multipart(zmq::DONTWAIT) {
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
            if replies_ready {
                while let Ok(frames) = replies.recv_multipart(zmq::DONTWAIT) {
                    match frames.as_slice() {
                        [kind, client, body @ ..] if kind == handler::REPLIED => {
                            core.reply(io::now(), client, body.to_vec());
                            stats.handled += 1;
                        }
                        [kind, why] if kind == handler::PANICKED => {
                            let why = String::from_utf8_lossy(why).into_owned();
                            tracing::error!(panic = %why, "request handler panicked; worker stops");
                            core.disconnect();
                            while let Some(t) = core.poll_transmit() {
                                if let (Transmit::Send(f), Some(s)) = (t, socket.as_ref()) {
                                    io::send_or_log(s, f, "broker");
                                }
                            }
                            return Err(Error::HandlerPanicked(why));
                        }
                        _ => tracing::error!("unexpected message from a handler thread"),
                    }
                }
            }
            core.handle_timeout(io::now());
        }
    }
}

/// One handler thread: takes `(client, body)` jobs, pushes `[client][reply...]` back.
fn pool_thread(jobs: &Mutex<mpsc::Receiver<Job>>, push: &zmq::Socket, handler: &SharedHandler) {
    let shared = Arc::clone(handler);
    let mut h: handler::Handler = Box::new(move |b| shared(b));
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((client, body)) = job else { return };
        let (msg, panicked) = match handler::answer_or_panic(&mut h, body) {
            Ok(reply) => (
                [vec![handler::REPLIED.to_vec(), client], reply].concat(),
                false,
            ),
            Err(panic) => (vec![handler::PANICKED.to_vec(), panic.into_bytes()], true),
        };
        if let Err(e) = push.send_multipart(msg, 0) {
            tracing::error!(error = %TransportError::zmq("send", "worker driver", e), "reply lost");
            return;
        }
        if panicked {
            return;
        }
    }
}
