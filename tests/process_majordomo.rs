//! Majordomo (7/MDP + 8/MMI) with real processes: `bosun broker`, `bosun worker
//! --service`, `bosun client --service` and `bosun stats`. A worker SIGKILLed while it
//! holds a request, the broker SIGKILLed and restarted on the same port, garbage from
//! raw zmq sockets, 8/MMI through the command line, worker capacity, and Ctrl-C.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{
    bosun, deadline, expect_handler_failure, field, frames, junk, many_frames, ms, now, raw_socket,
    recv_until, request_lines, run, send, spawn_piped, start_broker, Outcome, Proc,
};

/// Heartbeat of the brokers and workers that must notice a death quickly: 300 ms.
const INTERVAL: &str = "100ms";
const LIVENESS: &str = "3";
const FAST: [&str; 4] = [
    "--heartbeat-interval",
    INTERVAL,
    "--heartbeat-liveness",
    LIVENESS,
];
/// For tests that are not about expiry: a live worker starved of CPU for a few hundred
/// milliseconds on a loaded machine must not be expired (5 s to expiry).
const STEADY: [&str; 4] = ["--heartbeat-interval", "1s", "--heartbeat-liveness", "5"];
/// A heartbeat so slow (15 s to expiry) that expiry cannot explain anything a test sees.
const SLOW: [&str; 4] = ["--heartbeat-interval", "5s", "--heartbeat-liveness", "3"];

const SECS_10: Duration = Duration::from_secs(10);
/// A free port, picked by the broker.
const ANY: &str = "tcp://127.0.0.1:*";

/// `bosun -v broker --bind BIND extra...` and the endpoint it bound.
fn broker(bind: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["-v", "broker", "--bind", bind];
    args.extend_from_slice(extra);
    start_broker("broker", &mut bosun(&args))
}

fn fast_broker() -> (Proc, String) {
    broker(ANY, &FAST)
}

/// A Majordomo worker of `service`: the fast heartbeat unless `extra` sets one.
fn worker(name: &str, endpoint: &str, service: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["-v", "worker", "--connect", endpoint, "--service", service];
    if !extra.contains(&"--heartbeat-interval") {
        args.extend(FAST);
    }
    args.extend(["--reconnect-initial", "100ms", "--reconnect-max", "400ms"]);
    args.extend_from_slice(extra);
    Proc::spawn(name, &mut bosun(&args))
}

/// Waits for the broker's next `worker ready` line; returns the worker's identity (hex).
fn next_ready(broker: &mut Proc, who: &str) -> String {
    let line = broker.expect_stderr(&format!("{who} ready"), SECS_10, |l| {
        l.contains("worker ready")
    });
    field(&line.text, "worker").expect("worker ready line has worker=")
}

fn is_gone(line: &str, id: &str) -> bool {
    line.contains("worker gone") && field(line, "worker").as_deref() == Some(id)
}

/// A handler that announces the request on stderr, then outlasts the test.
const HOLD: &str = "echo handling >&2; exec sleep 60";

/// A one-request Majordomo client with a long timeout: any retry would show.
fn one_request(endpoint: &str, service: &str, body: &str, timeout: &str) -> Proc {
    Proc::spawn(
        "client",
        &mut bosun(&[
            "client",
            "--connect",
            endpoint,
            "--service",
            service,
            "--request",
            body,
            "--timeout",
            timeout,
            "--retries",
            "3",
            "--summary",
        ]),
    )
}

fn want_lines(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("req-{i}")).collect()
}

/// Splits `W1:req-7` into `("W1", "req-7")`.
fn split_reply(line: &str) -> (&str, &str) {
    line.split_once(':')
        .unwrap_or_else(|| panic!("reply without a worker prefix: {line:?}"))
}

/// Heartbeat of the SIGKILL test: a dead worker is expired after 1 s, far sooner than
/// the client's 8 s timeout, and a live one survives a CPU-starved 900 ms.
const KILL_HB: [&str; 4] = [
    "--heartbeat-interval",
    "100ms",
    "--heartbeat-liveness",
    "10",
];
const KILL_EXPIRY: Duration = ms(1000);

