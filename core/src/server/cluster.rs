//! The cluster port (CLUSTER.md): this node's state published per user, the peers' states
//! merged into what watchers see, per-node numbering with a resync on a gap, peer deadlines
//! and self-fencing. Off (`Server::cluster` is `None`) on a single node, which then emits no
//! bus output at all.

use super::{Output, Server};
use crate::cluster::{Body, CarriedMail, ClusterConfig, ClusterMsg, Dest, Kick, UserState};
use crate::codec::encode;
use crate::config::DuplicateLogin;
use crate::ids::{ConnId, NodeId, UserId};
use crate::message::{CloseReason, ProfileCard, RoomDelivery, RoomRole, ServerMsg, WhoSession};
use crate::storage::{GroupsDiff, RoomView, Stored};
use crate::time::Instant;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug)]
pub(super) struct Cluster {
    cfg: ClusterConfig,
    /// The last number this node gave a sequenced message in this epoch.
    seq: u64,
    /// When the bus link went down; `None` while it is up.
    link_down_since: Option<Instant>,
    /// Clients closed because the link stayed down; new ones are refused until it is back.
    fenced: bool,
    next_heartbeat: Instant,
    peers: BTreeMap<NodeId, Peer>,
    /// Accounts created through this node in this epoch: snapshots carry them, so a lost
    /// `Registered` still reaches every node.
    registered: Vec<UserId>,
    /// Local users whose state may have changed since the last drain.
    dirty: BTreeSet<UserId>,
    /// What this node last said per user (present users only).
    published: BTreeMap<UserId, UserState>,
    /// Sessions elsewhere the user's current login here replaced, until the user is absent
    /// here.
    kicks: BTreeMap<UserId, Vec<Kick>>,
    /// The newest card of each profile changed through this node in this epoch: snapshots
    /// carry them (one card per user who changed theirs here, so bounded by the directory).
    profiles: BTreeMap<UserId, ProfileCard>,
    /// The highest status clock seen anywhere (Lamport).
    clock: u64,
    /// Sessions whose mailbox read found no room in the work budget, or failed: read at the
    /// next heartbeat.
    owed: BTreeSet<ConnId>,
    /// One node timeout after the link came up (or the node started): every session reads
    /// its mailbox once. A peer this node never heard from since, and that stored messages
    /// meanwhile, had lost its own link (else this node would know it) and so fenced itself,
    /// storing nothing more, by then; it may be dead without any deadline here to say so.
    catch_up_at: Option<Instant>,
    /// A planted bug for the chaos test's oracle to catch: a dead node's users stay.
    #[cfg(test)]
    planted_dead_stay: bool,
}

/// What this node knows of a live peer.
#[derive(Debug)]
struct Peer {
    epoch: u64,
    /// The last of its sequenced messages applied (or the seq its last snapshot was at).
    seq: u64,
    last_heard: Instant,
    /// When this node last asked it for a snapshot, while one is awaited.
    asked: Option<Instant>,
    users: BTreeMap<UserId, Remote>,
    /// The parts of a snapshot received so far, in order.
    assembly: Option<Assembly>,
}

/// A snapshot arriving in parts: applied only whole, since a part alone would make every
/// user it lacks look gone.
#[derive(Debug)]
struct Assembly {
    seq: u64,
    parts: u32,
    /// The next part expected.
    next: u32,
    gathered: Contents,
}

/// What a snapshot (or one part of it) carries.
#[derive(Debug, Default)]
struct Contents {
    users: Vec<UserState>,
    registered: Vec<UserId>,
    profiles: Vec<ProfileCard>,
}

impl Contents {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.registered.is_empty() && self.profiles.is_empty()
    }

    fn extend(&mut self, more: Contents) {
        self.users.extend(more.users);
        self.registered.extend(more.registered);
        self.profiles.extend(more.profiles);
    }
}

#[derive(Debug)]
struct Remote {
    state: UserState,
    /// When this node learned the user is present there (`who`'s `connected_for_ms`).
    since: Instant,
}

