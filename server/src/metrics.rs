//! Per-shard counters, read by the metrics endpoint and the stderr summary.
//!
//! Each shard is the only writer of its own counters, so an increment is a
//! relaxed load and store (no locked instruction); readers on other threads see
//! a value at most a few increments old. Each shard's block sits on its own
//! cache lines.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter written by one thread only.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets a gauge. Only the owning shard calls this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a connection was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed (EOF or GOAWAY).
    Peer,
    /// The socket failed (reset, timeout by TCP_USER_TIMEOUT or keepalive).
    SocketError,
    /// No complete frame received for the idle timeout.
    HeartbeatTimeout,
    /// A frame begun was not completed within the frame timeout.
    FrameTimeout,
    /// FRAME_TOO_LARGE.
    FrameTooLarge,
    /// UNKNOWN_TYPE.
    UnknownType,
    /// MALFORMED.
    Malformed,
    /// The socket refused and the queue bound overflowed, or the socket took
    /// nothing for the slow-consumer limit.
    SlowConsumer,
    /// Beyond --max-conns, or past the shard's budget for incomplete frames.
    Overloaded,
    /// The server is stopping.
    Shutdown,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 10] = [
        Self::Peer,
        Self::SocketError,
        Self::HeartbeatTimeout,
        Self::FrameTimeout,
        Self::FrameTooLarge,
        Self::UnknownType,
        Self::Malformed,
        Self::SlowConsumer,
        Self::Overloaded,
        Self::Shutdown,
    ];

    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::SocketError => "socket_error",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::FrameTimeout => "frame_timeout",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnknownType => "unknown_type",
            Self::Malformed => "malformed",
            Self::SlowConsumer => "slow_consumer",
            Self::Overloaded => "overloaded",
            Self::Shutdown => "shutdown",
        }
    }
}

/// The counters of one shard.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Connections open now (gauge).
    pub conns_open: Counter,
    /// Connections accepted.
    pub accepted: Counter,
    /// Accepts that failed (ENFILE: the fixed-file table was full, and others).
    pub accept_errors: Counter,
    /// Connections closed, by [`CloseReason`].
    pub closed: [Counter; 10],
    /// Frames received.
    pub frames_in: Counter,
    /// Frames sent.
    pub frames_out: Counter,
    /// Bytes received.
    pub bytes_in: Counter,
    /// Bytes sent.
    pub bytes_out: Counter,
    /// Multishot receives re-armed after the buffer ring ran dry (ENOBUFS).
    pub enobufs_rearms: Counter,
    /// Connections expired by the timing wheel.
    pub wheel_expiries: Counter,
    /// Connections forced closed because their drain time ran out.
    pub drain_timeouts: Counter,
    /// Short sends that had to be resubmitted.
    pub partial_sends: Counter,
    /// Sends still outstanding once every completion had been read: the
    /// socket was full (from then on the connection's queue is judged).
    pub socket_refusals: Counter,
    /// Connections cut because their socket took nothing for --slow-consumer-ms.
    pub slow_consumer_stalls: Counter,
    /// Publishers paused because a member is a window behind on their streams.
    pub flow_paused: Counter,
    /// Heap held for incomplete frames (gauge).
    pub partial_bytes: Counter,
    /// Connections refused (OVERLOADED) because their incomplete frame would
    /// take the shard past --partial-bytes.
    pub partial_refused: Counter,
    /// Loop turns that stopped reading completions or the inbox at their
    /// byte budget, to write before reading more.
    pub input_budget_hits: Counter,
    /// Loop turns that left due deadlines for the next turn (more than
    /// EXPIRY_BUDGET came due at once).
    pub expiry_budget_hits: Counter,
    /// Completion batches processed (one `io_uring_enter` each).
    pub batches: Counter,
    /// Completions processed.
    pub completions: Counter,
    /// Rooms with members on this shard (gauge).
    pub rooms: Counter,
    /// Room memberships on this shard (gauge).
    pub members: Counter,
    /// PUBLISHes accepted.
    pub publishes: Counter,
    /// Pauses of a connection's reading: a PUBLISH met the channels to other
    /// shards full.
    pub publish_paused: Counter,
    /// MESSAGE frames queued for members.
    pub deliveries: Counter,
    /// Messages handed to other shards' inboxes.
    pub cross_core_sent: Counter,
    /// Messages taken from this shard's inbox.
    pub cross_core_received: Counter,
    /// Of those, not delivered: published before this shard's current
    /// members of the room came (they would have made a gap).
    pub stale_deliveries: Counter,
    /// Wake-ups this shard sent to others (inbox went from empty to non-empty).
    pub cross_core_wakeups: Counter,
    /// Times an inbox of another shard was full (the message waits in an outbox).
    pub channel_backpressure: Counter,
    /// ERROR GAP notices queued for members (cluster: messages from other
    /// nodes may have been lost).
    pub gap_notices: Counter,
    /// Members cut for holding more than the hard bound of one publisher's
    /// stream data (a publisher, or its node, that did not pause).
    pub stream_bound_cuts: Counter,
}

