//! What ringroom nodes send each other through NATS: written, read and
//! decoded here only.
//!
//! Every payload starts with the byte `R` and a kind; integers are
//! big-endian. On a room's subject:
//!
//! ```text
//! MESSAGE  'R' 1  origin u16  incarnation u64  epoch u32  seq u64
//!                 from_conn_id u64  stream u16  flags u8  sent_at_ns u64  body...
//! SYNC     'R' 2  origin u16  incarnation u64  epoch u32  seq u64  closing u8
//! ```
//!
//! `origin` is the publishing node's id, `incarnation` tells its restarts
//! apart, `epoch` numbers that node's spans of interest in the room (a new
//! one each time its first local member joins), and `seq` counts its
//! messages to the room within the epoch from 1. A SYNC repeats the last
//! `seq` sent, so a receiver that missed the tail of a burst learns it
//! (`closing`: the origin has left the room, the epoch is over). `flags`:
//! bit 0 MORE, bit 1 CANCEL, as in the frame header. `sent_at_ns`: the
//! origin's wall clock (Unix time), for the cross-node delivery latency.
//!
//! On a node's subject:
//!
//! ```text
//! FLOW     'R' 3  from u16  from_conn_id u64  paused u8
//! CLAIM    'R' 4  incarnation u64         (a request: is this id taken?)
//! TAKEN    'R' 5  node u16  incarnation u64  (the reply of the node that has it)
//! ```

pub use proto::Fragment;

/// The publishing node's identity and place in a room's sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The node id.
    pub node: u16,
    /// Its incarnation: differs after a restart.
    pub incarnation: u64,
}

/// A position in one origin's messages to one room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The origin's span of interest in the room.
    pub epoch: u32,
    /// 1 for its first message in the epoch.
    pub seq: u64,
}

/// One decoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// A room message.
    Message {
        /// Who sent it.
        origin: Origin,
        /// Its place in the origin's sequence for the room.
        at: Position,
        /// The publishing connection (unique in the cluster).
        from_conn_id: u64,
        /// Stream id and flags.
        fragment: Fragment,
        /// The origin's wall clock when it published, in ns since the Unix epoch.
        sent_at_ns: u64,
        /// The body.
        body: &'a [u8],
    },
    /// The origin's last position in a room.
    Sync {
        /// Who sent it.
        origin: Origin,
        /// The last message it sent to the room.
        at: Position,
        /// The origin left the room: this epoch is over.
        closing: bool,
    },
    /// Pause (or resume) a streaming publisher of the receiving node: some
    /// member on node `from` is more than the stream window behind.
    Flow {
        /// The node whose member is behind.
        from: u16,
        /// The publisher.
        from_conn_id: u64,
        /// Pause (true) or resume (false).
        paused: bool,
    },
    /// Another node asks whether the node id is taken.
    Claim {
        /// The asking node's incarnation.
        incarnation: u64,
    },
    /// The answer to a claim: the id is taken by this node.
    Taken {
        /// The node that has it.
        origin: Origin,
    },
}

const MAGIC: u8 = b'R';
const MESSAGE: u8 = 1;
const SYNC: u8 = 2;
const FLOW: u8 = 3;
const CLAIM: u8 = 4;
const TAKEN: u8 = 5;

/// Bytes a MESSAGE adds before its body.
pub const MESSAGE_HEADER: usize = 2 + 2 + 8 + 4 + 8 + 8 + 2 + 1 + 8;

/// The header of a MESSAGE (its body follows it in the same payload).
pub fn message_header(
    origin: Origin,
    at: Position,
    from_conn_id: u64,
    fragment: Fragment,
    sent_at_ns: u64,
) -> [u8; MESSAGE_HEADER] {
    let mut h = [0u8; MESSAGE_HEADER];
    let mut w = Writer(&mut h[..]);
    w.put(&[MAGIC, MESSAGE]);
    w.origin(origin);
    w.position(at);
    w.put(&from_conn_id.to_be_bytes());
    w.put(&fragment.stream.to_be_bytes());
    w.put(&[u8::from(fragment.more) | (u8::from(fragment.cancel) << 1)]);
    w.put(&sent_at_ns.to_be_bytes());
    h
}

/// A SYNC.
pub fn sync(origin: Origin, at: Position, closing: bool) -> Vec<u8> {
    let mut v = vec![MAGIC, SYNC];
    v.extend_from_slice(&origin.node.to_be_bytes());
    v.extend_from_slice(&origin.incarnation.to_be_bytes());
    v.extend_from_slice(&at.epoch.to_be_bytes());
    v.extend_from_slice(&at.seq.to_be_bytes());
    v.push(u8::from(closing));
    v
}

/// A FLOW.
pub fn flow(from: u16, from_conn_id: u64, paused: bool) -> Vec<u8> {
    let mut v = vec![MAGIC, FLOW];
    v.extend_from_slice(&from.to_be_bytes());
    v.extend_from_slice(&from_conn_id.to_be_bytes());
    v.push(u8::from(paused));
    v
}

