//! What nodes of a cluster say to each other over the bus (CLUSTER.md). Values only: the
//! server core makes and takes them (`Output::Cluster`, `Server::handle_cluster`), a host
//! adapter carries them as postcard bytes (`encode`/`decode`), one message per bus message.

use crate::ids::{ConnId, NodeId, UserId};
use crate::message::{
    CloseReason, ContactGroup, Delivery, Placement, ProfileCard, RoomDelivery, RoomRole, Status,
};
use crate::time::Duration;
use serde::{Deserialize, Serialize};

/// A node's cluster settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This process's epoch: larger than any earlier process under the same `NodeId` (start
    /// time in ms, or a counter kept in the database). It ends the old process's sessions.
    pub epoch: u64,
    /// A peer not heard from for this long is dead, and so are its sessions.
    pub node_timeout: Duration,
    /// How often this node says it is alive (and where its numbering is).
    pub heartbeat_every: Duration,
    /// A node whose bus link has been down for `node_timeout - fence_margin` closes its
    /// clients: the margin covers the adapter's lag in noticing a dead link.
    pub fence_margin: Duration,
    /// The most bytes of users one snapshot part carries: a node's whole state can outgrow
    /// what one bus message may hold (NATS's `max_payload`, 1 MiB by default).
    pub snapshot_part_bytes: usize,
}

impl ClusterConfig {
    /// The defaults (3 s node timeout, 500 ms heartbeats, 1 s fence margin) for `epoch`.
    pub fn new(epoch: u64) -> Self {
        ClusterConfig {
            epoch,
            node_timeout: Duration::from_secs(3),
            heartbeat_every: Duration::from_millis(500),
            fence_margin: Duration::from_secs(1),
            // A quarter of NATS's default `max_payload`: room for the envelope, and for a
            // server configured lower.
            snapshot_part_bytes: 256 * 1024,
        }
    }

    /// How long the bus link may be down before this node fences itself.
    pub fn fence_after(&self) -> Duration {
        self.node_timeout.saturating_sub(self.fence_margin)
    }
}

/// Where a bus message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// Every other node (a broadcast subject).
    All,
    /// One node (its own subject).
    Node(NodeId),
}

/// One bus message from the node that sent it (the adapter knows the sender: the subject or
/// a header; `handle_cluster` takes it separately).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMsg {
    pub epoch: u64,
    /// For a sequenced body: its number, one more than the sender's previous one in this
    /// epoch. For the others: the sender's last sequenced number when it was sent.
    pub seq: u64,
    pub body: Body,
}

/// A stored 1:1 message as `Body::Mail` carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedMail {
    /// The seq of the recipient's message before this one (`Stored::prev`; 0: none). The
    /// store gives a recipient's messages their seqs in commit order, so none lies between.
    pub prev: u64,
    pub delivery: Delivery,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Alive; `seq` is the sender's last number (a receiver behind it lost something).
    Heartbeat,
    /// Sequenced: the sender's whole state for one user.
    User(UserState),
    /// Sequenced: an account created through the sender.
    Registered(UserId),
    /// Send me your snapshot.
    SyncRequest,
    /// Part `part` of `parts` of the sender's whole state, current at `seq`; parts of one
    /// snapshot share `seq` and are sent in order. A receiver applies the state once it has
    /// every part of one snapshot in order, and asks again after a missing part.
    Snapshot {
        part: u32,
        parts: u32,
        users: Vec<UserState>,
        registered: Vec<UserId>,
        /// The newest card of each profile changed through the sender in this epoch: a lost
        /// `Profile` still reaches every node.
        profiles: Vec<ProfileCard>,
    },
    /// Sequenced: a message to `to` was stored (committed in the shared database) through
    /// the sender; `seq` is the message's, not the bus's. With `carried` (a message without
    /// an attachment, so bus messages stay small), a session of `to` that has everything up
    /// to the recipient's previous message gets it pushed at once; any other session, and
    /// every session without `carried`, reads its mailbox above what it was pushed. Lost, it
    /// is a gap like any other, and the resync that follows makes every session catch up.
    Mail {
        to: UserId,
        seq: u64,
        carried: Option<CarriedMail>,
    },
    /// An administrator ended the user's sessions (`AdminKick`, `AdminBan`): end the ones
    /// here with `reason`. Not sequenced: it changes no state a snapshot could carry (a ban
    /// is in the shared database), so a lost one is not resent.
    EndSessions { user: UserId, reason: CloseReason },
    /// The user's contact groups changed through the sender (stored in the shared database):
    /// pass the `GroupsChanged` on to the user's sessions here. Not sequenced, like
    /// `EndSessions`: the state is in the database, not in any node, so a snapshot could not
    /// carry it; a lost one leaves a device's grouping stale until its next login
    /// (CLUSTER.md, "Contact groups across nodes").
    Groups {
        user: UserId,
        groups: Vec<ContactGroup>,
        moved: Vec<Placement>,
    },
    /// Sequenced: a profile was changed (committed in the shared database) through the
    /// sender; this is the card as stored. Every node announces it to its own watchers.
    Profile(ProfileCard),
    /// Sequenced: a room message was stored (committed in the shared database) through the
    /// sender; `members` are the room's members at that commit, the users owed it. A node
    /// pushes it to their sessions there in the room's order; a session that lacks an earlier
    /// seq (committed through a third node whose news is still on its way) reads the room
    /// instead. Lost, it is a gap like any other, and the resync makes every session read
    /// its rooms.
    RoomMail {
        delivery: RoomDelivery,
        members: Vec<UserId>,
    },
    /// A room's membership changed through the sender (stored in the shared database): `user`
    /// joined or changed role (`role: Some`) or left (`None`); the rest is the room after the
    /// change. Not sequenced, like `Groups`: the state is in the database, and a lost one
    /// leaves that user's sessions here unaware of the change until their next login
    /// (CLUSTER.md, "Rooms across nodes").
    RoomChanged {
        room: u64,
        name: String,
        last: u64,
        members: Vec<(UserId, RoomRole)>,
        user: UserId,
        role: Option<RoomRole>,
    },
}

impl Body {
    /// Whether the body takes a number of its own in the sender's sequence.
    pub fn sequenced(&self) -> bool {
        matches!(
            self,
            Body::User(_)
                | Body::Registered(_)
                | Body::Mail { .. }
                | Body::Profile(_)
                | Body::RoomMail { .. }
        )
    }
}

/// One node's state for one user. No sessions and no grace means absent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub user: UserId,
    pub sessions: Vec<ConnId>,
    /// The user's last session on the sender died and its offline grace runs there.
    pub lingering: bool,
    pub status: Status,
    /// Lamport stamp of `status` and the node that set it: the highest `(clock, node)`
    /// anywhere is the user's status.
    pub status_clock: u64,
    pub status_node: NodeId,
    /// Sessions on other nodes this user's login on the sender replaced (policy `replace`).
    pub replaced: Vec<Kick>,
}

impl UserState {
    pub fn is_present(&self) -> bool {
        !self.sessions.is_empty() || self.lingering
    }
}

/// A session on another node that must end: epoch included, since a restarted node numbers
/// its connections afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Kick {
    pub node: NodeId,
    pub epoch: u64,
    pub conn: ConnId,
}
