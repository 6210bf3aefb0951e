//! The shard core on a simulated clock: every path, with no sockets.

use super::*;
use proto::{Frame, Hello, Status, DEFAULT_MAX_PAYLOAD};

/// A core with a simulated clock and a record of what it asked the engine.
struct Harness {
    core: ShardCore,
    metrics: Arc<ShardMetrics>,
    now: u64,
    /// Bytes each slot was sent, in order.
    wire: Vec<Vec<u8>>,
    gens: Vec<u32>,
    /// Sends of the slots whose socket is "full": not completed until released.
    held: Vec<(u32, u32, Vec<u8>)>,
}

fn limits() -> Limits {
    Limits {
        shard: 3,
        slots: 16,
        max_payload: DEFAULT_MAX_PAYLOAD,
        queue_bytes: 4096,
        heartbeat_ms: 1000,
        min_heartbeat_ms: 100,
        max_heartbeat_ms: 10_000,
        idle_factor: 3,
        drain_ms: 500,
        tick_ms: 100,
        max_rooms_per_conn: 3,
        max_streams: 2,
        stream_window: 4096,
        slow_consumer_ms: 2000,
        frame_timeout_ms: None,
        partial_bytes: 1 << 20,
        max_parked: MAX_PARKED,
        conn_id_base: 3 << 48,
        cluster_bit: 0,
    }
}

impl Harness {
    fn new(max_conns: usize) -> Self {
        Self::with(limits(), max_conns)
    }

    fn with(limits: Limits, max_conns: usize) -> Self {
        Self::with_registry(limits, max_conns, Arc::new(Registry::new(4, 4)))
    }

    fn with_registry(limits: Limits, max_conns: usize, registry: Arc<Registry>) -> Self {
        let slots = limits.slots as usize;
        let metrics = Arc::new(ShardMetrics::default());
        let core = ShardCore::new(
            limits,
            Arc::new(Admission::new(max_conns)),
            registry,
            metrics.clone(),
            0,
        );
        Self {
            core,
            metrics,
            now: 0,
            wire: vec![Vec::new(); slots],
            gens: vec![0; slots],
            held: Vec::new(),
        }
    }

    /// Polls actions; completes sends in full unless `hold_sends`.
    fn step(&mut self, hold_sends: bool) -> Vec<Action> {
        self.turn();
        let mut actions = Vec::new();
        self.core.poll_actions(&mut actions);
        let mut shown = Vec::new();
        for a in actions {
            match a {
                Action::Send { slot, gen, buf } if !hold_sends => {
                    self.wire[slot as usize].extend_from_slice(&buf);
                    let n = buf.len() as i32;
                    self.core.sent(slot, gen, buf, n, self.now);
                    shown.push(Action::Send {
                        slot,
                        gen,
                        buf: Vec::new(),
                    });
                }
                Action::ArmRecv { slot, gen } => {
                    self.gens[slot as usize] = gen;
                    shown.push(a);
                }
                other => shown.push(other),
            }
        }
        // As the engine does: submit, then read every completion. A send
        // still held now is one its socket refused.
        self.core.sends_submitted(0);
        self.core.completions_read(0, self.now);
        shown
    }

    /// Polls actions; completes every send in full but those of `full`
    /// slots, which are held (their socket is full) until [`Harness::release`].
    fn step_holding(&mut self, full: &[u32]) -> Vec<Action> {
        self.turn();
        let mut actions = Vec::new();
        self.core.poll_actions(&mut actions);
        let mut shown = Vec::new();
        for a in actions {
            match a {
                Action::Send { slot, gen, buf } if full.contains(&slot) => {
                    self.held.push((slot, gen, buf));
                }
                Action::Send { slot, gen, buf } => {
                    self.wire[slot as usize].extend_from_slice(&buf);
                    let n = buf.len() as i32;
                    self.core.sent(slot, gen, buf, n, self.now);
                    shown.push(Action::Send {
                        slot,
                        gen,
                        buf: Vec::new(),
                    });
                }
                other => shown.push(other),
            }
        }
        self.core.sends_submitted(0);
        self.core.completions_read(0, self.now);
        shown
    }

