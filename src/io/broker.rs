//! Driver of the Majordomo broker: one ROUTER socket for clients and workers.

use std::time::Instant;

use crate::error::Error;
use crate::io::driver::{Core, Driver, Op, Sockets};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::broker::{
    Broker, BrokerConfig, DropReason, Event, GoneReason, DROP_REPORT_INTERVAL,
};
use crate::proto::frames::Frames;
use crate::proto::stats::escape_name;
use crate::store::{DeadLetter, DeadLetters, DeadReason, Store};

impl Core for Broker {
    type Event = Event;
    fn handle_input(&mut self, now: Instant, _socket: usize, frames: Frames) {
        // Request deadlines are wall-clock times: the core is told the time before
        // every message (a vDSO read, tens of nanoseconds).
        self.handle_wall_clock(now, io::unix_ms());
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

/// Settings of a [`BrokerDriver`], from [`BrokerDriver::builder`];
/// [`BrokerDriverBuilder::bind`] makes the broker.
#[derive(Debug, Clone)]
pub struct BrokerDriverBuilder {
    endpoint: String,
    transport: Option<Transport>,
    config: BrokerConfig,
    store: Option<Store>,
}

impl BrokerDriverBuilder {
    crate::io::builder_setters!(transport);

    /// Sets the heartbeat, queue bounds and limits (default [`BrokerConfig::default`]).
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Keeps the requests it dead-letters (see [`BrokerConfig::max_deliveries`]) in
    /// `store`'s dead letters, each flushed when it is written, for `bosun dlq`. Default:
    /// none (a dead-lettered request is logged and its client told, nothing kept). The
    /// broker still keeps its queues in memory only.
    pub fn dead_letters(mut self, store: &Store) -> Self {
        self.store = Some(store.clone());
        self
    }

    /// Checks the settings, makes the ROUTER socket and binds it.
    pub fn bind(self) -> Result<BrokerDriver, Error> {
        let transport = self.transport.unwrap_or_default();
        let core = Broker::new(io::now(), self.config)?;
        let dead = self.store.as_ref().map(Store::dead_letters).transpose()?;
        let sockets = Sockets::bound(&transport, &[(zmq::ROUTER, &self.endpoint)])?;
        Ok(BrokerDriver {
            core,
            sockets,
            dead,
        })
    }
}

/// A bound Majordomo broker, ready to [`BrokerDriver::run`]: one ROUTER socket for
/// clients and workers.
///
/// ```no_run
/// use bosun::io::broker::BrokerDriver;
/// let shutdown = bosun::Shutdown::new();
/// BrokerDriver::bind("tcp://127.0.0.1:5555")?.run(&shutdown)?;
/// # Ok::<(), bosun::Error>(())
/// ```
pub struct BrokerDriver {
    core: Broker,
    sockets: Sockets,
    dead: Option<DeadLetters>,
}

impl BrokerDriver {
    /// The settings of a broker bound at `endpoint`; [`BrokerDriverBuilder::bind`]
    /// makes it.
    pub fn builder(endpoint: &str) -> BrokerDriverBuilder {
        BrokerDriverBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            config: BrokerConfig::default(),
            store: None,
        }
    }

    /// A broker bound at `endpoint` with the default settings (its own context,
    /// [`BrokerConfig::default`]).
    pub fn bind(endpoint: &str) -> Result<Self, Error> {
        Self::builder(endpoint).bind()
    }

    /// The bound endpoint, with its port resolved.
    pub fn endpoint(&self) -> String {
        self.sockets.endpoint(0)
    }

    /// Routes until `shutdown` is triggered.
    pub fn run(self, shutdown: &Shutdown) -> Result<(), Error> {
        let endpoint = self.endpoint();
        let mut driver = Driver::new(self.core, self.sockets, shutdown);
        if let Some(dead) = &self.dead {
            tracing::info!("recovered: {} dead letters", dead.len());
        }
        tracing::info!(%endpoint, "broker running");
        let dead = self.dead;
        driver.route(|event| {
            if let (Some(dead), Event::DeadLettered { .. }) = (&dead, &event) {
                keep_dead_letter(dead, &event);
            }
            log_event(event)
        })?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

/// Writes a dead-lettered request to the broker's dead letters. A foreign client's
/// request has no id: it is stored under a new one. A store that fails is logged, and
/// routing goes on (the client was told already).
#[cold]
fn keep_dead_letter(dead: &DeadLetters, event: &Event) {
    let Event::DeadLettered {
        service,
        id,
        payload,
        deliveries,
        reason,
        ..
    } = event
    else {
        return;
    };
    let letter = DeadLetter {
        id: id.unwrap_or_else(|| io::envelope(Vec::new()).meta.id),
        service: Some(service.clone()),
        payload: payload.clone(),
        attempts: *deliveries,
        last_error: reason.message(*deliveries),
        reason: DeadReason::Poison,
        at_ms: io::unix_ms(),
    };
    match dead.put(&letter) {
        Ok(()) => tracing::info!(id = %letter.id, "dead letter kept"),
        Err(error) => tracing::error!(id = %letter.id, %error, "dead letter not kept"),
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
            tracing::info!(worker = %hex(&identity), service = %escape_name(&service), capacity, "worker ready")
        }
        // A worker that said goodbye is news, not trouble.
        Event::WorkerGone {
            identity,
            reason: reason @ GoneReason::Disconnected,
            requeued,
        } => {
            tracing::info!(worker = %hex(&identity), ?reason, requeued, "worker gone (it said DISCONNECT)")
        }
        Event::WorkerGone {
            identity,
            reason,
            requeued,
        } => tracing::warn!(worker = %hex(&identity), ?reason, requeued, "worker gone"),
        Event::Disconnected { identity, reason } => {
            tracing::info!(peer = %hex(&identity), reason, "sent DISCONNECT")
        }
        // One line per request would flood the log in a burst: each is at debug, and
        // the count per service and reason comes once a second.
        Event::RequestDropped { service, reason } => {
            tracing::debug!(service = %escape_name(&service), ?reason, "request dropped")
        }
        Event::DropSummary {
            service,
            reason,
            count,
        } => {
            let service =
                service.map_or_else(|| "(other services)".to_string(), |s| escape_name(&s));
            tracing::warn!(
                %service,
                ?reason,
                count,
                "{count} request(s) for service {service} refused or dropped in the last {}s ({})",
                DROP_REPORT_INTERVAL.as_secs(),
                drop_words(reason)
            )
        }
        Event::HeartbeatMismatch {
            service,
            worker_interval,
            broker_interval,
            liveness,
        } => tracing::warn!(
            service = %escape_name(&service),
            "worker heartbeats every {}, broker expects {} (a worker silent for {} is expired): give the worker and the broker the same --heartbeat-interval; said once per service",
            ms(worker_interval),
            ms(broker_interval),
            ms(broker_interval.saturating_mul(liveness))
        ),
        Event::ReplyDropped { identity, client } => {
            tracing::warn!(worker = %hex(&identity), client = %hex(&client), "reply to no outstanding request dropped")
        }
        Event::Malformed { identity, error } => {
            tracing::warn!(peer = %hex(&identity), %error, "malformed message dropped")
        }
        // A retry is routine: the first copy answers it.
        Event::RetryJoined {
            service,
            id,
            attempt,
        } => {
            tracing::debug!(service = %escape_name(&service), %id, attempt, "retry joined to the request held")
        }
        Event::DeadLettered {
            service,
            id,
            payload,
            meta: _,
            deliveries,
            reason,
            last_worker,
        } => {
            let id = id.map_or_else(
                || "(none: a foreign client)".to_string(),
                |id| id.to_string(),
            );
            let bytes: usize = payload.iter().map(Vec::len).sum();
            tracing::warn!(
                service = %escape_name(&service),
                %id,
                deliveries,
                ?reason,
                last_worker = %hex(&last_worker),
                payload_bytes = bytes,
                "request dead-lettered: {deliveries} workers died holding it (--max-deliveries); not re-queued"
            )
        }
        Event::RetryDeadLettered {
            service,
            id,
            attempt,
        } => {
            tracing::info!(service = %escape_name(&service), %id, attempt, "retry of a dead-lettered request answered with its error, not queued")
        }
    }
}

/// What a drop reason means, for the log.
fn drop_words(reason: DropReason) -> &'static str {
    match reason {
        DropReason::QueueFull => "queue full: --max-queue",
        DropReason::QueueBytes => "queue full: --max-queue-bytes",
        DropReason::BadServiceName => "invalid service name",
        DropReason::TooManyServices => "too many services: --max-services",
        DropReason::Expired => "waited --request-ttl with no worker",
        DropReason::DeadlinePassed => "deadline passed: the client's own budget ended",
    }
}

/// A duration as milliseconds, or seconds with a fraction from 1 s on.
fn ms(d: std::time::Duration) -> String {
    if d.as_millis() >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}
