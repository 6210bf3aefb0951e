//! `--tcp-user-timeout`, observed. The option is set on the listeners and
//! inherited by accepted sockets, which the server holds only as io_uring
//! direct descriptors, so it cannot be read back with getsockopt; this test
//! watches what it does instead.
//!
//! Two network namespaces made by the test, joined by a veth pair: the server
//! in one, a client (this test binary, re-executed) in the other. Once the
//! client is connected, the server's side is given a wrong MAC address for the
//! client, so nothing the server sends arrives, while the client's packets
//! still do. The client then PINGs: the server's PONG is never acknowledged.
//! With `--tcp-user-timeout 1000` the kernel aborts the connection about a
//! second later and the server frees it; without it the connection stays
//! established, retransmitting (for about 15 minutes by default).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;
use proto::{Frame, FrameType, Hello};

/// Deletes the namespace (and everything in it) when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server's TCP sockets on `port` other than its listener.
fn connections(ns: &str, port: u16) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Htan"])
        .arg(format!("sport = :{port}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("LISTEN"))
        .map(str::to_string)
        .collect()
}

/// Runs one case; returns the server's sockets on its port, polled until they
/// are gone or `watch` has passed since the PING.
fn case(tag: &str, server_args: &[&str], watch: Duration) -> (Vec<String>, Duration) {
    let id = format!("{}{tag}", std::process::id());
    let (srv, cli) = (Netns(format!("rr-ut-s{id}")), Netns(format!("rr-ut-c{id}")));
    let made = Command::new("ip")
        .args(["netns", "add", &srv.0])
        .status()
        .unwrap();
    assert!(
        made.success(),
        "this test needs root and iproute2 (ip netns)"
    );
    run(&["ip", "netns", "add", &cli.0]);
    let (vs, vc) = (format!("rus{id}"), format!("ruc{id}"));
    run(&[
        "ip", "link", "add", &vs, "type", "veth", "peer", "name", &vc,
    ]);
    run(&["ip", "link", "set", &vs, "netns", &srv.0]);
    run(&["ip", "link", "set", &vc, "netns", &cli.0]);
    for (ns, dev, addr) in [(&srv.0, &vs, "10.77.0.1/30"), (&cli.0, &vc, "10.77.0.2/30")] {
        run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv.0,
            env!("CARGO_BIN_EXE_ringroom-server"),
        ])
        .args(["--listen", "10.77.0.1:0", "--metrics", "off"])
        .args(["--discovery", "off", "--stats-interval", "0"])
        .args(["--heartbeat-ms", "60000"])
        .args(server_args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let at = line.find("listen ").expect("ready line") + "listen ".len();
    let addr: SocketAddr = line[at..]
        .split([',', ' '])
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let mut client = Command::new("ip")
        .args(["netns", "exec", &cli.0])
        .arg(std::env::current_exe().unwrap())
        .args([
            "child_pings_into_the_void",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("RR_UT_TARGET", addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("CONNECTED")),
        "the client did not connect"
    );
    assert_eq!(connections(&srv.0, addr.port()).len(), 1);
    // From now on the server's frames go to a MAC address nobody has.
    run(&[
        "ip",
        "-n",
        &srv.0,
        "neigh",
        "replace",
        "10.77.0.2",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        &vs,
        "nud",
        "permanent",
    ]);
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "ping").unwrap();
    let pinged = Instant::now();
    let mut left = connections(&srv.0, addr.port());
    while !left.is_empty() && pinged.elapsed() < watch {
        std::thread::sleep(Duration::from_millis(50));
        left = connections(&srv.0, addr.port());
    }
    let took = pinged.elapsed();
    drop(stdin); // the child exits
    let _ = client.wait();
    let _ = server.kill();
    let _ = server.wait();
    (left, took)
}

#[test]
fn tcp_user_timeout_ends_a_connection_whose_peer_vanished() {
    let (left, took) = case("a", &["--tcp-user-timeout", "1000"], Duration::from_secs(8));
    assert!(left.is_empty(), "still there after {took:?}: {left:?}");
    assert!(
        took >= Duration::from_millis(900),
        "gone after {took:?}: sooner than the timeout asked for"
    );
    // The control: without the option the same connection is still retransmitting.
    let (left, took) = case("b", &[], Duration::from_secs(3));
    assert_eq!(left.len(), 1, "after {took:?}: {left:?}");
    assert!(left[0].starts_with("ESTAB"), "{left:?}");
}

/// The client, in its own namespace: connects, says when, then PINGs once
/// told to and holds the connection until its stdin closes.
#[test]
#[ignore = "run by tcp_user_timeout_ends_a_connection_whose_peer_vanished"]
fn child_pings_into_the_void() {
    let target: SocketAddr = std::env::var("RR_UT_TARGET").unwrap().parse().unwrap();
    let mut c = Client::connect(target);
    c.send(&[Frame::Hello(Hello {
        heartbeat_ms: 0,
        name: "void",
    })]);
    c.expect(FrameType::Welcome);
    println!("CONNECTED");
    let mut stdin = std::io::stdin().lines();
    let _ = stdin.next();
    c.send(&[Frame::Ping(b"anyone?")]);
    let _ = stdin.next(); // until the parent closes stdin
}
