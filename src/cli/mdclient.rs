//! `bosun client --service NAME`: the Majordomo side of `bosun client`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::client::{attempts_since, probe, request_lines, ClientArgs, Output};
use crate::error::{ClientError, Error};
use crate::io::mdclient::{AsyncMajordomoClient, MajordomoClient, Outcome};
use crate::io::{Shutdown, SHUTDOWN_CHECK};

/// Sends each request to `service`, one at a time (Lazy Pirate reliability) or, with
/// `--in-flight N`, up to N at once; prints replies in request order.
pub fn run(
    ctx: &zmq::Context,
    args: &ClientArgs,
    service: &str,
    requests: mpsc::Receiver<Vec<u8>>,
    out: &mut Output,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    if args.in_flight > 1 {
        return run_async(ctx, args, service, requests, out, shutdown);
    }
    let retry = args.retry.retry();
    let mut client = MajordomoClient::builder(&args.connect)
        .context(ctx)
        .retry(retry)
        .shutdown(shutdown)
        .connect()?;
    let (sent, answered) = request_lines(
        &requests,
        shutdown,
        out,
        |body| {
            let before = client.retries();
            let result = client.request(service, body);
            (result, Some(attempts_since(before, client.retries())))
        },
        || probe(ctx, &args.connect, Some(service), &retry, shutdown),
    )?;
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {answered}, retries {}, discarded 0",
            client.retries()
        );
    }
    Ok(out.code())
}

/// One finished request, waiting for its turn to be printed.
enum Done {
    Reply(Vec<u8>, u32, Duration),
    Failed(Error, Option<u32>, Duration, Option<String>),
}

fn run_async(
    ctx: &zmq::Context,
    args: &ClientArgs,
    service: &str,
    requests: mpsc::Receiver<Vec<u8>>,
    out: &mut Output,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    let retry = args.retry.retry();
    let mut client = AsyncMajordomoClient::builder(&args.connect)
        .context(ctx)
        .retry(retry)
        .connect()?;
    let peer = format!("{} (service {service})", args.connect);
    // Request id -> (request number, when sent); finished requests by number, printed
    // in request order as the gaps fill.
    let mut order: HashMap<uuid::Uuid, (u64, Instant)> = HashMap::new();
    let mut done: BTreeMap<u64, Done> = BTreeMap::new();
    let (mut sent, mut next_print, mut answered, mut input_open) = (0u64, 0u64, 0u64, true);
    let mut gave_up = false;
    while (input_open || client.outstanding() > 0)
        && !gave_up
        && !shutdown.is_triggered()
        && !out.is_closed()
    {
        while input_open && client.outstanding() < args.in_flight {
            let wait = if client.outstanding() == 0 {
                SHUTDOWN_CHECK
            } else {
                Duration::ZERO
            };
            match requests.recv_timeout(wait) {
                Ok(line) => match client.send(service, line) {
                    Ok(id) => {
                        order.insert(id, (sent, crate::io::now()));
                        sent += 1;
                    }
                    Err(e @ Error::Client(ClientError::TooLarge { .. })) => {
                        done.insert(sent, Done::Failed(e, None, Duration::ZERO, None));
                        sent += 1;
                    }
                    Err(e) => return Err(e),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => input_open = false,
            }
        }
        let outcome = client.recv(SHUTDOWN_CHECK)?;
        let id = match &outcome {
            Some(
                Outcome::Reply { id, .. } | Outcome::Failed { id, .. } | Outcome::GaveUp { id, .. },
            ) => *id,
            None => uuid::Uuid::nil(),
        };
        if let (Some(outcome), Some((n, at))) = (outcome, order.remove(&id)) {
            let rtt = crate::io::now() - at;
            let finished = match outcome {
                Outcome::Reply { body, attempt, .. } => Done::Reply(body, attempt, rtt),
                Outcome::Failed {
                    id,
                    status,
                    message,
                } => {
                    let e = ClientError::Remote {
                        id,
                        peer: peer.clone(),
                        status,
                        message,
                    };
                    Done::Failed(e.into(), None, rtt, None)
                }
                Outcome::GaveUp { attempts, body, .. } => {
                    // The broker or the service is gone: send nothing more.
                    gave_up = true;
                    let why = probe(ctx, &args.connect, Some(service), &retry, shutdown);
                    let e = ClientError::GaveUp {
                        attempts,
                        endpoint: peer.clone(),
                        body,
                    };
                    Done::Failed(e.into(), Some(attempts), rtt, why)
                }
            };
            done.insert(n, finished);
        }
        while let Some(finished) = done.remove(&next_print) {
            next_print += 1;
            answered += emit(out, next_print, finished)?;
        }
    }
    // Stopped early: what arrived after a gap is still printed, in order, and every
    // request that got no outcome is named.
    let mut unanswered: Vec<u64> = order.into_values().map(|(n, _)| n).collect();
    unanswered.sort_unstable();
    for (n, finished) in done {
        answered += emit(out, n + 1, finished)?;
    }
    for n in unanswered {
        out.unanswered(n + 1)?;
    }
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {answered}, retries {}, discarded {}",
            client.retries(),
            client.duplicates()
        );
    }
    Ok(out.code())
}

/// Writes one finished request (input line `line`); 1 when it was a reply.
fn emit(out: &mut Output, line: u64, finished: Done) -> Result<u64, Error> {
    match finished {
        Done::Reply(body, attempt, rtt) => {
            out.reply(line, Some(attempt), rtt, &body)?;
            Ok(1)
        }
        Done::Failed(e, attempt, rtt, why) => {
            let rtt = (!rtt.is_zero()).then_some(rtt);
            out.failure(line, attempt, rtt, &e, why.as_deref())?;
            Ok(0)
        }
    }
}
