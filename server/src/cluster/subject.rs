//! Room names as NATS subjects.
//!
//! A room name is 1..=64 bytes of UTF-8 without NUL: it may hold spaces,
//! dots and wildcards, none of which a subject token may. So a room is one
//! token, percent-encoded: ASCII letters, digits, `-` and `_` stand for
//! themselves, every other byte is `%XX` (upper-case hex). "lobby" stays
//! "lobby"; "a.b c" is "a%2Eb%20c". The encoding is one-to-one, so two rooms
//! never share a subject, and at most 192 bytes long.
//!
//! Subjects, under a prefix (`--cluster-prefix`, default `ringroom`) that lets
//! several clusters share one NATS system:
//!
//! * `<prefix>.room.<token>`: a room's messages and its origins' syncs;
//! * `<prefix>.node.<id>`: one node's control messages (stream flow, claims
//!   of a node id).

use std::fmt::Write;

/// The subjects of one cluster.
#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`, which must be one or more valid tokens.
    pub fn new(prefix: &str) -> Result<Self, String> {
        if !natsproto::is_valid_subject(prefix) {
            return Err(format!(
                "--cluster-prefix {prefix:?} is not a NATS subject (dot-separated tokens, \
                 no spaces, no * or >)"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The subject of room `name`.
    pub fn room(&self, name: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 6 + name.len() * 3);
        s.push_str(&self.prefix);
        s.push_str(".room.");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                s.push(b as char);
            } else {
                write!(s, "%{b:02X}").expect("a String takes any text");
            }
        }
        s
    }

    /// The room a room subject names, or None if it is no room subject of
    /// this cluster (or not one this module wrote).
    pub fn room_of(&self, subject: &str) -> Option<String> {
        let token = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".room.")?;
        let bytes = token.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hex = token.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                out.push(b);
                i += 1;
            } else {
                return None;
            }
        }
        let name = String::from_utf8(out).ok()?;
        proto::Room::new(&name).ok()?;
        Some(name)
    }

    /// Node `id`'s control subject.
    pub fn node(&self, id: u16) -> String {
        format!("{}.node.{id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_stay_readable_and_the_rest_is_escaped() {
        let s = Subjects::new("ringroom").unwrap();
        assert_eq!(s.room("lobby"), "ringroom.room.lobby");
        assert_eq!(s.room("a.b c*>"), "ringroom.room.a%2Eb%20c%2A%3E");
        assert_eq!(s.room("é"), "ringroom.room.%C3%A9");
        assert_eq!(s.node(7), "ringroom.node.7");
        assert_eq!(
            s.room_of("ringroom.room.a%2Eb%20c%2A%3E").unwrap(),
            "a.b c*>"
        );
        assert_eq!(s.room_of("other.room.lobby"), None);
        assert_eq!(s.room_of("ringroom.room.a%2"), None, "cut escape");
        assert_eq!(s.room_of("ringroom.room.a.b"), None, "a raw dot");
        assert_eq!(s.room_of("ringroom.room.%00"), None, "NUL is no room");
        assert!(Subjects::new("a b").is_err());
        assert!(Subjects::new("tenant1.ringroom").is_ok());
    }

    proptest! {
        /// Every valid room name is one valid token, and comes back unchanged.
        #[test]
        fn every_room_is_a_valid_subject_and_round_trips(name in "[^\u{0}]{1,20}") {
            prop_assume!(name.len() <= 64);
            let s = Subjects::new("rr").unwrap();
            let subject = s.room(&name);
            prop_assert!(natsproto::is_valid_subject(&subject));
            prop_assert_eq!(subject.split('.').count(), 3);
            prop_assert_eq!(s.room_of(&subject), Some(name));
        }
    }
}
