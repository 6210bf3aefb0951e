//! The client-level body format: what `ringroom` puts inside PUBLISH bodies
//! (docs/PROTOCOL.md, "Client bodies"). The server never looks at it.
//!
//! A body that follows the format starts with the byte 0xC1, which never
//! starts valid UTF-8, so a plain UTF-8 body from any other client can never
//! be mistaken for one, and is shown as it is.
//!
//! * whole message: `C1 'T' u8 name_len, name, text (rest)`
//! * first fragment of a file's stream: `C1 'F' u8 name_len, name, u64 size,
//!   u16 file_name_len, file_name`
//! * middle fragments: the file's bytes, nothing else
//! * last fragment (no MORE): `C1 'E' u64 size, sha256 (32 bytes)`

use std::fmt;

/// The first byte of every body in this format.
pub const MARK: u8 = 0xC1;
/// Longest sender name, in bytes (as HELLO's name).
pub const MAX_SENDER_LEN: usize = proto::MAX_NAME_LEN;
/// Longest file name, in bytes (as a Linux file name).
pub const MAX_FILE_NAME_LEN: usize = 255;
/// Bytes of a file trailer.
pub const TRAILER_LEN: usize = 2 + 8 + 32;

const TEXT: u8 = b'T';
const FILE: u8 = b'F';
const END: u8 = b'E';

/// A body, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// A chat line.
    Text {
        /// Who wrote it, as they call themselves.
        sender: &'a str,
        /// The line.
        text: &'a str,
    },
    /// The first fragment of a file's stream.
    FileHeader {
        /// Who sends it.
        sender: &'a str,
        /// The file's size in bytes.
        size: u64,
        /// The name the sender gives it (checked by the receiver, see `files::names`).
        file_name: &'a str,
    },
    /// The last fragment of a file's stream.
    FileTrailer {
        /// The file's size, again.
        size: u64,
        /// The SHA-256 of its bytes.
        sha256: [u8; 32],
    },
}

/// A body that starts with [`MARK`] but breaks the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// The body does not start with [`MARK`]: it is another client's, shown raw.
    NotOurs,
    /// Too short for its kind.
    Truncated,
    /// A kind byte this version does not know.
    UnknownKind(u8),
    /// A name or text that is not UTF-8.
    NotUtf8,
    /// A trailer with bytes after it.
    TrailingBytes,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotOurs => f.write_str("not a ringroom client body"),
            BodyError::Truncated => f.write_str("truncated body"),
            BodyError::UnknownKind(k) => write!(f, "unknown body kind 0x{k:02x}"),
            BodyError::NotUtf8 => f.write_str("a name or text that is not UTF-8"),
            BodyError::TrailingBytes => f.write_str("bytes after the trailer"),
        }
    }
}

/// A cursor over a body's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        if self.0.len() < n {
            return Err(BodyError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, BodyError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, BodyError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, BodyError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| BodyError::NotUtf8)
    }
}

