//! The pub/sub library as a program uses it, in one process over loopback TCP: a
//! subscriber resumed from positions the program kept itself, and a durable
//! subscriber's join boundary kept across restarts. Every wait has a deadline.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bosun::error::ConfigError;
use bosun::io::subscriber::Message;
use bosun::store::Store;
use bosun::{Error, Heartbeat, Publisher, Shutdown, Subscriber};
use uuid::Uuid;

const LIMIT: Duration = Duration::from_secs(20);

fn heartbeat() -> Heartbeat {
    Heartbeat {
        interval: Duration::from_millis(50),
        liveness: 5,
    }
}

/// A publisher on a thread of its own: publishes `m-1` .. `m-n` once told to (a send
/// on `go`), then heartbeats and serves replays until stopped.
struct Pub {
    id: Uuid,
    endpoint: String,
    replay: String,
    go: mpsc::Sender<u64>,
    published: mpsc::Receiver<u64>,
    stop: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Pub {
    fn start() -> Pub {
        let stop = Shutdown::new();
        let (go, orders) = mpsc::channel::<u64>();
        let (done, published) = mpsc::channel();
        let (ready, started) = mpsc::channel();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut p = Publisher::builder("tcp://127.0.0.1:0")
                .replay("tcp://127.0.0.1:0")
                .heartbeat_interval(heartbeat().interval)
                .bind()
                .expect("bind the publisher");
            ready
                .send((p.id(), p.endpoint(), p.replay_endpoint()))
                .expect("the test waits");
            while !s.is_triggered() {
                if let Ok(n) = orders.try_recv() {
                    for i in 1..=n {
                        p.publish(b"t", vec![format!("m-{i}").into_bytes()])
                            .expect("publish");
                    }
                    let _ = done.send(p.last_seq());
                }
                p.serve(Duration::from_millis(10), &s).expect("serve");
            }
        });
        let (id, endpoint, replay) = started.recv_timeout(LIMIT).expect("the publisher binds");
        Pub {
            id,
            endpoint,
            replay,
            go,
            published,
            stop,
            thread: Some(thread),
        }
    }

    /// Publishes `n` messages; returns once they are out.
    fn publish(&self, n: u64) -> u64 {
        self.go.send(n).expect("the publisher runs");
        self.published.recv_timeout(LIMIT).expect("published")
    }
}

impl Drop for Pub {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The messages received until `n` came or the deadline passed.
fn receive(sub: &mut Subscriber, n: usize) -> Vec<Message> {
    let end = bosun::io::now() + LIMIT;
    let mut got = Vec::new();
    while got.len() < n && bosun::io::now() < end {
        if let Some(m) = sub.recv_timeout(Duration::from_millis(100)).expect("recv") {
            got.push(m);
        }
    }
    got
}

fn seqs(got: &[Message]) -> Vec<u64> {
    got.iter().map(|m| m.seq).collect()
}

#[test]
fn a_subscriber_resumed_from_positions_it_kept_gets_exactly_what_follows_them() {
    let p = Pub::start();
    assert_eq!(p.publish(10), 10);
    let mut sub = Subscriber::builder(&p.endpoint)
        .replay(&p.replay)
        .heartbeat(heartbeat())
        .resume(&[(p.id, 4)])
        .connect()
        .expect("connect");
    let got = receive(&mut sub, 6);
    assert_eq!(seqs(&got), (5..=10).collect::<Vec<_>>());
    assert_eq!(got[0].payload, vec![b"m-5".to_vec()]);
    assert!(got.iter().all(|m| m.publisher == p.id && !m.redelivered));
    sub.acknowledge(&[(p.id, 10)]).expect("acknowledge");
}

#[test]
fn a_subscriber_is_resumed_from_its_store_or_from_given_positions_never_both() {
    let err = Subscriber::builder("tcp://127.0.0.1:1")
        .store(&Store::memory())
        .resume(&[(Uuid::from_u128(1), 4)])
        .connect()
        .expect_err("both refused");
    assert!(
        matches!(
            err,
            Error::Config(ConfigError::Invalid {
                field: "resume",
                ..
            })
        ),
        "{err}"
    );
}

/// A durable subscriber started, stopped before its publisher published anything, and
/// started again after: it gets what was published while it was away, since it first
/// subscribed then (without the kept boundary it would join at its restart, after the
/// messages, and get none of them).
#[test]
fn a_durable_subscriber_keeps_its_join_boundary_across_restarts() {
    let p = Pub::start();
    let store = Store::memory();
    let build = || {
        Subscriber::builder(&p.endpoint)
            .replay(&p.replay)
            .heartbeat(heartbeat())
            .store(&store)
            .connect()
            .expect("connect")
    };
    drop(build());
    let before = bosun::io::unix_ms();
    while bosun::io::unix_ms() == before {
        std::thread::yield_now(); // the next millisecond: published after the first start
    }
    assert_eq!(p.publish(5), 5);
    let published = bosun::io::unix_ms();
    while bosun::io::unix_ms() == published {
        std::thread::yield_now(); // restarted after the messages were published
    }
    let mut sub = build();
    let got = receive(&mut sub, 5);
    assert_eq!(seqs(&got), vec![1, 2, 3, 4, 5]);
}
