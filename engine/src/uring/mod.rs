//! The io_uring backend: one ring per shard.
//!
//! It owns the ring, its fixed-file table (connections as direct descriptors,
//! so they use no process fds), its provided-buffer ring, and the buffers of
//! sends in flight, and offers a narrow safe API: arm an accept, execute a
//! core [`Action`], wait, and read completions back as [`Completion`]s. Every
//! buffer the kernel may read or write is owned here until its completion
//! arrives, which is what makes that API sound.

mod bufring;
mod inflight;

use crate::contract::{Action, Event, RecvEnd, GEN_MASK};
use crate::{sys, EngineConfig, RingMode, StartError};

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

use bufring::BufRing;
use bufring::RecvBuf;
use inflight::{InFlight, Op};

/// What a completion meant, before a receive buffer is lent as bytes.
#[derive(Debug)]
enum Completion {
    /// Data in a provided buffer; `more`: the multishot receive goes on.
    Received {
        slot: u32,
        gen: u32,
        buf: RecvBuf,
        more: bool,
    },
    /// Anything else the owner hears of.
    Event(Event<'static>),
    /// Completions of cancels, shutdowns and closes: nothing to do.
    Done,
}

/// What an operation was, packed in its user data with the slot and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Shutdown = 4,
    Cancel = 5,
    Close = 6,
    Wake = 7,
}

fn user_data(kind: Kind, slot: u32, gen: u32) -> u64 {
    (u64::from(kind as u8) << 56) | (u64::from(gen & GEN_MASK) << 32) | u64::from(slot)
}

fn unpack(ud: u64) -> (Option<Kind>, u32, u32) {
    let kind = match (ud >> 56) as u8 {
        1 => Some(Kind::Accept),
        2 => Some(Kind::Recv),
        3 => Some(Kind::Send),
        4 => Some(Kind::Shutdown),
        5 => Some(Kind::Cancel),
        6 => Some(Kind::Close),
        7 => Some(Kind::Wake),
        _ => None,
    };
    (kind, ud as u32, ((ud >> 32) as u32) & GEN_MASK)
}

