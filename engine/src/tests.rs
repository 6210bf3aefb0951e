//! The contract, checked on both backends: each test runs once per kind.

use super::*;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

const KINDS: [EngineKind; 2] = [EngineKind::Uring, EngineKind::Epoll];

fn config(slots: u32) -> EngineConfig {
    EngineConfig {
        sq_entries: 64,
        slots,
        buffers: 16,
        buffer_size: 1024,
        mode: RingMode::Defer,
        batch_wait_us: 0,
    }
}

fn client(kind: EngineKind, slots: u32) -> Engine {
    Engine::new(kind, &config(slots), None, sys::eventfd().unwrap()).unwrap()
}

/// Drives the engine, handing events to `on_event` with `state`, until
/// `done` says so (at most 2 s).
fn run_until<S>(
    engine: &mut Engine,
    state: &mut S,
    mut on_event: impl FnMut(&mut S, Event<'_>),
    mut done: impl FnMut(&mut S, &mut Engine) -> bool,
) {
    let start = Instant::now();
    while !done(state, engine) {
        engine.submit_and_wait(Duration::from_millis(20)).unwrap();
        engine.drain_completions(|e| on_event(state, e));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{}: timed out",
            engine.kind()
        );
    }
}

#[test]
fn a_client_engine_moves_data_on_installed_sockets() {
    for kind in KINDS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut engine = client(kind, 4);
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let slot = engine.install(OwnedFd::from(socket)).unwrap().unwrap();
        assert_eq!(engine.free_slots(), 3, "{kind}");
        let (mut peer, _) = listener.accept().unwrap();
        engine.execute(Action::ArmRecv { slot, gen: 1 });
        engine.execute(Action::Send {
            slot,
            gen: 1,
            buf: b"hello".to_vec(),
        });
        peer.write_all(b"world").unwrap();
        let (mut got, mut sent) = (Vec::new(), false);
        let start = Instant::now();
        while !(got == b"world" && sent) {
            engine.submit_and_wait(Duration::from_millis(20)).unwrap();
            engine.drain_completions(|e| match e {
                Event::Received { data, .. } => got.extend_from_slice(data),
                Event::Sent { result, .. } => sent = result == 5,
                _ => {}
            });
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{kind}: timed out"
            );
        }
        let mut hello = [0u8; 5];
        peer.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello");
        // Close: cancel the receive, then close the slot; it is free again.
        engine.execute(Action::Cancel {
            slot,
            gen: 1,
            recv: true,
            send: false,
        });
        let mut cancelled = false;
        run_until(
            &mut engine,
            &mut cancelled,
            |c, e| {
                *c |= matches!(
                    e,
                    Event::RecvEnded {
                        end: RecvEnd::Cancelled,
                        ..
                    }
                )
            },
            |c, _| *c,
        );
        engine.execute(Action::Close { slot });
        run_until(&mut engine, &mut (), |_, _| {}, |_, e| e.free_slots() == 4);
        let mut eof = [0u8; 1];
        assert_eq!(
            peer.read(&mut eof).unwrap(),
            0,
            "{kind}: the peer sees the close"
        );
    }
}

#[test]
fn install_stops_at_a_full_table() {
    for kind in KINDS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut engine = client(kind, 2);
        let addr = listener.local_addr().unwrap();
        let connect = || OwnedFd::from(TcpStream::connect(addr).unwrap());
        assert!(engine.install(connect()).unwrap().is_some());
        assert!(engine.install(connect()).unwrap().is_some());
        assert_eq!(
            engine.install(connect()).unwrap(),
            None,
            "{kind}: no third slot"
        );
    }
}

/// A server engine on a fresh loopback listener, and its address.
fn server(kind: EngineKind, slots: u32) -> (Engine, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = Engine::new(
        kind,
        &config(slots),
        Some(OwnedFd::from(listener)),
        sys::eventfd().unwrap(),
    )
    .unwrap();
    (engine, addr)
}

