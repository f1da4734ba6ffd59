//! `bosun stats`: the broker's `mmi.stats` as a table (or JSON), once or every
//! `--watch` interval.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{exit, json, parse_duration, RetryArgs};
use crate::error::{ClientError, Error};
use crate::io::mdclient::MajordomoClient;
use crate::io::{Shutdown, SHUTDOWN_CHECK};

/// Options of `bosun stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The broker.
    #[arg(long, env = "BOSUN_CONNECT", default_value = "tcp://127.0.0.1:5555")]
    pub connect: String,
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Print one JSON object per report instead of a table: `broker` and `services`, an
    /// array of objects with the table's fields (`service`, `idle`, `busy`,
    /// `capacity`, `queued`, `l_avg`, `lambda`, `mu`, `rho`, `wait_ms`, `service_ms`,
    /// and `lambda_w`, Little's λ·W).
    #[arg(long)]
    pub json: bool,
    /// Ask again every DURATION until Ctrl-C (which then exits 0); a broker that stops
    /// answering is reported and asked again.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub watch: Option<Duration>,
    /// Retry settings.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Parses `--watch`: a duration of at least 1 ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
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

/// Prints one row per service, and `λ·W` beside the time-averaged L for Little's law;
/// with `--watch`, again every interval until Ctrl-C.
pub fn run(args: StatsArgs, shutdown: &Shutdown) -> Result<ExitCode, Error> {
    let ctx = zmq::Context::new();
    let mut client = MajordomoClient::builder(&args.connect)
        .context(&ctx)
        .retry(args.retry.retry())
        .shutdown(shutdown)
        .connect()?;
    let body = args.service.clone().unwrap_or_default().into_bytes();
    let clear = args.watch.is_some() && !args.json && std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        match client.request("mmi.stats", body.clone()) {
            Ok(reply) => {
                let rows = match parse(&reply) {
                    Ok(rows) => rows,
                    Err(why) => {
                        eprintln!("bosun stats: {}: {why}", args.connect);
                        return Ok(ExitCode::from(exit::UNAVAILABLE));
                    }
                };
                let text = if args.json {
                    to_json(&args.connect, &rows) + "\n"
                } else if clear {
                    format!("\x1b[H\x1b[2J{}", table(&rows))
                } else if first {
                    table(&rows)
                } else {
                    format!("\n{}", table(&rows))
                };
                first = false;
                if !print(&text)? {
                    // The reader closed stdout (`bosun stats --watch | head`): done.
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Err(Error::Client(ClientError::Interrupted)) => break,
            Err(e @ Error::Client(ClientError::GaveUp { .. })) if args.watch.is_some() => {
                eprintln!(
                    "bosun stats: {}; asking again in {}",
                    super::describe(&e),
                    humantime::format_duration(args.watch.unwrap_or_default())
                );
            }
            Err(e) => return Err(e),
        }
        let Some(every) = args.watch else { break };
        if !pause(every, shutdown) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits `d`, looking at `shutdown` every [`SHUTDOWN_CHECK`]; false when it was
/// triggered.
fn pause(d: Duration, shutdown: &Shutdown) -> bool {
    let until = crate::io::now() + d;
    loop {
        if shutdown.is_triggered() {
            return false;
        }
        let left = until.saturating_duration_since(crate::io::now());
        if left.is_zero() {
            return true;
        }
        let ms = left.min(SHUTDOWN_CHECK).as_millis().max(1);
        let _ = crate::io::poll(&mut [], i64::try_from(ms).unwrap_or(100));
    }
}

/// Writes `text` to stdout; false when the reader has closed it.
fn print(text: &str) -> Result<bool, Error> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::io("write to stdout", e)),
    }
}

/// One service of an `mmi.stats` reply: its fields in the reply's order.
type Row = Vec<(String, String)>;

/// Parses an `mmi.stats` reply body (`200` then one `key=value ...` line per service);
/// any other answer is an error that says what came back. The service name is
/// everything between `service=` and ` idle=`, so it may hold spaces.
pub fn parse(reply: &[u8]) -> Result<Vec<Row>, String> {
    let text = String::from_utf8_lossy(reply);
    let mut lines = text.lines();
    let status = lines.next().unwrap_or_default();
    if status != "200" {
        let shown: String = status.chars().take(40).collect();
        return Err(format!(
            "answered mmi.stats with {shown:?}, not 200: not a bosun broker (a plain 7/MDP broker answers 501)"
        ));
    }
    Ok(lines.map(parse_line).collect())
}

