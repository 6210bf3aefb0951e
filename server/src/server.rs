//! Start-up, the shard threads, signals and shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};

use crate::channel::Inbox;
use crate::cluster::link::{self, LinkSpec};
use crate::cluster::metrics::{unix_ns, ClusterMetrics};
use crate::cluster::node::{Node, NodeConfig};
use crate::cluster::{self, ClusterOptions, Interest};
use crate::config::{plan, Args, DiscoveryAddr, Plan};
use crate::core::{Admission, Limits};
use crate::discovery::{self, DiscoveryMetrics};
use crate::metrics::{render_prometheus, summary_line, ShardMetrics};
use crate::portcheck;
use crate::rooms::{shard_bit, Registry};
use crate::shard::{self, ShardSpec};
use engine::{sys, EngineChoice, EngineConfig, EngineKind, RingMode};

/// Runs the server until SIGINT or SIGTERM; the exit code of the process.
pub fn main(args: Args) -> ExitCode {
    install_panic_hook();
    match Server::start(args) {
        Ok(server) => server.run_until_signalled(),
        Err(msg) => {
            eprintln!("ringroom-server: {msg}");
            ExitCode::from(1)
        }
    }
}

/// A panic in any thread ends the process with a message and a non-zero
/// status: a shard that died would leave its connections silently dead.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        eprintln!(
            "ringroom-server: a thread panicked; aborting rather than serving half the connections"
        );
        std::process::abort();
    }));
}

struct Server {
    threads: Vec<JoinHandle<()>>,
    wakers: Vec<std::fs::File>,
    stop: Arc<AtomicBool>,
    /// The cluster link's thread, stopped after the shards have drained.
    link: Option<LinkThread>,
    metrics: Vec<Arc<ShardMetrics>>,
    stats_interval: Option<Duration>,
    /// SIGINT and SIGTERM, caught from before the ready line on: a signal
    /// sent as soon as the server says it is ready must drain it, not kill it.
    signals: signal_hook::iterator::Signals,
}

/// The cluster link's thread and how to stop it.
struct LinkThread {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    waker: std::fs::File,
}

/// The cluster as this node joins it: its id and the link's ends.
struct ClusterPlan {
    opts: ClusterOptions,
    node_id: u16,
    incarnation: u64,
    interest: Arc<Interest>,
    inbox: Arc<Inbox>,
    wake: OwnedFd,
}

