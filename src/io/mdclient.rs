//! Drivers of the Majordomo clients, both over the one 7/MDP client core
//! ([`MdpClient`]): [`MajordomoClient`] (one request at a time, a fresh socket for every
//! attempt) and [`AsyncMajordomoClient`] (many in flight over one DEALER, replies
//! matched by id).

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::lazy_pirate::{answer_to_result, open_outbox};
use crate::io::outbox::{self, ClientCore, OutboxConfig, Report, SharedOutbox, Stored};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::client::{Event, MdpClient, Mode, Transmit};
use crate::proto::envelope::{Answer, Envelope, Status};
use crate::proto::frames::Frames;
use crate::store::{OutboxRecord, Store};

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

impl ClientCore for MdpClient {
    fn start(
        &mut self,
        now: Instant,
        service: Option<&[u8]>,
        envelope: Envelope,
    ) -> Result<Uuid, ClientError> {
        self.send(now, service.unwrap_or_default(), envelope)
    }

    fn report(event: &Event) -> Option<Report> {
        match *event {
            Event::Reply {
                id,
                ref answer,
                attempt,
                ..
            } => Some(outbox::answered(id, attempt, answer)),
            Event::Retrying { id, attempt, .. } => Some(Report::Retrying { id, attempt }),
            Event::GaveUp { id, attempts, .. } => Some(Report::GaveUp { id, attempts }),
            Event::Duplicate { .. } | Event::Unmatched { .. } | Event::Malformed(_) => None,
        }
    }
}

fn driver(
    transport: &Transport,
    endpoint: &str,
    mode: Mode,
    retry: Retry,
    outbox: Option<SharedOutbox>,
) -> Result<Driver<Stored<MdpClient>>, Error> {
    let core = MdpClient::new(io::now(), mode, retry, fastrand::u64(..))?;
    let sockets = Sockets::connecting(transport, zmq::DEALER, &[endpoint.to_string()], true)?;
    Ok(Driver::new(
        Stored::new(core, outbox, endpoint),
        sockets,
        &Shutdown::new(),
    ))
}

/// Logs what the application does not see: retries, duplicates, unmatched and
/// malformed replies.
pub(crate) fn log_event(event: &Event) {
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
    outbox: Option<(Store, OutboxConfig)>,
}

impl MajordomoClientBuilder {
    crate::io::builder_setters!(transport, retry, shutdown, outbox);

    /// Checks the retry policy, opens the outbox if one was given, makes the DEALER
    /// socket and connects it.
    pub fn connect(self) -> Result<MajordomoClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let outbox = open_outbox(self.outbox, true)?;
        let mut driver = driver(
            &transport,
            &self.endpoint,
            Mode::Blocking,
            self.retry,
            outbox,
        )?;
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
    driver: Driver<Stored<MdpClient>>,
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
            outbox: None,
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
    /// [`ClientError::Remote`] when the worker's handler failed. With an outbox, the
    /// request is kept there until it is answered (see
    /// [`LazyPirateClient::request_frames`](crate::LazyPirateClient::request_frames)).
    pub fn request_frames(&mut self, service: &str, payload: Frames) -> Result<Frames, Error> {
        let id =
            self.driver
                .core
                .submit(io::now(), Some(service.as_bytes()), io::envelope(payload))?;
        let peer = format!("{} (service {service})", self.endpoint);
        self.wait(id, peer)
    }

    /// Sends a stored request again, to its service, with its original id and creation
    /// time (its attempt continuing from the record's count); see
    /// [`MajordomoClient::request_frames`].
    pub fn resend(&mut self, record: &OutboxRecord) -> Result<Frames, Error> {
        let id = self.driver.core.resume(io::now(), record)?;
        let service = String::from_utf8_lossy(record.service.as_deref().unwrap_or_default());
        let peer = format!("{} (service {service})", self.endpoint);
        self.wait(id, peer)
    }

    /// The requests pending in the outbox, in the order they were made; empty without
    /// an outbox.
    pub fn pending(&self) -> Result<Vec<OutboxRecord>, Error> {
        Ok(self.driver.core.pending()?)
    }

    /// Re-sends every pending request of the outbox, one at a time and in order, with
    /// its original id; stops after the first that gets no reply at all or is
    /// interrupted (the rest stay pending). See
    /// [`LazyPirateClient::recover`](crate::LazyPirateClient::recover).
    pub fn recover(&mut self) -> Result<outbox::Resent, Error> {
        let pending = self.pending()?;
        if let Some(outbox) = self.driver.core.lock_outbox() {
            outbox::log_recovery(&outbox, pending.len());
        }
        Ok(outbox::recover_each(pending, |r| self.resend(r)))
    }

    /// The client's outbox, if it has one.
    pub fn outbox(&self) -> Option<&SharedOutbox> {
        self.driver.core.outbox()
    }