/// The opcodes the server uses, for the start-up probe.
const REQUIRED_OPCODES: [(u8, &str, &str); 7] = [
    (
        opcode::AcceptMulti::CODE,
        "IORING_OP_ACCEPT",
        "5.5 (multishot: 5.19)",
    ),
    (
        opcode::RecvMulti::CODE,
        "IORING_OP_RECV",
        "5.6 (multishot: 6.0)",
    ),
    (opcode::Send::CODE, "IORING_OP_SEND", "5.6"),
    (
        opcode::Close::CODE,
        "IORING_OP_CLOSE",
        "5.6 (direct descriptors: 5.15)",
    ),
    (
        opcode::AsyncCancel::CODE,
        "IORING_OP_ASYNC_CANCEL",
        "5.5 (by fd: 5.19)",
    ),
    (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN", "5.11"),
    (opcode::Read::CODE, "IORING_OP_READ", "5.6"),
];

/// How long dropping a ring waits for its requests to end once cancelled.
const DROP_CANCEL_LIMIT: Duration = Duration::from_secs(5);

/// One shard's ring and everything the kernel may touch on its behalf.
///
/// Field order matters: the ring is dropped (closed) before the memory it
/// referenced.
pub struct Ring {
    ring: IoUring,
    bufs: BufRing,
    /// Buffers of sends in flight, by slot (one send per connection at a time).
    sends: Vec<Option<Vec<u8>>>,
    /// Receives armed and sends in flight, by slot and generation.
    in_flight: InFlight,
    /// The listening socket of a server ring (`None` for a client ring).
    listener: Option<OwnedFd>,
    wake: OwnedFd,
    /// Slots free for [`Ring::install`] (client rings manage their own
    /// slots; a server ring lets the kernel allocate them on accept).
    free_slots: Vec<u32>,
    slots: u32,
    /// Whether [`Ring::install`] has claimed the table for its own allocation.
    installs: bool,
    /// Where the wake-up eventfd's counter is read to (reading resets it).
    wake_buf: Box<[u8; 8]>,
    cqes: Vec<(u64, i32, u32)>,
    /// Whether a multishot accept is armed.
    accepting: bool,
    /// Whether a read of the wake-up eventfd is armed.
    wake_armed: bool,
    /// Whether [`Ring::stop_accepting`] ran: the listener listens no more.
    stopped: bool,
    batch_wait_us: u32,
}

/// Sets up a small ring with `mode` and checks every feature, so a refusal
/// is known before any shard starts.
pub fn probe(mode: RingMode) -> Result<(), StartError> {
    let cfg = EngineConfig {
        sq_entries: 8,
        slots: 1,
        buffers: 1,
        buffer_size: 64,
        mode,
        batch_wait_us: 0,
    };
    let wake = sys::eventfd().map_err(|e| StartError::failed(format!("eventfd: {e}")))?;
    Ring::new(&cfg, None, wake).map(drop)
}

impl Ring {
    /// Sets up a ring with `cfg`, checks every feature the server needs, and
    /// takes the shard's listening socket and wake-up eventfd.
    pub fn new(
        cfg: &EngineConfig,
        listener: Option<OwnedFd>,
        wake: OwnedFd,
    ) -> Result<Self, StartError> {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cfg.sq_entries * 4);
        match cfg.mode {
            RingMode::Defer => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            RingMode::Coop => {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            RingMode::Plain => {}
        }
        let ring = builder
            .build(cfg.sq_entries)
            .map_err(|e| setup_error(e, cfg.mode))?;
        if !ring.params().is_feature_nodrop() {
            return Err(StartError::refused(
                "io_uring lacks IORING_FEAT_NODROP (Linux 5.5): completions could be lost",
            ));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| {
            StartError::refused(format!(
                "io_uring probe failed: {e} (IORING_REGISTER_PROBE needs Linux 5.6)"
            ))
        })?;
        for (code, name, since) in REQUIRED_OPCODES {
            if !probe.is_supported(code) {
                return Err(StartError::refused(format!(
                    "io_uring does not support {name} (needs Linux {since})"
                )));
            }
        }
        ring.submitter().register_files_sparse(cfg.slots).map_err(|e| {
            let msg = format!(
                "cannot register a fixed-file table of {} slots: {e} (sparse tables need Linux 5.19; \
                 the size is capped by RLIMIT_NOFILE, see tuning/limits.sh)",
                cfg.slots
            );
            // EINVAL: a kernel without sparse tables; anything else is a limit.
            StartError::new(msg, e.raw_os_error() == Some(libc::EINVAL))
        })?;
        let bufs = BufRing::new(&ring, cfg.buffers, cfg.buffer_size, 0).map_err(|e| {
            let msg = format!(
                "cannot register a provided-buffer ring of {} x {} bytes: {e} (needs Linux 5.19)",
                cfg.buffers, cfg.buffer_size
            );
            StartError::new(msg, e.raw_os_error() == Some(libc::EINVAL))
        })?;
        if cfg.batch_wait_us > 0 && !ring.params().is_feature_min_timeout() {
            // Not a refusal: the user asked for an io_uring option by name.
            return Err(StartError::failed(
                "--batch-wait-us needs IORING_FEAT_MIN_TIMEOUT (Linux 6.12); use --batch-wait-us 0",
            ));
        }
        let mut sends = Vec::new();
        sends.resize_with(cfg.slots as usize, || None);
        Ok(Self {
            ring,
            bufs,
            sends,
            in_flight: InFlight::new(cfg.slots),
            listener,
            wake,
            free_slots: Vec::new(),
            slots: cfg.slots,
            installs: false,
            wake_buf: Box::new([0; 8]),
            cqes: Vec::with_capacity(cfg.sq_entries as usize * 4),
            accepting: false,
            wake_armed: false,
            stopped: false,
            batch_wait_us: cfg.batch_wait_us,
        })
    }

    /// Completions waiting to be read now.
    pub fn completions_ready(&mut self) -> usize {
        self.ring.completion().len()
    }

    /// Whether a multishot accept is armed.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Receive buffers handed out and not recycled.
    pub fn buffers_outstanding(&self) -> u32 {
        self.bufs.outstanding()
    }

    /// Moves a socket into the fixed-file table and closes its process fd, so
    /// a client ring holds more connections than `RLIMIT_NOFILE`. The socket
    /// may still be connecting: receives and sends on it wait for the
    /// connection, and fail with its error. Returns the slot, or `None` when
    /// every slot is in use (a slot comes back when its [`Action::Close`]
    /// completes).
    pub fn install(&mut self, socket: OwnedFd) -> io::Result<Option<u32>> {
        assert!(self.listener.is_none(), "install is for client rings");
        if !self.installs {
            self.installs = true;
            self.free_slots = (0..self.slots).rev().collect();
        }
        let Some(slot) = self.free_slots.pop() else {
            return Ok(None);
        };
        match self
            .ring
            .submitter()
            .register_files_update(slot, &[socket.as_raw_fd()])
        {
            Ok(_) => Ok(Some(slot)), // `socket` is dropped: the table holds its own reference
            Err(e) => {
                self.free_slots.push(slot);
                Err(e)
            }
        }
    }

    /// Slots free for [`Ring::install`].
    pub fn free_slots(&self) -> usize {
        if self.installs {
            self.free_slots.len()
        } else {
            self.slots as usize
        }
    }

    /// Arms a multishot accept into auto-allocated direct descriptors.
    pub fn arm_accept(&mut self) {
        let listener = self
            .listener
            .as_ref()
            .expect("arm_accept on a ring without a listener");
        assert!(
            !self.installs,
            "a ring either accepts or installs sockets, not both"
        );
        assert!(!self.stopped, "arm_accept after stop_accepting");
        let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
            // No SOCK_CLOEXEC: direct descriptors are not process fds, and the
            // kernel refuses the flag with them (EINVAL).
            .allocate_file_index(true)
            .build()
            .user_data(user_data(Kind::Accept, 0, 0));
        self.push(entry);
        self.accepting = true;
    }

    /// Stops accepting for good (shutdown): cancels the multishot accept and
    /// stops the listener listening ([`crate::sys::stop_listening`]). Whichever
    /// ends the accept first, it ends as cancelled.
    pub fn stop_accepting(&mut self) {
        if self.accepting {
            let entry =
                opcode::AsyncCancel2::new(CancelBuilder::user_data(user_data(Kind::Accept, 0, 0)))
                    .build()
                    .user_data(user_data(Kind::Cancel, 0, 0));
            self.push(entry);
        }
        if let Some(listener) = &self.listener {
            if let Err(e) = crate::sys::stop_listening(listener) {
                eprintln!("shutdown(listener) failed: {e}; it listens until the process ends");
            }
        }
        self.stopped = true;
    }

    /// Arms a read of the wake-up eventfd: it completes when another thread
    /// writes to it (an inbox went non-empty, or the server is stopping), and
    /// resets its counter. Re-arm after each [`Event::Woken`].
    pub fn arm_wake(&mut self) {
        let entry = opcode::Read::new(Fd(self.wake.as_raw_fd()), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(user_data(Kind::Wake, 0, 0));
        self.push(entry);
        self.wake_armed = true;
    }

    /// Turns a core action into a submission.
    pub fn execute(&mut self, action: Action) {
        // Noted by slot and generation: what a drop of the ring must cancel.
        match action {
            Action::ArmRecv { slot, gen } => self.in_flight.recv_armed(slot, gen),
            Action::Send { slot, gen, .. } => self.in_flight.send_started(slot, gen),
            _ => {}
        }
        let entry = match action {
            Action::ArmRecv { slot, gen } => opcode::RecvMulti::new(Fixed(slot), self.bufs.bgid())
                .build()
                .user_data(user_data(Kind::Recv, slot, gen)),
            Action::Send { slot, gen, buf } => {
                let cell = &mut self.sends[slot as usize];
                assert!(cell.is_none(), "second send in flight on slot {slot}");
                let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
                // The Vec's heap block stays put while the Vec sits in `sends`.
                *cell = Some(buf);
                opcode::Send::new(Fixed(slot), ptr, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .build()
                    .user_data(user_data(Kind::Send, slot, gen))
            }
            Action::ShutdownWrite { slot } => opcode::Shutdown::new(Fixed(slot), libc::SHUT_WR)
                .build()
                .user_data(user_data(Kind::Shutdown, slot, 0)),
            Action::Cancel {
                slot,
                gen,
                recv,
                send,
            } => {
                // By user data, a hash lookup: cancelling by file scans every
                // armed request, which made a 7,000-connection shutdown quadratic.
                if recv && send {
                    self.cancel(user_data(Kind::Recv, slot, gen));
                }
                let target = if send { Kind::Send } else { Kind::Recv };
                opcode::AsyncCancel::new(user_data(target, slot, gen))
                    .build()
                    .user_data(user_data(Kind::Cancel, slot, 0))
            }
            Action::Close { slot } => {
                opcode::Close::new(Fixed(slot))
                    .build()
                    .user_data(user_data(Kind::Close, slot, 0))
            }
        };
        self.push(entry);
    }

    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(Kind::Cancel, 0, 0));
        self.push(entry);
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every pointer an entry carries stays valid until its
            // completion: send buffers live in `self.sends`, the buffer ring in
            // `self.bufs`, the eventfd's read buffer in `self.wake_buf` (boxed,
            // so it does not move with `self`), and the listener and eventfd in
            // `self`; other entries carry no pointers.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The queue is full: hand what it holds to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    panic!("io_uring submit failed: {e}");
                }
            }
        }
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let mut args = SubmitArgs::new().timespec(&ts);
        // With a batch wait: return once `BATCH` completions are in, or
        // `batch_wait_us` after the first one, or at the timeout.
        const BATCH: usize = 256;
        let want = if self.batch_wait_us > 0 {
            args = args.min_wait_usec(self.batch_wait_us);
            BATCH
        } else {
            1
        };
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Hands the completions that are ready to `each`, as [`Event`]s, until
    /// the receives handed out carry `budget` bytes: received bytes are lent
    /// to `each` and the buffer goes back to the kernel right after; a
    /// multishot receive that stopped after its data is reported as
    /// `RecvEnded(Stopped)` after it; recycled buffers are published before
    /// this returns, so a receive re-armed after ENOBUFS finds them. The
    /// completions beyond the budget stay in the queue for the next call, so
    /// the caller can write what this input produced before it reads more.
    /// Returns how many completions were handed out, and whether the queue
    /// was left empty (every completion of what was submitted has then been
    /// seen).
    pub fn drain_completions_up_to(
        &mut self,
        budget: usize,
        mut each: impl FnMut(Event<'_>),
    ) -> (usize, bool) {
        let (n, dry) = self.reap(budget);
        for i in 0..n {
            match self.completion(i) {
                Completion::Event(event) => each(event),
                Completion::Received {
                    slot,
                    gen,
                    buf,
                    more,
                } => {
                    each(Event::Received {
                        slot,
                        gen,
                        data: self.bufs.data(&buf),
                    });
                    self.bufs.recycle(buf);
                    if !more {
                        each(Event::RecvEnded {
                            slot,
                            gen,
                            end: RecvEnd::Stopped,
                        });
                    }
                }
                Completion::Done => {}
            }
        }
        self.bufs.commit();
        (n, dry)
    }

    /// Copies the completions that are ready out of the queue, stopping once
    /// receives of `budget` bytes are taken; returns how many, and whether
    /// the queue is now empty.
    fn reap(&mut self, budget: usize) -> (usize, bool) {
        self.cqes.clear();
        let mut cq = self.ring.completion();
        cq.sync();
        let mut received = 0usize;
        while received < budget {
            let Some(cqe) = cq.next() else { break };
            if unpack(cqe.user_data()).0 == Some(Kind::Recv) && cqe.result() > 0 {
                received += cqe.result() as usize;
            }
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        let dry = cq.is_empty();
        (self.cqes.len(), dry)
    }

    /// The meaning of completion `i` of the last [`Ring::reap`].
    fn completion(&mut self, i: usize) -> Completion {
        let (ud, res, flags) = self.cqes[i];
        let more = cqueue::more(flags);
        let (kind, slot, gen) = unpack(ud);
        match kind {
            Some(Kind::Accept) => {
                if !more {
                    self.accepting = false;
                }
                Completion::Event(if res >= 0 {
                    Event::Accepted {
                        slot: res as u32,
                        more,
                    }
                } else if self.stopped {
                    // The listener shut down before the cancel reached it
                    // (EINVAL): the same end, asked for.
                    Event::AcceptEnded {
                        errno: libc::ECANCELED,
                    }
                } else {
                    Event::AcceptEnded { errno: -res }
                })
            }
            Some(Kind::Recv) => {
                if !more {
                    self.in_flight.recv_ended(slot, gen);
                }
                if res > 0 {
                    let bid = cqueue::buffer_select(flags)
                        .expect("a multishot receive with data names its buffer");
                    let buf = self.bufs.take(bid, res as u32);
                    Completion::Received {
                        slot,
                        gen,
                        buf,
                        more,
                    }
                } else {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        let buf = self.bufs.take(bid, 0);
                        self.bufs.recycle(buf);
                    }
                    let end = match -res {
                        0 => RecvEnd::Eof,
                        libc::ENOBUFS => RecvEnd::NoBuffers,
                        libc::ECANCELED => RecvEnd::Cancelled,
                        e => RecvEnd::Error(e),
                    };
                    Completion::Event(Event::RecvEnded { slot, gen, end })
                }
            }
            Some(Kind::Send) => {
                let buf = self.sends[slot as usize]
                    .take()
                    .expect("a send completion has its buffer");
                self.in_flight.send_ended();
                Completion::Event(Event::Sent {
                    slot,
                    gen,
                    buf,
                    result: res,
                })
            }
            Some(Kind::Wake) => {
                self.wake_armed = false;
                Completion::Event(Event::Woken)
            }
            Some(Kind::Close) => {
                // A slot this engine handed out is free again once closed.
                if self.installs {
                    self.free_slots.push(slot);
                }
                Completion::Done
            }
            Some(Kind::Shutdown | Kind::Cancel) | None => Completion::Done,
        }
    }
}

