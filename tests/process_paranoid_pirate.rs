//! Paranoid Pirate (6/PPP) with real processes: `bosun queue`, `bosun worker`s and a
//! `bosun client`; workers SIGKILLed mid-traffic and while idle; garbage frames from raw
//! zmq sockets at the queue's two ROUTERs and at a worker.

mod common;

use std::time::{Duration, Instant};

use common::{
    bosun, deadline, field, ms, parse_summary, raw_socket, recv_until, request_lines, run, send,
    start_queue, Proc,
};

/// Heartbeat of every queue and worker here: a dead peer is found in 300 ms.
const INTERVAL: &str = "100ms";
const LIVENESS: &str = "3";
const EXPIRY: Duration = Duration::from_millis(300);
/// Scheduling slack on top of `EXPIRY` on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(700);

const SECS_10: Duration = Duration::from_secs(10);

/// Free ports, for [`queue`].
const ANY: &str = "tcp://127.0.0.1:*";

/// A queue with `-v` logs: the process and its frontend and backend endpoints.
fn queue(frontend: &str, backend: &str, extra: &[&str]) -> (Proc, String, String) {
    let mut args = vec!["-v", "queue", "--frontend", frontend, "--backend", backend];
    args.extend_from_slice(extra);
    start_queue("queue", &mut bosun(&args))
}

/// A queue with the fast heartbeat.
fn fast_queue() -> (Proc, String, String) {
    queue(
        ANY,
        ANY,
        &[
            "--heartbeat-interval",
            INTERVAL,
            "--heartbeat-liveness",
            LIVENESS,
        ],
    )
}

/// A worker with the fast heartbeat whose replies start with `prefix`.
fn worker(name: &str, backend: &str, prefix: &str) -> Proc {
    worker_with(
        name,
        backend,
        &["--reply-prefix", prefix, "--delay", "20ms"],
    )
}

/// A worker with `-v`, the fast heartbeat, and `extra` arguments.
fn worker_with(name: &str, backend: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "-v",
        "worker",
        "--connect",
        backend,
        "--heartbeat-interval",
        INTERVAL,
        "--heartbeat-liveness",
        LIVENESS,
        "--reconnect-initial",
        "100ms",
    ];
    args.extend_from_slice(extra);
    Proc::spawn(name, &mut bosun(&args))
}

/// Starts a worker and waits until the queue logs it ready; returns it and the
/// identity (hex) the queue knows it by.
fn ready_worker(queue: &mut Proc, name: &str, backend: &str, prefix: &str) -> (Proc, String) {
    ready(queue, name, worker(name, backend, prefix))
}

/// Waits until the queue logs `w` ready; returns it and its identity (hex).
fn ready(queue: &mut Proc, name: &str, w: Proc) -> (Proc, String) {
    let line = queue
        .stderr
        .wait_for(deadline(SECS_10), |l| l.contains("worker ready"))
        .unwrap_or_else(|| panic!("{name} never became ready:\n{}", queue.stderr.dump()));
    let id = field(&line.text, "worker").expect("worker ready line has worker=");
    (w, id)
}

fn is_expiry_of(line: &str, id: &str) -> bool {
    line.contains("worker expired") && field(line, "worker").as_deref() == Some(id)
}

/// A client that sends `n` stdin lines through the queue at `frontend`.
fn client(frontend: &str, n: usize, timeout: &str) -> Proc {
    let mut cmd = bosun(&[
        "client",
        "--connect",
        frontend,
        "--timeout",
        timeout,
        "--retries",
        "5",
        "--backoff-initial",
        "50ms",
        "--summary",
    ]);
    cmd.stdin(std::process::Stdio::piped());
    let mut c = Proc::spawn("client", &mut cmd);
    c.write_stdin(&request_lines(n));
    c.close_stdin();
    c
}

/// Splits `A:req-7` into `("A", "req-7")`.
fn split_reply(line: &str) -> (&str, &str) {
    line.split_once(':')
        .unwrap_or_else(|| panic!("reply without a worker prefix: {line:?}"))
}

