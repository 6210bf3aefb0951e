//! Rooms under real traffic, from outside: a publisher at full speed, readers
//! that keep up, a throttled reader, one that stops, and chat lines beside a
//! file. Each reader is a thread of its own with a blocking socket that it
//! reads as fast as it can; the server is a separate process.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use common::files::*;
use common::{Client, FastReader, Server};
use proto::FrameType;

/// These tests load both cores: one at a time, so that each measures itself.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many runs of each scenario (`RINGROOM_STREAM_RUNS`, default 5).
fn runs() -> usize {
    std::env::var("RINGROOM_STREAM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// The room chat lines go to in the priority test (the file goes to ROOM).
const CHAT: &str = "chat";

/// The scenario of issue 11: three readers that keep up, one publisher
/// streaming 67 MB as fast as its socket takes it. Every reader gets every
/// fragment in order; nobody is cut.
fn file_to_three_fast_readers(options: &[&str]) {
    let server = Server::start(options);
    for run in 0..runs() {
        let mut readers: Vec<Client> = (0..3).map(|_| joined(&server)).collect();
        let mut publisher = joined(&server);
        let threads: Vec<_> = readers
            .drain(..)
            .map(|r| std::thread::spawn(move || read_file(r, None)))
            .collect();
        let start = Instant::now();
        stream_file(&mut publisher, FILE_FRAGMENTS, None);
        for t in threads {
            assert_eq!(
                t.join().unwrap(),
                Ok(FILE_FRAGMENTS),
                "{options:?}, run {run}: a reader did not get the whole file"
            );
        }
        eprintln!(
            "{options:?} run {run}: 3 x {} MB in {:?}",
            FILE_FRAGMENTS as usize * FRAGMENT / 1_000_000,
            start.elapsed()
        );
    }
    assert_eq!(
        server.metric("ringroom_closed_total", Some("slow_consumer")),
        0
    );
}

#[test]
fn a_file_reaches_three_fast_readers_on_one_shard() {
    let _alone = alone();
    file_to_three_fast_readers(&["--shards", "1"]);
}

#[test]
fn a_file_reaches_three_fast_readers_on_two_shards() {
    let _alone = alone();
    file_to_three_fast_readers(&["--shards", "2"]);
}

#[test]
fn a_file_reaches_three_fast_readers_through_large_receive_buffers() {
    // A 16 MiB receive ring: what a paused publisher's receive delivers
    // before its cancel takes effect can exceed 8 MiB, and is still kept.
    let _alone = alone();
    file_to_three_fast_readers(&["--buffer-size", "65536", "--buffers", "256"]);
}

#[test]
fn a_file_reaches_three_fast_readers_on_four_shards() {
    let _alone = alone();
    file_to_three_fast_readers(&["--shards", "4"]);
}

/// 65,536 chat messages of 1 KB at full speed, readers that keep up, and a
/// 64 KiB queue bound: nobody is cut, every message arrives once in order.
fn chat_to_five_fast_readers(shards: &str) {
    const MESSAGES: u32 = 65_536;
    let server = Server::start(&["--shards", shards, "--queue-bytes", "65536"]);
    for run in 0..runs() {
        let readers: Vec<Client> = (0..5).map(|_| joined(&server)).collect();
        let mut publisher = joined(&server);
        let threads: Vec<_> = readers
            .into_iter()
            .map(|r| {
                std::thread::spawn(move || {
                    let mut r = FastReader::new(r.into_stream());
                    let mut next = 0u32;
                    let mut cut = None;
                    let open = r.frames(|f| {
                        if f.ty == FrameType::Error as u8 {
                            cut = Some((next, error_code(f.payload)));
                            return false;
                        }
                        let b = body(f.payload);
                        assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), next);
                        next += 1;
                        next < MESSAGES
                    });
                    assert!(open, "EOF after {next} messages");
                    cut.map_or(Ok(()), Err)
                })
            })
            .collect();
        let mut batch = Vec::new();
        let mut data = [0x5Au8; 1000];
        for i in 0..MESSAGES {
            data[..4].copy_from_slice(&i.to_be_bytes());
            publish_bytes(&data, 0, false, &mut batch);
            if batch.len() > 60_000 {
                publisher.send_raw(&batch);
                batch.clear();
            }
        }
        publisher.send_raw(&batch);
        for t in threads {
            assert_eq!(
                t.join().unwrap(),
                Ok(()),
                "--shards {shards}, run {run}: a reader was cut"
            );
        }
    }
    assert_eq!(
        server.metric("ringroom_closed_total", Some("slow_consumer")),
        0
    );
}

#[test]
fn chat_at_full_speed_reaches_fast_readers_with_a_64k_queue_on_one_shard() {
    let _alone = alone();
    chat_to_five_fast_readers("1");
}

#[test]
fn chat_at_full_speed_reaches_fast_readers_with_a_64k_queue_on_two_shards() {
    let _alone = alone();
    chat_to_five_fast_readers("2");
}

#[test]
fn chat_at_full_speed_reaches_fast_readers_with_a_64k_queue_on_four_shards() {
    let _alone = alone();
    chat_to_five_fast_readers("4");
}

