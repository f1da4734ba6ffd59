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

    /// A new socket of `kind` with every option applied. A SUB socket is subscribed to
    /// every topic.
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
        if kind == zmq::SUB {
            // A subscriber takes the whole stream and filters topics itself, so that
            // every sequence gap is visible (see `proto::subscriber`).
            s.set_subscribe(b"")
                .map_err(|e| TransportError::zmq("subscribe", "", e))?;
        }
        self.inner.made.fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// A new socket of `kind` bound to `endpoint`; also returns the endpoint actually
    /// bound (its port resolved when `endpoint` asked for `*` or `0`). The endpoint is
    /// checked first ([`check_endpoint`]): a TCP port outside 1..=65535 (which libzmq
    /// would silently wrap) is refused, and a bind that fails because the host is not an
    /// address or interface of this machine says so in words.
    pub fn bind(
        &self,
        kind: zmq::SocketType,
        endpoint: &str,
    ) -> Result<(zmq::Socket, String), TransportError> {
        check_endpoint(endpoint, Side::Bind)?;
        let s = self.socket(kind)?;
        let bound = bind(&s, endpoint)?;
        Ok((s, bound))
    }

    /// A new socket of `kind` connected to every one of `endpoints`, each checked first
    /// ([`check_endpoint`]: a TCP port must be 1..=65535).
    ///
    /// A ROUTER addresses each peer it connects to by the endpoint text it was given
    /// (`ZMQ_CONNECT_ROUTING_ID`), whatever identity the peer announces: a message from
    /// that connection arrives with the endpoint as its first frame, and one sent to the
    /// endpoint goes down that connection. So a Freelance client matches a server by the
    /// connection, never by the server's spelling of its own address (`tcp://*:P`,
    /// `localhost` or `127.0.0.1`). The same endpoint given twice is connected once.
    pub fn connect(
        &self,
        kind: zmq::SocketType,
        endpoints: &[String],
    ) -> Result<zmq::Socket, TransportError> {
        for e in endpoints {
            check_endpoint(e, Side::Connect)?;
        }
        let mut s = self.socket(kind)?;
        let mut seen = std::collections::HashSet::new();
        for e in endpoints {
            if kind == zmq::ROUTER {
                if !seen.insert(e.as_str()) {
                    continue;
                }
                set_connect_routing_id(&mut s, e.as_bytes()).map_err(|err| {
                    TransportError::zmq("set connect routing id", e.as_str(), err)
                })?;
            }
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

/// Binds `socket` to `endpoint` and returns the endpoint actually bound. The endpoint
/// is checked first, and a host that is not this machine's is named as such.
pub(crate) fn bind(socket: &zmq::Socket, endpoint: &str) -> Result<String, TransportError> {
    check_endpoint(endpoint, Side::Bind)?;
    socket.bind(endpoint).map_err(|e| bind_error(endpoint, e))?;
    match socket.get_last_endpoint() {
        Ok(Ok(bound)) => Ok(bound),
        _ => Ok(endpoint.to_string()),
    }
}

/// Which end of a connection an endpoint is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A local address to bind: the port may also be `*` or `0` (a free port).
    Bind,
    /// A peer to connect to: the port must be 1..=65535.
    Connect,
}

/// Checks a `tcp://` endpoint before libzmq sees it: it must be `tcp://HOST:PORT` with
/// a port in 1..=65535 (or, to bind, `*` or `0` for a free port). libzmq itself takes
/// the port modulo 65536, so `tcp://127.0.0.1:99999` would bind port 34463. Other
/// transports (`ipc://`, `inproc://`) are left to libzmq. The error names the endpoint
/// and says what is wrong.
pub fn check_endpoint(endpoint: &str, side: Side) -> Result<(), TransportError> {
    let op = match side {
        Side::Bind => "bind",
        Side::Connect => "connect",
    };
    let invalid = |why: String| {
        Err(TransportError::zmq(
            op,
            format!("{endpoint} ({why})"),
            zmq::Error::EINVAL,
        ))
    };
    if !endpoint.contains("://") {
        return invalid(
            "not an endpoint: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME".into(),
        );
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return Ok(());
    };
    // `tcp://source;host:port` connects from a source address: check the peer part.
    let peer = rest.rsplit(';').next().unwrap_or(rest);
    let Some((host, port)) = peer.rsplit_once(':') else {
        return invalid("no port: expected tcp://HOST:PORT".into());
    };
    if host.is_empty() {
        return invalid("no host: expected tcp://HOST:PORT".into());
    }
    if side == Side::Bind && (port == "*" || port == "0") {
        return Ok(());
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        _ => {
            let free = match side {
                Side::Bind => ", or * for a free port",
                Side::Connect => "",
            };
            invalid(format!(
                "port {port:?} is not a TCP port: it must be 1 to 65535{free}"
            ))
        }
    }
}

/// The error of a failed bind, with the usual cause in words where libzmq's alone is
/// cryptic ("Cannot assign requested address", "No such device").
fn bind_error(endpoint: &str, e: zmq::Error) -> TransportError {
    let host = endpoint
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .map(|(host, _)| host);
    let is_ip = |h: &str| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
    };
    let endpoint = match (e, host) {
        (zmq::Error::EADDRNOTAVAIL | zmq::Error::ENODEV, Some(host)) if is_ip(host) => format!(
            "{endpoint} ({host} is not an address or interface of this machine: bind 127.0.0.1 \
             for this machine only, * for every interface, or one of this machine's addresses)"
        ),
        (zmq::Error::EADDRNOTAVAIL | zmq::Error::ENODEV, Some(host)) => format!(
            "{endpoint} ({host} is not an address or interface of this machine: a bind takes an \
             IP address or an interface name, never a host name, so bind 127.0.0.1 for this \
             machine only (clients may still connect to localhost), * for every interface, or \
             one of this machine's addresses)"
        ),
        (zmq::Error::EADDRINUSE, _) => {
            format!(
                "{endpoint} (the port is taken: another process, or another endpoint of \
                 this one, is bound to it)"
            )
        }
        _ => endpoint.to_string(),
    };
    TransportError::zmq("bind", endpoint, e)
}

