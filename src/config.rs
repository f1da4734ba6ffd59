//! Typed configuration: every duration is a [`Duration`], every default is
//! documented once, with its type, and every struct validates itself before use.
//!
//! Every settings type of the crate can be named from here:
//!
//! | Type | Settings of | Also at |
//! |---|---|---|
//! | [`Heartbeat`] | heartbeating between a worker and its queue or broker | `bosun::Heartbeat` |
//! | [`Retry`] | a client's timeout, attempts and backoff | `bosun::Retry` |
//! | [`Backoff`] | a capped, jittered exponential backoff ([`RECONNECT`]: a worker's) | `bosun::Backoff` |
//! | [`BrokerConfig`] | the Majordomo broker | [`crate::proto::broker`] |
//! | [`QueueConfig`] | the Paranoid Pirate queue | [`crate::proto::paranoid_pirate`] |
//! | [`FreelanceConfig`] | the Freelance client | [`crate::proto::freelance`] |
//! | [`TransportOptions`] | every socket (linger, high-water marks, largest frame) | [`crate::io`], [`crate::io::transport`] |
//! | [`Faults`] | the REP server's fault switches | [`crate::io::server`], [`crate::proto::server`] |
//! | [`ExecOptions`] | an `exec` handler (its timeout) | [`crate::io::handler`] |
//! | [`OutboxConfig`] | a client's outbox (durability, limit) | [`crate::io::outbox`] |
//!
//! ```
//! use std::time::Duration;
//! use bosun::config::{BrokerConfig, Heartbeat};
//!
//! let cfg = BrokerConfig {
//!     heartbeat: Heartbeat { interval: Duration::from_secs(1), liveness: 3 },
//!     ..BrokerConfig::default()
//! };
//! # let _ = cfg;
//! ```

use std::time::{Duration, Instant};

use crate::error::ConfigError;

pub use crate::io::handler::ExecOptions;
pub use crate::io::outbox::OutboxConfig;
pub use crate::io::receiver::ReceiverOptions;
pub use crate::io::transport::TransportOptions;
pub use crate::proto::broker::BrokerConfig;
pub use crate::proto::dedup::Limits as DedupLimits;
pub use crate::proto::freelance::FreelanceConfig;
pub use crate::proto::paranoid_pirate::QueueConfig;
pub use crate::proto::server::Faults;

/// Capped, jittered exponential backoff (see [`crate::proto::backoff::delay`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry. Doubled for each further retry.
    pub initial: Duration,
    /// The delay never exceeds this.
    pub max: Duration,
    /// Fraction in `0.0..=1.0` by which a delay may be shortened at random, so that
    /// many peers that failed together do not retry together. `0.0` is no jitter.
    pub jitter: f64,
}

impl Backoff {
    /// Checks that `initial <= max`, `initial > 0` and `jitter` is in `0.0..=1.0`.
    /// `name` is the field in errors (`retry.backoff`, `reconnect`).
    pub fn validate(&self, name: &'static str) -> Result<(), ConfigError> {
        if self.initial.is_zero() {
            return Err(invalid(name, "initial backoff must be greater than zero"));
        }
        if self.initial > self.max {
            return Err(invalid(
                name,
                format!(
                    "initial backoff {:?} is greater than the maximum {:?}",
                    self.initial, self.max
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(invalid(
                name,
                format!("jitter {} is outside 0.0..=1.0", self.jitter),
            ));
        }
        Ok(())
    }

    /// [`Backoff::validate`], and that the longest pause still lands on a clock reading
    /// after `now` (a pause of 10^19 s would overflow an `Instant`).
    pub fn validate_at(&self, name: &'static str, now: Instant) -> Result<(), ConfigError> {
        self.validate(name)?;
        fits(name, now, self.max)
    }
}

/// The longest duration any setting may have: 100 years. Far beyond any real use,
/// and small enough that adding it to any clock reading cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks that `d` is at most [`MAX_DURATION`] and that `now + d` is a valid instant.
pub fn fits(field: &'static str, now: Instant, d: Duration) -> Result<(), ConfigError> {
    if d > MAX_DURATION || now.checked_add(d).is_none() {
        return Err(invalid(
            field,
            format!("{d:?} is longer than the most allowed, {MAX_DURATION:?} (100 years)"),
        ));
    }
    Ok(())
}

/// Two-way heartbeating between a worker and its queue or broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often each side sends a heartbeat. Default 1 s, the 6/PPP reference value.
    pub interval: Duration,
    /// How many intervals of silence make a peer dead. Default 3: the RFCs allow 3 to 5,
    /// and 3 finds a dead peer soonest without flapping on one late beat.
    pub liveness: u32,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(1),
            liveness: 3,
        }
    }
}

