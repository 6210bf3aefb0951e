//! One shard's event loop: the engine's completions in, the core's actions out.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel::{Delivery, Inbox, Outboxes};
use crate::core::{Action, Admission, Limits, ShardCore};
use crate::metrics::ShardMetrics;
use crate::rooms::Registry;
use engine::{Engine, EngineConfig, EngineKind, Event, StartError};

/// Everything a shard thread is started with.
pub struct ShardSpec {
    /// The core's limits (includes the shard number).
    pub limits: Limits,
    /// Which engine.
    pub kind: EngineKind,
    /// The engine's sizes.
    pub engine: EngineConfig,
    /// This shard's SO_REUSEPORT listener.
    pub listener: OwnedFd,
    /// The eventfd that wakes this shard.
    pub wake: OwnedFd,
    /// Set when the server must stop.
    pub stop: Arc<AtomicBool>,
    /// The server-wide connection count.
    pub admission: Arc<Admission>,
    /// The server-wide room registry.
    pub registry: Arc<Registry>,
    /// Every shard's inbox, this one's at index `limits.shard`, then the
    /// cluster link's (with `--cluster`).
    pub inboxes: Arc<Vec<Arc<Inbox>>>,
    /// Capacity of each inbox; the outbox to each shard holds as many more.
    pub channel_capacity: usize,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
    /// For tests: panic this long after start.
    pub panic_after: Option<Duration>,
    /// For tests: sleep this long after each batch of completions.
    pub delay: Option<Duration>,
}

/// Builds the shard's engine, reports readiness through `ready`, then runs until
/// the server stops and every connection is drained.
pub fn run(spec: ShardSpec, ready: impl FnOnce(Result<(), StartError>)) {
    let mut engine = match Engine::new(spec.kind, &spec.engine, Some(spec.listener), spec.wake) {
        Ok(e) => e,
        Err(e) => return ready(Err(e)),
    };
    ready(Ok(()));
    let clock = Instant::now();
    let now_ms = |clock: &Instant| clock.elapsed().as_millis() as u64;
    let drain_ms = spec.limits.drain_ms;
    let me = usize::from(spec.limits.shard);
    let mut core = ShardCore::new(
        spec.limits,
        spec.admission,
        spec.registry,
        spec.metrics.clone(),
        0,
    );
    let mut outboxes = Outboxes::new(spec.inboxes.len(), spec.channel_capacity);
    let mut outgoing: Vec<(Delivery, u64)> = Vec::new();
    engine.arm_accept();
    engine.arm_wake();

    let mut actions: Vec<Action> = Vec::with_capacity(4096);
    let mut wakes: Vec<usize> = Vec::new();
    let mut accept_retry_at: Option<u64> = None;
    let mut stop_deadline: Option<u64> = None;
    let panic_at = spec.panic_after.map(|d| d.as_millis() as u64);
    // Input left for the next turn by the byte budgets: come back at once.
    let (mut completions_left, mut inbox_left) = (false, false);

    loop {
        let now = now_ms(&clock);
        let mut wait = core.next_tick_at_ms().saturating_sub(now);
        if outboxes.waiting > 0 {
            wait = wait.min(1); // retry the full inboxes soon
        }
        if core.has_paused() {
            // A flow opened on another shard wakes us; this is the fallback.
            wait = wait.min(PAUSED_POLL_MS);
        }
        if completions_left || inbox_left {
            wait = 0;
        }
        if let Err(e) = engine.submit_and_wait(Duration::from_millis(wait)) {
            panic!("shard {}: waiting for I/O failed: {e}", core.limits().shard);
        }
        core.sends_submitted(engine.completions_ready());
        let now = now_ms(&clock);
        if panic_at.is_some_and(|at| now >= at) {
            panic!(
                "shard {}: test panic requested by --test-panic-after-ms",
                core.limits().shard
            );
        }

        let mut woken = false;
        let mut rearm_accept = false;
        let (n, dry) = engine.drain_completions_up_to(INPUT_BUDGET, |event| match event {
            Event::Accepted { slot, more } => {
                core.accepted(slot, now);
                rearm_accept |= !more;
            }
            Event::AcceptEnded { errno } => {
                if errno != libc::ECANCELED {
                    spec.metrics.accept_errors.inc();
                    // ENFILE: the table is full. Retry after a tick, by
                    // which time closes may have freed slots.
                    accept_retry_at = Some(now + core.limits().tick_ms);
                }
            }
            Event::Received { slot, gen, data } => core.received(slot, gen, data, now),
            Event::RecvEnded { slot, gen, end } => core.recv_ended(slot, gen, end),
            Event::Sent {
                slot,
                gen,
                buf,
                result,
            } => core.sent(slot, gen, buf, result, now),
            Event::Woken => woken = true,
        });
        completions_left = !dry;
        core.completions_read(n, now);
        if !dry {
            spec.metrics.input_budget_hits.inc();
        }
        if n > 0 {
            spec.metrics.batches.inc();
            spec.metrics.completions.add(n as u64);
            if let Some(delay) = spec.delay {
                std::thread::sleep(delay);
            }
        }
        if rearm_accept && stop_deadline.is_none() {
            engine.arm_accept();
        }

        if woken || inbox_left {
            inbox_left = spec.inboxes[me]
                .drain_up_to(INPUT_BUDGET, |delivery| core.deliver_remote(delivery, now));
            if inbox_left {
                spec.metrics.input_budget_hits.inc();
            }
        }
        if woken {
            if spec.stop.load(Ordering::Acquire) && stop_deadline.is_none() {
                engine.stop_accepting();
                core.shutdown(now);
                stop_deadline = Some(now + drain_ms + 1000);
            } else if stop_deadline.is_none() {
                engine.arm_wake();
            }
        }
        if let Some(at) = accept_retry_at {
            if now >= at && stop_deadline.is_none() && !engine.is_accepting() {
                accept_retry_at = None;
                engine.arm_accept();
            }
        }

        // Hand this batch's messages to the other shards.
        core.drain_outgoing(&mut outgoing);
        outboxes.send(&mut outgoing, &spec.inboxes, me, &spec.metrics);
        core.set_channels_full(outboxes.is_full(), now);
        // Publishers on other shards whose flow opened here.
        core.drain_wakes(&mut wakes);
        wakes.sort_unstable();
        wakes.dedup();
        for shard in wakes.drain(..) {
            spec.inboxes[shard].nudge();
        }

        core.tick(now);
        core.poll_actions(&mut actions);
        for action in actions.drain(..) {
            engine.execute(action);
        }

        if core.is_drained() {
            break;
        }
        if stop_deadline.is_some_and(|d| now >= d) {
            eprintln!(
                "shard {}: {} connections still open after the drain time; exiting anyway",
                core.limits().shard,
                core.open()
            );
            break;
        }
    }
    // Hand the last closes to the kernel.
    let _ = engine.submit_and_wait(Duration::ZERO);
}

/// Bytes of input one loop turn takes from the completion queue, and again
/// from the inbox, before it writes what they produced: so a burst is offered
/// to the members' sockets in slices, and what waits in their queues between
/// two write attempts stays small.
const INPUT_BUDGET: usize = 256 << 10;

/// How often a shard with paused publishers looks at them even if no
/// wake-up came.
const PAUSED_POLL_MS: u64 = 10;
