//! Driver of the Paranoid Pirate queue: two ROUTER sockets and the core.

use crate::error::Error;
use crate::io::{self, Shutdown};
use crate::proto::paranoid_pirate::{Queue, QueueConfig, QueueEvent, QueueTransmit};

/// Most messages read from one socket before the other gets a turn, so a flood on one
/// side cannot starve the other (or the timers).
const BATCH: usize = 256;

/// A bound Paranoid Pirate queue, ready to [`QueueDriver::run`].
pub struct QueueDriver {
    frontend: zmq::Socket,
    backend: zmq::Socket,
    frontend_endpoint: String,
    backend_endpoint: String,
    cfg: QueueConfig,
}

impl QueueDriver {
    /// Binds the frontend (clients) and backend (workers) ROUTER sockets.
    pub fn bind(
        ctx: &zmq::Context,
        frontend: &str,
        backend: &str,
        cfg: QueueConfig,
    ) -> Result<Self, Error> {
        cfg.heartbeat.validate()?;
        let f = io::socket(ctx, zmq::ROUTER, io::SHUTDOWN_LINGER)?;
        let b = io::socket(ctx, zmq::ROUTER, io::SHUTDOWN_LINGER)?;
        let frontend_endpoint = io::bind(&f, frontend)?;
        let backend_endpoint = io::bind(&b, backend)?;
        Ok(QueueDriver {
            frontend: f,
            backend: b,
            frontend_endpoint,
            backend_endpoint,
            cfg,
        })
    }

    /// The endpoint clients connect to, with its port resolved.
    pub fn frontend_endpoint(&self) -> &str {
        &self.frontend_endpoint
    }

    /// The endpoint workers connect to, with its port resolved.
    pub fn backend_endpoint(&self) -> &str {
        &self.backend_endpoint
    }

    /// Routes until `shutdown` is triggered.
    pub fn run(self, shutdown: &Shutdown) -> Result<(), Error> {
        let mut core = Queue::new(io::now(), self.cfg);
        tracing::info!(frontend = %self.frontend_endpoint, backend = %self.backend_endpoint, "queue running");
        while !shutdown.is_triggered() {
            let timeout = io::poll_millis(io::now(), core.poll_timeout());
            let mut items = [
                self.frontend.as_poll_item(zmq::POLLIN),
                self.backend.as_poll_item(zmq::POLLIN),
            ];
            io::poll(&mut items, timeout)?;
            let (front_ready, back_ready) = (items[0].is_readable(), items[1].is_readable());
            if back_ready {
                for frames in drain(&self.backend) {
                    core.handle_backend(io::now(), frames);
                    self.flush(&mut core);
                }
            }
            if front_ready {
                for frames in drain(&self.frontend) {
                    core.handle_frontend(io::now(), frames);
                    self.flush(&mut core);
                }
            }
            core.handle_timeout(io::now());
            self.flush(&mut core);
        }
        tracing::info!("queue stopped");
        Ok(())
    }

    fn flush(&self, core: &mut Queue) {
        while let Some(t) = core.poll_transmit() {
            match t {
                QueueTransmit::Frontend(frames) => {
                    io::send_or_log(&self.frontend, frames, "client")
                }
                QueueTransmit::Backend(frames) => io::send_or_log(&self.backend, frames, "worker"),
            }
        }
        while let Some(event) = core.poll_event() {
            log_event(event);
        }
    }
}

/// Up to [`BATCH`] messages waiting on `socket`, without blocking.
fn drain(socket: &zmq::Socket) -> impl Iterator<Item = Vec<Vec<u8>>> + '_ {
    (0..BATCH).map_while(move |_| io::recv_frames(socket, zmq::DONTWAIT).ok())
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
            tracing::warn!(queued, "queue full; request dropped")
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
