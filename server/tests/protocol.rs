//! The server as a process on loopback, spoken to by a small client: framing,
//! PING/PONG, HELLO/WELCOME, every fatal error, heartbeats, limits, shutdown.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, Server};
use proto::{ErrorCode, Frame, FrameType, Header, Hello, Status};

fn raw(ty: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Header {
        len: payload.len() as u32,
        ty,
        flags,
        stream: 0,
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn a_frame_fed_byte_by_byte_is_answered() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let mut bytes = Vec::new();
    Frame::Ping(b"one byte at a time")
        .encode_to_vec(&mut bytes)
        .unwrap();
    for b in &bytes {
        c.stream.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.expect(FrameType::Pong).payload, b"one byte at a time");
}

#[test]
fn a_thousand_frames_in_one_write_are_answered_in_order() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let payloads: Vec<[u8; 4]> = (0..1000u32).map(u32::to_be_bytes).collect();
    let frames: Vec<Frame<'_>> = payloads.iter().map(|p| Frame::Ping(p)).collect();
    c.send(&frames);
    for p in &payloads {
        assert_eq!(c.expect(FrameType::Pong).payload, p);
    }
}

#[test]
fn ping_payloads_of_0_to_64_bytes_echo() {
    let server = Server::start(&[]);
    let mut c = server.client();
    for len in 0..=64u8 {
        let payload: Vec<u8> = (0..len).collect();
        c.ping_pong(&payload);
    }
}

#[test]
fn hello_gets_welcome_with_its_fields() {
    let server = Server::start(&[
        "--heartbeat-ms",
        "5000",
        "--min-heartbeat-ms",
        "200",
        "--max-payload",
        "4096",
    ]);
    for (asked, granted) in [(0, 5000), (50, 200), (7000, 7000)] {
        let mut c = server.client();
        c.send(&[Frame::Hello(Hello {
            heartbeat_ms: asked,
            name: "tester",
        })]);
        let w = c.expect(FrameType::Welcome).payload;
        assert_eq!(w.len(), 22);
        let u32_at = |i: usize| u32::from_be_bytes(w[i..i + 4].try_into().unwrap());
        assert_ne!(u64::from_be_bytes(w[..8].try_into().unwrap()), 0, "conn_id");
        assert_eq!(u32_at(8), granted, "heartbeat_ms");
        assert_eq!(u32_at(12), granted * 3, "idle_timeout_ms");
        assert_eq!(u32_at(16), 4096, "max_payload");
        let shard = u16::from_be_bytes([w[20], w[21]]);
        assert!(usize::from(shard) < 64);
        c.ping_pong(b"after hello");
    }
}

#[test]
fn every_fatal_error_closes_only_its_connection() {
    let server = Server::start(&["--max-payload", "1024"]);
    let mut neighbour = server.client();
    let mut too_large = Header {
        len: 1025,
        ty: 0x20,
        flags: 0,
        stream: 0,
    }
    .to_bytes()
    .to_vec();
    too_large.extend_from_slice(&[0; 16]); // the payload never needs to arrive
    let hello = {
        let mut b = Vec::new();
        Frame::Hello(Hello {
            heartbeat_ms: 0,
            name: "x",
        })
        .encode_to_vec(&mut b)
        .unwrap();
        b
    };
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "len over max payload",
            too_large,
            ErrorCode::FRAME_TOO_LARGE,
        ),
        ("unknown type", raw(0x55, 0, b""), ErrorCode::UNKNOWN_TYPE),
        ("reserved flag", raw(0x03, 0x10, b""), ErrorCode::MALFORMED),
        (
            "PING over 64 bytes",
            raw(0x03, 0, &[0; 65]),
            ErrorCode::MALFORMED,
        ),
        (
            "HELLO version 2",
            raw(0x01, 0, &[0, 2, 0, 0, 0, 0]),
            ErrorCode::MALFORMED,
        ),
        (
            "second HELLO",
            [hello.clone(), hello].concat(),
            ErrorCode::MALFORMED,
        ),
        (
            "JOIN with an empty room",
            raw(0x10, 0, b""),
            ErrorCode::MALFORMED,
        ),
        (
            "room not UTF-8",
            raw(0x10, 0, &[0xFF]),
            ErrorCode::MALFORMED,
        ),
        (
            "server-only WELCOME",
            raw(0x02, 0, &[0; 22]),
            ErrorCode::MALFORMED,
        ),
        (
            "server-only ERROR",
            raw(0x7E, 0, &[0, 1]),
            ErrorCode::MALFORMED,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = server.client();
        c.send_raw(&bytes);
        let got = c
            .recv()
            .unwrap_or_else(|| panic!("{what}: closed without ERROR"));
        if got.ty == FrameType::Welcome {
            c.expect_fatal(code); // the second-HELLO case answers the first
        } else {
            assert_eq!(got.ty, FrameType::Error, "{what}");
            assert_eq!(got.code(), code, "{what}");
            assert_eq!(c.recv(), None, "{what}: should be closed");
        }
        neighbour.ping_pong(what.as_bytes());
    }
    server.wait_metric("ringroom_closed_total", Some("frame_too_large"), 1);
    server.wait_metric("ringroom_closed_total", Some("unknown_type"), 1);
    server.wait_metric("ringroom_closed_total", Some("malformed"), 8);
}

