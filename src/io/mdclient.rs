//! Drivers of the Majordomo clients: [`MajordomoClient`] (one request at a time, Lazy
//! Pirate reliability over a REQ socket) and [`AsyncMajordomoClient`] (many in flight
//! over a DEALER, replies matched by id).

use std::time::Duration;

use uuid::Uuid;

use crate::config::Retry;
use crate::error::{ClientError, Error, TransportError};
use crate::io::{self, Shutdown};
use crate::proto::client::{AsyncClient, Event as AsyncEvent};
use crate::proto::envelope::Envelope;
use crate::proto::frames::mdp;
use crate::proto::lazy_pirate::{Event, LazyPirate, Transmit};

/// A Majordomo client with Lazy Pirate reliability: each request is retried on a
/// fresh socket until answered or `retries` attempts have timed out.
pub struct MajordomoClient {
    ctx: zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
    core: LazyPirate,
    shutdown: Shutdown,
    retries: u64,
}

impl MajordomoClient {
    /// A client of the broker at `endpoint`.
    pub fn new(ctx: &zmq::Context, endpoint: &str, retry: Retry) -> Result<Self, Error> {
        retry.validate()?;
        Ok(MajordomoClient {
            ctx: ctx.clone(),
            endpoint: endpoint.to_string(),
            socket: open(ctx, zmq::REQ, endpoint)?,
            core: LazyPirate::new(retry, fastrand::u64(..)),
            shutdown: Shutdown::new(),
            retries: 0,
        })
    }

    /// Makes a pending request return [`ClientError::Interrupted`] once `shutdown` is
    /// triggered.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Attempts retried so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Sends `body` to `service` and returns the reply body.
    pub fn request(&mut self, service: &str, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.core.send(io::now(), Envelope::new(body))?;
        loop {
            while let Some(t) = self.core.poll_transmit() {
                match t {
                    Transmit::Send(envelope) => {
                        let msg = [mdp::CLIENT.to_vec(), service.as_bytes().to_vec(), envelope];
                        io::send_frames(&self.socket, &msg, 0)
                            .map_err(|e| TransportError::zmq("send", &self.endpoint, e))?;
                    }
                    Transmit::Reset => self.socket = open(&self.ctx, zmq::REQ, &self.endpoint)?,
                }
            }
            while let Some(event) = self.core.poll_event() {
                match event {
                    Event::Reply { body, .. } => return Ok(body),
                    Event::GaveUp { attempts, body, .. } => {
                        return Err(ClientError::GaveUp {
                            attempts,
                            endpoint: format!("{} (service {service})", self.endpoint),
                            body,
                        }
                        .into())
                    }
                    Event::Retrying { id, attempt, after } => {
                        self.retries += 1;
                        tracing::warn!(%id, attempt, service, ?after, "no reply, retrying");
                    }
                    Event::Discarded(why) => tracing::debug!(?why, "reply discarded"),
                }
            }
            if self.shutdown.is_triggered() {
                self.socket = open(&self.ctx, zmq::REQ, &self.endpoint)?;
                self.core = LazyPirate::new(*self.core.retry(), fastrand::u64(..));
                return Err(ClientError::Interrupted.into());
            }
            let timeout = io::poll_millis(io::now(), self.core.poll_timeout());
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, timeout)?;
            if items[0].is_readable() {
                let frames = self
                    .socket
                    .recv_multipart(0)
                    .map_err(|e| TransportError::zmq("recv", &self.endpoint, e))?;
                // The REQ socket removed the empty frame; the parser expects it.
                let mut full = Vec::with_capacity(frames.len() + 1);
                full.push(Vec::new());
                full.extend(frames);
                match mdp::parse_client_reply(full) {
                    Ok((_, body)) => self.core.handle_reply(io::now(), body),
                    Err(e) => tracing::warn!(error = %e, "malformed reply dropped"),
                }
            }
            self.core.handle_timeout(io::now());
        }
    }

    /// Asks the broker whether `service` has a worker (8/MMI `mmi.service`): true on
    /// `200`, false on `404`.
    pub fn has_service(&mut self, service: &str) -> Result<bool, Error> {
        let code = self.request("mmi.service", service.as_bytes().to_vec())?;
        Ok(code == b"200")
    }
}

