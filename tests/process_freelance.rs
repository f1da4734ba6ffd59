//! Freelance (10/FLP) with real processes: `bosun client --connect A,B` over two
//! `bosun server --freelance`, the answering server SIGKILLed while it holds a request;
//! and a client with no server at all.

mod common;

use std::time::Duration;

use common::{
    bosun, deadline, field, frames, ms, now, raw_socket, recv_until, run, send, spawn_piped, Proc,
};

const SECS_10: Duration = Duration::from_secs(10);
/// The client's per-attempt timeout, as given on its command line.
const TIMEOUT: Duration = ms(1000);

/// `bosun server --freelance` on a free port and its endpoint (also its identity).
fn server(name: &str) -> (Proc, String) {
    let mut s = Proc::spawn(
        name,
        &mut bosun(&["server", "--freelance", "--bind", "tcp://127.0.0.1:*"]),
    );
    let line = s.expect_stdout("server bound=", SECS_10);
    let endpoint = field(&line, "bound").expect("server line has bound=");
    (s, endpoint)
}

fn req(i: usize) -> String {
    format!("req-{i}")
}

fn is_up(line: &str, server: &str) -> bool {
    line.contains("server up") && field(line, "server").as_deref() == Some(server)
}

/// Sends requests one at a time, each answered before the next, until at least `min`
/// were and the client has logged `server` up (it learns of a server only while it
/// has a request out). Returns how many it sent. From then on the client sends each
/// request to `server`, if it is the first in its list.
fn warm_up(c: &mut Proc, server: &str, min: usize) -> usize {
    let until = deadline(SECS_10);
    let mut sent = 0;
    loop {
        c.stderr.read_available();
        if sent >= min && c.stderr.seen.iter().any(|l| is_up(&l.text, server)) {
            return sent;
        }
        assert!(
            now() < until,
            "{server} never came up after {sent} requests:\n{}",
            c.stderr.dump()
        );
        sent += 1;
        c.write_stdin(&format!("{}\n", req(sent)));
        let reply = c
            .stdout
            .wait_for(until, |_| true)
            .unwrap_or_else(|| panic!("request {sent} unanswered:\n{}", c.stderr.dump()));
        assert_eq!(reply.text, req(sent));
    }
}

#[test]
fn client_fails_over_when_the_answering_server_is_sigkilled() {
    const BEFORE: usize = 10;
    const AFTER: usize = 19;
    let (mut a, ep_a) = server("server-a");
    let (mut b, ep_b) = server("server-b");
    let servers = format!("{ep_a},{ep_b}");
    let mut c = spawn_piped(
        "client",
        &[
            "-v",
            "client",
            "--connect",
            &servers,
            "--timeout",
            "1s",
            "--retries",
            "3",
            "--backoff-initial",
            "50ms",
            "--summary",
        ],
    );
    // The stream is paced by the test, so that the kill lands where it should.
    let held = warm_up(&mut c, &ep_a, BEFORE) + 1;
    let n = held + AFTER;

    // A, first in the list and up, answers. Freeze it, hand it a request, kill it.
    a.signal(libc::SIGSTOP);
    c.write_stdin(&format!("{}\n", req(held)));
    let written = now();
    a.kill();
    for i in held + 1..=n {
        c.write_stdin(&format!("{}\n", req(i)));
    }
    c.close_stdin();

    let status = c.expect_done(Duration::from_secs(15));
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    assert_eq!(
        c.stdout.texts(),
        (1..=n).map(req).collect::<Vec<_>>(),
        "every reply exactly once and in order"
    );
    // The held request was A's: its answer waited for the attempt to time out, then
    // came from B at once.
    let moved = c.stdout.seen[held - 1]
        .at
        .saturating_duration_since(written);
    assert!(
        moved >= TIMEOUT && moved < TIMEOUT + ms(2000),
        "request {held} answered {moved:?} after it was written; A held it, so want the \
         {TIMEOUT:?} attempt timeout, then B\n{}",
        c.stderr.dump()
    );
    let down = |l: &common::Line| {
        l.text.contains("server down") && field(&l.text, "server").as_deref() == Some(&ep_a)
    };
    assert!(
        c.stderr.seen.iter().any(down),
        "the client marks A down:\n{}",
        c.stderr.dump()
    );
    let summary = c.summary().expect("summary line");
    assert_eq!(summary.answered, n as u64, "{summary:?}");
    assert!(summary.retries >= 1, "a failover is counted: {summary:?}");
    assert!(b.is_running(), "server B lives on");
}

/// How long a Freelance client trusts a server it has not heard from (not settable on
/// the command line: 10/FLP's 6 s).
const SERVER_TTL: Duration = ms(6000);

#[test]
fn after_an_idle_spell_the_client_does_not_spend_its_one_attempt_on_a_dead_server() {
    let (mut a, ep_a) = server("server-a");
    let (mut b, ep_b) = server("server-b");
    let servers = format!("{ep_a},{ep_b}");
    // One attempt only: a request sent to the dead server is a failed request.
    let mut c = spawn_piped(
        "client",
        &[
            "-v",
            "client",
            "--connect",
            &servers,
            "--timeout",
            "1s",
            "--retries",
            "1",
        ],
    );
    let sent = warm_up(&mut c, &ep_a, 1);
    a.kill();
    // The client sits idle, waiting on its stdin, for longer than it trusts a server.
    // Not a synchronisation: the passing of this much time is the test's condition.
    common::wait_until(SERVER_TTL + ms(500), || false);
    c.write_stdin("late\n");
    c.close_stdin();
    let status = c.expect_done(SECS_10);
    assert!(
        status.success(),
        "client: {status}; A was silent past its TTL, so the request should go to B\n{}",
        c.stderr.dump()
    );
    let mut want: Vec<String> = (1..=sent).map(req).collect();
    want.push("late".to_string());
    assert_eq!(c.stdout.texts(), want);
    assert!(b.is_running(), "server B lives on");
}

