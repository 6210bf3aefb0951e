//! What a client has to send, in lanes, as the server keeps its own
//! (PROTOCOL.md, Lanes): control frames and chat lines first, all of them,
//! then one fragment of one file, the files taking turns. So a chat line
//! typed during a transfer waits behind at most one fragment.
//!
//! Bounded: the control lane holds at most [`MAX_CONTROL_BYTES`] (a line
//! typed beyond that is refused, not queued), files are read a fragment at a
//! time, and `--rate` paces the files (never the chat).

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use crate::files::outgoing::OutgoingFile;

/// Most bytes of control frames and chat lines that may wait for the socket.
pub const MAX_CONTROL_BYTES: usize = 4 << 20;

/// What the writer should do next.
pub enum Next {
    /// Write these bytes. `file` names the transfer whose fragment is in them,
    /// with the bytes of file data it carries and whether it was the last.
    Write {
        /// The frames.
        bytes: Vec<u8>,
        /// A fragment's file: (id, data bytes, last).
        file: Option<(u32, usize, bool)>,
    },
    /// A file failed to read: its CANCEL is queued; tell the user.
    Failed {
        /// The transfer.
        id: u32,
        /// Why.
        error: io::Error,
    },
    /// Nothing may go before this instant (the rate limit).
    WaitUntil(Instant),
    /// Nothing to send.
    Idle,
}

/// The lanes of one connection.
pub struct Outbox {
    control: Vec<u8>,
    files: VecDeque<OutgoingFile>,
    max_payload: u32,
    pacer: Option<Pacer>,
}

/// A token bucket over file bytes: `rate` bytes a second, bursts of at
/// most a quarter second.
struct Pacer {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Pacer {
    fn ready_at(&mut self, now: Instant, want: usize) -> Option<Instant> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate / 4.0);
        self.at = now;
        let want = want as f64;
        if self.tokens >= want.min(self.rate / 4.0) {
            self.tokens -= want;
            return None;
        }
        let short = want.min(self.rate / 4.0) - self.tokens;
        Some(now + Duration::from_secs_f64(short / self.rate))
    }
}

impl Outbox {
    /// An empty outbox. `rate`: bytes a second for files, if paced.
    pub fn new(max_payload: u32, rate: Option<u64>, now: Instant) -> Outbox {
        Outbox {
            control: Vec::new(),
            files: VecDeque::new(),
            max_payload,
            pacer: rate.map(|r| Pacer {
                rate: r.max(1) as f64,
                tokens: 0.0,
                at: now,
            }),
        }
    }

    /// The server's max_payload, from WELCOME.
    pub fn set_max_payload(&mut self, max_payload: u32) {
        self.max_payload = max_payload;
    }