#[test]
fn a_server_engine_accepts_reads_and_sees_the_peer_close() {
    for kind in KINDS {
        let (mut engine, addr) = server(kind, 4);
        engine.arm_accept();
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.write_all(b"ping").unwrap();
        let mut slot = None;
        run_until(
            &mut engine,
            &mut slot,
            |slot, e| {
                if let Event::Accepted { slot: s, .. } = e {
                    *slot = Some(s);
                }
            },
            |slot, _| slot.is_some(),
        );
        let slot = slot.unwrap();
        engine.execute(Action::ArmRecv { slot, gen: 7 });
        let mut st: (Vec<u8>, Option<RecvEnd>, bool) = (Vec::new(), None, false);
        run_until(
            &mut engine,
            &mut st,
            |(got, end, _), e| match e {
                Event::Received { gen, data, .. } => {
                    assert_eq!(gen, 7);
                    got.extend_from_slice(data);
                }
                Event::RecvEnded { end: e, .. } => *end = Some(e),
                _ => {}
            },
            |(got, end, closed), _| {
                if got == b"ping" && !*closed {
                    *closed = true;
                    peer.shutdown(std::net::Shutdown::Write).unwrap();
                }
                end.is_some()
            },
        );
        let (got, end, _) = st;
        assert_eq!(got, b"ping", "{kind}");
        assert_eq!(end, Some(RecvEnd::Eof), "{kind}");
    }
}

#[test]
fn input_and_eof_that_came_before_the_accept_are_both_seen() {
    for kind in KINDS {
        let (mut engine, addr) = server(kind, 4);
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.write_all(b"bye").unwrap();
        peer.shutdown(std::net::Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(50)); // both are in the server's socket
        engine.arm_accept();
        let mut st: (Option<u32>, Vec<u8>, Option<RecvEnd>) = (None, Vec::new(), None);
        run_until(
            &mut engine,
            &mut st,
            |(slot, got, end), e| match e {
                Event::Accepted { slot: s, .. } => *slot = Some(s),
                Event::Received { data, .. } => got.extend_from_slice(data),
                Event::RecvEnded { end: e, .. } => *end = Some(e),
                _ => {}
            },
            |(slot, _, end), engine| {
                if let Some(s) = slot.take() {
                    engine.execute(Action::ArmRecv { slot: s, gen: 1 });
                }
                end.is_some()
            },
        );
        assert_eq!(
            (st.1.as_slice(), st.2),
            (&b"bye"[..], Some(RecvEnd::Eof)),
            "{kind}"
        );
    }
}

#[test]
fn accepts_stop_at_a_full_table_and_resume_when_re_armed() {
    for kind in KINDS {
        let (mut engine, addr) = server(kind, 1);
        engine.arm_accept();
        let _first = TcpStream::connect(addr).unwrap();
        let _second = TcpStream::connect(addr).unwrap();
        let mut st: (Vec<u32>, Option<i32>) = (Vec::new(), None);
        run_until(
            &mut engine,
            &mut st,
            |(accepted, ended), e| match e {
                Event::Accepted { slot, .. } => accepted.push(slot),
                Event::AcceptEnded { errno } => *ended = Some(errno),
                _ => {}
            },
            |(_, ended), _| ended.is_some(),
        );
        let (accepted, ended) = st;
        assert_eq!(accepted.len(), 1, "{kind}");
        assert_eq!(ended, Some(libc::ENFILE), "{kind}");
        assert!(!engine.is_accepting(), "{kind}");
        // A close frees the slot; re-armed, a connection comes in. (Not
        // necessarily the second: io_uring closes what it accepted and could
        // not install, epoll leaves it in the backlog.)
        engine.execute(Action::Close { slot: accepted[0] });
        engine.submit_and_wait(Duration::ZERO).unwrap();
        engine.drain_completions(|_| {});
        engine.arm_accept();
        let _third = TcpStream::connect(addr).unwrap();
        let mut again = false;
        run_until(
            &mut engine,
            &mut again,
            |a, e| *a |= matches!(e, Event::Accepted { .. }),
            |a, _| *a,
        );
    }
}

