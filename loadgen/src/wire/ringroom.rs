//! ringroom's own protocol (PROTOCOL.md), through the `proto` crate. Every
//! reply says what it answers, so nothing waits in the codec's FIFO.

use std::time::Duration;

use proto::{Decoder, Frame, Hello};

use super::{Event, Reply};

pub(super) struct Ringroom {
    decoder: Decoder,
}

impl Default for Ringroom {
    fn default() -> Self {
        Self {
            decoder: Decoder::new(u32::MAX),
        }
    }
}

fn encode(frame: Frame<'_>, out: &mut Vec<u8>) {
    frame.encode_to_vec(out).expect("a valid frame");
}

impl Ringroom {
    pub(super) fn hello(&mut self, out: &mut Vec<u8>, heartbeat_ms: u32) {
        encode(
            Frame::Hello(Hello {
                heartbeat_ms,
                name: "loadgen",
            }),
            out,
        );
    }

    pub(super) fn join(&mut self, out: &mut Vec<u8>, room: &str) {
        encode(
            Frame::Join(proto::Room::new(room).expect("a valid room")),
            out,
        );
    }

    /// The planned time rides in the payload and comes back in the PONG.
    pub(super) fn ping(&mut self, out: &mut Vec<u8>, planned: Duration) {
        encode(Frame::Ping(&(planned.as_nanos() as u64).to_be_bytes()), out);
    }

    /// PUBLISH has no reply.
    pub(super) fn publish(&mut self, out: &mut Vec<u8>, room: &str, body: &[u8]) -> bool {
        encode(
            Frame::Publish(proto::Publish {
                room: proto::Room::new(room).expect("a valid room"),
                body,
                echo: false,
                fragment: proto::Fragment::default(),
            }),
            out,
        );
        false
    }

    pub(super) fn receive(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        let mut input = data;
        loop {
            let reply = match self.decoder.decode(&mut input) {
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
                Ok(Some(frame)) => match frame {
                    Frame::Welcome(w) => Reply::Welcome {
                        heartbeat_ms: Some(w.heartbeat_ms),
                        idle_timeout_ms: Some(w.idle_timeout_ms),
                    },
                    Frame::Pong(p) if p.len() == 8 => Reply::Pong {
                        planned: Duration::from_nanos(u64::from_be_bytes(
                            p.try_into().expect("8 bytes"),
                        )),
                    },
                    Frame::Ping(p) => {
                        encode(Frame::Pong(p), out);
                        continue;
                    }
                    Frame::Joined(_) => Reply::Joined,
                    Frame::Message(m) => match super::stamp_of(m.body) {
                        Some((planned_ns, seq)) => Reply::Message {
                            room: super::room_index(m.room.as_str().as_bytes()),
                            publisher: m.from_conn_id,
                            planned_ns,
                            seq,
                        },
                        None => continue,
                    },
                    Frame::Error(s) if s.code == proto::ErrorCode::GAP => Reply::Gap {
                        room: super::room_index(s.reason.as_bytes()),
                    },
                    Frame::Error(s) | Frame::GoAway(s) => Reply::Error {
                        code: s.code.0,
                        fatal: s.code.is_fatal(),
                    },
                    _ => continue,
                },
            };
            events.push(Event::Reply(reply));
        }
    }

    pub(super) fn release_idle_buffer(&mut self) {
        self.decoder.release_idle_buffer();
    }
}
