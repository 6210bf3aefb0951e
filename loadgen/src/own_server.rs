//! The server a run starts for itself when it is given no `--target`: this
//! same binary re-executed with `--internal-server`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::EngineKind;

/// The server this run started, if it started one.
pub struct OwnServer {
    child: std::process::Child,
}

impl OwnServer {
    /// Starts this binary as the server on `listen` (loopback, port 0 for
    /// any), sized for `conns`.
    pub fn start(
        listen: SocketAddr,
        conns: usize,
        engine: EngineKind,
    ) -> Result<(Self, SocketAddr), String> {
        use std::io::BufRead;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let max_conns = (conns + conns / 10 + 100).to_string();
        let mut child = std::process::Command::new(exe)
            .args([
                "--internal-server",
                "--listen",
                &listen.to_string(),
                "--metrics",
                "off",
            ])
            .args(["--engine", engine.name()])
            .args([
                "--discovery",
                "off",
                "--stats-interval",
                "0",
                "--max-conns",
                &max_conns,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("server: {e}"))?;
        let addr = crate::ready_address(&line)
            .ok_or_else(|| format!("the server did not start: {line}"))?;
        let ready = line.trim_end();
        println!(
            "loadgen's own server (pid {}): {}",
            child.id(),
            ready
                .strip_prefix("ringroom-server ready: ")
                .unwrap_or(ready)
        );
        Ok((Self { child }, addr))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal` (`TERM`, `KILL`) through kill(1): no unsafe here.
    pub fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status();
    }

    /// Waits at most `within` for it to exit; whether it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, then wait; a server that does not stop in 10 s is killed.
    pub fn stop(mut self) {
        self.signal("TERM");
        if self.wait_exit(Duration::from_secs(10)) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
