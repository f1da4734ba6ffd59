//! The 6/PPP queue and worker cores in virtual time: exact expiry and heartbeat timing,
//! routing rules, the worker's reconnect schedule, property tests over random frames,
//! time steps, drops and duplicates, and an end-to-end simulation of a Lazy Pirate
//! client, a queue and two echo workers (one of them killed mid-run) over seeded
//! lossy links.

mod sim;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bosun::error::{ConfigError, ProtocolError};
use bosun::proto::envelope::{Answer, HandlerError, Meta, Request, Status, MAGIC};
use bosun::proto::frames::ppp::{self, FromQueue, FromWorker};
use bosun::proto::frames::Frames;
use bosun::proto::lazy_pirate::{self, LazyPirate};
use bosun::proto::paranoid_pirate::{
    NotBusy, Queue, QueueConfig, QueueEvent, QueueTransmit, Side, Worker, WorkerEvent,
    WorkerTransmit,
};
use bosun::{Backoff, Envelope, Heartbeat, Retry};
use proptest::prelude::*;
use uuid::Uuid;

use sim::{envelope, frames, ms, route, Clock, Link, LinkConfig, LinkStats, ReqSocket, NS};

const A: &[u8] = b"worker-a";
const B: &[u8] = b"worker-b";
const C: &[u8] = b"worker-c";
const READY: u8 = 0x01;
const HEARTBEAT: u8 = 0x02;

fn hb(interval_ms: u64, liveness: u32) -> Heartbeat {
    Heartbeat {
        interval: ms(interval_ms),
        liveness,
    }
}

fn qcfg(heartbeat: Heartbeat, max_queue: usize) -> QueueConfig {
    QueueConfig {
        heartbeat,
        max_queue,
    }
}

/// A queue; every configuration in these tests is valid.
fn new_queue(now: Instant, cfg: QueueConfig) -> Queue {
    Queue::new(now, cfg).expect("a valid queue configuration")
}

/// A worker core; every configuration in these tests is valid.
fn new_worker(now: Instant, heartbeat: Heartbeat, reconnect: Backoff, seed: u64) -> Worker {
    Worker::new(now, heartbeat, reconnect, seed).expect("a valid worker configuration")
}

/// `[identity][cmd]`, as the backend ROUTER delivers a worker's one-byte command.
fn command(identity: &[u8], cmd: u8) -> Frames {
    vec![identity.to_vec(), vec![cmd]]
}

/// `[client][""][body]`, as the frontend ROUTER delivers a REQ client's request.
fn request(client: &[u8], body: &[u8]) -> Frames {
    frames(&[client, b"", body])
}

/// `[worker][client][""][body]`, a worker's reply as the backend ROUTER delivers it.
fn worker_reply(worker: &[u8], client: &[u8], body: &[u8]) -> Frames {
    frames(&[worker, client, b"", body])
}

fn q_drain(q: &mut Queue) -> (Vec<QueueTransmit>, Vec<QueueEvent>) {
    (
        std::iter::from_fn(|| q.poll_transmit()).collect(),
        std::iter::from_fn(|| q.poll_event()).collect(),
    )
}

/// The requests in `t` sent to workers: (worker identity, request frames after it).
fn dispatched(t: &[QueueTransmit]) -> Vec<(Vec<u8>, Frames)> {
    t.iter()
        .filter_map(|t| match t {
            QueueTransmit::Backend(f) => route(f.clone()),
            QueueTransmit::Frontend(_) => None,
        })
        .filter(|(_, rest)| *rest != vec![vec![HEARTBEAT]])
        .collect()
}

/// The workers `t` heartbeats, sorted; panics on any other backend message shape.
fn heartbeated(t: &[QueueTransmit]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = t
        .iter()
        .filter_map(|t| match t {
            QueueTransmit::Backend(f) => route(f.clone()),
            QueueTransmit::Frontend(_) => None,
        })
        .filter(|(_, rest)| *rest == vec![vec![HEARTBEAT]])
        .map(|(id, _)| id)
        .collect();
    out.sort();
    out
}

fn expired(e: &[QueueEvent]) -> Vec<(Vec<u8>, bool)> {
    e.iter()
        .filter_map(|e| match e {
            QueueEvent::WorkerExpired { identity, was_busy } => Some((identity.clone(), *was_busy)),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Queue: expiry and heartbeats.

/// A worker READY at 0.5 s (and busy from then when `busy`) says nothing more; the
/// queue heartbeats it every interval regardless. It is alive 1 ns before
/// 0.5 s + liveness × interval and expired at that instant.
fn expiry_case(interval_ms: u64, liveness: u32, busy: bool) {
    let ctx = format!("interval {interval_ms} ms, liveness {liveness}, busy {busy}");
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(interval_ms, liveness), 10));
    // Heartbeats to nobody until the worker arrives.
    q.handle_timeout(c.set(ms(500)));
    assert_eq!(q_drain(&mut q), (vec![], vec![]));
    q.handle_backend(c.now(), command(A, READY));
    if busy {
        q.handle_frontend(c.now(), request(b"client", b"job"));
    }
    let (t, e) = q_drain(&mut q);
    assert_eq!(
        e,
        vec![QueueEvent::WorkerReady {
            identity: A.to_vec()
        }]
    );
    assert_eq!(dispatched(&t).len(), usize::from(busy), "{ctx}");
    assert_eq!(q.is_busy(A), Some(busy));
    let deadline = c.at(ms(500 + interval_ms * u64::from(liveness)));
    // Walk the queue's own wake-ups up to the deadline: heartbeats go out, but they
    // are not signs of life from the worker.
    for _ in 0..1000 {
        let next = q.poll_timeout().unwrap();
        assert!(
            next <= deadline,
            "{ctx}: the queue would sleep through the expiry"
        );
        if next == deadline {
            break;
        }
        q.handle_timeout(c.advance_to(next));
        let (t, e) = q_drain(&mut q);
        assert_eq!(heartbeated(&t), vec![A.to_vec()], "{ctx}");
        assert_eq!(e, vec![], "{ctx}");
    }
    q.handle_timeout(c.advance_to(deadline - NS));
    let (_, e) = q_drain(&mut q);
    assert!(expired(&e).is_empty(), "{ctx}: expired early");
    assert_eq!((q.workers(), q.is_busy(A)), (1, Some(busy)), "{ctx}");
    q.handle_timeout(c.advance_to(deadline));
    let (_, e) = q_drain(&mut q);
    assert_eq!(expired(&e), vec![(A.to_vec(), busy)], "{ctx}");
    assert_eq!((q.workers(), q.idle_workers()), (0, 0), "{ctx}");
    assert_eq!(q.is_busy(A), None);
    // Gone for good: no more heartbeats, and a new request waits.
    q.handle_timeout(c.advance(ms(interval_ms * 3)));
    q.handle_frontend(c.now(), request(b"client", b"next"));
    let (t, _) = q_drain(&mut q);
    assert!(t.is_empty(), "{ctx}: {t:?}");
    assert_eq!(q.queued(), 1);
}

#[test]
fn idle_worker_expires_after_exactly_liveness_intervals() {
    for (interval, liveness) in [(1000, 3), (250, 5), (100, 1), (40, 4)] {
        expiry_case(interval, liveness, false);
    }
}

#[test]
fn busy_worker_expires_after_exactly_liveness_intervals() {
    for (interval, liveness) in [(1000, 3), (250, 5), (100, 1), (40, 4)] {
        expiry_case(interval, liveness, true);
    }
}

#[test]
fn heartbeats_go_to_every_worker_idle_and_busy_every_interval() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    for w in [A, B, C] {
        q.handle_backend(c.now(), command(w, READY));
    }
    q.handle_frontend(c.now(), request(b"client", b"job"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t)[0].0, A);
    for k in 1..=10u64 {
        // Each worker heartbeats half an interval before the queue does.
        for w in [A, B, C] {
            q.handle_backend(c.set(ms(k * 1000 - 500)), command(w, HEARTBEAT));
        }
        assert_eq!(q.poll_timeout(), Some(c.at(ms(k * 1000))));
        q.handle_timeout(c.set(ms(k * 1000) - NS));
        assert_eq!(q_drain(&mut q), (vec![], vec![]), "tick {k} came early");
        q.handle_timeout(c.set(ms(k * 1000)));
        let (t, e) = q_drain(&mut q);
        assert_eq!(heartbeated(&t), vec![A.to_vec(), B.to_vec(), C.to_vec()]);
        assert_eq!(t.len(), 3, "exactly one heartbeat each: {t:?}");
        assert_eq!(e, vec![]);
        assert_eq!(q.is_busy(A), Some(true), "a heartbeat is not READY");
    }
    assert_eq!((q.workers(), q.idle_workers()), (3, 2));
}

#[test]
fn a_heartbeat_or_a_reply_refreshes_liveness_and_a_malformed_message_does_not() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    for w in [A, B, C] {
        q.handle_backend(c.now(), command(w, READY));
    }
    // All three take a request, so that C can reply.
    q.handle_frontend(c.now(), request(b"client", b"x"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t)[0].0, A);
    q.handle_frontend(c.now(), request(b"client", b"y"));
    q.handle_frontend(c.now(), request(b"client", b"z"));
    let _ = q_drain(&mut q);
    assert_eq!(q.idle_workers(), 0);

    c.set(ms(2000));
    q.handle_backend(c.now(), command(A, HEARTBEAT));
    for junk in [
        vec![B.to_vec(), vec![0x07]],
        vec![B.to_vec(), b"0x02".to_vec()],
        vec![B.to_vec(), vec![HEARTBEAT, 0]],
        vec![B.to_vec(), vec![HEARTBEAT], vec![HEARTBEAT]],
        vec![B.to_vec(), vec![]],
        vec![B.to_vec()],
        frames(&[B, b"client", b"no delimiter", b"x"]),
    ] {
        q.handle_backend(c.now(), junk.clone());
        let (t, e) = q_drain(&mut q);
        assert!(t.is_empty(), "{junk:?}");
        assert!(
            matches!(e.as_slice(), [QueueEvent::Malformed { side: Side::Backend, identity, .. }] if identity == B),
            "{junk:?} gave {e:?}"
        );
    }
    q.handle_backend(c.now(), worker_reply(C, b"client", b"z"));
    let _ = q_drain(&mut q);

    q.handle_timeout(c.set(ms(3000) - NS));
    assert!(expired(&q_drain(&mut q).1).is_empty());
    q.handle_timeout(c.set(ms(3000)));
    assert_eq!(expired(&q_drain(&mut q).1), vec![(B.to_vec(), true)]);
    q.handle_timeout(c.set(ms(5000) - NS));
    assert!(expired(&q_drain(&mut q).1).is_empty());
    assert_eq!(q.workers(), 2);
    q.handle_timeout(c.set(ms(5000)));
    let mut gone = expired(&q_drain(&mut q).1);
    gone.sort();
    assert_eq!(gone, vec![(A.to_vec(), true), (C.to_vec(), false)]);
}

