//! The Freelance (10/FLP) client core in virtual time: pings find servers, a request
//! goes to a server that is up, a dead server is left for another, late and duplicate
//! replies are dropped, plain replies from a foreign server are taken by their control
//! frame, attempts are numbered from 1, the client gives up after exactly `retries`
//! attempts, and settings that would spin are refused.

mod sim;

use std::time::{Duration, Instant};

use bosun::proto::envelope::{Answer, Status, MAGIC};
use bosun::proto::frames::Frames;
use bosun::proto::freelance::{
    parse_incoming, Event, Freelance, FreelanceConfig, Incoming, PING, PONG,
};
use bosun::proto::server::{Dialect, Event as SEvent, Faults, Server, Transmit as STx};
use bosun::{Backoff, Envelope, Retry};
use sim::rejected;
use uuid::Uuid;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(retries: u32) -> FreelanceConfig {
    FreelanceConfig {
        ping_interval: ms(2000),
        server_ttl: ms(6000),
        retry: Retry {
            timeout: ms(500),
            retries,
            backoff: Backoff {
                initial: ms(100),
                max: ms(100),
                jitter: 0.0,
            },
            deadline: None,
        },
    }
}

fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)] // the one origin of virtual time
    Instant::now()
}

/// A request of one payload frame with a fixed id (no clock, no RNG).
fn request(id: u128, body: &[u8]) -> Envelope {
    Envelope::new(Uuid::from_u128(id), 0, vec![body.to_vec()])
}

fn servers() -> Vec<String> {
    vec!["tcp://a".to_string(), "tcp://b".to_string()]
}

fn transmits(c: &mut Freelance) -> Vec<Frames> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut Freelance) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn pong(server: &str) -> Frames {
    vec![server.as_bytes().to_vec(), PONG.to_vec()]
}

/// What a bosun echo server (the Freelance server core) answers to a request the client
/// sent to `server`, as the client's ROUTER receives it.
fn answer(server: &str, request: &Frames) -> Frames {
    let client_side = request[1..].to_vec();
    let mut as_received = vec![b"client".to_vec()];
    as_received.extend(client_side);
    let mut s = Server::new(Dialect::Freelance, Faults::default());
    s.handle_frames(origin(), as_received);
    let Some(SEvent::Request { token, request, .. }) = s.poll_event() else {
        panic!("not a valid request: {request:?}")
    };
    s.reply(origin(), token, Ok(request.payload));
    let Some(STx::Send(reply)) = s.poll_transmit() else {
        panic!("the server did not answer")
    };
    assert_eq!(reply[0], b"client", "the answer goes back to the client");
    let mut back = vec![server.as_bytes().to_vec()];
    back.extend(reply.into_iter().skip(1));
    back
}

/// The requests (not pings) in `out` sent to `server`: `[server][control][payload...]
/// [metadata]`.
fn requests_to(out: &[Frames], server: &str) -> Vec<Frames> {
    out.iter()
        .filter(|m| m[0] == server.as_bytes() && m.len() >= 3)
        .cloned()
        .collect()
}

/// The envelope a request carries, checking that its control frame is its id.
fn sent(request: &Frames) -> Envelope {
    let e = Envelope::decode(request[2..].to_vec()).expect("a request carries metadata");
    assert_eq!(
        request[1],
        e.id().as_bytes().to_vec(),
        "the control frame is the id"
    );
    e
}

#[test]
fn pings_every_server_then_sends_to_one_that_is_up() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1).unwrap();
    let pings = transmits(&mut c);
    assert_eq!(pings.len(), 2);
    assert!(pings.iter().all(|p| p.len() == 2 && p[1] == PING));
    // No server is up: the request waits.
    let id = c.send(t0, request(1, b"q")).unwrap();
    assert!(transmits(&mut c).is_empty());
    // b answers its ping first: the waiting request goes to b at once.
    c.handle_frames(t0 + ms(10), pong("tcp://b"));
    let out = transmits(&mut c);
    let to_b = requests_to(&out, "tcp://b");
    assert_eq!(to_b.len(), 1, "{out:?}");
    assert_eq!(
        to_b[0][1],
        id.as_bytes().to_vec(),
        "the control frame is the id"
    );
    assert!(events(&mut c).contains(&Event::ServerUp {
        server: b"tcp://b".to_vec()
    }));
    let e = sent(&to_b[0]);
    assert_eq!(
        (e.meta.attempt, e.payload.clone()),
        (1, vec![b"q".to_vec()]),
        "the first attempt is numbered 1"
    );
    c.handle_frames(t0 + ms(20), answer("tcp://b", &to_b[0]));
    let evs = events(&mut c);
    assert_eq!(
        evs,
        vec![Event::Reply {
            id,
            server: b"tcp://b".to_vec(),
            attempt: 1,
            answer: Answer::Ok(vec![b"q".to_vec()])
        }]
    );
    assert_eq!(c.servers_up(), vec!["tcp://b".to_string()]);
}

