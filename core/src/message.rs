//! Every message on the wire. PROTOCOL.md is the prose twin of this file: a change here is a
//! change there. Variants are only ever appended (postcard encodes the variant index), so the
//! indices an old peer knows keep their meaning; anything new comes with a new protocol
//! version, agreed in `Hello`.

use crate::ids::UserId;
use serde::{Deserialize, Serialize};

/// The four bytes every `Hello` starts with, so a stray protocol is refused at once.
pub const MAGIC: [u8; 4] = *b"BRZE";
/// The newest wire version this build speaks; a client offers it in `Hello`.
pub const PROTOCOL_VERSION: u16 = 3;
/// The version that added rooms (`CreateRoom` … `RoomHistory`, PROTOCOL.md, "Rooms").
pub const ROOMS_VERSION: u16 = 3;
/// The oldest wire version this build's server still answers: a client offering any version
/// from this one up gets the highest version both speak (PROTOCOL.md §16).
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;
/// The longest `Hello::client` name the server accepts, in bytes; longer is `BadHandshake`.
pub const MAX_CLIENT_NAME: usize = 64;
/// The most seqs one `Ack` may carry; more is refused with `TooLarge`, none of them marked.
pub const MAX_ACK_SEQS: usize = 4096;
/// The version that added contact groups (PROTOCOL.md, "Contact groups").
pub const GROUPS_VERSION: u16 = 2;
/// The id of every user's default group: not stored, never renamed or deleted; a contact
/// filed nowhere else is in it, and the contacts of a deleted group fall back to it.
pub const DEFAULT_GROUP: u32 = 0;
/// The most cards one `ProfileSnapshot` or `ProfileDiff` frame carries: a card is at most
/// ~900 bytes (64 + 140 characters of 4 bytes, a hash, a name), so 512 stay under 1 MiB.
pub const MAX_PROFILE_CARDS: usize = 512;
/// The version that added direct transfers between two clients (PROTOCOL.md, "Direct
/// transfers").
pub const TRANSFERS_VERSION: u16 = 3;
/// The longest file name an `OfferFile` may carry, in characters (checked like other names
/// people type, `crate::text::one_line`).
pub const MAX_TRANSFER_NAME: usize = 255;
/// The most addresses one `DirectEndpoint` may list.
pub const MAX_DIRECT_ADDRS: usize = 8;
/// The longest address text in a `DirectEndpoint`, in bytes (`[v6]:port` fits easily).
pub const MAX_DIRECT_ADDR_LEN: usize = 64;

/// What a user chooses to be.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Status {
    Online,
    Busy,
    Away,
    /// Connected, but shown as offline to everyone else.
    Invisible,
}

/// What others see of a user.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Presence {
    Offline,
    Online,
    Busy,
    Away,
}

impl Status {
    /// The presence everyone else sees for a user who is connected with this status.
    pub fn visible(self) -> Presence {
        match self {
            Status::Online => Presence::Online,
            Status::Busy => Presence::Busy,
            Status::Away => Presence::Away,
            Status::Invisible => Presence::Offline,
        }
    }
}

