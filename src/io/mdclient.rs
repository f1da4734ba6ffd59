//! Drivers of the Majordomo clients, both over the one 7/MDP client core
//! ([`MdpClient`]): [`MajordomoClient`] (one request at a time, a fresh socket for every
//! attempt) and [`AsyncMajordomoClient`] (many in flight over one DEALER, replies
//! matched by id).

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::lazy_pirate::answer_to_result;
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::client::{Event, MdpClient, Mode, Transmit};
use crate::proto::envelope::{Answer, Status};
use crate::proto::frames::Frames;

impl Core for MdpClient {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        self.handle_frames(now, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        MdpClient::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            Transmit::Send(f) => Op::Send(0, f),
            Transmit::Reset => Op::Reset(0),
        })
    }
    fn poll_event(&mut self) -> Option<Event> {
        MdpClient::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        MdpClient::poll_timeout(self)
    }
}

fn driver(
    transport: &Transport,
    endpoint: &str,
    mode: Mode,
    retry: Retry,
) -> Result<Driver<MdpClient>, Error> {
    let core = MdpClient::new(io::now(), mode, retry, fastrand::u64(..))?;
    let sockets = Sockets::connecting(transport, zmq::DEALER, &[endpoint.to_string()], true)?;
    Ok(Driver::new(core, sockets, &Shutdown::new()))
}

/// Logs what the application does not see: retries, duplicates, unmatched and
/// malformed replies.
fn log_event(event: &Event) {
    match event {
        Event::Retrying { id, attempt, after } => {
            tracing::warn!(%id, attempt, ?after, "no reply, retrying")
        }
        Event::Duplicate { id } => tracing::debug!(%id, "late or duplicate reply dropped"),
        Event::Unmatched { service } => tracing::warn!(
            service = %String::from_utf8_lossy(service),
            "reply without bosun metadata dropped: with many requests in flight it cannot be matched to one (a foreign broker?); use one request at a time"
        ),
        Event::Malformed(e) => tracing::warn!(error = %e, "malformed reply dropped"),
        Event::Reply { .. } | Event::GaveUp { .. } => {}
    }
}

/// Settings of a [`MajordomoClient`], from [`MajordomoClient::builder`];
/// [`MajordomoClientBuilder::connect`] makes the client.
#[derive(Debug, Clone)]
pub struct MajordomoClientBuilder {
    endpoint: String,
    transport: Option<Transport>,
    retry: Retry,
    shutdown: Option<Shutdown>,
}

impl MajordomoClientBuilder {
    /// Uses `ctx` instead of a context of its own (the default).
    pub fn context(self, ctx: &zmq::Context) -> Self {
        self.transport(&Transport::with_context(ctx))
    }

    /// Makes its sockets with `transport` (and its context). Default: a transport of its
    /// own, [`Transport::default`].
    pub fn transport(mut self, transport: &Transport) -> Self {
        self.transport = Some(transport.clone());
        self
    }

    /// Sets the retry policy (default [`Retry::default`]: 2.5 s per attempt, 3
    /// attempts).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Makes a pending request return [`ClientError::Interrupted`] soon after
    /// `shutdown` is triggered (default: no flag; a request ends only in a reply or a
    /// give-up).
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// Checks the retry policy, makes the DEALER socket and connects it.
    pub fn connect(self) -> Result<MajordomoClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let mut driver = driver(&transport, &self.endpoint, Mode::Blocking, self.retry)?;
        if let Some(shutdown) = &self.shutdown {
            driver.set_shutdown(shutdown);
        }
        Ok(MajordomoClient {
            endpoint: self.endpoint,
            driver,
            retries: 0,
        })
    }
}

/// A Majordomo client with Lazy Pirate reliability: each request is retried on a
/// fresh socket until answered or `retries` attempts have timed out.
///
/// ```no_run
/// use bosun::io::mdclient::MajordomoClient;
/// let mut client = MajordomoClient::connect("tcp://127.0.0.1:5555")?;
/// let reply = client.request("echo", b"hello".to_vec())?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct MajordomoClient {
    endpoint: String,
    driver: Driver<MdpClient>,
    retries: u64,
}

