//! The `bosun` binary: parses the command line, sets up logging, runs.

use std::process::ExitCode;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A command line clap cannot parse is a usage error: exit 64 (help and version: 0).
    let cli = match bosun::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return bosun::cli::usage_error(&e),
    };
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    bosun::cli::run(cli)
}
