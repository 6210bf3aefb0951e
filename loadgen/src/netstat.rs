//! What the kernel counted while a run ran: the TcpExt counters of
//! `/proc/net/netstat` (machine-wide, this network namespace) that say a
//! machine limit was hit, each with the setting to look at; and, before a
//! large loopback run, whether `net.ipv4.tcp_mem` leaves room for it.
//!
//! Found the hard way: the c1m preset on this machine untuned brought
//! 864,994 of 1,000,000 connections up and lost 864,129 of them, the kernel
//! under TCP memory pressure for 164 s, and the run said only "connections
//! dropped". These counters name the cause.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The TcpExt counters, by name, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample(BTreeMap<String, u64>);

impl Sample {
    /// Reads `/proc/net/netstat`; `None` where it cannot be read.
    pub fn read() -> Option<Self> {
        std::fs::read_to_string("/proc/net/netstat")
            .ok()
            .map(|t| Self::parse(&t))
    }

    /// The TcpExt counters of a `/proc/net/netstat` text (a line of names,
    /// then a line of values).
    pub fn parse(text: &str) -> Self {
        let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return Self::default();
        };
        Self(
            names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
                .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// What was counted from `before` to this sample.
    pub fn since(&self, before: &Sample) -> Limits {
        let d = |name| self.get(name).saturating_sub(before.get(name));
        Limits {
            listen_drops: d("ListenDrops"),
            tcp_memory_pressure_ms: d("TCPMemoryPressuresChrono"),
            aborts_on_memory: d("TCPAbortOnMemory"),
            receive_queue_pruned: d("RcvPruned"),
            time_wait_overflows: d("TCPTimeWaitOverflow"),
        }
    }
}

/// Machine limits hit during a run, as the kernel counted them (anything of
/// the machine's that ran meanwhile is in them too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// SYNs or connections a listener dropped: its backlog was full.
    pub listen_drops: u64,
    /// How long TCP was under memory pressure (`tcp_mem`), milliseconds.
    pub tcp_memory_pressure_ms: u64,
    /// Connections reset because TCP had no memory for them.
    pub aborts_on_memory: u64,
    /// Packets dropped from receive queues to free memory.
    pub receive_queue_pruned: u64,
    /// Sockets that skipped TIME_WAIT because its table was full (harmless
    /// to the run; a port may be reused sooner).
    pub time_wait_overflows: u64,
}

impl Limits {
    /// Merging parts of a run: each counter the largest of the two (parts on
    /// one machine count the same events; parts on several machines are
    /// undercounted, each machine's own figures are in its part).
    pub fn widest(&mut self, other: &Limits) {
        self.listen_drops = self.listen_drops.max(other.listen_drops);
        self.tcp_memory_pressure_ms = self
            .tcp_memory_pressure_ms
            .max(other.tcp_memory_pressure_ms);
        self.aborts_on_memory = self.aborts_on_memory.max(other.aborts_on_memory);
        self.receive_queue_pruned = self.receive_queue_pruned.max(other.receive_queue_pruned);
        self.time_wait_overflows = self.time_wait_overflows.max(other.time_wait_overflows);
    }

    /// The summary table's row.
    pub fn describe(&self) -> String {
        format!(
            "| kernel (machine-wide): listen drops / TCP memory pressure / resets for memory / \
             receive queues pruned / TIME_WAIT overflows | {} / {:.1} s / {} / {} / {} |",
            self.listen_drops,
            self.tcp_memory_pressure_ms as f64 / 1000.0,
            self.aborts_on_memory,
            self.receive_queue_pruned,
            self.time_wait_overflows
        )
    }

    /// For a failed run: each limit the kernel says was hit, with the
    /// setting behind it (TIME_WAIT overflows harm no run: not named).
    pub fn hints(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.tcp_memory_pressure_ms > 0 || self.aborts_on_memory > 0 {
            out.push(format!(
                "TCP was under memory pressure for {:.1} s ({} connections reset for memory): \
                 net.ipv4.tcp_mem is too small for this run",
                self.tcp_memory_pressure_ms as f64 / 1000.0,
                self.aborts_on_memory
            ));
        }
        if self.receive_queue_pruned > 0 {
            out.push(format!(
                "{} packets pruned from receive queues (net.ipv4.tcp_mem, tcp_rmem)",
                self.receive_queue_pruned
            ));
        }
        if self.listen_drops > 0 {
            out.push(format!(
                "{} SYNs or connections dropped by full listen backlogs (net.core.somaxconn, \
                 net.ipv4.tcp_max_syn_backlog, the server's --backlog), or a slower --connect-rate",
                self.listen_drops
            ));
        }
        if !out.is_empty() {
            out.push(
                "tuning/limits.sh check --profile c1m shows the machine's limits; \
                 sudo tuning/limits.sh apply --profile c1m raises them"
                    .into(),
            );
        }
        out
    }
}

