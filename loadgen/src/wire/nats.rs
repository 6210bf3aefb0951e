//! nats-server's text protocol (docs.nats.io, "Client Protocol"). No crate
//! offers it apart from a full async client, and a load generator needs six
//! operations of it, so they are here.
//!
//! The handshake is `CONNECT {...}` then `PING`; its `PONG` completes it
//! (with `verbose: false` the server sends no `+OK`). `echo: false` keeps a
//! publisher's own messages from it. A room is a subject: `SUB roomN sid`
//! followed by a `PING`, whose `PONG` confirms the subscription. The server's
//! own `PING`s are answered at once.

use std::time::Duration;

use super::{Ack, Event, Pending, Reply, PEER_ERROR};

/// The CONNECT line: no acknowledgements, no echo of our own messages.
pub(super) const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"loadgen\",\"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1}\r\n";

#[derive(Default)]
pub(super) struct Nats {
    pending: Pending,
    next_sid: u32,
}

impl Nats {
    pub(super) fn hello(&mut self, out: &mut Vec<u8>, _heartbeat_ms: u32) {
        out.extend_from_slice(CONNECT);
        out.extend_from_slice(b"PING\r\n");
    }

    pub(super) fn join(&mut self, out: &mut Vec<u8>, room: &str) {
        self.next_sid += 1;
        out.extend_from_slice(format!("SUB {room} {}\r\nPING\r\n", self.next_sid).as_bytes());
    }

    pub(super) fn ping(&mut self, out: &mut Vec<u8>, _planned: Duration) {
        out.extend_from_slice(b"PING\r\n");
    }

    /// PUB has no reply (verbose is off).
    pub(super) fn publish(&mut self, out: &mut Vec<u8>, room: &str, body: &[u8]) -> bool {
        out.extend_from_slice(format!("PUB {room} {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
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
            while let Some(used) = parse_one(&buf[at..], out, events)? {
                at += used;
            }
            Ok(at)
        })
    }

    pub(super) fn release_idle_buffer(&mut self) {
        self.pending.release();
    }
}

/// Decodes one server operation at the start of `buf`: the bytes it took, or
/// None if it is not complete yet.
fn parse_one(
    buf: &[u8],
    out: &mut Vec<u8>,
    events: &mut Vec<Event>,
) -> Result<Option<usize>, String> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buf[..eol];
    let mut used = eol + 2;
    let mut words = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty());
    let op = words.next().unwrap_or_default().to_ascii_uppercase();
    match op.as_slice() {
        b"PONG" => events.push(Event::Ack(Ack::PingAnswer)),
        b"PING" => out.extend_from_slice(b"PONG\r\n"),
        b"INFO" | b"+OK" => {}
        b"-ERR" => events.push(Event::Reply(Reply::Error {
            code: PEER_ERROR,
            fatal: true,
        })),
        b"MSG" => {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let args: Vec<&[u8]> = words.collect();
            if !(3..=4).contains(&args.len()) {
                return Err(format!("bad MSG line {:?}", String::from_utf8_lossy(line)));
            }
            let size: usize = std::str::from_utf8(args[args.len() - 1])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad MSG size {:?}", String::from_utf8_lossy(line)))?;
            if size > super::MAX_REPLY {
                return Err(format!("MSG of {size} bytes"));
            }
            if buf.len() < used + size + 2 {
                return Ok(None);
            }
            let body = &buf[used..used + size];
            if &buf[used + size..used + size + 2] != b"\r\n" {
                return Err("MSG payload not followed by CRLF".into());
            }
            used += size + 2;
            events.extend(super::message(args[0], body));
        }
        _ => {
            return Err(format!(
                "unknown operation {:?}",
                String::from_utf8_lossy(line)
            ))
        }
    }
    Ok(Some(used))
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
        let mut want = super::CONNECT.to_vec();
        want.extend(b"PING\r\nSUB room3 1\r\nPING\r\nPING\r\nPING\r\n");
        assert_eq!(out, want);
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
