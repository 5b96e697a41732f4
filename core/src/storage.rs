//! The persistence contract between the server core and its host.
//!
//! The core asks (`Output::Storage`), the host performs — hashing passwords, writing to disk —
//! and reports back with `Server::handle_storage`. Password hashes never reach the core: it
//! receives verdicts.
//!
//! Ordering: the host applies the plain writes (`SetContacts`, `StoreMessage`, `SetBanned`,
//! `SetProfile`, `ChangeGroups`, `MarkDelivered`, and the rooms' `CreateRoom`, `ChangeRoom`,
//! `StoreRoomMessage`, `MarkRoomRead`) in the order they were emitted and reports their results
//! in that order. Verifying requests (`Register`, `Authenticate`, `ChangePassword`: they hash off
//! the writer's thread) and reads (`LoadMailbox`, `LoadHistory`, `LoadProfiles`, `LoadProfile`,
//! `LoadRooms`, `LoadRoom`) may complete in any order, but a read reflects every write whose
//! result was reported before the read was emitted. The core
//! relies on no more: it adds a user to its directory only once `Registered` is back, and
//! allows one login per connection at a time.
//!
//! Seqs become visible in order per recipient: a read that sees a message to a user sees
//! every message to that user with a lower seq. A store shared by the nodes of a cluster
//! keeps both rules across nodes (store-pg locks a recipient's mailbox from drawing a seq
//! until the commit, and reports a write after its commit): a session's mailbox reads above
//! its floor rely on them (CLUSTER.md, "Messages across nodes"). Messages to different users
//! may become visible in any order; no read spans two recipients' mailboxes.

use crate::ids::UserId;
use crate::message::{
    Attachment, AvatarImage, ContactGroup, Credential, Delivery, HistoryItem, Placement,
    ProfileCard, RoomDelivery, RoomRole,
};

/// Most items one `LoadHistory` returns, whatever its `limit` says. The core asks for no more
/// and every store cuts at it too: a history page is read and held whole in memory.
pub const MAX_HISTORY: u16 = 500;

/// Resume tokens a store keeps per user; issuing one more forgets the oldest. Each device
/// holds one live token (two while its newest is unconfirmed), so this covers a handful of
/// devices.
pub const MAX_TOKENS_PER_USER: usize = 8;

