//! `bosun worker`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::args::parse_service;
use super::receiver::DedupArgs;
use super::{parse_duration, HeartbeatArgs, ReconnectArgs};
use crate::error::ConfigError;
use crate::error::Error;
use crate::io::handler::{self, ExecOptions, Handler};
use crate::io::mdworker::Worker;
use crate::io::ppworker::PpWorker;
use crate::io::Shutdown;
use crate::proto::broker::BrokerConfig;

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
    #[arg(long, env = "BOSUN_SERVICE", value_parser = parse_service)]
    pub service: Option<String>,
    /// Majordomo only (needs --service): handle up to K requests at once (a pool of K threads; 1 to 1000).
    #[arg(long, default_value_t = 1)]
    pub capacity: u32,
    /// Run `sh -c CMD` per request, body on stdin, reply from stdout (default: echo).
    /// Each command runs in a process group of its own, killed on stop.
    #[arg(long)]
    pub exec: Option<String>,
    /// With --exec: the longest a command may run; one that overruns is killed (its
    /// process group) and its request fails. Bounds how long the worker stays busy
    /// with one request.
    #[arg(long, value_name = "DURATION", default_value = "30s", requires = "exec", value_parser = parse_exec_timeout)]
    pub exec_timeout: Duration,
    /// Simulated work: wait this long before answering each request.
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// Put TEXT in front of every reply (shows which worker answered, in demos).
    #[arg(long)]
    pub reply_prefix: Option<String>,
    /// Give up on a request whose handler failed (an error, a failed or timed-out
    /// --exec command) on this attempt: earlier failures run it again at once, counting
    /// from the attempt in the client's metadata. Given up on, it is kept as a dead
    /// letter (with --data-dir) and its client gets an error saying so. 1 runs it once.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Duplicate suppression and its store.
    #[command(flatten)]
    pub dedup: DedupArgs,
    /// Heartbeat settings (must match the queue's).
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
    /// Reconnect backoff.
    #[command(flatten)]
    pub reconnect: ReconnectArgs,
}

/// The handler the flags describe: echo or `--exec`, then `--reply-prefix`, then
/// `--delay`.
fn handler_of(args: &WorkerArgs) -> Handler {
    let mut h = match &args.exec {
        Some(cmd) => handler::exec_with(
            cmd.clone(),
            ExecOptions {
                timeout: args.exec_timeout,
            },
        ),
        None => handler::echo(),
    };
    if let Some(prefix) = &args.reply_prefix {
        h = handler::prefix(prefix.clone().into_bytes(), h);
    }
    if let Some(delay) = args.delay {
        h = handler::slow(delay, h);
    }
    h
}

/// `--exec-timeout`: a duration, not zero (a zero timeout would fail every request).
fn parse_exec_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

/// Serves until Ctrl-C.
pub fn run(args: WorkerArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    if args.service.is_none() && args.capacity != 1 {
        return Err(Error::Config(ConfigError::Invalid {
            field: "capacity",
            reason: format!(
                "{} needs --service: only a Majordomo worker handles several requests at \
                 once; a Paranoid Pirate worker (no --service) handles one",
                args.capacity
            ),
        }));
    }
    let receiver = args.dedup.options(Some(args.max_attempts))?;
    let ctx = zmq::Context::new();
    let handler = handler_of(&args);
    let stats = match &args.service {
        Some(service) => {
            let endpoint = args.connect.as_deref().unwrap_or(BROKER_ENDPOINT);
            Worker::builder(endpoint, service)
                .context(&ctx)
                .capacity(args.capacity)
                .heartbeat(
                    args.heartbeat
                        .heartbeat_or(BrokerConfig::default().heartbeat),
                )
                .reconnect(args.reconnect.backoff())
                .receiver(receiver)
                .connect()?
                .run(handler, shutdown)?
        }
        None => {
            let endpoint = args.connect.as_deref().unwrap_or(QUEUE_BACKEND);
            PpWorker::builder(endpoint)
                .context(&ctx)
                .heartbeat(args.heartbeat.heartbeat())
                .reconnect(args.reconnect.backoff())
                .receiver(receiver)
                .connect()?
                .run(handler, shutdown)?
        }
    };
    tracing::info!(
        handled = stats.handled,
        reconnects = stats.reconnects,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}
