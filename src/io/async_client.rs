//! A runtime-agnostic async Majordomo client: [`AsyncClient`], a cheap handle whose
//! [`AsyncClient::request`] returns a future, completed by a driver thread that owns
//! the socket.
//!
//! # Design
//!
//! - **One driver thread per client, the one loop.** The thread owns the DEALER and the
//!   7/MDP client core ([`MdpClient`] in [`Mode::Pipelined`]: many requests over one
//!   socket, each with its own timeout and retries, replies matched by id) and runs
//!   them in [`Driver::run`], the loop every bosun driver uses. A zmq socket cannot be
//!   shared between threads, so the handle never touches it: it hands requests over.
//! - **Submissions through the driver's wake socket.** A request is put in a queue
//!   behind a mutex, and a zero-length message on an inproc PUSH wakes the driver's
//!   `zmq::poll` (the PULL end is the `wake` socket of [`Driver::run`]; both ends are
//!   made by the client's [`Transport`]). Only the submission that finds the queue
//!   without a wake on its way sends one, so a burst of requests costs one wake-up of
//!   the driver, not one per request; the payload itself never crosses a socket twice.
//! - **Futures completed with std [`Waker`]s.** Each request has a one-shot slot (a
//!   mutex around "waiting, with this waker" or "done, with this result"); the driver
//!   fills it and calls the waker. Nothing here knows an executor: tokio, async-std,
//!   smol or a ten-line `block_on` all work, and the library depends on none of them.
//! - **Eager requests.** [`AsyncClient::request`] queues the request at once and
//!   returns a [`Request`] future (so many requests can be started from one task and
//!   awaited later); `client.request(service, payload).await` reads like an
//!   `async fn`. A [`Request`] is `Send + 'static` and holds a handle of its client, so
//!   it can be spawned, and the client's thread runs until it is answered.
//! - **Dropping.** Dropping the last handle (clients and unfinished requests alike)
//!   stops the driver thread at once: it closes its sockets and ends. The drop does
//!   not wait for that (it may run on an executor's thread, which must not block);
//!   [`AsyncClient::driver_exit`] gives a [`DriverExit`] to wait on when a program
//!   wants to know the thread is gone. A [`Request`] dropped before its reply frees
//!   nothing at once, because the core goes on retrying it, but the driver forgets its
//!   slot when the reply (which is then dropped) or the give-up comes, so nothing
//!   leaks: [`AsyncClient::outstanding`] counts it until then.
//! - **Outbox.** With [`AsyncClientBuilder::outbox`], [`AsyncClient::request`] stores
//!   the request in the caller's thread before it returns (with `every`, on disk; a
//!   full outbox completes the future at once with [`ClientError::OutboxFull`]); the
//!   driver thread confirms what was queued in one turn with one flush (`batched`)
//!   before it sends any of it, and records replies and give-ups through the one hook
//!   of [`crate::io::outbox`]. [`AsyncClient::recover`] re-sends what a crash left
//!   pending, with the original ids.
//! - **Errors.** A handler that failed (or a request the broker refused) is
//!   [`ClientError::Remote`]; every attempt timing out is [`ClientError::GaveUp`], with
//!   the body handed back; a request still waiting when the driver stops (on
//!   [`AsyncClient::shutdown`], or when its socket cannot be made) is
//!   [`ClientError::Interrupted`], and so is one made after that.
//!
//! In pipelined mode a reply is matched by the id in its bosun metadata frame, which a
//! bosun broker always adds; a foreign broker's plain reply cannot be matched, is
//! logged and dropped, and its request ends in a give-up. Use the blocking
//! [`MajordomoClient`](crate::io::mdclient::MajordomoClient) there.
//!
//! # Example
//! ```no_run
//! # async fn demo() -> Result<(), bosun::Error> {
//! use bosun::io::async_client::AsyncClient;
//! let client = AsyncClient::connect("tcp://127.0.0.1:5555")?;
//! let replies = [
//!     client.request("echo", vec![b"one".to_vec()]),
//!     client.request("echo", vec![b"two".to_vec()]),
//! ];
//! for reply in replies {
//!     println!("{:?}", reply.await?);
//! }
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use foldhash::HashMap;
use uuid::Uuid;

