//! The Lazy Pirate core in virtual time: the exact retry schedule, the discarding of
//! every reply that is not the one outstanding, plain (foreign) replies taken as the
//! answer while one is awaited, failed replies, and a property test over random
//! sequences of sends, replies, garbage, duplicates and time steps.

mod sim;

use std::collections::HashMap;
use std::time::Duration;

use bosun::error::{ClientError, ConfigError, ProtocolError};
use bosun::proto::envelope::{Answer, Meta, Status, FIXED_LEN, MAGIC, MAX_META_BYTES};
use bosun::proto::frames::Frames;
use bosun::proto::lazy_pirate::{Discard, Event, LazyPirate, Transmit};
use bosun::{Backoff, Envelope, Retry};
use proptest::prelude::*;
use uuid::Uuid;

use sim::{envelope, frames, ms, Clock, NS};

/// What the core did, in the order it did it, at one instant.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Send {
        id: Uuid,
        attempt: u32,
        payload: Frames,
    },
    Reset,
    Retrying {
        attempt: u32,
        after: Duration,
    },
    GaveUp {
        attempts: u32,
        payload: Frames,
    },
}

/// A request with a deterministic id and several payload frames.
fn envelope_of(id: u128, payload: &[&[u8]]) -> Envelope {
    Envelope::new(Uuid::from_u128(id), 0, frames(payload))
}

/// Decodes what the core sends: the payload frames, then exactly one metadata frame.
fn decode_sent(frames: Frames) -> Envelope {
    let n = frames.len();
    let e = Envelope::decode(frames).expect("the core sends payload + metadata");
    assert_eq!(e.payload.len() + 1, n, "one metadata frame, last");
    e
}

/// Everything the core wants done and says, transmits first (the contract's order).
fn drain(lp: &mut LazyPirate) -> Vec<Step> {
    let mut out = Vec::new();
    while let Some(t) = lp.poll_transmit() {
        out.push(match t {
            Transmit::Send(frames) => {
                let e = decode_sent(frames);
                assert_eq!(e.meta.status, Status::Ok, "a request carries status ok");
                Step::Send {
                    id: e.meta.id,
                    attempt: e.meta.attempt,
                    payload: e.payload,
                }
            }
            Transmit::Reset => Step::Reset,
        });
    }
    while let Some(e) = lp.poll_event() {
        out.push(match e {
            Event::Retrying { attempt, after, .. } => Step::Retrying { attempt, after },
            Event::GaveUp {
                attempts, payload, ..
            } => Step::GaveUp { attempts, payload },
            other => panic!("unexpected event with no server: {other:?}"),
        });
    }
    out
}

/// Sends `request` at the origin and lets every attempt time out, jumping from one
/// `poll_timeout` to the next. One nanosecond before each deadline it checks that the
/// core does nothing. Returns what happened, as offsets from the origin.
fn run_unanswered(retry: Retry, seed: u64, request: Envelope) -> Vec<(Duration, Step)> {
    let mut clock = Clock::new();
    let mut lp = LazyPirate::new(clock.now(), retry, seed).expect("a valid policy");
    lp.send(clock.now(), request).unwrap();
    let mut log: Vec<(Duration, Step)> = drain(&mut lp).into_iter().map(|s| (ms(0), s)).collect();
    for _ in 0..10_000 {
        let Some(deadline) = lp.poll_timeout() else {
            break;
        };
        assert!(deadline > clock.now(), "a deadline in the past");
        lp.handle_timeout(deadline - NS);
        assert_eq!(drain(&mut lp), vec![], "fired before its deadline");
        clock.advance_to(deadline);
        lp.handle_timeout(clock.now());
        let steps = drain(&mut lp);
        assert!(!steps.is_empty(), "woken up for nothing");
        log.extend(steps.into_iter().map(|s| (clock.elapsed(), s)));
    }
    assert!(!lp.is_busy());
    assert_eq!(lp.poll_timeout(), None, "an idle client has no deadline");
    log
}

/// The nominal (unjittered) pause after attempt `attempt`, computed independently of
/// `bosun::proto::backoff`: `initial`, doubling, capped at `max`.
fn nominal(b: &Backoff, attempt: u32) -> Duration {
    let mut d = b.initial.min(b.max);
    for _ in 1..attempt {
        d = (d * 2).min(b.max);
    }
    d
}

/// The schedule the documentation promises with no jitter.
fn expected_schedule(retry: &Retry, id: Uuid, payload: &[&[u8]]) -> Vec<(Duration, Step)> {
    let mut t = Duration::ZERO;
    let mut out = Vec::new();
    for attempt in 1..=retry.retries {
        out.push((
            t,
            Step::Send {
                id,
                attempt,
                payload: frames(payload),
            },
        ));
        t += retry.timeout;
        out.push((t, Step::Reset));
        if attempt == retry.retries {
            out.push((
                t,
                Step::GaveUp {
                    attempts: attempt,
                    payload: frames(payload),
                },
            ));
        } else {
            let after = nominal(&retry.backoff, attempt);
            out.push((t, Step::Retrying { attempt, after }));
            t += after;
        }
    }
    out
}

fn retry(timeout: Duration, retries: u32, initial: Duration, max: Duration, jitter: f64) -> Retry {
    Retry {
        timeout,
        retries,
        backoff: Backoff {
            initial,
            max,
            jitter,
        },
        deadline: None,
    }
}