// ---------------------------------------------------------------------------------
// Queue: routing.

#[test]
fn a_busy_worker_is_never_handed_a_second_request() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(A, READY));
    q.handle_frontend(c.now(), request(b"c1", b"one"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t), vec![(A.to_vec(), request(b"c1", b"one"))]);
    for i in 1..=5u64 {
        q.handle_backend(c.set(ms(i * 100)), command(A, HEARTBEAT));
        q.handle_frontend(c.now(), request(b"c2", b"two"));
        let (t, e) = q_drain(&mut q);
        assert!(
            t.is_empty(),
            "a HEARTBEAT from a busy worker is not READY: {t:?}"
        );
        assert!(e.is_empty());
        assert_eq!(q.is_busy(A), Some(true));
    }
    assert_eq!((q.queued(), q.idle_workers()), (5, 0));
    // The reply is forwarded as it is and frees the worker for the next request.
    q.handle_backend(c.now(), frames(&[A, b"c1", b"", b"r1", b"r2"]));
    let (t, _) = q_drain(&mut q);
    assert_eq!(
        t,
        vec![
            QueueTransmit::Frontend(frames(&[b"c1", b"", b"r1", b"r2"])),
            QueueTransmit::Backend(frames(&[A, b"c2", b"", b"two"])),
        ]
    );
    assert_eq!(q.queued(), 4);
}

#[test]
fn idle_workers_are_used_least_recently_used_first() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    for w in [A, B, C] {
        q.handle_backend(c.now(), command(w, READY));
    }
    fn to(q: &mut Queue, c: &mut Clock, body: &[u8]) -> Vec<u8> {
        q.handle_frontend(c.advance(ms(1)), request(b"c", body));
        let d = dispatched(&q_drain(q).0);
        assert_eq!(d.len(), 1);
        d[0].0.clone()
    }
    assert_eq!(to(&mut q, &mut c, b"1"), A);
    assert_eq!(to(&mut q, &mut c, b"2"), B);
    assert_eq!(to(&mut q, &mut c, b"3"), C);
    for w in [C, A, B] {
        q.handle_backend(c.advance(ms(1)), worker_reply(w, b"c", b"r"));
        let _ = q_drain(&mut q);
    }
    assert_eq!(to(&mut q, &mut c, b"4"), C);
    // A and B idle, A the longer; A works and comes back behind B.
    assert_eq!(to(&mut q, &mut c, b"5"), A);
    q.handle_backend(c.advance(ms(1)), worker_reply(A, b"c", b"r"));
    let _ = q_drain(&mut q);
    assert_eq!(to(&mut q, &mut c, b"6"), B);
    assert_eq!(to(&mut q, &mut c, b"7"), A);
}

#[test]
fn requests_wait_in_order_until_a_worker_is_ready() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    for body in [b"1", b"2", b"3"] {
        q.handle_frontend(c.advance(ms(1)), request(b"c", body));
    }
    let (t, e) = q_drain(&mut q);
    assert!(t.is_empty() && e.is_empty());
    assert_eq!(q.queued(), 3);
    q.handle_backend(c.advance(ms(1)), command(A, READY));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t), vec![(A.to_vec(), request(b"c", b"1"))]);
    q.handle_backend(c.advance(ms(1)), command(A, HEARTBEAT));
    assert!(q_drain(&mut q).0.is_empty());
    q.handle_backend(c.advance(ms(1)), worker_reply(A, b"c", b"r1"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t), vec![(A.to_vec(), request(b"c", b"2"))]);
    q.handle_backend(c.advance(ms(1)), command(B, READY));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t), vec![(B.to_vec(), request(b"c", b"3"))]);
    assert_eq!(q.queued(), 0);
}

#[test]
fn a_full_queue_drops_new_requests_with_an_event() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 2));
    for body in [b"1", b"2", b"3", b"4"] {
        q.handle_frontend(c.advance(ms(1)), request(b"c", body));
    }
    let (t, e) = q_drain(&mut q);
    assert!(t.is_empty());
    assert_eq!(
        e,
        vec![
            QueueEvent::RequestDropped { queued: 2 },
            QueueEvent::RequestDropped { queued: 2 }
        ]
    );
    assert_eq!(q.queued(), 2);
    q.handle_backend(c.advance(ms(1)), command(A, READY));
    q.handle_backend(c.advance(ms(1)), worker_reply(A, b"c", b"r"));
    q.handle_backend(c.advance(ms(1)), worker_reply(A, b"c", b"r"));
    let (t, _) = q_drain(&mut q);
    let bodies: Vec<Frames> = dispatched(&t).into_iter().map(|d| d.1).collect();
    assert_eq!(bodies, vec![request(b"c", b"1"), request(b"c", b"2")]);
    assert_eq!((q.queued(), q.idle_workers()), (0, 1));
}

#[test]
fn a_heartbeat_from_an_unknown_worker_is_ignored() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(A, HEARTBEAT));
    let (t, e) = q_drain(&mut q);
    assert!(t.is_empty());
    assert_eq!(
        e,
        vec![QueueEvent::UnknownWorker {
            identity: A.to_vec()
        }]
    );
    assert_eq!((q.workers(), q.is_busy(A)), (0, None));
    q.handle_frontend(c.now(), request(b"c", b"x"));
    assert!(
        q_drain(&mut q).0.is_empty(),
        "routed to a worker that never said READY"
    );
    // No heartbeats go to it either.
    q.handle_timeout(c.set(ms(1000)));
    assert!(q_drain(&mut q).0.is_empty());
    // A reply from an unknown worker is forwarded (the client judges it) but does not
    // register the worker.
    q.handle_backend(c.now(), worker_reply(B, b"c", b"late"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(t, vec![QueueTransmit::Frontend(request(b"c", b"late"))]);
    assert_eq!((q.workers(), q.queued()), (0, 1));
}

#[test]
fn a_duplicate_ready_makes_a_busy_worker_idle_and_an_idle_one_stays_single() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(A, READY));
    q.handle_backend(c.now(), command(A, READY));
    let (_, e) = q_drain(&mut q);
    assert_eq!(
        e[1],
        QueueEvent::WorkerReadyAgain {
            identity: A.to_vec(),
            was_busy: false
        }
    );
    assert_eq!(
        (q.workers(), q.idle_workers()),
        (1, 1),
        "an idle worker listed twice"
    );
    q.handle_frontend(c.now(), request(b"c", b"1"));
    q.handle_frontend(c.now(), request(b"c", b"2"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t).len(), 1, "one worker, two requests: {t:?}");
    assert_eq!(q.queued(), 1);
    q.handle_backend(c.advance(ms(1)), command(A, READY));
    let (t, e) = q_drain(&mut q);
    assert_eq!(
        e,
        vec![QueueEvent::WorkerReadyAgain {
            identity: A.to_vec(),
            was_busy: true
        }]
    );
    assert_eq!(dispatched(&t), vec![(A.to_vec(), request(b"c", b"2"))]);
    assert_eq!(q.is_busy(A), Some(true));
}

#[test]
fn an_expired_worker_is_never_routed_to() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(A, READY));
    q.handle_backend(c.set(ms(1000)), command(B, READY));
    q.handle_timeout(c.set(ms(3000)));
    assert_eq!(expired(&q_drain(&mut q).1), vec![(A.to_vec(), false)]);
    q.handle_frontend(c.now(), request(b"c", b"1"));
    q.handle_frontend(c.now(), request(b"c", b"2"));
    let (t, _) = q_drain(&mut q);
    assert_eq!(dispatched(&t), vec![(B.to_vec(), request(b"c", b"1"))]);
    assert_eq!(q.queued(), 1);
}

/// A driver reads its sockets before it calls `handle_timeout`, so a request can be
/// fed after an idle worker's deadline and before the expiry runs: it must not be
/// routed to that worker, and a message from the worker must not revive it.
#[test]
fn a_worker_past_its_deadline_is_dead_even_before_handle_timeout() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(A, READY));
    let _ = q_drain(&mut q);
    q.handle_frontend(c.set(ms(3000) - NS), request(b"c", b"in time"));
    assert_eq!(dispatched(&q_drain(&mut q).0).len(), 1);
    q.handle_backend(c.now(), worker_reply(A, b"c", b"r"));
    let _ = q_drain(&mut q);
    // A was last heard at 3 s - 1 ns: its deadline is 6 s - 1 ns.
    q.handle_frontend(c.set(ms(6000) - NS), request(b"c", b"too late"));
    let (t, e) = q_drain(&mut q);
    assert_eq!(dispatched(&t), vec![], "routed to an expired worker");
    assert_eq!(expired(&e), vec![(A.to_vec(), false)]);
    assert_eq!((q.workers(), q.queued()), (0, 1));

    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(B, READY));
    let _ = q_drain(&mut q);
    q.handle_backend(c.advance(ms(3000)), command(B, HEARTBEAT));
    let (_, e) = q_drain(&mut q);
    assert_eq!(
        e,
        vec![
            QueueEvent::WorkerExpired {
                identity: B.to_vec(),
                was_busy: false
            },
            QueueEvent::UnknownWorker {
                identity: B.to_vec()
            }
        ]
    );
    assert_eq!(q.workers(), 0);
}

#[test]
fn malformed_client_requests_are_dropped_with_an_event() {
    let mut c = Clock::new();
    let mut q = new_queue(c.now(), qcfg(hb(1000, 3), 10));
    q.handle_backend(c.now(), command(A, READY));
    let _ = q_drain(&mut q);
    for junk in [
        vec![],
        frames(&[b"c"]),
        frames(&[b"c", b"body"]),
        frames(&[b"c", b""]),
        frames(&[b"", b"", b"x"]),
        frames(&[b"c", b"x", b"y"]),
    ] {
        q.handle_frontend(c.advance(ms(1)), junk.clone());
        let (t, e) = q_drain(&mut q);
        assert!(t.is_empty(), "{junk:?} was routed");
        assert!(
            matches!(
                e.as_slice(),
                [QueueEvent::Malformed {
                    side: Side::Frontend,
                    ..
                }]
            ),
            "{junk:?} gave {e:?}"
        );
    }
    assert_eq!((q.queued(), q.idle_workers()), (0, 1));
}

// ---------------------------------------------------------------------------------
// Worker core.

