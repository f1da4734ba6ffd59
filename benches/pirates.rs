//! bosun's Lazy Pirate and Paranoid Pirate drivers against raw ZeroMQ over the same kind
//! of sockets, in the same run, over tcp loopback (`tcp://127.0.0.1:*`), 64-byte bodies.
//!
//! ```text
//! cargo bench --bench pirates               # full run, about a minute and a half
//! cargo bench --bench pirates -- --quick    # smoke run, a second or two
//! BOSUN_BENCH_ONLY=x cargo bench --bench pirates   # only the diagnostic variants
//! ```
//!
//! (a) Lazy Pirate round trip: `LazyPirateClient` -> `server::Server` (echo) vs raw REQ ->
//!     raw REP echo; p50/p99/mean and the p50 ratio (target <= 1.15x).
//! (b) Queue, 1 client, 1 request at a time, 1 worker: `LazyPirateClient` -> `QueueDriver`
//!     -> `PpWorker` (echo) vs raw REQ -> `zmq::proxy_steerable` (ROUTER frontend, DEALER
//!     backend; the control socket only stops it) -> raw REP echo; req/s and the ratio
//!     (target >= 0.9x).
//! (c) Queue, 100 requests in flight, 4 workers: one raw DEALER client sending
//!     `[""][envelope]` for both sides; bosun queue + 4 `PpWorker`s vs `zmq::proxy` + 4 raw
//!     REP workers; req/s and the ratio.
//! (d) Memory: VmRSS of this process (which hosts the bosun queue and 4 workers as
//!     threads) after a warm-up through the bosun queue and after more requests.
//! (x) Diagnostics, only on request: the CPU cost of the envelope work, and (a)-(c) with
//!     one side swapped at a time (raw client on a bosun server, bosun queue with a worker
//!     that answers inline instead of on a handler thread, raw worker with the same
//!     inproc PAIR hop as `PpWorker`, ...), to show where bosun's time goes.
//!
//! Each measurement is repeated, interleaving raw and bosun (raw, bosun, raw, bosun, ...),
//! each run on freshly started sockets and threads after a warm-up, and the medians are
//! reported so that a ratio holds on a noisy machine; the "paired ratio" is the median of
//! the ratios of back-to-back runs. Every role a separate process would have (client,
//! server or broker, workers) gets its own zmq context (its own I/O thread), on both sides
//! alike. "per request" figures are what the whole process (all those threads) spent per
//! request during the timed part: CPU time (user + sys, from getrusage) and voluntary
//! context switches, i.e. thread wake-ups; they vary less with load than wall time.
//!
//! Environment overrides (counts are timed requests per run):
//! - `BOSUN_BENCH_QUICK=1` (or the `--quick` argument): small counts, one repetition.
//! - `BOSUN_BENCH_N`: base count N: (a) and (b) N each, (c) 2.5 N, (d) N then 5 N
//!   (default 20000; quick: 500, with (b) N/2 and (d) N then 2 N).
//! - `BOSUN_BENCH_N_RTT`, `BOSUN_BENCH_N_QUEUE`, `BOSUN_BENCH_N_INFLIGHT`,
//!   `BOSUN_BENCH_N_MEM_WARMUP`, `BOSUN_BENCH_N_MEM`: one count each.
//! - `BOSUN_BENCH_REPEATS`: runs per side (default 3).
//! - `BOSUN_BENCH_ONLY`: the parts to run, e.g. `a,c` (default `a,b,c,d`); `x` is all
//!   the diagnostics (also added by `BOSUN_BENCH_DIAG=1`), `r`, `q`, `f` those of (a),
//!   (b), (c) alone.
//!
//! Every thread and socket the bench starts is stopped before it exits: the bosun drivers
//! through a [`Shutdown`], the raw proxy with `TERMINATE` on its control socket, the raw
//! workers by a flag they check at least every 100 ms. Every wait is bounded.

use std::collections::BTreeSet;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bosun::io::handler;
use bosun::io::queue::QueueDriver;
use bosun::io::server::{Faults, Server};
use bosun::proto::paranoid_pirate::QueueConfig;
use bosun::{Envelope, LazyPirateClient, PpWorker, Retry, Shutdown};

/// Body size of every request.
const BODY: usize = 64;
/// Requests kept outstanding in (c).
const IN_FLIGHT: usize = 100;
/// Workers in (c).
const WORKERS: usize = 4;
/// Longest any socket call of the bench's own clients waits before the run is abandoned.
const IO_TIMEOUT_MS: i32 = 5_000;
/// Longest a raw worker blocks before it looks at its stop flag (as bosun's drivers do).
const STOP_CHECK_MS: i32 = 100;
/// 6/PPP commands, for the bench's inline worker.
const PPP_READY: u8 = 0x01;
const PPP_HEARTBEAT: u8 = 0x02;

type Res<T> = Result<T, String>;

fn now() -> Instant {
    bosun::io::now()
}

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    repeats: usize,
    n_rtt: usize,
    n_queue: usize,
    n_inflight: usize,
    n_mem_warmup: usize,
    n_mem: usize,
    parts: BTreeSet<char>,
}

