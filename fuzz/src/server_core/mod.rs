//! `server_core`: the sans-IO `Server` driven by a [`ServerInput`] — connections opening,
//! frames (well-formed or raw), closes and aborts, virtual time, storage results late and out
//! of order — against an in-memory store, with the server's output checked after every step.
//!
//! The harness is the oracle. It keeps its own account of each connection (what the peer
//! sent, what the server told it) and of storage (what was stored, which credentials were
//! ever valid), and panics on the first output that breaks one of these:
//!
//! * every server frame decodes as a `ServerMsg`, fits the frame limit, goes to a connection
//!   that is open (never after its `Bye`, its `Close`, or the host closing it) and `Close`
//!   follows `Bye` with the same reason;
//! * a session (`LoginOk`, then `SessionStarted`) starts only on a connection that sent a
//!   `Login` for that very user with a credential storage accepted for that user at some
//!   point (a password it was registered or changed to, a token it issued to that user);
//!   under policy replace a user has one session at a time; `SessionEnded` names the user
//!   and the way the connection ended;
//! * `Deliver` goes only to a session of the message's addressee, carries the stored
//!   message unchanged, each seq at most once per session, in seq order within the mailbox
//!   batch and within the live deliveries after `OfflineDone`; `Sent` names a message the
//!   session's user stored under that id;
//! * presence frames go only to logged-in connections and never name the connection's own
//!   user; one `PresenceDiff` per connection per drain, one entry per user, never repeating
//!   what that connection was last told; at the end of every drain each session's view agrees
//!   with the server's own `who()` (and, in scope everyone, lists every other user);
//! * storage requests act only for users with a session, for logins a peer asked for, and
//!   only after the server's own validation (names, password rule, sizes);
//! * timeouts fire exactly at the deadline (handshake: 10 s after opening; heartbeat: 30 s
//!   after the last frame), no open connection is ever past its deadline, and
//!   `handle_timeout(t)` leaves `poll_timeout()` later than `t`;
//! * `stats()` agrees with the harness after every drain: connections, sessions (never more
//!   than connections), pending storage, online users (exactly the users with a session
//!   when there is no grace), a directory that only grows;
//! * at the end, with storage settled and two minutes of silence, nothing is left: no
//!   connection, no session, no online user, no pending request.

pub mod input;

pub use input::{Blob, Encode, ServerInput, Setup, Step};

use breeze_core::codec::{decode, encode};
use breeze_core::config::{FrameRate, LoginThrottle, password_is_acceptable};
use breeze_core::message::{
    Attachment, ClientMsg, CloseReason, Credential, Delivery, MAGIC, MAX_ACK_SEQS,
    OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, Presence, PresenceEntry, ServerMsg, Status,
    WatchScope,
};
use breeze_core::server::{Output, Server, ServerEvent, SessionEnd};
use breeze_core::storage::{MAX_HISTORY, StorageError, StorageOp, StorageResult};
use breeze_core::testkit::MemStore;
use breeze_core::{
    ConnId, DuplicateLogin, Duration, Instant, NodeId, RequestId, ServerConfig, UserId,
};
use input::{Att, Body, Cred, Label, Msg, Name, Op, Pw, Reason, St};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The initial accounts' password (`Pw(0)`).
pub const PASSWORD: &str = "correct horse";
/// Users that exist at start; `u3` and `u4` can be registered.
pub const INITIAL_USERS: [&str; 3] = ["u0", "u1", "u2"];
const PASSWORDS: [&str; 5] = [PASSWORD, "battery staple", "hunter22", "short", ""];
const MAX_BODY: usize = 64;
const MAX_ATTACHMENT: u32 = 64;
const GRACE: Duration = Duration::from_secs(5);

/// The server configuration for a run.
pub fn config(setup: Setup) -> ServerConfig {
    ServerConfig {
        node: NodeId(7),
        duplicate_login: if setup.multi {
            DuplicateLogin::Multi
        } else {
            DuplicateLogin::Replace
        },
        scope: if setup.contacts_scope {
            WatchScope::Contacts
        } else {
            WatchScope::Everyone
        },
        offline_grace: if setup.grace { GRACE } else { Duration::ZERO },
        max_body: MAX_BODY,
        max_attachment: MAX_ATTACHMENT,
        max_contacts: 1,
        admins: [user("u0")].into(),
        // Small enough for a fuzz input to hit: a burst of 16 frames, then 8 a second.
        frame_rate: FrameRate {
            per_second: 8,
            burst: 16,
        },
        // Pages of two messages (or 64 bytes) so that paging happens.
        mailbox_page: 2,
        mailbox_page_bytes: 64,
        login_throttle: LoginThrottle {
            free_attempts: 2,
            account_free_attempts: 3,
            address_free_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(4),
            forget_after: Duration::from_secs(20),
        },
        ..ServerConfig::default()
    }
}

/// Runs one input; panics on the first broken invariant.
pub fn run(input: &ServerInput) {
    let mut h = Harness::new(input.setup);
    for step in &input.steps {
        h.step(step);
    }
    h.finish();
}

/// Runs raw fuzzer bytes, decoded the way `fuzz_target!` decodes them.
pub fn run_bytes(data: &[u8]) {
    use arbitrary::{Arbitrary, Unstructured};
    if data.len() < <ServerInput as Arbitrary>::size_hint(0).0 {
        return;
    }
    if let Ok(input) = ServerInput::arbitrary_take_rest(Unstructured::new(data)) {
        run(&input);
    }
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid name")
}