impl<'a> Body<'a> {
    /// Parses a whole message or a stream's first or last fragment.
    pub fn parse(bytes: &'a [u8]) -> Result<Body<'a>, BodyError> {
        let mut r = Reader(bytes);
        if bytes.first() != Some(&MARK) {
            return Err(BodyError::NotOurs);
        }
        r.take(1)?;
        match r.u8()? {
            TEXT => {
                let n = r.u8()? as usize;
                let sender = r.str(n)?;
                let text = r.str(r.0.len())?;
                Ok(Body::Text { sender, text })
            }
            FILE => {
                let n = r.u8()? as usize;
                let sender = r.str(n)?;
                let size = r.u64()?;
                let n = r.u16()? as usize;
                let file_name = r.str(n)?;
                Ok(Body::FileHeader {
                    sender,
                    size,
                    file_name,
                })
            }
            END => {
                let size = r.u64()?;
                let sha256 = r.take(32)?.try_into().unwrap();
                if !r.0.is_empty() {
                    return Err(BodyError::TrailingBytes);
                }
                Ok(Body::FileTrailer { size, sha256 })
            }
            other => Err(BodyError::UnknownKind(other)),
        }
    }

    /// Appends the body to `out`. Names longer than the format's bounds are
    /// cut at a character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(MARK);
        match *self {
            Body::Text { sender, text } => {
                out.push(TEXT);
                put_short(out, sender, MAX_SENDER_LEN);
                out.extend_from_slice(text.as_bytes());
            }
            Body::FileHeader {
                sender,
                size,
                file_name,
            } => {
                out.push(FILE);
                put_short(out, sender, MAX_SENDER_LEN);
                out.extend_from_slice(&size.to_be_bytes());
                let name = cut(file_name, MAX_FILE_NAME_LEN);
                out.extend_from_slice(&(name.len() as u16).to_be_bytes());
                out.extend_from_slice(name.as_bytes());
            }
            Body::FileTrailer { size, sha256 } => {
                out.push(END);
                out.extend_from_slice(&size.to_be_bytes());
                out.extend_from_slice(&sha256);
            }
        }
    }
}

fn put_short(out: &mut Vec<u8>, s: &str, max: usize) {
    let s = cut(s, max);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// How a body that is not ours is shown: its text when it is UTF-8 (control
/// characters replaced, so a body cannot drive the terminal), else its size.
pub fn show_raw(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => printable(text),
        Err(_) => format!("({} bytes, not text)", bytes.len()),
    }
}

/// `text` with control characters (escape sequences among them) shown as `\u{..}`
/// escapes: what others send must not move the cursor or recolour the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: Body<'_>) {
        let mut wire = Vec::new();
        body.encode(&mut wire);
        assert_eq!(Body::parse(&wire), Ok(body));
        for n in 0..wire.len() {
            if !matches!(body, Body::Text { .. }) || n < 3 {
                assert!(Body::parse(&wire[..n]).is_err(), "cut at {n} parsed");
            }
        }
    }

    #[test]
    fn every_kind_round_trips() {
        round_trip(Body::Text {
            sender: "alice",
            text: "héllo, world",
        });
        round_trip(Body::Text {
            sender: "",
            text: "",
        });
        round_trip(Body::FileHeader {
            sender: "bob",
            size: 50 << 20,
            file_name: "report 2026.pdf",
        });
        round_trip(Body::FileTrailer {
            size: 7,
            sha256: [9; 32],
        });
    }

    #[test]
    fn plain_text_from_another_client_is_not_ours() {
        assert_eq!(Body::parse(b"hello"), Err(BodyError::NotOurs));
        assert_eq!(Body::parse(b""), Err(BodyError::NotOurs));
        assert_eq!(show_raw(b"hello"), "hello");
        assert_eq!(show_raw(&[0xff, 0xfe]), "(2 bytes, not text)");
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert_eq!(
            Body::parse(&[MARK, b'Z']),
            Err(BodyError::UnknownKind(b'Z'))
        );
        assert_eq!(
            Body::parse(&[MARK, b'T', 2, 0xff, 0xff]),
            Err(BodyError::NotUtf8)
        );
        let mut trailer = Vec::new();
        Body::FileTrailer {
            size: 1,
            sha256: [0; 32],
        }
        .encode(&mut trailer);
        trailer.push(0);
        assert_eq!(Body::parse(&trailer), Err(BodyError::TrailingBytes));
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100);
        let mut wire = Vec::new();
        Body::Text {
            sender: &long,
            text: "x",
        }
        .encode(&mut wire);
        match Body::parse(&wire).unwrap() {
            Body::Text { sender, text } => {
                assert_eq!(sender.len(), 64);
                assert_eq!(text, "x");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn escapes_cannot_reach_the_terminal() {
        assert_eq!(printable("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("tab\tok"), "tab\tok");
    }
}
