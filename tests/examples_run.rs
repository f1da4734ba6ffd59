//! The examples of the library API run as real processes: the Majordomo broker, worker
//! and client, and the Freelance server and client, each on a port the system chose,
//! each stopped with Ctrl-C (SIGINT). The examples are built by `cargo build
//! --examples` from here (bounded), so this test checks what a user runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{command, Proc};

const SECS_10: Duration = Duration::from_secs(10);
/// Long enough for every request of a client example with its default retry settings
/// (2.5 s per attempt), on a loaded machine.
const CLIENT_DONE: Duration = Duration::from_secs(30);
/// How long a server, broker or worker example may take to stop on Ctrl-C. They check
/// their flag every 100 ms; a worker also flushes its DISCONNECT (200 ms linger).
const STOPS_WITHIN: Duration = Duration::from_secs(3);
/// `cargo build --examples` on a busy 2-core machine, the library included.
const BUILD_WITHIN: Duration = Duration::from_secs(20 * 60);

/// The directory of the built examples (`target/<profile>/examples`), built once per
/// run of this test binary.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This binary is target/<profile>/deps/examples_run-<hash>.
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = command(&cargo);
        cmd.args(["build", "--examples", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let mut build = Proc::spawn("cargo build --examples", &mut cmd);
        let status = build.expect_done(BUILD_WITHIN);
        assert!(status.success(), "{}", build.dump());
        profile_dir.join("examples")
    })
}

/// An example program with its arguments, logging only warnings.
fn example(name: &str, args: &[&str]) -> Command {
    let path = examples_dir().join(name);
    assert!(path.exists(), "{} was not built", path.display());
    let mut cmd = command(path.to_str().expect("utf-8 path"));
    cmd.args(args).env("RUST_LOG", "warn").env("NO_COLOR", "1");
    cmd
}

/// Starts an example that binds, waits for its `<who>: listening on <endpoint>` line,
/// and returns it with the endpoint.
fn start_bound(name: &str, who: &str) -> (Proc, String) {
    let mut p = Proc::spawn(name, &mut example(name, &["tcp://127.0.0.1:*"]));
    let prefix = format!("{who}: listening on ");
    let line = p.expect_stdout(&prefix, SECS_10);
    let endpoint = line[prefix.len()..]
        .split_whitespace()
        .next()
        .expect("an endpoint after `listening on`")
        .to_string();
    assert!(
        endpoint.starts_with("tcp://127.0.0.1:") && !endpoint.ends_with('*'),
        "{line}"
    );
    (p, endpoint)
}

/// Ctrl-C on a long-running example: it exits 0 soon, having printed `stopped`.
fn interrupt(p: &mut Proc, stopped: &str) -> Vec<String> {
    p.signal(libc::SIGINT);
    let status = p.expect_done(STOPS_WITHIN);
    assert!(status.success(), "{status}\n{}", p.dump());
    let out = p.stdout.texts();
    assert!(
        out.iter().any(|l| l.starts_with(stopped)),
        "no {stopped:?} line\n{}",
        p.dump()
    );
    out
}

/// A client run to completion: its stdout, after checking that it exited 0.
fn finish_ok(mut p: Proc) -> Vec<String> {
    let status = p.expect_done(CLIENT_DONE);
    assert!(status.success(), "{status}\n{}", p.dump());
    p.stdout.texts()
}

