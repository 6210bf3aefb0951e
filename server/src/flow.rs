//! Stream flow control: a publisher's stream fragments go at the pace of the
//! slowest member still reading them.
//!
//! Each publisher that streams has one [`Flow`], shared (through the
//! [`Broadcast`](crate::broadcast::Broadcast) of every fragment it sends) with
//! every shard that relays them. Two things close it:
//!
//! * a member anywhere holds more than the window of its stream data queued
//!   and not yet taken by its socket (`over`: the number of such members; a
//!   member leaves that state below half the window, so the publisher is not
//!   woken for every fragment), and
//! * more than the window of its fragments sit in the channels between shards
//!   (`in_transit`, counted once per destination shard), which no member has
//!   queued yet.
//!
//! While closed, the publisher's next stream PUBLISH pauses its reading (the
//! same pause that full channels use: its socket's receive window pushes
//! back). It resumes once no member is over and at most half the window is in
//! transit. A shard that opens another shard's flow wakes that shard, which
//! then checks its paused publishers.
//!
//! Counts are atomics: members on every shard change them, the publisher's
//! shard reads them. They are exact (every increment has its decrement when
//! the member's queue is sent, cut or closed), so a closed flow always opens
//! again once the slow member reads or is cut for making no progress.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// A member is cut (SLOW_CONSUMER) when it holds this many windows of one
/// publisher's stream data. Measured in the tests: a member across nodes held
/// under 32 windows (8 MiB at the default window), one on a server with
/// 64 KiB receive buffers between 32 and 64 (the input a shard reads in one
/// turn before the pause takes effect); 256 leaves four times that.
pub const HARD_BOUND_WINDOWS: usize = 256;

/// One publishing connection's stream flow control.
#[derive(Debug)]
pub struct Flow {
    /// Members holding more than the window of this publisher's stream data.
    over: AtomicU32,
    /// Bytes of its fragments in the channels to other shards, per destination.
    in_transit: AtomicU64,
    /// Set while the publisher is paused on this flow: who opens it wakes `shard`.
    waiting: AtomicBool,
    /// The publisher's shard.
    shard: usize,
    /// The high watermark, in bytes (`--stream-window`).
    window: u64,
}

impl Flow {
    /// The flow of a publisher on `shard` with a window of `window` bytes.
    pub fn new(shard: usize, window: usize) -> Arc<Self> {
        Arc::new(Self {
            over: AtomicU32::new(0),
            in_transit: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            shard,
            window: window as u64,
        })
    }

    /// The high watermark.
    pub fn window(&self) -> usize {
        self.window as usize
    }

    /// What a member may hold of this flow's data before it is cut, flow
    /// control or not: [`HARD_BOUND_WINDOWS`] windows. A local publisher
    /// pauses within one window and what the channels hold (another); a
    /// remote one within a round trip to its node, with what the sockets
    /// between hold meanwhile. A publisher that does not pause at all (a node
    /// that ignores FLOW) meets this bound instead of filling the member's
    /// queue without end.
    pub fn hard_bound(&self) -> usize {
        self.window() * HARD_BOUND_WINDOWS
    }

    /// The publisher's shard.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Whether the publisher must pause before its next fragment.
    pub fn is_closed(&self) -> bool {
        self.over.load(Ordering::SeqCst) > 0 || self.in_transit.load(Ordering::SeqCst) > self.window
    }

    /// Whether a paused publisher may go on (below the low watermark).
    pub fn may_resume(&self) -> bool {
        self.over.load(Ordering::SeqCst) == 0
            && self.in_transit.load(Ordering::SeqCst) <= self.window / 2
    }

    /// The publisher pauses (true) or resumes (false) on this flow. After
    /// setting it, the publisher checks [`Flow::may_resume`] once more: an
    /// opening that raced with the pause is then not missed.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    /// A fragment of `bytes` went into the channel to one other shard.
    pub fn entered_channel(&self, bytes: usize) {
        self.in_transit.fetch_add(bytes as u64, Ordering::SeqCst);
    }

    /// A fragment of `bytes` left a channel (delivered to members, or to none).
    /// Returns the shard to wake, if the publisher waits and may now resume.
    pub fn left_channel(&self, bytes: usize) -> Option<usize> {
        self.in_transit.fetch_sub(bytes as u64, Ordering::SeqCst);
        self.wake_if_open()
    }

    /// A member went above the window.
    pub fn member_over(&self) {
        self.over.fetch_add(1, Ordering::SeqCst);
    }

    /// A member went below half the window, or its queue was dropped.
    /// Returns the shard to wake, if the publisher waits and may now resume.
    pub fn member_under(&self) -> Option<usize> {
        self.over.fetch_sub(1, Ordering::SeqCst);
        self.wake_if_open()
    }

