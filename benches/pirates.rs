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
//!     `[""][body][metadata]` (a bosun request on the wire) for both sides; bosun queue + 4 `PpWorker`s vs `zmq::proxy` + 4 raw
//!     REP workers; req/s and the ratio.
//! (d) Memory: VmRSS of this process (which hosts the bosun queue and 4 workers as
//!     threads) after a warm-up through the bosun queue and after more requests.
//! (o) The client outbox: (a)'s round trip with `LazyPirateClient` and no outbox, and
//!     with one on disk (`BOSUN_BENCH_DIR`, default the temp dir) in `batched` and
//!     `every` durability (one request per driver turn, so both flush once per request),
//!     interleaved in the same run; p50/p99 and the ratio of p50s.
//! (x) Diagnostics, only on request: the CPU cost of the envelope work, and (a)-(c) with
//!     one side swapped at a time (raw client on a bosun server, bosun queue with a 6/PPP
//!     worker written here, raw worker with an inproc PAIR hop to a handler thread,
//!     ...), to show where bosun's time goes.
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
//!   `BOSUN_BENCH_N_MEM_WARMUP`, `BOSUN_BENCH_N_MEM`, `BOSUN_BENCH_N_OUTBOX` ((o):
//!   N / 4, a flush each): one count each.
//! - `BOSUN_BENCH_REPEATS`: runs per side (default 3).
//! - `BOSUN_BENCH_RECEIVER`: what the bosun workers and servers do with each request:
//!   `off` (default), `memory` (a duplicate window and max attempts 3, as `--dedup`) or
//!   `disk` (the same in a data dir per worker, `batched`, as `--data-dir`).
//! - `BOSUN_BENCH_ONLY`: the parts to run, e.g. `a,c` (default `a,b,c,d,o`); `x` is all
//!   the diagnostics (also added by `BOSUN_BENCH_DIAG=1`), `r`, `q`, `f` those of (a),
//!   (b), (c) alone.
//!
//! Every thread and socket the bench starts is stopped before it exits: the bosun drivers
//! through a [`Shutdown`], the raw proxy with `TERMINATE` on its control socket, the raw
//! workers by a flag they check at least every 100 ms. Every wait is bounded.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

use bosun::io::handler;
use bosun::io::outbox::OutboxConfig;
use bosun::io::queue::QueueDriver;
use bosun::io::server::Server;
use bosun::proto::envelope::{self, Request};
use bosun::store::{Durability, Store};
use bosun::{Envelope, LazyPirateClient, PpWorker, Shutdown};

/// Requests kept outstanding in (c).
const IN_FLIGHT: usize = 100;
/// Workers in (c).
const WORKERS: usize = 4;
/// 6/PPP commands, for the bench's inline worker.
const PPP_READY: u8 = 0x01;
const PPP_HEARTBEAT: u8 = 0x02;

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    repeats: usize,
    n_rtt: usize,
    n_queue: usize,
    n_inflight: usize,
    n_mem_warmup: usize,
    n_mem: usize,
    n_outbox: usize,
    parts: BTreeSet<char>,
}

