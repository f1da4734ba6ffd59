//! The receiver's duplicate window: which message ids its application has been handed,
//! and the replies it gave, so that a retry, a replay or a re-send is never handled
//! twice. Pure: no store, no clock; time comes in as `now_ms` (ms since the Unix epoch,
//! wall-clock because the window outlives the process through
//! [`crate::store::DedupLog`]).
//!
//! # How a receiver uses it
//! For each request with an id: [`Window::decide`] (a pure query). On [`Decision::New`], call
//! [`Window::begin`] and run the handler; when it answers, [`Window::finish`] with the
//! reply frames; if it was interrupted (the request may run again), [`Window::abandon`].
//! On [`Decision::Wait`], the first copy is still running: answer the duplicate with the
//! first copy's reply when it finishes. On [`Decision::Replay`], answer with the cached
//! reply. On [`Decision::Handled`], the request ran but its reply was too large to keep:
//! refuse it rather than run it again. Every mutating call returns the ids it evicted,
//! which the dedup log forgets.
//!
//! # Limits, and what is not guaranteed
//! The window is bounded three ways, each oldest-first (the entry whose last change,
//! begin or finish, is oldest goes first):
//! - by count, [`Limits::max_ids`] entries;
//! - by age: a finished entry is forgotten [`Limits::max_age`] after it finished;
//! - by bytes: cached replies take at most [`Limits::max_reply_bytes`] in all; a single
//!   reply larger than that is not cached at all (its id is remembered as
//!   [`Decision::Handled`]).
//!
//! An id that has left the window is **forgotten**: a copy that arrives later is
//! [`Decision::New`] and is handled again. So duplicates are suppressed only while they
//! arrive within the window: a client's whole retry budget must be shorter than
//! `max_age`, and its peers must not send more than `max_ids` other requests between a
//! request's first copy and its last.
//!
//! Running entries (begun, not finished) are never evicted: forgetting one would let a
//! duplicate run alongside it. They leave by [`Window::finish`] or [`Window::abandon`],
//! and can push the count over `max_ids` by at most the number of handlers running at
//! once, which the receiver bounds.
//!
//! Age is measured on the wall clock: a clock stepped back keeps entries longer, one
//! stepped forward forgets them sooner. Two receivers share no window: a request retried
//! to another worker runs there too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::error::ConfigError;
use crate::proto::frames::Frames;

/// Default [`Limits::max_ids`]: 100,000 ids. An entry without a reply costs about 100
/// bytes of memory, so the ids alone stay under 10 MB; at 1,000 requests/s that is 100 s
/// of traffic, and at the usual tens per second far more than `max_age`, so at those rates
/// age is the bound that acts.
pub const DEFAULT_MAX_IDS: usize = 100_000;

/// Default [`Limits::max_age`]: 10 minutes. A client's retries end within its overall
/// deadline (seconds to a couple of minutes with the default retry settings), and a
/// client restarted on its data dir re-sends its outbox within a few minutes of a crash
/// in an ordinary restart; 10 minutes covers both with room to spare.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Default [`Limits::max_reply_bytes`]: 64 MiB of cached replies, the size of one
/// largest message ([`crate::proto::envelope::MAX_PAYLOAD_BYTES`]): memory stays bounded
/// whatever the handlers return, and typical small replies (under 1 KiB) all fit
/// alongside `max_ids` entries.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 << 20;

/// The bounds of a [`Window`]. Defaults: the `DEFAULT_*` constants of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most ids remembered (running ones aside, see the module docs).
    pub max_ids: usize,
    /// How long a finished id is remembered after it finished.
    pub max_age: Duration,
    /// The most bytes of cached replies (frames and metadata) held in all.
    pub max_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ids: DEFAULT_MAX_IDS,
            max_age: DEFAULT_MAX_AGE,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

