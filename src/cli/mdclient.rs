//! `bosun client --service NAME`: the Majordomo side of `bosun client`.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::mpsc;

use super::client::{print_reply, request_lines, ClientArgs};
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
    // Request number -> reply, printed in request order as the gaps fill.
    let mut order = HashMap::new();
    let mut done: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let (mut sent, mut next_print, mut input_open) = (0u64, 0u64, true);
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
                    done.insert(n, body);
                }
            }
            Some(Outcome::Failed { id, message }) => {
                failure = Some(ClientError::Remote {
                    id,
                    peer: format!("{} (service {service})", args.connect),
                    status: crate::proto::envelope::Status::Error,
                    message,
                });
            }
            Some(Outcome::GaveUp { attempts, .. }) => {
                failure = Some(ClientError::GaveUp {
                    attempts,
                    endpoint: format!("{} (service {service})", args.connect),
                    body: Vec::new(),
                });
            }
            None => {}
        }
        while let Some(body) = done.remove(&next_print) {
            print_reply(&body)?;
            next_print += 1;
        }
    }
    if args.summary {
        eprintln!(
            "client: sent {sent}, answered {next_print}, retries {}, discarded {}",
            client.retries(),
            client.duplicates()
        );
    }
    match failure {
        Some(e) => {
            eprintln!("bosun client: {e}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}