/// Worker A (replies `A:`) holding a request its handler never finishes, the client
/// (`timeout` per attempt) waiting for it, and worker B (replies `B:`) ready behind A;
/// both workers with heartbeat `hb`.
struct Held {
    a: Proc,
    id_a: String,
    client: Proc,
    b: Proc,
    id_b: String,
}

fn held_by_a_with_b_ready(broker: &mut Proc, ep: &str, hb: &[&str], timeout: &str) -> Held {
    let mut a = worker(
        "worker-a",
        ep,
        "echo",
        &[hb, &["--reply-prefix", "A:", "--exec", HOLD]].concat(),
    );
    let id_a = next_ready(broker, "worker A");
    // A is the only worker, so the request is A's; its handler says when it has it.
    let client = one_request(ep, "echo", "job", timeout);
    a.expect_stderr("the request reaching worker A", SECS_10, |l| {
        l == "handling"
    });
    let b = worker(
        "worker-b",
        ep,
        "echo",
        &[hb, &["--reply-prefix", "B:"]].concat(),
    );
    let id_b = next_ready(broker, "worker B");
    assert_ne!(id_a, id_b);
    Held {
        a,
        id_a,
        client,
        b,
        id_b,
    }
}

#[test]
fn worker_sigkilled_holding_a_request_is_requeued_without_a_client_retry() {
    let (mut b, ep) = broker(ANY, &KILL_HB);
    let Held {
        mut a,
        id_a,
        client: mut c,
        b: mut wb,
        id_b,
    } = held_by_a_with_b_ready(&mut b, &ep, &KILL_HB, "8s");

    a.kill_group();
    let killed_at = now();

    let reply = c
        .stdout
        .wait_for(deadline(SECS_10), |_| true)
        .unwrap_or_else(|| panic!("no reply\nbroker:\n{}", b.stderr.dump()));
    assert_eq!(reply.text, "B:job", "the survivor answers the held request");
    // Without the re-queue only a client retry, 8 s after sending, could save it.
    let took = reply.at.saturating_duration_since(killed_at);
    assert!(
        took < KILL_EXPIRY + ms(2000),
        "reply {took:?} after the kill; the broker should re-queue at expiry ({KILL_EXPIRY:?})"
    );
    let status = c.expect_done(SECS_10);
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    let summary = c.summary().expect("summary line");
    assert_eq!(
        (summary.sent, summary.answered, summary.retries),
        (1, 1, 0),
        "{summary:?}"
    );

    let gone = b.expect_stderr("worker A gone", SECS_10, |l| is_gone(l, &id_a));
    assert_eq!(
        field(&gone.text, "reason").as_deref(),
        Some("Expired"),
        "{}",
        gone.text
    );
    assert_eq!(
        field(&gone.text, "requeued").as_deref(),
        Some("1"),
        "{}",
        gone.text
    );
    let after = gone.at.saturating_duration_since(killed_at);
    assert!(
        after <= KILL_EXPIRY + ms(1500),
        "worker A expired {after:?} after the kill, want about {KILL_EXPIRY:?}"
    );
    b.stderr.read_available();
    assert!(
        !b.stderr.seen.iter().any(|l| is_gone(&l.text, &id_b)),
        "the live worker was removed:\n{}",
        b.stderr.dump()
    );
    assert!(b.is_running() && wb.is_running());
}

#[test]
fn workers_and_client_recover_when_the_broker_is_sigkilled_and_restarted() {
    const N: usize = 40;
    const KILL_AFTER: usize = 10;
    let (mut b, ep) = fast_broker();
    let delay = ["--delay", "20ms"];
    let mut w1 = worker(
        "w1",
        &ep,
        "echo",
        &[&["--reply-prefix", "W1:"][..], &delay].concat(),
    );
    next_ready(&mut b, "w1");
    let mut w2 = worker(
        "w2",
        &ep,
        "echo",
        &[&["--reply-prefix", "W2:"][..], &delay].concat(),
    );
    next_ready(&mut b, "w2");

    let mut c = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "echo",
            "--timeout",
            "1s",
            "--retries",
            "10",
            "--backoff-initial",
            "50ms",
            "--backoff-max",
            "200ms",
            "--summary",
        ],
    );
    c.write_stdin(&request_lines(N));
    c.close_stdin();
    let got = c.stdout.wait_count(deadline(SECS_10), KILL_AFTER, |_| true);
    assert_eq!(got, KILL_AFTER, "replies before the kill");
    b.kill();

    // The same port: workers and client find the new broker by themselves.
    let (mut b2, ep2) = broker(&ep, &FAST);
    assert_eq!(ep2, ep);
    let ready = b2
        .stderr
        .wait_count(deadline(SECS_10), 2, |l| l.contains("worker ready"));
    assert_eq!(
        ready,
        2,
        "both workers register with the new broker:\n{}",
        b2.stderr.dump()
    );

    let status = c.expect_done(Duration::from_secs(15));
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    let bodies: Vec<String> = c
        .stdout
        .texts()
        .iter()
        .map(|l| split_reply(l).1.to_string())
        .collect();
    assert_eq!(
        bodies,
        want_lines(N),
        "every reply exactly once and in order"
    );
    let summary = c.summary().expect("summary line");
    assert_eq!(summary.answered, N as u64, "{summary:?}");
    assert!(
        b2.is_running() && w1.is_running() && w2.is_running(),
        "broker and workers live on"
    );
}

