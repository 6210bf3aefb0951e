//! Frames with their payloads parsed: what the decoder yields and the encoders write.

use crate::header::check_flags;
use crate::{
    flags, EncodeError, ErrorCode, Field, FrameType, Header, Malformed, HEADER_LEN, MAX_NAME_LEN,
    MAX_PING_LEN, MAX_ROOM_LEN, VERSION,
};

/// A room name: 1..=64 bytes of UTF-8 without NUL. Holding one means it is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Room<'a>(&'a str);

impl<'a> Room<'a> {
    /// Checks a room name.
    pub fn new(name: &'a str) -> Result<Self, Malformed> {
        if name.is_empty() || name.len() > MAX_ROOM_LEN {
            return Err(Malformed::RoomLength { len: name.len() });
        }
        if name.as_bytes().contains(&0) {
            return Err(Malformed::Nul { field: Field::Room });
        }
        Ok(Room(name))
    }

    /// Checks a room name given as wire bytes.
    pub fn from_bytes(name: &'a [u8]) -> Result<Self, Malformed> {
        if name.is_empty() || name.len() > MAX_ROOM_LEN {
            return Err(Malformed::RoomLength { len: name.len() });
        }
        Room::new(text(name, Field::Room)?)
    }

    /// The name.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// The name's bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0.as_bytes()
    }
}

/// HELLO: the client's greeting. The version is always [`VERSION`]: the decoder
/// refuses any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// The heartbeat interval the client asks for; 0 means the server's default.
    pub heartbeat_ms: u32,
    /// The client's name, 0..=64 bytes.
    pub name: &'a str,
}

/// WELCOME: the server's answer to HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The server's id for this connection, as in MESSAGE's `from_conn_id`.
    pub conn_id: u64,
    /// The heartbeat interval granted.
    pub heartbeat_ms: u32,
    /// Silence after which the server closes the connection.
    pub idle_timeout_ms: u32,
    /// The largest payload the server accepts.
    pub max_payload: u32,
    /// The shard (core) that owns the connection.
    pub shard: u16,
}

/// Where a PUBLISH or MESSAGE stands in a stream. The default is a whole message
/// (stream 0, no flags).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// The stream id; 0 for a whole message.
    pub stream: u16,
    /// More fragments follow.
    pub more: bool,
    /// The stream is abandoned (the body is then empty).
    pub cancel: bool,
}

impl Fragment {
    fn flags(&self) -> u8 {
        (if self.more { flags::MORE } else { 0 }) | (if self.cancel { flags::CANCEL } else { 0 })
    }

    fn from_header(h: &Header) -> Self {
        Fragment {
            stream: h.stream,
            more: h.flags & flags::MORE != 0,
            cancel: h.flags & flags::CANCEL != 0,
        }
    }
}

/// PUBLISH: a body (or one fragment of it) for every member of a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The room.
    pub room: Room<'a>,
    /// The body, or this fragment of it.
    pub body: &'a [u8],
    /// Deliver to the sender too.
    pub echo: bool,
    /// Stream id and flags.
    pub fragment: Fragment,
}

/// MESSAGE: a published body (or fragment) delivered to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The publisher's connection id.
    pub from_conn_id: u64,
    /// The room.
    pub room: Room<'a>,
    /// The body, or this fragment of it.
    pub body: &'a [u8],
    /// Stream id and flags, as the publisher sent them.
    pub fragment: Fragment,
}

impl<'a> Message<'a> {
    /// Reads back one whole encoded MESSAGE frame (header and payload), such
    /// as the server shares among members, in place; `None` if it is not one.
    pub fn from_frame(frame: &'a [u8]) -> Option<Message<'a>> {
        let (head, payload) = frame.split_first_chunk::<HEADER_LEN>()?;
        let header = Header::parse(head);
        let ty = header.check(u32::MAX).ok()?;
        if payload.len() != header.len as usize {
            return None;
        }
        match Frame::parse(&header, ty, payload).ok()? {
            Frame::Message(m) => Some(m),
            _ => None,
        }
    }
}

/// The payload of ERROR and GOAWAY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status<'a> {
    /// The code.
    pub code: ErrorCode,
    /// A human-readable reason (UTF-8, no NUL).
    pub reason: &'a str,
}

