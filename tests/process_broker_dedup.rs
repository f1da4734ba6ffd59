//! The broker stops multiplying work, with real processes: a poison request, whose
//! `--exec` command SIGKILLs the worker running it, is handed to `--max-deliveries`
//! workers and no more; the client, retrying on a fresh socket per attempt, gets one
//! error naming the dead-lettering, and none of its retries runs the command again.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{bosun, deadline, field, now, run, start_broker, wait_until, Proc};

/// A dead worker is expired 500 ms after its last heartbeat.
const HB: [&str; 4] = ["--heartbeat-interval", "100ms", "--heartbeat-liveness", "5"];
const MAX_DELIVERIES: usize = 3;
const SECS_10: Duration = Duration::from_secs(10);

/// A file the handler appends a line to each time it runs, unique to this test process.
struct RunLog(PathBuf);

impl RunLog {
    fn new(tag: &str) -> RunLog {
        let path = std::env::temp_dir().join(format!(
            "bosun-process-broker-dedup-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        RunLog(path)
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for RunLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `bosun worker --service poison` whose handler records the run, then SIGKILLs the
/// worker (the command's parent: `--exec` runs `sh -c CMD` as the worker's child).
fn poison_worker(n: usize, endpoint: &str, log: &RunLog) -> Proc {
    let exec = format!("echo run >> '{}'; kill -9 $PPID", log.0.display());
    let mut args = vec![
        "-v",
        "worker",
        "--connect",
        endpoint,
        "--service",
        "poison",
        "--exec",
        &exec,
    ];
    args.extend(HB);
    Proc::spawn(&format!("worker-{n}"), &mut bosun(&args))
}

#[test]
fn a_request_that_kills_its_workers_is_dead_lettered_after_max_deliveries() {
    let log = RunLog::new("poison");
    let data = std::env::temp_dir().join(format!(
        "bosun-process-broker-dedup-data-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&data);
    let data_dir = data.to_str().expect("utf-8 temp dir").to_string();
    let max = MAX_DELIVERIES.to_string();
    let mut args = vec![
        "-vv",
        "broker",
        "--bind",
        "tcp://127.0.0.1:*",
        "--max-deliveries",
        &max,
        "--data-dir",
        &data_dir,
    ];
    args.extend(HB);
    let (mut broker, ep) = start_broker("broker", &mut bosun(&args));
    let mut worker = poison_worker(1, &ep, &log);
    broker.expect_stderr("worker 1 ready", SECS_10, |l| l.contains("worker ready"));

    // Attempts of 700 ms: the client retries on a fresh socket (a new address) while
    // the workers die one after the other (each death is seen 500 ms after it), with
    // over 7 s of budget in all.
    let mut client = Proc::spawn(
        "client",
        &mut bosun(&[
            "client",
            "--connect",
            &ep,
            "--service",
            "poison",
            "--request",
            "x",
            "--retries",
            "5",
            "--timeout",
            "700ms",
            "--summary",
        ]),
    );

    // Restart the worker each time it dies; a bounded number of times.
    let until = deadline(Duration::from_secs(40));
    let mut started = 1;
    while client.is_running() && now() < until {
        if !worker.is_running() {
            assert!(
                started <= MAX_DELIVERIES + 2,
                "{started} workers died; the request should have been dead-lettered after {MAX_DELIVERIES}\n{}\n{}",
                broker.dump(),
                client.dump()
            );
            started += 1;
            worker = poison_worker(started, &ep, &log);
        }
        wait_until(Duration::from_secs(1), || {
            !worker.is_running() || client.try_status().is_some()
        });
    }
    let status = client.expect_done(SECS_10);
    assert_eq!(
        status.code(),
        Some(1),
        "the client fails\n{}\n{}",
        client.dump(),
        broker.dump()
    );
    let errors: Vec<String> = client
        .stderr
        .texts()
        .into_iter()
        .filter(|l| l.starts_with("bosun client:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", client.dump());
    assert!(
        errors[0].contains("dead-lettered") && errors[0].contains("3 deliveries"),
        "{}",
        errors[0]
    );
    assert_eq!(
        log.runs(),
        MAX_DELIVERIES,
        "the handler ran once per delivery\n{}",
        broker.dump()
    );

    // Not re-queued: with a live worker registered, nothing waits and nothing runs.
    if !worker.is_running() {
        worker = poison_worker(started + 1, &ep, &log);
    }
    let registered = wait_until(SECS_10, || {
        let out = run(
            &[
                "client",
                "--connect",
                &ep,
                "--service",
                "mmi.stats",
                "--request",
                "poison",
                "--timeout",
                "2s",
            ],
            &[],
            SECS_10,
        );
        out.stdout
            .iter()
            .any(|l| l.contains("service=poison idle=1 busy=0") && l.contains(" queued=0 "))
    });
    assert!(
        registered,
        "one idle worker, nothing queued\n{}",
        broker.dump()
    );
    assert!(worker.is_running(), "the last worker ran nothing");
    assert_eq!(log.runs(), MAX_DELIVERIES);

    // The broker said it once; every retry of the client was joined to the request or
    // answered with the dead-letter error, none queued again.
    broker.stderr.read_available();
    let lines = broker.stderr.texts();
    let dead: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("request dead-lettered"))
        .collect();
    assert_eq!(dead.len(), 1, "{}", broker.dump());
    assert!(dead[0].contains("WARN"), "{}", dead[0]);
    assert_eq!(
        field(dead[0], "deliveries").as_deref(),
        Some("3"),
        "{}",
        dead[0]
    );
    let summary = client.summary().expect("summary line");
    let joined = lines.iter().filter(|l| l.contains("retry joined")).count();
    let answered_again = lines
        .iter()
        .filter(|l| l.contains("retry of a dead-lettered request"))
        .count();
    assert_eq!(
        joined + answered_again,
        summary.retries as usize,
        "{summary:?}\n{}",
        broker.dump()
    );
    let gone = lines
        .iter()
        .filter(|l| l.contains("worker gone") && l.contains("Expired"))
        .count();
    assert_eq!(gone, MAX_DELIVERIES, "{}", broker.dump());

    // With --data-dir the broker kept it as a dead letter: once the broker stopped
    // (one process per data dir), `bosun dlq list` shows one poison letter with its
    // deliveries and the payload the client sent.
    assert!(
        lines.iter().any(|l| l.contains("dead letter kept")),
        "{}",
        broker.dump()
    );
    worker.kill_group();
    broker.signal(libc::SIGINT);
    broker.expect_exit(SECS_10);
    let out = run(
        &["dlq", "list", "--json", "--data-dir", &data_dir],
        &[],
        SECS_10,
    );
    let _ = std::fs::remove_dir_all(&data);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout.len(), 1, "{out:?}");
    let letter = &out.stdout[0];
    for part in [
        "\"reason\":\"poison\"",
        "\"attempts\":3",
        "\"service\":\"poison\"",
        "\"bytes\":1",
    ] {
        assert!(letter.contains(part), "{part} in {letter}");
    }
}
