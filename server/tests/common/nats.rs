//! A NATS cluster of real nats-server processes on loopback, for the
//! cluster tests: servers clustered by routes, each with a client port, a
//! route port and a monitoring port, and a slow-consumer limit. The server's
//! and the load generator's tests both use this file (the latter by path).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any single wait here may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One nats-server of the cluster.
pub struct NatsServer {
    child: Option<Child>,
    /// Its client port.
    pub port: u16,
    /// Its monitoring port.
    pub http: u16,
    config: PathBuf,
}

/// Servers clustered by routes.
pub struct NatsCluster {
    /// The servers, in the order they were started.
    pub servers: Vec<NatsServer>,
}

/// A port free now, below the ephemeral range: the config names it before
/// nats-server binds it, and a port from the ephemeral range (what binding
/// port 0 gives) can be taken meanwhile by any connect on the machine (CI
/// saw "nats-server did not listen" while loadgen tests connected).
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        for _ in 0..1000 {
            let port = fastrand::u16(10_000..low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsCluster {
    /// `n` servers, fully meshed by routes; returns once each has a route
    /// to every other. `extra` is added to every server's configuration.
    pub fn start(n: usize, extra: &str) -> NatsCluster {
        let mut cluster = Self::configure(n, extra);
        for s in &mut cluster.servers {
            s.spawn();
        }
        for s in &cluster.servers {
            s.wait_routes(n - 1);
        }
        cluster
    }

    /// The same servers, configured (ports chosen) but not started.
    pub fn configure(n: usize, extra: &str) -> NatsCluster {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls = routes
            .iter()
            .map(|p| format!("\"nats://127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let dir = std::env::temp_dir().join(format!(
            "ringroom-nats-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let servers = (0..n)
            .map(|i| {
                let (port, http) = (free_port(), free_port());
                let config = dir.join(format!("nats-{i}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: nats-{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http}\n{extra}\n\
                         cluster {{\n  name: ringroom-test\n  listen: 127.0.0.1:{}\n  routes: [ {route_urls} ]\n}}\n",
                        routes[i]
                    ),
                )
                .unwrap();
                NatsServer {
                    child: None,
                    port,
                    http,
                    config,
                }
            })
            .collect();
        NatsCluster { servers }
    }

    /// `nats://` URLs of the servers, starting with server `first`.
    pub fn seeds_from(&self, first: usize) -> String {
        let n = self.servers.len();
        (0..n)
            .map(|k| format!("nats://127.0.0.1:{}", self.servers[(first + k) % n].port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl NatsServer {
    /// Starts it (again, after [`NatsServer::kill9`]).
    pub fn spawn(&mut self) {
        let log = self.config.with_extension("log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nats-server must be installed (Debian: apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap().is_some();
            assert!(
                Instant::now() < deadline && !exited,
                "nats-server did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it with SIGKILL (nothing is flushed, no goodbye to anyone).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts it again with the same configuration.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A monitoring endpoint's JSON.
    pub fn monitor(&self, path: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
        serde_json::from_str(body).unwrap()
    }

    /// Waits until it has `n` routes.
    pub fn wait_routes(&self, n: usize) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let routes = self.monitor("/routez")["num_routes"].as_u64().unwrap_or(0);
            if routes as usize >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server :{} has {routes} of {n} routes",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
    }
}