impl Heartbeat {
    /// How long a peer may stay silent before it is dead: `interval × liveness`.
    pub fn expiry(&self) -> Duration {
        self.interval.saturating_mul(self.liveness)
    }

    /// Checks that the interval is non-zero and liveness is at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.interval.is_zero() {
            return Err(invalid("heartbeat.interval", "must be greater than zero"));
        }
        if self.liveness == 0 {
            return Err(invalid("heartbeat.liveness", "must be at least 1"));
        }
        Ok(())
    }

    /// [`Heartbeat::validate`], and that the expiry lands on a valid clock reading
    /// after `now`.
    pub fn validate_at(&self, now: Instant) -> Result<(), ConfigError> {
        self.validate()?;
        fits("heartbeat.interval", now, self.interval)?;
        if self.interval.saturating_mul(self.liveness) > MAX_DURATION {
            return Err(invalid(
                "heartbeat.liveness",
                format!(
                    "{} intervals of {:?} make an expiry longer than the most allowed, {MAX_DURATION:?} (100 years)",
                    self.liveness, self.interval
                ),
            ));
        }
        Ok(())
    }
}

/// How a client retries a request that got no reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// How long to wait for a reply to one attempt. Default 2500 ms, the Lazy Pirate
    /// reference value.
    pub timeout: Duration,
    /// How many attempts in all (the first send included) before giving up. Default 3,
    /// the Lazy Pirate reference value.
    pub retries: u32,
    /// Pause between a timed-out attempt and the next. Default 250 ms doubling to 8 s,
    /// jitter 0.2: short enough that a restarted server is found quickly, capped so a
    /// long outage does not turn into minute-long waits.
    pub backoff: Backoff,
    /// The overall budget of a request, from its first send: no attempt is waited for
    /// past it, and none starts after it, whatever `retries` says. `None` (the default):
    /// every attempt is made, and the budget is the policy's own worst case, every
    /// attempt timing out after the longest pause ([`Retry::budget`]). Either way a
    /// request carries its deadline (send time plus budget) in its metadata, so a broker
    /// drops it once its client has given up.
    pub deadline: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            timeout: Duration::from_millis(2500),
            retries: 3,
            backoff: Backoff {
                initial: Duration::from_millis(250),
                max: Duration::from_secs(8),
                jitter: 0.2,
            },
            deadline: None,
        }
    }
}

impl Retry {
    /// Checks that the timeout is non-zero, at least one attempt is made, and the
    /// backoff is sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(invalid("retry.timeout", "must be greater than zero"));
        }
        if self.retries == 0 {
            return Err(invalid(
                "retry.retries",
                "must be at least 1 (the first attempt)",
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            return Err(invalid("retry.deadline", "must be greater than zero"));
        }
        self.backoff.validate("retry.backoff")
    }

    /// [`Retry::validate`], and that every timeout and pause lands on a valid clock
    /// reading after `now`.
    pub fn validate_at(&self, now: Instant) -> Result<(), ConfigError> {
        self.validate()?;
        fits("retry.timeout", now, self.timeout)?;
        if let Some(d) = self.deadline {
            fits("retry.deadline", now, d)?;
        }
        self.backoff.validate_at("retry.backoff", now)
    }

    /// The overall budget of one request: [`Retry::deadline`] if set, else the worst
    /// case of the policy: `retries` timeouts and the longest pause (no jitter) after
    /// each but the last. At most [`MAX_DURATION`].
    pub fn budget(&self) -> Duration {
        if let Some(d) = self.deadline {
            return d.min(MAX_DURATION);
        }
        let waits = self.timeout.saturating_mul(self.retries);
        // Pauses after attempts 1..retries-1: they double from `initial` until they
        // reach `max`, then stay there.
        let pauses = self.retries.saturating_sub(1);
        let mut total = Duration::ZERO;
        let mut pause = self.backoff.initial.min(self.backoff.max);
        let mut counted = 0;
        while counted < pauses && pause < self.backoff.max {
            total = total.saturating_add(pause);
            pause = pause.saturating_mul(2).min(self.backoff.max);
            counted += 1;
        }
        total = total.saturating_add(self.backoff.max.saturating_mul(pauses - counted));
        waits.saturating_add(total).min(MAX_DURATION)
    }

    /// With a [`Retry::deadline`], the last moment a request first sent at `now` may
    /// still be waited for; without one, `None`: every attempt is made, however late
    /// (a busy process may start them late), and the budget is only the deadline the
    /// request carries.
    pub fn give_up_at(&self, now: Instant) -> Option<Instant> {
        self.deadline
            .map(|d| now.checked_add(d).unwrap_or(now + MAX_DURATION))
    }
}

