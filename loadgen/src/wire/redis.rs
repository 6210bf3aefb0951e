//! redis-server's RESP2, through the `redis-protocol` crate.
//!
//! The handshake is a bare `PING` (redis has none; its `+PONG` marks the
//! connection usable). A heartbeat is `PING <8-byte stamp>`, answered with the
//! stamp as a bulk string, or with `["pong", stamp]` once the connection has
//! subscribed. Rooms are channels: `SUBSCRIBE roomN` is confirmed with
//! `["subscribe", "roomN", count]`, deliveries are `["message", "roomN", body]`,
//! and `PUBLISH` is answered with the receiver count.

use std::time::Duration;

use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, RangeFrame, Resp2Frame};

use super::{Ack, Event, Pending, Reply, PEER_ERROR};

#[derive(Default)]
pub(super) struct Redis {
    pending: Pending,
}

/// Appends a command (an array of bulk strings) to `out`.
fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let frame = OwnedFrame::Array(
        args.iter()
            .map(|a| OwnedFrame::BulkString(a.to_vec()))
            .collect(),
    );
    let at = out.len();
    out.resize(at + frame.encode_len(false), 0);
    let n = encode(&mut out[at..], &frame, false).expect("buffer sized by encode_len");
    out.truncate(at + n);
}

impl Redis {
    pub(super) fn hello(&mut self, out: &mut Vec<u8>, _heartbeat_ms: u32) {
        command(out, &[b"PING"]);
    }

    pub(super) fn join(&mut self, out: &mut Vec<u8>, room: &str) {
        command(out, &[b"SUBSCRIBE", room.as_bytes()]);
    }

    pub(super) fn ping(&mut self, out: &mut Vec<u8>, planned: Duration) {
        command(out, &[b"PING", &(planned.as_nanos() as u64).to_be_bytes()]);
    }

    /// PUBLISH is answered with the number of receivers.
    pub(super) fn publish(&mut self, out: &mut Vec<u8>, room: &str, body: &[u8]) -> bool {
        command(out, &[b"PUBLISH", room.as_bytes(), body]);
        true
    }

    pub(super) fn receive(
        &mut self,
        data: &[u8],
        _out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        self.pending.feed(data, |buf| {
            let mut at = 0;
            while let Some((frame, used)) =
                decode_range(&buf[at..]).map_err(|e| format!("RESP: {e:?}"))?
            {
                events.extend(event(&buf[at..at + used], &frame)?);
                at += used;
            }
            Ok(at)
        })
    }

    pub(super) fn release_idle_buffer(&mut self) {
        self.pending.release();
    }
}

/// What one decoded reply means; `buf` holds the reply the ranges point into.
fn event(buf: &[u8], frame: &RangeFrame) -> Result<Option<Event>, String> {
    let bulk = |f: &RangeFrame| match f {
        RangeFrame::BulkString(r) | RangeFrame::SimpleString(r) => Some(&buf[r.0..r.1]),
        _ => None,
    };
    Ok(match frame {
        RangeFrame::SimpleString(r) if &buf[r.0..r.1] == b"PONG" => Some(Event::Ack(Ack::Welcome)),
        RangeFrame::BulkString(_) => Some(Event::Ack(Ack::Pong)),
        RangeFrame::Integer(_) => Some(Event::Ack(Ack::Published)),
        RangeFrame::Error(_) => Some(Event::Reply(Reply::Error {
            code: PEER_ERROR,
            fatal: true,
        })),
        RangeFrame::Array(items) => match items.first().and_then(bulk) {
            Some(b"message") if items.len() == 3 => {
                let (room, body) = (bulk(&items[1]), bulk(&items[2]));
                room.zip(body).and_then(|(r, b)| super::message(r, b))
            }
            Some(b"subscribe") => Some(Event::Ack(Ack::Joined)),
            Some(b"pong") => Some(Event::Ack(Ack::Pong)),
            _ => return Err(format!("unexpected RESP reply {frame:?}")),
        },
        other => return Err(format!("unexpected RESP reply {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{body, converse, pong, MESSAGE, WELCOME};
    use super::super::{Codec, Protocol, Reply};

    /// The bytes of RESP's own examples (redis.io/docs/reference/protocol-spec):
    /// commands are arrays of bulk strings.
    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let (out, _) = converse(Protocol::Redis, b"");
        let mut want = b"*1\r\n$4\r\nPING\r\n*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nroom3\r\n".to_vec();
        for ms in [5u64, 6] {
            want.extend(b"*2\r\n$4\r\nPING\r\n$8\r\n");
            want.extend((ms * 1_000_000).to_be_bytes());
            want.extend(b"\r\n");
        }
        assert_eq!(out, want);
        let mut c = Codec::new(Protocol::Redis, "x");
        let mut out = Vec::new();
        assert!(c.publish(&mut out, "room3", b"hi"));
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nroom3\r\n$2\r\nhi\r\n");
    }

    /// What redis-server answers: `+PONG`, the subscribe confirmation, a
    /// PING's stamp inside `["pong", stamp]` once subscribed, a message.
    #[test]
    fn replies_are_matched_in_order() {
        let mut server = b"+PONG\r\n*3\r\n$9\r\nsubscribe\r\n$5\r\nroom3\r\n:1\r\n".to_vec();
        server.extend(b"*2\r\n$4\r\npong\r\n$8\r\n");
        server.extend(5_000_000u64.to_be_bytes());
        server.extend(b"\r\n*3\r\n$7\r\nmessage\r\n$5\r\nroom3\r\n$16\r\n");
        server.extend(body());
        server.extend(b"\r\n$8\r\n");
        server.extend(6_000_000u64.to_be_bytes());
        server.extend(b"\r\n");
        let (_, replies) = converse(Protocol::Redis, &server);
        assert_eq!(replies, [WELCOME, Reply::Joined, pong(5), MESSAGE, pong(6)]);
    }

    #[test]
    fn an_error_reply_ends_the_connection() {
        let mut c = Codec::new(Protocol::Redis, "x");
        let mut replies = Vec::new();
        c.receive(
            b"-ERR max number of clients reached\r\n",
            &mut Vec::new(),
            &mut replies,
        )
        .unwrap();
        assert_eq!(
            replies,
            [Reply::Error {
                code: super::PEER_ERROR,
                fatal: true
            }]
        );
    }
}
