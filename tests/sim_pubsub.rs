//! Reliable pub/sub in virtual time: publisher cores and a subscriber core joined by
//! seeded lossy links (the live PUB stream, and the replay channel both ways), with
//! drops, duplicates and reordering. Every seed must deliver 1..N exactly once and in
//! order; a lost tail is found by a heartbeat; trimmed history is reported as loss; a
//! dead publisher is found within its liveness; garbage is dropped; a durable
//! subscriber resumes from its cursor; a publisher restarted on its store keeps its
//! identity and sequence.

mod sim;

use std::time::{Duration, Instant};

use bosun::proto::frames::pubsub::{parse_live, Live};
use bosun::proto::frames::Frames;
use bosun::proto::publisher::{MemoryRing, Publisher, PublisherConfig, Retention, Transmit as PTx};
use bosun::proto::subscriber::{Event, OnSlow, Subscriber, SubscriberConfig, Transmit as STx};
use bosun::store::{Durability, Store};
use sim::{ms, Clock, Link, LinkConfig};
use uuid::Uuid;

/// The wall clock of the simulation at its origin (ms since the Unix epoch).
const WALL0: u64 = 1_700_000_000_000;

fn endpoint(i: usize) -> String {
    format!("tcp://pub{i}:5557")
}

fn pub_id(i: usize) -> Uuid {
    Uuid::from_u128(0xB05E_0000 + i as u128)
}

struct World {
    clock: Clock,
    pubs: Vec<Option<Publisher>>,
    /// Which publisher each replay endpoint reaches.
    endpoints: Vec<String>,
    sub: Subscriber,
    live: Link<Frames>,
    up: Link<(String, usize, Frames)>,
    down: Link<(usize, Frames)>,
    /// Whether a live message reaches the subscriber (beyond the link's own losses).
    pass: Box<dyn FnMut(&Frames) -> bool>,
    delivered: Vec<(Uuid, u64)>,
    events: Vec<(Duration, Event)>,
    /// The subscriber's slot endpoints (socket i is endpoints[i - 1]).
    slots: Vec<String>,
}

impl World {
    fn new(
        npubs: usize,
        pcfg: PublisherConfig,
        scfg: SubscriberConfig,
        given: &[String],
        live: LinkConfig,
        replay: LinkConfig,
        seed: u64,
    ) -> World {
        let clock = Clock::new();
        let pubs = (0..npubs)
            .map(|i| {
                Some(publisher(
                    pcfg,
                    i,
                    1,
                    Box::new(MemoryRing::new()),
                    clock.now(),
                ))
            })
            .collect();
        let sub = Subscriber::new(scfg, given, [], clock.now(), seed).unwrap();
        World {
            clock,
            pubs,
            endpoints: (0..npubs).map(endpoint).collect(),
            sub,
            live: Link::new(live, seed),
            up: Link::new(replay, seed ^ 0x55),
            down: Link::new(replay, seed ^ 0xaa),
            pass: Box::new(|_| true),
            delivered: Vec::new(),
            events: Vec::new(),
            slots: given.to_vec(),
        }
    }

    fn wall(&self) -> u64 {
        WALL0 + self.clock.elapsed().as_millis() as u64
    }

    fn publish(&mut self, i: usize, topic: &[u8], body: &[u8]) -> u64 {
        let now = self.clock.now();
        let wall = self.wall();
        let p = self.pubs[i].as_mut().expect("publisher up");
        let seq = p
            .publish(now, wall, topic.to_vec(), vec![body.to_vec()])
            .unwrap();
        self.pump();
        seq
    }

