//! The async Majordomo client ([`bosun::io::async_client::AsyncClient`]) against a real
//! `bosun broker` and `bosun worker`: many concurrent requests from several tokio tasks,
//! each answered once with its own reply; a failing handler; no broker; a request
//! future dropped early; `shutdown`; and the driver thread ending when the last handle
//! goes. Some tests run the futures on tokio, others on a ten-line executor written
//! here, since the client depends on no runtime.
//!
//! The tests of this file run one at a time ([`serial`]): one of them counts the
//! client driver threads of the process.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bosun::error::ClientError;
use bosun::io::async_client::{AsyncClient, THREAD_NAME};
use bosun::{Backoff, Error, Retry};

use common::*;

const SECS_15: Duration = Duration::from_secs(15);
const HB: [&str; 4] = ["--heartbeat-interval", "1s", "--heartbeat-liveness", "5"];

/// Makes the tests of this file run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A broker on a free port; its process and endpoint.
fn broker() -> (Proc, String) {
    let mut args = vec!["-v", "broker", "--bind", "tcp://127.0.0.1:*"];
    args.extend(HB);
    start_broker("broker", &mut bosun(&args))
}

/// A worker of `service` with `extra` arguments, started once the broker has said it
/// registered.
fn worker(broker: &mut Proc, endpoint: &str, service: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "--connect", endpoint, "--service", service];
    args.extend(HB);
    args.extend_from_slice(extra);
    let w = Proc::spawn(&format!("worker {service}"), &mut bosun(&args));
    broker.expect_stderr("worker ready", SECS_15, |l| l.contains("worker ready"));
    w
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Runs `f` to completion on this thread, with no runtime: the waker unparks the
/// thread. Panics if it is not done within `limit`.
fn block_on<F: Future>(limit: Duration, f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let end = deadline(limit);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        let left = end.saturating_duration_since(now());
        assert!(!left.is_zero(), "future not done within {limit:?}");
        std::thread::park_timeout(left);
    }
}

/// The client driver threads of this process.
fn driver_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == THREAD_NAME)
        })
        .count()
}

#[test]
fn concurrent_requests_from_several_tasks_are_each_answered_once_with_their_own_reply() {
    let _serial = serial();
    let (mut b, ep) = broker();
    let _w = worker(&mut b, &ep, "echo", &["--capacity", "8"]);
    const TASKS: usize = 8;
    const PER_TASK: usize = 50;
    let client = AsyncClient::connect(&ep).expect("client");
    let rt = tokio_runtime();
    let replies = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let client = client.clone();
            tasks.spawn(async move {
                // Every request of the task started at once, then awaited in turn.
                let requests: Vec<_> = (0..PER_TASK)
                    .map(|i| {
                        let payload = vec![
                            format!("task-{t}").into_bytes(),
                            format!("req-{i}").into_bytes(),
                        ];
                        (payload.clone(), client.request("echo", payload))
                    })
                    .collect();
                let mut got = Vec::new();
                for (payload, request) in requests {
                    let reply = request.await.expect("reply");
                    assert_eq!(reply, payload, "a reply matched to its own request");
                    got.push(reply);
                }
                got
            });
        }
        let all = async {
            let mut replies = Vec::new();
            while let Some(task) = tasks.join_next().await {
                replies.extend(task.expect("task"));
            }
            replies
        };
        tokio::time::timeout(SECS_15, all)
            .await
            .expect("every reply within 15 s")
    });
    assert_eq!(replies.len(), TASKS * PER_TASK);
    let distinct: BTreeSet<_> = replies.iter().collect();
    assert_eq!(
        distinct.len(),
        TASKS * PER_TASK,
        "each request answered once"
    );
    assert_eq!(client.outstanding(), 0);
    assert_eq!(client.retries(), 0, "no attempt timed out");
}

