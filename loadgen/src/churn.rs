//! `--scenario churn`, the run's side: when the churn runs, what it cost the
//! server, and whether memory came back. The clients' side (who leaves, who
//! comes, what they check) is `client/churn.rs`.
//!
//! The hold starts with a quiet window, the rooms running and nobody
//! leaving, which measures the steady cost; then members leave and new ones
//! come at `--churn-rate` until the end. The server's CPU per connect is what
//! the churn window cost beyond the quiet one, per connection opened; its
//! memory not returned is its RSS at the end of the churn less at its start,
//! with as many connections up at both.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::ChurnPlan;
use crate::procstat::{self, Sample};
use crate::results::{Counts, Percentiles};
use crate::worker::HoldGate;
use std::sync::Arc;

/// The longest quiet window: the steady cost is measured over it.
const MAX_QUIET: Duration = Duration::from_secs(5);

/// The run's churn: when, how fast in all.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// The ramp's planned length: the window moves by how late the hold
    /// starts after it.
    pub planned_ramp: Duration,
    /// The quiet window starts (the hold's start: a second after the ramp).
    pub quiet_from: Duration,
    /// Churn from, to.
    pub from: Duration,
    /// See `from`.
    pub until: Duration,
    /// Connections closed and replaced per second, in all.
    pub per_second: f64,
    /// The same, as a share of the population per second.
    pub percent: f64,
}

impl Window {
    /// The churn of a run of `conns` connections opened in `ramp` (as
    /// planned), held `hold`, churning `percent` % of them a second.
    pub fn new(conns: usize, ramp: Duration, hold: Duration, percent: f64) -> Self {
        let quiet_from = ramp + Duration::from_secs(1);
        let until = ramp + hold;
        let quiet = MAX_QUIET.min(hold / 4);
        Self {
            planned_ramp: ramp,
            quiet_from,
            from: (quiet_from + quiet).min(until),
            until,
            per_second: conns as f64 * percent / 100.0,
            percent,
        }
    }

    /// The same window `by` later (the hold started that late).
    pub fn shifted(&self, by: Duration) -> Self {
        Self {
            quiet_from: self.quiet_from + by,
            from: self.from + by,
            until: self.until + by,
            ..*self
        }
    }

    /// Worker's part of it, for `share` of the `conns` connections.
    pub fn for_worker(&self, share: usize, conns: usize) -> ChurnPlan {
        ChurnPlan {
            per_second: self.per_second * share as f64 / conns.max(1) as f64,
            from: self.from,
            until: self.until,
        }
    }
}

/// The server (and the load generator) sampled at the quiet window's start,
/// the churn's start and its end.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// The server's, if its pid is known.
    pub server: Vec<Sample>,
    /// The load generator's own.
    pub own: Vec<Sample>,
}

