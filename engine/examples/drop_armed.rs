//! How long dropping a ring takes with a multishot receive armed on every
//! connection: what a load generator or server pays when it ends with its
//! connections still open.
//!
//! ```sh
//! cargo run --release -p ringroom-engine --example drop_armed -- 19000
//! ```
//!
//! Both ends are io_uring direct descriptors (a client engine that installs
//! its sockets, a server engine that accepts into its table), so N may come
//! close to RLIMIT_NOFILE. Prints the time to drop each engine, and the time
//! until every peer of the dropped client has seen its connection close.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use engine::{sys, Action, Engine, EngineConfig, EngineKind, Event, RingMode};

fn config(slots: u32) -> EngineConfig {
    EngineConfig {
        sq_entries: 4096,
        slots,
        buffers: 1024,
        buffer_size: 4096,
        mode: RingMode::Defer,
        batch_wait_us: 0,
    }
}

fn main() {
    let conns: u32 = std::env::args()
        .nth(1)
        .map_or(19_000, |n| n.parse().expect("N: connections"));
    rlimit::increase_nofile_limit(u64::MAX).expect("RLIMIT_NOFILE");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let wake = || sys::eventfd().expect("eventfd");
    let mut server = Engine::new(
        EngineKind::Uring,
        &config(conns),
        Some(OwnedFd::from(listener)),
        wake(),
    )
    .expect("server engine");
    let mut client = Engine::new(EngineKind::Uring, &config(conns), None, wake()).expect("client");
    server.arm_accept();
    client.arm_wake();
    server.arm_wake();

    let start = Instant::now();
    let mut accepted = Vec::new();
    let mut installed = 0;
    let deadline = start + Duration::from_secs(60);
    while accepted.len() < conns as usize {
        assert!(Instant::now() < deadline, "connecting took over 60 s");
        // Within the listener's backlog (128): a blocking connect beyond it
        // waits for a SYN retransmission.
        while installed < conns && installed < accepted.len() as u32 + 64 {
            let socket = std::net::TcpStream::connect(addr).expect("connect");
            let slot = client
                .install(OwnedFd::from(socket))
                .expect("install")
                .expect("a free slot");
            client.execute(Action::ArmRecv { slot, gen: 1 });
            installed += 1;
        }
        client.submit_and_wait(Duration::ZERO).expect("client");
        server
            .submit_and_wait(Duration::from_millis(1))
            .expect("server");
        server.drain_completions(|e| match e {
            Event::Accepted { slot, more } => {
                accepted.push(slot);
                assert!(more, "the accept stopped");
            }
            Event::AcceptEnded { errno } => panic!("accept ended: errno {errno}"),
            _ => {}
        });
    }
    for &slot in &accepted {
        server.execute(Action::ArmRecv { slot, gen: 1 });
    }
    server.submit_and_wait(Duration::ZERO).expect("server");
    println!(
        "{conns} connections, a receive armed on both ends of each, in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    drop(client);
    let dropped = t.elapsed();
    // The server's receives end as the client's sockets close (EOF).
    let mut ended = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while ended < conns && Instant::now() < deadline {
        server
            .submit_and_wait(Duration::from_millis(10))
            .expect("server");
        server.drain_completions(|e| {
            if let Event::RecvEnded { .. } = e {
                ended += 1;
            }
        });
    }
    let closed = t.elapsed();
    println!(
        "client ring dropped in {:.3} s; its {ended} peers saw the close {:.3} s after the drop began",
        dropped.as_secs_f64(),
        closed.as_secs_f64()
    );
    // The server's receives ended: dropping it is the empty case.
    let t = Instant::now();
    drop(server);
    println!(
        "server ring (no receive armed) dropped in {:.3} s",
        t.elapsed().as_secs_f64()
    );
}
