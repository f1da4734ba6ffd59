//! The client outbox hook ([`bosun::io::outbox::Stored`]) in virtual time over the
//! memory store: what each durability mode makes durable and when a request may go
//! out, backpressure, the ack on an answer, the dead letter on a give-up, attempts
//! carried over a crash, recovery in creation order with the original ids, and a model
//! check that a crash at any point loses no request that was sent.
//!
//! The driver is played by hand, as the one driver loop does it: after an input, drain
//! `poll_op` (which commits what is staged first), then `poll_event`.

mod sim;

use std::time::Duration;

use bosun::config::{Backoff, Retry};
use bosun::error::{ClientError, Error};
use bosun::io::driver::{Core, Op};
use bosun::io::outbox::{ClientOutbox, Event as Hooked, OutboxConfig, Stored};
use bosun::proto::client::{Event, MdpClient, Mode};
use bosun::proto::envelope::{Envelope, Meta, Status};
use bosun::proto::frames::{mdp, Frames};
use bosun::proto::lazy_pirate::{self, LazyPirate};
use bosun::store::{DeadReason, Durability, OutboxRecord, Store};
use proptest::prelude::*;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

use sim::{ms, Clock};

const SERVICE: &[u8] = b"echo";

fn retry(retries: u32) -> Retry {
    Retry {
        timeout: ms(1000),
        retries,
        backoff: Backoff {
            initial: ms(100),
            max: ms(100),
            jitter: 0.0,
        },
        deadline: None,
    }
}

fn config(durability: Durability, limit: usize) -> OutboxConfig {
    OutboxConfig { durability, limit }
}

fn outbox(store: &Store, durability: Durability, limit: usize) -> Arc<Mutex<ClientOutbox>> {
    Arc::new(Mutex::new(
        ClientOutbox::open(store, config(durability, limit)).expect("open the outbox"),
    ))
}

/// A pipelined Majordomo client core with an outbox on `store`.
fn pipelined(
    clock: &Clock,
    store: &Store,
    durability: Durability,
    limit: usize,
) -> Stored<MdpClient> {
    let core = MdpClient::new(clock.now(), Mode::Pipelined, retry(3), 7).expect("core");
    Stored::new(core, Some(outbox(store, durability, limit)), "sim")
}

/// The envelope of request `n`: id `n` (ids order like creation), created at `n` ms.
fn request(n: u128) -> Envelope {
    Envelope::new(
        Uuid::from_u128(n),
        n as u64,
        vec![format!("req-{n}").into_bytes()],
    )
}

/// What the core sent, drained: (id, attempt, payload) of each request.
fn sent(core: &mut Stored<MdpClient>) -> Vec<(Uuid, u32, Frames)> {
    let mut out = Vec::new();
    while let Some(op) = core.poll_op() {
        let Op::Send(0, frames) = op else {
            panic!("a pipelined client only sends: {op:?}")
        };
        let (service, body) = mdp::parse_client_reply(frames).expect("a 7/MDP request");
        assert_eq!(service, SERVICE);
        let e = Envelope::decode(body).expect("payload + metadata");
        out.push((e.meta.id, e.meta.attempt, e.payload));
    }
    out
}

fn ids(sent: &[(Uuid, u32, Frames)]) -> Vec<u128> {
    sent.iter().map(|(id, _, _)| id.as_u128()).collect()
}

fn events(core: &mut Stored<MdpClient>) -> Vec<Hooked<Event>> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// The broker's reply to request `n`, attempt `attempt`, as the client's DEALER gets it.
fn reply(n: u128, attempt: u32, status: Status, body: &[u8]) -> Frames {
    let mut meta = Meta::new(Uuid::from_u128(n), n as u64);
    meta.attempt = attempt;
    meta.status = status;
    mdp::client_request(SERVICE, vec![body.to_vec(), meta.encode()])
}

