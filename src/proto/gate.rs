//! The receiver's gate: what a worker or a server does with each request before its
//! handler runs and after it answers. Pure, like every core: the Majordomo worker
//! ([`crate::proto::worker::MdWorker`]), the 6/PPP worker
//! ([`crate::proto::paranoid_pirate::Worker`]) and the servers
//! ([`crate::proto::server::Server`]) each hold one and ask it at those two points.
//!
//! # On arrival: [`Gate::admit`]
//! A request **with bosun metadata**, when the gate has a duplicate [`Window`]:
//!
//! | the window says | the gate |
//! | --- | --- |
//! | [`Decision::New`] | hands it to the application, recorded as begun ([`Record::Began`]) |
//! | [`Decision::Wait`]: its first copy is running | holds this copy; the first copy's reply answers both ([`Note::Joined`]) |
//! | [`Decision::Replay`]: it finished | answers from the reply cache; the handler is not called ([`Note::Replayed`]) |
//! | [`Decision::Handled`]: it finished, its reply too large to keep | answers status `Error`, "handled already", without running it ([`Note::AlreadyHandled`]) |
//!
//! Every answer carries the metadata of the copy it answers: that copy's id and
//! **attempt**, so a Lazy Pirate client, which takes only the reply to the attempt it
//! waits for, takes the answer to its retry. A held copy is answered at its own return
//! address (the client address frame of a Majordomo REQUEST, the routing envelope of a
//! 6/PPP or Freelance request). A REP socket can answer only the request it holds, so a
//! REP server cannot hold one: a copy of a running request is answered at once with
//! status `Refused` ([`Note::StillRunning`]). That does not happen with bosun's REP
//! server, whose handler runs before the next request is read: a retry is read after the
//! first copy was answered, and is replayed from the cache. At most [`MAX_HELD_PER_ID`]
//! copies are held per id; more are refused the same way.
//!
//! A new request whose **deadline** (metadata, ms since the Unix epoch) has passed when
//! it arrives is not started: it is answered with status `Refused` and the message
//! `deadline passed ...` ([`Note::DeadlinePassed`]). Answered rather than dropped: a
//! Majordomo broker counts the request against the worker's capacity until it is
//! answered, and a REP socket must answer before it reads again. Deadlines are judged
//! against the wall clock fed with [`Gate::handle_wall_clock`]; until the first reading,
//! none is.
//!
//! A request **without metadata** (a foreign peer's) passes straight through: no
//! duplicate suppression, no deadline, no re-runs, no dead letter, one answer, exactly
//! as before the gate existed.
//!
//! # On the answer: [`Gate::finish`]
//! With `max_attempts` ([`Policy::max_attempts`]), a handler that fails (an error, a
//! panic, a failed or timed-out command) is **run again** at once, as the next attempt,
//! until it has failed on attempt `max_attempts`: a run's attempt is the delivered
//! copy's attempt (from the client's metadata), plus one per re-run here. So a first
//! delivery runs at most `max_attempts` times, and a client's retry numbered `a` at
//! most `max_attempts - a + 1` times (once if `a >= max_attempts`). Then the gate gives
//! up: the request is **dead-lettered** ([`Record::DeadLettered`], when
//! [`Policy::dead_letters_kept`]) and answered with status `Error` and a message saying
//! so, with the last error. A re-run whose deadline has passed is not started: the
//! request is given up at once. Without `max_attempts` a failure is answered as it is.
//!
//! The answer is cached in the window (unless too large) and answers every held copy;
//! failures are cached too, so a duplicate of a request given up on gets the same error
//! and does not run again while its id is in the window.
//!
//! # Records
//! The gate never touches a store: it queues [`Record`]s, which its core hands out
//! (`poll_record`) and the driver writes to the [`crate::store::DedupLog`] and
//! [`crate::store::DeadLetters`] before it sends what the core queued with them. That
//! order is what lets a restarted receiver answer a retry from the cache: the reply is
//! on disk before it leaves.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use foldhash::HashMap;
use uuid::Uuid;

use super::dedup::{CachedReply, Decision, State, Window};
use super::envelope::{HandlerError, Meta, Reply, Request, Status};
use super::frames::Frames;
use crate::error::ConfigError;

/// Most copies of one running request held for its answer: far more than any client
/// retries while one handler runs (a few per timeout), and a bound on the memory a peer
/// that keeps re-sending one id can take. Further copies are refused at once.
pub const MAX_HELD_PER_ID: usize = 64;

