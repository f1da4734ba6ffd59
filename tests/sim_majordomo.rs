//! The Majordomo cores (7/MDP broker with 8/MMI and the capacity extension, worker,
//! client in its pipelined and blocking modes) in virtual time: routing rules, exact
//! heartbeat and expiry times, re-queueing, bounds, MMI and its statistics, the
//! worker's reconnect schedule, the client's per-request retries, bosun's metadata frame
//! through the broker (added to a foreign worker's plain reply, carrying a handler's
//! failure), configuration checks; property tests over random input; and an end-to-end
//! run of clients, a broker and three workers over a seeded lossy network with a worker
//! killed and the broker restarted.

mod sim_mdp;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bosun::error::ClientError;
use bosun::proto::broker::{
    body_id, Broker, BrokerConfig, DropReason, Event as BEvent, GoneReason,
};
use bosun::proto::client::{Event as CEvent, MdpClient, Mode, Transmit as CTx};
use bosun::proto::envelope::{Answer, HandlerError, Meta, Request, Status, MAGIC};
use bosun::proto::frames::mdp::{self, Command};
use bosun::proto::frames::Frames;
use bosun::proto::worker::{Event as WEvent, MdWorker, Transmit as WTx};
use bosun::{Backoff, Envelope, Heartbeat, Retry};
use proptest::prelude::*;
use uuid::Uuid;

use sim_mdp::{
    cmd, drain, envelope, frames, hb, ms, plain, ready, rejected, reply, request, route, sent,
    sent_no_hb, Clock, Net, NetConfig, Out, NS,
};

const W1: &[u8] = b"w1";
const W2: &[u8] = b"w2";
const W3: &[u8] = b"w3";
const C1: &[u8] = b"c1";
const C2: &[u8] = b"c2";
const ECHO: &[u8] = b"echo";

/// Heartbeat 1 s × 3, generous bounds: each test tightens what it is about.
fn bcfg() -> BrokerConfig {
    BrokerConfig {
        heartbeat: hb(1000, 3),
        max_queue: 100,
        max_queue_bytes: 1 << 20,
        request_ttl: Duration::from_secs(600),
        max_services: 100,
        stats_window: Duration::from_secs(10),
        max_deliveries: 3,
    }
}

fn gone(identity: &[u8], reason: GoneReason, requeued: usize) -> BEvent {
    BEvent::WorkerGone {
        identity: identity.to_vec(),
        reason,
        requeued,
    }
}

/// The events but the once-a-second drop counts ([`BEvent::DropSummary`]).
fn but_summaries(events: Vec<BEvent>) -> Vec<BEvent> {
    events
        .into_iter()
        .filter(|e| !matches!(e, BEvent::DropSummary { .. }))
        .collect()
}

fn dropped(service: &[u8], reason: DropReason) -> BEvent {
    BEvent::RequestDropped {
        service: service.to_vec(),
        reason,
    }
}

/// The REQUESTs in `out`, as (worker, first body frame).
fn requests(out: &[Out]) -> Vec<(Vec<u8>, Vec<u8>)> {
    out.iter()
        .filter_map(|o| match o {
            Out::Request { worker, body, .. } => {
                Some((worker.clone(), body.first().cloned().unwrap_or_default()))
            }
            _ => None,
        })
        .collect()
}

fn req_of(worker: &[u8], body: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (worker.to_vec(), body.to_vec())
}

// ======================================================================================
// 1. Broker routing
// ======================================================================================

/// LRU among idle workers (a worker that just finished goes to the back), FIFO per
/// service queue, dispatch on READY, and services that never lend each other workers or
/// requests. Catches: MRU instead of LRU, LIFO queues, requests not dispatched when a
/// worker registers, a request handed to an idle worker of another service.
#[test]
fn broker_dispatches_lru_and_fifo_per_service() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    for w in [W1, W2, W3] {
        b.handle_message(t, ready(w, ECHO, 1));
    }
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| matches!(
        e,
        BEvent::WorkerReady { capacity: 1, service, .. } if service == ECHO
    )));

    // The exact wire form of a dispatch: [worker][""][MDPW01][0x02][client][""][body].
    b.handle_message(t, plain(C1, ECHO, b"r1"));
    assert_eq!(
        b.poll_transmit(),
        Some(frames(&[W1, b"", b"MDPW01", &[0x02], C1, b"", b"r1"]))
    );
    assert_eq!(b.poll_transmit(), None);
    // Registration order is LRU order.
    b.handle_message(t, plain(C1, ECHO, b"r2"));
    b.handle_message(t, plain(C2, ECHO, b"r3"));
    assert_eq!(
        sent(&mut b),
        vec![Out::req(W2, C1, b"r2"), Out::req(W3, C2, b"r3")]
    );

    // W2 finishes first, then W1: the least recently used idle worker is W2.
    let t = clock.set(ms(10));
    b.handle_message(t, reply(W2, C1, vec![b"a2".to_vec()]));
    // The exact wire form of a reply: [client][""][MDPC01][service][body].
    assert_eq!(
        b.poll_transmit(),
        Some(frames(&[C1, b"", b"MDPC01", ECHO, b"a2"]))
    );
    assert_eq!(b.poll_transmit(), None);
    let t = clock.set(ms(20));
    b.handle_message(t, reply(W1, C1, vec![b"a1".to_vec()]));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, ECHO, b"a1")]);
    b.handle_message(t, plain(C1, ECHO, b"r4"));
    b.handle_message(t, plain(C1, ECHO, b"r5"));
    assert_eq!(
        sent(&mut b),
        vec![Out::req(W2, C1, b"r4"), Out::req(W1, C1, b"r5")]
    );
    // Everyone busy: the next request waits, and goes to the first worker to finish.
    b.handle_message(t, plain(C2, ECHO, b"r6"));
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.queued(ECHO), 1);
    let t = clock.set(ms(30));
    b.handle_message(t, reply(W3, C2, vec![b"a3".to_vec()]));
    assert_eq!(
        sent(&mut b),
        vec![Out::rep(C2, ECHO, b"a3"), Out::req(W3, C2, b"r6")]
    );
    assert_eq!(b.queued(ECHO), 0);

    // Free everyone: three idle echo workers.
    b.handle_message(t, reply(W2, C1, vec![b"a4".to_vec()]));
    b.handle_message(t, reply(W1, C1, vec![b"a5".to_vec()]));
    b.handle_message(t, reply(W3, C2, vec![b"a6".to_vec()]));
    assert_eq!(sent(&mut b).len(), 3);

    // A service with no workers queues, and never borrows the idle echo workers.
    let t = clock.set(ms(40));
    let clients: [&[u8]; 5] = [b"k1", b"k2", b"k3", b"k4", b"k5"];
    for (i, c) in clients.iter().enumerate() {
        b.handle_message(t, plain(c, b"slow", format!("q{}", i + 1).as_bytes()));
    }
    assert!(sent(&mut b).is_empty());
    assert_eq!(b.queued(b"slow"), 5);
    // ... and its queue does not hold up echo.
    b.handle_message(t, plain(C1, ECHO, b"r7"));
    assert_eq!(sent(&mut b), vec![Out::req(W2, C1, b"r7")]);

    // A worker for "slow" registers: the queue drains to it in arrival order.
    let s: &[u8] = b"slow-worker";
    let t = clock.set(ms(50));
    b.handle_message(t, ready(s, b"slow", 1));
    assert_eq!(sent(&mut b), vec![Out::req(s, b"k1", b"q1")]);
    for i in 1..5 {
        let t = clock.set(ms(50 + 10 * i as u64));
        b.handle_message(t, reply(s, clients[i - 1], vec![b"done".to_vec()]));
        let body = format!("q{}", i + 1);
        assert_eq!(
            sent(&mut b),
            vec![
                Out::rep(clients[i - 1], b"slow", b"done"),
                Out::req(s, clients[i], body.as_bytes())
            ]
        );
    }
    assert_eq!(b.queued(b"slow"), 0);
    assert_eq!(b.workers(), 4);
}

// ======================================================================================
// 2. Heartbeats and expiry
// ======================================================================================

/// Every worker is heartbeated every interval, busy ones included (the reference
/// broker heartbeats only idle workers). Catches: busy workers skipped, a heartbeat
/// early or late, a heartbeat timer that never re-arms.
#[test]
fn broker_heartbeats_idle_and_busy_workers_every_interval() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, ECHO, 1));
    b.handle_message(t, ready(W2, ECHO, 1));
    b.handle_message(t, plain(C1, ECHO, b"r1"));
    assert_eq!(sent(&mut b), vec![Out::req(W1, C1, b"r1")]);
    assert_eq!(b.poll_timeout(), Some(clock.at(ms(1000))));

    for k in 1..=5u64 {
        let t = clock.set(ms(1000 * k) - NS);
        b.handle_timeout(t);
        assert!(sent(&mut b).is_empty(), "heartbeat early at beat {k}");
        let t = clock.set(ms(1000 * k));
        b.handle_timeout(t);
        let mut beats: Vec<Out> = sent(&mut b);
        beats.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            beats,
            vec![Out::Heartbeat(W1.to_vec()), Out::Heartbeat(W2.to_vec())],
            "beat {k}"
        );
        // Both workers stay alive by answering.
        for w in [W1, W2] {
            b.handle_message(t, cmd(w, Command::Heartbeat));
        }
        assert!(sent(&mut b).is_empty());
        assert_eq!(b.poll_timeout(), Some(clock.at(ms(1000 * (k + 1)))));
    }
    assert_eq!(b.workers(), 2);
    assert_eq!(b.inflight(W1), Some(1));
}

/// A busy worker silent for exactly liveness × interval is expired (not 1 ns sooner),
/// its request goes back to the FRONT of the queue and to the next free worker exactly
/// once; an idle worker expires the same way. Catches: busy workers never expired,
/// requests lost with their worker, re-queue at the back, off-by-one-interval expiry,
/// `<` for `<=` at the deadline, a request dispatched twice.
#[test]
fn broker_expires_silent_workers_and_requeues_at_the_front() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let mut all = Vec::new();
    b.handle_message(t, ready(W1, ECHO, 1)); // will die holding r1
    b.handle_message(t, ready(W3, ECHO, 1)); // stays alive, busy with r2
    for r in [b"r1", b"r2", b"r3", b"r4"] {
        b.handle_message(t, plain(C1, ECHO, r));
    }
    let out = sent(&mut b);
    assert_eq!(requests(&out), vec![req_of(W1, b"r1"), req_of(W3, b"r2")]);
    all.extend(out);
    assert_eq!(b.queued(ECHO), 2);
    // An idle worker of another service, registered later, never heard from again.
    let t = clock.set(ms(500));
    b.handle_message(t, ready(W2, b"other", 1));

    // W3 heartbeats; W1 and W2 are silent.
    for at in [900, 1900, 2900] {
        let t = clock.set(ms(at));
        b.handle_timeout(t);
        b.handle_message(t, cmd(W3, Command::Heartbeat));
        all.extend(sent(&mut b));
    }
    let t = clock.set(ms(3000) - NS);
    b.handle_timeout(t);
    let (out, events) = drain(&mut b);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(b.inflight(W1), Some(1));
    all.extend(out);
    assert_eq!(b.poll_timeout(), Some(clock.at(ms(3000))));

    let t = clock.set(ms(3000));
    b.handle_timeout(t);
    let (out, events) = drain(&mut b);
    assert_eq!(events, vec![gone(W1, GoneReason::Expired, 1)]);
    assert!(requests(&out).is_empty(), "W3 is busy: {out:?}");
    all.extend(out);
    assert_eq!(b.inflight(W1), None);
    assert_eq!(b.queued(ECHO), 3);

    // The idle worker expires 3 s after its READY, not before.
    assert_eq!(b.poll_timeout(), Some(clock.at(ms(3500))));
    let t = clock.set(ms(3500) - NS);
    b.handle_timeout(t);
    assert!(drain(&mut b).1.is_empty());
    assert_eq!(b.inflight(W2), Some(0));
    let t = clock.set(ms(3500));
    b.handle_timeout(t);
    assert_eq!(drain(&mut b).1, vec![gone(W2, GoneReason::Expired, 0)]);
    assert_eq!(b.workers(), 1);
    // Its service had no requests and no other worker: forgotten.
    assert!(b.stats(t, None).iter().all(|s| s.service != b"other"));

    // W3 frees up: r1 (front) first, then r3 and r4.
    for (at, done, next) in [
        (3600, b"r2", b"r1"),
        (3700, b"r1", b"r3"),
        (3800, b"r3", b"r4"),
    ] {
        let t = clock.set(ms(at));
        b.handle_message(t, reply(W3, C1, vec![done.to_vec()]));
        let out = sent(&mut b);
        assert_eq!(requests(&out), vec![req_of(W3, next)], "after {done:?}");
        all.extend(out);
    }
    // r1 went out exactly twice: to W1 (lost with it) and to W3.
    let r1_sends = requests(&all)
        .iter()
        .filter(|(_, body)| body == b"r1")
        .count();
    assert_eq!(r1_sends, 2);
}

/// A DISCONNECT from a busy worker re-queues its request at once (and is not answered).
#[test]
fn broker_requeues_when_a_worker_disconnects() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, ECHO, 1));
    b.handle_message(t, plain(C1, ECHO, b"r1"));
    b.handle_message(t, plain(C1, ECHO, b"r2"));
    assert_eq!(sent(&mut b), vec![Out::req(W1, C1, b"r1")]);
    let t = clock.set(ms(100));
    b.handle_message(t, cmd(W1, Command::Disconnect));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "DISCONNECT is not answered: {out:?}");
    assert_eq!(events, vec![gone(W1, GoneReason::Disconnected, 1)]);
    assert_eq!((b.workers(), b.queued(ECHO)), (0, 2));
    let t = clock.set(ms(200));
    b.handle_message(t, ready(W2, ECHO, 1));
    assert_eq!(sent(&mut b), vec![Out::req(W2, C1, b"r1")]);
}

/// The reference broker purges expired workers from the front of its LRU list and stops
/// at the first live one, so a dead worker behind a live one lingers and is handed work.
/// Here one live worker sits between two dead ones (in LRU order and in registration
/// order); both dead ones go at their exact deadlines and no request ever reaches them.
/// Catches: a purge that stops early, a heartbeat that does not move the deadline.
#[test]
fn broker_purges_dead_workers_behind_a_live_one() {
    let mut clock = Clock::new();
    let dead_a: &[u8] = b"dead-a";
    let live: &[u8] = b"live";
    let dead_b: &[u8] = b"dead-b";
    let mut b = Broker::new(clock.now(), bcfg()).unwrap();
    for (at, w) in [(0, dead_a), (1, live), (2, dead_b)] {
        let t = clock.set(ms(at));
        b.handle_message(t, ready(w, ECHO, 1));
    }
    for at in [1000, 2000, 2999] {
        let t = clock.set(ms(at));
        b.handle_timeout(t);
        b.handle_message(t, cmd(live, Command::Heartbeat));
    }
    sent(&mut b);
    drain(&mut b);
    let t = clock.set(ms(3000));
    b.handle_timeout(t);
    assert_eq!(drain(&mut b).1, vec![gone(dead_a, GoneReason::Expired, 0)]);
    let t = clock.set(ms(3001));
    b.handle_timeout(t);
    assert_eq!(drain(&mut b).1, vec![]);
    let t = clock.set(ms(3002));
    b.handle_timeout(t);
    assert_eq!(drain(&mut b).1, vec![gone(dead_b, GoneReason::Expired, 0)]);
    assert_eq!(b.workers(), 1);
    assert_eq!(b.inflight(live), Some(0));
    // Work goes to the live worker only; the second request waits for it.
    b.handle_message(t, plain(C1, ECHO, b"r1"));
    b.handle_message(t, plain(C1, ECHO, b"r2"));
    assert_eq!(sent_no_hb(&mut b), vec![Out::req(live, C1, b"r1")]);
    assert_eq!(b.queued(ECHO), 1);
}

// ======================================================================================
// 3. Protocol errors answered with DISCONNECT
// ======================================================================================

/// A second READY is a protocol error: DISCONNECT to the worker, the worker removed,
/// its request re-queued for the next worker.
#[test]
fn broker_disconnects_a_second_ready_and_requeues_its_work() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, ECHO, 1));
    b.handle_message(t, plain(C1, ECHO, b"r1"));
    assert_eq!(sent(&mut b), vec![Out::req(W1, C1, b"r1")]);
    drain(&mut b);
    let t = clock.set(ms(10));
    b.handle_message(t, ready(W1, ECHO, 1));
    let (out, events) = drain(&mut b);
    assert_eq!(out, vec![Out::Disconnect(W1.to_vec())]);
    assert!(matches!(&events[0], BEvent::Disconnected { identity, .. } if identity == W1));
    assert_eq!(events[1], gone(W1, GoneReason::ProtocolError, 1));
    assert_eq!(events.len(), 2);
    assert_eq!((b.workers(), b.queued(ECHO)), (0, 1));
    b.handle_message(t, ready(W2, ECHO, 1));
    assert_eq!(sent(&mut b), vec![Out::req(W2, C1, b"r1")]);
    // A second READY for another service is no better.
    b.handle_message(t, ready(W2, b"other", 1));
    assert_eq!(sent(&mut b), vec![Out::Disconnect(W2.to_vec())]);
    assert_eq!((b.workers(), b.queued(ECHO)), (0, 1));
}

/// HEARTBEAT or REPLY from a worker the broker does not know (it expired, or the
/// broker restarted) draws a DISCONNECT, so the worker registers again; a DISCONNECT
/// from an unknown worker is ignored. None of them registers anything.
#[test]
fn broker_disconnects_unknown_workers() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, cmd(b"ghost", Command::Heartbeat));
    let (out, events) = drain(&mut b);
    assert_eq!(out, vec![Out::Disconnect(b"ghost".to_vec())]);
    assert!(matches!(&events[..], [BEvent::Disconnected { identity, .. }] if identity == b"ghost"));

    b.handle_message(t, reply(b"ghost2", C1, vec![b"late".to_vec()]));
    let out = sent(&mut b);
    assert!(
        out.contains(&Out::Disconnect(b"ghost2".to_vec())),
        "{out:?}"
    );
    assert!(out.iter().all(|o| !matches!(o, Out::Request { .. })));
    // Its reply answers nothing the broker knows of: dropped, not forwarded.
    assert!(
        out.iter().all(|o| !matches!(o, Out::Reply { .. })),
        "{out:?}"
    );

    b.handle_message(t, cmd(b"ghost3", Command::Disconnect));
    assert_eq!(drain(&mut b), (vec![], vec![]));
    assert_eq!(b.workers(), 0);
    for g in [&b"ghost"[..], b"ghost2", b"ghost3"] {
        assert_eq!(b.inflight(g), None);
    }
    // Nothing was registered: a request waits.
    b.handle_message(t, plain(C1, ECHO, b"r1"));
    assert!(sent(&mut b).is_empty());

    // The same after a broker restart: a fresh broker answers an old worker's heartbeat
    // with DISCONNECT, and its READY then registers it and drains the queue.
    let t = clock.set(ms(5000));
    let mut fresh = Broker::new(t, bcfg()).unwrap();
    fresh.handle_message(t, plain(C1, ECHO, b"r2"));
    fresh.handle_message(t, cmd(W1, Command::Heartbeat));
    assert_eq!(sent(&mut fresh), vec![Out::Disconnect(W1.to_vec())]);
    fresh.handle_message(t, ready(W1, ECHO, 1));
    assert_eq!(sent(&mut fresh), vec![Out::req(W1, C1, b"r2")]);
}

/// READY for an `mmi.` service is refused with DISCONNECT; the check is on the service
/// frame, not (as in the reference broker) on the sender's identity.
#[test]
fn broker_refuses_mmi_services_but_not_mmi_like_identities() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    for service in [&b"mmi.service"[..], b"mmi.echo", b"mmi."] {
        b.handle_message(t, ready(W1, service, 1));
        let (out, events) = drain(&mut b);
        assert_eq!(out, vec![Out::Disconnect(W1.to_vec())], "{service:?}");
        assert!(matches!(&events[..], [BEvent::Disconnected { .. }]));
        assert_eq!(b.workers(), 0);
    }
    b.handle_message(t, plain(C1, b"mmi.service", b"mmi.echo"));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"mmi.service", b"404")]);
    // An identity that merely starts with "mmi." is an ordinary worker.
    b.handle_message(t, ready(b"mmi.w", ECHO, 1));
    assert_eq!(b.workers(), 1);
    b.handle_message(t, plain(C1, ECHO, b"r"));
    assert_eq!(sent(&mut b), vec![Out::req(b"mmi.w", C1, b"r")]);
}

// ======================================================================================
// 4. Bounds
// ======================================================================================

