//! Workers and servers with `--data-dir`, as real processes: a worker (Majordomo,
//! Paranoid Pirate) or a REP server that dies after its handler ran and before the reply
//! left, restarted on its data dir, answers the client's retry from its reply cache, and
//! the handler ran once; a handler that always fails runs exactly `--max-attempts` times,
//! is dead-lettered (read back from the store) and its client exits 1 naming the dead
//! letter; a data dir that is garbage, a file, or in use is refused with the path named,
//! without a panic.
//!
//! The crash between handler and reply is made by the test-only environment variable
//! `BOSUN_TEST_CRASH_AFTER_HANDLER=1`: the process SIGKILLs itself right after its first
//! reply was recorded (and flushed) and before it is sent. The handlers are `--exec` commands that
//! append a line to a file of their own per run, so the runs are counted from outside.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use bosun::store::{DeadReason, Store};
use common::{bosun, start_broker, start_queue, Proc, TempDir};

const SECS_20: Duration = Duration::from_secs(20);
const ANY: &str = "tcp://127.0.0.1:*";
/// A quick heartbeat, so that a dead worker is noticed within 1.5 s.
const HB: [&str; 4] = ["--heartbeat-interval", "500ms", "--heartbeat-liveness", "3"];
/// The client's budget: attempts of 1.5 s, far more of them than a restart needs.
const RETRIES: [&str; 8] = [
    "--timeout",
    "1500ms",
    "--retries",
    "8",
    "--backoff-initial",
    "100ms",
    "--backoff-max",
    "200ms",
];

/// A handler command that appends a line (its input) to `runs` per run and answers
/// `ran INPUT`.
fn counting(runs: &str) -> String {
    format!("x=$(cat); echo \"$x\" >> {runs}; printf 'ran %s' \"$x\"")
}

/// How many runs `runs` counts.
fn runs_in(runs: &str) -> usize {
    std::fs::read_to_string(runs).map_or(0, |t| t.lines().count())
}

/// `bosun ARGS` with the crash between handler and reply armed.
fn crashing(args: &[&str]) -> std::process::Command {
    let mut cmd = bosun(args);
    cmd.env("BOSUN_TEST_CRASH_AFTER_HANDLER", "1");
    cmd
}

/// The line a receiver logs on start with a data dir.
fn recovered(p: &mut Proc) -> String {
    p.expect_stderr("the recovery line", SECS_20, |l| l.contains("recovered:"))
        .text
}

/// What each pattern needs: the peer's process (worker or server), made by `start`.
#[derive(Debug, Clone, Copy)]
enum Pattern {
    Majordomo,
    ParanoidPirate,
    LazyPirate,
}

/// The test of a crash between handler and reply, for one pattern: the first process
/// runs the handler, records the reply and is SIGKILLed; the second, on the same data dir,
/// answers the client's retry from the cache (its log says so), and the handler ran once.
fn crash_between_handler_and_reply(pattern: Pattern) {
    let dir = TempDir::new("crash");
    let data = dir.file("data");
    let runs = dir.file("runs");
    let handler = counting(&runs);
    // The routers and the client's endpoint.
    let (_router, client_at, peer_args): (Option<Proc>, String, Vec<String>) = match pattern {
        Pattern::Majordomo => {
            let (b, ep) = start_broker(
                "broker",
                &mut bosun(&[&["broker", "--bind", ANY][..], &HB].concat()),
            );
            let args = [
                "worker",
                "--connect",
                &ep,
                "--service",
                "svc",
                "--exec",
                &handler,
            ];
            (
                Some(b),
                ep.clone(),
                args.iter().map(|s| s.to_string()).collect(),
            )
        }
        Pattern::ParanoidPirate => {
            let (q, front, back) = start_queue(
                "queue",
                &mut bosun(&[&["queue", "--frontend", ANY, "--backend", ANY][..], &HB].concat()),
            );
            let args = ["worker", "--connect", &back, "--exec", &handler];
            (Some(q), front, args.iter().map(|s| s.to_string()).collect())
        }
        Pattern::LazyPirate => {
            // The server comes back on the same port.
            let ep = format!("tcp://127.0.0.1:{}", common::free_port());
            let args = ["server", "--bind", &ep];
            (
                None,
                ep.clone(),
                args.iter().map(|s| s.to_string()).collect(),
            )
        }
    };
    let mut peer_args: Vec<&str> = std::iter::once("-v")
        .chain(peer_args.iter().map(String::as_str))
        .collect();
    peer_args.extend(["--data-dir", &data]);
    if !matches!(pattern, Pattern::LazyPirate) {
        peer_args.extend(HB);
    }

    let mut first = Proc::spawn("first", &mut crashing(&peer_args));
    recovered(&mut first);
    let mut client_args = vec!["client", "--connect", &client_at, "--request", "hello"];
    if matches!(pattern, Pattern::Majordomo) {
        client_args.extend(["--service", "svc"]);
    }
    client_args.extend(RETRIES);
    let mut client = Proc::spawn("client", &mut bosun(&client_args));

    let status = first.expect_exit(SECS_20);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{}", first.dump());
    first.expect_stderr("the crash", SECS_20, |l| {
        l.contains("BOSUN_TEST_CRASH_AFTER_HANDLER")
    });
    if !matches!(pattern, Pattern::LazyPirate) {
        // (The echo server runs no command to count.)
        assert_eq!(runs_in(&runs), 1, "the handler ran before the crash");
    }

    let mut second = Proc::spawn("second", &mut bosun(&peer_args));
    let line = recovered(&mut second);
    assert!(
        line.contains(
            "recovered: 1 ids in the dedup window, 0 interrupted handlers, 0 dead letters"
        ),
        "{line}"
    );
    let status = client.expect_done(SECS_20);
    assert!(
        status.success(),
        "{:?}: {}\n{}",
        pattern,
        client.dump(),
        second.dump()
    );
    let expected = match pattern {
        Pattern::LazyPirate => "hello",
        _ => "ran hello",
    };
    assert_eq!(client.stdout.texts(), [expected], "{}", client.dump());
    second.expect_stderr("the replay", SECS_20, |l| {
        l.contains("duplicate answered from the reply cache")
    });
    if !matches!(pattern, Pattern::LazyPirate) {
        assert_eq!(runs_in(&runs), 1, "{pattern:?}: the handler ran again");
    }
    second.kill();
}

