//! Capacity from outside. io_uring: 25,000 connections to one server
//! process, more than the process fd limit here (20,000), which the server
//! holds as direct descriptors; the client side is split over two processes
//! (this test binary, re-executed), each from its own source address, each
//! under its own fd limit. epoll: what the fd limit allows, and OVERLOADED
//! for the rest.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Server};
use proto::{Frame, FrameType};

const PER_CHILD: usize = 12_500;
/// Each child's source addresses, used round-robin, so that no address needs
/// more than a few thousand ports.
const SOURCES: [&str; 2] = [
    "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5",
    "127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9",
];

#[test]
fn twenty_five_thousand_connections_each_get_a_pong() {
    if common::engine() == "epoll" {
        eprintln!("past the fd limit is io_uring's (direct descriptors): not run on epoll");
        return;
    }
    // The children hold their connections silently: a long heartbeat keeps the
    // first ones from expiring while the last are still connecting.
    let mut server = Server::start(&["--heartbeat-ms", "120000"]);
    let started = Instant::now();
    let mut children: Vec<_> = SOURCES
        .iter()
        .map(|source| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "child_holds_connections",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("RR_CHILD_TARGET", server.addr.to_string())
                .env("RR_CHILD_SOURCE", source)
                .env("RR_CHILD_COUNT", PER_CHILD.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Each child says UP once every connection has had its PONG.
    let mut outputs = Vec::new();
    for child in &mut children {
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // libtest prints "test child_holds_connections ... " on the same line.
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.contains("UP ") || l.contains("FAIL "))
            .expect("child ended without a verdict");
        let verdict = &line[line.find("UP ").or(line.find("FAIL ")).unwrap()..];
        assert_eq!(verdict, format!("UP {PER_CHILD}"));
        outputs.push(lines); // keep the pipe open: the child still writes to it
    }
    let total = (PER_CHILD * SOURCES.len()) as u64;
    eprintln!(
        "{total} connections up, each with its PONG, in {:?}",
        started.elapsed()
    );
    assert_eq!(server.metric("ringroom_connections_open", None), total);
    assert!(total > 20_000, "more than this machine's fd limit");

    // The server holds them without process fds.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server_pid(&server)))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        fds < 100,
        "server uses {fds} process fds for {total} connections"
    );

    // The server closes first (GOAWAY to all 25,000, then a drain-limited
    // close), so TIME_WAIT lands on its port, not on the clients' ports.
    let stopping = Instant::now();
    server.signal("TERM");
    assert!(server.wait().success(), "{}", server.stderr);
    assert!(
        !server.stderr.contains("still open"),
        "every connection closed within the drain time: {}",
        server.stderr
    );
    eprintln!(
        "drained and closed {total} connections in {:?}",
        stopping.elapsed()
    );
    for (child, lines) in children.iter_mut().zip(outputs) {
        drop(child.stdin.take());
        lines.for_each(drop);
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn epoll_holds_what_the_fd_limit_allows_and_tells_the_rest_overloaded() {
    // A small fd limit, so that reaching it is quick: 1,000 fds leave
    // (1000 - 256 - 8) * 100 / 110 = 669 connections.
    let server = Server::start_under(
        &["prlimit", "--nofile=1000:1000", "--"],
        &[
            "--engine",
            "epoll",
            "--shards",
            "2",
            "--heartbeat-ms",
            "60000",
        ],
    );
    let mut up = Vec::new();
    let mut overloaded = 0;
    for i in 0..720u32 {
        let mut c = server.client();
        c.send(&[Frame::Ping(&i.to_be_bytes())]);
        match c.recv() {
            Some(got) if got.ty == FrameType::Pong => up.push(c),
            Some(got) if got.ty == FrameType::Error => {
                assert_eq!(got.code(), proto::ErrorCode::OVERLOADED, "{got:?}");
                overloaded += 1;
            }
            other => panic!("connection {i}: {other:?}"),
        }
    }
    assert_eq!(up.len(), 669, "the capacity the ready line names");
    assert_eq!(overloaded, 720 - 669);
    // Those admitted carry on.
    for c in up.iter_mut().step_by(50) {
        c.ping_pong(b"still here");
    }
    // The refused ones are gone once the server has read their EOF.
    let start = Instant::now();
    while server.metric("ringroom_connections_open", None) != 669 {
        assert!(
            start.elapsed() < common::TIMEOUT,
            "refused connections linger"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn server_pid(server: &Server) -> u32 {
    // The metrics endpoint's port is owned by the server; find the pid via ss.
    let out = Command::new("ss")
        .args(["-tlnpH", &format!("( sport = :{} )", server.metrics.port())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("pid=").expect("ss shows the owning process");
    text[at + 4..].split(',').next().unwrap().parse().unwrap()
}

/// Run by the parent test in a child process: opens RR_CHILD_COUNT
/// connections from RR_CHILD_SOURCE, checks a PONG on each, prints UP, and
/// holds them until its stdin closes.
#[test]
#[ignore = "a helper process of twenty_five_thousand_connections_each_get_a_pong"]
fn child_holds_connections() {
    let Ok(target) = std::env::var("RR_CHILD_TARGET") else {
        return;
    };
    let target: SocketAddr = target.parse().unwrap();
    let sources: Vec<IpAddr> = std::env::var("RR_CHILD_SOURCE")
        .unwrap()
        .split(',')
        .map(|a| a.parse().unwrap())
        .collect();
    let count: usize = std::env::var("RR_CHILD_COUNT").unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        assert!(
            Instant::now() < deadline,
            "too slow: {i} connections in 120 s"
        );
        let source = sources[i % sources.len()];
        let stream = common::connect::connect_from(source, target, common::TIMEOUT).unwrap();
        let mut c = Client::from_stream(stream);
        let tag = (i as u32).to_be_bytes();
        c.send(&[Frame::Ping(&tag)]);
        let got = c.expect(FrameType::Pong);
        if got.payload != tag {
            println!("FAIL {i}");
            return;
        }
        conns.push(c);
    }
    println!("UP {}", conns.len());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
