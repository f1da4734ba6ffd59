//! Option groups shared by the subcommands. Every flag here (heartbeat, retry,
//! reconnect) has a `BOSUN_*` environment variable and a default that matches
//! [`crate::config`].

use std::time::Duration;

use clap::Args;

use crate::config::{Backoff, Heartbeat, Retry};

/// Parses a human duration: `250ms`, `2s`, `1m30s`; at most
/// [`MAX_DURATION`](crate::config::MAX_DURATION) (100 years), so that no deadline
/// computed from it can overflow the clock.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try e.g. 250ms, 2s, 1m)"))?;
    if d > crate::config::MAX_DURATION {
        return Err(format!(
            "{s} is longer than the most allowed, {} (100 years)",
            humantime::format_duration(crate::config::MAX_DURATION)
        ));
    }
    Ok(d)
}

/// The command-line flag of a configuration field named in a library error.
pub fn flag_of(field: &str) -> &str {
    match field {
        "heartbeat.interval" => "--heartbeat-interval",
        "heartbeat.liveness" => "--heartbeat-liveness",
        "retry.timeout" => "--timeout",
        "retry.retries" => "--retries",
        "retry.backoff" => "--backoff-initial/--backoff-max",
        "reconnect" => "--reconnect-initial/--reconnect-max",
        "capacity" => "--capacity",
        "service" => "--service",
        "max_queue" => "--max-queue",
        "max_services" => "--max-services",
        "request_ttl" => "--request-ttl",
        "stats_window" => "--stats-window",
        "servers" => "--connect",
        other => other,
    }
}

/// `--heartbeat-interval` and `--heartbeat-liveness`.
///
/// The defaults depend on the pattern, as the reference implementations have them:
/// 1 s × 3 for Paranoid Pirate (6/PPP), 2500 ms × 3 for Majordomo (7/MDP).
#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    /// How often each side sends a heartbeat [default: 1s for Paranoid Pirate, 2500ms
    /// for Majordomo].
    #[arg(long, env = "BOSUN_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    pub heartbeat_interval: Option<Duration>,
    /// Missed heartbeats after which a peer is dead [default: 3].
    #[arg(long, env = "BOSUN_HEARTBEAT_LIVENESS")]
    pub heartbeat_liveness: Option<u32>,
}

impl HeartbeatArgs {
    /// As a [`Heartbeat`], with the Paranoid Pirate defaults for what was not given.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat_or(Heartbeat::default())
    }

    /// As a [`Heartbeat`], with `default`'s values for what was not given.
    pub fn heartbeat_or(&self, default: Heartbeat) -> Heartbeat {
        Heartbeat {
            interval: self.heartbeat_interval.unwrap_or(default.interval),
            liveness: self.heartbeat_liveness.unwrap_or(default.liveness),
        }
    }
}

/// `--timeout`, `--retries`, `--backoff-initial`, `--backoff-max`.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// How long to wait for the reply to one attempt.
    #[arg(long, env = "BOSUN_TIMEOUT", default_value = "2500ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Attempts in all, the first included, before giving up.
    #[arg(long, env = "BOSUN_RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// Pause after the first timed-out attempt; doubles with each further one.
    #[arg(long, env = "BOSUN_BACKOFF_INITIAL", default_value = "250ms", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    /// Longest pause between attempts.
    #[arg(long, env = "BOSUN_BACKOFF_MAX", default_value = "8s", value_parser = parse_duration)]
    pub backoff_max: Duration,
}

impl RetryArgs {
    /// As a [`Retry`] (jitter as in [`Retry::default`]).
    pub fn retry(&self) -> Retry {
        let d = Retry::default();
        Retry {
            timeout: self.timeout,
            retries: self.retries,
            backoff: Backoff {
                initial: self.backoff_initial,
                max: self.backoff_max,
                jitter: d.backoff.jitter,
            },
        }
    }
}

/// `--reconnect-initial` and `--reconnect-max`.
#[derive(Debug, Clone, Args)]
pub struct ReconnectArgs {
    /// Pause before the first reconnect after the peer went silent; doubles each time.
    #[arg(long, env = "BOSUN_RECONNECT_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub reconnect_initial: Duration,
    /// Longest pause between reconnects.
    #[arg(long, env = "BOSUN_RECONNECT_MAX", default_value = "32s", value_parser = parse_duration)]
    pub reconnect_max: Duration,
}

impl ReconnectArgs {
    /// As a [`Backoff`] (jitter as in [`crate::config::RECONNECT`]).
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.reconnect_initial,
            max: self.reconnect_max,
            jitter: crate::config::RECONNECT.jitter,
        }
    }
}