/// One outcome of an [`AsyncMajordomoClient`] request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply.
    Reply {
        /// The request id [`AsyncMajordomoClient::send`] returned.
        id: Uuid,
        /// The reply body.
        body: Vec<u8>,
    },
    /// Every attempt timed out.
    GaveUp {
        /// The request id.
        id: Uuid,
        /// Attempts made.
        attempts: u32,
        /// The request body, handed back.
        body: Vec<u8>,
    },
}

/// A Majordomo client that keeps many requests in flight; each is retried on its own
/// timer, and a late reply to a retried request is dropped, never delivered twice.
pub struct AsyncMajordomoClient {
    endpoint: String,
    socket: zmq::Socket,
    core: AsyncClient,
    /// Requests sent whose outcome has not been returned by `recv` yet (the core may
    /// hold several finished ones as queued events).
    undelivered: usize,
    duplicates: u64,
    /// Requests started, and messages sent: their difference is the retries.
    started: u64,
    transmitted: u64,
}

impl AsyncMajordomoClient {
    /// A client of the broker at `endpoint`.
    pub fn new(ctx: &zmq::Context, endpoint: &str, retry: Retry) -> Result<Self, Error> {
        retry.validate()?;
        Ok(AsyncMajordomoClient {
            endpoint: endpoint.to_string(),
            socket: open(ctx, zmq::DEALER, endpoint)?,
            core: AsyncClient::new(retry, fastrand::u64(..)),
            undelivered: 0,
            duplicates: 0,
            started: 0,
            transmitted: 0,
        })
    }

    /// Sends `body` to `service` without waiting; returns the request id.
    pub fn send(&mut self, service: &str, body: Vec<u8>) -> Result<Uuid, Error> {
        let id = self
            .core
            .send(io::now(), service.as_bytes(), Envelope::new(body));
        self.undelivered += 1;
        self.started += 1;
        self.flush()?;
        Ok(id)
    }

    /// Requests whose reply (or give-up) [`AsyncMajordomoClient::recv`] has not
    /// returned yet.
    pub fn outstanding(&self) -> usize {
        self.undelivered
    }

    /// Replies dropped because their request was already answered.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Attempts sent after the first of their request (timed-out attempts retried).
    pub fn retries(&self) -> u64 {
        self.transmitted.saturating_sub(self.started)
    }

    /// Waits up to `timeout` for the next outcome; `None` when none came in time or
    /// nothing is outstanding.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Outcome>, Error> {
        let deadline = io::now() + timeout;
        loop {
            while let Some(event) = self.core.poll_event() {
                match event {
                    AsyncEvent::Reply { id, body, .. } => {
                        self.undelivered = self.undelivered.saturating_sub(1);
                        return Ok(Some(Outcome::Reply { id, body }));
                    }
                    AsyncEvent::GaveUp { id, attempts, body } => {
                        self.undelivered = self.undelivered.saturating_sub(1);
                        return Ok(Some(Outcome::GaveUp { id, attempts, body }));
                    }
                    AsyncEvent::Duplicate { id } => {
                        self.duplicates += 1;
                        tracing::debug!(%id, "late or duplicate reply dropped");
                    }
                    AsyncEvent::Malformed(e) => {
                        tracing::warn!(error = %e, "malformed reply dropped")
                    }
                }
            }
            let now = io::now();
            if self.undelivered == 0 || now >= deadline {
                return Ok(None);
            }
            let wake = self
                .core
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, io::poll_millis(now, Some(wake)))?;
            if items[0].is_readable() {
                while let Ok(frames) = io::recv_frames(&self.socket, zmq::DONTWAIT) {
                    self.core.handle_frames(io::now(), frames);
                }
            }
            self.core.handle_timeout(io::now());
            self.flush()?;
        }
    }

    fn flush(&mut self) -> Result<(), Error> {
        while let Some(frames) = self.core.poll_transmit() {
            io::send_frames(&self.socket, &frames, 0)
                .map_err(|e| TransportError::zmq("send", &self.endpoint, e))?;
            self.transmitted += 1;
        }
        Ok(())
    }
}

fn open(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> Result<zmq::Socket, Error> {
    let s = io::socket(ctx, kind, Duration::ZERO)?;
    io::connect(&s, endpoint)?;
    Ok(s)
}
