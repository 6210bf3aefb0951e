//! The sans-io heart of a shard: connections, their protocol state, the
//! timing wheel and the send queues, driven by events and a clock, producing
//! [`Action`]s for the engine. No syscalls here, so every path — including
//! errors, limits and timeouts — is tested deterministically.
//!
//! A connection's life:
//!
//! ```text
//! Open ──fatal error / GOAWAY / shutdown / expiry──▶ Draining (last frame queued)
//!   │                                                   │ queue flushed
//!   │                                                   ▼
//!   │                                       Lingering (write side shut, reading
//!   │                                                   │ until EOF, so the peer
//!   │ EOF, socket error                                 │ gets our last frame
//!   ▼                                                   ▼ rather than a reset)
//! Closing ◀──────────── EOF, or drain time limit ───────┘
//!   │ cancel outstanding receive and send; once both have ended:
//!   ▼
//! Close (slot free)
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proto::{Decoder, ErrorCode, Message};

pub use engine::contract::{Action, RecvEnd};

use crate::broadcast::Broadcast;
use crate::channel::Delivery;
use crate::flow::Flow;
use crate::metrics::{CloseReason, ShardMetrics};
use crate::outq::{BufPool, OutQueue};
use crate::rooms::{Registry, ShardRooms, SubState};
use crate::wheel::TimerWheel;

/// What the core needs to know of the configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// This shard's number, sent in WELCOME.
    pub shard: u16,
    /// Fixed-file slots of this shard's ring: connection slots.
    pub slots: u32,
    /// Largest payload accepted.
    pub max_payload: u32,
    /// Bound of each connection's outgoing queue, in bytes.
    pub queue_bytes: usize,
    /// Heartbeat interval for clients that do not ask for one.
    pub heartbeat_ms: u32,
    /// Smallest heartbeat a HELLO may ask for.
    pub min_heartbeat_ms: u32,
    /// Largest heartbeat a HELLO may ask for.
    pub max_heartbeat_ms: u32,
    /// Idle timeout = this many heartbeat intervals.
    pub idle_factor: u32,
    /// Time limit to flush a connection's last frames before it is cut.
    pub drain_ms: u64,
    /// Timing-wheel tick.
    pub tick_ms: u64,
    /// Rooms one connection may be in.
    pub max_rooms_per_conn: usize,
    /// Streams one connection may have open.
    pub max_streams: usize,
    /// A publisher pauses while a member holds more than this many bytes of
    /// its stream data (`--stream-window`).
    pub stream_window: usize,
    /// A connection whose socket takes nothing for this long while data
    /// waits for it is cut as a slow consumer (`--slow-consumer-ms`).
    pub slow_consumer_ms: u64,
    /// A frame begun must be complete within this long; `None`: the
    /// connection's idle timeout (`--frame-timeout-ms`).
    pub frame_timeout_ms: Option<u32>,
    /// Memory this shard may hold for incomplete frames (`--partial-bytes`).
    pub partial_bytes: usize,
    /// Input a paused connection may hold: see [`parked_bound`].
    pub max_parked: usize,
    /// The high bits of this shard's connection ids: the shard (and, in a
    /// cluster, the node), so that an id is unique server-wide (cluster-wide).
    pub conn_id_base: u64,
    /// The cluster link's bit in the channel masks (0: no cluster): every
    /// local PUBLISH goes to it as well.
    pub cluster_bit: u64,
}

impl Limits {
    /// The heartbeat granted for a HELLO's request (0: the default).
    pub fn heartbeat_for(&self, requested_ms: u32) -> u32 {
        if requested_ms == 0 {
            self.heartbeat_ms
        } else {
            requested_ms.clamp(self.min_heartbeat_ms, self.max_heartbeat_ms)
        }
    }

    /// The idle timeout that goes with a heartbeat interval.
    pub fn idle_timeout_for(&self, heartbeat_ms: u32) -> u32 {
        heartbeat_ms.saturating_mul(self.idle_factor)
    }

    /// The frame timeout of a connection with this idle timeout.
    pub fn frame_timeout_for(&self, idle_timeout_ms: u32) -> u64 {
        u64::from(self.frame_timeout_ms.unwrap_or(idle_timeout_ms))
    }
}