/// Majordomo: the worker dies after its handler ran, before the reply left; restarted
/// on its data dir it answers the retry (or the copy the broker re-queued) from the
/// cache, and the handler ran once.
#[test]
fn a_majordomo_worker_killed_before_its_reply_left_answers_the_retry_from_its_cache() {
    crash_between_handler_and_reply(Pattern::Majordomo);
}

/// Paranoid Pirate: the same, through the queue.
#[test]
fn a_paranoid_pirate_worker_killed_before_its_reply_left_answers_the_retry_from_its_cache() {
    crash_between_handler_and_reply(Pattern::ParanoidPirate);
}

/// Lazy Pirate: a REP server on its data dir, restarted on the same port, answers the
/// client's retry from the cache with the retry's attempt, which is the only one a Lazy
/// Pirate client accepts.
#[test]
fn a_rep_server_killed_before_its_reply_left_answers_the_retry_from_its_cache() {
    crash_between_handler_and_reply(Pattern::LazyPirate);
}

/// A handler that always fails (`exit 3`), `--max-attempts 3`, a client allowing 5
/// attempts: the handler runs exactly 3 times, the request is dead-lettered (read back
/// from the store: id, service, payload, attempts, last error, reason), the client exits
/// 1 at once with a message naming the dead letter, and a restart recovers it.
#[test]
fn a_handler_that_always_fails_is_dead_lettered_after_exactly_max_attempts_runs() {
    let dir = TempDir::new("dead");
    let data = dir.file("data");
    let runs = dir.file("runs");
    let failing = format!("echo run >> {runs}; exit 3");
    let (_b, ep) = start_broker(
        "broker",
        &mut bosun(&[&["broker", "--bind", ANY][..], &HB].concat()),
    );
    let worker_args = [
        "-v",
        "worker",
        "--connect",
        &ep,
        "--service",
        "svc",
        "--max-attempts",
        "3",
        "--data-dir",
        &data,
        "--exec",
        &failing,
    ];
    let mut worker = Proc::spawn("worker", &mut bosun(&[&worker_args[..], &HB].concat()));
    recovered(&mut worker);
    let mut client = Proc::spawn(
        "client",
        &mut bosun(&[
            "client",
            "--connect",
            &ep,
            "--service",
            "svc",
            "--request",
            "poison",
            "--timeout",
            "10s",
            "--retries",
            "5",
        ]),
    );
    let status = client.expect_done(SECS_20);
    assert_eq!(status.code(), Some(1), "{}", client.dump());
    assert!(client.stdout.texts().is_empty(), "{}", client.dump());
    let errors = client.stderr.texts().join("\n");
    assert!(
        errors.contains("gave up after 3 failed attempts (max attempts 3) and dead-lettered it")
            && errors.contains("exit status: 3"),
        "{errors}"
    );
    assert_eq!(runs_in(&runs), 3, "exactly --max-attempts runs");
    worker.expect_stderr("the dead letter", SECS_20, |l| l.contains("dead-lettered"));

    // Stop the worker (its store closes), then read the dead letter back.
    worker.signal(libc::SIGTERM);
    assert!(worker.expect_exit(SECS_20).success(), "{}", worker.dump());
    {
        let store = Store::open(Path::new(&data)).expect("the data dir opens");
        let letters = store.dead_letters().unwrap().list().unwrap();
        assert_eq!(letters.len(), 1, "{letters:?}");
        let l = &letters[0];
        assert_eq!(
            (l.reason, l.attempts, l.service.as_deref(), &l.payload),
            (
                DeadReason::HandlerFailed,
                3,
                Some(&b"svc"[..]),
                &vec![b"poison".to_vec()]
            )
        );
        assert!(l.last_error.contains("exit status: 3"), "{}", l.last_error);
        assert!(
            errors.contains(&l.id.to_string()),
            "the client names the request: {errors}"
        );
    }
    let mut again = Proc::spawn("again", &mut bosun(&[&worker_args[..], &HB].concat()));
    let line = recovered(&mut again);
    assert!(
        line.contains("1 ids in the dedup window, 0 interrupted handlers, 1 dead letters"),
        "{line}"
    );
    again.kill();
}

