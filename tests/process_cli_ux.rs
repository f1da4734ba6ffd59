//! The command line as users meet it (issue 8): exit codes, a closed stdout, values and
//! flags that cannot work, messages that name what is wrong, the demo's Ctrl-C,
//! machine-readable output (`--json`, `--null`, `stats --json`, `stats --watch`), and
//! the regression tests of bytes on stdin, oversized requests and overflowing durations.

#![allow(clippy::disallowed_methods)] // real-process tests read the real clock

mod common;

use std::io::{Read, Write};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use common::*;

const SECS_10: Duration = Duration::from_secs(10);
const SECS_15: Duration = Duration::from_secs(15);

/// sysexits-style codes of `bosun --help`.
const USAGE: i32 = 64;
const DATA: i32 = 65;
const UNAVAILABLE: i32 = 69;
const SIGINT_CODE: i32 = 130;
const SIGTERM_CODE: i32 = 143;

/// An endpoint nobody listens on.
fn nowhere() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// A `bosun server` (Lazy Pirate echo) and its endpoint.
fn echo_server() -> (Proc, String) {
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["server", "--bind", "tcp://127.0.0.1:*"]),
    );
    let line = server.expect_stdout("server bound=", SECS_10);
    let ep = field(&line, "bound").expect("bound=");
    (server, ep)
}

/// A broker, and a worker of service `echo` (running `exec` when given) that has
/// registered (the broker's `mmi.service echo` answers 200).
fn broker_and_worker(exec: Option<&str>) -> (Proc, Proc, String) {
    let (broker, ep) = start_broker(
        "broker",
        &mut bosun(&["broker", "--bind", "tcp://127.0.0.1:*"]),
    );
    let mut args = vec!["worker", "--connect", &ep, "--service", "echo"];
    if let Some(cmd) = exec {
        args.extend(["--exec", cmd]);
    }
    let worker = Proc::spawn("worker", &mut bosun(&args));
    let ready = wait_until(SECS_10, || {
        let out = run(
            &[
                "client",
                "--connect",
                &ep,
                "--service",
                "mmi.service",
                "--request",
                "echo",
            ],
            &[],
            SECS_10,
        );
        out.stdout == ["200"]
    });
    assert!(ready, "the worker registered");
    (broker, worker, ep)
}

/// What [`run_bytes`] saw: stdout as bytes.
struct Raw {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
}

/// Runs `bosun args` with `input` on stdin, to completion within `limit` (killed and
/// failed otherwise); stdout kept byte for byte.
fn run_bytes(args: &[&str], env: &[(&str, &str)], input: Vec<u8>, limit: Duration) -> Raw {
    let mut cmd = bosun(args);
    cmd.envs(env.iter().copied()).stdin(Stdio::piped());
    let start = now();
    let mut child = cmd.spawn().expect("spawn bosun");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let Some(status) = status else {
        // SAFETY: kill(2) on our own unreaped child's process group.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = child.wait();
        panic!("bosun {args:?} still running after {limit:?}");
    };
    let elapsed = now() - start;
    let _ = writer.join();
    Raw {
        status,
        stdout: reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
        elapsed,
    }
}

