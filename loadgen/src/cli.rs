//! The command line of a run: its options, the scenarios, and the one plan
//! they make once the preset and the flags are combined and checked.

use std::net::SocketAddr;

use argh::FromArgs;

use crate::units::{Rate, Seconds};
use crate::wire::Protocol;

/// A `--scenario`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// PINGs at the heartbeat the server grants.
    Idle,
    /// PINGs at a fixed rate.
    Ping,
    /// Members of rooms, one publisher each.
    Rooms,
    /// 10,000 connections pinging 3/s for 15 s.
    C10k,
    /// 100,000 idle connections for 60 s.
    C100k,
    /// 1,000,000 idle connections on a 30 s heartbeat for 60 s.
    C1m,
    /// Rooms, with members leaving and new ones coming at a steady rate.
    Churn,
}

impl Scenario {
    /// Every scenario, in the order --help names them.
    pub const ALL: [Scenario; 7] = [
        Self::Idle,
        Self::Ping,
        Self::Rooms,
        Self::Churn,
        Self::C10k,
        Self::C100k,
        Self::C1m,
    ];

    /// Its name on the command line and in summary.json.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Ping => "ping",
            Self::Rooms => "rooms",
            Self::C10k => "c10k",
            Self::C100k => "c100k",
            Self::C1m => "c1m",
            Self::Churn => "churn",
        }
    }

    /// Whether it is a preset (its numbers can be changed by the flags).
    pub fn is_preset(self) -> bool {
        matches!(self, Self::C10k | Self::C100k | Self::C1m)
    }

    /// Whether its connections are members of rooms.
    pub fn has_rooms(self) -> bool {
        matches!(self, Self::Rooms | Self::Churn)
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                format!("unknown scenario {s:?}: idle, ping, rooms, churn, c10k, c100k or c1m")
            })
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// loadgen: opens many client connections to a ringroom server (or, with
/// --protocol, to redis, nats or mosquitto), keeps them alive, and measures.
#[derive(FromArgs)]
#[argh(
    note = "Scenarios: idle, ping, rooms, churn, and the presets c10k, c100k and c1m.\n\n\
            Subcommands (each with its own --help):\n  \
            loadgen compare A B   is run (or release) B slower than A, beyond the noise?\n  \
            loadgen merge DIR...  adds up the results of several load generators\n  \
            loadgen report DIR    rebuilds the index of bench-results/"
)]
pub struct Args {
    /// server address (repeat to spread over several)
    #[argh(option)]
    pub target: Vec<SocketAddr>,

    /// connections to open (default 1000; c10k 10000; c100k 100000; c1m
    /// 1000000)
    #[argh(option)]
    pub conns: Option<usize>,

    /// connections opened per second, in all: 5000, 5000/s, 300000/m
    /// (default 5000; c100k and c1m 20000)
    #[argh(option)]
    pub connect_rate: Option<Rate>,

    /// how long to hold the connections once all are open, whole seconds:
    /// 15, 15s, 2m (default 10s; c10k 15s; c100k and c1m 60s)
    #[argh(option)]
    pub duration: Option<Seconds>,

    /// source addresses: addresses, ranges (127.0.0.2-127.0.0.40) and CIDRs,
    /// comma-separated (default 127.0.0.1; c10k 127.0.0.2-127.0.0.9; c100k
    /// 127.0.1.0/26; c1m 127.1.0.0/26; a loopback run the default does not
    /// fit takes enough addresses from 127.2.0.0 up)
    #[argh(option)]
    pub source: Option<String>,

    /// idle (heartbeats at the granted interval), ping (a fixed rate), rooms
    /// (members of --rooms rooms, one publisher each), churn (rooms, members
    /// leaving and new ones coming at --churn-rate), or the presets c10k
    /// (10,000 connections pinging 3/s for 15 s), c100k (100,000 idle
    /// connections for 60 s) and c1m (1,000,000 idle connections on a 30 s
    /// heartbeat for 60 s; see tuning/limits.sh --profile c1m) (default c10k)
    #[argh(option, default = "Scenario::C10k")]
    pub scenario: Scenario,

    /// PINGs per connection in the ping scenario: 3, 3/s, 30/m (default 1/s;
    /// c10k 3/s)
    #[argh(option)]
    pub ping_rate: Option<Rate>,

    /// rooms in the rooms scenario: connection i joins room i % rooms, and the
    /// first member of each room publishes (default 100)
    #[argh(option, default = "100")]
    pub rooms: u64,

    /// PUBLISHes per room in the rooms scenario: 1, 1/s, 60/m (default 1/s)
    #[argh(option, default = "Rate(1.0)")]
    pub publish_rate: Rate,