/// `max_queue` per service (QueueFull), `request_ttl` counted from arrival (Expired at
/// the deadline, not before, and `poll_timeout` asks to be woken for it); a request
/// already with a worker is never TTL-dropped.
#[test]
fn broker_bounds_queues_and_expires_waiting_requests() {
    let mut clock = Clock::new();
    let t = clock.now();
    let cfg = BrokerConfig {
        heartbeat: hb(60_000, 3),
        max_queue: 3,
        request_ttl: ms(5000),
        ..bcfg()
    };
    let mut b = Broker::new(t, cfg).unwrap();
    for r in [b"a1", b"a2", b"a3"] {
        b.handle_message(t, plain(C1, b"a", r));
    }
    assert!(drain(&mut b).1.is_empty());
    b.handle_message(t, plain(C1, b"a", b"a4"));
    assert_eq!(drain(&mut b).1, vec![dropped(b"a", DropReason::QueueFull)]);
    assert_eq!(b.queued(b"a"), 3);
    // The bound is per service.
    let t = clock.set(ms(1000));
    b.handle_message(t, plain(C1, b"b", b"b1"));
    assert!(drain(&mut b).1.is_empty());
    assert_eq!(b.queued(b"b"), 1);
    // A worker for "c" takes its request at once; it may hold it past the TTL.
    b.handle_message(t, ready(W1, b"c", 1));
    b.handle_message(t, plain(C1, b"c", b"c1"));
    assert_eq!(sent(&mut b), vec![Out::req(W1, C1, b"c1")]);
    // The refusal at 0 is counted for the log a second later, once.
    assert_eq!(b.poll_timeout(), Some(clock.at(ms(1000))));
    b.handle_timeout(t);
    assert_eq!(
        drain(&mut b).1,
        vec![BEvent::DropSummary {
            service: Some(b"a".to_vec()),
            reason: DropReason::QueueFull,
            count: 1
        }]
    );

    assert_eq!(b.poll_timeout(), Some(clock.at(ms(5000))));
    let t = clock.set(ms(5000) - NS);
    b.handle_timeout(t);
    assert!(but_summaries(drain(&mut b).1).is_empty());
    assert_eq!(b.queued(b"a"), 3);
    let t = clock.set(ms(5000));
    b.handle_timeout(t);
    assert_eq!(
        but_summaries(drain(&mut b).1),
        vec![dropped(b"a", DropReason::Expired); 3]
    );
    assert_eq!(b.queued(b"a"), 0);
    assert_eq!(b.poll_timeout(), Some(clock.at(ms(6000))));
    let t = clock.set(ms(6000) - NS);
    b.handle_timeout(t);
    assert!(but_summaries(drain(&mut b).1).is_empty());
    let t = clock.set(ms(6000));
    b.handle_timeout(t);
    assert_eq!(
        but_summaries(drain(&mut b).1),
        vec![dropped(b"b", DropReason::Expired)]
    );
    // Forgotten: only "c" (it has a worker) is left.
    let names: Vec<Vec<u8>> = b.stats(t, None).into_iter().map(|s| s.service).collect();
    assert_eq!(names, vec![b"c".to_vec()]);

    let t = clock.set(ms(20_000));
    b.handle_message(t, cmd(W1, Command::Heartbeat));
    b.handle_timeout(t);
    assert!(
        but_summaries(drain(&mut b).1).is_empty(),
        "a dispatched request has no TTL"
    );
    b.handle_message(t, reply(W1, C1, vec![b"c1".to_vec()]));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"c", b"c1")]);
}

/// `max_services`: a request for a new service beyond the bound is dropped
/// (TooManyServices) and a READY for one is refused; a service with no workers and no
/// requests is forgotten, so names asked for once do not accumulate.
#[test]
fn broker_bounds_services_and_forgets_empty_ones() {
    let mut clock = Clock::new();
    let t = clock.now();
    let cfg = BrokerConfig {
        heartbeat: hb(60_000, 3),
        max_services: 2,
        request_ttl: ms(1000),
        ..bcfg()
    };
    let mut b = Broker::new(t, cfg).unwrap();
    b.handle_message(t, plain(C1, b"a", b"x"));
    b.handle_message(t, plain(C1, b"b", b"x"));
    b.handle_message(t, plain(C1, b"c", b"x"));
    assert_eq!(
        drain(&mut b).1,
        vec![dropped(b"c", DropReason::TooManyServices)]
    );
    b.handle_message(t, ready(W1, b"c", 1));
    let (out, events) = drain(&mut b);
    assert_eq!(out, vec![Out::Disconnect(W1.to_vec())]);
    assert!(matches!(&events[..], [BEvent::Disconnected { .. }]));
    assert_eq!(b.workers(), 0);
    // Existing services still take requests.
    b.handle_message(t, plain(C1, b"a", b"y"));
    assert!(drain(&mut b).1.is_empty());
    // MMI queries create nothing.
    for i in 0..1000 {
        b.handle_message(t, plain(C1, b"mmi.service", format!("n{i}").as_bytes()));
    }
    assert_eq!(sent(&mut b).len(), 1000);
    assert_eq!(b.stats(t, None).len(), 2);

    // Once "a" and "b" expire they are forgotten and "c" fits.
    let t = clock.set(ms(1000));
    b.handle_timeout(t);
    assert_eq!(but_summaries(drain(&mut b).1).len(), 3);
    assert!(b.stats(t, None).is_empty());

    // A thousand distinct names, each asked once and left to expire: no TooManyServices.
    for i in 0..1000u64 {
        let t = clock.set(ms(1000 + 1000 * i));
        b.handle_timeout(t);
        b.handle_message(t, plain(C1, format!("name-{i}").as_bytes(), b"x"));
        let events = drain(&mut b).1;
        assert!(
            events.iter().all(|e| *e != dropped(format!("name-{i}").as_bytes(), DropReason::TooManyServices)),
            "name-{i}: {events:?}"
        );
        assert!(b.stats(t, None).len() <= 2);
    }
    let t = clock.set(ms(2_000_000));
    b.handle_timeout(t);
    assert!(b.stats(t, None).is_empty());

    // A service whose last worker leaves, with nothing queued, is forgotten too.
    b.handle_message(t, ready(W2, b"d", 1));
    b.handle_message(t, cmd(W2, Command::Disconnect));
    assert!(b.stats(t, None).is_empty());
}

// ======================================================================================
// 5. MMI
// ======================================================================================

/// `mmi.service` answers 200 exactly while a worker is registered (404 before and after
/// it expires); another `mmi.*` answers 501; plain bodies get `[client][""][MDPC01]
/// [mmi.x][code]`, requests with bosun metadata `[code][metadata]` with the same id and
/// attempt.
#[test]
fn mmi_service_and_unknown_mmi() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, plain(C1, b"mmi.service", ECHO));
    assert_eq!(
        b.poll_transmit(),
        Some(frames(&[C1, b"", b"MDPC01", b"mmi.service", b"404"]))
    );
    b.handle_message(t, ready(W1, ECHO, 1));
    drain(&mut b);
    b.handle_message(t, plain(C1, b"mmi.service", ECHO));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"mmi.service", b"200")]);
    b.handle_message(t, plain(C1, b"mmi.service", b"nothing"));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"mmi.service", b"404")]);
    // Busy still counts as registered.
    b.handle_message(t, plain(C2, ECHO, b"r"));
    assert_eq!(sent(&mut b), vec![Out::req(W1, C2, b"r")]);
    b.handle_message(t, plain(C1, b"mmi.service", ECHO));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"mmi.service", b"200")]);

    b.handle_message(t, plain(C1, b"mmi.nope", ECHO));
    assert_eq!(
        b.poll_transmit(),
        Some(frames(&[C1, b"", b"MDPC01", b"mmi.nope", b"501"]))
    );
    b.handle_message(t, request(C1, b"mmi.", vec![]));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"mmi.", b"501")]);

    // Metadata in, metadata out: `[code][metadata]` with the same id and attempt.
    let mut asked = envelope(7, ECHO);
    asked.meta.attempt = 3;
    b.handle_message(t, request(C1, b"mmi.service", asked.encode()));
    let out = sent(&mut b);
    let [Out::Reply {
        client,
        service,
        body,
    }] = &out[..]
    else {
        panic!("{out:?}");
    };
    assert_eq!(
        (client.as_slice(), service.as_slice()),
        (C1, &b"mmi.service"[..])
    );
    assert_eq!(body.len(), 2, "[code][metadata]: {body:?}");
    let answer = Envelope::decode(body.clone()).unwrap();
    assert_eq!(
        (answer.meta.id, answer.meta.attempt, answer.meta.status),
        (asked.id(), 3, Status::Ok)
    );
    assert_eq!(answer.payload, vec![b"200".to_vec()]);

    // The MdpClient understands it end to end.
    let mut client = MdpClient::new(t, Mode::Pipelined, Retry::default(), 1).unwrap();
    let id = client.send(t, b"mmi.nope", envelope(8, ECHO)).unwrap();
    let Some(CTx::Send(msg)) = client.poll_transmit() else {
        panic!("the request was not sent")
    };
    let mut routed = vec![C2.to_vec()];
    routed.extend(msg);
    b.handle_message(t, routed);
    let (_, to_client) = route(b.poll_transmit().unwrap());
    client.handle_frames(t, to_client);
    assert_eq!(
        client.poll_event(),
        Some(CEvent::Reply {
            id,
            service: b"mmi.nope".to_vec(),
            attempt: 1,
            answer: Answer::Ok(vec![b"501".to_vec()])
        })
    );

    // The worker expires: 404 again. MMI queries never made services of their own.
    let t = clock.set(ms(3000));
    b.handle_timeout(t);
    drain(&mut b);
    b.handle_message(t, plain(C1, b"mmi.service", ECHO));
    assert_eq!(sent(&mut b), vec![Out::rep(C1, b"mmi.service", b"404")]);
    assert!(b
        .stats(t, None)
        .iter()
        .all(|s| !s.service.starts_with(b"mmi.")));
}

/// Parses `key=value` fields of an `mmi.stats` line.
fn fields(line: &str) -> HashMap<String, String> {
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mmi_stats(b: &mut Broker, t: Instant, only: &[u8]) -> Vec<String> {
    let body = if only.is_empty() {
        vec![]
    } else {
        vec![only.to_vec()]
    };
    b.handle_message(t, request(C1, b"mmi.stats", body));
    let out = sent(b);
    let [Out::Reply { service, body, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(service, b"mmi.stats");
    assert_eq!(body.len(), 1);
    String::from_utf8(body[0].clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `mmi.stats` answers 200 and one line per service (or only the one asked for) with
/// idle/busy/queued and the rates.
#[test]
fn mmi_stats_lists_services() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, b"a", 1));
    b.handle_message(t, ready(W2, b"b", 1));
    for r in [b"1", b"2", b"3"] {
        b.handle_message(t, plain(C1, b"b", r));
    }
    drain(&mut b);
    let lines = mmi_stats(&mut b, t, b"");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "200");
    let a = fields(&lines[1]);
    let bb = fields(&lines[2]);
    assert_eq!(
        (
            a["service"].as_str(),
            a["idle"].as_str(),
            a["busy"].as_str(),
            a["queued"].as_str()
        ),
        ("a", "1", "0", "0")
    );
    assert_eq!(
        (
            bb["service"].as_str(),
            bb["idle"].as_str(),
            bb["busy"].as_str(),
            bb["queued"].as_str()
        ),
        ("b", "0", "1", "2")
    );
    for key in ["l_avg", "lambda", "mu", "rho", "wait_ms", "service_ms"] {
        assert!(bb[key].parse::<f64>().is_ok(), "{key} in {:?}", lines[2]);
    }
    let lines = mmi_stats(&mut b, t, b"b");
    assert_eq!(lines.len(), 2);
    assert_eq!(fields(&lines[1])["service"], "b");
    let lines = mmi_stats(&mut b, t, b"none");
    assert_eq!(lines, vec!["200".to_string()]);
}

/// Little's law from the broker's own statistics: a steady load in virtual time, bursts
/// of 3 requests every 400 ms to one worker that takes 100 ms each, so requests wait
/// 0, 100 and 200 ms: λ = 7.5/s, W = 0.1 s, L = λW = 0.75. Then seeded random loads
/// at ρ ≈ 0.7, where L ≈ λW must hold within 10 %. Catches: a queue length not updated on dispatch
/// or arrival, waits measured from the wrong instant, rates over the wrong span.
#[test]
fn mmi_stats_obey_littles_law() {
    // Deterministic bursts.
    let (l, lambda, w, lines) = steady_load(0, |tick, _| if tick % 4 == 0 { 3 } else { 0 }, |_| 1);
    assert!((lambda - 7.5).abs() < 0.8, "λ {lambda}");
    assert!((w - 0.1).abs() < 0.002, "W {w}");
    assert!((l - 0.75).abs() < 0.08, "L {l}");
    assert!(
        (l - lambda * w).abs() <= 0.05 * l,
        "L {l} vs λW {}",
        lambda * w
    );
    let f = fields(&lines[1]);
    assert_eq!(f["service"], "echo");
    let reported: f64 = f["l_avg"].parse().unwrap();
    assert!((reported - l).abs() < 0.001, "{lines:?}");
    let wait_ms: f64 = f["wait_ms"].parse().unwrap();
    assert!((wait_ms - 100.0).abs() < 2.0, "{lines:?}");
    let service_ms: f64 = f["service_ms"].parse().unwrap();
    assert!((service_ms - 100.0).abs() < 1.0, "{lines:?}");

    // Random arrivals (3.5/s) and service times (100 to 300 ms): ρ ≈ 0.7, stable.
    for seed in 0..8 {
        let (l, lambda, w, _) = steady_load(
            seed,
            |_, rng: &mut fastrand::Rng| usize::from(rng.f64() < 0.35),
            |rng| rng.u64(1..=3),
        );
        assert!(l > 0.1, "the load must queue: L {l}");
        assert!(
            (l - lambda * w).abs() <= 0.1 * l,
            "seed {seed}: L {l} vs λW {}",
            lambda * w
        );
    }
}

/// Drives one K=1 worker for 30 s of virtual time in 100 ms ticks; `arrivals(tick)`
/// requests arrive per tick and each takes `service()` ticks (`seed` drives both). Returns L, λ, W from
/// `Broker::stats` at the end, and the `mmi.stats` lines.
fn steady_load(
    seed: u64,
    mut arrivals: impl FnMut(u64, &mut fastrand::Rng) -> usize,
    mut service: impl FnMut(&mut fastrand::Rng) -> u64,
) -> (f64, f64, f64, Vec<String>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut clock = Clock::new();
    let cfg = BrokerConfig {
        heartbeat: hb(60_000, 3),
        ..bcfg()
    };
    let mut b = Broker::new(clock.now(), cfg).unwrap();
    b.handle_message(clock.now(), ready(W1, ECHO, 1));
    let mut serving: Option<(u64, Vec<u8>, Frames)> = None;
    let mut next = 0u64;
    for tick in 0..=300u64 {
        let t = clock.set(ms(tick * 100));
        b.handle_timeout(t);
        if let Some((done, client, body)) = serving.take() {
            if done <= tick {
                b.handle_message(t, reply(W1, &client, body));
            } else {
                serving = Some((done, client, body));
            }
        }
        if tick < 300 {
            for _ in 0..arrivals(tick, &mut rng) {
                next += 1;
                b.handle_message(t, plain(C1, ECHO, format!("r{next}").as_bytes()));
            }
        }
        for o in sent(&mut b) {
            if let Out::Request { client, body, .. } = o {
                assert!(serving.is_none(), "a K=1 worker got two requests");
                serving = Some((tick + service(&mut rng), client, body));
            }
        }
    }
    let t = clock.now();
    let stats = b.stats(t, Some(ECHO));
    let r = stats[0].rates;
    let lines = mmi_stats(&mut b, t, ECHO);
    (r.mean_queue, r.arrival_rate, r.mean_wait, lines)
}

// ======================================================================================
// 6. The capacity extension
// ======================================================================================

/// A worker READY with `capacity=3` holds up to 3 requests, never 4, and each reply lets
/// exactly one more in; a plain READY (or `capacity=1`) is K = 1.
#[test]
fn capacity_bounds_inflight_and_plain_ready_is_one() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let msg = ready(W3, ECHO, 3);
    assert_eq!(msg.last(), Some(&b"capacity=3".to_vec()));
    b.handle_message(t, msg);
    assert_eq!(
        drain(&mut b).1,
        vec![BEvent::WorkerReady {
            identity: W3.to_vec(),
            service: ECHO.to_vec(),
            capacity: 3
        }]
    );
    for i in 1..=6 {
        b.handle_message(t, plain(C1, ECHO, format!("r{i}").as_bytes()));
    }
    assert_eq!(
        requests(&sent(&mut b)),
        vec![req_of(W3, b"r1"), req_of(W3, b"r2"), req_of(W3, b"r3")]
    );
    assert_eq!((b.inflight(W3), b.queued(ECHO)), (Some(3), 3));
    for (done, next) in [(b"r1", b"r4"), (b"r2", b"r5"), (b"r3", b"r6")] {
        b.handle_message(t, reply(W3, C1, vec![done.to_vec()]));
        assert_eq!(requests(&sent(&mut b)), vec![req_of(W3, next)]);
        assert_eq!(b.inflight(W3), Some(3));
    }
    b.handle_message(t, reply(W3, C1, vec![b"r4".to_vec()]));
    assert!(requests(&sent(&mut b)).is_empty());
    assert_eq!(b.inflight(W3), Some(2));

    // Plain READY: one at a time.
    let msg = ready(W1, b"plain", 1);
    assert_eq!(msg.len(), 5, "no capacity frame for K = 1: {msg:?}");
    b.handle_message(t, msg);
    // An explicit capacity=1 is the same.
    let mut explicit = ready(W2, b"plain", 1);
    explicit.push(b"capacity=1".to_vec());
    b.handle_message(t, explicit);
    assert!(drain(&mut b)
        .1
        .iter()
        .all(|e| matches!(e, BEvent::WorkerReady { capacity: 1, .. })));
    for i in 1..=3 {
        b.handle_message(t, plain(C2, b"plain", format!("p{i}").as_bytes()));
    }
    assert_eq!(
        requests(&sent(&mut b)),
        vec![req_of(W1, b"p1"), req_of(W2, b"p2")]
    );
    assert_eq!((b.inflight(W1), b.inflight(W2)), (Some(1), Some(1)));
    assert_eq!(b.queued(b"plain"), 1);
}

/// Two requests from one client to a K = 2 worker, answered in the other order: the
/// reply completes the request with its envelope id, so the one re-queued when the
/// worker leaves is the unanswered one. The same with plain bodies and two clients.
/// Catches: matching on the client alone, or taking the first request in flight.
#[test]
fn capacity_replies_match_by_client_and_envelope_id() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let (e1, e2) = (envelope(1, b"one"), envelope(2, b"two"));
    b.handle_message(t, ready(W1, ECHO, 2));
    b.handle_message(t, request(C1, ECHO, e1.encode()));
    b.handle_message(t, request(C1, ECHO, e2.encode()));
    assert_eq!(requests(&sent(&mut b)).len(), 2);
    let t = clock.set(ms(10));
    b.handle_message(t, reply(W1, C1, e2.reply(vec![b"TWO".to_vec()]).encode()));
    assert_eq!(b.inflight(W1), Some(1));
    b.handle_message(t, cmd(W1, Command::Disconnect));
    assert_eq!(
        drain(&mut b).1.last(),
        Some(&gone(W1, GoneReason::Disconnected, 1))
    );
    b.handle_message(t, ready(W2, ECHO, 1));
    assert_eq!(
        sent(&mut b),
        vec![Out::Request {
            worker: W2.to_vec(),
            client: C1.to_vec(),
            body: e1.encode()
        }]
    );

    // Plain bodies: the client address decides.
    b.handle_message(t, ready(W3, b"p", 2));
    b.handle_message(t, plain(C1, b"p", b"from-c1"));
    b.handle_message(t, plain(C2, b"p", b"from-c2"));
    assert_eq!(requests(&sent(&mut b)).len(), 2);
    b.handle_message(t, reply(W3, C2, vec![b"answer".to_vec()]));
    assert_eq!(sent(&mut b), vec![Out::rep(C2, b"p", b"answer")]);
    b.handle_message(t, cmd(W3, Command::Disconnect));
    drain(&mut b);
    b.handle_message(t, ready(b"w4", b"p", 1));
    assert_eq!(sent(&mut b), vec![Out::req(b"w4", C1, b"from-c1")]);
}

/// A reply that answers nothing the worker holds (the late answer of a worker that was
/// expired and registered again, or one for another client) is passed on to its client
/// but completes nothing: the request the worker does hold stays in flight, and a K = 1
/// worker is not handed a second request. Catches: "one in flight, so this reply must be
/// for it", and a fallback from an unknown envelope id to any request of the client.
#[test]
fn capacity_a_reply_that_matches_nothing_completes_nothing() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, ECHO, 1));
    b.handle_message(t, request(C1, ECHO, envelope(2, b"new").encode()));
    b.handle_message(t, plain(C2, ECHO, b"next"));
    assert_eq!(requests(&sent(&mut b)).len(), 1);
    // Stale: same client, envelope id 1, which this worker does not hold.
    let stale = envelope(1, b"old").encode();
    b.handle_message(t, reply(W1, C1, stale.clone()));
    // Dropped, not forwarded: a plain client could take it for its current answer.
    assert_eq!(sent(&mut b), vec![]);
    assert_eq!((b.inflight(W1), b.queued(ECHO)), (Some(1), 1));
    // For another client altogether.
    b.handle_message(t, reply(W1, b"stranger", vec![b"x".to_vec()]));
    assert_eq!(requests(&sent(&mut b)), vec![]);
    assert_eq!((b.inflight(W1), b.queued(ECHO)), (Some(1), 1));
    // The real answer frees it.
    b.handle_message(t, reply(W1, C1, envelope(2, b"NEW").encode()));
    assert_eq!(requests(&sent(&mut b)), vec![req_of(W1, b"next")]);

    // K = 2: an unknown id from a client with two requests in flight completes neither.
    b.handle_message(t, ready(W2, b"k2", 2));
    b.handle_message(t, request(C1, b"k2", envelope(3, b"a").encode()));
    b.handle_message(t, request(C1, b"k2", envelope(4, b"b").encode()));
    b.handle_message(t, reply(W2, C1, envelope(5, b"?").encode()));
    sent(&mut b);
    assert_eq!(b.inflight(W2), Some(2));
}

