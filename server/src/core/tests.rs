//! The shard core on a simulated clock: every path, with no sockets.

use super::*;
use proto::{Hello, DEFAULT_MAX_PAYLOAD};

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
    }
}

impl Harness {
    fn new(max_conns: usize) -> Self {
        Self::with(limits(), max_conns)
    }

    fn with(limits: Limits, max_conns: usize) -> Self {
        let metrics = Arc::new(ShardMetrics::default());
        let core = ShardCore::new(
            limits,
            Arc::new(Admission::new(max_conns)),
            Arc::new(Registry::new(4, 4)),
            metrics.clone(),
            0,
        );
        Self {
            core,
            metrics,
            now: 0,
            wire: vec![Vec::new(); 16],
            gens: vec![0; 16],
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
        self.core.sends_submitted();
        self.core.completions_drained(self.now);
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
        self.core.sends_submitted();
        self.core.completions_drained(self.now);
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
    h.tick_to(299);
    assert_eq!(h.last_error_code(0), None, "not before the deadline");
    h.tick_to(300);
    assert_eq!(h.last_error_code(0), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    assert_eq!(h.last_error_code(1), None, "slot 1 was active at 200");
    assert_eq!(h.metrics.wheel_expiries.get(), 1);
    h.tick_to(499);
    assert_eq!(h.last_error_code(1), None);
    h.tick_to(500);
    assert_eq!(h.last_error_code(1), Some(ErrorCode::HEARTBEAT_TIMEOUT));
}

#[test]
fn a_connection_that_sends_nothing_expires_on_the_default_timeout() {
    let mut h = Harness::new(10);
    h.accept(4);
    h.tick_to(2999);
    assert_eq!(h.last_error_code(4), None);
    h.tick_to(3000);
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
    limits.partial_bytes = 3 * 10_000;
    let mut h = Harness::with(limits, 10);
    let mut big = Vec::new();
    publish("r", &[0; 9_980], false, Default::default())
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
    let payload = big.len() - 8; // 9,982 bytes: room header and body
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

fn room(name: &str) -> proto::Room<'_> {
    proto::Room::new(name).unwrap()
}

fn publish<'a>(name: &'a str, body: &'a [u8], echo: bool, fragment: proto::Fragment) -> Frame<'a> {
    Frame::Publish(proto::Publish {
        room: room(name),
        body,
        echo,
        fragment,
    })
}

/// The bodies of the MESSAGEs `slot` received, in order.
/// A harness whose slots 0..n are members of room "r".
fn members_of_r(n: u32) -> Harness {
    let mut h = Harness::new(10);
    for slot in 0..n {
        h.accept(slot);
        h.send_frames(slot, &[Frame::Join(room("r"))]);
    }
    h.settle();
    h
}

/// A fragment of `stream`, with MORE as given.
fn frag(stream: u16, more: bool) -> proto::Fragment {
    proto::Fragment {
        stream,
        more,
        cancel: false,
    }
}

fn bodies(h: &Harness, slot: u32) -> Vec<Vec<u8>> {
    h.received(slot)
        .into_iter()
        .filter(|(ty, _)| *ty == FrameType::Message)
        .map(|(_, p)| p[9 + p[8] as usize..].to_vec())
        .collect()
}

#[test]
fn join_and_leave_are_answered_and_idempotent() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(
        0,
        &[
            Frame::Join(room("a")),
            Frame::Join(room("a")),
            Frame::Leave(room("a")),
            Frame::Leave(room("a")),
        ],
    );
    h.settle();
    let types: Vec<FrameType> = h.received(0).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            FrameType::Joined,
            FrameType::Joined,
            FrameType::Left,
            FrameType::Left
        ]
    );
    assert_eq!(h.core.rooms(), 0);
}

