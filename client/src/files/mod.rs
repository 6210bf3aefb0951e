//! Files in streams: what a sender reads and frames, what a receiver checks,
//! writes and renames. No sockets here.

pub mod inbound;
pub mod names;
pub mod outgoing;
pub mod parts;

/// A SHA-256 as the lowercase hex people compare with `sha256sum`.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