#[test]
fn non_fatal_errors_keep_the_connection() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let publish = Frame::Publish(proto::Publish {
        room: proto::Room::new("lobby").unwrap(),
        body: b"not a member",
        echo: false,
        fragment: proto::Fragment::default(),
    });
    c.send(&[publish]);
    let got = c.expect(FrameType::Error);
    assert_eq!(got.code(), ErrorCode::NOT_MEMBER);
    assert!(!got.code().is_fatal(), "{got:?}");
    c.ping_pong(b"still open");
}

#[test]
fn silence_expires_within_one_tick_of_the_deadline() {
    let server = Server::start(&["--tick-ms", "100", "--min-heartbeat-ms", "100"]);
    let mut c = server.client();
    c.send(&[Frame::Hello(Hello {
        heartbeat_ms: 200,
        name: "quiet",
    })]);
    c.expect(FrameType::Welcome);
    let last_sent = Instant::now();
    let got = c.expect(FrameType::Error);
    let waited = last_sent.elapsed();
    assert_eq!(got.code(), ErrorCode::HEARTBEAT_TIMEOUT);
    assert_eq!(c.recv(), None);
    // Deadline 600 ms after the HELLO; one tick is 100 ms. The upper bound
    // allows 150 ms more for scheduling on a loaded machine.
    assert!(
        waited >= Duration::from_millis(590),
        "expired early: {waited:?}"
    );
    assert!(
        waited <= Duration::from_millis(850),
        "expired late: {waited:?}"
    );
    server.wait_metric("ringroom_wheel_expiries_total", None, 1);
}

#[test]
fn activity_of_any_kind_keeps_a_connection_alive() {
    let server = Server::start(&["--tick-ms", "50", "--min-heartbeat-ms", "100"]);
    let mut pinger = server.client();
    let mut ponger = server.client();
    for c in [&mut pinger, &mut ponger] {
        c.send(&[Frame::Hello(Hello {
            heartbeat_ms: 100,
            name: "busy",
        })]); // idle 300 ms
        c.expect(FrameType::Welcome);
    }
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        pinger.ping_pong(b"alive");
        ponger.send(&[Frame::Pong(b"unsolicited, still a sign of life")]);
    }
    ponger.ping_pong(b"both alive after 1.5 s, 5 idle timeouts");
}

#[test]
fn connections_beyond_max_conns_are_overloaded() {
    let server = Server::start(&["--max-conns", "2"]);
    let mut a = server.client();
    let mut b = server.client();
    a.ping_pong(b"a");
    b.ping_pong(b"b");
    let mut c = server.client();
    c.expect_fatal(ErrorCode::OVERLOADED);
    a.ping_pong(b"a still served");
    server.wait_metric("ringroom_closed_total", Some("overloaded"), 1);
    drop(b);
    server.wait_metric("ringroom_closed_total", Some("peer"), 1);
    let mut d = server.client();
    d.ping_pong(b"a freed place is taken again");
}

