//! `bosun dlq`: inspect, re-send and delete the dead letters of a peer's data dir.
//!
//! Every peer with a `--data-dir` (client, worker, broker) keeps the requests it gave
//! up on in the same tree of its store ([`crate::store::DeadLetters`]), so these
//! commands work on any peer's directory. The peer must not be running: a store is
//! open in one process at a time (a running peer's directory is refused as in use).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::args::parse_service;
use super::{describe, exit, json, RetryArgs};
use crate::error::{ClientError, ConfigError, Error};
use crate::io::freelance::FreelanceClient;
use crate::io::lazy_pirate::LazyPirateClient;
use crate::io::mdclient::MajordomoClient;
use crate::io::Shutdown;
use crate::proto::envelope::Status;
use crate::proto::frames::Frames;
use crate::proto::freelance::FreelanceConfig;
use crate::proto::stats::escape_name;
use crate::store::{DeadLetter, DeadLetters, OutboxRecord, Store};

/// Options of `bosun dlq`.
#[derive(Debug, Args)]
pub struct DlqArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// The `bosun dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter, oldest request first: id, time given up (UTC),
    /// service (`-` for none), attempts, reason, last error.
    List(ListArgs),
    /// Everything about one dead letter, its payload included (as text, or base64
    /// when it is not UTF-8).
    Show(ShowArgs),
    /// Send dead letters again, with their original ids (or new ones, --fresh-id): to
    /// the broker (a request with a service, or --service), else to a Lazy Pirate
    /// server or queue, or to Freelance servers (several --connect endpoints, or
    /// --freelance). One that is answered is removed; one that fails again stays as it
    /// was (reason, error, attempts), and the replay's own outcome is said on stderr
    /// (and in --json).
    Replay(ReplayArgs),
    /// Delete dead letters.
    Purge(PurgeArgs),
}

/// `--data-dir`, shared by every `dlq` subcommand.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// The data dir of the peer (client, worker or broker) whose dead letters these
    /// are. It must hold a bosun store (dlq never creates one), and the peer must not
    /// be running.
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

/// Options of `bosun dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The data dir.
    #[command(flatten)]
    pub dir: DirArgs,
    /// One JSON object per dead letter, one per line: `id`, `at` (RFC 3339, UTC),
    /// `at_ms`, `service` (null for none), `attempts`, `reason` (handler-failed,
    /// gave-up, poison, expired, refused), `error`, `frames` and `bytes` of the payload.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bosun dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dead letter's id (its request's message id).
    #[arg(value_parser = parse_id)]
    pub id: Uuid,
    /// The data dir.
    #[command(flatten)]
    pub dir: DirArgs,
    /// One JSON object: the fields `dlq list --json` prints, and `payload`, a list of
    /// `{encoding, data}` (utf8 or base64), one per frame.
    #[arg(long)]
    pub json: bool,
}

/// Which dead letters: the ids given, or `--all` (one or the other).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// The ids of the dead letters (their requests' message ids).
    #[arg(value_parser = parse_id)]
    pub ids: Vec<Uuid>,
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
}

/// Options of `bosun dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub select: Selection,
    /// Where to send them: a broker, a Lazy Pirate server or queue frontend, or
    /// several Freelance servers, comma-separated.
    #[arg(long, env = "BOSUN_CONNECT")]
    pub connect: String,
    /// Send every one to this Majordomo service, whatever service it had.
    #[arg(long, value_parser = parse_service, conflicts_with = "freelance")]
    pub service: Option<String>,
    /// Speak Freelance (10/FLP) even to a single server (implied by several
    /// --connect); the dead letters' services are ignored.
    #[arg(long)]
    pub freelance: bool,
    /// Send each under a new message id, so that a receiver that remembers the old id
    /// (a worker's reply cache, within its --dedup-max-age) runs it again instead of
    /// answering what it cached. The letter, under its old id, is removed once the new
    /// id is answered; stderr (and --json `new_id`) says the new id.
    #[arg(long)]
    pub fresh_id: bool,
    /// The data dir.
    #[command(flatten)]
    pub dir: DirArgs,
    /// One JSON object per dead letter replayed, one per line: `id` (the letter's),
    /// `new_id` (with --fresh-id), `service`, `status` (ok, no_reply, refused, failed,
    /// too_large); with ok `rtt_ms` and `payload` (the reply), otherwise `error`.
    /// Without it, a reply is printed bare, like `bosun client` prints one.
    #[arg(long)]
    pub json: bool,
    /// Retry settings.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Options of `bosun dlq purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Which dead letters.
    #[command(flatten)]
    pub select: Selection,
    /// The data dir.
    #[command(flatten)]
    pub dir: DirArgs,
    /// One JSON object: `{"purged": N}`, how many were deleted.
    #[arg(long)]
    pub json: bool,
}

