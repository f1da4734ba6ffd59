//! Driver of the Paranoid Pirate worker: a DEALER to the queue, the core, and a
//! handler thread reached over an inproc PAIR socket, so that heartbeats keep flowing
//! while a slow request is handled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{Backoff, Heartbeat, RECONNECT};
use crate::error::{Error, TransportError};
use crate::io::handler::{self, Handler};
use crate::io::{self, Shutdown};
use crate::proto::paranoid_pirate::{Worker, WorkerEvent, WorkerTransmit};

/// First frame of a message to the handler thread: a request follows.
const REQUEST: &[u8] = b"REQ";
/// First frame of a message to the handler thread: stop.
const STOP: &[u8] = b"STOP";

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Requests handled and replied to.
    pub handled: u64,
    /// Times the queue was lost and a fresh socket connected.
    pub reconnects: u64,
}

/// A Paranoid Pirate (6/PPP) worker.
pub struct PpWorker {
    ctx: zmq::Context,
    endpoint: String,
    heartbeat: Heartbeat,
    reconnect: Backoff,
    inline: bool,
}

impl PpWorker {
    /// A worker for the queue backend at `endpoint`, with default heartbeat and
    /// reconnect settings.
    pub fn new(ctx: &zmq::Context, endpoint: &str) -> Self {
        PpWorker {
            ctx: ctx.clone(),
            endpoint: endpoint.to_string(),
            heartbeat: Heartbeat::default(),
            reconnect: RECONNECT,
            inline: false,
        }
    }

    /// Runs the handler on the socket thread instead of a thread of its own. That saves
    /// a thread hop per request (about 15-20% of throughput at one request in flight on
    /// loopback), but no heartbeat goes out while the handler runs: use it only for
    /// handlers much faster than `liveness × interval`.
    pub fn inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// Sets the heartbeat interval and liveness (must match the queue's).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the reconnect backoff (default [`RECONNECT`]: 1 s doubling to 32 s).
    pub fn reconnect(mut self, reconnect: Backoff) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Serves requests with `handler` until `shutdown` is triggered.
    pub fn run(self, mut handler: Handler, shutdown: &Shutdown) -> Result<WorkerStats, Error> {
        self.heartbeat.validate()?;
        self.reconnect
            .validate("--reconnect-initial/--reconnect-max")?;
        if self.inline {
            // Nothing is ever sent on this pipe; it keeps one driver loop for both modes.
            let idle = io::socket(&self.ctx, zmq::PAIR, Duration::ZERO)?;
            return self.drive(&idle, Some(&mut handler), shutdown);
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pipe = format!(
            "inproc://bosun-ppworker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let pair = io::socket(&self.ctx, zmq::PAIR, Duration::ZERO)?;
        io::bind(&pair, &pipe)?;
        let thread_pair = io::socket(&self.ctx, zmq::PAIR, Duration::ZERO)?;
        io::connect(&thread_pair, &pipe)?;
        let worker_thread = std::thread::Builder::new()
            .name("bosun-handler".into())
            .spawn(move || handler_loop(thread_pair, handler))
            .map_err(|e| Error::io("spawn handler thread", e))?;

        let result = self.drive(&pair, None, shutdown);
        // The handler may be mid-request; it gets STOP when it reads next and the
        // process does not wait for a slow handler.
        let _ = pair.send_multipart([STOP], zmq::DONTWAIT);
        drop(worker_thread);
        result
    }

    fn drive(
        &self,
        pair: &zmq::Socket,
        mut inline: Option<&mut Handler>,
        shutdown: &Shutdown,
    ) -> Result<WorkerStats, Error> {
        let mut core = Worker::new(io::now(), self.heartbeat, self.reconnect, fastrand::u64(..));
        let mut socket: Option<zmq::Socket> = None;
        let mut stats = WorkerStats::default();
        let mut connected_once = false;
        while !shutdown.is_triggered() {
            // An inline reply makes new transmits: go round until none is left.
            loop {
                let mut replied_inline = false;
                while let Some(t) = core.poll_transmit() {
                    match t {
                        WorkerTransmit::Connect => {
                            let s = io::socket(&self.ctx, zmq::DEALER, io::SHUTDOWN_LINGER)?;
                            io::connect(&s, &self.endpoint)?;
                            socket = Some(s);
                            if connected_once {
                                stats.reconnects += 1;
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
                            }
                        }
                    }
                }
                while let Some(event) = core.poll_event() {
                    match event {
                        WorkerEvent::Request { body } if inline.is_some() => {
                            let Some(h) = inline.as_deref_mut() else {
                                continue;
                            };
                            match handler::answer_or_panic(h, body) {
                                Ok(reply) => {
                                    if core.reply(io::now(), reply).is_ok() {
                                        stats.handled += 1;
                                    }
                                    replied_inline = true;
                                }
                                Err(why) => {
                                    tracing::error!(panic = %why, "request handler panicked; worker stops");
                                    return Err(Error::HandlerPanicked(why));
                                }
                            }
                        }
                        WorkerEvent::Request { body } => {
                            let mut msg = Vec::with_capacity(body.len() + 1);
                            msg.push(REQUEST.to_vec());
                            msg.extend(body);
                            io::send_frames(pair, &msg, 0)
                                .map_err(|e| TransportError::zmq("send", "handler", e))?;
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
                if !replied_inline {
                    break;
                }
            }
            let timeout = io::poll_millis(io::now(), core.poll_timeout());
            let (sock_ready, pair_ready) = match socket.as_ref() {
                Some(s) => {
                    let mut items = [s.as_poll_item(zmq::POLLIN), pair.as_poll_item(zmq::POLLIN)];
                    io::poll(&mut items, timeout)?;
                    (items[0].is_readable(), items[1].is_readable())
                }
                None => {
                    let mut items = [pair.as_poll_item(zmq::POLLIN)];
                    io::poll(&mut items, timeout)?;
                    (false, items[0].is_readable())
                }
            };
            if sock_ready {
                if let Some(s) = socket.as_ref() {
                    while let Ok(frames) = io::recv_frames(s, zmq::DONTWAIT) {
                        core.handle_frames(io::now(), frames);
                    }
                }
            }
            if pair_ready {
                let mut msg = pair
                    .recv_multipart(0)
                    .map_err(|e| TransportError::zmq("recv", "handler", e))?;
                let reply = msg.split_off(1.min(msg.len()));
                if msg.first().map(Vec::as_slice) == Some(handler::PANICKED) {
                    let why = String::from_utf8_lossy(&reply.concat()).into_owned();
                    tracing::error!(panic = %why, "request handler panicked; worker stops");
                    return Err(Error::HandlerPanicked(why));
                }
                if core.reply(io::now(), reply).is_ok() {
                    stats.handled += 1;
                }
            }
            core.handle_timeout(io::now());
        }
        Ok(stats)
    }
}

fn handler_loop(pair: zmq::Socket, mut handler: Handler) {
    while let Ok(mut frames) = pair.recv_multipart(0) {
        if frames.first().map(Vec::as_slice) != Some(REQUEST) {
            return;
        }
        let body = frames.split_off(1);
        let msg = match handler::answer_or_panic(&mut handler, body) {
            Ok(reply) => [vec![handler::REPLIED.to_vec()], reply].concat(),
            Err(panic) => vec![handler::PANICKED.to_vec(), panic.into_bytes()],
        };
        let panicked = msg.first().map(Vec::as_slice) == Some(handler::PANICKED);
        if io::send_frames(&pair, &msg, 0).is_err() || panicked {
            return;
        }
    }
}