/// A page of memory: `tcp_mem` counts pages.
const PAGE: u64 = 4096;

/// What a socket is planned to need of `tcp_mem`: a page of buffer. The
/// c1m profile plans twice that and more; the 2,249 MiB of this machine's
/// default was too little for 2,000,000 sockets (1.1 KiB each).
const PER_SOCKET: u64 = PAGE;

/// A warning before a run of `sockets` TCP sockets on this machine (both
/// ends of a loopback run count) when `tcp_mem`'s hard limit (its third
/// field, in pages) is below a page a socket, or `None`.
pub fn tcp_mem_warning(tcp_mem: &str, sockets: u64) -> Option<String> {
    let max_pages: u64 = tcp_mem.split_whitespace().nth(2)?.parse().ok()?;
    let have = max_pages * PAGE;
    let want = sockets * PER_SOCKET;
    (have < want).then(|| {
        format!(
            "WARNING: net.ipv4.tcp_mem allows TCP {} MiB of buffers, less than a page for each \
             of this run's {sockets} sockets ({} MiB); an untuned 1,000,000-connection run here \
             stalled under TCP memory pressure and lost most of its connections. \
             tuning/limits.sh check --profile c1m; sudo tuning/limits.sh apply --profile c1m",
            have >> 20,
            want >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops RcvPruned \
        TCPAbortOnMemory TCPMemoryPressures TCPMemoryPressuresChrono TCPTimeWaitOverflow\n\
        TcpExt: 0 4 4 0 0 0 10 0\n\
        IpExt: InNoRoutes InTruncatedPkts\n\
        IpExt: 0 0\n";
    const AFTER: &str = "TcpExt: SyncookiesSent ListenOverflows ListenDrops RcvPruned \
        TCPAbortOnMemory TCPMemoryPressures TCPMemoryPressuresChrono TCPTimeWaitOverflow\n\
        TcpExt: 0 48 48 7 3 1 163686 671806\n\
        IpExt: InNoRoutes InTruncatedPkts\n\
        IpExt: 0 0\n";

    #[test]
    fn the_run_s_share_of_the_counters_and_what_they_mean() {
        let hit = Sample::parse(AFTER).since(&Sample::parse(BEFORE));
        assert_eq!(
            hit,
            Limits {
                listen_drops: 44,
                tcp_memory_pressure_ms: 163_676,
                aborts_on_memory: 3,
                receive_queue_pruned: 7,
                time_wait_overflows: 671_806,
            }
        );
        assert!(hit
            .describe()
            .ends_with("| 44 / 163.7 s / 3 / 7 / 671806 |"));
        let hints = hit.hints();
        assert_eq!(hints.len(), 4, "{hints:?}");
        assert!(hints[0].contains("163.7 s") && hints[0].contains("tcp_mem"));
        assert!(hints[2].contains("44 SYNs") && hints[2].contains("somaxconn"));
        assert!(hints[3].contains("apply --profile c1m"));
        // Nothing hit (TIME_WAIT overflows alone harm nothing): no hint.
        let quiet = Limits {
            time_wait_overflows: 5,
            ..Limits::default()
        };
        assert!(quiet.hints().is_empty());
    }

    #[test]
    fn missing_or_garbled_counters_count_as_none() {
        assert_eq!(Sample::parse(""), Sample::default());
        let odd = Sample::parse("TcpExt: ListenDrops Broken\nTcpExt: 9 x\n");
        assert_eq!(odd.since(&Sample::default()).listen_drops, 9);
        assert_eq!(Sample::parse("TcpExt: ListenDrops\n").0.len(), 0);
    }

    #[test]
    fn tcp_mem_is_checked_against_a_page_a_socket() {
        // This machine's default: 575,814 pages = 2,249 MiB.
        let default = "287907\t383877\t575814\n";
        let w = tcp_mem_warning(default, 2_000_000).unwrap();
        assert!(w.contains("2249 MiB") && w.contains("7812 MiB"), "{w}");
        assert_eq!(tcp_mem_warning(default, 200_000), None, "C100K fits");
        // The c1m profile's 16 GiB.
        assert_eq!(tcp_mem_warning("1 2 4194304", 2_000_000), None);
        assert_eq!(tcp_mem_warning("garbage", 2_000_000), None);
    }
}
