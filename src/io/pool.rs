//! The handler pool of a Majordomo worker of capacity K > 1: K threads behind the socket
//! thread.
//!
//! Jobs go to the threads through one queue under a mutex. A sleeping thread is woken
//! only when a job is queued and no thread is awake and free to take it (none between
//! two handlers, none already being woken); a thread that takes a job and leaves more
//! behind wakes the next in the same way. So a job never waits behind a running handler
//! while a thread sleeps, yet a burst of fast requests is handled by the threads running
//! anyway instead of waking one thread per request. Replies come back through a second queue, and a
//! doorbell (an inproc zmq socket the socket thread polls beside its DEALER) is rung only
//! when the socket thread has not been rung since it last took the replies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::io::guard::lock;
use crate::io::handler::{self, Handler, Reply, Request};
use crate::io::transport::Transport;

/// What a pool thread hands back: the token of the request and its reply (a handler
/// that panicked gives a failed reply, and its thread goes on).
pub(crate) type Outcome = (u64, Reply);

#[derive(Default)]
struct Jobs {
    queue: VecDeque<(u64, Request)>,
    /// Threads awake and not in a handler: they take queued jobs without being woken.
    spare: usize,
    /// Threads waiting on `work`.
    sleeping: usize,
    /// Threads notified that have not yet woken.
    waking: usize,
    stop: bool,
}

struct Inner {
    jobs: Mutex<Jobs>,
    work: Condvar,
    outcomes: Mutex<Vec<Outcome>>,
    /// The doorbell was rung since the socket thread last took the outcomes.
    rung: AtomicBool,
}

/// A running pool. Dropping it stops the threads once they finish what they hold.
pub(crate) struct Pool {
    inner: Arc<Inner>,
    doorbell: zmq::Socket,
}

impl Jobs {
    /// Whether a sleeping thread must be woken for the queued jobs; if so, counts it as
    /// waking (the caller notifies after unlocking).
    fn must_wake(&mut self) -> bool {
        let wake =
            !self.queue.is_empty() && self.spare + self.waking == 0 && self.sleeping > self.waking;
        if wake {
            self.waking += 1;
        }
        wake
    }
}

impl Pool {
    /// Starts `k` threads running `handler`.
    pub(crate) fn start(k: u32, handler: &Handler) -> Result<Pool, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pipe = format!(
            "inproc://bosun-pool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The pool's inproc sockets live in a context of their own. A handler still busy
        // at shutdown keeps its socket, and so its context, open until the process exits;
        // in the worker's context that would stop it from being terminated, and the
        // process could exit before the I/O thread sent the final DISCONNECT.
        let transport = Transport::new(
            &zmq::Context::new(),
            crate::io::transport::TransportOptions {
                linger: Duration::ZERO,
                ..Default::default()
            },
        );
        let (doorbell, _) = transport.bind(zmq::PULL, &pipe)?;
        let pool = Pool {
            inner: Arc::new(Inner {
                jobs: Mutex::new(Jobs::default()),
                work: Condvar::new(),
                outcomes: Mutex::new(Vec::new()),
                rung: AtomicBool::new(false),
            }),
            doorbell,
        };
        // Built before the threads: if one cannot be started, dropping `pool` stops
        // those that were.
        for n in 0..k {
            let ring = transport.connect(zmq::PUSH, std::slice::from_ref(&pipe))?;
            let inner = Arc::clone(&pool.inner);
            let shared = Arc::clone(handler);
            // Counted before it runs: a started thread is awake and free until it
            // finds the queue empty.
            lock(&pool.inner.jobs).spare += 1;
            let started = std::thread::Builder::new()
                .name(format!("bosun-handler-{n}"))
                .spawn(move || pool_thread(&inner, &ring, &shared));
            if let Err(e) = started {
                lock(&pool.inner.jobs).spare -= 1;
                return Err(Error::io("spawn handler thread", e));
            }
        }
        Ok(pool)
    }

    /// Queues a request; wakes a thread only if none awake is free to take it.
    pub(crate) fn submit(&self, token: u64, request: Request) {
        let wake = {
            let mut jobs = lock(&self.inner.jobs);
            jobs.queue.push_back((token, request));
            jobs.must_wake()
        };
        if wake {
            self.inner.work.notify_one();
        }
    }