    fn wake_if_open(&self) -> Option<usize> {
        (self.waiting.load(Ordering::SeqCst) && self.may_resume()).then_some(self.shard)
    }
}

/// What one member owes one flow: its queued stream bytes from that publisher.
#[derive(Debug)]
pub struct Debt {
    flow: Arc<Flow>,
    bytes: usize,
    over: bool,
}

/// A member's debts, one per publisher whose fragments it has queued.
#[derive(Debug, Default)]
pub struct Debts(Vec<Debt>);

impl Debts {
    /// `bytes` of `flow`'s fragments were queued for this member; returns
    /// what it owes that flow now.
    pub fn queued(&mut self, flow: &Arc<Flow>, bytes: usize) -> usize {
        let i = match self.0.iter().position(|d| Arc::ptr_eq(&d.flow, flow)) {
            Some(i) => i,
            None => {
                self.0.push(Debt {
                    flow: flow.clone(),
                    bytes: 0,
                    over: false,
                });
                self.0.len() - 1
            }
        };
        let d = &mut self.0[i];
        d.bytes += bytes;
        if !d.over && d.bytes > d.flow.window() {
            d.over = true;
            d.flow.member_over();
        }
        d.bytes
    }

    /// `bytes` of `flow`'s fragments were taken by the member's socket. A
    /// shard to wake is pushed to `wake`.
    pub fn sent(&mut self, flow: &Arc<Flow>, bytes: usize, wake: &mut Vec<usize>) {
        let Some(i) = self.0.iter().position(|d| Arc::ptr_eq(&d.flow, flow)) else {
            return; // dropped meanwhile (the queue was cut)
        };
        let d = &mut self.0[i];
        d.bytes = d.bytes.saturating_sub(bytes);
        if d.over && d.bytes < d.flow.window() / 2 {
            d.over = false;
            wake.extend(d.flow.member_under());
        }
        if d.bytes == 0 && !d.over {
            self.0.swap_remove(i);
        }
    }

    /// The member's stream data is dropped (cut off, or closed): every flow it
    /// held back opens. Shards to wake are pushed to `wake`.
    pub fn clear(&mut self, wake: &mut Vec<usize>) {
        for d in self.0.drain(..) {
            if d.over {
                wake.extend(d.flow.member_under());
            }
        }
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Debts {
    fn drop(&mut self) {
        // A queue dropped without `clear` must still open its flows.
        let mut wake = Vec::new();
        self.clear(&mut wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_over_the_window_closes_the_flow_until_below_half() {
        let flow = Flow::new(1, 1000);
        let mut debts = Debts::default();
        let mut wake = Vec::new();
        debts.queued(&flow, 1000);
        assert!(!flow.is_closed(), "at the window, not above it");
        debts.queued(&flow, 1);
        assert!(flow.is_closed());
        flow.set_waiting(true);
        debts.sent(&flow, 501, &mut wake);
        assert!(flow.is_closed(), "500 left: not below half yet");
        assert!(wake.is_empty());
        debts.sent(&flow, 1, &mut wake);
        assert!(!flow.is_closed() && flow.may_resume());
        assert_eq!(wake, vec![1], "the waiting publisher's shard is woken");
        debts.sent(&flow, 499, &mut wake);
        assert!(debts.is_empty(), "nothing owed: the entry goes");
    }

    #[test]
    fn dropping_a_members_queue_opens_the_flow() {
        let flow = Flow::new(0, 100);
        let mut a = Debts::default();
        let mut b = Debts::default();
        a.queued(&flow, 200);
        b.queued(&flow, 300);
        assert!(flow.is_closed());
        let mut wake = Vec::new();
        a.clear(&mut wake);
        assert!(flow.is_closed(), "b is still over");
        drop(b);
        assert!(flow.may_resume());
    }

    #[test]
    fn bytes_in_the_channels_count_against_the_window() {
        let flow = Flow::new(2, 100);
        flow.entered_channel(60);
        flow.entered_channel(60);
        assert!(flow.is_closed(), "120 in transit");
        flow.set_waiting(true);
        assert_eq!(flow.left_channel(60), None, "60 left: above half");
        assert_eq!(flow.left_channel(20), Some(2));
        assert!(!flow.is_closed());
    }

    #[test]
    fn no_wake_for_a_publisher_that_does_not_wait() {
        let flow = Flow::new(3, 100);
        let mut debts = Debts::default();
        debts.queued(&flow, 101);
        let mut wake = Vec::new();
        debts.sent(&flow, 101, &mut wake);
        assert!(wake.is_empty());
        assert!(flow.may_resume());
    }
}