fn parse_id(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|e| format!("{e} (a message id, as `bosun dlq list` shows it)"))
}

/// Runs one `bosun dlq` subcommand.
pub fn run(args: DlqArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    match args.command {
        DlqCommand::List(a) => list(&a.dir, a.json),
        DlqCommand::Show(a) => show(&a.dir, a.id, a.json),
        DlqCommand::Replay(a) => replay(&a, shutdown),
        DlqCommand::Purge(a) => purge(&a),
    }
}

/// Opens the store in `dir`, which must exist: `dlq` reads a peer's dead letters, it
/// never makes a store.
fn open(dir: &Path) -> Result<(Store, DeadLetters), Error> {
    if !dir.exists() {
        return Err(ConfigError::Invalid {
            field: "data_dir",
            reason: format!("{} does not exist", dir.display()),
        }
        .into());
    }
    let store = Store::open_existing(dir)?;
    let dead = store.dead_letters()?;
    Ok((store, dead))
}

/// The dead letters `select` names, in id order; every id must be there.
fn selected(dead: &DeadLetters, select: &Selection, dir: &Path) -> Result<Vec<DeadLetter>, Error> {
    if select.all {
        return Ok(dead.list()?);
    }
    let mut ids = select.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match dead.get(id)? {
            Some(letter) => out.push(letter),
            None => {
                return Err(ConfigError::Invalid {
                    field: "id",
                    reason: format!("no dead letter {id} in {}", dir.display()),
                }
                .into())
            }
        }
    }
    Ok(out)
}

/// `at_ms` as RFC 3339 with milliseconds, UTC.
fn time(at_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at_ms)).to_string()
}

/// Text on one line: line breaks and tabs become spaces.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

fn service_text(service: Option<&[u8]>) -> String {
    service.map_or_else(|| "-".to_string(), escape_name)
}

/// The fields every listing shows, as JSON.
fn summary_json(l: &DeadLetter) -> json::Object {
    let service = l.service.as_deref().map(String::from_utf8_lossy);
    json::Object::new()
        .str("id", &l.id.to_string())
        .str("at", &time(l.at_ms))
        .opt_u64("at_ms", Some(l.at_ms))
        .opt_str("service", service.as_deref())
        .opt_u64("attempts", Some(u64::from(l.attempts)))
        .str("reason", l.reason.as_str())
        .str("error", &l.last_error)
        .opt_u64("frames", Some(l.payload.len() as u64))
        .opt_u64(
            "bytes",
            Some(l.payload.iter().map(Vec::len).sum::<usize>() as u64),
        )
}

fn list(dir: &DirArgs, json: bool) -> Result<ExitCode, Error> {
    let (_store, dead) = open(&dir.data_dir)?;
    for l in dead.list()? {
        if json {
            println!("{}", summary_json(&l).finish());
        } else {
            println!(
                "{}  {}  {}  {}  {}  {}",
                l.id,
                time(l.at_ms),
                service_text(l.service.as_deref()),
                l.attempts,
                l.reason,
                one_line(&l.last_error)
            );
        }
    }
    Ok(ExitCode::from(exit::OK))
}