/// A CLAIM.
pub fn claim(incarnation: u64) -> Vec<u8> {
    let mut v = vec![MAGIC, CLAIM];
    v.extend_from_slice(&incarnation.to_be_bytes());
    v
}

/// A TAKEN.
pub fn taken(origin: Origin) -> Vec<u8> {
    let mut v = vec![MAGIC, TAKEN];
    v.extend_from_slice(&origin.node.to_be_bytes());
    v.extend_from_slice(&origin.incarnation.to_be_bytes());
    v
}

/// Decodes a payload; None if it is not one of ours (a payload from another
/// program on the same subject is ignored, and counted by the caller).
pub fn decode(payload: &[u8]) -> Option<Envelope<'_>> {
    let mut r = Reader(payload);
    if r.u8()? != MAGIC {
        return None;
    }
    let e = match r.u8()? {
        MESSAGE => {
            let origin = r.origin()?;
            let at = r.position()?;
            let from_conn_id = r.u64()?;
            let stream = r.u16()?;
            let flags = r.u8()?;
            if flags & !3 != 0 {
                return None;
            }
            let sent_at_ns = r.u64()?;
            return Some(Envelope::Message {
                origin,
                at,
                from_conn_id,
                fragment: Fragment {
                    stream,
                    more: flags & 1 != 0,
                    cancel: flags & 2 != 0,
                },
                sent_at_ns,
                body: r.0,
            });
        }
        SYNC => Envelope::Sync {
            origin: r.origin()?,
            at: r.position()?,
            closing: r.flag()?,
        },
        FLOW => Envelope::Flow {
            from: r.u16()?,
            from_conn_id: r.u64()?,
            paused: r.flag()?,
        },
        CLAIM => Envelope::Claim {
            incarnation: r.u64()?,
        },
        TAKEN => Envelope::Taken {
            origin: r.origin()?,
        },
        _ => return None,
    };
    r.0.is_empty().then_some(e)
}

struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        let (head, tail) = std::mem::take(&mut self.0).split_at_mut(bytes.len());
        head.copy_from_slice(bytes);
        self.0 = tail;
    }

    fn origin(&mut self, o: Origin) {
        self.put(&o.node.to_be_bytes());
        self.put(&o.incarnation.to_be_bytes());
    }

    fn position(&mut self, p: Position) {
        self.put(&p.epoch.to_be_bytes());
        self.put(&p.seq.to_be_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }

    fn flag(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }

    fn origin(&mut self) -> Option<Origin> {
        Some(Origin {
            node: self.u16()?,
            incarnation: self.u64()?,
        })
    }

    fn position(&mut self) -> Option<Position> {
        Some(Position {
            epoch: self.take().map(u32::from_be_bytes)?,
            seq: self.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: Origin = Origin {
        node: 3,
        incarnation: 0x0102_0304_0506_0708,
    };

    #[test]
    fn every_kind_round_trips() {
        let at = Position { epoch: 2, seq: 41 };
        let f = Fragment {
            stream: 9,
            more: true,
            cancel: false,
        };
        let mut m = message_header(O, at, 77, f, 123).to_vec();
        m.extend_from_slice(b"body");
        assert_eq!(
            decode(&m),
            Some(Envelope::Message {
                origin: O,
                at,
                from_conn_id: 77,
                fragment: f,
                sent_at_ns: 123,
                body: b"body"
            })
        );
        assert_eq!(
            decode(&sync(O, at, true)),
            Some(Envelope::Sync {
                origin: O,
                at,
                closing: true
            })
        );
        assert_eq!(
            decode(&flow(4, 77, true)),
            Some(Envelope::Flow {
                from: 4,
                from_conn_id: 77,
                paused: true
            })
        );
        assert_eq!(decode(&claim(5)), Some(Envelope::Claim { incarnation: 5 }));
        assert_eq!(decode(&taken(O)), Some(Envelope::Taken { origin: O }));
    }

    #[test]
    fn anything_else_is_not_ours() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"hello"), None);
        assert_eq!(decode(&[MAGIC, 9]), None, "unknown kind");
        let s = sync(O, Position { epoch: 1, seq: 1 }, false);
        assert_eq!(decode(&s[..s.len() - 1]), None, "cut short");
        let mut long = s.clone();
        long.push(0);
        assert_eq!(decode(&long), None, "trailing bytes");
        let mut bad_flag = s;
        *bad_flag.last_mut().unwrap() = 2;
        assert_eq!(decode(&bad_flag), None);
        let mut m = message_header(O, Position { epoch: 1, seq: 1 }, 1, Fragment::default(), 0);
        m[MESSAGE_HEADER - 9] = 4; // a reserved flag bit
        assert_eq!(decode(&m), None);
    }
}
