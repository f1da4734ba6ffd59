//! The driver loop, written once: every pattern is a [`Core`] (a pure state machine)
//! and an arrangement of [`Sockets`], driven by [`Driver::run`].
//!
//! The loop waits in `zmq::poll` until the core's next deadline (at most
//! [`SHUTDOWN_CHECK`](crate::io::SHUTDOWN_CHECK), so a stop is seen within a tenth of a
//! second), feeds the core what arrived (at most [`BATCH`] messages per socket per turn,
//! so one busy socket cannot starve another or the timers), then the passing of time.
//! After every input it applies what the core wants done to the sockets, then hands the
//! core's events to the caller's `on` function, which may answer requests (the core
//! then has more to send) or end the run.
//!
//! The arrangements the patterns need:
//! - one or two bound sockets (a server, a broker; a queue's frontend and backend),
//!   made by [`Sockets::bound`];
//! - a connecting socket that the core re-makes on reconnect or retry (a client, a
//!   worker), made by [`Sockets::connecting`];
//! - a SUB socket and one DEALER per publisher (a subscriber), more DEALERs added by
//!   [`Sockets::add_connecting`] or by the core ([`Op::Add`]) as publishers are found.
//!
//! Every socket comes from the one [`Transport`].

use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, TransportError};
use crate::io::guard::Guarded;
use crate::io::transport::{self, Transport};
use crate::io::{self, Shutdown};
use crate::proto::frames::wire::Parts;
use crate::proto::frames::Frames;

/// Most messages read from one socket in one turn.
pub const BATCH: usize = 256;
/// Most turns in a row that read a socket left readable by the last turn without
/// polling first: then a poll, so that the other sockets are looked at too.
pub const HOT_TURNS: u32 = 256;

/// Most sockets in one arrangement: the request patterns need one or two (a queue's
/// frontend and backend); a subscriber needs its SUB socket plus a DEALER per publisher
/// it follows (at most [`MAX_REPLAY_ENDPOINTS`](crate::proto::subscriber::MAX_REPLAY_ENDPOINTS)).
/// The poll set is built on the stack; a slot with no socket costs nothing in `poll(2)`.
pub const MAX_SLOTS: usize = 1 + crate::proto::subscriber::MAX_REPLAY_ENDPOINTS;

/// What a core asks the driver to do to a socket (by its index in the arrangement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Send this message (without blocking; a message that cannot go now is logged
    /// and dropped, and the protocol's retries recover it).
    Send(usize, Frames),
    /// Make the socket (of a connecting slot) and connect it.
    Open(usize),
    /// Close the socket, letting it flush within the linger.
    Close(usize),
    /// Close the socket at once, dropping what it holds.
    Discard(usize),
    /// Close the socket at once, dropping what it holds, and make a fresh one: a
    /// connecting slot connects it again, a bound slot binds it again.
    Reset(usize),
    /// Add a socket of `kind` connected to `endpoints` as the next slot (a subscriber's
    /// DEALER to a replay endpoint it learned). Beyond [`MAX_SLOTS`] it is logged and
    /// not made.
    Add {
        /// The socket type.
        kind: zmq::SocketType,
        /// Where it connects.
        endpoints: Vec<String>,
    },
}

/// A protocol core as the driver sees it. Each pattern's core implements it by naming
/// its own `handle_*` / `poll_*` functions; see the core's type for the contract.
pub trait Core {
    /// What the core reports to the application.
    type Event;
    /// A message arrived on socket `socket`.
    fn handle_input(&mut self, now: Instant, socket: usize, frames: Frames);
    /// Time passed.
    fn handle_timeout(&mut self, now: Instant);
    /// The next thing to do to a socket.
    fn poll_op(&mut self) -> Option<Op>;
    /// The next message to send that the core keeps in a buffer of its own (see
    /// [`WireQueue`](crate::proto::frames::wire::WireQueue)): its socket and its frames,
    /// sent with no allocation per frame. Asked after [`Core::poll_op`] has nothing;
    /// a core that queues its sends both ways keeps their order itself. Default: none.
    fn poll_send(&mut self) -> Option<(usize, Parts<'_>)> {
        None
    }
    /// The next event.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When to call [`Core::handle_timeout`] next.
    fn poll_timeout(&self) -> Option<Instant>;
}

