//! What one reliable pub/sub message costs, for a profiler: a [`bosun::Publisher`]
//! (this thread) publishes N messages (64 bytes, or the size given) in batches of 100,
//! as `benches/pubsub.rs` does, to a [`bosun::Subscriber`] (thread `bosun-sub`) over tcp
//! loopback, every high-water mark off; `raw` does the same with a plain PUB and SUB;
//! `batched` retains in a sled store (a temporary directory) in `batched` durability.
//!
//! ```text
//! cargo build --release --example pubsub_cost
//! valgrind --tool=callgrind --separate-threads=yes \
//!     target/release/examples/pubsub_cost 20000        # bosun
//! valgrind --tool=callgrind --separate-threads=yes \
//!     target/release/examples/pubsub_cost 20000 raw    # raw ZeroMQ
//! target/release/examples/pubsub_cost 20000 batched 1024  # a store, 1 KiB payloads
//! ```
//!
//! Instructions per message of each side: the difference between the counts of two
//! runs (say 20,000 and 40,000 messages) over the difference in messages, so that
//! setup and teardown cancel out.
#![allow(clippy::disallowed_methods)] // a measuring program reads the clock

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bosun::io::publisher::Publisher;
use bosun::io::subscriber::Subscriber;
use bosun::io::transport::{Transport, TransportOptions};
use bosun::store::{Durability, Store};
use bosun::Shutdown;

const TOPIC: &[u8] = b"bench";
/// Messages per `publish_all`, as the bench.
const BATCH: usize = 100;

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mode = args.next().unwrap_or_else(|| "bosun".into());
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let start = Instant::now();
    let r = match mode.as_str() {
        "raw" => run_raw(n, size),
        "batched" => run_bosun(n, size, true),
        _ => run_bosun(n, size, false),
    };
    match r {
        Ok(()) => {
            let secs = start.elapsed().as_secs_f64();
            println!("{n} messages in {secs:.2} s");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pubsub_cost: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_bosun(n: u64, size: usize, batched: bool) -> Res<()> {
    let options = TransportOptions {
        send_hwm: 0,
        recv_hwm: 0,
        ..TransportOptions::default()
    };
    let (pub_ctx, sub_ctx) = (zmq::Context::new(), zmq::Context::new());
    let (pub_t, sub_t) = (
        Transport::new(&pub_ctx, options.clone()),
        Transport::new(&sub_ctx, options),
    );
    let dir = std::env::temp_dir().join(format!("bosun-pubsub-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = if batched {
        Some(Store::open(&dir).map_err(|e| format!("store: {e}"))?)
    } else {
        None
    };
    let mut builder = Publisher::builder("tcp://127.0.0.1:*")
        .replay("tcp://127.0.0.1:*")
        .transport(&pub_t);
    if let Some(store) = &store {
        builder = builder.store(store, Durability::Batched);
    }
    let mut publisher = builder.bind().map_err(|e| format!("publisher: {e}"))?;
    let mut subscriber = Subscriber::builder(&publisher.endpoint())
        .replay(&publisher.replay_endpoint())
        .from_start(true)
        .transport(&sub_t)
        .connect()
        .map_err(|e| format!("subscriber: {e}"))?;
    let done = Shutdown::new();
    let stop = done.clone();
    // Past the slow joiner: the subscriber has its first message (so its SUB socket is
    // connected) before the measured ones are published, which then all come live.
    let joined = Shutdown::new();
    let seen = joined.clone();
    let reader = std::thread::Builder::new()
        .name("bosun-sub".into())
        .spawn(move || -> Res<()> {
            for want in 1..=n + 1 {
                let m = subscriber
                    .recv_timeout(Duration::from_secs(120))
                    .map_err(|e| format!("recv: {e}"))?
                    .ok_or_else(|| format!("nothing after {}", want - 1))?;
                if m.seq != want {
                    stop.trigger();
                    return Err(format!("sequence {} where {want} was due", m.seq));
                }
                seen.trigger();
            }
            stop.trigger();
            Ok(())
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let body = vec![b'x'; size];
    publisher
        .publish(TOPIC, vec![body.clone()])
        .map_err(|e| format!("publish: {e}"))?;
    while !joined.is_triggered() {
        publisher
            .serve(Duration::from_millis(10), &done)
            .map_err(|e| format!("serve: {e}"))?;
    }
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH as u64);
        left -= k;
        publisher
            .publish_all((0..k).map(|_| (TOPIC.to_vec(), vec![body.clone()])))
            .map_err(|e| format!("publish: {e}"))?;
    }
    publisher
        .run_until_stopped(&done)
        .map_err(|e| format!("serve: {e}"))?;
    let r = reader.join().map_err(|_| "subscriber panicked")?;
    drop(publisher);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_raw(n: u64, size: usize) -> Res<()> {
    let (pub_ctx, sub_ctx) = (zmq::Context::new(), zmq::Context::new());
    let publisher = pub_ctx.socket(zmq::PUB).map_err(|e| e.to_string())?;
    publisher.set_sndhwm(0).map_err(|e| e.to_string())?;
    publisher.set_linger(0).map_err(|e| e.to_string())?;
    publisher
        .bind("tcp://127.0.0.1:*")
        .map_err(|e| e.to_string())?;
    let ep = publisher
        .get_last_endpoint()
        .map_err(|e| e.to_string())?
        .map_err(|_| "endpoint")?;
    let sub = sub_ctx.socket(zmq::SUB).map_err(|e| e.to_string())?;
    sub.set_rcvhwm(0).map_err(|e| e.to_string())?;
    sub.set_subscribe(b"").map_err(|e| e.to_string())?;
    sub.set_linger(0).map_err(|e| e.to_string())?;
    sub.connect(&ep).map_err(|e| e.to_string())?;
    // Past the slow joiner: `sync` until the SUB sees one.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        publisher.send("sync", 0).map_err(|e| e.to_string())?;
        if sub.poll(zmq::POLLIN, 1).map_err(|e| e.to_string())? > 0 {
            break;
        }
        if Instant::now() > until {
            return Err("no sync message within 30 s".into());
        }
    }
    let reader = std::thread::Builder::new()
        .name("raw-sub".into())
        .spawn(move || -> Res<()> {
            let mut msg = zmq::Message::new();
            let mut got = 0;
            while got < n {
                sub.recv(&mut msg, 0).map_err(|e| e.to_string())?;
                let data = &*msg == TOPIC;
                while msg.get_more() {
                    sub.recv(&mut msg, 0).map_err(|e| e.to_string())?;
                }
                if data {
                    got += 1;
                }
            }
            Ok(())
        })
        .map_err(|e| format!("spawn: {e}"))?;
    let body = vec![b'x'; size];
    for _ in 0..n {
        publisher
            .send(TOPIC, zmq::SNDMORE)
            .and_then(|_| publisher.send(body.as_slice(), 0))
            .map_err(|e| e.to_string())?;
    }
    reader.join().map_err(|_| "subscriber panicked")?
}
