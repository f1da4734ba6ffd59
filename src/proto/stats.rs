//! Sliding-window service statistics: arrival and completion rates, mean wait and
//! service time, and the time-averaged queue length, so that Little's law
//! (L ≈ λ·W) can be checked against live traffic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A service name as `mmi.stats` writes it: every byte outside printable ASCII
/// (`!` to `~`), and `%` and `=`, becomes `%XX`, two upper-case hex digits. So a name
/// holds no space, newline or `=` on the wire and a `key=value` line stays parseable
/// whatever the name's bytes (7/MDP allows any), while ordinary names (letters,
/// digits, `.-_:/`) are written unchanged. [`unescape_name`] gives the bytes back.
pub fn escape_name(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_graphic() && b != b'%' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bytes of a name written by [`escape_name`]; `None` for a `%` not followed by
/// two hex digits.
pub fn unescape_name(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// Buckets per window: the window slides in steps of `window / BUCKETS`.
const BUCKETS: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    arrivals: u64,
    completions: u64,
    dispatches: u64,
    /// Sum of queue waits of the requests dispatched in this bucket.
    wait: Duration,
    /// Sum of service times of the requests completed in this bucket.
    service: Duration,
    /// Integral of the queue length over this bucket's time, in request·seconds.
    area: f64,
}

/// Counters of one service over a sliding window.
#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    step: Duration,
    /// Where the data in `buckets` begins: creation, then the end of the last bucket
    /// that left the window. Rates divide by the time since then (at most `span`), not
    /// by `span` itself, which would under-report them by up to one step in ten.
    born: Instant,
    buckets: VecDeque<Bucket>,
    queue_len: usize,
    queue_since: Instant,
}

/// A snapshot of a [`Window`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Arrivals per second (λ).
    pub arrival_rate: f64,
    /// Completions per second (μ, the throughput achieved).
    pub completion_rate: f64,
    /// Mean time a dispatched request waited in the queue (W), in seconds.
    pub mean_wait: f64,
    /// Mean time from dispatch to reply, in seconds.
    pub mean_service: f64,
    /// Time-averaged queue length over the window (L).
    pub mean_queue: f64,
}

impl Window {
    /// An empty window of `span` (at least 1 ms) starting at `now`.
    pub fn new(now: Instant, span: Duration) -> Self {
        let span = span.max(Duration::from_millis(1));
        Window {
            span,
            step: span / BUCKETS,
            born: now,
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            queue_len: 0,
            queue_since: now,
        }
    }

    /// A request arrived.
    pub fn arrived(&mut self, now: Instant) {
        self.bucket(now).arrivals += 1;
    }

    /// A request left the queue for a worker after waiting `wait`.
    pub fn dispatched(&mut self, now: Instant, wait: Duration) {
        let b = self.bucket(now);
        b.dispatches += 1;
        b.wait += wait;
    }

    /// A request was answered `service` after it was dispatched.
    pub fn completed(&mut self, now: Instant, service: Duration) {
        let b = self.bucket(now);
        b.completions += 1;
        b.service += service;
    }

    /// The queue length is now `len`.
    pub fn queue_length(&mut self, now: Instant, len: usize) {
        self.accumulate(now);
        self.queue_len = len;
    }

    /// Rates over the window ending at `now` (or since `new`, if that is shorter).
    pub fn rates(&mut self, now: Instant) -> Rates {
        self.accumulate(now);
        self.expire(now);
        let elapsed = now
            .saturating_duration_since(self.born)
            .min(self.span)
            .as_secs_f64()
            .max(1e-9);
        let sum = |f: fn(&Bucket) -> u64| self.buckets.iter().map(f).sum::<u64>();
        let (arrivals, completions, dispatches) = (
            sum(|b| b.arrivals),
            sum(|b| b.completions),
            sum(|b| b.dispatches),
        );
        let wait: Duration = self.buckets.iter().map(|b| b.wait).sum();
        let service: Duration = self.buckets.iter().map(|b| b.service).sum();
        let area: f64 = self.buckets.iter().map(|b| b.area).sum();
        let mean = |total: Duration, n: u64| {
            if n == 0 {
                0.0
            } else {
                total.as_secs_f64() / n as f64
            }
        };
        Rates {
            arrival_rate: arrivals as f64 / elapsed,
            completion_rate: completions as f64 / elapsed,
            mean_wait: mean(wait, dispatches),
            mean_service: mean(service, completions),
            mean_queue: area / elapsed,
        }
    }

    fn accumulate(&mut self, now: Instant) {
        let since = self.queue_since;
        if now <= since {
            return;
        }
        let len = self.queue_len as f64;
        self.queue_since = now;
        if len > 0.0 {
            self.bucket(now).area += len * (now - since).as_secs_f64();
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut Bucket {
        self.expire(now);
        let fresh = match self.buckets.back() {
            Some(b) => now >= b.start + self.step,
            None => true,
        };
        if fresh {
            self.buckets.push_back(Bucket {
                start: now,
                arrivals: 0,
                completions: 0,
                dispatches: 0,
                wait: Duration::ZERO,
                service: Duration::ZERO,
                area: 0.0,
            });
        }
        // A bucket was just pushed if there was none.
        self.buckets.back_mut().expect("a bucket exists")
    }

    fn expire(&mut self, now: Instant) {
        while let Some(front) = self.buckets.front() {
            if front.start + self.span <= now {
                self.born = self.born.max(front.start + self.step);
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn littles_law_holds_for_a_steady_queue() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut w = Window::new(t0, Duration::from_secs(10));
        // One arrival every 100 ms, each waits 300 ms in the queue: L should be 3.
        let ms = Duration::from_millis;
        let mut queue: VecDeque<Instant> = VecDeque::new();
        for tick in 0..200u64 {
            let now = t0 + ms(tick * 100);
            while queue.front().is_some_and(|&a| a + ms(300) <= now) {
                let a = queue.pop_front().unwrap();
                w.dispatched(now, now - a);
                w.completed(now, Duration::ZERO);
            }
            w.arrived(now);
            queue.push_back(now);
            w.queue_length(now, queue.len());
        }
        let r = w.rates(t0 + ms(19_950));
        assert!((r.arrival_rate - 10.0).abs() < 1.0, "{r:?}");
        assert!((r.mean_wait - 0.3).abs() < 0.01, "{r:?}");
        let little = r.arrival_rate * r.mean_wait;
        assert!(
            (r.mean_queue - little).abs() < 0.5,
            "L {} vs λW {little}",
            r.mean_queue
        );
    }

    #[test]
    fn names_are_escaped_into_one_token_and_back() {
        let odd: &[u8] = b"a b\nc=d%e\xff\x00.";
        let text = escape_name(odd);
        assert_eq!(text, "a%20b%0Ac%3Dd%25e%FF%00.");
        assert!(!text.contains([' ', '\n', '=']));
        assert_eq!(unescape_name(&text).as_deref(), Some(odd));
        assert_eq!(escape_name(b"echo.v2_x-y:z/w"), "echo.v2_x-y:z/w");
        assert_eq!(unescape_name("bad%4"), None);
        assert_eq!(unescape_name("bad%zz"), None);
    }

    #[test]
    fn old_traffic_leaves_the_window() {
        #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
        let t0 = Instant::now();
        let mut w = Window::new(t0, Duration::from_secs(1));
        for i in 0..100 {
            w.arrived(t0 + Duration::from_millis(i));
        }
        assert!(w.rates(t0 + Duration::from_millis(500)).arrival_rate > 100.0);
        assert_eq!(w.rates(t0 + Duration::from_secs(5)).arrival_rate, 0.0);
    }
}
