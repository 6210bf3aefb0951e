//! What a ring has in flight on each slot, kept so that dropping the ring
//! can cancel each request by its own user data (see `Ring::cancel_in_flight`
//! for why never by file or with `IORING_ASYNC_CANCEL_ANY`).

use crate::contract::GEN_MASK;

/// The bit of a slot's word that says a receive is armed (generations use
/// the low 24 bits).
const RECV_ARMED: u32 = 1 << 31;

/// By slot, one word: the generation of its connection's last receive or
/// send (both of one connection share it) and [`RECV_ARMED`]; 4 bytes a
/// slot, preallocated with the fixed-file table.
pub(super) struct InFlight {
    words: Vec<u32>,
    recvs: u32,
    sends: u32,
}

impl InFlight {
    pub(super) fn new(slots: u32) -> Self {
        Self {
            words: vec![0; slots as usize],
            recvs: 0,
            sends: 0,
        }
    }

    /// A multishot receive was armed on `slot` for connection `gen`.
    pub(super) fn recv_armed(&mut self, slot: u32, gen: u32) {
        let word = &mut self.words[slot as usize];
        assert!(
            *word & RECV_ARMED == 0,
            "second receive armed on slot {slot}"
        );
        *word = (gen & GEN_MASK) | RECV_ARMED;
        self.recvs += 1;
    }

    /// The receive of connection `gen` on `slot` ended (its last
    /// completion came); one of an earlier connection changes nothing.
    pub(super) fn recv_ended(&mut self, slot: u32, gen: u32) {
        let word = &mut self.words[slot as usize];
        if *word == (gen & GEN_MASK) | RECV_ARMED {
            *word &= !RECV_ARMED;
            self.recvs -= 1;
        }
    }

    /// A send of connection `gen` went out on `slot`.
    pub(super) fn send_started(&mut self, slot: u32, gen: u32) {
        let word = &mut self.words[slot as usize];
        *word = (*word & RECV_ARMED) | (gen & GEN_MASK);
        self.sends += 1;
    }

    /// A send completed.
    pub(super) fn send_ended(&mut self) {
        self.sends -= 1;
    }

    /// Receives armed plus sends in flight.
    pub(super) fn count(&self) -> u32 {
        self.recvs + self.sends
    }

    /// The slot and generation of every armed receive, and of the send on
    /// each slot `sending` says has one.
    pub(super) fn each(&self, sending: impl Fn(usize) -> bool) -> Vec<(Op, u32, u32)> {
        let mut out = Vec::with_capacity(self.count() as usize);
        for (slot, &word) in self.words.iter().enumerate() {
            let gen = word & GEN_MASK;
            if word & RECV_ARMED != 0 {
                out.push((Op::Recv, slot as u32, gen));
            }
            if sending(slot) {
                out.push((Op::Send, slot as u32, gen));
            }
        }
        out
    }
}

/// Which request of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Recv,
    Send,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_and_sends_are_named_by_slot_and_generation() {
        let mut f = InFlight::new(4);
        f.recv_armed(1, 7);
        f.recv_armed(3, GEN_MASK);
        f.send_started(3, GEN_MASK);
        f.send_started(2, 9);
        assert_eq!(f.count(), 4);
        let sending = |slot| slot == 2 || slot == 3;
        assert_eq!(
            f.each(sending),
            [
                (Op::Recv, 1, 7),
                (Op::Send, 2, 9),
                (Op::Recv, 3, GEN_MASK),
                (Op::Send, 3, GEN_MASK)
            ]
        );
        // An end of an earlier connection on the slot changes nothing.
        f.recv_ended(1, 6);
        assert_eq!(f.count(), 4);
        f.recv_ended(1, 7);
        f.recv_ended(1, 7);
        f.send_ended();
        assert_eq!(f.count(), 2);
        assert_eq!(
            f.each(|slot| slot == 3),
            [(Op::Recv, 3, GEN_MASK), (Op::Send, 3, GEN_MASK)]
        );
    }

    #[test]
    #[should_panic(expected = "second receive armed on slot 2")]
    fn a_second_receive_on_a_slot_is_a_bug() {
        let mut f = InFlight::new(4);
        f.recv_armed(2, 1);
        f.recv_armed(2, 1);
    }
}
