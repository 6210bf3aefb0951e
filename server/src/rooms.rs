//! Room membership: each shard's own table of rooms and local members, and the
//! server-wide registry that bounds the number of rooms.
//!
//! The publish path touches only the shard's table (no lock). The registry is
//! locked only when a shard gains its first member of a room or loses its last,
//! which is what `--max-rooms` counts. It also keeps, per room, the set of
//! shards with members (a bit mask shared with those shards' tables), so that
//! a message goes only to the shards that have someone to deliver it to.
//!
//! In a cluster the registry is also the node's interest: a room that gains
//! its first member on the node, or loses its last, is told to the cluster
//! link ([`Interest`]), which subscribes or unsubscribes its subject. Each
//! room then has a [`SubState`]: a JOIN is answered once the subscription is
//! confirmed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use indexmap::IndexSet;

use crate::cluster::Interest;

/// Where a room's subscription on the cluster stands, for the JOINs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubState {
    /// No cluster, or NATS has confirmed the node's subscription: JOINED at once.
    Confirmed,
    /// Asked of NATS, not confirmed yet: JOINED waits for it.
    Pending,
    /// The cluster link is down: JOINED at once, followed by ERROR GAP
    /// (messages from other nodes are missed until it is back).
    Unconfirmed,
}

#[derive(Debug)]
struct Entry {
    /// How many shards have members.
    shards: u32,
    mask: ShardMask,
    sub: SubState,
}

#[derive(Debug)]
struct Rooms {
    by_name: HashMap<Box<str>, Entry>,
    /// The state a new room starts in: Pending while the cluster link is
    /// up, Unconfirmed while it is down, Confirmed without a cluster.
    new_rooms: SubState,
}

/// The shards with members of one room: bit `s` for shard `s`. With more
/// than 64 shards every bit is always set (every shard gets every message).
pub type ShardMask = Arc<AtomicU64>;

/// Every shard.
pub const ALL_SHARDS: u64 = u64::MAX;

/// Shard `shard`'s bit in a [`ShardMask`]; past 64 shards, every bit.
pub fn shard_bit(shard: usize) -> u64 {
    if shard < 64 {
        1 << shard
    } else {
        ALL_SHARDS
    }
}

/// The server-wide set of rooms, shared by the shards.
#[derive(Debug)]
pub struct Registry {
    /// Room name -> how many shards have members of it, and which.
    rooms: Mutex<Rooms>,
    max_rooms: usize,
    /// More than 64 shards: masks are not kept.
    all_shards: bool,
    /// The cluster link, told of every room gained or lost.
    interest: Option<Arc<Interest>>,
    /// Tickets of the messages published on this node, in order: see
    /// [`ShardRooms::ticket`].
    tickets: AtomicU64,
}

impl Registry {
    /// A registry of at most `max_rooms` rooms over `shards` shards.
    pub fn new(max_rooms: usize, shards: usize) -> Self {
        Self::with_cluster(max_rooms, shards, None)
    }

    /// The same, in a cluster whose link takes `interest`; rooms start
    /// Unconfirmed until the link is up.
    pub fn with_cluster(max_rooms: usize, shards: usize, interest: Option<Arc<Interest>>) -> Self {
        let new_rooms = if interest.is_some() {
            SubState::Unconfirmed
        } else {
            SubState::Confirmed
        };
        Self {
            rooms: Mutex::new(Rooms {
                by_name: HashMap::new(),
                new_rooms,
            }),
            max_rooms,
            all_shards: shards > 64,
            interest,
            tickets: AtomicU64::new(0),
        }
    }

    fn bit(&self, shard: usize) -> u64 {
        if self.all_shards {
            ALL_SHARDS
        } else {
            shard_bit(shard)
        }
    }

    /// Shard `shard` gains its first member of `name`: the room's shard mask
    /// (with this shard's bit set before any JOINED is sent), its
    /// subscription's state and the ticket its messages start after (read
    /// after the bit was set), or None if that would make one room too many.
    fn acquire(&self, name: &str, shard: usize) -> Option<(ShardMask, SubState, u64)> {
        let mut rooms = self.rooms.lock().expect("registry lock");
        if let Some(e) = rooms.by_name.get_mut(name) {
            e.shards += 1;
            e.mask.fetch_or(self.bit(shard), Ordering::SeqCst);
            let since = self.tickets.load(Ordering::SeqCst);
            return Some((e.mask.clone(), e.sub, since));
        }
        if rooms.by_name.len() >= self.max_rooms {
            return None;
        }
        let mask = Arc::new(AtomicU64::new(self.bit(shard)));
        let sub = rooms.new_rooms;
        rooms.by_name.insert(
            name.into(),
            Entry {
                shards: 1,
                mask: mask.clone(),
                sub,
            },
        );
        if let Some(interest) = &self.interest {
            interest.changed(name);
        }
        Some((mask, sub, self.tickets.load(Ordering::SeqCst)))
    }

