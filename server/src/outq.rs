//! Outgoing bytes of one connection, bounded, with one send in flight at a time.
//!
//! Two lanes: control frames (PONG, WELCOME, JOINED, ERROR, GOAWAY, ...) and
//! message data (MESSAGE). When no send is in flight, everything queued becomes
//! the next send buffer, control first, so a control frame never waits behind
//! more than the one send already in flight. The control lane is taken by a swap
//! (no copy); data is appended behind it. One send in flight keeps the byte order
//! within each lane; a busy connection costs one send per round trip of the
//! ring, not one per frame. An idle connection holds no buffer at all.

use proto::Frame;

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

/// The queue would exceed its bound.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// One connection's outgoing bytes.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Encoded control frames not yet handed to the kernel.
    queued: Vec<u8>,
    /// Encoded message data not yet handed to the kernel.
    data: Vec<u8>,
    /// Bytes handed to the kernel and not yet confirmed sent.
    in_flight: u32,
}

impl OutQueue {
    /// Bytes queued or in flight: what counts against the bound.
    pub fn len(&self) -> usize {
        self.queued.len() + self.data.len() + self.in_flight as usize
    }

    /// Whether nothing is queued or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a send is in flight.
    pub fn is_sending(&self) -> bool {
        self.in_flight != 0
    }

