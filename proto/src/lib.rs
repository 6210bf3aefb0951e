//! The ringroom wire protocol, version 1, as plain Rust: no sockets, no clock.
//!
//! `docs/PROTOCOL.md` is the contract; this crate is its single implementation, shared
//! by the server, the load generator and the tests.
//!
//! * [`Header`] and [`FrameType`]: the fixed 8-byte frame header.
//! * [`Frame`]: every frame type with its payload parsed and checked.
//! * [`Decoder`]: fed byte chunks of any size (half and sticky packets alike), it
//!   yields whole frames, borrowing from the chunk when a frame lies whole in it.
//! * [`Frame::encode`] and [`Frame::encode_to_vec`]: write into the caller's buffer.
//! * [`ErrorCode`] and [`DecodeError`]: what goes wrong, and the code to answer with.
//! * [`discovery`]: the UDP discovery datagrams.
//!
//! ```
//! use proto::{Decoder, Frame};
//!
//! let mut wire = Vec::new();
//! Frame::Ping(b"abc").encode_to_vec(&mut wire).unwrap();
//! Frame::Ping(b"def").encode_to_vec(&mut wire).unwrap();
//!
//! let mut decoder = Decoder::new(proto::DEFAULT_MAX_PAYLOAD);
//! let mut pings = Vec::new();
//! // Feed the two frames cut at an awkward place: one and a half, then the rest.
//! for mut chunk in [&wire[..13], &wire[13..]] {
//!     while let Some(frame) = decoder.decode(&mut chunk).unwrap() {
//!         if let Frame::Ping(payload) = frame {
//!             pings.push(payload.to_vec());
//!         }
//!     }
//! }
//! assert_eq!(pings, [b"abc".to_vec(), b"def".to_vec()]);
//! ```
#![forbid(unsafe_code)]

mod decoder;
pub mod discovery;
mod error;
mod frame;
mod header;

pub use decoder::Decoder;
pub use error::{DecodeError, EncodeError, ErrorCode, Field, Malformed};
pub use frame::{Fragment, Frame, Hello, Message, Publish, Room, Status, Welcome};
pub use header::{flags, FrameType, Header, HEADER_LEN};

/// The protocol version this crate speaks, as sent in HELLO.
pub const VERSION: u16 = 1;

/// The server's default maximum payload, announced in WELCOME.
pub const DEFAULT_MAX_PAYLOAD: u32 = 65_536;

/// Longest client name in HELLO, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest room name, in bytes (rooms are 1..=64 bytes).
pub const MAX_ROOM_LEN: usize = 64;

/// Longest PING (and so PONG) payload, in bytes.
pub const MAX_PING_LEN: usize = 64;

/// Default TCP port of the server.
pub const DEFAULT_TCP_PORT: u16 = 7700;

/// Default UDP discovery port of the server.
pub const DEFAULT_DISCOVERY_PORT: u16 = 7701;

/// Default metrics port of the server (Prometheus text over HTTP).
pub const DEFAULT_METRICS_PORT: u16 = 7702;
