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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use proto::{DecodeError, Decoder, ErrorCode, Frame, Malformed, Message, Status, Welcome};

pub use engine::{Action, RecvEnd};

use crate::broadcast::Broadcast;
use crate::metrics::{CloseReason, ShardMetrics};
use crate::outq::{BufPool, OutQueue};
use crate::rooms::{Joined, Registry, ShardRooms};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Draining,
    Lingering,
    Closing,
}

#[derive(Debug)]
struct ConnState {
    id: u64,
    gen: u32,
    phase: Phase,
    reason: CloseReason,
    out: OutQueue,
    last_rx_ms: u64,
    heartbeat_ms: u32,
    idle_timeout_ms: u32,
    seen_frame: bool,
    admitted: bool,
    recv_armed: bool,
    needs_arm: bool,
    cancel_sent: bool,
    dirty: bool,
    /// Reading is paused: a PUBLISH found the channels to the other shards
    /// full. It and what followed wait in [`ShardCore::parked`].
    paused: bool,
    /// The receive was cancelled for the pause.
    pause_cancel_sent: bool,
    /// Rooms and open streams; boxed, since most connections of a C100K run
    /// are in no room and should not pay for the two lists.
    rooms: Option<Box<Memberships>>,
}

/// A connection's rooms (ids in its shard's table) and open stream ids.
#[derive(Debug, Default)]
struct Memberships {
    rooms: Vec<u32>,
    /// Open streams: (stream id, room id), cancelled for the room's members if
    /// the connection goes away mid-stream.
    streams: Vec<(u16, u32)>,
}

impl ConnState {
    fn member_of(&self, room: u32) -> bool {
        self.rooms.as_ref().is_some_and(|m| m.rooms.contains(&room))
    }
}

/// A PUBLISH accepted in this batch, to be delivered once the batch's frames
/// are decoded (delivery touches other connections).
#[derive(Debug)]
struct Published {
    message: Arc<Broadcast>,
    room: u32,
    sender: u32,
    echo: bool,
}

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
    outgoing: Vec<(Arc<Broadcast>, u64)>,
    /// Set while the channels to other shards are backed up: a PUBLISH pauses
    /// its connection's reading.
    channels_full: bool,
    /// Input of paused connections, by slot: from the PUBLISH that found the
    /// channels full on, at most [`MAX_PARKED`] bytes each.
    parked: HashMap<u32, Vec<u8>>,
    scratch: Vec<u32>,
}

