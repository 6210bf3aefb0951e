//! The sans-io side of a load-generator worker: its client connections, their
//! open-loop PING schedules and what they measured. Events and a clock in,
//! [`Action`]s for the engine out, as in the server's core.
//!
//! A connection sends HELLO as soon as it is installed (the send waits for the
//! TCP connection); its connect latency is the time from the `connect()` call
//! to WELCOME. It then PINGs on its schedule: at a fixed rate (`ping`
//! scenario) or at the heartbeat interval the server granted (`idle`), with a
//! jittered phase. Each PING carries its planned send time, so its round-trip
//! time is measured from when it should have left, not when it did.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::wire::{Codec, Protocol, Reply};
use engine::contract::{Action, RecvEnd};
use hdrhistogram::Histogram;

use crate::schedule::Schedule;
use crate::verify::SeqCheck;

mod churn;
pub use churn::{ChurnPlan, SILENT_AFTER_PERIODS};

/// The `rooms` scenario: connection `g` (of the whole run) joins room
/// `g % rooms`; connections `0..rooms` also publish to theirs.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomPlan {
    /// Rooms.
    pub rooms: u64,
    /// Connections in the run (for the members per room).
    pub conns: u64,
    /// Time between two publishes of one publisher.
    pub period: Duration,
    /// Body size; at least 16 (planned time and sequence number).
    pub payload: usize,
    /// When publishing starts (after the ramp), since the run's epoch.
    pub start: Duration,
}

impl RoomPlan {
    fn name(room: u64) -> String {
        format!("room{room}")
    }

    /// Members of `room`: the connections whose index is `room` modulo `rooms`.
    pub fn members(&self, room: u64) -> u64 {
        (self.conns.saturating_sub(room)).div_ceil(self.rooms)
    }
}

/// How a connection pings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pinging {
    /// At the heartbeat interval WELCOME grants (the `idle` scenario).
    Heartbeat,
    /// At this many PINGs a second (the `ping` scenario).
    Rate(f64),
}

/// What a worker counted.
pub use crate::results::Counts;

/// The heartbeat a peer connection pings at in the idle scenario when
/// `--heartbeat-ms` is not given: ringroom's default, for a like comparison.
pub const DEFAULT_HEARTBEAT_MS: u32 = 10_000;

/// First reconnect delay; it doubles with each failed attempt, up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

struct Conn {
    gen: u32,
    codec: Codec,
    queued: Vec<u8>,
    sending: bool,
    recv_armed: bool,
    closing: bool,
    cancel_sent: bool,
    started: Duration,
    welcomed: bool,
    schedule: Option<Schedule>,
    /// Failed connects in a row before this one, and which connection of
    /// the run it is: a reconnect is the same connection again.
    retry: Retry,
    /// The index of the target it is connected to (of `--target`).
    target: u8,
    /// Its part in a rooms run: boxed, so that the million connections of
    /// an idle run do not carry it.
    member: Option<Box<Member>>,
    last_rx: Duration,
    idle_timeout: Duration,
    /// The loss was handled (counted, reconnect scheduled).
    lost: bool,
    /// PINGs sent and not yet answered.
    pings_out: u32,
}

/// A connection's part in a rooms run.
struct Member {
    /// Names this connection as a receiver in the order checks (unique per
    /// connection made, reconnects included).
    receiver: u32,
    /// Its room.
    room: u64,
    /// Its publishing schedule, if it publishes, and its next sequence number.
    publishing: Option<Schedule>,
    seq: u64,
    /// When JOINED came (a member from then on).
    joined_at: Option<Duration>,
    /// Room messages received.
    messages: u64,
}

/// A connection to make: its failed attempts so far, which connection of
/// the run it is (`index`; `u64::MAX` outside a run's numbering), and how
/// many times it has moved on to the next target (`hops`): a reconnect after
/// a drop or a refusal tries the next server, so a dead node's clients land
/// on the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Retry {
    /// Failed connects in a row before this one.
    pub attempt: u32,
    /// Connection `index` of the run: its room and role follow from it.
    pub index: u64,
    /// Targets moved on from.
    pub hops: u32,
    /// A reconnect (it joins its room again, late).
    pub again: bool,
    /// A new connection in place of one the churn closed.
    pub churn: bool,
}

