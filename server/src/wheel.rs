//! A hashed timing wheel for per-connection deadlines (heartbeat expiry, drain
//! time limits), one per shard.
//!
//! Each connection is filed in at most one bucket, through links kept here and
//! indexed by the connection's slot, so filing, moving and removing are O(1)
//! and allocate nothing once the link table has grown to the slots in use.
//! Activity does not touch the wheel: the shard only records a timestamp, and
//! when a bucket comes due it re-checks each entry and re-files the ones still
//! alive (lazy re-arm). The cost of a tick is the number of entries in its
//! bucket, not the number of connections.

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
    /// The bucket holding this entry, or NIL.
    bucket: u32,
    /// The tick at which the entry is due (it may lie rotations ahead),
    /// counted from the wheel's start: u32 holds 13 years of 100 ms ticks.
    due_tick: u32,
}

const UNFILED: Link = Link {
    prev: NIL,
    next: NIL,
    bucket: NIL,
    due_tick: 0,
};

/// The wheel. Times are milliseconds on the shard's monotonic clock.
#[derive(Debug)]
pub struct TimerWheel {
    tick_ms: u64,
    heads: Vec<u32>,
    links: Vec<Link>,
    capacity: usize,
    /// The tick the wheel started at; ticks are stored relative to it.
    epoch: u64,
    /// The last tick whose bucket has been processed.
    tick: u64,
    len: usize,
}

impl TimerWheel {
    /// A wheel of `buckets` buckets (a power of two) of `tick_ms` each, for entry
    /// ids below `capacity`, starting at time `now_ms`.
    pub fn new(tick_ms: u64, buckets: usize, capacity: usize, now_ms: u64) -> Self {
        assert!(tick_ms > 0, "tick must be positive");
        assert!(buckets.is_power_of_two(), "buckets must be a power of two");
        assert!(capacity < NIL as usize, "capacity must fit in u32");
        // Reserve address space only (as the shard's slot table does): pages
        // are touched as ids come into use, and the table never reallocates,
        // which at C1M would leave a freed copy behind at each doubling.
        let mut links = Vec::new();
        links.reserve_exact(capacity);
        Self {
            tick_ms,
            heads: vec![NIL; buckets],
            links,
            capacity,
            epoch: now_ms / tick_ms,
            tick: now_ms / tick_ms,
            len: 0,
        }
    }

    /// The tick length.
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Entries filed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// When the next tick is due: the shard sleeps no longer than this.
    pub fn next_tick_at_ms(&self) -> u64 {
        (self.tick + 1) * self.tick_ms
    }

    /// Files `id` to come due at the first tick at or after `deadline_ms`
    /// (never earlier than the next tick), moving it if it was filed already.
    pub fn schedule(&mut self, id: u32, deadline_ms: u64) {
        let idx = id as usize;
        assert!(idx < self.capacity, "wheel id {id} out of range");
        if idx >= self.links.len() {
            self.links.resize(idx + 1, UNFILED);
        }
        self.unlink(id);
        let due_tick = deadline_ms.div_ceil(self.tick_ms).max(self.tick + 1);
        let bucket = (due_tick as usize & (self.heads.len() - 1)) as u32;
        let due_tick = u32::try_from(due_tick - self.epoch).unwrap_or(u32::MAX);
        let head = self.heads[bucket as usize];
        self.links[idx] = Link {
            prev: NIL,
            next: head,
            bucket,
            due_tick,
        };
        if head != NIL {
            self.links[head as usize].prev = id;
        }
        self.heads[bucket as usize] = id;
        self.len += 1;
    }

    /// Removes `id` if it is filed.
    pub fn cancel(&mut self, id: u32) {
        if (id as usize) < self.links.len() {
            self.unlink(id);
        }
    }

    /// Whether `id` is filed.
    pub fn is_scheduled(&self, id: u32) -> bool {
        self.links.get(id as usize).is_some_and(|l| l.bucket != NIL)
    }

    /// Processes every tick up to `now_ms`, moving the ids that came due into
    /// `due` (they are no longer filed; the caller re-files the ones still
    /// alive). A clock jump of more than one rotation visits each bucket once.
    pub fn advance(&mut self, now_ms: u64, due: &mut Vec<u32>) {
        let target = now_ms / self.tick_ms;
        if target <= self.tick {
            return;
        }
        let rotations_behind = target - self.tick > self.heads.len() as u64;
        let first = if rotations_behind {
            target + 1 - self.heads.len() as u64
        } else {
            self.tick + 1
        };
        for tick in first..=target {
            let bucket = tick as usize & (self.heads.len() - 1);
            let mut id = self.heads[bucket];
            while id != NIL {
                let link = self.links[id as usize];
                if u64::from(link.due_tick) + self.epoch <= target {
                    self.unlink(id);
                    due.push(id);
                }
                id = link.next;
            }
        }
        self.tick = target;
    }