#[test]
fn a_failing_handler_is_a_remote_error_with_no_runtime() {
    let _serial = serial();
    let (mut b, ep) = broker();
    let _w = worker(&mut b, &ep, "fail", &["--exec", "exit 3"]);
    let _echo = worker(&mut b, &ep, "echo", &[]);
    let retry = Retry {
        timeout: Duration::from_secs(5),
        ..Retry::default()
    };
    let client = AsyncClient::builder(&ep)
        .retry(retry)
        .connect()
        .expect("client");
    let started = now();
    let failed = block_on(SECS_15, client.request("fail", vec![b"x".to_vec()]));
    match failed {
        Err(Error::Client(ClientError::Remote { message, .. })) => {
            assert!(message.contains("exit status: 3"), "{message}")
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed at once, not by a timeout"
    );
    // The client goes on.
    let ok = block_on(SECS_15, client.request("echo", vec![b"after".to_vec()]));
    assert_eq!(ok.expect("echo"), [b"after".to_vec()]);
    assert_eq!(client.retries(), 0);
}

#[test]
fn no_broker_gives_up_within_the_retry_budget() {
    let _serial = serial();
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    let retry = Retry {
        timeout: Duration::from_millis(200),
        retries: 2,
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(100),
            jitter: 0.0,
        },
        deadline: None,
    };
    let client = AsyncClient::builder(&ep)
        .retry(retry)
        .connect()
        .expect("client");
    let rt = tokio_runtime();
    let started = now();
    let out = rt.block_on(async {
        tokio::time::timeout(
            SECS_15,
            client.request("echo", vec![b"a".to_vec(), b"b".to_vec()]),
        )
        .await
        .expect("an outcome within 15 s")
    });
    let elapsed = started.elapsed();
    match out {
        Err(Error::Client(ClientError::GaveUp { attempts, body, .. })) => {
            assert_eq!(attempts, 2);
            assert_eq!(body, b"ab", "the body handed back");
        }
        other => panic!("expected a give-up, got {other:?}"),
    }
    // Two attempts of 200 ms and a pause of 50 ms: 450 ms, with room for a slow machine.
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "gave up after {elapsed:?}"
    );
    assert_eq!(client.retries(), 1);
    assert_eq!(client.outstanding(), 0);
}

#[test]
fn a_dropped_request_frees_its_slot_when_its_reply_comes() {
    let _serial = serial();
    let (mut b, ep) = broker();
    let _w = worker(
        &mut b,
        &ep,
        "slow",
        &["--delay", "100ms", "--capacity", "10"],
    );
    let client = AsyncClient::connect(&ep).expect("client");
    for i in 0..10 {
        drop(client.request("slow", vec![format!("dropped-{i}").into_bytes()]));
    }
    assert!(
        client.outstanding() > 0,
        "the requests went out though their futures were dropped"
    );
    assert!(
        wait_until(SECS_15, || client.outstanding() == 0),
        "{} slots left after the replies came",
        client.outstanding()
    );
    let reply = block_on(SECS_15, client.request("slow", vec![b"kept".to_vec()]));
    assert_eq!(reply.expect("reply"), [b"kept".to_vec()]);
}