/// What a gate does. The default does nothing: no window, no re-runs, no dead letters.
#[derive(Debug, Default)]
pub struct Policy {
    /// The duplicate window (a fresh one, or one loaded by
    /// [`crate::store::DedupLog::load`]). `None` (the default): no duplicate
    /// suppression.
    pub window: Option<Window>,
    /// The attempt on which a failing handler is given up on (see the module docs), at
    /// least 1. `None` (the default): a failure is answered as it is, once.
    pub max_attempts: Option<u32>,
    /// Whether the driver keeps dead letters (it has a store): [`Record::DeadLettered`]
    /// is queued only then, and the answer's message says whether one was kept.
    pub dead_letters_kept: bool,
}

impl Policy {
    /// Checks the window's limits and that `max_attempts` is at least 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(w) = &self.window {
            w.limits().validate()?;
        }
        if self.max_attempts == Some(0) {
            return Err(ConfigError::Invalid {
                field: "max_attempts",
                reason: "must be at least 1 (the first run is attempt 1)".into(),
            });
        }
        Ok(())
    }
}

/// What the store must remember, in the order the gate decided it. The driver writes
/// each before it sends what the core queued with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `id` was handed to the application ([`crate::store::DedupLog::begin`]).
    Began {
        /// The message id.
        id: Uuid,
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
    /// `id` was answered ([`crate::store::DedupLog::finish`]); make it durable before
    /// the answer is sent.
    Finished {
        /// The message id.
        id: Uuid,
        /// The answer as cached (payload frames and the first copy's metadata frame);
        /// `None` when it was too large to keep.
        reply: Option<Arc<CachedReply>>,
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
    /// These ids left the window ([`crate::store::DedupLog::forget`]).
    Forgotten {
        /// The ids.
        ids: Vec<Uuid>,
    },
    /// A request was given up on after its handler failed on its last attempt
    /// ([`crate::store::DeadLetters::put`], reason `handler-failed`).
    DeadLettered {
        /// The message id.
        id: Uuid,
        /// The service it was for (Majordomo).
        service: Option<Vec<u8>>,
        /// The application's frames, as sent.
        payload: Frames,
        /// The attempt of the last run.
        attempts: u32,
        /// The last run's error.
        last_error: String,
        /// When, ms since the Unix epoch.
        at_ms: u64,
    },
}

/// What the gate did that the log should hear (each core passes these on as an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A copy of a finished request was answered from the reply cache.
    Replayed {
        /// The message id.
        id: Uuid,
        /// The copy's attempt.
        attempt: u32,
    },
    /// A copy of a running request is held; the first copy's reply will answer it.
    Joined {
        /// The message id.
        id: Uuid,
        /// The copy's attempt.
        attempt: u32,
    },
    /// A copy of a running request could not be held (a REP socket, or too many held
    /// copies) and was refused.
    StillRunning {
        /// The message id.
        id: Uuid,
        /// The copy's attempt.
        attempt: u32,
    },
    /// A copy of a request handled before whose reply was too large to keep was
    /// answered with an error, not run.
    AlreadyHandled {
        /// The message id.
        id: Uuid,
        /// The copy's attempt.
        attempt: u32,
    },
    /// A new request whose deadline had passed was refused, not started.
    DeadlinePassed {
        /// The message id.
        id: Uuid,
        /// Its attempt.
        attempt: u32,
        /// How long ago the deadline passed, in ms.
        late_ms: u64,
    },
    /// The handler failed; it runs again as `attempt`.
    Rerun {
        /// The message id.
        id: Uuid,
        /// The attempt about to run.
        attempt: u32,
        /// The attempt at which it will be given up on.
        max_attempts: u32,
        /// Why the last run failed.
        error: String,
    },
    /// The handler failed on the last attempt: the request was given up on (and
    /// dead-lettered when [`Policy::dead_letters_kept`]).
    GaveUp {
        /// The message id.
        id: Uuid,
        /// The attempt of the last run.
        attempts: u32,
        /// Why the last run failed.
        error: String,
        /// Whether a dead letter was recorded.
        dead_lettered: bool,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Replayed { .. } => f.write_str("duplicate answered from the reply cache"),
            Note::Joined { .. } => {
                f.write_str("duplicate of a running request held for its reply")
            }
            Note::StillRunning { .. } => {
                f.write_str("duplicate of a running request refused: it cannot wait here")
            }
            Note::AlreadyHandled { .. } => f.write_str(
                "duplicate of a request handled already (its reply was too large to cache) answered with an error",
            ),
            Note::DeadlinePassed { .. } => f.write_str("deadline passed; request not started"),
            Note::Rerun { .. } => f.write_str("handler failed; running it again"),
            Note::GaveUp {
                dead_lettered: true,
                ..
            } => f.write_str("handler failed on its last attempt; request dead-lettered"),
            Note::GaveUp { .. } => f.write_str(
                "handler failed on its last attempt; request given up on (no store: no dead letter kept)",
            ),
        }
    }
}

