//! Paranoid Pirate (6/PPP): a queue between Lazy Pirate clients and workers, with
//! heartbeats both ways so that neither side is ever stuck on a dead peer.
//!
//! [`Queue`] routes each client request to the least recently used idle worker and
//! never to a busy or expired one; [`Worker`] heartbeats the queue and reconnects on a
//! fresh socket with backoff when the queue goes silent.

mod queue;
mod worker;

pub use queue::{
    Event as QueueEvent, Queue, QueueConfig, Side, Transmit as QueueTransmit, MAX_QUEUE_BYTES,
};
pub use worker::{Event as WorkerEvent, NotBusy, Transmit as WorkerTransmit, Worker};
