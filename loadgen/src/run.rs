//! One run of a scenario: start the server if there is none, size and start
//! the workers, add up what they measured, sample /proc, print the table,
//! write the result folder, and judge the run.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use engine::EngineKind;

use crate::cli::{plan, run_name, Args, Plan, Scenario};
use crate::client::{Counts, Pinging, RoomPlan};
use crate::own_server::OwnServer;
use crate::processes::{self, Part};
use crate::results::RunRecord;
use crate::sources::{local_port_range, parse_sources, Capacity};
use crate::worker::{self, share, Progress, WorkerSpec, INTERVAL};
use crate::{errnos, procstat, storm};

/// Runs the scenario `args` ask for; an error says why the run failed (a
/// result folder is written whenever the run got as far as measuring).
pub fn run(args: Args) -> Result<(), String> {
    let mut plan = plan(&args)?;
    let part = Part::from_env()?;
    let kind = choose_engine(&args, part)?;
    let nofile =
        rlimit::increase_nofile_limit(u64::MAX).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let parts = if part.is_part() {
        1
    } else {
        let needed = processes::needed(plan.conns, nofile, kind == EngineKind::Epoll);
        match args.processes {
            Some(0) => return Err("--processes must be at least 1".into()),
            Some(n) if n < needed => {
                return Err(format!(
                    "--processes {n}: {} connections as process fds (epoll) need {needed} \
                     processes under RLIMIT_NOFILE {nofile}",
                    plan.conns
                ))
            }
            Some(n) => n,
            None => needed,
        }
    };
    let pinging = if plan.idle {
        Pinging::Heartbeat
    } else {
        Pinging::Rate(plan.ping_rate)
    };
    let sources: Vec<IpAddr> = if args.source.is_none() && is_v6_run(&args.target) {
        vec![IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)] // the default follows the target
    } else {
        parse_sources(&plan.source)?
    };
    check_families(&sources, &args.target)?;
    let ports = local_port_range()?;
    let capacity = Capacity::new(sources.len(), args.target.len().max(1), ports);
    println!(
        "capacity: {} source(s) x {} target(s) x {} ports (ip_local_port_range {}-{}) = {} connections",
        capacity.sources,
        capacity.targets,
        capacity.ports,
        ports.0,
        ports.1,
        capacity.total()
    );
    capacity.check(plan.conns as u64)?;
    if args.storm.is_some() && (!args.target.is_empty() || parts > 1 || part.is_part()) {
        return Err(
            "--storm restarts loadgen's own server: it needs no --target, and one process".into(),
        );
    }
    let own_server = Arc::new(Mutex::new(None));
    let (targets, server_pid) = if args.target.is_empty() {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (server, addr) = OwnServer::start(loopback, plan.conns, kind)?;
        let pid = server.pid();
        *own_server.lock().unwrap() = Some(server);
        // A storm replaces the server: its CPU and memory are not one process's.
        (vec![addr], args.storm.is_none().then_some(pid))
    } else {
        (args.target.clone(), args.server_pid)
    };
    let storm = args.storm.map(|spec| Storm {
        spec,
        restart: Duration::from_millis(args.storm_restart_ms),
        server: own_server.clone(),
        listen: targets[0],
    });
    let result = if parts > 1 {
        split(&args, &plan, parts, kind, &targets, server_pid)
    } else {
        // A part runs its share of the connections; the rooms they join and
        // the spreading over sources stay those of the whole run.
        let whole = plan.conns;
        plan.conns = share(whole, part.index, part.of);
        plan.connect_rate /= part.of as f64;
        let run = Whole {
            conns: whole,
            part,
            kind,
            nofile,
            storm,
        };
        drive(&args, &plan, &run, pinging, sources, targets, server_pid)
    };
    if let Some(server) = own_server.lock().unwrap().take() {
        server.stop();
    }
    result
}

/// Whether the run's targets are IPv6 (loadgen's own server is IPv4).
fn is_v6_run(targets: &[SocketAddr]) -> bool {
    !targets.is_empty() && targets.iter().all(SocketAddr::is_ipv6)
}

