//! Comparing two runs: did B get slower than A?
//!
//! Latency is compared interval by interval: each run's interval log gives one
//! p99 per interval, and a Mann-Whitney U test on those two samples says
//! whether B's intervals are slower than A's by more than run-to-run noise. A
//! regression needs both: a one-sided p-value under `alpha`, and a median p99
//! at least `threshold` (relative) above A's, so that a significant but tiny
//! shift does not fail a build. A second rule catches what the interval test
//! cannot see with few intervals: the whole run's p99 or p99.9 of a steady
//! metric (PING round trip, room delivery) more than `tail` (default: doubled) above A's,
//! where enough samples support that percentile. The output says which rule
//! fired.
//!
//! Two runs are comparable only if they ran the same thing: a different
//! scenario, connection count, rate, length, protocol or machine is named in
//! a loud warning before any figure.

use std::path::Path;

use hdrhistogram::Histogram;
use statrs::distribution::{ContinuousCDF, Normal};

/// Fewest intervals on each side for the test to decide anything.
pub const MIN_INTERVALS: usize = 5;

/// The verdict on one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Median of A's interval p99s, microseconds.
    pub median_a: f64,
    /// Median of B's interval p99s, microseconds.
    pub median_b: f64,
    /// One-sided p-value that B's intervals are slower (None: too few intervals).
    pub p_value: Option<f64>,
    /// Whether this is a regression.
    pub regression: bool,
}

/// The p99 of each non-empty interval.
pub fn interval_p99s(intervals: &[Histogram<u64>]) -> Vec<f64> {
    intervals
        .iter()
        .filter(|h| !h.is_empty())
        .map(|h| h.value_at_quantile(0.99) as f64)
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// One-sided Mann-Whitney U test that `b` tends to be larger than `a`
/// (normal approximation with tie correction); the p-value.
pub fn mann_whitney_greater(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, false))
        .chain(b.iter().map(|&x| (x, true)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    // Average ranks over ties; the tie correction term.
    let mut rank_b = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_b += all[i..=j].iter().filter(|x| x.1).count() as f64 * rank;
        i = j + 1;
    }
    let u_b = rank_b - n2 * (n2 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let n = n1 + n2;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0; // every value equal: no evidence either way
    }
    let z = (u_b - mean - 0.5) / var.sqrt(); // continuity correction
    1.0 - Normal::new(0.0, 1.0).expect("standard normal").cdf(z)
}

/// Compares two runs' interval logs of one metric.
pub fn compare(a: &[Histogram<u64>], b: &[Histogram<u64>], threshold: f64, alpha: f64) -> Verdict {
    let (pa, pb) = (interval_p99s(a), interval_p99s(b));
    let (median_a, median_b) = (median(&pa), median(&pb));
    let enough = pa.len() >= MIN_INTERVALS && pb.len() >= MIN_INTERVALS;
    let p_value = enough.then(|| mann_whitney_greater(&pa, &pb));
    let slower = median_b > median_a * (1.0 + threshold);
    Verdict {
        median_a,
        median_b,
        p_value,
        regression: slower && p_value.is_some_and(|p| p < alpha),
    }
}

/// Fewest samples in both runs for the whole-run rule to read a percentile
/// q: ten times 1 / (1 - q), so that the percentile rests on ten samples.
pub fn supports(count: u64, q: f64) -> bool {
    count as f64 >= 10.0 / (1.0 - q)
}

/// B's intervals added up without its worst one (by p99), when it has three
/// or more: the whole-run rule looks for a slower run, not for one stalled
/// second, which a shared machine gives any run now and then.
pub fn total_but_worst(intervals: &[Histogram<u64>]) -> Histogram<u64> {
    let worst = (intervals.len() >= 3)
        .then(|| (0..intervals.len()).max_by_key(|&i| intervals[i].value_at_quantile(0.99)))
        .flatten();
    let mut total = crate::results::histogram();
    for (i, h) in intervals.iter().enumerate() {
        if Some(i) != worst {
            total
                .add(h)
                .expect("histograms of one run share their bounds");
        }
    }
    total
}

/// The whole-run rule: the quantiles (p99, p99.9) of B more than `threshold`
/// above A's, of those both runs' counts support. Returns the first that is,
/// as ("p99", A, B) in microseconds.
pub fn whole_run_regression(
    a: &Histogram<u64>,
    b: &Histogram<u64>,
    threshold: f64,
) -> Option<(&'static str, f64, f64)> {
    [("p99", 0.99), ("p99.9", 0.999)]
        .into_iter()
        .filter(|&(_, q)| supports(a.len(), q) && supports(b.len(), q))
        .map(|(label, q)| {
            let (va, vb) = (a.value_at_quantile(q) as f64, b.value_at_quantile(q) as f64);
            (label, va, vb)
        })
        .find(|&(_, va, vb)| va > 0.0 && vb > va * (1.0 + threshold))
}