#[test]
fn retry_schedule_is_exact() {
    let r = retry(ms(1000), 4, ms(100), ms(10_000), 0.0);
    let log = run_unanswered(r, 7, envelope(1, b"job"));
    assert_eq!(log, expected_schedule(&r, Uuid::from_u128(1), &[b"job"]));
    // Spelled out once: 4 timeouts of 1 s and backoffs of 100 + 200 + 400 ms.
    let (at, last) = log.last().unwrap();
    assert_eq!(*at, ms(4 * 1000 + 100 + 200 + 400));
    assert_eq!(
        *last,
        Step::GaveUp {
            attempts: 4,
            payload: frames(&[b"job"])
        }
    );
    // The Reset comes before each resend, never after it: a REQ socket that lost its
    // reply cannot send.
    assert_eq!(log.iter().filter(|(_, s)| *s == Step::Reset).count(), 4);
}

#[test]
fn one_attempt_gives_up_after_one_timeout() {
    let r = retry(ms(250), 1, ms(100), ms(100), 0.0);
    let log = run_unanswered(r, 1, envelope(2, b"x"));
    assert_eq!(log, expected_schedule(&r, Uuid::from_u128(2), &[b"x"]));
    assert_eq!(log.last().unwrap().0, ms(250));
}

#[test]
fn backoff_caps_at_max() {
    let r = retry(ms(40), 12, ms(10), ms(50), 0.0);
    // Several payload frames, an empty one among them: every attempt sends them
    // unchanged, and GaveUp hands them all back.
    let payload: [&[u8]; 3] = [b"capped", b"", b"\xff\x00tail"];
    let log = run_unanswered(r, 3, envelope_of(3, &payload));
    assert_eq!(log, expected_schedule(&r, Uuid::from_u128(3), &payload));
    let afters: Vec<Duration> = log
        .iter()
        .filter_map(|(_, s)| match s {
            Step::Retrying { after, .. } => Some(*after),
            _ => None,
        })
        .collect();
    assert_eq!(
        afters,
        [10, 20, 40, 50, 50, 50, 50, 50, 50, 50, 50]
            .map(ms)
            .to_vec()
    );
    // 12 timeouts of 40 ms, backoffs 10 + 20 + 40 + 8 × 50 ms.
    assert_eq!(log.last().unwrap().0, ms(12 * 40 + 10 + 20 + 40 + 8 * 50));
}

#[test]
fn jitter_shortens_within_bounds_and_the_resend_follows_it() {
    let jitter = 0.5;
    let r = retry(ms(100), 9, ms(20), ms(1000), jitter);
    let mut shortened = 0;
    let mut schedules = Vec::new();
    for seed in 0..64 {
        let log = run_unanswered(r, seed, envelope(4, b"j"));
        let mut resends = 0;
        for (i, (at, step)) in log.iter().enumerate() {
            let Step::Retrying { attempt, after } = step else {
                continue;
            };
            let nominal = nominal(&r.backoff, *attempt);
            let floor = nominal.saturating_sub(nominal.mul_f64(jitter));
            assert!(
                floor <= *after && *after <= nominal,
                "seed {seed} attempt {attempt}: {after:?} outside [{floor:?}, {nominal:?}]"
            );
            if *after < nominal {
                shortened += 1;
            }
            // The next attempt goes out exactly `after` later, as announced.
            let (next_at, next) = &log[i + 1];
            assert_eq!(*next_at, *at + *after);
            assert!(matches!(next, Step::Send { attempt: a, .. } if *a == attempt + 1));
            resends += 1;
        }
        assert_eq!(resends, 8);
        schedules.push(log);
    }
    assert!(
        shortened > 64 * 8 / 2,
        "jitter is not applied ({shortened} shortened)"
    );
    assert_ne!(
        schedules[0], schedules[1],
        "the seed does not drive the jitter"
    );
}

// ---------------------------------------------------------------------------------
// Replies that must be discarded.

fn events(lp: &mut LazyPirate) -> Vec<Event> {
    std::iter::from_fn(|| lp.poll_event()).collect()
}

fn transmits(lp: &mut LazyPirate) -> Vec<Transmit> {
    std::iter::from_fn(|| lp.poll_transmit()).collect()
}

/// The metadata of a reply to (`id`, `attempt`) with `status`.
fn reply_meta(id: u128, attempt: u32, status: Status) -> Meta {
    let mut m = Meta::new(Uuid::from_u128(id), 0);
    m.attempt = attempt;
    m.status = status;
    m
}

/// A reply as a bosun REP server sends it for (`id`, `attempt`): the body, then the
/// metadata frame.
fn reply(id: u128, attempt: u32, body: &[u8]) -> Frames {
    vec![body.to_vec(), reply_meta(id, attempt, Status::Ok).encode()]
}

/// A reply saying the handler failed with `message`.
fn failed_reply(id: u128, attempt: u32, status: Status, message: &[u8]) -> Frames {
    vec![message.to_vec(), reply_meta(id, attempt, status).encode()]
}

fn stale(id: u128, attempt: u32) -> Event {
    Event::Discarded(Discard::Stale {
        id: Uuid::from_u128(id),
        attempt,
    })
}

fn unsolicited() -> Event {
    Event::Discarded(Discard::Unsolicited)
}

fn answered(id: u128, attempt: u32, body: &[u8]) -> Event {
    answered_with(id, attempt, Answer::Ok(vec![body.to_vec()]))
}

