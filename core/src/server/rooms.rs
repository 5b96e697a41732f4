//! Group rooms (protocol version 3): a room message is stored once, under the room's next
//! sequence number (assigned at commit), acknowledged once durable, and reaches each member
//! on every session of theirs — pushed live to those online, read from the room by a cursor
//! to those who were offline — each seq once per session and in the room's order.
//!
//! Why a cursor and not a copy per member: a message to a room of 1,000 members would
//! otherwise cost 1,000 stored rows, most of them for members who read it much later.
//! Here it costs one row; a member's cursor (`MarkRoomRead`) is the highest seq their
//! application has, and a login reads each room above it.
//!
//! Each session keeps, per room, `floor`: the highest seq pushed to it. A push goes out only
//! as `floor + 1` and raises it, so a seq reaches a session at most once and in order; a push
//! further ahead means a seq in between is still on its way (committed through another node
//! of a cluster, whose `RoomMail` has not arrived), and the session reads the room instead,
//! which brings both in order. A room's seqs have no holes (both stores promise it). The same holding
//! and paging as the 1:1 mailbox (`messaging.rs`) keeps live pushes from overtaking or
//! repeating what a read brings. The client application is told each seq once by the
//! client machine, which drops a seq at or below the highest it has told (PROTOCOL.md, "Rooms").

use super::session::Phase;
use super::{Output, Pending, Server};
use crate::codec::encode;
use crate::ids::{ConnId, UserId};
use crate::message::{
    ErrorCode, ROOMS_VERSION, RequestKind, RoomDelivery, RoomMember, RoomRole, ServerMsg,
};
use crate::storage::{
    MAX_HISTORY, MemberRoom, RoomChange, RoomRange, RoomStored, RoomView, StorageError, StorageOp,
};
use crate::text::room_name;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

/// A session's rooms: what it has been pushed of each, and the reads that bring the rest.
#[derive(Debug, Default)]
pub(crate) struct RoomFeed {
    phase: FeedPhase,
    rooms: BTreeMap<u64, FeedRoom>,
    /// One `MarkRoomRead` in flight per session; acks arriving meanwhile wait here, the
    /// highest seq per room (a cursor only moves up, so the rest say nothing more).
    marking: bool,
    reads_waiting: BTreeMap<u64, u64>,
}

#[derive(Debug, Default)]
enum FeedPhase {
    /// No rooms: an agent, or a connection of version 1.
    #[default]
    Off,
    /// The user's rooms are being read (`LoadRooms`). Pushes wait in `held` (room, seq,
    /// payload): the read may not reflect messages reported while it was in flight.
    /// `stale`: the user's membership changed meanwhile, so the answer may be out of date
    /// and is read again. Without `in_flight` the read waits for budget or after a failure,
    /// and is tried at the session's next frame.
    Loading {
        held: Vec<(u64, u64, Bytes)>,
        in_flight: bool,
        stale: bool,
    },
    Loaded,
}

#[derive(Debug)]
struct FeedRoom {
    /// The highest seq pushed to this session (at first, the member's read cursor).
    floor: u64,
    state: FeedState,
}

#[derive(Debug)]
enum FeedState {
    /// Everything up to the room's last seq is pushed; pushes go straight out.
    Live,
    /// Messages above `floor` wait in the room, to be read when this session's one room
    /// read is free. Pushes are dropped meanwhile: the read brings them.
    Queued,
    /// A page is being read; pushes wait in `held`, for the same reason as in `Loading`.
    /// `again`: news of messages arrived without them (a cluster's resync), which the read may
    /// have missed: the room is read once more after it.
    Reading {
        held: Vec<(u64, Bytes)>,
        again: bool,
    },
    /// A page is out; the next is read once the client acks its last seq, so a room of any
    /// backlog passes through a bounded outbound queue. Pushes are dropped meanwhile.
    AwaitingAck { last: u64 },
}