fn show(dir: &DirArgs, id: Uuid, json: bool) -> Result<ExitCode, Error> {
    let (_store, dead) = open(&dir.data_dir)?;
    let select = Selection {
        ids: vec![id],
        all: false,
    };
    let Some(l) = selected(&dead, &select, &dir.data_dir)?.pop() else {
        return Ok(ExitCode::from(exit::OK)); // `selected` fails on a missing id
    };
    if json {
        let frames: Vec<String> = l
            .payload
            .iter()
            .map(|f| json::Object::new().bytes("data", f).finish())
            .collect();
        let o = summary_json(&l).raw("payload", &format!("[{}]", frames.join(",")));
        println!("{}", o.finish());
        return Ok(ExitCode::from(exit::OK));
    }
    let bytes: usize = l.payload.iter().map(Vec::len).sum();
    let n = l.payload.len();
    println!("id        {}", l.id);
    println!("at        {}", time(l.at_ms));
    println!("service   {}", service_text(l.service.as_deref()));
    println!("attempts  {}", l.attempts);
    println!("reason    {}", l.reason);
    println!("error     {}", one_line(&l.last_error));
    println!(
        "payload   {n} frame{}, {bytes} bytes",
        if n == 1 { "" } else { "s" }
    );
    for (i, f) in l.payload.iter().enumerate() {
        match std::str::from_utf8(f) {
            Ok(text) => println!("frame {}   utf8 {}", i + 1, json::string(text)),
            Err(_) => println!("frame {}   base64 {}", i + 1, json::base64(f)),
        }
    }
    Ok(ExitCode::from(exit::OK))
}

fn purge(args: &PurgeArgs) -> Result<ExitCode, Error> {
    let dir = &args.dir.data_dir;
    let (_store, dead) = open(dir)?;
    let purged = if args.select.all {
        dead.purge()?
    } else {
        let letters = selected(&dead, &args.select, dir)?;
        for l in &letters {
            dead.remove(l.id)?;
        }
        letters.len()
    };
    if args.json {
        println!(
            "{}",
            json::Object::new()
                .opt_u64("purged", Some(purged as u64))
                .finish()
        );
    }
    let s = if purged == 1 { "" } else { "s" };
    eprintln!(
        "bosun dlq: purged {purged} dead letter{s} from {}",
        dir.display()
    );
    Ok(ExitCode::from(exit::OK))
}

/// The clients a replay sends through, made when first needed.
struct Clients<'a> {
    args: &'a ReplayArgs,
    ctx: zmq::Context,
    shutdown: &'a Shutdown,
    lazy: Option<LazyPirateClient>,
    majordomo: Option<MajordomoClient>,
    freelance: Option<FreelanceClient>,
}

impl Clients<'_> {
    /// Sends `record` through the client its service (or the flags) calls for.
    fn send(&mut self, record: &OutboxRecord) -> Result<Frames, Error> {
        let retry = self.args.retry.retry();
        let endpoints: Vec<String> = self
            .args
            .connect
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if self.args.freelance || endpoints.len() > 1 {
            if self.freelance.is_none() {
                let cfg = FreelanceConfig {
                    retry,
                    ..FreelanceConfig::default()
                };
                self.freelance = Some(
                    FreelanceClient::builder(&endpoints)
                        .context(&self.ctx)
                        .config(cfg)
                        .shutdown(self.shutdown)
                        .connect()?,
                );
            }
            let client = self.freelance.as_mut().ok_or(ClientError::Interrupted)?;
            return client.resend(&OutboxRecord {
                service: None,
                ..record.clone()
            });
        }
        if record.service.is_some() {
            if self.majordomo.is_none() {
                self.majordomo = Some(
                    MajordomoClient::builder(&self.args.connect)
                        .context(&self.ctx)
                        .retry(retry)
                        .shutdown(self.shutdown)
                        .connect()?,
                );
            }
            let client = self.majordomo.as_mut().ok_or(ClientError::Interrupted)?;
            return client.resend(record);
        }
        if self.lazy.is_none() {
            self.lazy = Some(
                LazyPirateClient::builder(&self.args.connect)
                    .context(&self.ctx)
                    .retry(retry)
                    .shutdown(self.shutdown)
                    .connect()?,
            );
        }
        let client = self.lazy.as_mut().ok_or(ClientError::Interrupted)?;
        client.resend(record)
    }
}

/// A dead letter as the request to send again: its original id and creation time (the
/// id's timestamp; a UUID v7 carries it), or with `fresh_id` a new id made now. It is a
/// new send: its attempts count from 1 (the letter keeps its own count), and it carries
/// the deadline `now + budget`, so that a broker drops it once the replay stopped
/// waiting for it.
fn as_record(
    l: &DeadLetter,
    service: Option<&str>,
    budget: Duration,
    fresh_id: bool,
) -> OutboxRecord {
    let (id, created_at_ms) = if fresh_id {
        let envelope = crate::io::envelope(Vec::new());
        (envelope.meta.id, envelope.meta.created_at_ms)
    } else {
        let created_at_ms =
            l.id.get_timestamp()
                .map(|ts| {
                    let (secs, nanos) = ts.to_unix();
                    secs * 1000 + u64::from(nanos) / 1_000_000
                })
                .unwrap_or(l.at_ms);
        (l.id, created_at_ms)
    };
    let mut record = OutboxRecord::new(id, created_at_ms, l.payload.clone());
    record.service = service
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| l.service.clone());
    let budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX);
    record.deadline_ms = Some(crate::io::unix_ms().saturating_add(budget_ms));
    record
}

