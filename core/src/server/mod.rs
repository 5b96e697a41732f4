//! The server state machine.
//!
//! Drive it like quinn-proto's `Connection`: feed inputs with `handle_*` (each with `now`),
//! then drain `poll_output()` until it returns `None`, then sleep until `poll_timeout()` and
//! call `handle_timeout`. Presence changes made by all inputs handled since the last drain go
//! out as one batched frame per watcher when the drain reaches them, so a host that handles a
//! burst of inputs before draining (100 sockets closing at once) sends one diff per watcher.

mod account;
mod admin;
#[cfg(test)]
mod admin_tests;
mod budget;
mod cluster;
#[cfg(test)]
mod cluster_tests;
mod conns;
mod contacts;
mod counters;
mod deadline;
mod groups;
mod guard;
mod messaging;
mod pings;
mod presence;
mod profiles;
mod rooms;
#[cfg(test)]
mod rooms_tests;
mod session;
#[cfg(test)]
mod tests;
mod transfers;
#[cfg(test)]
mod transfers_tests;
mod vec_set;

use crate::cluster::{ClusterMsg, Dest};
use crate::codec::{decode, encode};
use crate::config::ServerConfig;
use crate::ids::{ConnId, RequestId, SessionLocation, UserId};
use crate::message::{
    ClientMsg, CloseReason, Credential, ErrorCode, MAGIC, MAX_CLIENT_NAME, OLDEST_PROTOCOL_VERSION,
    PROTOCOL_VERSION, RequestKind, ServerMsg, WhoEntry, WhoSession,
};
use crate::storage::{GroupChange, RoomChange, StorageOp, StorageResult};
use crate::time::{Duration, Instant};
use budget::{Charge, InFlight};
use bytes::Bytes;
use conns::Conns;
pub use counters::{Counters, SERVER_MSG_KINDS};
use deadline::DeadlineQueue;
use guard::{LoginGuard, RegisterGuard, admit_frame};
pub use pings::{IN_PLACE_GAP, InlinePong, may_keep_in_place, ping_nonce, pong};
use presence::PresenceBoard;
use profiles::ProfileBoard;
use session::{Conn, Phase, Role, User};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use transfers::{Offer, Transfers};

/// How far ahead of `now` a wake-up re-files stale heartbeat entries (`handle_timeout`). A
/// second turns an idle host's ~500 wake-ups a second for 19,900 pinging clients into about
/// one, for the same heap operations; any value keeps every deadline exact.
const HEARTBEAT_LOOKAHEAD: Duration = Duration::from_secs(1);

/// An effect for the host to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write this payload to the connection as one frame of its transport.
    Send { conn: ConnId, payload: Bytes },
    /// Close the connection once the frames queued before this are written. The core has
    /// already forgotten it; a later `handle_closed` for it is ignored.
    Close { conn: ConnId, reason: CloseReason },
    /// Perform a storage request and report it with `handle_storage(id, result)`.
    Storage { id: RequestId, op: StorageOp },
    /// Something worth a log line or a metric.
    Event(ServerEvent),
    /// Publish this on the cluster bus (cluster mode only; CLUSTER.md).
    Cluster { to: Dest, msg: ClusterMsg },
    /// The handshake is done: from now on the host may answer `conn`'s `Ping`s itself and
    /// hand over when it last heard from it once its deadline comes due
    /// (`handle_timeout_with`; `pings.rs` says when an answer in place keeps the protocol's
    /// order). A host that ignores this loses nothing: every `Ping` it passes on is answered
    /// here.
    AnswerPings { conn: ConnId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    SessionStarted {
        user: UserId,
        at: SessionLocation,
        /// An agent's session (`AgentLogin`): outside presence and the duplicate-login policy.
        agent: bool,
    },
    SessionEnded {
        user: UserId,
        at: SessionLocation,
        reason: SessionEnd,
    },
    /// A login was refused for its credential; `failures` counts the user's recent password
    /// failures (0 for a token).
    LoginFailed {
        user: UserId,
        addr: Option<IpAddr>,
        failures: u32,
    },
    /// A login was refused unchecked, because of earlier failures.
    LoginThrottled { user: UserId, addr: Option<IpAddr> },
    /// A registration was refused: its address registered too many accounts lately.
    RegisterThrottled { user: UserId, addr: IpAddr },
    /// A new account, from `addr` when the host knows it (an operator's audit trail).
    Registered { user: UserId, addr: Option<IpAddr> },
    /// A user changed their password (every resume token of theirs is now void).
    PasswordChanged { user: UserId },
    /// An administrator kicked, banned or unbanned `user` (`request` says which; a ban or
    /// unban is stored), ending `sessions` sessions: the audit trail.
    AdminAction {
        admin: UserId,
        request: RequestKind,
        user: UserId,
        sessions: u32,
    },
    /// A login with the right credential was refused: the account is banned.
    LoginBanned { user: UserId, addr: Option<IpAddr> },
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    LoggedOut,
    /// The peer closed or reset the socket.
    ConnectionLost,
    /// The server closed it.
    Closed(CloseReason),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::LoggedOut => f.write_str("logged out"),
            SessionEnd::ConnectionLost => f.write_str("connection lost"),
            SessionEnd::Closed(reason) => write!(f, "{reason}"),
        }
    }
}

