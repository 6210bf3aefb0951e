//! The incremental frame decoder.

use crate::{DecodeError, Frame, FrameType, Header, HEADER_LEN};

/// Turns a byte stream, fed in chunks of any size, into frames.
///
/// A frame that lies whole in the chunk is parsed in place: no copy, no
/// allocation. Only a frame cut by a chunk boundary is carried over: its header
/// in a fixed 8-byte array, its payload in a buffer sized to that frame (never
/// more than the maximum payload), which [`Decoder::release_idle_buffer`] frees.
///
/// The first error is fatal and sticky: the decoder reports it again on every
/// later call, since the stream cannot be resynchronised.
///
/// ```
/// # use proto::{Decoder, Frame};
/// let mut decoder = Decoder::new(65_536);
/// let mut input: &[u8] = &[0, 0, 0, 2, 0x03, 0, 0, 0, b'h', b'i'];
/// assert_eq!(decoder.decode(&mut input), Ok(Some(Frame::Ping(b"hi"))));
/// assert!(input.is_empty());
/// ```
#[derive(Debug)]
pub struct Decoder {
    max_payload: u32,
    /// Bytes of a header cut by a chunk boundary.
    head: [u8; HEADER_LEN],
    head_len: u8,
    /// A checked header whose payload has not fully arrived.
    pending: Option<(Header, FrameType)>,
    /// The payload bytes of `pending` received so far.
    carry: Vec<u8>,
    /// `carry` holds a frame already handed out; clear it on the next call.
    carry_spent: bool,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder that refuses payloads over `max_payload` bytes.
    pub const fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            head: [0; HEADER_LEN],
            head_len: 0,
            pending: None,
            carry: Vec::new(),
            carry_spent: false,
            failed: None,
        }
    }

    /// The maximum payload in force.
    pub const fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Changes the maximum payload (a client learns the server's from WELCOME).
    /// A frame already accepted is not re-checked.
    pub fn set_max_payload(&mut self, max_payload: u32) {
        self.max_payload = max_payload;
    }

    /// Whether part of a frame is held, waiting for the rest.
    pub fn is_mid_frame(&self) -> bool {
        self.head_len != 0 || self.pending.is_some()
    }

    /// Bytes of heap held for carry-over (0 for an idle connection once
    /// [`Decoder::release_idle_buffer`] has run).
    pub fn buffered_capacity(&self) -> usize {
        self.carry.capacity()
    }

    /// The error that stopped this decoder, if any.
    pub fn error(&self) -> Option<DecodeError> {
        self.failed
    }

    /// Frees the carry-over buffer when no frame is in progress, so that an idle
    /// connection holds no receive memory. Returns whether memory was freed.
    pub fn release_idle_buffer(&mut self) -> bool {
        if self.pending.is_some() || self.carry.capacity() == 0 {
            return false;
        }
        self.carry = Vec::new();
        self.carry_spent = false;
        true
    }

    /// Decodes the next frame from `input`, advancing it past what was used.
    ///
    /// Returns `Ok(Some(frame))` for each whole frame; `Ok(None)` once `input` is
    /// used up (a partial frame at its end is kept for the next call); `Err` on
    /// the first protocol error. An over-size or unknown frame is reported as soon
    /// as its header is complete, before any of its payload is awaited.
    ///
    /// The frame borrows from `input` or from the decoder, so it must be dropped
    /// before the next call; call in a loop until `Ok(None)`.
    pub fn decode<'s, 'c: 's>(
        &'s mut self,
        input: &mut &'c [u8],
    ) -> Result<Option<Frame<'s>>, DecodeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.carry_spent {
            self.carry.clear();
            self.carry_spent = false;
        }
        let (header, ty) = match self.pending {
            Some(pending) => pending,
            None => {
                let header = match self.take_header(input) {
                    Some(h) => h,
                    None => return Ok(None),
                };
                match header.check(self.max_payload) {
                    Ok(ty) => (header, ty),
                    Err(e) => return Err(self.fail(e)),
                }
            }
        };
        let len = header.len as usize;
        if self.carry.is_empty() && input.len() >= len {
            // The whole payload is in this chunk: parse it in place.
            self.pending = None;
            let (payload, rest) = input.split_at(len);
            *input = rest;
            return match Frame::parse(&header, ty, payload) {
                Ok(frame) => Ok(Some(frame)),
                Err(m) => Err(self.fail(m.into())),
            };
        }
        // The payload is cut by the chunk boundary: carry it over.
        if self.carry.is_empty() {
            self.carry.reserve_exact(len);
        }
        let take = (len - self.carry.len()).min(input.len());
        let (part, rest) = input.split_at(take);
        self.carry.extend_from_slice(part);
        *input = rest;
        if self.carry.len() < len {
            self.pending = Some((header, ty));
            return Ok(None);
        }
        self.pending = None;
        self.carry_spent = true;
        match Frame::parse(&header, ty, &self.carry) {
            Ok(frame) => Ok(Some(frame)),
            Err(m) => {
                let e = m.into();
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    /// Takes a header from `input`, whole or by completing a partial one.
    fn take_header(&mut self, input: &mut &[u8]) -> Option<Header> {
        if self.head_len == 0 {
            if let Some((head, rest)) = input.split_first_chunk::<HEADER_LEN>() {
                *input = rest;
                return Some(Header::parse(head));
            }
        }
        let have = usize::from(self.head_len);
        let take = (HEADER_LEN - have).min(input.len());
        self.head[have..have + take].copy_from_slice(&input[..take]);
        *input = &input[take..];
        self.head_len += take as u8;
        if usize::from(self.head_len) < HEADER_LEN {
            return None;
        }
        self.head_len = 0;
        Some(Header::parse(&self.head))
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(e);
        self.pending = None;
        self.carry = Vec::new();
        e
    }
}
