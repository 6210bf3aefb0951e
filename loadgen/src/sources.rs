//! Source addresses (`--source`) and the connection capacity they allow.
//!
//! A TCP connection is a 4-tuple; from one source address to one target the
//! kernel has only the ephemeral port range to choose from, so a run of
//! 100,000 connections needs several source addresses (or targets). With
//! `IP_BIND_ADDRESS_NO_PORT` the port is chosen at connect time per 4-tuple,
//! so each (source, target) pair gets the whole range.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most addresses one `--source` may expand to: a /16 of IPv4.
pub const MAX_SOURCES: usize = 65_536;

/// Parses a `--source` value: comma-separated addresses, ranges
/// (`127.0.0.2-127.0.0.40`) and IPv4 CIDRs (`127.0.1.0/24`, network and
/// broadcast addresses included: on loopback every one is usable).
pub fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((first, last)) = part.split_once('-') {
            let (a, b) = (v4(first, part)?, v4(last, part)?);
            let (a, b) = (u32::from(a), u32::from(b));
            if a > b {
                return Err(format!("--source {part}: the range runs backwards"));
            }
            push_range(&mut out, a, b, part)?;
        } else if let Some((net, bits)) = part.split_once('/') {
            let base = u32::from(v4(net, part)?);
            let bits: u32 = bits
                .parse()
                .ok()
                .filter(|b| *b <= 32)
                .ok_or_else(|| format!("--source {part}: prefix length must be 0..=32"))?;
            let size = 1u64 << (32 - bits);
            let first = base & !((size - 1) as u32);
            push_range(&mut out, first, first + (size - 1) as u32, part)?;
        } else {
            out.push(
                part.parse::<IpAddr>()
                    .map_err(|_| format!("--source {part}: not an address, range or CIDR"))?,
            );
        }
        if out.len() > MAX_SOURCES {
            return Err(format!(
                "--source expands to more than {MAX_SOURCES} addresses"
            ));
        }
    }
    if out.is_empty() {
        return Err("--source names no address".into());
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = out.iter().find(|a| !seen.insert(**a)) {
        return Err(format!("--source lists {dup} twice"));
    }
    Ok(out)
}

fn v4(s: &str, part: &str) -> Result<Ipv4Addr, String> {
    s.trim().parse().map_err(|_| {
        format!("--source {part}: {s:?} is not an IPv4 address (ranges and CIDRs are IPv4)")
    })
}

fn push_range(out: &mut Vec<IpAddr>, first: u32, last: u32, part: &str) -> Result<(), String> {
    if (last - first) as usize >= MAX_SOURCES {
        return Err(format!(
            "--source {part}: more than {MAX_SOURCES} addresses"
        ));
    }
    out.extend((first..=last).map(|a| IpAddr::V4(Ipv4Addr::from(a))));
    Ok(())
}

/// The ephemeral port range, `net.ipv4.ip_local_port_range`, as (first, last).
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => Ok((a, b)),
        _ => Err(format!("cannot read ip_local_port_range from {text:?}")),
    }
}

/// Reads the port range of this network namespace.
pub fn local_port_range() -> Result<(u16, u16), String> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .map_err(|e| format!("cannot read /proc/sys/net/ipv4/ip_local_port_range: {e}"))?;
    parse_port_range(&text)
}

/// How many connections the sources, targets and port range allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Source addresses.
    pub sources: usize,
    /// Target addresses.
    pub targets: usize,
    /// Ephemeral ports per (source, target) pair.
    pub ports: u32,
}

impl Capacity {
    /// The capacity of `sources` x `targets` with `port_range`.
    pub fn new(sources: usize, targets: usize, port_range: (u16, u16)) -> Self {
        Self {
            sources,
            targets,
            ports: u32::from(port_range.1 - port_range.0) + 1,
        }
    }

    /// Connections that fit.
    pub fn total(&self) -> u64 {
        self.sources as u64 * self.targets as u64 * u64::from(self.ports)
    }

    /// Connections each (source, target) pair gets when `conns` are spread
    /// round-robin, the busiest pair first.
    pub fn busiest_pair(&self, conns: u64) -> u64 {
        conns.div_ceil(self.sources as u64 * self.targets as u64)
    }

    /// Source addresses that `conns` connections need with these targets
    /// and ports, at the least.
    pub fn sources_needed(&self, conns: u64) -> u64 {
        conns
            .div_ceil(u64::from(self.ports))
            .div_ceil(self.targets as u64)
    }

