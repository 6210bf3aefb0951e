//! MQTT 3.1.1 as mosquitto speaks it, through the `mqttbytes` crate (v4).
//!
//! CONNECT (clean session, a unique client id, keep-alive 3 heartbeats) is
//! answered with CONNACK; a heartbeat is PINGREQ / PINGRESP; a room is a
//! topic: SUBSCRIBE at QoS 0 / SUBACK, and PUBLISH at QoS 0 both ways.

use std::time::Duration;

use bytes::BytesMut;
use mqttbytes::v4::{self, ConnectReturnCode, Packet, SubscribeReasonCode};
use mqttbytes::QoS;

use super::{Ack, Event, Reply, MAX_REPLY, PEER_ERROR};

pub(super) struct Mqtt {
    client_id: String,
    buf: BytesMut,
    next_pkid: u16,
}

fn write(out: &mut Vec<u8>, f: impl FnOnce(&mut BytesMut) -> Result<usize, mqttbytes::Error>) {
    let mut b = BytesMut::new();
    f(&mut b).expect("a valid packet");
    out.extend_from_slice(&b);
}

impl Mqtt {
    pub(super) fn new(client_id: &str) -> Self {
        Self {
            client_id: client_id.to_string(),
            buf: BytesMut::new(),
            next_pkid: 0,
        }
    }

    /// Keep-alive is three heartbeats (the server closes after 1.5 times it).
    pub(super) fn hello(&mut self, out: &mut Vec<u8>, heartbeat_ms: u32) {
        let mut connect = v4::Connect::new(self.client_id.as_str());
        let heartbeat = if heartbeat_ms == 0 {
            10_000
        } else {
            heartbeat_ms
        };
        connect.keep_alive = (3 * u64::from(heartbeat)).div_ceil(1000).min(65_535) as u16;
        write(out, |b| connect.write(b));
    }

    pub(super) fn join(&mut self, out: &mut Vec<u8>, room: &str) {
        // Packet ids are non-zero.
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        let mut sub = v4::Subscribe::new(room, QoS::AtMostOnce);
        sub.pkid = self.next_pkid;
        write(out, |b| sub.write(b));
    }

    pub(super) fn ping(&mut self, out: &mut Vec<u8>, _planned: Duration) {
        write(out, |b| v4::PingReq.write(b));
    }

    /// QoS 0: no reply.
    pub(super) fn publish(&mut self, out: &mut Vec<u8>, room: &str, body: &[u8]) -> bool {
        let publish = v4::Publish::new(room, QoS::AtMostOnce, body);
        write(out, |b| publish.write(b));
        false
    }

    pub(super) fn receive(
        &mut self,
        data: &[u8],
        _out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        self.buf.extend_from_slice(data);
        loop {
            let packet = match v4::read(&mut self.buf, MAX_REPLY) {
                Ok(p) => p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                Err(e) => return Err(format!("MQTT: {e:?}")),
            };
            events.extend(match packet {
                Packet::ConnAck(a) if a.code == ConnectReturnCode::Success => {
                    Some(Event::Ack(Ack::Welcome))
                }
                Packet::ConnAck(_) => Some(Event::Reply(Reply::Error {
                    code: PEER_ERROR,
                    fatal: true,
                })),
                Packet::SubAck(a) if a.return_codes.contains(&SubscribeReasonCode::Failure) => {
                    Some(Event::Reply(Reply::Error {
                        code: PEER_ERROR,
                        fatal: true,
                    }))
                }
                Packet::SubAck(_) => Some(Event::Ack(Ack::Joined)),
                Packet::PingResp => Some(Event::Ack(Ack::Pong)),
                Packet::Publish(p) => super::message(p.topic.as_bytes(), &p.payload),
                Packet::Disconnect => Some(Event::Reply(Reply::Error {
                    code: PEER_ERROR,
                    fatal: true,
                })),
                other => return Err(format!("unexpected MQTT packet {other:?}")),
            });
        }
    }

    pub(super) fn release_idle_buffer(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{body, converse, pong, MESSAGE, WELCOME};
    use super::super::{Codec, Protocol, Reply};

    /// Byte layouts from the MQTT 3.1.1 specification (sections 3.1, 3.8,
    /// 3.12, 3.3): fixed header, remaining length, variable header, payload.
    #[test]
    fn packets_as_the_specification_lays_them_out() {
        let (out, _) = converse(Protocol::Mqtt, b"");
        let mut want = vec![
            0x10, 19, // CONNECT, remaining length
            0, 4, b'M', b'Q', b'T', b'T', 4,    // protocol name, level 4
            0x02, // clean session
            0, 30, // keep-alive 30 s (3 x 10 s heartbeats)
            0, 7, // client id length
        ];
        want.extend(b"lg-test");
        want.extend([0x82, 10, 0, 1, 0, 5]); // SUBSCRIBE (flags 0010), packet id 1, topic length
        want.extend(b"room3");
        want.push(0); // requested QoS 0
        want.extend([0xC0, 0, 0xC0, 0]); // two PINGREQs
        assert_eq!(out, want);
        let mut c = Codec::new(Protocol::Mqtt, "x");
        let mut out = Vec::new();
        assert!(c.publish(&mut out, "room3", b"hi"));
        assert_eq!(
            out,
            [0x30, 9, 0, 5, b'r', b'o', b'o', b'm', b'3', b'h', b'i']
        );
    }

    /// CONNACK accepted, SUBACK granting QoS 0, a QoS 0 PUBLISH, two PINGRESPs.
    #[test]
    fn replies_are_decoded_in_order() {
        let mut server = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 0, 0x30, 23, 0, 5];
        server.extend(b"room3");
        server.extend(body());
        server.extend([0xD0, 0, 0xD0, 0]);
        let (_, replies) = converse(Protocol::Mqtt, &server);
        assert_eq!(replies, [WELCOME, Reply::Joined, MESSAGE, pong(5), pong(6)]);
    }

    #[test]
    fn a_refused_connect_or_subscribe_is_an_error() {
        for server in [&[0x20, 2, 0, 5][..], &[0x20, 2, 0, 0, 0x90, 3, 0, 1, 0x80]] {
            let mut c = Codec::new(Protocol::Mqtt, "x");
            let mut out = Vec::new();
            c.hello(&mut out, 1000);
            c.join(&mut out, "room1");
            let mut replies = Vec::new();
            c.receive(server, &mut out, &mut replies).unwrap();
            assert!(
                matches!(replies.last(), Some(Reply::Error { fatal: true, .. })),
                "{replies:?}"
            );
        }
    }
}
