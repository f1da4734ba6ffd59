//! `bosun demo`: the main job. A Majordomo broker (or, with `--pattern paranoid-pirate`,
//! a queue), two workers and a client, each a child process of this binary; one worker
//! is SIGKILLed half way and the broker SIGKILLed mid-request and restarted; every
//! request must still be answered exactly once.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::error::Error;
use crate::io::{self, Shutdown};

/// Options of `bosun demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Which pattern: a Majordomo broker (also restarted once, mid-request) or a
    /// Paranoid Pirate queue.
    #[arg(long, value_enum, default_value_t = Pattern::Majordomo)]
    pub pattern: Pattern,
    /// How many requests the client sends (at least 3: one before the worker is
    /// killed, one after, and one in flight when the broker is killed).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(3..))]
    pub requests: u32,
    /// Simulated work per request at the workers.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub work: Duration,
    /// Show the children's logs (broker or queue, workers) on stderr.
    #[arg(long)]
    pub logs: bool,
    /// Give up on the whole demo after this long (more than zero).
    #[arg(long, default_value = "60s", value_parser = parse_deadline)]
    pub deadline: Duration,
}

/// `--deadline`: a duration, not zero (a zero deadline ends the demo before it starts).
fn parse_deadline(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// The pattern `bosun demo` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// `bosun broker` + 2 Majordomo workers + a Majordomo client; a worker is
    /// SIGKILLed and the broker SIGKILLed and restarted.
    Majordomo,
    /// `bosun queue` + 2 Paranoid Pirate workers + a Lazy Pirate client; a worker is
    /// SIGKILLed.
    ParanoidPirate,
}

/// The service the Majordomo demo's workers offer.
const SERVICE: &str = "echo";

/// Heartbeat of the demo's queue and workers: fast, so the failover shows in a second.
const HEARTBEAT: &[&str] = &["--heartbeat-interval", "250ms", "--heartbeat-liveness", "3"];

