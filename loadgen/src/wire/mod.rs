//! The wire protocols the load generator speaks, sans-io: ringroom's own, and
//! those of the peer servers it is compared with (`--protocol`):
//!
//! | protocol | handshake | heartbeat | room |
//! |---|---|---|---|
//! | ringroom | HELLO / WELCOME | PING / PONG (planned time echoed) | JOIN, PUBLISH, MESSAGE |
//! | redis (RESP2) | `PING` / `+PONG` | `PING stamp` / stamp | SUBSCRIBE, PUBLISH, `message` |
//! | nats | CONNECT + PING / PONG | PING / PONG | SUB (+PING), PUB, MSG |
//! | mqtt (3.1.1) | CONNECT / CONNACK | PINGREQ / PINGRESP | SUBSCRIBE / SUBACK, PUBLISH QoS 0 |
//!
//! A peer's replies carry no request id, but each server answers one
//! connection's requests in order, so a [`Codec`] keeps the requests that
//! await a reply in a bounded FIFO ([`MAX_AWAITING`]) and matches every reply
//! with the oldest: a PINGREQ's round trip is measured from the planned time
//! stored there. A reply of the wrong kind is a protocol error.
//!
//! Every room message body starts with its planned publish time and sequence
//! number (16 bytes, big-endian), whatever the protocol.

mod mqtt;
mod nats;
mod redis;
mod ringroom;

use std::collections::VecDeque;
use std::time::Duration;

/// A wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// ringroom's framed protocol (PROTOCOL.md).
    Ringroom,
    /// redis-server's RESP2.
    Redis,
    /// nats-server's text protocol.
    Nats,
    /// MQTT 3.1.1, as mosquitto speaks it.
    Mqtt,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ringroom" => Ok(Self::Ringroom),
            "redis" => Ok(Self::Redis),
            "nats" => Ok(Self::Nats),
            "mqtt" => Ok(Self::Mqtt),
            other => Err(format!(
                "unknown --protocol {other:?}: ringroom, redis, nats or mqtt"
            )),
        }
    }
}

impl Protocol {
    /// Its `--protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ringroom => "ringroom",
            Self::Redis => "redis",
            Self::Nats => "nats",
            Self::Mqtt => "mqtt",
        }
    }

    /// Whether a publisher must be a member of its room. In ringroom it must
    /// (and gets no copy of its own messages without ECHO); a redis
    /// connection that subscribes may not PUBLISH, and an MQTT 3.1.1
    /// subscriber gets its own messages back, so on the peers the publisher
    /// does not subscribe. Either way a room message reaches members - 1.
    pub fn publisher_joins(self) -> bool {
        self == Self::Ringroom
    }
}

/// What the server said, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The handshake completed. ringroom grants a heartbeat and an idle
    /// timeout; the peers grant nothing (None).
    Welcome {
        /// Heartbeat interval granted, ms.
        heartbeat_ms: Option<u32>,
        /// Idle timeout granted, ms.
        idle_timeout_ms: Option<u32>,
    },
    /// A PING was answered; it was planned for `planned` (on the run's clock).
    Pong {
        /// Planned send time of the PING answered.
        planned: Duration,
    },
    /// A JOIN / SUBSCRIBE was confirmed.
    Joined,
    /// A room message.
    Message {
        /// Room index (`roomN`), or `u64::MAX` for another name.
        room: u64,
        /// Publisher's connection id where the protocol says it (ringroom), else 0.
        publisher: u64,
        /// Planned publish time, ns, from the body.
        planned_ns: u64,
        /// Publisher's sequence number, from the body.
        seq: u64,
    },
    /// ringroom's ERROR GAP: messages from other nodes of a cluster to this
    /// room may have been lost (and are then not lost silently).
    Gap {
        /// Room index (`roomN`), or `u64::MAX` for another name.
        room: u64,
    },
    /// An error from the server. `fatal`: the connection is over.
    Error {
        /// ringroom's error code; [`PEER_ERROR`] for a peer's.
        code: u16,
        /// Whether the server closes the connection after it.
        fatal: bool,
    },
}

/// The error code counted for a peer server's error reply.
pub const PEER_ERROR: u16 = 0xFFFF;

/// Most requests awaiting a reply on one connection; [`Codec::ping`] refuses
/// beyond it (a server this far behind is treated as dead).
pub const MAX_AWAITING: usize = 1024;

/// Most bytes one peer reply may take (a longer one is a protocol error).
pub const MAX_REPLY: usize = 1 << 20;

/// What a request awaits, in a peer's reply FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaiting {
    Welcome,
    Joined,
    Pong(Duration),
    Published,
}

/// The kind of reply a peer dialect decoded, matched against the FIFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ack {
    Welcome,
    Joined,
    Pong,
    Published,
    /// A PONG in a protocol whose handshake and subscribe also end with a
    /// PING (nats): it answers whichever of those is oldest.
    PingAnswer,
}

/// What a dialect's decoder produces: a reply that stands alone, or an
/// acknowledgement the codec matches with the oldest request.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Reply(Reply),
    Ack(Ack),
}

