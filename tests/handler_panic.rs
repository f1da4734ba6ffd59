//! A request handler that panics stops its worker with an error, instead of leaving a
//! worker that heartbeats forever with no handler behind it (a zombie its queue or
//! broker would never expire).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bosun::io::broker::BrokerDriver;
use bosun::io::queue::QueueDriver;
use bosun::proto::broker::BrokerConfig;
use bosun::proto::paranoid_pirate::QueueConfig;
use bosun::{Error, Heartbeat, PpWorker, Retry, Shutdown, Worker};

const LIMIT: Duration = Duration::from_secs(10);

fn quick_retry() -> Retry {
    Retry {
        timeout: Duration::from_millis(300),
        retries: 1,
        ..Retry::default()
    }
}

#[test]
fn paranoid_pirate_worker_stops_when_its_handler_panics() {
    let ctx = zmq::Context::new();
    let cfg = QueueConfig {
        heartbeat: Heartbeat {
            interval: Duration::from_millis(100),
            liveness: 3,
        },
        ..QueueConfig::default()
    };
    let queue = QueueDriver::bind(&ctx, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", cfg).unwrap();
    let (front, back) = (
        queue.frontend_endpoint().to_string(),
        queue.backend_endpoint().to_string(),
    );
    let stop = Shutdown::new();
    let queue_stop = stop.clone();
    let queue_thread = std::thread::spawn(move || queue.run(&queue_stop));

    let (done_tx, done_rx) = mpsc::channel();
    let worker_ctx = ctx.clone();
    let worker_stop = stop.clone();
    std::thread::spawn(move || {
        let result = PpWorker::new(&worker_ctx, &back)
            .heartbeat(cfg.heartbeat)
            .run(
                Box::new(|body: Vec<u8>| {
                    if body == b"poison" {
                        panic!("poison")
                    }
                    body
                }),
                &worker_stop,
            );
        let _ = done_tx.send(result);
    });

    let mut client = bosun::LazyPirateClient::new(&ctx, &front, quick_retry()).unwrap();
    let mut patient = bosun::LazyPirateClient::new(
        &ctx,
        &front,
        Retry {
            timeout: Duration::from_secs(5),
            ..quick_retry()
        },
    )
    .unwrap();
    assert_eq!(patient.request(b"fine".to_vec()).unwrap(), b"fine");
    assert!(
        client.request(b"poison".to_vec()).is_err(),
        "nobody can answer"
    );
    let result = done_rx.recv_timeout(LIMIT).expect("the worker stops");
    assert!(
        matches!(&result, Err(Error::HandlerPanicked(why)) if why == "poison"),
        "{result:?}"
    );
    stop.trigger();
    queue_thread.join().unwrap().unwrap();
}

#[test]
fn majordomo_worker_stops_when_its_handler_panics() {
    md_worker_stops_when_its_handler_panics(1);
}

#[test]
fn pooled_majordomo_worker_stops_when_its_handler_panics() {
    md_worker_stops_when_its_handler_panics(2);
}

fn md_worker_stops_when_its_handler_panics(capacity: u32) {
    let ctx = zmq::Context::new();
    let heartbeat = Heartbeat {
        interval: Duration::from_millis(100),
        liveness: 3,
    };
    let cfg = BrokerConfig {
        heartbeat,
        ..BrokerConfig::default()
    };
    let broker = BrokerDriver::bind(&ctx, "tcp://127.0.0.1:*", cfg).unwrap();
    let endpoint = broker.endpoint().to_string();
    let stop = Shutdown::new();
    let broker_stop = stop.clone();
    let broker_thread = std::thread::spawn(move || broker.run(&broker_stop));

    let (done_tx, done_rx) = mpsc::channel();
    let worker_stop = stop.clone();
    let worker_endpoint = endpoint.clone();
    let worker_ctx = ctx.clone();
    std::thread::spawn(move || {
        let result = Worker::new(&worker_endpoint, "poison")
            .context(&worker_ctx)
            .heartbeat(heartbeat)
            .capacity(capacity)
            .run(
                Arc::new(|body: Vec<u8>| {
                    if body == b"poison" {
                        panic!("poison")
                    }
                    body
                }),
                &worker_stop,
            );
        let _ = done_tx.send(result);
    });

    let mut client =
        bosun::io::mdclient::MajordomoClient::new(&ctx, &endpoint, quick_retry()).unwrap();
    let mut patient = bosun::io::mdclient::MajordomoClient::new(
        &ctx,
        &endpoint,
        Retry {
            timeout: Duration::from_secs(5),
            ..quick_retry()
        },
    )
    .unwrap();
    assert_eq!(
        patient.request("poison", b"fine".to_vec()).unwrap(),
        b"fine"
    );
    assert!(client.request("poison", b"poison".to_vec()).is_err());
    let result = done_rx.recv_timeout(LIMIT).expect("the worker stops");
    assert!(
        matches!(&result, Err(Error::HandlerPanicked(why)) if why == "poison"),
        "{result:?}"
    );
    stop.trigger();
    broker_thread.join().unwrap().unwrap();
}