/// Parses each line of `text` with Python's `json` module and prints it back as
/// canonical JSON (sorted keys, ASCII), one per line; panics if a line is not JSON.
fn python_json(text: &str) -> Vec<String> {
    let script = "import json,sys\nfor line in sys.stdin:\n    print(json.dumps(json.loads(line), sort_keys=True))\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "python3 could not parse:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------- exit codes (P2 14)

#[test]
fn help_documents_the_exit_codes() {
    for args in [
        vec!["--help"],
        vec!["client", "--help"],
        vec!["stats", "--help"],
    ] {
        let out = run(&args, &[], SECS_10);
        assert!(out.status.success(), "{out:?}");
        let text = out.stdout.join("\n");
        for code in ["64", "69", "75", "130", "143"] {
            assert!(
                text.contains(code),
                "{args:?} --help lists exit code {code}:\n{text}"
            );
        }
    }
}

#[test]
fn usage_errors_exit_64_with_the_subcommand_prefix() {
    for args in [
        vec!["client", "--no-such-flag"],
        vec!["client", "--retries", "many"],
        vec!["stats", "--watch", "soon"],
        vec!["nonsense"],
    ] {
        let out = run(&args, &[], SECS_10);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let out = run(&["client", "--retries", "many"], &[], SECS_10);
    assert!(out.stderr[0].starts_with("bosun client: "), "{out:?}");
    // A configuration the library refuses is a usage error too, with the same prefix.
    let out = run(
        &[
            "client",
            "--retries",
            "0",
            "--connect",
            &nowhere(),
            "--request",
            "x",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(USAGE), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.starts_with("bosun client: invalid --retries")),
        "{out:?}"
    );
}

#[test]
fn a_give_up_exits_69_and_counts_one_attempt_in_the_singular() {
    let out = run(
        &[
            "client",
            "--connect",
            &nowhere(),
            "--request",
            "x",
            "--timeout",
            "200ms",
            "--retries",
            "1",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert_eq!(out.stderr.len(), 1, "one line: {out:?}");
    let line = &out.stderr[0];
    assert!(line.starts_with("bosun client: line 1: "), "{line}");
    assert!(
        line.contains("after 1 attempt ") && !line.contains("1 attempts"),
        "{line}"
    );
    assert!(line.contains("nothing answers there"), "{line}");
}

#[test]
fn a_failed_handler_exits_1_and_stats_of_a_non_broker_exits_69() {
    let (_b, _w, ep) = broker_and_worker(Some("exit 3"));
    let out = run(
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "echo",
            "--request",
            "x",
            "--timeout",
            "5s",
        ],
        &[],
        SECS_15,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let (_s, server) = echo_server();
    let out = run(
        &[
            "stats",
            "--connect",
            &server,
            "--timeout",
            "1s",
            "--retries",
            "1",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert!(out.stderr[0].starts_with("bosun stats: "), "{out:?}");
}

/// Starts a client reading stdin from a broker with an echo worker, sees one reply,
/// then sends `signal` while stdin is still open: the batch was interrupted.
fn interrupted_client(signal: libc::c_int) -> ExitStatus {
    let (_b, _w, ep) = broker_and_worker(None);
    let mut c = spawn_piped("client", &["client", "--connect", &ep, "--service", "echo"]);
    c.write_stdin("one\n");
    c.expect_stdout("one", SECS_10);
    c.signal(signal);
    c.expect_exit(Duration::from_secs(2))
}

#[test]
fn an_interrupted_batch_exits_130_on_sigint_and_143_on_sigterm() {
    assert_eq!(interrupted_client(libc::SIGINT).code(), Some(SIGINT_CODE));
    assert_eq!(interrupted_client(libc::SIGTERM).code(), Some(SIGTERM_CODE));

    // `stats` waiting on a silent peer: the same code, not 1.
    let mut s = Proc::spawn(
        "stats",
        &mut bosun(&["stats", "--connect", &nowhere(), "--timeout", "30s"]),
    );
    assert!(!wait_until(ms(300), || !s.is_running()), "stats waits");
    s.signal(libc::SIGINT);
    assert_eq!(
        s.expect_exit(Duration::from_secs(2)).code(),
        Some(SIGINT_CODE)
    );

    // A server's job is to run until told to stop: stopping is success.
    let (mut server, ep) = echo_server();
    // A second one on the same address cannot bind: unavailable.
    let out = run(&["server", "--bind", &ep], &[], SECS_10);
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.starts_with("bosun server: ") && l.contains(&ep)),
        "{out:?}"
    );
    server.signal(libc::SIGTERM);
    assert_eq!(server.expect_exit(Duration::from_secs(2)).code(), Some(0));
}

// ------------------------------------------------------- a closed stdout (P2 12)

#[test]
fn a_closed_stdout_ends_the_client_quietly_with_exit_0() {
    let (_s, ep) = echo_server();
    closed_stdout_ends_quietly(&["client", "--connect", &ep]);
}

/// The same with many requests in flight (Majordomo): the ones still out when stdout
/// closed are not named either. Catches: a line of "no answer" per request in flight.
#[test]
fn a_closed_stdout_ends_an_in_flight_client_quietly_too() {
    let (_b, _w, ep) = broker_and_worker(None);
    closed_stdout_ends_quietly(&[
        "client",
        "--connect",
        &ep,
        "--service",
        "echo",
        "--in-flight",
        "50",
    ]);
}

/// Runs `bosun args` with endless `line-N` input, reads the first reply and closes
/// stdout (`| head -1`): the client must exit 0 with nothing on stderr.
fn closed_stdout_ends_quietly(args: &[&str]) {
    let mut cmd = bosun(args);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn client");
    let mut stdin = child.stdin.take().expect("stdin");
    // Far more lines than the reader wants; the writer stops when the client does.
    let writer = std::thread::spawn(move || {
        for i in 0..100_000 {
            if writeln!(stdin, "line-{i}").is_err() {
                return;
            }
        }
    });
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 7];
    stdout.read_exact(&mut first).expect("the first reply");
    assert_eq!(&first, b"line-0\n");
    drop(stdout); // `| head -1`
    let mut err = child.stderr.take().expect("stderr");
    let mut status = None;
    let exited = wait_until(SECS_10, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the client kept going after its stdout was closed");
    }
    let mut stderr = String::new();
    let _ = err.read_to_string(&mut stderr);
    let _ = writer.join();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr: {stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    assert!(stderr.is_empty(), "quiet: {stderr}");
}

// ------------------------------------------ values that stop all traffic (P2 7)

#[test]
fn counts_that_would_stop_all_traffic_are_refused_naming_the_flag() {
    for (args, flag) in [
        (
            vec!["client", "--service", "echo", "--in-flight", "0"],
            "--in-flight",
        ),
        (vec!["server", "--fail-every", "0"], "--fail-every"),
        (vec!["server", "--delay-every", "0"], "--delay-every"),
        (vec!["server", "--crash-after", "0"], "--crash-after"),
    ] {
        let mut args = args;
        if args[0] == "server" {
            args.extend(["--bind", "tcp://127.0.0.1:*"]);
        }
        let out = run(&args, &[], SECS_10);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}: {out:?}");
        assert!(
            out.stderr
                .iter()
                .any(|l| l.contains(flag) && l.contains("at least 1")),
            "{args:?} names {flag}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "nothing started: {out:?}");
    }
}

// ------------------------------------------ flags of the wrong mode (P2 18)

#[test]
fn flags_of_another_mode_and_empty_service_names_are_refused() {
    let ep = nowhere();
    // (arguments, environment, what the refusal must name)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["client", "--in-flight", "4", "--request", "x"],
            vec![],
            "--service",
        ),
        (
            vec!["client", "--service", "", "--request", "x"],
            vec![],
            "--service",
        ),
        (
            vec!["client", "--request", "x"],
            vec![("BOSUN_SERVICE", "")],
            "BOSUN_SERVICE",
        ),
        (
            vec![
                "client",
                "--service",
                "echo",
                "--freelance",
                "--request",
                "x",
            ],
            vec![],
            "--freelance",
        ),
        (
            vec!["server", "--freelance", "--fail-every", "2"],
            vec![],
            "--fail-every",
        ),
        (
            vec!["server", "--freelance", "--delay-every", "2"],
            vec![],
            "--delay-every",
        ),
        (
            vec!["server", "--freelance", "--crash-after", "2"],
            vec![],
            "--crash-after",
        ),
        (vec!["server", "--delay", "1s"], vec![], "--delay-every"),
    ];
    for (mut args, env, named) in cases {
        match args[0] {
            "server" => args.extend(["--bind", "tcp://127.0.0.1:*"]),
            _ => args.extend(["--connect", &ep]),
        }
        let out = run(&args, &env, SECS_10);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?} {env:?}: {out:?}");
        assert!(
            out.stderr.iter().any(|l| l.contains(named)),
            "{args:?} {env:?} names {named}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

// ------------------------------------------------ messages that mislead (P2 17)

#[test]
fn a_zero_initial_backoff_names_backoff_initial_and_a_bad_variable_is_named() {
    let ep = nowhere();
    let out = run(
        &[
            "client",
            "--backoff-initial",
            "0s",
            "--connect",
            &ep,
            "--request",
            "x",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(USAGE), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("--backoff-initial") && !l.contains("--backoff-max")),
        "{out:?}"
    );
    let out = run(
        &["client", "--connect", &ep, "--request", "x"],
        &[("BOSUN_TIMEOUT", "abc")],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(USAGE), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("BOSUN_TIMEOUT=abc") && l.contains("--timeout")),
        "{out:?}"
    );
    // A flag on the command line is not blamed on the environment.
    let out = run(
        &[
            "client",
            "--timeout",
            "abc",
            "--connect",
            &ep,
            "--request",
            "x",
        ],
        &[("BOSUN_TIMEOUT", "1s")],
        SECS_10,
    );
    assert!(
        !out.stderr.iter().any(|l| l.contains("BOSUN_TIMEOUT")),
        "{out:?}"
    );
}

#[test]
fn a_lazy_pirate_client_aimed_at_a_broker_is_told_so() {
    let (_b, ep) = start_broker(
        "broker",
        &mut bosun(&["broker", "--bind", "tcp://127.0.0.1:*"]),
    );
    let out = run(
        &[
            "client",
            "--connect",
            &ep,
            "--request",
            "x",
            "--timeout",
            "300ms",
            "--retries",
            "1",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert_eq!(out.stderr.len(), 1, "{out:?}");
    assert!(
        out.stderr[0].contains("a Majordomo broker answers there")
            && out.stderr[0].contains("--service"),
        "{out:?}"
    );
}

#[test]
fn a_service_with_no_worker_is_told_apart_from_a_dead_broker() {
    let (_b, ep) = start_broker(
        "broker",
        &mut bosun(&["broker", "--bind", "tcp://127.0.0.1:*"]),
    );
    let args = |ep: &str| {
        run(
            &[
                "client",
                "--connect",
                ep,
                "--service",
                "nobody",
                "--request",
                "x",
                "--timeout",
                "300ms",
                "--retries",
                "1",
            ],
            &[],
            SECS_10,
        )
    };
    let out = args(&ep);
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("the broker answered: no worker for service \"nobody\"")),
        "{out:?}"
    );
    let out = args(&nowhere());
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert!(
        out.stderr.iter().any(|l| l.contains("no broker answered")),
        "{out:?}"
    );
    // A request cut short by its own --deadline: the broker is still found (the probe
    // has a budget of its own), and the hint names the deadline.
    let mut worker = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &ep,
            "--service",
            "slow",
            "--delay",
            "2s",
        ]),
    );
    let asked = wait_until(SECS_10, || {
        run(
            &[
                "client",
                "--connect",
                &ep,
                "--service",
                "mmi.service",
                "--request",
                "slow",
            ],
            &[],
            SECS_10,
        )
        .stdout
            == ["200"]
    });
    assert!(asked, "the worker registers");
    let out = run(
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "slow",
            "--request",
            "x",
            "--timeout",
            "5s",
            "--deadline",
            "300ms",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("has a worker for service \"slow\"")
                && l.contains("try a longer --deadline or --timeout")),
        "{out:?}"
    );
    worker.kill_group();
}