    /// The socket to poll: readable when outcomes may be waiting.
    pub(crate) fn doorbell(&self) -> &zmq::Socket {
        &self.doorbell
    }

    /// Everything the threads handed back since the last call.
    pub(crate) fn outcomes(&self) -> Vec<Outcome> {
        while self.doorbell.recv_bytes(zmq::DONTWAIT).is_ok() {}
        // Cleared before the take: an outcome pushed after it rings again.
        self.inner.rung.store(false, Ordering::SeqCst);
        std::mem::take(&mut *lock(&self.inner.outcomes))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.inner.jobs).stop = true;
        self.inner.work.notify_all();
    }
}

/// One handler thread: takes jobs until the pool stops.
fn pool_thread(inner: &Inner, ring: &zmq::Socket, handler: &Handler) {
    let mut jobs = lock(&inner.jobs);
    loop {
        // A stopped pool's queued jobs are the broker's again (it re-queues what the
        // worker held when the worker goes): none is started.
        if jobs.stop {
            return;
        }
        if let Some((token, request)) = jobs.queue.pop_front() {
            jobs.spare -= 1;
            let wake = jobs.must_wake();
            drop(jobs);
            if wake {
                inner.work.notify_one();
            }
            let reply = handler::call(handler, request);
            lock(&inner.outcomes).push((token, reply));
            // Never blocks: at most one ring is outstanding, so a failed send means the
            // pool (and its doorbell) is gone.
            if !inner.rung.swap(true, Ordering::SeqCst) && ring.send("", zmq::DONTWAIT).is_err() {
                return;
            }
            jobs = lock(&inner.jobs);
            jobs.spare += 1;
            continue;
        }
        jobs.spare -= 1;
        jobs.sleeping += 1;
        jobs = inner.work.wait(jobs).unwrap_or_else(|e| e.into_inner());
        jobs.sleeping -= 1;
        jobs.waking = jobs.waking.saturating_sub(1);
        jobs.spare += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io;
    use std::sync::Condvar;
    use std::time::Instant;

    /// Waits (5 s at most, yielding) until `cond` holds.
    fn wait_until(cond: impl Fn() -> bool, what: &str) {
        let until = io::now() + Duration::from_secs(5);
        while !cond() {
            assert!(io::now() < until, "waited 5 s for {what}");
            std::thread::yield_now();
        }
    }

    /// A handler that counts its calls and holds a `hold` request until `gate` opens (5 s
    /// at most).
    fn gated(gate: &Arc<(Mutex<bool>, Condvar)>, calls: &Arc<AtomicU64>) -> Handler {
        let (g, c) = (Arc::clone(gate), Arc::clone(calls));
        handler::bytes(move |body| {
            c.fetch_add(1, Ordering::SeqCst);
            if body != b"hold" {
                return body;
            }
            let (open, cv) = &*g;
            let mut open = lock(open);
            let until = io::now() + Duration::from_secs(5);
            while !*open && io::now() < until {
                open = cv.wait_timeout(open, until - io::now()).unwrap().0;
            }
            body
        })
    }

    /// Collects `n` outcomes, waiting on the doorbell until `deadline`.
    fn collect(pool: &Pool, n: usize, deadline: Instant) -> Vec<Outcome> {
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(io::now());
            assert!(!left.is_zero(), "only {} of {n} outcomes", got.len());
            let mut items = [pool.doorbell().as_poll_item(zmq::POLLIN)];
            io::poll(&mut items, io::poll_millis(io::now(), Some(deadline))).unwrap();
            // Only when rung, as the worker's driver does: an outcome that never rings
            // the doorbell must show up as missing.
            if items[0].is_readable() {
                got.extend(pool.outcomes());
            }
        }
        got
    }

    /// A burst of K jobs submitted back to back, to handlers that each wait until all K
    /// run at once: every one must see the other K - 1, so no job may wait behind a
    /// running handler while a thread sleeps.
    #[test]
    fn a_burst_of_k_jobs_runs_on_k_threads_at_once() {
        const K: usize = 4;
        let meeting = Arc::new((Mutex::new(0usize), Condvar::new()));
        let m = Arc::clone(&meeting);
        let handler = handler::bytes(move |_body| {
            let (count, cv) = &*m;
            let mut n = lock(count);
            *n += 1;
            cv.notify_all();
            let until = io::now() + Duration::from_secs(3);
            while *n < K {
                let left = until.saturating_duration_since(io::now());
                if left.is_zero() {
                    break;
                }
                n = cv.wait_timeout(n, left).unwrap().0;
            }
            n.to_string().into_bytes()
        });
        let pool = Pool::start(K as u32, &handler).unwrap();
        // All asleep first, so that every job has to be handed on by a wake-up.
        wait_until(
            || lock(&pool.inner.jobs).sleeping == K,
            "the threads to sleep",
        );
        for i in 0..K {
            pool.submit(i as u64, handler::plain(vec![b"x".to_vec()]));
        }
        let got = collect(&pool, K, io::now() + Duration::from_secs(10));
        let seen: Vec<String> = got
            .iter()
            .map(|(_, reply)| match reply {
                Ok(body) => String::from_utf8_lossy(&body.concat()).into(),
                Err(why) => panic!("handler failed: {why}"),
            })
            .collect();
        assert!(
            seen.iter().all(|s| s == &K.to_string()),
            "handlers saw {seen:?} running at once, want {K} each"
        );
    }

    /// A dropped pool's threads all end, the one still in a handler once it returns,
    /// and the jobs still queued are never started (they are the broker's again).
    #[test]
    fn a_dropped_pool_ends_every_thread_and_starts_no_queued_job() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let handler = gated(&gate, &calls);
        let pool = Pool::start(1, &handler).unwrap();
        // The first is answered (its ring is left unanswered, so the thread will not try
        // the doorbell again); the one thread then holds the second; two wait behind it.
        for (n, body) in ["go", "hold", "go", "go"].into_iter().enumerate() {
            pool.submit(n as u64, handler::plain(vec![body.as_bytes().to_vec()]));
        }
        wait_until(
            || calls.load(Ordering::SeqCst) == 2 && lock(&pool.inner.jobs).queue.len() == 2,
            "the second job to start",
        );
        drop(pool);
        *lock(&gate.0) = true;
        gate.1.notify_all();
        wait_until(
            || Arc::strong_count(&handler) == 1,
            "every pool thread to end",
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a queued job ran after the stop"
        );
    }

    /// Many more fast jobs than threads: every job is answered once, to its client.
    #[test]
    fn every_job_is_answered_once() {
        const JOBS: usize = 2000;
        let handler = handler::echo();
        let pool = Pool::start(8, &handler).unwrap();
        for i in 0..JOBS {
            pool.submit(
                i as u64,
                handler::plain(vec![(i as u32).to_be_bytes().to_vec()]),
            );
        }
        let got = collect(&pool, JOBS, io::now() + Duration::from_secs(20));
        let mut tokens: Vec<u64> = got
            .iter()
            .map(|(token, reply)| {
                let body = reply.as_ref().expect("echo never fails").concat();
                assert_eq!(
                    body,
                    (*token as u32).to_be_bytes(),
                    "a reply went to another job"
                );
                *token
            })
            .collect();
        tokens.sort_unstable();
        assert_eq!(tokens, (0..JOBS as u64).collect::<Vec<_>>());
    }

    /// A handler that panics fails its request and its thread goes on serving.
    #[test]
    fn a_panicking_handler_fails_its_request_and_the_thread_goes_on() {
        let handler = handler::bytes(|body| {
            if body == b"poison" {
                panic!("poison")
            }
            body
        });
        let pool = Pool::start(1, &handler).unwrap();
        pool.submit(1, handler::plain(vec![b"poison".to_vec()]));
        pool.submit(2, handler::plain(vec![b"fine".to_vec()]));
        let mut got = collect(&pool, 2, io::now() + Duration::from_secs(10));
        got.sort_by_key(|(t, _)| *t);
        assert!(matches!(&got[0].1, Err(e) if e.message.contains("poison")));
        assert_eq!(got[1].1, Ok(vec![b"fine".to_vec()]));
    }
}
