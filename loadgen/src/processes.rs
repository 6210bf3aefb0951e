//! One run split over several processes of this binary: for the epoll
//! engine, whose connections are process fds, so that one process holds at
//! most `RLIMIT_NOFILE` of them (`--processes N`, or chosen from the limit).
//!
//! The parent starts the server if there is none, then runs each part as a
//! child with the same options, its part named in the environment
//! ([`PART_ENV`]) with the run's common start ([`EPOCH_ENV`]), and its result
//! folder under the run's; then it adds the parts up, as `loadgen merge`
//! does, and judges the whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::results::{self, RunRecord};

/// `K/N`: this process runs part K of N.
pub const PART_ENV: &str = "LOADGEN_PART";
/// Nanoseconds since the Unix epoch at which the run starts, the same for
/// every part, so that publish times stamped in one part are measured in
/// another against the same origin.
pub const EPOCH_ENV: &str = "LOADGEN_EPOCH_NS";

/// Fds a loadgen process keeps for itself besides its connections.
pub const FD_RESERVE: usize = 64;

/// The part of a split run this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// Which part, from 0.
    pub index: usize,
    /// How many parts.
    pub of: usize,
}

impl Part {
    /// The whole run, in one process.
    pub const WHOLE: Part = Part { index: 0, of: 1 };

    /// This process's part, from [`PART_ENV`].
    pub fn from_env() -> Result<Self, String> {
        let Ok(text) = std::env::var(PART_ENV) else {
            return Ok(Self::WHOLE);
        };
        let parsed = text
            .split_once('/')
            .and_then(|(k, n)| Some((k.parse().ok()?, n.parse().ok()?)));
        match parsed {
            Some((index, of)) if index < of => Ok(Self { index, of }),
            _ => Err(format!("{PART_ENV}={text}: want K/N with K < N")),
        }
    }

    /// Whether this process runs only part of the run.
    pub fn is_part(self) -> bool {
        self.of > 1
    }
}

/// The run's start: [`EPOCH_ENV`] as an `Instant` of this process (it may
/// lie a little ahead), or now.
pub fn epoch() -> Instant {
    let now = Instant::now();
    let Some(ns) = std::env::var(EPOCH_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return now;
    };
    let at = UNIX_EPOCH + Duration::from_nanos(ns);
    let wall = SystemTime::now();
    match at.duration_since(wall) {
        Ok(ahead) => now + ahead,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    }
}

/// Processes a run of `conns` connections needs when each holds at most
/// `nofile` fds: one unless the engine's connections are fds.
pub fn needed(conns: usize, nofile: u64, fds_per_conn: bool) -> usize {
    if !fds_per_conn {
        return 1;
    }
    let per_process = (nofile as usize).saturating_sub(FD_RESERVE).max(1);
    conns.div_ceil(per_process).max(1)
}

/// Options of the parent's command line a part gets otherwise: where to
/// write, what to drive, how to split.
const REPLACED: [&str; 5] = [
    "--out",
    "--target",
    "--server-pid",
    "--processes",
    "--engine",
];

/// Runs `parts` children of this binary with `raw` (the parent's options)
/// against `targets`, each writing under `out`; returns their results.
pub fn run_parts(
    raw: &[String],
    parts: usize,
    engine: &str,
    targets: &[SocketAddr],
    server_pid: Option<u32>,
    out: &Path,
) -> Result<Vec<(PathBuf, RunRecord)>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut kept = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if REPLACED.contains(&raw[i].as_str()) {
            i += 2; // the option and its value
            continue;
        }
        kept.push(raw[i].clone());
        i += 1;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    // Every part starts at the same moment, a little ahead, once all exist.
    let start = SystemTime::now() + Duration::from_millis(300 + 50 * parts as u64);
    let epoch_ns = start
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
        .to_string();
    let mut children = Vec::new();
    for k in 0..parts {
        let dir = out.join(format!("part-{k}"));
        let log = out.join(format!("part-{k}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut command = Command::new(&exe);
        command
            .args(&kept)
            .args(["--engine", engine, "--out"])
            .arg(&dir)
            .env(PART_ENV, format!("{k}/{parts}"))
            .env(EPOCH_ENV, &epoch_ns)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file);
        for t in targets {
            command.args(["--target", &t.to_string()]);
        }
        if let Some(pid) = server_pid {
            command.args(["--server-pid", &pid.to_string()]);
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start part {k}: {e}"))?;
        children.push((k, child, dir, log));
    }
    println!(
        "{parts} processes (engine {engine}: one fd per connection), logs in {}/part-K.log",
        out.display()
    );
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for (k, mut child, dir, log) in children {
        let status = child.wait().map_err(|e| format!("part {k}: {e}"))?;
        match RunRecord::read(&dir) {
            Ok(record) => results.push((dir, record)),
            Err(e) => failures.push(format!(
                "part {k} ({status}) wrote no result ({e}); its log: {}",
                last_lines(&log, 5)
            )),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("\n"));
    }
    Ok(results)
}

/// Adds up the parts' results into one, named after their folders.
pub fn merge(parts: &[(PathBuf, RunRecord)]) -> Result<RunRecord, String> {
    let (names, runs): (Vec<String>, Vec<RunRecord>) = parts
        .iter()
        .map(|(d, r)| (d.display().to_string(), r.clone()))
        .unzip();
    if runs.len() == 1 {
        return Ok(runs.into_iter().next().expect("one"));
    }
    results::merge(&runs, &names)
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_split_only_where_connections_are_fds() {
        assert_eq!(needed(100_000, 20_000, false), 1);
        assert_eq!(needed(100_000, 20_000, true), 6, "19,936 per process");
        assert_eq!(needed(10_000, 20_000, true), 1);
    }
}