/// The raw DEALER's READY for `service` with the capacity frame `cap`.
fn ready_with(service: &[u8], cap: &[u8]) -> Vec<Vec<u8>> {
    frames(&[b"", b"MDPW01", b"\x01", service, cap])
}

/// Messages that break 7/MDP framing; the broker must log and drop each one.
fn garbage() -> Vec<Vec<Vec<u8>>> {
    let big = junk(1 << 20, 7);
    let mut with_header = frames(&[b"", b"MDPW01", b"\x04"]);
    with_header.extend(many_frames(997));
    vec![
        // Empty and short.
        frames(&[b""]),
        frames(&[b"", b""]),
        frames(&[b"x"]),
        // Wrong headers.
        frames(&[b"", b"MDPX01", b"echo", b"x"]),
        frames(&[b"", b"MDPC02", b"echo", b"x"]),
        frames(&[b"", b"mdpc01", b"echo", b"x"]),
        frames(&[b"x", b"MDPC01", b"echo", b"x"]),
        // A client REQUEST with no service frame.
        frames(&[b"", b"MDPC01"]),
        // Worker commands: missing, unknown, as text, as two bytes.
        frames(&[b"", b"MDPW01"]),
        frames(&[b"", b"MDPW01", b"\x07"]),
        frames(&[b"", b"MDPW01", b"\x00"]),
        frames(&[b"", b"MDPW01", b"0x01", b"junk"]),
        frames(&[b"", b"MDPW01", b"\x01\x01", b"junk"]),
        frames(&[b"", b"MDPW01", b"\x02", b"client", b"", b"x"]),
        // READY without a service, with junk capacity frames, with too many frames.
        frames(&[b"", b"MDPW01", b"\x01"]),
        ready_with(b"junk", b"capacity=lots"),
        ready_with(b"junk", b"capacity=0"),
        ready_with(b"junk", b"capacity=-1"),
        ready_with(b"junk", b"capacity=99999999999"),
        ready_with(b"junk", b"4"),
        frames(&[b"", b"MDPW01", b"\x01", b"junk", b"capacity=2", b"extra"]),
        // HEARTBEAT and DISCONNECT with arguments; REPLYs without an envelope.
        frames(&[b"", b"MDPW01", b"\x04", b"extra"]),
        frames(&[b"", b"MDPW01", b"\x05", b"extra"]),
        frames(&[b"", b"MDPW01", b"\x03"]),
        frames(&[b"", b"MDPW01", b"\x03", b"client"]),
        frames(&[b"", b"MDPW01", b"\x03", b"client", b"x", b"body"]),
        // Big and many.
        vec![big.clone()],
        vec![Vec::new(), big],
        many_frames(1000),
        with_header,
    ]
}

