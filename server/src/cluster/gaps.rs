//! Loss detection on the receiving node: per room, per origin node, the
//! position of the last message or sync seen. No I/O.
//!
//! Core NATS delivers at most once: what a link or route drops, or a slow
//! consumer cut loses, is gone. Each origin numbers its messages to a room
//! (see [`super::envelope`]), so a receiver that sees a number skipped, a new
//! epoch whose start it missed, or a sync beyond the last message it got,
//! knows that it lost messages, and tells the room's local members (ERROR
//! GAP) instead of losing them silently. What it has not yet seen of an
//! origin (the first message after it subscribed) is no gap: membership
//! starts at JOINED.
//!
//! A track lives while this node is subscribed to the room without a break:
//! [`Gaps::forget_room`] when it unsubscribes, [`Gaps::forget_all`] when its
//! link drops (that drop is itself reported as a gap in every room).

use std::collections::HashMap;

use super::envelope::{Origin, Position};

/// What a message or sync means for the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Nothing missed: deliver (a message) or nothing to do (a sync).
    InOrder,
    /// Messages were lost before this one (how many, where known): tell the
    /// members, then deliver it.
    Gap(Option<u64>),
    /// Seen already, or from an epoch that is over: drop it.
    Stale,
}

#[derive(Clone, Copy, Debug)]
struct Track {
    origin: Origin,
    at: Position,
    /// The epoch ended with a closing sync that matched what we got.
    closed: bool,
}

/// Most origins tracked in one room (closed ones are dropped first).
pub const MAX_ORIGINS_PER_ROOM: usize = 1024;

/// The tracks of one node's subscribed rooms.
#[derive(Debug, Default)]
pub struct Gaps {
    rooms: HashMap<Box<str>, Vec<Track>>,
    /// Tracks dropped for [`MAX_ORIGINS_PER_ROOM`].
    pub evicted: u64,
}

impl Gaps {
    /// A message of `origin` at `at` in `room`.
    pub fn message(&mut self, room: &str, origin: Origin, at: Position) -> Seen {
        let Some(track) = self.track(room, origin.node) else {
            self.insert(room, origin, at, false);
            return Seen::InOrder;
        };
        let seen = match judge(track, origin, at) {
            Step::SameEpoch if at.seq == track.at.seq + 1 => Seen::InOrder,
            Step::SameEpoch if at.seq > track.at.seq => Seen::Gap(Some(at.seq - track.at.seq - 1)),
            Step::SameEpoch | Step::Older => return Seen::Stale,
            // A new epoch (or incarnation) began while we were subscribed:
            // we should have its first message, and the old one's close.
            Step::Newer => match (track.closed, at.seq) {
                (true, 1) => Seen::InOrder,
                (true, n) => Seen::Gap(Some(n - 1)),
                (false, _) => Seen::Gap(None),
            },
        };
        *track = Track {
            origin,
            at,
            closed: false,
        };
        seen
    }

    /// A sync of `origin`: its last message to `room` was at `at`.
    pub fn sync(&mut self, room: &str, origin: Origin, at: Position, closing: bool) -> Seen {
        let Some(track) = self.track(room, origin.node) else {
            self.insert(room, origin, at, closing);
            return Seen::InOrder;
        };
        let seen = match judge(track, origin, at) {
            Step::SameEpoch if at.seq > track.at.seq => Seen::Gap(Some(at.seq - track.at.seq)),
            Step::SameEpoch => Seen::InOrder,
            Step::Older => return Seen::Stale,
            Step::Newer => match (track.closed, at.seq) {
                (true, 0) => Seen::InOrder,
                (true, n) => Seen::Gap(Some(n)),
                (false, _) => Seen::Gap(None),
            },
        };
        let seq = if matches!(seen, Seen::InOrder) && track.origin == origin {
            track.at.seq.max(at.seq)
        } else {
            at.seq
        };
        *track = Track {
            origin,
            at: Position {
                epoch: at.epoch,
                seq,
            },
            closed: closing,
        };
        seen
    }