    fn pump(&mut self) {
        let now = self.clock.now();
        for (i, p) in self.pubs.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            while let Some(t) = p.poll_transmit() {
                match t {
                    PTx::Publish(f) => {
                        if (self.pass)(&f) {
                            self.live.send(now, f);
                        }
                    }
                    PTx::Reply(mut f) => {
                        let id = f.remove(0);
                        let slot = usize::from(id[0]);
                        let _ = i;
                        self.down.send(now, (slot, f));
                    }
                }
            }
            while p.poll_event().is_some() {}
        }
        while let Some(t) = self.sub.poll_transmit() {
            match t {
                STx::Send(slot, f) => {
                    let ep = self.slots[slot - 1].clone();
                    self.up.send(now, (ep, slot, f));
                }
                STx::Reset(_) => {}
                STx::Connect(ep) => self.slots.push(ep),
            }
        }
        while let Some(e) = self.sub.poll_event() {
            if let Event::Delivered(m) = &e {
                self.delivered.push((m.publisher, m.seq));
            }
            self.events.push((self.clock.elapsed(), e));
        }
    }

    /// Runs the world until `offset` after the origin.
    fn run_until(&mut self, offset: Duration) {
        let end = self.clock.at(offset);
        loop {
            let mut next = [
                self.live.next_delivery(),
                self.up.next_delivery(),
                self.down.next_delivery(),
                self.sub.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .chain(self.pubs.iter().flatten().filter_map(|p| p.poll_timeout()))
            .min();
            if next.is_some_and(|n| n > end) {
                next = None;
            }
            let Some(at) = next else {
                self.clock.advance_to(end.max(self.clock.now()));
                self.tick();
                return;
            };
            self.clock.advance_to(at.max(self.clock.now()));
            let now = self.clock.now();
            while let Some(f) = self.live.pop_due(now) {
                self.sub.handle_input(now, 0, f);
            }
            while let Some((ep, slot, f)) = self.up.pop_due(now) {
                let Some(i) = self.endpoints.iter().position(|e| *e == ep) else {
                    continue;
                };
                if let Some(p) = self.pubs[i].as_mut() {
                    let mut frames = vec![vec![slot as u8]];
                    frames.extend(f);
                    p.handle_replay_input(frames);
                }
            }
            while let Some((slot, f)) = self.down.pop_due(now) {
                self.sub.handle_input(now, slot, f);
            }
            self.tick();
        }
    }

    fn tick(&mut self) {
        let now = self.clock.now();
        let wall = self.wall();
        for p in self.pubs.iter_mut().flatten() {
            p.handle_wall_clock(wall);
            p.handle_timeout(now);
        }
        self.sub.handle_timeout(now);
        self.pump();
    }

    /// Publisher 0 publishes message i at i ms, for each i in `at`.
    fn stream(&mut self, at: std::ops::RangeInclusive<u64>) {
        for i in at {
            self.run_until(ms(i));
            self.publish(0, b"t", b"x");
        }
    }

    fn seqs(&self, i: usize) -> Vec<u64> {
        self.delivered
            .iter()
            .filter(|(p, _)| *p == pub_id(i))
            .map(|(_, s)| *s)
            .collect()
    }

    fn lost(&self) -> Vec<(u64, u64)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Lost { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect()
    }
}

fn publisher(
    cfg: PublisherConfig,
    i: usize,
    next: u64,
    retention: Box<dyn Retention>,
    now: Instant,
) -> Publisher {
    Publisher::new(cfg, pub_id(i), next, retention, &endpoint(i), now).unwrap()
}

fn lossy() -> LinkConfig {
    LinkConfig {
        loss: 0.1,
        duplicate: 0.05,
        delay_min: ms(0),
        delay_max: ms(20),
    }
}

fn replay_link() -> LinkConfig {
    LinkConfig {
        loss: 0.02,
        duplicate: 0.02,
        delay_min: ms(1),
        delay_max: ms(5),
    }
}

fn late_joiner() -> SubscriberConfig {
    SubscriberConfig {
        from_start: true,
        ..SubscriberConfig::default()
    }
}

fn seq_of(f: &Frames) -> Option<u64> {
    match parse_live(f.clone()) {
        Ok(Live::Data(d)) => Some(d.seq),
        _ => None,
    }
}

#[test]
fn every_seed_delivers_each_message_once_in_order() {
    const N: u64 = 300;
    let mut duplicates = 0;
    let mut repaired = 0;
    for seed in 0..200 {
        let mut w = World::new(
            1,
            PublisherConfig::default(),
            late_joiner(),
            &[endpoint(0)],
            lossy(),
            replay_link(),
            seed,
        );
        for i in 0..N {
            w.run_until(ms(5 * i));
            w.publish(0, b"t", format!("m{i}").as_bytes());
        }
        w.run_until(ms(5 * N) + Duration::from_secs(10));
        let want: Vec<u64> = (1..=N).collect();
        assert_eq!(w.seqs(0), want, "seed {seed}");
        assert!(w.lost().is_empty(), "seed {seed}: {:?}", w.lost());
        duplicates += w.sub.stats().duplicates;
        repaired += w.sub.stats().replays;
    }
    assert!(
        duplicates > 0,
        "the link duplicated, the subscriber dropped them"
    );
    assert!(repaired > 0, "gaps were repaired by replay");
}