#[test]
fn broker_survives_garbage_from_raw_sockets() {
    let (mut b, ep) = broker(ANY, &STEADY);
    let mut w = worker(
        "worker",
        &ep,
        "echo",
        &[&STEADY[..], &["--reply-prefix", "W:"]].concat(),
    );
    next_ready(&mut b, "worker");

    let ctx = zmq::Context::new();
    let rude = raw_socket(&ctx, zmq::DEALER);
    rude.connect(&ep).expect("connect");
    let garbage = garbage();
    for msg in &garbage {
        send(&rude, msg);
    }
    // Valid but unexpected: each earns a DISCONNECT (7/MDP says the broker MUST).
    let stranger = raw_socket(&ctx, zmq::DEALER);
    stranger.connect(&ep).expect("connect");
    let unexpected = [
        frames(&[b"", b"MDPW01", b"\x04"]),
        frames(&[b"", b"MDPW01", b"\x03", b"ghost", b"", b"boo"]),
        frames(&[b"", b"MDPW01", b"\x01", b"mmi.junk"]),
    ];
    for msg in &unexpected {
        send(&stranger, msg);
    }
    // Not worth a word: a DISCONNECT from a worker nobody knows.
    send(&stranger, &frames(&[b"", b"MDPW01", b"\x05"]));

    let malformed = b.stderr.wait_count(deadline(SECS_10), garbage.len(), |l| {
        l.contains("malformed message dropped")
    });
    assert_eq!(
        malformed,
        garbage.len(),
        "the broker logs every malformed message:\n{}",
        b.stderr.dump()
    );
    let disconnects = b
        .stderr
        .wait_count(deadline(SECS_10), unexpected.len(), |l| {
            l.contains("sent DISCONNECT")
        });
    assert_eq!(disconnects, unexpected.len(), "{}", b.stderr.dump());
    let until = deadline(SECS_10);
    for n in 0..unexpected.len() {
        let msg = recv_until(&stranger, until)
            .unwrap_or_else(|| panic!("DISCONNECT {} of {} not received", n + 1, unexpected.len()));
        assert_eq!(msg, frames(&[b"", b"MDPW01", b"\x05"]), "DISCONNECT");
    }
    assert!(b.is_running(), "broker died:\n{}", b.stderr.dump());

    // A registered worker that misbehaves: a REPLY to a request it never had (passed
    // on, completes nothing), then a second READY, which costs it its registration.
    let liar = raw_socket(&ctx, zmq::DEALER);
    liar.connect(&ep).expect("connect");
    send(&liar, &frames(&[b"", b"MDPW01", b"\x01", b"liar"]));
    let liar_id = next_ready(&mut b, "the raw worker");
    send(
        &liar,
        &frames(&[b"", b"MDPW01", b"\x03", b"nobody", b"", b"x"]),
    );
    send(&liar, &frames(&[b"", b"MDPW01", b"\x01", b"liar"]));
    let gone = b.expect_stderr("the raw worker gone", SECS_10, |l| is_gone(l, &liar_id));
    assert_eq!(
        field(&gone.text, "reason").as_deref(),
        Some("ProtocolError")
    );
    let until = deadline(SECS_10);
    let bye = loop {
        let msg = recv_until(&liar, until).expect("DISCONNECT for the second READY");
        if !is_heartbeat(&msg) {
            break msg;
        }
    };
    assert_eq!(bye, frames(&[b"", b"MDPW01", b"\x05"]), "DISCONNECT");

    // Still routes a normal request end to end, and none of the junk registered.
    let out = ask(&ep, "echo", "still alive?");
    assert!(
        out.status.success(),
        "{out:?}\nbroker:\n{}",
        b.stderr.dump()
    );
    assert_eq!(out.stdout, vec!["W:still alive?".to_string()]);
    for service in ["junk", "mmi.junk", "liar"] {
        let out = ask(&ep, "mmi.service", service);
        assert_eq!(out.stdout, vec!["404".to_string()], "{service}: {out:?}");
    }
    b.stderr.read_available();
    let ready = b
        .stderr
        .seen
        .iter()
        .filter(|l| l.text.contains("worker ready"));
    assert_eq!(
        ready.count(),
        2,
        "the worker and the liar: {}",
        b.stderr.dump()
    );
    assert!(b.is_running(), "broker died:\n{}", b.stderr.dump());
    assert!(w.is_running(), "worker died:\n{}", w.stderr.dump());
}

/// Runs a one-shot `bosun client --service SERVICE --request BODY`.
fn ask(endpoint: &str, service: &str, body: &str) -> Outcome {
    run(
        &[
            "client",
            "--connect",
            endpoint,
            "--service",
            service,
            "--request",
            body,
            "--timeout",
            "2s",
            "--retries",
            "2",
        ],
        &[],
        SECS_10,
    )
}