/// A room message body's planned time and sequence number, if it has them.
fn stamp_of(body: &[u8]) -> Option<(u64, u64)> {
    let planned = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    Some((planned, seq))
}

/// The index in a room name `roomN`.
fn room_index(name: &[u8]) -> u64 {
    std::str::from_utf8(name)
        .ok()
        .and_then(|n| n.strip_prefix("room")?.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A room message event from a peer's delivery (one publisher per room).
fn message(room: &[u8], body: &[u8]) -> Option<Event> {
    let (planned_ns, seq) = stamp_of(body)?;
    Some(Event::Reply(Reply::Message {
        room: room_index(room),
        publisher: 0,
        planned_ns,
        seq,
    }))
}

enum Dialect {
    Ringroom(ringroom::Ringroom),
    Redis(redis::Redis),
    Nats(nats::Nats),
    Mqtt(mqtt::Mqtt),
}

/// One connection's encoder and decoder.
pub struct Codec {
    dialect: Dialect,
    awaiting: VecDeque<Awaiting>,
}

/// The decoders' working space, shared by every connection of a worker (a
/// buffer per connection would cost each of a million connections its
/// own allocation for what lives for one call).
#[derive(Default)]
pub struct Scratch {
    events: Vec<Event>,
}

macro_rules! dispatch {
    ($self:expr, $d:ident => $body:expr) => {
        match &mut $self.dialect {
            Dialect::Ringroom($d) => $body,
            Dialect::Redis($d) => $body,
            Dialect::Nats($d) => $body,
            Dialect::Mqtt($d) => $body,
        }
    };
}

impl Codec {
    /// A codec for a new connection; `client_id` names it where the protocol
    /// needs a unique name (MQTT).
    pub fn new(protocol: Protocol, client_id: &str) -> Self {
        let dialect = match protocol {
            Protocol::Ringroom => Dialect::Ringroom(ringroom::Ringroom::default()),
            Protocol::Redis => Dialect::Redis(redis::Redis::default()),
            Protocol::Nats => Dialect::Nats(nats::Nats::default()),
            Protocol::Mqtt => Dialect::Mqtt(mqtt::Mqtt::new(client_id)),
        };
        Self {
            dialect,
            awaiting: VecDeque::new(),
        }
    }

    fn expect(&mut self, what: Awaiting) {
        if !matches!(self.dialect, Dialect::Ringroom(_)) {
            self.awaiting.push_back(what);
        }
    }

    fn full(&self) -> bool {
        self.awaiting.len() >= MAX_AWAITING
    }

    /// The handshake, asking for `heartbeat_ms` where the protocol can
    /// (ringroom's HELLO; MQTT's keep-alive, at 3 heartbeats).
    pub fn hello(&mut self, out: &mut Vec<u8>, heartbeat_ms: u32) {
        dispatch!(self, d => d.hello(out, heartbeat_ms));
        self.expect(Awaiting::Welcome);
    }

    /// Joins (subscribes to) `room`.
    pub fn join(&mut self, out: &mut Vec<u8>, room: &str) {
        dispatch!(self, d => d.join(out, room));
        self.expect(Awaiting::Joined);
    }

    /// A PING planned for `planned`; false (nothing written) if
    /// [`MAX_AWAITING`] requests already await their replies.
    pub fn ping(&mut self, out: &mut Vec<u8>, planned: Duration) -> bool {
        if self.full() {
            return false;
        }
        dispatch!(self, d => d.ping(out, planned));
        self.expect(Awaiting::Pong(planned));
        true
    }

    /// Publishes `body` to `room`; false (nothing written) if the reply FIFO is full.
    pub fn publish(&mut self, out: &mut Vec<u8>, room: &str, body: &[u8]) -> bool {
        if self.full() {
            return false;
        }
        if dispatch!(self, d => d.publish(out, room, body)) {
            self.expect(Awaiting::Published);
        }
        true
    }

    /// Decodes `data`, appending to `out` what must be answered at once (a
    /// server's own PING) and to `replies` what the server said. An error
    /// ends the connection.
    /// `scratch` is the decoders' working space, one per worker.
    pub fn receive_with(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        replies: &mut Vec<Reply>,
        scratch: &mut Scratch,
    ) -> Result<(), String> {
        let events = &mut scratch.events;
        events.clear();
        let mut result = dispatch!(self, d => d.receive(data, out, events));
        for event in events.drain(..) {
            let ack = match event {
                Event::Reply(r) => {
                    replies.push(r);
                    continue;
                }
                Event::Ack(ack) => ack,
            };
            match (self.awaiting.pop_front(), ack) {
                (Some(Awaiting::Welcome), Ack::Welcome | Ack::PingAnswer) => {
                    replies.push(Reply::Welcome {
                        heartbeat_ms: None,
                        idle_timeout_ms: None,
                    })
                }
                (Some(Awaiting::Joined), Ack::Joined | Ack::PingAnswer) => {
                    replies.push(Reply::Joined)
                }
                (Some(Awaiting::Pong(planned)), Ack::Pong | Ack::PingAnswer) => {
                    replies.push(Reply::Pong { planned })
                }
                (Some(Awaiting::Published), Ack::Published) => {}
                (expected, got) => {
                    result = Err(format!("reply {got:?} where {expected:?} was due"));
                    break;
                }
            }
        }
        events.clear();
        result
    }

    /// [`Codec::receive_with`] with a scratch of its own (for tests).
    #[cfg(test)]
    pub fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        replies: &mut Vec<Reply>,
    ) -> Result<(), String> {
        self.receive_with(data, out, replies, &mut Scratch::default())
    }

    /// Frees the buffer a partial reply held, once none is pending.
    pub fn release_idle_buffer(&mut self) {
        dispatch!(self, d => d.release_idle_buffer());
    }
}

/// A byte-stream reassembly buffer for the peers' decoders: bytes that did
/// not make a whole reply wait here (at most [`MAX_REPLY`]).
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
}

