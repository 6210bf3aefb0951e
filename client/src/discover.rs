//! Finding servers: the discovery request (PROTOCOL.md, Discovery over UDP)
//! broadcast on every IPv4 interface that is up and sent to loopback, the
//! replies collected for a while, checked and de-duplicated.
//!
//! The request goes out three times, a third of the timeout apart, each
//! time with a new nonce: a datagram lost once is not a server missed, and a
//! reply's round trip is measured from the request it answers.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use nix::net::if_::InterfaceFlags;
use proto::discovery;

/// A server that answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its name.
    pub name: String,
    /// Where to connect: the address it answered from, and its TCP port.
    pub addr: SocketAddr,
    /// The shortest round trip of its replies.
    pub rtt: Duration,
}

/// Where requests go: the broadcast address of every IPv4 interface that is
/// up and can broadcast, and loopback.
pub fn targets(port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut out = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))];
    for ifa in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        let usable = ifa.flags.contains(InterfaceFlags::IFF_UP)
            && ifa.flags.contains(InterfaceFlags::IFF_BROADCAST);
        let broadcast = ifa
            .broadcast
            .as_ref()
            .and_then(|b| b.as_sockaddr_in())
            .map(|b| b.ip());
        if let (true, Some(ip)) = (usable, broadcast) {
            let target = SocketAddr::from((ip, port));
            if !out.contains(&target) {
                out.push(target);
            }
        }
    }
    Ok(out)
}

/// Replies to our requests, sans-io: which nonces we sent when, what came.
#[derive(Default)]
pub struct Collector {
    sent: Vec<([u8; 8], Instant)>,
    found: BTreeMap<SocketAddr, Found>,
    /// Datagrams that were not a reply to us (garbage, other nonces).
    pub ignored: u64,
}

impl Collector {
    /// A request with a fresh nonce, sent at `now`.
    pub fn request(&mut self, now: Instant, nonce: [u8; 8]) -> [u8; discovery::REQUEST_LEN] {
        self.sent.push((nonce, now));
        discovery::request(nonce)
    }

    /// A datagram from `from` arrived at `now`.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(reply) = discovery::parse_reply(datagram) else {
            self.ignored += 1;
            return;
        };
        let Some(&(_, at)) = self.sent.iter().find(|(n, _)| *n == reply.nonce) else {
            self.ignored += 1;
            return;
        };
        if reply.tcp_port == 0 {
            self.ignored += 1;
            return;
        }
        let addr = SocketAddr::new(from.ip(), reply.tcp_port);
        let rtt = now.saturating_duration_since(at);
        let name = crate::body::printable(reply.name);
        self.found
            .entry(addr)
            .and_modify(|f| f.rtt = f.rtt.min(rtt))
            .or_insert(Found { name, addr, rtt });
    }

    /// The servers found, nearest first.
    pub fn found(&self) -> Vec<Found> {
        let mut all: Vec<Found> = self.found.values().cloned().collect();
        all.sort_by(|a, b| a.rtt.cmp(&b.rtt).then(a.addr.cmp(&b.addr)));
        all
    }
}

/// Asks every target in `targets`, collects replies for `timeout`.
pub fn discover(targets: &[SocketAddr], timeout: Duration) -> io::Result<(Vec<Found>, u64)> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_broadcast(true)?;
    let start = Instant::now();
    let deadline = start + timeout;
    let rounds = 3;
    let mut collector = Collector::default();
    let mut round = 0;
    let mut buf = [0u8; 2048];
    let mut errors = Vec::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let next_round = start + timeout.mul_f64(round as f64 / rounds as f64);
        if round < rounds && now >= next_round {
            let request = collector.request(now, fastrand::u64(..).to_be_bytes());
            for t in targets {
                if let Err(e) = socket.send_to(&request, t) {
                    // One interface that cannot send (no route) is not fatal.
                    errors.push(format!("{t}: {e}"));
                }
            }
            round += 1;
            continue;
        }
        let until = if round < rounds {
            next_round.min(deadline)
        } else {
            deadline
        };
        let wait = until
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => collector.on_datagram(Instant::now(), from, &buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // An ICMP port unreachable from loopback shows up here: no server there.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
    if errors.len() == targets.len() * rounds {
        return Err(io::Error::other(format!(
            "no discovery request could be sent: {}",
            errors.join("; ")
        )));
    }
    Ok((collector.found(), collector.ignored))
}

/// A found server as a line of `ringroom discover`.
pub fn line(f: &Found) -> String {
    format!(
        "{:<24} {:<22} rtt {:.2} ms",
        f.name,
        f.addr,
        f.rtt.as_secs_f64() * 1000.0
    )
}

/// A found server as JSON.
pub fn json(f: &Found) -> serde_json::Value {
    serde_json::json!({
        "name": f.name,
        "address": f.addr.ip().to_string(),
        "port": f.addr.port(),
        "rtt_ms": f.rtt.as_secs_f64() * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_checked_deduplicated_and_timed() {
        let t0 = Instant::now();
        let mut c = Collector::default();
        c.request(t0, *b"nonce001");
        c.request(t0 + Duration::from_millis(100), *b"nonce002");
        let from: SocketAddr = "10.0.0.5:7701".parse().unwrap();
        let mut reply = Vec::new();
        discovery::Reply {
            nonce: *b"nonce002",
            tcp_port: 7700,
            name: "alpha",
        }
        .encode_to_vec(&mut reply);
        c.on_datagram(t0 + Duration::from_millis(103), from, &reply);
        let mut first = Vec::new();
        discovery::Reply {
            nonce: *b"nonce001",
            tcp_port: 7700,
            name: "alpha",
        }
        .encode_to_vec(&mut first);
        c.on_datagram(t0 + Duration::from_millis(104), from, &first);
        // Garbage: another magic, a nonce we never sent, truncated, port 0.
        c.on_datagram(t0, from, b"RRHERE02nonce001\x1e\x14x");
        let mut stranger = Vec::new();
        discovery::Reply {
            nonce: *b"someone!",
            tcp_port: 1,
            name: "x",
        }
        .encode_to_vec(&mut stranger);
        c.on_datagram(t0, from, &stranger);
        c.on_datagram(t0, from, &reply[..10]);
        let mut zero = reply.clone();
        zero[16] = 0;
        zero[17] = 0;
        c.on_datagram(t0, from, &zero);
        assert_eq!(c.ignored, 4);
        let found = c.found();
        assert_eq!(found.len(), 1, "one server, answered twice");
        assert_eq!(found[0].addr, "10.0.0.5:7700".parse().unwrap());
        assert_eq!(found[0].rtt, Duration::from_millis(3));
        assert_eq!(found[0].name, "alpha");
    }

    #[test]
    fn loopback_is_always_a_target() {
        let t = targets(7701).unwrap();
        assert_eq!(t[0], "127.0.0.1:7701".parse().unwrap());
    }
}