impl Cluster {
    fn new(cfg: ClusterConfig, now: Instant) -> Self {
        Cluster {
            cfg,
            seq: 0,
            // Down until the host says the link is up: a node that never reaches the bus
            // fences itself rather than hold clients nobody else can see.
            link_down_since: Some(now),
            fenced: false,
            next_heartbeat: now,
            peers: BTreeMap::new(),
            registered: Vec::new(),
            dirty: BTreeSet::new(),
            published: BTreeMap::new(),
            kicks: BTreeMap::new(),
            profiles: BTreeMap::new(),
            clock: 0,
            owed: BTreeSet::new(),
            catch_up_at: None,
            #[cfg(test)]
            planted_dead_stay: false,
        }
    }

    fn fence_at(&self) -> Option<Instant> {
        match self.link_down_since {
            Some(since) if !self.fenced => Some(since + self.cfg.fence_after()),
            _ => None,
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let peers = self
            .peers
            .values()
            .map(|p| p.last_heard + self.cfg.node_timeout);
        peers
            .chain([self.next_heartbeat])
            .chain(self.fence_at())
            .chain(self.catch_up_at)
            .min()
    }

    pub(super) fn fenced(&self) -> bool {
        self.fenced
    }

    pub(super) fn dirty(&mut self, user: &UserId) {
        self.dirty.insert(user.clone());
    }

    /// The next status stamp for a status set on this node.
    pub(super) fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Every session of `user` other nodes report: the ones a `replace` login ends.
    pub(super) fn kick_all(&mut self, user: &UserId) {
        let mut kicks = Vec::new();
        for (&node, p) in &self.peers {
            if let Some(r) = p.users.get(user) {
                kicks.extend(r.state.sessions.iter().map(|&conn| Kick {
                    node,
                    epoch: p.epoch,
                    conn,
                }));
            }
        }
        if !kicks.is_empty() {
            self.kicks.entry(user.clone()).or_default().extend(kicks);
        }
    }

    /// How many sessions other nodes report for `user`.
    fn sessions_elsewhere(&self, user: &UserId) -> usize {
        self.peers
            .values()
            .filter_map(|p| p.users.get(user))
            .map(|r| r.state.sessions.len())
            .sum()
    }

    /// The sessions of `user` on other live nodes, for `who`.
    pub(super) fn who_sessions(&self, user: &UserId, now: Instant) -> Vec<WhoSession> {
        let mut out = Vec::new();
        for (node, p) in &self.peers {
            if let Some(r) = p.users.get(user) {
                for conn in &r.state.sessions {
                    out.push(WhoSession {
                        node: node.0,
                        conn: conn.0,
                        connected_for_ms: super::millis(now - r.since),
                        idle_ms: 0,
                    });
                }
            }
        }
        out
    }

    fn msg(&self, body: Body) -> ClusterMsg {
        ClusterMsg {
            epoch: self.cfg.epoch,
            seq: self.seq,
            body,
        }
    }

    /// This node's whole state as snapshot parts of at most `snapshot_part_bytes` of users,
    /// accounts and profiles each (at least one entry per part, however large), all at this
    /// `seq`.
    fn snapshot(&self) -> Vec<ClusterMsg> {
        let budget = self.cfg.snapshot_part_bytes;
        let mut chunks = vec![Contents::default()];
        let mut used = 0;
        // The part the next entry of `bytes` goes into: a new one when it would not fit.
        let mut next = |bytes: usize, chunks: &mut Vec<Contents>| -> usize {
            let last = chunks.last().expect("never empty");
            if used + bytes > budget && !last.is_empty() {
                chunks.push(Contents::default());
                used = 0;
            }
            used += bytes;
            chunks.len() - 1
        };
        for state in self.published.values() {
            let at = next(encode(state).len(), &mut chunks);
            chunks[at].users.push(state.clone());
        }
        for user in &self.registered {
            let at = next(encode(user).len(), &mut chunks);
            chunks[at].registered.push(user.clone());
        }
        for card in self.profiles.values() {
            let at = next(encode(card).len(), &mut chunks);
            chunks[at].profiles.push(card.clone());
        }
        let parts = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        chunks
            .into_iter()
            .zip(0..parts)
            .map(|(chunk, part)| {
                self.msg(Body::Snapshot {
                    part,
                    parts,
                    users: chunk.users,
                    registered: chunk.registered,
                    profiles: chunk.profiles,
                })
            })
            .collect()
    }
}

/// Adds one snapshot part to `assembly`; the whole snapshot once its last part is in. A part
/// out of order (one before it was lost) drops what was gathered: the snapshot is asked for
/// again, and a newer snapshot's first part starts afresh.
fn assemble(
    assembly: &mut Option<Assembly>,
    seq: u64,
    (part, parts): (u32, u32),
    contents: Contents,
) -> Option<Contents> {
    if part == 0 {
        *assembly = Some(Assembly {
            seq,
            parts,
            next: 0,
            gathered: Contents::default(),
        });
    }
    let a = assembly.as_mut()?;
    if a.seq != seq || a.parts != parts || a.next != part {
        *assembly = None;
        return None;
    }
    a.gathered.extend(contents);
    a.next += 1;
    if a.next < a.parts {
        return None;
    }
    assembly.take().map(|a| a.gathered)
}

impl Server {
    /// Makes this node one of a cluster (CLUSTER.md). Call once, before any input; the bus
    /// link counts as down until `handle_bus_link(now, true)`.
    pub fn enable_cluster(&mut self, now: Instant, cfg: ClusterConfig) {
        assert!(
            cfg.fence_margin < cfg.node_timeout && !cfg.heartbeat_every.is_zero(),
            "a cluster needs a fence margin below the node timeout and a heartbeat period"
        );
        self.cluster = Some(Cluster::new(cfg, now));
    }

