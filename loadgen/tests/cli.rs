//! The command line as a hurried user meets it: help that names everything,
//! output cut by `| head`, durations and rates with units, clear refusals.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_names_every_subcommand_and_scenario() {
    let out = loadgen(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "loadgen compare A B",
        "loadgen merge DIR",
        "loadgen report DIR",
        "idle",
        "ping",
        "rooms",
        "c10k",
        "c100k",
        "c1m",
    ] {
        assert!(text.contains(word), "--help lacks {word:?}:\n{text}");
    }
}

#[test]
fn output_cut_by_the_reader_ends_quietly() {
    for args in [&["--help"][..], &["compare", "--help"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // `| head` that has read enough: the pipe is closed
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success() || status.signal() == Some(13),
            "{args:?}: {status:?}, stderr {err:?}"
        );
        assert!(
            !err.contains("Broken pipe") && !err.contains("panicked"),
            "{err}"
        );
    }
}

#[test]
fn durations_and_rates_take_units_and_bad_ones_are_named() {
    let out = loadgen(&["--duration", "15x", "--conns", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--duration") && err.contains("unknown unit"),
        "{err}"
    );
    let out = loadgen(&["--ping-rate", "3/d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ping-rate") && err.contains("/d"), "{err}");
    // A short run, every value with its unit, against loadgen's own server.
    let dir = std::env::temp_dir().join(format!("loadgen-units-{}", std::process::id()));
    let out = loadgen(&[
        "--scenario",
        "ping",
        "--conns",
        "20",
        "--connect-rate",
        "600/m",
        "--ping-rate",
        "120/m",
        "--duration",
        "2s",
        "--source",
        "127.0.0.60",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["config"]["duration_s"], 2);
    assert_eq!(v["config"]["ping_rate"], 2.0);
    assert_eq!(v["config"]["connect_rate"], 10.0);
    // The load generator's own memory, beside the server's.
    assert!(
        v["loadgen_rss_bytes"].as_u64().unwrap() > 1 << 20,
        "{summary}"
    );
    assert!(v["loadgen_peak_rss_growth_bytes_per_connection"]
        .as_u64()
        .is_some());
    assert!(
        text.contains("| loadgen RSS / peak growth per connection |"),
        "{text}"
    );
    // The pictures, titled with the run.
    let plot = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    assert!(
        plot.contains("ping (ringroom): 20 connections, 2/s PINGs each"),
        "{plot}"
    );
    let timeline = std::fs::read_to_string(dir.join("timeline.svg")).unwrap();
    assert!(timeline.contains("connections up") && timeline.contains("hold from"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_ipv6_target_gets_an_ipv6_source_and_a_family_mismatch_is_refused() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--internal-server",
            "--listen",
            "[::1]:0",
            "--metrics",
            "off",
        ])
        .args(["--discovery", "off", "--stats-interval", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = loadgen::ready_address(&line).expect("ready line");
    assert!(addr.is_ipv6(), "{line}");
    let target = addr.to_string();
    let dir = std::env::temp_dir().join(format!("loadgen-v6-{}", std::process::id()));
    let out = loadgen(&[
        "--target",
        &target,
        "--scenario",
        "ping",
        "--conns",
        "10",
        "--duration",
        "1s",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("| connections up / asked | 10 / 10 |"),
        "{text}"
    );
    let out = loadgen(&[
        "--target",
        &target,
        "--conns",
        "10",
        "--source",
        "127.0.0.1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach IPv6 targets") && err.contains("::1"),
        "{err}"
    );
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
