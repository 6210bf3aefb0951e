//! `ringroom`, the client for people: find a server on the LAN, chat in rooms,
//! send and receive files. See `client/README.md`.
//!
//! The logic is sans-io and tested without sockets: [`session`] (handshake,
//! heartbeats, liveness, reconnects, rooms), [`body`] (the client-level body
//! format of PROTOCOL.md), [`files`] (streams of files out and in),
//! [`outbox`] (what goes first on the wire). [`net`] and [`runtime`] put them
//! on a TCP socket; [`discover`] finds servers; [`cmd`] holds the commands.
#![forbid(unsafe_code)]

pub mod body;
pub mod cmd;
pub mod discover;
pub mod explain;
pub mod files;
pub mod net;
pub mod outbox;
pub mod runtime;
pub mod session;
pub mod ui;
