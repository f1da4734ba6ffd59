//! A runtime-agnostic async subscriber: [`AsyncSubscriber`], whose
//! [`AsyncSubscriber::next`] returns a future of the next message, in the style of
//! [`crate::io::async_client`].
//!
//! A driver thread owns the [`Subscriber`] (its sockets cannot be shared between
//! threads) and hands messages over through a bounded queue ([`QUEUE`] messages): when
//! the task does not keep up, the thread waits, the SUB socket fills to its high-water
//! mark, and what the publisher then drops is repaired by replay later, so memory stays
//! bounded and nothing is lost. Futures are completed with std wakers; no executor is
//! assumed. Dropping the handle stops the thread (within a tenth of a second) without
//! waiting for it.
//!
//! It keeps no durable cursor: a message counts as processed when it is queued for the
//! task, so a cursor would run ahead of the application. Use the blocking
//! [`Subscriber`] with a store for that; [`AsyncSubscriber::spawn`] refuses one.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{ClientError, ConfigError, Error};
use crate::io::guard::lock;
use crate::io::subscriber::{Message, Subscriber, SubscriberBuilder};
use crate::io::Shutdown;

/// Messages queued between the driver thread and the task, at most.
pub const QUEUE: usize = 1024;

#[derive(Default)]
struct State {
    queue: VecDeque<Result<Message, Error>>,
    waker: Option<Waker>,
    /// The driver thread has ended: nothing more will come after the queue.
    done: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the task takes from a full queue, or on stop.
    space: Condvar,
    stop: Shutdown,
}

/// An async handle on a reliable subscriber. See the module docs.
///
/// ```no_run
/// # async fn demo() -> Result<(), bosun::Error> {
/// use bosun::io::async_subscriber::AsyncSubscriber;
/// use bosun::Subscriber;
/// let sub = AsyncSubscriber::spawn(
///     Subscriber::builder("tcp://127.0.0.1:5556").replay("tcp://127.0.0.1:5557"),
/// )?;
/// while let Some(msg) = sub.next().await {
///     let msg = msg?;
///     println!("#{} {:?}", msg.seq, msg.payload);
/// }
/// # Ok(())
/// # }
/// ```
pub struct AsyncSubscriber {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AsyncSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSubscriber").finish_non_exhaustive()
    }
}

impl AsyncSubscriber {
    /// Connects the subscriber `builder` describes (errors come back here) and starts
    /// its driver thread. A builder with a store is refused (see the module docs).
    pub fn spawn(builder: SubscriberBuilder) -> Result<Self, Error> {
        if builder.has_store() {
            return Err(ConfigError::Invalid {
                field: "store",
                reason: "an async subscriber keeps no durable cursor; use the blocking \
                         Subscriber with a store"
                    .into(),
            }
            .into());
        }
        let stop = Shutdown::new();
        let sub = builder.shutdown(&stop).connect()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            space: Condvar::new(),
            stop,
        });
        let driver = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("bosun-subscriber".into())
            .spawn(move || drive(sub, &driver))
            .map_err(|e| Error::io("start the subscriber thread", e))?;
        Ok(AsyncSubscriber { shared })
    }

    /// The next message in order; `None` once the subscriber has stopped (after an
    /// error, which comes first).
    pub fn next(&self) -> Next<'_> {
        Next { sub: self }
    }
}

impl Drop for AsyncSubscriber {
    fn drop(&mut self) {
        self.shared.stop.trigger();
        self.shared.space.notify_all();
    }
}

/// The future of [`AsyncSubscriber::next`].
#[derive(Debug)]
pub struct Next<'a> {
    sub: &'a AsyncSubscriber,
}

impl Future for Next<'_> {
    type Output = Option<Result<Message, Error>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = &self.sub.shared;
        let mut state = lock(&shared.state);
        if let Some(m) = state.queue.pop_front() {
            if state.queue.len() + 1 == QUEUE {
                shared.space.notify_one();
            }
            return Poll::Ready(Some(m));
        }
        if state.done {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The driver thread: receives, queues (waiting while the queue is full), wakes.
fn drive(mut sub: Subscriber, shared: &Shared) {
    loop {
        let got = sub.recv();
        let end = match &got {
            Ok(_) => false,
            Err(Error::Client(ClientError::Interrupted)) => break,
            Err(_) => true,
        };
        let mut state = lock(&shared.state);
        while state.queue.len() >= QUEUE && !shared.stop.is_triggered() {
            state = shared
                .space
                .wait_timeout(state, crate::io::SHUTDOWN_CHECK)
                .map_or_else(|p| p.into_inner().0, |(s, _)| s);
        }
        if shared.stop.is_triggered() {
            break;
        }
        state.queue.push_back(got);
        if let Some(w) = state.waker.take() {
            w.wake();
        }
        if end {
            break;
        }
    }
    let mut state = lock(&shared.state);
    state.done = true;
    if let Some(w) = state.waker.take() {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::publisher::Publisher;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// Polls `f` to completion on this thread, parking between wake-ups.
    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread, AtomicBool);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.1.store(true, Ordering::SeqCst);
                self.0.unpark();
            }
        }
        let unpark = Arc::new(Unpark(std::thread::current(), AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&unpark));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            while !unpark.1.swap(false, Ordering::SeqCst) {
                std::thread::park_timeout(Duration::from_millis(50));
            }
        }
    }

    #[test]
    fn messages_arrive_in_order_through_the_future() {
        let mut publisher = Publisher::builder("tcp://127.0.0.1:*")
            .replay("tcp://127.0.0.1:*")
            .heartbeat_interval(Duration::from_millis(50))
            .bind()
            .unwrap();
        for i in 0..20u8 {
            publisher.publish(b"t", vec![vec![i]]).unwrap();
        }
        let sub = AsyncSubscriber::spawn(
            Subscriber::builder(&publisher.endpoint())
                .replay(&publisher.replay_endpoint())
                .from_start(true),
        )
        .unwrap();
        let stop = Shutdown::new();
        let mut got = Vec::new();
        let deadline = crate::io::now() + Duration::from_secs(20);
        while got.len() < 20 {
            assert!(crate::io::now() < deadline, "only {got:?} arrived");
            // The publisher serves the replay between two looks at the queue.
            publisher.serve(Duration::from_millis(20), &stop).unwrap();
            let shared = &sub.shared;
            if lock(&shared.state).queue.is_empty() {
                continue;
            }
            let m = block_on(sub.next()).unwrap().unwrap();
            got.push(m.seq);
        }
        assert_eq!(got, (1..=20).collect::<Vec<u64>>());
        let refused = AsyncSubscriber::spawn(
            Subscriber::builder("tcp://127.0.0.1:1").store(&crate::store::Store::memory()),
        );
        assert!(matches!(
            refused,
            Err(Error::Config(ConfigError::Invalid { field: "store", .. }))
        ));
    }
}