/// What to do with a request that arrived.
#[derive(Debug)]
pub enum Admit<A> {
    /// Hand it to the application; keep the [`Running`] for [`Gate::finish`].
    Run(A, Running),
    /// Send this answer (payload frames and metadata frame) to the address now; the
    /// application does not see the request.
    Answer(A, Frames, Note),
    /// A copy of a running request: the gate holds it and answers it with that one.
    Held(Note),
}

/// What to do once the application answered.
#[derive(Debug)]
pub enum Done<A> {
    /// The handler failed and runs again: hand the application this request (its
    /// metadata carries the new attempt) and keep the [`Running`] for the next
    /// [`Gate::finish`].
    Rerun(Running, Request, Note),
    /// Send `first` to the request's own address, and each held copy its answer.
    Answered {
        /// The answer to the copy that ran (payload frames and metadata frame).
        first: Frames,
        /// The held copies' addresses and answers.
        held: Vec<(A, Frames)>,
        /// What the log should hear, if anything.
        note: Option<Note>,
    },
}

/// A request handed to the application, as the gate tracks it until it is answered.
#[derive(Debug, Clone)]
pub struct Running {
    /// The metadata of the copy delivered (its attempt is the one the answer carries).
    meta: Option<Meta>,
    /// The attempt of the current run.
    attempt: u32,
    /// The service and payload, kept for re-runs and the dead letter.
    copy: Option<(Option<Vec<u8>>, Frames)>,
}

impl Running {
    /// The message id (`None` for a foreign peer's request).
    pub fn id(&self) -> Option<Uuid> {
        self.meta.as_ref().map(|m| m.id)
    }

    /// The metadata of the copy delivered.
    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    /// The attempt of the current run (the delivered attempt plus the re-runs so far).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// A receiver's gate. See the module docs. `A` is where an answer goes (a client
/// address, a routing envelope).
#[derive(Debug)]
pub struct Gate<A> {
    policy: Policy,
    /// The last wall-clock reading: at this instant, this many ms since the Unix epoch.
    wall: Option<(Instant, u64)>,
    /// Copies held by running id, with the metadata each is answered with.
    held: HashMap<Uuid, Vec<(A, Meta)>>,
    records: VecDeque<Record>,
}

impl<A> Default for Gate<A> {
    fn default() -> Self {
        Gate::new(Policy::default())
    }
}

impl<A> Gate<A> {
    /// A gate with `policy` (see [`Policy::validate`]).
    pub fn new(policy: Policy) -> Self {
        Gate {
            policy,
            wall: None,
            held: HashMap::default(),
            records: VecDeque::new(),
        }
    }

    /// Its policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Feeds a reading of the wall clock: at `now` it reads `unix_ms` ms since the Unix
    /// epoch. The window's times and deadlines are wall-clock times (they outlive the
    /// process and cross machines); between readings the gate moves the last one on by
    /// the time passed. Until the first reading no deadline is judged and the window's
    /// clock reads 0.
    pub fn handle_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        self.wall = Some((now, unix_ms));
    }

    /// The wall clock at `now`, from the last reading.
    fn wall_ms(&self, now: Instant) -> Option<u64> {
        self.wall.map(|(at, ms)| {
            let since = now.saturating_duration_since(at).as_millis();
            ms.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
        })
    }

    /// The next record for the store.
    #[must_use]
    pub fn poll_record(&mut self) -> Option<Record> {
        self.records.pop_front()
    }

    /// Copies held for running requests, in all.
    pub fn held(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }

    /// Decides what to do with `request`, which arrived at `now` from `to`. `can_hold`:
    /// whether the receiver can answer a copy later (false for a REP socket).
    pub fn admit(&mut self, now: Instant, request: &Request, to: A, can_hold: bool) -> Admit<A> {
        let Some(meta) = request.meta.as_ref() else {
            return Admit::Run(
                to,
                Running {
                    meta: None,
                    attempt: 1,
                    copy: None,
                },
            );
        };
        let (id, attempt) = (meta.id, meta.attempt);
        let wall = self.wall_ms(now);
        let now_ms = wall.unwrap_or(0);
        if let Some(window) = &self.policy.window {
            match window.decide(id, now_ms) {
                Decision::New => {}
                Decision::Wait => {
                    let list = self.held.entry(id).or_default();
                    if can_hold && list.len() < MAX_HELD_PER_ID {
                        list.push((to, meta.clone()));
                        return Admit::Held(Note::Joined { id, attempt });
                    }
                    if list.is_empty() {
                        self.held.remove(&id);
                    }
                    let why = format!(
                        "request {id} is still being handled; this copy cannot wait for it here \
                         and was not run"
                    );
                    return Admit::Answer(
                        to,
                        with_meta(vec![why.into_bytes()], meta, Status::Refused),
                        Note::StillRunning { id, attempt },
                    );
                }
                Decision::Replay(cached) => {
                    return Admit::Answer(to, replay(meta, &cached), Note::Replayed { id, attempt })
                }
                Decision::Handled => {
                    let why = format!(
                        "request {id} was handled already; its reply was too large to keep \
                         for duplicates, and it is not run again"
                    );
                    return Admit::Answer(
                        to,
                        with_meta(vec![why.into_bytes()], meta, Status::Error),
                        Note::AlreadyHandled { id, attempt },
                    );
                }
            }
        }
        if let (Some(deadline), Some(now_ms)) = (meta.deadline_ms, wall) {
            if deadline <= now_ms {
                let late_ms = now_ms - deadline;
                let why =
                    format!("deadline passed {late_ms} ms before the request arrived; not started");
                return Admit::Answer(
                    to,
                    with_meta(vec![why.into_bytes()], meta, Status::Refused),
                    Note::DeadlinePassed {
                        id,
                        attempt,
                        late_ms,
                    },
                );
            }
        }
        if let Some(window) = &mut self.policy.window {
            let evicted = window.begin(id, now_ms);
            self.records.push_back(Record::Began { id, at_ms: now_ms });
            if !evicted.is_empty() {
                self.records.push_back(Record::Forgotten { ids: evicted });
            }
        }
        // A copy of the payload only when a re-run or a dead letter may need it.
        let copy = self
            .policy
            .max_attempts
            .is_some_and(|max| attempt < max || self.policy.dead_letters_kept)
            .then(|| (request.service.clone(), request.payload.clone()));
        Admit::Run(
            to,
            Running {
                meta: Some(meta.clone()),
                attempt,
                copy,
            },
        )
    }

    /// Holds `request` from `to` if it is a copy of a running request (for a receiver
    /// that cannot take a new request now, such as a busy 6/PPP worker); gives `to`
    /// back otherwise.
    pub fn join(&mut self, request: &Request, to: A) -> Result<Note, A> {
        let (Some(meta), Some(window)) = (request.meta.as_ref(), &self.policy.window) else {
            return Err(to);
        };
        if !matches!(window.get(meta.id), Some(State::Running)) {
            return Err(to);
        }
        let list = self.held.entry(meta.id).or_default();
        if list.len() >= MAX_HELD_PER_ID {
            return Err(to);
        }
        list.push((to, meta.clone()));
        Ok(Note::Joined {
            id: meta.id,
            attempt: meta.attempt,
        })
    }