#[derive(Clone, PartialEq, Eq)]
pub enum StorageOp {
    /// Create an account; the host hashes the password.
    Register { user: UserId, password: String },
    /// Verify a password or resume token; on success return the account and a fresh token.
    ///
    /// A password login issues a token of its own and leaves the others valid. A token login
    /// issues a successor and keeps the presented token valid (its `LoginOk` may be lost)
    /// until a successor is itself used: then the presented token's predecessor and its
    /// other successors are spent. Only the newest `MAX_TOKENS_PER_USER` tokens are kept.
    ///
    /// Without `issue_token` (an agent's password login) no token is issued and none is
    /// spent: the account comes back with an empty `resume_token`, so a script logging in
    /// every minute cannot push the user's devices' tokens out of the newest few.
    Authenticate {
        user: UserId,
        credential: Credential,
        issue_token: bool,
    },
    /// Replace the password after verifying the old one; invalidate the user's resume tokens.
    ChangePassword {
        user: UserId,
        old: String,
        new: String,
    },
    /// Add the users in `add` to `user`'s contact list and take those in `remove` off it, all
    /// or nothing. Adding a contact already there, or removing one that is not, changes
    /// nothing; a `user` or an `add` naming no registered user fails the whole request with
    /// `NoSuchUser`.
    SetContacts {
        user: UserId,
        add: Vec<UserId>,
        remove: Vec<UserId>,
    },
    /// Make a message durable. `(from, id)` is unique: a second store of the same pair changes
    /// nothing and reports the first copy with `duplicate: true`, whatever it says. Otherwise
    /// a `from` or `to` naming no registered user fails with `NoSuchUser`.
    StoreMessage {
        from: UserId,
        to: UserId,
        id: u64,
        body: String,
        attachment: Option<Attachment>,
    },
    /// Messages to `user` whose seq is above `after`, in sequence order: those not yet marked
    /// delivered, and those above `all_above` whether marked delivered or not. At most
    /// `limit`, and no more than `max_bytes` of bodies and attachment data together — but
    /// always the first one, however large.
    ///
    /// `all_above` is a session's high-water mark: under the `multi` policy a sibling device
    /// may ack a message before this session's read runs (on another node, or a slow read),
    /// and the message is still this session's. `None` stands for the store's highest seq to
    /// `user` when the read is made (a login's first read: what waits for it, no acked
    /// history); the page reports that highest seq as `high` either way.
    LoadMailbox {
        user: UserId,
        after: u64,
        all_above: Option<u64>,
        limit: u32,
        max_bytes: u64,
    },
    /// The recipient's application has these messages. Seqs addressed to anyone else are
    /// ignored.
    MarkDelivered { user: UserId, seqs: Vec<u64> },
    /// The conversation between `user` and `with`, newest first, below `before`: at most
    /// `limit` items, and never more than `MAX_HISTORY`.
    LoadHistory {
        user: UserId,
        with: UserId,
        before: Option<u64>,
        limit: u16,
    },
    /// Bar `user` from logging in (`banned`), or let them in again. Setting what is already
    /// set changes nothing and succeeds; an unknown `user` fails with `NoSuchUser`. Resume
    /// tokens are kept, so an unban lets the user's devices resume as before.
    SetBanned { user: UserId, banned: bool },
    /// Change `user`'s contact groups, all or nothing, and report the groups as they then are
    /// with the contacts whose group changed. At most `max_groups` named groups: a `Create`
    /// beyond fails with `TooManyGroups` (a list already longer may still shrink). Names
    /// arrive checked (`crate::text::group_name`); two groups of one user never share one
    /// (`GroupNameTaken`). A group id no group of the user has fails with `NoSuchGroup`;
    /// `DEFAULT_GROUP` is valid only as a `File` target. A `File` naming anyone not on the
    /// user's contact list fails with `NoSuchUser`. An unknown `user` fails with `NoSuchUser`.
    ChangeGroups {
        user: UserId,
        change: GroupChange,
        max_groups: u32,
    },
    /// Change `user`'s profile (the text or the avatar, as `change` says) and count it: the
    /// stored `rev` goes up by one, and the card as stored comes back. An unknown `user`
    /// fails with `NoSuchUser`. An avatar no profile names any more is forgotten in the same
    /// write.
    SetProfile { user: UserId, change: ProfileChange },
    /// The cards of `users` (`None`: of every user) that were ever set (`rev` above 0),
    /// sorted by user. Unknown names are skipped.
    LoadProfiles { users: Option<Vec<UserId>> },
    /// `user`'s card (a blank one, `rev` 0, if never set) and, with `avatar`, the image its
    /// hash names. An unknown `user` fails with `NoSuchUser`.
    LoadProfile { user: UserId, avatar: bool },
    /// A room named `name`, owned by `owner`, who is its first member. Fails with
    /// `RoomLimit` when `owner` is already in `max_rooms` rooms.
    CreateRoom {
        owner: UserId,
        name: String,
        max_rooms: u32,
    },
    /// `by` adds `user` to `room` (or changes a member's role) or removes them, all checked
    /// inside the transaction: `by` must be a member (`NoSuchRoom` otherwise); adding an
    /// admin takes the owner, adding a member an owner or admin; removing someone else takes
    /// a role above theirs; the owner cannot leave (`Forbidden`). An unknown `user` is
    /// `NoSuchUser`; a full room, or a `user` already in `max_rooms` rooms, is `RoomLimit`.
    /// Re-adding a member with the role they have, or removing a non-member, changes
    /// nothing and succeeds. A new member's read cursor starts at the room's last seq: what
    /// was said before is history, not mail.
    ChangeRoom {
        by: UserId,
        room: u64,
        user: UserId,
        change: RoomChange,
        max_members: u32,
        max_rooms: u32,
    },
    /// Stores a room message once, under the room's next seq, if `from` is a member
    /// (`NoSuchRoom` otherwise). `(room, from, id)` is unique: a second store reports the
    /// first copy with `duplicate: true`. Reports the members at the commit: exactly those
    /// who are owed the message.
    StoreRoomMessage {
        room: u64,
        from: UserId,
        id: u64,
        body: String,
    },
    /// Every room `user` is a member of, in room order, with the user's read cursor.
    LoadRooms { user: UserId },
    /// Messages of `room`, for a member (`NoSuchRoom` otherwise): `After(seq)` the oldest
    /// first above `seq` (mail), `Before(seq)` the newest first below it (history; `None`
    /// for the newest). At most `limit`, never more than `MAX_HISTORY`.
    LoadRoom {
        user: UserId,
        room: u64,
        range: RoomRange,
        limit: u16,
    },
    /// Moves `user`'s read cursor in each room up to the seq given (never down). Rooms the
    /// user is not in are ignored.
    MarkRoomRead {
        user: UserId,
        reads: Vec<(u64, u64)>,
    },
}