impl Retry {
    /// The first connect of connection `index` of the run.
    pub fn first(index: u64) -> Self {
        Self {
            attempt: 0,
            index,
            hops: 0,
            again: false,
            churn: false,
        }
    }
}

/// The top 8 bits of a room message's sequence number carry the index of
/// the publisher's target, so receivers tell same-node from cross-node
/// deliveries.
const SEQ_BITS: u32 = 56;

/// One worker's connections.
pub struct ClientCore {
    conns: Vec<Option<Conn>>,
    /// Connections welcomed and not yet closed.
    up: usize,
    protocol: Protocol,
    seed: u64,
    replies: Vec<Reply>,
    pinging: Pinging,
    heartbeat_ms: u32,
    rng: fastrand::Rng,
    due: Vec<Duration>,
    /// When each scheduled connection next pings: (time, slot, generation).
    /// A heap, so a tick costs what falls due, not the number of connections.
    timers: Timers,
    dirty: Vec<u32>,
    next_gen: u32,
    /// Reconnects waiting for their time.
    reconnects: BinaryHeap<Reverse<(Duration, Retry)>>,
    next_receiver: u32,
    reconnect: bool,
    stopping: bool,
    clock: Duration,
    room_plan: Option<RoomPlan>,
    publish_timers: Timers,
    /// When publishing (and pinging) stopped: the end of the hold.
    publish_stopped_at: Option<Duration>,
    /// The churn, if this run has one, and its progress.
    churn: Option<churn::Churn>,
    /// See [`ClientCore::take_congestion`].
    congested: Option<Duration>,
    /// The decoders' working space, one for all connections.
    scratch: crate::wire::Scratch,
    /// Delivery latency from the planned publish time, microseconds.
    pub delivery: Histogram<u64>,
    /// The same, for publisher and receiver on the same target (node).
    pub delivery_same: Histogram<u64>,
    /// The same, for publisher and receiver on different targets (nodes).
    pub delivery_cross: Histogram<u64>,
    /// Order, loss and duplicate checks of received messages.
    pub order: SeqCheck,
    /// Connect latency (connect() to WELCOME), microseconds.
    pub connect: Histogram<u64>,
    /// The same, for the connections opened in place of churned ones.
    pub churn_connect: Histogram<u64>,
    /// PING round trips from their planned send time, microseconds.
    pub rtt: Histogram<u64>,
    /// The same, for the current interval only (the worker takes and resets it).
    pub interval_rtt: Histogram<u64>,
    /// Counters.
    pub counts: Counts,
}

use crate::results::histogram;

/// A histogram that stays empty (a few bytes of counts): it adds to a full
/// one as nothing.
fn unused_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 2, 1).expect("valid bounds")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().clamp(1, 3_600_000_000) as u64
}

impl ClientCore {
    /// A worker whose connections ping as `pinging` says, asking for
    /// `heartbeat_ms` in HELLO (0: the server's default).
    pub fn new(pinging: Pinging, heartbeat_ms: u32, seed: u64) -> Self {
        Self {
            conns: Vec::new(),
            up: 0,
            protocol: Protocol::Ringroom,
            seed,
            replies: Vec::new(),
            pinging,
            heartbeat_ms,
            rng: fastrand::Rng::with_seed(seed),
            due: Vec::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            next_gen: 1,
            reconnects: BinaryHeap::new(),
            next_receiver: 0,
            reconnect: true,
            stopping: false,
            clock: Duration::ZERO,
            room_plan: None,
            publish_timers: BinaryHeap::new(),
            publish_stopped_at: None,
            churn: None,
            congested: None,
            scratch: Default::default(),
            // Full-range histograms are ~180 KB each: the rooms and churn
            // ones are made only when those run (a C1M run has 51 workers).
            delivery: unused_histogram(),
            delivery_same: unused_histogram(),
            delivery_cross: unused_histogram(),
            order: SeqCheck::default(),
            connect: histogram(),
            churn_connect: unused_histogram(),
            rtt: histogram(),
            interval_rtt: histogram(),
            counts: Counts::default(),
        }
    }