/// The documented limit: a handler that was running when its worker was killed may run
/// again. With `--durability every` its start was on disk, so the restarted worker
/// reports it (`1 interrupted handlers`), abandons it, and the client's retry runs the
/// handler a second time.
#[test]
fn a_handler_interrupted_by_a_kill_is_reported_and_may_run_again() {
    let dir = TempDir::new("interrupted");
    let data = dir.file("data");
    let runs = dir.file("runs");
    // Counts its runs; the first one hangs until the worker is killed.
    let handler = format!(
        "x=$(cat); echo \"$x\" >> {runs}; if [ \"$(wc -l < {runs})\" -eq 1 ]; then sleep 30; fi; printf 'ran %s' \"$x\""
    );
    let (_b, ep) = start_broker(
        "broker",
        &mut bosun(&[&["broker", "--bind", ANY][..], &HB].concat()),
    );
    let args = [
        "-v",
        "worker",
        "--connect",
        &ep,
        "--service",
        "svc",
        "--durability",
        "every",
        "--data-dir",
        &data,
        "--exec",
        &handler,
    ];
    let mut first = Proc::spawn("first", &mut bosun(&[&args[..], &HB].concat()));
    recovered(&mut first);
    let mut client = Proc::spawn(
        "client",
        &mut bosun(
            &[
                &[
                    "client",
                    "--connect",
                    &ep,
                    "--service",
                    "svc",
                    "--request",
                    "job",
                ][..],
                &RETRIES,
            ]
            .concat(),
        ),
    );
    assert!(
        common::wait_until(SECS_20, || runs_in(&runs) == 1),
        "the handler never started: {}",
        first.dump()
    );
    // SIGKILL the worker and its command, mid-handler.
    first.kill_group();
    let mut second = Proc::spawn("second", &mut bosun(&[&args[..], &HB].concat()));
    let line = recovered(&mut second);
    assert!(
        line.contains(
            "recovered: 0 ids in the dedup window, 1 interrupted handlers, 0 dead letters"
        ),
        "{line}"
    );
    second.expect_stderr("the warning", SECS_20, |l| {
        l.contains("1 handlers were running when this peer stopped: their requests may run again")
    });
    let status = client.expect_done(SECS_20);
    assert!(status.success(), "{}\n{}", client.dump(), second.dump());
    assert_eq!(client.stdout.texts(), ["ran job"]);
    assert_eq!(runs_in(&runs), 2, "the interrupted handler ran again");
    second.kill();
}

/// A data dir that cannot be a bosun store (a file; other files; a sled database that
/// does not read) is refused at start with exit 65 and the path named; one that another
/// worker or server has open, with exit 75. No panic, and nothing is reset.
#[test]
fn a_data_dir_that_is_garbage_or_in_use_is_refused_naming_the_path() {
    let dir = TempDir::new("refused");
    let file = dir.file("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let others = dir.file("others");
    std::fs::create_dir_all(&others).unwrap();
    std::fs::write(Path::new(&others).join("notes.txt"), b"mine").unwrap();
    let garbage = dir.file("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(Path::new(&garbage).join("conf"), b"\xff\x00garbage").unwrap();
    std::fs::write(Path::new(&garbage).join("db"), vec![0xA5; 4096]).unwrap();
    let worker = |dir: &str| {
        common::run(
            &[
                "worker",
                "--connect",
                "tcp://127.0.0.1:1",
                "--service",
                "svc",
                "--data-dir",
                dir,
            ],
            &[],
            SECS_20,
        )
    };
    for (path, what) in [
        (&file, "not a directory"),
        (&others, "not a bosun store"),
        (&garbage, "cannot be read"),
    ] {
        let out = worker(path);
        let stderr = out.stderr.join("\n");
        assert_eq!(out.status.code(), Some(65), "{what}: {stderr}");
        assert!(
            stderr.contains(path.as_str()) && stderr.contains(what),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(
        std::fs::read(Path::new(&others).join("notes.txt")).unwrap(),
        b"mine",
        "nothing was reset"
    );

    let data = dir.file("data");
    let mut holder = Proc::spawn(
        "holder",
        &mut bosun(&[
            "-v",
            "worker",
            "--connect",
            "tcp://127.0.0.1:1",
            "--service",
            "svc",
            "--data-dir",
            &data,
        ]),
    );
    recovered(&mut holder);
    for args in [
        &[
            "worker",
            "--connect",
            "tcp://127.0.0.1:1",
            "--data-dir",
            &data,
        ][..],
        &["server", "--bind", ANY, "--data-dir", &data][..],
    ] {
        let out = common::run(args, &[], SECS_20);
        let stderr = out.stderr.join("\n");
        assert_eq!(out.status.code(), Some(75), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("data dir {data} is in use by another process")),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(holder.is_running(), "{}", holder.dump());
    holder.kill();
}