#[test]
fn worker_sigkilled_mid_traffic_fails_over_to_the_survivor() {
    const N: usize = 80;
    const KILL_AFTER: usize = 10;
    let (mut q, frontend, backend) = fast_queue();
    let (mut a, id_a) = ready_worker(&mut q, "worker-a", &backend, "A:");
    let (mut b, id_b) = ready_worker(&mut q, "worker-b", &backend, "B:");
    assert_ne!(id_a, id_b);

    let mut c = client(&frontend, N, "500ms");
    let got = c.stdout.wait_count(deadline(SECS_10), KILL_AFTER, |_| true);
    assert_eq!(got, KILL_AFTER, "replies before the kill");
    a.kill();
    let killed_at = common::now();

    let status = c.expect_exit(Duration::from_secs(15));
    c.stdout.read_to_end(deadline(ms(2000)));
    c.stderr.read_to_end(deadline(ms(2000)));
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());

    // Every request answered exactly once, in order, by one worker or the other.
    let bodies: Vec<String> = c
        .stdout
        .texts()
        .iter()
        .map(|l| split_reply(l).1.to_string())
        .collect();
    let want: Vec<String> = (1..=N).map(|i| format!("req-{i}")).collect();
    assert_eq!(bodies, want, "every reply exactly once and in order");

    // Once the dead worker has expired, every reply comes from the survivor, and
    // there are such replies.
    let settled = killed_at + EXPIRY + SLACK;
    let late: Vec<&str> = c
        .stdout
        .seen
        .iter()
        .filter(|l| l.at > settled)
        .map(|l| split_reply(&l.text).0)
        .collect();
    assert!(!late.is_empty(), "no replies after the failover");
    assert!(
        late.iter().all(|w| *w == "B"),
        "replies after the failover: {late:?}"
    );
    let before: Vec<&str> = c.stdout.seen[..KILL_AFTER]
        .iter()
        .map(|l| split_reply(&l.text).0)
        .collect();
    assert!(
        before.contains(&"A") && before.contains(&"B"),
        "both workers served before the kill: {before:?}"
    );

    // The queue noticed the death within liveness × interval (+ slack), and only that.
    let expired = q
        .stderr
        .wait_for(deadline(SECS_10), |l| is_expiry_of(l, &id_a))
        .unwrap_or_else(|| panic!("queue never expired worker A:\n{}", q.stderr.dump()));
    assert!(
        expired.at <= settled,
        "worker A expired {:?} after the kill, allowed {:?}",
        expired.at - killed_at,
        EXPIRY + SLACK
    );
    q.stderr.read_available();
    assert!(
        !q.stderr.seen.iter().any(|l| is_expiry_of(&l.text, &id_b)),
        "the live worker was expired:\n{}",
        q.stderr.dump()
    );

    let summary = c
        .stderr
        .texts()
        .iter()
        .find_map(|l| parse_summary(l))
        .expect("summary line");
    assert_eq!(summary.answered, N as u64, "{summary:?}");
    assert!(
        q.is_running() && b.is_running(),
        "queue and survivor live on"
    );
}

#[test]
fn dead_idle_worker_is_expired_before_it_is_given_work() {
    let (mut q, frontend, backend) = fast_queue();
    // A registers first, so it is first in the queue's least-recently-used order.
    let (mut a, id_a) = ready_worker(&mut q, "worker-a", &backend, "A:");
    let (mut b, _id_b) = ready_worker(&mut q, "worker-b", &backend, "B:");
    a.kill();
    let killed_at = common::now();
    let expired = q
        .stderr
        .wait_for(deadline(SECS_10), |l| is_expiry_of(l, &id_a))
        .unwrap_or_else(|| panic!("queue never expired worker A:\n{}", q.stderr.dump()));
    assert!(
        expired.at - killed_at <= EXPIRY + SLACK,
        "worker A expired {:?} after the kill",
        expired.at - killed_at
    );
    assert!(
        expired.at - killed_at >= ms(100),
        "worker A expired too soon: {:?} after the kill",
        expired.at - killed_at
    );

    // Had the dead worker stayed in the idle list, the first request would go to it
    // and be lost, and the client would have to retry.
    let mut c = client(&frontend, 5, "2s");
    let status = c.expect_exit(SECS_10);
    c.stdout.read_to_end(deadline(ms(2000)));
    c.stderr.read_to_end(deadline(ms(2000)));
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    let want: Vec<String> = (1..=5).map(|i| format!("B:req-{i}")).collect();
    assert_eq!(c.stdout.texts(), want);
    let summary = c
        .stderr
        .texts()
        .iter()
        .find_map(|l| parse_summary(l))
        .expect("summary line");
    assert_eq!(summary.retries, 0, "no request went to the dead worker");
    assert!(q.is_running() && b.is_running());
}

