//! In a network namespace of its own, with `net.ipv4.ip_local_port_range`
//! narrowed to 1,000 ports (net.* sysctls are per namespace, so the machine is
//! untouched): 4,500 connections to one server do not fit from one source
//! address and are refused before the run; from five, all 4,500 come up; with
//! no `--source` at all, loadgen takes enough loopback addresses itself.

mod common;

use std::process::Command;

/// A network namespace of the test's own, loopback up; deleted (and so
/// everything in it) when the test ends.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let ns = Netns(format!("{name}-{}", std::process::id()));
        let made = Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap();
        assert!(
            made.success(),
            "this test needs root and iproute2 to make a network namespace"
        );
        assert!(ip_netns_exec(&ns.0)
            .args(["ip", "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip_netns_exec(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c
}

#[test]
fn a_narrow_port_range_needs_more_source_addresses() {
    let ns = Netns::new("rr-ports");
    let range = ip_netns_exec(&ns.0)
        .args(["sysctl", "-w", "net.ipv4.ip_local_port_range=40000 40999"])
        .output()
        .unwrap();
    assert!(
        range.status.success(),
        "{}",
        String::from_utf8_lossy(&range.stderr)
    );

    let loadgen_bin = env!("CARGO_BIN_EXE_loadgen");
    let (mut server, addr) =
        common::spawn_server(common::server_command(ip_netns_exec(&ns.0), &[]));
    let addr = addr.to_string();
    let run = |sources: Option<&str>| {
        let out = std::env::temp_dir().join(format!(
            "rr-netns-{}-{}",
            std::process::id(),
            sources.map_or(0, str::len)
        ));
        let mut loadgen = ip_netns_exec(&ns.0);
        loadgen.args([loadgen_bin, "--target", &addr, "--conns", "4500"]);
        if let Some(sources) = sources {
            loadgen.args(["--source", sources]);
        }
        let result = loadgen
            .args([
                "--scenario",
                "idle",
                "--duration",
                "1",
                "--connect-rate",
                "20000",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&out);
        result
    };

    let one = run(Some("127.0.0.2"));
    assert!(!one.status.success());
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert!(stderr.contains("4500 connections do not fit"), "{stderr}");
    assert!(stderr.contains("1000 ports"), "{stderr}");

    let all_up = |result: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
        assert!(
            result.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert!(
            stdout.contains("| connections up / asked | 4500 / 4500 |"),
            "{stdout}"
        );
        stdout
    };
    let five = all_up(&run(Some("127.0.0.2-127.0.0.6")));
    assert!(
        five.contains("5 source(s) x 1 target(s) x 1000 ports"),
        "{five}"
    );

    // 4,500 and an eighth to spare over 1,000 ports: 6 addresses, chosen.
    let chosen = all_up(&run(None));
    assert!(
        chosen.contains("using 127.2.0.0-127.2.0.5 (--source chooses others)"),
        "{chosen}"
    );
    assert!(chosen.contains("6 source(s) x 1 target(s)"), "{chosen}");

    let _ = server.kill();
    let _ = server.wait();
}

/// A server that accepts nothing (stopped) behind listen backlogs of 1, in a
/// namespace whose kernel counters are the test's alone: the run fails, and
/// says that full listen backlogs dropped SYNs, as /proc/net/netstat counted.
#[test]
fn a_failed_run_names_the_limit_the_kernel_counted() {
    let ns = Netns::new("rr-drops");
    let (mut server, addr) = common::spawn_server(common::server_command(
        ip_netns_exec(&ns.0),
        &["--backlog", "1"],
    ));
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, &server.id().to_string()])
            .status()
            .unwrap()
    };
    assert!(signal("-STOP").success());
    let out = std::env::temp_dir().join(format!("rr-drops-{}", std::process::id()));
    let run = ip_netns_exec(&ns.0)
        .args([env!("CARGO_BIN_EXE_loadgen"), "--engine", common::engine()])
        .args(["--target", &addr.to_string(), "--scenario", "idle"])
        .args(["--conns", "40", "--connect-rate", "1000", "--duration", "1"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    signal("-CONT");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stdout}");
    assert!(stderr.contains("connections came up"), "{stderr}");
    assert!(
        stderr.contains("the kernel counted: ")
            && stderr.contains("SYNs or connections dropped by full listen backlogs"),
        "{stderr}"
    );
    assert!(
        stdout.contains("| kernel (machine-wide): listen drops /"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary["kernel"]["listen_drops"].as_u64().unwrap() > 0,
        "{}",
        summary["kernel"]
    );
    let _ = std::fs::remove_dir_all(&out);
}
