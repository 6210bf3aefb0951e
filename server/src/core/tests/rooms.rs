//! Rooms, streams and flow control in the core: delivery, order, limits,
//! pauses, lanes.

use super::*;

pub(super) fn room(name: &str) -> proto::Room<'_> {
    proto::Room::new(name).unwrap()
}

pub(super) fn publish<'a>(
    name: &'a str,
    body: &'a [u8],
    echo: bool,
    fragment: proto::Fragment,
) -> Frame<'a> {
    Frame::Publish(proto::Publish {
        room: room(name),
        body,
        echo,
        fragment,
    })
}

/// A harness whose slots 0..n are members of room "r".
fn members_of_r(n: u32) -> Harness {
    let mut h = Harness::new(10);
    for slot in 0..n {
        h.accept(slot);
        h.send_frames(slot, &[Frame::Join(room("r"))]);
    }
    h.settle();
    h
}

/// A fragment of `stream`, with MORE as given.
fn frag(stream: u16, more: bool) -> proto::Fragment {
    proto::Fragment {
        stream,
        more,
        cancel: false,
    }
}

/// The bodies of the MESSAGEs `slot` received, in order.
fn bodies(h: &Harness, slot: u32) -> Vec<Vec<u8>> {
    h.received(slot)
        .into_iter()
        .filter(|(ty, _)| *ty == FrameType::Message)
        .map(|(_, p)| p[9 + p[8] as usize..].to_vec())
        .collect()
}

#[test]
fn join_and_leave_are_answered_and_idempotent() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(
        0,
        &[
            Frame::Join(room("a")),
            Frame::Join(room("a")),
            Frame::Leave(room("a")),
            Frame::Leave(room("a")),
        ],
    );
    h.settle();
    let types: Vec<FrameType> = h.received(0).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            FrameType::Joined,
            FrameType::Joined,
            FrameType::Left,
            FrameType::Left
        ]
    );
    assert_eq!(h.core.rooms(), 0);
}

#[test]
fn room_limits_answer_limit_and_keep_the_connection() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.accept(1);
    // 3 rooms per connection in these limits; 4 rooms per server.
    let joins: Vec<Frame<'_>> = ["a", "b", "c", "d"]
        .iter()
        .map(|r| Frame::Join(room(r)))
        .collect();
    h.send_frames(0, &joins);
    h.settle();
    assert_eq!(h.last_error_code(0), Some(ErrorCode::LIMIT));
    h.send_frames(1, &[Frame::Join(room("d")), Frame::Join(room("e"))]);
    h.settle();
    assert_eq!(h.received(1)[0].0, FrameType::Joined);
    assert_eq!(
        h.last_error_code(1),
        Some(ErrorCode::LIMIT),
        "the server's fifth room"
    );
    h.send_frames(0, &[Frame::Ping(b"open")]);
    h.settle();
    assert_eq!(h.received(0).last().unwrap().0, FrameType::Pong);
}

#[test]
fn publish_needs_membership() {
    let mut h = Harness::new(10);
    h.accept(0);
    h.send_frames(
        0,
        &[
            publish("a", b"x", false, Default::default()),
            Frame::Ping(b"ok"),
        ],
    );
    h.settle();
    let got = h.received(0);
    assert_eq!(got[0].0, FrameType::Error);
    assert_eq!(h.last_error_code(0), Some(ErrorCode::NOT_MEMBER));
    assert_eq!(got[1].0, FrameType::Pong);
}