#[test]
fn workers_and_clients_come_back_after_the_queue_is_sigkilled_and_restarted() {
    const N: usize = 30;
    const KILL_AFTER: usize = 10;
    let (mut q, frontend, backend) = fast_queue();
    let (mut w, _) = ready_worker(&mut q, "worker", &backend, "W:");
    let mut c = client(&frontend, N, "500ms");
    let got = c.stdout.wait_count(deadline(SECS_10), KILL_AFTER, |_| true);
    assert_eq!(got, KILL_AFTER, "replies before the kill");
    q.kill();

    // The same ports: the worker and the client reconnect by themselves.
    let (mut q2, frontend2, backend2) = queue(
        &frontend,
        &backend,
        &[
            "--heartbeat-interval",
            INTERVAL,
            "--heartbeat-liveness",
            LIVENESS,
        ],
    );
    assert_eq!(
        (frontend2.as_str(), backend2.as_str()),
        (frontend.as_str(), backend.as_str())
    );
    // The new queue does not know the worker; it finds out by heartbeat and says READY.
    q2.stderr
        .wait_for(deadline(SECS_10), |l| l.contains("worker ready"))
        .unwrap_or_else(|| panic!("worker never came back:\n{}", q2.stderr.dump()));

    let status = c.expect_exit(Duration::from_secs(15));
    c.stdout.read_to_end(deadline(ms(2000)));
    c.stderr.read_to_end(deadline(ms(2000)));
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    let want: Vec<String> = (1..=N).map(|i| format!("W:req-{i}")).collect();
    assert_eq!(
        c.stdout.texts(),
        want,
        "every reply exactly once and in order"
    );
    assert!(q2.is_running() && w.is_running());
}

/// `len` bytes of junk with no zero byte, so it is never mistaken for anything.
fn junk(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// Many frames of junk, none empty.
fn many_frames() -> Vec<Vec<u8>> {
    (0..1000).map(|i| junk(1 + i % 7, i as u8)).collect()
}

fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn malformed_lines(p: &mut Proc, until: Instant, want: usize) -> usize {
    p.stderr
        .wait_count(until, want, |l| l.contains("malformed message dropped"))
}

#[test]
fn queue_survives_garbage_on_both_sockets() {
    let (mut q, frontend, backend) = fast_queue();
    let (mut w, _) = ready_worker(&mut q, "worker", &backend, "W:");

    let ctx = zmq::Context::new();
    // A DEALER at a ROUTER sends exactly the frames given; the ROUTER adds the identity.
    let front = raw_socket(&ctx, zmq::DEALER);
    front.connect(&frontend).expect("connect frontend");
    let back = raw_socket(&ctx, zmq::DEALER);
    back.connect(&backend).expect("connect backend");

    let big = junk(1 << 20, 7);
    // Each of these breaks the client-request framing [identity][""][body...].
    let front_garbage: Vec<Vec<Vec<u8>>> = vec![
        frames(&[b""]),
        frames(&[b"\x07"]),
        frames(&[b"0x01"]),
        frames(&[b"\x01"]),
        frames(&[b"a", b"b"]),
        frames(&[b"a", b""]),
        vec![big.clone()],
        many_frames(),
    ];
    // Each of these is neither READY, HEARTBEAT nor a reply [address][""][body...].
    let back_garbage: Vec<Vec<Vec<u8>>> = vec![
        frames(&[b""]),
        frames(&[b"\x07"]),
        frames(&[b"\x03"]),
        frames(&[b"0x01"]),
        frames(&[b"\x01\x01"]),
        frames(&[b"\x01", b"\x01"]),
        frames(&[b"a", b"b"]),
        frames(&[b"", b"x", b"y"]),
        vec![big],
        many_frames(),
    ];
    for msg in &front_garbage {
        send(&front, msg);
    }
    for msg in &back_garbage {
        send(&back, msg);
    }
    // Not malformed, but not welcome either: a heartbeat from a worker that never said
    // READY, and a "reply" for a client that does not exist.
    send(&back, &frames(&[b"\x02"]));
    send(&back, &frames(&[b"ghost", b"", b"boo"]));

    let want = front_garbage.len() + back_garbage.len();
    let seen = malformed_lines(&mut q, deadline(SECS_10), want);
    assert_eq!(
        seen,
        want,
        "the queue logs every malformed message:\n{}",
        q.stderr.dump()
    );
    assert!(
        q.is_running(),
        "queue died on garbage:\n{}",
        q.stderr.dump()
    );

    // Still routes a normal request end to end.
    let out = run(
        &[
            "client",
            "--connect",
            &frontend,
            "--request",
            "still alive?",
            "--timeout",
            "2s",
            "--retries",
            "2",
        ],
        &[],
        SECS_10,
    );
    assert!(out.status.success(), "{out:?}\nqueue:\n{}", q.stderr.dump());
    assert_eq!(out.stdout, vec!["W:still alive?".to_string()]);
    assert!(q.is_running(), "queue died:\n{}", q.stderr.dump());
    assert!(w.is_running(), "worker died:\n{}", w.stderr.dump());
}

#[test]
fn worker_survives_garbage_from_its_queue() {
    let ctx = zmq::Context::new();
    // Play the queue: a ROUTER the worker connects to.
    let router = raw_socket(&ctx, zmq::ROUTER);
    router.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = router
        .get_last_endpoint()
        .expect("last endpoint")
        .expect("utf-8 endpoint");
    // A slow heartbeat: the worker must not give up on this silent "queue" mid-test.
    let mut w = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &endpoint,
            "--heartbeat-interval",
            "2s",
            "--heartbeat-liveness",
            "5",
        ]),
    );

    let ready = recv_until(&router, deadline(SECS_10)).expect("worker sends READY");
    assert_eq!(ready.len(), 2, "READY is [identity][0x01]: {ready:?}");
    assert_eq!(ready[1], b"\x01", "first message is READY");
    let id = ready[0].clone();
    let to_worker = |parts: &[&[u8]]| {
        let mut msg = vec![id.clone()];
        msg.extend(parts.iter().map(|p| p.to_vec()));
        msg
    };

    let mut big = vec![id.clone()];
    big.push(junk(1 << 20, 3));
    let mut many = vec![id.clone()];
    many.extend(many_frames());
    let garbage: Vec<Vec<Vec<u8>>> = vec![
        to_worker(&[b""]),
        to_worker(&[b"\x07"]),
        to_worker(&[b"0x01"]),
        to_worker(&[b"\x01"]),
        to_worker(&[b"\x02junk"]),
        to_worker(&[b"a", b"b"]),
        to_worker(&[b"", b"body"]),
        to_worker(&[b"addr", b""]),
        big,
        many,
    ];
    for msg in &garbage {
        send(&router, msg);
    }
    let seen = malformed_lines(&mut w, deadline(SECS_10), garbage.len());
    assert_eq!(
        seen,
        garbage.len(),
        "the worker logs every malformed message:\n{}",
        w.stderr.dump()
    );
    assert!(
        w.is_running(),
        "worker died on garbage:\n{}",
        w.stderr.dump()
    );

    // Valid requests, one and two address frames, are still answered, on the same
    // connection (same identity).
    send(&router, &to_worker(&[b"\x02"]));
    for address in [vec![b"client-addr".to_vec()], frames(&[b"c1", b"c2"])] {
        let mut request = vec![id.clone()];
        request.extend(address.iter().cloned());
        request.push(Vec::new());
        request.push(b"body".to_vec());
        send(&router, &request);
        let until = deadline(SECS_10);
        let reply = loop {
            let msg = recv_until(&router, until)
                .unwrap_or_else(|| panic!("no reply to {request:?}\n{}", w.stderr.dump()));
            if msg.get(1).map(Vec::as_slice) == Some(b"\x02") && msg.len() == 2 {
                continue; // the worker's heartbeat
            }
            break msg;
        };
        assert_eq!(
            reply, request,
            "reply is [identity][address...][\"\"][body]"
        );
    }
    assert!(w.is_running(), "worker died:\n{}", w.stderr.dump());
}