// --------------------------------------------------------- the demo (P2 15)

#[test]
fn the_demo_stops_within_half_a_second_on_ctrl_c_with_consistent_counts() {
    let mut demo = Proc::spawn("demo", &mut bosun(&["demo"]));
    demo.expect_stdout("demo: SIGKILLed worker", Duration::from_secs(30));
    let sent = now();
    // As a terminal's Ctrl-C: the whole process group.
    // SAFETY: kill(2) on our own child's process group (see `bosun()`).
    unsafe {
        libc::kill(-demo.pid(), libc::SIGINT);
    }
    let status = demo.expect_exit(Duration::from_secs(5));
    let took = now() - sent;
    demo.drain(Duration::from_secs(2));
    let out = demo.stdout.texts();
    assert!(took <= ms(500), "stopped after {took:?}\n{out:#?}");
    assert_eq!(status.code(), Some(SIGINT_CODE), "{out:#?}");
    let last = out
        .iter()
        .find(|l| l.starts_with("demo: interrupted: "))
        .unwrap_or_else(|| panic!("no interrupted line: {out:#?}"));
    let num = |key: &str| -> u64 {
        last.split(", ")
            .find_map(|p| {
                p.trim_start_matches("demo: interrupted: ")
                    .strip_prefix(key)
            })
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in {last}"))
    };
    let (written, answered, unanswered) = (num("written "), num("answered "), num("unanswered "));
    assert_eq!(written, answered + unanswered, "{last}");
    assert!(
        !out.iter().any(|l| l.contains(" lost ")),
        "nothing is called lost: {out:#?}"
    );
    if let Some(summary) = out
        .iter()
        .find_map(|l| l.strip_prefix("demo: ").and_then(parse_summary))
    {
        assert_eq!(
            summary.answered, answered,
            "the client's count and the demo's: {out:#?}"
        );
    }
}

