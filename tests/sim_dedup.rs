//! The receivers' gate in virtual time, on all four receiver cores (the Majordomo
//! worker, the 6/PPP worker, the REP server, the Freelance server): a retry of a running
//! request is held and answered with the first copy's reply at its own address and with
//! its own attempt; a retry of a finished one is answered from the reply cache without
//! the handler; an id evicted by count or age runs again; a request past its deadline is
//! not started; a foreign request is handled every time; a failing handler runs again up
//! to its last attempt and is then dead-lettered. Then the window through a crash of the
//! memory store, and a property test over random deliveries, answers and crashes: no id
//! whose answer was sent reaches the application again, and every copy is answered at
//! its own address with its own attempt.
//!
//! Each test counts what it sent, what the application was handed, and what came back.

#[path = "sim/mod.rs"]
mod sim;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bosun::io::receiver::{self, ReceiverOptions, Recorder};
use bosun::proto::dedup::{Limits, Window};
use bosun::proto::envelope::{Envelope, HandlerError, Reply, Request, Status};
use bosun::proto::frames::mdp::{self, Command, FromWorker, ToBroker};
use bosun::proto::frames::{ppp, Frames};
use bosun::proto::gate::{Note, Policy, Record};
use bosun::proto::paranoid_pirate::{Worker as PpWorker, WorkerEvent, WorkerTransmit};
use bosun::proto::server::{self, Dialect, Faults, Server};
use bosun::proto::worker::{Event as MdEvent, MdWorker, Transmit as MdTransmit};
use bosun::store::{DeadReason, Durability, Store};
use bosun::{Backoff, Heartbeat};
use proptest::prelude::*;
use uuid::Uuid;

use sim::{ms, Clock};

/// The wall clock at the origin of virtual time.
const T0_MS: u64 = 1_700_000_000_000;

/// Which receiver core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Md,
    Ppp,
    Rep,
    Flp,
}

const ALL: [Kind; 4] = [Kind::Md, Kind::Ppp, Kind::Rep, Kind::Flp];
/// The receivers that can hold a copy for later (not a REP socket).
const HOLDING: [Kind; 3] = [Kind::Md, Kind::Ppp, Kind::Flp];

/// What a receiver did since the last look.
#[derive(Debug, Default)]
struct Seen {
    /// Answers sent: (return address, frames as the client reads them).
    sent: Vec<(Vec<u8>, Frames)>,
    /// Requests handed to the application: (token, request).
    handed: Vec<(u64, Request)>,
    notes: Vec<Note>,
    records: Vec<Record>,
}

/// One receiver core, driven as its driver would drive it (records drained first).
enum Rx {
    Md(MdWorker),
    Ppp(PpWorker),
    Server(Server),
}

impl Rx {
    fn new(kind: Kind, t: Instant, policy: Policy) -> Rx {
        let hb = Heartbeat {
            interval: Duration::from_secs(3600),
            liveness: 3,
        };
        let backoff = Backoff {
            initial: ms(100),
            max: ms(100),
            jitter: 0.0,
        };
        let mut rx = match kind {
            Kind::Md => Rx::Md(MdWorker::new(t, b"echo", 8, hb, backoff, 1).unwrap()),
            Kind::Ppp => Rx::Ppp(PpWorker::new(t, hb, backoff, 1).unwrap()),
            Kind::Rep => Rx::Server(Server::new(Dialect::Rep, Faults::default())),
            Kind::Flp => Rx::Server(Server::new(Dialect::Freelance, Faults::default())),
        };
        match &mut rx {
            Rx::Md(w) => w.set_policy(policy).unwrap(),
            Rx::Ppp(w) => w.set_policy(policy).unwrap(),
            Rx::Server(s) => s.set_policy(policy).unwrap(),
        }
        rx.wall(t, T0_MS);
        let _ = rx.look(); // connect, READY
        rx
    }

    fn kind_can_hold(&self) -> bool {
        !matches!(self, Rx::Server(s) if s.dialect() == Dialect::Rep)
    }

    fn wall(&mut self, now: Instant, unix_ms: u64) {
        match self {
            Rx::Md(w) => w.handle_wall_clock(now, unix_ms),
            Rx::Ppp(w) => w.handle_wall_clock(now, unix_ms),
            Rx::Server(s) => s.handle_wall_clock(now, unix_ms),
        }
    }

    /// A request `body` (payload and metadata frames) from the client at `from`.
    fn deliver(&mut self, now: Instant, from: &[u8], body: Frames) {
        match self {
            Rx::Md(w) => w.handle_frames(now, mdp::routed(None, Command::Request, from, body)),
            Rx::Ppp(w) => {
                let mut msg = vec![from.to_vec(), Vec::new()];
                msg.extend(body);
                w.handle_frames(now, msg)
            }
            Rx::Server(s) if s.dialect() == Dialect::Rep => s.handle_frames(now, body),
            Rx::Server(s) => {
                // [client][control][body...]: the control frame is the request's id.
                let ctl = bosun::proto::envelope::peek_id(&body)
                    .map_or_else(|| b"ctl".to_vec(), |id| id.as_bytes().to_vec());
                let mut msg = vec![from.to_vec(), ctl];
                msg.extend(body);
                s.handle_frames(now, msg)
            }
        }
    }

