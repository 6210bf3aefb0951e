//! One shard's event loop: the engine's completions in, the core's actions out.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::{Action, Admission, Limits, RecvEnd, ShardCore};
use crate::engine::{Completion, Engine, EngineConfig, StartError};
use crate::metrics::ShardMetrics;

/// Everything a shard thread is started with.
pub struct ShardSpec {
    /// The core's limits (includes the shard number).
    pub limits: Limits,
    /// The ring's sizes.
    pub engine: EngineConfig,
    /// This shard's SO_REUSEPORT listener.
    pub listener: OwnedFd,
    /// The eventfd that wakes this shard.
    pub wake: OwnedFd,
    /// Set when the server must stop.
    pub stop: Arc<AtomicBool>,
    /// The server-wide connection count.
    pub admission: Arc<Admission>,
    /// This shard's counters.
    pub metrics: Arc<ShardMetrics>,
    /// For tests: panic this long after start.
    pub panic_after: Option<Duration>,
}

/// Builds the shard's ring, reports readiness through `ready`, then runs until
/// the server stops and every connection is drained.
pub fn run(spec: ShardSpec, ready: impl FnOnce(Result<(), StartError>)) {
    let mut engine = match Engine::new(&spec.engine, spec.listener, spec.wake) {
        Ok(e) => e,
        Err(e) => return ready(Err(e)),
    };
    ready(Ok(()));
    let clock = Instant::now();
    let now_ms = |clock: &Instant| clock.elapsed().as_millis() as u64;
    let drain_ms = spec.limits.drain_ms;
    let mut core = ShardCore::new(spec.limits, spec.admission, spec.metrics.clone(), 0);
    engine.arm_accept();
    engine.arm_wake();

    let mut actions: Vec<Action> = Vec::with_capacity(4096);
    let mut accept_retry_at: Option<u64> = None;
    let mut stop_deadline: Option<u64> = None;
    let panic_at = spec.panic_after.map(|d| d.as_millis() as u64);

    loop {
        let now = now_ms(&clock);
        let wait = core.next_tick_at_ms().saturating_sub(now);
        if let Err(e) = engine.submit_and_wait(Duration::from_millis(wait)) {
            panic!("shard {}: io_uring_enter failed: {e}", core.limits().shard);
        }
        let now = now_ms(&clock);
        if panic_at.is_some_and(|at| now >= at) {
            panic!(
                "shard {}: test panic requested by --test-panic-after-ms",
                core.limits().shard
            );
        }

        let n = engine.reap();
        if n > 0 {
            spec.metrics.batches.inc();
            spec.metrics.completions.add(n as u64);
        }
        let mut woken = false;
        for i in 0..n {
            match engine.completion(i) {
                Completion::Accepted { slot, more } => {
                    core.accepted(slot, now);
                    if !more && stop_deadline.is_none() {
                        engine.arm_accept();
                    }
                }
                Completion::AcceptEnded { errno } => {
                    if errno != libc::ECANCELED {
                        spec.metrics.accept_errors.inc();
                        // ENFILE: the table is full. Retry after a tick, by
                        // which time closes may have freed slots.
                        accept_retry_at = Some(now + core.limits().tick_ms);
                    }
                }
                Completion::Received {
                    slot,
                    gen,
                    buf,
                    more,
                } => {
                    core.received(slot, gen, engine.data(&buf), now);
                    engine.recycle(buf);
                    if !more {
                        core.recv_ended(slot, gen, RecvEnd::Stopped);
                    }
                }
                Completion::RecvEnded { slot, gen, end } => core.recv_ended(slot, gen, end),
                Completion::Sent {
                    slot,
                    gen,
                    buf,
                    result,
                } => core.sent(slot, gen, buf, result),
                Completion::Woken => woken = true,
                Completion::Done => {}
            }
        }
        // Buffers go back before any receive is re-armed after ENOBUFS.
        engine.commit_buffers();

        if woken {
            if spec.stop.load(Ordering::Acquire) && stop_deadline.is_none() {
                engine.cancel_accept();
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