    /// Connections held (connecting or open).
    pub fn open(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// Connections up now: welcomed (for peers, their handshake answered)
    /// and not closed. Kept as a count: the worker reads it every turn.
    pub fn up(&self) -> usize {
        self.up
    }

    /// Speaks `protocol` (ringroom by default).
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.protocol = protocol;
    }

    /// Runs the `rooms` scenario.
    pub fn set_rooms(&mut self, plan: RoomPlan) {
        assert!(plan.rooms > 0 && plan.payload >= 16);
        self.delivery = histogram();
        self.delivery_same = histogram();
        self.delivery_cross = histogram();
        self.room_plan = Some(plan);
    }

    /// No more PUBLISHes or PINGs (the run is ending): what was sent may
    /// still be answered before the connections close.
    pub fn stop_publishing(&mut self) {
        self.publish_stopped_at.get_or_insert(self.clock);
        self.publish_timers.clear();
        self.timers.clear();
    }

    /// Turns reconnecting off (on by default).
    pub fn set_reconnect(&mut self, on: bool) {
        self.reconnect = on;
    }

    /// Takes the next reconnect due by `now`, oldest first; the worker opens
    /// a socket for it and passes it to [`ClientCore::installed_as`]. The
    /// worker takes only what it makes this turn: the rest stays due.
    pub fn next_due_reconnect(&mut self, now: Duration) -> Option<Retry> {
        let &Reverse((at, retry)) = self.reconnects.peek()?;
        if at > now || self.stopping {
            return None;
        }
        self.reconnects.pop();
        if retry.churn {
            self.counts.churn_opened += 1;
        } else {
            self.counts.reconnects += 1;
        }
        Some(retry)
    }

    /// The start of the latest connect that said "too fast" (failed before
    /// WELCOME, or slow) since the last call, for the ramp.
    pub fn take_congestion(&mut self) -> Option<Duration> {
        self.congested.take()
    }

    /// Reconnects waiting (due or not).
    pub fn reconnects_waiting(&self) -> usize {
        self.reconnects.len()
    }

    /// A connect that failed before reaching the ring (`connect()` itself
    /// refused): counts it, and schedules a retry at the next target.
    pub fn connect_failed(&mut self, retry: Retry, errno: i32) {
        *self.counts.failed_by_errno.entry(errno).or_default() += 1;
        if errno != libc::EMFILE {
            // EMFILE: the worker's own table is full, not the network.
            note_congestion(&mut self.congested, self.clock);
        }
        self.schedule_reconnect(Retry {
            attempt: retry.attempt + 1,
            hops: retry.hops + 1,
            again: true,
            ..retry
        });
    }

    /// Jittered exponential backoff: `BASE_BACKOFF * 2^attempt`, capped, times
    /// a random factor in [0.5, 1.5) so clients do not reconnect in step.
    fn schedule_reconnect(&mut self, retry: Retry) {
        if !self.reconnect || self.stopping {
            return;
        }
        let delay = BASE_BACKOFF
            .saturating_mul(1 << retry.attempt.min(16))
            .min(MAX_BACKOFF);
        let delay = delay.mul_f64(0.5 + self.rng.f64());
        self.reconnects.push(Reverse((self.clock + delay, retry)));
    }

    /// A connection is lost: count it once, and reconnect it, to the next
    /// target (a connection that got WELCOME starts over at attempt 0; a
    /// failed connect backs off more).
    fn lose(
        conn: &mut Conn,
        counts: &mut Counts,
        congested: &mut Option<Duration>,
        errno: i32,
    ) -> Option<Retry> {
        if conn.closing || conn.lost {
            // Closed by us (the end of the run), or counted already.
            conn.closing = true;
            return None;
        }
        conn.closing = true;
        conn.lost = true;
        let attempt = if conn.welcomed {
            counts.dropped += 1;
            0
        } else {
            *counts.failed_by_errno.entry(errno).or_default() += 1;
            note_congestion(congested, conn.started);
            conn.retry.attempt + 1
        };
        Some(Retry {
            attempt,
            hops: conn.retry.hops + 1,
            again: true,
            ..conn.retry
        })
    }

