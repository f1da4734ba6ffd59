//! bosun against foreign services that TRANSFORM what they get: pyzmq peers in
//! `tests/interop/transform/`, written from the ZeroMQ RFCs (7/MDP, 6/PPP, 10/FLP) and
//! the metadata-frame table of `src/proto/envelope.rs`, sharing no code with bosun.
//!
//! Each service changes the payload (upper case, a prefix, several frames), so a reply
//! that merely echoes the request proves nothing; and each records every message it
//! received (one JSON line `{"frames": [hex, ...]}` per message) so the test can check
//! that it saw exactly the plain payload the bosun client sent, followed by bosun's one
//! metadata frame (magic `FF 42 53 4E`), which a foreign peer ignores.
//!
//! These tests need `python3` with pyzmq and are skipped exactly as in
//! `tests/interop_pyzmq.rs` when it is missing (`common::interop_available`: they fail
//! instead under `CI=true` or `BOSUN_REQUIRE_INTEROP=1`; `BOSUN_SKIP_INTEROP=1` skips
//! them always). What the peers share (recording, SIGTERM, the metadata frame, the
//! heartbeating worker loop) is in `tests/interop/transform/peer.py`.
//!
//! Loopback only; every wait has a deadline; every child process is killed and reaped
//! when its guard (`common::Proc`) drops, also when an assertion fails half way.

mod common;

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    bosun, deadline, field, free_port, interop_available, spawn_piped, start_broker, start_queue,
    Proc,
};

const SECS_5: Duration = Duration::from_secs(5);
const SECS_10: Duration = Duration::from_secs(10);
const SECS_20: Duration = Duration::from_secs(20);

/// First bytes of bosun's metadata frame (the table in `src/proto/envelope.rs`).
const META_MAGIC: [u8; 4] = [0xFF, 0x42, 0x53, 0x4E];

/// Request lines (one with spaces, non-ASCII UTF-8 ones) and their upper case, as the
/// services compute it (Unicode upper case: `ß` becomes `SS`).
const LINES: &[(&str, &str)] = &[
    ("hello", "HELLO"),
    ("several words  with spaces", "SEVERAL WORDS  WITH SPACES"),
    ("grüße aus köln", "GRÜSSE AUS KÖLN"),
    ("naïve café ☕ Ωμέγα", "NAÏVE CAFÉ ☕ ΩΜΈΓΑ"),
    ("x", "X"),
];

fn requests() -> Vec<&'static str> {
    LINES.iter().map(|(line, _)| *line).collect()
}

// ---------------------------------------------------------------------------------
// What the foreign services recorded.

type Frames = Vec<Vec<u8>>;

/// A file a peer writes its received messages to; removed when dropped.
struct Record(PathBuf);

impl Record {
    fn new(what: &str) -> Record {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "bosun-interop-transform-{}-{what}-{n}.jsonl",
            std::process::id()
        );
        Record(std::env::temp_dir().join(name))
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }

    /// Every message recorded so far, in order.
    fn messages(&self) -> Vec<Frames> {
        let text = std::fs::read_to_string(&self.0)
            .unwrap_or_else(|e| panic!("read record {}: {e}", self.0.display()));
        text.lines().map(parse_record_line).collect()
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One record line, `{"frames": ["68656c6c6f", ...]}`, as the peers write it.
fn parse_record_line(line: &str) -> Frames {
    let inner = line
        .trim()
        .strip_prefix(r#"{"frames": ["#)
        .and_then(|rest| rest.strip_suffix("]}"))
        .unwrap_or_else(|| panic!("record line {line:?}"));
    if inner.trim().is_empty() {
        return Vec::new();
    }
    inner
        .split(',')
        .map(|item| {
            let hex = item.trim().trim_matches('"');
            assert!(hex.len() % 2 == 0, "hex {hex:?} in {line:?}");
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
                .collect()
        })
        .collect()
}

/// Checks that a request body a foreign service received is exactly `line` as one
/// payload frame followed by bosun's metadata frame; returns the metadata frame.
fn assert_plain_payload<'a>(body: &'a [Vec<u8>], line: &str, context: &str) -> &'a [u8] {
    let shown: Vec<String> = body
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(
        body.len(),
        2,
        "[payload][metadata] for {line:?}: {shown:?}\n{context}"
    );
    assert_eq!(
        body[0],
        line.as_bytes(),
        "payload frame for {line:?}\n{context}"
    );
    assert!(
        body[1].starts_with(&META_MAGIC),
        "the last frame is bosun's metadata (FF 42 53 4E ...) for {line:?}: {:02x?}\n{context}",
        body[1]
    );
    &body[1]
}

