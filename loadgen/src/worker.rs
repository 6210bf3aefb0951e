//! One load-generator worker: a thread with its own io_uring ring and its share
//! of the connections. Sockets are created, bound (`IP_BIND_ADDRESS_NO_PORT`)
//! and connected with the ordinary calls, then moved into the ring's
//! fixed-file table, so their process fds are closed at once: the worker holds
//! more connections than `RLIMIT_NOFILE`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{sys, Engine, EngineConfig, EngineKind, Event, RingMode};
use hdrhistogram::Histogram;
use socket2::{Domain, Socket, Type};

use crate::client::{ChurnPlan, ClientCore, Counts, Pinging, Retry, RoomPlan};
use crate::hlog::Packed;
use crate::ramp::Ramp;
use crate::sources::{target_index, RoomLayout};
use crate::wire::Protocol;

/// What one worker does.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    /// Server addresses, used round-robin.
    pub targets: Vec<SocketAddr>,
    /// Source addresses, used round-robin.
    pub sources: Vec<IpAddr>,
    /// Connections this worker opens.
    pub conns: usize,
    /// This worker's index and the number of workers: connection `k` of this
    /// worker is connection `index + k * workers` of the run, for spreading.
    pub index: usize,
    /// Number of workers.
    pub workers: usize,
    /// Connections opened per second by this worker.
    pub connect_rate: f64,
    /// How long to hold the connections once all are open.
    pub hold: Duration,
    /// The churn of `--scenario churn`: members closed and replaced.
    pub churn: Option<ChurnPlan>,
    /// How connections ping.
    pub pinging: Pinging,
    /// Heartbeat asked for in HELLO (0: the server's default).
    pub heartbeat_ms: u32,
    /// The engine.
    pub kind: EngineKind,
    /// Connection slots of the worker's engine (io_uring: its fixed-file
    /// table, at most `RLIMIT_NOFILE`; epoll: process fds).
    pub slots: u32,
    /// Seed of the jitter.
    pub seed: u64,
    /// Where the worker reports its progress every second.
    pub progress: Arc<Progress>,
    /// Reconnect lost and failed connections with jittered exponential backoff.
    pub reconnect: bool,
    /// The `rooms` scenario, if this is one.
    pub rooms: Option<RoomPlan>,
    /// In a rooms run, the target every publisher is on (else spread).
    pub publishers_on: Option<usize>,
    /// Wire protocol.
    pub protocol: Protocol,
    /// The run's common time origin: publish times are stamped against it, so
    /// a receiver on another worker measures from the same clock.
    pub epoch: Instant,
    /// Where the workers agree when the hold starts.
    pub gate: Arc<HoldGate>,
}

/// The hold starts when every worker's share is up, not when the plan said
/// the ramp would end: a ramp that adapted (slowed down) or fell behind
/// still gets its full `--duration` of everything up. At the latest it
/// starts at [`HoldGate::deadline`], so a run whose ramp never completes
/// still ends.
#[derive(Debug)]
pub struct HoldGate {
    workers: usize,
    done: AtomicU64,
    /// Microseconds since the epoch; `u64::MAX` until every worker is up.
    from_us: AtomicU64,
}

impl HoldGate {
    /// A gate for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self {
            workers,
            done: AtomicU64::new(0),
            from_us: AtomicU64::new(u64::MAX),
        })
    }

    /// A worker's share is up at `now`.
    fn ramp_done(&self, now: Duration) {
        let done = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        if done as usize >= self.workers {
            self.from_us
                .store(now.as_micros() as u64, Ordering::Release);
        }
    }

    /// When the hold starts, once every worker's share is up.
    pub fn hold_from(&self) -> Option<Duration> {
        match self.from_us.load(Ordering::Acquire) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The latest the hold starts for a ramp planned to take `planned`:
    /// three times that and 10 s.
    pub fn deadline(planned: Duration) -> Duration {
        planned * 3 + Duration::from_secs(10)
    }

    /// When the hold starts, as far as is known at `now` for a ramp planned
    /// to take `planned`: when the last worker's share came up, or the
    /// deadline, whichever is first (the deadline only once it has passed).
    pub fn started(&self, now: Duration, planned: Duration) -> Option<Duration> {
        let deadline = Self::deadline(planned);
        match self.hold_from() {
            Some(from) => Some(from.min(deadline)),
            None => (now >= deadline).then_some(deadline),
        }
    }
}

/// Live figures a worker publishes every second, for the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Connections that got WELCOME.
    pub connected: AtomicU64,
    /// PONGs received.
    pub pongs: AtomicU64,
    /// Failed connects plus dropped connections.
    pub errors: AtomicU64,
    /// RTT p99 of the last second, microseconds.
    pub p99_us: AtomicU64,
}

