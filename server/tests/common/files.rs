//! A file streamed through a room: the publisher's fragments, numbered, and
//! readers that check each one, at full speed or throttled. Shared by the
//! streams tests and the cluster tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use proto::{ErrorCode, Fragment, Frame, FrameType, Hello, Publish, Room};

use super::{Client, FastReader, Server};

pub const ROOM: &str = "files";
/// Bytes of a file fragment's body: PUBLISH fragments of 60,000 bytes.
pub const FRAGMENT: usize = 60_000;
/// 1,119 fragments of 60,000 bytes: 67.1 MB, just over 64 MiB.
pub const FILE_FRAGMENTS: u32 = 1_119;

/// A client that said HELLO and joined `rooms`.
pub fn member_of(server: &Server, rooms: &[&str]) -> Client {
    let mut c = server.client();
    c.send(&[Frame::Hello(Hello {
        heartbeat_ms: 0,
        name: "member",
    })]);
    c.expect(FrameType::Welcome);
    for room in rooms {
        c.send(&[Frame::Join(Room::new(room).unwrap())]);
        assert_eq!(c.expect(FrameType::Joined).payload, room.as_bytes());
    }
    c
}

pub fn joined(server: &Server) -> Client {
    member_of(server, &[ROOM])
}

/// A PUBLISH of `body` to the file room, a stream fragment if `stream` != 0.
pub fn publish_bytes(body: &[u8], stream: u16, more: bool, out: &mut Vec<u8>) {
    publish_to(ROOM, body, stream, more, out);
}

pub fn publish_to(room: &str, body: &[u8], stream: u16, more: bool, out: &mut Vec<u8>) {
    Frame::Publish(Publish {
        room: Room::new(room).unwrap(),
        body,
        echo: false,
        fragment: Fragment {
            stream,
            more,
            cancel: false,
        },
    })
    .encode_to_vec(out)
    .unwrap();
}

/// The body of a MESSAGE payload.
pub fn body(payload: &[u8]) -> &[u8] {
    &payload[9 + payload[8] as usize..]
}

/// Sends the file as one stream, each fragment's body led by its index.
pub fn stream_file(publisher: &mut Client, fragments: u32, stop: Option<&AtomicBool>) -> u32 {
    let mut frame = Vec::with_capacity(FRAGMENT + 100);
    let mut data = vec![0xA5u8; FRAGMENT];
    let mut sent = 0;
    for i in 0..fragments {
        let last = i + 1 == fragments || stop.is_some_and(|s| s.load(Ordering::Relaxed));
        data[..4].copy_from_slice(&i.to_be_bytes());
        frame.clear();
        publish_bytes(&data, 1, !last, &mut frame);
        if let Err(e) = std::io::Write::write_all(&mut publisher.stream, &frame) {
            let why = publisher.recv();
            panic!("the publisher's write failed after {sent} fragments: {e}; it got {why:?}");
        }
        sent += 1;
        if last {
            break;
        }
    }
    sent
}

/// The ERROR code of an ERROR frame's payload.
pub fn error_code(payload: &[u8]) -> ErrorCode {
    ErrorCode(u16::from_be_bytes([payload[0], payload[1]]))
}

/// Reads fragments of stream 1 until the last; checks each one's index and
/// size. Returns how many arrived, or the ERROR code that cut the reader.
pub fn read_file(reader: Client, bytes_per_sec: Option<usize>) -> Result<u32, ErrorCode> {
    let mut reader = FastReader::new(reader.into_stream());
    let mut next = 0u32;
    let mut read = 0usize;
    let mut result = None;
    let start = Instant::now();
    let open = reader.frames(|f| {
        if f.ty == FrameType::Error as u8 {
            result = Some(Err(error_code(f.payload)));
            return false;
        }
        assert_eq!(f.ty, FrameType::Message as u8);
        assert_eq!(f.stream, 1);
        let b = body(f.payload);
        assert_eq!(b.len(), FRAGMENT, "fragment {next}");
        assert_eq!(
            u32::from_be_bytes(b[..4].try_into().unwrap()),
            next,
            "in order"
        );
        next += 1;
        read += f.payload.len();
        if let Some(per_sec) = bytes_per_sec {
            // Sleep until this many bytes are due at the throttled rate.
            let due = Duration::from_secs_f64(read as f64 / per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if f.flags & 1 == 0 {
            result = Some(Ok(next)); // MORE clear: the last fragment
            return false;
        }
        true
    });
    assert!(open, "EOF after {next} fragments");
    result.expect("stopped only with a result")
}

/// A file of `fragments` from `publisher` to a reader throttled to 10 MB/s
/// and one that keeps up (small socket buffers at the client ends, so that
/// what paces is the server). Both must get every fragment; returns when
/// the publisher was done and when the slow reader was.
pub fn to_a_throttled_and_a_fast_reader(
    slow: Client,
    fast: Client,
    mut publisher: Client,
    fragments: u32,
) -> (Duration, Duration) {
    let _ = socket2::SockRef::from(&slow.stream).set_recv_buffer_size(64 << 10);
    let _ = socket2::SockRef::from(&publisher.stream).set_send_buffer_size(64 << 10);
    let slow = std::thread::spawn(move || read_file(slow, Some(10_000_000)));
    let fast = std::thread::spawn(move || read_file(fast, None));
    let start = Instant::now();
    stream_file(&mut publisher, fragments, None);
    let publisher_done = start.elapsed();
    assert_eq!(slow.join().unwrap(), Ok(fragments));
    assert_eq!(fast.join().unwrap(), Ok(fragments));
    (publisher_done, start.elapsed())
}