/// When a K = 3 worker dies, its three requests go back to the front in their original
/// order, ahead of those that were waiting; also after a reply and a new dispatch
/// changed what it held. Catches: reversed re-queue, order lost by swap_remove.
#[test]
fn capacity_expiry_requeues_everything_in_order() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W3, ECHO, 3));
    for r in [b"r1", b"r2", b"r3", b"r4"] {
        b.handle_message(t, plain(C1, ECHO, r));
    }
    assert_eq!(requests(&sent(&mut b)).len(), 3);
    let t = clock.set(ms(3000));
    b.handle_timeout(t);
    assert_eq!(drain(&mut b).1, vec![gone(W3, GoneReason::Expired, 3)]);
    assert_eq!(b.queued(ECHO), 4);
    b.handle_message(t, ready(W1, ECHO, 1));
    let mut order = requests(&sent(&mut b));
    for i in 1..4 {
        b.handle_message(t, reply(W1, C1, vec![format!("r{i}").into_bytes()]));
        order.extend(requests(&sent(&mut b)));
    }
    assert_eq!(
        order,
        vec![
            req_of(W1, b"r1"),
            req_of(W1, b"r2"),
            req_of(W1, b"r3"),
            req_of(W1, b"r4")
        ]
    );

    // Hold r1..r3 (one client each, so replies match unambiguously), answer r1, take r4,
    // then leave: r2, r3, r4 come back in that order.
    let mut b = Broker::new(t, bcfg()).unwrap();
    let clients: [&[u8]; 5] = [b"k1", b"k2", b"k3", b"k4", b"k5"];
    b.handle_message(t, ready(W3, ECHO, 3));
    for (i, c) in clients.iter().enumerate().take(4) {
        b.handle_message(t, plain(c, ECHO, format!("r{}", i + 1).as_bytes()));
    }
    b.handle_message(t, reply(W3, b"k1", vec![b"a1".to_vec()]));
    assert_eq!(requests(&sent(&mut b)).last(), Some(&req_of(W3, b"r4")));
    b.handle_message(t, plain(b"k5", ECHO, b"r5"));
    b.handle_message(t, cmd(W3, Command::Disconnect));
    assert_eq!(drain(&mut b).1, vec![gone(W3, GoneReason::Disconnected, 3)]);
    b.handle_message(t, ready(W1, ECHO, 1));
    let mut order = requests(&sent(&mut b));
    for (c, r) in [(b"k2", b"r2"), (b"k3", b"r3"), (b"k4", b"r4")] {
        b.handle_message(t, reply(W1, c, vec![r.to_vec()]));
        order.extend(requests(&sent(&mut b)));
    }
    let bodies: Vec<Vec<u8>> = order.into_iter().map(|(_, body)| body).collect();
    assert_eq!(
        bodies,
        vec![
            b"r2".to_vec(),
            b"r3".to_vec(),
            b"r4".to_vec(),
            b"r5".to_vec()
        ]
    );
}

// ======================================================================================
// 7. MdWorker
// ======================================================================================

fn backoff(initial_ms: u64, max_ms: u64) -> Backoff {
    Backoff {
        initial: ms(initial_ms),
        max: ms(max_ms),
        jitter: 0.0,
    }
}

fn wdrain(w: &mut MdWorker) -> (Vec<WTx>, Vec<WEvent>) {
    let mut tx = Vec::new();
    while let Some(x) = w.poll_transmit() {
        tx.push(x);
    }
    let mut ev = Vec::new();
    while let Some(e) = w.poll_event() {
        ev.push(e);
    }
    (tx, ev)
}

fn to_worker(command: u8) -> Frames {
    frames(&[b"", b"MDPW01", &[command]])
}

fn w_ready(service: &[u8]) -> WTx {
    WTx::Send(frames(&[b"", b"MDPW01", &[0x01], service]))
}

fn w_heartbeat() -> WTx {
    WTx::Send(frames(&[b"", b"MDPW01", &[0x04]]))
}

