//! The baseline of the server-core CPU benchmark: the smallest io_uring loop that
//! answers PINGs (one ring, DEFER_TASKRUN, provided-buffer ring, multishot
//! receive, direct descriptors), built on the server's own engine but with no
//! protocol logic: it turns each PING header in a receive into a PONG header and
//! sends the bytes back. No decoding, no timers, no limits, no metrics: what the
//! kernel and io_uring cost, for `bench-results/server-core/run.sh` to compare
//! the full server against. Not a server; assumes well-formed PINGs.
//!
//! ```text
//! cargo run --release -p ringroom-server --example minimal_pong -- 127.0.0.1:0
//! ```

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use proto::{Frame, FrameType, Welcome, DEFAULT_MAX_PAYLOAD, HEADER_LEN};
use ringroom_server::core::{Action, RecvEnd};
use ringroom_server::engine::{sys, Engine, EngineConfig, EngineKind, Event, RingMode};

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_tcp_nodelay(true).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(4096).unwrap();
    let local = socket.local_addr().unwrap().as_socket().unwrap();
    let cfg = EngineConfig {
        sq_entries: 4096,
        slots: 20_000,
        buffers: 1024,
        buffer_size: 4096,
        mode: RingMode::Defer,
        batch_wait_us: 0,
    };
    let mut engine = Engine::new(
        EngineKind::Uring,
        &cfg,
        Some(OwnedFd::from(socket)),
        sys::eventfd().unwrap(),
    )
    .unwrap();
    engine.arm_accept();
    println!("minimal_pong ready: listen {local}, shards 1");

    let mut welcome = Vec::new();
    Frame::Welcome(Welcome {
        conn_id: 0,
        heartbeat_ms: 10_000,
        idle_timeout_ms: 30_000,
        max_payload: DEFAULT_MAX_PAYLOAD,
        shard: 0,
    })
    .encode_to_vec(&mut welcome)
    .unwrap();

    // Per slot: bytes waiting while a send is in flight.
    let mut waiting: Vec<Option<Vec<u8>>> = (0..cfg.slots).map(|_| None).collect();
    let mut sending = vec![false; cfg.slots as usize];
    let mut actions = Vec::new();
    loop {
        engine.submit_and_wait(Duration::from_secs(1)).unwrap();
        let mut rearm_accept = false;
        engine.drain_completions(|event| match event {
            Event::Accepted { slot, more } => {
                actions.push(Action::ArmRecv { slot, gen: 0 });
                rearm_accept |= !more;
            }
            Event::AcceptEnded { .. } => rearm_accept = true,
            Event::Received { slot, gen, data } => {
                // Each PING becomes a PONG; a HELLO gets the one fixed WELCOME
                // (so that loadgen can drive this loop); anything else is dropped.
                let mut bytes = Vec::with_capacity(data.len());
                let mut at = 0;
                while at + HEADER_LEN <= data.len() {
                    let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
                    let end = (at + HEADER_LEN + len).min(data.len());
                    if data[at + 4] == FrameType::Ping as u8 {
                        bytes.extend_from_slice(&data[at..end]);
                        let pong = bytes.len() - (end - at) + 4;
                        bytes[pong] = FrameType::Pong as u8;
                    } else if data[at + 4] == FrameType::Hello as u8 {
                        bytes.extend_from_slice(&welcome);
                    }
                    at = end;
                }
                let s = slot as usize;
                if bytes.is_empty() {
                } else if sending[s] {
                    waiting[s]
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(&bytes);
                } else {
                    sending[s] = true;
                    actions.push(Action::Send {
                        slot,
                        gen,
                        buf: bytes,
                    });
                }
            }
            Event::RecvEnded { slot, gen, end } => match end {
                RecvEnd::NoBuffers | RecvEnd::Stopped => {
                    actions.push(Action::ArmRecv { slot, gen })
                }
                _ => {
                    if !sending[slot as usize] {
                        actions.push(Action::Close { slot });
                    }
                }
            },
            Event::Sent { slot, gen, .. } => {
                let s = slot as usize;
                match waiting[s].take() {
                    Some(bytes) => actions.push(Action::Send {
                        slot,
                        gen,
                        buf: bytes,
                    }),
                    None => sending[s] = false,
                }
            }
            Event::Woken => {}
        });
        if rearm_accept {
            engine.arm_accept();
        }
        for action in actions.drain(..) {
            engine.execute(action);
        }
    }
}