/// The one-line answer of an 8/MMI request.
fn mmi(endpoint: &str, service: &str, body: &str) -> String {
    let out = ask(endpoint, service, body);
    assert!(out.status.success(), "{service} {body}: {out:?}");
    assert_eq!(out.stdout.len(), 1, "{service} {body}: {out:?}");
    out.stdout[0].clone()
}

/// `bosun stats --connect ENDPOINT extra...`: the table's lines.
fn stats(endpoint: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["stats", "--connect", endpoint, "--timeout", "2s"];
    args.extend_from_slice(extra);
    let out = run(&args, &[], SECS_10);
    assert!(out.status.success(), "stats: {out:?}");
    out.stdout
}

#[test]
fn mmi_service_and_stats_through_the_command_line() {
    let (mut b, ep) = broker(ANY, &STEADY);
    assert_eq!(mmi(&ep, "mmi.service", "echo"), "404", "no worker yet");
    let mut w = worker("worker", &ep, "echo", &STEADY);
    next_ready(&mut b, "worker");
    assert_eq!(mmi(&ep, "mmi.service", "echo"), "200");
    assert_eq!(mmi(&ep, "mmi.service", "nosuch"), "404");
    assert_eq!(mmi(&ep, "mmi.nope", "x"), "501");
    assert_eq!(mmi(&ep, "mmi.", ""), "501");

    // Some traffic, so that the rates are not zero.
    let mut c = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "echo",
            "--timeout",
            "2s",
        ],
    );
    c.write_stdin(&request_lines(5));
    c.close_stdin();
    assert!(c.expect_done(SECS_10).success(), "{}", c.stderr.dump());
    assert_eq!(c.stdout.texts(), want_lines(5));

    let table = stats(&ep, &[]);
    let header: Vec<&str> = table
        .first()
        .unwrap_or_else(|| panic!("empty table"))
        .split_whitespace()
        .collect();
    assert_eq!(header.first(), Some(&"SERVICE"), "{table:#?}");
    let row = table
        .iter()
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some("echo"))
        .unwrap_or_else(|| panic!("no row for echo: {table:#?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.len(), header.len(), "one cell per column: {table:#?}");
    let num = |column: &str| -> f64 {
        let i = header
            .iter()
            .position(|h| *h == column)
            .unwrap_or_else(|| panic!("no column {column}: {table:#?}"));
        cells[i]
            .parse()
            .unwrap_or_else(|e| panic!("{column} = {:?}: {e}\n{table:#?}", cells[i]))
    };
    for column in &header[1..] {
        let v = num(column);
        assert!(v.is_finite() && v >= 0.0, "{column} = {v}: {table:#?}");
    }
    assert_eq!(num("IDLE") + num("BUSY"), 1.0, "one worker: {table:#?}");
    assert_eq!(num("L"), 0.0, "nothing waits: {table:#?}");
    assert!(num("λ/s") > 0.0, "requests arrived: {table:#?}");
    assert!(num("μ/s") > 0.0, "requests completed: {table:#?}");

    let only = stats(&ep, &["--service", "echo"]);
    assert_eq!(only.len(), 2, "header and the echo row: {only:#?}");
    assert!(only[1].starts_with("echo"), "{only:#?}");
    let none = stats(&ep, &["--service", "nosuch"]);
    assert_eq!(none.len(), 1, "header only: {none:#?}");
    assert!(b.is_running() && w.is_running());
}

/// Runs `n` requests through a client with `--in-flight in_flight`; returns how long the
/// client took and its stdout.
fn timed_batch(endpoint: &str, service: &str, n: usize, in_flight: usize) -> (Duration, Proc) {
    let in_flight = in_flight.to_string();
    let start = now();
    let mut c = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            endpoint,
            "--service",
            service,
            "--in-flight",
            &in_flight,
            "--timeout",
            "8s",
            "--retries",
            "2",
            "--summary",
        ],
    );
    c.write_stdin(&request_lines(n));
    c.close_stdin();
    let status = c.expect_exit(Duration::from_secs(15));
    let took = now() - start;
    c.expect_done(SECS_10);
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    (took, c)
}

