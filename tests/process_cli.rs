//! The `bosun` command line as a user meets it: help, human durations, `BOSUN_*`
//! environment variables, refused configurations, Ctrl-C and SIGTERM, and `bosun demo`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    bosun, deadline, expect_handler_failure, field, ms, now, raw_socket, recv_until, run, send,
    spawn_piped, start_queue, Outcome, Proc,
};

const SECS_10: Duration = Duration::from_secs(10);
/// How soon a process must exit after Ctrl-C.
const CTRL_C_EXIT: Duration = Duration::from_secs(2);

fn no_server() -> String {
    format!("tcp://127.0.0.1:{}", common::free_port())
}

/// Whether the output of `out` mentions `flag` in one of its stderr lines.
fn stderr_names(out: &Outcome, flag: &str) -> bool {
    out.stderr.iter().any(|l| l.contains(flag))
}

#[test]
fn help_lists_every_subcommand() {
    let out = run(&["--help"], &[], SECS_10);
    assert!(out.status.success(), "{out:?}");
    for sub in [
        "client", "server", "queue", "worker", "broker", "stats", "demo",
    ] {
        assert!(
            out.stdout
                .iter()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "--help lists {sub}: {:#?}",
            out.stdout
        );
    }
    // Each subcommand's help shows the environment variable of a shared flag.
    let out = run(&["client", "--help"], &[], SECS_10);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.iter().any(|l| l.contains("BOSUN_TIMEOUT")));
}

/// Runs a client that has no server; returns what it did.
fn lonely_client(extra: &[&str], env: &[(&str, &str)]) -> Outcome {
    let endpoint = no_server();
    let mut args = vec!["client", "--connect", &endpoint, "--request", "x"];
    args.extend_from_slice(extra);
    run(&args, env, SECS_10)
}

fn gave_up_after(out: &Outcome, attempts: u32) -> bool {
    let s = if attempts == 1 { "" } else { "s" };
    out.status.code() == Some(69)
        && out.stderr.iter().any(|l| {
            l.starts_with("bosun client:") && l.contains(&format!("after {attempts} attempt{s} "))
        })
}

#[test]
fn human_durations_are_accepted() {
    let out = lonely_client(&["--timeout", "250ms", "--retries", "1"], &[]);
    assert!(gave_up_after(&out, 1), "{out:?}");
    assert!(
        out.elapsed >= ms(250) && out.elapsed < ms(1500),
        "one 250ms attempt took {:?}",
        out.elapsed
    );

    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["server", "--bind", "tcp://127.0.0.1:*"]),
    );
    let line = server.expect_stdout("server bound=", SECS_10);
    let endpoint = field(&line, "bound").expect("bound=");
    let out = run(
        &[
            "client",
            "--connect",
            &endpoint,
            "--request",
            "hi",
            "--timeout",
            "2s",
            "--backoff-max",
            "1m30s",
        ],
        &[],
        SECS_10,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, vec!["hi".to_string()]);
}

