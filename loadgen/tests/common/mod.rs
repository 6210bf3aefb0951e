//! Starting the server for the load generator's tests: loadgen's own binary
//! re-executed with --internal-server, as a run without --target does.
#![allow(dead_code)]

#[path = "../../../server/tests/common/nats.rs"]
pub mod nats;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The server command: `loadgen --internal-server` on a free loopback port,
/// with metrics, discovery and the stderr summary off, on the suite's
/// [`engine`] unless `extra` names one, then `extra`.
pub fn server_command(mut prefix: Command, extra: &[&str]) -> Command {
    prefix
        .arg(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--internal-server",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "off",
        ])
        .args(["--discovery", "off", "--stats-interval", "0"])
        .args(
            Some(["--engine", engine()])
                .filter(|_| !extra.contains(&"--engine"))
                .into_iter()
                .flatten(),
        )
        .args(extra)
        .stdout(Stdio::piped());
    prefix
}

/// Spawns `cmd` (a server command) and waits for its ready line.
pub fn spawn_server(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = loadgen::ready_address(&line).unwrap_or_else(|| panic!("no ready line: {line:?}"));
    (child, addr)
}

/// A server on loopback with `extra` options.
pub fn start_server(extra: &[&str]) -> (Child, SocketAddr) {
    // `env` with no arguments just runs the command that follows.
    spawn_server(server_command(Command::new("env"), extra))
}

/// The engine the suite runs on: `RINGROOM_TEST_ENGINE` (uring, epoll or
/// auto; CI runs the suite once with each of uring and epoll), default auto.
pub fn engine() -> &'static str {
    match std::env::var("RINGROOM_TEST_ENGINE").as_deref() {
        Ok("uring") => "uring",
        Ok("epoll") => "epoll",
        Ok("auto") | Err(_) => "auto",
        Ok(other) => panic!("RINGROOM_TEST_ENGINE={other}: uring, epoll or auto"),
    }
}

/// [`engine`] resolved, for a worker started in the test's own process.
pub fn engine_kind() -> engine::EngineKind {
    let choice = engine().parse().expect("a known engine");
    engine::resolve(choice, engine::RingMode::Defer)
        .expect("the engine starts")
        .0
}

/// A `loadgen` run command on the suite's engine.
pub fn loadgen_run() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args(["--engine", engine()]);
    command
}

/// Runs `command` (a [`loadgen_run`]) with `--out out`, asserts that it
/// passed (showing its output if not), and returns its stdout and the
/// summary.json it wrote.
pub fn run_passing(mut command: Command, out: &std::path::Path) -> (String, serde_json::Value) {
    let run = command.arg("--out").arg(out).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap())
        .expect("summary.json");
    (stdout, summary)
}

/// Runs loadgen with `args` and asserts that it refuses, saying `says` on stderr.
pub fn assert_refused(args: &[&str], says: &str) {
    let out = loadgen_run().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} ran: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
}