// ------------------------------------------------ P1 2, 5, 6 regressions

#[test]
fn every_line_is_sent_and_every_reply_printed_byte_exact() {
    let input = b"ok1\ncaf\xe9\nok2\n".to_vec();
    let (_s, ep) = echo_server();
    let out = run_bytes(
        &["client", "--connect", &ep, "--summary"],
        &[],
        input.clone(),
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, input, "{}", out.stderr);
    assert!(out.stderr.contains("sent 3, answered 3"), "{}", out.stderr);

    let (_b, _w, ep) = broker_and_worker(None);
    let out = run_bytes(
        &["client", "--connect", &ep, "--service", "echo"],
        &[],
        input.clone(),
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, input, "{}", out.stderr);
}

#[test]
fn a_request_over_64_mib_is_refused_at_once_in_one_sentence() {
    let (_s, ep) = echo_server();
    let mut input = vec![b'y'; 64 * 1024 * 1024 + 1];
    input.extend_from_slice(b"\nsmall\n");
    let out = run_bytes(
        &[
            "client",
            "--connect",
            &ep,
            "--timeout",
            "5s",
            "--retries",
            "3",
        ],
        &[],
        input,
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(DATA), "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one sentence: {lines:?}");
    assert!(
        lines[0].starts_with("bosun client: line 1: ") && lines[0].contains("exceeds the limit"),
        "{lines:?}"
    );
    assert!(
        !out.stderr.contains("attempt"),
        "never sent, never retried: {lines:?}"
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "at once, not after a timeout: {:?}",
        out.elapsed
    );
    // The next line is still sent.
    assert_eq!(out.stdout, b"small\n");
}