    /// Plants a bug for the chaos test's oracle: peers declared dead keep their users.
    #[cfg(test)]
    pub(super) fn plant_dead_nodes_users_stay(&mut self) {
        if let Some(c) = self.cluster.as_mut() {
            c.planted_dead_stay = true;
        }
    }

    /// The host's bus link came up or went down. Down for `fence_after` fences this node:
    /// every client is closed with `NodeFenced` before the others can declare it dead.
    pub fn handle_bus_link(&mut self, now: Instant, up: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if !up {
            c.link_down_since.get_or_insert(now);
            return;
        }
        if c.link_down_since.take().is_some() {
            c.fenced = false;
            c.catch_up_at = Some(now + c.cfg.node_timeout);
            // Whatever was said while the link was down is lost: ask everyone for their
            // state, and let them notice our own gap from the seq this carries.
            let ask = c.msg(Body::SyncRequest);
            for p in c.peers.values_mut() {
                p.asked = Some(now);
            }
            self.out.push_back(Output::Cluster {
                to: Dest::All,
                msg: ask,
            });
        }
    }

    /// A bus message from node `from`.
    pub fn handle_cluster(&mut self, now: Instant, from: NodeId, msg: ClusterMsg) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if from == self.cfg.node {
            return;
        }
        match c.peers.get(&from) {
            Some(p) if msg.epoch < p.epoch => return,
            // A restart: the old process's sessions ended with it.
            Some(p) if msg.epoch > p.epoch => self.drop_peer(now, from),
            _ => {}
        }
        let c = self.cluster.as_mut().expect("checked above");
        let p = c.peers.entry(from).or_insert_with(|| Peer {
            epoch: msg.epoch,
            seq: 0,
            last_heard: now,
            asked: None,
            users: BTreeMap::new(),
            assembly: None,
        });
        p.last_heard = now;
        let ClusterMsg { seq, body, .. } = msg;
        if body.sequenced() {
            if seq <= p.seq {
                return;
            }
            if seq > p.seq + 1 || p.asked.is_some() {
                // Lost something (or a snapshot is on its way): applying this on top of a
                // hole would make the state wrong; the snapshot brings it.
                return self.ask_sync(now, from);
            }
            p.seq = seq;
            match body {
                Body::User(state) => self.set_remote(now, from, state.user.clone(), Some(state)),
                Body::Registered(user) => self.learn_user(user),
                Body::Mail { to, seq, carried } => match carried {
                    Some(CarriedMail { prev, delivery }) => self.push_mail(&to, prev, delivery),
                    None => self.catch_up(&to, Some(seq)),
                },
                Body::Profile(card) => self.profiles.offer(card),
                Body::RoomMail { delivery, members } => self.push_room_message(delivery, &members),
                _ => unreachable!("invariant: only these bodies are sequenced"),
            }
            return;
        }
        let behind = seq > p.seq;
        match body {
            Body::Heartbeat => {}
            Body::SyncRequest => {
                let c = self.cluster.as_ref().expect("checked above");
                for msg in c.snapshot() {
                    self.out.push_back(Output::Cluster {
                        to: Dest::Node(from),
                        msg,
                    });
                }
            }
            Body::Snapshot {
                part,
                parts,
                users,
                registered,
                profiles,
            } => {
                if seq < p.seq {
                    return;
                }
                let whole = assemble(
                    &mut p.assembly,
                    seq,
                    (part, parts),
                    Contents {
                        users,
                        registered,
                        profiles,
                    },
                );
                let Some(Contents {
                    users,
                    registered,
                    profiles,
                }) = whole
                else {
                    // A part is missing (lost on the bus): `asked` stays, so the next
                    // gap or heartbeat asks again.
                    return;
                };
                p.seq = seq;
                p.asked = None;
                let gone: Vec<UserId> = p
                    .users
                    .keys()
                    .filter(|u| !users.iter().any(|s| &s.user == *u))
                    .cloned()
                    .collect();
                for user in registered {
                    self.learn_user(user);
                }
                for user in gone {
                    self.set_remote(now, from, user, None);
                }
                for state in users {
                    self.set_remote(now, from, state.user.clone(), Some(state));
                }
                for card in profiles {
                    self.profiles.offer(card);
                }
                // The sequenced messages this replaces may have named messages stored for
                // users here: every session reads its mailbox.
                self.catch_up_everyone();
                return;
            }
            Body::EndSessions { user, reason } => self.close_sessions(now, &user, reason),
            Body::Groups {
                user,
                groups,
                moved,
            } => self.tell_groups_changed(&user, &GroupsDiff { groups, moved }),
            Body::RoomChanged {
                room,
                name,
                last,
                members,
                user,
                role,
            } => {
                let view = RoomView {
                    room,
                    name,
                    last,
                    members,
                };
                self.room_change_applied(&user, role, &view);
            }
            Body::User(_)
            | Body::Registered(_)
            | Body::Mail { .. }
            | Body::Profile(_)
            | Body::RoomMail { .. } => {
                unreachable!("handled above")
            }
        }
        if behind {
            self.ask_sync(now, from);
        }
    }

