//! The channel between shards: each shard's bounded inbox, woken by its
//! eventfd when it goes from empty to non-empty, and each publishing shard's
//! outboxes, which hold (in order) what a full inbox could not take. Which
//! shards a message goes to is its room's shard mask ([`crate::rooms`]).
//!
//! With `--cluster`, the cluster link is one more destination: its inbox
//! comes after the shards' (its bit is [`crate::rooms::shard_bit`] of the
//! shard count), it takes every local PUBLISH, and it sends the shards what
//! other nodes published, and notices about rooms, through their inboxes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::broadcast::Broadcast;
use crate::flow::Flow;
use crate::metrics::ShardMetrics;
use crate::rooms::SubState;

/// What goes through an inbox.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// A room message, from another shard or another node.
    Message(Arc<Broadcast>),
    /// Messages from other nodes to this room may have been lost: its local
    /// members get ERROR GAP, in order with the room's messages.
    Gap(Arc<str>),
    /// The node's subscription to this room was settled (confirmed by NATS,
    /// or not, if the link is down): members whose JOIN waits for it get
    /// JOINED, with ERROR GAP if it was not confirmed.
    Subscribed {
        /// The room.
        room: Arc<str>,
        /// Confirmed, or not.
        state: SubState,
    },
}

impl Delivery {
    /// What it weighs in a drain's byte budget.
    pub fn weight(&self) -> usize {
        match self {
            Self::Message(m) => m.bytes().len(),
            Self::Gap(room) | Self::Subscribed { room, .. } => 64 + room.len(),
        }
    }

    /// A stream frame's flow control.
    pub fn flow(&self) -> Option<&Arc<Flow>> {
        match self {
            Self::Message(m) => m.flow(),
            _ => None,
        }
    }
}

impl From<Arc<Broadcast>> for Delivery {
    fn from(m: Arc<Broadcast>) -> Self {
        Self::Message(m)
    }
}

/// A shard's inbox: a bounded lock-free queue that other shards push to, and
/// the eventfd that wakes the shard's ring when the queue goes from empty to
/// non-empty (one wake per batch, not per message).
#[derive(Debug)]
pub struct Inbox {
    queue: ArrayQueue<Delivery>,
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
    pub fn push(&self, message: Delivery) -> Result<bool, Delivery> {
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
    pub fn drain(&self, each: impl FnMut(Delivery)) {
        self.drain_up_to(usize::MAX, each);
    }

    /// Takes messages until `budget` bytes of frames are taken or none is
    /// left; returns whether some were left (the consumer comes back without
    /// waiting for a wake-up: the producers' wake-ups stop while it is behind).
    pub fn drain_up_to(&self, budget: usize, mut each: impl FnMut(Delivery)) -> bool {
        // Clear first: a push racing with the drain sets it again and wakes us.
        self.notified.store(false, Ordering::Release);
        let mut taken = 0;
        while taken < budget {
            let Some(message) = self.queue.pop() else {
                return false;
            };
            taken += message.weight();
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

/// Messages waiting for room in other shards' inboxes: the publishing shard
/// holds them (order kept per destination) instead of dropping them or
/// blocking its loop, and pauses new PUBLISHes while this is full.
pub struct Outboxes {
    queues: Vec<VecDeque<Delivery>>,
    /// Messages waiting in all of them.
    pub waiting: usize,
    limit: usize,
}

impl Outboxes {
    /// Outboxes to `shards` shards, each holding at most `limit` messages.
    pub fn new(shards: usize, limit: usize) -> Self {
        Self {
            queues: (0..shards).map(|_| VecDeque::new()).collect(),
            waiting: 0,
            limit,
        }
    }

    /// Whether one is full: publishers pause until it drains.
    pub fn is_full(&self) -> bool {
        self.queues.iter().any(|q| q.len() >= self.limit)
    }

    /// Retries what waits, then sends each of `messages` to the shards in its
    /// mask (those with members of its room) but `me`.
    pub fn send(
        &mut self,
        messages: &mut Vec<(Delivery, u64)>,
        inboxes: &[Arc<Inbox>],
        me: usize,
        metrics: &ShardMetrics,
    ) {
        if self.waiting == 0 && messages.is_empty() {
            return;
        }
        for (shard, inbox) in inboxes.iter().enumerate() {
            if shard == me {
                continue;
            }
            let queue = &mut self.queues[shard];
            let bit = crate::rooms::shard_bit(shard);
            let pending =
                queue
                    .drain(..)
                    .chain(messages.iter().filter(|(_, shards)| shards & bit != 0).map(
                        |(m, _)| {
                            // In the channel from here until that shard takes it.
                            if let Some(flow) = m.flow() {
                                flow.entered_channel(m.weight());
                            }
                            m.clone()
                        },
                    ));
            let mut blocked = Vec::new();
            for message in pending {
                if !blocked.is_empty() {
                    blocked.push(message); // keep the order behind the first refusal
                    continue;
                }
                match inbox.push(message) {
                    Ok(woke) => {
                        metrics.cross_core_sent.inc();
                        if woke {
                            metrics.cross_core_wakeups.inc();
                        }
                    }
                    Err(message) => {
                        metrics.channel_backpressure.inc();
                        blocked.push(message);
                    }
                }
            }
            queue.extend(blocked);
        }
        messages.clear();
        self.waiting = self.queues.iter().map(VecDeque::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broadcast::tests::message;

    fn wake_pair() -> (File, File) {
        let fd = engine::sys::eventfd().unwrap();
        let other = fd.try_clone().unwrap();
        (File::from(fd), File::from(other))
    }

    #[test]
    fn one_wake_per_batch_and_bounded() {
        let (wake, mut reader) = wake_pair();
        let inbox = Inbox::new(2, wake);
        assert!(
            matches!(inbox.push(message(b"1").into()), Ok(true)),
            "first push wakes"
        );
        assert!(
            matches!(inbox.push(message(b"2").into()), Ok(false)),
            "the shard is woken already"
        );
        assert!(
            inbox.push(message(b"3").into()).is_err(),
            "full: given back, not dropped"
        );
        let mut counter = [0u8; 8];
        std::io::Read::read_exact(&mut reader, &mut counter).unwrap();
        assert_eq!(u64::from_ne_bytes(counter), 1);
        let mut got = Vec::new();
        inbox.drain(|m| got.push(m.weight()));
        assert_eq!(got.len(), 2);
        assert!(inbox.is_empty());
        assert!(
            matches!(inbox.push(message(b"4").into()), Ok(true)),
            "empty again: wakes again"
        );
    }

    #[test]
    fn a_budgeted_drain_leaves_the_rest_and_says_so() {
        let (wake, _reader) = wake_pair();
        let inbox = Inbox::new(10, wake);
        for _ in 0..5 {
            inbox.push(message(&[0; 100]).into()).unwrap();
        }
        let frame = message(&[0; 100]).bytes().len();
        let mut got = 0;
        assert!(inbox.drain_up_to(2 * frame, |_| got += 1), "some left");
        assert_eq!(got, 2);
        assert!(!inbox.drain_up_to(usize::MAX, |_| got += 1));
        assert_eq!(got, 5);
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
                        inbox.push(message(&body).into()).unwrap();
                    }
                })
            })
            .collect();
        let mut count = 0;
        let mut last = [None::<u32>; 4];
        while count < 40_000 {
            inbox.drain(|m| {
                let Delivery::Message(m) = m else {
                    panic!("{m:?}")
                };
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