#[test]
fn a_timed_out_server_is_left_for_another_and_its_late_reply_is_dropped() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1).unwrap();
    let _ = transmits(&mut c);
    c.handle_frames(t0, pong("tcp://a"));
    c.handle_frames(t0, pong("tcp://b"));
    let _ = events(&mut c);
    let id = c.send(t0, request(1, b"q")).unwrap();
    let first = transmits(&mut c);
    let to_a = requests_to(&first, "tcp://a");
    assert_eq!(to_a.len(), 1, "the first server that is up: {first:?}");
    assert_eq!(sent(&to_a[0]).meta.attempt, 1, "the first attempt is 1");
    // a never answers: at the attempt timeout, not before, the request goes to b.
    c.handle_timeout(t0 + ms(499));
    assert!(transmits(&mut c).is_empty());
    c.handle_timeout(t0 + ms(500));
    let second = transmits(&mut c);
    let to_b = requests_to(&second, "tcp://b");
    assert_eq!(to_b.len(), 1, "fail over at once to b: {second:?}");
    let retry = sent(&to_b[0]);
    assert_eq!(
        (retry.id(), retry.meta.attempt, retry.payload),
        (id, 2, vec![b"q".to_vec()]),
        "the retry is attempt 2 of the same request"
    );
    assert!(events(&mut c).contains(&Event::ServerDown {
        server: b"tcp://a".to_vec()
    }));
    c.handle_frames(t0 + ms(510), answer("tcp://b", &to_b[0]));
    assert_eq!(
        events(&mut c),
        vec![Event::Reply {
            id,
            server: b"tcp://b".to_vec(),
            attempt: 2,
            answer: Answer::Ok(vec![b"q".to_vec()])
        }]
    );
    // a wakes up and answers the first attempt: dropped, never a second Reply.
    c.handle_frames(t0 + ms(600), answer("tcp://a", &to_a[0]));
    let evs = events(&mut c);
    assert!(
        evs.iter().all(|e| !matches!(e, Event::Reply { .. })),
        "{evs:?}"
    );
    assert!(evs.contains(&Event::Duplicate { id: Some(id) }), "{evs:?}");
}

/// A server heard from once goes down exactly `server_ttl` later with no PONG since,
/// and the ping rounds go out every `ping_interval` meanwhile, to every server. (A
/// server that is down, here b, may also be probed between rounds.)
#[test]
fn servers_go_down_after_the_ttl_without_pongs() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1).unwrap();
    c.handle_frames(t0, pong("tcp://a"));
    let _ = events(&mut c);
    // (ms since t0, server) of every ping.
    let mut pings: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut log = |c: &mut Freelance, at: Instant| {
        for m in transmits(c) {
            assert!(m.len() == 2 && m[1] == PING, "only pings: {m:?}");
            pings.push(((at - t0).as_millis() as u64, m[0].clone()));
        }
    };
    log(&mut c, t0);
    // Step through every wake-up the core asks for, as a driver does.
    for _ in 0..100 {
        match c.poll_timeout() {
            Some(next) if next < t0 + ms(5999) => {
                c.handle_timeout(next);
                log(&mut c, next);
            }
            _ => break,
        }
    }
    c.handle_timeout(t0 + ms(5999));
    log(&mut c, t0 + ms(5999));
    assert_eq!(c.servers_up(), vec!["tcp://a".to_string()]);
    c.handle_timeout(t0 + ms(6000));
    log(&mut c, t0 + ms(6000));
    assert!(c.servers_up().is_empty());
    assert!(events(&mut c).contains(&Event::ServerDown {
        server: b"tcp://a".to_vec()
    }));
    // The server that is up gets exactly the rounds: the first, then 2 s, 4 s and 6 s.
    let to = |server: &[u8]| -> Vec<u64> {
        pings
            .iter()
            .filter(|(_, s)| s == server)
            .map(|(at, _)| *at)
            .collect()
    };
    assert_eq!(to(b"tcp://a"), vec![0, 2000, 4000, 6000], "{pings:?}");
    let b = to(b"tcp://b");
    for round in [0, 2000, 4000, 6000] {
        assert!(b.contains(&round), "b missed the round at {round}: {b:?}");
    }
}

