//! The epoll backend: for where io_uring is refused (containers' seccomp
//! profiles, `kernel.io_uring_disabled`), with the same contract.
//!
//! Sockets are non-blocking and registered once, edge-triggered, for input
//! and output. What io_uring does in the kernel is done here at the same
//! points of the driver's loop, so the driver cannot tell the difference:
//!
//! * a multishot receive is an "armed" flag: readable connections with one
//!   wait in a queue, and [`Poller::drain_completions_up_to`] reads them in
//!   turn into one shared buffer, so an idle connection holds no receive
//!   buffer, as with the provided-buffer ring;
//! * a send is tried at once; a socket that takes nothing keeps it until
//!   `EPOLLOUT`, and a socket that takes part completes it short, as an
//!   io_uring send on a stream socket does;
//! * the accept is the listener's readiness, an accept4 per connection;
//! * the wake-up is the eventfd's readiness, read (reset) only while armed.
//!
//! Connections are real fds: this backend holds at most `RLIMIT_NOFILE` of
//! them per process, which the caller plans for.
//!
//! Nothing here needs `unsafe`: nix wraps each call.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, MsgFlags, SockFlag};

use crate::contract::{Action, Event, RecvEnd};
use crate::{EngineConfig, StartError};

/// epoll data of the listener and of the wake-up eventfd; connections use
/// their slot, which is below both.
const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;

/// Events one `epoll_wait` returns; the rest wait for the next turn.
const EVENTS: usize = 1024;

/// Accepts one drain makes, so that a connection storm does not starve the
/// established connections' input; the rest wait for the next turn.
const ACCEPTS_PER_DRAIN: usize = 256;

/// The shared receive buffer's least size: one read of a busy connection
/// takes up to this much.
const MIN_RECV_BUFFER: usize = 64 << 10;

struct Conn {
    fd: OwnedFd,
    /// Generation of the armed receive, if one is armed.
    recv: Option<u32>,
    /// The socket may hold input (no read since its last edge saw EAGAIN).
    readable: bool,
    /// The peer closed or the socket failed (EPOLLRDHUP, HUP, ERR): read
    /// until the end, since no edge will come after the data.
    ended: bool,
    /// The slot is in [`Poller::ready`].
    queued: bool,
    /// The send waiting for `EPOLLOUT`: its generation and bytes.
    send: Option<(u32, Vec<u8>)>,
}

/// One shard's epoll set and its connections.
pub struct Poller {
    epoll: Epoll,
    conns: Vec<Option<Conn>>,
    free_slots: Vec<u32>,
    /// Slots with an armed receive whose socket may hold input, in turn.
    ready: VecDeque<u32>,
    /// Completions made before the driver asked for them (never a
    /// receive: those are read in the drain, into the shared buffer).
    done: VecDeque<Event<'static>>,
    rx: Vec<u8>,
    events: Vec<EpollEvent>,
    listener: Option<OwnedFd>,
    accepting: bool,
    /// The listener may have connections waiting (edge seen, no EAGAIN since).
    listener_ready: bool,
    wake: OwnedFd,
    wake_armed: bool,
    /// Whether [`Poller::install`] manages the slots (a client) rather than
    /// accepts (a server).
    installs: bool,
}

