//! Outgoing bytes of one connection in three lanes, with one send in flight.
//!
//! * **control**: PONG, WELCOME, JOINED, LEFT, ERROR, GOAWAY;
//! * **messages**: whole MESSAGE frames (stream 0), in order;
//! * **streams**: MESSAGE fragments, one FIFO per (sender, stream), the
//!   streams taking turns frame by frame.
//!
//! When no send is in flight, the next send takes all of control, then all of
//! messages, then at most one stream fragment. So a control frame or a chat
//! line waits behind at most one send, and that send holds at most one
//! fragment of a file. One send in flight keeps the order within each lane; a
//! busy connection costs one send per round trip of the ring, not one per
//! frame. An idle connection holds no buffer at all.
//!
//! **Slowness is judged from what the socket refuses**, never from bytes the
//! server has not tried to write. The queue is *refused* once the socket
//! took part of a send and left the rest, or a send was still outstanding
//! after every completion had been read ([`OutQueue::refused_by_socket`]); a
//! send taken in full clears it. Only control frames and whole messages
//! queued while refused count against `--queue-bytes`. Stream fragments never
//! do: their publisher is paced by [`crate::flow`] instead, and a member whose
//! socket takes nothing for `--slow-consumer-ms` is cut by the core.

use std::collections::VecDeque;
use std::sync::Arc;

use proto::Frame;

use crate::broadcast::Broadcast;
use crate::flow::Debts;

/// A shard's free list of send buffers, so the hot path reuses allocations
/// instead of making one per send. Bounded: at most `max_free` buffers of at
/// most `max_keep` bytes of capacity each are kept.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
    max_keep: usize,
}

impl BufPool {
    /// A pool keeping at most `max_free` buffers of at most `max_keep` bytes.
    pub fn new(max_free: usize, max_keep: usize) -> Self {
        Self {
            free: Vec::with_capacity(max_free),
            max_free,
            max_keep,
        }
    }

    /// An empty buffer, reused when one is free.
    pub fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    /// Returns a buffer; it is dropped if the pool is full or it grew too big.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if self.free.len() < self.max_free && buf.capacity() <= self.max_keep && buf.capacity() > 0
        {
            buf.clear();
            self.free.push(buf);
        }
    }

    /// Buffers held free.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

/// The socket refused, and more than the bound of control frames and whole
/// messages has been queued since.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// One connection's outgoing bytes: nothing but a pointer while idle (one
/// per connection, a million at C1M); its lanes live on the heap from the
/// first frame queued until [`OutQueue::release_idle`] finds them empty.
#[derive(Debug, Default)]
pub struct OutQueue {
    lanes: Option<Box<Lanes>>,
}

/// What a busy queue holds.
#[derive(Debug, Default)]
struct Lanes {
    /// Encoded control frames not yet handed to the kernel.
    control: Vec<u8>,
    /// Encoded whole messages not yet handed to the kernel.
    messages: Vec<u8>,
    /// Stream fragments; boxed, since most connections never get one.
    streams: Option<Box<Streams>>,
    /// Bytes handed to the kernel and not yet confirmed sent.
    in_flight: u32,
    /// Control and message bytes queued since the socket refused.
    since_refusal: u32,
    /// While the socket refuses part of the send in flight: when it last
    /// took bytes (the slow-consumer clock).
    refused_since: Option<u64>,
}

/// The stream lane: FIFOs taking turns, what this member owes each
/// publisher's flow, and the fragment at the end of the send in flight.
#[derive(Debug, Default)]
struct Streams {
    lanes: VecDeque<Lane>,
    debts: Debts,
    in_flight: Option<Arc<Broadcast>>,
    bytes: usize,
}

#[derive(Debug)]
struct Lane {
    from_conn_id: u64,
    stream: u16,
    frames: VecDeque<Arc<Broadcast>>,
}

impl OutQueue {
    /// The lanes, made at the first frame queued.
    fn lanes(&mut self) -> &mut Lanes {
        self.lanes.get_or_insert_with(Default::default)
    }

    /// Bytes queued in every lane or in flight.
    pub fn len(&self) -> usize {
        self.lanes.as_ref().map_or(0, |l| l.len())
    }

    /// Whether nothing is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a send is in flight.
    pub fn is_sending(&self) -> bool {
        self.lanes.as_ref().is_some_and(|l| l.is_sending())
    }