impl Settings {
    fn from_env() -> Res<Self> {
        let quick = quick();
        let n = env_count("BOSUN_BENCH_N")?.unwrap_or(if quick { 500 } else { 20_000 });
        let mut parts = parts("abcdo");
        if std::env::var("BOSUN_BENCH_DIAG").is_ok_and(|v| !v.is_empty() && v != "0") {
            parts.insert('x');
        }
        Ok(Settings {
            repeats: count("BOSUN_BENCH_REPEATS", if quick { 1 } else { 3 })?,
            n_rtt: count("BOSUN_BENCH_N_RTT", n)?,
            n_queue: count("BOSUN_BENCH_N_QUEUE", if quick { n / 2 } else { n })?,
            n_inflight: count("BOSUN_BENCH_N_INFLIGHT", n * 5 / 2)?,
            n_mem_warmup: count("BOSUN_BENCH_N_MEM_WARMUP", n)?,
            n_mem: count("BOSUN_BENCH_N_MEM", n * if quick { 2 } else { 5 })?,
            n_outbox: count("BOSUN_BENCH_N_OUTBOX", (n / 4).max(1))?,
            parts,
        })
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
    /// the hop a worker with a handler thread would make, without anything else.
    RawRepHop,
    /// bosun `server::Server` with the echo handler.
    BosunServer,
    /// bosun `PpWorker` with the echo handler (on its socket thread, a guard thread
    /// heartbeating while it runs).
    BosunWorker,
    /// A 6/PPP DEALER worker written here that answers inline (no handler thread), with
    /// the same request work as `PpWorker` (`Request::parse`, `handler::call`,
    /// `envelope::answer`).
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
                    let server = Server::builder("tcp://127.0.0.1:*")
                        .context(&ctx)
                        .receiver(receiver_options()?)
                        .bind()
                        .map_err(|e| format!("server bind: {e}"))?;
                    let ep = server.endpoint();
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
                        let worker = PpWorker::builder(&back)
                            .context(&worker_ctx)
                            .receiver(receiver_options()?)
                            .connect()
                            .map_err(|e| format!("worker: {e}"))?;
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

/// Starts a bosun queue on `ctx` and returns (frontend, backend) endpoints.
fn spawn_bosun_queue(stage: &mut Stage, ctx: &zmq::Context) -> Res<(String, String)> {
    let queue = QueueDriver::builder("tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
        .context(ctx)
        .bind()
        .map_err(|e| format!("queue bind: {e}"))?;
    let eps = (queue.frontend_endpoint(), queue.backend_endpoint());
    stage.spawn("bosun-queue", move |stop| {
        if let Err(e) = queue.run(&stop) {
            eprintln!("bosun queue: {e}");
        }
    })?;
    Ok(eps)
}

/// A minimal 6/PPP worker on a connected DEALER: READY, a HEARTBEAT every second, and
/// each request `[address...][""][payload...][metadata]` answered inline as `PpWorker`
/// answers it: `Request::parse`, the echo handler through `handler::call`, and
/// `envelope::answer`.
fn inline_ppp_worker(dealer: &zmq::Socket, stop: &Shutdown) -> Res<()> {
    let echo = handler::echo();
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
                frames.extend(echo_answer(&echo, body));
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

/// What a bosun worker does with a request's frames: parses them, calls `echo` (a
/// panic becomes a failed request), and makes the answer (with metadata for a bosun
/// client).
fn echo_answer(echo: &handler::Handler, frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let (request, _malformed) = Request::parse(None, frames);
    let meta = request.meta.clone();
    envelope::answer(meta.as_ref(), handler::call(echo, request))
}

// ---------------------------------------------------------------------------------------
// Clients

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
            let mut client = LazyPirateClient::builder(ep)
                .context(&ctx)
                .connect()
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

/// The one request of the pipelined client: a bosun request on the wire (the body, then
/// the metadata frame), so bosun's worker treats it as one (and replies with the body
/// and metadata); raw REP workers echo both frames unchanged.
fn envelope_payload() -> Vec<Vec<u8>> {
    bosun::io::envelope(vec![body()]).encode()
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
    let out = Figures::throughput(n, elapsed).with_usage(before, n);
    drop(dealer);
    drop(running);
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
    print_runs(&runs[0], &runs[1], "p50", |x| x.p50, "us");
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
    print_runs(&runs[0], &runs[1], "req/s", |x| x.per_sec, "");
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
    print_runs(&runs[0], &runs[1], "req/s", |x| x.per_sec, "");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (d) Memory

fn part_d(s: &Settings) -> Res<()> {
    let running = start(Topology::Queue(
        Broker::BosunQueue,
        Answerer::BosunWorker,
        WORKERS,
    ))?;
    let ctx = zmq::Context::new();
    let dealer = dealer_client(&ctx, &running.endpoint)?;
    let payload = envelope_payload();
    pipeline(&dealer, s.n_mem_warmup, IN_FLIGHT, &payload)?;
    let before = rss_kib()?;
    pipeline(&dealer, s.n_mem, IN_FLIGHT, &payload)?;
    let after = rss_kib()?;
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
    // CPU cost of the envelope work bosun adds per request, single-threaded. The calls
    // that consume their frames get copies made outside the timed part.
    let n = 100_000;
    let frames = envelope_payload();
    let echo = handler::echo();
    let new_encode = ns_per_op(n, || {
        std::hint::black_box(bosun::io::envelope(vec![std::hint::black_box(body())]).encode());
    });
    let decode = ns_per_call_on(
        n,
        || frames.clone(),
        |f| {
            std::hint::black_box(Envelope::decode(std::hint::black_box(f)).ok());
        },
    );
    let split = ns_per_call_on(
        n,
        || frames.clone(),
        |f| {
            std::hint::black_box(Envelope::split(std::hint::black_box(f)).ok());
        },
    );
    let peek = ns_per_op(n, || {
        std::hint::black_box(envelope::peek_id(std::hint::black_box(&frames)));
    });
    let answer = ns_per_call_on(
        n,
        || frames.clone(),
        |f| {
            std::hint::black_box(echo_answer(&echo, std::hint::black_box(f)));
        },
    );
    let clock = ns_per_op(n, || {
        std::hint::black_box(now());
    });
    let (payload, meta) = frames.split_at(frames.len() - 1);
    let payload_bytes: usize = payload.iter().map(Vec::len).sum();
    let meta_bytes: usize = meta.iter().map(Vec::len).sum();
    println!(
        "  cpu per call: io::envelope+encode {new_encode:.0}ns | Envelope::decode {decode:.0}ns | Envelope::split {split:.0}ns | envelope::peek_id {peek:.0}ns | Request::parse+handler::call(echo)+envelope::answer {answer:.0}ns | io::now {clock:.0}ns | {BODY}B body = {} bytes on the wire ({payload_bytes} B payload in {} frame(s) + {meta_bytes} B metadata frame)",
        payload_bytes + meta_bytes,
        payload.len()
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
// (o) The client outbox

/// `n` timed Lazy Pirate round trips to a bosun echo server, with the outbox in
/// `durability` (`None`: no outbox) on a fresh data dir.
fn outbox_round_trips(durability: Option<Durability>, n: usize) -> Res<Figures> {
    let running = start(Topology::Direct(Answerer::BosunServer))?;
    let ctx = zmq::Context::new();
    let dir = DataDir::new("outbox")?;
    let mut builder = LazyPirateClient::builder(&running.endpoint).context(&ctx);
    let store;
    if let Some(d) = durability {
        store = Store::open(&dir.0).map_err(|e| format!("store: {e}"))?;
        builder = builder.outbox(
            &store,
            OutboxConfig {
                durability: d,
                ..OutboxConfig::default()
            },
        );
    }
    let mut client = builder.connect().map_err(|e| format!("client: {e}"))?;
    let body = body();
    let out = timed(warmup(n), n, || {
        let reply = client
            .request(body.clone())
            .map_err(|e| format!("request: {e}"))?;
        if reply.len() != BODY {
            return Err(format!("bosun reply of {} bytes", reply.len()));
        }
        Ok(())
    })?;
    drop(client);
    drop(running);
    Ok(out)
}

fn part_o(s: &Settings) -> Res<()> {
    let modes = [None, Some(Durability::Batched), Some(Durability::Every)];
    let runs = interleaved(s.repeats, &modes, |d| outbox_round_trips(d, s.n_outbox))?;
    let base = medians(&runs[0]);
    let name = |d: Option<Durability>| d.map_or("no outbox", |d| d.as_str());
    let mut line = format!(
        "(o) lazy-pirate rtt with the client outbox, {BODY}B n={}:",
        s.n_outbox
    );
    for (i, d) in modes.iter().enumerate() {
        let m = medians(&runs[i]);
        line.push_str(&format!(
            " {} p50 {:.0}us p99 {:.0}us",
            name(*d),
            m.p50,
            m.p99
        ));
        if i > 0 {
            line.push_str(&format!(" = {:.2}x", m.p50 / base.p50));
        }
        line.push_str(if i + 1 < modes.len() { " |" } else { "" });
    }
    println!("{line}");
    for (i, d) in modes.iter().enumerate() {
        println!(
            "  {}: p50 runs {} ; per request {}",
            name(*d),
            list(&runs[i], |x| x.p50, "us"),
            cost(&medians(&runs[i]))
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn run(s: &Settings) -> Res<()> {
    println!(
        "bosun pirates bench: tcp loopback, {BODY}-byte bodies, {} run(s) per side interleaved raw/bosun, medians; receivers: {} (BOSUN_BENCH_RECEIVER)",
        s.repeats,
        receiver_name()
    );
    let started = now();
    for part in &s.parts {
        match part {
            'a' => part_a(s)?,
            'b' => part_b(s)?,
            'c' => part_c(s)?,
            'd' => part_d(s)?,
            'o' => part_o(s)?,
            'x' | 'r' | 'q' | 'f' => part_x(s, part)?,
            other => return Err(format!("unknown part {other:?} in BOSUN_BENCH_ONLY")),
        }
    }
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn main() {
    let result = Settings::from_env().and_then(|s| run(&s));
    check_threads_stopped();
    remove_receiver_dirs();
    if let Err(e) = result {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