/// The rooms some session on this node has loaded: their names and members, for the
/// presence of members and for telling members of changes.
#[derive(Debug, Default)]
pub(super) struct RoomBoard {
    rooms: BTreeMap<u64, CachedRoom>,
    /// Member → their cached rooms.
    of_member: BTreeMap<UserId, BTreeSet<u64>>,
}

#[derive(Debug)]
struct CachedRoom {
    name: String,
    members: BTreeMap<UserId, RoomRole>,
    /// Sessions here whose feed holds the room; at 0 the room is forgotten.
    sessions: usize,
}

impl RoomBoard {
    fn hold(&mut self, view: &RoomView) {
        if let Some(r) = self.rooms.get_mut(&view.room) {
            r.sessions += 1;
            return;
        }
        self.rooms.insert(
            view.room,
            CachedRoom {
                name: view.name.clone(),
                members: BTreeMap::new(),
                sessions: 1,
            },
        );
        self.set(view);
    }

    /// Takes a committed change in, if the room is cached.
    fn set(&mut self, view: &RoomView) {
        let Some(r) = self.rooms.get_mut(&view.room) else {
            return;
        };
        for user in r.members.keys() {
            unindex(&mut self.of_member, user, view.room);
        }
        r.members = view.members.iter().cloned().collect();
        for user in r.members.keys() {
            self.of_member
                .entry(user.clone())
                .or_default()
                .insert(view.room);
        }
    }

    fn release(&mut self, room: u64) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.sessions -= 1;
        if r.sessions == 0 {
            let r = self.rooms.remove(&room).expect("present");
            for user in r.members.keys() {
                unindex(&mut self.of_member, user, room);
            }
        }
    }
}

fn unindex(of_member: &mut BTreeMap<UserId, BTreeSet<u64>>, user: &UserId, room: u64) {
    if let Some(set) = of_member.get_mut(user) {
        set.remove(&room);
        if set.is_empty() {
            of_member.remove(user);
        }
    }
}

/// A session's feed, borrowed from the connection table alone (so `out` stays free).
fn feed_of(conns: &mut super::conns::Conns, conn: ConnId) -> Option<&mut RoomFeed> {
    match conns.get_mut(&conn).map(|c| &mut c.phase) {
        Some(Phase::Session(s)) => Some(&mut s.rooms),
        _ => None,
    }
}

fn room_error(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::NoSuchRoom => ErrorCode::NoSuchRoom,
        StorageError::Forbidden => ErrorCode::Forbidden,
        StorageError::RoomLimit => ErrorCode::RoomLimit,
        StorageError::NoSuchUser => ErrorCode::NoSuchUser,
        _ => ErrorCode::StorageFailed,
    }
}

impl Server {
    fn feed_mut(&mut self, conn: ConnId) -> Option<&mut RoomFeed> {
        feed_of(&mut self.conns, conn)
    }

    fn feed_has(&self, conn: ConnId, room: u64) -> bool {
        self.conns
            .get(&conn)
            .and_then(|c| c.session())
            .is_some_and(|s| {
                matches!(s.rooms.phase, FeedPhase::Loaded) && s.rooms.rooms.contains_key(&room)
            })
    }

    fn sessions_of_user(&self, user: &UserId) -> Vec<ConnId> {
        self.users
            .get(user)
            .map(|u| u.sessions.iter().copied().collect())
            .unwrap_or_default()
    }

    fn members_frame(&self, view: &RoomView) -> ServerMsg {
        ServerMsg::RoomMembers {
            room: view.room,
            name: view.name.clone(),
            full: true,
            members: view
                .members
                .iter()
                .map(|(user, role)| RoomMember {
                    user: user.clone(),
                    role: Some(*role),
                    presence: self.presence.announced(user),
                })
                .collect(),
        }
    }

    /// A device session of a version-2 connection has started: its rooms are read.
    pub(super) fn start_rooms(&mut self, conn: ConnId) {
        if !self
            .conns
            .get(&conn)
            .is_some_and(|c| c.speaks(ROOMS_VERSION))
        {
            return;
        }
        let Some(feed) = self.feed_mut(conn) else {
            return;
        };
        feed.phase = FeedPhase::Loading {
            held: Vec::new(),
            in_flight: false,
            stale: false,
        };
        self.load_rooms(conn);
    }

