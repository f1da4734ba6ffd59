//! Helpers shared by the process tests: start the built `bosun` binary, read its output
//! with deadlines, wait on conditions with deadlines, and make sure that no child
//! process outlives its test, even when an assertion fails half way.
//!
//! Every wait here is bounded: a test that hangs is a bug in the test.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// How often a deadline-bounded wait looks at its condition again.
const POLL_EVERY: Duration = Duration::from_millis(5);

/// The current time. Tests read the real clock through this one function.
#[allow(clippy::disallowed_methods)] // process tests run on the real clock
pub fn now() -> Instant {
    Instant::now()
}

/// `now() + limit`.
pub fn deadline(limit: Duration) -> Instant {
    now() + limit
}

/// Milliseconds, for readability at the call sites.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Pauses one poll interval inside a deadline-bounded loop. Not synchronisation: every
/// caller re-checks its condition afterwards and gives up at its deadline.
#[allow(clippy::disallowed_methods)] // the polling interval of a bounded wait
fn pause() {
    std::thread::sleep(POLL_EVERY);
}

/// Checks `cond` every few milliseconds until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = deadline(limit);
    loop {
        if cond() {
            return true;
        }
        if now() >= end {
            return false;
        }
        pause();
    }
}

/// A `bosun` command with its arguments, isolated from the caller's environment
/// (no `BOSUN_*`, no `RUST_LOG`, no colours), stdout and stderr piped, stdin closed,
/// in a process group of its own so that [`Proc`]'s drop can kill its children too.
pub fn bosun(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bosun"));
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BOSUN_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// A command for any `program` (such as `python3`), set up like [`bosun`]'s for [`Proc`]:
/// stdout and stderr piped, stdin closed, in a process group of its own so that
/// [`Proc`]'s drop can kill its children too. Unlike [`bosun`] it keeps the caller's
/// environment.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd
}

/// A free TCP port on 127.0.0.1 (bound, read, released). Something else may take it
/// before it is used; only tests that need a port *nobody* listens on use this.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// The value of the `key=VALUE` word of `line`.
pub fn field(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(str::to_string)
}

/// `n` request lines `req-1` .. `req-n`, newline-terminated.
pub fn request_lines(n: usize) -> String {
    (1..=n).map(|i| format!("req-{i}\n")).collect()
}

/// The numbers of a `client: sent N, answered N, retries N, discarded N` summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub sent: u64,
    pub answered: u64,
    pub retries: u64,
    pub discarded: u64,
}

/// Parses a client's `--summary` line.
pub fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("client: ")?;
    let get = |name: &str| {
        rest.split(", ")
            .find_map(|part| part.strip_prefix(name))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some(Summary {
        sent: get("sent ")?,
        answered: get("answered ")?,
        retries: get("retries ")?,
        discarded: get("discarded ")?,
    })
}

/// One line of a child's output and when the test saw it.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// The lines of one output stream of a child, read on a thread so that the child never
/// blocks on a full pipe and the test can wait for a line with a deadline.
pub struct Lines {
    rx: mpsc::Receiver<Line>,
    /// Every line received so far, in order.
    pub seen: Vec<Line>,
    eof: bool,
}

impl Lines {
    fn read<R: Read + Send + 'static>(stream: Option<R>) -> Lines {
        let (tx, rx) = mpsc::channel();
        if let Some(stream) = stream {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\n', '\r'])
                                .to_string();
                            if tx.send(Line { at: now(), text }).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        Lines {
            rx,
            seen: Vec::new(),
            eof: false,
        }
    }