#[test]
fn a_throttled_reader_gets_the_whole_file_and_paces_the_publisher() {
    let _alone = alone();
    // 500 fragments (30 MB); one reader takes 10 MB/s, one keeps up.
    const FRAGMENTS: u32 = 500;
    let server = Server::start(&["--shards", "2"]);
    // The server's own end of the publisher's connection still buffers up
    // to tcp_rmem's maximum (6 MB by default) once it pauses reading.
    let (publisher_done, total) = to_a_throttled_and_a_fast_reader(
        joined(&server),
        joined(&server),
        joined(&server),
        FRAGMENTS,
    );
    eprintln!("publisher done after {publisher_done:?}, slow reader after {total:?}");
    // 30 MB at 10 MB/s: 3 s. The publisher could write all of it in a
    // fraction of that; held to the slow reader's pace, it ends when what is
    // left fits in the window and the sockets' buffers (under 11 MB here).
    assert!(total >= Duration::from_millis(2900), "throttled: {total:?}");
    assert!(
        publisher_done > Duration::from_millis(1800),
        "the publisher was not paced: done after {publisher_done:?}"
    );
    assert!(server.metric("ringroom_flow_paused_total", None) > 0);
    assert_eq!(
        server.metric("ringroom_closed_total", Some("slow_consumer")),
        0
    );
}

#[test]
fn a_reader_that_stops_is_cut_after_the_slow_consumer_limit_and_the_rest_finish() {
    let _alone = alone();
    const FRAGMENTS: u32 = 400; // 24 MB
    let server = Server::start(&["--shards", "2", "--slow-consumer-ms", "1000"]);
    let stopped = joined(&server);
    let _ = socket2::SockRef::from(&stopped.stream).set_recv_buffer_size(64 << 10);
    let fast = joined(&server);
    let mut publisher = joined(&server);
    let fast = std::thread::spawn(move || read_file(fast, None));
    let start = Instant::now();
    stream_file(&mut publisher, FRAGMENTS, None);
    assert_eq!(fast.join().unwrap(), Ok(FRAGMENTS));
    let took = start.elapsed();
    eprintln!("the fast reader finished after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "held back until the cut"
    );
    assert!(took < Duration::from_secs(8));
    server.wait_metric("ringroom_slow_consumer_stalls_total", None, 1);
    drop(stopped);
}

/// Chat lines every 50 ms from one member to another, while (or not) a file
/// streams to that other member as fast as it reads: their delay, p50 / p99 / max.
fn chat_delays(with_file: bool) -> (Duration, Duration, Duration) {
    const LINES: usize = 40;
    let server = Server::start(&["--shards", "2"]);
    let mut receiver = member_of(&server, &[ROOM, CHAT]);
    let mut talker = member_of(&server, &[CHAT]);
    let mut filer = joined(&server);
    let epoch = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(2));
    let file = with_file.then(|| {
        let (done, go) = (done.clone(), go.clone());
        std::thread::spawn(move || {
            go.wait();
            stream_file(&mut filer, u32::MAX, Some(&done))
        })
    });
    let reader = std::thread::spawn(move || {
        let mut delays = Vec::new();
        let mut fragments = 0u32;
        let mut file_ended = !with_file;
        while delays.len() < LINES || !file_ended {
            let got = receiver.recv().expect("EOF");
            assert_eq!(got.ty, FrameType::Message);
            if got.stream != 0 {
                let b = body(&got.payload);
                assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()), fragments);
                fragments += 1;
                file_ended = got.flags & 1 == 0;
            } else {
                let b = body(&got.payload);
                let sent = u64::from_be_bytes(b[..8].try_into().unwrap());
                delays.push(epoch.elapsed() - Duration::from_nanos(sent));
            }
        }
        (delays, fragments)
    });
    if with_file {
        go.wait();
        std::thread::sleep(Duration::from_millis(200)); // the file is flowing
    }
    for _ in 0..LINES {
        let now = epoch.elapsed().as_nanos() as u64;
        let mut line = Vec::new();
        publish_to(CHAT, &now.to_be_bytes(), 0, false, &mut line);
        talker.send_raw(&line);
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed); // the file ends with its next fragment
    let (mut delays, received) = reader.join().unwrap();
    if let Some(file) = file {
        let fragments = file.join().unwrap();
        assert_eq!(received, fragments, "the whole file, in order");
        eprintln!(
            "{fragments} file fragments ({} MB) streamed meanwhile",
            fragments as usize * FRAGMENT / 1_000_000
        );
        assert!(fragments > 100, "the file did stream");
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99), *delays.last().unwrap())
}

#[test]
fn chat_lines_do_not_wait_behind_a_file() {
    let _alone = alone();
    let without = chat_delays(false);
    let with = chat_delays(true);
    eprintln!(
        "chat delay p50 / p99 / max without a file: {without:?}; with a file streaming: {with:?}"
    );
    assert!(
        with.1 < without.1 + Duration::from_millis(20),
        "p99 with a file {:?} vs without {:?}",
        with.1,
        without.1
    );
}
