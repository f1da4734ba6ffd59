//! Pure protocol cores: no zmq, no sled, no threads, no clock reads.
//!
//! Each core is a state machine fed with `handle_*(now, ...)` calls and drained with
//! `poll_transmit` / `poll_event` / `poll_timeout`. Time is always a parameter, so every
//! core runs in virtual time in the tests.

pub mod backoff;
pub mod broker;
pub mod client;
pub mod dedup;
pub mod envelope;
pub mod frames;
pub mod freelance;
pub mod gate;
pub mod lazy_pirate;
pub mod paranoid_pirate;
pub mod publisher;
pub mod server;
pub mod stats;
pub mod subscriber;
pub mod timer;
pub mod worker;