/// Everything a frame handler may touch besides the connection.
struct Ctx<'a> {
    limits: &'a Limits,
    pool: &'a mut BufPool,
    wheel: &'a mut TimerWheel,
    metrics: &'a ShardMetrics,
    rooms: &'a mut ShardRooms,
    published: &'a mut Vec<Published>,
    channels_full: bool,
    slot: u32,
    now: u64,
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
        self.wheel.next_tick_at_ms()
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
        entry.gen = entry.gen.wrapping_add(1) & GEN_MASK;
        let admitted = !self.shutting_down && self.admission.try_admit();
        let heartbeat_ms = self.limits.heartbeat_ms;
        let id = (u64::from(self.limits.shard) << 48) | self.next_seq;
        self.next_seq += 1;
        entry.conn = Some(Conn {
            decoder: Decoder::new(self.limits.max_payload),
            st: ConnState {
                id,
                gen: entry.gen,
                phase: Phase::Open,
                reason: CloseReason::Peer,
                out: OutQueue::default(),
                last_rx_ms: now,
                heartbeat_ms,
                idle_timeout_ms: self.limits.idle_timeout_for(heartbeat_ms),
                seen_frame: false,
                admitted,
                recv_armed: false,
                needs_arm: true,
                cancel_sent: false,
                dirty: false,
                paused: false,
                pause_cancel_sent: false,
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
        conn.st.last_rx_ms = now;
        if conn.st.paused {
            // Read before the receive's cancel took effect: it waits, in order.
            let parked = self.parked.entry(slot).or_default();
            if parked.len() + data.len() > MAX_PARKED {
                let mut cx = ctx!(self, slot, now);
                let frame = last_frame(
                    false,
                    ErrorCode::OVERLOADED,
                    "too much input while reading was paused for full channels",
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
        let mut input = data;
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    on_frame(st, &mut cx, frame);
                    if st.paused {
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
        mark_dirty(st, &mut self.dirty, slot);
        self.deliver_published(now);
    }

    /// Resumes the connections paused for full channels (now that they are
    /// not): their parked input is handled first, then reading goes on.
    fn resume_paused(&mut self, now: u64) {
        let mut parked: Vec<(u32, Vec<u8>)> = self.parked.drain().collect();
        parked.sort_unstable_by_key(|&(slot, _)| slot);
        for (slot, bytes) in parked {
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let st = &mut conn.st;
            if !st.paused || st.phase != Phase::Open {
                continue;
            }
            st.paused = false;
            st.pause_cancel_sent = false;
            st.needs_arm = true;
            st.last_rx_ms = now;
            // It may pause again (its PUBLISHes can fill the channels once more).
            self.process(slot, &bytes, now);
        }
    }

    /// Delivers this batch's PUBLISHes to local members, and queues them for
    /// the other shards.
    fn deliver_published(&mut self, now: u64) {
        let mut published = std::mem::take(&mut self.published);
        for p in published.drain(..) {
            let skip = (!p.echo).then_some(p.sender);
            self.deliver(&p.message, p.room, skip, now);
            let shards = self.rooms.shards(p.room);
            self.outgoing.push((p.message, shards));
        }
        self.published = published;
    }

    /// A message published on another shard.
    pub fn deliver_remote(&mut self, message: &Broadcast, now: u64) {
        self.metrics.cross_core_received.inc();
        if let Some(room) = self.rooms.id(message.room()) {
            self.deliver(message, room, None, now);
        }
    }

    /// Queues the same encoded bytes for every local member of `room` (but
    /// `skip`); a member whose queue overflows is cut off, nobody else waits.
    fn deliver(&mut self, message: &Broadcast, room: u32, skip: Option<u32>, now: u64) {
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
            match st
                .out
                .push_data(message.bytes(), self.limits.queue_bytes, &mut self.pool)
            {
                Ok(()) => {
                    self.metrics.deliveries.inc();
                    self.metrics.frames_out.inc();
                }
                Err(_) => {
                    let mut cx = ctx!(self, slot, now);
                    slow_consumer(st, &mut cx);
                }
            }
            mark_dirty(st, &mut self.dirty, slot);
        }
        self.scratch = members;
    }

    /// Relays a CANCEL of `stream` to `room`, as if its publisher had sent it.
    fn cancel_stream(&mut self, from_conn_id: u64, stream: u16, room: u32, publisher: u32) {
        let name = self.rooms.name(room).to_owned();
        let message = Broadcast::encode(Message {
            from_conn_id,
            room: proto::Room::new(&name).expect("a room in the table is valid"),
            body: &[],
            fragment: proto::Fragment {
                stream,
                more: false,
                cancel: true,
            },
        });
        // Close to now: only a member cut off by this delivery uses it, for its drain deadline.
        let now = self.wheel.next_tick_at_ms();
        self.deliver(&message, room, Some(publisher), now);
        self.outgoing.push((message, self.rooms.shards(room)));
    }

    /// Moves the messages for other shards into `out`, each with the mask of
    /// the shards that have members of its room.
    pub fn drain_outgoing(&mut self, out: &mut Vec<(Arc<Broadcast>, u64)>) {
        out.append(&mut self.outgoing);
    }

    /// While set (the channels to the other shards are full), a PUBLISH
    /// pauses its connection: that PUBLISH and what follows wait unread, and
    /// the receive is cancelled, so TCP pushes back on the publisher. Cleared,
    /// the paused connections resume where they stopped.
    pub fn set_channels_full(&mut self, full: bool, now: u64) {
        self.channels_full = full;
        if !full && !self.parked.is_empty() {
            self.resume_paused(now);
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
        st.recv_armed = false;
        match end {
            RecvEnd::NoBuffers => {
                self.metrics.enobufs_rearms.inc();
                st.needs_arm = true;
            }
            RecvEnd::Stopped => st.needs_arm = true,
            RecvEnd::Cancelled => {}
            RecvEnd::Eof => close_now(st, CloseReason::Peer),
            RecvEnd::Error(_) => close_now(st, CloseReason::SocketError),
        }
        mark_dirty(st, &mut self.dirty, slot);
    }

    /// A send on `slot` completed with `result` (bytes sent, or -errno); `buf`
    /// is the buffer the [`Action::Send`] carried.
    pub fn sent(&mut self, slot: u32, gen: u32, mut buf: Vec<u8>, result: i32) {
        let Some(conn) = conn_mut(&mut self.slots, slot, gen) else {
            return;
        };
        let st = &mut conn.st;
        match usize::try_from(result) {
            Ok(n) if n < buf.len() && st.phase != Phase::Closing && n > 0 => {
                self.metrics.bytes_out.add(n as u64);
                self.metrics.partial_sends.inc();
                st.out.partial_send(&mut buf, n);
                // The rest goes first, before anything queued since.
                self.resend.push((slot, gen, buf));
                return;
            }
            Ok(n) if n == buf.len() => {
                self.metrics.bytes_out.add(n as u64);
                st.out.finish_send(buf, &mut self.pool);
            }
            _ => {
                // An error, a zero-byte send, or a cut-off while closing.
                st.out.finish_send(buf, &mut self.pool);
                close_now(st, CloseReason::SocketError);
            }
        }
        mark_dirty(st, &mut self.dirty, slot);
    }

    /// Processes the timing wheel up to `now`: heartbeat expiry and drain limits.
    pub fn tick(&mut self, now: u64) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for &slot in &due {
            let Some(conn) = self.slots[slot as usize].conn.as_mut() else {
                continue;
            };
            let mut cx = ctx!(self, slot, now);
            let st = &mut conn.st;
            match st.phase {
                Phase::Open => {
                    let deadline = st.last_rx_ms + u64::from(st.idle_timeout_ms);
                    if st.paused {
                        // Unread by the server's choice: not the client's silence.
                        cx.wheel.schedule(slot, now + u64::from(st.idle_timeout_ms));
                    } else if now >= deadline {
                        cx.metrics.wheel_expiries.inc();
                        let frame = last_frame(
                            false,
                            ErrorCode::HEARTBEAT_TIMEOUT,
                            "nothing received within the idle timeout",
                        );
                        begin_close(st, &mut cx, CloseReason::HeartbeatTimeout, Some(frame));
                    } else {
                        cx.wheel.schedule(slot, deadline); // lazy re-arm
                    }
                }
                Phase::Draining | Phase::Lingering => {
                    cx.metrics.drain_timeouts.inc();
                    close_now(st, st.reason);
                }
                Phase::Closing => {}
            }
            mark_dirty(st, &mut self.dirty, slot);
        }
        due.clear();
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
        let Some(conn) = self.slots[idx].conn.as_mut() else {
            return;
        };
        let st = &mut conn.st;
        st.dirty = false;
        let (gen, reading) = (st.gen, st.phase != Phase::Closing);
        if matches!(st.phase, Phase::Open | Phase::Draining) {
            if let Some(buf) = st.out.start_send() {
                actions.push(Action::Send { slot, gen, buf });
            }
        }
        if st.phase == Phase::Draining && st.out.is_empty() {
            st.phase = Phase::Lingering;
            actions.push(Action::ShutdownWrite { slot });
        }
        if st.paused && st.recv_armed && !st.pause_cancel_sent && st.phase == Phase::Open {
            st.pause_cancel_sent = true;
            actions.push(Action::Cancel {
                slot,
                gen,
                recv: true,
                send: false,
            });
        }
        if reading && st.needs_arm && !st.recv_armed && !st.paused {
            st.needs_arm = false;
            st.recv_armed = true;
            actions.push(Action::ArmRecv { slot, gen });
        }
        if st.phase == Phase::Open && !st.out.is_sending() {
            st.out.release_idle(&mut self.pool);
        }
        if st.phase != Phase::Closing {
            return;
        }
        if st.recv_armed || st.out.is_sending() {
            if !st.cancel_sent {
                st.cancel_sent = true;
                actions.push(Action::Cancel {
                    slot,
                    gen,
                    recv: st.recv_armed,
                    send: st.out.is_sending(),
                });
            }
            return;
        }
        // Nothing outstanding: the slot can be closed and reused.
        let conn = self.slots[idx].conn.take().expect("checked above");
        let Conn { decoder, st } = conn;
        drop(decoder);
        if let Some(mut m) = st.rooms {
            // Streams left open would never end for their receivers: cancel them.
            for &(stream, room) in &m.streams {
                self.cancel_stream(st.id, stream, room, slot);
            }
            self.rooms.leave_all(slot, &mut m.rooms);
            room_gauges(&self.rooms, &self.metrics);
        }
        let mut out = st.out;
        out.discard_queued(&mut self.pool);
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

const GEN_MASK: u32 = (1 << 24) - 1;

/// Most input a paused connection may hold: what arrived between the pause
/// and its receive's cancel. Above Linux's largest default receive buffer
/// (tcp_rmem 6 MiB), so only a raised tcp_rmem can reach it; then the
/// connection gets ERROR OVERLOADED and is closed.
pub const MAX_PARKED: usize = 8 << 20;

fn conn_mut(slots: &mut [Slot], slot: u32, gen: u32) -> Option<&mut Conn> {
    let entry = slots.get_mut(slot as usize)?;
    if entry.gen != gen {
        return None;
    }
    entry.conn.as_mut()
}

fn mark_dirty(st: &mut ConnState, dirty: &mut Vec<u32>, slot: u32) {
    if !st.dirty {
        st.dirty = true;
        dirty.push(slot);
    }
}

/// The last frame a connection gets: GOAWAY or ERROR.
fn last_frame(goaway: bool, code: ErrorCode, reason: &str) -> Frame<'_> {
    let status = Status { code, reason };
    if goaway {
        Frame::GoAway(status)
    } else {
        Frame::Error(status)
    }
}

/// Ends an open connection gracefully: `frame` (if any) goes out after what is
/// queued, then the write side is shut, all within the drain time.
fn begin_close(
    st: &mut ConnState,
    cx: &mut Ctx<'_>,
    reason: CloseReason,
    frame: Option<Frame<'_>>,
) {
    if st.phase != Phase::Open {
        return;
    }
    st.reason = reason;
    if let Some(frame) = frame {
        st.out.push_unbounded(&frame, cx.pool);
        cx.metrics.frames_out.inc();
    }
    st.phase = Phase::Draining;
    cx.wheel.schedule(cx.slot, cx.now + cx.limits.drain_ms);
}

/// Ends a connection now: nothing more is sent.
fn close_now(st: &mut ConnState, reason: CloseReason) {
    if st.phase == Phase::Open {
        st.reason = reason;
    }
    st.phase = Phase::Closing;
}

/// A fatal decode error: ERROR with its code, then close.
fn protocol_error(st: &mut ConnState, cx: &mut Ctx<'_>, e: DecodeError) {
    let reason = match e.code() {
        ErrorCode::FRAME_TOO_LARGE => CloseReason::FrameTooLarge,
        ErrorCode::UNKNOWN_TYPE => CloseReason::UnknownType,
        _ => CloseReason::Malformed,
    };
    let text = e.to_string();
    begin_close(st, cx, reason, Some(last_frame(false, e.code(), &text)));
}

/// Queues a reply frame; an overflowing queue cuts the connection off.
fn reply(st: &mut ConnState, cx: &mut Ctx<'_>, frame: &Frame<'_>) {
    match st.out.push(frame, cx.limits.queue_bytes, cx.pool) {
        Ok(()) => cx.metrics.frames_out.inc(),
        Err(_) => slow_consumer(st, cx),
    }
}

/// The outgoing queue overflowed: drop the backlog, send SLOW_CONSUMER, close.
fn slow_consumer(st: &mut ConnState, cx: &mut Ctx<'_>) {
    st.out.discard_queued(cx.pool);
    let frame = last_frame(
        false,
        ErrorCode::SLOW_CONSUMER,
        "outgoing queue full: the connection is not reading",
    );
    begin_close(st, cx, CloseReason::SlowConsumer, Some(frame));
}

/// A non-fatal ERROR (NOT_MEMBER, LIMIT): the connection stays open.
fn refuse(st: &mut ConnState, cx: &mut Ctx<'_>, code: ErrorCode, reason: &str) {
    reply(st, cx, &Frame::Error(Status { code, reason }));
}

/// One decoded frame from a client.
fn on_frame(st: &mut ConnState, cx: &mut Ctx<'_>, frame: Frame<'_>) {
    let first = !st.seen_frame;
    st.seen_frame = true;
    match frame {
        Frame::Hello(hello) => {
            if !first {
                return protocol_error(st, cx, Malformed::LateHello.into());
            }
            st.heartbeat_ms = cx.limits.heartbeat_for(hello.heartbeat_ms);
            st.idle_timeout_ms = cx.limits.idle_timeout_for(st.heartbeat_ms);
            // The deadline may have moved earlier: lazy re-arm only moves later.
            cx.wheel
                .schedule(cx.slot, st.last_rx_ms + u64::from(st.idle_timeout_ms));
            let welcome = Frame::Welcome(Welcome {
                conn_id: st.id,
                heartbeat_ms: st.heartbeat_ms,
                idle_timeout_ms: st.idle_timeout_ms,
                max_payload: cx.limits.max_payload,
                shard: cx.limits.shard,
            });
            reply(st, cx, &welcome);
        }
        Frame::Ping(payload) => reply(st, cx, &Frame::Pong(payload)),
        Frame::Pong(_) => {} // a sign of life; unsolicited PONGs are ignored
        Frame::GoAway(_) => begin_close(st, cx, CloseReason::Peer, None),
        Frame::Join(room) => {
            let mine = &mut st.rooms.get_or_insert_with(Default::default).rooms;
            match cx
                .rooms
                .join(room.as_str(), cx.slot, mine, cx.limits.max_rooms_per_conn)
            {
                Joined::New | Joined::Already => {
                    room_gauges(cx.rooms, cx.metrics);
                    reply(st, cx, &Frame::Joined(room));
                }
                Joined::ConnLimit => refuse(
                    st,
                    cx,
                    ErrorCode::LIMIT,
                    "this connection is in its maximum number of rooms",
                ),
                Joined::ServerLimit => refuse(
                    st,
                    cx,
                    ErrorCode::LIMIT,
                    "the server has its maximum number of rooms",
                ),
            }
        }
        Frame::Leave(room) => {
            if let Some(m) = st.rooms.as_mut() {
                cx.rooms.leave(room.as_str(), cx.slot, &mut m.rooms);
                room_gauges(cx.rooms, cx.metrics);
            }
            reply(st, cx, &Frame::Left(room));
        }
        Frame::Publish(p) => on_publish(st, cx, p),
        Frame::Welcome(_)
        | Frame::Joined(_)
        | Frame::Left(_)
        | Frame::Message(_)
        | Frame::Error(_) => {
            let ty = frame.frame_type();
            protocol_error(st, cx, Malformed::WrongDirection { ty }.into());
        }
    }
}

fn room_gauges(rooms: &ShardRooms, metrics: &ShardMetrics) {
    metrics.rooms.set(rooms.len() as u64);
    metrics.members.set(rooms.memberships() as u64);
}

/// PUBLISH: membership and stream limits checked, encoded once as MESSAGE; or,
/// while the channels to other shards are full, the connection paused.
fn on_publish(st: &mut ConnState, cx: &mut Ctx<'_>, p: proto::Publish<'_>) {
    let Some(room) = cx.rooms.id(p.room.as_str()).filter(|&id| st.member_of(id)) else {
        return refuse(
            st,
            cx,
            ErrorCode::NOT_MEMBER,
            "publish to a room this connection has not joined",
        );
    };
    if cx.channels_full {
        cx.metrics.publish_paused.inc();
        st.paused = true;
        return;
    }
    let f = p.fragment;
    if f.stream != 0 {
        let streams = &mut st.rooms.as_mut().expect("a member has memberships").streams;
        let open = streams.iter().any(|&(s, _)| s == f.stream);
        if !open && f.more {
            if streams.len() >= cx.limits.max_streams {
                return refuse(
                    st,
                    cx,
                    ErrorCode::LIMIT,
                    "this connection has its maximum number of open streams",
                );
            }
            streams.push((f.stream, room));
        } else if open && !f.more {
            streams.retain(|&(s, _)| s != f.stream);
        }
    }
    cx.metrics.publishes.inc();
    let message = Broadcast::encode(Message {
        from_conn_id: st.id,
        room: p.room,
        body: p.body,
        fragment: f,
    });
    cx.published.push(Published {
        message,
        room,
        sender: cx.slot,
        echo: p.echo,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Hello, DEFAULT_MAX_PAYLOAD};

    /// A core with a simulated clock and a record of what it asked the engine.
    struct Harness {
        core: ShardCore,
        metrics: Arc<ShardMetrics>,
        now: u64,
        /// Bytes each slot was sent, in order.
        wire: Vec<Vec<u8>>,
        gens: Vec<u32>,
    }

    fn limits() -> Limits {
        Limits {
            shard: 3,
            slots: 16,
            max_payload: DEFAULT_MAX_PAYLOAD,
            queue_bytes: 4096,
            heartbeat_ms: 1000,
            min_heartbeat_ms: 100,
            max_heartbeat_ms: 10_000,
            idle_factor: 3,
            drain_ms: 500,
            tick_ms: 100,
            max_rooms_per_conn: 3,
            max_streams: 2,
        }
    }

    impl Harness {
        fn new(max_conns: usize) -> Self {
            Self::with(limits(), max_conns)
        }

        fn with(limits: Limits, max_conns: usize) -> Self {
            let metrics = Arc::new(ShardMetrics::default());
            let core = ShardCore::new(
                limits,
                Arc::new(Admission::new(max_conns)),
                Arc::new(Registry::new(4, 4)),
                metrics.clone(),
                0,
            );
            Self {
                core,
                metrics,
                now: 0,
                wire: vec![Vec::new(); 16],
                gens: vec![0; 16],
            }
        }

        /// Polls actions; completes sends in full unless `hold_sends`.
        fn step(&mut self, hold_sends: bool) -> Vec<Action> {
            let mut actions = Vec::new();
            self.core.poll_actions(&mut actions);
            let mut shown = Vec::new();
            for a in actions {
                match a {
                    Action::Send { slot, gen, buf } if !hold_sends => {
                        self.wire[slot as usize].extend_from_slice(&buf);
                        let n = buf.len() as i32;
                        self.core.sent(slot, gen, buf, n);
                        shown.push(Action::Send {
                            slot,
                            gen,
                            buf: Vec::new(),
                        });
                    }
                    Action::ArmRecv { slot, gen } => {
                        self.gens[slot as usize] = gen;
                        shown.push(a);
                    }
                    other => shown.push(other),
                }
            }
            shown
        }

        /// Steps until no more actions come.
        fn settle(&mut self) -> Vec<Action> {
            let mut all = Vec::new();
            loop {
                let a = self.step(false);
                if a.is_empty() {
                    return all;
                }
                all.extend(a);
            }
        }

        fn accept(&mut self, slot: u32) {
            self.core.accepted(slot, self.now);
            self.settle();
        }

        fn feed(&mut self, slot: u32, bytes: &[u8]) {
            let gen = self.gens[slot as usize];
            self.core.received(slot, gen, bytes, self.now);
        }

        fn send_frames(&mut self, slot: u32, frames: &[Frame<'_>]) {
            let mut bytes = Vec::new();
            for f in frames {
                f.encode_to_vec(&mut bytes).unwrap();
            }
            self.feed(slot, &bytes);
        }

        fn advance(&mut self, to: u64) {
            self.now = to;
            self.core.tick(to);
        }

        /// Moves the clock to `to` and lets every action due play out.
        fn tick_to(&mut self, to: u64) -> Vec<Action> {
            self.advance(to);
            self.settle()
        }

        /// The frames slot has been sent so far, as (type, payload) pairs.
        fn received(&self, slot: u32) -> Vec<(FrameType, Vec<u8>)> {
            let mut d = Decoder::new(u32::MAX);
            let mut input = &self.wire[slot as usize][..];
            let mut out = Vec::new();
            while let Some(f) = d.decode(&mut input).unwrap() {
                let mut bytes = Vec::new();
                f.encode_to_vec(&mut bytes).unwrap();
                out.push((f.frame_type(), bytes[8..].to_vec()));
            }
            out
        }

        fn last_error_code(&self, slot: u32) -> Option<ErrorCode> {
            self.received(slot).iter().rev().find_map(|(ty, p)| {
                matches!(ty, FrameType::Error | FrameType::GoAway)
                    .then(|| ErrorCode(u16::from_be_bytes([p[0], p[1]])))
            })
        }

        fn closed(&self, reason: CloseReason) -> u64 {
            self.metrics.closed[reason as usize].get()
        }
    }

    use proto::FrameType;

    fn hello(heartbeat_ms: u32) -> Frame<'static> {
        Frame::Hello(Hello {
            heartbeat_ms,
            name: "t",
        })
    }

    #[test]
    fn hello_is_welcomed_with_clamped_heartbeat() {
        for (asked, granted) in [(0, 1000), (50, 100), (2500, 2500), (1_000_000, 10_000)] {
            let mut h = Harness::new(10);
            h.accept(1);
            h.send_frames(1, &[hello(asked)]);
            h.settle();
            let got = h.received(1);
            assert_eq!(got.len(), 1);
            let mut input = &h.wire[1][..];
            let mut d = Decoder::new(u32::MAX);
            let Some(Frame::Welcome(w)) = d.decode(&mut input).unwrap() else {
                panic!("expected WELCOME");
            };
            assert_eq!(w.heartbeat_ms, granted);
            assert_eq!(w.idle_timeout_ms, granted * 3);
            assert_eq!(w.max_payload, DEFAULT_MAX_PAYLOAD);
            assert_eq!(w.shard, 3);
            assert_eq!(w.conn_id >> 48, 3, "conn ids carry the shard");
        }
    }

    #[test]
    fn pings_are_answered_and_sticky_replies_share_one_send() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.send_frames(
            0,
            &[Frame::Ping(b"a"), Frame::Ping(b""), Frame::Ping(&[9; 64])],
        );
        let actions = h.settle();
        let sends = actions
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count();
        assert_eq!(sends, 1, "three PONGs, one send");
        let got = h.received(0);
        assert_eq!(
            got,
            [
                (FrameType::Pong, b"a".to_vec()),
                (FrameType::Pong, vec![]),
                (FrameType::Pong, vec![9; 64])
            ]
        );
        assert_eq!(h.metrics.frames_in.get(), 3);
        assert_eq!(h.metrics.frames_out.get(), 3);
    }

    /// Runs a connection through its graceful close after a fatal frame.
    fn fatal_case(bytes: &[u8]) -> (Harness, Vec<Action>) {
        let mut h = Harness::new(10);
        h.accept(2);
        h.feed(2, bytes);
        let mut actions = h.settle();
        assert!(
            actions.contains(&Action::ShutdownWrite { slot: 2 }),
            "{actions:?}"
        );
        assert_eq!(h.core.open(), 1, "lingering until the peer closes");
        h.core.recv_ended(2, h.gens[2], RecvEnd::Eof);
        actions.extend(h.settle());
        assert!(actions.contains(&Action::Close { slot: 2 }));
        assert_eq!(h.core.open(), 0);
        (h, actions)
    }

    #[test]
    fn every_fatal_decode_error_sends_its_code_and_closes() {
        let mut too_large = vec![0x00, 0x01, 0x00, 0x01, 0x20, 0, 0, 0];
        too_large.extend_from_slice(&[0; 4]);
        let cases: [(&[u8], ErrorCode, CloseReason); 4] = [
            (
                &too_large,
                ErrorCode::FRAME_TOO_LARGE,
                CloseReason::FrameTooLarge,
            ),
            (
                &[0, 0, 0, 0, 0x42, 0, 0, 0],
                ErrorCode::UNKNOWN_TYPE,
                CloseReason::UnknownType,
            ),
            (
                &[0, 0, 0, 0, 0x03, 0x80, 0, 0],
                ErrorCode::MALFORMED,
                CloseReason::Malformed,
            ),
            // WELCOME is the server's to send.
            (
                &[
                    0, 0, 0, 22, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 0, 0, 0,
                ],
                ErrorCode::MALFORMED,
                CloseReason::Malformed,
            ),
        ];
        for (bytes, code, reason) in cases {
            let (h, _) = fatal_case(bytes);
            assert_eq!(h.last_error_code(2), Some(code));
            assert_eq!(h.closed(reason), 1, "{reason:?}");
        }
    }

    #[test]
    fn hello_must_come_first_and_once() {
        let mut bytes = Vec::new();
        Frame::Ping(b"x").encode_to_vec(&mut bytes).unwrap();
        hello(0).encode_to_vec(&mut bytes).unwrap();
        let (h, _) = fatal_case(&bytes);
        let got = h.received(2);
        assert_eq!(
            got[0].0,
            FrameType::Pong,
            "frames before the bad one are answered"
        );
        assert_eq!(h.last_error_code(2), Some(ErrorCode::MALFORMED));
    }

    #[test]
    fn input_after_a_fatal_error_is_ignored() {
        let mut h = Harness::new(10);
        h.accept(0);
        let mut bytes = vec![0, 0, 0, 0, 0x42, 0, 0, 0];
        Frame::Ping(b"late").encode_to_vec(&mut bytes).unwrap();
        h.feed(0, &bytes);
        h.settle();
        h.send_frames(0, &[Frame::Ping(b"later")]);
        h.settle();
        let got = h.received(0);
        assert_eq!(got.len(), 1, "only the ERROR: {got:?}");
    }

    #[test]
    fn heartbeat_expiry_within_one_tick_and_activity_keeps_alive() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.accept(1);
        h.send_frames(0, &[hello(100)]); // idle timeout 300 ms
        h.send_frames(1, &[hello(100)]);
        h.settle();
        h.advance(200);
        h.send_frames(1, &[Frame::Pong(b"")]); // any frame is a sign of life
        h.settle();
        h.tick_to(299);
        assert_eq!(h.last_error_code(0), None, "not before the deadline");
        h.tick_to(300);
        assert_eq!(h.last_error_code(0), Some(ErrorCode::HEARTBEAT_TIMEOUT));
        assert_eq!(h.last_error_code(1), None, "slot 1 was active at 200");
        assert_eq!(h.metrics.wheel_expiries.get(), 1);
        h.tick_to(499);
        assert_eq!(h.last_error_code(1), None);
        h.tick_to(500);
        assert_eq!(h.last_error_code(1), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    }

    #[test]
    fn a_connection_that_sends_nothing_expires_on_the_default_timeout() {
        let mut h = Harness::new(10);
        h.accept(4);
        h.tick_to(2999);
        assert_eq!(h.last_error_code(4), None);
        h.tick_to(3000);
        assert_eq!(h.last_error_code(4), Some(ErrorCode::HEARTBEAT_TIMEOUT));
    }

    #[test]
    fn connections_beyond_the_limit_are_overloaded_and_others_carry_on() {
        let mut h = Harness::new(1);
        h.accept(0);
        h.accept(1);
        assert_eq!(h.last_error_code(1), Some(ErrorCode::OVERLOADED));
        h.core.recv_ended(1, h.gens[1], RecvEnd::Eof);
        h.settle();
        assert_eq!(h.closed(CloseReason::Overloaded), 1);
        h.send_frames(0, &[Frame::Ping(b"ok")]);
        h.settle();
        assert_eq!(h.received(0), [(FrameType::Pong, b"ok".to_vec())]);
        // The place freed by a close is admitted again.
        h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
        h.settle();
        h.accept(1);
        h.send_frames(1, &[Frame::Ping(b"again")]);
        h.settle();
        assert_eq!(h.received(1).last().unwrap().0, FrameType::Pong);
    }

    #[test]
    fn a_slow_consumer_is_cut_off_within_the_drain_time() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.accept(1);
        // Slot 0 never completes its sends: the first PONG batch stays in flight.
        let ping = [Frame::Ping(&[0; 64]); 10];
        h.send_frames(0, &ping);
        let held = h.step(true);
        let Some(Action::Send { buf, .. }) =
            held.into_iter().find(|a| matches!(a, Action::Send { .. }))
        else {
            panic!("expected a send");
        };
        let in_flight = buf;
        for _ in 0..10 {
            h.send_frames(0, &ping);
        }
        h.step(true);
        assert_eq!(
            h.closed(CloseReason::SlowConsumer),
            0,
            "not closed yet: draining"
        );
        // Slot 1 is served meanwhile.
        h.send_frames(1, &[Frame::Ping(b"fine")]);
        h.step(true);
        // The drain time runs out with the send still stuck.
        h.advance(600);
        let actions = h.step(true);
        assert!(
            actions.contains(&Action::Cancel {
                slot: 0,
                gen: h.gens[0],
                recv: true,
                send: true
            }),
            "{actions:?}"
        );
        assert_eq!(h.metrics.drain_timeouts.get(), 1);
        h.core.sent(0, h.gens[0], in_flight, -libc::ECANCELED);
        h.core.recv_ended(0, h.gens[0], RecvEnd::Cancelled);
        let actions = h.step(true);
        assert!(actions.contains(&Action::Close { slot: 0 }), "{actions:?}");
        assert_eq!(h.closed(CloseReason::SlowConsumer), 1);
        assert_eq!(h.core.open(), 1);
    }

    #[test]
    fn slow_consumer_error_reaches_a_client_that_resumes_reading() {
        let mut h = Harness::new(10);
        h.accept(0);
        let ping = [Frame::Ping(&[0; 64]); 100]; // 7,200 bytes of PONG > 4,096
        h.send_frames(0, &ping);
        h.settle();
        assert_eq!(h.last_error_code(0), Some(ErrorCode::SLOW_CONSUMER));
    }

    #[test]
    fn partial_sends_resume_before_anything_else() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.send_frames(0, &[Frame::Ping(b"abcdef")]);
        let mut actions = Vec::new();
        h.core.poll_actions(&mut actions);
        let Some(Action::Send { slot, gen, buf }) = actions.pop() else {
            panic!("expected a send");
        };
        assert_eq!(buf.len(), 14);
        h.core.sent(slot, gen, buf, 5);
        h.send_frames(0, &[Frame::Ping(b"x")]);
        let mut actions = Vec::new();
        h.core.poll_actions(&mut actions);
        let Some(Action::Send { buf, .. }) = actions.first() else {
            panic!("expected the rest first: {actions:?}");
        };
        assert_eq!(buf.len(), 9);
        assert_eq!(h.metrics.partial_sends.get(), 1);
    }

    #[test]
    fn enobufs_rearms_the_receive() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.core.recv_ended(0, h.gens[0], RecvEnd::NoBuffers);
        let actions = h.settle();
        assert!(
            matches!(actions[..], [Action::ArmRecv { slot: 0, .. }]),
            "{actions:?}"
        );
        assert_eq!(h.metrics.enobufs_rearms.get(), 1);
        h.core.recv_ended(0, h.gens[0], RecvEnd::Stopped);
        assert!(matches!(h.settle()[..], [Action::ArmRecv { slot: 0, .. }]));
    }

    #[test]
    fn peer_close_and_socket_errors_close_at_once() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.accept(1);
        h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
        h.core
            .recv_ended(1, h.gens[1], RecvEnd::Error(libc::ECONNRESET));
        let actions = h.settle();
        assert!(actions.contains(&Action::Close { slot: 0 }));
        assert!(actions.contains(&Action::Close { slot: 1 }));
        assert_eq!(h.closed(CloseReason::Peer), 1);
        assert_eq!(h.closed(CloseReason::SocketError), 1);
    }

    #[test]
    fn stale_completions_of_a_reused_slot_are_ignored() {
        let mut h = Harness::new(10);
        h.accept(0);
        let old = h.gens[0];
        h.core.recv_ended(0, old, RecvEnd::Eof);
        h.settle();
        h.accept(0);
        assert_ne!(h.gens[0], old);
        h.core.received(0, old, b"\0\0\0\0\x42\0\0\0", 0);
        h.core.recv_ended(0, old, RecvEnd::Eof);
        assert!(h.settle().is_empty());
        assert_eq!(h.core.open(), 1);
    }

    #[test]
    fn client_goaway_is_flushed_then_closed_as_peer() {
        let mut h = Harness::new(10);
        h.accept(0);
        let bye = Frame::GoAway(Status {
            code: ErrorCode::SHUTTING_DOWN,
            reason: "",
        });
        h.send_frames(0, &[Frame::Ping(b"1"), bye]);
        let actions = h.settle();
        assert!(actions.contains(&Action::ShutdownWrite { slot: 0 }));
        assert_eq!(h.received(0), [(FrameType::Pong, b"1".to_vec())]);
        h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
        h.settle();
        assert_eq!(h.closed(CloseReason::Peer), 1);
    }

    fn room(name: &str) -> proto::Room<'_> {
        proto::Room::new(name).unwrap()
    }

    fn publish<'a>(
        name: &'a str,
        body: &'a [u8],
        echo: bool,
        fragment: proto::Fragment,
    ) -> Frame<'a> {
        Frame::Publish(proto::Publish {
            room: room(name),
            body,
            echo,
            fragment,
        })
    }

    /// The bodies of the MESSAGEs `slot` received, in order.
    /// A harness whose slots 0..n are members of room "r".
    fn members_of_r(n: u32) -> Harness {
        let mut h = Harness::new(10);
        for slot in 0..n {
            h.accept(slot);
            h.send_frames(slot, &[Frame::Join(room("r"))]);
        }
        h.settle();
        h
    }

    /// A fragment of `stream`, with MORE as given.
    fn frag(stream: u16, more: bool) -> proto::Fragment {
        proto::Fragment {
            stream,
            more,
            cancel: false,
        }
    }

    fn bodies(h: &Harness, slot: u32) -> Vec<Vec<u8>> {
        h.received(slot)
            .into_iter()
            .filter(|(ty, _)| *ty == FrameType::Message)
            .map(|(_, p)| p[9 + p[8] as usize..].to_vec())
            .collect()
    }

    #[test]
    fn join_and_leave_are_answered_and_idempotent() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.send_frames(
            0,
            &[
                Frame::Join(room("a")),
                Frame::Join(room("a")),
                Frame::Leave(room("a")),
                Frame::Leave(room("a")),
            ],
        );
        h.settle();
        let types: Vec<FrameType> = h.received(0).into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            types,
            [
                FrameType::Joined,
                FrameType::Joined,
                FrameType::Left,
                FrameType::Left
            ]
        );
        assert_eq!(h.core.rooms(), 0);
    }

    #[test]
    fn room_limits_answer_limit_and_keep_the_connection() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.accept(1);
        // 3 rooms per connection in these limits; 4 rooms per server.
        let joins: Vec<Frame<'_>> = ["a", "b", "c", "d"]
            .iter()
            .map(|r| Frame::Join(room(r)))
            .collect();
        h.send_frames(0, &joins);
        h.settle();
        assert_eq!(h.last_error_code(0), Some(ErrorCode::LIMIT));
        h.send_frames(1, &[Frame::Join(room("d")), Frame::Join(room("e"))]);
        h.settle();
        assert_eq!(h.received(1)[0].0, FrameType::Joined);
        assert_eq!(
            h.last_error_code(1),
            Some(ErrorCode::LIMIT),
            "the server's fifth room"
        );
        h.send_frames(0, &[Frame::Ping(b"open")]);
        h.settle();
        assert_eq!(h.received(0).last().unwrap().0, FrameType::Pong);
    }

    #[test]
    fn publish_needs_membership() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.send_frames(
            0,
            &[
                publish("a", b"x", false, Default::default()),
                Frame::Ping(b"ok"),
            ],
        );
        h.settle();
        let got = h.received(0);
        assert_eq!(got[0].0, FrameType::Error);
        assert_eq!(h.last_error_code(0), Some(ErrorCode::NOT_MEMBER));
        assert_eq!(got[1].0, FrameType::Pong);
    }

    #[test]
    fn members_get_each_message_once_in_order_and_echo_is_honoured() {
        let mut h = members_of_r(3);
        h.send_frames(
            0,
            &[
                publish("r", b"1", false, Default::default()),
                publish("r", b"2", true, Default::default()),
            ],
        );
        h.settle();
        assert_eq!(bodies(&h, 1), [b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(bodies(&h, 2), [b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(bodies(&h, 0), [b"2".to_vec()], "only the ECHO one");
        assert_eq!(h.metrics.deliveries.get(), 5);
        // Encoded once, forwarded to the other shards once each.
        let mut out = Vec::new();
        h.core.drain_outgoing(&mut out);
        assert_eq!(out.len(), 2);
        assert!(Arc::ptr_eq(&out[0].0, &out[0].0.clone()));
        // Only this shard (3) has members of "r": the other shards are spared it.
        assert!(out.iter().all(|(_, shards)| *shards == 1 << 3));
    }

    #[test]
    fn messages_from_other_shards_reach_local_members() {
        let mut h = members_of_r(1);
        let remote = Broadcast::encode(Message {
            from_conn_id: 99,
            room: room("r"),
            body: b"from afar",
            fragment: Default::default(),
        });
        h.core.deliver_remote(&remote, 0);
        let other = Broadcast::encode(Message {
            from_conn_id: 99,
            room: room("elsewhere"),
            body: b"not here",
            fragment: Default::default(),
        });
        h.core.deliver_remote(&other, 0);
        h.settle();
        assert_eq!(bodies(&h, 0), [b"from afar".to_vec()]);
    }

    #[test]
    fn leave_and_close_stop_delivery() {
        let mut h = members_of_r(3);
        h.send_frames(1, &[Frame::Leave(room("r"))]);
        h.core.recv_ended(2, h.gens[2], RecvEnd::Eof);
        h.settle();
        h.send_frames(0, &[publish("r", b"after", true, Default::default())]);
        h.settle();
        assert_eq!(bodies(&h, 0), [b"after".to_vec()]);
        assert!(bodies(&h, 1).is_empty());
        h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
        h.settle();
        assert_eq!(
            h.core.rooms(),
            0,
            "the last member left with its connection"
        );
    }

    #[test]
    fn a_slow_member_is_cut_off_and_the_room_goes_on() {
        let mut h = members_of_r(3);
        // Slot 2's sends never complete from here on; its queue is 4,096 bytes.
        let body = [7u8; 1000];
        for _ in 0..8 {
            h.send_frames(0, &[publish("r", &body, false, Default::default())]);
            let mut actions = Vec::new();
            h.core.poll_actions(&mut actions);
            for a in actions {
                if let Action::Send { slot, gen, buf } = a {
                    if slot != 2 {
                        h.wire[slot as usize].extend_from_slice(&buf);
                        let n = buf.len() as i32;
                        h.core.sent(slot, gen, buf, n);
                    }
                }
            }
        }
        assert_eq!(bodies(&h, 1).len(), 8, "the others got everything");
        assert_eq!(h.closed(CloseReason::SlowConsumer), 0, "still draining");
        // Its drain time runs out with its send stuck: cancelled and closed.
        let actions = h.step(true);
        assert!(actions.is_empty(), "{actions:?}");
        h.advance(600);
        let actions = h.step(true);
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Cancel {
                    slot: 2,
                    send: true,
                    ..
                }
            )),
            "{actions:?}"
        );
        h.core.recv_ended(2, h.gens[2], RecvEnd::Cancelled);
        assert_eq!(
            h.core.open(),
            3,
            "closes only once its cancelled send completes"
        );
        // The room goes on for the others.
        h.send_frames(0, &[publish("r", b"more", false, Default::default())]);
        h.settle();
        assert_eq!(bodies(&h, 1).last().unwrap(), b"more");
    }

    #[test]
    fn open_streams_are_bounded() {
        let mut h = members_of_r(2);
        h.send_frames(
            0,
            &[
                publish("r", b"a1", false, frag(1, true)),
                publish("r", b"b1", false, frag(2, true)),
                publish("r", b"c1", false, frag(3, true)), // third open stream: LIMIT
                publish("r", b"a2", false, frag(1, false)), // closes stream 1
                publish("r", b"c1", false, frag(3, true)), // now fits
            ],
        );
        h.settle();
        assert_eq!(h.last_error_code(0), Some(ErrorCode::LIMIT));
        assert_eq!(
            bodies(&h, 1),
            [
                b"a1".to_vec(),
                b"b1".to_vec(),
                b"a2".to_vec(),
                b"c1".to_vec()
            ]
        );
    }

    #[test]
    fn a_publisher_gone_mid_stream_has_its_streams_cancelled() {
        let mut h = members_of_r(2);
        h.send_frames(
            0,
            &[
                publish("r", b"part", false, frag(7, true)),
                publish("r", b"whole", false, frag(8, false)),
            ],
        );
        h.settle();
        h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
        h.settle();
        let got = h.received(1);
        let last = &got.last().unwrap().1;
        assert_eq!(got.len(), 4, "JOINED, part, whole, cancel: {got:?}");
        assert_eq!(&last[9..10], b"r");
        assert!(last.len() == 10, "a CANCEL has no body");
        // The wire header of that last MESSAGE carries CANCEL on stream 7.
        let wire = &h.wire[1];
        let header = &wire[wire.len() - 18..wire.len() - 10];
        assert_eq!(header[5], proto::flags::CANCEL);
        assert_eq!(u16::from_be_bytes([header[6], header[7]]), 7);
        let mut out = Vec::new();
        h.core.drain_outgoing(&mut out);
        assert_eq!(out.len(), 3, "the cancel goes to the other shards too");
    }

    #[test]
    fn full_channels_pause_the_publisher_and_lose_nothing() {
        let mut h = members_of_r(2);
        h.core.set_channels_full(true, h.now);
        // A PUBLISH, then a PING behind it in the same receive.
        h.send_frames(
            0,
            &[
                publish("r", b"1", false, Default::default()),
                Frame::Ping(b"p"),
            ],
        );
        let actions = h.settle();
        assert!(
            actions.contains(&Action::Cancel {
                slot: 0,
                gen: h.gens[0],
                recv: true,
                send: false
            }),
            "reading stops: {actions:?}"
        );
        assert!(bodies(&h, 1).is_empty(), "nothing delivered yet");
        assert!(
            !h.received(0).iter().any(|(ty, _)| *ty == FrameType::Pong),
            "nothing after the PUBLISH is handled"
        );
        assert_eq!(
            h.last_error_code(0),
            None,
            "no error: back-pressure, not refusal"
        );
        assert_eq!(h.metrics.publish_paused.get(), 1);
        // What arrived before the cancel took effect waits behind it.
        h.send_frames(0, &[publish("r", b"2", false, Default::default())]);
        h.core.recv_ended(0, h.gens[0], RecvEnd::Cancelled);
        // Paused for longer than the idle timeout (3 s here): not the client's
        // silence. The member keeps itself alive meanwhile.
        for t in (100..=5000).step_by(100) {
            h.send_frames(1, &[Frame::Ping(b"k")]);
            h.tick_to(t);
        }
        assert_eq!(h.closed(CloseReason::HeartbeatTimeout), 0);
        assert_eq!(h.core.open(), 2);
        assert!(bodies(&h, 1).is_empty());
        h.core.set_channels_full(false, h.now);
        let actions = h.settle();
        assert_eq!(bodies(&h, 1), [b"1".to_vec(), b"2".to_vec()], "in order");
        assert!(h
            .received(0)
            .iter()
            .any(|(ty, p)| *ty == FrameType::Pong && p == b"p"));
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::ArmRecv { slot: 0, .. })),
            "reading resumes: {actions:?}"
        );
        assert_eq!(h.metrics.publishes.get(), 2);
    }

    #[test]
    fn a_paused_connection_holds_at_most_max_parked_bytes() {
        let mut h = members_of_r(1);
        h.core.set_channels_full(true, h.now);
        h.send_frames(0, &[publish("r", b"1", false, Default::default())]);
        h.settle();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..MAX_PARKED / chunk.len() {
            h.feed(0, &chunk);
        }
        assert_eq!(h.core.open(), 1, "up to the bound");
        h.feed(0, &chunk);
        h.settle();
        assert_eq!(h.last_error_code(0), Some(ErrorCode::OVERLOADED));
        assert_eq!(
            h.closed(CloseReason::Overloaded),
            0,
            "draining, not closed yet"
        );
    }

    #[test]
    fn shutdown_sends_goaway_to_all_and_drains() {
        let mut h = Harness::new(10);
        for slot in 0..3 {
            h.accept(slot);
        }
        h.core.shutdown(h.now);
        h.settle();
        for slot in 0..3 {
            assert_eq!(h.last_error_code(slot), Some(ErrorCode::SHUTTING_DOWN));
            assert_eq!(h.received(slot).last().unwrap().0, FrameType::GoAway);
        }
        // A connection accepted during shutdown is told so too.
        h.accept(5);
        assert_eq!(h.received(5).last().unwrap().0, FrameType::GoAway);
        h.core.recv_ended(0, h.gens[0], RecvEnd::Eof);
        h.settle();
        assert!(!h.core.is_drained());
        // The others never close their side: the drain time cuts them.
        let actions = h.tick_to(600);
        let cancels = actions
            .iter()
            .filter(|a| matches!(a, Action::Cancel { .. }))
            .count();
        assert_eq!(cancels, 3);
        for slot in [1, 2, 5] {
            h.core
                .recv_ended(slot, h.gens[slot as usize], RecvEnd::Cancelled);
        }
        h.settle();
        assert!(h.core.is_drained());
        assert_eq!(h.closed(CloseReason::Shutdown), 4);
    }

    #[test]
    fn idle_connections_hold_no_buffers() {
        let mut h = Harness::new(10);
        h.accept(0);
        h.send_frames(0, &[Frame::Ping(b"x")]);
        // Half a frame: the decoder carries it, then frees it once complete.
        let mut bytes = Vec::new();
        Frame::Ping(b"split").encode_to_vec(&mut bytes).unwrap();
        h.feed(0, &bytes[..10]);
        h.feed(0, &bytes[10..]);
        h.settle();
        let conn = h.core.slots[0].conn.as_ref().unwrap();
        assert_eq!(conn.decoder.buffered_capacity(), 0);
        assert_eq!(conn.st.out.capacity(), 0);
        assert!(
            std::mem::size_of::<Conn>() <= 176,
            "Conn is {} bytes",
            std::mem::size_of::<Conn>()
        );
    }
}
