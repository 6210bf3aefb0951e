//! The fixed 8-byte frame header and the frame types.

use crate::{Malformed, MAX_NAME_LEN, MAX_PING_LEN, MAX_ROOM_LEN};

/// Size of the frame header, in bytes.
pub const HEADER_LEN: usize = 8;

/// The flag bits of the header's `flags` byte.
pub mod flags {
    /// More fragments of this stream follow.
    pub const MORE: u8 = 0x01;
    /// Deliver a PUBLISH to its sender too.
    pub const ECHO: u8 = 0x02;
    /// Abandon this stream.
    pub const CANCEL: u8 = 0x04;
    /// Bits 3-7: must be zero.
    pub const RESERVED: u8 = 0xF8;
}

/// A frame type code (the header's `type` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client greeting: version, heartbeat wish, name.
    Hello = 0x01,
    /// Server's answer to HELLO.
    Welcome = 0x02,
    /// Liveness probe, either direction.
    Ping = 0x03,
    /// Answer to a PING, same payload.
    Pong = 0x04,
    /// Enter a room.
    Join = 0x10,
    /// Server's answer to JOIN.
    Joined = 0x11,
    /// Leave a room.
    Leave = 0x12,
    /// Server's answer to LEAVE.
    Left = 0x13,
    /// Send a body to a room.
    Publish = 0x20,
    /// A body delivered from a room.
    Message = 0x21,
    /// Server error report.
    Error = 0x7E,
    /// Either side is going away.
    GoAway = 0x7F,
}

impl FrameType {
    /// Every frame type, in code order.
    pub const ALL: [FrameType; 12] = [
        Self::Hello,
        Self::Welcome,
        Self::Ping,
        Self::Pong,
        Self::Join,
        Self::Joined,
        Self::Leave,
        Self::Left,
        Self::Publish,
        Self::Message,
        Self::Error,
        Self::GoAway,
    ];

    /// The type for a code, or `None` for an unknown one.
    pub const fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Ping,
            0x04 => Self::Pong,
            0x10 => Self::Join,
            0x11 => Self::Joined,
            0x12 => Self::Leave,
            0x13 => Self::Left,
            0x20 => Self::Publish,
            0x21 => Self::Message,
            0x7E => Self::Error,
            0x7F => Self::GoAway,
            _ => return None,
        })
    }

    /// The name PROTOCOL.md gives it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hello => "HELLO",
            Self::Welcome => "WELCOME",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Join => "JOIN",
            Self::Joined => "JOINED",
            Self::Leave => "LEAVE",
            Self::Left => "LEFT",
            Self::Publish => "PUBLISH",
            Self::Message => "MESSAGE",
            Self::Error => "ERROR",
            Self::GoAway => "GOAWAY",
        }
    }

    /// Whether frames of this type may carry a stream id and the MORE/CANCEL flags.
    pub const fn is_streamable(self) -> bool {
        matches!(self, Self::Publish | Self::Message)
    }

    /// The flags this type may carry.
    pub const fn allowed_flags(self) -> u8 {
        match self {
            Self::Publish => flags::MORE | flags::ECHO | flags::CANCEL,
            Self::Message => flags::MORE | flags::CANCEL,
            _ => 0,
        }
    }

    /// The payload lengths a frame of this type can have, whatever the maximum
    /// payload: checked from the header alone, so a PING of 1 MB is refused
    /// before a byte of it arrives.
    pub const fn payload_len_range(self) -> (u32, u32) {
        const NAME: u32 = MAX_NAME_LEN as u32;
        const ROOM: u32 = MAX_ROOM_LEN as u32;
        const PING: u32 = MAX_PING_LEN as u32;
        match self {
            Self::Hello => (6, 6 + NAME),
            Self::Welcome => (22, 22),
            Self::Ping | Self::Pong => (0, PING),
            Self::Join | Self::Joined | Self::Leave | Self::Left => (1, ROOM),
            Self::Publish => (2, u32::MAX),
            Self::Message => (10, u32::MAX),
            Self::Error | Self::GoAway => (2, u32::MAX),
        }
    }
}

/// The fixed 8-byte header: `len (u32) | type | flags | stream (u16)`, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Payload length in bytes, not counting the header.
    pub len: u32,
    /// Frame type code (may be unknown).
    pub ty: u8,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// Stream id: 0 except for fragments of a streamed message.
    pub stream: u16,
}

impl Header {
    /// Reads a header from its 8 wire bytes. Any bytes are a header; whether it is
    /// acceptable is [`Header::check`]'s question.
    pub const fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            ty: b[4],
            flags: b[5],
            stream: u16::from_be_bytes([b[6], b[7]]),
        }
    }

    /// The header's 8 wire bytes.
    pub const fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let len = self.len.to_be_bytes();
        let stream = self.stream.to_be_bytes();
        [
            len[0], len[1], len[2], len[3], self.ty, self.flags, stream[0], stream[1],
        ]
    }

    /// Checks everything that can be known from the header alone, in the order a
    /// receiver must: an over-size `len` first (never wait for that payload), then
    /// the type, then the flags, stream and the type's own length bounds.
    pub fn check(&self, max_payload: u32) -> Result<FrameType, crate::DecodeError> {
        use crate::DecodeError;
        if self.len > max_payload {
            return Err(DecodeError::FrameTooLarge {
                len: self.len,
                max: max_payload,
            });
        }
        let ty = FrameType::from_u8(self.ty).ok_or(DecodeError::UnknownType(self.ty))?;
        check_flags(ty, self.flags, self.stream)?;
        let (min, max) = ty.payload_len_range();
        if self.len < min || self.len > max {
            return Err(Malformed::Length { ty, len: self.len }.into());
        }
        Ok(ty)
    }
}

/// The flag and stream rules shared by decoder and encoder.
pub(crate) fn check_flags(ty: FrameType, flags: u8, stream: u16) -> Result<(), Malformed> {
    if flags & flags::RESERVED != 0 {
        return Err(Malformed::ReservedFlags { flags });
    }
    if flags & !ty.allowed_flags() != 0 {
        return Err(Malformed::FlagsNotAllowed { ty, flags });
    }
    if !ty.is_streamable() {
        return if stream == 0 {
            Ok(())
        } else {
            Err(Malformed::StreamNotAllowed { ty, stream })
        };
    }
    let more = flags & flags::MORE != 0;
    let cancel = flags & flags::CANCEL != 0;
    if (more || cancel) && stream == 0 {
        return Err(Malformed::FragmentWithoutStream);
    }
    if more && cancel {
        return Err(Malformed::CancelWithMore);
    }
    Ok(())
}