fn pending_ids(store: &Store) -> Vec<u128> {
    let outbox = ClientOutbox::open(store, OutboxConfig::default()).expect("outbox");
    outbox
        .pending()
        .expect("pending")
        .iter()
        .map(|r| r.id.as_u128())
        .collect()
}

fn submit(core: &mut Stored<MdpClient>, clock: &Clock, n: u128) -> Result<Uuid, Error> {
    core.submit(clock.now(), Some(SERVICE), request(n))
}

/// `every`: the request is on disk when `submit` returns, and goes out at once.
/// Catches: a request sent before it is durable, or durable only at a later flush.
#[test]
fn every_is_durable_when_submit_returns() {
    let clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Every, 10);
    submit(&mut core, &clock, 1).unwrap();
    assert_eq!(store.unflushed_writes(), 0, "flushed inside submit");
    assert_eq!(pending_ids(&store.crash_and_reopen().unwrap()), [1]);
    assert_eq!(core.staged(), 0);
    assert_eq!(ids(&sent(&mut core)), [1]);
}

/// `batched`: requests accepted in one turn stay unsent until the turn's one flush,
/// then all go out; a crash before that flush may lose them (they were never sent),
/// one after it keeps them all. Catches: a staged request sent before its commit, one
/// flush per request, or a commit that confirms only some.
#[test]
fn batched_commits_a_turn_with_one_flush_before_sending_it() {
    let clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    for n in 1..=5 {
        submit(&mut core, &clock, n).unwrap();
        assert_eq!(store.unflushed_writes(), n as usize, "no flush per request");
    }
    assert_eq!(core.staged(), 5);
    assert_eq!(
        core.core().outstanding(),
        0,
        "nothing handed to the core yet"
    );
    assert!(pending_ids(&store.crash_and_reopen().unwrap()).is_empty());
    // The driver's next turn: one poll_op commits all five, then they go out.
    let out = sent(&mut core);
    assert_eq!(store.unflushed_writes(), 0);
    assert_eq!(ids(&out), [1, 2, 3, 4, 5]);
    assert!(out.iter().all(|(_, attempt, _)| *attempt == 1));
    assert_eq!(
        pending_ids(&store.crash_and_reopen().unwrap()),
        [1, 2, 3, 4, 5]
    );
    // The next turn's requests wait for the next flush.
    submit(&mut core, &clock, 6).unwrap();
    assert_eq!(store.unflushed_writes(), 1);
    assert_eq!(ids(&sent(&mut core)), [6]);
    assert_eq!(store.unflushed_writes(), 0);
}

/// A pipelined application takes one outcome and sends one request at a time; the
/// requests it sends while a burst of replies is being handed out are committed
/// together once the burst is drained (before the driver would wait), not one flush
/// each. Catches: a commit per request in the steady state of a pipeline.
#[test]
fn requests_sent_during_a_burst_of_replies_share_one_flush() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    for n in 1..=3 {
        submit(&mut core, &clock, n).unwrap();
    }
    assert_eq!(ids(&sent(&mut core)), [1, 2, 3]);
    for n in 1..=3 {
        core.handle_input(clock.advance(ms(1)), 0, reply(n, 1, Status::Ok, b"r"));
    }
    // The driver: ops, then one event to the application, which sends one request;
    // count the commits (staged requests handed to the core) and what each sent.
    let mut commits = Vec::new();
    for next in 4..14 {
        let staged = core.staged();
        let out = sent(&mut core);
        if staged > 0 && core.staged() == 0 {
            commits.push(ids(&out));
            assert_eq!(store.unflushed_writes(), 0, "flushed by the commit");
        }
        let Some(event) = core.poll_event() else {
            break;
        };
        assert!(matches!(event, Hooked::Core(Event::Reply { .. })));
        submit(&mut core, &clock, next).unwrap();
    }
    assert_eq!(commits, [vec![4, 5, 6]], "one commit, after the burst");
}