    /// The application's answer to `token`.
    fn answer(&mut self, now: Instant, token: u64, reply: Reply) {
        match self {
            Rx::Md(w) => w.reply(now, token, reply),
            Rx::Ppp(w) => w.reply(now, reply).unwrap(),
            Rx::Server(s) => s.reply(now, token, reply),
        }
    }

    /// Everything it did since the last look: records first, as a driver drains them.
    fn look(&mut self) -> Seen {
        let mut seen = Seen::default();
        match self {
            Rx::Md(w) => {
                while let Some(r) = w.poll_record() {
                    seen.records.push(r);
                }
                while let Some(t) = w.poll_transmit() {
                    let MdTransmit::Send(frames) = t else {
                        continue;
                    };
                    if let Ok(ToBroker::Worker(FromWorker::Reply { client, body })) =
                        mdp::parse_to_broker(frames)
                    {
                        seen.sent.push((client, body));
                    }
                }
                while let Some(e) = w.poll_event() {
                    match e {
                        MdEvent::Request { token, request } => seen.handed.push((token, request)),
                        MdEvent::Gated(n) => seen.notes.push(n),
                        _ => {}
                    }
                }
            }
            Rx::Ppp(w) => {
                while let Some(r) = w.poll_record() {
                    seen.records.push(r);
                }
                while let Some(t) = w.poll_transmit() {
                    let WorkerTransmit::Send(frames) = t else {
                        continue;
                    };
                    if let Ok(ppp::FromWorker::Reply(mut frames)) = ppp::parse_from_worker(frames) {
                        // [address][""][body...]
                        let body = frames.split_off(2);
                        seen.sent.push((frames.swap_remove(0), body));
                    }
                }
                while let Some(e) = w.poll_event() {
                    match e {
                        WorkerEvent::Request { request } => seen.handed.push((0, request)),
                        WorkerEvent::Gated(n) => seen.notes.push(n),
                        _ => {}
                    }
                }
            }
            Rx::Server(s) => {
                let rep = s.dialect() == Dialect::Rep;
                while let Some(r) = s.poll_record() {
                    seen.records.push(r);
                }
                while let Some(t) = s.poll_transmit() {
                    let server::Transmit::Send(mut frames) = t else {
                        continue;
                    };
                    if rep {
                        seen.sent.push((Vec::new(), frames));
                    } else {
                        let body = frames.split_off(2);
                        seen.sent.push((frames.swap_remove(0), body));
                    }
                }
                while let Some(e) = s.poll_event() {
                    match e {
                        server::Event::Request { token, request, .. } => {
                            seen.handed.push((token, request))
                        }
                        server::Event::Gated(n) => seen.notes.push(n),
                        _ => {}
                    }
                }
            }
        }
        seen
    }

