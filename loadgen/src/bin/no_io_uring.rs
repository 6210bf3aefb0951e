//! `no-io-uring [--enosys] COMMAND [ARGS...]`: runs COMMAND where io_uring is
//! refused, as in a container: a seccomp filter makes `io_uring_setup`,
//! `io_uring_enter` and `io_uring_register` fail with EPERM (what Docker's
//! and containerd's default profiles return) or, with `--enosys`, ENOSYS (a
//! kernel without io_uring, or a profile that hides it). Every other system
//! call is allowed. The filter is inherited by COMMAND's children.
//!
//! For trying ringroom's `--engine auto` fallback, and its tests.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let errno = if args.first().map(String::as_str) == Some("--enosys") {
        args.remove(0);
        libc::ENOSYS
    } else {
        libc::EPERM
    };
    if args.is_empty() || args[0] == "--help" {
        eprintln!("usage: no-io-uring [--enosys] COMMAND [ARGS...]");
        return ExitCode::from(2);
    }
    if let Err(e) = deny_io_uring(errno) {
        eprintln!("no-io-uring: cannot install the seccomp filter: {e}");
        return ExitCode::from(2);
    }
    // exec replaces this process; it returns only on failure.
    let e = Command::new(&args[0]).args(&args[1..]).exec();
    eprintln!("no-io-uring: cannot run {}: {e}", args[0]);
    ExitCode::from(127)
}

/// Installs the filter on this process (and so on what it executes).
fn deny_io_uring(errno: i32) -> Result<(), String> {
    let rules = [
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
    ]
    .into_iter()
    // No conditions: every call of these is refused.
    .map(|nr| (nr, vec![]))
    .collect::<BTreeMap<_, _>>();
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("{e:?}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    // Sets PR_SET_NO_NEW_PRIVS first, so no privilege is needed.
    seccompiler::apply_filter(&program).map_err(|e| e.to_string())
}