/// `none`: requests go out at once and nothing is flushed.
#[test]
fn none_sends_at_once_and_never_flushes() {
    let clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::None, 10);
    submit(&mut core, &clock, 1).unwrap();
    assert_eq!(ids(&sent(&mut core)), [1]);
    assert_eq!(store.unflushed_writes(), 1);
}

/// A full outbox refuses the request with a typed backpressure error, its body handed
/// back, stores and sends nothing; an answer makes room. Catches: an outbox that grows
/// past its limit, or a refused request sent anyway.
#[test]
fn a_full_outbox_refuses_with_backpressure_until_an_answer_makes_room() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Every, 2);
    submit(&mut core, &clock, 1).unwrap();
    submit(&mut core, &clock, 2).unwrap();
    assert_eq!(ids(&sent(&mut core)), [1, 2]);
    match submit(&mut core, &clock, 3) {
        Err(Error::Client(ClientError::OutboxFull { limit, body })) => {
            assert_eq!((limit, body.as_slice()), (2, &b"req-3"[..]));
        }
        other => panic!("expected OutboxFull, got {other:?}"),
    }
    assert!(
        sent(&mut core).is_empty(),
        "the refused request is not sent"
    );
    assert_eq!(pending_ids(&store), [1, 2]);
    core.handle_input(clock.advance(ms(5)), 0, reply(1, 1, Status::Ok, b"r1"));
    let _ = events(&mut core);
    submit(&mut core, &clock, 3).unwrap();
    assert_eq!(ids(&sent(&mut core)), [3]);
    assert_eq!(pending_ids(&store), [2, 3]);
}

/// A reply, and a handler's failure the peer reports, each end their request: it
/// leaves the outbox, durably with the next flush. A duplicate reply changes nothing.
/// Catches: acks only on success (a failed request re-sent after every restart), or no
/// ack at all.
#[test]
fn an_answer_acks_the_request() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    for n in 1..=2 {
        submit(&mut core, &clock, n).unwrap();
    }
    assert_eq!(sent(&mut core).len(), 2);
    core.handle_input(clock.advance(ms(1)), 0, reply(1, 1, Status::Ok, b"r1"));
    core.handle_input(clock.now(), 0, reply(2, 1, Status::Error, b"boom"));
    core.handle_input(clock.now(), 0, reply(1, 1, Status::Ok, b"again"));
    let evs = events(&mut core);
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert!(matches!(evs[2], Hooked::Core(Event::Duplicate { .. })));
    assert!(pending_ids(&store).is_empty());
    // The acks are durable with the next flush: a crash now may bring them back...
    assert_eq!(pending_ids(&store.crash_and_reopen().unwrap()), [1, 2]);
    // ...and the next turn's commit makes them durable.
    submit(&mut core, &clock, 4).unwrap();
    let _ = sent(&mut core);
    assert_eq!(pending_ids(&store.crash_and_reopen().unwrap()), [4]);
}

/// A refusal (status refused: the peer did not handle the request) moves the request
/// to the dead letters with reason refused and the peer's message, durably, so that it
/// can be replayed. Catches: a refusal taken for an answer and the request dropped.
#[test]
fn a_refusal_moves_the_request_to_the_dead_letters() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    submit(&mut core, &clock, 3).unwrap();
    assert_eq!(sent(&mut core).len(), 1);
    core.handle_input(
        clock.advance(ms(1)),
        0,
        reply(3, 1, Status::Refused, b"full"),
    );
    let evs = events(&mut core);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(pending_ids(&store).is_empty());
    let after = store.crash_and_reopen().unwrap();
    assert!(pending_ids(&after).is_empty(), "the move is durable");
    let letters = after.dead_letters().unwrap().list().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadReason::Refused);
    assert_eq!(letters[0].last_error, "full");
    assert_eq!(letters[0].attempts, 1);
}