/// Every source must be of the targets' family: an IPv4 source cannot reach
/// an IPv6 target (each connection would fail), so say so before connecting.
fn check_families(sources: &[IpAddr], targets: &[SocketAddr]) -> Result<(), String> {
    let v6 = is_v6_run(targets);
    if targets.iter().any(|t| t.is_ipv6() != v6) {
        return Err("--target: all targets must be of one family, IPv4 or IPv6".into());
    }
    if let Some(bad) = sources.iter().find(|s| s.is_ipv6() != v6) {
        let (want, example) = if v6 {
            ("IPv6", "::1")
        } else {
            ("IPv4", "127.0.0.1")
        };
        return Err(format!(
            "--source {bad} cannot reach {} targets: give {want} sources (e.g. --source {example})",
            if v6 { "IPv6" } else { "IPv4" }
        ));
    }
    Ok(())
}

/// Resolves `--engine` (a part is told it by its parent); `auto`'s fallback
/// is said in one line.
fn choose_engine(args: &Args, part: Part) -> Result<EngineKind, String> {
    let (kind, note) =
        engine::resolve(args.engine, engine::RingMode::Defer).map_err(|e| e.to_string())?;
    if let Some(note) = note.filter(|_| !part.is_part()) {
        println!("{note}");
    }
    Ok(kind)
}

/// The whole run a process drives its part of.
struct Whole {
    /// Connections of the whole run.
    conns: usize,
    /// Which part this process is.
    part: Part,
    /// The workers' engine.
    kind: EngineKind,
    /// This process's fd limit.
    nofile: u64,
    /// The reconnect storm to run, if any.
    storm: Option<Storm>,
}

/// A `--storm` and what it acts on.
struct Storm {
    spec: storm::StormSpec,
    restart: Duration,
    server: Arc<Mutex<Option<OwnServer>>>,
    listen: SocketAddr,
}

/// Runs `parts` processes of this binary, then adds up and judges their results.
fn split(
    args: &Args,
    plan: &Plan,
    parts: usize,
    kind: EngineKind,
    targets: &[SocketAddr],
    server_pid: Option<u32>,
) -> Result<(), String> {
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&run_name(args, plan)));
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let results = processes::run_parts(&raw, parts, kind.name(), targets, server_pid, &dir)?;
    let merged = processes::merge(&results)?;
    merged
        .write(&dir)
        .map_err(|e| format!("cannot write results to {}: {e}", dir.display()))?;
    println!("{}", crate::results::describe_merged(&merged));
    println!("results in {}", dir.display());
    let s = &merged.summary;
    let order = s
        .rooms
        .as_ref()
        .map_or([0; 4], |r| [r.late, r.duplicates, r.missing, r.reported]);
    verdict(plan, &s.counts, order, s.rooms.is_some())
}