/// What differs between two runs' settings and machines, one phrase each.
pub fn differences(a: &crate::results::Summary, b: &crate::results::Summary) -> Vec<String> {
    let (ca, cb) = (&a.config, &b.config);
    let mut out = Vec::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            out.push(format!("{what} {x} vs {y}"));
        }
    };
    differ("scenario", ca.scenario.clone(), cb.scenario.clone());
    differ("protocol", ca.protocol.clone(), cb.protocol.clone());
    differ("connections", ca.conns.to_string(), cb.conns.to_string());
    differ(
        "connect rate",
        format!("{}/s", ca.connect_rate),
        format!("{}/s", cb.connect_rate),
    );
    differ(
        "ping rate",
        format!("{}/s", ca.ping_rate),
        format!("{}/s", cb.ping_rate),
    );
    differ(
        "hold",
        format!("{} s", ca.duration_s),
        format!("{} s", cb.duration_s),
    );
    let rooms = |s: &crate::results::Summary| {
        s.rooms.as_ref().map_or("none".to_string(), |r| {
            format!("{} at {}/s", r.rooms, r.publish_rate)
        })
    };
    differ("rooms", rooms(a), rooms(b));
    let (ma, mb) = (&a.machine, &b.machine);
    differ("cores", ma.cores.to_string(), mb.cores.to_string());
    differ(
        "CPU",
        ma.cpu_model.clone().unwrap_or_default(),
        mb.cpu_model.clone().unwrap_or_default(),
    );
    differ("kernel", ma.kernel.clone(), mb.kernel.clone());
    out
}

/// B's change against A, in per cent ("-" when A is 0).
fn change(a: f64, b: f64) -> String {
    if a > 0.0 {
        format!("{:+.1} %", (b / a - 1.0) * 100.0)
    } else {
        "-".into()
    }
}

/// What counts as a regression.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Smallest rise of the median interval p99 (relative) for the interval rule.
    pub median: f64,
    /// Smallest rise of the whole run's p99 or p99.9 (relative) for the whole-run rule.
    pub tail: f64,
    /// Significance level of the interval rule's test.
    pub alpha: f64,
}