impl Ring {
    /// Requests that may still touch memory this ring owns: receives (the
    /// buffer ring), sends (their buffers), the eventfd read, the accept.
    fn requests_in_flight(&self) -> u32 {
        self.in_flight.count() + u32::from(self.wake_armed) + u32::from(self.accepting)
    }

    /// Cancels every request still in flight, each by its user data, and
    /// reaps until all have ended or `limit` has passed; returns whether all
    /// ended. Not `IORING_ASYNC_CANCEL_ANY | ALL`: the kernel serves that by
    /// finding one request at a time from the start of its cancel table, and
    /// a cancelled receive stays in the table until its completion runs, so
    /// it is quadratic in the receives armed: 20,000 of them made each of
    /// loadgen's 51 rings take minutes to drop at the end of a C1M run.
    fn cancel_in_flight(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let sends = &self.sends;
        let mut targets: Vec<u64> = (self.in_flight.each(|slot| sends[slot].is_some()))
            .into_iter()
            .map(|(op, slot, gen)| match op {
                Op::Recv => user_data(Kind::Recv, slot, gen),
                Op::Send => user_data(Kind::Send, slot, gen),
            })
            .collect();
        if self.accepting {
            targets.push(user_data(Kind::Accept, 0, 0));
        }
        if self.wake_armed {
            targets.push(user_data(Kind::Wake, 0, 0));
        }
        let mut next = 0;
        while self.requests_in_flight() > 0 && Instant::now() < deadline {
            // As many cancels as the queue takes, then their completions out
            // (the completion queue must not overflow with them).
            while next < targets.len() && !self.ring.submission().is_full() {
                self.cancel(targets[next]);
                next += 1;
            }
            let _ = self.submit_and_wait(Duration::from_millis(10));
            let (n, _) = self.reap(usize::MAX);
            for i in 0..n {
                if let Completion::Received { buf, .. } = self.completion(i) {
                    self.bufs.recycle(buf);
                }
            }
        }
        self.requests_in_flight() == 0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Cancel whatever is still in flight, and unregister the buffer ring,
        // so the kernel holds no reference to memory freed next.
        let ended = self.cancel_in_flight(DROP_CANCEL_LIMIT);
        self.bufs.unregister(&self.ring);
        // What did not end in time is leaked rather than freed under the
        // kernel: send buffers, and the eventfd's read buffer.
        for buf in self.sends.iter_mut().filter_map(Option::take) {
            std::mem::forget(buf);
        }
        if !ended && self.wake_armed {
            Box::leak(std::mem::replace(&mut self.wake_buf, Box::new([0; 8])));
        }
    }
}