/// READY on start (the capacity frame only when K > 1), then a HEARTBEAT every
/// interval exactly, while the broker is heard from.
#[test]
fn worker_sends_ready_then_heartbeats_every_interval() {
    let mut clock = Clock::new();
    let t0 = clock.now();
    let mut w = MdWorker::new(t0, ECHO, 1, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    assert_eq!(
        wdrain(&mut w),
        (vec![WTx::Connect, w_ready(ECHO)], vec![WEvent::Connected])
    );
    assert_eq!(w.poll_timeout(), Some(clock.at(ms(1000))));
    for k in 1..=10u64 {
        let t = clock.set(ms(1000 * k) - NS);
        w.handle_timeout(t);
        assert_eq!(wdrain(&mut w), (vec![], vec![]), "beat {k} early");
        let t = clock.set(ms(1000 * k));
        w.handle_timeout(t);
        assert_eq!(wdrain(&mut w), (vec![w_heartbeat()], vec![]), "beat {k}");
        let t = clock.set(ms(1000 * k + 500));
        w.handle_frames(t, to_worker(0x04));
        assert_eq!(wdrain(&mut w), (vec![], vec![]));
    }
    assert!(w.is_connected());

    let mut w = MdWorker::new(t0, ECHO, 4, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    assert_eq!(
        wdrain(&mut w).0,
        vec![
            WTx::Connect,
            WTx::Send(frames(&[b"", b"MDPW01", &[0x01], ECHO, b"capacity=4"]))
        ]
    );
}

/// What a worker sent and said, each with its offset from the origin in ms.
type WorkerLog = (Vec<(u64, WTx)>, Vec<(u64, WEvent)>);

/// Runs a worker alone from `t0` to `until`, feeding `inputs` (ms offset, frames) and
/// waking exactly at `poll_timeout`; logs every transmit and event with its offset.
fn run_worker(
    clock: &mut Clock,
    w: &mut MdWorker,
    mut inputs: Vec<(u64, Frames)>,
    until: u64,
) -> WorkerLog {
    inputs.sort_by_key(|i| i.0);
    let mut inputs = inputs.into_iter().peekable();
    let (mut txs, mut evs) = (Vec::new(), Vec::new());
    for _ in 0..10_000 {
        let next_input = inputs.peek().map(|i| clock.at(ms(i.0)));
        let Some(next) = [w.poll_timeout(), next_input].into_iter().flatten().min() else {
            break;
        };
        if next > clock.at(ms(until)) {
            break;
        }
        let t = clock.advance_to(next);
        while inputs.peek().is_some_and(|i| clock.at(ms(i.0)) <= t) {
            let (_, f) = inputs.next().unwrap();
            w.handle_frames(t, f);
        }
        w.handle_timeout(t);
        let at = (t - clock.t0()).as_millis() as u64;
        let (tx, ev) = wdrain(w);
        txs.extend(tx.into_iter().map(|x| (at, x)));
        evs.extend(ev.into_iter().map(|e| (at, e)));
    }
    (txs, evs)
}

/// What a worker did in a [`run_worker`] log, heartbeats left out: its disconnects,
/// connects and READYs.
fn lifecycle(txs: &[(u64, WTx)]) -> Vec<(u64, WTx)> {
    txs.iter()
        .filter(|(_, x)| *x != w_heartbeat())
        .cloned()
        .collect()
}

/// The lifecycle of an ECHO worker that loses the broker at each `lost` and is back (a
/// fresh socket, then READY) at the `back` paired with it.
fn reconnects(times: &[(u64, u64)]) -> Vec<(u64, WTx)> {
    let mut want = Vec::new();
    for &(lost, back) in times {
        want.push((lost, WTx::Disconnect));
        want.push((back, WTx::Connect));
        want.push((back, w_ready(ECHO)));
    }
    want
}

/// A silent broker is declared lost after exactly liveness × interval; the worker closes
/// its socket and reconnects (fresh socket, READY) after a backoff that doubles up to
/// its maximum; messages that reach it while it is disconnected are ignored; the first
/// message heard resets the backoff.
#[test]
fn worker_reconnects_with_capped_doubling_backoff() {
    let mut clock = Clock::new();
    let mut w = MdWorker::new(clock.now(), ECHO, 1, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    wdrain(&mut w);
    let inputs = vec![
        (3500, to_worker(0x04)),   // during the first backoff: ignored
        (23_500, to_worker(0x04)), // after the 5th connect: heard, backoff reset
    ];
    let (txs, evs) = run_worker(&mut clock, &mut w, inputs, 30_000);
    let want = reconnects(&[
        (3000, 4000),
        (7000, 9000),
        (12_000, 16_000),
        (19_000, 23_000),
        (26_500, 27_500),
    ]);
    assert_eq!(lifecycle(&txs), want);
    let lost: Vec<(u64, WEvent)> = evs
        .iter()
        .filter(|(_, e)| matches!(e, WEvent::BrokerLost { .. }))
        .cloned()
        .collect();
    let lost_want: Vec<(u64, WEvent)> = [
        (3000, 1, 1000),
        (7000, 2, 2000),
        (12_000, 3, 4000),
        (19_000, 4, 4000),
        (26_500, 1, 1000),
    ]
    .into_iter()
    .map(|(at, attempt, after)| {
        (
            at,
            WEvent::BrokerLost {
                attempt,
                after: ms(after),
            },
        )
    })
    .collect();
    assert_eq!(lost, lost_want);
    assert_eq!(
        evs.iter()
            .filter(|(_, e)| *e == WEvent::Connected)
            .map(|(at, _)| *at)
            .collect::<Vec<_>>(),
        vec![4000, 9000, 16_000, 23_000, 27_500]
    );
    // Heartbeats only while connected, every interval after each connect.
    let beats: Vec<u64> = txs
        .iter()
        .filter(|(_, x)| *x == w_heartbeat())
        .map(|(at, _)| *at)
        .collect();
    let mut beats_want = Vec::new();
    for (from, to) in [
        (0, 3000),
        (4000, 7000),
        (9000, 12_000),
        (16_000, 19_000),
        (23_000, 26_500),
        (27_500, 30_000),
    ] {
        beats_want.extend((1..).map(|k| from + 1000 * k).take_while(|at| *at < to));
    }
    assert_eq!(beats, beats_want);
}

/// The reconnect backoff starts over after ANY valid command from the broker, not only
/// a HEARTBEAT: here a REQUEST, and later a DISCONNECT, each heard after the backoff has
/// grown, make the next BrokerLost attempt 1 with the initial pause again. A malformed
/// message in between does not: the schedule carries on where it was. Catches: a reset
/// on HEARTBEAT alone, a reset on any input at all, a DISCONNECT that reconnects without
/// restarting the backoff.
#[test]
fn worker_backoff_restarts_after_any_valid_command() {
    let mut clock = Clock::new();
    let mut w = MdWorker::new(clock.now(), ECHO, 1, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    wdrain(&mut w);
    let inputs = vec![
        // After the 3rd connect (at 16 s): a REQUEST, the only thing the broker says.
        (17_000, frames(&[b"", b"MDPW01", &[0x02], C1, b"", b"x"])),
        // After the 6th connect (at 33 s): junk, which must not reset anything.
        (33_500, frames(&[b"", b"MDPW01", &[0x09]])),
        // After the 7th connect (at 40 s): DISCONNECT.
        (40_500, to_worker(0x05)),
    ];
    let (txs, evs) = run_worker(&mut clock, &mut w, inputs, 48_000);
    let mut want = reconnects(&[
        (3000, 4000),
        (7000, 9000),
        (12_000, 16_000),
        (20_000, 21_000),
        (24_000, 26_000),
        (29_000, 33_000),
        (36_000, 40_000),
        (40_500, 40_500),
        (43_500, 44_500),
    ]);
    want.push((47_500, WTx::Disconnect));
    assert_eq!(lifecycle(&txs), want);
    let lost: Vec<(u64, u32, Duration)> = evs
        .iter()
        .filter_map(|(at, e)| match e {
            WEvent::BrokerLost { attempt, after } => Some((*at, *attempt, *after)),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost,
        vec![
            (3000, 1, ms(1000)),
            (7000, 2, ms(2000)),
            (12_000, 3, ms(4000)),
            // The REQUEST at 17 s reset it.
            (20_000, 1, ms(1000)),
            (24_000, 2, ms(2000)),
            (29_000, 3, ms(4000)),
            // The junk at 33.5 s did not.
            (36_000, 4, ms(4000)),
            // The DISCONNECT at 40.5 s reset it.
            (43_500, 1, ms(1000)),
            (47_500, 2, ms(2000)),
        ]
    );
    let others: Vec<(u64, &str)> = evs
        .iter()
        .filter_map(|(at, e)| match e {
            WEvent::Request { .. } => Some((*at, "request")),
            WEvent::Malformed(_) => Some((*at, "malformed")),
            WEvent::DisconnectedByBroker => Some((*at, "disconnected")),
            _ => None,
        })
        .collect();
    assert_eq!(
        others,
        vec![
            (17_000, "request"),
            (33_500, "malformed"),
            (40_500, "disconnected")
        ]
    );
}

/// DISCONNECT from the broker: close, reconnect and READY at once, with fresh timers.
#[test]
fn worker_reconnects_at_once_on_disconnect_from_broker() {
    let mut clock = Clock::new();
    let mut w = MdWorker::new(clock.now(), ECHO, 2, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    wdrain(&mut w);
    let t = clock.set(ms(1500));
    w.handle_frames(t, to_worker(0x05));
    assert_eq!(
        wdrain(&mut w),
        (
            vec![
                WTx::Disconnect,
                WTx::Connect,
                WTx::Send(frames(&[b"", b"MDPW01", &[0x01], ECHO, b"capacity=2"]))
            ],
            vec![WEvent::DisconnectedByBroker]
        )
    );
    assert!(w.is_connected());
    assert_eq!(w.poll_timeout(), Some(clock.at(ms(2500))));
    let (txs, _) = run_worker(&mut clock, &mut w, vec![], 4500);
    assert_eq!(
        txs,
        vec![
            (2500, w_heartbeat()),
            (3500, w_heartbeat()),
            (4500, WTx::Disconnect)
        ]
    );
}

/// Any valid command from the broker (a REQUEST here) moves the liveness deadline;
/// malformed input does not, and is reported. Replies go out as REPLY.
#[test]
fn worker_liveness_is_refreshed_by_valid_commands_only() {
    let mut clock = Clock::new();
    let mut w = MdWorker::new(clock.now(), ECHO, 1, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    wdrain(&mut w);
    let t = clock.set(ms(2000));
    w.handle_frames(t, frames(&[b"", b"MDPW01", &[0x02], C1, b"", b"x"]));
    let ev = wdrain(&mut w).1;
    let [WEvent::Request { token, request }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        *request,
        Request {
            meta: None,
            service: Some(ECHO.to_vec()),
            payload: vec![b"x".to_vec()]
        }
    );
    assert_eq!(w.inflight(), 1);
    let t = clock.set(ms(2100));
    w.reply(t, *token, Ok(vec![b"y".to_vec()]));
    // A plain request (a foreign client's) gets a plain REPLY: no metadata frame.
    assert_eq!(
        wdrain(&mut w).0,
        vec![WTx::Send(frames(&[b"", b"MDPW01", &[0x03], C1, b"", b"y"]))]
    );
    assert_eq!(w.inflight(), 0);
    // Answered once: the same token again sends nothing.
    w.reply(t, *token, Ok(vec![b"again".to_vec()]));
    assert_eq!(wdrain(&mut w), (vec![], vec![]));

    let t = clock.set(ms(4500));
    let junk = [
        vec![],
        frames(&[b""]),
        frames(&[b"x", b"MDPW01", &[0x04]]),
        frames(&[b"", b"MDPC01", &[0x04]]),
        frames(&[b"", b"MDPW01", &[0x09]]),
        frames(&[b"", b"MDPW01", b"0x04"]),
        frames(&[b"", b"MDPW01", &[0x04], b"extra"]),
        frames(&[b"", b"MDPW01", &[0x01], ECHO]),
        frames(&[b"", b"MDPW01", &[0x02], C1]),
    ];
    let n = junk.len();
    for f in junk {
        w.handle_frames(t, f);
    }
    let (tx, ev) = wdrain(&mut w);
    assert!(tx.is_empty());
    assert_eq!(ev.len(), n);
    assert!(
        ev.iter().all(|e| matches!(e, WEvent::Malformed(_))),
        "{ev:?}"
    );

    let t = clock.set(ms(5000) - NS);
    w.handle_timeout(t);
    assert!(!wdrain(&mut w).0.contains(&WTx::Disconnect));
    assert!(w.is_connected());
    let t = clock.set(ms(5000));
    w.handle_timeout(t);
    assert!(wdrain(&mut w).0.contains(&WTx::Disconnect));
    assert!(!w.is_connected());
}

/// `disconnect()` says DISCONNECT, closes the socket, and stops every timer.
#[test]
fn worker_disconnect_says_goodbye_and_goes_quiet() {
    let mut clock = Clock::new();
    let mut w = MdWorker::new(clock.now(), ECHO, 1, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    wdrain(&mut w);
    // A request is still being handled when the worker says goodbye.
    w.handle_frames(
        clock.now(),
        frames(&[b"", b"MDPW01", &[0x02], C1, b"", b"x"]),
    );
    let ev = wdrain(&mut w).1;
    let [WEvent::Request { token, .. }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    let token = *token;
    w.disconnect();
    assert_eq!(
        wdrain(&mut w),
        (
            vec![
                WTx::Send(frames(&[b"", b"MDPW01", &[0x05]])),
                WTx::Disconnect
            ],
            vec![]
        )
    );
    assert!(!w.is_connected());
    assert_eq!(w.poll_timeout(), None);
    let t = clock.set(ms(60_000));
    w.handle_timeout(t);
    w.handle_frames(t, to_worker(0x04));
    // Its late answer goes nowhere.
    w.reply(t, token, Ok(vec![b"late".to_vec()]));
    assert_eq!(wdrain(&mut w), (vec![], vec![]));
}

// ======================================================================================
// 8. MdpClient
// ======================================================================================

/// A reply as the client's DEALER receives it: `[""][MDPC01][service][frames...]`.
fn client_reply(service: &[u8], e: &Envelope) -> Frames {
    mdp::client_request(service, e.encode())
}

/// A reply of `frames` as they are, with or without metadata.
fn client_reply_frames(service: &[u8], frames: Frames) -> Frames {
    mdp::client_request(service, frames)
}

/// The client's retry policy where attempts are counted: 3 attempts of 1 s, pauses of
/// 100 ms doubling up to 1 s, no jitter.
fn retry_3x1s() -> Retry {
    Retry {
        timeout: ms(1000),
        retries: 3,
        backoff: backoff(100, 1000),
        deadline: None,
    }
}

/// Drains the client: what it asked of the socket, and what it said.
fn cdrain(c: &mut MdpClient) -> (Vec<CTx>, Vec<CEvent>) {
    let tx = std::iter::from_fn(|| c.poll_transmit()).collect();
    let ev = std::iter::from_fn(|| c.poll_event()).collect();
    (tx, ev)
}

/// What [`cdrain`] gives after ECHO's reply to attempt `attempt` of request `id`:
/// nothing sent, one Reply with `answer`.
fn replied_by_echo(id: Uuid, attempt: u32, answer: Answer) -> (Vec<CTx>, Vec<CEvent>) {
    (
        vec![],
        vec![CEvent::Reply {
            id,
            service: ECHO.to_vec(),
            attempt,
            answer,
        }],
    )
}

/// What [`cdrain`] gives after a reply from ECHO that the client cannot match: nothing
/// sent, one Unmatched.
fn unmatched_echo() -> (Vec<CTx>, Vec<CEvent>) {
    (
        vec![],
        vec![CEvent::Unmatched {
            service: ECHO.to_vec(),
        }],
    )
}

/// The request in a client transmit: its service and envelope.
fn sent_request(x: &CTx) -> (Vec<u8>, Envelope) {
    let CTx::Send(m) = x else {
        panic!("not a send: {x:?}")
    };
    let [empty, header, service, body @ ..] = &m[..] else {
        panic!("{m:?}")
    };
    assert!(empty.is_empty());
    assert_eq!(header.as_slice(), mdp::CLIENT);
    (service.clone(), Envelope::decode(body.to_vec()).unwrap())
}

/// Five requests in flight at once, each on its own clock: exact resend times
/// (timeout 1 s, backoff 100 ms doubling, no jitter), a Retrying event at each timeout,
/// replies in any order matched by id, a late answer to an earlier attempt of an
/// answered request is a Duplicate, a request with no answer gives up after exactly 3
/// attempts with its payload handed back, and an answer after that is a Duplicate too,
/// never a Reply.
#[test]
fn pipelined_client_retries_each_request_on_its_own_schedule() {
    let mut clock = Clock::new();
    let retry = retry_3x1s();
    let mut c = MdpClient::new(clock.now(), Mode::Pipelined, retry, 1).unwrap();
    let names = ["a", "b", "c", "d", "e"];
    let send_at = [0u64, 50, 100, 200, 201];
    // (when, request, attempt answered)
    let answers = [
        (300u64, "e", 1u32),
        (400, "d", 1),
        (500, "c", 1),
        (1200, "b", 1),
        (1300, "b", 2),
        (3400, "a", 3),
    ];
    let mut ids: HashMap<&str, Uuid> = HashMap::new();
    let mut sent_log: Vec<(u64, &str, u32)> = Vec::new();
    let mut events: Vec<(u64, CEvent)> = Vec::new();
    let name_of = |ids: &HashMap<&str, Uuid>, id: Uuid| -> &'static str {
        names
            .iter()
            .find(|n| ids.get(*n) == Some(&id))
            .copied()
            .unwrap_or("?")
    };
    let mut script: Vec<(u64, bool, &str, u32)> = send_at
        .iter()
        .zip(names)
        .map(|(at, n)| (*at, true, n, 1))
        .chain(answers.iter().map(|(at, n, a)| (*at, false, *n, *a)))
        .collect();
    script.sort_by_key(|s| s.0);
    let mut script = script.into_iter().peekable();
    for _ in 0..1000 {
        let next_script = script.peek().map(|s| clock.at(ms(s.0)));
        let Some(next) = [c.poll_timeout(), next_script].into_iter().flatten().min() else {
            break;
        };
        let t = clock.advance_to(next);
        let at = (t - clock.t0()).as_millis() as u64;
        while script.peek().is_some_and(|s| clock.at(ms(s.0)) <= t) {
            let (_, is_send, n, attempt) = script.next().unwrap();
            let n: &'static str = names.iter().find(|x| **x == n).unwrap();
            if is_send {
                let id = c
                    .send(t, ECHO, envelope(1000 + at as u128, n.as_bytes()))
                    .unwrap();
                ids.insert(n, id);
            } else {
                let mut e = envelope(0, format!("re:{n}").as_bytes());
                e.meta.id = ids[n];
                e.meta.attempt = attempt;
                c.handle_frames(t, client_reply(ECHO, &e));
            }
        }
        c.handle_timeout(t);
        while let Some(x) = c.poll_transmit() {
            let (service, e) = sent_request(&x);
            assert_eq!(service, ECHO);
            let n = name_of(&ids, e.id());
            assert_eq!(
                e.payload,
                vec![n.as_bytes().to_vec()],
                "the same payload on every attempt"
            );
            sent_log.push((at, n, e.meta.attempt));
        }
        while let Some(e) = c.poll_event() {
            events.push((at, e));
        }
    }
    assert_eq!(
        sent_log,
        vec![
            (0, "a", 1),
            (50, "b", 1),
            (100, "c", 1),
            (200, "d", 1),
            (201, "e", 1),
            (1100, "a", 2),
            (1150, "b", 2),
            (2300, "a", 3),
        ]
    );
    let reply = |n: &str| CEvent::Reply {
        id: ids[n],
        service: ECHO.to_vec(),
        attempt: 1,
        answer: Answer::Ok(vec![format!("re:{n}").into_bytes()]),
    };
    let retrying = |n: &str, attempt: u32, after: u64| CEvent::Retrying {
        id: ids[n],
        attempt,
        after: ms(after),
    };
    assert_eq!(
        events,
        vec![
            (300, reply("e")),
            (400, reply("d")),
            (500, reply("c")),
            (1000, retrying("a", 1, 100)),
            (1050, retrying("b", 1, 100)),
            (1200, reply("b")),
            (1300, CEvent::Duplicate { id: ids["b"] }),
            (2100, retrying("a", 2, 200)),
            (
                3300,
                CEvent::GaveUp {
                    id: ids["a"],
                    attempts: 3,
                    payload: vec![b"a".to_vec()]
                }
            ),
            (3400, CEvent::Duplicate { id: ids["a"] }),
        ]
    );
    assert_eq!(c.outstanding(), 0);
    assert_eq!(c.poll_timeout(), None);
}

/// What is not a Majordomo reply, or carries a metadata frame that does not decode, is
/// reported as malformed and changes nothing; in pipelined mode a reply without
/// metadata (the old one-frame envelope included, which is not metadata now) cannot be
/// matched and is reported as Unmatched, changing nothing either; the reply cancels the
/// request's timer.
#[test]
fn pipelined_client_reports_malformed_and_unmatched_replies() {
    let clock = Clock::new();
    let t = clock.now();
    let mut c = MdpClient::new(t, Mode::Pipelined, Retry::default(), 1).unwrap();
    let id = c.send(t, ECHO, envelope(1, b"q")).unwrap();
    let _ = c.poll_transmit();
    let good = envelope(1, b"a").encode();
    let meta = good.last().unwrap().clone();
    let with_last = |f: Vec<u8>| client_reply_frames(ECHO, vec![b"a".to_vec(), f]);
    let mut bad_status = meta.clone();
    bad_status[5] = 9;
    let mut version_zero = meta.clone();
    version_zero[4] = 0;
    let mut short_fixed = meta.clone();
    short_fixed[7] = 10;
    let mut huge_header = meta[..44].to_vec();
    huge_header.extend_from_slice(&[0, 1, 0, 1, b'k', 0xff, 0xff, 0xff, 0xff]);
    for f in [
        vec![],
        frames(&[b"", b"MDPC01"]),
        frames(&[b"", b"MDPW01", ECHO, b"x"]),
        frames(&[b"x", b"MDPC01", ECHO, b"x"]),
        with_last(MAGIC.to_vec()),
        with_last(meta[..meta.len() - 1].to_vec()),
        with_last(bad_status),
        with_last(version_zero),
        with_last(short_fixed),
        with_last(huge_header),
    ] {
        c.handle_frames(t, f.clone());
        let ev = cdrain(&mut c);
        assert!(
            matches!(&ev.1[..], [CEvent::Malformed(_)]) && ev.0.is_empty(),
            "{f:?}: {ev:?}"
        );
    }
    assert_eq!(c.outstanding(), 1);
    for f in [
        frames(&[b"", b"MDPC01", ECHO]),
        frames(&[b"", b"MDPC01", ECHO, b"plain"]),
        // The old format's one-frame envelope is plain payload now.
        frames(&[b"", b"MDPC01", ECHO, b"BSN1\xc1"]),
        // Metadata that is not the last frame is payload.
        client_reply_frames(ECHO, [good.clone(), vec![b"extra".to_vec()]].concat()),
    ] {
        c.handle_frames(t, f.clone());
        assert_eq!(cdrain(&mut c), unmatched_echo(), "{f:?}");
    }
    assert_eq!(c.outstanding(), 1);
    c.handle_frames(t, client_reply(ECHO, &envelope(1, b"a")));
    assert_eq!(
        c.poll_event(),
        Some(CEvent::Reply {
            id,
            service: ECHO.to_vec(),
            attempt: 1,
            answer: Answer::Ok(vec![b"a".to_vec()])
        })
    );
    // Its timer went with it: nothing out, nothing to wake up for.
    assert_eq!((c.outstanding(), c.poll_timeout()), (0, None));
}

/// Blocking mode: one request at a time (a second send while one is outstanding is
/// refused with Busy), every timed-out attempt makes the driver re-make its socket
/// (Reset, before the Retrying or GaveUp), and a plain reply (from a foreign broker, no
/// metadata) answers the one outstanding request while its attempt waits, never during
/// the backoff. In pipelined mode the same plain reply is Unmatched.
#[test]
fn blocking_client_resets_after_a_timeout_and_takes_plain_replies() {
    let mut clock = Clock::new();
    let retry = retry_3x1s();
    let mut c = MdpClient::new(clock.now(), Mode::Blocking, retry, 1).unwrap();
    let t = clock.now();
    let id = c.send(t, ECHO, envelope(1, b"q")).unwrap();
    assert!(matches!(
        c.send(t, ECHO, envelope(2, b"other")),
        Err(ClientError::Busy)
    ));
    let (tx, ev) = cdrain(&mut c);
    assert_eq!(tx.len(), 1, "only the first request went out: {tx:?}");
    let (service, e) = sent_request(&tx[0]);
    assert_eq!(
        (
            service.as_slice(),
            e.id(),
            e.meta.attempt,
            e.payload.clone()
        ),
        (ECHO, id, 1, vec![b"q".to_vec()])
    );
    assert!(ev.is_empty(), "{ev:?}");

    // The attempt times out at 1 s, not before: Reset, then Retrying.
    let t = clock.set(ms(1000) - NS);
    c.handle_timeout(t);
    assert_eq!(cdrain(&mut c), (vec![], vec![]));
    let t = clock.set(ms(1000));
    c.handle_timeout(t);
    assert_eq!(
        cdrain(&mut c),
        (
            vec![CTx::Reset],
            vec![CEvent::Retrying {
                id,
                attempt: 1,
                after: ms(100)
            }]
        )
    );
    // Still one at a time during the backoff.
    assert!(matches!(
        c.send(t, ECHO, envelope(3, b"other")),
        Err(ClientError::Busy)
    ));
    // A plain reply during the backoff answers nothing: no attempt is waiting.
    c.handle_frames(t, frames(&[b"", b"MDPC01", ECHO, b"early"]));
    assert_eq!(cdrain(&mut c), unmatched_echo());
    assert_eq!(c.outstanding(), 1);
    let t = clock.set(ms(1100));
    c.handle_timeout(t);
    let (tx, ev) = cdrain(&mut c);
    assert!(ev.is_empty(), "{ev:?}");
    let [x] = &tx[..] else { panic!("{tx:?}") };
    let (_, e) = sent_request(x);
    assert_eq!((e.id(), e.meta.attempt), (id, 2));

    // A plain two-frame reply (no metadata) answers the outstanding request.
    let t = clock.set(ms(1200));
    c.handle_frames(t, frames(&[b"", b"MDPC01", ECHO, b"A", b"B"]));
    assert_eq!(
        cdrain(&mut c),
        replied_by_echo(id, 2, Answer::Ok(vec![b"A".to_vec(), b"B".to_vec()]))
    );
    assert_eq!((c.outstanding(), c.poll_timeout()), (0, None));
    // Once answered, a second plain reply has nothing to answer.
    c.handle_frames(t, frames(&[b"", b"MDPC01", ECHO, b"again"]));
    assert!(matches!(&cdrain(&mut c).1[..], [CEvent::Unmatched { .. }]));

    // Free again: the next send goes out; with no answer it gives up after 3 attempts,
    // each timeout resetting the socket, the last one too.
    let id2 = c.send(t, ECHO, envelope(4, b"r")).unwrap();
    let mut resets = 0;
    let mut sends = 0;
    let mut gave_up = None;
    for _ in 0..100 {
        let (tx, ev) = cdrain(&mut c);
        for x in &tx {
            match x {
                CTx::Reset => resets += 1,
                CTx::Send(_) => sends += 1,
            }
        }
        if let Some(g) = ev.into_iter().find(|e| matches!(e, CEvent::GaveUp { .. })) {
            gave_up = Some(g);
            break;
        }
        let Some(next) = c.poll_timeout() else { break };
        let t = clock.advance_to(next);
        c.handle_timeout(t);
    }
    assert_eq!(
        gave_up,
        Some(CEvent::GaveUp {
            id: id2,
            attempts: 3,
            payload: vec![b"r".to_vec()]
        })
    );
    assert_eq!((sends, resets), (3, 3));
    // A bosun reply for an id no longer outstanding is a duplicate, in blocking mode too.
    c.handle_frames(clock.now(), client_reply(ECHO, &envelope(4, b"late")));
    assert_eq!(cdrain(&mut c).1, vec![CEvent::Duplicate { id: id2 }]);

    // Pipelined: the same plain reply to a waiting request cannot be matched.
    let t = clock.now();
    let mut p = MdpClient::new(t, Mode::Pipelined, retry, 1).unwrap();
    let pid = p.send(t, ECHO, envelope(5, b"q")).unwrap();
    // Pipelined takes more than one at a time.
    p.send(t, ECHO, envelope(6, b"q2")).unwrap();
    let _ = cdrain(&mut p);
    p.handle_frames(t, frames(&[b"", b"MDPC01", ECHO, b"A"]));
    assert_eq!(cdrain(&mut p), unmatched_echo());
    assert_eq!(p.outstanding(), 2);
    p.handle_frames(t, client_reply(ECHO, &envelope(5, b"A")));
    assert!(matches!(&cdrain(&mut p).1[..], [CEvent::Reply { id, .. }] if *id == pid));
    assert_eq!(p.outstanding(), 1);
}

// ======================================================================================
// 8b. bosun's metadata through the broker
// ======================================================================================

/// Hands `msg` (as a DEALER sends it) to the broker as its ROUTER receives it from
/// `identity`.
fn from(identity: &[u8], msg: Frames) -> Frames {
    let mut out = vec![identity.to_vec()];
    out.extend(msg);
    out
}

/// A foreign worker (one that knows nothing of bosun's metadata) sees the request's
/// metadata as one more trailing frame and answers with a plain payload; the broker
/// appends the metadata of the request it answers (same id, attempt and creation time,
/// status Ok), so a pipelined MdpClient, which matches replies by id, takes it, and a
/// two-frame payload comes back as two frames. A foreign client's plain request gets
/// the plain reply, nothing appended; a bosun worker's reply is forwarded as it is.
/// Catches: a plain reply forwarded bare (the pipelined client could never match it),
/// metadata of the wrong attempt, payload frames joined.
#[test]
fn broker_gives_a_foreign_workers_plain_reply_the_requests_metadata() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, ECHO, 1));
    let retry = retry_3x1s();
    let mut c = MdpClient::new(t, Mode::Pipelined, retry, 1).unwrap();
    let e = Envelope::new(Uuid::from_u128(77), 5, frames(&[b"p1", b"p2"]));
    let id = c.send(t, ECHO, e).unwrap();
    // The first attempt is lost on the way; the second reaches the broker.
    assert_eq!(cdrain(&mut c).0.len(), 1);
    let t = clock.set(ms(1000));
    c.handle_timeout(t);
    let t = clock.set(ms(1100));
    c.handle_timeout(t);
    let (tx, _) = cdrain(&mut c);
    let [CTx::Send(msg)] = &tx[..] else {
        panic!("{tx:?}")
    };
    b.handle_message(t, from(C1, msg.clone()));
    let out = sent(&mut b);
    let [Out::Request {
        worker,
        client,
        body,
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((worker.as_slice(), client.as_slice()), (W1, C1));
    // What the foreign worker sees: the payload frames as sent, then one more frame.
    assert_eq!(body.len(), 3, "{body:?}");
    assert_eq!(&body[..2], &frames(&[b"p1", b"p2"])[..]);
    let request_meta = Meta::decode(&body[2]).unwrap();
    assert_eq!(
        (
            request_meta.id,
            request_meta.attempt,
            request_meta.created_at_ms
        ),
        (id, 2, 5)
    );

    // It answers with two plain frames; the broker appends the request's metadata.
    let t = clock.set(ms(1150));
    b.handle_message(t, reply(W1, C1, frames(&[b"A", b"B"])));
    let to_client = b.poll_transmit().expect("the reply is forwarded");
    assert_eq!(b.poll_transmit(), None);
    let mut want = frames(&[C1, b"", b"MDPC01", ECHO, b"A", b"B"]);
    want.push(request_meta.reply(Status::Ok).encode());
    assert_eq!(to_client, want);
    let appended = Meta::decode(to_client.last().unwrap()).unwrap();
    assert_eq!(
        (appended.id, appended.attempt, appended.status),
        (id, 2, Status::Ok)
    );
    assert_eq!(
        b.inflight(W1),
        Some(0),
        "the plain reply completed the request"
    );
    let (_, to_client) = route(to_client);
    c.handle_frames(t, to_client);
    assert_eq!(
        cdrain(&mut c),
        replied_by_echo(id, 2, Answer::Ok(frames(&[b"A", b"B"])))
    );
    assert_eq!((c.outstanding(), c.poll_timeout()), (0, None));

    // A foreign client's plain request: the plain reply goes back as it is.
    b.handle_message(t, request(C2, ECHO, frames(&[b"x", b"y"])));
    assert_eq!(
        sent(&mut b),
        vec![Out::Request {
            worker: W1.to_vec(),
            client: C2.to_vec(),
            body: frames(&[b"x", b"y"])
        }]
    );
    b.handle_message(t, reply(W1, C2, frames(&[b"X", b"Y"])));
    assert_eq!(
        b.poll_transmit(),
        Some(frames(&[C2, b"", b"MDPC01", ECHO, b"X", b"Y"]))
    );

    // A bosun worker's reply carries its own metadata: forwarded unchanged, no second
    // metadata frame.
    let e = envelope(78, b"q");
    b.handle_message(t, request(C1, ECHO, e.encode()));
    sent(&mut b);
    let answer = e.reply(frames(&[b"Q"])).encode();
    b.handle_message(t, reply(W1, C1, answer.clone()));
    let mut want = frames(&[C1, b"", b"MDPC01", ECHO]);
    want.extend(answer);
    assert_eq!(b.poll_transmit(), Some(want));
}

/// A handler that failed: the worker core answers a bosun client with the message as
/// the one payload frame and metadata of status Error (the request's id and attempt);
/// the broker forwards it, and the MdpClient reads Answer::Failed with that message.
/// A foreign client gets one plain frame, `error: <message>`. The worker goes on: the
/// next request is served.
#[test]
fn a_failed_handler_reaches_the_client_as_a_failed_answer() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let mut w = MdWorker::new(t, ECHO, 1, hb(1000, 3), backoff(1000, 4000), 7).unwrap();
    // Worker -> broker: every Send, as W1.
    let pump_worker = |w: &mut MdWorker, b: &mut Broker| {
        for x in wdrain(w).0 {
            if let WTx::Send(f) = x {
                b.handle_message(t, from(W1, f));
            }
        }
    };
    pump_worker(&mut w, &mut b);
    assert_eq!(b.workers(), 1);
    drain(&mut b);

    let mut c = MdpClient::new(t, Mode::Pipelined, Retry::default(), 1).unwrap();
    let id = c.send(t, ECHO, envelope(9, b"q")).unwrap();
    let (tx, _) = cdrain(&mut c);
    let [CTx::Send(msg)] = &tx[..] else {
        panic!("{tx:?}")
    };
    b.handle_message(t, from(C1, msg.clone()));
    let (to, rest) = route(b.poll_transmit().unwrap());
    assert_eq!(to, W1);
    w.handle_frames(t, rest);
    let ev = wdrain(&mut w).1;
    let [WEvent::Request { token, request }] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (request.id(), request.attempt(), request.payload.clone()),
        (Some(id), 1, frames(&[b"q"]))
    );
    w.reply(t, *token, Err(HandlerError::new("disk on fire")));
    let tx = wdrain(&mut w).0;
    let [WTx::Send(f)] = &tx[..] else {
        panic!("{tx:?}")
    };
    let mut want = frames(&[b"", b"MDPW01", &[0x03], C1, b"", b"disk on fire"]);
    want.push(request.meta.as_ref().unwrap().reply(Status::Error).encode());
    assert_eq!(*f, want);
    let meta = Meta::decode(f.last().unwrap()).unwrap();
    assert_eq!((meta.id, meta.attempt, meta.status), (id, 1, Status::Error));
    b.handle_message(t, from(W1, f.clone()));
    let (to, rest) = route(b.poll_transmit().unwrap());
    assert_eq!(to, C1);
    c.handle_frames(t, rest);
    assert_eq!(
        cdrain(&mut c),
        replied_by_echo(
            id,
            1,
            Answer::Failed {
                status: Status::Error,
                message: "disk on fire".into()
            }
        )
    );
    assert_eq!(c.outstanding(), 0);

    // A foreign client: the failure as one plain frame.
    b.handle_message(t, plain(C2, ECHO, b"q"));
    let (_, rest) = route(b.poll_transmit().unwrap());
    w.handle_frames(t, rest);
    let ev = wdrain(&mut w).1;
    let [WEvent::Request { token, request }] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(request.meta, None);
    w.reply(t, *token, Err(HandlerError::new("disk on fire")));
    pump_worker(&mut w, &mut b);
    assert_eq!(
        b.poll_transmit(),
        Some(frames(&[C2, b"", b"MDPC01", ECHO, b"error: disk on fire"]))
    );
    assert_eq!(b.inflight(W1), Some(0));
}

// ======================================================================================
// 8c. Configuration
// ======================================================================================

/// Every core constructor refuses a setting that would stop all traffic, spin, or
/// overflow the clock, and names the field: the broker's max_queue, max_services and
/// stats_window of 0, a zero heartbeat, a request_ttl of zero or of u64::MAX seconds; the
/// worker's capacity outside 1..=1000, an `mmi.` service, a zero reconnect backoff; the
/// client's zero timeout, zero attempts and overflowing timeout.
#[test]
fn constructors_reject_settings_that_stop_traffic_or_overflow() {
    let t = Clock::new().now();
    let broker = |cfg: BrokerConfig| rejected(Broker::new(t, cfg));
    assert_eq!(broker(bcfg()), "accepted");
    assert_eq!(broker(BrokerConfig::default()), "accepted");
    let cases = [
        (
            BrokerConfig {
                max_queue: 0,
                ..bcfg()
            },
            "max_queue",
        ),
        (
            BrokerConfig {
                max_services: 0,
                ..bcfg()
            },
            "max_services",
        ),
        (
            BrokerConfig {
                stats_window: Duration::ZERO,
                ..bcfg()
            },
            "stats_window",
        ),
        (
            BrokerConfig {
                stats_window: Duration::from_secs(u64::MAX),
                ..bcfg()
            },
            "stats_window",
        ),
        (
            BrokerConfig {
                heartbeat: hb(0, 3),
                ..bcfg()
            },
            "heartbeat.interval",
        ),
        (
            BrokerConfig {
                heartbeat: hb(1000, 0),
                ..bcfg()
            },
            "heartbeat.liveness",
        ),
        (
            BrokerConfig {
                heartbeat: Heartbeat {
                    interval: Duration::from_secs(u64::MAX),
                    liveness: 3,
                },
                ..bcfg()
            },
            "heartbeat.interval",
        ),
        (
            BrokerConfig {
                request_ttl: Duration::from_secs(u64::MAX),
                ..bcfg()
            },
            "request_ttl",
        ),
        (
            BrokerConfig {
                request_ttl: Duration::ZERO,
                ..bcfg()
            },
            "request_ttl",
        ),
        (
            BrokerConfig {
                max_deliveries: 0,
                ..bcfg()
            },
            "max_deliveries",
        ),
    ];
    for (cfg, field) in cases {
        assert_eq!(broker(cfg), field, "{cfg:?}");
    }

    let worker = |service: &[u8], capacity: u32, heartbeat: Heartbeat, reconnect: Backoff| {
        rejected(MdWorker::new(t, service, capacity, heartbeat, reconnect, 1))
    };
    let (h, r) = (hb(1000, 3), backoff(1000, 4000));
    assert_eq!(worker(ECHO, 1, h, r), "accepted");
    assert_eq!(worker(ECHO, 1000, h, r), "accepted");
    assert_eq!(worker(ECHO, 0, h, r), "capacity");
    assert_eq!(worker(ECHO, 1001, h, r), "capacity");
    assert_eq!(worker(b"mmi.echo", 1, h, r), "service");
    assert_eq!(worker(ECHO, 1, hb(0, 3), r), "heartbeat.interval");
    assert_eq!(worker(ECHO, 1, hb(1000, 0), r), "heartbeat.liveness");
    assert_eq!(worker(ECHO, 1, h, backoff(0, 4000)), "reconnect");
    let forever = Backoff {
        initial: ms(1000),
        max: Duration::from_secs(u64::MAX),
        jitter: 0.0,
    };
    assert_eq!(worker(ECHO, 1, h, forever), "reconnect");

    let client = |mode: Mode, retry: Retry| rejected(MdpClient::new(t, mode, retry, 1));
    let ok = Retry::default();
    for mode in [Mode::Blocking, Mode::Pipelined] {
        assert_eq!(client(mode, ok), "accepted");
        let zero = Retry {
            timeout: Duration::ZERO,
            ..ok
        };
        assert_eq!(client(mode, zero), "retry.timeout");
        let none = Retry { retries: 0, ..ok };
        assert_eq!(client(mode, none), "retry.retries");
        let huge = Retry {
            timeout: Duration::from_secs(u64::MAX),
            ..ok
        };
        assert_eq!(client(mode, huge), "retry.timeout");
        let no_pause = Retry {
            backoff: backoff(0, 1000),
            ..ok
        };
        assert_eq!(client(mode, no_pause), "retry.backoff");
    }
}

// ======================================================================================
// 9. Property tests over random input
// ======================================================================================

/// Identities that send (as workers, clients or junk) in the property tests.
const IDS: [&[u8]; 6] = [b"w0", b"w1", b"w2", b"w3", b"c0", b"c1"];
/// Services asked for and registered; "" and the `mmi.` names are in on purpose.
const SERVICES: [&[u8]; 6] = [
    b"echo",
    b"slow",
    b"",
    b"mmi.service",
    b"mmi.stats",
    b"mmi.x",
];

#[derive(Debug, Clone)]
enum CapFrame {
    None,
    Valid(u32),
    Junk(Vec<u8>),
    Text(String),
}

#[derive(Debug, Clone)]
enum Op {
    /// Let time pass (ms).
    Advance(u64),
    /// Any frames at all, from one of `IDS`.
    Raw(usize, Frames),
    /// `[""][MDPW01][byte][args...]`: every command byte, any arguments.
    Command(usize, u8, Frames),
    /// READY for a service, with or without a (valid or junk) capacity frame.
    Ready(usize, usize, CapFrame),
    /// A client request (envelope or plain body, always unique).
    Request(usize, usize, bool),
    /// A client request with an envelope whose deadline is this many ms from now
    /// (0: already passed).
    Deadline(usize, usize, u64),
    /// A retry (same id, next attempt) of one of the envelopes sent so far, from any
    /// identity (a blocking client re-makes its socket per attempt).
    Retry(usize, usize),
    /// The worker answers (echoes) one of the requests the broker says it holds.
    Answer(usize, usize),
    /// As a foreign worker would: the payload of one of them back, metadata left off.
    AnswerPlain(usize, usize),
    /// The worker echoes any request the broker ever sent to anyone (stale, foreign).
    Stale(usize, usize),
    /// A REPLY with a chosen client and random body.
    JunkReply(usize, usize, Frames),
    Heartbeat(usize),
    Disconnect(usize),
}

/// Up to 16 bytes from one draw (a byte vector of per-byte draws is slow to generate).
fn bytes_strategy() -> impl Strategy<Value = Vec<u8>> {
    any::<(u128, u8)>().prop_map(|(x, n)| x.to_le_bytes()[..usize::from(n % 17)].to_vec())
}

fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"MDPW01".to_vec()),
        Just(b"MDPC01".to_vec()),
        Just(b"echo".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
        bytes_strategy(),
        // Looks like metadata, rarely decodes.
        bytes_strategy().prop_map(|tail| [&MAGIC[..], &tail].concat()),
        // Valid metadata with a random id, status and attempt.
        (any::<u128>(), 0u8..3, any::<u32>()).prop_map(|(id, status, attempt)| {
            let mut m = Meta::new(Uuid::from_u128(id), 0);
            m.attempt = attempt;
            m.status = [Status::Ok, Status::Error, Status::Refused][usize::from(status)];
            m.encode()
        }),
    ]
}

fn frames_strategy(max: usize) -> impl Strategy<Value = Frames> {
    proptest::collection::vec(frame_strategy(), 0..max)
}

fn cap_any() -> impl Strategy<Value = CapFrame> {
    prop_oneof![
        Just(CapFrame::None),
        (1u32..=4).prop_map(CapFrame::Valid),
        bytes_strategy().prop_map(CapFrame::Junk),
        any::<i64>().prop_map(|n| CapFrame::Text(n.to_string())),
        bytes_strategy().prop_map(|b| CapFrame::Text(String::from_utf8_lossy(&b).into())),
        Just(CapFrame::Text(" 2".into())),
        Just(CapFrame::Text("+2".into())),
        Just(CapFrame::Text("".into())),
        Just(CapFrame::Text("99999999999".into())),
        Just(CapFrame::Text("65537".into())),
        Just(CapFrame::Text("0".into())),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let id = 0..IDS.len();
    // Mostly the two real services, so that work flows; the odd ones now and then.
    let svc = || prop_oneof![4 => Just(0usize), 3 => Just(1usize), 1 => 2..SERVICES.len()];
    let cap = prop_oneof![
        4 => Just(CapFrame::None),
        4 => (1u32..=3).prop_map(CapFrame::Valid),
        1 => cap_any(),
    ];
    prop_oneof![
        3 => (0u64..2500).prop_map(Op::Advance),
        2 => (id.clone(), frames_strategy(7)).prop_map(|(i, f)| Op::Raw(i, f)),
        2 => (id.clone(), any::<u8>(), frames_strategy(4))
            .prop_map(|(i, c, f)| Op::Command(i, c, f)),
        // Workers are w0..w3 mostly; a client identity registering is junk too.
        3 => (0..4usize, svc(), cap).prop_map(|(i, s, c)| Op::Ready(i, s, c)),
        1 => (id.clone(), svc(), cap_any()).prop_map(|(i, s, c)| Op::Ready(i, s, c)),
        6 => (id.clone(), svc(), any::<bool>()).prop_map(|(i, s, e)| Op::Request(i, s, e)),
        2 => (id.clone(), svc(), prop_oneof![Just(0u64), 1u64..9000])
            .prop_map(|(i, s, d)| Op::Deadline(i, s, d)),
        3 => (id.clone(), any::<usize>()).prop_map(|(i, k)| Op::Retry(i, k)),
        6 => (id.clone(), any::<usize>()).prop_map(|(i, k)| Op::Answer(i, k)),
        3 => (id.clone(), any::<usize>()).prop_map(|(i, k)| Op::AnswerPlain(i, k)),
        1 => (id.clone(), any::<usize>()).prop_map(|(i, k)| Op::Stale(i, k)),
        1 => (id.clone(), id.clone(), frames_strategy(3))
            .prop_map(|(i, c, f)| Op::JunkReply(i, c, f)),
        3 => id.clone().prop_map(Op::Heartbeat),
        1 => id.prop_map(Op::Disconnect),
    ]
}

/// The broker driven by random operations, with a model of what each worker holds.
///
/// The model is built from what the broker observably sends (REQUESTs add to a worker's
/// list, WorkerGone empties it) plus one rule, the spec of reply matching: a REPLY from
/// a registered worker completes the first request it holds from that client with the
/// reply's envelope id (any request of that client when the reply has no id), or
/// nothing. After every step:
/// - `inflight(w)` equals the model and never exceeds `w`'s capacity;
/// - conservation: requests pending before + accepted − dropped (RequestDropped events)
///   − completed == requests pending after (queued + in flight), so a request is never
///   lost, duplicated or answered twice inside the broker;
/// - a completion always goes with a reply transmitted to a client;
/// - a retry of an id the broker holds is joined (nothing queued) and the reply goes to
///   the latest retry's address with its attempt; a retry of an id dead-lettered lately
///   is answered, not queued; a request a worker died holding `max_deliveries` times is
///   dead-lettered, never re-queued; the id index never holds more than the requests
///   pending.
struct BrokerModel {
    now: Instant,
    b: Broker,
    cap: HashMap<Vec<u8>, u32>,
    held: HashMap<Vec<u8>, Vec<(Vec<u8>, Frames)>>,
    ever_sent: Vec<(Vec<u8>, Frames)>,
    services: HashSet<Vec<u8>>,
    next_id: u128,
    accepted: usize,
    completed: usize,
    dropped: usize,
    replies: usize,
    /// The wall clock (unix ms) at the model's start.
    wall0: u64,
    t0: Instant,
    /// Every envelope sent, with its service, for retries.
    sent_envelopes: Vec<(Vec<u8>, Envelope)>,
    /// Ids with a retry joined: service, the latest retry's address and attempt.
    latest: HashMap<Uuid, (Vec<u8>, Vec<u8>, u32)>,
    /// Ids dead-lettered, with their service and when.
    dead_ids: HashMap<Uuid, (Vec<u8>, Instant)>,
    dead_lettered: usize,
}

impl BrokerModel {
    fn new(now: Instant) -> Self {
        let cfg = BrokerConfig {
            heartbeat: hb(1000, 3),
            max_queue: 4,
            max_queue_bytes: 1 << 20,
            request_ttl: ms(6000),
            max_services: 3,
            stats_window: ms(5000),
            max_deliveries: 3,
        };
        let wall0 = 1_700_000_000_000;
        let mut b = Broker::new(now, cfg).unwrap();
        b.handle_wall_clock(now, wall0);
        BrokerModel {
            now,
            b,
            cap: HashMap::new(),
            held: HashMap::new(),
            ever_sent: Vec::new(),
            services: HashSet::new(),
            next_id: 1,
            accepted: 0,
            completed: 0,
            dropped: 0,
            replies: 0,
            wall0,
            t0: now,
            sent_envelopes: Vec::new(),
            latest: HashMap::new(),
            dead_ids: HashMap::new(),
            dead_lettered: 0,
        }
    }

    /// The wall clock at virtual time `now`.
    fn wall(&self) -> u64 {
        self.wall0 + (self.now - self.t0).as_millis() as u64
    }

    fn pending(&self) -> usize {
        let queued: usize = self.services.iter().map(|s| self.b.queued(s)).sum();
        let inflight: usize = IDS.iter().filter_map(|w| self.b.inflight(w)).sum();
        queued + inflight
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let msg = match op {
            Op::Advance(d) => {
                self.now += ms(*d);
                let before = self.pending();
                self.b.handle_timeout(self.now);
                return self.settle(before, 0, None, 0);
            }
            Op::Raw(i, f) => {
                let mut m = vec![IDS[*i].to_vec()];
                m.extend(f.iter().cloned());
                m
            }
            Op::Command(i, c, args) => {
                let mut m = frames(&[IDS[*i], b"", b"MDPW01", &[*c]]);
                m.extend(args.iter().cloned());
                m
            }
            Op::Ready(i, s, cap) => {
                let mut m = ready(IDS[*i], SERVICES[*s], 1);
                match cap {
                    CapFrame::None => {}
                    CapFrame::Valid(k) => m.push(format!("capacity={k}").into_bytes()),
                    CapFrame::Junk(j) => m.push(j.clone()),
                    CapFrame::Text(t) => m.push(format!("capacity={t}").into_bytes()),
                }
                m
            }
            Op::Request(i, s, env) => {
                self.next_id += 1;
                let body = if *env {
                    let e = envelope(self.next_id, b"q");
                    self.sent_envelopes.push((SERVICES[*s].to_vec(), e.clone()));
                    e.encode()
                } else {
                    vec![format!("plain-{}", self.next_id).into_bytes()]
                };
                request(IDS[*i], SERVICES[*s], body)
            }
            Op::Deadline(i, s, d) => {
                self.next_id += 1;
                let mut e = envelope(self.next_id, b"q");
                e.meta.deadline_ms = Some(self.wall() + d);
                self.sent_envelopes.push((SERVICES[*s].to_vec(), e.clone()));
                request(IDS[*i], SERVICES[*s], e.encode())
            }
            Op::Retry(i, k) => {
                let n = self.sent_envelopes.len();
                let Some((service, e)) = self.sent_envelopes.get_mut(k % n.max(1)) else {
                    return Ok(());
                };
                e.meta.attempt += 1;
                request(IDS[*i], service, e.encode())
            }
            Op::Answer(i, k) => {
                let held = self.held.get(IDS[*i]).cloned().unwrap_or_default();
                match held.get(k % held.len().max(1)) {
                    Some((client, body)) => reply(IDS[*i], client, body.clone()),
                    None => cmd(IDS[*i], Command::Heartbeat),
                }
            }
            Op::AnswerPlain(i, k) => {
                let held = self.held.get(IDS[*i]).cloned().unwrap_or_default();
                match held.get(k % held.len().max(1)) {
                    Some((client, body)) => {
                        let mut payload = body.clone();
                        if payload.last().is_some_and(|f| Meta::looks_like(f)) {
                            payload.pop();
                        }
                        reply(IDS[*i], client, payload)
                    }
                    None => cmd(IDS[*i], Command::Heartbeat),
                }
            }
            Op::Stale(i, k) => match self.ever_sent.get(k % self.ever_sent.len().max(1)) {
                Some((client, body)) => reply(IDS[*i], client, body.clone()),
                None => cmd(IDS[*i], Command::Heartbeat),
            },
            Op::JunkReply(i, c, body) => reply(IDS[*i], IDS[*c], body.clone()),
            Op::Heartbeat(i) => cmd(IDS[*i], Command::Heartbeat),
            Op::Disconnect(i) => cmd(IDS[*i], Command::Disconnect),
        };
        self.feed(msg)
    }

    fn feed(&mut self, msg: Frames) -> Result<(), TestCaseError> {
        let sender = msg.first().cloned().unwrap_or_default();
        let parsed = if msg.is_empty() {
            None
        } else {
            mdp::parse_to_broker(msg[1..].to_vec()).ok()
        };
        let mut accepted = 0;
        let mut expect_completed = 0;
        let mut expect_reply = None;
        let mut expect_joined = false;
        let mut expect_dead_again = false;
        match parsed {
            Some(mdp::ToBroker::Client { service, body }) if !service.starts_with(b"mmi.") => {
                self.services.insert(service.clone());
                accepted = 1;
                if let Some(id) = body_id(&body) {
                    let recently_dead = self.dead_ids.get(&id).is_some_and(|(s, at)| {
                        *s == service && self.now.saturating_duration_since(*at) <= ms(6000)
                    });
                    if self.b.holds(&service, &id) {
                        // Joined to the copy the broker holds: nothing new pending.
                        accepted = 0;
                        expect_joined = true;
                        let attempt = Meta::decode(body.last().unwrap()).unwrap().attempt;
                        let newer = self.latest.get(&id).map_or(true, |l| attempt >= l.2);
                        if newer {
                            self.latest.insert(id, (service, sender.clone(), attempt));
                        }
                    } else if recently_dead {
                        accepted = 0;
                        expect_dead_again = true;
                    }
                }
            }
            Some(mdp::ToBroker::Worker(mdp::FromWorker::Reply { client, body }))
                if self.b.inflight(&sender).is_some() =>
            {
                // The matching rule.
                let id = body_id(&body);
                let held = self.held.entry(sender.clone()).or_default();
                if let Some(p) = held
                    .iter()
                    .position(|(c, b)| *c == client && (id.is_none() || body_id(b) == id))
                {
                    let (_, request) = held.remove(p);
                    expect_completed = 1;
                    // Forwarded as it came; a plain reply to a request that carried
                    // metadata gets that metadata (status Ok) appended.
                    let mut body = body;
                    if id.is_none() {
                        if let Some(m) = request.last().and_then(|f| Meta::decode(f).ok()) {
                            body.push(m.reply(Status::Ok).encode());
                        }
                    }
                    // A request a retry was joined to answers the latest retry, at its
                    // address.
                    let mut to = client;
                    let rid = body_id(&request);
                    if let Some((_, latest, attempt)) = rid.and_then(|r| self.latest.remove(&r)) {
                        if body_id(&body) == rid {
                            let last = body.last_mut().unwrap();
                            prop_assert!(bosun::proto::envelope::set_attempt(last, attempt));
                        }
                        to = latest;
                    }
                    expect_reply = Some((to, body));
                }
            }
            _ => {}
        }
        let before = self.pending();
        self.b.handle_wall_clock(self.now, self.wall());
        self.b.handle_message(self.now, msg);
        self.settle_retry(
            before,
            accepted,
            expect_reply,
            expect_completed,
            (expect_joined, expect_dead_again),
        )
    }

    fn settle(
        &mut self,
        before: usize,
        accepted: usize,
        expect_reply: Option<(Vec<u8>, Frames)>,
        expect_completed: usize,
    ) -> Result<(), TestCaseError> {
        self.settle_retry(
            before,
            accepted,
            expect_reply,
            expect_completed,
            (false, false),
        )
    }

    fn settle_retry(
        &mut self,
        before: usize,
        accepted: usize,
        mut expect_reply: Option<(Vec<u8>, Frames)>,
        expect_completed: usize,
        (expect_joined, expect_dead_again): (bool, bool),
    ) -> Result<(), TestCaseError> {
        let (out, events) = drain(&mut self.b);
        let mut dropped = 0;
        let mut gone_now = HashSet::new();
        let mut joined = false;
        let mut dead_again = false;
        // Dead-lettered per worker, and in all.
        let mut dead_from: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut dead_now = 0;
        // WorkerGone comes before the DeadLettered events of its requests.
        let mut gone_held: Vec<(Vec<u8>, usize, usize)> = Vec::new();
        for e in events {
            match e {
                BEvent::RequestDropped { .. } => dropped += 1,
                BEvent::RetryJoined { .. } => joined = true,
                BEvent::RetryDeadLettered { .. } => dead_again = true,
                BEvent::DeadLettered {
                    service,
                    id,
                    deliveries,
                    last_worker,
                    ..
                } => {
                    prop_assert_eq!(deliveries, 3);
                    if let Some(id) = id {
                        self.dead_ids.insert(id, (service, self.now));
                    }
                    *dead_from.entry(last_worker).or_default() += 1;
                    dead_now += 1;
                }
                BEvent::WorkerReady {
                    identity, capacity, ..
                } => {
                    prop_assert!(self.held.get(&identity).map_or(true, Vec::is_empty));
                    self.cap.insert(identity, capacity);
                }
                BEvent::WorkerGone {
                    identity,
                    requeued,
                    reason,
                } => {
                    let held = self.held.remove(&identity).unwrap_or_default();
                    if reason == GoneReason::Disconnected {
                        // A clean stop hands every request back.
                        prop_assert_eq!(held.len(), requeued, "requeued count of {:?}", identity);
                    }
                    gone_held.push((identity.clone(), held.len(), requeued));
                    gone_now.insert(identity);
                }
                _ => {}
            }
        }
        prop_assert_eq!(joined, expect_joined, "retry joined?");
        prop_assert_eq!(
            dead_again,
            expect_dead_again,
            "retry of a dead letter answered?"
        );
        for (identity, held, requeued) in gone_held {
            let dead = dead_from.get(&identity).copied().unwrap_or(0);
            prop_assert_eq!(
                held,
                requeued + dead,
                "requeued + dead-lettered of {:?}",
                identity
            );
        }
        let mut worker_replies = 0;
        let mut refusals = 0;
        let mut dead_answers = 0;
        for o in out {
            match o {
                Out::Request {
                    worker,
                    client,
                    body,
                } => {
                    prop_assert!(!gone_now.contains(&worker), "work sent to a removed worker");
                    prop_assert!(
                        self.b.inflight(&worker).is_some(),
                        "work sent to a stranger"
                    );
                    self.ever_sent.push((client.clone(), body.clone()));
                    self.held.entry(worker).or_default().push((client, body));
                }
                Out::Reply {
                    client,
                    service,
                    body,
                } => {
                    let status = body
                        .last()
                        .and_then(|f| Meta::decode(f).ok())
                        .map(|m| m.status);
                    let dead_letter = status == Some(Status::Error)
                        && body
                            .first()
                            .is_some_and(|f| f.starts_with(b"dead-lettered"));
                    // A worker's reply may say Refused too (a foreign echo worker
                    // hands back the request's metadata as it came, whatever its
                    // status): the reply expected is the worker's.
                    let expected = expect_reply
                        .as_ref()
                        .is_some_and(|(c, b)| *c == client && *b == body);
                    if status == Some(Status::Refused) && !expected {
                        // The broker's own answer to a request it dropped (a bosun
                        // client is told): never without a RequestDropped.
                        refusals += 1;
                    } else if dead_letter && (dead_now > 0 || dead_again) {
                        // The broker's answer to a dead-lettered request, or to a retry
                        // of one.
                        dead_answers += 1;
                    } else if !service.starts_with(b"mmi.") {
                        // Only the reply that completes a request is forwarded, once,
                        // to its client, with the body the matching rule says.
                        prop_assert_eq!(
                            Some((client, body)),
                            expect_reply.take(),
                            "reply to whom, with what?"
                        );
                        worker_replies += 1;
                    }
                }
                Out::Heartbeat(_) | Out::Disconnect(_) => {}
            }
        }
        let after = self.pending();
        prop_assert_eq!(
            before + accepted,
            after + dropped + dead_now + expect_completed,
            "conservation: before {} accepted {} after {} dropped {} dead-lettered {} completed {}",
            before,
            accepted,
            after,
            dropped,
            dead_now,
            expect_completed
        );
        prop_assert!(dead_answers <= dead_now + usize::from(dead_again));
        prop_assert!(
            self.b.indexed() <= after,
            "{} ids indexed, {} requests pending",
            self.b.indexed(),
            after
        );
        // A retry joined to a request the broker no longer holds is history.
        let b = &self.b;
        self.latest
            .retain(|id, (service, _, _)| b.holds(service, id));
        self.dead_lettered += dead_now;
        prop_assert_eq!(expect_completed, worker_replies);
        prop_assert!(
            refusals <= dropped,
            "{} refusals, {} drops",
            refusals,
            dropped
        );
        for w in IDS {
            let n = self.b.inflight(w);
            let model = self.held.get(w).map_or(0, Vec::len);
            prop_assert_eq!(n.unwrap_or(0), model, "in flight at {:?}", w);
            if let Some(n) = n {
                prop_assert!(n as u32 <= self.cap[w], "{:?} holds {} > capacity", w, n);
            }
        }
        self.accepted += accepted;
        self.dropped += dropped;
        self.completed += expect_completed;
        self.replies += worker_replies;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Print a failing case rather than write a regressions file.
        failure_persistence: None,
        // ChaCha is slow in a debug build; these cases need no cryptographic draws.
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    /// Random sequences of valid and invalid messages and time steps: no panic, and the
    /// invariants of [`BrokerModel`] after every step; at the end, every request
    /// accepted is answered, dropped with an event, or still pending.
    #[test]
    fn broker_survives_random_input_and_keeps_its_books(
        ops in proptest::collection::vec(op_strategy(), 1..120)
    ) {
        let clock = Clock::new();
        let mut m = BrokerModel::new(clock.now());
        for op in &ops {
            m.apply(op)?;
        }
        // Let everything left expire: pending work drains to zero through events only.
        for _ in 0..10 {
            m.apply(&Op::Advance(2500))?;
        }
        prop_assert_eq!(m.pending(), 0);
        prop_assert_eq!(m.b.indexed(), 0);
        prop_assert_eq!(m.accepted, m.completed + m.dropped + m.dead_lettered);
        prop_assert!(m.completed <= m.replies);
        prop_assert_eq!(m.b.workers(), 0);
    }

    /// Random frames (every command byte included) and time steps to a worker: no
    /// panic; everything it sends is a valid 7/MDP worker message; it always has a
    /// timer armed, so it can never go deaf to a dead broker.
    #[test]
    fn worker_survives_random_frames(
        input in proptest::collection::vec(
            prop_oneof![
                (0u64..4000).prop_map(|d| (d, None)),
                frames_strategy(7).prop_map(|f| (0, Some(f))),
                (0u8..=6).prop_map(|c| (0, Some(frames(&[b"", b"MDPW01", &[c], C1, b"", b"x"])))),
            ],
            1..80,
        ),
        capacity in 1u32..4,
        fail in any::<bool>(),
    ) {
        // (Capacity 0 is refused by the constructor now: see
        // `constructors_reject_settings_that_stop_traffic_or_overflow`.)
        let mut clock = Clock::new();
        let mut w = MdWorker::new(clock.now(), ECHO, capacity, hb(1000, 3), backoff(500, 4000), 3).unwrap();
        for (d, f) in input {
            let t = clock.advance_to(clock.now() + ms(d));
            match f {
                Some(f) => w.handle_frames(t, f),
                None => w.handle_timeout(t),
            }
            let (tx, ev) = wdrain(&mut w);
            for x in tx {
                if let WTx::Send(f) = x {
                    prop_assert!(
                        matches!(mdp::parse_to_broker(f), Ok(mdp::ToBroker::Worker(_))),
                        "the worker sent invalid 7/MDP"
                    );
                }
            }
            for e in ev {
                if let WEvent::Request { token, .. } = e {
                    let answer = if fail {
                        Err(HandlerError::new("failed"))
                    } else {
                        Ok(vec![b"ok".to_vec()])
                    };
                    w.reply(t, token, answer);
                    for x in wdrain(&mut w).0 {
                        if let WTx::Send(f) = x {
                            prop_assert!(
                                matches!(
                                    mdp::parse_to_broker(f),
                                    Ok(mdp::ToBroker::Worker(mdp::FromWorker::Reply { .. }))
                                ),
                                "the worker answered with something other than REPLY"
                            );
                        }
                    }
                }
            }
            prop_assert!(w.poll_timeout().is_some(), "a worker always has a timer armed");
        }
    }

    /// Random frames, sends and time steps to a client in either mode: no panic; each id
    /// gets at most one Reply or GaveUp, and every request sent ends in exactly one of
    /// them or is still outstanding; a blocking client refuses (Busy) exactly the sends
    /// made while a request is outstanding, and only it ever asks for a Reset.
    #[test]
    fn mdp_client_survives_random_frames(
        input in proptest::collection::vec(
            prop_oneof![
                (0u64..3000).prop_map(|d| (0, d, None)),
                frames_strategy(6).prop_map(|f| (1, 0, Some(f))),
                (any::<u8>(), 1u32..5).prop_map(|(k, a)| (2, u64::from(k) * 8 + u64::from(a), None)),
                Just((3, 0, None)),
                // A reply with any body: plain, junk metadata, or valid metadata.
                frames_strategy(3).prop_map(|f| (4, 0, Some(f))),
            ],
            1..80,
        ),
        blocking in any::<bool>(),
    ) {
        let mut clock = Clock::new();
        let retry = retry_3x1s();
        let mode = if blocking { Mode::Blocking } else { Mode::Pipelined };
        let mut c = MdpClient::new(clock.now(), mode, retry, 9).unwrap();
        let mut ids: Vec<Uuid> = Vec::new();
        let mut done: HashMap<Uuid, usize> = HashMap::new();
        for (kind, n, f) in input {
            let t = clock.now();
            match (kind, f) {
                (0, _) => {
                    let t = clock.advance_to(t + ms(n));
                    c.handle_timeout(t);
                }
                (1, Some(f)) => c.handle_frames(t, f),
                (2, _) if !ids.is_empty() => {
                    // A reply (any attempt) to some request sent so far.
                    let mut e = envelope(0, b"r");
                    e.meta.id = ids[(n / 8) as usize % ids.len()];
                    e.meta.attempt = (n % 8) as u32;
                    c.handle_frames(t, client_reply(ECHO, &e));
                }
                (4, Some(f)) => c.handle_frames(t, client_reply_frames(ECHO, f)),
                _ => {
                    let busy = c.outstanding() > 0;
                    match c.send(t, ECHO, envelope(ids.len() as u128 + 1, b"q")) {
                        Ok(id) => {
                            prop_assert!(!(blocking && busy), "a second request in blocking mode");
                            ids.push(id);
                        }
                        Err(ClientError::Busy) => {
                            prop_assert!(blocking && busy, "Busy with nothing outstanding");
                        }
                        Err(e) => prop_assert!(false, "send failed: {}", e),
                    }
                }
            }
            while let Some(x) = c.poll_transmit() {
                prop_assert!(blocking || x != CTx::Reset, "Reset in pipelined mode");
            }
            while let Some(e) = c.poll_event() {
                match e {
                    CEvent::Reply { id, .. } | CEvent::GaveUp { id, .. } => {
                        *done.entry(id).or_default() += 1;
                    }
                    _ => {}
                }
            }
            prop_assert!(!blocking || c.outstanding() <= 1);
        }
        prop_assert!(done.values().all(|n| *n == 1));
        prop_assert_eq!(done.len() + c.outstanding(), ids.len());
    }
}

// ======================================================================================
// 10. End to end over a lossy network
// ======================================================================================

const BROKER: usize = 0;
const N_WORKERS: usize = 3;
const N_CLIENTS: usize = 2;
const PER_CLIENT: usize = 15;
const SEEDS: u64 = 200;
/// Worker capacities: the last one uses the capacity extension.
const CAPACITY: [u32; N_WORKERS] = [1, 1, 2];

fn worker_node(i: usize) -> usize {
    1 + i
}

fn client_node(j: usize) -> usize {
    1 + N_WORKERS + j
}

/// An echo worker process: the core, its socket, and the jobs its application runs.
///
/// `identity` is the routing id the broker's ROUTER gives the worker's connection. A
/// DEALER without a fixed id gets a new one per connection: on each `Connect`, and also
/// when the network loses a message between it and the broker, because over TCP libzmq
/// loses messages only when a connection breaks, and it then reconnects under the
/// core's feet. (Losing one message on a connection that carries on under the same id
/// does not happen, and 7/MDP cannot recover from it: see the note on the test.)
struct SimWorker {
    core: MdWorker,
    identity: Vec<u8>,
    generation: u32,
    resets: u32,
    connected: bool,
    alive: bool,
    /// (when it is done, the core's token, the payload to echo).
    jobs: Vec<(Instant, u64, Frames)>,
    disconnected_by_broker: Vec<Instant>,
}

/// A client process: the core, what it will send and when, and what it heard.
struct SimClient {
    core: MdpClient,
    identity: Vec<u8>,
    to_send: Vec<(Instant, Envelope)>,
    bodies: HashMap<Uuid, Frames>,
    replies: HashMap<Uuid, usize>,
    gave_up: usize,
    duplicates: usize,
}

/// The world of one seed: a broker, three echo workers and two clients on a network
/// that loses, duplicates and delays; worker 0 dies on the first request it gets after
/// `kill_after`; the broker goes down at `restart_at` and comes back empty 300 ms later.
struct World {
    clock: Clock,
    net: Net<Frames>,
    cfg: BrokerConfig,
    broker: Broker,
    down_until: Option<Instant>,
    restart_at: Option<Instant>,
    restarted_at: Option<Instant>,
    workers: Vec<SimWorker>,
    clients: Vec<SimClient>,
    rng: fastrand::Rng,
    kill_after: Instant,
    killed_at: Option<Instant>,
    /// Requests the broker took back from the dead worker when it expired it.
    requeued_from_dead: usize,
}

impl World {
    fn new(seed: u64) -> Self {
        let clock = Clock::new();
        let t0 = clock.now();
        let mut rng = fastrand::Rng::with_seed(seed);
        let heartbeat = hb(500, 3);
        // Every lost message breaks a connection here, and the broker cannot tell a
        // worker whose connection broke holding a request from one that died with it:
        // with the default max_deliveries of 3, about 1 request in 200 (33 of 6,000
        // over the seeds, mostly on the flapping capacity-2 worker) was dead-lettered
        // after three such "deaths"; none reached 6. This test is about delivery, so
        // poison handling is out of its way (tests of its own cover it).
        let cfg = BrokerConfig {
            heartbeat,
            max_deliveries: 10,
            ..BrokerConfig::default()
        };
        let reconnect = Backoff {
            initial: ms(250),
            max: ms(2000),
            jitter: 0.2,
        };
        let workers = (0..N_WORKERS)
            .map(|i| SimWorker {
                core: MdWorker::new(t0, ECHO, CAPACITY[i], heartbeat, reconnect, seed ^ i as u64)
                    .unwrap(),
                identity: Vec::new(),
                generation: 0,
                resets: 0,
                connected: false,
                alive: true,
                jobs: Vec::new(),
                disconnected_by_broker: Vec::new(),
            })
            .collect();
        let retry = Retry {
            timeout: ms(1000),
            retries: 12,
            backoff: Backoff {
                initial: ms(100),
                max: ms(1000),
                jitter: 0.2,
            },
            deadline: None,
        };
        let clients = (0..N_CLIENTS)
            .map(|j| {
                let mut to_send: Vec<(Instant, Envelope)> = (0..PER_CLIENT)
                    .map(|k| {
                        let id = (u128::from(seed) << 32) | ((j as u128) << 16) | k as u128;
                        let body = format!("s{seed}-c{j}-{k}");
                        (t0 + ms(rng.u64(0..10_000)), envelope(id, body.as_bytes()))
                    })
                    .collect();
                to_send.sort_by_key(|(at, _)| *at);
                SimClient {
                    core: MdpClient::new(
                        t0,
                        Mode::Pipelined,
                        retry,
                        seed.wrapping_mul(31) + j as u64,
                    )
                    .unwrap(),
                    identity: format!("client-{j}").into_bytes(),
                    to_send,
                    bodies: HashMap::new(),
                    replies: HashMap::new(),
                    gave_up: 0,
                    duplicates: 0,
                }
            })
            .collect();
        let net = Net::new(
            NetConfig {
                loss: 0.03,
                duplicate: 0.03,
                delay_min: ms(1),
                delay_max: ms(20),
            },
            seed,
        );
        let restart_at = t0 + ms(rng.u64(4000..7000));
        let kill_after = t0 + ms(rng.u64(1000..3000));
        let mut world = World {
            clock,
            net,
            cfg,
            broker: Broker::new(t0, cfg).unwrap(),
            down_until: None,
            restart_at: Some(restart_at),
            restarted_at: None,
            workers,
            clients,
            rng,
            kill_after,
            killed_at: None,
            requeued_from_dead: 0,
        };
        for i in 0..N_WORKERS {
            world.drain_worker(i);
        }
        world
    }

    fn next_time(&self) -> Option<Instant> {
        let mut times = vec![self.net.next_delivery(), self.restart_at, self.down_until];
        if self.down_until.is_none() {
            times.push(self.broker.poll_timeout());
        }
        for w in self.workers.iter().filter(|w| w.alive) {
            times.push(w.core.poll_timeout());
            times.push(w.jobs.iter().map(|j| j.0).min());
        }
        for c in &self.clients {
            times.push(c.core.poll_timeout());
            times.push(c.to_send.first().map(|s| s.0));
        }
        times.into_iter().flatten().min()
    }

    fn done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.to_send.is_empty() && c.core.outstanding() == 0)
    }

    fn step(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|t| t <= now) {
            // The broker process dies: its connections break, whatever was in flight
            // to or from it is lost, and it comes back with no memory.
            self.restart_at = None;
            self.net.cut(BROKER);
            self.down_until = Some(now + ms(300));
        }
        if self.down_until.is_some_and(|t| t <= now) {
            self.down_until = None;
            self.restarted_at = Some(now);
            self.broker = Broker::new(now, self.cfg).unwrap();
        }
        while let Some((_, to, msg)) = self.net.pop_due(now) {
            self.deliver(now, to, msg);
        }
        for i in 0..N_WORKERS {
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.workers[i].jobs)
                .into_iter()
                .partition(|j| j.0 <= now);
            self.workers[i].jobs = rest;
            for (_, token, payload) in due {
                // Echo: the payload back; the core adds the request's id and attempt.
                self.workers[i].core.reply(now, token, Ok(payload));
            }
            self.drain_worker(i);
        }
        for j in 0..N_CLIENTS {
            let c = &mut self.clients[j];
            while c.to_send.first().is_some_and(|s| s.0 <= now) {
                let (_, e) = c.to_send.remove(0);
                c.bodies.insert(e.id(), e.payload.clone());
                c.core.send(now, ECHO, e).unwrap();
            }
            self.drain_client(j);
        }
        if self.down_until.is_none() {
            self.broker.handle_timeout(now);
            self.drain_broker(now);
        }
        for i in 0..N_WORKERS {
            if self.workers[i].alive {
                self.workers[i].core.handle_timeout(now);
                self.drain_worker(i);
            }
        }
        for j in 0..N_CLIENTS {
            self.clients[j].core.handle_timeout(now);
            self.drain_client(j);
        }
    }

    fn deliver(&mut self, now: Instant, to: usize, msg: Frames) {
        if to == BROKER {
            if self.down_until.is_none() {
                self.broker.handle_message(now, msg);
                self.drain_broker(now);
            }
            return;
        }
        let (identity, rest) = route(msg);
        if let Some(i) = (0..N_WORKERS).find(|i| worker_node(*i) == to) {
            let w = &mut self.workers[i];
            // A message for an earlier socket of this worker is gone with that socket.
            if w.alive && w.connected && w.identity == identity {
                w.core.handle_frames(now, rest);
                self.drain_worker(i);
            }
        } else if let Some(j) = (0..N_CLIENTS).find(|j| client_node(*j) == to) {
            self.clients[j].core.handle_frames(now, rest);
            self.drain_client(j);
        }
    }

    fn drain_broker(&mut self, now: Instant) {
        while let Some(msg) = self.broker.poll_transmit() {
            let Some(identity) = msg.first() else {
                panic!("a broker message without an identity")
            };
            // The ROUTER routes by identity; one it does not know is dropped.
            let to = (0..N_WORKERS)
                .find(|i| self.workers[*i].connected && self.workers[*i].identity == *identity)
                .map(worker_node)
                .or_else(|| {
                    (0..N_CLIENTS)
                        .find(|j| self.clients[*j].identity == *identity)
                        .map(client_node)
                });
            if let Some(to) = to {
                if !self.net.send(now, BROKER, to, msg) {
                    self.connection_broke(to);
                }
            }
        }
        while let Some(e) = self.broker.poll_event() {
            if let BEvent::WorkerGone {
                identity,
                reason: GoneReason::Expired,
                requeued,
            } = e
            {
                if identity.starts_with(b"w0.") && self.killed_at.is_some() {
                    self.requeued_from_dead += requeued;
                }
            }
        }
        for (i, w) in self.workers.iter().enumerate() {
            if let Some(n) = self.broker.inflight(&w.identity) {
                assert!(n as u32 <= CAPACITY[i], "worker {i} holds {n}");
            }
        }
    }

    fn drain_worker(&mut self, i: usize) {
        let now = self.clock.now();
        let node = worker_node(i);
        while let Some(x) = self.workers[i].core.poll_transmit() {
            let w = &mut self.workers[i];
            match x {
                WTx::Connect => {
                    w.generation += 1;
                    w.identity = format!("w{i}.{}", w.generation).into_bytes();
                    w.connected = true;
                }
                WTx::Disconnect => w.connected = false,
                WTx::Send(f) => {
                    if w.connected {
                        let mut msg = vec![w.identity.clone()];
                        msg.extend(f);
                        if !self.net.send(now, node, BROKER, msg) {
                            self.connection_broke(node);
                        }
                    }
                }
            }
        }
        while let Some(e) = self.workers[i].core.poll_event() {
            match e {
                WEvent::Request { token, request } => {
                    if i == 0 && self.killed_at.is_none() && now >= self.kill_after {
                        // Killed mid-request: it never answers, never heartbeats again.
                        let w = &mut self.workers[i];
                        w.alive = false;
                        w.connected = false;
                        w.jobs.clear();
                        self.killed_at = Some(now);
                        return;
                    }
                    let work = ms(self.rng.u64(10..200));
                    assert!(request.meta.is_some(), "worker {i} lost the metadata");
                    self.workers[i]
                        .jobs
                        .push((now + work, token, request.payload));
                }
                WEvent::DisconnectedByBroker => {
                    self.workers[i].disconnected_by_broker.push(now);
                }
                WEvent::Malformed(e) => panic!("worker {i} got malformed input: {e}"),
                _ => {}
            }
        }
    }

    /// A message between `node` and the broker was lost: if `node` is a worker, its
    /// connection broke and libzmq reconnected it under a new routing id.
    fn connection_broke(&mut self, node: usize) {
        if let Some(i) = (0..N_WORKERS).find(|i| worker_node(*i) == node) {
            let w = &mut self.workers[i];
            w.resets += 1;
            w.identity = format!("w{i}.{}.{}", w.generation, w.resets).into_bytes();
        }
    }

    fn drain_client(&mut self, j: usize) {
        let now = self.clock.now();
        let node = client_node(j);
        let c = &mut self.clients[j];
        while let Some(x) = c.core.poll_transmit() {
            let CTx::Send(f) = x else {
                panic!("a pipelined client never resets its socket: {x:?}")
            };
            let mut msg = vec![c.identity.clone()];
            msg.extend(f);
            self.net.send(now, node, BROKER, msg);
        }
        while let Some(e) = c.core.poll_event() {
            match e {
                CEvent::Reply { id, answer, .. } => {
                    let Answer::Ok(payload) = answer else {
                        panic!("client {j}: an echo failed: {answer:?}")
                    };
                    assert_eq!(Some(&payload), c.bodies.get(&id), "a reply to what?");
                    *c.replies.entry(id).or_default() += 1;
                }
                CEvent::GaveUp { .. } => c.gave_up += 1,
                CEvent::Duplicate { .. } => c.duplicates += 1,
                CEvent::Retrying { .. } => {}
                CEvent::Unmatched { .. } => panic!("client {j} got a reply without metadata"),
                CEvent::Malformed(e) => panic!("client {j} got malformed input: {e}"),
            }
        }
    }

    /// Runs until every request is resolved, then heals the network and runs 5 s more.
    fn run(&mut self) {
        let mut healed_at: Option<Instant> = None;
        for _ in 0..200_000 {
            let Some(next) = self.next_time() else { break };
            if healed_at.is_some_and(|h| next > h + ms(5000)) {
                return;
            }
            assert!(
                next <= self.clock.t0() + Duration::from_secs(300),
                "not done after 300 s of virtual time"
            );
            let now = self.clock.advance_to(next);
            self.step(now);
            if healed_at.is_none() && self.done() && self.restarted_at.is_some() {
                healed_at = Some(now);
                self.net.heal();
            }
        }
        panic!("step budget exhausted");
    }
}

/// Two clients with 15 requests each, a broker and three echo workers (one with
/// capacity 2) over a network that loses 3 %, duplicates 3 % and delays 1 to 20 ms;
/// one worker dies holding a request, and the broker restarts empty mid-run. For 200
/// seeds: every request is answered exactly once to the application (late answers are
/// Duplicates, never a second Reply), none is given up, the dead worker's request is
/// re-queued by the broker (or retried by the client), the live workers end registered
/// and idle with the new broker (nearly all by the DISCONNECT answer to a heartbeat),
/// and no worker ever holds more than its capacity.
///
/// Note on loss: a message lost between a worker and the broker also gives the worker a
/// new routing id (see [`SimWorker`]). With loss that keeps the id, a lost REQUEST or
/// REPLY leaves the broker believing a live, heartbeating worker still holds a request:
/// nothing in 7/MDP ever corrects that, and a K = 1 worker then gets no more work.
#[test]
fn end_to_end_lossy_network_worker_death_and_broker_restart() {
    let mut via_disconnect = 0;
    let mut duplicates = 0;
    let mut requeued = 0;
    for seed in 0..SEEDS {
        let mut w = World::new(seed);
        w.run();
        assert!(
            w.killed_at.is_some(),
            "seed {seed}: worker 0 was never killed"
        );
        let restarted = w.restarted_at.expect("the broker restarted");
        for (j, c) in w.clients.iter().enumerate() {
            assert_eq!(c.gave_up, 0, "seed {seed} client {j} gave up");
            assert_eq!(c.bodies.len(), PER_CLIENT);
            for id in c.bodies.keys() {
                assert_eq!(
                    c.replies.get(id),
                    Some(&1),
                    "seed {seed} client {j} request {id}"
                );
            }
            duplicates += c.duplicates;
        }
        for (i, wk) in w.workers.iter().enumerate().skip(1) {
            assert_eq!(
                w.broker.inflight(&wk.identity),
                Some(0),
                "seed {seed}: worker {i} is registered and idle at the end"
            );
            if wk.disconnected_by_broker.iter().any(|t| *t >= restarted) {
                via_disconnect += 1;
            }
        }
        assert_eq!(
            w.broker.inflight(&w.workers[0].identity),
            None,
            "seed {seed}"
        );
        requeued += usize::from(w.requeued_from_dead > 0);
    }
    // Almost every live worker re-registered through the DISCONNECT answer to its
    // heartbeat; a lost DISCONNECT leaves the slower way, its own liveness timeout.
    let live = 2 * SEEDS as usize;
    assert!(
        via_disconnect * 10 >= live * 9,
        "only {via_disconnect} of {live} via DISCONNECT"
    );
    // Mostly the broker took the dead worker's request back (else the restart wiped it
    // first, and the client's retry saved it).
    assert!(
        requeued * 10 >= SEEDS as usize * 8,
        "re-queued in {requeued} of {SEEDS}"
    );
    // The network and the retries did produce late answers, which were all dropped.
    assert!(duplicates > 0);
}

// ======================================================================================
// Issue 8: byte bounds, refusals, service names, heartbeat mismatch
// ======================================================================================

/// The refusal a bosun client gets: `[reason][meta]`, the meta the request's id with
/// status Refused; returns the reason.
fn refusal_to(out: &Out, client: &[u8], service: &[u8], id: u128) -> String {
    let Out::Reply {
        client: c,
        service: s,
        body,
    } = out
    else {
        panic!("not a reply: {out:?}")
    };
    assert_eq!((c.as_slice(), s.as_slice()), (client, service));
    let [reason, meta] = &body[..] else {
        panic!("{body:?}")
    };
    let meta = Meta::decode(meta).unwrap();
    assert_eq!(
        (meta.id, meta.status),
        (Uuid::from_u128(id), Status::Refused)
    );
    String::from_utf8(reason.clone()).unwrap()
}

/// `max_queue_bytes` bounds the bytes waiting per service as `max_queue` bounds the
/// count: an empty queue takes a request of any size, a request that would pass the
/// bound is refused, a bosun client is told (its id, status Refused, the reason in
/// words), a foreign one is not answered (a plain frame would read as its reply), and
/// bytes leave the count when their request goes to a worker. The refusals are summed
/// once a second per service and reason. Catches: a count-only bound, a refusal nobody
/// hears, a refusal sent to a foreign client as if it were the answer, bytes never
/// released.
#[test]
fn broker_bounds_waiting_bytes_and_tells_a_bosun_client_it_was_refused() {
    let mut clock = Clock::new();
    let t = clock.now();
    let cfg = BrokerConfig {
        heartbeat: hb(60_000, 3),
        max_queue: 100,
        max_queue_bytes: 200,
        ..bcfg()
    };
    let mut b = Broker::new(t, cfg).unwrap();
    let big = |id: u128| envelope(id, &[b'x'; 100]).encode();
    let size: usize = big(1).iter().map(Vec::len).sum();
    assert!(size > 100 && 2 * size > 200, "{size}");
    // Any one request fits an empty queue, even beyond the bound.
    b.handle_message(t, plain(C1, b"huge", &[b'h'; 1000]));
    b.handle_message(t, request(C1, b"a", big(1)));
    assert!(drain(&mut b).0.is_empty());
    assert_eq!((b.queued(b"huge"), b.queued(b"a")), (1, 1));
    // The second would pass 200 bytes: refused, and the bosun client told.
    b.handle_message(t, request(C2, b"a", big(2)));
    let (out, events) = drain(&mut b);
    assert_eq!(events, vec![dropped(b"a", DropReason::QueueBytes)]);
    let [o] = &out[..] else { panic!("{out:?}") };
    let reason = refusal_to(o, C2, b"a", 2);
    assert!(
        reason.contains("refused by the broker") && reason.contains("--max-queue-bytes 200"),
        "{reason}"
    );
    assert_eq!(b.queued(b"a"), 1);
    // A small one still fits; a foreign client's request over the bound is dropped
    // without an answer.
    b.handle_message(t, plain(C1, b"a", b"small"));
    b.handle_message(t, plain(C2, b"a", &[b'y'; 100]));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(events, vec![dropped(b"a", DropReason::QueueBytes)]);
    assert_eq!(b.queued(b"a"), 2);
    // A worker takes the first; its bytes leave the count, so a big one fits again.
    let t = clock.set(ms(10));
    b.handle_message(t, ready(W1, b"a", 1));
    assert_eq!(requests(&sent(&mut b)).len(), 1);
    b.handle_message(t, request(C2, b"a", big(3)));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty() && events.is_empty(), "{out:?} {events:?}");
    assert_eq!(b.queued(b"a"), 2);
    // One summary for the two refusals, a second after the first.
    assert_eq!(b.poll_timeout(), Some(clock.at(ms(1000))));
    let t = clock.set(ms(1000));
    b.handle_timeout(t);
    assert_eq!(
        drain(&mut b).1,
        vec![BEvent::DropSummary {
            service: Some(b"a".to_vec()),
            reason: DropReason::QueueBytes,
            count: 2
        }]
    );
}

