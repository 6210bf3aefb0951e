//! loadgen --protocol against the real peer servers: redis-server, nats-server
//! and mosquitto, from the distribution's packages (`.ci/run` installs them;
//! elsewhere: `apt-get install redis-server nats-server mosquitto`). Each is
//! started on loopback, driven through a short rooms run with heartbeats, and
//! must answer every PING and deliver every message, in order, once.
//!
//! A peer that is not installed is skipped, and said so, so that
//! `cargo test --workspace` on a machine without them still runs everything
//! else; under CI (`CI` set), which installs them, a missing one fails.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(protocol: &str, port: u16, dir: &Path) -> Peer {
    let mut cmd = match protocol {
        "redis" => {
            let mut c = Command::new("redis-server");
            c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                // Protected mode admits 127.0.0.1 only, not the rest of 127/8.
                .args(["--protected-mode", "no"]);
            c
        }
        "nats" => {
            let mut c = Command::new("nats-server");
            c.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            c
        }
        _ => {
            let conf = dir.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n"),
            )
            .unwrap();
            let mut c = Command::new("mosquitto");
            c.arg("-c").arg(conf);
            c
        }
    };
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {program} ({e}): apt-get install redis-server nats-server mosquitto"
            )
        });
    let peer = Peer(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{program} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    peer
}

/// Whether `program` is on PATH.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[test]
fn rooms_and_heartbeats_against_redis_nats_and_mosquitto() {
    let dir: PathBuf = std::env::temp_dir().join(format!("loadgen-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut skipped = Vec::new();
    for (k, (protocol, port, program)) in [
        ("redis", 26379u16, "redis-server"),
        ("nats", 24222, "nats-server"),
        ("mqtt", 21883, "mosquitto"),
    ]
    .into_iter()
    .enumerate()
    {
        if !installed(program) {
            assert!(
                std::env::var_os("CI").is_none(),
                "{program} is not installed, and CI installs it: see .ci/run"
            );
            eprintln!(
                "SKIPPED --protocol {protocol}: {program} is not installed \
                 (apt-get install redis-server nats-server mosquitto)"
            );
            skipped.push(program);
            continue;
        }
        let peer = start(protocol, port, &dir);
        let out = dir.join(protocol);
        let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["--protocol", protocol, "--target"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--server-pid", &peer.0.id().to_string()])
            .args(["--scenario", "rooms", "--conns", "300", "--rooms", "10"])
            .args([
                "--publish-rate",
                "10",
                "--heartbeat-ms",
                "200",
                "--duration",
                "2",
            ])
            .args(["--source", &format!("127.0.{}.1", 40 + k)])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{protocol}: {stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let s = loadgen::results::RunRecord::read(&out).unwrap().summary;
        assert_eq!(s.config.protocol, protocol);
        assert_eq!(s.counts.connected, 300, "{protocol}");
        assert!(
            s.counts.pings >= 300,
            "{protocol}: heartbeats sent: {}",
            s.counts.pings
        );
        assert_eq!(s.counts.pongs, s.counts.pings, "{protocol}");
        let rooms = s.rooms.unwrap();
        // 10 rooms of 30: each message reaches the 29 members but the publisher.
        assert!(rooms.published >= 100, "{protocol}: {}", rooms.published);
        assert_eq!(rooms.expected, rooms.published * 29, "{protocol}");
        assert_eq!(rooms.delivered, rooms.expected, "{protocol}");
        assert_eq!((rooms.late, rooms.duplicates, rooms.missing), (0, 0, 0));
        assert!(
            s.server.unwrap().cpu_s > 0.0,
            "{protocol}: the peer was sampled"
        );
        drop(peer);
    }
    let _ = std::fs::remove_dir_all(dir);
    if !skipped.is_empty() {
        eprintln!("peer tests skipped, not installed: {}", skipped.join(", "));
    }
}