    /// What the shard loop does once a turn before polling: paused
    /// connections whose reason has gone resume.
    fn turn(&mut self) {
        let full = self.core.channels_full;
        self.core.set_channels_full(full, self.now);
    }

    /// Steps, holding `full` slots' sends, until no more actions come.
    fn settle_holding(&mut self, full: &[u32]) {
        while !self.step_holding(full).is_empty() {}
    }

    /// `slot`'s socket takes its held sends in full.
    fn release(&mut self, slot: u32) {
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.0 == slot);
        self.held = rest;
        for (slot, gen, buf) in mine {
            self.wire[slot as usize].extend_from_slice(&buf);
            let n = buf.len() as i32;
            self.core.sent(slot, gen, buf, n, self.now);
        }
    }

    /// Steps until no more actions come.
    fn settle(&mut self) -> Vec<Action> {
        let mut all = Vec::new();
        loop {
            let a = self.step(false);
            if a.is_empty() {
                return all;
            }
            all.extend(a);
        }
    }

    fn accept(&mut self, slot: u32) {
        self.core.accepted(slot, self.now);
        self.settle();
    }

    fn feed(&mut self, slot: u32, bytes: &[u8]) {
        let gen = self.gens[slot as usize];
        self.core.received(slot, gen, bytes, self.now);
    }

    fn send_frames(&mut self, slot: u32, frames: &[Frame<'_>]) {
        let mut bytes = Vec::new();
        for f in frames {
            f.encode_to_vec(&mut bytes).unwrap();
        }
        self.feed(slot, &bytes);
    }

    fn advance(&mut self, to: u64) {
        self.now = to;
        self.core.tick(to);
    }

    /// Moves the clock to `to` and lets every action due play out.
    fn tick_to(&mut self, to: u64) -> Vec<Action> {
        self.advance(to);
        self.settle()
    }

    /// The frames slot has been sent so far, as (type, payload) pairs.
    fn received(&self, slot: u32) -> Vec<(FrameType, Vec<u8>)> {
        let mut d = Decoder::new(u32::MAX);
        let mut input = &self.wire[slot as usize][..];
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut input).unwrap() {
            let mut bytes = Vec::new();
            f.encode_to_vec(&mut bytes).unwrap();
            out.push((f.frame_type(), bytes[8..].to_vec()));
        }
        out
    }

    fn last_error_code(&self, slot: u32) -> Option<ErrorCode> {
        self.received(slot).iter().rev().find_map(|(ty, p)| {
            matches!(ty, FrameType::Error | FrameType::GoAway)
                .then(|| ErrorCode(u16::from_be_bytes([p[0], p[1]])))
        })
    }

    fn closed(&self, reason: CloseReason) -> u64 {
        self.metrics.closed[reason as usize].get()
    }
}

use proto::FrameType;

fn hello(heartbeat_ms: u32) -> Frame<'static> {
    Frame::Hello(Hello {
        heartbeat_ms,
        name: "t",
    })
}

#[test]
fn hello_is_welcomed_with_clamped_heartbeat() {
    for (asked, granted) in [(0, 1000), (50, 100), (2500, 2500), (1_000_000, 10_000)] {
        let mut h = Harness::new(10);
        h.accept(1);
        h.send_frames(1, &[hello(asked)]);
        h.settle();
        let got = h.received(1);
        assert_eq!(got.len(), 1);
        let mut input = &h.wire[1][..];
        let mut d = Decoder::new(u32::MAX);
        let Some(Frame::Welcome(w)) = d.decode(&mut input).unwrap() else {
            panic!("expected WELCOME");
        };
        assert_eq!(w.heartbeat_ms, granted);
        assert_eq!(w.idle_timeout_ms, granted * 3);
        assert_eq!(w.max_payload, DEFAULT_MAX_PAYLOAD);
        assert_eq!(w.shard, 3);
        assert_eq!(w.conn_id >> 48, 3, "conn ids carry the shard");
    }
}

