//! Wire compatibility of bosun's Majordomo (7/MDP) and 8/MMI with peers that share no
//! code with it: the minimal pyzmq client, echo worker and broker in `tests/interop/`,
//! written from the RFC texts. Each test runs the built `bosun` binary against them over
//! loopback and checks that every request is answered exactly once with the right body.
//!
//! These tests need `python3` (found on PATH) with pyzmq, which `.ci/run` installs.
//! Where it is missing, a plain `cargo test` (a newcomer's machine with only Rust and a
//! C++ compiler) prints that each test was skipped and why, and passes; under CI
//! (`CI=true`) or with `BOSUN_REQUIRE_INTEROP=1` a missing pyzmq FAILS the tests with a
//! message saying to run `python3 -m pip install pyzmq`. `BOSUN_SKIP_INTEROP=1` skips
//! them always.
//!
//! Every wait is a condition with a deadline, and every child process is killed and
//! reaped when its guard (`common::Proc`) drops, also when an assertion fails half way.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    bosun, deadline, field, free_port, interop_available, now, python, spawn_piped, start_broker,
    Proc,
};

const SECS_5: Duration = Duration::from_secs(5);
const SECS_10: Duration = Duration::from_secs(10);
const SECS_15: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------
// Child processes: the shared [`Proc`] guard, and what these tests check of them.

/// Waits up to `limit` for `peer` to exit on its own and reads all its output; returns
/// its stdout lines. Panics with that output if it does not exit in time or exits
/// unsuccessfully.
fn finish(peer: &mut Proc, limit: Duration) -> Vec<String> {
    let Some(status) = peer.wait_exit(limit) else {
        panic!("still running after {limit:?}\n{}", peer.dump())
    };
    peer.drain(SECS_5);
    if !status.success() {
        panic!("exited with {status}\n{}", peer.dump());
    }
    peer.stdout.texts()
}

/// The numeric `key=N` of `line`, or a panic naming the line.
fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in {line:?}"))
}

/// The one line of `lines` that starts with `prefix`.
fn line_with<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "one {prefix:?} line in {lines:#?}");
    found[0]
}

// ---------------------------------------------------------------------------------
// Starting the pieces.

/// A bosun broker on a free loopback port (or at `bind`): the guard and its endpoint.
fn bosun_broker(bind: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["broker", "--bind", bind];
    args.extend_from_slice(extra);
    start_broker("bosun broker", &mut bosun(&args))
}

/// The pyzmq broker on a free loopback port (or at `bind`): the guard and its endpoint.
fn py_broker(bind: &str, args: &[&str]) -> (Proc, String) {
    let mut all = vec![bind];
    all.extend_from_slice(args);
    start_broker("pyzmq broker", &mut python("mdp_broker.py", &all))
}

/// The pyzmq echo worker.
fn py_worker(name: &str, endpoint: &str, service: &str, count: usize, extra: &[&str]) -> Proc {
    let count = count.to_string();
    let mut args = vec![endpoint, service, count.as_str()];
    args.extend_from_slice(extra);
    Proc::spawn(name, &mut python("mdp_worker.py", &args))
}

/// A bosun Majordomo worker.
fn bosun_worker(name: &str, endpoint: &str, service: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "--connect", endpoint, "--service", service];
    args.extend_from_slice(extra);
    Proc::spawn(name, &mut bosun(&args))
}

/// Runs the pyzmq client to completion; returns its reply lines by request number
/// (each with its body) after checking its `client done` line: `count` answered, no
/// duplicate, no unexpected body, no malformed reply, exit status 0; and that every
/// reply is one plain body frame: a foreign client, which sent no bosun metadata, never
/// gets a metadata frame back (from a bosun worker or from the bosun broker's 8/MMI).
fn py_client(
    endpoint: &str,
    service: &str,
    count: usize,
    extra: &[&str],
) -> BTreeMap<u64, Vec<String>> {
    let n = count.to_string();
    let mut args = vec![endpoint, service, n.as_str()];
    args.extend_from_slice(extra);
    let name = format!("pyzmq client {service} {extra:?}");
    let mut client = Proc::spawn(&name, &mut python("mdp_client.py", &args));
    let lines = finish(&mut client, SECS_15);
    let done = line_with(&lines, "client done");
    for (key, want) in [
        ("answered", count as u64),
        ("duplicates", 0),
        ("unexpected", 0),
        ("malformed", 0),
        ("missing", 0),
    ] {
        assert_eq!(num(done, key), want, "{key} in {done:?}\n{}", client.dump());
    }
    let mut replies: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.starts_with("reply ")) {
        assert_eq!(field(line, "service").as_deref(), Some(service), "{line}");
        assert_eq!(num(line, "frames"), 1, "one plain body frame: {line}");
        let body = line.split_once(" body=").map_or("", |(_, b)| b).to_string();
        replies.entry(num(line, "n")).or_default().push(body);
    }
    replies
}

