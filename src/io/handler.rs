//! Request handlers: one type for every worker and server.
//!
//! A [`Handler`] sees the whole [`Request`] (id, attempt, service, headers, payload
//! frames) and returns the reply's payload frames or a [`HandlerError`]. An error, a
//! panic, or an `exec` command that fails reaches a bosun client as a typed remote error
//! with its message ([`crate::error::ClientError::Remote`]); the worker goes on serving.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::io::{self, guard::lock};
use crate::proto::envelope::MAX_PAYLOAD_BYTES;
pub use crate::proto::envelope::{HandlerError, Reply, Request};
use crate::proto::frames::Frames;

/// Answers one request. Shared by every thread of a worker's pool, so `Fn + Sync`: a
/// handler with state keeps it behind a `Mutex` or atomics.
pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// A handler from a function of the request.
pub fn from_fn(f: impl Fn(Request) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

/// A handler from a function of the request's payload joined into bytes, whose
/// result is the one-frame reply (for handlers that think in bytes).
pub fn bytes(f: impl Fn(Vec<u8>) -> Vec<u8> + Send + Sync + 'static) -> Handler {
    Arc::new(move |req: Request| Ok(vec![f(req.body())]))
}

/// Replies with the request's payload frames unchanged.
pub fn echo() -> Handler {
    Arc::new(|req: Request| Ok(req.payload))
}

/// Runs `sh -c cmd` per request with the payload (frames joined) on stdin; the reply is
/// its stdout, less one trailing newline (so `echo`-style commands give one reply per
/// line). A command that cannot start, exits non-zero, is killed or overruns its
/// timeout is a failed request: its client gets the reason (and the command's stderr
/// goes to the worker's stderr). [`exec_with`] with [`ExecOptions::default`]: a timeout
/// of [`DEFAULT_EXEC_TIMEOUT`].
pub fn exec(cmd: String) -> Handler {
    exec_with(cmd, ExecOptions::default())
}

/// How long an [`exec`] command may run by default: 30 s. Far longer than a client
/// with the default settings waits for an answer in all (three attempts of 2.5 s and
/// the pauses between them, under 10 s), so no command whose answer is still awaited is
/// killed under the defaults; short enough that a stuck command frees its worker (and
/// the worker stops heartbeating as busy) within half a minute. Raise it, with the
/// clients' timeout, for long jobs.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`exec_with`] runs its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// The longest a command may run (until its stdout closes and it exits). One that
    /// overruns has its process group killed (SIGKILL) and fails its request with a
    /// message naming the timeout. This bounds how long a worker stays busy with one
    /// request, and so how long it heartbeats while it makes no progress. Default
    /// [`DEFAULT_EXEC_TIMEOUT`]; zero fails every request at once.
    pub timeout: Duration,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: DEFAULT_EXEC_TIMEOUT,
        }
    }
}

/// [`exec`] with `options`. Each command runs in a process group of its own, so a
/// Ctrl-C at the terminal (SIGINT to the foreground group) reaches the worker, not the
/// command in the middle of a request; a worker that stops (Ctrl-C, SIGTERM, its
/// `Shutdown` flag) kills the process groups of the commands still running, and their
/// requests are never answered from them (a Majordomo worker hands them back to the
/// broker). On Linux the command's shell is also killed if its worker dies without
/// stopping (SIGKILL).
pub fn exec_with(cmd: String, options: ExecOptions) -> Handler {
    Arc::new(move |req: Request| {
        run_command_with(&cmd, &req.body(), options.timeout).map(|out| vec![out])
    })
}
/// Puts `prefix` in front of the first frame of every successful reply.
pub fn prefix(prefix: Vec<u8>, inner: Handler) -> Handler {
    Arc::new(move |req: Request| {
        let mut reply = inner(req)?;
        match reply.first_mut() {
            Some(first) => first.splice(0..0, prefix.iter().copied()).for_each(drop),
            None => reply.push(prefix.clone()),
        }
        Ok(reply)
    })
}

