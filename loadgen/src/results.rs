//! A run's result folder: what `loadgen` writes, reads back and merges.
//!
//! A folder holds `summary.json` (settings, counts, CPU and memory, latency
//! percentiles), `machine.json` (what it ran on), and per latency metric an
//! interval log (`.hlog`) and a percentile distribution (`.hgrm`), plus
//! `plot.svg`. Everything derived (percentiles, rates, CPU per million) is
//! computed from the histograms and counts by [`RunRecord::finish`], so a
//! merged run is reported exactly as if one process had recorded it all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::hlog::Interval;
use crate::report;

/// Latency percentiles of one metric, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p99_9_ms: f64,
    /// 99.99th percentile.
    #[serde(default)]
    pub p99_99_ms: f64,
    /// Largest value.
    pub max_ms: f64,
    /// Values recorded.
    pub count: u64,
}

impl Percentiles {
    /// The percentiles of `h` (recorded in microseconds).
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / report::UNIT_RATIO;
        Self {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p99_9_ms: ms(0.999),
            p99_99_ms: ms(0.9999),
            max_ms: h.max() as f64 / report::UNIT_RATIO,
            count: h.len(),
        }
    }
}

/// The run's settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Server addresses.
    pub targets: Vec<String>,
    /// Whether loadgen started the server itself.
    pub embedded_server: bool,
    /// Connections asked for.
    pub conns: u64,
    /// Connections opened per second.
    pub connect_rate: f64,
    /// Seconds the connections were held.
    pub duration_s: u64,
    /// `--source`.
    pub source: String,
    /// `--scenario`.
    pub scenario: String,
    /// Whether connections pinged at the heartbeat interval only.
    pub idle: bool,
    /// PINGs per second per connection (ping scenario).
    pub ping_rate: f64,
    /// Heartbeat asked for (0: the server's).
    pub heartbeat_ms: u32,
    /// Worker threads.
    pub workers: usize,
    /// Wire protocol spoken: ringroom, redis, nats or mqtt.
    #[serde(default = "ringroom")]
    pub protocol: String,
    /// The workers' I/O engine: uring or epoll (results from before the
    /// epoll engine are io_uring's).
    #[serde(default = "uring")]
    pub engine: String,
}

fn ringroom() -> String {
    "ringroom".into()
}

fn uring() -> String {
    "uring".into()
}

/// What the run's machine was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    /// Kernel release.
    pub kernel: String,
    /// Cores available to the load generator.
    pub cores: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// Memory, KiB.
    pub memory_kib: Option<u64>,
    /// Soft RLIMIT_NOFILE.
    pub rlimit_nofile: Option<u64>,
    /// net.ipv4.ip_local_port_range.
    pub ip_local_port_range: Option<(u16, u16)>,
}

impl Machine {
    /// This machine, read from /proc.
    pub fn this() -> Self {
        let proc_field = |file: &str, key: &str| -> Option<String> {
            let text = std::fs::read_to_string(file).ok()?;
            let line = text.lines().find(|l| l.starts_with(key))?;
            Some(line.split_once(':')?.1.trim().to_string())
        };
        Self {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: proc_field("/proc/cpuinfo", "model name"),
            memory_kib: proc_field("/proc/meminfo", "MemTotal")
                .and_then(|v| v.split_whitespace().next()?.parse().ok()),
            rlimit_nofile: rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .ok(),
            ip_local_port_range: crate::sources::local_port_range().ok(),
        }
    }
}

/// Adds `other` to `sum` second by second (the longer decides the length).
pub fn add_per_second(sum: &mut Vec<u64>, other: &[u64]) {
    for (k, n) in other.iter().enumerate() {
        match sum.get_mut(k) {
            Some(m) => *m += n,
            None => sum.push(*n),
        }
    }
}