    /// Refuses a run that cannot fit, saying what would make it fit.
    pub fn check(&self, conns: u64) -> Result<(), String> {
        let per_pair = self.busiest_pair(conns);
        if per_pair <= u64::from(self.ports) {
            return Ok(());
        }
        let sources_needed = self.sources_needed(conns);
        Err(format!(
            "{conns} connections do not fit: {} source address(es) x {} target(s) x {} ports \
             (net.ipv4.ip_local_port_range) allow {}. Use at least {sources_needed} source \
             addresses (e.g. --source 127.0.0.2-127.0.0.{}), more targets, or a wider port range \
             (tuning/limits.sh)",
            self.sources,
            self.targets,
            self.ports,
            self.total(),
            (1 + sources_needed).min(254),
        ))
    }
}

/// Where sources chosen for a run start: apart from the presets' ranges
/// (127.0.0.2-9, 127.0.1.0/26, 127.1.0.0/26), so that a chosen range does not
/// share ports with a preset's connections still in TIME_WAIT.
const CHOSEN_BASE: Ipv4Addr = Ipv4Addr::new(127, 2, 0, 0);

/// Sources for a loopback run that named none and does not fit its default:
/// as many addresses from 127.2.0.0 up as `conns` need with `capacity`'s
/// targets and ports, and an eighth more (a port still in TIME_WAIT from an
/// earlier run to the same target is not free). Every 127/8 address is a
/// source on loopback without set-up. Returns the `--source` that names them.
pub fn choose_loopback_sources(capacity: &Capacity, conns: u64) -> Result<String, String> {
    let needed = capacity.sources_needed(conns + conns / 8).max(1);
    if needed > MAX_SOURCES as u64 {
        return Err(format!(
            "{conns} connections need {needed} source addresses with {} target(s) and {} ports: \
             more than loadgen spreads over ({MAX_SOURCES}); widen the port range or add targets",
            capacity.targets, capacity.ports
        ));
    }
    let first = u32::from(CHOSEN_BASE);
    let last = Ipv4Addr::from(first + needed as u32 - 1);
    Ok(format!("{CHOSEN_BASE}-{last}"))
}

/// The source and target of connection `i`: sources round-robin, and targets
/// round-robin across each pass over the sources, so every pair gets an equal
/// share.
pub fn spread(i: usize, sources: &[IpAddr], targets: &[SocketAddr]) -> (IpAddr, SocketAddr) {
    (
        sources[i % sources.len()],
        targets[target_index(i, 0, sources.len(), targets.len(), None)],
    )
}

/// How a rooms run places its connections on the targets (the nodes of a
/// cluster): connection `i` is in room `i % rooms`, and connections
/// `0..rooms` publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomLayout {
    /// Rooms.
    pub rooms: u64,
    /// The target every publisher is on (`--publishers-on`), or None: spread.
    pub publishers_on: Option<usize>,
}