/// Length of one interval of the interval log and of the progress line.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What a worker measured.
#[derive(Debug)]
pub struct WorkerResult {
    /// Counters, including connects that failed before reaching the ring.
    pub counts: Counts,
    /// Connect latency, microseconds.
    pub connect: Histogram<u64>,
    /// The same, of the connections the churn opened.
    pub churn_connect: Histogram<u64>,
    /// PING round trips from their planned time, microseconds.
    pub rtt: Histogram<u64>,
    /// Most connections up (welcomed, not closed) at once.
    pub peak_open: usize,
    /// When (since the run's epoch) this worker's last connection of the ramp
    /// came up: all of its share, or the last one that did.
    pub ramp_done: Duration,
    /// RTTs of each successive second of the run.
    pub intervals: Vec<Packed>,
    /// Connections up at the end of each of those seconds.
    pub up_per_interval: Vec<u64>,
    /// `connect()` calls in each of those seconds (the ramp's and reconnects).
    pub attempts_per_interval: Vec<u64>,
    /// The lowest rate the ramp slowed down to, connects per second.
    pub ramp_lowest: f64,
    /// Room message delivery latency, microseconds.
    pub delivery: Histogram<u64>,
    /// The same, publisher and receiver on the same target.
    pub delivery_same: Histogram<u64>,
    /// The same, on different targets.
    pub delivery_cross: Histogram<u64>,
    /// Room messages never received but covered by a GAP notice.
    pub reported: u64,
    /// Room messages that arrived out of order, twice, or not (yet).
    pub late: u64,
    /// See `late`.
    pub duplicates: u64,
    /// See `late`.
    pub missing: u64,
}

/// Time between the last PUBLISH and closing, so messages in flight arrive.
pub const PUBLISH_GRACE: Duration = Duration::from_secs(1);
/// Time between the last PING and closing, so every PING gets its PONG.
pub const PING_GRACE: Duration = Duration::from_millis(300);

/// Most `connect()` calls one loop turn makes, so that a ramp never starves
/// the completions.
const CONNECTS_PER_TURN: usize = 256;

/// The end of a worker's run: its connections are closing, and it waits
/// while they do, so that they are closed by its own thread and seen as
/// closes by the server, rather than left to the kernel's teardown of the
/// ring (which at C1M finished after the server had timed them out).
#[derive(Debug)]
struct Closing {
    since: Duration,
    /// When the connections still open last went down, and to how many.
    progress_at: Duration,
    open: usize,
    checked_at: Duration,
}

impl Closing {
    /// Longest wait with no connection closing.
    const STALL: Duration = Duration::from_secs(3);
    /// Longest wait in all (a C1M worker closes its 20,000 in a few seconds).
    const LIMIT: Duration = Duration::from_secs(60);
    /// How often the open connections are counted (a scan of the table).
    const CHECK: Duration = Duration::from_millis(100);

    fn new(now: Duration) -> Self {
        Self {
            since: now,
            progress_at: now,
            open: usize::MAX,
            checked_at: now,
        }
    }

    /// Whether to stop waiting: every connection closed, none closed for
    /// [`Closing::STALL`], or [`Closing::LIMIT`] passed. `open` counts the
    /// connections not closed yet; it is called at most every
    /// [`Closing::CHECK`].
    fn over(&mut self, now: Duration, open: impl FnOnce() -> usize) -> bool {
        if now < self.checked_at + Self::CHECK && now > self.since {
            return false;
        }
        self.checked_at = now;
        let open = open();
        if open < self.open {
            self.open = open;
            self.progress_at = now;
        }
        open == 0 || now >= self.progress_at + Self::STALL || now >= self.since + Self::LIMIT
    }
}