    /// Asks `node` for its snapshot, at most once a heartbeat period while one is awaited.
    fn ask_sync(&mut self, now: Instant, node: NodeId) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let every = c.cfg.heartbeat_every;
        let msg = c.msg(Body::SyncRequest);
        let Some(p) = c.peers.get_mut(&node) else {
            return;
        };
        if p.asked.is_some_and(|at| now < at + every) {
            return;
        }
        p.asked = Some(now);
        self.out.push_back(Output::Cluster {
            to: Dest::Node(node),
            msg,
        });
    }

    /// A user another node knows exists (the shared database has the account).
    fn learn_user(&mut self, user: UserId) {
        if !self.users.contains_key(&user) {
            self.users.insert(user.clone(), super::session::User::new());
            self.presence.joined(user);
        }
    }

    /// Records `node`'s state for `user` (`None`: absent there) and lets presence, status and
    /// replacement follow from it.
    fn set_remote(&mut self, now: Instant, node: NodeId, user: UserId, state: Option<UserState>) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let (me, epoch) = (self.cfg.node, c.cfg.epoch);
        let Some(p) = c.peers.get_mut(&node) else {
            return;
        };
        let was = p.users.get(&user).is_some_and(|r| r.state.is_present());
        let state = state.filter(UserState::is_present);
        let is = state.is_some();
        let mut kicked: Vec<ConnId> = Vec::new();
        let mut adopted = None;
        let mut p_has_sessions = false;
        match state {
            Some(state) => {
                p_has_sessions = !state.sessions.is_empty();
                c.clock = c.clock.max(state.status_clock);
                kicked = state
                    .replaced
                    .iter()
                    .filter(|k| k.node == me && k.epoch == epoch)
                    .map(|k| k.conn)
                    .collect();
                adopted = Some((state.status, (state.status_clock, state.status_node)));
                let since = p.users.get(&user).map_or(now, |r| r.since);
                p.users.insert(user.clone(), Remote { state, since });
            }
            None => {
                p.users.remove(&user);
            }
        }
        if !self.users.contains_key(&user) {
            self.learn_user(user.clone());
        }
        let u = self.users.get_mut(&user).expect("learned above");
        // Two logins on two nodes within one bus round trip, neither knowing of the other:
        // under `replace` the later by Lamport stamp (then node id) wins on both nodes.
        if let Some((_, stamp)) = adopted
            && self.cfg.duplicate_login == DuplicateLogin::Replace
            && stamp > u.status_clock
            && p_has_sessions
        {
            kicked.extend(u.sessions.iter().copied());
        }
        match (was, is) {
            (false, true) => u.elsewhere += 1,
            (true, false) => u.elsewhere -= 1,
            _ => {}
        }
        if let Some((status, stamp)) = adopted
            && stamp > u.status_clock
        {
            u.status_clock = stamp;
            if u.status != status {
                u.status = status;
                self.send_to_user(&user, &ServerMsg::OwnStatus { status });
            }
        }
        self.presence.touch(user.clone());
        for conn in kicked {
            if self.users[&user].sessions.contains(&conn) {
                self.close(now, conn, CloseReason::Replaced);
            }
        }
    }

    /// Forgets everything `node` said: it is dead, or restarted.
    fn drop_peer(&mut self, now: Instant, node: NodeId) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(p) = c.peers.get(&node) else {
            return;
        };
        #[cfg(test)]
        if c.planted_dead_stay {
            c.peers.remove(&node);
            return;
        }
        let users: Vec<UserId> = p.users.keys().cloned().collect();
        for user in users {
            self.set_remote(now, node, user, None);
        }
        if let Some(c) = self.cluster.as_mut() {
            c.peers.remove(&node);
        }
        // Its last `Mail`s may have been lost, and no later number of its will show the
        // gap: every session reads its mailbox.
        self.catch_up_everyone();
    }

    /// Every device session here reads its mailbox, and each of its rooms, above its floor
    /// (news of stored messages may have been lost). A session with a read in flight reads once more after it.
    fn catch_up_everyone(&mut self) {
        let conns = self.conns.ids();
        for conn in conns {
            self.catch_up_session(conn, None);
            self.catch_up_rooms(conn);
        }
    }

    /// A session's mailbox read must wait for room in the work budget (or failed): it is
    /// made at the next heartbeat.
    pub(super) fn owe_catch_up(&mut self, conn: ConnId) {
        if let Some(c) = self.cluster.as_mut() {
            c.owed.insert(conn);
        }
    }

    /// A message to `to` was stored through this node: the nodes holding sessions of `to`
    /// push it or read their mailboxes (`Body::Mail`). Sequenced, so it goes to every node: a
    /// numbered message sent to one would look like a gap to the others.
    pub(super) fn publish_mail(&mut self, stored: &Stored) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.seq += 1;
        let carried = match (stored.prev, &stored.delivery.attachment) {
            (Some(prev), None) => Some(CarriedMail {
                prev,
                delivery: stored.delivery.clone(),
            }),
            _ => None,
        };
        let msg = c.msg(Body::Mail {
            to: stored.to.clone(),
            seq: stored.delivery.seq,
            carried,
        });
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
    }

    /// Peer deadlines, fencing and this node's heartbeat, at `now`.
    pub(super) fn cluster_timeout(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let timeout = c.cfg.node_timeout;
        let dead: Vec<NodeId> = c
            .peers
            .iter()
            .filter(|(_, p)| p.last_heard + timeout <= now)
            .map(|(&n, _)| n)
            .collect();
        if c.fence_at().is_some_and(|at| at <= now) {
            c.fenced = true;
            let conns = self.conns.ids();
            for conn in conns {
                self.close(now, conn, CloseReason::NodeFenced);
            }
        }
        for node in dead {
            self.drop_peer(now, node);
        }
        let c = self.cluster.as_mut().expect("checked above");
        if c.catch_up_at.is_some_and(|at| at <= now) {
            c.catch_up_at = None;
            self.catch_up_everyone();
        }
        let c = self.cluster.as_mut().expect("checked above");
        if c.next_heartbeat <= now {
            c.next_heartbeat = now + c.cfg.heartbeat_every;
            let msg = c.msg(Body::Heartbeat);
            self.out.push_back(Output::Cluster { to: Dest::All, msg });
            for conn in std::mem::take(&mut c.owed) {
                self.catch_up_session(conn, None);
            }
        }
    }

    /// Publishes the state of every local user that changed since the last drain, as one
    /// sequenced message each (nothing for a user whose state came back to what was said).
    pub(super) fn flush_cluster(&mut self) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        for user in std::mem::take(&mut c.dirty) {
            let state = match self.users.get(&user) {
                Some(u) if !u.sessions.is_empty() || u.lingering.is_some() => UserState {
                    user: user.clone(),
                    sessions: u.sessions.iter().copied().collect(),
                    lingering: u.lingering.is_some(),
                    status: u.status,
                    status_clock: u.status_clock.0,
                    status_node: u.status_clock.1,
                    replaced: c.kicks.get(&user).cloned().unwrap_or_default(),
                },
                _ => {
                    c.kicks.remove(&user);
                    let Some(mut last) = c.published.remove(&user) else {
                        continue;
                    };
                    last.sessions.clear();
                    last.lingering = false;
                    last.replaced.clear();
                    last
                }
            };
            if state.is_present() {
                if c.published.get(&user) == Some(&state) {
                    continue;
                }
                c.published.insert(user, state.clone());
            }
            c.seq += 1;
            let msg = c.msg(Body::User(state));
            self.out.push_back(Output::Cluster { to: Dest::All, msg });
        }
    }

    /// An admin ends `user`'s sessions: every other node ends its own with `reason`. How many
    /// sessions the other nodes reported for the user (0 on a single node).
    pub(super) fn end_sessions_elsewhere(&mut self, user: &UserId, reason: CloseReason) -> usize {
        let Some(c) = self.cluster.as_mut() else {
            return 0;
        };
        let msg = c.msg(Body::EndSessions {
            user: user.clone(),
            reason,
        });
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
        c.sessions_elsewhere(user)
    }

    /// A profile was changed through this node: every node announces the card to its
    /// watchers. Sequenced, and kept for snapshots, so a lost one arrives with the resync.
    pub(super) fn publish_profile(&mut self, card: &ProfileCard) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let newer = c
            .profiles
            .get(&card.user)
            .is_none_or(|known| known.rev < card.rev);
        if newer {
            c.profiles.insert(card.user.clone(), card.clone());
        }
        c.seq += 1;
        let msg = c.msg(Body::Profile(card.clone()));
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
    }

    /// `user`'s contact groups changed through this node: the other nodes tell the user's
    /// sessions there.
    pub(super) fn publish_groups(&mut self, user: &UserId, diff: GroupsDiff) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let msg = c.msg(Body::Groups {
            user: user.clone(),
            groups: diff.groups,
            moved: diff.moved,
        });
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
    }

    /// A room message was stored through this node: the nodes holding sessions of its
    /// members push it. Sequenced (so a lost one is noticed and resynced), hence to every node.
    pub(super) fn publish_room_mail(&mut self, delivery: &RoomDelivery, members: &[UserId]) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.seq += 1;
        let msg = c.msg(Body::RoomMail {
            delivery: delivery.clone(),
            members: members.to_vec(),
        });
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
    }

    /// A room's membership changed through this node: the other nodes tell `user`'s sessions
    /// and the members' there.
    pub(super) fn publish_room_change(
        &mut self,
        user: &UserId,
        role: Option<RoomRole>,
        view: &RoomView,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let msg = c.msg(Body::RoomChanged {
            room: view.room,
            name: view.name.clone(),
            last: view.last,
            members: view.members.clone(),
            user: user.clone(),
            role,
        });
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
    }

    /// An account was created through this node: every node learns of it.
    pub(super) fn publish_registered(&mut self, user: &UserId) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.registered.push(user.clone());
        c.seq += 1;
        let msg = c.msg(Body::Registered(user.clone()));
        self.out.push_back(Output::Cluster { to: Dest::All, msg });
    }
}
