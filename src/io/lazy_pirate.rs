//! Driver of the Lazy Pirate client: a REQ socket, re-made for every attempt, and the
//! core.

use std::time::Instant;

use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::envelope::Answer;
use crate::proto::frames::Frames;
use crate::proto::lazy_pirate::{Discard, Event, LazyPirate, Transmit};

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
}

impl LazyPirateClientBuilder {
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

    /// Makes [`LazyPirateClient::request`] return [`ClientError::Interrupted`] soon
    /// after `shutdown` is triggered (default: no flag; a request ends only in a reply or
    /// a give-up).
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// Checks the retry policy, makes the REQ socket and connects it.
    pub fn connect(self) -> Result<LazyPirateClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let core = LazyPirate::new(io::now(), self.retry, fastrand::u64(..))?;
        let sockets = Sockets::connecting(
            &transport,
            zmq::REQ,
            std::slice::from_ref(&self.endpoint),
            true,
        )?;
        let shutdown = self.shutdown.unwrap_or_default();
        Ok(LazyPirateClient {
            endpoint: self.endpoint,
            driver: Driver::new(core, sockets, &shutdown),
            stats: ClientStats::default(),
        })
    }
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
    driver: Driver<LazyPirate>,
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
    /// handler failed.
    pub fn request_frames(&mut self, payload: Frames) -> Result<Frames, Error> {
        let id = self.driver.core.send(io::now(), io::envelope(payload))?;
        self.stats.requests += 1;
        let endpoint = self.endpoint.clone();
        tracing::debug!(%id, endpoint = %endpoint, "request sent");
        let stats = &mut self.stats;
        let outcome = self.driver.run(None, None, |d, input| match input {
            Input::Event(Event::Reply {
                attempt, answer, ..
            }) => {
                stats.answered += 1;
                Flow::Break(answer_to_result(answer, id, attempt, &endpoint))
            }
            Input::Event(Event::GaveUp {
                attempts, payload, ..
            }) => Flow::Break(Err(ClientError::GaveUp {
                attempts,
                endpoint: endpoint.clone(),
                body: payload.concat(),
            }
            .into())),
            Input::Event(Event::Retrying { id, attempt, after }) => {
                stats.retries += 1;
                tracing::warn!(%id, attempt, endpoint = %endpoint, ?after, "no reply, retrying");
                Flow::Continue
            }
            Input::Event(Event::Discarded(why)) => {
                stats.discarded += 1;
                match why {
                    Discard::Malformed(e) => tracing::warn!(error = %e, "reply dropped"),
                    other => tracing::debug!(?other, "reply discarded"),
                }
                Flow::Continue
            }
            Input::Wake => Flow::Continue,
            Input::Stop => {
                // A REQ socket mid-exchange is of use to nobody: start over.
                match LazyPirate::new(io::now(), *d.core.retry(), fastrand::u64(..)) {
                    Ok(fresh) => d.core = fresh,
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