/// Whose presence a user is told about.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub enum WatchScope {
    /// Every registered user sees every other one (the original Breeze IM user list).
    #[default]
    Everyone,
    /// Each user sees the users on their own contact list.
    Contacts,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Credential {
    Password(String),
    /// A resume token from an earlier `LoginOk`: a cheap re-login after a reconnect.
    Token(Vec<u8>),
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Attachment {
    /// Media type, e.g. `image/png`.
    pub mime: String,
    /// File name as the sender named it.
    pub name: String,
    pub data: Vec<u8>,
}

/// Frames a client sends.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ClientMsg {
    Hello {
        magic: [u8; 4],
        version: u16,
        /// Free text naming the client software, for logs (at most 64 bytes).
        client: String,
    },
    Register {
        user: UserId,
        password: String,
    },
    Login {
        user: UserId,
        credential: Credential,
        status: Status,
    },
    Logout,
    ChangePassword {
        old: String,
        new: String,
    },
    SetStatus {
        status: Status,
    },
    AddContact {
        user: UserId,
    },
    RemoveContact {
        user: UserId,
    },
    Send {
        /// Chosen by the sender, unique per sender; a re-send reuses it.
        id: u64,
        to: UserId,
        body: String,
        attachment: Option<Attachment>,
    },
    /// The application has the messages with these sequence numbers.
    Ack {
        seqs: Vec<u64>,
    },
    Ping {
        nonce: u64,
    },
    History {
        with: UserId,
        /// Only messages with a smaller sequence number; `None` for the newest.
        before: Option<u64>,
        limit: u16,
    },
    AdminWho,
    /// Adds and removes many contacts in one request, answered once: a client importing its
    /// list sends one of these, not one `AddContact` per contact.
    ChangeContacts {
        add: Vec<UserId>,
        remove: Vec<UserId>,
    },
    /// Logs in as an agent (a script, a bot, an admin query): the session can send, read
    /// history and ask `AdminWho`, but takes no part in the user's presence, the
    /// duplicate-login policy or delivery, and is issued no resume token. The user's own
    /// devices are neither replaced, hidden nor greyed by it (PROTOCOL.md §10.5). A password
    /// only: resume tokens belong to the user's devices, and an agent must not spend them.
    AgentLogin {
        user: UserId,
        password: String,
    },
    /// Admins only: ends every session of `user`, on every node, with `Bye{Kicked}`.
    /// Answered with `AdminDone`.
    AdminKick {
        user: UserId,
    },
    /// Admins only: bars `user` from logging in (stored before the answer), then ends their
    /// sessions with `Bye{Banned}`. Answered with `AdminDone`.
    AdminBan {
        user: UserId,
    },
    /// Admins only: lets a banned `user` log in again (stored before the answer). Answered
    /// with `AdminDone`.
    AdminUnban {
        user: UserId,
    },
    /// Version 2: a new contact group named `name` (checked and stored in NFC, see
    /// `crate::text`), placed after the user's other groups. Answered with `GroupsChanged`.
    CreateGroup {
        name: String,
    },
    /// Version 2: renames, deletes or moves one of the user's groups. Answered with
    /// `GroupsChanged`.
    EditGroup {
        group: u32,
        edit: GroupEdit,
    },
    /// Version 2: files `contacts` (all on the user's contact list) in `group`
    /// (`DEFAULT_GROUP` for the default one), all or none. Answered with `GroupsChanged`.
    MoveContacts {
        contacts: Vec<UserId>,
        group: u32,
    },
    /// Version 2: sets the user's display name and signature (both at once; `""` clears
    /// one). Answered with `Profile` (the stored card) to this connection; the user's other
    /// sessions and watchers get it in a `ProfileDiff`.
    SetProfile {
        display_name: String,
        signature: String,
    },
    /// Version 2: sets the user's avatar to a PNG, JPEG or WebP image (`None` removes it).
    /// Answered like `SetProfile`.
    SetAvatar {
        image: Option<Vec<u8>>,
    },
    /// Version 2: `user`'s card, and with `avatar` the image its hash names. Answered with
    /// `Profile`.
    GetProfile {
        user: UserId,
        avatar: bool,
    },
    /// Version 3: creates a room owned by the sender, named `name` (PROTOCOL.md, "Rooms", room
    /// names). Answered with `RoomMembers { full: true }` to every session of the owner.
    CreateRoom {
        name: String,
    },
    /// Version 3: adds `user` to `room` with `role`, or changes a member's role. Owners may
    /// add admins and members; admins may add members. `Owner` is never granted.
    RoomInvite {
        room: u64,
        user: UserId,
        role: RoomRole,
    },
    /// Version 3: takes `user` out of `room`: a member leaving (`user` is the sender), or an
    /// owner or admin removing someone of a lower role.
    RoomRemove {
        room: u64,
        user: UserId,
    },
    /// Version 3: a message to every member of `room`. `id` is unique per sender, shared with
    /// `Send` ids; answered with `Sent { id, seq }` (`seq` the room's sequence) once durable.
    RoomSend {
        id: u64,
        room: u64,
        body: String,
    },
    /// Version 3: the application has every message of `room` up to `seq` (the member's read
    /// cursor moves there; it never moves back).
    RoomAck {
        room: u64,
        seq: u64,
    },
    /// Version 3: `room`'s messages, newest first, below `before`.
    RoomHistory {
        room: u64,
        before: Option<u64>,
        limit: u16,
    },
    /// Version 3: offers the file `name` of `size` bytes, whose SHA-256 is `sha256`, to `to`.
    /// `transfer` is chosen by the sender, unique among its transfers in progress. With
    /// `direct`, the sender listens there for the receiver (PROTOCOL.md, "Direct link").
    /// Every session of `to` is told `FileOffered`; refusals are an `Error` with
    /// `id: Some(transfer)`.
    OfferFile {
        transfer: u64,
        to: UserId,
        name: String,
        size: u64,
        sha256: [u8; 32],
        direct: Option<DirectEndpoint>,
    },
    /// Version 3: the receiver's answer to `FileOffered`. With `accept`, `offset` is how many
    /// bytes of the file it already holds (a resume; 0 for a new file).
    AnswerFile {
        from: UserId,
        transfer: u64,
        accept: bool,
        offset: u64,
    },
    /// Version 3: the receiver could not reach the sender directly (or the link broke): the
    /// rest of the file, from `offset`, goes through the server (`TransferRelay`).
    RelayFile {
        from: UserId,
        transfer: u64,
        offset: u64,
    },
    /// Version 3, sender: the next bytes of a relayed transfer, at `offset` (exactly where the
    /// last chunk ended), within the window the receiver's acks opened.
    TransferChunk {
        transfer: u64,
        offset: u64,
        #[serde(with = "crate::codec::byte_vec")]
        data: Vec<u8>,
    },
    /// Version 3, receiver of a relayed transfer: it holds the first `received` bytes.
    TransferAck {
        from: UserId,
        transfer: u64,
        received: u64,
    },
    /// Version 3, receiver: the whole file arrived and its SHA-256 is (`verified`) or is not
    /// the offered one. Ends the transfer (`TransferEnded` to both sides).
    TransferDone {
        from: UserId,
        transfer: u64,
        verified: bool,
    },
    /// Version 3, either side: ends the transfer `sender`/`transfer` (`TransferEnded` with
    /// `Cancelled` to both sides).
    CancelFile {
        sender: UserId,
        transfer: u64,
    },
}