    /// Shard `shard` lost its last member of `name`.
    fn release(&self, name: &str, shard: usize) {
        let mut rooms = self.rooms.lock().expect("registry lock");
        if let Some(e) = rooms.by_name.get_mut(name) {
            e.shards -= 1;
            if !self.all_shards {
                e.mask.fetch_and(!self.bit(shard), Ordering::SeqCst);
            }
            if e.shards == 0 {
                rooms.by_name.remove(name);
                if let Some(interest) = &self.interest {
                    interest.changed(name);
                }
            }
        }
    }

    /// For the cluster link: room `name`'s shard mask, if it has members.
    pub fn mask(&self, name: &str) -> Option<ShardMask> {
        let rooms = self.rooms.lock().expect("registry lock");
        rooms.by_name.get(name).map(|e| e.mask.clone())
    }

    /// For the cluster link: every room with members, and its mask.
    pub fn all(&self) -> Vec<(Box<str>, ShardMask)> {
        let rooms = self.rooms.lock().expect("registry lock");
        rooms
            .by_name
            .iter()
            .map(|(name, e)| (name.clone(), e.mask.clone()))
            .collect()
    }

    /// For the cluster link: room `name`'s subscription is settled. Returns
    /// the shards to tell (those with members now), or None if the room
    /// has none left.
    pub fn settle(&self, name: &str, state: SubState) -> Option<u64> {
        let mut rooms = self.rooms.lock().expect("registry lock");
        let e = rooms.by_name.get_mut(name)?;
        e.sub = state;
        Some(e.mask.load(Ordering::SeqCst))
    }

    /// For the cluster link: the link came up (new rooms are Pending) or
    /// went down (new rooms, and every room now, are Unconfirmed: the rooms
    /// and the shards to tell are returned).
    pub fn link(&self, up: bool) -> Vec<(Box<str>, u64)> {
        let mut rooms = self.rooms.lock().expect("registry lock");
        if up {
            rooms.new_rooms = SubState::Pending;
            return Vec::new();
        }
        rooms.new_rooms = SubState::Unconfirmed;
        rooms
            .by_name
            .iter_mut()
            .map(|(name, e)| {
                e.sub = SubState::Unconfirmed;
                (name.clone(), e.mask.load(Ordering::SeqCst))
            })
            .collect()
    }

    /// Rooms with at least one member, server-wide.
    pub fn len(&self) -> usize {
        self.rooms.lock().expect("registry lock").by_name.len()
    }

    /// Whether no room has members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a JOIN came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// Now a member.
    New,
    /// Was a member already: nothing changes.
    Already,
    /// The connection is in its maximum number of rooms.
    ConnLimit,
    /// The server has its maximum number of rooms.
    ServerLimit,
}

#[derive(Debug)]
struct Room {
    name: Box<str>,
    /// The shards with members of this room, shared through the registry.
    shards: ShardMask,
    /// Local members, by connection slot; O(1) insert and remove, contiguous to iterate.
    members: IndexSet<u32>,
    /// The node's subscription to it, as last told this shard.
    sub: SubState,
    /// Members whose JOIN waits for the subscription (one entry per JOIN).
    waiting: Vec<u32>,
    /// Messages from other shards with a ticket up to this were published
    /// before this shard's bit was set for this room (this incarnation of
    /// it here): see [`ShardRooms::accepts`].
    since: u64,
}

/// One shard's rooms.
#[derive(Debug)]
pub struct ShardRooms {
    by_name: HashMap<Box<str>, u32>,
    rooms: Vec<Option<Room>>,
    free: Vec<u32>,
    registry: Arc<Registry>,
    shard: usize,
    memberships: usize,
}

