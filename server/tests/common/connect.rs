//! Connecting from a chosen source address, shared by the tests and the
//! benchmark clients (`examples/`, which include this file by path).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// A blocking connection to `target` from `source` (any port), with
/// TCP_NODELAY. SO_REUSEADDR lets bind take a port that an earlier run left in
/// TIME_WAIT; the 4-tuple stays unique, since each server run has its own port.
pub fn connect_from(
    source: IpAddr,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&target.into(), timeout)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}