    /// A socket whose `connect()` started at `started` now sits in `slot`;
    /// `attempt` is 0 for a first connect.
    pub fn installed(&mut self, slot: u32, started: Duration, attempt: u32) {
        let retry = Retry {
            attempt,
            index: u64::MAX,
            hops: 0,
            again: attempt > 0,
            churn: false,
        };
        self.installed_as(slot, started, retry, 0);
    }

    /// Makes room for connections in slots `0..slots` (the engine's table)
    /// and their timers up front: a table grown by doubling as the ramp fills
    /// it copies itself each time and frees the old copy, 8 MB a worker in
    /// all at 20,000 slots, which the allocator may hold for a while; at C1M,
    /// with 51 workers doubling at about the same time, that was a peak of
    /// some hundreds of MB that the connections themselves never needed.
    pub fn reserve(&mut self, slots: usize) {
        self.conns
            .reserve_exact(slots.saturating_sub(self.conns.len()));
        self.timers.reserve(slots.saturating_sub(self.timers.len()));
    }

    /// Like [`ClientCore::installed`], for connection `retry.index` of the
    /// whole run (its room and whether it publishes follow from it), connected
    /// to target `target`.
    pub fn installed_as(&mut self, slot: u32, started: Duration, retry: Retry, target: u8) {
        let index = retry.index;
        let idx = slot as usize;
        if idx >= self.conns.len() {
            self.conns.resize_with(idx + 1, || None);
        }
        let gen = self.next_gen;
        self.next_gen = engine::contract::next_gen(self.next_gen);
        let mut queued = Vec::new();
        let client_id = format!("lg{}-{}-{gen}", std::process::id(), self.seed);
        let mut codec = Codec::new(self.protocol, &client_id);
        codec.hello(&mut queued, self.heartbeat_ms);
        let mut member = None;
        if let Some(plan) = &self.room_plan {
            if index != u64::MAX {
                let r = index % plan.rooms;
                let publisher = index < plan.rooms;
                if !publisher || self.protocol.publisher_joins() {
                    codec.join(&mut queued, &RoomPlan::name(r));
                }
                let mut publishing = None;
                if publisher && self.publish_stopped_at.is_none() {
                    let phase = Schedule::jittered(plan.period, &mut self.rng).next();
                    // A reconnected publisher goes on from now: what its
                    // earlier connection sent is not due again.
                    let from = if retry.again {
                        started.max(plan.start)
                    } else {
                        plan.start
                    };
                    let schedule = Schedule::new(plan.period, from + phase);
                    self.publish_timers
                        .push(Reverse((schedule.next(), slot, gen)));
                    publishing = Some(schedule);
                }
                member = Some(Box::new(Member {
                    receiver: self.next_receiver,
                    room: r,
                    publishing,
                    seq: 0,
                    joined_at: None,
                    messages: 0,
                }));
            }
        }
        self.conns[idx] = Some(Conn {
            gen,
            codec,
            queued,
            sending: false,
            recv_armed: false,
            closing: false,
            cancel_sent: false,
            started,
            welcomed: false,
            schedule: None,
            retry,
            target,
            member,
            last_rx: started,
            idle_timeout: Duration::MAX,
            lost: false,
            pings_out: 0,
        });
        self.next_receiver = self.next_receiver.wrapping_add(1);
        self.dirty.push(slot);
    }