/// Runs the worker to the end: ramp, hold, close.
pub fn run(spec: &WorkerSpec) -> Result<WorkerResult, String> {
    let cfg = EngineConfig {
        sq_entries: 4096,
        slots: spec.slots,
        buffers: EngineConfig::buffers_for(spec.workers),
        buffer_size: 4096,
        mode: RingMode::Defer,
        batch_wait_us: 0,
    };
    let wake = sys::eventfd().map_err(|e| format!("eventfd: {e}"))?;
    let mut engine = Engine::new(spec.kind, &cfg, None, wake).map_err(|e| e.to_string())?;
    let mut core = ClientCore::new(spec.pinging, spec.heartbeat_ms, spec.seed);
    core.reserve(spec.slots as usize);
    core.set_reconnect(spec.reconnect);
    core.set_protocol(spec.protocol);
    if let Some(plan) = &spec.rooms {
        core.set_rooms(plan.clone());
    }
    if let Some(plan) = spec.churn {
        core.set_churn(plan);
    }
    let layout = spec.rooms.as_ref().map(|plan| RoomLayout {
        rooms: plan.rooms,
        publishers_on: spec.publishers_on,
    });
    let mut actions = Vec::new();
    let start = spec.epoch;
    let planned_ramp = Duration::from_secs_f64(spec.conns as f64 / spec.connect_rate);
    let mut end = HoldGate::deadline(planned_ramp) + spec.hold;
    let mut ramp = Ramp::new(spec.connect_rate);
    let mut attempts = 0u64;
    let mut attempts_per_interval = Vec::new();
    let mut made = 0usize;
    let mut peak_open = 0;
    let mut ramp_done: Option<Duration> = None;
    let mut last_up = Duration::ZERO;
    let mut closing: Option<Closing> = None;
    let mut intervals = Vec::new();
    let mut up_per_interval = Vec::new();
    let mut next_interval = INTERVAL;
    loop {
        let now = start.elapsed();
        if closing.is_none() {
            let mut allowed = if made < spec.conns {
                ramp.allowed(now).min(spec.conns - made)
            } else {
                0
            };
            // Reconnects first (their own backoff paces them), then the
            // ramp, at most CONNECTS_PER_TURN a turn: what is not made now
            // stays due for the next turn.
            let mut turn = 0;
            while turn < CONNECTS_PER_TURN && engine.free_slots() > 0 {
                let retry = match core.next_due_reconnect(now) {
                    Some(retry) => retry,
                    None if allowed > 0 => {
                        made += 1;
                        allowed -= 1;
                        ramp.started(1);
                        Retry::first((spec.index + (made - 1) * spec.workers) as u64)
                    }
                    None => break,
                };
                turn += 1;
                attempts += 1;
                let i = retry.index as usize;
                let source = spec.sources[i % spec.sources.len()];
                let t = target_index(
                    i,
                    retry.hops,
                    spec.sources.len(),
                    spec.targets.len(),
                    layout,
                );
                let failed = match open_socket(source, spec.targets[t]) {
                    Ok(fd) => match engine.install(fd) {
                        Ok(Some(slot)) => {
                            core.installed_as(slot, start.elapsed(), retry, t as u8);
                            None
                        }
                        // The worker's fixed-file table is full.
                        Ok(None) => Some(libc::EMFILE),
                        Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
                    },
                    Err(e) => Some(e.raw_os_error().unwrap_or(-1)),
                };
                if let Some(errno) = failed {
                    core.connect_failed(retry, errno);
                }
            }
            // Sending stops at the end; the connections close a grace later,
            // so that everything sent can be answered or delivered.
            let grace = if spec.rooms.is_some() {
                PUBLISH_GRACE
            } else {
                PING_GRACE
            };
            if now >= end {
                core.stop_publishing();
            }
            if now >= end + grace {
                core.close_all();
                closing = Some(Closing::new(now));
            }
        }
        let wait = if made < spec.conns || core.reconnects_waiting() > 0 {
            Duration::from_micros(500)
        } else {
            Duration::from_millis(1)
        };
        engine
            .submit_and_wait(wait)
            .map_err(|e| format!("waiting for I/O ({}): {e}", spec.kind))?;
        let now = start.elapsed();
        engine.drain_completions(|event| match event {
            Event::Received { slot, gen, data } => core.received(slot, gen, data, now),
            Event::RecvEnded { slot, gen, end } => core.recv_ended(slot, gen, end),
            Event::Sent {
                slot,
                gen,
                buf,
                result,
            } => core.sent(slot, gen, buf, result),
            Event::Accepted { .. } | Event::AcceptEnded { .. } | Event::Woken => {}
        });
        core.tick(now);
        if let Some(started) = core.take_congestion() {
            if made < spec.conns {
                // Only the ramp adapts: reconnects have their own backoff.
                ramp.congested_by(started, now);
            }
        }
        core.poll_actions(&mut actions);
        for action in actions.drain(..) {
            engine.execute(action);
        }
        if core.up() > peak_open {
            peak_open = core.up();
            last_up = now;
        }
        if ramp_done.is_none() && core.counts.connected >= spec.conns as u64 {
            ramp_done = Some(now);
            spec.gate.ramp_done(now);
        }
        if let Some(from) = spec.gate.started(now, planned_ramp) {
            end = from + spec.hold;
            // The churn follows the hold, however late it starts (once).
            core.start_churn(from.saturating_sub(planned_ramp));
        }
        if now >= next_interval {
            next_interval += INTERVAL;
            let p = &spec.progress;
            let c = &core.counts;
            p.connected.store(c.connected, Ordering::Relaxed);
            p.pongs.store(c.pongs, Ordering::Relaxed);
            let errors = c.failed_by_errno.values().sum::<u64>() + c.dropped;
            p.errors.store(errors, Ordering::Relaxed);
            p.p99_us
                .store(core.interval_rtt.value_at_quantile(0.99), Ordering::Relaxed);
            intervals.push(Packed::of(&core.interval_rtt));
            up_per_interval.push(core.up() as u64);
            attempts_per_interval.push(std::mem::take(&mut attempts));
            core.interval_rtt.reset();
        }
        if let Some(closing) = &mut closing {
            if closing.over(now, || core.open()) {
                break;
            }
        }
    }
    let _ = engine.submit_and_wait(Duration::ZERO);
    let mut counts = core.counts.clone();
    counts.ramp_slowdowns = ramp.slowdowns;
    intervals.push(Packed::of(&core.interval_rtt));
    up_per_interval.push(core.up() as u64);
    attempts_per_interval.push(attempts);
    Ok(WorkerResult {
        up_per_interval,
        attempts_per_interval,
        ramp_lowest: ramp.lowest,
        counts,
        connect: core.connect.clone(),
        churn_connect: core.churn_connect.clone(),
        rtt: core.rtt.clone(),
        peak_open,
        ramp_done: ramp_done.unwrap_or(last_up),
        intervals,
        delivery: core.delivery.clone(),
        delivery_same: core.delivery_same.clone(),
        delivery_cross: core.delivery_cross.clone(),
        reported: core.order.reported,
        late: core.order.late,
        duplicates: core.order.duplicates,
        missing: core.order.missing(),
    })
}

