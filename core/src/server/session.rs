//! Connections, sessions and users as the server core sees them.

use super::budget::InFlight;
use super::vec_set::VecSet;
use crate::config::ServerConfig;
use crate::ids::{ConnId, NodeId, RequestId, UserId};
use crate::message::{Presence, Status};
use crate::time::Instant;
use bytes::Bytes;
use std::net::IpAddr;

/// One open connection on this node.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) opened: Instant,
    /// Time of the last inbound frame: any frame is life, not only pings.
    pub(crate) last_seen: Instant,
    /// Time of the last inbound frame other than a `Ping`: what `who` reports as idle. A
    /// heartbeat is not activity (IRC's idle time does not count PINGs either), and a host
    /// that answers pings in place (`pings.rs`) does not tell the core of each one.
    pub(crate) last_active: Instant,
    /// The deadline this connection's live entry in the heartbeat queue carries; entries
    /// with any other instant are superseded and skipped.
    pub(crate) armed: Instant,
    pub(crate) phase: Phase,
    /// The peer's address, when the host knows it: login failures count against it.
    pub(crate) addr: Option<IpAddr>,
    /// The frame budget's theoretical arrival time (see `guard::admit_frame`).
    pub(crate) frame_tat: Instant,
    /// `History` requests of this connection waiting for storage.
    pub(crate) history_loads: u8,
    /// The protocol version agreed in `Hello` (0 before it): frames and fields of later
    /// versions are never sent to it, and its requests of later versions are `Malformed`.
    pub(crate) version: u16,
    /// Storage requests and hashes of this connection in flight (see `budget`).
    pub(crate) in_flight: InFlight,
}

#[derive(Debug)]
pub(crate) enum Phase {
    /// Opened; the first frame must be `Hello`.
    AwaitHello,
    /// Handshake done, not logged in; `login` is the pending authentication, if any.
    Ready {
        login: Option<RequestId>,
    },
    Session(Session),
}

/// What a login asks to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// One of the user's devices, with the status it logs in with: it makes the user online,
    /// is subject to the duplicate-login policy and gets the user's messages.
    Device(Status),
    /// A script, bot or admin query (`AgentLogin`): none of the above. It is kept out of
    /// `User::sessions`, so presence, replacement and delivery never see it.
    Agent,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) user: UserId,
    pub(crate) since: Instant,
    /// An agent session (`Role::Agent`): not one of `User::sessions`.
    pub(crate) agent: bool,
    pub(crate) mailbox: Mailbox,
    /// Acks of this session: at most one `MarkDelivered` in flight; acks arriving meanwhile
    /// wait here and go as one request when it is answered. A client that acks each message
    /// by itself so costs one storage place, not one per frame, and is never refused `Busy`
    /// for acking at the pace messages arrive.
    pub(crate) marking: bool,
    pub(crate) acks_waiting: Vec<u64>,
    /// Room messages owed to this session (version 3; `rooms.rs`).
    pub(crate) rooms: super::rooms::RoomFeed,
    /// Profile cards this session should hold were not sent (a failed read, or no room in the
    /// work budget): they are read again at its next frame (`profiles.rs`).
    pub(crate) profiles_owed: bool,
}

/// Whether the offline messages of a new session have been pushed yet.
///
/// They go out in pages, each read after the client acked the last page, so a mailbox of
/// any size passes through a bounded outbound queue. `floor` is the highest seq pushed so
/// far: every message at or below it was committed before a page was read, so it was in a
/// page or already acknowledged, and a late storage result for it must not deliver it again.
///
/// `high` is the store's highest seq to the user at the login's first read (`None` until a
/// read answers): below it the session is owed only what was not yet acknowledged (its
/// offline messages), above it every message, even one a sibling device (`multi`) acked
/// before this session's read ran. Every read after the first passes it as `all_above`, and
/// once the pages are done `floor` rises to it: old acknowledged history is never pushed.
///
/// In a cluster every message reaches a session through a read (CLUSTER.md, "Messages
/// across nodes"): messages are stored through several nodes and their news arrives in no
/// particular order, but a read sees the mailbox in seq order, so reading above `floor` is
/// what keeps a session's deliveries in seq order and each seq pushed once.
#[derive(Debug)]
pub(crate) enum Mailbox {
    /// A page is being read. Live deliveries wait in `held` (seq, payload): the read may not
    /// reflect writes reported while it was in flight.
    Reading {
        floor: u64,
        high: Option<u64>,
        /// Messages the login's pages held so far, told in `OfflineDone` once the mailbox is
        /// drained; `None` once told: the read catches up on messages stored since.
        offline: Option<u32>,
        held: Vec<(u64, Bytes)>,
        /// Cluster: a message was stored for the user while this read was in flight, and
        /// the page may miss it: the mailbox is read once more after it.
        again: bool,
    },
    /// A page is out; the next is read once the client acks its last seq. Live deliveries
    /// are dropped meanwhile: they are stored above `floor` and `high`, so the next read
    /// brings them, acknowledged by a sibling device or not.
    AwaitingAck {
        floor: u64,
        high: Option<u64>,
        offline: Option<u32>,
        last: u64,
    },
    /// All pushed; live deliveries go straight out.
    Live { floor: u64, high: Option<u64> },
}

