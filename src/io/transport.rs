//! The one place sockets are made: a [`Transport`] holds the zmq context and every
//! socket option, and every socket in the crate, reconnects included, comes from it. So a
//! setting (a high-water mark, a size limit, and later CURVE keys) can never be missed
//! on one path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::TransportError;
use crate::io::guard::lock;

/// Socket options a [`Transport`] applies to every socket it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// How long a closed socket may keep trying to deliver what it holds. Default
    /// 200 ms: long enough to flush a last DISCONNECT or reply on loopback, short
    /// enough that exit is never stuck on a dead peer. Sockets discarded on purpose
    /// (a retried request's) are closed with 0 whatever this says.
    pub linger: Duration,
    /// Outgoing high-water mark, in messages. Default 1000, libzmq's.
    pub send_hwm: i32,
    /// Incoming high-water mark, in messages. Default 1000, libzmq's.
    pub recv_hwm: i32,
    /// Largest frame a socket accepts from a peer (`ZMQ_MAXMSGSIZE`); a peer that sends
    /// more is disconnected. Default 64 MiB + 64 KiB: the largest payload a bosun client
    /// sends plus room for its metadata, so no peer can make a bosun process allocate
    /// without bound.
    pub max_frame_bytes: i64,
}

/// Default of [`TransportOptions::max_frame_bytes`].
pub const MAX_FRAME_BYTES: i64 =
    (crate::proto::envelope::MAX_PAYLOAD_BYTES + crate::proto::envelope::MAX_META_BYTES) as i64;

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            linger: crate::io::SHUTDOWN_LINGER,
            send_hwm: 1000,
            recv_hwm: 1000,
            max_frame_bytes: MAX_FRAME_BYTES,
        }
    }
}

struct Inner {
    /// Taken (and dropped) by [`Transport::close`].
    ctx: Mutex<Option<zmq::Context>>,
    options: TransportOptions,
    made: AtomicU64,
}

/// A zmq context and the options of every socket made in it. Cheap to clone; clones
/// share the context.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("options", &self.inner.options)
            .field("sockets_made", &self.sockets_made())
            .finish()
    }
}

impl Default for Transport {
    fn default() -> Self {
        Transport::new(&zmq::Context::new(), TransportOptions::default())
    }
}

impl Transport {
    /// A transport over `ctx` with `options`.
    pub fn new(ctx: &zmq::Context, options: TransportOptions) -> Self {
        Transport {
            inner: Arc::new(Inner {
                ctx: Mutex::new(Some(ctx.clone())),
                options,
                made: AtomicU64::new(0),
            }),
        }
    }

    /// A transport over `ctx` with the default options.
    pub fn with_context(ctx: &zmq::Context) -> Self {
        Transport::new(ctx, TransportOptions::default())
    }

    /// The options applied to every socket.
    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    /// How many sockets this transport has made.
    pub fn sockets_made(&self) -> u64 {
        self.inner.made.load(Ordering::Relaxed)
    }

    /// A new socket of `kind` with every option applied.
    pub fn socket(&self, kind: zmq::SocketType) -> Result<zmq::Socket, TransportError> {
        let Some(ctx) = lock(&self.inner.ctx).clone() else {
            return Err(TransportError::Closed);
        };
        let s = ctx
            .socket(kind)
            .map_err(|e| TransportError::zmq("socket", "", e))?;
        let o = &self.inner.options;
        let linger = i32::try_from(o.linger.as_millis()).unwrap_or(i32::MAX);
        s.set_linger(linger)
            .map_err(|e| TransportError::zmq("set linger", "", e))?;
        s.set_sndhwm(o.send_hwm)
            .map_err(|e| TransportError::zmq("set sndhwm", "", e))?;
        s.set_rcvhwm(o.recv_hwm)
            .map_err(|e| TransportError::zmq("set rcvhwm", "", e))?;
        s.set_maxmsgsize(o.max_frame_bytes)
            .map_err(|e| TransportError::zmq("set maxmsgsize", "", e))?;
        self.inner.made.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// A new socket of `kind` bound to `endpoint`; also returns the endpoint actually
    /// bound (its port resolved when `endpoint` asked for `*` or `0`).
    pub fn bind(
        &self,
        kind: zmq::SocketType,
        endpoint: &str,
    ) -> Result<(zmq::Socket, String), TransportError> {
        let s = self.socket(kind)?;
        let bound = bind(&s, endpoint)?;
        Ok((s, bound))
    }

    /// A new socket of `kind` connected to every one of `endpoints`.
    pub fn connect(
        &self,
        kind: zmq::SocketType,
        endpoints: &[String],
    ) -> Result<zmq::Socket, TransportError> {
        let s = self.socket(kind)?;
        for e in endpoints {
            s.connect(e)
                .map_err(|err| TransportError::zmq("connect", e.as_str(), err))?;
        }
        Ok(s)
    }

    /// Lets go of the context: no socket can be made after this, and once every socket
    /// made in it is closed, the last handle's drop waits (up to the linger) for what
    /// they still hold to leave. A worker stopping mid-request calls it so its goodbye
    /// is flushed before the process exits.
    pub fn close(&self) {
        let ctx = lock(&self.inner.ctx).take();
        drop(ctx);
    }
}

/// Binds `socket` to `endpoint` and returns the endpoint actually bound.
pub(crate) fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String, TransportError> {
    socket
        .bind(endpoint)
        .map_err(|e| TransportError::zmq("bind", endpoint, e))?;
    match socket.get_last_endpoint() {
        Ok(Ok(bound)) => Ok(bound),
        _ => Ok(endpoint.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_gets_the_options_and_a_closed_transport_makes_none() {
        let t = Transport::new(
            &zmq::Context::new(),
            TransportOptions {
                linger: Duration::from_millis(7),
                send_hwm: 11,
                recv_hwm: 13,
                max_frame_bytes: 4096,
            },
        );
        let (s, bound) = t.bind(zmq::ROUTER, "tcp://127.0.0.1:*").unwrap();
        assert!(bound.starts_with("tcp://127.0.0.1:"));
        assert_eq!(s.get_linger().unwrap(), 7);
        assert_eq!(s.get_sndhwm().unwrap(), 11);
        assert_eq!(s.get_rcvhwm().unwrap(), 13);
        assert_eq!(s.get_maxmsgsize().unwrap(), 4096);
        let c = t.connect(zmq::DEALER, &[bound]).unwrap();
        assert_eq!(c.get_maxmsgsize().unwrap(), 4096);
        assert_eq!(t.sockets_made(), 2);
        drop((s, c));
        t.close();
        assert!(matches!(t.socket(zmq::DEALER), Err(TransportError::Closed)));
    }
}
