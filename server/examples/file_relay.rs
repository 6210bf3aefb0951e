//! The client of the file-relay benchmark (`bench-results/streams/run.sh`):
//! one publisher sends a file of MB megabytes through the server to READERS
//! readers, as fast as its socket takes it; each reader reads as fast as it can.
//!
//! ```text
//! cargo run --release -p ringroom-server --example file_relay -- \
//!     TARGET ringroom|redis READERS MB SERVER_PID [chat]
//! ```
//!
//! * `ringroom`: the file is one stream of PUBLISH fragments of 60,000 bytes
//!   (MORE on all but the last) to a room the readers joined.
//! * `redis`: the same bytes as PUBLISHes of 60,000-byte bodies to a channel the
//!   readers subscribed to (redis has no streams; each body is a message).
//! * `chat` (ringroom only): meanwhile another member publishes a chat line
//!   every 50 ms to a second room that reader 0 is also in; reader 0 records
//!   each line's delay from its send time, and reads until the file has ended
//!   and at least 40 lines came. With MB 0 there is no file: chat alone.
//!
//! Prints `DONE readers=.. mb_each=.. wall_s=.. min_mbps=.. median_mbps=..
//! max_mbps=.. server_cpu_s=.. cpu_s_per_gb=..` (and `chat_lines= chat_p50_us=
//! chat_p99_us= chat_max_us=`), where a reader's MB/s runs from the
//! publisher's first write to the reader's last byte, and CPU is the server
//! process's user+system time from /proc over the same span.

#[path = "../tests/common/fast_reader.rs"]
mod fast_reader;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fast_reader::FastReader;
use proto::{Fragment, Frame, FrameType, Hello, Publish, Room};