#[test]
fn gives_up_after_exactly_retries_attempts_with_the_body() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1).unwrap();
    let _ = transmits(&mut c);
    c.handle_frames(t0, pong("tcp://a"));
    c.handle_frames(t0, pong("tcp://b"));
    let id = c.send(t0, request(2, b"body")).unwrap();
    let mut now = t0;
    // (server, attempt) of every request sent.
    let mut attempts: Vec<(Vec<u8>, u32)> = Vec::new();
    let mut log = |out: Vec<Frames>| {
        for m in out.iter().filter(|m| m.len() >= 3) {
            attempts.push((m[0].clone(), sent(m).meta.attempt));
        }
    };
    log(transmits(&mut c));
    let mut gave_up = None;
    for _ in 0..100 {
        let Some(next) = c.poll_timeout() else { break };
        now = next;
        c.handle_timeout(now);
        log(transmits(&mut c));
        if let Some(e) = events(&mut c)
            .into_iter()
            .find(|e| matches!(e, Event::GaveUp { .. }))
        {
            gave_up = Some(e);
            break;
        }
    }
    assert_eq!(
        gave_up,
        Some(Event::GaveUp {
            id,
            attempts: 3,
            payload: vec![b"body".to_vec()]
        })
    );
    assert_eq!(
        attempts,
        vec![(b"tcp://a".to_vec(), 1), (b"tcp://b".to_vec(), 2)],
        "attempt 3 found no server up, so only 2 were sent, numbered from 1"
    );
    // a times out at 500 ms, b at 1000 ms, the backoff of 100 ms finds no server up,
    // and attempt 3 waits its 500 ms for one.
    assert_eq!(now - t0, ms(1600), "three timeouts of 500 ms and one pause");
}

/// Junk from servers never becomes a Reply: each is reported for what it is (a stranger,
/// a bad frame count, metadata that does not decode, a reply to no outstanding request).
/// The server side rejects junk with a typed error too.
#[test]
fn garbage_from_servers_is_dropped_without_panic() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1).unwrap();
    let id = c.send(t0, request(1, b"q")).unwrap();
    let control = id.as_bytes().to_vec();
    let junk: Vec<Frames> = vec![
        vec![],
        vec![b"tcp://nobody".to_vec(), PONG.to_vec()],
        vec![b"tcp://a".to_vec()],
        vec![b"tcp://a".to_vec(), b"PONGX".to_vec()],
        vec![
            b"tcp://a".to_vec(),
            b"ctl".to_vec(),
            b"not an envelope".to_vec(),
        ],
        vec![
            b"tcp://a".to_vec(),
            vec![0; 16],
            b"x".to_vec(),
            b"y".to_vec(),
        ],
        vec![b"tcp://a".to_vec(), vec![0xff; 1 << 20], vec![0xff; 3]],
        // The right control frame, but metadata that does not decode.
        vec![b"tcp://a".to_vec(), control.clone(), MAGIC.to_vec()],
        vec![
            b"tcp://a".to_vec(),
            control,
            b"x".to_vec(),
            [&MAGIC[..], &[1, 9, 0, 44]].concat(),
        ],
    ];
    for frames in junk {
        c.handle_frames(t0, frames);
    }
    let evs = events(&mut c);
    assert!(
        evs.iter().all(|e| !matches!(e, Event::Reply { .. })),
        "{evs:?}"
    );
    assert!(
        evs.contains(&Event::UnknownServer {
            identity: b"tcp://nobody".to_vec()
        }),
        "{evs:?}"
    );
    let count = |f: fn(&Event) -> bool| evs.iter().filter(|e| f(e)).count();
    assert_eq!(
        count(|e| matches!(e, Event::Duplicate { .. })),
        3,
        "{evs:?}"
    );
    assert_eq!(
        count(|e| matches!(e, Event::Malformed { .. })),
        4,
        "two bad frame counts, two bad metadata frames: {evs:?}"
    );
    // Still outstanding: the real answer is taken.
    let mut reply = vec![b"tcp://a".to_vec(), id.as_bytes().to_vec()];
    reply.extend(request(1, b"ok").encode());
    c.handle_frames(t0, reply);
    assert!(
        matches!(events(&mut c).as_slice(), [Event::Reply { id: got, .. }] if *got == id),
        "the junk left the request outstanding"
    );

    // The server side rejects junk with a typed error too.
    assert!(parse_incoming(vec![]).is_err());
    assert!(parse_incoming(vec![b"c".to_vec()]).is_err());
    assert!(parse_incoming(vec![b"c".to_vec(), b"x".to_vec()]).is_err());
    assert!(parse_incoming(vec![b"c".to_vec(), b"ctl".to_vec(), MAGIC.to_vec()]).is_err());
    assert_eq!(
        parse_incoming(vec![b"c".to_vec(), PING.to_vec()]).unwrap(),
        Incoming::Ping(vec![b"c".to_vec(), PONG.to_vec()])
    );
    let mut s = Server::new(Dialect::Freelance, Faults::default());
    s.handle_frames(t0, vec![b"c".to_vec(), b"x".to_vec()]);
    assert!(matches!(s.poll_event(), Some(SEvent::Malformed(_))));
    assert_eq!((s.poll_transmit(), s.received()), (None, 0));
}

