//! The load generator's engine against the server, both over loopback: every
//! connection comes up through a client ring whose sockets live in its
//! fixed-file table, and every PING scheduled is answered.

mod common;

use std::process::Command;
use std::time::Duration;

use loadgen::client::Pinging;
use loadgen::sources::parse_sources;
use loadgen::worker::{run, WorkerSpec};

#[test]
fn a_worker_holds_3000_connections_and_every_ping_is_answered() {
    let (mut server, addr) = common::start_server(&[]);
    let spec = WorkerSpec {
        targets: vec![addr],
        sources: parse_sources("127.0.0.20-127.0.0.21").unwrap(),
        conns: 3000,
        index: 0,
        workers: 1,
        connect_rate: 10_000.0,
        hold: Duration::from_secs(2),
        churn: None,
        pinging: Pinging::Rate(5.0),
        heartbeat_ms: 0,
        kind: common::engine_kind(),
        slots: 3016,
        seed: 1,
        progress: Default::default(),
        reconnect: false,
        rooms: None,
        publishers_on: None,
        epoch: std::time::Instant::now(),
        gate: loadgen::worker::HoldGate::new(1),
        protocol: loadgen::wire::Protocol::Ringroom,
    };
    let result = run(&spec).unwrap();
    let c = &result.counts;
    assert_eq!(c.connected, 3000, "{c:?}");
    assert_eq!(result.peak_open, 3000);
    assert!(
        c.failed_by_errno.is_empty() && c.dropped == 0 && c.errors_by_code.is_empty(),
        "{c:?}"
    );
    // About 3,000 x 5/s x 2 s; only those sent in the last moment may miss a PONG.
    assert!(c.pings >= 25_000, "{c:?}");
    assert!(c.pings - c.pongs <= 3000, "{c:?}");
    assert_eq!(result.rtt.len(), c.pongs);
    assert_eq!(result.connect.len(), 3000);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The README's one command: C10K end to end, 15 s, with the server it starts.
/// loadgen exits non-zero unless all 10,000 connections came up, none dropped
/// and every PING was answered (but those in flight at the very end).
#[test]
fn one_command_runs_c10k_with_its_own_server() {
    let out = std::env::temp_dir().join(format!("loadgen-e2e-{}", std::process::id()));
    let mut run = common::loadgen_run();
    run.args(["--scenario", "c10k"]);
    let (stdout, summary) = common::run_passing(run, &out);
    assert!(
        stdout.contains("| connections up / asked | 10000 / 10000 |"),
        "{stdout}"
    );
    assert!(stdout.contains("| dropped after WELCOME | 0 |"), "{stdout}");
    assert!(
        stdout.contains("| server CPU-s |"),
        "the embedded server is measured: {stdout}"
    );
    assert_eq!(summary["counts"]["connected"], 10_000);
    let (pings, pongs) = (
        summary["counts"]["pings"].as_u64().unwrap(),
        summary["counts"]["pongs"].as_u64().unwrap(),
    );
    assert!(pings > 400_000, "10,000 x 3/s x 15 s: {pings}");
    assert_eq!(pings, pongs, "every PING answered");
    for file in ["connect.hgrm", "ping-rtt.hgrm", "ping-rtt.hlog", "plot.svg"] {
        assert!(out.join(file).exists(), "{file}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_run_that_cannot_fit_is_refused_before_it_starts() {
    let run = common::loadgen_run()
        .args([
            "--target",
            "127.0.0.1:9",
            "--conns",
            "40000",
            "--source",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("do not fit"), "{stderr}");
    assert!(stderr.contains("source addresses"), "{stderr}");
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
        churn: None,
        pinging: Pinging::Heartbeat,
        heartbeat_ms: 0,
        kind: common::engine_kind(),
        slots: 32,
        seed: 1,
        progress: Default::default(),
        reconnect: false,
        rooms: None,
        publishers_on: None,
        epoch: std::time::Instant::now(),
        gate: loadgen::worker::HoldGate::new(1),
        protocol: loadgen::wire::Protocol::Ringroom,
    };
    let result = run(&spec).unwrap();
    assert_eq!(result.counts.connected, 0);
    let refused: u64 = result.counts.failed_by_errno.values().sum();
    assert_eq!(refused, 20, "{:?}", result.counts.failed_by_errno);

    // With reconnects on, they back off and try again, and are counted.
    let result = run(&WorkerSpec {
        reconnect: true,
        hold: Duration::from_millis(600),
        gate: loadgen::worker::HoldGate::new(1),
        ..spec
    })
    .unwrap();
    assert!(result.counts.reconnects > 0, "{:?}", result.counts);
    let failed: u64 = result.counts.failed_by_errno.values().sum();
    assert_eq!(
        failed + result.counts.abandoned,
        20 + result.counts.reconnects,
        "every attempt failed and was counted, or was under way at the end"
    );
    assert!(
        result.counts.abandoned <= 20,
        "at most one attempt per connection"
    );
}

/// The rooms scenario with its own server: every member of 20 rooms gets every
/// message of its room's publisher, in order, once (loadgen exits non-zero
/// otherwise), and the delivery latency is recorded.
#[test]
fn rooms_scenario_delivers_everything_in_order() {
    let out = std::env::temp_dir().join(format!("loadgen-rooms-{}", std::process::id()));
    let run = common::loadgen_run()
        .args([
            "--scenario",
            "rooms",
            "--conns",
            "1000",
            "--rooms",
            "20",
            "--publish-rate",
            "10",
        ])
        .args([
            "--duration",
            "3",
            "--source",
            "127.0.0.40-127.0.0.41",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let rooms = &summary["rooms"];
    let published = rooms["published"].as_u64().unwrap();
    // Publishing starts a second after the ramp and stops at the end of the
    // hold: 20 rooms x 10/s x about 2 s.
    assert!(published >= 350, "{published}");
    assert_eq!(
        rooms["expected"],
        published * 49,
        "50 members a room, less the publisher"
    );
    assert_eq!(rooms["delivered"], rooms["expected"]);
    assert_eq!(
        (rooms["late"].as_u64(), rooms["duplicates"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(summary["latency"]["delivery"]["count"].as_u64().unwrap() >= published * 49);
    assert!(out.join("delivery.hgrm").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

/// Two load-generator processes drive one server at the same time; `loadgen
/// merge` reports them as one run: counts and histograms add.
#[test]
fn merge_reports_two_processes_as_one_run() {
    let (mut server, addr) = common::start_server(&[]);
    let dir = std::env::temp_dir().join(format!("loadgen-merge-{}", std::process::id()));
    let spawn = |name: &str, source: &str| {
        common::loadgen_run()
            .args(["--target", &addr.to_string()])
            .args(["--server-pid", &server.id().to_string()])
            .args(["--scenario", "ping", "--conns", "200", "--ping-rate", "5"])
            .args(["--duration", "3", "--source", source, "--out"])
            .arg(dir.join(name))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = spawn("a", "127.0.0.50");
    let mut b = spawn("b", "127.0.0.51");
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let merge = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("merge")
        .args([dir.join("a"), dir.join("b")])
        .arg("--out")
        .arg(dir.join("m"))
        .output()
        .unwrap();
    assert!(
        merge.status.success(),
        "{}",
        String::from_utf8_lossy(&merge.stderr)
    );
    let read = |n: &str| loadgen::results::RunRecord::read(&dir.join(n)).unwrap();
    let (ra, rb, m) = (read("a"), read("b"), read("m"));
    assert_eq!(m.summary.sources, 2);
    assert_eq!(m.summary.counts.connected, 400);
    assert_eq!(m.summary.config.conns, 400);
    assert_eq!(
        m.summary.counts.pongs,
        ra.summary.counts.pongs + rb.summary.counts.pongs
    );
    let count = |r: &loadgen::results::RunRecord| r.metric("ping-rtt").unwrap().total().len();
    assert_eq!(count(&m), count(&ra) + count(&rb));
    assert_eq!(
        count(&m),
        m.summary.counts.pongs,
        "every PONG is in the merged log"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// epoll's connections are process fds: under a fd limit of 1,000 a run of
/// 1,500 is split over two processes by itself, and their results add up to
/// one run of 1,500 (the server, started apart, has the usual limit).
#[test]
fn an_epoll_run_past_the_fd_limit_is_split_over_processes_and_merged() {
    let (mut server, addr) = common::start_server(&[]);
    let out = std::env::temp_dir().join(format!("loadgen-split-{}", std::process::id()));
    let run = Command::new("prlimit")
        .args(["--nofile=1000:1000", "--", env!("CARGO_BIN_EXE_loadgen")])
        .args(["--engine", "epoll", "--target", &addr.to_string()])
        .args(["--server-pid", &server.id().to_string()])
        .args(["--scenario", "ping", "--conns", "1500", "--ping-rate", "2"])
        .args([
            "--duration",
            "2",
            "--source",
            "127.0.0.60-127.0.0.61",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("2 processes (engine epoll"), "{stdout}");
    let whole = loadgen::results::RunRecord::read(&out).unwrap();
    let s = &whole.summary;
    assert_eq!(
        (s.config.conns, s.counts.connected),
        (1500, 1500),
        "{stdout}"
    );
    assert_eq!(s.config.engine, "epoll");
    assert_eq!(s.merged_from.len(), 2);
    for k in 0..2 {
        let part = loadgen::results::RunRecord::read(&out.join(format!("part-{k}"))).unwrap();
        assert_eq!(part.summary.counts.connected, 750, "part {k}");
    }
    assert!(s.counts.pongs + 1500 >= s.counts.pings, "{:?}", s.counts);
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

/// A reconnect storm at small scale: loadgen SIGKILLs its own server 3 s in,
/// starts it again a second later on the same port, and the run passes only
/// if every one of the 3,000 clients came back (through their jittered
/// backoff); the summary says when, and how fast they came.
#[test]
fn a_storm_kills_the_server_and_every_client_comes_back() {
    let out = std::env::temp_dir().join(format!("loadgen-storm-{}", std::process::id()));
    let mut run = common::loadgen_run();
    run.args(["--scenario", "ping", "--ping-rate", "1", "--conns", "3000"])
        .args(["--connect-rate", "3000", "--duration", "20"])
        .args(["--source", "127.0.72.0/29", "--storm", "kill@3"]);
    let (stdout, summary) = common::run_passing(run, &out);
    assert!(
        stdout.contains("| storm: SIGKILL at 3.0 s, exited at "),
        "{stdout}"
    );
    assert!(
        stdout.contains("| dropped after WELCOME | 3000 |"),
        "every client lost it: {stdout}"
    );
    let storm = &summary["storm"];
    let back = storm["all_back_after_s"].as_u64().expect("all came back");
    // The dead server's listeners linger while the kernel tears its rings
    // down (seconds, here), then the clients' backoff brings them in.
    assert!((1..=40).contains(&back), "{storm}");
    assert!(
        storm["restarted_at_s"].as_f64().unwrap() >= 4.0,
        "a second after the kill: {storm}"
    );
    assert!(summary["counts"]["reconnects"].as_u64().unwrap() >= 3000);
    // And the last second of the run has them all up.
    let up = summary["up_per_second"].as_array().unwrap();
    assert!(
        up.iter().rev().nth(1).unwrap().as_u64().unwrap() >= 3000,
        "{up:?}"
    );
    // A storm needs loadgen's own server.
    common::assert_refused(
        &["--target", "127.0.0.1:9", "--storm", "kill@3"],
        "--storm restarts loadgen's own server",
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Churn at small scale: 3,000 members of 100 rooms, 5 % of them replaced a
/// second after a quiet start. The run passes only if every member present
/// got its room's messages once and in order, none was silent, none got
/// another room's message, and every member that left was replaced.
#[test]
fn churn_replaces_members_while_rooms_deliver_in_order() {
    let out = std::env::temp_dir().join(format!("loadgen-churn-{}", std::process::id()));
    let mut run = common::loadgen_run();
    run.args([
        "--scenario",
        "churn",
        "--conns",
        "3000",
        "--connect-rate",
        "3000",
    ])
    .args(["--duration", "12", "--churn-rate", "5%"])
    .args(["--source", "127.0.73.0/29"]);
    let (stdout, summary) = common::run_passing(run, &out);
    let churn = &summary["churn"];
    // Ramp 1 s (planned), quiet from a second after it for 3 s, churn for
    // 8 s at 150/s: all of it later by as much as the ramp ran late.
    let (from, until) = (
        churn["from_s"].as_f64().unwrap(),
        churn["until_s"].as_f64().unwrap(),
    );
    assert!((5.0..7.0).contains(&from), "{churn}");
    assert!((until - from - 8.0).abs() < 1e-6, "{churn}");
    let closed = churn["closed"].as_u64().unwrap();
    assert!((1080..=1200).contains(&closed), "{churn}");
    assert!(churn["welcomed"].as_u64().unwrap() + 5 >= closed, "{churn}");
    assert_eq!(churn["connect"]["count"], churn["welcomed"]);
    assert_eq!(churn["silent_members"], 0);
    assert_eq!(churn["foreign_messages"], 0);
    assert!(
        churn["server_cpu_us_per_connect"].is_number(),
        "loadgen's own server is sampled: {churn}"
    );
    assert!(churn["server_rss_at_end"].as_u64().unwrap() > 0);
    let rooms = &summary["rooms"];
    assert_eq!(rooms["missing"], 0);
    assert!(rooms["delivered"].as_u64().unwrap() > 0);
    assert_eq!(summary["counts"]["dropped"], 0);
    assert!(
        stdout.contains("| churn: silent members / foreign messages | 0 / 0 |"),
        "{stdout}"
    );
    // One process only.
    common::assert_refused(
        &["--scenario", "churn", "--processes", "2"],
        "churn runs in one process",
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// The ramp slows down on refused connects and speeds up again: 2,000
/// connections planned at 1,000/s to a port nobody listens on for the
/// first 1.5 s. An open-loop ramp would spend 1,500 first connects on the
/// closed port (and each one's retries on top); this one halves its rate at
/// each burst of refusals, so fewer fail in all, retries included, and once
/// the server is up every connection comes up.
#[test]
fn the_ramp_slows_down_on_refused_connects_and_recovers() {
    let port = common::nats::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let late_server = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"));
        cmd.args(["--internal-server", "--listen", &addr.to_string()])
            .args([
                "--metrics",
                "off",
                "--discovery",
                "off",
                "--stats-interval",
                "0",
            ])
            .args(["--engine", common::engine()])
            .stdout(std::process::Stdio::piped());
        common::spawn_server(cmd)
    });
    let spec = WorkerSpec {
        targets: vec![addr],
        sources: parse_sources("127.0.74.0/29").unwrap(),
        conns: 2000,
        index: 0,
        workers: 1,
        connect_rate: 1000.0,
        hold: Duration::from_secs(6),
        churn: None,
        pinging: Pinging::Heartbeat,
        heartbeat_ms: 0,
        kind: common::engine_kind(),
        slots: 2100,
        seed: 1,
        progress: Default::default(),
        reconnect: true,
        rooms: None,
        publishers_on: None,
        epoch: std::time::Instant::now(),
        gate: loadgen::worker::HoldGate::new(1),
        protocol: loadgen::wire::Protocol::Ringroom,
    };
    let result = run(&spec);
    let (mut server, _) = late_server.join().unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let result = result.unwrap();
    let c = &result.counts;
    let failed: u64 = c.failed_by_errno.values().sum();
    assert!(c.ramp_slowdowns >= 3, "{c:?}");
    assert!(result.ramp_lowest <= 1000.0 / 8.0, "{}", result.ramp_lowest);
    assert!(failed > 0 && failed < 1200, "failed {failed}: {c:?}");
    assert_eq!(c.connected, 2000, "every connection came up: {c:?}");
    assert_eq!(c.dropped, 0);
    // Fewer connects in the refused second than planned, the full rate after.
    let attempts = &result.attempts_per_interval;
    assert!(
        attempts[0] < 700,
        "1,000 planned, and their retries: {attempts:?}"
    );
    assert!(attempts.iter().sum::<u64>() >= 2000, "{attempts:?}");
    eprintln!(
        "failed {failed}, slowdowns {}, lowest {:.0}/s, connects per second {attempts:?}",
        c.ramp_slowdowns, result.ramp_lowest
    );
    // The ramp ended late (the port was closed for 1.5 s of its planned 2):
    // the hold starts then, and lasts its whole 6 s with everything up.
    let ramp_done = result.ramp_done.as_secs_f64();
    assert!(ramp_done > 2.5, "{ramp_done}");
    let up = &result.up_per_interval;
    let held = up.iter().filter(|&&n| n == 2000).count();
    assert!(
        held >= 6,
        "6 s with all 2,000 up after {ramp_done:.1} s: {up:?}"
    );
}
