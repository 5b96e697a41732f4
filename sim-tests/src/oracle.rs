//! The oracle: what really happened, and whether Breeze told everyone the truth about it.
//!
//! It never reads the server's state. It learns from three places:
//!
//! * the driver, which says what each client was asked to do (the *intent*: logged in or
//!   out, which status, which contacts) and which faults it injected;
//! * the server's sockets, through [`crate::net::Observed`]: every frame the real host read
//!   or wrote, decoded, with the simulated instant. From those it rebuilds when each session
//!   began and ended and why, and what each connection has been told about everyone's
//!   presence;
//! * each client application, through the events `run_client` hands it.
//!
//! Checks made while the simulation runs:
//! * a connection closed for silence was silent for exactly the heartbeat timeout — never
//!   less (no early death), never noticeably more (no half-open connection lingering);
//! * every watcher's told presence of every user equals what that user's sessions and
//!   status make true, once nothing has changed about that user for two ticks (or, after a
//!   session died, for the offline grace and two ticks): no ghost, no missed change;
//! * no watcher is told the same presence twice in a row, nor about itself;
//! * no application sees a message twice, or one addressed to someone else;
//! * no client stops by itself (except when replaced by another device, where allowed);
//! * the server answers `StorageFailed` only where the driver made a storage request of that
//!   user fail (`Send` with that very message id, `Login` for the login or its mailbox, a
//!   contact request for a contact change), once per failure; and an application hears of
//!   no other error.
//!
//! Checks made on the recorded history at the end:
//! * an offline announcement never precedes the death of the user's last session plus the
//!   offline grace, and is never made while a session is live: so a silent peer is announced
//!   no earlier than its timeout (plus grace), and a reconnect inside the grace is invisible;
//! * after the heal and the settle time, every client that should be logged in is, and its
//!   view (rebuilt from its events) equals the truth derived from the intents;
//! * every message acknowledged to its sender reached its recipient's application.
//!
//! A failed storage request changes nothing: a contact change it carried is of unknown fate
//! (the client drops it and tells its application, which makes it again in the final round);
//! a message whose store failed stays in its client's outbox until the next login, and
//! a mailbox that could not be read comes with the next login, so the final round logs such
//! clients in again and then every message must have been acknowledged and delivered.

use crate::log::EventLog;
use crate::plan::SimConfig;
use crate::room_log::RoomLog;
use breeze_core::client::{ClientEvent, StopReason};
use breeze_core::codec::{DEFAULT_MAX_FRAME, decode, split_frame};
use breeze_core::message::{
    ClientMsg, CloseReason, ErrorCode, Presence, ProfileCard, RequestKind, RoomDelivery, ServerMsg,
    Status, WatchScope,
};
use breeze_core::storage::StorageOp;
use breeze_core::{DuplicateLogin, UserId};
use bytes::BytesMut;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub type Shared = Arc<Mutex<Oracle>>;

pub fn lock(oracle: &Shared) -> MutexGuard<'_, Oracle> {
    oracle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The simulated instant, on the timeline every host shares.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

pub fn user_name(u: usize) -> UserId {
    UserId::new(format!("u{u}")).expect("valid user name")
}

/// Violations kept per run: the first ones are the interesting ones.
const MAX_VIOLATIONS: usize = 200;

/// Why a user's last session ended, as far as presence is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// The connection died (EOF, reset, heartbeat timeout): the offline grace applies.
    Died,
    /// Logged out, replaced, or told the server is shutting down: offline at once.
    Intended,
    /// The server crashed; the restarted one knows nobody is online.
    Restart,
}

/// One session as seen at the server's socket.
#[derive(Debug, Clone)]
struct SessionSpan {
    conn: u64,
    start: Duration,
    end: Option<(Duration, EndKind)>,
}

#[derive(Debug, Clone, Copy)]
struct StatusChange {
    at: Duration,
    status: Status,
}

/// A user, from the server's sockets.
#[derive(Debug, Default)]
struct UserLog {
    sessions: Vec<SessionSpan>,
    statuses: Vec<StatusChange>,
    /// `Bye{Replaced}` written to this user's connections.
    replaced: u32,
    /// When the server closed one of this user's sessions for silence.
    timeouts: Vec<Duration>,
    /// The contact list the server last sent this user (`LoginOk`, `Contacts`).
    contacts: Option<BTreeSet<usize>>,
}

impl UserLog {
    fn live(&self) -> impl Iterator<Item = &SessionSpan> {
        self.sessions.iter().filter(|s| s.end.is_none())
    }

    /// The last instant anything about this user's presence changed.
    fn last_change(&self) -> Duration {
        let spans = self
            .sessions
            .iter()
            .flat_map(|s| std::iter::once(s.start).chain(s.end.map(|(at, _)| at)));
        let statuses = self.statuses.iter().map(|c| c.at);
        spans.chain(statuses).max().unwrap_or_default()
    }

    fn status_now(&self) -> Status {
        self.statuses.last().map_or(Status::Online, |c| c.status)
    }

    /// Status in force just before `at` (changes at `at` itself excluded), and whether a
    /// change happened exactly at `at`.
    fn status_before(&self, at: Duration) -> (Status, bool) {
        let before = self
            .statuses
            .iter()
            .rev()
            .find(|c| c.at < at)
            .map_or(Status::Online, |c| c.status);
        (before, self.statuses.iter().any(|c| c.at == at))
    }

    /// Status in force at `at`, changes at `at` included.
    fn status_at(&self, at: Duration) -> Status {
        self.statuses
            .iter()
            .rev()
            .find(|c| c.at <= at)
            .map_or(Status::Online, |c| c.status)
    }

    /// Whether a session was live on both sides of `at`.
    fn live_across(&self, at: Duration) -> bool {
        self.sessions
            .iter()
            .any(|s| s.start < at && s.end.is_none_or(|(end, _)| end > at))
    }

    /// The end of the gap without sessions that `at` lies in: when the last session before
    /// it ended, and how. `None` when a session touches `at` or none ever ended before it.
    fn offline_since(&self, at: Duration) -> Option<(Duration, EndKind)> {
        if self
            .sessions
            .iter()
            .any(|s| s.start <= at && s.end.is_none_or(|(end, _)| end > at))
        {
            return None;
        }
        let mut last: Option<(Duration, EndKind)> = None;
        for s in &self.sessions {
            let Some((end, kind)) = s.end else { continue };
            if end > at {
                continue;
            }
            last = match last {
                None => Some((end, kind)),
                Some((e, _)) if end > e => Some((end, kind)),
                // A tie: the lenient reading (an intended end needs no grace).
                Some((e, k)) if end == e && k == EndKind::Died => Some((end, kind)),
                keep => keep,
            };
        }
        last
    }
}