    /// The application answered `running` with `reply` at `now`: run it again, or
    /// answer it and every copy held for it.
    pub fn finish(&mut self, now: Instant, mut running: Running, reply: Reply) -> Done<A> {
        let Some(meta) = running.meta.clone() else {
            return Done::Answered {
                first: super::envelope::answer(None, reply),
                held: Vec::new(),
                note: None,
            };
        };
        let id = meta.id;
        let wall = self.wall_ms(now);
        let now_ms = wall.unwrap_or(0);
        let mut note = None;
        let reply = match (reply, self.policy.max_attempts) {
            (Err(e), Some(max)) => {
                let late = meta
                    .deadline_ms
                    .zip(wall)
                    .is_some_and(|(deadline, now_ms)| deadline <= now_ms);
                match &running.copy {
                    Some((service, payload)) if running.attempt < max && !late => {
                        running.attempt += 1;
                        let mut again = meta.clone();
                        again.attempt = running.attempt;
                        let request = Request {
                            meta: Some(again),
                            service: service.clone(),
                            payload: payload.clone(),
                        };
                        let note = Note::Rerun {
                            id,
                            attempt: running.attempt,
                            max_attempts: max,
                            error: e.message,
                        };
                        return Done::Rerun(running, request, note);
                    }
                    _ => {}
                }
                let attempts = running.attempt;
                let kept = self.policy.dead_letters_kept;
                let s = if attempts == 1 { "" } else { "s" };
                let why = match (late, kept) {
                    (true, true) => format!(
                        "gave up after {attempts} failed attempt{s}, its deadline passed, and \
                         dead-lettered it: {}",
                        e.message
                    ),
                    (true, false) => format!(
                        "gave up after {attempts} failed attempt{s}, its deadline passed (no \
                         dead letter kept: no data dir): {}",
                        e.message
                    ),
                    (false, true) => format!(
                        "gave up after {attempts} failed attempt{s} (max attempts {max}) and \
                         dead-lettered it: {}",
                        e.message
                    ),
                    (false, false) => format!(
                        "gave up after {attempts} failed attempt{s} (max attempts {max}; no \
                         dead letter kept: no data dir): {}",
                        e.message
                    ),
                };
                if kept {
                    let (service, payload) = running.copy.take().unwrap_or_default();
                    self.records.push_back(Record::DeadLettered {
                        id,
                        service,
                        payload,
                        attempts,
                        last_error: e.message.clone(),
                        at_ms: now_ms,
                    });
                }
                note = Some(Note::GaveUp {
                    id,
                    attempts,
                    error: e.message,
                    dead_lettered: kept,
                });
                Err(HandlerError::new(why))
            }
            (reply, _) => reply,
        };
        let (body, status) = match reply {
            Ok(payload) => (payload, Status::Ok),
            Err(e) => (vec![e.message.into_bytes()], Status::Error),
        };
        let first_meta = meta.reply(status).encode();
        let held = self
            .held
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(to, m)| (to, with_meta(body.clone(), &m, status)))
            .collect();
        if let Some(window) = &mut self.policy.window {
            let cached = CachedReply {
                frames: body.clone(),
                meta: first_meta.clone(),
            };
            let evicted = window.finish(id, cached, now_ms);
            let reply = match window.get(id) {
                Some(State::Done(kept)) => kept.clone(),
                _ => None,
            };
            self.records.push_back(Record::Finished {
                id,
                reply,
                at_ms: now_ms,
            });
            if !evicted.is_empty() {
                self.records.push_back(Record::Forgotten { ids: evicted });
            }
        }
        let mut first = body;
        first.push(first_meta);
        Done::Answered { first, held, note }
    }
}

/// `body` with the metadata of a reply of `status` to the copy `meta`.
fn with_meta(mut body: Frames, meta: &Meta, status: Status) -> Frames {
    body.push(meta.reply(status).encode());
    body
}

