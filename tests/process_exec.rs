//! `bosun worker --exec` with real processes: the command's timeout (`--exec-timeout`),
//! its process group of its own (a Ctrl-C at the terminal reaches the worker, not the
//! command, and the request goes back to the broker), the stop that kills the commands
//! still running (no orphans), and `--capacity` refused without `--service`. Then the
//! race of a handler that fails once the stop was asked for, before the worker's guard
//! saw it, with the library's workers against a raw socket: its error is no answer.
//!
//! The commands write the pid of a sleeping grandchild to a file of their own, so the
//! tests can check that it is gone: only a kill of the command's whole process group
//! reaches it.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bosun::io::handler::{self, HandlerError};
use bosun::proto::frames::{mdp, ppp};
use bosun::{Heartbeat, Shutdown};
use common::{
    bosun, deadline, field, free_port, ms, now, raw_socket, recv_until, run, send, start_broker,
    start_queue, wait_until, Proc,
};

const SECS_10: Duration = Duration::from_secs(10);
/// A free port, picked by the broker or queue.
const ANY: &str = "tcp://127.0.0.1:*";
/// A heartbeat so slow (15 s to expiry) that expiry cannot explain what a test sees.
const SLOW: [&str; 4] = ["--heartbeat-interval", "5s", "--heartbeat-liveness", "3"];

/// A file for a command to write a pid into, unique to this test process and `tag`.
struct PidFile(PathBuf);

