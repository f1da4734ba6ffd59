//! bosun's Majordomo broker, worker and clients against raw ZeroMQ over the same kind of
//! sockets, in the same run, over tcp loopback (`tcp://127.0.0.1:*`), 64-byte bodies.
//!
//! ```text
//! cargo bench --bench majordomo               # full run, a few minutes
//! cargo bench --bench majordomo -- --quick    # smoke run, a couple of seconds
//! BOSUN_BENCH_ONLY=x cargo bench --bench majordomo   # only the diagnostic variants
//! ```
//!
//! (a) 1 client, 1 request at a time, 1 worker: `MajordomoClient` -> `BrokerDriver` ->
//!     `Worker` (capacity 1, echo) vs raw REQ -> `zmq::proxy_steerable` (ROUTER
//!     frontend, DEALER backend; the control socket only stops it) -> raw REP echo;
//!     req/s, p50/p99 and the ratio (target >= 0.9x); for reference, also with a
//!     `Worker` of capacity 2 (the handler on a pool thread: one thread hop each way).
//! (b) 1 client with 100 in flight (`AsyncMajordomoClient`), 4 workers of capacity 1, vs
//!     a raw DEALER client keeping 100 in flight through the raw proxy to 4 REP workers;
//!     req/s and the ratio (for reference, no target).
//! (c) The same client, 1 worker of capacity 100, vs the raw proxy with 100 in flight
//!     and 1 REP worker (which answers one at a time); req/s and the ratio (target
//!     >= 0.6x); for reference, also the floor router of (x) between a raw 7/MDP client
//!     and an inline worker: what 7/MDP routing costs on libzmq with no bookkeeping.
//! (d) The broker core alone (`proto::broker::Broker`, no sockets, virtual time, fake
//!     worker identities): ns per request (client request in, REQUEST out, worker REPLY
//!     in, client reply out, `handle_timeout`) with S services of one idle worker each
//!     (10 .. 10,000), requests spread over all of them and, as a control, all to one;
//!     and with W workers on one service (1 .. 1,000); and one worker of capacity K with
//!     K requests in flight (1 .. 1,000, the largest capacity). Best of the runs (the
//!     loop is single-threaded and CPU-bound: other load only adds time), medians shown
//!     too. Flat = largest / smallest size close to 1x; a scan of the services or
//!     workers would grow with S or W. Also the heartbeat tick, the one path that visits
//!     every worker (once per interval).
//! (e) Memory: VmRSS of this process (which hosts the bosun broker and workers as
//!     threads) after 100,000 and after 1,000,000 requests through real sockets,
//!     pipelined with `AsyncMajordomoClient` (100 in flight, the fastest set-up of (c):
//!     1 worker of capacity 100); the growth (target within 10%), and samples between.
//! (o) The client outbox: the clients of (a) and (c) (1 request at a time with 1 worker;
//!     100 in flight with 1 worker of capacity 100) without an outbox, and with one on
//!     disk (`BOSUN_BENCH_DIR`, default the temp dir) in `batched` and `every`
//!     durability, interleaved in the same run; req/s, p50/p99 (one at a time) and the
//!     ratio to no outbox (issue 9 wants 100 in flight with `batched` at 0.5x or more;
//!     this measures the client's outbox alone).
//! (x) Diagnostics, only on request: (a) and (c) with one part swapped at a time (a raw
//!     client speaking 7/MDP, a worker written here that answers inline instead of on a
//!     handler thread, raw REP with an inproc hop), to show where bosun's time goes.
//!     The "floor" router (`FloorMdp`), a minimal 7/MDP router written here (one ROUTER,
//!     no bookkeeping, bodies forwarded uncopied), shows what the 7/MDP framing alone
//!     costs on libzmq, apart from bosun's broker bookkeeping.
//!
//! Each measurement of (a)-(c) is repeated, interleaving raw and bosun (raw, bosun, raw,
//! bosun, ...), each run on freshly started sockets and threads after a warm-up (and,
//! for bosun, after every worker has registered, asked with `mmi.stats`), and the medians
//! are reported; the "paired ratio" is the median of the ratios of back-to-back runs.
//! Every role a separate process would have (client, broker, workers) gets its own zmq
//! context (its own I/O thread), on both sides alike. "per request" figures are what the
//! whole process spent per request during the timed part: CPU time (user + sys) and
//! voluntary context switches (thread wake-ups).
//!
//! Environment overrides (counts are timed requests per run):
//! - `BOSUN_BENCH_QUICK=1` (or the `--quick` argument): small counts, one repetition.
//! - `BOSUN_BENCH_N`: base count N: (a) N, (b) and (c) 2.5 N, (d) 10 N per size, (e) 5 N
//!   then 50 N in all (default 20000, so (e) is 100,000 and 1,000,000; quick: 500, with
//!   (d) 20 N and (e) 2 N then 10 N).
//! - `BOSUN_BENCH_N_RTT`, `BOSUN_BENCH_N_INFLIGHT`, `BOSUN_BENCH_N_CORE`,
//!   `BOSUN_BENCH_N_MEM_FIRST`, `BOSUN_BENCH_N_MEM_TOTAL`, `BOSUN_BENCH_N_OUTBOX_RTT`
//!   ((o) one at a time: N / 4, a flush each), `BOSUN_BENCH_N_OUTBOX` ((o) in flight:
//!   2.5 N): one count each.
//! - `BOSUN_BENCH_REPEATS`: runs per side (default 3).
//! - `BOSUN_BENCH_RECEIVER`: what the bosun workers and servers do with each request:
//!   `off` (default), `memory` (a duplicate window and max attempts 3, as `--dedup`) or
//!   `disk` (the same in a data dir per worker, `batched`, as `--data-dir`).
//! - `BOSUN_BENCH_ONLY`: the parts to run, e.g. `a,c` (default `a,b,c,d,e,o`); `x` is
//!   the diagnostics (also added by `BOSUN_BENCH_DIAG=1`).
//!
//! Every thread and socket the bench starts is stopped before it exits: the bosun drivers
//! through a [`Shutdown`], the raw proxy with `TERMINATE` on its control socket, the raw
//! workers by a flag they check at least every 100 ms. Every wait is bounded.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bosun::io::broker::BrokerDriver;
use bosun::io::handler;
use bosun::io::mdclient::{AsyncMajordomoClient, MajordomoClient, Outcome};
use bosun::io::outbox::OutboxConfig;
use bosun::proto::broker::{Broker, BrokerConfig};
use bosun::proto::envelope::{self, Request};
use bosun::proto::frames::mdp;
use bosun::store::{Durability, Store};
use bosun::{Retry, Shutdown, Worker};

use common::*;

/// The service every worker of (a)-(c) and (e) serves.
const SERVICE: &str = "echo";
/// Requests kept outstanding in (b), (c) and (e).
const IN_FLIGHT: usize = 100;
/// Workers in (b) and (e).
const WORKERS: usize = 4;
/// Services, one idle worker each, in (d).
const SERVICE_COUNTS: [usize; 4] = [10, 100, 1_000, 10_000];
/// Workers on one service in (d).
const WORKER_COUNTS: [usize; 4] = [1, 10, 100, 1_000];
/// Capacities of the one worker in (d), each with as many requests in flight.
const CAPACITIES: [usize; 4] = [1, 10, 100, 1_000];
/// What (d) advances its virtual clock by per request.
const CORE_TICK: Duration = Duration::from_micros(1);
/// RSS samples taken in (e), evenly spaced (the first after the first count).
const MEM_SAMPLES: usize = 10;

