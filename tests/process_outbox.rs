//! The client outbox and its dead letters with real processes: a client SIGKILLed with
//! requests in flight and restarted on its data dir answers every one exactly once;
//! a request given up on is in `bosun dlq list`, `bosun dlq replay` answers it and takes
//! it out, `purge` empties the list; a data dir in use or full of garbage is refused
//! with a clear error naming it.
//!
//! Counts: requests sent (input lines), replies printed (by payload), handler runs (the
//! worker's `--exec` appends each body to a file), and dead letters listed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{
    bosun, counting_exec, free_port, handler_runs, json_str, run, spawn_piped, start_broker,
    start_queue, wait_queued, Proc, TempDir,
};

const SECS_10: Duration = Duration::from_secs(10);
const SECS_30: Duration = Duration::from_secs(30);

fn s(p: &Path) -> &str {
    common::path_str(p)
}

/// `{"req-1": 1, ...}`: each of `n` requests once.
fn each_once(n: usize) -> BTreeMap<String, usize> {
    (1..=n).map(|i| (format!("req-{i}"), 1)).collect()
}

/// The replies on stdout counted by payload, checking that each is a recovered request
/// answered ok.
fn recovered_replies(client: &Proc) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in client.stdout.texts() {
        assert!(
            line.contains(r#""recovered":true"#) && line.contains(r#""status":"ok""#),
            "not a recovered reply: {line}"
        );
        let id = json_str(&line, "id").expect("the id is the message id, a string");
        uuid::Uuid::parse_str(id).expect("a message id");
        let payload = json_str(&line, "payload").expect("payload");
        *out.entry(payload.to_string()).or_insert(0) += 1;
    }
    out
}

/// Majordomo, pipelined: a client with N requests in flight to a service whose worker
/// has not started yet is SIGKILLed; restarted on the same data dir with nothing on
/// stdin, it re-sends the N requests with their original ids (the broker joins each to
/// the copy it still holds), and once the worker runs, all N are answered, each printed
/// once, each handled once. Catches: requests lost with the process (no outbox, or one
/// flushed after the send), re-sent with new ids (the broker would queue them twice and
/// the handler run twice), or printed twice.
#[test]
fn a_killed_pipelined_client_recovers_every_request_once() {
    const N: usize = 8;
    let dir = TempDir::new("mdp");
    let data = dir.join("client");
    let runs = dir.join("runs");
    let (mut broker, ep) = start_broker(
        "broker",
        &mut bosun(&["-vv", "broker", "--bind", "tcp://127.0.0.1:*"]),
    );
    let args = [
        "-vv",
        "client",
        "--connect",
        ep.as_str(),
        "--service",
        "s",
        "--in-flight",
        "8",
        "--timeout",
        "30s",
        "--json",
        "--data-dir",
        s(&data),
    ];
    let mut first = spawn_piped("client 1", &args);
    first.write_stdin(&common::request_lines(N));
    // Every request is sent only once it is durable (batched): N sends, then the kill.
    let sent = first
        .stderr
        .wait_count(common::deadline(SECS_10), N, |l| l.contains("request sent"));
    assert_eq!(sent, N, "{}", first.dump());
    // Kill it once the broker holds them all (a send logged may still be in the
    // socket's queue): then the re-sends must be joined to them, not queued again.
    wait_queued(&ep, "s", N);
    first.kill_group();
    assert!(first.stdout.texts().is_empty(), "no reply before the kill");

    // Restarted with no input: it recovers the N requests first.
    let mut second = Proc::spawn("client 2", &mut bosun(&args));
    second.expect_stderr("the recovery line", SECS_10, |l| {
        l.contains(&format!("recovered: {N} pending re-sent, 0 dead letters"))
    });
    let joined = broker.stderr.wait_count(common::deadline(SECS_10), N, |l| {
        l.contains("retry joined to the request held")
    });
    assert_eq!(
        joined, N,
        "each re-send joined to the copy the broker holds"
    );

    let mut worker = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &ep,
            "--service",
            "s",
            "--exec",
            &counting_exec(&runs),
        ]),
    );
    let status = second.expect_done(SECS_30);
    assert!(status.success(), "{status}\n{}", second.dump());
    assert_eq!(
        recovered_replies(&second),
        each_once(N),
        "{}",
        second.dump()
    );
    assert_eq!(handler_runs(&runs), each_once(N), "each handled once");
    let told = second
        .stderr
        .texts()
        .iter()
        .filter(|l| l.contains("recovered request") && l.ends_with("answered"))
        .count();
    assert_eq!(told, N, "stderr names each recovered request");

    // Nothing is left: a third start recovers nothing.
    let third = run(&args, &[], SECS_10);
    assert_eq!(third.status.code(), Some(0), "{third:?}");
    assert!(third.stdout.is_empty(), "{third:?}");
    assert!(
        third
            .stderr
            .iter()
            .any(|l| l.contains("recovered: 0 pending re-sent")),
        "{third:?}"
    );
    worker.kill_group();
}

