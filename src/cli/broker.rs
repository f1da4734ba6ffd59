//! `bosun broker`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::args::parse_size;
use super::{parse_duration, HeartbeatArgs};
use crate::error::Error;
use crate::io::broker::BrokerDriver;
use crate::io::Shutdown;
use crate::proto::broker::BrokerConfig;

/// Options of `bosun broker`.
#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Where clients and workers connect (one ROUTER; `tcp://127.0.0.1:*` picks a port).
    #[arg(long, env = "BOSUN_BIND", default_value = "tcp://127.0.0.1:5555")]
    pub bind: String,
    /// Most requests waiting per service; more are refused (a bosun client is told) and
    /// counted in the log once a second.
    #[arg(long, env = "BOSUN_MAX_QUEUE", default_value_t = BrokerConfig::default().max_queue)]
    pub max_queue: usize,
    /// Most bytes of requests waiting per service (an empty queue takes any one request);
    /// more are refused as for --max-queue. A number of bytes, or with a unit: 512KiB,
    /// 256MiB, 1GiB (also KB, MB, GB: powers of 1000).
    #[arg(long, env = "BOSUN_MAX_QUEUE_BYTES", value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_queue_bytes: usize,
    /// How long a request may wait for a worker before it is dropped.
    #[arg(long, env = "BOSUN_REQUEST_TTL", default_value = "30s", value_parser = parse_duration)]
    pub request_ttl: Duration,
    /// Most services tracked at once; requests for more are dropped.
    #[arg(long, env = "BOSUN_MAX_SERVICES", default_value_t = BrokerConfig::default().max_services)]
    pub max_services: usize,
    /// How many workers may die holding one request (a poison request that kills its
    /// workers) before it is dead-lettered instead of re-queued; its client gets an
    /// error. A worker that stops cleanly (DISCONNECT) does not count.
    #[arg(long, env = "BOSUN_MAX_DELIVERIES", default_value_t = BrokerConfig::default().max_deliveries)]
    pub max_deliveries: u32,
    /// Sliding window of the statistics `mmi.stats` reports.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub stats_window: Duration,
    /// Keep the requests dead-lettered after --max-deliveries in this directory (a
    /// sled database), for `bosun dlq list|show|replay|purge`. One process per
    /// directory. The queues themselves stay in memory.
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Heartbeat settings (must match the workers').
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
}

/// Prints `broker bound=ENDPOINT` on stdout once bound, then routes until Ctrl-C.
pub fn run(args: BrokerArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    let defaults = BrokerConfig::default();
    let cfg = BrokerConfig {
        heartbeat: args.heartbeat.heartbeat_or(defaults.heartbeat),
        max_queue: args.max_queue,
        max_queue_bytes: args.max_queue_bytes,
        request_ttl: args.request_ttl,
        max_services: args.max_services,
        stats_window: args.stats_window,
        max_deliveries: args.max_deliveries,
    };
    let mut builder = BrokerDriver::builder(&args.bind).context(&ctx).config(cfg);
    let store = args
        .data_dir
        .as_deref()
        .map(crate::store::Store::open)
        .transpose()?;
    if let Some(store) = &store {
        builder = builder.dead_letters(store);
    }
    let driver = builder.bind()?;
    println!("broker bound={}", driver.endpoint());
    driver.run(shutdown)?;
    Ok(ExitCode::SUCCESS)
}
