//! The async client handle ([`AsyncClient`], futures on tokio) against bosun's two other
//! Majordomo clients and raw ZeroMQ, in the same run, through the same broker and
//! worker, over tcp loopback (`tcp://127.0.0.1:*`), 64-byte bodies.
//!
//! ```text
//! cargo bench --bench async_client               # full run, under a minute
//! cargo bench --bench async_client -- --quick    # smoke run, a couple of seconds
//! ```
//!
//! One bosun `BrokerDriver` and one `Worker` of capacity 100 (echo) are started once, on
//! threads of this process with a context each, and every bosun client below goes
//! through them; the raw side is one `zmq::proxy_steerable` (ROUTER frontend, DEALER
//! backend) and one raw REP echo behind it, also started once. Each client gets a fresh
//! context and socket per run, a warm-up, then `n` timed requests:
//!
//! - raw REQ, 1 in flight, through the raw proxy;
//! - blocking [`MajordomoClient`], 1 in flight;
//! - raw DEALER keeping 100 in flight through the raw proxy (the REP answers one at a
//!   time);
//! - pipelined [`AsyncMajordomoClient`], a window of 100 in flight, on the caller's
//!   thread;
//! - the async handle [`AsyncClient`]: 100 tokio tasks, each awaiting one request after
//!   another (100 concurrent futures), on a multi-thread runtime of 2 workers (what
//!   `#[tokio::main]` gives on this 2-core machine), and for reference on a
//!   current-thread runtime.
//!
//! Printed: req/s (medians of the runs, run by run beside), CPU and wake-ups per request
//! of the whole process, CPU per request by kind of thread for the async variants, each
//! bosun client over its raw counterpart, and the ratios asked for: async handle /
//! pipelined and async handle / blocking (also as the median of the ratios of runs made
//! back to back).
//!
//! Environment overrides:
//! - `BOSUN_BENCH_QUICK=1` (or the `--quick` argument): small counts, one repetition.
//! - `BOSUN_BENCH_N`: requests per timed run with 100 in flight (default 20000; quick
//!   500); `BOSUN_BENCH_N_RTT`: with 1 in flight (default N / 2).
//! - `BOSUN_BENCH_REPEATS`: runs per variant, interleaved (default 3).
//!
//! Every thread the bench starts is stopped before it exits (the bosun drivers through a
//! [`Shutdown`], the raw proxy with `TERMINATE`, the raw REP by a flag it checks every
//! 100 ms, each client's driver thread by dropping the client). Every wait is bounded.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bosun::io::async_client::AsyncClient;
use bosun::io::broker::BrokerDriver;
use bosun::io::handler;
use bosun::io::mdclient::{AsyncMajordomoClient, MajordomoClient, Outcome};
use bosun::{Retry, Shutdown, Worker};

use common::*;

/// The service of the one worker.
const SERVICE: &str = "echo";
/// Requests kept outstanding by the pipelined clients; concurrent futures of the handle.
const IN_FLIGHT: usize = 100;
/// Longest a bench request may take before the run is abandoned.
const REQUEST_LIMIT: Duration = Duration::from_millis(IO_TIMEOUT_MS as u64);

struct Settings {
    repeats: usize,
    n: usize,
    n_rtt: usize,
}