/// A burst of 2,000 requests from one client with one worker busy: with the default
/// bounds every request waits and none is refused (the old default, 1000, dropped 978
/// of the Issue's 2,000); with `max_queue` 10 the rest are refused, each bosun client
/// told, and the log hears one summary per second, not 1,990 lines. Catches: a default
/// too small for a normal burst, a line per refusal.
#[test]
fn a_burst_of_2000_fits_the_default_bounds_and_refusals_are_summed() {
    let mut clock = Clock::new();
    let t = clock.now();
    let burst = |b: &mut Broker, t: Instant| {
        b.handle_message(t, ready(W1, ECHO, 1));
        for i in 0..2000u128 {
            b.handle_message(t, request(C1, ECHO, envelope(i + 1, b"payload").encode()));
        }
        drain(b)
    };
    let cfg = BrokerConfig {
        heartbeat: hb(60_000, 3),
        ..BrokerConfig::default()
    };
    let mut b = Broker::new(t, cfg).unwrap();
    let (out, events) = burst(&mut b, t);
    assert_eq!(requests(&out).len(), 1);
    assert_eq!(b.queued(ECHO), 1999);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, BEvent::WorkerReady { .. })),
        "{events:?}"
    );

    let cfg = BrokerConfig {
        max_queue: 10,
        ..cfg
    };
    let mut b = Broker::new(t, cfg).unwrap();
    let (out, _) = burst(&mut b, t);
    let refused = out
        .iter()
        .filter(|o| matches!(o, Out::Reply { .. }))
        .count();
    assert_eq!((refused, b.queued(ECHO)), (1989, 10));
    let t = clock.set(ms(1000));
    b.handle_timeout(t);
    let summaries: Vec<BEvent> = drain(&mut b)
        .1
        .into_iter()
        .filter(|e| matches!(e, BEvent::DropSummary { .. }))
        .collect();
    assert_eq!(
        summaries,
        vec![BEvent::DropSummary {
            service: Some(ECHO.to_vec()),
            reason: DropReason::QueueFull,
            count: 1989
        }]
    );
    // Nothing refused since: no summary at the next second.
    let t = clock.set(ms(2000));
    b.handle_timeout(t);
    assert!(drain(&mut b).1.is_empty());
}