fn backoff(initial_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        initial: ms(initial_ms),
        max: ms(max_ms),
        jitter: 0.0,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum WStep {
    T(WorkerTransmit),
    E(WorkerEvent),
}

fn w_drain(w: &mut Worker) -> Vec<WStep> {
    let mut out: Vec<WStep> = std::iter::from_fn(|| w.poll_transmit())
        .map(WStep::T)
        .collect();
    out.extend(std::iter::from_fn(|| w.poll_event()).map(WStep::E));
    out
}

/// The one request the worker reports now, with nothing sent; panics otherwise.
fn one_request(w: &mut Worker) -> Request {
    let out = w_drain(w);
    let [WStep::E(WorkerEvent::Request { request })] = out.as_slice() else {
        panic!("expected one request: {out:?}");
    };
    request.clone()
}

/// The one message the worker sends now (a reply), with no event; panics otherwise.
fn one_send(w: &mut Worker) -> Frames {
    let out = w_drain(w);
    let [WStep::T(WorkerTransmit::Send(sent))] = out.as_slice() else {
        panic!("expected one reply: {out:?}");
    };
    sent.clone()
}

fn sent_ready() -> WStep {
    WStep::T(WorkerTransmit::Send(vec![vec![READY]]))
}

fn sent_heartbeat() -> WStep {
    WStep::T(WorkerTransmit::Send(vec![vec![HEARTBEAT]]))
}

fn connected() -> Vec<WStep> {
    vec![
        WStep::T(WorkerTransmit::Connect),
        sent_ready(),
        WStep::E(WorkerEvent::Connected),
    ]
}

/// The event of a request from a foreign client (no metadata) with these payload frames.
fn foreign_request(payload: &[&[u8]]) -> WStep {
    WStep::E(WorkerEvent::Request {
        request: Request {
            meta: None,
            service: None,
            payload: frames(payload),
        },
    })
}

fn from_queue_heartbeat() -> Frames {
    vec![vec![HEARTBEAT]]
}

/// Follows the worker's own wake-ups up to `until` after the origin (inclusive) with
/// nothing from the queue, checking that nothing happens 1 ns before each. Returns
/// what happened, as offsets from the origin.
fn walk(w: &mut Worker, c: &mut Clock, until: Duration) -> Vec<(Duration, WStep)> {
    let until = c.at(until);
    let mut log = Vec::new();
    for _ in 0..10_000 {
        let Some(next) = w.poll_timeout() else { break };
        if next > until {
            break;
        }
        assert!(next > c.now(), "a deadline in the past");
        w.handle_timeout(next - NS);
        assert_eq!(w_drain(w), vec![], "fired before its deadline");
        w.handle_timeout(c.advance_to(next));
        let steps = w_drain(w);
        assert!(!steps.is_empty(), "woken up for nothing");
        log.extend(steps.into_iter().map(|s| (c.elapsed(), s)));
    }
    c.advance_to(until.max(c.now()));
    log
}

#[test]
fn a_worker_connects_with_ready_and_heartbeats_every_interval_idle_and_busy() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    assert_eq!(w_drain(&mut w), connected());
    assert!(w.is_connected() && !w.is_busy());
    for k in 1..=12u64 {
        // The queue heartbeats half an interval before the worker does.
        w.handle_frames(c.set(ms(k * 1000 - 500)), from_queue_heartbeat());
        if k == 6 {
            // From here on the worker is busy with a request it never finishes.
            w.handle_frames(c.now(), request(b"client", b"slow"));
            assert!(w.is_busy());
        }
        let _ = w_drain(&mut w);
        assert_eq!(w.poll_timeout(), Some(c.at(ms(k * 1000))));
        w.handle_timeout(c.set(ms(k * 1000) - NS));
        assert_eq!(w_drain(&mut w), vec![], "tick {k} came early");
        w.handle_timeout(c.set(ms(k * 1000)));
        assert_eq!(w_drain(&mut w), vec![sent_heartbeat()], "tick {k}");
    }
}

/// The queue says nothing at all: the worker heartbeats at +1 s and +2 s, declares
/// the queue lost at +3 s (liveness × interval), closes the socket, and connects a
/// fresh one after 0.5, 1, 2, 4, 4, ... s, each time sending READY first.
#[test]
fn a_silent_queue_is_lost_after_liveness_intervals_and_reconnects_with_doubling_backoff() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    assert_eq!(w_drain(&mut w), connected());
    let mut expected = Vec::new();
    let mut connected_at = 0;
    for attempt in 1..=8u32 {
        expected.push((ms(connected_at + 1000), sent_heartbeat()));
        expected.push((ms(connected_at + 2000), sent_heartbeat()));
        let lost = connected_at + 3000;
        let after = (500u64 << (attempt - 1)).min(4000);
        expected.push((ms(lost), WStep::T(WorkerTransmit::Disconnect)));
        expected.push((
            ms(lost),
            WStep::E(WorkerEvent::QueueLost {
                attempt,
                after: ms(after),
            }),
        ));
        connected_at = lost + after;
        expected.extend(connected().into_iter().map(|s| (ms(connected_at), s)));
    }
    let until = expected.last().unwrap().0;
    let log = walk(&mut w, &mut c, until);
    assert_eq!(log, expected);
    assert!(w.is_connected());
}

#[test]
fn the_reconnect_backoff_starts_over_once_the_queue_is_heard() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    // Lost at 3 s (retry after 0.5 s), at 6.5 s (after 1 s): reconnected at 7.5 s.
    let log = walk(&mut w, &mut c, ms(7500));
    assert_eq!(
        log.last().unwrap(),
        &(ms(7500), WStep::E(WorkerEvent::Connected))
    );
    w.handle_frames(c.set(ms(8200)), from_queue_heartbeat());
    assert_eq!(w_drain(&mut w), vec![]);
    let log = walk(&mut w, &mut c, ms(11_200));
    assert_eq!(
        log.last().unwrap(),
        &(
            ms(11_200),
            WStep::E(WorkerEvent::QueueLost {
                attempt: 1,
                after: ms(500)
            })
        ),
        "the queue was heard at 8.2 s: expiry 3 s later, backoff from the start"
    );

    // The same, but what arrives is malformed: no sign of life, the backoff goes on.
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    let _ = walk(&mut w, &mut c, ms(7500));
    for junk in [
        vec![vec![READY]],
        vec![vec![0x07]],
        vec![],
        vec![vec![HEARTBEAT, 0]],
        frames(&[b"client", b"no delimiter", b"x"]),
    ] {
        w.handle_frames(c.set(ms(8200)), junk.clone());
        let out = w_drain(&mut w);
        assert!(
            matches!(out.as_slice(), [WStep::E(WorkerEvent::Malformed(_))]),
            "{junk:?} gave {out:?}"
        );
    }
    let log = walk(&mut w, &mut c, ms(10_500));
    assert_eq!(
        log.last().unwrap(),
        &(
            ms(10_500),
            WStep::E(WorkerEvent::QueueLost {
                attempt: 3,
                after: ms(2000)
            })
        )
    );
}

#[test]
fn anything_valid_from_the_queue_postpones_the_expiry() {
    for refresh in [from_queue_heartbeat(), request(b"client", b"job")] {
        let mut c = Clock::new();
        let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
        let _ = w_drain(&mut w);
        let _ = walk(&mut w, &mut c, ms(2000));
        w.handle_frames(c.now(), refresh.clone());
        let _ = w_drain(&mut w);
        let log = walk(&mut w, &mut c, ms(5000) - NS);
        assert!(
            !log.iter()
                .any(|(_, s)| *s == WStep::T(WorkerTransmit::Disconnect)),
            "{refresh:?}: {log:?}"
        );
        let log = walk(&mut w, &mut c, ms(5000));
        assert!(log.contains(&(ms(5000), WStep::T(WorkerTransmit::Disconnect))));
    }
}

#[test]
fn one_request_at_a_time() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    assert_eq!(w.reply(c.now(), Ok(frames(&[b"r"]))), Err(NotBusy));
    assert_eq!(w_drain(&mut w), vec![], "a reply to nothing was sent");
    w.handle_frames(
        c.advance(ms(10)),
        frames(&[b"c1", b"c2", b"", b"b1", b"b2"]),
    );
    assert_eq!(w_drain(&mut w), vec![foreign_request(&[b"b1", b"b2"])]);
    w.handle_frames(c.advance(ms(10)), request(b"other", b"second"));
    assert_eq!(
        w_drain(&mut w),
        vec![WStep::E(WorkerEvent::DroppedWhileBusy)]
    );
    assert!(w.is_busy());
    w.reply(c.advance(ms(10)), Ok(frames(&[b"r1", b"r2"])))
        .unwrap();
    assert_eq!(
        w_drain(&mut w),
        vec![WStep::T(WorkerTransmit::Send(frames(&[
            b"c1", b"c2", b"", b"r1", b"r2"
        ])))],
        "the reply goes to the first request's address, and no READY follows it"
    );
    assert_eq!(w.reply(c.now(), Ok(frames(&[b"again"]))), Err(NotBusy));
    assert_eq!(w_drain(&mut w), vec![]);
    w.handle_frames(c.advance(ms(10)), request(b"third", b"x"));
    assert_eq!(w_drain(&mut w), vec![foreign_request(&[b"x"])]);
}

/// The core hands the handler the payload frames exactly as the client sent them (the
/// metadata frame taken off), and its reply carries the request's id and attempt in the
/// metadata frame after the handler's payload frames, also unchanged.
#[test]
fn the_worker_hands_over_the_payload_unchanged_and_replies_with_the_request_id_and_attempt() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    let mut meta = Meta::new(Uuid::from_u128(0xabc), 1_700_000_000_000);
    meta.attempt = 3;
    meta.deadline_ms = Some(1_700_000_009_000);
    meta.headers.insert("trace".into(), "t-1".into());
    let payload = frames(&[b"first", b"", b"\xff\x00binary", b"last"]);
    let mut msg = frames(&[b"c1", b"c2", b""]);
    msg.extend(payload.clone());
    msg.push(meta.encode());
    w.handle_frames(c.advance(ms(10)), msg);
    let request = one_request(&mut w);
    assert_eq!(
        request,
        Request {
            meta: Some(meta.clone()),
            service: None,
            payload: payload.clone(),
        }
    );
    assert_eq!((request.id(), request.attempt()), (Some(meta.id), 3));
    assert_eq!(request.header("trace"), Some("t-1"));
    assert_eq!(request.body(), b"first\xff\x00binarylast".to_vec());

    w.reply(c.advance(ms(10)), Ok(frames(&[b"r1", b"", b"r3"])))
        .unwrap();
    let sent = one_send(&mut w);
    assert_eq!(sent.len(), 7, "{sent:?}");
    assert_eq!(
        sent[..6],
        frames(&[b"c1", b"c2", b"", b"r1", b"", b"r3"])[..],
        "the address, the delimiter, the handler's frames unchanged"
    );
    let reply = Meta::decode(&sent[6]).expect("the reply's metadata frame");
    assert_eq!(
        (reply.id, reply.attempt, reply.status),
        (meta.id, 3, Status::Ok)
    );
    assert_eq!(
        bosun::proto::envelope::peek_id(&sent),
        Some(meta.id),
        "a router finds the id in the last frame"
    );

    // The same with the harness's envelope, attempt 2, and a one-frame echo.
    let mut e = envelope(0xdef, b"job");
    e.meta.attempt = 2;
    let mut msg = frames(&[b"c3", b""]);
    msg.extend(e.encode());
    w.handle_frames(c.advance(ms(10)), msg);
    let request = one_request(&mut w);
    assert_eq!(request.payload, frames(&[b"job"]));
    w.reply(c.advance(ms(10)), Ok(request.payload.clone()))
        .unwrap();
    let sent = one_send(&mut w);
    assert_eq!(sent[..3], frames(&[b"c3", b"", b"job"])[..]);
    let reply = Envelope::decode(sent[2..].to_vec()).expect("a bosun reply");
    assert_eq!(
        (reply.meta.id, reply.meta.attempt, reply.meta.status),
        (e.meta.id, 2, Status::Ok)
    );
    assert_eq!(reply.payload, frames(&[b"job"]));
}

