//! One node's side of the cluster, without I/O: what to write to NATS for
//! the node's rooms and messages, and what to hand the shards for what NATS
//! sends. The link thread ([`super::link`]) feeds it bytes, time and the
//! shards' messages; everything here is tested with simulated time.
//!
//! * **Interest.** A room with members on this node is subscribed (one `SUB`
//!   per room); the last member gone, it is unsubscribed. A `PING` after a
//!   batch of `SUB`s is answered by a `PONG` once the NATS server has taken
//!   them: then the JOINs that waited are answered.
//! * **Order and numbering.** Every local message goes out once, in the
//!   order the shards handed it over, numbered per room (epoch, seq): see
//!   [`super::envelope`]. A room quiet for the sync interval after a message
//!   gets a SYNC, so a lost tail is found within that interval.
//! * **Loss.** What NATS dropped is found by [`Gaps`] and told to the room's
//!   members as ERROR GAP; a link that drops is a gap in every room.
//! * **Stream flow across nodes.** A member here more than the window behind
//!   a remote publisher (its fragments' [`Flow`] here is a proxy) sends that
//!   publisher's node a FLOW pause, repeated while it lasts; the publisher's
//!   node pauses it as for a local member, and lets go on resume or when the
//!   pause is not repeated (the member's node died).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use proto::{Message, Room};

use super::envelope::{self, Envelope, Origin, Position};
use super::gaps::{Gaps, Seen};
use super::metrics::ClusterMetrics;
use super::subject::Subjects;
use crate::broadcast::Broadcast;
use crate::channel::Delivery;
use crate::flow::Flow;
use crate::rooms::{Registry, ShardMask, SubState};

/// The node's settings for the cluster.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id, unique in the cluster.
    pub id: u16,
    /// Tells this run of the node from earlier ones with the same id.
    pub incarnation: u64,
    /// Subjects of this cluster.
    pub subjects: Subjects,
    /// A room quiet this long after a message gets a SYNC.
    pub sync_ms: u64,
    /// A keep-alive PING this often; the link is dead when two go unanswered.
    pub ping_ms: u64,
    /// The largest MESSAGE payload a member may get (`--max-payload`).
    pub max_payload: u32,
    /// The stream window (`--stream-window`), for proxies of remote publishers.
    pub stream_window: usize,
    /// The cluster link's index among the inboxes (the shard count): a
    /// proxy flow that opens wakes it.
    pub own_index: usize,
}

/// How long a FLOW pause holds a publisher unless repeated; it is repeated
/// a third of that apart.
pub const PAUSE_HOLD_MS: u64 = 1000;

/// What a PING that is not yet answered was for.
#[derive(Debug)]
enum PingFor {
    /// The end of the handshake.
    Handshake,
    /// These rooms' SUBs (or re-SUBs).
    Confirm(Vec<Box<str>>),
    /// Liveness.
    KeepAlive,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    Down,
    AwaitInfo,
    AwaitPong,
    Up,
}

/// A subscribed room.
#[derive(Debug)]
struct Sub {
    sid: u64,
    mask: ShardMask,
}

/// This node's numbering of its messages to one room.
#[derive(Debug)]
struct Outgoing {
    at: Position,
    /// Messages sent since the last SYNC.
    unsynced: bool,
    last_ms: u64,
}

/// A local streaming publisher that other nodes may pause.
#[derive(Debug)]
struct Publisher {
    flow: Weak<Flow>,
    /// Nodes pausing it, and when each pause runs out.
    paused_by: Vec<(u16, u64)>,
}

/// A remote streaming publisher, as the members here owe it.
#[derive(Debug)]
struct Proxy {
    flow: Arc<Flow>,
    /// When the last FLOW pause was sent, while paused.
    paused_at: Option<u64>,
}

/// The sid of the node's own control subject.
const CONTROL_SID: u64 = 1;