#[test]
fn overflowing_durations_are_refused_at_parse_time_with_exit_64() {
    let ep = nowhere();
    for (args, flag) in [
        (
            vec![
                "client",
                "--timeout",
                "10000000000000000000s",
                "--connect",
                &ep,
                "--request",
                "x",
            ],
            "--timeout",
        ),
        (
            vec![
                "worker",
                "--heartbeat-interval",
                "18446744073709551615s",
                "--connect",
                &ep,
            ],
            "--heartbeat-interval",
        ),
        (
            vec![
                "broker",
                "--request-ttl",
                "18446744073709551615s",
                "--bind",
                "tcp://127.0.0.1:*",
            ],
            "--request-ttl",
        ),
    ] {
        let out = run(&args, &[], SECS_10);
        assert_eq!(out.status.code(), Some(USAGE), "{args:?}: {out:?}");
        assert!(
            out.stderr.iter().any(|l| l.contains(flag)),
            "{args:?}: {out:?}"
        );
        assert!(
            !out.stderr.iter().any(|l| l.contains("panicked")),
            "{out:?}"
        );
        assert!(out.stdout.is_empty(), "nothing started: {out:?}");
    }
}

// ----------------------------------------------- machine-readable output

#[test]
fn client_json_is_one_object_per_request_that_a_json_parser_reads() {
    let (_b, _w, ep) = broker_and_worker(None);
    // NUL-framed requests, so one may hold a newline, quotes, a backslash, a tab, a
    // control character and non-ASCII text; one is not UTF-8 at all.
    let input = b"plain\0with \"quotes\" \\ and\ttab\x01\nline two \xc3\xa9\0caf\xe9\0".to_vec();
    let out = run_bytes(
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "echo",
            "--json",
            "--null",
        ],
        &[],
        input,
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let text = String::from_utf8(out.stdout).expect("JSON output is UTF-8");
    assert_eq!(text.lines().count(), 3, "{text}");
    let parsed = python_json(&text);
    assert!(parsed[0].contains(r#""encoding": "utf8""#), "{parsed:?}");
    assert!(
        parsed[0].contains(r#""id": 1"#) && parsed[0].contains(r#""payload": "plain""#),
        "{parsed:?}"
    );
    assert!(
        parsed[0].contains(r#""service": "echo""#) && parsed[0].contains(r#""status": "ok""#),
        "{parsed:?}"
    );
    assert!(
        parsed[0].contains(r#""attempt": 1"#) && parsed[0].contains(r#""rtt_ms": "#),
        "{parsed:?}"
    );
    assert!(
        parsed[1].contains(r#""payload": "with \"quotes\" \\ and\ttab\u0001\nline two \u00e9""#),
        "escapes round-trip: {parsed:?}"
    );
    assert!(
        parsed[2].contains(r#""encoding": "base64""#)
            && parsed[2].contains(r#""payload": "Y2Fm6Q==""#),
        "{parsed:?}"
    );

    // A failure is an object too, with its status and error.
    let out = run(
        &[
            "client",
            "--connect",
            &nowhere(),
            "--request",
            "x",
            "--json",
            "--timeout",
            "200ms",
            "--retries",
            "1",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{out:?}");
    let parsed = python_json(&(out.stdout.join("\n") + "\n"));
    assert_eq!(parsed.len(), 1, "{out:?}");
    assert!(
        parsed[0].contains(r#""status": "no_reply""#) && parsed[0].contains(r#""error": "#),
        "{parsed:?}"
    );
    assert!(parsed[0].contains(r#""service": null"#), "{parsed:?}");
}

#[test]
fn client_null_frames_requests_and_replies_with_nul() {
    let (_s, ep) = echo_server();
    let input = b"a\nb\0c\0".to_vec();
    let out = run_bytes(
        &["client", "--connect", &ep, "--null"],
        &[],
        input.clone(),
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, input, "a newline inside a request survives");
}

#[test]
fn stats_json_parses_and_watch_repeats_until_ctrl_c_then_exits_0() {
    let (_b, _w, ep) = broker_and_worker(None);
    let out = run(&["stats", "--connect", &ep, "--json"], &[], SECS_10);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let parsed = python_json(&(out.stdout.join("\n") + "\n"));
    assert_eq!(parsed.len(), 1, "{out:?}");
    assert!(parsed[0].contains(r#""service": "echo""#), "{parsed:?}");
    assert!(
        parsed[0].contains(r#""idle": 1"#),
        "numbers are numbers: {parsed:?}"
    );

    let mut watch = Proc::spawn(
        "stats --watch",
        &mut bosun(&["stats", "--connect", &ep, "--json", "--watch", "100ms"]),
    );
    let n = watch
        .stdout
        .wait_count(deadline(SECS_10), 3, |l| l.starts_with(r#"{"broker":"#));
    assert_eq!(n, 3, "three reports: {}", watch.dump());
    watch.signal(libc::SIGINT);
    let status = watch.expect_exit(Duration::from_secs(2));
    assert_eq!(
        status.code(),
        Some(0),
        "Ctrl-C is how --watch ends: {}",
        watch.dump()
    );

    // A broker that does not answer is reported and asked again, not the end.
    let mut watch = Proc::spawn(
        "stats --watch nowhere",
        &mut bosun(&[
            "stats",
            "--connect",
            &nowhere(),
            "--watch",
            "50ms",
            "--timeout",
            "100ms",
            "--retries",
            "1",
        ]),
    );
    let n = watch.stderr.wait_count(deadline(SECS_10), 2, |l| {
        l.starts_with("bosun stats: no reply") && l.contains("asking again")
    });
    assert_eq!(n, 2, "{}", watch.dump());
    watch.signal(libc::SIGTERM);
    let status = watch.expect_exit(Duration::from_secs(2));
    assert_eq!(status.code(), Some(0), "{}", watch.dump());
}

/// With several requests in flight, `--json` says which attempt answered each reply
/// and tells a request the broker refused (a full queue: `refused`) from one whose
/// handler failed; the give-up of the queued ones makes the exit status 69. Catches: the
/// pipelined client reporting every refusal as a failed handler and no attempt.
#[test]
fn in_flight_json_names_the_attempt_and_tells_refusals_apart() {
    let (mut broker, ep) = start_broker(
        "broker",
        &mut bosun(&[
            "-v",
            "broker",
            "--bind",
            "tcp://127.0.0.1:*",
            "--max-queue",
            "2",
        ]),
    );
    let _w = Proc::spawn(
        "worker",
        &mut bosun(&["worker", "--connect", &ep, "--service", "echo"]),
    );
    broker.expect_stderr("worker ready", SECS_10, |l| l.contains("worker ready"));
    let json = |service: &str, input: &str| {
        run_bytes(
            &[
                "client",
                "--connect",
                &ep,
                "--service",
                service,
                "--in-flight",
                "4",
                "--json",
                "--timeout",
                "300ms",
                "--retries",
                "1",
            ],
            &[],
            input.as_bytes().to_vec(),
            SECS_15,
        )
    };
    let out = json("echo", "a\nb\n");
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let parsed = python_json(&String::from_utf8(out.stdout).expect("utf8"));
    assert_eq!(parsed.len(), 2, "{parsed:?}");
    assert!(
        parsed
            .iter()
            .all(|l| l.contains(r#""attempt": 1"#) && l.contains(r#""status": "ok""#)),
        "{parsed:?}"
    );

    // No worker for `nobody` and room for two: lines 1 and 2 wait (and time out),
    // the four others are refused at once.
    let out = json("nobody", "1\n2\n3\n4\n5\n6\n");
    let parsed = python_json(&String::from_utf8(out.stdout).expect("utf8"));
    let refused = parsed
        .iter()
        .filter(|l| l.contains(r#""status": "refused""#))
        .count();
    assert_eq!(refused, 4, "{parsed:?}\n{}", out.stderr);
    assert!(
        !parsed.iter().any(|l| l.contains(r#""status": "failed""#)),
        "a refusal is not a failed handler: {parsed:?}"
    );
    assert_eq!(out.status.code(), Some(UNAVAILABLE), "{}", out.stderr);
}

/// `-vv` shows every request: the client logs each send and each reply (Lazy Pirate
/// and Majordomo), the server each request it handles. Catches: clients and servers
/// that said nothing per request even at the most verbose level.
#[test]
fn clients_and_servers_log_each_request_at_debug_level() {
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["-vv", "server", "--bind", "tcp://127.0.0.1:*"]),
    );
    let line = server.expect_stdout("server bound=", SECS_10);
    let ep = field(&line, "bound").expect("bound=");
    let out = run(
        &["-vv", "client", "--connect", &ep, "--request", "hi"],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let logged = |needle: &str| out.stderr.iter().filter(|l| l.contains(needle)).count();
    assert_eq!((logged("request sent"), logged("reply")), (1, 1), "{out:?}");
    server.expect_stderr("the server's request line", SECS_10, |l| {
        l.contains("request") && l.contains("attempt=1")
    });

    let (_b, _w, ep) = broker_and_worker(None);
    let out = run(
        &[
            "-vv",
            "client",
            "--connect",
            &ep,
            "--service",
            "echo",
            "--request",
            "hi",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let logged = |needle: &str| out.stderr.iter().filter(|l| l.contains(needle)).count();
    assert!(
        logged("request sent") >= 1 && logged(" reply") >= 1,
        "{out:?}"
    );
}

/// `demo --requests 3` (the least it takes) runs every stage and finishes; 2 is refused
/// (there would be no request in flight for the broker's kill), as is a zero deadline.
/// Catches: a demo of 2 or 3 requests that waited for its deadline and then reported a
/// request it never sent as lost.
#[test]
fn the_smallest_demo_finishes_and_smaller_ones_are_refused() {
    let out = run(
        &["demo", "--requests", "3", "--work", "10ms"],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .iter()
            .any(|l| l.contains("sent 3, answered 3, lost 0, duplicates 0")
                && l.contains("broker restarts 1")),
        "{out:?}"
    );
    for bad in [
        vec!["demo", "--requests", "2"],
        vec!["demo", "--deadline", "0s"],
    ] {
        let out = run(&bad, &[], SECS_10);
        assert_eq!(out.status.code(), Some(USAGE), "{bad:?}: {out:?}");
    }
}

/// A read error on stdin (here stdin is a directory) is an I/O error, exit 74, with
/// the reason on stderr. Catches: a read error taken for the end of input, exit 0.
#[test]
fn a_stdin_read_error_exits_74() {
    let (_s, ep) = echo_server();
    let dir = std::env::temp_dir();
    let out = bosun(&["client", "--connect", &ep])
        .stdin(std::fs::File::open(&dir).expect("open the temp dir"))
        .output()
        .expect("run bosun client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("reading stdin"), "{stderr}");
}

/// Ctrl-C ends a simulated stall (`server --delay-every`) at once: the server exits 0
/// well before the stall would have ended. Catches: a stall slept out in full.
#[test]
fn ctrl_c_ends_a_servers_simulated_stall_at_once() {
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&[
            "-v",
            "server",
            "--bind",
            "tcp://127.0.0.1:*",
            "--delay-every",
            "1",
            "--delay",
            "20s",
        ]),
    );
    let line = server.expect_stdout("server bound=", SECS_10);
    let ep = field(&line, "bound").expect("bound=");
    let _client = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            &ep,
            "--request",
            "x",
            "--timeout",
            "30s",
        ],
    );
    server.expect_stderr("the stall", SECS_10, |l| l.contains("simulating a stall"));
    let asked = now();
    server.signal(libc::SIGINT);
    let status = server.expect_exit(SECS_10);
    assert!(
        now() - asked < Duration::from_secs(1),
        "took {:?}",
        now() - asked
    );
    assert_eq!(status.code(), Some(0));
}

/// `--deadline` bounds a request whatever `--retries` says, in every client mode (Lazy
/// Pirate, Majordomo, Freelance: one retry policy); zero is refused. Catches: a flag
/// that only some clients honour.
#[test]
fn deadline_bounds_every_client_whatever_the_retries() {
    let ep = nowhere();
    for mode in [vec![], vec!["--service", "echo"], vec!["--freelance"]] {
        let mut args = vec![
            "client",
            "--connect",
            &ep,
            "--request",
            "x",
            "--timeout",
            "400ms",
            "--retries",
            "50",
            "--deadline",
            "1s",
        ];
        args.extend(mode.iter().copied());
        let out = run(&args, &[], Duration::from_secs(20));
        assert_eq!(out.status.code(), Some(UNAVAILABLE), "{mode:?}: {out:?}");
        // 1 s of budget, and up to a second asking what answers there.
        assert!(
            out.elapsed < Duration::from_millis(3500),
            "{mode:?}: {out:?}"
        );
    }
    let out = run(
        &["client", "--deadline", "0s", "--request", "x"],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(USAGE), "{out:?}");
    assert!(
        out.stderr.iter().any(|l| l.contains("--deadline")),
        "{out:?}"
    );
}
