//! One connection: its state, and the protocol frame by frame. The shard
//! core ([`super::ShardCore`]) owns the connections and calls in here with a
//! [`Ctx`] of what a frame may touch besides its own connection.

use std::sync::Arc;

use proto::{DecodeError, ErrorCode, Frame, Malformed, Message, Status, Welcome};

use super::Limits;
use crate::broadcast::Broadcast;
use crate::flow::Flow;
use crate::metrics::{CloseReason, ShardMetrics};
use crate::outq::{BufPool, OutQueue};
use crate::rooms::{Joined, ShardRooms, SubState};
use crate::wheel::TimerWheel;

/// Why a connection's reading is paused (its input waits in
/// [`ShardCore::parked`], and TCP pushes back on the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pause {
    /// Reading.
    No,
    /// A PUBLISH met the channels to other shards full.
    Channels,
    /// A stream PUBLISH met its own flow closed: a member is behind.
    Flow,
}

/// Where a connection's receive stands: one state, so that "armed",
/// "wanted", "being cancelled for a pause" and "the peer closed while
/// paused" cannot contradict each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recv {
    /// None armed: arm one as soon as reading is allowed (a new connection,
    /// or the engine ended one: no buffers, a multishot that stopped).
    Wanted,
    /// A receive is armed.
    Armed,
    /// The armed receive's cancel is on its way (a pause, or the close);
    /// `rearm`: the pause ended meanwhile, so arm again once it ends.
    Cancelling { rearm: bool },
    /// None armed and none wanted: paused with its receive cancelled, or ended.
    Idle,
    /// The peer closed its side while input was parked: close once that
    /// input is handled (what a client sent before closing is not lost).
    EofParked,
}

impl Recv {
    /// Whether the engine still holds a receive of this connection.
    pub(super) fn is_outstanding(self) -> bool {
        matches!(self, Self::Armed | Self::Cancelling { .. })
    }

