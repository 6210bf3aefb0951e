use super::*;
use proto::{Frame, Welcome};

const MS: Duration = Duration::from_millis(1);

pub(super) fn welcome(heartbeat_ms: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Welcome(Welcome {
        conn_id: 1,
        heartbeat_ms,
        idle_timeout_ms: 3 * heartbeat_ms,
        max_payload: 65536,
        shard: 0,
    })
    .encode_to_vec(&mut out)
    .unwrap();
    out
}

/// A JOINED frame (of any room: the loadgen does not look at the name).
pub(super) fn joined_frame() -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Joined(proto::Room::new("room0").unwrap())
        .encode_to_vec(&mut out)
        .unwrap();
    out
}

/// A MESSAGE of `roomN` from publisher 7, sequence number `seq`.
pub(super) fn room_message(room: u64, seq: u64) -> Vec<u8> {
    let name = format!("room{room}");
    let mut body = [0u8; 16];
    body[8..].copy_from_slice(&seq.to_be_bytes());
    let mut out = Vec::new();
    Frame::Message(proto::Message {
        from_conn_id: 7,
        room: proto::Room::new(&name).unwrap(),
        body: &body,
        fragment: proto::Fragment::default(),
    })
    .encode_to_vec(&mut out)
    .unwrap();
    out
}

fn sends(actions: &[Action]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| {
            if let Action::Send { buf, .. } = a {
                Some(buf.clone())
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn hello_then_welcome_then_pings_on_schedule() {
    let mut c = ClientCore::new(Pinging::Rate(100.0), 0, 1);
    c.installed(0, Duration::ZERO, 0);
    let mut actions = Vec::new();
    c.poll_actions(&mut actions);
    assert!(matches!(actions[0], Action::ArmRecv { slot: 0, gen: 1 }));
    let hello = &sends(&actions)[0];
    assert_eq!(hello[4], 0x01, "HELLO first");
    c.sent(0, 1, hello.clone(), hello.len() as i32);
    assert_eq!((c.open(), c.up()), (1, 0), "installed, not yet up");
    c.received(0, 1, &welcome(10_000), 3 * MS);
    assert_eq!(c.counts.connected, 1);
    assert_eq!(c.up(), 1);
    assert!(
        c.connect.equivalent(c.connect.max(), 3000),
        "connect latency in microseconds"
    );
    // 100 PINGs a second for 1 s, after a jittered phase below 10 ms.
    let mut pings = 0;
    for ms in 3..1013 {
        c.tick(ms * MS);
        let mut actions = Vec::new();
        c.poll_actions(&mut actions);
        for buf in sends(&actions) {
            pings += buf.len() / 16;
            c.sent(0, 1, buf.clone(), buf.len() as i32);
        }
    }
    assert!((99..=101).contains(&pings), "{pings}");
    assert_eq!(c.counts.pings, pings as u64);
}

#[test]
fn rtt_is_measured_from_the_planned_time() {
    let mut c = ClientCore::new(Pinging::Rate(10.0), 0, 1);
    c.installed(0, Duration::ZERO, 0);
    c.received(0, 1, &welcome(10_000), MS);
    let planned = Duration::from_millis(50);
    let mut pong = Vec::new();
    Frame::Pong(&(planned.as_nanos() as u64).to_be_bytes())
        .encode_to_vec(&mut pong)
        .unwrap();
    c.received(0, 1, &pong, Duration::from_millis(250));
    assert_eq!(c.counts.pongs, 1);
    let rtt = c.rtt.max();
    assert!((199_000..=201_000).contains(&rtt), "{rtt}");
}

#[test]
fn failures_before_and_after_welcome_are_counted_apart() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 1);
    c.installed(0, Duration::ZERO, 0);
    c.installed(1, Duration::ZERO, 0);
    c.recv_ended(0, 1, RecvEnd::Error(libc_econnrefused()));
    c.received(1, 2, &welcome(1000), MS);
    c.recv_ended(1, 2, RecvEnd::Eof);
    // Neither had an armed receive or a send in flight in this test.
    assert_eq!(c.counts.failed_by_errno.get(&libc_econnrefused()), Some(&1));
    assert_eq!(c.counts.dropped, 1);
    let mut actions = Vec::new();
    c.poll_actions(&mut actions);
    assert!(actions.contains(&Action::Close { slot: 0 }));
    assert!(actions.contains(&Action::Close { slot: 1 }));
    assert_eq!(c.open(), 0);
    assert_eq!(c.up(), 0, "the welcomed one is no longer up");
}

fn libc_econnrefused() -> i32 {
    111
}

fn welcome_with_idle(heartbeat_ms: u32, idle_timeout_ms: u32) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Welcome(Welcome {
        conn_id: 1,
        heartbeat_ms,
        idle_timeout_ms,
        max_payload: 65536,
        shard: 0,
    })
    .encode_to_vec(&mut out)
    .unwrap();
    out
}

/// The attempt numbers of the reconnects due by `now`, taken.
fn due_at(c: &mut ClientCore, now: Duration) -> Vec<u32> {
    std::iter::from_fn(|| c.next_due_reconnect(now))
        .map(|r| r.attempt)
        .collect()
}