#[test]
fn room_limits_answer_limit_and_keep_the_connection() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.accept(1);
    // 3 rooms per connection in these limits; 4 rooms per server.
    let joins: Vec<Frame<'_>> = ["a", "b", "c", "d"]
        .iter()
        .map(|r| Frame::Join(room(r)))
        .collect();
    h.send_frames(0, &joins);
    h.settle();
    assert_eq!(h.last_error_code(0), Some(ErrorCode::LIMIT));
    h.send_frames(1, &[Frame::Join(room("d")), Frame::Join(room("e"))]);
    h.settle();
    assert_eq!(h.received(1)[0].0, FrameType::Joined);
    assert_eq!(
        h.last_error_code(1),
        Some(ErrorCode::LIMIT),
        "the server's fifth room"
    );
    h.send_frames(0, &[Frame::Ping(b"open")]);
    h.settle();
    assert_eq!(h.received(0).last().unwrap().0, FrameType::Pong);
}

#[test]
fn publish_needs_membership() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(
        0,
        &[
            publish("a", b"x", false, Default::default()),
            Frame::Ping(b"ok"),
        ],
    );
    h.settle();
    let got = h.received(0);
    assert_eq!(got[0].0, FrameType::Error);
    assert_eq!(h.last_error_code(0), Some(ErrorCode::NOT_MEMBER));
    assert_eq!(got[1].0, FrameType::Pong);
}

