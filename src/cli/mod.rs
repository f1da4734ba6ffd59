//! The `bosun` command line: clap option structs and one run function per subcommand.

mod args;
mod broker;
mod client;
mod demo;
mod dlq;
mod json;
mod mdclient;
mod pubsub;
mod queue;
mod receiver;
mod server;
mod stats;
mod worker;

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use clap::{CommandFactory, Parser, Subcommand};

pub use args::{flag_of, parse_duration, HeartbeatArgs, ReconnectArgs, RetryArgs};

use crate::error::{ClientError, ConfigError, Error, TransportError};
use crate::io::Shutdown;

/// The exit codes, the same in every subcommand (sysexits-style; see [`EXIT_CODES`]).
pub mod exit {
    /// Everything asked for was done.
    pub const OK: u8 = 0;
    /// A request failed remotely: the handler at the far end failed (or, for `demo`,
    /// the demo's check failed).
    pub const FAILED: u8 = 1;
    /// `server --crash-after N`: the simulated crash.
    pub const CRASHED: u8 = 3;
    /// Usage: a bad flag, value or environment variable, a configuration that cannot
    /// work, or a `--data-dir` that is not a usable bosun store (EX_USAGE).
    pub const USAGE: u8 = 64;
    /// Bad data: an input line the client cannot send (over the 64 MiB a bosun peer
    /// accepts), or a data dir that is not a bosun store, or a damaged one
    /// (EX_DATAERR).
    pub const DATA: u8 = 65;
    /// Unavailable: no reply after every attempt, the peer is not a bosun broker, an
    /// address is in use (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// An internal error: a bug (EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
    /// Reading stdin, writing stdout, starting a child process, or reading or writing
    /// the data dir failed (EX_IOERR).
    pub const IO: u8 = 74;
    /// A temporary failure: the broker refused a request unhandled (a full queue), the
    /// client's outbox is full, or the data dir is in use by another process; try again
    /// later (EX_TEMPFAIL).
    pub const TEMPFAIL: u8 = 75;
    /// Stopped by SIGHUP (128 + 1) before it finished.
    pub const SIGHUP: u8 = 129;
    /// Stopped by SIGINT (Ctrl-C; 128 + 2) before it finished.
    pub const SIGINT: u8 = 130;
    /// Stopped by SIGTERM (128 + 15) before it finished.
    pub const SIGTERM: u8 = 143;
}

/// The exit-code table, as `bosun --help` shows it.
pub const EXIT_CODES: &str = "\
Exit status (the same for every subcommand):
    0    done: every request answered, or `sub --count N` printed N (servers, queues,
         brokers, workers, `pub`, `sub` without --count and `stats --watch`:
         stopped by SIGINT/SIGTERM, their normal way to end)
    1    a request failed remotely: its handler failed (demo: a check failed)
    3    server --crash-after: the simulated crash
   64    usage: a bad flag, value or BOSUN_* variable, or settings that cannot work
         (dlq: an id that is not in the dead letters; client: a --data-dir whose
         pending requests another kind of client made; pub and sub: a --data-dir
         holding another kind of peer's state; sub: a --data-dir that kept the
         positions of another output, an --output file cut shorter than recorded)
   65    bad data: an input line too large to send or publish (over 64 MiB), or a
         --data-dir that is not a bosun store or is damaged
   69    unavailable: no reply after every attempt, the peer is not a bosun broker,
         or the address is in use
   70    internal error (a bug: please report it)
   74    I/O error: reading stdin, writing stdout or an --output file, starting a
         child process, reading or writing the data dir
   75    temporary failure: the broker refused a request unhandled (full queue), the
         outbox is full (--outbox-limit), the data dir is in use by another
         process, or a subscriber fell more than --max-behind behind with --on-slow
         fail
  130    interrupted by SIGINT (Ctrl-C) before finishing, e.g. `sub --count N` before
         N, or `pub` before the end of its stdin (143: SIGTERM, 129: SIGHUP)
When several apply, the first of 130/143/129, 69, 74, 75, 65, 1 wins. A closed stdout
(`bosun client | head -1`) is not an error: the client stops sending and exits as if
its input had ended (with --data-dir, requests whose replies could not be printed
stay pending, and the next start on that dir re-sends them and prints their replies).";

