//! Slow frames from outside: bytes of a frame that never completes are no
//! sign of life, a frame begun must complete within the frame timeout, and a
//! shard holds a bounded amount of incomplete frames.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Client, Server};
use proto::{ErrorCode, Frame, FrameType, Hello};

fn hello(c: &mut Client, heartbeat_ms: u32) {
    c.send(&[Frame::Hello(Hello {
        heartbeat_ms,
        name: "trickler",
    })]);
    c.expect(FrameType::Welcome);
}

/// Sends `frame` one byte every `every` until the server ends the
/// connection; returns how long after the first byte it did, and its ERROR.
fn trickle(c: &mut Client, frame: &[u8], every: Duration) -> (Duration, ErrorCode) {
    c.stream.set_nonblocking(false).unwrap();
    let mut reader = c.stream.try_clone().unwrap();
    let watcher = std::thread::spawn(move || {
        let mut r = Client::from_stream(reader.try_clone().unwrap());
        let got = r.expect(FrameType::Error);
        let _ = reader.flush();
        (Instant::now(), got.code())
    });
    let start = Instant::now();
    for byte in frame {
        if watcher.is_finished() || c.stream.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(every);
    }
    let (at, code) = watcher.join().unwrap();
    (at - start, code)
}

#[test]
fn a_trickled_frame_is_cut_within_one_tick_of_the_frame_timeout() {
    let server = Server::start(&["--frame-timeout-ms", "1000", "--tick-ms", "100"]);
    let mut c = server.client();
    hello(&mut c, 10_000); // idle timeout 30 s: only the frame timeout applies
    let mut ping = Vec::new();
    Frame::Ping(&[7; 64]).encode_to_vec(&mut ping).unwrap();
    let (after, code) = trickle(&mut c, &ping, Duration::from_millis(50));
    eprintln!("cut {after:?} after the frame's first byte");
    assert_eq!(code, ErrorCode::HEARTBEAT_TIMEOUT);
    assert!(after >= Duration::from_millis(1000), "{after:?}");
    assert!(
        after < Duration::from_millis(1250),
        "{after:?}: one tick is 100 ms"
    );
    drop(c); // it closes once the peer has read its ERROR and gone
    server.wait_metric("ringroom_closed_total", Some("frame_timeout"), 1);
    server.client().ping_pong(b"others are served");
}

#[test]
fn bytes_of_an_unfinished_frame_do_not_keep_a_connection_alive() {
    // Issue 11's case: a 1,000 ms heartbeat (idle timeout 3 s), then a frame
    // header and one byte every 0.5 s. It used to stay connected for ever.
    let server = Server::start(&[]);
    let mut c = server.client();
    hello(&mut c, 1000);
    let mut publish = Vec::new();
    Frame::Ping(&[1; 64]).encode_to_vec(&mut publish).unwrap();
    let (after, code) = trickle(&mut c, &publish, Duration::from_millis(500));
    eprintln!("cut {after:?} after the trickle began");
    assert_eq!(code, ErrorCode::HEARTBEAT_TIMEOUT);
    assert!(after < Duration::from_millis(3300), "{after:?}");
}

#[test]
fn a_thousand_large_partial_frames_hit_the_shard_budget_and_a_normal_client_is_served() {
    // The budget of 256 carry-overs of 65,536 bytes (each with its record).
    let carry = 65_536 + proto::Decoder::CARRY_RECORD_BYTES;
    let budget = (256 * carry).to_string();
    let server = Server::start(&["--shards", "1", "--partial-bytes", &budget]);
    let mut header = [0u8; 8];
    header[..4].copy_from_slice(&65_536u32.to_be_bytes());
    header[4] = FrameType::Publish as u8;
    let mut part = header.to_vec();
    part.push(1); // room_len
    part.push(b'r');
    part.resize(8 + 60_000, 0);
    let mut holders: Vec<Client> = Vec::new();
    for _ in 0..1000 {
        let mut c = server.client();
        c.send_raw(&part);
        holders.push(c);
    }
    let mut normal = server.client();
    normal.ping_pong(b"served while the budget is spent");
    server.wait_metric("ringroom_partial_frame_refused_total", None, 744);
    let mut overloaded = 0;
    for c in &mut holders {
        c.stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = std::io::Read::read(&mut c.stream, &mut buf) {
            if n >= 10 && buf[4] == FrameType::Error as u8 {
                assert_eq!(
                    u16::from_be_bytes([buf[8], buf[9]]),
                    ErrorCode::OVERLOADED.0
                );
                overloaded += 1;
            }
        }
    }
    assert_eq!(overloaded, 744, "everyone past the budget, and nobody else");
    assert_eq!(
        server.metric("ringroom_partial_frame_bytes", None),
        256 * carry as u64
    );
    normal.ping_pong(b"still served");
}