#[test]
fn shutdown_fails_the_waiting_requests_and_every_later_one() {
    let _serial = serial();
    let (_b, ep) = broker();
    let retry = Retry {
        timeout: Duration::from_secs(30),
        ..Retry::default()
    };
    let client = AsyncClient::builder(&ep)
        .retry(retry)
        .connect()
        .expect("client");
    // No worker for it: the request waits in the broker.
    let waiting = client.request("nobody", vec![b"x".to_vec()]);
    assert!(wait_until(SECS_15, || client.outstanding() == 1));
    let started = now();
    client.shutdown();
    let out = block_on(SECS_15, waiting);
    assert!(
        matches!(out, Err(Error::Client(ClientError::Interrupted))),
        "{out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let later = block_on(SECS_15, client.request("nobody", vec![b"y".to_vec()]));
    assert!(
        matches!(later, Err(Error::Client(ClientError::Interrupted))),
        "{later:?}"
    );
    assert!(client.driver_exit().wait(SECS_15));
    assert_eq!(client.outstanding(), 0);
}

#[test]
fn dropping_the_last_handle_stops_the_driver_thread() {
    let _serial = serial();
    let (mut b, ep) = broker();
    let _w = worker(&mut b, &ep, "echo", &[]);
    assert!(
        wait_until(SECS_15, || driver_threads() == 0),
        "no driver thread of an earlier test left"
    );
    let client = AsyncClient::connect(&ep).expect("client");
    let exit = client.driver_exit();
    // The thread names itself once it runs.
    assert!(
        wait_until(SECS_15, || driver_threads() == 1),
        "one driver thread"
    );
    let clone = client.clone();
    let reply = block_on(SECS_15, clone.request("echo", vec![b"1".to_vec()]));
    assert_eq!(reply.expect("reply"), [b"1".to_vec()]);
    drop(client);
    assert!(!exit.has_exited(), "a clone keeps it running");
    // An unfinished request keeps it running too, until it is answered.
    let request = clone.request("echo", vec![b"2".to_vec()]);
    drop(clone);
    assert!(!exit.has_exited());
    assert_eq!(block_on(SECS_15, request).expect("reply"), [b"2".to_vec()]);
    assert!(exit.wait(Duration::from_secs(5)), "the driver thread ended");
    assert!(
        wait_until(Duration::from_secs(5), || driver_threads() == 0),
        "the driver thread is gone"
    );
}

/// With an outbox, a request is pending from `request` until its reply; a full outbox
/// fails the next request at once (backpressure), nothing sent; after a crash (the
/// memory store keeps what was flushed) a new client's `recover` re-sends the pending
/// requests with their original ids, and their futures get the replies. Catches: a
/// request that is not durable once its future exists and the driver has had its turn,
/// a full outbox that queues anyway, or recovery that needs the old process.
#[test]
fn the_outbox_keeps_requests_until_answered_and_recover_resends_them() {
    use bosun::io::outbox::OutboxConfig;
    use bosun::store::{Durability, Store};
    let _serial = serial();
    let (mut b, ep) = broker();
    let store = Store::memory();
    let config = OutboxConfig {
        durability: Durability::Batched,
        limit: 2,
    };
    let retry = Retry {
        timeout: Duration::from_secs(30),
        ..Retry::default()
    };
    let client = AsyncClient::builder(&ep)
        .retry(retry)
        .outbox(&store, config)
        .connect()
        .expect("client");
    // No worker: both wait at the broker.
    let first = client.request("echo", vec![b"one".to_vec()]);
    let second = client.request("echo", vec![b"two".to_vec()]);
    let third = block_on(SECS_15, client.request("echo", vec![b"three".to_vec()]));
    match third {
        Err(Error::Client(ClientError::OutboxFull { limit: 2, body })) => {
            assert_eq!(body, b"three")
        }
        other => panic!("expected OutboxFull, got {other:?}"),
    }
    let ids = [first.id(), second.id()];
    let outbox = client.outbox().expect("an outbox").clone();
    assert!(
        wait_until(SECS_15, || client.outstanding() == 2
            && store.unflushed_writes() == 0),
        "both committed and sent"
    );
    assert_eq!(outbox.lock().unwrap().len(), 2);
    // The process "dies": only what was flushed survives.
    let crashed = store.crash_and_reopen().expect("a memory store");
    client.shutdown();
    assert!(matches!(
        block_on(SECS_15, first),
        Err(Error::Client(ClientError::Interrupted))
    ));
    drop(second);
    drop((client, outbox));

    let _w = worker(&mut b, &ep, "echo", &[]);
    let client = AsyncClient::builder(&ep)
        .outbox(&crashed, config)
        .connect()
        .expect("client");
    let recovered = client.recover().expect("recover");
    let got: Vec<_> = recovered.iter().map(|r| r.id()).collect();
    assert_eq!(got, ids, "the original ids, in creation order");
    let mut replies = Vec::new();
    for r in recovered {
        replies.push(block_on(SECS_15, r).expect("reply"));
    }
    assert_eq!(replies, [vec![b"one".to_vec()], vec![b"two".to_vec()]]);
    let outbox = client.outbox().expect("an outbox");
    assert!(outbox.lock().unwrap().is_empty(), "answered: acked");
    assert!(client.recover().expect("recover").is_empty());
}