#[test]
fn several_publishers_interleave_each_in_order() {
    const N: u64 = 200;
    for seed in 0..50 {
        // Heartbeats announce nothing connectable: the subscriber must find which of
        // the given endpoints is whose (UNKNOWN from the wrong one).
        let mut w = World::new(
            2,
            PublisherConfig::default(),
            late_joiner(),
            &[endpoint(1), endpoint(0)],
            lossy(),
            replay_link(),
            seed,
        );
        for p in w.pubs.iter_mut().flatten() {
            p.set_replay_endpoint("tcp://0.0.0.0:5557");
        }
        for i in 0..N {
            w.run_until(ms(5 * i));
            w.publish((i % 2) as usize, b"t", b"x");
            w.publish(((i + 1) % 2) as usize, b"t", b"y");
        }
        w.run_until(ms(5 * N) + Duration::from_secs(15));
        let want: Vec<u64> = (1..=N).collect();
        assert_eq!(w.seqs(0), want, "seed {seed}");
        assert_eq!(w.seqs(1), want, "seed {seed}");
    }
}

#[test]
fn a_lost_tail_is_repaired_after_a_heartbeat() {
    let mut w = perfect_world(PublisherConfig::default(), 1);
    w.pass = Box::new(|f| seq_of(f).map_or(true, |s| s <= 7));
    for i in 0..10 {
        w.run_until(ms(10 * i));
        w.publish(0, b"t", b"x");
    }
    w.run_until(ms(500));
    assert_eq!(
        w.seqs(0),
        (1..=7).collect::<Vec<_>>(),
        "nothing after 7 yet"
    );
    w.run_until(ms(1200));
    assert_eq!(
        w.seqs(0),
        (1..=10).collect::<Vec<_>>(),
        "the heartbeat showed the tail"
    );
}

#[test]
fn trimmed_history_is_reported_as_loss_not_hidden() {
    let cfg = PublisherConfig {
        retain_count: 5,
        ..PublisherConfig::default()
    };
    let mut w = World::new(
        1,
        cfg,
        SubscriberConfig::default(),
        &[endpoint(0)],
        LinkConfig::PERFECT,
        LinkConfig::PERFECT,
        2,
    );
    w.pass = Box::new(|f| seq_of(f).map_or(true, |s| s <= 3 || s == 13));
    // A burst: by the time the subscriber asks, only 16..=20 are retained.
    for _ in 0..20 {
        w.publish(0, b"t", b"x");
    }
    w.run_until(ms(2000));
    let mut want: Vec<u64> = vec![1, 2, 3, 13];
    want.extend(16..=20);
    assert_eq!(w.seqs(0), want);
    assert_eq!(w.lost(), vec![(4, 12), (14, 15)]);
    assert_eq!(w.sub.stats().lost, 11);
}

#[test]
fn a_dead_publisher_is_found_within_its_liveness_and_comes_back() {
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        SubscriberConfig::default(),
        &[endpoint(0)],
        LinkConfig::PERFECT,
        LinkConfig::PERFECT,
        3,
    );
    w.publish(0, b"t", b"x");
    w.run_until(ms(2500));
    let stopped = w.clock.elapsed();
    let held = w.pubs[0].take();
    w.run_until(ms(10_000));
    let dead: Vec<Duration> = w
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PublisherDead { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(dead.len(), 1, "{:?}", w.events);
    // Last heard at the heartbeat at 2 s; dead 3 intervals later.
    assert!(
        dead[0] > stopped && dead[0] <= ms(2000) + ms(3000),
        "{dead:?}"
    );
    w.pubs[0] = held;
    w.publish(0, b"t", b"y");
    w.run_until(ms(12_000));
    assert!(w
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::PublisherBack { .. })));
    assert_eq!(w.seqs(0), vec![1, 2]);
}