/// A handler's error answers the request: a bosun client gets the message and
/// metadata with status Error; a foreign one gets one frame `error: <message>`. The
/// worker is free for the next request either way.
#[test]
fn a_handler_error_is_answered_with_its_message() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    let mut e = envelope(0x51, b"job");
    e.meta.attempt = 4;
    let mut msg = frames(&[b"client", b""]);
    msg.extend(e.encode());
    w.handle_frames(c.advance(ms(10)), msg);
    let _ = w_drain(&mut w);
    w.reply(
        c.advance(ms(10)),
        Err(HandlerError::new("handler panicked: boom")),
    )
    .unwrap();
    let sent = one_send(&mut w);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(
        sent[..3],
        frames(&[b"client", b"", b"handler panicked: boom"])[..]
    );
    let meta = Meta::decode(&sent[3]).expect("the reply's metadata frame");
    assert_eq!(
        (meta.id, meta.attempt, meta.status),
        (e.meta.id, 4, Status::Error)
    );
    assert!(!w.is_busy());

    w.handle_frames(c.advance(ms(10)), request(b"foreign", b"job"));
    assert_eq!(w_drain(&mut w), vec![foreign_request(&[b"job"])]);
    w.reply(c.advance(ms(10)), Err(HandlerError::new("no")))
        .unwrap();
    assert_eq!(
        w_drain(&mut w),
        vec![WStep::T(WorkerTransmit::Send(frames(&[
            b"foreign",
            b"",
            b"error: no"
        ])))]
    );
    assert!(!w.is_busy());
}

/// A last frame that starts with the metadata magic but does not decode is reported as
/// malformed, and the request is still served, as a foreign one: its frames, the bad
/// one included, go to the handler, and the reply has no metadata.
#[test]
fn a_request_with_corrupt_metadata_is_reported_and_served_as_foreign() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    let good = envelope(0x77, b"job").encode();
    let mut bad = good[1].clone();
    bad[5] = 9; // an unknown status
    let why = Meta::decode(&bad).unwrap_err();
    let mut msg = frames(&[b"client", b"", b"job"]);
    msg.push(bad.clone());
    w.handle_frames(c.advance(ms(10)), msg);
    assert_eq!(
        w_drain(&mut w),
        vec![
            WStep::E(WorkerEvent::Malformed(ProtocolError::Envelope(why))),
            WStep::E(WorkerEvent::Request {
                request: Request {
                    meta: None,
                    service: None,
                    payload: vec![b"job".to_vec(), bad],
                },
            }),
        ]
    );
    assert!(w.is_busy());
    w.reply(c.advance(ms(10)), Ok(frames(&[b"r"]))).unwrap();
    assert_eq!(
        w_drain(&mut w),
        vec![WStep::T(WorkerTransmit::Send(frames(&[
            b"client", b"", b"r"
        ])))]
    );
}

/// Each constructor refuses a configuration that could spin or overflow the clock.
#[test]
fn the_cores_refuse_invalid_configurations() {
    let c = Clock::new();
    let invalid = |field: &'static str| {
        move |e: ConfigError| {
            assert!(
                matches!(&e, ConfigError::Invalid { field: f, .. } if *f == field),
                "{field}: {e:?}"
            )
        }
    };
    let zero = Heartbeat {
        interval: Duration::ZERO,
        liveness: 3,
    };
    let dead = Heartbeat {
        interval: ms(1000),
        liveness: 0,
    };
    let huge = Heartbeat {
        interval: Duration::from_secs(u64::MAX),
        liveness: 1,
    };
    for (heartbeat, field) in [
        (zero, "heartbeat.interval"),
        (dead, "heartbeat.liveness"),
        (huge, "heartbeat.interval"),
    ] {
        invalid(field)(Queue::new(c.now(), qcfg(heartbeat, 10)).unwrap_err());
        invalid(field)(Worker::new(c.now(), heartbeat, backoff(500, 4000), 0).unwrap_err());
    }
    invalid("max_queue")(Queue::new(c.now(), qcfg(hb(1000, 3), 0)).unwrap_err());
    for reconnect in [
        backoff(0, 4000),
        backoff(500, 100),
        Backoff {
            initial: ms(500),
            max: Duration::from_secs(u64::MAX),
            jitter: 0.0,
        },
    ] {
        invalid("reconnect")(Worker::new(c.now(), hb(1000, 3), reconnect, 0).unwrap_err());
    }
    assert!(Queue::new(c.now(), qcfg(hb(1000, 3), 1)).is_ok());
    assert!(Worker::new(c.now(), hb(1000, 3), backoff(500, 4000), 0).is_ok());
}

/// A worker that loses the queue while it handles a request reconnects but must not
/// say READY (the queue would hand it a second request): READY follows the reply.
#[test]
fn a_worker_that_reconnects_while_busy_says_ready_only_after_its_reply() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    w.handle_frames(c.set(ms(500)), request(b"client", b"slow"));
    let _ = w_drain(&mut w);
    let log = walk(&mut w, &mut c, ms(4000));
    assert_eq!(
        log[log.len() - 4..],
        [
            (ms(3500), WStep::T(WorkerTransmit::Disconnect)),
            (
                ms(3500),
                WStep::E(WorkerEvent::QueueLost {
                    attempt: 1,
                    after: ms(500)
                })
            ),
            (ms(4000), WStep::T(WorkerTransmit::Connect)),
            (ms(4000), WStep::E(WorkerEvent::Connected)),
        ]
    );
    assert!(w.is_connected() && w.is_busy());
    // Nothing is sent on the new socket (not even a heartbeat: the queue does not
    // know it) until the reply.
    assert_eq!(w.poll_timeout(), None);
    w.handle_timeout(c.set(ms(20_000)));
    assert_eq!(w_drain(&mut w), vec![]);
    w.reply(c.now(), Ok(frames(&[b"done"]))).unwrap();
    assert_eq!(
        w_drain(&mut w),
        vec![
            WStep::T(WorkerTransmit::Send(request(b"client", b"done"))),
            sent_ready()
        ]
    );
    // Registered from now: heartbeats and expiry count from the READY.
    assert_eq!(w.poll_timeout(), Some(c.at(ms(21_000))));
    let log = walk(&mut w, &mut c, ms(23_000));
    assert_eq!(log[0], (ms(21_000), sent_heartbeat()));
    assert!(log.contains(&(ms(23_000), WStep::T(WorkerTransmit::Disconnect))));
}

#[test]
fn a_reply_finished_while_disconnected_is_dropped_and_ready_follows_the_reconnect() {
    let mut c = Clock::new();
    let mut w = new_worker(c.now(), hb(1000, 3), backoff(500, 4000), 0);
    let _ = w_drain(&mut w);
    w.handle_frames(c.set(ms(500)), request(b"client", b"slow"));
    let _ = w_drain(&mut w);
    let _ = walk(&mut w, &mut c, ms(3500));
    assert!(!w.is_connected());
    // A message still arriving for the closed socket is not seen.
    w.handle_frames(c.set(ms(3600)), request(b"client", b"late"));
    assert_eq!(w_drain(&mut w), vec![]);
    w.reply(c.set(ms(3700)), Ok(frames(&[b"done"]))).unwrap();
    assert_eq!(w_drain(&mut w), vec![], "sent on a closed socket");
    let log = walk(&mut w, &mut c, ms(4000));
    assert_eq!(
        log,
        connected()
            .into_iter()
            .map(|s| (ms(4000), s))
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------
// Property tests: random frames (empty messages, every 1-byte command, garbage),
// valid messages mixed in, random time steps (with the driver sometimes late to call
// `handle_timeout`), and duplicates. Each core is checked against a model of what it
// promises.

fn frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => any::<u8>().prop_map(|b| vec![b]),
        1 => proptest::collection::vec(any::<u8>(), 0..10),
        // The metadata magic and a few bytes: corrupt metadata.
        1 => proptest::collection::vec(any::<u8>(), 0..6)
            .prop_map(|v| [&MAGIC[..], &v].concat()),
    ]
}

fn raw() -> impl Strategy<Value = Frames> {
    proptest::collection::vec(frame(), 0..5)
}

fn worker_id(n: u8) -> Vec<u8> {
    vec![b'w', n]
}

fn client_id(n: u8) -> Vec<u8> {
    vec![b'c', n]
}

#[derive(Debug, Clone)]
enum QOp {
    /// A well-formed request from client `n`.
    Request(u8),
    /// Anything on the frontend.
    FrontRaw(Frames),
    /// READY from worker `n`.
    Ready(u8),
    /// HEARTBEAT from worker `n`.
    Heartbeat(u8),
    /// A reply from worker `n` to client `m`.
    Reply(u8, u8),
    /// Worker `n`'s identity followed by anything (every 1-byte command included).
    BackRaw(u8, Frames),
    /// Anything on the backend, identity frame or not.
    BackAny(Frames),
    /// Time passes; the driver then calls `handle_timeout` unless the flag is false.
    Advance(u16, bool),
    /// The last message fed, again.
    Duplicate,
}

fn qop() -> impl Strategy<Value = QOp> {
    prop_oneof![
        4 => (0u8..4).prop_map(QOp::Request),
        1 => raw().prop_map(QOp::FrontRaw),
        2 => (0u8..4).prop_map(QOp::Ready),
        3 => (0u8..4).prop_map(QOp::Heartbeat),
        3 => (0u8..4, 0u8..4).prop_map(|(w, c)| QOp::Reply(w, c)),
        2 => (0u8..4, raw()).prop_map(|(w, f)| QOp::BackRaw(w, f)),
        1 => raw().prop_map(QOp::BackAny),
        4 => (0u16..250, prop_oneof![3 => Just(true), 1 => Just(false)])
            .prop_map(|(t, call)| QOp::Advance(t, call)),
        2 => Just(QOp::Duplicate),
    ]
}

#[derive(Debug, Clone)]
enum Feed {
    Front(Frames),
    Back(Frames),
    Timeout,
}

/// What the queue promises, kept by the test.
struct QModel {
    cfg: QueueConfig,
    /// Registered workers and their expiry deadlines.
    registered: HashMap<Vec<u8>, Instant>,
    /// Workers holding a request the queue sent them (and not yet answered or
    /// re-READYed).
    holding: HashSet<Vec<u8>>,
    /// Idle workers, least recently used first.
    idle: VecDeque<Vec<u8>>,
    /// Accepted requests not yet dispatched, oldest first.
    waiting: VecDeque<Frames>,
    next_heartbeat: Instant,
}

