//! Typed configuration: every duration is a [`Duration`], every default is
//! documented once, here, and every struct validates itself before use.

use std::time::Duration;

use crate::error::ConfigError;

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
            return Err(invalid("--heartbeat-interval", "must be greater than zero"));
        }
        if self.liveness == 0 {
            return Err(invalid("--heartbeat-liveness", "must be at least 1"));
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
        }
    }
}

impl Retry {
    /// Checks that the timeout is non-zero, at least one attempt is made, and the
    /// backoff is sane.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(invalid("--timeout", "must be greater than zero"));
        }
        if self.retries == 0 {
            return Err(invalid(
                "--retries",
                "must be at least 1 (the first attempt)",
            ));
        }
        self.backoff.validate("--backoff")
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
            .contains("--heartbeat-interval"));
        let hb = Heartbeat {
            interval: Duration::from_secs(1),
            liveness: 0,
        };
        assert!(hb
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--heartbeat-liveness"));
        let r = Retry {
            retries: 0,
            ..Retry::default()
        };
        assert!(r.validate().unwrap_err().to_string().contains("--retries"));
        let r = Retry {
            timeout: Duration::ZERO,
            ..Retry::default()
        };
        assert!(r.validate().unwrap_err().to_string().contains("--timeout"));
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
}