impl Mailbox {
    /// The highest seq pushed to the session so far (or, once its pages are done, `high`
    /// if that is higher: below it nothing more is owed).
    pub(crate) fn floor(&self) -> u64 {
        match self {
            Mailbox::Reading { floor, .. }
            | Mailbox::AwaitingAck { floor, .. }
            | Mailbox::Live { floor, .. } => *floor,
        }
    }

    /// The login's high-water mark, once a read has told it.
    pub(crate) fn high(&self) -> Option<u64> {
        match self {
            Mailbox::Reading { high, .. }
            | Mailbox::AwaitingAck { high, .. }
            | Mailbox::Live { high, .. } => *high,
        }
    }
}

impl Conn {
    pub(crate) fn new(now: Instant, addr: Option<IpAddr>) -> Self {
        Conn {
            opened: now,
            last_seen: now,
            last_active: now,
            armed: now,
            phase: Phase::AwaitHello,
            addr,
            frame_tat: now,
            history_loads: 0,
            version: 0,
            in_flight: InFlight::default(),
        }
    }

    /// Whether this connection agreed on `version` or a later one: what `version` added may
    /// be sent to it.
    pub(crate) fn speaks(&self, version: u16) -> bool {
        self.version >= version
    }

    /// When this connection is dead unless a frame arrives first.
    pub(crate) fn deadline(&self, cfg: &ServerConfig) -> Instant {
        match self.phase {
            Phase::AwaitHello => self.opened + cfg.handshake_timeout,
            _ => self.last_seen + cfg.heartbeat_timeout,
        }
    }

    pub(crate) fn session(&self) -> Option<&Session> {
        match &self.phase {
            Phase::Session(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn user(&self) -> Option<&UserId> {
        self.session().map(|s| &s.user)
    }
}

/// A registered user. Every user in the directory has one, online or not, so the everyone
/// scope can list offline users too.
#[derive(Debug)]
pub(crate) struct User {
    pub(crate) status: Status,
    pub(crate) sessions: VecSet<ConnId>,
    /// Loaded from storage when the user comes online; authoritative while connected, since
    /// every change goes through this core.
    pub(crate) contacts: VecSet<UserId>,
    /// The user's last session died and the offline grace runs until this instant.
    pub(crate) lingering: Option<Instant>,
    /// Cluster: how many other live nodes report a session or a grace for the user.
    pub(crate) elsewhere: u32,
    /// Cluster: the Lamport stamp of `status` and the node that set it; the highest wins.
    pub(crate) status_clock: (u64, NodeId),
    /// A ban of the user stored through this node, and the request number current when it
    /// committed: logins asked for before it may have read the account unbanned.
    pub(crate) banned_since: Option<RequestId>,
}

impl User {
    pub(crate) fn new() -> Self {
        User {
            status: Status::Online,
            sessions: VecSet::new(),
            contacts: VecSet::new(),
            lingering: None,
            elsewhere: 0,
            status_clock: (0, NodeId(0)),
            banned_since: None,
        }
    }

    /// Connected, or disconnected but still inside the offline grace.
    pub(crate) fn is_online(&self) -> bool {
        !self.sessions.is_empty() || self.lingering.is_some()
    }

    /// What everyone else should see right now: online on any node of the cluster.
    pub(crate) fn visible(&self) -> Presence {
        if self.is_online() || self.elsewhere > 0 {
            self.status.visible()
        } else {
            Presence::Offline
        }
    }
}