#[test]
fn pings_are_answered_and_sticky_replies_share_one_send() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(
        0,
        &[Frame::Ping(b"a"), Frame::Ping(b""), Frame::Ping(&[9; 64])],
    );
    let actions = h.settle();
    let sends = actions
        .iter()
        .filter(|a| matches!(a, Action::Send { .. }))
        .count();
    assert_eq!(sends, 1, "three PONGs, one send");
    let got = h.received(0);
    assert_eq!(
        got,
        [
            (FrameType::Pong, b"a".to_vec()),
            (FrameType::Pong, vec![]),
            (FrameType::Pong, vec![9; 64])
        ]
    );
    assert_eq!(h.metrics.frames_in.get(), 3);
    assert_eq!(h.metrics.frames_out.get(), 3);
}

/// Runs a connection through its graceful close after a fatal frame.
fn fatal_case(bytes: &[u8]) -> (Harness, Vec<Action>) {
    let mut h = Harness::new(10);
    h.accept(2);
    h.feed(2, bytes);
    let mut actions = h.settle();
    assert!(
        actions.contains(&Action::ShutdownWrite { slot: 2 }),
        "{actions:?}"
    );
    assert_eq!(h.core.open(), 1, "lingering until the peer closes");
    h.core.recv_ended(2, h.gens[2], RecvEnd::Eof);
    actions.extend(h.settle());
    assert!(actions.contains(&Action::Close { slot: 2 }));
    assert_eq!(h.core.open(), 0);
    (h, actions)
}

#[test]
fn every_fatal_decode_error_sends_its_code_and_closes() {
    let mut too_large = vec![0x00, 0x01, 0x00, 0x01, 0x20, 0, 0, 0];
    too_large.extend_from_slice(&[0; 4]);
    let cases: [(&[u8], ErrorCode, CloseReason); 4] = [
        (
            &too_large,
            ErrorCode::FRAME_TOO_LARGE,
            CloseReason::FrameTooLarge,
        ),
        (
            &[0, 0, 0, 0, 0x42, 0, 0, 0],
            ErrorCode::UNKNOWN_TYPE,
            CloseReason::UnknownType,
        ),
        (
            &[0, 0, 0, 0, 0x03, 0x80, 0, 0],
            ErrorCode::MALFORMED,
            CloseReason::Malformed,
        ),
        // WELCOME is the server's to send.
        (
            &[
                0, 0, 0, 22, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0,
            ],
            ErrorCode::MALFORMED,
            CloseReason::Malformed,
        ),
    ];
    for (bytes, code, reason) in cases {
        let (h, _) = fatal_case(bytes);
        assert_eq!(h.last_error_code(2), Some(code));
        assert_eq!(h.closed(reason), 1, "{reason:?}");
    }
}

#[test]
fn hello_must_come_first_and_once() {
    let mut bytes = Vec::new();
    Frame::Ping(b"x").encode_to_vec(&mut bytes).unwrap();
    hello(0).encode_to_vec(&mut bytes).unwrap();
    let (h, _) = fatal_case(&bytes);
    let got = h.received(2);
    assert_eq!(
        got[0].0,
        FrameType::Pong,
        "frames before the bad one are answered"
    );
    assert_eq!(h.last_error_code(2), Some(ErrorCode::MALFORMED));
}

#[test]
fn input_after_a_fatal_error_is_ignored() {
    let mut h = Harness::new(10);
    h.accept(0);
    let mut bytes = vec![0, 0, 0, 0, 0x42, 0, 0, 0];
    Frame::Ping(b"late").encode_to_vec(&mut bytes).unwrap();
    h.feed(0, &bytes);
    h.settle();
    h.send_frames(0, &[Frame::Ping(b"later")]);
    h.settle();
    let got = h.received(0);
    assert_eq!(got.len(), 1, "only the ERROR: {got:?}");
}