use crate::config::Retry;
use crate::error::{ClientError, Error};
use crate::io::driver::{Driver, Flow, Input, Sockets};
use crate::io::guard::lock;
use crate::io::lazy_pirate::{answer_to_result, open_outbox};
use crate::io::mdclient::log_event;
use crate::io::outbox::{self, OutboxConfig, SharedOutbox, Stored};
use crate::io::transport::Transport;
use crate::io::{self, Shutdown};
use crate::proto::client::{Event, MdpClient, Mode};
use crate::proto::envelope::Envelope;
use crate::proto::frames::Frames;
use crate::proto::lazy_pirate::check_size;
use crate::store::{Appended, OutboxRecord, Store};

/// The name of every client's driver thread.
pub const THREAD_NAME: &str = "bosun-async";

/// Settings of an [`AsyncClient`], from [`AsyncClient::builder`].
#[derive(Debug, Clone)]
pub struct AsyncClientBuilder {
    endpoint: String,
    transport: Option<Transport>,
    retry: Retry,
    outbox: Option<(Store, OutboxConfig)>,
}

impl AsyncClientBuilder {
    crate::io::builder_setters!(transport, retry, outbox);

    /// Opens the outbox if one was given, makes the sockets, connects, and starts the
    /// driver thread. Fails on a retry policy or outbox that cannot work, a socket that
    /// cannot be made, or no thread.
    pub fn connect(self) -> Result<AsyncClient, Error> {
        let transport = self.transport.unwrap_or_default();
        let core = MdpClient::new(io::now(), Mode::Pipelined, self.retry, fastrand::u64(..))?;
        let outbox = open_outbox(self.outbox, true)?;
        let sockets = Sockets::connecting(
            &transport,
            zmq::DEALER,
            std::slice::from_ref(&self.endpoint),
            true,
        )?;
        let name = format!("inproc://bosun-async-client-{:016x}", fastrand::u64(..));
        let (pull, _) = transport.bind(zmq::PULL, &name)?;
        let push = transport.connect(zmq::PUSH, &[name])?;
        let stop = Shutdown::new();
        let driver = Driver::new(
            Stored::new(core, outbox.clone(), &self.endpoint),
            sockets,
            &stop,
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: Vec::new(),
                wake_sent: false,
                push: Some(push),
            }),
            outstanding: AtomicUsize::new(0),
            retries: AtomicU64::new(0),
            exit: DriverExit::default(),
            peer: self.endpoint,
            outbox,
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || {
                // Marks the exit after `drive` has dropped its sockets, even on a panic.
                let _exit = MarkExit(thread_shared.exit.clone());
                drive(driver, pull, thread_shared)
            })
            .map_err(|e| Error::io("start the async client's driver thread", e))?;
        Ok(AsyncClient {
            owner: Arc::new(Owner { shared, stop }),
        })
    }
}

/// A handle of an async Majordomo client (see the [module docs](self)): `Clone`, `Send`
/// and `Sync`, every clone sharing one socket and one driver thread, which stops when
/// the last handle (and the last unfinished [`Request`]) is dropped.
#[derive(Clone)]
pub struct AsyncClient {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("peer", &self.owner.shared.peer)
            .field("outstanding", &self.outstanding())
            .field("stopped", &self.owner.shared.exit.has_exited())
            .finish()
    }
}

impl AsyncClient {
    /// The settings of a client of the broker at `endpoint`;
    /// [`AsyncClientBuilder::connect`] makes it.
    pub fn builder(endpoint: &str) -> AsyncClientBuilder {
        AsyncClientBuilder {
            endpoint: endpoint.to_string(),
            transport: None,
            retry: Retry::default(),
            outbox: None,
        }
    }

    /// A client of the broker at `endpoint` with the default settings (its own
    /// context, [`Retry::default`]).
    pub fn connect(endpoint: &str) -> Result<AsyncClient, Error> {
        Self::builder(endpoint).connect()
    }

    /// Sends `payload` (its frames as they are) to `service` now, and returns the
    /// future of its reply's frames. The request is queued for the driver before this
    /// returns, whether or not the future is ever polled; see the [module
    /// docs](self) for its errors.
    ///
    /// With an outbox, the request is stored before this returns (on disk with
    /// `every`); a full outbox completes the future at once with
    /// [`ClientError::OutboxFull`], the request neither stored nor sent.
    pub fn request(&self, service: &str, payload: Frames) -> Request {
        let envelope = io::envelope(payload);
        let (request, slot) = self.new_request(envelope.meta.id);
        if let Err(e) = check_size(&envelope) {
            slot.complete(Err(e.into()));
            return request;
        }
        let service = service.as_bytes().to_vec();
        let appended = match &self.owner.shared.outbox {
            Some(outbox) => match lock(outbox).accept(Some(&service), &envelope) {
                Ok(appended) => appended,
                Err(e) => {
                    slot.complete(Err(e));
                    return request;
                }
            },
            None => Appended::Ready,
        };
        self.owner.submit(Submission {
            kind: Kind::New {
                service,
                envelope,
                appended,
            },
            slot,
        });
        request
    }