#[test]
fn bad_durations_are_refused_naming_the_flag() {
    for (args, flag) in [
        (vec!["client", "--timeout", "abc"], "--timeout"),
        (
            vec!["client", "--backoff-initial", "5 parsecs"],
            "--backoff-initial",
        ),
        (
            vec!["queue", "--heartbeat-interval", "abc"],
            "--heartbeat-interval",
        ),
        (vec!["worker", "--delay", "soon"], "--delay"),
    ] {
        let out = run(&args, &[], SECS_10);
        assert_eq!(
            out.status.code(),
            Some(64),
            "usage error for {args:?}: {out:?}"
        );
        assert!(stderr_names(&out, flag), "{args:?} names {flag}: {out:?}");
        assert!(
            out.stderr.iter().any(|l| l.contains("250ms")),
            "{args:?}: the message shows a valid example: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let out = lonely_client(&[], &[("BOSUN_TIMEOUT", "abc")]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(stderr_names(&out, "--timeout"), "{out:?}");
}

#[test]
fn invalid_configuration_is_refused_naming_the_flag() {
    let nowhere = no_server();
    // (arguments, environment, the flag the refusal must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["client", "--retries", "0"], vec![], "--retries"),
        (vec!["client"], vec![("BOSUN_RETRIES", "0")], "--retries"),
        (vec!["client", "--timeout", "0s"], vec![], "--timeout"),
        (
            vec!["client", "--backoff-initial", "2s", "--backoff-max", "1s"],
            vec![],
            "--backoff",
        ),
        (
            vec!["queue", "--heartbeat-liveness", "0"],
            vec![],
            "--heartbeat-liveness",
        ),
        (
            vec!["queue"],
            vec![("BOSUN_HEARTBEAT_LIVENESS", "0")],
            "--heartbeat-liveness",
        ),
        (
            vec!["queue", "--heartbeat-interval", "0s"],
            vec![],
            "--heartbeat-interval",
        ),
        (
            vec!["worker", "--heartbeat-liveness", "0"],
            vec![],
            "--heartbeat-liveness",
        ),
        (
            vec!["worker"],
            vec![("BOSUN_HEARTBEAT_INTERVAL", "0s")],
            "--heartbeat-interval",
        ),
        (
            vec!["worker", "--reconnect-initial", "0s"],
            vec![],
            "--reconnect",
        ),
        (
            vec!["broker", "--max-deliveries", "0"],
            vec![],
            "--max-deliveries",
        ),
        (
            vec!["broker"],
            vec![("BOSUN_MAX_DELIVERIES", "0")],
            "--max-deliveries",
        ),
    ];
    for (mut args, env, flag) in cases {
        // Never the default endpoints: other tests run in parallel.
        match args[0] {
            "queue" => args.extend([
                "--frontend",
                "tcp://127.0.0.1:*",
                "--backend",
                "tcp://127.0.0.1:*",
            ]),
            "broker" => args.extend(["--bind", "tcp://127.0.0.1:*"]),
            _ => args.extend(["--connect", nowhere.as_str()]),
        }
        if args[0] == "client" {
            args.extend(["--request", "x"]);
        }
        let out = run(&args, &env, SECS_10);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?} {env:?} is refused: {out:?}"
        );
        let prefix = format!("bosun {}: invalid", args[0]);
        assert!(
            out.stderr
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(flag)),
            "{args:?} {env:?}: the message names {flag}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "nothing was started: {out:?}");
        assert!(
            out.elapsed < Duration::from_secs(2),
            "refused at once: {out:?}"
        );
    }
}

#[test]
fn client_retry_settings_come_from_the_environment() {
    // The defaults (2500ms × 3) would take 7.5 s or more.
    let out = lonely_client(&[], &[("BOSUN_RETRIES", "1"), ("BOSUN_TIMEOUT", "200ms")]);
    assert!(gave_up_after(&out, 1), "{out:?}");
    assert!(
        out.elapsed >= ms(200) && out.elapsed < ms(1500),
        "one 200ms attempt took {:?}",
        out.elapsed
    );
    let out = lonely_client(
        &["--retries", "2"],
        &[
            ("BOSUN_RETRIES", "1"),
            ("BOSUN_TIMEOUT", "200ms"),
            ("BOSUN_BACKOFF_INITIAL", "10ms"),
        ],
    );
    assert!(gave_up_after(&out, 2), "a flag beats its variable: {out:?}");
}

/// `bosun [global...] queue` on free loopback ports.
fn queue_on_free_ports(global: &[&str]) -> Command {
    let mut args = global.to_vec();
    args.extend([
        "queue",
        "--frontend",
        "tcp://127.0.0.1:*",
        "--backend",
        "tcp://127.0.0.1:*",
    ]);
    bosun(&args)
}

/// Milliseconds from `from` to `to`, for messages.
fn since(from: Instant, to: Instant) -> Duration {
    to.saturating_duration_since(from)
}