/// Children are SIGTERMed, then SIGKILLed if they have not exited within this.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Child processes, stopped when dropped so that no demo leaves one behind.
/// The second field is how long each may take to stop after SIGTERM.
struct Children(Vec<(String, Child)>, Duration);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            terminate(child);
        }
        for (name, child) in &mut self.0 {
            if !wait_for_exit(child, self.1) {
                tracing::warn!(name, after = ?self.1, "child did not stop on SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs the demo and prints `demo: sent N, answered N, lost 0, duplicates 0, failovers F`.
pub fn run(args: DemoArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("find own executable", e))?;
    let deadline = io::now() + args.deadline;
    let mut children = Children(Vec::new(), STOP_GRACE);

    let mut broker_events = None;
    let (client_endpoint, worker_endpoint) = match args.pattern {
        Pattern::ParanoidPirate => {
            let mut queue = spawn(
                Command::new(&exe)
                    .args(["queue", "--frontend", "tcp://127.0.0.1:*"])
                    .args(["--backend", "tcp://127.0.0.1:*"])
                    .args(HEARTBEAT)
                    .stderr(child_logs(args.logs))
                    .stdout(Stdio::piped()),
            )?;
            let queue_out = lines(queue.stdout.take());
            children.0.push(("queue".into(), queue));
            let bound = queue_out
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| demo_error("the queue did not report its endpoints"))?;
            let (frontend, backend) = parse_queue_line(&bound)
                .ok_or_else(|| demo_error(&format!("unexpected queue output: {bound}")))?;
            println!("demo: queue frontend={frontend} backend={backend}");
            (frontend, backend)
        }
        Pattern::Majordomo => {
            let (endpoint, events) =
                start_broker(&exe, "tcp://127.0.0.1:*", args.logs, &mut children)?;
            println!("demo: broker {endpoint}");
            broker_events = Some(events);
            (endpoint.clone(), endpoint)
        }
    };
    let service_args: &[&str] = match args.pattern {
        Pattern::Majordomo => &["--service", SERVICE],
        Pattern::ParanoidPirate => &[],
    };

    let work = humantime::format_duration(args.work).to_string();
    for name in ["w1", "w2"] {
        let worker = spawn(
            Command::new(&exe)
                .args(["worker", "--connect", &worker_endpoint, "--delay", &work])
                .args(service_args)
                .args(["--reply-prefix", &format!("{name}:")])
                .args(["--reconnect-initial", "250ms"])
                .args(HEARTBEAT)
                .stderr(child_logs(args.logs)),
        )?;
        println!("demo: worker {name} pid {}", worker.id());
        children.0.push((name.into(), worker));
    }

    let mut client = spawn(
        Command::new(&exe)
            .args(["client", "--connect", &client_endpoint, "--summary"])
            .args(service_args)
            .args([
                "--timeout",
                "1s",
                "--retries",
                "5",
                "--backoff-initial",
                "100ms",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let replies = lines(client.stdout.take());
    let client_err = lines_of(client.stderr.take());
    // The first half of the requests now, the rest once a worker has been killed, so
    // that the kill always lands before a request that the dead worker will be handed.
    let mut feed = Feed {
        stdin: client.stdin.take(),
        written: 0,
        total: args.requests,
    };
    feed.write_up_to(args.requests / 2)?;
    children.0.push(("client".into(), client));

    let sent = u64::from(args.requests);
    let mut count = Count::default();
    let mut killed = false;
    let mut broker_restarted = args.pattern != Pattern::Majordomo;
    let mut requeued = 0u64;
    while count.replies() < sent && !shutdown.is_triggered() {
        let left = deadline.saturating_duration_since(io::now());
        let Ok(reply) = replies.recv_timeout(left.min(io::SHUTDOWN_CHECK)) else {
            if io::now() >= deadline {
                eprintln!("bosun demo: deadline reached");
                break;
            }
            continue;
        };
        let worker = count.reply(&reply);
        if !killed && count.replies() == u64::from(feed.written) {
            if count.workers.len() < 2 && feed.written + 1 < feed.total {
                // Until both workers have answered, the dispatch order is unknown:
                // one more request at a time until it is.
                feed.write_up_to(feed.written + 1)?;
                continue;
            }
            // The client waits for its next line, both workers are idle, and the one
            // that did not answer last is first in the queue's least-recently-used
            // order: the next request goes to it. Kill it, then send that request.
            let victim = if worker == Some("w1") { "w2" } else { "w1" };
            if let Some((_, child)) = children.0.iter_mut().find(|(n, _)| n == victim) {
                let _ = child.kill();
                let _ = child.wait();
                println!(
                    "demo: SIGKILLed worker {victim} after {} replies",
                    count.answered
                );
            }
            killed = true;
            let upto = if broker_restarted {
                feed.total
            } else {
                // At least one request now (nothing else would move the demo on), and
                // at least one left for the broker's kill.
                let left = feed.total - feed.written;
                (feed.written + (left / 2).max(1)).min(feed.total - 1)
            };
            feed.write_up_to(upto)?;
        }
        // Not `else`: when the worker's kill left nothing to write, the broker's turn
        // is now.
        if killed && !broker_restarted && count.replies() == u64::from(feed.written) {
            // Everything written is answered: send one request and kill the broker
            // while it is in flight, then start a new broker on the same endpoint.
            feed.write_up_to(feed.written + 1)?;
            // Once a worker holds it (the broker's mmi.stats says so), the broker dies
            // holding it and the client must retry on the new broker.
            if !wait_until_busy(&client_endpoint, io::now() + args.work, shutdown) {
                println!("demo: no worker was seen holding the request; killing the broker anyway");
            }
            if let Some((_, child)) = children.0.iter_mut().find(|(n, _)| n == "broker") {
                let _ = child.kill();
                let _ = child.wait();
            }
            children.0.retain(|(n, _)| n != "broker");
            let (_, events) = start_broker(&exe, &client_endpoint, args.logs, &mut children)?;
            if let Some(old) = broker_events.replace(events) {
                // The old broker is dead: its log ends, and every line of it is counted
                // (its reader thread may still be behind).
                let until = io::now() + Duration::from_secs(2);
                while let Ok(n) = old.recv_timeout(until.saturating_duration_since(io::now())) {
                    requeued += n;
                }
            }
            println!(
                "demo: SIGKILLed the broker mid-request and restarted it after {} replies",
                count.answered
            );
            broker_restarted = true;
            feed.write_up_to(feed.total)?;
        }
    }
    let written = u64::from(feed.written);
    drop(feed);
    let interrupted = shutdown.is_triggered();
    if interrupted {
        // Ctrl-C: stop the client now (it prints what it has and its summary), and
        // count every reply it printed, so the counts below agree with its own.
        // Every child is told to stop at once (a terminal's Ctrl-C has told them
        // already; a `kill -INT` of the demo alone has not).
        for (_, child) in &mut children.0 {
            terminate(child);
        }
        children.1 = INTERRUPTED_STOP;
        let until = io::now() + INTERRUPTED_GRACE;
        while let Ok(reply) = replies.recv_timeout(until.saturating_duration_since(io::now())) {
            count.reply(&reply);
        }
    }
    // The client exits once stdin is drained and the last reply printed.
    let summary = stop_client(&mut children, &client_err, interrupted);
    if let Some(line) = &summary {
        println!("demo: {line}");
    }
    // A failover is a client retry, or a request the broker moved from a dead worker
    // to a live one.
    requeued += broker_events.map_or(0, |rx| rx.try_iter().sum::<u64>());
    let failovers = summary.as_deref().and_then(retries_of).unwrap_or(0) + requeued;
    let restarts = match args.pattern {
        Pattern::Majordomo => format!(", broker restarts {}", u8::from(broker_restarted)),
        Pattern::ParanoidPirate => String::new(),
    };
    let (answered, duplicates) = (count.answered, count.duplicates);
    if interrupted {
        // Not every request was written: count what was, and what of it is unanswered
        // (not "lost": the demo stopped before they could be).
        let unanswered = written.saturating_sub(answered);
        println!(
            "demo: interrupted: written {written}, answered {answered}, unanswered {unanswered}, duplicates {duplicates}, failovers {failovers}{restarts}"
        );
    } else {
        let lost = sent.saturating_sub(answered);
        println!(
            "demo: sent {sent}, answered {answered}, lost {lost}, duplicates {duplicates}, failovers {failovers}{restarts}"
        );
    }
    drop(children);
    Ok(if answered == sent && duplicates == 0 && count.wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How long an interrupted demo waits for the client's last replies and summary.
const INTERRUPTED_GRACE: Duration = Duration::from_millis(100);

/// How long an interrupted demo's children may take to stop before they are killed:
/// with [`INTERRUPTED_GRACE`], the whole stop stays under half a second.
const INTERRUPTED_STOP: Duration = Duration::from_millis(300);

/// The client's replies, counted.
#[derive(Debug, Default)]
struct Count {
    seen: HashSet<String>,
    workers: HashSet<String>,
    answered: u64,
    duplicates: u64,
    wrong: u64,
}

impl Count {
    /// Counts one reply line (`w1:request-3`); the worker that answered it.
    fn reply<'a>(&mut self, reply: &'a str) -> Option<&'a str> {
        match reply.split_once(':') {
            Some((worker, body)) => {
                if !body.starts_with("request-") {
                    self.wrong += 1;
                } else if self.seen.insert(body.to_string()) {
                    self.answered += 1;
                } else {
                    self.duplicates += 1;
                }
                self.workers.insert(worker.to_string());
                Some(worker)
            }
            None => {
                self.wrong += 1;
                None
            }
        }
    }

    /// Replies of any kind so far.
    fn replies(&self) -> u64 {
        self.answered + self.duplicates + self.wrong
    }
}

/// Asks the broker at `endpoint` (`mmi.stats`) until a worker of the demo's service holds
/// a request, or `deadline` passes; whether one did.
fn wait_until_busy(endpoint: &str, deadline: std::time::Instant, shutdown: &Shutdown) -> bool {
    let ctx = zmq::Context::new();
    let retry = crate::config::Retry {
        timeout: Duration::from_millis(200),
        retries: 1,
        ..crate::config::Retry::default()
    };
    let Ok(mut stats) = crate::io::mdclient::MajordomoClient::builder(endpoint)
        .context(&ctx)
        .retry(retry)
        .shutdown(shutdown)
        .connect()
    else {
        return false;
    };
    while io::now() < deadline && !shutdown.is_triggered() {
        let busy = stats
            .request("mmi.stats", SERVICE.as_bytes().to_vec())
            .ok()
            .and_then(|reply| busy_of(&String::from_utf8_lossy(&reply)));
        if busy.is_some_and(|n| n > 0) {
            return true;
        }
        // Between probes: a few milliseconds, so the probes do not load the broker.
        let _ = io::poll(&mut [], 5);
    }
    false
}

/// The `busy=` count of an `mmi.stats` reply's first service line.
fn busy_of(stats: &str) -> Option<u64> {
    stats
        .lines()
        .skip(1)
        .flat_map(str::split_whitespace)
        .find_map(|kv| kv.strip_prefix("busy="))
        .and_then(|n| n.parse().ok())
}

/// The requests written to the client's stdin so far; stdin is closed (the client's
/// end of input) once all are written.
struct Feed {
    stdin: Option<ChildStdin>,
    written: u32,
    total: u32,
}

impl Feed {
    /// Writes requests up to number `upto` (at most `total`), in order.
    fn write_up_to(&mut self, upto: u32) -> Result<(), Error> {
        let upto = upto.min(self.total);
        if let Some(stdin) = self.stdin.as_mut() {
            let text: String = (self.written + 1..=upto)
                .map(|i| format!("request-{i}\n"))
                .collect();
            stdin
                .write_all(text.as_bytes())
                .and_then(|_| stdin.flush())
                .map_err(|e| Error::io("write requests to the client", e))?;
        }
        self.written = self.written.max(upto);
        if self.written >= self.total {
            self.stdin = None;
        }
        Ok(())
    }
}

/// Starts `bosun broker -v` bound at `endpoint` and returns the endpoint it bound and a
/// channel of how many requests each "worker gone" line of its log re-queued.
fn start_broker(
    exe: &std::path::Path,
    endpoint: &str,
    show_logs: bool,
    children: &mut Children,
) -> Result<(String, mpsc::Receiver<u64>), Error> {
    let mut broker = spawn(
        Command::new(exe)
            .args(["-v", "broker", "--bind", endpoint])
            .args(HEARTBEAT)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )?;
    let out = lines(broker.stdout.take());
    let log = lines_of(broker.stderr.take());
    children.0.push(("broker".into(), broker));
    let bound = out
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| demo_error("the broker did not report its endpoint"))?;
    let endpoint = bound
        .strip_prefix("broker bound=")
        .ok_or_else(|| demo_error(&format!("unexpected broker output: {bound}")))?
        .to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in log.iter() {
            if show_logs {
                eprintln!("{line}");
            }
            if let Some(n) = requeued_of(&line) {
                if tx.send(n).is_err() {
                    return;
                }
            }
        }
    });
    Ok((endpoint, rx))
}

/// The `requeued=N` figure of a broker "worker gone" log line.
fn requeued_of(line: &str) -> Option<u64> {
    if !line.contains("worker gone") {
        return None;
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("requeued="))
        .and_then(|n| n.parse().ok())
}

fn child_logs(show: bool) -> Stdio {
    if show {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

fn spawn(cmd: &mut Command) -> Result<Child, Error> {
    cmd.spawn()
        .map_err(|e| Error::io("start a child process", e))
}

fn demo_error(what: &str) -> Error {
    Error::io("demo", std::io::Error::other(what.to_string()))
}

/// Lines of a child's stdout, read on a thread.
fn lines(out: Option<ChildStdout>) -> mpsc::Receiver<String> {
    lines_of(out)
}

fn lines_of<R: std::io::Read + Send + 'static>(out: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(out) = out {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Parses `queue frontend=A backend=B`.
fn parse_queue_line(line: &str) -> Option<(String, String)> {
    let mut parts = line.split_whitespace();
    (parts.next()? == "queue").then_some(())?;
    let frontend = parts.next()?.strip_prefix("frontend=")?;
    let backend = parts.next()?.strip_prefix("backend=")?;
    Some((frontend.to_string(), backend.to_string()))
}

/// Waits for the client to exit and returns its `client: ...` summary line.
/// Interrupted, it waits [`INTERRUPTED_GRACE`] at most for each.
fn stop_client(
    children: &mut Children,
    stderr: &mpsc::Receiver<String>,
    interrupted: bool,
) -> Option<String> {
    let (_, client) = children.0.iter_mut().find(|(n, _)| n == "client")?;
    let grace = if interrupted {
        INTERRUPTED_GRACE
    } else {
        STOP_GRACE
    };
    if !wait_for_exit(client, grace) {
        terminate(client);
        wait_for_exit(client, grace);
    }
    let deadline = io::now()
        + if interrupted {
            INTERRUPTED_GRACE
        } else {
            Duration::from_secs(2)
        };
    while let Ok(line) = stderr.recv_timeout(deadline.saturating_duration_since(io::now())) {
        if line.starts_with("client: ") {
            return Some(line);
        }
    }
    None
}

/// The `retries N` figure of a client summary line.
fn retries_of(summary: &str) -> Option<u64> {
    summary
        .split(", ")
        .find_map(|part| part.strip_prefix("retries "))
        .and_then(|n| n.trim().parse().ok())
}

fn terminate(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid we own and a valid signal has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Waits up to `limit` for `child` to exit; true when it did.
fn wait_for_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = io::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if io::now() >= deadline => return false,
            Ok(None) => {
                // No portable wait-with-timeout on a child: poll its status every 10 ms.
                let mut none: [zmq::PollItem; 0] = [];
                let _ = zmq::poll(&mut none, 10);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_child_output() {
        assert_eq!(
            parse_queue_line("queue frontend=tcp://127.0.0.1:1 backend=tcp://127.0.0.1:2"),
            Some(("tcp://127.0.0.1:1".into(), "tcp://127.0.0.1:2".into()))
        );
        assert_eq!(parse_queue_line("nonsense"), None);
        assert_eq!(
            retries_of("client: sent 20, answered 20, retries 2, discarded 0"),
            Some(2)
        );
        assert_eq!(
            requeued_of("WARN bosun::io::broker: worker gone worker=ab reason=Expired requeued=1"),
            Some(1)
        );
        assert_eq!(requeued_of("INFO worker ready requeued=1"), None);
        assert_eq!(
            busy_of("200\nservice=echo idle=1 busy=1 capacity=2 queued=0"),
            Some(1)
        );
        assert_eq!(busy_of("200"), None);
        assert_eq!(busy_of("404\n"), None);
    }
}