/// Counts for the console and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub connections: usize,
    pub sessions: usize,
    pub online_users: usize,
    pub registered_users: usize,
    pub pending_storage: usize,
    /// A cluster node cut off from the bus too long: it has closed its clients and lets
    /// nobody in until the bus is back (CLUSTER.md, self-fencing). Not ready.
    pub fenced: bool,
}

/// What a storage request was for, so its result can finish the job.
#[derive(Debug)]
enum Pending {
    Register {
        conn: ConnId,
        user: UserId,
    },
    Login {
        conn: ConnId,
        user: UserId,
        role: Role,
        /// A password, not a token, was tried.
        password: bool,
    },
    ChangePassword {
        conn: ConnId,
        user: UserId,
    },
    SetContacts {
        conn: ConnId,
        user: UserId,
        /// Which request it answers (`AddContact`, `RemoveContact`, `ChangeContacts`).
        kind: RequestKind,
        add: Vec<UserId>,
        remove: Vec<UserId>,
        /// Additions skipped (not registered users), reported in the answer.
        rejected: Vec<UserId>,
    },
    Send {
        conn: ConnId,
        id: u64,
    },
    Mailbox {
        conn: ConnId,
    },
    History {
        conn: ConnId,
        with: UserId,
    },
    MarkDelivered {
        conn: ConnId,
    },
    ChangeGroups {
        conn: ConnId,
        user: UserId,
        /// Which request it answers (`CreateGroup`, `EditGroup`, `MoveContacts`).
        kind: RequestKind,
    },
    SetProfile {
        conn: ConnId,
        /// `SetProfile` or `SetAvatar`.
        kind: RequestKind,
    },
    GetProfile {
        conn: ConnId,
    },
    /// A version-2 login's cards, read before its mailbox.
    LoginProfiles {
        conn: ConnId,
        user: UserId,
    },
    /// Cards for `user`'s sessions, sent in a `ProfileDiff`: of contacts just added (scope
    /// `Contacts`), or every card a session missed (`retry_profiles`).
    IntroducedProfiles {
        user: UserId,
    },
    RoomCreate {
        conn: ConnId,
    },
    RoomChange {
        conn: ConnId,
        user: UserId,
        change: RoomChange,
    },
    RoomSend {
        conn: ConnId,
        id: u64,
    },
    Rooms {
        conn: ConnId,
    },
    RoomMail {
        conn: ConnId,
        room: u64,
    },
    RoomHistory {
        conn: ConnId,
        room: u64,
    },
    RoomRead {
        conn: ConnId,
    },
    SetBanned {
        conn: ConnId,
        /// Who asked, for the audit trail.
        admin: UserId,
        user: UserId,
        banned: bool,
    },
}

#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    conns: Conns,
    /// The directory: every registered user.
    users: BTreeMap<UserId, User>,
    /// How many users are online — with a session, or inside their offline grace.
    online: usize,
    heartbeats: DeadlineQueue<ConnId>,
    graces: DeadlineQueue<UserId>,
    /// Storage requests not yet answered, with the budget places each holds.
    pending: BTreeMap<RequestId, (Charge, Pending)>,
    next_request: u64,
    /// Storage requests and hashes in flight on the whole server (see `budget`).
    in_flight: InFlight,
    presence: PresenceBoard,
    profiles: ProfileBoard,
    /// Rooms loaded by some session here (`rooms.rs`).
    rooms: rooms::RoomBoard,
    /// Direct transfers in progress (`transfers`).
    transfers: Transfers,
    logins: LoginGuard,
    counters: Counters,
    registrations: RegisterGuard,
    /// `History` requests of every connection waiting for storage.
    history_loads: usize,
    /// The cluster port, when this node is one of several (`enable_cluster`).
    cluster: Option<cluster::Cluster>,
    out: VecDeque<Output>,
}

