//! One server per address: a second `ringroom-server` on a TCP, discovery or
//! metrics address that another process holds exits non-zero with a message
//! naming it, and the first keeps every connection, old and new. A server
//! that is stopping gives its address up at once.

mod common;

use common::Server;
use proto::{ErrorCode, Frame, FrameType, Hello};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Runs a second server with `args`; it must exit on its own without saying
/// ready. Its status and stderr.
fn second_server(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (status, out, err) = common::run_to_exit(args);
    assert!(!out.contains("ready"), "it must not say ready: {out}");
    (status, err)
}

fn greeted(server: &Server) -> common::Client {
    let mut c = server.client();
    c.send(&[Frame::Hello(Hello {
        heartbeat_ms: 0,
        name: "c",
    })]);
    c.expect(FrameType::Welcome);
    c
}

#[test]
fn a_second_server_on_the_same_address_is_refused_and_the_first_keeps_every_connection() {
    let first = Server::start(&["--shards", "2"]);
    let mut clients: Vec<_> = (0..50).map(|_| greeted(&first)).collect();
    let port = first.addr.port().to_string();
    for listen in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        let (status, err) = second_server(&[
            "--listen",
            &listen,
            "--metrics",
            "off",
            "--discovery",
            "off",
        ]);
        assert!(!status.success(), "{listen}: {err}");
        assert!(
            err.contains("another process is listening there")
                && err.contains(&format!("127.0.0.1:{port}"))
                && err.contains(&format!("pid {}", first.pid())),
            "{listen}: {err}"
        );
    }
    // New connections all reach the first server.
    clients.extend((0..200).map(|_| greeted(&first)));
    for c in &mut clients {
        c.ping_pong(b"still here");
    }
    assert_eq!(first.metric("ringroom_accepted_total", None), 250);
    assert_eq!(first.metric("ringroom_connections_open", None), 250);
}

/// Whether process `pid` is running (not exited: a zombie counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}

/// A restart after SIGTERM (a deploy, or the storm's `term@`): while the old
/// server drains, its listeners stop listening, so a client reconnecting is
/// refused at once (and backs off) instead of completing a handshake with a
/// queue nobody accepts from, and the new server may take the address.
#[test]
fn a_draining_server_refuses_new_connections_at_once_and_a_new_one_takes_its_address() {
    let mut old = Server::start(&["--shards", "2", "--drain-ms", "6000"]);
    // Never closes its side after GOAWAY: the old server drains for 6 s.
    let mut stays = greeted(&old);
    stays.ping_pong(b"up");
    old.signal("TERM");
    assert_eq!(
        stays.expect(FrameType::GoAway).code(),
        ErrorCode::SHUTTING_DOWN
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        match TcpStream::connect_timeout(&old.addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break true,
            // A shard that has not seen the stop yet; the stream is dropped.
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break false,
        }
    };
    assert!(
        refused,
        "connects to a draining server were not refused within 3 s"
    );
    assert!(running(old.pid()), "the old server must still be draining");
    // Discovery answers on UDP at the same port until the old one exits.
    let listen = old.addr.to_string();
    let new = Server::start(&[
        "--listen",
        &listen,
        "--shards",
        "2",
        "--discovery",
        "127.0.0.1:0",
    ]);
    assert!(
        running(old.pid()),
        "the new server started beside the draining one"
    );
    for _ in 0..20 {
        greeted(&new).ping_pong(b"the new server");
    }
    assert_eq!(new.metric("ringroom_accepted_total", None), 20);
    let status = old.wait();
    assert!(status.success(), "{status:?}: {}", old.stderr);
}

#[test]
fn a_discovery_or_metrics_port_held_by_another_process_is_refused() {
    let first = Server::start(&[]);
    let discovery = first.discovery.to_string();
    let (status, err) = second_server(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "off",
        "--discovery",
        &discovery,
    ]);
    assert!(!status.success());
    assert!(
        err.contains(&format!("UDP {discovery}: another process holds that port")),
        "{err}"
    );
    let metrics = first.metrics.to_string();
    let (status, err) = second_server(&[
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        &metrics,
        "--discovery",
        "off",
    ]);
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "metrics on {metrics}: another process holds that port"
        )),
        "{err}"
    );
    first.client().ping_pong(b"first still serves");
}