fn answered_with(id: u128, attempt: u32, answer: Answer) -> Event {
    Event::Reply {
        id: Uuid::from_u128(id),
        attempt,
        answer,
    }
}

fn no_jitter() -> Retry {
    retry(ms(1000), 5, ms(100), ms(800), 0.0)
}

fn client(clock: &Clock, retry: Retry) -> LazyPirate {
    LazyPirate::new(clock.now(), retry, 0).expect("a valid policy")
}

/// Sends request `id` at now and times out its first attempt, then resends it: attempt
/// 2 is outstanding when this returns (now = 1.1 s after the send).
fn second_attempt_outstanding(lp: &mut LazyPirate, clock: &mut Clock, id: u128) {
    let start = clock.now();
    lp.send(start, envelope(id, b"q")).unwrap();
    clock.advance_to(start + ms(1000));
    lp.handle_timeout(clock.now());
    clock.advance_to(start + ms(1100));
    lp.handle_timeout(clock.now());
    let t = transmits(lp);
    assert_eq!(t.len(), 3, "send, reset, resend: {t:?}");
    assert_eq!(t[1], Transmit::Reset);
    assert_eq!(decode_sent(sent(&t[2])).meta.attempt, 2);
    let _ = events(lp);
}

fn sent(t: &Transmit) -> Frames {
    match t {
        Transmit::Send(f) => f.clone(),
        Transmit::Reset => panic!("expected a Send"),
    }
}

#[test]
fn reply_to_an_earlier_or_later_attempt_is_stale() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    second_attempt_outstanding(&mut lp, &mut clock, 10);
    lp.handle_reply(clock.now(), reply(10, 1, b"old"));
    lp.handle_reply(clock.now(), reply(10, 3, b"future"));
    lp.handle_reply(clock.now(), reply(11, 2, b"other id, same attempt"));
    assert_eq!(
        events(&mut lp),
        vec![stale(10, 1), stale(10, 3), stale(11, 2)]
    );
    assert!(lp.is_busy(), "a stale reply must not end the request");
    assert_eq!(lp.poll_timeout(), Some(clock.at(ms(2100))));
    // The matching reply: exactly one Reply, and nothing else.
    lp.handle_reply(clock.now(), reply(10, 2, b"answer"));
    assert_eq!(events(&mut lp), vec![answered(10, 2, b"answer")]);
    assert!(transmits(&mut lp).is_empty());
    assert!(!lp.is_busy());
    assert_eq!(lp.poll_timeout(), None);
    // A second copy of it, now that nothing is outstanding.
    lp.handle_reply(clock.now(), reply(10, 2, b"answer"));
    assert_eq!(events(&mut lp), vec![unsolicited()]);
    // The old timers are gone: nothing happens at the old deadline.
    clock.advance(ms(5000));
    lp.handle_timeout(clock.now());
    assert!(events(&mut lp).is_empty() && transmits(&mut lp).is_empty());
}

#[test]
fn reply_to_an_earlier_request_is_stale() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    lp.send(clock.now(), envelope(20, b"first")).unwrap();
    lp.handle_reply(clock.advance(ms(10)), reply(20, 1, b"r1"));
    assert_eq!(events(&mut lp), vec![answered(20, 1, b"r1")]);
    lp.send(clock.advance(ms(10)), envelope(21, b"second"))
        .unwrap();
    // The same attempt number, the previous request's id: a late duplicate of r1.
    lp.handle_reply(clock.advance(ms(10)), reply(20, 1, b"r1"));
    assert_eq!(events(&mut lp), vec![stale(20, 1)]);
    assert!(lp.is_busy());
    lp.handle_reply(clock.advance(ms(10)), reply(21, 1, b"r2"));
    assert_eq!(events(&mut lp), vec![answered(21, 1, b"r2")]);
    lp.handle_reply(clock.now(), reply(21, 1, b"r2"));
    assert_eq!(events(&mut lp), vec![unsolicited()]);
}

#[test]
fn reply_while_idle_is_unsolicited() {
    let clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    lp.handle_reply(clock.now(), reply(30, 1, b"?"));
    assert_eq!(events(&mut lp), vec![unsolicited()]);
    // A plain reply too: nothing waits for it.
    lp.handle_reply(clock.now(), frames(&[b"plain"]));
    assert_eq!(events(&mut lp), vec![unsolicited()]);
    assert!(!lp.is_busy() && transmits(&mut lp).is_empty());
    assert_eq!(lp.poll_timeout(), None);
}

#[test]
fn reply_during_the_backoff_pause_is_stale() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    lp.send(clock.now(), envelope(40, b"q")).unwrap();
    lp.handle_timeout(clock.advance(ms(1000)));
    assert_eq!(transmits(&mut lp).len(), 2);
    let _ = events(&mut lp);
    // Attempt 1 timed out; the socket was reset; attempt 2 is not yet sent. A reply to
    // attempt 1 cannot be the answer: its socket is gone. Nor can a plain reply: no
    // attempt is on the wire.
    lp.handle_reply(clock.advance(ms(50)), reply(40, 1, b"late"));
    lp.handle_reply(clock.now(), reply(40, 2, b"early"));
    lp.handle_reply(clock.now(), frames(&[b"plain"]));
    assert_eq!(
        events(&mut lp),
        vec![stale(40, 1), stale(40, 2), unsolicited()]
    );
    assert!(lp.is_busy());
    // The pause still ends on time with attempt 2.
    assert_eq!(lp.poll_timeout(), Some(clock.at(ms(1100))));
    lp.handle_timeout(clock.advance_to(clock.at(ms(1100))));
    let t = transmits(&mut lp);
    assert_eq!(t.len(), 1);
    assert_eq!(decode_sent(sent(&t[0])).meta.attempt, 2);
    lp.handle_reply(clock.advance(ms(1)), reply(40, 2, b"ok"));
    assert_eq!(events(&mut lp), vec![answered(40, 2, b"ok")]);
}

