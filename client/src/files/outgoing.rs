//! A file going out as one stream: a header fragment, the file's bytes in
//! fragments as large as the server takes, and a trailer with the SHA-256
//! of exactly the bytes sent. The file is read one fragment at a time, as the
//! socket takes them: memory per file is one fragment.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proto::{Fragment, Frame, Publish, Room};
use sha2::{Digest, Sha256};

use crate::body::Body;

/// Where a file's stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Header,
    Data,
    Trailer,
    Done,
}

/// One file being sent.
pub struct OutgoingFile {
    /// Our number for it, for `/cancel N` and progress.
    pub id: u32,
    /// Its stream id on the connection.
    pub stream: u16,
    /// The room it goes to.
    pub room: String,
    /// Its name as sent.
    pub file_name: String,
    /// Its size, as announced.
    pub size: u64,
    /// Bytes of the file handed to the socket so far (shared with a progress bar).
    pub sent: Arc<AtomicU64>,
    sender: String,
    source: Box<dyn Read + Send>,
    read: u64,
    hasher: Sha256,
    stage: Stage,
}

impl OutgoingFile {
    /// Opens `path` to be sent as `id` on `stream`.
    pub fn open(
        path: &Path,
        id: u32,
        stream: u16,
        room: &str,
        sender: &str,
    ) -> io::Result<OutgoingFile> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: not a file name in UTF-8", path.display()),
                )
            })?
            .to_string();
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a regular file", path.display()),
            ));
        }
        Ok(Self::from_reader(
            Box::new(file),
            meta.len(),
            &file_name,
            id,
            stream,
            room,
            sender,
        ))
    }

    /// A stream of `size` bytes read from `source`, named `file_name`.
    pub fn from_reader(
        source: Box<dyn Read + Send>,
        size: u64,
        file_name: &str,
        id: u32,
        stream: u16,
        room: &str,
        sender: &str,
    ) -> OutgoingFile {
        OutgoingFile {
            id,
            stream,
            room: room.to_string(),
            file_name: file_name.to_string(),
            size,
            sent: Arc::new(AtomicU64::new(0)),
            sender: sender.to_string(),
            source,
            read: 0,
            hasher: Sha256::new(),
            stage: Stage::Header,
        }
    }

    /// Whether the trailer has been framed.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Bytes of file data that fit one PUBLISH under `max_payload`.
    pub fn chunk_len(&self, max_payload: u32) -> usize {
        // PUBLISH payload: u8 room_len, room, body.
        (max_payload as usize)
            .saturating_sub(1 + self.room.len())
            .max(1)
    }

    /// Appends the next fragment as a PUBLISH frame to `out`, and returns the
    /// bytes of file data in it. A file that shrank while being read is an
    /// error (the stream must then be cancelled); one that grew is sent as it
    /// was announced, up to its announced size.
    pub fn next_fragment(&mut self, max_payload: u32, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut body = Vec::new();
        let mut data = 0;
        let more = match self.stage {
            Stage::Header => {
                Body::FileHeader {
                    sender: &self.sender,
                    size: self.size,
                    file_name: &self.file_name,
                }
                .encode(&mut body);
                self.stage = if self.size == 0 {
                    Stage::Trailer
                } else {
                    Stage::Data
                };
                true
            }
            Stage::Data => {
                let want = (self.size - self.read).min(self.chunk_len(max_payload) as u64) as usize;
                body.resize(want, 0);
                let mut got = 0;
                while got < want {
                    match self.source.read(&mut body[got..]) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!(
                                    "{} shrank while being sent: {} of {} bytes read",
                                    self.file_name,
                                    self.read + got as u64,
                                    self.size
                                ),
                            ))
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                self.hasher.update(&body);
                self.read += want as u64;
                data = want;
                if self.read == self.size {
                    self.stage = Stage::Trailer;
                }
                true
            }
            Stage::Trailer => {
                Body::FileTrailer {
                    size: self.size,
                    sha256: self.hasher.clone().finalize().into(),
                }
                .encode(&mut body);
                self.stage = Stage::Done;
                false
            }
            Stage::Done => return Ok(0),
        };
        self.publish(&body, more, false, out);
        Ok(data)
    }

    /// Appends the CANCEL of this stream to `out`.
    pub fn cancel(&self, out: &mut Vec<u8>) {
        self.publish(&[], false, true, out);
    }

    fn publish(&self, body: &[u8], more: bool, cancel: bool, out: &mut Vec<u8>) {
        let room = Room::new(&self.room).expect("rooms are checked when joined");
        Frame::Publish(Publish {
            room,
            body,
            echo: false,
            fragment: Fragment {
                stream: self.stream,
                more,
                cancel,
            },
        })
        .encode_to_vec(out)
        .expect("fragments are sized to the server's max_payload");
    }

    /// Counts `n` bytes of file data as handed to the socket.
    pub fn count_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }
}