/// Wraps `inner` so that every call first waits `delay` (simulated work, for demos and
/// tests of slow handlers).
pub fn slow(delay: Duration, inner: Handler) -> Handler {
    Arc::new(move |req: Request| {
        #[allow(clippy::disallowed_methods)] // simulated work, not synchronisation
        std::thread::sleep(delay);
        inner(req)
    })
}

/// Calls `handler`, turning a panic into a [`HandlerError`] that names it, so that one
/// bad request neither kills the worker nor leaves its client without an answer. A
/// reply over [`MAX_PAYLOAD_BYTES`] (64 MiB, all frames together) fails its request
/// too: a bosun peer's socket would drop it (`ZMQ_MAXMSGSIZE`) and the client would
/// see only silence, then retry. A failed request is logged (WARN) with its id and attempt.
pub fn call(handler: &Handler, request: Request) -> Reply {
    let (id, attempt) = (request.id(), request.attempt());
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request)))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_string());
            Err(HandlerError::new(format!("handler panicked: {why}")))
        })
        .and_then(|frames| {
            let len: usize = frames.iter().map(Vec::len).sum();
            if len > MAX_PAYLOAD_BYTES {
                Err(HandlerError::new(format!(
                    "the reply is {len} bytes, over the {MAX_PAYLOAD_BYTES} a bosun peer accepts: not sent"
                )))
            } else {
                Ok(frames)
            }
        });
    if let Err(e) = &reply {
        if Commands::current().is_some_and(|c| c.is_stopped()) {
            tracing::info!(?id, error = %e, "handler ended by the stop; request not answered");
        } else {
            tracing::warn!(?id, attempt, error = %e, "request handler failed");
        }
    }
    reply
}

/// Runs `sh -c cmd` with `input` on stdin and returns its stdout (see [`exec`]), with
/// the default timeout, [`DEFAULT_EXEC_TIMEOUT`].
pub fn run_command(cmd: &str, input: &[u8]) -> Result<Vec<u8>, HandlerError> {
    run_command_with(cmd, input, DEFAULT_EXEC_TIMEOUT)
}

/// [`run_command`] with `timeout` (see [`ExecOptions::timeout`]). The command runs in a
/// process group of its own. Stdin is written from a thread, and stdout read (then the
/// command's exit awaited) on another, so a command that writes more than a pipe holds
/// before it has read all its input cannot deadlock, and this thread can give up at the
/// deadline: it then kills the command's process group and fails.
pub fn run_command_with(
    cmd: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, HandlerError> {
    let deadline = io::now().checked_add(timeout);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // prctl(2), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // The shell dies with the thread that started it, should the worker be
            // killed outright (SIGKILL) and have no chance to kill the group.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| HandlerError::new(format!("command `{cmd}` did not start: {e}")))?;
    let running = Running::start(&child);
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_vec();
        // Not joined: once the command has ended nobody reads the pipe, and the write
        // fails (EPIPE) at once.
        std::thread::spawn(move || {
            // A command that does not read its stdin closes the pipe early: not an error.
            let _ = stdin.write_all(&input);
        });
    }
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take();
    let pid = running.pid;
    let reader = std::thread::Builder::new()
        .name("bosun-exec".into())
        .spawn(move || {
            let mut out = Vec::new();
            let read = match stdout {
                Some(stdout) => stdout.take(OUTPUT_LIMIT).read_to_end(&mut out).map(|_| ()),
                None => Ok(()),
            };
            if out.len() as u64 >= OUTPUT_LIMIT {
                // Over the limit: the command may be blocked writing more; do not wait
                // for its exit (the caller kills it).
                let _ = tx.send((read, out, true));
                return;
            }
            wait_exited(pid);
            let _ = tx.send((read, out, false));
        });
    let got = match (reader, deadline) {
        (Err(e), _) => Err(format!(
            "command `{cmd}`: no thread to read its output: {e}"
        )),
        (Ok(_), Some(deadline)) => rx
            .recv_timeout(deadline.saturating_duration_since(io::now()))
            .map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => format!(
                    "command `{cmd}` timed out after {timeout:?} (exec timeout) and was killed"
                ),
                mpsc::RecvTimeoutError::Disconnected => format!("command `{cmd}` was lost"),
            }),
        (Ok(_), None) => rx.recv().map_err(|_| format!("command `{cmd}` was lost")),
    };
    let got = got.and_then(|(read, out, over)| {
        if over {
            Err(format!(
                "command `{cmd}` wrote more than the {MAX_PAYLOAD_BYTES} bytes a reply may hold, and was killed"
            ))
        } else {
            Ok((read, out))
        }
    });
    let (read, mut out) = match got {
        Ok(done) => done,
        Err(why) => {
            // Killed before the reap, so the group id cannot be anyone else's yet.
            running.end(true);
            let _ = child.wait();
            return Err(HandlerError::new(why));
        }
    };
    let stopped = running.end(false);
    let status = child.wait();
    if stopped {
        return Err(HandlerError::new(format!(
            "command `{cmd}` was killed: its worker is stopping"
        )));
    }
    read.map_err(|e| HandlerError::new(format!("command `{cmd}`: reading its output: {e}")))?;
    let status = status.map_err(|e| HandlerError::new(format!("command `{cmd}` was lost: {e}")))?;
    if !status.success() {
        return Err(HandlerError::new(format!(
            "command `{cmd}` failed: {status}"
        )));
    }
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}

