//! The incremental frame decoder.

use crate::{DecodeError, Frame, FrameType, Header, HEADER_LEN};

/// Turns a byte stream, fed in chunks of any size, into frames.
///
/// A frame that lies whole in the chunk is parsed in place: no copy, no
/// allocation. Only a frame cut by a chunk boundary is carried over, in a
/// [`Partial`] on the heap: its header in a fixed 8-byte array, its payload in
/// a buffer sized to that frame (never more than the maximum payload), both
/// freed by [`Decoder::release_idle_buffer`]. Between frames a decoder is 24
/// bytes and holds no heap: a server keeps one per connection, a million of
/// them at C1M.
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
    /// The sticky error; boxed, as most decoders never fail and this one is
    /// kept per connection.
    failed: Option<Box<DecodeError>>,
    /// The frame cut by a chunk boundary; `None` between frames.
    partial: Option<Box<Partial>>,
}

/// What a decoder carries over between chunks.
#[derive(Debug, Default)]
struct Partial {
    /// Bytes of a header cut by a chunk boundary.
    head: [u8; HEADER_LEN],
    head_len: u8,
    /// A checked header whose payload has not fully arrived.
    pending: Option<(Header, FrameType)>,
    /// The payload bytes of `pending` received so far.
    carry: Vec<u8>,
    /// `carry` holds a frame already handed out; clear it on the next call.
    carry_spent: bool,
}

impl Partial {
    fn is_mid_frame(&self) -> bool {
        self.head_len != 0 || self.pending.is_some()
    }
}

impl Decoder {
    /// Heap bytes of the carry-over's own record, held beside the carried
    /// payload while a frame is cut (see [`Decoder::buffered_capacity`]).
    pub const CARRY_RECORD_BYTES: usize = std::mem::size_of::<Partial>();

    /// A decoder that refuses payloads over `max_payload` bytes.
    pub const fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            failed: None,
            partial: None,
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
        self.partial.as_ref().is_some_and(|p| p.is_mid_frame())
    }

    /// Bytes of heap held for carry-over: the carried payload's buffer and
    /// the carry-over's own record (0 for an idle connection once
    /// [`Decoder::release_idle_buffer`] has run).
    pub fn buffered_capacity(&self) -> usize {
        self.partial
            .as_ref()
            .map_or(0, |p| Self::CARRY_RECORD_BYTES + p.carry.capacity())
    }

    /// The error that stopped this decoder, if any.
    pub fn error(&self) -> Option<DecodeError> {
        self.failed.as_deref().copied()
    }

    /// Frees the carry-over when no frame is in progress, so that an idle
    /// connection holds no receive memory. Returns whether memory was freed.
    pub fn release_idle_buffer(&mut self) -> bool {
        if self.partial.as_ref().is_none_or(|p| p.is_mid_frame()) {
            return false;
        }
        self.partial = None;
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
        if let Some(e) = self.error() {
            return Err(e);
        }
        let (header, ty) = match self.partial.as_mut().and_then(|p| p.pending) {
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
        let carried = self.partial.as_mut().map_or(0, |p| {
            if p.carry_spent {
                p.carry.clear();
                p.carry_spent = false;
            }
            p.carry.len()
        });
        if carried == 0 && input.len() >= len {
            // The whole payload is in this chunk: parse it in place.
            if let Some(p) = self.partial.as_mut() {
                p.pending = None;
            }
            let (payload, rest) = input.split_at(len);
            *input = rest;
            return match Frame::parse(&header, ty, payload) {
                Ok(frame) => Ok(Some(frame)),
                Err(m) => Err(self.fail(m.into())),
            };
        }
        // The payload is cut by the chunk boundary: carry it over.
        let p = self.partial.get_or_insert_with(Default::default);
        if p.carry.is_empty() {
            p.carry.reserve_exact(len);
        }
        let take = (len - p.carry.len()).min(input.len());
        let (part, rest) = input.split_at(take);
        p.carry.extend_from_slice(part);
        *input = rest;
        if p.carry.len() < len {
            p.pending = Some((header, ty));
            return Ok(None);
        }
        p.pending = None;
        p.carry_spent = true;
        match Frame::parse(&header, ty, &p.carry) {
            Ok(frame) => Ok(Some(frame)),
            Err(m) => {
                let e = m.into();
                self.failed = Some(Box::new(e));
                Err(e)
            }
        }
    }

    /// Takes a header from `input`, whole or by completing a partial one.
    fn take_header(&mut self, input: &mut &[u8]) -> Option<Header> {
        let cut = self.partial.as_ref().is_some_and(|p| p.head_len != 0);
        if !cut {
            if let Some((head, rest)) = input.split_first_chunk::<HEADER_LEN>() {
                *input = rest;
                return Some(Header::parse(head));
            }
            if input.is_empty() {
                return None;
            }
        }
        let p = self.partial.get_or_insert_with(Default::default);
        let have = usize::from(p.head_len);
        let take = (HEADER_LEN - have).min(input.len());
        p.head[have..have + take].copy_from_slice(&input[..take]);
        *input = &input[take..];
        p.head_len += take as u8;
        if usize::from(p.head_len) < HEADER_LEN {
            return None;
        }
        p.head_len = 0;
        Some(Header::parse(&p.head))
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.failed = Some(Box::new(e));
        self.partial = None;
        e
    }
}
