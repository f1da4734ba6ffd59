//! Driver of the Majordomo broker: one ROUTER socket for clients and workers.

use std::time::Instant;

use crate::error::Error;
use crate::io::driver::{Core, Driver, Op, Sockets};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::broker::{Broker, BrokerConfig, Event};
use crate::proto::frames::Frames;

impl Core for Broker {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        self.handle_message(now, frames)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Broker::handle_timeout(self, now)
    }
    fn poll_op(&mut self) -> Option<Op> {
        self.poll_transmit().map(|f| Op::Send(0, f))
    }
    fn poll_event(&mut self) -> Option<Event> {
        Broker::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Broker::poll_timeout(self)
    }
}

/// A bound Majordomo broker, ready to [`BrokerDriver::run`].
pub struct BrokerDriver {
    core: Broker,
    sockets: Sockets,
}

impl BrokerDriver {
    /// Binds the broker's ROUTER socket at `endpoint`, in `ctx`.
    pub fn bind(ctx: &zmq::Context, endpoint: &str, cfg: BrokerConfig) -> Result<Self, Error> {
        Self::bind_with(&Transport::with_context(ctx), endpoint, cfg)
    }

    /// Binds the broker's ROUTER socket at `endpoint`, made by `transport`.
    pub fn bind_with(
        transport: &Transport,
        endpoint: &str,
        cfg: BrokerConfig,
    ) -> Result<Self, Error> {
        let core = Broker::new(io::now(), cfg)?;
        let sockets = Sockets::bound(transport, &[(zmq::ROUTER, endpoint)])?;
        Ok(BrokerDriver { core, sockets })
    }

    /// The bound endpoint, with its port resolved.
    pub fn endpoint(&self) -> String {
        self.sockets.endpoint(0)
    }

    /// Routes until `shutdown` is triggered.
    pub fn run(self, shutdown: &Shutdown) -> Result<(), Error> {
        let endpoint = self.endpoint();
        let mut driver = Driver::new(self.core, self.sockets, shutdown);
        tracing::info!(%endpoint, "broker running");
        driver.route(log_event)?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

fn log_event(event: Event) {
    use crate::io::queue::hex;
    match event {
        Event::WorkerReady {
            identity,
            service,
            capacity,
        } => {
            tracing::info!(worker = %hex(&identity), service = %String::from_utf8_lossy(&service), capacity, "worker ready")
        }
        Event::WorkerGone {
            identity,
            reason,
            requeued,
        } => tracing::warn!(worker = %hex(&identity), ?reason, requeued, "worker gone"),
        Event::Disconnected { identity, reason } => {
            tracing::info!(peer = %hex(&identity), reason, "sent DISCONNECT")
        }
        Event::RequestDropped { service, reason } => {
            tracing::warn!(service = %String::from_utf8_lossy(&service), ?reason, "request dropped")
        }
        Event::ReplyDropped { identity, client } => {
            tracing::warn!(worker = %hex(&identity), client = %hex(&client), "reply to no outstanding request dropped")
        }
        Event::Malformed { identity, error } => {
            tracing::warn!(peer = %hex(&identity), %error, "malformed message dropped")
        }
    }
}
