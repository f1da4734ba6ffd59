//! Drivers: the only code that touches zmq sockets and the real clock.
//!
//! Every pattern is a pure core driven by the one loop in [`driver`], over sockets that
//! all come from one [`transport::Transport`]; the modules here choose the arrangement
//! of sockets, turn the core's events into the application's calls, and log.
//!
//! # Making a driver
//! One style for every driver: `X::builder(endpoint(s)[, service])`, optional `.context(&ctx)`
//! or `.transport(&t)` (default: a context of its own), a setter per setting, then
//! `.connect()` (clients, workers) or `.bind()` (servers, queue, broker), which checks the
//! settings; `X::connect(..)` / `X::bind(..)` takes every default. Clients then send
//! requests; workers, servers, the queue and the broker serve with `.run(.., &shutdown)`.

/// The setters that many builders share, written once: `transport` (`.context` and
/// `.transport`, for a `transport: Option<Transport>` field), `retry` (a `retry: Retry`
/// field), `shutdown` (a `shutdown: Option<Shutdown>` field) and `outbox` (an
/// `outbox: Option<(Store, OutboxConfig)>` field). Used inside a builder's `impl`.
macro_rules! builder_setters {
    () => {};
    (transport $(, $($rest:ident),*)?) => {
        /// Uses `ctx` instead of a context of its own (the default).
        pub fn context(self, ctx: &zmq::Context) -> Self {
            self.transport(&$crate::io::transport::Transport::with_context(ctx))
        }

        /// Makes its sockets with `transport` (and its context): every socket it makes,
        /// reconnects included, takes the transport's options. Default: a transport of
        /// its own, [`Transport::default`]($crate::io::transport::Transport::default).
        pub fn transport(mut self, transport: &$crate::io::transport::Transport) -> Self {
            self.transport = Some(transport.clone());
            self
        }
        $crate::io::builder_setters!($($($rest),*)?);
    };
    (retry $(, $($rest:ident),*)?) => {
        /// Sets the retry policy (default [`Retry::default`]($crate::Retry::default):
        /// 2.5 s per attempt, 3 attempts).
        pub fn retry(mut self, retry: $crate::Retry) -> Self {
            self.retry = retry;
            self
        }
        $crate::io::builder_setters!($($($rest),*)?);
    };
    (shutdown $(, $($rest:ident),*)?) => {
        /// Makes a pending request end in
        /// [`ClientError::Interrupted`]($crate::error::ClientError::Interrupted) soon after
        /// `shutdown` is triggered (default: no flag; a request ends only in a reply or a
        /// give-up).
        pub fn shutdown(mut self, shutdown: &$crate::io::Shutdown) -> Self {
            self.shutdown = Some(shutdown.clone());
            self
        }
        $crate::io::builder_setters!($($($rest),*)?);
    };
    (outbox $(, $($rest:ident),*)?) => {
        /// Keeps every request in `store`'s outbox from before it is sent until it is
        /// answered or given up (then in its dead letters), as `config` says; the
        /// client's `recover` re-sends what a crash left pending (see
        /// [`io::outbox`]($crate::io::outbox)). Default: no outbox. One client per store.
        pub fn outbox(
            mut self,
            store: &$crate::store::Store,
            config: $crate::io::outbox::OutboxConfig,
        ) -> Self {
            self.outbox = Some((store.clone(), config));
            self
        }
        $crate::io::builder_setters!($($($rest),*)?);
    };
}
pub(crate) use builder_setters;

pub mod async_client;
pub mod async_subscriber;
pub mod broker;
pub mod driver;
pub mod freelance;
pub(crate) mod guard;
pub mod handler;
pub mod lazy_pirate;
pub mod mdclient;
pub mod mdworker;
pub mod outbox;
pub(crate) mod pool;
pub mod ppworker;
pub mod publisher;
pub mod queue;
pub mod receiver;
pub mod server;
pub mod sink;
pub mod subscriber;
pub mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::TransportError;
pub use transport::{Transport, TransportOptions};

/// Longest a driver blocks in `zmq::poll` before it looks at its [`Shutdown`] flag:
/// 100 ms, so Ctrl-C is obeyed within a tenth of a second at no measurable cost.
pub const SHUTDOWN_CHECK: Duration = Duration::from_millis(100);

/// Linger of sockets closed at shutdown: long enough to flush a last DISCONNECT or
/// reply on loopback, short enough that exit is never stuck on a dead peer.
pub const SHUTDOWN_LINGER: Duration = Duration::from_millis(200);

/// A flag that asks every driver sharing it to stop.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the drivers to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The current time. Drivers read the clock through this one function.
#[allow(clippy::disallowed_methods)] // the drivers are where the real clock lives
pub fn now() -> Instant {
    Instant::now()
}