    /// Bytes arrived on `slot`.
    pub fn received(&mut self, slot: u32, gen: u32, data: &[u8], now: Duration) {
        let Some(conn) = self
            .conns
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.gen == gen && !c.closing)
        else {
            return;
        };
        conn.last_rx = now;
        let mut welcome = None;
        let mut replies = std::mem::take(&mut self.replies);
        let mut close = conn
            .codec
            .receive_with(data, &mut conn.queued, &mut replies, &mut self.scratch)
            .is_err();
        for reply in replies.drain(..) {
            match reply {
                Reply::Welcome {
                    heartbeat_ms,
                    idle_timeout_ms,
                } => {
                    // The peers grant nothing: loadgen's own heartbeat (or
                    // ringroom's default), and 3 of them as the idle timeout.
                    let heartbeat_ms = heartbeat_ms.unwrap_or(match self.heartbeat_ms {
                        0 => DEFAULT_HEARTBEAT_MS,
                        ms => ms,
                    });
                    let idle_ms = idle_timeout_ms.unwrap_or(3 * heartbeat_ms);
                    conn.idle_timeout = Duration::from_millis(u64::from(idle_ms));
                    welcome = Some(heartbeat_ms);
                }
                Reply::Pong { planned } => {
                    self.counts.pongs += 1;
                    conn.pings_out = conn.pings_out.saturating_sub(1);
                    let rtt = micros(now.saturating_sub(planned));
                    self.rtt.saturating_record(rtt);
                    self.interval_rtt.saturating_record(rtt);
                }
                Reply::Joined => {
                    self.counts.joined += 1;
                    if let Some(m) = conn.member.as_mut() {
                        m.joined_at.get_or_insert(now);
                    }
                }
                Reply::Message {
                    room,
                    publisher,
                    planned_ns,
                    seq,
                } => {
                    let latency = micros(now.saturating_sub(Duration::from_nanos(planned_ns)));
                    self.delivery.saturating_record(latency);
                    let origin = seq >> SEQ_BITS;
                    if origin == u64::from(conn.target) {
                        self.delivery_same.saturating_record(latency);
                    } else {
                        self.delivery_cross.saturating_record(latency);
                    }
                    self.counts.delivered += 1;
                    let receiver = match conn.member.as_mut() {
                        Some(m) => {
                            m.messages += 1;
                            if m.room != room {
                                self.counts.foreign += 1;
                            }
                            m.receiver
                        }
                        None => {
                            // A message to a connection in no room: as foreign.
                            self.counts.foreign += 1;
                            u32::MAX
                        }
                    };
                    // One stream per (publisher, room) as seen by this receiver.
                    self.order.record_from(
                        (publisher, receiver_key(room, receiver)),
                        seq & ((1 << SEQ_BITS) - 1),
                        conn.retry.again,
                    );
                }
                Reply::Gap { room } => {
                    self.counts.gaps += 1;
                    let receiver = conn.member.as_ref().map_or(u32::MAX, |m| m.receiver);
                    self.order.gap(receiver_key(room, receiver));
                }
                Reply::Error { code, fatal } => {
                    *self.counts.errors_by_code.entry(code).or_default() += 1;
                    close |= fatal;
                }
            }
        }
        self.replies = replies;
        conn.codec.release_idle_buffer();
        if let Some(heartbeat_ms) = welcome {
            if !conn.welcomed {
                conn.welcomed = true;
                self.up += 1;
                self.counts.connected += 1;
                let took = now.saturating_sub(conn.started);
                if took > crate::ramp::SLOW_CONNECT {
                    self.counts.slow_connects += 1;
                    note_congestion(&mut self.congested, conn.started);
                }
                let connect = micros(took);
                self.connect.saturating_record(connect);
                if conn.retry.churn {
                    self.churn_connect.saturating_record(connect);
                }
                let period = match self.pinging {
                    Pinging::Heartbeat => Duration::from_millis(u64::from(heartbeat_ms.max(1))),
                    Pinging::Rate(hz) => Duration::from_secs_f64(1.0 / hz),
                };
                let mut schedule = Schedule::jittered(period, &mut self.rng);
                schedule = Schedule::new(period, now + schedule.next());
                self.timers.push(Reverse((schedule.next(), slot, gen)));
                conn.schedule = Some(schedule);
            }
        }
        let retry = if close {
            Self::lose(conn, &mut self.counts, &mut self.congested, 0)
        } else {
            None
        };
        if let Some(retry) = retry {
            self.clock = self.clock.max(now);
            self.schedule_reconnect(retry);
        }
        self.dirty.push(slot);
    }

    /// The multishot receive of `slot` ended.
    pub fn recv_ended(&mut self, slot: u32, gen: u32, end: RecvEnd) {
        let counts = &mut self.counts;
        let Some(conn) = conn_of(&mut self.conns, slot, gen) else {
            return;
        };
        conn.recv_armed = false;
        let retry = match end {
            RecvEnd::Cancelled | RecvEnd::NoBuffers | RecvEnd::Stopped => None,
            RecvEnd::Eof => Self::lose(conn, counts, &mut self.congested, 0),
            RecvEnd::Error(errno) => Self::lose(conn, counts, &mut self.congested, errno),
        };
        if let Some(retry) = retry {
            self.schedule_reconnect(retry);
        }
        self.dirty.push(slot);
    }

    /// A send on `slot` completed.
    pub fn sent(&mut self, slot: u32, gen: u32, buf: Vec<u8>, result: i32) {
        let counts = &mut self.counts;
        let Some(conn) = conn_of(&mut self.conns, slot, gen) else {
            return;
        };
        conn.sending = false;
        match usize::try_from(result) {
            Ok(n) if n == buf.len() => {}
            Ok(n) if n > 0 => {
                // A short send: the rest goes first.
                let mut rest = buf[n..].to_vec();
                rest.extend_from_slice(&conn.queued);
                conn.queued = rest;
            }
            _ => {
                if let Some(retry) = Self::lose(conn, counts, &mut self.congested, -result) {
                    self.dirty.push(slot);
                    return self.schedule_reconnect(retry);
                }
            }
        }
        self.dirty.push(slot);
    }

    /// Sends the PINGs due by `now`.
    pub fn tick(&mut self, now: Duration) {
        self.clock = now;
        self.publish_due(now);
        self.churn_due(now);
        while let Some((slot, gen)) = pop_due(&mut self.timers, &self.conns, now) {
            let conn = self.conns[slot as usize]
                .as_mut()
                .expect("pop_due checked it");
            if now.saturating_sub(conn.last_rx) > conn.idle_timeout {
                // Nothing from the server for its own idle timeout: dead.
                self.counts.dead_server += 1;
                if let Some(retry) = Self::lose(conn, &mut self.counts, &mut self.congested, 0) {
                    self.schedule_reconnect(retry);
                }
                self.dirty.push(slot);
                continue;
            }
            let Some(schedule) = conn.schedule.as_mut() else {
                continue;
            };
            self.due.clear();
            schedule.due(now, &mut self.due);
            let mut backlogged = false;
            for planned in &self.due {
                if !conn.codec.ping(&mut conn.queued, *planned) {
                    backlogged = true;
                    break;
                }
                self.counts.pings += 1;
                conn.pings_out += 1;
            }
            if backlogged {
                // MAX_AWAITING requests unanswered: the server is not keeping up.
                self.counts.dead_server += 1;
                if let Some(retry) = Self::lose(conn, &mut self.counts, &mut self.congested, 0) {
                    self.schedule_reconnect(retry);
                }
                self.dirty.push(slot);
                continue;
            }
            self.timers.push(Reverse((schedule.next(), slot, gen)));
            self.dirty.push(slot);
        }
    }

    /// Sends the PUBLISHes due by `now`, each carrying its planned time and
    /// sequence number.
    fn publish_due(&mut self, now: Duration) {
        let Some(plan) = self.room_plan.clone() else {
            return;
        };
        let mut body = vec![0u8; plan.payload];
        while let Some((slot, gen)) = pop_due(&mut self.publish_timers, &self.conns, now) {
            let conn = self.conns[slot as usize]
                .as_mut()
                .expect("pop_due checked it");
            let Some(m) = conn.member.as_deref_mut() else {
                continue;
            };
            let (room, Some(schedule)) = (m.room, m.publishing.as_mut()) else {
                continue;
            };
            let name = RoomPlan::name(room);
            self.due.clear();
            schedule.due(now, &mut self.due);
            for planned in &self.due {
                body[..8].copy_from_slice(&(planned.as_nanos() as u64).to_be_bytes());
                let word = (u64::from(conn.target) << SEQ_BITS) | m.seq;
                body[8..16].copy_from_slice(&word.to_be_bytes());
                if !conn.codec.publish(&mut conn.queued, &name, &body) {
                    // Replies far behind: the ping timer takes it for dead.
                    break;
                }
                m.seq += 1;
                self.counts.published += 1;
                self.counts.expected += plan.members(room).saturating_sub(1);
            }
            self.publish_timers
                .push(Reverse((schedule.next(), slot, gen)));
            self.dirty.push(slot);
        }
    }

    /// Closes every connection (the end of a run).
    pub fn close_all(&mut self) {
        self.stopping = true;
        self.stop_publishing();
        self.reconnects.clear();
        for (slot, conn) in self.conns.iter_mut().enumerate() {
            if let Some(conn) = conn.as_mut() {
                if !conn.closing && !conn.welcomed {
                    // A connect still under way: neither up nor failed.
                    self.counts.abandoned += 1;
                }
                if !conn.closing {
                    Self::check_member(
                        conn,
                        &self.room_plan,
                        self.publish_stopped_at,
                        self.clock,
                        &mut self.counts,
                    );
                }
                conn.closing = true;
                self.dirty.push(slot as u32);
            }
        }
    }

    /// The engine actions due now.
    pub fn poll_actions(&mut self, actions: &mut Vec<Action>) {
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for slot in self.dirty.drain(..) {
            let idx = slot as usize;
            let Some(conn) = self.conns.get_mut(idx).and_then(Option::as_mut) else {
                continue;
            };
            let gen = conn.gen;
            if conn.closing {
                // The slot is closed only once its receive and send have ended:
                // the engine may reuse it at once.
                if conn.recv_armed || conn.sending {
                    if !conn.cancel_sent {
                        conn.cancel_sent = true;
                        actions.push(Action::Cancel {
                            slot,
                            gen,
                            recv: conn.recv_armed,
                            send: conn.sending,
                        });
                    }
                    continue;
                }
                if conn.welcomed {
                    self.up -= 1;
                }
                if let Some(m) = &conn.member {
                    // Its streams end with it (a reconnect is a new receiver).
                    self.order.forget(receiver_key(m.room, m.receiver));
                }
                self.conns[idx] = None;
                actions.push(Action::Close { slot });
                continue;
            }
            if !conn.recv_armed {
                conn.recv_armed = true;
                actions.push(Action::ArmRecv { slot, gen });
            }
            if !conn.sending && !conn.queued.is_empty() {
                conn.sending = true;
                actions.push(Action::Send {
                    slot,
                    gen,
                    buf: std::mem::take(&mut conn.queued),
                });
            }
        }
    }
}