#[test]
fn garbage_is_dropped_and_counted_and_service_goes_on() {
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        late_joiner(),
        &[endpoint(0)],
        LinkConfig::PERFECT,
        LinkConfig::PERFECT,
        4,
    );
    let junk: Vec<Frames> = vec![
        vec![],
        vec![b"x".to_vec()],
        vec![b"BSP-R1".to_vec()],
        vec![b"BSP-R1".to_vec(), b"END".to_vec(), vec![1]],
        vec![b"BSP-R1".to_vec(), b"NOPE".to_vec()],
        vec![b"t".to_vec(), b"p".to_vec(), b"\xffBSP".to_vec()],
    ];
    let now = w.clock.now();
    {
        let p = w.pubs[0].as_mut().unwrap();
        for j in &junk {
            let mut f = vec![vec![1u8]];
            f.extend(j.clone());
            p.handle_replay_input(f);
        }
        assert_eq!(p.stats().garbage, junk.len() as u64);
    }
    for j in &junk {
        w.sub.handle_input(now, 0, j.clone());
        w.sub.handle_input(now, 1, j.clone());
    }
    assert_eq!(w.sub.stats().garbage, 2 * junk.len() as u64);
    w.pump();
    for i in 0..5 {
        w.run_until(ms(10 * i));
        w.publish(0, b"t", b"x");
    }
    w.run_until(ms(1000));
    assert_eq!(w.seqs(0), vec![1, 2, 3, 4, 5]);
}

#[test]
fn topics_are_filtered_by_prefix_without_hiding_gaps() {
    let scfg = SubscriberConfig {
        topics: vec![b"a.".to_vec(), b"c".to_vec()],
        ..SubscriberConfig::default()
    };
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        scfg,
        &[endpoint(0)],
        lossy(),
        replay_link(),
        5,
    );
    let topics: [&[u8]; 4] = [b"a.x", b"b", b"c", b"ab"];
    for i in 0..100u64 {
        w.run_until(ms(5 * i));
        w.publish(0, topics[(i % 4) as usize], b"x");
    }
    w.run_until(ms(5000));
    let want: Vec<u64> = (1..=100)
        .filter(|s| (s - 1) % 4 == 0 || (s - 1) % 4 == 2)
        .collect();
    assert_eq!(w.seqs(0), want);
}

#[test]
fn a_durable_subscriber_resumes_after_its_cursor() {
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        SubscriberConfig::default(),
        &[endpoint(0)],
        lossy(),
        replay_link(),
        6,
    );
    for i in 0..100u64 {
        w.run_until(ms(5 * i));
        w.publish(0, b"t", b"x");
    }
    // The subscriber stops having processed (and persisted) up to 60, and restarts.
    let now = w.clock.now();
    w.sub = Subscriber::new(
        SubscriberConfig::default(),
        &[endpoint(0)],
        [(pub_id(0), 60)],
        now,
        7,
    )
    .unwrap();
    w.slots = vec![endpoint(0)];
    w.delivered.clear();
    for i in 100..150u64 {
        w.run_until(ms(5 * i));
        w.publish(0, b"t", b"x");
    }
    w.run_until(ms(5 * 150 + 5000));
    assert_eq!(w.seqs(0), (61..=150).collect::<Vec<_>>());
}

#[test]
fn a_slow_subscriber_fails_loudly_when_told_to() {
    let scfg = SubscriberConfig {
        max_behind: 10,
        on_slow: OnSlow::Fail,
        ..SubscriberConfig::default()
    };
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        scfg,
        &[endpoint(0)],
        LinkConfig::PERFECT,
        LinkConfig {
            delay_min: ms(500),
            delay_max: ms(500),
            ..LinkConfig::PERFECT
        },
        8,
    );
    w.pass = Box::new(|f| seq_of(f).map_or(true, |s| s == 1 || s > 40));
    for _ in 0..50 {
        w.publish(0, b"t", b"x");
    }
    w.run_until(ms(100));
    assert!(
        w.events
            .iter()
            .any(|(_, e)| matches!(e, Event::TooSlow { max_behind: 10, .. })),
        "{:?}",
        w.events
    );
}

