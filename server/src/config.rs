//! Command-line options, and the capacity plan derived from them and the limits.

use std::net::SocketAddr;
use std::time::Duration;

use argh::FromArgs;

use engine::{EngineChoice, EngineKind, RingMode};

/// ringroom-server: a chat-room / push server with one pinned io_uring event
/// loop (shard) per core, holding connections as io_uring direct descriptors.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// address to listen on (default 0.0.0.0:7700; port 0 picks a free port)
    #[argh(option, default = "\"0.0.0.0:7700\".parse().unwrap()")]
    pub listen: SocketAddr,

    /// shards (event-loop threads, each pinned to a core and owning one ring),
    /// at least 1; default: the cores available. Raised if --max-conns needs
    /// more fixed-file tables than that
    #[argh(option)]
    pub shards: Option<usize>,

    /// most connections open at once; one more gets ERROR OVERLOADED.
    /// Default: what the shards' fixed-file tables hold (each table is capped
    /// by RLIMIT_NOFILE)
    #[argh(option)]
    pub max_conns: Option<usize>,

    /// receive buffers per shard in its provided-buffer ring, a power of two
    /// up to 32768 (default 1024 a shard; when the fd limit makes many
    /// shards, 4096 shared out, at least 128 each)
    #[argh(option)]
    pub buffers: Option<u32>,

    /// size of each receive buffer in bytes (default 4096)
    #[argh(option, default = "4096")]
    pub buffer_size: u32,

    /// bound of each connection's control frames and whole messages queued
    /// while its socket refuses (accepts no more); past it the connection gets
    /// ERROR SLOW_CONSUMER. Bytes never offered to the socket do not count
    /// (default 1048576)
    #[argh(option, default = "1 << 20")]
    pub queue_bytes: usize,

    /// stream flow control: a publisher's reading pauses while a member holds
    /// more than this many bytes of its stream fragments not yet taken by the
    /// member's socket, and resumes below half (default 262144)
    #[argh(option, default = "256 << 10")]
    pub stream_window: usize,

    /// a connection whose socket takes no bytes for this long while data
    /// waits for it gets ERROR SLOW_CONSUMER, and publishers it held back
    /// resume (default 10000)
    #[argh(option, default = "10_000")]
    pub slow_consumer_ms: u64,

    /// a frame whose first bytes have arrived must be complete within this
    /// long, else ERROR HEARTBEAT_TIMEOUT (default: the connection's idle
    /// timeout)
    #[argh(option)]
    pub frame_timeout_ms: Option<u32>,

    /// memory each shard may hold for incomplete frames; a frame whose
    /// carry-over would exceed it gets ERROR OVERLOADED for its connection
    /// only (default 67108864)
    #[argh(option, default = "64 << 20")]
    pub partial_bytes: usize,

    /// largest frame payload accepted, announced in WELCOME (default 65536)
    #[argh(option, default = "65536")]
    pub max_payload: u32,

    /// timing-wheel tick in milliseconds: heartbeat expiry is at most this late
    /// (default 100)
    #[argh(option, default = "100")]
    pub tick_ms: u64,

    /// heartbeat interval for clients that do not ask for one (default 10000)
    #[argh(option, default = "10_000")]
    pub heartbeat_ms: u32,

    /// smallest heartbeat a HELLO may ask for (default 100)
    #[argh(option, default = "100")]
    pub min_heartbeat_ms: u32,

    /// largest heartbeat a HELLO may ask for (default 300000)
    #[argh(option, default = "300_000")]
    pub max_heartbeat_ms: u32,

    /// idle timeout as a multiple of the heartbeat interval (default 3)
    #[argh(option, default = "3")]
    pub idle_factor: u32,

    /// rooms one connection may be in; one more JOIN gets ERROR LIMIT (default 64)
    #[argh(option, default = "64")]
    pub max_rooms_per_conn: usize,

    /// rooms the server holds at once; a JOIN that would make one more gets
    /// ERROR LIMIT (default 1000000)
    #[argh(option, default = "1_000_000")]
    pub max_rooms: usize,

    /// streamed messages one connection may have open at once; one more gets
    /// ERROR LIMIT (default 16)
    #[argh(option, default = "16")]
    pub max_streams: usize,

    /// messages each shard's inbox from the other shards holds; when full,
    /// messages wait on the publishing shard, and past twice that the
    /// publisher's reading pauses until they drain (nothing is refused or
    /// lost; default 65536)
    #[argh(option, default = "65536")]
    pub channel_capacity: usize,

    /// TCP keepalive on accepted sockets: IDLE,INTVL,CNT in seconds (default off)
    #[argh(option)]
    pub tcp_keepalive: Option<Keepalive>,

    /// TCP_USER_TIMEOUT on accepted sockets in milliseconds (default off)
    #[argh(option)]
    pub tcp_user_timeout: Option<u32>,

    /// time limit in milliseconds to flush a closing connection's last frames
    /// (ERROR, GOAWAY) and, on SIGINT/SIGTERM, all connections (default 2000)
    #[argh(option, default = "2000")]
    pub drain_ms: u64,

    /// address of the Prometheus metrics endpoint (GET /metrics), or "off"
    /// (default 127.0.0.1:7702)
    #[argh(
        option,
        default = "MetricsAddr(Some(\"127.0.0.1:7702\".parse().unwrap()))"
    )]
    pub metrics: MetricsAddr,

    /// UDP address answering discovery requests, or "off" (default: the listen
    /// address with the TCP port + 1)
    #[argh(option, default = "DiscoveryAddr::Default")]
    pub discovery: DiscoveryAddr,

    /// the server's name in discovery replies, at most 64 bytes (default
    /// "ringroom")
    #[argh(option, default = "String::from(\"ringroom\")")]
    pub name: String,

    /// seconds between summary lines on stderr; 0 turns them off (default 10)
    #[argh(option, default = "10")]
    pub stats_interval: u64,

    /// the I/O engine: auto (io_uring, or epoll where io_uring is refused, with a
    /// line that says why), uring, or epoll (default auto)
    #[argh(option, default = "EngineChoice::Auto")]
    pub engine: EngineChoice,

    /// io_uring deferred-work mode: defer (SINGLE_ISSUER|DEFER_TASKRUN),
    /// coop (COOP_TASKRUN) or plain (default defer)
    #[argh(option, default = "RingMode::Defer")]
    pub ring_mode: RingMode,

    /// once a completion is ready, wait up to this many microseconds for more,
    /// so that one system call serves a batch: fewer wake-ups per message at
    /// the cost of up to this much latency (default 0; needs Linux 6.12)
    #[argh(option, default = "0")]
    pub batch_wait_us: u32,

    /// submission queue entries per ring (default 4096)
    #[argh(option, default = "4096")]
    pub sq_entries: u32,

    /// listen backlog per shard (default 4096; the kernel caps it at
    /// net.core.somaxconn)
    #[argh(option, default = "4096")]
    pub backlog: i32,

    /// rooms across nodes: NATS servers of the cluster to link to,
    /// nats://HOST:PORT[,HOST:PORT...] (default off: a single node)
    #[argh(option)]
    pub cluster: Option<String>,

    /// this node's id in the cluster, 1..65535, unique among the nodes
    /// (default: drawn at random and checked with the cluster at start)
    #[argh(option)]
    pub node_id: Option<u16>,

    /// first tokens of the cluster's NATS subjects, so that several clusters
    /// can share one NATS system (default "ringroom")
    #[argh(option, default = "String::from(\"ringroom\")")]
    pub cluster_prefix: String,

    /// a room quiet this long after this node's last message to it gets a
    /// SYNC, so that other nodes learn of a lost tail within it (default 1000)
    #[argh(option, default = "1000")]
    pub cluster_sync_ms: u64,

    /// keep-alive PING to NATS this often; two unanswered and the link is
    /// dropped and made again (default 2000)
    #[argh(option, default = "2000")]
    pub cluster_ping_ms: u64,

    /// for tests only: shard 0 panics this many milliseconds after start
    #[argh(option, hidden_help)]
    pub test_panic_after_ms: Option<u64>,

    /// for tests only: every shard sleeps this long after each batch of
    /// completions, an artificial slowdown for the comparer to catch
    #[argh(option, hidden_help)]
    pub test_delay_us: Option<u64>,
}