    /// The next line, waiting until `until` at most. `None` at the deadline or at the
    /// end of the stream.
    pub fn next(&mut self, until: Instant) -> Option<Line> {
        if self.eof {
            return None;
        }
        match self.rx.recv_timeout(until.saturating_duration_since(now())) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.eof = true;
                None
            }
        }
    }

    /// The first new line for which `pred` holds, reading until `until` at most.
    pub fn wait_for(&mut self, until: Instant, mut pred: impl FnMut(&str) -> bool) -> Option<Line> {
        while let Some(line) = self.next(until) {
            if pred(&line.text) {
                return Some(line);
            }
        }
        None
    }

    /// Reads until `count` lines (seen before or now) satisfy `pred`, or `until`.
    /// Returns how many do.
    pub fn wait_count(
        &mut self,
        until: Instant,
        count: usize,
        mut pred: impl FnMut(&str) -> bool,
    ) -> usize {
        let mut n = self.seen.iter().filter(|l| pred(&l.text)).count();
        while n < count {
            match self.next(until) {
                Some(line) if pred(&line.text) => n += 1,
                Some(_) => {}
                None => break,
            }
        }
        n
    }

    /// Reads every line until the stream ends; false when `until` came first.
    pub fn read_to_end(&mut self, until: Instant) -> bool {
        while self.next(until).is_some() {}
        self.eof
    }

    /// Takes the lines that have already arrived, without waiting.
    pub fn read_available(&mut self) {
        while !self.eof {
            match self.rx.try_recv() {
                Ok(line) => self.seen.push(line),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => self.eof = true,
            }
        }
    }

    /// The texts of the lines seen so far.
    pub fn texts(&self) -> Vec<String> {
        self.seen.iter().map(|l| l.text.clone()).collect()
    }

    /// Everything seen so far as one string, for assertion messages.
    pub fn dump(&self) -> String {
        self.texts().join("\n")
    }
}