#[test]
fn queue_heartbeat_settings_come_from_the_environment() {
    // Interval 100 ms, liveness 10: a silent worker is expired after 1 s (the defaults
    // would take 3 s), and hears a heartbeat every 100 ms (not every second).
    let mut cmd = queue_on_free_ports(&["-v"]);
    cmd.envs([
        ("BOSUN_HEARTBEAT_INTERVAL", "100ms"),
        ("BOSUN_HEARTBEAT_LIVENESS", "10"),
    ]);
    let (mut q, _, backend) = start_queue("queue", &mut cmd);

    let ctx = zmq::Context::new();
    let worker = raw_socket(&ctx, zmq::DEALER);
    worker.connect(&backend).expect("connect");
    send(&worker, &[vec![0x01]]);
    let sent_ready = now();
    q.stderr
        .wait_for(deadline(SECS_10), |l| l.contains("worker ready"))
        .unwrap_or_else(|| panic!("READY not seen:\n{}", q.stderr.dump()));

    // Say nothing more; count the queue's heartbeats until it gives up on us.
    let until = deadline(SECS_10);
    let mut heartbeats = 0;
    let expired_at = loop {
        if let Some(msg) = recv_until(&worker, (now() + ms(20)).min(until)) {
            if msg == [vec![0x02]] {
                heartbeats += 1;
            }
        }
        q.stderr.read_available();
        if let Some(l) = q
            .stderr
            .seen
            .iter()
            .find(|l| l.text.contains("worker expired"))
        {
            break l.at;
        }
        assert!(now() < until, "never expired:\n{}", q.stderr.dump());
    };
    let silent = since(sent_ready, expired_at);
    assert!(
        silent >= ms(1000) && silent < ms(2500),
        "expired after {silent:?}, want about 1 s (100ms × 10)"
    );
    assert!(
        heartbeats >= 5,
        "{heartbeats} heartbeats in {silent:?}, want one per 100 ms"
    );
}

#[test]
fn worker_heartbeat_settings_come_from_the_environment() {
    // Interval 100 ms, liveness 5: a worker whose queue is silent gives up after
    // 500 ms and connects again (the defaults would wait 3 s).
    let ctx = zmq::Context::new();
    let router = raw_socket(&ctx, zmq::ROUTER);
    router.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = router
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8");
    let mut cmd = bosun(&[
        "worker",
        "--connect",
        &endpoint,
        "--reconnect-initial",
        "50ms",
        "--reconnect-max",
        "50ms",
    ]);
    cmd.envs([
        ("BOSUN_HEARTBEAT_INTERVAL", "100ms"),
        ("BOSUN_HEARTBEAT_LIVENESS", "5"),
    ]);
    let _w = Proc::spawn("worker", &mut cmd);

    let until = deadline(SECS_10);
    let first = recv_until(&router, until).expect("READY");
    assert_eq!(
        first.get(1).map(Vec::as_slice),
        Some(&b"\x01"[..]),
        "{first:?}"
    );
    let first_ready = now();
    let mut heartbeats = 0;
    let second_ready = loop {
        let msg = recv_until(&router, until).expect("a second READY after the reconnect");
        match msg.get(1).map(Vec::as_slice) {
            Some(b"\x02") if msg[0] == first[0] => heartbeats += 1,
            Some(b"\x01") => {
                assert_ne!(msg[0], first[0], "a reconnect uses a fresh socket");
                break now();
            }
            _ => {}
        }
    };
    let silent = since(first_ready, second_ready);
    assert!(
        silent >= ms(450) && silent < ms(2500),
        "reconnected after {silent:?}, want about 500 ms (100ms × 5) + 50 ms"
    );
    assert!(heartbeats >= 3, "{heartbeats} heartbeats in {silent:?}");
}

/// Sends `signal` to `p` and checks it exits 0 within [`CTRL_C_EXIT`].
fn expect_clean_exit(p: &mut Proc, signal: libc::c_int) {
    let sent = now();
    p.signal(signal);
    let status = p.expect_exit(CTRL_C_EXIT);
    p.stderr.read_available();
    assert_eq!(
        status.code(),
        Some(0),
        "{} after signal {signal}: {status} in {:?}\n{}",
        p.name,
        since(sent, now()),
        p.stderr.dump()
    );
}