/// One connection accepted by the server.
#[derive(Debug)]
struct ServerConn {
    peer: SocketAddr,
    opened: Duration,
    /// The server's instance this connection belonged to.
    epoch: u32,
    /// Still open as far as presence goes (no Bye written, no EOF read, not dropped).
    open: bool,
    hello: bool,
    /// When the last complete frame was read.
    last_frame: Option<Duration>,
    /// The login asked for on this connection.
    login: Option<usize>,
    /// The user whose session this connection carries.
    session: Option<usize>,
    told: BTreeMap<usize, Presence>,
    /// Contacts just added under scope `Contacts`: the diff that follows `ContactsChanged`
    /// introduces them to the view, so an `Offline` there is news, not a repeat.
    introduced: BTreeSet<usize>,
    snapshot_at: Option<Duration>,
    /// Seqs delivered on this connection: each at most once.
    delivered: BTreeSet<u64>,
    rx: BytesMut,
    tx: BytesMut,
}

/// One client host, from its application's events.
#[derive(Debug)]
struct HostLog {
    user: usize,
    incarnation: u32,
    running: bool,
    logged_in: bool,
    view: BTreeMap<UserId, Presence>,
    /// The newest profile card the client was given per user (the client keeps the higher
    /// `rev`, and so does this log).
    profiles: BTreeMap<UserId, ProfileCard>,
    stopped: Option<StopReason>,
    logins: u32,
}

impl HostLog {
    fn note_card(&mut self, card: ProfileCard) {
        if self
            .profiles
            .get(&card.user)
            .is_none_or(|k| k.rev < card.rev)
        {
            self.profiles.insert(card.user.clone(), card);
        }
    }
}

/// What the driver asked of one client host.
#[derive(Debug, Clone)]
pub struct Intent {
    /// The host runs (not crashed).
    pub alive: bool,
    pub logged_out: bool,
    pub status: Status,
    /// Users this host's user wants as contacts.
    pub contacts: BTreeSet<usize>,
    /// Changes not yet confirmed by a `Contacts` event, by user: the wanted state.
    pub pending: BTreeMap<usize, bool>,
    /// Changes whose fate a crash made unknown (they may or may not have been stored).
    pub uncertain: BTreeSet<usize>,
    /// Contact requests the client has out on its connection, oldest first, as the client
    /// itself counts them: an answer to an earlier request must not settle a later change
    /// of mind for the same user (the client core had exactly that bug).
    pub in_flight: VecDeque<usize>,
    /// The next `Contacts` event is the list a login brings, not an answer.
    pub login_list_next: bool,
}

/// A message the driver had a client send.
#[derive(Debug, Clone)]
struct Message {
    from_host: usize,
    to: usize,
}

#[derive(Debug, Clone, Copy)]
struct Delivery {
    host: usize,
    incarnation: u32,
    at: Duration,
}

/// What a failed storage request entitles the server to answer `StorageFailed` about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failed {
    /// `Authenticate` (the login) or `LoadMailbox` (the login's mailbox).
    Login,
    /// `SetContacts`.
    Contacts,
    /// `StoreMessage` of the message with this id.
    Send(u64),
    /// `LoadRooms`: a version-3 login's read of its rooms, after its mailbox.
    Rooms,
    /// `SetProfile`: a display-name change.
    Profile,
    /// `StoreRoomMessage` of the room message with this id.
    RoomSend(u64),
}

/// Counts for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub connections: u64,
    pub sessions: u64,
    pub heartbeat_timeouts: u64,
    pub offline_announcements: u64,
    pub messages_sent: u64,
    pub messages_acked: u64,
    pub deliveries: u64,
    pub server_restarts: u64,
    pub client_crashes: u64,
    /// Storage requests the driver made fail.
    pub storage_failures: u64,
    /// `StorageFailed` answers the server wrote (each backed by one of those).
    pub storage_failures_told: u64,
    /// Users with a profile card in the store at the end.
    pub profile_cards_stored: u64,
    pub room_messages_sent: u64,
    /// Room messages handed to applications.
    pub room_deliveries: u64,
}

pub struct Oracle {
    timeout: Duration,
    handshake_timeout: Duration,
    grace: Duration,
    scope: WatchScope,
    policy: DuplicateLogin,
    /// Two ticks: everything due at an instant is done by the end of the next step.
    settle_margin: Duration,
    /// How late a silent connection may be closed: the tick it is noticed in, and one more.
    timeout_slack: Duration,
    users: Vec<UserId>,
    user_index: BTreeMap<UserId, usize>,
    hosts: Vec<HostLog>,
    pub intents: Vec<Intent>,
    user_logs: Vec<UserLog>,
    conns: BTreeMap<u64, ServerConn>,
    next_conn: u64,
    epoch: u32,
    server_up: bool,
    /// Offline announcements, checked against the history at the end: (user, watcher
    /// connection, instant).
    offline_told: Vec<(usize, u64, Duration)>,
    messages: BTreeMap<u64, Message>,
    /// (host, incarnation, client message id) → message number.
    message_ids: BTreeMap<(usize, u32, u64), u64>,
    /// The room every user is in: what the applications got of it.
    rooms: RoomLog,
    /// (host, incarnation, client message id) acknowledged with `MessageSent`.
    acked: BTreeSet<(usize, u32, u64)>,
    deliveries: BTreeMap<u64, Vec<Delivery>>,
    /// Storage failures the driver injected and the server has not answered yet, by user
    /// and kind: each justifies one `StorageFailed`.
    storage_failures: BTreeMap<(usize, Failed), u32>,
    /// By host: a storage failure left work that only the client's next login does.
    needs_login: Vec<bool>,
    /// Users whose devices may replace each other (several hosts log in as them).
    shared_users: BTreeSet<usize>,
    /// Every presence change an application saw: (host, instant, user, presence).
    seen: Vec<(usize, Duration, UserId, Presence)>,
    log: EventLog,
    /// Running-check findings already reported, so a wrong view is reported once, not
    /// once per tick.
    reported: BTreeSet<String>,
    pub stats: Stats,
}

impl fmt::Debug for Oracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oracle")
            .field("violations", &self.log.violations().len())
            .field("hash", &self.log.trace_hash())
            .finish_non_exhaustive()
    }
}