/// How much of a command's stdout is read: a reply's limit, its trailing newline (which
/// is removed), and one byte more to see that the limit was passed. Bounds the memory a
/// command can make its worker use.
const OUTPUT_LIMIT: u64 = MAX_PAYLOAD_BYTES as u64 + 2;

/// Waits until our child `pid` has exited, without reaping it: until the caller reaps
/// it, its pid, and so the id of the process group it leads, cannot be reused.
fn wait_exited(pid: libc::pid_t) {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return;
    };
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value; waitid(2) only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is ours and outlives the call.
        let r = unsafe { libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// SIGKILLs process group `pgid`.
fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) has no memory effects. Callers pass the group of a command whose
    // leader is not reaped yet, so the id is that group's and no stranger's.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

thread_local! {
    /// The commands of the worker whose handler this thread is running, if any.
    static SCOPE: RefCell<Option<Commands>> = const { RefCell::new(None) };
}

/// The process groups of the commands that [`exec`] handlers run for one worker, so
/// that the worker's stop can kill them. A command belongs to the set that was current
/// on its thread when it started ([`Commands::enter`], [`Commands::scoped`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Commands(Arc<Mutex<Groups>>);

#[derive(Debug, Default)]
struct Groups {
    /// The group ids of the commands running, each led by a child not yet reaped.
    running: Vec<libc::pid_t>,
    /// [`Commands::kill_all`] was called: a command that starts later is killed at once.
    stopped: bool,
}

impl Commands {
    /// Runs `f` with this set current on this thread.
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Commands>);
        impl Drop for Restore {
            fn drop(&mut self) {
                SCOPE.set(self.0.take());
            }
        }
        let _restore = Restore(SCOPE.replace(Some(self.clone())));
        f()
    }

    /// `handler`, making this set current on the thread that calls it, for good: for
    /// threads that serve this set's worker only, such as its pool's (so that
    /// [`call`] on them, too, sees a stop when the handler returns).
    pub(crate) fn scoped(&self, handler: &Handler) -> Handler {
        let (set, inner) = (self.clone(), Arc::clone(handler));
        Arc::new(move |req: Request| {
            SCOPE.set(Some(set.clone()));
            inner(req)
        })
    }

    /// Kills (SIGKILL) the process group of every command of the set still running,
    /// and of every one that starts from now on. Returns how many were running.
    pub(crate) fn kill_all(&self) -> usize {
        let mut groups = lock(&self.0);
        groups.stopped = true;
        for &pgid in &groups.running {
            kill_group(pgid);
        }
        groups.running.len()
    }

    /// Whether [`Commands::kill_all`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        lock(&self.0).stopped
    }

    /// The set current on this thread, if any.
    fn current() -> Option<Commands> {
        SCOPE.with_borrow(|s| s.clone())
    }
}

