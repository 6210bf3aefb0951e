//! Error codes of the protocol, and what the decoder and encoders report.

use std::fmt;

use crate::FrameType;

/// An ERROR or GOAWAY code. Unknown codes are kept as they are, so a client can
/// report a code from a newer server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// A frame's `len` is above the receiver's maximum payload.
    pub const FRAME_TOO_LARGE: Self = Self(1);
    /// A frame type nobody knows.
    pub const UNKNOWN_TYPE: Self = Self(2);
    /// A frame that does not parse as its type says.
    pub const MALFORMED: Self = Self(3);
    /// PUBLISH to a room the connection has not joined.
    pub const NOT_MEMBER: Self = Self(4);
    /// A per-connection or server limit (rooms, streams) was reached.
    pub const LIMIT: Self = Self(5);
    /// The connection's outgoing queue overflowed.
    pub const SLOW_CONSUMER: Self = Self(6);
    /// Nothing was received for the idle timeout.
    pub const HEARTBEAT_TIMEOUT: Self = Self(7);
    /// GOAWAY code: the server is stopping.
    pub const SHUTTING_DOWN: Self = Self(8);
    /// The server is at its connection limit.
    pub const OVERLOADED: Self = Self(9);
    /// Not fatal: messages from other nodes of a cluster to the room named in
    /// the reason may have been lost (a NATS link or route dropped them).
    pub const GAP: Self = Self(10);

    /// Every code PROTOCOL.md defines.
    pub const ALL: [ErrorCode; 10] = [
        Self::FRAME_TOO_LARGE,
        Self::UNKNOWN_TYPE,
        Self::MALFORMED,
        Self::NOT_MEMBER,
        Self::LIMIT,
        Self::SLOW_CONSUMER,
        Self::HEARTBEAT_TIMEOUT,
        Self::SHUTTING_DOWN,
        Self::OVERLOADED,
        Self::GAP,
    ];

    /// The name PROTOCOL.md gives the code, or `None` for a code it does not define.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "FRAME_TOO_LARGE",
            2 => "UNKNOWN_TYPE",
            3 => "MALFORMED",
            4 => "NOT_MEMBER",
            5 => "LIMIT",
            6 => "SLOW_CONSUMER",
            7 => "HEARTBEAT_TIMEOUT",
            8 => "SHUTTING_DOWN",
            9 => "OVERLOADED",
            10 => "GAP",
            _ => return None,
        })
    }

    /// Whether the connection ends after this code. Only NOT_MEMBER, LIMIT and
    /// GAP leave it open; an unknown code is taken as fatal, the safe reading
    /// for a client.
    pub const fn is_fatal(self) -> bool {
        !matches!(self, Self::NOT_MEMBER | Self::LIMIT | Self::GAP)
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "code {}", self.0),
        }
    }
}

/// A string field of a payload, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// HELLO's client name.
    Name,
    /// A room name.
    Room,
    /// ERROR's or GOAWAY's reason.
    Reason,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Name => "name",
            Field::Room => "room",
            Field::Reason => "reason",
        })
    }
}