/// Waits until the Freelance server at `endpoint` has worked through what was queued
/// for it: two PING/PONG round trips over a connection of our own. The server reads
/// its connections in turn and each time drains what is there, so by the second PONG
/// it has read (and answered) what waited on the other connections. A Freelance server
/// speaks only when spoken to (no hello on a new connection), so the first message on
/// the connection is the first PONG.
fn drain_server(endpoint: &str) {
    let ctx = zmq::Context::new();
    let probe = raw_socket(&ctx, zmq::DEALER);
    probe.connect(endpoint).expect("connect");
    let until = deadline(SECS_10);
    for n in 1..=2 {
        send(&probe, &frames(&[b"PING"]));
        let msg = recv_until(&probe, until).unwrap_or_else(|| panic!("no PONG {n}"));
        assert_eq!(msg, frames(&[b"PONG"]), "PONG {n}, and nothing before it");
    }
}

/// A foreign Freelance client (a raw DEALER, no bosun metadata): the server says
/// nothing on a new connection, answers PING with exactly PONG, and echoes a request's
/// payload frames as they came (not joined), after the control frame and with no
/// metadata frame added.
#[test]
fn server_speaks_only_when_spoken_to_and_answers_a_foreign_client_plainly() {
    let (mut s, ep) = server("server");
    let ctx = zmq::Context::new();
    let client = raw_socket(&ctx, zmq::DEALER);
    client.connect(&ep).expect("connect");
    let until = deadline(SECS_10);
    send(&client, &frames(&[b"PING"]));
    let first = recv_until(&client, until).expect("PONG");
    assert_eq!(first, frames(&[b"PONG"]), "the first message is the PONG");
    let request = frames(&[b"ctl-1", b"a", b"", b"b"]);
    send(&client, &request);
    let reply = recv_until(&client, until).expect("a reply to the request");
    assert_eq!(reply, request, "[control][payload frames], unchanged");
    // Nothing else is on the way: a second PING is answered by exactly one PONG.
    send(&client, &frames(&[b"PING"]));
    let next = recv_until(&client, until).expect("PONG");
    assert_eq!(next, frames(&[b"PONG"]));
    assert!(s.is_running(), "{}", s.dump());
}

#[test]
fn late_reply_from_a_stalled_server_is_dropped_not_printed_twice() {
    const BEFORE: usize = 5;
    const AFTER: usize = 9;
    let (mut a, ep_a) = server("server-a");
    let (mut b, ep_b) = server("server-b");
    let servers = format!("{ep_a},{ep_b}");
    // -vv: the client logs each reply it drops as a duplicate.
    let mut c = spawn_piped(
        "client",
        &[
            "-vv",
            "client",
            "--connect",
            &servers,
            "--timeout",
            "1s",
            "--retries",
            "3",
            "--summary",
        ],
    );
    let held = warm_up(&mut c, &ep_a, BEFORE) + 1;
    let n = held + AFTER;

    // A stalls holding a request; B answers it after the attempt times out.
    a.signal(libc::SIGSTOP);
    c.write_stdin(&format!("{}\n", req(held)));
    let written = now();
    let moved = c
        .stdout
        .wait_for(deadline(SECS_10), |_| true)
        .unwrap_or_else(|| panic!("request {held} unanswered\n{}", c.stderr.dump()));
    assert_eq!(moved.text, req(held));
    assert!(
        moved.at.saturating_duration_since(written) >= TIMEOUT,
        "request {held} answered before its attempt on A timed out: A was not answering"
    );

    // A wakes up and answers the request B already answered.
    a.signal(libc::SIGCONT);
    drain_server(&ep_a);
    for i in held + 1..=n {
        c.write_stdin(&format!("{}\n", req(i)));
    }
    c.close_stdin();
    let status = c.expect_done(SECS_10);
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    assert_eq!(
        c.stdout.texts(),
        (1..=n).map(req).collect::<Vec<_>>(),
        "every reply exactly once and in order"
    );
    assert!(
        c.stderr
            .seen
            .iter()
            .any(|l| l.text.contains("duplicate reply dropped")),
        "A's late reply reached the client and was dropped:\n{}",
        c.stderr.dump()
    );
    assert!(a.is_running() && b.is_running());
}

#[test]
fn client_with_no_server_gives_up_within_its_retry_budget() {
    let nobody = |_| format!("tcp://127.0.0.1:{}", common::free_port());
    let servers: Vec<String> = (0..2).map(nobody).collect();
    let out = run(
        &[
            "client",
            "--connect",
            &servers.join(","),
            "--request",
            "anyone?",
            "--timeout",
            "300ms",
            "--retries",
            "2",
            "--backoff-initial",
            "50ms",
            "--backoff-max",
            "50ms",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(out.stderr.len(), 1, "one line of error: {out:?}");
    let line = &out.stderr[0];
    assert!(
        line.starts_with("bosun client:") && line.contains("2 attempts"),
        "{out:?}"
    );
    // Two 300 ms attempts and a 50 ms pause (with jitter), plus start-up.
    assert!(
        out.elapsed >= ms(600) && out.elapsed < ms(3000),
        "gave up after {:?}",
        out.elapsed
    );
}