/// Counters of the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Connections that completed their handshake (WELCOME, for peers theirs).
    pub connected: u64,
    /// Connections lost after it (peer closed or socket error).
    pub dropped: u64,
    /// Connects that failed before it, by errno (0: closed by the peer);
    /// summary.json writes the numbers as its keys.
    pub failed_by_errno: BTreeMap<i32, u64>,
    /// ERROR or GOAWAY frames received, by code.
    pub errors_by_code: BTreeMap<u16, u64>,
    /// PINGs sent.
    pub pings: u64,
    /// PONGs received.
    pub pongs: u64,
    /// Connections given up because the server said nothing for its idle timeout.
    pub dead_server: u64,
    /// Reconnects started (after a drop or a failed connect).
    pub reconnects: u64,
    /// Connects still under way when the run closed them: neither up nor failed.
    pub abandoned: u64,
    /// JOINED received.
    pub joined: u64,
    /// PUBLISHes sent.
    pub published: u64,
    /// MESSAGEs that the publishes sent should bring (members but the publisher).
    pub expected: u64,
    /// MESSAGEs received.
    pub delivered: u64,
    /// ERROR GAP notices received (a ringroom cluster told of messages
    /// between nodes that may have been lost).
    pub gaps: u64,
    /// Connections the churn closed (`--scenario churn`).
    pub churn_closed: u64,
    /// New connections it opened in their place.
    pub churn_opened: u64,
    /// Members that stayed in their room for several publish periods and
    /// got no message of it.
    pub silent_members: u64,
    /// Messages of a room the receiving connection was not in.
    pub foreign: u64,
    /// Connects that took over a second to WELCOME (a SYN retransmitted).
    pub slow_connects: u64,
    /// Times the connect ramp slowed down (failed or slow connects).
    pub ramp_slowdowns: u64,
}

impl Counts {
    /// Adds another worker's (or load generator's) counts.
    pub fn add(&mut self, other: &Counts) {
        self.connected += other.connected;
        self.dropped += other.dropped;
        self.pings += other.pings;
        self.pongs += other.pongs;
        self.dead_server += other.dead_server;
        self.reconnects += other.reconnects;
        self.abandoned += other.abandoned;
        self.joined += other.joined;
        self.published += other.published;
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.gaps += other.gaps;
        self.churn_closed += other.churn_closed;
        self.churn_opened += other.churn_opened;
        self.silent_members += other.silent_members;
        self.foreign += other.foreign;
        self.slow_connects += other.slow_connects;
        self.ramp_slowdowns += other.ramp_slowdowns;
        for (k, v) in &other.failed_by_errno {
            *self.failed_by_errno.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors_by_code {
            *self.errors_by_code.entry(*k).or_default() += v;
        }
    }
}

/// Rates over the hold time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rates {
    /// PINGs sent per second.
    pub pings_per_s: f64,
    /// PONGs received per second.
    pub pongs_per_s: f64,
    /// Room messages delivered per second.
    #[serde(default)]
    pub deliveries_per_s: f64,
}

/// The server's CPU time and memory over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Server {
    /// User plus system CPU seconds.
    pub cpu_s: f64,
    /// RSS at the end, bytes.
    pub rss_bytes: u64,
    /// Peak RSS minus RSS at the start, bytes.
    pub peak_rss_growth_bytes: u64,
    /// The same, per connection.
    pub peak_rss_growth_bytes_per_connection: u64,
    /// CPU seconds per million PONGs.
    pub cpu_s_per_million_pongs: Option<f64>,
    /// CPU seconds per million room deliveries.
    pub cpu_s_per_million_deliveries: Option<f64>,
}

/// Every latency metric a run may record, by file stem: `connect`,
/// `ping-rtt`, `delivery`, and in a rooms run on several targets (the nodes
/// of a cluster) `delivery` split by whether publisher and receiver were on
/// the same one.
pub const METRICS: [&str; 5] = [
    "connect",
    "ping-rtt",
    "delivery",
    "delivery-same-node",
    "delivery-cross-node",
];

/// The latency metrics' percentiles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// `connect()` to the end of the handshake.
    pub connect: Percentiles,
    /// PING round trip from its planned send time, over the whole run.
    pub ping_rtt: Percentiles,
    /// The same over the hold only: the per-second intervals that start a
    /// second after the last connect was due (the steady state, ramp left out).
    pub ping_rtt_hold: Option<Percentiles>,
    /// Room message delivery from its planned publish time.
    pub delivery: Option<Percentiles>,
    /// The same, publisher and receiver on the same target (several targets only).
    pub delivery_same_node: Option<Percentiles>,
    /// The same, on different targets (several targets only).
    pub delivery_cross_node: Option<Percentiles>,
}

