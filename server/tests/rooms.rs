//! Rooms across shards: the server runs 4 shards (even on 2 cores) and the
//! clients land on different ones; every member gets every message once, in
//! each publisher's order.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Client, Got, Server};
use proto::{ErrorCode, Fragment, Frame, FrameType, Hello, Publish, Room};

fn room(name: &str) -> Room<'_> {
    Room::new(name).unwrap()
}

fn publish<'a>(name: &'a str, body: &'a [u8], echo: bool) -> Frame<'a> {
    Frame::Publish(Publish {
        room: room(name),
        body,
        echo,
        fragment: Fragment::default(),
    })
}

/// A client that said HELLO; returns it with its shard.
fn greeted(server: &Server) -> (Client, u16) {
    let mut c = server.client();
    c.send(&[Frame::Hello(Hello {
        heartbeat_ms: 0,
        name: "member",
    })]);
    let w = c.expect(FrameType::Welcome).payload;
    (c, u16::from_be_bytes([w[20], w[21]]))
}

fn join(c: &mut Client, name: &str) {
    c.send(&[Frame::Join(room(name))]);
    assert_eq!(c.expect(FrameType::Joined).payload, name.as_bytes());
}

/// (from_conn_id, body) of a MESSAGE.
fn message(got: &Got) -> (u64, Vec<u8>) {
    assert_eq!(got.ty, FrameType::Message, "{got:?}");
    let p = &got.payload;
    let from = u64::from_be_bytes(p[..8].try_into().unwrap());
    let room_len = p[8] as usize;
    (from, p[9 + room_len..].to_vec())
}

#[test]
fn every_member_on_every_shard_gets_every_message_once_in_order() {
    let server = Server::start(&["--shards", "4"]);
    let mut members = Vec::new();
    let mut shards = HashSet::new();
    while members.len() < 40 {
        let (mut c, shard) = greeted(&server);
        join(&mut c, "all");
        shards.insert(shard);
        members.push(c);
    }
    assert!(shards.len() >= 3, "members spread over shards: {shards:?}");
    // Three publishers, each publishing 200 numbered messages at once.
    let publishers: Vec<_> = (0..3u8)
        .map(|p| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                join(&mut c, "all");
                let bodies: Vec<[u8; 3]> =
                    (0..200u16).map(|i| [p, (i >> 8) as u8, i as u8]).collect();
                let frames: Vec<Frame<'_>> =
                    bodies.iter().map(|b| publish("all", b, false)).collect();
                c.send(&frames);
                c // keep it open until the members have read
            })
        })
        .collect();
    let publishers: Vec<Client> = publishers.into_iter().map(|t| t.join().unwrap()).collect();
    for m in &mut members {
        let mut next = [0u16; 3];
        let mut from_ids = [None::<u64>; 3];
        for _ in 0..600 {
            let (from, body) = message(&m.recv().expect("a message"));
            let (p, i) = (body[0] as usize, u16::from_be_bytes([body[1], body[2]]));
            assert_eq!(i, next[p], "publisher {p}: out of order or duplicated");
            next[p] += 1;
            assert!(from_ids[p].is_none_or(|f| f == from));
            from_ids[p] = Some(from);
        }
        assert_eq!(next, [200; 3]);
        m.ping_pong(b"nothing more"); // no stray messages queued after them
    }
    drop(publishers);
    assert!(server.metric("ringroom_cross_core_sent_total", None) > 0);
}

#[test]
fn leave_and_disconnect_stop_delivery_and_echo_is_honoured() {
    let server = Server::start(&["--shards", "4"]);
    let (mut publisher, _) = greeted(&server);
    let (mut stays, _) = greeted(&server);
    let (mut leaves, _) = greeted(&server);
    let (gone, _) = greeted(&server);
    for c in [&mut publisher, &mut stays, &mut leaves] {
        join(c, "r");
    }
    let mut gone = gone;
    join(&mut gone, "r");
    leaves.send(&[Frame::Leave(room("r"))]);
    leaves.expect(FrameType::Left);
    drop(gone);
    server.wait_metric("ringroom_closed_total", Some("peer"), 1);
    publisher.send(&[publish("r", b"one", false), publish("r", b"two", true)]);
    assert_eq!(message(&stays.expect(FrameType::Message)).1, b"one");
    assert_eq!(message(&stays.expect(FrameType::Message)).1, b"two");
    assert_eq!(
        message(&publisher.expect(FrameType::Message)).1,
        b"two",
        "ECHO only"
    );
    leaves.ping_pong(b"got nothing");
}

