//! Result files in HdrHistogram's own formats, so its tools read them:
//!
//! * `.hlog`: the interval log (one compressed histogram per interval), with
//!   the header and legend HdrHistogram's Java `HistogramLogWriter` writes;
//! * `.hgrm`: the percentile distribution `outputPercentileDistribution` prints;
//! * `plot.svg`: percentile curves on a log scale of nines, as HdrHistogram's
//!   plotter draws them.
//!
//! Latencies are recorded in microseconds and reported in milliseconds.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// Recorded values per reported unit: microseconds per millisecond.
pub const UNIT_RATIO: f64 = 1000.0;

/// One interval of a run: its start (since the run's start), length and histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    /// Start, relative to the log's start time.
    pub start: Duration,
    /// Length.
    pub length: Duration,
    /// What was recorded in it.
    pub histogram: Histogram<u64>,
}

/// Writes an interval log. `max` values in the log are in milliseconds.
pub fn write_hlog(
    out: &mut impl Write,
    start_time: SystemTime,
    intervals: &[Interval],
) -> io::Result<()> {
    let since_epoch = start_time.duration_since(UNIX_EPOCH).unwrap_or_default();
    writeln!(out, "#[Histogram log format version 1.3]")?;
    writeln!(
        out,
        "#[StartTime: {:.3} (seconds since epoch)]",
        since_epoch.as_secs_f64()
    )?;
    writeln!(
        out,
        "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    )?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .with_max_value_divisor(UNIT_RATIO)
        .begin_log_with(out, &mut serializer)?;
    for interval in intervals {
        log.write_histogram(&interval.histogram, interval.start, interval.length, None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

/// Writes the percentile distribution, in milliseconds.
pub fn write_hgrm(out: &mut impl Write, histogram: &Histogram<u64>) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for v in histogram.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = histogram.highest_equivalent(v.value_iterated_to()) as f64 / UNIT_RATIO;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            writeln!(
                out,
                "{value:12.3} {q:2.12} {total:10} {:14.2}",
                1.0 / (1.0 - q)
            )?;
        } else {
            writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
        }
    }
    let sub_buckets = (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        histogram.mean() / UNIT_RATIO,
        histogram.stdev() / UNIT_RATIO
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        histogram.max() as f64 / UNIT_RATIO,
        histogram.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        histogram.buckets(),
        sub_buckets
    )
}

/// Percentile curves of several metrics: x is the percentile on a log scale
/// of nines (0 %, 90 %, 99 %, ...), y the latency in milliseconds.
pub fn plot_svg(title: &str, curves: &[(&str, &Histogram<u64>)]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 50.0;
    const TOP: f64 = 40.0;
    const NINES: f64 = 6.0; // up to 99.9999 %
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
    ];
    let max_ms = curves
        .iter()
        .map(|(_, h)| h.max() as f64 / UNIT_RATIO)
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.1;
    const RIGHT: f64 = 50.0; // room for the last percentile label
    let x = |nines: f64| LEFT + (W - LEFT - RIGHT) * nines.min(NINES) / NINES;
    let y = |ms: f64| H - BOTTOM - (H - BOTTOM - TOP) * ms / max_ms;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"24\" font-size=\"16\">{}</text>",
        LEFT,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
        .iter()
        .enumerate()
    {
        let xi = x(i as f64);
        let _ = writeln!(
            svg,
            "<line x1=\"{xi:.1}\" y1=\"{TOP}\" x2=\"{xi:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{xi:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    for step in 0..=4 {
        let ms = max_ms * f64::from(step) / 4.0;
        let yi = y(ms);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{yi:.1}\" x2=\"{:.1}\" y2=\"{yi:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.2}</text>",
            W - RIGHT,
            LEFT - 6.0,
            yi + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">percentile</text><text x=\"16\" y=\"{:.1}\" transform=\"rotate(-90 16 {:.1})\" text-anchor=\"middle\">latency (ms)</text>",
        (W + LEFT) / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, h)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut points = String::new();
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let nines = if q >= 1.0 { NINES } else { -(1.0 - q).log10() };
            let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / UNIT_RATIO;
            let _ = write!(points, "{:.1},{:.1} ", x(nines), y(ms));
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.trim_end()
        );
        let ly = TOP + 16.0 * i as f64 + 8.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    fn histogram(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn hlog_round_trips_through_hdrhistograms_reader() {
        let a = histogram((1..=1000).map(|v| v * 10));
        let b = histogram([5, 50, 500, 5_000_000]);
        let intervals = [
            Interval {
                start: Duration::from_secs(0),
                length: Duration::from_secs(1),
                histogram: a.clone(),
            },
            Interval {
                start: Duration::from_secs(1),
                length: Duration::from_secs(1),
                histogram: b.clone(),
            },
        ];
        let mut log = Vec::new();
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        write_hlog(&mut log, start, &intervals).unwrap();
        let text = String::from_utf8(log.clone()).unwrap();
        assert!(
            text.starts_with("#[Histogram log format version 1.3]\n#[StartTime: 1800000000.000")
        );
        assert!(text.contains("\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"));

        let mut read = Vec::new();
        let mut start_time = None;
        for entry in IntervalLogIterator::new(&log) {
            match entry.unwrap() {
                LogEntry::StartTime(t) => start_time = Some(t),
                LogEntry::Interval(i) => {
                    let bytes = BASE64.decode(i.encoded_histogram()).unwrap();
                    let h: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut bytes.as_slice())
                        .unwrap();
                    read.push((i.start_timestamp(), i.max(), h));
                }
                LogEntry::BaseTime(_) => {}
            }
        }
        assert_eq!(start_time, Some(Duration::from_secs(1_800_000_000)));
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].2, a, "exactly the histogram written");
        assert_eq!(read[1].2, b);
        assert_eq!(read[1].0, Duration::from_secs(1));
        assert!((read[1].1 - 5000.0).abs() < 5.0, "max in ms: {}", read[1].1);
    }

    #[test]
    fn hgrm_has_the_standard_layout() {
        let h = histogram((1..=10_000).map(|v| v * 100)); // 0.1 ms .. 1000 ms
        let mut out = Vec::new();
        write_hgrm(&mut out, &h).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next().unwrap(), "");
        let first: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(first[0], "0.100");
        assert_eq!(first[2], "1");
        let last_row = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
        let last: Vec<&str> = last_row.split_whitespace().collect();
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "10000");
        assert!(text.contains("#[Max     =     1000.",), "{text}");
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn plot_draws_one_curve_per_metric() {
        let a = histogram(1..=1000);
        let b = histogram((1..=1000).map(|v| v * 3));
        let svg = plot_svg("ping <rtt>", &[("ping", &a), ("delivery", &b)]);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("99.999%"));
        assert!(svg.contains("ping &lt;rtt&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