    fn load_rooms(&mut self, conn: ConnId) {
        if !self.has_room(conn, 1, 0) {
            return;
        }
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        let FeedPhase::Loading { in_flight, .. } = &mut s.rooms.phase else {
            return;
        };
        *in_flight = true;
        let user = s.user.clone();
        self.request(conn, StorageOp::LoadRooms { user }, Pending::Rooms { conn });
    }

    /// Work a session's feed left for later — a read without budget, a failed read, acks
    /// waiting — is tried again whenever the session sends a frame (at least every
    /// heartbeat interval).
    pub(super) fn retry_rooms(&mut self, conn: ConnId) {
        let Some(feed) = self.feed_mut(conn) else {
            return;
        };
        match feed.phase {
            FeedPhase::Off => return,
            FeedPhase::Loading {
                in_flight: false, ..
            } => self.load_rooms(conn),
            FeedPhase::Loading { .. } => {}
            FeedPhase::Loaded => self.next_read(conn),
        }
        self.flush_marks(conn);
    }

    pub(super) fn rooms_loaded(&mut self, conn: ConnId, r: Result<Vec<MemberRoom>, StorageError>) {
        let Some(feed) = self.feed_mut(conn) else {
            return;
        };
        let FeedPhase::Loading {
            in_flight, stale, ..
        } = &mut feed.phase
        else {
            return;
        };
        *in_flight = false;
        let rooms = match r {
            Ok(rooms) if !*stale => rooms,
            Ok(_) => {
                *stale = false;
                return self.load_rooms(conn);
            }
            // Tried again at the next frame; pushes stay held (bounded by the outbound
            // queue they would otherwise have filled).
            Err(_) => return self.error(conn, RequestKind::Room, ErrorCode::StorageFailed, None),
        };
        let FeedPhase::Loading { held, .. } = std::mem::replace(&mut feed.phase, FeedPhase::Loaded)
        else {
            unreachable!("matched above");
        };
        for MemberRoom { view, read } in &rooms {
            let state = if view.last > *read {
                FeedState::Queued
            } else {
                FeedState::Live
            };
            feed.rooms.insert(
                view.room,
                FeedRoom {
                    floor: *read,
                    state,
                },
            );
        }
        for MemberRoom { view, .. } in &rooms {
            self.rooms.hold(view);
            let frame = self.members_frame(view);
            self.send(conn, &frame);
        }
        for (room, seq, payload) in held {
            self.push_room(conn, room, seq, &payload);
        }
        self.next_read(conn);
    }

    /// A room message for this session, in seq order; see `FeedState` for when it waits.
    fn push_room(&mut self, conn: ConnId, room: u64, seq: u64, payload: &Bytes) {
        let Some(feed) = feed_of(&mut self.conns, conn) else {
            return;
        };
        match &mut feed.phase {
            FeedPhase::Off => {}
            FeedPhase::Loading { held, .. } => held.push((room, seq, payload.clone())),
            FeedPhase::Loaded => {
                let Some(r) = feed.rooms.get_mut(&room) else {
                    return;
                };
                match &mut r.state {
                    FeedState::Live if seq == r.floor + 1 => {
                        r.floor = seq;
                        self.out.push_back(Output::Send {
                            conn,
                            payload: payload.clone(),
                        });
                    }
                    FeedState::Live if seq > r.floor => {
                        // An earlier seq is still on its way: the read brings both, in order.
                        r.state = FeedState::Queued;
                        self.next_read(conn);
                    }
                    FeedState::Live | FeedState::Queued | FeedState::AwaitingAck { .. } => {}
                    FeedState::Reading { held, .. } => held.push((seq, payload.clone())),
                }
            }
        }
    }