impl Limits {
    /// Checks that the window can remember at least one id for some time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_ids == 0 {
            return Err(ConfigError::Invalid {
                field: "dedup.max_ids",
                reason: "must remember at least one id".into(),
            });
        }
        if self.max_age.is_zero() {
            return Err(ConfigError::Invalid {
                field: "dedup.max_age",
                reason: "must be greater than zero".into(),
            });
        }
        Ok(())
    }

    fn max_age_ms(&self) -> u64 {
        u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)
    }
}

/// A reply kept to answer duplicates: its frames and its metadata frame, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CachedReply {
    /// The reply's payload frames.
    pub frames: Frames,
    /// The reply's metadata frame (empty when there was none).
    pub meta: Vec<u8>,
}

impl CachedReply {
    /// The bytes it counts against [`Limits::max_reply_bytes`].
    pub fn size(&self) -> usize {
        self.frames.iter().map(Vec::len).sum::<usize>() + self.meta.len()
    }
}

/// What to do with a request, given its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not seen (or forgotten): hand it to the application.
    New,
    /// Its first copy is being handled: answer this one when that one finishes.
    Wait,
    /// Handled before: answer with this reply, without running it again.
    Replay(Arc<CachedReply>),
    /// Handled before, but its reply was too large to keep: refuse it, do not run it.
    Handled,
}

/// An entry as the window holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Handed to the application, no reply yet.
    Running,
    /// Finished, with its reply unless that was too large to keep.
    Done(Option<Arc<CachedReply>>),
}

#[derive(Debug)]
struct Entry {
    /// When it began or finished, whichever was last (ms since the Unix epoch).
    at_ms: u64,
    /// Its place in `order` (finished entries only).
    seq: u64,
    state: State,
}

/// The duplicate window of one receiver. See the module docs.
#[derive(Debug)]
pub struct Window {
    limits: Limits,
    entries: HashMap<Uuid, Entry>,
    /// Finished entries, oldest first: (at_ms, seq) -> id.
    order: BTreeMap<(u64, u64), Uuid>,
    next_seq: u64,
    reply_bytes: usize,
}

