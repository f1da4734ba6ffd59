//! bosun's pub/sub on the wire against peers that share no code with it: the pyzmq
//! scripts `tests/interop/pubsub_*.py`, written from the wire section of the pub/sub
//! contract (patterns/reliable-pubsub.md).
//!
//! - A plain pyzmq SUB socket subscribed to a topic prefix, connected to two `bosun pub`
//!   processes of different topics, gets exactly the topic frame and payload frames of
//!   the matching publisher's messages (and a trailing metadata frame it parses by the
//!   published layout: sequence 1.., one publisher id, the heartbeat's replay endpoint);
//!   it transforms each payload (upper case) and records it, and the test checks every
//!   record against the input lines.
//! - A pyzmq replay client speaking `BSP-R1` to `bosun pub`'s replay endpoint gets
//!   UNKNOWN for another publisher's id, TRIMMED for a history older than the retained
//!   one, then every retained message in order, in batches ended by END.
//! - A raw pyzmq PUB that is not bosun: `bosun sub` says plainly that its messages carry
//!   no bosun metadata.
//!
//! These tests need `python3` with pyzmq and are skipped exactly as in
//! `tests/interop_pyzmq.rs` when it is missing (`common::interop_available`: they fail
//! instead under `CI=true` or `BOSUN_REQUIRE_INTEROP=1`; `BOSUN_SKIP_INTEROP=1` skips
//! them always).
//!
//! Loopback only; every wait has a deadline; every child process is killed and reaped
//! when its guard (`common::Proc`) drops, also when an assertion fails half way.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{
    bosun, deadline, field, free_port, interop_available, python, raw_socket, recv_until, Proc,
};

const SECS_10: Duration = Duration::from_secs(10);
const SECS_20: Duration = Duration::from_secs(20);
const SECS_30: Duration = Duration::from_secs(30);

/// The heartbeat topic of the wire section.
const HEARTBEAT_TOPIC: &[u8] = b"\xffBSN.hb";

/// Input lines of the weather publisher (spaces, non-ASCII UTF-8, an empty line: an
/// empty payload is one empty frame) and their upper case, as the pyzmq peer computes
/// it (Unicode: `ß` becomes `SS`).
const WEATHER: &[(&str, &str)] = &[
    ("sunny", "SUNNY"),
    ("rain later  in the day", "RAIN LATER  IN THE DAY"),
    ("grüße aus köln", "GRÜSSE AUS KÖLN"),
    ("", ""),
    ("naïve café ☕ Ωμέγα", "NAÏVE CAFÉ ☕ ΩΜΈΓΑ"),
    ("x", "X"),
];

fn loopback() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// A file a peer writes to; removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("bosun-interop-pubsub-{}-{what}-{n}", std::process::id());
        TempFile(std::env::temp_dir().join(name))
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// The raw JSON value of `"key"` in a line written by Python's `json.dumps` (a string
/// without escapes, a number, or an array of such strings), without its quotes.
fn json_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        return Some(&s[..s.find('"')?]);
    }
    if let Some(s) = rest.strip_prefix('[') {
        return Some(&s[..s.find(']')?]);
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

/// One message the pyzmq SUB recorded.
#[derive(Debug)]
struct Recorded {
    topic: Vec<u8>,
    payload: Vec<Vec<u8>>,
    publisher: String,
    seq: u64,
    published_at_ms: u64,
    upper: String,
}

fn parse_record(line: &str) -> Recorded {
    let get = |key| json_value(line, key).unwrap_or_else(|| panic!("{key} in {line:?}"));
    // `["68656c6c6f", ""]`: quoted hex items; `[]` has none.
    let payload = get("payload")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            unhex(
                s.strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .expect("quoted"),
            )
        })
        .collect();
    Recorded {
        topic: unhex(get("topic")),
        payload,
        publisher: get("publisher").to_string(),
        seq: get("seq").parse().expect("seq"),
        published_at_ms: get("published_at_ms").parse().expect("published_at_ms"),
        upper: String::from_utf8(unhex(get("upper"))).expect("UTF-8"),
    }
}