impl Poller {
    /// An epoll set of `cfg.slots` connections, with the shard's listener (a
    /// server) or none (a client, which installs its sockets).
    pub fn new(
        cfg: &EngineConfig,
        listener: Option<OwnedFd>,
        wake: OwnedFd,
    ) -> Result<Self, StartError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| StartError::failed(format!("epoll_create1 failed: {e}")))?;
        // Non-blocking, or an accept after the backlog emptied would block.
        let listener = listener.map(nonblocking).transpose().map_err(|e| {
            StartError::failed(format!("cannot make the listener non-blocking: {e}"))
        })?;
        let et = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        epoll
            .add(&wake, EpollEvent::new(et, WAKE))
            .map_err(|e| StartError::failed(format!("epoll_ctl(eventfd) failed: {e}")))?;
        if let Some(l) = &listener {
            epoll
                .add(l, EpollEvent::new(et, LISTENER))
                .map_err(|e| StartError::failed(format!("epoll_ctl(listener) failed: {e}")))?;
        }
        let mut conns = Vec::new();
        conns.resize_with(cfg.slots as usize, || None);
        Ok(Self {
            epoll,
            conns,
            free_slots: (0..cfg.slots).rev().collect(),
            ready: VecDeque::new(),
            done: VecDeque::new(),
            rx: vec![0; (cfg.buffer_size as usize).max(MIN_RECV_BUFFER)],
            events: vec![EpollEvent::empty(); EVENTS],
            listener,
            accepting: false,
            listener_ready: false,
            wake,
            wake_armed: false,
            installs: false,
        })
    }

    /// Completions the next drain hands out, at least: those made already,
    /// plus a read for each readable connection and the waiting accepts.
    pub fn completions_ready(&mut self) -> usize {
        self.done.len() + self.ready.len() + usize::from(self.accepting && self.listener_ready)
    }

    /// Whether the accept is armed.
    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    /// Takes a (possibly still connecting) non-blocking socket into a slot.
    /// Returns `None` when every slot is in use.
    pub fn install(&mut self, socket: OwnedFd) -> io::Result<Option<u32>> {
        assert!(self.listener.is_none(), "install is for client engines");
        self.installs = true;
        let Some(slot) = self.free_slots.pop() else {
            return Ok(None);
        };
        let socket = nonblocking(socket).inspect_err(|_| self.free_slots.push(slot))?;
        if let Err(e) = self.register(slot, socket) {
            self.free_slots.push(slot);
            return Err(e.into());
        }
        Ok(Some(slot))
    }

    /// Slots free for [`Poller::install`].
    pub fn free_slots(&self) -> usize {
        self.free_slots.len()
    }

    fn register(&mut self, slot: u32, fd: OwnedFd) -> nix::Result<()> {
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        self.epoll
            .add(&fd, EpollEvent::new(flags, u64::from(slot)))?;
        self.conns[slot as usize] = Some(Conn {
            fd,
            recv: None,
            // Input may have arrived before registration: look once.
            readable: true,
            ended: false,
            queued: false,
            send: None,
        });
        Ok(())
    }

    /// Starts accepting; the listener's backlog is looked at in the next drain.
    pub fn arm_accept(&mut self) {
        assert!(self.listener.is_some(), "arm_accept without a listener");
        assert!(
            !self.installs,
            "an engine either accepts or installs sockets, not both"
        );
        self.accepting = true;
        self.listener_ready = true;
    }

    /// Stops accepting for good (shutdown), as the io_uring backend does: the
    /// accept ends as cancelled and the listener stops listening
    /// ([`crate::sys::stop_listening`]).
    pub fn stop_accepting(&mut self) {
        if self.accepting {
            self.accepting = false;
            self.done.push_back(Event::AcceptEnded {
                errno: libc::ECANCELED,
            });
        }
        if let Some(listener) = &self.listener {
            if let Err(e) = crate::sys::stop_listening(listener) {
                eprintln!("shutdown(listener) failed: {e}; it listens until the process ends");
            }
        }
    }

    /// Arms the wake-up: the next drain reports [`Event::Woken`] once the
    /// eventfd has been written to, and resets it.
    pub fn arm_wake(&mut self) {
        self.wake_armed = true;
        // A write since the last reset has already made its edge: look now.
        self.read_wake();
    }

    fn read_wake(&mut self) {
        let mut counter = [0u8; 8];
        match nix::unistd::read(&self.wake, &mut counter) {
            Ok(_) => {
                self.wake_armed = false;
                self.done.push_back(Event::Woken);
            }
            Err(Errno::EAGAIN) => {}
            Err(e) => panic!("read(eventfd) failed: {e}"),
        }
    }

    /// Carries out a driver action at once (a send as far as the socket takes it).
    pub fn execute(&mut self, action: Action) {
        match action {
            Action::ArmRecv { slot, gen } => {
                let conn = self.conns[slot as usize]
                    .as_mut()
                    .expect("ArmRecv on an empty slot");
                conn.recv = Some(gen);
                if conn.readable && !conn.queued {
                    conn.queued = true;
                    self.ready.push_back(slot);
                }
            }
            Action::Send { slot, gen, buf } => {
                let conn = self.conns[slot as usize]
                    .as_mut()
                    .expect("Send on an empty slot");
                assert!(conn.send.is_none(), "second send in flight on slot {slot}");
                conn.send = Some((gen, buf));
                self.try_send(slot);
            }
            Action::ShutdownWrite { slot } => {
                if let Some(conn) = &self.conns[slot as usize] {
                    // ENOTCONN (the peer reset first) leaves nothing to shut.
                    let _ = socket::shutdown(conn.fd.as_raw_fd(), socket::Shutdown::Write);
                }
            }
            Action::Cancel {
                slot,
                gen,
                recv,
                send,
            } => {
                let Some(conn) = self.conns[slot as usize].as_mut() else {
                    return;
                };
                if recv && conn.recv == Some(gen) {
                    conn.recv = None;
                    self.done.push_back(Event::RecvEnded {
                        slot,
                        gen,
                        end: RecvEnd::Cancelled,
                    });
                }
                if send && conn.send.as_ref().is_some_and(|(g, _)| *g == gen) {
                    let (gen, buf) = conn.send.take().expect("checked");
                    self.done.push_back(Event::Sent {
                        slot,
                        gen,
                        buf,
                        result: -libc::ECANCELED,
                    });
                }
            }
            Action::Close { slot } => {
                // Closing the fd takes it out of the epoll set.
                if self.conns[slot as usize].take().is_some() {
                    self.free_slots.push(slot);
                }
            }
        }
    }

    /// Sends what the slot's pending send holds, as far as the socket takes
    /// it; completes it unless the socket took nothing.
    fn try_send(&mut self, slot: u32) {
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return;
        };
        let Some((gen, buf)) = &conn.send else {
            return;
        };
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        let result = loop {
            match socket::send(conn.fd.as_raw_fd(), buf, flags) {
                Ok(n) => break n as i32,
                Err(Errno::EINTR) => continue,
                // Full: EPOLLOUT brings it back here.
                Err(Errno::EAGAIN) => return,
                Err(e) => break -(e as i32),
            }
        };
        let gen = *gen;
        let (_, buf) = conn.send.take().expect("checked");
        self.done.push_back(Event::Sent {
            slot,
            gen,
            buf,
            result,
        });
    }

    /// Waits up to `timeout` for readiness (not at all if completions are
    /// waiting), and turns what it finds into completions.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let busy = !self.done.is_empty()
            || !self.ready.is_empty()
            || (self.accepting && self.listener_ready);
        let timeout = if busy {
            EpollTimeout::ZERO
        } else {
            // Rounded up: a shorter wait than asked would spin the caller.
            let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128);
            EpollTimeout::try_from(ms as i32).expect("bounded above")
        };
        let n = match self.epoll.wait(&mut self.events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        for i in 0..n {
            let (flags, data) = (self.events[i].events(), self.events[i].data());
            match data {
                LISTENER => self.listener_ready = true,
                WAKE => {
                    if self.wake_armed {
                        self.read_wake();
                    }
                }
                slot => self.on_ready(slot as u32, flags),
            }
        }
        Ok(())
    }

    fn on_ready(&mut self, slot: u32, flags: EpollFlags) {
        let Some(conn) = self.conns[slot as usize].as_mut() else {
            return;
        };
        let failed = EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP;
        if flags.intersects(EpollFlags::EPOLLRDHUP | failed) {
            conn.ended = true;
        }
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | failed) {
            conn.readable = true;
            if conn.recv.is_some() && !conn.queued {
                conn.queued = true;
                self.ready.push_back(slot);
            }
        }
        if flags.intersects(EpollFlags::EPOLLOUT | failed) && conn.send.is_some() {
            self.try_send(slot);
        }
    }

    /// Hands out the completions made so far, the waiting accepts, and reads
    /// of readable connections in turn until `budget` bytes are read.
    /// Returns how many events, and whether nothing is left to hand out.
    pub fn drain_completions_up_to(
        &mut self,
        budget: usize,
        mut each: impl FnMut(Event<'_>),
    ) -> (usize, bool) {
        let mut n = 0;
        while let Some(done) = self.done.pop_front() {
            n += 1;
            each(done);
        }
        n += self.accept_waiting(&mut each);
        let mut received = 0usize;
        while received < budget {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            let Some(conn) = self.conns[slot as usize].as_mut() else {
                continue;
            };
            conn.queued = false;
            let Some(gen) = conn.recv else {
                continue; // cancelled since it was queued
            };
            let got = loop {
                match socket::recv(conn.fd.as_raw_fd(), &mut self.rx, MsgFlags::empty()) {
                    Err(Errno::EINTR) => continue,
                    other => break other,
                }
            };
            match got {
                Ok(0) => {
                    conn.recv = None;
                    n += 1;
                    each(Event::RecvEnded {
                        slot,
                        gen,
                        end: RecvEnd::Eof,
                    });
                }
                Ok(len) => {
                    received += len;
                    // A full buffer may have left more behind; a short read
                    // emptied the socket, and new input brings a new edge,
                    // but the end that came with this input brings none.
                    if len == self.rx.len() || conn.ended {
                        conn.queued = true;
                        self.ready.push_back(slot);
                    } else {
                        conn.readable = false;
                    }
                    n += 1;
                    each(Event::Received {
                        slot,
                        gen,
                        data: &self.rx[..len],
                    });
                }
                Err(Errno::EAGAIN) => conn.readable = false,
                Err(e) => {
                    conn.recv = None;
                    n += 1;
                    each(Event::RecvEnded {
                        slot,
                        gen,
                        end: RecvEnd::Error(e as i32),
                    });
                }
            }
        }
        let dry = self.done.is_empty()
            && self.ready.is_empty()
            && !(self.accepting && self.listener_ready);
        (n, dry)
    }

    /// Accepts what the listener holds, up to [`ACCEPTS_PER_DRAIN`]; returns
    /// how many events that made.
    fn accept_waiting(&mut self, each: &mut impl FnMut(Event<'_>)) -> usize {
        let mut n = 0;
        while self.accepting && self.listener_ready && n < ACCEPTS_PER_DRAIN {
            let Some(&slot) = self.free_slots.last() else {
                // As a full fixed-file table ends a multishot accept.
                self.accepting = false;
                each(Event::AcceptEnded {
                    errno: libc::ENFILE,
                });
                return n + 1;
            };
            let listener = self.listener.as_ref().expect("accepting");
            let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
            match socket::accept4(listener.as_fd(), flags) {
                Ok(fd) => {
                    self.free_slots.pop();
                    if let Err(e) = self.register(slot, fd) {
                        // ENOMEM, or ENOSPC at fs.epoll.max_user_watches.
                        self.free_slots.push(slot);
                        self.accepting = false;
                        each(Event::AcceptEnded { errno: e as i32 });
                        return n + 1;
                    }
                    n += 1;
                    each(Event::Accepted { slot, more: true });
                }
                Err(Errno::EAGAIN) => self.listener_ready = false,
                // The connection went away before we took it: next.
                Err(Errno::ECONNABORTED | Errno::EINTR | Errno::EPROTO) => {}
                // EMFILE / ENFILE (the fd limit), ENOBUFS, ENOMEM: stop
                // until the driver re-arms, as the kernel ends a multishot
                // accept; the backlog waits meanwhile.
                Err(e) => {
                    self.accepting = false;
                    each(Event::AcceptEnded { errno: e as i32 });
                    return n + 1;
                }
            }
        }
        n
    }
}

/// `fd` with O_NONBLOCK set (FIONBIO works on any socket; std's wrapper is
/// the safe way to reach it).
fn nonblocking(fd: OwnedFd) -> io::Result<OwnedFd> {
    let socket = std::net::TcpStream::from(fd);
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