#[test]
fn heartbeat_expiry_within_one_tick_and_activity_keeps_alive() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.accept(1);
    h.send_frames(0, &[hello(100)]); // idle timeout 300 ms
    h.send_frames(1, &[hello(100)]);
    h.settle();
    h.advance(200);
    h.send_frames(1, &[Frame::Pong(b"")]); // any frame is a sign of life
    h.settle();
    h.tick_to(300);
    // A reading of 300 may be 299.9 ms after the reading of 0: not yet.
    assert_eq!(h.last_error_code(0), None, "not before the deadline");
    h.tick_to(399);
    assert_eq!(
        h.last_error_code(0),
        None,
        "the wheel looks again at the next tick"
    );
    h.tick_to(400);
    assert_eq!(h.last_error_code(0), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    assert_eq!(h.last_error_code(1), None, "slot 1 was active at 200");
    assert_eq!(h.metrics.wheel_expiries.get(), 1);
    h.tick_to(599);
    assert_eq!(h.last_error_code(1), None);
    h.tick_to(600);
    assert_eq!(h.last_error_code(1), Some(ErrorCode::HEARTBEAT_TIMEOUT));
}

#[test]
fn a_connection_that_sends_nothing_expires_on_the_default_timeout() {
    let mut h = Harness::new(10);
    h.accept(4);
    h.tick_to(3000);
    assert_eq!(
        h.last_error_code(4),
        None,
        "due at the first reading past 3,000"
    );
    h.tick_to(3099);
    assert_eq!(h.last_error_code(4), None);
    h.tick_to(3100);
    assert_eq!(h.last_error_code(4), Some(ErrorCode::HEARTBEAT_TIMEOUT));
}

#[test]
fn connections_beyond_the_limit_are_overloaded_and_others_carry_on() {
    let mut h = Harness::new(1);
    h.accept(0);
    h.accept(1);
    assert_eq!(h.last_error_code(1), Some(ErrorCode::OVERLOADED));
    h.core.recv_ended(1, h.gens[1], RecvEnd::Eof);
    h.settle();
    assert_eq!(h.closed(CloseReason::Overloaded), 1);
    h.send_frames(0, &[Frame::Ping(b"ok")]);
    h.settle();
    assert_eq!(h.received(0), [(FrameType::Pong, b"ok".to_vec())]);
    // The place freed by a close is admitted again.
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    h.accept(1);
    h.send_frames(1, &[Frame::Ping(b"again")]);
    h.settle();
    assert_eq!(h.received(1).last().unwrap().0, FrameType::Pong);
}

#[test]
fn a_slow_consumer_is_cut_off_within_the_drain_time() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.accept(1);
    // Slot 0 never completes its sends: the first PONG batch stays in flight.
    let ping = [Frame::Ping(&[0; 64]); 10];
    h.send_frames(0, &ping);
    let held = h.step(true);
    let Some(Action::Send { buf, .. }) =
        held.into_iter().find(|a| matches!(a, Action::Send { .. }))
    else {
        panic!("expected a send");
    };
    let in_flight = buf;
    for _ in 0..10 {
        h.send_frames(0, &ping);
    }
    h.step(true);
    assert_eq!(
        h.closed(CloseReason::SlowConsumer),
        0,
        "not closed yet: draining"
    );
    // Slot 1 is served meanwhile.
    h.send_frames(1, &[Frame::Ping(b"fine")]);
    h.step(true);
    // The drain time runs out with the send still stuck.
    h.advance(600);
    let actions = h.step(true);
    assert!(
        actions.contains(&Action::Cancel {
            slot: 0,
            gen: h.gens[0],
            recv: true,
            send: true
        }),
        "{actions:?}"
    );
    assert_eq!(h.metrics.drain_timeouts.get(), 1);
    h.core
        .sent(0, h.gens[0], in_flight, -libc::ECANCELED, h.now);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Cancelled);
    let actions = h.step(true);
    assert!(actions.contains(&Action::Close { slot: 0 }), "{actions:?}");
    assert_eq!(h.closed(CloseReason::SlowConsumer), 1);
    assert_eq!(h.core.open(), 1);
}

#[test]
fn a_burst_never_offered_to_the_socket_is_not_held_against_it() {
    let mut h = Harness::new(10);
    h.accept(0);
    let ping = [Frame::Ping(&[0; 64]); 100]; // 7,200 bytes of PONG > 4,096
    h.send_frames(0, &ping);
    h.settle();
    let got = h.received(0);
    assert_eq!(got.len(), 100, "every PONG, no ERROR");
    assert!(got.iter().all(|(ty, _)| *ty == FrameType::Pong));
    assert_eq!(h.closed(CloseReason::SlowConsumer), 0);
}