/// `--tcp-keepalive IDLE,INTVL,CNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
}

impl std::str::FromStr for Keepalive {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').collect();
        let [idle, interval, count] = parts[..] else {
            return Err(format!(
                "--tcp-keepalive wants IDLE,INTVL,CNT in seconds, got {s:?}"
            ));
        };
        let secs = |v: &str| -> Result<u64, String> {
            match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "--tcp-keepalive: {v:?} is not a positive whole number"
                )),
            }
        };
        Ok(Self {
            idle: Duration::from_secs(secs(idle)?),
            interval: Duration::from_secs(secs(interval)?),
            count: u32::try_from(secs(count)?).map_err(|e| e.to_string())?,
        })
    }
}

/// `--metrics ADDR` or `--metrics off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl std::str::FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|e| format!("--metrics: {s:?} is not an address or \"off\": {e}"))
    }
}

/// `--discovery ADDR`, `--discovery off`, or the default (TCP port + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscoveryAddr {
    /// The listen address with the TCP port + 1.
    Default,
    /// No discovery.
    Off,
    /// This address.
    At(SocketAddr),
}

impl std::str::FromStr for DiscoveryAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self::Off);
        }
        s.parse()
            .map(Self::At)
            .map_err(|e| format!("--discovery: {s:?} is not an address or \"off\": {e}"))
    }
}