fn parse_line(line: &str) -> Row {
    let mut row = Vec::new();
    let mut rest = line;
    if let Some(after) = line.strip_prefix("service=") {
        let (name, tail) = after
            .split_once(" idle=")
            .map_or((after, ""), |(n, t)| (n, t));
        row.push(("service".to_string(), name.to_string()));
        rest = if tail.is_empty() {
            ""
        } else {
            &line[line.len() - tail.len() - "idle=".len()..]
        };
    }
    for kv in rest.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            row.push((k.to_string(), v.to_string()));
        }
    }
    row
}

fn get<'a>(row: &'a Row, key: &str) -> &'a str {
    row.iter()
        .find(|f| f.0 == key)
        .map_or("-", |f| f.1.as_str())
}

/// Little's law: λ·W, to compare with the time-averaged queue length L.
fn little(row: &Row) -> f64 {
    let num = |k: &str| get(row, k).parse::<f64>().unwrap_or(0.0);
    num("lambda") * num("wait_ms") / 1e3
}

/// The services as a table.
pub fn table(rows: &[Row]) -> String {
    let header: Vec<&str> = COLUMNS.iter().map(|c| c.1).collect();
    let mut out = format!("{:<16}{}  {:>8}\n", header[0], right(&header[1..]), "λ·W");
    for row in rows {
        let cells: Vec<&str> = COLUMNS[1..].iter().map(|c| get(row, c.0)).collect();
        // "-0.000" is a rounding artefact of a tiny negative: show it as 0.
        let cells: Vec<&str> = cells
            .into_iter()
            .map(|c| if c == "-0.000" { "0.000" } else { c })
            .collect();
        out.push_str(&format!(
            "{:<16}{}  {:>8.3}\n",
            get(row, "service"),
            right(&cells),
            little(row) + 0.0
        ));
    }
    out
}

/// The services as one JSON object: numbers as numbers, the service name as a string.
pub fn to_json(broker: &str, rows: &[Row]) -> String {
    let services: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut o = json::Object::new();
            for (k, v) in row {
                o = match v.parse::<f64>() {
                    Ok(n) if k != "service" && n.is_finite() => o.num(k, n + 0.0),
                    _ => o.str(k, v),
                };
            }
            o.num("lambda_w", (little(row) * 1e3).round() / 1e3 + 0.0)
                .finish()
        })
        .collect();
    json::Object::new()
        .str("broker", broker)
        .raw("services", &format!("[{}]", services.join(",")))
        .finish()
}

fn right(cells: &[&str]) -> String {
    cells.iter().map(|c| format!("{c:>9}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &[u8] = b"200\nservice=echo idle=1 busy=2 capacity=3 queued=3 l_avg=-0.000 lambda=10.000 mu=10.000 rho=1.000 wait_ms=200.000 service_ms=5.000";

    #[test]
    fn renders_a_table_with_littles_law() {
        let table = table(&parse(REPLY).unwrap());
        assert!(table.starts_with("SERVICE"), "{table}");
        let row = table.lines().nth(1).unwrap();
        assert!(row.starts_with("echo"), "{row}");
        assert!(row.trim_end().ends_with("2.000"), "{row}");
        assert!(!row.contains("-0.000"), "{row}");
        assert!(parse(b"501").unwrap_err().contains("\"501\""));
        assert!(parse(b"").unwrap_err().contains("not a bosun broker"));
    }

    #[test]
    fn a_service_name_may_hold_spaces() {
        let rows = parse(b"200\nservice=my echo idle=0 busy=1").unwrap();
        assert_eq!(get(&rows[0], "service"), "my echo");
        assert_eq!(get(&rows[0], "busy"), "1");
    }

    #[test]
    fn json_has_numbers_and_the_name() {
        let text = to_json("tcp://b:1", &parse(REPLY).unwrap());
        assert!(
            text.starts_with(r#"{"broker":"tcp://b:1","services":[{"service":"echo","idle":1,"#),
            "{text}"
        );
        assert!(text.contains(r#""l_avg":0,"#), "{text}");
        assert!(text.ends_with(r#""lambda_w":2}]}"#), "{text}");
    }
}