/// The cached answer, for the copy `meta`: the cached payload frames, and metadata with
/// this copy's id and attempt and the cached answer's status.
fn replay(meta: &Meta, cached: &CachedReply) -> Frames {
    match Meta::decode(&cached.meta) {
        Ok(m) => with_meta(cached.frames.clone(), meta, m.status),
        // The cache holds what this code wrote; a frame that does not decode is damage.
        Err(e) => with_meta(
            vec![format!(
                "request {} was handled already, but its cached reply is unreadable ({e}); \
                 it is not run again",
                meta.id
            )
            .into_bytes()],
            meta,
            Status::Error,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::dedup::Limits;
    use crate::proto::envelope::Envelope;

    const T0_MS: u64 = 1_700_000_000_000;

    #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
    fn t0() -> Instant {
        Instant::now()
    }

    fn req(id: u128, attempt: u32) -> Request {
        let mut meta = Meta::new(Uuid::from_u128(id), T0_MS);
        meta.attempt = attempt;
        Request {
            meta: Some(meta),
            service: None,
            payload: vec![b"p".to_vec()],
        }
    }

    fn gate(max_attempts: Option<u32>) -> Gate<&'static str> {
        let mut g = Gate::new(Policy {
            window: Some(Window::new(Limits::default())),
            max_attempts,
            dead_letters_kept: true,
        });
        g.handle_wall_clock(t0(), T0_MS);
        g
    }

    fn decode(frames: Frames) -> Envelope {
        Envelope::decode(frames).unwrap()
    }

    #[test]
    fn a_held_copy_is_answered_with_its_own_attempt() {
        let now = t0();
        let mut g = gate(None);
        let Admit::Run(_, running) = g.admit(now, &req(1, 1), "first", true) else {
            panic!("not run")
        };
        assert!(matches!(
            g.admit(now, &req(1, 2), "retry", true),
            Admit::Held(Note::Joined { attempt: 2, .. })
        ));
        let Done::Answered { first, held, .. } = g.finish(now, running, Ok(vec![b"r".to_vec()]))
        else {
            panic!("not answered")
        };
        assert_eq!(decode(first).meta.attempt, 1);
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].0, "retry");
        let e = decode(held[0].1.clone());
        assert_eq!((e.meta.attempt, e.payload), (2, vec![b"r".to_vec()]));
        assert_eq!(g.held(), 0);
    }

    #[test]
    fn a_rep_socket_cannot_hold_a_copy() {
        let now = t0();
        let mut g = gate(None);
        let _ = g.admit(now, &req(1, 1), "a", false);
        let Admit::Answer(_, frames, Note::StillRunning { .. }) =
            g.admit(now, &req(1, 2), "b", false)
        else {
            panic!("not refused")
        };
        assert_eq!(decode(frames).meta.status, Status::Refused);
        assert_eq!(g.held(), 0);
    }

    #[test]
    fn failures_run_again_until_the_last_attempt_then_dead_letter() {
        let now = t0();
        let mut g = gate(Some(3));
        let Admit::Run(_, mut running) = g.admit(now, &req(1, 1), "c", true) else {
            panic!()
        };
        for attempt in 2..=3 {
            match g.finish(now, running, Err(HandlerError::new("boom"))) {
                Done::Rerun(r, request, _) => {
                    assert_eq!(request.attempt(), attempt);
                    running = r;
                }
                other => panic!("{other:?}"),
            }
        }
        let Done::Answered { first, note, .. } =
            g.finish(now, running, Err(HandlerError::new("boom")))
        else {
            panic!()
        };
        let e = decode(first);
        assert_eq!((e.meta.attempt, e.meta.status), (1, Status::Error));
        assert!(String::from_utf8_lossy(&e.payload[0]).contains("dead-lettered"));
        assert!(matches!(note, Some(Note::GaveUp { attempts: 3, .. })));
        let records: Vec<Record> = std::iter::from_fn(|| g.poll_record()).collect();
        assert!(matches!(records[0], Record::Began { .. }));
        assert!(matches!(
            &records[1],
            Record::DeadLettered { attempts: 3, payload, .. } if payload == &vec![b"p".to_vec()]
        ));
        assert!(matches!(records[2], Record::Finished { .. }));
        // A copy that arrives later gets the same error, and nothing runs.
        assert!(matches!(
            g.admit(now, &req(1, 4), "d", true),
            Admit::Answer(_, _, Note::Replayed { attempt: 4, .. })
        ));
    }

    #[test]
    fn a_late_attempt_fails_once_and_foreign_requests_pass_through() {
        let now = t0();
        let mut g = gate(Some(3));
        let Admit::Run(_, running) = g.admit(now, &req(1, 5), "c", true) else {
            panic!()
        };
        assert!(matches!(
            g.finish(now, running, Err(HandlerError::new("x"))),
            Done::Answered {
                note: Some(Note::GaveUp { attempts: 5, .. }),
                ..
            }
        ));
        let foreign = Request {
            meta: None,
            service: None,
            payload: vec![b"f".to_vec()],
        };
        for _ in 0..2 {
            let Admit::Run(_, running) = g.admit(now, &foreign, "f", true) else {
                panic!()
            };
            let Done::Answered { first, note, .. } =
                g.finish(now, running, Err(HandlerError::new("no")))
            else {
                panic!()
            };
            assert_eq!(first, vec![b"error: no".to_vec()]);
            assert_eq!(note, None);
        }
    }

    #[test]
    fn zero_max_attempts_is_refused() {
        let p = Policy {
            max_attempts: Some(0),
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        assert!(Policy::default().validate().is_ok());
    }
}