impl ShardMetrics {
    /// Counts a close.
    pub fn closed_by(&self, reason: CloseReason) {
        self.closed[reason as usize].inc();
    }

    /// Total closes of every reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(Counter::get).sum()
    }
}

/// Renders every shard's counters as Prometheus text exposition format.
pub fn render_prometheus(shards: &[std::sync::Arc<ShardMetrics>]) -> String {
    let mut out = String::with_capacity(4096);
    type Getter = fn(&ShardMetrics) -> &Counter;
    let simple: [(&str, &str, &str, Getter); 32] = [
        (
            "ringroom_stream_bound_cuts_total",
            "counter",
            "Members cut for holding more than 256 stream windows of one publisher's data (it, or its node, did not pause).",
            |m| &m.stream_bound_cuts,
        ),
        (
            "ringroom_gap_notices_total",
            "counter",
            "ERROR GAP notices queued for members: messages from other nodes of the cluster may have been lost.",
            |m| &m.gap_notices,
        ),
        (
            "ringroom_rooms",
            "gauge",
            "Rooms with members on the shard.",
            |m| &m.rooms,
        ),
        (
            "ringroom_room_members",
            "gauge",
            "Room memberships on the shard.",
            |m| &m.members,
        ),
        (
            "ringroom_publishes_total",
            "counter",
            "PUBLISH frames accepted.",
            |m| &m.publishes,
        ),
        (
            "ringroom_publish_paused_total",
            "counter",
            "Connections paused: a PUBLISH met the channels between cores full; it waits unread until they drain.",
            |m| &m.publish_paused,
        ),
        (
            "ringroom_deliveries_total",
            "counter",
            "MESSAGE frames queued for members.",
            |m| &m.deliveries,
        ),
        (
            "ringroom_cross_core_sent_total",
            "counter",
            "Messages handed to other shards.",
            |m| &m.cross_core_sent,
        ),
        (
            "ringroom_cross_core_received_total",
            "counter",
            "Messages received from other shards.",
            |m| &m.cross_core_received,
        ),
        (
            "ringroom_cross_core_stale_total",
            "counter",
            "Messages from other shards published before the room's members here came, not delivered.",
            |m| &m.stale_deliveries,
        ),
        (
            "ringroom_cross_core_wakeups_total",
            "counter",
            "Wake-ups sent to other shards.",
            |m| &m.cross_core_wakeups,
        ),
        (
            "ringroom_channel_backpressure_total",
            "counter",
            "Times another shard's inbox was full.",
            |m| &m.channel_backpressure,
        ),
        (
            "ringroom_connections_open",
            "gauge",
            "Connections open.",
            |m| &m.conns_open,
        ),
        (
            "ringroom_accepted_total",
            "counter",
            "Connections accepted.",
            |m| &m.accepted,
        ),
        (
            "ringroom_accept_errors_total",
            "counter",
            "Failed accepts (ENFILE when the fixed-file table is full).",
            |m| &m.accept_errors,
        ),
        (
            "ringroom_frames_in_total",
            "counter",
            "Frames received.",
            |m| &m.frames_in,
        ),
        (
            "ringroom_frames_out_total",
            "counter",
            "Frames sent.",
            |m| &m.frames_out,
        ),
        (
            "ringroom_bytes_in_total",
            "counter",
            "Bytes received.",
            |m| &m.bytes_in,
        ),
        ("ringroom_bytes_out_total", "counter", "Bytes sent.", |m| {
            &m.bytes_out
        }),
        (
            "ringroom_enobufs_rearms_total",
            "counter",
            "Multishot receives re-armed after the buffer ring ran dry.",
            |m| &m.enobufs_rearms,
        ),
        (
            "ringroom_wheel_expiries_total",
            "counter",
            "Connections expired by the heartbeat timing wheel.",
            |m| &m.wheel_expiries,
        ),
        (
            "ringroom_drain_timeouts_total",
            "counter",
            "Connections forced closed when their drain time ran out.",
            |m| &m.drain_timeouts,
        ),
        (
            "ringroom_partial_sends_total",
            "counter",
            "Short sends resubmitted.",
            |m| &m.partial_sends,
        ),
        (
            "ringroom_socket_refusals_total",
            "counter",
            "Sends still outstanding once every completion was read: the socket was full.",
            |m| &m.socket_refusals,
        ),
        (
            "ringroom_slow_consumer_stalls_total",
            "counter",
            "Connections cut because their socket took nothing for --slow-consumer-ms.",
            |m| &m.slow_consumer_stalls,
        ),
        (
            "ringroom_flow_paused_total",
            "counter",
            "Publishers paused because a member is a --stream-window behind on their streams.",
            |m| &m.flow_paused,
        ),
        (
            "ringroom_partial_frame_bytes",
            "gauge",
            "Heap held for incomplete frames.",
            |m| &m.partial_bytes,
        ),
        (
            "ringroom_partial_frame_refused_total",
            "counter",
            "Connections refused with OVERLOADED: their incomplete frame would exceed --partial-bytes.",
            |m| &m.partial_refused,
        ),
        (
            "ringroom_input_budget_hits_total",
            "counter",
            "Loop turns that stopped reading input at the turn's byte budget, to write first.",
            |m| &m.input_budget_hits,
        ),
        (
            "ringroom_expiry_budget_hits_total",
            "counter",
            "Loop turns that left due deadlines for the next turn: more came due at once than a turn acts on.",
            |m| &m.expiry_budget_hits,
        ),
        (
            "ringroom_batches_total",
            "counter",
            "Completion batches (io_uring_enter calls that returned completions).",
            |m| &m.batches,
        ),
        (
            "ringroom_completions_total",
            "counter",
            "Completions processed.",
            |m| &m.completions,
        ),
    ];
    for (name, kind, help, get) in simple {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (i, m) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(m).get());
        }
    }
    let name = "ringroom_closed_total";
    let _ = writeln!(
        out,
        "# HELP {name} Connections closed, by reason.\n# TYPE {name} counter"
    );
    for (i, m) in shards.iter().enumerate() {
        for reason in CloseReason::ALL {
            let v = m.closed[reason as usize].get();
            let _ = writeln!(
                out,
                "{name}{{shard=\"{i}\",reason=\"{}\"}} {v}",
                reason.label()
            );
        }
    }
    out
}