#[test]
fn a_reconnect_is_the_same_connection_at_the_next_target_and_none_is_forgotten() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 3);
    // 1,000 connections lost at once (a node died).
    for slot in 0..1000u32 {
        c.installed_as(slot, Duration::ZERO, Retry::first(u64::from(slot) + 7), 2);
        c.received(slot, slot + 1, &welcome(1000), MS);
        c.recv_ended(slot, slot + 1, RecvEnd::Eof);
    }
    assert_eq!(c.counts.dropped, 1000);
    let later = Duration::from_secs(5);
    // The worker takes at most 256 a turn; the rest stay due.
    let mut made = Vec::new();
    for _turn in 0..10 {
        made.extend((0..256).map_while(|_| c.next_due_reconnect(later)));
    }
    assert_eq!(made.len(), 1000, "every one is made, over several turns");
    assert_eq!(c.counts.reconnects, 1000);
    let mut indices: Vec<u64> = made.iter().map(|r| r.index).collect();
    indices.sort_unstable();
    assert_eq!(
        indices,
        (7..1007).collect::<Vec<u64>>(),
        "the same connections"
    );
    assert!(made
        .iter()
        .all(|r| r.hops == 1 && r.again && r.attempt == 0));
}

#[test]
fn a_silent_server_is_taken_for_dead_and_the_client_reconnects() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 3);
    c.installed(0, Duration::ZERO, 0);
    c.received(0, 1, &welcome_with_idle(100, 300), MS);
    let mut due: Vec<u32>;
    for ms in 2..=300 {
        c.tick(ms * MS);
    }
    assert_eq!(c.counts.dead_server, 0, "not before the idle timeout");
    let mut dead_at = None;
    for ms in 301..=450 {
        c.tick(ms * MS);
        if c.counts.dead_server == 1 && dead_at.is_none() {
            dead_at = Some(ms * MS);
        }
    }
    let dead_at = dead_at.expect("taken for dead within a heartbeat after the timeout");
    assert!(dead_at <= 401 * MS, "{dead_at:?}");
    assert_eq!(c.counts.dropped, 1);
    // Attempt 0 after a connection that worked: 100 ms x [0.5, 1.5).
    due = due_at(&mut c, dead_at + 49 * MS);
    assert!(due.is_empty(), "not at once");
    due = due_at(&mut c, dead_at + 150 * MS);
    assert_eq!(due, [0]);
    assert_eq!(c.counts.reconnects, 1);
}

#[test]
fn failed_connects_back_off_exponentially_with_jitter() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 3);
    let mut due: Vec<u32>;
    // Attempt 3 fails: the next, attempt 4, waits 100 ms x 2^4 x [0.5, 1.5).
    c.tick(Duration::from_secs(10));
    c.connect_failed(
        Retry {
            attempt: 3,
            ..Retry::first(5)
        },
        111,
    );
    due = due_at(&mut c, Duration::from_secs(10) + 790 * MS);
    assert!(due.is_empty(), "{due:?}");
    due = due_at(&mut c, Duration::from_secs(13));
    assert_eq!(due, [4]);
    // The delay is capped at 10 s however many attempts failed.
    c.connect_failed(
        Retry {
            attempt: 30,
            ..Retry::first(5)
        },
        111,
    );
    due = due_at(&mut c, Duration::from_secs(10 + 16));
    assert_eq!(due, [31]);
}

#[test]
fn no_reconnects_once_the_run_is_closing_or_when_off() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 3);
    c.installed(0, Duration::ZERO, 0);
    c.received(0, 1, &welcome(1000), MS);
    c.close_all();
    c.recv_ended(0, 1, RecvEnd::Eof);
    assert_eq!(c.counts.dropped, 0, "closed by us, not dropped");
    let mut due: Vec<u32>;
    due = due_at(&mut c, Duration::from_secs(60));
    assert!(due.is_empty());

    let mut off = ClientCore::new(Pinging::Heartbeat, 0, 3);
    off.set_reconnect(false);
    off.connect_failed(Retry::first(5), 111);
    due = due_at(&mut off, Duration::from_secs(60));
    assert!(due.is_empty());
    assert_eq!(off.counts.failed_by_errno.get(&111), Some(&1));
}

#[test]
fn server_pings_are_answered_and_errors_counted() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 1);
    c.installed(0, Duration::ZERO, 0);
    let mut bytes = welcome(1000);
    Frame::Ping(b"srv").encode_to_vec(&mut bytes).unwrap();
    Frame::Error(proto::Status {
        code: proto::ErrorCode::LIMIT,
        reason: "x",
    })
    .encode_to_vec(&mut bytes)
    .unwrap();
    c.received(0, 1, &bytes, MS);
    let mut actions = Vec::new();
    c.poll_actions(&mut actions);
    let sent = sends(&actions).concat();
    assert!(
        sent.windows(3).any(|w| w == b"srv"),
        "PONG with the server's payload"
    );
    assert_eq!(c.counts.errors_by_code.get(&5), Some(&1));
    assert_eq!(c.open(), 1, "LIMIT is not fatal");
}

#[test]
fn a_reserved_table_is_never_copied_as_it_fills() {
    let mut c = ClientCore::new(Pinging::Heartbeat, 0, 1);
    c.reserve(1000);
    let table = c.conns.as_ptr();
    // Slots filled in any order, up to the last one reserved.
    for slot in (0..1000).rev() {
        c.installed(slot, Duration::ZERO, 0);
    }
    assert_eq!(c.open(), 1000);
    assert_eq!(c.conns.as_ptr(), table, "the table stayed where it was");
    assert_eq!(c.conns.capacity(), 1000, "and took no more than reserved");
}
