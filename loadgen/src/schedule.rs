//! Open-loop schedules: every send has a planned time, fixed in advance, and
//! latency is measured from it. If the server (or the load generator itself)
//! stalls, the sends that fell due meanwhile still go out, each stamped with
//! its own planned time, so the stall shows up in the latency tail instead of
//! silently thinning the load (no coordinated omission).

use std::time::Duration;

/// Most planned sends one call to [`Schedule::due`] hands out; the rest wait
/// for the next call, in order.
pub const MAX_DUE_PER_CALL: usize = 1024;

/// One connection's planned send times: every `period` from its phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    next: Duration,
    period: Duration,
}

impl Schedule {
    /// Sends at `phase`, `phase + period`, ... (times since the run's start).
    pub fn new(period: Duration, phase: Duration) -> Self {
        assert!(!period.is_zero(), "a schedule needs a period");
        Self {
            next: phase,
            period,
        }
    }

    /// A schedule with a uniformly random phase in `[0, period)`, so that many
    /// connections with the same period do not send in the same instant.
    pub fn jittered(period: Duration, rng: &mut fastrand::Rng) -> Self {
        let nanos = period.as_nanos().min(u128::from(u64::MAX)) as u64;
        Self::new(period, Duration::from_nanos(rng.u64(0..nanos.max(1))))
    }

    /// The next planned time.
    pub fn next(&self) -> Duration {
        self.next
    }

    /// Moves every planned time due by `now` into `out` (oldest first, at
    /// most [`MAX_DUE_PER_CALL`]).
    pub fn due(&mut self, now: Duration, out: &mut Vec<Duration>) {
        let mut n = 0;
        while self.next <= now && n < MAX_DUE_PER_CALL {
            out.push(self.next);
            self.next += self.period;
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn sends_fall_due_at_their_planned_times() {
        let mut s = Schedule::new(10 * MS, 3 * MS);
        let mut out = Vec::new();
        s.due(2 * MS, &mut out);
        assert!(out.is_empty());
        s.due(3 * MS, &mut out);
        assert_eq!(out, [3 * MS]);
        out.clear();
        s.due(25 * MS, &mut out);
        assert_eq!(out, [13 * MS, 23 * MS]);
        assert_eq!(s.next(), 33 * MS);
    }

    #[test]
    fn a_late_caller_gets_every_missed_send_with_its_own_time() {
        let mut s = Schedule::new(MS, Duration::ZERO);
        let mut out = Vec::new();
        s.due(5000 * MS, &mut out);
        assert_eq!(out.len(), MAX_DUE_PER_CALL, "bounded per call");
        assert_eq!(out[1], MS);
        out.clear();
        while s.next() <= 5000 * MS {
            s.due(5000 * MS, &mut out);
        }
        assert_eq!(out.len(), 5001 - MAX_DUE_PER_CALL, "nothing skipped");
    }

    #[test]
    fn jitter_spreads_phases_over_the_period() {
        let mut rng = fastrand::Rng::with_seed(7);
        let period = 100 * MS;
        let mut buckets = [0usize; 10];
        for _ in 0..10_000 {
            let s = Schedule::jittered(period, &mut rng);
            assert!(s.next() < period);
            buckets[(s.next().as_millis() / 10) as usize] += 1;
        }
        // Uniform: about 1,000 in each tenth of the period.
        assert!(
            buckets.iter().all(|&b| (850..1150).contains(&b)),
            "{buckets:?}"
        );
    }

    /// A simulated server that stops answering for one second. Measured from
    /// the planned times, the stall fills the tail; a closed-loop client, which
    /// waits for each answer before sending the next, records one slow sample
    /// and hides the rest (coordinated omission).
    #[test]
    fn a_stalled_server_raises_the_tail() {
        let stall = (1000 * MS, 2000 * MS); // nothing is answered in between
        let answer = |sent: Duration| {
            if sent >= stall.0 && sent < stall.1 {
                stall.1
            } else {
                sent + MS
            }
        };
        let p99 = |mut v: Vec<Duration>| {
            v.sort_unstable();
            v[v.len() * 99 / 100]
        };

        // Open loop: each send goes at its planned time, latency from it.
        let mut s = Schedule::new(10 * MS, Duration::ZERO);
        let (mut out, mut open_loop) = (Vec::new(), Vec::new());
        s.due(3000 * MS - MS, &mut out);
        for &planned in &out {
            open_loop.push(answer(planned) - planned);
        }
        assert_eq!(open_loop.len(), 300, "every planned send counted");

        // Closed loop: the next send waits for the previous answer.
        let (mut closed_loop, mut t) = (Vec::new(), Duration::ZERO);
        while t < 3000 * MS {
            let answered = answer(t);
            closed_loop.push(answered - t);
            t = (answered).max(t + 10 * MS);
        }

        assert!(
            p99(open_loop) >= 900 * MS,
            "the stall is in the open-loop tail"
        );
        assert!(p99(closed_loop.clone()) < 10 * MS, "closed loop hides it");
        assert!(closed_loop.len() < 210, "and sends less");
    }
}