/// Sets `ZMQ_CONNECT_ROUTING_ID` (libzmq 4.3), which the `zmq` crate does not wrap: the
/// routing id a ROUTER gives the peer of its next `connect`.
fn set_connect_routing_id(socket: &mut zmq::Socket, id: &[u8]) -> Result<(), zmq::Error> {
    /// `ZMQ_CONNECT_ROUTING_ID` in zmq.h.
    const ZMQ_CONNECT_ROUTING_ID: std::os::raw::c_int = 61;
    extern "C" {
        fn zmq_setsockopt(
            socket: *mut std::ffi::c_void,
            option: std::os::raw::c_int,
            value: *const std::ffi::c_void,
            len: usize,
        ) -> std::os::raw::c_int;
    }
    // SAFETY: the socket pointer is live and exclusively borrowed for the call; `id` is
    // valid for `id.len()` bytes, which libzmq copies before returning.
    let rc = unsafe {
        zmq_setsockopt(
            socket.as_mut_ptr(),
            ZMQ_CONNECT_ROUTING_ID,
            id.as_ptr().cast(),
            id.len(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // libzmq reports through errno, which is per thread.
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Err(zmq::Error::from_raw(errno))
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

    fn err<T>(r: Result<T, TransportError>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_port_outside_the_tcp_range_is_refused_naming_the_endpoint() {
        let t = Transport::default();
        for bad in [
            "tcp://127.0.0.1:99999",
            "tcp://127.0.0.1:65536",
            "tcp://127.0.0.1:x",
        ] {
            let e = err(t.bind(zmq::ROUTER, bad));
            assert!(e.contains(bad) && e.contains("1 to 65535"), "{e}");
            let e = err(t.connect(zmq::DEALER, &[bad.to_string()]));
            assert!(e.starts_with("connect ") && e.contains(bad), "{e}");
        }
        let e = err(t.connect(zmq::DEALER, &["tcp://127.0.0.1:0".into()]));
        assert!(e.contains("1 to 65535"), "{e}");
        assert!(t.bind(zmq::ROUTER, "tcp://127.0.0.1:0").is_ok());
        assert!(t.bind(zmq::ROUTER, "tcp://127.0.0.1").is_err());
        for bad in ["foo", "127.0.0.1:5555", ""] {
            let e = err(t.bind(zmq::ROUTER, bad));
            assert!(
                e.contains("not an endpoint: expected tcp://HOST:PORT"),
                "{e}"
            );
        }
        // Nothing was made for the refused endpoints.
        assert_eq!(t.sockets_made(), 1);
    }

    #[test]
    fn binding_an_address_of_another_machine_says_so_in_words() {
        let t = Transport::default();
        // TEST-NET-1 (RFC 5737): never an address of this machine.
        let e = err(t.bind(zmq::ROUTER, "tcp://192.0.2.1:5555"));
        assert!(
            e.contains("tcp://192.0.2.1:5555")
                && e.contains("not an address or interface of this machine"),
            "{e}"
        );
        let e = err(t.bind(zmq::ROUTER, "tcp://no-such-host.invalid:5555"));
        assert!(
            e.contains("not an address or interface of this machine"),
            "{e}"
        );
    }

    #[test]
    fn a_router_addresses_each_peer_by_the_endpoint_it_connected_to() {
        let t = Transport::default();
        // The server announces an identity that is none of the spellings clients use.
        let server = t.socket(zmq::ROUTER).unwrap();
        server.set_identity(b"tcp://*:1").unwrap();
        let bound = bind(&server, "tcp://127.0.0.1:*").unwrap();
        let port = bound.rsplit(':').next().unwrap();
        let localhost = format!("tcp://localhost:{port}");
        let client = t
            .connect(zmq::ROUTER, &[localhost.clone(), localhost.clone()])
            .unwrap();
        client.set_router_mandatory(true).unwrap();
        // The connection is addressable by the endpoint text at once (a routing id
        // unknown to a mandatory ROUTER would fail with EHOSTUNREACH).
        client
            .send_multipart([localhost.as_bytes(), b"PING"], zmq::DONTWAIT)
            .unwrap();
        let got = server.recv_multipart(0).unwrap();
        assert_eq!(got[1], b"PING");
        server
            .send_multipart([got[0].as_slice(), b"PONG"], 0)
            .unwrap();
        let back = client.recv_multipart(0).unwrap();
        assert_eq!(back, vec![localhost.into_bytes(), b"PONG".to_vec()]);
    }
}
