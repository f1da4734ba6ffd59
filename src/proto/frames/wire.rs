//! Multipart messages queued back to back in one buffer, for a core whose output is hot
//! (the publisher sends every message it is given): once the buffer has grown to a
//! turn's worth, queueing a message allocates nothing, and a driver sends each frame
//! straight from it ([`WireQueue::pop`]) where a [`Frames`] would cost an allocation
//! per frame on the way in and a free on the way out.
//!
//! The buffer is emptied (its capacity kept, up to [`KEEP_BYTES`]) when every message
//! was taken out.

use super::Frames;

/// Capacity the buffer keeps once drained: what a turn of small messages needs. A
/// burst beyond it (a replay answer of large messages) is given back when drained.
pub const KEEP_BYTES: usize = 1 << 20;

/// One queued message: the socket it goes to and its frames, a range of `ends`.
#[derive(Debug, Clone, Copy)]
struct Queued {
    socket: usize,
    first: usize,
    end: usize,
}

/// Messages for sockets (by index), in the order queued. See the module docs.
#[derive(Debug, Default)]
pub struct WireQueue {
    /// Every frame's bytes, back to back.
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes` (it starts where the one before ends, or at 0).
    ends: Vec<usize>,
    msgs: Vec<Queued>,
    /// The next message to take out.
    head: usize,
}

impl WireQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.msgs.len() - self.head
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a message for `socket`; [`WireQueue::frame`] and
    /// [`WireQueue::frame_with`] add its frames. A message with no frame is never
    /// handed out.
    pub fn begin(&mut self, socket: usize) {
        if self.head > 0 && self.head == self.msgs.len() {
            self.reset();
        }
        let at = self.ends.len();
        self.msgs.push(Queued {
            socket,
            first: at,
            end: at,
        });
    }

    /// Adds `frame` to the message begun last.
    pub fn frame(&mut self, frame: &[u8]) {
        self.frame_with(|b| b.extend_from_slice(frame));
    }

    /// Adds a frame that `write` appends to the buffer it is given (and must not
    /// otherwise change) to the message begun last.
    pub fn frame_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        if self.head == self.msgs.len() {
            return; // no message begun since the last was taken: a broken caller, dropped
        }
        let Some(last) = self.msgs.last_mut() else {
            return; // unreachable: head < len
        };
        write(&mut self.bytes);
        self.ends.push(self.bytes.len());
        last.end = self.ends.len();
    }

    /// Queues a whole message.
    pub fn push<F: AsRef<[u8]>>(&mut self, socket: usize, frames: impl IntoIterator<Item = F>) {
        self.begin(socket);
        for f in frames {
            self.frame(f.as_ref());
        }
    }

    /// Takes back the message queued last (when what it was queued for failed).
    pub fn discard_last(&mut self) {
        if self.msgs.len() == self.head {
            return;
        }
        if let Some(m) = self.msgs.pop() {
            let start = self.start_of(m.first);
            self.ends.truncate(m.first);
            self.bytes.truncate(start);
        }
    }

    /// Drops every queued message.
    pub fn clear(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.msgs.clear();
        self.ends.clear();
        self.bytes.clear();
        self.head = 0;
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes.shrink_to(KEEP_BYTES);
        }
    }

    fn start_of(&self, frame: usize) -> usize {
        frame
            .checked_sub(1)
            .and_then(|i| self.ends.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// The next message: its socket and its frames, borrowed from the queue until the
    /// next call.
    pub fn pop(&mut self) -> Option<(usize, Parts<'_>)> {
        loop {
            let m = *self.msgs.get(self.head)?;
            self.head += 1;
            if m.end > m.first {
                let start = self.start_of(m.first);
                return Some((
                    m.socket,
                    Parts {
                        bytes: &self.bytes,
                        ends: &self.ends[m.first..m.end],
                        start,
                    },
                ));
            }
        }
    }

    /// The next message with its frames copied out.
    pub fn pop_owned(&mut self) -> Option<(usize, Frames)> {
        self.pop()
            .map(|(socket, parts)| (socket, parts.map(<[u8]>::to_vec).collect()))
    }
}

/// The frames of one message taken from a [`WireQueue`], in order.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    bytes: &'a [u8],
    ends: &'a [usize],
    start: usize,
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (&end, rest) = self.ends.split_first()?;
        self.ends = rest;
        let frame = self.bytes.get(self.start..end).unwrap_or_default();
        self.start = end;
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ends.len(), Some(self.ends.len()))
    }
}

impl ExactSizeIterator for Parts<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut WireQueue) -> Vec<(usize, Frames)> {
        std::iter::from_fn(|| q.pop_owned()).collect()
    }

    #[test]
    fn messages_come_out_in_order_with_their_frames() {
        let mut q = WireQueue::new();
        q.push(0, [&b"topic"[..], b"", b"payload"]);
        q.begin(1);
        q.frame(b"id");
        q.frame_with(|b| b.extend_from_slice(&7u64.to_be_bytes()));
        assert_eq!(q.len(), 2);
        let (s, parts) = q.pop().unwrap();
        assert_eq!((s, parts.len()), (0, 3));
        assert_eq!(
            parts.collect::<Vec<_>>(),
            vec![&b"topic"[..], b"", b"payload"]
        );
        assert_eq!(
            drain(&mut q),
            vec![(1, vec![b"id".to_vec(), 7u64.to_be_bytes().to_vec()])]
        );
        assert!(q.is_empty());
        assert!(q.pop().is_none());
    }

    #[test]
    fn a_drained_queue_starts_over_and_keeps_its_buffer() {
        let mut q = WireQueue::new();
        for round in 0..3u8 {
            for i in 0..10u8 {
                q.push(0, [[round, i]]);
            }
            let cap = q.bytes.capacity();
            let got = drain(&mut q);
            assert_eq!(got.len(), 10);
            assert_eq!(got[9], (0, vec![vec![round, 9]]));
            q.begin(0); // starts over: the buffer holds one message's bytes only
            assert_eq!((q.bytes.len(), q.bytes.capacity()), (0, cap));
            q.discard_last();
        }
        assert!(q.is_empty());
    }

    #[test]
    fn the_last_message_can_be_taken_back_and_empty_ones_are_skipped() {
        let mut q = WireQueue::new();
        q.push(0, [b"a"]);
        q.push(0, [b"b", b"c"]);
        q.discard_last();
        q.begin(1); // no frames: never handed out
        q.push(0, [b"d"]);
        assert_eq!(
            drain(&mut q),
            vec![(0, vec![b"a".to_vec()]), (0, vec![b"d".to_vec()])]
        );
        q.discard_last(); // nothing left to take back
        q.frame(b"x"); // no message begun since the reset: dropped
        assert!(q.is_empty());
    }

    #[test]
    fn a_large_burst_is_given_back_once_drained() {
        let mut q = WireQueue::new();
        q.push(1, [vec![0u8; 2 * KEEP_BYTES]]);
        assert_eq!(drain(&mut q)[0].1[0].len(), 2 * KEEP_BYTES);
        q.push(0, [b"small"]);
        assert!(q.bytes.capacity() <= KEEP_BYTES);
    }
}