/// One frame, its payload parsed and checked against PROTOCOL.md.
///
/// Borrowed fields point into the decoder's input or carry-over buffer, or into
/// whatever the caller built the frame from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// HELLO (client to server).
    Hello(Hello<'a>),
    /// WELCOME (server to client).
    Welcome(Welcome),
    /// PING with its opaque payload, 0..=64 bytes.
    Ping(&'a [u8]),
    /// PONG with the payload of the PING it answers.
    Pong(&'a [u8]),
    /// JOIN a room.
    Join(Room<'a>),
    /// JOINED a room.
    Joined(Room<'a>),
    /// LEAVE a room.
    Leave(Room<'a>),
    /// LEFT a room.
    Left(Room<'a>),
    /// PUBLISH to a room.
    Publish(Publish<'a>),
    /// MESSAGE from a room.
    Message(Message<'a>),
    /// ERROR report.
    Error(Status<'a>),
    /// GOAWAY notice.
    GoAway(Status<'a>),
}

impl<'a> Frame<'a> {
    /// The frame's type.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            Frame::Hello(_) => FrameType::Hello,
            Frame::Welcome(_) => FrameType::Welcome,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
            Frame::Join(_) => FrameType::Join,
            Frame::Joined(_) => FrameType::Joined,
            Frame::Leave(_) => FrameType::Leave,
            Frame::Left(_) => FrameType::Left,
            Frame::Publish(_) => FrameType::Publish,
            Frame::Message(_) => FrameType::Message,
            Frame::Error(_) => FrameType::Error,
            Frame::GoAway(_) => FrameType::GoAway,
        }
    }

    /// Parses a payload whose header passed [`Header::check`] (which gave `ty`).
    pub(crate) fn parse(
        header: &Header,
        ty: FrameType,
        payload: &'a [u8],
    ) -> Result<Self, Malformed> {
        let mut r = Reader(payload);
        let short = Malformed::Length {
            ty,
            len: header.len,
        };
        Ok(match ty {
            FrameType::Hello => {
                let version = r.u16().ok_or(short)?;
                if version != VERSION {
                    return Err(Malformed::Version { version });
                }
                Frame::Hello(Hello {
                    heartbeat_ms: r.u32().ok_or(short)?,
                    name: text(r.rest(), Field::Name)?,
                })
            }
            FrameType::Welcome => Frame::Welcome(Welcome {
                conn_id: r.u64().ok_or(short)?,
                heartbeat_ms: r.u32().ok_or(short)?,
                idle_timeout_ms: r.u32().ok_or(short)?,
                max_payload: r.u32().ok_or(short)?,
                shard: r.u16().ok_or(short)?,
            }),
            FrameType::Ping => Frame::Ping(payload),
            FrameType::Pong => Frame::Pong(payload),
            FrameType::Join => Frame::Join(Room::from_bytes(payload)?),
            FrameType::Joined => Frame::Joined(Room::from_bytes(payload)?),
            FrameType::Leave => Frame::Leave(Room::from_bytes(payload)?),
            FrameType::Left => Frame::Left(Room::from_bytes(payload)?),
            FrameType::Publish => {
                let room = r.room()?;
                let fragment = Fragment::from_header(header);
                let body = r.rest();
                if fragment.cancel && !body.is_empty() {
                    return Err(Malformed::CancelWithBody);
                }
                Frame::Publish(Publish {
                    room,
                    body,
                    echo: header.flags & flags::ECHO != 0,
                    fragment,
                })
            }
            FrameType::Message => {
                let from_conn_id = r.u64().ok_or(short)?;
                let room = r.room()?;
                let fragment = Fragment::from_header(header);
                let body = r.rest();
                if fragment.cancel && !body.is_empty() {
                    return Err(Malformed::CancelWithBody);
                }
                Frame::Message(Message {
                    from_conn_id,
                    room,
                    body,
                    fragment,
                })
            }
            FrameType::Error | FrameType::GoAway => {
                let status = Status {
                    code: ErrorCode(r.u16().ok_or(short)?),
                    reason: text(r.rest(), Field::Reason)?,
                };
                if ty == FrameType::Error {
                    Frame::Error(status)
                } else {
                    Frame::GoAway(status)
                }
            }
        })
    }

    /// The payload length in bytes (not counting the header).
    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Hello(h) => 6 + h.name.len(),
            Frame::Welcome(_) => 22,
            Frame::Ping(p) | Frame::Pong(p) => p.len(),
            Frame::Join(r) | Frame::Joined(r) | Frame::Leave(r) | Frame::Left(r) => r.0.len(),
            Frame::Publish(p) => 1 + p.room.0.len() + p.body.len(),
            Frame::Message(m) => 9 + m.room.0.len() + m.body.len(),
            Frame::Error(s) | Frame::GoAway(s) => 2 + s.reason.len(),
        }
    }

    /// The whole frame's length on the wire: header and payload.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// The header this frame is sent with, after checking every rule a receiver
    /// checks, so that nothing this crate encodes is refused by its decoder
    /// (except for exceeding the receiver's maximum payload, which the caller knows).
    pub fn header(&self) -> Result<Header, EncodeError> {
        let ty = self.frame_type();
        let (flag_bits, stream) = match self {
            Frame::Hello(h) => {
                if h.name.len() > MAX_NAME_LEN {
                    return Err(Malformed::Length {
                        ty,
                        len: self.payload_len() as u32,
                    }
                    .into());
                }
                check_text(h.name, Field::Name)?;
                (0, 0)
            }
            Frame::Ping(p) | Frame::Pong(p) if p.len() > MAX_PING_LEN => {
                return Err(Malformed::Length {
                    ty,
                    len: p.len() as u32,
                }
                .into());
            }
            Frame::Publish(p) => {
                if p.fragment.cancel && !p.body.is_empty() {
                    return Err(Malformed::CancelWithBody.into());
                }
                let echo = if p.echo { flags::ECHO } else { 0 };
                (p.fragment.flags() | echo, p.fragment.stream)
            }
            Frame::Message(m) => {
                if m.fragment.cancel && !m.body.is_empty() {
                    return Err(Malformed::CancelWithBody.into());
                }
                (m.fragment.flags(), m.fragment.stream)
            }
            Frame::Error(s) | Frame::GoAway(s) => {
                check_text(s.reason, Field::Reason)?;
                (0, 0)
            }
            _ => (0, 0),
        };
        check_flags(ty, flag_bits, stream)?;
        let len = u32::try_from(self.payload_len())
            .map_err(|_| Malformed::Length { ty, len: u32::MAX })?;
        Ok(Header {
            len,
            ty: ty as u8,
            flags: flag_bits,
            stream,
        })
    }

    /// Writes the frame at the start of `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let header = self.header()?;
        let need = self.encoded_len();
        let Some(dst) = out.get_mut(..need) else {
            return Err(EncodeError::BufferTooSmall { need });
        };
        let mut sink = SliceSink { buf: dst, pos: 0 };
        self.write_with(&header, &mut sink);
        debug_assert_eq!(sink.pos, need);
        Ok(need)
    }

    /// Appends the frame to `out` and returns its length.
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let header = self.header()?;
        let need = self.encoded_len();
        out.reserve(need);
        self.write_with(&header, out);
        Ok(need)
    }

    fn write_with(&self, header: &Header, out: &mut impl Sink) {
        out.put(&header.to_bytes());
        match self {
            Frame::Hello(h) => {
                out.put(&VERSION.to_be_bytes());
                out.put(&h.heartbeat_ms.to_be_bytes());
                out.put(h.name.as_bytes());
            }
            Frame::Welcome(w) => {
                out.put(&w.conn_id.to_be_bytes());
                out.put(&w.heartbeat_ms.to_be_bytes());
                out.put(&w.idle_timeout_ms.to_be_bytes());
                out.put(&w.max_payload.to_be_bytes());
                out.put(&w.shard.to_be_bytes());
            }
            Frame::Ping(p) | Frame::Pong(p) => out.put(p),
            Frame::Join(r) | Frame::Joined(r) | Frame::Leave(r) | Frame::Left(r) => {
                out.put(r.as_bytes())
            }
            Frame::Publish(p) => {
                out.put(&[p.room.0.len() as u8]);
                out.put(p.room.as_bytes());
                out.put(p.body);
            }
            Frame::Message(m) => {
                out.put(&m.from_conn_id.to_be_bytes());
                out.put(&[m.room.0.len() as u8]);
                out.put(m.room.as_bytes());
                out.put(m.body);
            }
            Frame::Error(s) | Frame::GoAway(s) => {
                out.put(&s.code.0.to_be_bytes());
                out.put(s.reason.as_bytes());
            }
        }
    }
}

/// Checks a string field's bytes: UTF-8 without NUL.
fn text(bytes: &[u8], field: Field) -> Result<&str, Malformed> {
    let s = std::str::from_utf8(bytes).map_err(|_| Malformed::Utf8 { field })?;
    check_text(s, field)?;
    Ok(s)
}

fn check_text(s: &str, field: Field) -> Result<(), Malformed> {
    if s.as_bytes().contains(&0) {
        Err(Malformed::Nul { field })
    } else {
        Ok(())
    }
}

/// A cursor over a payload; `None` when a field runs past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }

    /// `u8 room_len` then the room.
    fn room(&mut self) -> Result<Room<'a>, Malformed> {
        let [len] = self.take::<1>().ok_or(Malformed::RoomLength { len: 0 })?;
        let len = usize::from(len);
        if len > self.0.len() {
            return Err(Malformed::RoomLength { len });
        }
        let (room, rest) = self.0.split_at(len);
        self.0 = rest;
        Room::from_bytes(room)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Where encoders write: a `Vec` grows, a slice was sized beforehand.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        // The caller sized `buf` to the frame's encoded length.
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}
