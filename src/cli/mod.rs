//! The `bosun` command line: clap option structs and one run function per subcommand.

mod args;
mod broker;
mod client;
mod demo;
mod mdclient;
mod queue;
mod server;
mod stats;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::{flag_of, parse_duration, HeartbeatArgs, ReconnectArgs, RetryArgs};

use crate::io::Shutdown;

/// Reliable messaging over ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "bosun", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send requests, print each reply on its own line: Lazy Pirate, Majordomo with
    /// --service, Freelance with several --connect endpoints.
    Client(client::ClientArgs),
    /// An echo server: plain REP for Lazy Pirate clients (with fault switches), or
    /// Freelance with --freelance.
    Server(server::ServerArgs),
    /// A Paranoid Pirate (6/PPP) queue between clients and workers.
    Queue(queue::QueueArgs),
    /// A worker: Paranoid Pirate (6/PPP), or Majordomo (7/MDP) with --service; echo,
    /// or run a command per request.
    Worker(worker::WorkerArgs),
    /// A Majordomo (7/MDP + 8/MMI) broker: routes requests to workers by service.
    Broker(broker::BrokerArgs),
    /// Print the broker's per-service statistics (`mmi.stats`) as a table.
    Stats(stats::StatsArgs),
    /// Start a broker, two workers and a client; kill a worker and the broker; count.
    Demo(demo::DemoArgs),
}

/// Runs the parsed command line. Installs the Ctrl-C / SIGTERM handler, so call once.
pub fn run(cli: Cli) -> ExitCode {
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.trigger()) {
        tracing::warn!(error = %e, "no Ctrl-C handler; Ctrl-C will not shut down cleanly");
    }
    let result = match cli.command {
        Command::Client(a) => client::run(a, &shutdown),
        Command::Server(a) => server::run(a, &shutdown),
        Command::Queue(a) => queue::run(a, &shutdown),
        Command::Worker(a) => worker::run(a, &shutdown),
        Command::Broker(a) => broker::run(a, &shutdown),
        Command::Stats(a) => stats::run(a, &shutdown),
        Command::Demo(a) => demo::run(a, &shutdown),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bosun: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as the command line tells it: a configuration field by its flag.
pub fn describe(e: &crate::Error) -> String {
    match e {
        crate::Error::Config(crate::error::ConfigError::Invalid { field, reason }) => {
            format!("invalid {}: {reason}", args::flag_of(field))
        }
        other => other.to_string(),
    }
}