const FRAGMENT: usize = 60_000;
const FILES: &str = "files";
const CHAT: &str = "chat";
/// Chat lines the chat reader waits for at least.
const CHAT_LINES: usize = 40;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: file_relay TARGET ringroom|redis READERS MB SERVER_PID [chat]");
        std::process::exit(2);
    }
    let target: SocketAddr = args[1].parse().expect("TARGET");
    let redis = match args[2].as_str() {
        "ringroom" => false,
        "redis" => true,
        other => panic!("protocol {other:?}: ringroom or redis"),
    };
    let readers: usize = args[3].parse().expect("READERS");
    let mb: usize = args[4].parse().expect("MB");
    let server_pid: u32 = args[5].parse().expect("SERVER_PID");
    let chat = args.get(6).is_some_and(|a| a == "chat");
    assert!(!(chat && redis), "chat lines are measured on ringroom only");
    let fragments = (mb * 1_000_000).div_ceil(FRAGMENT);

    let go = Arc::new(Barrier::new(readers + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let threads: Vec<_> = (0..readers)
        .map(|i| {
            let (go, start) = (go.clone(), start.clone());
            std::thread::spawn(move || {
                let rooms: &[&str] = if chat && i == 0 {
                    &[FILES, CHAT]
                } else {
                    &[FILES]
                };
                let stream = if redis {
                    redis_subscriber(target)
                } else {
                    ringroom_member(target, rooms)
                };
                go.wait();
                let lines = if chat && i == 0 { CHAT_LINES } else { 0 };
                let (bytes, delays) = if redis {
                    read_redis(stream, fragments)
                } else {
                    read_ringroom(stream, fragments > 0, lines, start.clone())
                };
                let took = start.get().expect("set before publishing").elapsed();
                (bytes, took, delays)
            })
        })
        .collect();

    let mut publisher = if redis {
        redis_publisher(target)
    } else {
        ringroom_member(target, &[FILES])
    };
    let done = Arc::new(AtomicBool::new(false));
    let talker = chat.then(|| {
        let mut talker = ringroom_member(target, &[CHAT]);
        let done = done.clone();
        let start = start.clone();
        std::thread::spawn(move || {
            let mut line = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Some(t0) = start.get() {
                    line.clear();
                    let at = t0.elapsed().as_nanos() as u64;
                    publish(CHAT, &at.to_be_bytes(), 0, false, &mut line);
                    talker.write_all(&line).unwrap();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    });
    go.wait();
    let cpu0 = cpu_seconds(server_pid);
    start.set(Instant::now()).unwrap();
    let mut frame = Vec::with_capacity(FRAGMENT + 128);
    let mut data = vec![0xA5u8; FRAGMENT];
    for i in 0..fragments {
        data[..8].copy_from_slice(&(i as u64).to_be_bytes());
        frame.clear();
        if redis {
            redis_command(&[b"PUBLISH", FILES.as_bytes(), &data], &mut frame);
        } else {
            publish(FILES, &data, 1, i + 1 < fragments, &mut frame);
        }
        publisher.write_all(&frame).unwrap();
    }
    let mut per_reader = Vec::new();
    let mut delays = Vec::new();
    let mut delivered = 0u64;
    for t in threads {
        let (bytes, took, d) = t.join().unwrap();
        delivered += bytes;
        per_reader.push(bytes as f64 / 1e6 / took.as_secs_f64());
        delays.extend(d);
    }
    let wall = start.get().unwrap().elapsed();
    let cpu = cpu_seconds(server_pid) - cpu0;
    done.store(true, Ordering::Relaxed);
    if let Some(t) = talker {
        t.join().unwrap();
    }
    per_reader.sort_by(f64::total_cmp);
    let mut line = format!(
        "DONE readers={readers} mb_each={:.1} wall_s={:.3} min_mbps={:.0} median_mbps={:.0} \
         max_mbps={:.0} server_cpu_s={cpu:.2} cpu_s_per_gb={:.2}",
        delivered as f64 / readers as f64 / 1e6,
        wall.as_secs_f64(),
        per_reader[0],
        per_reader[per_reader.len() / 2],
        per_reader[per_reader.len() - 1],
        cpu / (delivered as f64 / 1e9),
    );
    if chat {
        delays.sort();
        let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize].as_micros();
        line += &format!(
            " chat_lines={} chat_p50_us={} chat_p99_us={} chat_max_us={}",
            delays.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    println!("{line}");
}

fn publish(room: &str, body: &[u8], stream: u16, more: bool, out: &mut Vec<u8>) {
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

/// A ringroom connection that said HELLO and joined `rooms`.
fn ringroom_member(target: SocketAddr, rooms: &[&str]) -> TcpStream {
    let mut s = TcpStream::connect(target).expect("connect");
    s.set_nodelay(true).unwrap();
    let mut out = Vec::new();
    Frame::Hello(Hello {
        heartbeat_ms: 300_000,
        name: "file_relay",
    })
    .encode_to_vec(&mut out)
    .unwrap();
    for room in rooms {
        Frame::Join(Room::new(room).unwrap())
            .encode_to_vec(&mut out)
            .unwrap();
    }
    s.write_all(&out).unwrap();
    let mut reader = FastReader::new(s.try_clone().unwrap());
    let mut joined = 0;
    reader.frames(|f| {
        joined += usize::from(f.ty == FrameType::Joined as u8);
        joined < rooms.len()
    });
    s
}

/// Reads the file's fragments (if `file`) until the last, and chat lines
/// until at least `lines` came.
fn read_ringroom(
    stream: TcpStream,
    file: bool,
    lines: usize,
    start: Arc<std::sync::OnceLock<Instant>>,
) -> (u64, Vec<Duration>) {
    let mut reader = FastReader::new(stream);
    let (mut bytes, mut delays) = (0u64, Vec::new());
    let mut file_ended = !file;
    let open = reader.frames(|f| {
        assert_eq!(f.ty, FrameType::Message as u8, "cut off?");
        let body = &f.payload[9 + f.payload[8] as usize..];
        if f.stream == 0 {
            let sent = u64::from_be_bytes(body[..8].try_into().unwrap());
            let t0 = start.get().expect("chat starts after the file");
            delays.push(t0.elapsed() - Duration::from_nanos(sent));
        } else {
            bytes += body.len() as u64;
            file_ended = f.flags & 1 == 0; // MORE clear: the last
        }
        !file_ended || delays.len() < lines
    });
    assert!(open, "EOF before the last fragment");
    (bytes, delays)
}

/// RESP: an array of bulk strings.
fn redis_command(parts: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", parts.len()).as_bytes());
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// A redis connection subscribed to the file channel.
fn redis_subscriber(target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(target).expect("connect");
    let mut cmd = Vec::new();
    redis_command(&[b"SUBSCRIBE", FILES.as_bytes()], &mut cmd);
    s.write_all(&cmd).unwrap();
    let want = format!(
        "*3\r\n$9\r\nsubscribe\r\n${}\r\n{FILES}\r\n:1\r\n",
        FILES.len()
    );
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want.as_bytes(), "SUBSCRIBE reply");
    s
}

/// A redis connection for PUBLISH, whose replies (`:N`) a thread discards.
fn redis_publisher(target: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(target).expect("connect");
    let mut replies = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 16];
        while matches!(replies.read(&mut sink), Ok(n) if n > 0) {}
    });
    s
}

/// Reads `messages` pushes of 60,000-byte bodies; each has the same framing.
fn read_redis(mut stream: TcpStream, messages: usize) -> (u64, Vec<Duration>) {
    let head = format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{FILES}\r\n${FRAGMENT}\r\n",
        FILES.len()
    );
    let total = messages * (head.len() + FRAGMENT + 2);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0;
    while read < total {
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "EOF after {read} of {total} bytes (disconnected by redis?)"
        );
        read += n;
    }
    ((messages * FRAGMENT) as u64, Vec::new())
}

/// User+system CPU seconds of process `pid`, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}
