//! Drivers of the servers: a plain REP server for Lazy Pirate clients (with switches
//! that simulate crashes and stalls for demos and tests), and the Freelance server in
//! [`crate::io::freelance`]. Both drive [`crate::proto::server::Server`].
//!
//! With `receiver` options a server suppresses duplicates (a retry is answered from the
//! reply cache, with its own attempt), re-runs failing handlers and dead-letters what
//! keeps failing (see [`crate::io::receiver`]); what the core decides is written to the
//! store before the reply it goes with is sent.

use std::time::Instant;

use crate::error::Error;
use crate::io::driver::{Core, Driver, Flow, Input, Op, Sockets};
use crate::io::handler::{self, Handler};
use crate::io::receiver::{self, ReceiverOptions, Recorder};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::frames::Frames;
pub use crate::proto::server::Faults;
use crate::proto::server::{self as core, Dialect, Event, Transmit};

impl Core for core::Server {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        // Deadlines and the duplicate window are wall-clock times.
        self.handle_wall_clock(now, io::unix_ms());
        self.handle_frames(now, frames)
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|t| match t {
            Transmit::Send(f) => Op::Send(0, f),
            Transmit::Rebind => Op::Reset(0),
        })
    }
    fn poll_event(&mut self) -> Option<Event> {
        core::Server::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// Why [`Server::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Shutdown was asked for.
    Shutdown,
    /// `crash_after` requests were received; the last was not answered.
    Crashed,
}

/// Settings of a [`Server`], from [`Server::builder`]; [`ServerBuilder::bind`] makes
/// the server.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    endpoint: String,
    transport: Option<Transport>,
    faults: Faults,
    receiver: ReceiverOptions,
}

impl ServerBuilder {
    crate::io::builder_setters!(transport);

    /// Sets the simulated crashes, stalls and drops (default [`Faults::default`]: none).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Sets duplicate suppression, re-runs, dead letters and their store (default:
    /// none of them; see [`ReceiverOptions`]).
    pub fn receiver(mut self, options: ReceiverOptions) -> Self {
        self.receiver = options;
        self
    }

    /// Checks the receiver options, makes the REP socket and binds it.
    pub fn bind(self) -> Result<Server, Error> {
        self.receiver.validate()?;
        let transport = self.transport.unwrap_or_default();
        let sockets = Sockets::bound(&transport, &[(zmq::REP, &self.endpoint)])?;
        Ok(Server {
            core: core::Server::new(Dialect::Rep, self.faults),
            sockets,
            receiver: self.receiver,
        })
    }
}

/// A bound REP server.
///
/// ```no_run
/// use bosun::io::server::Server;
/// let shutdown = bosun::Shutdown::new();
/// Server::bind("tcp://127.0.0.1:5555")?.run(bosun::io::handler::echo(), &shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct Server {
    core: core::Server,
    sockets: Sockets,
    receiver: ReceiverOptions,
}

impl Server {
    /// The settings of a REP server bound at `endpoint`; [`ServerBuilder::bind`] makes
    /// it.
    pub fn builder(endpoint: &str) -> ServerBuilder {
        ServerBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            faults: Faults::default(),
            receiver: ReceiverOptions::default(),
        }
    }

    /// A REP server bound at `endpoint` with the default settings (its own context, no
    /// faults).
    pub fn bind(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).bind()
    }

    /// The bound endpoint, with its port resolved.
    pub fn endpoint(&self) -> String {
        self.sockets.endpoint(0)
    }

    /// Answers requests with `handler` until shutdown or a simulated crash. With a
    /// store, first loads the duplicate window and logs what it recovered.
    pub fn run(self, handler: Handler, shutdown: &Shutdown) -> Result<Stopped, Error> {
        let (policy, hook) = receiver::open(&self.receiver, io::unix_ms())?;
        let mut core = self.core;
        core.set_policy(policy)?;
        serve(Driver::new(core, self.sockets, shutdown), &handler, hook)
    }
}

/// How often a simulated stall checks for a stop.
const STALL_NAP: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs a server core: each request to `handler` (a panic or error is answered as a
/// failure), each answer back, what the core decides written through `hook` first.
pub(crate) fn serve(
    mut driver: Driver<core::Server>,
    handler: &Handler,
    mut hook: Recorder,
) -> Result<Stopped, Error> {
    let stopped = driver.run(None, None, |d, input| match input {
        Input::Event(Event::Request {
            token,
            request,
            stall,
        }) => {
            if let Some(delay) = stall {
                tracing::warn!(received = d.core.received(), ?delay, "simulating a stall");
                // The stall itself, in short naps so that a stop ends it at once (the
                // request then goes unanswered, as with any stop mid-request).
                let until = io::now() + delay;
                while !d.is_stopping() {
                    let left = until.saturating_duration_since(io::now());
                    if left.is_zero() {
                        break;
                    }
                    #[allow(clippy::disallowed_methods)] // the simulated stall itself
                    std::thread::sleep(left.min(STALL_NAP));
                }
                if d.is_stopping() {
                    return Flow::Break(Ok(Stopped::Shutdown));
                }
            }
            // Its "running" entry (and evictions) before the handler starts.
            if let Err(e) = hook.record(&mut d.core) {
                return Flow::Break(Err(receiver::store_failed(e)));
            }
            tracing::debug!(id = ?request.id(), attempt = request.attempt(), "request");
            let reply = handler::call(handler, request);
            d.core.reply(io::now(), token, reply);
            // Recorded (and flushed) before the pump sends the reply.
            match hook.settle(&mut d.core) {
                Ok(()) => Flow::Continue,
                Err(e) => Flow::Break(Err(receiver::store_failed(e))),
            }
        }
        Input::Event(Event::Gated(note)) => {
            receiver::log_note(&note);
            Flow::Continue
        }
        Input::Event(Event::Dropped { received }) => {
            tracing::warn!(received, "simulating a failure: request dropped");
            Flow::Continue
        }
        Input::Event(Event::Crashed { received }) => {
            tracing::warn!(received, "simulating a crash");
            Flow::Break(Ok(Stopped::Crashed))
        }
        Input::Event(Event::Malformed(e)) => {
            // A Freelance server drops what it cannot read; a REP server must answer, so
            // a request with bad metadata is served as a foreign one.
            let what = match d.core.dialect() {
                Dialect::Rep => io::malformed_what(&e),
                Dialect::Freelance => "malformed message dropped",
            };
            tracing::warn!(error = %e, "{what}");
            Flow::Continue
        }
        Input::Wake => Flow::Continue,
        Input::Stop => Flow::Break(Ok(Stopped::Shutdown)),
    })?;
    stopped.unwrap_or(Ok(Stopped::Shutdown))
}
