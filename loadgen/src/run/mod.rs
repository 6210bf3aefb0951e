//! One run of a scenario: start the server if there is none, size and start
//! the workers, add up what they measured, sample /proc, print the table,
//! write the result folder, and judge the run.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use engine::EngineKind;

use crate::cli::{plan, run_name, Args, Plan, Scenario};
use crate::client::{Pinging, RoomPlan};
use crate::own_server::OwnServer;
use crate::processes::{self, Part};
use crate::sources::{choose_loopback_sources, local_port_range, parse_sources, Capacity};
use crate::worker::{self, share, HoldGate, Progress, WorkerSpec};
use crate::{churn, netstat, procstat, storm};

mod summary;
mod totals;
mod verdict;

pub use summary::default_out;
use summary::{ms, print_summary, record, show_progress, Run};
use totals::{add_up, Totals};
use verdict::{storm_verdict, verdict, Delivery};

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
    let mut sources: Vec<IpAddr> = if args.source.is_none() && is_v6_run(&args.target) {
        vec![IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)] // the default follows the target
    } else {
        parse_sources(&plan.source)?
    };
    check_families(&sources, &args.target)?;
    let ports = local_port_range()?;
    let targets = args.target.len().max(1);
    let mut capacity = Capacity::new(sources.len(), targets, ports);
    // No target: loadgen's own server, on IPv4 loopback. (The families
    // were checked: all targets are of one.)
    let on_loopback = args.target.iter().all(|t| t.ip().is_loopback());
    let loopback_v4 = on_loopback && !is_v6_run(&args.target);
    if args.source.is_none() && loopback_v4 && capacity.check(plan.conns as u64).is_err() {
        // On loopback every 127/8 address is a source: take as many as the
        // run needs rather than refuse it (each part of a split run makes
        // the same choice from the same numbers).
        let chosen = choose_loopback_sources(&capacity, plan.conns as u64)?;
        println!(
            "sources: {} connections do not fit the default --source {}; using {chosen} \
             (--source chooses others)",
            plan.conns, plan.source
        );
        plan.source = chosen;
        sources = parse_sources(&plan.source)?;
        capacity = Capacity::new(sources.len(), targets, ports);
    }
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
    // Both ends of a loopback run are this machine's sockets.
    let sockets = plan.conns as u64 * if on_loopback { 2 } else { 1 };
    if let Some(warning) = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
        .ok()
        .and_then(|t| netstat::tcp_mem_warning(&t, sockets))
    {
        println!("{warning}");
    }
    if args.scenario == Scenario::Churn && (parts > 1 || part.is_part()) {
        return Err("--scenario churn runs in one process (its figures are not merged)".into());
    }
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
    let delivery = match s.rooms {
        Some(_) => Delivery::EveryMember,
        None => Delivery::NoRooms,
    };
    verdict(plan, &s.counts, order, delivery)
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
    let planned_ramp = Duration::from_secs_f64(plan.conns as f64 / plan.connect_rate);
    // The plan checked the rooms options.
    let rooms = args.scenario.has_rooms().then(|| RoomPlan {
        rooms: args.rooms,
        conns: whole.conns as u64,
        period: Duration::from_secs_f64(1.0 / args.publish_rate.0),
        payload: args.payload,
        // Publishing starts a second after the ramp, once every member has joined.
        start: planned_ramp + Duration::from_secs(1),
    });
    let hold = Duration::from_secs(plan.duration);
    let churn_window = (args.scenario == Scenario::Churn)
        .then(|| churn::Window::new(plan.conns, planned_ramp, hold, args.churn_rate.0));
    let progress: Vec<Arc<Progress>> = (0..workers).map(|_| Arc::default()).collect();
    let gate = HoldGate::new(workers);
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
                hold,
                churn: churn_window.map(|w| w.for_worker(conns, plan.conns)),
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
                gate: gate.clone(),
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
    let netstat_before = netstat::Sample::read();
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
    let churn_thread = churn_window.map(|w| churn::spawn(w, server_pid, started, gate.clone()));
    show_progress(&handles, &progress, plan.conns, started);
    let Totals {
        counts,
        connect,
        rtt,
        intervals,
        up_per_second,
        connects_per_second,
        ramp_lowest,
        delivery,
        delivery_split,
        order,
        peak,
        ramp,
        churn_connect,
    } = add_up(handles)?;
    // The window as it ran: moved by how late the hold started.
    let (churn_report, churn_window) = match churn_thread {
        Some(thread) => {
            let (samples, w) = thread.join().map_err(|_| "the churn thread panicked")?;
            (
                Some(churn::report(&w, &counts, &churn_connect, &samples)),
                Some(w),
            )
        }
        None => (None, None),
    };
    let kernel = netstat::Sample::read()
        .zip(netstat_before)
        .map(|(after, before)| after.since(&before));
    let storm_report = match (storm_thread, &whole.storm) {
        (Some(thread), Some(s)) => {
            let events = thread.join().map_err(|_| "the storm thread panicked")?;
            Some(storm::report(
                s.spec,
                &events,
                &up_per_second,
                &connects_per_second,
                plan.conns as u64,
                kernel.as_ref().map(|k| k.listen_drops),
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
    if let Some(k) = &kernel {
        println!("{}", k.describe());
    }
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
        connects_per_second,
        ramp_lowest: (counts.ramp_slowdowns > 0).then_some(ramp_lowest),
        storm: storm_report.clone(),
        churn: churn_report.clone(),
        kernel: kernel.clone(),
    };
    let result = record(
        args, plan, &targets, workers, &counts, &connect, own_cpu, server_cpu, run,
    );
    println!(
        "| ramp: every connection up after / planned | {:.1} s / {:.1} s |",
        ramp.as_secs_f64(),
        result.planned_ramp_s()
    );
    if let Some(lowest) = result.summary.ramp_lowest_rate_per_s {
        println!(
            "| ramp: slowed down by failed or slow (> 1 s) connects / to | {} times / {lowest:.0} connects/s |",
            counts.ramp_slowdowns
        );
    }
    if result.ramp_ran_late() {
        println!(
            "NOTE: the ramp ran late (took {:.1} s, planned {:.1} s): it slowed down, or \
             connects queued behind each other; the hold started once every connection was \
             up and is measured from {} s",
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
    if let Some(r) = &churn_report {
        println!("{}", churn::describe(r));
    }
    result
        .write(&dir)
        .map_err(|e| format!("cannot write results to {}: {e}", dir.display()))?;
    println!("results in {}", dir.display());
    let judged = match (&storm_report, &churn_report, &churn_window) {
        (Some(r), _, _) => storm_verdict(r, order),
        (None, Some(r), Some(w)) => churn::verdict(r, w, counts.abandoned)
            .and_then(|()| verdict(plan, &counts, order, Delivery::PresentMembers)),
        _ => {
            let delivery = match rooms {
                Some(_) => Delivery::EveryMember,
                None => Delivery::NoRooms,
            };
            verdict(plan, &counts, order, delivery)
        }
    };
    // A failed run says which machine limits the kernel counted as hit.
    judged.map_err(|e| match kernel.map(|k| k.hints()).unwrap_or_default() {
        hints if hints.is_empty() => e,
        hints => format!("{e}\n  the kernel counted: {}", hints.join("\n  ")),
    })
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