/// Only a last frame that starts with the metadata magic but does not decode is
/// malformed. Each such reply is discarded, naming the decoding error, and the request
/// survives it.
#[test]
fn malformed_replies_are_discarded_and_the_request_survives() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    lp.send(clock.now(), envelope(50, b"q")).unwrap();
    let _ = transmits(&mut lp);
    let good = reply(50, 1, b"ok");
    let meta = good[1].clone();
    assert_eq!(meta.len(), FIXED_LEN + 2, "no headers: the count alone");
    let with = |bad: Vec<u8>| vec![b"ok".to_vec(), bad];
    let patched = |at: usize, b: u8| {
        let mut m = meta.clone();
        m[at] = b;
        m
    };
    let mut garbage: Vec<Frames> = vec![
        vec![MAGIC.to_vec()],                         // the magic alone, no payload
        with(MAGIC.to_vec()),                         // the magic alone, after a body
        with([&MAGIC[..], b"\xc1\xff\x00"].concat()), // the magic then garbage
        with(patched(4, 0)),                          // version 0
        with(patched(5, 9)),                          // an unknown status
        with(patched(7, 10)),                         // a fixed part shorter than 44
        with(patched(7, 255)),                        // a fixed part longer than the frame
        // A header claiming 4 GiB of key (must not allocate it).
        with(
            [
                &meta[..FIXED_LEN],
                &[0, 1, 0, 1, b'k', 0xff, 0xff, 0xff, 0xff],
            ]
            .concat(),
        ),
        // A header key that is not UTF-8.
        with([&meta[..FIXED_LEN], &[0, 1, 0, 1, 0xc3, 0, 0, 0, 0]].concat()),
        with([MAGIC.to_vec(), vec![0; MAX_META_BYTES]].concat()), // larger than allowed
        // The right reply, then a corrupt metadata frame: the last frame decides.
        vec![b"ok".to_vec(), meta.clone(), MAGIC.to_vec()],
        // Several payload frames, then a corrupt metadata frame.
        vec![Vec::new(), b"a".to_vec(), b"b".to_vec(), patched(5, 3)],
    ];
    // The metadata frame cut anywhere after the magic.
    garbage.extend((MAGIC.len()..meta.len()).map(|cut| with(meta[..cut].to_vec())));
    let n = garbage.len();
    for msg in garbage {
        let last = msg.last().unwrap().clone();
        let why = Meta::decode(&last).expect_err("the garbage decodes");
        lp.handle_reply(clock.advance(ms(1)), msg.clone());
        let ev = events(&mut lp);
        assert_eq!(
            ev,
            vec![Event::Discarded(Discard::Malformed(
                ProtocolError::Envelope(why)
            ))],
            "{msg:?}"
        );
        assert!(lp.is_busy());
    }
    assert_eq!(
        clock.elapsed(),
        ms(n as u64),
        "still within the first attempt"
    );
    assert!(transmits(&mut lp).is_empty());
    lp.handle_reply(clock.advance(ms(1)), good);
    assert_eq!(events(&mut lp), vec![answered(50, 1, b"ok")]);
    // A malformed reply is malformed whatever the state: idle too.
    lp.handle_reply(clock.now(), with(MAGIC.to_vec()));
    assert!(matches!(
        events(&mut lp).as_slice(),
        [Event::Discarded(Discard::Malformed(
            ProtocolError::Envelope(_)
        ))]
    ));
}