/// One change to a user's contact groups (`StorageOp::ChangeGroups`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum GroupChange {
    /// A new group after the others, with an id the user's groups never had.
    Create { name: String },
    /// Renaming a group to its own name changes nothing and succeeds.
    Rename { group: u32, name: String },
    /// The group's contacts are moved to `DEFAULT_GROUP` (reported in `moved`).
    Delete { group: u32 },
    /// The group moves to `position` (0 first; past the end: last); the others keep their
    /// order.
    Reorder { group: u32, position: u32 },
    /// Files the contacts in `group`; those already there are not reported as moved.
    File { contacts: Vec<UserId>, group: u32 },
}

/// A user's contact groups: the login snapshot (`Account::groups`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ContactGroups {
    /// The named groups, in the user's order.
    pub groups: Vec<ContactGroup>,
    /// Contacts filed in a named group, by contact name; the others are in the default group.
    pub placements: Vec<Placement>,
}

/// What a `ChangeGroups` did.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct GroupsDiff {
    /// Every named group after the change, in order.
    pub groups: Vec<ContactGroup>,
    /// The contacts whose group the change changed, by contact name, with their new group.
    pub moved: Vec<Placement>,
}

/// What a `SetProfile` changes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ProfileChange {
    /// Both text fields, already normalised and checked (`crate::profile`).
    Text {
        display_name: String,
        signature: String,
    },
    /// A checked image under its content hash, or `None` to remove the avatar.
    Avatar(Option<NewAvatar>),
}

/// An avatar image the core has checked (`crate::profile::check_avatar`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NewAvatar {
    /// `crate::profile::avatar_hash` of `image.data`.
    pub hash: [u8; 32],
    pub image: AvatarImage,
}

/// What `ChangeRoom` does to its `user`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RoomChange {
    Add(RoomRole),
    Remove,
}

/// Which messages `LoadRoom` reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RoomRange {
    After(u64),
    Before(Option<u64>),
}

impl StorageOp {
    /// Whether performing it costs an argon2 hash: it counts against the core's hashing
    /// budget (`WorkBudget::hashing`), and a store runs it on its hashing threads.
    pub fn hashes(&self) -> bool {
        matches!(
            self,
            StorageOp::Register { .. }
                | StorageOp::Authenticate {
                    credential: Credential::Password(_),
                    ..
                }
                | StorageOp::ChangePassword { .. }
        )
    }

    /// The answer a backend gives when it cannot perform `self`: the result of the op's own
    /// kind, carrying `e`. Fault injection (the simulation, the fuzzer) builds its
    /// failures here, so a new op cannot be forgotten in one of them.
    pub fn failed(&self, e: StorageError) -> StorageResult {
        match self {
            StorageOp::Register { .. } => StorageResult::Registered(Err(e)),
            StorageOp::Authenticate { .. } => StorageResult::Authenticated(Err(e)),
            StorageOp::ChangePassword { .. } => StorageResult::PasswordChanged(Err(e)),
            StorageOp::SetContacts { .. } => StorageResult::ContactsSet(Err(e)),
            StorageOp::StoreMessage { .. } => StorageResult::MessageStored(Err(e)),
            StorageOp::LoadMailbox { .. } => StorageResult::MailboxLoaded(Err(e)),
            StorageOp::MarkDelivered { .. } => StorageResult::DeliveredMarked(Err(e)),
            StorageOp::LoadHistory { .. } => StorageResult::HistoryLoaded(Err(e)),
            StorageOp::SetBanned { .. } => StorageResult::BannedSet(Err(e)),
            StorageOp::ChangeGroups { .. } => StorageResult::GroupsChanged(Err(e)),
            StorageOp::SetProfile { .. } => StorageResult::ProfileSet(Err(e)),
            StorageOp::LoadProfiles { .. } => StorageResult::ProfilesLoaded(Err(e)),
            StorageOp::LoadProfile { .. } => StorageResult::ProfileLoaded(Err(e)),
            StorageOp::CreateRoom { .. } => StorageResult::RoomCreated(Err(e)),
            StorageOp::ChangeRoom { .. } => StorageResult::RoomChanged(Err(e)),
            StorageOp::StoreRoomMessage { .. } => StorageResult::RoomMessageStored(Err(e)),
            StorageOp::LoadRooms { .. } => StorageResult::RoomsLoaded(Err(e)),
            StorageOp::LoadRoom { .. } => StorageResult::RoomLoaded(Err(e)),
            StorageOp::MarkRoomRead { .. } => StorageResult::RoomReadMarked(Err(e)),
        }
    }
}