impl Settings {
    fn from_env() -> Res<Self> {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("BOSUN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let n = env_count("BOSUN_BENCH_N")?.unwrap_or(if quick { 500 } else { 20_000 });
        let mut parts: BTreeSet<char> = match std::env::var("BOSUN_BENCH_ONLY") {
            Ok(s) if !s.trim().is_empty() => s
                .split(',')
                .filter_map(|p| p.trim().chars().next())
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            _ => "abcd".chars().collect(),
        };
        if std::env::var("BOSUN_BENCH_DIAG").is_ok_and(|v| !v.is_empty() && v != "0") {
            parts.insert('x');
        }
        let count = |name: &str, default: usize| -> Res<usize> {
            Ok(env_count(name)?.unwrap_or(default).max(1))
        };
        Ok(Settings {
            repeats: count("BOSUN_BENCH_REPEATS", if quick { 1 } else { 3 })?,
            n_rtt: count("BOSUN_BENCH_N_RTT", n)?,
            n_queue: count("BOSUN_BENCH_N_QUEUE", if quick { n / 2 } else { n })?,
            n_inflight: count("BOSUN_BENCH_N_INFLIGHT", n * 5 / 2)?,
            n_mem_warmup: count("BOSUN_BENCH_N_MEM_WARMUP", n)?,
            n_mem: count("BOSUN_BENCH_N_MEM", n * if quick { 2 } else { 5 })?,
            parts,
        })
    }
}

fn env_count(name: &str) -> Res<Option<usize>> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .map(Some)
            .map_err(|e| format!("{name}={v:?}: {e}")),
        Err(_) => Ok(None),
    }
}

/// Warm-up requests before a timed run of `n`.
fn warmup(n: usize) -> usize {
    (n / 10).clamp(50, 2_000)
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Figures of one run: latencies in microseconds, the request rate, and what the whole
/// process (client, server or broker, and workers all run in it) spent per request:
/// CPU time in microseconds and voluntary context switches (thread wake-ups).
#[derive(Clone, Copy)]
struct Figures {
    p50: f64,
    p99: f64,
    mean: f64,
    per_sec: f64,
    cpu_us: f64,
    sys_us: f64,
    switches: f64,
}

/// CPU time and voluntary context switches of this process so far, all threads.
#[derive(Clone, Copy)]
struct Usage {
    cpu_us: f64,
    sys_us: f64,
    switches: f64,
}

fn usage() -> Usage {
    // SAFETY: getrusage only writes into the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    Usage {
        cpu_us: us(ru.ru_utime) + us(ru.ru_stime),
        sys_us: us(ru.ru_stime),
        switches: ru.ru_nvcsw as f64,
    }
}

impl Figures {
    /// Adds the per-request usage between `before` and now.
    fn with_usage(mut self, before: Usage, n: usize) -> Self {
        let after = usage();
        self.cpu_us = (after.cpu_us - before.cpu_us) / n.max(1) as f64;
        self.sys_us = (after.sys_us - before.sys_us) / n.max(1) as f64;
        self.switches = (after.switches - before.switches) / n.max(1) as f64;
        self
    }
}

fn figures(mut ns: Vec<u64>, elapsed: Duration) -> Figures {
    ns.sort_unstable();
    let at = |q: f64| {
        let i = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len().max(1)) - 1;
        ns.get(i).map_or(f64::NAN, |&v| v as f64 / 1e3)
    };
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        mean: ns.iter().sum::<u64>() as f64 / ns.len().max(1) as f64 / 1e3,
        per_sec: per_sec(ns.len(), elapsed),
        cpu_us: f64::NAN,
        sys_us: f64::NAN,
        switches: f64::NAN,
    }
}

