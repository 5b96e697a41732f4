//! Server policy. Everything a deployment may tune lives here; the transport and the binary
//! only fill it in.

use crate::codec::DEFAULT_MAX_FRAME;
use crate::ids::{NodeId, UserId};
use crate::message::WatchScope;
use crate::time::Duration;
use std::collections::BTreeSet;

/// What happens when a user who is logged in logs in again.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum DuplicateLogin {
    /// The new session wins; the old one is told `Replaced` and closed (Breeze IM's rule).
    #[default]
    Replace,
    /// Sessions coexist; the user is offline only when the last one ends.
    Multi,
}

/// Who may create accounts.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Registration {
    /// Anyone who can connect may `Register` (throttled per address).
    #[default]
    Open,
    /// `Register` is refused (`Forbidden`); the operator creates accounts
    /// (`breeze-server user add`).
    Closed,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node: NodeId,
    pub registration: Registration,
    /// How often clients must send something; announced in `Welcome`.
    pub heartbeat_interval: Duration,
    /// A connection with no inbound frame for this long is dead.
    pub heartbeat_timeout: Duration,
    /// A connection must say `Hello` within this long of opening.
    pub handshake_timeout: Duration,
    /// A user whose last session died is announced offline only after this long without a new
    /// session. Zero announces at once.
    pub offline_grace: Duration,
    pub duplicate_login: DuplicateLogin,
    pub scope: WatchScope,
    pub max_frame: u32,
    pub max_attachment: u32,
    pub max_body: usize,
    pub max_contacts: usize,
    /// Named contact groups one user may have (PROTOCOL.md, "Contact groups"): the whole
    /// list is repeated in every `GroupsChanged`, so it stays short.
    pub max_groups: u32,
    pub admins: BTreeSet<UserId>,
    /// Frames one connection may send; beyond it the connection is closed as `Flooding`.
    pub frame_rate: FrameRate,
    /// Growing delays after failed logins.
    pub login_throttle: LoginThrottle,
    /// Offline messages go out in pages of at most this many messages and bytes; the next
    /// page follows the client's ack of the last one, so a large mailbox never floods a
    /// connection's outbound queue.
    pub mailbox_page: u32,
    pub mailbox_page_bytes: u64,
    /// Storage requests and password hashes in flight, per connection and on the server.
    pub work: WorkBudget,
    /// Registrations per source address.
    pub register_throttle: RegisterThrottle,
    /// Most members of one room (SECURITY.md, "Rooms").
    pub max_room_members: u32,
    /// Most rooms one user is a member of.
    pub max_rooms_per_user: u32,
    /// Direct transfers between two clients (PROTOCOL.md, "Direct transfers").
    pub transfers: TransferLimits,
}

/// The limits on direct transfers. The server keeps no file data: it introduces the two
/// clients and, when they cannot connect directly, forwards the chunks (the relay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// The largest file one `OfferFile` may announce, in bytes; larger is `TooLarge`.
    pub max_size: u64,
    /// Transfers one user may take part in at once, as sender or receiver (offers not yet
    /// answered included); one more is `TooManyTransfers`. 0 switches transfers off.
    pub per_user: u32,
    /// Relay flow control: relayed bytes the sender may send beyond what the receiver
    /// acknowledged. What the server ever holds for one relayed transfer (in the receiver's
    /// outbound queue) is bounded by it, so it must stay well under the host's outbound
    /// queue bytes, or a relay alone would close the receiver as a slow reader.
    pub window: u32,
}

/// How many of something may be in flight at once: for one connection, and on the whole
/// server. One more is refused (`Busy`) rather than queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub per_conn: u32,
    pub total: u32,
}

impl Budget {
    /// How many may be in flight on the server (a `total` of 0 acts as 1): the capacity of
    /// the queues that carry them.
    pub fn capacity(&self) -> usize {
        usize::try_from(self.total.max(1)).unwrap_or(usize::MAX)
    }
}

/// The core's budgets for work it hands to the host. Every storage request counts against
/// `storage` until its result is handled, and one that costs an argon2 hash (`Register`, a
/// password `Login`, `ChangePassword`) against `hashing` too. `storage.total` is also the
/// bound of every queue between the core and storage (the store's request queue, the host's
/// result channel), and `hashing.total` of the store's hash-job queue: those queues are sized
/// from it, so they can never fill up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkBudget {
    pub storage: Budget,
    pub hashing: Budget,
}

