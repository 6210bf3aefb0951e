//! Small system helpers that need a raw syscall.

use nix::sys::socket::Shutdown;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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

/// Stops a listening socket listening, while its descriptor stays open (an
/// io_uring accept or the ring itself may still hold it): `shutdown(SHUT_RD)`
/// on a listener makes the kernel reset the connections waiting in its
/// backlog, refuse new SYNs at once, and take it out of the port's listeners,
/// so clients reconnect elsewhere (or to a new server on the same address)
/// instead of completing handshakes with a queue nobody accepts from. The
/// socket stays bound, which `SO_REUSEPORT` lets a new server share.
/// ENOTCONN (not listening any more) is no error.
pub fn stop_listening(listener: &impl AsFd) -> io::Result<()> {
    match nix::sys::socket::shutdown(listener.as_fd().as_raw_fd(), Shutdown::Read) {
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` on a socket about to be bound to a source
/// address with port 0: the port is then chosen at connect time, per 4-tuple,
/// so each (source, target) pair has the whole ephemeral range.
pub fn set_bind_address_no_port(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, a pointer to a c_int that outlives the call, and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets SIGPIPE end the process quietly, as it does every Unix filter: a
/// command whose output goes to `| head` then stops when the reader has had
/// enough, instead of failing on EPIPE. Rust's runtime ignores SIGPIPE; call
/// this only in a process that writes to no socket with plain `write` (the
/// engine's sends carry MSG_NOSIGNAL, so they never raise it).
pub fn restore_default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler (no code runs on
    // delivery) and touches no memory of ours; its result, the previous
    // disposition, is not needed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
