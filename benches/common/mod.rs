//! The harness both benches share (`mod common;` in each): settings from the environment,
//! timing, medians and percentiles, CPU and wake-up accounting, RSS, the threads of one
//! run and what stops them, and the raw ZeroMQ side (REP echo workers, the
//! `zmq::proxy_steerable` ROUTER/DEALER proxy stopped with `TERMINATE`, a pipelining
//! DEALER client).
//!
//! Not every bench uses every item.
#![allow(dead_code)]

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bosun::Shutdown;

/// Body size of every request.
pub const BODY: usize = 64;

/// Longest any socket call of the bench's own clients waits before the run is abandoned.
pub const IO_TIMEOUT_MS: i32 = 5_000;
/// Longest a raw worker blocks before it looks at its stop flag (as bosun's drivers do).
pub const STOP_CHECK_MS: i32 = 100;

pub type Res<T> = Result<T, String>;

pub fn now() -> Instant {
    bosun::io::now()
}

pub fn env_count(name: &str) -> Res<Option<usize>> {
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
pub fn warmup(n: usize) -> usize {
    (n / 10).clamp(50, 2_000)
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Figures of one run: latencies in microseconds, the request rate, and what the whole
/// process (client, server or broker, and workers all run in it) spent per request:
/// CPU time in microseconds and voluntary context switches (thread wake-ups).
#[derive(Clone, Copy)]
pub struct Figures {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
    pub per_sec: f64,
    pub cpu_us: f64,
    pub sys_us: f64,
    pub switches: f64,
}

/// CPU time and voluntary context switches of this process so far, all threads.
#[derive(Clone, Copy)]
pub struct Usage {
    pub cpu_us: f64,
    pub sys_us: f64,
    pub switches: f64,
}

pub fn usage() -> Usage {
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
    pub fn with_usage(mut self, before: Usage, n: usize) -> Self {
        let after = usage();
        self.cpu_us = (after.cpu_us - before.cpu_us) / n.max(1) as f64;
        self.sys_us = (after.sys_us - before.sys_us) / n.max(1) as f64;
        self.switches = (after.switches - before.switches) / n.max(1) as f64;
        self
    }
}

pub fn figures(mut ns: Vec<u64>, elapsed: Duration) -> Figures {
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

pub fn per_sec(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Medians, figure by figure, of several runs.
pub fn medians(runs: &[Figures]) -> Figures {
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

pub fn list(runs: &[Figures], f: fn(&Figures) -> f64, unit: &str) -> String {
    runs.iter()
        .map(|x| format!("{:.0}{unit}", f(x)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the whole process spent per request, as `cpu 31us (sys 20us) 4.1 wake-ups`.
pub fn cost(f: &Figures) -> String {
    format!(
        "cpu {:.0}us (sys {:.0}us) {:.1} wake-ups",
        f.cpu_us, f.sys_us, f.switches
    )
}

/// The median of the ratios of runs made back to back (bosun run i over raw run i): less
/// sensitive than the ratio of medians to load that drifts during the bench.
pub fn paired(raw: &[Figures], bosun: &[Figures], f: fn(&Figures) -> f64) -> f64 {
    median(raw.iter().zip(bosun).map(|(r, b)| f(b) / f(r)).collect())
}

/// The second line of a raw-vs-bosun measurement: each run's figure `what` (read by `f`,
/// printed with `unit`), the paired ratio, and the CPU and wake-ups per request of the
/// medians.
pub fn print_runs(
    raw: &[Figures],
    bosun: &[Figures],
    what: &str,
    f: fn(&Figures) -> f64,
    unit: &str,
) {
    println!(
        "  runs {what}: raw {} | bosun {} (paired ratio {:.2}x) ; per request: raw {} | bosun {}",
        list(raw, f, unit),
        list(bosun, f, unit),
        paired(raw, bosun, f),
        cost(&medians(raw)),
        cost(&medians(bosun))
    );
}

pub fn verdict(ok: bool) -> &'static str {
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
pub struct Stage {
    pub stop: Shutdown,
    pub proxy_control: Option<zmq::Socket>,
    pub threads: Vec<JoinHandle<()>>,
}

impl Stage {
    pub fn new() -> Self {
        Stage {
            stop: Shutdown::new(),
            proxy_control: None,
            threads: Vec::new(),
        }
    }

    pub fn spawn(&mut self, name: &str, f: impl FnOnce(Shutdown) + Send + 'static) -> Res<()> {
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
pub fn raw_socket(ctx: &zmq::Context, kind: zmq::SocketType, rcvtimeo: i32) -> Res<zmq::Socket> {
    let s = ctx.socket(kind).map_err(|e| format!("socket: {e}"))?;
    s.set_linger(0).map_err(|e| format!("linger: {e}"))?;
    s.set_rcvtimeo(rcvtimeo)
        .map_err(|e| format!("rcvtimeo: {e}"))?;
    s.set_sndtimeo(IO_TIMEOUT_MS)
        .map_err(|e| format!("sndtimeo: {e}"))?;
    Ok(s)
}

/// Binds `s` to a free loopback port and returns the endpoint.
pub fn bind_loopback(s: &zmq::Socket) -> Res<String> {
    s.bind("tcp://127.0.0.1:*")
        .map_err(|e| format!("bind: {e}"))?;
    match s.get_last_endpoint() {
        Ok(Ok(ep)) => Ok(ep),
        other => Err(format!("last endpoint: {other:?}")),
    }
}

pub fn connect(s: &zmq::Socket, ep: &str) -> Res<()> {
    s.connect(ep).map_err(|e| format!("connect {ep}: {e}"))
}

/// A receive that may time out (the caller then looks at its stop flag).
pub fn recv_or_idle(s: &zmq::Socket, what: &str) -> Option<Res<Vec<Vec<u8>>>> {
    match s.recv_multipart(0) {
        Ok(frames) => Some(Ok(frames)),
        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => None,
        Err(e) => Some(Err(format!("{what} recv: {e}"))),
    }
}

/// Starts a raw REP echo worker on `rep` (bound or connected already); with `hop`, each
/// request goes over an inproc PAIR to a second thread that echoes it.
pub fn spawn_raw_rep(
    stage: &mut Stage,
    ctx: &zmq::Context,
    rep: zmq::Socket,
    hop: bool,
) -> Res<()> {
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
pub fn spawn_raw_proxy(
    stage: &mut Stage,
    ctx: &zmq::Context,
    by_hand: bool,
) -> Res<(String, String)> {
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
pub fn poll_proxy(frontend: &zmq::Socket, backend: &zmq::Socket, stop: &Shutdown) -> Res<()> {
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

pub fn body() -> Vec<u8> {
    (0..BODY).map(|i| i as u8).collect()
}

/// Times `n` round trips of `f` after `warm` untimed ones.
pub fn timed(warm: usize, n: usize, f: impl FnMut() -> Res<()>) -> Res<Figures> {
    timed_by_thread(warm, n, f).map(|(figures, _)| figures)
}

/// [`timed`], and what each kind of thread spent per request (see [`by_thread`]).
pub fn timed_by_thread(
    warm: usize,
    n: usize,
    mut f: impl FnMut() -> Res<()>,
) -> Res<(Figures, Vec<ThreadCost>)> {
    for _ in 0..warm {
        f()?;
    }
    let mut ns = Vec::with_capacity(n);
    let threads = thread_usage();
    let before = usage();
    let start = now();
    for _ in 0..n {
        let t = now();
        f()?;
        ns.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let figures = figures(ns, start.elapsed()).with_usage(before, n);
    Ok((figures, by_thread(&threads, n)))
}

/// A DEALER client that keeps `window` requests `[""][payload frames...]` outstanding
/// until `n` replies are in, each `[""]` and as many frames as the request (an echo);
/// returns the elapsed time.
pub fn pipeline(
    dealer: &zmq::Socket,
    n: usize,
    window: usize,
    payload: &[Vec<u8>],
) -> Res<Duration> {
    let send = || -> Res<()> {
        dealer
            .send("", zmq::SNDMORE)
            .map_err(|e| format!("DEALER send: {e}"))?;
        bosun::io::send_frames(dealer, payload, 0).map_err(|e| format!("DEALER send: {e}"))
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
        if !empty.is_empty() || !empty.get_more() {
            return Err("reply without its empty delimiter".into());
        }
        let (mut frames, mut bytes) = (0, 0);
        loop {
            dealer
                .recv(&mut reply, 0)
                .map_err(|e| format!("DEALER recv body: {e}"))?;
            frames += 1;
            bytes += reply.len();
            if !reply.get_more() {
                break;
            }
        }
        if frames != payload.len() || bytes == 0 {
            return Err(format!(
                "malformed reply: {frames} frames of {bytes} bytes, expected {} frames",
                payload.len()
            ));
        }
        if sent < n {
            send()?;
            sent += 1;
        }
    }
    Ok(start.elapsed())
}

/// A DEALER connected to `ep`.
pub fn dealer_client(ctx: &zmq::Context, ep: &str) -> Res<zmq::Socket> {
    let d = raw_socket(ctx, zmq::DEALER, IO_TIMEOUT_MS)?;
    connect(&d, ep)?;
    Ok(d)
}

/// Runs every variant `repeats` times, interleaved (v1, v2, ..., v1, v2, ...); returns
/// each variant's runs.
pub fn interleaved<V: Copy>(
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

pub fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Nanoseconds per call of `f` on an input made by `make`, over `n` calls: the inputs
/// are made in batches outside the timed part (for calls that consume their input).
pub fn ns_per_call_on<T>(n: usize, mut make: impl FnMut() -> T, mut f: impl FnMut(T)) -> f64 {
    const BATCH: usize = 1024;
    let mut spent = Duration::ZERO;
    let mut done = 0;
    while done < n {
        let batch: Vec<T> = (0..BATCH.min(n - done)).map(|_| make()).collect();
        done += batch.len();
        let start = now();
        for input in batch {
            f(input);
        }
        spent += start.elapsed();
    }
    spent.as_nanos() as f64 / n.max(1) as f64
}

/// Nanoseconds per call of `f`, over `n` calls.
pub fn ns_per_op(n: usize, mut f: impl FnMut()) -> f64 {
    let start = now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Waits (at most 2 s) for every thread this bench started to be gone and reports any
/// left. `PpWorker` and `Worker` detach their handler threads, which stop on their own
/// after their worker; zmq's I/O threads go with their contexts.
pub fn check_threads_stopped() {
    let deadline = now() + Duration::from_secs(2);
    loop {
        let threads = status_field("Threads:").unwrap_or(0);
        // sled's I/O pool (threads `sled-io-N`) is process-wide and outlives every
        // database; it is sled's, not a thread the bench forgot to stop.
        let sled = sled_io_threads();
        if threads.saturating_sub(sled) <= 1 {
            return println!("all bench threads stopped");
        }
        if now() >= deadline {
            return eprintln!(
                "warning: {} threads still running at exit",
                threads.saturating_sub(sled) - 1
            );
        }
        let mut none: [zmq::PollItem; 0] = [];
        let _ = zmq::poll(&mut none, 10);
    }
}

/// How many of this process's threads are sled's I/O pool.
fn sled_io_threads() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|name| name.starts_with("sled-io"))
        })
        .count() as u64
}

/// Whether a smoke run was asked for: the `--quick` argument or `BOSUN_BENCH_QUICK=1`.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var("BOSUN_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The parts named in `BOSUN_BENCH_ONLY` (e.g. `a,c`, first letter of each, lower
/// case), or every letter of `default`.
pub fn parts(default: &str) -> std::collections::BTreeSet<char> {
    match std::env::var("BOSUN_BENCH_ONLY") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .filter_map(|p| p.trim().chars().next())
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        _ => default.chars().collect(),
    }
}

/// `BOSUN_BENCH_<name>` if set, else `default`; at least 1.
pub fn count(name: &str, default: usize) -> Res<usize> {
    Ok(env_count(name)?.unwrap_or(default).max(1))
}

impl Figures {
    /// Figures of a run that only counts requests: `n` in `elapsed`, no latencies.
    pub fn throughput(n: usize, elapsed: Duration) -> Self {
        Figures {
            p50: f64::NAN,
            p99: f64::NAN,
            mean: f64::NAN,
            per_sec: per_sec(n, elapsed),
            cpu_us: f64::NAN,
            sys_us: f64::NAN,
            switches: f64::NAN,
        }
    }
}

/// VmRSS of this process in KiB.
pub fn rss_kib() -> Res<u64> {
    status_field("VmRSS:").ok_or_else(|| "no VmRSS in /proc/self/status".to_string())
}

/// What one kind of thread spent per request: CPU time in microseconds and voluntary
/// context switches (wake-ups).
#[derive(Clone, Debug)]
pub struct ThreadCost {
    pub kind: String,
    pub cpu_us: f64,
    pub switches: f64,
}

/// CPU nanoseconds (from `/proc/self/task/*/schedstat`) and voluntary context switches of
/// every live thread of this process, by thread id, with the thread's kind: its name
/// less any trailing number (`bosun-handler-7` -> `bosun-handler`, `ZMQbg/IO/0` ->
/// `ZMQbg/IO`), and `main` for the main thread (the bench's client).
pub fn thread_usage() -> Vec<(u64, String, u64, u64)> {
    let pid = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let tid_name = entry.file_name().to_string_lossy().into_owned();
        let Ok(tid) = tid_name.parse::<u64>() else {
            continue;
        };
        let path = entry.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
        let cpu_ns = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let switches = read("status")
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let kind = if tid_name == pid {
            "main".to_string()
        } else {
            read("comm")
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .trim_end_matches(['-', '/'])
                .to_string()
        };
        out.push((tid, kind, cpu_ns, switches));
    }
    out
}

/// Per request, by kind of thread, what the threads alive in `before` (a
/// [`thread_usage`]) spent since, over `n` requests; kinds in order of CPU spent.
pub fn by_thread(before: &[(u64, String, u64, u64)], n: usize) -> Vec<ThreadCost> {
    let after = thread_usage();
    let mut kinds: Vec<ThreadCost> = Vec::new();
    for (tid, kind, cpu, sw) in &after {
        let (cpu0, sw0) = before
            .iter()
            .find(|b| b.0 == *tid)
            .map_or((0, 0), |b| (b.2, b.3));
        let cpu_us = cpu.saturating_sub(cpu0) as f64 / 1e3 / n.max(1) as f64;
        let switches = sw.saturating_sub(sw0) as f64 / n.max(1) as f64;
        match kinds.iter_mut().find(|k| k.kind == *kind) {
            Some(k) => {
                k.cpu_us += cpu_us;
                k.switches += switches;
            }
            None => kinds.push(ThreadCost {
                kind: kind.clone(),
                cpu_us,
                switches,
            }),
        }
    }
    kinds.sort_by(|a, b| b.cpu_us.total_cmp(&a.cpu_us));
    kinds
}

/// The median, kind by kind, of several runs' [`by_thread`] figures.
pub fn median_by_thread(runs: &[Vec<ThreadCost>]) -> Vec<ThreadCost> {
    let mut kinds: Vec<String> = Vec::new();
    for k in runs.iter().flatten() {
        if !kinds.contains(&k.kind) {
            kinds.push(k.kind.clone());
        }
    }
    let pick = |kind: &str, f: fn(&ThreadCost) -> f64| {
        median(
            runs.iter()
                .map(|r| r.iter().find(|k| k.kind == kind).map_or(0.0, f))
                .collect(),
        )
    };
    let mut out: Vec<ThreadCost> = kinds
        .iter()
        .map(|kind| ThreadCost {
            kind: kind.clone(),
            cpu_us: pick(kind, |k| k.cpu_us),
            switches: pick(kind, |k| k.switches),
        })
        .collect();
    out.sort_by(|a, b| b.cpu_us.total_cmp(&a.cpu_us));
    out
}

/// `main 12us/0.5, bosun-broker 8us/1.0, ...` (CPU per request / wake-ups per request),
/// leaving out kinds that spent under 0.5 us.
pub fn thread_costs(kinds: &[ThreadCost]) -> String {
    kinds
        .iter()
        .filter(|k| k.cpu_us >= 0.5)
        .map(|k| format!("{} {:.0}us/{:.1}", k.kind, k.cpu_us, k.switches))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each variant's runs, and each variant's median by kind of thread.
pub type RunsByThread = (Vec<Vec<Figures>>, Vec<Vec<ThreadCost>>);

/// [`interleaved`] for runs that also report [`by_thread`] figures.
pub fn interleaved_by_thread<V: Copy>(
    repeats: usize,
    variants: &[V],
    mut run: impl FnMut(V) -> Res<(Figures, Vec<ThreadCost>)>,
) -> Res<RunsByThread> {
    let mut runs = vec![Vec::new(); variants.len()];
    let mut threads = vec![Vec::new(); variants.len()];
    for _ in 0..repeats {
        for (i, v) in variants.iter().enumerate() {
            let (f, t) = run(*v)?;
            runs[i].push(f);
            threads[i].push(t);
        }
    }
    let threads = threads.iter().map(|t| median_by_thread(t)).collect();
    Ok((runs, threads))
}

/// A zmq context whose I/O and reaper threads are called `name` (at most 15 bytes), so
/// that [`by_thread`] and profilers can tell them apart: libzmq starts them with the
/// context's first socket, and a new thread takes the name of the thread that makes it.
pub fn named_context(name: &str) -> Res<zmq::Context> {
    let ctx = zmq::Context::new();
    let first = ctx.clone();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || first.socket(zmq::PAIR).map(drop))
        .map_err(|e| format!("spawn {name}: {e}"))?
        .join()
        .map_err(|_| format!("{name} panicked"))?
        .map_err(|e| format!("{name} socket: {e}"))?;
    Ok(ctx)
}

/// The data dirs made by [`receiver_options`], removed by [`remove_receiver_dirs`].
static RECEIVER_DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// What the bosun workers and servers of a run do with each request, from
/// `BOSUN_BENCH_RECEIVER`: unset or `off`, nothing more (the library's default); `memory`,
/// a duplicate window in memory and max attempts 3 (as `bosun worker --dedup`); `disk`,
/// the same kept in a data dir of each worker's own with `batched` durability (as `bosun
/// worker --data-dir`: each reply flushed before it is sent), under the temp dir (or
/// `BOSUN_BENCH_DIR`), removed at the end of the bench.
pub fn receiver_options() -> Res<bosun::io::receiver::ReceiverOptions> {
    use bosun::io::receiver::ReceiverOptions;
    use bosun::proto::dedup::Limits;
    let window = ReceiverOptions {
        dedup: Some(Limits::default()),
        max_attempts: Some(3),
        ..ReceiverOptions::default()
    };
    match std::env::var("BOSUN_BENCH_RECEIVER").as_deref() {
        Err(_) | Ok("") | Ok("off") => Ok(ReceiverOptions::default()),
        Ok("memory") => Ok(window),
        Ok("disk") => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let root = std::env::var_os("BOSUN_BENCH_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            let dir = root.join(format!(
                "bosun-bench-data-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            RECEIVER_DIRS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(dir.clone());
            let store = bosun::store::Store::open(&dir).map_err(|e| e.to_string())?;
            Ok(ReceiverOptions {
                store: Some(store),
                ..window
            })
        }
        Ok(other) => Err(format!(
            "BOSUN_BENCH_RECEIVER={other}: expected off, memory or disk"
        )),
    }
}

/// The value of `BOSUN_BENCH_RECEIVER`, for the bench's first line.
pub fn receiver_name() -> String {
    std::env::var("BOSUN_BENCH_RECEIVER")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "off".into())
}

/// Removes the data dirs [`receiver_options`] made (their workers have stopped).
pub fn remove_receiver_dirs() {
    let dirs = std::mem::take(&mut *RECEIVER_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh data directory for one run of a client with an outbox, under
/// `BOSUN_BENCH_DIR` (default: the system temp dir, the store bench's default too),
/// removed with everything in it on drop.
pub struct DataDir(pub std::path::PathBuf);

impl DataDir {
    /// A new, empty directory named after `tag`.
    pub fn new(tag: &str) -> Res<DataDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::var_os("BOSUN_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let path = base.join(format!(
            "bosun-bench-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        Ok(DataDir(path))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
