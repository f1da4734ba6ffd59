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
use crate::store::{DeadLetter, DeadLetters, DeadReason, OutboxRecord, Store};

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
    /// Send dead letters again, with their original ids: to the broker (a request
    /// with a service, or --service), else to a Lazy Pirate server or queue, or to
    /// Freelance servers (several --connect endpoints, or --freelance). One that is
    /// answered is removed; one that fails again stays, with its new error.
    Replay(ReplayArgs),
    /// Delete dead letters.
    Purge(PurgeArgs),
}

/// `--data-dir` and `--json`, shared by every `dlq` subcommand.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// The data dir of the peer (client, worker or broker) whose dead letters these
    /// are. The peer must not be running.
    #[arg(long, env = "BOSUN_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// One JSON object per line on stdout: `id`, `at` (RFC 3339, UTC), `at_ms`,
    /// `service` (null for none), `attempts`, `reason` (handler-failed, gave-up,
    /// poison, expired), `error`, `frames` and `bytes` of the payload; `show` adds
    /// `payload`, a list of `{encoding, data}`.
    #[arg(long)]
    pub json: bool,
}

/// Options of `bosun dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The data dir and output format.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Options of `bosun dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The dead letter's id (its request's message id).
    #[arg(value_parser = parse_id)]
    pub id: Uuid,
    /// The data dir and output format.
    #[command(flatten)]
    pub dir: DirArgs,
}

/// Which dead letters: the ids given, or `--all`.
#[derive(Debug, Args)]
pub struct Selection {
    /// The ids of the dead letters (their requests' message ids).
    #[arg(value_parser = parse_id, required_unless_present = "all", conflicts_with = "all")]
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
    /// The data dir and output format (a reply is printed like `bosun client` prints
    /// one: bare, or with --json an object with `id` the message id).
    #[command(flatten)]
    pub dir: DirArgs,
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
    /// The data dir and output format (`{"purged": N}`).
    #[command(flatten)]
    pub dir: DirArgs,
}

fn parse_id(s: &str) -> Result<Uuid, String> {
    Uuid::parse_str(s).map_err(|e| format!("{e} (a message id, as `bosun dlq list` shows it)"))
}

/// Runs one `bosun dlq` subcommand.
pub fn run(args: DlqArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    match args.command {
        DlqCommand::List(a) => list(&a.dir),
        DlqCommand::Show(a) => show(&a.dir, a.id),
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

fn list(dir: &DirArgs) -> Result<ExitCode, Error> {
    let (_store, dead) = open(&dir.data_dir)?;
    for l in dead.list()? {
        if dir.json {
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

fn show(dir: &DirArgs, id: Uuid) -> Result<ExitCode, Error> {
    let (_store, dead) = open(&dir.data_dir)?;
    let select = Selection {
        ids: vec![id],
        all: false,
    };
    let Some(l) = selected(&dead, &select, &dir.data_dir)?.pop() else {
        return Ok(ExitCode::from(exit::OK)); // `selected` fails on a missing id
    };
    if dir.json {
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
    if args.dir.json {
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
/// id's timestamp; a UUID v7 carries it), its attempt count continuing.
fn as_record(l: &DeadLetter, service: Option<&str>) -> OutboxRecord {
    let created_at_ms =
        l.id.get_timestamp()
            .map(|ts| {
                let (secs, nanos) = ts.to_unix();
                secs * 1000 + u64::from(nanos) / 1_000_000
            })
            .unwrap_or(l.at_ms);
    let mut record = OutboxRecord::new(l.id, created_at_ms, l.payload.clone());
    record.service = service
        .map(|s| s.as_bytes().to_vec())
        .or_else(|| l.service.clone());
    record.attempts = l.attempts;
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
        let record = as_record(l, args.service.as_deref());
        let start = crate::io::now();
        let result = clients.send(&record);
        let rtt = crate::io::now() - start;
        let service = record.service.as_deref().map(String::from_utf8_lossy);
        let base = || {
            json::Object::new()
                .str("id", &l.id.to_string())
                .opt_str("service", service.as_deref())
        };
        let failure = match result {
            Ok(frames) => {
                dead.remove(l.id)?;
                answered += 1;
                let body = frames.concat();
                if args.dir.json {
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
                    "bosun dlq: {}: answered; removed from the dead letters",
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
        // It failed again: it stays, with what happened this time.
        let mut again = l.clone();
        again.at_ms = crate::io::unix_ms();
        again.last_error = describe(&failure);
        let (status, stop) = match &failure {
            Error::Client(ClientError::GaveUp { attempts, .. }) => {
                gave_up = true;
                again.reason = DeadReason::GaveUp;
                // The attempt count continued from the letter's: this is the total.
                again.attempts = *attempts;
                ("no_reply", true)
            }
            Error::Client(ClientError::Remote { status, .. }) if *status == Status::Refused => {
                refused = true;
                again.attempts = l.attempts.saturating_add(1);
                ("refused", false)
            }
            Error::Client(ClientError::Remote { .. }) => {
                failed = true;
                again.reason = DeadReason::HandlerFailed;
                again.attempts = l.attempts.saturating_add(1);
                ("failed", false)
            }
            _ => {
                too_large = true;
                ("too_large", false)
            }
        };
        dead.put(&again)?;
        eprintln!(
            "bosun dlq: {}: {}; kept in the dead letters",
            l.id, again.last_error
        );
        if args.dir.json {
            let o = base().str("status", status).str("error", &again.last_error);
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