impl ShardRooms {
    /// Shard `shard`'s empty table, counting its rooms in `registry`.
    pub fn new(registry: Arc<Registry>, shard: usize) -> Self {
        Self {
            by_name: HashMap::new(),
            rooms: Vec::new(),
            free: Vec::new(),
            registry,
            shard,
            memberships: 0,
        }
    }

    /// The shards with members of room `id` now (a bit per shard).
    pub fn shards(&self, id: u32) -> u64 {
        self.rooms[id as usize]
            .as_ref()
            .map_or(ALL_SHARDS, |r| r.shards.load(Ordering::SeqCst))
    }

    /// A ticket for a message published now, taken before its destinations
    /// are read ([`ShardRooms::shards`]): node-wide and increasing.
    pub fn ticket(&self) -> u64 {
        self.registry.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Whether a message from another shard with `ticket` goes to local
    /// room `id`'s members (0: not ticketed, from another node: yes).
    ///
    /// Why: when a shard's last member of a room leaves, its bit is cleared
    /// and publishers stop sending it the room's messages; messages sent
    /// before that may still be in its inbox. If a member joins meanwhile,
    /// those stale messages would reach it while the ones published in
    /// between never will: a gap (seen by `loadgen --scenario churn` at
    /// C100K). A ticket is taken before the publisher reads the mask and
    /// `since` after the bit is set (both SeqCst), so every message with a
    /// ticket above `since` was sent here, and the member's stream is a
    /// gapless suffix of the publisher's.
    pub fn accepts(&self, id: u32, ticket: u64) -> bool {
        ticket == 0
            || self.rooms[id as usize]
                .as_ref()
                .is_some_and(|r| ticket > r.since)
    }

    /// (connection, room) pairs on this shard.
    pub fn memberships(&self) -> usize {
        self.memberships
    }

    /// The id of a room with local members.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of room `id`.
    pub fn name(&self, id: u32) -> &str {
        &self.rooms[id as usize].as_ref().expect("live room").name
    }

    /// Rooms with local members.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no room has local members.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Local members of room `id`.
    pub fn members(&self, id: u32) -> impl Iterator<Item = u32> + '_ {
        self.rooms[id as usize]
            .iter()
            .flat_map(|r| r.members.iter().copied())
    }

    /// Number of local members of room `id`.
    pub fn member_count(&self, id: u32) -> usize {
        self.rooms[id as usize]
            .as_ref()
            .map_or(0, |r| r.members.len())
    }