fn drive(
    args: &Args,
    plan: &Plan,
    whole: &Whole,
    pinging: Pinging,
    sources: Vec<IpAddr>,
    targets: Vec<SocketAddr>,
    server_pid: Option<u32>,
) -> Result<(), String> {
    let (workers, table) = size_workers(args, plan, whole)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let before = procstat::sample(None)?;
    let server_before = server_pid
        .map(|p| procstat::sample(Some(p)))
        .transpose()
        .map_err(|e| format!("--server-pid: {e}: is the server running?"))?;
    let started = processes::epoch();
    let started_at =
        std::time::SystemTime::now() + started.saturating_duration_since(Instant::now());
    // The plan checked the rooms options.
    let rooms = (args.scenario == Scenario::Rooms).then(|| RoomPlan {
        rooms: args.rooms,
        conns: whole.conns as u64,
        period: Duration::from_secs_f64(1.0 / args.publish_rate.0),
        payload: args.payload,
        // Publishing starts a second after the ramp, once every member has joined.
        start: Duration::from_secs_f64(plan.conns as f64 / plan.connect_rate)
            + Duration::from_secs(1),
    });
    let progress: Vec<Arc<Progress>> = (0..workers).map(|_| Arc::default()).collect();
    let handles: Vec<_> = (0..workers)
        .map(|index| {
            let conns = share(plan.conns, index, workers);
            // Worker `index` of part K of N is worker K + N * index of the
            // run, so the parts together spread as one process would.
            let spec = WorkerSpec {
                targets: targets.clone(),
                sources: sources.clone(),
                conns,
                index: whole.part.index + whole.part.of * index,
                workers: workers * whole.part.of,
                connect_rate: plan.connect_rate / workers as f64,
                hold: Duration::from_secs(plan.duration),
                pinging,
                heartbeat_ms: plan.heartbeat_ms,
                kind: whole.kind,
                slots: (conns + 16).min(table) as u32,
                seed: 0x5eed + index as u64,
                progress: progress[index].clone(),
                reconnect: !args.no_reconnect,
                rooms: rooms.clone(),
                publishers_on: args.publishers_on,
                epoch: started,
                protocol: plan.protocol,
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
    let drops_before = storm::listen_drops();
    let storm_thread = whole.storm.as_ref().map(|s| {
        storm::spawn(
            s.spec,
            s.restart,
            s.server.clone(),
            s.listen,
            whole.conns,
            whole.kind,
            started,
        )
    });
    show_progress(&handles, &progress, plan.conns, started);
    let Totals {
        counts,
        connect,
        rtt,
        intervals,
        up_per_second,
        delivery,
        delivery_split,
        order,
        peak,
        ramp,
    } = add_up(handles)?;
    let storm_report = match (storm_thread, &whole.storm) {
        (Some(thread), Some(s)) => {
            let events = thread.join().map_err(|_| "the storm thread panicked")?;
            let drops = storm::listen_drops()
                .zip(drops_before)
                .map(|(a, b)| a.saturating_sub(b));
            Some(storm::report(
                s.spec,
                &events,
                &up_per_second,
                plan.conns as u64,
                drops,
            ))
        }
        _ => None,
    };
    let elapsed = started.elapsed();
    let after = procstat::sample(None)?;
    let own_cpu = after.cpu.saturating_sub(before.cpu);
    let server_cpu = match (server_pid, server_before) {
        (Some(pid), Some(b)) => procstat::sample(Some(pid)).ok().map(|a| {
            (
                a.cpu.saturating_sub(b.cpu),
                a.rss,
                a.peak_rss.saturating_sub(b.rss),
            )
        }),
        _ => None,
    };
    let own_memory = (after.rss, after.peak_rss.saturating_sub(before.rss));
    print_summary(
        args,
        plan,
        (workers, whole.kind),
        &counts,
        &connect,
        &rtt,
        peak,
        elapsed,
        own_cpu,
        server_cpu,
    );
    println!(
        "| loadgen RSS / peak growth per connection | {} KiB / {} B |",
        own_memory.0 / 1024,
        own_memory.1 / counts.connected.max(1)
    );
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&run_name(args, plan)));
    if rooms.is_some() {
        println!(
            "| rooms: published / expected / delivered | {} / {} / {} |",
            counts.published, counts.expected, counts.delivered
        );
        println!(
            "| rooms: late / duplicate / missing | {} / {} / {} |",
            order[0], order[1], order[2]
        );
        if counts.gaps > 0 {
            println!(
                "| rooms: GAP notices / messages lost but reported | {} / {} |",
                counts.gaps, order[3]
            );
        }
        let row = |name: &str, h: &Histogram<u64>| {
            println!(
                "| {name} ms p50 / p99 / p99.9 / max | {:.3} / {:.3} / {:.3} / {:.3} |",
                ms(h, 0.5),
                ms(h, 0.99),
                ms(h, 0.999),
                h.max() as f64 / 1000.0
            );
        };
        row("delivery", &delivery);
        if targets.len() > 1 {
            row("delivery, same node", &delivery_split[0]);
            row("delivery, across nodes", &delivery_split[1]);
        }
    }
    let run = Run {
        engine: whole.kind,
        started_at,
        intervals,
        delivery: rooms.is_some().then_some(delivery),
        delivery_split: (rooms.is_some() && targets.len() > 1).then_some(delivery_split),
        order,
        own_memory,
        ramp,
        up_per_second,
        storm: storm_report.clone(),
    };
    let result = record(
        args, plan, &targets, workers, &counts, &connect, own_cpu, server_cpu, &run,
    );
    println!(
        "| ramp: every connection up after / planned | {:.1} s / {:.1} s |",
        ramp.as_secs_f64(),
        result.planned_ramp_s()
    );
    if result.ramp_ran_late() {
        println!(
            "NOTE: the ramp ran late (took {:.1} s, planned {:.1} s): connects queued behind \
             each other; the hold is measured from {} s",
            ramp.as_secs_f64(),
            result.planned_ramp_s(),
            result.hold_start().as_secs()
        );
    }
    if let Some(h) = &result.summary.latency.ping_rtt_hold {
        println!(
            "| ping RTT over the hold (from {} s: a second after the last connect completed) ms p50 / p99 / p99.9 / max | {:.3} / {:.3} / {:.3} / {:.3} |",
            result.hold_start().as_secs(),
            h.p50_ms,
            h.p99_ms,
            h.p99_9_ms,
            h.max_ms
        );
    }
    if let Some(r) = &storm_report {
        println!("{}", storm::describe(r));
    }
    result
        .write(&dir)
        .map_err(|e| format!("cannot write results to {}: {e}", dir.display()))?;
    println!("results in {}", dir.display());
    match &storm_report {
        Some(r) => storm_verdict(r, order),
        None => verdict(plan, &counts, order, rooms.is_some()),
    }
}

/// A storm run passes when the server came back and so did every client:
/// the drops, and the PINGs and messages in flight at the signal, are the
/// storm's, counted above and not failures.
/// Messages out of order or twice are never the storm's: they fail it too.
fn storm_verdict(r: &storm::Report, order: [u64; 4]) -> Result<(), String> {
    in_order(order)?;
    if let Some(e) = &r.restart_error {
        return Err(format!("storm: {e}"));
    }
    if r.all_back_after_s.is_none() {
        return Err("storm: not every connection was back up by the end of the run".into());
    }
    Ok(())
}

/// How many workers and how many slots each may have. io_uring: the cores,
/// or more when a fixed-file table capped by RLIMIT_NOFILE cannot hold a
/// worker's share. epoll: the cores, all sharing the process's fds.
fn size_workers(args: &Args, plan: &Plan, whole: &Whole) -> Result<(usize, usize), String> {
    let nofile = whole.nofile;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut workers = args.workers.unwrap_or(cores.len().max(1)).max(1);
    if whole.kind == EngineKind::Epoll {
        let fds = (nofile as usize).saturating_sub(processes::FD_RESERVE);
        if plan.conns > fds {
            return Err(format!(
                "{} connections are more process fds than RLIMIT_NOFILE {nofile} leaves ({fds}) \
                 to one epoll process: use --processes",
                plan.conns
            ));
        }
        return Ok((workers, fds));
    }
    let table = nofile.min(1 << 20) as usize;
    while plan.conns.div_ceil(workers) > table.saturating_sub(16) {
        workers += 1;
    }
    Ok((workers, table))
}

/// What every worker measured, added up.
struct Totals {
    counts: Counts,
    connect: Histogram<u64>,
    rtt: Histogram<u64>,
    intervals: Vec<Histogram<u64>>,
    up_per_second: Vec<u64>,
    delivery: Histogram<u64>,
    /// The same, same target and different targets.
    delivery_split: [Histogram<u64>; 2],
    /// Room messages late, duplicated, missing (silently), reported lost.
    order: [u64; 4],
    peak: usize,
    ramp: Duration,
}

/// Waits for the workers and adds up their results, second by second where
/// they are per second.
fn add_up(
    handles: Vec<std::thread::JoinHandle<Result<worker::WorkerResult, String>>>,
) -> Result<Totals, String> {
    let mut t = Totals {
        counts: Counts::default(),
        connect: crate::results::histogram(),
        rtt: crate::results::histogram(),
        intervals: Vec::new(),
        up_per_second: Vec::new(),
        delivery: crate::results::histogram(),
        delivery_split: [crate::results::histogram(), crate::results::histogram()],
        order: [0; 4],
        peak: 0,
        ramp: Duration::ZERO,
    };
    let hist = |e: hdrhistogram::AdditionError| format!("{e:?}");
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| "a worker panicked".to_string())??;
        t.counts.add(&result.counts);
        t.connect.add(&result.connect).map_err(hist)?;
        t.rtt.add(&result.rtt).map_err(hist)?;
        for (i, &n) in result.up_per_interval.iter().enumerate() {
            match t.up_per_second.get_mut(i) {
                Some(up) => *up += n,
                None => t.up_per_second.push(n),
            }
        }
        for (i, h) in result.intervals.iter().enumerate() {
            match t.intervals.get_mut(i) {
                Some(sum) => sum.add(h).map_err(hist)?,
                None => t.intervals.push(h.clone()),
            }
        }
        t.delivery.add(&result.delivery).map_err(hist)?;
        t.order[0] += result.late;
        t.order[1] += result.duplicates;
        t.order[2] += result.missing;
        t.order[3] += result.reported;
        t.delivery_split[0]
            .add(&result.delivery_same)
            .map_err(hist)?;
        t.delivery_split[1]
            .add(&result.delivery_cross)
            .map_err(hist)?;
        t.peak += result.peak_open;
        t.ramp = t.ramp.max(result.ramp_done);
    }
    Ok(t)
}