#[test]
fn a_worker_handles_as_many_requests_at_once_as_its_capacity() {
    const N: usize = 8;
    const DELAY: Duration = ms(300);
    let (mut b, ep) = broker(ANY, &STEADY);
    let mut w4 = worker(
        "worker-cap4",
        &ep,
        "four",
        &[&STEADY[..], &["--capacity", "4", "--delay", "300ms"]].concat(),
    );
    let ready = b.expect_stderr("the capacity-4 worker", SECS_10, |l| {
        l.contains("worker ready")
    });
    assert_eq!(field(&ready.text, "capacity").as_deref(), Some("4"));
    let mut w1 = worker(
        "worker-cap1",
        &ep,
        "one",
        &[&STEADY[..], &["--delay", "300ms"]].concat(),
    );
    let ready = b.expect_stderr("the capacity-1 worker", SECS_10, |l| {
        l.contains("worker ready")
    });
    assert_eq!(field(&ready.text, "capacity").as_deref(), Some("1"));

    // Two rounds of four: about 600 ms; one at a time would take 2.4 s.
    let (took, c) = timed_batch(&ep, "four", N, N);
    assert_eq!(
        c.stdout.texts(),
        want_lines(N),
        "every reply once, in order"
    );
    let summary = c.summary().expect("summary line");
    assert_eq!(
        (summary.sent, summary.answered, summary.retries),
        (N as u64, N as u64, 0),
        "{summary:?}"
    );
    assert!(
        took >= DELAY * 2 && took < ms(1500),
        "8 requests at capacity 4 took {took:?}, want about {:?}",
        DELAY * 2
    );

    // The same load on a capacity-1 worker: one at a time, however many are in flight.
    let (took, c) = timed_batch(&ep, "one", N, N);
    assert_eq!(
        c.stdout.texts(),
        want_lines(N),
        "every reply once, in order"
    );
    assert!(
        took >= DELAY * N as u32,
        "8 requests at capacity 1 took {took:?}, want at least {:?}",
        DELAY * N as u32
    );
    assert!(b.is_running() && w4.is_running() && w1.is_running());
}

/// Whether `msg` is the broker's HEARTBEAT to a worker.
fn is_heartbeat(msg: &[Vec<u8>]) -> bool {
    msg == frames(&[b"", b"MDPW01", b"\x04"])
}

/// The next REQUEST the raw worker gets before `until`, skipping heartbeats.
fn next_request(worker: &zmq::Socket, until: Instant) -> Option<Vec<Vec<u8>>> {
    loop {
        let msg = recv_until(worker, until)?;
        if !is_heartbeat(&msg) {
            assert_eq!(
                msg.get(..3),
                Some(&frames(&[b"", b"MDPW01", b"\x02"])[..]),
                "{msg:?}"
            );
            return Some(msg);
        }
    }
}

#[test]
fn broker_never_hands_a_worker_more_requests_than_its_capacity() {
    const N: usize = 6;
    // The raw worker below only speaks when it replies: a slow heartbeat (10 s to expiry).
    let (mut b, ep) = broker(
        ANY,
        &["--heartbeat-interval", "1s", "--heartbeat-liveness", "10"],
    );
    let ctx = zmq::Context::new();
    let plain = frames(&[b"", b"MDPW01", b"\x01", b"one"]);
    for (service, ready, capacity) in [
        ("three", ready_with(b"three", b"capacity=3"), 3),
        ("one", plain, 1),
    ] {
        let w = raw_socket(&ctx, zmq::DEALER);
        w.connect(&ep).expect("connect");
        send(&w, &ready);
        let line = b.expect_stderr(&format!("raw worker {service} ready"), SECS_10, |l| {
            l.contains("worker ready")
        });
        assert_eq!(field(&line.text, "capacity"), Some(capacity.to_string()));

        let mut c = spawn_piped(
            "client",
            &[
                "client",
                "--connect",
                &ep,
                "--service",
                service,
                "--in-flight",
                "8",
                "--timeout",
                "10s",
                "--retries",
                "1",
            ],
        );
        c.write_stdin(&request_lines(N));
        c.close_stdin();

        let mut held: VecDeque<Vec<Vec<u8>>> = VecDeque::new();
        for answered in 0..N {
            let want = capacity.min(N - answered);
            let until = deadline(SECS_10);
            while held.len() < want {
                let msg = next_request(&w, until).unwrap_or_else(|| {
                    panic!(
                        "{service}: {} of {want} requests after {answered} replies\n{}",
                        held.len(),
                        b.stderr.dump()
                    )
                });
                held.push_back(msg);
            }
            // Nothing more until a reply frees a slot.
            if let Some(extra) = next_request(&w, deadline(ms(150))) {
                panic!("{service} (capacity {capacity}) got request {} with {answered} replies: {extra:?}", held.len() + 1);
            }
            let mut reply = held.pop_front().expect("a held request");
            reply[2] = vec![0x03];
            send(&w, &reply);
        }
        assert!(c.expect_done(SECS_10).success(), "{}", c.stderr.dump());
        assert_eq!(c.stdout.texts(), want_lines(N), "{service}");
    }
    assert!(b.is_running(), "{}", b.stderr.dump());
}