/// Why a frame is `MALFORMED`: each rule of PROTOCOL.md that a frame can break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// One of flag bits 3-7 is set.
    ReservedFlags {
        /// The whole flags byte.
        flags: u8,
    },
    /// A flag this frame type does not carry (ECHO is PUBLISH's only, MORE and
    /// CANCEL are PUBLISH's and MESSAGE's).
    FlagsNotAllowed {
        /// The frame's type.
        ty: FrameType,
        /// The whole flags byte.
        flags: u8,
    },
    /// A non-zero stream id on a type that is never streamed.
    StreamNotAllowed {
        /// The frame's type.
        ty: FrameType,
        /// The stream id.
        stream: u16,
    },
    /// MORE or CANCEL on stream 0.
    FragmentWithoutStream,
    /// CANCEL and MORE together.
    CancelWithMore,
    /// CANCEL with a non-empty body.
    CancelWithBody,
    /// A payload length this type cannot have (too short, or longer than its fields allow).
    Length {
        /// The frame's type.
        ty: FrameType,
        /// The payload length.
        len: u32,
    },
    /// HELLO with a version other than 1.
    Version {
        /// The version the client sent.
        version: u16,
    },
    /// A room of 0 or more than 64 bytes, or longer than its frame.
    RoomLength {
        /// The room length the frame claims.
        len: usize,
    },
    /// A string field that is not UTF-8.
    Utf8 {
        /// Which field.
        field: Field,
    },
    /// A string field with a NUL byte.
    Nul {
        /// Which field.
        field: Field,
    },
    /// A frame type that only the other side sends (for example WELCOME sent to a
    /// server). The decoder never reports this: it is the session's rule.
    WrongDirection {
        /// The frame's type.
        ty: FrameType,
    },
    /// HELLO after another frame, or a second HELLO. The session's rule, too.
    LateHello,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Malformed::ReservedFlags { flags } => {
                write!(f, "reserved flag bits set (flags {flags:#04x})")
            }
            Malformed::FlagsNotAllowed { ty, flags } => {
                write!(f, "flags {flags:#04x} not allowed on {}", ty.name())
            }
            Malformed::StreamNotAllowed { ty, stream } => {
                write!(f, "stream {stream} not allowed on {}", ty.name())
            }
            Malformed::FragmentWithoutStream => f.write_str("MORE or CANCEL on stream 0"),
            Malformed::CancelWithMore => f.write_str("CANCEL and MORE together"),
            Malformed::CancelWithBody => f.write_str("CANCEL with a non-empty body"),
            Malformed::Length { ty, len } => {
                write!(f, "{} cannot have a {len}-byte payload", ty.name())
            }
            Malformed::Version { version } => {
                write!(f, "unsupported version {version} (this server speaks 1)")
            }
            Malformed::RoomLength { len } => {
                write!(f, "room of {len} bytes (1..=64, within the frame)")
            }
            Malformed::Utf8 { field } => write!(f, "{field} is not UTF-8"),
            Malformed::Nul { field } => write!(f, "{field} contains NUL"),
            Malformed::WrongDirection { ty } => {
                write!(f, "{} is not sent in this direction", ty.name())
            }
            Malformed::LateHello => f.write_str("HELLO must be the first frame, once"),
        }
    }
}

/// A fatal protocol error found while decoding. The receiver answers with
/// `ERROR` [`DecodeError::code`] and closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The header's `len` is above the maximum payload.
    FrameTooLarge {
        /// The header's `len`.
        len: u32,
        /// The decoder's maximum payload.
        max: u32,
    },
    /// The header's type code is not one PROTOCOL.md defines.
    UnknownType(u8),
    /// The frame breaks a rule of its type.
    Malformed(Malformed),
}

impl DecodeError {
    /// The error code to send in the ERROR frame.
    pub const fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            DecodeError::UnknownType(_) => ErrorCode::UNKNOWN_TYPE,
            DecodeError::Malformed(_) => ErrorCode::MALFORMED,
        }
    }
}

impl From<Malformed> for DecodeError {
    fn from(m: Malformed) -> Self {
        DecodeError::Malformed(m)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "payload of {len} bytes is over the maximum of {max}")
            }
            DecodeError::UnknownType(ty) => write!(f, "unknown frame type {ty:#04x}"),
            DecodeError::Malformed(m) => fmt::Display::fmt(m, f),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output slice is too short; `need` bytes would fit the frame.
    BufferTooSmall {
        /// The frame's encoded length.
        need: usize,
    },
    /// The frame breaks a rule of the protocol, and a receiver would refuse it.
    Invalid(Malformed),
}

impl From<Malformed> for EncodeError {
    fn from(m: Malformed) -> Self {
        EncodeError::Invalid(m)
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { need } => {
                write!(f, "output buffer too small: the frame needs {need} bytes")
            }
            EncodeError::Invalid(m) => write!(f, "invalid frame: {m}"),
        }
    }
}

impl std::error::Error for EncodeError {}