/// Where a sender listens for the receiver of a direct transfer (version 3).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DirectEndpoint {
    /// `ip:port` texts the receiver tries in order (at most `MAX_DIRECT_ADDRS`).
    pub addrs: Vec<String>,
    /// SHA-256 of the DER certificate the sender's listener presents: with it the link is
    /// TLS and the receiver accepts that certificate only; without it, plain TCP.
    pub tls_fingerprint: Option<[u8; 32]>,
}

/// How a transfer ended (version 3), as both sides are told in `TransferEnded`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum TransferOutcome {
    /// The receiver has the whole file and its hash matched.
    Completed,
    /// The receiver declined the offer.
    Declined,
    /// One side cancelled.
    Cancelled,
    /// The other side's session ended (logout, lost connection, replaced) before the end.
    PeerLeft,
    /// The whole file arrived but its SHA-256 is not the offered one; the receiver discards it.
    HashMismatch,
    /// Another session of the receiver answered the offer (told to the others).
    AnsweredElsewhere,
    /// A side broke the transfer rules (a chunk out of place or past the window); the other
    /// side is told this, the offender also gets an `Error`.
    Broken,
}

/// What `EditGroup` does to a group.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum GroupEdit {
    /// A new name, checked like `CreateGroup`'s.
    Rename { name: String },
    /// Deletes the group; its contacts fall back to the default group.
    Delete,
    /// Moves the group to `position` among the user's groups (0 first; past the end is last).
    Reorder { position: u32 },
}

/// One of a user's named contact groups. The default group (`DEFAULT_GROUP`) is never listed:
/// clients name it themselves and show it first.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ContactGroup {
    /// Chosen by the server, never reused for another of the user's groups.
    pub id: u32,
    pub name: String,
}

/// The group a contact is filed in.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Placement {
    pub contact: UserId,
    pub group: u32,
}

/// A member's standing in a room.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum RoomRole {
    /// Created the room; cannot be removed (leaving as owner is refused).
    Owner,
    /// May add and remove members.
    Admin,
    Member,
}

/// One member of a room as a member sees it: `role: None` in a change means they left.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RoomMember {
    pub user: UserId,
    pub role: Option<RoomRole>,
    pub presence: Presence,
}

/// A message of a room, as delivered and as listed in its history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RoomDelivery {
    pub room: u64,
    /// The room's sequence: assigned at commit, 1, 2, 3, … per room; every member sees the
    /// room's messages in this order.
    pub seq: u64,
    pub from: UserId,
    /// The sender's id (`RoomSend.id`).
    pub id: u64,
    pub body: String,
    pub sent_at_ms: u64,
}

/// Which request a `ServerMsg::Error` answers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum RequestKind {
    Hello,
    Register,
    Login,
    Logout,
    ChangePassword,
    SetStatus,
    AddContact,
    RemoveContact,
    Send,
    Ack,
    Ping,
    History,
    AdminWho,
    ChangeContacts,
    AgentLogin,
    AdminKick,
    AdminBan,
    AdminUnban,
    CreateGroup,
    EditGroup,
    MoveContacts,
    SetProfile,
    SetAvatar,
    GetProfile,
    /// Version 3: any room request (`CreateRoom` … `RoomHistory`); for `RoomSend` the error
    /// carries the message id.
    Room,
    OfferFile,
    AnswerFile,
    RelayFile,
    TransferChunk,
    TransferAck,
    TransferDone,
    CancelFile,
}