#[test]
fn slow_consumer_error_reaches_a_client_that_resumes_reading() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(0, &[Frame::Ping(b"first")]);
    h.settle_holding(&[0]);
    assert_eq!(h.metrics.socket_refusals.get(), 1, "its socket is full");
    // 60 PONGs of 72 bytes while refused: 4,320 > 4,096.
    let ping = [Frame::Ping(&[0; 64]); 60];
    h.send_frames(0, &ping);
    h.settle_holding(&[0]);
    assert_eq!(h.closed(CloseReason::SlowConsumer), 0, "draining its ERROR");
    h.release(0); // the client reads again
    h.settle();
    let got = h.received(0);
    assert_eq!(got[0], (FrameType::Pong, b"first".to_vec()));
    assert_eq!(h.last_error_code(0), Some(ErrorCode::SLOW_CONSUMER));
}

#[test]
fn a_socket_that_takes_nothing_is_cut_after_the_slow_consumer_limit() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.accept(1);
    // A 30 s idle timeout: this is about its socket, not its silence.
    h.send_frames(0, &[hello(10_000), Frame::Ping(b"stuck")]);
    h.settle_holding(&[0]);
    // Partial progress at 1,500 ms moves the limit: 2,000 ms from then.
    h.tick_to(1500);
    let (slot, gen, mut buf) = h.held.pop().unwrap();
    h.core.sent(slot, gen, std::mem::take(&mut buf), 3, 1500);
    h.now = 1500;
    h.settle_holding(&[0]);
    h.send_frames(1, &[Frame::Ping(b"alive")]);
    h.tick_to(3400);
    assert_eq!(
        h.closed(CloseReason::SlowConsumer),
        0,
        "made progress at 1,500"
    );
    h.advance(3600);
    h.step_holding(&[0]);
    assert_eq!(h.metrics.slow_consumer_stalls.get(), 1);
    assert_eq!(h.received(1).len(), 1, "the other connection is served");
}