    /// Reading is allowed again (a pause ended): what was stopped for the
    /// pause is wanted again; an EOF that came meanwhile stays.
    pub(super) fn resumed(self) -> Self {
        match self {
            Self::Idle => Self::Wanted,
            Self::Cancelling { .. } => Self::Cancelling { rearm: true },
            other => other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Open,
    Draining,
    Lingering,
    Closing,
}

#[derive(Debug)]
pub(super) struct ConnState {
    pub(super) id: u64,
    pub(super) phase: Phase,
    pub(super) reason: CloseReason,
    pub(super) out: OutQueue,
    /// When the last complete frame arrived: liveness.
    pub(super) last_rx_ms: u64,
    /// When the incomplete frame the decoder holds began to arrive;
    /// [`NO_FRAME`] when it holds none.
    pub(super) frame_started_ms: u64,
    pub(super) heartbeat_ms: u32,
    pub(super) idle_timeout_ms: u32,
    pub(super) seen_frame: bool,
    pub(super) admitted: bool,
    /// Where its receive stands.
    pub(super) recv: Recv,
    /// The cancel of what is outstanding, for the close, has been asked for.
    pub(super) cancel_sent: bool,
    pub(super) dirty: bool,
    /// Reading is paused, and why. The PUBLISH that paused it and what
    /// followed wait in [`ShardCore::parked`].
    pub(super) pause: Pause,
    /// Rooms and open streams; boxed, since most connections of a C100K run
    /// are in no room and should not pay for the two lists.
    pub(super) rooms: Option<Box<Memberships>>,
}

/// A connection's rooms (ids in its shard's table) and open stream ids.
#[derive(Debug, Default)]
pub(super) struct Memberships {
    pub(super) rooms: Vec<u32>,
    /// Open streams: (stream id, room id), cancelled for the room's members if
    /// the connection goes away mid-stream.
    pub(super) streams: Vec<(u16, u32)>,
    /// The flow control of its stream fragments, made at its first one.
    pub(super) flow: Option<Arc<Flow>>,
}

impl ConnState {
    pub(super) fn member_of(&self, room: u32) -> bool {
        self.rooms.as_ref().is_some_and(|m| m.rooms.contains(&room))
    }

    pub(super) fn flow(&self) -> Option<&Arc<Flow>> {
        self.rooms.as_ref()?.flow.as_ref()
    }

    pub(super) fn is_paused(&self) -> bool {
        self.pause != Pause::No
    }

    /// The earliest time something about this open connection is due: the
    /// idle timeout (not while paused: the server chose not to read), the
    /// frame timeout of an incomplete frame, or the slow-consumer limit of a
    /// socket that refuses.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<u64> {
        [
            self.idle_due(),
            self.frame_due(limits),
            self.stall_due(limits),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the idle timeout is up; none while paused (the server chose not
    /// to read).
    pub(super) fn idle_due(&self) -> Option<u64> {
        (!self.is_paused()).then(|| passed(self.last_rx_ms, u64::from(self.idle_timeout_ms)))
    }

    /// When the frame begun must have completed; none between frames.
    pub(super) fn frame_due(&self, limits: &Limits) -> Option<u64> {
        (self.frame_started_ms != NO_FRAME).then(|| {
            passed(
                self.frame_started_ms,
                limits.frame_timeout_for(self.idle_timeout_ms),
            )
        })
    }

    /// When a socket that refuses has refused for the slow-consumer limit.
    pub(super) fn stall_due(&self, limits: &Limits) -> Option<u64> {
        self.out
            .refused_since()
            .map(|since| passed(since, limits.slow_consumer_ms))
    }
}

/// The first reading of the shard's millisecond clock at which `span` has
/// surely passed since the reading `since`. The clock truncates: a reading of
/// t was taken somewhere in [t, t+1), so `since + span` can come up to 1 ms
/// before the span is over (a frame timeout of 1,000 ms was seen to cut after
/// 999.9 ms, measured from outside). One more millisecond makes every limit a
/// promise: never early, late by at most one wheel tick.
pub(super) fn passed(since: u64, span: u64) -> u64 {
    since.saturating_add(span).saturating_add(1)
}

/// A PUBLISH accepted in this batch, to be delivered once the batch's frames
/// are decoded (delivery touches other connections).
#[derive(Debug)]
pub(super) struct Published {
    pub(super) message: Arc<Broadcast>,
    pub(super) room: u32,
    pub(super) sender: u32,
    pub(super) echo: bool,
}

/// Everything a frame handler may touch besides the connection.
pub(super) struct Ctx<'a> {
    pub(super) limits: &'a Limits,
    pub(super) pool: &'a mut BufPool,
    pub(super) wheel: &'a mut TimerWheel,
    pub(super) metrics: &'a ShardMetrics,
    pub(super) rooms: &'a mut ShardRooms,
    pub(super) published: &'a mut Vec<Published>,
    pub(super) wake: &'a mut Vec<usize>,
    pub(super) channels_full: bool,
    pub(super) slot: u32,
    pub(super) now: u64,
}

/// `frame_started_ms` of a connection whose decoder holds no partial frame.
pub(super) const NO_FRAME: u64 = u64::MAX;

pub(super) fn mark_dirty(st: &mut ConnState, dirty: &mut Vec<u32>, slot: u32) {
    if !st.dirty {
        st.dirty = true;
        dirty.push(slot);
    }
}

/// The last frame a connection gets: GOAWAY or ERROR.
pub(super) fn last_frame(goaway: bool, code: ErrorCode, reason: &str) -> Frame<'_> {
    let status = Status { code, reason };
    if goaway {
        Frame::GoAway(status)
    } else {
        Frame::Error(status)
    }
}

/// Ends an open connection gracefully: `frame` (if any) goes out after what is
/// queued, then the write side is shut, all within the drain time.
pub(super) fn begin_close(
    st: &mut ConnState,
    cx: &mut Ctx<'_>,
    reason: CloseReason,
    frame: Option<Frame<'_>>,
) {
    if st.phase != Phase::Open {
        return;
    }
    st.reason = reason;
    if let Some(frame) = frame {
        st.out.push_unbounded(&frame, cx.pool);
        cx.metrics.frames_out.inc();
    }
    st.phase = Phase::Draining;
    cx.wheel.schedule(cx.slot, cx.now + cx.limits.drain_ms);
}

/// Ends a connection now: nothing more is sent.
pub(super) fn close_now(st: &mut ConnState, reason: CloseReason) {
    if st.phase == Phase::Open {
        st.reason = reason;
    }
    st.phase = Phase::Closing;
}

/// A fatal decode error: ERROR with its code, then close.
pub(super) fn protocol_error(st: &mut ConnState, cx: &mut Ctx<'_>, e: DecodeError) {
    let reason = match e.code() {
        ErrorCode::FRAME_TOO_LARGE => CloseReason::FrameTooLarge,
        ErrorCode::UNKNOWN_TYPE => CloseReason::UnknownType,
        _ => CloseReason::Malformed,
    };
    let text = e.to_string();
    begin_close(st, cx, reason, Some(last_frame(false, e.code(), &text)));
}

/// Queues a reply frame; an overflowing queue cuts the connection off.
pub(super) fn reply(st: &mut ConnState, cx: &mut Ctx<'_>, frame: &Frame<'_>) {
    match st.out.push(frame, cx.limits.queue_bytes, cx.pool) {
        Ok(()) => cx.metrics.frames_out.inc(),
        Err(_) => slow_consumer(st, cx, OVERFLOW_REASON),
    }
}

/// Why a connection was cut as a slow consumer, in its ERROR.
pub(super) const OVERFLOW_REASON: &str =
    "outgoing queue full: the socket refused and more than --queue-bytes came since";
pub(super) const STREAM_BOUND_REASON: &str =
    "more than 256 stream windows of one publisher's data queued (its node did not pause it)";
pub(super) const STALL_REASON: &str = "the socket took nothing within --slow-consumer-ms";

/// A slow consumer: drop the backlog (opening the flows it held back), send
/// SLOW_CONSUMER, close.
pub(super) fn slow_consumer(st: &mut ConnState, cx: &mut Ctx<'_>, reason: &str) {
    st.out.discard_queued(cx.pool, cx.wake);
    let frame = last_frame(false, ErrorCode::SLOW_CONSUMER, reason);
    begin_close(st, cx, CloseReason::SlowConsumer, Some(frame));
}

/// Files an open connection on the wheel at its earliest deadline (which may
/// have moved earlier: lazy re-arm only ever moves it later).
pub(super) fn reschedule(st: &ConnState, cx: &mut Ctx<'_>) {
    if st.phase == Phase::Open {
        if let Some(at) = st.deadline(cx.limits) {
            cx.wheel.schedule(cx.slot, at);
        }
    }
}

/// The wheel came due for an open connection: cut it if its socket took
/// nothing for the slow-consumer limit, if a frame is overdue, or if nothing
/// arrived within the idle timeout; else re-file it at its next deadline.
pub(super) fn expire_if_due(st: &mut ConnState, cx: &mut Ctx<'_>) {
    let now = cx.now;
    if st.stall_due(cx.limits).is_some_and(|at| now >= at) {
        cx.metrics.slow_consumer_stalls.inc();
        return slow_consumer(st, cx, STALL_REASON);
    }
    let frame_due = st.frame_due(cx.limits).is_some_and(|at| now >= at);
    let idle_due = st.idle_due().is_some_and(|at| now >= at);
    if frame_due || idle_due {
        cx.metrics.wheel_expiries.inc();
        let (reason, text) = if frame_due {
            (
                CloseReason::FrameTimeout,
                "a frame begun was not completed within the frame timeout",
            )
        } else {
            (
                CloseReason::HeartbeatTimeout,
                "no complete frame received within the idle timeout",
            )
        };
        let frame = last_frame(false, ErrorCode::HEARTBEAT_TIMEOUT, text);
        return begin_close(st, cx, reason, Some(frame));
    }
    match st.deadline(cx.limits) {
        Some(at) => cx.wheel.schedule(cx.slot, at), // lazy re-arm
        // Paused, nothing else due: look again after an idle timeout.
        None => cx
            .wheel
            .schedule(cx.slot, now + u64::from(st.idle_timeout_ms)),
    }
}

/// A non-fatal ERROR (NOT_MEMBER, LIMIT): the connection stays open.
pub(super) fn refuse(st: &mut ConnState, cx: &mut Ctx<'_>, code: ErrorCode, reason: &str) {
    reply(st, cx, &Frame::Error(Status { code, reason }));
}

/// One decoded frame from a client.
pub(super) fn on_frame(st: &mut ConnState, cx: &mut Ctx<'_>, frame: Frame<'_>) {
    let first = !st.seen_frame;
    st.seen_frame = true;
    match frame {
        Frame::Hello(hello) => {
            if !first {
                return protocol_error(st, cx, Malformed::LateHello.into());
            }
            st.heartbeat_ms = cx.limits.heartbeat_for(hello.heartbeat_ms);
            st.idle_timeout_ms = cx.limits.idle_timeout_for(st.heartbeat_ms);
            reschedule(st, cx);
            let welcome = Frame::Welcome(Welcome {
                conn_id: st.id,
                heartbeat_ms: st.heartbeat_ms,
                idle_timeout_ms: st.idle_timeout_ms,
                max_payload: cx.limits.max_payload,
                shard: cx.limits.shard,
            });
            reply(st, cx, &welcome);
        }
        Frame::Ping(payload) => reply(st, cx, &Frame::Pong(payload)),
        Frame::Pong(_) => {} // a sign of life; unsolicited PONGs are ignored
        Frame::GoAway(_) => begin_close(st, cx, CloseReason::Peer, None),
        Frame::Join(room) => {
            let mine = &mut st.rooms.get_or_insert_with(Default::default).rooms;
            match cx
                .rooms
                .join(room.as_str(), cx.slot, mine, cx.limits.max_rooms_per_conn)
            {
                Joined::New | Joined::Already => {
                    room_gauges(cx.rooms, cx.metrics);
                    let id = cx.rooms.id(room.as_str()).expect("just joined");
                    match cx.rooms.sub(id) {
                        SubState::Pending => cx.rooms.wait_for_sub(id, cx.slot),
                        state => answer_join(st, cx, room.as_str(), state),
                    }
                }
                Joined::ConnLimit => refuse(
                    st,
                    cx,
                    ErrorCode::LIMIT,
                    "this connection is in its maximum number of rooms",
                ),
                Joined::ServerLimit => refuse(
                    st,
                    cx,
                    ErrorCode::LIMIT,
                    "the server has its maximum number of rooms",
                ),
            }
        }
        Frame::Leave(room) => {
            if let Some(m) = st.rooms.as_mut() {
                // JOINs still waiting for the subscription are answered
                // first: a JOIN always gets its JOINED, then LEFT.
                let waiting = cx.rooms.waiting(room.as_str(), cx.slot);
                cx.rooms.leave(room.as_str(), cx.slot, &mut m.rooms);
                room_gauges(cx.rooms, cx.metrics);
                for _ in 0..waiting {
                    reply(st, cx, &Frame::Joined(room));
                }
            }
            reply(st, cx, &Frame::Left(room));
        }
        Frame::Publish(p) => on_publish(st, cx, p),
        Frame::Welcome(_)
        | Frame::Joined(_)
        | Frame::Left(_)
        | Frame::Message(_)
        | Frame::Error(_) => {
            let ty = frame.frame_type();
            protocol_error(st, cx, Malformed::WrongDirection { ty }.into());
        }
    }
}

/// Answers a JOIN of `room` whose subscription is settled: JOINED, and,
/// if the cluster link could not confirm it, ERROR GAP (messages from other
/// nodes are missed until the link is back).
pub(super) fn answer_join(st: &mut ConnState, cx: &mut Ctx<'_>, room: &str, state: SubState) {
    let name = proto::Room::new(room).expect("a joined room is valid");
    reply(st, cx, &Frame::Joined(name));
    if state == SubState::Unconfirmed {
        cx.metrics.gap_notices.inc();
        reply(st, cx, &gap_notice(room));
    }
}

/// ERROR GAP for `room`: its reason is the room's name, exactly.
pub(super) fn gap_notice(room: &str) -> Frame<'_> {
    Frame::Error(Status {
        code: ErrorCode::GAP,
        reason: room,
    })
}

pub(super) fn room_gauges(rooms: &ShardRooms, metrics: &ShardMetrics) {
    metrics.rooms.set(rooms.len() as u64);
    metrics.members.set(rooms.memberships() as u64);
}

/// PUBLISH: membership and stream limits checked, encoded once as MESSAGE; or,
/// while the channels to other shards are full, the connection paused.
pub(super) fn on_publish(st: &mut ConnState, cx: &mut Ctx<'_>, p: proto::Publish<'_>) {
    let Some(room) = cx.rooms.id(p.room.as_str()).filter(|&id| st.member_of(id)) else {
        return refuse(
            st,
            cx,
            ErrorCode::NOT_MEMBER,
            "publish to a room this connection has not joined",
        );
    };
    if cx.channels_full {
        cx.metrics.publish_paused.inc();
        st.pause = Pause::Channels;
        return;
    }
    let f = p.fragment;
    let mut flow = None;
    if f.stream != 0 {
        let m = st.rooms.as_mut().expect("a member has memberships");
        let own = m.flow.get_or_insert_with(|| {
            Flow::new(usize::from(cx.limits.shard), cx.limits.stream_window)
        });
        if own.is_closed() {
            // A member is behind on this publisher's streams: wait for it.
            cx.metrics.flow_paused.inc();
            own.set_waiting(true);
            st.pause = Pause::Flow;
            return;
        }
        flow = Some(own.clone());
        let streams = &mut m.streams;
        let open = streams.iter().any(|&(s, _)| s == f.stream);
        if !open && f.more {
            if streams.len() >= cx.limits.max_streams {
                return refuse(
                    st,
                    cx,
                    ErrorCode::LIMIT,
                    "this connection has its maximum number of open streams",
                );
            }
            streams.push((f.stream, room));
        } else if open && !f.more {
            streams.retain(|&(s, _)| s != f.stream);
        }
    }
    cx.metrics.publishes.inc();
    // The ticket before the destinations are read (deliver_published).
    let ticket = cx.rooms.ticket();
    let message = Broadcast::encode_ticketed(
        Message {
            from_conn_id: st.id,
            room: p.room,
            body: p.body,
            fragment: f,
        },
        flow,
        ticket,
    );
    cx.published.push(Published {
        message,
        room,
        sender: cx.slot,
        echo: p.echo,
    });
}