/// The server-wide connection count, shared by the shards, against `--max-conns`.
#[derive(Debug)]
pub struct Admission {
    open: AtomicUsize,
    max: usize,
}

impl Admission {
    /// Admits at most `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a place, if one is free.
    pub fn try_admit(&self) -> bool {
        let prev = self.open.fetch_add(1, Ordering::Relaxed);
        if prev >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Gives a place back.
    pub fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections admitted now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

mod conn;

use conn::*;

#[derive(Debug)]
struct Conn {
    decoder: Decoder,
    st: ConnState,
}

#[derive(Debug, Default)]
struct Slot {
    gen: u32,
    /// Inline, not boxed: the slot table grows with the highest slot in use,
    /// and a connection costs no allocation of its own.
    conn: Option<Conn>,
}

/// One shard's connections and timers.
#[derive(Debug)]
pub struct ShardCore {
    limits: Limits,
    slots: Vec<Slot>,
    wheel: TimerWheel,
    pool: BufPool,
    dirty: Vec<u32>,
    due: Vec<u32>,
    /// Remainders of short sends, to go out before anything else on their slot.
    resend: Vec<(u32, u32, Vec<u8>)>,
    admission: Arc<Admission>,
    metrics: Arc<ShardMetrics>,
    next_seq: u64,
    open: usize,
    shutting_down: bool,
    rooms: ShardRooms,
    published: Vec<Published>,
    /// Messages for the other shards, each with the shards that have members
    /// of its room (a bit each), taken by [`ShardCore::drain_outgoing`].
    outgoing: Vec<(Delivery, u64)>,
    /// Set while the channels to other shards are backed up: a PUBLISH pauses
    /// its connection's reading.
    channels_full: bool,
    /// Input of paused connections, by slot: from the PUBLISH that paused
    /// it on, at most `limits.max_parked` bytes each.
    parked: HashMap<u32, Vec<u8>>,
    scratch: Vec<u32>,
    /// Heap held by the decoders for incomplete frames, against
    /// `limits.partial_bytes`.
    partial_bytes: usize,
    /// Shards to wake: a flow of one of their publishers opened here.
    wake: Vec<usize>,
    /// Sends handed out since the engine last submitted.
    fresh_sends: Vec<(u32, u32)>,
    /// Sends submitted, by submission, each with the number of completions
    /// still to be read before every outcome of that submission is known:
    /// see [`ShardCore::sends_submitted`].
    submitted_sends: VecDeque<(usize, Vec<(u32, u32)>)>,
}

/// A [`Ctx`] from the core's fields, leaving `slots` free to borrow.
macro_rules! ctx {
    ($core:ident, $slot:expr, $now:expr) => {
        Ctx {
            limits: &$core.limits,
            pool: &mut $core.pool,
            wheel: &mut $core.wheel,
            metrics: &$core.metrics,
            rooms: &mut $core.rooms,
            published: &mut $core.published,
            wake: &mut $core.wake,
            channels_full: $core.channels_full,
            slot: $slot,
            now: $now,
        }
    };
}

impl ShardCore {
    /// A core for one shard, at time `now_ms`.
    pub fn new(
        limits: Limits,
        admission: Arc<Admission>,
        registry: Arc<Registry>,
        metrics: Arc<ShardMetrics>,
        now_ms: u64,
    ) -> Self {
        let slots = limits.slots as usize;
        let shard = usize::from(limits.shard);
        let wheel = TimerWheel::new(limits.tick_ms, 1024, slots, now_ms);
        let mut slot_table = Vec::new();
        // Reserve address space only: pages are touched as slots come into use.
        slot_table.reserve_exact(slots);
        Self {
            limits,
            slots: slot_table,
            wheel,
            // At most 256 spare send buffers of at most 16 KiB: 4 MiB a shard.
            pool: BufPool::new(256, 16 * 1024),
            dirty: Vec::new(),
            due: Vec::new(),
            resend: Vec::new(),
            admission,
            metrics,
            next_seq: 1,
            open: 0,
            shutting_down: false,
            rooms: ShardRooms::new(registry, shard),
            published: Vec::new(),
            outgoing: Vec::new(),
            channels_full: false,
            parked: HashMap::new(),
            scratch: Vec::new(),
            partial_bytes: 0,
            wake: Vec::new(),
            fresh_sends: Vec::new(),
            submitted_sends: VecDeque::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Connections held (in any phase).
    pub fn open(&self) -> usize {
        self.open
    }

    /// Whether a shutdown was asked for and every connection is gone.
    pub fn is_drained(&self) -> bool {
        self.shutting_down && self.open == 0
    }

    /// When the core next needs [`ShardCore::tick`].
    pub fn next_tick_at_ms(&self) -> u64 {
        if self.due.is_empty() {
            self.wheel.next_tick_at_ms()
        } else {
            0 // expiries left by the last turn's budget
        }
    }

    /// The kernel accepted a connection into `slot`.
    pub fn accepted(&mut self, slot: u32, now: u64) {
        assert!(
            slot < self.limits.slots,
            "accept into slot {slot} beyond the table"
        );
        let idx = slot as usize;
        if idx >= self.slots.len() {
            self.slots.resize_with(idx + 1, Slot::default);
        }
        let entry = &mut self.slots[idx];
        assert!(entry.conn.is_none(), "kernel reused busy slot {slot}");
        entry.gen = engine::contract::next_gen(entry.gen);
        let admitted = !self.shutting_down && self.admission.try_admit();
        let heartbeat_ms = self.limits.heartbeat_ms;
        let id = self.limits.conn_id_base | self.next_seq;
        self.next_seq += 1;
        entry.conn = Some(Conn {
            decoder: Decoder::new(self.limits.max_payload),
            st: ConnState {
                id,
                phase: Phase::Open,
                reason: CloseReason::Peer,
                out: OutQueue::default(),
                last_rx_ms: now,
                frame_started_ms: NO_FRAME,
                heartbeat_ms,
                idle_timeout_ms: self.limits.idle_timeout_for(heartbeat_ms),
                seen_frame: false,
                admitted,
                recv: Recv::Wanted,
                cancel_sent: false,
                dirty: false,
                pause: Pause::No,
                rooms: None,
            },
        });
        self.open += 1;
        self.metrics.accepted.inc();
        self.metrics.conns_open.set(self.open as u64);

        let conn = self.slots[idx].conn.as_mut().expect("just set");
        let mut cx = ctx!(self, slot, now);
        if !admitted {
            let reason = if self.shutting_down {
                "server is shutting down"
            } else {
                "server is at its connection limit"
            };
            let (why, frame) = if self.shutting_down {
                (
                    CloseReason::Shutdown,
                    last_frame(true, ErrorCode::SHUTTING_DOWN, reason),
                )
            } else {
                (
                    CloseReason::Overloaded,
                    last_frame(false, ErrorCode::OVERLOADED, reason),
                )
            };
            begin_close(&mut conn.st, &mut cx, why, Some(frame));
        } else {
            cx.wheel
                .schedule(slot, now + u64::from(conn.st.idle_timeout_ms));
        }
        mark_dirty(&mut conn.st, &mut self.dirty, slot);
    }

    /// Bytes arrived on `slot` (one multishot receive completion).
    pub fn received(&mut self, slot: u32, gen: u32, data: &[u8], now: u64) {
        let Some(conn) = conn_mut(&mut self.slots, slot, gen) else {
            return;
        };
        self.metrics.bytes_in.add(data.len() as u64);
        if conn.st.phase != Phase::Open {
            return; // a closing connection's input is read and dropped
        }
        // Liveness is a complete frame, not bytes: see `process`.
        if conn.st.is_paused() {
            // Read before the receive's cancel took effect: it waits, in order.
            let parked = self.parked.entry(slot).or_default();
            if parked.len() + data.len() > self.limits.max_parked {
                let mut cx = ctx!(self, slot, now);
                let frame = last_frame(
                    false,
                    ErrorCode::OVERLOADED,
                    "too much input while reading was paused",
                );
                self.parked.remove(&slot);
                begin_close(&mut conn.st, &mut cx, CloseReason::Overloaded, Some(frame));
                return mark_dirty(&mut conn.st, &mut self.dirty, slot);
            }
            parked.extend_from_slice(data);
            return;
        }
        self.process(slot, data, now);
    }

    /// Decodes and handles `data` on `slot` (open, not paused) until it ends,
    /// the connection closes, or a PUBLISH pauses it: then that PUBLISH and
    /// the rest are parked.
    fn process(&mut self, slot: u32, data: &[u8], now: u64) {
        let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
            return;
        };
        let mut cx = ctx!(self, slot, now);
        let Conn { decoder, st } = conn;
        let held_before = decoder.buffered_capacity();
        let mut input = data;
        let mut completed = false;
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    st.last_rx_ms = now;
                    completed = true;
                    on_frame(st, &mut cx, frame);
                    if st.is_paused() {
                        // The decoder is at a frame boundary: the PUBLISH is
                        // re-encoded (decoding and encoding round-trip exactly).
                        let mut rest = Vec::with_capacity(frame.encoded_len() + input.len());
                        frame
                            .encode_to_vec(&mut rest)
                            .expect("a decoded frame encodes");
                        rest.extend_from_slice(input);
                        self.parked.insert(slot, rest);
                        break;
                    }
                    cx.metrics.frames_in.inc();
                    if st.phase != Phase::Open {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    protocol_error(st, &mut cx, e);
                    break;
                }
            }
        }
        decoder.release_idle_buffer();
        // A frame begun must complete within the frame timeout.
        if !decoder.is_mid_frame() {
            st.frame_started_ms = NO_FRAME;
        } else if completed || st.frame_started_ms == NO_FRAME {
            st.frame_started_ms = now;
            reschedule(st, &mut cx);
        }
        // Incomplete frames hold memory: bounded per shard.
        let held = decoder.buffered_capacity();
        self.partial_bytes = self.partial_bytes + held - held_before;
        if held > held_before && self.partial_bytes > cx.limits.partial_bytes {
            cx.metrics.partial_refused.inc();
            *decoder = Decoder::new(cx.limits.max_payload);
            self.partial_bytes -= held;
            let frame = last_frame(
                false,
                ErrorCode::OVERLOADED,
                "the server holds too much of other clients' incomplete frames",
            );
            begin_close(st, &mut cx, CloseReason::Overloaded, Some(frame));
        }
        cx.metrics.partial_bytes.set(self.partial_bytes as u64);
        mark_dirty(st, &mut self.dirty, slot);
        self.deliver_published(now);
    }

    /// Resumes the paused connections whose reason has gone (the channels
    /// are not full; their flow opened): their parked input is handled
    /// first, then reading goes on.
    fn resume_paused(&mut self, now: u64) {
        let channels_full = self.channels_full;
        let slots = &self.slots;
        let mut ready: Vec<u32> = self
            .parked
            .keys()
            .copied()
            .filter(|&slot| {
                slots[slot as usize]
                    .conn
                    .as_ref()
                    .is_none_or(|c| match c.st.pause {
                        Pause::No => true,
                        Pause::Channels => !channels_full,
                        Pause::Flow => c.st.flow().is_none_or(|f| f.may_resume()),
                    })
            })
            .collect();
        ready.sort_unstable();
        for slot in ready {
            let bytes = self.parked.remove(&slot).expect("listed above");
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let st = &mut conn.st;
            if !st.is_paused() || st.phase != Phase::Open {
                continue;
            }
            if let Some(flow) = st.flow() {
                flow.set_waiting(false);
            }
            st.pause = Pause::No;
            st.recv = st.recv.resumed();
            st.last_rx_ms = now;
            // It may pause again (its PUBLISHes can fill the channels once more).
            self.process(slot, &bytes, now);
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            if conn.st.recv == Recv::EofParked && !conn.st.is_paused() {
                // Everything it sent before closing is handled: now close.
                close_now(&mut conn.st, CloseReason::Peer);
                mark_dirty(&mut conn.st, &mut self.dirty, slot);
            }
        }
    }

    /// Delivers this batch's PUBLISHes to local members, and queues them for
    /// the other shards.
    fn deliver_published(&mut self, now: u64) {
        let mut published = std::mem::take(&mut self.published);
        for p in published.drain(..) {
            let skip = (!p.echo).then_some(p.sender);
            self.deliver(&p.message, p.room, skip, now);
            let shards = self.destinations(p.room);
            self.outgoing.push((p.message.into(), shards));
        }
        self.published = published;
    }

    /// Where a message to local room `room` goes besides this shard: the
    /// other shards with members, and the cluster link if there is one.
    fn destinations(&self, room: u32) -> u64 {
        self.rooms.shards(room) | self.limits.cluster_bit
    }

    /// What came through this shard's inbox: a message published on another
    /// shard or node, or a notice about a room from the cluster link.
    pub fn deliver_remote(&mut self, delivery: Delivery, now: u64) {
        match delivery {
            Delivery::Message(message) => {
                self.metrics.cross_core_received.inc();
                let room = self.rooms.id(message.room());
                if let Some(room) = room.filter(|&r| self.rooms.accepts(r, message.ticket())) {
                    self.deliver(&message, room, None, now);
                } else if room.is_some() {
                    // Sent before this shard's members of the room came.
                    self.metrics.stale_deliveries.inc();
                }
                // A stream frame leaves the channel here, whether or not it
                // finds members, for its flow's sake.
                if let Some(flow) = message.flow() {
                    self.wake.extend(flow.left_channel(message.bytes().len()));
                }
            }
            Delivery::Gap(room) => self.tell_gap(&room, now),
            Delivery::Subscribed { room, state } => self.settle_joins(&room, state, now),
        }
    }

    /// Messages from other nodes to `room` may have been lost: each local
    /// member gets ERROR GAP, in order with the room's messages.
    fn tell_gap(&mut self, room: &str, now: u64) {
        let Some(id) = self.rooms.id(room) else {
            return;
        };
        let mut frame = Vec::new();
        gap_notice(room)
            .encode_to_vec(&mut frame)
            .expect("a room name is a valid reason");
        let message = Broadcast::raw(frame);
        self.metrics
            .gap_notices
            .add(self.rooms.member_count(id) as u64);
        self.deliver(&message, id, None, now);
    }

    /// The node's subscription to `room` is settled: JOINs that waited for
    /// it are answered (JOINED, and ERROR GAP if it could not be confirmed).
    fn settle_joins(&mut self, room: &str, state: SubState, now: u64) {
        let mut waiting = std::mem::take(&mut self.scratch);
        waiting.clear();
        self.rooms.settle(room, state, &mut waiting);
        for &slot in &waiting {
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let st = &mut conn.st;
            if st.phase != Phase::Open {
                continue;
            }
            let mut cx = ctx!(self, slot, now);
            answer_join(st, &mut cx, room, state);
            mark_dirty(st, &mut self.dirty, slot);
        }
        self.scratch = waiting;
    }

    /// Queues the same encoded message for every local member of `room` (but
    /// `skip`): a whole message in its message lane, where a member whose
    /// socket refuses and whose bound overflows is cut off (nobody else
    /// waits); a stream frame in its stream lane, which flow control bounds.
    fn deliver(&mut self, message: &Arc<Broadcast>, room: u32, skip: Option<u32>, now: u64) {
        let mut members = std::mem::take(&mut self.scratch);
        members.clear();
        members.extend(self.rooms.members(room));
        for &slot in &members {
            if Some(slot) == skip {
                continue;
            }
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let st = &mut conn.st;
            if st.phase != Phase::Open {
                continue;
            }
            let fragment = message.stream() != 0;
            let (queued, reason) = if fragment {
                (st.out.push_fragment(message.clone()), STREAM_BOUND_REASON)
            } else {
                let q =
                    st.out
                        .push_message(message.bytes(), self.limits.queue_bytes, &mut self.pool);
                (q, OVERFLOW_REASON)
            };
            match queued {
                Ok(()) => {
                    self.metrics.deliveries.inc();
                    self.metrics.frames_out.inc();
                }
                Err(_) => {
                    if fragment {
                        self.metrics.stream_bound_cuts.inc();
                    }
                    let mut cx = ctx!(self, slot, now);
                    slow_consumer(st, &mut cx, reason);
                }
            }
            mark_dirty(st, &mut self.dirty, slot);
        }
        self.scratch = members;
    }

    /// Relays a CANCEL of `stream` to `room`, as if its publisher had sent it.
    fn cancel_stream(
        &mut self,
        from_conn_id: u64,
        (stream, room): (u16, u32),
        publisher: u32,
        flow: Option<Arc<Flow>>,
    ) {
        let name = self.rooms.name(room).to_owned();
        let message = Broadcast::encode(
            Message {
                from_conn_id,
                room: proto::Room::new(&name).expect("a room in the table is valid"),
                body: &[],
                fragment: proto::Fragment {
                    stream,
                    more: false,
                    cancel: true,
                },
            },
            flow,
        );
        // Close to now: only a member cut off by this delivery uses it, for its drain deadline.
        let now = self.wheel.next_tick_at_ms();
        self.deliver(&message, room, Some(publisher), now);
        self.outgoing
            .push((message.into(), self.destinations(room)));
    }

    /// Moves the messages for other shards into `out`, each with the mask of
    /// the shards that have members of its room.
    pub fn drain_outgoing(&mut self, out: &mut Vec<(Delivery, u64)>) {
        out.append(&mut self.outgoing);
    }

    /// While set (the channels to the other shards are full), a PUBLISH
    /// pauses its connection: that PUBLISH and what follows wait unread, and
    /// the receive is cancelled, so TCP pushes back on the publisher. Called
    /// once per loop turn: paused connections whose reason has gone (full
    /// channels, or a closed flow) resume where they stopped.
    pub fn set_channels_full(&mut self, full: bool, now: u64) {
        self.channels_full = full;
        if !self.parked.is_empty() {
            self.resume_paused(now);
        }
    }

    /// Whether a connection is paused: the shard then checks again within a
    /// few milliseconds even if no wake-up comes.
    pub fn has_paused(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Moves the shards to wake (a flow of theirs opened here) into `out`.
    pub fn drain_wakes(&mut self, out: &mut Vec<usize>) {
        out.append(&mut self.wake);
    }

    /// The engine submitted every send handed out so far, and `ready`
    /// completions were then waiting to be read. The kernel tries each send
    /// as it is submitted, so once those `ready` completions are read (they
    /// come in order, see [`ShardCore::completions_read`]), a send of this
    /// submission still outstanding found its socket full.
    pub fn sends_submitted(&mut self, ready: usize) {
        if !self.fresh_sends.is_empty() {
            let sends = std::mem::take(&mut self.fresh_sends);
            self.submitted_sends.push_back((ready, sends));
        }
    }

    /// `n` completions were read. Submissions whose completions are all read
    /// are settled: a send of theirs still outstanding was refused by its
    /// socket, and from here its connection is judged (the bound on what is
    /// queued meanwhile, and the time limit on taking nothing). Judging
    /// waits for every completion in the queue, not for the queue to run
    /// dry, so a shard that never catches up still judges its members.
    pub fn completions_read(&mut self, n: usize, now: u64) {
        for (left, _) in self.submitted_sends.iter_mut() {
            *left = left.saturating_sub(n);
        }
        while self
            .submitted_sends
            .front()
            .is_some_and(|(left, _)| *left == 0)
        {
            let (_, sends) = self.submitted_sends.pop_front().expect("checked");
            for (slot, gen) in sends {
                let Some(conn) = conn_mut(&mut self.slots, slot, gen) else {
                    continue;
                };
                let st = &mut conn.st;
                if st.out.is_sending() && !st.out.is_refused() {
                    self.metrics.socket_refusals.inc();
                    st.out.refused_by_socket(now);
                    let mut cx = ctx!(self, slot, now);
                    reschedule(st, &mut cx);
                }
            }
        }
    }

    /// Rooms with members on this shard.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// A multishot receive on `slot` ended.
    pub fn recv_ended(&mut self, slot: u32, gen: u32, end: RecvEnd) {
        let Some(conn) = conn_mut(&mut self.slots, slot, gen) else {
            return;
        };
        let st = &mut conn.st;
        let rearm = st.recv == Recv::Cancelling { rearm: true };
        st.recv = match end {
            RecvEnd::NoBuffers => {
                self.metrics.enobufs_rearms.inc();
                Recv::Wanted
            }
            RecvEnd::Stopped => Recv::Wanted,
            RecvEnd::Cancelled if rearm => Recv::Wanted,
            RecvEnd::Cancelled => Recv::Idle,
            RecvEnd::Eof if st.is_paused() && st.phase == Phase::Open => Recv::EofParked,
            RecvEnd::Eof => {
                close_now(st, CloseReason::Peer);
                Recv::Idle
            }
            RecvEnd::Error(_) => {
                close_now(st, CloseReason::SocketError);
                Recv::Idle
            }
        };
        mark_dirty(st, &mut self.dirty, slot);
    }

    /// A send on `slot` completed with `result` (bytes sent, or -errno); `buf`
    /// is the buffer the [`Action::Send`] carried.
    pub fn sent(&mut self, slot: u32, gen: u32, mut buf: Vec<u8>, result: i32, now: u64) {
        let Some(conn) = conn_mut(&mut self.slots, slot, gen) else {
            return;
        };
        let st = &mut conn.st;
        match usize::try_from(result) {
            Ok(n) if n < buf.len() && st.phase != Phase::Closing && n > 0 => {
                self.metrics.bytes_out.add(n as u64);
                self.metrics.partial_sends.inc();
                // The socket took some and refused the rest, which goes
                // first, before anything queued since.
                st.out.partial_send(&mut buf, n, now);
                let mut cx = ctx!(self, slot, now);
                reschedule(st, &mut cx);
                self.resend.push((slot, gen, buf));
                return;
            }
            Ok(n) if n == buf.len() => {
                self.metrics.bytes_out.add(n as u64);
                st.out.finish_send(buf, &mut self.pool, &mut self.wake);
            }
            _ => {
                // An error, a zero-byte send, or a cut-off while closing.
                st.out.abandon_send(buf, &mut self.pool);
                close_now(st, CloseReason::SocketError);
            }
        }
        mark_dirty(st, &mut self.dirty, slot);
    }

    /// Processes the timing wheel up to `now`: heartbeat expiry and drain limits.
    pub fn tick(&mut self, now: u64) {
        self.wheel.advance(now, &mut self.due);
        // A mass timeout (a client host stopped, a partition) brings a whole
        // shard due at once; acting on all of it in one turn would make every
        // connection hold its ERROR frame and out-queue at the same moment.
        // A slice per turn keeps that to EXPIRY_BUDGET; the rest waits, and
        // next_tick_at_ms says come back at once.
        let take = self.due.len().min(EXPIRY_BUDGET);
        if take < self.due.len() {
            self.metrics.expiry_budget_hits.inc();
        }
        let mut due = std::mem::take(&mut self.due);
        for slot in due.drain(..take) {
            // Filed again since it came due (a later deadline, a close begun,
            // or a new connection in the slot): its entry here is stale.
            if self.wheel.is_scheduled(slot) {
                continue;
            }
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let mut cx = ctx!(self, slot, now);
            let st = &mut conn.st;
            match st.phase {
                Phase::Open => expire_if_due(st, &mut cx),
                Phase::Draining | Phase::Lingering => {
                    cx.metrics.drain_timeouts.inc();
                    close_now(st, st.reason);
                }
                Phase::Closing => {}
            }
            mark_dirty(st, &mut self.dirty, slot);
        }
        self.due = due;
    }

    /// Stops the shard: every connection gets GOAWAY SHUTTING_DOWN, then is
    /// flushed (within the drain time) and closed. New connections get the same.
    pub fn shutdown(&mut self, now: u64) {
        self.shutting_down = true;
        for slot in 0..self.slots.len() as u32 {
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let mut cx = ctx!(self, slot, now);
            let frame = last_frame(true, ErrorCode::SHUTTING_DOWN, "server is shutting down");
            begin_close(&mut conn.st, &mut cx, CloseReason::Shutdown, Some(frame));
            mark_dirty(&mut conn.st, &mut self.dirty, slot);
        }
    }

    /// Moves the actions due now into `actions`.
    pub fn poll_actions(&mut self, actions: &mut Vec<Action>) {
        for (slot, gen, buf) in self.resend.drain(..) {
            actions.push(Action::Send { slot, gen, buf });
        }
        // By index: closing a connection can make others dirty (a stream
        // cancel delivered to them), and they must be advanced in this pass.
        let mut i = 0;
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            self.progress(slot, actions);
            i += 1;
        }
        self.dirty.clear();
    }

    /// Advances one connection as far as it can go now.
    fn progress(&mut self, slot: u32, actions: &mut Vec<Action>) {
        let idx = slot as usize;
        let entry = &mut self.slots[idx];
        let gen = entry.gen;
        let Some(conn) = entry.conn.as_mut() else {
            return;
        };
        let st = &mut conn.st;
        st.dirty = false;
        let reading = st.phase != Phase::Closing;
        if matches!(st.phase, Phase::Open | Phase::Draining) {
            if let Some(buf) = st.out.start_send(&mut self.pool) {
                self.fresh_sends.push((slot, gen));
                actions.push(Action::Send { slot, gen, buf });
            }
        }
        if st.phase == Phase::Draining && st.out.is_empty() {
            st.phase = Phase::Lingering;
            actions.push(Action::ShutdownWrite { slot });
        }
        if st.is_paused() && st.recv == Recv::Armed && st.phase == Phase::Open {
            st.recv = Recv::Cancelling { rearm: false };
            actions.push(Action::Cancel {
                slot,
                gen,
                recv: true,
                send: false,
            });
        }
        if reading && st.recv == Recv::Wanted && !st.is_paused() {
            st.recv = Recv::Armed;
            actions.push(Action::ArmRecv { slot, gen });
        }
        // In every phase: a connection lingering after its last frame (its
        // write side shut, up to --drain-ms) holds no lanes either. A mass
        // idle timeout puts a whole shard's connections there at once.
        if !st.out.is_sending() {
            st.out.release_idle(&mut self.pool);
        }
        if st.phase != Phase::Closing {
            return;
        }
        if st.recv.is_outstanding() || st.out.is_sending() {
            if !st.cancel_sent {
                st.cancel_sent = true;
                actions.push(Action::Cancel {
                    slot,
                    gen,
                    recv: st.recv.is_outstanding(),
                    send: st.out.is_sending(),
                });
                if st.recv == Recv::Armed {
                    st.recv = Recv::Cancelling { rearm: false };
                }
            }
            return;
        }
        // Nothing outstanding: the slot can be closed and reused.
        let conn = self.slots[idx].conn.take().expect("checked above");
        let Conn { decoder, st } = conn;
        self.partial_bytes -= decoder.buffered_capacity();
        self.metrics.partial_bytes.set(self.partial_bytes as u64);
        drop(decoder);
        if let Some(mut m) = st.rooms {
            // Streams left open would never end for their receivers: cancel them.
            for &open in &m.streams {
                self.cancel_stream(st.id, open, slot, m.flow.clone());
            }
            self.rooms.leave_all(slot, &mut m.rooms);
            room_gauges(&self.rooms, &self.metrics);
        }
        let mut out = st.out;
        out.discard_queued(&mut self.pool, &mut self.wake);
        self.parked.remove(&slot);
        self.wheel.cancel(slot);
        if st.admitted {
            self.admission.release();
        }
        self.open -= 1;
        self.metrics.closed_by(st.reason);
        self.metrics.conns_open.set(self.open as u64);
        actions.push(Action::Close { slot });
    }
}

/// The least input a paused connection may hold: above Linux's largest
/// default receive buffer (tcp_rmem 6 MiB).
pub const MAX_PARKED: usize = 8 << 20;

/// Most input a paused connection may hold: what arrived between the pause
/// and its receive's cancel. Until the cancel takes effect the kernel goes on
/// filling the shard's receive buffers, so that is at most the whole buffer
/// ring (`buffers` x `buffer_size`), and never less than [`MAX_PARKED`].
/// Beyond it (only a client that ignores TCP's window could get there) the
/// connection gets ERROR OVERLOADED and is closed.
pub fn parked_bound(buffers: u32, buffer_size: u32) -> usize {
    MAX_PARKED.max(buffers as usize * buffer_size as usize)
}

fn conn_mut(slots: &mut [Slot], slot: u32, gen: u32) -> Option<&mut Conn> {
    let entry = slots.get_mut(slot as usize)?;
    if entry.gen != gen {
        return None;
    }
    entry.conn.as_mut()
}

#[cfg(test)]
mod tests;

/// Deadlines one [`ShardCore::tick`] acts on; more due at once wait for the
/// next turn (which comes at once). 512 ERROR frames and closes a turn is a
/// few milliseconds of work, and what a mass timeout holds at one moment.
pub const EXPIRY_BUDGET: usize = 512;