    /// Starts the session's one room read, if none is going and a room waits.
    fn next_read(&mut self, conn: ConnId) {
        let room_in_budget = self.has_room(conn, 1, 0);
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        if !matches!(s.rooms.phase, FeedPhase::Loaded)
            || s.rooms.rooms.values().any(|r| {
                matches!(
                    r.state,
                    FeedState::Reading { .. } | FeedState::AwaitingAck { .. }
                )
            })
            || !room_in_budget
        {
            return;
        }
        let Some((&room, r)) = s
            .rooms
            .rooms
            .iter_mut()
            .find(|(_, r)| matches!(r.state, FeedState::Queued))
        else {
            return;
        };
        r.state = FeedState::Reading {
            held: Vec::new(),
            again: false,
        };
        let op = StorageOp::LoadRoom {
            user: s.user.clone(),
            room,
            range: RoomRange::After(r.floor),
            limit: self.mail_page(),
        };
        self.request(conn, op, Pending::RoomMail { conn, room });
    }

    fn mail_page(&self) -> u16 {
        u16::try_from(self.cfg.mailbox_page)
            .unwrap_or(u16::MAX)
            .clamp(1, MAX_HISTORY)
    }

    pub(super) fn room_mail_loaded(
        &mut self,
        conn: ConnId,
        room: u64,
        r: Result<Vec<RoomDelivery>, StorageError>,
    ) {
        let page = usize::from(self.mail_page());
        let max_bytes = self.cfg.mailbox_page_bytes;
        let Some(feed) = feed_of(&mut self.conns, conn) else {
            return;
        };
        let Some(fr) = feed.rooms.get_mut(&room) else {
            return;
        };
        let FeedState::Reading { held, again } = &mut fr.state else {
            return;
        };
        let (held, again) = (std::mem::take(held), *again);
        let items = match r {
            Ok(items) => items,
            Err(StorageError::NoSuchRoom) => {
                // No longer a member: removed through another node of a cluster whose news
                // was lost. The session learns it now.
                fr.state = FeedState::Queued;
                let user = self.conns[&conn].session().map(|s| s.user.clone());
                if let Some(user) = user {
                    self.member_left(&user, room);
                }
                return;
            }
            Err(_) => {
                // The messages stay in the room; the read is tried again at the next frame.
                fr.state = FeedState::Queued;
                return;
            }
        };
        let full = items.len() >= page;
        let mut cut = false;
        let mut bytes = 0u64;
        let mut sent = 0usize;
        for d in items {
            if d.seq <= fr.floor {
                continue;
            }
            let size = d.body.len() as u64;
            if sent > 0 && bytes + size > max_bytes {
                cut = true;
                break;
            }
            bytes += size;
            sent += 1;
            fr.floor = d.seq;
            self.out.push_back(Output::Send {
                conn,
                payload: encode(&ServerMsg::RoomDeliver(d)),
            });
        }
        if (full || cut) && sent > 0 {
            fr.state = FeedState::AwaitingAck { last: fr.floor };
            return;
        }
        fr.state = if again {
            FeedState::Queued
        } else {
            FeedState::Live
        };
        for (seq, payload) in held {
            if !matches!(fr.state, FeedState::Live) {
                break;
            }
            if seq == fr.floor + 1 {
                fr.floor = seq;
                self.out.push_back(Output::Send { conn, payload });
            } else if seq > fr.floor {
                fr.state = FeedState::Queued;
            }
        }
        self.next_read(conn);
    }

    pub(super) fn room_ack(&mut self, conn: ConnId, room: u64, seq: u64) {
        let Some(feed) = self.feed_mut(conn) else {
            return;
        };
        let Some(r) = feed.rooms.get_mut(&room) else {
            return;
        };
        // Nothing above what this session was pushed: a client cannot skip its own cursor
        // past messages it never had.
        let seq = seq.min(r.floor);
        if seq == 0 {
            return;
        }
        if let FeedState::AwaitingAck { last } = r.state
            && seq >= last
        {
            r.state = FeedState::Queued;
        }
        let waiting = feed.reads_waiting.entry(room).or_default();
        *waiting = (*waiting).max(seq);
        self.next_read(conn);
        self.flush_marks(conn);
    }