    fn wait(&mut self, id: Uuid, peer: String) -> Result<Frames, Error> {
        let retries = &mut self.retries;
        let outcome = self.driver.run(None, None, |d, input| match input {
            Input::Event(outbox::Event::Unsent { error, .. }) => Flow::Break(Err(error.into())),
            Input::Event(outbox::Event::Core(Event::Reply {
                attempt, answer, ..
            })) => Flow::Break(answer_to_result(answer, id, attempt, &peer)),
            Input::Event(outbox::Event::Core(Event::GaveUp {
                attempts, payload, ..
            })) => Flow::Break(Err(ClientError::GaveUp {
                attempts,
                endpoint: peer.clone(),
                body: payload.concat(),
            }
            .into())),
            Input::Event(outbox::Event::Core(e)) => {
                if matches!(e, Event::Retrying { .. }) {
                    *retries += 1;
                }
                log_event(&e);
                Flow::Continue
            }
            Input::Wake => Flow::Continue,
            Input::Stop => {
                // The request stays pending in the outbox, if there is one.
                d.core.core_mut().abandon();
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
    /// The outbox could not make the request durable (`batched`: its commit failed),
    /// so it was never sent and is not pending.
    Unsent {
        /// The request id.
        id: Uuid,
        /// Why, in words.
        message: String,
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
    outbox: Option<(Store, OutboxConfig)>,
}

impl AsyncMajordomoClientBuilder {
    crate::io::builder_setters!(transport, retry, outbox);

    /// Checks the retry policy, opens the outbox if one was given, makes the DEALER
    /// socket and connects it.
    pub fn connect(self) -> Result<AsyncMajordomoClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let outbox = open_outbox(self.outbox, true)?;
        Ok(AsyncMajordomoClient {
            driver: driver(
                &transport,
                &self.endpoint,
                Mode::Pipelined,
                self.retry,
                outbox,
            )?,
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
    driver: Driver<Stored<MdpClient>>,
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
            outbox: None,
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

    /// Sends `payload` to `service` without waiting; returns the request id. With an
    /// outbox the request is stored first: with `every` it is on disk when this
    /// returns; with `batched` it goes out, confirmed with the others sent since, at
    /// the start of the next [`AsyncMajordomoClient::recv`] (or
    /// [`AsyncMajordomoClient::flush`]). A full outbox fails with
    /// [`ClientError::OutboxFull`], nothing stored or sent: take replies with `recv`
    /// first.
    pub fn send_frames(&mut self, service: &str, payload: Frames) -> Result<Uuid, Error> {
        let id =
            self.driver
                .core
                .submit(io::now(), Some(service.as_bytes()), io::envelope(payload))?;
        self.sent(id)
    }

    /// Sends a stored request again, to its service, with its original id and creation
    /// time (its attempt continuing from the record's count); its outcome comes out of
    /// [`AsyncMajordomoClient::recv`]. A request already in flight is not sent twice
    /// ([`ClientError::Busy`]).
    pub fn resend(&mut self, record: &OutboxRecord) -> Result<Uuid, Error> {
        if self.driver.core.core().is_outstanding(record.id) {
            return Err(ClientError::Busy.into());
        }
        let id = self.driver.core.resume(io::now(), record)?;
        self.sent(id)
    }

    /// The requests pending in the outbox, in the order they were made; empty without
    /// an outbox.
    pub fn pending(&self) -> Result<Vec<OutboxRecord>, Error> {
        Ok(self.driver.core.pending()?)
    }

    /// Re-sends every pending request of the outbox that is not in flight, all at once,
    /// with its original id ([`AsyncMajordomoClient::resend`]); their outcomes come out
    /// of [`AsyncMajordomoClient::recv`] like any other. Returns their ids, in the order
    /// they were made. Logs `recovered: N pending re-sent, K dead letters` at info
    /// level. Call it before new requests.
    pub fn recover(&mut self) -> Result<Vec<Uuid>, Error> {
        let pending = self.pending()?;
        if let Some(outbox) = self.driver.core.lock_outbox() {
            outbox::log_recovery(&outbox, pending.len());
        }
        let mut ids = Vec::with_capacity(pending.len());
        for record in &pending {
            if !self.driver.core.core().is_outstanding(record.id) {
                ids.push(self.resend(record)?);
            }
        }
        Ok(ids)
    }

    /// The client's outbox, if it has one.
    pub fn outbox(&self) -> Option<&SharedOutbox> {
        self.driver.core.outbox()
    }

    /// Sends what is waiting for the outbox's next commit (`batched`) now, instead of
    /// at the next [`AsyncMajordomoClient::recv`].
    pub fn flush(&mut self) -> Result<(), Error> {
        self.driver.core.commit_now();
        self.driver.flush()
    }

    fn sent(&mut self, id: Uuid) -> Result<Uuid, Error> {
        self.undelivered += 1;
        // With `batched`, leave what is staged for the next turn: many requests, one
        // flush.
        if self.driver.core.staged() == 0 {
            self.driver.flush()?;
        }
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
                Input::Event(outbox::Event::Unsent { id, error }) => {
                    let message = error.to_string();
                    Flow::Break(match error {
                        ClientError::OutboxFull { body, .. }
                        | ClientError::NotStored { body, .. } => {
                            Outcome::Unsent { id, message, body }
                        }
                        _ => Outcome::Unsent {
                            id,
                            message,
                            body: Vec::new(),
                        },
                    })
                }
                Input::Event(outbox::Event::Core(Event::Reply {
                    id,
                    attempt,
                    answer,
                    ..
                })) => {
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
                Input::Event(outbox::Event::Core(Event::GaveUp {
                    id,
                    attempts,
                    payload,
                })) => Flow::Break(Outcome::GaveUp {
                    id,
                    attempts,
                    body: payload.concat(),
                }),
                Input::Event(outbox::Event::Core(e)) => {
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
            // The rest of this burst of replies goes to the core now, so that the next
            // calls hand it out without a wait, and the requests sent in between share
            // one commit of the outbox.
            self.driver.take_ready()?;
        }
        Ok(outcome)
    }
}