/// The rooms scenario's settings and counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rooms {
    /// Rooms.
    pub rooms: u64,
    /// Publishes per second per room.
    pub publish_rate: f64,
    /// Body bytes.
    pub payload: usize,
    /// PUBLISHes sent.
    pub published: u64,
    /// Deliveries those should bring.
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Out of order.
    pub late: u64,
    /// Received twice.
    pub duplicates: u64,
    /// Never received, and never told of: lost silently.
    pub missing: u64,
    /// Never received, but the receiver got ERROR GAP for the room before
    /// the next one (a cluster's loss between nodes, reported).
    pub reported: u64,
    /// The target every publisher was on (`--publishers-on`), if pinned.
    pub publishers_on: Option<usize>,
}

/// `summary.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// Settings.
    pub config: Config,
    /// What it ran on (also in `machine.json`).
    pub machine: Machine,
    /// Counters.
    pub counts: Counts,
    /// Rates over the hold time.
    pub rates: Rates,
    /// The load generator's own CPU seconds.
    pub loadgen_cpu_s: f64,
    /// The same per million PONGs.
    pub loadgen_cpu_s_per_million_pongs: Option<f64>,
    /// Connections up at the end of each second of the run (the timeline's).
    pub up_per_second: Vec<u64>,
    /// `connect()` calls in each second (the ramp's and the reconnects').
    pub connects_per_second: Vec<u64>,
    /// The lowest rate the connect ramp slowed down to (the workers' lowest
    /// added up), if it slowed down.
    pub ramp_lowest_rate_per_s: Option<f64>,
    /// The commit loadgen was built from (`-dirty`: with changes not
    /// committed), if it was built in a git checkout.
    pub commit: Option<String>,
    /// Seconds from the run's start until every connection asked for was up
    /// (or the last one that came up did); none in results older than it.
    pub ramp_s: Option<f64>,
    /// The load generator's resident memory at the end, in bytes.
    pub loadgen_rss_bytes: u64,
    /// Its peak RSS growth over the run, in bytes.
    pub loadgen_peak_rss_growth_bytes: u64,
    /// That growth per connection up.
    pub loadgen_peak_rss_growth_bytes_per_connection: u64,
    /// The server's CPU and memory, when its pid was known.
    pub server: Option<Server>,
    /// Latency percentiles.
    pub latency: Latency,
    /// The rooms scenario's figures.
    pub rooms: Option<Rooms>,
    /// Load-generator processes whose results this is (1 unless merged).
    #[serde(default = "one")]
    pub sources: u32,
    /// The folders merged into this one.
    #[serde(default)]
    pub merged_from: Vec<String>,
    /// The reconnect storm's figures, in a `--storm` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm: Option<crate::storm::Report>,
    /// The churn's figures, in `--scenario churn`.
    pub churn: Option<crate::churn::Report>,
    /// Machine limits the kernel counted as hit during the run (none in
    /// results older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<crate::netstat::Limits>,
}

fn one() -> u32 {
    1
}

/// One latency metric's interval log.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// File stem: one of [`METRICS`].
    pub name: String,
    /// When the log starts (the header's StartTime).
    pub start_time: SystemTime,
    /// Its intervals, relative to `start_time`.
    pub intervals: Vec<Interval>,
}

impl Metric {
    /// All intervals added up.
    pub fn total(&self) -> Histogram<u64> {
        self.total_from(Duration::ZERO)
    }

    /// The intervals that start at `from` or later, added up.
    pub fn total_from(&self, from: Duration) -> Histogram<u64> {
        let mut t = histogram();
        for i in self.intervals.iter().filter(|i| i.start >= from) {
            t.add(&i.histogram).expect("same bounds");
        }
        t
    }
}

/// `20261201T200641Z`: RFC 3339 in UTC without its separators, so that result
/// folders named with it sort by time.
pub fn utc_stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
}