fn per_sec(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Medians, figure by figure, of several runs.
fn medians(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    Figures {
        p50: m(|x| x.p50),
        p99: m(|x| x.p99),
        mean: m(|x| x.mean),
        per_sec: m(|x| x.per_sec),
        cpu_us: m(|x| x.cpu_us),
        sys_us: m(|x| x.sys_us),
        switches: m(|x| x.switches),
    }
}

fn list(runs: &[Figures], f: fn(&Figures) -> f64, unit: &str) -> String {
    runs.iter()
        .map(|x| format!("{:.0}{unit}", f(x)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the whole process spent per request, as `cpu 31us (sys 20us) 4.1 wake-ups`.
fn cost(f: &Figures) -> String {
    format!(
        "cpu {:.0}us (sys {:.0}us) {:.1} wake-ups",
        f.cpu_us, f.sys_us, f.switches
    )
}

/// The median of the ratios of runs made back to back (bosun run i over raw run i): less
/// sensitive than the ratio of medians to load that drifts during the bench.
fn paired(raw: &[Figures], bosun: &[Figures], f: fn(&Figures) -> f64) -> f64 {
    median(raw.iter().zip(bosun).map(|(r, b)| f(b) / f(r)).collect())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

// ---------------------------------------------------------------------------------------
// Threads and sockets of one run, all stopped when the guard drops

/// The threads a run started and what stops them. Dropping it triggers the flag, sends
/// TERMINATE to a raw proxy, and joins every thread (each checks the flag every 100 ms).
struct Stage {
    stop: Shutdown,
    proxy_control: Option<zmq::Socket>,
    threads: Vec<JoinHandle<()>>,
}

impl Stage {
    fn new() -> Self {
        Stage {
            stop: Shutdown::new(),
            proxy_control: None,
            threads: Vec::new(),
        }
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce(Shutdown) + Send + 'static) -> Res<()> {
        let stop = self.stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || f(stop))
            .map_err(|e| format!("spawn {name}: {e}"))?;
        self.threads.push(handle);
        Ok(())
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.stop.trigger();
        if let Some(control) = self.proxy_control.take() {
            if let Err(e) = control.send("TERMINATE", 0) {
                eprintln!("proxy TERMINATE failed: {e}");
            }
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                eprintln!("a bench thread panicked");
            }
        }
    }
}

/// A raw socket of `kind` with linger 0 and the given receive timeout.
fn raw_socket(ctx: &zmq::Context, kind: zmq::SocketType, rcvtimeo: i32) -> Res<zmq::Socket> {
    let s = ctx.socket(kind).map_err(|e| format!("socket: {e}"))?;
    s.set_linger(0).map_err(|e| format!("linger: {e}"))?;
    s.set_rcvtimeo(rcvtimeo)
        .map_err(|e| format!("rcvtimeo: {e}"))?;
    s.set_sndtimeo(IO_TIMEOUT_MS)
        .map_err(|e| format!("sndtimeo: {e}"))?;
    Ok(s)
}

/// Binds `s` to a free loopback port and returns the endpoint.
fn bind_loopback(s: &zmq::Socket) -> Res<String> {
    s.bind("tcp://127.0.0.1:*")
        .map_err(|e| format!("bind: {e}"))?;
    match s.get_last_endpoint() {
        Ok(Ok(ep)) => Ok(ep),
        other => Err(format!("last endpoint: {other:?}")),
    }
}

fn connect(s: &zmq::Socket, ep: &str) -> Res<()> {
    s.connect(ep).map_err(|e| format!("connect {ep}: {e}"))
}

/// A receive that may time out (the caller then looks at its stop flag).
fn recv_or_idle(s: &zmq::Socket, what: &str) -> Option<Res<Vec<Vec<u8>>>> {
    match s.recv_multipart(0) {
        Ok(frames) => Some(Ok(frames)),
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => None,
        Err(e) => Some(Err(format!("{what} recv: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------
// What answers the requests

/// A server the client talks to directly, or a worker behind a broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answerer {
    /// Raw REP that echoes.
    RawRep,
    /// Raw REP that hands each request over an inproc PAIR to a thread that echoes it:
    /// the hop `PpWorker` makes, without anything else of bosun.
    RawRepHop,
    /// bosun `server::Server` with the echo handler.
    BosunServer,
    /// bosun `PpWorker` with the echo handler.
    BosunWorker,
    /// A 6/PPP DEALER worker written here that answers inline (no handler thread), with
    /// the same `handler::answer` work as `PpWorker`.
    InlinePpp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broker {
    /// `zmq::proxy_steerable` with a ROUTER frontend and a DEALER backend.
    RawProxy,
    /// The same proxy written here the way bosun's queue driver is: `zmq::poll` on both
    /// sockets, drain with `recv_multipart(DONTWAIT)`, forward with `send_multipart`.
    PollProxy,
    /// bosun `QueueDriver`.
    BosunQueue,
}

/// What a client talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topology {
    Direct(Answerer),
    Queue(Broker, Answerer, usize),
}

/// The started topology: the endpoint clients use and everything to stop.
struct Running {
    endpoint: String,
    _stage: Stage,
}

fn start(topology: Topology) -> Res<Running> {
    let mut stage = Stage::new();
    let endpoint = match topology {
        Topology::Direct(answerer) => {
            let ctx = zmq::Context::new();
            match answerer {
                Answerer::RawRep | Answerer::RawRepHop => {
                    let rep = raw_socket(&ctx, zmq::REP, STOP_CHECK_MS)?;
                    let ep = bind_loopback(&rep)?;
                    spawn_raw_rep(&mut stage, &ctx, rep, answerer == Answerer::RawRepHop)?;
                    ep
                }
                Answerer::BosunServer => {
                    let server = Server::bind(&ctx, "tcp://127.0.0.1:*", Faults::default())
                        .map_err(|e| format!("server bind: {e}"))?;
                    let ep = server.endpoint().to_string();
                    stage.spawn("bosun-server", move |stop| {
                        if let Err(e) = server.run(handler::echo(), &stop) {
                            eprintln!("bosun server: {e}");
                        }
                    })?;
                    ep
                }
                other => return Err(format!("{other:?} needs a broker")),
            }
        }
        Topology::Queue(broker, answerer, workers) => {
            let (broker_ctx, worker_ctx) = (zmq::Context::new(), zmq::Context::new());
            let (front, back) = match broker {
                Broker::RawProxy => spawn_raw_proxy(&mut stage, &broker_ctx, false)?,
                Broker::PollProxy => spawn_raw_proxy(&mut stage, &broker_ctx, true)?,
                Broker::BosunQueue => spawn_bosun_queue(&mut stage, &broker_ctx)?,
            };
            for _ in 0..workers {
                match (broker, answerer) {
                    (
                        Broker::RawProxy | Broker::PollProxy,
                        Answerer::RawRep | Answerer::RawRepHop,
                    ) => {
                        let rep = raw_socket(&worker_ctx, zmq::REP, STOP_CHECK_MS)?;
                        connect(&rep, &back)?;
                        let hop = answerer == Answerer::RawRepHop;
                        spawn_raw_rep(&mut stage, &worker_ctx, rep, hop)?;
                    }
                    (Broker::BosunQueue, Answerer::BosunWorker) => {
                        let worker = PpWorker::new(&worker_ctx, &back);
                        stage.spawn("bosun-worker", move |stop| {
                            if let Err(e) = worker.run(handler::echo(), &stop) {
                                eprintln!("bosun worker: {e}");
                            }
                        })?;
                    }
                    (Broker::BosunQueue, Answerer::InlinePpp) => {
                        let dealer = raw_socket(&worker_ctx, zmq::DEALER, STOP_CHECK_MS)?;
                        connect(&dealer, &back)?;
                        stage.spawn("inline-ppp", move |stop| {
                            if let Err(e) = inline_ppp_worker(&dealer, &stop) {
                                eprintln!("inline 6/PPP worker: {e}");
                            }
                        })?;
                    }
                    other => return Err(format!("{other:?} do not fit together")),
                }
            }
            front
        }
    };
    Ok(Running {
        endpoint,
        _stage: stage,
    })
}

/// Starts a raw REP echo worker on `rep` (bound or connected already); with `hop`, each
/// request goes over an inproc PAIR to a second thread that echoes it.
fn spawn_raw_rep(stage: &mut Stage, ctx: &zmq::Context, rep: zmq::Socket, hop: bool) -> Res<()> {
    if !hop {
        return stage.spawn("raw-rep", move |stop| {
            while !stop.is_triggered() {
                match recv_or_idle(&rep, "raw REP") {
                    None => {}
                    Some(Ok(frames)) => {
                        if let Err(e) = rep.send_multipart(frames, 0) {
                            return eprintln!("raw REP send: {e}");
                        }
                    }
                    Some(Err(e)) => return eprintln!("{e}"),
                }
            }
        });
    }
    let name = format!("inproc://bench-hop-{}", fastrand::u64(..));
    let near = raw_socket(ctx, zmq::PAIR, IO_TIMEOUT_MS)?;
    near.bind(&name).map_err(|e| format!("bind {name}: {e}"))?;
    let far = raw_socket(ctx, zmq::PAIR, STOP_CHECK_MS)?;
    connect(&far, &name)?;
    stage.spawn("raw-rep-handler", move |stop| {
        while !stop.is_triggered() {
            match recv_or_idle(&far, "hop handler") {
                None => {}
                Some(Ok(frames)) => {
                    if let Err(e) = far.send_multipart(frames, 0) {
                        return eprintln!("hop handler send: {e}");
                    }
                }
                Some(Err(e)) => return eprintln!("{e}"),
            }
        }
    })?;
    stage.spawn("raw-rep-hop", move |stop| {
        while !stop.is_triggered() {
            let frames = match recv_or_idle(&rep, "raw REP") {
                None => continue,
                Some(Ok(frames)) => frames,
                Some(Err(e)) => return eprintln!("{e}"),
            };
            let reply = near
                .send_multipart(frames, 0)
                .map_err(|e| e.to_string())
                .and_then(|_| near.recv_multipart(0).map_err(|e| e.to_string()))
                .and_then(|reply| rep.send_multipart(reply, 0).map_err(|e| e.to_string()));
            if let Err(e) = reply {
                return eprintln!("raw REP hop: {e}");
            }
        }
    })
}

/// Starts a ROUTER frontend / DEALER backend proxy on its own thread and returns
/// (frontend, backend) endpoints: `zmq::proxy_steerable`, stopped by the stage with
/// TERMINATE, or with `by_hand` a `zmq::poll` loop that checks the stage's flag.
fn spawn_raw_proxy(stage: &mut Stage, ctx: &zmq::Context, by_hand: bool) -> Res<(String, String)> {
    let mut frontend = raw_socket(ctx, zmq::ROUTER, -1)?;
    let mut backend = raw_socket(ctx, zmq::DEALER, -1)?;
    let front = bind_loopback(&frontend)?;
    let back = bind_loopback(&backend)?;
    if by_hand {
        stage.spawn("poll-proxy", move |stop| {
            if let Err(e) = poll_proxy(&frontend, &backend, &stop) {
                eprintln!("poll proxy: {e}");
            }
        })?;
        return Ok((front, back));
    }
    let mut control = raw_socket(ctx, zmq::PAIR, -1)?;
    let name = format!("inproc://bench-proxy-control-{}", fastrand::u64(..));
    control
        .bind(&name)
        .map_err(|e| format!("bind {name}: {e}"))?;
    let steer = raw_socket(ctx, zmq::PAIR, -1)?;
    connect(&steer, &name)?;
    stage.spawn("raw-proxy", move |_| {
        if let Err(e) = zmq::proxy_steerable(&mut frontend, &mut backend, &mut control) {
            eprintln!("raw proxy: {e}");
        }
    })?;
    stage.proxy_control = Some(steer);
    Ok((front, back))
}

/// A proxy loop shaped like bosun's queue driver, without its core.
fn poll_proxy(frontend: &zmq::Socket, backend: &zmq::Socket, stop: &Shutdown) -> Res<()> {
    let forward = |from: &zmq::Socket, to: &zmq::Socket| -> Res<()> {
        for _ in 0..256 {
            match from.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => to
                    .send_multipart(frames, 0)
                    .map_err(|e| format!("forward: {e}"))?,
                Err(_) => break,
            }
        }
        Ok(())
    };
    while !stop.is_triggered() {
        let mut items = [
            frontend.as_poll_item(zmq::POLLIN),
            backend.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, i64::from(STOP_CHECK_MS)).map_err(|e| format!("poll: {e}"))?;
        let (front_ready, back_ready) = (items[0].is_readable(), items[1].is_readable());
        if back_ready {
            forward(backend, frontend)?;
        }
        if front_ready {
            forward(frontend, backend)?;
        }
    }
    Ok(())
}

/// Starts a bosun queue on `ctx` and returns (frontend, backend) endpoints.
fn spawn_bosun_queue(stage: &mut Stage, ctx: &zmq::Context) -> Res<(String, String)> {
    let queue = QueueDriver::bind(
        ctx,
        "tcp://127.0.0.1:*",
        "tcp://127.0.0.1:*",
        QueueConfig::default(),
    )
    .map_err(|e| format!("queue bind: {e}"))?;
    let eps = (
        queue.frontend_endpoint().to_string(),
        queue.backend_endpoint().to_string(),
    );
    stage.spawn("bosun-queue", move |stop| {
        if let Err(e) = queue.run(&stop) {
            eprintln!("bosun queue: {e}");
        }
    })?;
    Ok(eps)
}

/// A minimal 6/PPP worker on a connected DEALER: READY, a HEARTBEAT every second, and
/// each request `[address...][""][body]` answered inline with `handler::answer`.
fn inline_ppp_worker(dealer: &zmq::Socket, stop: &Shutdown) -> Res<()> {
    let mut echo = handler::echo();
    let second = Duration::from_secs(1);
    dealer
        .send(&[PPP_READY][..], 0)
        .map_err(|e| format!("READY: {e}"))?;
    let mut next_heartbeat = now() + second;
    while !stop.is_triggered() {
        if let Some(frames) = recv_or_idle(dealer, "inline worker") {
            let mut frames = frames?;
            if let Some(at) = frames.iter().position(Vec::is_empty) {
                let body = frames.split_off(at + 1);
                frames.extend(handler::answer(&mut echo, body));
                dealer
                    .send_multipart(frames, 0)
                    .map_err(|e| format!("reply: {e}"))?;
            }
        }
        if now() >= next_heartbeat {
            dealer
                .send(&[PPP_HEARTBEAT][..], 0)
                .map_err(|e| format!("HEARTBEAT: {e}"))?;
            next_heartbeat = now() + second;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Clients

fn body() -> Vec<u8> {
    (0..BODY).map(|i| i as u8).collect()
}

/// A client that sends one request at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// Raw REQ: blocking send and receive.
    RawReq,
    /// Raw REQ that waits in `zmq::poll` (100 ms cap) before each receive and receives
    /// with `recv_multipart`, as bosun's drivers do.
    RawReqPoll,
    /// bosun `LazyPirateClient`, default retry policy.
    Bosun,
}

/// Times `n` round trips of `f` after `warm` untimed ones.
fn timed(warm: usize, n: usize, mut f: impl FnMut() -> Res<()>) -> Res<Figures> {
    for _ in 0..warm {
        f()?;
    }
    let mut ns = Vec::with_capacity(n);
    let before = usage();
    let start = now();
    for _ in 0..n {
        let t = now();
        f()?;
        ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(figures(ns, start.elapsed()).with_usage(before, n))
}

/// Runs `n` timed round trips of `client` against `topology`, on fresh everything.
fn round_trips(client: Client, topology: Topology, n: usize) -> Res<Figures> {
    let running = start(topology)?;
    let ctx = zmq::Context::new();
    let ep = running.endpoint.as_str();
    let body = body();
    let out = match client {
        Client::RawReq | Client::RawReqPoll => {
            let req = raw_socket(&ctx, zmq::REQ, IO_TIMEOUT_MS)?;
            connect(&req, ep)?;
            let mut reply = zmq::Message::new();
            timed(warmup(n), n, || {
                req.send(&body[..], 0)
                    .map_err(|e| format!("REQ send: {e}"))?;
                let len = if client == Client::RawReq {
                    req.recv(&mut reply, 0)
                        .map_err(|e| format!("REQ recv (no reply in {IO_TIMEOUT_MS} ms): {e}"))?;
                    reply.len()
                } else {
                    let deadline = now() + Duration::from_millis(IO_TIMEOUT_MS as u64);
                    loop {
                        let mut items = [req.as_poll_item(zmq::POLLIN)];
                        zmq::poll(&mut items, 100).map_err(|e| format!("poll: {e}"))?;
                        if items[0].is_readable() {
                            break;
                        }
                        if now() >= deadline {
                            return Err(format!("REQ: no reply in {IO_TIMEOUT_MS} ms"));
                        }
                    }
                    let frames = req
                        .recv_multipart(0)
                        .map_err(|e| format!("REQ recv: {e}"))?;
                    frames.concat().len()
                };
                if len != BODY {
                    return Err(format!("raw reply of {len} bytes"));
                }
                Ok(())
            })?
        }
        Client::Bosun => {
            let mut client = LazyPirateClient::new(&ctx, ep, Retry::default())
                .map_err(|e| format!("client: {e}"))?;
            let out = timed(warmup(n), n, || {
                let reply = client
                    .request(body.clone())
                    .map_err(|e| format!("request: {e}"))?;
                if reply.len() != BODY {
                    return Err(format!("bosun reply of {} bytes", reply.len()));
                }
                Ok(())
            })?;
            let stats = client.stats();
            if stats.retries > 0 || stats.discarded > 0 {
                eprintln!(
                    "  note: bosun client retried {} times and discarded {} replies",
                    stats.retries, stats.discarded
                );
            }
            out
        }
    };
    drop(running);
    Ok(out)
}

/// A DEALER client that keeps `window` requests `[""][payload]` outstanding until `n`
/// replies are in; returns the elapsed time.
fn pipeline(dealer: &zmq::Socket, n: usize, window: usize, payload: &[u8]) -> Res<Duration> {
    let send = || -> Res<()> {
        dealer
            .send("", zmq::SNDMORE)
            .and_then(|_| dealer.send(payload, 0))
            .map_err(|e| format!("DEALER send: {e}"))
    };
    let start = now();
    let mut sent = 0;
    while sent < window.min(n) {
        send()?;
        sent += 1;
    }
    let mut empty = zmq::Message::new();
    let mut reply = zmq::Message::new();
    for got in 0..n {
        dealer.recv(&mut empty, 0).map_err(|e| {
            format!("DEALER recv: no reply within {IO_TIMEOUT_MS} ms after {got} of {n}: {e}")
        })?;
        if !empty.is_empty() || !dealer.get_rcvmore().unwrap_or(false) {
            return Err("reply without its empty delimiter".into());
        }
        dealer
            .recv(&mut reply, 0)
            .map_err(|e| format!("DEALER recv body: {e}"))?;
        if reply.is_empty() || dealer.get_rcvmore().unwrap_or(true) {
            return Err("malformed reply body".into());
        }
        if sent < n {
            send()?;
            sent += 1;
        }
    }
    Ok(start.elapsed())
}

/// The one payload of the pipelined client: an encoded envelope, so bosun's worker
/// treats it as one (and replies with one); raw REP workers echo it unchanged.
fn envelope_payload() -> Vec<u8> {
    Envelope::new(body()).encode()
}

fn dealer_client(ctx: &zmq::Context, ep: &str) -> Res<zmq::Socket> {
    let d = raw_socket(ctx, zmq::DEALER, IO_TIMEOUT_MS)?;
    connect(&d, ep)?;
    Ok(d)
}

/// Runs the pipelined client (`IN_FLIGHT` outstanding) against `topology`: a warm-up,
/// then `n` timed requests.
fn pipelined(topology: Topology, n: usize) -> Res<Figures> {
    let running = start(topology)?;
    let ctx = zmq::Context::new();
    let dealer = dealer_client(&ctx, &running.endpoint)?;
    let payload = envelope_payload();
    pipeline(&dealer, warmup(n), IN_FLIGHT, &payload)?;
    let before = usage();
    let elapsed = pipeline(&dealer, n, IN_FLIGHT, &payload)?;
    let out = Figures {
        p50: f64::NAN,
        p99: f64::NAN,
        mean: f64::NAN,
        per_sec: per_sec(n, elapsed),
        cpu_us: f64::NAN,
        sys_us: f64::NAN,
        switches: f64::NAN,
    }
    .with_usage(before, n);
    drop(dealer);
    drop(running);
    Ok(out)
}

/// Runs every variant `repeats` times, interleaved (v1, v2, ..., v1, v2, ...); returns
/// each variant's runs.
fn interleaved<V: Copy>(
    repeats: usize,
    variants: &[V],
    mut run: impl FnMut(V) -> Res<Figures>,
) -> Res<Vec<Vec<Figures>>> {
    let mut out = vec![Vec::new(); variants.len()];
    for _ in 0..repeats {
        for (i, v) in variants.iter().enumerate() {
            out[i].push(run(*v)?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// (a) Lazy Pirate round trip

fn part_a(s: &Settings) -> Res<()> {
    let runs = interleaved(
        s.repeats,
        &[
            (Client::RawReq, Answerer::RawRep),
            (Client::Bosun, Answerer::BosunServer),
        ],
        |(c, a)| round_trips(c, Topology::Direct(a), s.n_rtt),
    )?;
    let (r, b) = (medians(&runs[0]), medians(&runs[1]));
    let ratio = b.p50 / r.p50;
    println!(
        "lazy-pirate rtt {BODY}B n={}: raw p50 {:.0}us p99 {:.0}us mean {:.0}us | bosun p50 {:.0}us p99 {:.0}us mean {:.0}us | p50 ratio {ratio:.3}x (target <= 1.15x: {})",
        s.n_rtt, r.p50, r.p99, r.mean, b.p50, b.p99, b.mean, verdict(ratio <= 1.15)
    );
    println!(
        "  runs p50: raw {} | bosun {} (paired ratio {:.2}x) ; per request: raw {} | bosun {}",
        list(&runs[0], |x| x.p50, "us"),
        list(&runs[1], |x| x.p50, "us"),
        paired(&runs[0], &runs[1], |x| x.p50),
        cost(&r),
        cost(&b)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (b) Queue, one request at a time, one worker

fn part_b(s: &Settings) -> Res<()> {
    let runs = interleaved(
        s.repeats,
        &[
            (Client::RawReq, Broker::RawProxy, Answerer::RawRep),
            (Client::Bosun, Broker::BosunQueue, Answerer::BosunWorker),
        ],
        |(c, b, a)| round_trips(c, Topology::Queue(b, a, 1), s.n_queue),
    )?;
    let (r, b) = (medians(&runs[0]), medians(&runs[1]));
    let ratio = b.per_sec / r.per_sec;
    println!(
        "queue 1 client x 1 in flight, 1 worker, {BODY}B n={}: raw proxy {:.0} req/s (p50 {:.0}us p99 {:.0}us) | bosun queue {:.0} req/s (p50 {:.0}us p99 {:.0}us) | ratio {ratio:.3}x (target >= 0.9x: {})",
        s.n_queue,
        r.per_sec,
        r.p50,
        r.p99,
        b.per_sec,
        b.p50,
        b.p99,
        verdict(ratio >= 0.9)
    );
    println!(
        "  runs req/s: raw {} | bosun {} (paired ratio {:.2}x) ; per request: raw {} | bosun {}",
        list(&runs[0], |x| x.per_sec, ""),
        list(&runs[1], |x| x.per_sec, ""),
        paired(&runs[0], &runs[1], |x| x.per_sec),
        cost(&r),
        cost(&b)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (c) Queue, 100 in flight, 4 workers

fn part_c(s: &Settings) -> Res<()> {
    let runs = interleaved(
        s.repeats,
        &[
            Topology::Queue(Broker::RawProxy, Answerer::RawRep, WORKERS),
            Topology::Queue(Broker::BosunQueue, Answerer::BosunWorker, WORKERS),
        ],
        |t| pipelined(t, s.n_inflight),
    )?;
    let (r, b) = (medians(&runs[0]), medians(&runs[1]));
    println!(
        "queue 1 client x {IN_FLIGHT} in flight, {WORKERS} workers, envelope of {BODY}B n={}: raw proxy {:.0} req/s | bosun queue {:.0} req/s | ratio {:.2}x",
        s.n_inflight,
        r.per_sec,
        b.per_sec,
        b.per_sec / r.per_sec
    );
    println!(
        "  runs req/s: raw {} | bosun {} (paired ratio {:.2}x) ; per request: raw {} | bosun {}",
        list(&runs[0], |x| x.per_sec, ""),
        list(&runs[1], |x| x.per_sec, ""),
        paired(&runs[0], &runs[1], |x| x.per_sec),
        cost(&r),
        cost(&b)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (d) Memory

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn part_d(s: &Settings) -> Res<()> {
    let running = start(Topology::Queue(
        Broker::BosunQueue,
        Answerer::BosunWorker,
        WORKERS,
    ))?;
    let ctx = zmq::Context::new();
    let dealer = dealer_client(&ctx, &running.endpoint)?;
    let payload = envelope_payload();
    let rss = || status_field("VmRSS:").ok_or("no VmRSS in /proc/self/status");
    pipeline(&dealer, s.n_mem_warmup, IN_FLIGHT, &payload)?;
    let before = rss()?;
    pipeline(&dealer, s.n_mem, IN_FLIGHT, &payload)?;
    let after = rss()?;
    drop(dealer);
    drop(running);
    let growth = (after as f64 - before as f64) / before as f64 * 100.0;
    println!(
        "memory (bench process hosting the bosun queue + {WORKERS} workers, {IN_FLIGHT} in flight): VmRSS {before} KiB after {} requests, {after} KiB after {} more | growth {growth:+.1}%",
        s.n_mem_warmup, s.n_mem
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (x) Diagnostics

/// Nanoseconds per call of `f`, over `n` calls.
fn ns_per_op(n: usize, mut f: impl FnMut()) -> f64 {
    let start = now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The diagnostics: `x` all of them, `r` CPU costs and (a)'s variants, `q` (b)'s, `f` (c)'s.
fn part_x(s: &Settings, which: &char) -> Res<()> {
    let want = |c: char| *which == 'x' || *which == c;
    println!("diagnostics ({which}):");
    if want('r') {
        diag_rtt(s)?;
    }
    if want('q') {
        diag_queue1(s)?;
    }
    if want('f') {
        diag_flight(s)?;
    }
    Ok(())
}

fn diag_rtt(s: &Settings) -> Res<()> {
    // CPU cost of the envelope work bosun adds per request, single-threaded.
    let n = 100_000;
    let frame = envelope_payload();
    let mut echo = handler::echo();
    let new_encode = ns_per_op(n, || {
        std::hint::black_box(Envelope::new(std::hint::black_box(body())).encode());
    });
    let decode = ns_per_op(n, || {
        std::hint::black_box(Envelope::decode(std::hint::black_box(&frame)).ok());
    });
    let answer = ns_per_op(n, || {
        std::hint::black_box(handler::answer(&mut echo, vec![frame.clone()]));
    });
    let clock = ns_per_op(n, || {
        std::hint::black_box(now());
    });
    println!(
        "  cpu per call: Envelope::new+encode {new_encode:.0}ns | Envelope::decode {decode:.0}ns | handler::answer(echo) {answer:.0}ns | io::now {clock:.0}ns | envelope of {BODY}B body = {} bytes on the wire",
        frame.len()
    );

    // (a) with one side swapped at a time.
    let direct = [
        (Client::RawReq, Answerer::RawRep),
        (Client::RawReqPoll, Answerer::RawRep),
        (Client::RawReq, Answerer::RawRepHop),
        (Client::Bosun, Answerer::RawRep),
        (Client::RawReq, Answerer::BosunServer),
        (Client::Bosun, Answerer::BosunServer),
    ];
    let runs = interleaved(s.repeats, &direct, |(c, a)| {
        round_trips(c, Topology::Direct(a), s.n_rtt)
    })?;
    let base = medians(&runs[0]).p50;
    for ((c, a), r) in direct.iter().zip(&runs) {
        let m = medians(r);
        println!(
            "  rtt {c:?} -> {a:?}: p50 {:.0}us mean {:.0}us ({:+.0}us, {:.2}x raw p50) {} | runs {}",
            m.p50,
            m.mean,
            m.p50 - base,
            m.p50 / base,
            cost(&m),
            list(r, |x| x.p50, "us")
        );
    }

    Ok(())
}

fn diag_queue1(s: &Settings) -> Res<()> {
    // (b) with one part swapped at a time.
    let queue1 = [
        (Client::RawReq, Broker::RawProxy, Answerer::RawRep),
        (Client::RawReq, Broker::RawProxy, Answerer::RawRepHop),
        (Client::RawReqPoll, Broker::RawProxy, Answerer::RawRep),
        (Client::Bosun, Broker::RawProxy, Answerer::RawRep),
        (Client::RawReq, Broker::PollProxy, Answerer::RawRep),
        (Client::RawReq, Broker::BosunQueue, Answerer::InlinePpp),
        (Client::RawReq, Broker::BosunQueue, Answerer::BosunWorker),
        (Client::Bosun, Broker::BosunQueue, Answerer::BosunWorker),
    ];
    let runs = interleaved(s.repeats, &queue1, |(c, b, a)| {
        round_trips(c, Topology::Queue(b, a, 1), s.n_queue)
    })?;
    let base = medians(&runs[0]);
    for ((c, b, a), r) in queue1.iter().zip(&runs) {
        let m = medians(r);
        println!(
            "  queue x1 {c:?} -> {b:?} -> {a:?}: {:.0} req/s ({:.2}x raw) p50 {:.0}us ({:+.0}us) {} | runs {}",
            m.per_sec,
            m.per_sec / base.per_sec,
            m.p50,
            m.p50 - base.p50,
            cost(&m),
            list(r, |x| x.per_sec, "")
        );
    }

    Ok(())
}

fn diag_flight(s: &Settings) -> Res<()> {
    // (c) with the broker or the worker swapped.
    let flight = [
        (Broker::RawProxy, Answerer::RawRep, WORKERS),
        (Broker::RawProxy, Answerer::RawRepHop, WORKERS),
        (Broker::PollProxy, Answerer::RawRep, WORKERS),
        (Broker::BosunQueue, Answerer::InlinePpp, WORKERS),
        (Broker::BosunQueue, Answerer::BosunWorker, WORKERS),
        (Broker::BosunQueue, Answerer::InlinePpp, 1),
        (Broker::BosunQueue, Answerer::BosunWorker, 1),
    ];
    let runs = interleaved(s.repeats, &flight, |(b, a, w)| {
        pipelined(Topology::Queue(b, a, w), s.n_inflight)
    })?;
    let base = medians(&runs[0]).per_sec;
    for ((b, a, w), r) in flight.iter().zip(&runs) {
        let m = medians(r);
        println!(
            "  {IN_FLIGHT} in flight {b:?} -> {w} x {a:?}: {:.0} req/s ({:.2}x raw) {} | runs {}",
            m.per_sec,
            m.per_sec / base,
            cost(&m),
            list(r, |x| x.per_sec, "")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn run(s: &Settings) -> Res<()> {
    println!(
        "bosun pirates bench: tcp loopback, {BODY}-byte bodies, {} run(s) per side interleaved raw/bosun, medians",
        s.repeats
    );
    let started = now();
    for part in &s.parts {
        match part {
            'a' => part_a(s)?,
            'b' => part_b(s)?,
            'c' => part_c(s)?,
            'd' => part_d(s)?,
            'x' | 'r' | 'q' | 'f' => part_x(s, part)?,
            other => return Err(format!("unknown part {other:?} in BOSUN_BENCH_ONLY")),
        }
    }
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Waits (at most 2 s) for every thread this bench started to be gone and reports any
/// left. `PpWorker` detaches its handler thread, which stops on its own after its
/// worker; zmq's I/O threads go with their contexts.
fn check_threads_stopped() {
    let deadline = now() + Duration::from_secs(2);
    loop {
        let threads = status_field("Threads:").unwrap_or(0);
        if threads <= 1 {
            return println!("all bench threads stopped");
        }
        if now() >= deadline {
            return eprintln!("warning: {} threads still running at exit", threads - 1);
        }
        let mut none: [zmq::PollItem; 0] = [];
        let _ = zmq::poll(&mut none, 10);
    }
}

fn main() {
    let result = Settings::from_env().and_then(|s| run(&s));
    check_threads_stopped();
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