/// Registrations from one source address: a burst of `burst`, then one per `every` (GCRA,
/// like the frame budget). Beyond it `Register` is refused with `RateLimited`. `burst: 0`
/// switches the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterThrottle {
    pub burst: u32,
    pub every: Duration,
}

/// A sustained rate with a burst allowance. `per_second: 0` switches the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRate {
    pub per_second: u32,
    pub burst: u32,
}

/// Failed password logins are counted three ways, each with its own allowance: per account
/// *and* source address (`free_attempts`: someone mistyping, or guessing one account from one
/// place), per account from anywhere (`account_free_attempts`: guessing spread over many
/// addresses), and per address across accounts (`address_free_attempts`: one place trying
/// many accounts). Past an allowance further attempts it covers are refused (`RateLimited`,
/// with the wait) for `base_delay`, doubling with each failure up to `max_delay`; failures
/// quiet for `forget_after` are forgotten. The pair is the tight one, so one colleague
/// mistyping behind an office NAT locks out nobody else, and a stranger guessing at a name
/// from elsewhere does not lock its owner out until the account-wide allowance is spent. A
/// successful login clears the pair's and the account's counts, not the address's: one valid
/// account must not launder an address guessing at others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    pub free_attempts: u32,
    pub account_free_attempts: u32,
    pub address_free_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub forget_after: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node: NodeId(0),
            registration: Registration::Open,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            offline_grace: Duration::ZERO,
            duplicate_login: DuplicateLogin::Replace,
            scope: WatchScope::Everyone,
            max_frame: DEFAULT_MAX_FRAME,
            max_attachment: 1024 * 1024,
            max_body: 16 * 1024,
            max_contacts: 1000,
            // QQ-style messengers cap groups near this; 100 names of 32 characters are under
            // 10 KB in each `GroupsChanged`.
            max_groups: 100,
            admins: BTreeSet::new(),
            // Far above any person's typing and a busy client's acks; a flood hits it within
            // a second.
            frame_rate: FrameRate {
                per_second: 2000,
                burst: 4000,
            },
            login_throttle: LoginThrottle {
                free_attempts: 5,
                account_free_attempts: 50,
                address_free_attempts: 100,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
                forget_after: Duration::from_secs(900),
            },
            mailbox_page: 256,
            mailbox_page_bytes: 1024 * 1024,
            work: WorkBudget {
                // 256 per connection lets a client re-send a long outbox after a reconnect
                // in one go. 1024 on the server is two full store transactions (the store's
                // `MAX_BATCH`), so the writer always has its next batch waiting, and holds at
                // most ~1.1 GB even if every request were a `Send` of `max_frame` bytes.
                storage: Budget {
                    per_conn: 256,
                    total: 1024,
                },
                // A hash takes tens of ms on one of `--hash-threads` (2) threads: 64 waiting
                // is about a second of queue. Two per connection allows a pipelined
                // `Register` + `Login`.
                hashing: Budget {
                    per_conn: 2,
                    total: 64,
                },
            },
            // An office behind one NAT may sign up a few people at once; a script may not
            // fill the directory.
            register_throttle: RegisterThrottle {
                burst: 10,
                every: Duration::from_secs(30),
            },
            // A team's room, or a whole small company's; a message to it costs one stored
            // row and up to this many live pushes (BENCHMARKS.md, "Rooms").
            max_room_members: 1000,
            // Each room costs a login one more `RoomMembers` frame and, unread, one read.
            max_rooms_per_user: 100,
            transfers: TransferLimits {
                // Large enough for a disk image, small enough that a relayed transfer ends.
                max_size: 16 * 1024 * 1024 * 1024,
                per_user: 4,
                // Four chunks of 256 KiB in flight keep a relay busy over a LAN's latency, and
                // leave three quarters of the 4 MiB outbound queue to everything else.
                window: 1024 * 1024,
            },
        }
    }
}

/// Password length rule, applied at registration and password change.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

pub fn password_is_acceptable(password: &str) -> bool {
    (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len())
}
