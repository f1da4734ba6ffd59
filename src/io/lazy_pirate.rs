//! Driver of the Lazy Pirate client: a REQ socket, re-made for every attempt, and the
//! core, with an optional outbox ([`crate::io::outbox`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use uuid::Uuid;

use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::outbox::{self, ClientCore, ClientOutbox, OutboxConfig, Report, Stored};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::envelope::{Answer, Envelope};
use crate::proto::frames::Frames;
use crate::proto::lazy_pirate::{Discard, Event, LazyPirate, Transmit};
use crate::store::{OutboxRecord, Store};

impl Core for LazyPirate {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        self.handle_reply(now, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        LazyPirate::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            Transmit::Send(f) => Op::Send(0, f),
            Transmit::Reset => Op::Reset(0),
        })
    }
    fn poll_event(&mut self) -> Option<Event> {
        LazyPirate::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        LazyPirate::poll_timeout(self)
    }
}

impl ClientCore for LazyPirate {
    fn start(
        &mut self,
        now: Instant,
        _service: Option<&[u8]>,
        envelope: Envelope,
    ) -> Result<Uuid, ClientError> {
        self.send(now, envelope)
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
            Event::Discarded(_) => None,
        }
    }
}

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

/// Settings of a [`LazyPirateClient`], from [`LazyPirateClient::builder`];
/// [`LazyPirateClientBuilder::connect`] makes the client.
#[derive(Debug, Clone)]
pub struct LazyPirateClientBuilder {
    endpoint: String,
    transport: Option<Transport>,
    retry: Retry,
    shutdown: Option<Shutdown>,
    outbox: Option<(Store, OutboxConfig)>,
}

impl LazyPirateClientBuilder {
    crate::io::builder_setters!(transport, retry, shutdown, outbox);

    /// Checks the retry policy (and the outbox settings), opens the outbox, makes the
    /// REQ socket and connects it.
    pub fn connect(self) -> Result<LazyPirateClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let core = LazyPirate::new(io::now(), self.retry, fastrand::u64(..))?;
        let outbox = open_outbox(self.outbox, false)?;
        let sockets = Sockets::connecting(
            &transport,
            zmq::REQ,
            std::slice::from_ref(&self.endpoint),
            true,
        )?;
        let shutdown = self.shutdown.unwrap_or_default();
        Ok(LazyPirateClient {
            driver: Driver::new(
                Stored::new(core, outbox, &self.endpoint),
                sockets,
                &shutdown,
            ),
            endpoint: self.endpoint,
            stats: ClientStats::default(),
        })
    }
}

/// Opens the outbox a builder was given, if any.
pub(crate) fn open_outbox(
    outbox: Option<(Store, OutboxConfig)>,
    majordomo: bool,
) -> Result<Option<outbox::SharedOutbox>, Error> {
    let Some((store, config)) = outbox else {
        return Ok(None);
    };
    let opened = ClientOutbox::open(&store, config)?;
    check_kind(&opened, majordomo)?;
    Ok(Some(Arc::new(Mutex::new(opened))))
}

/// Refuses an outbox whose pending requests another kind of client made: a Majordomo
/// request (it has a service) cannot be delivered by a client that sends without one,
/// nor the other way round, and re-sending it would lose it (a broker refuses an empty
/// service; a plain server would answer a request meant for a service).
fn check_kind(outbox: &ClientOutbox, majordomo: bool) -> Result<(), Error> {
    let pending = outbox.pending()?;
    let other: Vec<&OutboxRecord> = pending
        .iter()
        .filter(|r| r.service.is_some() != majordomo)
        .collect();
    let Some(first) = other.first() else {
        return Ok(());
    };
    let place = outbox.path().map_or_else(
        || "the outbox".to_string(),
        |p| format!("data dir {}", p.display()),
    );
    let (what, this) = match &first.service {
        Some(service) => (
            format!(
                "for a Majordomo service (the first for {:?})",
                String::from_utf8_lossy(service)
            ),
            "this client sends without a service (Lazy Pirate or Freelance)",
        ),
        None => (
            "made without a service (by a Lazy Pirate or Freelance client)".to_string(),
            "this is a Majordomo client",
        ),
    };
    Err(ClientError::OutboxOfAnotherKind {
        place,
        count: other.len(),
        what,
        this: this.to_string(),
    }
    .into())
}

/// A Lazy Pirate client: one request at a time, retried on a fresh socket until it is
/// answered or `retries` attempts have timed out.
///
/// ```no_run
/// use bosun::{LazyPirateClient, Retry};
/// let mut client = LazyPirateClient::builder("tcp://127.0.0.1:5555")
///     .retry(Retry::default())
///     .connect()?;
/// let reply = client.request(b"hello".to_vec())?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct LazyPirateClient {
    endpoint: String,
    driver: Driver<Stored<LazyPirate>>,
    stats: ClientStats,
}

