//! Rooms across nodes, from outside: real nats-server processes clustered
//! by routes on loopback, ringroom nodes each linked to a different one,
//! clients on every node. Every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use common::{Client, Server};
use proto::{ErrorCode, Frame, FrameType, Message, Publish, Room};

/// The slow-consumer limit every test NATS server has.
const NATS_LIMITS: &str = "max_pending: 67108864\nwrite_deadline: \"2s\"";

/// Node `i` (id i+1) linked first to NATS server `i`.
fn node(nats: &NatsCluster, i: usize, extra: &[&str]) -> Server {
    let seeds = nats.seeds_from(i);
    let id = (i + 1).to_string();
    let mut args = vec!["--cluster", &seeds, "--node-id", &id];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    assert!(
        s.ready_line().contains(&format!("cluster node {id} via")),
        "{}",
        s.ready_line()
    );
    assert!(s.ready_line().contains("(linked)"), "{}", s.ready_line());
    s
}

fn join(c: &mut Client, room: &str) {
    c.send(&[Frame::Join(Room::new(room).unwrap())]);
    assert_eq!(c.expect(FrameType::Joined).payload, room.as_bytes());
}

fn publish(c: &mut Client, room: &str, body: &[u8]) {
    c.send(&[Frame::Publish(Publish {
        room: Room::new(room).unwrap(),
        body,
        echo: false,
        fragment: Default::default(),
    })]);
}

/// What a member saw of a room: message numbers (from the body's first 8
/// bytes) by publisher, and GAP notices, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Msg { from: u64, seq: u64 },
    Gap,
}

/// Reads until `done` says so or `within` passes.
fn read_room(
    c: &mut Client,
    room: &str,
    within: Duration,
    mut done: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    c.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while !done(&seen) && Instant::now() < deadline {
        let Some(got) = c.try_recv() else { continue };
        match got.ty {
            FrameType::Message => {
                let mut frame = vec![0u8; 8];
                frame[..4].copy_from_slice(&(got.payload.len() as u32).to_be_bytes());
                frame[4] = FrameType::Message as u8;
                frame.extend_from_slice(&got.payload);
                let m = Message::from_frame(&frame).unwrap();
                if m.room.as_str() == room {
                    let seq = u64::from_be_bytes(m.body[..8].try_into().unwrap());
                    seen.push(Seen::Msg {
                        from: m.from_conn_id,
                        seq,
                    });
                }
            }
            FrameType::Error => {
                assert_eq!(got.code(), ErrorCode::GAP, "{got:?}");
                if &got.payload[2..] == room.as_bytes() {
                    seen.push(Seen::Gap);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

/// Every message of one publisher, 0..n, arrived once and in order, or its
/// absence is covered: a GAP notice came after the message before it and
/// before the one after it. Returns (received, missing).
fn check_covered(seen: &[Seen], from: u64, n: u64) -> (u64, u64) {
    let mut next = 0;
    let mut gap_since_last = false;
    let mut missing = 0;
    for s in seen {
        match *s {
            Seen::Gap => gap_since_last = true,
            Seen::Msg { from: f, seq } if f == from => {
                assert!(
                    seq >= next,
                    "out of order or duplicate: {seq} after {next}: {seen:?}"
                );
                if seq > next {
                    assert!(
                        gap_since_last,
                        "{} message(s) before {seq} lost silently",
                        seq - next
                    );
                    missing += seq - next;
                }
                next = seq + 1;
                gap_since_last = false;
            }
            Seen::Msg { .. } => {}
        }
    }
    if next < n {
        assert!(
            gap_since_last,
            "the last {} message(s) lost silently",
            n - next
        );
        missing += n - next;
    }
    (n - missing, missing)
}

fn conn_id(c: &mut Client) -> u64 {
    c.send(&[Frame::Hello(proto::Hello {
        heartbeat_ms: 0,
        name: "t",
    })]);
    let w = c.expect(FrameType::Welcome);
    u64::from_be_bytes(w.payload[..8].try_into().unwrap())
}

#[test]
fn members_on_three_nodes_get_every_message_once_and_in_order() {
    let nats = NatsCluster::start(3, NATS_LIMITS);
    let nodes: Vec<Server> = (0..3).map(|i| node(&nats, i, &["--shards", "2"])).collect();
    const N: u64 = 300;
    // Two readers and one publisher on every node.
    let mut readers = Vec::new();
    let mut publishers = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let mut c = n.client();
            conn_id(&mut c);
            join(&mut c, "r");
            readers.push(c);
        }
        let mut p = n.client();
        let id = conn_id(&mut p);
        assert!(
            publishers.iter().all(|(_, other)| *other != id),
            "ids are unique in the cluster"
        );
        join(&mut p, "r");
        publishers.push((p, id));
    }
    let ids: Vec<u64> = publishers.iter().map(|(_, id)| *id).collect();
    let threads: Vec<_> = publishers
        .into_iter()
        .map(|(mut p, _)| {
            std::thread::spawn(move || {
                for k in 0..N {
                    publish(&mut p, "r", &k.to_be_bytes());
                }
                p
            })
        })
        .collect();
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                read_room(&mut c, "r", Duration::from_secs(20), |s| {
                    s.len() as u64 >= 3 * N
                })
            })
        })
        .collect();
    let _publishers: Vec<Client> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (i, r) in readers.into_iter().enumerate() {
        let seen = r.join().unwrap();
        assert!(!seen.contains(&Seen::Gap), "reader {i}: {seen:?}");
        for &id in &ids {
            assert_eq!(
                check_covered(&seen, id, N),
                (N, 0),
                "reader {i}, publisher {id:x}"
            );
        }
        assert_eq!(seen.len() as u64, 3 * N, "reader {i}: no more than that");
    }
    for n in &nodes {
        assert_eq!(n.metric("ringroom_cluster_gaps_total", None), 0);
        assert_eq!(n.metric("ringroom_cluster_link_up", None), 1);
        assert_eq!(n.metric("ringroom_cluster_messages_out_total", None), N);
    }

    // Interest: a room with members on nodes 1 and 2 only costs node 3 nothing.
    let before = nodes[2].metric("ringroom_cluster_messages_in_total", None);
    let mut a = nodes[0].client();
    let mut b = nodes[1].client();
    join(&mut a, "pair");
    join(&mut b, "pair");
    for k in 0..100u64 {
        publish(&mut a, "pair", &k.to_be_bytes());
    }
    let seen = read_room(&mut b, "pair", Duration::from_secs(10), |s| s.len() >= 100);
    assert_eq!(seen.len(), 100);
    assert_eq!(
        nodes[2].metric("ringroom_cluster_messages_in_total", None),
        before,
        "node 3 has no member of the room: NATS sends it nothing"
    );
}