    /// Sends a stored request again, to its service, with its original id and creation
    /// time (its attempt continuing from the record's count), and returns the future of
    /// its reply; see [`AsyncClient::request`]. A request already in flight is not sent
    /// twice: its future fails with [`ClientError::Busy`].
    pub fn resend(&self, record: OutboxRecord) -> Request {
        let (request, slot) = self.new_request(record.id);
        self.owner.submit(Submission {
            kind: Kind::Resume(record),
            slot,
        });
        request
    }

    /// Re-sends every request pending in the outbox (what a crash or a stop left
    /// unanswered), all at once, with its original id ([`AsyncClient::resend`]), and
    /// returns their futures, in the order the requests were made. Logs `recovered: N
    /// pending re-sent, K dead letters` at info level. Call it once, before new
    /// requests; without an outbox it returns none.
    pub fn recover(&self) -> Result<Vec<Request>, Error> {
        let Some(outbox) = &self.owner.shared.outbox else {
            return Ok(Vec::new());
        };
        let pending = {
            let outbox = lock(outbox);
            let pending = outbox.pending()?;
            outbox::log_recovery(&outbox, pending.len());
            pending
        };
        Ok(pending.into_iter().map(|r| self.resend(r)).collect())
    }

    /// The client's outbox, if it has one.
    pub fn outbox(&self) -> Option<&SharedOutbox> {
        self.owner.shared.outbox.as_ref()
    }

    fn new_request(&self, id: Uuid) -> (Request, Arc<Slot>) {
        let slot = Arc::new(Slot::default());
        let request = Request {
            id,
            slot: Arc::clone(&slot),
            _client: self.clone(),
        };
        (request, slot)
    }

    /// Requests made whose outcome the driver has not had yet (a request whose future
    /// was dropped counts until its reply or give-up arrives).
    pub fn outstanding(&self) -> usize {
        self.owner.shared.outstanding.load(Ordering::SeqCst)
    }

    /// Attempts sent after the first of their request (timed-out attempts retried).
    pub fn retries(&self) -> u64 {
        self.owner.shared.retries.load(Ordering::Relaxed)
    }

    /// Stops the driver thread now, for every handle: the requests still waiting, and
    /// any made after this, fail with [`ClientError::Interrupted`]. For a program's
    /// Ctrl-C handler; dropping every handle stops it too.
    pub fn shutdown(&self) {
        self.owner.stop();
    }

    /// What tells when the driver thread has ended (its sockets closed).
    pub fn driver_exit(&self) -> DriverExit {
        self.owner.shared.exit.clone()
    }
}

/// Tells when a client's driver thread has ended, its sockets closed and (when the
/// context was its own) what they held flushed within the linger. Outlives the client.
#[derive(Debug, Clone, Default)]
pub struct DriverExit(Arc<(Mutex<bool>, Condvar)>);

impl DriverExit {
    /// Whether the thread has ended.
    pub fn has_exited(&self) -> bool {
        *lock(&self.0 .0)
    }

    /// Blocks until the thread has ended or `timeout` passed; true if it ended.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (done, cv) = &*self.0;
        let guard = lock(done);
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |exited| !*exited)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    fn mark(&self) {
        *lock(&self.0 .0) = true;
        self.0 .1.notify_all();
    }
}

/// Marks its [`DriverExit`] when dropped.
struct MarkExit(DriverExit);

impl Drop for MarkExit {
    fn drop(&mut self) {
        self.0.mark();
    }
}

/// The future of one request's reply, from [`AsyncClient::request`]: the reply's
/// payload frames, or why there is none. Dropping it abandons the reply (see the
/// [module docs](self)).
#[must_use = "the request is sent anyway; the future is its only way to the reply"]
pub struct Request {
    id: Uuid,
    slot: Arc<Slot>,
    /// Keeps the driver running until this request is done with.
    _client: AsyncClient,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request").field("id", &self.id).finish()
    }
}

