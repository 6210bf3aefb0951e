//! `tuning/limits.sh check` against a fake /proc/sys tree and limits file, so
//! the OK/LOW logic and the exit code are tested whatever this machine's
//! settings are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Values that meet the c10k profile.
const GOOD: [(&str, &str); 13] = [
    ("fs/nr_open", "1048576"),
    ("fs/file-max", "9999999"),
    ("net/core/somaxconn", "4096"),
    ("net/ipv4/tcp_max_syn_backlog", "8192"),
    ("net/core/netdev_max_backlog", "1000"),
    ("net/ipv4/ip_local_port_range", "1024\t65535"),
    ("net/ipv4/tcp_tw_reuse", "1"),
    ("net/ipv4/tcp_fin_timeout", "30"),
    ("net/ipv4/tcp_max_tw_buckets", "262144"),
    ("net/ipv4/tcp_mem", "100000\t200000\t400000"),
    ("net/netfilter/nf_conntrack_max", "262144"),
    ("kernel/io_uring_disabled", "0"),
    ("vm/max_map_count", "65530"),
];

struct Fake {
    dir: PathBuf,
}

impl Fake {
    fn new(name: &str) -> Fake {
        let dir = std::env::temp_dir().join(format!("rr-limits-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (key, value) in GOOD {
            let path = dir.join("sys").join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{value}\n")).unwrap();
        }
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            100000               200000               files\n";
        std::fs::write(dir.join("limits"), limits).unwrap();
        Fake { dir }
    }

    fn set(&self, key: &str, value: &str) {
        std::fs::write(self.dir.join("sys").join(key), format!("{value}\n")).unwrap();
    }

    fn check(&self, profile: &str) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/limits.sh");
        Command::new("bash")
            .arg(script)
            .args(["check", "--profile", profile, "--sysctl-root"])
            .arg(self.dir.join("sys"))
            .arg("--limits-file")
            .arg(self.dir.join("limits"))
            .output()
            .unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn row<'a>(stdout: &'a str, setting: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(setting))
        .unwrap_or_else(|| panic!("no {setting} row in\n{stdout}"))
}

#[test]
fn settings_that_meet_the_profile_pass() {
    let fake = Fake::new("good");
    let out = fake.check("c10k");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("LOW"), "{stdout}");
    assert!(row(&stdout, "nofile soft").contains("100000"));
    assert!(row(&stdout, "net.ipv4.tcp_mem").contains(&format!("{} bytes", 400000 * 4096)));
}

#[test]
fn each_low_setting_is_reported_with_its_reason_and_fails_the_check() {
    let cases = [
        (
            "net/core/somaxconn",
            "128",
            "net.core.somaxconn",
            "listen() backlog",
        ),
        (
            "net/ipv4/ip_local_port_range",
            "40000 40999",
            "net.ipv4.ip_local_port_range",
            "ephemeral ports",
        ),
        (
            "net/ipv4/tcp_mem",
            "10 20 30",
            "net.ipv4.tcp_mem",
            "tcp_mem counts pages",
        ),
        (
            "kernel/io_uring_disabled",
            "2",
            "kernel.io_uring_disabled",
            "ringroom",
        ),
        (
            "net/ipv4/tcp_fin_timeout",
            "120",
            "net.ipv4.tcp_fin_timeout",
            "FIN_WAIT2",
        ),
    ];
    for (key, value, setting, reason) in cases {
        let fake = Fake::new("low");
        fake.set(key, value);
        let out = fake.check("c10k");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{setting}: {stdout}");
        assert!(row(&stdout, setting).ends_with("LOW"), "{stdout}");
        let why = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{setting}:")))
            .unwrap();
        assert!(why.contains(reason), "{why}");
        let lows = stdout.lines().filter(|l| l.ends_with("LOW")).count();
        assert_eq!(lows, 1, "only {setting} is low: {stdout}");
    }
}

#[test]
fn a_low_fd_limit_and_a_bigger_profile() {
    let fake = Fake::new("c100k");
    // c100k wants 262,144 fds and wider port ranges than these.
    let out = fake.check("c100k");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(row(&stdout, "nofile soft").ends_with("LOW"));
    assert!(row(&stdout, "net.core.somaxconn").ends_with("LOW"));
}

