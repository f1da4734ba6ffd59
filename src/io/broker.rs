//! Driver of the Majordomo broker: one ROUTER socket for clients and workers.

use crate::error::Error;
use crate::io::{self, Shutdown};
use crate::proto::broker::{Broker, BrokerConfig, Event};

/// Most messages read in one go before timers get a turn.
const BATCH: usize = 256;

/// A bound Majordomo broker, ready to [`BrokerDriver::run`].
pub struct BrokerDriver {
    socket: zmq::Socket,
    endpoint: String,
    cfg: BrokerConfig,
}

impl BrokerDriver {
    /// Binds the broker's ROUTER socket at `endpoint`.
    pub fn bind(ctx: &zmq::Context, endpoint: &str, cfg: BrokerConfig) -> Result<Self, Error> {
        cfg.heartbeat.validate()?;
        let socket = io::socket(ctx, zmq::ROUTER, io::SHUTDOWN_LINGER)?;
        let endpoint = io::bind(&socket, endpoint)?;
        Ok(BrokerDriver {
            socket,
            endpoint,
            cfg,
        })
    }

    /// The bound endpoint, with its port resolved.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Routes until `shutdown` is triggered.
    pub fn run(self, shutdown: &Shutdown) -> Result<(), Error> {
        let mut core = Broker::new(io::now(), self.cfg);
        tracing::info!(endpoint = %self.endpoint, "broker running");
        while !shutdown.is_triggered() {
            let timeout = io::poll_millis(io::now(), core.poll_timeout());
            let mut items = [self.socket.as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, timeout)?;
            if items[0].is_readable() {
                for _ in 0..BATCH {
                    let Ok(frames) = io::recv_frames(&self.socket, zmq::DONTWAIT) else {
                        break;
                    };
                    core.handle_message(io::now(), frames);
                }
            }
            core.handle_timeout(io::now());
            self.flush(&mut core);
        }
        tracing::info!("broker stopped");
        Ok(())
    }

    fn flush(&self, core: &mut Broker) {
        while let Some(frames) = core.poll_transmit() {
            io::send_or_log(&self.socket, frames, "peer");
        }
        while let Some(event) = core.poll_event() {
            log_event(event);
        }
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