impl Request {
    /// The request's id (in its metadata frame, and in the log lines of every peer).
    pub fn id(&self) -> Uuid {
        self.id
    }
}

impl Future for Request {
    type Output = Result<Frames, Error>;

    /// Ready once the driver has the reply, the give-up or the stop. Panics when
    /// polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.slot.state);
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Done(result) => Poll::Ready(result),
            SlotState::Waiting(waker) => {
                let waker = match waker {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                };
                *state = SlotState::Waiting(Some(waker));
                Poll::Pending
            }
            SlotState::Taken | SlotState::Abandoned => {
                panic!("bosun::io::async_client::Request polled after it completed")
            }
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let mut state = lock(&self.slot.state);
        if matches!(*state, SlotState::Waiting(_)) {
            *state = SlotState::Abandoned;
        }
    }
}

/// A one-shot result with the waker of the task waiting for it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

enum SlotState {
    /// No result yet; the waker of the last poll.
    Waiting(Option<Waker>),
    /// The result, not yet taken.
    Done(Result<Frames, Error>),
    /// The result was taken by a poll.
    Taken,
    /// The future was dropped first: a result is dropped when it comes.
    Abandoned,
}

impl Default for SlotState {
    fn default() -> Self {
        SlotState::Waiting(None)
    }
}