    fn flush_marks(&mut self, conn: ConnId) {
        let room_in_budget = self.has_room(conn, 1, 0);
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        if s.rooms.marking || s.rooms.reads_waiting.is_empty() || !room_in_budget {
            return;
        }
        s.rooms.marking = true;
        let reads = std::mem::take(&mut s.rooms.reads_waiting)
            .into_iter()
            .collect();
        let op = StorageOp::MarkRoomRead {
            user: s.user.clone(),
            reads,
        };
        self.request(conn, op, Pending::RoomRead { conn });
    }

    /// A mark is answered. A failed one is lost as a crash would lose it: the messages come
    /// again at the next login, and the client machine drops what it already told.
    pub(super) fn room_read_marked(&mut self, conn: ConnId) {
        if let Some(feed) = self.feed_mut(conn) {
            feed.marking = false;
        }
        self.flush_marks(conn);
    }

    pub(super) fn create_room(&mut self, conn: ConnId, owner: UserId, name: String) {
        let name = match room_name(&name) {
            Ok(name) => name,
            Err(_) => return self.error(conn, RequestKind::Room, ErrorCode::InvalidName, None),
        };
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, RequestKind::Room, ErrorCode::Busy, None);
        }
        let op = StorageOp::CreateRoom {
            owner,
            name,
            max_rooms: self.cfg.max_rooms_per_user,
        };
        self.request(conn, op, Pending::RoomCreate { conn });
    }

    pub(super) fn room_created(&mut self, conn: ConnId, r: Result<RoomView, StorageError>) {
        match r {
            Ok(view) => {
                let owner = view.members.first().map(|(u, _)| u.clone());
                if let Some(owner) = owner {
                    self.member_joined(&owner, &view);
                    // The owner's sessions on other nodes.
                    self.publish_room_change(&owner, Some(RoomRole::Owner), &view);
                }
            }
            Err(e) => self.error(conn, RequestKind::Room, room_error(&e), None),
        }
    }

    /// Gives `user`'s sessions the room (the whole member list, and pushes above its last
    /// seq); returns the sessions that got the list.
    fn member_joined(&mut self, user: &UserId, view: &RoomView) -> Vec<ConnId> {
        let mut told = Vec::new();
        for conn in self.sessions_of_user(user) {
            let Some(feed) = self.feed_mut(conn) else {
                continue;
            };
            match &mut feed.phase {
                FeedPhase::Off => {}
                FeedPhase::Loading { stale, .. } => *stale = true,
                FeedPhase::Loaded if feed.rooms.contains_key(&view.room) => {}
                FeedPhase::Loaded => {
                    feed.rooms.insert(
                        view.room,
                        FeedRoom {
                            floor: view.last,
                            state: FeedState::Live,
                        },
                    );
                    self.rooms.hold(view);
                    let frame = self.members_frame(view);
                    self.send(conn, &frame);
                    told.push(conn);
                }
            }
        }
        told
    }

    fn member_left(&mut self, user: &UserId, room: u64) {
        for conn in self.sessions_of_user(user) {
            let Some(feed) = self.feed_mut(conn) else {
                continue;
            };
            match &mut feed.phase {
                FeedPhase::Off => {}
                FeedPhase::Loading { stale, .. } => *stale = true,
                FeedPhase::Loaded => {
                    if feed.rooms.remove(&room).is_some() {
                        feed.reads_waiting.remove(&room);
                        self.rooms.release(room);
                        self.send(conn, &ServerMsg::RoomLeft { room });
                        // The room's read, if it was this one, is free for the next room.
                        self.next_read(conn);
                    }
                }
            }
        }
    }

    pub(super) fn change_room(
        &mut self,
        conn: ConnId,
        by: UserId,
        room: u64,
        user: UserId,
        change: RoomChange,
    ) {
        if !self.users.contains_key(&user) {
            return self.error(conn, RequestKind::Room, ErrorCode::NoSuchUser, None);
        }
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, RequestKind::Room, ErrorCode::Busy, None);
        }
        let op = StorageOp::ChangeRoom {
            by,
            room,
            user: user.clone(),
            change,
            max_members: self.cfg.max_room_members,
            max_rooms: self.cfg.max_rooms_per_user,
        };
        self.request(conn, op, Pending::RoomChange { conn, user, change });
    }

    pub(super) fn room_changed(
        &mut self,
        conn: ConnId,
        user: UserId,
        change: RoomChange,
        r: Result<RoomView, StorageError>,
    ) {
        let view = match r {
            Ok(view) => view,
            Err(e) => return self.error(conn, RequestKind::Room, room_error(&e), None),
        };
        let role = match change {
            RoomChange::Add(_) => view.members.iter().find(|(u, _)| *u == user).map(|m| m.1),
            RoomChange::Remove => None,
        };
        self.room_change_applied(&user, role, &view);
        self.publish_room_change(&user, role, &view);
    }

    /// A committed membership change, through this node or another: `user` joined (or
    /// changed role) with `role`, or left (`None`); `view` is the room after it. The user's
    /// sessions here and the sessions of the members here are told.
    pub(super) fn room_change_applied(
        &mut self,
        user: &UserId,
        role: Option<RoomRole>,
        view: &RoomView,
    ) {
        let user = user.clone();
        self.rooms.set(view);
        let told = match role {
            Some(_) => self.member_joined(&user, view),
            None => {
                self.member_left(&user, view.room);
                Vec::new()
            }
        };
        let entry = RoomMember {
            user: user.clone(),
            role,
            presence: self.presence.announced(&user),
        };
        let diff = encode(&ServerMsg::RoomMembers {
            room: view.room,
            name: view.name.clone(),
            full: false,
            members: vec![entry],
        });
        for (member, _) in &view.members {
            for c in self.sessions_of_user(member) {
                if !told.contains(&c) && self.feed_has(c, view.room) {
                    self.out.push_back(Output::Send {
                        conn: c,
                        payload: diff.clone(),
                    });
                }
            }
        }
    }

    pub(super) fn room_send(
        &mut self,
        conn: ConnId,
        from: UserId,
        id: u64,
        room: u64,
        body: String,
    ) {
        let refusal = if body.len() > self.cfg.max_body {
            Some(ErrorCode::TooLarge)
        } else if !self.has_room(conn, 1, 0) {
            // Not stored: the client sends it again with the same id.
            Some(ErrorCode::Busy)
        } else {
            None
        };
        if let Some(code) = refusal {
            return self.error(conn, RequestKind::Room, code, Some(id));
        }
        let op = StorageOp::StoreRoomMessage {
            room,
            from,
            id,
            body,
        };
        self.request(conn, op, Pending::RoomSend { conn, id });
    }

    pub(super) fn room_message_stored(
        &mut self,
        conn: ConnId,
        id: u64,
        r: Result<RoomStored, StorageError>,
    ) {
        let stored = match r {
            Ok(stored) => stored,
            Err(e) => {
                if self.conns.contains_key(&conn) {
                    self.error(conn, RequestKind::Room, room_error(&e), Some(id));
                }
                return;
            }
        };
        let seq = stored.delivery.seq;
        if self.conns.contains_key(&conn) {
            self.send(conn, &ServerMsg::Sent { id, seq });
        }
        if stored.duplicate {
            // Pushed (or left in the room for its members) the first time.
            return;
        }
        self.publish_room_mail(&stored.delivery, &stored.members);
        self.push_room_message(stored.delivery, &stored.members);
    }

    /// A stored room message, through this node or another: pushed to every session here of
    /// the members at its commit (the users owed it). Results of stores through one node come
    /// back in commit order, so on one node pushes come in seq order; `push_room` makes up
    /// for the interleaving of several nodes.
    pub(super) fn push_room_message(&mut self, delivery: RoomDelivery, members: &[UserId]) {
        let (room, seq) = (delivery.room, delivery.seq);
        let payload = encode(&ServerMsg::RoomDeliver(delivery));
        for member in members {
            for c in self.sessions_of_user(member) {
                self.push_room(c, room, seq, &payload);
            }
        }
    }

    /// News of room messages may have been lost (a cluster's resync): every room of the
    /// session is read above its floor, one read at a time.
    pub(super) fn catch_up_rooms(&mut self, conn: ConnId) {
        let Some(feed) = self.feed_mut(conn) else {
            return;
        };
        if !matches!(feed.phase, FeedPhase::Loaded) {
            // `Loading`: the read in flight may predate the lost news; read it again.
            if let FeedPhase::Loading { stale, .. } = &mut feed.phase {
                *stale = true;
            }
            return;
        }
        for r in feed.rooms.values_mut() {
            match &mut r.state {
                FeedState::Live => r.state = FeedState::Queued,
                FeedState::Reading { again, .. } => *again = true,
                FeedState::Queued | FeedState::AwaitingAck { .. } => {}
            }
        }
        self.next_read(conn);
    }

    pub(super) fn room_history(
        &mut self,
        conn: ConnId,
        user: UserId,
        room: u64,
        before: Option<u64>,
        limit: u16,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.history_loads >= super::messaging::MAX_HISTORY_LOADS_PER_CONN
            || self.history_loads >= super::messaging::MAX_HISTORY_LOADS
            || !self.has_room(conn, 1, 0)
        {
            return self.error(conn, RequestKind::Room, ErrorCode::Busy, None);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.history_loads += 1;
        }
        self.history_loads += 1;
        let op = StorageOp::LoadRoom {
            user,
            room,
            range: RoomRange::Before(before),
            limit: limit.min(MAX_HISTORY),
        };
        self.request(conn, op, Pending::RoomHistory { conn, room });
    }

    pub(super) fn room_history_loaded(
        &mut self,
        conn: ConnId,
        room: u64,
        r: Result<Vec<RoomDelivery>, StorageError>,
    ) {
        self.history_loads -= 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.history_loads -= 1;
        match r {
            Ok(items) => {
                let payload = super::messaging::fitting_page(items, self.cfg.max_frame, |items| {
                    ServerMsg::RoomHistory { room, items }
                });
                self.out.push_back(Output::Send { conn, payload });
            }
            Err(e) => self.error(conn, RequestKind::Room, room_error(&e), None),
        }
    }

    /// A session ended: the rooms it held in the board are released.
    pub(super) fn drop_feed(&mut self, feed: &RoomFeed) {
        if matches!(feed.phase, FeedPhase::Loaded) {
            for &room in feed.rooms.keys() {
                self.rooms.release(room);
            }
        }
    }

    /// Presence changes of room members, batched per session and room like `PresenceDiff`:
    /// one `RoomMembers` change frame per room per session for the whole flush.
    pub(super) fn fan_out_to_rooms(&mut self, changes: &[crate::message::PresenceEntry]) {
        let mut batches: BTreeMap<(ConnId, u64), Vec<RoomMember>> = BTreeMap::new();
        for e in changes {
            let Some(rooms) = self.rooms.of_member.get(&e.user) else {
                continue;
            };
            for room in rooms {
                let r = &self.rooms.rooms[room];
                let role = r.members.get(&e.user).copied();
                for member in r.members.keys() {
                    for &conn in self
                        .users
                        .get(member)
                        .map(|u| &u.sessions)
                        .into_iter()
                        .flatten()
                    {
                        if self.feed_has(conn, *room) {
                            batches.entry((conn, *room)).or_default().push(RoomMember {
                                user: e.user.clone(),
                                role,
                                presence: e.presence,
                            });
                        }
                    }
                }
            }
        }
        for ((conn, room), members) in batches {
            let name = self.rooms.rooms[&room].name.clone();
            let payload = encode(&ServerMsg::RoomMembers {
                room,
                name,
                full: false,
                members,
            });
            self.out.push_back(Output::Send { conn, payload });
        }
    }
}