#[test]
fn a_publisher_restarted_on_its_store_keeps_its_identity_and_sequence() {
    for seed in 0..40u64 {
        let store = Store::memory();
        let mut w = World::new(
            1,
            PublisherConfig::default(),
            late_joiner(),
            &[endpoint(0)],
            lossy(),
            replay_link(),
            seed,
        );
        let open = |store: &Store, now| {
            let (id, next, retention) =
                bosun::store::published::open(store, Durability::Batched, || pub_id(0)).unwrap();
            assert_eq!(id, pub_id(0));
            (
                Publisher::new(
                    PublisherConfig::default(),
                    id,
                    next,
                    Box::new(retention),
                    &endpoint(0),
                    now,
                )
                .unwrap(),
                next,
            )
        };
        let (p, _) = open(&store, w.clock.now());
        w.pubs[0] = Some(p);
        let crash_at = 50 + seed % 50;
        for i in 0..crash_at {
            w.run_until(ms(5 * i));
            w.publish(0, b"t", b"x");
            // Batched: one commit per turn, before the messages go out.
            store.flush().unwrap();
        }
        // A crash: everything sent was committed; the new process opens the store.
        w.pubs[0] = None;
        let store = store.crash_and_reopen().unwrap();
        let (p, next) = open(&store, w.clock.now());
        assert_eq!(next, crash_at + 1, "seed {seed}");
        w.pubs[0] = Some(p);
        for i in crash_at..150 {
            w.run_until(ms(5 * i));
            w.publish(0, b"t", b"x");
            store.flush().unwrap();
        }
        w.run_until(ms(5 * 150 + 10_000));
        assert_eq!(w.seqs(0), (1..=150).collect::<Vec<_>>(), "seed {seed}");
    }
}

#[test]
fn zero_settings_are_refused_naming_the_field() {
    let now = Clock::new().now();
    let bad = |cfg: SubscriberConfig| sim::rejected(Subscriber::new(cfg, &[], [], now, 0));
    let d = SubscriberConfig::default;
    assert_eq!(
        bad(SubscriberConfig {
            timeout: Duration::ZERO,
            ..d()
        }),
        "timeout"
    );
    assert_eq!(
        bad(SubscriberConfig {
            max_behind: 0,
            ..d()
        }),
        "max_behind"
    );
    let mut hb = d();
    hb.heartbeat.interval = Duration::ZERO;
    assert_eq!(bad(hb), "heartbeat.interval");
    assert_eq!(bad(d()), "accepted");
}

#[test]
fn a_publisher_restarted_without_a_store_is_a_new_stream_and_the_old_one_is_dead() {
    for seed in 0..30u64 {
        let mut w = World::new(
            1,
            PublisherConfig::default(),
            late_joiner(),
            &[endpoint(0)],
            lossy(),
            replay_link(),
            seed,
        );
        for i in 0..50u64 {
            w.run_until(ms(5 * i));
            w.publish(0, b"t", b"old");
        }
        w.run_until(ms(8000));
        // Restarted in memory: a new id, its sequence from 1, the same endpoints.
        let now = w.clock.now();
        w.pubs[0] = Some(
            Publisher::new(
                PublisherConfig::default(),
                pub_id(7),
                1,
                Box::new(MemoryRing::new()),
                &endpoint(0),
                now,
            )
            .unwrap(),
        );
        for i in 0..50u64 {
            w.run_until(ms(8000 + 5 * i));
            w.publish(0, b"t", b"new");
        }
        w.run_until(ms(30_000));
        assert_eq!(w.seqs(0), (1..=50).collect::<Vec<_>>(), "seed {seed}");
        let new: Vec<u64> = w
            .delivered
            .iter()
            .filter(|(p, _)| *p == pub_id(7))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(new, (1..=50).collect::<Vec<_>>(), "seed {seed}");
        assert!(
            w.events.iter().any(|(_, e)| *e
                == Event::PublisherDead {
                    publisher: pub_id(0)
                }),
            "seed {seed}"
        );
    }
}

/// A live stream that reaches the subscriber only from the first message after `seq`
/// on (heartbeats included): how a SUB socket that joins late sees it.
fn joins_after(seq: u64) -> Box<dyn FnMut(&Frames) -> bool> {
    let mut open = false;
    Box::new(move |f| {
        open = open || seq_of(f).is_some_and(|s| s > seq);
        open
    })
}

/// The publisher of `joining_world` publishes 1..=10 before the subscriber's start time
/// (500 ms), 11..=30 after it; the live stream loses everything up to 20 (the slow join
/// of a SUB socket).
fn joining_world(given: &[String], announce: &str, seed: u64) -> World {
    joining_world_with(PublisherConfig::default(), given, announce, seed)
}