/// Every attempt timing out moves the request to the dead letters (reason gave-up, the
/// attempts, "no reply after N attempts", the service and payload), flushed, and out
/// of the outbox. Catches: a give-up that leaves the request pending (re-sent forever
/// after restarts) or drops it without a trace.
#[test]
fn a_give_up_moves_the_request_to_the_dead_letters() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    submit(&mut core, &clock, 1).unwrap();
    let mut attempts = Vec::new();
    let mut gave_up = None;
    for _ in 0..100 {
        attempts.extend(sent(&mut core).into_iter().map(|(_, a, _)| a));
        for e in events(&mut core) {
            if let Hooked::Core(Event::GaveUp { attempts, .. }) = e {
                gave_up = Some(attempts);
            }
        }
        if gave_up.is_some() {
            break;
        }
        clock.advance(ms(50));
        core.handle_timeout(clock.now());
    }
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(gave_up, Some(3));
    assert!(pending_ids(&store).is_empty());
    let crashed = store.crash_and_reopen().unwrap();
    let letters = crashed.dead_letters().unwrap().list().unwrap();
    assert_eq!(letters.len(), 1, "the dead letter is durable at once");
    let l = &letters[0];
    assert_eq!(l.id, Uuid::from_u128(1));
    assert_eq!(l.reason, DeadReason::GaveUp);
    assert_eq!(l.attempts, 3);
    assert_eq!(l.last_error, "no reply after 3 attempts");
    assert_eq!(l.service.as_deref(), Some(SERVICE));
    assert_eq!(l.payload, vec![b"req-1".to_vec()]);
    assert!(pending_ids(&crashed).is_empty(), "and not pending any more");
}

/// After a crash, recovery re-sends every pending request in the order they were made,
/// with the original id and creation time, and an attempt continuing the count the
/// store recorded; the restarted client's retry budget counts from there. Catches: new
/// ids on re-send (a receiver could not tell the copies apart), attempt 1 again (a
/// broker holding the earlier attempt takes it for a stale copy), or a shuffled order.
#[test]
fn recovery_resends_in_creation_order_with_the_original_ids_and_attempts() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    // Made out of id order on purpose: ids are time-ordered, and recovery goes by id.
    for n in [3, 1, 2] {
        submit(&mut core, &clock, n).unwrap();
    }
    let _ = sent(&mut core);
    // Request 2's first attempt times out; its second goes out.
    clock.advance(ms(1000));
    core.handle_timeout(clock.now());
    let _ = events(&mut core);
    clock.advance(ms(100));
    core.handle_timeout(clock.now());
    let resent = sent(&mut core);
    assert_eq!(resent.len(), 3, "all three retried: {resent:?}");
    // Request 1 is answered; the next turn's commit flushes the ack and the attempts.
    core.handle_input(clock.now(), 0, reply(1, 2, Status::Ok, b"r1"));
    let _ = events(&mut core);
    submit(&mut core, &clock, 4).unwrap();
    let _ = sent(&mut core);

    let crashed = store.crash_and_reopen().unwrap();
    let mut fresh = pipelined(&clock, &crashed, Durability::Batched, 10);
    let pending = fresh.pending().unwrap();
    let order: Vec<u128> = pending.iter().map(|r| r.id.as_u128()).collect();
    assert_eq!(order, [2, 3, 4]);
    let counts: Vec<u32> = pending.iter().map(|r| r.attempts).collect();
    assert_eq!(
        counts,
        [1, 1, 1],
        "attempt 1 of each timed out and was recorded"
    );
    for r in &pending {
        fresh.resume(clock.now(), r).unwrap();
    }
    let out = sent(&mut fresh);
    assert_eq!(ids(&out), [2, 3, 4]);
    for (id, attempt, payload) in &out {
        assert_eq!(*attempt, 2, "the count continues");
        assert_eq!(payload, &vec![format!("req-{}", id.as_u128()).into_bytes()]);
    }
    // The original creation time travels too.
    let r = &pending[0];
    assert_eq!(r.envelope().meta.created_at_ms, 2);
    // A fresh budget of 3 attempts from attempt 2: 2, 3, 4, then the give-up.
    let mut seen = Vec::new();
    for _ in 0..200 {
        clock.advance(ms(50));
        fresh.handle_timeout(clock.now());
        seen.extend(
            sent(&mut fresh)
                .into_iter()
                .filter(|(id, _, _)| id.as_u128() == 2)
                .map(|(_, a, _)| a),
        );
        let _ = events(&mut fresh);
    }
    assert_eq!(seen, [3, 4]);
    let letter = crashed
        .dead_letters()
        .unwrap()
        .get(Uuid::from_u128(2))
        .unwrap()
        .expect("dead-lettered");
    assert_eq!(letter.attempts, 4);
}

