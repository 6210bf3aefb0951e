//! The connect ramp: how many new connections a worker may start now. It
//! runs at the planned rate until the network says "too fast", then backs
//! off as TCP does (halve at once, win back the rate linearly), so a server
//! whose backlog overflows or a port nobody listens on yet slows the ramp
//! rather than burning it on failures.
//!
//! "Too fast" is: a connect refused or failed before WELCOME (ECONNREFUSED,
//! EAGAIN, ETIMEDOUT, EADDRNOTAVAIL, a reset), or a connect that took over
//! [`SLOW_CONNECT`] (its SYN was dropped and retransmitted: a full SYN or
//! accept queue). Failed connects are retried by the clients' own backoff.

use std::time::Duration;

/// A connect slower than this had its SYN retransmitted (the first
/// retransmission is after 1 s): the listener's queues were full.
pub const SLOW_CONNECT: Duration = Duration::from_secs(1);
/// At most one halving per this long: one burst of failures is one signal.
const CUT_EVERY: Duration = Duration::from_millis(200);
/// The slowest the ramp goes, as a share of the planned rate.
const FLOOR: f64 = 1.0 / 64.0;
/// Time to win back the whole planned rate, linearly, once no cut came for
/// [`QUIET`].
const RECOVER: Duration = Duration::from_secs(2);
/// No recovery while failures keep coming: only this long after the last cut.
const QUIET: Duration = Duration::from_millis(500);
/// Credit kept when the loop was away: at most this long of connects in a
/// burst (a stalled loop does not then fire a second's worth at once).
const BURST: Duration = Duration::from_millis(100);

/// One worker's ramp.
#[derive(Debug)]
pub struct Ramp {
    planned: f64,
    rate: f64,
    credit: f64,
    last: Duration,
    last_cut: Option<Duration>,
    /// Times it slowed down.
    pub slowdowns: u64,
    /// The lowest rate it went down to, connects per second.
    pub lowest: f64,
}

impl Ramp {
    /// A ramp of `planned` connects per second, starting at 0.
    pub fn new(planned: f64) -> Self {
        Self {
            planned,
            rate: planned,
            credit: 0.0,
            last: Duration::ZERO,
            last_cut: None,
            slowdowns: 0,
            lowest: planned,
        }
    }

    /// The rate now, connects per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How many connects may start at `now`; the caller says how many it
    /// made with [`Ramp::started`].
    pub fn allowed(&mut self, now: Duration) -> usize {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        let quiet = self.last_cut.is_none_or(|t| now.saturating_sub(t) >= QUIET);
        if self.rate < self.planned && quiet {
            self.rate = (self.rate + self.planned * dt / RECOVER.as_secs_f64()).min(self.planned);
        }
        let cap = (self.rate * BURST.as_secs_f64()).max(1.0);
        self.credit = (self.credit + self.rate * dt).min(cap);
        self.credit as usize
    }

    /// `n` connects were started.
    pub fn started(&mut self, n: usize) {
        self.credit = (self.credit - n as f64).max(0.0);
    }

    /// The network said too fast at `now` (for tests: a connect started now).
    #[cfg(test)]
    fn congested(&mut self, now: Duration) {
        self.congested_by(now, now);
    }

    /// A connect started at `started` said too fast at `now`: halve the
    /// rate (once per [`CUT_EVERY`]), never below [`FLOOR`] of the planned
    /// one. News of a
    /// connect started before the last cut is old (it was made at the rate
    /// already cut, as TCP ignores losses from before its last window cut):
    /// only newer ones cut again.
    pub fn congested_by(&mut self, started: Duration, now: Duration) {
        if self
            .last_cut
            .is_some_and(|t| started < t || now.saturating_sub(t) < CUT_EVERY)
        {
            return;
        }
        self.last_cut = Some(now);
        self.rate = (self.rate / 2.0).max(self.planned * FLOOR);
        self.credit = self.credit.min(1.0);
        self.slowdowns += 1;
        self.lowest = self.lowest.min(self.rate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Connects the ramp lets through from `from` to `to`, asking every ms.
    fn run(r: &mut Ramp, from: u64, to: u64) -> usize {
        (from..to)
            .map(|t| {
                let n = r.allowed(MS * t as u32);
                r.started(n);
                n
            })
            .sum()
    }

    #[test]
    fn it_runs_at_the_planned_rate_when_nothing_fails() {
        let mut r = Ramp::new(10_000.0);
        let n = run(&mut r, 0, 1_001);
        assert!((9_990..=10_000).contains(&n), "{n}");
        assert_eq!(r.slowdowns, 0);
    }

    #[test]
    fn failures_halve_it_and_it_wins_the_rate_back() {
        let mut r = Ramp::new(10_000.0);
        run(&mut r, 0, 100);
        // A burst of refusals: one cut per 200 ms, however many.
        for t in 100..110 {
            r.congested(t * MS);
        }
        assert_eq!(r.slowdowns, 1);
        assert_eq!(r.rate(), 5_000.0);
        r.congested(300 * MS);
        r.congested(500 * MS);
        assert_eq!(r.slowdowns, 3);
        assert_eq!(r.rate(), 1_250.0);
        // Refused for good: down to the floor, never zero.
        for k in 0..20 {
            r.congested((700 + 200 * k) * MS);
        }
        assert_eq!(r.rate(), 10_000.0 / 64.0);
        assert_eq!(r.lowest, 10_000.0 / 64.0);
        let slow = run(&mut r, 4_700, 4_800);
        assert!(
            slow <= 32,
            "100 ms of credit, then 100 ms at about 156/s: {slow}"
        );
        // Quiet again: the whole rate is back within QUIET and RECOVER.
        run(&mut r, 4_800, 7_400);
        assert_eq!(r.rate(), 10_000.0);
    }

    #[test]
    fn news_of_connects_made_before_the_last_cut_is_old() {
        let mut r = Ramp::new(1_000.0);
        r.congested_by(MS * 10, MS * 900);
        assert_eq!(r.rate(), 500.0);
        // Slow connects started before that cut keep arriving: ignored.
        r.congested_by(MS * 500, Duration::from_secs(2));
        r.congested_by(MS * 899, Duration::from_secs(3));
        assert_eq!(r.slowdowns, 1);
        // One started after it: a new signal.
        r.congested_by(MS * 950, Duration::from_secs(3));
        assert_eq!(r.slowdowns, 2);
    }

    #[test]
    fn no_recovery_while_failures_keep_coming() {
        let mut r = Ramp::new(1_000.0);
        for k in 0..5 {
            run(&mut r, 200 * k, 200 * (k + 1));
            r.congested(MS * (200 * (k + 1)) as u32);
        }
        assert_eq!(r.rate(), 1_000.0 / 32.0, "five halvings, nothing won back");
    }

    #[test]
    fn a_stalled_loop_gets_a_burst_of_at_most_100_ms() {
        let mut r = Ramp::new(10_000.0);
        assert_eq!(r.allowed(Duration::ZERO), 0);
        assert_eq!(r.allowed(Duration::from_secs(5)), 1_000);
        let mut slow = Ramp::new(2.0);
        assert_eq!(slow.allowed(Duration::from_secs(5)), 1, "at least one");
    }
}
