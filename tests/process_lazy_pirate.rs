//! Lazy Pirate with real processes: `bosun client` against `bosun server`s that crash,
//! stall, are SIGKILLed and come back on the same port, or are not there at all.

mod common;

use std::time::Duration;

use common::{bosun, field, ms, parse_summary, request_lines, run, Proc, Summary};

/// Requests each crash test sends.
const REQUESTS: usize = 12;

/// Starts `bosun server --bind ENDPOINT extra...` and returns it with its bound endpoint.
fn server(name: &str, endpoint: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["server", "--bind", endpoint];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(name, &mut bosun(&args));
    let line = proc.expect_stdout("server bound=", Duration::from_secs(10));
    let bound = field(&line, "bound").expect("server line has bound=");
    (proc, bound)
}

/// Starts a client that reads `REQUESTS` lines from stdin (then end of input).
fn client(endpoint: &str) -> Proc {
    let mut cmd = bosun(&[
        "client",
        "--connect",
        endpoint,
        "--timeout",
        "500ms",
        "--retries",
        "10",
        "--backoff-initial",
        "50ms",
        "--summary",
    ]);
    cmd.stdin(std::process::Stdio::piped());
    let mut proc = Proc::spawn("client", &mut cmd);
    proc.write_stdin(&request_lines(REQUESTS));
    proc.close_stdin();
    proc
}

/// Waits for the client to finish and checks it printed every reply once, in order,
/// exited 0, and retried at least once. Returns its summary.
fn expect_all_answered(client: &mut Proc) -> Summary {
    let status = client.expect_exit(Duration::from_secs(15));
    let until = common::deadline(ms(2000));
    assert!(client.stdout.read_to_end(until), "client stdout not closed");
    assert!(client.stderr.read_to_end(until), "client stderr not closed");
    assert!(
        status.success(),
        "client failed: {status}\nstderr:\n{}",
        client.stderr.dump()
    );
    let want: Vec<String> = (1..=REQUESTS).map(|i| format!("req-{i}")).collect();
    assert_eq!(
        client.stdout.texts(),
        want,
        "every reply exactly once and in order"
    );
    let summary = client
        .stderr
        .texts()
        .iter()
        .find_map(|l| parse_summary(l))
        .unwrap_or_else(|| panic!("no summary line:\n{}", client.stderr.dump()));
    let n = REQUESTS as u64;
    assert_eq!((summary.sent, summary.answered), (n, n), "{summary:?}");
    assert!(
        summary.retries >= 1,
        "the lost request must have been retried: {summary:?}"
    );
    summary
}

#[test]
fn client_rides_out_a_server_crash_and_restart_on_the_same_port() {
    let (mut first, endpoint) = server("server-1", "tcp://127.0.0.1:*", &["--crash-after", "3"]);
    let mut client = client(&endpoint);

    // The server exits (status 3) on receiving request 3, without answering it.
    let status = first.expect_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(3), "simulated crash exits 3");

    let (_second, again) = server("server-2", &endpoint, &[]);
    assert_eq!(again, endpoint, "restarted on the same port");
    expect_all_answered(&mut client);
}

#[test]
fn client_rides_out_a_server_sigkilled_while_it_holds_a_request() {
    // Request 4 stalls for far longer than the test: the server holds it when killed.
    let (mut first, endpoint) = server(
        "server-1",
        "tcp://127.0.0.1:*",
        &["--delay-every", "4", "--delay", "60s"],
    );
    let mut client = client(&endpoint);

    let stalled = first
        .stderr
        .wait_for(common::deadline(Duration::from_secs(10)), |l| {
            l.contains("simulating a stall")
        });
    assert!(
        stalled.is_some(),
        "server never stalled:\n{}",
        first.stderr.dump()
    );
    // Three requests were answered before the stall.
    let got = client
        .stdout
        .wait_count(common::deadline(Duration::from_secs(5)), 3, |_| true);
    assert_eq!(got, 3, "answers before the stall");
    first.kill();
    assert!(!first.is_running());

    let (_second, again) = server("server-2", &endpoint, &[]);
    assert_eq!(again, endpoint, "restarted on the same port");
    expect_all_answered(&mut client);
}

#[test]
fn client_rides_out_a_server_that_drops_requests() {
    // Every 3rd request is dropped and the REP socket bound again (a quick restart).
    let (mut srv, endpoint) = server("server", "tcp://127.0.0.1:*", &["--fail-every", "3"]);
    let mut client = client(&endpoint);
    expect_all_answered(&mut client);
    assert!(
        srv.is_running(),
        "server survives its own simulated failures"
    );
}

/// Checks a client that had no server gave up after `attempts` attempts, saying so in
/// one line naming the endpoint, within the given time window.
fn expect_gave_up(retries: u32, min: Duration, max: Duration) {
    let endpoint = format!("tcp://127.0.0.1:{}", common::free_port());
    let retries = retries.to_string();
    let out = run(
        &[
            "client",
            "--connect",
            &endpoint,
            "--request",
            "x",
            "--timeout",
            "300ms",
            "--retries",
            &retries,
            "--backoff-initial",
            "50ms",
            "--backoff-max",
            "50ms",
        ],
        &[],
        Duration::from_secs(10),
    );
    assert!(!out.status.success(), "a client with no server fails");
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(out.stdout.is_empty(), "no reply printed: {out:?}");
    let wanted = format!("after {retries} attempt");
    let gave_up: Vec<&String> = out.stderr.iter().filter(|l| l.contains(&wanted)).collect();
    assert_eq!(gave_up.len(), 1, "one give-up line: {:?}", out.stderr);
    assert!(
        gave_up[0].starts_with("bosun client:") && gave_up[0].contains(&endpoint),
        "the give-up line names the endpoint: {:?}",
        gave_up[0]
    );
    assert!(
        out.elapsed >= min && out.elapsed < max,
        "gave up after {:?}, expected {min:?}..{max:?}",
        out.elapsed
    );
}

#[test]
fn client_with_no_server_gives_up_after_every_attempt() {
    // 3 × 300 ms timeouts and two 40..50 ms backoffs.
    expect_gave_up(3, ms(980), Duration::from_secs(3));
}

#[test]
fn client_with_one_attempt_gives_up_after_one_timeout() {
    expect_gave_up(1, ms(300), ms(1500));
}
