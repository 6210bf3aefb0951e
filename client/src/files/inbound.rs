//! Files arriving: the fragments of each (publisher, stream) reassembled into
//! a temporary file beside the target, checked against the trailer's size and
//! SHA-256, then renamed; deleted on cancel, mismatch or a lost connection.
//!
//! Bounded: at most [`Limits::max_transfers`] files at once (more are
//! refused, their fragments skipped), each at most [`Limits::max_file_bytes`],
//! and nothing held in memory beyond one write buffer per file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use proto::Fragment;
use sha2::{Digest, Sha256};

use super::names;
use crate::body::{self, Body};

/// What a receiver accepts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Files being received at once.
    pub max_transfers: usize,
    /// Largest file accepted, by its header's size.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_transfers: 64,
            max_file_bytes: u64::MAX,
        }
    }
}

/// A stream is named by its publisher's connection and its stream id.
pub type Key = (u64, u16);

/// What became of an incoming stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A file's header arrived: it is being written.
    Started {
        /// Its stream.
        key: Key,
        /// The room it came through.
        room: String,
        /// Who sends it.
        sender: String,
        /// The name it was given (checked).
        file_name: String,
        /// Its size.
        size: u64,
    },
    /// Complete and verified, under `path`.
    Saved {
        /// Its stream.
        key: Key,
        /// Who sent it.
        sender: String,
        /// Where it is now.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Its SHA-256, as checked.
        sha256: [u8; 32],
    },
    /// Not kept: the partial file is deleted.
    Discarded {
        /// Its stream.
        key: Key,
        /// Who sent it (empty when the header never came).
        sender: String,
        /// Its name, as the sender gave it.
        file_name: String,
        /// Why.
        why: Discard,
    },
    /// A stream that is not a file in our format (another client's): its
    /// bytes were counted and dropped.
    Raw {
        /// Its stream.
        key: Key,
        /// How many bytes it carried.
        bytes: u64,
        /// Whether it ended by a cancel.
        cancelled: bool,
    },
}

/// Why a file was not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discard {
    /// The sender cancelled (or disconnected mid-file: the server cancels
    /// what a closed connection left open).
    Cancelled,
    /// The SHA-256 of what arrived differs from the trailer's.
    ChecksumMismatch {
        /// What the trailer said.
        expected: [u8; 32],
        /// What arrived.
        actual: [u8; 32],
    },
    /// More or fewer bytes than the header said.
    SizeMismatch {
        /// The header's size.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// The last fragment is not a trailer.
    NoTrailer,
    /// The name was refused.
    Refused(names::Refusal),
    /// Bigger than `--max-file-bytes`.
    TooLarge,
    /// Too many files at once.
    TooMany,
    /// This receiver takes no files.
    NotAccepting,
    /// Our connection to the server was lost mid-file.
    ConnectionLost,
    /// Writing it failed here (disk full, permissions).
    Io(String),
}

impl Discard {
    /// Whether part of the file had been written (and is now deleted), as
    /// opposed to refused before a byte was written.
    pub fn had_bytes(&self) -> bool {
        !matches!(
            self,
            Discard::Refused(_) | Discard::TooLarge | Discard::TooMany | Discard::NotAccepting
        )
    }
}

impl std::fmt::Display for Discard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discard::Cancelled => f.write_str("cancelled by the sender"),
            Discard::ChecksumMismatch { expected, actual } => write!(
                f,
                "SHA-256 mismatch: the sender's is {}, what arrived is {}",
                super::hex(expected),
                super::hex(actual)
            ),
            Discard::SizeMismatch { expected, actual } => {
                write!(
                    f,
                    "size mismatch: {expected} bytes announced, {actual} arrived"
                )
            }
            Discard::NoTrailer => f.write_str("the stream ended without its trailer"),
            Discard::Refused(why) => write!(f, "refused: {why}"),
            Discard::TooLarge => f.write_str("refused: larger than --max-file-bytes"),
            Discard::TooMany => f.write_str("refused: too many files at once"),
            Discard::NotAccepting => {
                f.write_str("refused: this client takes no files (--no-files)")
            }
            Discard::ConnectionLost => f.write_str("the connection to the server was lost"),
            Discard::Io(e) => write!(f, "could not write it here: {e}"),
        }
    }
}