#[test]
fn members_get_each_message_once_in_order_and_echo_is_honoured() {
    let mut h = members_of_r(3);
    h.send_frames(
        0,
        &[
            publish("r", b"1", false, Default::default()),
            publish("r", b"2", true, Default::default()),
        ],
    );
    h.settle();
    assert_eq!(bodies(&h, 1), [b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(bodies(&h, 2), [b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(bodies(&h, 0), [b"2".to_vec()], "only the ECHO one");
    assert_eq!(h.metrics.deliveries.get(), 5);
    // Encoded once, forwarded to the other shards once each.
    let mut out = Vec::new();
    h.core.drain_outgoing(&mut out);
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0].0, Delivery::Message(_)));
    // Only this shard (3) has members of "r": the other shards are spared it.
    assert!(out.iter().all(|(_, shards)| *shards == 1 << 3));
}

#[test]
fn messages_from_other_shards_reach_local_members() {
    let mut h = members_of_r(1);
    let remote = Broadcast::encode(
        Message {
            from_conn_id: 99,
            room: room("r"),
            body: b"from afar",
            fragment: Default::default(),
        },
        None,
    );
    h.core.deliver_remote(remote.clone().into(), 0);
    let other = Broadcast::encode(
        Message {
            from_conn_id: 99,
            room: room("elsewhere"),
            body: b"not here",
            fragment: Default::default(),
        },
        None,
    );
    h.core.deliver_remote(other.clone().into(), 0);
    h.settle();
    assert_eq!(bodies(&h, 0), [b"from afar".to_vec()]);
}

#[test]
fn leave_and_close_stop_delivery() {
    let mut h = members_of_r(3);
    h.send_frames(1, &[Frame::Leave(room("r"))]);
    h.core.recv_ended(2, h.gens[2], RecvEnd::Eof);
    h.settle();
    h.send_frames(0, &[publish("r", b"after", true, Default::default())]);
    h.settle();
    assert_eq!(bodies(&h, 0), [b"after".to_vec()]);
    assert!(bodies(&h, 1).is_empty());
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    assert_eq!(
        h.core.rooms(),
        0,
        "the last member left with its connection"
    );
}

#[test]
fn a_slow_member_is_cut_off_and_the_room_goes_on() {
    let mut h = members_of_r(3);
    // Slot 2's sends never complete from here on; its queue is 4,096 bytes.
    let body = [7u8; 1000];
    for _ in 0..8 {
        h.send_frames(0, &[publish("r", &body, false, Default::default())]);
        let mut actions = Vec::new();
        h.core.poll_actions(&mut actions);
        for a in actions {
            if let Action::Send { slot, gen, buf } = a {
                if slot != 2 {
                    h.wire[slot as usize].extend_from_slice(&buf);
                    let n = buf.len() as i32;
                    h.core.sent(slot, gen, buf, n, h.now);
                }
            }
        }
        // Every completion read: slot 2's send is refused by its socket.
        h.core.sends_submitted(0);
        h.core.completions_read(0, h.now);
    }
    assert_eq!(bodies(&h, 1).len(), 8, "the others got everything");
    assert_eq!(h.closed(CloseReason::SlowConsumer), 0, "still draining");
    // Its drain time runs out with its send stuck: cancelled and closed.
    let actions = h.step(true);
    assert!(actions.is_empty(), "{actions:?}");
    h.advance(600);
    let actions = h.step(true);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Cancel {
                slot: 2,
                send: true,
                ..
            }
        )),
        "{actions:?}"
    );
    h.core.recv_ended(2, h.gens[2], RecvEnd::Cancelled);
    assert_eq!(
        h.core.open(),
        3,
        "closes only once its cancelled send completes"
    );
    // The room goes on for the others.
    h.send_frames(0, &[publish("r", b"more", false, Default::default())]);
    h.settle();
    assert_eq!(bodies(&h, 1).last().unwrap(), b"more");
}

#[test]
fn open_streams_are_bounded() {
    let mut h = members_of_r(2);
    h.send_frames(
        0,
        &[
            publish("r", b"a1", false, frag(1, true)),
            publish("r", b"b1", false, frag(2, true)),
            publish("r", b"c1", false, frag(3, true)), // third open stream: LIMIT
            publish("r", b"a2", false, frag(1, false)), // closes stream 1
            publish("r", b"c1", false, frag(3, true)), // now fits
        ],
    );
    h.settle();
    assert_eq!(h.last_error_code(0), Some(ErrorCode::LIMIT));
    // One fragment a send, the streams taking turns: 1, 2, 3, then 1 again.
    assert_eq!(
        bodies(&h, 1),
        [
            b"a1".to_vec(),
            b"b1".to_vec(),
            b"c1".to_vec(),
            b"a2".to_vec()
        ]
    );
}

#[test]
fn a_publisher_gone_mid_stream_has_its_streams_cancelled() {
    let mut h = members_of_r(2);
    h.send_frames(
        0,
        &[
            publish("r", b"part", false, frag(7, true)),
            publish("r", b"whole", false, frag(8, false)),
        ],
    );
    h.settle();
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle();
    let got = h.received(1);
    let last = &got.last().unwrap().1;
    assert_eq!(got.len(), 4, "JOINED, part, whole, cancel: {got:?}");
    assert_eq!(&last[9..10], b"r");
    assert!(last.len() == 10, "a CANCEL has no body");
    // The wire header of that last MESSAGE carries CANCEL on stream 7.
    let wire = &h.wire[1];
    let header = &wire[wire.len() - 18..wire.len() - 10];
    assert_eq!(header[5], proto::flags::CANCEL);
    assert_eq!(u16::from_be_bytes([header[6], header[7]]), 7);
    let mut out = Vec::new();
    h.core.drain_outgoing(&mut out);
    assert_eq!(out.len(), 3, "the cancel goes to the other shards too");
}