impl Settings {
    fn from_env() -> Res<Self> {
        let quick = quick();
        let n = count("BOSUN_BENCH_N", if quick { 500 } else { 20_000 })?;
        Ok(Settings {
            repeats: count("BOSUN_BENCH_REPEATS", if quick { 1 } else { 3 })?,
            n,
            n_rtt: count("BOSUN_BENCH_N_RTT", (n / 2).max(1))?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    RawReq,
    Blocking,
    RawDealer,
    Pipelined,
    Handle,
    HandleCurrentThread,
}

impl Variant {
    fn title(self) -> &'static str {
        match self {
            Variant::RawReq => "raw REQ -> raw proxy -> raw REP, 1 in flight",
            Variant::Blocking => "bosun MajordomoClient (blocking), 1 in flight",
            Variant::RawDealer => "raw DEALER -> raw proxy -> raw REP, 100 in flight",
            Variant::Pipelined => "bosun AsyncMajordomoClient (pipelined), 100 in flight",
            Variant::Handle => "bosun AsyncClient, 100 futures, tokio multi-thread (2)",
            Variant::HandleCurrentThread => "bosun AsyncClient, 100 futures, tokio current-thread",
        }
    }

    fn raw(self) -> bool {
        matches!(self, Variant::RawReq | Variant::RawDealer)
    }
}

/// Both sides, started once: the bosun broker and worker, the raw proxy and REP.
struct Servers {
    bosun: String,
    raw: String,
    /// Dropped (stopping every thread) when the run ends.
    _stages: (Stage, Stage),
}

fn start_servers() -> Res<Servers> {
    let mut bosun_stage = Stage::new();
    let broker_ctx = named_context("io-bosun-broker")?;
    let worker_ctx = named_context("io-bosun-worker")?;
    let driver = BrokerDriver::builder("tcp://127.0.0.1:*")
        .context(&broker_ctx)
        .bind()
        .map_err(|e| format!("broker bind: {e}"))?;
    let bosun = driver.endpoint();
    bosun_stage.spawn("bosun-broker", move |stop| {
        if let Err(e) = driver.run(&stop) {
            eprintln!("bosun broker: {e}");
        }
    })?;
    let worker = Worker::builder(&bosun, SERVICE)
        .context(&worker_ctx)
        .capacity(IN_FLIGHT as u32)
        .connect()
        .map_err(|e| format!("worker: {e}"))?;
    bosun_stage.spawn("bosun-worker", move |stop| {
        if let Err(e) = worker.run(handler::echo(), &stop) {
            eprintln!("bosun worker: {e}");
        }
    })?;
    wait_registered(&bosun, &bosun_stage.stop)?;

    let mut raw_stage = Stage::new();
    let proxy_ctx = named_context("io-raw-proxy")?;
    let rep_ctx = named_context("io-raw-worker")?;
    let (front, back) = spawn_raw_proxy(&mut raw_stage, &proxy_ctx, false)?;
    let rep = raw_socket(&rep_ctx, zmq::REP, STOP_CHECK_MS)?;
    connect(&rep, &back)?;
    spawn_raw_rep(&mut raw_stage, &rep_ctx, rep, false)?;
    Ok(Servers {
        bosun,
        raw: front,
        _stages: (bosun_stage, raw_stage),
    })
}

/// Waits (at most 5 s) until the broker has the worker (`mmi.service` answers 200).
fn wait_registered(endpoint: &str, stop: &Shutdown) -> Res<()> {
    let ctx = zmq::Context::new();
    let retry = Retry {
        timeout: Duration::from_secs(1),
        ..Retry::default()
    };
    let mut client = MajordomoClient::builder(endpoint)
        .context(&ctx)
        .retry(retry)
        .shutdown(stop)
        .connect()
        .map_err(|e| format!("mmi client: {e}"))?;
    let deadline = now() + Duration::from_secs(5);
    loop {
        if client
            .has_service(SERVICE)
            .map_err(|e| format!("mmi.service: {e}"))?
        {
            return Ok(());
        }
        if now() >= deadline {
            return Err("the worker did not register within 5 s".into());
        }
        let mut none: [zmq::PollItem; 0] = [];
        let _ = zmq::poll(&mut none, 5);
    }
}

/// One run of `v`: a fresh client, a warm-up, `n` timed requests.
fn run_variant(v: Variant, servers: &Servers, s: &Settings) -> Res<(Figures, Vec<ThreadCost>)> {
    let ctx = named_context(if v.raw() {
        "io-raw-client"
    } else {
        "io-bosun-client"
    })?;
    let body = body();
    match v {
        Variant::RawReq => {
            let req = raw_socket(&ctx, zmq::REQ, IO_TIMEOUT_MS)?;
            connect(&req, &servers.raw)?;
            timed_by_thread(warmup(s.n_rtt), s.n_rtt, || {
                req.send(&body[..], 0)
                    .map_err(|e| format!("REQ send: {e}"))?;
                let reply = req
                    .recv_bytes(0)
                    .map_err(|e| format!("REQ recv (no reply in {IO_TIMEOUT_MS} ms): {e}"))?;
                check_len(reply.len())
            })
        }
        Variant::Blocking => {
            let mut client = MajordomoClient::builder(&servers.bosun)
                .context(&ctx)
                .connect()
                .map_err(|e| format!("client: {e}"))?;
            let out = timed_by_thread(warmup(s.n_rtt), s.n_rtt, || {
                let reply = client
                    .request(SERVICE, body.clone())
                    .map_err(|e| format!("request: {e}"))?;
                check_len(reply.len())
            })?;
            note_retries(v, client.retries());
            Ok(out)
        }
        Variant::RawDealer => {
            let dealer = dealer_client(&ctx, &servers.raw)?;
            let payload = [body];
            pipeline(&dealer, warmup(s.n), IN_FLIGHT, &payload)?;
            let threads = thread_usage();
            let before = usage();
            let elapsed = pipeline(&dealer, s.n, IN_FLIGHT, &payload)?;
            Ok((
                Figures::throughput(s.n, elapsed).with_usage(before, s.n),
                by_thread(&threads, s.n),
            ))
        }
        Variant::Pipelined => {
            let mut client = AsyncMajordomoClient::builder(&servers.bosun)
                .context(&ctx)
                .connect()
                .map_err(|e| format!("client: {e}"))?;
            async_pipeline(&mut client, warmup(s.n), &body)?;
            let threads = thread_usage();
            let before = usage();
            let elapsed = async_pipeline(&mut client, s.n, &body)?;
            note_retries(v, client.retries());
            Ok((
                Figures::throughput(s.n, elapsed).with_usage(before, s.n),
                by_thread(&threads, s.n),
            ))
        }
        Variant::Handle | Variant::HandleCurrentThread => {
            let rt = if v == Variant::Handle {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("tokio-worker")
                    .enable_time()
                    .build()
            } else {
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
            }
            .map_err(|e| format!("tokio runtime: {e}"))?;
            let client = AsyncClient::builder(&servers.bosun)
                .context(&ctx)
                .connect()
                .map_err(|e| format!("client: {e}"))?;
            let out = rt.block_on(async {
                futures_window(&client, warmup(s.n), &body).await?;
                let threads = thread_usage();
                let before = usage();
                let elapsed = futures_window(&client, s.n, &body).await?;
                Ok::<_, String>((
                    Figures::throughput(s.n, elapsed).with_usage(before, s.n),
                    by_thread(&threads, s.n),
                ))
            })?;
            note_retries(v, client.retries());
            let exit = client.driver_exit();
            drop(client);
            drop(rt);
            if !exit.wait(Duration::from_secs(2)) {
                return Err("the client's driver thread did not stop within 2 s".into());
            }
            Ok(out)
        }
    }
}

fn check_len(len: usize) -> Res<()> {
    if len == BODY {
        Ok(())
    } else {
        Err(format!("reply of {len} bytes, expected {BODY}"))
    }
}

fn note_retries(v: Variant, retries: u64) {
    if retries > 0 {
        eprintln!("  note: {v:?} retried {retries} times");
    }
}

/// `AsyncMajordomoClient` keeping `IN_FLIGHT` requests outstanding until `n` replies are
/// in; returns the elapsed time.
fn async_pipeline(client: &mut AsyncMajordomoClient, n: usize, body: &[u8]) -> Res<Duration> {
    let start = now();
    let mut sent = 0;
    while sent < IN_FLIGHT.min(n) {
        client
            .send(SERVICE, body.to_vec())
            .map_err(|e| format!("send: {e}"))?;
        sent += 1;
    }
    for got in 0..n {
        match client
            .recv(REQUEST_LIMIT)
            .map_err(|e| format!("recv: {e}"))?
        {
            Some(Outcome::Reply { body, .. }) => check_len(body.len())?,
            Some(other) => return Err(format!("request not answered: {other:?}")),
            None => {
                return Err(format!(
                    "no reply within {REQUEST_LIMIT:?} after {got} of {n}"
                ))
            }
        }
        if sent < n {
            client
                .send(SERVICE, body.to_vec())
                .map_err(|e| format!("send: {e}"))?;
            sent += 1;
        }
    }
    Ok(start.elapsed())
}

/// `IN_FLIGHT` tokio tasks sharing `client`, each sending one request and awaiting it,
/// again and again, until `n` requests are answered; returns the elapsed time.
async fn futures_window(client: &AsyncClient, n: usize, body: &[u8]) -> Res<Duration> {
    let start = now();
    let taken = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT.min(n) {
        let (client, taken, body) = (client.clone(), Arc::clone(&taken), body.to_vec());
        tasks.spawn(async move {
            while taken.fetch_add(1, Ordering::Relaxed) < n {
                let request = client.request(SERVICE, vec![body.clone()]);
                let reply = tokio::time::timeout(REQUEST_LIMIT, request)
                    .await
                    .map_err(|_| format!("no reply within {REQUEST_LIMIT:?}"))?
                    .map_err(|e| format!("request: {e}"))?;
                check_len(reply.iter().map(Vec::len).sum())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("task: {e}"))??;
    }
    Ok(start.elapsed())
}

fn run(s: &Settings) -> Res<()> {
    println!(
        "bosun async client bench: tcp loopback, {BODY}-byte bodies, one bosun broker + 1 worker of capacity {IN_FLIGHT} (echo) and one raw proxy + 1 raw REP, started once; {} run(s) per variant interleaved, medians; n={} with 100 in flight, {} with 1",
        s.repeats, s.n, s.n_rtt
    );
    let started = now();
    let servers = start_servers()?;
    let variants = [
        Variant::RawReq,
        Variant::Blocking,
        Variant::RawDealer,
        Variant::Pipelined,
        Variant::Handle,
        Variant::HandleCurrentThread,
    ];
    let (runs, threads) =
        interleaved_by_thread(s.repeats, &variants, |v| run_variant(v, &servers, s))?;
    drop(servers);
    let idx = |v: Variant| variants.iter().position(|x| *x == v).unwrap_or(0);
    let rate = |v: Variant| medians(&runs[idx(v)]).per_sec;
    for (i, v) in variants.iter().enumerate() {
        let m = medians(&runs[i]);
        let beside = match v {
            Variant::Blocking => format!(" ({:.2}x raw REQ)", m.per_sec / rate(Variant::RawReq)),
            Variant::Pipelined | Variant::Handle | Variant::HandleCurrentThread => {
                format!(" ({:.2}x raw DEALER)", m.per_sec / rate(Variant::RawDealer))
            }
            _ => String::new(),
        };
        println!(
            "  {}: {:.0} req/s{beside} | {} | runs {}",
            v.title(),
            m.per_sec,
            cost(&m),
            list(&runs[i], |x| x.per_sec, "")
        );
        if matches!(
            v,
            Variant::Pipelined | Variant::Handle | Variant::HandleCurrentThread
        ) {
            println!("      by thread: {}", thread_costs(&threads[i]));
        }
    }
    let per_sec = |f: &Figures| f.per_sec;
    for (handle, name) in [
        (Variant::Handle, "multi-thread"),
        (Variant::HandleCurrentThread, "current-thread"),
    ] {
        let h = &runs[idx(handle)];
        println!(
            "  async handle ({name}) / pipelined: {:.2}x (paired {:.2}x) | async handle / blocking: {:.2}x (paired {:.2}x)",
            rate(handle) / rate(Variant::Pipelined),
            paired(&runs[idx(Variant::Pipelined)], h, per_sec),
            rate(handle) / rate(Variant::Blocking),
            paired(&runs[idx(Variant::Blocking)], h, per_sec),
        );
    }
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    let result = Settings::from_env().and_then(|s| run(&s));
    check_threads_stopped();
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
