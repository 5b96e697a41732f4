//! What comes out of a client: actions for the host, events for the application, and the
//! state both may look at.

use super::GroupBook;
use crate::ids::UserId;
use crate::message::{
    AvatarImage, CloseReason, Delivery, ErrorCode, HistoryItem, Presence, PresenceEntry,
    ProfileCard, RequestKind, RoomDelivery, RoomMember, ServerMsg, Status, WhoEntry,
};
use crate::time::{Duration, Instant};
use bytes::Bytes;
use std::fmt;

/// What the host must do, in the order given.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// Open a connection to the server; report `handle_connected` or `handle_disconnected`.
    Connect,
    /// Write this payload as one frame of the transport.
    Send(Bytes),
    /// Close the connection (or abandon the connect in progress) after writing every `Send`
    /// before this. The host need not report `handle_disconnected` for it.
    Disconnect,
}

impl fmt::Debug for ClientOutput {
    // Hand-written because a `Login` or `ChangePassword` frame carries a password in clear.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientOutput::Connect => f.write_str("Connect"),
            ClientOutput::Send(payload) => write!(f, "Send({} bytes)", payload.len()),
            ClientOutput::Disconnect => f.write_str("Disconnect"),
        }
    }
}

/// What `Client::admin` asks of the server (administrators only).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AdminAction {
    /// End every session of the user, on every node.
    Kick,
    /// Bar the user from logging in, then end their sessions.
    Ban,
    /// Let a banned user log in again.
    Unban,
}

/// Why the client gave up; it reconnects only when `start` is called.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StopReason {
    /// The application called `logout`.
    LoggedOut,
    /// The server refused the password (after the resume token, if one was tried).
    BadCredentials,
    /// Registration found the name taken by someone else.
    UserTaken,
    /// Registration or login refused for a reason a retry cannot fix.
    Refused {
        request: RequestKind,
        code: ErrorCode,
    },
    /// The server said goodbye with a reason that forbids reconnecting (`Replaced`, …).
    Closed(CloseReason),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientState {
    /// Waiting for the next connect attempt.
    Disconnected {
        retry_at: Instant,
    },
    /// `Connect` is out; waiting for the host.
    Connecting,
    /// `Hello` sent; waiting for `Welcome`.
    Handshaking,
    /// Registering and/or logging in.
    LoggingIn,
    LoggedIn,
    Stopped(StopReason),
}

/// What the application is told.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ClientEvent {
    /// The socket is up; the handshake starts.
    Connected,
    /// The server's limits, from its `Welcome`: how long a body and how large an attachment it
    /// takes, so an application can refuse (or explain a refusal) in those terms.
    Limits {
        max_body: u32,
        max_attachment: u32,
    },
    /// Logged in. `contacts()`, `own_status()` are current, and queued messages and commands
    /// have just been sent.
    LoggedIn {
        user: UserId,
    },
    /// `Mode::Register` created the account; the login follows on the same connection.
    Registered,
    /// The whole presence view, replacing the previous one (without the user itself).
    PresenceSnapshot(Vec<PresenceEntry>),
    /// One user's presence changed in the view.
    PresenceChanged {
        user: UserId,
        presence: Presence,
    },
    /// Version 2: these users' cards are newer than the ones known (`Client::profiles` has
    /// them now): from the login's snapshot, a change pushed, or an answer.
    Profiles(Vec<ProfileCard>),
    /// Version 2: the answer to `get_profile` (with the image when asked for and set), or
    /// to `set_profile`/`set_avatar` (the card as stored).
    Profile {
        card: ProfileCard,
        avatar: Option<AvatarImage>,
    },
    /// A message for the application, once per seq however often the server delivers it.
    Message(Delivery),
    /// The message `id` from `send_message` is durable on the server.
    MessageSent {
        id: u64,
        seq: u64,
    },
    /// The server refused the message `id`; it is no longer queued.
    SendFailed {
        id: u64,
        code: ErrorCode,
    },
    /// The server could not take the message `id` just now (`Busy`, or `StorageFailed`: its
    /// database is failing); it stays queued and goes again shortly. An application that
    /// cannot wait (a script) can give up on it here rather than wait out a timeout.
    SendDeferred {
        id: u64,
        code: ErrorCode,
    },
    /// Every message stored while the user was offline has been delivered.
    OfflineDone {
        count: u32,
    },
    /// This many messages stored while the user was offline follow (before the first).
    OfflineWaiting {
        count: u32,
    },
    OwnStatus(Status),
    Contacts(Vec<UserId>),
    /// The contact groups changed (the login's snapshot, or a change from any session): all
    /// of them as they now are (`GroupBook::listing` draws the grouped list).
    Groups(GroupBook),
    History {
        with: UserId,
        items: Vec<HistoryItem>,
    },
    Who {
        users: Vec<WhoEntry>,
        connections: u64,
    },
    /// An `admin` request is done: `sessions` of `user`'s sessions ended.
    AdminDone {
        request: RequestKind,
        user: UserId,
        sessions: u32,
    },
    PasswordChanged,
    /// Version 3: news of a direct transfer, as the server sent it: one of `FileOffered`,
    /// `TransferAccepted`, `TransferStart`, `TransferRelay`, `TransferData`,
    /// `TransferProgress`, `TransferEnded`, for the application's transfer agent.
    Transfer(ServerMsg),
    /// Version 3: the server refused a transfer request about `transfer`.
    TransferError {
        request: RequestKind,
        code: ErrorCode,
        transfer: u64,
    },
    /// A request failed, or an online-only command was issued while not logged in
    /// (`code: NotLoggedIn`).
    Error {
        request: RequestKind,
        code: ErrorCode,
    },
    /// The server will refuse `request` (with `Error { code: RateLimited }`, which follows)
    /// until this long has passed. A login refused so is retried no sooner.
    Throttled {
        request: RequestKind,
        retry_after: Duration,
    },
    /// A connection (or connect attempt) ended. `reason` is the server's `Bye` reason, if it
    /// sent one; `retry_at` is when the next attempt starts, `None` when the client stops.
    Disconnected {
        reason: Option<CloseReason>,
        retry_at: Option<Instant>,
    },
    /// The client gave up and stays idle until `start`.
    Stopped(StopReason),
    /// A room's members (version 2): `full` replaces the list, otherwise these changed
    /// (`role: None`: left). `Client::rooms` is already updated.
    RoomMembers {
        room: u64,
        name: String,
        full: bool,
        members: Vec<RoomMember>,
    },
    /// The user is no longer in `room`.
    RoomLeft {
        room: u64,
    },
    /// A room message, once per room seq, in the room's order.
    RoomMessage(RoomDelivery),
    RoomHistory {
        room: u64,
        items: Vec<RoomDelivery>,
    },
}