impl ClientMsg {
    pub fn kind(&self) -> RequestKind {
        match self {
            ClientMsg::Hello { .. } => RequestKind::Hello,
            ClientMsg::Register { .. } => RequestKind::Register,
            ClientMsg::Login { .. } => RequestKind::Login,
            ClientMsg::Logout => RequestKind::Logout,
            ClientMsg::ChangePassword { .. } => RequestKind::ChangePassword,
            ClientMsg::SetStatus { .. } => RequestKind::SetStatus,
            ClientMsg::AddContact { .. } => RequestKind::AddContact,
            ClientMsg::RemoveContact { .. } => RequestKind::RemoveContact,
            ClientMsg::Send { .. } => RequestKind::Send,
            ClientMsg::Ack { .. } => RequestKind::Ack,
            ClientMsg::Ping { .. } => RequestKind::Ping,
            ClientMsg::History { .. } => RequestKind::History,
            ClientMsg::AdminWho => RequestKind::AdminWho,
            ClientMsg::ChangeContacts { .. } => RequestKind::ChangeContacts,
            ClientMsg::AgentLogin { .. } => RequestKind::AgentLogin,
            ClientMsg::AdminKick { .. } => RequestKind::AdminKick,
            ClientMsg::AdminBan { .. } => RequestKind::AdminBan,
            ClientMsg::AdminUnban { .. } => RequestKind::AdminUnban,
            ClientMsg::CreateGroup { .. } => RequestKind::CreateGroup,
            ClientMsg::EditGroup { .. } => RequestKind::EditGroup,
            ClientMsg::MoveContacts { .. } => RequestKind::MoveContacts,
            ClientMsg::SetProfile { .. } => RequestKind::SetProfile,
            ClientMsg::SetAvatar { .. } => RequestKind::SetAvatar,
            ClientMsg::GetProfile { .. } => RequestKind::GetProfile,
            ClientMsg::CreateRoom { .. }
            | ClientMsg::RoomInvite { .. }
            | ClientMsg::RoomRemove { .. }
            | ClientMsg::RoomSend { .. }
            | ClientMsg::RoomAck { .. }
            | ClientMsg::RoomHistory { .. } => RequestKind::Room,
            ClientMsg::OfferFile { .. } => RequestKind::OfferFile,
            ClientMsg::AnswerFile { .. } => RequestKind::AnswerFile,
            ClientMsg::RelayFile { .. } => RequestKind::RelayFile,
            ClientMsg::TransferChunk { .. } => RequestKind::TransferChunk,
            ClientMsg::TransferAck { .. } => RequestKind::TransferAck,
            ClientMsg::TransferDone { .. } => RequestKind::TransferDone,
            ClientMsg::CancelFile { .. } => RequestKind::CancelFile,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum ErrorCode {
    #[error("the frame could not be decoded")]
    Malformed,
    #[error("log in first")]
    NotLoggedIn,
    #[error("this connection is already logged in")]
    AlreadyLoggedIn,
    #[error("invalid user name")]
    InvalidName,
    #[error("invalid password (8 to 1024 bytes)")]
    InvalidPassword,
    #[error("that user name is taken")]
    UserTaken,
    #[error("no such user")]
    NoSuchUser,
    /// Login failures never say whether the user exists.
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too large")]
    TooLarge,
    #[error("not allowed")]
    Forbidden,
    #[error("too many contacts")]
    TooManyContacts,
    #[error("too many requests, slow down")]
    RateLimited,
    #[error("the server could not store that, try again")]
    StorageFailed,
    /// Nothing was done: the connection or the server has too much of this work in flight
    /// (PROTOCOL.md §9.3).
    #[error("the server is busy with requests like this one, try again shortly")]
    Busy,
    /// The credential was right, but an administrator has banned the account.
    #[error("this account is banned by an administrator")]
    Banned,
    /// Version 2: the request names a contact group the user does not have.
    #[error("no such contact group")]
    NoSuchGroup,
    /// Version 2: a display name or signature was refused: too long, or holding a control
    /// or bidirectional-override character (PROTOCOL.md §15).
    #[error("invalid display name or signature")]
    InvalidProfile,
    /// Version 2: an avatar that is not a PNG, JPEG or WebP image the server could decode,
    /// or larger than the limit in pixels.
    #[error("not an image the server accepts as an avatar")]
    InvalidImage,
    /// Version 3: the room does not exist, or the user is not a member (the two are not told
    /// apart, so non-members learn nothing of a room).
    #[error("no such room")]
    NoSuchRoom,
    /// Version 3: the room has its most members, or the user is in the most rooms
    /// (SECURITY.md, "Rooms").
    #[error("a room limit was reached (members per room or rooms per user)")]
    RoomLimit,
    /// Version 3: the receiver of an `OfferFile` has no session that can take a transfer.
    #[error("the receiver is not online")]
    ReceiverOffline,
    /// Version 3: the request names a transfer that is not in progress (or not in the state
    /// the request needs, or not this session's).
    #[error("no such transfer")]
    NoSuchTransfer,
    /// Version 3: the sender or the receiver already takes part in as many transfers as the
    /// server allows at once.
    #[error("too many transfers in progress")]
    TooManyTransfers,
}

/// Why the server ends a connection; sent in `Bye` just before it closes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum CloseReason {
    #[error("no Hello within the handshake deadline")]
    HandshakeTimeout,
    #[error("nothing received within the heartbeat timeout")]
    HeartbeatTimeout,
    /// The same user logged in elsewhere (policy `replace`). The client must not reconnect on
    /// its own, or two devices would kick each other forever.
    #[error("logged in from another place")]
    Replaced,
    #[error("logged out")]
    LoggedOut,
    #[error("wrong magic or not a Hello first")]
    BadHandshake,
    #[error("protocol version not supported")]
    UnsupportedVersion,
    #[error("frame larger than the limit")]
    FrameTooLarge,
    #[error("a frame could not be decoded")]
    Malformed,
    #[error("reading too slowly; the outbound queue overflowed")]
    SlowReader,
    #[error("the server is at its connection limit")]
    ServerFull,
    #[error("the server is shutting down")]
    ServerShutdown,
    #[error("too many frames too fast")]
    Flooding,
    /// This node of a cluster lost the bus for too long and closed its clients before the
    /// other nodes declare it dead (CLUSTER.md). The client reconnects, through the load
    /// balancer or its list of servers, to another node.
    #[error("this node lost its cluster; reconnect, possibly to another server")]
    NodeFenced,
    /// An administrator ended the session (`AdminKick`). The client must not reconnect on
    /// its own: the administrator meant it to go.
    #[error("removed by an administrator")]
    Kicked,
    /// An administrator banned the account (`AdminBan`); logging in is refused until an
    /// unban. The client must not reconnect on its own.
    #[error("removed by an administrator: the account is banned")]
    Banned,
}

impl CloseReason {
    /// Every reason, in wire order: for tables and tests that must cover them all (the
    /// exhaustive match in this module's test keeps it complete).
    pub const ALL: [CloseReason; 15] = [
        CloseReason::HandshakeTimeout,
        CloseReason::HeartbeatTimeout,
        CloseReason::Replaced,
        CloseReason::LoggedOut,
        CloseReason::BadHandshake,
        CloseReason::UnsupportedVersion,
        CloseReason::FrameTooLarge,
        CloseReason::Malformed,
        CloseReason::SlowReader,
        CloseReason::ServerFull,
        CloseReason::ServerShutdown,
        CloseReason::Flooding,
        CloseReason::NodeFenced,
        CloseReason::Kicked,
        CloseReason::Banned,
    ];

    /// Whether a client may reconnect by itself after being told this.
    pub fn allows_reconnect(self) -> bool {
        !matches!(
            self,
            CloseReason::Replaced
                | CloseReason::Kicked
                | CloseReason::Banned
                | CloseReason::LoggedOut
                | CloseReason::BadHandshake
                | CloseReason::UnsupportedVersion
        )
    }
}

/// One user's presence, as one watcher is told it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PresenceEntry {
    pub user: UserId,
    pub presence: Presence,
}

/// A stored message as the recipient receives it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Delivery {
    /// Server-assigned, increasing in storage order, unique on the server.
    pub seq: u64,
    pub from: UserId,
    /// The sender's message id.
    pub id: u64,
    pub body: String,
    pub attachment: Option<Attachment>,
    /// When the server stored it, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
}

