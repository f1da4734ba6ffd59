//! A request handler that panics fails that one request, and its worker goes on serving:
//! the client whose request hit the panic gets a typed remote error naming the panic
//! (not a timeout), and the same worker, on the same connection, answers what comes
//! next. One bad request neither kills the worker nor leaves a zombie that heartbeats
//! with no handler behind it.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bosun::error::ClientError;
use bosun::io::broker::BrokerDriver;
use bosun::io::handler::{self, Handler};
use bosun::io::mdclient::{AsyncMajordomoClient, MajordomoClient, Outcome};
use bosun::io::ppworker::WorkerStats;
use bosun::io::queue::QueueDriver;
use bosun::proto::broker::BrokerConfig;
use bosun::proto::envelope::Status;
use bosun::proto::paranoid_pirate::QueueConfig;
use bosun::{Error, Heartbeat, PpWorker, Retry, Shutdown, Worker};

mod common;
use common::{deadline, now};

const LIMIT: Duration = Duration::from_secs(10);

/// One attempt per request with a timeout far beyond what the (instant) handler takes:
/// an answer is the worker's, and a missing one is a failure, never hidden by a retry.
fn patient_retry() -> Retry {
    Retry {
        timeout: Duration::from_secs(5),
        retries: 1,
        ..Retry::default()
    }
}

/// A heartbeat (5 s to expiry) under which no live peer is expired even on a loaded
/// machine: a reconnect in these tests means the worker was lost, not slow.
fn steady() -> Heartbeat {
    Heartbeat {
        interval: Duration::from_secs(1),
        liveness: 5,
    }
}

/// Echoes, except that the body `poison` panics with "poison".
fn poisoned_echo() -> Handler {
    handler::bytes(|body: Vec<u8>| {
        if body == b"poison" {
            panic!("poison")
        }
        body
    })
}

/// Asserts that `result` is the remote error a panic of "poison" makes.
fn assert_panic_reported(result: Result<Vec<u8>, Error>) {
    match result {
        Err(Error::Client(ClientError::Remote {
            status, message, ..
        })) => {
            assert_eq!(status, Status::Error, "{message}");
            assert!(
                message.contains("handler panicked: poison"),
                "message: {message:?}"
            );
        }
        other => panic!("expected a remote error naming the panic, got {other:?}"),
    }
}

/// The worker thread has not stopped: `done_rx` holds no result.
fn assert_still_running<T: std::fmt::Debug>(done_rx: &mpsc::Receiver<T>) {
    match done_rx.try_recv() {
        Err(mpsc::TryRecvError::Empty) => {}
        other => panic!("the worker stopped: {other:?}"),
    }
}

/// Stops the worker and checks that it served every request on its first connection.
fn assert_stopped_cleanly(
    stop: &Shutdown,
    done_rx: &mpsc::Receiver<Result<WorkerStats, Error>>,
    handled: u64,
) {
    stop.trigger();
    let result = done_rx.recv_timeout(LIMIT).expect("the worker stops");
    let stats = result.expect("the worker stops without an error");
    assert_eq!(
        stats,
        WorkerStats {
            handled,
            reconnects: 0
        },
        "one worker, never reconnected, handled every request (the failed one included)"
    );
}

#[test]
fn paranoid_pirate_worker_handler_panic_fails_the_request_and_keeps_serving() {
    let ctx = zmq::Context::new();
    let cfg = QueueConfig {
        heartbeat: steady(),
        ..QueueConfig::default()
    };
    let queue = QueueDriver::builder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        .context(&ctx)
        .config(cfg)
        .bind()
        .unwrap();
    let (front, back) = (queue.frontend_endpoint(), queue.backend_endpoint());
    let stop = Shutdown::new();
    let queue_stop = stop.clone();
    let queue_thread = std::thread::spawn(move || queue.run(&queue_stop));

    let (done_tx, done_rx) = mpsc::channel();
    let worker_ctx = ctx.clone();
    let worker_stop = stop.clone();
    let worker_thread = std::thread::spawn(move || {
        let result = PpWorker::builder(&back)
            .context(&worker_ctx)
            .heartbeat(cfg.heartbeat)
            .connect()
            .and_then(|w| w.run(poisoned_echo(), &worker_stop));
        let _ = done_tx.send(result);
    });

    let lazy_pirate = || {
        bosun::LazyPirateClient::builder(&front)
            .context(&ctx)
            .retry(patient_retry())
            .connect()
            .unwrap()
    };
    let (mut client, mut patient) = (lazy_pirate(), lazy_pirate());
    assert_eq!(patient.request(b"fine".to_vec()).unwrap(), b"fine");

    assert_panic_reported(client.request(b"poison".to_vec()));
    assert_eq!(client.stats().retries, 0, "answered on the first attempt");
    assert_still_running(&done_rx);

    // The same worker (the only one) answers the next request of the same client.
    assert_eq!(client.request(b"after".to_vec()).unwrap(), b"after");
    assert_eq!(patient.request(b"again".to_vec()).unwrap(), b"again");
    assert_eq!(
        (client.stats().retries, patient.stats().retries),
        (0, 0),
        "nothing timed out"
    );
    assert_still_running(&done_rx);

    assert_stopped_cleanly(&stop, &done_rx, 4);
    worker_thread.join().unwrap();
    queue_thread.join().unwrap().unwrap();
}

