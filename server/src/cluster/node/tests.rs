//! The node's cluster logic with simulated time and no sockets: what it
//! writes to NATS, and what it hands the shards.

use std::fs::File;

use super::*;
use crate::cluster::Interest;
use crate::rooms::ShardRooms;
use proto::Fragment;

/// One client operation as the node wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    verb: String,
    args: Vec<String>,
    payload: Vec<u8>,
}

/// Splits what the node wrote into operations.
fn ops(out: &mut Vec<u8>) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut buf = &out[..];
    while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
        let line = std::str::from_utf8(&buf[..eol]).unwrap().to_owned();
        buf = &buf[eol + 2..];
        let mut words = line.splitn(2, ' ');
        let verb = words.next().unwrap().to_owned();
        let rest = words.next().unwrap_or("").to_owned();
        let (args, payload) = if verb == "PUB" {
            let args: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            let n: usize = args.last().unwrap().parse().unwrap();
            let payload = buf[..n].to_vec();
            buf = &buf[n + 2..];
            (args, payload)
        } else if verb == "CONNECT" {
            (vec![rest], Vec::new())
        } else {
            (
                rest.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                Vec::new(),
            )
        };
        ops.push(Op {
            verb,
            args,
            payload,
        });
    }
    out.clear();
    ops
}

struct Harness {
    node: Node,
    registry: Arc<Registry>,
    interest: Arc<Interest>,
    shards: Vec<ShardRooms>,
    out: Vec<u8>,
    now: u64,
    sids: HashMap<String, u64>,
}

const SHARDS: usize = 2;
const WINDOW: usize = 1000;

fn harness(id: u16) -> Harness {
    let fd = engine::sys::eventfd().unwrap();
    let interest = Arc::new(Interest::new(File::from(fd)));
    let registry = Arc::new(Registry::with_cluster(100, SHARDS, Some(interest.clone())));
    let cfg = NodeConfig {
        id,
        incarnation: 1000 + u64::from(id),
        subjects: Subjects::new("rr").unwrap(),
        sync_ms: 500,
        ping_ms: 1000,
        max_payload: 65_536,
        stream_window: WINDOW,
        own_index: SHARDS,
    };
    let node = Node::new(cfg, registry.clone(), Arc::new(ClusterMetrics::default()));
    let shards = (0..SHARDS)
        .map(|s| ShardRooms::new(registry.clone(), s))
        .collect();
    Harness {
        node,
        registry,
        interest,
        shards,
        out: Vec::new(),
        now: 0,
        sids: HashMap::new(),
    }
}

impl Harness {
    /// Feeds `bytes` as from the NATS server.
    fn feed(&mut self, bytes: &[u8]) {
        let mut notes = Notes::default();
        let used = self
            .node
            .received(bytes, self.now, &mut self.out, &mut notes)
            .unwrap();
        assert_eq!(used, bytes.len());
    }