/// Milliseconds since the Unix epoch.
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `bosun pub` on two loopback endpoints with `--topic topic`, stdin piped, heartbeats
/// every 100 ms: the guard and its (publish, replay) endpoints.
fn bosun_pub(name: &str, topic: &str, extra: &[&str]) -> (Proc, String, String) {
    let (publish, replay) = (loopback(), loopback());
    let mut args = vec![
        "-v",
        "pub",
        "--bind",
        publish.as_str(),
        "--replay",
        replay.as_str(),
        "--topic",
        topic,
        "--heartbeat-interval",
        "100ms",
    ];
    args.extend_from_slice(extra);
    let mut cmd = bosun(&args);
    cmd.stdin(Stdio::piped());
    let mut publisher = Proc::spawn(name, &mut cmd);
    publisher.expect_stderr("the start line", SECS_10, |l| l.contains("next sequence"));
    (publisher, publish, replay)
}

/// Writes `lines` to a publisher's stdin, one message each.
fn publish(publisher: &mut Proc, lines: &[String]) {
    let stdin = publisher.stdin.as_mut().expect("stdin was piped");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    stdin
        .write_all(text.as_bytes())
        .and_then(|_| stdin.flush())
        .expect("write the publisher's stdin");
}

/// Waits for a heartbeat of the publisher at `endpoint` whose last sequence is `last`;
/// returns its publisher id and oldest retained sequence.
fn heartbeat_with_last(endpoint: &str, last: u64) -> Option<([u8; 16], u64)> {
    let ctx = zmq::Context::new();
    let sub = raw_socket(&ctx, zmq::SUB);
    sub.set_subscribe(HEARTBEAT_TOPIC).expect("subscribe");
    sub.connect(endpoint).expect("connect");
    let until = deadline(SECS_20);
    while let Some(frames) = recv_until(&sub, until) {
        let [topic, meta] = frames.as_slice() else {
            continue;
        };
        if topic.as_slice() != HEARTBEAT_TOPIC || meta.len() < 50 {
            continue;
        }
        let u64_at = |at: usize| u64::from_be_bytes(meta[at..at + 8].try_into().expect("8"));
        if u64_at(24) == last {
            return Some((meta[8..24].try_into().expect("16"), u64_at(40)));
        }
    }
    None
}

// ---------------------------------------------------------------------------------