/// The run passes if every connection came up and stayed, every PING was
/// answered, and (rooms) every message arrived once and in order, or its
/// loss was reported to its receiver (ERROR GAP, from a cluster).
/// Room messages late (out of order) or duplicated fail any run.
fn in_order(order: [u64; 4]) -> Result<(), String> {
    if order[0] + order[1] > 0 {
        return Err(format!(
            "room messages out of order ({}) or duplicated ({})",
            order[0], order[1]
        ));
    }
    Ok(())
}

fn verdict(plan: &Plan, counts: &Counts, order: [u64; 4], rooms: bool) -> Result<(), String> {
    if rooms {
        in_order(order)?;
        if counts.delivered + order[3] < counts.expected {
            let reported = if order[3] > 0 {
                format!(" (another {} lost and reported by GAP notices)", order[3])
            } else {
                String::new()
            };
            return Err(format!(
                "{} of {} room messages not delivered{reported}",
                counts.expected - counts.delivered - order[3],
                counts.expected
            ));
        }
    }
    let lost = counts.pings.saturating_sub(counts.pongs);
    if counts.connected < plan.conns as u64 {
        return Err(format!(
            "only {} of {} connections came up (failed: {})",
            counts.connected,
            plan.conns,
            errnos::by_name(&counts.failed_by_errno, errnos::errno_name)
        ));
    }
    if counts.dropped > 0 {
        return Err(format!(
            "{} connections dropped during the run",
            counts.dropped
        ));
    }
    if lost > 0 {
        return Err(format!("{lost} of {} PINGs unanswered", counts.pings));
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
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
            Scenario::Rooms => (counts.delivered, "room deliveries"),
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
fn record(
    args: &Args,
    plan: &Plan,
    targets: &[SocketAddr],
    workers: usize,
    counts: &Counts,
    connect: &Histogram<u64>,
    own_cpu: Duration,
    server: Option<(Duration, u64, u64)>,
    run: &Run,
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
            intervals: run
                .intervals
                .iter()
                .enumerate()
                .map(|(i, h)| crate::hlog::Interval {
                    start: INTERVAL * i as u32,
                    length: INTERVAL,
                    histogram: h.clone(),
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
        ..Default::default()
    };
    let mut record = RunRecord { summary, metrics };
    record.finish();
    record
}

/// What the results files need besides the totals.
struct Run {
    /// The workers' engine.
    engine: EngineKind,
    started_at: std::time::SystemTime,
    /// RTT histograms of each second, all workers added.
    intervals: Vec<Histogram<u64>>,
    /// Room delivery latency, in the rooms scenario.
    delivery: Option<Histogram<u64>>,
    /// The same, same target and different targets (several targets).
    delivery_split: Option<[Histogram<u64>; 2]>,
    /// Room messages late, duplicated, missing (silently), reported lost.
    order: [u64; 4],
    /// The load generator's RSS at the end and its peak growth, bytes.
    own_memory: (u64, u64),
    /// When the last connection of the ramp came up, since the run's start.
    ramp: Duration,
    /// Connections up at the end of each second, all workers added.
    up_per_second: Vec<u64>,
    /// The reconnect storm's figures.
    storm: Option<storm::Report>,
}

/// A live line while the workers run: connections, PONGs a second, the last
/// second's RTT p99, errors. Only on a terminal.
fn show_progress<T>(
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

/// The commit of the checkout loadgen runs in (`git rev-parse --short HEAD`),
/// if it runs in one: a result names what it measured.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// `bench-results/local/NAME-YYYYMMDDTHHMMSSZ/`: UTC, so folders sort by time.
pub fn default_out(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "bench-results/local/{name}-{}",
        crate::results::utc_stamp(std::time::SystemTime::now())
    ))
}
