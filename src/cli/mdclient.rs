//! `bosun client --service NAME`: the Majordomo side of `bosun client`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::mpsc;

use super::client::{print_reply, report_failure, request_lines, ClientArgs};
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
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    if args.in_flight > 1 {
        return run_async(ctx, args, service, requests, shutdown);
    }
    let mut client = MajordomoClient::new(ctx, &args.connect, args.retry.retry())?
        .with_shutdown(shutdown.clone());
    let (code, sent, answered) =
        request_lines(&requests, shutdown, |body| client.request(service, body))?;
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {answered}, retries {}, discarded 0",
            client.retries()
        );
    }
    Ok(code)
}

fn run_async(
    ctx: &zmq::Context,
    args: &ClientArgs,
    service: &str,
    requests: mpsc::Receiver<Vec<u8>>,
    shutdown: &Shutdown,
) -> Result<ExitCode, Error> {
    let mut client = AsyncMajordomoClient::new(ctx, &args.connect, args.retry.retry())?;
    // Request number -> reply (or the failure the worker reported), printed in request
    // order as the gaps fill.
    let mut order = HashMap::new();
    let mut done: BTreeMap<u64, Result<Vec<u8>, String>> = BTreeMap::new();
    let mut any_failed = false;
    let (mut sent, mut next_print, mut answered, mut input_open) = (0u64, 0u64, 0u64, true);
    let mut failure = None;
    while (input_open || client.outstanding() > 0) && failure.is_none() && !shutdown.is_triggered()
    {
        while input_open && client.outstanding() < args.in_flight {
            let wait = if client.outstanding() == 0 {
                SHUTDOWN_CHECK
            } else {
                std::time::Duration::ZERO
            };
            match requests.recv_timeout(wait) {
                Ok(line) => {
                    let id = client.send(service, line)?;
                    order.insert(id, sent);
                    sent += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => input_open = false,
            }
        }
        match client.recv(SHUTDOWN_CHECK)? {
            Some(Outcome::Reply { id, body }) => {
                if let Some(n) = order.remove(&id) {
                    done.insert(n, Ok(body));
                }
            }
            Some(Outcome::Failed { id, message }) => {
                if let Some(n) = order.remove(&id) {
                    let e = ClientError::Remote {
                        id,
                        peer: format!("{} (service {service})", args.connect),
                        status: crate::proto::envelope::Status::Error,
                        message,
                    };
                    done.insert(n, Err(e.to_string()));
                }
            }
            Some(Outcome::GaveUp { id, attempts, .. }) => {
                let e = ClientError::GaveUp {
                    attempts,
                    endpoint: format!("{} (service {service})", args.connect),
                    body: Vec::new(),
                };
                if let Some(n) = order.remove(&id) {
                    done.insert(n, Err(e.to_string()));
                }
                // The broker or the service is gone: send nothing more.
                failure = Some(e);
            }
            None => {}
        }
        while let Some(result) = done.remove(&next_print) {
            next_print += 1;
            match result {
                Ok(body) => {
                    print_reply(&body)?;
                    answered += 1;
                }
                Err(why) => {
                    report_failure(next_print, &why);
                    any_failed = true;
                }
            }
        }
    }
    // Stopped early: what arrived after a gap is still printed, in order, and every
    // request that got no outcome is named.
    let mut unanswered: Vec<u64> = order.into_values().collect();
    unanswered.sort_unstable();
    for (n, result) in done {
        match result {
            Ok(body) => {
                print_reply(&body)?;
                answered += 1;
            }
            Err(why) => report_failure(n + 1, &why),
        }
    }
    for n in unanswered {
        report_failure(n + 1, &"no answer before the client stopped");
    }
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {answered}, retries {}, discarded {}",
            client.retries(),
            client.duplicates()
        );
    }
    if failure.is_some() || any_failed {
        Ok(ExitCode::FAILURE)
    } else {
        Ok(ExitCode::SUCCESS)
    }
}