/// What the link should do after [`Node::received`] or [`Node::tick`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Notes {
    /// Other NATS servers of the cluster (INFO's connect_urls).
    pub servers: Vec<String>,
    /// The server is going away (lame duck mode): reconnect elsewhere.
    pub leave: bool,
    /// The link is dead (two keep-alive PINGs unanswered).
    pub dead: bool,
    /// The server's `-ERR` texts.
    pub errors: Vec<String>,
}

/// One node's cluster state.
#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    registry: Arc<Registry>,
    metrics: Arc<ClusterMetrics>,
    phase: Phase,
    /// Unanswered PINGs, oldest first, with when each was sent.
    pings: VecDeque<(PingFor, u64)>,
    last_ping_ms: u64,
    subs: HashMap<Box<str>, Sub>,
    by_sid: HashMap<u64, Box<str>>,
    next_sid: u64,
    outgoing: HashMap<Box<str>, Outgoing>,
    next_epoch: u32,
    gaps: Gaps,
    publishers: HashMap<u64, Publisher>,
    proxies: HashMap<(u16, u64), Proxy>,
    /// The NATS server's largest PUB payload.
    server_max_payload: usize,
    /// The link came up and has not been said so yet.
    announce: bool,
    /// For the shards: what to deliver, with the shards to deliver it to.
    pub deliveries: Vec<(Delivery, u64)>,
    /// Shards whose paused publishers may go on.
    pub wakes: Vec<usize>,
}

impl Node {
    /// A node that is not connected yet.
    pub fn new(cfg: NodeConfig, registry: Arc<Registry>, metrics: Arc<ClusterMetrics>) -> Self {
        Self {
            cfg,
            registry,
            metrics,
            phase: Phase::Down,
            pings: VecDeque::new(),
            last_ping_ms: 0,
            subs: HashMap::new(),
            by_sid: HashMap::new(),
            next_sid: CONTROL_SID + 1,
            outgoing: HashMap::new(),
            next_epoch: 1,
            gaps: Gaps::default(),
            publishers: HashMap::new(),
            proxies: HashMap::new(),
            server_max_payload: 1 << 20,
            announce: false,
            deliveries: Vec::new(),
            wakes: Vec::new(),
        }
    }

    /// The node's origin in envelopes.
    pub fn origin(&self) -> Origin {
        Origin {
            node: self.cfg.id,
            incarnation: self.cfg.incarnation,
        }
    }

    /// Whether the link is up (handshake done).
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Once after each link-up: true (the link says so on stderr).
    pub fn take_announce(&mut self) -> bool {
        std::mem::take(&mut self.announce)
    }

    /// The link's counters.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    /// Whether another node holds one of this node's publishers paused.
    pub fn has_pauses(&self) -> bool {
        self.publishers.values().any(|p| !p.paused_by.is_empty())
    }

    /// A TCP connection to a NATS server is open: the server speaks first.
    pub fn connected(&mut self, now: u64) {
        self.phase = Phase::AwaitInfo;
        self.pings.clear();
        self.last_ping_ms = now;
    }

    /// The connection is gone (or could not be made). If the link was up,
    /// every room's members are told of a gap, and JOINs no longer wait.
    pub fn disconnected(&mut self) {
        let was_up = self.phase == Phase::Up;
        self.phase = Phase::Down;
        self.pings.clear();
        self.subs.clear();
        self.by_sid.clear();
        self.gaps.forget_all();
        self.metrics.link_up.set(0);
        self.metrics.subscriptions.set(0);
        for (room, mask) in self.registry.link(false) {
            let room: Arc<str> = room.into();
            if was_up {
                self.metrics.gaps.inc();
                self.deliveries.push((Delivery::Gap(room.clone()), mask));
            }
            self.deliveries.push((
                Delivery::Subscribed {
                    room,
                    state: SubState::Unconfirmed,
                },
                mask,
            ));
        }
        if was_up {
            self.metrics.disconnects.inc();
        }
        // Pauses other nodes asked for cannot be lifted by them now.
        for p in self.publishers.values_mut() {
            if let Some(flow) = p.flow.upgrade() {
                for _ in p.paused_by.drain(..) {
                    self.wakes.extend(flow.member_under());
                }
            }
            p.paused_by.clear();
        }
        for proxy in self.proxies.values_mut() {
            proxy.paused_at = None;
        }
    }

