//! A plain REP server for Lazy Pirate clients, with switches that simulate crashes and
//! stalls for demos and tests.

use std::time::Duration;

use crate::error::{Error, TransportError};
use crate::io::handler::{self, Handler};
use crate::io::{self, Shutdown};

/// Fault switches of the server. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop every Nth request unanswered, as a server that crashed and came back would:
    /// the REP socket is closed and bound again.
    pub fail_every: Option<u64>,
    /// Stall every Nth request for `delay` before answering.
    pub delay_every: Option<u64>,
    /// How long a stall lasts.
    pub delay: Duration,
    /// Stop after receiving this many requests, leaving the last one unanswered: a crash.
    pub crash_after: Option<u64>,
}

/// Why [`Server::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown was asked for.
    Shutdown,
    /// `crash_after` requests were received; the last was not answered.
    Crashed,
}

/// A bound REP server.
pub struct Server {
    ctx: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
    faults: Faults,
}

impl Server {
    /// Binds a REP socket at `endpoint`.
    pub fn bind(ctx: &zmq::Context, endpoint: &str, faults: Faults) -> Result<Self, Error> {
        let socket = io::socket(ctx, zmq::REP, io::SHUTDOWN_LINGER)?;
        let endpoint = io::bind(&socket, endpoint)?;
        Ok(Server {
            ctx: ctx.clone(),
            socket,
            endpoint,
            faults,
        })
    }

    /// The bound endpoint, with its port resolved.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Answers requests with `handler` until shutdown or a simulated crash.
    pub fn run(mut self, mut handler: Handler, shutdown: &Shutdown) -> Result<Stopped, Error> {
        let mut received: u64 = 0;
        let hits = |every: Option<u64>, n: u64| every.is_some_and(|e| e > 0 && n % e == 0);
        while !shutdown.is_triggered() {
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, io::poll_millis(io::now(), None))?;
            if !items[0].is_readable() {
                continue;
            }
            let request = self
                .socket
                .recv_multipart(0)
                .map_err(|e| TransportError::zmq("recv", &self.endpoint, e))?;
            received += 1;
            if self.faults.crash_after == Some(received) {
                tracing::warn!(received, "simulating a crash");
                return Ok(Stopped::Crashed);
            }
            if hits(self.faults.fail_every, received) {
                tracing::warn!(received, "simulating a failure: request dropped");
                self.rebind()?;
                continue;
            }
            if hits(self.faults.delay_every, received) {
                tracing::warn!(received, delay = ?self.faults.delay, "simulating a stall");
                #[allow(clippy::disallowed_methods)] // the simulated stall itself
                std::thread::sleep(self.faults.delay);
            }
            let reply = handler::answer(&mut handler, request);
            io::send_frames(&self.socket, &reply, 0)
                .map_err(|e| TransportError::zmq("send", &self.endpoint, e))?;
        }
        Ok(Stopped::Shutdown)
    }

    /// Closes the REP socket (dropping the request it holds) and binds a new one to
    /// the same endpoint, retrying for up to a second while the port is released.
    fn rebind(&mut self) -> Result<(), Error> {
        let _ = self.socket.set_linger(0);
        let _ = self.socket.unbind(&self.endpoint);
        let fresh = io::socket(&self.ctx, zmq::REP, io::SHUTDOWN_LINGER)?;
        let deadline = io::now() + Duration::from_secs(1);
        loop {
            match fresh.bind(&self.endpoint) {
                Ok(()) => break,
                Err(e) if io::now() >= deadline => {
                    return Err(TransportError::zmq("bind", &self.endpoint, e).into())
                }
                Err(_) => {
                    let mut none: [zmq::PollItem; 0] = [];
                    let _ = zmq::poll(&mut none, 10);
                }
            }
        }
        self.socket = fresh;
        Ok(())
    }
}