    /// Whether bytes wait for the next send.
    pub fn has_queued(&self) -> bool {
        self.lanes.as_ref().is_some_and(|l| l.has_queued())
    }

    /// Whether the socket has refused bytes of the send in flight.
    pub fn is_refused(&self) -> bool {
        self.refused_since().is_some()
    }

    /// While the socket refuses: when it last took bytes.
    pub fn refused_since(&self) -> Option<u64> {
        self.lanes.as_ref()?.refused_since
    }

    /// Whether the lanes are on the heap (from the first frame queued until
    /// `release_idle` finds them empty).
    pub fn holds_lanes(&self) -> bool {
        self.lanes.is_some()
    }

    /// Bytes of stream fragments queued (not in flight).
    pub fn stream_bytes(&self) -> usize {
        self.lanes.as_ref().map_or(0, |l| l.stream_bytes())
    }

    /// Heap bytes held by the byte lanes (0 when idle).
    pub fn capacity(&self) -> usize {
        self.lanes.as_ref().map_or(0, |l| l.capacity())
    }

    /// Appends an encoded whole MESSAGE (the same bytes for every member) to
    /// the message lane; refused if the socket refuses and more than `limit`
    /// bytes would have come since.
    pub fn push_message(
        &mut self,
        frame: &[u8],
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<(), Overflow> {
        self.lanes().push_message(frame, limit, pool)
    }

    /// Queues a stream frame in its (sender, stream) FIFO, and what this
    /// member owes the publisher's flow. Flow control bounds it; refused
    /// only past the flow's hard bound ([`Flow::hard_bound`]), which a
    /// publisher that pauses as asked never reaches.
    pub fn push_fragment(&mut self, frame: Arc<Broadcast>) -> Result<(), Overflow> {
        self.lanes().push_fragment(frame)
    }

    /// Encodes a control `frame` at the end of its lane, with the same bound
    /// as [`OutQueue::push_message`]. Frames the server builds are valid.
    pub fn push(
        &mut self,
        frame: &Frame<'_>,
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<(), Overflow> {
        self.lanes().push(frame, limit, pool)
    }

    /// Encodes `frame` whatever the bound: for the last frame of a connection
    /// (ERROR, GOAWAY), which must get out even when the queue is full.
    pub fn push_unbounded(&mut self, frame: &Frame<'_>, pool: &mut BufPool) {
        self.lanes().push_unbounded(frame, pool);
    }

    /// Drops what is queued but not in flight (the connection is being cut
    /// off); flows this member held back open, their shards pushed to `wake`.
    pub fn discard_queued(&mut self, pool: &mut BufPool, wake: &mut Vec<usize>) {
        if let Some(l) = self.lanes.as_mut() {
            l.discard_queued(pool, wake);
        }
    }

    /// Drops queued messages and stream fragments, keeping control frames (a
    /// slow consumer's backlog, before its ERROR).
    pub fn discard_data(&mut self, pool: &mut BufPool, wake: &mut Vec<usize>) {
        if let Some(l) = self.lanes.as_mut() {
            l.discard_data(pool, wake);
        }
    }

    /// Takes what is queued as the next send buffer, if no send is in flight:
    /// all control frames, then all whole messages, then one stream fragment.
    pub fn start_send(&mut self, pool: &mut BufPool) -> Option<Vec<u8>> {
        self.lanes.as_mut()?.start_send(pool)
    }

    /// The send was taken in full: the buffer goes back to the pool, the
    /// refusal (if any) is over, and the fragment it carried is credited to
    /// its flow (a shard to wake is pushed to `wake`).
    pub fn finish_send(&mut self, buf: Vec<u8>, pool: &mut BufPool, wake: &mut Vec<usize>) {
        match self.lanes.as_mut() {
            Some(l) => l.finish_send(buf, pool, wake),
            None => pool.give(buf),
        }
    }

    /// A send that ended in error, or was cut off: nothing more is credited.
    pub fn abandon_send(&mut self, buf: Vec<u8>, pool: &mut BufPool) {
        match self.lanes.as_mut() {
            Some(l) => l.abandon_send(buf, pool),
            None => pool.give(buf),
        }
    }

    /// A short send at `now`: `sent` bytes went, the socket refused the rest,
    /// which must go out first, so the buffer stays in flight minus what was
    /// sent. The slow-consumer clock restarts (the socket took bytes).
    pub fn partial_send(&mut self, buf: &mut Vec<u8>, sent: usize, now: u64) {
        self.lanes().partial_send(buf, sent, now);
    }

    /// The send in flight is still outstanding although every completion has
    /// been read at `now`: its socket is full. From now on, until a send is
    /// taken in full, control frames and messages count against the bound.
    pub fn refused_by_socket(&mut self, now: u64) {
        if let Some(l) = self.lanes.as_mut() {
            l.refused_by_socket(now);
        }
    }

    /// Releases memory when idle: buffers go back to the pool, and the lanes
    /// themselves once nothing is queued or in flight.
    pub fn release_idle(&mut self, pool: &mut BufPool) {
        if self.lanes.as_mut().is_some_and(|l| l.release_idle(pool)) {
            self.lanes = None;
        }
    }
}

impl Lanes {
    /// Bytes queued in every lane or in flight.
    fn len(&self) -> usize {
        self.control.len()
            + self.messages.len()
            + self.in_flight as usize
            + self.streams.as_ref().map_or(0, |s| s.bytes)
    }

    /// Whether a send is in flight.
    fn is_sending(&self) -> bool {
        self.in_flight != 0
    }

    /// Whether bytes wait for the next send.
    fn has_queued(&self) -> bool {
        !self.control.is_empty()
            || !self.messages.is_empty()
            || self.streams.as_ref().is_some_and(|s| !s.lanes.is_empty())
    }

    /// Whether the socket has refused bytes of the send in flight.
    fn is_refused(&self) -> bool {
        self.refused_since.is_some()
    }

    /// Bytes of stream fragments queued (not in flight).
    fn stream_bytes(&self) -> usize {
        self.streams.as_ref().map_or(0, |s| s.bytes)
    }

    /// Heap bytes held by the byte lanes (0 when idle).
    fn capacity(&self) -> usize {
        self.control.capacity() + self.messages.capacity()
    }

    /// Counts `len` new bytes against the bound (only while refused).
    fn admit(&mut self, len: usize, limit: usize) -> Result<(), Overflow> {
        if self.is_refused() {
            let since = self.since_refusal as usize + len;
            if since > limit {
                return Err(Overflow);
            }
            self.since_refusal = since as u32;
        }
        Ok(())
    }

    /// Appends an encoded whole MESSAGE (the same bytes for every member) to
    /// the message lane; refused if the socket refuses and more than `limit`
    /// bytes would have come since.
    fn push_message(
        &mut self,
        frame: &[u8],
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<(), Overflow> {
        self.admit(frame.len(), limit)?;
        if self.messages.capacity() == 0 {
            self.messages = pool.take();
        }
        self.messages.extend_from_slice(frame);
        Ok(())
    }

    /// Queues a stream frame in its (sender, stream) FIFO, and what this
    /// member owes the publisher's flow. Flow control bounds it; refused
    /// only past the flow's hard bound ([`Flow::hard_bound`]), which a
    /// publisher that pauses as asked never reaches.
    fn push_fragment(&mut self, frame: Arc<Broadcast>) -> Result<(), Overflow> {
        let s = self.streams.get_or_insert_with(Default::default);
        let len = frame.bytes().len();
        if let Some(flow) = frame.flow() {
            if s.debts.queued(flow, len) > flow.hard_bound() {
                return Err(Overflow);
            }
        }
        s.bytes += len;
        let key = (frame.from_conn_id(), frame.stream());
        match s
            .lanes
            .iter_mut()
            .find(|l| (l.from_conn_id, l.stream) == key)
        {
            Some(lane) => lane.frames.push_back(frame),
            None => s.lanes.push_back(Lane {
                from_conn_id: key.0,
                stream: key.1,
                frames: VecDeque::from([frame]),
            }),
        }
        Ok(())
    }

    /// Encodes a control `frame` at the end of its lane, with the same bound
    /// as [`OutQueue::push_message`]. Frames the server builds are valid.
    fn push(
        &mut self,
        frame: &Frame<'_>,
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<(), Overflow> {
        self.admit(frame.encoded_len(), limit)?;
        self.push_unbounded(frame, pool);
        Ok(())
    }

    /// Encodes `frame` whatever the bound: for the last frame of a connection
    /// (ERROR, GOAWAY), which must get out even when the queue is full.
    fn push_unbounded(&mut self, frame: &Frame<'_>, pool: &mut BufPool) {
        if self.control.capacity() == 0 {
            self.control = pool.take();
        }
        frame
            .encode_to_vec(&mut self.control)
            .expect("the server encodes only valid frames");
    }

    /// Drops what is queued but not in flight (the connection is being cut
    /// off); flows this member held back open, their shards pushed to `wake`.
    fn discard_queued(&mut self, pool: &mut BufPool, wake: &mut Vec<usize>) {
        pool.give(std::mem::take(&mut self.control));
        self.discard_data(pool, wake);
    }

    /// Drops queued messages and stream fragments, keeping control frames (a
    /// slow consumer's backlog, before its ERROR).
    fn discard_data(&mut self, pool: &mut BufPool, wake: &mut Vec<usize>) {
        pool.give(std::mem::take(&mut self.messages));
        if let Some(s) = self.streams.as_mut() {
            s.lanes.clear();
            s.bytes = 0;
            s.debts.clear(wake);
        }
    }

    /// The next stream fragment, the streams taking turns.
    fn next_fragment(&mut self) -> Option<Arc<Broadcast>> {
        let s = self.streams.as_mut()?;
        let mut lane = s.lanes.pop_front()?;
        let frame = lane.frames.pop_front().expect("lanes are never empty");
        if !lane.frames.is_empty() {
            s.lanes.push_back(lane);
        }
        s.bytes -= frame.bytes().len();
        Some(frame)
    }

    /// Takes what is queued as the next send buffer, if no send is in flight:
    /// all control frames, then all whole messages, then one stream fragment.
    fn start_send(&mut self, pool: &mut BufPool) -> Option<Vec<u8>> {
        if self.is_sending() || !self.has_queued() {
            return None;
        }
        let mut buf = if self.control.is_empty() {
            std::mem::take(&mut self.messages)
        } else {
            let mut buf = std::mem::take(&mut self.control);
            buf.extend_from_slice(&self.messages);
            self.messages.clear();
            buf
        };
        if let Some(frame) = self.next_fragment() {
            if buf.capacity() == 0 {
                buf = pool.take();
            }
            buf.extend_from_slice(frame.bytes());
            self.streams
                .as_mut()
                .expect("a fragment came from it")
                .in_flight = Some(frame);
        }
        self.in_flight = u32::try_from(buf.len()).expect("queue bound fits in u32");
        Some(buf)
    }

    /// The send was taken in full: the buffer goes back to the pool, the
    /// refusal (if any) is over, and the fragment it carried is credited to
    /// its flow (a shard to wake is pushed to `wake`).
    fn finish_send(&mut self, buf: Vec<u8>, pool: &mut BufPool, wake: &mut Vec<usize>) {
        debug_assert_eq!(buf.len(), self.in_flight as usize);
        self.in_flight = 0;
        self.refused_since = None;
        self.since_refusal = 0;
        pool.give(buf);
        if let Some(s) = self.streams.as_mut() {
            if let Some(frame) = s.in_flight.take() {
                if let Some(flow) = frame.flow() {
                    s.debts.sent(flow, frame.bytes().len(), wake);
                }
            }
        }
    }

    /// A send that ended in error, or was cut off: nothing more is credited.
    fn abandon_send(&mut self, buf: Vec<u8>, pool: &mut BufPool) {
        self.in_flight = 0;
        pool.give(buf);
        if let Some(s) = self.streams.as_mut() {
            s.in_flight = None;
        }
    }

    /// A short send: `sent` bytes went, the socket refused the rest, which
    /// must go out first, so the buffer stays in flight minus what was sent.
    fn partial_send(&mut self, buf: &mut Vec<u8>, sent: usize, now: u64) {
        buf.drain(..sent);
        self.in_flight = buf.len() as u32;
        if !self.is_refused() {
            self.since_refusal = 0;
        }
        // It took bytes: the slow-consumer clock starts again.
        self.refused_since = Some(now);
    }

    /// The send in flight is still outstanding although every completion has
    /// been read: its socket is full. From now on, until a send is taken in
    /// full, control frames and messages count against the bound.
    fn refused_by_socket(&mut self, now: u64) {
        if !self.is_refused() {
            self.refused_since = Some(now);
            self.since_refusal = 0;
        }
    }

    /// Gives idle buffers back; whether nothing at all is left (the lanes
    /// themselves can go).
    fn release_idle(&mut self, pool: &mut BufPool) -> bool {
        if self.control.is_empty() && self.control.capacity() > 0 {
            pool.give(std::mem::take(&mut self.control));
        }
        if self.messages.is_empty() && self.messages.capacity() > 0 {
            pool.give(std::mem::take(&mut self.messages));
        }
        if self
            .streams
            .as_ref()
            .is_some_and(|s| s.lanes.is_empty() && s.in_flight.is_none() && s.debts.is_empty())
        {
            self.streams = None;
        }
        self.in_flight == 0
            && self.streams.is_none()
            && self.control.capacity() == 0
            && self.messages.capacity() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Flow;
    use proto::{Fragment, Message, Room};

    fn fragment(from: u64, stream: u16, body: &[u8], flow: Option<Arc<Flow>>) -> Arc<Broadcast> {
        Broadcast::encode(
            Message {
                from_conn_id: from,
                room: Room::new("r").unwrap(),
                body,
                fragment: Fragment {
                    stream,
                    more: true,
                    cancel: false,
                },
            },
            flow,
        )
    }

    fn send_all(q: &mut OutQueue, pool: &mut BufPool, wake: &mut Vec<usize>) -> Vec<u8> {
        let buf = q.start_send(pool).unwrap();
        let out = buf.clone();
        q.finish_send(buf, pool, wake);
        out
    }

    #[test]
    fn bytes_the_socket_has_not_refused_never_count() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        let pong = Frame::Pong(&[0; 16]); // 24 bytes
        for _ in 0..100 {
            q.push(&pong, 50, &mut pool).unwrap();
        }
        assert_eq!(
            q.len(),
            2400,
            "a burst before any write attempt is queued whole"
        );
        let mut buf = q.start_send(&mut pool).unwrap();
        assert_eq!(buf.len(), 2400);
        assert!(q.start_send(&mut pool).is_none(), "one send in flight");
        q.partial_send(&mut buf, 1000, 0);
        assert!(q.is_refused());
        q.push(&pong, 50, &mut pool).unwrap();
        q.push(&pong, 50, &mut pool).unwrap();
        assert_eq!(
            q.push(&pong, 50, &mut pool),
            Err(Overflow),
            "refused, and 72 bytes would have come since"
        );
        let mut wake = Vec::new();
        q.finish_send(buf, &mut pool, &mut wake);
        assert!(!q.is_refused(), "taken in full: the count starts over");
        q.push(&pong, 50, &mut pool).unwrap();
        q.push(&pong, 50, &mut pool).unwrap();
        q.push(&pong, 50, &mut pool).unwrap();
    }

    #[test]
    fn an_outstanding_send_is_a_refusal() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        q.push(&Frame::Pong(b"a"), 40, &mut pool).unwrap();
        let _buf = q.start_send(&mut pool).unwrap();
        q.push_message(&[0; 30], 40, &mut pool).unwrap();
        q.refused_by_socket(0);
        q.push_message(&[0; 30], 40, &mut pool).unwrap();
        assert_eq!(q.push_message(&[0; 30], 40, &mut pool), Err(Overflow));
        assert_eq!(q.len(), 9 + 60);
    }

    #[test]
    fn control_then_messages_then_one_fragment_per_send() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut wake = Vec::new();
        let mut q = OutQueue::default();
        q.push_fragment(fragment(1, 5, b"f1", None)).unwrap();
        q.push_fragment(fragment(1, 5, b"f2", None)).unwrap();
        q.push_message(b"msg", 100, &mut pool).unwrap();
        q.push(&Frame::Pong(b"ctl"), 100, &mut pool).unwrap();
        let first = send_all(&mut q, &mut pool, &mut wake);
        assert_eq!(&first[8..11], b"ctl", "control first");
        assert_eq!(&first[11..14], b"msg");
        assert!(first.ends_with(b"f1"), "then one fragment");
        let f1_len = fragment(1, 5, b"f1", None).bytes().len();
        assert_eq!(first.len(), 11 + 3 + f1_len);
        q.push_message(b"chat", 100, &mut pool).unwrap();
        let second = send_all(&mut q, &mut pool, &mut wake);
        assert!(
            second.starts_with(b"chat") && second.ends_with(b"f2"),
            "a message goes ahead of the rest of the file"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn streams_take_turns_frame_by_frame() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut wake = Vec::new();
        let mut q = OutQueue::default();
        for i in 0..3u8 {
            q.push_fragment(fragment(1, 1, &[b'a', i], None)).unwrap();
        }
        q.push_fragment(fragment(2, 1, b"b0", None)).unwrap();
        q.push_fragment(fragment(1, 2, b"c0", None)).unwrap();
        let order: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                let out = send_all(&mut q, &mut pool, &mut wake);
                out[out.len() - 2..].to_vec()
            })
            .collect();
        assert_eq!(
            order,
            [
                b"a\0".to_vec(),
                b"b0".to_vec(),
                b"c0".to_vec(),
                b"a\x01".to_vec(),
                b"a\x02".to_vec()
            ]
        );
    }

    #[test]
    fn fragments_are_credited_to_their_flow_once_sent() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut wake = Vec::new();
        let flow = Flow::new(1, 100);
        let mut q = OutQueue::default();
        q.push_fragment(fragment(1, 1, &[0; 80], Some(flow.clone())))
            .unwrap();
        q.push_fragment(fragment(1, 1, &[0; 80], Some(flow.clone())))
            .unwrap();
        assert!(flow.is_closed(), "two fragments queued exceed the window");
        flow.set_waiting(true);
        let mut buf = q.start_send(&mut pool).unwrap();
        q.partial_send(&mut buf, 10, 0);
        assert!(flow.is_closed(), "not credited before it is all sent");
        q.finish_send(buf, &mut pool, &mut wake);
        assert!(
            flow.is_closed(),
            "one fragment (98 bytes) left: not below half"
        );
        send_all(&mut q, &mut pool, &mut wake);
        assert!(!flow.is_closed());
        assert_eq!(wake, vec![1], "the waiting publisher's shard is woken");
        let mut q2 = OutQueue::default();
        q2.push_fragment(fragment(1, 1, &[0; 200], Some(flow.clone())))
            .unwrap();
        assert!(flow.is_closed());
        q2.discard_queued(&mut pool, &mut wake);
        assert!(flow.may_resume(), "a cut member opens the flow");
    }

