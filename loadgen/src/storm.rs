//! A reconnect storm (`--storm kill@15`): mid-run, loadgen signals its own
//! server (SIGKILL, or SIGTERM for a drain with GOAWAY), starts it again on
//! the same address after `--storm-restart-ms`, and measures how the clients
//! come back: when every one was up again, the most welcomed in one second
//! (what the jittered backoff let through), and the SYNs the kernel dropped.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::EngineKind;
use serde::{Deserialize, Serialize};

use crate::own_server::OwnServer;

/// How long the old server may take to exit (a drain, then its rings torn
/// down: over 10 s at 100,000 connections, measured).
const EXIT_WITHIN: Duration = Duration::from_secs(60);
/// How long a restart is tried for.
const RESTART_WITHIN: Duration = Duration::from_secs(120);

/// How the server is taken down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: nothing flushed, no GOAWAY; the clients see their sockets reset.
    Kill,
    /// SIGTERM: the server drains (GOAWAY SHUTTING_DOWN) and exits.
    Term,
}

impl Signal {
    /// Its name for kill(1).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
        }
    }
}

/// `--storm SIGNAL@SECONDS`: `kill@15`, `term@20s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormSpec {
    /// How.
    pub signal: Signal,
    /// When, from the run's start.
    pub at: Duration,
}

impl FromStr for StormSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--storm {s:?}: kill@SECONDS or term@SECONDS (e.g. kill@15)");
        let (signal, at) = s.split_once('@').ok_or_else(bad)?;
        let signal = match signal {
            "kill" => Signal::Kill,
            "term" => Signal::Term,
            _ => return Err(bad()),
        };
        let at: f64 = at.trim_end_matches('s').parse().map_err(|_| bad())?;
        if !(at.is_finite() && at > 0.0) {
            return Err(bad());
        }
        Ok(StormSpec {
            signal,
            at: Duration::from_secs_f64(at),
        })
    }
}

/// What the storm did, as it happened.
#[derive(Clone, Debug, Default)]
pub struct Events {
    /// When the signal went, from the run's start.
    pub signalled_at: Option<Duration>,
    /// When the old server had exited.
    pub exited_at: Option<Duration>,
    /// When the new server was ready.
    pub restarted_at: Option<Duration>,
    /// Why it could not be restarted, if it could not.
    pub error: Option<String>,
}

/// The storm's figures, in summary.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `KILL` or `TERM`.
    pub signal: String,
    /// When the signal went, seconds from the start.
    pub at_s: f64,
    /// When the old server had exited (SIGTERM: after its drain).
    #[serde(default)]
    pub exited_at_s: Option<f64>,
    /// When the new server was ready.
    pub restarted_at_s: Option<f64>,
    /// Seconds from the signal until every connection was up again (by the
    /// per-second counts); none if they never all were.
    pub all_back_after_s: Option<u64>,
    /// The most connections welcomed in one second after the signal.
    pub peak_welcomes_per_s: u64,
    /// The most `connect()` calls in one second after the signal (what the
    /// clients' jittered backoff let loose).
    #[serde(default)]
    pub peak_connects_per_s: u64,
    /// The kernel's ListenDrops over the run (machine-wide, /proc/net/netstat).
    pub listen_drops: Option<u64>,
    /// Why the server could not be restarted.
    pub restart_error: Option<String>,
}