#[test]
fn a_trickled_frame_expires_at_the_frame_timeout() {
    let mut limits = limits();
    limits.frame_timeout_ms = Some(1000);
    let mut h = Harness::with(limits, 10);
    h.accept(0);
    h.accept(1);
    let mut bytes = Vec::new();
    Frame::Ping(b"never finished")
        .encode_to_vec(&mut bytes)
        .unwrap();
    h.now = 200;
    h.feed(0, &bytes[..9]); // header and one byte, at 200 ms
    for (i, t) in (300..1200).step_by(100).enumerate() {
        h.now = t;
        h.feed(0, &bytes[9 + i..10 + i]); // one byte every 100 ms
        h.send_frames(1, &[Frame::Ping(b"ok")]);
        h.tick_to(t);
    }
    assert_eq!(
        h.closed(CloseReason::FrameTimeout),
        0,
        "not yet: due at 1,200"
    );
    h.tick_to(1300);
    assert_eq!(h.closed(CloseReason::FrameTimeout), 0, "draining its ERROR");
    assert_eq!(h.last_error_code(0), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    assert_eq!(h.core.open(), 2);
    assert_eq!(h.received(1).len(), 9, "the other connection is served");
}

#[test]
fn bytes_of_an_incomplete_frame_are_not_a_sign_of_life() {
    let mut h = Harness::new(10); // heartbeat 1,000 ms: idle timeout 3,000
    h.accept(0);
    let mut bytes = Vec::new();
    Frame::Ping(&[1; 60]).encode_to_vec(&mut bytes).unwrap();
    for t in 0..40u64 {
        h.now = t * 100;
        h.feed(0, &bytes[t as usize..t as usize + 1]);
        h.tick_to(t * 100);
    }
    assert_eq!(h.last_error_code(0), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    assert!(h.core.open() <= 1);
}

#[test]
fn incomplete_frames_are_bounded_per_shard() {
    let mut limits = limits();
    limits.partial_bytes = 3 * 10_100;
    let mut h = Harness::with(limits, 10);
    let mut big = Vec::new();
    rooms::publish("r", &[0; 9_980], false, Default::default())
        .encode_to_vec(&mut big)
        .unwrap();
    for slot in 0..4 {
        h.accept(slot);
        h.feed(slot, &big[..5000]); // half of a 10,000-byte payload each
    }
    h.accept(4);
    h.send_frames(4, &[Frame::Ping(b"normal")]);
    h.settle();
    assert_eq!(
        h.metrics.partial_refused.get(),
        1,
        "the fourth does not fit"
    );
    assert_eq!(h.last_error_code(3), Some(ErrorCode::OVERLOADED));
    assert_eq!(h.received(4), [(FrameType::Pong, b"normal".to_vec())]);
    // 9,982 bytes of room header and body, and the carry-over's record.
    let payload = big.len() - 8 + Decoder::CARRY_RECORD_BYTES;
    assert_eq!(h.metrics.partial_bytes.get() as usize, 3 * payload);
    h.feed(0, &big[5000..]); // one completes: its memory is freed
    h.settle();
    assert_eq!(h.metrics.partial_bytes.get() as usize, 2 * payload);
}

#[test]
fn partial_sends_resume_before_anything_else() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(0, &[Frame::Ping(b"abcdef")]);
    let mut actions = Vec::new();
    h.core.poll_actions(&mut actions);
    let Some(Action::Send { slot, gen, buf }) = actions.pop() else {
        panic!("expected a send");
    };
    assert_eq!(buf.len(), 14);
    h.core.sent(slot, gen, buf, 5, h.now);
    h.send_frames(0, &[Frame::Ping(b"x")]);
    let mut actions = Vec::new();
    h.core.poll_actions(&mut actions);
    let Some(Action::Send { buf, .. }) = actions.first() else {
        panic!("expected the rest first: {actions:?}");
    };
    assert_eq!(buf.len(), 9);
    assert_eq!(h.metrics.partial_sends.get(), 1);
}

#[test]
fn enobufs_rearms_the_receive() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.core.recv_ended(0, h.gens[0], RecvEnd::NoBuffers);
    let actions = h.settle();
    assert!(
        matches!(actions[..], [Action::ArmRecv { slot: 0, .. }]),
        "{actions:?}"
    );
    assert_eq!(h.metrics.enobufs_rearms.get(), 1);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Stopped);
    assert!(matches!(h.settle()[..], [Action::ArmRecv { slot: 0, .. }]));
}

#[test]
fn peer_close_and_socket_errors_close_at_once() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.accept(1);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.core
        .recv_ended(1, h.gens[1], RecvEnd::Error(libc::ECONNRESET));
    let actions = h.settle();
    assert!(actions.contains(&Action::Close { slot: 0 }));
    assert!(actions.contains(&Action::Close { slot: 1 }));
    assert_eq!(h.closed(CloseReason::Peer), 1);
    assert_eq!(h.closed(CloseReason::SocketError), 1);
}

#[test]
fn stale_completions_of_a_reused_slot_are_ignored() {
    let mut h = Harness::new(10);
    h.accept(0);
    let old = h.gens[0];
    h.core.recv_ended(0, old, RecvEnd::Eof);
    h.settle();
    h.accept(0);
    assert_ne!(h.gens[0], old);
    h.core.received(0, old, b"\0\0\0\0\x42\0\0\0", 0);
    h.core.recv_ended(0, old, RecvEnd::Eof);
    assert!(h.settle().is_empty());
    assert_eq!(h.core.open(), 1);
}

#[test]
fn client_goaway_is_flushed_then_closed_as_peer() {
    let mut h = Harness::new(10);
    h.accept(0);
    let bye = Frame::GoAway(Status {
        code: ErrorCode::SHUTTING_DOWN,
        reason: "",
    });
    h.send_frames(0, &[Frame::Ping(b"1"), bye]);
    let actions = h.settle();
    assert!(actions.contains(&Action::ShutdownWrite { slot: 0 }));
    assert_eq!(h.received(0), [(FrameType::Pong, b"1".to_vec())]);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    assert_eq!(h.closed(CloseReason::Peer), 1);
}

