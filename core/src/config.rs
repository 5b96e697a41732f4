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

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub node: NodeId,
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
}

/// A sustained rate with a burst allowance. `per_second: 0` switches the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRate {
    pub per_second: u32,
    pub burst: u32,
}

/// After `free_attempts` failed password logins for one user, or failed logins of any kind
/// from one source address, further attempts are refused (`RateLimited`) for `base_delay`,
/// doubling with each failure up to `max_delay`; failures quiet for `forget_after` are
/// forgotten. A successful login clears the user's count (not the address's: one valid
/// account must not launder an address guessing at others).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    pub free_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub forget_after: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node: NodeId(0),
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
            admins: BTreeSet::new(),
            // Far above any person's typing and a busy client's acks; a flood hits it within
            // a second.
            frame_rate: FrameRate {
                per_second: 2000,
                burst: 4000,
            },
            login_throttle: LoginThrottle {
                free_attempts: 5,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(300),
                forget_after: Duration::from_secs(900),
            },
            mailbox_page: 256,
            mailbox_page_bytes: 1024 * 1024,
        }
    }
}

/// Password length rule, applied at registration and password change.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

pub fn password_is_acceptable(password: &str) -> bool {
    (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len())
}