    /// The largest payload fragments are cut to.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Queues encoded control frames or chat lines; refuses beyond the bound.
    pub fn push_control(&mut self, frames: &[u8]) -> Result<(), io::Error> {
        if self.control.len() + frames.len() > MAX_CONTROL_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the outgoing queue is full: the server is not taking our data",
            ));
        }
        self.control.extend_from_slice(frames);
        Ok(())
    }

    /// Adds a file to send.
    pub fn push_file(&mut self, file: OutgoingFile) {
        self.files.push_back(file);
    }

    /// Files being sent.
    pub fn files(&self) -> impl Iterator<Item = &OutgoingFile> {
        self.files.iter()
    }

    /// Whether `stream` is in use by a file.
    pub fn stream_in_use(&self, stream: u16) -> bool {
        self.files.iter().any(|f| f.stream == stream)
    }

    /// Takes file `id` out and queues its CANCEL; false if it is not here
    /// (finished, or never was).
    pub fn cancel(&mut self, id: u32) -> bool {
        let Some(i) = self.files.iter().position(|f| f.id == id) else {
            return false;
        };
        let file = self.files.remove(i).unwrap();
        file.cancel(&mut self.control);
        true
    }

    /// Drops everything: the connection is gone. Returns the files' ids.
    pub fn clear(&mut self) -> Vec<u32> {
        self.control.clear();
        self.files.drain(..).map(|f| f.id).collect()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.files.is_empty()
    }

    /// The next write: every control frame and chat line queued, or else one
    /// fragment of the next file in turn.
    pub fn next(&mut self, now: Instant) -> Next {
        if !self.control.is_empty() {
            return Next::Write {
                bytes: std::mem::take(&mut self.control),
                file: None,
            };
        }
        let Some(mut file) = self.files.pop_front() else {
            return Next::Idle;
        };
        if let Some(pacer) = &mut self.pacer {
            let want = file.chunk_len(self.max_payload).min(file.size as usize);
            if let Some(at) = pacer.ready_at(now, want) {
                self.files.push_front(file);
                return Next::WaitUntil(at);
            }
        }
        let mut bytes = Vec::new();
        match file.next_fragment(self.max_payload, &mut bytes) {
            Ok(data) => {
                file.count_sent(data);
                let last = file.is_done();
                let id = file.id;
                if !last {
                    self.files.push_back(file);
                }
                Next::Write {
                    bytes,
                    file: Some((id, data, last)),
                }
            }
            Err(error) => {
                file.cancel(&mut self.control);
                Next::Failed { id: file.id, error }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Decoder, Frame};

    fn file(id: u32, stream: u16, len: usize) -> OutgoingFile {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        OutgoingFile::from_reader(
            Box::new(io::Cursor::new(data)),
            len as u64,
            &format!("f{id}"),
            id,
            stream,
            "r",
            "me",
        )
    }

    /// (stream, more, cancel, body len) of every frame in `bytes`.
    fn frames(bytes: &[u8]) -> Vec<(u16, bool, bool, usize)> {
        let mut d = Decoder::new(1 << 20);
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut input).unwrap() {
            match f {
                Frame::Publish(p) => out.push((
                    p.fragment.stream,
                    p.fragment.more,
                    p.fragment.cancel,
                    p.body.len(),
                )),
                Frame::Ping(_) => out.push((0, false, false, 0)),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    fn write(next: Next) -> (Vec<u8>, Option<(u32, usize, bool)>) {
        match next {
            Next::Write { bytes, file } => (bytes, file),
            _ => panic!("not a write"),
        }
    }

    #[test]
    fn a_chat_line_waits_behind_at_most_one_fragment() {
        let now = Instant::now();
        let mut out = Outbox::new(1024, None, now);
        out.push_file(file(1, 1, 10_000));
        out.push_file(file(2, 2, 10_000));
        // Header of file 1, header of file 2: the files take turns.
        assert_eq!(frames(&write(out.next(now)).0)[0].0, 1);
        assert_eq!(frames(&write(out.next(now)).0)[0].0, 2);
        let (bytes, f) = write(out.next(now));
        assert_eq!(f, Some((1, 1022, false)), "room 'r' costs 2 bytes");
        assert_eq!(frames(&bytes), [(1, true, false, 1022)]);
        let mut ping = Vec::new();
        Frame::Ping(b"").encode_to_vec(&mut ping).unwrap();
        out.push_control(&ping).unwrap();
        let (bytes, f) = write(out.next(now));
        assert_eq!(f, None, "the line goes before the next fragment");
        assert_eq!(frames(&bytes), [(0, false, false, 0)]);
    }

    #[test]
    fn a_file_ends_with_its_trailer_and_cancel_stops_it() {
        let now = Instant::now();
        let mut out = Outbox::new(1024, None, now);
        out.push_file(file(1, 7, 2000));
        let mut seen = Vec::new();
        loop {
            let (bytes, f) = write(out.next(now));
            seen.extend(frames(&bytes));
            if f.unwrap().2 {
                break;
            }
        }
        assert_eq!(
            seen,
            [
                (7, true, false, 2 + 3 + 8 + 2 + 2),
                (7, true, false, 1022),
                (7, true, false, 978),
                (7, false, false, crate::body::TRAILER_LEN)
            ]
        );
        assert!(matches!(out.next(now), Next::Idle));

        out.push_file(file(2, 8, 5000));
        write(out.next(now));
        assert!(out.cancel(2));
        assert!(!out.cancel(2), "once");
        let (bytes, _) = write(out.next(now));
        assert_eq!(frames(&bytes), [(8, false, true, 0)]);
        assert!(out.is_empty());
    }

    #[test]
    fn a_file_that_shrinks_is_cancelled() {
        let now = Instant::now();
        let mut out = Outbox::new(1024, None, now);
        let short = OutgoingFile::from_reader(
            Box::new(io::Cursor::new(vec![0u8; 10])),
            100,
            "f",
            3,
            4,
            "r",
            "me",
        );
        out.push_file(short);
        write(out.next(now));
        match out.next(now) {
            Next::Failed { id, error } => {
                assert_eq!(id, 3);
                assert!(error.to_string().contains("shrank"), "{error}");
            }
            _ => panic!("a short read is a failure"),
        }
        assert_eq!(frames(&write(out.next(now)).0), [(4, false, true, 0)]);
    }

    #[test]
    fn the_control_lane_is_bounded() {
        let mut out = Outbox::new(1024, None, Instant::now());
        out.push_control(&vec![0; MAX_CONTROL_BYTES]).unwrap();
        assert!(out.push_control(&[0]).is_err());
    }

    #[test]
    fn the_rate_limit_paces_files_only() {
        let t0 = Instant::now();
        // 4,000 bytes a second, 1,022-byte chunks: a burst holds one chunk.
        let mut out = Outbox::new(1024, Some(4000), t0);
        out.push_file(file(1, 1, 100_000));
        let mut t = t0;
        let mut data = 0;
        let mut writes = 0;
        while t < t0 + Duration::from_secs(10) {
            match out.next(t) {
                Next::Write { file, .. } => {
                    data += file.unwrap().1;
                    writes += 1;
                }
                Next::WaitUntil(at) => {
                    assert!(at > t);
                    let mut ping = Vec::new();
                    Frame::Ping(b"").encode_to_vec(&mut ping).unwrap();
                    out.push_control(&ping).unwrap();
                    assert!(matches!(out.next(t), Next::Write { file: None, .. }));
                    t = at;
                }
                _ => panic!(),
            }
        }
        // 10 s at 4,000 B/s, give or take one burst.
        assert!(
            (38_000..=42_000).contains(&data),
            "{data} bytes in {writes} writes"
        );
    }
}