/// What the driver hands to the caller's `on` function.
#[derive(Debug)]
pub enum Input<E> {
    /// An event of the core.
    Event(E),
    /// The extra socket given to [`Driver::run`] is readable.
    Wake,
    /// Shutdown was triggered: say goodbye and return [`Flow::Break`].
    Stop,
}

/// Whether [`Driver::run`] goes on.
#[derive(Debug)]
pub enum Flow<R> {
    /// Go on.
    Continue,
    /// Stop now (after applying what the core still wants sent) and return this.
    Break(R),
}

enum Plan {
    Bind(String),
    Connect(Vec<String>),
}

struct Slot {
    kind: zmq::SocketType,
    plan: Plan,
    socket: Option<zmq::Socket>,
    /// Sockets made for this slot so far.
    opened: u64,
}

/// The sockets of one driver, made through one [`Transport`].
pub struct Sockets {
    transport: Transport,
    slots: Vec<Slot>,
    /// Told of every message sent (a guarded worker's heartbeat clock).
    sent: Option<Arc<Guarded>>,
}

impl Sockets {
    /// Binds one socket per `(kind, endpoint)`; [`Sockets::endpoint`] gives each
    /// resolved endpoint. Panics with more than [`MAX_SLOTS`] specs (a broken arrangement,
    /// not bad input).
    pub fn bound(
        transport: &Transport,
        specs: &[(zmq::SocketType, &str)],
    ) -> Result<Sockets, TransportError> {
        assert!(
            specs.len() <= MAX_SLOTS,
            "an arrangement has at most {MAX_SLOTS} sockets"
        );
        let mut slots = Vec::with_capacity(specs.len());
        for &(kind, endpoint) in specs {
            let (s, bound) = transport.bind(kind, endpoint)?;
            slots.push(Slot {
                kind,
                plan: Plan::Bind(bound),
                socket: Some(s),
                opened: 1,
            });
        }
        Ok(Sockets {
            transport: transport.clone(),
            slots,
            sent: None,
        })
    }

    /// One bound socket made by the caller (through the transport) with options of its
    /// own, such as a routing identity.
    pub fn bound_socket(
        transport: &Transport,
        kind: zmq::SocketType,
        socket: zmq::Socket,
        endpoint: &str,
    ) -> Result<Sockets, TransportError> {
        let bound = transport::bind(&socket, endpoint)?;
        Ok(Sockets {
            transport: transport.clone(),
            slots: vec![Slot {
                kind,
                plan: Plan::Bind(bound),
                socket: Some(socket),
                opened: 1,
            }],
            sent: None,
        })
    }

    /// One socket of `kind` that connects to every one of `endpoints` when opened; it is
    /// opened now when `open` is true, else when the core says [`Op::Open`].
    pub fn connecting(
        transport: &Transport,
        kind: zmq::SocketType,
        endpoints: &[String],
        open: bool,
    ) -> Result<Sockets, TransportError> {
        let mut sockets = Sockets {
            transport: transport.clone(),
            slots: vec![Slot {
                kind,
                plan: Plan::Connect(endpoints.to_vec()),
                socket: None,
                opened: 0,
            }],
            sent: None,
        };
        if open {
            sockets.open(0)?;
        }
        Ok(sockets)
    }