#[test]
fn members_get_each_message_once_in_order_and_echo_is_honoured() {
    let mut h = members_of_r(3);
    h.send_frames(
        0,
        &[
            publish("r", b"1", false, Default::default()),
            publish("r", b"2", true, Default::default()),
        ],
    );
    h.settle();
    assert_eq!(bodies(&h, 1), [b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(bodies(&h, 2), [b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(bodies(&h, 0), [b"2".to_vec()], "only the ECHO one");
    assert_eq!(h.metrics.deliveries.get(), 5);
    // Encoded once, forwarded to the other shards once each.
    let mut out = Vec::new();
    h.core.drain_outgoing(&mut out);
    assert_eq!(out.len(), 2);
    assert!(Arc::ptr_eq(&out[0].0, &out[0].0.clone()));
    // Only this shard (3) has members of "r": the other shards are spared it.
    assert!(out.iter().all(|(_, shards)| *shards == 1 << 3));
}

#[test]
fn messages_from_other_shards_reach_local_members() {
    let mut h = members_of_r(1);
    let remote = Broadcast::encode(
        Message {
            from_conn_id: 99,
            room: room("r"),
            body: b"from afar",
            fragment: Default::default(),
        },
        None,
    );
    h.core.deliver_remote(&remote, 0);
    let other = Broadcast::encode(
        Message {
            from_conn_id: 99,
            room: room("elsewhere"),
            body: b"not here",
            fragment: Default::default(),
        },
        None,
    );
    h.core.deliver_remote(&other, 0);
    h.settle();
    assert_eq!(bodies(&h, 0), [b"from afar".to_vec()]);
}

#[test]
fn leave_and_close_stop_delivery() {
    let mut h = members_of_r(3);
    h.send_frames(1, &[Frame::Leave(room("r"))]);
    h.core.recv_ended(2, h.gens[2], RecvEnd::Eof);
    h.settle();
    h.send_frames(0, &[publish("r", b"after", true, Default::default())]);
    h.settle();
    assert_eq!(bodies(&h, 0), [b"after".to_vec()]);
    assert!(bodies(&h, 1).is_empty());
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    assert_eq!(
        h.core.rooms(),
        0,
        "the last member left with its connection"
    );
}

#[test]
fn a_slow_member_is_cut_off_and_the_room_goes_on() {
    let mut h = members_of_r(3);
    // Slot 2's sends never complete from here on; its queue is 4,096 bytes.
    let body = [7u8; 1000];
    for _ in 0..8 {
        h.send_frames(0, &[publish("r", &body, false, Default::default())]);
        let mut actions = Vec::new();
        h.core.poll_actions(&mut actions);
        for a in actions {
            if let Action::Send { slot, gen, buf } = a {
                if slot != 2 {
                    h.wire[slot as usize].extend_from_slice(&buf);
                    let n = buf.len() as i32;
                    h.core.sent(slot, gen, buf, n, h.now);
                }
            }
        }
        // Every completion read: slot 2's send is refused by its socket.
        h.core.sends_submitted();
        h.core.completions_drained(h.now);
    }
    assert_eq!(bodies(&h, 1).len(), 8, "the others got everything");
    assert_eq!(h.closed(CloseReason::SlowConsumer), 0, "still draining");
    // Its drain time runs out with its send stuck: cancelled and closed.
    let actions = h.step(true);
    assert!(actions.is_empty(), "{actions:?}");
    h.advance(600);
    let actions = h.step(true);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Cancel {
                slot: 2,
                send: true,
                ..
            }
        )),
        "{actions:?}"
    );
    h.core.recv_ended(2, h.gens[2], RecvEnd::Cancelled);
    assert_eq!(
        h.core.open(),
        3,
        "closes only once its cancelled send completes"
    );
    // The room goes on for the others.
    h.send_frames(0, &[publish("r", b"more", false, Default::default())]);
    h.settle();
    assert_eq!(bodies(&h, 1).last().unwrap(), b"more");
}

#[test]
fn open_streams_are_bounded() {
    let mut h = members_of_r(2);
    h.send_frames(
        0,
        &[
            publish("r", b"a1", false, frag(1, true)),
            publish("r", b"b1", false, frag(2, true)),
            publish("r", b"c1", false, frag(3, true)), // third open stream: LIMIT
            publish("r", b"a2", false, frag(1, false)), // closes stream 1
            publish("r", b"c1", false, frag(3, true)), // now fits
        ],
    );
    h.settle();
    assert_eq!(h.last_error_code(0), Some(ErrorCode::LIMIT));
    // One fragment a send, the streams taking turns: 1, 2, 3, then 1 again.
    assert_eq!(
        bodies(&h, 1),
        [
            b"a1".to_vec(),
            b"b1".to_vec(),
            b"c1".to_vec(),
            b"a2".to_vec()
        ]
    );
}

#[test]
fn a_publisher_gone_mid_stream_has_its_streams_cancelled() {
    let mut h = members_of_r(2);
    h.send_frames(
        0,
        &[
            publish("r", b"part", false, frag(7, true)),
            publish("r", b"whole", false, frag(8, false)),
        ],
    );
    h.settle();
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    let got = h.received(1);
    let last = &got.last().unwrap().1;
    assert_eq!(got.len(), 4, "JOINED, part, whole, cancel: {got:?}");
    assert_eq!(&last[9..10], b"r");
    assert!(last.len() == 10, "a CANCEL has no body");
    // The wire header of that last MESSAGE carries CANCEL on stream 7.
    let wire = &h.wire[1];
    let header = &wire[wire.len() - 18..wire.len() - 10];
    assert_eq!(header[5], proto::flags::CANCEL);
    assert_eq!(u16::from_be_bytes([header[6], header[7]]), 7);
    let mut out = Vec::new();
    h.core.drain_outgoing(&mut out);
    assert_eq!(out.len(), 3, "the cancel goes to the other shards too");
}

#[test]
fn full_channels_pause_the_publisher_and_lose_nothing() {
    let mut h = members_of_r(2);
    h.core.set_channels_full(true, h.now);
    // A PUBLISH, then a PING behind it in the same receive.
    h.send_frames(
        0,
        &[
            publish("r", b"1", false, Default::default()),
            Frame::Ping(b"p"),
        ],
    );
    let actions = h.settle();
    assert!(
        actions.contains(&Action::Cancel {
            slot: 0,
            gen: h.gens[0],
            recv: true,
            send: false
        }),
        "reading stops: {actions:?}"
    );
    assert!(bodies(&h, 1).is_empty(), "nothing delivered yet");
    assert!(
        !h.received(0).iter().any(|(ty, _)| *ty == FrameType::Pong),
        "nothing after the PUBLISH is handled"
    );
    assert_eq!(
        h.last_error_code(0),
        None,
        "no error: back-pressure, not refusal"
    );
    assert_eq!(h.metrics.publish_paused.get(), 1);
    // What arrived before the cancel took effect waits behind it.
    h.send_frames(0, &[publish("r", b"2", false, Default::default())]);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Cancelled);
    // Paused for longer than the idle timeout (3 s here): not the client's
    // silence. The member keeps itself alive meanwhile.
    for t in (100..=5000).step_by(100) {
        h.send_frames(1, &[Frame::Ping(b"k")]);
        h.tick_to(t);
    }
    assert_eq!(h.closed(CloseReason::HeartbeatTimeout), 0);
    assert_eq!(h.core.open(), 2);
    assert!(bodies(&h, 1).is_empty());
    h.core.set_channels_full(false, h.now);
    let actions = h.settle();
    assert_eq!(bodies(&h, 1), [b"1".to_vec(), b"2".to_vec()], "in order");
    assert!(h
        .received(0)
        .iter()
        .any(|(ty, p)| *ty == FrameType::Pong && p == b"p"));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ArmRecv { slot: 0, .. })),
        "reading resumes: {actions:?}"
    );
    assert_eq!(h.metrics.publishes.get(), 2);
}

