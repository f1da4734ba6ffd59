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
        "retry.deadline" => "--deadline",
        "reconnect" => "--reconnect-initial/--reconnect-max",
        "capacity" => "--capacity",
        "service" => "--service",
        "max_queue" => "--max-queue",
        "max_queue_bytes" => "--max-queue-bytes",
        "max_services" => "--max-services",
        "request_ttl" => "--request-ttl",
        "stats_window" => "--stats-window",
        "max_deliveries" => "--max-deliveries",
        "servers" => "--connect",
        "max_attempts" => "--max-attempts",
        "dedup.max_ids" => "--dedup-max-ids",
        "dedup.max_age" => "--dedup-max-age",
        "outbox_limit" => "--outbox-limit",
        "data_dir" => "--data-dir",
        "timeout" => "--timeout",
        "max_behind" => "--max-behind",
        "retain_count" => "--retain-count",
        "retain_age" => "--retain-age",
        "replay" => "--replay",
        "bind" => "--bind",
        "connect" => "--connect",
        "output" => "--output",
        "durability" => "--durability",
        other => other,
    }
}

/// The flag a configuration error is about: [`flag_of`] its field, narrowed to the one
/// flag of a pair that `reason` blames (`--backoff-initial 0` is about
/// `--backoff-initial`, not `--backoff-max`).
pub fn flag_for<'a>(field: &'a str, reason: &str) -> &'a str {
    let initial_only = reason.starts_with("initial backoff must");
    match field {
        "retry.backoff" if initial_only => "--backoff-initial",
        "reconnect" if initial_only => "--reconnect-initial",
        other => flag_of(other),
    }
}

/// Parses a count of "every Nth request" (`--fail-every`, `--delay-every`,
/// `--crash-after`): at least 1. Zero would mean never, which is leaving the flag out.
pub fn parse_every(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|e| format!("{e} (a whole number of requests, at least 1)"))?;
    if n == 0 {
        return Err(
            "must be at least 1 (N means the Nth request; for never, leave the flag out)".into(),
        );
    }
    Ok(n)
}

/// Parses a size in bytes: a whole number, optionally followed by a unit, `B`, `KiB`,
/// `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000); `256MiB`, `1GB`,
/// `4096`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!(
            "{s:?} is not a size (a whole number of bytes, or with a unit: 512KiB, 256MiB, 1GB)"
        )
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    n.checked_mul(scale)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `--in-flight`: at least 1 (0 would send nothing and wait forever).
pub fn parse_in_flight(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|e| format!("{e} (a whole number of requests, at least 1)"))?;
    if n == 0 {
        return Err("must be at least 1 (0 would send nothing at all)".into());
    }
    Ok(n)
}

/// Parses a service name: 1 to 255 bytes, as the broker takes them (an empty name
/// would be no service at all, and `--service ''` must not silently switch modes).
pub fn parse_service(s: &str) -> Result<String, String> {
    crate::proto::broker::check_service_name(s.as_bytes()).map_err(str::to_string)?;
    Ok(s.to_string())
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
    /// Overall budget of one request from its first send: no attempt is waited for past
    /// it [default: the worst case of the settings above, 8.25s with their defaults].
    /// The request carries its deadline, so a broker drops it once it has passed.
    #[arg(long, env = "BOSUN_DEADLINE", value_parser = parse_duration)]
    pub deadline: Option<Duration>,
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
            deadline: self.deadline,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("7B"), Ok(7));
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "-1",
            "10 parsecs",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_zero_initial_backoff_blames_the_initial_flag() {
        let reason = "initial backoff must be greater than zero";
        assert_eq!(flag_for("retry.backoff", reason), "--backoff-initial");
        assert_eq!(flag_for("reconnect", reason), "--reconnect-initial");
        let both = "initial backoff 2s is greater than the maximum 1s";
        assert_eq!(
            flag_for("retry.backoff", both),
            "--backoff-initial/--backoff-max"
        );
        assert_eq!(flag_for("retry.timeout", "x"), "--timeout");
    }

    #[test]
    fn counts_that_stop_traffic_are_refused() {
        assert!(parse_every("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_every("3"), Ok(3));
        assert!(parse_in_flight("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_in_flight("8"), Ok(8));
        assert!(parse_service("").is_err());
        assert_eq!(parse_service("echo").as_deref(), Ok("echo"));
    }
}