/// [`joining_world`] with a publisher configured by `pcfg`.
fn joining_world_with(pcfg: PublisherConfig, given: &[String], announce: &str, seed: u64) -> World {
    let scfg = SubscriberConfig {
        since_ms: Some(WALL0 + 500),
        // The live messages after the join fit in the buffer; counting the 20 before
        // them as behind would fail.
        max_behind: 15,
        on_slow: OnSlow::Fail,
        ..SubscriberConfig::default()
    };
    let mut w = World::new(
        1,
        pcfg,
        scfg,
        given,
        LinkConfig::PERFECT,
        replay_link(),
        seed,
    );
    w.pubs[0]
        .as_mut()
        .expect("up")
        .set_replay_endpoint(announce);
    w.pass = joins_after(20);
    for i in 1..=30u64 {
        let at = if i <= 10 { 40 * i } else { 500 + 10 * i };
        w.run_until(ms(at));
        w.publish(0, b"t", format!("m{i}").as_bytes());
    }
    w
}

#[test]
fn a_subscriber_started_before_its_messages_gets_every_one_published_since_it_started() {
    for seed in 0..50 {
        let mut w = joining_world(&[], &endpoint(0), seed);
        w.run_until(Duration::from_secs(20));
        let want: Vec<u64> = (11..=30).collect();
        assert_eq!(
            w.seqs(0),
            want,
            "seed {seed}: 11..=30 were published after it started"
        );
        assert!(w.lost().is_empty(), "seed {seed}: {:?}", w.lost());
        let joined = w.events.iter().find_map(|(_, e)| match e {
            Event::Joined { since_ms, .. } => Some(*since_ms),
            _ => None,
        });
        assert_eq!(
            joined,
            Some(Some(WALL0 + 500)),
            "seed {seed}: joined by time"
        );
        let slow = w
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::TooSlow { .. } | Event::JoinedLive { .. }));
        assert!(
            !slow,
            "seed {seed}: joining is not falling behind: {:?}",
            w.events
        );
    }
}

/// A publisher that retains 5 messages has trimmed some of what it published since
/// the subscriber started by the time the subscriber joins: the join says so
/// (`TrimmedSinceStart`, not silence) and delivers from the oldest retained on, with
/// no gap after it and nothing before the join time counted as lost.
#[test]
fn a_join_that_finds_messages_published_since_its_start_trimmed_says_they_are_lost() {
    for seed in 0..20 {
        let pcfg = PublisherConfig {
            retain_count: 5,
            ..PublisherConfig::default()
        };
        let mut w = joining_world_with(pcfg, &[], &endpoint(0), seed);
        w.run_until(Duration::from_secs(20));
        let told: Vec<u64> = w
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::TrimmedSinceStart { oldest, .. } => Some(*oldest),
                _ => None,
            })
            .collect();
        let [oldest] = told[..] else {
            panic!("seed {seed}: told once, got {told:?}: {:?}", w.events);
        };
        assert!((12..=30).contains(&oldest), "seed {seed}: oldest {oldest}");
        // From the oldest retained, or from the first seen live (21), buffered here.
        let first = oldest.min(21);
        assert_eq!(w.seqs(0), (first..=30).collect::<Vec<u64>>(), "seed {seed}");
        assert!(w.lost().is_empty(), "seed {seed}: {:?}", w.lost());
    }
}

/// A late joiner (`from_start`) with no endpoint given, whose publisher announces a
/// wildcard one (`tcp://*:5557`): its history and a message dropped on the way cannot
/// be fetched. It says so once (`NoReplay`) and goes on at the next heartbeat: the
/// history skipped silently, the dropped message reported lost, everything else
/// delivered (it waited forever before).
#[test]
fn a_gap_with_nowhere_to_ask_is_said_and_skipped_not_waited_on_forever() {
    for seed in 0..10 {
        let mut w = World::new(
            1,
            PublisherConfig::default(),
            late_joiner(),
            &[],
            LinkConfig::PERFECT,
            replay_link(),
            seed,
        );
        w.pubs[0]
            .as_mut()
            .expect("up")
            .set_replay_endpoint("tcp://*:5557");
        let mut joined = joins_after(10);
        w.pass = Box::new(move |f: &Frames| joined(f) && seq_of(f) != Some(15));
        for i in 1..=30u64 {
            w.run_until(ms(10 * i));
            w.publish(0, b"t", format!("m{i}").as_bytes());
        }
        w.run_until(Duration::from_secs(5));
        let want: Vec<u64> = (11..=30).filter(|s| *s != 15).collect();
        assert_eq!(w.seqs(0), want, "seed {seed}");
        let said = w
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::NoReplay { endpoint, .. } if endpoint == "tcp://*:5557"))
            .count();
        assert_eq!(said, 1, "seed {seed}: {:?}", w.events);
        assert_eq!(w.lost(), vec![(15, 15)], "seed {seed}");
    }
}