/// A plain pyzmq SUB (prefix `weather.`) connected to a weather and a sports `bosun pub`
/// gets, from the weather one only, each input line as exactly one payload frame after
/// the topic frame, in order, sequence 1.. in the trailing metadata frame, all with the
/// publisher id its heartbeats carry (whose replay endpoint is the one given with
/// `--replay`); its upper-cased record of each payload matches the expected one.
#[test]
fn a_plain_pyzmq_sub_gets_the_topic_and_payload_frames_from_bosun_pub() {
    if !interop_available("a_plain_pyzmq_sub_gets_the_topic_and_payload_frames_from_bosun_pub") {
        return;
    }
    let (mut weather, weather_ep, weather_replay) = bosun_pub("weather pub", "weather.paris", &[]);
    let (mut sports, sports_ep, _) = bosun_pub("sports pub", "sports.football", &[]);
    let record = TempFile::new("sub");
    let count = WEATHER.len().to_string();
    let mut sub = Proc::spawn(
        "pyzmq sub",
        &mut python(
            "pubsub_sub.py",
            &[
                "weather.",
                &count,
                record.arg(),
                "--connect",
                &weather_ep,
                "--connect",
                &sports_ep,
                "--publishers",
                "2",
            ],
        ),
    );
    // Its subscriptions have reached both publishers once it has a heartbeat of each.
    sub.expect_stdout("sub ready publishers=2", SECS_20);
    let started_ms = wall_ms();
    let sports_lines: Vec<String> = (1..=20).map(|i| format!("goal {i}")).collect();
    publish(&mut sports, &sports_lines);
    let lines: Vec<String> = WEATHER.iter().map(|(l, _)| l.to_string()).collect();
    publish(&mut weather, &lines);

    let status = sub.wait_exit(SECS_20);
    sub.drain(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "pyzmq sub: {status:?}\n{}\n{}",
        sub.dump(),
        weather.dump()
    );
    let out = sub.stdout.texts();
    let done = out
        .iter()
        .find(|l| l.starts_with("sub done"))
        .expect("done line");
    for (key, want) in [
        ("received", WEATHER.len() as u64),
        ("unfiltered", 0),
        ("malformed", 0),
    ] {
        let got: u64 = field(done, key).and_then(|v| v.parse().ok()).expect(key);
        assert_eq!(got, want, "{key} in {done}");
    }
    // The weather publisher's id, from its heartbeat (the one naming its replay endpoint).
    let weather_id = out
        .iter()
        .filter(|l| l.starts_with("sub heartbeat "))
        .find(|l| field(l, "replay").as_deref() == Some(weather_replay.as_str()))
        .and_then(|l| field(l, "publisher"))
        .unwrap_or_else(|| panic!("a heartbeat naming {weather_replay}\n{}", sub.dump()));
    // Every heartbeat says the publisher's interval (--heartbeat-interval 100ms).
    for l in out.iter().filter(|l| l.starts_with("sub heartbeat ")) {
        assert_eq!(field(l, "interval_ms").as_deref(), Some("100"), "{l}");
    }

    let text = std::fs::read_to_string(&record.0).expect("read the record");
    let recorded: Vec<Recorded> = text.lines().map(parse_record).collect();
    assert_eq!(recorded.len(), WEATHER.len(), "{text}");
    for (i, (got, (line, upper))) in recorded.iter().zip(WEATHER).enumerate() {
        let context = format!("message {}: {got:?}", i + 1);
        assert_eq!(got.topic, b"weather.paris", "{context}");
        assert_eq!(got.payload, vec![line.as_bytes().to_vec()], "{context}");
        assert_eq!(got.upper, *upper, "{context}");
        assert_eq!(got.seq, i as u64 + 1, "{context}");
        assert_eq!(got.publisher, weather_id, "{context}");
        assert!(
            got.published_at_ms + 1_000 >= started_ms && got.published_at_ms <= wall_ms(),
            "published at {} ms, the test published at {started_ms}: {context}",
            got.published_at_ms
        );
    }
    assert!(weather.is_running() && sports.is_running());
}