/// A reply with no metadata (a foreign REP server's) is the answer to the attempt on
/// the wire: the REQ socket is re-made for every attempt, so nothing older can arrive
/// on it. The frames that the old one-frame format refused as malformed are accepted
/// now: as plain payload when their last frame is not metadata, and matched by id and
/// attempt when it is. Each is handed over unchanged.
#[test]
fn plain_replies_are_accepted_while_an_attempt_waits() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    let good = reply(0, 1, b"ok");
    let meta = good[1].clone();
    let cases: Vec<(Frames, Frames)> = vec![
        // (the reply, the payload the application gets)
        (vec![], vec![]),                                         // no frames
        (frames(&[b""]), frames(&[b""])),                         // one empty frame
        (frames(&[b"hello"]), frames(&[b"hello"])),               // a plain body
        (frames(&[b"a", b"", b"c"]), frames(&[b"a", b"", b"c"])), // several, unchanged
        (frames(&[b"BSN1"]), frames(&[b"BSN1"])),                 // the old magic is just bytes
        (vec![vec![0xff; 64]], vec![vec![0xff; 64]]),             // noise
        // The metadata frame missing its first byte: no magic, so payload.
        (
            vec![b"ok".to_vec(), meta[1..].to_vec()],
            vec![b"ok".to_vec(), meta[1..].to_vec()],
        ),
        // A stray delimiter in front of a bosun reply: payload, as sent.
        (
            vec![Vec::new(), b"ok".to_vec(), meta.clone()],
            vec![Vec::new(), b"ok".to_vec()],
        ),
        // The right reply twice: the last frame is its metadata, the rest payload.
        (
            [good.clone(), good.clone()].concat(),
            vec![b"ok".to_vec(), meta.clone(), b"ok".to_vec()],
        ),
    ];
    for (n, (msg, payload)) in cases.into_iter().enumerate() {
        // Every case's bosun frames carry id 0: send request 0 for those, and a fresh
        // id for the plain ones (whose id nobody checks).
        let id = if Envelope::split(msg.clone()).unwrap().1.is_some() {
            0
        } else {
            100 + n as u128
        };
        lp.send(clock.advance(ms(1)), envelope(id, b"q")).unwrap();
        let _ = transmits(&mut lp);
        lp.handle_reply(clock.advance(ms(1)), msg.clone());
        assert_eq!(
            events(&mut lp),
            vec![answered_with(id, 1, Answer::Ok(payload))],
            "{msg:?}"
        );
        assert!(!lp.is_busy() && transmits(&mut lp).is_empty());
        assert_eq!(lp.poll_timeout(), None);
        // A second copy finds nothing waiting.
        lp.handle_reply(clock.now(), msg);
        assert_eq!(events(&mut lp), vec![unsolicited()]);
    }

    // On a later attempt, the plain reply answers that attempt.
    second_attempt_outstanding(&mut lp, &mut clock, 200);
    lp.handle_reply(clock.advance(ms(1)), frames(&[b"foreign", b"two"]));
    assert_eq!(
        events(&mut lp),
        vec![answered_with(
            200,
            2,
            Answer::Ok(frames(&[b"foreign", b"two"]))
        )]
    );
    assert!(!lp.is_busy());
    // And the old timers are gone.
    lp.handle_timeout(clock.advance(ms(10_000)));
    assert!(events(&mut lp).is_empty() && transmits(&mut lp).is_empty());
}

/// A reply whose metadata says the handler failed (or refused) ends the request with
/// `Answer::Failed` carrying the peer's message: no retry, since the server did answer.
#[test]
fn a_failed_reply_is_a_reply_with_the_failure_and_is_not_retried() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    lp.send(clock.now(), envelope(90, b"q")).unwrap();
    let _ = transmits(&mut lp);
    lp.handle_reply(
        clock.advance(ms(5)),
        failed_reply(90, 1, Status::Error, b"handler panicked: boom"),
    );
    assert_eq!(
        events(&mut lp),
        vec![answered_with(
            90,
            1,
            Answer::Failed {
                status: Status::Error,
                message: "handler panicked: boom".into()
            }
        )]
    );
    assert!(!lp.is_busy());
    assert_eq!(lp.poll_timeout(), None, "a failed request is not retried");
    assert!(transmits(&mut lp).is_empty());
    // A copy of it is unsolicited, like any reply with nothing outstanding.
    lp.handle_reply(
        clock.now(),
        failed_reply(90, 1, Status::Error, b"handler panicked: boom"),
    );
    assert_eq!(events(&mut lp), vec![unsolicited()]);

    // A failure of an earlier attempt is stale like any other reply to it; the one of
    // the outstanding attempt ends the request, here a refusal.
    second_attempt_outstanding(&mut lp, &mut clock, 91);
    lp.handle_reply(clock.now(), failed_reply(91, 1, Status::Error, b"old"));
    assert_eq!(events(&mut lp), vec![stale(91, 1)]);
    assert!(lp.is_busy());
    lp.handle_reply(
        clock.now(),
        failed_reply(91, 2, Status::Refused, b"queue full"),
    );
    assert_eq!(
        events(&mut lp),
        vec![answered_with(
            91,
            2,
            Answer::Failed {
                status: Status::Refused,
                message: "queue full".into()
            }
        )]
    );
    assert!(!lp.is_busy());
}

#[test]
fn new_rejects_a_zero_timeout_and_one_that_overflows_an_instant() {
    let clock = Clock::new();
    for timeout in [Duration::ZERO, Duration::from_secs(u64::MAX)] {
        let r = Retry {
            timeout,
            ..no_jitter()
        };
        let err = LazyPirate::new(clock.now(), r, 0).expect_err("an invalid timeout");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "retry.timeout",
                    ..
                }
            ),
            "{timeout:?}: {err:?}"
        );
    }
    // The policy used everywhere here is fine.
    assert!(LazyPirate::new(clock.now(), no_jitter(), 0).is_ok());
}

#[test]
fn send_while_busy_is_refused_and_changes_nothing() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, no_jitter());
    lp.send(clock.now(), envelope(60, b"a")).unwrap();
    let _ = transmits(&mut lp);
    let deadline = lp.poll_timeout();
    let err = lp.send(clock.advance(ms(10)), envelope(61, b"b"));
    assert!(matches!(err, Err(ClientError::Busy)), "{err:?}");
    // Also while backing off between attempts.
    lp.handle_timeout(clock.advance_to(clock.at(ms(1000))));
    let _ = (transmits(&mut lp), events(&mut lp));
    assert!(matches!(
        lp.send(clock.now(), envelope(62, b"c")),
        Err(ClientError::Busy)
    ));
    assert!(transmits(&mut lp).is_empty() && events(&mut lp).is_empty());
    assert_ne!(deadline, None);
    lp.handle_timeout(clock.advance_to(clock.at(ms(1100))));
    let t = transmits(&mut lp);
    let e = decode_sent(sent(&t[0]));
    assert_eq!(
        (e.meta.id, e.meta.attempt, e.payload),
        (Uuid::from_u128(60), 2, frames(&[b"a"]))
    );
}