/// Samples at the three times of `window`, on its own thread, once the
/// hold has started (`gate`; the window moves by how late it started, as the
/// workers' churn does); returns the samples and the window as it ran.
pub fn spawn(
    window: Window,
    server_pid: Option<u32>,
    epoch: Instant,
    gate: Arc<HoldGate>,
) -> JoinHandle<(Samples, Window)> {
    std::thread::spawn(move || {
        // Bounded: `started` answers by the deadline at the latest.
        let hold_from = loop {
            if let Some(from) = gate.started(epoch.elapsed(), window.planned_ramp) {
                break from;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let window = window.shifted(hold_from.saturating_sub(window.planned_ramp));
        let mut samples = Samples::default();
        for at in [window.quiet_from, window.from, window.until] {
            std::thread::sleep((epoch + at).saturating_duration_since(Instant::now()));
            if let Some(pid) = server_pid {
                if let Ok(s) = procstat::sample(Some(pid)) {
                    samples.server.push(s);
                }
            }
            if let Ok(s) = procstat::sample(None) {
                samples.own.push(s);
            }
        }
        (samples, window)
    })
}

/// The churn's figures, in summary.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Asked: percent of the connections replaced a second.
    pub percent_per_s: f64,
    /// The churn window, seconds from the start.
    pub from_s: f64,
    /// See `from_s`.
    pub until_s: f64,
    /// Members closed by the churn.
    pub closed: u64,
    /// Connections opened in their place (connects started).
    pub opened: u64,
    /// Of those, welcomed.
    pub welcomed: u64,
    /// Connect latency of the new connections (`connect()` to WELCOME).
    pub connect: Percentiles,
    /// Members in their room for several publish periods that got nothing.
    pub silent_members: u64,
    /// Messages of a room the receiver was not in.
    pub foreign_messages: u64,
    /// The server's CPU seconds a second over the quiet window and over the churn.
    pub server_cpu_per_s_quiet: Option<f64>,
    /// See `server_cpu_per_s_quiet`.
    pub server_cpu_per_s_churn: Option<f64>,
    /// The churn's extra server CPU per connection opened, microseconds.
    pub server_cpu_us_per_connect: Option<f64>,
    /// The server's RSS at the churn's start and end, bytes.
    pub server_rss_at_start: Option<u64>,
    /// See `server_rss_at_start`.
    pub server_rss_at_end: Option<u64>,
    /// The load generator's RSS at the churn's start and end, bytes.
    pub loadgen_rss_at_start: Option<u64>,
    /// See `loadgen_rss_at_start`.
    pub loadgen_rss_at_end: Option<u64>,
}

impl Report {
    /// The server's RSS at the end less at the start (memory not returned).
    pub fn server_rss_growth(&self) -> Option<i64> {
        Some(self.server_rss_at_end? as i64 - self.server_rss_at_start? as i64)
    }
}

/// The figures from the counts, the new connections' connect latencies and
/// the samples.
pub fn report(w: &Window, counts: &Counts, connect: &Histogram<u64>, s: &Samples) -> Report {
    let per_s = |a: &Sample, b: &Sample, span: Duration| {
        b.cpu.saturating_sub(a.cpu).as_secs_f64() / span.as_secs_f64().max(1e-3)
    };
    let (quiet, churn) = (w.from - w.quiet_from, w.until - w.from);
    let (cpu_quiet, cpu_churn) = match s.server.as_slice() {
        [a, b, c] => (Some(per_s(a, b, quiet)), Some(per_s(b, c, churn))),
        _ => (None, None),
    };
    let connects_per_s = counts.churn_opened as f64 / churn.as_secs_f64().max(1e-3);
    let per_connect = match (cpu_quiet, cpu_churn) {
        (Some(q), Some(c)) if counts.churn_opened > 0 => Some((c - q) * 1e6 / connects_per_s),
        _ => None,
    };
    let rss = |v: &[Sample], i: usize| v.get(i).map(|s| s.rss);
    Report {
        percent_per_s: w.percent,
        from_s: w.from.as_secs_f64(),
        until_s: w.until.as_secs_f64(),
        closed: counts.churn_closed,
        opened: counts.churn_opened,
        welcomed: connect.len(),
        connect: Percentiles::of(connect),
        silent_members: counts.silent_members,
        foreign_messages: counts.foreign,
        server_cpu_per_s_quiet: cpu_quiet,
        server_cpu_per_s_churn: cpu_churn,
        server_cpu_us_per_connect: per_connect,
        server_rss_at_start: rss(&s.server, 1),
        server_rss_at_end: rss(&s.server, 2),
        loadgen_rss_at_start: rss(&s.own, 1),
        loadgen_rss_at_end: rss(&s.own, 2),
    }
}

/// A churn run passes when the churn happened (at least nine tenths of what
/// was asked, every member closed replaced), and no member was silent and no
/// message foreign; order, drops and PINGs are checked as in any run.
pub fn verdict(r: &Report, w: &Window, abandoned: u64) -> Result<(), String> {
    let asked = (w.per_second * (w.until - w.from).as_secs_f64()) as u64;
    if r.closed * 10 < asked * 9 {
        return Err(format!(
            "churn: only {} of the {asked} members due to leave were closed",
            r.closed
        ));
    }
    if r.welcomed + abandoned < r.closed {
        return Err(format!(
            "churn: {} members left but only {} new connections were welcomed",
            r.closed, r.welcomed
        ));
    }
    if r.silent_members > 0 {
        return Err(format!(
            "churn: {} members got no message of their room in {} publish periods or more",
            r.silent_members,
            crate::client::SILENT_AFTER_PERIODS
        ));
    }
    if r.foreign_messages > 0 {
        return Err(format!(
            "churn: {} messages of a room their receiver was not in",
            r.foreign_messages
        ));
    }
    Ok(())
}

/// The summary table's rows for it.
pub fn describe(r: &Report) -> String {
    let opt = |v: Option<f64>, unit: &str, places: usize| {
        v.map_or_else(|| "n/a".into(), |v| format!("{v:.places$}{unit}"))
    };
    let mib = |v: Option<u64>| {
        v.map_or_else(
            || "n/a".into(),
            |v| format!("{:.1} MiB", v as f64 / 1048576.0),
        )
    };
    format!(
        "| churn: {:.2} %/s from {:.0} s to {:.0} s: closed / opened / welcomed | {} / {} / {} |\n\
         | churn: connect ms p50 / p99 / p99.9 / max | {:.3} / {:.3} / {:.3} / {:.3} |\n\
         | churn: silent members / foreign messages | {} / {} |\n\
         | churn: server CPU-s/s quiet / churning, extra per connect | {} / {}, {} |\n\
         | churn: server RSS at its start / end | {} / {} |\n\
         | churn: loadgen RSS at its start / end | {} / {} |",
        r.percent_per_s,
        r.from_s,
        r.until_s,
        r.closed,
        r.opened,
        r.welcomed,
        r.connect.p50_ms,
        r.connect.p99_ms,
        r.connect.p99_9_ms,
        r.connect.max_ms,
        r.silent_members,
        r.foreign_messages,
        opt(r.server_cpu_per_s_quiet, "", 3),
        opt(r.server_cpu_per_s_churn, "", 3),
        opt(r.server_cpu_us_per_connect, " µs", 1),
        mib(r.server_rss_at_start),
        mib(r.server_rss_at_end),
        mib(r.loadgen_rss_at_start),
        mib(r.loadgen_rss_at_end),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_window_follows_the_ramp_and_leaves_a_quiet_start() {
        let w = Window::new(10_000, 2 * S, 20 * S, 1.0);
        assert_eq!(w.quiet_from, 3 * S, "2 s of ramp and a second");
        assert_eq!(w.from, 8 * S, "5 s quiet");
        assert_eq!(w.until, 22 * S);
        assert_eq!(w.per_second, 100.0);
        let short = Window::new(1_000, S, 8 * S, 2.0);
        assert_eq!(
            short.from - short.quiet_from,
            2 * S,
            "a quarter of the hold"
        );
        let shares: f64 = (0..3)
            .map(|i| w.for_worker([3334, 3333, 3333][i], 10_000).per_second)
            .sum();
        assert!((shares - 100.0).abs() < 1e-9);
    }

    fn sample(cpu_ms: u64, rss: u64) -> Sample {
        Sample {
            cpu: Duration::from_millis(cpu_ms),
            rss,
            peak_rss: rss,
        }
    }

    #[test]
    fn cpu_per_connect_is_the_churn_beyond_the_quiet_cost() {
        let w = Window::new(10_000, 2 * S, 20 * S, 1.0);
        // Quiet 5 s at 0.1 CPU-s/s, churn 14 s at 0.24 CPU-s/s, 100 connects/s.
        let s = Samples {
            server: vec![sample(1_000, 10), sample(1_500, 100), sample(4_860, 164)],
            own: vec![],
        };
        let counts = Counts {
            churn_closed: 1_400,
            churn_opened: 1_400,
            ..Counts::default()
        };
        let mut h = crate::results::histogram();
        for _ in 0..1_400 {
            h.record(800).unwrap();
        }
        let r = report(&w, &counts, &h, &s);
        assert!((r.server_cpu_per_s_quiet.unwrap() - 0.1).abs() < 1e-9);
        assert!((r.server_cpu_per_s_churn.unwrap() - 0.24).abs() < 1e-9);
        assert!((r.server_cpu_us_per_connect.unwrap() - 1_400.0).abs() < 1e-6);
        assert_eq!(r.server_rss_growth(), Some(64));
        assert_eq!(verdict(&r, &w, 0), Ok(()));
        // Without the server's pid: no CPU figures, the rest stands.
        let r = report(&w, &counts, &h, &Samples::default());
        assert_eq!(r.server_cpu_us_per_connect, None);
        assert!(describe(&r).contains("n/a"));
    }

    #[test]
    fn a_churn_that_did_not_happen_or_lost_members_fails() {
        let w = Window::new(10_000, 2 * S, 20 * S, 1.0);
        let h = crate::results::histogram();
        let mut counts = Counts {
            churn_closed: 100,
            ..Counts::default()
        };
        let r = report(&w, &counts, &h, &Samples::default());
        assert!(verdict(&r, &w, 0)
            .unwrap_err()
            .contains("only 100 of the 1400"));
        counts.churn_closed = 1_400;
        let r = report(&w, &counts, &h, &Samples::default());
        assert!(verdict(&r, &w, 0)
            .unwrap_err()
            .contains("only 0 new connections"));
        assert_eq!(
            verdict(&r, &w, 1_400),
            Ok(()),
            "still connecting at the end"
        );
        counts.silent_members = 1;
        let mut r2 = report(&w, &counts, &h, &Samples::default());
        r2.welcomed = 1_400;
        assert!(verdict(&r2, &w, 0).unwrap_err().contains("no message"));
    }
}