    /// Bytes from the NATS server: handles every whole operation in `buf`
    /// and returns how many bytes that took (the rest waits for more).
    pub fn received(
        &mut self,
        buf: &[u8],
        now: u64,
        out: &mut Vec<u8>,
        notes: &mut Notes,
    ) -> Result<usize, String> {
        let mut at = 0;
        // A MSG may be as large as the server allows, plus its line.
        let limit = self.server_max_payload.max(1 << 20);
        while let Some((op, used)) =
            natsproto::parse(&buf[at..], limit).map_err(|e| e.to_string())?
        {
            at += used;
            match op {
                natsproto::ServerOp::Info(json) => self.on_info(json, now, out, notes)?,
                natsproto::ServerOp::Ping => natsproto::pong(out),
                natsproto::ServerOp::Pong => self.on_pong(now, out),
                natsproto::ServerOp::Ok => {}
                natsproto::ServerOp::Err(text) => {
                    self.metrics.server_errors.inc();
                    if text.to_ascii_lowercase().contains("slow consumer") {
                        self.metrics.slow_consumer.inc();
                    }
                    notes.errors.push(text.to_owned());
                }
                natsproto::ServerOp::Msg(m) => {
                    self.metrics.messages_in.inc();
                    self.metrics.bytes_in.add(m.payload.len() as u64);
                    self.on_msg(m, now, out);
                }
            }
        }
        Ok(at)
    }

    fn on_info(
        &mut self,
        json: &str,
        now: u64,
        out: &mut Vec<u8>,
        notes: &mut Notes,
    ) -> Result<(), String> {
        let info = natsproto::Info::parse(json)?;
        if info.max_payload > 0 {
            self.server_max_payload = info.max_payload as usize;
        }
        notes.servers.extend(info.connect_urls);
        notes.leave |= info.ldm;
        if self.phase == Phase::AwaitInfo {
            let name = format!("ringroom-node-{}", self.cfg.id);
            natsproto::connect(
                out,
                &natsproto::Connect {
                    name: &name,
                    // A node's own messages are delivered by the node itself.
                    echo: false,
                    ..Default::default()
                },
            );
            self.ping(PingFor::Handshake, now, out);
            self.phase = Phase::AwaitPong;
        }
        Ok(())
    }

    fn ping(&mut self, purpose: PingFor, now: u64, out: &mut Vec<u8>) {
        natsproto::ping(out);
        self.pings.push_back((purpose, now));
        self.last_ping_ms = now;
    }

    fn on_pong(&mut self, now: u64, out: &mut Vec<u8>) {
        let Some((purpose, _)) = self.pings.pop_front() else {
            return; // a PONG we did not ask for
        };
        match purpose {
            PingFor::Handshake => self.link_up(now, out),
            PingFor::Confirm(rooms) => {
                for room in rooms {
                    self.settle(&room, SubState::Confirmed);
                }
            }
            PingFor::KeepAlive => {}
        }
    }

    /// The handshake is done: subscribe the control subject and every room
    /// with members, confirm them with one PING, and SYNC every room this
    /// node numbered (what it sent while the link was failing may be lost).
    fn link_up(&mut self, now: u64, out: &mut Vec<u8>) {
        self.phase = Phase::Up;
        self.announce = true;
        self.metrics.link_up.set(1);
        self.metrics.connects.inc();
        self.registry.link(true);
        natsproto::subscribe(out, &self.cfg.subjects.node(self.cfg.id), CONTROL_SID);
        let rooms: Vec<Box<str>> = self.registry.all().into_iter().map(|(r, _)| r).collect();
        self.interest(rooms, now, out);
        let origin = self.origin();
        for (room, o) in &mut self.outgoing {
            let subject = self.cfg.subjects.room(room);
            natsproto::publish(out, &subject, &envelope::sync(origin, o.at, false), &[]);
            self.metrics.syncs_out.inc();
            o.unsynced = false;
        }
    }

