//! The core in a cluster: JOINs answered once the node's subscription is
//! settled, and ERROR GAP for the members of a room.

use std::fs::File;

use super::rooms::{publish, room};
use super::*;
use crate::cluster::Interest;

/// A harness on a cluster registry whose link is up: new rooms are Pending.
fn clustered() -> (Harness, Arc<Registry>) {
    let fd = engine::sys::eventfd().unwrap();
    let interest = Arc::new(Interest::new(File::from(fd)));
    let registry = Arc::new(Registry::with_cluster(4, 4, Some(interest)));
    registry.link(true);
    let h = Harness::with_registry(limits(), 10, registry.clone());
    (h, registry)
}

/// The frame types `slot` received, in order.
fn types(h: &Harness, slot: u32) -> Vec<FrameType> {
    h.received(slot).into_iter().map(|(ty, _)| ty).collect()
}

fn settled(room: &str, state: SubState) -> Delivery {
    Delivery::Subscribed {
        room: room.into(),
        state,
    }
}

#[test]
fn joined_waits_for_the_subscription_once_per_join() {
    let (mut h, registry) = clustered();
    h.accept(0);
    h.accept(1);
    h.send_frames(0, &[Frame::Join(room("r")), Frame::Join(room("r"))]);
    h.send_frames(1, &[Frame::Join(room("r"))]);
    h.settle();
    assert!(types(&h, 0).is_empty(), "not before NATS confirms it");
    // Members already: a PUBLISH from one reaches the other.
    h.send_frames(0, &[publish("r", b"early", false, Default::default())]);
    h.settle();
    assert_eq!(types(&h, 1), [FrameType::Message]);
    assert_eq!(registry.settle("r", SubState::Confirmed), Some(1 << 3));
    h.core.deliver_remote(settled("r", SubState::Confirmed), 0);
    h.settle();
    assert_eq!(
        types(&h, 0),
        [FrameType::Joined, FrameType::Joined],
        "one per JOIN"
    );
    assert_eq!(types(&h, 1), [FrameType::Message, FrameType::Joined]);
    // Confirmed now: a later JOIN is answered at once.
    h.accept(2);
    h.send_frames(2, &[Frame::Join(room("r"))]);
    h.settle();
    assert_eq!(types(&h, 2), [FrameType::Joined]);
}

#[test]
fn a_join_unconfirmed_gets_joined_then_gap_and_a_leave_answers_a_waiting_join() {
    let (mut h, registry) = clustered();
    h.accept(0);
    h.send_frames(0, &[Frame::Join(room("r")), Frame::Leave(room("r"))]);
    h.settle();
    assert_eq!(
        types(&h, 0),
        [FrameType::Joined, FrameType::Left],
        "JOINED first"
    );
    // The link goes down: new rooms are Unconfirmed, JOINED comes with GAP.
    registry.link(false);
    h.send_frames(0, &[Frame::Join(room("s"))]);
    h.settle();
    let got = h.received(0);
    assert_eq!(got[2].0, FrameType::Joined);
    assert_eq!(got[3].0, FrameType::Error);
    assert_eq!(&got[3].1[..2], &ErrorCode::GAP.0.to_be_bytes());
    assert_eq!(&got[3].1[2..], b"s", "the reason is the room's name");
    assert_eq!(h.core.open(), 1, "GAP is not fatal");
}

#[test]
fn a_gap_reaches_every_member_of_the_room_in_order_with_its_messages() {
    let (mut h, _) = clustered();
    for slot in 0..3 {
        h.accept(slot);
    }
    h.send_frames(0, &[Frame::Join(room("r"))]);
    h.send_frames(1, &[Frame::Join(room("r"))]);
    h.send_frames(2, &[Frame::Join(room("other"))]);
    h.settle();
    h.core.deliver_remote(settled("r", SubState::Confirmed), 0);
    h.core
        .deliver_remote(settled("other", SubState::Confirmed), 0);
    let remote = |body: &'static [u8]| -> Delivery {
        Broadcast::encode(
            Message {
                from_conn_id: 1 << 48,
                room: room("r"),
                body,
                fragment: Default::default(),
            },
            None,
        )
        .into()
    };
    h.core.deliver_remote(remote(b"1"), 0);
    h.core.deliver_remote(Delivery::Gap("r".into()), 0);
    h.core.deliver_remote(remote(b"3"), 0);
    h.settle();
    for slot in [0, 1] {
        assert_eq!(
            types(&h, slot),
            [
                FrameType::Joined,
                FrameType::Message,
                FrameType::Error,
                FrameType::Message
            ],
            "slot {slot}"
        );
        assert_eq!(h.last_error_code(slot), Some(ErrorCode::GAP));
    }
    assert_eq!(types(&h, 2), [FrameType::Joined], "another room: no gap");
    assert_eq!(h.metrics.gap_notices.get(), 2);
}

#[test]
fn local_publishes_go_to_the_cluster_link_too() {
    let fd = engine::sys::eventfd().unwrap();
    let interest = Arc::new(Interest::new(File::from(fd)));
    let registry = Arc::new(Registry::with_cluster(4, 4, Some(interest)));
    let mut l = limits();
    l.cluster_bit = 1 << 4;
    l.conn_id_base = (7 << 48) | (3 << 40);
    let mut h = Harness::with_registry(l, 10, registry);
    h.accept(0);
    h.send_frames(
        0,
        &[
            Frame::Hello(Hello {
                heartbeat_ms: 0,
                name: "",
            }),
            Frame::Join(room("r")),
        ],
    );
    h.send_frames(0, &[publish("r", b"x", false, Default::default())]);
    h.settle();
    let mut out = Vec::new();
    h.core.drain_outgoing(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].1,
        (1 << 3) | (1 << 4),
        "this shard's members, and the link"
    );
    let Delivery::Message(m) = &out[0].0 else {
        panic!()
    };
    assert_eq!(
        m.from_conn_id() >> 48,
        7,
        "the node is in the connection id"
    );
    assert_eq!((m.from_conn_id() >> 40) & 0xff, 3, "and the shard");
}