    fn unlink(&mut self, id: u32) {
        let link = self.links[id as usize];
        if link.bucket == NIL {
            return;
        }
        if link.prev == NIL {
            self.heads[link.bucket as usize] = link.next;
        } else {
            self.links[link.prev as usize].next = link.next;
        }
        if link.next != NIL {
            self.links[link.next as usize].prev = link.prev;
        }
        self.links[id as usize] = UNFILED;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advance(w: &mut TimerWheel, now: u64) -> Vec<u32> {
        let mut due = Vec::new();
        w.advance(now, &mut due);
        due.sort_unstable();
        due
    }

    #[test]
    fn fires_within_one_tick_after_the_deadline() {
        let mut w = TimerWheel::new(100, 64, 10, 0);
        w.schedule(1, 250);
        assert!(advance(&mut w, 200).is_empty());
        assert!(advance(&mut w, 299).is_empty());
        assert_eq!(advance(&mut w, 300), [1]);
        assert!(w.is_empty());
        assert!(!w.is_scheduled(1));
    }

    #[test]
    fn deadline_on_a_tick_boundary_fires_on_that_tick() {
        let mut w = TimerWheel::new(100, 64, 10, 0);
        w.schedule(3, 500);
        assert!(advance(&mut w, 499).is_empty());
        assert_eq!(advance(&mut w, 500), [3]);
    }

    #[test]
    fn past_deadlines_fire_on_the_next_tick() {
        let mut w = TimerWheel::new(100, 64, 10, 1000);
        w.schedule(0, 10);
        assert!(advance(&mut w, 1099).is_empty());
        assert_eq!(advance(&mut w, 1100), [0]);
    }

    #[test]
    fn deadlines_beyond_one_rotation_wait_their_turn() {
        // 8 buckets of 10 ms: one rotation is 80 ms.
        let mut w = TimerWheel::new(10, 8, 10, 0);
        w.schedule(1, 250);
        w.schedule(2, 30);
        for now in (10..250).step_by(10) {
            let due = advance(&mut w, now);
            if now == 30 {
                assert_eq!(due, [2]);
            } else {
                assert!(due.is_empty(), "fired early at {now}: {due:?}");
            }
        }
        assert_eq!(advance(&mut w, 250), [1]);
    }

    #[test]
    fn rescheduling_moves_and_cancel_removes() {
        let mut w = TimerWheel::new(10, 16, 10, 0);
        w.schedule(1, 50);
        w.schedule(2, 50);
        w.schedule(3, 50);
        w.schedule(2, 90); // moved: lazy re-arm after activity
        w.cancel(3);
        w.cancel(9); // never filed: no-op
        assert_eq!(w.len(), 2);
        assert_eq!(advance(&mut w, 50), [1]);
        assert!(advance(&mut w, 80).is_empty());
        assert_eq!(advance(&mut w, 90), [2]);
        assert!(w.is_empty());
    }

    #[test]
    fn a_large_clock_jump_visits_every_bucket_once() {
        let mut w = TimerWheel::new(10, 8, 100, 0);
        for id in 0..50 {
            w.schedule(id, 10 + u64::from(id) * 7);
        }
        let due = advance(&mut w, 1_000_000);
        assert_eq!(due, (0..50).collect::<Vec<_>>());
        assert!(w.is_empty());
    }

    #[test]
    fn many_entries_in_one_bucket_unlink_cleanly() {
        let mut w = TimerWheel::new(10, 4, 1000, 0);
        for id in 0..1000 {
            w.schedule(id, 40);
        }
        for id in (0..1000).step_by(2) {
            w.cancel(id);
        }
        let due = advance(&mut w, 40);
        assert_eq!(due, (1..1000).step_by(2).collect::<Vec<_>>());
    }

    #[test]
    fn next_tick_is_where_the_shard_must_wake() {
        let mut w = TimerWheel::new(100, 8, 1, 1234);
        assert_eq!(w.next_tick_at_ms(), 1300);
        advance(&mut w, 1300);
        assert_eq!(w.next_tick_at_ms(), 1400);
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn ids_past_capacity_are_refused() {
        TimerWheel::new(10, 8, 4, 0).schedule(4, 10);
    }
}