fn setup_error(e: io::Error, mode: RingMode) -> StartError {
    // Refusals (the fallback to epoll may follow) versus limits (it may not).
    let refused = matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
        || (e.raw_os_error() == Some(libc::EINVAL) && mode == RingMode::Defer);
    let msg = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring_setup is not available: the kernel lacks CONFIG_IO_URING, \
                               or a seccomp filter (a container runtime's default profile) blocks it"
            .to_string(),
        Some(libc::EPERM) => format!(
            "io_uring_setup was refused (EPERM): a seccomp filter blocks it (Docker's and \
             containerd's default profiles do), io_uring is disabled by sysctl \
             (kernel.io_uring_disabled = {}), or this user is not in kernel.io_uring_group",
            sys::read_sysctl("kernel/io_uring_disabled").unwrap_or_else(|| "?".into())
        ),
        Some(libc::EINVAL) if mode == RingMode::Defer => {
            "io_uring_setup refused IORING_SETUP_DEFER_TASKRUN | SINGLE_ISSUER (needs Linux 6.1); \
             try --ring-mode coop"
                .to_string()
        }
        Some(libc::ENOMEM) => format!(
            "io_uring_setup failed: {e} (locked memory limit; raise `ulimit -l` or use a kernel >= 5.12)"
        ),
        _ => format!("io_uring_setup failed: {e}"),
    };
    StartError::new(msg, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_from_limits() {
        let err = |errno, mode| setup_error(io::Error::from_raw_os_error(errno), mode);
        // A seccomp profile, a disabled sysctl, a kernel without io_uring or
        // without DEFER_TASKRUN: auto may fall back.
        assert!(err(libc::EPERM, RingMode::Defer).refused);
        assert!(err(libc::ENOSYS, RingMode::Defer).refused);
        assert!(err(libc::EINVAL, RingMode::Defer).refused);
        // Locked memory, a bad size: an error to fix, never a fallback.
        assert!(!err(libc::ENOMEM, RingMode::Defer).refused);
        assert!(!err(libc::EINVAL, RingMode::Coop).refused);
        assert!(err(libc::EPERM, RingMode::Defer)
            .message
            .contains("seccomp"));
    }

    /// Drives `ring` for `wait`, handing each event's send result to `sent`.
    fn turn(ring: &mut Ring, wait: Duration, mut sent: impl FnMut(i32)) {
        ring.submit_and_wait(wait).unwrap();
        ring.drain_completions_up_to(usize::MAX, |e| {
            if let Event::Sent { result, .. } = e {
                sent(result);
            }
        });
    }

    #[test]
    fn dropping_cancels_every_request_by_its_user_data() {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        const CONNS: u32 = 300;
        let cfg = EngineConfig {
            // Fewer queue entries than cancels: they go in batches.
            sq_entries: 64,
            slots: CONNS,
            buffers: 16,
            buffer_size: 1024,
            mode: RingMode::Defer,
            batch_wait_us: 0,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ring = Ring::new(&cfg, None, sys::eventfd().unwrap()).unwrap();
        let mut peers = Vec::new();
        let mut conns = Vec::new();
        for gen in 0..CONNS {
            let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let slot = ring.install(OwnedFd::from(socket)).unwrap().unwrap();
            peers.push(listener.accept().unwrap().0);
            ring.execute(Action::ArmRecv { slot, gen });
            conns.push((slot, gen));
        }
        ring.arm_wake();
        // Sends to a peer that does not read, until one waits on the full
        // socket (a send names its connection's generation, as the receive).
        let (slot, gen) = conns[CONNS as usize / 2];
        let mut waiting = false;
        for _ in 0..64 {
            ring.execute(Action::Send {
                slot,
                gen,
                buf: vec![7; 16 << 20],
            });
            waiting = true;
            let deadline = Instant::now() + Duration::from_millis(300);
            while waiting && Instant::now() < deadline {
                turn(&mut ring, Duration::from_millis(20), |_| waiting = false);
            }
            if waiting {
                break;
            }
        }
        assert!(waiting, "a send waits on the full socket");
        assert_eq!(
            ring.requests_in_flight(),
            CONNS + 2,
            "receives, the send, the wake"
        );

        assert!(ring.cancel_in_flight(Duration::from_secs(5)));
        assert_eq!(ring.requests_in_flight(), 0);
        assert!(
            ring.sends.iter().all(Option::is_none),
            "the send's buffer came back"
        );
        drop(ring);
        // Dropped, the ring's table closes every socket: each peer reads EOF.
        for mut peer in peers {
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            peer.read_to_end(&mut Vec::new()).unwrap();
        }
    }

    #[test]
    fn user_data_round_trips() {
        let ud = user_data(Kind::Send, 19_999, 0xAB_CDEF);
        assert_eq!(unpack(ud), (Some(Kind::Send), 19_999, 0xAB_CDEF));
        assert_eq!(unpack(0).0, None);
        let ud = user_data(Kind::Recv, u32::MAX, 0x1FF_FFFF);
        assert_eq!(unpack(ud), (Some(Kind::Recv), u32::MAX, GEN_MASK));
    }
}