    /// rooms scenario on several --target (the nodes of a cluster): every
    /// publisher on the target of this index, 0 for the first (default: the
    /// publishers spread over the targets, as the members are)
    #[argh(option)]
    pub publishers_on: Option<usize>,

    /// in the churn scenario, the members replaced a second, as a share of
    /// the connections: 1%, 1%/s, 60%/m (default 1%/s)
    #[argh(option, default = "crate::units::PercentRate(1.0)")]
    pub churn_rate: crate::units::PercentRate,

    /// PUBLISH body size in bytes, at least 16 (default 64)
    #[argh(option, default = "64")]
    pub payload: usize,

    /// heartbeat to ask for in HELLO, ms (default 0: the server's; c1m
    /// 30000, so the steady PING load of a million fits two cores)
    #[argh(option, default = "0")]
    pub heartbeat_ms: u32,

    /// worker threads, each with its own engine (default: the cores)
    #[argh(option)]
    pub workers: Option<usize>,
    /// the I/O engine of the workers (and of loadgen's own server): auto
    /// (io_uring, or epoll where io_uring is refused), uring, or epoll
    /// (default auto)
    #[argh(option, default = "engine::EngineChoice::Auto")]
    pub engine: engine::EngineChoice,
    /// processes to split the run over, their results added up as `loadgen
    /// merge` does (default 1; with epoll, whose connections are process
    /// fds, as many as RLIMIT_NOFILE needs)
    #[argh(option)]
    pub processes: Option<usize>,

    /// do not reconnect lost or failed connections (by default they reconnect
    /// with jittered exponential backoff, and are counted)
    #[argh(switch)]
    pub no_reconnect: bool,

    /// a reconnect storm: kill@SECONDS or term@SECONDS sends loadgen's own
    /// server SIGKILL (or SIGTERM) that many seconds into the run and starts
    /// it again on the same address; the summary says when every
    /// connection was back (needs no --target)
    #[argh(option)]
    pub storm: Option<crate::storm::StormSpec>,

    /// with --storm: milliseconds between the server's exit and its restart
    /// (default 1000)
    #[argh(option, default = "1000")]
    pub storm_restart_ms: u64,

    /// process id of the server, to report its CPU time and memory
    #[argh(option)]
    pub server_pid: Option<u32>,

    /// wire protocol: ringroom (default), or a peer server's for comparison:
    /// redis (RESP), nats or mqtt (3.1.1); peers need --target
    #[argh(option, default = "String::from(\"ringroom\")")]
    pub protocol: String,

    /// folder for the results: summary.json, .hgrm, .hlog, plot.svg,
    /// timeline.svg
    /// (default bench-results/local/SCENARIO-TIMESTAMP/)
    #[argh(option)]
    pub out: Option<std::path::PathBuf>,
}

/// A run's settings once the preset and the flags are combined.
pub struct Plan {
    /// The wire protocol.
    pub protocol: Protocol,
    /// Whether connections PING at the heartbeat interval only.
    pub idle: bool,
    /// Connections to open.
    pub conns: usize,
    /// Connects per second, in all.
    pub connect_rate: f64,
    /// Seconds to hold once all are open.
    pub duration: u64,
    /// `--source`, or the scenario's default.
    pub source: String,
    /// PINGs per second per connection (ping scenarios).
    pub ping_rate: f64,
    /// The heartbeat asked for in HELLO (0: the server's).
    pub heartbeat_ms: u32,
}

