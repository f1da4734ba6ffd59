//! Driver of the Lazy Pirate client: a REQ socket and the core.

use crate::config::Retry;
use crate::error::{ClientError, Error, TransportError};
use crate::io::{self, Shutdown};
use crate::proto::envelope::Envelope;
use crate::proto::lazy_pirate::{Discard, Event, LazyPirate, Transmit};

/// What a [`LazyPirateClient`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests started.
    pub requests: u64,
    /// Requests answered.
    pub answered: u64,
    /// Attempts that timed out and were retried.
    pub retries: u64,
    /// Replies discarded as stale, unsolicited or malformed.
    pub discarded: u64,
}

/// A Lazy Pirate client: one request at a time, retried on a fresh socket until it is
/// answered or `retries` attempts have timed out.
pub struct LazyPirateClient {
    ctx: zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
    core: LazyPirate,
    shutdown: Shutdown,
    stats: ClientStats,
}

impl LazyPirateClient {
    /// A client of the REQ/REP server (or Paranoid Pirate queue frontend) at `endpoint`.
    pub fn new(ctx: &zmq::Context, endpoint: &str, retry: Retry) -> Result<Self, Error> {
        retry.validate()?;
        let socket = Self::open(ctx, endpoint)?;
        Ok(LazyPirateClient {
            ctx: ctx.clone(),
            endpoint: endpoint.to_string(),
            socket,
            core: LazyPirate::new(retry, fastrand::u64(..)),
            shutdown: Shutdown::new(),
            stats: ClientStats::default(),
        })
    }

    /// Makes [`LazyPirateClient::request`] return [`ClientError::Interrupted`] soon
    /// after `shutdown` is triggered.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// What this client has done so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The server endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `body` and returns the reply, retrying as the [`Retry`] policy says.
    /// Fails with [`ClientError::GaveUp`] (carrying `body` back) when every attempt
    /// timed out.
    pub fn request(&mut self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.core.send(io::now(), Envelope::new(body))?;
        self.stats.requests += 1;
        loop {
            while let Some(t) = self.core.poll_transmit() {
                match t {
                    Transmit::Send(frame) => self
                        .socket
                        .send(frame, 0)
                        .map_err(|e| TransportError::zmq("send", &self.endpoint, e))?,
                    Transmit::Reset => {
                        self.socket = Self::open(&self.ctx, &self.endpoint)?;
                    }
                }
            }
            while let Some(event) = self.core.poll_event() {
                match event {
                    Event::Reply { body, .. } => {
                        self.stats.answered += 1;
                        return Ok(body);
                    }
                    Event::GaveUp { attempts, body, .. } => {
                        return Err(ClientError::GaveUp {
                            attempts,
                            endpoint: self.endpoint.clone(),
                            body,
                        }
                        .into())
                    }
                    Event::Retrying { id, attempt, after } => {
                        self.stats.retries += 1;
                        tracing::warn!(%id, attempt, endpoint = %self.endpoint, ?after, "no reply, retrying");
                    }
                    Event::Discarded(why) => {
                        self.stats.discarded += 1;
                        match why {
                            Discard::Malformed(e) => tracing::warn!(error = %e, "reply dropped"),
                            other => tracing::debug!(?other, "reply discarded"),
                        }
                    }
                }
            }
            if self.shutdown.is_triggered() {
                // Leave the socket usable for nobody: a half-done REQ exchange.
                self.socket = Self::open(&self.ctx, &self.endpoint)?;
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
                self.core.handle_reply(io::now(), frames);
            }
            self.core.handle_timeout(io::now());
        }
    }

    fn open(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, Error> {
        // Linger 0: a retried request must not be sent later by a socket we discarded.
        let s = io::socket(ctx, zmq::REQ, std::time::Duration::ZERO)?;
        io::connect(&s, endpoint)?;
        Ok(s)
    }
}
