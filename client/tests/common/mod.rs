//! What the client's integration tests share: a real `ringroom-server` on
//! loopback, the `ringroom` binary, terminals under tmux, files of random
//! bytes and their SHA-256. Every wait is bounded.
#![allow(dead_code)]

pub mod raw;
pub mod tmux;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Longest any single wait in these tests may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The `ringroom` binary under test.
pub fn ringroom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringroom"))
}

/// The path of the `ringroom` binary.
pub fn ringroom_path() -> &'static str {
    env!("CARGO_BIN_EXE_ringroom")
}

/// The `ringroom-server` binary of this build: next to `ringroom` (cargo
/// builds every member's binaries for `cargo test --workspace`); for
/// `cargo test -p ringroom-client` alone it is built here once.
pub fn server_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_BIN_EXE_ringroom")).parent().unwrap();
        let path = dir.join("ringroom-server");
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "ringroom-server", "--bin", "ringroom-server"])
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p ringroom-server failed");
        }
        assert!(path.exists(), "no {}", path.display());
        path
    })
}

/// The engine the suite runs the server on (`RINGROOM_TEST_ENGINE`: uring,
/// epoll or auto, as in the server's tests).
pub fn engine() -> String {
    std::env::var("RINGROOM_TEST_ENGINE").unwrap_or_else(|_| "auto".into())
}

/// A `ringroom-server` child process on loopback.
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it answers discovery.
    pub discovery: SocketAddr,
}

impl Server {
    /// A server on 127.0.0.1 with a free port, discovery on the next port up.
    pub fn start(args: &[&str]) -> Server {
        Self::start_at("127.0.0.1:0", "127.0.0.1:0", args)
    }

    /// A server on `listen`, discovery on `discovery` (`ip:0` for a free port).
    pub fn start_at(listen: &str, discovery: &str, args: &[&str]) -> Server {
        Self::spawn(&[], listen, discovery, args)
    }

    /// As [`Server::start_at`], run by `wrapper` (e.g. `ip netns exec NS`).
    pub fn spawn(wrapper: &[&str], listen: &str, discovery: &str, args: &[&str]) -> Server {
        let mut command = match wrapper.split_first() {
            None => Command::new(server_path()),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(server_path());
                c
            }
        };
        let mut child = command
            .args(["--listen", listen, "--discovery", discovery])
            .args(["--metrics", "off", "--stats-interval", "0"])
            .args(["--engine", &engine()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringroom-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if !line.starts_with("ringroom-server ready:") {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("server did not start: {line}{err}");
        }
        let field = |key: &str| -> SocketAddr {
            let rest = &line[line.find(key).unwrap() + key.len()..];
            rest.split([',', ' ', '\n'])
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        Server {
            child: Some(child),
            addr: field("listen "),
            discovery: field("discovery "),
        }
    }

    /// `HOST:PORT` for the client's command line.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// Kills it (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends it SIGTERM (it says GOAWAY and drains) and waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = wait_exit(&mut child, TIMEOUT);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `sig` (`TERM`, `INT`, `KILL`) to `pid` with kill(1): no unsafe here.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Waits at most `within` for `child` to exit: its exit code (None: it was
/// killed by a signal). Kills it and panics if it does not exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("a process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child that is killed if the test ends first.
pub struct Proc(pub Child);

impl Proc {
    /// Starts `command` with stdout and stderr to files in `dir` named `tag`.
    pub fn spawn(mut command: Command, dir: &Path, tag: &str) -> Proc {
        let out = std::fs::File::create(dir.join(format!("{tag}.out"))).unwrap();
        let err = std::fs::File::create(dir.join(format!("{tag}.err"))).unwrap();
        Proc(
            command
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start ringroom"),
        )
    }

    /// Its exit code, within `within`.
    pub fn exit_code(&mut self, within: Duration) -> Option<i32> {
        wait_exit(&mut self.0, within)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a process started with [`Proc::spawn`] printed on stdout and stderr.
pub fn output(dir: &Path, tag: &str) -> String {
    let read =
        |ext: &str| std::fs::read_to_string(dir.join(format!("{tag}.{ext}"))).unwrap_or_default();
    format!("{}{}", read("out"), read("err"))
}

/// Writes `size` random bytes to `path`; returns their SHA-256.
pub fn random_file(path: &Path, size: usize) -> [u8; 32] {
    let mut rng = fastrand::Rng::with_seed(size as u64 ^ 0x5eed);
    let mut bytes = vec![0u8; size];
    rng.fill(&mut bytes);
    std::fs::write(path, &bytes).unwrap();
    Sha256::digest(&bytes).into()
}

/// The SHA-256 of a file.
pub fn sha256_of(path: &Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher.finalize().into()
}

/// The names in `dir`, sorted, leaving out the tests' own logs.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".out") && !n.ends_with(".err"))
        .collect();
    names.sort();
    names
}

/// Waits until `done` holds, at most `within`; panics with `what` if not.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
