//! The I/O engines of ringroom, and the only crate with `unsafe`.
//!
//! A driver (the server's shard core, the loadgen's client core) speaks to an
//! engine in the terms of [`contract`]: it asks for [`Action`]s and reads
//! [`Event`]s back. Two backends implement it, one file each behind
//! [`Engine`]:
//!
//! * `uring`: io_uring, with connections as direct descriptors (no process
//!   fds), multishot accept and receive into a provided-buffer ring;
//! * `epoll`: edge-triggered epoll with non-blocking sockets, for where
//!   io_uring is refused (container seccomp profiles, hardened kernels).
//!
//! [`resolve`] picks one for `--engine auto|uring|epoll`.

pub mod contract;
mod epoll;
pub mod sys;
mod uring;

pub use contract::{next_gen, Action, Event, RecvEnd, GEN_MASK};

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// How the ring runs its deferred work: the choice `--ring-mode` exposes so
/// each can be measured (io_uring only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN`: completions are processed only when the
    /// shard asks, in its own thread, in batches (Linux 6.1).
    Defer,
    /// `COOP_TASKRUN | TASKRUN_FLAG`: no inter-processor interrupts to run
    /// completions (Linux 5.19).
    Coop,
    /// No setup flags.
    Plain,
}

impl std::str::FromStr for RingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "defer" => Ok(Self::Defer),
            "coop" => Ok(Self::Coop),
            "plain" => Ok(Self::Plain),
            _ => Err(format!("unknown ring mode {s:?} (defer, coop or plain)")),
        }
    }
}

/// The sizes of one shard's engine.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Submission queue entries (the completion queue is 4 times larger; io_uring).
    pub sq_entries: u32,
    /// Connection slots: the most connections this engine holds.
    pub slots: u32,
    /// Receive buffers (a power of two, at most 32,768; io_uring).
    pub buffers: u16,
    /// Size of each receive buffer (epoll: of its one shared buffer, at
    /// least 64 KiB).
    pub buffer_size: u32,
    /// Deferred-work mode (io_uring).
    pub mode: RingMode,
    /// Microseconds to wait for more completions once one is ready, so that
    /// one `io_uring_enter` serves a batch (0: return at the first; needs
    /// IORING_FEAT_MIN_TIMEOUT, Linux 6.12; io_uring).
    pub batch_wait_us: u32,
}

impl EngineConfig {
    /// Receive buffers for each of `rings` rings of one process: 1024 for a
    /// few, fewer for many, about 4,096 in all and at least 128 each. The
    /// fd limit makes a C1M run here use ~50 rings on each side; 1024 each
    /// would be 200-250 MB of buffers the kernel fills. A ring short of
    /// buffers ends its receives with ENOBUFS and they are re-armed: nothing
    /// is lost.
    pub fn buffers_for(rings: usize) -> u16 {
        (4096 / rings.max(1)).next_power_of_two().clamp(128, 1024) as u16
    }
}

/// A start-up failure, with a message that names what is missing.
#[derive(Debug)]
pub struct StartError {
    /// What failed, and what would fix it.
    pub message: String,
    /// io_uring is refused here (blocked, disabled, or lacking a feature),
    /// as opposed to a limit being hit: only a refusal lets `auto` fall back.
    pub refused: bool,
}

impl StartError {
    fn new(message: impl Into<String>, refused: bool) -> Self {
        Self {
            message: message.into(),
            refused,
        }
    }
    fn refused(message: impl Into<String>) -> Self {
        Self::new(message, true)
    }
    /// A failure that is not a refusal of io_uring.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(message, false)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Which backend to run: `--engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring, or epoll where io_uring is refused.
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll.
    Epoll,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "uring" | "io_uring" => Ok(Self::Uring),
            "epoll" => Ok(Self::Epoll),
            _ => Err(format!("unknown engine {s:?} (auto, uring or epoll)")),
        }
    }
}

/// A backend that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
}

impl EngineKind {
    /// Its name in the ready line, `/metrics` and summary.json.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uring => "uring",
            Self::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decides the backend once per process: `auto` sets up a small ring with
/// `mode` (every feature checked) and falls back to epoll only if io_uring
/// is refused, returning the one line that says why; a limit hit (locked
/// memory, say) is an error, never a fallback.
pub fn resolve(
    choice: EngineChoice,
    mode: RingMode,
) -> Result<(EngineKind, Option<String>), StartError> {
    match choice {
        EngineChoice::Epoll => Ok((EngineKind::Epoll, None)),
        EngineChoice::Uring => {
            uring::probe(mode)?;
            Ok((EngineKind::Uring, None))
        }
        EngineChoice::Auto => match uring::probe(mode) {
            Ok(()) => Ok((EngineKind::Uring, None)),
            Err(e) if e.refused => Ok((
                EngineKind::Epoll,
                Some(format!(
                    "engine: epoll, since io_uring is refused here: {e}"
                )),
            )),
            Err(e) => Err(e),
        },
    }
}

/// One shard's engine: a backend behind the contract.
// One per shard, made once and never moved on a hot path: the size of the
// larger variant costs nothing, a box would cost an indirection per call.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    /// io_uring.
    Uring(uring::Ring),
    /// epoll.
    Epoll(epoll::Poller),
}