#[test]
fn after_giving_up_a_late_reply_is_unsolicited_and_a_new_send_works() {
    let mut clock = Clock::new();
    let mut lp = client(&clock, retry(ms(100), 1, ms(10), ms(10), 0.0));
    lp.send(clock.now(), envelope(70, b"gone")).unwrap();
    lp.handle_timeout(clock.advance(ms(100)));
    assert_eq!(
        events(&mut lp),
        vec![Event::GaveUp {
            id: Uuid::from_u128(70),
            attempts: 1,
            payload: frames(&[b"gone"])
        }]
    );
    lp.handle_reply(clock.advance(ms(1)), reply(70, 1, b"late"));
    assert_eq!(events(&mut lp), vec![unsolicited()]);
    lp.send(clock.now(), envelope(71, b"next")).unwrap();
    lp.handle_reply(clock.advance(ms(1)), reply(71, 1, b"r"));
    assert_eq!(events(&mut lp), vec![answered(71, 1, b"r")]);
}

/// A request keeps the attempt the caller put in its envelope (one re-sent from an
/// outbox after a restart continues its count; a new one is attempt 1), and the retry
/// budget counts from it: `retries` attempts, whatever the first one's number.
/// Catches: a recovered request sent as attempt 1 (a broker holding its earlier copy
/// would take it for a stale duplicate), or one given up at once because its earlier
/// attempts used the budget.
#[test]
fn send_keeps_the_attempt_and_the_budget_counts_from_it() {
    let mut clock = Clock::new();
    let r = retry(ms(1000), 3, ms(100), ms(100), 0.0);
    let mut lp = client(&clock, r);
    let mut e = envelope(80, b"x");
    e.meta.attempt = 9;
    lp.send(clock.now(), e).unwrap();
    let t = transmits(&mut lp);
    assert_eq!(decode_sent(sent(&t[0])).meta.attempt, 9);
    lp.handle_reply(clock.now(), reply(80, 1, b"r"));
    assert_eq!(events(&mut lp), vec![stale(80, 1)]);
    // Three attempts, 9 to 11, then the give-up counts every attempt ever made.
    let mut sent_attempts = vec![9];
    for _ in 0..40 {
        clock.advance(ms(100));
        lp.handle_timeout(clock.now());
        for t in transmits(&mut lp) {
            if let Transmit::Send(f) = t {
                sent_attempts.push(decode_sent(f).meta.attempt);
            }
        }
    }
    assert_eq!(sent_attempts, [9, 10, 11]);
    let gave_up: Vec<_> = events(&mut lp)
        .into_iter()
        .filter(|e| matches!(e, Event::GaveUp { .. }))
        .collect();
    assert_eq!(
        gave_up,
        [Event::GaveUp {
            id: Uuid::from_u128(80),
            attempts: 11,
            payload: frames(&[b"x"])
        }]
    );
    // Attempt 0 is taken as 1.
    let mut e = envelope(81, b"y");
    e.meta.attempt = 0;
    lp.send(clock.now(), e).unwrap();
    let t = transmits(&mut lp);
    assert_eq!(decode_sent(sent(&t[0])).meta.attempt, 1);
}

// ---------------------------------------------------------------------------------
// Property test: random sends, replies (right, stale, failed, duplicated, plain),
// garbage and time.

#[derive(Debug, Clone)]
enum Op {
    /// The application sends a new request (refused while busy).
    Send(Frames),
    /// Time passes, then the driver calls `handle_timeout`.
    Advance(u16),
    /// A reply to the current request id, for the latest attempt plus `delta`, with
    /// status 0 ok, 1 error, 2 refused.
    ReplyCurrent(i8, u8),
    /// A reply to an earlier request (index into the requests sent, modulo).
    ReplyOld(u8, u8),
    /// Random frames: plain replies, and corrupt metadata when the last frame starts
    /// with the magic.
    Garbage(Frames),
    /// The last reply fed in, again.
    Duplicate,
}

fn op() -> impl Strategy<Value = Op> {
    let frame = prop_oneof![
        Just(Vec::new()),
        any::<u8>().prop_map(|b| vec![b]),
        proptest::collection::vec(any::<u8>(), 0..24),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|mut v| {
            v.splice(0..0, MAGIC);
            v
        }),
    ];
    let payload = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4);
    prop_oneof![
        3 => payload.prop_map(Op::Send),
        4 => (0u16..1500).prop_map(Op::Advance),
        4 => (
            prop_oneof![4 => Just(0i8), 1 => -2i8..=2],
            prop_oneof![6 => Just(0u8), 1 => 1u8..=2],
        )
            .prop_map(|(d, s)| Op::ReplyCurrent(d, s)),
        1 => (any::<u8>(), 1u8..4).prop_map(|(i, a)| Op::ReplyOld(i, a)),
        1 => proptest::collection::vec(frame, 0..4).prop_map(Op::Garbage),
        2 => Just(Op::Duplicate),
    ]
}