    /// Whether bytes wait for the next send.
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty() || !self.data.is_empty()
    }

    /// Heap bytes held by the queue (0 when idle).
    pub fn capacity(&self) -> usize {
        self.queued.capacity() + self.data.capacity()
    }

    /// Appends an encoded MESSAGE (the same bytes for every member) to the data
    /// lane, unless that would take the queue past `limit` bytes.
    pub fn push_data(
        &mut self,
        frame: &[u8],
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<(), Overflow> {
        if self.len() + frame.len() > limit {
            return Err(Overflow);
        }
        if self.data.capacity() == 0 {
            self.data = pool.take();
        }
        self.data.extend_from_slice(frame);
        Ok(())
    }

    /// Encodes `frame` at the end of the queue, unless that would take the queue
    /// past `limit` bytes. Frames the server builds are valid by construction.
    pub fn push(
        &mut self,
        frame: &Frame<'_>,
        limit: usize,
        pool: &mut BufPool,
    ) -> Result<(), Overflow> {
        if self.len() + frame.encoded_len() > limit {
            return Err(Overflow);
        }
        self.push_unbounded(frame, pool);
        Ok(())
    }

    /// Encodes `frame` whatever the bound: for the last frame of a connection
    /// (ERROR, GOAWAY), which must get out even when the queue is full.
    pub fn push_unbounded(&mut self, frame: &Frame<'_>, pool: &mut BufPool) {
        if self.queued.capacity() == 0 {
            self.queued = pool.take();
        }
        frame
            .encode_to_vec(&mut self.queued)
            .expect("the server encodes only valid frames");
    }

    /// Drops what is queued but not in flight (the connection is being cut off).
    pub fn discard_queued(&mut self, pool: &mut BufPool) {
        pool.give(std::mem::take(&mut self.queued));
        pool.give(std::mem::take(&mut self.data));
    }

    /// Drops queued message data, keeping control frames (a slow consumer's
    /// backlog, before its ERROR).
    pub fn discard_data(&mut self, pool: &mut BufPool) {
        pool.give(std::mem::take(&mut self.data));
    }

    /// Takes everything queued as the next send buffer, control frames first,
    /// if no send is in flight.
    pub fn start_send(&mut self) -> Option<Vec<u8>> {
        if self.is_sending() || !self.has_queued() {
            return None;
        }
        let buf = if self.queued.is_empty() {
            std::mem::take(&mut self.data)
        } else {
            let mut buf = std::mem::take(&mut self.queued);
            buf.extend_from_slice(&self.data);
            self.data.clear();
            buf
        };
        self.in_flight = u32::try_from(buf.len()).expect("queue bound fits in u32");
        Some(buf)
    }

    /// The send finished; the buffer (fully sent) goes back to the pool.
    pub fn finish_send(&mut self, buf: Vec<u8>, pool: &mut BufPool) {
        debug_assert_eq!(buf.len(), self.in_flight as usize);
        self.in_flight = 0;
        pool.give(buf);
    }

    /// A short send: `sent` bytes left; the rest must go out first, so the
    /// buffer stays in flight minus what was sent.
    pub fn partial_send(&mut self, buf: &mut Vec<u8>, sent: usize) {
        buf.drain(..sent);
        self.in_flight = buf.len() as u32;
    }

    /// Releases memory when idle.
    pub fn release_idle(&mut self, pool: &mut BufPool) {
        if self.queued.is_empty() && self.queued.capacity() > 0 {
            pool.give(std::mem::take(&mut self.queued));
        }
        if self.data.is_empty() && self.data.capacity() > 0 {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_swapped_without_copy() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        let ping = Frame::Pong(&[0; 16]); // 24 bytes
        assert!(q.push(&ping, 50, &mut pool).is_ok());
        assert!(q.push(&ping, 50, &mut pool).is_ok());
        assert_eq!(q.push(&ping, 50, &mut pool), Err(Overflow));
        assert_eq!(q.len(), 48);

        let buf = q.start_send().unwrap();
        assert_eq!(buf.len(), 48);
        assert!(q.is_sending());
        assert!(q.start_send().is_none(), "one send in flight");
        // In-flight bytes count against the bound.
        assert_eq!(q.push(&ping, 50, &mut pool), Err(Overflow));
        q.finish_send(buf, &mut pool);
        assert!(q.is_empty());
        assert_eq!(pool.free_count(), 1);
        q.push(&ping, 50, &mut pool).unwrap();
        assert_eq!(pool.free_count(), 0, "reused");
    }

    #[test]
    fn partial_sends_keep_the_rest_first() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        q.push(&Frame::Pong(b"abcd"), 100, &mut pool).unwrap();
        let mut buf = q.start_send().unwrap();
        q.push(&Frame::Pong(b"efgh"), 100, &mut pool).unwrap();
        q.partial_send(&mut buf, 5);
        assert_eq!(buf.len(), 7);
        assert_eq!(q.len(), 19);
        assert!(q.start_send().is_none());
        q.finish_send(buf, &mut pool);
        let next = q.start_send().unwrap();
        assert_eq!(&next[8..], b"efgh");
    }

    #[test]
    fn last_frames_get_past_the_bound_and_idle_queues_hold_nothing() {
        let mut pool = BufPool::new(1, 1 << 16);
        let mut q = OutQueue::default();
        q.push(&Frame::Pong(&[1; 40]), 48, &mut pool).unwrap();
        q.discard_queued(&mut pool);
        assert!(q.is_empty());
        q.push_unbounded(&Frame::Pong(&[1; 64]), &mut pool);
        assert_eq!(q.len(), 72);
        let buf = q.start_send().unwrap();
        q.finish_send(buf, &mut pool);
        q.release_idle(&mut pool);
        assert_eq!(q.capacity(), 0);
    }

    #[test]
    fn control_frames_go_ahead_of_queued_data() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        let mut message = Vec::new();
        Frame::Ping(b"data").encode_to_vec(&mut message).unwrap();
        q.push_data(&message, 100, &mut pool).unwrap();
        q.push(&Frame::Pong(b"ctl"), 100, &mut pool).unwrap();
        let buf = q.start_send().unwrap();
        assert_eq!(buf.len(), 11 + 12);
        assert_eq!(&buf[8..11], b"ctl", "control first");
        assert_eq!(&buf[19..], b"data");
        // Both lanes count against one bound.
        assert_eq!(q.push_data(&[0; 80], 100, &mut pool), Err(Overflow));
        q.finish_send(buf, &mut pool);
        q.push_data(&message, 100, &mut pool).unwrap();
        assert_eq!(
            q.start_send().unwrap(),
            message,
            "data alone is swapped out"
        );
    }

    #[test]
    fn discarding_data_keeps_control_frames() {
        let mut pool = BufPool::new(4, 1 << 16);
        let mut q = OutQueue::default();
        q.push_data(&[1; 50], 1000, &mut pool).unwrap();
        q.push(&Frame::Pong(b"keep"), 1000, &mut pool).unwrap();
        q.discard_data(&mut pool);
        assert_eq!(q.len(), 12);
        q.discard_queued(&mut pool);
        assert!(q.is_empty());
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
