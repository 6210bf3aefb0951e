//! Room messages across shards: a PUBLISH is encoded once as a MESSAGE frame in
//! a reference-counted buffer, and that same buffer goes to every shard's inbox
//! and into every member's send queue.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use proto::{Frame, Message};

use crate::flow::Flow;

/// One encoded MESSAGE frame, shared by every shard and member that gets it.
#[derive(Debug)]
pub struct Broadcast {
    frame: Box<[u8]>,
    /// Its stream id (0: a whole message) and sender, which key a member's stream lane.
    stream: u16,
    from_conn_id: u64,
    /// A stream frame's flow control: its publisher's [`Flow`].
    flow: Option<Arc<Flow>>,
}

/// Where the room name sits in an encoded MESSAGE: header, `from_conn_id`, `room_len`.
const ROOM_AT: usize = proto::HEADER_LEN + 8 + 1;

impl Broadcast {
    /// Encodes `message` once; a stream frame carries its publisher's `flow`.
    pub fn encode(message: Message<'_>, flow: Option<Arc<Flow>>) -> Arc<Self> {
        let (stream, from_conn_id) = (message.fragment.stream, message.from_conn_id);
        let frame = Frame::Message(message);
        let mut bytes = Vec::with_capacity(frame.encoded_len());
        frame
            .encode_to_vec(&mut bytes)
            .expect("a MESSAGE built from a valid PUBLISH is valid");
        Arc::new(Self {
            frame: bytes.into_boxed_slice(),
            stream,
            from_conn_id,
            flow: flow.filter(|_| stream != 0),
        })
    }

    /// The stream id: 0 for a whole message, else a fragment (or cancel) of a stream.
    pub fn stream(&self) -> u16 {
        self.stream
    }

    /// The publishing connection.
    pub fn from_conn_id(&self) -> u64 {
        self.from_conn_id
    }

    /// The publisher's flow control, for a stream frame.
    pub fn flow(&self) -> Option<&Arc<Flow>> {
        self.flow.as_ref()
    }

    /// The frame's bytes, as every member receives them.
    pub fn bytes(&self) -> &[u8] {
        &self.frame
    }

    /// The room it goes to.
    pub fn room(&self) -> &str {
        let len = usize::from(self.frame[ROOM_AT - 1]);
        std::str::from_utf8(&self.frame[ROOM_AT..ROOM_AT + len]).expect("encoded from a valid room")
    }
}

/// A shard's inbox: a bounded lock-free queue that other shards push to, and
/// the eventfd that wakes the shard's ring when the queue goes from empty to
/// non-empty (one wake per batch, not per message).
#[derive(Debug)]
pub struct Inbox {
    queue: ArrayQueue<Arc<Broadcast>>,
    /// Set by the first producer after the consumer last drained.
    notified: AtomicBool,
    wake: File,
}

impl Inbox {
    /// An inbox of `capacity` messages waking the shard through `wake`.
    pub fn new(capacity: usize, wake: File) -> Self {
        Self {
            queue: ArrayQueue::new(capacity),
            notified: AtomicBool::new(false),
            wake,
        }
    }

    /// Pushes a message; gives it back if the inbox is full. Returns whether
    /// this push woke the shard.
    pub fn push(&self, message: Arc<Broadcast>) -> Result<bool, Arc<Broadcast>> {
        self.queue.push(message)?;
        Ok(self.nudge())
    }

    /// Wakes the shard (once until it next drains) without a message: a flow
    /// of one of its publishers opened. Returns whether this call woke it.
    pub fn nudge(&self) -> bool {
        if self.notified.swap(true, Ordering::AcqRel) {
            return false;
        }
        // A failed wake-up write can only mean the counter is saturated, and
        // then the shard is awake already.
        let _ = (&self.wake).write_all(&1u64.to_ne_bytes());
        true
    }

    /// Takes every message queued now. The consumer calls this when woken.
    pub fn drain(&self, each: impl FnMut(Arc<Broadcast>)) {
        self.drain_up_to(usize::MAX, each);
    }

    /// Takes messages until `budget` bytes of frames are taken or none is
    /// left; returns whether some were left (the consumer comes back without
    /// waiting for a wake-up: the producers' wake-ups stop while it is behind).
    pub fn drain_up_to(&self, budget: usize, mut each: impl FnMut(Arc<Broadcast>)) -> bool {
        // Clear first: a push racing with the drain sets it again and wakes us.
        self.notified.store(false, Ordering::Release);
        let mut taken = 0;
        while taken < budget {
            let Some(message) = self.queue.pop() else {
                return false;
            };
            taken += message.bytes().len();
            each(message);
        }
        !self.queue.is_empty()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Fragment, Room};