    fn settle(&mut self, room: &str, state: SubState) {
        if let Some(mask) = self.registry.settle(room, state) {
            self.deliveries.push((
                Delivery::Subscribed {
                    room: room.into(),
                    state,
                },
                mask,
            ));
        }
    }

    /// Rooms that gained their first member on this node, or lost their
    /// last: subscribe or unsubscribe, and confirm.
    pub fn interest(
        &mut self,
        rooms: impl IntoIterator<Item = Box<str>>,
        now: u64,
        out: &mut Vec<u8>,
    ) {
        let mut confirm = Vec::new();
        for room in rooms {
            match self.registry.mask(&room) {
                Some(mask) => {
                    if self.phase != Phase::Up {
                        self.settle(&room, SubState::Unconfirmed);
                        continue;
                    }
                    match self.subs.get_mut(&room) {
                        Some(sub) => sub.mask = mask,
                        None => {
                            let sid = self.next_sid;
                            self.next_sid += 1;
                            natsproto::subscribe(out, &self.cfg.subjects.room(&room), sid);
                            self.by_sid.insert(sid, room.clone());
                            self.subs.insert(room.clone(), Sub { sid, mask });
                        }
                    }
                    confirm.push(room);
                }
                None => {
                    if let Some(sub) = self.subs.remove(&room) {
                        natsproto::unsubscribe(out, sub.sid);
                        self.by_sid.remove(&sub.sid);
                    }
                    self.gaps.forget_room(&room);
                    // The epoch is over: say where it ended.
                    if let Some(o) = self.outgoing.remove(&room) {
                        if self.phase == Phase::Up {
                            let subject = self.cfg.subjects.room(&room);
                            natsproto::publish(
                                out,
                                &subject,
                                &envelope::sync(self.origin(), o.at, true),
                                &[],
                            );
                            self.metrics.syncs_out.inc();
                        }
                    }
                }
            }
        }
        self.metrics.subscriptions.set(self.subs.len() as u64);
        if !confirm.is_empty() {
            self.ping(PingFor::Confirm(confirm), now, out);
        }
    }

    /// A message published on this node, from a shard: numbered and sent
    /// (or, while the link is down, numbered and dropped: the SYNC after
    /// the link is back tells the other nodes). A stream fragment written
    /// to `out` returns its flow: it stays "in the channel" for its
    /// publisher until the link has written it to the socket
    /// ([`Node::written`]), so a publisher is paced by its node's link too.
    pub fn local(
        &mut self,
        message: &Broadcast,
        now_ms: u64,
        now_unix_ns: u64,
        out: &mut Vec<u8>,
    ) -> Option<Arc<Flow>> {
        let bytes = message.bytes();
        if let Some(flow) = message.flow() {
            self.publishers
                .entry(message.from_conn_id())
                .or_insert_with(|| Publisher {
                    flow: Arc::downgrade(flow),
                    paused_by: Vec::new(),
                });
        }
        let m = Message::from_frame(bytes).expect("a Broadcast holds a MESSAGE");
        let room = m.room.as_str();
        let o = match self.outgoing.get_mut(room) {
            Some(o) => o,
            None => {
                let epoch = self.next_epoch;
                self.next_epoch = self.next_epoch.wrapping_add(1);
                self.outgoing.entry(room.into()).or_insert(Outgoing {
                    at: Position { epoch, seq: 0 },
                    unsynced: false,
                    last_ms: now_ms,
                })
            }
        };
        o.at.seq += 1;
        o.last_ms = now_ms;
        o.unsynced = true;
        let at = o.at;
        if self.phase != Phase::Up {
            self.metrics.dropped_link_down.inc();
            if let Some(flow) = message.flow() {
                self.wakes.extend(flow.left_channel(bytes.len()));
            }
            return None;
        }
        let head =
            envelope::message_header(self.origin(), at, m.from_conn_id, m.fragment, now_unix_ns);
        natsproto::publish(out, &self.cfg.subjects.room(room), &head, m.body);
        self.metrics.messages_out.inc();
        self.metrics
            .bytes_out
            .add((head.len() + m.body.len()) as u64);
        message.flow().cloned()
    }