impl Server {
    fn start(args: Args) -> Result<Self, String> {
        check_args(&args)?;
        let cluster = plan_cluster(&args)?;
        let engine = choose_engine(args.engine, args.ring_mode)?;
        let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
        let nofile = rlimit::increase_nofile_limit(u64::MAX)
            .map_err(|e| format!("cannot read or raise RLIMIT_NOFILE: {e}"))?;
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let plan = plan(
            args.shards,
            cores.len().max(1),
            args.max_conns,
            nofile,
            engine,
        )?;
        if let Some(note) = &plan.note {
            eprintln!("ringroom-server: {note}");
        }

        // Every address is bound before any shard starts: a port another
        // process holds is refused here, with nothing started.
        let listeners = bind_listeners(&args, plan.shards)?;
        let local = listeners.1;
        let discovery_socket = match args.discovery {
            DiscoveryAddr::Off => None,
            DiscoveryAddr::At(addr) => Some(discovery::bind(addr)?),
            DiscoveryAddr::Default => Some(discovery::bind(SocketAddr::new(
                local.ip(),
                local.port().wrapping_add(1),
            ))?),
        };
        let metrics_listener = match args.metrics.0 {
            Some(addr) => Some(bind_metrics(addr)?),
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let admission = Arc::new(Admission::new(plan.max_conns));
        let metrics: Vec<Arc<ShardMetrics>> = (0..plan.shards)
            .map(|_| Arc::new(ShardMetrics::default()))
            .collect();

        if cluster.is_some() && plan.shards > 255 {
            return Err(
                "--cluster takes at most 255 shards (a connection id holds the node and the shard)"
                    .into(),
            );
        }
        let registry = Arc::new(Registry::with_cluster(
            args.max_rooms,
            plan.shards,
            cluster.as_ref().map(|c| c.interest.clone()),
        ));
        // One eventfd per shard wakes its ring: for its inbox and for stopping.
        let mut wakes = Vec::new();
        let mut wakers = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..plan.shards {
            let wake = sys::eventfd().map_err(|e| format!("eventfd: {e}"))?;
            let dup = || wake.try_clone().map_err(|e| format!("dup eventfd: {e}"));
            wakers.push(std::fs::File::from(dup()?));
            inboxes.push(Arc::new(Inbox::new(
                args.channel_capacity,
                std::fs::File::from(dup()?),
            )));
            wakes.push(wake);
        }
        if let Some(c) = &cluster {
            inboxes.push(c.inbox.clone()); // the link comes after the shards
        }
        let inboxes = Arc::new(inboxes);
        let node = cluster.as_ref().map(|c| c.node_id);

        let (ready_tx, ready_rx) = mpsc::channel();
        let mut threads = Vec::new();
        for ((i, listener), wake) in listeners.0.into_iter().enumerate().zip(wakes) {
            let spec = ShardSpec {
                limits: limits(&args, &plan, i, node),
                kind: engine,
                engine: EngineConfig {
                    sq_entries: args.sq_entries,
                    slots: plan.slots_per_shard,
                    buffers: u16::try_from(receive_buffers(&args, plan.shards))
                        .expect("checked: at most 32768"),
                    buffer_size: args.buffer_size,
                    mode: args.ring_mode,
                    batch_wait_us: args.batch_wait_us,
                },
                listener,
                wake,
                stop: stop.clone(),
                admission: admission.clone(),
                registry: registry.clone(),
                inboxes: inboxes.clone(),
                channel_capacity: args.channel_capacity,
                metrics: metrics[i].clone(),
                panic_after: args
                    .test_panic_after_ms
                    .filter(|_| i == 0)
                    .map(Duration::from_millis),
                delay: args.test_delay_us.map(Duration::from_micros),
            };
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    shard::run(spec, |r| {
                        let _ = tx.send((i, r));
                    });
                })
                .map_err(|e| format!("cannot start shard thread {i}: {e}"))?;
            threads.push(thread);
        }
        drop(ready_tx);