/// Asserts that `replies` holds exactly one reply for each request 1..=count, and that
/// the reply to request i is `want(i)`.
fn assert_each_once(
    replies: &BTreeMap<u64, Vec<String>>,
    count: usize,
    want: impl Fn(u64) -> String,
) {
    let numbers: Vec<u64> = replies.keys().copied().collect();
    assert_eq!(
        numbers,
        (1..=count as u64).collect::<Vec<_>>(),
        "{replies:#?}"
    );
    for (i, bodies) in replies {
        assert_eq!(bodies, &vec![want(*i)], "reply to request {i}");
    }
}

/// Runs a bosun client with `lines` on stdin to completion; asserts it printed exactly
/// `lines` back in order (the echo) and a summary with every request answered and no
/// retry. A failure message includes the output of `others` (the broker, workers).
fn bosun_client_echo(
    endpoint: &str,
    service: &str,
    lines: &[String],
    extra: &[&str],
    others: &mut [&mut Proc],
) {
    let mut args = vec![
        "client",
        "--connect",
        endpoint,
        "--service",
        service,
        "--summary",
    ];
    args.extend_from_slice(extra);
    let mut client = spawn_piped(&format!("bosun client {extra:?}"), &args);
    client.write_stdin(&lines.iter().map(|l| format!("{l}\n")).collect::<String>());
    client.close_stdin();
    let status = client.wait_exit(SECS_15);
    client.drain(SECS_5);
    let summary = client
        .stderr
        .texts()
        .into_iter()
        .find(|l| l.starts_with("client: "))
        .unwrap_or_default();
    let want = format!("client: sent {0}, answered {0}, retries 0,", lines.len());
    let ok = status.is_some_and(|s| s.success())
        && client.stdout.texts() == lines
        && summary.starts_with(&want);
    if !ok {
        let context: Vec<String> = others.iter_mut().map(|p| p.dump()).collect();
        panic!(
            "bosun client: status {status:?}, want {} replies in order and a summary \
             starting {want:?}\n{}\n{}",
            lines.len(),
            client.dump(),
            context.join("\n")
        );
    }
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Checks a pyzmq worker's `worker done` line: stayed registered (one READY, no
/// DISCONNECT, never thought the broker silent), nothing malformed, no request with a
/// broken bosun metadata frame; every request carried bosun's metadata (read by the
/// worker from the published layout) when `from_bosun`, none when not (the broker adds
/// none to a foreign client's request). Returns `handled`.
fn assert_worker_clean(
    worker: &mut Proc,
    lines: &[String],
    min_heartbeats: u64,
    from_bosun: bool,
) -> u64 {
    let done = line_with(lines, "worker done").to_string();
    let handled = num(&done, "handled");
    let with_meta = if from_bosun { handled } else { 0 };
    for (key, want) in [
        ("readies", 1),
        ("disconnects_in", 0),
        ("silences", 0),
        ("malformed", 0),
        ("bad_meta", 0),
        ("bosun_meta", with_meta),
    ] {
        assert_eq!(
            num(&done, key),
            want,
            "{key} in {done:?}\n{}",
            worker.dump()
        );
    }
    assert!(
        num(&done, "heartbeats_in") >= min_heartbeats,
        "heartbeats from the bosun broker: {done:?}"
    );
    handled
}

// ---------------------------------------------------------------------------------
// The tests.

/// (1) A pyzmq client (REQ, then DEALER with every request in flight) gets answers from
/// bosun workers through the bosun broker. The plain request is answered with one plain
/// frame; the prefix proves a bosun worker, not the broker, produced it.
#[test]
fn pyzmq_client_and_bosun_workers_via_bosun_broker() {
    if !interop_available("pyzmq_client_and_bosun_workers_via_bosun_broker") {
        return;
    }
    let (_broker, ep) = bosun_broker("tcp://127.0.0.1:*", &[]);
    let _w1 = bosun_worker("bosun worker 1", &ep, "echo", &["--reply-prefix", "bosun:"]);
    let _w2 = bosun_worker("bosun worker 2", &ep, "echo", &["--reply-prefix", "bosun:"]);

    let replies = py_client(&ep, "echo", 20, &["--socket", "req"]);
    assert_each_once(&replies, 20, |i| format!("bosun:req-{i}"));

    let replies = py_client(&ep, "echo", 100, &["--socket", "dealer"]);
    assert_each_once(&replies, 100, |i| format!("bosun:req-{i}"));
}

/// (2) bosun clients (one at a time over REQ, then eight in flight over DEALER) get
/// answers from a pyzmq echo worker through the bosun broker, with a 250 ms heartbeat
/// on both sides: the worker stays registered throughout and hears the broker's
/// heartbeats. Every request reaches it as the body frame plus one metadata frame that
/// it reads by bosun's published layout, and echoing both is a valid bosun reply.
#[test]
fn bosun_clients_and_pyzmq_worker_via_bosun_broker() {
    if !interop_available("bosun_clients_and_pyzmq_worker_via_bosun_broker") {
        return;
    }
    let (mut broker, ep) = bosun_broker("tcp://127.0.0.1:*", &["--heartbeat-interval", "250ms"]);
    let one = numbered("one", 10);
    let many = numbered("many", 40);
    let total = one.len() + many.len();
    let mut worker = py_worker(
        "pyzmq worker",
        &ep,
        "echo",
        total,
        &["--heartbeat", "250", "--min-seconds", "1.5"],
    );
    bosun_client_echo(&ep, "echo", &one, &[], &mut [&mut broker, &mut worker]);
    let others = &mut [&mut broker, &mut worker];
    bosun_client_echo(&ep, "echo", &many, &["--in-flight", "8"], others);
    let lines = finish(&mut worker, SECS_10);
    let handled = assert_worker_clean(&mut worker, &lines, 3, true);
    assert_eq!(handled, total as u64, "{}", worker.dump());
}

/// (3) A pyzmq client gets answers from two pyzmq workers through the bosun broker
/// (250 ms heartbeat on every side): each request answered once, both workers used,
/// neither ever disconnected.
#[test]
fn pyzmq_client_and_pyzmq_workers_via_bosun_broker() {
    if !interop_available("pyzmq_client_and_pyzmq_workers_via_bosun_broker") {
        return;
    }
    let (mut broker, ep) = bosun_broker(
        "tcp://127.0.0.1:*",
        &["-v", "--heartbeat-interval", "250ms"],
    );
    let opts = ["--heartbeat", "250", "--max-seconds", "6"];
    let mut w1 = py_worker("pyzmq worker 1", &ep, "echo", 0, &opts);
    let mut w2 = py_worker("pyzmq worker 2", &ep, "echo", 0, &opts);
    // Both registered before the first request, so that both get work.
    let ready = broker
        .stderr
        .wait_count(deadline(SECS_10), 2, |l| l.contains("worker ready"));
    assert!(
        ready >= 2,
        "{ready} of 2 stderr lines with \"worker ready\" within {SECS_10:?}\n{}",
        broker.dump()
    );

    let replies = py_client(&ep, "echo", 100, &["--socket", "dealer"]);
    assert_each_once(&replies, 100, |i| format!("req-{i}"));
    let replies = py_client(&ep, "echo", 10, &["--socket", "req"]);
    assert_each_once(&replies, 10, |i| format!("req-{i}"));

    let lines1 = finish(&mut w1, SECS_10);
    let lines2 = finish(&mut w2, SECS_10);
    let h1 = assert_worker_clean(&mut w1, &lines1, 3, false);
    let h2 = assert_worker_clean(&mut w2, &lines2, 3, false);
    assert_eq!(h1 + h2, 110, "handled {h1} + {h2}");
    assert!(h1 > 0 && h2 > 0, "both workers get work: {h1}, {h2}");
}

/// (4) 8/MMI from a pyzmq client: `mmi.service` answers 200 for a service a pyzmq
/// worker registered and for one a bosun worker registered, 404 for an unknown one;
/// `mmi.nope` answers 501; each reply is `[""][MDPC01][service][code]`. Then the pyzmq
/// worker says DISCONNECT and the broker forgets it at once (well before the 7.5 s
/// heartbeat expiry), so `mmi.service` answers 404 for it.
#[test]
fn mmi_from_a_pyzmq_client() {
    if !interop_available("mmi_from_a_pyzmq_client") {
        return;
    }
    let (_broker, ep) = bosun_broker("tcp://127.0.0.1:*", &[]);
    let mut py = py_worker("pyzmq worker", &ep, "pyecho", 0, &["--max-seconds", "15"]);
    let _bw = bosun_worker("bosun worker", &ep, "bsecho", &[]);

    let until_200 = ["--until", "200", "--timeout", "10"];
    for service in ["pyecho", "bsecho"] {
        let mut args = vec!["--body", service];
        args.extend_from_slice(&until_200);
        let replies = py_client(&ep, "mmi.service", 1, &args);
        assert_eq!(replies.get(&1), Some(&vec!["200".to_string()]), "{service}");
    }
    for socket in ["req", "dealer"] {
        let replies = py_client(
            &ep,
            "mmi.service",
            1,
            &["--body", "nosuch", "--socket", socket],
        );
        assert_eq!(replies.get(&1), Some(&vec!["404".to_string()]), "{socket}");
    }
    let replies = py_client(&ep, "mmi.nope", 1, &["--body", "pyecho"]);
    assert_eq!(replies.get(&1), Some(&vec!["501".to_string()]));

    // DISCONNECT from the pyzmq worker, then 404 within 3 s (expiry would take 7.5 s).
    let started = now();
    py.signal(libc::SIGTERM);
    let lines = finish(&mut py, SECS_5);
    assert!(
        lines.iter().any(|l| l == "worker stopped by SIGTERM"),
        "{}",
        py.dump()
    );
    let replies = py_client(
        &ep,
        "mmi.service",
        1,
        &["--body", "pyecho", "--until", "404", "--timeout", "3"],
    );
    assert_eq!(replies.get(&1), Some(&vec!["404".to_string()]));
    assert!(
        now() - started < Duration::from_millis(7500),
        "forgotten on DISCONNECT, not by expiry"
    );
}

/// (5) bosun clients (REQ, then eight in flight) get answers from two bosun workers
/// through the minimal pyzmq broker, with a 250 ms heartbeat on every side for 2 s:
/// READY is the plain 4-frame 7/MDP one, the workers keep their registration on the
/// pyzmq broker's heartbeats and never draw a DISCONNECT.
#[test]
fn bosun_clients_and_bosun_workers_via_pyzmq_broker() {
    if !interop_available("bosun_clients_and_bosun_workers_via_pyzmq_broker") {
        return;
    }
    let one = numbered("one", 10);
    let many = numbered("many", 40);
    let total = (one.len() + many.len()).to_string();
    let (mut broker, ep) = py_broker(
        "tcp://127.0.0.1:*",
        &[&total, "--heartbeat", "250", "--min-seconds", "2"],
    );
    let hb = ["--heartbeat-interval", "250ms"];
    let mut w1 = bosun_worker("bosun worker 1", &ep, "echo", &hb);
    let mut w2 = bosun_worker("bosun worker 2", &ep, "echo", &hb);
    let others = &mut [&mut broker, &mut w1, &mut w2];
    bosun_client_echo(&ep, "echo", &one, &[], others);
    bosun_client_echo(&ep, "echo", &many, &["--in-flight", "8"], others);

    let lines = finish(&mut broker, SECS_10);
    let ready: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("broker worker-ready"))
        .collect();
    assert_eq!(ready.len(), 2, "{}", broker.dump());
    for line in ready {
        assert_eq!(field(line, "service").as_deref(), Some("echo"), "{line}");
        assert_eq!(field(line, "extra_frames").as_deref(), Some("0"), "{line}");
    }
    let done = line_with(&lines, "broker done").to_string();
    for (key, want) in [
        ("requests", total.parse().unwrap()),
        ("replies", total.parse().unwrap()),
        ("workers_ready", 2),
        ("expired", 0),
        ("disconnects_sent", 0),
        ("malformed", 0),
    ] {
        assert_eq!(
            num(&done, key),
            want,
            "{key} in {done:?}\n{}",
            broker.dump()
        );
    }
    assert!(num(&done, "heartbeats_in") >= 6, "{done:?}");
}

