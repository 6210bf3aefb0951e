//! Durations and rates on the command line, with units as tcpkali, wrk and
//! k6 take them: `500ms`, `15s`, `2m`, `1h` (a bare number is seconds), and
//! `3/s`, `180/m` (a bare number is per second).

use std::time::Duration;

/// A whole number of seconds, written with or without a unit (`15`, `15s`,
/// `2m`, `1h`, `3000ms`): the results are kept per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl std::str::FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d.subsec_nanos() != 0 || d.is_zero() {
            return Err(format!(
                "{s:?} is not a whole, positive number of seconds (results are kept per second)"
            ));
        }
        Ok(Self(d.as_secs()))
    }
}

/// A duration: a number and a unit (`ms`, `s`, `m`, `h`); no unit is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 500ms, 15s, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

/// Events per second, written `3`, `3/s`, `180/m` or `3600/h`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub f64);

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (number, per) = s.trim().split_once('/').unwrap_or((s.trim(), "s"));
        let n: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a rate (like 3, 3/s, 180/m)"))?;
        let per_secs = match per.trim() {
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{s:?}: unknown unit /{other} (/s, /m or /h)")),
        };
        if !(n.is_finite() && n > 0.0) {
            return Err(format!("{s:?} must be a positive rate"));
        }
        Ok(Self(n / per_secs))
    }
}

/// A share of something per second, written `1`, `1%`, `1%/s`, `60%/m`
/// (a bare number is percent per second).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PercentRate(pub f64);

impl std::str::FromStr for PercentRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (number, per) = t.split_once('/').unwrap_or((t, "s"));
        let rate: Rate = format!("{}/{per}", number.trim().trim_end_matches('%'))
            .parse()
            .map_err(|_| format!("{s:?} is not a share per second (like 1%, 1%/s, 60%/m)"))?;
        if rate.0 > 100.0 {
            return Err(format!("{s:?}: at most 100% a second"));
        }
        Ok(Self(rate.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_numbers_are_seconds() {
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("15x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        assert_eq!("2m".parse(), Ok(Seconds(120)));
        assert_eq!("3000ms".parse(), Ok(Seconds(3)));
        assert!("1500ms".parse::<Seconds>().unwrap_err().contains("whole"));
        assert!("0s".parse::<Seconds>().is_err());
    }

    #[test]
    fn rates_take_a_unit_of_time() {
        assert_eq!("3".parse(), Ok(Rate(3.0)));
        assert_eq!("3/s".parse(), Ok(Rate(3.0)));
        assert_eq!("180/m".parse(), Ok(Rate(3.0)));
        assert_eq!("0.5/s".parse(), Ok(Rate(0.5)));
        assert!("3/d".parse::<Rate>().unwrap_err().contains("unknown unit"));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }

    #[test]
    fn shares_per_second_take_a_percent_sign_and_a_unit() {
        assert_eq!("1".parse::<PercentRate>(), Ok(PercentRate(1.0)));
        assert_eq!("0.5%".parse::<PercentRate>(), Ok(PercentRate(0.5)));
        assert_eq!("2%/s".parse::<PercentRate>(), Ok(PercentRate(2.0)));
        assert_eq!("60%/m".parse::<PercentRate>(), Ok(PercentRate(1.0)));
        for bad in ["", "%", "-1%", "a lot", "1%/d", "101%"] {
            assert!(bad.parse::<PercentRate>().is_err(), "{bad}");
        }
    }
}