/// A running `bosun` child. Dropping it SIGKILLs the child and everything in its
/// process group, then reaps it, so a failed assertion leaves nothing running.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Lines,
    pub stderr: Lines,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (normally made by [`bosun`]).
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Proc::try_spawn(name, cmd).unwrap_or_else(|e| panic!("start {name}: {e}"))
    }

    /// Like [`Proc::spawn`], but returns the error when `cmd` cannot be started (such as
    /// a program that is not on PATH) instead of panicking. `cmd` is normally made by
    /// [`bosun`] or [`command`].
    pub fn try_spawn(name: &str, cmd: &mut Command) -> std::io::Result<Proc> {
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = Lines::read(child.stdout.take());
        let stderr = Lines::read(child.stderr.take());
        Ok(Proc {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            stderr,
            status: None,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t")
    }

    /// Reads stdout until a line that starts with `prefix` (such as `server bound=`),
    /// within `limit`; panics with the child's output otherwise.
    pub fn expect_stdout(&mut self, prefix: &str, limit: Duration) -> String {
        let until = deadline(limit);
        match self.stdout.wait_for(until, |l| l.starts_with(prefix)) {
            Some(line) => line.text,
            None => {
                self.stderr.read_available();
                panic!(
                    "{}: no stdout line starting {prefix:?} within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout.dump(),
                    self.stderr.dump()
                )
            }
        }
    }

    /// Writes `text` to the child's stdin.
    pub fn write_stdin(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin was piped");
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write stdin: {e}", self.name));
    }

    /// Closes the child's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit status if the child has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `limit` for the child to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_until(limit, || self.try_status().is_some());
        self.status
    }

    /// Like [`Proc::wait_exit`], but panics with the child's output on a timeout.
    pub fn expect_exit(&mut self, limit: Duration) -> ExitStatus {
        match self.wait_exit(limit) {
            Some(status) => status,
            None => {
                self.stdout.read_available();
                self.stderr.read_available();
                panic!(
                    "{}: still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout.dump(),
                    self.stderr.dump()
                )
            }
        }
    }

    /// Sends `signal` to the child, unless it has already exited and been reaped
    /// (its pid could belong to someone else by then).
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill(2) on our own unreaped child has no memory effects.
            unsafe {
                libc::kill(self.pid(), signal);
            }
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// SIGKILLs what is left of the child's process group (such as a handler command
    /// a worker started), then the child itself if it still runs.
    pub fn kill_group(&mut self) {
        // SAFETY: kill(2) has no memory effects. The group id is our child's pid; Linux
        // does not hand out a pid while a process group of that id still exists, so
        // this reaches the child's group or nobody (ESRCH).
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
        self.kill();
    }

    /// Runs to completion with nothing on stdin: status, stdout, stderr.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>, Vec<String>) {
        let status = self.expect_exit(limit);
        let until = deadline(ms(2000));
        self.stdout.read_to_end(until);
        self.stderr.read_to_end(until);
        (status, self.stdout.texts(), self.stderr.texts())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            // SAFETY: kill(2) on the process group of our own unreaped child (its pid
            // is the group id, see `bosun()`), so no stranger is hit.
            unsafe {
                libc::kill(-self.pid(), libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `bosun args` to completion (stdin closed): status, stdout, stderr, elapsed.
pub fn run(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Outcome {
    let mut cmd = bosun(args);
    cmd.envs(env.iter().copied());
    let start = now();
    let proc = Proc::spawn(&args.join(" "), &mut cmd);
    let (status, stdout, stderr) = proc.finish(limit);
    Outcome {
        status,
        stdout,
        stderr,
        elapsed: now() - start,
    }
}

/// What [`run`] saw.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub elapsed: Duration,
}

/// A raw zmq socket with linger 0, for tests that play a peer by hand.
pub fn raw_socket(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let s = ctx.socket(kind).expect("zmq socket");
    s.set_linger(0).expect("set linger");
    // A blocking send that cannot complete fails instead of hanging the test.
    s.set_sndtimeo(2000).expect("set sndtimeo");
    s
}

/// The next message on `socket`, waiting until `until` at most.
pub fn recv_until(socket: &zmq::Socket, until: Instant) -> Option<Vec<Vec<u8>>> {
    loop {
        let left = until.saturating_duration_since(now());
        let mut items = [socket.as_poll_item(zmq::POLLIN)];
        let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
        match zmq::poll(&mut items, ms) {
            Ok(_) if items[0].is_readable() => {
                return socket.recv_multipart(zmq::DONTWAIT).ok();
            }
            Ok(_) | Err(zmq::Error::EINTR) if now() < until => continue,
            _ => return None,
        }
    }
}

/// Sends `frames` on `socket`, panicking if that is not possible within its send timeout.
pub fn send(socket: &zmq::Socket, frames: &[Vec<u8>]) {
    socket
        .send_multipart(frames, 0)
        .unwrap_or_else(|e| panic!("send {} frames: {e}", frames.len()));
}

/// Starts `bosun args` with stdin piped (see [`Proc::write_stdin`]).
pub fn spawn_piped(name: &str, args: &[&str]) -> Proc {
    let mut cmd = bosun(args);
    cmd.stdin(Stdio::piped());
    Proc::spawn(name, &mut cmd)
}

impl Proc {
    /// Reads stderr until a line for which `pred` holds, within `limit`; panics with the
    /// child's output, naming `what`, otherwise.
    pub fn expect_stderr(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl FnMut(&str) -> bool,
    ) -> Line {
        match self.stderr.wait_for(deadline(limit), pred) {
            Some(line) => line,
            None => {
                self.stdout.read_available();
                panic!(
                    "{}: no stderr line for {what} within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.stdout.dump(),
                    self.stderr.dump()
                )
            }
        }
    }

    /// Waits up to `limit` for the child to exit (panicking with its output otherwise),
    /// then reads both streams to their end (2 s at most).
    pub fn expect_done(&mut self, limit: Duration) -> ExitStatus {
        let status = self.expect_exit(limit);
        let until = deadline(Duration::from_secs(2));
        self.stdout.read_to_end(until);
        self.stderr.read_to_end(until);
        status
    }

    /// The `--summary` line among the stderr lines seen so far.
    pub fn summary(&self) -> Option<Summary> {
        self.stderr.seen.iter().find_map(|l| parse_summary(&l.text))
    }
}

/// `len` bytes of junk with no zero byte, so that it is never mistaken for anything.
pub fn junk(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

/// `n` frames of junk, none of them empty.
pub fn many_frames(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| junk(1 + i % 7, i as u8)).collect()
}

/// A multipart message from byte strings.
pub fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// SIGKILLs a process group when dropped: for a child that may exit (and be reaped)
/// while a grandchild it started, such as a worker's `--exec` command, lives on in its
/// group. Make it while the child runs; the grandchild keeps the group id in use, so
/// the signal cannot reach a stranger.
pub struct GroupGuard(libc::pid_t);

impl Proc {
    /// A [`GroupGuard`] for this child's process group.
    pub fn group_guard(&self) -> GroupGuard {
        GroupGuard(self.pid())
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) has no memory effects; see the type's doc for the target.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

impl Proc {
    /// Reads both streams to their end, for `limit` at most in all (the child has
    /// exited, or is about to); false when the deadline came first.
    pub fn drain(&mut self, limit: Duration) -> bool {
        let until = deadline(limit);
        let out = self.stdout.read_to_end(until);
        self.stderr.read_to_end(until) && out
    }

    /// Everything the child printed so far, both streams under its name, for assertion
    /// messages.
    pub fn dump(&mut self) -> String {
        self.stdout.read_available();
        self.stderr.read_available();
        format!(
            "--- {0} stdout:\n{1}\n--- {0} stderr:\n{2}",
            self.name,
            self.stdout.dump(),
            self.stderr.dump()
        )
    }
}

/// How long [`start_broker`] and [`start_queue`] wait for the line with the endpoints.
const BOUND_WITHIN: Duration = Duration::from_secs(10);

/// Starts `cmd`, a `bosun broker` (normally made by [`bosun`]) or another broker that
/// prints `broker bound=ENDPOINT` (the pyzmq one of `tests/interop/`), and waits for that
/// line: the process and ENDPOINT.
pub fn start_broker(name: &str, cmd: &mut Command) -> (Proc, String) {
    let mut broker = Proc::spawn(name, cmd);
    let line = broker.expect_stdout("broker bound=", BOUND_WITHIN);
    let endpoint = field(&line, "bound").expect("broker line has bound=");
    (broker, endpoint)
}

/// Starts `cmd`, a `bosun queue` (normally made by [`bosun`]), and waits for its
/// `queue frontend=F backend=B` line: the process, F and B.
pub fn start_queue(name: &str, cmd: &mut Command) -> (Proc, String, String) {
    let mut queue = Proc::spawn(name, cmd);
    let line = queue.expect_stdout("queue frontend=", BOUND_WITHIN);
    let frontend = field(&line, "frontend").expect("queue line has frontend=");
    let backend = field(&line, "backend").expect("queue line has backend=");
    (queue, frontend, backend)
}

impl Outcome {
    /// The stderr lines in which the client reports an error (`bosun client: ...`).
    pub fn errors(&self) -> Vec<&String> {
        self.stderr
            .iter()
            .filter(|l| l.starts_with("bosun client:"))
            .collect()
    }

    /// The `--summary` line among the stderr lines.
    pub fn summary(&self) -> Option<Summary> {
        self.stderr.iter().find_map(|l| parse_summary(l))
    }
}

/// Runs `bosun client connect... --request x --timeout 3s --retries 2 --summary` (request
/// `n` of a test) against a `worker` whose handler fails (`--exec 'exit 3'`), and checks
/// that the client exits 1 at once with the worker's message: nothing on stdout, one
/// line of error naming the failed command, one attempt and no retry in its summary,
/// sooner than one attempt's timeout; and that the worker still runs. Returns what the
/// client did, its line of error and its summary, for the caller's own checks.
pub fn expect_handler_failure(
    connect: &[&str],
    n: u32,
    worker: &mut Proc,
) -> (Outcome, String, Summary) {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let mut args = vec!["client"];
    args.extend_from_slice(connect);
    args.extend([
        "--request",
        "x",
        "--timeout",
        "3s",
        "--retries",
        "2",
        "--summary",
    ]);
    let out = run(&args, &[], Duration::from_secs(10));
    assert_eq!(
        out.status.code(),
        Some(1),
        "request {n}: {out:?}\n{}",
        worker.dump()
    );
    assert!(out.stdout.is_empty(), "request {n}: {out:?}");
    let errors = out.errors();
    assert_eq!(errors.len(), 1, "request {n}: one line of error: {out:?}");
    assert!(
        errors[0].contains("failed") && errors[0].contains("exit status: 3"),
        "request {n}: the error names the failed command: {out:?}"
    );
    let error = errors[0].clone();
    let summary = out.summary().expect("summary line");
    assert_eq!(
        (summary.sent, summary.retries),
        (1, 0),
        "request {n}: one attempt: {summary:?}"
    );
    assert!(
        out.elapsed < TIMEOUT,
        "request {n}: failed after {:?}; a timed-out attempt takes {TIMEOUT:?}",
        out.elapsed
    );
    assert!(
        worker.is_running(),
        "request {n}: the worker died\n{}",
        worker.dump()
    );
    (out, error, summary)
}

// ---------------------------------------------------------------------------------
// The pyzmq peers of `tests/interop/`: python3 with pyzmq, or an explicit skip.

/// True when the pyzmq interop peers can run; false (after saying so) when the tests
/// are skipped: with `BOSUN_SKIP_INTEROP=1`, or when pyzmq is missing outside CI.
/// Panics when pyzmq is missing under `CI=true` or `BOSUN_REQUIRE_INTEROP=1`.
pub fn interop_available(test: &str) -> bool {
    if std::env::var_os("BOSUN_SKIP_INTEROP").is_some_and(|v| v == "1") {
        eprintln!("{test}: skipped (BOSUN_SKIP_INTEROP=1)");
        return false;
    }
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECK.get_or_init(check_pyzmq) {
        let required = ["CI", "BOSUN_REQUIRE_INTEROP"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|x| x == "1" || x == "true"));
        if !required {
            eprintln!(
                "{test}: skipped: needs `python3` with pyzmq ({why}); \
                 `python3 -m pip install pyzmq` enables it"
            );
            return false;
        }
        panic!(
            "{test}: the pyzmq interop tests need `python3` with pyzmq: {why}\n\
             Run `python3 -m pip install pyzmq`, or set BOSUN_SKIP_INTEROP=1 to skip them."
        );
    }
    true
}

fn check_pyzmq() -> Result<(), String> {
    let mut cmd = command("python3");
    cmd.args(["-c", "import zmq; print('pyzmq', zmq.__version__)"]);
    let mut probe = Proc::try_spawn("python3 -c 'import zmq'", &mut cmd)
        .map_err(|e| format!("cannot start `python3`: {e}"))?;
    let status = probe
        .wait_exit(Duration::from_secs(10))
        .ok_or("`python3 -c \"import zmq\"` did not finish within 10 s")?;
    if status.success() {
        Ok(())
    } else {
        probe.drain(Duration::from_secs(5));
        Err(format!(
            "`python3 -c \"import zmq\"` failed ({status}): {}",
            probe.stderr.dump()
        ))
    }
}

/// A pyzmq peer, `script` a path below `tests/interop/` (such as `mdp_broker.py` or
/// `transform/mdp_worker.py`), unbuffered, stdin closed, output piped, in a process
/// group of its own (see [`command`]). It writes no bytecode (`__pycache__`) into the
/// source tree when it imports a module of its folder.
pub fn python(script: &str, args: &[&str]) -> Command {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "interop", script]
        .iter()
        .collect();
    let mut cmd = command("python3");
    cmd.arg("-u")
        .arg(path)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// A fresh directory of its own under the system temp dir (named after `tag`, the test
/// process and a counter), removed with everything in it on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "bosun-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the temp dir");
        TempDir(path)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A path inside it, as a string for a command line.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temp path as a command-line argument.
pub fn path_str(p: &std::path::Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// An `--exec` handler that appends each request body to `runs` (one line per handler
/// run) and echoes it.
pub fn counting_exec(runs: &std::path::Path) -> String {
    format!(
        "b=$(cat); printf '%s\\n' \"$b\" >> '{}'; printf %s \"$b\"",
        path_str(runs)
    )
}

/// How many times each body was handled, from the `runs` file of [`counting_exec`].
pub fn handler_runs(runs: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let text = std::fs::read_to_string(runs).unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        *out.entry(line.to_string()).or_insert(0) += 1;
    }
    out
}

/// The value of `"key":"..."` in a JSON line (no escapes in the values tested).
pub fn json_str<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let end = line[start..].find('"')?;
    Some(&line[start..start + end])
}

/// Waits (up to 10 s) until the broker at `ep` says (`bosun stats`) that `n` requests
/// for `service` are queued.
pub fn wait_queued(ep: &str, service: &str, n: usize) {
    let want = format!("\"queued\":{n}");
    let limit = Duration::from_secs(10);
    let mut last = Vec::new();
    let ok = wait_until(limit, || {
        let out = run(
            &["stats", "--connect", ep, "--service", service, "--json"],
            &[],
            limit,
        );
        let found = out.stdout.iter().any(|l| l.contains(&want));
        last = out.stdout;
        found
    });
    assert!(ok, "the broker never had {n} queued: {last:?}");
}