#[test]
fn majordomo_worker_handler_panic_fails_the_request_and_keeps_serving() {
    md_worker_handler_panic_fails_the_request_and_keeps_serving(1);
}

#[test]
fn pooled_majordomo_worker_handler_panic_fails_the_request_and_keeps_serving() {
    md_worker_handler_panic_fails_the_request_and_keeps_serving(2);
}

/// Counts requests that are inside the handler at once: `meet` returns true once
/// `n` of them are in, false if that did not happen within the limit.
#[derive(Default)]
struct Rendezvous {
    inside: Mutex<u32>,
    arrived: Condvar,
}

impl Rendezvous {
    fn meet(&self, n: u32, limit: Duration) -> bool {
        let mut inside = self.inside.lock().unwrap();
        *inside += 1;
        self.arrived.notify_all();
        let (inside, _) = self
            .arrived
            .wait_timeout_while(inside, limit, |k| *k < n)
            .unwrap();
        *inside >= n
    }
}

fn md_worker_handler_panic_fails_the_request_and_keeps_serving(capacity: u32) {
    let ctx = zmq::Context::new();
    let heartbeat = steady();
    let cfg = BrokerConfig {
        heartbeat,
        ..BrokerConfig::default()
    };
    let broker = BrokerDriver::builder("tcp://127.0.0.1:*")
        .context(&ctx)
        .config(cfg)
        .bind()
        .unwrap();
    let endpoint = broker.endpoint();
    let stop = Shutdown::new();
    let broker_stop = stop.clone();
    let broker_thread = std::thread::spawn(move || broker.run(&broker_stop));

    // `pair` requests wait (boundedly) until `capacity` of them are in the handler at
    // once: with capacity 2 that proves both handler threads outlived the panic.
    let rendezvous = Arc::new(Rendezvous::default());
    let inner = poisoned_echo();
    let meeting = Arc::clone(&rendezvous);
    let handler = handler::from_fn(move |req| {
        if req.body() == b"pair" {
            let met = meeting.meet(capacity, Duration::from_secs(3));
            return Ok(vec![if met {
                b"met".to_vec()
            } else {
                b"alone".to_vec()
            }]);
        }
        inner(req)
    });

    let (done_tx, done_rx) = mpsc::channel();
    let worker_stop = stop.clone();
    let worker_endpoint = endpoint.clone();
    let worker_ctx = ctx.clone();
    let worker_thread = std::thread::spawn(move || {
        let result = Worker::builder(&worker_endpoint, "poison")
            .context(&worker_ctx)
            .heartbeat(heartbeat)
            .capacity(capacity)
            .connect()
            .and_then(|w| w.run(handler, &worker_stop));
        let _ = done_tx.send(result);
    });

    let majordomo = || {
        MajordomoClient::builder(&endpoint)
            .context(&ctx)
            .retry(patient_retry())
            .connect()
            .unwrap()
    };
    let (mut client, mut patient) = (majordomo(), majordomo());
    assert_eq!(
        patient.request("poison", b"fine".to_vec()).unwrap(),
        b"fine"
    );

    assert_panic_reported(client.request("poison", b"poison".to_vec()));
    assert_eq!(client.retries(), 0, "answered on the first attempt");
    assert_still_running(&done_rx);

    // The same worker (the only one) answers the next request of the same client.
    assert_eq!(
        client.request("poison", b"after".to_vec()).unwrap(),
        b"after"
    );

    // Every handler slot still works: `capacity` requests in the handler at once.
    let mut many = AsyncMajordomoClient::builder(&endpoint)
        .context(&ctx)
        .retry(patient_retry())
        .connect()
        .unwrap();
    let ids: Vec<_> = (0..capacity)
        .map(|_| many.send("poison", b"pair".to_vec()).unwrap())
        .collect();
    let mut answered = Vec::new();
    let until = deadline(LIMIT);
    while answered.len() < ids.len() {
        let left = until.saturating_duration_since(now());
        assert!(!left.is_zero(), "pair requests unanswered: {answered:?}");
        match many.recv(left).unwrap() {
            Some(Outcome::Reply { id, body, .. }) => {
                assert_eq!(body, b"met", "only some handler slots took requests");
                answered.push(id);
            }
            Some(other) => panic!("pair request: {other:?}"),
            None => {}
        }
    }
    answered.sort();
    let mut sent = ids.clone();
    sent.sort();
    assert_eq!(answered, sent);
    assert_eq!(
        (client.retries(), patient.retries(), many.retries()),
        (0, 0, 0),
        "nothing timed out"
    );
    assert_still_running(&done_rx);

    assert_stopped_cleanly(&stop, &done_rx, 3 + u64::from(capacity));
    worker_thread.join().unwrap();
    broker_thread.join().unwrap().unwrap();
}