    /// A fragment of `bytes` (its MESSAGE frame's length) that
    /// [`Node::local`] wrote has left the link (written to the socket, or
    /// dropped with the connection): its publisher may be woken.
    pub fn written(&mut self, flow: &Flow, bytes: usize) {
        self.wakes.extend(flow.left_channel(bytes));
    }

    fn on_msg(&mut self, m: natsproto::Msg<'_>, now: u64, out: &mut Vec<u8>) {
        if m.sid == CONTROL_SID {
            return self.on_control(m, now, out);
        }
        let Some(room) = self.by_sid.get(&m.sid).cloned() else {
            return; // unsubscribed meanwhile
        };
        match envelope::decode(m.payload) {
            Some(Envelope::Message {
                origin,
                at,
                from_conn_id,
                fragment,
                sent_at_ns,
                body,
            }) => {
                let seen = self.gaps.message(&room, origin, at);
                if seen == Seen::Stale {
                    self.metrics.stale.inc();
                    return;
                }
                if let Seen::Gap(n) = seen {
                    self.gap(&room, n);
                }
                self.metrics.observe_latency(sent_at_ns);
                self.deliver(&room, origin, from_conn_id, fragment, body);
            }
            Some(Envelope::Sync {
                origin,
                at,
                closing,
            }) => {
                self.metrics.syncs_in.inc();
                if let Seen::Gap(n) = self.gaps.sync(&room, origin, at, closing) {
                    self.gap(&room, n);
                }
            }
            _ => self.metrics.foreign.inc(),
        }
    }

    fn gap(&mut self, room: &str, missing: Option<u64>) {
        self.metrics.gaps.inc();
        self.metrics.gap_messages.add(missing.unwrap_or(0));
        if let Some(sub) = self.subs.get(room) {
            let mask = sub.mask.load(Ordering::SeqCst);
            self.deliveries.push((Delivery::Gap(room.into()), mask));
        }
    }

    fn deliver(
        &mut self,
        room: &str,
        origin: Origin,
        from_conn_id: u64,
        fragment: proto::Fragment,
        body: &[u8],
    ) {
        let Some(sub) = self.subs.get(room) else {
            return;
        };
        let mask = sub.mask.load(Ordering::SeqCst);
        let frame = Message {
            from_conn_id,
            room: Room::new(room).expect("a subscribed room is valid"),
            body,
            fragment,
        };
        if frame_len(&frame) > self.cfg.max_payload as usize + proto::HEADER_LEN {
            // Nodes with different --max-payload: members could not take it.
            self.metrics.too_large.inc();
            return self.gap(room, Some(1));
        }
        let flow = (fragment.stream != 0).then(|| {
            let window = self.cfg.stream_window;
            let own = self.cfg.own_index;
            self.proxies
                .entry((origin.node, from_conn_id))
                .or_insert_with(|| Proxy {
                    flow: Flow::new(own, window),
                    paused_at: None,
                })
                .flow
                .clone()
        });
        let message = Broadcast::encode(frame, flow);
        self.deliveries.push((Delivery::Message(message), mask));
    }

    fn on_control(&mut self, m: natsproto::Msg<'_>, now: u64, out: &mut Vec<u8>) {
        match envelope::decode(m.payload) {
            Some(Envelope::Flow {
                from,
                from_conn_id,
                paused,
            }) => {
                self.metrics.flow_in.inc();
                let Some(p) = self.publishers.get_mut(&from_conn_id) else {
                    return;
                };
                let Some(flow) = p.flow.upgrade() else {
                    self.publishers.remove(&from_conn_id);
                    return;
                };
                let held = p.paused_by.iter().position(|&(n, _)| n == from);
                match (paused, held) {
                    (true, Some(i)) => p.paused_by[i].1 = now + PAUSE_HOLD_MS,
                    (true, None) => {
                        flow.member_over();
                        p.paused_by.push((from, now + PAUSE_HOLD_MS));
                    }
                    (false, Some(i)) => {
                        p.paused_by.swap_remove(i);
                        self.wakes.extend(flow.member_under());
                    }
                    (false, None) => {}
                }
            }
            Some(Envelope::Claim { incarnation }) if incarnation != self.cfg.incarnation => {
                if let Some(reply) = m.reply {
                    natsproto::publish(out, reply, &envelope::taken(self.origin()), &[]);
                }
            }
            _ => self.metrics.foreign.inc(),
        }
    }