        let mut server = Self {
            threads,
            wakers,
            stop,
            link: None,
            metrics,
            stats_interval: (args.stats_interval > 0)
                .then(|| Duration::from_secs(args.stats_interval)),
            signals,
        };
        for _ in 0..plan.shards {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok((_, Ok(()))) => {}
                Ok((i, Err(e))) => {
                    server.stop_all();
                    return Err(format!("shard {i}: {e}"));
                }
                Err(_) => {
                    server.stop_all();
                    return Err("a shard did not start within 10 s".into());
                }
            }
        }

        let cluster_metrics = Arc::new(ClusterMetrics::default());
        let mut cluster_note = String::new();
        if let Some(c) = cluster {
            let (thread, note) =
                start_link(c, &args, &plan, &registry, &inboxes, &cluster_metrics)?;
            server.link = Some(thread);
            cluster_note = note;
        }

        let discovery_metrics = Arc::new(DiscoveryMetrics::default());
        let discovery_addr = match discovery_socket {
            Some(socket) => Some(discovery::serve(
                socket,
                local.port(),
                &args.name,
                discovery_metrics.clone(),
            )?),
            None => None,
        };
        let metrics_addr = match metrics_listener {
            Some(listener) => Some(serve_metrics(
                listener,
                engine,
                server.metrics.clone(),
                discovery_metrics,
                node.map(|id| (id, cluster_metrics.clone())),
            )?),
            None => None,
        };
        let off = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        let (held, mode) = match engine {
            EngineKind::Uring => (
                format!(
                    "{} fixed-file slots per shard, RLIMIT_NOFILE {nofile}",
                    plan.slots_per_shard
                ),
                format!(", ring mode {:?}", args.ring_mode),
            ),
            EngineKind::Epoll => (
                format!("one process fd each, RLIMIT_NOFILE {nofile}"),
                String::new(),
            ),
        };
        println!(
            "ringroom-server ready: listen {local}, engine {engine}, shards {}, capacity {} \
             connections ({held}), metrics {}, discovery {}{mode}{cluster_note}",
            plan.shards,
            plan.max_conns,
            off(metrics_addr),
            off(discovery_addr),
        );
        let _ = std::io::stdout().flush();
        Ok(server)
    }

    fn run_until_signalled(mut self) -> ExitCode {
        let mut next_stats = self.stats_interval.map(|i| Instant::now() + i);
        'wait: loop {
            if let Some(signal) = self.signals.pending().next() {
                eprintln!(
                    "ringroom-server: {} received, draining connections",
                    if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    }
                );
                break 'wait;
            }
            if let (Some(at), Some(every)) = (next_stats, self.stats_interval) {
                if Instant::now() >= at {
                    eprintln!("ringroom-server: {}", summary_line(&self.metrics));
                    next_stats = Some(at + every);
                }
            }
            if self.threads.iter().any(|t| t.is_finished()) {
                eprintln!("ringroom-server: a shard stopped unexpectedly");
                self.stop_all();
                return ExitCode::from(1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop_all();
        eprintln!("ringroom-server: stopped; {}", summary_line(&self.metrics));
        ExitCode::SUCCESS
    }

    /// Tells every shard to stop, and waits for them to drain.
    fn stop_all(&mut self) {
        self.stop.store(true, Ordering::Release);
        for waker in &mut self.wakers {
            let _ = waker.write_all(&1u64.to_ne_bytes());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The shards' last closes told the link which rooms to leave.
        if let Some(mut link) = self.link.take() {
            link.stop.store(true, Ordering::Release);
            let _ = link.waker.write_all(&1u64.to_ne_bytes());
            let _ = link.thread.join();
        }
    }
}

/// With `--cluster`: the options checked, the node id chosen (and checked
/// with the cluster if a NATS server answers within 3 s), and the link's
/// inbox, interest and eventfd made.
fn plan_cluster(args: &Args) -> Result<Option<ClusterPlan>, String> {
    let Some(spec) = &args.cluster else {
        if args.node_id.is_some() {
            return Err("--node-id needs --cluster".into());
        }
        return Ok(None);
    };
    if args.node_id == Some(0) {
        return Err("--node-id must be 1..65535".into());
    }
    if args.cluster_sync_ms == 0 || args.cluster_ping_ms == 0 {
        return Err("--cluster-sync-ms and --cluster-ping-ms must be positive".into());
    }
    let opts = ClusterOptions {
        seeds: cluster::parse_seeds(spec)?,
        node_id: args.node_id,
        subjects: cluster::subject::Subjects::new(&args.cluster_prefix)?,
        sync_ms: args.cluster_sync_ms,
        ping_ms: args.cluster_ping_ms,
    };
    let incarnation = unix_ns();
    let (node_id, checked) = cluster::choose_node_id(&opts, incarnation, Duration::from_secs(3))?;
    if !checked {
        eprintln!(
            "ringroom-server: cluster: no NATS server answered at start; node id {node_id}              is used without checking that no other node has it"
        );
    }
    let wake = sys::eventfd().map_err(|e| format!("eventfd: {e}"))?;
    let dup = || {
        wake.try_clone()
            .map(std::fs::File::from)
            .map_err(|e| format!("dup eventfd: {e}"))
    };
    let interest = Arc::new(Interest::new(dup()?));
    let inbox = Arc::new(Inbox::new(args.channel_capacity, dup()?));
    Ok(Some(ClusterPlan {
        opts,
        node_id,
        incarnation,
        interest,
        inbox,
        wake,
    }))
}

/// Starts the cluster link and waits (up to 5 s) for it to come up, so
/// that the first JOINs are confirmed; the ready line's words for it.
fn start_link(
    c: ClusterPlan,
    args: &Args,
    plan: &Plan,
    registry: &Arc<Registry>,
    inboxes: &Arc<Vec<Arc<Inbox>>>,
    metrics: &Arc<ClusterMetrics>,
) -> Result<(LinkThread, String), String> {
    let node = Node::new(
        NodeConfig {
            id: c.node_id,
            incarnation: c.incarnation,
            subjects: c.opts.subjects.clone(),
            sync_ms: c.opts.sync_ms,
            ping_ms: c.opts.ping_ms,
            max_payload: args.max_payload,
            stream_window: args.stream_window,
            own_index: plan.shards,
        },
        registry.clone(),
        metrics.clone(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let waker = c
        .wake
        .try_clone()
        .map(std::fs::File::from)
        .map_err(|e| format!("dup eventfd: {e}"))?;
    let spec = LinkSpec {
        node,
        seeds: c.opts.seeds.clone(),
        inboxes: inboxes.clone(),
        interest: c.interest,
        wake: std::fs::File::from(c.wake),
        stop: stop.clone(),
        channel_capacity: args.channel_capacity,
    };
    let thread = std::thread::Builder::new()
        .name("cluster-link".into())
        .spawn(move || link::run(spec))
        .map_err(|e| format!("cannot start the cluster link thread: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.link_up.get() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let state = if metrics.link_up.get() == 1 {
        "linked"
    } else {
        eprintln!(
            "ringroom-server: cluster: no NATS server linked within 5 s; serving local rooms              and retrying (JOINs get ERROR GAP until the link is up)"
        );
        "not linked yet"
    };
    let note = format!(
        ", cluster node {} via {} ({state})",
        c.node_id,
        c.opts.seeds.join(",")
    );
    Ok((
        LinkThread {
            thread,
            stop,
            waker,
        },
        note,
    ))
}

/// Receive buffers of each shard's ring: `--buffers`, else the engine's
/// share for this many shards (a C1M run here has 61, whose 1024 each
/// would be 250 MB of buffers).
fn receive_buffers(args: &Args, shards: usize) -> u32 {
    args.buffers
        .unwrap_or_else(|| u32::from(EngineConfig::buffers_for(shards)))
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.shards == Some(0) {
        return Err("--shards must be at least 1 (leave it out for one per core)".into());
    }
    if let Some(b) = args.buffers.filter(|&b| !b.is_power_of_two() || b > 32768) {
        return Err(format!(
            "--buffers must be a power of two up to 32768, not {b}"
        ));
    }
    if args.buffer_size == 0 {
        return Err("--buffer-size must be positive".into());
    }
    if !(args.min_heartbeat_ms <= args.heartbeat_ms && args.heartbeat_ms <= args.max_heartbeat_ms) {
        return Err(format!(
            "need --min-heartbeat-ms ({}) <= --heartbeat-ms ({}) <= --max-heartbeat-ms ({})",
            args.min_heartbeat_ms, args.heartbeat_ms, args.max_heartbeat_ms
        ));
    }
    if args.min_heartbeat_ms == 0 || args.idle_factor == 0 || args.tick_ms == 0 {
        return Err("--min-heartbeat-ms, --idle-factor and --tick-ms must be positive".into());
    }
    if args.queue_bytes < 4096 || args.queue_bytes > u32::MAX as usize / 2 {
        return Err("--queue-bytes must be between 4096 and 2 GiB".into());
    }
    if args.max_payload < 256 {
        return Err("--max-payload must be at least 256".into());
    }
    if args.stream_window < usize::try_from(args.max_payload).unwrap_or(usize::MAX) + 64 {
        return Err(format!(
            "--stream-window ({}) must hold at least one frame of --max-payload ({}) bytes",
            args.stream_window, args.max_payload
        ));
    }
    if args.slow_consumer_ms == 0 || args.frame_timeout_ms == Some(0) {
        return Err("--slow-consumer-ms and --frame-timeout-ms must be positive".into());
    }
    if args.partial_bytes < usize::try_from(args.max_payload).unwrap_or(usize::MAX) {
        return Err(format!(
            "--partial-bytes ({}) must hold at least one frame of --max-payload ({}) bytes",
            args.partial_bytes, args.max_payload
        ));
    }
    if args.channel_capacity == 0 || args.max_rooms == 0 {
        return Err("--channel-capacity and --max-rooms must be positive".into());
    }
    if args.sq_entries == 0 || !args.sq_entries.is_power_of_two() || args.sq_entries > 32768 {
        return Err("--sq-entries must be a power of two up to 32768".into());
    }
    Ok(())
}

/// Resolves `--engine` once for every shard; `auto`'s fallback is said on
/// stderr in one line.
fn choose_engine(choice: EngineChoice, mode: RingMode) -> Result<EngineKind, String> {
    // A kernel too old for what the server asks of io_uring is a refusal too.
    let too_old = if choice == EngineChoice::Epoll {
        None
    } else {
        check_kernel(mode).err()
    };
    let (kind, note) = match (too_old, choice) {
        (Some(e), EngineChoice::Uring) => return Err(e),
        (Some(e), _) => (
            EngineKind::Epoll,
            Some(format!(
                "engine: epoll, since io_uring is refused here: {e}"
            )),
        ),
        (None, _) => engine::resolve(choice, mode).map_err(|e| e.to_string())?,
    };
    if let Some(note) = note {
        eprintln!("ringroom-server: {note}");
    }
    Ok(kind)
}

fn check_kernel(mode: RingMode) -> Result<(), String> {
    let Some(version) = sys::kernel_version() else {
        return Ok(()); // unknown: let the ring probe speak
    };
    let need = if mode == RingMode::Defer {
        (6, 1)
    } else {
        (6, 0)
    };
    if version < need {
        return Err(format!(
            "Linux {}.{} is too old: ringroom needs {}.{} (multishot receive into a \
             provided-buffer ring: 6.0; DEFER_TASKRUN: 6.1, else use --ring-mode coop)",
            version.0, version.1, need.0, need.1
        ));
    }
    Ok(())
}

fn limits(args: &Args, plan: &Plan, shard: usize, node: Option<u16>) -> Limits {
    let (conn_id_base, cluster_bit) = match node {
        // node (16 bits) | shard (8) | sequence (40): unique in the cluster.
        Some(id) => (
            (u64::from(id) << 48) | ((shard as u64) << 40),
            shard_bit(plan.shards),
        ),
        None => ((shard as u64) << 48, 0),
    };
    Limits {
        conn_id_base,
        cluster_bit,
        shard: shard as u16,
        slots: plan.slots_per_shard,
        max_payload: args.max_payload,
        queue_bytes: args.queue_bytes,
        heartbeat_ms: args.heartbeat_ms,
        min_heartbeat_ms: args.min_heartbeat_ms,
        max_heartbeat_ms: args.max_heartbeat_ms,
        idle_factor: args.idle_factor,
        drain_ms: args.drain_ms,
        tick_ms: args.tick_ms,
        max_rooms_per_conn: args.max_rooms_per_conn,
        max_streams: args.max_streams,
        stream_window: args.stream_window,
        slow_consumer_ms: args.slow_consumer_ms,
        frame_timeout_ms: args.frame_timeout_ms,
        partial_bytes: args.partial_bytes,
        max_parked: crate::core::parked_bound(receive_buffers(args, plan.shards), args.buffer_size),
    }
}

/// One SO_REUSEPORT listener per shard, all on the same port (the first one
/// picks it when --listen names port 0). Accepted sockets inherit TCP_NODELAY,
/// keepalive and TCP_USER_TIMEOUT from their listener.
///
/// SO_REUSEPORT would let another process of the same user join the group
/// and take a share of the connections: another listener on an overlapping
/// address is refused, looked for before binding and again after (so that of
/// two servers racing, neither goes on thinking it is alone).
fn bind_listeners(args: &Args, shards: usize) -> Result<(Vec<OwnedFd>, SocketAddr), String> {
    let mut addr = args.listen;
    if addr.port() != 0 {
        let others = portcheck::foreign_listeners(addr, &[]);
        if !others.is_empty() {
            return Err(portcheck::refusal(addr, &others));
        }
    }
    let mut fds = Vec::with_capacity(shards);
    for _ in 0..shards {
        let socket = listener(addr, args).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "cannot listen on {addr}: another socket holds that address; stop the \
                     process that has it, or choose another --listen"
                )
            } else {
                format!("cannot listen on {addr}: {e}")
            }
        })?;
        if addr.port() == 0 {
            addr = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or("cannot read the listener's address")?;
        }
        fds.push(OwnedFd::from(socket));
    }
    let ours: Vec<u64> = fds.iter().filter_map(portcheck::inode_of).collect();
    let others = portcheck::foreign_listeners(addr, &ours);
    if !others.is_empty() {
        return Err(portcheck::refusal(addr, &others));
    }
    Ok((fds, addr))
}

