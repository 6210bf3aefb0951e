//! A small client for the server-core benchmarks (`bench-results/server-core/`):
//! opens connections from a list of source addresses, then either holds them
//! idle or pings on an open-loop schedule, and reports what it saw. One
//! process stays under its fd limit; run several for more connections.
//!
//! The full load generator (`loadgen/`) will replace this; it exists so the
//! server's figures can be measured now.
//!
//! ```text
//! cargo run --release -p ringroom-server --example bench_client -- \
//!     TARGET CONNS SOURCES PING_HZ SECONDS
//! ```
//! SOURCES is a comma-separated list of local addresses; PING_HZ 0 means idle.
//! PINGs are spread evenly over each period; with `BENCH_IN_STEP=1` every
//! connection pings at the same instant (the burst a naive client makes).
//! It prints `UP n` when connected, then `DONE sent=.. received=.. missing=..
//! p50_us=.. p99_us=..` after SECONDS.

#[path = "../tests/common/connect.rs"]
mod connect;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use proto::{Decoder, Frame, Hello};

struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    /// Planned send times of PINGs not yet answered, oldest first.
    outstanding: VecDeque<Instant>,
    next_ping: Instant,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, conns, sources, hz, secs] = &args[..] else {
        eprintln!("usage: bench_client TARGET CONNS SOURCES PING_HZ SECONDS");
        std::process::exit(2);
    };
    let target: SocketAddr = target.parse().expect("TARGET");
    let count: usize = conns.parse().expect("CONNS");
    let sources: Vec<IpAddr> = sources
        .split(',')
        .map(|s| s.parse().expect("SOURCES"))
        .collect();
    let hz: f64 = hz.parse().expect("PING_HZ");
    let run_for = Duration::from_secs(secs.parse().expect("SECONDS"));

    let mut poll = Poll::new().unwrap();
    let mut conns: Vec<Conn> = Vec::with_capacity(count);
    let start = Instant::now();
    let period = (hz > 0.0).then(|| Duration::from_secs_f64(1.0 / hz));
    let mut hello = Vec::new();
    // A long heartbeat: the server must not expire idle benchmark connections.
    Frame::Hello(Hello {
        heartbeat_ms: 300_000,
        name: "bench",
    })
    .encode_to_vec(&mut hello)
    .unwrap();
    for i in 0..count {
        let mut std_stream =
            connect::connect_from(sources[i % sources.len()], target, Duration::from_secs(10))
                .unwrap();
        std_stream.write_all(&hello).unwrap();
        std_stream.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap();
        conns.push(Conn {
            stream,
            decoder: Decoder::new(u32::MAX),
            outstanding: VecDeque::new(),
            next_ping: start,
        });
    }
    println!("UP {} in {:?}", conns.len(), start.elapsed());

    let begin = Instant::now();
    let end = begin + run_for;
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut received, mut errors) = (0u64, 0u64, 0u64);
    let mut rtts: Vec<u32> = Vec::new();
    let mut ping = Vec::with_capacity(16);
    let mut cursor = 0usize;
    // Rebase the schedule to the start of the run.
    let in_step = std::env::var_os("BENCH_IN_STEP").is_some();
    if let Some(p) = period {
        for (i, c) in conns.iter_mut().enumerate() {
            let phase = if in_step {
                0.0
            } else {
                i as f64 / count as f64
            };
            c.next_ping = begin + p.mul_f64(phase);
        }
    }
    while Instant::now() < end {
        let now = Instant::now();
        if let Some(p) = period {
            // Open loop: every PING due by now is sent, stamped with its planned time.
            let n = conns.len();
            for _ in 0..n {
                let c = &mut conns[cursor];
                cursor = (cursor + 1) % n;
                while c.next_ping <= now {
                    ping.clear();
                    Frame::Ping(&[]).encode_to_vec(&mut ping).unwrap();
                    match c.stream.write(&ping) {
                        Ok(n) if n == ping.len() => {
                            sent += 1;
                            c.outstanding.push_back(c.next_ping);
                        }
                        _ => errors += 1,
                    }
                    c.next_ping += p;
                }
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(1)))
            .unwrap();
        for event in events.iter() {
            let c = &mut conns[event.token().0];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        errors += 1;
                        break;
                    }
                    Ok(n) => {
                        let mut input = &buf[..n];
                        while let Some(frame) = c.decoder.decode(&mut input).unwrap() {
                            if let Frame::Pong(_) = frame {
                                received += 1;
                                if let Some(planned) = c.outstanding.pop_front() {
                                    rtts.push(planned.elapsed().as_micros() as u32);
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
        }
    }
    rtts.sort_unstable();
    let pct = |q: f64| {
        rtts.get(((rtts.len() as f64 * q) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let missing: usize = conns.iter().map(|c| c.outstanding.len()).sum();
    println!(
        "DONE sent={sent} received={received} missing={missing} errors={errors} p50_us={} p99_us={} p999_us={} max_us={}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        rtts.last().copied().unwrap_or(0)
    );
}