    fn message(body: &[u8]) -> Arc<Broadcast> {
        Broadcast::encode(
            Message {
                from_conn_id: 9,
                room: Room::new("lobby").unwrap(),
                body,
                fragment: Fragment::default(),
            },
            None,
        )
    }

    fn wake_pair() -> (File, File) {
        let fd = engine::sys::eventfd().unwrap();
        let other = fd.try_clone().unwrap();
        (File::from(fd), File::from(other))
    }

    #[test]
    fn encoded_once_with_its_room() {
        let m = message(b"hi");
        assert_eq!(m.room(), "lobby");
        let mut d = proto::Decoder::new(1 << 20);
        let mut input = m.bytes();
        let Some(Frame::Message(got)) = d.decode(&mut input).unwrap() else {
            panic!("not a MESSAGE");
        };
        assert_eq!((got.from_conn_id, got.body), (9, &b"hi"[..]));
    }

    #[test]
    fn one_wake_per_batch_and_bounded() {
        let (wake, mut reader) = wake_pair();
        let inbox = Inbox::new(2, wake);
        assert!(
            matches!(inbox.push(message(b"1")), Ok(true)),
            "first push wakes"
        );
        assert!(
            matches!(inbox.push(message(b"2")), Ok(false)),
            "the shard is woken already"
        );
        assert!(
            inbox.push(message(b"3")).is_err(),
            "full: given back, not dropped"
        );
        let mut counter = [0u8; 8];
        std::io::Read::read_exact(&mut reader, &mut counter).unwrap();
        assert_eq!(u64::from_ne_bytes(counter), 1);
        let mut got = Vec::new();
        inbox.drain(|m| got.push(m.bytes().to_vec()));
        assert_eq!(got.len(), 2);
        assert!(inbox.is_empty());
        assert!(
            matches!(inbox.push(message(b"4")), Ok(true)),
            "empty again: wakes again"
        );
    }

    #[test]
    fn a_budgeted_drain_leaves_the_rest_and_says_so() {
        let (wake, _reader) = wake_pair();
        let inbox = Inbox::new(10, wake);
        for _ in 0..5 {
            inbox.push(message(&[0; 100])).unwrap();
        }
        let frame = message(&[0; 100]).bytes().len();
        let mut got = 0;
        assert!(inbox.drain_up_to(2 * frame, |_| got += 1), "some left");
        assert_eq!(got, 2);
        assert!(!inbox.drain_up_to(usize::MAX, |_| got += 1));
        assert_eq!(got, 5);
    }

    #[test]
    fn stream_frames_carry_their_key_and_flow() {
        let flow = Flow::new(0, 1000);
        let m = Broadcast::encode(
            Message {
                from_conn_id: 7,
                room: Room::new("r").unwrap(),
                body: b"x",
                fragment: Fragment {
                    stream: 3,
                    more: true,
                    cancel: false,
                },
            },
            Some(flow.clone()),
        );
        assert_eq!((m.stream(), m.from_conn_id()), (3, 7));
        assert!(Arc::ptr_eq(m.flow().unwrap(), &flow));
        let whole = Broadcast::encode(
            Message {
                from_conn_id: 7,
                room: Room::new("r").unwrap(),
                body: b"x",
                fragment: Fragment::default(),
            },
            Some(flow),
        );
        assert!(
            whole.flow().is_none(),
            "whole messages are not flow-controlled"
        );
    }

    #[test]
    fn many_producers_lose_nothing() {
        let (wake, _reader) = wake_pair();
        let inbox = Arc::new(Inbox::new(100_000, wake));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let inbox = inbox.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let body = [p, (i >> 8) as u8, i as u8];
                        inbox.push(message(&body)).unwrap();
                    }
                })
            })
            .collect();
        let mut count = 0;
        let mut last = [None::<u32>; 4];
        while count < 40_000 {
            inbox.drain(|m| {
                let b = &m.bytes()[m.bytes().len() - 3..];
                let (p, i) = (b[0] as usize, (u32::from(b[1]) << 8) | u32::from(b[2]));
                assert!(
                    last[p].is_none_or(|l| (l + 1) & 0xFFFF == i),
                    "per-producer order"
                );
                last[p] = Some(i);
                count += 1;
            });
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(count, 40_000);
    }
}