impl MajordomoClient {
    /// The settings of a client of the broker at `endpoint`;
    /// [`MajordomoClientBuilder::connect`] makes it.
    pub fn builder(endpoint: &str) -> MajordomoClientBuilder {
        MajordomoClientBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            retry: Retry::default(),
            shutdown: None,
        }
    }

    /// A client of the broker at `endpoint` with the default settings (its own context,
    /// [`Retry::default`]).
    pub fn connect(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).connect()
    }

    /// Attempts retried so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Sends `body` (one frame) to `service` and returns the reply's frames joined.
    pub fn request(&mut self, service: &str, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.request_frames(service, vec![body]).map(|f| f.concat())
    }

    /// Sends `payload` to `service` and returns the reply's payload frames. Fails with
    /// [`ClientError::GaveUp`] when every attempt timed out and with
    /// [`ClientError::Remote`] when the worker's handler failed.
    pub fn request_frames(&mut self, service: &str, payload: Frames) -> Result<Frames, Error> {
        let id = self
            .driver
            .core
            .send(io::now(), service.as_bytes(), io::envelope(payload))?;
        let peer = format!("{} (service {service})", self.endpoint);
        tracing::debug!(%id, endpoint = %peer, "request sent");
        let retries = &mut self.retries;
        let outcome = self.driver.run(None, None, |d, input| match input {
            Input::Event(Event::Reply {
                attempt, answer, ..
            }) => Flow::Break(answer_to_result(answer, id, attempt, &peer)),
            Input::Event(Event::GaveUp {
                attempts, payload, ..
            }) => Flow::Break(Err(ClientError::GaveUp {
                attempts,
                endpoint: peer.clone(),
                body: payload.concat(),
            }
            .into())),
            Input::Event(e) => {
                if matches!(e, Event::Retrying { .. }) {
                    *retries += 1;
                }
                log_event(&e);
                Flow::Continue
            }
            Input::Wake => Flow::Continue,
            Input::Stop => {
                d.core.abandon();
                if let Err(e) = d.sockets.apply(Op::Reset(0)) {
                    return Flow::Break(Err(e));
                }
                Flow::Break(Err(ClientError::Interrupted.into()))
            }
        })?;
        outcome.unwrap_or(Err(ClientError::Interrupted.into()))
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
        /// The attempt that was answered, from 1.
        attempt: u32,
        /// The reply's payload frames joined.
        body: Vec<u8>,
    },
    /// The worker's handler failed, or the broker refused the request unhandled.
    Failed {
        /// The request id.
        id: Uuid,
        /// [`Status::Error`]: the handler failed; [`Status::Refused`]: the broker
        /// refused it (a full queue), so it never ran and may be sent again later.
        status: Status,
        /// The worker's or broker's message.
        message: String,
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

/// Settings of an [`AsyncMajordomoClient`], from [`AsyncMajordomoClient::builder`];
/// [`AsyncMajordomoClientBuilder::connect`] makes the client.
#[derive(Debug, Clone)]
pub struct AsyncMajordomoClientBuilder {
    endpoint: String,
    transport: Option<Transport>,
    retry: Retry,
}

impl AsyncMajordomoClientBuilder {
    /// Uses `ctx` instead of a context of its own (the default).
    pub fn context(self, ctx: &zmq::Context) -> Self {
        self.transport(&Transport::with_context(ctx))
    }

    /// Makes its sockets with `transport` (and its context). Default: a transport of its
    /// own, [`Transport::default`].
    pub fn transport(mut self, transport: &Transport) -> Self {
        self.transport = Some(transport.clone());
        self
    }

    /// Sets the per-request retry policy (default [`Retry::default`]: 2.5 s per
    /// attempt, 3 attempts).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Checks the retry policy, makes the DEALER socket and connects it.
    pub fn connect(self) -> Result<AsyncMajordomoClient, Error> {
        let transport = self.transport.unwrap_or_default();
        Ok(AsyncMajordomoClient {
            driver: driver(&transport, &self.endpoint, Mode::Pipelined, self.retry)?,
            undelivered: 0,
            duplicates: 0,
            retries: 0,
        })
    }
}

/// A Majordomo client that keeps many requests in flight; each is retried on its own
/// timer, and a late reply to a retried request is dropped, never delivered twice.
/// [`AsyncMajordomoClient::recv`] waits with a timeout, so the caller's loop sees its
/// own shutdown flag; it has none of its own.
pub struct AsyncMajordomoClient {
    driver: Driver<MdpClient>,
    /// Requests sent whose outcome has not been returned by `recv` yet (the core may
    /// hold several finished ones as queued events).
    undelivered: usize,
    duplicates: u64,
    retries: u64,
}

impl AsyncMajordomoClient {
    /// The settings of a client of the broker at `endpoint`;
    /// [`AsyncMajordomoClientBuilder::connect`] makes it.
    pub fn builder(endpoint: &str) -> AsyncMajordomoClientBuilder {
        AsyncMajordomoClientBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            retry: Retry::default(),
        }
    }

    /// A client of the broker at `endpoint` with the default settings (its own context,
    /// [`Retry::default`]).
    pub fn connect(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).connect()
    }

    /// Sends `body` to `service` without waiting; returns the request id.
    pub fn send(&mut self, service: &str, body: Vec<u8>) -> Result<Uuid, Error> {
        self.send_frames(service, vec![body])
    }

    /// Sends `payload` to `service` without waiting; returns the request id.
    pub fn send_frames(&mut self, service: &str, payload: Frames) -> Result<Uuid, Error> {
        let id = self
            .driver
            .core
            .send(io::now(), service.as_bytes(), io::envelope(payload))?;
        tracing::debug!(%id, service, "request sent");
        self.undelivered += 1;
        self.driver.flush()?;
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
        self.retries
    }

    /// Waits up to `timeout` for the next outcome; `None` when none came in time or
    /// nothing is outstanding.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Outcome>, Error> {
        if self.undelivered == 0 {
            return Ok(None);
        }
        let deadline = io::now() + timeout;
        let (duplicates, retries) = (&mut self.duplicates, &mut self.retries);
        let outcome = self
            .driver
            .run(Some(deadline), None, |_, input| match input {
                Input::Event(Event::Reply {
                    id,
                    attempt,
                    answer,
                    ..
                }) => {
                    tracing::debug!(%id, attempt, "reply");
                    Flow::Break(match answer {
                        Answer::Ok(frames) => Outcome::Reply {
                            id,
                            attempt,
                            body: frames.concat(),
                        },
                        Answer::Failed { status, message } => Outcome::Failed {
                            id,
                            status,
                            message,
                        },
                    })
                }
                Input::Event(Event::GaveUp {
                    id,
                    attempts,
                    payload,
                }) => Flow::Break(Outcome::GaveUp {
                    id,
                    attempts,
                    body: payload.concat(),
                }),
                Input::Event(e) => {
                    match &e {
                        Event::Duplicate { .. } => *duplicates += 1,
                        Event::Retrying { .. } => *retries += 1,
                        _ => {}
                    }
                    log_event(&e);
                    Flow::Continue
                }
                // The caller holds the shutdown flag; this client has none of its own.
                Input::Wake | Input::Stop => Flow::Continue,
            })?;
        if outcome.is_some() {
            self.undelivered = self.undelivered.saturating_sub(1);
        }
        Ok(outcome)
    }
}
