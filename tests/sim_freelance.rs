//! The Freelance (10/FLP) client core in virtual time: pings find servers, a request
//! goes to a server that is up, a dead server is left for another, late and duplicate
//! replies are dropped, and the client gives up after exactly `retries` attempts.

use std::time::{Duration, Instant};

use bosun::proto::frames::Frames;
use bosun::proto::freelance::{serve, Event, Freelance, FreelanceConfig, PING, PONG};
use bosun::{Backoff, Envelope, Retry};

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
        },
    }
}

fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)] // the one origin of virtual time
    Instant::now()
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

/// What an echo server answers to a request the client sent to `server`.
fn answer(server: &str, request: &Frames) -> Frames {
    let client_side = request[1..].to_vec();
    let mut as_received = vec![b"client".to_vec()];
    as_received.extend(client_side);
    let mut echo = |body: Frames| body;
    let reply = serve(as_received, &mut echo).expect("a valid request");
    let mut back = vec![server.as_bytes().to_vec()];
    back.extend(reply.into_iter().skip(1));
    back
}

fn requests_to(out: &[Frames], server: &str) -> Vec<Frames> {
    out.iter()
        .filter(|m| m[0] == server.as_bytes() && m.len() == 3)
        .cloned()
        .collect()
}

#[test]
fn pings_every_server_then_sends_to_one_that_is_up() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1);
    let pings = transmits(&mut c);
    assert_eq!(pings.len(), 2);
    assert!(pings.iter().all(|p| p.len() == 2 && p[1] == PING));
    // No server is up: the request waits.
    let id = c.send(t0, Envelope::new(b"q".to_vec())).unwrap();
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
    c.handle_frames(t0 + ms(20), answer("tcp://b", &to_b[0]));
    let evs = events(&mut c);
    assert!(
        matches!(evs.as_slice(), [Event::Reply { id: got, body, .. }] if *got == id && body == b"q"),
        "{evs:?}"
    );
    assert_eq!(c.servers_up(), vec!["tcp://b".to_string()]);
}

#[test]
fn a_timed_out_server_is_left_for_another_and_its_late_reply_is_dropped() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1);
    let _ = transmits(&mut c);
    c.handle_frames(t0, pong("tcp://a"));
    c.handle_frames(t0, pong("tcp://b"));
    let _ = events(&mut c);
    let id = c.send(t0, Envelope::new(b"q".to_vec())).unwrap();
    let first = transmits(&mut c);
    let to_a = requests_to(&first, "tcp://a");
    assert_eq!(to_a.len(), 1, "the first server that is up: {first:?}");
    // a never answers: at the attempt timeout, not before, the request goes to b.
    c.handle_timeout(t0 + ms(499));
    assert!(transmits(&mut c).is_empty());
    c.handle_timeout(t0 + ms(500));
    let second = transmits(&mut c);
    let to_b = requests_to(&second, "tcp://b");
    assert_eq!(to_b.len(), 1, "fail over at once to b: {second:?}");
    assert!(events(&mut c).contains(&Event::ServerDown {
        server: b"tcp://a".to_vec()
    }));
    c.handle_frames(t0 + ms(510), answer("tcp://b", &to_b[0]));
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::Reply { id: got, .. }] if *got == id
    ));
    // a wakes up and answers the first attempt: dropped, never a second Reply.
    c.handle_frames(t0 + ms(600), answer("tcp://a", &to_a[0]));
    let evs = events(&mut c);
    assert!(
        evs.iter().all(|e| !matches!(e, Event::Reply { .. })),
        "{evs:?}"
    );
    assert!(evs.contains(&Event::Duplicate { id: Some(id) }), "{evs:?}");
}

#[test]
fn servers_go_down_after_the_ttl_without_pongs() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1);
    c.handle_frames(t0, pong("tcp://a"));
    let _ = events(&mut c);
    // Step through every wake-up the core asks for, as a driver does.
    for _ in 0..100 {
        match c.poll_timeout() {
            Some(next) if next < t0 + ms(5999) => c.handle_timeout(next),
            _ => break,
        }
    }
    c.handle_timeout(t0 + ms(5999));
    assert_eq!(c.servers_up(), vec!["tcp://a".to_string()]);
    c.handle_timeout(t0 + ms(6000));
    assert!(c.servers_up().is_empty());
    assert!(events(&mut c).contains(&Event::ServerDown {
        server: b"tcp://a".to_vec()
    }));
    // Pings keep going out every interval meanwhile.
    let pings: usize = transmits(&mut c)
        .iter()
        .filter(|m| m.len() == 2 && m[1] == PING)
        .count();
    assert_eq!(
        pings,
        2 * 4,
        "the first round, then rounds at 2 s, 4 s and 6 s"
    );
}

#[test]
fn gives_up_after_exactly_retries_attempts_with_the_body() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1);
    let _ = transmits(&mut c);
    c.handle_frames(t0, pong("tcp://a"));
    c.handle_frames(t0, pong("tcp://b"));
    let id = c.send(t0, Envelope::new(b"body".to_vec())).unwrap();
    let mut now = t0;
    let mut sent = requests_to(&transmits(&mut c), "tcp://a").len()
        + requests_to(&transmits(&mut c), "tcp://b").len();
    let mut gave_up = None;
    for _ in 0..100 {
        let Some(next) = c.poll_timeout() else { break };
        now = next;
        c.handle_timeout(now);
        let out = transmits(&mut c);
        sent += out.iter().filter(|m| m.len() == 3).count();
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
            body: b"body".to_vec()
        })
    );
    assert_eq!(sent, 2, "attempt 3 found no server up, so only 2 were sent");
    assert!(
        now >= t0 + ms(1500),
        "three timeouts of 500 ms: {:?}",
        now - t0
    );
}

#[test]
fn garbage_from_servers_is_dropped_without_panic() {
    let t0 = origin();
    let mut c = Freelance::new(t0, &servers(), cfg(3), 1);
    let _ = c.send(t0, Envelope::new(b"q".to_vec()));
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
    ];
    for frames in junk {
        c.handle_frames(t0, frames);
    }
    let evs = events(&mut c);
    assert!(
        evs.iter().all(|e| !matches!(e, Event::Reply { .. })),
        "{evs:?}"
    );
    // The server side rejects junk with a typed error too.
    let mut echo = |b: Frames| b;
    assert!(serve(vec![], &mut echo).is_err());
    assert!(serve(vec![b"c".to_vec()], &mut echo).is_err());
    assert!(serve(vec![b"c".to_vec(), b"x".to_vec()], &mut echo).is_err());
    assert_eq!(
        serve(vec![b"c".to_vec(), PING.to_vec()], &mut echo).unwrap(),
        vec![b"c".to_vec(), PONG.to_vec()]
    );
}