/// The histogram every latency is recorded in: 1 us .. 1 h, 3 digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// For tests: a [`histogram`] holding `values`.
#[cfg(test)]
pub(crate) fn histogram_of(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
    let mut h = histogram();
    for v in values {
        h.record(v).expect("within the bounds");
    }
    h
}

/// A result folder in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// `summary.json`.
    pub summary: Summary,
    /// The latency metrics, in file order.
    pub metrics: Vec<Metric>,
}

fn per_million(cpu_s: f64, events: u64) -> Option<f64> {
    (events > 0).then(|| cpu_s * 1e6 / events as f64)
}

impl RunRecord {
    /// The metric called `name`.
    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Recomputes every derived figure from the histograms and counts.
    pub fn finish(&mut self) {
        let s = &mut self.summary;
        let secs = s.config.duration_s.max(1) as f64;
        let delivered = s.rooms.as_ref().map_or(0, |r| r.delivered);
        s.rates = Rates {
            pings_per_s: s.counts.pings as f64 / secs,
            pongs_per_s: s.counts.pongs as f64 / secs,
            deliveries_per_s: delivered as f64 / secs,
        };
        s.loadgen_cpu_s_per_million_pongs = per_million(s.loadgen_cpu_s, s.counts.pongs);
        s.loadgen_peak_rss_growth_bytes_per_connection =
            s.loadgen_peak_rss_growth_bytes / s.counts.connected.max(1);
        if let Some(server) = s.server.as_mut() {
            server.peak_rss_growth_bytes_per_connection =
                server.peak_rss_growth_bytes / s.counts.connected.max(1);
            server.cpu_s_per_million_pongs = per_million(server.cpu_s, s.counts.pongs);
            server.cpu_s_per_million_deliveries = per_million(server.cpu_s, delivered);
        }
        let of = |name: &str| {
            self.metrics
                .iter()
                .find(|m| m.name == name)
                .map(|m| Percentiles::of(&m.total()))
        };
        let hold = self.hold_start();
        let ping_rtt_hold = self
            .metric("ping-rtt")
            .map(|m| m.total_from(hold))
            .filter(|h| !h.is_empty())
            .map(|h| Percentiles::of(&h));
        self.summary.latency = Latency {
            connect: of("connect").unwrap_or_default(),
            ping_rtt: of("ping-rtt").unwrap_or_default(),
            ping_rtt_hold,
            delivery: of("delivery"),
            delivery_same_node: of("delivery-same-node"),
            delivery_cross_node: of("delivery-cross-node"),
        };
    }

    /// When the hold's steady state starts, since the run's start: one
    /// second after the last connect completed (in older results: after it
    /// was due), on a whole second.
    pub fn hold_start(&self) -> Duration {
        let ramp = self.summary.ramp_s.unwrap_or_else(|| self.planned_ramp_s());
        Duration::from_secs(ramp.ceil() as u64 + 1)
    }

    /// The ramp's planned length: connections / connect rate, in seconds.
    pub fn planned_ramp_s(&self) -> f64 {
        let c = &self.summary.config;
        if c.connect_rate > 0.0 {
            c.conns as f64 / c.connect_rate
        } else {
            0.0
        }
    }

    /// Whether the ramp took notably longer than planned (half a second and
    /// a tenth more): the connects ran late, and the hold started later.
    pub fn ramp_ran_late(&self) -> bool {
        let planned = self.planned_ramp_s();
        self.summary
            .ramp_s
            .is_some_and(|took| took > planned * 1.1 + 0.5)
    }

