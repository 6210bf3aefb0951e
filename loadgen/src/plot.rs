//! The pictures of a run, as SVG: the percentile distribution of each latency
//! metric (`plot.svg`, and `compare --plot`), and the run's timeline
//! (`timeline.svg`). Latency is on a log axis with round ticks (1, 2, 5 x
//! 10^n), so a sub-millisecond body and a tail of seconds are both readable;
//! a percentile curve stops at the last percentile its sample count supports.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Microseconds per millisecond: histograms record microseconds.
const US_PER_MS: f64 = 1000.0;
const W: f64 = 860.0;
const H: f64 = 500.0;
const LEFT: f64 = 86.0;
const RIGHT: f64 = 70.0;
/// Room above the plot for the title, the subtitle and three legend rows.
const TOP: f64 = 100.0;
const BOTTOM: f64 = 54.0;
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// The deepest percentile `count` samples support, in nines (log10 of the
/// count: 1,000 samples reach 99.9 %).
pub fn supported_nines(count: u64) -> f64 {
    (count.max(1) as f64).log10()
}

/// Round ticks of a log axis over `lo..=hi` (both > 0): 1, 2, 5 x 10^n.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 1.000_001 {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo * 0.999_999 && t <= hi * 1.000_001 {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// The log axis range for values in `lo..=hi` ms: whole 1-2-5 steps around them.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let step_down = |v: f64| {
        let d = 10f64.powf(v.log10().floor());
        [5.0, 2.0, 1.0]
            .into_iter()
            .map(|m| m * d)
            .find(|&t| t <= v)
            .unwrap_or(d)
    };
    let step_up = |v: f64| {
        let d = 10f64.powf(v.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * d)
            .find(|&t| t >= v)
            .unwrap_or(10.0 * d)
    };
    let lo = step_down(lo.max(0.001));
    let hi = step_up(hi.max(lo * 2.0));
    (lo, hi)
}

/// A latency in milliseconds as a tick label: `20 µs`, `0.5 ms`, `20 ms`, `2 s`.
pub fn ms_label(ms: f64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if ms < 0.1 {
        format!("{} µs", trim(ms * 1000.0))
    } else if ms < 1000.0 {
        format!("{} ms", trim(ms))
    } else {
        format!("{} s", trim(ms / 1000.0))
    }
}

/// A count as a tick label: 20,000 as `20k`.
fn count_label(n: f64) -> String {
    if n >= 1_000_000.0 {
        format!("{}M", n / 1_000_000.0)
    } else if n >= 1000.0 {
        format!("{}k", n / 1000.0)
    } else {
        format!("{n}")
    }
}

/// Round ticks of a linear axis from 0 to at least `hi`: about five, of 1, 2, 5 x 10^n.
fn linear_ticks(hi: f64) -> Vec<f64> {
    let hi = hi.max(1.0);
    let raw = hi / 5.0;
    let d = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * d)
        .find(|&s| s >= raw)
        .unwrap_or(d);
    let n = (hi / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The frame of a plot: a white page, the title and a subtitle.
fn page(svg: &mut String, title: &str, subtitle: &str) {
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"22\" font-size=\"16\">{}</text>\n<text x=\"{LEFT}\" y=\"40\" fill=\"#555\">{}</text>",
        escape(title),
        escape(subtitle)
    );
}

/// A vertical log latency axis at the left, gridlines across; returns y(ms).
fn latency_axis(svg: &mut String, lo: f64, hi: f64) -> impl Fn(f64) -> f64 {
    let (l, h) = (lo.log10(), hi.log10());
    let y = move |ms: f64| H - BOTTOM - (H - BOTTOM - TOP) * (ms.max(lo).log10() - l) / (h - l);
    for t in log_ticks(lo, hi) {
        let yi = y(t);
        let major = (t.log10() - t.log10().round()).abs() < 1e-9;
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{yi:.1}\" x2=\"{:.1}\" y2=\"{yi:.1}\" stroke=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            if major { "#ccc" } else { "#eee" },
            LEFT - 8.0,
            yi + 4.0,
            ms_label(t)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">latency (log scale)</text>",
        (H - BOTTOM + TOP) / 2.0,
        (H - BOTTOM + TOP) / 2.0
    );
    y
}

