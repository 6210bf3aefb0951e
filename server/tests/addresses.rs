//! One server per address: a second `ringroom-server` on a TCP, discovery or
//! metrics address that another process holds exits non-zero with a message
//! naming it, and the first keeps every connection, old and new.

mod common;

use common::Server;
use proto::{Frame, FrameType, Hello};

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