#[test]
fn a_join_with_no_replay_endpoint_goes_live_and_says_so() {
    // Nothing given, nothing connectable announced: the join cannot be repaired.
    let mut w = joining_world(&[], "tcp://*:5557", 1);
    w.run_until(Duration::from_secs(20));
    assert_eq!(w.seqs(0), (21..=30).collect::<Vec<u64>>());
    let live: Vec<u64> = w
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::JoinedLive { from, .. } => Some(*from),
            _ => None,
        })
        .collect();
    assert_eq!(live, vec![21], "{:?}", w.events);
    assert!(w.lost().is_empty(), "not reported as loss: {:?}", w.lost());
    // Live at the first heartbeat (1 s), which says there is nowhere to ask: not after
    // the join window (5 s after contact at 710 ms).
    let at = w.events.iter().find_map(|(t, e)| match e {
        Event::JoinedLive { .. } => Some(*t),
        _ => None,
    });
    assert!(at.is_some_and(|t| t < ms(1100)), "live at {at:?}");
}

/// A late joiner that fails past 10 behind, given the endpoint, over a perfect live
/// link and `replay`.
fn strict_late_joiner(replay: LinkConfig, seed: u64) -> World {
    let scfg = SubscriberConfig {
        max_behind: 10,
        on_slow: OnSlow::Fail,
        ..late_joiner()
    };
    World::new(
        1,
        PublisherConfig::default(),
        scfg,
        &[endpoint(0)],
        LinkConfig::PERFECT,
        replay,
        seed,
    )
}

#[test]
fn fetching_the_history_of_a_late_joiner_is_not_falling_behind() {
    let mut w = strict_late_joiner(LinkConfig::PERFECT, 3);
    // 500 messages before the subscriber hears anything, then 5 live ones.
    w.pass = joins_after(500);
    w.stream(1..=505);
    w.run_until(Duration::from_secs(10));
    assert_eq!(w.seqs(0), (1..=505).collect::<Vec<u64>>());
    let slow = slow_events(&w);
    assert!(slow.is_empty(), "history is not lag: {slow:?}");
}

/// A late joiner whose first contact is a heartbeat (it hears nothing of the first
/// 5,000 messages, then the heartbeat at 5 s), while the stream goes on at a message a
/// millisecond during its history fetch: not falling behind, with `--max-behind 10`.
/// (A heartbeat saying nothing new once counted as having caught up, which spent the
/// start window's grace at once.)
#[test]
fn a_late_joiner_that_first_hears_a_heartbeat_is_not_slow_while_it_fetches_history() {
    for seed in 0..10 {
        let mut w = strict_late_joiner(replay_link(), seed);
        let mut open = false;
        w.pass = Box::new(move |f: &Frames| {
            let late = |l: Live| matches!(l, Live::Heartbeat(hb) if hb.last >= 4000);
            open = open || parse_live(f.clone()).is_ok_and(late);
            open
        });
        // The heartbeat at 5 s is the first thing that passes.
        w.stream(1..=5200);
        w.run_until(Duration::from_secs(20));
        assert_eq!(w.seqs(0), (1..=5200).collect::<Vec<u64>>(), "seed {seed}");
        let slow = slow_events(&w);
        assert!(slow.is_empty(), "seed {seed}: history is not lag: {slow:?}");
    }
}

/// One publisher and a subscriber with its defaults, given the endpoint, over perfect
/// links.
fn perfect_world(pcfg: PublisherConfig, seed: u64) -> World {
    World::new(
        1,
        pcfg,
        SubscriberConfig::default(),
        &[endpoint(0)],
        LinkConfig::PERFECT,
        LinkConfig::PERFECT,
        seed,
    )
}

fn count_events(w: &World, pred: impl Fn(&Event) -> bool) -> usize {
    w.events.iter().filter(|(_, e)| pred(e)).count()
}