/// Calls the same method on whichever backend runs.
macro_rules! each_backend {
    ($self:ident, $e:ident => $call:expr) => {
        match $self {
            Engine::Uring($e) => $call,
            Engine::Epoll($e) => $call,
        }
    };
}

impl Engine {
    /// Sets up a `kind` engine with `cfg`, with the shard's listening socket
    /// (a server) or none (a client, which installs its sockets), and the
    /// eventfd that wakes it.
    pub fn new(
        kind: EngineKind,
        cfg: &EngineConfig,
        listener: Option<OwnedFd>,
        wake: OwnedFd,
    ) -> Result<Self, StartError> {
        Ok(match kind {
            EngineKind::Uring => Self::Uring(uring::Ring::new(cfg, listener, wake)?),
            EngineKind::Epoll => Self::Epoll(epoll::Poller::new(cfg, listener, wake)?),
        })
    }

    /// Which backend this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            Self::Uring(_) => EngineKind::Uring,
            Self::Epoll(_) => EngineKind::Epoll,
        }
    }

    /// Completions waiting to be read now (after [`Engine::submit_and_wait`]).
    pub fn completions_ready(&mut self) -> usize {
        each_backend!(self, e => e.completions_ready())
    }

    /// Whether the accept is armed.
    pub fn is_accepting(&self) -> bool {
        each_backend!(self, e => e.is_accepting())
    }

    /// Receive buffers handed out and not recycled (epoll: none, ever).
    pub fn buffers_outstanding(&self) -> u32 {
        match self {
            Self::Uring(e) => e.buffers_outstanding(),
            Self::Epoll(_) => 0,
        }
    }

    /// Takes a socket, which may still be connecting, into a slot (a client
    /// engine). Receives and sends on it wait for the connection and fail
    /// with its error. io_uring moves it into the fixed-file table and closes
    /// its process fd, so a client holds more connections than
    /// `RLIMIT_NOFILE`; epoll keeps the fd. Returns the slot, or `None` when
    /// every slot is in use (a slot comes back with its [`Action::Close`]).
    pub fn install(&mut self, socket: OwnedFd) -> io::Result<Option<u32>> {
        each_backend!(self, e => e.install(socket))
    }

    /// Slots free for [`Engine::install`].
    pub fn free_slots(&self) -> usize {
        each_backend!(self, e => e.free_slots())
    }

    /// Starts accepting into free slots; each connection is an
    /// [`Event::Accepted`] until an [`Event::AcceptEnded`] says it stopped.
    pub fn arm_accept(&mut self) {
        each_backend!(self, e => e.arm_accept())
    }

    /// Stops accepting for good (shutdown): the accept ends (as
    /// `AcceptEnded { errno: ECANCELED }`) and the listener stops listening,
    /// so connections waiting in its backlog are reset, new ones refused at
    /// once, and another server may listen on the address while this one
    /// drains its connections.
    pub fn stop_accepting(&mut self) {
        each_backend!(self, e => e.stop_accepting())
    }

    /// Arms the wake-up: one [`Event::Woken`] once another thread writes to
    /// the eventfd (an inbox went non-empty, or the server is stopping),
    /// which resets it. Re-arm after each.
    pub fn arm_wake(&mut self) {
        each_backend!(self, e => e.arm_wake())
    }

    /// Carries out a driver action.
    pub fn execute(&mut self, action: Action) {
        each_backend!(self, e => e.execute(action))
    }

    /// Submits what is queued and waits up to `timeout` for a completion.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        each_backend!(self, e => e.submit_and_wait(timeout))
    }

    /// Hands every completion that is ready to `each`, as an [`Event`], and
    /// returns how many there were. Received bytes are lent to `each` until
    /// it returns.
    pub fn drain_completions(&mut self, each: impl FnMut(Event<'_>)) -> usize {
        self.drain_completions_up_to(usize::MAX, each).0
    }

    /// As [`Engine::drain_completions`], but stops once the receives handed
    /// out carry `budget` bytes: the rest wait for the next call, so the
    /// caller can write what this input produced before it reads more.
    /// Returns how many events were handed out, and whether none was left.
    pub fn drain_completions_up_to(
        &mut self,
        budget: usize,
        each: impl FnMut(Event<'_>),
    ) -> (usize, bool) {
        each_backend!(self, e => e.drain_completions_up_to(budget, each))
    }
}

#[cfg(test)]
mod tests;
