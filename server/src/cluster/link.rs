//! The cluster link's thread: one TCP connection to a NATS server, kept up
//! across failures, between the shards' queues and [`Node`].
//!
//! Each turn: wait (poll) for the socket or the eventfd the shards and the
//! registry write to; read what NATS sent (unless the shards' inboxes are
//! full: then NATS holds it, up to its own slow-consumer limit); take the
//! rooms whose interest changed; take the shards' messages (unless the
//! outgoing buffer is full: then the shards hold them, and their publishers
//! pause); let time pass; hand the shards what arrived; write.
//!
//! Reconnecting: on a failure the next server of the list is tried at once
//! (the seeds, and the servers NATS announced in INFO); once every one has
//! failed in a row, attempts back off exponentially from 100 ms to 5 s, with
//! jitter so that the nodes of a cluster do not retry in step.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, Socket, Type};

use super::metrics::unix_ns;
use super::node::{Node, Notes};
use super::Interest;
use crate::channel::{Delivery, Inbox, Outboxes};
use crate::flow::Flow;
use crate::metrics::ShardMetrics;

/// Bytes waiting to be written to NATS beyond which the shards' messages
/// are left in their queues.
pub const MAX_OUT: usize = 4 << 20;

/// Bytes of input one turn reads before it hands the shards what came.
const READ_BUDGET: usize = 1 << 20;

/// A connection attempt (TCP and the handshake) gets this long.
const CONNECT_TIMEOUT_MS: u64 = 3000;

/// Servers remembered (seeds and announced ones).
const MAX_SERVERS: usize = 64;

/// Everything the link's thread starts with.
pub struct LinkSpec {
    /// The node's logic.
    pub node: Node,
    /// NATS servers to try first (`host:port`).
    pub seeds: Vec<String>,
    /// Every inbox: the shards' first, the link's own last.
    pub inboxes: Arc<Vec<Arc<Inbox>>>,
    /// Rooms whose interest changed.
    pub interest: Arc<Interest>,
    /// The eventfd the link's inbox and `interest` write to.
    pub wake: std::fs::File,
    /// Set when the server stops (after its shards have drained).
    pub stop: Arc<AtomicBool>,
    /// Each inbox's capacity; the link's outbox to a shard holds as many.
    pub channel_capacity: usize,
}

struct Conn {
    stream: TcpStream,
    server: String,
    /// The TCP connect is under way.
    connecting: bool,
    since_ms: u64,
}