#[test]
fn a_paused_connection_holds_at_most_max_parked_bytes() {
    let mut h = members_of_r(1);
    h.core.set_channels_full(true, h.now);
    h.send_frames(0, &[publish("r", b"1", false, Default::default())]);
    h.settle();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..MAX_PARKED / chunk.len() {
        h.feed(0, &chunk);
    }
    assert_eq!(h.core.open(), 1, "up to the bound");
    h.feed(0, &chunk);
    h.settle();
    assert_eq!(h.last_error_code(0), Some(ErrorCode::OVERLOADED));
    assert_eq!(
        h.closed(CloseReason::Overloaded),
        0,
        "draining, not closed yet"
    );
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
    h.settle();
    let conn = h.core.slots[0].conn.as_ref().unwrap();
    assert_eq!(conn.decoder.buffered_capacity(), 0);
    assert_eq!(conn.st.out.capacity(), 0);
    assert!(
        std::mem::size_of::<Conn>() <= 208,
        "Conn is {} bytes",
        std::mem::size_of::<Conn>()
    );
}

#[test]
fn a_member_a_window_behind_pauses_the_streaming_publisher() {
    // Slot 0 streams to slots 1 (fast) and 2 (its socket is full).
    let mut h = members_of_r(3);
    let body = [5u8; 1000]; // window 4,096: five fragments
    for _ in 0..8 {
        h.send_frames(0, &[publish("r", &body, false, frag(1, true))]);
        h.settle_holding(&[2]);
    }
    assert_eq!(h.metrics.flow_paused.get(), 1, "paused once, on the sixth");
    assert_eq!(bodies(&h, 1).len(), 5, "the fast member got what was sent");
    // A chat line from someone else is not held back by the file.
    h.send_frames(1, &[publish("r", b"chat", false, Default::default())]);
    h.settle_holding(&[2]);
    assert_eq!(bodies(&h, 0).last().unwrap(), b"chat");
    // Slot 2 reads: below half the window the publisher resumes, in order.
    for _ in 0..12 {
        h.release(2);
        h.settle_holding(&[2]);
    }
    h.release(2);
    h.settle();
    assert_eq!(bodies(&h, 1).len(), 8);
    let two = bodies(&h, 2);
    assert_eq!(
        two.iter().filter(|b| b[..] == body[..]).count(),
        8,
        "every fragment"
    );
    assert_eq!(h.closed(CloseReason::SlowConsumer), 0, "nobody was cut");
}

