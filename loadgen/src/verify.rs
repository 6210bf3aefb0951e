//! Checks every room message a receiver gets: per publisher (and room), the
//! sequence numbers must arrive as 0, 1, 2, ... Anything else is counted as a
//! gap (possibly lost), a late arrival (out of order), or a duplicate.
//!
//! A stream's key is (publisher, receiver), the receiver's part naming the
//! room and the receiving connection. Two things soften the rule:
//!
//! * a receiver that joined late (it reconnected) takes its first message
//!   from a publisher as the start, since membership starts at JOINED;
//! * a gap after the receiver got ERROR GAP for its room (a ringroom cluster
//!   lost messages between nodes and said so) is counted as *reported*, not
//!   missing: a loss the receiver was told of is not a silent one.

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
    /// The receiver's GAP notices when this stream's last message came.
    gaps_seen: u64,
}

/// Per-stream sequence checks of one receiver (or many: keys carry the receiver).
/// Streams are kept by receiver, so that a receiver gone (its connection
/// closed) is forgotten whole: what is held is bounded by the receivers present.
#[derive(Debug, Default)]
pub struct SeqCheck {
    /// By receiver: its streams, by publisher (a few: one per room it is in).
    streams: HashMap<u64, Vec<(u64, Stream)>>,
    /// Messages still missing in streams forgotten since.
    forgotten_missing: u64,
    /// Messages received in order.
    pub in_order: u64,
    /// Messages that arrived after a missing one.
    pub late: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Missing messages forgotten because a stream had too many gaps.
    pub given_up: u64,
    /// Messages skipped after a GAP notice told their receiver of a loss.
    pub reported: u64,
    /// GAP notices so far, by receiver (the second half of a key).
    gaps: HashMap<u64, u64>,
}

impl SeqCheck {
    /// Records message `seq` of stream `key` (e.g. (publisher id, room id)).
    pub fn record(&mut self, key: (u64, u64), seq: u64) -> Arrival {
        self.record_from(key, seq, false)
    }

    /// Records message `seq` of stream `key`; if the stream is new and
    /// `joined_late`, it starts here (a receiver that reconnected).
    pub fn record_from(&mut self, key: (u64, u64), seq: u64, joined_late: bool) -> Arrival {
        let gaps = self.gaps.get(&key.1).copied().unwrap_or(0);
        let of_receiver = self.streams.entry(key.1).or_default();
        let i = match of_receiver.iter().position(|(p, _)| *p == key.0) {
            Some(i) => i,
            None => {
                let next = if joined_late { seq } else { 0 };
                of_receiver.push((
                    key.0,
                    Stream {
                        next,
                        ..Stream::default()
                    },
                ));
                of_receiver.len() - 1
            }
        };
        let s = &mut of_receiver[i].1;
        let told = gaps > s.gaps_seen;
        s.gaps_seen = gaps;
        if seq == s.next {
            s.next += 1;
            self.in_order += 1;
            return Arrival::InOrder;
        }
        if seq > s.next && told {
            let gap = seq - s.next;
            self.reported += gap;
            s.next = seq + 1;
            return Arrival::AfterGap(gap);
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

    /// `receiver` got ERROR GAP: a skip in any of its streams from now to
    /// their next message is a reported loss.
    pub fn gap(&mut self, receiver: u64) {
        *self.gaps.entry(receiver).or_default() += 1;
    }

    /// `receiver` is gone (its connection closed): its streams are dropped,
    /// what they still missed stays counted as missing.
    pub fn forget(&mut self, receiver: u64) {
        if let Some(streams) = self.streams.remove(&receiver) {
            self.forgotten_missing += streams
                .iter()
                .map(|(_, s)| s.missing.len() as u64)
                .sum::<u64>();
        }
        self.gaps.remove(&receiver);
    }

    /// Receivers whose streams are held.
    pub fn receivers(&self) -> usize {
        self.streams.len()
    }

    /// Messages still missing (lost, unless they arrive late).
    pub fn missing(&self) -> u64 {
        self.streams
            .values()
            .flatten()
            .map(|(_, s)| s.missing.len() as u64)
            .sum::<u64>()
            + self.given_up
            + self.forgotten_missing
    }

    /// Messages expected but never seen at the end of a run, given how many
    /// each stream should have had: `expected(key)` returns the count.
    pub fn lost(&self, expected: impl Fn((u64, u64)) -> u64) -> u64 {
        let tails: u64 = self
            .streams
            .iter()
            .flat_map(|(r, v)| v.iter().map(move |(p, s)| ((*p, *r), s)))
            .map(|(k, s)| expected(k).saturating_sub(s.next))
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
    fn a_gap_after_a_gap_notice_is_reported_not_missing() {
        let mut c = SeqCheck::default();
        c.record((1, 7), 0);
        c.record((2, 7), 0);
        c.gap(7);
        assert_eq!(c.record((1, 7), 5), Arrival::AfterGap(4));
        assert_eq!(c.reported, 4);
        assert_eq!(c.missing(), 0);
        assert_eq!(
            c.record((2, 7), 3),
            Arrival::AfterGap(2),
            "the notice covers every publisher"
        );
        assert_eq!(c.reported, 6);
        assert_eq!(c.record((1, 7), 9), Arrival::AfterGap(3));
        assert_eq!(c.missing(), 3, "no notice since: silent");
        c.gap(8);
        assert_eq!(
            c.record((3, 8), 2),
            Arrival::AfterGap(2),
            "a notice before a first message"
        );
        assert_eq!(c.reported, 8);
    }

    #[test]
    fn a_receiver_that_joined_late_starts_where_it_joined() {
        let mut c = SeqCheck::default();
        assert_eq!(c.record_from((1, 9), 40, true), Arrival::InOrder);
        assert_eq!(c.record_from((1, 9), 41, true), Arrival::InOrder);
        assert!(c.is_clean());
        assert_eq!(c.record_from((2, 9), 40, false), Arrival::AfterGap(40));
    }

    #[test]
    fn a_receiver_gone_is_forgotten_and_its_losses_stay_counted() {
        let mut c = SeqCheck::default();
        c.record((1, 7), 0);
        c.record((1, 7), 3);
        c.record((2, 7), 0);
        c.record((1, 8), 0);
        assert_eq!(c.receivers(), 2);
        c.forget(7);
        assert_eq!(c.receivers(), 1);
        assert_eq!(c.missing(), 2, "1 and 2 never came to receiver 7");
        // A new receiver with the same key would start over.
        c.forget(8);
        c.forget(99);
        assert_eq!(c.receivers(), 0);
        assert_eq!(c.missing(), 2);
    }

    #[test]
    fn gaps_are_bounded() {
        let mut c = SeqCheck::default();
        c.record((1, 0), 10_000);
        assert_eq!(c.given_up, 10_000 - MAX_GAPS_PER_STREAM as u64);
        assert_eq!(c.missing(), 10_000, "forgotten ones still count as missing");
    }
}