/// A heap of (due time, slot, generation) timers.
type Timers = BinaryHeap<Reverse<(Duration, u32, u32)>>;

/// Pops the timers due by `now` until one belongs to a connection still
/// there (the same generation, not closing): its slot and generation. The
/// timers of connections gone since lapse.
fn pop_due(timers: &mut Timers, conns: &[Option<Conn>], now: Duration) -> Option<(u32, u32)> {
    while let Some(&Reverse((at, slot, gen))) = timers.peek() {
        if at > now {
            return None;
        }
        timers.pop();
        let live = conns
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.gen == gen && !c.closing);
        if live {
            return Some((slot, gen));
        }
    }
    None
}

/// Keeps the latest start of a connect that said "too fast".
fn note_congestion(latest: &mut Option<Duration>, started: Duration) {
    *latest = Some(latest.map_or(started, |t| t.max(started)));
}

/// The receiver's half of an order-check key: its room and connection.
fn receiver_key(room: u64, receiver: u32) -> u64 {
    room.wrapping_mul(1 << 32) | u64::from(receiver)
}

/// The connection in `slot` if it is generation `gen` (a free function, so that
/// the caller can borrow the counters beside it).
fn conn_of(conns: &mut [Option<Conn>], slot: u32, gen: u32) -> Option<&mut Conn> {
    conns
        .get_mut(slot as usize)?
        .as_mut()
        .filter(|c| c.gen == gen)
}

#[cfg(test)]
mod tests;
