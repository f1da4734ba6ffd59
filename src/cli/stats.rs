//! `bosun stats`: the broker's `mmi.stats` as a table.

use std::process::ExitCode;

use clap::Args;

use super::RetryArgs;
use crate::error::Error;
use crate::io::mdclient::MajordomoClient;
use crate::io::Shutdown;

/// Options of `bosun stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The broker.
    #[arg(long, env = "BOSUN_CONNECT", default_value = "tcp://127.0.0.1:5555")]
    pub connect: String,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Retry settings.
    #[command(flatten)]
    pub retry: RetryArgs,
}

const COLUMNS: [(&str, &str); 11] = [
    ("service", "SERVICE"),
    ("idle", "IDLE"),
    ("busy", "BUSY"),
    ("capacity", "CAP"),
    ("queued", "L"),
    ("l_avg", "L_AVG"),
    ("lambda", "λ/s"),
    ("mu", "μ/s"),
    ("rho", "ρ"),
    ("wait_ms", "W_MS"),
    ("service_ms", "S_MS"),
];

/// Prints one row per service, and `λ·W` beside the time-averaged L for Little's law.
pub fn run(args: StatsArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    let mut client = MajordomoClient::new(&ctx, &args.connect, args.retry.retry())?
        .with_shutdown(shutdown.clone());
    let body = args.service.unwrap_or_default().into_bytes();
    let reply = client.request("mmi.stats", body)?;
    match render(&reply) {
        Ok(table) => {
            print!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("bosun stats: {}: {why}", args.connect);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Renders an `mmi.stats` reply body (`200` then one `key=value ...` line per service);
/// any other answer is an error that says what came back.
pub fn render(reply: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(reply);
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default();
    let mut out = String::new();
    if status != "200" {
        let shown: String = status.chars().take(40).collect();
        return Err(format!(
            "answered mmi.stats with {shown:?}, not 200: not a bosun broker (a plain 7/MDP broker answers 501)"
        ));
    }
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.1).collect();
    out.push_str(&format!(
        "{:<16}{}  {:>8}\n",
        header[0],
        right(&header[1..]),
        "λ·W"
    ));
    for line in lines {
        let fields: Vec<(&str, &str)> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |k: &str| fields.iter().find(|f| f.0 == k).map_or("-", |f| f.1);
        let cells: Vec<&str> = COLUMNS[1..].iter().map(|c| get(c.0)).collect();
        let num = |k: &str| get(k).parse::<f64>().unwrap_or(0.0);
        let little = num("lambda") * num("wait_ms") / 1e3;
        out.push_str(&format!(
            "{:<16}{}  {:>8.3}\n",
            get("service"),
            right(&cells),
            little
        ));
    }
    Ok(out)
}

fn right(cells: &[&str]) -> String {
    cells.iter().map(|c| format!("{c:>9}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_table_with_littles_law() {
        let reply = b"200\nservice=echo idle=1 busy=2 capacity=3 queued=3 l_avg=2.000 lambda=10.000 mu=10.000 rho=1.000 wait_ms=200.000 service_ms=5.000";
        let table = render(reply).unwrap();
        assert!(table.starts_with("SERVICE"), "{table}");
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("echo"), "{row}");
        assert!(row.trim_end().ends_with("2.000"), "{row}");
        assert!(render(b"501").unwrap_err().contains("\"501\""));
        assert!(render(b"").unwrap_err().contains("not a bosun broker"));
    }
}