#[test]
fn a_subscriber_that_hears_nothing_says_so_once() {
    let mut w = perfect_world(PublisherConfig::default(), 1);
    w.pass = Box::new(|_| false); // nothing reaches it: a wrong port, say
    w.run_until(Duration::from_secs(30));
    let said: Vec<_> = w
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::NothingHeard { .. }))
        .collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert_eq!(
        said[0].0,
        Duration::from_secs(3),
        "after the liveness (3 x 1 s)"
    );

    // Heard at once: never said.
    let mut w = perfect_world(PublisherConfig::default(), 1);
    w.run_until(Duration::from_secs(30));
    assert_eq!(
        count_events(&w, |e| matches!(e, Event::NothingHeard { .. })),
        0
    );
}

#[test]
fn heartbeats_slower_than_expected_are_named_once() {
    let slow = PublisherConfig {
        heartbeat_interval: Duration::from_secs(5),
        ..PublisherConfig::default()
    };
    let mut w = perfect_world(slow, 1);
    w.run_until(Duration::from_secs(60));
    let said: Vec<(Duration, Duration)> = w
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::SlowHeartbeats {
                every, expected, ..
            } => Some((*every, *expected)),
            _ => None,
        })
        .collect();
    assert_eq!(
        said,
        vec![(Duration::from_secs(5), Duration::from_secs(1))],
        "{:?}",
        w.events
    );

    // The same intervals on both sides: never said, also across a long busy stream.
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        SubscriberConfig::default(),
        &[endpoint(0)],
        lossy(),
        replay_link(),
        2,
    );
    for i in 0..2000 {
        w.run_until(ms(10 * i));
        w.publish(0, b"t", b"x");
    }
    w.run_until(Duration::from_secs(60));
    assert_eq!(
        count_events(&w, |e| matches!(e, Event::SlowHeartbeats { .. })),
        0
    );

    // The same intervals, but only every third heartbeat arrives (a publisher that
    // restarts every few seconds, a flapping link): steady long gaps, which the
    // publisher's own word on its interval says are not a setting.
    let mut w = perfect_world(PublisherConfig::default(), 3);
    let mut beats = 0u64;
    w.pass = Box::new(move |f: &Frames| {
        if !parse_live(f.clone()).is_ok_and(|l| matches!(l, Live::Heartbeat(_))) {
            return true;
        }
        beats += 1;
        beats % 3 == 0
    });
    w.run_until(Duration::from_secs(60));
    assert_eq!(
        count_events(&w, |e| matches!(e, Event::SlowHeartbeats { .. })),
        0,
        "{:?}",
        w.events
    );
}

fn slow_events(w: &World) -> Vec<&(Duration, Event)> {
    w.events
        .iter()
        .filter(|(_, e)| matches!(e, Event::TooSlow { .. } | Event::Behind { .. }))
        .collect()
}

#[test]
fn waiting_for_the_replay_endpoint_or_a_backlog_is_not_falling_behind() {
    // Joining a stream of a message a millisecond with no endpoint given: the live
    // messages pile up until a heartbeat names the endpoint (up to 1 s), then the
    // subscriber catches up by replay. That wait is not slowness.
    let strict = SubscriberConfig {
        since_ms: Some(WALL0),
        max_behind: 10,
        on_slow: OnSlow::Fail,
        ..SubscriberConfig::default()
    };
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        strict.clone(),
        &[],
        LinkConfig::PERFECT,
        LinkConfig::PERFECT,
        4,
    );
    w.pass = joins_after(50);
    w.stream(1..=3000);
    w.run_until(Duration::from_secs(10));
    assert_eq!(w.seqs(0), (1..=3000).collect::<Vec<_>>());
    assert!(slow_events(&w).is_empty(), "{:?}", slow_events(&w));

    // A durable subscriber restarted 4,940 behind its cursor: the backlog is not lag.
    let mut w = World::new(
        1,
        PublisherConfig::default(),
        strict.clone(),
        &[endpoint(0)],
        LinkConfig::PERFECT,
        LinkConfig::PERFECT,
        5,
    );
    w.stream(1..=5000);
    let now = w.clock.now();
    w.sub = Subscriber::new(strict, &[endpoint(0)], [(pub_id(0), 60)], now, 7).unwrap();
    w.slots = vec![endpoint(0)];
    w.delivered.clear();
    w.stream(5001..=5100);
    w.run_until(Duration::from_secs(20));
    assert_eq!(w.seqs(0), (61..=5100).collect::<Vec<_>>());
    assert!(slow_events(&w).is_empty(), "{:?}", slow_events(&w));
}