impl QModel {
    fn feed(&mut self, q: &mut Queue, now: Instant, feed: Feed) {
        let expiry = self.cfg.heartbeat.expiry();
        let before: Vec<Vec<u8>> = self.registered.keys().cloned().collect();
        // Every call first expires the workers whose deadline has come.
        let mut expect_expired: HashMap<Vec<u8>, bool> = HashMap::new();
        self.registered.retain(|id, deadline| {
            if *deadline <= now {
                expect_expired.insert(id.clone(), self.holding.contains(id));
                false
            } else {
                true
            }
        });
        for id in expect_expired.keys() {
            self.holding.remove(id);
            self.idle.retain(|i| i != id);
        }
        let mut expect_events = Vec::new();
        let mut expect_front = None;
        let mut expect_heartbeats = None;
        match feed {
            Feed::Front(f) => {
                q.handle_frontend(now, f.clone());
                match ppp::check_request(&f) {
                    Err(_) => expect_events.push("malformed frontend"),
                    Ok(()) if self.waiting.len() >= self.cfg.max_queue => {
                        expect_events.push("dropped")
                    }
                    Ok(()) => self.waiting.push_back(f),
                }
            }
            Feed::Back(f) => {
                q.handle_backend(now, f.clone());
                match route(f) {
                    None => expect_events.push("malformed backend"),
                    Some((id, rest)) => match ppp::parse_from_worker(rest) {
                        Err(_) => expect_events.push("malformed backend"),
                        Ok(FromWorker::Ready) => {
                            expect_events.push(if self.registered.contains_key(&id) {
                                if self.holding.contains(&id) {
                                    "ready again, was busy"
                                } else {
                                    "ready again, was idle"
                                }
                            } else {
                                "ready"
                            });
                            if self.holding.remove(&id) || !self.registered.contains_key(&id) {
                                self.idle.push_back(id.clone());
                            }
                            self.registered.insert(id, now + expiry);
                        }
                        Ok(FromWorker::Heartbeat) => match self.registered.get_mut(&id) {
                            Some(deadline) => *deadline = now + expiry,
                            None => expect_events.push("unknown worker"),
                        },
                        Ok(FromWorker::Reply(reply)) => {
                            expect_front = Some(reply);
                            if let Some(deadline) = self.registered.get_mut(&id) {
                                *deadline = now + expiry;
                                if self.holding.remove(&id) {
                                    self.idle.push_back(id);
                                }
                            }
                        }
                    },
                }
            }
            Feed::Timeout => {
                q.handle_timeout(now);
                if now >= self.next_heartbeat {
                    let mut all = before;
                    all.sort();
                    expect_heartbeats = Some(all);
                    self.next_heartbeat = now + self.cfg.heartbeat.interval;
                }
            }
        }

        let mut heartbeats = Vec::new();
        while let Some(t) = q.poll_transmit() {
            match t {
                QueueTransmit::Frontend(f) => {
                    assert_eq!(
                        Some(f),
                        expect_front.take(),
                        "an unexpected frontend message"
                    );
                }
                QueueTransmit::Backend(f) => {
                    let (id, rest) = route(f).expect("a backend message without identity");
                    if rest == vec![vec![HEARTBEAT]] {
                        heartbeats.push(id);
                        continue;
                    }
                    assert_eq!(
                        Some(rest),
                        self.waiting.pop_front(),
                        "requests must be dispatched in arrival order"
                    );
                    assert_eq!(
                        self.idle.pop_front().as_ref(),
                        Some(&id),
                        "not the least recently used idle worker"
                    );
                    let deadline = self
                        .registered
                        .get(&id)
                        .expect("routed to an unknown worker");
                    assert!(now < *deadline, "routed to a worker past its deadline");
                    assert!(
                        self.holding.insert(id),
                        "a second request to a worker that has not replied or re-READYed"
                    );
                }
            }
        }
        assert_eq!(expect_front, None, "a worker's reply was not forwarded");
        heartbeats.sort();
        assert_eq!(
            heartbeats,
            expect_heartbeats.unwrap_or_default(),
            "heartbeats go to every registered worker once per interval, and only then"
        );

        let mut events = Vec::new();
        while let Some(e) = q.poll_event() {
            match e {
                QueueEvent::WorkerExpired { identity, was_busy } => {
                    assert_eq!(
                        expect_expired.remove(&identity),
                        Some(was_busy),
                        "unexpected expiry of {identity:?}"
                    );
                }
                QueueEvent::WorkerReady { .. } => events.push("ready"),
                QueueEvent::WorkerReadyAgain { was_busy: true, .. } => {
                    events.push("ready again, was busy")
                }
                QueueEvent::WorkerReadyAgain {
                    was_busy: false, ..
                } => events.push("ready again, was idle"),
                QueueEvent::RequestDropped { queued } => {
                    assert_eq!(queued, self.cfg.max_queue);
                    events.push("dropped");
                }
                QueueEvent::Malformed {
                    side: Side::Frontend,
                    ..
                } => events.push("malformed frontend"),
                QueueEvent::Malformed {
                    side: Side::Backend,
                    ..
                } => events.push("malformed backend"),
                QueueEvent::UnknownWorker { .. } => events.push("unknown worker"),
            }
        }
        assert_eq!(events, expect_events);
        assert!(expect_expired.is_empty(), "not expired: {expect_expired:?}");

        assert!(q.idle_workers() <= q.workers());
        assert_eq!(q.workers(), self.registered.len());
        assert_eq!(q.idle_workers(), self.registered.len() - self.holding.len());
        assert_eq!(q.idle_workers(), self.idle.len());
        assert_eq!(q.queued(), self.waiting.len());
        assert!(q.queued() <= self.cfg.max_queue);
        if q.queued() > 0 {
            assert_eq!(
                q.idle_workers(),
                0,
                "a request waits while a worker is idle"
            );
        }
        for n in 0..4 {
            let id = worker_id(n);
            assert_eq!(
                q.is_busy(&id),
                self.registered.get(&id).map(|_| self.holding.contains(&id))
            );
        }
        let earliest = self.registered.values().min().copied();
        let want = earliest.map_or(self.next_heartbeat, |e| e.min(self.next_heartbeat));
        assert_eq!(q.poll_timeout(), Some(want));
    }
}

proptest! {
    #![proptest_config(sim::cases(128))]

    #[test]
    fn queue_keeps_its_promises_under_random_traffic(
        ops in proptest::collection::vec(qop(), 1..100),
        liveness in 1u32..5,
        max_queue in 1usize..4,
    ) {
        let cfg = qcfg(hb(100, liveness), max_queue);
        let mut c = Clock::new();
        let mut q = new_queue(c.now(), cfg);
        let mut m = QModel {
            cfg,
            registered: HashMap::new(),
            holding: HashSet::new(),
            idle: VecDeque::new(),
            waiting: VecDeque::new(),
            next_heartbeat: c.now() + cfg.heartbeat.interval,
        };
        let mut last: Option<Feed> = None;
        let mut n = 0u32;
        for op in ops {
            let feed = match op {
                QOp::Request(cl) => {
                    n += 1;
                    Feed::Front(request(&client_id(cl), &n.to_be_bytes()))
                }
                QOp::FrontRaw(f) => Feed::Front(f),
                QOp::Ready(w) => Feed::Back(command(&worker_id(w), READY)),
                QOp::Heartbeat(w) => Feed::Back(command(&worker_id(w), HEARTBEAT)),
                QOp::Reply(w, cl) => Feed::Back(worker_reply(&worker_id(w), &client_id(cl), b"r")),
                QOp::BackRaw(w, f) => {
                    let mut msg = vec![worker_id(w)];
                    msg.extend(f);
                    Feed::Back(msg)
                }
                QOp::BackAny(f) => Feed::Back(f),
                QOp::Advance(t, call) => {
                    c.advance(ms(u64::from(t)));
                    if !call {
                        continue;
                    }
                    Feed::Timeout
                }
                QOp::Duplicate => match &last {
                    Some(f) => f.clone(),
                    None => continue,
                },
            };
            if !matches!(feed, Feed::Timeout) {
                last = Some(feed.clone());
            }
            m.feed(&mut q, c.now(), feed);
        }
    }
}

#[derive(Debug, Clone)]
enum WOp {
    /// A well-formed request with an address of 1 to 3 frames, 1 to 3 payload frames,
    /// and metadata as said.
    Request(u8, u8, ReqMeta),
    /// A HEARTBEAT from the queue.
    Heartbeat,
    /// Anything (every 1-byte command included).
    Raw(Frames),
    /// The handler finishes, successfully or with an error (or `reply` is called with
    /// nothing to answer).
    Reply(bool),
    /// Time passes; the driver then calls `handle_timeout` unless the flag is false.
    Advance(u16, bool),
    /// The last message fed, again.
    Duplicate,
}

/// What follows a request's payload.
#[derive(Debug, Clone, Copy)]
enum ReqMeta {
    /// Nothing: a foreign client's request.
    None,
    /// A bosun client's metadata frame with this attempt.
    Valid(u32),
    /// A frame that starts with the magic and does not decode.
    Corrupt,
}

fn wop() -> impl Strategy<Value = WOp> {
    let meta = prop_oneof![
        Just(ReqMeta::None),
        (1u32..10).prop_map(ReqMeta::Valid),
        Just(ReqMeta::Corrupt),
    ];
    prop_oneof![
        3 => (1u8..4, 1u8..4, meta).prop_map(|(a, p, m)| WOp::Request(a, p, m)),
        3 => Just(WOp::Heartbeat),
        2 => raw().prop_map(WOp::Raw),
        2 => any::<bool>().prop_map(WOp::Reply),
        5 => (0u16..700, prop_oneof![3 => Just(true), 1 => Just(false)])
            .prop_map(|(t, call)| WOp::Advance(t, call)),
        1 => Just(WOp::Duplicate),
    ]
}

/// What the worker promises, kept by the test.
struct WModel {
    heartbeat: Heartbeat,
    reconnect: Backoff,
    connected: bool,
    /// READY was sent on the current socket.
    registered: bool,
    /// The address and metadata of the request being handled.
    busy: Option<(Frames, Option<Meta>)>,
    /// Queue losses since the queue was last heard.
    failures: u32,
    expiry_at: Option<Instant>,
    next_heartbeat: Option<Instant>,
    reconnect_at: Option<Instant>,
}

impl WModel {
    fn register(&mut self, now: Instant) {
        assert!(
            self.connected && !self.registered,
            "READY twice or while closed"
        );
        assert!(
            self.busy.is_none(),
            "READY while busy: the queue would send a second request"
        );
        self.registered = true;
        self.expiry_at = Some(now + self.heartbeat.expiry());
        self.next_heartbeat = Some(now + self.heartbeat.interval);
    }

