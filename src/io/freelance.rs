//! Drivers of Freelance (10/FLP): [`FreelanceClient`] (a ROUTER connected to every
//! server, which names each connection by the endpoint it connected to) and
//! [`FreelanceServer`] (a ROUTER whose identity is its endpoint, for the Guide's
//! clients, which address a server by the identity it announces).

use std::time::Instant;

use uuid::Uuid;

use crate::error::{ClientError, Error, TransportError};
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::handler::Handler;
use crate::io::lazy_pirate::{answer_to_result, open_outbox};
use crate::io::outbox::{self, ClientCore, OutboxConfig, Report, Stored};
use crate::io::receiver::{self, ReceiverOptions};
use crate::io::server::{serve, Stopped};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::envelope::Envelope;
use crate::proto::frames::Frames;
use crate::proto::freelance::{Event, Freelance, FreelanceConfig};
use crate::proto::server::{self as core, Dialect, Faults};
use crate::store::{OutboxRecord, Store};

impl Core for Freelance {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        self.handle_frames(now, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Freelance::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|f| Op::Send(0, f))
    }
    fn poll_event(&mut self) -> Option<Event> {
        Freelance::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Freelance::poll_timeout(self)
    }
}

impl ClientCore for Freelance {
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
            _ => None,
        }
    }
}

/// Settings of a [`FreelanceClient`], from [`FreelanceClient::builder`];
/// [`FreelanceClientBuilder::connect`] makes the client.
#[derive(Debug, Clone)]
pub struct FreelanceClientBuilder {
    endpoints: Vec<String>,
    transport: Option<Transport>,
    config: FreelanceConfig,
    shutdown: Option<Shutdown>,
    outbox: Option<(Store, OutboxConfig)>,
}

impl FreelanceClientBuilder {
    crate::io::builder_setters!(transport, shutdown, outbox);

    /// Sets the timeouts, attempts and pings (default [`FreelanceConfig::default`]).
    pub fn config(mut self, config: FreelanceConfig) -> Self {
        self.config = config;
        self
    }

    /// Checks the settings and the endpoints, opens the outbox if one was given, makes
    /// the ROUTER socket, connects it to every server and pings them.
    pub fn connect(self) -> Result<FreelanceClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let core = Freelance::new(io::now(), &self.endpoints, self.config, fastrand::u64(..))?;
        let outbox = open_outbox(self.outbox, false)?;
        let sockets = Sockets::connecting(&transport, zmq::ROUTER, &self.endpoints, true)?;
        let mut driver = Driver::new(
            Stored::new(core, outbox, &self.endpoints.join(",")),
            sockets,
            &self.shutdown.unwrap_or_default(),
        );
        driver.flush()?;
        Ok(FreelanceClient {
            endpoints: self.endpoints.join(","),
            driver,
            failovers: 0,
        })
    }
}

/// A brokerless client that fails over between servers.
///
/// ```no_run
/// use bosun::io::freelance::FreelanceClient;
/// let mut client = FreelanceClient::connect(&["tcp://127.0.0.1:5601", "tcp://127.0.0.1:5602"])?;
/// let reply = client.request(b"hello".to_vec())?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct FreelanceClient {
    endpoints: String,
    driver: Driver<Stored<Freelance>>,
    failovers: u64,
}

impl FreelanceClient {
    /// The settings of a client of the Freelance servers at `endpoints`;
    /// [`FreelanceClientBuilder::connect`] makes it.
    pub fn builder<S: AsRef<str>>(endpoints: &[S]) -> FreelanceClientBuilder {
        FreelanceClientBuilder {
            endpoints: endpoints.iter().map(|e| e.as_ref().to_string()).collect(),
            transport: None,
            config: FreelanceConfig::default(),
            shutdown: None,
            outbox: None,
        }
    }

    /// A client of the servers at `endpoints` with the default settings (its own
    /// context, [`FreelanceConfig::default`]).
    pub fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, Error> {
        Self::builder(endpoints).connect()
    }