    /// The handshake up to a live link; returns what the node wrote after it.
    fn link_up(&mut self) -> Vec<Op> {
        self.node.connected(self.now);
        self.feed(b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n");
        let hello = ops(&mut self.out);
        assert_eq!(hello[0].verb, "CONNECT");
        assert!(hello[0].args[0].contains("\"echo\":false"), "{hello:?}");
        assert_eq!(hello[1].verb, "PING");
        self.feed(b"PONG\r\n");
        assert!(self.node.is_up());
        self.written()
    }

    /// What the node wrote, remembering the sids of its SUBs.
    fn written(&mut self) -> Vec<Op> {
        let ops = ops(&mut self.out);
        for op in &ops {
            if op.verb == "SUB" {
                self.sids
                    .insert(op.args[0].clone(), op.args[1].parse().unwrap());
            }
        }
        ops
    }

    /// A member of `room` joins on `shard`; the link takes the interest.
    fn join(&mut self, shard: usize, slot: u32, room: &str) -> Vec<Op> {
        self.shards[shard].join(room, slot, &mut Vec::new(), 64);
        let changed = self.interest.take();
        self.node.interest(changed, self.now, &mut self.out);
        self.written()
    }

    /// A MSG on `subject` from the server.
    fn msg(&mut self, subject: &str, payload: &[u8]) {
        let sid = self.sids[subject];
        let mut bytes = format!("MSG {subject} {sid} {}\r\n", payload.len()).into_bytes();
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(b"\r\n");
        self.feed(&bytes);
    }

    fn tick(&mut self, to: u64) -> Notes {
        self.now = to;
        let mut notes = Notes::default();
        self.node.tick(to, &mut self.out, &mut notes);
        notes
    }

    fn deliveries(&mut self) -> Vec<(Delivery, u64)> {
        std::mem::take(&mut self.node.deliveries)
    }
}

/// A message a shard of this node hands the link.
fn published(
    from_conn_id: u64,
    room: &str,
    body: &[u8],
    fragment: Fragment,
    flow: Option<Arc<Flow>>,
) -> Arc<Broadcast> {
    let room = Room::new(room).unwrap();
    Broadcast::encode(
        Message {
            from_conn_id,
            room,
            body,
            fragment,
        },
        flow,
    )
}

fn remote(node: u16, epoch: u32, seq: u64, body: &[u8]) -> Vec<u8> {
    let origin = Origin {
        node,
        incarnation: 7,
    };
    let mut p =
        envelope::message_header(origin, Position { epoch, seq }, 99, Fragment::default(), 0)
            .to_vec();
    p.extend_from_slice(body);
    p
}

fn body_of(d: &Delivery) -> Vec<u8> {
    match d {
        Delivery::Message(m) => Message::from_frame(m.bytes()).unwrap().body.to_vec(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_join_waits_for_the_subscription_and_is_confirmed_by_the_pong() {
    let mut h = harness(1);
    let up = h.link_up();
    assert_eq!(up[0].verb, "SUB");
    assert_eq!(up[0].args, ["rr.node.1", "1"], "its control subject");
    let ops = h.join(1, 5, "lobby one");
    assert_eq!(ops[0].verb, "SUB");
    assert_eq!(ops[0].args[0], "rr.room.lobby%20one");
    assert_eq!(ops[1].verb, "PING", "the SUB's confirmation");
    let id = h.shards[1].id("lobby one").unwrap();
    assert_eq!(h.shards[1].sub(id), SubState::Pending);
    assert!(h.deliveries().is_empty(), "not before the PONG");
    h.feed(b"PONG\r\n");
    let d = h.deliveries();
    assert_eq!(d.len(), 1);
    assert!(
        matches!(&d[0], (Delivery::Subscribed { room, state: SubState::Confirmed }, 0b10) if &**room == "lobby one"),
        "{d:?}"
    );
    // A second member on the other shard: the room is confirmed already.
    h.shards[0].join("lobby one", 9, &mut Vec::new(), 64);
    let id0 = h.shards[0].id("lobby one").unwrap();
    assert_eq!(h.shards[0].sub(id0), SubState::Confirmed);
    assert!(h.interest.take().is_empty(), "not a new room for the node");
}

#[test]
fn local_messages_are_numbered_per_room_and_a_quiet_room_gets_a_sync() {
    let mut h = harness(2);
    h.link_up();
    h.join(0, 1, "a");
    h.feed(b"PONG\r\n");
    let m = |room: &str, body: &[u8]| published(42, room, body, Fragment::default(), None);
    h.now = 100;
    h.node.local(&m("a", b"one"), 100, 5, &mut h.out);
    h.node.local(&m("a", b"two"), 100, 6, &mut h.out);
    h.node.local(&m("b", b"elsewhere"), 100, 7, &mut h.out);
    let ops = h.written();
    let pubs: Vec<_> = ops.iter().filter(|o| o.verb == "PUB").collect();
    assert_eq!(pubs.len(), 3);
    let decoded: Vec<_> = pubs
        .iter()
        .map(|o| envelope::decode(&o.payload).unwrap())
        .collect();
    match (decoded[0], decoded[1], decoded[2]) {
        (
            Envelope::Message {
                at: a1,
                body: b"one",
                from_conn_id: 42,
                ..
            },
            Envelope::Message { at: a2, .. },
            Envelope::Message { at: b1, .. },
        ) => {
            assert_eq!((a1.seq, a2.seq), (1, 2));
            assert_eq!(a1.epoch, a2.epoch);
            assert_eq!(b1.seq, 1, "each room counts on its own");
            assert_ne!(b1.epoch, a1.epoch);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pubs[0].args[0], "rr.room.a");
    h.tick(599);
    assert!(
        h.written().iter().all(|o| o.verb != "PUB"),
        "not quiet long enough"
    );
    h.tick(600);
    let syncs: Vec<_> = h
        .written()
        .into_iter()
        .filter(|o| o.verb == "PUB")
        .collect();
    assert_eq!(syncs.len(), 2, "a and b");
    h.tick(2000);
    let later = h.written();
    assert!(
        later.iter().all(|o| o.verb != "PUB"),
        "once per quiet spell: {later:?}"
    );
}

#[test]
fn a_skipped_number_is_a_gap_before_the_message_and_a_stale_one_is_dropped() {
    let mut h = harness(1);
    h.link_up();
    h.join(0, 1, "r");
    h.feed(b"PONG\r\n");
    h.deliveries();
    for seq in [1, 2, 4, 3, 5] {
        h.msg(
            "rr.room.r",
            &remote(9, 1, seq, format!("m{seq}").as_bytes()),
        );
    }
    let d = h.deliveries();
    let kinds: Vec<String> = d
        .iter()
        .map(|(d, mask)| {
            assert_eq!(*mask, 1, "shard 0 has the member");
            match d {
                Delivery::Gap(room) => format!("GAP {room}"),
                m => String::from_utf8(body_of(m)).unwrap(),
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["m1", "m2", "GAP r", "m4", "m5"],
        "3 came late: dropped"
    );
    assert_eq!(h.node.metrics().gaps.get(), 1);
    assert_eq!(h.node.metrics().gap_messages.get(), 1);
    assert_eq!(h.node.metrics().stale.get(), 1);
    // A SYNC beyond what came: the tail was lost.
    let origin = Origin {
        node: 9,
        incarnation: 7,
    };
    h.msg(
        "rr.room.r",
        &envelope::sync(origin, Position { epoch: 1, seq: 8 }, false),
    );
    assert!(matches!(&h.deliveries()[..], [(Delivery::Gap(_), 1)]));
    h.msg("rr.room.r", b"not ours");
    assert_eq!(h.node.metrics().foreign.get(), 1);
}

#[test]
fn a_dropped_link_is_a_gap_in_every_room_and_joins_no_longer_wait() {
    let mut h = harness(1);
    h.link_up();
    h.join(0, 1, "x");
    h.join(1, 2, "y");
    h.feed(b"PONG\r\nPONG\r\n");
    h.deliveries();
    h.node.disconnected();
    let d = h.deliveries();
    let gaps = d
        .iter()
        .filter(|(d, _)| matches!(d, Delivery::Gap(_)))
        .count();
    let unconfirmed = d
        .iter()
        .filter(|(d, _)| {
            matches!(
                d,
                Delivery::Subscribed {
                    state: SubState::Unconfirmed,
                    ..
                }
            )
        })
        .count();
    assert_eq!((gaps, unconfirmed), (2, 2), "{d:?}");
    // A new room while down: JOINED at once, with GAP.
    h.shards[0].join("z", 3, &mut Vec::new(), 64);
    assert_eq!(
        h.shards[0].sub(h.shards[0].id("z").unwrap()),
        SubState::Unconfirmed
    );
    // Back up: every room subscribed again, confirmed by one PING.
    h.node.take_announce();
    let changed = h.interest.take();
    h.node.interest(changed, h.now, &mut h.out);
    assert!(h.written().is_empty(), "nothing to write while down");
    let up = h.link_up();
    let subs: Vec<&str> = up
        .iter()
        .filter(|o| o.verb == "SUB")
        .map(|o| o.args[0].as_str())
        .collect();
    assert_eq!(subs.len(), 4, "control, x, y, z: {subs:?}");
    assert_eq!(up.last().unwrap().verb, "PING");
    h.feed(b"PONG\r\n");
    let confirmed = h
        .deliveries()
        .iter()
        .filter(|(d, _)| {
            matches!(
                d,
                Delivery::Subscribed {
                    state: SubState::Confirmed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(confirmed, 3);
    assert_eq!(h.node.metrics().disconnects.get(), 1);
    assert_eq!(h.node.metrics().connects.get(), 2);
}

#[test]
fn messages_published_while_down_are_numbered_and_the_sync_tells_the_others() {
    let mut h = harness(3);
    h.link_up();
    h.join(0, 1, "r");
    h.feed(b"PONG\r\n");
    let m = published(1, "r", b"x", Fragment::default(), None);
    h.node.local(&m, 0, 0, &mut h.out);
    h.node.disconnected();
    h.out.clear();
    h.node.local(&m, 0, 0, &mut h.out);
    h.node.local(&m, 0, 0, &mut h.out);
    assert!(h.out.is_empty());
    assert_eq!(h.node.metrics().dropped_link_down.get(), 2);
    let up = h.link_up();
    let sync = up
        .iter()
        .filter(|o| o.verb == "PUB")
        .map(|o| envelope::decode(&o.payload).unwrap())
        .next()
        .unwrap();
    assert!(
        matches!(
            sync,
            Envelope::Sync {
                at: Position { seq: 3, .. },
                closing: false,
                ..
            }
        ),
        "{sync:?}"
    );
}

#[test]
fn leaving_the_room_unsubscribes_and_closes_the_epoch() {
    let mut h = harness(1);
    h.link_up();
    h.join(0, 1, "r");
    h.feed(b"PONG\r\n");
    let m = published(1, "r", b"x", Fragment::default(), None);
    h.node.local(&m, 0, 0, &mut h.out);
    h.written();
    let id = h.shards[0].id("r").unwrap();
    h.shards[0].leave("r", 1, &mut vec![id]);
    let changed = h.interest.take();
    h.node.interest(changed, h.now, &mut h.out);
    let ops = h.written();
    assert_eq!(ops[0].verb, "UNSUB");
    assert_eq!(ops[0].args[0], h.sids["rr.room.r"].to_string());
    let sync = envelope::decode(&ops[1].payload).unwrap();
    assert!(matches!(
        sync,
        Envelope::Sync {
            closing: true,
            at: Position { seq: 1, .. },
            ..
        }
    ));
    assert!(h.registry.mask("r").is_none());
}

#[test]
fn the_link_is_dead_after_two_unanswered_pings() {
    let mut h = harness(1);
    h.link_up();
    assert!(!h.tick(999).dead);
    assert!(!h.tick(1000).dead, "the first keep-alive goes out");
    assert_eq!(h.written().last().unwrap().verb, "PING");
    assert!(!h.tick(2999).dead);
    assert!(h.tick(3000).dead, "unanswered for two intervals");
    h.feed(b"PING\r\n");
    assert_eq!(
        h.written().last().unwrap().verb,
        "PONG",
        "the server's PING is answered"
    );
}

#[test]
fn a_claim_of_this_nodes_id_is_answered_and_flow_pauses_hold_the_publisher() {
    let mut h = harness(4);
    h.link_up();
    h.sids.insert("rr.node.4".into(), 1);
    let mut req = b"MSG rr.node.4 1 rr.node.4.claim.1 10\r\n".to_vec();
    req.extend_from_slice(&envelope::claim(1));
    req.extend_from_slice(b"\r\n");
    h.feed(&req);
    let ops = h.written();
    assert_eq!(ops[0].args[0], "rr.node.4.claim.1");
    assert!(
        matches!(envelope::decode(&ops[0].payload), Some(Envelope::Taken { origin }) if origin.node == 4)
    );

    // A local streaming publisher: its fragments pass through the link.
    h.join(0, 1, "r");
    h.feed(b"PONG\r\n");
    let flow = Flow::new(0, WINDOW);
    let more = Fragment {
        stream: 1,
        more: true,
        cancel: false,
    };
    let frag = published(77, "r", &[0; 10], more, Some(flow.clone()));
    // A window's worth in the channel to the link: closed until the link
    // has written it to the socket, not when it has merely buffered it.
    flow.entered_channel(WINDOW + 1);
    let held = h.node.local(&frag, 0, 0, &mut h.out).expect("a fragment");
    assert!(Arc::ptr_eq(&held, &flow));
    assert!(flow.is_closed(), "in the link's buffer still");
    h.node.written(&held, WINDOW + 1);
    assert!(!flow.is_closed(), "written: out of the channel");
    h.msg("rr.node.4", &envelope::flow(9, 77, true));
    assert!(flow.is_closed(), "node 9 has a member behind");
    flow.set_waiting(true);
    h.msg("rr.node.4", &envelope::flow(9, 77, true));
    h.tick(PAUSE_HOLD_MS - 1);
    assert!(flow.is_closed(), "repeated: held");
    h.msg("rr.node.4", &envelope::flow(9, 77, false));
    assert!(flow.may_resume());
    assert_eq!(h.node.wakes, [0], "the publisher's shard is woken");
    h.node.wakes.clear();
    // A pause that is not repeated runs out (its node may be gone).
    h.now = 5000;
    h.msg("rr.node.4", &envelope::flow(9, 77, true));
    assert!(flow.is_closed());
    h.tick(5000 + PAUSE_HOLD_MS);
    assert!(flow.may_resume());
    assert_eq!(h.node.wakes, [0]);
}

#[test]
fn a_member_behind_a_remote_stream_pauses_its_publisher_until_it_catches_up() {
    let mut h = harness(1);
    h.link_up();
    h.join(0, 1, "r");
    h.feed(b"PONG\r\n");
    h.deliveries();
    let origin = Origin {
        node: 9,
        incarnation: 7,
    };
    let frag = |seq: u64| {
        let mut p = envelope::message_header(
            origin,
            Position { epoch: 1, seq },
            500,
            Fragment {
                stream: 3,
                more: true,
                cancel: false,
            },
            0,
        )
        .to_vec();
        p.extend_from_slice(&[0; 600]);
        p
    };
    h.msg("rr.room.r", &frag(1));
    h.msg("rr.room.r", &frag(2));
    let d = h.deliveries();
    let flows: Vec<Arc<Flow>> = d.iter().map(|(d, _)| d.flow().unwrap().clone()).collect();
    assert!(
        Arc::ptr_eq(&flows[0], &flows[1]),
        "one proxy per remote publisher"
    );
    assert_eq!(h.node.proxies(), 1);
    // A member here queues both and does not read: over the window.
    let mut debts = crate::flow::Debts::default();
    for (d, _) in &d {
        debts.queued(d.flow().unwrap(), 610);
    }
    h.tick(10);
    let ops = h.written();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].args[0], "rr.node.9");
    assert_eq!(
        envelope::decode(&ops[0].payload),
        Some(Envelope::Flow {
            from: 1,
            from_conn_id: 500,
            paused: true
        })
    );
    h.tick(10 + PAUSE_HOLD_MS / 3);
    assert_eq!(h.written().len(), 1, "repeated while it lasts");
    let mut wake = Vec::new();
    debts.sent(&flows[0], 1220, &mut wake);
    assert_eq!(wake, [SHARDS], "the link is woken");
    h.tick(500);
    let ops = h.written();
    assert_eq!(
        envelope::decode(&ops[0].payload),
        Some(Envelope::Flow {
            from: 1,
            from_conn_id: 500,
            paused: false
        })
    );
    drop(d);
    drop(flows);
    h.tick(600);
    assert_eq!(h.node.proxies(), 0, "nothing held, not paused: gone");
}
