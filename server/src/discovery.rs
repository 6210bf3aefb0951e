//! UDP discovery: answers `RRFIND01` datagrams with `RRHERE01`, the nonce, the
//! TCP port and the server's name, from a thread of its own. Anything else is
//! ignored (and counted). A request is 16 bytes and a reply at most 82, so the
//! server cannot be used to amplify traffic much.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use proto::discovery::{parse_request, Reply};

use crate::metrics::Counter;

/// The discovery responder's counters.
#[derive(Debug, Default)]
pub struct DiscoveryMetrics {
    /// Requests answered.
    pub replies: Counter,
    /// Datagrams that were not requests.
    pub ignored: Counter,
}

/// Longest server name sent in a reply.
pub const MAX_NAME_LEN: usize = 64;

/// Binds the discovery port, exclusively: a port another process holds is
/// refused (no `SO_REUSEADDR`/`SO_REUSEPORT`, so the kernel says EADDRINUSE).
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, String> {
    UdpSocket::bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                "cannot answer discovery on UDP {addr}: another process holds that port \
                 (another ringroom-server?); choose one with --discovery ADDR, or --discovery off"
            )
        } else {
            format!("cannot answer discovery on UDP {addr}: {e}")
        }
    })
}

/// Answers requests on `socket` for ever on a thread named `discovery`;
/// returns the bound address.
pub fn serve(
    socket: UdpSocket,
    tcp_port: u16,
    name: &str,
    metrics: Arc<DiscoveryMetrics>,
) -> Result<SocketAddr, String> {
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let name = truncate(name, MAX_NAME_LEN).to_owned();
    std::thread::Builder::new()
        .name("discovery".into())
        .spawn(move || {
            let mut datagram = [0u8; 64];
            let mut reply = Vec::with_capacity(18 + MAX_NAME_LEN);
            loop {
                let Ok((len, from)) = socket.recv_from(&mut datagram) else {
                    continue;
                };
                let Some(nonce) = parse_request(&datagram[..len]) else {
                    metrics.ignored.inc();
                    continue;
                };
                reply.clear();
                Reply {
                    nonce,
                    tcp_port,
                    name: &name,
                }
                .encode_to_vec(&mut reply);
                if socket.send_to(&reply, from).is_ok() {
                    metrics.replies.inc();
                }
            }
        })
        .map_err(|e| format!("cannot start the discovery thread: {e}"))?;
    Ok(local)
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_requests_and_ignores_the_rest() {
        let metrics = Arc::new(DiscoveryMetrics::default());
        let addr = serve(
            bind("127.0.0.1:0".parse().unwrap()).unwrap(),
            7700,
            "test-server",
            metrics.clone(),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        client.send_to(b"hello?", addr).unwrap();
        client
            .send_to(&proto::discovery::request(*b"nonce-01"), addr)
            .unwrap();
        let mut buf = [0u8; 128];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let reply = proto::discovery::parse_reply(&buf[..n]).unwrap();
        assert_eq!(reply.nonce, *b"nonce-01");
        assert_eq!(reply.tcp_port, 7700);
        assert_eq!(reply.name, "test-server");
        assert!(client.recv_from(&mut buf).is_err(), "no reply to the junk");
        assert_eq!(metrics.ignored.get(), 1);
        assert_eq!(metrics.replies.get(), 1);
    }

    #[test]
    fn a_port_held_by_another_socket_is_refused_with_the_reason() {
        let held = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = bind(held.local_addr().unwrap()).unwrap_err();
        assert!(e.contains("another process holds that port"), "{e}");
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let name = "é".repeat(40); // 80 bytes
        let cut = truncate(&name, MAX_NAME_LEN);
        assert_eq!(cut.len(), 64);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
