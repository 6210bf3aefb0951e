//! Rooms across nodes, through a NATS cluster (`--cluster`).
//!
//! Each node keeps one connection to a NATS server, on a thread of its own
//! (the *link*), which the shards reach as one more destination of their
//! channels: every local PUBLISH is handed to it in order, and it hands the
//! shards what other nodes published, through the inboxes they already
//! read. The parts:
//!
//! | module | what |
//! |---|---|
//! | [`subject`] | room names as subjects, the node's control subject |
//! | [`envelope`] | what nodes send each other, written and read in one place |
//! | [`gaps`] | loss detection from per-room sequence numbers |
//! | [`node`] | the node's cluster logic, without I/O |
//! | [`link`] | the thread: the socket, reconnects, the shards' queues |
//! | [`metrics`] | its counters |
//!
//! What a client may rely on across nodes is written in docs/PROTOCOL.md
//! ("Across nodes"); why NATS and how, in docs/DESIGN.md.

pub mod envelope;
pub mod gaps;
pub mod link;
pub mod metrics;
pub mod node;
pub mod subject;

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subject::Subjects;

/// Rooms that gained their first member on this node or lost their last,
/// not yet taken by the link. At most one entry per room, so it is bounded
/// by `--max-rooms` (a room that comes and goes twice is one entry: the link
/// looks at the registry for where it stands now).
#[derive(Debug)]
pub struct Interest {
    changed: Mutex<HashSet<Box<str>>>,
    notified: AtomicBool,
    wake: File,
}

impl Interest {
    /// Interest that wakes the link through `wake` (an eventfd).
    pub fn new(wake: File) -> Self {
        Self {
            changed: Mutex::new(HashSet::new()),
            notified: AtomicBool::new(false),
            wake,
        }
    }

    /// Room `name` gained its first member on the node, or lost its last.
    /// Called by a shard under the registry's lock.
    pub fn changed(&self, name: &str) {
        let mut set = self.changed.lock().expect("interest lock");
        if !set.contains(name) {
            set.insert(name.into());
        }
        drop(set);
        if !self.notified.swap(true, Ordering::AcqRel) {
            // Fails only if the counter is saturated: the link is awake.
            let _ = (&self.wake).write_all(&1u64.to_ne_bytes());
        }
    }

    /// The link takes every change so far.
    pub fn take(&self) -> Vec<Box<str>> {
        // Cleared first: a change racing with the take wakes the link again.
        self.notified.store(false, Ordering::Release);
        let mut set = self.changed.lock().expect("interest lock");
        set.drain().collect()
    }
}

/// `--cluster` and the options that go with it.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// NATS servers to try, `host:port`, in order.
    pub seeds: Vec<String>,
    /// `--node-id`, if given.
    pub node_id: Option<u16>,
    /// Subjects of this cluster.
    pub subjects: Subjects,
    /// SYNC after a room is quiet this long.
    pub sync_ms: u64,
    /// Keep-alive PING interval.
    pub ping_ms: u64,
}

/// Parses `--cluster nats://HOST:PORT[,HOST:PORT...]` into `host:port` seeds.
pub fn parse_seeds(spec: &str) -> Result<Vec<String>, String> {
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let hostport = part.strip_prefix("nats://").unwrap_or(part);
        if hostport.contains("://") {
            return Err(format!(
                "--cluster {part:?}: only nats:// is supported (no TLS on the cluster link)"
            ));
        }
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("--cluster {part:?}: need HOST:PORT"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("--cluster {part:?}: need HOST:PORT"));
        }
        seeds.push(hostport.to_owned());
    }
    if seeds.is_empty() {
        return Err("--cluster needs at least one nats://HOST:PORT".into());
    }
    Ok(seeds)
}

/// The node id this node runs as, and whether NATS confirmed that no other
/// node has it. A given `--node-id` that another node answers for is an
/// error; a derived one is drawn again. No NATS server reachable within
/// `wait`: the id is used unconfirmed (said on stderr by the caller).
pub fn choose_node_id(
    opts: &ClusterOptions,
    incarnation: u64,
    wait: Duration,
) -> Result<(u16, bool), String> {
    let mut rng = fastrand::Rng::with_seed(incarnation);
    let mut tried = Vec::new();
    for _ in 0..8 {
        let id = opts.node_id.unwrap_or_else(|| rng.u16(1..));
        match claim(opts, id, incarnation, wait) {
            Ok(None) => return Ok((id, true)),
            Ok(Some(holder)) => {
                if opts.node_id.is_some() {
                    return Err(format!(
                        "--node-id {id} is taken: another node of this cluster (incarnation \
                         {holder:x}) answers for it; give each node its own id"
                    ));
                }
                tried.push(id);
            }
            Err(_) => return Ok((id, false)),
        }
    }
    Err(format!(
        "node ids {tried:?} were all taken; give one with --node-id"
    ))
}

