//! `loadgen`: the ringroom load generator. See the README.
//!
//! This first version runs the `idle` and `ping` scenarios against a server
//! given with `--target`; the `rooms` scenario, the embedded server, presets,
//! reconnects and the full results folder come next.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use argh::FromArgs;
use hdrhistogram::Histogram;
use loadgen::client::{Counts, Pinging};
use loadgen::sources::{local_port_range, parse_sources, Capacity};
use loadgen::worker::{self, share, WorkerSpec};
use loadgen::{procstat, report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// loadgen: opens many client connections to a ringroom server, keeps them
/// alive, and measures.
#[derive(FromArgs)]
struct Args {
    /// server address (repeat to spread over several)
    #[argh(option)]
    target: Vec<SocketAddr>,

    /// connections to open (default 1000)
    #[argh(option, default = "1000")]
    conns: usize,

    /// connections opened per second, in all (default 5000)
    #[argh(option, default = "5000.0")]
    connect_rate: f64,

    /// seconds to hold the connections once all are open (default 10)
    #[argh(option, default = "10")]
    duration: u64,

    /// source addresses: addresses, ranges (127.0.0.2-127.0.0.40) and CIDRs,
    /// comma-separated (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    source: String,

    /// idle (heartbeats at the granted interval) or ping (a fixed rate)
    /// (default ping)
    #[argh(option, default = "String::from(\"ping\")")]
    scenario: String,

    /// PINGs per second per connection in the ping scenario (default 1)
    #[argh(option, default = "1.0")]
    ping_rate: f64,

    /// heartbeat to ask for in HELLO, ms (default 0: the server's)
    #[argh(option, default = "0")]
    heartbeat_ms: u32,

    /// worker threads, each with its own ring (default: the cores)
    #[argh(option)]
    workers: Option<usize>,

    /// process id of the server, to report its CPU time and memory
    #[argh(option)]
    server_pid: Option<u32>,

    /// folder for the results (summary.json, .hgrm, .hlog, plot.svg)
    #[argh(option)]
    out: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.target.is_empty() {
        return Err(
            "give the server with --target HOST:PORT (starting one itself is not built yet)".into(),
        );
    }
    let pinging = match args.scenario.as_str() {
        "idle" => Pinging::Heartbeat,
        "ping" if args.ping_rate > 0.0 => Pinging::Rate(args.ping_rate),
        "ping" => return Err("--ping-rate must be positive".into()),
        other => {
            return Err(format!(
                "unknown --scenario {other:?} (idle or ping in this version)"
            ))
        }
    };
    if args.connect_rate <= 0.0 || args.conns == 0 {
        return Err("--conns and --connect-rate must be positive".into());
    }
    let sources: Vec<IpAddr> = parse_sources(&args.source)?;
    let ports = local_port_range()?;
    let capacity = Capacity::new(sources.len(), args.target.len(), ports);
    println!(
        "capacity: {} source(s) x {} target(s) x {} ports (ip_local_port_range {}-{}) = {} connections",
        capacity.sources,
        capacity.targets,
        capacity.ports,
        ports.0,
        ports.1,
        capacity.total()
    );
    capacity.check(args.conns as u64)?;

    let nofile =
        rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut workers = args.workers.unwrap_or(cores.len().max(1)).max(1);
    // Each worker's table is capped by RLIMIT_NOFILE: add workers until the shares fit.
    let table = nofile.min(1 << 20) as usize;
    while args.conns.div_ceil(workers) > table.saturating_sub(16) {
        workers += 1;
    }
    let before = procstat::sample(None)?;
    let server_before = args
        .server_pid
        .map(|p| procstat::sample(Some(p)))
        .transpose()?;
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|index| {
            let conns = share(args.conns, index, workers);
            let spec = WorkerSpec {
                targets: args.target.clone(),
                sources: sources.clone(),
                conns,
                index,
                workers,
                connect_rate: args.connect_rate / workers as f64,
                hold: Duration::from_secs(args.duration),
                pinging,
                heartbeat_ms: args.heartbeat_ms,
                slots: (conns + 16).min(table) as u32,
                seed: 0x5eed + index as u64,
            };
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            std::thread::spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                worker::run(&spec)
            })
        })
        .collect();
    let mut counts = Counts::default();
    let mut connect = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let mut rtt = connect.clone();
    let mut peak = 0;
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| "a worker panicked".to_string())??;
        merge(&mut counts, &result.counts);
        connect.add(&result.connect).map_err(|e| format!("{e:?}"))?;
        rtt.add(&result.rtt).map_err(|e| format!("{e:?}"))?;
        peak += result.peak_open;
    }
    let elapsed = started.elapsed();
    let after = procstat::sample(None)?;
    let own_cpu = after.cpu.saturating_sub(before.cpu);
    let server_cpu = match (args.server_pid, server_before) {
        (Some(pid), Some(b)) => procstat::sample(Some(pid))
            .ok()
            .map(|a| (a.cpu.saturating_sub(b.cpu), a.rss, a.peak_rss)),
        _ => None,
    };
    print_summary(
        &args, workers, &counts, &connect, &rtt, peak, elapsed, own_cpu, server_cpu,
    );
    if let Some(dir) = &args.out {
        write_results(
            dir, &args, workers, &counts, &connect, &rtt, own_cpu, server_cpu,
        )
        .map_err(|e| format!("cannot write results to {}: {e}", dir.display()))?;
        println!("results in {}", dir.display());
    }
    let lost = counts.pings.saturating_sub(counts.pongs);
    if counts.connected < args.conns as u64 {
        return Err(format!(
            "only {} of {} connections came up",
            counts.connected, args.conns
        ));
    }
    if counts.dropped > 0 {
        return Err(format!(
            "{} connections dropped during the run",
            counts.dropped
        ));
    }
    if matches!(pinging, Pinging::Rate(_)) && lost > counts.pings / 1000 + workers as u64 * 64 {
        return Err(format!("{lost} of {} PINGs unanswered", counts.pings));
    }
    Ok(())
}

