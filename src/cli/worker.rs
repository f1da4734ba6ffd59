//! `bosun worker`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, HeartbeatArgs, ReconnectArgs};
use crate::error::Error;
use crate::io::handler::{self, Handler};
use crate::io::mdworker::{SharedHandler, Worker};
use crate::io::ppworker::PpWorker;
use crate::io::Shutdown;
use crate::proto::broker::BrokerConfig;
use std::sync::Arc;

/// Where a Paranoid Pirate worker connects by default: `bosun queue`'s backend.
const QUEUE_BACKEND: &str = "tcp://127.0.0.1:5556";
/// Where a Majordomo worker connects by default: `bosun broker`.
const BROKER_ENDPOINT: &str = "tcp://127.0.0.1:5555";

/// Options of `bosun worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The queue backend, or with --service the broker [default: tcp://127.0.0.1:5556,
    /// or tcp://127.0.0.1:5555 with --service].
    #[arg(long, env = "BOSUN_CONNECT")]
    pub connect: Option<String>,
    /// Speak Majordomo (7/MDP) and serve this service; without it, Paranoid Pirate.
    #[arg(long, env = "BOSUN_SERVICE")]
    pub service: Option<String>,
    /// Majordomo only: handle up to K requests at once (a pool of K threads; 1 to 1000).
    #[arg(long, default_value_t = 1)]
    pub capacity: u32,
    /// Run `sh -c CMD` per request, body on stdin, reply from stdout (default: echo).
    #[arg(long)]
    pub exec: Option<String>,
    /// Simulated work: wait this long before answering each request.
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// Put TEXT in front of every reply (shows which worker answered, in demos).
    #[arg(long)]
    pub reply_prefix: Option<String>,
    /// Heartbeat settings (must match the queue's).
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
    /// Reconnect backoff.
    #[command(flatten)]
    pub reconnect: ReconnectArgs,
}

/// Serves until Ctrl-C.
pub fn run(args: WorkerArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    if let Some(service) = &args.service {
        return run_majordomo(&args, service, &ctx, shutdown);
    }
    let mut handler: Handler = match args.exec {
        Some(cmd) => handler::exec(cmd),
        None => handler::echo(),
    };
    if let Some(prefix) = args.reply_prefix {
        let mut inner = handler;
        handler = Box::new(move |body| [prefix.as_bytes(), &inner(body)].concat());
    }
    if let Some(delay) = args.delay {
        handler = handler::slow(delay, handler);
    }
    let endpoint = args.connect.as_deref().unwrap_or(QUEUE_BACKEND);
    let stats = PpWorker::new(&ctx, endpoint)
        .heartbeat(args.heartbeat.heartbeat())
        .reconnect(args.reconnect.backoff())
        .run(handler, shutdown)?;
    tracing::info!(
        handled = stats.handled,
        reconnects = stats.reconnects,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}

fn run_majordomo(
    args: &WorkerArgs,
    service: &str,
    ctx: &zmq::Context,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    let exec = args.exec.clone();
    let prefix = args.reply_prefix.clone().unwrap_or_default();
    let delay = args.delay;
    let handler: SharedHandler = Arc::new(move |body: Vec<u8>| {
        if let Some(d) = delay {
            #[allow(clippy::disallowed_methods)] // simulated work, not synchronisation
            std::thread::sleep(d);
        }
        let reply = match &exec {
            Some(cmd) => handler::run_command(cmd, &body),
            None => body,
        };
        [prefix.as_bytes(), &reply].concat()
    });
    let endpoint = args.connect.as_deref().unwrap_or(BROKER_ENDPOINT);
    let stats = Worker::new(endpoint, service)
        .context(ctx)
        .capacity(args.capacity)
        .heartbeat(
            args.heartbeat
                .heartbeat_or(BrokerConfig::default().heartbeat),
        )
        .reconnect(args.reconnect.backoff())
        .run(handler, shutdown)?;
    tracing::info!(
        handled = stats.handled,
        reconnects = stats.reconnects,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}