    /// Checks what `handle_timeout` (or `new`) produced.
    fn timed(&mut self, w: &mut Worker, now: Instant) {
        let mut connected_now = false;
        let mut lost_now = false;
        for step in w_drain(w) {
            match step {
                WStep::T(WorkerTransmit::Connect) => {
                    assert!(!self.connected, "Connect while connected");
                    assert!(
                        now >= self.reconnect_at.expect("Connect unasked"),
                        "reconnected early"
                    );
                    self.connected = true;
                    self.registered = false;
                    self.reconnect_at = None;
                    connected_now = true;
                }
                WStep::T(WorkerTransmit::Send(f)) if f == vec![vec![READY]] => self.register(now),
                WStep::T(WorkerTransmit::Send(f)) if f == vec![vec![HEARTBEAT]] => {
                    assert!(self.connected && self.registered, "HEARTBEAT before READY");
                    assert!(now >= self.next_heartbeat.unwrap(), "heartbeat early");
                    self.next_heartbeat = Some(now + self.heartbeat.interval);
                }
                WStep::T(WorkerTransmit::Send(f)) => panic!("unexpected send {f:?}"),
                WStep::T(WorkerTransmit::Disconnect) => {
                    assert!(self.connected && self.registered);
                    assert!(
                        now >= self.expiry_at.unwrap(),
                        "the queue was declared lost early"
                    );
                    self.connected = false;
                    self.registered = false;
                    self.expiry_at = None;
                    self.next_heartbeat = None;
                    lost_now = true;
                }
                WStep::E(WorkerEvent::QueueLost { attempt, after }) => {
                    assert!(lost_now);
                    assert_eq!(attempt, self.failures + 1);
                    self.failures = attempt;
                    let mut nominal = self.reconnect.initial;
                    for _ in 1..attempt {
                        nominal = (nominal * 2).min(self.reconnect.max);
                    }
                    let floor = nominal.saturating_sub(nominal.mul_f64(self.reconnect.jitter));
                    assert!(
                        floor <= after && after <= nominal,
                        "backoff {after:?} vs {nominal:?}"
                    );
                    self.reconnect_at = Some(now + after);
                }
                WStep::E(WorkerEvent::Connected) => assert!(connected_now),
                WStep::E(other) => panic!("unexpected event from time alone: {other:?}"),
            }
        }
    }

    fn check(&self, w: &Worker, now: Instant, on_time: bool) {
        assert_eq!(w.is_connected(), self.connected);
        assert_eq!(w.is_busy(), self.busy.is_some());
        let want = match (self.connected, self.registered) {
            (true, true) => Some(self.expiry_at.unwrap().min(self.next_heartbeat.unwrap())),
            (true, false) => None,
            (false, _) => self.reconnect_at,
        };
        assert_eq!(w.poll_timeout(), want);
        if on_time {
            // `handle_timeout` was just called: nothing may be overdue.
            assert!(want.map_or(true, |t| t > now), "a deadline was missed");
        }
    }
}

/// Checks the reply `sent` to a request from `address` with `meta`, whose handler
/// returned `[r][""]` (`ok`) or the error "no": the address, the delimiter, then for a
/// bosun client the payload (or the message) and metadata of the request's id and
/// attempt with the status; for a foreign one the payload, or `error: no`.
fn check_answer(sent: &Frames, address: &Frames, meta: Option<&Meta>, ok: bool) {
    assert_eq!(
        &sent[..address.len()],
        &address[..],
        "the request's address"
    );
    assert_eq!(sent[address.len()], Vec::<u8>::new(), "the delimiter");
    let body = sent[address.len() + 1..].to_vec();
    match meta {
        None if ok => assert_eq!(body, frames(&[b"r", b""])),
        None => assert_eq!(body, frames(&[b"error: no"])),
        Some(m) => {
            let (last, payload) = body.split_last().expect("an empty reply");
            let reply = Meta::decode(last).expect("the reply's metadata");
            let status = if ok { Status::Ok } else { Status::Error };
            assert_eq!(
                (reply.id, reply.attempt, reply.status),
                (m.id, m.attempt, status)
            );
            let want = if ok {
                frames(&[b"r", b""])
            } else {
                frames(&[b"no"])
            };
            assert_eq!(payload, &want[..]);
        }
    }
}

proptest! {
    #![proptest_config(sim::cases(128))]

    #[test]
    fn worker_keeps_its_promises_under_random_traffic(
        ops in proptest::collection::vec(wop(), 1..100),
        liveness in 1u32..5,
        jitter in prop_oneof![Just(0.0), Just(0.3)],
        seed in any::<u64>(),
    ) {
        let heartbeat = hb(100, liveness);
        let reconnect = Backoff { initial: ms(50), max: ms(400), jitter };
        let mut c = Clock::new();
        let mut w = new_worker(c.now(), heartbeat, reconnect, seed);
        let mut m = WModel {
            heartbeat,
            reconnect,
            connected: false,
            registered: false,
            busy: None,
            failures: 0,
            expiry_at: None,
            next_heartbeat: None,
            reconnect_at: Some(c.now()),
        };
        m.timed(&mut w, c.now());
        m.check(&w, c.now(), true);
        let mut last: Option<Frames> = None;
        let mut next_id = 0u128;
        for op in ops {
            let now = c.now();
            let fed = match op {
                WOp::Request(a, p, meta) => {
                    let mut f: Frames = (0..a).map(|i| vec![b'a', i]).collect();
                    f.push(Vec::new());
                    // Payload frames, an empty one among them when there are several.
                    f.extend((0..p).map(|i| vec![b'p'; usize::from(i)]));
                    match meta {
                        ReqMeta::None => {}
                        ReqMeta::Valid(attempt) => {
                            next_id += 1;
                            let mut m = Meta::new(Uuid::from_u128(next_id), 1);
                            m.attempt = attempt;
                            f.push(m.encode());
                        }
                        ReqMeta::Corrupt => f.push([&MAGIC[..], b"junk"].concat()),
                    }
                    Some(f)
                }
                WOp::Heartbeat => Some(vec![vec![HEARTBEAT]]),
                WOp::Raw(f) => Some(f),
                WOp::Duplicate => last.clone(),
                WOp::Reply(ok) => {
                    let reply = if ok {
                        Ok(frames(&[b"r", b""]))
                    } else {
                        Err(HandlerError::new("no"))
                    };
                    let res = w.reply(now, reply);
                    let out = w_drain(&mut w);
                    match m.busy.take() {
                        None => {
                            prop_assert_eq!(res, Err(NotBusy));
                            prop_assert_eq!(out, vec![]);
                        }
                        Some((address, meta)) => {
                            prop_assert_eq!(res, Ok(()));
                            let mut want = 0;
                            if m.connected {
                                let Some(WStep::T(WorkerTransmit::Send(sent))) = out.first() else {
                                    panic!("no reply sent: {out:?}");
                                };
                                check_answer(sent, &address, meta.as_ref(), ok);
                                want += 1;
                                if !m.registered {
                                    m.register(now);
                                    prop_assert_eq!(out.get(1), Some(&sent_ready()));
                                    want += 1;
                                }
                            }
                            prop_assert_eq!(out.len(), want, "{:?}", out);
                        }
                    }
                    m.check(&w, now, false);
                    None
                }
                WOp::Advance(t, call) => {
                    let now = c.advance(ms(u64::from(t)));
                    if call {
                        w.handle_timeout(now);
                        m.timed(&mut w, now);
                    }
                    m.check(&w, now, call);
                    None
                }
            };
            let Some(f) = fed else { continue };
            last = Some(f.clone());
            w.handle_frames(now, f.clone());
            let mut want = Vec::new();
            let mut want_request = None;
            if m.connected {
                match ppp::parse_from_queue(f) {
                    Err(_) => want.push("malformed"),
                    Ok(msg) => {
                        m.failures = 0;
                        if m.registered {
                            m.expiry_at = Some(now + heartbeat.expiry());
                        }
                        if let FromQueue::Request { address, body } = msg {
                            if m.busy.is_some() {
                                want.push("dropped while busy");
                            } else {
                                // A last frame with the magic is metadata; one that
                                // does not decode is reported, and handed over as
                                // payload with no metadata.
                                let (payload, meta) = match body.split_last() {
                                    Some((last, rest)) if last.starts_with(&MAGIC) => {
                                        match Meta::decode(last) {
                                            Ok(meta) => (rest.to_vec(), Some(meta)),
                                            Err(_) => {
                                                want.push("malformed");
                                                (body.clone(), None)
                                            }
                                        }
                                    }
                                    _ => (body.clone(), None),
                                };
                                m.busy = Some((address, meta.clone()));
                                want.push("request");
                                want_request = Some(Request { meta, service: None, payload });
                            }
                        }
                    }
                }
            }
            let got: Vec<&str> = w_drain(&mut w)
                .into_iter()
                .map(|s| match s {
                    WStep::E(WorkerEvent::Malformed(_)) => "malformed",
                    WStep::E(WorkerEvent::DroppedWhileBusy) => "dropped while busy",
                    WStep::E(WorkerEvent::Request { request }) => {
                        assert_eq!(Some(request), want_request.take(), "the request handed over");
                        "request"
                    }
                    other => panic!("unexpected reaction to a message: {other:?}"),
                })
                .collect();
            prop_assert_eq!(got, want);
            m.check(&w, now, false);
        }
    }
}

// ---------------------------------------------------------------------------------
// End to end: a Lazy Pirate client, the queue and two echo workers over seeded lossy
// links, in virtual time. The harness plays the sockets: the client's REQ (strict,
// delimiter added and stripped, a new identity after every Reset, replies to an old
// identity lost), the queue's two ROUTERs (routing by the first frame, dropping what
// has no live peer), and the workers' DEALERs (a new identity on every Connect).
//
// Between client and queue a message may be lost, duplicated, delayed or reordered.
// Between worker and queue it may be duplicated, delayed or reordered, and the
// connection may break: everything in flight on it is lost and libzmq's transparent
// reconnect gives the worker a new identity at the ROUTER without the worker knowing.
// That is how a ZeroMQ TCP connection loses messages. Independent loss of single
// messages on a live worker connection is not modelled: 6/PPP cannot recover from it
// (a lost request or reply leaves the worker busy in the queue's eyes while its
// heartbeats keep it registered), and TCP does not do it.