impl Window {
    /// An empty window with these limits (see [`Limits::validate`]; a zero `max_ids`
    /// remembers nothing finished).
    pub fn new(limits: Limits) -> Self {
        Window {
            limits,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            reply_bytes: 0,
        }
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// What to do with a request `id` arriving at `now_ms`. A finished entry older than
    /// `max_age` is [`Decision::New`], whether or not it was expired yet.
    #[must_use]
    pub fn decide(&self, id: Uuid, now_ms: u64) -> Decision {
        match self.entries.get(&id) {
            None => Decision::New,
            Some(e) if self.expired(e, now_ms) => Decision::New,
            Some(e) => match &e.state {
                State::Running => Decision::Wait,
                State::Done(Some(reply)) => Decision::Replay(Arc::clone(reply)),
                State::Done(None) => Decision::Handled,
            },
        }
    }

    /// Records that `id` was handed to the application at `now_ms`. Does nothing to an id
    /// the window holds (ask [`Window::decide`] first), unless it has expired: that one
    /// starts again as running. Returns the evicted ids (never `id`).
    #[must_use = "evicted ids must be forgotten by the dedup log"]
    pub fn begin(&mut self, id: Uuid, now_ms: u64) -> Vec<Uuid> {
        match self.entries.get(&id) {
            Some(e) if !self.expired(e, now_ms) => return Vec::new(),
            Some(_) => {
                if let Some(old) = self.entries.remove(&id) {
                    self.unlink(&old);
                }
            }
            None => {}
        }
        self.entries.insert(
            id,
            Entry {
                at_ms: now_ms,
                seq: 0,
                state: State::Running,
            },
        );
        self.evict(now_ms)
    }

    /// Records that `id` finished at `now_ms` with `reply` (kept for duplicates unless it
    /// is larger than `max_reply_bytes`). An id not begun (or forgotten) is recorded all
    /// the same; a finished one gets the new reply. Returns the evicted ids, never `id`.
    #[must_use = "evicted ids must be forgotten by the dedup log"]
    pub fn finish(&mut self, id: Uuid, reply: CachedReply, now_ms: u64) -> Vec<Uuid> {
        let reply = (reply.size() <= self.limits.max_reply_bytes).then(|| Arc::new(reply));
        self.put_done(id, reply, now_ms);
        self.evict_keeping(now_ms, Some(id))
    }

    /// Puts back an entry that finished at `at_ms` with `reply` (`None`: not cached), as
    /// read from a dedup log after a restart. Returns the evicted ids (the oldest, when
    /// the log holds more than the limits allow), possibly `id` itself.
    #[must_use = "evicted ids must be forgotten by the dedup log"]
    pub fn restore(&mut self, id: Uuid, reply: Option<CachedReply>, at_ms: u64) -> Vec<Uuid> {
        let reply = reply
            .filter(|r| r.size() <= self.limits.max_reply_bytes)
            .map(Arc::new);
        self.put_done(id, reply, at_ms);
        self.evict_keeping(at_ms, None)
    }

    /// Forgets a running `id` whose handler was interrupted, so that a copy may run
    /// again; whether it was running. A finished id stays.
    pub fn abandon(&mut self, id: Uuid) -> bool {
        if matches!(
            self.entries.get(&id).map(|e| &e.state),
            Some(State::Running)
        ) {
            self.entries.remove(&id);
            return true;
        }
        false
    }

    /// Whether `e` is a finished entry past `max_age` at `now_ms`.
    fn expired(&self, e: &Entry, now_ms: u64) -> bool {
        matches!(e.state, State::Done(_))
            && now_ms.saturating_sub(e.at_ms) >= self.limits.max_age_ms()
    }

    /// Forgets every finished entry older than `max_age` at `now_ms`; returns them.
    #[must_use = "evicted ids must be forgotten by the dedup log"]
    pub fn expire(&mut self, now_ms: u64) -> Vec<Uuid> {
        let max_age = self.limits.max_age_ms();
        let mut out = Vec::new();
        while let Some((&(at, _), _)) = self.order.first_key_value() {
            if now_ms.saturating_sub(at) < max_age {
                break;
            }
            out.extend(self.pop_oldest());
        }
        out
    }

    /// When the oldest finished entry expires (ms since the Unix epoch), for a timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.order
            .first_key_value()
            .map(|(&(at, _), _)| at.saturating_add(self.limits.max_age_ms()))
    }

    /// The state of `id`, if the window holds it (expired entries included until the
    /// next call that takes `now_ms`).
    pub fn get(&self, id: Uuid) -> Option<&State> {
        self.entries.get(&id).map(|e| &e.state)
    }

    /// How many ids the window holds, running and finished.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many bytes of replies it caches.
    pub fn reply_bytes(&self) -> usize {
        self.reply_bytes
    }

    fn put_done(&mut self, id: Uuid, reply: Option<Arc<CachedReply>>, at_ms: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.reply_bytes += reply.as_ref().map_or(0, |r| r.size());
        let entry = Entry {
            at_ms,
            seq,
            state: State::Done(reply),
        };
        if let Some(old) = self.entries.insert(id, entry) {
            self.unlink(&old);
        }
        self.order.insert((at_ms, seq), id);
    }

    /// Takes a replaced or removed entry out of the order and the byte count.
    fn unlink(&mut self, old: &Entry) {
        if let State::Done(reply) = &old.state {
            self.order.remove(&(old.at_ms, old.seq));
            self.reply_bytes -= reply.as_ref().map_or(0, |r| r.size());
        }
    }

    fn pop_oldest(&mut self) -> Option<Uuid> {
        let key = *self.order.first_key_value()?.0;
        self.remove_done(key)
    }

    /// Forgets the finished entry at `key` of `order`.
    fn remove_done(&mut self, key: (u64, u64)) -> Option<Uuid> {
        let id = self.order.remove(&key)?;
        if let Some(old) = self.entries.remove(&id) {
            if let State::Done(Some(reply)) = &old.state {
                self.reply_bytes -= reply.size();
            }
        }
        Some(id)
    }