#[test]
fn not_member_and_limit_leave_the_connection_usable() {
    let server = Server::start(&["--shards", "4", "--max-rooms-per-conn", "2"]);
    let (mut c, _) = greeted(&server);
    c.send(&[publish("nowhere", b"x", false)]);
    assert_eq!(c.expect(FrameType::Error).code(), ErrorCode::NOT_MEMBER);
    join(&mut c, "a");
    join(&mut c, "b");
    c.send(&[Frame::Join(room("c"))]);
    assert_eq!(c.expect(FrameType::Error).code(), ErrorCode::LIMIT);
    c.ping_pong(b"still usable");
    join(&mut c, "a"); // a rejoin is fine at the limit
}

#[test]
fn one_member_that_stops_reading_is_cut_off_while_100_others_get_everything() {
    let server = Server::start(&[
        "--shards",
        "4",
        "--queue-bytes",
        "262144",
        "--drain-ms",
        "500",
    ]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut slow = Client::from_stream(socket.into());
    join(&mut slow, "r");
    let mut others: Vec<Client> = (0..100)
        .map(|_| {
            let (mut c, _) = greeted(&server);
            join(&mut c, "r");
            c
        })
        .collect();
    let (mut publisher, _) = greeted(&server);
    join(&mut publisher, "r");
    let body = [5u8; 1000];
    // 8 MB in batches of 20 KB: the readers' queues never fill, the slow
    // member's does (its socket buffers hold a few MB at most).
    let (total, per_batch) = (8000, 20);
    let start = Instant::now();
    for batch in 0..(total / per_batch) {
        let frames: Vec<Frame<'_>> = (0..per_batch).map(|_| publish("r", &body, false)).collect();
        publisher.send(&frames);
        for c in &mut others {
            for _ in 0..per_batch {
                c.expect(FrameType::Message);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "batch {batch} too slow"
        );
    }
    server.wait_metric("ringroom_closed_total", Some("slow_consumer"), 1);
    others[0].ping_pong(b"served");
}

#[test]
fn a_room_of_5000_members_gets_a_burst_of_1000_messages_complete() {
    let server = Server::start(&["--shards", "4"]);
    let mut members: Vec<Client> = (0..5000)
        .map(|_| {
            let mut c = server.client();
            c.send(&[Frame::Join(room("big"))]);
            c
        })
        .collect();
    for c in &mut members {
        c.expect(FrameType::Joined);
    }
    let (mut publisher, _) = greeted(&server);
    join(&mut publisher, "big");
    let bodies: Vec<[u8; 2]> = (0..1000u16).map(u16::to_be_bytes).collect();
    let frames: Vec<Frame<'_>> = bodies.iter().map(|b| publish("big", b, false)).collect();
    publisher.send(&frames);
    for c in &mut members {
        for b in &bodies {
            assert_eq!(&message(&c.expect(FrameType::Message)).1, b);
        }
    }
    assert_eq!(server.metric("ringroom_deliveries_total", None), 5_000_000);
}

#[test]
fn full_channels_between_cores_pause_the_publisher_and_lose_nothing() {
    // Inboxes of one message: a burst backs the channels up, and the
    // publisher's reading pauses (TCP pushes back) until they drain; nothing
    // is refused and nothing is lost.
    let server = Server::start(&["--shards", "4", "--channel-capacity", "1"]);
    let (mut publisher, home) = greeted(&server);
    join(&mut publisher, "r");
    let mut remote = loop {
        let (mut c, shard) = greeted(&server);
        if shard != home {
            join(&mut c, "r");
            break c;
        }
    };
    let total = 5000u16;
    let bodies: Vec<[u8; 2]> = (0..total).map(u16::to_be_bytes).collect();
    // In writes of 100, so that later writes meet the channels backed up.
    for chunk in bodies.chunks(100) {
        let frames: Vec<Frame<'_>> = chunk.iter().map(|b| publish("r", b, true)).collect();
        publisher.send(&frames);
        std::thread::sleep(Duration::from_millis(2));
    }
    let sent: Vec<Vec<u8>> = bodies.iter().map(|b| b.to_vec()).collect();
    let echoed: Vec<Vec<u8>> = (0..total)
        .map(|_| {
            let got = publisher.recv().expect("a reply");
            assert_eq!(got.ty, FrameType::Message, "no ERROR: {got:?}");
            message(&got).1
        })
        .collect();
    assert_eq!(echoed, sent, "every PUBLISH accepted, in order");
    let delivered: Vec<Vec<u8>> = (0..total)
        .map(|_| message(&remote.recv().unwrap()).1)
        .collect();
    assert_eq!(delivered, sent, "the other shard got all of them, in order");
    remote.ping_pong(b"and nothing else");
    publisher.ping_pong(b"and reading again");
    assert!(
        server.metric("ringroom_channel_backpressure_total", None) > 0,
        "the burst should have filled the channels"
    );
    assert!(server.metric("ringroom_publish_paused_total", None) > 0);
}
