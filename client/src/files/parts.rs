//! Partial files: the temporary names incoming files are written under
//! (`.ringroom-PID-N.part` in the target folder: a dot, the receiver's pid, a
//! counter, so no sender can choose one), and the clean-up of those that a
//! receiver killed mid-transfer left behind (SIGKILL gives it no chance to
//! delete its own).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

const PREFIX: &str = ".ringroom-";
const SUFFIX: &str = ".part";

/// The counter of this process's partial files.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// A new partial file's path in `dir`, named for this process.
pub fn new_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        "{PREFIX}{}-{}{SUFFIX}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The pid a partial file's name names, if it is one of ours.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether a process with `pid` exists (one of another user's counts).
fn alive(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// Deletes the partial files in `dir` whose receiver is gone, and returns
/// their names. A pid that lives again (reused) keeps its file: the
/// clean-up errs on keeping.
pub fn remove_orphans(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| owner(name).is_some_and(|pid| !alive(pid)))
        .filter(|name| std::fs::remove_file(dir.join(name)).is_ok())
        .collect();
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_back_and_others_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ours = new_path(dir.path());
        let name = ours.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(owner(&name), Some(std::process::id() as i32));
        for other in [
            "hello.part",
            "ringroom-5-1.part",
            ".ringroom-x-1.part",
            ".ringroom-5-.part",
            ".ringroom-0-1.part",
            ".ringroom-5-1.partial",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }

    #[test]
    fn only_the_parts_of_processes_that_are_gone_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |name: &str| std::fs::write(dir.path().join(name), b"x").unwrap();
        let mine = new_path(dir.path());
        std::fs::write(&mine, b"x").unwrap();
        // No process has pid 2^31-1 (above any pid_max); pid 1 always lives.
        touch(".ringroom-2147483647-3.part");
        touch(".ringroom-1-0.part");
        touch("notes.part");
        assert_eq!(remove_orphans(dir.path()), [".ringroom-2147483647-3.part"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mine = mine.file_name().unwrap().to_str().unwrap().to_string();
        let mut want = vec![".ringroom-1-0.part".to_string(), mine, "notes.part".into()];
        want.sort();
        assert_eq!(left, want);
        assert!(remove_orphans(&dir.path().join("missing")).is_empty());
    }
}
