//! A room message: a PUBLISH is encoded once as a MESSAGE frame in a
//! reference-counted buffer, and that same buffer goes to every shard that
//! has members (through [`crate::channel`]) and into every member's queue.

use std::sync::Arc;

use proto::{Frame, Message};

use crate::flow::Flow;

/// One encoded MESSAGE frame, shared by every shard and member that gets it.
#[derive(Debug)]
pub struct Broadcast {
    frame: Box<[u8]>,
    /// Its stream id (0: a whole message) and sender, which key a member's stream lane.
    stream: u16,
    from_conn_id: u64,
    /// A stream frame's flow control: its publisher's [`Flow`].
    flow: Option<Arc<Flow>>,
    /// Its place among this node's publishes (0: from another node, or
    /// not sent between shards): see `ShardRooms::accepts`.
    ticket: u64,
}

impl Broadcast {
    /// Encodes `message` once; a stream frame carries its publisher's `flow`.
    pub fn encode(message: Message<'_>, flow: Option<Arc<Flow>>) -> Arc<Self> {
        Self::encode_ticketed(message, flow, 0)
    }

    /// [`Broadcast::encode`] for a message published on this node, with its ticket.
    pub fn encode_ticketed(
        message: Message<'_>,
        flow: Option<Arc<Flow>>,
        ticket: u64,
    ) -> Arc<Self> {
        let (stream, from_conn_id) = (message.fragment.stream, message.from_conn_id);
        let frame = Frame::Message(message);
        let mut bytes = Vec::with_capacity(frame.encoded_len());
        frame
            .encode_to_vec(&mut bytes)
            .expect("a MESSAGE built from a valid PUBLISH is valid");
        Arc::new(Self {
            frame: bytes.into_boxed_slice(),
            stream,
            from_conn_id,
            flow: flow.filter(|_| stream != 0),
            ticket,
        })
    }

    /// A frame that is no room message but goes to a room's members in
    /// order with its messages (ERROR GAP). It is never sent between shards.
    pub fn raw(frame: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            frame: frame.into_boxed_slice(),
            stream: 0,
            from_conn_id: 0,
            flow: None,
            ticket: 0,
        })
    }

    /// The stream id: 0 for a whole message, else a fragment (or cancel) of a stream.
    pub fn stream(&self) -> u16 {
        self.stream
    }

    /// The publishing connection.
    pub fn from_conn_id(&self) -> u64 {
        self.from_conn_id
    }

    /// Its ticket (0: none).
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// The publisher's flow control, for a stream frame.
    pub fn flow(&self) -> Option<&Arc<Flow>> {
        self.flow.as_ref()
    }

    /// The frame's bytes, as every member receives them.
    pub fn bytes(&self) -> &[u8] {
        &self.frame
    }

    /// The room it goes to.
    pub fn room(&self) -> &str {
        Message::from_frame(&self.frame)
            .expect("encoded as a MESSAGE")
            .room
            .as_str()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proto::{Fragment, Room};

    /// A whole message of `body` from connection 9 to "lobby".
    pub(crate) fn message(body: &[u8]) -> Arc<Broadcast> {
        Broadcast::encode(
            Message {
                from_conn_id: 9,
                room: Room::new("lobby").unwrap(),
                body,
                fragment: Fragment::default(),
            },
            None,
        )
    }

    #[test]
    fn encoded_once_with_its_room() {
        let m = message(b"hi");
        assert_eq!(m.room(), "lobby");
        let mut d = proto::Decoder::new(1 << 20);
        let mut input = m.bytes();
        let Some(Frame::Message(got)) = d.decode(&mut input).unwrap() else {
            panic!("not a MESSAGE");
        };
        assert_eq!((got.from_conn_id, got.body), (9, &b"hi"[..]));
    }

    #[test]
    fn stream_frames_carry_their_key_and_flow() {
        let flow = Flow::new(0, 1000);
        let m = Broadcast::encode(
            Message {
                from_conn_id: 7,
                room: Room::new("r").unwrap(),
                body: b"x",
                fragment: Fragment {
                    stream: 3,
                    more: true,
                    cancel: false,
                },
            },
            Some(flow.clone()),
        );
        assert_eq!((m.stream(), m.from_conn_id()), (3, 7));
        assert!(Arc::ptr_eq(m.flow().unwrap(), &flow));
        let whole = Broadcast::encode(
            Message {
                from_conn_id: 7,
                room: Room::new("r").unwrap(),
                body: b"x",
                fragment: Fragment::default(),
            },
            Some(flow),
        );
        assert!(
            whole.flow().is_none(),
            "whole messages are not flow-controlled"
        );
    }
}
