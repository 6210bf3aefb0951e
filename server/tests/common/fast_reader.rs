//! A reader that keeps up, for the tests and the benchmark clients.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;

/// A reader that keeps up: large reads, frames parsed in place, nothing
/// allocated per frame, so that a test's reader is never the slow one.
pub struct FastReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A frame seen by a [`FastReader`], borrowed from its buffer.
pub struct Seen<'a> {
    /// The frame type byte.
    pub ty: u8,
    /// The flags byte.
    pub flags: u8,
    /// The stream id.
    pub stream: u16,
    /// The payload.
    pub payload: &'a [u8],
}

impl FastReader {
    /// Reads frames from `stream` (nothing read from it yet may be pending elsewhere).
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
        }
    }

    /// Hands each frame to `each` until it returns false; returns false at EOF.
    pub fn frames(&mut self, mut each: impl FnMut(Seen<'_>) -> bool) -> bool {
        loop {
            while self.end - self.start >= 8 {
                let h = &self.buf[self.start..self.start + 8];
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                if self.end - self.start < 8 + len {
                    break;
                }
                let seen = Seen {
                    ty: h[4],
                    flags: h[5],
                    stream: u16::from_be_bytes([h[6], h[7]]),
                    payload: &self.buf[self.start + 8..self.start + 8 + len],
                };
                self.start += 8 + len;
                if !each(seen) {
                    return true;
                }
            }
            // Move a partial frame to the front, and grow for a large one.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end >= 8 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if 8 + len > self.buf.len() {
                    self.buf.resize(8 + len, 0);
                }
            }
            let n = match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read failed: {e}"),
            };
            if n == 0 {
                return false;
            }
            self.end += n;
        }
    }
}