    /// Adds `slot` to room `name`; `mine` is the connection's list of room ids,
    /// at most `max_per_conn` long.
    pub fn join(
        &mut self,
        name: &str,
        slot: u32,
        mine: &mut Vec<u32>,
        max_per_conn: usize,
    ) -> Joined {
        if let Some(id) = self.id(name) {
            if mine.contains(&id) {
                return Joined::Already;
            }
        }
        if mine.len() >= max_per_conn {
            return Joined::ConnLimit;
        }
        let id = match self.id(name) {
            Some(id) => id,
            None => {
                let Some((shards, sub, since)) = self.registry.acquire(name, self.shard) else {
                    return Joined::ServerLimit;
                };
                let room = Room {
                    name: name.into(),
                    shards,
                    members: IndexSet::new(),
                    sub,
                    waiting: Vec::new(),
                    since,
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.rooms[id as usize] = Some(room);
                        id
                    }
                    None => {
                        self.rooms.push(Some(room));
                        (self.rooms.len() - 1) as u32
                    }
                };
                self.by_name.insert(name.into(), id);
                id
            }
        };
        let room = self.rooms[id as usize].as_mut().expect("live room");
        room.members.insert(slot);
        self.memberships += 1;
        mine.push(id);
        Joined::New
    }

    /// Removes `slot` from room `name`; false if it was not a member.
    pub fn leave(&mut self, name: &str, slot: u32, mine: &mut Vec<u32>) -> bool {
        let Some(id) = self.id(name) else {
            return false;
        };
        let Some(at) = mine.iter().position(|&r| r == id) else {
            return false;
        };
        mine.swap_remove(at);
        self.remove_member(id, slot);
        true
    }

    /// Removes `slot` from every room in `mine` (the connection is closing).
    pub fn leave_all(&mut self, slot: u32, mine: &mut Vec<u32>) {
        for id in mine.drain(..) {
            self.remove_member(id, slot);
        }
    }

    /// The subscription of room `id` (a room with local members), as this
    /// shard last heard.
    pub fn sub(&self, id: u32) -> SubState {
        self.rooms[id as usize].as_ref().expect("live room").sub
    }

    /// `slot`'s JOIN of room `id` waits for the subscription.
    pub fn wait_for_sub(&mut self, id: u32, slot: u32) {
        let room = self.rooms[id as usize].as_mut().expect("live room");
        room.waiting.push(slot);
    }

    /// How many of `slot`'s JOINs of `name` wait for the subscription.
    pub fn waiting(&self, name: &str, slot: u32) -> usize {
        self.id(name)
            .and_then(|id| self.rooms[id as usize].as_ref())
            .map_or(0, |r| r.waiting.iter().filter(|&&s| s == slot).count())
    }

    /// The node's subscription to `name` is settled: its new state, and the
    /// members whose JOINs waited for it (now to be answered), into `out`.
    pub fn settle(&mut self, name: &str, state: SubState, out: &mut Vec<u32>) {
        let Some(id) = self.id(name) else {
            return;
        };
        let room = self.rooms[id as usize].as_mut().expect("live room");
        room.sub = state;
        if state != SubState::Pending {
            out.append(&mut room.waiting);
        }
    }

    fn remove_member(&mut self, id: u32, slot: u32) {
        let room = self.rooms[id as usize].as_mut().expect("live room");
        if room.members.swap_remove(&slot) {
            self.memberships -= 1;
        }
        room.waiting.retain(|&s| s != slot);
        if room.members.is_empty() {
            let room = self.rooms[id as usize].take().expect("live room");
            self.by_name.remove(&room.name);
            self.registry.release(&room.name, self.shard);
            self.free.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_that_lost_its_members_does_not_deliver_what_was_sent_before() {
        let registry = Arc::new(Registry::new(10, 2));
        let mut a = ShardRooms::new(registry.clone(), 0);
        let mut b = ShardRooms::new(registry, 1);
        let (mut pa, mut ma, mut mb) = (Vec::new(), Vec::new(), Vec::new());
        a.join("r", 0, &mut pa, 8);
        b.join("r", 0, &mut ma, 8);
        let id_a = a.id("r").unwrap();
        // Message 1 goes to shard 1 (its bit is set) and waits in its inbox.
        let t1 = a.ticket();
        assert_eq!(a.shards(id_a) & 0b10, 0b10);
        // Shard 1's last member leaves; message 2 is not sent there.
        b.leave_all(0, &mut ma);
        let t2 = a.ticket();
        assert_eq!(a.shards(id_a) & 0b10, 0);
        // A new member joins on shard 1; message 1 arrives only now.
        b.join("r", 1, &mut mb, 8);
        let id_b = b.id("r").unwrap();
        assert!(!b.accepts(id_b, t1), "message 1, then 3 without 2: a gap");
        assert!(!b.accepts(id_b, t2));
        let t3 = a.ticket();
        assert_eq!(a.shards(id_a) & 0b10, 0b10, "message 3 is sent there");
        assert!(b.accepts(id_b, t3));
        assert!(b.accepts(id_b, 0), "from another node: not ticketed");
    }

    fn table(max_rooms: usize) -> (ShardRooms, Arc<Registry>) {
        let registry = Arc::new(Registry::new(max_rooms, 1));
        (ShardRooms::new(registry.clone(), 0), registry)
    }

    #[test]
    fn join_leave_and_rejoin() {
        let (mut t, registry) = table(10);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(t.join("lobby", 1, &mut a, 64), Joined::New);
        assert_eq!(t.join("lobby", 1, &mut a, 64), Joined::Already);
        assert_eq!(t.join("lobby", 2, &mut b, 64), Joined::New);
        let id = t.id("lobby").unwrap();
        let mut members: Vec<u32> = t.members(id).collect();
        members.sort_unstable();
        assert_eq!(members, [1, 2]);
        assert!(t.leave("lobby", 1, &mut a));
        assert!(!t.leave("lobby", 1, &mut a), "not a member any more");
        assert!(!t.leave("nowhere", 1, &mut a));
        assert_eq!(t.members(id).collect::<Vec<_>>(), [2]);
        assert_eq!(registry.len(), 1);
        assert_eq!(t.memberships(), 1);
        t.leave_all(2, &mut b);
        assert!(t.is_empty());
        assert_eq!(t.memberships(), 0);
        assert_eq!(registry.len(), 0, "an empty room is gone");
        assert_eq!(t.join("lobby", 1, &mut a, 64), Joined::New);
    }

    #[test]
    fn rooms_per_connection_are_bounded() {
        let (mut t, _) = table(100);
        let mut mine = Vec::new();
        for i in 0..3 {
            assert_eq!(t.join(&format!("r{i}"), 7, &mut mine, 3), Joined::New);
        }
        assert_eq!(t.join("r3", 7, &mut mine, 3), Joined::ConnLimit);
        assert_eq!(
            t.join("r0", 7, &mut mine, 3),
            Joined::Already,
            "a rejoin is not a new room"
        );
        assert!(t.leave("r1", 7, &mut mine));
        assert_eq!(t.join("r3", 7, &mut mine, 3), Joined::New);
    }

    #[test]
    fn rooms_per_server_are_bounded_across_shards() {
        let registry = Arc::new(Registry::new(2, 2));
        let mut s0 = ShardRooms::new(registry.clone(), 0);
        let mut s1 = ShardRooms::new(registry.clone(), 1);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(s0.join("x", 1, &mut a, 64), Joined::New);
        assert_eq!(
            s1.join("x", 1, &mut b, 64),
            Joined::New,
            "same room on another shard"
        );
        assert_eq!(s1.join("y", 1, &mut b, 64), Joined::New);
        assert_eq!(s0.join("z", 1, &mut a, 64), Joined::ServerLimit);
        assert_eq!(registry.len(), 2);
        s0.leave_all(1, &mut a);
        assert_eq!(registry.len(), 2, "x still has members on shard 1");
        s1.leave("x", 1, &mut b);
        assert_eq!(s0.join("z", 1, &mut a, 64), Joined::New);
    }

    #[test]
    fn room_slots_are_reused() {
        let (mut t, _) = table(10);
        let mut mine = Vec::new();
        t.join("a", 1, &mut mine, 64);
        let id = t.id("a").unwrap();
        t.leave("a", 1, &mut mine);
        t.join("b", 1, &mut mine, 64);
        assert_eq!(t.id("b"), Some(id));
        assert_eq!(t.member_count(id), 1);
    }

    #[test]
    fn a_room_knows_which_shards_have_members() {
        let registry = Arc::new(Registry::new(10, 3));
        let mut shards: Vec<ShardRooms> = (0..3)
            .map(|s| ShardRooms::new(registry.clone(), s))
            .collect();
        let mut mine: Vec<Vec<u32>> = vec![Vec::new(); 3];
        assert_eq!(shards[0].join("x", 1, &mut mine[0], 64), Joined::New);
        let id = shards[0].id("x").unwrap();
        assert_eq!(shards[0].shards(id), 0b001);
        assert_eq!(shards[2].join("x", 5, &mut mine[2], 64), Joined::New);
        assert_eq!(
            shards[0].shards(id),
            0b101,
            "shard 2's first member is seen at once"
        );
        assert_eq!(shards[2].join("x", 6, &mut Vec::new(), 64), Joined::New);
        shards[2].leave("x", 5, &mut mine[2]);
        assert_eq!(shards[0].shards(id), 0b101, "shard 2 still has a member");
        let x = shards[2].id("x").unwrap();
        shards[2].leave_all(6, &mut vec![x]);
        assert_eq!(shards[0].shards(id), 0b001, "shard 2 has none left");
        assert_eq!(registry.len(), 1);
        shards[0].leave_all(1, &mut mine[0]);
        assert_eq!(registry.len(), 0, "gone when no shard has members");
    }

    #[test]
    fn past_64_shards_every_shard_gets_every_message() {
        let registry = Arc::new(Registry::new(10, 100));
        let mut s70 = ShardRooms::new(registry.clone(), 70);
        let mut s3 = ShardRooms::new(registry.clone(), 3);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s70.join("x", 1, &mut a, 64);
        s3.join("x", 1, &mut b, 64);
        let id = s3.id("x").unwrap();
        assert_eq!(s3.shards(id), ALL_SHARDS);
        s70.leave_all(1, &mut a);
        assert_eq!(registry.len(), 1, "shard 3 still has a member");
        s3.leave_all(1, &mut b);
        assert_eq!(registry.len(), 0);
    }
}
