//! `bosun worker`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, HeartbeatArgs, ReconnectArgs};
use crate::error::Error;
use crate::io::handler::{self, Handler};
use crate::io::ppworker::PpWorker;
use crate::io::Shutdown;

/// Options of `bosun worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The queue backend to connect to.
    #[arg(long, env = "BOSUN_CONNECT", default_value = "tcp://127.0.0.1:5556")]
    pub connect: String,
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
    let stats = PpWorker::new(&ctx, &args.connect)
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