/// A pyzmq worker whose heartbeats stop (SIGKILL: no DISCONNECT) is expired by the
/// bosun broker after liveness × interval (3 × 250 ms), so `mmi.service` turns 404.
#[test]
fn bosun_broker_expires_a_silent_pyzmq_worker() {
    if !interop_available("bosun_broker_expires_a_silent_pyzmq_worker") {
        return;
    }
    let (_broker, ep) = bosun_broker("tcp://127.0.0.1:*", &["--heartbeat-interval", "250ms"]);
    let mut py = py_worker("pyzmq worker", &ep, "pyecho", 0, &["--heartbeat", "250"]);
    let replies = py_client(
        &ep,
        "mmi.service",
        1,
        &["--body", "pyecho", "--until", "200", "--timeout", "10"],
    );
    assert_eq!(replies.get(&1), Some(&vec!["200".to_string()]));
    let replies = py_client(&ep, "pyecho", 3, &[]);
    assert_each_once(&replies, 3, |i| format!("req-{i}"));

    py.kill();
    let replies = py_client(
        &ep,
        "mmi.service",
        1,
        &["--body", "pyecho", "--until", "404", "--timeout", "5"],
    );
    assert_eq!(replies.get(&1), Some(&vec!["404".to_string()]));
}

/// A bosun broker restarted at the same address does not know the pyzmq worker: the
/// worker's next HEARTBEAT draws a DISCONNECT, and the worker registers again on a new
/// socket (its liveness is long, so this is the DISCONNECT path, not silence).
#[test]
fn pyzmq_worker_registers_again_after_bosun_broker_restart() {
    if !interop_available("pyzmq_worker_registers_again_after_bosun_broker_restart") {
        return;
    }
    let bind = format!("tcp://127.0.0.1:{}", free_port());
    let hb = ["--heartbeat-interval", "250ms"];
    let (mut first, ep) = bosun_broker(&bind, &hb);
    let mut py = py_worker(
        "pyzmq worker",
        &ep,
        "echo",
        0,
        &["--heartbeat", "250", "--liveness", "20"],
    );
    py.expect_stdout("worker ready n=1", SECS_10);
    let replies = py_client(&ep, "echo", 2, &[]);
    assert_each_once(&replies, 2, |i| format!("req-{i}"));

    first.kill();
    let (_second, ep2) = bosun_broker(&bind, &hb);
    assert_eq!(ep2, ep);
    py.expect_stdout("worker disconnect-received", SECS_5);
    py.expect_stdout("worker ready n=2", SECS_5);
    let replies = py_client(&ep, "echo", 2, &["--socket", "dealer"]);
    assert_each_once(&replies, 2, |i| format!("req-{i}"));

    py.signal(libc::SIGTERM);
    let lines = finish(&mut py, SECS_5);
    let done = line_with(&lines, "worker done");
    assert_eq!(num(done, "disconnects_in"), 1, "{done}");
    assert_eq!(num(done, "silences"), 0, "{done}");
    assert_eq!(num(done, "handled"), 4, "{done}");
    assert_eq!(num(done, "bosun_meta"), 0, "{done}");
    assert_eq!(num(done, "bad_meta"), 0, "{done}");
}