/// A user name that the server must refuse (serde does not validate).
fn invalid_user(name: &str) -> UserId {
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name.as_bytes());
    decode::<UserId>(&payload).expect("a string decodes as a UserId")
}

fn name(n: Name) -> UserId {
    match n.0 % 16 {
        14 => invalid_user(""),
        15 => invalid_user("-x y"),
        k => user(&format!("u{}", k % 5)),
    }
}

fn password(p: Pw) -> String {
    PASSWORDS[p.0 as usize % PASSWORDS.len()].to_string()
}

fn status(s: St) -> Status {
    match s {
        St::Online => Status::Online,
        St::Busy => Status::Busy,
        St::Away => Status::Away,
        St::Invisible => Status::Invisible,
    }
}

fn body(b: Body) -> String {
    match b.0 % 4 {
        0 => "hi".into(),
        1 => String::new(),
        2 => "héllo wörld".into(),
        _ => "x".repeat(MAX_BODY + 1),
    }
}

fn label(l: Label) -> String {
    match l.0 % 3 {
        0 => "image/png".into(),
        1 => String::new(),
        _ => "m".repeat(256),
    }
}

fn attachment(a: Att) -> Attachment {
    Attachment {
        mime: label(a.mime),
        name: label(a.name),
        data: vec![0xA5; a.size as usize],
    }
}

fn reason(r: Reason) -> CloseReason {
    match r {
        Reason::HandshakeTimeout => CloseReason::HandshakeTimeout,
        Reason::HeartbeatTimeout => CloseReason::HeartbeatTimeout,
        Reason::Replaced => CloseReason::Replaced,
        Reason::LoggedOut => CloseReason::LoggedOut,
        Reason::BadHandshake => CloseReason::BadHandshake,
        Reason::UnsupportedVersion => CloseReason::UnsupportedVersion,
        Reason::FrameTooLarge => CloseReason::FrameTooLarge,
        Reason::Malformed => CloseReason::Malformed,
        Reason::SlowReader => CloseReason::SlowReader,
        Reason::ServerFull => CloseReason::ServerFull,
        Reason::ServerShutdown => CloseReason::ServerShutdown,
        Reason::Flooding => CloseReason::Flooding,
    }
}

fn is_write(op: &StorageOp) -> bool {
    matches!(
        op,
        StorageOp::SetContacts { .. }
            | StorageOp::StoreMessage { .. }
            | StorageOp::MarkDelivered { .. }
            | StorageOp::ChangeGroups { .. }
            | StorageOp::CreateRoom { .. }
            | StorageOp::ChangeRoom { .. }
            | StorageOp::StoreRoomMessage { .. }
            | StorageOp::MarkRoomRead { .. }
    )
}