/// Asks the cluster whether node `id` is taken: the holder's incarnation,
/// or None. Blocking, bounded by `wait` in all.
fn claim(
    opts: &ClusterOptions,
    id: u16,
    incarnation: u64,
    wait: Duration,
) -> Result<Option<u64>, String> {
    let deadline = Instant::now() + wait;
    let mut stream = connect_any(&opts.seeds, deadline)?;
    let reply = format!("{}.claim.{incarnation:x}", opts.subjects.node(id));
    let mut out = Vec::new();
    let mut buf = Vec::new();
    // The server speaks first.
    read_ops(&mut stream, &mut buf, deadline, |op| {
        matches!(op, natsproto::ServerOp::Info(_))
    })?;
    natsproto::connect(
        &mut out,
        &natsproto::Connect {
            name: "ringroom-claim",
            echo: false,
            ..Default::default()
        },
    );
    natsproto::subscribe(&mut out, &reply, 1);
    natsproto::ping(&mut out);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    out.clear();
    read_until_pong(&mut stream, &mut buf, &mut out, deadline)?;
    natsproto::request(
        &mut out,
        &opts.subjects.node(id),
        &reply,
        &envelope::claim(incarnation),
    );
    stream.write_all(&out).map_err(|e| e.to_string())?;
    out.clear();
    // Any holder answers at once; a quarter second is ample on a LAN.
    let until = (Instant::now() + Duration::from_millis(250)).min(deadline);
    let mut holder = None;
    let _ = read_ops(&mut stream, &mut buf, until, |op| {
        if let natsproto::ServerOp::Msg(m) = op {
            if let Some(envelope::Envelope::Taken { origin }) = envelope::decode(m.payload) {
                holder = Some(origin.incarnation);
                return true;
            }
        }
        false
    });
    Ok(holder)
}

/// The first of `seeds` that accepts a TCP connection before `deadline`.
pub fn connect_any(seeds: &[String], deadline: Instant) -> Result<TcpStream, String> {
    let mut last = String::from("no seed");
    for seed in seeds {
        let addrs: Vec<SocketAddr> = match seed.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last = format!("{seed}: {e}");
                continue;
            }
        };
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no NATS server reached in time (last: {last})"));
            }
            match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(1))) {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
    }
    Err(format!("no NATS server reached (last: {last})"))
}

/// Reads operations until a PONG (answering the server's PINGs on the way).
fn read_until_pong(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    until: Instant,
) -> Result<(), String> {
    let mut pinged = false;
    let mut seen_pong = false;
    read_ops(stream, buf, until, |op| {
        match op {
            natsproto::ServerOp::Pong => seen_pong = true,
            natsproto::ServerOp::Ping => pinged = true,
            _ => {}
        }
        seen_pong
    })?;
    if pinged {
        natsproto::pong(out);
    }
    Ok(())
}

/// Reads and parses until `each` returns true or `until` passes.
fn read_ops(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    until: Instant,
    mut each: impl FnMut(natsproto::ServerOp<'_>) -> bool,
) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        let mut done = false;
        while let Some((op, used)) =
            natsproto::parse(&buf[at..], 1 << 20).map_err(|e| e.to_string())?
        {
            at += used;
            if each(op) {
                done = true;
                break;
            }
        }
        buf.drain(..at);
        if done {
            return Ok(());
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return Err("the NATS server closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_parsed_and_bad_ones_named() {
        assert_eq!(
            parse_seeds("nats://127.0.0.1:4222, nats://h:5,127.0.0.1:6").unwrap(),
            ["127.0.0.1:4222", "h:5", "127.0.0.1:6"]
        );
        assert!(parse_seeds("").is_err());
        assert!(parse_seeds("tls://a:1")
            .unwrap_err()
            .contains("only nats://"));
        assert!(parse_seeds("nats://a").unwrap_err().contains("HOST:PORT"));
        assert!(parse_seeds("nats://a:x").is_err());
    }

    #[test]
    fn interest_keeps_one_entry_per_room_and_wakes_once() {
        let fd = engine::sys::eventfd().unwrap();
        let mut reader = File::from(fd.try_clone().unwrap());
        let interest = Interest::new(File::from(fd));
        interest.changed("a");
        interest.changed("a");
        interest.changed("b");
        let mut counter = [0u8; 8];
        reader.read_exact(&mut counter).unwrap();
        assert_eq!(u64::from_ne_bytes(counter), 1, "one wake until taken");
        let mut got = interest.take();
        got.sort();
        assert_eq!(got, ["a".into(), "b".into()] as [Box<str>; 2]);
        assert!(interest.take().is_empty());
    }
}
