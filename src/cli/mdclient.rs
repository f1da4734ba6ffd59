//! `bosun client --service NAME`: the Majordomo side of `bosun client`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::client::{
    attempts_since, log_recovery, probe, request_lines, resend_pending, ClientArgs, Output, Tag,
    WithOutbox,
};
use crate::error::{ClientError, Error};
use crate::io::mdclient::{AsyncMajordomoClient, MajordomoClient, Outcome};
use crate::io::outbox::OutboxConfig;
use crate::io::{Shutdown, SHUTDOWN_CHECK};
use crate::store::Store;

/// Sends each request to `service`, one at a time (Lazy Pirate reliability) or, with
/// `--in-flight N`, up to N at once; prints replies in request order.
pub fn run(
    ctx: &zmq::Context,
    args: &ClientArgs,
    service: &str,
    store: &Option<(Store, OutboxConfig)>,
    requests: mpsc::Receiver<Vec<u8>>,
    out: &mut Output,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    if args.in_flight > 1 {
        return run_async(ctx, args, service, store, requests, out, shutdown);
    }
    let retry = args.retry.retry();
    let mut client = MajordomoClient::builder(&args.connect)
        .context(ctx)
        .retry(retry)
        .shutdown(shutdown)
        .maybe_outbox(store)
        .connect()?;
    let pending = client.pending()?;
    log_recovery(client.outbox(), pending.len());
    let (mut sent, mut answered, go_on) = resend_pending(
        pending,
        out,
        |record| {
            let before = client.retries();
            let result = client.resend(record).map(|f| f.concat());
            let attempt = attempts_since(before, client.retries());
            (result, Some(attempt.saturating_add(record.attempts)))
        },
        || probe(ctx, &args.connect, Some(service), &retry, shutdown),
    )?;
    if go_on {
        let (s, a) = request_lines(
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
        sent += s;
        answered += a;
    }
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
    store: &Option<(Store, OutboxConfig)>,
    requests: mpsc::Receiver<Vec<u8>>,
    out: &mut Output,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    let retry = args.retry.retry();
    let mut client = AsyncMajordomoClient::builder(&args.connect)
        .context(ctx)
        .retry(retry)
        .maybe_outbox(store)
        .connect()?;
    let peer = format!("{} (service {service})", args.connect);
    // Request id -> (request number, when sent); finished requests by number, printed
    // in request order as the gaps fill. Requests recovered from the outbox come first,
    // all at once, then the input lines.
    let mut order: HashMap<uuid::Uuid, (u64, Instant)> = HashMap::new();
    let mut done: BTreeMap<u64, Done> = BTreeMap::new();
    let recovered = if store.is_some() {
        client.recover()?
    } else {
        Vec::new()
    };
    let first_line = recovered.len() as u64;
    let tag = |n: u64| match recovered.get(n as usize) {
        Some(id) => Tag::Recovered(*id),
        None => Tag::Line(n - first_line + 1),
    };
    for (n, id) in recovered.iter().enumerate() {
        order.insert(*id, (n as u64, crate::io::now()));
    }
    let (mut sent, mut next_print, mut answered, mut input_open) = (first_line, 0u64, 0u64, true);
    let mut gave_up = false;
    // A line the outbox had no room for, sent again once replies have made room.
    let mut held: Option<Vec<u8>> = None;
    while (input_open || held.is_some() || client.outstanding() > 0)
        && !gave_up
        && !shutdown.is_triggered()
        && !out.is_closed()
    {
        while (input_open || held.is_some()) && client.outstanding() < args.in_flight {
            let wait = if client.outstanding() == 0 {
                SHUTDOWN_CHECK
            } else {
                Duration::ZERO
            };
            let next = match held.take() {
                Some(line) => Ok(line),
                None => requests.recv_timeout(wait),
            };
            match next {
                Ok(line) => match client.send(service, line) {
                    Ok(id) => {
                        order.insert(id, (sent, crate::io::now()));
                        sent += 1;
                    }
                    Err(Error::Client(ClientError::OutboxFull { body, .. }))
                        if client.outstanding() > 0 =>
                    {
                        // Backpressure: wait for a reply to make room.
                        held = Some(body);
                        break;
                    }
                    Err(
                        e @ Error::Client(
                            ClientError::TooLarge { .. }
                            | ClientError::OutboxFull { .. }
                            | ClientError::NotStored { .. },
                        ),
                    ) => {
                        let stop = !matches!(e, Error::Client(ClientError::TooLarge { .. }));
                        done.insert(sent, Done::Failed(e, None, Duration::ZERO, None));
                        sent += 1;
                        if stop {
                            input_open = false;
                            gave_up = true;
                            break;
                        }
                    }
                    Err(e) => return Err(e),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => input_open = false,
            }
        }
        if gave_up {
            break;
        }
        let outcome = client.recv(SHUTDOWN_CHECK)?;
        let id = match &outcome {
            Some(
                Outcome::Reply { id, .. }
                | Outcome::Failed { id, .. }
                | Outcome::GaveUp { id, .. }
                | Outcome::Unsent { id, .. },
            ) => *id,
            _ => uuid::Uuid::nil(),
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
                Outcome::Unsent { message, body, .. } => {
                    // The outbox cannot store: send nothing more.
                    gave_up = true;
                    let e = ClientError::NotStored {
                        reason: message,
                        body,
                    };
                    Done::Failed(e.into(), None, rtt, None)
                }
            };
            done.insert(n, finished);
        }
        while let Some(finished) = done.remove(&next_print) {
            answered += emit(out, tag(next_print), finished)?;
            next_print += 1;
        }
    }
    // Stopped early: what arrived after a gap is still printed, in order, and every
    // request that got no outcome is named.
    let mut unanswered: Vec<u64> = order.into_values().map(|(n, _)| n).collect();
    unanswered.sort_unstable();
    for (n, finished) in done {
        answered += emit(out, tag(n), finished)?;
    }
    for n in unanswered {
        out.unanswered(tag(n))?;
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

/// Writes one finished request; 1 when it was a reply.
fn emit(out: &mut Output, tag: Tag, finished: Done) -> Result<u64, Error> {
    match finished {
        Done::Reply(body, attempt, rtt) => {
            out.reply(tag, Some(attempt), rtt, &body)?;
            Ok(1)
        }
        Done::Failed(e, attempt, rtt, why) => {
            let rtt = (!rtt.is_zero()).then_some(rtt);
            out.failure(tag, attempt, rtt, &e, why.as_deref())?;
            Ok(0)
        }
    }
}