/// What the test knows of the core's state, from what it told us.
#[derive(Debug, Default)]
struct Model {
    /// Requests in the order sent: (id, payload).
    requests: Vec<(Uuid, Frames)>,
    /// The outstanding request, if any: (id, latest attempt sent (0 before the first),
    /// whether that attempt's reply is awaited).
    current: Option<(Uuid, u32, bool)>,
    /// Reply and GaveUp events per id.
    terminal: HashMap<Uuid, u32>,
    /// Whether the (modelled) REQ socket may send: true after a reset or a reply.
    can_send: bool,
}

/// What feeding `f` must produce, given the model's state: the rule of the module
/// documentation, written out independently of the core.
fn expected_event(m: &Model, f: &Frames) -> Event {
    let (payload, meta) = match f.split_last() {
        Some((last, rest)) if last.starts_with(&MAGIC) => match Meta::decode(last) {
            Ok(meta) => (rest.to_vec(), Some(meta)),
            Err(e) => return Event::Discarded(Discard::Malformed(ProtocolError::Envelope(e))),
        },
        _ => (f.clone(), None),
    };
    let Some((id, attempt, waiting)) = m.current else {
        return Event::Discarded(Discard::Unsolicited);
    };
    let answer = match &meta {
        None if !waiting => return Event::Discarded(Discard::Unsolicited),
        None => Answer::Ok(payload),
        Some(r) if !waiting || r.id != id || r.attempt != attempt => {
            return Event::Discarded(Discard::Stale {
                id: r.id,
                attempt: r.attempt,
            })
        }
        Some(r) if r.status == Status::Ok => Answer::Ok(payload),
        Some(r) => Answer::Failed {
            status: r.status,
            message: String::from_utf8_lossy(&payload.concat()).into_owned(),
        },
    };
    Event::Reply {
        id,
        attempt,
        answer,
    }
}

fn check_drain(lp: &mut LazyPirate, m: &mut Model, retry: &Retry, fed: Option<&Frames>) {
    while let Some(t) = lp.poll_transmit() {
        match t {
            Transmit::Send(frames) => {
                assert!(m.can_send, "Send on a REQ socket still awaiting a reply");
                m.can_send = false;
                let e = decode_sent(frames);
                let (id, attempt, waiting) = m.current.as_mut().expect("Send while idle");
                assert_eq!(e.meta.id, *id);
                let sent = m.requests.iter().find(|r| r.0 == *id).unwrap();
                assert_eq!(e.payload, sent.1, "the payload must go out unchanged");
                assert!(!*waiting, "resend without a timeout");
                assert_eq!(
                    e.meta.attempt,
                    *attempt + 1,
                    "attempts must count up by one"
                );
                assert!(
                    e.meta.attempt <= retry.retries,
                    "more attempts than allowed"
                );
                *attempt = e.meta.attempt;
                *waiting = true;
            }
            Transmit::Reset => {
                let (_, _, waiting) = m.current.as_mut().expect("Reset while idle");
                assert!(*waiting, "Reset while no attempt is outstanding");
                *waiting = false;
                m.can_send = true;
            }
        }
    }
    if let Some(f) = fed {
        // A reply is answered by exactly one event, and never by a transmit.
        let want = expected_event(m, f);
        let got: Vec<Event> = std::iter::from_fn(|| lp.poll_event()).collect();
        assert_eq!(got, vec![want.clone()], "fed {f:?}");
        if let Event::Reply { id, .. } = want {
            *m.terminal.entry(id).or_default() += 1;
            assert_eq!(m.terminal[&id], 1, "two outcomes for one request");
            m.current = None;
            m.can_send = true;
        }
    }
    while let Some(ev) = lp.poll_event() {
        match ev {
            Event::Reply { .. } => panic!("a Reply nobody sent: {ev:?}"),
            Event::GaveUp {
                id,
                attempts,
                payload,
            } => {
                let (cur, attempt, waiting) = m.current.expect("GaveUp while idle");
                assert_eq!((id, attempts), (cur, retry.retries));
                assert_eq!(attempt, retry.retries);
                assert!(!waiting);
                let sent = m.requests.iter().find(|r| r.0 == id).unwrap();
                assert_eq!(payload, sent.1, "GaveUp must hand the payload back");
                *m.terminal.entry(id).or_default() += 1;
                assert_eq!(m.terminal[&id], 1, "two outcomes for one request");
                m.current = None;
            }
            Event::Retrying { id, attempt, after } => {
                let (cur, a, waiting) = m.current.expect("Retrying while idle");
                assert_eq!(id, cur);
                // Transmits are drained first: with a zero pause the next attempt may
                // already have gone out in the same call.
                assert!(
                    (attempt == a && !waiting) || (attempt + 1 == a && after.is_zero()),
                    "Retrying {{ attempt: {attempt}, after: {after:?} }} with model {a}/{waiting}"
                );
                assert!(attempt < retry.retries);
                assert!(after <= retry.backoff.max);
            }
            Event::Discarded(_) => panic!("Discarded with no reply fed: {ev:?}"),
        }
    }
    assert_eq!(lp.is_busy(), m.current.is_some());
    assert_eq!(lp.poll_timeout().is_some(), lp.is_busy());
}