/// A one-line summary of all shards, for stderr.
pub fn summary_line(shards: &[std::sync::Arc<ShardMetrics>]) -> String {
    let sum = |f: fn(&ShardMetrics) -> u64| shards.iter().map(|m| f(m)).sum::<u64>();
    format!(
        "conns {} accepted {} closed {} (timeout {} slow {} proto {} overloaded {}) frames in {} out {} bytes in {} out {} enobufs {}",
        sum(|m| m.conns_open.get()),
        sum(|m| m.accepted.get()),
        sum(|m| m.closed_total()),
        sum(|m| {
            m.closed[CloseReason::HeartbeatTimeout as usize].get()
                + m.closed[CloseReason::FrameTimeout as usize].get()
        }),
        sum(|m| m.closed[CloseReason::SlowConsumer as usize].get()),
        sum(|m| {
            m.closed[CloseReason::FrameTooLarge as usize].get()
                + m.closed[CloseReason::UnknownType as usize].get()
                + m.closed[CloseReason::Malformed as usize].get()
        }),
        sum(|m| m.closed[CloseReason::Overloaded as usize].get()),
        sum(|m| m.frames_in.get()),
        sum(|m| m.frames_out.get()),
        sum(|m| m.bytes_in.get()),
        sum(|m| m.bytes_out.get()),
        sum(|m| m.enobufs_rearms.get()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn prometheus_text_lists_every_shard_and_reason() {
        let a = Arc::new(ShardMetrics::default());
        let b = Arc::new(ShardMetrics::default());
        a.accepted.add(3);
        b.closed_by(CloseReason::SlowConsumer);
        b.conns_open.set(7);
        let text = render_prometheus(&[a, b]);
        assert!(text.contains("ringroom_accepted_total{shard=\"0\"} 3\n"));
        assert!(text.contains("ringroom_connections_open{shard=\"1\"} 7\n"));
        assert!(text.contains("ringroom_closed_total{shard=\"1\",reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("# TYPE ringroom_closed_total counter\n"));
        for reason in CloseReason::ALL {
            assert!(text.contains(&format!("reason=\"{}\"", reason.label())));
        }
    }
}