/// A service name is 1 to 255 bytes, any bytes. An empty name (or a longer one) from a
/// bosun client is refused with a reply that says so, from a foreign client dropped; a
/// worker's READY for one is answered DISCONNECT. Names with spaces, newlines, `=` and
/// non-UTF-8 bytes route like any other. Catches: an empty name accepted as a service.
#[test]
fn broker_refuses_an_empty_service_name_and_routes_any_other_bytes() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, request(C1, b"", envelope(7, b"q").encode()));
    let (out, events) = drain(&mut b);
    assert_eq!(events, vec![dropped(b"", DropReason::BadServiceName)]);
    let [o] = &out[..] else { panic!("{out:?}") };
    assert!(refusal_to(o, C1, b"", 7).contains("the service name is empty"));
    b.handle_message(t, plain(C1, b"", b"q"));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty());
    assert_eq!(events, vec![dropped(b"", DropReason::BadServiceName)]);
    let long = vec![b'n'; 256];
    b.handle_message(t, request(C1, &long, envelope(8, b"q").encode()));
    let (out, _) = drain(&mut b);
    let [o] = &out[..] else { panic!("{out:?}") };
    assert!(refusal_to(o, C1, &long, 8).contains("longer than 255"));
    assert!(b.stats(t, None).is_empty());

    b.handle_message(t, ready(W1, b"", 1));
    assert_eq!(sent(&mut b), vec![Out::Disconnect(W1.to_vec())]);
    assert_eq!(b.workers(), 0);

    let odd: &[u8] = b"my svc\nx=1\xff";
    b.handle_message(t, ready(W2, odd, 1));
    b.handle_message(t, plain(C1, odd, b"r"));
    assert_eq!(sent(&mut b), vec![Out::req(W2, C1, b"r")]);
}