/// A command started, registered with the set current on its thread.
struct Running {
    set: Option<Commands>,
    pid: libc::pid_t,
}

impl Running {
    fn start(child: &std::process::Child) -> Running {
        let pid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
        let set = Commands::current();
        if let Some(set) = &set {
            let mut groups = lock(&set.0);
            if groups.stopped {
                kill_group(pid);
            }
            groups.running.push(pid);
        }
        Running { set, pid }
    }

    /// Kills the group first if `kill`, and forgets it: call before the leader is
    /// reaped. Returns whether the set was stopped (the command killed by its worker's
    /// stop).
    fn end(&self, kill: bool) -> bool {
        let Some(set) = &self.set else {
            if kill {
                kill_group(self.pid);
            }
            return false;
        };
        let mut groups = lock(&set.0);
        if kill {
            kill_group(self.pid);
        }
        groups.running.retain(|&p| p != self.pid);
        groups.stopped
    }
}

/// The payload frames of a request with no metadata (for tests and examples).
pub fn plain(payload: Frames) -> Request {
    Request {
        meta: None,
        service: None,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &[u8]) -> Request {
        plain(vec![body.to_vec()])
    }

    #[test]
    fn a_panicking_handler_is_a_failed_request_not_a_dead_worker() {
        let h = from_fn(|_| panic!("boom"));
        let err = call(&h, one(b"x")).unwrap_err();
        assert_eq!(err.message, "handler panicked: boom");
        assert_eq!(call(&echo(), one(b"x")), Ok(vec![b"x".to_vec()]));
    }

    #[test]
    fn a_reply_over_64_mib_fails_its_request_instead_of_vanishing_on_the_wire() {
        let big = from_fn(|_| {
            Ok(vec![
                vec![0; MAX_PAYLOAD_BYTES / 2],
                vec![0; MAX_PAYLOAD_BYTES / 2 + 1],
            ])
        });
        let err = call(&big, one(b"x")).unwrap_err();
        assert!(err.message.contains("over the"), "{}", err.message);
        let fits = from_fn(|_| Ok(vec![vec![0; MAX_PAYLOAD_BYTES]]));
        assert!(call(&fits, one(b"x")).is_ok());
    }

    #[test]
    fn a_command_that_writes_too_much_is_killed_without_waiting_for_it() {
        // It would write 70 MB and then sleep: reading stops at the limit, and the
        // command is killed at once rather than waited for.
        let started = io::now();
        let err = run_command_with(
            "head -c 70000000 /dev/zero; sleep 30",
            b"",
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(err.message.contains("more than"), "{}", err.message);
        assert!(io::now() - started < Duration::from_secs(10));
        // Exactly at the limit, with a trailing newline, is still a reply.
        let out = run_command_with(
            &format!("head -c {MAX_PAYLOAD_BYTES} /dev/zero; echo"),
            b"",
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(out.len(), MAX_PAYLOAD_BYTES);
    }

    #[test]
    fn echo_keeps_frames_and_prefix_touches_the_first() {
        let req = plain(vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(echo()(req.clone()), Ok(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(
            prefix(b"w1:".to_vec(), echo())(req),
            Ok(vec![b"w1:a".to_vec(), b"b".to_vec()])
        );
    }

    #[test]
    fn exec_pipes_payload_through_a_command_and_fails_loudly() {
        let h = exec("tr a-z A-Z".into());
        assert_eq!(h(one(b"shout")), Ok(vec![b"SHOUT".to_vec()]));
        assert_eq!(
            exec("cat; echo".into())(one(b"line")),
            Ok(vec![b"line".to_vec()])
        );
        let err = exec("exit 3".into())(one(b"x")).unwrap_err();
        assert!(err.message.contains("exit status: 3"), "{err}");
        let err = exec("kill -9 $$".into())(one(b"x")).unwrap_err();
        assert!(err.message.contains("signal"), "{err}");
    }

    #[test]
    fn exec_does_not_deadlock_on_a_body_larger_than_a_pipe() {
        let big = vec![b'y'; 1 << 20];
        let out = exec("tr a-z A-Z".into())(one(&big)).unwrap();
        assert_eq!(out, vec![vec![b'Y'; 1 << 20]]);
    }

    /// Polls `cond` every few milliseconds until it holds or 5 s pass.
    fn within_5s(mut cond: impl FnMut() -> bool) -> bool {
        let until = io::now() + Duration::from_secs(5);
        while !cond() {
            if io::now() >= until {
                return false;
            }
            std::thread::park_timeout(Duration::from_millis(5));
        }
        true
    }

    /// Whether process `pid` runs (exists and is not a zombie).
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
                !matches!(state, Some('Z' | 'X'))
            })
            .unwrap_or(false)
    }

    /// A file name of its own in the temp dir, for a command to write a pid into.
    fn pid_file(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("bosun-handler-{tag}-{}", std::process::id()))
    }

    fn read_pid(path: &std::path::Path) -> String {
        let mut pid = String::new();
        assert!(
            within_5s(|| {
                pid = std::fs::read_to_string(path).unwrap_or_default();
                pid.ends_with('\n')
            }),
            "the command never wrote its pid"
        );
        pid.trim().to_string()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_command_that_overruns_its_timeout_fails_and_its_whole_group_is_killed() {
        let file = pid_file("timeout");
        let _ = std::fs::remove_file(&file);
        // The sleeper is a grandchild: only a kill of the group reaches it.
        let cmd = format!("sleep 60 & echo $! > {}; wait", file.display());
        let started = io::now();
        let err = exec_with(
            cmd,
            ExecOptions {
                timeout: Duration::from_millis(300),
            },
        )(one(b"x"))
        .unwrap_err();
        let took = io::now() - started;
        assert!(err.message.contains("timed out after 300ms"), "{err}");
        assert!(took < Duration::from_secs(5), "failed after {took:?}");
        let pid = read_pid(&file);
        let _ = std::fs::remove_file(&file);
        assert!(within_5s(|| !alive(&pid)), "the sleeper {pid} lives on");
    }

    #[test]
    fn a_quick_command_is_unaffected_by_the_timeout() {
        let h = exec_with(
            "cat".into(),
            ExecOptions {
                timeout: Duration::from_secs(10),
            },
        );
        assert_eq!(h(one(b"fine")), Ok(vec![b"fine".to_vec()]));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn kill_all_kills_the_running_commands_of_the_set_and_any_started_later() {
        let file = pid_file("stop");
        let _ = std::fs::remove_file(&file);
        let set = Commands::default();
        let h = set.scoped(&exec(format!(
            "sleep 60 & echo $! > {}; wait",
            file.display()
        )));
        let runner = std::thread::spawn(move || h(one(b"x")));
        let pid = read_pid(&file);
        let _ = std::fs::remove_file(&file);
        assert_eq!(set.kill_all(), 1);
        let err = runner.join().unwrap().unwrap_err();
        assert!(err.message.contains("its worker is stopping"), "{err}");
        assert!(within_5s(|| !alive(&pid)), "the sleeper {pid} lives on");
        assert!(lock(&set.0).running.is_empty());
        // A command of a stopped set dies at once.
        let started = io::now();
        let err = set
            .enter(|| exec("sleep 60".into())(one(b"x")))
            .unwrap_err();
        assert!(err.message.contains("its worker is stopping"), "{err}");
        assert!(io::now() - started < Duration::from_secs(5));
        // Commands of no set are no set's business.
        assert_eq!(exec("cat".into())(one(b"free")), Ok(vec![b"free".to_vec()]));
    }
}