/// Lazy Pirate: a client whose one request is out when nothing listens yet is
/// SIGKILLed; restarted on its data dir once a queue and a worker run, it re-sends the
/// request with its original id and prints the reply once; the handler ran once.
/// Catches: a request that was accepted and then lost with the process.
#[test]
fn a_killed_lazy_pirate_client_recovers_its_request() {
    let dir = TempDir::new("lp");
    let data = dir.join("client");
    let runs = dir.join("runs");
    let port = free_port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let args = [
        "-vv",
        "client",
        "--connect",
        ep.as_str(),
        "--timeout",
        "30s",
        "--json",
        "--durability",
        "every",
        "--data-dir",
        s(&data),
    ];
    let mut first = spawn_piped("client 1", &args);
    first.write_stdin("req-1\nreq-2\n");
    first.expect_stderr("the first send", SECS_10, |l| l.contains("request sent"));
    first.kill_group();

    let (mut queue, _, backend) = start_queue(
        "queue",
        &mut bosun(&[
            "-v",
            "queue",
            "--frontend",
            &ep,
            "--backend",
            "tcp://127.0.0.1:*",
        ]),
    );
    let mut worker = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &backend,
            "--exec",
            &counting_exec(&runs),
        ]),
    );
    queue.expect_stderr("the worker's READY", SECS_10, |l| {
        l.contains("worker ready")
    });
    let mut second = Proc::spawn("client 2", &mut bosun(&args));
    let status = second.expect_done(SECS_30);
    assert!(status.success(), "{status}\n{}", second.dump());
    // Only the request that was sent came back: req-2 was never read from stdin.
    assert_eq!(
        recovered_replies(&second),
        each_once(1),
        "{}",
        second.dump()
    );
    assert_eq!(handler_runs(&runs), each_once(1));
    assert!(
        second
            .stderr
            .texts()
            .iter()
            .any(|l| l.contains("recovered: 1 pending re-sent, 0 dead letters")),
        "{}",
        second.dump()
    );
    worker.kill_group();
}