/// A message in a conversation's history.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HistoryItem {
    pub seq: u64,
    /// The sender's id for the message (`Send.id`): a client that lost its state matches
    /// its own sent messages by it.
    pub id: u64,
    pub from: UserId,
    pub to: UserId,
    pub body: String,
    /// Attachments are not repeated in history; name and size say what was there.
    pub attachment: Option<AttachmentInfo>,
    pub sent_at_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub mime: String,
    pub name: String,
    pub size: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WhoSession {
    pub node: u32,
    pub conn: u64,
    pub connected_for_ms: u64,
    /// Time since the last frame from this session.
    pub idle_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WhoEntry {
    pub user: UserId,
    pub status: Status,
    pub sessions: Vec<WhoSession>,
}

/// What a user shows of themselves (version 2), as anyone who can see the user is told it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ProfileCard {
    pub user: UserId,
    /// Counts the user's profile changes: of two cards of one user, the one with the higher
    /// `rev` is newer, however they arrived. 0: never set.
    pub rev: u64,
    /// NFC, at most 64 characters; empty: none (show the user id).
    pub display_name: String,
    /// NFC, one line, at most 140 characters; empty: none.
    pub signature: String,
    /// SHA-256 of the avatar image: clients cache images under it. `None`: no avatar.
    pub avatar: Option<[u8; 32]>,
}