#[test]
fn majordomo_broker_worker_and_client_run_and_a_failing_handler_reaches_the_client() {
    let (mut broker, endpoint) = start_bound("majordomo_broker", "broker");

    // A client with no worker for its service waits (its request is held by the
    // broker) and stops at once on Ctrl-C.
    let mut early = Proc::spawn(
        "early client",
        &mut example("majordomo_client", &[&endpoint]),
    );
    early.expect_stdout("client: sending [\"hello\"]", SECS_10);
    early.signal(libc::SIGINT);
    let status = early.expect_done(STOPS_WITHIN);
    assert!(status.success(), "{status}\n{}", early.dump());
    assert!(
        early
            .stdout
            .texts()
            .iter()
            .any(|l| l == "client: interrupted"),
        "{}",
        early.dump()
    );

    let mut worker = Proc::spawn(
        "majordomo_worker",
        &mut example("majordomo_worker", &[&endpoint]),
    );
    worker.expect_stdout("worker: serving \"echo\"", SECS_10);

    let client = Proc::spawn(
        "majordomo_client",
        &mut example("majordomo_client", &[&endpoint]),
    );
    let out = finish_ok(client);
    let has = |want: &str| out.iter().any(|l| l == want);
    assert!(has("client: reply to [\"hello\"]: [\"HELLO\"]"), "{out:#?}");
    assert!(
        has("client: reply to [\"two\", \"frames\"]: [\"TWO\", \"FRAMES\"]"),
        "{out:#?}"
    );
    assert!(has("client: reply to [\"bye\"]: [\"BYE\"]"), "{out:#?}");
    // The failing handler: a remote error naming the request and the handler's
    // message, not a reply; the client goes on with the next request.
    let failure = out
        .iter()
        .find(|l| l.starts_with("client: remote error for [\"fail\"]: "))
        .unwrap_or_else(|| panic!("no remote error for \"fail\": {out:#?}"));
    assert!(
        failure
            .ends_with("failed: the example worker fails every request whose payload is \"fail\""),
        "{failure}"
    );
    assert!(
        !out.iter()
            .any(|l| l.starts_with("client: reply to [\"fail\"]")),
        "{out:#?}"
    );
    assert!(
        out.last()
            .is_some_and(|l| l.starts_with("client: done: 3 replies, 1 failed remotely")),
        "{out:#?}"
    );
    let id = failure
        .split_whitespace()
        .skip_while(|w| *w != "request")
        .nth(1)
        .expect("the error names the request id");

    // The worker's handler saw the request context: the same id, the attempt, the
    // service, the headers and every payload frame.
    let worker_out = interrupt(&mut worker, "worker: stopped after ");
    // The early client's request may have reached the broker before its Ctrl-C; the
    // broker then handed it to the worker when it registered. Either way the worker
    // counts what it handled, the failed request included.
    let handled = worker_out
        .iter()
        .filter(|l| l.starts_with("worker: request id="))
        .count();
    assert!(handled >= 4, "{worker_out:#?}");
    assert!(
        worker_out
            .iter()
            .any(|l| l.starts_with(&format!("worker: stopped after {handled} requests"))),
        "{worker_out:#?}"
    );
    let saw = |want: &str| worker_out.iter().any(|l| l.contains(want));
    assert!(
        saw(&format!(
            "worker: request id={id} attempt=1 service=echo headers={{}} payload=[\"fail\"]"
        )),
        "{worker_out:#?}"
    );
    assert!(
        saw("attempt=1 service=echo headers={} payload=[\"two\", \"frames\"]"),
        "{worker_out:#?}"
    );
    assert!(
        saw(&format!("worker: failing request {id}")),
        "{worker_out:#?}"
    );

    interrupt(&mut broker, "broker: stopped");
}

#[test]
fn freelance_server_and_client_run() {
    let (mut a, ep_a) = start_bound("freelance_server", "freelance server");
    let (mut b, ep_b) = start_bound("freelance_server", "freelance server");

    let client = Proc::spawn(
        "freelance_client",
        &mut example("freelance_client", &[&ep_a, &ep_b]),
    );
    let out = finish_ok(client);
    for n in 1..=5 {
        let from_a = format!("freelance client: reply \"{ep_a}: request {n}\"");
        let from_b = format!("freelance client: reply \"{ep_b}: request {n}\"");
        assert!(
            out.iter().any(|l| *l == from_a || *l == from_b),
            "no reply to request {n}: {out:#?}"
        );
    }
    assert!(
        out.last()
            .is_some_and(|l| l.starts_with("freelance client: done: 5 replies")),
        "{out:#?}"
    );

    let answered = |out: &[String]| {
        out.iter()
            .filter(|l| l.starts_with("freelance server: answering"))
            .count()
    };
    let a_out = interrupt(&mut a, "freelance server: stopped");
    let b_out = interrupt(&mut b, "freelance server: stopped");
    assert!(
        answered(&a_out) + answered(&b_out) >= 5,
        "{a_out:#?}\n{b_out:#?}"
    );
}

#[test]
fn publisher_and_subscriber_examples_deliver_the_history_then_the_stream_in_order() {
    let mut publisher = Proc::spawn(
        "publisher",
        &mut example("publisher", &["tcp://127.0.0.1:*", "tcp://127.0.0.1:*"]),
    );
    let prefix = "publisher: listening on ";
    let line = publisher.expect_stdout(prefix, SECS_10);
    let words: Vec<&str> = line[prefix.len()..].split_whitespace().collect();
    let (endpoint, replay) = match words.as_slice() {
        [e, "replay", r, ..] => (e.to_string(), r.to_string()),
        _ => panic!("{line}"),
    };
    // Joins late: the ticks already published come from the replay endpoint.
    publisher.expect_stdout("publisher: published #3", SECS_10);
    let subscriber = Proc::spawn(
        "subscriber",
        &mut example("subscriber", &[&endpoint, &replay, "6"]),
    );
    let out = finish_ok(subscriber);
    let ticks: Vec<&String> = out
        .iter()
        .filter(|l| l.starts_with("subscriber: #"))
        .collect();
    let want: Vec<String> = (1..=6)
        .map(|n| format!("subscriber: #{n} \"tick {n}\""))
        .collect();
    assert_eq!(
        ticks.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        want.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "{out:#?}"
    );
    assert!(
        out.last()
            .is_some_and(|l| l == "subscriber: done: 6 messages"),
        "{out:#?}"
    );
    interrupt(&mut publisher, "publisher: stopped after ");
}
