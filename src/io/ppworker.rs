//! Driver of the Paranoid Pirate worker: a DEALER to the queue and the core. The handler
//! runs on the socket thread (no thread hop per request) while a guard thread keeps
//! heartbeats flowing (see `io::guard`).

use std::sync::atomic::Ordering;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::Error;
use crate::io::guard::{run_guarded, GuardFrames, Guarded};
use crate::io::handler::{self, Handler};
use crate::io::{self, Shutdown};
use crate::proto::frames::ppp::Command;
use crate::proto::paranoid_pirate::{Worker, WorkerEvent, WorkerTransmit};

/// What a worker (Paranoid Pirate or Majordomo) did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Requests handled and replied to.
    pub handled: u64,
    /// Fresh sockets opened after the first (the queue or broker lost, or DISCONNECT).
    pub reconnects: u64,
}

/// A Paranoid Pirate (6/PPP) worker.
pub struct PpWorker {
    ctx: zmq::Context,
    settings: Settings,
}

/// A worker's settings, without its context.
struct Settings {
    endpoint: String,
    heartbeat: Heartbeat,
    reconnect: Backoff,
}

impl PpWorker {
    /// A worker for the queue backend at `endpoint`, with default heartbeat and
    /// reconnect settings. What it sends last leaves when the last handle of `ctx` is
    /// dropped (libzmq flushes within the linger): drop yours after `run` returns.
    pub fn new(ctx: &zmq::Context, endpoint: &str) -> Self {
        PpWorker {
            ctx: ctx.clone(),
            settings: Settings {
                endpoint: endpoint.to_string(),
                heartbeat: Heartbeat::default(),
                reconnect: RECONNECT,
            },
        }
    }

    /// Sets the heartbeat interval and liveness (must match the queue's).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.settings.heartbeat = heartbeat;
        self
    }

    /// Sets the reconnect backoff (default [`RECONNECT`]: 1 s doubling to 32 s).
    pub fn reconnect(mut self, reconnect: Backoff) -> Self {
        self.settings.reconnect = reconnect;
        self
    }

    /// Serves requests with `handler` until `shutdown` is triggered. The handler runs on
    /// a socket thread of its own; this thread heartbeats the queue while it runs, and on
    /// `shutdown` returns without waiting for it (6/PPP has no goodbye: the queue expires
    /// the worker and the client retries the request).
    pub fn run(self, handler: Handler, shutdown: &Shutdown) -> Result<WorkerStats, Error> {
        let PpWorker { ctx, settings } = self;
        settings.heartbeat.validate()?;
        settings
            .reconnect
            .validate("--reconnect-initial/--reconnect-max")?;
        let shared = Guarded::new(ctx);
        let frames = GuardFrames {
            heartbeat: Command::Heartbeat.frames(),
            goodbye: None,
        };
        run_guarded(
            &shared,
            settings.heartbeat.interval,
            frames,
            shutdown,
            move |s, stop| settings.drive(s, handler, stop),
        )?;
        Ok(shared.stats())
    }
}

impl Settings {
    fn drive(
        &self,
        shared: &Guarded,
        mut handler: Handler,
        shutdown: &Shutdown,
    ) -> Result<(), Error> {
        let mut core = Worker::new(io::now(), self.heartbeat, self.reconnect, fastrand::u64(..));
        let mut socket = shared.socket();
        let mut connected_once = false;
        while !shutdown.is_triggered() {
            // A reply makes new transmits: go round until none is left.
            loop {
                let mut replied = false;
                while let Some(t) = core.poll_transmit() {
                    match t {
                        WorkerTransmit::Connect => {
                            let Some(ctx) = shared.context() else {
                                return Ok(());
                            };
                            let s = io::socket(&ctx, zmq::DEALER, io::SHUTDOWN_LINGER)?;
                            io::connect(&s, &self.endpoint)?;
                            *socket = Some(s);
                            if connected_once {
                                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                            }
                            connected_once = true;
                        }
                        WorkerTransmit::Disconnect => {
                            if let Some(s) = socket.take() {
                                let _ = s.set_linger(0);
                            }
                        }
                        WorkerTransmit::Send(frames) => {
                            if let Some(s) = socket.as_ref() {
                                io::send_or_log(s, frames, "queue");
                                shared.sent();
                            }
                        }
                    }
                }
                while let Some(event) = core.poll_event() {
                    match event {
                        WorkerEvent::Request { body } => {
                            let (s, answer) = shared.while_handling(socket, || {
                                handler::answer_or_panic(&mut handler, body)
                            });
                            socket = s;
                            if shared.farewell() {
                                return Ok(());
                            }
                            match answer {
                                Ok(reply) => {
                                    if core.reply(io::now(), reply).is_ok() {
                                        shared.handled.fetch_add(1, Ordering::Relaxed);
                                    }
                                    replied = true;
                                }
                                Err(why) => {
                                    tracing::error!(panic = %why, "request handler panicked; worker stops");
                                    return Err(Error::HandlerPanicked(why));
                                }
                            }
                        }
                        WorkerEvent::QueueLost { attempt, after } => {
                            tracing::warn!(endpoint = %self.endpoint, attempt, ?after, "queue silent; reconnecting")
                        }
                        WorkerEvent::Connected => {
                            tracing::info!(endpoint = %self.endpoint, "connected; READY sent")
                        }
                        WorkerEvent::DroppedWhileBusy => {
                            tracing::warn!("request while busy dropped")
                        }
                        WorkerEvent::Malformed(e) => {
                            tracing::warn!(error = %e, "malformed message dropped")
                        }
                    }
                }
                if !replied {
                    break;
                }
            }
            let timeout = io::poll_millis(io::now(), core.poll_timeout());
            let sock_ready = match socket.as_ref() {
                Some(s) => {
                    let mut items = [s.as_poll_item(zmq::POLLIN)];
                    io::poll(&mut items, timeout)?;
                    items[0].is_readable()
                }
                None => {
                    io::poll(&mut [], timeout)?;
                    false
                }
            };
            if let (true, Some(s)) = (sock_ready, socket.as_ref()) {
                while let Ok(frames) = io::recv_frames(s, zmq::DONTWAIT) {
                    core.handle_frames(io::now(), frames);
                }
            }
            core.handle_timeout(io::now());
        }
        *socket = None;
        Ok(())
    }
}
