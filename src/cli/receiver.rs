//! The receiver options of `bosun worker` and `bosun server`: the duplicate window, its
//! store, and (for workers) how often a failing handler is tried.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};

use super::args::parse_size;
use super::parse_duration;
use crate::error::Error;
use crate::io::receiver::ReceiverOptions;
use crate::proto::dedup::{Limits, DEFAULT_MAX_AGE, DEFAULT_MAX_IDS, DEFAULT_MAX_REPLY_BYTES};
use crate::store::{Durability, Store};

/// The environment variable that makes a worker or server SIGKILL itself right after its
/// first reply was recorded, before it is sent: test only (the kill tests' crash between
/// handler and reply). `1` turns it on.
pub const CRASH_AFTER_HANDLER_VAR: &str = "BOSUN_TEST_CRASH_AFTER_HANDLER";

/// `--data-dir`, `--dedup`, `--dedup-max-ids`, `--dedup-max-age`,
/// `--dedup-max-reply-bytes`, `--durability`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("dedup_on").args(["data_dir", "dedup"]).multiple(true)))]
pub struct DedupArgs {
    /// Keep the duplicate window (ids handled, with their replies) and the dead letters
    /// in this directory, so that a restart keeps them: a retry of a request handled
    /// before the restart is answered from the cache, not run again. Turns duplicate
    /// suppression on. One process per directory (another is refused, exit 75).
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Suppress duplicates without --data-dir: the window lives in memory and is lost
    /// when the process stops.
    #[arg(long)]
    pub dedup: bool,
    /// With --data-dir or --dedup: the most ids remembered [default: 100000].
    #[arg(long, value_name = "N", requires = "dedup_on", value_parser = parse_max_ids)]
    pub dedup_max_ids: Option<usize>,
    /// With --data-dir or --dedup: how long a handled id is remembered after it was
    /// answered; a copy that arrives later runs again [default: 10m].
    #[arg(long, value_name = "DURATION", requires = "dedup_on", value_parser = parse_max_age)]
    pub dedup_max_age: Option<Duration>,
    /// With --data-dir or --dedup: the most bytes of replies cached in all; a larger
    /// reply is not cached (a copy of its request is refused as handled already)
    /// [default: 64MiB].
    #[arg(long, value_name = "SIZE", requires = "dedup_on", value_parser = parse_size)]
    pub dedup_max_reply_bytes: Option<usize>,
    /// With --data-dir: when the window is flushed to disk. `batched`: each reply is on
    /// disk before it is sent (one flush for the replies ready at once); `every`: the
    /// start of each handler too, so a restart reports the handlers a crash interrupted;
    /// `none`: sled's own flush every 500 ms (a crash may lose the last half second,
    /// whose retries then run again) [default: batched].
    #[arg(
        long,
        env = "BOSUN_DURABILITY",
        value_name = "MODE",
        requires = "data_dir"
    )]
    pub durability: Option<Durability>,
}

/// `--dedup-max-ids`: at least 1.
fn parse_max_ids(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number of ids, at least 1)")),
    }
}

/// `--dedup-max-age`: a duration longer than zero.
fn parse_max_age(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

impl DedupArgs {
    /// The receiver options these flags ask for, with `max_attempts`: opens the store
    /// of `--data-dir` (refusing a directory that is in use or is not a bosun store).
    pub fn options(&self, max_attempts: Option<u32>) -> Result<ReceiverOptions, Error> {
        let store = match &self.data_dir {
            Some(dir) => Some(Store::open(dir)?),
            None => None,
        };
        let dedup = (self.dedup || store.is_some()).then(|| Limits {
            max_ids: self.dedup_max_ids.unwrap_or(DEFAULT_MAX_IDS),
            max_age: self.dedup_max_age.unwrap_or(DEFAULT_MAX_AGE),
            max_reply_bytes: self
                .dedup_max_reply_bytes
                .unwrap_or(DEFAULT_MAX_REPLY_BYTES),
        });
        Ok(ReceiverOptions {
            dedup,
            store,
            durability: self.durability.unwrap_or_default(),
            max_attempts,
            crash_after_handler: std::env::var_os(CRASH_AFTER_HANDLER_VAR)
                .is_some_and(|v| v == "1"),
        })
    }
}