    fn evict(&mut self, now_ms: u64) -> Vec<Uuid> {
        self.evict_keeping(now_ms, None)
    }

    /// Expires by age, then evicts the oldest finished entries while over a bound,
    /// except `keep` (the entry just finished, which fits on its own).
    fn evict_keeping(&mut self, now_ms: u64, keep: Option<Uuid>) -> Vec<Uuid> {
        let mut out = self.expire(now_ms);
        while self.entries.len() > self.limits.max_ids
            || self.reply_bytes > self.limits.max_reply_bytes
        {
            // `keep` is normally the newest; after a clock step back it may be the oldest.
            let victim = self
                .order
                .iter()
                .find(|(_, id)| Some(**id) != keep)
                .map(|(key, _)| *key);
            let Some(key) = victim else {
                break; // only running entries (and `keep`) are left
            };
            out.extend(self.remove_done(key));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn reply(text: &str) -> CachedReply {
        CachedReply {
            frames: vec![text.as_bytes().to_vec()],
            meta: vec![0xff, 1],
        }
    }

    fn limits(max_ids: usize, max_age_ms: u64, max_reply_bytes: usize) -> Limits {
        Limits {
            max_ids,
            max_age: Duration::from_millis(max_age_ms),
            max_reply_bytes,
        }
    }

    #[test]
    fn defaults_are_valid_and_zero_limits_are_not() {
        Limits::default().validate().unwrap();
        assert!(limits(0, 1, 1).validate().is_err());
        assert!(limits(1, 0, 1).validate().is_err());
    }

    #[test]
    fn new_then_wait_then_replay() {
        let mut w = Window::new(Limits::default());
        assert_eq!(w.decide(id(1), T0), Decision::New);
        assert!(w.begin(id(1), T0).is_empty());
        assert_eq!(w.decide(id(1), T0 + 1), Decision::Wait);
        assert!(w.finish(id(1), reply("hi"), T0 + 2).is_empty());
        assert_eq!(
            w.decide(id(1), T0 + 3),
            Decision::Replay(Arc::new(reply("hi")))
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w.reply_bytes(), 4);
    }

    #[test]
    fn an_abandoned_request_may_run_again_a_finished_one_may_not() {
        let mut w = Window::new(Limits::default());
        let _ = w.begin(id(1), T0);
        assert!(w.abandon(id(1)));
        assert_eq!(w.decide(id(1), T0), Decision::New);
        let _ = w.begin(id(1), T0);
        let _ = w.finish(id(1), reply("x"), T0);
        assert!(!w.abandon(id(1)));
        assert!(matches!(w.decide(id(1), T0), Decision::Replay(_)));
        assert!(!w.abandon(id(9)));
    }

    #[test]
    fn count_evicts_the_oldest_finished_first() {
        let mut w = Window::new(limits(3, 60_000, 1 << 20));
        for n in 1..=3 {
            let _ = w.begin(id(n), T0 + n as u64);
            assert!(w.finish(id(n), reply("r"), T0 + n as u64).is_empty());
        }
        // Re-finishing 1 makes it the newest; 2 is now the oldest.
        assert!(w.finish(id(1), reply("again"), T0 + 10).is_empty());
        assert_eq!(w.begin(id(4), T0 + 11), [id(2)]);
        assert_eq!(
            w.decide(id(2), T0 + 12),
            Decision::New,
            "forgotten: runs again"
        );
        assert_eq!(w.len(), 3);
        assert_eq!(w.reply_bytes(), 7 + 3);
    }

    #[test]
    fn running_entries_are_never_evicted() {
        let mut w = Window::new(limits(2, 1_000, 1 << 20));
        for n in 1..=3 {
            assert!(w.begin(id(n), T0).is_empty());
        }
        assert_eq!(w.len(), 3, "over max_ids by the running handlers");
        assert!(w.expire(T0 + 1_000_000).is_empty());
        assert_eq!(w.decide(id(1), T0 + 1_000_000), Decision::Wait);
        // Finishing one brings the count down to the limit, evicting the oldest finished
        // entry, but never the one just finished.
        assert!(w.finish(id(1), reply("a"), T0 + 5).is_empty());
        assert_eq!(w.len(), 3);
        assert_eq!(w.finish(id(2), reply("b"), T0 + 6), [id(1)]);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn age_forgets_finished_entries_exactly_at_max_age() {
        let mut w = Window::new(limits(100, 1_000, 1 << 20));
        let _ = w.begin(id(1), T0);
        let _ = w.finish(id(1), reply("a"), T0 + 500);
        assert_eq!(w.next_expiry(), Some(T0 + 1_500));
        assert!(matches!(w.decide(id(1), T0 + 1_499), Decision::Replay(_)));
        assert_eq!(w.decide(id(1), T0 + 1_500), Decision::New);
        assert_eq!(w.len(), 1, "a query forgets nothing");
        // The expired entry runs again: begin replaces it, reporting no eviction.
        assert!(w.begin(id(1), T0 + 1_500).is_empty());
        assert_eq!(w.decide(id(1), T0 + 1_500), Decision::Wait);
        assert_eq!(w.reply_bytes(), 0);
        assert_eq!(w.next_expiry(), None);
        let _ = w.finish(id(1), reply("b"), T0 + 1_600);
        assert_eq!(w.expire(T0 + 2_600), [id(1)]);
        assert!(w.is_empty());
    }

    #[test]
    fn bytes_evict_oldest_and_oversized_replies_are_not_kept() {
        let mut w = Window::new(limits(100, 60_000, 10));
        let _ = w.finish(id(1), reply("aaaa"), T0); // 6 bytes
        assert_eq!(w.finish(id(2), reply("bbbb"), T0 + 1), [id(1)]);
        assert_eq!(w.reply_bytes(), 6);
        // 11 bytes: larger than the whole cache, so not kept, and nothing evicted for it.
        assert!(w.finish(id(3), reply("ccccccccc"), T0 + 2).is_empty());
        assert_eq!(w.decide(id(3), T0 + 3), Decision::Handled);
        assert!(matches!(w.decide(id(2), T0 + 3), Decision::Replay(_)));
        assert_eq!(w.reply_bytes(), 6);
    }

    #[test]
    fn restore_rebuilds_in_age_order_whatever_the_input_order() {
        let mut w = Window::new(limits(2, 60_000, 1 << 20));
        assert!(w.restore(id(1), Some(reply("new")), T0 + 30).is_empty());
        assert!(w.restore(id(2), None, T0 + 10).is_empty());
        assert_eq!(w.restore(id(3), Some(reply("mid")), T0 + 20), [id(2)]);
        assert_eq!(w.decide(id(2), T0 + 40), Decision::New);
        assert_eq!(w.len(), 2);
        // A restored entry that is itself the oldest over the limit goes at once.
        assert_eq!(w.restore(id(4), None, T0), [id(4)]);
    }

    #[test]
    fn a_clock_stepped_back_keeps_the_order_by_time() {
        let mut w = Window::new(limits(10, 1_000, 1 << 20));
        let _ = w.finish(id(1), reply("a"), T0 + 5_000);
        // The clock steps back, then forward past the entry.
        let _ = w.finish(id(2), reply("b"), T0);
        assert_eq!(w.decide(id(2), T0 + 5_000), Decision::New);
        assert_eq!(w.expire(T0 + 5_000), [id(2)]);
        assert!(matches!(w.decide(id(1), T0 + 5_000), Decision::Replay(_)));
    }

    #[test]
    fn memory_stays_bounded_under_a_long_stream() {
        // Virtual time: 1 ms per request, 2 KiB of reply each.
        let mut w = Window::new(limits(1_000, 500, 100 << 10));
        let big = CachedReply {
            frames: vec![vec![7; 2048]],
            meta: vec![],
        };
        let mut forgotten = 0;
        for n in 0..20_000u64 {
            let now = T0 + n;
            assert_eq!(w.decide(id(n as u128), now), Decision::New);
            forgotten += w.begin(id(n as u128), now).len();
            forgotten += w.finish(id(n as u128), big.clone(), now).len();
            assert!(w.len() <= 1_000);
            assert!(w.reply_bytes() <= 100 << 10);
        }
        assert_eq!(
            forgotten + w.len(),
            20_000,
            "every id is held or was reported"
        );
        assert_eq!(w.len(), 50, "bytes are the bound that acts here");
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::HashMap as Map;

        #[derive(Debug, Clone)]
        enum Op {
            Begin(u8),
            Finish(u8, u8),
            Abandon(u8),
            Advance(u16),
            Expire,
        }

        fn op() -> impl Strategy<Value = Op> {
            // Few ids, so that duplicates, re-finishes and evictions are common.
            prop_oneof![
                4 => (0u8..24).prop_map(Op::Begin),
                4 => (0u8..24, 0u8..40).prop_map(|(i, n)| Op::Finish(i, n)),
                1 => (0u8..24).prop_map(Op::Abandon),
                2 => (0u16..400).prop_map(Op::Advance),
                1 => Just(Op::Expire),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            /// Whatever the sequence: the bounds hold, a running id is never forgotten,
            /// every id leaves the window only by abandon or a reported eviction, and
            /// `decide` agrees with what the window holds.
            #[test]
            fn bounds_hold_and_every_eviction_is_reported(
                max_ids in 1usize..8,
                max_age in 1u64..1_000,
                max_bytes in 0usize..60,
                ops in proptest::collection::vec(op(), 1..200),
            ) {
                let mut w = Window::new(limits(max_ids, max_age, max_bytes));
                let mut now = T0;
                // What the window should hold: id -> running?
                let mut held: Map<u128, bool> = Map::new();
                for op in ops {
                    let evicted = match op {
                        Op::Begin(i) => {
                            let id = id(i.into());
                            let was = w.decide(id, now);
                            let ev = w.begin(id, now);
                            if was == Decision::New {
                                held.insert(i.into(), true);
                            }
                            ev
                        }
                        Op::Finish(i, n) => {
                            let ev = w.finish(id(i.into()), reply(&"r".repeat(n.into())), now);
                            prop_assert!(!ev.contains(&id(i.into())), "finish evicted its own id");
                            held.insert(i.into(), false);
                            ev
                        }
                        Op::Abandon(i) => {
                            let was_running = held.get(&i.into()) == Some(&true);
                            prop_assert_eq!(w.abandon(id(i.into())), was_running);
                            if was_running {
                                held.remove(&i.into());
                            }
                            Vec::new()
                        }
                        Op::Advance(ms) => {
                            now += u64::from(ms);
                            Vec::new()
                        }
                        Op::Expire => w.expire(now),
                    };
                    for e in evicted {
                        let n = e.as_u128();
                        prop_assert_eq!(held.remove(&n), Some(false), "evicted {} not held done", n);
                    }
                    let running = held.values().filter(|r| **r).count();
                    prop_assert_eq!(w.len(), held.len());
                    prop_assert!(w.len() <= max_ids.max(running + 1), "{} ids", w.len());
                    prop_assert!(w.reply_bytes() <= max_bytes);
                    let mut bytes = 0;
                    for (&n, &is_running) in &held {
                        let state = w.get(id(n));
                        prop_assert!(state.is_some(), "{} lost", n);
                        let d = w.decide(id(n), now);
                        match state {
                            Some(State::Running) => {
                                prop_assert!(is_running);
                                prop_assert_eq!(d, Decision::Wait);
                            }
                            Some(State::Done(r)) => {
                                prop_assert!(!is_running);
                                bytes += r.as_ref().map_or(0, |r| r.size());
                                prop_assert!(matches!(
                                    d,
                                    Decision::Replay(_) | Decision::Handled | Decision::New
                                ));
                            }
                            None => {}
                        }
                    }
                    prop_assert_eq!(bytes, w.reply_bytes());
                }
            }
        }
    }
}