#[test]
fn sigterm_sends_goaway_and_exits_zero() {
    let mut server = Server::start(&["--drain-ms", "1000"]);
    let mut clients: Vec<Client> = (0..5).map(|_| server.client()).collect();
    for c in &mut clients {
        c.ping_pong(b"up");
    }
    server.signal("TERM");
    for c in &mut clients {
        let got = c.expect(FrameType::GoAway);
        assert_eq!(got.code(), ErrorCode::SHUTTING_DOWN);
        assert_eq!(c.recv(), None);
    }
    let status = server.wait();
    assert!(
        status.success(),
        "exit status {status:?}; stderr: {}",
        server.stderr
    );
}

#[test]
fn sigint_with_an_unresponsive_client_still_exits_within_the_drain_time() {
    let mut server = Server::start(&["--drain-ms", "300"]);
    let mut c = server.client();
    c.ping_pong(b"up");
    let start = Instant::now();
    server.signal("INT"); // the client never closes its side
    let status = server.wait();
    assert!(status.success(), "{}", server.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(c.expect(FrameType::GoAway).code(), ErrorCode::SHUTTING_DOWN);
}

#[test]
fn a_panicking_shard_ends_the_process_with_an_error() {
    let mut server = Server::start(&["--test-panic-after-ms", "200"]);
    let status = server.wait();
    assert!(!status.success());
    assert!(
        server.stderr.contains("test panic requested"),
        "{}",
        server.stderr
    );
    assert!(server.stderr.contains("aborting"), "{}", server.stderr);
}

#[test]
fn a_slow_consumer_is_cut_off_and_others_are_not_slowed() {
    let server = Server::start(&["--queue-bytes", "65536", "--drain-ms", "500"]);
    // A client with a tiny receive window that never reads.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut slow = Client::from_stream(socket.into());
    let writer = {
        let mut stream = slow.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut chunk = Vec::new();
            for _ in 0..1000 {
                Frame::Ping(&[7; 64]).encode_to_vec(&mut chunk).unwrap();
            }
            // Up to 100,000 PINGs (7.2 MB of PONGs); the server stops reading
            // them once it has cut this connection off.
            for _ in 0..100 {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    let mut fast = server.client();
    let start = Instant::now();
    while server.metric("ringroom_closed_total", Some("slow_consumer")) == 0 {
        fast.ping_pong(b"not slowed");
        assert!(
            start.elapsed() < common::TIMEOUT,
            "slow consumer never cut off"
        );
    }
    // Still served promptly after the cut.
    for _ in 0..100 {
        let t = Instant::now();
        fast.ping_pong(b"after");
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    // The slow one's stream ends (EOF or reset) once its drain time is over.
    while slow.recv().is_some() {}
    writer.join().unwrap();
}

#[test]
fn metrics_are_served_as_prometheus_text() {
    let server = Server::start(&[]);
    let mut c = server.client();
    c.ping_pong(b"count me");
    let text = server.metrics_text();
    for name in [
        "ringroom_connections_open",
        "ringroom_accepted_total",
        "ringroom_closed_total",
        "ringroom_frames_in_total",
        "ringroom_frames_out_total",
        "ringroom_bytes_in_total",
        "ringroom_bytes_out_total",
        "ringroom_enobufs_rearms_total",
        "ringroom_wheel_expiries_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    assert!(server.metric("ringroom_frames_in_total", None) >= 1);
    assert_eq!(server.metric("ringroom_connections_open", None), 1);
    // The engine, as the ready line named it.
    let info = format!("ringroom_engine_info{{engine=\"{}\"}} 1", server.engine);
    assert!(text.lines().any(|l| l == info), "{info} missing");
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringroom-server"))
        .args(["--listen", "127.0.0.1:0", "--buffers", "1000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}

#[test]
fn goaway_from_a_client_is_flushed_and_closed() {
    let server = Server::start(&[]);
    let mut c = server.client();
    let bye = Frame::GoAway(Status {
        code: ErrorCode::SHUTTING_DOWN,
        reason: "done",
    });
    c.send(&[Frame::Ping(b"last"), bye]);
    assert_eq!(c.expect(FrameType::Pong).payload, b"last");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.recv(), None);
}

#[test]
fn tcp_keepalive_is_set_on_accepted_sockets() {
    let server = Server::start(&["--tcp-keepalive", "7,3,2", "--tcp-user-timeout", "4000"]);
    let mut c = server.client();
    c.ping_pong(b"up");
    let filter = format!("( sport = :{} )", server.addr.port());
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", &filter])
        .output()
        .expect("ss (iproute2) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("timer:(keepalive,"),
        "no keepalive timer on the server's socket: {text}"
    );
}

#[test]
fn a_dry_buffer_ring_is_rearmed_and_nothing_is_lost() {
    // Two 64-byte receive buffers per shard for 50 clients sending at once:
    // io_uring's receives run out of buffers (ENOBUFS), are re-armed, and
    // every PING is still answered. (epoll reads into one shared buffer of
    // its own size, and must answer every PING all the same.)
    let server = Server::start(&["--buffers", "2", "--buffer-size", "64"]);
    let mut clients: Vec<Client> = (0..50).map(|_| server.client()).collect();
    for round in 0..20u8 {
        for c in &mut clients {
            c.send(&[Frame::Ping(&[round; 40]), Frame::Ping(&[round; 40])]);
        }
        for c in &mut clients {
            for _ in 0..2 {
                assert_eq!(c.expect(FrameType::Pong).payload, [round; 40]);
            }
        }
    }
    if server.engine == "uring" {
        assert!(
            server.metric("ringroom_enobufs_rearms_total", None) > 0,
            "the test should have run the ring dry"
        );
    }
}

#[test]
fn a_full_fixed_file_table_is_counted_and_recovers() {
    // One shard, --max-conns 1: a table of 1 x 1.1 + 64 = 65 slots. 100
    // connections fill it: the first is served, the next 64 are told
    // OVERLOADED, the rest wait in the listen backlog while the accept fails
    // with ENFILE (counted) and is retried.
    let server = Server::start(&["--shards", "1", "--max-conns", "1", "--drain-ms", "10000"]);
    let mut first = server.client();
    first.ping_pong(b"first");
    let crowd: Vec<Client> = (0..100).map(|_| server.client()).collect();
    server.wait_metric("ringroom_accept_errors_total", None, 1);
    first.ping_pong(b"the shard still serves");
    // The crowd leaves; the slots come back and a newcomer is served.
    drop(crowd);
    drop(first);
    let start = Instant::now();
    loop {
        let mut c = server.client();
        c.send(&[Frame::Ping(b"again")]);
        match c.recv() {
            Some(got) if got.ty == FrameType::Pong => break,
            _ => {}
        }
        assert!(start.elapsed() < common::TIMEOUT, "never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn discovery_datagrams_are_answered_and_junk_is_ignored() {
    let server = Server::start(&["--name", "lab-7"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket.send_to(b"RRFIND01short", server.discovery).unwrap();
    socket
        .send_to(&proto::discovery::request(*b"12345678"), server.discovery)
        .unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    let reply = proto::discovery::parse_reply(&buf[..n]).expect("a discovery reply");
    assert_eq!(reply.nonce, *b"12345678");
    assert_eq!(reply.tcp_port, server.addr.port());
    assert_eq!(reply.name, "lab-7");
    assert!(socket.recv_from(&mut buf).is_err(), "junk gets no answer");
    assert_eq!(server.metric("ringroom_discovery_ignored_total", None), 1);
    server.client().ping_pong(b"TCP unaffected");
}