impl std::fmt::Debug for StorageOp {
    // Hand-written so passwords and message bodies never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageOp::Register { user, .. } => write!(f, "Register({user})"),
            StorageOp::Authenticate { user, .. } => write!(f, "Authenticate({user})"),
            StorageOp::ChangePassword { user, .. } => write!(f, "ChangePassword({user})"),
            StorageOp::SetContacts { user, add, remove } => {
                write!(f, "SetContacts({user}, +{add:?}, -{remove:?})")
            }
            StorageOp::StoreMessage { from, to, id, .. } => {
                write!(f, "StoreMessage({from}->{to} #{id})")
            }
            StorageOp::LoadMailbox {
                user,
                after,
                all_above,
                ..
            } => write!(
                f,
                "LoadMailbox({user}, after {after}, all above {all_above:?})"
            ),
            StorageOp::MarkDelivered { user, seqs } => {
                write!(f, "MarkDelivered({user}, {} seqs)", seqs.len())
            }
            StorageOp::LoadHistory { user, with, .. } => write!(f, "LoadHistory({user}, {with})"),
            StorageOp::SetBanned { user, banned } => write!(f, "SetBanned({user}, {banned})"),
            StorageOp::ChangeGroups { user, change, .. } => {
                write!(f, "ChangeGroups({user}, {change:?})")
            }
            StorageOp::SetProfile { user, change } => match change {
                ProfileChange::Text { .. } => write!(f, "SetProfile({user}, text)"),
                ProfileChange::Avatar(a) => write!(
                    f,
                    "SetProfile({user}, avatar of {} bytes)",
                    a.as_ref().map_or(0, |a| a.image.data.len())
                ),
            },
            StorageOp::LoadProfiles { users } => match users {
                Some(users) => write!(f, "LoadProfiles({} users)", users.len()),
                None => f.write_str("LoadProfiles(all)"),
            },
            StorageOp::LoadProfile { user, avatar } => {
                write!(f, "LoadProfile({user}, avatar: {avatar})")
            }
            StorageOp::CreateRoom { owner, .. } => write!(f, "CreateRoom({owner})"),
            StorageOp::ChangeRoom {
                by,
                room,
                user,
                change,
                ..
            } => write!(f, "ChangeRoom({by}: {room} {change:?} {user})"),
            StorageOp::StoreRoomMessage { room, from, id, .. } => {
                write!(f, "StoreRoomMessage({from}->room {room} #{id})")
            }
            StorageOp::LoadRooms { user } => write!(f, "LoadRooms({user})"),
            StorageOp::LoadRoom {
                user, room, range, ..
            } => write!(f, "LoadRoom({user}, {room}, {range:?})"),
            StorageOp::MarkRoomRead { user, reads } => write!(f, "MarkRoomRead({user}, {reads:?})"),
        }
    }
}

/// A verified account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Account {
    pub contacts: Vec<UserId>,
    /// A fresh resume token, handed to the client in `LoginOk`.
    pub resume_token: Vec<u8>,
    /// An administrator banned the account (`SetBanned`): the credential was right, but the
    /// login is refused. Read with the credential, so refusing costs no second request;
    /// such a login issues no token, spends none, and comes back with no contacts.
    pub banned: bool,
    /// The user's contact groups, read with the contacts: a version 2 login sends them
    /// (`ServerMsg::Groups`) without a second request.
    pub groups: ContactGroups,
}

impl Account {
    /// The answer to a right credential for a banned account.
    pub fn banned() -> Self {
        Account {
            contacts: Vec::new(),
            resume_token: Vec::new(),
            banned: true,
            groups: ContactGroups::default(),
        }
    }
}

/// A stored message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Stored {
    pub to: UserId,
    pub delivery: Delivery,
    /// The `(from, id)` pair was stored before; `delivery` is the first copy.
    pub duplicate: bool,
    /// For a message stored now, the highest seq of any message to `to` stored before it (0:
    /// none); `None` for a duplicate, or from a store not asked to report it (SQLite, which no
    /// cluster runs on, unless `DbOptions::report_prev`). A store gives each recipient's messages their seqs in
    /// commit order, so no message to `to` has a seq between `prev` and this one's: a
    /// cluster node whose session of `to` has everything up to `prev` pushes the message
    /// without reading the mailbox (`Body::Mail`).
    pub prev: Option<u64>,
}

