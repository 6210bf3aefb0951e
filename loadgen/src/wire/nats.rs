//! nats-server's text protocol, through `natsproto` (the sans-io client
//! side the server's cluster link uses too): what the load generator needs
//! of it to compare nats-server with ringroom.
//!
//! The handshake is `CONNECT {...}` then `PING`; its `PONG` completes it
//! (with `verbose: false` the server sends no `+OK`). `echo: false` keeps a
//! publisher's own messages from it. A room is a subject: `SUB roomN sid`
//! followed by a `PING`, whose `PONG` confirms the subscription. The server's
//! own `PING`s are answered at once.

use std::time::Duration;

use natsproto::ServerOp;

use super::{Ack, Event, Pending, Reply, PEER_ERROR};

#[derive(Default)]
pub(super) struct Nats {
    pending: Pending,
    next_sid: u64,
}

impl Nats {
    pub(super) fn hello(&mut self, out: &mut Vec<u8>, _heartbeat_ms: u32) {
        natsproto::connect(
            out,
            &natsproto::Connect {
                name: "loadgen",
                echo: false,
                ..Default::default()
            },
        );
        natsproto::ping(out);
    }

    pub(super) fn join(&mut self, out: &mut Vec<u8>, room: &str) {
        self.next_sid += 1;
        natsproto::subscribe(out, room, self.next_sid);
        natsproto::ping(out);
    }

    pub(super) fn ping(&mut self, out: &mut Vec<u8>, _planned: Duration) {
        natsproto::ping(out);
    }

    /// PUB has no reply (verbose is off).
    pub(super) fn publish(&mut self, out: &mut Vec<u8>, room: &str, body: &[u8]) -> bool {
        natsproto::publish(out, room, body, &[]);
        false
    }

    pub(super) fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        self.pending.feed(data, |buf| {
            let mut at = 0;
            while let Some((op, used)) =
                natsproto::parse(&buf[at..], super::MAX_REPLY).map_err(|e| e.to_string())?
            {
                at += used;
                match op {
                    ServerOp::Pong => events.push(Event::Ack(Ack::PingAnswer)),
                    ServerOp::Ping => natsproto::pong(out),
                    ServerOp::Info(_) | ServerOp::Ok => {}
                    ServerOp::Err(_) => events.push(Event::Reply(Reply::Error {
                        code: PEER_ERROR,
                        fatal: true,
                    })),
                    ServerOp::Msg(m) => {
                        events.extend(super::message(m.subject.as_bytes(), m.payload))
                    }
                }
            }
            Ok(at)
        })
    }

    pub(super) fn release_idle_buffer(&mut self) {
        self.pending.release();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{body, converse, pong, MESSAGE, WELCOME};
    use super::super::{Codec, Protocol, Reply};

    /// The protocol document's own examples: CONNECT then PING, `SUB foo 1`,
    /// `PUB foo 5\r\nhello\r\n`.
    #[test]
    fn client_operations_as_the_protocol_writes_them() {
        let (out, _) = converse(Protocol::Nats, b"");
        let text = String::from_utf8(out).unwrap();
        let (connect, rest) = text.split_once("\r\n").unwrap();
        assert!(connect.starts_with("CONNECT {"), "{connect}");
        assert!(connect.contains("\"echo\":false") && connect.contains("\"verbose\":false"));
        assert_eq!(rest, "PING\r\nSUB room3 1\r\nPING\r\nPING\r\nPING\r\n");
        let mut c = Codec::new(Protocol::Nats, "x");
        let mut out = Vec::new();
        assert!(c.publish(&mut out, "room3", b"hello"));
        assert_eq!(out, b"PUB room3 5\r\nhello\r\n");
    }

    /// INFO first, the handshake's PONG, the SUB's PONG, a server PING (answered
    /// with PONG), a MSG with and without a reply subject, then the two PINGs' PONGs.
    #[test]
    fn server_operations_are_decoded_in_order() {
        let mut server =
            b"INFO {\"server_id\":\"NA\",\"version\":\"2.9.10\",\"max_payload\":1048576}\r\nPONG\r\nPONG\r\nPING\r\n"
                .to_vec();
        let body = body();
        server.extend(b"MSG room3 1 16\r\n");
        server.extend(&body);
        server.extend(b"\r\nmsg room3 1 _INBOX.x 16\r\n");
        server.extend(&body);
        server.extend(b"\r\nPONG\r\n+OK\r\nPONG\r\n");
        let (out, replies) = converse(Protocol::Nats, &server);
        assert!(out.ends_with(b"PONG\r\n"), "the server's PING answered");
        assert_eq!(
            replies,
            [WELCOME, Reply::Joined, MESSAGE, MESSAGE, pong(5), pong(6)]
        );
    }

    #[test]
    fn errors_and_garbage() {
        let mut c = Codec::new(Protocol::Nats, "x");
        let mut replies = Vec::new();
        c.receive(
            b"-ERR 'Authorization Violation'\r\n",
            &mut Vec::new(),
            &mut replies,
        )
        .unwrap();
        assert!(matches!(replies[..], [Reply::Error { fatal: true, .. }]));
        let mut c = Codec::new(Protocol::Nats, "x");
        assert!(c
            .receive(b"HELLO\r\n", &mut Vec::new(), &mut replies)
            .is_err());
        let mut c = Codec::new(Protocol::Nats, "x");
        assert!(c
            .receive(b"MSG a 1 x\r\n", &mut Vec::new(), &mut replies)
            .is_err());
    }
}