    /// Writes the folder (creating it): summary.json, machine.json, a
    /// .hgrm and .hlog per metric, and plot.svg.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let totals: Vec<(String, Histogram<u64>)> = self
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.total()))
            .collect();
        for (m, (_, total)) in self.metrics.iter().zip(&totals) {
            report::write_hgrm(
                &mut std::fs::File::create(dir.join(format!("{}.hgrm", m.name)))?,
                total,
            )?;
            crate::hlog::write(
                &mut std::fs::File::create(dir.join(format!("{}.hlog", m.name)))?,
                m.start_time,
                &m.intervals,
            )?;
        }
        let curves: Vec<(&str, &Histogram<u64>)> =
            totals.iter().map(|(n, h)| (n.as_str(), h)).collect();
        let (title, subtitle) = self.titles();
        std::fs::write(
            dir.join("plot.svg"),
            crate::plot::percentiles_svg(&title, &subtitle, &curves),
        )?;
        let steady = self.metric("ping-rtt").or_else(|| self.metric("delivery"));
        if let Some(metric) = steady {
            let seconds = self.seconds(metric);
            let hold = self.hold_start().as_secs_f64();
            std::fs::write(
                dir.join("timeline.svg"),
                crate::plot::timeline_svg(
                    &title,
                    &subtitle,
                    &metric.name,
                    &seconds,
                    hold,
                    &self.marks(),
                ),
            )?;
        }
        std::fs::write(dir.join("machine.json"), pretty(&self.summary.machine))?;
        std::fs::write(dir.join("summary.json"), pretty(&self.summary))
    }

    /// A plot's title and subtitle: what ran, and when and from which commit.
    pub fn titles(&self) -> (String, String) {
        let s = &self.summary;
        let c = &s.config;
        let what = if c.idle {
            "heartbeats".to_string()
        } else {
            format!("{}/s PINGs each", c.ping_rate)
        };
        let rooms = s.rooms.as_ref().map_or(String::new(), |r| {
            format!(", {} rooms x {}/s publishes", r.rooms, r.publish_rate)
        });
        let title = format!(
            "{} ({}): {} connections, {what}{rooms}",
            c.scenario,
            c.protocol,
            crate::index::thousands(c.conns)
        );
        let when = self
            .metrics
            .first()
            .map(|m| humantime::format_rfc3339_seconds(m.start_time).to_string())
            .unwrap_or_default();
        let subtitle = format!(
            "connect {}/s, hold {} s; {when}; commit {}; {} cores, Linux {}",
            c.connect_rate,
            c.duration_s,
            s.commit.as_deref().unwrap_or("unknown"),
            s.machine.cores,
            s.machine.kernel
        );
        (title, subtitle)
    }

    /// `metric`'s intervals as the timeline's seconds, with the connections
    /// up at the end of each (none in results older than that count).
    pub fn seconds(&self, metric: &Metric) -> Vec<crate::plot::Second> {
        metric
            .intervals
            .iter()
            .enumerate()
            .map(|(k, i)| {
                let at = |v: &[u64]| v.get(k).copied().unwrap_or(0);
                crate::plot::Second {
                    at: i.start.as_secs_f64(),
                    latency: i.histogram.clone(),
                    up: at(&self.summary.up_per_second),
                    connects: at(&self.summary.connects_per_second),
                }
            })
            .collect()
    }

    /// What the timeline marks: a storm's signal, the old server's exit and
    /// the new one's start; the churn's window.
    pub fn marks(&self) -> Vec<crate::plot::Mark> {
        let mark = |at: f64, label: String| crate::plot::Mark { at, label };
        let mut marks = Vec::new();
        if let Some(st) = &self.summary.storm {
            marks.push(mark(st.at_s, format!("SIG{}", st.signal)));
            if let Some(t) = st.exited_at_s.filter(|&t| t - st.at_s >= 1.0) {
                marks.push(mark(t, "server exited".into()));
            }
            if let Some(t) = st.restarted_at_s {
                marks.push(mark(t, "restarted".into()));
            }
        }
        if let Some(c) = &self.summary.churn {
            marks.push(mark(c.from_s, format!("churn {} %/s", c.percent_per_s)));
        }
        marks
    }

    /// Reads a folder `write` (or an older loadgen) wrote.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join("summary.json");
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let summary: Summary =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut metrics = Vec::new();
        for name in METRICS {
            let path = dir.join(format!("{name}.hlog"));
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let (start_time, intervals) =
                crate::hlog::read(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            metrics.push(Metric {
                name: name.into(),
                start_time,
                intervals,
            });
        }
        Ok(Self { summary, metrics })
    }
}

fn pretty<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("plain data serializes") + "\n"
}