    /// This node unsubscribed from `room`.
    pub fn forget_room(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// This node's link dropped: everything may have been missed.
    pub fn forget_all(&mut self) {
        self.rooms.clear();
    }

    /// Origins tracked, over all rooms.
    pub fn len(&self) -> usize {
        self.rooms.values().map(Vec::len).sum()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    fn track(&mut self, room: &str, node: u16) -> Option<&mut Track> {
        self.rooms
            .get_mut(room)?
            .iter_mut()
            .find(|t| t.origin.node == node)
    }

    fn insert(&mut self, room: &str, origin: Origin, at: Position, closed: bool) {
        let tracks = match self.rooms.get_mut(room) {
            Some(t) => t,
            None => self.rooms.entry(room.into()).or_default(),
        };
        if tracks.len() >= MAX_ORIGINS_PER_ROOM {
            let before = tracks.len();
            tracks.retain(|t| !t.closed);
            if tracks.len() >= MAX_ORIGINS_PER_ROOM {
                tracks.remove(0);
            }
            self.evicted += (before - tracks.len()) as u64;
        }
        tracks.push(Track { origin, at, closed });
    }
}

enum Step {
    SameEpoch,
    Newer,
    Older,
}

/// Where `at` of `origin` stands against what `track` has seen. Another
/// incarnation of the node is newer (the node restarted with the same id).
fn judge(track: &Track, origin: Origin, at: Position) -> Step {
    if track.origin.incarnation != origin.incarnation || at.epoch > track.at.epoch {
        Step::Newer
    } else if at.epoch < track.at.epoch {
        Step::Older
    } else {
        Step::SameEpoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Origin = Origin {
        node: 1,
        incarnation: 100,
    };
    const B: Origin = Origin {
        node: 2,
        incarnation: 200,
    };

    fn at(epoch: u32, seq: u64) -> Position {
        Position { epoch, seq }
    }

    #[test]
    fn the_first_contact_is_no_gap_and_then_every_skip_is() {
        let mut g = Gaps::default();
        assert_eq!(
            g.message("r", A, at(1, 57)),
            Seen::InOrder,
            "joined mid-way"
        );
        assert_eq!(g.message("r", A, at(1, 58)), Seen::InOrder);
        assert_eq!(g.message("r", A, at(1, 61)), Seen::Gap(Some(2)));
        assert_eq!(g.message("r", A, at(1, 60)), Seen::Stale, "late: dropped");
        assert_eq!(g.message("r", A, at(1, 61)), Seen::Stale, "duplicate");
        assert_eq!(g.message("r", B, at(4, 9)), Seen::InOrder, "origins apart");
        assert_eq!(
            g.message("other", A, at(1, 3)),
            Seen::InOrder,
            "rooms apart"
        );
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn a_sync_reveals_a_lost_tail_once() {
        let mut g = Gaps::default();
        g.message("r", A, at(1, 1));
        assert_eq!(g.sync("r", A, at(1, 1), false), Seen::InOrder);
        assert_eq!(g.sync("r", A, at(1, 4), false), Seen::Gap(Some(3)));
        assert_eq!(g.sync("r", A, at(1, 4), false), Seen::InOrder, "told once");
        assert_eq!(g.message("r", A, at(1, 5)), Seen::InOrder);
    }

    #[test]
    fn epochs_a_clean_close_then_a_whole_new_epoch_is_no_gap() {
        let mut g = Gaps::default();
        g.message("r", A, at(1, 1));
        g.message("r", A, at(1, 2));
        assert_eq!(g.sync("r", A, at(1, 2), true), Seen::InOrder);
        assert_eq!(g.message("r", A, at(2, 1)), Seen::InOrder);
        assert_eq!(g.message("r", A, at(1, 3)), Seen::Stale, "an old epoch");
    }

    #[test]
    fn epochs_a_missed_close_or_a_missed_start_is_a_gap() {
        let mut g = Gaps::default();
        g.message("r", A, at(1, 1));
        assert_eq!(
            g.message("r", A, at(2, 1)),
            Seen::Gap(None),
            "the close of epoch 1 never came: its tail may be lost"
        );
        g.sync("r", A, at(2, 1), true);
        assert_eq!(
            g.message("r", A, at(3, 4)),
            Seen::Gap(Some(3)),
            "1..3 of epoch 3"
        );
        g.sync("r", A, at(3, 4), true);
        assert_eq!(
            g.sync("r", A, at(4, 2), true),
            Seen::Gap(Some(2)),
            "a whole epoch missed"
        );
    }

    #[test]
    fn a_restarted_node_is_a_new_incarnation() {
        let mut g = Gaps::default();
        g.message("r", A, at(5, 10));
        let again = Origin {
            incarnation: 101,
            ..A
        };
        assert_eq!(
            g.message("r", again, at(1, 1)),
            Seen::Gap(None),
            "the old incarnation never closed"
        );
        assert_eq!(g.message("r", again, at(1, 2)), Seen::InOrder);
    }

    #[test]
    fn forgetting_starts_afresh() {
        let mut g = Gaps::default();
        g.message("r", A, at(1, 1));
        g.forget_room("r");
        assert_eq!(g.message("r", A, at(1, 9)), Seen::InOrder);
        g.forget_all();
        assert!(g.is_empty());
        assert_eq!(g.message("r", A, at(1, 20)), Seen::InOrder);
    }

    #[test]
    fn origins_per_room_are_bounded() {
        let mut g = Gaps::default();
        for node in 0..(MAX_ORIGINS_PER_ROOM as u16 + 10) {
            let o = Origin {
                node,
                incarnation: 1,
            };
            g.message("r", o, at(1, 1));
        }
        assert_eq!(g.len(), MAX_ORIGINS_PER_ROOM);
        assert_eq!(g.evicted, 10);
    }
}