/// Compares two result folders, printing per latency metric the percentiles
/// side by side and each rule's verdict, then CPU per million and memory per
/// connection; `plot` gets both runs' percentile curves. True if B regressed.
pub fn compare_folders(
    a: &Path,
    b: &Path,
    limits: Thresholds,
    plot: Option<&Path>,
) -> Result<bool, String> {
    let (threshold, alpha) = (limits.median, limits.alpha);
    let total = |hs: &[Histogram<u64>]| -> Result<Histogram<u64>, String> {
        let mut t = crate::results::histogram();
        for h in hs {
            t.add(h).map_err(|e| format!("{e:?}"))?;
        }
        Ok(t)
    };
    let mut regressed = false;
    let mut curves: Vec<(String, Histogram<u64>)> = Vec::new();
    println!("A = {}\nB = {}", a.display(), b.display());
    let summary = |dir: &Path| crate::results::RunRecord::read(dir).ok().map(|r| r.summary);
    let (sum_a, sum_b) = (summary(a), summary(b));
    if let (Some(sa), Some(sb)) = (&sum_a, &sum_b) {
        let diff = differences(sa, sb);
        if !diff.is_empty() {
            let warning = format!(
                "WARNING: these runs did not run the same thing ({}): their figures are not \
                 comparable, whatever the verdict below says",
                diff.join("; ")
            );
            println!("\n{warning}");
            eprintln!("loadgen compare: {warning}");
        }
    }
    for metric in ["ping-rtt", "delivery", "connect"] {
        let file = format!("{metric}.hlog");
        let (Ok(ta), Ok(tb)) = (std::fs::read(a.join(&file)), std::fs::read(b.join(&file))) else {
            continue;
        };
        let (ia, ib) = (
            crate::hlog::read_histograms(&ta)?,
            crate::hlog::read_histograms(&tb)?,
        );
        let (ha, hb) = (total(&ia)?, total(&ib)?);
        println!("\n{metric} (ms)\n| percentile | A | B | change |\n|---|---|---|---|");
        for (label, q) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p99", 0.99),
            ("p99.9", 0.999),
            ("p99.99", 0.9999),
            ("max", 1.0),
        ] {
            let (va, vb) = (
                ha.value_at_quantile(q) as f64 / 1000.0,
                hb.value_at_quantile(q) as f64 / 1000.0,
            );
            println!("| {label} | {va:.3} | {vb:.3} | {} |", change(va, vb));
        }
        let v = compare(&ia, &ib, threshold, alpha);
        match v.p_value {
            Some(p) => println!(
                "interval rule: Mann-Whitney U on per-interval p99 ({} vs {} intervals): median {:.3} -> {:.3} ms, one-sided p = {p:.2e}: {}",
                ia.len(),
                ib.len(),
                v.median_a / 1000.0,
                v.median_b / 1000.0,
                if v.regression { "REGRESSION" } else { "no regression" }
            ),
            None => println!(
                "interval rule: fewer than {} intervals on a side: not tested",
                MIN_INTERVALS
            ),
        }
        regressed |= v.regression;
        // Steady metrics only: connect latency is the ramp's, noisy by nature.
        if metric != "connect" {
            match whole_run_regression(&ha, &total_but_worst(&ib), limits.tail) {
                Some((label, va, vb)) => {
                    println!(
                        "whole-run rule: {label} {:.3} -> {:.3} ms ({}; B without its worst second), beyond the {:.0} % tail threshold: REGRESSION",
                        va / 1000.0,
                        vb / 1000.0,
                        change(va, vb),
                        limits.tail * 100.0
                    );
                    regressed = true;
                }
                None => println!(
                    "whole-run rule: p99 and p99.9 (where {} and {} samples support them) within the {:.0} % tail threshold",
                    ha.len(),
                    hb.len(),
                    limits.tail * 100.0
                ),
            }
        }
        curves.push((format!("A {metric}"), ha));
        curves.push((format!("B {metric}"), hb));
    }
    if curves.is_empty() {
        return Err("no interval log (ping-rtt, delivery or connect .hlog) in both folders".into());
    }
    // CPU and memory, side by side (reported, not tested: one figure per run).
    let server = |s: &Option<crate::results::Summary>| s.as_ref()?.server.clone();
    if let (Some(sa), Some(sb)) = (server(&sum_a), server(&sum_b)) {
        println!("\n| figure | A | B | change |\n|---|---|---|---|");
        let rss = |s: &crate::results::Server| Some(s.peak_rss_growth_bytes_per_connection as f64);
        for (label, va, vb) in [
            (
                "server CPU-s per million PONGs",
                sa.cpu_s_per_million_pongs,
                sb.cpu_s_per_million_pongs,
            ),
            (
                "server CPU-s per million deliveries",
                sa.cpu_s_per_million_deliveries,
                sb.cpu_s_per_million_deliveries,
            ),
            ("server RSS growth per connection (B)", rss(&sa), rss(&sb)),
        ] {
            if let (Some(va), Some(vb)) = (va, vb) {
                println!("| {label} | {va:.2} | {vb:.2} | {} |", change(va, vb));
            }
        }
    }
    if let Some(path) = plot {
        let refs: Vec<(&str, &Histogram<u64>)> =
            curves.iter().map(|(n, h)| (n.as_str(), h)).collect();
        let name = |d: &Path| {
            d.file_name().map_or_else(
                || d.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        let title = format!("A = {} vs B = {}", name(a), name(b));
        let subtitle = format!("A: {}; B: {}", a.display(), b.display());
        std::fs::write(path, crate::plot::percentiles_svg(&title, &subtitle, &refs))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nplot: {}", path.display());
    }
    println!(
        "\n{}",
        if regressed {
            "REGRESSION: B is slower than A beyond the noise"
        } else {
            "no regression"
        }
    );
    Ok(regressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` one-second intervals of 1,000 samples around `center` us, with noise.
    fn intervals(n: usize, center: f64, seed: u64) -> Vec<Histogram<u64>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| {
                let mut h = crate::results::histogram();
                for _ in 0..1000 {
                    // An exponential-ish tail: most near the center, a few far out.
                    let x = center * (1.0 - rng.f64().ln() * 0.3);
                    h.record(x as u64).unwrap();
                }
                h
            })
            .collect()
    }

    #[test]
    fn identical_distributions_never_flag() {
        for seed in 0..20 {
            let a = intervals(30, 1000.0, seed);
            let b = intervals(30, 1000.0, seed + 100);
            let v = compare(&a, &b, 0.05, 0.01);
            assert!(!v.regression, "seed {seed}: {v:?}");
        }
    }

    #[test]
    fn a_twenty_percent_slower_tail_flags() {
        let a = intervals(30, 1000.0, 1);
        let b = intervals(30, 1200.0, 2);
        let v = compare(&a, &b, 0.05, 0.01);
        assert!(v.regression, "{v:?}");
        assert!(v.p_value.unwrap() < 1e-6);
        assert!(v.median_b > v.median_a * 1.15);
    }

    #[test]
    fn a_small_shift_within_the_threshold_does_not_flag() {
        // 3 % slower is real here (many intervals) but under a 10 % threshold.
        let a = intervals(60, 1000.0, 3);
        let b = intervals(60, 1030.0, 4);
        let v = compare(&a, &b, 0.10, 0.01);
        assert!(!v.regression, "{v:?}");
    }

    #[test]
    fn faster_is_never_a_regression_and_few_intervals_decide_nothing() {
        let a = intervals(30, 1200.0, 5);
        let b = intervals(30, 1000.0, 6);
        assert!(!compare(&a, &b, 0.05, 0.01).regression);
        let v = compare(
            &intervals(3, 1000.0, 7),
            &intervals(3, 5000.0, 8),
            0.05,
            0.01,
        );
        assert_eq!(v.p_value, None);
        assert!(!v.regression);
    }

    #[test]
    fn the_whole_run_rule_catches_a_tail_the_interval_test_cannot_see() {
        // Three intervals a side: too few for the test; B's tail is far out.
        let a = intervals(3, 1000.0, 10);
        let mut b = intervals(3, 1000.0, 11);
        for _ in 0..100 {
            b[1].record(900_000).unwrap();
        }
        assert_eq!(compare(&a, &b, 0.5, 0.01).p_value, None);
        let total = |hs: &[Histogram<u64>]| {
            let mut t = crate::results::histogram();
            hs.iter().for_each(|h| t.add(h).unwrap());
            t
        };
        let (ta, tb) = (total(&a), total(&b));
        let fired = whole_run_regression(&ta, &tb, 0.5).expect("flagged");
        assert_eq!(fired.0, "p99");
        assert!(fired.2 > 800_000.0);
        assert_eq!(
            whole_run_regression(&ta, &ta, 0.5),
            None,
            "same run: nothing"
        );
        assert!(supports(1000, 0.99) && !supports(999, 0.999) && supports(10_000, 0.999));
    }

    #[test]
    fn one_stalled_second_is_not_a_slower_run() {
        let a = intervals(8, 1000.0, 20);
        let mut b = intervals(8, 1000.0, 21);
        for _ in 0..200 {
            b[4].record(50_000).unwrap(); // one second of a 50 ms stall
        }
        let total = |hs: &[Histogram<u64>]| {
            let mut t = crate::results::histogram();
            hs.iter().for_each(|h| t.add(h).unwrap());
            t
        };
        let ta = total(&a);
        assert!(
            whole_run_regression(&ta, &total(&b), 0.5).is_some(),
            "with the stall"
        );
        assert_eq!(whole_run_regression(&ta, &total_but_worst(&b), 0.5), None);
        // Every second slower: still flagged without the worst one.
        let slow = intervals(8, 5000.0, 22);
        assert!(whole_run_regression(&ta, &total_but_worst(&slow), 0.5).is_some());
    }

    #[test]
    fn runs_of_different_things_are_named() {
        use crate::results::Summary;
        let mut a = Summary::default();
        a.config.scenario = "ping".into();
        a.config.conns = 10_000;
        a.config.duration_s = 30;
        a.machine.cores = 2;
        let mut b = a.clone();
        assert!(differences(&a, &b).is_empty());
        b.config.duration_s = 15;
        b.config.scenario = "idle".into();
        b.machine.cores = 8;
        let d = differences(&a, &b);
        assert_eq!(
            d,
            ["scenario ping vs idle", "hold 30 s vs 15 s", "cores 2 vs 8"]
        );
    }

    #[test]
    fn mann_whitney_matches_a_known_case() {
        // b entirely above a: the smallest one-sided p-value for 5 vs 5.
        let p = mann_whitney_greater(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]);
        assert!(p < 0.01, "{p}");
        let p = mann_whitney_greater(&[6.0, 7.0, 8.0, 9.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(p > 0.99, "{p}");
        assert_eq!(mann_whitney_greater(&[1.0; 5], &[1.0; 5]), 1.0);
    }
}
