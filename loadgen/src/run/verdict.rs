//! Whether a run passed: every connection up and kept, every PING answered,
//! room messages as the scenario promises; a storm's and a churn's own rules.

use crate::cli::Plan;
use crate::client::Counts;
use crate::{errnos, storm};

/// A storm run passes when the server came back and so did every client:
/// the drops, and the PINGs and messages in flight at the signal, are the
/// storm's, counted above and not failures.
/// Messages out of order or twice are never the storm's: they fail it too.
pub(super) fn storm_verdict(r: &storm::Report, order: [u64; 4]) -> Result<(), String> {
    in_order(order)?;
    if let Some(e) = &r.restart_error {
        return Err(format!("storm: {e}"));
    }
    if r.all_back_after_s.is_none() {
        return Err("storm: not every connection was back up by the end of the run".into());
    }
    Ok(())
}

/// The run passes if every connection came up and stayed, every PING was
/// answered, and (rooms) every message arrived once and in order, or its
/// loss was reported to its receiver (ERROR GAP, from a cluster).
/// Room messages late (out of order) or duplicated fail any run.
pub(super) fn in_order(order: [u64; 4]) -> Result<(), String> {
    if order[0] + order[1] > 0 {
        return Err(format!(
            "room messages out of order ({}) or duplicated ({})",
            order[0], order[1]
        ));
    }
    Ok(())
}

/// What a run's room messages are checked against.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Delivery {
    /// No rooms.
    NoRooms,
    /// Every member was there all along: every message reaches every member.
    EveryMember,
    /// Members come and go (churn): each member's stream is checked from
    /// its first message (no gaps, no duplicates, in order), not counted
    /// against the publishes, which some members were not there for.
    PresentMembers,
}

pub(super) fn verdict(
    plan: &Plan,
    counts: &Counts,
    order: [u64; 4],
    rooms: Delivery,
) -> Result<(), String> {
    if rooms != Delivery::NoRooms {
        in_order(order)?;
    }
    if rooms == Delivery::PresentMembers && order[2] > 0 {
        return Err(format!(
            "{} room messages missing in members' streams (a gap, never filled)",
            order[2]
        ));
    }
    if rooms == Delivery::EveryMember && counts.delivered + order[3] < counts.expected {
        let reported = if order[3] > 0 {
            format!(" (another {} lost and reported by GAP notices)", order[3])
        } else {
            String::new()
        };
        return Err(format!(
            "{} of {} room messages not delivered{reported}",
            counts.expected - counts.delivered - order[3],
            counts.expected
        ));
    }
    let lost = counts.pings.saturating_sub(counts.pongs);
    if counts.connected < plan.conns as u64 {
        return Err(format!(
            "only {} of {} connections came up (failed: {})",
            counts.connected,
            plan.conns,
            errnos::by_name(&counts.failed_by_errno, errnos::errno_name)
        ));
    }
    if counts.dropped > 0 {
        return Err(format!(
            "{} connections dropped during the run",
            counts.dropped
        ));
    }
    if lost > 0 {
        return Err(format!("{lost} of {} PINGs unanswered", counts.pings));
    }
    Ok(())
}
