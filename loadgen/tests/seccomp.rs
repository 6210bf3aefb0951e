//! ringroom where io_uring is refused, for real: the server and the load
//! generator run under `no-io-uring`, a seccomp filter that makes the
//! io_uring system calls fail with EPERM as Docker's default profile does.
//! `--engine auto` must fall back to epoll, say why in one line, and pass a
//! rooms run and a heartbeat run; `--engine uring` must fail and say why.
//! (The server here is loadgen's `--internal-server`: the same server code
//! as `ringroom-server`, started the way a run without --target starts it.)

mod common;

use std::process::{Command, Output};

const NO_IO_URING: &str = env!("CARGO_BIN_EXE_no-io-uring");
const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");

/// `loadgen ARGS` under the filter, to its end.
fn loadgen_without_io_uring(args: &[&str]) -> Output {
    Command::new(NO_IO_URING)
        .arg(LOADGEN)
        .args(args)
        .output()
        .expect("run no-io-uring")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_filter_refuses_io_uring_for_real() {
    // --engine uring: a clear failure naming the refusal, not a fallback.
    let out = Command::new(NO_IO_URING)
        .args([LOADGEN, "--internal-server", "--engine", "uring"])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
            "--discovery",
            "off",
        ])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("io_uring_setup was refused (EPERM)"), "{all}");
    assert!(all.contains("seccomp"), "{all}");
    assert!(!all.contains("ready"), "{all}");
}

#[test]
fn auto_falls_back_to_epoll_says_why_and_serves() {
    // The server command run by the launcher, on auto whatever the suite's engine.
    let mut server = common::server_command(Command::new(NO_IO_URING), &["--engine", "auto"]);
    server.stderr(std::process::Stdio::piped());
    let mut child = server.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("engine epoll,"), "{line}");
    let addr = loadgen::ready_address(&line).unwrap();
    // A heartbeat run from outside the filter against the epoll server.
    let out = common::loadgen_run()
        .args(["--target", &addr.to_string(), "--scenario", "idle"])
        .args([
            "--conns",
            "300",
            "--heartbeat-ms",
            "1000",
            "--duration",
            "3",
        ])
        .args(["--source", "127.0.0.70", "--out"])
        .arg(std::env::temp_dir().join(format!("loadgen-seccomp-hb-{}", std::process::id())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, text(&out));
    child.kill().unwrap();
    let err = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("engine: epoll, since io_uring is refused here"))
            .count(),
        1,
        "one line names why: {stderr}"
    );
}

#[test]
fn a_rooms_run_and_a_heartbeat_run_pass_inside_the_filter() {
    for (name, args) in [
        (
            "rooms",
            &["--scenario", "rooms", "--conns", "300", "--rooms", "10"][..],
        ),
        (
            "idle",
            &[
                "--scenario",
                "idle",
                "--conns",
                "500",
                "--heartbeat-ms",
                "1000",
            ][..],
        ),
    ] {
        let out_dir =
            std::env::temp_dir().join(format!("loadgen-seccomp-{name}-{}", std::process::id()));
        let dir = out_dir.to_str().unwrap();
        let mut all_args = vec!["--duration", "3", "--out", dir];
        all_args.extend_from_slice(args);
        // No --engine: auto, for the workers and the server loadgen starts.
        let out = loadgen_without_io_uring(&all_args);
        let all = text(&out);
        assert!(out.status.success(), "{name}: {all}");
        assert!(
            all.contains("engine: epoll, since io_uring is refused here"),
            "{name}: {all}"
        );
        assert!(
            all.contains("engine epoll, shards"),
            "the server too: {all}"
        );
        let record = loadgen::results::RunRecord::read(&out_dir).unwrap();
        assert_eq!(record.summary.config.engine, "epoll", "{name}");
        std::fs::remove_dir_all(&out_dir).unwrap();
    }
    // And the workers refuse io_uring clearly when told to use it.
    let out = loadgen_without_io_uring(&["--engine", "uring", "--conns", "10"]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("refused (EPERM)"), "{all}");
}

/// The README's benchmark command, as a user in a container runs it.
#[test]
fn the_readme_benchmark_command_runs_inside_the_filter() {
    let out_dir = std::env::temp_dir().join(format!("loadgen-seccomp-c10k-{}", std::process::id()));
    let out = loadgen_without_io_uring(&["--scenario", "c10k", "--out", out_dir.to_str().unwrap()]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let record = loadgen::results::RunRecord::read(&out_dir).unwrap();
    assert_eq!(record.summary.counts.connected, 10_000);
    assert_eq!(record.summary.config.engine, "epoll");
    std::fs::remove_dir_all(&out_dir).unwrap();
}
