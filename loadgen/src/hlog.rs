//! The interval log (`.hlog`), written, read and decoded here and nowhere
//! else: one compressed histogram per interval, with the header and legend
//! HdrHistogram's Java `HistogramLogWriter` writes, so its tools read it.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use hdrhistogram::Histogram;

use crate::report::UNIT_RATIO;

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
pub fn write(
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

/// Reads an interval log with its start time and each interval's offset and length.
pub fn read(text: &[u8]) -> Result<(SystemTime, Vec<Interval>), String> {
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let mut start = UNIX_EPOCH;
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text) {
        match entry.map_err(|e| format!("bad interval log: {e:?}"))? {
            LogEntry::StartTime(t) => start = UNIX_EPOCH + t,
            LogEntry::Interval(i) => out.push(Interval {
                start: i.start_timestamp(),
                length: i.duration(),
                histogram: decode_histogram(i.encoded_histogram())?,
            }),
            LogEntry::BaseTime(_) => {}
        }
    }
    Ok((start, out))
}

/// Reads an interval log: its interval histograms, in order.
pub fn read_histograms(text: &[u8]) -> Result<Vec<Histogram<u64>>, String> {
    let (_, intervals) = read(text)?;
    Ok(intervals.into_iter().map(|i| i.histogram).collect())
}

/// One histogram as an interval log encodes it (base64 of the V2 compressed form).
/// A histogram packed in memory (HdrHistogram's V2 encoding, not deflated):
/// a full [`Histogram`] of loadgen's range is ~180 KB of counts whatever it
/// holds; one second of RTTs packs into a few hundred bytes. A worker keeps
/// its seconds packed, so that its memory does not grow by 180 KB a second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed(Vec<u8>);

impl Packed {
    /// Packs `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .expect("serializing to memory cannot fail");
        Self(bytes)
    }

    /// The histogram again.
    pub fn unpack(&self) -> Result<Histogram<u64>, String> {
        Deserializer::new()
            .deserialize(&mut self.0.as_slice())
            .map_err(|e| format!("bad packed histogram: {e:?}"))
    }

    /// Bytes it takes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it takes no bytes (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn decode_histogram(encoded: &str) -> Result<Histogram<u64>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("bad histogram encoding: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("bad histogram: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_second_is_small_and_unpacks_to_the_same() {
        let mut h = crate::results::histogram();
        for v in [120, 480, 480, 950, 12_000, 2_400_000] {
            h.record(v).unwrap();
        }
        let packed = Packed::of(&h);
        assert!(packed.len() < 200, "{} bytes", packed.len());
        let back = packed.unpack().unwrap();
        assert_eq!(back, h);
        assert_eq!(
            back.high(),
            h.high(),
            "the same range: it adds up with others"
        );
    }
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine as _;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    use crate::results::histogram_of as histogram;

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
        write(&mut log, start, &intervals).unwrap();
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
    fn an_hlog_written_by_loadgen_is_read_back() {
        let a = (0..4u64)
            .map(|i| histogram((1..=1000).map(|v| v * (i + 1))))
            .collect::<Vec<_>>();
        let log: Vec<Interval> = a
            .iter()
            .enumerate()
            .map(|(i, h)| Interval {
                start: std::time::Duration::from_secs(i as u64),
                length: std::time::Duration::from_secs(1),
                histogram: h.clone(),
            })
            .collect();
        let mut bytes = Vec::new();
        write(&mut bytes, std::time::SystemTime::now(), &log).unwrap();
        assert_eq!(read_histograms(&bytes).unwrap(), a);
    }
}
