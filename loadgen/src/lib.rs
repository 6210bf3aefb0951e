//! The ringroom load generator's building blocks, sans-io and unit-tested where
//! they can be; `main.rs` wires them into the `loadgen` command.
//!
//! * [`cli`]: a run's options, the scenarios, and the one checked plan they make.
//! * [`client`]: a worker's connections, PING schedules, rooms and measurements (sans-io).
//! * [`wire`]: the wire protocols: ringroom, and redis, nats, mqtt for comparison (sans-io).
//! * [`worker`]: one thread with its own ring and its share of the connections.
//! * [`sources`]: `--source` parsing, the capacity a run's sources, targets and
//!   port range allow, and spreading connections over them.
//! * [`ramp`]: the connect ramp, slowed down by refused and slow connects (sans-io).
//! * [`schedule`]: open-loop send schedules with jittered phases.
//! * [`units`]: durations and rates with units on the command line.
//! * [`verify`]: loss, duplicate and order checks of room messages.
//! * [`errnos`]: errno and error-code counts by name, for the tables.
//! * [`procstat`]: CPU time and RSS of the server and of the load generator.
//! * [`hlog`]: the interval log (`.hlog`): written, read and decoded in one place.
//! * [`report`]: the `.hgrm` percentile distribution.
//! * [`plot`]: `plot.svg` (percentile distribution) and `timeline.svg` (second by second).
//! * [`processes`]: a run split over processes (epoll: connections are fds), merged.
//! * [`run`]: one run of a scenario, from the server's start to the verdict.
//! * [`own_server`]: the server a run starts when it has no `--target`.
//! * [`churn`]: `--scenario churn`'s window, the server's cost per connect, memory not returned.
//! * [`storm`]: `--storm`: the server killed and restarted mid-run, and how the clients came back.
//! * [`results`]: a result folder (summary.json, machine.json, logs): write, read, merge.
//! * [`compare`]: is run B slower than run A, beyond the noise? (Mann-Whitney U on interval p99s)
//! * [`index`]: the bench-results index and the peers table.
#![forbid(unsafe_code)]

pub mod churn;
pub mod cli;
pub mod client;
pub mod compare;
pub mod errnos;
pub mod hlog;
pub mod index;
pub mod netstat;
pub mod own_server;
pub mod plot;
pub mod processes;
pub mod procstat;
pub mod ramp;
pub mod report;
pub mod results;
pub mod run;
pub mod schedule;
pub mod sources;
pub mod storm;
pub mod units;
pub mod verify;
pub mod wire;
pub mod worker;

/// The listen address in the server's ready line (`ringroom-server ready:
/// listen ADDR, ...`), as `loadgen` and its tests read it.
pub fn ready_address(line: &str) -> Option<std::net::SocketAddr> {
    let at = line.find("listen ")? + "listen ".len();
    line[at..].split([',', ' ']).next()?.parse().ok()
}