#[test]
fn full_channels_pause_the_publisher_and_lose_nothing() {
    let mut h = members_of_r(2);
    h.core.set_channels_full(true, h.now);
    // A PUBLISH, then a PING behind it in the same receive.
    h.send_frames(
        0,
        &[
            publish("r", b"1", false, Default::default()),
            Frame::Ping(b"p"),
        ],
    );
    let actions = h.settle();
    assert!(
        actions.contains(&Action::Cancel {
            slot: 0,
            gen: h.gens[0],
            recv: true,
            send: false
        }),
        "reading stops: {actions:?}"
    );
    assert!(bodies(&h, 1).is_empty(), "nothing delivered yet");
    assert!(
        !h.received(0).iter().any(|(ty, _)| *ty == FrameType::Pong),
        "nothing after the PUBLISH is handled"
    );
    assert_eq!(
        h.last_error_code(0),
        None,
        "no error: back-pressure, not refusal"
    );
    assert_eq!(h.metrics.publish_paused.get(), 1);
    // What arrived before the cancel took effect waits behind it.
    h.send_frames(0, &[publish("r", b"2", false, Default::default())]);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Cancelled);
    // Paused for longer than the idle timeout (3 s here): not the client's
    // silence. The member keeps itself alive meanwhile.
    for t in (100..=5000).step_by(100) {
        h.send_frames(1, &[Frame::Ping(b"k")]);
        h.tick_to(t);
    }
    assert_eq!(h.closed(CloseReason::HeartbeatTimeout), 0);
    assert_eq!(h.core.open(), 2);
    assert!(bodies(&h, 1).is_empty());
    h.core.set_channels_full(false, h.now);
    let actions = h.settle();
    assert_eq!(bodies(&h, 1), [b"1".to_vec(), b"2".to_vec()], "in order");
    assert!(h
        .received(0)
        .iter()
        .any(|(ty, p)| *ty == FrameType::Pong && p == b"p"));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ArmRecv { slot: 0, .. })),
        "reading resumes: {actions:?}"
    );
    assert_eq!(h.metrics.publishes.get(), 2);
}

#[test]
fn a_paused_connection_holds_at_most_max_parked_bytes() {
    let mut h = members_of_r(1);
    h.core.set_channels_full(true, h.now);
    h.send_frames(0, &[publish("r", b"1", false, Default::default())]);
    h.settle();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..h.core.limits().max_parked / chunk.len() {
        h.feed(0, &chunk);
    }
    assert_eq!(h.core.open(), 1, "up to the bound");
    h.feed(0, &chunk);
    h.settle();
    assert_eq!(h.last_error_code(0), Some(ErrorCode::OVERLOADED));
    assert_eq!(
        h.closed(CloseReason::Overloaded),
        0,
        "draining, not closed yet"
    );
}

#[test]
fn the_parked_bound_holds_the_whole_receive_ring() {
    assert_eq!(
        parked_bound(1024, 4096),
        MAX_PARKED,
        "4 MiB ring: the floor"
    );
    assert_eq!(parked_bound(256, 65_536), 16 << 20);
}

#[test]
fn a_member_a_window_behind_pauses_the_streaming_publisher() {
    // Slot 0 streams to slots 1 (fast) and 2 (its socket is full).
    let mut h = members_of_r(3);
    let body = [5u8; 1000]; // window 4,096: five fragments
    for _ in 0..8 {
        h.send_frames(0, &[publish("r", &body, false, frag(1, true))]);
        h.settle_holding(&[2]);
    }
    assert_eq!(h.metrics.flow_paused.get(), 1, "paused once, on the sixth");
    assert_eq!(bodies(&h, 1).len(), 5, "the fast member got what was sent");
    // A chat line from someone else is not held back by the file.
    h.send_frames(1, &[publish("r", b"chat", false, Default::default())]);
    h.settle_holding(&[2]);
    assert_eq!(bodies(&h, 0).last().unwrap(), b"chat");
    // Slot 2 reads: below half the window the publisher resumes, in order.
    for _ in 0..12 {
        h.release(2);
        h.settle_holding(&[2]);
    }
    h.release(2);
    h.settle();
    assert_eq!(bodies(&h, 1).len(), 8);
    let two = bodies(&h, 2);
    assert_eq!(
        two.iter().filter(|b| b[..] == body[..]).count(),
        8,
        "every fragment"
    );
    assert_eq!(h.closed(CloseReason::SlowConsumer), 0, "nobody was cut");
}

#[test]
fn a_member_that_stops_reading_is_cut_and_the_publisher_resumes() {
    let mut h = members_of_r(3);
    let body = [5u8; 1000];
    for _ in 0..8 {
        h.send_frames(0, &[publish("r", &body, false, frag(1, true))]);
        h.settle_holding(&[2]);
    }
    assert_eq!(h.metrics.flow_paused.get(), 1);
    h.tick_to(1900);
    assert_eq!(bodies(&h, 1).len(), 5, "still paused");
    h.tick_to(2100); // slot 2's socket took nothing for 2,000 ms
    h.step_holding(&[2]);
    assert_eq!(h.metrics.slow_consumer_stalls.get(), 1);
    h.settle_holding(&[2]);
    assert_eq!(
        bodies(&h, 1).len(),
        8,
        "the rest of the file went on at once"
    );
}