#[test]
fn absent_settings_are_not_applicable_and_unknown_profiles_are_refused() {
    let fake = Fake::new("absent");
    std::fs::remove_file(fake.dir.join("sys/net/netfilter/nf_conntrack_max")).unwrap();
    let out = fake.check("c10k");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(row(&stdout, "net.netfilter.nf_conntrack_max").ends_with("n/a"));
    let out = fake.check("c5m");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("have: c100k c10k c1m"));
}

/// `apply` then `revert` for the net.* settings, inside a network namespace the
/// test makes (those sysctls are per namespace, so the machine is untouched),
/// with the drop-ins and the state file in a temporary directory.
#[test]
fn apply_then_revert_restores_every_value_exactly() {
    let ns = format!("rr-tuning-{}", std::process::id());
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .unwrap()
            .success(),
        "needs root and iproute2"
    );
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _del = Del(ns.clone());
    let dir = std::env::temp_dir().join(format!("rr-tuning-etc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/limits.sh");
    let in_ns = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", &ns, "bash"])
            .arg(&script)
            .args(args)
            .arg("--etc-root")
            .arg(dir.join("etc"))
            .arg("--state")
            .arg(dir.join("state"))
            .output()
            .unwrap()
    };
    let read_net = || -> Vec<(String, String)> {
        [
            "core/somaxconn",
            "ipv4/tcp_max_syn_backlog",
            "ipv4/ip_local_port_range",
            "ipv4/tcp_fin_timeout",
            "ipv4/tcp_max_tw_buckets",
        ]
        .iter()
        .map(|k| {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "cat", &format!("/proc/sys/net/{k}")])
                .output()
                .unwrap();
            (
                k.to_string(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        })
        .collect()
    };
    let before = read_net();

    let dry = in_ns(&["apply", "--profile", "c100k", "--only", "net.", "--dry-run"]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would set net.core.somaxconn"));
    assert_eq!(read_net(), before, "a dry run changes nothing");
    assert!(!dir.join("state").exists());

    let apply = in_ns(&["apply", "--profile", "c100k", "--only", "net."]);
    let stdout = String::from_utf8_lossy(&apply.stdout);
    assert!(
        apply.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let after = read_net();
    let get = |v: &[(String, String)], k: &str| v.iter().find(|(n, _)| n == k).unwrap().1.clone();
    assert_eq!(get(&after, "core/somaxconn"), "65535");
    assert_eq!(
        get(&after, "ipv4/ip_local_port_range")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1024", "65535"]
    );
    assert_eq!(get(&after, "ipv4/tcp_fin_timeout"), "30");
    let dropin = std::fs::read_to_string(dir.join("etc/sysctl.d/90-ringroom.conf")).unwrap();
    assert!(dropin.contains("net.core.somaxconn = 65535"), "{dropin}");
    assert!(
        !dropin.contains("vm."),
        "--only net. keeps to net.*: {dropin}"
    );
    // A second apply before a revert would lose the original values: refused.
    assert_eq!(
        in_ns(&["apply", "--profile", "c100k", "--only", "net."])
            .status
            .code(),
        Some(1)
    );
    // Applying never lowers: check now passes for the net.* settings it set.
    let check = Command::new("ip")
        .args(["netns", "exec", &ns, "bash"])
        .arg(&script)
        .args(["check", "--profile", "c100k"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(row(&table, "net.core.somaxconn").ends_with("OK"), "{table}");

    let revert = in_ns(&["revert"]);
    assert!(
        revert.status.success(),
        "{}",
        String::from_utf8_lossy(&revert.stderr)
    );
    let restored = read_net();
    for ((k, b), (_, r)) in before.iter().zip(&restored) {
        let (b, r): (Vec<&str>, Vec<&str>) = (
            b.split_whitespace().collect(),
            r.split_whitespace().collect(),
        );
        assert_eq!(b, r, "{k} restored exactly");
    }
    assert!(
        !dir.join("etc/sysctl.d/90-ringroom.conf").exists(),
        "drop-in removed"
    );
    assert!(!dir.join("state").exists(), "state removed");
    let _ = std::fs::remove_dir_all(&dir);
}

impl Fake {
    fn check_plan(&self, profile: &str, connections: &str, available_kb: u64) -> Output {
        std::fs::write(
            self.dir.join("meminfo"),
            format!("MemTotal:       25000000 kB\nMemAvailable:   {available_kb} kB\n"),
        )
        .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/limits.sh");
        Command::new("bash")
            .arg(script)
            .args(["check", "--profile", profile, "--connections", connections])
            .arg("--sysctl-root")
            .arg(self.dir.join("sys"))
            .arg("--limits-file")
            .arg(self.dir.join("limits"))
            .arg("--meminfo")
            .arg(self.dir.join("meminfo"))
            .output()
            .unwrap()
    }
}

#[test]
fn the_memory_plan_for_n_connections_fits_or_is_refused() {
    let fake = Fake::new("plan");
    fake.set("net/ipv4/ip_local_port_range", "1024\t65535");
    // 24 GB available: a million loopback connections fit (about 9.7 GiB).
    let out = fake.check_plan("c10k", "1000000", 24_000_000);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("plan for 1000000 connections, both ends on this machine"),
        "{stdout}"
    );
    assert!(
        row_in_plan(&stdout, "kernel: 2 sockets a connection").ends_with(" 9277 MiB"),
        "{stdout}"
    );
    assert!(
        row_in_plan(&stdout, "total").ends_with(" 9884 MiB"),
        "{stdout}"
    );
    assert!(stdout.contains("  fits, with "), "{stdout}");
    assert!(
        stdout.contains("source addresses: at least 16 (64512 ephemeral ports each"),
        "{stdout}"
    );
    // The fake's conntrack table (262,144) is smaller than the run.
    assert!(
        stdout.contains("conntrack: the table holds 262144 entries"),
        "{stdout}"
    );
    fake.set("net/netfilter/nf_conntrack_max", "4194304");
    let out = fake.check_plan("c10k", "1000000", 24_000_000);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("conntrack:"));

    // 8 GB available: refused, exit 3, whatever else is OK.
    let out = fake.check_plan("c10k", "1000000", 8_000_000);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("DOES NOT FIT: 9884 MiB wanted, 7032 MiB usable"),
        "{stdout}"
    );
    // A plan that fits does not hide a LOW setting (exit 1).
    let out = fake.check_plan("c100k", "100000", 24_000_000);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fits, with"));
    let out = fake.check_plan("c10k", "a lot", 24_000_000);
    assert_eq!(out.status.code(), Some(2));
}

