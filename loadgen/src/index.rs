//! `loadgen report DIR`: the index of the committed results, regenerated from
//! the result folders, so that `bench-results/README.md` never drifts from
//! what the folders hold.
//!
//! A release folder is `DIR/<release>/`, its runs `DIR/<release>/<scenario>/`
//! (each with a `summary.json`), its peer comparison `DIR/<release>/peers.md`.
//! Other folders (criterion and script measurements) are listed by the title
//! of their newest Markdown file. `DIR/local/` (git ignores it) is skipped.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::results::{RunRecord, Summary};

/// One run found under a release.
pub struct Row {
    /// Release folder name.
    pub release: String,
    /// Scenario folder name.
    pub scenario: String,
    /// The run's summary.
    pub summary: Summary,
}

/// What `DIR` holds.
#[derive(Default)]
pub struct Contents {
    /// Runs, releases in version order, scenarios by name.
    pub rows: Vec<Row>,
    /// Releases with a `peers.md`.
    pub peers: Vec<String>,
    /// Other folders: (name, title).
    pub other: Vec<(String, String)>,
}

/// Version-aware order: "0.10.0" after "0.9.1"; numbers compare as numbers.
fn natural(a: &str, b: &str) -> Ordering {
    let key = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-'])
            .map(|part| match part.parse::<u64>() {
                Ok(n) => (n, String::new()),
                Err(_) => (u64::MAX, part.to_string()),
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    Ok(out)
}

fn name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The first `# ` heading of the newest (last by name) Markdown file in `dir`
/// other than README.md, else of README.md.
fn title(dir: &Path) -> Option<String> {
    let mut mds: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    mds.sort_by_key(|p| (name(p) != "README.md", name(p)));
    let text = std::fs::read_to_string(mds.last()?).ok()?;
    let line = text.lines().find(|l| l.starts_with("# "))?;
    Some(line[2..].trim().to_string())
}

/// Reads everything under `root`.
pub fn collect(root: &Path) -> Result<Contents, String> {
    let mut c = Contents::default();
    let mut releases = Vec::new();
    for dir in subdirs(root)? {
        let n = name(&dir);
        if n == "local" || n.starts_with('.') {
            continue;
        }
        let runs: Vec<PathBuf> = subdirs(&dir)?
            .into_iter()
            .filter(|d| d.join("summary.json").is_file())
            .collect();
        if runs.is_empty() {
            let t = title(&dir).unwrap_or_default();
            c.other.push((n, t));
            continue;
        }
        releases.push((n, dir, runs));
    }
    releases.sort_by(|a, b| natural(&a.0, &b.0));
    for (release, dir, runs) in releases {
        if dir.join("peers.md").is_file() {
            c.peers.push(release.clone());
        }
        for run in runs {
            // Figures recomputed from the folder's own logs (older summaries
            // lack the hold percentiles).
            let mut record = RunRecord::read(&run)?;
            record.finish();
            let summary = record.summary;
            c.rows.push(Row {
                release: release.clone(),
                scenario: name(&run),
                summary,
            });
        }
    }
    Ok(c)
}

pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The index page.
pub fn render(c: &Contents) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# bench-results/\n\n\
         Measured results, committed per release, each with the machine it ran on.\n\
         This page is written by `loadgen report bench-results/`: do not edit it by hand.\n\
         Compare two releases with `loadgen compare A B` (folders or release names).\n"
    );
    if !c.rows.is_empty() {
        let _ = writeln!(
            out,
            "## Runs\n\n\
             Latency is the scenario's own metric, from the planned send time: PING round\n\
             trip (idle, ping) over the hold, the ramp left out (the whole run's figures\n\
             are in each summary.json), or room delivery (rooms; publishing starts after\n\
             the ramp). Rate is\n\
             PONGs or deliveries a second over the hold; CPU is the server's per million of\n\
             them, the connection ramp included (it dominates where the message rate is low,\n\
             as in idle runs); B/conn is the server's peak RSS growth per connection.\n\n\
             | release | scenario | protocol | connections | rate /s | p50 ms | p99 ms | p99.9 ms | server CPU-s per M | server B/conn | machine |\n\
             |---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &c.rows {
            let s = &r.summary;
            let (lat, rate, per_m) = match (&s.latency.delivery, &s.rooms) {
                (Some(d), Some(_)) => (
                    d,
                    s.rates.deliveries_per_s,
                    s.server
                        .as_ref()
                        .and_then(|v| v.cpu_s_per_million_deliveries),
                ),
                _ => (
                    s.latency
                        .ping_rtt_hold
                        .as_ref()
                        .unwrap_or(&s.latency.ping_rtt),
                    s.rates.pongs_per_s,
                    s.server.as_ref().and_then(|v| v.cpu_s_per_million_pongs),
                ),
            };
            let per_m = per_m.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
            let bytes = s.server.as_ref().map_or_else(
                || "-".into(),
                |v| v.peak_rss_growth_bytes_per_connection.to_string(),
            );
            let machine = format!(
                "{} cores, Linux {}",
                s.machine.cores,
                s.machine.kernel.split('-').next().unwrap_or_default()
            );
            let _ = writeln!(
                out,
                "| {rel} | [{sc}]({rel}/{sc}/) | {proto} | {conns} / {asked} | {rate} | {p50:.3} | {p99:.3} | {p999:.3} | {per_m} | {bytes} | [{machine}]({rel}/{sc}/machine.json) |",
                rel = r.release,
                sc = r.scenario,
                proto = s.config.protocol,
                conns = thousands(s.counts.connected),
                asked = thousands(s.config.conns),
                rate = thousands(rate.round() as u64),
                p50 = lat.p50_ms,
                p99 = lat.p99_ms,
                p999 = lat.p99_9_ms,
            );
        }
        out.push('\n');
    }
    if !c.peers.is_empty() {
        let _ = writeln!(out, "## Side by side with peer servers\n");
        for p in &c.peers {
            let _ = writeln!(out, "- [{p}/peers.md]({p}/peers.md)");
        }
        out.push('\n');
    }
    if !c.other.is_empty() {
        let _ = writeln!(
            out,
            "## Other measurements\n\n| folder | newest |\n|---|---|"
        );
        for (n, t) in &c.other {
            let _ = writeln!(out, "| [{n}/]({n}/) | {t} |");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "Local runs go to `bench-results/local/`, which git ignores."
    );
    out
}

/// The peer servers' table: every run folder directly in `dir`, named
/// `SCENARIO-SERVER` as `bench-results/peers.sh` writes them (SERVER: a
/// `--protocol` name, or `minimal` for the baseline io_uring loop), by
/// scenario, ringroom first.
pub fn render_peers(dir: &Path) -> Result<String, String> {
    let order = ["ringroom", "epoll", "minimal", "redis", "nats", "mqtt"];
    let mut runs = Vec::new();
    for d in subdirs(dir)? {
        if d.join("summary.json").is_file() {
            let n = name(&d);
            let server = n
                .rsplit_once('-')
                .map_or(n.as_str(), |(_, s)| s)
                .to_string();
            runs.push((server, RunRecord::read(&d)?.summary));
        }
    }
    if runs.is_empty() {
        return Err(format!("{}: no result folders", dir.display()));
    }
    runs.sort_by_key(|(server, s)| {
        let rank = order.iter().position(|p| p == server);
        (s.config.scenario.clone(), rank)
    });
    let mut out = String::from(
        "| scenario | server | connections | messages /s | server CPU-s per M messages | server B/conn | p50 ms | p99 ms | p99.9 ms | max ms | loadgen CPU-s |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (server, s) in &runs {
        let server = match server.as_str() {
            "ringroom" => "ringroom-server",
            "epoll" => "ringroom-server --engine epoll",
            "minimal" => "minimal io_uring loop (baseline, 1 ring)",
            "redis" => "redis-server",
            "nats" => "nats-server",
            "mqtt" => "mosquitto",
            other => other,
        };
        let rooms = s.rooms.is_some();
        let lat = s
            .latency
            .delivery
            .as_ref()
            .filter(|_| rooms)
            .unwrap_or(&s.latency.ping_rtt);
        let rate = if rooms {
            s.rates.deliveries_per_s
        } else {
            s.rates.pongs_per_s
        };
        let per_m = s.server.as_ref().and_then(|v| {
            if rooms {
                v.cpu_s_per_million_deliveries
            } else {
                v.cpu_s_per_million_pongs
            }
        });
        let _ = writeln!(
            out,
            "| {} | {server} | {} / {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |",
            s.config.scenario,
            thousands(s.counts.connected),
            thousands(s.config.conns),
            thousands(rate.round() as u64),
            per_m.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
            s.server.as_ref().map_or_else(
                || "-".into(),
                |v| v.peak_rss_growth_bytes_per_connection.to_string()
            ),
            lat.p50_ms,
            lat.p99_ms,
            lat.p99_9_ms,
            lat.max_ms,
            s.loadgen_cpu_s,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_sort_as_versions() {
        let mut v = vec!["0.10.0", "0.9.1", "0.2.0", "0.9.0-rc1"];
        v.sort_by(|a, b| natural(a, b));
        assert_eq!(v, ["0.2.0", "0.9.0-rc1", "0.9.1", "0.10.0"]);
    }

    #[test]
    fn the_index_lists_releases_peers_and_other_folders() {
        use crate::hlog::Interval;
        use crate::results::{histogram, Metric, Server};
        use std::time::{Duration, UNIX_EPOCH};
        let root = std::env::temp_dir().join(format!("loadgen-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut rtt = histogram();
        rtt.record(1500).unwrap();
        let run = |conns: u64| RunRecord {
            summary: Summary {
                config: crate::results::Config {
                    conns,
                    duration_s: 10,
                    scenario: "ping".into(),
                    protocol: "ringroom".into(),
                    ..Default::default()
                },
                counts: crate::results::Counts {
                    connected: conns,
                    pings: 20_000,
                    pongs: 20_000,
                    ..Default::default()
                },
                server: Some(Server {
                    cpu_s: 0.3,
                    peak_rss_growth_bytes: 240 * conns,
                    ..Default::default()
                }),
                ..Default::default()
            },
            metrics: vec![Metric {
                name: "ping-rtt".into(),
                start_time: UNIX_EPOCH,
                intervals: vec![Interval {
                    start: Duration::ZERO,
                    length: Duration::from_secs(1),
                    histogram: rtt.clone(),
                }],
            }],
        };
        for (release, conns) in [("0.10.0", 100_000), ("0.9.0", 10_000)] {
            let mut r = run(conns);
            r.finish();
            r.write(&root.join(release).join("c10k-ping")).unwrap();
        }
        std::fs::write(root.join("0.9.0/peers.md"), "# peers\n").unwrap();
        std::fs::create_dir_all(root.join("proto")).unwrap();
        std::fs::write(root.join("proto/2026-01-01.md"), "# decoder speed\n").unwrap();
        std::fs::create_dir_all(root.join("local/x")).unwrap();
        let page = render(&collect(&root).unwrap());
        let rows: Vec<&str> = page.lines().filter(|l| l.starts_with("| 0.")).collect();
        assert_eq!(rows.len(), 2, "{page}");
        assert!(rows[0].starts_with("| 0.9.0 | [c10k-ping](0.9.0/c10k-ping/) | ringroom | 10,000 / 10,000 | 2,000 | 1.500 |"), "{}", rows[0]);
        assert!(
            rows[0].contains("| 15.00 | 240 |"),
            "CPU per million and B/conn: {}",
            rows[0]
        );
        assert!(
            rows[1].starts_with("| 0.10.0 |"),
            "versions in order: {page}"
        );
        assert!(page.contains("[0.9.0/peers.md](0.9.0/peers.md)"), "{page}");
        assert!(
            page.contains("| [proto/](proto/) | decoder speed |"),
            "{page}"
        );
        assert!(!page.contains("[local/]"), "local/ is skipped: {page}");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_062_342), "1,062,342");
    }
}