/// One line on a merged result: what came up and how fast it was answered.
pub fn describe_merged(merged: &RunRecord) -> String {
    let s = &merged.summary;
    format!(
        "merged {} sources: {} of {} connections up, {} PINGs / {} PONGs, ping RTT p99 {:.3} ms{}",
        s.sources,
        s.counts.connected,
        s.config.conns,
        s.counts.pings,
        s.counts.pongs,
        s.latency.ping_rtt.p99_ms,
        s.latency
            .delivery
            .as_ref()
            .map_or_else(String::new, |d| format!(
                ", delivery p99 {:.3} ms",
                d.p99_ms
            ))
    )
}

/// Adds up runs of several load-generator processes that drove one server at
/// the same time: counts and histograms add (intervals aligned on the wall
/// clock), connections asked for and rates add. The server was the same one,
/// so its CPU and memory are the widest sample (the largest CPU time), not a
/// sum; per-connection and per-million figures are recomputed from the totals.
pub fn merge(runs: &[RunRecord], names: &[String]) -> Result<RunRecord, String> {
    let first = runs.first().ok_or("nothing to merge")?;
    let mut s = first.summary.clone();
    for r in &runs[1..] {
        let o = &r.summary;
        if o.config.scenario != s.config.scenario || o.config.protocol != s.config.protocol {
            return Err(format!(
                "runs of different scenarios: {}/{} and {}/{}",
                s.config.scenario, s.config.protocol, o.config.scenario, o.config.protocol
            ));
        }
        s.counts.add(&o.counts);
        s.config.conns += o.config.conns;
        s.config.connect_rate += o.config.connect_rate;
        s.config.workers += o.config.workers;
        s.config.duration_s = s.config.duration_s.max(o.config.duration_s);
        for t in &o.config.targets {
            if !s.config.targets.contains(t) {
                s.config.targets.push(t.clone());
            }
        }
        if !s.config.source.split(',').any(|x| x == o.config.source) {
            s.config.source = format!("{},{}", s.config.source, o.config.source);
        }
        s.loadgen_cpu_s += o.loadgen_cpu_s;
        // Connections up and connects per second, second by second of each run.
        add_per_second(&mut s.up_per_second, &o.up_per_second);
        add_per_second(&mut s.connects_per_second, &o.connects_per_second);
        s.ramp_lowest_rate_per_s = match (s.ramp_lowest_rate_per_s, o.ramp_lowest_rate_per_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        s.kernel = match (s.kernel.take(), &o.kernel) {
            (Some(mut a), Some(b)) => {
                a.widest(b);
                Some(a)
            }
            (a, b) => a.or_else(|| b.clone()),
        };
        // Separate processes: their memory adds up.
        s.loadgen_rss_bytes += o.loadgen_rss_bytes;
        s.loadgen_peak_rss_growth_bytes += o.loadgen_peak_rss_growth_bytes;
        s.server = match (s.server.take(), o.server.clone()) {
            (Some(a), Some(b)) => Some(if b.cpu_s > a.cpu_s { b } else { a }),
            (a, b) => a.or(b),
        };
        s.rooms = match (s.rooms.take(), o.rooms.clone()) {
            (Some(mut a), Some(b)) => {
                a.published += b.published;
                a.expected += b.expected;
                a.delivered += b.delivered;
                a.late += b.late;
                a.duplicates += b.duplicates;
                a.missing += b.missing;
                a.reported += b.reported;
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }
    s.sources = runs.iter().map(|r| r.summary.sources).sum();
    s.merged_from = names.to_vec();
    let mut metrics: Vec<Metric> = Vec::new();
    for name in METRICS {
        let parts: Vec<&Metric> = runs.iter().filter_map(|r| r.metric(name)).collect();
        if !parts.is_empty() {
            metrics.push(merge_metric(name, &parts)?);
        }
    }
    let mut merged = RunRecord {
        summary: s,
        metrics,
    };
    merged.finish();
    Ok(merged)
}

/// Adds interval logs on one clock: the merged log starts at the earliest
/// start, and each interval lands in the slot of the merged log (of the first
/// log's interval length) nearest its own wall-clock start.
fn merge_metric(name: &str, parts: &[&Metric]) -> Result<Metric, String> {
    let start_time = parts.iter().map(|m| m.start_time).min().expect("non-empty");
    let length = parts
        .iter()
        .flat_map(|m| m.intervals.first())
        .map(|i| i.length)
        .next()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(1));
    let mut slots: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    for m in parts {
        let offset = m.start_time.duration_since(start_time).unwrap_or_default();
        for i in &m.intervals {
            let at = (offset + i.start).as_secs_f64() / length.as_secs_f64();
            let slot = at.round() as u64;
            slots
                .entry(slot)
                .or_insert_with(histogram)
                .add(&i.histogram)
                .map_err(|e| format!("{name}: {e:?}"))?;
        }
    }
    Ok(Metric {
        name: name.into(),
        start_time,
        intervals: slots
            .into_iter()
            .map(|(slot, histogram)| Interval {
                start: length * slot as u32,
                length,
                histogram,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "loadgen-results-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A run of `conns` connections whose values come from `values`: one
    /// (interval, connect, rtt, delivery) per connection.
    fn run(start: SystemTime, values: &[(u32, u64, u64, u64)], conns: u64) -> RunRecord {
        let mut intervals: Vec<Interval> = (0..5)
            .map(|i| Interval {
                start: Duration::from_secs(i),
                length: Duration::from_secs(1),
                histogram: histogram(),
            })
            .collect();
        let (mut connect, mut delivery) = (histogram(), histogram());
        for &(i, c, r, d) in values {
            intervals[i as usize].histogram.record(r).unwrap();
            connect.record(c).unwrap();
            delivery.record(d).unwrap();
        }
        let whole = |name: &str, h: Histogram<u64>| Metric {
            name: name.into(),
            start_time: start,
            intervals: vec![Interval {
                start: Duration::ZERO,
                length: Duration::from_secs(5),
                histogram: h,
            }],
        };
        let n = values.len() as u64;
        let mut r = RunRecord {
            summary: Summary {
                config: Config {
                    conns,
                    duration_s: 5,
                    scenario: "rooms".into(),
                    protocol: "ringroom".into(),
                    source: "127.0.0.2".into(),
                    workers: 1,
                    ..Default::default()
                },
                counts: Counts {
                    connected: conns,
                    pings: n,
                    pongs: n,
                    failed_by_errno: [(111, n % 3)].into(),
                    ..Default::default()
                },
                loadgen_cpu_s: n as f64 / 1000.0,
                server: Some(Server {
                    cpu_s: 12.5,
                    rss_bytes: 1 << 20,
                    peak_rss_growth_bytes: 500_000,
                    ..Default::default()
                }),
                rooms: Some(Rooms {
                    published: n / 10,
                    expected: n,
                    delivered: n,
                    ..Default::default()
                }),
                sources: 1,
                ..Default::default()
            },
            metrics: vec![
                whole("connect", connect),
                Metric {
                    name: "ping-rtt".into(),
                    start_time: start,
                    intervals,
                },
                whole("delivery", delivery),
            ],
        };
        r.finish();
        r
    }

    #[test]
    fn merging_two_halves_gives_the_whole() {
        let mut rng = fastrand::Rng::with_seed(7);
        let values: Vec<(u32, u64, u64, u64)> = (0..20_000)
            .map(|_| {
                (
                    rng.u32(0..5),
                    rng.u64(100..50_000),
                    rng.u64(50..2_000_000),
                    rng.u64(200..90_000),
                )
            })
            .collect();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (a, b) = values.split_at(7_000);
        let dirs = [temp_dir("whole"), temp_dir("a"), temp_dir("b")];
        run(start, &values, 1000).write(&dirs[0]).unwrap();
        // The second half started 200 ms later: its intervals still land on
        // the whole's (nearest slot on the wall clock).
        let late = start + Duration::from_millis(200);
        run(start, a, 400).write(&dirs[1]).unwrap();
        run(late, b, 600).write(&dirs[2]).unwrap();
        let whole = RunRecord::read(&dirs[0]).unwrap();
        let halves = [
            RunRecord::read(&dirs[1]).unwrap(),
            RunRecord::read(&dirs[2]).unwrap(),
        ];
        let merged = merge(&halves, &["a".into(), "b".into()]).unwrap();
        for name in ["connect", "ping-rtt", "delivery"] {
            let (m, w) = (merged.metric(name).unwrap(), whole.metric(name).unwrap());
            assert_eq!(m.intervals.len(), w.intervals.len(), "{name}");
            for (mi, wi) in m.intervals.iter().zip(&w.intervals) {
                assert_eq!(mi.start, wi.start, "{name}");
                assert_eq!(mi.histogram, wi.histogram, "{name} at {:?}", wi.start);
            }
        }
        let (m, w) = (&merged.summary, &whole.summary);
        assert_eq!(m.latency, w.latency);
        assert_eq!(m.counts.pongs, w.counts.pongs);
        assert_eq!(m.counts.connected, w.counts.connected);
        assert_eq!(m.config.conns, w.config.conns);
        assert_eq!(
            m.counts.failed_by_errno[&111],
            (7_000 % 3) + (13_000 % 3),
            "errno counters add"
        );
        assert_eq!(m.rooms.as_ref().unwrap().delivered, 20_000);
        assert_eq!(m.rates, w.rates);
        assert_eq!(
            m.server, w.server,
            "one server: not added, per-connection recomputed"
        );
        assert!((m.loadgen_cpu_s - w.loadgen_cpu_s).abs() < 1e-9);
        assert_eq!((m.sources, w.sources), (2, 1));
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn folder_stamps_are_utc_and_sort_by_time() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_154_538);
        assert_eq!(utc_stamp(at), "20261201T194858Z");
        assert!(utc_stamp(at) < utc_stamp(at + Duration::from_secs(1)));
    }

    #[test]
    fn hold_percentiles_leave_the_ramp_out() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Interval 0 is slow (the ramp); 2,000 connections at 1,000/s: the
        // hold starts at 3 s.
        let values: Vec<(u32, u64, u64, u64)> = (0..5)
            .flat_map(|i| (0..100).map(move |_| (i, 1, if i == 0 { 900_000 } else { 1_000 }, 1)))
            .collect();
        let mut r = run(start, &values, 2000);
        r.summary.config.connect_rate = 1000.0;
        r.finish();
        assert_eq!(r.hold_start(), Duration::from_secs(3), "planned: 2 s + 1");
        let hold = r.summary.latency.ping_rtt_hold.clone().unwrap();
        assert_eq!(hold.count, 200, "intervals 3 and 4");
        assert!(hold.max_ms < 1.1, "{hold:?}");
        assert!(
            r.summary.latency.ping_rtt.max_ms > 899.0,
            "the whole run keeps the ramp"
        );
        assert!(!r.ramp_ran_late());
        // The connects actually finished at 2.9 s: the hold starts at 4 s.
        r.summary.ramp_s = Some(2.9);
        r.finish();
        assert_eq!(r.hold_start(), Duration::from_secs(4));
        assert_eq!(r.summary.latency.ping_rtt_hold.clone().unwrap().count, 100);
        assert!(r.ramp_ran_late(), "2.9 s against 2.0 planned");
    }

    #[test]
    fn merge_refuses_different_scenarios() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let a = run(start, &[(0, 1, 1, 1)], 1);
        let mut b = a.clone();
        b.summary.config.scenario = "ping".into();
        assert!(merge(&[a, b], &[])
            .unwrap_err()
            .contains("different scenarios"));
    }

    #[test]
    fn summary_and_machine_files_are_written_and_read_back() {
        let dir = temp_dir("roundtrip");
        let mut r = run(
            UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            &[(1, 5, 6, 7)],
            1,
        );
        r.summary.machine = Machine::this();
        r.write(&dir).unwrap();
        let machine: Machine =
            serde_json::from_slice(&std::fs::read(dir.join("machine.json")).unwrap()).unwrap();
        assert_eq!(machine, r.summary.machine);
        assert!(machine.cores > 0);
        assert_eq!(RunRecord::read(&dir).unwrap(), r);
        let _ = std::fs::remove_dir_all(dir);
    }
}