impl Slot {
    /// Fills the slot and wakes its task (outside the lock); a result for an
    /// abandoned slot is dropped.
    fn complete(&self, result: Result<Frames, Error>) {
        let waker = {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, SlotState::Taken) {
                SlotState::Waiting(waker) => {
                    *state = SlotState::Done(result);
                    waker
                }
                other => {
                    *state = other;
                    None
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// One request on its way to the driver.
struct Submission {
    kind: Kind,
    slot: Arc<Slot>,
}

/// What a submission asks of the driver.
enum Kind {
    /// A new request, already stored in the outbox as `appended` says.
    New {
        service: Vec<u8>,
        envelope: Envelope,
        appended: Appended,
    },
    /// A stored request, sent again.
    Resume(OutboxRecord),
}

/// What the handles and the driver thread share.
struct Shared {
    state: Mutex<State>,
    /// Requests queued or in the core, their outcome not yet in.
    outstanding: AtomicUsize,
    retries: AtomicU64,
    exit: DriverExit,
    /// The broker's endpoint, for error messages.
    peer: String,
    /// The outbox, shared with the driver thread.
    outbox: Option<SharedOutbox>,
}

struct State {
    /// Requests the driver has not taken yet.
    queue: Vec<Submission>,
    /// A wake message is on its way and the driver has not taken the queue since.
    wake_sent: bool,
    /// The handles' end of the wake socket; `None` once the driver has stopped.
    push: Option<zmq::Socket>,
}

/// The last handle's drop stops the driver.
struct Owner {
    shared: Arc<Shared>,
    stop: Shutdown,
}

impl Owner {
    fn submit(&self, submission: Submission) {
        let mut state = lock(&self.shared.state);
        let Some(push) = &state.push else {
            drop(state);
            return submission
                .slot
                .complete(Err(ClientError::Interrupted.into()));
        };
        // Send the wake under the lock: the driver takes the queue under it too, so a
        // wake is either drained before a take that finds this request, or sent after
        // the take reset `wake_sent`, and the driver never misses a request.
        if !state.wake_sent && push.send(&b""[..], zmq::DONTWAIT).is_ok() {
            state.wake_sent = true;
        }
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        state.queue.push(submission);
    }

    fn stop(&self) {
        self.stop.trigger();
        // Wake the driver's poll so that it sees the flag now, not within 100 ms.
        if let Some(push) = &lock(&self.shared.state).push {
            let _ = push.send(&b""[..], zmq::DONTWAIT);
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request in the core, by id.
type InCore = HashMap<Uuid, (Vec<u8>, Arc<Slot>)>;

/// The driver thread: runs the loop until the stop, then fails what is left and closes
/// the sockets (the caller marks the exit after that).
fn drive(mut driver: Driver<Stored<MdpClient>>, pull: zmq::Socket, shared: Arc<Shared>) {
    // Fails what is left and marks the exit even if the loop panics.
    struct CloseOut<'a> {
        shared: &'a Shared,
        in_core: InCore,
    }
    impl Drop for CloseOut<'_> {
        fn drop(&mut self) {
            let (queued, push) = {
                let mut state = lock(&self.shared.state);
                (std::mem::take(&mut state.queue), state.push.take())
            };
            drop(push);
            let slots = queued
                .into_iter()
                .map(|s| s.slot)
                .chain(self.in_core.drain().map(|(_, (_, slot))| slot));
            for slot in slots {
                self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                slot.complete(Err(ClientError::Interrupted.into()));
            }
        }
    }
    let mut close = CloseOut {
        shared: &shared,
        in_core: InCore::default(),
    };
    let in_core = &mut close.in_core;
    let result = driver.run(None, Some(&pull), |d, input| {
        match input {
            Input::Wake => {
                while pull.recv_bytes(zmq::DONTWAIT).is_ok() {}
                let queued = {
                    let mut state = lock(&shared.state);
                    state.wake_sent = false;
                    std::mem::take(&mut state.queue)
                };
                for s in queued {
                    let now = io::now();
                    let (service, started) = match s.kind {
                        Kind::New {
                            service,
                            envelope,
                            appended,
                        } => {
                            let started =
                                d.core
                                    .submit_accepted(now, Some(&service), envelope, appended);
                            (service, started)
                        }
                        Kind::Resume(record) => {
                            let service = record.service.clone().unwrap_or_default();
                            let started = if d.core.core().is_outstanding(record.id) {
                                Err(ClientError::Busy.into())
                            } else {
                                d.core.resume(now, &record)
                            };
                            (service, started)
                        }
                    };
                    match started {
                        Ok(id) => {
                            in_core.insert(id, (service, s.slot));
                        }
                        Err(e) => {
                            shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                            s.slot.complete(Err(e));
                        }
                    }
                }
            }
            Input::Event(outbox::Event::Unsent { id, error }) => {
                if let Some((_, slot)) = in_core.remove(&id) {
                    shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                    slot.complete(Err(error.into()));
                }
            }
            Input::Event(outbox::Event::Core(Event::Reply {
                id,
                attempt,
                answer,
                ..
            })) => {
                if let Some((service, slot)) = in_core.remove(&id) {
                    shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                    let peer = peer(&shared.peer, &service);
                    slot.complete(answer_to_result(answer, id, attempt, &peer));
                }
            }
            Input::Event(outbox::Event::Core(Event::GaveUp {
                id,
                attempts,
                payload,
            })) => {
                if let Some((service, slot)) = in_core.remove(&id) {
                    shared.outstanding.fetch_sub(1, Ordering::SeqCst);
                    slot.complete(Err(ClientError::GaveUp {
                        attempts,
                        endpoint: peer(&shared.peer, &service),
                        body: payload.concat(),
                    }
                    .into()));
                }
            }
            Input::Event(outbox::Event::Core(e)) => {
                if matches!(e, Event::Retrying { .. }) {
                    shared.retries.fetch_add(1, Ordering::Relaxed);
                }
                log_event(&e);
            }
            Input::Stop => return Flow::Break(()),
        }
        Flow::Continue
    });
    if let Err(e) = result {
        tracing::error!(peer = %shared.peer, error = %e, "async client stopped");
    }
    drop(close);
    // The sockets close here (and, when the context is the client's own, what they
    // hold is flushed within the linger) before the caller marks the exit.
    drop(driver);
    drop(pull);
}

fn peer(endpoint: &str, service: &[u8]) -> String {
    format!("{endpoint} (service {})", String::from_utf8_lossy(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_is_send_sync_and_the_future_send_static() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        fn future<T: Future + Send + Unpin + 'static>() {}
        check::<AsyncClient>();
        future::<Request>();
    }

    #[test]
    fn a_slot_keeps_the_first_result_and_drops_one_for_an_abandoned_future() {
        let slot = Slot::default();
        slot.complete(Ok(vec![b"a".to_vec()]));
        slot.complete(Ok(vec![b"b".to_vec()]));
        assert!(matches!(&*lock(&slot.state), SlotState::Done(Ok(f)) if f == &[b"a".to_vec()]));
        let slot = Slot::default();
        *lock(&slot.state) = SlotState::Abandoned;
        slot.complete(Ok(vec![b"late".to_vec()]));
        assert!(matches!(&*lock(&slot.state), SlotState::Abandoned));
    }
}