#[test]
fn ctrl_c_stops_every_long_running_command_cleanly() {
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["server", "--bind", "tcp://127.0.0.1:*"]),
    );
    let server_ep = field(&server.expect_stdout("server bound=", SECS_10), "bound").unwrap();
    let (mut queue, _, backend) = start_queue("queue", &mut queue_on_free_ports(&["-v"]));
    let mut worker = Proc::spawn("worker", &mut bosun(&["worker", "--connect", &backend]));
    queue
        .stderr
        .wait_for(deadline(SECS_10), |l| l.contains("worker ready"))
        .unwrap_or_else(|| panic!("worker not ready:\n{}", queue.stderr.dump()));
    // A client between two lines of stdin: answered one, waiting for the next.
    let mut cmd = bosun(&["client", "--connect", &server_ep]);
    cmd.stdin(std::process::Stdio::piped());
    let mut client = Proc::spawn("client", &mut cmd);
    client.write_stdin("ping\n");
    client
        .stdout
        .wait_for(deadline(SECS_10), |l| l == "ping")
        .unwrap_or_else(|| panic!("no reply:\n{}", client.stderr.dump()));

    // The client's batch was interrupted: 130. The others run until told to stop.
    client.signal(libc::SIGINT);
    let status = client.expect_exit(CTRL_C_EXIT);
    assert_eq!(status.code(), Some(130), "client after SIGINT: {status}");
    expect_clean_exit(&mut worker, libc::SIGINT);
    expect_clean_exit(&mut queue, libc::SIGINT);
    expect_clean_exit(&mut server, libc::SIGINT);
}

#[test]
fn sigterm_stops_a_server_cleanly() {
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["server", "--bind", "tcp://127.0.0.1:*"]),
    );
    server.expect_stdout("server bound=", SECS_10);
    expect_clean_exit(&mut server, libc::SIGTERM);
}

#[test]
fn ctrl_c_stops_a_worker_in_the_middle_of_a_slow_request() {
    let (_queue, frontend, backend) = start_queue("queue", &mut queue_on_free_ports(&[]));
    // The handler says it started, then takes far longer than the test.
    let mut worker = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &backend,
            "--exec",
            "echo handling >&2; exec sleep 60",
        ]),
    );
    let mut client = Proc::spawn(
        "client",
        &mut bosun(&[
            "client",
            "--connect",
            &frontend,
            "--request",
            "slow",
            "--timeout",
            "60s",
        ]),
    );
    worker
        .stderr
        .wait_for(deadline(SECS_10), |l| l == "handling")
        .unwrap_or_else(|| {
            panic!(
                "request never reached the handler:\n{}",
                worker.stderr.dump()
            )
        });

    expect_clean_exit(&mut worker, libc::SIGINT);
    worker.kill_group(); // the `sleep 60` the handler left behind
                         // A client waiting for a reply stops promptly too.
    client.signal(libc::SIGINT);
    client.expect_exit(CTRL_C_EXIT);
}

/// `bosun -v queue` on free ports with one Paranoid Pirate `bosun worker extra...`
/// behind it, ready: the queue, the worker and the frontend endpoint.
fn queue_with_worker(extra: &[&str]) -> (Proc, Proc, String) {
    let (mut queue, frontend, backend) = start_queue("queue", &mut queue_on_free_ports(&["-v"]));
    let mut args = vec!["worker", "--connect", backend.as_str()];
    args.extend_from_slice(extra);
    let worker = Proc::spawn("worker", &mut bosun(&args));
    queue.expect_stderr("worker ready", SECS_10, |l| l.contains("worker ready"));
    (queue, worker, frontend)
}

