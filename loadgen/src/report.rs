//! `.hgrm`: the percentile distribution HdrHistogram's
//! `outputPercentileDistribution` prints, so its tools read it. The interval
//! log is [`crate::hlog`]; the pictures are [`crate::plot`].
//!
//! Latencies are recorded in microseconds and reported in milliseconds.

use std::io::{self, Write};

use hdrhistogram::Histogram;

/// Recorded values per reported unit: microseconds per millisecond.
pub const UNIT_RATIO: f64 = 1000.0;

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

    use crate::results::histogram_of as histogram;

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
