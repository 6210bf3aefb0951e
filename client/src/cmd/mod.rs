//! The subcommands: their arguments and what they do. Each returns its exit
//! code ([`crate::explain::exit`]).

pub mod chat;
pub mod discover;
pub mod recv;
pub mod send;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::files::inbound::Limits;
use crate::runtime::{Note, Options, Runtime};
use crate::session::{self, Event};
use crate::ui;

/// A byte count as people write it (`10MiB`, `512K`, `1000000`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a size (like 10MiB, 512K): {e}"))
}

/// A duration as people write it (`1s`, `500ms`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration (like 1s, 500ms): {e}"))
}

/// `HOST`, `HOST:PORT`, `IP`, `IP:PORT` or `[IPv6]:PORT`; the port defaults to 7700.
pub fn resolve(target: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = target.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, proto::DEFAULT_TCP_PORT));
    }
    let with_port = if target.contains(':') {
        target.to_string()
    } else {
        format!("{target}:{}", proto::DEFAULT_TCP_PORT)
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))
}

/// The name to go by: the one given, else `$USER`, else `anon`.
pub fn name_or_default(name: Option<String>) -> String {
    name.or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "anon".into())
}

/// What every subcommand connects with.
pub struct Connect {
    /// The server.
    pub addr: SocketAddr,
    /// Our name.
    pub name: String,
    /// The heartbeat asked for (0: the server's).
    pub heartbeat_ms: u32,
    /// Reconnect after a loss.
    pub reconnect: bool,
    /// Where received files go.
    pub dir: Option<PathBuf>,
    /// Largest file taken.
    pub max_file_bytes: Option<u64>,
    /// Pace of files sent.
    pub rate: Option<u64>,
}

impl Connect {
    /// The runtime for it.
    pub fn runtime(self) -> Runtime {
        Runtime::new(Options {
            addr: self.addr,
            session: session::Config {
                name: self.name,
                heartbeat_ms: self.heartbeat_ms,
                reconnect: self.reconnect,
                ..session::Config::default()
            },
            dir: self.dir,
            limits: Limits {
                max_file_bytes: self.max_file_bytes.unwrap_or(u64::MAX),
                ..Limits::default()
            },
            rate: self.rate,
            connect_timeout: Duration::from_secs(3),
        })
    }
}

/// Checks that `dir` is a folder, and deletes the partial files that
/// receivers now gone left in it (saying which); says why not (as
/// `ringroom <cmd>`).
pub fn check_dir(cmd: &str, dir: &Path) -> Result<(), u8> {
    let why = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let removed = crate::files::parts::remove_orphans(dir);
            if !removed.is_empty() {
                println!(
                    "-- removed {} partial file(s) left in {} by receivers that are gone: {}",
                    removed.len(),
                    dir.display(),
                    removed.join(", ")
                );
            }
            return Ok(());
        }
        Ok(_) => "not a folder".to_string(),
        Err(e) => e.to_string(),
    };
    eprintln!("ringroom {cmd}: {}: {why}", dir.display());
    Err(crate::explain::exit::USAGE)
}

/// Resolves `target`, makes the runtime `connect` describes for it, and
/// joins `room`; says why not (as `ringroom <cmd>`) with the exit code.
pub fn start(
    cmd: &str,
    target: &str,
    room: &str,
    connect: impl FnOnce(SocketAddr) -> Connect,
) -> Result<Runtime, u8> {
    use crate::explain::exit;
    let addr = resolve(target).map_err(|e| {
        eprintln!("ringroom {cmd}: {e}");
        exit::NO_SERVER
    })?;
    let mut rt = connect(addr).runtime();
    rt.join(room).map_err(|e| {
        eprintln!("ringroom {cmd}: {e}");
        exit::USAGE
    })?;
    Ok(rt)
}

/// SIGINT and SIGTERM raise this flag (the terminal's Ctrl-C in `send` and `recv`).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).expect("signal handlers install");
    }
    flag
}

/// Lets the server close after what we sent, at most `within`; returns
/// the notes that came meanwhile.
pub fn close(rt: &mut Runtime, within: Duration) -> Vec<Note> {
    rt.finish();
    let end = Instant::now() + within;
    let never = crossbeam_channel::never::<()>();
    let mut notes = Vec::new();
    while !rt.is_closed() && Instant::now() < end {
        rt.wait(Duration::from_millis(50), &never);
        notes.extend(std::iter::from_fn(|| rt.poll_note()));
    }
    rt.abandon();
    notes.extend(std::iter::from_fn(|| rt.poll_note()));
    // The server closing after our end is what we asked for, not news.
    notes.retain(|n| {
        !matches!(
            n,
            Note::Session(Event::Lost {
                why: session::Lost::Closed(_),
                retry_in: None
            })
        )
    });
    notes
}

/// One turn of a non-interactive command: waits a little for the network,
/// shows each note that came (through `bars`, brought up to date after),
/// and hands it to `each`; returns the exit code once a note ends the
/// session ([`session_end`]) or `each` says to stop.
pub fn step(
    rt: &mut Runtime,
    bars: &mut ui::bars::Bars,
    mut each: impl FnMut(&Note) -> Option<u8>,
) -> Option<u8> {
    rt.wait(
        Duration::from_millis(200),
        &crossbeam_channel::never::<()>(),
    );
    let mut end = None;
    while let Some(note) = rt.poll_note() {
        end = end.or(each(&note)).or(session_end(&note));
        show(bars, &note);
    }
    bars.update(rt);
    end
}

/// Takes the bars away, closes as [`close`] does, and shows what came meanwhile.
pub fn leave(rt: &mut Runtime, bars: &mut ui::bars::Bars, within: Duration) {
    while let Some(note) = rt.poll_note() {
        show(bars, &note);
    }
    bars.clear();
    for note in close(rt, within) {
        show(bars, &note);
    }
}

/// Whether a note says the session is over for good, and with which exit code.
pub fn session_end(note: &Note) -> Option<u8> {
    use crate::explain::exit;
    match note {
        Note::Session(Event::Lost {
            retry_in: None,
            why,
        }) => Some(match why {
            session::Lost::Error(..) | session::Lost::GoAway(..) => exit::SERVER_ENDED,
            _ => exit::FAILED,
        }),
        Note::Session(Event::ConnectFailed { retry_in: None, .. }) => Some(exit::NO_SERVER),
        _ => None,
    }
}

/// Prints a note's line, if it has one, through `bars` (so they are not torn).
pub fn show(bars: &ui::bars::Bars, note: &Note) {
    if let Some(line) = ui::describe(note) {
        bars.println(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_port_7700() {
        assert_eq!(
            resolve("127.0.0.1").unwrap(),
            "127.0.0.1:7700".parse().unwrap()
        );
        assert_eq!(
            resolve("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(resolve("::1").unwrap(), "[::1]:7700".parse().unwrap());
        assert_eq!(resolve("localhost:81").unwrap().port(), 81);
        assert!(resolve("no such host.invalid").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("fast").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("soon").is_err());
    }
}