/// Publishes `n` numbered messages to `room`, one every `every`.
fn paced(
    mut p: Client,
    room: &'static str,
    n: u64,
    every: Duration,
) -> std::thread::JoinHandle<Client> {
    std::thread::spawn(move || {
        let start = Instant::now();
        for k in 0..n {
            publish(&mut p, room, &k.to_be_bytes());
            let due = start + every * (k as u32 + 1);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        p
    })
}

#[test]
fn a_nats_server_killed_mid_run_loses_nothing_silently() {
    let mut nats = NatsCluster::start(3, NATS_LIMITS);
    let nodes: Vec<Server> = (0..3).map(|i| node(&nats, i, &[])).collect();
    const N: u64 = 400;
    let every = Duration::from_millis(5);
    let mut p = nodes[0].client();
    let pid = conn_id(&mut p);
    join(&mut p, "r");
    let mut r2 = nodes[1].client();
    join(&mut r2, "r");
    let mut r3 = nodes[2].client();
    join(&mut r3, "r");
    // A room of node 2 alone: its delivery must not stop.
    let mut lp = nodes[1].client();
    let lid = conn_id(&mut lp);
    join(&mut lp, "local");
    let mut lr = nodes[1].client();
    join(&mut lr, "local");

    let last = |id: u64| {
        move |s: &[Seen]| {
            s.iter().any(|x| {
                *x == Seen::Msg {
                    from: id,
                    seq: N - 1,
                }
            })
        }
    };
    let t_r2 =
        std::thread::spawn(move || read_room(&mut r2, "r", Duration::from_secs(15), last(pid)));
    let t_r3 =
        std::thread::spawn(move || read_room(&mut r3, "r", Duration::from_secs(15), last(pid)));
    let t_lr =
        std::thread::spawn(move || read_room(&mut lr, "local", Duration::from_secs(15), last(lid)));
    let tp = paced(p, "r", N, every);
    let tl = paced(lp, "local", N, every);
    std::thread::sleep(Duration::from_millis(500));
    // Node 2's NATS server dies: no FIN from the process, as in a crash.
    nats.servers[1].kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(5);
    while nodes[1].metric("ringroom_cluster_connects_total", None) < 2 {
        assert!(
            Instant::now() < deadline,
            "node 2 did not reconnect within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("node 2 linked again {:?} after the kill", killed.elapsed());
    tp.join().unwrap();
    tl.join().unwrap();

    let local = t_lr.join().unwrap();
    assert_eq!(
        check_covered(&local, lid, N),
        (N, 0),
        "local delivery never stopped"
    );
    // It is told of the gap all the same: the node cannot know that no
    // other node has a member of the room who published meanwhile.
    assert!(local.contains(&Seen::Gap));
    let on2 = t_r2.join().unwrap();
    let (got, missing) = check_covered(&on2, pid, N);
    eprintln!("node 2's member: {got} received, {missing} missing, each covered by a GAP notice");
    assert!(on2.contains(&Seen::Gap), "its link dropped: told");
    let on3 = t_r3.join().unwrap();
    assert_eq!(
        check_covered(&on3, pid, N),
        (N, 0),
        "node 3's link never dropped"
    );
    assert_eq!(
        nodes[1].metric("ringroom_cluster_disconnects_total", None),
        1
    );
}

#[test]
fn the_publishers_nats_server_killed_its_lost_messages_are_reported_by_sync() {
    let mut nats = NatsCluster::start(3, NATS_LIMITS);
    let nodes: Vec<Server> = (0..3)
        .map(|i| node(&nats, i, &["--cluster-sync-ms", "200"]))
        .collect();
    const N: u64 = 300;
    let mut p = nodes[0].client();
    let pid = conn_id(&mut p);
    join(&mut p, "r");
    let mut r = nodes[1].client();
    join(&mut r, "r");
    let t_r = std::thread::spawn(move || {
        read_room(&mut r, "r", Duration::from_secs(15), |s| {
            s.iter().any(|x| {
                *x == Seen::Msg {
                    from: pid,
                    seq: N - 1,
                }
            })
        })
    });
    let tp = paced(p, "r", N, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(400));
    nats.servers[0].kill9();
    tp.join().unwrap();
    let seen = t_r.join().unwrap();
    let (got, missing) = check_covered(&seen, pid, N);
    eprintln!("{got} received, {missing} missing, each covered by a GAP notice");
    assert!(
        missing > 0,
        "the publisher's node lost its link mid-run: {seen:?}"
    );
    assert!(nodes[0].metric("ringroom_cluster_dropped_link_down_total", None) > 0);
    assert!(nodes[1].metric("ringroom_cluster_gaps_total", None) > 0);
}

#[test]
fn a_file_across_nodes_goes_at_the_pace_of_a_throttled_remote_reader() {
    use common::files::{joined, to_a_throttled_and_a_fast_reader, FRAGMENT};
    let nats = NatsCluster::start(3, NATS_LIMITS);
    let nodes: Vec<Server> = (0..3).map(|i| node(&nats, i, &[])).collect();
    // 800 fragments (48 MB): one reader on node 2 takes 10 MB/s, one on
    // node 3 keeps up; the publisher is on node 1.
    const FRAGMENTS: u32 = 800;
    let (publisher_done, total) = to_a_throttled_and_a_fast_reader(
        joined(&nodes[1]),
        joined(&nodes[2]),
        joined(&nodes[0]),
        FRAGMENTS,
    );
    eprintln!(
        "{} MB: publisher done after {publisher_done:?}, slow reader after {total:?}; \
         FLOW sent by node 2: {}, received by node 1: {}",
        FRAGMENTS as usize * FRAGMENT / 1_000_000,
        nodes[1].metric("ringroom_cluster_flow_out_total", None),
        nodes[0].metric("ringroom_cluster_flow_in_total", None),
    );
    assert!(total >= Duration::from_millis(4700), "throttled: {total:?}");
    assert!(
        publisher_done > Duration::from_millis(2500),
        "the publisher was not paced by the remote reader: done after {publisher_done:?}"
    );
    assert!(nodes[1].metric("ringroom_cluster_flow_out_total", None) > 0);
    assert!(nodes[0].metric("ringroom_cluster_flow_in_total", None) > 0);
    for n in &nodes {
        assert_eq!(n.metric("ringroom_closed_total", Some("slow_consumer")), 0);
        assert_eq!(n.metric("ringroom_cluster_gaps_total", None), 0);
    }
}

#[test]
fn a_node_too_slow_for_its_nats_server_is_cut_reports_the_gap_and_comes_back() {
    // NATS cuts a client with more than 512 KiB pending for it (its
    // largest message must fit in that).
    let nats = NatsCluster::start(
        2,
        "max_pending: 524288\nmax_payload: 262144\nwrite_deadline: \"1s\"",
    );
    let fast = node(&nats, 0, &[]);
    // Its shards sleep 20 ms after every batch, and take 16 messages from
    // the link at a time: the link stops reading, NATS's buffer fills.
    let slow = node(
        &nats,
        1,
        &["--test-delay-us", "20000", "--channel-capacity", "16"],
    );
    const N: u64 = 400;
    let mut p = fast.client();
    let pid = conn_id(&mut p);
    join(&mut p, "r");
    let mut r = slow.client();
    join(&mut r, "r");
    let reader = std::thread::spawn(move || {
        read_room(&mut r, "r", Duration::from_secs(20), |s| {
            s.contains(&Seen::Msg { from: pid, seq: N })
        })
    });
    // 400 messages of 20 KB at full speed: 8 MB, far past the limit.
    let mut body = vec![0u8; 20_000];
    for k in 0..N {
        body[..8].copy_from_slice(&k.to_be_bytes());
        publish(&mut p, "r", &body);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow.metric("ringroom_cluster_slow_consumer_total", None) == 0
        && slow.metric("ringroom_cluster_disconnects_total", None) == 0
    {
        assert!(Instant::now() < deadline, "NATS never cut the slow node");
        std::thread::sleep(Duration::from_millis(20));
    }
    while slow.metric("ringroom_cluster_connects_total", None) < 2 {
        assert!(
            Instant::now() < deadline,
            "the slow node did not link again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // One more once it is back: the reader's cue that the run is over.
    body[..8].copy_from_slice(&N.to_be_bytes());
    publish(&mut p, "r", &body);
    let seen = reader.join().unwrap();
    let (got, missing) = check_covered(&seen, pid, N + 1);
    eprintln!("cut by NATS: {got} received, {missing} missing, each covered by a GAP notice");
    assert!(missing > 0, "{seen:?}");
    assert_eq!(
        slow.metric("ringroom_closed_total", Some("slow_consumer")),
        0,
        "the member kept up"
    );
}

#[test]
fn a_node_started_before_nats_serves_its_own_rooms_and_links_once_nats_is_up() {
    let mut nats = NatsCluster::configure(1, NATS_LIMITS);
    let seeds = nats.seeds_from(0);
    let started = Instant::now();
    let lonely = Server::start(&["--cluster", &seeds, "--node-id", "5"]);
    assert!(
        lonely.ready_line().contains("(not linked yet)"),
        "{}",
        lonely.ready_line()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "started anyway"
    );
    // Local rooms work; a JOIN says that other nodes' messages are missed.
    let mut a = lonely.client();
    let aid = conn_id(&mut a);
    assert_eq!(aid >> 48, 5, "the node id leads the connection id");
    a.send(&[Frame::Join(Room::new("r").unwrap())]);
    a.expect(FrameType::Joined);
    let gap = a.expect(FrameType::Error);
    assert_eq!(gap.code(), ErrorCode::GAP);
    assert_eq!(&gap.payload[2..], b"r");
    let mut b = lonely.client();
    join(&mut b, "r");
    assert_eq!(b.expect(FrameType::Error).code(), ErrorCode::GAP);
    publish(&mut a, "r", &7u64.to_be_bytes());
    assert_eq!(
        read_room(&mut b, "r", Duration::from_secs(5), |s| !s.is_empty()),
        [Seen::Msg { from: aid, seq: 7 }]
    );
    // NATS comes up: the node links, and a node behind it reaches the room.
    nats.servers[0].spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lonely.metric("ringroom_cluster_link_up", None) == 0 {
        assert!(Instant::now() < deadline, "never linked");
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = node(&nats, 0, &[]);
    let mut c = other.client();
    let cid = conn_id(&mut c);
    join(&mut c, "r");
    publish(&mut c, "r", &9u64.to_be_bytes());
    let seen = read_room(&mut b, "r", Duration::from_secs(5), |s| !s.is_empty());
    assert_eq!(seen, [Seen::Msg { from: cid, seq: 9 }]);
}