#[test]
fn a_member_that_stops_reading_is_cut_and_the_publisher_resumes() {
    let mut h = members_of_r(3);
    let body = [5u8; 1000];
    for _ in 0..8 {
        h.send_frames(0, &[publish("r", &body, false, frag(1, true))]);
        h.settle_holding(&[2]);
    }
    assert_eq!(h.metrics.flow_paused.get(), 1);
    h.tick_to(1900);
    assert_eq!(bodies(&h, 1).len(), 5, "still paused");
    h.tick_to(2100); // slot 2's socket took nothing for 2,000 ms
    h.step_holding(&[2]);
    assert_eq!(h.metrics.slow_consumer_stalls.get(), 1);
    h.settle_holding(&[2]);
    assert_eq!(
        bodies(&h, 1).len(),
        8,
        "the rest of the file went on at once"
    );
}

#[test]
fn a_chat_line_waits_behind_at_most_one_fragment() {
    let mut h = members_of_r(3);
    let body = [5u8; 1000];
    // Three fragments queue for slot 2 while one is in flight.
    for _ in 0..4 {
        h.send_frames(0, &[publish("r", &body, false, frag(1, true))]);
        h.settle_holding(&[2]);
    }
    h.send_frames(1, &[publish("r", b"chat", false, Default::default())]);
    h.settle_holding(&[2]);
    h.release(2); // the first fragment goes; the next send is chat + one fragment
    let mut actions = Vec::new();
    h.core.poll_actions(&mut actions);
    let Some(Action::Send { buf, .. }) = actions
        .iter()
        .find(|a| matches!(a, Action::Send { slot: 2, .. }))
    else {
        panic!("no send for slot 2: {actions:?}");
    };
    let chat_at = buf.windows(4).position(|w| w == b"chat").unwrap();
    assert!(chat_at < 30, "the chat line leads the send");
    assert!(
        buf.len() < 2 * 1000,
        "with one fragment behind it, not three"
    );
}

#[test]
fn a_remote_fragment_leaves_the_channel_when_delivered() {
    let mut h = members_of_r(2);
    let flow = crate::flow::Flow::new(0, 100);
    let remote = Broadcast::encode(
        Message {
            from_conn_id: 99,
            room: room("r"),
            body: &[0; 200],
            fragment: frag(4, true),
        },
        Some(flow.clone()),
    );
    flow.entered_channel(remote.bytes().len());
    flow.set_waiting(true);
    assert!(flow.is_closed());
    h.core.deliver_remote(&remote, 0);
    let mut wake = Vec::new();
    h.core.drain_wakes(&mut wake);
    assert!(wake.is_empty(), "now the members hold it: over the window");
    h.settle();
    h.core.drain_wakes(&mut wake);
    assert_eq!(
        wake,
        vec![0],
        "sent to both: the publisher's shard is woken"
    );
    assert!(flow.may_resume());
}

#[test]
fn a_publisher_that_closes_while_paused_loses_nothing() {
    let mut h = members_of_r(3);
    let body = [5u8; 1000];
    for i in 0..8 {
        // The whole file, as receives of one fragment each, then it closes.
        h.send_frames(0, &[publish("r", &body, false, frag(1, i < 7))]);
        h.settle_holding(&[2]);
    }
    assert_eq!(h.metrics.flow_paused.get(), 1);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle_holding(&[2]);
    assert_eq!(h.core.open(), 3, "still open: its input is not handled yet");
    for _ in 0..20 {
        h.release(2);
        h.settle_holding(&[2]);
    }
    h.release(2);
    h.settle();
    let got = h.received(2);
    let messages: Vec<_> = got
        .iter()
        .filter(|(ty, _)| *ty == FrameType::Message)
        .collect();
    assert_eq!(messages.len(), 8, "every fragment, and no CANCEL");
    assert_eq!(
        h.closed(CloseReason::Peer),
        1,
        "closed once it was all handled"
    );
}
