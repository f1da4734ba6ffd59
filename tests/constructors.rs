//! Every driver is made one way (`X::builder(..)`, `.context` or `.transport`, setters,
//! `.connect()` or `.bind()`), and what the builder is given reaches the sockets:
//! - built with `.context(&ctx)`, every driver talks to the others over `inproc://`,
//!   which only joins sockets of one context;
//! - built with `.transport(&t)`, every driver makes its sockets with `t` (counted);
//! - a server and a client given a transport whose largest frame is 1 KiB drop a
//!   4 KiB frame that the defaults would take.
//!
//! Each test runs in a thread of its own and fails if it is not done within [`LIMIT`].

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bosun::config::{BrokerConfig, QueueConfig};
use bosun::error::{ClientError, ConfigError};
use bosun::io::async_client::AsyncClient;
use bosun::io::broker::BrokerDriver;
use bosun::io::freelance::{FreelanceClient, FreelanceServer};
use bosun::io::handler;
use bosun::io::mdclient::{AsyncMajordomoClient, MajordomoClient, Outcome};
use bosun::io::queue::QueueDriver;
use bosun::io::server::Server;
use bosun::io::{Transport, TransportOptions};
use bosun::{zmq, Backoff, Error, Heartbeat, LazyPirateClient, PpWorker, Retry, Shutdown, Worker};

use common::{deadline, now, raw_socket, recv_until, send};

/// Longest a test may take; every wait inside is shorter.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `test` on a thread of its own and fails if it has not finished within [`LIMIT`]
/// (a hang is a failure, not a stuck test run); a panic in it is the test's panic.
fn bounded(test: impl FnOnce() + Send + 'static) {
    let (done_tx, done) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        test();
        let _ = done_tx.send(());
    });
    match done.recv_timeout(LIMIT) {
        Ok(()) => thread.join().expect("test thread"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("not done within {LIMIT:?}"),
    }
}

/// One attempt, long enough for any loaded machine: a missing answer fails the test
/// at once instead of being hidden by a retry.
fn patient() -> Retry {
    Retry {
        timeout: Duration::from_secs(10),
        retries: 1,
        ..Retry::default()
    }
}

/// A heartbeat under which no live peer is expired on a loaded machine.
fn steady() -> Heartbeat {
    Heartbeat {
        interval: Duration::from_secs(1),
        liveness: 5,
    }
}

/// Options that differ from the defaults in every field.
fn custom_options() -> TransportOptions {
    TransportOptions {
        linger: Duration::from_millis(50),
        send_hwm: 500,
        recv_hwm: 500,
        max_frame_bytes: 1 << 20,
    }
}

