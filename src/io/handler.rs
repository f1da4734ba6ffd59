//! Request handlers for the worker and server drivers, and the envelope handling
//! around them.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::proto::envelope::Envelope;
use crate::proto::frames::Frames;

/// Turns a request body into a reply body.
pub type Handler = Box<dyn FnMut(Vec<u8>) -> Vec<u8> + Send>;

/// Replies with the request body unchanged.
pub fn echo() -> Handler {
    Box::new(|body| body)
}

/// Runs `sh -c cmd` per request with the body on stdin; the reply is its stdout, less
/// one trailing newline (so `echo`-style commands give one reply per line).
/// A command that cannot start, or exits non-zero, is logged; its stdout (possibly
/// empty) is still the reply, so the client is never left waiting.
pub fn exec(cmd: String) -> Handler {
    Box::new(move |body| run_command(&cmd, &body))
}

/// Wraps `inner` so that every call first waits `delay` (simulated work, for demos
/// and tests of slow handlers).
pub fn slow(delay: Duration, mut inner: Handler) -> Handler {
    Box::new(move |body| {
        #[allow(clippy::disallowed_methods)] // simulated work, not synchronisation
        std::thread::sleep(delay);
        inner(body)
    })
}

/// Runs `sh -c cmd` with `body` on stdin and returns its stdout (see [`exec`]).
pub fn run_command(cmd: &str, body: &[u8]) -> Vec<u8> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(cmd, error = %e, "handler command failed to start");
            return Vec::new();
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes the pipe early: not an error.
        let _ = stdin.write_all(body);
    }
    match child.wait_with_output() {
        Ok(out) => {
            if !out.status.success() {
                tracing::warn!(cmd, status = %out.status, "handler command failed");
            }
            let mut reply = out.stdout;
            if reply.last() == Some(&b'\n') {
                reply.pop();
            }
            reply
        }
        Err(e) => {
            tracing::error!(cmd, error = %e, "handler command lost");
            Vec::new()
        }
    }
}

/// [`answer`], with a panic of the handler caught and turned into its message, so that a
/// handler thread can report it instead of dying silently.
pub fn answer_or_panic(handler: &mut Handler, body: Frames) -> Result<Frames, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(handler, body))).map_err(
        |panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string panic".to_string())
        },
    )
}

/// Answers one request with `handler`.
///
/// A request of one frame holding a bosun [`Envelope`] is answered with an envelope of
/// the same id and attempt. Anything else comes from a foreign peer: the handler gets
/// its frames joined, and the reply is one plain frame.
pub fn answer(handler: &mut Handler, body: Frames) -> Frames {
    if let [frame] = body.as_slice() {
        if Envelope::looks_like(frame) {
            match Envelope::decode(frame) {
                Ok(mut request) => {
                    let body = std::mem::take(&mut request.body);
                    let reply = request.reply(handler(body));
                    return vec![reply.encode()];
                }
                Err(e) => tracing::warn!(error = %e, "bad envelope; handled as a plain body"),
            }
        }
    }
    vec![handler(body.concat())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_envelopes_with_envelopes() {
        let mut h: Handler = Box::new(|b: Vec<u8>| [b.as_slice(), b"!"].concat());
        let mut req = Envelope::new(b"hi".to_vec());
        req.attempt = 2;
        let out = answer(&mut h, vec![req.encode()]);
        let reply = Envelope::decode(&out[0]).unwrap();
        assert_eq!((reply.id, reply.attempt), (req.id, 2));
        assert_eq!(reply.body, b"hi!");
        assert_eq!(
            answer(&mut h, vec![b"a".to_vec(), b"b".to_vec()]),
            vec![b"ab!".to_vec()]
        );
    }

    #[test]
    fn a_panicking_handler_is_reported_not_fatal() {
        let mut h: Handler = Box::new(|_| panic!("boom"));
        assert_eq!(
            answer_or_panic(&mut h, vec![b"x".to_vec()]),
            Err("boom".to_string())
        );
        let mut ok = echo();
        assert_eq!(
            answer_or_panic(&mut ok, vec![b"x".to_vec()]),
            Ok(vec![b"x".to_vec()])
        );
    }

    #[test]
    fn exec_pipes_body_through_a_command() {
        let mut h = exec("tr a-z A-Z".into());
        assert_eq!(h(b"shout".to_vec()), b"SHOUT");
        let mut echo = exec("cat; echo".into());
        assert_eq!(echo(b"line".to_vec()), b"line");
        let mut bad = exec("exit 3".into());
        assert_eq!(bad(b"x".to_vec()), b"");
    }
}