enum Transfer {
    /// Boxed: a file's state is far larger than a skip's.
    File(Box<FileTransfer>),
    /// A stream we skip to its end: another client's, or one we refused
    /// (then its discard was reported already).
    Skip { bytes: u64, report: bool },
}

struct FileTransfer {
    sender: String,
    file_name: String,
    size: u64,
    received: u64,
    tmp: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
}

/// A file being received, for a progress display.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Its stream.
    pub key: Key,
    /// Its name.
    pub file_name: String,
    /// Bytes so far.
    pub received: u64,
    /// Bytes in all.
    pub size: u64,
}

/// Every incoming stream of one client.
pub struct Inbound {
    dir: Option<PathBuf>,
    limits: Limits,
    transfers: HashMap<Key, Transfer>,
}

impl Inbound {
    /// Writes files into `dir`, or takes none when `dir` is `None`.
    pub fn new(dir: Option<PathBuf>, limits: Limits) -> Inbound {
        Inbound {
            dir,
            limits,
            transfers: HashMap::new(),
        }
    }

    /// Files being received, for progress.
    pub fn progress(&self) -> Vec<Progress> {
        let mut all: Vec<Progress> = self
            .transfers
            .iter()
            .filter_map(|(key, t)| match t {
                Transfer::File(f) => Some(Progress {
                    key: *key,
                    file_name: f.file_name.clone(),
                    received: f.received,
                    size: f.size,
                }),
                Transfer::Skip { .. } => None,
            })
            .collect();
        all.sort_by_key(|p| p.key);
        all
    }

    /// One fragment (a MESSAGE with a non-zero stream) arrived.
    pub fn on_fragment(
        &mut self,
        from_conn_id: u64,
        room: &str,
        fragment: Fragment,
        body: &[u8],
    ) -> Option<Incoming> {
        let key = (from_conn_id, fragment.stream);
        let Some(transfer) = self.transfers.get_mut(&key) else {
            return self.first_fragment(key, room, fragment, body);
        };
        if fragment.cancel {
            let transfer = self.transfers.remove(&key).unwrap();
            return finish_cancelled(key, transfer);
        }
        match transfer {
            Transfer::Skip { bytes, .. } => {
                *bytes += body.len() as u64;
                if fragment.more {
                    return None;
                }
                let Some(Transfer::Skip { bytes, report }) = self.transfers.remove(&key) else {
                    unreachable!()
                };
                report.then_some(Incoming::Raw {
                    key,
                    bytes,
                    cancelled: false,
                })
            }
            Transfer::File(file) if fragment.more => {
                if let Err(why) = file.write(body) {
                    let Some(Transfer::File(file)) = self.transfers.remove(&key) else {
                        unreachable!()
                    };
                    // The rest of the stream is skipped, quietly: reported here.
                    self.transfers.insert(
                        key,
                        Transfer::Skip {
                            bytes: 0,
                            report: false,
                        },
                    );
                    return Some(file.discard(key, why));
                }
                None
            }
            Transfer::File(_) => {
                let Some(Transfer::File(file)) = self.transfers.remove(&key) else {
                    unreachable!()
                };
                Some(file.finish(key, body, self.dir.as_deref().unwrap()))
            }
        }
    }