/// The legend, in a band of its own between the subtitle and the plot (two
/// entries a row), so that it never hides a curve.
fn legend(svg: &mut String, entries: &[(String, &str, bool)]) {
    for (i, (name, colour, dashed)) in entries.iter().enumerate() {
        let ly = 56.0 + 14.0 * (i / 2) as f64;
        let x0 = LEFT + 380.0 * (i % 2) as f64;
        let _ = writeln!(
            svg,
            "<line x1=\"{x0:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x0 + 22.0,
            if *dashed { " stroke-dasharray=\"5 3\"" } else { "" },
            x0 + 28.0,
            ly + 4.0,
            escape(name)
        );
    }
}

/// The percentile distribution of each curve: x is the percentile as nines
/// (0 %, 90 %, 99 %, ...), y the latency on a log axis. Each curve ends at
/// the deepest percentile its count supports, where a dot marks its max.
pub fn percentiles_svg(title: &str, subtitle: &str, curves: &[(&str, &Histogram<u64>)]) -> String {
    let curves: Vec<_> = curves.iter().filter(|(_, h)| !h.is_empty()).collect();
    let deepest = curves
        .iter()
        .map(|(_, h)| supported_nines(h.len()))
        .fold(1.0_f64, f64::max)
        .ceil();
    let (lo, hi) = curves.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), (_, h)| {
        (
            lo.min(h.min().max(1) as f64 / US_PER_MS),
            hi.max(h.max() as f64 / US_PER_MS),
        )
    });
    let (lo, hi) = if curves.is_empty() {
        (0.1, 1.0)
    } else {
        log_range(lo, hi)
    };
    let mut svg = String::new();
    page(&mut svg, title, subtitle);
    let x = |nines: f64| LEFT + (W - LEFT - RIGHT) * nines.min(deepest) / deepest;
    let y = latency_axis(&mut svg, lo, hi);
    for n in 0..=deepest as usize {
        let label = match n {
            0 => "0%".to_string(),
            n => format!("{}%", 100.0 - 100.0 * 10f64.powi(-(n as i32))),
        };
        let xi = x(n as f64);
        let _ = writeln!(
            svg,
            "<line x1=\"{xi:.1}\" y1=\"{TOP}\" x2=\"{xi:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{xi:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text>",
        (W + LEFT - RIGHT) / 2.0,
        H - 12.0
    );
    let mut entries = Vec::new();
    for (i, (name, h)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let last = supported_nines(h.len());
        let mut points = String::new();
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let nines = if q >= 1.0 {
                f64::INFINITY
            } else {
                -(1.0 - q).log10()
            };
            if nines > last {
                break;
            }
            let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / US_PER_MS;
            let _ = write!(points, "{:.1},{:.1} ", x(nines), y(ms));
        }
        let max_ms = h.max() as f64 / US_PER_MS;
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>",
            points.trim_end(),
            x(last),
            y(max_ms)
        );
        entries.push((
            format!("{name} ({} samples, max {})", h.len(), ms_label(max_ms)),
            colour,
            false,
        ));
    }
    legend(&mut svg, &entries);
    svg.push_str("</svg>\n");
    svg
}

/// A figure of one second's latency histogram (p50, p99, max).
type Statistic = fn(&Histogram<u64>) -> u64;

/// One second of a run on the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Second {
    /// Seconds since the run's start.
    pub at: f64,
    /// Latency of what was measured that second (empty: nothing).
    pub latency: Histogram<u64>,
    /// Connections up at the end of that second.
    pub up: u64,
    /// `connect()` calls in that second.
    pub connects: u64,
}

/// Something that happened at a time, drawn as a labelled vertical line
/// (a storm's signal and restart, the churn's start).
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// Seconds since the run's start.
    pub at: f64,
    /// What happened.
    pub label: String,
}