/// The message id (16 bytes at offset 8) and the attempt (u32 at offset 24) of a
/// metadata frame.
fn id_and_attempt(meta: &[u8]) -> (Vec<u8>, u32) {
    assert!(meta.len() >= 28, "metadata frame too short: {meta:02x?}");
    let attempt = u32::from_be_bytes(meta[24..28].try_into().expect("4 bytes"));
    (meta[8..24].to_vec(), attempt)
}

// ---------------------------------------------------------------------------------
// Starting the pieces.

/// A pyzmq peer from `tests/interop/transform/` (see [`common::python`]).
fn python(script: &str, args: &[&str]) -> Command {
    common::python(&format!("transform/{script}"), args)
}

/// A bosun broker on a free loopback port: the guard and its endpoint.
fn bosun_broker(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["broker", "--bind", "tcp://127.0.0.1:*"];
    args.extend_from_slice(extra);
    start_broker("bosun broker", &mut bosun(&args))
}

/// A bosun Paranoid Pirate queue on free loopback ports: guard, frontend, backend.
fn bosun_queue(extra: &[&str]) -> (Proc, String, String) {
    let mut args = vec![
        "queue",
        "--frontend",
        "tcp://127.0.0.1:*",
        "--backend",
        "tcp://127.0.0.1:*",
    ];
    args.extend_from_slice(extra);
    start_queue("bosun queue", &mut bosun(&args))
}

/// The pyzmq 7/MDP worker ("mdp:" + upper case), registered for `service`.
fn mdp_worker(endpoint: &str, service: &str, record: &Record, extra: &[&str]) -> Proc {
    let mut args = vec![endpoint, service, record.arg()];
    args.extend_from_slice(extra);
    let mut worker = Proc::spawn("pyzmq mdp worker", &mut python("mdp_worker.py", &args));
    worker.expect_stdout("worker ready n=1", SECS_10);
    worker
}

/// The pyzmq REP server ("reply:" + payload) on a free loopback port, and its endpoint.
fn rep_server(record: &Record) -> (Proc, String) {
    let args = ["tcp://127.0.0.1:*", record.arg()];
    let mut server = Proc::spawn("pyzmq rep server", &mut python("rep_server.py", &args));
    let line = server.expect_stdout("rep-server bound=", SECS_10);
    (server, field(&line, "bound").expect("bound="))
}

/// The pyzmq 6/PPP worker ("ppp:" + upper case), connected to a queue's backend.
fn ppp_worker(backend: &str, record: &Record, extra: &[&str]) -> Proc {
    let mut args = vec![backend, record.arg()];
    args.extend_from_slice(extra);
    let mut worker = Proc::spawn("pyzmq ppp worker", &mut python("ppp_worker.py", &args));
    worker.expect_stdout("ppp-worker ready n=1", SECS_10);
    worker
}

/// A pyzmq 10/FLP server ("NAME:" + upper case) with identity and bind address
/// `endpoint`.
fn flp_server(endpoint: &str, name: &str, record: &Record) -> Proc {
    let args = [endpoint, name, record.arg()];
    let title = format!("pyzmq flp server {name}");
    let mut server = Proc::spawn(&title, &mut python("flp_server.py", &args));
    server.expect_stdout("flp-server bound=", SECS_10);
    server
}

/// Runs `bosun client args` with `lines` on stdin to completion: exit status and stdout
/// lines. Panics with everyone's output (`others` too) when it does not exit in time.
fn run_client(
    args: &[&str],
    lines: &[&str],
    others: &mut [&mut Proc],
) -> (ExitStatus, Vec<String>) {
    let mut client = spawn_piped(&format!("bosun {}", args.join(" ")), args);
    client.write_stdin(&lines.iter().map(|l| format!("{l}\n")).collect::<String>());
    client.close_stdin();
    let Some(status) = client.wait_exit(SECS_20) else {
        panic!(
            "still running after {SECS_20:?}\n{}",
            dump_all(&mut client, others)
        );
    };
    client.drain(SECS_5);
    (status, client.stdout.texts())
}

/// Like [`run_client`], but asserts exit 0 and stdout exactly `want`, in order.
fn client_prints(args: &[&str], lines: &[&str], want: &[String], others: &mut [&mut Proc]) {
    let (status, got) = run_client(args, lines, others);
    if !status.success() || got != want {
        let context: Vec<String> = others.iter_mut().map(|p| p.dump()).collect();
        panic!(
            "bosun {}: status {status}, stdout {got:#?}, want exit 0 and {want:#?}\n{}",
            args.join(" "),
            context.join("\n")
        );
    }
}

