//! `bosun queue`.

use std::process::ExitCode;

use clap::Args;

use super::HeartbeatArgs;
use crate::error::Error;
use crate::io::queue::QueueDriver;
use crate::io::Shutdown;
use crate::proto::paranoid_pirate::QueueConfig;

/// Options of `bosun queue`.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Where clients connect (ROUTER; `tcp://127.0.0.1:*` picks a free port).
    #[arg(long, env = "BOSUN_FRONTEND", default_value = "tcp://127.0.0.1:5555")]
    pub frontend: String,
    /// Where workers connect (ROUTER).
    #[arg(long, env = "BOSUN_BACKEND", default_value = "tcp://127.0.0.1:5556")]
    pub backend: String,
    /// Most client requests held while no worker is idle; more are dropped and logged.
    #[arg(long, env = "BOSUN_MAX_QUEUE", default_value_t = QueueConfig::default().max_queue)]
    pub max_queue: usize,
    /// Heartbeat settings (must match the workers').
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
}

/// Prints `queue frontend=ENDPOINT backend=ENDPOINT` on stdout once bound, then routes.
pub fn run(args: QueueArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    let cfg = QueueConfig {
        heartbeat: args.heartbeat.heartbeat(),
        max_queue: args.max_queue,
    };
    let driver = QueueDriver::builder(&args.frontend, &args.backend)
        .context(&ctx)
        .config(cfg)
        .bind()?;
    println!(
        "queue frontend={} backend={}",
        driver.frontend_endpoint(),
        driver.backend_endpoint()
    );
    driver.run(shutdown)?;
    Ok(ExitCode::SUCCESS)
}
