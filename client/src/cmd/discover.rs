//! `ringroom discover`: the servers on this LAN, one line each.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use argh::FromArgs;

use crate::discover::{self, Found};
use crate::explain::exit;

/// Find ringroom servers: broadcast the discovery request on every IPv4
/// interface that is up (and to loopback), print who answers. Exit 0 if any
/// answered, 3 if none did.
#[derive(FromArgs)]
#[argh(subcommand, name = "discover")]
pub struct Args {
    /// how long to wait for replies (default 1s)
    #[argh(
        option,
        default = "Duration::from_secs(1)",
        from_str_fn(super::parse_duration)
    )]
    pub timeout: Duration,
    /// ask this address instead of every interface's broadcast address (a
    /// broadcast address, or one host)
    #[argh(option)]
    pub broadcast: Option<IpAddr>,
    /// the servers' discovery port (default 7701)
    #[argh(option, default = "proto::DEFAULT_DISCOVERY_PORT")]
    pub port: u16,
    /// print a JSON array (name, address, port, rtt_ms) instead of lines
    #[argh(switch)]
    pub json: bool,
}

/// Runs discovery with `args`: the servers, nearest first.
pub fn find(args: &Args) -> Result<Vec<Found>, String> {
    let targets = match args.broadcast {
        Some(ip) => vec![SocketAddr::new(ip, args.port)],
        None => discover::targets(args.port).map_err(|e| format!("listing interfaces: {e}"))?,
    };
    let (found, _ignored) =
        discover::discover(&targets, args.timeout).map_err(|e| format!("discovery: {e}"))?;
    Ok(found)
}

/// The subcommand.
pub fn run(args: Args) -> u8 {
    let found = match find(&args) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("ringroom discover: {e}");
            return exit::FAILED;
        }
    };
    if args.json {
        let all: Vec<_> = found.iter().map(discover::json).collect();
        println!("{}", serde_json::Value::Array(all));
    } else {
        for f in &found {
            println!("{}", discover::line(f));
        }
    }
    if found.is_empty() {
        eprintln!(
            "ringroom discover: no server answered within {:?} (is one running, with --discovery on, and is UDP port {} open?)",
            args.timeout, args.port
        );
        return exit::NO_SERVER;
    }
    exit::OK
}