fn dump_all(first: &mut Proc, others: &mut [&mut Proc]) -> String {
    let mut all = vec![first.dump()];
    all.extend(others.iter_mut().map(|p| p.dump()));
    all.join("\n")
}

/// The request bodies in an MDP worker's record: from every
/// `[""][MDPW01][0x02][client][""][body...]`, the body.
fn mdp_requests(record: &Record) -> Vec<Frames> {
    record
        .messages()
        .into_iter()
        .filter(|m| m.len() >= 3 && m[2] == [0x02])
        .map(|m| {
            assert!(
                m.len() >= 5 && m[0].is_empty() && m[1] == b"MDPW01" && m[4].is_empty(),
                "7/MDP REQUEST [\"\"][MDPW01][0x02][client][\"\"][body...]: {m:02x?}"
            );
            m[5..].to_vec()
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The tests.

/// (1) `bosun client --service` through `bosun broker` to a pyzmq 7/MDP worker that
/// answers "mdp:" + the upper case, in two frames and without metadata: one request at
/// a time, then four in flight (the broker attaches the request's metadata to the plain
/// reply, so the pipelined client can match it). The worker saw each plain payload,
/// followed by bosun's metadata frame, and stayed registered throughout.
#[test]
fn mdp_client_and_transforming_pyzmq_worker_via_bosun_broker() {
    if !interop_available("mdp_client_and_transforming_pyzmq_worker_via_bosun_broker") {
        return;
    }
    let (mut broker, ep) = bosun_broker(&["--heartbeat-interval", "250ms"]);
    let record = Record::new("mdp");
    let mut worker = mdp_worker(&ep, "upper", &record, &["--heartbeat", "250"]);
    let want: Vec<String> = LINES.iter().map(|(_, up)| format!("mdp:{up}")).collect();

    let base = ["client", "--connect", &ep, "--service", "upper"];
    let others = &mut [&mut broker, &mut worker];
    client_prints(&base, &requests(), &want, others);
    let pipelined = [&base[..], &["--in-flight", "4"]].concat();
    client_prints(&pipelined, &requests(), &want, others);

    let bodies = mdp_requests(&record);
    let sent: Vec<&str> = [requests(), requests()].concat();
    let context = dump_all(&mut worker, &mut [&mut broker]);
    assert_eq!(
        bodies.len(),
        sent.len(),
        "one request per line: {bodies:02x?}\n{context}"
    );
    for (body, line) in bodies.iter().zip(&sent) {
        assert_plain_payload(body, line, &context);
    }
    worker.stdout.read_available();
    assert!(
        !worker
            .stdout
            .texts()
            .iter()
            .any(|l| l.starts_with("worker ready n=2")),
        "the worker registered once\n{context}"
    );
}

/// (2) `bosun client --connect` (Lazy Pirate) to a pyzmq REP server that answers
/// "reply:" + the payload, without metadata (it drops the frame it does not know).
#[test]
fn lazy_pirate_client_and_prefixing_pyzmq_rep_server() {
    if !interop_available("lazy_pirate_client_and_prefixing_pyzmq_rep_server") {
        return;
    }
    let record = Record::new("rep");
    let (mut server, ep) = rep_server(&record);
    let want: Vec<String> = requests().iter().map(|l| format!("reply:{l}")).collect();
    client_prints(
        &["client", "--connect", &ep],
        &requests(),
        &want,
        &mut [&mut server],
    );

    let messages = record.messages();
    let context = server.dump();
    assert_eq!(messages.len(), LINES.len(), "{messages:02x?}\n{context}");
    for (body, line) in messages.iter().zip(requests()) {
        assert_plain_payload(body, line, &context);
    }
}

/// (3) `bosun client` through `bosun queue` to a pyzmq 6/PPP worker that answers
/// "ppp:" + the upper case, without metadata; both sides heartbeat every 250 ms.
#[test]
fn lazy_pirate_client_and_transforming_pyzmq_ppp_worker_via_bosun_queue() {
    if !interop_available("lazy_pirate_client_and_transforming_pyzmq_ppp_worker_via_bosun_queue") {
        return;
    }
    let (mut queue, frontend, backend) = bosun_queue(&["--heartbeat-interval", "250ms"]);
    let record = Record::new("ppp");
    let mut worker = ppp_worker(&backend, &record, &["--heartbeat", "250"]);
    let want: Vec<String> = LINES.iter().map(|(_, up)| format!("ppp:{up}")).collect();
    let others = &mut [&mut queue, &mut worker];
    client_prints(
        &["client", "--connect", &frontend],
        &requests(),
        &want,
        others,
    );

    // Requests are [address...][""][body...]; heartbeats are the one frame 0x02.
    let context = dump_all(&mut worker, &mut [&mut queue]);
    let bodies: Vec<Frames> = record
        .messages()
        .into_iter()
        .filter(|m| m != &[vec![0x02]])
        .map(|m| {
            let split = m.iter().position(|f| f.is_empty());
            let split = split.unwrap_or_else(|| panic!("no address stack: {m:02x?}\n{context}"));
            m[split + 1..].to_vec()
        })
        .collect();
    assert_eq!(bodies.len(), LINES.len(), "{bodies:02x?}\n{context}");
    for (body, line) in bodies.iter().zip(requests()) {
        assert_plain_payload(body, line, &context);
    }
}

/// (4) A pyzmq 10/FLP client (ROUTER) against `bosun server --freelance`: the server
/// says nothing before it is spoken to, answers PING with PONG, and echoes
/// `[control]["part1"]["part2"]` as those three frames (kept apart, no metadata added
/// for a client that sent none). The script exits non-zero on any mismatch.
#[test]
fn pyzmq_flp_client_and_bosun_freelance_server() {
    if !interop_available("pyzmq_flp_client_and_bosun_freelance_server") {
        return;
    }
    let ep = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Proc::spawn(
        "bosun server --freelance",
        &mut bosun(&["server", "--freelance", "--bind", &ep]),
    );
    server.expect_stdout("server bound=", SECS_10);
    let mut client = Proc::spawn(
        "pyzmq flp client",
        &mut python("flp_client.py", &[&ep, "--quiet-ms", "300"]),
    );
    let Some(status) = client.wait_exit(SECS_20) else {
        panic!(
            "still running after {SECS_20:?}\n{}",
            dump_all(&mut client, &mut [&mut server])
        );
    };
    client.drain(SECS_5);
    let context = dump_all(&mut client, &mut [&mut server]);
    assert!(status.success(), "flp_client.py: {status}\n{context}");
    assert_eq!(client.stdout.texts(), ["flp-client ok"], "{context}");
}

/// (5) `bosun client --connect A,B,C` (Freelance) against three pyzmq 10/FLP servers
/// that answer "NAME:" + the upper case, without metadata. Every line is answered;
/// then the server that answered is SIGKILLed mid-run, and the remaining lines are
/// answered by another one.
#[test]
fn freelance_client_and_three_transforming_pyzmq_flp_servers() {
    if !interop_available("freelance_client_and_three_transforming_pyzmq_flp_servers") {
        return;
    }
    let names = ["s1", "s2", "s3"];
    let records: Vec<Record> = names.iter().map(|n| Record::new(n)).collect();
    let endpoints: Vec<String> = names
        .iter()
        .map(|_| format!("tcp://127.0.0.1:{}", free_port()))
        .collect();
    let mut servers: Vec<Proc> = names
        .iter()
        .zip(&endpoints)
        .zip(&records)
        .map(|((name, ep), record)| flp_server(ep, name, record))
        .collect();

    let connect = endpoints.join(",");
    let mut client = spawn_piped(
        "bosun client (freelance)",
        &["client", "--connect", &connect, "--timeout", "1s"],
    );
    // Before: every line answered, one at a time, by one of the three.
    let mut last_answered_by = String::new();
    for (line, up) in LINES {
        client.write_stdin(&format!("{line}\n"));
        let reply = client.stdout.next(deadline(SECS_10)).map(|l| l.text);
        let Some((name, rest)) = reply.as_deref().and_then(|r| r.split_once(':')) else {
            let mut others: Vec<&mut Proc> = servers.iter_mut().collect();
            panic!(
                "reply to {line:?}: {reply:?}\n{}",
                dump_all(&mut client, &mut others)
            );
        };
        assert!(names.contains(&name), "reply {reply:?} from a known server");
        assert_eq!(rest, *up, "reply to {line:?}");
        last_answered_by = name.to_string();
    }
    // Kill the server that answered last; the rest must come from another.
    let victim = last_answered_by;
    let v = names.iter().position(|n| *n == victim).expect("known");
    servers[v].kill();

    let after = ["after the kill", "ÉCHEC évité", "last one"];
    for line in after {
        client.write_stdin(&format!("{line}\n"));
    }
    client.close_stdin();
    let status = client.wait_exit(SECS_20);
    client.drain(SECS_5);
    let mut others: Vec<&mut Proc> = servers.iter_mut().collect();
    let context = dump_all(&mut client, &mut others);
    assert!(
        status.is_some_and(|s| s.success()),
        "client: {status:?}\n{context}"
    );
    let printed = client.stdout.texts();
    assert_eq!(printed.len(), LINES.len() + after.len(), "{context}");
    for (reply, line) in printed[LINES.len()..].iter().zip(after) {
        let (name, rest) = reply.split_once(':').expect("NAME:REPLY");
        assert!(
            names.contains(&name) && name != victim,
            "reply {reply:?} to {line:?} from a live server, not {victim}\n{context}"
        );
        assert_eq!(rest, line.to_uppercase(), "reply to {line:?}\n{context}");
    }

    // Each server saw [client][control][payload][metadata] (and PINGs): every request
    // plain, and every line reached the server that answered it.
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, record) in names.iter().zip(&records) {
        for m in record.messages() {
            if m.len() == 2 && m[1] == b"PING" {
                continue;
            }
            assert!(
                m.len() >= 3,
                "[client][control][body...] at {name}: {m:02x?}"
            );
            let line = String::from_utf8_lossy(&m[2]).into_owned();
            assert_plain_payload(&m[2..], &line, &context);
            seen.push((name.to_string(), line));
        }
    }
    let all: Vec<&str> = [requests(), after.to_vec()].concat();
    for (reply, line) in printed.iter().zip(&all) {
        let name = reply.split_once(':').expect("NAME:REPLY").0.to_string();
        assert!(
            seen.contains(&(name.clone(), line.to_string())),
            "{name} answered {line:?}, so it recorded it: {seen:?}"
        );
    }
    assert!(
        seen.iter().all(|(_, line)| all.contains(&line.as_str())),
        "only the lines sent: {seen:?}"
    );
}

/// (6) A pyzmq 7/MDP worker that answers the first copy of each request LATE (700 ms,
/// longer than the client's 300 ms timeout), behind `bosun broker`: the client retries
/// on a fresh socket, prints each reply exactly once and exits 0. The broker joins a
/// retry to the copy the worker holds, and the late reply reaches the retry's socket
/// (attempt 2 goes out 500 to 550 ms after attempt 1 and waits until 800 to 850 ms:
/// 700 ms falls inside with room on both sides), so the worker mostly sees a line once;
/// a copy it sees again (a reply that fell between two attempts, when the client had
/// no socket) carries the same plain payload and message id, and a later attempt.
#[test]
fn mdp_client_retries_a_late_pyzmq_worker_without_duplicates() {
    if !interop_available("mdp_client_retries_a_late_pyzmq_worker_without_duplicates") {
        return;
    }
    let (mut broker, ep) = bosun_broker(&[]);
    let record = Record::new("late");
    let mut worker = mdp_worker(&ep, "slow", &record, &["--late-ms", "700"]);
    let lines = ["first late", "zweite Anfrage: größer", "third"];
    let want: Vec<String> = lines
        .iter()
        .map(|l| format!("mdp:{}", l.to_uppercase()))
        .collect();
    let args = [
        "client",
        "--connect",
        &ep,
        "--service",
        "slow",
        "--timeout",
        "300ms",
        "--retries",
        "3",
    ];
    client_prints(&args, &lines, &want, &mut [&mut broker, &mut worker]);

    let context = dump_all(&mut worker, &mut [&mut broker]);
    let bodies = mdp_requests(&record);
    let mut i = 0;
    let mut once = 0;
    for line in lines {
        // The attempts of one line arrive one after the other (the client sends the
        // next line only once this one is answered).
        let mut attempts = Vec::new();
        while i < bodies.len() && bodies[i].first().map(Vec::as_slice) == Some(line.as_bytes()) {
            let meta = assert_plain_payload(&bodies[i], line, &context);
            attempts.push(id_and_attempt(meta));
            i += 1;
        }
        assert!(
            !attempts.is_empty(),
            "{line:?}: the late first attempt: {attempts:02x?}\n{context}"
        );
        once += usize::from(attempts.len() == 1);
        let numbers: Vec<u32> = attempts.iter().map(|(_, n)| *n).collect();
        assert!(
            numbers[0] == 1 && numbers.windows(2).all(|w| w[0] < w[1]),
            "{line:?}: attempts from 1, rising: {numbers:?}\n{context}"
        );
        assert!(
            attempts.iter().all(|(id, _)| *id == attempts[0].0),
            "{line:?}: one message id on every attempt: {attempts:02x?}"
        );
    }
    assert_eq!(
        i,
        bodies.len(),
        "nothing but these lines: {bodies:02x?}\n{context}"
    );
    // Without the broker joining retries, every line would reach the worker twice.
    assert!(
        once > 0,
        "every line ran again: the retries were not joined\n{context}"
    );
}