/// Heartbeats keep flowing while a slow handler runs: a request handled for 1.5 s (five
/// expiries) is answered by its first attempt, and the queue never expires the worker.
#[test]
fn slow_handler_keeps_its_worker_alive() {
    let (mut q, frontend, backend) = fast_queue();
    let slow = worker_with(
        "worker",
        &backend,
        &["--reply-prefix", "S:", "--delay", "1500ms"],
    );
    let (mut w, _) = ready(&mut q, "worker", slow);
    let mut c = client(&frontend, 1, "10s");
    let status = c.expect_exit(SECS_10);
    c.stdout.read_to_end(deadline(ms(2000)));
    c.stderr.read_to_end(deadline(ms(2000)));
    assert!(status.success(), "client: {status}\n{}", c.stderr.dump());
    assert_eq!(c.stdout.texts(), vec!["S:req-1".to_string()]);
    let summary = c
        .stderr
        .texts()
        .iter()
        .find_map(|l| parse_summary(l))
        .expect("a summary line");
    assert_eq!((summary.answered, summary.retries), (1, 0));
    q.stderr.read_available();
    let log = q.stderr.dump();
    assert!(
        !log.contains("worker expired"),
        "the queue expired the worker while its handler ran\n{log}"
    );
    assert!(w.is_running() && q.is_running());
}

/// Ctrl-C stops a worker whose handler is still running within moments, with exit 0:
/// the guard does not wait for the handler.
#[test]
fn ctrl_c_stops_a_busy_worker_at_once() {
    let (mut q, frontend, backend) = fast_queue();
    let busy = worker_with(
        "worker",
        &backend,
        &["--exec", "echo handling >&2; exec sleep 60"],
    );
    let (mut w, _) = ready(&mut q, "worker", busy);
    // The worker exits on Ctrl-C but its handler's `sleep` would not: killed at the end.
    let _handler = w.group_guard();
    let mut c = client(&frontend, 1, "30s");
    w.expect_stderr("the request reaching the handler", SECS_10, |l| {
        l == "handling"
    });
    let sent = common::now();
    w.signal(libc::SIGINT);
    let status = w.expect_exit(Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{}", w.stderr.dump());
    assert!(sent.elapsed() < Duration::from_secs(2));
    c.kill();
}
