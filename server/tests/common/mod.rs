//! A server process on loopback and a small blocking client, for the
//! integration tests. Every wait is bounded.
#![allow(dead_code)]

pub mod connect;
pub mod fast_reader;
pub mod files;
pub mod nats;

#[allow(unused_imports)]
pub use fast_reader::FastReader;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use proto::{Decoder, ErrorCode, Frame, FrameType};

/// Longest any single wait in these tests may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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

/// A `ringroom-server` child process.
pub struct Server {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its metrics are served.
    pub metrics: SocketAddr,
    /// Where it answers discovery datagrams.
    pub discovery: SocketAddr,
    /// The engine it runs, as its ready line names it (uring or epoll).
    pub engine: String,
    /// Its stderr, once it has exited.
    pub stderr: String,
    /// Its ready line.
    ready: String,
}

impl Server {
    /// Starts the server on 127.0.0.1 with a free port (unless `args` name a
    /// `--listen`) and `args`, on the engine [`engine`] names unless `args`
    /// name one.
    pub fn start(args: &[&str]) -> Server {
        Self::start_under(&[], args)
    }

    /// As [`Server::start`], run by the command `wrapper` (e.g. `prlimit
    /// --nofile=1000 --`, or the seccomp launcher) when it is not empty.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Server {
        let chosen = (!args.contains(&"--engine")).then(engine);
        let listen = (!args.contains(&"--listen")).then_some(["--listen", "127.0.0.1:0"]);
        let mut child = server_command(wrapper)
            .args(listen.iter().flatten())
            .args(["--metrics", "127.0.0.1:0", "--stats-interval", "0"])
            .args(chosen.iter().flat_map(|e| ["--engine", e]))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringroom-server");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        if !line.starts_with("ringroom-server ready:") {
            let err = read_all(child.stderr.take().unwrap());
            panic!("server did not start: {line}{err}");
        }
        if let Some(e) = chosen.filter(|e| *e != "auto") {
            assert!(line.contains(&format!("engine {e},")), "{line}");
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
            metrics: field("metrics "),
            discovery: field("discovery "),
            engine: line[line
                .find("engine ")
                .expect("the ready line names the engine")
                + 7..]
                .split(',')
                .next()
                .unwrap()
                .to_string(),
            stderr: String::new(),
            ready: line.clone(),
        }
    }

    /// The line it printed when ready.
    pub fn ready_line(&self) -> &str {
        &self.ready
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Connects a client.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The Prometheus text of the metrics endpoint.
    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect(self.metrics).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// A metric summed over shards: `name` with an optional `reason`.
    pub fn metric(&self, name: &str, reason: Option<&str>) -> u64 {
        self.metrics_text()
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| reason.is_none_or(|r| l.contains(&format!("reason=\"{r}\""))))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// Waits until `metric` reaches `want`, or panics after the timeout.
    pub fn wait_metric(&self, name: &str, reason: Option<&str>, want: u64) {
        let start = Instant::now();
        loop {
            let got = self.metric(name, reason);
            if got >= want {
                return;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "{name} {reason:?} stayed at {got}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name (`TERM`, `INT`), with kill(1): no unsafe here.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (bounded), keeping its stderr.
    pub fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.stderr = read_all(child.stderr.take().unwrap());
                return status;
            }
            if start.elapsed() > TIMEOUT {
                child.kill().unwrap();
                panic!("server did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ringroom-server` with `args` (and no stats line) until it exits on
/// its own, within [`TIMEOUT`]: its status, stdout and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_exit_under(&[], args)
}

/// As [`run_to_exit`], run by the command `wrapper` when it is not empty.
pub fn run_to_exit_under(wrapper: &[&str], args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = server_command(wrapper)
        .args(["--stats-interval", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            child.kill().unwrap();
            panic!("the server kept running: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    (status, out, err)
}

/// The server's command line, run by `wrapper` when it is not empty.
fn server_command(wrapper: &[&str]) -> Command {
    let server = env!("CARGO_BIN_EXE_ringroom-server");
    match wrapper.split_first() {
        None => Command::new(server),
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(server);
            command
        }
    }
}

/// Everything a child's pipe holds until it closes.
fn read_all(mut pipe: impl Read) -> String {
    let mut text = String::new();
    pipe.read_to_string(&mut text).unwrap();
    text
}

/// A frame received, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    /// Its type.
    pub ty: FrameType,
    /// Its flags byte (MORE, ECHO, CANCEL).
    pub flags: u8,
    /// Its stream id.
    pub stream: u16,
    /// Its payload, as on the wire.
    pub payload: Vec<u8>,
}

impl Got {
    /// The code of an ERROR or GOAWAY.
    pub fn code(&self) -> ErrorCode {
        assert!(
            matches!(self.ty, FrameType::Error | FrameType::GoAway),
            "{self:?}"
        );
        ErrorCode(u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A blocking client.
pub struct Client {
    pub stream: TcpStream,
    decoder: Decoder,
    pending: VecDeque<Got>,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        Self::from_stream(stream)
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream,
            decoder: Decoder::new(u32::MAX),
            pending: VecDeque::new(),
        }
    }

    /// Sends frames in one write.
    pub fn send(&mut self, frames: &[Frame<'_>]) {
        let mut bytes = Vec::new();
        for f in frames {
            f.encode_to_vec(&mut bytes).unwrap();
        }
        self.stream.write_all(&bytes).unwrap();
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next frame, or `None` at EOF (or a reset).
    pub fn recv(&mut self) -> Option<Got> {
        loop {
            if !self.pending.is_empty() {
                return self.pending.pop_front();
            }
            let mut buf = [0u8; 65536];
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read failed: {e}"),
            };
            if n == 0 {
                return None;
            }
            self.decode(&buf[..n]);
        }
    }

    /// The next frame, or `None` if none came within the read timeout.
    /// EOF is a failure.
    pub fn try_recv(&mut self) -> Option<Got> {
        loop {
            if let Some(got) = self.pending.pop_front() {
                return Some(got);
            }
            let mut buf = [0u8; 65536];
            let n = match self.stream.read(&mut buf) {
                Ok(0) => panic!("the server closed the connection"),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) => panic!("read failed: {e}"),
            };
            self.decode(&buf[..n]);
        }
    }

    fn decode(&mut self, mut input: &[u8]) {
        while let Some(frame) = self.decoder.decode(&mut input).unwrap() {
            let mut bytes = Vec::new();
            frame.encode_to_vec(&mut bytes).unwrap();
            self.pending.push_back(Got {
                ty: frame.frame_type(),
                flags: bytes[5],
                stream: u16::from_be_bytes([bytes[6], bytes[7]]),
                payload: bytes[8..].to_vec(),
            });
        }
    }

    /// The next frame, which must exist.
    pub fn expect(&mut self, ty: FrameType) -> Got {
        let got = self
            .recv()
            .unwrap_or_else(|| panic!("EOF while waiting for {ty:?}"));
        assert_eq!(got.ty, ty, "{got:?}");
        got
    }

    /// The next frame must be an ERROR with `code`, then EOF.
    pub fn expect_fatal(&mut self, code: ErrorCode) {
        let got = self.expect(FrameType::Error);
        assert_eq!(
            got.code(),
            code,
            "{}",
            String::from_utf8_lossy(&got.payload[2..])
        );
        assert_eq!(
            self.recv(),
            None,
            "connection should close after a fatal error"
        );
    }

    /// PING with `payload` must come back as PONG with it.
    pub fn ping_pong(&mut self, payload: &[u8]) {
        self.send(&[Frame::Ping(payload)]);
        assert_eq!(self.expect(FrameType::Pong).payload, payload);
    }
}

impl Client {
    /// The socket, for a [`FastReader`]; nothing may be buffered here.
    pub fn into_stream(self) -> TcpStream {
        assert!(self.pending.is_empty(), "frames left in the client");
        self.stream
    }
}