/// A message on a link, named by where it goes.
#[derive(Debug, Clone)]
enum Msg {
    /// To the frontend ROUTER: `[client identity][""][payload...][metadata]`.
    Frontend(Frames),
    /// From the frontend ROUTER to the REQ socket `identity`:
    /// `[""][payload...][metadata]`.
    Client(Vec<u8>, Frames),
    /// To the backend ROUTER: `[worker identity][6/PPP message...]`.
    Backend(Frames),
    /// From the backend ROUTER to the DEALER `identity`.
    Worker(Vec<u8>, Frames),
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// Between the client and the queue's frontend.
    client_link: LinkConfig,
    /// Between the workers and the queue's backend (keep `loss` at 0: see above).
    worker_link: LinkConfig,
    /// Probability that a message on a worker connection breaks that connection.
    breaks: f64,
    retry: Retry,
    heartbeat: Heartbeat,
    reconnect: Backoff,
    /// Requests the application makes, one after the other.
    requests: u32,
    /// Longest time an echo takes.
    work: Duration,
    /// Whether one worker dies (stops receiving, sending and working) mid-run.
    kill: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    requests: u64,
    replies: u64,
    gave_up: u64,
    /// A second outcome for a request (a second Reply, or a Reply and a GaveUp).
    duplicates: u64,
    retries: u64,
    discarded: u64,
    resets: u64,
    dropped_while_busy: u64,
    expired: u64,
    /// The killed worker's socket was expired by the queue.
    victim_expired: u64,
    /// Worker connections broken (and transparently reconnected).
    breaks: u64,
    /// Times a worker core reconnected on its own.
    reconnects: u64,
    steps: u64,
    link: LinkStats,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.replies += o.replies;
        self.gave_up += o.gave_up;
        self.duplicates += o.duplicates;
        self.retries += o.retries;
        self.discarded += o.discarded;
        self.resets += o.resets;
        self.dropped_while_busy += o.dropped_while_busy;
        self.expired += o.expired;
        self.victim_expired += o.victim_expired;
        self.breaks += o.breaks;
        self.reconnects += o.reconnects;
        self.steps += o.steps;
        self.link.sent += o.link.sent;
        self.link.dropped += o.link.dropped;
        self.link.duplicated += o.link.duplicated;
        self.link.delivered += o.link.delivered;
    }
}

struct SimWorker {
    core: Worker,
    /// The identity of the open DEALER, if one is open.
    socket: Option<Vec<u8>>,
    sockets: u32,
    dead: bool,
    /// The request being echoed and when the echo is ready.
    job: Option<(Instant, Frames)>,
}

struct SimClient {
    core: LazyPirate,
    req: ReqSocket,
    sockets: u32,
    next_send: Option<Instant>,
    sent: u32,
    bodies: HashMap<Uuid, Frames>,
    /// (replies, give-ups) per request.
    outcomes: BTreeMap<Uuid, (u32, u32)>,
}

struct World {
    sc: Scenario,
    seed: u64,
    clock: Clock,
    /// Client <-> frontend.
    link: Link<Msg>,
    /// Workers <-> backend.
    wlink: Link<Msg>,
    /// Identities of broken worker connections: what is in flight on them is lost.
    broken: HashSet<Vec<u8>>,
    /// Randomness of the application and the handlers (the link has its own).
    rng: fastrand::Rng,
    queue: Queue,
    workers: Vec<SimWorker>,
    client: SimClient,
    /// Workers the queue has handed a request and not yet heard a reply or READY from
    /// (by identity), as seen on the wire.
    holding: HashSet<Vec<u8>>,
    kill_at: Option<(Instant, usize)>,
    killed_at: Option<Instant>,
    victim_socket: Option<Vec<u8>>,
    tally: Tally,
}

impl World {
    fn new(seed: u64, sc: Scenario) -> Self {
        let clock = Clock::new();
        let now = clock.now();
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_0fb0_5eed_0fb0);
        let workers = (0..2u64)
            .map(|i| SimWorker {
                core: new_worker(now, sc.heartbeat, sc.reconnect, seed.wrapping_add(i)),
                socket: None,
                sockets: 0,
                dead: false,
                job: None,
            })
            .collect();
        let kill_at = sc
            .kill
            .then(|| (now + ms(rng.u64(100..1500)), rng.usize(0..2)));
        let mut w = World {
            sc,
            seed,
            clock,
            link: Link::new(sc.client_link, seed),
            wlink: Link::new(sc.worker_link, !seed),
            broken: HashSet::new(),
            rng,
            queue: new_queue(
                now,
                QueueConfig {
                    heartbeat: sc.heartbeat,
                    max_queue: 100,
                },
            ),
            workers,
            client: SimClient {
                core: LazyPirate::new(now, sc.retry, seed).expect("a valid retry policy"),
                req: ReqSocket::new(b"client-0".to_vec()),
                sockets: 0,
                // Workers get a moment to say READY first.
                next_send: Some(now + ms(30)),
                sent: 0,
                bodies: HashMap::new(),
                outcomes: BTreeMap::new(),
            },
            holding: HashSet::new(),
            kill_at,
            killed_at: None,
            victim_socket: None,
            tally: Tally::default(),
        };
        for i in 0..2 {
            w.flush_worker(i);
        }
        w
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn flush_client(&mut self) {
        let now = self.now();
        for _ in 0..1000 {
            while let Some(t) = self.client.core.poll_transmit() {
                match t {
                    lazy_pirate::Transmit::Send(frames) => {
                        let msg = self.client.req.send(frames);
                        self.link.send(now, Msg::Frontend(msg));
                    }
                    lazy_pirate::Transmit::Reset => {
                        // Close (linger 0) and open a fresh REQ: a new identity, an
                        // empty queue.
                        self.client.sockets += 1;
                        let identity = format!("client-{}", self.client.sockets).into_bytes();
                        self.client.req = ReqSocket::new(identity);
                        self.tally.resets += 1;
                    }
                }
            }
            while let Some(e) = self.client.core.poll_event() {
                match e {
                    lazy_pirate::Event::Reply { id, answer, .. } => {
                        let Answer::Ok(payload) = answer else {
                            panic!("an echo cannot fail: {answer:?}");
                        };
                        assert_eq!(
                            Some(&payload),
                            self.client.bodies.get(&id),
                            "echo of another request"
                        );
                        self.outcome(id, (1, 0));
                        self.tally.replies += 1;
                    }
                    lazy_pirate::Event::GaveUp {
                        id,
                        attempts,
                        payload,
                    } => {
                        assert_eq!(attempts, self.sc.retry.retries);
                        assert_eq!(
                            Some(&payload),
                            self.client.bodies.get(&id),
                            "GaveUp lost the body"
                        );
                        self.outcome(id, (0, 1));
                        self.tally.gave_up += 1;
                    }
                    lazy_pirate::Event::Retrying { .. } => self.tally.retries += 1,
                    lazy_pirate::Event::Discarded(_) => self.tally.discarded += 1,
                }
            }
            // A reply may already wait in the socket (it arrived before the send).
            match self.client.req.recv() {
                Some(reply) => self.client.core.handle_reply(now, reply),
                None => return,
            }
        }
        panic!("the client never settles");
    }

    fn outcome(&mut self, id: Uuid, (replies, gave_up): (u32, u32)) {
        let o = self.client.outcomes.entry(id).or_default();
        o.0 += replies;
        o.1 += gave_up;
        if o.0 + o.1 > 1 {
            self.tally.duplicates += 1;
        }
        if self.client.sent < self.sc.requests {
            let think = ms(self.rng.u64(0..20));
            self.client.next_send = Some(self.now() + think);
        }
    }

    fn flush_queue(&mut self) {
        let now = self.now();
        let mut out: Vec<QueueTransmit> =
            std::iter::from_fn(|| self.queue.poll_transmit()).collect();
        // Heartbeats come out in hash-map order; sort by destination (stably, so each
        // peer's messages keep their order) so that a seed replays exactly.
        out.sort_by_key(|t| match t {
            QueueTransmit::Frontend(f) => (0, f.first().cloned()),
            QueueTransmit::Backend(f) => (1, f.first().cloned()),
        });
        for t in out {
            match t {
                QueueTransmit::Frontend(f) => {
                    let (id, rest) = route(f).expect("a reply without a client identity");
                    self.link.send(now, Msg::Client(id, rest));
                }
                QueueTransmit::Backend(f) => {
                    let (id, rest) = route(f).expect("a message without a worker identity");
                    if rest != vec![vec![HEARTBEAT]] {
                        assert_eq!(self.queue.is_busy(&id), Some(true));
                        assert!(
                            self.holding.insert(id.clone()),
                            "seed {}: a second request to a busy worker",
                            self.seed
                        );
                    }
                    if !self.break_connection(&id) {
                        self.wlink.send(now, Msg::Worker(id, rest));
                    }
                }
            }
        }
        while let Some(e) = self.queue.poll_event() {
            if let QueueEvent::WorkerExpired { identity, .. } = e {
                self.tally.expired += 1;
                if self.victim_socket.as_ref() == Some(&identity) {
                    self.tally.victim_expired += 1;
                }
                self.holding.remove(&identity);
            }
        }
        assert!(self.queue.idle_workers() <= self.queue.workers());
    }

    /// With probability `breaks`, breaks the connection of the worker whose current
    /// identity is `identity`: the message at hand and all in flight are lost, and the
    /// worker's DEALER silently reconnects under a new identity. Returns whether it broke.
    fn break_connection(&mut self, identity: &[u8]) -> bool {
        if self.rng.f64() >= self.sc.breaks {
            return false;
        }
        let Some(w) = self
            .workers
            .iter_mut()
            .find(|w| w.socket.as_deref() == Some(identity))
        else {
            return false;
        };
        self.broken.insert(identity.to_vec());
        let mut fresh = identity.to_vec();
        fresh.push(b'+');
        w.socket = Some(fresh);
        self.tally.breaks += 1;
        true
    }

    fn flush_worker(&mut self, i: usize) {
        let now = self.now();
        if self.workers[i].dead {
            return;
        }
        while let Some(t) = self.workers[i].core.poll_transmit() {
            let w = &mut self.workers[i];
            match t {
                WorkerTransmit::Connect => {
                    w.sockets += 1;
                    if w.sockets > 1 {
                        self.tally.reconnects += 1;
                    }
                    w.socket = Some(format!("worker-{i}-{}", w.sockets).into_bytes());
                }
                WorkerTransmit::Disconnect => w.socket = None,
                WorkerTransmit::Send(f) => {
                    let id = w.socket.clone().expect("Send with no socket open");
                    if self.break_connection(&id) {
                        continue;
                    }
                    let mut msg = vec![id];
                    msg.extend(f);
                    self.wlink.send(now, Msg::Backend(msg));
                }
            }
        }
        let w = &mut self.workers[i];
        while let Some(e) = w.core.poll_event() {
            match e {
                WorkerEvent::Request { request } => {
                    assert!(w.job.is_none(), "a second request handed to a busy handler");
                    assert!(request.meta.is_some(), "the client's metadata was lost");
                    let work = self.sc.work.mul_f64(self.rng.f64());
                    w.job = Some((now + work, request.payload));
                }
                WorkerEvent::DroppedWhileBusy => self.tally.dropped_while_busy += 1,
                _ => {}
            }
        }
    }