/// Runs the storm on its own thread: at `spec.at` after `epoch`, signals the
/// server in `slot`, waits for it to exit (at most 10 s), waits `restart`,
/// and starts a new one on `listen`, which it puts in `slot`.
pub fn spawn(
    spec: StormSpec,
    restart: Duration,
    slot: Arc<Mutex<Option<OwnServer>>>,
    listen: SocketAddr,
    conns: usize,
    kind: EngineKind,
    epoch: Instant,
) -> JoinHandle<Events> {
    std::thread::spawn(move || {
        let mut events = Events::default();
        std::thread::sleep((epoch + spec.at).saturating_duration_since(Instant::now()));
        let Some(mut old) = slot.lock().unwrap().take() else {
            events.error = Some("no server to signal".into());
            return events;
        };
        old.signal(spec.signal.name());
        events.signalled_at = Some(epoch.elapsed());
        if !old.wait_exit(EXIT_WITHIN) {
            events.error = Some(format!(
                "the server did not exit within {} s of SIG{}",
                EXIT_WITHIN.as_secs(),
                spec.signal.name()
            ));
            old.stop();
            return events;
        }
        events.exited_at = Some(epoch.elapsed());
        std::thread::sleep(restart);
        // The old listeners outlive a SIGKILLed process while the kernel
        // tears its rings down (measured: ~10 s at 100,000 connections), and
        // the server refuses an address another socket listens on; so tries
        // for at most RESTART_WITHIN, then the error is the run's.
        let mut last = String::new();
        let give_up = Instant::now() + RESTART_WITHIN;
        while Instant::now() < give_up {
            match OwnServer::start(listen, conns, kind) {
                Ok((server, _)) => {
                    events.restarted_at = Some(epoch.elapsed());
                    *slot.lock().unwrap() = Some(server);
                    return events;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        events.error = Some(format!("the server could not be restarted: {last}"));
        events
    })
}

/// The storm's figures from what happened and the per-second counts of
/// connections up (`up[i]`: at the end of second i + 1) and of connects made.
pub fn report(
    spec: StormSpec,
    events: &Events,
    up: &[u64],
    connects: &[u64],
    conns: u64,
    listen_drops: Option<u64>,
) -> Report {
    let at = events.signalled_at.unwrap_or(spec.at);
    let from = at.as_secs() as usize;
    // The first second after the signal in which they were down, then the
    // first after that in which all were up.
    let fell = (from..up.len()).find(|&i| up[i] < conns);
    let back = fell.and_then(|f| (f..up.len()).find(|&i| up[i] >= conns));
    let all_back_after_s = back.map(|i| (i as u64 + 1).saturating_sub(at.as_secs()));
    let peak_welcomes_per_s = (from.max(1)..up.len())
        .map(|i| up[i].saturating_sub(up[i - 1]))
        .max()
        .unwrap_or(0);
    let peak_connects_per_s = connects.iter().skip(from).copied().max().unwrap_or(0);
    Report {
        signal: spec.signal.name().to_string(),
        at_s: at.as_secs_f64(),
        exited_at_s: events.exited_at.map(|d| d.as_secs_f64()),
        restarted_at_s: events.restarted_at.map(|d| d.as_secs_f64()),
        all_back_after_s,
        peak_welcomes_per_s,
        peak_connects_per_s,
        listen_drops,
        restart_error: events.error.clone(),
    }
}

/// The summary table's rows for it.
pub fn describe(r: &Report) -> String {
    let back = match r.all_back_after_s {
        Some(s) => format!("{s} s after the signal"),
        None => "never, within the run".into(),
    };
    let exited = r
        .exited_at_s
        .map_or_else(String::new, |t| format!("exited at {t:.1} s, "));
    let restarted = match (r.restarted_at_s, &r.restart_error) {
        (Some(t), _) => format!("{exited}restarted at {t:.1} s"),
        (None, Some(e)) => format!("NOT restarted: {e}"),
        (None, None) => "not restarted".into(),
    };
    format!(
        "| storm: SIG{} at {:.1} s, {restarted} | every connection back {back} |\n\
         | storm: most welcomed / connects made in one second, listen drops | {} / {}, {} |",
        r.signal,
        r.at_s,
        r.peak_welcomes_per_s,
        r.peak_connects_per_s,
        r.listen_drops
            .map_or_else(|| "n/a".into(), |d| d.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_how() {
        assert_eq!(
            "kill@15".parse::<StormSpec>().unwrap(),
            StormSpec {
                signal: Signal::Kill,
                at: Duration::from_secs(15)
            }
        );
        assert_eq!(
            "term@2.5s".parse::<StormSpec>().unwrap().signal,
            Signal::Term
        );
        for bad in ["kill", "hup@3", "kill@", "kill@-1", "kill@soon"] {
            assert!(
                bad.parse::<StormSpec>()
                    .unwrap_err()
                    .contains("kill@SECONDS"),
                "{bad}"
            );
        }
    }

    #[test]
    fn recovery_is_read_from_the_per_second_counts() {
        let spec: StormSpec = "kill@3".parse().unwrap();
        let events = Events {
            signalled_at: Some(Duration::from_millis(3_200)),
            exited_at: Some(Duration::from_millis(3_250)),
            restarted_at: Some(Duration::from_millis(4_300)),
            error: None,
        };
        // Up at the end of seconds 1..=9: all 100 by 2 s, down at 4, back at 7.
        let up = [60, 100, 100, 0, 30, 90, 100, 100, 100];
        let connects = [60, 40, 0, 0, 130, 90, 10, 0, 0];
        let r = report(spec, &events, &up, &connects, 100, Some(0));
        assert_eq!(r.all_back_after_s, Some(4), "second 7, from 3 s");
        assert_eq!(r.peak_welcomes_per_s, 60);
        assert_eq!(
            r.peak_connects_per_s, 130,
            "the ramp's 60 is before the signal"
        );
        assert_eq!(r.restarted_at_s, Some(4.3));
        // Never all back: said so.
        let r = report(spec, &events, &[100, 100, 100, 0, 50, 99], &[], 100, None);
        assert_eq!(r.all_back_after_s, None);
        assert!(describe(&r).contains("never, within the run"));
    }
}