/// Runs the link until `stop` is set, then flushes what it can (1 s).
pub fn run(spec: LinkSpec) {
    let LinkSpec {
        mut node,
        seeds,
        inboxes,
        interest,
        wake,
        stop,
        channel_capacity,
    } = spec;
    let own = inboxes.len() - 1;
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    let mut servers = seeds;
    let mut next_server = 0usize;
    let mut failed_in_a_row = 0usize;
    let mut backoff_ms = 100u64;
    let mut jitter = fastrand::Rng::with_seed(unix_ns());
    let mut retry_at = 0u64;
    let mut conn: Option<Conn> = None;
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut out: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut outboxes = Outboxes::new(inboxes.len(), channel_capacity);
    // Counts what Outboxes counts for shards; not rendered (the link's own
    // metrics say what it sent and received).
    let shard_metrics = ShardMetrics::default();
    let mut stop_at: Option<u64> = None;
    let mut chunk = vec![0u8; 64 << 10];
    // Stream fragments in `out`, each with the count of bytes ever written
    // at which it has left: their publishers' flows count them until then.
    let mut in_out: VecDeque<(Arc<Flow>, usize, u64)> = VecDeque::new();
    let mut written_total: u64 = 0;

    loop {
        let now = now_ms();
        if stop.load(Ordering::Acquire) && stop_at.is_none() {
            stop_at = Some(now + 1000);
        }
        if stop_at.is_some_and(|at| now >= at || (out.is_empty() && inboxes[own].is_empty())) {
            break;
        }
        if conn.is_none() && now >= retry_at && stop_at.is_none() {
            let server = servers[next_server % servers.len()].clone();
            next_server += 1;
            match start_connect(&server) {
                Ok(stream) => {
                    conn = Some(Conn {
                        stream,
                        server,
                        connecting: true,
                        since_ms: now,
                    })
                }
                Err(e) => {
                    node.metrics().connect_failures.inc();
                    failed_in_a_row += 1;
                    retry_at = now
                        + retry_delay(failed_in_a_row, servers.len(), &mut backoff_ms, &mut jitter);
                    if failed_in_a_row == servers.len() {
                        eprintln!("ringroom-server: cluster: no NATS server reachable (last: {server}: {e}); retrying");
                    }
                }
            }
        }

        // Wait for the socket, a wake-up, or the next thing due.
        let reading = !outboxes.is_full();
        let mut timeout = if node.proxies() > 0 || node.has_pauses() {
            10
        } else {
            100
        };
        if outboxes.waiting > 0 {
            timeout = 1;
        }
        if conn.is_none() {
            timeout = timeout.min(retry_at.saturating_sub(now).max(1));
        }
        let (sock_ready, woken) = {
            let mut fds = vec![PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
            if let Some(c) = &conn {
                let mut ev = PollFlags::empty();
                if reading && !c.connecting {
                    ev |= PollFlags::POLLIN;
                }
                if c.connecting || !out.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.stream.as_fd(), ev));
            }
            let t = PollTimeout::try_from(timeout.min(1000) as i32).unwrap_or(PollTimeout::NONE);
            match poll(&mut fds, t) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("cluster link: poll failed: {e}"),
            }
            let woken = fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLIN));
            let sock = fds
                .get(1)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty());
            (sock, woken)
        };
        if woken {
            let mut counter = [0u8; 8];
            let _ = (&wake).read(&mut counter);
        }
        let now = now_ms();
        let mut notes = Notes::default();
        let mut failure: Option<String> = None;

        if let Some(c) = conn.as_mut() {
            if c.connecting && !sock_ready.is_empty() {
                match c.stream.take_error() {
                    Ok(None) if c.stream.peer_addr().is_ok() => {
                        c.connecting = false;
                        node.connected(now);
                    }
                    Ok(Some(e)) | Err(e) => failure = Some(e.to_string()),
                    Ok(None) => failure = Some("connection refused".into()),
                }
            }
            if failure.is_none()
                && !c.connecting
                && !node.is_up()
                && now.saturating_sub(c.since_ms) > CONNECT_TIMEOUT_MS
            {
                failure = Some("no handshake within 3 s".into());
            }
            if c.connecting && now.saturating_sub(c.since_ms) > CONNECT_TIMEOUT_MS {
                failure = Some("connect timed out".into());
            }
            if failure.is_none()
                && !c.connecting
                && reading
                && sock_ready
                    .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            {
                let mut taken = 0;
                while taken < READ_BUDGET {
                    match c.stream.read(&mut chunk) {
                        Ok(0) => {
                            failure = Some("the NATS server closed the connection".into());
                            break;
                        }
                        Ok(n) => {
                            taken += n;
                            rbuf.extend_from_slice(&chunk[..n]);
                            match node.received(&rbuf, now, &mut out, &mut notes) {
                                Ok(used) => {
                                    rbuf.drain(..used);
                                }
                                Err(e) => {
                                    failure = Some(format!("protocol error: {e}"));
                                    break;
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }

        // The registry first, then the shards' messages: a room's SUB
        // goes out before the messages of members who just joined it.
        let changed = interest.take();
        if !changed.is_empty() {
            node.interest(changed, now, &mut out);
        }
        if out.len() < MAX_OUT {
            let unix = unix_ns();
            inboxes[own].drain_up_to(MAX_OUT - out.len(), |d| {
                if let Delivery::Message(m) = d {
                    if let Some(flow) = node.local(&m, now, unix, &mut out) {
                        let end = written_total + out.len() as u64;
                        in_out.push_back((flow, m.bytes().len(), end));
                    }
                }
            });
        }
        node.tick(now, &mut out, &mut notes);
        if notes.dead {
            failure.get_or_insert_with(|| "two keep-alive PINGs unanswered".into());
        }
        if notes.leave {
            failure.get_or_insert_with(|| "the NATS server is going away (lame duck mode)".into());
        }
        for e in notes.errors.drain(..) {
            eprintln!("ringroom-server: cluster: NATS said: {e}");
        }
        for s in notes.servers.drain(..) {
            if servers.len() < MAX_SERVERS && !servers.contains(&s) {
                servers.push(s);
            }
        }

        // Write.
        if failure.is_none() {
            if let Some(c) = conn.as_mut().filter(|c| !c.connecting) {
                while !out.is_empty() {
                    match c.stream.write(&out) {
                        Ok(0) => break,
                        Ok(n) => {
                            out.drain(..n);
                            written_total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            failure = Some(e.to_string());
                            break;
                        }
                    }
                }
            }
        }

        let was_up = node.is_up();
        if let Some(why) = failure {
            let server = conn.take().map(|c| c.server).unwrap_or_default();
            if was_up {
                eprintln!("ringroom-server: cluster: link to {server} lost: {why}; reconnecting");
                failed_in_a_row = 0;
                backoff_ms = 100;
            } else {
                node.metrics().connect_failures.inc();
                failed_in_a_row += 1;
            }
            node.disconnected();
            written_total += out.len() as u64;
            out.clear();
            rbuf.clear();
            retry_at =
                now + retry_delay(failed_in_a_row, servers.len(), &mut backoff_ms, &mut jitter);
        } else if let Some(c) = &conn {
            if node.take_announce() {
                eprintln!(
                    "ringroom-server: cluster: linked to NATS at {} as node {}",
                    c.server,
                    node.origin().node
                );
                failed_in_a_row = 0;
                backoff_ms = 100;
            }
        }

        while in_out
            .front()
            .is_some_and(|(_, _, end)| *end <= written_total)
        {
            let (flow, bytes, _) = in_out.pop_front().expect("checked");
            node.written(&flow, bytes);
        }
        // Hand the shards what arrived, and wake publishers whose flow opened.
        outboxes.send(&mut node.deliveries, &inboxes, own, &shard_metrics);
        for shard in node.wakes.drain(..) {
            if let Some(inbox) = inboxes.get(shard) {
                inbox.nudge();
            }
        }
    }
    // Best effort: what is left in `out` goes with the socket.
    if let Some(mut c) = conn {
        let _ = c.stream.set_nonblocking(false);
        let _ = c.stream.set_write_timeout(Some(Duration::from_millis(500)));
        let _ = c.stream.write_all(&out);
    }
}

/// How long to wait before the next attempt: next to nothing after a link
/// that was up dropped (`failed_in_a_row` 0) and while untried servers
/// remain in this round, then exponential backoff with jitter.
fn retry_delay(
    failed_in_a_row: usize,
    servers: usize,
    backoff_ms: &mut u64,
    jitter: &mut fastrand::Rng,
) -> u64 {
    if failed_in_a_row == 0 || failed_in_a_row % servers.max(1) != 0 {
        return 20;
    }
    let base = *backoff_ms;
    *backoff_ms = (*backoff_ms * 2).min(5000);
    // base/2 .. base*3/2
    base / 2 + jitter.u64(0..base.max(1))
}

/// A non-blocking TCP connect to `server` (`host:port`).
fn start_connect(server: &str) -> io::Result<TcpStream> {
    let addr: SocketAddr = server
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}