/// Slots each table keeps beyond its share of --max-conns: the kernel spreads
/// SO_REUSEPORT accepts by hash, not evenly, and an accept beyond the limit
/// needs a slot to be told OVERLOADED.
const TABLE_SLACK_PERCENT: u64 = 10;
const TABLE_RESERVE: u64 = 64;
/// The kernel's own cap on one fixed-file table (IORING_MAX_FIXED_FILES).
const KERNEL_TABLE_MAX: u64 = 1 << 20;

/// How many shards, slots and connections this run gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Shards to start.
    pub shards: usize,
    /// Fixed-file slots per shard's ring.
    pub slots_per_shard: u32,
    /// Connections admitted at once, server-wide.
    pub max_conns: usize,
    /// Set when --shards (or the core count) had to be raised.
    pub note: Option<String>,
}

/// Process fds an epoll server keeps for itself: listeners, eventfds, epoll
/// sets, metrics and discovery sockets, stdio.
const EPOLL_FD_RESERVE: u64 = 256;

/// Fits `max_conns` into what the engine holds: io_uring fixed-file tables
/// of at most `nofile` slots each (one per shard), or, with epoll, one
/// process fd table of `nofile` shared by every shard.
pub fn plan(
    requested_shards: Option<usize>,
    cores: usize,
    max_conns: Option<usize>,
    nofile: u64,
    engine: EngineKind,
) -> Result<Plan, String> {
    let base = requested_shards.unwrap_or(cores).max(1);
    if engine == EngineKind::Epoll {
        return plan_epoll(base, max_conns, nofile);
    }
    let table = nofile.min(KERNEL_TABLE_MAX);
    if table <= TABLE_RESERVE * 2 {
        return Err(format!(
            "the fd limit (RLIMIT_NOFILE = {nofile}) caps each fixed-file table at {table} slots, \
             too few to serve; raise it (see tuning/limits.sh)"
        ));
    }
    // Connections one table holds with its slack and reserve kept free.
    let per_table = (table - TABLE_RESERVE) * 100 / (100 + TABLE_SLACK_PERCENT);
    let (shards, max_conns, note) = match max_conns {
        None => (base, base as u64 * per_table, None),
        Some(0) => return Err("--max-conns must be at least 1".into()),
        Some(want) => {
            let want = want as u64;
            let needed = want.div_ceil(per_table) as usize;
            if needed > base {
                let note = format!(
                    "{want} connections need {needed} fixed-file tables of at most {table} slots \
                     (RLIMIT_NOFILE): running {needed} shards instead of {base}"
                );
                (needed, want, Some(note))
            } else {
                (base, want, None)
            }
        }
    };
    // Each table: its share plus slack plus reserve, never above the cap.
    let share = (max_conns).div_ceil(shards as u64);
    let slots = (share * (100 + TABLE_SLACK_PERCENT) / 100 + TABLE_RESERVE).min(table);
    Ok(Plan {
        shards,
        slots_per_shard: slots as u32,
        max_conns: max_conns as usize,
        note,
    })
}