#[test]
fn a_send_the_peer_does_not_read_stays_outstanding_until_cancelled() {
    for kind in KINDS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut engine = client(kind, 2);
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let slot = engine.install(OwnedFd::from(socket)).unwrap().unwrap();
        let (_peer, _) = listener.accept().unwrap();
        // Far more than two socket buffers hold: sends complete short until
        // one finds the socket full and waits.
        let mut total = 0usize;
        let mut outstanding = false;
        let mut sends = 0;
        while !outstanding && sends < 64 {
            engine.execute(Action::Send {
                slot,
                gen: 1,
                buf: vec![7u8; 16 << 20],
            });
            sends += 1;
            outstanding = true;
            let deadline = Instant::now() + Duration::from_millis(300);
            while outstanding && Instant::now() < deadline {
                engine.submit_and_wait(Duration::from_millis(20)).unwrap();
                engine.drain_completions(|e| {
                    if let Event::Sent { result, .. } = e {
                        assert!(result > 0, "{kind}: {result}");
                        total += result as usize;
                        outstanding = false;
                    }
                });
            }
        }
        assert!(
            outstanding,
            "{kind}: a send stays outstanding on a full socket"
        );
        assert!(total < 64 * (16 << 20), "{kind}");
        engine.execute(Action::Cancel {
            slot,
            gen: 1,
            recv: false,
            send: true,
        });
        let mut result = None;
        run_until(
            &mut engine,
            &mut result,
            |result, e| {
                if let Event::Sent { result: r, buf, .. } = e {
                    assert_eq!(buf.len(), 16 << 20, "the buffer comes back");
                    *result = Some(r);
                }
            },
            |result, _| result.is_some(),
        );
        assert_eq!(result, Some(-libc::ECANCELED), "{kind}");
    }
}

#[test]
fn a_write_to_the_eventfd_wakes_an_armed_engine_once() {
    for kind in KINDS {
        let wake = sys::eventfd().unwrap();
        let writer = std::fs::File::from(wake.try_clone().unwrap());
        let mut engine = Engine::new(kind, &config(1), None, wake).unwrap();
        engine.arm_wake();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            (&writer).write_all(&1u64.to_ne_bytes()).unwrap();
            (&writer).write_all(&1u64.to_ne_bytes()).unwrap();
        });
        let mut woken = 0;
        run_until(
            &mut engine,
            &mut woken,
            |w, e| *w += usize::from(matches!(e, Event::Woken)),
            |w, _| *w > 0,
        );
        t.join().unwrap();
        // Not re-armed: no second wake-up, though the writes were two.
        engine.submit_and_wait(Duration::from_millis(50)).unwrap();
        engine.drain_completions(|e| woken += usize::from(matches!(e, Event::Woken)));
        assert_eq!(woken, 1, "{kind}");
    }
}

#[test]
fn auto_resolves_to_a_backend_and_epoll_is_never_probed() {
    let (kind, note) = resolve(EngineChoice::Epoll, RingMode::Defer).unwrap();
    assert_eq!((kind, note), (EngineKind::Epoll, None));
    let (kind, note) = resolve(EngineChoice::Auto, RingMode::Defer).unwrap();
    // Where io_uring runs, auto takes it silently; elsewhere it says why.
    assert_eq!(kind == EngineKind::Epoll, note.is_some());
}

#[test]
fn engine_names_parse() {
    assert_eq!("auto".parse(), Ok(EngineChoice::Auto));
    assert_eq!("uring".parse(), Ok(EngineChoice::Uring));
    assert_eq!("epoll".parse(), Ok(EngineChoice::Epoll));
    assert!("kqueue"
        .parse::<EngineChoice>()
        .unwrap_err()
        .contains("auto, uring or epoll"));
}

#[test]
fn bind_address_no_port_can_be_set() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // Accepted on any IPv4 socket; what matters is that the call is made right.
    sys::set_bind_address_no_port(&socket).unwrap();
}

#[test]
fn many_rings_share_fewer_buffers_each() {
    assert_eq!(EngineConfig::buffers_for(0), 1024);
    assert_eq!(EngineConfig::buffers_for(2), 1024);
    assert_eq!(EngineConfig::buffers_for(7), 1024);
    assert_eq!(EngineConfig::buffers_for(51), 128, "C1M's loadgen workers");
    assert_eq!(EngineConfig::buffers_for(61), 128, "C1M's server shards");
}