impl LazyPirateClient {
    /// The settings of a client of the REQ/REP server (or Paranoid Pirate queue
    /// frontend) at `endpoint`; [`LazyPirateClientBuilder::connect`] makes it.
    pub fn builder(endpoint: &str) -> LazyPirateClientBuilder {
        LazyPirateClientBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            retry: Retry::default(),
            shutdown: None,
            outbox: None,
        }
    }

    /// A client of the server at `endpoint` with the default settings (its own context,
    /// [`Retry::default`]).
    pub fn connect(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).connect()
    }

    /// What this client has done so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The server endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends `body` as one frame and returns the reply's frames joined.
    pub fn request(&mut self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.request_frames(vec![body]).map(|f| f.concat())
    }

    /// Sends `payload` and returns the reply's payload frames, retrying as the [`Retry`]
    /// policy says. Fails with [`ClientError::GaveUp`] (carrying the payload back) when
    /// every attempt timed out, and with [`ClientError::Remote`] when the server's
    /// handler failed. With an outbox, the request is stored before it is sent (a full
    /// outbox: [`ClientError::OutboxFull`], nothing sent), removed when answered, and
    /// moved to the dead letters on a give-up; interrupted, it stays pending.
    pub fn request_frames(&mut self, payload: Frames) -> Result<Frames, Error> {
        let id = self
            .driver
            .core
            .submit(io::now(), None, io::envelope(payload))?;
        self.wait(id)
    }

    /// Sends a stored request again, with its original id and creation time (its
    /// attempt continuing from the record's count), and returns its reply's payload
    /// frames, as [`LazyPirateClient::request_frames`] does. For requests recovered from
    /// the outbox ([`LazyPirateClient::pending`]) and dead letters replayed.
    pub fn resend(&mut self, record: &OutboxRecord) -> Result<Frames, Error> {
        let id = self.driver.core.resume(io::now(), record)?;
        self.wait(id)
    }

    /// The requests pending in the outbox (sent before a crash or an interruption and
    /// never answered), in the order they were made; empty without an outbox.
    pub fn pending(&self) -> Result<Vec<OutboxRecord>, Error> {
        Ok(self.driver.core.pending()?)
    }

    /// Re-sends every pending request of the outbox, one at a time and in order, with
    /// its original id ([`LazyPirateClient::resend`]), and returns each id with its
    /// outcome. Stops after the first that gets no reply at all or is interrupted: the
    /// rest stay pending (a give-up is dead-lettered). Logs `recovered: N pending
    /// re-sent, K dead letters` at info level. Call it before new requests.
    pub fn recover(&mut self) -> Result<outbox::Resent, Error> {
        let pending = self.pending()?;
        if let Some(outbox) = self.driver.core.lock_outbox() {
            outbox::log_recovery(&outbox, pending.len());
        }
        Ok(outbox::recover_each(pending, |r| self.resend(r)))
    }

    /// The client's outbox, if it has one.
    pub fn outbox(&self) -> Option<&outbox::SharedOutbox> {
        self.driver.core.outbox()
    }

    fn wait(&mut self, id: Uuid) -> Result<Frames, Error> {
        self.stats.requests += 1;
        let endpoint = self.endpoint.clone();
        let stats = &mut self.stats;
        let outcome = self.driver.run(None, None, |d, input| match input {
            Input::Event(outbox::Event::Unsent { error, .. }) => Flow::Break(Err(error.into())),
            Input::Event(outbox::Event::Core(Event::Reply {
                attempt, answer, ..
            })) => {
                stats.answered += 1;
                Flow::Break(answer_to_result(answer, id, attempt, &endpoint))
            }
            Input::Event(outbox::Event::Core(Event::GaveUp {
                attempts, payload, ..
            })) => Flow::Break(Err(ClientError::GaveUp {
                attempts,
                endpoint: endpoint.clone(),
                body: payload.concat(),
            }
            .into())),
            Input::Event(outbox::Event::Core(Event::Retrying { id, attempt, after })) => {
                stats.retries += 1;
                tracing::warn!(%id, attempt, endpoint = %endpoint, ?after, "no reply, retrying");
                Flow::Continue
            }
            Input::Event(outbox::Event::Core(Event::Discarded(why))) => {
                stats.discarded += 1;
                match why {
                    Discard::Malformed(e) => tracing::warn!(error = %e, "reply dropped"),
                    other => tracing::debug!(?other, "reply discarded"),
                }
                Flow::Continue
            }
            Input::Wake => Flow::Continue,
            Input::Stop => {
                // A REQ socket mid-exchange is of use to nobody: start over. The request
                // stays pending in the outbox, if there is one.
                match LazyPirate::new(io::now(), *d.core.core().retry(), fastrand::u64(..)) {
                    Ok(fresh) => d.core.replace_core(fresh),
                    Err(e) => return Flow::Break(Err(e.into())),
                }
                if let Err(e) = d.sockets.apply(Op::Reset(0)) {
                    return Flow::Break(Err(e));
                }
                Flow::Break(Err(ClientError::Interrupted.into()))
            }
        })?;
        outcome.unwrap_or(Err(ClientError::Interrupted.into()))
    }
}

/// A reply's answer as a client returns it.
/// Also logs the reply at debug level: with `-vv`, a client shows every request's
/// outcome (its send is logged where it is made).
pub(crate) fn answer_to_result(
    answer: Answer,
    id: uuid::Uuid,
    attempt: u32,
    peer: &str,
) -> Result<Frames, Error> {
    match &answer {
        Answer::Ok(_) => tracing::debug!(%id, attempt, peer, "reply"),
        Answer::Failed { status, .. } => {
            tracing::debug!(%id, attempt, peer, ?status, "failure reply")
        }
    }
    match answer {
        Answer::Ok(frames) => Ok(frames),
        Answer::Failed { status, message } => Err(ClientError::Remote {
            id,
            peer: peer.to_string(),
            status,
            message,
        }
        .into()),
    }
}