/// The index of the target connection `i` goes to, after `hops` moves to
/// the next one (a reconnect moves on, so that a dead node's clients land on
/// the others). Without rooms: round-robin across each pass over the
/// sources. In a rooms run: each room's members go round-robin over the
/// targets, starting at a different one per room, so that every room spans
/// every node (a plain `i % targets` would put a whole room on one node
/// whenever the rooms are a multiple of the targets); its publisher is on
/// `publishers_on` if given.
pub fn target_index(
    i: usize,
    hops: u32,
    sources: usize,
    targets: usize,
    rooms: Option<RoomLayout>,
) -> usize {
    let base = match rooms {
        None => i / sources,
        Some(layout) => {
            let room = i as u64 % layout.rooms;
            let rank = i as u64 / layout.rooms;
            match layout.publishers_on {
                Some(pin) if rank == 0 => pin,
                _ => (rank + room) as usize,
            }
        }
    };
    (base + hops as usize) % targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_room_spans_every_target_and_publishers_can_be_pinned() {
        let layout = RoomLayout {
            rooms: 3,
            publishers_on: None,
        };
        // 3 rooms on 3 targets: i % 3 would put each room on one target.
        for room in 0..3usize {
            let on: std::collections::BTreeSet<usize> = (0..10)
                .map(|rank| target_index(room + 3 * rank, 0, 1, 3, Some(layout)))
                .collect();
            assert_eq!(on.len(), 3, "room {room} spans every target");
        }
        let pinned = RoomLayout {
            publishers_on: Some(2),
            ..layout
        };
        for publisher in 0..3 {
            assert_eq!(target_index(publisher, 0, 1, 3, Some(pinned)), 2);
        }
        assert_eq!(target_index(1, 1, 1, 3, Some(pinned)), 0, "a hop moves on");
        assert_eq!(
            target_index(7, 0, 2, 3, None),
            0,
            "plain: per pass over the sources"
        );
        assert_eq!(target_index(7, 2, 2, 3, None), 2);
    }

    #[test]
    fn addresses_ranges_and_cidrs() {
        assert_eq!(parse_sources("127.0.0.2").unwrap(), [ip("127.0.0.2")]);
        assert_eq!(
            parse_sources("127.0.0.2-127.0.0.4").unwrap(),
            [ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.4")]
        );
        let cidr = parse_sources("127.0.1.0/30").unwrap();
        assert_eq!(
            cidr,
            [
                ip("127.0.1.0"),
                ip("127.0.1.1"),
                ip("127.0.1.2"),
                ip("127.0.1.3")
            ]
        );
        assert_eq!(
            parse_sources("127.0.1.5/30").unwrap()[0],
            ip("127.0.1.4"),
            "host bits ignored"
        );
        let mixed = parse_sources("127.0.0.2, 127.0.0.10-127.0.0.11,::1").unwrap();
        assert_eq!(mixed.len(), 4);
        assert_eq!(
            parse_sources("127.0.0.255-127.0.1.1").unwrap().len(),
            3,
            "ranges cross octets"
        );
    }

    #[test]
    fn bad_sources_are_refused_with_a_reason() {
        for (spec, says) in [
            ("", "no address"),
            ("127.0.0.9-127.0.0.2", "backwards"),
            ("127.0.0.0/33", "prefix"),
            ("10.0.0.0/8", "more than"),
            ("nowhere", "not an address"),
            ("127.0.0.2,127.0.0.2", "twice"),
            ("::1-::2", "IPv4"),
        ] {
            let e = parse_sources(spec).unwrap_err();
            assert!(e.contains(says), "{spec:?}: {e}");
        }
    }

    #[test]
    fn port_range_is_read() {
        assert_eq!(parse_port_range("32768\t60999\n"), Ok((32768, 60999)));
        assert!(parse_port_range("60999 32768").is_err());
        assert!(parse_port_range("").is_err());
        assert!(local_port_range().is_ok());
    }

    #[test]
    fn chosen_sources_fit_the_run_with_a_margin() {
        let c = Capacity::new(1, 1, (32768, 60999)); // 28,232 ports
        let spec = choose_loopback_sources(&c, 300_000).unwrap();
        assert_eq!(
            spec, "127.2.0.0-127.2.0.11",
            "300,000 x 9/8 / 28,232 = 11.95"
        );
        let chosen = parse_sources(&spec).unwrap();
        let fits = Capacity::new(chosen.len(), 1, (32768, 60999));
        assert!(fits.check(300_000).is_ok());
        assert!(
            fits.busiest_pair(300_000) * 9 / 8 <= u64::from(fits.ports),
            "an eighth of the ports to spare"
        );
        // At least one address; a range may cross an octet.
        let two = Capacity::new(1, 2, (1024, 65535));
        assert_eq!(
            choose_loopback_sources(&two, 1).unwrap(),
            "127.2.0.0-127.2.0.0"
        );
        let one_port = Capacity::new(1, 1, (1024, 1024));
        let many = choose_loopback_sources(&one_port, 300).unwrap();
        assert_eq!(many, "127.2.0.0-127.2.1.80");
        assert_eq!(parse_sources(&many).unwrap().len(), 337);
        let e = choose_loopback_sources(&one_port, 300_000).unwrap_err();
        assert!(e.contains("need 337500 source addresses"), "{e}");
    }

    #[test]
    fn capacity_arithmetic() {
        let c = Capacity::new(1, 1, (32768, 60999));
        assert_eq!(c.ports, 28_232);
        assert_eq!(c.total(), 28_232);
        assert!(c.check(28_232).is_ok());
        let e = c.check(40_000).unwrap_err();
        assert!(e.contains("40000 connections do not fit"), "{e}");
        assert!(e.contains("at least 2 source addresses"), "{e}");
        let five = Capacity::new(5, 1, (10000, 10999));
        assert_eq!(five.total(), 5_000);
        assert!(five.check(4_500).is_ok());
        assert!(five.check(5_001).is_err());
        assert_eq!(five.busiest_pair(4_500), 900);
        // 100,000 connections over 40 sources to one target: 2,500 ports each.
        assert!(Capacity::new(40, 1, (32768, 60999)).check(100_000).is_ok());
    }

    #[test]
    fn spreading_is_even_over_every_pair() {
        let sources = [ip("127.0.0.2"), ip("127.0.0.3")];
        let targets: [SocketAddr; 3] = [
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        ];
        let mut counts = std::collections::HashMap::new();
        for i in 0..600 {
            *counts.entry(spread(i, &sources, &targets)).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 6);
        assert!(counts.values().all(|&n| n == 100), "{counts:?}");
    }
}