fn listener(addr: SocketAddr, args: &Args) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(k) = args.tcp_keepalive {
        let keepalive = TcpKeepalive::new()
            .with_time(k.idle)
            .with_interval(k.interval)
            .with_retries(k.count);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    if let Some(ms) = args.tcp_user_timeout {
        socket.set_tcp_user_timeout(Some(Duration::from_millis(u64::from(ms))))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(args.backlog)?;
    Ok(socket)
}

/// Binds the metrics port (a listening socket without SO_REUSEPORT: one
/// another process holds is EADDRINUSE).
fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot serve metrics on {addr}: another process holds that port (another \
                 ringroom-server?); choose one with --metrics ADDR, or --metrics off"
            )
        } else {
            format!("cannot serve metrics on {addr}: {e}")
        }
    })
}

/// Serves `GET /metrics` on `listener` from a thread of its own, one request
/// at a time, each bounded in size and time.
fn serve_metrics(
    listener: TcpListener,
    engine: EngineKind,
    shards: Vec<Arc<ShardMetrics>>,
    discovery: Arc<DiscoveryMetrics>,
    cluster: Option<(u16, Arc<ClusterMetrics>)>,
) -> Result<SocketAddr, String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let mut request = [0u8; 4096];
                let mut len = 0;
                while len < request.len() && !request[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut request[len..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
                let response = if request[..len].starts_with(b"GET /metrics ") {
                    let mut body = render_prometheus(&shards);
                    body.push_str(&format!(
                        "# HELP ringroom_engine_info The I/O engine the shards run.\n\
                         # TYPE ringroom_engine_info gauge\n\
                         ringroom_engine_info{{engine=\"{engine}\"}} 1\n\
                         # HELP ringroom_discovery_replies_total Discovery requests answered.\n\
                         # TYPE ringroom_discovery_replies_total counter\n\
                         ringroom_discovery_replies_total {}\n\
                         # HELP ringroom_discovery_ignored_total Datagrams on the discovery port that were not requests.\n\
                         # TYPE ringroom_discovery_ignored_total counter\n\
                         ringroom_discovery_ignored_total {}\n",
                        discovery.replies.get(),
                        discovery.ignored.get()
                    ));
                    if let Some((node, m)) = &cluster {
                        m.render(*node, &mut body);
                    }
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                };
                let _ = stream.write_all(response.as_bytes());
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    #[test]
    fn many_shards_share_the_receive_buffers_unless_told() {
        let args = |line: &[&str]| Args::from_args(&["ringroom-server"], line).unwrap();
        let default = args(&[]);
        assert_eq!(receive_buffers(&default, 2), 1024);
        assert_eq!(receive_buffers(&default, 7), 1024);
        assert_eq!(receive_buffers(&default, 61), 128, "C1M's 61 shards");
        let told = args(&["--buffers", "4096"]);
        assert_eq!(receive_buffers(&told, 61), 4096);
    }
}