/// Sends SIGINT to `p`; checks it exits 0 within 2 s. Returns when the signal was sent.
fn ctrl_c(p: &mut Proc) -> Instant {
    let sent = now();
    p.signal(libc::SIGINT);
    let status = p.expect_exit(Duration::from_secs(2));
    p.stderr.read_available();
    assert_eq!(
        status.code(),
        Some(0),
        "{} after SIGINT: {status}\n{}",
        p.name,
        p.stderr.dump()
    );
    sent
}

/// How soon after Ctrl-C the broker must know: far below the 15 s expiry of `SLOW`.
const PROMPTLY: Duration = Duration::from_secs(2);

#[test]
fn ctrl_c_on_an_idle_worker_says_goodbye_to_the_broker() {
    let (mut b, ep) = broker(ANY, &SLOW);
    let mut w = worker("worker", &ep, "echo", &SLOW);
    let id = next_ready(&mut b, "worker");
    let sent = ctrl_c(&mut w);
    let gone = b.expect_stderr("the worker gone", SECS_10, |l| is_gone(l, &id));
    assert_eq!(field(&gone.text, "reason").as_deref(), Some("Disconnected"));
    assert_eq!(field(&gone.text, "requeued").as_deref(), Some("0"));
    let after = gone.at.saturating_duration_since(sent);
    assert!(
        after < PROMPTLY,
        "broker heard of it {after:?} after Ctrl-C"
    );
}

#[test]
fn ctrl_c_on_a_busy_worker_hands_its_request_back_at_once() {
    let (mut b, ep) = broker(ANY, &SLOW);
    let Held {
        mut a,
        id_a,
        client: mut c,
        b: mut wb,
        ..
    } = held_by_a_with_b_ready(&mut b, &ep, &SLOW, "20s");
    // A exits on Ctrl-C but its handler's `sleep` would not: killed at the end.
    let _handler = a.group_guard();

    let sent = ctrl_c(&mut a);
    let gone = b
        .stderr
        .wait_for(deadline(SECS_10), |l| is_gone(l, &id_a))
        .unwrap_or_else(|| {
            panic!(
                "the broker never heard that worker A left\nbroker:\n{}\nworker A:\n{}",
                b.stderr.dump(),
                a.stderr.dump()
            )
        });
    assert_eq!(field(&gone.text, "reason").as_deref(), Some("Disconnected"));
    assert_eq!(field(&gone.text, "requeued").as_deref(), Some("1"));
    let after = gone.at.saturating_duration_since(sent);
    assert!(
        after < PROMPTLY,
        "broker heard of it {after:?} after Ctrl-C"
    );

    let reply = c
        .stdout
        .wait_for(deadline(SECS_10), |_| true)
        .unwrap_or_else(|| panic!("no reply\nbroker:\n{}", b.stderr.dump()));
    assert_eq!(reply.text, "B:job");
    assert!(
        reply.at.saturating_duration_since(sent) < PROMPTLY,
        "the request moved {:?} after Ctrl-C",
        reply.at.saturating_duration_since(sent)
    );
    assert!(c.expect_done(SECS_10).success(), "{}", c.stderr.dump());
    assert_eq!(c.summary().map(|s| s.retries), Some(0));
    assert!(b.is_running() && wb.is_running());
}

