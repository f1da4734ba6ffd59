//! `bosun server`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::args::parse_every;
use super::parse_duration;
use super::receiver::DedupArgs;
use crate::error::Error;
use crate::io::freelance::FreelanceServer;
use crate::io::handler;
use crate::io::server::{Faults, Server, Stopped};
use crate::io::Shutdown;

/// Options of `bosun server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where to bind the REP socket (`tcp://127.0.0.1:*` picks a free port).
    #[arg(long, env = "BOSUN_BIND", default_value = "tcp://127.0.0.1:5555")]
    pub bind: String,
    /// Serve Freelance (10/FLP, brokerless, ROUTER) instead of a plain REP socket; the
    /// bind endpoint is the server's identity, so clients connect to exactly that text.
    #[arg(long)]
    pub freelance: bool,
    /// Drop every Nth request unanswered (the socket is closed and bound again); N at
    /// least 1. Not with --freelance.
    #[arg(long, value_parser = parse_every, conflicts_with = "freelance")]
    pub fail_every: Option<u64>,
    /// Stall every Nth request for --delay before answering; N at least 1. Not with
    /// --freelance.
    #[arg(long, value_parser = parse_every, conflicts_with = "freelance")]
    pub delay_every: Option<u64>,
    /// How long a stall of --delay-every lasts.
    #[arg(long, default_value = "3s", value_parser = parse_duration, requires = "delay_every")]
    pub delay: Duration,
    /// Exit with status 3 on receiving the Nth request (N at least 1), without
    /// answering it. Not with --freelance.
    #[arg(long, value_parser = parse_every, conflicts_with = "freelance")]
    pub crash_after: Option<u64>,
    /// Duplicate suppression and its store.
    #[command(flatten)]
    pub dedup: DedupArgs,
}

/// Prints `server bound=ENDPOINT` on stdout once bound, then serves.
pub fn run(args: ServerArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    // The echo handler never fails: nothing to run again or dead-letter.
    let receiver = args.dedup.options(None)?;
    let ctx = zmq::Context::new();
    if args.freelance {
        let server = FreelanceServer::builder(&args.bind)
            .context(&ctx)
            .receiver(receiver)
            .bind()?;
        println!("server bound={}", server.endpoint());
        server.run(handler::echo(), shutdown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let faults = Faults {
        fail_every: args.fail_every,
        delay_every: args.delay_every,
        delay: args.delay,
        crash_after: args.crash_after,
    };
    let server = Server::builder(&args.bind)
        .context(&ctx)
        .faults(faults)
        .receiver(receiver)
        .bind()?;
    println!("server bound={}", server.endpoint());
    match server.run(handler::echo(), shutdown)? {
        Stopped::Shutdown => Ok(ExitCode::SUCCESS),
        Stopped::Crashed => Ok(ExitCode::from(super::exit::CRASHED)),
    }
}
