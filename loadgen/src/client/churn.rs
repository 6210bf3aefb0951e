//! The churn of `--scenario churn`: while rooms run, members leave (their
//! connection closed by us) and new connections take their place at once, at
//! a steady rate, so the population stays fixed. Only members churn: a
//! room's publisher stays, so every receiver's stream has one origin.
//!
//! What is checked on the way: a member present gets every message once and
//! in order (the sequence checks; a new connection's stream starts at its
//! first message, as membership starts at JOINED), a member that stayed for
//! several publish periods got at least one message (`silent_members`: a JOIN
//! the server lost), and no connection gets a message of a room it is not in
//! (`foreign`: a reused slot that kept its former occupant's rooms).

use std::cmp::Reverse;
use std::time::Duration;

use super::{ClientCore, Conn, Counts, Retry, RoomPlan};

/// When and how fast this worker churns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChurnPlan {
    /// Connections closed (and replaced) per second by this worker.
    pub per_second: f64,
    /// When the churn starts, since the run's epoch.
    pub from: Duration,
    /// When it stops.
    pub until: Duration,
}

/// The churn's progress.
#[derive(Debug)]
pub(super) struct Churn {
    plan: ChurnPlan,
    /// Where the search for the next member to close goes on.
    cursor: usize,
    /// The hold has started: the plan's times are final.
    started: bool,
}

/// Most slots one tick looks at for members to close: a tick costs at most
/// this, even when none is eligible.
const SEARCH_PER_TICK: usize = 4096;

/// Publish periods (plus a second) a member must have stayed in its room,
/// while publishing ran, before a message was certainly due to it.
pub const SILENT_AFTER_PERIODS: u32 = 3;

impl ClientCore {
    /// Churns as `plan` says (the rooms plan must be set: only members churn).
    pub fn set_churn(&mut self, plan: ChurnPlan) {
        assert!(self.room_plan.is_some(), "churn needs rooms");
        self.churn_connect = crate::results::histogram();
        self.churn = Some(Churn {
            plan,
            cursor: 0,
            started: false,
        });
    }

    /// The hold started `delay` after the plan said (the ramp ran late):
    /// the churn moves by as much, and may begin.
    pub fn start_churn(&mut self, delay: Duration) {
        if let Some(churn) = self.churn.as_mut().filter(|c| !c.started) {
            churn.plan.from += delay;
            churn.plan.until += delay;
            churn.started = true;
        }
    }

    /// Closes the members due to leave by `now`, each replaced at once by a
    /// new connection of the same index (its room and target).
    pub(super) fn churn_due(&mut self, now: Duration) {
        let Some(churn) = self.churn.as_mut() else {
            return;
        };
        if self.stopping || !churn.started || now < churn.plan.from {
            return;
        }
        let upto = now.min(churn.plan.until) - churn.plan.from;
        let due = (upto.as_secs_f64() * churn.plan.per_second) as u64;
        let mut looked = 0;
        while self.counts.churn_closed < due && looked < SEARCH_PER_TICK && !self.conns.is_empty() {
            looked += 1;
            let slot = churn.cursor % self.conns.len();
            churn.cursor = slot + 1;
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            // A member up and quiet: no PING awaiting its PONG, so that
            // closing it loses no answer the run counts on.
            let publisher = conn.member.as_ref().is_none_or(|m| m.publishing.is_some());
            if conn.closing || !conn.welcomed || publisher || conn.pings_out > 0 {
                continue;
            }
            Self::check_member(
                conn,
                &self.room_plan,
                self.publish_stopped_at,
                now,
                &mut self.counts,
            );
            conn.closing = true;
            self.counts.churn_closed += 1;
            let retry = Retry {
                attempt: 0,
                again: true,
                churn: true,
                ..conn.retry
            };
            self.reconnects.push(Reverse((now, retry)));
            self.dirty.push(slot as u32);
        }
    }

