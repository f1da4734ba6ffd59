//! Driver of the Paranoid Pirate queue: two ROUTER sockets (frontend 0, backend 1)
//! and the core.

use std::time::Instant;

use crate::error::Error;
use crate::io::driver::{Core, Driver, Op, Sockets};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::frames::Frames;
use crate::proto::paranoid_pirate::{Queue, QueueConfig, QueueEvent, QueueTransmit};

const FRONTEND: usize = 0;
const BACKEND: usize = 1;

/// How often the requests the queue refused are summed up in the log: one WARN per
/// interval with their number, never a line per request.
pub const DROP_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The queue core with its refusals counted for the log.
struct Counted {
    core: Queue,
    /// Refused since the last report, and how many were waiting at the last one.
    dropped: u64,
    queued: usize,
    /// When the count is reported.
    report: Option<Instant>,
}

/// What the queue driver logs.
enum Logged {
    /// An event of the core (a refusal is only counted).
    Core(QueueEvent),
    /// `count` requests were refused over the last interval.
    Dropped { count: u64, queued: usize },
}

impl Core for Counted {
    type Event = Logged;
    fn handle_input(&mut self, now: Instant, socket: usize, frames: Frames) {
        Core::handle_input(&mut self.core, now, socket, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Core::handle_timeout(&mut self.core, now);
        if self.report.is_some_and(|at| at <= now) {
            self.report = None;
        }
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.core.poll_op()
    }
    fn poll_event(&mut self) -> Option<Logged> {
        loop {
            match Queue::poll_event(&mut self.core) {
                Some(QueueEvent::RequestDropped { queued }) => {
                    self.dropped += 1;
                    self.queued = queued;
                    if self.report.is_none() {
                        self.report = Some(io::now() + DROP_REPORT_INTERVAL);
                    }
                }
                Some(e) => return Some(Logged::Core(e)),
                None => break,
            }
        }
        // Due: `handle_timeout` cleared the report time.
        if self.report.is_none() && self.dropped > 0 {
            let count = std::mem::take(&mut self.dropped);
            return Some(Logged::Dropped {
                count,
                queued: self.queued,
            });
        }
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        [Queue::poll_timeout(&self.core), self.report]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Core for Queue {
    type Event = QueueEvent;
    fn handle_input(&mut self, now: Instant, socket: usize, frames: Frames) {
        if socket == BACKEND {
            self.handle_backend(now, frames)
        } else {
            self.handle_frontend(now, frames)
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        Queue::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            QueueTransmit::Frontend(f) => Op::Send(FRONTEND, f),
            QueueTransmit::Backend(f) => Op::Send(BACKEND, f),
        })
    }
    fn poll_event(&mut self) -> Option<QueueEvent> {
        Queue::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Queue::poll_timeout(self)
    }
}

/// Settings of a [`QueueDriver`], from [`QueueDriver::builder`];
/// [`QueueDriverBuilder::bind`] makes the queue.
#[derive(Debug, Clone)]
pub struct QueueDriverBuilder {
    frontend: String,
    backend: String,
    transport: Option<Transport>,
    config: QueueConfig,
}

impl QueueDriverBuilder {
    crate::io::builder_setters!(transport);

    /// Sets the heartbeat and queue bounds (default [`QueueConfig::default`]).
    pub fn config(mut self, config: QueueConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the settings, makes the frontend and backend ROUTER sockets and binds
    /// them.
    pub fn bind(self) -> Result<QueueDriver, Error> {
        let transport = self.transport.unwrap_or_default();
        let core = Queue::new(io::now(), self.config)?;
        let sockets = Sockets::bound(
            &transport,
            &[(zmq::ROUTER, &self.frontend), (zmq::ROUTER, &self.backend)],
        )?;
        Ok(QueueDriver { core, sockets })
    }
}

/// A bound Paranoid Pirate queue, ready to [`QueueDriver::run`].
///
/// ```no_run
/// use bosun::io::queue::QueueDriver;
/// let shutdown = bosun::Shutdown::new();
/// QueueDriver::bind("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")?.run(&shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct QueueDriver {
    core: Queue,
    sockets: Sockets,
}

impl QueueDriver {
    /// The settings of a queue whose frontend (clients) is bound at `frontend` and
    /// backend (workers) at `backend`; [`QueueDriverBuilder::bind`] makes it.
    pub fn builder(frontend: &str, backend: &str) -> QueueDriverBuilder {
        QueueDriverBuilder {
            frontend: frontend.to_string(),
            backend: backend.to_string(),
            transport: None,
            config: QueueConfig::default(),
        }
    }

    /// A queue bound at `frontend` and `backend` with the default settings (its own
    /// context, [`QueueConfig::default`]).
    pub fn bind(frontend: &str, backend: &str) -> Result<Self, Error> {
        Self::builder(frontend, backend).bind()
    }

    /// The endpoint clients connect to, with its port resolved.
    pub fn frontend_endpoint(&self) -> String {
        self.sockets.endpoint(FRONTEND)
    }

    /// The endpoint workers connect to, with its port resolved.
    pub fn backend_endpoint(&self) -> String {
        self.sockets.endpoint(BACKEND)
    }

    /// Routes until `shutdown` is triggered.
    pub fn run(self, shutdown: &Shutdown) -> Result<(), Error> {
        tracing::info!(frontend = %self.frontend_endpoint(), backend = %self.backend_endpoint(), "queue running");
        let core = Counted {
            core: self.core,
            dropped: 0,
            queued: 0,
            report: None,
        };
        let mut driver = Driver::new(core, self.sockets, shutdown);
        driver.route(|e| match e {
            Logged::Core(e) => log_event(e),
            Logged::Dropped { count, queued } => tracing::warn!(
                count,
                queued,
                "queue full: {count} request(s) refused in the last {}s ({queued} waiting; --max-queue)",
                DROP_REPORT_INTERVAL.as_secs()
            ),
        })?;
        tracing::info!("queue stopped");
        Ok(())
    }
}

fn log_event(event: QueueEvent) {
    match event {
        QueueEvent::WorkerReady { identity } => {
            tracing::info!(worker = %hex(&identity), "worker ready")
        }
        QueueEvent::WorkerReadyAgain { identity, was_busy } => {
            tracing::warn!(worker = %hex(&identity), was_busy, "worker sent READY again")
        }
        QueueEvent::WorkerExpired { identity, was_busy } => {
            tracing::warn!(worker = %hex(&identity), was_busy, "worker expired")
        }
        QueueEvent::RequestDropped { queued } => {
            tracing::debug!(queued, "queue full; request refused")
        }
        QueueEvent::Malformed {
            side,
            identity,
            error,
        } => {
            tracing::warn!(?side, peer = %hex(&identity), %error, "malformed message dropped")
        }
        QueueEvent::UnknownWorker { identity } => {
            tracing::debug!(worker = %hex(&identity), "heartbeat from unknown worker ignored")
        }
    }
}

/// A routing identity as hex, at most 16 bytes of it.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
