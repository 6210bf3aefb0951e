//! One server per address: the TCP listeners of other processes on our port.
//!
//! The shards share their port through `SO_REUSEPORT`, and the kernel lets
//! any process of the same user join that group: a second server on the same
//! address would start, print "ready" and silently take a share of the new
//! connections. So before binding, and again once bound (a second server
//! racing with us is then caught by both), the server reads the kernel's table
//! of TCP sockets (`/proc/net/tcp`, `/proc/net/tcp6`, of its own network
//! namespace) and refuses to run beside a listening socket that is not its
//! own on an overlapping address. Its own sockets are told apart by inode.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

/// A listening TCP socket found in the kernel's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// Its local address.
    pub addr: SocketAddr,
    /// Its inode, which names it in `/proc/PID/fd`.
    pub inode: u64,
}

/// TCP state LISTEN, as `/proc/net/tcp` writes it.
const LISTEN: &str = "0A";
/// TCP state CLOSE: a listener being shut down, still in the listening hash.
const CLOSE: &str = "07";

/// Parses the lines of `/proc/net/tcp` or `/proc/net/tcp6`: the sockets in
/// LISTEN state. Lines that do not parse are skipped.
pub fn parse_listeners(table: &str) -> Vec<Listener> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != LISTEN {
                return None;
            }
            let (ip, port) = fields[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = parse_ip(ip)?;
            let inode = fields[9].parse().ok()?;
            Some(Listener {
                addr: SocketAddr::new(ip, port),
                inode,
            })
        })
        .collect()
}

/// An address as the kernel prints it: 32-bit words in host order, in hex.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Whether a connection to one of these addresses could reach the other:
/// the same port, and the same address or a wildcard on either side (an
/// IPv6 wildcard may be dual-stack; an IPv4-mapped address is its IPv4 one).
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() {
        return false;
    }
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let (a, b) = (canon(a.ip()), canon(b.ip()));
    a.is_unspecified() || b.is_unspecified() || a == b
}

/// The inode of a socket we hold.
pub fn inode_of(fd: &OwnedFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The head of a `/proc/net/tcp(6)` table up to its listening sockets' end.
/// The kernel writes the table from its listening hash first, then from the
/// established one (connections, TIME_WAIT): the first line in any state but
/// LISTEN or CLOSE starts the second part, which is not read. At C1M the
/// whole table is two million lines, seconds to write out, and a server
/// restarting beside it read it twice before it could listen.
fn listening_section(table: impl BufRead) -> String {
    let mut head = String::new();
    for (i, line) in table.lines().map_while(Result::ok).enumerate() {
        let state = line.split_whitespace().nth(3);
        if i > 0 && state.is_some_and(|s| s != LISTEN && s != CLOSE) {
            break;
        }
        head.push_str(&line);
        head.push('\n');
    }
    head
}

/// Listening sockets of others (not among `ours`) whose address overlaps `addr`.
pub fn foreign_listeners(addr: SocketAddr, ours: &[u64]) -> Vec<Listener> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::File::open(path).ok())
        .map(|file| listening_section(std::io::BufReader::new(file)))
        .flat_map(|table| parse_listeners(&table))
        .filter(|l| overlaps(addr, l.addr) && !ours.contains(&l.inode))
        .collect()
}

/// The process holding the socket `inode`, as "pid N (name)", if it can be
/// found (another user's processes may not be readable).
pub fn holder(inode: u64) -> Option<String> {
    let want = format!("socket:[{inode}]");
    for proc in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(want.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(proc.path().join("comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", name.trim()));
        }
    }
    None
}

/// The error for `addr` when `others` listen there too.
pub fn refusal(addr: SocketAddr, others: &[Listener]) -> String {
    let mut who: Vec<String> = others
        .iter()
        .map(|l| match holder(l.inode) {
            Some(h) => format!("{} held by {h}", l.addr),
            None => format!("{} (socket inode {})", l.addr, l.inode),
        })
        .collect();
    // A server of several shards holds several listeners: name it once.
    who.sort();
    who.dedup();
    format!(
        "cannot listen on {addr}: another process is listening there ({}); a second server \
         would silently take a share of the connections. Stop it, or choose another --listen",
        who.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1E14 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1677 1 0 100 0 0 10 0
   1: 0100007F:1E15 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 100 0 0 10 0
   2: 0100007F:1E14 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3001 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1E14 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4001 1 0 100 0 0 10 0
";

    #[test]
    fn listeners_are_read_from_the_kernels_table() {
        let got = parse_listeners(TCP);
        assert_eq!(
            got,
            [
                Listener {
                    addr: "0.0.0.0:7700".parse().unwrap(),
                    inode: 1677
                },
                Listener {
                    addr: "127.0.0.1:7701".parse().unwrap(),
                    inode: 2001
                },
            ],
            "the ESTABLISHED socket is not a listener"
        );
        let six = parse_listeners(TCP6);
        assert_eq!(six[0].addr, "[::1]:7700".parse().unwrap());
    }

    #[test]
    fn the_table_is_read_only_up_to_its_first_connection() {
        // A listener after a connection is beyond where the kernel's
        // listening hash ends: not read (the kernel never writes one there).
        let late = format!(
            "{TCP}   3: 0100007F:1E16 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0 100 0 0 10 0\n"
        );
        let head = listening_section(std::io::Cursor::new(late));
        assert_eq!(
            head.lines().count(),
            3,
            "the header and two listeners:\n{head}"
        );
        assert_eq!(parse_listeners(&head), parse_listeners(TCP));
        let closing = TCP.replacen(" 0A ", " 07 ", 1);
        let head = listening_section(std::io::Cursor::new(closing));
        assert_eq!(
            head.lines().count(),
            3,
            "a closing listener does not end it"
        );
        assert_eq!(listening_section(std::io::Cursor::new(TCP6)), TCP6);
    }

    #[test]
    fn the_real_table_s_listeners_are_all_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A connection too, so the table has an established part.
        let _conn = std::net::TcpStream::connect(addr).unwrap();
        let fd = OwnedFd::from(listener);
        let found = foreign_listeners(addr, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(Some(found[0].inode), inode_of(&fd));
    }

    #[test]
    fn wildcards_and_mapped_addresses_overlap() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:7700"), a("0.0.0.0:7700")));
        assert!(overlaps(a("0.0.0.0:7700"), a("127.0.0.2:7700")));
        assert!(overlaps(a("127.0.0.1:7700"), a("[::]:7700")));
        assert!(overlaps(a("127.0.0.1:7700"), a("[::ffff:127.0.0.1]:7700")));
        assert!(!overlaps(a("127.0.0.1:7700"), a("127.0.0.2:7700")));
        assert!(!overlaps(a("127.0.0.1:7700"), a("127.0.0.1:7701")));
        assert!(!overlaps(a("[::1]:7700"), a("127.0.0.1:7700")));
    }

    #[test]
    fn our_own_listener_is_found_and_told_apart() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fd = OwnedFd::from(listener);
        let inode = inode_of(&fd).expect("a socket has an inode");
        assert_eq!(foreign_listeners(addr, &[inode]), []);
        let others = foreign_listeners(addr, &[]);
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].inode, inode);
        let msg = refusal(addr, &others);
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }
}
