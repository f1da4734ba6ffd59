//! Capped, jittered exponential backoff as a pure function.

use std::time::Duration;

use crate::config::Backoff;

/// The pause before retry number `attempt` (1 for the first retry).
///
/// The nominal delay is `initial × 2^(attempt-1)`, capped at `max`. Jitter then shortens
/// it by up to `jitter × nominal`: `sample` is a uniform draw from `0.0..1.0` supplied
/// by the caller (so this function stays pure and testable with a table). The result is
/// always within `nominal × (1 - jitter) ..= nominal` and never above `max`.
/// `attempt` 0 is treated as 1.
pub fn delay(backoff: &Backoff, attempt: u32, sample: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(63);
    let factor = 1u64 << doublings;
    let nominal = match u32::try_from(factor) {
        Ok(f) => backoff.initial.saturating_mul(f),
        Err(_) => backoff.max,
    }
    .min(backoff.max);
    let sample = if sample.is_finite() {
        sample.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let cut = nominal.mul_f64(backoff.jitter.clamp(0.0, 1.0) * sample);
    nominal.saturating_sub(cut)
}

/// Consecutive failures to reach a peer, and the jittered pause before the next try:
/// the reconnect state both worker cores keep.
#[derive(Debug)]
pub struct Reconnects {
    backoff: Backoff,
    rng: fastrand::Rng,
    failures: u32,
}

impl Reconnects {
    /// No failures yet; `seed` drives the jitter.
    pub fn new(backoff: Backoff, seed: u64) -> Self {
        Reconnects {
            backoff,
            rng: fastrand::Rng::with_seed(seed),
            failures: 0,
        }
    }

    /// One more failure: returns its number (from 1) and the pause before the next try.
    pub fn failed(&mut self) -> (u32, Duration) {
        self.failures = self.failures.saturating_add(1);
        let after = delay(&self.backoff, self.failures, self.rng.f64());
        (self.failures, after)
    }

    /// The peer was heard from: the next failure starts the backoff over.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_then_caps_without_jitter() {
        let b = Backoff {
            initial: ms(1000),
            max: ms(32_000),
            jitter: 0.0,
        };
        let table = [
            (0, 1000),
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (5, 16_000),
            (6, 32_000),
            (7, 32_000),
            (40, 32_000),
            (u32::MAX, 32_000),
        ];
        for (attempt, want) in table {
            assert_eq!(delay(&b, attempt, 0.7), ms(want), "attempt {attempt}");
        }
    }

    #[test]
    fn jitter_shortens_within_bounds() {
        let b = Backoff {
            initial: ms(100),
            max: ms(1000),
            jitter: 0.5,
        };
        assert_eq!(delay(&b, 1, 0.0), ms(100));
        assert_eq!(delay(&b, 1, 1.0), ms(50));
        assert_eq!(delay(&b, 2, 0.5), ms(150));
        assert_eq!(delay(&b, 9, 1.0), ms(500));
        for i in 0..1000u32 {
            let s = f64::from(i) / 1000.0;
            for attempt in 1..12 {
                let d = delay(&b, attempt, s);
                assert!(d <= b.max);
                assert!(d >= ms(50));
            }
        }
        assert_eq!(delay(&b, 1, f64::NAN), ms(100));
        assert_eq!(delay(&b, 1, 7.0), ms(50));
    }
}
