//! Durability across the Majordomo broker, with real processes: a broker SIGKILLed
//! while it holds queued requests loses none of them and has none of them run twice;
//! a request whose client gave up is never run by a worker that appears afterwards.
//!
//! Counts: requests sent (input lines), replies printed (by payload), and handler runs
//! (the worker's `--exec` appends each body to a file).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    bosun, counting_exec, handler_runs, json_str, run, spawn_piped, start_broker, wait_queued,
    Proc, TempDir,
};

const SECS_10: Duration = Duration::from_secs(10);
const SECS_30: Duration = Duration::from_secs(30);
const HB: [&str; 4] = ["--heartbeat-interval", "100ms", "--heartbeat-liveness", "5"];

fn broker(bind: &str) -> (Proc, String) {
    let mut args = vec!["-vv", "broker", "--bind", bind];
    args.extend(HB);
    start_broker("broker", &mut bosun(&args))
}

/// A worker of `service` that counts its handler runs in `runs`, with a dedup window
/// in `data`.
fn counting_worker(name: &str, ep: &str, service: &str, runs: &str, data: &str) -> Proc {
    let exec = counting_exec(std::path::Path::new(runs));
    let mut args = vec![
        "-v",
        "worker",
        "--connect",
        ep,
        "--service",
        service,
        "--exec",
        &exec,
        "--data-dir",
        data,
        "--reconnect-initial",
        "100ms",
        "--reconnect-max",
        "400ms",
    ];
    args.extend(HB);
    Proc::spawn(name, &mut bosun(&args))
}

/// The replies printed by a `--json` client, counted by payload; every one is ok.
fn replies(client: &Proc) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in client.stdout.texts() {
        assert!(line.contains(r#""status":"ok""#), "not ok: {line}");
        let payload = json_str(&line, "payload").expect("payload");
        *out.entry(payload.to_string()).or_insert(0) += 1;
    }
    out
}

/// Majordomo: a pipelined client has N requests queued at a broker with no worker for
/// their service; the broker is SIGKILLed (its queue lost with it) and restarted on the
/// same port, then a worker starts. Every request is answered exactly once and every
/// handler ran exactly once. Catches: requests lost with the broker (a client that does
/// not retry after the broker's death), a retry queued beside its first copy and run
/// twice, or a reply printed twice.
#[test]
fn a_broker_killed_with_requests_queued_loses_none_and_runs_none_twice() {
    const N: usize = 10;
    let dir = TempDir::new("durability-broker");
    let runs = dir.file("runs");
    let (mut first, ep) = broker("tcp://127.0.0.1:*");
    let n = N.to_string();
    let client_data = dir.file("client");
    let mut client = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "jobs",
            "--in-flight",
            &n,
            "--timeout",
            "1s",
            "--retries",
            "20",
            "--backoff-initial",
            "50ms",
            "--backoff-max",
            "200ms",
            "--json",
            "--data-dir",
            &client_data,
        ],
    );
    client.write_stdin(&common::request_lines(N));
    client.close_stdin();
    wait_queued(&ep, "jobs", N);
    first.kill();
    assert!(first.wait_exit(SECS_10).is_some(), "the broker is gone");

    let (mut second, ep2) = broker(&ep);
    assert_eq!(ep2, ep, "restarted on the same port");
    let mut worker = counting_worker("worker", &ep, "jobs", &runs, &dir.file("worker"));
    second.expect_stderr("the worker", SECS_10, |l| l.contains("worker ready"));

    let status = client.expect_done(SECS_30);
    assert!(status.success(), "{status}\n{}", client.dump());
    let want: BTreeMap<String, usize> = (1..=N).map(|i| (format!("req-{i}"), 1)).collect();
    assert_eq!(
        replies(&client),
        want,
        "each answered once\n{}",
        client.dump()
    );
    assert_eq!(
        handler_runs(std::path::Path::new(&runs)),
        want,
        "each handled once\n{}",
        second.dump()
    );
    worker.kill_group();
}

/// Majordomo: a client gives up on a request for a service with no worker (exit 69);
/// then a worker appears. The request is never run: it carried its client's deadline,
/// and the broker dropped it once that passed. A second request sent after the worker
/// is ready is answered (the queue is in order, so the first would have gone first).
/// Catches: a broker that keeps a request nobody waits for and hands it to the next
/// worker (work for nobody, and a second run if the client's application re-sends).
#[test]
fn a_request_given_up_on_is_not_run_when_a_worker_appears_later() {
    let dir = TempDir::new("durability-gave-up");
    let runs = dir.file("runs");
    let (mut broker, ep) = broker("tcp://127.0.0.1:*");
    let ask = |body: &str, timeout: &str| {
        run(
            &[
                "client",
                "--connect",
                &ep,
                "--service",
                "jobs",
                "--request",
                body,
                "--timeout",
                timeout,
                "--retries",
                "2",
            ],
            &[],
            SECS_30,
        )
    };
    let gave_up = ask("abandoned", "300ms");
    assert_eq!(gave_up.status.code(), Some(69), "{gave_up:?}");
    broker.expect_stderr("the abandoned request dropped", SECS_10, |l| {
        l.contains("request dropped") && l.contains("DeadlinePassed")
    });

    let mut worker = counting_worker("worker", &ep, "jobs", &runs, &dir.file("worker"));
    broker.expect_stderr("the worker", SECS_10, |l| l.contains("worker ready"));
    let answered = ask("wanted", "5s");
    assert_eq!(answered.status.code(), Some(0), "{answered:?}");
    assert_eq!(answered.stdout, ["wanted"]);
    let ran = handler_runs(std::path::Path::new(&runs));
    assert_eq!(
        ran,
        [("wanted".to_string(), 1)].into_iter().collect(),
        "the abandoned request never ran\n{}",
        broker.dump()
    );
    // And nothing of it is left at the broker.
    wait_queued(&ep, "jobs", 0);
    worker.kill_group();
}