fn row_in_plan<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label} line in\n{stdout}"))
}

/// The c1m profile's settings, applied to and reverted on the fake tree.
#[test]
fn the_c1m_profile_applies_and_reverts_on_a_fake_tree() {
    let fake = Fake::new("c1m");
    fake.set("net/ipv4/tcp_max_orphans", "131072");
    fake.set("net/netfilter/nf_conntrack_buckets", "262144");
    fake.set("net/ipv4/tcp_max_tw_buckets", "131072");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/limits.sh");
    let run = |args: &[&str]| {
        Command::new("bash")
            .arg(&script)
            .args(args)
            .arg("--sysctl-root")
            .arg(fake.dir.join("sys"))
            .arg("--etc-root")
            .arg(fake.dir.join("etc"))
            .arg("--state")
            .arg(fake.dir.join("state"))
            .output()
            .unwrap()
    };
    let read = |key: &str| {
        std::fs::read_to_string(fake.dir.join("sys").join(key))
            .unwrap()
            .trim()
            .to_string()
    };
    let keys = [
        ("net/netfilter/nf_conntrack_max", "262144", "4194304"),
        ("net/netfilter/nf_conntrack_buckets", "262144", "1048576"),
        ("net/ipv4/tcp_max_tw_buckets", "131072", "1048576"),
        ("net/ipv4/tcp_max_orphans", "131072", "1048576"),
        ("net/core/somaxconn", "4096", "65535"),
    ];
    let out = run(&["apply", "--profile", "c1m"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (key, _, applied) in keys {
        assert_eq!(read(key), applied, "{key}:\n{stdout}");
    }
    let dropin = std::fs::read_to_string(fake.dir.join("etc/sysctl.d/90-ringroom.conf")).unwrap();
    assert!(
        dropin.contains("net.netfilter.nf_conntrack_max = 4194304"),
        "{dropin}"
    );
    let out = run(&["revert"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (key, before, _) in keys {
        assert_eq!(read(key), before, "{key} restored");
    }
    assert!(!fake.dir.join("etc/sysctl.d/90-ringroom.conf").exists());
}