/// The wall clock, in milliseconds since the Unix epoch (0 for a clock set before
/// 1970). Drivers read it here and hand it to the cores that judge deadlines carried in
/// messages, which are wall-clock times because they cross machines.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds for `zmq::poll` until `deadline`, capped at [`SHUTDOWN_CHECK`];
/// `0` when the deadline has passed.
pub fn poll_millis(now: Instant, deadline: Option<Instant>) -> i64 {
    let wait = deadline
        .map(|d| d.saturating_duration_since(now))
        .unwrap_or(SHUTDOWN_CHECK)
        .min(SHUTDOWN_CHECK);
    // Round up so that a wake-up is never a busy spin just before the deadline.
    let ms = wait.as_micros().div_ceil(1000);
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Sends `frames` as one multipart message. Each frame is copied into its zmq message:
/// for the short frames of the protocols (identities, signatures, commands) that copy
/// lands in the message itself with no allocation, where handing over the `Vec`
/// (`zmq::Socket::send_multipart`) costs an allocation and a cross-thread free per frame.
pub fn send_frames(socket: &zmq::Socket, frames: &[Vec<u8>], flags: i32) -> zmq::Result<()> {
    let Some((last, first)) = frames.split_last() else {
        return Ok(());
    };
    for frame in first {
        socket.send(frame.as_slice(), flags | zmq::SNDMORE)?;
    }
    socket.send(last.as_slice(), flags)
}

/// Frames up to this size are copied into the zmq message (libzmq keeps them inline,
/// with no allocation); larger ones are handed over without a copy.
const INLINE_FRAME: usize = 33;

/// Sends one multipart message whose frames the caller gives up: frames larger than
/// libzmq's inline size are handed to libzmq without a copy (it frees them once sent).
pub fn send_owned(
    socket: &zmq::Socket,
    frames: crate::proto::frames::Frames,
    flags: i32,
) -> zmq::Result<()> {
    let n = frames.len();
    for (i, frame) in frames.into_iter().enumerate() {
        let more = if i + 1 < n { zmq::SNDMORE } else { 0 };
        if frame.len() <= INLINE_FRAME {
            socket.send(frame.as_slice(), flags | more)?;
        } else {
            socket.send(zmq::Message::from(frame), flags | more)?;
        }
    }
    Ok(())
}

/// Sends one multipart message from borrowed frames, each copied into its zmq message
/// (kept inline by libzmq up to 33 bytes; one allocation of libzmq's above).
pub fn send_parts<'a>(
    socket: &zmq::Socket,
    parts: impl ExactSizeIterator<Item = &'a [u8]>,
    flags: i32,
) -> zmq::Result<()> {
    let n = parts.len();
    for (i, frame) in parts.enumerate() {
        let more = if i + 1 < n { zmq::SNDMORE } else { 0 };
        socket.send(frame, flags | more)?;
    }
    Ok(())
}

/// Receives one multipart message. Like `zmq::Socket::recv_multipart`, but with one zmq
/// message reused for every frame and the "more" flag read from it, not from a socket
/// option call per frame.
pub fn recv_frames(socket: &zmq::Socket, flags: i32) -> zmq::Result<Vec<Vec<u8>>> {
    let mut msg = zmq::Message::new();
    let mut frames = Vec::with_capacity(8);
    loop {
        socket.recv(&mut msg, flags)?;
        frames.push(msg.to_vec());
        if !msg.get_more() {
            return Ok(frames);
        }
    }
}

/// `zmq::poll`, with a signal's interruption (EINTR) reported as "nothing ready" so that
/// the caller's loop goes round and sees its [`Shutdown`] flag.
pub fn poll(items: &mut [zmq::PollItem], timeout_ms: i64) -> Result<i32, TransportError> {
    match zmq::poll(items, timeout_ms) {
        Ok(n) => Ok(n),
        Err(zmq::Error::EINTR) => Ok(0),
        Err(e) => Err(TransportError::zmq("poll", "", e)),
    }
}

/// A new request envelope of `payload`: a fresh UUID v7 id and its creation time. The
/// drivers make ids here; the cores take them as inputs.
#[allow(clippy::disallowed_methods)] // the drivers are where ids and the clock live
pub fn envelope(payload: crate::proto::frames::Frames) -> crate::proto::envelope::Envelope {
    let id = uuid::Uuid::now_v7();
    let created_at_ms = id
        .get_timestamp()
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            secs * 1000 + u64::from(nanos) / 1_000_000
        })
        .unwrap_or(0);
    crate::proto::envelope::Envelope::new(id, created_at_ms, payload)
}

/// What a driver did with malformed input, for its log line: a request whose metadata
/// does not decode is served as a foreign peer's; anything else is dropped.
pub fn malformed_what(e: &crate::error::ProtocolError) -> &'static str {
    match e {
        crate::error::ProtocolError::Envelope(_) => {
            "bad metadata frame; request served as a foreign one"
        }
        _ => "malformed message dropped",
    }
}

/// A writer that counts the bytes it passes on.
#[derive(Debug)]
pub(crate) struct Counting<W> {
    pub(crate) inner: W,
    pub(crate) written: u64,
}

impl<W: std::io::Write> std::io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