    fn first_fragment(
        &mut self,
        key: Key,
        room: &str,
        fragment: Fragment,
        body: &[u8],
    ) -> Option<Incoming> {
        if fragment.cancel {
            // A cancel for a stream we never saw (it began before we joined).
            return None;
        }
        let skip = |this: &mut Self, report: bool, bytes: u64| {
            if fragment.more {
                this.transfers.insert(key, Transfer::Skip { bytes, report });
            }
        };
        let Ok(Body::FileHeader {
            sender,
            size,
            file_name,
        }) = Body::parse(body)
        else {
            // Not a file of ours: another client's stream, or one that began
            // before we joined (its first fragment never reached us).
            skip(self, true, body.len() as u64);
            return (!fragment.more).then_some(Incoming::Raw {
                key,
                bytes: body.len() as u64,
                cancelled: false,
            });
        };
        let refuse = |this: &mut Self, why| {
            skip(this, false, 0);
            Some(Incoming::Discarded {
                key,
                sender: sender.to_string(),
                file_name: body::printable(file_name),
                why,
            })
        };
        let Some(dir) = self.dir.clone() else {
            return refuse(self, Discard::NotAccepting);
        };
        if let Err(why) = names::check(file_name) {
            return refuse(self, Discard::Refused(why));
        }
        if size > self.limits.max_file_bytes {
            return refuse(self, Discard::TooLarge);
        }
        let open = self
            .transfers
            .values()
            .filter(|t| matches!(t, Transfer::File(_)))
            .count();
        if open >= self.limits.max_transfers {
            return refuse(self, Discard::TooMany);
        }
        if !fragment.more {
            return refuse(self, Discard::NoTrailer);
        }
        let tmp = super::parts::new_path(&dir);
        let file = match File::options().write(true).create_new(true).open(&tmp) {
            Ok(file) => file,
            Err(e) => return refuse(self, Discard::Io(e.to_string())),
        };
        self.transfers.insert(
            key,
            Transfer::File(Box::new(FileTransfer {
                sender: sender.to_string(),
                file_name: file_name.to_string(),
                size,
                received: 0,
                tmp,
                out: BufWriter::with_capacity(256 << 10, file),
                hasher: Sha256::new(),
            })),
        );
        Some(Incoming::Started {
            key,
            room: room.to_string(),
            sender: sender.to_string(),
            file_name: file_name.to_string(),
            size,
        })
    }

    /// The connection is gone: every file in progress is deleted (the
    /// stream cannot be resumed on a new connection).
    pub fn on_disconnect(&mut self) -> Vec<Incoming> {
        let mut out: Vec<Incoming> = self
            .transfers
            .drain()
            .filter_map(|(key, t)| match t {
                Transfer::File(f) => Some(f.discard(key, Discard::ConnectionLost)),
                Transfer::Skip { .. } => None,
            })
            .collect();
        out.sort_by_key(|i| match i {
            Incoming::Discarded { key, .. } => *key,
            _ => (0, 0),
        });
        out
    }
}

fn finish_cancelled(key: Key, transfer: Transfer) -> Option<Incoming> {
    match transfer {
        Transfer::File(f) => Some(f.discard(key, Discard::Cancelled)),
        Transfer::Skip { bytes, report } => report.then_some(Incoming::Raw {
            key,
            bytes,
            cancelled: true,
        }),
    }
}

impl FileTransfer {
    fn write(&mut self, data: &[u8]) -> Result<(), Discard> {
        self.received += data.len() as u64;
        if self.received > self.size {
            return Err(Discard::SizeMismatch {
                expected: self.size,
                actual: self.received,
            });
        }
        self.hasher.update(data);
        self.out
            .write_all(data)
            .map_err(|e| Discard::Io(e.to_string()))
    }

    fn finish(mut self, key: Key, last: &[u8], dir: &Path) -> Incoming {
        let Ok(Body::FileTrailer { size, sha256 }) = Body::parse(last) else {
            return self.discard(key, Discard::NoTrailer);
        };
        if size != self.size || self.received != self.size {
            let expected = self.size;
            let actual = self.received;
            return self.discard(key, Discard::SizeMismatch { expected, actual });
        }
        let actual: [u8; 32] = self.hasher.clone().finalize().into();
        if actual != sha256 {
            return self.discard(
                key,
                Discard::ChecksumMismatch {
                    expected: sha256,
                    actual,
                },
            );
        }
        if let Err(e) = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
        {
            return self.discard(key, Discard::Io(e.to_string()));
        }
        match names::place(&self.tmp, dir, &self.file_name) {
            Ok(path) => Incoming::Saved {
                key,
                sender: self.sender,
                path,
                size,
                sha256,
            },
            Err(e) => self.discard(key, Discard::Io(e.to_string())),
        }
    }

    fn discard(self, key: Key, why: Discard) -> Incoming {
        drop(self.out);
        let _ = std::fs::remove_file(&self.tmp);
        Incoming::Discarded {
            key,
            sender: self.sender,
            file_name: body::printable(&self.file_name),
            why,
        }
    }
}

#[cfg(test)]
mod tests;