#[test]
fn shutdown_sends_goaway_to_all_and_drains() {
    let mut h = Harness::new(10);
    for slot in 0..3 {
        h.accept(slot);
    }
    h.core.shutdown(h.now);
    h.settle();
    for slot in 0..3 {
        assert_eq!(h.last_error_code(slot), Some(ErrorCode::SHUTTING_DOWN));
        assert_eq!(h.received(slot).last().unwrap().0, FrameType::GoAway);
    }
    // A connection accepted during shutdown is told so too.
    h.accept(5);
    assert_eq!(h.received(5).last().unwrap().0, FrameType::GoAway);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    assert!(!h.core.is_drained());
    // The others never close their side: the drain time cuts them.
    let actions = h.tick_to(600);
    let cancels = actions
        .iter()
        .filter(|a| matches!(a, Action::Cancel { .. }))
        .count();
    assert_eq!(cancels, 3);
    for slot in [1, 2, 5] {
        h.core
            .recv_ended(slot, h.gens[slot as usize], RecvEnd::Cancelled);
    }
    h.settle();
    assert!(h.core.is_drained());
    assert_eq!(h.closed(CloseReason::Shutdown), 4);
}

#[test]
fn idle_connections_hold_no_buffers() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(0, &[Frame::Ping(b"x")]);
    // Half a frame: the decoder carries it, then frees it once complete.
    let mut bytes = Vec::new();
    Frame::Ping(b"split").encode_to_vec(&mut bytes).unwrap();
    h.feed(0, &bytes[..10]);
    h.feed(0, &bytes[10..]);
    // A header cut in two: its record is freed too.
    h.feed(0, &bytes[..3]);
    h.feed(0, &bytes[3..]);
    h.settle();
    assert_eq!(h.core.partial_bytes, 0, "the shard's account is back at 0");
    let conn = h.core.slots[0].conn.as_ref().unwrap();
    assert_eq!(conn.decoder.buffered_capacity(), 0);
    assert_eq!(conn.st.out.capacity(), 0);
    assert!(conn.st.out.is_empty());
    // The slot table holds every connection inline, a million at C1M (the
    // goal there is 200 B of server memory a connection, all told).
    assert!(
        std::mem::size_of::<Slot>() <= 88,
        "Slot is {} bytes",
        std::mem::size_of::<Slot>()
    );
}

#[test]
fn connections_lingering_after_a_timeout_hold_no_lanes() {
    // A mass idle timeout (a million clients whose process hung) puts every
    // connection of a shard into Lingering at once, for up to --drain-ms:
    // once its ERROR is sent, a connection holds no out-queue lanes.
    let mut h = Harness::new(10);
    for slot in 0..4 {
        h.accept(slot);
        h.send_frames(slot, &[hello(100), Frame::Ping(b"x")]); // idle timeout 300 ms
    }
    h.settle();
    h.tick_to(400);
    for slot in 0..4 {
        assert_eq!(h.last_error_code(slot), Some(ErrorCode::HEARTBEAT_TIMEOUT));
        let conn = h.core.slots[slot as usize].conn.as_ref().unwrap();
        assert_eq!(
            conn.st.phase,
            Phase::Lingering,
            "waiting for the peer's FIN"
        );
        assert!(
            !conn.st.out.holds_lanes(),
            "slot {slot} still holds its lanes"
        );
    }
}

#[test]
fn a_send_is_judged_only_once_every_completion_before_it_is_read() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(0, &[Frame::Ping(b"x")]);
    let mut actions = Vec::new();
    h.core.poll_actions(&mut actions);
    assert!(actions.iter().any(|a| matches!(a, Action::Send { .. })));
    // Three completions were waiting when it was submitted: its own outcome
    // may be among them, so it is not judged before all three are read.
    h.core.sends_submitted(3);
    h.core.completions_read(2, 0);
    assert_eq!(h.metrics.socket_refusals.get(), 0);
    h.core.completions_read(1, 0);
    assert_eq!(
        h.metrics.socket_refusals.get(),
        1,
        "still outstanding: refused"
    );
}

mod cluster;
mod rooms;
mod timers;
