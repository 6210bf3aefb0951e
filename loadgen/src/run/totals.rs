//! The workers' results added up, second by second where they are per second.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::Counts;
use crate::results::add_per_second;
use crate::worker;

/// What every worker measured, added up.
pub(super) struct Totals {
    pub(super) counts: Counts,
    pub(super) connect: Histogram<u64>,
    pub(super) rtt: Histogram<u64>,
    pub(super) intervals: Vec<Histogram<u64>>,
    pub(super) up_per_second: Vec<u64>,
    /// `connect()` calls each second.
    pub(super) connects_per_second: Vec<u64>,
    /// The workers' lowest ramp rates, added up.
    pub(super) ramp_lowest: f64,
    pub(super) delivery: Histogram<u64>,
    /// The same, same target and different targets.
    pub(super) delivery_split: [Histogram<u64>; 2],
    /// Room messages late, duplicated, missing (silently), reported lost.
    pub(super) order: [u64; 4],
    pub(super) peak: usize,
    pub(super) ramp: Duration,
    /// Connect latency of the connections opened by the churn.
    pub(super) churn_connect: Histogram<u64>,
}

/// Waits for the workers and adds up their results, second by second where
/// they are per second.
pub(super) fn add_up(
    handles: Vec<std::thread::JoinHandle<Result<worker::WorkerResult, String>>>,
) -> Result<Totals, String> {
    let mut t = Totals {
        counts: Counts::default(),
        connect: crate::results::histogram(),
        rtt: crate::results::histogram(),
        intervals: Vec::new(),
        up_per_second: Vec::new(),
        connects_per_second: Vec::new(),
        ramp_lowest: 0.0,
        delivery: crate::results::histogram(),
        delivery_split: [crate::results::histogram(), crate::results::histogram()],
        order: [0; 4],
        peak: 0,
        ramp: Duration::ZERO,
        churn_connect: crate::results::histogram(),
    };
    let hist = |e: hdrhistogram::AdditionError| format!("{e:?}");
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| "a worker panicked".to_string())??;
        t.counts.add(&result.counts);
        t.connect.add(&result.connect).map_err(hist)?;
        t.churn_connect.add(&result.churn_connect).map_err(hist)?;
        t.rtt.add(&result.rtt).map_err(hist)?;
        add_per_second(&mut t.up_per_second, &result.up_per_interval);
        add_per_second(&mut t.connects_per_second, &result.attempts_per_interval);
        t.ramp_lowest += result.ramp_lowest;
        for (i, packed) in result.intervals.iter().enumerate() {
            let h = packed.unpack()?;
            match t.intervals.get_mut(i) {
                Some(sum) => sum.add(&h).map_err(hist)?,
                None => t.intervals.push(h),
            }
        }
        t.delivery.add(&result.delivery).map_err(hist)?;
        t.order[0] += result.late;
        t.order[1] += result.duplicates;
        t.order[2] += result.missing;
        t.order[3] += result.reported;
        t.delivery_split[0]
            .add(&result.delivery_same)
            .map_err(hist)?;
        t.delivery_split[1]
            .add(&result.delivery_cross)
            .map_err(hist)?;
        t.peak += result.peak_open;
        t.ramp = t.ramp.max(result.ramp_done);
    }
    Ok(t)
}