    /// Time passes: keep-alive PINGs, SYNCs of quiet rooms, FLOW pauses
    /// repeated, lifted or run out, and state no longer needed dropped.
    pub fn tick(&mut self, now: u64, out: &mut Vec<u8>, notes: &mut Notes) {
        if self.phase == Phase::Down {
            return;
        }
        let ping_ms = self.cfg.ping_ms;
        if let Some((_, sent)) = self.pings.front() {
            if now.saturating_sub(*sent) >= 2 * ping_ms {
                notes.dead = true;
                return;
            }
        }
        if self.phase != Phase::Up {
            return;
        }
        if now.saturating_sub(self.last_ping_ms) >= ping_ms {
            self.ping(PingFor::KeepAlive, now, out);
        }
        let origin = self.origin();
        for (room, o) in &mut self.outgoing {
            if o.unsynced && now.saturating_sub(o.last_ms) >= self.cfg.sync_ms {
                let subject = self.cfg.subjects.room(room);
                natsproto::publish(out, &subject, &envelope::sync(origin, o.at, false), &[]);
                self.metrics.syncs_out.inc();
                o.unsynced = false;
            }
        }
        // Numbering of rooms this node has left (a message raced the leave).
        let subs = &self.subs;
        self.outgoing
            .retain(|room, o| o.unsynced || subs.contains_key(room));
        self.tick_flows(now, out);
    }

    fn tick_flows(&mut self, now: u64, out: &mut Vec<u8>) {
        let wakes = &mut self.wakes;
        self.publishers.retain(|_, p| {
            let Some(flow) = p.flow.upgrade() else {
                return false;
            };
            p.paused_by.retain(|&(_, until)| {
                let keep = now < until;
                if !keep {
                    wakes.extend(flow.member_under());
                }
                keep
            });
            // Kept while the publisher lives; the table holds one entry
            // per streaming publisher of this node.
            true
        });
        let me = self.cfg.id;
        let subjects = &self.cfg.subjects;
        let metrics = &self.metrics;
        self.proxies.retain(|&(node, conn), proxy| {
            let mut send = |paused: bool| {
                let flow = envelope::flow(me, conn, paused);
                natsproto::publish(out, &subjects.node(node), &flow, &[]);
                metrics.flow_out.inc();
            };
            let closed = proxy.flow.is_closed();
            match proxy.paused_at {
                None if closed => {
                    send(true);
                    proxy.paused_at = Some(now);
                }
                Some(at) if closed && now.saturating_sub(at) >= PAUSE_HOLD_MS / 3 => {
                    send(true);
                    proxy.paused_at = Some(now);
                }
                Some(_) if proxy.flow.may_resume() => {
                    send(false);
                    proxy.paused_at = None;
                }
                _ => {}
            }
            // Gone once no fragment of it is held here and it is not paused.
            proxy.paused_at.is_some() || Arc::strong_count(&proxy.flow) > 1
        });
        // A proxy's publisher "waits" always: members that catch up wake
        // the link, which then sends the resume at once.
        for proxy in self.proxies.values() {
            proxy.flow.set_waiting(true);
        }
    }

    /// Remote streaming publishers this node proxies.
    pub fn proxies(&self) -> usize {
        self.proxies.len()
    }

    /// Origins tracked for gaps.
    pub fn tracked(&self) -> usize {
        self.gaps.len()
    }
}

fn frame_len(m: &Message<'_>) -> usize {
    proto::Frame::Message(*m).encoded_len()
}

#[cfg(test)]
mod tests;