/// A non-blocking TCP socket bound to `source` (port chosen at connect time)
/// and connecting to `target`.
fn open_socket(source: IpAddr, target: SocketAddr) -> io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_reuse_address(true)?;
    if source.is_ipv4() {
        sys::set_bind_address_no_port(&socket)?;
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {} // the ring waits for it
        Err(e) => return Err(e),
    }
    Ok(OwnedFd::from(socket))
}

/// Connections of `total` that worker `index` of `workers` opens.
pub fn share(total: usize, index: usize, workers: usize) -> usize {
    total / workers + usize::from(index < total % workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_starts_when_the_last_worker_is_up() {
        let gate = HoldGate::new(2);
        assert_eq!(gate.hold_from(), None);
        gate.ramp_done(Duration::from_secs(3));
        assert_eq!(gate.hold_from(), None, "one of two");
        gate.ramp_done(Duration::from_secs(7));
        assert_eq!(gate.hold_from(), Some(Duration::from_secs(7)));
        assert_eq!(
            HoldGate::deadline(Duration::from_secs(50)),
            Duration::from_secs(160)
        );
        let planned = Duration::from_secs(1);
        assert_eq!(
            gate.started(Duration::ZERO, planned),
            Some(Duration::from_secs(7))
        );
        let late = HoldGate::new(2);
        assert_eq!(late.started(Duration::from_secs(12), planned), None);
        assert_eq!(
            late.started(Duration::from_secs(13), planned),
            Some(Duration::from_secs(13)),
            "never all up: the deadline"
        );
        late.ramp_done(Duration::from_secs(14));
        late.ramp_done(Duration::from_secs(15));
        assert_eq!(
            late.started(Duration::from_secs(15), planned),
            Some(Duration::from_secs(13)),
            "up after the deadline: the deadline it was"
        );
    }

    #[test]
    fn closing_waits_while_connections_close() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut c = Closing::new(s(100));
        assert!(!c.over(s(100), || 20_000), "the first check counts");
        assert!(!c.over(ms(100_050), || panic!("counted again within CHECK")));
        // Slow progress keeps it waiting well past the stall time...
        for t in 1..=20 {
            assert!(!c.over(s(100 + 2 * t), || 20_000 - 900 * t as usize));
        }
        // ...until nothing closes for STALL.
        assert!(!c.over(ms(142_900), || 2_000));
        assert!(c.over(s(143), || 2_000), "3 s without a close");
        let mut all = Closing::new(s(0));
        assert!(all.over(s(0), || 0), "nothing left open");
        let mut long = Closing::new(s(0));
        for t in 1..60 {
            assert!(!long.over(s(t), || 60 - t as usize));
        }
        assert!(long.over(s(60), || 1), "LIMIT in all");
    }

    #[test]
    fn shares_add_up() {
        for (total, workers) in [(10, 3), (100_000, 2), (1, 4), (0, 2)] {
            let sum: usize = (0..workers).map(|i| share(total, i, workers)).sum();
            assert_eq!(sum, total);
        }
        assert_eq!(share(10, 0, 3), 4);
        assert_eq!(share(10, 2, 3), 3);
    }
}