/// `mmi.stats` escapes service names (`%XX` for bytes outside `!`..`~`, `%` and `=`),
/// so a name with a space, a newline or `=` is one token and the reply one line per
/// service; `bosun::proto::stats::unescape_name` gives the bytes back. No figure is
/// printed `-0.000`. Catches: a name that splits a line or a field, a negative zero.
#[test]
fn mmi_stats_escapes_names_and_never_prints_negative_zero() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let odd: &[u8] = b"my svc\nx=1%";
    b.handle_message(t, ready(W1, odd, 1));
    b.handle_message(t, ready(W2, ECHO, 1));
    let _ = drain(&mut b);
    let lines = mmi_stats(&mut b, t, b"");
    assert_eq!(lines.len(), 3, "{lines:?}");
    let odd_line = lines
        .iter()
        .find(|l| l.starts_with("service=my%20svc%0Ax%3D1%25 "))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let f = fields(odd_line);
    assert_eq!(f["idle"], "1");
    assert_eq!(
        bosun::proto::stats::unescape_name(&f["service"]).as_deref(),
        Some(odd)
    );
    assert!(lines.iter().any(|l| l.starts_with("service=echo ")));
    // Asked for by its bytes.
    assert_eq!(mmi_stats(&mut b, t, odd).len(), 2);

    let stats = bosun::proto::broker::ServiceStats {
        service: b"s".to_vec(),
        idle: 0,
        busy: 0,
        capacity: 1,
        queued: 0,
        rates: bosun::proto::stats::Rates {
            arrival_rate: -0.0,
            completion_rate: -1e-12,
            mean_wait: -0.0,
            mean_service: 0.0,
            mean_queue: -1e-9,
        },
    };
    let line = stats.to_line();
    assert!(!line.contains("-0.000"), "{line}");
    assert!(line.contains("l_avg=0.000 lambda=0.000 mu=0.000"), "{line}");
}

/// A worker whose heartbeat interval is longer than the broker's expiry flaps: it
/// expires, then its next HEARTBEAT comes from an unregistered worker. The broker
/// measures the silence and says once per service that the intervals differ (10 s
/// against 1 s here); a worker that heartbeats far faster than the broker and then
/// goes silent (it gave up on the broker) is reported as well. Catches: silent
/// flapping, a hint per flap.
#[test]
fn broker_names_a_heartbeat_mismatch_once_per_service() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let mismatches = |events: &[BEvent]| -> Vec<(Vec<u8>, Duration)> {
        events
            .iter()
            .filter_map(|e| match e {
                BEvent::HeartbeatMismatch {
                    service,
                    worker_interval,
                    broker_interval,
                    liveness,
                } => {
                    assert_eq!((*broker_interval, *liveness), (ms(1000), 3));
                    Some((service.clone(), *worker_interval))
                }
                _ => None,
            })
            .collect()
    };
    let mut seen = Vec::new();
    for (round, w) in [W1, W2, W3].into_iter().enumerate() {
        let start = ms(10_000 * round as u64);
        let t = clock.set(start);
        b.handle_message(t, ready(w, ECHO, 1));
        let t = clock.set(start + ms(3000));
        b.handle_timeout(t);
        let t = clock.set(start + ms(10_000));
        b.handle_message(t, cmd(w, Command::Heartbeat));
        let (out, events) = drain(&mut b);
        assert!(out.contains(&Out::Disconnect(w.to_vec())), "{out:?}");
        seen.extend(mismatches(&events));
    }
    assert_eq!(seen, vec![(ECHO.to_vec(), ms(10_000))]);

    // Faster: heartbeats every 100 ms, then silence until expiry.
    let start = clock.now();
    b.handle_message(start, ready(b"f", b"fast", 1));
    for i in 1..=5 {
        b.handle_message(start + ms(100 * i), cmd(b"f", Command::Heartbeat));
    }
    let t = clock.set(clock.elapsed() + ms(500 + 3000));
    b.handle_timeout(t);
    let events = drain(&mut b).1;
    assert!(events.iter().any(|e| matches!(
        e,
        BEvent::WorkerGone {
            reason: GoneReason::Expired,
            ..
        }
    )));
    assert_eq!(mismatches(&events), vec![(b"fast".to_vec(), ms(100))]);

    // Matching intervals: a worker killed and expired says nothing.
    let start = clock.now();
    b.handle_message(start, ready(b"m", b"matched", 1));
    for i in 1..=3 {
        b.handle_message(start + ms(1000 * i), cmd(b"m", Command::Heartbeat));
    }
    let t = clock.set(clock.elapsed() + ms(3000 + 3000));
    b.handle_timeout(t);
    let events = drain(&mut b).1;
    assert!(mismatches(&events).is_empty(), "{events:?}");
}

// ======================================================================================
// Issue 9: the broker stops multiplying work (one copy per id, deadlines, poison)
// ======================================================================================

/// The wall clock (unix ms) the deadline tests start at.
const WALL: u64 = 1_800_000_000_000;

/// An envelope of one frame `body` with id `id` and attempt `attempt`.
fn attempt_of(id: u128, attempt: u32, body: &[u8]) -> Envelope {
    let mut e = envelope(id, body);
    e.meta.attempt = attempt;
    e
}

/// What a bosun worker answers to a REQUEST body: the payload echoed, with the
/// request's metadata (its id and attempt, status Ok).
fn bosun_echo(body: &Frames) -> Frames {
    let (request, _) = Request::parse(None, body.clone());
    bosun::proto::envelope::answer(request.meta.as_ref(), Ok(request.payload))
}

/// The metadata of a reply to `client` in `out`.
fn reply_meta(out: &Out) -> (Vec<u8>, Meta, Frames) {
    let Out::Reply { client, body, .. } = out else {
        panic!("not a reply: {out:?}")
    };
    let meta = Meta::decode(body.last().expect("a metadata frame")).unwrap();
    (client.clone(), meta, body[..body.len() - 1].to_vec())
}