impl Server {
    /// A server over a directory of registered users (from storage, at start).
    pub fn new(cfg: ServerConfig, users: impl IntoIterator<Item = UserId>) -> Self {
        Server {
            cfg,
            conns: Conns::default(),
            users: users.into_iter().map(|u| (u, User::new())).collect(),
            online: 0,
            heartbeats: DeadlineQueue::default(),
            graces: DeadlineQueue::default(),
            pending: BTreeMap::new(),
            next_request: 0,
            in_flight: InFlight::default(),
            presence: PresenceBoard::default(),
            profiles: ProfileBoard::default(),
            rooms: rooms::RoomBoard::default(),
            transfers: Transfers::default(),
            logins: LoginGuard::default(),
            counters: Counters::default(),
            registrations: RegisterGuard::default(),
            history_loads: 0,
            cluster: None,
            out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// A new connection from `addr` (if the transport knows it: failed logins and
    /// registrations from it are counted against it). `conn` must never have been used before.
    pub fn handle_connect(&mut self, now: Instant, conn: ConnId, addr: Option<IpAddr>) {
        if self.conns.contains_key(&conn) {
            return;
        }
        let mut c = Conn::new(now, addr);
        c.armed = c.deadline(&self.cfg);
        self.heartbeats.push(c.armed, conn);
        self.conns.insert(conn, c);
        if self.cluster.as_ref().is_some_and(|c| c.fenced()) {
            // Cut off from the cluster: whoever logged in here would be seen by no one.
            self.close(now, conn, CloseReason::NodeFenced);
        }
    }

    /// One frame payload (length prefix removed) from `conn`.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, payload: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_seen = now;
        self.counters.frame_in(payload.len());
        if !admit_frame(&mut c.frame_tat, now, &self.cfg.frame_rate) {
            return self.close(now, conn, CloseReason::Flooding);
        }
        let msg = match decode::<ClientMsg>(payload) {
            Ok(msg) => msg,
            Err(_) => return self.close(now, conn, CloseReason::Malformed),
        };
        if !matches!(msg, ClientMsg::Ping { .. }) {
            c.last_active = now;
        }
        // A request the agreed version does not have is what its server could not decode.
        if msg.since() > OLDEST_PROTOCOL_VERSION && !c.speaks(msg.since()) {
            return self.close(now, conn, CloseReason::Malformed);
        }
        match &c.phase {
            Phase::AwaitHello => self.on_hello(now, conn, msg),
            Phase::Ready { .. } => self.on_anonymous(now, conn, msg),
            Phase::Session(_) => self.on_session(now, conn, msg),
        }
        // Deadlines normally only move later, which the lazy queue absorbs; the end of the
        // handshake can move one earlier (heartbeat timeout shorter than the handshake's).
        if let Some(c) = self.conns.get_mut(&conn) {
            let deadline = c.deadline(&self.cfg);
            if deadline < c.armed {
                c.armed = deadline;
                self.heartbeats.push(deadline, conn);
            }
        }
    }

    /// The transport heard from `conn` without a frame: a WebSocket Pong answering the
    /// host's Ping (PROTOCOL.md §1.3), or the peer's own Ping. It is life, like a frame: the
    /// connection's heartbeat deadline moves to `now + heartbeat_timeout`. It costs a place in
    /// the frame budget, so a flood of control messages is `Flooding` like a flood of frames.
    /// Like a frame, it leaves the deadline queue alone (it only moves the deadline later),
    /// and before `Hello` the handshake deadline still applies.
    pub fn handle_alive(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_seen = now;
        if !admit_frame(&mut c.frame_tat, now, &self.cfg.frame_rate) {
            self.close(now, conn, CloseReason::Flooding);
        }
    }

    /// The peer closed or reset the connection, or it failed.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.counters.connections_lost += 1;
            self.forget(now, conn, c, SessionEnd::ConnectionLost);
        }
    }

    /// The host ended the connection for `reason` — a frame over the limit, a reader too
    /// slow for its queue, a flood — after telling the peer, if it still could. The session
    /// ends as if the core had closed it.
    pub fn handle_aborted(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        if let Some(c) = self.conns.remove(&conn) {
            self.counters.closed(reason);
            self.forget(now, conn, c, SessionEnd::Closed(reason));
        }
    }

    /// The host finished a storage request.
    pub fn handle_storage(&mut self, now: Instant, id: RequestId, result: StorageResult) {
        let Some((charge, pending)) = self.pending.remove(&id) else {
            return;
        };
        // Released first, so a result that makes the next request (a login's mailbox read)
        // finds its place free.
        self.release(charge);
        match (pending, result) {
            (Pending::Register { conn, user }, StorageResult::Registered(r)) => {
                self.registered(conn, user, r)
            }
            (
                Pending::Login {
                    conn,
                    user,
                    role,
                    password,
                },
                StorageResult::Authenticated(mut r),
            ) => {
                if let Ok(account) = &mut r {
                    // The ban may have committed after this login's credential was read.
                    account.banned |= self.ban_known(&user, id);
                }
                self.authenticated(now, conn, user, role, password, r)
            }
            (Pending::ChangePassword { conn, user }, StorageResult::PasswordChanged(r)) => {
                self.password_changed(conn, user, r)
            }
            (pending @ Pending::SetContacts { .. }, StorageResult::ContactsSet(r)) => {
                self.contacts_set(pending, r)
            }
            (Pending::Send { conn, id }, StorageResult::MessageStored(r)) => {
                self.message_stored(conn, id, r)
            }
            (Pending::Mailbox { conn }, StorageResult::MailboxLoaded(r)) => {
                self.mailbox_loaded(conn, r)
            }
            (Pending::History { conn, with }, StorageResult::HistoryLoaded(r)) => {
                self.history_loaded(conn, with, r)
            }
            (Pending::MarkDelivered { conn }, StorageResult::DeliveredMarked(_)) => {
                self.delivered_marked(conn)
            }
            (
                Pending::SetBanned {
                    conn,
                    admin,
                    user,
                    banned,
                },
                StorageResult::BannedSet(r),
            ) => self.banned_set(now, conn, admin, user, banned, r),
            (Pending::ChangeGroups { conn, user, kind }, StorageResult::GroupsChanged(r)) => {
                self.groups_changed(conn, user, kind, r)
            }
            (Pending::SetProfile { conn, kind }, StorageResult::ProfileSet(r)) => {
                self.profile_set(conn, kind, r)
            }
            (Pending::GetProfile { conn }, StorageResult::ProfileLoaded(r)) => {
                self.profile_loaded(conn, r)
            }
            (Pending::LoginProfiles { conn, user }, StorageResult::ProfilesLoaded(r)) => {
                self.login_profiles_loaded(conn, user, r)
            }
            (Pending::IntroducedProfiles { user }, StorageResult::ProfilesLoaded(r)) => {
                self.introduced_profiles_loaded(user, r)
            }
            (Pending::RoomCreate { conn }, StorageResult::RoomCreated(r)) => {
                self.room_created(conn, r)
            }
            (Pending::RoomChange { conn, user, change }, StorageResult::RoomChanged(r)) => {
                self.room_changed(conn, user, change, r)
            }
            (Pending::RoomSend { conn, id }, StorageResult::RoomMessageStored(r)) => {
                self.room_message_stored(conn, id, r)
            }
            (Pending::Rooms { conn }, StorageResult::RoomsLoaded(r)) => self.rooms_loaded(conn, r),
            (Pending::RoomMail { conn, room }, StorageResult::RoomLoaded(r)) => {
                self.room_mail_loaded(conn, room, r)
            }
            (Pending::RoomHistory { conn, room }, StorageResult::RoomLoaded(r)) => {
                self.room_history_loaded(conn, room, r)
            }
            (Pending::RoomRead { conn }, StorageResult::RoomReadMarked(_)) => {
                self.room_read_marked(conn)
            }
            // The storage contract answers each request with its own kind; anything else is
            // a backend bug, and going on would attach the wrong data to a session.
            (pending, result) => {
                unreachable!("invariant: storage result {result:?} does not answer {pending:?}")
            }
        }
    }

    /// Fires every deadline due at `now`: dead connections and expired offline graces.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.handle_timeout_with(now, |_| None);
    }

    /// `handle_timeout` for a host that answers pings in place (`Output::AnswerPings`):
    /// `heard(conn)` is when it last heard from `conn` without passing it on, if it did. It
    /// is asked only for connections whose deadline is due or nearly so, which is the point:
    /// a connection that pings every interval costs the core one look per heartbeat timeout
    /// instead of a frame per ping. What it hands over counts as a frame would for the
    /// deadline and for the session's postponed work (`retry_rooms`, `retry_profiles`), but
    /// not for `idle_ms` nor for the frame budget (`pings.rs`).
    pub fn handle_timeout_with(&mut self, now: Instant, heard: impl Fn(ConnId) -> Option<Instant>) {
        let mut woke = Vec::new();
        // Stale entries due soon are re-filed now, in this wake-up, instead of each waking the
        // host on its own: a connection that pings every 30 s leaves one stale entry per
        // period, and 19,900 of them woke an idle host ~500 times a second only to push
        // entries again (measured once the first deadlines came due, 10 s windows: 10,500–
        // 10,700 `epoll_wait`s without the look-ahead, 5,150 with it, for ~6,600 pings).
        // Re-filing early changes no deadline: an entry only moves to its connection's real
        // deadline, which is later than the entry, and a live entry (one that would fire)
        // stops the look-ahead, so the next wake-up is at it.
        let ahead = now + HEARTBEAT_LOOKAHEAD;
        while let Some((at, &conn)) = self.heartbeats.peek()
            && at <= ahead
        {
            let Some(c) = self.conns.get_mut(&conn) else {
                self.heartbeats.pop();
                continue;
            };
            if at != c.armed {
                // Superseded by an earlier entry (the end of a handshake), already handled.
                self.heartbeats.pop();
                continue;
            }
            if let Some(heard) = heard(conn)
                && heard > c.last_seen
            {
                c.last_seen = heard;
                woke.push(conn);
            }
            let deadline = c.deadline(&self.cfg);
            if deadline > now && deadline <= at {
                break;
            }
            self.heartbeats.pop();
            if deadline > now {
                c.armed = deadline;
                self.heartbeats.push(deadline, conn);
                continue;
            }
            let reason = match c.phase {
                Phase::AwaitHello => CloseReason::HandshakeTimeout,
                _ => CloseReason::HeartbeatTimeout,
            };
            self.close(now, conn, reason);
        }
        for conn in woke {
            self.retry_rooms(conn);
            self.retry_profiles(conn);
        }
        self.logins.expire(now);
        self.registrations.expire(now);
        while let Some((_, user)) = self.graces.pop_due(now) {
            let Some(u) = self.users.get_mut(&user) else {
                continue;
            };
            // A stale entry: the user came back, or died again later with a new deadline.
            if u.sessions.is_empty() && u.lingering.is_some_and(|until| until <= now) {
                u.lingering = None;
                self.online -= 1;
                self.changed(user);
            }
        }
        self.cluster_timeout(now);
    }

    /// The next instant `handle_timeout` has work (possibly none, if that entry went stale).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.heartbeats.next(),
            self.graces.next(),
            self.logins.next_expiry(),
            self.registrations.next_expiry(),
            self.cluster.as_ref().and_then(|c| c.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        if self.out.is_empty() {
            self.flush_cluster();
            self.flush_presence();
            self.flush_profiles();
        }
        let out = self.out.pop_front()?;
        self.count(&out);
        Some(out)
    }

    /// Totals since start (`counters.rs`).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Every output passes here once, on its way to the host.
    fn count(&mut self, out: &Output) {
        let c = &mut self.counters;
        match out {
            Output::Send { payload, .. } => c.frame_out(payload),
            Output::Close { reason, .. } => c.closed(*reason),
            Output::Event(ServerEvent::SessionStarted { agent: false, .. }) => c.logins += 1,
            Output::Event(ServerEvent::SessionStarted { agent: true, .. }) => c.agent_logins += 1,
            Output::Event(ServerEvent::LoginFailed { .. }) => c.logins_failed += 1,
            Output::Event(ServerEvent::LoginThrottled { .. }) => c.logins_throttled += 1,
            Output::Event(ServerEvent::Registered { .. }) => c.registrations += 1,
            _ => {}
        }
    }

    /// Tells every connection the server is going away and forgets them all. Watchers are
    /// going too, so no offline announcements are made; a restarted server starts with
    /// everyone offline, so there are no ghosts.
    pub fn shutdown(&mut self, now: Instant) {
        let conns = self.conns.ids();
        for conn in conns {
            self.close(now, conn, CloseReason::ServerShutdown);
        }
        self.presence.clear();
        self.profiles = ProfileBoard::default();
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len(),
            sessions: self.conns.count(|c| c.session().is_some()),
            online_users: self.online,
            registered_users: self.users.len(),
            pending_storage: self.pending.len(),
            fenced: self.cluster.as_ref().is_some_and(|c| c.fenced()),
        }
    }

    /// Online users with their sessions, sorted by name: the console's `who` and the admin
    /// query share this. In a cluster, the sessions of every live node.
    pub fn who(&self, now: Instant) -> Vec<WhoEntry> {
        self.users
            .iter()
            .filter(|(_, u)| u.is_online() || u.elsewhere > 0)
            .map(|(name, u)| WhoEntry {
                user: name.clone(),
                status: u.status,
                sessions: u
                    .sessions
                    .iter()
                    .filter_map(|id| {
                        let c = self.conns.get(id)?;
                        let since = c.session()?.since;
                        Some(WhoSession {
                            node: self.cfg.node.0,
                            conn: id.0,
                            connected_for_ms: millis(now - since),
                            idle_ms: millis(now - c.last_active),
                        })
                    })
                    .chain(self.cluster.iter().flat_map(|c| c.who_sessions(name, now)))
                    .collect(),
            })
            .collect()
    }

    /// Where `user`'s sessions live.
    pub fn sessions_of(&self, user: &UserId) -> Vec<SessionLocation> {
        self.users
            .get(user)
            .map(|u| u.sessions.iter().map(|&conn| self.location(conn)).collect())
            .unwrap_or_default()
    }

    /// The directory's copy of `user`'s name, if registered. Names held for long (sessions,
    /// contact lists, the watcher index) are taken from here, so each name is one allocation
    /// however many places hold it.
    fn interned(&self, user: &UserId) -> Option<UserId> {
        self.users.get_key_value(user).map(|(name, _)| name.clone())
    }

    fn location(&self, conn: ConnId) -> SessionLocation {
        SessionLocation {
            node: self.cfg.node,
            conn,
        }
    }

    fn on_hello(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        let ClientMsg::Hello {
            magic,
            version,
            client,
        } = msg
        else {
            return self.close(now, conn, CloseReason::BadHandshake);
        };
        if magic != MAGIC || client.len() > MAX_CLIENT_NAME {
            return self.close(now, conn, CloseReason::BadHandshake);
        }
        // `version` is the newest the client speaks: the connection speaks the newest both
        // know, and the server sends it only what that version defines (`Conn::speaks`).
        if version < OLDEST_PROTOCOL_VERSION {
            return self.close(now, conn, CloseReason::UnsupportedVersion);
        }
        let version = version.min(PROTOCOL_VERSION);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Ready { login: None };
            c.version = version;
        }
        let cfg = &self.cfg;
        let welcome = ServerMsg::Welcome {
            version,
            heartbeat_interval_ms: millis_u32(cfg.heartbeat_interval),
            heartbeat_timeout_ms: millis_u32(cfg.heartbeat_timeout),
            max_frame: cfg.max_frame,
            max_attachment: cfg.max_attachment,
            max_body: cfg.max_body.try_into().unwrap_or(u32::MAX),
            scope: cfg.scope,
            max_contacts: cfg.max_contacts.try_into().unwrap_or(u32::MAX),
            frame_rate: cfg.frame_rate.per_second,
            frame_burst: cfg.frame_rate.burst,
        };
        self.send(conn, &welcome);
        self.out.push_back(Output::AnswerPings { conn });
    }

    /// Handshake done, not logged in.
    fn on_anonymous(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        match msg {
            ClientMsg::Register { user, password } => self.register(now, conn, user, password),
            ClientMsg::Login {
                user,
                credential,
                status,
            } => self.login(now, conn, user, credential, Role::Device(status)),
            ClientMsg::AgentLogin { user, password } => {
                self.login(now, conn, user, Credential::Password(password), Role::Agent)
            }
            ClientMsg::Ping { nonce } => self.send(conn, &ServerMsg::Pong { nonce }),
            ClientMsg::Hello { .. } => self.close(now, conn, CloseReason::BadHandshake),
            ClientMsg::Send { id, .. } => {
                self.error(conn, RequestKind::Send, ErrorCode::NotLoggedIn, Some(id))
            }
            ClientMsg::RoomSend { id, .. } => {
                self.error(conn, RequestKind::Room, ErrorCode::NotLoggedIn, Some(id))
            }
            other => self.error(conn, other.kind(), ErrorCode::NotLoggedIn, None),
        }
    }

    fn on_session(&mut self, now: Instant, conn: ConnId, msg: ClientMsg) {
        let Some(session) = self.conns.get(&conn).and_then(|c| c.session()) else {
            return;
        };
        if session.agent
            && matches!(
                msg,
                ClientMsg::Ack { .. }
                    | ClientMsg::RoomAck { .. }
                    | ClientMsg::SetStatus { .. }
                    | ClientMsg::AddContact { .. }
                    | ClientMsg::RemoveContact { .. }
                    | ClientMsg::ChangeContacts { .. }
                    | ClientMsg::CreateGroup { .. }
                    | ClientMsg::EditGroup { .. }
                    | ClientMsg::MoveContacts { .. }
            )
        {
            // An agent has no presence to set, gets no deliveries to ack, and is not where
            // the user's contact list (which drives the user's presence) is kept.
            return self.error(conn, msg.kind(), ErrorCode::Forbidden, None);
        }
        // Room work and profile cards left for later wait for the session's next frame.
        self.retry_rooms(conn);
        self.retry_profiles(conn);
        if !matches!(
            msg,
            ClientMsg::Ack { .. } | ClientMsg::Ping { .. } | ClientMsg::RoomAck { .. }
        ) {
            self.flush_waiting_acks(conn);
        }
        // A `Ping`, by far the commonest frame, is answered without the user's name: cloning
        // it writes its reference count, a cache miss per ping on an idle server (a third of
        // `handle_frame`'s own samples with 19,900 idle clients, by `perf annotate`).
        if let ClientMsg::Ping { nonce } = msg {
            return self.send(conn, &ServerMsg::Pong { nonce });
        }
        let Some(user) = self
            .conns
            .get(&conn)
            .and_then(|c| c.session())
            .map(|s| s.user.clone())
        else {
            return;
        };
        match msg {
            ClientMsg::Ping { .. } => unreachable!("a Ping is answered above"),
            ClientMsg::CreateRoom { name } => self.create_room(conn, user, name),
            ClientMsg::RoomInvite {
                room,
                user: member,
                role,
            } => self.change_room(conn, user, room, member, RoomChange::Add(role)),
            ClientMsg::RoomRemove { room, user: member } => {
                self.change_room(conn, user, room, member, RoomChange::Remove)
            }
            ClientMsg::RoomSend { id, room, body } => self.room_send(conn, user, id, room, body),
            ClientMsg::RoomAck { room, seq } => self.room_ack(conn, room, seq),
            ClientMsg::RoomHistory {
                room,
                before,
                limit,
            } => self.room_history(conn, user, room, before, limit),
            ClientMsg::Send {
                id,
                to,
                body,
                attachment,
            } => self.submit_message(conn, user, id, to, body, attachment),
            ClientMsg::Ack { seqs } => self.ack(conn, user, seqs),
            ClientMsg::SetStatus { status } => self.set_status(user, status),
            ClientMsg::AddContact { user: contact } => {
                self.change_contacts(conn, user, RequestKind::AddContact, vec![contact], vec![])
            }
            ClientMsg::RemoveContact { user: contact } => self.change_contacts(
                conn,
                user,
                RequestKind::RemoveContact,
                vec![],
                vec![contact],
            ),
            ClientMsg::ChangeContacts { add, remove } => {
                self.change_contacts(conn, user, RequestKind::ChangeContacts, add, remove)
            }
            ClientMsg::CreateGroup { name } => self.change_groups(
                conn,
                user,
                RequestKind::CreateGroup,
                GroupChange::Create { name },
            ),
            ClientMsg::EditGroup { group, edit } => self.change_groups(
                conn,
                user,
                RequestKind::EditGroup,
                groups::edit(group, edit),
            ),
            ClientMsg::MoveContacts { contacts, group } => self.change_groups(
                conn,
                user,
                RequestKind::MoveContacts,
                GroupChange::File { contacts, group },
            ),
            ClientMsg::ChangePassword { old, new } => self.change_password(conn, user, old, new),
            ClientMsg::History {
                with,
                before,
                limit,
            } => self.history(conn, user, with, before, limit),
            ClientMsg::Logout => {
                self.close_with(now, conn, CloseReason::LoggedOut, SessionEnd::LoggedOut)
            }
            ClientMsg::Register {
                user: new,
                password,
            } => self.register(now, conn, new, password),
            ClientMsg::AdminWho => self.admin_who(now, conn, &user),
            ClientMsg::AdminKick { user: target } => self.admin_kick(now, conn, user, target),
            ClientMsg::AdminBan { user: target } => self.admin_ban(conn, user, target, true),
            ClientMsg::AdminUnban { user: target } => self.admin_ban(conn, user, target, false),
            ClientMsg::SetProfile {
                display_name,
                signature,
            } => self.set_profile(conn, user, display_name, signature),
            ClientMsg::SetAvatar { image } => self.set_avatar(conn, user, image),
            ClientMsg::GetProfile {
                user: target,
                avatar,
            } => self.get_profile(conn, user, target, avatar),
            ClientMsg::OfferFile {
                transfer,
                to,
                name,
                size,
                sha256,
                direct,
            } => self.offer_file(
                conn,
                user,
                Offer {
                    transfer,
                    to,
                    name,
                    size,
                    sha256,
                    direct,
                },
            ),
            ClientMsg::AnswerFile {
                from,
                transfer,
                accept,
                offset,
            } => self.answer_file(conn, user, (from, transfer), accept, offset),
            ClientMsg::RelayFile {
                from,
                transfer,
                offset,
            } => self.relay_file(conn, (from, transfer), offset),
            ClientMsg::TransferChunk {
                transfer,
                offset,
                data,
            } => self.transfer_chunk(conn, user, transfer, offset, data),
            ClientMsg::TransferAck {
                from,
                transfer,
                received,
            } => self.transfer_ack(conn, (from, transfer), received),
            ClientMsg::TransferDone {
                from,
                transfer,
                verified,
            } => self.transfer_done(conn, (from, transfer), verified),
            ClientMsg::CancelFile { sender, transfer } => {
                self.cancel_file(conn, user, (sender, transfer))
            }
            ClientMsg::Login { .. } | ClientMsg::AgentLogin { .. } => {
                self.error(conn, msg.kind(), ErrorCode::AlreadyLoggedIn, None)
            }
            ClientMsg::Hello { .. } => self.close(now, conn, CloseReason::BadHandshake),
        }
    }

    /// Closes a connection for `reason`, telling the peer why first.
    fn close(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        self.close_with(now, conn, reason, SessionEnd::Closed(reason));
    }

    fn close_with(&mut self, now: Instant, conn: ConnId, reason: CloseReason, end: SessionEnd) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.out.push_back(Output::Send {
            conn,
            payload: bye(reason),
        });
        self.out.push_back(Output::Close { conn, reason });
        self.forget(now, conn, c, end);
    }

    /// The single path every session end takes — logout, close, timeout, replacement — so
    /// presence cannot differ by how a client went away.
    fn forget(&mut self, now: Instant, conn: ConnId, c: Conn, end: SessionEnd) {
        let Phase::Session(session) = c.phase else {
            return;
        };
        self.drop_feed(&session.rooms);
        // Before the agent check: an agent may offer files too.
        self.transfers_conn_gone(conn);
        let user = session.user;
        let at = self.location(conn);
        self.out.push_back(Output::Event(ServerEvent::SessionEnded {
            user: user.clone(),
            at,
            reason: end,
        }));
        if session.agent {
            // Never one of the user's sessions: its end changes nothing anyone sees.
            return;
        }
        let Some(u) = self.users.get_mut(&user) else {
            return;
        };
        u.sessions.remove(&conn);
        if let Some(c) = self.cluster.as_mut() {
            c.dirty(&user);
        }
        if !u.sessions.is_empty() {
            return;
        }
        self.presence.unwatch(&user, &u.contacts);
        let died = matches!(
            end,
            SessionEnd::ConnectionLost
                | SessionEnd::Closed(CloseReason::HeartbeatTimeout)
                | SessionEnd::Closed(CloseReason::SlowReader)
                | SessionEnd::Closed(CloseReason::Malformed)
                | SessionEnd::Closed(CloseReason::FrameTooLarge)
                | SessionEnd::Closed(CloseReason::Flooding)
        );
        if died && !self.cfg.offline_grace.is_zero() {
            let until = now + self.cfg.offline_grace;
            u.lingering = Some(until);
            self.graces.push(until, user);
            return;
        }
        self.online -= 1;
        self.changed(user);
    }

    /// A local user's presence changed: watchers here are told at the drain, and in a
    /// cluster the other nodes too.
    fn changed(&mut self, user: UserId) {
        if let Some(c) = self.cluster.as_mut() {
            c.dirty(&user);
        }
        self.presence.touch(user);
    }

    /// A status set on this node: in a cluster it wins over older ones anywhere.
    fn stamp_status(&mut self, user: &UserId) {
        let node = self.cfg.node;
        if let (Some(c), Some(u)) = (self.cluster.as_mut(), self.users.get_mut(user)) {
            u.status_clock = (c.tick(), node);
        }
    }

    fn send(&mut self, conn: ConnId, msg: &ServerMsg) {
        // What a later version added never reaches a connection that agreed on an earlier
        // one: it could not decode it. Checked here, once, rather than at every sender.
        if msg.since() > OLDEST_PROTOCOL_VERSION
            && !self.conns.get(&conn).is_some_and(|c| c.speaks(msg.since()))
        {
            return;
        }
        self.out.push_back(Output::Send {
            conn,
            payload: encode(msg),
        });
    }

    fn error(&mut self, conn: ConnId, request: RequestKind, code: ErrorCode, id: Option<u64>) {
        self.send(conn, &ServerMsg::Error { request, code, id });
    }

    /// Sends `msg` to every session of `user`.
    fn send_to_user(&mut self, user: &UserId, msg: &ServerMsg) {
        self.send_to_sessions(user, None, msg);
    }

    /// Sends `msg`, encoded once, to every session of `user` but `except` that speaks the
    /// version that added it.
    fn send_to_sessions(&mut self, user: &UserId, except: Option<ConnId>, msg: &ServerMsg) {
        let Some(u) = self.users.get(user) else {
            return;
        };
        let payload = encode(msg);
        let since = msg.since();
        let conns = &self.conns;
        let speaks = |c: &ConnId| conns.get(c).is_some_and(|c| c.speaks(since));
        for &conn in u
            .sessions
            .iter()
            .filter(|&&c| Some(c) != except && speaks(&c))
        {
            self.out.push_back(Output::Send {
                conn,
                payload: payload.clone(),
            });
        }
    }
}

/// The payload of `Bye{reason}`: the last thing a connection is told before the server
/// closes it. The one place it is built, for the core's own closes and for the transports'
/// (a refused connection, a slow reader, a frame over the limit), as quinn-proto's
/// `Endpoint::refuse` builds its refusals.
pub fn bye(reason: CloseReason) -> Bytes {
    encode(&ServerMsg::Bye { reason })
}

fn millis(d: crate::time::Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

fn millis_u32(d: crate::time::Duration) -> u32 {
    millis(d).try_into().unwrap_or(u32::MAX)
}
