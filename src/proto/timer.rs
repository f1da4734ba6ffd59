//! One table of named deadlines per core; the core's next wake-up is their minimum.

use std::time::Instant;

/// A small table of deadlines keyed by a timer enum `T`.
///
/// Each core declares one `enum` of its timers and keeps one `Timers` of it, instead of
/// `heartbeat_at` variables scattered through a loop. Setting a timer that is already
/// set moves it.
#[derive(Debug, Clone)]
pub struct Timers<T> {
    slots: Vec<(T, Instant)>,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers { slots: Vec::new() }
    }
}

impl<T: Copy + Eq> Timers<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `timer` to fire at `at`, replacing any earlier deadline it had.
    pub fn set(&mut self, timer: T, at: Instant) {
        match self.slots.iter_mut().find(|(t, _)| *t == timer) {
            Some(slot) => slot.1 = at,
            None => self.slots.push((timer, at)),
        }
    }

    /// Disarms `timer`; a no-op when it is not set.
    pub fn cancel(&mut self, timer: T) {
        self.slots.retain(|(t, _)| *t != timer);
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.slots.iter().find(|(t, _)| *t == timer).map(|s| s.1)
    }

    /// The earliest deadline of all armed timers.
    pub fn next(&self) -> Option<Instant> {
        self.slots.iter().map(|s| s.1).min()
    }

    /// Disarms and returns the earliest timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
        let (index, _) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(_, (_, at))| *at)?;
        Some(self.slots.swap_remove(index).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        A,
        B,
    }

    #[test]
    fn earliest_first_and_only_when_due() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut timers = Timers::new();
        assert_eq!(timers.next(), None);
        timers.set(T::A, t0 + Duration::from_secs(2));
        timers.set(T::B, t0 + Duration::from_secs(1));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_expired(t0), None);
        assert_eq!(timers.pop_expired(t0 + Duration::from_secs(5)), Some(T::B));
        assert_eq!(timers.pop_expired(t0 + Duration::from_secs(5)), Some(T::A));
        assert_eq!(timers.pop_expired(t0 + Duration::from_secs(5)), None);
        timers.set(T::A, t0);
        timers.set(T::A, t0 + Duration::from_secs(3));
        assert_eq!(timers.get(T::A), Some(t0 + Duration::from_secs(3)));
        timers.cancel(T::A);
        assert_eq!(timers.next(), None);
    }
}
