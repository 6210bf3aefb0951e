//! Checks every room message a receiver gets: per publisher (and room), the
//! sequence numbers must arrive as 0, 1, 2, ... Anything else is counted as a
//! gap (possibly lost), a late arrival (out of order), or a duplicate.

use std::collections::{BTreeSet, HashMap};

/// Most sequence numbers one stream may have outstanding as gaps; beyond it,
/// the oldest are counted as lost and forgotten.
pub const MAX_GAPS_PER_STREAM: usize = 4096;

/// What one message was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected one.
    InOrder,
    /// Later than expected: the ones between are missing (for now).
    AfterGap(u64),
    /// One that was missing: it came out of order.
    Late,
    /// Seen before.
    Duplicate,
}

#[derive(Debug, Default)]
struct Stream {
    next: u64,
    missing: BTreeSet<u64>,
}

/// Per-stream sequence checks of one receiver (or many: keys carry the receiver).
#[derive(Debug, Default)]
pub struct SeqCheck {
    streams: HashMap<(u64, u64), Stream>,
    /// Messages received in order.
    pub in_order: u64,
    /// Messages that arrived after a missing one.
    pub late: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Missing messages forgotten because a stream had too many gaps.
    pub given_up: u64,
}

impl SeqCheck {
    /// Records message `seq` of stream `key` (e.g. (publisher id, room id)).
    pub fn record(&mut self, key: (u64, u64), seq: u64) -> Arrival {
        let s = self.streams.entry(key).or_default();
        if seq == s.next {
            s.next += 1;
            self.in_order += 1;
            return Arrival::InOrder;
        }
        if seq > s.next {
            let gap = seq - s.next;
            s.missing.extend(s.next..seq);
            while s.missing.len() > MAX_GAPS_PER_STREAM {
                s.missing.pop_first();
                self.given_up += 1;
            }
            s.next = seq + 1;
            return Arrival::AfterGap(gap);
        }
        if s.missing.remove(&seq) {
            self.late += 1;
            Arrival::Late
        } else {
            self.duplicates += 1;
            Arrival::Duplicate
        }
    }

    /// Messages still missing (lost, unless they arrive late).
    pub fn missing(&self) -> u64 {
        self.streams
            .values()
            .map(|s| s.missing.len() as u64)
            .sum::<u64>()
            + self.given_up
    }

    /// Messages expected but never seen at the end of a run, given how many
    /// each stream should have had: `expected(key)` returns the count.
    pub fn lost(&self, expected: impl Fn((u64, u64)) -> u64) -> u64 {
        let tails: u64 = self
            .streams
            .iter()
            .map(|(k, s)| expected(*k).saturating_sub(s.next))
            .sum();
        self.missing() + tails
    }

    /// Whether nothing was out of order, duplicated or missing.
    pub fn is_clean(&self) -> bool {
        self.late == 0 && self.duplicates == 0 && self.missing() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_streams_are_clean() {
        let mut c = SeqCheck::default();
        for seq in 0..100 {
            assert_eq!(c.record((1, 0), seq), Arrival::InOrder);
            assert_eq!(
                c.record((2, 0), seq),
                Arrival::InOrder,
                "streams are separate"
            );
        }
        assert!(c.is_clean());
        assert_eq!(c.in_order, 200);
        assert_eq!(c.lost(|_| 100), 0);
        assert_eq!(c.lost(|_| 101), 2, "one more was expected from each");
    }

    #[test]
    fn gaps_late_arrivals_and_duplicates_are_told_apart() {
        let mut c = SeqCheck::default();
        assert_eq!(c.record((1, 0), 0), Arrival::InOrder);
        assert_eq!(c.record((1, 0), 3), Arrival::AfterGap(2));
        assert_eq!(c.missing(), 2);
        assert_eq!(c.record((1, 0), 1), Arrival::Late);
        assert_eq!(c.record((1, 0), 1), Arrival::Duplicate);
        assert_eq!(c.record((1, 0), 3), Arrival::Duplicate);
        assert_eq!(c.missing(), 1, "2 is still missing");
        assert_eq!((c.late, c.duplicates), (1, 2));
        assert!(!c.is_clean());
        assert_eq!(c.lost(|_| 4), 1);
    }

    #[test]
    fn gaps_are_bounded() {
        let mut c = SeqCheck::default();
        c.record((1, 0), 10_000);
        assert_eq!(c.given_up, 10_000 - MAX_GAPS_PER_STREAM as u64);
        assert_eq!(c.missing(), 10_000, "forgotten ones still count as missing");
    }
}
