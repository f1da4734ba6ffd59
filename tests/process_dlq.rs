//! `bosun dlq` with real processes: it never creates a store nor touches a directory
//! that is not one; a replay carries a deadline of its own; a failed replay leaves the
//! letter's diagnosis as it was; `--fresh-id` gets past a worker's reply cache; the
//! usage and help say what each subcommand takes and prints.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{bosun, json_str, run, start_broker, Proc, TempDir};

const SECS_10: Duration = Duration::from_secs(10);
const SECS_30: Duration = Duration::from_secs(30);

fn s(p: &Path) -> &str {
    common::path_str(p)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.path().display().to_string();
        if entry.file_type().unwrap().is_dir() {
            out.push((name, b"<dir>".to_vec()));
            out.extend(snapshot(&entry.path()));
        } else {
            out.push((name, std::fs::read(entry.path()).unwrap()));
        }
    }
    out.sort();
    out
}

/// `dlq list --json` lines: (id, reason, attempts, error).
fn dead_letters(data: &Path) -> Vec<(String, String, String, String)> {
    let out = run(
        &["dlq", "list", "--json", "--data-dir", s(data)],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    out.stdout
        .iter()
        .map(|l| {
            let start = l.find("\"attempts\":").expect("attempts") + 11;
            let attempts = l[start..].split([',', '}']).next().unwrap().to_string();
            (
                json_str(l, "id").expect("id").to_string(),
                json_str(l, "reason").expect("reason").to_string(),
                attempts,
                json_str(l, "error").expect("error").to_string(),
            )
        })
        .collect()
}

/// Copies a stopped peer's data dir (files and the empty `blobs` directory).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A directory with someone else's files is refused (65) by `dlq` and by a client, and
/// left byte for byte as it was: no sled files, no `blobs/`, no `bosun.lock`. An empty
/// directory is not a store to `dlq` (65, and it stays empty); a missing one is a usage
/// error (64). Catches: sled rewriting `conf` and `db` before the refusal, and `dlq`
/// creating a store where there was none.
#[test]
fn dlq_never_creates_a_store_nor_touches_a_foreign_dir() {
    let dir = TempDir::new("dlq-foreign");
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("conf"), b"x").unwrap();
    std::fs::write(foreign.join("db"), b"important\n").unwrap();
    let before = snapshot(&foreign);
    let ep = format!("tcp://127.0.0.1:{}", common::free_port());
    for cmd in [
        vec!["dlq", "list", "--data-dir", s(&foreign)],
        vec![
            "client",
            "--connect",
            &ep,
            "--request",
            "x",
            "--data-dir",
            s(&foreign),
        ],
    ] {
        let out = run(&cmd, &[], SECS_10);
        assert_eq!(out.status.code(), Some(65), "{cmd:?}: {out:?}");
        assert!(
            out.stderr.join("\n").contains("not a bosun store"),
            "{out:?}"
        );
        assert_eq!(snapshot(&foreign), before, "{cmd:?} touched the directory");
    }

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for cmd in [
        vec!["dlq", "list", "--data-dir", s(&empty)],
        vec![
            "dlq",
            "show",
            "0190a3c2-0000-7000-8000-000000000000",
            "--data-dir",
            s(&empty),
        ],
        vec!["dlq", "purge", "--all", "--data-dir", s(&empty)],
    ] {
        let out = run(&cmd, &[], SECS_10);
        assert_eq!(out.status.code(), Some(65), "{cmd:?}: {out:?}");
        assert!(
            out.stderr.join("\n").contains("not a bosun store"),
            "{out:?}"
        );
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{cmd:?}");
    }
    let missing = dir.join("missing");
    let out = run(&["dlq", "list", "--data-dir", s(&missing)], &[], SECS_10);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(!missing.exists());
}

/// `purge` takes ids or `--all`, not both, and says so; each subcommand's `--json` help
/// says what it prints.
#[test]
fn dlq_usage_and_json_help_say_what_each_subcommand_does() {
    let out = run(
        &[
            "dlq",
            "purge",
            "--all",
            "0190a3c2-0000-7000-8000-000000000000",
            "--data-dir",
            "/nonexistent",
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let said = out.stderr.join("\n");
    assert!(said.contains("'--all' cannot be used with"), "{said}");
    let help = |sub: &str| run(&["dlq", sub, "--help"], &[], SECS_10).stdout.join("\n");
    let json_help = |sub: &str| {
        let h = help(sub);
        // The flag's line, and the next (its help, when clap puts it there).
        let lines: Vec<&str> = h.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with("--json"))
            .expect("--json");
        lines[at..(at + 2).min(lines.len())].join("\n")
    };
    let (list, show, replay, purge) = (
        json_help("list"),
        json_help("show"),
        json_help("replay"),
        json_help("purge"),
    );
    assert!(list.contains("One JSON object per dead letter"), "{list}");
    assert!(
        show.contains("payload") && !show.contains("purged"),
        "{show}"
    );
    assert!(
        replay.contains("status") && replay.contains("new_id"),
        "{replay}"
    );
    assert!(
        purge.contains("purged") && !purge.contains("reason"),
        "{purge}"
    );
    assert!(help("replay").contains("--fresh-id"));
}

/// A replayed request carries a deadline of its own (now + its budget), so a broker
/// with no worker for it drops it once the replay stopped waiting, as it drops a
/// client's; and a replay that gets no reply leaves the letter as it was (reason,
/// attempts, error), saying its own outcome. Catches: a replay with no deadline (kept
/// queued for a worker that would run it for nobody), and a failed replay overwriting
/// the original diagnosis with its own attempt count.
#[test]
fn a_replay_carries_its_deadline_and_a_failed_one_keeps_the_letter() {
    let dir = TempDir::new("dlq-deadline");
    let data = dir.join("client");
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
            "nobody",
            "--request",
            "job-1",
            "--timeout",
            "200ms",
            "--retries",
            "1",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_10,
    );
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let dropped = |l: &str| l.contains("request dropped") && l.contains("DeadlinePassed");
    broker.expect_stderr("the client's copy dropped", SECS_10, dropped);
    let letters = dead_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:?}");

    let replay = run(
        &[
            "dlq",
            "replay",
            "--all",
            "--json",
            "--connect",
            &ep,
            "--timeout",
            "200ms",
            "--retries",
            "1",
            "--data-dir",
            s(&data),
        ],
        &[],
        SECS_10,
    );
    assert_eq!(replay.status.code(), Some(69), "{replay:?}");
    assert_eq!(replay.stdout.len(), 1, "{replay:?}");
    assert_eq!(json_str(&replay.stdout[0], "status"), Some("no_reply"));
    assert!(
        replay
            .stderr
            .join("\n")
            .contains("kept in the dead letters unchanged"),
        "{replay:?}"
    );
    broker.expect_stderr("the replayed copy dropped", SECS_10, dropped);
    assert_eq!(dead_letters(&data), letters, "the letter is as it was");
    broker.kill();
}