    /// Times a server was found down (by ping silence or a timed-out attempt).
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Sends `body` as one frame and returns the reply's frames joined.
    pub fn request(&mut self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.request_frames(vec![body]).map(|f| f.concat())
    }

    /// Sends `payload` to a server that is up and returns the reply's payload frames,
    /// failing over to another server when one dies. With an outbox, the request is
    /// kept there until it is answered (see [`LazyPirateClient::request_frames`]).
    ///
    /// [`LazyPirateClient::request_frames`]: crate::LazyPirateClient::request_frames
    pub fn request_frames(&mut self, payload: Frames) -> Result<Frames, Error> {
        // Time passed with no request out, and with it no pings: let the core see it
        // before choosing a server, so that one silent for longer than its TTL is down
        // (and pinged again) instead of being handed the request and a whole attempt.
        self.driver.core.core_mut().handle_timeout(io::now());
        let id = self
            .driver
            .core
            .submit(io::now(), None, io::envelope(payload))?;
        self.wait(id)
    }

    /// Sends a stored request again, with its original id and creation time (its
    /// attempt continuing from the record's count); see
    /// [`FreelanceClient::request_frames`].
    pub fn resend(&mut self, record: &OutboxRecord) -> Result<Frames, Error> {
        self.driver.core.core_mut().handle_timeout(io::now());
        let id = self.driver.core.resume(io::now(), record)?;
        self.wait(id)
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
    pub fn outbox(&self) -> Option<&outbox::SharedOutbox> {
        self.driver.core.outbox()
    }

    fn wait(&mut self, id: Uuid) -> Result<Frames, Error> {
        let endpoints = self.endpoints.clone();
        let failovers = &mut self.failovers;
        let outcome = self.driver.run(None, None, |_, input| {
            let event = match input {
                Input::Event(outbox::Event::Core(e)) => e,
                Input::Event(outbox::Event::Unsent { error, .. }) => {
                    return Flow::Break(Err(error.into()))
                }
                Input::Wake => return Flow::Continue,
                Input::Stop => return Flow::Break(Err(ClientError::Interrupted.into())),
            };
            match event {
                Event::Reply {
                    answer,
                    server,
                    attempt,
                    ..
                } => Flow::Break(answer_to_result(
                    answer,
                    id,
                    attempt,
                    &String::from_utf8_lossy(&server),
                )),
                Event::GaveUp {
                    attempts, payload, ..
                } => Flow::Break(Err(ClientError::GaveUp {
                    attempts,
                    endpoint: endpoints.clone(),
                    body: payload.concat(),
                }
                .into())),
                Event::Retrying { id, attempt, after } => {
                    tracing::debug!(%id, attempt, ?after, "no reply, trying again");
                    Flow::Continue
                }
                Event::ServerUp { server } => {
                    tracing::info!(server = %String::from_utf8_lossy(&server), "server up");
                    Flow::Continue
                }
                Event::ServerDown { server } => {
                    *failovers += 1;
                    tracing::warn!(server = %String::from_utf8_lossy(&server), "server down");
                    Flow::Continue
                }
                Event::Duplicate { id } => {
                    tracing::debug!(?id, "duplicate reply dropped");
                    Flow::Continue
                }
                Event::UnknownServer { identity } => {
                    // The client's ROUTER names every connection it made by its endpoint,
                    // so this is a peer on no connection of ours: nothing to match it to.
                    tracing::warn!(
                        identity = %String::from_utf8_lossy(&identity),
                        connected = %endpoints,
                        "a message came from a peer that is none of the servers this client connected to; dropped"
                    );
                    Flow::Continue
                }
                Event::Malformed { server, error } => {
                    tracing::warn!(server = %String::from_utf8_lossy(&server), %error, "malformed message dropped");
                    Flow::Continue
                }
            }
        })?;
        outcome.unwrap_or(Err(ClientError::Interrupted.into()))
    }
}

/// Settings of a [`FreelanceServer`], from [`FreelanceServer::builder`];
/// [`FreelanceServerBuilder::bind`] makes the server.
#[derive(Debug, Clone)]
pub struct FreelanceServerBuilder {
    endpoint: String,
    transport: Option<Transport>,
    receiver: ReceiverOptions,
}

impl FreelanceServerBuilder {
    crate::io::builder_setters!(transport);