/// Reliable messaging over ZeroMQ.
#[derive(Debug, Parser)]
#[command(name = "bosun", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send requests, print each reply on its own line: Lazy Pirate, Majordomo with
    /// --service, Freelance with several --connect endpoints.
    #[command(after_help = EXIT_CODES)]
    Client(client::ClientArgs),
    /// An echo server: plain REP for Lazy Pirate clients (with fault switches), or
    /// Freelance with --freelance.
    #[command(after_help = EXIT_CODES)]
    Server(server::ServerArgs),
    /// A Paranoid Pirate (6/PPP) queue between clients and workers.
    #[command(after_help = EXIT_CODES)]
    Queue(queue::QueueArgs),
    /// A worker: Paranoid Pirate (6/PPP), or Majordomo (7/MDP) with --service; echo,
    /// or run a command per request.
    #[command(after_help = EXIT_CODES)]
    Worker(worker::WorkerArgs),
    /// A Majordomo (7/MDP + 8/MMI) broker: routes requests to workers by service.
    #[command(after_help = EXIT_CODES)]
    Broker(broker::BrokerArgs),
    /// Print the broker's per-service statistics (`mmi.stats`) as a table.
    #[command(after_help = EXIT_CODES)]
    Stats(stats::StatsArgs),
    /// Start a broker, two workers and a client; kill a worker and the broker; count.
    #[command(after_help = EXIT_CODES)]
    Demo(demo::DemoArgs),
    /// Dead letters of a peer's --data-dir: list, show, replay, purge.
    #[command(after_help = EXIT_CODES)]
    Dlq(dlq::DlqArgs),
    /// A reliable publisher: each line of stdin is one message (sequence numbers,
    /// retention for replay, heartbeats), then serve replays until stopped.
    #[command(name = "pub", after_help = EXIT_CODES)]
    Pub(pubsub::PubArgs),
    /// A reliable subscriber: print each message once, in order per publisher,
    /// repairing gaps by replay; durable with --data-dir.
    #[command(after_help = EXIT_CODES)]
    Sub(pubsub::SubArgs),
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Client(_) => "client",
            Command::Server(_) => "server",
            Command::Queue(_) => "queue",
            Command::Worker(_) => "worker",
            Command::Broker(_) => "broker",
            Command::Stats(_) => "stats",
            Command::Demo(_) => "demo",
            Command::Dlq(_) => "dlq",
            Command::Pub(_) => "pub",
            Command::Sub(_) => "sub",
        }
    }

    /// Whether the command has an end of its own (a batch of requests, one table, the
    /// demo), so that a signal interrupts it; the others run until told to stop.
    fn is_batch(&self) -> bool {
        match self {
            Command::Client(_) | Command::Demo(_) | Command::Dlq(_) => true,
            Command::Stats(a) => a.watch.is_none(),
            Command::Sub(a) => a.is_batch(),
            _ => false,
        }
    }
}

