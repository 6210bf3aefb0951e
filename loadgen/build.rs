//! Names the commit loadgen is built from (`RINGROOM_BUILD_COMMIT`), so that
//! a result says what measured it, wherever the binary runs: asking git at
//! run time names the checkout it runs in, which may be another.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    if let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) {
        // A tree with changes not committed is not that commit.
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
        let suffix = if dirty { "-dirty" } else { "" };
        println!("cargo:rustc-env=RINGROOM_BUILD_COMMIT={commit}{suffix}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        // A commit moves the branch, not HEAD.
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{branch}");
        }
    }
}