    /// Sets duplicate suppression, re-runs, dead letters and their store (default:
    /// none of them; see [`ReceiverOptions`]).
    pub fn receiver(mut self, options: ReceiverOptions) -> Self {
        self.receiver = options;
        self
    }

    /// Checks the receiver options, makes the ROUTER socket, with the endpoint as its
    /// identity, and binds it. A `*` port is resolved to a free port first (the identity
    /// must be known before the bind).
    pub fn bind(self) -> Result<FreelanceServer, Error> {
        self.receiver.validate()?;
        let transport = self.transport.unwrap_or_default();
        let endpoint = resolve_port(&self.endpoint)?;
        let socket = transport.socket(zmq::ROUTER)?;
        socket
            .set_identity(endpoint.as_bytes())
            .map_err(|e| TransportError::zmq("set identity", &endpoint, e))?;
        let sockets = Sockets::bound_socket(&transport, zmq::ROUTER, socket, &endpoint)?;
        Ok(FreelanceServer {
            sockets,
            receiver: self.receiver,
        })
    }
}

/// A Freelance server: answers PING with PONG and each request with the handler. It
/// speaks only when spoken to (10/FLP): nothing reaches a client before it sends.
///
/// Its endpoint is also its identity. A bosun client does not need it: it knows each
/// server by the connection it made (so `tcp://localhost:P` reaches a server bound to
/// `tcp://127.0.0.1:P` or `tcp://*:P`); a client written after the Guide's flclient3
/// addresses the server by this identity, and must connect to exactly this text.
///
/// ```no_run
/// use bosun::io::freelance::FreelanceServer;
/// let shutdown = bosun::Shutdown::new();
/// FreelanceServer::bind("tcp://127.0.0.1:5601")?.run(bosun::io::handler::echo(), &shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct FreelanceServer {
    sockets: Sockets,
    receiver: ReceiverOptions,
}

impl FreelanceServer {
    /// The settings of a server bound at `endpoint` (also its identity; see the
    /// [type docs](FreelanceServer)); [`FreelanceServerBuilder::bind`] makes it.
    pub fn builder(endpoint: &str) -> FreelanceServerBuilder {
        FreelanceServerBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            receiver: ReceiverOptions::default(),
        }
    }

    /// A server bound at `endpoint` with the default settings (its own context).
    pub fn bind(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).bind()
    }

    /// The endpoint (and identity) of this server.
    pub fn endpoint(&self) -> String {
        self.sockets.endpoint(0)
    }

    /// Serves until `shutdown` is triggered. With a store, first loads the duplicate
    /// window and logs what it recovered.
    pub fn run(self, handler: Handler, shutdown: &Shutdown) -> Result<(), Error> {
        let (policy, hook) = receiver::open(&self.receiver, io::unix_ms())?;
        let mut core = core::Server::new(Dialect::Freelance, Faults::default());
        core.set_policy(policy)?;
        let stopped = serve(Driver::new(core, self.sockets, shutdown), &handler, hook)?;
        debug_assert_eq!(stopped, Stopped::Shutdown);
        Ok(())
    }
}

/// `tcp://HOST:*` becomes `tcp://HOST:PORT` with a port that was free a moment ago
/// (the identity must be known before binding); anything else is returned as it is.
fn resolve_port(endpoint: &str) -> Result<String, Error> {
    let Some(host) = endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.strip_suffix(":*"))
    else {
        return Ok(endpoint.to_string());
    };
    // `*` is every interface: a port free on all of them.
    let probe = if host == "*" { "0.0.0.0" } else { host };
    let listener = std::net::TcpListener::bind((probe, 0))
        .map_err(|e| Error::io(format!("find a free port on {host}"), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read the free port", e))?
        .port();
    Ok(format!("tcp://{host}:{port}"))
}