/// One page of a mailbox.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct MailboxPage {
    pub messages: Vec<Delivery>,
    /// Further messages the read selects follow the last one.
    pub more: bool,
    /// The highest seq of any message to the user, seen no later than the page's messages
    /// (0 when there is none): a seq stored after it is above it, so a session that takes it
    /// as its `all_above` misses nothing stored since, acked by a sibling or not.
    pub high: u64,
    /// Messages this read selects, this page's and every later page's together, when it was
    /// made: the count a login announces before the first of them (`OfflineWaiting`). Only a
    /// page with `more` costs a store a count of its own.
    pub waiting: u32,
}

impl MailboxPage {
    /// Pages `selected` (in seq order, all above the page's `after`) by `limit` and
    /// `max_bytes`, the way every store must; `high` is the caller's to set.
    pub fn take(selected: impl IntoIterator<Item = Delivery>, limit: u32, max_bytes: u64) -> Self {
        let mut page = MailboxPage::default();
        let mut bytes = 0u64;
        for d in selected {
            let size =
                d.body.len() as u64 + d.attachment.as_ref().map_or(0, |a| a.data.len() as u64);
            let full = page.messages.len() as u64 >= u64::from(limit.max(1))
                || (!page.messages.is_empty() && bytes + size > max_bytes);
            if full {
                page.more = true;
                break;
            }
            bytes += size;
            page.messages.push(d);
        }
        page.waiting = u32::try_from(page.messages.len()).unwrap_or(u32::MAX);
        page
    }
}

/// A room as it stands after a committed change: every member with their role, in user
/// order, and the room's last seq (0 before its first message).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RoomView {
    pub room: u64,
    pub name: String,
    pub last: u64,
    pub members: Vec<(UserId, RoomRole)>,
}

/// One of a user's rooms, with how far the user has read it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemberRoom {
    pub view: RoomView,
    pub read: u64,
}

/// A stored room message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RoomStored {
    pub delivery: RoomDelivery,
    /// The members when it committed (for a duplicate: now), in user order.
    pub members: Vec<UserId>,
    pub duplicate: bool,
}

/// Whether a member of role `by` may give `role` to a user holding `current` (`None`: not a
/// member): the owner grants admin and member, an admin member only, and nobody touches
/// the owner or grants `Owner`. Every store decides `ChangeRoom` by this one rule.
pub fn may_grant(by: RoomRole, role: RoomRole, current: Option<RoomRole>) -> bool {
    let ranks_above = |r: RoomRole| by < r;
    role != RoomRole::Owner && ranks_above(role) && current.is_none_or(ranks_above)
}

/// Whether `by` (of role `by_role`) may take `user` (of role `role`) out of a room: anyone
/// but the owner may leave; removing someone else takes a role above theirs.
pub fn may_remove(by: &UserId, by_role: RoomRole, user: &UserId, role: RoomRole) -> bool {
    if by == user {
        role != RoomRole::Owner
    } else {
        by_role < role
    }
}

#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StorageError {
    #[error("user name taken")]
    UserTaken,
    #[error("wrong user name or credential")]
    BadCredentials,
    #[error("no such user")]
    NoSuchUser,
    #[error("no such contact group")]
    NoSuchGroup,
    #[error("a contact group of that name exists")]
    GroupNameTaken,
    #[error("too many contact groups")]
    TooManyGroups,
    #[error("storage failed: {0}")]
    Failed(String),
    #[error("no such room, or not a member")]
    NoSuchRoom,
    #[error("not allowed in this room")]
    Forbidden,
    #[error("room limit reached")]
    RoomLimit,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StorageResult {
    Registered(Result<(), StorageError>),
    Authenticated(Result<Account, StorageError>),
    PasswordChanged(Result<(), StorageError>),
    ContactsSet(Result<(), StorageError>),
    MessageStored(Result<Stored, StorageError>),
    MailboxLoaded(Result<MailboxPage, StorageError>),
    DeliveredMarked(Result<(), StorageError>),
    HistoryLoaded(Result<Vec<HistoryItem>, StorageError>),
    BannedSet(Result<(), StorageError>),
    GroupsChanged(Result<GroupsDiff, StorageError>),
    ProfileSet(Result<ProfileCard, StorageError>),
    ProfilesLoaded(Result<Vec<ProfileCard>, StorageError>),
    ProfileLoaded(Result<(ProfileCard, Option<AvatarImage>), StorageError>),
    RoomCreated(Result<RoomView, StorageError>),
    RoomChanged(Result<RoomView, StorageError>),
    RoomMessageStored(Result<RoomStored, StorageError>),
    RoomsLoaded(Result<Vec<MemberRoom>, StorageError>),
    RoomLoaded(Result<Vec<RoomDelivery>, StorageError>),
    RoomReadMarked(Result<(), StorageError>),
}
