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
        }
    }
}

/// Password length rule, applied at registration and password change.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

pub fn password_is_acceptable(password: &str) -> bool {
    (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len())
}