proptest! {
    #![proptest_config(sim::cases(256))]

    #[test]
    fn never_two_outcomes_for_one_request(
        ops in proptest::collection::vec(op(), 1..100),
        retries in 1u32..5,
        jitter in prop_oneof![Just(0.0), 0.0f64..=1.0],
        seed in any::<u64>(),
    ) {
        let r = retry(ms(500), retries, ms(50), ms(300), jitter);
        let mut clock = Clock::new();
        let mut lp = LazyPirate::new(clock.now(), r, seed).expect("a valid policy");
        let mut m = Model { can_send: true, ..Model::default() };
        let mut last_reply: Option<Frames> = None;
        let mut next_id = 1u128;
        for op in ops {
            let fed = match op {
                Op::Send(payload) => {
                    let busy = lp.is_busy();
                    let e = Envelope::new(Uuid::from_u128(next_id), 0, payload.clone());
                    let res = lp.send(clock.now(), e);
                    prop_assert_eq!(res.is_err(), busy);
                    if let Ok(id) = res {
                        prop_assert_eq!(id, Uuid::from_u128(next_id));
                        m.requests.push((id, payload));
                        m.current = Some((id, 0, false));
                        next_id += 1;
                    }
                    None
                }
                Op::Advance(n) => {
                    lp.handle_timeout(clock.advance(ms(u64::from(n))));
                    None
                }
                Op::ReplyCurrent(delta, status) => {
                    let Some((id, attempt, _)) = m.current else { continue };
                    let a = attempt.saturating_add_signed(i32::from(delta));
                    let status = match status {
                        0 => Status::Ok,
                        1 => Status::Error,
                        _ => Status::Refused,
                    };
                    Some(failed_reply(id.as_u128(), a, status, id.as_bytes()))
                }
                Op::ReplyOld(i, attempt) => {
                    if m.requests.is_empty() { continue }
                    let (id, _) = m.requests[usize::from(i) % m.requests.len()];
                    Some(reply(id.as_u128(), u32::from(attempt), b"old"))
                }
                Op::Garbage(f) => Some(f),
                Op::Duplicate => match &last_reply {
                    Some(f) => Some(f.clone()),
                    None => continue,
                },
            };
            if let Some(f) = &fed {
                lp.handle_reply(clock.now(), f.clone());
                last_reply = Some(f.clone());
            }
            check_drain(&mut lp, &mut m, &r, fed.as_ref());
        }
        // Let time run out: every request ends in exactly one Reply or GaveUp.
        for _ in 0..100 {
            let Some(t) = lp.poll_timeout() else { break };
            lp.handle_timeout(clock.advance_to(t));
            check_drain(&mut lp, &mut m, &r, None);
        }
        prop_assert!(!lp.is_busy());
        for (id, _) in &m.requests {
            prop_assert_eq!(m.terminal.get(id).copied(), Some(1), "request {} has no single outcome", id);
        }
    }
}

/// An overall deadline ends the request before its attempts run out: the attempt that
/// would run past it is cut short at the deadline, and no attempt starts after it.
/// Every request carries its deadline (created-at plus budget) in its metadata, so a
/// broker can drop it once its client has given up. Catches: a deadline that was only
/// a number in the metadata, or a give-up after every attempt regardless.
#[test]
fn an_overall_deadline_ends_the_request_before_its_attempts_run_out() {
    let mut r = retry(ms(400), 10, ms(100), ms(100), 0.0);
    r.deadline = Some(ms(1000));
    let log = run_unanswered(r, 5, envelope(9, b"job"));
    let sends: Vec<Duration> = log
        .iter()
        .filter(|(_, s)| matches!(s, Step::Send { .. }))
        .map(|(t, _)| *t)
        .collect();
    // 0 ms, then 400 + 100, then (900 + 100 = 1000: past the deadline, not started).
    assert_eq!(sends, vec![ms(0), ms(500)], "{log:?}");
    let (at, last) = log.last().unwrap();
    assert_eq!(
        *at,
        ms(900),
        "the second attempt times out at 900 ms: {log:?}"
    );
    assert!(matches!(last, Step::GaveUp { attempts: 2, .. }), "{log:?}");

    // An attempt is cut short at the deadline: with 1000 ms per attempt and a 700 ms
    // deadline, the first attempt ends at 700 ms.
    let mut r = retry(ms(1000), 10, ms(100), ms(100), 0.0);
    r.deadline = Some(ms(700));
    let log = run_unanswered(r, 5, envelope(10, b"job"));
    assert_eq!(log.last().unwrap().0, ms(700), "{log:?}");

    // The deadline in the metadata: created-at (here 0) plus the budget, with or
    // without an explicit deadline.
    for (r, budget) in [
        (r, 700),
        (
            retry(ms(1000), 4, ms(100), ms(10_000), 0.0),
            4 * 1000 + 100 + 200 + 400,
        ),
    ] {
        let mut lp = LazyPirate::new(Clock::new().now(), r, 1).unwrap();
        lp.send(Clock::new().now(), envelope(11, b"x")).unwrap();
        let Some(Transmit::Send(frames)) = lp.poll_transmit() else {
            panic!("nothing sent")
        };
        assert_eq!(decode_sent(frames).meta.deadline_ms, Some(budget));
    }
    // A deadline the caller set is kept.
    let mut lp = LazyPirate::new(Clock::new().now(), Retry::default(), 1).unwrap();
    let mut own = envelope(12, b"x");
    own.meta.deadline_ms = Some(42);
    lp.send(Clock::new().now(), own).unwrap();
    let Some(Transmit::Send(frames)) = lp.poll_transmit() else {
        panic!("nothing sent")
    };
    assert_eq!(decode_sent(frames).meta.deadline_ms, Some(42));
}
