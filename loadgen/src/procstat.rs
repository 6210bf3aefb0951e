//! CPU time and memory of a process, sampled from /proc: the server's (started
//! by the load generator or given by `--server-pid`) and the load generator's
//! own, so that every figure can be put next to what it cost.

use std::time::Duration;

/// One sample of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// User plus system CPU time so far.
    pub cpu: Duration,
    /// Resident set size now, in bytes.
    pub rss: u64,
    /// Highest resident set size so far (VmHWM), in bytes.
    pub peak_rss: u64,
}

/// Clock ticks per second of /proc/PID/stat's times: 100 on every Linux
/// architecture this runs on (USER_HZ).
const USER_HZ: u64 = 100;

/// Samples process `pid` (`None`: this process).
pub fn sample(pid: Option<u32>) -> Result<Sample, String> {
    let dir = pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"));
    let stat =
        std::fs::read_to_string(format!("{dir}/stat")).map_err(|e| format!("{dir}/stat: {e}"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .map_err(|e| format!("{dir}/status: {e}"))?;
    if status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains("zombie"))
    {
        // It has exited (its parent has not reaped it): nothing to measure.
        return Err(format!("process {} has exited", pid.unwrap_or(0)));
    }
    Ok(Sample {
        cpu: parse_cpu(&stat).ok_or_else(|| format!("cannot parse {dir}/stat"))?,
        rss: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        peak_rss: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// utime + stime from the text of /proc/PID/stat. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_cpu(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU-seconds per million events, the figure the benchmarks compare.
pub fn cpu_per_million(cpu: Duration, events: u64) -> Option<f64> {
    (events > 0).then(|| cpu.as_secs_f64() * 1e6 / events as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_past_an_awkward_name() {
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3250)));
        assert_eq!(parse_cpu("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(None).unwrap();
        assert!(s.rss > 0 && s.peak_rss >= s.rss);
        let busy: u64 = (0..5_000_000u64)
            .map(|i| i.wrapping_mul(i))
            .fold(0, u64::wrapping_add);
        assert!(busy > 0);
        assert!(sample(None).unwrap().cpu >= s.cpu);
        assert!(sample(Some(u32::MAX)).is_err());
    }

    #[test]
    fn cpu_per_million_events() {
        assert_eq!(
            cpu_per_million(Duration::from_secs(9), 1_000_000),
            Some(9.0)
        );
        assert_eq!(cpu_per_million(Duration::from_secs(1), 0), None);
    }
}