/// A foreign Freelance server knows nothing of bosun's metadata: it returns the control
/// frame and a plain payload. The control frame alone matches the reply, its frames are
/// kept apart, and a late plain copy is a Duplicate. A bosun server's failure (status
/// Error) reaches the application as a failed answer.
#[test]
fn plain_replies_are_matched_by_the_control_frame() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1).unwrap();
    let _ = transmits(&mut c);
    c.handle_frames(t0, pong("tcp://a"));
    let _ = events(&mut c);
    let id = c.send(t0, request(3, b"q")).unwrap();
    let to_a = requests_to(&transmits(&mut c), "tcp://a");
    assert_eq!(to_a.len(), 1);
    let plain = vec![
        b"tcp://a".to_vec(),
        to_a[0][1].clone(),
        b"A".to_vec(),
        b"B".to_vec(),
    ];
    c.handle_frames(t0 + ms(10), plain.clone());
    assert_eq!(
        events(&mut c),
        vec![Event::Reply {
            id,
            server: b"tcp://a".to_vec(),
            attempt: 1,
            answer: Answer::Ok(vec![b"A".to_vec(), b"B".to_vec()])
        }]
    );
    c.handle_frames(t0 + ms(20), plain);
    assert_eq!(events(&mut c), vec![Event::Duplicate { id: Some(id) }]);

    // A bosun server whose handler failed.
    let id = c.send(t0 + ms(30), request(4, b"q")).unwrap();
    let to_a = requests_to(&transmits(&mut c), "tcp://a");
    let e = sent(&to_a[0]);
    let mut failed = vec![b"tcp://a".to_vec(), to_a[0][1].clone(), b"no disk".to_vec()];
    failed.push(e.meta.reply(Status::Error).encode());
    c.handle_frames(t0 + ms(40), failed);
    assert_eq!(
        events(&mut c),
        vec![Event::Reply {
            id,
            server: b"tcp://a".to_vec(),
            attempt: 1,
            answer: Answer::Failed {
                status: Status::Error,
                message: "no disk".into()
            }
        }]
    );
}

/// Settings that would spin or could never work are refused, naming the field: a zero
/// ping interval (handle_timeout used to re-arm the ping timer at `now` and loop
/// forever), a zero server TTL, durations that overflow the clock, a retry policy with
/// no attempt, and no server at all.
#[test]
fn constructor_rejects_settings_that_spin_and_no_servers() {
    let t0 = origin();
    let field =
        |servers: &[String], cfg: FreelanceConfig| rejected(Freelance::new(t0, servers, cfg, 1));
    assert_eq!(field(&servers(), cfg(3)), "accepted");
    assert_eq!(field(&servers(), FreelanceConfig::default()), "accepted");
    let zero_ping = FreelanceConfig {
        ping_interval: Duration::ZERO,
        ..cfg(3)
    };
    assert_eq!(field(&servers(), zero_ping), "ping_interval");
    let forever_ping = FreelanceConfig {
        ping_interval: Duration::from_secs(u64::MAX),
        ..cfg(3)
    };
    assert_eq!(field(&servers(), forever_ping), "ping_interval");
    let zero_ttl = FreelanceConfig {
        server_ttl: Duration::ZERO,
        ..cfg(3)
    };
    assert_eq!(field(&servers(), zero_ttl), "server_ttl");
    assert_eq!(field(&servers(), cfg(0)), "retry.retries");
    let zero_timeout = FreelanceConfig {
        retry: Retry {
            timeout: Duration::ZERO,
            ..cfg(3).retry
        },
        ..cfg(3)
    };
    assert_eq!(field(&servers(), zero_timeout), "retry.timeout");
    assert_eq!(field(&[], cfg(3)), "servers");
    // The setting checks come first: an empty list with a zero ping names one of them.
    assert_ne!(field(&[], zero_ping), "accepted");
}