    #[test]
    fn stream_data_is_not_bounded_by_the_queue_bound() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        q.push(&Frame::Pong(b"x"), 100, &mut pool).unwrap();
        let _buf = q.start_send(&mut pool).unwrap();
        q.refused_by_socket(0);
        for _ in 0..10 {
            q.push_fragment(fragment(1, 1, &[0; 50], None)).unwrap();
        }
        assert!(q.stream_bytes() > 500);
        q.push_message(&[0; 90], 100, &mut pool).unwrap();
    }

    #[test]
    fn discarding_data_keeps_control_frames_and_idle_queues_hold_nothing() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut wake = Vec::new();
        let mut q = OutQueue::default();
        q.push_message(&[1; 50], 1000, &mut pool).unwrap();
        q.push_fragment(fragment(1, 1, b"x", None)).unwrap();
        q.push(&Frame::Pong(b"keep"), 1000, &mut pool).unwrap();
        q.discard_data(&mut pool, &mut wake);
        assert_eq!(q.len(), 12);
        q.discard_queued(&mut pool, &mut wake);
        assert!(q.is_empty());
        q.push_unbounded(&Frame::Pong(&[1; 64]), &mut pool);
        send_all(&mut q, &mut pool, &mut wake);
        q.release_idle(&mut pool);
        assert_eq!(q.capacity(), 0);
        assert!(
            q.lanes.is_none(),
            "an idle queue holds nothing but a pointer"
        );
        assert_eq!(std::mem::size_of::<OutQueue>(), 8);
    }

    #[test]
    fn a_publisher_that_never_pauses_meets_the_hard_bound() {
        let flow = Flow::new(0, 100);
        let mut q = OutQueue::default();
        let frame = fragment(1, 1, &[0; 80], Some(flow.clone()));
        let len = frame.bytes().len();
        let fit = flow.hard_bound() / len;
        for _ in 0..fit {
            q.push_fragment(frame.clone()).unwrap();
        }
        assert!(flow.is_closed(), "over the window long since");
        assert!(q.push_fragment(frame).is_err(), "past 256 windows: refused");
        let other = Flow::new(0, 100);
        let mut q = OutQueue::default();
        q.push_fragment(fragment(2, 1, &[0; 80], Some(other)))
            .unwrap();
        assert!(
            q.push_fragment(fragment(1, 1, &[0; 80], None)).is_ok(),
            "bounds are per publisher"
        );
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = BufPool::new(2, 100);
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        pool.give(Vec::with_capacity(10));
        assert_eq!(pool.free_count(), 2);
        let mut pool = BufPool::new(2, 100);
        pool.give(Vec::with_capacity(1000));
        assert_eq!(pool.free_count(), 0, "oversized buffers are not kept");
    }
}