/// `dlq list --json` lines: (id, reason, attempts, service, error).
fn dead_letters(data: &Path) -> Vec<(String, String, String, Option<String>, String)> {
    let out = run(
        &["dlq", "list", "--json", "--data-dir", s(data)],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    out.stdout
        .iter()
        .map(|l| {
            let num = |key: &str| {
                let start = l.find(&format!("\"{key}\":")).expect(key) + key.len() + 3;
                l[start..]
                    .split([',', '}'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            };
            (
                json_str(l, "id").expect("id").to_string(),
                json_str(l, "reason").expect("reason").to_string(),
                num("attempts"),
                json_str(l, "service").map(String::from),
                json_str(l, "error").expect("error").to_string(),
            )
        })
        .collect()
}

/// A Lazy Pirate request with no server gives up: it is in `dlq list` (gave-up, its
/// attempts, "no reply after 2 attempts"), `show` prints its payload; a replay with no
/// server still there fails and keeps it (exit 69); once a server runs, `dlq replay
/// --all` answers it with the original id and removes it. Catches: a give-up that leaves
/// no trace, a replay that drops a letter it could not deliver, or one that leaves an
/// answered letter behind.
#[test]
fn a_request_given_up_on_is_listed_replayed_and_removed() {
    let dir = TempDir::new("dlq");
    let data = dir.join("client");
    let port = free_port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let out = run(
        &[
            "client",
            "--connect",
            &ep,
            "--request",
            "lost-1",
            "--timeout",
            "200ms",
            "--retries",
            "2",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (id, reason, attempts, service, error) = letters[0].clone();
    assert_eq!(
        (reason.as_str(), attempts.as_str(), service, error.as_str()),
        ("gave-up", "2", None, "no reply after 2 attempts")
    );
    let show = run(&["dlq", "show", &id, "--data-dir", s(&data)], &[], SECS_10);
    assert_eq!(show.status.code(), Some(0), "{show:?}");
    assert!(
        show.stdout.iter().any(|l| l.contains("\"lost-1\"")),
        "{show:?}"
    );

    // Nobody there yet: the replay fails and the letter stays.
    let replay = |extra: &[&str]| {
        let mut a = vec![
            "dlq",
            "replay",
            "--connect",
            ep.as_str(),
            "--timeout",
            "300ms",
            "--retries",
            "1",
            "--data-dir",
            s(&data),
        ];
        a.extend_from_slice(extra);
        run(&a, &[], SECS_10)
    };
    let failed = replay(&["--all"]);
    assert_eq!(failed.status.code(), Some(69), "{failed:?}");
    assert_eq!(dead_letters(&data).len(), 1);

    let mut server = Proc::spawn("server", &mut bosun(&["server", "--bind", &ep]));
    server.expect_stdout("server bound=", SECS_10);
    let done = replay(&["--all", "--json"]);
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    assert_eq!(done.stdout.len(), 1, "{done:?}");
    assert_eq!(json_str(&done.stdout[0], "id"), Some(id.as_str()));
    assert_eq!(json_str(&done.stdout[0], "payload"), Some("lost-1"));
    assert!(dead_letters(&data).is_empty(), "answered: removed");

    // Two more give-ups (the server is elsewhere), then purge empties the list.
    for body in ["lost-2", "lost-3"] {
        let other = format!("tcp://127.0.0.1:{}", free_port());
        let out = run(
            &[
                "client",
                "--connect",
                &other,
                "--request",
                body,
                "--timeout",
                "100ms",
                "--retries",
                "1",
                "--data-dir",
                s(&data),
            ],
            &[],
            SECS_10,
        );
        assert_eq!(out.status.code(), Some(69), "{out:?}");
    }
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 2);
    // An id that is not there is a usage error, and nothing is purged.
    let none = run(
        &[
            "dlq",
            "purge",
            "00000000-0000-7000-8000-000000000000",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_10,
    );
    assert_eq!(none.status.code(), Some(64), "{none:?}");
    assert_eq!(dead_letters(&data).len(), 2);
    let one = run(
        &["dlq", "purge", &letters[0].0, "--data-dir", s(&data)],
        &[],
        SECS_10,
    );
    assert_eq!(one.status.code(), Some(0), "{one:?}");
    assert_eq!(dead_letters(&data).len(), 1);
    let all = run(
        &["dlq", "purge", "--all", "--json", "--data-dir", s(&data)],
        &[],
        SECS_10,
    );
    assert_eq!(all.status.code(), Some(0), "{all:?}");
    assert_eq!(all.stdout, [r#"{"purged":1}"#]);
    assert!(dead_letters(&data).is_empty());
    server.kill();
}

/// A Majordomo request given up on (the broker has no worker) keeps its service in the
/// dead letter; `dlq replay` sends it through a Majordomo client to that service once a
/// worker runs, and the handler runs once. Catches: a replay through the wrong client,
/// or one that loses the service.
#[test]
fn a_majordomo_dead_letter_is_replayed_to_its_service() {
    let dir = TempDir::new("dlq-mdp");
    let data = dir.join("client");
    let runs = dir.join("runs");
    let (mut broker, ep) = start_broker(
        "broker",
        &mut bosun(&["-vv", "broker", "--bind", "tcp://127.0.0.1:*"]),
    );
    let out = run(
        &[
            "client",
            "--connect",
            &ep,
            "--service",
            "jobs",
            "--request",
            "job-1",
            "--timeout",
            "200ms",
            "--retries",
            "2",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].3.as_deref(), Some("jobs"));
    // The given-up copy carried its client's deadline: the broker drops it from the
    // queue once that passed (so a worker that comes later does not run it for nobody).
    broker.expect_stderr("the abandoned copy dropped", SECS_10, |l| {
        l.contains("request dropped") && l.contains("DeadlinePassed")
    });
    // The replay is a new delivery of the same id, with no deadline of its own (its
    // first session's budget is over): it waits for a worker, which runs it once.
    let mut replay = Proc::spawn(
        "replay",
        &mut bosun(&[
            "dlq",
            "replay",
            &letters[0].0,
            "--connect",
            &ep,
            "--timeout",
            "10s",
            "--data-dir",
            s(&data),
        ]),
    );
    let mut worker = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &ep,
            "--service",
            "jobs",
            "--exec",
            &counting_exec(&runs),
        ]),
    );
    let status = replay.expect_done(SECS_30);
    assert_eq!(status.code(), Some(0), "{}", replay.dump());
    assert_eq!(replay.stdout.texts(), ["job-1"]);
    assert!(dead_letters(&data).is_empty());
    assert_eq!(
        handler_runs(&runs),
        [("job-1".to_string(), 1)].into_iter().collect()
    );
    worker.kill_group();
}

/// A data dir held by a running client is refused to a second one, naming the path
/// (exit 75, try later); garbage in a data dir, or a file where the dir should be, is
/// refused with a message naming it (exit 65), for `client` and `dlq` alike, never a
/// panic and never a reset. Catches: two processes writing one sled database, or a
/// store silently re-created over someone's files.
#[test]
fn a_data_dir_in_use_or_full_of_garbage_is_refused_by_name() {
    let dir = TempDir::new("refused");
    let data = dir.join("client");
    let port = free_port();
    let ep = format!("tcp://127.0.0.1:{port}");
    let args = [
        "client",
        "--connect",
        ep.as_str(),
        "--timeout",
        "30s",
        "--data-dir",
        s(&data),
    ];
    let mut holder = spawn_piped("holder", &args);
    holder.write_stdin("held\n");
    let path = s(&data).to_string();
    common::wait_until(SECS_10, || data.join("bosun.state").exists());
    let second = run(&[&args[..], &["--request", "x"]].concat(), &[], SECS_10);
    assert_eq!(second.status.code(), Some(75), "{second:?}");
    let said = second.stderr.join("\n");
    assert!(
        said.contains(&path) && said.contains("in use"),
        "names the dir and why: {said}"
    );
    let dlq = run(&["dlq", "list", "--data-dir", &path], &[], SECS_10);
    assert_eq!(dlq.status.code(), Some(75), "{dlq:?}");
    holder.kill_group();

    let garbage = dir.join("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("notes.txt"), b"not a database").unwrap();
    std::fs::write(garbage.join("db"), common::junk(4096, 7)).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for bad in [&garbage, &file] {
        for cmd in [
            vec![
                "client",
                "--connect",
                &ep,
                "--request",
                "x",
                "--data-dir",
                s(bad),
            ],
            vec!["dlq", "list", "--data-dir", s(bad)],
        ] {
            let out = run(&cmd, &[], SECS_10);
            let said = out.stderr.join("\n");
            assert_eq!(out.status.code(), Some(65), "{cmd:?}: {out:?}");
            assert!(said.contains(s(bad)), "names the path: {said}");
            assert!(!said.contains("panicked"), "{said}");
        }
    }
    // Nothing was reset: the files are as they were.
    assert_eq!(
        std::fs::read(garbage.join("notes.txt")).unwrap(),
        b"not a database"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Freelance: a client with a data dir whose servers are all down gives up into its dead
/// letters; `dlq replay --freelance` sends the request again through a Freelance client
/// once a server runs, and removes it. Catches: a Freelance client that writes no outbox
/// or dead letter, or a replay that cannot reach Freelance servers.
#[test]
fn a_freelance_dead_letter_is_replayed_through_a_freelance_client() {
    let dir = TempDir::new("dlq-flp");
    let data = dir.join("client");
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    let out = run(
        &[
            "client",
            "--freelance",
            "--connect",
            &ep,
            "--request",
            "far-1",
            "--timeout",
            "200ms",
            "--retries",
            "2",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].1, "gave-up");
    let mut server = Proc::spawn(
        "server",
        &mut bosun(&["server", "--freelance", "--bind", &ep]),
    );
    server.expect_stdout("server bound=", SECS_10);
    let done = run(
        &[
            "dlq",
            "replay",
            "--all",
            "--freelance",
            "--connect",
            &ep,
            "--timeout",
            "5s",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_30,
    );
    assert_eq!(done.status.code(), Some(0), "{done:?}");
    assert_eq!(done.stdout, ["far-1"]);
    assert!(dead_letters(&data).is_empty());
    server.kill();
}
