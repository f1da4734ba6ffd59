//! # bosun
//!
//! Reliable messaging over ZeroMQ: the ZeroMQ Guide's reliability patterns as tested,
//! documented components. Clients that never hang on a dead server, workers that
//! heartbeat and reconnect, a queue that never routes to a dead or busy worker.
//!
//! # Layout
//! - [`config`]: every settings type in one place, with its defaults: [`Heartbeat`],
//!   [`Retry`], [`Backoff`], [`config::BrokerConfig`], [`config::QueueConfig`],
//!   [`config::FreelanceConfig`], [`config::TransportOptions`], [`config::Faults`],
//!   [`config::ExecOptions`], [`config::ReceiverOptions`] (with
//!   [`config::DedupLimits`]), [`config::OutboxConfig`].
//! - [`error`]: one error enum per layer, joined into [`Error`].
//! - [`proto`]: pure state machines (no sockets, no clock), one core per pattern:
//!   [`proto::lazy_pirate`], [`proto::paranoid_pirate`] (queue and worker),
//!   [`proto::broker`], [`proto::worker`] and [`proto::client`] (Majordomo; both
//!   Majordomo clients drive [`proto::client::MdpClient`]), [`proto::freelance`] (the
//!   Freelance client), [`proto::server`] (the REP and Freelance servers), the frame
//!   parsers in [`proto::frames`] (6/PPP, 7/MDP), the message format in
//!   [`proto::envelope`] (the payload frames unchanged plus one metadata frame; see
//!   [`Envelope`]), [`proto::stats`], [`proto::backoff`] and [`proto::timer`]; the
//!   duplicate window of [`proto::dedup`], and [`proto::gate`], what every worker and
//!   server does before and after its handler (duplicates held or answered from the
//!   reply cache, deadlines, re-runs and dead letters). Reliable pub/sub:
//!   [`proto::publisher`] (sequences, retention, heartbeats, the replay server) and
//!   [`proto::subscriber`] (order, dedup, gap repair by replay, liveness, cursors), over
//!   the frames of [`proto::frames::pubsub`].
//! - [`io`]: the thin drivers that own the zmq sockets and the clock. Every core runs in
//!   the one loop of [`io::driver`], over an arrangement of sockets that all come from
//!   one [`io::Transport`] ([`io::transport`]: context, linger, high-water marks,
//!   largest frame). The drivers: [`LazyPirateClient`], [`io::server`], [`io::queue`],
//!   [`PpWorker`], [`io::broker`], [`Worker`] ([`io::mdworker`]), [`io::mdclient`],
//!   [`io::freelance`], and the reliable [`Publisher`] and [`Subscriber`]
//!   ([`io::publisher`], [`io::subscriber`]; an async handle in
//!   [`io::async_subscriber`]). Every worker and server takes one handler type,
//!   [`io::handler::Handler`]; a handler that fails or panics fails its request, never
//!   its worker. Every driver is made the same way, `X::builder(..)` then `.connect()`
//!   or `.bind()` (see [`io`]). Workers and servers take [`io::receiver::ReceiverOptions`]
//!   (duplicate suppression, max attempts, their store), written through the one hook of
//!   [`io::receiver`]. Every client takes an optional outbox (`.outbox(&store, config)`),
//!   written through the one hook of [`io::outbox`].
//! - [`store`]: what must survive a crash, one sled database per peer (or one in memory
//!   for simulations): the [`store::Outbox`] of pending requests, the
//!   [`store::DedupLog`] behind the duplicate window of [`proto::dedup`], and the
//!   [`store::DeadLetters`] (`bosun dlq` reads and replays them), a publisher's retained
//!   messages and identity ([`store::published`]) and subscribers' cursors.
//! - `cli` (with the default `cli` feature): the `bosun` command line (option structs
//!   and one run function each).
//! - [`zmq`]: the zmq crate bosun is built on, re-exported, so that a program can make a
//!   shared `bosun::zmq::Context` without depending on the same zmq version itself.
//!
//! # Features
//! - `cli` (default): the `bosun` binary and the `cli` module. Linking the library with
//!   `default-features = false` compiles no clap, tracing-subscriber or
//!   humantime: the library logs through `tracing` only, and a program installs its own
//!   subscriber and signal handling (trigger a [`Shutdown`] from it).
//!
//! # Example
//! ```no_run
//! use bosun::{LazyPirateClient, Retry};
//! let ctx = bosun::zmq::Context::new();
//! let mut client = LazyPirateClient::builder("tcp://127.0.0.1:5555")
//!     .context(&ctx) // optional: without it, a context of its own
//!     .retry(Retry::default())
//!     .connect()?;
//! let reply = client.request(b"hello".to_vec())?;
//! # Ok::<(), bosun::Error>(())
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod error;
pub mod io;
pub mod proto;
pub mod store;

pub use config::{Backoff, Heartbeat, Retry};
pub use error::{Error, Result};
pub use io::lazy_pirate::LazyPirateClient;
pub use io::mdworker::Worker;
pub use io::ppworker::PpWorker;
pub use io::publisher::Publisher;
pub use io::subscriber::Subscriber;
pub use io::Shutdown;
pub use proto::envelope::Envelope;
/// The zmq crate bosun is built on (see the crate docs).
pub use zmq;