/// A blocking client (a new socket, so a new ROUTER address, per attempt) retries a
/// request that waits in the queue: the broker keeps one copy, hands exactly one to the
/// worker that registers, and routes the reply to the socket of the latest attempt with
/// that attempt in its metadata, which the client takes as its answer. The id leaves
/// the index with the reply. Without the feature: a second copy is queued and
/// dispatched after the first, and the reply goes to the first socket, long closed.
#[test]
fn a_retry_of_a_queued_request_is_joined_and_answered_at_its_new_address() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let mut c = MdpClient::new(t, Mode::Blocking, retry_3x1s(), 1).unwrap();
    let id = c.send(t, ECHO, envelope(901, b"job")).unwrap();
    let (tx, _) = cdrain(&mut c);
    let [CTx::Send(first)] = &tx[..] else {
        panic!("{tx:?}")
    };
    b.handle_message(t, from(b"sock-1", first.clone()));
    assert!(sent(&mut b).is_empty());
    assert!(b.holds(ECHO, &id));

    // No answer within 1 s: the client closes its socket, and 100 ms later sends
    // attempt 2 on a fresh one.
    let t = clock.set(ms(1000));
    c.handle_timeout(t);
    assert_eq!(cdrain(&mut c).0, vec![CTx::Reset]);
    let t = clock.set(ms(1100));
    c.handle_timeout(t);
    let (tx, _) = cdrain(&mut c);
    let [CTx::Send(second)] = &tx[..] else {
        panic!("{tx:?}")
    };
    assert_eq!(sent_request(&tx[0]).1.meta.attempt, 2);
    b.handle_message(t, from(b"sock-2", second.clone()));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        events,
        vec![BEvent::RetryJoined {
            service: ECHO.to_vec(),
            id,
            attempt: 2
        }]
    );
    assert_eq!(b.queued(ECHO), 1, "one copy waits");

    // A worker registers: one REQUEST, the first copy, as it came.
    let t = clock.set(ms(1200));
    b.handle_message(t, ready(W1, ECHO, 1));
    let out = sent(&mut b);
    let [Out::Request {
        worker,
        client,
        body,
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((worker.as_slice(), client.as_slice()), (W1, &b"sock-1"[..]));
    assert_eq!(Meta::decode(body.last().unwrap()).unwrap().attempt, 1);

    // Its reply (attempt 1) goes to the second socket, as the answer to attempt 2.
    let t = clock.set(ms(1300));
    b.handle_message(t, reply(W1, b"sock-1", bosun_echo(body)));
    let out = sent(&mut b);
    assert_eq!(out.len(), 1, "the reply and nothing else: {out:?}");
    let (to, meta, payload) = reply_meta(&out[0]);
    assert_eq!(to, b"sock-2");
    assert_eq!((meta.id, meta.attempt, meta.status), (id, 2, Status::Ok));
    assert_eq!(payload, frames(&[b"job"]));
    let (_, to_client) = route(mdp::client_reply(to, ECHO, {
        let Out::Reply { body, .. } = &out[0] else {
            unreachable!()
        };
        body.clone()
    }));
    c.handle_frames(t, to_client);
    assert_eq!(
        cdrain(&mut c),
        replied_by_echo(id, 2, Answer::Ok(frames(&[b"job"])))
    );

    // Nothing was left to run a second time, and the index is empty.
    let t = clock.set(ms(1400));
    b.handle_timeout(t);
    assert!(sent_no_hb(&mut b).is_empty());
    assert_eq!(
        (b.queued(ECHO), b.inflight(W1), b.indexed()),
        (0, Some(0), 0)
    );
}

/// A retry of a request a worker holds is not dispatched again, even with a second
/// worker idle; the reply goes to the latest attempt's address with its attempt, and an
/// older attempt that arrives late (a network duplicate) changes neither. Without the
/// feature: the idle worker runs the request a second time.
#[test]
fn a_retry_of_a_request_in_flight_is_not_dispatched_again() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, ready(W1, ECHO, 1));
    b.handle_message(t, ready(W2, ECHO, 1));
    drain(&mut b);
    b.handle_message(t, request(C1, ECHO, attempt_of(902, 1, b"job").encode()));
    let out = sent(&mut b);
    let [Out::Request { worker, body, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(worker, W1);
    let body = body.clone();

    // Attempt 2 from a new address, attempt 3 from the first, then attempt 2 again.
    b.handle_message(t, request(C2, ECHO, attempt_of(902, 2, b"job").encode()));
    b.handle_message(t, request(C1, ECHO, attempt_of(902, 3, b"job").encode()));
    b.handle_message(t, request(C2, ECHO, attempt_of(902, 2, b"job").encode()));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "W2 is idle and gets nothing: {out:?}");
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| matches!(e, BEvent::RetryJoined { .. })));
    assert_eq!((b.inflight(W1), b.inflight(W2)), (Some(1), Some(0)));

    b.handle_message(t, reply(W1, C1, bosun_echo(&body)));
    let out = sent(&mut b);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, meta, payload) = reply_meta(&out[0]);
    assert_eq!((to.as_slice(), meta.attempt), (C1, 3));
    assert_eq!(meta.id, Uuid::from_u128(902));
    assert_eq!(payload, frames(&[b"job"]));
    assert_eq!(b.indexed(), 0);

    // Once answered, the id is free: a late retry runs again (the worker-side dedup
    // window is what covers that).
    b.handle_message(t, request(C2, ECHO, attempt_of(902, 4, b"job").encode()));
    assert_eq!(requests(&sent(&mut b)), vec![req_of(W2, b"job")]);
}

/// Requests without bosun metadata (a foreign client's, or one whose last frame only
/// starts like metadata) are never joined: the same request twice is dispatched twice.
/// And the same id for another service is another request.
#[test]
fn foreign_requests_are_never_deduplicated() {
    let clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    for w in [W1, W2, W3] {
        b.handle_message(t, ready(w, ECHO, 2));
    }
    b.handle_message(t, ready(b"other", b"other", 1));
    drain(&mut b);
    b.handle_message(t, plain(C1, ECHO, b"x"));
    b.handle_message(t, plain(C1, ECHO, b"x"));
    let almost = frames(&[b"y", &MAGIC]);
    b.handle_message(t, request(C1, ECHO, almost.clone()));
    b.handle_message(t, request(C1, ECHO, almost));
    let e = envelope(903, b"z");
    b.handle_message(t, request(C1, ECHO, e.encode()));
    b.handle_message(t, request(C1, b"other", e.encode()));
    let (out, events) = drain(&mut b);
    let bodies: Vec<Vec<u8>> = requests(&out).into_iter().map(|(_, body)| body).collect();
    assert_eq!(
        bodies,
        vec![
            b"x".to_vec(),
            b"x".to_vec(),
            b"y".to_vec(),
            b"y".to_vec(),
            b"z".to_vec(),
            b"z".to_vec()
        ]
    );
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(b.indexed(), 2, "the bosun request, once per service");
}

/// A request carries a deadline (unix ms) in its metadata; the broker maps it to its own
/// clock from the wall-clock reading it was fed. Queued past its deadline, it is
/// dropped at that instant (`poll_timeout` asks for it), counted as "deadline passed",
/// and its client gets nothing (its own budget has ended); it is never dispatched, not
/// even to a worker freed exactly at its deadline before `handle_timeout`; one that
/// arrives past its deadline is dropped at once though a worker is idle. Without the
/// feature each would run.
#[test]
fn a_queued_request_past_its_deadline_is_dropped_counted_and_never_dispatched() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_wall_clock(t, WALL);
    let mut e = envelope(904, b"late");
    e.meta.deadline_ms = Some(WALL + 500);
    b.handle_message(t, request(C1, ECHO, e.encode()));
    assert_eq!(b.queued(ECHO), 1);
    assert_eq!(b.poll_timeout(), Some(t + ms(500)));
    let t = clock.set(ms(499));
    b.handle_timeout(t);
    assert_eq!(b.queued(ECHO), 1);
    let t = clock.set(ms(500));
    b.handle_timeout(t);
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "the client is not answered: {out:?}");
    assert_eq!(events, vec![dropped(ECHO, DropReason::DeadlinePassed)]);
    assert_eq!((b.queued(ECHO), b.indexed()), (0, 0));
    let t = clock.set(ms(1500));
    b.handle_timeout(t);
    assert_eq!(
        drain(&mut b).1,
        vec![BEvent::DropSummary {
            service: Some(ECHO.to_vec()),
            reason: DropReason::DeadlinePassed,
            count: 1
        }]
    );
    b.handle_message(t, ready(W1, ECHO, 1));
    assert!(sent(&mut b).is_empty(), "nothing left to dispatch");

    // Arrives past its deadline (the wall clock has moved on by 1.5 s since the
    // reading): dropped though W1 is idle.
    let mut e = envelope(905, b"too late");
    e.meta.deadline_ms = Some(WALL + 1000);
    b.handle_message(t, request(C1, ECHO, e.encode()));
    let (out, events) = drain(&mut b);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(events, vec![dropped(ECHO, DropReason::DeadlinePassed)]);

    // Queued behind a busy worker that frees up exactly at its deadline, before the
    // driver's handle_timeout: not dispatched.
    b.handle_message(t, plain(C2, ECHO, b"busy"));
    let mut e = envelope(906, b"waits");
    e.meta.deadline_ms = Some(WALL + 3000);
    b.handle_message(t, request(C1, ECHO, e.encode()));
    // A deadline later than the TTL: an ordinary request.
    let mut e = envelope(907, b"next");
    e.meta.deadline_ms = Some(WALL + 3_600_000);
    b.handle_message(t, request(C1, ECHO, e.encode()));
    assert_eq!(requests(&sent(&mut b)), vec![req_of(W1, b"busy")]);
    let t = clock.set(ms(3000));
    b.handle_message(t, reply(W1, C2, frames(&[b"done"])));
    let (out, events) = drain(&mut b);
    assert_eq!(out[0], Out::rep(C2, ECHO, b"done"));
    assert_eq!(requests(&out), vec![req_of(W1, b"next")], "906 is skipped");
    assert_eq!(
        but_summaries(events),
        vec![dropped(ECHO, DropReason::DeadlinePassed)]
    );
    assert_eq!(b.indexed(), 1, "only 907, in flight");
}

/// A poison request: every worker it is handed to dies holding it (expires). After
/// `max_deliveries` (3) deaths it is not re-queued: the broker reports DeadLettered with
/// everything a dead letter needs, answers the bosun client with status Error naming
/// the dead-lettering (the client reads a failed answer), hands it to no further
/// worker, and answers a retry of the id with the same error instead of running it
/// again. A foreign client's poison request is dead-lettered too, unanswered. Without
/// the feature it goes round the workers until its TTL.
#[test]
fn a_request_whose_workers_die_max_deliveries_times_is_dead_lettered() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    let long = Retry {
        timeout: Duration::from_secs(60),
        ..retry_3x1s()
    };
    let mut c = MdpClient::new(t, Mode::Pipelined, long, 1).unwrap();
    let id = c.send(t, ECHO, envelope(908, b"poison")).unwrap();
    let (tx, _) = cdrain(&mut c);
    let [CTx::Send(msg)] = &tx[..] else {
        panic!("{tx:?}")
    };
    b.handle_message(t, from(C1, msg.clone()));
    let mut dead = None;
    for (round, w) in [W1, W2, W3].into_iter().enumerate() {
        let start = ms(10_000 * round as u64);
        let t = clock.set(start);
        b.handle_message(t, ready(w, ECHO, 1));
        let (out, _) = drain(&mut b);
        assert_eq!(requests(&out), vec![req_of(w, b"poison")], "round {round}");
        // It dies with it: silent past liveness × interval.
        let t = clock.set(start + ms(3000));
        b.handle_timeout(t);
        let (out, events) = drain(&mut b);
        let requeued = usize::from(round < 2);
        assert_eq!(
            events[0],
            gone(w, GoneReason::Expired, requeued),
            "round {round}"
        );
        if round < 2 {
            assert_eq!(events.len(), 1, "{events:?}");
            assert!(
                out.iter().all(|o| matches!(o, Out::Heartbeat(_))),
                "{out:?}"
            );
            assert_eq!(b.queued(ECHO), 1);
        } else {
            dead = Some((out, events));
        }
    }
    let (out, events) = dead.unwrap();
    let mut meta = Meta::new(id, 0);
    meta.attempt = 1;
    // The client stamped its whole retry budget as the request's deadline.
    meta.deadline_ms = Some(u64::try_from(long.budget().as_millis()).unwrap());
    assert_eq!(
        events[1..],
        [BEvent::DeadLettered {
            service: ECHO.to_vec(),
            id: Some(id),
            payload: frames(&[b"poison"]),
            meta: Some(meta),
            deliveries: 3,
            reason: bosun::proto::broker::DeadLetterReason::WorkersDied,
            last_worker: W3.to_vec(),
        }]
    );
    let replies: Vec<&Out> = out
        .iter()
        .filter(|o| matches!(o, Out::Reply { .. }))
        .collect();
    assert_eq!(replies.len(), 1, "{out:?}");
    let (to, m, message) = reply_meta(replies[0]);
    assert_eq!((to.as_slice(), m.id, m.status), (C1, id, Status::Error));
    let Out::Reply { body, .. } = replies[0] else {
        unreachable!()
    };
    c.handle_frames(clock.now(), client_reply_frames(ECHO, body.clone()));
    let (_, ev) = cdrain(&mut c);
    let [CEvent::Reply {
        answer: Answer::Failed {
            status,
            message: text,
        },
        ..
    }] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*status, Status::Error);
    assert_eq!(text.as_bytes(), message.concat());
    assert!(
        text.contains("dead-lettered") && text.contains("after 3 deliveries"),
        "{text}"
    );
    assert_eq!((b.queued(ECHO), b.indexed()), (0, 0));

    // Not re-queued: a new worker gets nothing. A retry of the id (a client whose
    // answer was lost) is answered with the same error at its address and attempt.
    let t = clock.set(ms(30_000));
    b.handle_message(t, ready(W4, ECHO, 1));
    assert!(sent(&mut b).is_empty());
    b.handle_message(t, request(C2, ECHO, attempt_of(908, 2, b"poison").encode()));
    let (out, events) = drain(&mut b);
    assert_eq!(out.len(), 1, "{out:?}");
    let (to, m, again) = reply_meta(&out[0]);
    assert_eq!((to.as_slice(), m.attempt, m.status), (C2, 2, Status::Error));
    assert_eq!(again, message);
    assert_eq!(
        events,
        vec![BEvent::RetryDeadLettered {
            service: ECHO.to_vec(),
            id,
            attempt: 2
        }]
    );
    assert_eq!((b.inflight(W4), b.queued(ECHO)), (Some(0), 0));

    // A foreign client's poison request: dead-lettered, no answer (a plain frame would
    // read as the reply).
    b.handle_message(t, plain(C2, ECHO, b"p"));
    assert_eq!(requests(&sent(&mut b)), vec![req_of(W4, b"p")]);
    let mut last = Vec::new();
    for (round, w) in [W4, b"w5".as_slice(), b"w6".as_slice()]
        .into_iter()
        .enumerate()
    {
        let start = ms(30_000 + 10_000 * round as u64);
        let t = clock.set(start);
        if round > 0 {
            b.handle_message(t, ready(w, ECHO, 1));
            assert_eq!(requests(&sent(&mut b)), vec![req_of(w, b"p")]);
        }
        assert_eq!(b.inflight(w), Some(1), "round {round}");
        let t = clock.set(start + ms(3000));
        b.handle_timeout(t);
        let (out, events) = drain(&mut b);
        assert!(
            out.iter().all(|o| matches!(o, Out::Heartbeat(_))),
            "{out:?}"
        );
        last = events;
    }
    assert!(
        matches!(
            &last[1..],
            [BEvent::DeadLettered { id: None, meta: None, payload, deliveries: 3, .. }] if *payload == frames(&[b"p"])
        ),
        "{last:?}"
    );
}

const W4: &[u8] = b"w4";

/// A worker that says DISCONNECT while holding a request hands it back cleanly: that is
/// not a death, however often it happens. Expiries and a second READY (a worker that
/// restarted under the same identity) are. Five clean stops, then an expiry and a
/// second READY: still re-queued; the third death dead-letters it. Without the
/// distinction the fifth DISCONNECT would already have dead-lettered it.
#[test]
fn a_clean_disconnect_does_not_count_as_a_death() {
    let mut clock = Clock::new();
    let t = clock.now();
    let mut b = Broker::new(t, bcfg()).unwrap();
    b.handle_message(t, request(C1, ECHO, envelope(909, b"job").encode()));
    for k in 0..5 {
        let w = format!("stopper-{k}").into_bytes();
        b.handle_message(t, ready(&w, ECHO, 1));
        assert_eq!(requests(&sent(&mut b)), vec![req_of(&w, b"job")]);
        b.handle_message(t, cmd(&w, Command::Disconnect));
        assert_eq!(
            drain(&mut b).1,
            vec![gone(&w, GoneReason::Disconnected, 1)],
            "stop {k}"
        );
    }
    // Death 1: expiry.
    b.handle_message(t, ready(W1, ECHO, 1));
    sent(&mut b);
    let t = clock.set(ms(3000));
    b.handle_timeout(t);
    assert_eq!(drain(&mut b).1, vec![gone(W1, GoneReason::Expired, 1)]);
    // Death 2: it comes back under the same identity and says READY again.
    b.handle_message(t, ready(W2, ECHO, 1));
    assert_eq!(requests(&sent(&mut b)), vec![req_of(W2, b"job")]);
    b.handle_message(t, ready(W2, ECHO, 1));
    let (_, events) = drain(&mut b);
    assert!(
        events.contains(&gone(W2, GoneReason::ProtocolError, 1)),
        "{events:?}"
    );
    assert_eq!(b.queued(ECHO), 1);
    // Death 3.
    let t = clock.set(ms(3100));
    b.handle_message(t, ready(W3, ECHO, 1));
    sent(&mut b);
    let t = clock.set(ms(6100));
    b.handle_timeout(t);
    let (out, events) = drain(&mut b);
    assert_eq!(events[0], gone(W3, GoneReason::Expired, 0));
    assert!(
        matches!(&events[1..], [BEvent::DeadLettered { deliveries: 3, .. }]),
        "{events:?}"
    );
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Out::Reply { .. }))
            .count(),
        1
    );
    assert_eq!((b.queued(ECHO), b.indexed()), (0, 0));
}

/// The id index holds only requests that are queued or in flight: with 60 requests,
/// each retried twice from new addresses, it never holds more than the requests
/// pending, every reply goes to its request's latest address, and once all are
/// answered it is empty; requests dropped by their TTL leave it too. (The count-bounded
/// memory of dead-lettered ids is checked by `a_request_whose_workers_die_...`.)
#[test]
fn the_id_index_is_bounded_by_the_requests_pending_and_empty_after_every_reply() {
    let mut clock = Clock::new();
    let t = clock.now();
    let cfg = BrokerConfig {
        request_ttl: ms(5000),
        heartbeat: hb(60_000, 3),
        ..bcfg()
    };
    let mut b = Broker::new(t, cfg).unwrap();
    b.handle_message(t, ready(W1, ECHO, 4));
    b.handle_message(t, ready(W2, ECHO, 4));
    drain(&mut b);
    let pending = |b: &Broker| b.queued(ECHO) + b.inflight(W1).unwrap() + b.inflight(W2).unwrap();
    let mut held: Vec<(Vec<u8>, Vec<u8>, Frames)> = Vec::new();
    let collect = |out: Vec<Out>, held: &mut Vec<(Vec<u8>, Vec<u8>, Frames)>| {
        for o in out {
            if let Out::Request {
                worker,
                client,
                body,
            } = o
            {
                held.push((worker, client, body));
            }
        }
    };
    for k in 0..60u128 {
        let first = format!("c{k}-a1").into_bytes();
        b.handle_message(
            t,
            request(&first, ECHO, attempt_of(1000 + k, 1, b"q").encode()),
        );
        collect(sent(&mut b), &mut held);
        for attempt in 2..=3 {
            let addr = format!("c{k}-a{attempt}").into_bytes();
            b.handle_message(
                t,
                request(&addr, ECHO, attempt_of(1000 + k, attempt, b"q").encode()),
            );
            collect(sent(&mut b), &mut held);
        }
        assert!(b.indexed() <= pending(&b));
    }
    assert_eq!((b.indexed(), pending(&b)), (60, 60));
    let mut answered = 0;
    for _ in 0..1000 {
        let Some((worker, client, body)) = held.pop() else {
            break;
        };
        b.handle_message(t, reply(&worker, &client, bosun_echo(&body)));
        let out = sent(&mut b);
        for o in &out {
            if let Out::Reply { .. } = o {
                let (to, meta, _) = reply_meta(o);
                let k = meta.id.as_u128() - 1000;
                assert_eq!(to, format!("c{k}-a3").into_bytes());
                assert_eq!(meta.attempt, 3);
                answered += 1;
            }
        }
        collect(out, &mut held);
        assert!(b.indexed() <= pending(&b));
    }
    assert_eq!((answered, b.indexed(), pending(&b)), (60, 0, 0));

    // Requests that expire unserved leave the index too; the refusal goes to the
    // latest address.
    for k in 0..5u128 {
        b.handle_message(
            t,
            request(C1, b"nobody", attempt_of(2000 + k, 1, b"q").encode()),
        );
        b.handle_message(
            t,
            request(C2, b"nobody", attempt_of(2000 + k, 2, b"q").encode()),
        );
    }
    assert_eq!(b.indexed(), 5);
    let t = clock.set(ms(5000));
    b.handle_timeout(t);
    let out = sent_no_hb(&mut b);
    assert_eq!(out.len(), 5);
    for o in &out {
        let (to, meta, _) = reply_meta(o);
        assert_eq!(
            (to.as_slice(), meta.attempt, meta.status),
            (C2, 2, Status::Refused)
        );
    }
    assert_eq!(b.indexed(), 0);
}

/// A case the random test above found: a raw request whose bosun metadata says status
/// `Refused`, attempt 0, the nil id, no deadline, then a worker that echoes it. The
/// broker forwards the worker's reply as it must; the model once took a reply saying
/// `Refused` for the broker's own refusal.
#[test]
fn a_request_with_odd_but_valid_metadata_is_answered_through_the_broker() {
    let meta = {
        let mut m = vec![255, 66, 83, 78, 1, 2, 0, 44];
        m.extend_from_slice(&[0; 38]);
        m
    };
    let ops = [
        Op::Raw(
            0,
            vec![Vec::new(), b"MDPC01".to_vec(), b"echo".to_vec(), meta],
        ),
        Op::Ready(3, 0, CapFrame::None),
        Op::Answer(3, 0),
    ];
    let clock = Clock::new();
    let mut m = BrokerModel::new(clock.now());
    for op in &ops {
        m.apply(op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}