impl ProfileCard {
    /// The card of a user who never set a profile.
    pub fn blank(user: UserId) -> Self {
        ProfileCard {
            user,
            rev: 0,
            display_name: String::new(),
            signature: String::new(),
            avatar: None,
        }
    }
}

/// An avatar image as stored (version 2).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AvatarImage {
    /// `image/png`, `image/jpeg` or `image/webp`, as the server found it.
    pub mime: String,
    pub data: Vec<u8>,
}

/// Frames the server sends.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ServerMsg {
    Welcome {
        version: u16,
        /// Send something at least this often.
        heartbeat_interval_ms: u32,
        /// A connection silent this long is dead, on both sides.
        heartbeat_timeout_ms: u32,
        max_frame: u32,
        max_attachment: u32,
        /// Largest `Send::body`, in bytes.
        max_body: u32,
        scope: WatchScope,
        /// Longest contact list, and longest list in one `ChangeContacts`.
        max_contacts: u32,
        /// Frames per second a connection may send, sustained (0: no limit) …
        frame_rate: u32,
        /// … and in one burst; beyond them the server closes with `Bye{Flooding}`.
        frame_burst: u32,
    },
    Registered {
        user: UserId,
    },
    LoginOk {
        user: UserId,
        status: Status,
        /// Present with `Credential::Token` at the next login instead of the password.
        resume_token: Vec<u8>,
        /// The user's contact list (kept even under scope `Everyone`).
        contacts: Vec<UserId>,
    },
    /// The full presence view: replaces whatever the client had.
    PresenceSnapshot {
        entries: Vec<PresenceEntry>,
    },
    /// Changes since the last snapshot or diff, in one batch.
    PresenceDiff {
        entries: Vec<PresenceEntry>,
    },
    /// The user's own status, after a change from this or another session.
    OwnStatus {
        status: Status,
    },
    /// The answer to a contact request, to every session of the user: what changed, not the
    /// whole list. `rejected` names requested additions that are not registered users (or
    /// the user itself); they were skipped.
    ContactsChanged {
        added: Vec<UserId>,
        removed: Vec<UserId>,
        rejected: Vec<UserId>,
    },
    PasswordChanged,
    /// The message with this id is durable on the server.
    Sent {
        id: u64,
        seq: u64,
    },
    Deliver(Delivery),
    /// The messages stored while the user was offline have all been sent.
    OfflineDone {
        count: u32,
    },
    History {
        with: UserId,
        items: Vec<HistoryItem>,
    },
    Pong {
        nonce: u64,
    },
    Error {
        request: RequestKind,
        code: ErrorCode,
        /// For `Send`, the message id that failed.
        id: Option<u64>,
    },
    Who {
        users: Vec<WhoEntry>,
        connections: u64,
    },
    Bye {
        reason: CloseReason,
    },
    /// Sent just before `Error { request, code: RateLimited }`: how long to wait before the
    /// next attempt is considered. A client that cannot decode it skips it and still gets
    /// the `Error` (PROTOCOL.md §16).
    Throttled {
        request: RequestKind,
        retry_after_ms: u32,
    },
    /// An `AdminKick`, `AdminBan` or `AdminUnban` is done (a ban or unban is stored).
    /// `sessions`: how many sessions of `user` it ended, on every node this one knows of.
    AdminDone {
        request: RequestKind,
        user: UserId,
        sessions: u32,
    },
    /// After `LoginOk`, before the first `Deliver` of the mailbox: this many messages were
    /// waiting when the mailbox was first read (not sent when there are none). `OfflineDone`
    /// still ends them, with the number actually delivered.
    OfflineWaiting {
        count: u32,
    },
    /// Version 2: the user's contact groups, sent right after `LoginOk` (before the presence
    /// snapshot) to a connection that agreed on version 2 or later. Replaces whatever the
    /// client had. `placements` lists the contacts filed in a named group; every other
    /// contact is in the default group.
    Groups {
        /// The most named groups a user may have (`CreateGroup` past it: `TooLarge`).
        max_groups: u32,
        groups: Vec<ContactGroup>,
        placements: Vec<Placement>,
    },
    /// Version 2: the answer to a group request, to every session of the user (on every
    /// node): the whole list of named groups as it now is, in order, and the contacts whose
    /// group changed.
    GroupsChanged {
        groups: Vec<ContactGroup>,
        moved: Vec<Placement>,
    },
    /// Version 2, after `PresenceSnapshot` at login: the cards of the users the snapshot
    /// lists and the user's own, those with a profile set, in frames of at most
    /// `MAX_PROFILE_CARDS`; `more` until the last. A card never replaces a newer one (`rev`).
    ProfileSnapshot {
        cards: Vec<ProfileCard>,
        more: bool,
    },
    /// Version 2: profiles changed since the last snapshot or diff, one card per user, batched
    /// like `PresenceDiff` but never inside one.
    ProfileDiff {
        cards: Vec<ProfileCard>,
    },
    /// Version 2: the answer to `GetProfile` (with the image when asked for and set), and to
    /// `SetProfile`/`SetAvatar` (the card as stored, no image).
    Profile {
        card: ProfileCard,
        avatar: Option<AvatarImage>,
    },
    /// Version 3: a room's members. `full`: the whole list (at login, on creating or joining
    /// the room), replacing what the client had; otherwise only the members that changed —
    /// joined, changed role, left (`role: None`) or changed presence, batched like
    /// `PresenceDiff`.
    RoomMembers {
        room: u64,
        name: String,
        full: bool,
        members: Vec<RoomMember>,
    },
    /// Version 3: the user is no longer a member of `room` (left or removed).
    RoomLeft {
        room: u64,
    },
    /// Version 3: a room message, in the room's sequence order, each seq once per session.
    RoomDeliver(RoomDelivery),
    /// Version 3: the answer to `RoomHistory`, newest first.
    RoomHistory {
        room: u64,
        items: Vec<RoomDelivery>,
    },
    /// Version 3, to every session of the receiver: `from` offers a file. Answered with
    /// `AnswerFile`.
    FileOffered {
        from: UserId,
        transfer: u64,
        name: String,
        size: u64,
        sha256: [u8; 32],
    },
    /// Version 3, to the offering session: `to` accepted and holds `offset` bytes already.
    /// `token` is the one a direct link from the receiver must present; it is good for one
    /// link.
    TransferAccepted {
        transfer: u64,
        to: UserId,
        offset: u64,
        token: [u8; 32],
    },
    /// Version 3, to the accepting session: connect to `direct` (if any) presenting `token`
    /// from `offset`, or ask for the relay with `RelayFile`.
    TransferStart {
        from: UserId,
        transfer: u64,
        offset: u64,
        token: [u8; 32],
        direct: Option<DirectEndpoint>,
    },
    /// Version 3, to the sender: send the file from `offset` in `TransferChunk`s, never more
    /// than `window` bytes beyond what the receiver acknowledged (`TransferProgress`).
    TransferRelay {
        transfer: u64,
        offset: u64,
        window: u32,
    },
    /// Version 3, to the receiver: a relayed chunk, forwarded as the sender sent it.
    TransferData {
        from: UserId,
        transfer: u64,
        offset: u64,
        #[serde(with = "crate::codec::byte_vec")]
        data: Vec<u8>,
    },
    /// Version 3, to the sender of a relayed transfer: the receiver holds `received` bytes.
    TransferProgress {
        transfer: u64,
        received: u64,
    },
    /// Version 3, to both sides (and to the receiver's other sessions that saw the offer):
    /// the transfer `sender`/`transfer` is over.
    TransferEnded {
        sender: UserId,
        transfer: u64,
        outcome: TransferOutcome,
    },
}

