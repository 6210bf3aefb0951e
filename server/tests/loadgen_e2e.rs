//! The load generator's engine against the server, both over loopback: every
//! connection comes up through a client ring whose sockets live in its
//! fixed-file table, and every PING scheduled is answered.

mod common;

use std::time::Duration;

use common::Server;
use loadgen::client::Pinging;
use loadgen::sources::parse_sources;
use loadgen::worker::{run, WorkerSpec};

#[test]
fn a_worker_holds_3000_connections_and_every_ping_is_answered() {
    let server = Server::start(&[]);
    let spec = WorkerSpec {
        targets: vec![server.addr],
        sources: parse_sources("127.0.0.20-127.0.0.21").unwrap(),
        conns: 3000,
        index: 0,
        workers: 1,
        connect_rate: 10_000.0,
        hold: Duration::from_secs(2),
        pinging: Pinging::Rate(5.0),
        heartbeat_ms: 0,
        slots: 3016,
        seed: 1,
    };
    let result = run(&spec).unwrap();
    let c = &result.counts;
    assert_eq!(c.connected, 3000, "{c:?}");
    assert_eq!(result.peak_open, 3000);
    assert!(
        c.failed.is_empty() && c.dropped == 0 && c.errors.is_empty(),
        "{c:?}"
    );
    // About 3,000 x 5/s x 2 s; only those sent in the last moment may miss a PONG.
    assert!(c.pings >= 25_000, "{c:?}");
    assert!(c.pings - c.pongs <= 3000, "{c:?}");
    assert_eq!(result.rtt.len(), c.pongs);
    assert_eq!(result.connect.len(), 3000);
    server.wait_metric("ringroom_closed_total", Some("peer"), 3000);
}

#[test]
fn a_refused_target_is_counted_not_fatal() {
    // A port nobody listens on: every connect fails with ECONNREFUSED.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let spec = WorkerSpec {
        targets: vec![addr],
        sources: parse_sources("127.0.0.1").unwrap(),
        conns: 20,
        index: 0,
        workers: 1,
        connect_rate: 1000.0,
        hold: Duration::from_millis(200),
        pinging: Pinging::Heartbeat,
        heartbeat_ms: 0,
        slots: 32,
        seed: 1,
    };
    let result = run(&spec).unwrap();
    assert_eq!(result.counts.connected, 0);
    let refused: u64 = result.counts.failed.values().sum();
    assert_eq!(refused, 20, "{:?}", result.counts.failed);
}