/// The first stopping signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The flag the signal handler triggers.
static STOP: OnceLock<Shutdown> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: atomic operations only (OnceLock::get is an atomic load, and
    // Shutdown::trigger an atomic store).
    let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    if let Some(stop) = STOP.get() {
        stop.trigger();
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP trigger `shutdown`, remembering which came first
/// (see [`signal_received`]).
fn install_signal_handlers(shutdown: &Shutdown) -> std::io::Result<()> {
    let _ = STOP.set(shutdown.clone());
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal (SIGINT, SIGTERM or SIGHUP) that asked this process to stop, if any.
pub fn signal_received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The exit code of a command stopped by `sig`: 128 + the signal number.
pub(crate) fn interrupted_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(exit::SIGINT)
}

/// Runs the parsed command line. Installs the SIGINT / SIGTERM / SIGHUP handler, so
/// call once.
pub fn run(cli: Cli) -> ExitCode {
    let shutdown = Shutdown::new();
    if let Err(e) = install_signal_handlers(&shutdown) {
        tracing::warn!(error = %e, "no signal handler; Ctrl-C will not shut down cleanly");
    }
    let name = cli.command.name();
    let batch = cli.command.is_batch();
    let result = match cli.command {
        Command::Client(a) => client::run(a, &shutdown),
        Command::Server(a) => server::run(a, &shutdown),
        Command::Queue(a) => queue::run(a, &shutdown),
        Command::Worker(a) => worker::run(a, &shutdown),
        Command::Broker(a) => broker::run(a, &shutdown),
        Command::Stats(a) => stats::run(a, &shutdown),
        Command::Demo(a) => demo::run(a, &shutdown),
        Command::Dlq(a) => dlq::run(a, &shutdown),
        Command::Pub(a) => pubsub::run_pub(a, &shutdown),
        Command::Sub(a) => pubsub::run_sub(a, &shutdown),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bosun {name}: {}", describe(&e));
            ExitCode::from(code_of(&e))
        }
    };
    match signal_received() {
        Some(sig) if batch => ExitCode::from(interrupted_code(sig)),
        _ => code,
    }
}

/// The exit code of an error (see [`exit`]).
pub fn code_of(e: &Error) -> u8 {
    match e {
        Error::Config(_) => exit::USAGE,
        Error::Client(c) => match c {
            ClientError::GaveUp { .. } => exit::UNAVAILABLE,
            ClientError::Remote { status, .. } => match status {
                crate::proto::envelope::Status::Refused => exit::TEMPFAIL,
                _ => exit::FAILED,
            },
            ClientError::TooLarge { .. } => exit::DATA,
            ClientError::Interrupted => signal_received().map_or(exit::SIGINT, interrupted_code),
            ClientError::OutboxFull { .. } | ClientError::FellBehind { .. } => exit::TEMPFAIL,
            ClientError::OutboxOfAnotherKind { .. } => exit::USAGE,
            ClientError::NotStored { .. } => exit::IO,
            _ => exit::SOFTWARE,
        },
        Error::Store(e) => store_code(e),
        Error::Transport(TransportError::Zmq { source, .. }) => match source {
            zmq::Error::EINVAL
            | zmq::Error::EPROTONOSUPPORT
            | zmq::Error::ENOCOMPATPROTO
            | zmq::Error::EADDRNOTAVAIL
            | zmq::Error::ENODEV => exit::USAGE,
            _ => exit::UNAVAILABLE,
        },
        Error::Io { .. } => exit::IO,
        _ => exit::SOFTWARE,
    }
}

/// The exit code of a store error (see [`exit`]).
pub fn store_code(e: &crate::store::StoreError) -> u8 {
    use crate::store::StoreError as S;
    match e {
        S::InUse { .. } | S::OutboxFull { .. } => exit::TEMPFAIL,
        // A --data-dir that is not a usable bosun store: a file, another program's
        // files, a damaged or unknown-version database, an entry that does not decode.
        S::NotADirectory { .. }
        | S::NotAStore { .. }
        | S::Damaged { .. }
        | S::UnsupportedVersion { .. }
        | S::Corrupt { .. } => exit::DATA,
        S::Io { .. } | S::Backend { .. } => exit::IO,
        S::OtherPeer { .. } => exit::USAGE,
    }
}

/// An error as the command line tells it: a configuration field by its flag (and the
/// environment variable it came from, when it did), a give-up with its attempts.
pub fn describe(e: &Error) -> String {
    match e {
        Error::Config(ConfigError::Invalid { field, reason }) => {
            let flag = args::flag_for(field, reason);
            format!("invalid {flag}{}: {reason}", from_env(flag))
        }
        Error::Client(ClientError::GaveUp {
            attempts, endpoint, ..
        }) => gave_up(*attempts, endpoint),
        other => other.to_string(),
    }
}

/// `no reply from ENDPOINT after N attempt(s)`.
pub fn gave_up(attempts: u32, endpoint: &str) -> String {
    let s = if attempts == 1 { "" } else { "s" };
    format!("no reply from {endpoint} after {attempts} attempt{s}")
}

/// ` (from the environment: VAR=value)` when `flag` (such as `--timeout`, or
/// `--backoff-initial/--backoff-max`: the first whose variable is set) was not on the
/// command line and its `BOSUN_*` variable is set; else nothing.
fn from_env(flag: &str) -> String {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for one in flag.split('/') {
        let on_line = argv
            .iter()
            .any(|a| a == one || a.starts_with(&format!("{one}=")));
        if on_line {
            continue;
        }
        if let Some(var) = env_var_of(one) {
            if let Some(value) = std::env::var_os(&var) {
                return format!(" (from the environment: {var}={})", value.to_string_lossy());
            }
        }
    }
    String::new()
}

/// The `BOSUN_*` variable of a long flag (`--timeout` → `BOSUN_TIMEOUT`), from the
/// command definition.
fn env_var_of(flag: &str) -> Option<String> {
    let long = flag.strip_prefix("--")?;
    let cmd = Cli::command();
    let found = std::iter::once(&cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned());
    found
}

/// The subcommand named on the command line, if any.
fn subcommand_in_args() -> Option<String> {
    let cmd = Cli::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .find(|a| names.contains(a))
}

/// Reports a command line clap could not parse and returns its exit code: help and
/// version print on stdout and exit 0; anything else is a usage error, exit 64, its
/// message prefixed `bosun SUBCOMMAND:` and naming the `BOSUN_*` variable a bad value
/// came from.
pub fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(exit::USAGE);
        }
        _ => {}
    }
    let mut text = e.render().to_string();
    if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
        let flag = arg.split([' ', '=']).next().unwrap_or_default();
        let env = from_env(flag);
        if !env.is_empty() {
            text = text.replacen(&format!("'{arg}'"), &format!("'{arg}'{env}"), 1);
        }
    }
    let prefix = match subcommand_in_args() {
        Some(sub) => format!("bosun {sub}: "),
        None => "bosun: ".to_string(),
    };
    let text = match text.strip_prefix("error: ") {
        Some(rest) => format!("{prefix}{rest}"),
        None => text,
    };
    eprint!("{text}");
    ExitCode::from(exit::USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn give_ups_count_attempts_in_words() {
        assert_eq!(
            gave_up(1, "tcp://x:1"),
            "no reply from tcp://x:1 after 1 attempt"
        );
        assert_eq!(
            gave_up(3, "tcp://x:1"),
            "no reply from tcp://x:1 after 3 attempts"
        );
    }

    #[test]
    fn errors_map_to_sysexits_codes() {
        let cfg = Error::Config(ConfigError::Invalid {
            field: "retry.timeout",
            reason: "x".into(),
        });
        assert_eq!(code_of(&cfg), exit::USAGE);
        let gave_up = Error::Client(ClientError::GaveUp {
            attempts: 1,
            endpoint: String::new(),
            body: Vec::new(),
        });
        assert_eq!(code_of(&gave_up), exit::UNAVAILABLE);
        let remote = |status| {
            Error::Client(ClientError::Remote {
                id: uuid::Uuid::nil(),
                peer: String::new(),
                status,
                message: String::new(),
            })
        };
        use crate::proto::envelope::Status;
        assert_eq!(code_of(&remote(Status::Error)), exit::FAILED);
        assert_eq!(code_of(&remote(Status::Refused)), exit::TEMPFAIL);
        let big = Error::Client(ClientError::TooLarge { len: 2, max: 1 });
        assert_eq!(code_of(&big), exit::DATA);
        let bad_endpoint = Error::Transport(TransportError::zmq("bind", "x", zmq::Error::EINVAL));
        assert_eq!(code_of(&bad_endpoint), exit::USAGE);
        let in_use = Error::Transport(TransportError::zmq("bind", "x", zmq::Error::EADDRINUSE));
        assert_eq!(code_of(&in_use), exit::UNAVAILABLE);
        let full = Error::Client(ClientError::OutboxFull {
            limit: 1,
            body: Vec::new(),
        });
        assert_eq!(code_of(&full), exit::TEMPFAIL);
        let in_use = Error::Store(crate::store::StoreError::InUse { path: "/d".into() });
        assert_eq!(code_of(&in_use), exit::TEMPFAIL);
        let garbage = Error::Store(crate::store::StoreError::NotAStore {
            path: "/d".into(),
            reason: String::new(),
        });
        assert_eq!(code_of(&garbage), exit::DATA);
        assert_eq!(interrupted_code(libc::SIGINT), exit::SIGINT);
        assert_eq!(interrupted_code(libc::SIGTERM), exit::SIGTERM);
        assert_eq!(interrupted_code(libc::SIGHUP), exit::SIGHUP);
    }

    #[test]
    fn flags_name_their_environment_variable() {
        assert_eq!(env_var_of("--timeout").as_deref(), Some("BOSUN_TIMEOUT"));
        assert_eq!(env_var_of("--service").as_deref(), Some("BOSUN_SERVICE"));
        assert_eq!(env_var_of("--nonsense"), None);
    }
}