/// A 1 MiB body through `--exec 'tr a-z A-Z'`: far more than a pipe holds, so a worker
/// that wrote all of stdin before reading stdout would deadlock with `tr` (both blocked
/// on a full pipe) and the client would time out.
#[test]
fn exec_handler_pipes_a_body_larger_than_a_pipe_without_deadlock() {
    const LEN: usize = 1 << 20;
    let (mut queue, mut worker, frontend) = queue_with_worker(&["--exec", "tr a-z A-Z"]);
    let body: String = (0..LEN)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let want = body.to_ascii_uppercase();
    let mut client = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            &frontend,
            "--timeout",
            "10s",
            "--retries",
            "1",
            "--summary",
        ],
    );
    client.write_stdin(&format!("{body}\n"));
    client.close_stdin();
    let status = client.expect_done(Duration::from_secs(15));
    assert!(
        status.success(),
        "client: {status}\n{}\n{}",
        client.stderr.dump(),
        worker.dump()
    );
    let replies = client.stdout.texts();
    let lens: Vec<usize> = replies.iter().map(String::len).collect();
    assert_eq!(lens, vec![LEN], "one reply of the body's length");
    assert!(replies[0] == want, "the reply is the body uppercased");
    let summary = client.summary().expect("summary line");
    assert_eq!(
        (summary.sent, summary.answered, summary.retries),
        (1, 1, 0),
        "answered by the first attempt: {summary:?}"
    );
    assert!(worker.is_running() && queue.is_running());
}

/// A Lazy Pirate `bosun client` whose request fails in the worker's handler (through
/// `bosun queue`) exits 1 at once with the worker's message, and the worker serves on.
#[test]
fn client_exits_non_zero_with_the_message_when_the_handler_fails() {
    let (mut queue, mut worker, frontend) = queue_with_worker(&["--exec", "exit 3"]);
    for n in 1..=2 {
        expect_handler_failure(&["--connect", &frontend], n, &mut worker);
    }
    assert!(queue.is_running(), "{}", queue.dump());
}

/// Runs `bosun demo` with `args` and returns its stdout lines and the named counts of
/// its last line (`demo: sent N, answered N, ...`).
fn run_demo(args: &[&str]) -> (Vec<String>, Vec<(String, u64)>) {
    let mut all = vec!["demo", "--deadline", "20s"];
    all.extend_from_slice(args);
    let mut demo = Proc::spawn("demo", &mut bosun(&all));
    let status = demo.expect_exit(Duration::from_secs(25));
    demo.stdout.read_to_end(deadline(ms(2000)));
    assert!(
        status.success(),
        "demo: {status}\n{}\n{}",
        demo.stdout.dump(),
        demo.stderr.dump()
    );
    let lines = demo.stdout.texts();
    let last = lines.last().expect("demo prints a result").clone();
    let counts = last
        .strip_prefix("demo: ")
        .unwrap_or_else(|| panic!("result line: {last:?}"))
        .split(", ")
        .map(|part| {
            let (name, n) = part.rsplit_once(' ').expect("`name N`");
            (name.to_string(), n.parse().expect("a count"))
        })
        .collect();
    (lines, counts)
}

fn count(counts: &[(String, u64)], name: &str) -> u64 {
    counts
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no `{name}` in {counts:?}"))
        .1
}

#[test]
fn demo_answers_everything_once_despite_a_killed_worker() {
    let (lines, counts) = run_demo(&["--pattern", "paranoid-pirate"]);
    let names: Vec<&str> = counts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["sent", "answered", "lost", "duplicates", "failovers"],
        "{lines:#?}"
    );
    let (sent, answered) = (count(&counts, "sent"), count(&counts, "answered"));
    assert!(sent > 0 && answered == sent, "{counts:?}");
    assert_eq!(
        (count(&counts, "lost"), count(&counts, "duplicates")),
        (0, 0),
        "{counts:?}"
    );
    assert!(
        count(&counts, "failovers") >= 1,
        "the kill must cost a retry: {counts:?}\n{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SIGKILLed worker")),
        "{lines:#?}"
    );
}

#[test]
fn majordomo_demo_survives_a_killed_worker_and_a_broker_restart() {
    let (lines, counts) = run_demo(&[]);
    let (sent, answered) = (count(&counts, "sent"), count(&counts, "answered"));
    assert!(sent > 0 && answered == sent, "{counts:?}");
    assert_eq!(
        (count(&counts, "lost"), count(&counts, "duplicates")),
        (0, 0),
        "{counts:?}"
    );
    assert_eq!(count(&counts, "broker restarts"), 1, "{counts:?}");
    assert!(
        count(&counts, "failovers") >= 1,
        "the worker kill moves a request: {counts:?}\n{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SIGKILLed worker")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SIGKILLed the broker")),
        "{lines:#?}"
    );
}