impl ClientMsg {
    /// The protocol version that added this request. A connection that agreed on an older
    /// version is closed with `Malformed` for it, as a server of that version would close it.
    pub fn since(&self) -> u16 {
        match self {
            ClientMsg::Hello { .. }
            | ClientMsg::Register { .. }
            | ClientMsg::Login { .. }
            | ClientMsg::Logout
            | ClientMsg::ChangePassword { .. }
            | ClientMsg::SetStatus { .. }
            | ClientMsg::AddContact { .. }
            | ClientMsg::RemoveContact { .. }
            | ClientMsg::Send { .. }
            | ClientMsg::Ack { .. }
            | ClientMsg::Ping { .. }
            | ClientMsg::History { .. }
            | ClientMsg::AdminWho
            | ClientMsg::ChangeContacts { .. }
            | ClientMsg::AgentLogin { .. }
            | ClientMsg::AdminKick { .. }
            | ClientMsg::AdminBan { .. }
            | ClientMsg::AdminUnban { .. } => 1,
            ClientMsg::CreateGroup { .. }
            | ClientMsg::EditGroup { .. }
            | ClientMsg::MoveContacts { .. } => GROUPS_VERSION,
            ClientMsg::SetProfile { .. }
            | ClientMsg::SetAvatar { .. }
            | ClientMsg::GetProfile { .. } => 2,
            ClientMsg::CreateRoom { .. }
            | ClientMsg::RoomInvite { .. }
            | ClientMsg::RoomRemove { .. }
            | ClientMsg::RoomSend { .. }
            | ClientMsg::RoomAck { .. }
            | ClientMsg::RoomHistory { .. } => ROOMS_VERSION,
            ClientMsg::OfferFile { .. }
            | ClientMsg::AnswerFile { .. }
            | ClientMsg::RelayFile { .. }
            | ClientMsg::TransferChunk { .. }
            | ClientMsg::TransferAck { .. }
            | ClientMsg::TransferDone { .. }
            | ClientMsg::CancelFile { .. } => TRANSFERS_VERSION,
        }
    }
}

