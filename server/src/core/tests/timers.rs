//! Deadlines coming due in bulk: a mass timeout is acted on in slices.

use super::*;

/// A harness with room for more connections than one turn expires, each
/// welcomed with a 100 ms heartbeat (idle timeout 300 ms) at time 0.
fn many_idle(n: u32) -> Harness {
    let limits = Limits {
        slots: n + 8,
        ..limits()
    };
    let mut h = Harness::with(limits, n as usize + 8);
    for slot in 0..n {
        h.core.accepted(slot, 0);
        h.step(false);
        h.send_frames(slot, &[hello(100)]);
    }
    h.settle();
    h
}

fn errors_sent(h: &Harness, slot: u32) -> usize {
    h.received(slot)
        .iter()
        .filter(|(ty, _)| *ty == FrameType::Error)
        .count()
}

#[test]
fn a_mass_timeout_is_acted_on_a_budget_at_a_time() {
    let n = 2 * EXPIRY_BUDGET as u32 + 50;
    let mut h = many_idle(n);
    h.tick_to(400); // every idle timeout came due in this tick
    let cut = |h: &Harness| (0..n).filter(|&s| errors_sent(h, s) > 0).count();
    assert_eq!(cut(&h), EXPIRY_BUDGET, "one slice in the first turn");
    assert_eq!(h.metrics.expiry_budget_hits.get(), 1);
    assert_eq!(h.core.next_tick_at_ms(), 0, "the rest is due at once");

    let mut turns = 1;
    while h.core.next_tick_at_ms() == 0 {
        h.core.tick(h.now);
        h.settle();
        turns += 1;
        assert!(turns <= 3, "the shard keeps coming back without end");
    }
    assert_eq!(turns, 3);
    assert_eq!(h.metrics.expiry_budget_hits.get(), 2);
    for slot in 0..n {
        assert_eq!(errors_sent(&h, slot), 1, "slot {slot}: one ERROR, once");
        assert_eq!(h.last_error_code(slot), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    }
    assert_eq!(h.metrics.wheel_expiries.get(), u64::from(n));
    assert!(h.core.next_tick_at_ms() > h.now, "back to the wheel's pace");
}

#[test]
fn a_connection_waiting_its_turn_is_judged_when_its_turn_comes() {
    let n = EXPIRY_BUDGET as u32 + 20;
    let mut h = many_idle(n);
    h.tick_to(400);
    let waiting: Vec<u32> = (0..n).filter(|&s| errors_sent(&h, s) == 0).collect();
    assert_eq!(waiting.len(), 20);
    // One of those left for the next turn spoke since; another broke the
    // protocol, so its own close (and its drain timer) began.
    let (alive, broken) = (waiting[0], waiting[1]);
    h.send_frames(alive, &[Frame::Ping(b"here")]);
    h.feed(broken, &[0xff; 8]);
    h.settle();
    let phase = |h: &Harness, slot: u32| {
        h.core.slots[slot as usize]
            .conn
            .as_ref()
            .map(|c| c.st.phase)
    };
    assert_eq!(phase(&h, broken), Some(Phase::Lingering), "its ERROR sent");
    while h.core.next_tick_at_ms() == 0 {
        h.core.tick(h.now);
        h.settle();
    }
    assert_eq!(errors_sent(&h, alive), 0, "it spoke in time: not cut");
    assert_ne!(
        h.last_error_code(broken),
        Some(ErrorCode::HEARTBEAT_TIMEOUT)
    );
    assert_eq!(
        h.metrics.drain_timeouts.get(),
        0,
        "the broken one keeps its drain time: its stale expiry is skipped"
    );
    assert_eq!(phase(&h, broken), Some(Phase::Lingering));
}
