//! Request handlers: one type for every worker and server.
//!
//! A [`Handler`] sees the whole [`Request`] (id, attempt, service, headers, payload
//! frames) and returns the reply's payload frames or a [`HandlerError`]. An error, a
//! panic, or an `exec` command that fails reaches a bosun client as a typed remote error
//! with its message ([`crate::error::ClientError::Remote`]); the worker goes on serving.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub use crate::proto::envelope::{HandlerError, Reply, Request};
use crate::proto::frames::Frames;

/// Answers one request. Shared by every thread of a worker's pool, so `Fn + Sync`: a
/// handler with state keeps it behind a `Mutex` or atomics.
pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;

/// A handler from a function of the request.
pub fn from_fn(f: impl Fn(Request) -> Reply + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

/// A handler from a function of the request's payload joined into bytes, whose
/// result is the one-frame reply (for handlers that think in bytes).
pub fn bytes(f: impl Fn(Vec<u8>) -> Vec<u8> + Send + Sync + 'static) -> Handler {
    Arc::new(move |req: Request| Ok(vec![f(req.body())]))
}

/// Replies with the request's payload frames unchanged.
pub fn echo() -> Handler {
    Arc::new(|req: Request| Ok(req.payload))
}

/// Runs `sh -c cmd` per request with the payload (frames joined) on stdin; the reply is
/// its stdout, less one trailing newline (so `echo`-style commands give one reply per
/// line). A command that cannot start, exits non-zero or is killed is a failed request:
/// its client gets the reason (and the command's stderr goes to the worker's stderr).
pub fn exec(cmd: String) -> Handler {
    Arc::new(move |req: Request| run_command(&cmd, &req.body()).map(|out| vec![out]))
}

/// Puts `prefix` in front of the first frame of every successful reply.
pub fn prefix(prefix: Vec<u8>, inner: Handler) -> Handler {
    Arc::new(move |req: Request| {
        let mut reply = inner(req)?;
        match reply.first_mut() {
            Some(first) => first.splice(0..0, prefix.iter().copied()).for_each(drop),
            None => reply.push(prefix.clone()),
        }
        Ok(reply)
    })
}

/// Wraps `inner` so that every call first waits `delay` (simulated work, for demos and
/// tests of slow handlers).
pub fn slow(delay: Duration, inner: Handler) -> Handler {
    Arc::new(move |req: Request| {
        #[allow(clippy::disallowed_methods)] // simulated work, not synchronisation
        std::thread::sleep(delay);
        inner(req)
    })
}

/// Calls `handler`, turning a panic into a [`HandlerError`] that names it, so that one
/// bad request neither kills the worker nor leaves its client without an answer. A
/// failed request is logged (WARN) with its id.
pub fn call(handler: &Handler, request: Request) -> Reply {
    let id = request.id();
    let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(request)))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_string());
            Err(HandlerError::new(format!("handler panicked: {why}")))
        });
    if let Err(e) = &reply {
        tracing::warn!(?id, error = %e, "request failed; its client is told");
    }
    reply
}

/// Runs `sh -c cmd` with `input` on stdin and returns its stdout (see [`exec`]). Stdin
/// is written from a thread of its own while stdout is read, so a command that writes
/// more than a pipe holds before it has read all its input cannot deadlock.
pub fn run_command(cmd: &str, input: &[u8]) -> Result<Vec<u8>, HandlerError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| HandlerError::new(format!("command `{cmd}` did not start: {e}")))?;
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        std::thread::spawn(move || {
            // A command that does not read its stdin closes the pipe early: not an error.
            let _ = stdin.write_all(&input);
        })
    });
    let mut out = Vec::new();
    let read = match child.stdout.take() {
        Some(mut stdout) => stdout.read_to_end(&mut out).map(|_| ()),
        None => Ok(()),
    };
    let status = child.wait();
    if let Some(w) = writer {
        let _ = w.join();
    }
    read.map_err(|e| HandlerError::new(format!("command `{cmd}`: reading its output: {e}")))?;
    let status = status.map_err(|e| HandlerError::new(format!("command `{cmd}` was lost: {e}")))?;
    if !status.success() {
        return Err(HandlerError::new(format!(
            "command `{cmd}` failed: {status}"
        )));
    }
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}

/// The payload frames of a request with no metadata (for tests and examples).
pub fn plain(payload: Frames) -> Request {
    Request {
        meta: None,
        service: None,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &[u8]) -> Request {
        plain(vec![body.to_vec()])
    }

    #[test]
    fn a_panicking_handler_is_a_failed_request_not_a_dead_worker() {
        let h = from_fn(|_| panic!("boom"));
        let err = call(&h, one(b"x")).unwrap_err();
        assert_eq!(err.message, "handler panicked: boom");
        assert_eq!(call(&echo(), one(b"x")), Ok(vec![b"x".to_vec()]));
    }

    #[test]
    fn echo_keeps_frames_and_prefix_touches_the_first() {
        let req = plain(vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(echo()(req.clone()), Ok(vec![b"a".to_vec(), b"b".to_vec()]));
        assert_eq!(
            prefix(b"w1:".to_vec(), echo())(req),
            Ok(vec![b"w1:a".to_vec(), b"b".to_vec()])
        );
    }

    #[test]
    fn exec_pipes_payload_through_a_command_and_fails_loudly() {
        let h = exec("tr a-z A-Z".into());
        assert_eq!(h(one(b"shout")), Ok(vec![b"SHOUT".to_vec()]));
        assert_eq!(
            exec("cat; echo".into())(one(b"line")),
            Ok(vec![b"line".to_vec()])
        );
        let err = exec("exit 3".into())(one(b"x")).unwrap_err();
        assert!(err.message.contains("exit status: 3"), "{err}");
        let err = exec("kill -9 $$".into())(one(b"x")).unwrap_err();
        assert!(err.message.contains("signal"), "{err}");
    }

    #[test]
    fn exec_does_not_deadlock_on_a_body_larger_than_a_pipe() {
        let big = vec![b'y'; 1 << 20];
        let out = exec("tr a-z A-Z".into())(one(&big)).unwrap();
        assert_eq!(out, vec![vec![b'Y'; 1 << 20]]);
    }
}