fn replay(args: &ReplayArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let dir = &args.dir.data_dir;
    let (_store, dead) = open(dir)?;
    let letters = selected(&dead, &args.select, dir)?;
    let mut clients = Clients {
        args,
        ctx: zmq::Context::new(),
        shutdown,
        lazy: None,
        majordomo: None,
        freelance: None,
    };
    let (mut gave_up, mut refused, mut failed, mut too_large) = (false, false, false, false);
    let mut answered = 0usize;
    for l in &letters {
        if shutdown.is_triggered() {
            break;
        }
        let budget = args.retry.retry().budget();
        let record = as_record(l, args.service.as_deref(), budget, args.fresh_id);
        let new_id = (record.id != l.id).then_some(record.id);
        let start = crate::io::now();
        let result = clients.send(&record);
        let rtt = crate::io::now() - start;
        let service = record.service.as_deref().map(String::from_utf8_lossy);
        let new_id_text = new_id.map(|id| id.to_string());
        let base = || {
            json::Object::new()
                .str("id", &l.id.to_string())
                .opt_str("new_id", new_id_text.as_deref())
                .opt_str("service", service.as_deref())
        };
        let as_sent = new_id_text
            .as_ref()
            .map_or_else(String::new, |id| format!(" (sent as {id})"));
        let failure = match result {
            Ok(frames) => {
                dead.remove(l.id)?;
                answered += 1;
                let body = frames.concat();
                if args.json {
                    let o = base()
                        .str("status", "ok")
                        .num("rtt_ms", (rtt.as_secs_f64() * 1e6).round() / 1e3)
                        .bytes("payload", &body);
                    println!("{}", o.finish());
                } else {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(&body)
                        .and_then(|_| out.write_all(b"\n"))
                        .and_then(|_| out.flush())
                        .map_err(|e| Error::io("write reply to stdout", e))?;
                }
                eprintln!(
                    "bosun dlq: {}{as_sent}: answered; removed from the dead letters",
                    l.id
                );
                continue;
            }
            Err(Error::Client(ClientError::Interrupted)) => break,
            Err(e @ Error::Client(ClientError::GaveUp { .. })) => e,
            Err(e @ Error::Client(ClientError::Remote { .. })) => e,
            Err(e @ Error::Client(ClientError::TooLarge { .. })) => e,
            Err(e) => return Err(e),
        };
        // It failed again: the letter stays as it was (its reason, error and attempts
        // are the original diagnosis); the replay's own outcome is only reported.
        let error = describe(&failure);
        let (status, stop) = match &failure {
            Error::Client(ClientError::GaveUp { .. }) => {
                gave_up = true;
                ("no_reply", true)
            }
            Error::Client(ClientError::Remote { status, .. }) if *status == Status::Refused => {
                refused = true;
                ("refused", false)
            }
            Error::Client(ClientError::Remote { .. }) => {
                failed = true;
                ("failed", false)
            }
            _ => {
                too_large = true;
                ("too_large", false)
            }
        };
        eprintln!(
            "bosun dlq: {}{as_sent}: replay failed: {error}; kept in the dead letters \
             unchanged",
            l.id
        );
        if args.json {
            let o = base().str("status", status).str("error", &error);
            println!("{}", o.finish());
        }
        if stop {
            // Nothing answers there: the rest would wait out every attempt too.
            break;
        }
    }
    let left = letters.len() - answered;
    eprintln!(
        "bosun dlq: replayed {answered} of {}; {left} still dead-lettered in {}",
        letters.len(),
        dir.display()
    );
    Ok(ExitCode::from(if gave_up {
        exit::UNAVAILABLE
    } else if refused {
        exit::TEMPFAIL
    } else if too_large {
        exit::DATA
    } else if failed {
        exit::FAILED
    } else {
        exit::OK
    }))
}