/// The run second by second: p50, p99 and max of `metric`'s latency (log
/// axis, left), connections up and connects made (linear axis, right), with
/// the hold's start and the `marks` drawn, so the ramp, the hold, a storm
/// and any stall show at a glance.
pub fn timeline_svg(
    title: &str,
    subtitle: &str,
    metric: &str,
    seconds: &[Second],
    hold_from: f64,
    marks: &[Mark],
) -> String {
    let end = seconds.iter().map(|s| s.at + 1.0).fold(1.0_f64, f64::max);
    let measured: Vec<&Second> = seconds.iter().filter(|s| !s.latency.is_empty()).collect();
    let (lo, hi) = measured.iter().fold((f64::MAX, 0.0_f64), |(lo, hi), s| {
        (
            lo.min(s.latency.value_at_quantile(0.5).max(1) as f64 / US_PER_MS),
            hi.max(s.latency.max() as f64 / US_PER_MS),
        )
    });
    let (lo, hi) = if measured.is_empty() {
        (0.1, 1.0)
    } else {
        log_range(lo, hi)
    };
    let most_up = seconds
        .iter()
        .map(|s| s.up.max(s.connects))
        .max()
        .unwrap_or(0) as f64;
    let up_ticks = linear_ticks(most_up);
    let up_top = *up_ticks.last().expect("at least 0");
    let mut svg = String::new();
    page(&mut svg, title, subtitle);
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / end;
    // The hold: shaded from its start, under the gridlines.
    let _ = writeln!(
        svg,
        "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f3f7ff\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#557\">hold from {hold_from} s</text>",
        x(hold_from.min(end)),
        (x(end) - x(hold_from.min(end))).max(0.0),
        H - BOTTOM - TOP,
        x(hold_from.min(end)) + 4.0,
        H - BOTTOM - 6.0
    );
    for (i, m) in marks.iter().filter(|m| m.at <= end).enumerate() {
        // Labels step down, so that marks close together stay readable.
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#c00\" stroke-dasharray=\"2 2\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c00\">{}</text>",
            H - BOTTOM,
            x(m.at) + 3.0,
            TOP + 14.0 + 14.0 * (i % 3) as f64,
            escape(&m.label),
            x = x(m.at),
        );
    }
    let y = latency_axis(&mut svg, lo, hi);
    let y_up = |n: f64| H - BOTTOM - (H - BOTTOM - TOP) * n / up_top;
    for t in linear_ticks(end).into_iter().filter(|&t| t <= end) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t} s</text>",
            x(t),
            H - BOTTOM + 18.0
        );
    }
    for n in &up_ticks {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#777\">{}</text>",
            W - RIGHT + 6.0,
            y_up(*n) + 4.0,
            count_label(*n)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the start</text><text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(90 {:.1} {:.1})\" text-anchor=\"middle\" fill=\"#777\">connections up, connects a second</text>",
        (W + LEFT - RIGHT) / 2.0,
        H - 12.0,
        W - 14.0,
        (H - BOTTOM + TOP) / 2.0,
        W - 14.0,
        (H - BOTTOM + TOP) / 2.0
    );
    let mut up = String::new();
    let mut connects = String::new();
    for s in seconds {
        let _ = write!(up, "{:.1},{:.1} ", x(s.at + 1.0), y_up(s.up as f64));
        let _ = write!(
            connects,
            "{:.1},{:.1} ",
            x(s.at + 0.5),
            y_up(s.connects as f64)
        );
    }
    let _ = writeln!(
        svg,
        "<polyline fill=\"none\" stroke=\"#999\" stroke-width=\"2\" stroke-dasharray=\"5 3\" points=\"{:.1},{:.1} {}\"/>",
        x(0.0),
        y_up(0.0),
        up.trim_end()
    );
    let any_connects = seconds.iter().any(|s| s.connects > 0);
    if any_connects {
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"#6a3\" stroke-width=\"1.5\" stroke-dasharray=\"1 2\" points=\"{}\"/>",
            connects.trim_end()
        );
    }
    let lines: [(&str, &str, Statistic); 3] = [
        ("p50", COLOURS[0], |h| h.value_at_quantile(0.5)),
        ("p99", COLOURS[1], |h| h.value_at_quantile(0.99)),
        ("max", COLOURS[4], |h| h.max()),
    ];
    let mut entries = Vec::new();
    // A line is broken where seconds measured nothing (a storm's outage):
    // a straight line across them would draw values nobody measured.
    let mut runs: Vec<&[&Second]> = Vec::new();
    let mut from = 0;
    for i in 1..=measured.len() {
        if i == measured.len() || measured[i].at - measured[i - 1].at > 1.5 {
            runs.push(&measured[from..i]);
            from = i;
        }
    }
    for (label, colour, value) in lines {
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let mut points = String::new();
            for s in run.iter() {
                let ms = value(&s.latency) as f64 / US_PER_MS;
                let _ = write!(points, "{:.1},{:.1} ", x(s.at + 0.5), y(ms));
            }
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                points.trim_end()
            );
        }
        entries.push((format!("{metric} {label} per second"), colour, false));
    }
    entries.push(("connections up".to_string(), "#999", true));
    if any_connects {
        entries.push(("connects made per second".to_string(), "#6a3", true));
    }
    legend(&mut svg, &entries);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::results::histogram_of as histogram;

    #[test]
    fn ticks_are_round_and_labels_short() {
        assert_eq!(log_ticks(0.1, 10.0), [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert_eq!(log_range(0.31, 1287.47), (0.2, 2000.0));
        assert_eq!(ms_label(0.02), "20 µs");
        assert_eq!(ms_label(0.5), "0.5 ms");
        assert_eq!(ms_label(2000.0), "2 s");
        assert_eq!(
            linear_ticks(20_000.0),
            [0.0, 5000.0, 10000.0, 15000.0, 20000.0]
        );
        assert_eq!(count_label(20_000.0), "20k");
    }

    #[test]
    fn a_curve_stops_where_its_count_stops_supporting_it() {
        assert_eq!(supported_nines(1000), 3.0);
        let small = histogram((1..=1000).map(|i| i * 10));
        let svg = percentiles_svg("t", "s", &[("ping <rtt>", &small)]);
        assert!(svg.contains("ping &lt;rtt&gt; (1000 samples"), "{svg}");
        assert!(svg.contains(">99.9%<"), "axis to the supported depth");
        assert!(
            !svg.contains(">99.99%<"),
            "not deeper than any curve reaches"
        );
        let big = histogram((1..=100_000).map(|i| i % 5000 + 1));
        let svg = percentiles_svg("t", "s", &[("a", &small), ("b", &big)]);
        assert!(svg.contains(">99.999%<"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }

    #[test]
    fn the_timeline_draws_three_latency_lines_and_the_connections() {
        let seconds: Vec<Second> = (0..10u32)
            .map(|i| Second {
                at: f64::from(i),
                latency: if i == 0 {
                    histogram([])
                } else {
                    histogram([500, 900, 40_000])
                },
                up: (u64::from(i) * 2000).min(10_000),
                connects: if i < 5 { 2000 } else { 0 },
            })
            .collect();
        let marks = [Mark {
            at: 7.0,
            label: "SIGKILL <server>".into(),
        }];
        let svg = timeline_svg("t", "s", "ping-rtt", &seconds, 6.0, &marks);
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("SIGKILL &lt;server&gt;"));
        assert!(svg.contains("connects made per second"));
        // Seconds 4 and 5 measured nothing: each latency line breaks there.
        let mut gap = seconds.clone();
        for s in &mut gap[4..6] {
            s.latency = histogram([]);
        }
        let svg = timeline_svg("t", "s", "ping-rtt", &gap, 6.0, &[]);
        assert_eq!(svg.matches("<polyline").count(), 3 * 2 + 2);
        assert!(svg.contains("hold from 6 s"));
        assert!(svg.contains(">10k<"), "the connections axis");
        assert!(svg.contains("ping-rtt p99 per second"));
    }
}