impl PidFile {
    fn new(tag: &str) -> PidFile {
        let path =
            std::env::temp_dir().join(format!("bosun-process-exec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        PidFile(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }

    /// The pid the command wrote, waiting for it within `limit`.
    fn pid(&self, limit: Duration) -> Sleeper {
        let mut text = String::new();
        let written = wait_until(limit, || {
            text = std::fs::read_to_string(&self.0).unwrap_or_default();
            text.ends_with('\n')
        });
        assert!(
            written,
            "the command never wrote its pid to {}",
            self.path()
        );
        Sleeper(text.trim().to_string())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A command's sleeping grandchild (`sleep 60`). Killed when dropped if still there,
/// so that a failing test leaves nothing running.
struct Sleeper(String);

impl Sleeper {
    /// Whether it still runs: exists and is not a zombie (a zombie has stopped running;
    /// in a container whose pid 1 reaps nothing it stays one).
    fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.0)) else {
            return false;
        };
        // `pid (comm) state ...`: the comm may hold spaces, the state follows the last ')'.
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        let sleeping = std::fs::read_to_string(format!("/proc/{}/cmdline", self.0))
            .is_ok_and(|c| c.starts_with("sleep"));
        sleeping && !matches!(state, Some('Z' | 'X'))
    }

    /// Panics unless it is gone within `limit`.
    fn expect_gone(&self, what: &str, limit: Duration) {
        assert!(
            wait_until(limit, || !self.alive()),
            "{what}: the command's process {} still runs after {limit:?}",
            self.0
        );
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        if self.alive() {
            if let Ok(pid) = self.0.parse::<libc::pid_t>() {
                // SAFETY: kill(2) has no memory effects; `alive` just saw our `sleep`.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// A command that starts a sleeping grandchild, writes its pid to `file`, says
/// `handling` on stderr and waits for it: it never answers on its own.
fn holding(file: &PidFile) -> String {
    format!(
        "sleep 60 & echo $! > {}; echo handling >&2; wait",
        file.path()
    )
}

/// A command that writes its own pid to `file`, says `handling` on stderr and becomes
/// `sleep 60` in the foreground: a SIGINT to its process group kills it at once (a
/// background `sleep` would ignore it), so its empty output is there to be mistaken
/// for a reply.
fn holding_in_front(file: &PidFile) -> String {
    format!(
        "echo $$ > {}; echo handling >&2; exec sleep 60",
        file.path()
    )
}

/// `bosun -v broker --bind ANY` with the slow heartbeat, and its endpoint.
fn broker() -> (Proc, String) {
    start_broker(
        "broker",
        &mut bosun(&[&["-v", "broker", "--bind", ANY][..], &SLOW[..]].concat()),
    )
}

/// A Majordomo worker of `svc` with the slow heartbeat and `extra` flags.
fn md_worker(name: &str, endpoint: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["-v", "worker", "--connect", endpoint, "--service", "svc"];
    args.extend(SLOW);
    args.extend_from_slice(extra);
    Proc::spawn(name, &mut bosun(&args))
}

/// Waits for the broker's next `worker ready` line; returns the worker's identity.
fn next_ready(broker: &mut Proc, who: &str) -> String {
    let line = broker.expect_stderr(&format!("{who} ready"), SECS_10, |l| {
        l.contains("worker ready")
    });
    field(&line.text, "worker").expect("worker ready line has worker=")
}

/// The broker's `worker gone` line for worker `id`.
fn gone_line(broker: &mut Proc, id: &str) -> String {
    broker
        .expect_stderr("the worker gone", SECS_10, |l| {
            l.contains("worker gone") && field(l, "worker").as_deref() == Some(id)
        })
        .text
}

/// `bosun client` with one request `body` to `svc` behind the broker at `endpoint`,
/// one attempt of `timeout`.
fn md_client(endpoint: &str, body: &str, timeout: &str) -> Proc {
    Proc::spawn(
        "client",
        &mut bosun(&[
            "client",
            "--connect",
            endpoint,
            "--service",
            "svc",
            "--request",
            body,
            "--timeout",
            timeout,
            "--retries",
            "1",
        ]),
    )
}

#[test]
fn a_command_past_its_exec_timeout_fails_its_request_is_killed_and_the_worker_goes_on() {
    let file = PidFile::new("timeout");
    let (mut b, ep) = broker();
    // `slow` starts a sleeping grandchild and waits for it; anything else is echoed.
    let cmd = format!(
        "x=$(cat); if [ \"$x\" = slow ]; then sleep 60 & echo $! > {}; wait; fi; printf '%s' \"$x\"",
        file.path()
    );
    let mut w = md_worker("worker", &ep, &["--exec-timeout", "300ms", "--exec", &cmd]);
    next_ready(&mut b, "worker");

    let started = now();
    let mut c = md_client(&ep, "slow", "20s");
    let status = c.expect_done(SECS_10);
    let took = now() - started;
    assert!(!status.success(), "the request must fail\n{}", c.dump());
    assert!(c.stdout.texts().is_empty(), "no reply line\n{}", c.dump());
    assert!(
        c.stderr
            .texts()
            .iter()
            .any(|l| l.contains("timed out after 300ms")),
        "the client names the timeout\n{}",
        c.dump()
    );
    // One attempt of 20 s: only the worker's timeout can end it this soon.
    assert!(took < Duration::from_secs(5), "failed after {took:?}");
    file.pid(ms(2000))
        .expect_gone("after the timeout", Duration::from_secs(5));

    let mut next = md_client(&ep, "fast", "10s");
    assert!(next.expect_done(SECS_10).success(), "{}", next.dump());
    assert_eq!(next.stdout.texts(), ["fast"], "{}", w.dump());
    assert!(w.is_running(), "{}", w.dump());
}

#[test]
fn ctrl_c_at_the_terminal_hands_the_request_of_a_running_command_back_to_the_broker() {
    let file = PidFile::new("ctrl-c");
    let (mut b, ep) = broker();
    let mut a = md_worker(
        "worker-a",
        &ep,
        &["--reply-prefix", "A:", "--exec", &holding_in_front(&file)],
    );
    let id_a = next_ready(&mut b, "worker A");
    // A is the only worker, so the request is A's; its command says when it runs.
    let mut c = md_client(&ep, "job", "20s");
    a.expect_stderr("the request reaching worker A", SECS_10, |l| {
        l == "handling"
    });
    let sleeper = file.pid(ms(2000));
    let mut wb = md_worker("worker-b", &ep, &["--reply-prefix", "B:"]);
    next_ready(&mut b, "worker B");

    // Ctrl-C at a terminal: SIGINT to the whole foreground process group, the worker's.
    assert!(a.is_running(), "{}", a.dump());
    // SAFETY: kill(2) has no memory effects; the group is our running child's.
    unsafe {
        libc::kill(-a.pid(), libc::SIGINT);
    }
    let status = a.expect_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "{}", a.dump());

    let gone = gone_line(&mut b, &id_a);
    assert_eq!(field(&gone, "requeued").as_deref(), Some("1"), "{gone}");
    let status = c.expect_done(SECS_10);
    assert_eq!(
        c.stdout.texts(),
        ["B:job"],
        "the second worker answers, never an empty line\n{}\n{}",
        c.dump(),
        b.dump()
    );
    assert!(status.success(), "{}", c.dump());
    sleeper.expect_gone("after Ctrl-C", Duration::from_secs(3));
    assert!(wb.is_running() && b.is_running());
}

/// SIGTERM (to the worker alone, as `kill PID` does) while its command runs: the worker
/// exits 0 within 3 s and the command's process is gone.
fn sigterm_kills_the_running_command(mut worker: Proc, sleeper: &Sleeper) -> Proc {
    worker.signal(libc::SIGTERM);
    let status = worker.expect_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(0), "{}", worker.dump());
    sleeper.expect_gone("after SIGTERM", Duration::from_secs(3));
    worker
}

#[test]
fn sigterm_on_a_paranoid_pirate_worker_leaves_no_command_running() {
    let file = PidFile::new("sigterm-ppp");
    let (_q, frontend, backend) = start_queue(
        "queue",
        &mut bosun(&[
            "queue",
            "--frontend",
            ANY,
            "--backend",
            ANY,
            "--heartbeat-interval",
            "1s",
            "--heartbeat-liveness",
            "5",
        ]),
    );
    let mut w = Proc::spawn(
        "worker",
        &mut bosun(&[
            "worker",
            "--connect",
            &backend,
            "--heartbeat-interval",
            "1s",
            "--heartbeat-liveness",
            "5",
            "--exec",
            &holding(&file),
        ]),
    );
    // The worker may not be READY yet: the client's attempts are long enough.
    let _c = Proc::spawn(
        "client",
        &mut bosun(&[
            "client",
            "--connect",
            &frontend,
            "--request",
            "job",
            "--timeout",
            "20s",
            "--retries",
            "1",
        ]),
    );
    w.expect_stderr("the request reaching the worker", SECS_10, |l| {
        l == "handling"
    });
    let sleeper = file.pid(ms(2000));
    sigterm_kills_the_running_command(w, &sleeper);
}

#[test]
fn sigterm_on_a_majordomo_worker_with_a_pool_leaves_no_command_running() {
    let file = PidFile::new("sigterm-mdp");
    let (mut b, ep) = broker();
    let w = md_worker(
        "worker",
        &ep,
        &["--capacity", "2", "--exec", &holding(&file)],
    );
    let id = next_ready(&mut b, "worker");
    let _c = md_client(&ep, "job", "20s");
    let mut w = w;
    w.expect_stderr("the request reaching the worker", SECS_10, |l| {
        l == "handling"
    });
    let sleeper = file.pid(ms(2000));
    sigterm_kills_the_running_command(w, &sleeper);
    let gone = gone_line(&mut b, &id);
    assert_eq!(field(&gone, "requeued").as_deref(), Some("1"), "{gone}");
}

#[test]
fn capacity_without_service_is_refused() {
    let connect = format!("tcp://127.0.0.1:{}", free_port());
    let out = run(
        &["worker", "--connect", &connect, "--capacity", "2"],
        &[],
        Duration::from_secs(5),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("--capacity") && l.contains("--service")),
        "the error names --capacity and --service: {out:?}"
    );
}

// ---------------------------------------------------------------------------------
// A handler that fails once the stop was asked for, before the guard saw the stop:
// the library's workers against a raw ROUTER playing the broker or queue.

/// A handler that asks `stop` to stop, then fails at once (as a command killed by the
/// stop does), far sooner than the guard's next look; counts its calls.
fn failing_on_stop(stop: &Shutdown, calls: &std::sync::Arc<AtomicU64>) -> handler::Handler {
    let (stop, calls) = (stop.clone(), std::sync::Arc::clone(calls));
    handler::from_fn(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        stop.trigger();
        Err(HandlerError::new("command killed"))
    })
}

/// A ROUTER bound to a free port, and its endpoint.
fn router(ctx: &zmq::Context) -> (zmq::Socket, String) {
    let s = raw_socket(ctx, zmq::ROUTER);
    s.bind("tcp://127.0.0.1:*").expect("bind");
    let ep = s
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8 endpoint");
    (s, ep)
}

#[test]
fn a_majordomo_worker_whose_handler_fails_after_the_stop_hands_the_request_back() {
    let ctx = zmq::Context::new();
    let (broker, ep) = router(&ctx);
    let stop = Shutdown::new();
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let handler = failing_on_stop(&stop, &calls);
    let (wctx, wep, wstop) = (ctx.clone(), ep.clone(), stop.clone());
    let worker = std::thread::spawn(move || {
        bosun::Worker::builder(&wep, "svc")
            .context(&wctx)
            .heartbeat(Heartbeat {
                interval: Duration::from_secs(5),
                liveness: 3,
            })
            .connect()?
            .run(handler, &wstop)
    });
    let until = deadline(SECS_10);
    let ready = recv_until(&broker, until).expect("READY");
    assert_eq!(ready[1..], mdp::ready(b"svc", 1)[..], "{ready:?}");
    let identity = ready[0].clone();
    send(
        &broker,
        &mdp::routed(
            Some(&identity),
            mdp::Command::Request,
            b"client-1",
            vec![b"job".to_vec()],
        ),
    );
    // Everything up to DISCONNECT, in order: a REPLY would come before it.
    let mut seen = Vec::new();
    loop {
        let msg = recv_until(&broker, until)
            .unwrap_or_else(|| panic!("no DISCONNECT; the worker sent {seen:?}"));
        let done = msg[1..] == mdp::command(None, mdp::Command::Disconnect)[..];
        seen.push(msg);
        if done {
            break;
        }
    }
    let replies: Vec<_> = seen
        .iter()
        .filter(|m| m.get(3).map(Vec::as_slice) == Some(&[mdp::Command::Reply as u8][..]))
        .collect();
    assert!(
        replies.is_empty(),
        "the failure went out as a reply: {seen:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = worker.join().expect("worker thread").expect("worker run");
    assert_eq!(stats.handled, 0, "a request handed back is not handled");
}

#[test]
fn a_paranoid_pirate_worker_whose_handler_fails_after_the_stop_sends_nothing_for_it() {
    let ctx = zmq::Context::new();
    let (queue, ep) = router(&ctx);
    let stop = Shutdown::new();
    let calls = std::sync::Arc::new(AtomicU64::new(0));
    let handler = failing_on_stop(&stop, &calls);
    let (wep, wstop) = (ep.clone(), stop.clone());
    let worker = std::thread::spawn(move || {
        // A context of its own, dropped when `run` returns: its sockets' last messages
        // have left by then (libzmq flushes them within the linger).
        let wctx = zmq::Context::new();
        bosun::PpWorker::builder(&wep)
            .context(&wctx)
            .heartbeat(Heartbeat {
                interval: Duration::from_secs(5),
                liveness: 3,
            })
            .connect()?
            .run(handler, &wstop)
    });
    let until = deadline(SECS_10);
    let ready = recv_until(&queue, until).expect("READY");
    assert_eq!(ready[1..], ppp::Command::Ready.frames()[..], "{ready:?}");
    let identity = ready[0].clone();
    send(
        &queue,
        &[identity, b"client-1".to_vec(), Vec::new(), b"job".to_vec()],
    );
    let stats = worker.join().expect("worker thread").expect("worker run");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.handled, 0);
    // The worker's context is gone, so whatever it sent is on its way; a reply would
    // arrive within this window on loopback. Heartbeats may come; nothing else.
    let window = deadline(ms(500));
    while let Some(msg) = recv_until(&queue, window) {
        assert_eq!(
            msg[1..],
            ppp::Command::Heartbeat.frames()[..],
            "the failure went out as a reply: {msg:?}"
        );
    }
}