/// A Lazy Pirate request left pending in a data dir (the client was interrupted before
/// any server answered) is not handed to a Majordomo client started on the same dir:
/// that one refuses to start (exit 64, naming the dir and the kind), nothing is sent
/// or removed, and a Lazy Pirate client later delivers it. Catches: a recovered
/// request re-sent by the wrong kind of client (to a broker, as an empty service it
/// refuses) and dropped from the outbox.
#[test]
fn a_pending_request_is_kept_from_a_client_of_another_kind() {
    let dir = TempDir::new("durability-kind");
    let data = dir.file("client");
    let port = common::free_port();
    let direct = format!("tcp://127.0.0.1:{port}");
    let lp = [
        "-vv",
        "client",
        "--connect",
        direct.as_str(),
        "--timeout",
        "30s",
        "--data-dir",
        data.as_str(),
    ];
    let mut first = spawn_piped("client 1", &lp);
    first.write_stdin("pending-1\n");
    first.expect_stderr("the request sent", SECS_10, |l| l.contains("request sent"));
    first.signal(libc::SIGINT);
    assert_eq!(
        first.expect_exit(SECS_10).code(),
        Some(130),
        "{}",
        first.dump()
    );

    let (_broker, ep) = broker("tcp://127.0.0.1:*");
    let md = run(
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "echo",
            "--request",
            "new",
            "--data-dir",
            &data,
        ],
        &[],
        SECS_10,
    );
    assert_eq!(md.status.code(), Some(64), "{md:?}");
    let said = md.stderr.join("\n");
    assert!(
        said.contains(&data)
            && said.contains("made without a service")
            && said.contains("1 pending"),
        "{said}"
    );

    // The request is still there: a Lazy Pirate client with a server delivers it.
    let mut server = Proc::spawn("server", &mut bosun(&["server", "--bind", &direct]));
    let second = run(
        &[
            "client",
            "--connect",
            &direct,
            "--timeout",
            "5s",
            "--data-dir",
            &data,
        ],
        &[],
        SECS_30,
    );
    assert_eq!(second.status.code(), Some(0), "{second:?}");
    assert!(
        second
            .stderr
            .iter()
            .any(|l| l.contains("recovered request") && l.ends_with("answered")),
        "{second:?}"
    );
    assert_eq!(second.stdout, ["pending-1"], "{second:?}");
    server.kill_group();
}

/// Requests the broker refuses (its queue for the service is full) are not lost from
/// the outbox: each is kept as a dead letter with reason `refused` and the broker's
/// message, for `bosun dlq replay`; the one it queued (and nobody served) is dead-lettered
/// as given up. Catches: a refusal treated as an answer and dropped from the outbox.
#[test]
fn refused_requests_are_kept_as_dead_letters() {
    let dir = TempDir::new("durability-refused");
    let data = dir.file("client");
    let mut args = vec![
        "-v",
        "broker",
        "--bind",
        "tcp://127.0.0.1:*",
        "--max-queue",
        "1",
    ];
    args.extend(HB);
    let (_broker, ep) = start_broker("broker", &mut bosun(&args));
    let mut client = spawn_piped(
        "client",
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "jobs",
            "--in-flight",
            "3",
            "--timeout",
            "500ms",
            "--retries",
            "1",
            "--data-dir",
            &data,
        ],
    );
    client.write_stdin("a\nb\nc\n");
    client.close_stdin();
    let status = client.expect_done(SECS_30);
    assert!(!status.success(), "{}", client.dump());
    let out = run(
        &["dlq", "list", "--json", "--data-dir", &data],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reasons: BTreeMap<String, usize> = out.stdout.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(json_str(l, "reason").expect("reason").to_string())
            .or_insert(0) += 1;
        m
    });
    let want: BTreeMap<String, usize> = [("gave-up".to_string(), 1), ("refused".to_string(), 2)]
        .into_iter()
        .collect();
    assert_eq!(reasons, want, "{out:?}\n{}", client.dump());
    assert!(
        out.stdout
            .iter()
            .filter(|l| l.contains("\"reason\":\"refused\""))
            .all(|l| l.contains("queue")),
        "the broker's message is kept: {out:?}"
    );
}
