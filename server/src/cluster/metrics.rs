//! The cluster link's counters, written by its thread only, read by the
//! metrics endpoint.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::Counter;

/// Upper bounds of the cross-node latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// What the cluster link counts.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    /// 1 while the link to NATS is up.
    pub link_up: Counter,
    /// Handshakes completed (the first connection and every reconnect).
    pub connects: Counter,
    /// Links that were up and dropped.
    pub disconnects: Counter,
    /// Connection attempts that failed before the handshake completed.
    pub connect_failures: Counter,
    /// Rooms subscribed now.
    pub subscriptions: Counter,
    /// Messages and bytes published to the cluster.
    pub messages_out: Counter,
    /// Payload bytes published.
    pub bytes_out: Counter,
    /// Local messages not sent because the link was down.
    pub dropped_link_down: Counter,
    /// Messages and bytes received from the cluster (all subjects).
    pub messages_in: Counter,
    /// Payload bytes received.
    pub bytes_in: Counter,
    /// SYNCs sent and received.
    pub syncs_out: Counter,
    /// SYNCs received.
    pub syncs_in: Counter,
    /// Gaps found (each told to one room's members).
    pub gaps: Counter,
    /// Messages known to be missing in those gaps (where the count is known).
    pub gap_messages: Counter,
    /// Duplicates or messages of an epoch already over, dropped.
    pub stale: Counter,
    /// Payloads that were not a ringroom envelope.
    pub foreign: Counter,
    /// Remote messages too large for this node's --max-payload.
    pub too_large: Counter,
    /// `-ERR` from the NATS server, and those that were a slow-consumer cut.
    pub server_errors: Counter,
    /// `-ERR` texts that said slow consumer.
    pub slow_consumer: Counter,
    /// FLOW pauses and resumes sent, and received.
    pub flow_out: Counter,
    /// FLOW messages received.
    pub flow_in: Counter,
    /// Cross-node delivery latency (origin's clock to this node's link).
    latency: [Counter; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: Counter,
    latency_count: Counter,
}

/// The wall clock in ns since the Unix epoch (envelopes carry it).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl ClusterMetrics {
    /// Records the latency of a message stamped `sent_at_ns` at its origin.
    /// A stamp from the future (clocks apart) counts as 0.
    pub fn observe_latency(&self, sent_at_ns: u64) {
        let us = unix_ns().saturating_sub(sent_at_ns) / 1000;
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency[i].inc();
        self.latency_sum_us.add(us);
        self.latency_count.inc();
    }

    /// Prometheus text for the cluster, labelled with the node id.
    pub fn render(&self, node: u16, out: &mut String) {
        let simple: [(&str, &str, &str, &Counter); 21] = [
            ("ringroom_cluster_link_up", "gauge", "1 while the link to NATS is up.", &self.link_up),
            ("ringroom_cluster_connects_total", "counter", "Links to NATS established (the first and every reconnect).", &self.connects),
            ("ringroom_cluster_disconnects_total", "counter", "Links to NATS that were up and dropped.", &self.disconnects),
            ("ringroom_cluster_connect_failures_total", "counter", "Attempts to reach a NATS server that failed before the handshake.", &self.connect_failures),
            ("ringroom_cluster_subscriptions", "gauge", "Rooms this node is subscribed to.", &self.subscriptions),
            ("ringroom_cluster_messages_out_total", "counter", "Messages published to the cluster.", &self.messages_out),
            ("ringroom_cluster_bytes_out_total", "counter", "Payload bytes published to the cluster.", &self.bytes_out),
            ("ringroom_cluster_dropped_link_down_total", "counter", "Local messages not published because the link was down (the other nodes are told by SYNC).", &self.dropped_link_down),
            ("ringroom_cluster_messages_in_total", "counter", "Messages received from NATS.", &self.messages_in),
            ("ringroom_cluster_bytes_in_total", "counter", "Payload bytes received from NATS.", &self.bytes_in),
            ("ringroom_cluster_syncs_out_total", "counter", "SYNCs published.", &self.syncs_out),
            ("ringroom_cluster_syncs_in_total", "counter", "SYNCs received.", &self.syncs_in),
            ("ringroom_cluster_gaps_total", "counter", "Gaps found and told to a room's members as ERROR GAP.", &self.gaps),
            ("ringroom_cluster_gap_messages_total", "counter", "Messages known to be missing in those gaps (where the count is known).", &self.gap_messages),
            ("ringroom_cluster_stale_total", "counter", "Duplicates, or messages of an epoch already over, dropped.", &self.stale),
            ("ringroom_cluster_foreign_total", "counter", "Payloads on the cluster's subjects that were not ringroom envelopes.", &self.foreign),
            ("ringroom_cluster_too_large_total", "counter", "Remote messages above this node's --max-payload (dropped, told as a gap).", &self.too_large),
            ("ringroom_cluster_server_errors_total", "counter", "-ERR lines from the NATS server.", &self.server_errors),
            ("ringroom_cluster_slow_consumer_total", "counter", "-ERR lines that were a slow-consumer cut of this node's link.", &self.slow_consumer),
            ("ringroom_cluster_flow_out_total", "counter", "FLOW pauses and resumes sent to publishers' nodes.", &self.flow_out),
            ("ringroom_cluster_flow_in_total", "counter", "FLOW pauses and resumes received for this node's publishers.", &self.flow_in),
        ];
        for (name, kind, help, c) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {}",
                c.get()
            );
        }
        let name = "ringroom_cluster_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Cross-node delivery latency: the origin's clock at publish to this node's link at receipt.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, c) in self.latency.iter().enumerate() {
            cumulative += c.get();
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
            let _ = writeln!(
                out,
                "{name}_bucket{{node=\"{node}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{node=\"{node}\"}} {}\n{name}_count{{node=\"{node}\"}} {}",
            self.latency_sum_us.get() as f64 / 1e6,
            self.latency_count.get()
        );
    }
}
