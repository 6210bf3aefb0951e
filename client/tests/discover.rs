//! `ringroom discover` over real broadcast: network namespaces this test
//! makes, joined by a bridge; servers in two of them, the client in a third.
//! And on loopback, a responder that answers with garbage.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ringroom_path, Server};

/// Network namespaces, deleted (with everything in them) when dropped.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 (ip)");
    assert!(
        out.status.success(),
        "ip {args:?}: {} (this test needs root and iproute2)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hub namespace with a bridge, and one namespace per address on it.
fn lan(addrs: &[&str]) -> Namespaces {
    let id = std::process::id();
    let hub = format!("rr-hub-{id}");
    let mut all = Namespaces(vec![hub.clone()]);
    ip(&["netns", "add", &hub]);
    ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &hub, "link", "set", "br0", "up"]);
    for (i, addr) in addrs.iter().enumerate() {
        let ns = format!("rr-n{i}-{id}");
        ip(&["netns", "add", &ns]);
        all.0.push(ns.clone());
        let port = format!("p{i}");
        ip(&[
            "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            addr,
            "broadcast",
            "+",
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
    }
    all
}

fn discover_in(ns: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            ringroom_path(),
            "discover",
            "--timeout",
            "700ms",
        ])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn broadcast_finds_the_server_in_another_namespace_then_two() {
    let nets = lan(&["10.77.0.1/24", "10.77.0.2/24", "10.77.0.3/24"]);
    let (client, s1, s2) = (&nets.0[1], &nets.0[2], &nets.0[3]);
    // Nobody yet: 3.
    let (code, _, err) = discover_in(client, &[]);
    assert_eq!(code, Some(3), "{err}");
    let exec = |ns: &str| {
        [
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            ns.to_string(),
        ]
    };
    let w1 = exec(s1);
    let w1: Vec<&str> = w1.iter().map(String::as_str).collect();
    let _alpha = Server::spawn(&w1, "0.0.0.0:7700", "0.0.0.0:7701", &["--name", "alpha"]);
    let (code, out, err) = discover_in(client, &["--json"]);
    assert_eq!(code, Some(0), "{err}");
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{out}");
    assert_eq!(found[0]["name"], "alpha");
    assert_eq!(found[0]["address"], "10.77.0.2");
    assert_eq!(found[0]["port"], 7700);
    assert!(found[0]["rtt_ms"].as_f64().unwrap() > 0.0);

    let w2 = exec(s2);
    let w2: Vec<&str> = w2.iter().map(String::as_str).collect();
    let _beta = Server::spawn(&w2, "0.0.0.0:7700", "0.0.0.0:7701", &["--name", "beta"]);
    let (code, out, err) = discover_in(client, &[]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "one line per server, de-duplicated:\n{out}");
    let mut names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(
        out.contains("10.77.0.2:7700") && out.contains("10.77.0.3:7700"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("rtt ") && l.ends_with(" ms")),
        "{out}"
    );
    // Asked by one address, only that one answers.
    let (code, out, _) = discover_in(client, &["--broadcast", "10.77.0.3"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("beta") && out.lines().count() == 1, "{out}");
}

#[test]
fn garbage_replies_are_ignored() {
    let responder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = responder.local_addr().unwrap().port();
    responder
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let honest = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (honest, stop) = (honest.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = responder.recv_from(&mut buf) else {
                    continue;
                };
                let Some(nonce) = proto::discovery::parse_request(&buf[..n]) else {
                    continue;
                };
                let mut good = Vec::new();
                proto::discovery::Reply {
                    nonce,
                    tcp_port: 4242,
                    name: "honest",
                }
                .encode_to_vec(&mut good);
                let mut other_nonce = good.clone();
                other_nonce[8] ^= 0xff;
                let mut wrong_magic = good.clone();
                wrong_magic[0] = b'X';
                let mut port_zero = good.clone();
                port_zero[16] = 0;
                port_zero[17] = 0;
                let garbage: [&[u8]; 6] = [
                    b"",
                    b"hello?",
                    &good[..10],
                    &other_nonce,
                    &wrong_magic,
                    &port_zero,
                ];
                for g in garbage {
                    let _ = responder.send_to(g, from);
                }
                if honest.load(Ordering::Relaxed) {
                    let _ = responder.send_to(&good, from);
                }
            }
        })
    };
    let run = || {
        let out = common::ringroom()
            .args([
                "discover",
                "--broadcast",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--timeout",
                "500ms",
                "--json",
            ])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run();
    assert_eq!(code, Some(3), "garbage alone is no server: {out}");
    assert_eq!(out.trim(), "[]");
    honest.store(true, Ordering::Relaxed);
    let (code, out) = run();
    assert_eq!(code, Some(0));
    let found: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(found[0]["name"], "honest");
    assert_eq!(found[0]["port"], 4242);
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
}