/// A record that is not in the client's outbox (a dead letter replayed) is stored
/// before it is sent, under the mode's rules; one that is (recovery) is sent at once
/// and not written again.
#[test]
fn resume_stores_a_foreign_record_first() {
    let clock = Clock::new();
    let store = Store::memory();
    let mut core = pipelined(&clock, &store, Durability::Batched, 10);
    let mut record = OutboxRecord::from_envelope(Some(SERVICE.to_vec()), &request(9));
    record.attempts = 4;
    core.resume(clock.now(), &record).unwrap();
    assert_eq!(core.staged(), 1, "stored, waiting for the commit");
    let out = sent(&mut core);
    assert_eq!(out[0].1, 5);
    let crashed = store.crash_and_reopen().unwrap();
    assert_eq!(pending_ids(&crashed), [9]);
    let mut fresh = pipelined(&clock, &crashed, Durability::Batched, 10);
    let stored = fresh.pending().unwrap().remove(0);
    fresh.resume(clock.now(), &stored).unwrap();
    assert_eq!(fresh.staged(), 0, "already durable: sent at once");
    assert_eq!(crashed.unflushed_writes(), 0, "not written again");
    // The stored count is the attempts sent so far: 5; the next is 6.
    assert_eq!(sent(&mut fresh)[0].1, 6);
}

/// The blocking Lazy Pirate core under the same hook: submit, give-up into the dead
/// letters (no service), and a request refused by the core (busy) taken back out of
/// the outbox so that it is not re-sent after a restart.
#[test]
fn lazy_pirate_through_the_same_hook() {
    let mut clock = Clock::new();
    let store = Store::memory();
    let core = LazyPirate::new(clock.now(), retry(2), 3).unwrap();
    let mut lp = Stored::new(core, Some(outbox(&store, Durability::Every, 10)), "sim");
    lp.submit(clock.now(), None, request(1)).unwrap();
    let err = lp.submit(clock.now(), None, request(2)).unwrap_err();
    assert!(matches!(err, Error::Client(ClientError::Busy)), "{err:?}");
    assert_eq!(
        pending_ids(&store),
        [1],
        "the refused request is not pending"
    );
    let mut gave_up = false;
    for _ in 0..100 {
        while lp.poll_op().is_some() {}
        while let Some(e) = lp.poll_event() {
            gave_up |= matches!(e, Hooked::Core(lazy_pirate::Event::GaveUp { .. }));
        }
        if gave_up {
            break;
        }
        clock.advance(ms(50));
        lp.handle_timeout(clock.now());
    }
    assert!(gave_up);
    let letters = store.dead_letters().unwrap().list().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].service, None);
    assert_eq!(letters[0].last_error, "no reply after 2 attempts");
    assert!(pending_ids(&store).is_empty());
}

/// Without an outbox the hook passes everything through and stores nothing.
#[test]
fn without_an_outbox_nothing_is_stored() {
    let clock = Clock::new();
    let core = MdpClient::new(clock.now(), Mode::Pipelined, retry(3), 1).unwrap();
    let mut core = Stored::new(core, None, "sim");
    core.submit(clock.now(), Some(SERVICE), request(1)).unwrap();
    assert_eq!(ids(&sent(&mut core)), [1]);
    assert!(core.pending().unwrap().is_empty());
}