// ---------------------------------------------------------------------------------------
// Settings

struct Settings {
    repeats: usize,
    n_rtt: usize,
    n_inflight: usize,
    n_core: usize,
    n_mem_first: usize,
    n_mem_total: usize,
    n_outbox_rtt: usize,
    n_outbox: usize,
    parts: BTreeSet<char>,
}

impl Settings {
    fn from_env() -> Res<Self> {
        let quick = quick();
        let n = env_count("BOSUN_BENCH_N")?.unwrap_or(if quick { 500 } else { 20_000 });
        let mut parts = parts("abcdeo");
        if std::env::var("BOSUN_BENCH_DIAG").is_ok_and(|v| !v.is_empty() && v != "0") {
            parts.insert('x');
        }
        let n_mem_first = count("BOSUN_BENCH_N_MEM_FIRST", n * if quick { 2 } else { 5 })?;
        Ok(Settings {
            repeats: count("BOSUN_BENCH_REPEATS", if quick { 1 } else { 3 })?,
            n_rtt: count("BOSUN_BENCH_N_RTT", n)?,
            n_inflight: count("BOSUN_BENCH_N_INFLIGHT", n * 5 / 2)?,
            n_core: count("BOSUN_BENCH_N_CORE", n * if quick { 20 } else { 10 })?,
            n_mem_first,
            n_mem_total: count("BOSUN_BENCH_N_MEM_TOTAL", n * if quick { 10 } else { 50 })?
                .max(n_mem_first),
            n_outbox_rtt: count("BOSUN_BENCH_N_OUTBOX_RTT", (n / 4).max(1))?,
            n_outbox: count("BOSUN_BENCH_N_OUTBOX", n * 5 / 2)?,
            parts,
        })
    }
}