impl Oracle {
    pub fn new(cfg: &SimConfig) -> Oracle {
        let users: Vec<UserId> = (0..cfg.users).map(user_name).collect();
        let user_index = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.clone(), i))
            .collect();
        let mut per_user = vec![0usize; cfg.users];
        for &u in &cfg.devices {
            per_user[u] += 1;
        }
        let shared_users = (0..cfg.users).filter(|&u| per_user[u] > 1).collect();
        Oracle {
            timeout: cfg.heartbeat_timeout,
            handshake_timeout: cfg.handshake_timeout,
            grace: cfg.offline_grace,
            scope: cfg.scope,
            policy: cfg.duplicate_login,
            settle_margin: cfg.tick * 2,
            timeout_slack: cfg.tick * 2 + Duration::from_millis(1),
            hosts: cfg
                .devices
                .iter()
                .map(|&user| HostLog {
                    user,
                    incarnation: 0,
                    running: false,
                    logged_in: false,
                    view: BTreeMap::new(),
                    profiles: BTreeMap::new(),
                    stopped: None,
                    logins: 0,
                })
                .collect(),
            intents: cfg
                .devices
                .iter()
                .map(|_| Intent {
                    alive: true,
                    logged_out: false,
                    status: Status::Online,
                    contacts: BTreeSet::new(),
                    pending: BTreeMap::new(),
                    uncertain: BTreeSet::new(),
                    in_flight: VecDeque::new(),
                    login_list_next: false,
                })
                .collect(),
            user_logs: (0..cfg.users).map(|_| UserLog::default()).collect(),
            users,
            user_index,
            conns: BTreeMap::new(),
            next_conn: 0,
            epoch: 0,
            server_up: false,
            offline_told: Vec::new(),
            messages: BTreeMap::new(),
            message_ids: BTreeMap::new(),
            rooms: RoomLog::default(),
            acked: BTreeSet::new(),
            deliveries: BTreeMap::new(),
            storage_failures: BTreeMap::new(),
            needs_login: vec![false; cfg.devices.len()],
            shared_users,
            seen: Vec::new(),
            log: EventLog::new(MAX_VIOLATIONS),
            reported: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    // ---- the record ----

    /// Adds a line to the event log. Its hash is the run's fingerprint: two runs of a seed
    /// must produce the same one.
    pub fn trace(&mut self, at: Duration, what: fmt::Arguments<'_>) {
        self.log.trace(at, what);
    }

    pub fn violation(&mut self, at: Duration, what: String) {
        self.log.violation(at, what);
    }

    pub fn violations(&self) -> &[String] {
        self.log.violations()
    }

    pub fn trace_hash(&self) -> u64 {
        self.log.trace_hash()
    }

    pub fn tail(&self) -> Vec<String> {
        self.log.tail()
    }

    fn user_of(&self, user: &UserId) -> Option<usize> {
        self.user_index.get(user).copied()
    }

    // ---- the server's side ----

    pub fn server_started(&mut self, at: Duration) {
        self.epoch += 1;
        self.server_up = true;
        let epoch = self.epoch;
        self.trace(at, format_args!("server up (instance {epoch})"));
    }

    /// Called by the driver just before it crashes the server: every session ends now, and
    /// the restarted server starts with everyone offline.
    pub fn server_crashed(&mut self, at: Duration) {
        self.server_up = false;
        self.stats.server_restarts += 1;
        self.trace(at, format_args!("server crash"));
        let open: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open)
            .map(|(&id, _)| id)
            .collect();
        for conn in open {
            self.conn_ended(conn, at, EndKind::Restart);
        }
    }

    pub fn server_accepted(&mut self, at: Duration, peer: SocketAddr) -> u64 {
        self.next_conn += 1;
        let conn = self.next_conn;
        self.stats.connections += 1;
        self.conns.insert(
            conn,
            ServerConn {
                peer,
                opened: at,
                epoch: self.epoch,
                open: true,
                hello: false,
                last_frame: None,
                login: None,
                session: None,
                told: BTreeMap::new(),
                introduced: BTreeSet::new(),
                snapshot_at: None,
                delivered: BTreeSet::new(),
                rx: BytesMut::new(),
                tx: BytesMut::new(),
            },
        );
        self.trace(at, format_args!("s{conn} accepted from {peer}"));
        conn
    }

    pub fn server_read(&mut self, conn: u64, at: Duration, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if data.is_empty() {
            self.trace(at, format_args!("s{conn} <- EOF"));
            self.conn_ended(conn, at, EndKind::Died);
            return;
        }
        c.rx.extend_from_slice(data);
        let mut payloads = Vec::new();
        loop {
            match split_frame(&mut c.rx, DEFAULT_MAX_FRAME) {
                Ok(Some(p)) => payloads.push(p),
                Ok(None) => break,
                Err(e) => {
                    c.rx.clear();
                    self.violation(at, format!("s{conn}: a client sent a bad frame: {e}"));
                    return;
                }
            }
        }
        for payload in payloads {
            match decode::<ClientMsg>(&payload) {
                Ok(msg) => self.client_msg(conn, at, msg),
                Err(e) => self.violation(at, format!("s{conn}: undecodable client frame: {e}")),
            }
        }
    }

    pub fn server_read_failed(&mut self, conn: u64, at: Duration, error: &std::io::Error) {
        self.trace(at, format_args!("s{conn} <- error {:?}", error.kind()));
        self.conn_ended(conn, at, EndKind::Died);
    }

    pub fn server_dropped(&mut self, conn: u64, at: Duration) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.open {
            self.trace(at, format_args!("s{conn} dropped"));
            self.conn_ended(conn, at, EndKind::Died);
        }
    }

    pub fn server_wrote(&mut self, conn: u64, at: Duration, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.tx.extend_from_slice(data);
        let mut payloads = Vec::new();
        while let Ok(Some(p)) = split_frame(&mut c.tx, u32::MAX) {
            payloads.push(p);
        }
        for payload in payloads {
            match decode::<ServerMsg>(&payload) {
                Ok(msg) => self.server_msg(conn, at, msg),
                Err(e) => self.violation(at, format!("s{conn}: undecodable server frame: {e}")),
            }
        }
    }

    fn client_msg(&mut self, conn: u64, at: Duration, msg: ClientMsg) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_frame = Some(at);
        let session = c.session;
        match &msg {
            ClientMsg::Hello { .. } => c.hello = true,
            ClientMsg::Login { user, status, .. } => {
                c.login = self.user_index.get(user).copied();
                self.trace(at, format_args!("s{conn} <- Login {user} {status:?}"));
                return;
            }
            ClientMsg::SetStatus { status } => {
                // Only a live session's change counts: bytes still arriving on a connection
                // whose session the server already ended (replaced, closed) change nothing.
                let live = |u: usize| self.user_logs[u].live().any(|s| s.conn == conn);
                if let Some(u) = session.filter(|&u| live(u)) {
                    self.user_logs[u].statuses.push(StatusChange {
                        at,
                        status: *status,
                    });
                }
            }
            ClientMsg::Logout => {
                self.trace(at, format_args!("s{conn} <- Logout"));
                self.conn_ended(conn, at, EndKind::Intended);
                return;
            }
            _ => {}
        }
        self.trace(at, format_args!("s{conn} <- {}", client_msg_line(&msg)));
    }

    fn server_msg(&mut self, conn: u64, at: Duration, msg: ServerMsg) {
        self.trace(at, format_args!("s{conn} -> {}", server_msg_line(&msg)));
        match msg {
            ServerMsg::ContactsChanged { added, removed, .. } => {
                if let Some(u) = self.conns[&conn].session {
                    let added: Vec<usize> = added.iter().filter_map(|c| self.user_of(c)).collect();
                    let removed: Vec<usize> =
                        removed.iter().filter_map(|c| self.user_of(c)).collect();
                    // A diff applies to the list this user was last told (at login).
                    let list = self.user_logs[u].contacts.get_or_insert_with(BTreeSet::new);
                    list.extend(added.iter().copied());
                    for c in &removed {
                        list.remove(c);
                    }
                    if self.scope == WatchScope::Contacts {
                        // Removed contacts leave this connection's view; added ones enter it
                        // with the diff that follows.
                        let c = self.conns.get_mut(&conn).expect("known");
                        for r in &removed {
                            c.told.remove(r);
                            c.introduced.remove(r);
                        }
                        c.introduced.extend(added);
                    }
                }
            }
            ServerMsg::LoginOk {
                user,
                status,
                contacts,
                ..
            } => {
                let Some(u) = self.user_of(&user) else {
                    return self.violation(at, format!("s{conn}: LoginOk for unknown {user}"));
                };
                if self.conns[&conn].login != Some(u) {
                    self.violation(
                        at,
                        format!("s{conn}: LoginOk for {user}, who did not log in"),
                    );
                }
                let c = self.conns.get_mut(&conn).expect("known");
                if !c.open {
                    // The session began and ended at once (its socket was already gone).
                    return;
                }
                c.session = Some(u);
                self.stats.sessions += 1;
                let log = &mut self.user_logs[u];
                log.sessions.push(SessionSpan {
                    conn,
                    start: at,
                    end: None,
                });
                log.statuses.push(StatusChange { at, status });
                log.contacts = Some(
                    contacts
                        .iter()
                        .filter_map(|c| self.user_index.get(c).copied())
                        .collect(),
                );
            }
            ServerMsg::PresenceSnapshot { entries } => {
                let mut told = BTreeMap::new();
                let me = self.conns.get(&conn).and_then(|c| c.session.or(c.login));
                for e in entries {
                    let Some(u) = self.user_of(&e.user) else {
                        self.violation(at, format!("s{conn}: snapshot names unknown {}", e.user));
                        continue;
                    };
                    if Some(u) == me {
                        self.violation(at, format!("s{conn}: snapshot lists its own user"));
                    }
                    told.insert(u, e.presence);
                }
                let c = self.conns.get_mut(&conn).expect("known");
                c.told = told;
                c.introduced.clear();
                c.snapshot_at = Some(at);
            }
            ServerMsg::PresenceDiff { entries } => {
                let me = self.conns.get(&conn).and_then(|c| c.session);
                for e in entries {
                    let Some(u) = self.user_of(&e.user) else {
                        self.violation(at, format!("s{conn}: diff names unknown {}", e.user));
                        continue;
                    };
                    if Some(u) == me {
                        self.violation(at, format!("s{conn}: told about its own user"));
                    }
                    let c = self.conns.get_mut(&conn).expect("known");
                    let before = c.told.insert(u, e.presence).unwrap_or(Presence::Offline);
                    let introduced = c.introduced.remove(&u);
                    if before == e.presence && c.snapshot_at.is_some() && !introduced {
                        self.violation(
                            at,
                            format!(
                                "s{conn}: told {} is {:?} twice in a row",
                                e.user, e.presence
                            ),
                        );
                    }
                    if e.presence == Presence::Offline {
                        self.stats.offline_announcements += 1;
                        self.offline_told.push((u, conn, at));
                    }
                }
            }
            ServerMsg::Error {
                request,
                code: ErrorCode::StorageFailed,
                id,
            } => self.storage_failure_told(conn, at, request, id),
            ServerMsg::Deliver(d) => {
                let c = self.conns.get_mut(&conn).expect("known");
                if !c.delivered.insert(d.seq) {
                    self.violation(at, format!("s{conn}: seq {} delivered twice", d.seq));
                }
            }
            ServerMsg::Bye { reason } => {
                let kind = match reason {
                    CloseReason::HeartbeatTimeout => {
                        self.check_silence(conn, at);
                        if let Some(u) = self.conns[&conn].session {
                            self.user_logs[u].timeouts.push(at);
                        }
                        EndKind::Died
                    }
                    CloseReason::HandshakeTimeout => {
                        let opened = self.conns[&conn].opened;
                        if at < opened + self.handshake_timeout {
                            self.violation(
                                at,
                                format!("s{conn}: handshake timeout before its deadline"),
                            );
                        }
                        EndKind::Died
                    }
                    CloseReason::LoggedOut | CloseReason::ServerShutdown => EndKind::Intended,
                    CloseReason::Replaced => {
                        if let Some(u) = self.conns[&conn].session {
                            self.user_logs[u].replaced += 1;
                            if !self.shared_users.contains(&u)
                                && self.policy == DuplicateLogin::Multi
                            {
                                self.violation(at, format!("s{conn}: replaced under multi"));
                            }
                        }
                        EndKind::Intended
                    }
                    other => {
                        self.violation(at, format!("s{conn}: closed for {other:?}"));
                        EndKind::Died
                    }
                };
                self.conn_ended(conn, at, kind);
            }
            _ => {}
        }
    }

    /// The server told a connection that storage failed: a failure of that user's request of
    /// that kind must stand behind it.
    fn storage_failure_told(
        &mut self,
        conn: u64,
        at: Duration,
        request: RequestKind,
        id: Option<u64>,
    ) {
        let c = &self.conns[&conn];
        let Some(u) = c.session.or(c.login) else {
            return self.violation(at, format!("s{conn}: StorageFailed before any login"));
        };
        let failed = match (request, id) {
            (RequestKind::Login, _) => Failed::Login,
            (
                RequestKind::AddContact | RequestKind::RemoveContact | RequestKind::ChangeContacts,
                _,
            ) => Failed::Contacts,
            (RequestKind::Send, Some(id)) => Failed::Send(id),
            (RequestKind::Room, None) => Failed::Rooms,
            (RequestKind::SetProfile, None) => Failed::Profile,
            (RequestKind::Room, Some(id)) => Failed::RoomSend(id),
            _ => {
                return self.violation(
                    at,
                    format!("s{conn}: StorageFailed for {request:?} (id {id:?})"),
                );
            }
        };
        match self.storage_failures.get_mut(&(u, failed)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                self.stats.storage_failures_told += 1;
            }
            _ => {
                let name = &self.users[u];
                return self.violation(
                    at,
                    format!("s{conn}: StorageFailed for {request:?} (id {id:?}) of {name}, but no such request of theirs failed"),
                );
            }
        }
        if let Failed::Send(id) = failed {
            // The client keeps the message and sends it again after its next login.
            let current = self
                .message_ids
                .keys()
                .find(|&&(host, incarnation, i)| {
                    i == id && self.hosts[host].incarnation == incarnation
                })
                .map(|&(host, _, _)| host);
            if let Some(host) = current {
                self.needs_login[host] = true;
            }
        }
    }

    /// A connection closed for silence: its last frame must be exactly one timeout ago.
    fn check_silence(&mut self, conn: u64, at: Duration) {
        let c = &self.conns[&conn];
        let Some(last) = c.last_frame else {
            return self.violation(at, format!("s{conn}: heartbeat timeout before any frame"));
        };
        self.stats.heartbeat_timeouts += 1;
        let due = last + self.timeout;
        if at < due {
            self.violation(
                at,
                format!(
                    "s{conn} declared dead {:?} early: last frame at {:.3}s, timeout {:?}",
                    due - at,
                    last.as_secs_f64(),
                    self.timeout
                ),
            );
        } else if at > due + self.timeout_slack {
            self.violation(
                at,
                format!(
                    "s{conn} declared dead {:?} late: last frame at {:.3}s",
                    at - due,
                    last.as_secs_f64()
                ),
            );
        }
    }

    fn conn_ended(&mut self, conn: u64, at: Duration, kind: EndKind) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        let Some(u) = c.session else {
            return;
        };
        let name = self.users[u].clone();
        if let Some(span) = self.user_logs[u]
            .sessions
            .iter_mut()
            .find(|s| s.conn == conn && s.end.is_none())
        {
            span.end = Some((at, kind));
        }
        self.trace(at, format_args!("s{conn} session of {name} ends: {kind:?}"));
    }

    // ---- the clients' side ----

    pub fn client_started(&mut self, host: usize, at: Duration) -> u32 {
        // A fresh client logs in anyway, and an outbox dies with its client.
        self.needs_login[host] = false;
        let h = &mut self.hosts[host];
        h.incarnation += 1;
        h.running = true;
        h.logged_in = false;
        h.view.clear();
        h.profiles.clear();
        h.stopped = None;
        let incarnation = h.incarnation;
        self.trace(
            at,
            format_args!("c{host} starts (incarnation {incarnation})"),
        );
        incarnation
    }

    pub fn client_crashed(&mut self, host: usize, at: Duration) {
        self.stats.client_crashes += 1;
        let h = &mut self.hosts[host];
        h.running = false;
        h.logged_in = false;
        self.trace(at, format_args!("c{host} crashes"));
    }

    pub fn client_event(&mut self, host: usize, incarnation: u32, at: Duration, ev: ClientEvent) {
        if self.hosts[host].incarnation != incarnation {
            return;
        }
        self.trace(at, format_args!("c{host} {}", client_event_line(&ev)));
        let me = self.hosts[host].user;
        match ev {
            ClientEvent::LoggedIn { user } => {
                if user != self.users[me] {
                    self.violation(at, format!("c{host} logged in as {user}"));
                }
                let h = &mut self.hosts[host];
                h.logged_in = true;
                h.logins += 1;
                h.stopped = None;
                self.needs_login[host] = false;
                let intent = &mut self.intents[host];
                intent.in_flight.clear();
                intent.login_list_next = true;
            }
            ClientEvent::Disconnected { .. } => self.hosts[host].logged_in = false,
            ClientEvent::Stopped(reason) => {
                let h = &mut self.hosts[host];
                h.logged_in = false;
                h.stopped = Some(reason);
                let expected = match reason {
                    StopReason::LoggedOut => self.intents[host].logged_out,
                    StopReason::Closed(CloseReason::Replaced) => self.shared_users.contains(&me),
                    _ => false,
                };
                if !expected {
                    self.violation(at, format!("c{host} stopped by itself: {reason:?}"));
                }
            }
            ClientEvent::PresenceSnapshot(entries) => {
                let view = &mut self.hosts[host].view;
                let old = std::mem::take(view);
                for e in entries {
                    if old.get(&e.user) != Some(&e.presence) {
                        self.seen.push((host, at, e.user.clone(), e.presence));
                    }
                    view.insert(e.user, e.presence);
                }
            }
            ClientEvent::PresenceChanged { user, presence } => {
                self.seen.push((host, at, user.clone(), presence));
                self.hosts[host].view.insert(user, presence);
            }
            ClientEvent::Contacts(list) => {
                let list: BTreeSet<usize> = list.iter().filter_map(|u| self.user_of(u)).collect();
                let intent = &mut self.intents[host];
                let login = std::mem::take(&mut intent.login_list_next);
                if !login {
                    intent.in_flight.pop_front();
                }
                let in_flight = &intent.in_flight;
                intent
                    .pending
                    .retain(|u, add| in_flight.contains(u) || list.contains(u) != *add);
                if login {
                    // The client sends again every change the login's list does not show.
                    let resent: Vec<usize> = intent.pending.keys().copied().collect();
                    intent.in_flight.extend(resent);
                }
            }
            ClientEvent::MessageSent { id, .. } => {
                self.stats.messages_acked += 1;
                self.acked.insert((host, incarnation, id));
            }
            ClientEvent::SendFailed { id, code } => {
                self.violation(at, format!("c{host}: message {id} refused: {code:?}"));
            }
            ClientEvent::Message(d) => {
                self.stats.deliveries += 1;
                let Some(k) = d.body.strip_prefix('m').and_then(|k| k.parse::<u64>().ok()) else {
                    return self.violation(at, format!("c{host}: unknown message {:?}", d.body));
                };
                let Some(msg) = self.messages.get(&k).cloned() else {
                    return self.violation(at, format!("c{host}: message m{k} was never sent"));
                };
                if msg.to != me {
                    self.violation(at, format!("c{host}: got m{k}, addressed to someone else"));
                }
                if self.hosts[msg.from_host].user != self.user_of(&d.from).unwrap_or(usize::MAX) {
                    self.violation(at, format!("c{host}: m{k} claims to be from {}", d.from));
                }
                let twice = self.deliveries.get(&k).is_some_and(|l| {
                    l.iter()
                        .any(|d| d.host == host && d.incarnation == incarnation)
                });
                if twice {
                    self.violation(at, format!("c{host}'s application got m{k} twice"));
                }
                self.deliveries.entry(k).or_default().push(Delivery {
                    host,
                    incarnation,
                    at,
                });
            }
            // The server's side checked that a storage failure stands behind each of these.
            ClientEvent::Error {
                request: RequestKind::Login,
                code: ErrorCode::StorageFailed,
            } => {
                // After `LoginOk`: the mailbox could not be read and waits for the next
                // login. (Before it the login failed, and the client retries by itself.)
                self.needs_login[host] |= self.hosts[host].logged_in;
            }
            ClientEvent::Error {
                request:
                    RequestKind::AddContact | RequestKind::RemoveContact | RequestKind::ChangeContacts,
                code: ErrorCode::StorageFailed,
            } => {
                // An answer like any other: the client drops its oldest request in flight.
                self.intents[host].in_flight.pop_front();
            }
            ClientEvent::RoomMessage(d) => self.room_delivered(host, incarnation, at, d),
            ClientEvent::Profiles(cards) => {
                for card in cards {
                    self.hosts[host].note_card(card);
                }
            }
            ClientEvent::Profile { card, .. } => self.hosts[host].note_card(card),
            // A profile change asked for while logged out, or refused by a storage fault (the
            // store's last committed card is what `check_profiles` holds watchers to).
            ClientEvent::Error {
                request: RequestKind::SetProfile,
                code: ErrorCode::NotLoggedIn | ErrorCode::StorageFailed | ErrorCode::Busy,
            } => {}
            // A login's read of its rooms failed (checked against the injected failures
            // when the server says it); it is read again.
            ClientEvent::Error {
                request: RequestKind::Room,
                code: ErrorCode::StorageFailed,
            } => {}
            ClientEvent::Error { request, code } => {
                self.violation(at, format!("c{host}: {request:?} failed: {code:?}"));
            }
            _ => {}
        }
    }

    // ---- the driver's side ----

    /// The storage failed `op` (a fault the driver injected): it changed nothing, and the
    /// server may answer `StorageFailed` about it once.
    pub fn storage_failed(&mut self, at: Duration, op: &StorageOp) {
        self.stats.storage_failures += 1;
        self.trace(at, format_args!("storage: {op:?} fails"));
        let (user, failed) = match op {
            StorageOp::Authenticate { user, .. } | StorageOp::LoadMailbox { user, .. } => {
                (user, Failed::Login)
            }
            StorageOp::SetContacts { user, .. } => (user, Failed::Contacts),
            StorageOp::StoreMessage { from, id, .. } => (from, Failed::Send(*id)),
            // Nothing the client hears of: unmarked messages come again with the next login,
            // and the client's seen-set keeps them from its application.
            StorageOp::MarkDelivered { .. }
            | StorageOp::Register { .. }
            | StorageOp::ChangePassword { .. }
            | StorageOp::LoadHistory { .. }
            | StorageOp::SetBanned { .. }
            // The simulated clients change no groups (the core's World harness covers them).
            | StorageOp::ChangeGroups { .. } => return,
            // A login whose cards cannot be read goes on without its `ProfileSnapshot` and
            // reads them again after its next frame; `check_profiles` holds everyone to the
            // store in the end.
            StorageOp::LoadProfiles { .. }
            | StorageOp::LoadProfile { .. } => return,
            // Told once (`Error{Room, StorageFailed}`) and read again at the session's next
            // frame, which brings the room's backlog then (`check_messages`).
            StorageOp::LoadRooms { user } => (user, Failed::Rooms),
            StorageOp::SetProfile { user, .. } => (user, Failed::Profile),
            StorageOp::StoreRoomMessage { from, id, .. } => (from, Failed::RoomSend(*id)),
            // A session's read of a room's messages is tried again at its next frame; a
            // cursor not moved only means a message may come again, which the client drops.
            StorageOp::CreateRoom { .. }
            | StorageOp::ChangeRoom { .. }
            | StorageOp::LoadRoom { .. }
            | StorageOp::MarkRoomRead { .. } => return,
        };
        let Some(u) = self.user_of(user) else { return };
        *self.storage_failures.entry((u, failed)).or_default() += 1;
        if let StorageOp::SetContacts { add, remove, .. } = op {
            // The client drops a change the server refused and tells its application: what
            // the user's list holds for those contacts is now up to later requests, if any.
            let changed: Vec<usize> = add
                .iter()
                .chain(remove)
                .filter_map(|c| self.user_of(c))
                .collect();
            for h in (0..self.hosts.len()).filter(|&h| self.hosts[h].user == u) {
                self.intents[h].uncertain.extend(changed.iter().copied());
            }
        }
    }

    /// Whether a storage failure left host `host` with work only its next login does.
    pub fn needs_login(&self, host: usize) -> bool {
        self.needs_login[host]
    }

    /// The driver had host `host` send message number `k` to user `to`.
    pub fn message_sent(&mut self, k: u64, host: usize, to: usize) {
        self.stats.messages_sent += 1;
        self.messages.insert(
            k,
            Message {
                from_host: host,
                to,
            },
        );
    }

    /// Room message `k` was handed to host `host`'s client.
    pub fn room_message_sent(&mut self, k: u64, host: usize) {
        self.stats.room_messages_sent += 1;
        self.rooms.sent(k, host);
    }

    fn room_delivered(&mut self, host: usize, incarnation: u32, at: Duration, d: RoomDelivery) {
        self.stats.room_deliveries += 1;
        let (hosts, users) = (&self.hosts, &self.users);
        let wrong = self
            .rooms
            .delivered(host, incarnation, &d, |h| users[hosts[h].user].clone());
        for w in wrong {
            self.violation(at, w);
        }
    }

    /// The client accepted message `k` under the id `id`.
    pub fn message_id(&mut self, host: usize, incarnation: u32, id: u64, k: u64) {
        self.message_ids.insert((host, incarnation, id), k);
    }

    pub fn host_incarnation(&self, host: usize) -> u32 {
        self.hosts[host].incarnation
    }

    pub fn host_running(&self, host: usize) -> bool {
        self.hosts[host].running
    }

    pub fn host_logged_in(&self, host: usize) -> bool {
        self.hosts[host].logged_in
    }

    pub fn host_stopped(&self, host: usize) -> Option<StopReason> {
        self.hosts[host].stopped
    }

    /// Logins of `host`, over all its incarnations.
    pub fn host_logins(&self, host: usize) -> u32 {
        self.hosts[host].logins
    }

    pub fn host_view(&self, host: usize) -> &BTreeMap<UserId, Presence> {
        &self.hosts[host].view
    }

    pub fn replaced(&self, user: usize) -> u32 {
        self.user_logs[user].replaced
    }

    pub fn live_sessions(&self, user: usize) -> usize {
        self.user_logs[user].live().count()
    }

    pub fn server_is_up(&self) -> bool {
        self.server_up
    }

    // ---- checks ----

    /// The running check: every watcher has been told the truth about every user nothing
    /// has happened to lately.
    pub fn check_now(&mut self, t: Duration) {
        let margin = self.settle_margin;
        if t < margin {
            return;
        }
        let mut expected: Vec<Option<Presence>> = Vec::with_capacity(self.users.len());
        for log in &self.user_logs {
            let quiet = t - log.last_change().min(t);
            let live = log.live().any(|s| s.start + margin <= t);
            let exp = if log.live().next().is_some() {
                (live && quiet >= margin).then(|| log.status_now().visible())
            } else {
                match log.offline_since(t) {
                    None => Some(Presence::Offline),
                    Some((_, EndKind::Died)) => {
                        (quiet >= self.grace + margin).then_some(Presence::Offline)
                    }
                    Some(_) => (quiet >= margin).then_some(Presence::Offline),
                }
            };
            expected.push(exp);
        }
        let mut problems = Vec::new();
        for (&id, c) in &self.conns {
            if !c.open || c.epoch != self.epoch {
                continue;
            }
            let (Some(me), Some(snap)) = (c.session, c.snapshot_at) else {
                continue;
            };
            if snap + margin > t {
                continue;
            }
            let watched: Vec<usize> = match self.scope {
                WatchScope::Everyone => (0..self.users.len()).filter(|&u| u != me).collect(),
                WatchScope::Contacts => c.told.keys().copied().collect(),
            };
            for u in watched {
                let Some(exp) = expected[u] else { continue };
                let told = c.told.get(&u).copied().unwrap_or(Presence::Offline);
                if told != exp {
                    let what = format!(
                        "s{id} ({}) was told {} is {told:?}; the truth is {exp:?}",
                        self.users[me], self.users[u]
                    );
                    if !self.reported.contains(&what) {
                        problems.push(what);
                    }
                }
            }
        }
        // No connection outlives its deadline on the server.
        for (&id, c) in &self.conns {
            if !c.open || c.epoch != self.epoch || !self.server_up {
                continue;
            }
            let deadline = match (c.hello, c.last_frame) {
                (true, Some(last)) => last + self.timeout,
                _ => c.opened + self.handshake_timeout,
            };
            if t > deadline + self.timeout_slack + margin {
                let what = format!("s{id} from {} still open past its deadline", c.peer);
                if !self.reported.contains(&what) {
                    problems.push(what);
                }
            }
        }
        for p in problems {
            self.reported.insert(p.clone());
            self.violation(t, p);
        }
    }

    /// At the end: every offline announcement was justified by the history.
    pub fn check_offline_announcements(&mut self) {
        let mut problems = Vec::new();
        for &(u, conn, at) in &self.offline_told {
            let log = &self.user_logs[u];
            let name = &self.users[u];
            let (status, changed_now) = log.status_before(at);
            // Invisible users are shown offline, whenever that happens.
            if log.status_at(at) == Status::Invisible {
                continue;
            }
            if log.live_across(at) {
                if status.visible() != Presence::Offline && !changed_now {
                    problems.push((
                        at,
                        format!("s{conn} told {name} is offline while a session of theirs is live"),
                    ));
                }
                continue;
            }
            if let Some((end, EndKind::Died)) = log.offline_since(at)
                && at < end + self.grace
            {
                problems.push((
                    at,
                    format!(
                        "s{conn} told {name} is offline {:?} after their last session died, inside the grace of {:?}",
                        at - end,
                        self.grace
                    ),
                ));
            }
        }
        for (at, p) in problems {
            self.violation(at, p);
        }
    }

    /// The truth about user `u`, from the intents of the hosts that log in as them.
    fn truth(&self, u: usize) -> Presence {
        let hosts: Vec<usize> = (0..self.hosts.len())
            .filter(|&h| self.hosts[h].user == u && self.wants_online(h))
            .collect();
        match hosts.last() {
            Some(&h) => self.intents[h].status.visible(),
            None => Presence::Offline,
        }
    }

    /// Whether host `h` should be logged in now.
    fn wants_online(&self, h: usize) -> bool {
        let i = &self.intents[h];
        let replaced = self.hosts[h].stopped == Some(StopReason::Closed(CloseReason::Replaced));
        i.alive && !i.logged_out && !replaced
    }

    /// After the heal and the settle time: logged in where wanted, views equal to the truth.
    pub fn check_converged(&mut self, t: Duration, when: &str) {
        let mut problems = Vec::new();
        for h in 0..self.hosts.len() {
            let log = &self.hosts[h];
            let me = log.user;
            if !self.wants_online(h) {
                if self.intents[h].alive && log.logged_in {
                    problems.push(format!("c{h} is logged in, but was logged out"));
                }
                continue;
            }
            if !log.logged_in {
                problems.push(format!("c{h} ({}) is not logged in", self.users[me]));
                continue;
            }
            let intent = &self.intents[h];
            let watched: Vec<usize> = match self.scope {
                WatchScope::Everyone => (0..self.users.len()).filter(|&u| u != me).collect(),
                WatchScope::Contacts => {
                    let mut set = intent.contacts.clone();
                    for &u in &intent.uncertain {
                        let shown = log.view.contains_key(&self.users[u]);
                        if shown {
                            set.insert(u);
                        } else {
                            set.remove(&u);
                        }
                    }
                    set.remove(&me);
                    set.into_iter().collect()
                }
            };
            let expected: BTreeMap<UserId, Presence> = watched
                .into_iter()
                .map(|u| (self.users[u].clone(), self.truth(u)))
                .collect();
            if log.view != expected {
                let diff: Vec<String> = expected
                    .iter()
                    .filter(|(u, p)| log.view.get(*u) != Some(*p))
                    .map(|(u, p)| format!("{u}: shown {:?}, truly {p:?}", log.view.get(u)))
                    .chain(
                        log.view
                            .keys()
                            .filter(|u| !expected.contains_key(*u))
                            .map(|u| format!("{u}: shown but not a contact")),
                    )
                    .collect();
                problems.push(format!(
                    "c{h} ({})'s view differs from the truth: {}",
                    self.users[me],
                    diff.join(", ")
                ));
            }
        }
        // The contact list the server holds is the one the user asked for, whatever the
        // scope (changes whose fate a crash made unknown excepted).
        for h in 0..self.hosts.len() {
            if !self.wants_online(h) || self.shared_users.contains(&self.hosts[h].user) {
                continue;
            }
            let u = self.hosts[h].user;
            let intent = &self.intents[h];
            let Some(told) = &self.user_logs[u].contacts else {
                continue;
            };
            let wrong: Vec<String> = (0..self.users.len())
                .filter(|c| !intent.uncertain.contains(c))
                .filter(|c| told.contains(c) != intent.contacts.contains(c))
                .map(|c| {
                    let want = if intent.contacts.contains(&c) {
                        "wanted"
                    } else {
                        "not wanted"
                    };
                    format!("{} ({want})", self.users[c])
                })
                .collect();
            if !wrong.is_empty() {
                problems.push(format!(
                    "{}'s contacts at the server differ from what c{h} asked for: {}",
                    self.users[u],
                    wrong.join(", ")
                ));
            }
        }
        // No ghost at the server either: a session is live exactly for those who want one.
        for u in 0..self.users.len() {
            let wanted =
                (0..self.hosts.len()).any(|h| self.hosts[h].user == u && self.wants_online(h));
            let live = self.user_logs[u].live().count();
            let ok = match (wanted, self.policy) {
                (false, _) => live == 0,
                (true, DuplicateLogin::Replace) => live == 1,
                (true, DuplicateLogin::Multi) => live >= 1,
            };
            if !ok {
                problems.push(format!(
                    "{} has {live} live sessions at the server, wanted online: {wanted}",
                    self.users[u]
                ));
            }
        }
        for p in problems {
            self.violation(t, format!("{when}: {p}"));
        }
    }

    /// After the final round: every logged-in client holds, for itself and each user it
    /// watches, exactly the card the store last committed (profile changes survive crashes
    /// and storage faults, and watchers converge on the latest).
    pub fn check_profiles(&mut self, t: Duration, stored: &[ProfileCard]) {
        let mut problems = Vec::new();
        for h in 0..self.hosts.len() {
            let log = &self.hosts[h];
            if !self.wants_online(h) || !log.logged_in {
                continue;
            }
            let me = &self.users[log.user];
            for card in stored {
                if &card.user != me && !log.view.contains_key(&card.user) {
                    continue;
                }
                let held = log.profiles.get(&card.user);
                if held != Some(card) {
                    problems.push(format!(
                        "c{h} ({me}) holds {:?} for {}, the store {:?} (rev {})",
                        held.map(|c| (&c.display_name, c.rev)),
                        card.user,
                        card.display_name,
                        card.rev
                    ));
                }
            }
        }
        self.stats.profile_cards_stored = stored.len() as u64;
        for p in problems {
            self.violation(t, format!("with everyone back: {p}"));
        }
    }

    /// After the final round: every acknowledged message reached its recipient.
    pub fn check_messages(&mut self, t: Duration) {
        let mut problems = Vec::new();
        // Nothing stays in an outbox: a client still running since it took a message has
        // had it acknowledged.
        for (&(host, incarnation, id), &k) in &self.message_ids {
            let log = &self.hosts[host];
            let current = log.incarnation == incarnation && log.running;
            if current && !self.acked.contains(&(host, incarnation, id)) {
                problems.push(format!("m{k} from c{host} (#{id}) was never acknowledged"));
            }
        }
        for key in &self.acked {
            let Some(&k) = self.message_ids.get(key) else {
                problems.push(format!(
                    "c{} got an ack for unknown message id {}",
                    key.0, key.2
                ));
                continue;
            };
            if self.rooms.is_room_message(k) {
                let (hosts, users) = (&self.hosts, &self.users);
                problems.extend(
                    self.rooms
                        .check_reached(k, key.0, hosts.len(), |h| users[hosts[h].user].clone()),
                );
                continue;
            }
            if self.deliveries.get(&k).is_none_or(|d| d.is_empty()) {
                let to = self.messages[&k].to;
                problems.push(format!(
                    "m{k} from c{} to {} was acknowledged but never delivered",
                    key.0, self.users[to]
                ));
            }
        }
        for p in problems {
            self.violation(t, p);
        }
    }

    /// What the application of `host` saw of `user`: (instant, presence), in order. A
    /// snapshot counts where it changed the view.
    pub fn seen(&self, host: usize, user: usize) -> Vec<(Duration, Presence)> {
        let name = &self.users[user];
        self.seen
            .iter()
            .filter(|(h, _, u, _)| *h == host && u == name)
            .map(|&(_, at, _, p)| (at, p))
            .collect()
    }

    /// Offline announcements the server made about `user`: (watcher connection, instant).
    pub fn offline_announcements(&self, user: usize) -> Vec<(u64, Duration)> {
        self.offline_told
            .iter()
            .filter(|(u, _, _)| *u == user)
            .map(|&(_, conn, at)| (conn, at))
            .collect()
    }

    /// Connections of `user` the server closed for silence, with the instant.
    pub fn heartbeat_timeouts(&self, user: usize) -> Vec<Duration> {
        self.user_logs[user].timeouts.clone()
    }

    /// Sessions `user` had at the server, over the whole run.
    pub fn sessions_of(&self, user: usize) -> usize {
        self.user_logs[user].sessions.len()
    }

    /// Whether message `k` was acknowledged to its sender.
    pub fn message_acked(&self, k: u64) -> bool {
        self.message_ids
            .iter()
            .any(|(key, &m)| m == k && self.acked.contains(key))
    }

    /// Deliveries of message `k`, for scenario checks.
    pub fn delivery_times(&self, k: u64) -> Vec<Duration> {
        self.deliveries
            .get(&k)
            .map(|d| d.iter().map(|d| d.at).collect())
            .unwrap_or_default()
    }
}