/// The default reconnect backoff of a worker: 1 s doubling to 32 s (the 6/PPP
/// reference values), jitter 0.2 so that workers cut off together do not return together.
pub const RECONNECT: Backoff = Backoff {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(32),
    jitter: 0.2,
};

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_worst_case_of_the_policy_or_the_deadline() {
        // 3 × 2.5 s, pauses of 250 ms and 500 ms.
        assert_eq!(Retry::default().budget(), Duration::from_millis(8250));
        let r = Retry {
            retries: 10,
            ..Retry::default()
        };
        // 10 × 2.5 s; pauses 0.25, 0.5, 1, 2, 4, then 8 s × 4.
        assert_eq!(r.budget(), Duration::from_millis(25_000 + 7_750 + 32_000));
        let r = Retry {
            retries: u32::MAX,
            ..Retry::default()
        };
        assert_eq!(r.budget(), MAX_DURATION);
        let r = Retry {
            deadline: Some(Duration::from_secs(1)),
            ..Retry::default()
        };
        assert_eq!(r.budget(), Duration::from_secs(1));
        let r = Retry {
            deadline: Some(Duration::ZERO),
            ..Retry::default()
        };
        assert!(r.validate().is_err());
    }

    #[test]
    fn defaults_are_valid() {
        Heartbeat::default().validate().unwrap();
        Retry::default().validate().unwrap();
        RECONNECT.validate("--reconnect").unwrap();
        assert_eq!(Heartbeat::default().expiry(), Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let hb = Heartbeat {
            interval: Duration::ZERO,
            liveness: 3,
        };
        assert!(hb
            .validate()
            .unwrap_err()
            .to_string()
            .contains("heartbeat.interval"));
        let hb = Heartbeat {
            interval: Duration::from_secs(1),
            liveness: 0,
        };
        assert!(hb
            .validate()
            .unwrap_err()
            .to_string()
            .contains("heartbeat.liveness"));
        let r = Retry {
            retries: 0,
            ..Retry::default()
        };
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry.retries"));
        let r = Retry {
            timeout: Duration::ZERO,
            ..Retry::default()
        };
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry.timeout"));
        let b = Backoff {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(1),
            jitter: 0.0,
        };
        assert!(b.validate("--reconnect").is_err());
        let b = Backoff {
            jitter: 1.5,
            ..RECONNECT
        };
        assert!(b.validate("--reconnect").is_err());
    }

    #[test]
    fn every_settings_type_is_here_and_the_same_as_at_its_old_path() {
        // The types at the old paths and here are one and the same.
        let broker: crate::proto::broker::BrokerConfig = BrokerConfig::default();
        let queue: crate::proto::paranoid_pirate::QueueConfig = QueueConfig::default();
        let freelance: crate::proto::freelance::FreelanceConfig = FreelanceConfig::default();
        let transport: crate::io::TransportOptions = TransportOptions::default();
        let faults: crate::io::server::Faults = Faults::default();
        let exec: crate::io::handler::ExecOptions = ExecOptions::default();
        let heartbeat: crate::Heartbeat = Heartbeat::default();
        let retry: crate::Retry = Retry::default();
        let backoff: crate::Backoff = RECONNECT;
        #[allow(clippy::disallowed_methods)] // a fixed origin
        let now = Instant::now();
        broker.validate_at(now).unwrap();
        freelance.validate_at(now).unwrap();
        heartbeat.validate_at(now).unwrap();
        retry.validate_at(now).unwrap();
        backoff.validate_at("reconnect", now).unwrap();
        assert!(queue.max_queue > 0);
        assert_eq!(transport.linger, crate::io::SHUTDOWN_LINGER);
        assert_eq!(faults, crate::proto::server::Faults::default());
        assert_eq!(exec.timeout, crate::io::handler::DEFAULT_EXEC_TIMEOUT);
    }

    #[test]
    fn durations_that_would_overflow_a_clock_reading_are_refused() {
        #[allow(clippy::disallowed_methods)] // a fixed origin
        let now = Instant::now();
        let huge = Duration::from_secs(u64::MAX);
        let hb = Heartbeat {
            interval: huge,
            liveness: 3,
        };
        assert!(hb.validate().is_ok());
        assert!(hb
            .validate_at(now)
            .unwrap_err()
            .to_string()
            .contains("heartbeat.interval"));
        let r = Retry {
            timeout: huge,
            ..Retry::default()
        };
        assert!(r.validate_at(now).is_err());
        let b = Backoff {
            max: huge,
            ..RECONNECT
        };
        assert!(b.validate_at("reconnect", now).is_err());
        assert!(Retry::default().validate_at(now).is_ok());
    }
}