// ---------------------------------------------------------------------------------------
// What routes and what answers

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Router {
    /// `zmq::proxy_steerable` with a ROUTER frontend and a DEALER backend.
    RawProxy,
    /// bosun `BrokerDriver`, default configuration.
    Bosun,
    /// A minimal 7/MDP router written here: one ROUTER socket for clients and workers, no
    /// bookkeeping beyond the identity of the one READY worker, every frame received
    /// into a `zmq::Message` and forwarded without copying the body. Not a broker (no
    /// queue, no heartbeats, no expiry): only the floor of what 7/MDP routing costs on
    /// libzmq.
    FloorMdp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answerer {
    /// Raw REP that echoes (behind the raw proxy).
    RawRep,
    /// Raw REP that hands each request over an inproc PAIR to a thread that echoes it:
    /// the hop a bosun `Worker` makes to its handler pool, without anything else.
    RawRepHop,
    /// bosun `Worker` of this capacity with an echo handler (capacity 1: the handler on
    /// the socket thread, a guard thread heartbeating while it runs; more: a pool).
    BosunWorker(u32),
    /// A 7/MDP DEALER worker written here that answers inline (no handler thread), with
    /// the same request work as a bosun `Worker` (`Request::parse`, `handler::call`,
    /// `envelope::answer`), declaring this capacity.
    InlineMdp(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Topology {
    router: Router,
    answerer: Answerer,
    workers: usize,
}

fn topo(router: Router, answerer: Answerer, workers: usize) -> Topology {
    Topology {
        router,
        answerer,
        workers,
    }
}

/// The started topology: the endpoint clients use and everything to stop.
struct Running {
    endpoint: String,
    stage: Stage,
}

fn start(t: Topology) -> Res<Running> {
    let mut stage = Stage::new();
    let (broker_ctx, worker_ctx) = match t.router {
        Router::RawProxy => (
            named_context("io-raw-proxy")?,
            named_context("io-raw-worker")?,
        ),
        Router::Bosun => (
            named_context("io-bosun-broker")?,
            named_context("io-bosun-worker")?,
        ),
        Router::FloorMdp => (
            named_context("io-floor-broker")?,
            named_context("io-floor-worker")?,
        ),
    };
    let mut floor_readies = None;
    let (front, back) = match t.router {
        Router::RawProxy => spawn_raw_proxy(&mut stage, &broker_ctx, false)?,
        Router::Bosun => {
            let driver = BrokerDriver::builder("tcp://127.0.0.1:*")
                .context(&broker_ctx)
                .bind()
                .map_err(|e| format!("broker bind: {e}"))?;
            let ep = driver.endpoint();
            stage.spawn("bosun-broker", move |stop| {
                if let Err(e) = driver.run(&stop) {
                    eprintln!("bosun broker: {e}");
                }
            })?;
            (ep.clone(), ep)
        }
        Router::FloorMdp => {
            let (ep, readies) = spawn_floor_mdp(&mut stage, &broker_ctx)?;
            floor_readies = Some(readies);
            (ep.clone(), ep)
        }
    };
    for _ in 0..t.workers {
        match (t.router, t.answerer) {
            (Router::RawProxy, Answerer::RawRep | Answerer::RawRepHop) => {
                let rep = raw_socket(&worker_ctx, zmq::REP, STOP_CHECK_MS)?;
                connect(&rep, &back)?;
                let hop = t.answerer == Answerer::RawRepHop;
                spawn_raw_rep(&mut stage, &worker_ctx, rep, hop)?;
            }
            (Router::Bosun | Router::FloorMdp, Answerer::BosunWorker(capacity)) => {
                let worker = Worker::builder(&back, SERVICE)
                    .context(&worker_ctx)
                    .capacity(capacity)
                    .receiver(receiver_options()?)
                    .connect()
                    .map_err(|e| format!("worker: {e}"))?;
                stage.spawn("bosun-worker", move |stop| {
                    if let Err(e) = worker.run(handler::echo(), &stop) {
                        eprintln!("bosun worker: {e}");
                    }
                })?;
            }
            (Router::Bosun | Router::FloorMdp, Answerer::InlineMdp(capacity)) => {
                let dealer = raw_socket(&worker_ctx, zmq::DEALER, STOP_CHECK_MS)?;
                connect(&dealer, &back)?;
                stage.spawn("inline-mdp", move |stop| {
                    if let Err(e) = inline_mdp_worker(&dealer, capacity, &stop) {
                        eprintln!("inline 7/MDP worker: {e}");
                    }
                })?;
            }
            other => return Err(format!("{other:?} do not fit together")),
        }
    }
    let running = Running {
        endpoint: front,
        stage,
    };
    if t.router == Router::Bosun {
        wait_registered(&running, t.workers)?;
    }
    if let Some(readies) = floor_readies {
        wait_readies(&readies, t.workers)?;
    }
    Ok(running)
}

/// Waits (at most 5 s) until the floor router has seen `workers` READYs (it sends one
/// `()` on `readies` for each).
fn wait_readies(readies: &mpsc::Receiver<()>, workers: usize) -> Res<()> {
    let deadline = now() + Duration::from_secs(5);
    for seen in 0..workers {
        readies
            .recv_timeout(deadline.saturating_duration_since(now()))
            .map_err(|e| format!("only {seen} of {workers} workers sent READY within 5 s: {e}"))?;
    }
    Ok(())
}

/// Waits (at most 5 s) until the broker reports `workers` workers of `SERVICE`
/// (`mmi.stats`: idle + busy).
fn wait_registered(running: &Running, workers: usize) -> Res<()> {
    let ctx = zmq::Context::new();
    let retry = Retry {
        timeout: Duration::from_secs(1),
        ..Retry::default()
    };
    let mut client = MajordomoClient::builder(&running.endpoint)
        .context(&ctx)
        .retry(retry)
        .shutdown(&running.stage.stop)
        .connect()
        .map_err(|e| format!("mmi client: {e}"))?;
    let deadline = now() + Duration::from_secs(5);
    loop {
        let reply = client
            .request("mmi.stats", SERVICE.as_bytes().to_vec())
            .map_err(|e| format!("mmi.stats: {e}"))?;
        let text = String::from_utf8_lossy(&reply);
        let field = |name: &str| -> usize {
            text.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let registered = field("idle=") + field("busy=");
        if registered >= workers {
            return Ok(());
        }
        if now() >= deadline {
            return Err(format!(
                "only {registered} of {workers} workers registered within 5 s"
            ));
        }
        pause_ms(5);
    }
}

/// Messages the floor router takes from its socket per poll.
const FLOOR_BATCH: usize = 256;

/// Starts the [`Router::FloorMdp`] thread on a ROUTER bound to a free loopback port;
/// returns the endpoint, and a channel that gets one `()` per READY the router sees.
fn spawn_floor_mdp(stage: &mut Stage, ctx: &zmq::Context) -> Res<(String, mpsc::Receiver<()>)> {
    let router = raw_socket(ctx, zmq::ROUTER, STOP_CHECK_MS)?;
    let ep = bind_loopback(&router)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    stage.spawn("floor-mdp", move |stop| {
        if let Err(e) = floor_mdp(&router, &ready_tx, &stop) {
            eprintln!("floor 7/MDP router: {e}");
        }
    })?;
    Ok((ep, ready_rx))
}

/// The loop of [`Router::FloorMdp`]: polls (checking `stop` every `STOP_CHECK_MS`), then
/// routes up to `FLOOR_BATCH` waiting messages.
fn floor_mdp(router: &zmq::Socket, readies: &mpsc::Sender<()>, stop: &Shutdown) -> Res<()> {
    let mut worker: Option<Vec<u8>> = None;
    let mut frames: Vec<zmq::Message> = Vec::with_capacity(8);
    while !stop.is_triggered() {
        let mut items = [router.as_poll_item(zmq::POLLIN)];
        match zmq::poll(&mut items, i64::from(STOP_CHECK_MS)) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        if !items[0].is_readable() {
            continue;
        }
        for _ in 0..FLOOR_BATCH {
            if !recv_frames(router, &mut frames, zmq::DONTWAIT)? {
                break;
            }
            floor_route(router, &mut frames, &mut worker, readies)?;
        }
    }
    Ok(())
}

/// Receives one whole multipart message into `frames` (cleared first), each frame a
/// `zmq::Message` of its own; false when none was waiting.
fn recv_frames(socket: &zmq::Socket, frames: &mut Vec<zmq::Message>, flags: i32) -> Res<bool> {
    frames.clear();
    let mut msg = zmq::Message::new();
    match socket.recv(&mut msg, flags) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(false),
        Err(e) => return Err(format!("recv: {e}")),
    }
    loop {
        let more = msg.get_more();
        frames.push(msg);
        if !more {
            return Ok(true);
        }
        // The rest of a multipart message arrives with its first frame.
        msg = zmq::Message::new();
        socket
            .recv(&mut msg, 0)
            .map_err(|e| format!("recv more: {e}"))?;
    }
}

/// Routes one message the floor router received (`frames`, drained):
/// - `[worker][""][MDPW01][0x01][service]...` (READY): remembers `worker`, the one worker
///   (a later READY replaces it), and signals `readies`;
/// - `[client][""][MDPC01][service][body...]`: to the worker, if there is one, as
///   `[worker][""][MDPW01][0x02][client][""][body...]`, else dropped;
/// - `[worker][""][MDPW01][0x03][client][""][body...]` (REPLY): to the client as
///   `[client][""][MDPC01][SERVICE][body...]`;
/// - anything else (HEARTBEAT, DISCONNECT, malformed): ignored.
///
/// The received identity and body frames are sent as they are, not copied.
fn floor_route(
    router: &zmq::Socket,
    frames: &mut Vec<zmq::Message>,
    worker: &mut Option<Vec<u8>>,
    readies: &mpsc::Sender<()>,
) -> Res<()> {
    const MORE: i32 = zmq::SNDMORE | zmq::DONTWAIT;
    let send = |data: &[u8]| router.send(data, MORE);
    if frames.len() < 4 || !frames[1].is_empty() {
        return Ok(());
    }
    let sent = if &frames[2][..] == mdp::CLIENT {
        let Some(to) = worker.as_deref() else {
            return Ok(());
        };
        let mut parts = frames.drain(..);
        let client = parts.next().ok_or("no client identity")?;
        send(to)
            .and_then(|_| send(b""))
            .and_then(|_| send(mdp::WORKER))
            .and_then(|_| send(&[mdp::Command::Request as u8]))
            .and_then(|_| router.send(client, MORE))
            .and_then(|_| send_last(router, b"", parts.skip(3)))
    } else if &frames[2][..] == mdp::WORKER {
        match frames[3][..] {
            [c] if c == mdp::Command::Ready as u8 && frames.len() >= 5 => {
                *worker = Some(frames[0].to_vec());
                let _ = readies.send(());
                return Ok(());
            }
            [c] if c == mdp::Command::Reply as u8 && frames.len() >= 6 && frames[5].is_empty() => {
                let mut parts = frames.drain(..).skip(4);
                let client = parts.next().ok_or("no client address")?;
                router
                    .send(client, MORE)
                    .and_then(|_| send(b""))
                    .and_then(|_| send(mdp::CLIENT))
                    .and_then(|_| send_last(router, SERVICE.as_bytes(), parts.skip(1)))
            }
            _ => return Ok(()),
        }
    } else {
        return Ok(());
    };
    sent.map_err(|e| format!("send: {e}"))
}

/// Sends `head` and then `body`, the last of them ending the message (`DONTWAIT`).
fn send_last(
    socket: &zmq::Socket,
    head: &[u8],
    body: impl ExactSizeIterator<Item = zmq::Message>,
) -> zmq::Result<()> {
    let more = zmq::SNDMORE | zmq::DONTWAIT;
    let n = body.len();
    socket.send(head, if n == 0 { zmq::DONTWAIT } else { more })?;
    for (i, frame) in body.enumerate() {
        socket.send(frame, if i + 1 == n { zmq::DONTWAIT } else { more })?;
    }
    Ok(())
}

/// Waits `ms` milliseconds without `thread::sleep` (which clippy.toml disallows).
fn pause_ms(ms: i64) {
    let mut none: [zmq::PollItem; 0] = [];
    let _ = zmq::poll(&mut none, ms);
}

/// A minimal 7/MDP worker on a connected DEALER: READY (with the capacity frame when
/// `capacity > 1`), a HEARTBEAT every 2.5 s, each REQUEST answered inline with the
/// envelope work a bosun `Worker` does (`Request::parse`, the echo handler through
/// `handler::call`, `envelope::answer`), DISCONNECT at the end.
fn inline_mdp_worker(dealer: &zmq::Socket, capacity: u32, stop: &Shutdown) -> Res<()> {
    let echo = handler::echo();
    let service = SERVICE.as_bytes().to_vec();
    let interval = BrokerConfig::default().heartbeat.interval;
    dealer
        .send_multipart(mdp::ready(SERVICE.as_bytes(), capacity), 0)
        .map_err(|e| format!("READY: {e}"))?;
    let mut next_heartbeat = now() + interval;
    while !stop.is_triggered() {
        if let Some(frames) = recv_or_idle(dealer, "inline worker") {
            // [""][MDPW01][0x02][client][""][payload...][metadata]
            let mut frames = frames?;
            if frames.len() >= 6 && frames[2] == [mdp::Command::Request as u8] {
                let body = frames.split_off(5);
                frames[2] = vec![mdp::Command::Reply as u8];
                let (request, _malformed) = Request::parse(Some(service.clone()), body);
                let meta = request.meta.clone();
                frames.extend(envelope::answer(
                    meta.as_ref(),
                    handler::call(&echo, request),
                ));
                dealer
                    .send_multipart(frames, 0)
                    .map_err(|e| format!("REPLY: {e}"))?;
            }
        }
        if now() >= next_heartbeat {
            dealer
                .send_multipart(mdp::command(None, mdp::Command::Heartbeat), 0)
                .map_err(|e| format!("HEARTBEAT: {e}"))?;
            next_heartbeat = now() + interval;
        }
    }
    dealer
        .send_multipart(mdp::command(None, mdp::Command::Disconnect), 0)
        .map_err(|e| format!("DISCONNECT: {e}"))
}

// ---------------------------------------------------------------------------------------
// Clients

/// A client that sends one request at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// Raw REQ, blocking send and receive: the body alone to the raw proxy, or
    /// `[MDPC01][service][body][metadata]` to the bosun broker.
    RawReq,
    /// bosun `MajordomoClient`, default retry policy.
    Bosun,
}

/// A client that keeps `IN_FLIGHT` requests outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pipelined {
    /// Raw DEALER: `[""][body]` to the raw proxy, or
    /// `[""][MDPC01][service][body][metadata]` (one request, sent again and again) to the
    /// bosun broker.
    RawDealer,
    /// bosun `AsyncMajordomoClient`, default retry policy.
    BosunAsync,
}

/// What a raw client sends through `router`: the body to the raw proxy, 7/MDP with the
/// body and a metadata frame to the bosun broker or the floor router (so a bosun worker
/// treats it as a bosun request, and answers with the body and metadata).
fn raw_request(router: Router) -> Vec<Vec<u8>> {
    match router {
        Router::RawProxy => vec![body()],
        Router::Bosun | Router::FloorMdp => {
            let mut request = vec![mdp::CLIENT.to_vec(), SERVICE.as_bytes().to_vec()];
            request.extend(bosun::io::envelope(vec![body()]).encode());
            request
        }
    }
}

/// The context of a client, its I/O thread named after it.
fn client_context(bosun: bool) -> Res<zmq::Context> {
    named_context(if bosun {
        "io-bosun-client"
    } else {
        "io-raw-client"
    })
}

/// Runs `n` timed round trips of `client` against `t`, on fresh everything.
fn round_trips(client: Client, t: Topology, n: usize) -> Res<(Figures, Vec<ThreadCost>)> {
    let running = start(t)?;
    let ctx = client_context(client == Client::Bosun)?;
    let ep = running.endpoint.as_str();
    let out = match client {
        Client::RawReq => {
            let req = raw_socket(&ctx, zmq::REQ, IO_TIMEOUT_MS)?;
            connect(&req, ep)?;
            let request = raw_request(t.router);
            let want = request.len();
            timed_by_thread(warmup(n), n, || {
                req.send_multipart(&request, 0)
                    .map_err(|e| format!("REQ send: {e}"))?;
                let reply = req
                    .recv_multipart(0)
                    .map_err(|e| format!("REQ recv (no reply in {IO_TIMEOUT_MS} ms): {e}"))?;
                if reply.len() != want {
                    return Err(format!("raw reply of {} frames", reply.len()));
                }
                Ok(())
            })?
        }
        Client::Bosun => {
            let mut client = MajordomoClient::builder(ep)
                .context(&ctx)
                .connect()
                .map_err(|e| format!("client: {e}"))?;
            let body = body();
            let out = timed_by_thread(warmup(n), n, || {
                let reply = client
                    .request(SERVICE, body.clone())
                    .map_err(|e| format!("request: {e}"))?;
                if reply.len() != BODY {
                    return Err(format!("bosun reply of {} bytes", reply.len()));
                }
                Ok(())
            })?;
            if client.retries() > 0 {
                eprintln!("  note: bosun client retried {} times", client.retries());
            }
            out
        }
    };
    drop(running);
    Ok(out)
}

/// `AsyncMajordomoClient` keeping `window` requests outstanding until `n` replies are
/// in; returns the elapsed time.
fn async_pipeline(
    client: &mut AsyncMajordomoClient,
    n: usize,
    window: usize,
    body: &[u8],
) -> Res<Duration> {
    let start = now();
    let mut sent = 0;
    while sent < window.min(n) {
        client
            .send(SERVICE, body.to_vec())
            .map_err(|e| format!("send: {e}"))?;
        sent += 1;
    }
    for got in 0..n {
        match client
            .recv(Duration::from_millis(IO_TIMEOUT_MS as u64))
            .map_err(|e| format!("recv: {e}"))?
        {
            Some(Outcome::Reply { body, .. }) if body.len() == BODY => {}
            Some(Outcome::Reply { body, .. }) => {
                return Err(format!("bosun reply of {} bytes", body.len()))
            }
            Some(Outcome::Failed { message, .. }) => {
                return Err(format!("a request failed: {message}"))
            }
            Some(Outcome::GaveUp { attempts, .. }) => {
                return Err(format!("a request gave up after {attempts} attempts"))
            }
            Some(Outcome::Unsent { message, .. }) => {
                return Err(format!("a request was not stored: {message}"))
            }
            None => {
                return Err(format!(
                    "no reply within {IO_TIMEOUT_MS} ms after {got} of {n}"
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

/// A raw DEALER keeping `window` requests `[""][frames...]` outstanding until `n` replies
/// of `1 + reply_frames` frames are in; returns the elapsed time.
fn raw_mdp_pipeline(
    dealer: &zmq::Socket,
    n: usize,
    window: usize,
    frames: &[Vec<u8>],
    reply_frames: usize,
) -> Res<Duration> {
    let mut msg = Vec::with_capacity(frames.len() + 1);
    msg.push(Vec::new());
    msg.extend_from_slice(frames);
    let send = || {
        dealer
            .send_multipart(&msg, 0)
            .map_err(|e| format!("DEALER send: {e}"))
    };
    let start = now();
    let mut sent = 0;
    while sent < window.min(n) {
        send()?;
        sent += 1;
    }
    for got in 0..n {
        let reply = dealer.recv_multipart(0).map_err(|e| {
            format!("DEALER recv: no reply within {IO_TIMEOUT_MS} ms after {got} of {n}: {e}")
        })?;
        if reply.len() != 1 + reply_frames || !reply[0].is_empty() {
            return Err(format!("malformed reply of {} frames", reply.len()));
        }
        if sent < n {
            send()?;
            sent += 1;
        }
    }
    Ok(start.elapsed())
}

/// Runs the pipelined `client` (`IN_FLIGHT` outstanding) against `t`: a warm-up, then
/// `n` timed requests.
fn pipelined(client: Pipelined, t: Topology, n: usize) -> Res<(Figures, Vec<ThreadCost>)> {
    let running = start(t)?;
    let ctx = client_context(client == Pipelined::BosunAsync)?;
    let ep = running.endpoint.as_str();
    let out = match (client, t.router) {
        (Pipelined::RawDealer, Router::RawProxy) => {
            let dealer = dealer_client(&ctx, ep)?;
            let payload = [body()];
            pipeline(&dealer, warmup(n), IN_FLIGHT, &payload)?;
            let threads = thread_usage();
            let before = usage();
            let elapsed = pipeline(&dealer, n, IN_FLIGHT, &payload)?;
            (
                Figures::throughput(n, elapsed).with_usage(before, n),
                by_thread(&threads, n),
            )
        }
        (Pipelined::RawDealer, Router::Bosun | Router::FloorMdp) => {
            let dealer = dealer_client(&ctx, ep)?;
            let request = raw_request(t.router);
            // The reply: [MDPC01][service][body][metadata], as many frames as the request.
            let want = request.len();
            raw_mdp_pipeline(&dealer, warmup(n), IN_FLIGHT, &request, want)?;
            let threads = thread_usage();
            let before = usage();
            let elapsed = raw_mdp_pipeline(&dealer, n, IN_FLIGHT, &request, want)?;
            (
                Figures::throughput(n, elapsed).with_usage(before, n),
                by_thread(&threads, n),
            )
        }
        (Pipelined::BosunAsync, Router::Bosun | Router::FloorMdp) => {
            let mut client = AsyncMajordomoClient::builder(ep)
                .context(&ctx)
                .connect()
                .map_err(|e| format!("client: {e}"))?;
            let body = body();
            async_pipeline(&mut client, warmup(n), IN_FLIGHT, &body)?;
            let threads = thread_usage();
            let before = usage();
            let elapsed = async_pipeline(&mut client, n, IN_FLIGHT, &body)?;
            let out = (
                Figures::throughput(n, elapsed).with_usage(before, n),
                by_thread(&threads, n),
            );
            if client.retries() > 0 || client.duplicates() > 0 {
                eprintln!(
                    "  note: bosun client retried {} times and dropped {} duplicates",
                    client.retries(),
                    client.duplicates()
                );
            }
            out
        }
        other => return Err(format!("{other:?} do not fit together")),
    };
    drop(running);
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// (a) One request at a time, one worker

fn part_a(s: &Settings) -> Res<()> {
    let (runs, threads) = interleaved_by_thread(
        s.repeats,
        &[
            (Client::RawReq, topo(Router::RawProxy, Answerer::RawRep, 1)),
            (
                Client::Bosun,
                topo(Router::Bosun, Answerer::BosunWorker(1), 1),
            ),
            (
                Client::Bosun,
                topo(Router::Bosun, Answerer::BosunWorker(2), 1),
            ),
        ],
        |(c, t)| round_trips(c, t, s.n_rtt),
    )?;
    let (r, b) = (medians(&runs[0]), medians(&runs[1]));
    let ratio = b.per_sec / r.per_sec;
    println!(
        "(a) majordomo 1 client x 1 in flight, 1 worker (capacity 1), {BODY}B n={}: raw proxy {:.0} req/s (p50 {:.0}us p99 {:.0}us) | bosun broker {:.0} req/s (p50 {:.0}us p99 {:.0}us) | ratio {ratio:.3}x (target >= 0.9x: {})",
        s.n_rtt,
        r.per_sec,
        r.p50,
        r.p99,
        b.per_sec,
        b.p50,
        b.p99,
        verdict(ratio >= 0.9)
    );
    print_runs(&runs[0], &runs[1], "req/s", |x| x.per_sec, "");
    by_thread_line(&threads);
    let inline = medians(&runs[2]);
    println!(
        "  for reference, the same with a worker of capacity 2 (handler on a pool thread, one hop each way): {:.0} req/s (p50 {:.0}us p99 {:.0}us) | ratio {:.3}x (paired {:.2}x) | runs {} ; per request {} ; by thread {}",
        inline.per_sec,
        inline.p50,
        inline.p99,
        inline.per_sec / r.per_sec,
        paired(&runs[0], &runs[2], |x| x.per_sec),
        list(&runs[2], |x| x.per_sec, ""),
        cost(&inline),
        thread_costs(&threads[2])
    );
    Ok(())
}

/// Per request by kind of thread, raw and bosun, medians: CPU us / wake-ups.
fn by_thread_line(threads: &[Vec<ThreadCost>]) {
    println!(
        "  per request by thread (cpu/wake-ups; main = the client): raw {} | bosun {}",
        thread_costs(&threads[0]),
        thread_costs(&threads[1])
    );
}

// ---------------------------------------------------------------------------------------
// (b) and (c) 100 in flight

fn part_flight(
    s: &Settings,
    label: &str,
    raw: Topology,
    bosun: Topology,
    target: Option<f64>,
    floor: Option<Topology>,
) -> Res<()> {
    let mut cases = vec![(Pipelined::RawDealer, raw), (Pipelined::BosunAsync, bosun)];
    cases.extend(floor.map(|t| (Pipelined::RawDealer, t)));
    let (runs, threads) =
        interleaved_by_thread(s.repeats, &cases, |(c, t)| pipelined(c, t, s.n_inflight))?;
    let (r, b) = (medians(&runs[0]), medians(&runs[1]));
    let ratio = b.per_sec / r.per_sec;
    let judged = match target {
        Some(t) => format!("target >= {t}x: {}", verdict(ratio >= t)),
        None => "for reference, no target".to_string(),
    };
    println!(
        "{label}, {BODY}B n={}: raw proxy {:.0} req/s | bosun broker {:.0} req/s | ratio {ratio:.3}x ({judged})",
        s.n_inflight, r.per_sec, b.per_sec
    );
    print_runs(&runs[0], &runs[1], "req/s", |x| x.per_sec, "");
    by_thread_line(&threads[..2]);
    if let Some(t) = floor {
        let f = medians(&runs[2]);
        println!(
            "  for reference, the floor of 7/MDP routing on libzmq (raw 7/MDP DEALER client -> FloorMdp -> {} x {:?}): {:.0} req/s = {:.3}x raw (paired {:.2}x); bosun = {:.3}x the floor | runs {} ; per request {}",
            t.workers,
            t.answerer,
            f.per_sec,
            f.per_sec / r.per_sec,
            paired(&runs[0], &runs[2], |x| x.per_sec),
            b.per_sec / f.per_sec,
            list(&runs[2], |x| x.per_sec, ""),
            cost(&f)
        );
    }
    Ok(())
}

fn part_b(s: &Settings) -> Res<()> {
    part_flight(
        s,
        &format!("(b) majordomo 1 client x {IN_FLIGHT} in flight, {WORKERS} workers (bosun capacity 1, raw REP)"),
        topo(Router::RawProxy, Answerer::RawRep, WORKERS),
        topo(Router::Bosun, Answerer::BosunWorker(1), WORKERS),
        None,
        None,
    )
}

fn part_c(s: &Settings) -> Res<()> {
    part_flight(
        s,
        &format!("(c) majordomo 1 client x {IN_FLIGHT} in flight, 1 worker (bosun capacity {IN_FLIGHT}, raw REP one at a time)"),
        topo(Router::RawProxy, Answerer::RawRep, 1),
        topo(Router::Bosun, Answerer::BosunWorker(IN_FLIGHT as u32), 1),
        Some(0.6),
        Some(topo(
            Router::FloorMdp,
            Answerer::InlineMdp(IN_FLIGHT as u32),
            1,
        )),
    )
}

// ---------------------------------------------------------------------------------------
// (d) The broker core: dispatch cost against the number of services and workers

/// A routing identity like the ones libzmq makes up: a zero byte and four more.
fn identity(tag: u8, n: usize) -> Vec<u8> {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    [&[0, tag][..], &n.to_be_bytes()[..]].concat()
}

/// One broker core with `services` services of `per_service` idle workers each, of
/// `capacity` each, driven through virtual time; the fake workers answer in the order
/// they were sent requests once `capacity` are in flight.
struct Core {
    broker: Broker,
    now: Instant,
    names: Vec<Vec<u8>>,
    client: Vec<u8>,
    /// The request's payload and metadata frames; each round writes a new id into the
    /// metadata (a real client's ids are unique, and the broker joins a repeated id to
    /// the copy it holds).
    envelope: Vec<Vec<u8>>,
    /// Rounds so far: the low 8 bytes of the next id.
    seq: u64,
    workers: usize,
    /// REQUESTs sent to the workers and not answered yet, oldest first.
    pending: VecDeque<Vec<Vec<u8>>>,
    depth: usize,
}

impl Core {
    fn new(origin: Instant, services: usize, per_service: usize, capacity: usize) -> Res<Self> {
        let mut broker =
            Broker::new(origin, BrokerConfig::default()).map_err(|e| format!("broker: {e}"))?;
        let names: Vec<Vec<u8>> = (0..services)
            .map(|i| format!("service-{i:05}").into_bytes())
            .collect();
        let k = u32::try_from(capacity).map_err(|e| e.to_string())?;
        for (s, name) in names.iter().enumerate() {
            for w in 0..per_service {
                let mut ready = mdp::ready(name, k);
                ready.insert(0, identity(b'w', s * per_service + w));
                broker.handle_message(origin, ready);
            }
        }
        while broker.poll_transmit().is_some() {}
        while broker.poll_event().is_some() {}
        if broker.workers() != services * per_service {
            return Err(format!(
                "{} of {} workers registered",
                broker.workers(),
                services * per_service
            ));
        }
        Ok(Core {
            broker,
            now: origin,
            names,
            client: identity(b'c', 0),
            envelope: bosun::io::envelope(vec![body()]).encode(),
            seq: 0,
            workers: services * per_service,
            pending: VecDeque::with_capacity(capacity + 1),
            depth: capacity,
        })
    }

    /// One request to service `k` and one reply, as the driver would feed them: the
    /// client's request in, the REQUEST out, the worker's REPLY to the oldest request in
    /// flight in (the REQUEST frames with the command byte changed), the client reply
    /// out, then `handle_timeout`. Until `depth` requests are in flight, no reply.
    fn round(&mut self, k: usize) -> Res<()> {
        self.now += CORE_TICK;
        let mut request = Vec::with_capacity(4 + self.envelope.len());
        request.extend([
            self.client.clone(),
            Vec::new(),
            mdp::CLIENT.to_vec(),
            self.names[k].clone(),
        ]);
        request.extend(self.envelope.iter().cloned());
        self.seq += 1;
        let low = envelope::ID_OFFSET + 8..envelope::ID_OFFSET + 16;
        if let Some(id) = request.last_mut().and_then(|m| m.get_mut(low)) {
            id.copy_from_slice(&self.seq.to_be_bytes());
        }
        self.broker.handle_message(self.now, request);
        let to_worker = self.broker.poll_transmit().ok_or("no REQUEST dispatched")?;
        self.pending.push_back(to_worker);
        if self.pending.len() >= self.depth {
            let mut answered = self.pending.pop_front().ok_or("nothing in flight")?;
            // [worker][""][MDPW01][0x02][client][""][body][metadata] -> the worker's
            // REPLY (an echo's reply metadata is the request's, byte for byte).
            answered[3] = vec![mdp::Command::Reply as u8];
            self.broker.handle_message(self.now, answered);
            let reply = self
                .broker
                .poll_transmit()
                .ok_or("no reply to the client")?;
            std::hint::black_box(reply);
        }
        if self.broker.poll_transmit().is_some() || self.broker.poll_event().is_some() {
            return Err("unexpected transmit or event".into());
        }
        self.broker.handle_timeout(self.now);
        std::hint::black_box(self.broker.poll_timeout());
        Ok(())
    }

    /// ns per `round`, over `n` rounds to services chosen by `pick(i)`.
    fn measure(&mut self, n: usize, pick: impl Fn(usize) -> usize) -> Res<f64> {
        for i in 0..(n / 10).max(1) {
            self.round(pick(i))?;
        }
        let start = now();
        for i in 0..n {
            self.round(pick(i))?;
        }
        Ok(start.elapsed().as_nanos() as f64 / n as f64)
    }

    /// µs of the heartbeat tick: one HEARTBEAT to every worker (drained).
    fn heartbeat_tick(&mut self) -> Res<f64> {
        let at = self.now + BrokerConfig::default().heartbeat.interval;
        let start = now();
        self.broker.handle_timeout(at);
        let mut sent = 0;
        while let Some(m) = self.broker.poll_transmit() {
            std::hint::black_box(m);
            sent += 1;
        }
        let us = start.elapsed().as_nanos() as f64 / 1e3;
        self.now = at;
        if sent != self.workers {
            return Err(format!(
                "{sent} heartbeats for {} workers (expired: {:?})",
                self.workers,
                self.broker.poll_event()
            ));
        }
        Ok(us)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CoreCase {
    /// `S` services of one worker, requests round-robin over all of them.
    Spread(usize),
    /// `S` services of one worker, every request to the first.
    OneOf(usize),
    /// One service of `W` workers.
    Workers(usize),
    /// One service of one worker of capacity `K`, with `K` requests in flight.
    Capacity(usize),
}

fn core_case(origin: Instant, case: CoreCase, n: usize) -> Res<(f64, f64)> {
    let mut core = match case {
        CoreCase::Spread(s) | CoreCase::OneOf(s) => Core::new(origin, s, 1, 1)?,
        CoreCase::Workers(w) => Core::new(origin, 1, w, 1)?,
        CoreCase::Capacity(k) => Core::new(origin, 1, 1, k)?,
    };
    let ns = match case {
        CoreCase::Spread(s) => core.measure(n, |i| i % s)?,
        _ => core.measure(n, |_| 0)?,
    };
    let tick = core.heartbeat_tick()?;
    Ok((ns, tick))
}

fn part_d(s: &Settings) -> Res<()> {
    let origin = now();
    let cases: Vec<CoreCase> = SERVICE_COUNTS
        .iter()
        .map(|&n| CoreCase::Spread(n))
        .chain(SERVICE_COUNTS.iter().map(|&n| CoreCase::OneOf(n)))
        .chain(WORKER_COUNTS.iter().map(|&n| CoreCase::Workers(n)))
        .chain(CAPACITIES.iter().map(|&n| CoreCase::Capacity(n)))
        .collect();
    // Interleaved like the socket parts: every case once per repetition.
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for _ in 0..s.repeats {
        for (i, case) in cases.iter().enumerate() {
            runs[i].push(core_case(origin, *case, s.n_core)?);
        }
    }
    // Per case: the best run (other load on the machine only ever adds time to this
    // single-threaded loop), the median run, and the median heartbeat tick.
    let med: Vec<(f64, f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                r.iter().map(|x| x.0).fold(f64::INFINITY, f64::min),
                median(r.iter().map(|x| x.0).collect()),
                median(r.iter().map(|x| x.1).collect()),
            )
        })
        .collect();
    println!(
        "(d) broker core (no sockets, virtual time), ns per request = client request in, REQUEST out, REPLY in, client reply out, handle_timeout; n={} per size, best of {} runs (median in brackets), judged on the best:",
        s.n_core, s.repeats
    );
    let row = |title: &str, what: &str, sizes: &[usize], values: &[(f64, f64, f64)]| {
        let cells: Vec<String> = sizes
            .iter()
            .zip(values)
            .map(|(n, v)| format!("{what}={n} {:.0}ns ({:.0})", v.0, v.1))
            .collect();
        let ns: Vec<f64> = values.iter().map(|v| v.0).collect();
        let ratio = ns.last().copied().unwrap_or(f64::NAN) / ns[0];
        let (lo, hi) = (
            ns.iter().copied().fold(f64::INFINITY, f64::min),
            ns.iter().copied().fold(0.0, f64::max),
        );
        // A term linear in the size (a scan, or a shift of a list) adds ten times as
        // much over the last tenfold step as over the one before (1.5x allows for
        // noise), and at least ~0.5 ns per item; cache misses, as the tables outgrow the CPU caches, add a step of a
        // few hundred ns that does not scale with the size (the control row shows it).
        let m = ns.len();
        let (last_step, step_before) = (ns[m - 1] - ns[m - 2], ns[m - 2] - ns[m - 3]);
        let per_unit = last_step / (sizes[m - 1] - sizes[m - 2]) as f64;
        let judged = if ratio <= 1.5 {
            "flat".to_string()
        } else if per_unit >= 0.5
            && last_step > 0.2 * ns[0]
            && last_step > 1.5 * step_before.max(0.0)
        {
            format!(
                "GROWS linearly at the top, {per_unit:.2}ns per extra {what}: a scan or a shift"
            )
        } else {
            "grows, not linearly: no scan (cache misses as the tables outgrow the CPU caches)"
                .to_string()
        };
        println!(
            "  {title}: {} | {what}={} / {what}={} {ratio:.2}x (max/min {:.2}x, noise included): {judged}",
            cells.join(" | "),
            sizes[m - 1],
            sizes[0],
            hi / lo
        );
    };
    let k = SERVICE_COUNTS.len();
    row(
        "services, 1 idle worker each, requests spread over all",
        "S",
        &SERVICE_COUNTS,
        &med[0..k],
    );
    row(
        "services, 1 idle worker each, all requests to one (control)",
        "S",
        &SERVICE_COUNTS,
        &med[k..2 * k],
    );
    row(
        "workers on one service, requests rotate over all",
        "W",
        &WORKER_COUNTS,
        &med[2 * k..3 * k],
    );
    row(
        "1 worker of capacity K, K in flight, answered oldest first",
        "K",
        &CAPACITIES,
        &med[3 * k..3 * k + CAPACITIES.len()],
    );
    let ticks: Vec<String> = SERVICE_COUNTS
        .iter()
        .zip(&med[0..k])
        .map(|(n, v)| {
            format!(
                "{n} workers {:.0}us ({:.0}ns/worker)",
                v.2,
                v.2 * 1e3 / *n as f64
            )
        })
        .collect();
    println!(
        "  heartbeat tick (the one path that visits every worker, once per {:?}): {}",
        BrokerConfig::default().heartbeat.interval,
        ticks.join(" | ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (e) Memory

fn part_e(s: &Settings) -> Res<()> {
    let running = start(topo(
        Router::Bosun,
        Answerer::BosunWorker(IN_FLIGHT as u32),
        1,
    ))?;
    let ctx = zmq::Context::new();
    let mut client = AsyncMajordomoClient::builder(&running.endpoint)
        .context(&ctx)
        .connect()
        .map_err(|e| format!("client: {e}"))?;
    let body = body();
    let at_start = rss_kib()?;
    let started = now();
    let mut done = 0;
    let mut samples: Vec<(usize, u64)> = Vec::new();
    async_pipeline(&mut client, s.n_mem_first, IN_FLIGHT, &body)?;
    done += s.n_mem_first;
    samples.push((done, rss_kib()?));
    let rest = s.n_mem_total - s.n_mem_first;
    let steps = MEM_SAMPLES.saturating_sub(1).max(1);
    for i in 0..steps {
        let chunk = rest * (i + 1) / steps - rest * i / steps;
        if chunk == 0 {
            continue;
        }
        async_pipeline(&mut client, chunk, IN_FLIGHT, &body)?;
        done += chunk;
        samples.push((done, rss_kib()?));
    }
    let elapsed = started.elapsed();
    let (retries, duplicates) = (client.retries(), client.duplicates());
    drop(client);
    drop(running);
    let first = samples[0].1;
    let last = samples.last().map_or(first, |x| x.1);
    let growth = (last as f64 - first as f64) / first as f64 * 100.0;
    println!(
        "(e) memory (bench process hosting the bosun broker + 1 worker of capacity {IN_FLIGHT}, {IN_FLIGHT} in flight): VmRSS {first} KiB after {} requests, {last} KiB after {} | growth {growth:+.1}% (target within 10%: {})",
        s.n_mem_first,
        s.n_mem_total,
        verdict(growth.abs() <= 10.0)
    );
    println!(
        "  VmRSS before the first request {at_start} KiB; by requests done: {} ; {} requests in {:.1}s ({:.0} req/s), {retries} retries, {duplicates} duplicates",
        samples
            .iter()
            .map(|(n, kib)| if n % 1000 == 0 {
                format!("{}k {kib}", n / 1000)
            } else {
                format!("{n} {kib}")
            })
            .collect::<Vec<_>>()
            .join(", "),
        s.n_mem_total,
        elapsed.as_secs_f64(),
        per_sec(s.n_mem_total, elapsed)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (x) Diagnostics

fn part_x(s: &Settings) -> Res<()> {
    println!("diagnostics:");
    // (a) with one part swapped at a time.
    let one = [
        (Client::RawReq, topo(Router::RawProxy, Answerer::RawRep, 1)),
        (
            Client::RawReq,
            topo(Router::RawProxy, Answerer::RawRepHop, 1),
        ),
        (
            Client::RawReq,
            topo(Router::Bosun, Answerer::InlineMdp(1), 1),
        ),
        (
            Client::Bosun,
            topo(Router::Bosun, Answerer::InlineMdp(1), 1),
        ),
        (
            Client::RawReq,
            topo(Router::Bosun, Answerer::BosunWorker(2), 1),
        ),
        (
            Client::RawReq,
            topo(Router::Bosun, Answerer::BosunWorker(1), 1),
        ),
        (
            Client::Bosun,
            topo(Router::Bosun, Answerer::BosunWorker(1), 1),
        ),
        (
            Client::RawReq,
            topo(Router::FloorMdp, Answerer::InlineMdp(1), 1),
        ),
    ];
    let (runs, threads) =
        interleaved_by_thread(s.repeats, &one, |(c, t)| round_trips(c, t, s.n_rtt))?;
    let base = medians(&runs[0]);
    for (((c, t), r), th) in one.iter().zip(&runs).zip(&threads) {
        let m = medians(r);
        println!(
            "  x1 {c:?} -> {:?} -> {:?}: {:.0} req/s ({:.2}x raw) p50 {:.0}us ({:+.0}us) {} | runs {}",
            t.router,
            t.answerer,
            m.per_sec,
            m.per_sec / base.per_sec,
            m.p50,
            m.p50 - base.p50,
            cost(&m),
            list(r, |x| x.per_sec, "")
        );
        println!("      by thread: {}", thread_costs(th));
    }
    // (b) and (c) with one part swapped at a time.
    let flight = [
        (
            Pipelined::RawDealer,
            topo(Router::RawProxy, Answerer::RawRep, 1),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::RawProxy, Answerer::RawRepHop, 1),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::Bosun, Answerer::InlineMdp(1), 1),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::Bosun, Answerer::InlineMdp(IN_FLIGHT as u32), 1),
        ),
        (
            Pipelined::BosunAsync,
            topo(Router::Bosun, Answerer::InlineMdp(IN_FLIGHT as u32), 1),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::Bosun, Answerer::BosunWorker(IN_FLIGHT as u32), 1),
        ),
        (
            Pipelined::BosunAsync,
            topo(Router::Bosun, Answerer::BosunWorker(IN_FLIGHT as u32), 1),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::FloorMdp, Answerer::InlineMdp(IN_FLIGHT as u32), 1),
        ),
        (
            Pipelined::BosunAsync,
            topo(Router::FloorMdp, Answerer::BosunWorker(IN_FLIGHT as u32), 1),
        ),
        (
            Pipelined::BosunAsync,
            topo(Router::Bosun, Answerer::BosunWorker(1), 1),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::RawProxy, Answerer::RawRep, WORKERS),
        ),
        (
            Pipelined::RawDealer,
            topo(Router::Bosun, Answerer::InlineMdp(1), WORKERS),
        ),
        (
            Pipelined::BosunAsync,
            topo(Router::Bosun, Answerer::BosunWorker(2), WORKERS),
        ),
        (
            Pipelined::BosunAsync,
            topo(Router::Bosun, Answerer::BosunWorker(1), WORKERS),
        ),
    ];
    let (runs, threads) =
        interleaved_by_thread(s.repeats, &flight, |(c, t)| pipelined(c, t, s.n_inflight))?;
    let base = medians(&runs[0]).per_sec;
    for (((c, t), r), th) in flight.iter().zip(&runs).zip(&threads) {
        let m = medians(r);
        println!(
            "  {IN_FLIGHT} in flight {c:?} -> {:?} -> {} x {:?}: {:.0} req/s ({:.2}x raw 1 REP) {} | runs {}",
            t.router,
            t.workers,
            t.answerer,
            m.per_sec,
            m.per_sec / base,
            cost(&m),
            list(r, |x| x.per_sec, "")
        );
        println!("      by thread: {}", thread_costs(th));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// (o) The client outbox

/// Runs the Majordomo client of (a) (`pipelined` false) or (c) (true) with the outbox
/// in `durability` (`None`: no outbox) on a fresh data dir: a warm-up, then `n` timed
/// requests.
fn outbox_run(pipelined: bool, durability: Option<Durability>, n: usize) -> Res<Figures> {
    let capacity = if pipelined { IN_FLIGHT as u32 } else { 1 };
    let running = start(topo(Router::Bosun, Answerer::BosunWorker(capacity), 1))?;
    let ctx = client_context(true)?;
    let ep = running.endpoint.as_str();
    let dir = DataDir::new("outbox")?;
    let store = match durability {
        Some(_) => Some(Store::open(&dir.0).map_err(|e| format!("store: {e}"))?),
        None => None,
    };
    let config = |durability| OutboxConfig {
        durability,
        ..OutboxConfig::default()
    };
    let body = body();
    let out = if pipelined {
        let mut builder = AsyncMajordomoClient::builder(ep).context(&ctx);
        if let (Some(store), Some(d)) = (&store, durability) {
            builder = builder.outbox(store, config(d));
        }
        let mut client = builder.connect().map_err(|e| format!("client: {e}"))?;
        async_pipeline(&mut client, warmup(n), IN_FLIGHT, &body)?;
        let before = usage();
        let elapsed = async_pipeline(&mut client, n, IN_FLIGHT, &body)?;
        Figures::throughput(n, elapsed).with_usage(before, n)
    } else {
        let mut builder = MajordomoClient::builder(ep).context(&ctx);
        if let (Some(store), Some(d)) = (&store, durability) {
            builder = builder.outbox(store, config(d));
        }
        let mut client = builder.connect().map_err(|e| format!("client: {e}"))?;
        timed(warmup(n), n, || {
            let reply = client
                .request(SERVICE, body.clone())
                .map_err(|e| format!("request: {e}"))?;
            if reply.len() != BODY {
                return Err(format!("bosun reply of {} bytes", reply.len()));
            }
            Ok(())
        })?
    };
    drop(running);
    Ok(out)
}

fn part_o(s: &Settings) -> Res<()> {
    let modes = [None, Some(Durability::Batched), Some(Durability::Every)];
    let name = |d: Option<Durability>| d.map_or("no outbox", |d| d.as_str());
    for (pipelined, n) in [(false, s.n_outbox_rtt), (true, s.n_outbox)] {
        let runs = interleaved(s.repeats, &modes, |d| outbox_run(pipelined, d, n))?;
        let base = medians(&runs[0]);
        let label = if pipelined {
            format!("{IN_FLIGHT} in flight, 1 worker of capacity {IN_FLIGHT}")
        } else {
            "1 request at a time, 1 worker".to_string()
        };
        let mut line = format!("(o) majordomo client outbox, {label}, {BODY}B n={n}:");
        for (i, d) in modes.iter().enumerate() {
            let m = medians(&runs[i]);
            line.push_str(&format!(" {} {:.0} req/s", name(*d), m.per_sec));
            if !pipelined {
                line.push_str(&format!(" (p50 {:.0}us p99 {:.0}us)", m.p50, m.p99));
            }
            if i > 0 {
                line.push_str(&format!(" = {:.3}x", m.per_sec / base.per_sec));
            }
            line.push_str(if i + 1 < modes.len() { " |" } else { "" });
        }
        if pipelined {
            let batched = medians(&runs[1]).per_sec / base.per_sec;
            line.push_str(&format!(
                " (batched target >= 0.5x: {})",
                verdict(batched >= 0.5)
            ));
        }
        println!("{line}");
        for (i, d) in modes.iter().enumerate() {
            println!(
                "  {}: runs {} ; per request {}",
                name(*d),
                list(&runs[i], |x| x.per_sec, ""),
                cost(&medians(&runs[i]))
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn run(s: &Settings) -> Res<()> {
    println!(
        "bosun majordomo bench: tcp loopback, {BODY}-byte bodies, {} run(s) per side interleaved raw/bosun, medians; receivers: {} (BOSUN_BENCH_RECEIVER)",
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
            'e' => part_e(s)?,
            'o' => part_o(s)?,
            'x' => part_x(s)?,
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