/// Whether `BREEZE_FUZZ_TRACE` is set: then every step and output is printed to stderr.
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("BREEZE_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// What the harness knows of one connection.
#[derive(Debug, Default)]
struct ConnModel {
    opened: Instant,
    /// When the last frame arrived (while open).
    last_frame: Option<Instant>,
    /// The server answered `Hello` with `Welcome`.
    welcomed: bool,
    /// Closed: by the core (`Close` seen) or by the host (and the drain after it is done).
    closed: bool,
    /// The host closed it while earlier output was still undrained: frames queued before
    /// the close may still come out of this drain.
    host_closing: bool,
    bye: Option<CloseReason>,
    /// How a session on it must end, once the connection is known to be ending.
    end: Option<SessionEnd>,
    /// Every `Login` the peer sent: (user, credential).
    attempts: Vec<(UserId, Credential)>,
    /// Every `Send` the peer sent: (id, to).
    sends: Vec<(u64, UserId)>,
    login_ok: Option<UserId>,
    session: Option<UserId>,
    /// The presence view the server has given this connection.
    view: BTreeMap<UserId, Presence>,
    diffs_this_drain: u32,
    delivered: BTreeSet<u64>,
    last_batch_seq: Option<u64>,
    last_live_seq: Option<u64>,
    batch_delivers: u32,
    offline_done: bool,
}

impl ConnModel {
    fn open(&self) -> bool {
        !self.closed && !self.host_closing
    }

    /// The user the server has logged this connection in as (`LoginOk` seen).
    fn logged_in_as(&self) -> Option<&UserId> {
        self.session.as_ref().or(self.login_ok.as_ref())
    }
}

/// Credentials storage has ever accepted for one user.
#[derive(Debug, Default)]
struct Creds {
    passwords: BTreeSet<String>,
    tokens: BTreeSet<Vec<u8>>,
}

struct Waiting {
    id: RequestId,
    op: StorageOp,
}

struct Held {
    id: RequestId,
    result: StorageResult,
    write: bool,
}

pub struct Harness {
    cfg: ServerConfig,
    now: Instant,
    server: Server,
    store: MemStore,
    /// Every connection ever opened, in order.
    opened: Vec<ConnId>,
    conns: BTreeMap<ConnId, ConnModel>,
    /// Storage requests not performed yet, in the order they were issued.
    waiting: Vec<Waiting>,
    /// Results performed but not reported yet, in the order they were performed.
    held: Vec<Held>,
    creds: BTreeMap<UserId, Creds>,
    tokens: Vec<Vec<u8>>,
    /// Every message stored: seq → (addressee, delivery).
    stored: BTreeMap<u64, (UserId, Delivery)>,
    registered: usize,
    /// Outputs of earlier steps wait undrained.
    undrained: bool,
    shut_down: bool,
}

impl Harness {
    pub fn new(setup: Setup) -> Self {
        let cfg = config(setup);
        let mut store = MemStore::new();
        let mut creds = BTreeMap::new();
        for u in INITIAL_USERS {
            store.add_account(user(u), PASSWORD);
            creds
                .entry(user(u))
                .or_insert_with(Creds::default)
                .passwords
                .insert(PASSWORD.to_string());
        }
        let server = Server::new(cfg.clone(), store.users());
        trace!("== setup {setup:?}");
        Harness {
            cfg,
            now: Instant::ZERO,
            server,
            store,
            opened: Vec::new(),
            conns: BTreeMap::new(),
            waiting: Vec::new(),
            held: Vec::new(),
            creds,
            tokens: Vec::new(),
            stored: BTreeMap::new(),
            registered: INITIAL_USERS.len(),
            undrained: false,
            shut_down: false,
        }
    }

    fn pick_conn(&self, n: u8) -> Option<ConnId> {
        if self.opened.is_empty() {
            return None;
        }
        Some(self.opened[n as usize % self.opened.len()])
    }

    pub fn step(&mut self, step: &Step) {
        trace!("-- t={:?} {:?}", self.now, step);
        match &step.op {
            Op::Open { from } => {
                if self.shut_down {
                    return;
                }
                let addr = (from % 4 != 0).then(|| IpAddr::from([192, 0, 2, from % 4]));
                let conn = ConnId(self.opened.len() as u64 + 1);
                self.opened.push(conn);
                self.conns.insert(
                    conn,
                    ConnModel {
                        opened: self.now,
                        ..ConnModel::default()
                    },
                );
                self.server.handle_connect(self.now, conn, addr);
            }
            Op::Frame { conn, msg } => {
                let Some(conn) = self.pick_conn(*conn) else {
                    return;
                };
                let msg = self.client_msg(msg);
                self.frame(conn, &encode(&msg));
            }
            Op::Raw { conn, bytes } => {
                let Some(conn) = self.pick_conn(*conn) else {
                    return;
                };
                self.frame(conn, &bytes.0);
            }
            Op::Close { conn } => {
                let Some(conn) = self.pick_conn(*conn) else {
                    return;
                };
                self.host_closed(conn, SessionEnd::ConnectionLost);
                self.server.handle_closed(self.now, conn);
            }
            Op::Abort { conn, reason: r } => {
                let Some(conn) = self.pick_conn(*conn) else {
                    return;
                };
                let r = reason(*r);
                self.host_closed(conn, SessionEnd::Closed(r));
                self.server.handle_aborted(self.now, conn, r);
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(*ms as u64)),
            Op::Apply { pick } => {
                self.apply(*pick as usize, false);
            }
            Op::Report { pick } => self.report(*pick as usize),
            Op::Complete { pick } => {
                if let Some(i) = self.apply(*pick as usize, false) {
                    self.report(i);
                }
            }
            Op::Fail { pick } => {
                if let Some(i) = self.apply(*pick as usize, true) {
                    self.report(i);
                }
            }
            Op::Settle => self.settle(),
            Op::Shutdown => {
                self.shut_down = true;
                self.server.shutdown(self.now);
            }
        }
        let always_drains = matches!(step.op, Op::Advance { .. } | Op::Settle);
        if step.hold && !always_drains {
            self.undrained = true;
        } else {
            self.drain();
        }
    }

    /// Storage settled, then two minutes of silence: everything must be gone.
    pub fn finish(&mut self) {
        trace!("== finish");
        self.settle();
        self.advance(self.cfg.heartbeat_timeout * 4);
        let st = self.server.stats();
        assert_eq!(
            st.connections, 0,
            "connections left after the heartbeat timeout: {st:?}"
        );
        assert_eq!(st.sessions, 0, "{st:?}");
        assert_eq!(
            st.online_users, 0,
            "users online after every session and grace ended: {st:?}"
        );
        assert_eq!(st.pending_storage, 0, "{st:?}");
        assert!(
            self.server.who(self.now).is_empty(),
            "who() lists users after the end"
        );
    }

    fn client_msg(&self, msg: &Msg) -> ClientMsg {
        match *msg {
            Msg::Hello {
                bad_magic,
                bad_version,
                long_client,
            } => ClientMsg::Hello {
                magic: if bad_magic { *b"BRZF" } else { MAGIC },
                // Older than any the server answers (a newer one is answered with its own).
                version: if bad_version {
                    OLDEST_PROTOCOL_VERSION - 1
                } else {
                    PROTOCOL_VERSION
                },
                client: if long_client {
                    "c".repeat(65)
                } else {
                    "fuzz".into()
                },
            },
            Msg::Register { user, password: pw } => ClientMsg::Register {
                user: name(user),
                password: password(pw),
            },
            Msg::Login {
                user,
                credential,
                status: s,
            } => ClientMsg::Login {
                user: name(user),
                credential: match credential {
                    Cred::Password(pw) => Credential::Password(password(pw)),
                    Cred::Token(n) => Credential::Token(
                        self.tokens
                            .get(n as usize % (self.tokens.len() + 1))
                            .cloned()
                            .unwrap_or_else(|| b"token-bogus".to_vec()),
                    ),
                },
                status: status(s),
            },
            Msg::Logout => ClientMsg::Logout,
            Msg::ChangePassword { old, new } => ClientMsg::ChangePassword {
                old: password(old),
                new: password(new),
            },
            Msg::SetStatus { status: s } => ClientMsg::SetStatus { status: status(s) },
            Msg::AddContact { user } => ClientMsg::AddContact { user: name(user) },
            Msg::RemoveContact { user } => ClientMsg::RemoveContact { user: name(user) },
            Msg::Send {
                id,
                to,
                body: b,
                attachment: a,
            } => ClientMsg::Send {
                id: id as u64,
                to: name(to),
                body: body(b),
                attachment: a.map(attachment),
            },
            Msg::Ack { ref seqs, too_many } => ClientMsg::Ack {
                seqs: if too_many {
                    (0..=MAX_ACK_SEQS as u64).collect()
                } else {
                    seqs.0.iter().map(|&s| s as u64).collect()
                },
            },
            Msg::Ping { nonce } => ClientMsg::Ping {
                nonce: nonce as u64,
            },
            Msg::History {
                with,
                before,
                limit,
            } => ClientMsg::History {
                with: name(with),
                before: before.map(u64::from),
                limit,
            },
            Msg::AdminWho => ClientMsg::AdminWho,
        }
    }

    fn frame(&mut self, conn: ConnId, payload: &[u8]) {
        let now = self.now;
        let m = self.conns.get_mut(&conn).expect("opened");
        if m.open() {
            m.last_frame = Some(now);
        }
        match decode::<ClientMsg>(payload) {
            Ok(ClientMsg::Login {
                user, credential, ..
            }) => m.attempts.push((user, credential)),
            Ok(ClientMsg::Send { id, to, .. }) => m.sends.push((id, to)),
            _ => {}
        }
        trace!("   frame {conn:?}: {:?}", decode::<ClientMsg>(payload));
        self.server.handle_frame(now, conn, payload);
    }

    fn host_closed(&mut self, conn: ConnId, end: SessionEnd) {
        let undrained = self.undrained;
        let m = self.conns.get_mut(&conn).expect("opened");
        if m.closed || m.host_closing {
            return;
        }
        if m.end.is_none() {
            m.end = Some(end);
        }
        if undrained {
            m.host_closing = true;
        } else {
            m.closed = true;
        }
    }

    /// Moves time on like `testkit::Rig::advance`: every deadline fires exactly when due.
    fn advance(&mut self, d: Duration) {
        // A host drains before it sleeps.
        self.drain();
        let end = self.now + d;
        let mut rounds = 0;
        while let Some(t) = self.server.poll_timeout().filter(|&t| t <= end) {
            self.now = self.now.max(t);
            trace!("   timeout at {:?}", self.now);
            self.server.handle_timeout(self.now);
            if let Some(next) = self.server.poll_timeout() {
                assert!(
                    next > self.now,
                    "handle_timeout({:?}) left poll_timeout() at {next:?}",
                    self.now
                );
            }
            self.drain();
            rounds += 1;
            assert!(rounds < 100_000, "the timeout loop does not end");
        }
        self.now = end;
        self.drain();
    }

    /// Performs one waiting request (a write only when it is the oldest waiting write), or
    /// fails it; returns its index among the held results.
    fn apply(&mut self, pick: usize, fail: bool) -> Option<usize> {
        if self.waiting.is_empty() {
            return None;
        }
        let mut i = pick % self.waiting.len();
        if is_write(&self.waiting[i].op) {
            i = self
                .waiting
                .iter()
                .position(|w| is_write(&w.op))
                .expect("one is");
        }
        let Waiting { id, op } = self.waiting.remove(i);
        let write = is_write(&op);
        let result = if fail {
            op.failed(StorageError::Failed("injected by the fuzzer".into()))
        } else {
            self.perform(op.clone())
        };
        trace!("   storage {id:?} {op:?} -> {result:?}");
        self.held.push(Held { id, result, write });
        Some(self.held.len() - 1)
    }

    fn perform(&mut self, op: StorageOp) -> StorageResult {
        let now_ms = self.now.since_epoch().as_millis() as u64;
        let result = self.store.apply(op.clone(), now_ms);
        match (&op, &result) {
            (StorageOp::Register { user, password }, StorageResult::Registered(Ok(()))) => {
                self.creds
                    .entry(user.clone())
                    .or_default()
                    .passwords
                    .insert(password.clone());
            }
            (
                StorageOp::ChangePassword { user, new, .. },
                StorageResult::PasswordChanged(Ok(())),
            ) => {
                self.creds
                    .entry(user.clone())
                    .or_default()
                    .passwords
                    .insert(new.clone());
            }
            (StorageOp::Authenticate { user, .. }, StorageResult::Authenticated(Ok(account))) => {
                self.creds
                    .entry(user.clone())
                    .or_default()
                    .tokens
                    .insert(account.resume_token.clone());
                self.tokens.push(account.resume_token.clone());
            }
            (StorageOp::StoreMessage { .. }, StorageResult::MessageStored(Ok(stored))) => {
                let seq = stored.delivery.seq;
                if stored.duplicate {
                    assert_eq!(
                        self.stored.get(&seq).map(|(_, d)| d),
                        Some(&stored.delivery),
                        "MemStore's duplicate differs"
                    );
                } else {
                    self.stored
                        .insert(seq, (stored.to.clone(), stored.delivery.clone()));
                }
            }
            _ => {}
        }
        result
    }

    /// Reports the `pick`th held result (the oldest held write instead, if it is a write).
    fn report(&mut self, pick: usize) {
        if self.held.is_empty() {
            return;
        }
        let mut i = pick % self.held.len();
        if self.held[i].write {
            i = self.held.iter().position(|h| h.write).expect("one is");
        }
        let Held { id, result, .. } = self.held.remove(i);
        trace!("   report {id:?}");
        self.server.handle_storage(self.now, id, result);
    }

    fn settle(&mut self) {
        // Requests still in undrained output count too.
        self.drain();
        let mut rounds = 0;
        while !self.waiting.is_empty() || !self.held.is_empty() {
            while self.apply(0, false).is_some() {}
            while !self.held.is_empty() {
                self.report(0);
            }
            self.drain();
            rounds += 1;
            assert!(rounds < 1000, "storage never settles");
        }
        self.drain();
    }

    /// Drains the server's output, checking each item, then checks the state.
    fn drain(&mut self) {
        while let Some(out) = self.server.poll_output() {
            self.output(out);
        }
        self.undrained = false;
        for m in self.conns.values_mut() {
            if m.host_closing {
                m.host_closing = false;
                m.closed = true;
            }
            m.diffs_this_drain = 0;
        }
        self.check_state();
    }

    fn output(&mut self, out: Output) {
        match out {
            Output::Send { conn, payload } => self.sent(conn, &payload),
            Output::Close { conn, reason } => {
                trace!("   close {conn:?} {reason:?}");
                let now = self.now;
                let cfg = &self.cfg;
                let m = self.conns.get_mut(&conn).unwrap_or_else(|| {
                    panic!("Close for {conn:?}, never opened");
                });
                assert!(!m.closed, "Close for {conn:?}, already closed");
                // The core closed it before any host close still queued behind: its reason
                // is how the session ends.
                assert_eq!(
                    m.bye,
                    Some(reason),
                    "Close {reason:?} on {conn:?} without that Bye"
                );
                match reason {
                    CloseReason::HandshakeTimeout => {
                        assert!(!m.welcomed, "handshake timeout after Welcome on {conn:?}");
                        assert_eq!(
                            now,
                            m.opened + cfg.handshake_timeout,
                            "handshake timeout of {conn:?} not at its deadline"
                        );
                    }
                    CloseReason::HeartbeatTimeout => {
                        assert!(m.welcomed, "heartbeat timeout before Welcome on {conn:?}");
                        let last = m.last_frame.expect("welcomed after a frame");
                        assert_eq!(
                            now,
                            last + cfg.heartbeat_timeout,
                            "heartbeat timeout of {conn:?} not at its deadline"
                        );
                    }
                    _ => {}
                }
                m.end = Some(if reason == CloseReason::LoggedOut {
                    SessionEnd::LoggedOut
                } else {
                    SessionEnd::Closed(reason)
                });
                m.closed = true;
                m.host_closing = false;
            }
            Output::Storage { id, op } => {
                trace!("   storage request {id:?} {op:?}");
                self.storage_request(&op);
                self.waiting.push(Waiting { id, op });
            }
            Output::Event(ServerEvent::SessionStarted { user, at, agent }) => {
                trace!("   session started {user:?} at {at:?}");
                assert!(!agent, "an agent session, but no peer sent AgentLogin");
                assert_eq!(at.node, self.cfg.node);
                let conn = at.conn;
                let replace = self.cfg.duplicate_login == DuplicateLogin::Replace;
                if replace {
                    let other = self
                        .conns
                        .iter()
                        .find(|(c, m)| **c != conn && m.session.as_ref() == Some(&user));
                    assert!(
                        other.is_none(),
                        "policy replace, but {user:?} also has a session on {:?}",
                        other.map(|(c, _)| c)
                    );
                }
                let m = self.conns.get(&conn).unwrap_or_else(|| {
                    panic!("session on {conn:?}, never opened");
                });
                assert!(!m.closed, "session started on closed {conn:?}");
                assert!(m.session.is_none(), "second session on {conn:?}");
                assert_eq!(
                    m.login_ok.as_ref(),
                    Some(&user),
                    "SessionStarted without LoginOk"
                );
                self.check_verified(conn, &user);
                let m = self.conns.get_mut(&conn).expect("checked");
                m.session = Some(user);
            }
            Output::Event(ServerEvent::SessionEnded { user, at, reason }) => {
                trace!("   session ended {user:?} at {at:?}: {reason:?}");
                assert_eq!(at.node, self.cfg.node);
                let m = self.conns.get_mut(&at.conn).unwrap_or_else(|| {
                    panic!("session ended on {:?}, never opened", at.conn);
                });
                assert_eq!(
                    m.session.as_ref(),
                    Some(&user),
                    "SessionEnded for another user"
                );
                assert_eq!(
                    m.end,
                    Some(reason),
                    "session on {:?} ended as {reason:?}",
                    at.conn
                );
                m.session = None;
            }
            // Events added later (log lines, metrics) carry nothing checked here.
            #[allow(unreachable_patterns)]
            Output::Event(other) => trace!("   event {other:?}"),
            Output::Cluster { .. } => unreachable!("invariant: the fuzzed server is one node"),
            // Every `Ping` is passed to the core here, as a host may.
            Output::AnswerPings { .. } => {}
        }
    }

    /// The peer sent a `Login` for `user` on `conn` with a credential storage accepted for
    /// `user` at some point.
    fn check_verified(&self, conn: ConnId, user: &UserId) {
        let m = &self.conns[&conn];
        let creds = self.creds.get(user);
        let ok = m.attempts.iter().any(|(u, cred)| {
            u == user
                && creds.is_some_and(|c| match cred {
                    Credential::Password(p) => c.passwords.contains(p),
                    Credential::Token(t) => c.tokens.contains(t),
                })
        });
        assert!(
            ok,
            "{conn:?} logged in as {user:?} without a verified credential; it sent {:?}",
            m.attempts
        );
    }

    fn session_users(&self) -> BTreeSet<&UserId> {
        self.conns
            .values()
            .filter_map(|m| m.session.as_ref())
            .collect()
    }

    fn storage_request(&self, op: &StorageOp) {
        let has_session = |u: &UserId| self.session_users().contains(u);
        match op {
            StorageOp::Register { user, password } => {
                assert!(user.validate().is_ok(), "Register of invalid name {user:?}");
                assert!(
                    password_is_acceptable(password),
                    "Register with a bad password"
                );
            }
            StorageOp::Authenticate {
                user,
                credential,
                issue_token,
            } => {
                let asked = self
                    .conns
                    .values()
                    .any(|m| m.attempts.iter().any(|(u, c)| u == user && c == credential));
                assert!(asked, "Authenticate({user:?}) that no peer asked for");
                // Peers here send `Login` only (a device): each is owed a resume token.
                assert!(
                    issue_token,
                    "a device's Authenticate({user:?}) issues no token"
                );
            }
            StorageOp::ChangePassword { user, new, .. } => {
                assert!(
                    has_session(user),
                    "ChangePassword for {user:?} without a session"
                );
                assert!(
                    password_is_acceptable(new),
                    "ChangePassword to a bad password"
                );
            }
            StorageOp::SetContacts { user, add, remove } => {
                assert!(
                    has_session(user),
                    "SetContacts for {user:?} without a session"
                );
                assert!(!add.contains(user), "{user:?} adds itself as a contact");
                assert!(
                    add.len() <= self.cfg.max_contacts && remove.len() <= self.cfg.max_contacts,
                    "SetContacts over the contact limit"
                );
            }
            StorageOp::StoreMessage {
                from,
                to,
                id,
                body,
                attachment,
            } => {
                let sent = self.conns.values().any(|m| {
                    m.session.as_ref() == Some(from) && m.sends.contains(&(*id, to.clone()))
                });
                assert!(
                    sent,
                    "StoreMessage({from:?} -> {to:?} #{id}) that no session of {from:?} sent"
                );
                assert!(body.len() <= MAX_BODY, "body over the limit stored");
                if let Some(a) = attachment {
                    assert!(
                        a.data.len() <= MAX_ATTACHMENT as usize,
                        "attachment over the limit"
                    );
                    assert!(
                        a.mime.len() <= 255 && a.name.len() <= 255,
                        "label over the limit"
                    );
                }
            }
            StorageOp::LoadMailbox {
                user,
                limit,
                max_bytes,
                ..
            } => {
                assert!(
                    has_session(user),
                    "LoadMailbox for {user:?} without a session"
                );
                assert_eq!(
                    (*limit, *max_bytes),
                    (self.cfg.mailbox_page, self.cfg.mailbox_page_bytes),
                    "mailbox page size"
                );
            }
            StorageOp::MarkDelivered { user, seqs } => {
                assert!(
                    has_session(user),
                    "MarkDelivered for {user:?} without a session"
                );
                assert!(
                    !seqs.is_empty() && seqs.len() <= MAX_ACK_SEQS,
                    "{} seqs",
                    seqs.len()
                );
            }
            StorageOp::LoadHistory { user, limit, .. } => {
                assert!(
                    has_session(user),
                    "LoadHistory for {user:?} without a session"
                );
                assert!(*limit <= MAX_HISTORY, "history limit {limit}");
            }
            StorageOp::ChangeGroups { user, .. } => {
                // Only the user's own session changes the user's groups (the harness sends
                // no group requests yet; a session acting for another user would show here).
                assert!(
                    has_session(user),
                    "ChangeGroups for {user:?} without a session"
                );
            }
            StorageOp::SetBanned { .. } => {
                // Only an admin's session asks; the server checks who is one.
                assert!(
                    self.conns.values().any(|m| m.logged_in_as().is_some()),
                    "SetBanned with nobody logged in"
                );
            }
            StorageOp::SetProfile { user, .. } => {
                assert!(
                    has_session(user),
                    "SetProfile for {user:?} without a session"
                );
            }
            // Reads: a login's cards (asked before its session is in this model's books) or
            // a session's `GetProfile`.
            StorageOp::LoadProfiles { .. } | StorageOp::LoadProfile { .. } => {}
            // A version-2 session reads its rooms after its mailbox.
            StorageOp::LoadRooms { user } | StorageOp::LoadRoom { user, .. } => {
                assert!(
                    has_session(user),
                    "a room read for {user:?} without a session"
                );
            }
            StorageOp::MarkRoomRead { user, .. } => {
                assert!(
                    has_session(user),
                    "MarkRoomRead for {user:?} without a session"
                );
            }
            StorageOp::CreateRoom { owner: user, .. }
            | StorageOp::ChangeRoom { by: user, .. }
            | StorageOp::StoreRoomMessage { from: user, .. } => {
                assert!(
                    has_session(user),
                    "a room change by {user:?} without a session"
                );
            }
        }
    }

    /// One frame to `conn`.
    fn sent(&mut self, conn: ConnId, payload: &[u8]) {
        let len = payload.len();
        assert!(
            len <= self.cfg.max_frame as usize,
            "frame of {len} bytes over the limit {}",
            self.cfg.max_frame
        );
        let msg = match decode::<ServerMsg>(payload) {
            Ok(msg) => msg,
            Err(e) => {
                panic!("the server sent {conn:?} a frame that does not decode ({e}): {payload:?}")
            }
        };
        trace!("   send {conn:?}: {msg:?}");
        let stored = &self.stored;
        let mut verify = None;
        let m = self.conns.get_mut(&conn).unwrap_or_else(|| {
            panic!("frame to {conn:?}, never opened: {msg:?}");
        });
        assert!(!m.closed, "frame to closed {conn:?}: {msg:?}");
        assert!(m.bye.is_none(), "frame to {conn:?} after Bye: {msg:?}");
        match msg {
            ServerMsg::Welcome { .. } => {
                assert!(!m.welcomed, "second Welcome on {conn:?}");
                m.welcomed = true;
            }
            ServerMsg::Bye { reason } => m.bye = Some(reason),
            ServerMsg::LoginOk { user, .. } => {
                assert!(m.welcomed, "LoginOk before Welcome on {conn:?}");
                assert!(
                    m.login_ok.is_none() && m.session.is_none(),
                    "second LoginOk on {conn:?}"
                );
                m.login_ok = Some(user.clone());
                verify = Some(user);
            }
            ServerMsg::PresenceSnapshot { entries } => {
                let me = m
                    .logged_in_as()
                    .unwrap_or_else(|| panic!("PresenceSnapshot to {conn:?}, not logged in"))
                    .clone();
                let view = view_of(&entries, &me, conn, "PresenceSnapshot");
                m.view = view;
            }
            ServerMsg::PresenceDiff { entries } => {
                let me = m
                    .session
                    .clone()
                    .unwrap_or_else(|| panic!("PresenceDiff to {conn:?}, no session"));
                assert!(!entries.is_empty(), "empty PresenceDiff to {conn:?}");
                m.diffs_this_drain += 1;
                assert!(
                    m.diffs_this_drain == 1,
                    "two PresenceDiffs to {conn:?} in one batch"
                );
                view_of(&entries, &me, conn, "PresenceDiff");
                for e in entries {
                    let old = m.view.insert(e.user.clone(), e.presence);
                    assert_ne!(
                        old,
                        Some(e.presence),
                        "{conn:?} told again that {:?} is {:?}",
                        e.user,
                        e.presence
                    );
                }
            }
            ServerMsg::Deliver(d) => {
                let me = m
                    .session
                    .as_ref()
                    .unwrap_or_else(|| panic!("Deliver #{} to {conn:?}, no session", d.seq));
                let Some((to, delivery)) = stored.get(&d.seq) else {
                    panic!("Deliver of seq {} that was never stored", d.seq);
                };
                assert_eq!(
                    to, me,
                    "seq {} for {to:?} delivered to {conn:?}, a session of {me:?}",
                    d.seq
                );
                assert_eq!(&d, delivery, "delivery differs from what was stored");
                assert!(
                    m.delivered.insert(d.seq),
                    "seq {} delivered twice to {conn:?}",
                    d.seq
                );
                let last = if m.offline_done {
                    &mut m.last_live_seq
                } else {
                    m.batch_delivers += 1;
                    &mut m.last_batch_seq
                };
                assert!(
                    last.is_none_or(|l| l < d.seq),
                    "seq {} after {last:?} on {conn:?}",
                    d.seq
                );
                *last = Some(d.seq);
            }
            ServerMsg::OfflineDone { count } => {
                assert!(m.session.is_some(), "OfflineDone to {conn:?}, no session");
                assert!(!m.offline_done, "second OfflineDone on {conn:?}");
                assert!(
                    count <= m.batch_delivers,
                    "OfflineDone {{ count: {count} }} after {} deliveries",
                    m.batch_delivers
                );
                m.offline_done = true;
            }
            ServerMsg::Groups { .. } | ServerMsg::GroupsChanged { .. } => {
                // Only to a logged-in connection (the login's snapshot comes right after its
                // `LoginOk`): a user's groups are private to the user.
                assert!(
                    m.session.is_some() || m.login_ok.is_some(),
                    "{msg:?} to {conn:?}, not logged in"
                );
            }
            ServerMsg::OfflineWaiting { count } => {
                assert!(
                    m.session.is_some(),
                    "OfflineWaiting to {conn:?}, no session"
                );
                assert!(
                    !m.offline_done && count > 0,
                    "OfflineWaiting {{ count: {count} }} on {conn:?} after OfflineDone or empty"
                );
            }
            ServerMsg::Sent { id, seq } => {
                let me = m
                    .session
                    .as_ref()
                    .unwrap_or_else(|| panic!("Sent to {conn:?}, no session"));
                let Some((_, d)) = stored.get(&seq) else {
                    panic!("Sent names seq {seq}, never stored");
                };
                assert!(
                    &d.from == me && d.id == id,
                    "Sent {{ id: {id}, seq: {seq} }} to a session of {me:?}, but seq {seq} is {:?}#{}",
                    d.from,
                    d.id
                );
            }
            ServerMsg::ContactsChanged { removed, .. } => {
                assert!(
                    m.logged_in_as().is_some(),
                    "ContactsChanged to {conn:?}, not logged in"
                );
                // Under scope `Contacts` a removed contact leaves the view on the client's
                // side; the server says nothing more of it.
                if self.cfg.scope == WatchScope::Contacts {
                    for r in &removed {
                        m.view.remove(r);
                    }
                }
            }
            ServerMsg::OwnStatus { .. }
            | ServerMsg::PasswordChanged
            | ServerMsg::History { .. }
            | ServerMsg::Who { .. }
            | ServerMsg::AdminDone { .. }
            | ServerMsg::ProfileSnapshot { .. }
            | ServerMsg::ProfileDiff { .. }
            | ServerMsg::Profile { .. }
            | ServerMsg::RoomMembers { .. }
            | ServerMsg::RoomLeft { .. }
            | ServerMsg::RoomDeliver(_)
            | ServerMsg::RoomHistory { .. }
            | ServerMsg::FileOffered { .. }
            | ServerMsg::TransferAccepted { .. }
            | ServerMsg::TransferStart { .. }
            | ServerMsg::TransferRelay { .. }
            | ServerMsg::TransferData { .. }
            | ServerMsg::TransferProgress { .. }
            | ServerMsg::TransferEnded { .. } => {
                assert!(
                    m.logged_in_as().is_some(),
                    "{msg:?} to {conn:?}, not logged in"
                );
            }
            ServerMsg::Throttled { request, .. } => {
                assert!(
                    matches!(
                        request,
                        breeze_core::message::RequestKind::Login
                            | breeze_core::message::RequestKind::AgentLogin
                    ),
                    "Throttled for {request:?} on {conn:?}"
                );
            }
            ServerMsg::Registered { .. } | ServerMsg::Pong { .. } | ServerMsg::Error { .. } => {
                assert!(m.welcomed, "{msg:?} to {conn:?} before Welcome");
            }
        }
        if let Some(user) = verify {
            self.check_verified(conn, &user);
        }
    }

    /// After every drain: the harness and the server agree.
    fn check_state(&mut self) {
        let st = self.server.stats();
        let open = self.conns.values().filter(|m| m.open()).count();
        let sessions: BTreeMap<&UserId, BTreeSet<ConnId>> = self
            .conns
            .iter()
            .filter_map(|(c, m)| m.session.as_ref().map(|u| (u, *c)))
            .fold(BTreeMap::new(), |mut acc, (u, c)| {
                acc.entry(u).or_default().insert(c);
                acc
            });
        let session_count: usize = sessions.values().map(BTreeSet::len).sum();
        assert!(st.sessions <= st.connections, "{st:?}");
        assert_eq!(st.connections, open, "open connections: {st:?}");
        assert_eq!(st.sessions, session_count, "sessions: {st:?}");
        assert_eq!(
            st.pending_storage,
            self.waiting.len() + self.held.len(),
            "pending storage: {st:?}"
        );
        assert!(
            st.registered_users >= self.registered,
            "the directory shrank: {st:?}"
        );
        self.registered = st.registered_users;
        assert!(st.registered_users <= self.store.users().len(), "{st:?}");
        assert!(st.online_users <= st.registered_users, "{st:?}");
        if self.cfg.offline_grace.is_zero() {
            assert_eq!(st.online_users, sessions.len(), "online users: {st:?}");
        } else {
            assert!(st.online_users >= sessions.len(), "online users: {st:?}");
        }
        if self.cfg.duplicate_login == DuplicateLogin::Replace {
            for (u, cs) in &sessions {
                assert!(cs.len() <= 1, "policy replace, {u:?} has sessions {cs:?}");
            }
        }
        for m in self.conns.values() {
            if !m.open() {
                continue;
            }
            let deadline = if m.welcomed {
                m.last_frame.expect("welcomed after a frame") + self.cfg.heartbeat_timeout
            } else {
                m.opened + self.cfg.handshake_timeout
            };
            assert!(
                deadline > self.now,
                "a connection outlived its deadline {deadline:?}"
            );
        }

        // The server's own view of who is online, with which sessions.
        let who = self.server.who(self.now);
        let mut truth: BTreeMap<&UserId, Presence> = BTreeMap::new();
        for entry in &who {
            let conns: BTreeSet<ConnId> = entry.sessions.iter().map(|s| ConnId(s.conn)).collect();
            let expected = sessions.get(&entry.user).cloned().unwrap_or_default();
            assert_eq!(conns, expected, "who() sessions of {:?}", entry.user);
            assert!(entry.sessions.iter().all(|s| s.node == self.cfg.node.0));
            truth.insert(&entry.user, entry.status.visible());
        }
        for (u, cs) in &sessions {
            assert!(
                truth.contains_key(u),
                "{u:?} has sessions {cs:?} but who() omits it"
            );
            let at: BTreeSet<ConnId> = self.server.sessions_of(u).iter().map(|l| l.conn).collect();
            assert_eq!(&at, cs, "sessions_of({u:?})");
        }
        // Every session's presence view agrees with the server's state once a batch is out.
        for (conn, m) in &self.conns {
            let Some(me) = &m.session else { continue };
            for (u, p) in &m.view {
                let real = truth.get(u).copied().unwrap_or(Presence::Offline);
                assert_eq!(
                    *p, real,
                    "{conn:?} ({me:?}) sees {u:?} as {p:?}, but it is {real:?}"
                );
            }
            if self.cfg.scope == WatchScope::Everyone {
                assert_eq!(
                    m.view.len() + 1,
                    st.registered_users,
                    "{conn:?} ({me:?}) sees {:?} of {} users",
                    m.view.keys().collect::<Vec<_>>(),
                    st.registered_users
                );
            }
        }
    }
}

/// Checks one presence list for `me` (never itself, each user once) and returns it as a map.
fn view_of(
    entries: &[PresenceEntry],
    me: &UserId,
    conn: ConnId,
    what: &str,
) -> BTreeMap<UserId, Presence> {
    let mut view = BTreeMap::new();
    for e in entries {
        assert_ne!(&e.user, me, "{what} to {conn:?} names its own user {me:?}");
        assert!(
            view.insert(e.user.clone(), e.presence).is_none(),
            "{what} to {conn:?} names {:?} twice",
            e.user
        );
    }
    view
}
