//! Result files in HdrHistogram's own formats, so its tools read them:
//!
//! * `.hlog`: the interval log (one compressed histogram per interval), with
//!   the header and legend HdrHistogram's Java `HistogramLogWriter` writes;
//! * `.hgrm`: the percentile distribution `outputPercentileDistribution` prints.
//!
//! The pictures drawn from them are in [`crate::plot`].
//!
//! Latencies are recorded in microseconds and reported in milliseconds.

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
}