/// With epoll each connection is a process fd: the capacity is the fd
/// limit, less what the server keeps, less the slack that lets a
/// connection beyond the limit be accepted and told OVERLOADED.
fn plan_epoll(shards: usize, max_conns: Option<usize>, nofile: u64) -> Result<Plan, String> {
    let budget = nofile.saturating_sub(EPOLL_FD_RESERVE + 4 * shards as u64);
    let capacity = budget * 100 / (100 + TABLE_SLACK_PERCENT);
    if capacity < TABLE_RESERVE {
        return Err(format!(
            "the fd limit (RLIMIT_NOFILE = {nofile}) leaves the epoll engine {capacity} \
             connections, too few to serve; raise it (see tuning/limits.sh)"
        ));
    }
    let max_conns = match max_conns {
        None => capacity,
        Some(0) => return Err("--max-conns must be at least 1".into()),
        Some(want) if want as u64 > capacity => {
            return Err(format!(
                "--max-conns {want} is more than the epoll engine holds: each connection is a \
                 process fd, and RLIMIT_NOFILE = {nofile} allows {capacity}; use --engine uring \
                 (direct descriptors, past the fd limit) or raise the limit (tuning/limits.sh)"
            ))
        }
        Some(want) => want as u64,
    };
    // A shard may take more than its share (SO_REUSEPORT spreads by hash);
    // past the process limit its accept stops with EMFILE and is retried.
    let share = max_conns.div_ceil(shards as u64);
    let slots = (share * (100 + TABLE_SLACK_PERCENT) / 100 + TABLE_RESERVE).min(budget);
    Ok(Plan {
        shards,
        slots_per_shard: slots as u32,
        max_conns: max_conns as usize,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_capacity_is_what_the_tables_hold() {
        let p = plan(None, 2, None, 20_000, EngineKind::Uring).unwrap();
        assert_eq!(p.shards, 2);
        assert_eq!(p.max_conns, 2 * (19_936 * 100 / 110));
        assert!(p.slots_per_shard <= 20_000);
        assert_eq!(p.note, None);
    }

    #[test]
    fn one_hundred_thousand_fit_under_a_20000_fd_limit() {
        let p = plan(None, 2, Some(100_000), 20_000, EngineKind::Uring).unwrap();
        assert_eq!(p.shards, 6, "100,000 / 18,123 per table rounds up to 6");
        assert_eq!(p.max_conns, 100_000);
        assert!(p.slots_per_shard <= 20_000);
        assert!(p.slots_per_shard as usize * p.shards >= 110_000);
        assert!(p.note.unwrap().contains("6 shards"));
    }

    #[test]
    fn small_limits_use_small_tables() {
        let p = plan(Some(4), 2, Some(100), 20_000, EngineKind::Uring).unwrap();
        assert_eq!(p.shards, 4);
        assert_eq!(p.slots_per_shard, 25 * 110 / 100 + 64);
    }

    #[test]
    fn hopeless_limits_are_refused_with_the_reason() {
        let e = plan(None, 2, None, 100, EngineKind::Uring).unwrap_err();
        assert!(e.contains("RLIMIT_NOFILE = 100"), "{e}");
        assert!(plan(None, 2, Some(0), 20_000, EngineKind::Uring).is_err());
    }

    #[test]
    fn epoll_capacity_is_the_process_fd_limit_shared_by_the_shards() {
        let p = plan(None, 2, None, 20_000, EngineKind::Epoll).unwrap();
        assert_eq!(
            p.shards, 2,
            "epoll never adds shards: they share one fd table"
        );
        assert_eq!(p.max_conns, (20_000 - 256 - 8) * 100 / 110);
        let e = plan(None, 2, Some(100_000), 20_000, EngineKind::Epoll).unwrap_err();
        assert!(e.contains("--engine uring") && e.contains("20000"), "{e}");
        let p = plan(None, 2, Some(1_000), 20_000, EngineKind::Epoll).unwrap();
        assert_eq!(
            (p.max_conns, p.slots_per_shard),
            (1_000, 500 * 110 / 100 + 64)
        );
        assert!(plan(None, 2, None, 300, EngineKind::Epoll).is_err());
    }

    #[test]
    fn keepalive_and_metrics_options_parse() {
        let k: Keepalive = "60,10,5".parse().unwrap();
        assert_eq!(k.idle, Duration::from_secs(60));
        assert_eq!(k.count, 5);
        assert!("60,10".parse::<Keepalive>().is_err());
        assert!("60,0,5".parse::<Keepalive>().is_err());
        assert_eq!("off".parse::<MetricsAddr>().unwrap(), MetricsAddr(None));
        assert!("127.0.0.1:0".parse::<MetricsAddr>().unwrap().0.is_some());
        assert!("nowhere".parse::<MetricsAddr>().is_err());
    }
}
