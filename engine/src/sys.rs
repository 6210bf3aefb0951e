//! Small system helpers that need a raw syscall.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec eventfd, used to wake a shard's ring.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A value under /proc/sys, trimmed (`path` like `kernel/io_uring_disabled`).
pub fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = read_sysctl("kernel/osrelease")?;
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_version_is_read() {
        let (major, _) = super::kernel_version().expect("/proc/sys/kernel/osrelease");
        assert!(major >= 3);
    }
}