    fn deliver(&mut self, msg: Msg) {
        let now = self.now();
        match msg {
            Msg::Frontend(f) => {
                self.queue.handle_frontend(now, f);
                self.flush_queue();
            }
            Msg::Backend(f) => {
                if f.first().is_some_and(|id| self.broken.contains(id)) {
                    return;
                }
                if let Some((id, rest)) = route(f.clone()) {
                    if matches!(
                        ppp::parse_from_worker(rest),
                        Ok(FromWorker::Ready | FromWorker::Reply(_))
                    ) {
                        self.holding.remove(&id);
                    }
                }
                self.queue.handle_backend(now, f);
                self.flush_queue();
            }
            Msg::Client(id, f) => {
                // A closed socket's identity is gone: the ROUTER drops the reply.
                if id == self.client.req.identity {
                    self.client.req.deliver(f);
                    self.flush_client();
                }
            }
            Msg::Worker(id, f) => {
                let Some(i) = self
                    .workers
                    .iter()
                    .position(|w| !w.dead && w.socket.as_ref() == Some(&id))
                else {
                    return;
                };
                self.workers[i].core.handle_frames(now, f);
                self.flush_worker(i);
            }
        }
    }

    fn next_wakeup(&self) -> Instant {
        let mut times = vec![
            self.queue.poll_timeout(),
            self.link.next_delivery(),
            self.wlink.next_delivery(),
        ];
        times.push(self.client.core.poll_timeout());
        times.push(self.client.next_send);
        times.push(self.kill_at.map(|k| k.0));
        for w in self.workers.iter().filter(|w| !w.dead) {
            times.push(w.core.poll_timeout());
            times.push(w.job.as_ref().map(|j| j.0));
        }
        times
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.now())
            .max(self.now())
    }

    fn finished(&self) -> bool {
        let c = &self.client;
        let settled = c.sent == self.sc.requests && c.next_send.is_none() && !c.core.is_busy();
        // Run on long enough after a kill for the queue to notice.
        let noticed = match (self.kill_at, self.killed_at) {
            (Some(_), _) => false,
            (None, Some(k)) => self.now() >= k + self.sc.heartbeat.expiry() * 2,
            (None, None) => true,
        };
        settled && noticed
    }

    fn step(&mut self) {
        let now = self.clock.advance_to(self.next_wakeup());
        if let Some((at, victim)) = self.kill_at {
            if at <= now {
                let w = &mut self.workers[victim];
                w.dead = true;
                w.job = None;
                self.victim_socket = w.socket.clone();
                self.kill_at = None;
                self.killed_at = Some(now);
            }
        }
        for _ in 0..100_000 {
            let Some(msg) = self.link.pop_due(now).or_else(|| self.wlink.pop_due(now)) else {
                break;
            };
            self.deliver(msg);
        }
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            if w.dead || !w.job.as_ref().is_some_and(|j| j.0 <= now) {
                continue;
            }
            let Some((_, payload)) = w.job.take() else {
                continue;
            };
            // An echo server: the reply is the request's payload; the core adds the
            // request's id and attempt.
            w.core
                .reply(now, Ok(payload))
                .expect("the worker forgot its request");
            self.flush_worker(i);
        }
        if self.client.next_send.is_some_and(|t| t <= now) {
            self.client.next_send = None;
            self.client.sent += 1;
            let n = u128::from(self.client.sent);
            // Several payload frames, an empty one among them: the echo must return
            // them all, unchanged.
            let e = Envelope::new(
                Uuid::from_u128(u128::from(self.seed) << 64 | n),
                0,
                vec![format!("request {n}").into_bytes(), Vec::new(), vec![0xff]],
            );
            self.client.bodies.insert(e.id(), e.payload.clone());
            self.client.core.send(now, e).expect("the client is idle");
            self.tally.requests += 1;
            self.flush_client();
        }
        self.client.core.handle_timeout(now);
        self.flush_client();
        self.queue.handle_timeout(now);
        self.flush_queue();
        for i in 0..self.workers.len() {
            if !self.workers[i].dead {
                self.workers[i].core.handle_timeout(now);
                self.flush_worker(i);
            }
        }
    }

    /// Runs the scenario to the end and checks what holds for every seed.
    fn run(mut self) -> Tally {
        const MAX_STEPS: u64 = 200_000;
        while !self.finished() {
            self.tally.steps += 1;
            assert!(
                self.tally.steps < MAX_STEPS,
                "seed {}: did not finish",
                self.seed
            );
            self.step();
        }
        let seed = self.seed;
        assert_eq!(self.tally.requests, u64::from(self.sc.requests));
        assert_eq!(self.client.outcomes.len(), self.sc.requests as usize);
        for (id, o) in &self.client.outcomes {
            assert!(
                *o == (1, 0) || *o == (0, 1),
                "seed {seed}: request {id} ended {o:?} (replies, give-ups)"
            );
        }
        assert_eq!(self.tally.duplicates, 0, "seed {seed}");
        if let Some(victim) = &self.victim_socket {
            assert_eq!(
                self.queue.is_busy(victim),
                None,
                "seed {seed}: the dead worker is still registered"
            );
        }
        let (a, b) = (self.link.stats, self.wlink.stats);
        self.tally.link = LinkStats {
            sent: a.sent + b.sent,
            dropped: a.dropped + b.dropped,
            duplicated: a.duplicated + b.duplicated,
            delivered: a.delivered + b.delivered,
        };
        self.tally
    }
}

fn moderate() -> Scenario {
    Scenario {
        client_link: LinkConfig {
            loss: 0.03,
            duplicate: 0.03,
            delay_min: ms(1),
            delay_max: ms(15),
        },
        worker_link: LinkConfig {
            loss: 0.0,
            duplicate: 0.03,
            delay_min: ms(1),
            delay_max: ms(15),
        },
        breaks: 0.005,
        retry: Retry {
            timeout: ms(400),
            retries: 30,
            backoff: Backoff {
                initial: ms(20),
                max: ms(200),
                jitter: 0.3,
            },
            deadline: None,
        },
        heartbeat: hb(100, 3),
        reconnect: Backoff {
            initial: ms(100),
            max: ms(800),
            jitter: 0.2,
        },
        requests: 10,
        work: ms(40),
        kill: true,
    }
}

fn run_seeds(sc: Scenario, seeds: std::ops::Range<u64>) -> Tally {
    let mut total = Tally::default();
    for seed in seeds {
        total.add(&World::new(seed, sc).run());
    }
    eprintln!("{total:#?}");
    total
}

/// Loss, duplication, reordering and a worker killed mid-run: with retries to spare,
/// every request is answered, exactly once.
#[test]
fn end_to_end_every_request_is_answered_exactly_once_despite_loss_and_a_dead_worker() {
    let seeds = 200;
    let t = run_seeds(moderate(), 0..seeds);
    assert_eq!(t.requests, seeds * 10);
    assert_eq!(t.replies, t.requests, "{t:#?}");
    assert_eq!((t.gave_up, t.duplicates), (0, 0));
    // The simulation did exercise what it claims to.
    assert!(t.link.dropped > 0 && t.link.duplicated > 0);
    assert!(t.retries > 0 && t.resets > 0 && t.discarded > 0, "{t:#?}");
    assert!(t.victim_expired > seeds / 2, "{t:#?}");
    assert!(t.breaks > 0 && t.reconnects > 0, "{t:#?}");
}

/// A link that loses nothing: the only failures come from the killed worker, and no
/// reply is ever stale (Reset gives the client a new identity, so a late reply to an
/// abandoned attempt can never reach it).
#[test]
fn end_to_end_on_a_clean_link_nothing_is_discarded() {
    let clean = LinkConfig {
        loss: 0.0,
        duplicate: 0.0,
        ..moderate().client_link
    };
    let sc = Scenario {
        client_link: clean,
        worker_link: clean,
        breaks: 0.0,
        ..moderate()
    };
    let t = run_seeds(sc, 1000..1100);
    assert_eq!(t.replies, t.requests);
    assert_eq!((t.gave_up, t.duplicates, t.discarded), (0, 0, 0), "{t:#?}");
    assert_eq!(t.dropped_while_busy, 0);
    assert!(t.retries > 0, "killing a worker never cost a retry: {t:#?}");
    // Without a kill, no request is ever retried.
    let t = run_seeds(Scenario { kill: false, ..sc }, 2000..2050);
    assert_eq!(
        (t.replies, t.retries, t.expired, t.reconnects),
        (t.requests, 0, 0, 0),
        "{t:#?}"
    );
}

/// A bad link and few retries: many requests are given up, but each still ends in
/// exactly one Reply or one GaveUp.
#[test]
fn end_to_end_on_a_bad_link_each_request_ends_exactly_once() {
    let sc = Scenario {
        client_link: LinkConfig {
            loss: 0.2,
            duplicate: 0.15,
            delay_min: ms(1),
            delay_max: ms(40),
        },
        worker_link: LinkConfig {
            loss: 0.0,
            duplicate: 0.15,
            delay_min: ms(1),
            delay_max: ms(40),
        },
        breaks: 0.02,
        retry: Retry {
            timeout: ms(150),
            retries: 2,
            ..moderate().retry
        },
        ..moderate()
    };
    let t = run_seeds(sc, 3000..3100);
    assert_eq!(t.replies + t.gave_up, t.requests);
    assert!(t.gave_up > 0 && t.replies > 0, "{t:#?}");
    assert!(t.discarded > 0 && t.dropped_while_busy > 0, "{t:#?}");
}

/// Independent loss of single messages on live worker connections (which TCP does not
/// do). Fails today: one lost request or reply leaves a worker busy in the queue's eyes
/// for as long as it heartbeats, and with the other worker killed nothing is served.
/// 6/PPP has no message that could repair it; kept to measure a future remedy
/// (a busy timeout in the queue, or idle workers re-announcing READY).
#[test]
#[ignore = "6/PPP cannot recover from a lost request or reply on a live worker connection"]
fn end_to_end_independent_loss_on_worker_connections() {
    let sc = Scenario {
        worker_link: moderate().client_link,
        ..moderate()
    };
    let t = run_seeds(sc, 0..200);
    assert_eq!(t.replies, t.requests, "{t:#?}");
}

proptest! {
    #![proptest_config(sim::cases(24))]

    /// Random link conditions and policies: never a second outcome for a request.
    #[test]
    fn end_to_end_random_conditions(
        seed in any::<u64>(),
        loss in 0.0f64..0.3,
        duplicate in 0.0f64..0.3,
        delay_max in 0u64..60,
        breaks in prop_oneof![Just(0.0), 0.0f64..0.05],
        retries in 1u32..6,
        timeout in 50u64..500,
        liveness in 1u32..5,
        kill in any::<bool>(),
    ) {
        let base = moderate();
        let sc = Scenario {
            client_link: LinkConfig { loss, duplicate, delay_min: Duration::ZERO, delay_max: ms(delay_max) },
            worker_link: LinkConfig { loss: 0.0, duplicate, delay_min: Duration::ZERO, delay_max: ms(delay_max) },
            breaks,
            retry: Retry { timeout: ms(timeout), retries, ..base.retry },
            heartbeat: hb(100, liveness),
            requests: 5,
            kill,
            ..base
        };
        let t = World::new(seed, sc).run();
        prop_assert_eq!(t.replies + t.gave_up, t.requests);
    }
}
