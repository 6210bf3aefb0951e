//! What a run prints and writes: the summary table, the live progress line,
//! the result folder's contents.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::EngineKind;
use hdrhistogram::Histogram;

use crate::cli::{Args, Plan, Scenario};
use crate::client::Counts;
use crate::results::RunRecord;
use crate::worker::{Progress, INTERVAL};
use crate::{churn, errnos, netstat, procstat, storm};

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
pub(super) fn print_summary(
    args: &Args,
    plan: &Plan,
    (workers, kind): (usize, EngineKind),
    counts: &Counts,
    connect: &Histogram<u64>,
    rtt: &Histogram<u64>,
    peak: usize,
    elapsed: Duration,
    own_cpu: Duration,
    server: Option<(Duration, u64, u64)>,
) {
    println!(
        "scenario {}, {} workers, engine {}, {:.1} s",
        args.scenario,
        workers,
        kind,
        elapsed.as_secs_f64()
    );
    println!("| metric | value |\n|---|---|");
    println!(
        "| connections up / asked | {} / {} |",
        counts.connected, plan.conns
    );
    println!("| peak up (welcomed at once) | {peak} |");
    println!(
        "| failed before WELCOME | {} |",
        errnos::by_name(&counts.failed_by_errno, errnos::errno_name)
    );
    println!("| dropped after WELCOME | {} |", counts.dropped);
    println!(
        "| dead server (no reply within the idle timeout) / reconnects | {} / {} |",
        counts.dead_server, counts.reconnects
    );
    println!(
        "| ERROR/GOAWAY received | {} |",
        errnos::by_name(&counts.errors_by_code, errnos::error_code_name)
    );
    println!(
        "| PINGs sent / PONGs | {} / {} |",
        counts.pings, counts.pongs
    );
    println!(
        "| connect ms p50 / p99 / max | {:.3} / {:.3} / {:.3} |",
        ms(connect, 0.5),
        ms(connect, 0.99),
        connect.max() as f64 / 1000.0
    );
    println!(
        "| ping RTT ms p50 / p99 / p99.9 / max | {:.3} / {:.3} / {:.3} / {:.3} |",
        ms(rtt, 0.5),
        ms(rtt, 0.99),
        ms(rtt, 0.999),
        rtt.max() as f64 / 1000.0
    );
    println!("| loadgen CPU-s | {:.2} |", own_cpu.as_secs_f64());
    if let Some((cpu, rss, growth)) = server {
        println!("| server CPU-s | {:.2} |", cpu.as_secs_f64());
        println!(
            "| server RSS / peak growth per connection | {} KiB / {} B |",
            rss / 1024,
            growth / counts.connected.max(1)
        );
        // Per million of the scenario's own messages (ramp included).
        let (events, what) = match args.scenario {
            Scenario::Rooms | Scenario::Churn => (counts.delivered, "room deliveries"),
            _ if !plan.idle => (counts.pongs, "PONGs"),
            _ => (0, ""),
        };
        if let Some(per) = procstat::cpu_per_million(cpu, events) {
            println!("| server CPU-s per million {what} | {per:.2} |");
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if own_cpu.as_secs_f64() > 0.9 * elapsed.as_secs_f64() * (workers as f64).min(cores) {
        println!("WARNING: the load generator's own cores were saturated: the figures measure it, not the server");
    }
}

/// The run as a result folder's contents.
#[allow(clippy::too_many_arguments)]
pub(super) fn record(
    args: &Args,
    plan: &Plan,
    targets: &[SocketAddr],
    workers: usize,
    counts: &Counts,
    connect: &Histogram<u64>,
    own_cpu: Duration,
    server: Option<(Duration, u64, u64)>,
    mut run: Run,
) -> RunRecord {
    use crate::results as r;
    let whole = |name: &str, h: &Histogram<u64>| r::Metric {
        name: name.into(),
        start_time: run.started_at,
        intervals: vec![crate::hlog::Interval {
            start: Duration::ZERO,
            length: Duration::from_secs(plan.duration),
            histogram: h.clone(),
        }],
    };
    // Connect and delivery logs are one interval; RTTs have one per second.
    let mut metrics = vec![
        whole("connect", connect),
        r::Metric {
            name: "ping-rtt".into(),
            start_time: run.started_at,
            // Moved, not copied: a second's histogram is ~180 KB.
            intervals: std::mem::take(&mut run.intervals)
                .into_iter()
                .enumerate()
                .map(|(i, histogram)| crate::hlog::Interval {
                    start: INTERVAL * i as u32,
                    length: INTERVAL,
                    histogram,
                })
                .collect(),
        },
    ];
    if let Some(d) = &run.delivery {
        metrics.push(whole("delivery", d));
    }
    if let Some([same, cross]) = &run.delivery_split {
        metrics.push(whole("delivery-same-node", same));
        metrics.push(whole("delivery-cross-node", cross));
    }
    let summary = r::Summary {
        config: r::Config {
            targets: targets.iter().map(ToString::to_string).collect(),
            embedded_server: args.target.is_empty(),
            conns: plan.conns as u64,
            connect_rate: plan.connect_rate,
            duration_s: plan.duration,
            source: plan.source.clone(),
            scenario: args.scenario.to_string(),
            idle: plan.idle,
            ping_rate: plan.ping_rate,
            heartbeat_ms: plan.heartbeat_ms,
            workers,
            protocol: args.protocol.clone(),
            engine: run.engine.name().to_string(),
        },
        machine: r::Machine::this(),
        counts: counts.clone(),
        loadgen_cpu_s: own_cpu.as_secs_f64(),
        ramp_s: Some(run.ramp.as_secs_f64()),
        commit: git_commit(),
        up_per_second: run.up_per_second.clone(),
        connects_per_second: run.connects_per_second.clone(),
        ramp_lowest_rate_per_s: run.ramp_lowest,
        loadgen_rss_bytes: run.own_memory.0,
        loadgen_peak_rss_growth_bytes: run.own_memory.1,
        server: server.map(|(cpu, rss, growth)| r::Server {
            cpu_s: cpu.as_secs_f64(),
            rss_bytes: rss,
            peak_rss_growth_bytes: growth,
            ..Default::default()
        }),
        rooms: run.delivery.as_ref().map(|_| r::Rooms {
            rooms: args.rooms,
            publish_rate: args.publish_rate.0,
            payload: args.payload,
            published: counts.published,
            expected: counts.expected,
            delivered: counts.delivered,
            late: run.order[0],
            duplicates: run.order[1],
            missing: run.order[2],
            reported: run.order[3],
            publishers_on: args.publishers_on,
        }),
        sources: 1,
        storm: run.storm.clone(),
        churn: run.churn.clone(),
        kernel: run.kernel.clone(),
        ..Default::default()
    };
    let mut record = RunRecord { summary, metrics };
    record.finish();
    record
}

/// What the results files need besides the totals.
pub(super) struct Run {
    /// The workers' engine.
    pub(super) engine: EngineKind,
    pub(super) started_at: std::time::SystemTime,
    /// RTT histograms of each second, all workers added.
    pub(super) intervals: Vec<Histogram<u64>>,
    /// Room delivery latency, in the rooms scenario.
    pub(super) delivery: Option<Histogram<u64>>,
    /// The same, same target and different targets (several targets).
    pub(super) delivery_split: Option<[Histogram<u64>; 2]>,
    /// Room messages late, duplicated, missing (silently), reported lost.
    pub(super) order: [u64; 4],
    /// The load generator's RSS at the end and its peak growth, bytes.
    pub(super) own_memory: (u64, u64),
    /// When the last connection of the ramp came up, since the run's start.
    pub(super) ramp: Duration,
    /// Connections up at the end of each second, all workers added.
    pub(super) up_per_second: Vec<u64>,
    /// `connect()` calls each second, all workers added.
    pub(super) connects_per_second: Vec<u64>,
    /// The lowest the ramp slowed down to, if it did.
    pub(super) ramp_lowest: Option<f64>,
    /// The reconnect storm's figures.
    pub(super) storm: Option<storm::Report>,
    /// The churn's figures.
    pub(super) churn: Option<churn::Report>,
    /// Machine limits hit, as the kernel counted them.
    pub(super) kernel: Option<netstat::Limits>,
}

/// A live line while the workers run: connections, PONGs a second, the last
/// second's RTT p99, errors. Only on a terminal.
pub(super) fn show_progress<T>(
    handles: &[std::thread::JoinHandle<T>],
    progress: &[Arc<Progress>],
    conns: usize,
    started: Instant,
) {
    let tty = std::io::stdout().is_terminal();
    let mut last_pongs = 0;
    let mut next = INTERVAL;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if !tty || started.elapsed() < next {
            continue;
        }
        next += INTERVAL;
        let sum = |f: fn(&Progress) -> &std::sync::atomic::AtomicU64| {
            progress
                .iter()
                .map(|p| f(p).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let pongs = sum(|p| &p.pongs);
        let p99 = progress
            .iter()
            .map(|p| p.p99_us.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        print!(
            "\r{:>5}s  up {}/{}  PONGs/s {}  p99 {:.2} ms  errors {}   ",
            started.elapsed().as_secs(),
            sum(|p| &p.connected),
            conns,
            pongs.saturating_sub(last_pongs),
            p99 as f64 / 1000.0,
            sum(|p| &p.errors)
        );
        let _ = std::io::Write::flush(&mut std::io::stdout());
        last_pongs = pongs;
    }
    if tty {
        println!();
    }
}

/// The commit loadgen was built from (`-dirty` if the tree had changes), as
/// its build script saw it: a result names what measured it.
pub(super) fn git_commit() -> Option<String> {
    option_env!("RINGROOM_BUILD_COMMIT").map(str::to_string)
}

/// `bench-results/local/NAME-YYYYMMDDTHHMMSSZ/`: UTC, so folders sort by time.
pub fn default_out(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "bench-results/local/{name}-{}",
        crate::results::utc_stamp(std::time::SystemTime::now())
    ))
}