/// The pyzmq broker restarted at the same address does not know the bosun worker: the
/// worker's next HEARTBEAT draws a DISCONNECT, and the worker registers again (its
/// liveness is long, so this is the DISCONNECT path, not silence). The HEARTBEATs the
/// worker queued while the broker was away draw one DISCONNECT each, as from the
/// reference broker; the worker must register once, not once per DISCONNECT.
#[test]
fn bosun_worker_registers_again_after_pyzmq_broker_restart() {
    if !interop_available("bosun_worker_registers_again_after_pyzmq_broker_restart") {
        return;
    }
    let bind = format!("tcp://127.0.0.1:{}", free_port());
    let (mut first, ep) = py_broker(&bind, &["1", "--heartbeat", "250"]);
    let mut worker = bosun_worker(
        "bosun worker",
        &ep,
        "echo",
        &[
            "-v",
            "--heartbeat-interval",
            "250ms",
            "--heartbeat-liveness",
            "20",
        ],
    );
    let others = &mut [&mut first, &mut worker];
    bosun_client_echo(&ep, "echo", &numbered("first", 1), &[], others);
    // The first broker stops on its own after one reply.
    let lines = finish(&mut first, SECS_10);
    assert_eq!(num(line_with(&lines, "broker done"), "workers_ready"), 1);

    // Back 800 ms later: the worker's socket has queued several HEARTBEATs by then, and
    // the broker answers each with a DISCONNECT. Only the first may count.
    let (mut second, ep2) = py_broker(&bind, &["1", "--heartbeat", "250", "--bind-after", "800"]);
    assert_eq!(ep2, ep);
    let line = second.expect_stdout("broker sent-disconnect", SECS_5);
    assert_eq!(
        field(&line, "reason").as_deref(),
        Some("HEARTBEAT-from-an-unknown-worker"),
        "{line}"
    );
    second.expect_stdout("broker worker-ready", SECS_5);
    let others = &mut [&mut second, &mut worker];
    bosun_client_echo(&ep, "echo", &numbered("second", 1), &[], others);
    let lines = finish(&mut second, SECS_10);
    let done = line_with(&lines, "broker done");
    assert_eq!(num(done, "replies"), 1, "{done}");
    assert_eq!(num(done, "workers_ready"), 1, "{done}");
    assert!(
        num(done, "disconnects_sent") >= 2,
        "stale heartbeats: {done}"
    );
    assert_eq!(num(done, "expired"), 0, "{done}");
    assert_eq!(num(done, "malformed"), 0, "{done}");
}