    /// Adds a socket of `kind` that connects to every one of `endpoints` as the next
    /// slot, opened now when `open` is true; returns its index. Refused beyond
    /// [`MAX_SLOTS`] (an `EMFILE`-like transport error naming the endpoints).
    pub fn add_connecting(
        &mut self,
        kind: zmq::SocketType,
        endpoints: &[String],
        open: bool,
    ) -> Result<usize, TransportError> {
        if self.slots.len() >= MAX_SLOTS {
            return Err(TransportError::zmq(
                "add a socket for",
                format!("{} (at most {MAX_SLOTS} sockets)", endpoints.join(",")),
                zmq::Error::EMFILE,
            ));
        }
        self.slots.push(Slot {
            kind,
            plan: Plan::Connect(endpoints.to_vec()),
            socket: None,
            opened: 0,
        });
        let i = self.slots.len() - 1;
        if open {
            self.open(i)?;
        }
        Ok(i)
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there is no slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The transport the sockets come from.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The endpoint of slot `i`: the resolved bound endpoint, or the connect endpoints
    /// joined with commas.
    pub fn endpoint(&self, i: usize) -> String {
        match self.slots.get(i).map(|s| &s.plan) {
            Some(Plan::Bind(e)) => e.clone(),
            Some(Plan::Connect(es)) => es.join(","),
            None => String::new(),
        }
    }

    /// The socket of slot `i`, if open.
    pub fn get(&self, i: usize) -> Option<&zmq::Socket> {
        self.slots.get(i).and_then(|s| s.socket.as_ref())
    }

    /// How many sockets were made for slot `i` after its first (reconnects, resets).
    pub fn reopened(&self, i: usize) -> u64 {
        self.slots.get(i).map_or(0, |s| s.opened.saturating_sub(1))
    }

    /// Has `guard` told of every message sent from now on.
    pub(crate) fn report_sends_to(&mut self, guard: Arc<Guarded>) {
        self.sent = Some(guard);
    }

    /// Takes the socket of slot `i` out (for a guard to hold while a handler runs).
    pub(crate) fn take(&mut self, i: usize) -> Option<zmq::Socket> {
        self.slots.get_mut(i).and_then(|s| s.socket.take())
    }

    /// Puts a socket taken with [`Sockets::take`] back.
    pub(crate) fn put(&mut self, i: usize, socket: Option<zmq::Socket>) {
        if let Some(slot) = self.slots.get_mut(i) {
            slot.socket = socket;
        }
    }

    fn open(&mut self, i: usize) -> Result<(), TransportError> {
        let Some(slot) = self.slots.get_mut(i) else {
            return Ok(());
        };
        let fresh = match &slot.plan {
            Plan::Connect(endpoints) => self.transport.connect(slot.kind, endpoints)?,
            Plan::Bind(endpoint) => rebind(&self.transport, slot.kind, endpoint)?,
        };
        slot.socket = Some(fresh);
        slot.opened += 1;
        Ok(())
    }

    /// Sends one message from borrowed frames (without blocking; see [`Op::Send`]).
    pub fn send_parts(&self, i: usize, parts: Parts<'_>) {
        let Some(s) = self.get(i) else {
            tracing::debug!(socket = i, "no socket open; message dropped");
            return;
        };
        match io::send_parts(s, parts, zmq::DONTWAIT) {
            Ok(()) => {
                if let Some(g) = &self.sent {
                    g.sent();
                }
            }
            Err(e) => {
                tracing::warn!(to = %self.endpoint(i), error = %e, "send failed; message dropped")
            }
        }
    }

    /// Applies one op.
    pub fn apply(&mut self, op: Op) -> Result<(), Error> {
        match op {
            Op::Send(i, frames) => {
                let Some(s) = self.get(i) else {
                    tracing::debug!(socket = i, "no socket open; message dropped");
                    return Ok(());
                };
                match io::send_owned(s, frames, zmq::DONTWAIT) {
                    Ok(()) => {
                        if let Some(g) = &self.sent {
                            g.sent();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(to = %self.endpoint(i), error = %e, "send failed; message dropped")
                    }
                }
            }
            Op::Open(i) => self.open(i)?,
            Op::Close(i) => {
                self.take(i);
            }
            Op::Discard(i) => {
                if let Some(s) = self.take(i) {
                    let _ = s.set_linger(0);
                }
            }
            Op::Reset(i) => {
                if let Some(s) = self.take(i) {
                    let _ = s.set_linger(0);
                    if let Some(Slot {
                        plan: Plan::Bind(endpoint),
                        ..
                    }) = self.slots.get(i)
                    {
                        let _ = s.unbind(endpoint);
                    }
                }
                self.open(i)?;
            }
            Op::Add { kind, endpoints } => {
                if let Err(e) = self.add_connecting(kind, &endpoints, true) {
                    tracing::warn!(error = %e, "socket not added");
                }
            }
        }
        Ok(())
    }
}

/// A fresh socket bound to `endpoint` again, retrying for up to a second while the old
/// one releases the port.
fn rebind(
    transport: &Transport,
    kind: zmq::SocketType,
    endpoint: &str,
) -> Result<zmq::Socket, TransportError> {
    let fresh = transport.socket(kind)?;
    let deadline = io::now() + std::time::Duration::from_secs(1);
    loop {
        match fresh.bind(endpoint) {
            Ok(()) => return Ok(fresh),
            Err(e) if io::now() >= deadline => {
                return Err(TransportError::zmq("bind", endpoint, e))
            }
            Err(_) => {
                // A 10 ms wait on nothing: the port is released by libzmq's I/O thread.
                let _ = zmq::poll(&mut [], 10);
            }
        }
    }
}

/// A core, its sockets, and the loop that drives them.
pub struct Driver<C> {
    /// The core.
    pub core: C,
    /// Its sockets.
    pub sockets: Sockets,
    shutdown: Shutdown,
    /// The socket whose reading stopped at a message the caller broke on: it may hold
    /// more, so the next turn reads it before polling (one poll saved per message for a
    /// caller that takes one message per call).
    hot: Option<usize>,
    /// Turns in a row that read `hot` without a poll.
    hot_turns: u32,
    /// An event went to the caller's `on` since the clock was last read: it may have
    /// taken a while, so the next input reads the clock again.
    handed_out: bool,
}

impl<C: Core> Driver<C> {
    /// A driver of `core` over `sockets` that stops when `shutdown` is triggered.
    pub fn new(core: C, sockets: Sockets, shutdown: &Shutdown) -> Self {
        Driver {
            core,
            sockets,
            shutdown: shutdown.clone(),
            hot: None,
            hot_turns: 0,
            handed_out: false,
        }
    }

    /// Whether the stop was asked for (for a driver's own waits between events).
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Stops on `shutdown` from now on (instead of the flag it was made with).
    pub fn set_shutdown(&mut self, shutdown: &Shutdown) {
        self.shutdown = shutdown.clone();
    }

    /// Runs until shutdown, handing every event to `log`: the loop of a router (broker,
    /// queue) that only routes and reports.
    pub fn route(&mut self, mut log: impl FnMut(C::Event)) -> Result<(), Error> {
        self.run(None, None, |_, input| match input {
            Input::Event(e) => {
                log(e);
                Flow::Continue
            }
            Input::Wake => Flow::Continue,
            Input::Stop => Flow::Break(()),
        })?;
        Ok(())
    }

    /// Feeds the core every message its sockets hold right now (at most [`BATCH`] per
    /// socket), without waiting and without handing out the core's events: a client
    /// whose calls return one outcome each lets its next calls hand out the rest (from
    /// the core's queue), and what it is asked to send meanwhile goes out together at
    /// the end of that turn (one group commit of its outbox). Returns how many it read.
    pub fn take_ready(&mut self) -> Result<usize, Error> {
        let now = self.clock();
        let mut read = 0;
        for i in 0..MAX_SLOTS {
            for _ in 0..BATCH {
                let Some(s) = self.sockets.get(i) else {
                    break;
                };
                let Ok(frames) = io::recv_frames(s, zmq::DONTWAIT) else {
                    break;
                };
                self.core.handle_input(now, i, frames);
                read += 1;
            }
        }
        Ok(read)
    }

    /// Applies every op the core has queued, and sends what it keeps in its own buffer.
    pub fn flush(&mut self) -> Result<(), Error> {
        loop {
            while let Some(op) = self.core.poll_op() {
                self.sockets.apply(op)?;
            }
            let Some((i, parts)) = self.core.poll_send() else {
                return Ok(());
            };
            self.sockets.send_parts(i, parts);
        }
    }

    /// Runs the loop until `on` returns [`Flow::Break`] (its value is returned), or
    /// until `until` passes (`None` is returned). `wake`, if given, is polled beside the
    /// sockets; when it is readable `on` gets [`Input::Wake`]. On shutdown `on` gets
    /// [`Input::Stop`] and must break.
    pub fn run<R>(
        &mut self,
        until: Option<Instant>,
        wake: Option<&zmq::Socket>,
        mut on: impl FnMut(&mut Self, Input<C::Event>) -> Flow<R>,
    ) -> Result<Option<R>, Error> {
        loop {
            if let Some(r) = self.pump(&mut on)? {
                return Ok(Some(r));
            }
            if self.shutdown.is_triggered() {
                if let Flow::Break(r) = on(self, Input::Stop) {
                    self.flush()?;
                    return Ok(Some(r));
                }
            }
            let now = self.clock();
            if until.is_some_and(|u| now >= u) {
                return Ok(None);
            }
            if let Some(i) = self.hot.take() {
                if self.hot_turns < HOT_TURNS {
                    self.hot_turns += 1;
                    match self.read(i, now, &mut on)? {
                        (Some(r), _) => return Ok(Some(r)),
                        (None, 0) => {}        // it was empty after all: poll
                        (None, _) => continue, // read what was there: go round
                    }
                }
            }
            self.hot_turns = 0;
            let deadline = match (self.core.poll_timeout(), until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let (ready, woken) = self.wait(wake, io::poll_millis(now, deadline))?;
            let now = self.clock();
            for (i, readable) in ready.into_iter().enumerate() {
                if !readable {
                    continue;
                }
                if let (Some(r), _) = self.read(i, now, &mut on)? {
                    return Ok(Some(r));
                }
            }
            if woken {
                if let Flow::Break(r) = on(self, Input::Wake) {
                    self.flush()?;
                    return Ok(Some(r));
                }
            }
            self.core.handle_timeout(io::now());
        }
    }

    /// The time now, for the inputs read from here on.
    fn clock(&mut self) -> Instant {
        self.handed_out = false;
        io::now()
    }

    /// Applies the core's ops and hands its events to `on` until it has neither.
    fn pump<R>(
        &mut self,
        on: &mut impl FnMut(&mut Self, Input<C::Event>) -> Flow<R>,
    ) -> Result<Option<R>, Error> {
        loop {
            self.flush()?;
            let Some(event) = self.core.poll_event() else {
                return Ok(None);
            };
            self.handed_out = true;
            if let Flow::Break(r) = on(self, Input::Event(event)) {
                self.flush()?;
                return Ok(Some(r));
            }
        }
    }

    /// Reads up to [`BATCH`] messages from slot `i`, pumping after each; returns what
    /// `on` broke with, and how many messages were read. Messages are handed to the
    /// core as arrived at `now`: the clock is read once per turn rather than once per
    /// message, and again only after `on` ran (it may be an application's handler,
    /// which takes its time). Stops early when the core
    /// replaced the socket: what is still queued on the old one belongs to a
    /// registration the core has given up. A break marks the socket hot.
    fn read<R>(
        &mut self,
        i: usize,
        mut now: Instant,
        on: &mut impl FnMut(&mut Self, Input<C::Event>) -> Flow<R>,
    ) -> Result<(Option<R>, usize), Error> {
        let generation = self.sockets.slots.get(i).map_or(0, |s| s.opened);
        let mut read = 0;
        for _ in 0..BATCH {
            let Some(s) = self.sockets.get(i) else {
                break;
            };
            let Ok(frames) = io::recv_frames(s, zmq::DONTWAIT) else {
                break;
            };
            read += 1;
            if self.handed_out {
                now = self.clock();
            }
            self.core.handle_input(now, i, frames);
            if let Some(r) = self.pump(on)? {
                self.hot = Some(i);
                return Ok((Some(r), read));
            }
            if self.sockets.slots.get(i).map_or(0, |s| s.opened) != generation {
                break;
            }
        }
        Ok((None, read))
    }

    /// Waits up to `timeout_ms` for any open socket (and `wake`); which are readable.
    /// Built on the stack: a slot with no socket (and a missing `wake`) polls a negative
    /// file descriptor, which `poll(2)` ignores.
    fn wait(
        &self,
        wake: Option<&zmq::Socket>,
        timeout_ms: i64,
    ) -> Result<([bool; MAX_SLOTS], bool), Error> {
        fn item(s: Option<&zmq::Socket>) -> zmq::PollItem<'_> {
            match s {
                Some(s) => s.as_poll_item(zmq::POLLIN),
                None => zmq::PollItem::from_fd(-1, zmq::PollEvents::empty()),
            }
        }
        let mut items: [zmq::PollItem<'_>; MAX_SLOTS + 1] = std::array::from_fn(|i| {
            if i < MAX_SLOTS {
                item(self.sockets.get(i))
            } else {
                item(wake)
            }
        });
        io::poll(&mut items, timeout_ms)?;
        let ready = std::array::from_fn(|i| items[i].is_readable());
        Ok((ready, items[MAX_SLOTS].is_readable()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::transport::TransportOptions;

    /// A core that asks for a reset on every timeout: the re-made socket must carry
    /// the transport's settings like the first.
    struct Resetter {
        resets: u32,
        at: Option<Instant>,
    }

    impl Core for Resetter {
        type Event = ();
        fn handle_input(&mut self, _: Instant, _: usize, _: Frames) {}
        fn handle_timeout(&mut self, now: Instant) {
            if self.at.is_some_and(|a| now >= a) {
                self.resets += 1;
                self.at = None;
            }
        }
        fn poll_op(&mut self) -> Option<Op> {
            if self.resets > 0 {
                self.resets -= 1;
                Some(Op::Reset(0))
            } else {
                None
            }
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.at
        }
    }

    #[test]
    fn a_setting_reaches_a_remade_socket() {
        let transport = Transport::new(
            &zmq::Context::new(),
            TransportOptions {
                send_hwm: 17,
                max_frame_bytes: 12_345,
                linger: std::time::Duration::ZERO,
                ..TransportOptions::default()
            },
        );
        let sockets = Sockets::connecting(
            &transport,
            zmq::DEALER,
            &["tcp://127.0.0.1:1".to_string()],
            true,
        )
        .unwrap();
        let core = Resetter {
            resets: 0,
            at: Some(io::now()),
        };
        let mut d = Driver::new(core, sockets, &Shutdown::new());
        let until = io::now() + std::time::Duration::from_millis(50);
        assert!(d
            .run::<()>(Some(until), None, |_, _| Flow::Continue)
            .unwrap()
            .is_none());
        assert_eq!(
            d.sockets.reopened(0),
            1,
            "the core's reset made a new socket"
        );
        let s = d.sockets.get(0).unwrap();
        assert_eq!(s.get_sndhwm().unwrap(), 17);
        assert_eq!(s.get_maxmsgsize().unwrap(), 12_345);
        assert_eq!(transport.sockets_made(), 2);
    }
}