/// One step of the model check.
#[derive(Debug, Clone)]
enum Step {
    /// Accept a new request.
    Submit,
    /// The driver's turn: commit and send.
    Turn,
    /// The reply to the oldest request in flight.
    Reply,
    /// Time passes (retries, give-ups).
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Submit),
        3 => Just(Step::Turn),
        2 => Just(Step::Reply),
        1 => (1u64..1500).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random submits, turns, replies and waits under each durability mode, then a
    /// crash that keeps any prefix of the unflushed writes: with `every` and `batched`,
    /// every request that was sent and neither answered nor given up is pending (or
    /// dead-lettered) after the crash, and the outbox never holds more than its limit. Catches: a send ahead of its flush,
    /// an ack flushed before its request, a give-up that loses the request.
    #[test]
    fn no_sent_request_is_lost_at_any_crash_point(
        steps in proptest::collection::vec(step(), 1..60),
        every in any::<bool>(),
        keep in 0usize..20,
    ) {
        let mut clock = Clock::new();
        let store = Store::memory();
        let durability = if every { Durability::Every } else { Durability::Batched };
        let limit = 6;
        let mut core = pipelined(&clock, &store, durability, limit);
        let mut next = 1u128;
        let mut in_flight: Vec<u128> = Vec::new();
        let mut settled: Vec<u128> = Vec::new();
        for s in steps {
            match s {
                Step::Submit => {
                    match submit(&mut core, &clock, next) {
                        Ok(_) => {}
                        Err(Error::Client(ClientError::OutboxFull { .. })) => {
                            prop_assert!(core.pending().unwrap().len() >= limit);
                        }
                        Err(e) => panic!("{e}"),
                    }
                    next += 1;
                }
                Step::Turn => {
                    for (id, _, _) in sent(&mut core) {
                        let n = id.as_u128();
                        if !in_flight.contains(&n) && !settled.contains(&n) {
                            in_flight.push(n);
                        }
                    }
                }
                Step::Reply => {
                    if !in_flight.is_empty() {
                        let n = in_flight.remove(0);
                        core.handle_input(clock.advance(ms(1)), 0, reply(n, 1, Status::Ok, b"r"));
                    }
                }
                Step::Wait(d) => {
                    clock.advance(Duration::from_millis(d));
                    core.handle_timeout(clock.now());
                    for (id, _, _) in sent(&mut core) {
                        let n = id.as_u128();
                        if !in_flight.contains(&n) && !settled.contains(&n) {
                            in_flight.push(n);
                        }
                    }
                }
            }
            for e in events(&mut core) {
                match e {
                    Hooked::Core(Event::Reply { id, .. }) | Hooked::Core(Event::GaveUp { id, .. }) => {
                        let n = id.as_u128();
                        in_flight.retain(|x| *x != n);
                        settled.push(n);
                    }
                    Hooked::Core(_) => {}
                    Hooked::Unsent { id, .. } => panic!("memory commits cannot fail: {id}"),
                }
            }
            prop_assert!(core.pending().unwrap().len() <= limit);
        }
        let crashed = store.crash_and_reopen_after(keep).unwrap();
        let pending = pending_ids(&crashed);
        let dead: Vec<u128> = crashed
            .dead_letters()
            .unwrap()
            .list()
            .unwrap()
            .iter()
            .map(|l| l.id.as_u128())
            .collect();
        for n in &in_flight {
            prop_assert!(
                pending.contains(n) || dead.contains(n),
                "request {n} was sent and is neither pending nor dead after the crash"
            );
        }
    }
}

#[test]
fn session_attempts_count_from_the_first() {
    assert_eq!(lazy_pirate::session_attempts(1, 1), 1);
    assert_eq!(lazy_pirate::session_attempts(4, 6), 3);
    assert_eq!(lazy_pirate::session_attempts(5, 1), 1, "never below one");
}