/// The run `args` ask for: the scenario's preset, overridden by the flags,
/// every value checked.
pub fn plan(args: &Args) -> Result<Plan, String> {
    let (idle, conns, rate, duration, source, ping) = match args.scenario {
        Scenario::C10k => (false, 10_000, 10_000.0, 15, "127.0.0.2-127.0.0.9", 3.0),
        Scenario::C100k => (true, 100_000, 20_000.0, 60, "127.0.1.0/26", 1.0),
        Scenario::C1m => (true, 1_000_000, 20_000.0, 60, "127.1.0.0/26", 1.0),
        Scenario::Ping => (false, 1000, 5000.0, 10, "127.0.0.1", 1.0),
        Scenario::Idle => (true, 1000, 5000.0, 10, "127.0.0.1", 1.0),
        Scenario::Rooms => (true, 1000, 5000.0, 10, "127.0.0.1", 1.0),
        Scenario::Churn => (true, 1000, 5000.0, 20, "127.0.0.1", 1.0),
    };
    let protocol: Protocol = args.protocol.parse()?;
    if protocol != Protocol::Ringroom && args.target.is_empty() {
        return Err(format!(
            "--protocol {} needs --target (and --server-pid for its CPU and memory): \
             loadgen starts only ringroom itself; bench-results/peers.sh starts the peers",
            protocol.name()
        ));
    }
    let plan = Plan {
        protocol,
        idle,
        conns: args.conns.unwrap_or(conns),
        connect_rate: args.connect_rate.map_or(rate, |r| r.0),
        duration: args.duration.map_or(duration, |d| d.0),
        source: args.source.clone().unwrap_or_else(|| source.to_string()),
        ping_rate: args.ping_rate.map_or(ping, |r| r.0),
        heartbeat_ms: match (args.heartbeat_ms, args.scenario) {
            (0, Scenario::C1m) => 30_000,
            (asked, _) => asked,
        },
    };
    if plan.conns == 0 || plan.connect_rate <= 0.0 || plan.ping_rate <= 0.0 {
        return Err("--conns, --connect-rate and --ping-rate must be positive".into());
    }
    if args.scenario.has_rooms()
        && (args.rooms == 0
            || args.rooms > plan.conns as u64
            || args.publish_rate.0 <= 0.0
            || args.payload < 16)
    {
        return Err(
            "rooms: need 1 <= --rooms <= --conns, --publish-rate > 0, --payload >= 16".into(),
        );
    }
    if let Some(storm) = args.storm {
        // The run ends a hold after the ramp (later if the ramp slows down):
        // a signal after the planned end would never go.
        let end = plan.conns as f64 / plan.connect_rate + plan.duration as f64;
        if storm.at.as_secs_f64() >= end {
            return Err(format!(
                "--storm at {:.0} s: the run is planned to end at {end:.0} s (ramp and --duration); \
                 signal earlier or hold longer",
                storm.at.as_secs_f64()
            ));
        }
    }
    if let Some(k) = args.publishers_on {
        if !args.scenario.has_rooms() || k >= args.target.len() {
            return Err(format!(
                "--publishers-on {k}: needs the rooms scenario and an index of --target \
                 (0..{})",
                args.target.len()
            ));
        }
    }
    Ok(plan)
}

/// What a run's folder is named after: the preset when it ran as the preset,
/// else what actually ran (a preset whose numbers were changed is no longer it).
pub fn run_name(args: &Args, plan: &Plan) -> String {
    let preset = args.scenario.is_preset();
    let changed = args.conns.is_some()
        || args.connect_rate.is_some()
        || args.duration.is_some()
        || args.source.is_some()
        || args.ping_rate.is_some()
        || (args.scenario == Scenario::C1m && args.heartbeat_ms != 0);
    match (preset, changed) {
        (true, false) => args.scenario.name().to_string(),
        (true, true) => format!("{}-{}", if plan.idle { "idle" } else { "ping" }, plan.conns),
        (false, _) => format!("{}-{}", args.scenario.name(), plan.conns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    fn args(line: &[&str]) -> Args {
        Args::from_args(&["loadgen"], line).unwrap()
    }

    #[test]
    fn result_folders_say_what_ran() {
        let name = |line: &[&str]| {
            let a = args(line);
            run_name(&a, &plan(&a).unwrap())
        };
        assert_eq!(name(&[]), "c10k");
        assert_eq!(name(&["--scenario", "c10k", "--conns", "500"]), "ping-500");
        assert_eq!(
            name(&["--scenario", "c100k", "--duration", "5s"]),
            "idle-100000"
        );
        assert_eq!(
            name(&["--scenario", "rooms", "--conns", "200"]),
            "rooms-200"
        );
        assert_eq!(name(&["--scenario", "c1m"]), "c1m");
        assert_eq!(
            name(&["--scenario", "c1m", "--heartbeat-ms", "10000"]),
            "idle-1000000"
        );
    }

    #[test]
    fn a_storm_after_the_planned_end_is_refused() {
        let refused = plan(&args(&["--scenario", "c10k", "--storm", "kill@20"]));
        assert!(
            refused.err().unwrap().contains("planned to end at 16 s"),
            "1 s of ramp and 15 s of hold"
        );
        assert!(plan(&args(&["--scenario", "c10k", "--storm", "kill@10"])).is_ok());
    }

    #[test]
    fn c1m_is_a_million_idle_on_a_30_second_heartbeat() {
        let p = plan(&args(&["--scenario", "c1m"])).unwrap();
        assert!(p.idle);
        assert_eq!(
            (p.conns, p.duration, p.heartbeat_ms),
            (1_000_000, 60, 30_000)
        );
        assert_eq!(p.source, "127.1.0.0/26");
        let p = plan(&args(&["--scenario", "c1m", "--heartbeat-ms", "5000"])).unwrap();
        assert_eq!(p.heartbeat_ms, 5000);
        let p = plan(&args(&["--scenario", "c100k"])).unwrap();
        assert_eq!(p.heartbeat_ms, 0, "the server's");
    }
}