/// A pyzmq replay client (DEALER, `BSP-R1`) against `bosun pub --retain-count 30` after
/// 50 messages: UNKNOWN for a wrong publisher id; REPLAY from 1 draws TRIMMED with the
/// oldest retained sequence (21, also in the heartbeat); from there, batches of 7 ended
/// by END give DATA 21..50 in order, each the topic, the input line and metadata of the
/// publisher's id.
#[test]
fn a_pyzmq_replay_client_reads_the_retained_history_from_bosun_pub() {
    if !interop_available("a_pyzmq_replay_client_reads_the_retained_history_from_bosun_pub") {
        return;
    }
    const N: u64 = 50;
    const RETAINED: u64 = 30;
    let retain = RETAINED.to_string();
    let (mut publisher, publish_ep, replay_ep) =
        bosun_pub("bosun pub", "news", &["--retain-count", &retain]);
    let lines: Vec<String> = (1..=N).map(|i| format!("story {i}")).collect();
    publish(&mut publisher, &lines);
    let (id, oldest) = heartbeat_with_last(&publish_ep, N)
        .unwrap_or_else(|| panic!("no heartbeat with last {N}\n{}", publisher.dump()));
    let first_kept = N - RETAINED + 1;
    assert_eq!(
        oldest, first_kept,
        "the heartbeat's oldest retained sequence"
    );

    let mut client = Proc::spawn(
        "pyzmq replay",
        &mut python("pubsub_replay.py", &[&replay_ep, &hex(&id), "1", "7"]),
    );
    let status = client.wait_exit(SECS_30);
    client.drain(SECS_10);
    assert!(
        status.is_some_and(|s| s.success()),
        "pyzmq replay: {status:?}\n{}\n{}",
        client.dump(),
        publisher.dump()
    );
    let out = client.stdout.texts();
    let done = out
        .iter()
        .find(|l| l.starts_with("replay done"))
        .expect("done line");
    for (key, want) in [
        ("data", RETAINED),
        ("trimmed", 1),
        ("unknown", 1),
        ("malformed", 0),
        ("gaps", 0),
    ] {
        let got: u64 = field(done, key).and_then(|v| v.parse().ok()).expect(key);
        assert_eq!(got, want, "{key} in {done}\n{}", client.dump());
    }
    let trimmed = out
        .iter()
        .find(|l| l.starts_with("replay trimmed"))
        .expect("trimmed line");
    assert_eq!(
        field(trimmed, "oldest"),
        Some(first_kept.to_string()),
        "{trimmed}"
    );
    let data: Vec<&String> = out
        .iter()
        .filter(|l| l.starts_with("replay data"))
        .collect();
    for (line, seq) in data.iter().zip(first_kept..=N) {
        assert_eq!(field(line, "seq"), Some(seq.to_string()), "{line}");
        assert_eq!(field(line, "topic"), Some(hex(b"news")), "{line}");
        let want = hex(format!("story {seq}").as_bytes());
        assert_eq!(field(line, "payload"), Some(want), "{line}");
    }
    // Batches of at most 7: ceil(30 / 7) = 5 ENDs, the last saying the publisher is at 50.
    let ends: Vec<&String> = out.iter().filter(|l| l.starts_with("replay end")).collect();
    assert_eq!(ends.len(), 5, "{}", client.dump());
    assert_eq!(field(ends[4], "last"), Some(N.to_string()), "{}", ends[4]);
    assert!(publisher.is_running(), "{}", publisher.dump());
}

/// `bosun sub` against a raw pyzmq PUB (messages `[topic][payload]`, no bosun metadata)
/// says plainly, on stderr, that the messages carry no bosun metadata, instead of
/// printing them as if they were reliable or failing silently.
#[test]
fn bosun_sub_says_plainly_that_a_raw_pub_sends_no_bosun_metadata() {
    if !interop_available("bosun_sub_says_plainly_that_a_raw_pub_sends_no_bosun_metadata") {
        return;
    }
    let mut raw = Proc::spawn(
        "pyzmq raw pub",
        &mut python("pubsub_raw_pub.py", &["tcp://127.0.0.1:*", "ticks"]),
    );
    let line = raw.expect_stdout("pub bound=", SECS_10);
    let ep = field(&line, "bound").expect("bound=");
    let replay = loopback();
    let mut sub = Proc::spawn(
        "bosun sub",
        &mut bosun(&["sub", "--connect", &ep, "--replay", &replay]),
    );
    let said = sub.stderr.wait_for(deadline(SECS_10), |l| {
        let l = l.to_lowercase();
        l.contains("metadata")
            && (l.contains("no bosun") || l.contains("not bosun") || l.contains("without"))
    });
    assert!(
        said.is_some(),
        "bosun sub says the messages carry no bosun metadata\n{}",
        sub.dump()
    );
    // After the liveness: not "nothing heard", but what was heard.
    let kind = sub.stderr.wait_for(deadline(SECS_10), |l| {
        l.contains("no bosun publisher heard") && l.contains("another kind of peer")
    });
    assert!(kind.is_some(), "the peer's kind is named\n{}", sub.dump());
    sub.stdout.read_available();
    assert!(
        sub.stdout.texts().is_empty(),
        "nothing printed as delivered\n{}",
        sub.dump()
    );
    let stderr = sub.stderr.texts().join("\n");
    assert!(
        !stderr.contains("nothing heard from any publisher"),
        "not said to be silent while it talks\n{stderr}"
    );
    raw.signal(libc::SIGTERM);
}