    /// The return address a reply to `from` is sent to (a REP socket has none).
    fn addr(&self, from: &[u8]) -> Vec<u8> {
        match self {
            Rx::Server(s) if s.dialect() == Dialect::Rep => Vec::new(),
            _ => from.to_vec(),
        }
    }
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// A bosun request of one frame `body`: id `n`, `attempt`, created at T0.
fn req(n: u128, attempt: u32, body: &[u8]) -> Frames {
    req_meta(n, attempt, None, body)
}

fn req_meta(n: u128, attempt: u32, deadline_ms: Option<u64>, body: &[u8]) -> Frames {
    let mut e = Envelope::new(id(n), T0_MS, vec![body.to_vec()]);
    e.meta.attempt = attempt;
    e.meta.deadline_ms = deadline_ms;
    e.encode()
}

/// The payload, id, attempt and status of an answer.
fn read(frames: &Frames) -> (Vec<u8>, Uuid, u32, Status) {
    let e = Envelope::decode(frames.clone()).expect("an answer with metadata");
    (e.payload.concat(), e.meta.id, e.meta.attempt, e.meta.status)
}

fn window(limits: Limits) -> Policy {
    Policy {
        window: Some(Window::new(limits)),
        ..Policy::default()
    }
}

fn dedup() -> Policy {
    window(Limits::default())
}

fn ok(body: &[u8]) -> Reply {
    Ok(vec![body.to_vec()])
}

// ======================================================================================
// Duplicates
// ======================================================================================

/// A retry that arrives while the first copy runs is not handed over; the first copy's
/// reply answers both, each at its own address with its own attempt. Without the gate
/// the handler would run twice (catches: a held copy handed to the application, a held
/// copy never answered, the retry answered with the first copy's attempt, which a Lazy
/// Pirate client discards as stale).
#[test]
fn a_retry_while_the_first_copy_runs_is_answered_with_it_and_the_handler_runs_once() {
    for kind in HOLDING {
        let clock = Clock::new();
        let t = clock.now();
        let mut rx = Rx::new(kind, t, dedup());
        rx.deliver(t, b"c-first", req(1, 1, b"job"));
        let first = rx.look();
        assert_eq!(first.handed.len(), 1, "{kind:?}");
        assert!(
            matches!(first.records[..], [Record::Began { id: i, .. }] if i == id(1)),
            "{kind:?}: {:?}",
            first.records
        );
        rx.deliver(t, b"c-retry", req(1, 2, b"job"));
        let retry = rx.look();
        assert!(retry.handed.is_empty(), "{kind:?}: the retry ran");
        assert!(retry.sent.is_empty(), "{kind:?}");
        assert_eq!(
            retry.notes,
            [Note::Joined {
                id: id(1),
                attempt: 2
            }]
        );
        rx.answer(t, first.handed[0].0, ok(b"done"));
        let done = rx.look();
        let got: Vec<_> = done
            .sent
            .iter()
            .map(|(to, f)| (to.clone(), read(f)))
            .collect();
        assert_eq!(
            got,
            [
                (
                    b"c-first".to_vec(),
                    (b"done".to_vec(), id(1), 1, Status::Ok)
                ),
                (
                    b"c-retry".to_vec(),
                    (b"done".to_vec(), id(1), 2, Status::Ok)
                ),
            ],
            "{kind:?}"
        );
        assert!(
            matches!(done.records[..], [Record::Finished { id: i, reply: Some(_), .. }] if i == id(1)),
            "{kind:?}: {:?}",
            done.records
        );
    }
}

/// A REP socket answers only the request it holds, so a copy of a running request is
/// refused at once, not held (bosun's REP server never reads one: its handler runs
/// before the next read).
#[test]
fn a_rep_server_refuses_a_copy_of_a_running_request_at_once() {
    let t = Clock::new().now();
    let mut rx = Rx::new(Kind::Rep, t, dedup());
    assert!(!rx.kind_can_hold());
    rx.deliver(t, b"", req(1, 1, b"job"));
    let token = rx.look().handed[0].0;
    rx.deliver(t, b"", req(1, 2, b"job"));
    let seen = rx.look();
    assert!(seen.handed.is_empty());
    let (_, got_id, attempt, status) = read(&seen.sent[0].1);
    assert_eq!((got_id, attempt, status), (id(1), 2, Status::Refused));
    rx.answer(t, token, ok(b"done"));
    assert_eq!(
        rx.look().sent.len(),
        1,
        "only the first copy is answered then"
    );
}

/// A retry of a finished request is answered from the reply cache, at its address with
/// its attempt and the cached status, and the handler is not called: successes and
/// failures alike, multi-frame payloads intact.
#[test]
fn a_retry_after_the_answer_is_replayed_from_the_cache_without_the_handler() {
    for kind in ALL {
        let t = Clock::new().now();
        let mut rx = Rx::new(kind, t, dedup());
        for (n, reply) in [
            (1, Ok(vec![b"a".to_vec(), Vec::new(), b"c".to_vec()])),
            (2, Err(HandlerError::new("bad input"))),
        ] {
            rx.deliver(t, b"c1", req(n, 1, b"job"));
            let token = rx.look().handed[0].0;
            rx.answer(t, token, reply.clone());
            let first = rx.look();
            assert_eq!(first.sent.len(), 1);
            for attempt in 2..=3 {
                rx.deliver(t + ms(10), b"c2", req(n, attempt, b"job"));
                let seen = rx.look();
                assert!(seen.handed.is_empty(), "{kind:?}: id {n} ran again");
                assert_eq!(seen.notes, [Note::Replayed { id: id(n), attempt }]);
                let (to, frames) = &seen.sent[0];
                assert_eq!(to, &rx.addr(b"c2"), "{kind:?}");
                let e = Envelope::decode(frames.clone()).unwrap();
                assert_eq!((e.meta.id, e.meta.attempt), (id(n), attempt), "{kind:?}");
                match &reply {
                    Ok(payload) => {
                        assert_eq!((&e.payload, e.meta.status), (payload, Status::Ok))
                    }
                    Err(err) => assert_eq!(
                        (e.payload.concat(), e.meta.status),
                        (err.message.clone().into_bytes(), Status::Error)
                    ),
                }
            }
        }
    }
}

/// The documented limit: an id that left the window, by count or by age, is forgotten,
/// and a copy that arrives later runs again.
#[test]
fn an_id_evicted_by_count_or_age_runs_again() {
    for kind in ALL {
        let t = Clock::new().now();
        let limits = Limits {
            max_ids: 2,
            max_age: Duration::from_secs(60),
            max_reply_bytes: 1 << 20,
        };
        let mut rx = Rx::new(kind, t, window(limits));
        let run = |rx: &mut Rx, now: Instant, n: u128, attempt: u32| -> Seen {
            rx.deliver(now, b"c", req(n, attempt, b"x"));
            let mut seen = rx.look();
            if let Some(&(token, _)) = seen.handed.first() {
                rx.answer(now, token, ok(b"r"));
                let done = rx.look();
                seen.sent.extend(done.sent);
                seen.records.extend(done.records);
            }
            seen
        };
        for n in 1..=3 {
            assert_eq!(run(&mut rx, t, n, 1).handed.len(), 1);
        }
        // Three ids in a window of two: id 1 was forgotten (and the log told so).
        let again = run(&mut rx, t, 1, 2);
        assert_eq!(
            again.handed.len(),
            1,
            "{kind:?}: evicted by count, runs again"
        );
        assert!(again
            .records
            .iter()
            .any(|r| matches!(r, Record::Forgotten { ids } if ids.contains(&id(2)))));
        // Age: id 3 finished at T0; at T0 + 59.999 s it is replayed, at T0 + 60 s run.
        assert!(run(&mut rx, t + ms(59_999), 3, 2).handed.is_empty());
        assert_eq!(
            run(&mut rx, t + ms(60_000), 3, 3).handed.len(),
            1,
            "{kind:?}: evicted by age, runs again"
        );
    }
}

/// A new request whose deadline has passed is not started: it is answered `Refused`,
/// "deadline passed". One whose deadline is ahead, or that has none, runs. A deadline is
/// judged even without a window.
#[test]
fn a_request_past_its_deadline_is_not_started() {
    for kind in ALL {
        for policy in [dedup(), Policy::default()] {
            let mut clock = Clock::new();
            let t = clock.now();
            let mut rx = Rx::new(kind, t, policy);
            let now = clock.advance(ms(5_000)); // the wall clock reads T0 + 5 s
            rx.deliver(now, b"c", req_meta(1, 1, Some(T0_MS + 4_000), b"late"));
            let seen = rx.look();
            assert!(
                seen.handed.is_empty(),
                "{kind:?}: a late request was started"
            );
            let (body, _, attempt, status) = read(&seen.sent[0].1);
            assert_eq!((attempt, status), (1, Status::Refused));
            assert!(
                String::from_utf8_lossy(&body).contains("deadline passed 1000 ms"),
                "{body:?}"
            );
            assert!(matches!(
                seen.notes[..],
                [Note::DeadlinePassed { late_ms: 1000, .. }]
            ));
            assert!(seen.records.is_empty(), "nothing ran, nothing recorded");
            for (n, deadline) in [(2, Some(T0_MS + 5_001)), (3, None)] {
                rx.deliver(now, b"c", req_meta(n, 1, deadline, b"on time"));
                let seen = rx.look();
                assert_eq!(seen.handed.len(), 1, "{kind:?}: id {n}");
                rx.answer(now, seen.handed[0].0, ok(b"r"));
                assert_eq!(rx.look().sent.len(), 1);
            }
        }
    }
}

/// A foreign peer's request (no metadata) has no id: it is handed over every time and
/// answered plainly, whatever the window holds.
#[test]
fn a_foreign_request_sent_twice_is_handled_twice() {
    for kind in ALL {
        let t = Clock::new().now();
        let mut policy = dedup();
        policy.max_attempts = Some(3);
        let mut rx = Rx::new(kind, t, policy);
        let mut handled = 0;
        for _ in 0..2 {
            rx.deliver(t, b"f", vec![b"same".to_vec()]);
            let seen = rx.look();
            assert_eq!(seen.handed.len(), 1, "{kind:?}");
            handled += 1;
            // A failure is not run again either: foreign requests have no attempts.
            rx.answer(t, seen.handed[0].0, Err(HandlerError::new("no")));
            let done = rx.look();
            assert_eq!(done.sent, [(rx.addr(b"f"), vec![b"error: no".to_vec()])]);
            assert!(done.records.is_empty() && done.handed.is_empty());
        }
        assert_eq!(handled, 2);
    }
}

// ======================================================================================
// Attempts and dead letters
// ======================================================================================

fn attempts_policy(max: u32) -> Policy {
    Policy {
        window: Some(Window::new(Limits::default())),
        max_attempts: Some(max),
        dead_letters_kept: true,
    }
}

/// A handler that always fails runs on attempts 1, 2 and 3 (same token, no answer in
/// between), then the request is dead-lettered: one `DeadLettered` record with the
/// payload, the last error and 3 attempts, before the one answer, status `Error`, which
/// says so and carries the delivered attempt. A later copy gets the same error without
/// a run.
#[test]
fn a_handler_that_always_fails_runs_max_attempts_times_then_is_dead_lettered() {
    for kind in ALL {
        let t = Clock::new().now();
        let mut rx = Rx::new(kind, t, attempts_policy(3));
        rx.deliver(t, b"c", req(7, 1, b"poison"));
        let mut runs = Vec::new();
        let mut seen = rx.look();
        let mut records = std::mem::take(&mut seen.records);
        let mut sent = Vec::new();
        for _ in 0..10 {
            let Some((token, request)) = seen.handed.pop() else {
                break;
            };
            runs.push(request.attempt());
            assert_eq!(request.payload, vec![b"poison".to_vec()], "{kind:?}");
            rx.answer(
                t,
                token,
                Err(HandlerError::new(format!("boom {}", runs.len()))),
            );
            seen = rx.look();
            records.extend(std::mem::take(&mut seen.records));
            sent.extend(std::mem::take(&mut seen.sent));
        }
        assert_eq!(runs, [1, 2, 3], "{kind:?}: the runs' attempts");
        assert_eq!(sent.len(), 1, "{kind:?}: one answer, after the last run");
        let (body, _, attempt, status) = read(&sent[0].1);
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!((attempt, status), (1, Status::Error));
        assert!(
            body.contains("gave up after 3 failed attempts")
                && body.contains("dead-lettered")
                && body.contains("boom 3"),
            "{body}"
        );
        let dead: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::DeadLettered {
                    id,
                    payload,
                    attempts,
                    last_error,
                    ..
                } => Some((*id, payload.clone(), *attempts, last_error.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            dead,
            [(id(7), vec![b"poison".to_vec()], 3, "boom 3".to_string())],
            "{kind:?}"
        );
        // Dead letter before the finished entry: both before the answer is sent.
        let order: Vec<_> = records
            .iter()
            .map(|r| match r {
                Record::Began { .. } => "began",
                Record::Finished { .. } => "finished",
                Record::DeadLettered { .. } => "dead",
                Record::Forgotten { .. } => "forgotten",
            })
            .collect();
        assert_eq!(order, ["began", "dead", "finished"]);
        rx.deliver(t, b"c", req(7, 4, b"poison"));
        let later = rx.look();
        assert!(later.handed.is_empty(), "{kind:?}: a dead letter ran again");
        assert_eq!(read(&later.sent[0].1).3, Status::Error);
    }
}

/// Attempts count from the delivered copy's: a retry numbered at or past the last
/// attempt that fails is given up at once; one that succeeds on a re-run is answered
/// with the success and leaves no dead letter. Without a store the answer says no dead
/// letter was kept, and no record is queued for one.
#[test]
fn attempts_count_from_the_delivered_copy_and_a_success_ends_them() {
    let t = Clock::new().now();
    let mut rx = Rx::new(Kind::Md, t, attempts_policy(3));
    rx.deliver(t, b"c", req(1, 3, b"x"));
    let token = rx.look().handed[0].0;
    rx.answer(t, token, Err(HandlerError::new("once")));
    let seen = rx.look();
    assert_eq!(read(&seen.sent[0].1).2, 3, "answered with its own attempt");
    assert!(matches!(
        seen.notes[..],
        [Note::GaveUp {
            attempts: 3,
            dead_lettered: true,
            ..
        }]
    ));

    rx.deliver(t, b"c", req(2, 1, b"y"));
    let token = rx.look().handed[0].0;
    rx.answer(t, token, Err(HandlerError::new("flaky")));
    let rerun = rx.look();
    assert_eq!(rerun.handed[0].1.attempt(), 2);
    assert!(rerun.sent.is_empty());
    rx.answer(t, rerun.handed[0].0, ok(b"fine"));
    let done = rx.look();
    assert_eq!(
        read(&done.sent[0].1),
        (b"fine".to_vec(), id(2), 1, Status::Ok)
    );
    assert!(!done
        .records
        .iter()
        .any(|r| matches!(r, Record::DeadLettered { .. })));

    let mut bare = Rx::new(
        Kind::Ppp,
        t,
        Policy {
            max_attempts: Some(1),
            ..Policy::default()
        },
    );
    bare.deliver(t, b"c", req(3, 1, b"z"));
    let token = bare.look().handed[0].0;
    bare.answer(t, token, Err(HandlerError::new("no")));
    let seen = bare.look();
    let body = String::from_utf8_lossy(&read(&seen.sent[0].1).0).into_owned();
    assert!(body.contains("no dead letter kept"), "{body}");
    assert!(seen.records.is_empty());
}

// ======================================================================================
// Through the store
// ======================================================================================

/// Runs every record of `rx` through `recorder`, as the driver does before it sends.
fn settle(rx: &mut Rx, recorder: &mut Recorder) -> Seen {
    let seen = rx.look();
    for r in seen.records.iter().cloned() {
        recorder.write(r).unwrap();
    }
    recorder.commit().unwrap();
    seen
}

/// A worker on a memory store: its handler answers, the answer is recorded, and the
/// worker "crashes" before the reply leaves (the store keeps only what was flushed).
/// Restarted on the store, it answers the client's retry from the cache: the handler
/// ran once. With `none` the finished entry is not flushed, and the retry runs again (the
/// documented cost of `none`). A handler interrupted by the crash is found, abandoned,
/// and may run again. A dead letter survives the crash with everything a `bosun dlq`
/// needs.
#[test]
fn the_window_and_dead_letters_survive_a_crash_of_the_store() {
    for (durability, runs_again) in [
        (Durability::Every, false),
        (Durability::Batched, false),
        (Durability::None, true),
    ] {
        let t = Clock::new().now();
        let store = Store::memory();
        let options = ReceiverOptions {
            store: Some(store.clone()),
            durability,
            max_attempts: Some(1),
            ..ReceiverOptions::default()
        };
        let (policy, mut recorder) = receiver::open(&options, T0_MS).unwrap();
        let mut rx = Rx::new(Kind::Md, t, policy);
        let mut handler_runs = 0;
        // First a poison request (a dead letter is flushed whatever the durability, and
        // that flush takes every earlier write with it).
        rx.deliver(t, b"c", req(2, 1, b"poison"));
        let (token, _) = settle(&mut rx, &mut recorder).handed[0].clone();
        rx.answer(t, token, Err(HandlerError::new("always")));
        let _ = settle(&mut rx, &mut recorder);
        rx.deliver(t, b"c", req(1, 1, b"once"));
        let (token, _) = settle(&mut rx, &mut recorder).handed[0].clone();
        handler_runs += 1;
        rx.answer(t, token, ok(b"did it"));
        // Recorded and committed; the reply is never sent: the process dies here.
        let _lost = settle(&mut rx, &mut recorder);
        rx.deliver(t, b"c", req(3, 1, b"interrupted"));
        let _ = settle(&mut rx, &mut recorder);

        let crashed = store.crash_and_reopen().unwrap();
        drop((rx, recorder));
        let options = ReceiverOptions {
            store: Some(crashed.clone()),
            ..options
        };
        let (policy, mut recorder) = receiver::open(&options, T0_MS + 2_000).unwrap();
        let mut rx = Rx::new(Kind::Md, t + ms(2_000), policy);
        rx.wall(t + ms(2_000), T0_MS + 2_000);
        rx.deliver(t + ms(2_000), b"c2", req(1, 2, b"once"));
        let seen = settle(&mut rx, &mut recorder);
        handler_runs += seen.handed.len();
        if runs_again {
            assert_eq!(
                handler_runs, 2,
                "{durability}: nothing flushed, so it runs again"
            );
            continue;
        }
        assert_eq!(
            handler_runs, 1,
            "{durability}: the retry ran the handler again"
        );
        assert_eq!(
            read(&seen.sent[0].1),
            (b"did it".to_vec(), id(1), 2, Status::Ok),
            "{durability}"
        );
        let letter = crashed.dead_letters().unwrap().get(id(2)).unwrap();
        let letter = letter.expect("the dead letter survived");
        assert_eq!(
            (
                letter.payload,
                letter.attempts,
                letter.last_error,
                letter.reason,
                letter.service
            ),
            (
                vec![b"poison".to_vec()],
                1,
                "always".to_string(),
                DeadReason::HandlerFailed,
                Some(b"echo".to_vec())
            )
        );
        // Id 3 was running: with `every` its start was on disk, so the restart found it
        // interrupted and abandoned it (forgot it); with `batched` it was never written.
        // Either way its retry runs.
        let log = crashed.dedup_log(Durability::None).unwrap();
        assert_eq!(log.len(), 2, "{durability}: ids 1 and 2, finished");
        rx.deliver(t + ms(2_000), b"c2", req(3, 2, b"interrupted"));
        assert_eq!(
            settle(&mut rx, &mut recorder).handed.len(),
            1,
            "{durability}"
        );
        let running_written = usize::from(durability == Durability::Every);
        assert_eq!(log.len(), 2 + running_written, "{durability}");
    }
}

// ======================================================================================
// End to end: a Lazy Pirate client and a REP server over a lossy link
// ======================================================================================

/// A Lazy Pirate client and a REP server with a window, over a seeded link that loses
/// 30% of messages and duplicates 10%: the client re-sends on every lost request or
/// reply, so the server reads many copies, yet each request's handler runs exactly once
/// and the client takes every answer (a replay carries the retry's attempt, the only
/// one the client accepts). Without the window the handler runs once per copy read.
#[test]
fn a_lazy_pirate_client_over_a_lossy_link_gets_each_request_run_once() {
    use bosun::proto::lazy_pirate::{Event as LpEvent, LazyPirate, Transmit as LpTransmit};
    use bosun::Retry;
    use sim::{Link, LinkConfig};

    let (mut copies_read, mut replayed, mut answered) = (0, 0, 0);
    for seed in 0..40u64 {
        let mut clock = Clock::new();
        let retry = Retry {
            timeout: ms(100),
            retries: 30,
            backoff: Backoff {
                initial: ms(10),
                max: ms(40),
                jitter: 0.0,
            },
            deadline: None,
        };
        let start = clock.now();
        let mut client = LazyPirate::new(clock.now(), retry, seed).unwrap();
        let mut server = Rx::new(Kind::Rep, clock.now(), dedup());
        let cfg = LinkConfig {
            loss: 0.3,
            duplicate: 0.1,
            delay_min: ms(1),
            delay_max: ms(30),
        };
        // (to the server?, the client socket's generation, frames)
        let mut link: Link<(bool, u64, Frames)> = Link::new(cfg, seed);
        let mut socket = 0u64;
        let mut runs: HashMap<Vec<u8>, u32> = HashMap::new();
        for n in 0..20u128 {
            let body = format!("req {n}").into_bytes();
            // Created now on the wall clock the server extrapolates from T0_MS: the
            // client stamps its deadline from it.
            let created = T0_MS + (clock.now() - start).as_millis() as u64;
            let sent_id = client
                .send(
                    clock.now(),
                    Envelope::new(id(n), created, vec![body.clone()]),
                )
                .unwrap();
            let mut reply = None;
            for _ in 0..100_000 {
                while let Some(t) = client.poll_transmit() {
                    match t {
                        LpTransmit::Send(f) => link.send(clock.now(), (true, socket, f)),
                        // A fresh REQ socket: replies to the old one are lost.
                        LpTransmit::Reset => socket += 1,
                    }
                }
                while let Some(e) = client.poll_event() {
                    match e {
                        LpEvent::Reply { id, answer, .. } => reply = Some((id, answer)),
                        LpEvent::GaveUp { .. } => panic!("seed {seed}: gave up on {n}"),
                        _ => {}
                    }
                }
                if reply.is_some() {
                    break;
                }
                let next = [link.next_delivery(), client.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min()
                    .expect("something is pending");
                let now = clock.advance_to(next.max(clock.now()));
                while let Some((to_server, gen, frames)) = link.pop_due(now) {
                    if !to_server {
                        if gen == socket {
                            client.handle_reply(now, frames);
                        }
                        continue;
                    }
                    copies_read += 1;
                    server.deliver(now, b"", frames);
                    let seen = server.look();
                    replayed += seen.notes.len();
                    for (token, request) in seen.handed {
                        *runs.entry(request.body()).or_insert(0) += 1;
                        server.answer(now, token, Ok(request.payload));
                    }
                    let mut sent = seen.sent;
                    sent.extend(server.look().sent);
                    for (_, answer) in sent {
                        link.send(now, (false, gen, answer));
                    }
                }
                client.handle_timeout(clock.now());
            }
            let (got_id, answer) = reply.expect("answered");
            assert_eq!(got_id, sent_id);
            assert_eq!(
                answer,
                bosun::proto::envelope::Answer::Ok(vec![body.clone()])
            );
            answered += 1;
            assert_eq!(runs.get(&body), Some(&1), "seed {seed}: request {n}");
        }
    }
    assert_eq!(answered, 40 * 20);
    // The link lost replies and duplicated requests: the server read more copies than
    // requests, and answered the extra ones from its cache.
    assert!(copies_read > answered + 200, "{copies_read} copies read");
    assert!(replayed > 200, "{replayed} copies replayed");
}

// ======================================================================================
// A property: random deliveries, answers, failures and crashes
// ======================================================================================

#[derive(Debug, Clone)]
enum Op {
    /// A copy of request `id` with `attempt` from client `from`.
    Deliver { id: u8, attempt: u8, from: u8 },
    /// The application answers the `which`-th running request; fails it if `fail`.
    Answer { which: u8, fail: bool },
    /// The worker process dies; what was flushed survives; it restarts.
    Crash,
    /// Time passes.
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5, 1u8..5, 0u8..3).prop_map(|(id, attempt, from)| Op::Deliver { id, attempt, from }),
        5 => (0u8..8, proptest::bool::weighted(0.3)).prop_map(|(which, fail)| Op::Answer { which, fail }),
        1 => Just(Op::Crash),
        1 => (0u16..3000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(sim::cases(256))]

    /// Whatever arrives, fails or crashes, on every holding receiver with a window far
    /// larger than the run (no eviction) and `batched` durability:
    /// - an id whose answer was sent is never handed to the application again;
    /// - every answer goes to an address that sent a copy of that id, carrying that
    ///   copy's attempt, and no copy is answered twice;
    /// - every copy is answered, unless it was delivered to a process that then died
    ///   before answering it;
    /// - a request runs at most `max_attempts` times per delivery it was handed over on.
    #[test]
    fn no_id_whose_answer_left_reaches_the_application_again(
        kind in prop_oneof![Just(Kind::Md), Just(Kind::Ppp), Just(Kind::Flp)],
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        const MAX: u32 = 2;
        let mut clock = Clock::new();
        let store = Store::memory();
        let mut options = ReceiverOptions {
            store: Some(store.clone()),
            durability: Durability::Batched,
            max_attempts: Some(MAX),
            ..ReceiverOptions::default()
        };
        let (policy, mut recorder) = receiver::open(&options, T0_MS).unwrap();
        let mut rx = Rx::new(kind, clock.now(), policy);
        let mut wall_ms = T0_MS;
        let mut store = store;
        // Running requests handed to the application: (token, id).
        let mut running: Vec<(u64, Uuid)> = Vec::new();
        // Ids answered at least once (an answer left the process).
        let mut answered: HashMap<Uuid, u32> = HashMap::new();
        // Copies waiting for an answer, per (address, id, attempt); false once answered.
        let mut copies: HashMap<(Vec<u8>, Uuid, u32), bool> = HashMap::new();
        // Runs per id since its last hand-over from a delivery.
        let mut runs: HashMap<Uuid, u32> = HashMap::new();
        let check = |seen: &Seen, running: &mut Vec<(u64, Uuid)>,
                         answered: &mut HashMap<Uuid, u32>,
                         copies: &mut HashMap<(Vec<u8>, Uuid, u32), bool>,
                         runs: &mut HashMap<Uuid, u32>, fresh: bool| -> Result<(), TestCaseError> {
            for (token, request) in &seen.handed {
                let id = request.id().unwrap();
                prop_assert!(!answered.contains_key(&id), "{id} answered, then handed over again");
                let n = runs.entry(id).or_insert(0);
                if fresh { *n = 0; }
                *n += 1;
                prop_assert!(*n <= MAX, "{id} ran {n} times");
                if !running.iter().any(|(t, _)| t == token) {
                    running.push((*token, id));
                }
            }
            for (to, frames) in &seen.sent {
                let e = Envelope::decode(frames.clone()).unwrap();
                let key = (to.clone(), e.meta.id, e.meta.attempt);
                match copies.get_mut(&key) {
                    Some(waiting) if *waiting => *waiting = false,
                    Some(_) => prop_assert!(false, "{key:?} answered twice"),
                    None => prop_assert!(false, "{key:?} answered, never sent"),
                }
                *answered.entry(e.meta.id).or_insert(0) += 1;
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Deliver { id: n, attempt, from } => {
                    let from = vec![b'c', from];
                    let key = (from.clone(), id(n.into()), u32::from(attempt));
                    if copies.get(&key) == Some(&true) {
                        continue; // the same client does not send one attempt twice
                    }
                    copies.insert(key, true);
                    rx.deliver(clock.now(), &from, req(n.into(), attempt.into(), b"x"));
                    let seen = settle(&mut rx, &mut recorder);
                    check(&seen, &mut running, &mut answered, &mut copies, &mut runs, true)?;
                }
                Op::Answer { which, fail } => {
                    if running.is_empty() {
                        continue;
                    }
                    let (token, _) = running.remove(usize::from(which) % running.len());
                    let reply = if fail { Err(HandlerError::new("x")) } else { ok(b"r") };
                    rx.answer(clock.now(), token, reply);
                    let seen = settle(&mut rx, &mut recorder);
                    check(&seen, &mut running, &mut answered, &mut copies, &mut runs, false)?;
                }
                Op::Crash => {
                    // Everything in flight here is lost with the process: unanswered
                    // copies delivered to it are no longer expected.
                    copies.retain(|_, waiting| !*waiting);
                    running.clear();
                    store = store.crash_and_reopen().unwrap();
                    options.store = Some(store.clone());
                    let (policy, r) = receiver::open(&options, wall_ms).unwrap();
                    recorder = r;
                    rx = Rx::new(kind, clock.now(), policy);
                    rx.wall(clock.now(), wall_ms);
                }
                Op::Advance(d) => {
                    clock.advance(ms(d.into()));
                    wall_ms += u64::from(d);
                    rx.wall(clock.now(), wall_ms);
                }
            }
            // A PPP worker takes one request at a time: answer before the next.
            prop_assert!(kind != Kind::Ppp || running.len() <= 1);
        }
        // Drain: answer what runs; every copy still waiting must then be answered.
        for _ in 0..64 {
            let Some((token, _)) = running.pop() else { break };
            rx.answer(clock.now(), token, ok(b"r"));
            let seen = settle(&mut rx, &mut recorder);
            check(&seen, &mut running, &mut answered, &mut copies, &mut runs, false)?;
        }
        let unanswered: Vec<_> = copies.iter().filter(|(_, w)| **w).map(|(k, _)| k).collect();
        // A busy 6/PPP worker drops what is not a copy of its running request: the
        // client's retry recovers it, so those are not expected either.
        if kind != Kind::Ppp {
            prop_assert!(unanswered.is_empty(), "never answered: {unanswered:?}");
        }
    }
}
