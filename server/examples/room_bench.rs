//! The client of the rooms benchmark (`bench-results/rooms/run.sh`): CONNS
//! connections join ROOMS rooms (connection i joins room i % ROOMS); the first
//! member of each room publishes PUB_HZ times a second on an open-loop schedule,
//! each body carrying its planned send time; every member records the delivery
//! latency from that planned time (no coordinated omission) in an HdrHistogram.
//!
//! ```text
//! cargo run --release -p ringroom-server --example room_bench -- \
//!     TARGET CONNS SOURCES ROOMS PUB_HZ SECONDS [PAYLOAD]
//! ```
//! Prints `UP n` once every connection has its JOINED, then after SECONDS
//! `DONE publishes=.. deliveries=.. expected=.. lost=.. p50_us=.. p99_us=..
//! p999_us=.. max_us=..`. Until `loadgen` exists, this is how room figures are
//! measured.

#[path = "../tests/common/connect.rs"]
mod connect;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use proto::{Decoder, Fragment, Frame, Hello, Publish, Room};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// This process's user+system CPU time, from /proc/self/stat.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based).
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: room_bench TARGET CONNS SOURCES ROOMS PUB_HZ SECONDS [PAYLOAD]");
        std::process::exit(2);
    }
    let target: SocketAddr = args[1].parse().expect("TARGET");
    let count: usize = args[2].parse().expect("CONNS");
    let sources: Vec<IpAddr> = args[3]
        .split(',')
        .map(|s| s.parse().expect("SOURCES"))
        .collect();
    let rooms: usize = args[4].parse().expect("ROOMS");
    let hz: f64 = args[5].parse().expect("PUB_HZ");
    let run_for = Duration::from_secs(args[6].parse().expect("SECONDS"));
    let payload: usize = args
        .get(7)
        .map_or(64, |p| p.parse().expect("PAYLOAD"))
        .max(16);
    assert!(rooms >= 1 && rooms <= count, "need 1 <= ROOMS <= CONNS");

    let names: Vec<String> = (0..rooms).map(|r| format!("room{r}")).collect();
    let poll = Poll::new().unwrap();
    let mut streams = Vec::with_capacity(count);
    let mut decoders = Vec::with_capacity(count);
    for i in 0..count {
        let mut std_stream =
            connect::connect_from(sources[i % sources.len()], target, Duration::from_secs(10))
                .unwrap();
        let mut hello = Vec::new();
        Frame::Hello(Hello {
            heartbeat_ms: 300_000,
            name: "room-bench",
        })
        .encode_to_vec(&mut hello)
        .unwrap();
        Frame::Join(Room::new(&names[i % rooms]).unwrap())
            .encode_to_vec(&mut hello)
            .unwrap();
        std_stream.write_all(&hello).unwrap();
        std_stream.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap();
        streams.push(stream);
        decoders.push(Decoder::new(u32::MAX));
    }

    let mut members = Members {
        poll,
        streams,
        decoders,
        events: Events::with_capacity(4096),
        buf: vec![0u8; 256 * 1024],
        histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        joined: 0,
        deliveries: 0,
        errors: 0,
    };
    let setup = Instant::now();
    while members.joined < count {
        members.poll_once();
        assert!(
            setup.elapsed() < Duration::from_secs(120),
            "only {} of {count} JOINED",
            members.joined
        );
    }
    println!("UP {count} in {} rooms", rooms);

    // Open-loop schedule: publisher r publishes at begin + (k + r/rooms) * period.
    let period = Duration::from_secs_f64(1.0 / hz);
    let begin = Instant::now();
    let begin_us = now_us();
    let end = begin + run_for;
    let mut next: Vec<Duration> = (0..rooms)
        .map(|r| period.mul_f64(r as f64 / rooms as f64))
        .collect();
    let (mut publishes, mut expected) = (0u64, 0u64);
    let members_per_room: Vec<u64> = (0..rooms)
        .map(|r| ((count - r).div_ceil(rooms)) as u64)
        .collect();
    let mut body = vec![0u8; payload];
    let mut out = Vec::new();
    while Instant::now() < end {
        let now = begin.elapsed();
        for r in 0..rooms {
            out.clear();
            while next[r] <= now && begin + next[r] < end {
                let planned_us = begin_us + next[r].as_micros() as u64;
                body[..8].copy_from_slice(&planned_us.to_be_bytes());
                body[8..16].copy_from_slice(&publishes.to_be_bytes());
                Frame::Publish(Publish {
                    room: Room::new(&names[r]).unwrap(),
                    body: &body,
                    echo: false,
                    fragment: Fragment::default(),
                })
                .encode_to_vec(&mut out)
                .unwrap();
                publishes += 1;
                expected += members_per_room[r] - 1;
                next[r] += period;
            }
            if !out.is_empty() && members.streams[r].write_all(&out).is_err() {
                members.errors += 1;
            }
        }
        members.poll_once();
    }
    // Let the last messages arrive (at most 2 s).
    let grace = Instant::now();
    while members.deliveries < expected && grace.elapsed() < Duration::from_secs(2) {
        members.poll_once();
    }
    println!(
        "DONE publishes={publishes} deliveries={} expected={expected} lost={} errors={} cpu_s={:.2} p50_us={} p99_us={} p999_us={} max_us={}",
        members.deliveries,
        expected.saturating_sub(members.deliveries),
        members.errors,
        own_cpu_seconds(),
        members.histogram.value_at_quantile(0.5),
        members.histogram.value_at_quantile(0.99),
        members.histogram.value_at_quantile(0.999),
        members.histogram.max()
    );
}

/// Every connection of this client, and what they have seen.
struct Members {
    poll: Poll,
    streams: Vec<TcpStream>,
    decoders: Vec<Decoder>,
    events: Events,
    buf: Vec<u8>,
    histogram: Histogram<u64>,
    joined: usize,
    deliveries: u64,
    errors: u64,
}

impl Members {
    /// Reads whatever arrived within a millisecond: JOINEDs counted, MESSAGE
    /// latencies recorded from the planned time in their body.
    fn poll_once(&mut self) {
        self.poll
            .poll(&mut self.events, Some(Duration::from_millis(1)))
            .unwrap();
        for event in self.events.iter() {
            let i = event.token().0;
            loop {
                match self.streams[i].read(&mut self.buf) {
                    Ok(0) => {
                        self.errors += 1;
                        break;
                    }
                    Ok(n) => {
                        let mut input = &self.buf[..n];
                        while let Some(frame) = self.decoders[i].decode(&mut input).unwrap() {
                            match frame {
                                Frame::Joined(_) => self.joined += 1,
                                Frame::Message(m) => {
                                    let planned =
                                        u64::from_be_bytes(m.body[..8].try_into().unwrap());
                                    let latency = now_us().saturating_sub(planned).max(1);
                                    self.histogram.saturating_record(latency);
                                    self.deliveries += 1;
                                }
                                Frame::Error(_) | Frame::GoAway(_) => self.errors += 1,
                                _ => {}
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.errors += 1;
                        break;
                    }
                }
            }
        }
    }
}