fn merge(into: &mut Counts, from: &Counts) {
    into.connected += from.connected;
    into.dropped += from.dropped;
    into.pings += from.pings;
    into.pongs += from.pongs;
    for (k, v) in &from.failed {
        *into.failed.entry(*k).or_default() += v;
    }
    for (k, v) in &from.errors {
        *into.errors.entry(*k).or_default() += v;
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    args: &Args,
    workers: usize,
    counts: &Counts,
    connect: &Histogram<u64>,
    rtt: &Histogram<u64>,
    peak: usize,
    elapsed: Duration,
    own_cpu: Duration,
    server: Option<(Duration, u64, u64)>,
) {
    println!(
        "scenario {}, {} workers, {:.1} s",
        args.scenario,
        workers,
        elapsed.as_secs_f64()
    );
    println!("| metric | value |\n|---|---|");
    println!(
        "| connections up / asked | {} / {} |",
        counts.connected, args.conns
    );
    println!("| peak open | {peak} |");
    println!(
        "| failed before WELCOME (errno: count) | {:?} |",
        counts.failed
    );
    println!("| dropped after WELCOME | {} |", counts.dropped);
    println!("| ERROR/GOAWAY (code: count) | {:?} |", counts.errors);
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
    if let Some((cpu, rss, peak_rss)) = server {
        println!("| server CPU-s | {:.2} |", cpu.as_secs_f64());
        println!(
            "| server RSS / peak | {} / {} KiB |",
            rss / 1024,
            peak_rss / 1024
        );
        if let Some(per) = procstat::cpu_per_million(cpu, counts.pongs) {
            println!("| server CPU-s per million PONGs | {per:.2} |");
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if own_cpu.as_secs_f64() > 0.9 * elapsed.as_secs_f64() * (workers as f64).min(cores) {
        println!("WARNING: the load generator's own cores were saturated: the figures measure it, not the server");
    }
}

#[allow(clippy::too_many_arguments)]
fn write_results(
    dir: &std::path::Path,
    args: &Args,
    workers: usize,
    counts: &Counts,
    connect: &Histogram<u64>,
    rtt: &Histogram<u64>,
    own_cpu: Duration,
    server: Option<(Duration, u64, u64)>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, h) in [("connect", connect), ("ping-rtt", rtt)] {
        report::write_hgrm(
            &mut std::fs::File::create(dir.join(format!("{name}.hgrm")))?,
            h,
        )?;
        let interval = report::Interval {
            start: Duration::ZERO,
            length: Duration::from_secs(args.duration),
            histogram: h.clone(),
        };
        report::write_hlog(
            &mut std::fs::File::create(dir.join(format!("{name}.hlog")))?,
            std::time::SystemTime::now(),
            &[interval],
        )?;
    }
    std::fs::write(
        dir.join("plot.svg"),
        report::plot_svg("loadgen", &[("connect", connect), ("ping RTT", rtt)]),
    )?;
    let percentiles = |h: &Histogram<u64>| {
        serde_json::json!({
            "p50_ms": ms(h, 0.5), "p90_ms": ms(h, 0.9), "p99_ms": ms(h, 0.99),
            "p99_9_ms": ms(h, 0.999), "max_ms": h.max() as f64 / 1000.0, "count": h.len(),
        })
    };
    let summary = serde_json::json!({
        "config": {
            "targets": args.target.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "conns": args.conns, "connect_rate": args.connect_rate, "duration_s": args.duration,
            "source": args.source, "scenario": args.scenario, "ping_rate": args.ping_rate,
            "heartbeat_ms": args.heartbeat_ms, "workers": workers,
        },
        "machine": {
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "counts": {
            "connected": counts.connected, "dropped": counts.dropped,
            "failed_by_errno": counts.failed.iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
            "errors_by_code": counts.errors.iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
            "pings": counts.pings, "pongs": counts.pongs,
        },
        "loadgen_cpu_s": own_cpu.as_secs_f64(),
        "server": server.map(|(cpu, rss, peak)| serde_json::json!({
            "cpu_s": cpu.as_secs_f64(), "rss_bytes": rss, "peak_rss_bytes": peak,
            "cpu_s_per_million_pongs": procstat::cpu_per_million(cpu, counts.pongs),
        })),
        "latency": { "connect": percentiles(connect), "ping_rtt": percentiles(rtt) },
    });
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )
}