#[test]
fn a_client_with_many_in_flight_counts_its_retries_and_gives_up_in_one_line() {
    // No worker for the service: every attempt times out.
    let (_b, ep) = fast_broker();
    let out = run(
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "nobody",
            "--in-flight",
            "4",
            "--request",
            "hello?",
            "--timeout",
            "200ms",
            "--retries",
            "3",
            "--backoff-initial",
            "10ms",
            "--backoff-max",
            "10ms",
            "--summary",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let errors = out.errors();
    assert_eq!(errors.len(), 1, "{out:?}");
    assert!(errors[0].contains("3 attempts"), "{out:?}");
    let summary = out.summary().expect("summary line");
    assert_eq!(
        (summary.sent, summary.answered, summary.retries),
        (1, 0, 2),
        "{summary:?}"
    );
}

/// A handler that runs for this long is many expiries long with the heartbeat below.
const LONG_HANDLER: &str = "1500ms";

/// Heartbeats keep flowing while a slow handler runs, on both execution paths
/// (capacity 1: the socket thread runs the handler and a guard heartbeats; capacity 2:
/// a pool thread runs it): the broker never expires the worker, the request is
/// answered once, by the first attempt. With `FAST` (expiry after 300 ms of silence) a
/// worker that sent nothing while its handler ran would be expired five times over.
fn slow_handler_keeps_its_worker_registered(capacity: &str) {
    let (mut b, ep) = fast_broker();
    let mut w = worker(
        "worker",
        &ep,
        "slow",
        &["--capacity", capacity, "--delay", LONG_HANDLER],
    );
    next_ready(&mut b, "worker");
    let mut c = one_request(&ep, "slow", "job", "10s");
    let reply = c
        .stdout
        .wait_for(deadline(SECS_10), |_| true)
        .unwrap_or_else(|| panic!("no reply\nbroker:\n{}", b.stderr.dump()));
    assert_eq!(reply.text, "job");
    assert!(c.expect_done(SECS_10).success(), "{}", c.stderr.dump());
    assert_eq!(c.summary().map(|s| s.retries), Some(0));
    b.stderr.read_available();
    let log = b.stderr.dump();
    assert!(
        !log.contains("worker gone") && !log.contains("sent DISCONNECT"),
        "capacity {capacity}: the broker lost the worker while its handler ran\n{log}"
    );
    assert!(w.is_running() && b.is_running());
}

#[test]
fn slow_handler_on_the_socket_thread_keeps_its_worker_registered() {
    slow_handler_keeps_its_worker_registered("1");
}

#[test]
fn slow_handler_in_the_pool_keeps_its_worker_registered() {
    slow_handler_keeps_its_worker_registered("2");
}

/// A handler command that fails (`--exec 'exit 3'`) fails its request: the client is
/// answered at once with the worker's reason and exits 1 (no timeout, no retry), and
/// the worker, registered once, goes on serving: a second request is answered the same
/// way by the same worker.
#[test]
fn a_failing_exec_handler_fails_the_request_and_the_worker_keeps_serving() {
    let (mut b, ep) = broker(ANY, &STEADY);
    let mut w = worker(
        "worker",
        &ep,
        "S",
        &[&STEADY[..], &["--exec", "exit 3"]].concat(),
    );
    let id = next_ready(&mut b, "worker");
    for n in 1..=2 {
        let (out, error, summary) =
            expect_handler_failure(&["--connect", &ep, "--service", "S"], n, &mut w);
        // The worker's own answer (it ran the handler up to its --max-attempts, 3 by
        // default), not the client's give-up ("no reply from ... after N attempts").
        assert!(
            !error.contains("no reply") && error.contains("gave up after 3 failed attempts"),
            "request {n}: answered with the failure, not given up on: {out:?}"
        );
        assert_eq!(summary.answered, 0, "request {n}: failed: {summary:?}");
    }
    b.stderr.read_available();
    let log = b.stderr.dump();
    assert!(
        !log.contains("worker gone") && !log.contains("sent DISCONNECT"),
        "the broker lost the worker\n{log}"
    );
    let ready: Vec<String> = b
        .stderr
        .seen
        .iter()
        .filter(|l| l.text.contains("worker ready"))
        .filter_map(|l| field(&l.text, "worker"))
        .collect();
    assert_eq!(ready, vec![id], "one worker, registered once, served both");
    assert!(b.is_running());
}
