//! The load generator against a ringroom cluster: three nodes (loadgen's own
//! server binary with --cluster), each on one of three clustered nats-servers
//! on loopback. Rooms spread over the nodes, the latency split same-node /
//! cross-node, a killed node's clients landing on the others, and GAP
//! notices counted as reported, not silent, loss.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::nats::NatsCluster;

const NATS_LIMITS: &str = "max_pending: 67108864\nwrite_deadline: \"2s\"";

/// Three nodes, node i linked first to NATS server i.
fn nodes(nats: &NatsCluster) -> Vec<(Child, SocketAddr)> {
    (0..3)
        .map(|i| {
            let seeds = nats.seeds_from(i);
            let id = (i + 1).to_string();
            common::start_server(&["--cluster", &seeds, "--node-id", &id])
        })
        .collect()
}

/// A rooms run of 300 connections in 30 rooms for 6 s over `targets`.
fn rooms_command(targets: &[SocketAddr], out: &Path, extra: &[&str]) -> Command {
    let mut c = common::loadgen_run();
    c.args(["--scenario", "rooms", "--conns", "300", "--rooms", "30"])
        .args(["--duration", "6", "--out"])
        .arg(out)
        .args(extra);
    for t in targets {
        c.args(["--target", &t.to_string()]);
    }
    c
}

fn rooms_run(targets: &[SocketAddr], out: &Path, extra: &[&str]) -> Output {
    let mut extra = extra.to_vec();
    extra.extend(["--publish-rate", "10"]);
    rooms_command(targets, out, &extra).output().unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_rooms_run_spans_three_nodes_and_splits_same_node_from_cross_node() {
    let nats = NatsCluster::start(3, NATS_LIMITS);
    let servers = nodes(&nats);
    let targets: Vec<SocketAddr> = servers.iter().map(|s| s.1).collect();
    let dir = std::env::temp_dir().join(format!("loadgen-cluster-{}", std::process::id()));
    let run = rooms_run(&targets, &dir.join("spread"), &[]);
    assert!(run.status.success(), "{}", text(&run));
    let s = summary(&dir.join("spread"));
    let rooms = &s["rooms"];
    assert_eq!(rooms["missing"], 0);
    assert_eq!(rooms["delivered"], rooms["expected"]);
    let lat = &s["latency"];
    assert!(
        lat["delivery_same_node"]["count"].as_u64().unwrap() > 0,
        "{lat}"
    );
    assert!(
        lat["delivery_cross_node"]["count"].as_u64().unwrap() > 0,
        "{lat}"
    );
    // Every room has members on every node: with 10 members per room over
    // 3 nodes, two thirds of the deliveries cross nodes.
    let cross = lat["delivery_cross_node"]["count"].as_f64().unwrap();
    let all = lat["delivery"]["count"].as_f64().unwrap();
    assert!(
        (0.55..0.8).contains(&(cross / all)),
        "{cross} of {all} across nodes"
    );
    assert!(
        text(&run).contains("delivery, across nodes"),
        "{}",
        text(&run)
    );

    // Publishers pinned to the first node: what reaches the others crosses.
    let run = rooms_run(&targets, &dir.join("pinned"), &["--publishers-on", "0"]);
    assert!(run.status.success(), "{}", text(&run));
    let s = summary(&dir.join("pinned"));
    assert_eq!(s["rooms"]["publishers_on"], 0);
    let same = s["latency"]["delivery_same_node"]["count"]
        .as_f64()
        .unwrap();
    let all = s["latency"]["delivery"]["count"].as_f64().unwrap();
    assert!(
        (0.2..0.45).contains(&(same / all)),
        "{same} of {all} on the publishers' node"
    );
    let _ = std::fs::remove_dir_all(&dir);
    for (mut c, _) in servers {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn a_killed_nodes_clients_reconnect_to_the_others_and_join_again() {
    let nats = NatsCluster::start(3, NATS_LIMITS);
    let mut servers = nodes(&nats);
    let targets: Vec<SocketAddr> = servers.iter().map(|s| s.1).collect();
    let out = std::env::temp_dir().join(format!("loadgen-cluster-kill-{}", std::process::id()));
    let run = rooms_command(&targets, &out, &["--publish-rate", "10"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (victim, _) = &mut servers[2];
    victim.kill().unwrap();
    victim.wait().unwrap();
    let run = run.wait_with_output().unwrap();
    // Dropped connections fail the run (as they should); what matters here
    // is where they went.
    assert!(!run.status.success());
    let s = summary(&out);
    let counts = &s["counts"];
    let dropped = counts["dropped"].as_u64().unwrap();
    assert_eq!(dropped, 100, "the third node's share: {counts}");
    assert_eq!(counts["reconnects"].as_u64().unwrap(), dropped, "{counts}");
    assert_eq!(
        counts["connected"].as_u64().unwrap(),
        300 + dropped,
        "each came back once"
    );
    assert_eq!(
        counts["joined"].as_u64().unwrap(),
        300 + dropped,
        "and joined its room again"
    );
    // Sampled once a second: the second that holds the kill may see the
    // victim's share still on its way; every other second, all are up.
    let up: Vec<u64> = serde_json::from_value(s["up_per_second"].clone()).unwrap();
    let held = &up[..up.len() - 1];
    assert!(held.iter().filter(|&&n| n < 300).count() <= 1, "{up:?}");
    assert_eq!(held.last(), Some(&300), "all back before the end: {up:?}");
    assert_eq!(s["rooms"]["late"], 0);
    assert_eq!(s["rooms"]["duplicates"], 0);
    let _ = std::fs::remove_dir_all(&out);
    for (mut c, _) in servers {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn messages_lost_between_nodes_are_reported_by_gap_notices_not_lost_silently() {
    let mut nats = NatsCluster::start(3, NATS_LIMITS);
    let servers = nodes(&nats);
    let targets: Vec<SocketAddr> = servers.iter().map(|s| s.1).collect();
    let out = std::env::temp_dir().join(format!("loadgen-cluster-gap-{}", std::process::id()));
    let run = rooms_command(&targets, &out, &["--publish-rate", "20"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // The second node's NATS server dies; the node links to another.
    nats.servers[1].kill9();
    let run = run.wait_with_output().unwrap();
    let s = summary(&out);
    let (counts, rooms) = (&s["counts"], &s["rooms"]);
    assert!(counts["gaps"].as_u64().unwrap() > 0, "{counts}");
    assert_eq!(rooms["missing"], 0, "nothing lost silently: {rooms}");
    assert_eq!(rooms["late"], 0);
    assert_eq!(rooms["duplicates"], 0);
    let (delivered, reported, expected) = (
        rooms["delivered"].as_u64().unwrap(),
        rooms["reported"].as_u64().unwrap(),
        rooms["expected"].as_u64().unwrap(),
    );
    eprintln!("{delivered} delivered + {reported} reported lost of {expected}");
    assert!(delivered + reported >= expected, "{rooms}");
    assert!(run.status.success(), "{}", text(&run));
    let _ = std::fs::remove_dir_all(&out);
    for (mut c, _) in servers {
        let _ = c.kill();
        let _ = c.wait();
    }
}