/// A worker with a data dir and `--max-attempts 1` whose handler fails the first time
/// dead-letters the request and caches the failure. Replayed from a copy of its dead
/// letters while it runs again on its own dir, the request with its old id gets the
/// cached failure (the handler does not run; the letter stays as it was, reason
/// handler-failed); with `--fresh-id` the handler runs, the reply is printed, the new id
/// is said, and the letter is removed. Catches: a replay that can never get past the
/// reply cache, and a failed replay rewriting the letter.
#[test]
fn a_fresh_id_replay_gets_past_a_workers_reply_cache() {
    let dir = TempDir::new("dlq-fresh");
    let wdata = dir.join("worker");
    let letters_dir = dir.join("letters");
    let marker = dir.join("marker");
    let runs = dir.join("runs");
    let exec = format!(
        "echo run >> '{runs}'; b=$(cat); if [ -e '{m}' ]; then printf 'done %s' \"$b\"; \
         else touch '{m}'; echo 'first run fails' >&2; exit 3; fi",
        runs = s(&runs),
        m = s(&marker)
    );
    let runs_count = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let (mut broker, ep) = start_broker(
        "broker",
        &mut bosun(&["broker", "--bind", "tcp://127.0.0.1:*"]),
    );
    let worker_args = [
        "worker",
        "--connect",
        ep.as_str(),
        "--service",
        "jobs",
        "--max-attempts",
        "1",
        "--exec",
        exec.as_str(),
        "--data-dir",
        s(&wdata),
    ];
    let mut worker = Proc::spawn("worker", &mut bosun(&worker_args));
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
            "5s",
            "--data-dir",
            s(&dir.join("client")),
        ],
        &[],
        SECS_30,
    );
    assert_ne!(out.status.code(), Some(0), "the handler failed: {out:?}");
    assert_eq!(runs_count(), 1);
    worker.signal(libc::SIGTERM);
    assert!(worker.expect_exit(SECS_10).success(), "{}", worker.dump());
    let letters = dead_letters(&wdata);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].1, "handler-failed", "{letters:?}");
    let old_id = letters[0].0.clone();
    // The worker runs again on its own dir (its reply cache); its letters are replayed
    // from a copy, since a running peer holds its directory.
    copy_dir(&wdata, &letters_dir);
    let mut worker = Proc::spawn("worker again", &mut bosun(&worker_args));
    let replay = |extra: &[&str]| {
        let mut a = vec![
            "dlq",
            "replay",
            old_id.as_str(),
            "--json",
            "--connect",
            ep.as_str(),
            "--timeout",
            "5s",
            "--data-dir",
            s(&letters_dir),
        ];
        a.extend_from_slice(extra);
        run(&a, &[], SECS_30)
    };
    let cached = replay(&[]);
    assert_eq!(cached.status.code(), Some(1), "{cached:?}");
    assert_eq!(json_str(&cached.stdout[0], "status"), Some("failed"));
    assert_eq!(runs_count(), 1, "answered from the cache");
    assert_eq!(dead_letters(&letters_dir), letters, "kept as it was");

    let fresh = replay(&["--fresh-id"]);
    assert_eq!(fresh.status.code(), Some(0), "{fresh:?}");
    assert_eq!(fresh.stdout.len(), 1, "{fresh:?}");
    let line = &fresh.stdout[0];
    assert_eq!(json_str(line, "id"), Some(old_id.as_str()), "{line}");
    let new_id = json_str(line, "new_id").expect("new_id");
    assert_ne!(new_id, old_id);
    uuid::Uuid::parse_str(new_id).expect("a message id");
    assert_eq!(json_str(line, "payload"), Some("done job-1"), "{line}");
    assert!(fresh.stderr.join("\n").contains(new_id), "{fresh:?}");
    assert_eq!(runs_count(), 2, "the handler ran again");
    assert!(dead_letters(&letters_dir).is_empty(), "answered: removed");
    worker.kill_group();
    broker.kill();
}
