//! Starting the server for the load generator's tests: loadgen's own binary
//! re-executed with --internal-server, as a run without --target does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The server command: `loadgen --internal-server` on a free loopback port,
/// with metrics, discovery and the stderr summary off, then `extra`.
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
