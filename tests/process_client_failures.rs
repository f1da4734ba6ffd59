//! `bosun client` when some requests fail: a failed request is reported with its input
//! line and the others are still sent and printed, in order, one at a time and with
//! several in flight; the exit code is 1.

#![allow(clippy::disallowed_methods)] // real-process tests read the real clock

mod common;

use std::time::Duration;

use common::*;

const SECS_15: Duration = Duration::from_secs(15);
const HB: [&str; 4] = ["--heartbeat-interval", "1s", "--heartbeat-liveness", "5"];

/// A handler that fails line 2 (exit 7), holds line 1 for a moment (so that line 2's
/// failure arrives first when they run at once), and answers the others `ok-LINE`.
const PICKY: &str = r#"x=$(cat); if [ "$x" = 1 ]; then sleep 0.5; fi; if [ "$x" = 2 ]; then exit 7; fi; echo "ok-$x""#;

/// A broker and one worker of `capacity` running [`PICKY`] for service `picky`.
fn broker_and_picky_worker(capacity: &str) -> (Proc, Proc, String) {
    let mut args = vec!["-v", "broker", "--bind", "tcp://127.0.0.1:*"];
    args.extend(HB);
    let (mut b, ep) = start_broker("broker", &mut bosun(&args));
    let mut wargs = vec![
        "worker",
        "--connect",
        &ep,
        "--service",
        "picky",
        "--capacity",
        capacity,
        "--exec",
        PICKY,
    ];
    wargs.extend(HB);
    let w = Proc::spawn("worker", &mut bosun(&wargs));
    b.expect_stderr("worker ready", SECS_15, |l| l.contains("worker ready"));
    (b, w, ep)
}

/// Runs `bosun client --connect EP --service picky EXTRA --summary` with lines 1..=4
/// on stdin; returns its exit status, stdout lines and stderr lines.
fn client(ep: &str, extra: &[&str]) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
    let mut args = vec!["client", "--connect", ep, "--service", "picky", "--summary"];
    args.extend_from_slice(extra);
    let mut c = spawn_piped("client", &args);
    c.write_stdin("1\n2\n3\n4\n");
    c.close_stdin();
    let status = c.expect_done(SECS_15);
    (status, c.stdout.texts(), c.stderr.texts())
}

fn check(status: std::process::ExitStatus, stdout: &[String], stderr: &[String]) {
    assert_eq!(
        stdout,
        ["ok-1", "ok-3", "ok-4"],
        "every answered line printed, in order\nstderr:\n{}",
        stderr.join("\n")
    );
    let failures: Vec<&String> = stderr.iter().filter(|l| l.contains("line 2:")).collect();
    assert_eq!(failures.len(), 1, "line 2's failure named once: {stderr:?}");
    assert!(
        failures[0].contains("failed") && failures[0].contains("exit status: 7"),
        "{failures:?}"
    );
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("line 1:") || l.contains("line 3:") || l.contains("line 4:")),
        "only line 2 failed: {stderr:?}"
    );
    let summary = stderr
        .iter()
        .find_map(|l| parse_summary(l))
        .unwrap_or_else(|| panic!("no summary: {stderr:?}"));
    assert_eq!((summary.sent, summary.answered), (4, 3), "{summary:?}");
    assert_eq!(
        status.code(),
        Some(1),
        "a failed line makes the exit code 1"
    );
}

#[test]
fn one_at_a_time_a_failed_line_is_reported_and_the_rest_are_sent() {
    let (_b, _w, ep) = broker_and_picky_worker("1");
    let (status, stdout, stderr) = client(&ep, &[]);
    check(status, &stdout, &stderr);
}

#[test]
fn in_flight_a_failed_line_never_hides_the_replies_around_it() {
    // Lines 1..3 run at once; line 2 fails first, while line 1 is still running.
    let (_b, _w, ep) = broker_and_picky_worker("3");
    let (status, stdout, stderr) = client(&ep, &["--in-flight", "3"]);
    check(status, &stdout, &stderr);
}

#[test]
fn stats_against_a_peer_that_is_not_a_broker_says_so_and_fails() {
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["server", "--bind", "tcp://127.0.0.1:*"]),
    );
    let line = server.expect_stdout("server bound=", SECS_15);
    let ep = field(&line, "bound").expect("server line has bound=");
    let out = run(
        &[
            "stats",
            "--connect",
            &ep,
            "--timeout",
            "1s",
            "--retries",
            "1",
        ],
        &[],
        SECS_15,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(out.stdout.is_empty(), "no table for a non-broker: {out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("not a bosun broker") && l.contains(&ep)),
        "{out:?}"
    );
}

/// A handler that never answers line 2 (it sleeps far past the client's retry budget)
/// and answers the others `ok-LINE` at once. `exec` makes the sleep the command's own
/// process, which dies with the worker (the worker's commands get PR_SET_PDEATHSIG).
const STUCK_ON_2: &str = r#"x=$(cat); if [ "$x" = 2 ]; then exec sleep 30; fi; echo "ok-$x""#;

/// With several requests in flight, a give-up on one line does not throw away the
/// replies that arrived around it: they are printed, in input order, the line that
/// got no reply is named, and the exit status is 69 (unavailable). Catches: a give-up
/// that ended the batch and dropped what had already arrived.
#[test]
fn in_flight_a_give_up_prints_what_arrived_and_names_the_line() {
    let mut args = vec!["-v", "broker", "--bind", "tcp://127.0.0.1:*"];
    args.extend(HB);
    let (mut b, ep) = start_broker("broker", &mut bosun(&args));
    let mut wargs = vec![
        "worker",
        "--connect",
        &ep,
        "--service",
        "picky",
        "--capacity",
        "4",
        "--exec",
        STUCK_ON_2,
        "--exec-timeout",
        "60s",
    ];
    wargs.extend(HB);
    let mut w = Proc::spawn("worker", &mut bosun(&wargs));
    b.expect_stderr("worker ready", SECS_15, |l| l.contains("worker ready"));
    let (status, stdout, stderr) = client(
        &ep,
        &[
            "--in-flight",
            "3",
            "--timeout",
            "400ms",
            "--retries",
            "2",
            "--backoff-initial",
            "10ms",
            "--backoff-max",
            "10ms",
        ],
    );
    assert_eq!(
        stdout,
        ["ok-1", "ok-3", "ok-4"],
        "the replies around the give-up are printed, in order\nstderr:\n{}",
        stderr.join("\n")
    );
    let named: Vec<&String> = stderr.iter().filter(|l| l.contains("line 2:")).collect();
    assert_eq!(named.len(), 1, "line 2 named once: {stderr:?}");
    assert!(named[0].contains("no reply"), "{named:?}");
    assert_eq!(status.code(), Some(69), "a give-up exits 69: {stderr:?}");
    // SIGTERM: the worker kills the process groups of the commands still sleeping.
    w.signal(libc::SIGTERM);
    w.expect_exit(SECS_15);
}