impl Pending {
    /// Runs `parse` over the pending bytes followed by `data`: `parse` returns
    /// how many bytes it consumed (whole replies only); the rest is kept.
    fn feed(
        &mut self,
        data: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<usize, String>,
    ) -> Result<(), String> {
        let used;
        if self.buf.is_empty() {
            used = parse(data)?;
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(data);
            used = parse(&self.buf)?;
            self.buf.drain(..used);
        }
        if self.buf.len() > MAX_REPLY {
            return Err(format!("a reply longer than {MAX_REPLY} bytes"));
        }
        Ok(())
    }

    fn release(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_by_name() {
        for p in [
            Protocol::Ringroom,
            Protocol::Redis,
            Protocol::Nats,
            Protocol::Mqtt,
        ] {
            assert_eq!(p.name().parse::<Protocol>(), Ok(p));
        }
        assert!("amqp".parse::<Protocol>().unwrap_err().contains("amqp"));
    }

    #[test]
    fn room_names_and_stamps() {
        assert_eq!(room_index(b"room42"), 42);
        assert_eq!(room_index(b"lobby"), u64::MAX);
        let mut body = 7u64.to_be_bytes().to_vec();
        body.extend(9u64.to_be_bytes());
        assert_eq!(stamp_of(&body), Some((7, 9)));
        assert_eq!(stamp_of(&body[..15]), None);
    }

    /// The replies a peer conversation decodes to: the handshake, the join,
    /// the message (room 3, planned 77, seq 4), the PINGs planned at 5 and 6 ms.
    pub(super) const WELCOME: Reply = Reply::Welcome {
        heartbeat_ms: None,
        idle_timeout_ms: None,
    };
    /// See [`WELCOME`].
    pub(super) const MESSAGE: Reply = Reply::Message {
        room: 3,
        publisher: 0,
        planned_ns: 77,
        seq: 4,
    };
    /// See [`WELCOME`].
    pub(super) fn pong(ms: u64) -> Reply {
        Reply::Pong {
            planned: Duration::from_millis(ms),
        }
    }

    /// The bytes of a room message body: planned time 77, sequence 4.
    pub(super) fn body() -> Vec<u8> {
        let mut body = 77u64.to_be_bytes().to_vec();
        body.extend(4u64.to_be_bytes());
        body
    }

    /// Runs a peer codec through handshake, join, two PINGs and a publish,
    /// against `replies` (the server's bytes, cut at every byte so that
    /// reassembly is exercised), and returns what it decoded.
    pub(super) fn converse(protocol: Protocol, server: &[u8]) -> (Vec<u8>, Vec<Reply>) {
        let mut c = Codec::new(protocol, "lg-test");
        let mut out = Vec::new();
        c.hello(&mut out, 10_000);
        c.join(&mut out, "room3");
        assert!(c.ping(&mut out, Duration::from_millis(5)));
        assert!(c.ping(&mut out, Duration::from_millis(6)));
        let mut replies = Vec::new();
        for b in server {
            c.receive(std::slice::from_ref(b), &mut out, &mut replies)
                .unwrap();
        }
        (out, replies)
    }

    #[test]
    fn the_fifo_is_bounded() {
        let mut c = Codec::new(Protocol::Nats, "x");
        let mut out = Vec::new();
        c.hello(&mut out, 1000);
        for i in 1..MAX_AWAITING {
            assert!(c.ping(&mut out, Duration::from_millis(i as u64)), "{i}");
        }
        assert!(!c.ping(&mut out, Duration::ZERO), "full");
        assert!(!c.publish(&mut out, "room1", &[0; 16]));
    }

    #[test]
    fn a_reply_of_the_wrong_kind_is_an_error() {
        let mut c = Codec::new(Protocol::Mqtt, "x");
        let mut out = Vec::new();
        c.hello(&mut out, 1000);
        // PINGRESP where CONNACK is due.
        let err = c
            .receive(&[0xD0, 0x00], &mut out, &mut Vec::new())
            .unwrap_err();
        assert!(err.contains("Welcome"), "{err}");
    }
}
