//! The contract between an engine and the code that drives it: what the
//! driver asks for ([`Action`]) and what the engine reports ([`Event`],
//! [`RecvEnd`]). Nothing here names io_uring: a connection is a `slot` (a small
//! integer the engine hands out) and a `gen`eration that tells a slot's
//! successive connections apart, so a late completion of a closed connection
//! is recognised and dropped.

/// Bits of a connection generation: engines carry `gen & GEN_MASK` with each
/// operation, so drivers wrap their counters at it.
pub const GEN_MASK: u32 = (1 << 24) - 1;

/// The generation after `gen`, wrapped to [`GEN_MASK`].
pub fn next_gen(gen: u32) -> u32 {
    gen.wrapping_add(1) & GEN_MASK
}

/// What the engine must do next. `gen` tells a slot's successive connections apart.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Arm a multishot receive on the slot.
    ArmRecv {
        /// Fixed-file slot.
        slot: u32,
        /// Connection generation.
        gen: u32,
    },
    /// Send the whole buffer; the completion ([`Event::Sent`]) says how much
    /// went and hands the buffer back.
    Send {
        /// Fixed-file slot.
        slot: u32,
        /// Connection generation.
        gen: u32,
        /// The bytes; handed back in [`Event::Sent`].
        buf: Vec<u8>,
    },
    /// Shut the write side (FIN after the queued bytes), keep reading.
    ShutdownWrite {
        /// Fixed-file slot.
        slot: u32,
    },
    /// Cancel the operations outstanding on the slot (by their user data:
    /// cancelling by file would scan every armed request of the ring).
    Cancel {
        /// Fixed-file slot.
        slot: u32,
        /// Connection generation.
        gen: u32,
        /// Cancel the multishot receive.
        recv: bool,
        /// Cancel the send in flight.
        send: bool,
    },
    /// Close the slot's socket and free the slot. Nothing is outstanding on it.
    Close {
        /// Fixed-file slot.
        slot: u32,
    },
}

/// How a multishot receive ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvEnd {
    /// The peer closed its side.
    Eof,
    /// The buffer ring was empty (ENOBUFS): re-arm once buffers are back.
    NoBuffers,
    /// The kernel stopped the multishot without an error: re-arm.
    Stopped,
    /// We cancelled it.
    Cancelled,
    /// A socket error (errno).
    Error(i32),
}

/// What happened, as the ring's owner sees it.
#[derive(Debug)]
pub enum Event<'a> {
    /// A connection was accepted into `slot`; `more`: the accept is still armed.
    Accepted {
        /// The connection's direct-descriptor slot.
        slot: u32,
        /// Whether the multishot accept goes on.
        more: bool,
    },
    /// The multishot accept failed or stopped.
    AcceptEnded {
        /// The error, e.g. ENFILE when the fixed-file table is full.
        errno: i32,
    },
    /// Bytes arrived on `slot`.
    Received {
        /// Slot.
        slot: u32,
        /// Connection generation.
        gen: u32,
        /// The bytes, lent until the handler returns.
        data: &'a [u8],
    },
    /// The multishot receive ended.
    RecvEnded {
        /// Slot.
        slot: u32,
        /// Connection generation.
        gen: u32,
        /// Why.
        end: RecvEnd,
    },
    /// A send completed: `result` bytes, or -errno.
    Sent {
        /// Slot.
        slot: u32,
        /// Connection generation.
        gen: u32,
        /// The buffer the send carried.
        buf: Vec<u8>,
        /// Bytes sent or -errno.
        result: i32,
    },
    /// The wake-up eventfd fired.
    Woken,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_wrap_at_the_mask() {
        assert_eq!(next_gen(1), 2);
        assert_eq!(next_gen(GEN_MASK), 0);
        assert_eq!(next_gen(u32::MAX), 0);
    }
}