/// The driver threads of a test, stopped together.
struct Stage {
    stop: Shutdown,
    threads: Vec<(&'static str, JoinHandle<Result<(), Error>>)>,
}

impl Stage {
    fn new() -> Self {
        Stage {
            stop: Shutdown::new(),
            threads: Vec::new(),
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        run: impl FnOnce(Shutdown) -> Result<(), Error> + Send + 'static,
    ) {
        let stop = self.stop.clone();
        self.threads
            .push((name, std::thread::spawn(move || run(stop))));
    }

    /// Stops every driver and checks that each ended without error.
    fn finish(self) {
        self.stop.trigger();
        for (name, thread) in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{name} failed: {e}"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

/// How the drivers of [`every_driver`] share a context: all through `.context(ctx)`,
/// or each through `.transport(..)` with a transport of its own over `ctx`.
enum Sharing {
    Context(zmq::Context),
    Transports(BTreeMap<&'static str, Transport>),
}

/// `builder.context(..)` or `builder.transport(..)` as `sharing` says, for the driver
/// named `name`. A macro: every builder has both setters, but no trait joins them.
macro_rules! shared {
    ($builder:expr, $sharing:expr, $name:expr) => {
        match $sharing {
            Sharing::Context(ctx) => $builder.context(ctx),
            Sharing::Transports(t) => $builder.transport(&t[$name]),
        }
    };
}

/// The names of the drivers of [`every_driver`].
const DRIVERS: [&str; 12] = [
    "server",
    "lazy pirate client",
    "queue",
    "paranoid pirate worker",
    "queue client",
    "broker",
    "majordomo worker",
    "majordomo client",
    "async majordomo client",
    "async client",
    "freelance server",
    "freelance client",
];

/// Builds every driver as `sharing` says, on `inproc://` endpoints named after `tag`,
/// and has every client get an answer through them: possible only if every socket was
/// made in the one context.
fn every_driver(sharing: &Sharing, tag: &str) {
    let ep = |what: &str| format!("inproc://constructors-{tag}-{what}");
    let mut stage = Stage::new();

    // Lazy Pirate: a client and a REP server.
    let server = shared!(Server::builder(&ep("server")), sharing, "server")
        .bind()
        .expect("server bind");
    stage.spawn("server", move |stop| {
        server.run(handler::echo(), &stop).map(|_| ())
    });
    let mut client = shared!(
        LazyPirateClient::builder(&ep("server")),
        sharing,
        "lazy pirate client"
    )
    .retry(patient())
    .connect()
    .expect("lazy pirate client");
    assert_eq!(
        client.request(b"lazy".to_vec()).expect("server's reply"),
        b"lazy"
    );

    // Paranoid Pirate: a queue, a worker, a client.
    let queue = shared!(
        QueueDriver::builder(&ep("front"), &ep("back")),
        sharing,
        "queue"
    )
    .config(QueueConfig {
        heartbeat: steady(),
        ..QueueConfig::default()
    })
    .bind()
    .expect("queue bind");
    stage.spawn("queue", move |stop| queue.run(&stop));
    let worker = shared!(
        PpWorker::builder(&ep("back")),
        sharing,
        "paranoid pirate worker"
    )
    .heartbeat(steady())
    .connect()
    .expect("paranoid pirate worker");
    stage.spawn("paranoid pirate worker", move |stop| {
        worker.run(handler::echo(), &stop).map(|_| ())
    });
    let mut client = shared!(
        LazyPirateClient::builder(&ep("front")),
        sharing,
        "queue client"
    )
    .retry(patient())
    .connect()
    .expect("queue client");
    assert_eq!(
        client.request(b"queued".to_vec()).expect("worker's reply"),
        b"queued"
    );

    // Majordomo: a broker, a worker, and the three clients.
    let broker = shared!(BrokerDriver::builder(&ep("broker")), sharing, "broker")
        .config(BrokerConfig {
            heartbeat: steady(),
            ..BrokerConfig::default()
        })
        .bind()
        .expect("broker bind");
    stage.spawn("broker", move |stop| broker.run(&stop));
    let worker = shared!(
        Worker::builder(&ep("broker"), "echo"),
        sharing,
        "majordomo worker"
    )
    .heartbeat(steady())
    .capacity(2)
    .connect()
    .expect("majordomo worker");
    stage.spawn("majordomo worker", move |stop| {
        worker.run(handler::echo(), &stop).map(|_| ())
    });
    let mut client = shared!(
        MajordomoClient::builder(&ep("broker")),
        sharing,
        "majordomo client"
    )
    .retry(patient())
    .connect()
    .expect("majordomo client");
    assert_eq!(
        client.request("echo", b"md".to_vec()).expect("reply"),
        b"md"
    );
    let mut many = shared!(
        AsyncMajordomoClient::builder(&ep("broker")),
        sharing,
        "async majordomo client"
    )
    .retry(patient())
    .connect()
    .expect("async majordomo client");
    let id = many.send("echo", b"many".to_vec()).expect("send");
    match many.recv(Duration::from_secs(10)).expect("recv") {
        Some(Outcome::Reply { id: got, body, .. }) => {
            assert_eq!((got, body), (id, b"many".to_vec()))
        }
        other => panic!("async majordomo client: {other:?}"),
    }
    let handle = shared!(AsyncClient::builder(&ep("broker")), sharing, "async client")
        .retry(patient())
        .connect()
        .expect("async client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let reply = runtime
        .block_on(async {
            let request = handle.request("echo", vec![b"handle".to_vec()]);
            tokio::time::timeout(Duration::from_secs(10), request).await
        })
        .expect("async client reply in time")
        .expect("async client reply");
    assert_eq!(reply, vec![b"handle".to_vec()]);

    // Freelance: a server and a client.
    let server = shared!(
        FreelanceServer::builder(&ep("freelance")),
        sharing,
        "freelance server"
    )
    .bind()
    .expect("freelance server bind");
    stage.spawn("freelance server", move |stop| {
        server.run(handler::echo(), &stop)
    });
    let mut client = shared!(
        FreelanceClient::builder(&[ep("freelance")]),
        sharing,
        "freelance client"
    )
    .connect()
    .expect("freelance client");
    assert_eq!(client.request(b"free".to_vec()).expect("reply"), b"free");

    drop((client, many, handle));
    stage.finish();
}

#[test]
fn every_driver_built_with_a_shared_context_reaches_the_others_over_inproc() {
    bounded(|| every_driver(&Sharing::Context(zmq::Context::new()), "context"));
}

#[test]
fn every_driver_makes_its_sockets_with_the_transport_it_is_given() {
    bounded(|| {
        let ctx = zmq::Context::new();
        let transports: BTreeMap<_, _> = DRIVERS
            .iter()
            .map(|&name| (name, Transport::new(&ctx, custom_options())))
            .collect();
        let sharing = Sharing::Transports(transports);
        every_driver(&sharing, "transport");
        let Sharing::Transports(transports) = sharing else {
            unreachable!("made above")
        };
        for (name, t) in transports {
            assert!(
                t.sockets_made() >= 1,
                "{name}: no socket made by its transport"
            );
        }
    });
}

/// The first monitor event of `monitor` (a PAIR connected to a socket's monitor) until
/// `until`, or a message on `socket`, whichever comes first.
enum First {
    Event(zmq::SocketEvent),
    Message(Vec<Vec<u8>>),
}

fn first_of(socket: &zmq::Socket, monitor: &zmq::Socket, until: std::time::Instant) -> First {
    loop {
        let left = until.saturating_duration_since(now());
        assert!(
            !left.is_zero(),
            "neither a message nor a monitor event in time"
        );
        let mut items = [
            socket.as_poll_item(zmq::POLLIN),
            monitor.as_poll_item(zmq::POLLIN),
        ];
        let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
        match zmq::poll(&mut items, ms) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        if items[0].is_readable() {
            return First::Message(socket.recv_multipart(0).expect("recv"));
        }
        if items[1].is_readable() {
            let event = monitor.recv_multipart(0).expect("monitor event");
            // The first frame is the event number (16 bits) and a value (32 bits).
            let number = u16::from_ne_bytes([event[0][0], event[0][1]]);
            return First::Event(zmq::SocketEvent::from_raw(number));
        }
    }
}

#[test]
fn a_server_given_a_transport_with_a_small_largest_frame_drops_a_larger_request() {
    bounded(|| {
        let transport = Transport::new(
            &zmq::Context::new(),
            TransportOptions {
                max_frame_bytes: 1024,
                ..TransportOptions::default()
            },
        );
        let server = Server::builder("tcp://127.0.0.1:*")
            .transport(&transport)
            .bind()
            .expect("bind");
        let endpoint = server.endpoint();
        let mut stage = Stage::new();
        stage.spawn("server", move |stop| {
            server.run(handler::echo(), &stop).map(|_| ())
        });

        // A peer of its own context; its socket reports being disconnected.
        let ctx = zmq::Context::new();
        let req = raw_socket(&ctx, zmq::REQ);
        req.monitor(
            "inproc://constructors-monitor",
            zmq::SocketEvent::DISCONNECTED as i32,
        )
        .expect("monitor");
        let monitor = ctx.socket(zmq::PAIR).expect("pair");
        monitor
            .connect("inproc://constructors-monitor")
            .expect("connect monitor");
        req.connect(&endpoint).expect("connect");
        send(&req, &[vec![b'x'; 4096]]);
        match first_of(&req, &monitor, deadline(Duration::from_secs(10))) {
            First::Event(zmq::SocketEvent::DISCONNECTED) => {}
            First::Event(other) => panic!("unexpected monitor event {other:?}"),
            First::Message(reply) => panic!(
                "a 4096-byte frame was answered ({} frames): the transport's largest frame, \
                 1024, did not reach the server's socket",
                reply.len()
            ),
        }

        // The server itself is fine: a frame within the limit is answered.
        let small = raw_socket(&ctx, zmq::REQ);
        small.connect(&endpoint).expect("connect");
        send(&small, &[vec![b'y'; 512]]);
        let reply = recv_until(&small, deadline(Duration::from_secs(10))).expect("reply");
        assert_eq!(reply[0], vec![b'y'; 512]);
        assert_eq!(transport.sockets_made(), 1);
        stage.finish();
    });
}

#[test]
fn a_client_given_a_transport_with_a_small_largest_frame_drops_a_larger_reply() {
    bounded(|| {
        // A server with the defaults, whose reply to `big` is 4 KiB.
        let server = Server::bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = server.endpoint();
        let mut stage = Stage::new();
        let big = handler::bytes(|body| {
            if body == b"big" {
                vec![b'z'; 4096]
            } else {
                body
            }
        });
        stage.spawn("server", move |stop| server.run(big, &stop).map(|_| ()));

        let transport = Transport::new(
            &zmq::Context::new(),
            TransportOptions {
                max_frame_bytes: 1024,
                ..TransportOptions::default()
            },
        );
        let mut client = LazyPirateClient::builder(&endpoint)
            .transport(&transport)
            .retry(Retry {
                timeout: Duration::from_millis(500),
                retries: 2,
                backoff: Backoff {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(10),
                    jitter: 0.0,
                },
                deadline: None,
            })
            .connect()
            .expect("client");
        // The reply is refused by the client's socket on every attempt, each made on a
        // fresh socket from the same transport.
        match client.request(b"big".to_vec()) {
            Err(Error::Client(ClientError::GaveUp { attempts, .. })) => assert_eq!(attempts, 2),
            Ok(reply) => panic!(
                "a {}-byte reply was taken: the transport's largest frame, 1024, did not \
                 reach the client's socket",
                reply.len()
            ),
            Err(e) => panic!("{e}"),
        }
        assert!(
            transport.sockets_made() >= 2,
            "{}",
            transport.sockets_made()
        );
        // A reply within the limit is taken.
        assert_eq!(client.request(b"small".to_vec()).expect("reply"), b"small");
        drop(client);
        stage.finish();
    });
}

#[test]
fn a_worker_with_settings_that_cannot_work_is_refused_at_connect() {
    bounded(|| {
        let refused = |r: Result<(), Error>, field: &str| match r {
            Err(Error::Config(ConfigError::Invalid { field: f, .. })) => assert_eq!(f, field),
            Err(e) => assert!(e.to_string().contains(field), "{e}"),
            Ok(()) => panic!("{field}: accepted"),
        };
        let ep = "tcp://127.0.0.1:5555";
        refused(
            Worker::builder(ep, "mmi.mine").connect().map(|_| ()),
            "service",
        );
        refused(
            Worker::builder(ep, "echo")
                .capacity(0)
                .connect()
                .map(|_| ()),
            "capacity",
        );
        refused(
            PpWorker::builder(ep)
                .heartbeat(Heartbeat {
                    interval: Duration::ZERO,
                    liveness: 3,
                })
                .connect()
                .map(|_| ()),
            "heartbeat.interval",
        );
        refused(
            PpWorker::connect("tcp://127.0.0.1:99999").map(|_| ()),
            "tcp://127.0.0.1:99999",
        );
        assert!(Worker::connect(ep, "echo").is_ok() && PpWorker::connect(ep).is_ok());
    });
}