#[test]
fn a_chat_line_waits_behind_at_most_one_fragment() {
    let mut h = members_of_r(3);
    let body = [5u8; 1000];
    // Three fragments queue for slot 2 while one is in flight.
    for _ in 0..4 {
        h.send_frames(0, &[publish("r", &body, false, frag(1, true))]);
        h.settle_holding(&[2]);
    }
    h.send_frames(1, &[publish("r", b"chat", false, Default::default())]);
    h.settle_holding(&[2]);
    h.release(2); // the first fragment goes; the next send is chat + one fragment
    let mut actions = Vec::new();
    h.core.poll_actions(&mut actions);
    let Some(Action::Send { buf, .. }) = actions
        .iter()
        .find(|a| matches!(a, Action::Send { slot: 2, .. }))
    else {
        panic!("no send for slot 2: {actions:?}");
    };
    let chat_at = buf.windows(4).position(|w| w == b"chat").unwrap();
    assert!(chat_at < 30, "the chat line leads the send");
    assert!(
        buf.len() < 2 * 1000,
        "with one fragment behind it, not three"
    );
}

#[test]
fn a_remote_fragment_leaves_the_channel_when_delivered() {
    let mut h = members_of_r(2);
    let flow = crate::flow::Flow::new(0, 100);
    let remote = Broadcast::encode(
        Message {
            from_conn_id: 99,
            room: room("r"),
            body: &[0; 200],
            fragment: frag(4, true),
        },
        Some(flow.clone()),
    );
    flow.entered_channel(remote.bytes().len());
    flow.set_waiting(true);
    assert!(flow.is_closed());
    h.core.deliver_remote(remote.clone().into(), 0);
    let mut wake = Vec::new();
    h.core.drain_wakes(&mut wake);
    assert!(wake.is_empty(), "now the members hold it: over the window");
    h.settle();
    h.core.drain_wakes(&mut wake);
    assert_eq!(
        wake,
        vec![0],
        "sent to both: the publisher's shard is woken"
    );
    assert!(flow.may_resume());
}

#[test]
fn a_publisher_that_closes_while_paused_loses_nothing() {
    let mut h = members_of_r(3);
    let body = [5u8; 1000];
    for i in 0..8 {
        // The whole file, as receives of one fragment each, then it closes.
        h.send_frames(0, &[publish("r", &body, false, frag(1, i < 7))]);
        h.settle_holding(&[2]);
    }
    assert_eq!(h.metrics.flow_paused.get(), 1);
    h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
    h.settle_holding(&[2]);
    assert_eq!(h.core.open(), 3, "still open: its input is not handled yet");
    for _ in 0..20 {
        h.release(2);
        h.settle_holding(&[2]);
    }
    h.release(2);
    h.settle();
    let got = h.received(2);
    let messages: Vec<_> = got
        .iter()
        .filter(|(ty, _)| *ty == FrameType::Message)
        .collect();
    assert_eq!(messages.len(), 8, "every fragment, and no CANCEL");
    assert_eq!(
        h.closed(CloseReason::Peer),
        1,
        "closed once it was all handled"
    );
}

/// A message from another shard published before this shard's members of
/// the room came (the room had emptied here and filled again) is not
/// delivered: the member would get it and then miss those in between.
#[test]
fn a_message_from_before_the_room_came_back_here_is_not_delivered() {
    let mut h = members_of_r(1);
    // Ticket 1: a publish here while the room exists.
    h.send_frames(0, &[publish("r", b"1", false, Default::default())]);
    h.settle();
    // The room empties here and comes back: its messages start after ticket 1.
    h.send_frames(0, &[Frame::Leave(room("r"))]);
    h.send_frames(0, &[Frame::Join(room("r"))]);
    h.settle();
    let from_afar = |ticket: u64, body: &'static [u8]| {
        Broadcast::encode_ticketed(
            Message {
                from_conn_id: 99,
                room: room("r"),
                body,
                fragment: Default::default(),
            },
            None,
            ticket,
        )
    };
    h.core.deliver_remote(from_afar(1, b"stale").into(), 0);
    h.core.deliver_remote(from_afar(2, b"fresh").into(), 0);
    h.core
        .deliver_remote(from_afar(0, b"another node").into(), 0);
    h.settle();
    assert_eq!(bodies(&h, 0), [b"fresh".to_vec(), b"another node".to_vec()]);
    assert_eq!(h.metrics.stale_deliveries.get(), 1);
}
