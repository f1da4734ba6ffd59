//! Drivers of Freelance (10/FLP): [`FreelanceClient`] (a ROUTER connected to every
//! server) and [`FreelanceServer`] (a ROUTER whose identity is its endpoint).

use std::time::Duration;

use crate::error::{ClientError, Error, TransportError};
use crate::io::handler::{self, Handler};
use crate::io::{self, Shutdown};
use crate::proto::envelope::Envelope;
use crate::proto::freelance::{self, Event, Freelance, FreelanceConfig};

/// A brokerless client that fails over between servers.
pub struct FreelanceClient {
    endpoints: String,
    socket: zmq::Socket,
    core: Freelance,
    shutdown: Shutdown,
    failovers: u64,
}

impl FreelanceClient {
    /// A client of the Freelance servers at `endpoints`.
    pub fn new(
        ctx: &zmq::Context,
        endpoints: &[String],
        cfg: FreelanceConfig,
    ) -> Result<Self, Error> {
        cfg.retry.validate()?;
        if endpoints.is_empty() {
            return Err(crate::error::ConfigError::Invalid {
                field: "--connect",
                reason: "no server endpoint given".into(),
            }
            .into());
        }
        let socket = io::socket(ctx, zmq::ROUTER, Duration::ZERO)?;
        for e in endpoints {
            io::connect(&socket, e)?;
        }
        let mut client = FreelanceClient {
            endpoints: endpoints.join(","),
            socket,
            core: Freelance::new(io::now(), endpoints, cfg, fastrand::u64(..)),
            shutdown: Shutdown::new(),
            failovers: 0,
        };
        client.flush();
        Ok(client)
    }

    /// Makes a pending request return [`ClientError::Interrupted`] once `shutdown` is
    /// triggered.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Times a server was found down (by ping silence or a timed-out attempt).
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Sends `body` to a server that is up and returns the reply, failing over to
    /// another server when one dies.
    pub fn request(&mut self, body: Vec<u8>) -> Result<Vec<u8>, Error> {
        // Time passed with no request out, and with it no pings: let the core see it
        // before choosing a server, so that one silent for longer than its TTL is down
        // (and pinged again) instead of being handed the request and a whole attempt.
        self.core.handle_timeout(io::now());
        self.core.send(io::now(), Envelope::new(body))?;
        loop {
            self.flush();
            while let Some(event) = self.core.poll_event() {
                match event {
                    Event::Reply { body, .. } => return Ok(body),
                    Event::GaveUp { attempts, body, .. } => {
                        return Err(ClientError::GaveUp {
                            attempts,
                            endpoint: self.endpoints.clone(),
                            body,
                        }
                        .into())
                    }
                    Event::ServerUp { server } => {
                        tracing::info!(server = %String::from_utf8_lossy(&server), "server up")
                    }
                    Event::ServerDown { server } => {
                        self.failovers += 1;
                        tracing::warn!(server = %String::from_utf8_lossy(&server), "server down")
                    }
                    Event::Duplicate { id } => tracing::debug!(?id, "duplicate reply dropped"),
                    Event::Malformed { server, error } => {
                        tracing::warn!(server = %String::from_utf8_lossy(&server), %error, "malformed message dropped")
                    }
                }
            }
            if self.shutdown.is_triggered() {
                return Err(ClientError::Interrupted.into());
            }
            let timeout = io::poll_millis(io::now(), self.core.poll_timeout());
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, timeout)?;
            if items[0].is_readable() {
                while let Ok(frames) = io::recv_frames(&self.socket, zmq::DONTWAIT) {
                    self.core.handle_frames(io::now(), frames);
                }
            }
            self.core.handle_timeout(io::now());
        }
    }

    fn flush(&mut self) {
        while let Some(frames) = self.core.poll_transmit() {
            // A server not connected yet is unroutable: the ping round finds it later.
            let _ = io::send_frames(&self.socket, &frames, zmq::DONTWAIT);
        }
    }
}

/// A Freelance server: answers PING with PONG and each request with the handler.
pub struct FreelanceServer {
    socket: zmq::Socket,
    endpoint: String,
}

impl FreelanceServer {
    /// Binds at `endpoint`, which is also the server's identity, so clients must connect
    /// to exactly this text. A `*` port is resolved to a free port first.
    pub fn bind(ctx: &zmq::Context, endpoint: &str) -> Result<Self, Error> {
        let endpoint = resolve_port(endpoint)?;
        let socket = io::socket(ctx, zmq::ROUTER, io::SHUTDOWN_LINGER)?;
        socket
            .set_identity(endpoint.as_bytes())
            .map_err(|e| TransportError::zmq("set identity", &endpoint, e))?;
        // Say hello on every new connection so clients ping at once.
        socket
            .set_probe_router(true)
            .map_err(|e| TransportError::zmq("set probe_router", &endpoint, e))?;
        io::bind(&socket, &endpoint)?;
        Ok(FreelanceServer { socket, endpoint })
    }

    /// The endpoint (and identity) of this server.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Serves until `shutdown` is triggered.
    pub fn run(self, mut handler: Handler, shutdown: &Shutdown) -> Result<(), Error> {
        while !shutdown.is_triggered() {
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, io::poll_millis(io::now(), None))?;
            if !items[0].is_readable() {
                continue;
            }
            while let Ok(frames) = io::recv_frames(&self.socket, zmq::DONTWAIT) {
                let mut handle = |body| handler::answer(&mut handler, body);
                match freelance::serve(frames, &mut handle) {
                    Ok(reply) => io::send_or_log(&self.socket, reply, "client"),
                    Err(e) => tracing::warn!(error = %e, "malformed message dropped"),
                }
            }
        }
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
    let listener = std::net::TcpListener::bind((host, 0))
        .map_err(|e| Error::io(format!("find a free port on {host}"), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("read the free port", e))?
        .port();
    Ok(format!("tcp://{host}:{port}"))
}