    /// A member leaves (closed by the churn or at the end of the run): if it
    /// was in its room for [`SILENT_AFTER_PERIODS`] publish periods and a
    /// second while publishing ran, and got no message, it counts as silent.
    pub(super) fn check_member(
        conn: &Conn,
        plan: &Option<RoomPlan>,
        stopped_at: Option<Duration>,
        now: Duration,
        counts: &mut Counts,
    ) {
        let Some(m) = conn.member.as_deref() else {
            return;
        };
        let (Some(plan), Some(joined)) = (plan, m.joined_at) else {
            return;
        };
        if m.publishing.is_some() || m.messages > 0 || plan.members(0) < 2 {
            return;
        }
        let from = joined.max(plan.start);
        let to = stopped_at.unwrap_or(now).min(now);
        let needed = plan.period * SILENT_AFTER_PERIODS + Duration::from_secs(1);
        if to.saturating_sub(from) > needed {
            counts.silent_members += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{room_message, welcome};
    use super::*;
    use crate::client::Pinging;
    use engine::contract::Action;

    const S: Duration = Duration::from_secs(1);

    /// A core with `n` connections of a 2-room run (0 and 1 publish), all
    /// welcomed at 0 on an hour's heartbeat (no PING due in a test).
    fn churning(n: u64, per_second: f64) -> ClientCore {
        let mut c = ClientCore::new(Pinging::Heartbeat, 0, 1);
        c.set_rooms(RoomPlan {
            rooms: 2,
            conns: n,
            period: S,
            payload: 16,
            start: S,
        });
        c.set_churn(ChurnPlan {
            per_second,
            from: 2 * S,
            until: 10 * S,
        });
        c.start_churn(Duration::ZERO);
        for i in 0..n {
            c.installed_as(i as u32, Duration::ZERO, Retry::first(i), 0);
            c.received(i as u32, i as u32 + 1, &welcome(3_600_000), Duration::ZERO);
        }
        let mut actions = Vec::new();
        c.poll_actions(&mut actions);
        c
    }

    fn closes(c: &mut ClientCore) -> Vec<u32> {
        let mut actions = Vec::new();
        c.poll_actions(&mut actions);
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Cancel { slot, .. } | Action::Close { slot } => Some(*slot),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn members_are_closed_at_the_rate_and_replaced_at_once() {
        let mut c = churning(12, 2.0);
        c.tick(S);
        assert!(closes(&mut c).is_empty(), "not before `from`");
        c.tick(4 * S);
        let closed = closes(&mut c);
        assert_eq!(closed.len(), 4, "2 a second for 2 s");
        assert!(
            closed.iter().all(|&s| s >= 2),
            "publishers (0, 1) never churn: {closed:?}"
        );
        assert_eq!(c.counts.churn_closed, 4);
        // Each has its replacement due now, the same connection of the run.
        let mut again = Vec::new();
        while let Some(r) = c.next_due_reconnect(4 * S) {
            assert!(r.churn && r.again && r.attempt == 0);
            again.push(r.index as u32);
        }
        assert_eq!(again.len(), 4);
        assert_eq!(c.counts.churn_opened, 4);
        assert_eq!(c.counts.reconnects, 0, "churn is not a reconnect");
        assert_eq!(c.counts.dropped, 0);
        // It stops at `until`: at most 16 in all, whatever the clock says.
        c.tick(60 * S);
        assert!(c.counts.churn_closed <= 16);
    }

    #[test]
    fn the_churn_waits_for_the_hold_and_moves_with_it() {
        let mut c = churning(12, 2.0);
        // As if the hold had not started: a fresh plan, not started.
        c.set_churn(ChurnPlan {
            per_second: 2.0,
            from: 2 * S,
            until: 10 * S,
        });
        c.tick(5 * S);
        assert!(closes(&mut c).is_empty(), "not before the hold starts");
        // The hold began 3 s late: the churn runs from 5 s.
        c.start_churn(3 * S);
        c.tick(5 * S);
        assert!(closes(&mut c).is_empty());
        c.tick(6 * S);
        assert_eq!(closes(&mut c).len(), 2);
    }

    #[test]
    fn a_member_awaiting_a_pong_is_left_alone() {
        let mut c = churning(3, 1.0);
        // Connection 2 is the only member; its PING is due at once.
        c.tick(S);
        let _ = closes(&mut c);
        c.conns[2].as_mut().unwrap().pings_out = 1;
        c.tick(5 * S);
        assert!(closes(&mut c).is_empty());
        c.conns[2].as_mut().unwrap().pings_out = 0;
        c.tick(5 * S);
        assert_eq!(closes(&mut c), vec![2]);
    }

    #[test]
    fn a_member_that_got_nothing_for_several_periods_is_silent() {
        let mut c = churning(4, 0.5);
        // Member 3 joined at 0; member 2 gets room 0's messages.
        c.received(3, 4, &joined(), Duration::ZERO);
        c.received(2, 3, &joined(), Duration::ZERO);
        c.received(2, 3, &room_message(0, 0), 3 * S);
        // 2 s of churn at 0.5/s closes member 2 at 4 s: it got a message.
        c.tick(4 * S);
        assert_eq!(c.counts.silent_members, 0);
        // By 9 s member 3 leaves: in its room from 1 s (publishing's
        // start), 8 s and not a message.
        c.tick(9 * S);
        assert_eq!(c.counts.churn_closed, 2);
        c.close_all();
        assert_eq!(c.counts.silent_members, 1, "{:?}", c.counts);
    }

    #[test]
    fn a_message_of_another_room_is_counted() {
        let mut c = churning(4, 0.0);
        c.received(2, 3, &room_message(1, 0), 3 * S);
        assert_eq!(c.counts.foreign, 1, "connection 2 is in room 0");
        c.received(3, 4, &room_message(1, 0), 3 * S);
        assert_eq!(c.counts.foreign, 1);
    }

    fn joined() -> Vec<u8> {
        super::super::tests::joined_frame()
    }
}
