//! Drivers: the only code that touches zmq sockets and the real clock.
//!
//! Each driver owns its sockets, waits in `zmq::poll` until its core's next deadline,
//! feeds in what arrived and the passing of time, sends what the core wants sent, and
//! logs what the core reports.

pub mod broker;
pub mod freelance;
pub(crate) mod guard;
pub mod handler;
pub mod lazy_pirate;
pub mod mdclient;
pub mod mdworker;
pub(crate) mod pool;
pub mod ppworker;
pub mod queue;
pub mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::TransportError;

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

/// A new socket of `kind` with the given linger.
pub fn socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    linger: Duration,
) -> Result<zmq::Socket, TransportError> {
    let s = ctx
        .socket(kind)
        .map_err(|e| TransportError::zmq("socket", "", e))?;
    let ms = i32::try_from(linger.as_millis()).unwrap_or(i32::MAX);
    s.set_linger(ms)
        .map_err(|e| TransportError::zmq("set linger", "", e))?;
    Ok(s)
}

/// Largest frame a bound socket accepts from a peer: the largest envelope plus room for
/// its header. libzmq drops the connection of a peer that sends more, so no peer can make
/// a broker, queue or server allocate without bound.
pub const MAX_FRAME_BYTES: i64 = crate::proto::envelope::MAX_ENVELOPE_BYTES as i64 + 4096;

/// Binds `socket` to `endpoint` and returns the endpoint actually bound (with the
/// port resolved when `endpoint` asked for `*` or `0`). Frames larger than
/// [`MAX_FRAME_BYTES`] are refused.
pub fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String, TransportError> {
    socket
        .set_maxmsgsize(MAX_FRAME_BYTES)
        .map_err(|e| TransportError::zmq("set maxmsgsize", endpoint, e))?;
    socket
        .bind(endpoint)
        .map_err(|e| TransportError::zmq("bind", endpoint, e))?;
    match socket.get_last_endpoint() {
        Ok(Ok(bound)) => Ok(bound),
        _ => Ok(endpoint.to_string()),
    }
}

/// Connects `socket` to `endpoint`.
pub fn connect(socket: &zmq::Socket, endpoint: &str) -> Result<(), TransportError> {
    socket
        .connect(endpoint)
        .map_err(|e| TransportError::zmq("connect", endpoint, e))
}

/// Sends a multipart message without blocking; a full pipe or an unroutable peer is
/// logged and the message dropped (the protocols' retries recover it).
pub fn send_or_log(socket: &zmq::Socket, frames: Vec<Vec<u8>>, to: &str) {
    if let Err(e) = send_frames(socket, &frames, zmq::DONTWAIT) {
        tracing::warn!(to, error = %e, "send failed; message dropped");
    }
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