impl ServerMsg {
    /// The protocol version that added this frame: never sent on a connection that agreed on
    /// an older version.
    pub fn since(&self) -> u16 {
        match self {
            ServerMsg::Welcome { .. }
            | ServerMsg::Registered { .. }
            | ServerMsg::LoginOk { .. }
            | ServerMsg::PresenceSnapshot { .. }
            | ServerMsg::PresenceDiff { .. }
            | ServerMsg::OwnStatus { .. }
            | ServerMsg::ContactsChanged { .. }
            | ServerMsg::PasswordChanged
            | ServerMsg::Sent { .. }
            | ServerMsg::Deliver { .. }
            | ServerMsg::OfflineDone { .. }
            | ServerMsg::History { .. }
            | ServerMsg::Pong { .. }
            | ServerMsg::Error { .. }
            | ServerMsg::Who { .. }
            | ServerMsg::Bye { .. }
            | ServerMsg::Throttled { .. }
            | ServerMsg::AdminDone { .. }
            | ServerMsg::OfflineWaiting { .. } => 1,
            ServerMsg::Groups { .. } | ServerMsg::GroupsChanged { .. } => GROUPS_VERSION,
            ServerMsg::ProfileSnapshot { .. }
            | ServerMsg::ProfileDiff { .. }
            | ServerMsg::Profile { .. } => 2,
            ServerMsg::RoomMembers { .. }
            | ServerMsg::RoomLeft { .. }
            | ServerMsg::RoomDeliver(_)
            | ServerMsg::RoomHistory { .. } => ROOMS_VERSION,
            ServerMsg::FileOffered { .. }
            | ServerMsg::TransferAccepted { .. }
            | ServerMsg::TransferStart { .. }
            | ServerMsg::TransferRelay { .. }
            | ServerMsg::TransferData { .. }
            | ServerMsg::TransferProgress { .. }
            | ServerMsg::TransferEnded { .. } => TRANSFERS_VERSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CloseReason::ALL` lists every variant once, in wire order: a new variant fails to
    /// compile here until it is placed, and a misplaced one fails the order check.
    #[test]
    fn all_close_reasons_are_listed_in_wire_order() {
        for (i, reason) in CloseReason::ALL.into_iter().enumerate() {
            let index = match reason {
                CloseReason::HandshakeTimeout => 0,
                CloseReason::HeartbeatTimeout => 1,
                CloseReason::Replaced => 2,
                CloseReason::LoggedOut => 3,
                CloseReason::BadHandshake => 4,
                CloseReason::UnsupportedVersion => 5,
                CloseReason::FrameTooLarge => 6,
                CloseReason::Malformed => 7,
                CloseReason::SlowReader => 8,
                CloseReason::ServerFull => 9,
                CloseReason::ServerShutdown => 10,
                CloseReason::Flooding => 11,
                CloseReason::NodeFenced => 12,
                CloseReason::Kicked => 13,
                CloseReason::Banned => 14,
            };
            assert_eq!(index, i, "{reason:?}");
            assert_eq!(crate::codec::encode(&reason)[..], [i as u8]);
        }
    }
}