fn client_msg_line(msg: &ClientMsg) -> String {
    match msg {
        ClientMsg::Hello { .. } => "Hello".into(),
        ClientMsg::Login { user, status, .. } => format!("Login {user} {status:?}"),
        ClientMsg::Send { id, to, body, .. } => format!("Send #{id} to {to} {body}"),
        ClientMsg::Ack { seqs } => format!("Ack {seqs:?}"),
        ClientMsg::Ping { nonce } => format!("Ping {nonce}"),
        ClientMsg::SetStatus { status } => format!("SetStatus {status:?}"),
        ClientMsg::AddContact { user } => format!("AddContact {user}"),
        ClientMsg::RemoveContact { user } => format!("RemoveContact {user}"),
        other => format!("{:?}", other.kind()),
    }
}

fn server_msg_line(msg: &ServerMsg) -> String {
    match msg {
        ServerMsg::Welcome { .. } => "Welcome".into(),
        ServerMsg::LoginOk {
            user,
            status,
            contacts,
            ..
        } => format!("LoginOk {user} {status:?} contacts {contacts:?}"),
        ServerMsg::PresenceSnapshot { entries } => format!("Snapshot {}", entries_line(entries)),
        ServerMsg::PresenceDiff { entries } => format!("Diff {}", entries_line(entries)),
        ServerMsg::Deliver(d) => format!("Deliver seq {} {} #{} {}", d.seq, d.from, d.id, d.body),
        ServerMsg::Sent { id, seq } => format!("Sent #{id} seq {seq}"),
        ServerMsg::Pong { nonce } => format!("Pong {nonce}"),
        ServerMsg::Bye { reason } => format!("Bye {reason:?}"),
        other => {
            let text = format!("{other:?}");
            text.chars().take(120).collect()
        }
    }
}

fn entries_line(entries: &[breeze_core::message::PresenceEntry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|e| format!("{}={:?}", e.user, e.presence))
        .collect();
    parts.join(" ")
}

fn client_event_line(ev: &ClientEvent) -> String {
    match ev {
        ClientEvent::PresenceSnapshot(entries) => format!("view {}", entries_line(entries)),
        ClientEvent::PresenceChanged { user, presence } => format!("sees {user}={presence:?}"),
        ClientEvent::Message(d) => format!("message {} from {} #{}", d.body, d.from, d.id),
        other => {
            let text = format!("{other:?}");
            text.chars().take(120).collect()
        }
    }
}
