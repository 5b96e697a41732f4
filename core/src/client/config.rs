//! How a client is set up.

use crate::ids::UserId;
use crate::message::Status;
use crate::time::Duration;
use std::fmt;

/// What to do with the account on the first successful handshake.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Mode {
    /// The account exists: log in.
    #[default]
    Login,
    /// Create the account, then log in. Later connections only log in.
    Register,
    /// Log in as an agent (`AgentLogin`, for scripts, bots and admin queries): the session
    /// takes no part in the user's presence or the duplicate-login policy, gets no
    /// deliveries and no resume token, so the user's own devices are left exactly as they
    /// are. It can send, read history and ask `AdminWho`. Always by password.
    Agent,
}

/// When the client acknowledges a delivered message. An ack is final: the server drops the
/// message from the user's mailbox and never delivers it again, so it must not go out before
/// the application has the message in the sense it cares about.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum AckMode {
    /// Ack a message once `poll_event` has returned it: the application holds it in memory.
    /// For an application that shows messages and keeps nothing; one that dies with messages
    /// taken but not yet shown or saved loses those.
    #[default]
    OnHandover,
    /// Ack only what the application passes to `Client::ack`, e.g. after saving or showing
    /// it. Whatever it never acks is delivered again at its next login (after a crash, by a
    /// new `Client`), so nothing is lost between the socket and the application. An
    /// application that never acks leaves every message in the mailbox (a send-only tool),
    /// and gets only the first page of it (PROTOCOL.md §13.3).
    Manual,
}

#[derive(Clone)]
pub struct ClientConfig {
    pub user: UserId,
    pub password: String,
    /// The status asserted at every login.
    pub status: Status,
    /// Names the client software in `Hello` (cut to 64 bytes).
    pub client_name: String,
    pub mode: Mode,
    /// Seeds the reconnect jitter, so a simulation replays the same delays.
    pub seed: u64,
    /// Message ids are `id_base + counter`. The host picks a value unique across runs (e.g.
    /// random): the server dedupes by `(sender, id)`, so a restarted client reusing ids would
    /// have its new messages taken for re-sends of old ones.
    pub id_base: u64,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Connecting, the handshake and the login together must finish within this.
    pub connect_timeout: Duration,
    /// When deliveries are acknowledged (default: once the application took them).
    pub acks: AckMode,
}

impl ClientConfig {
    /// Logs in as `user`, online, with the documented timing defaults.
    pub fn new(user: UserId, password: impl Into<String>) -> Self {
        ClientConfig {
            user,
            password: password.into(),
            status: Status::Online,
            client_name: concat!("breeze-core/", env!("CARGO_PKG_VERSION")).to_string(),
            mode: Mode::Login,
            seed: 0,
            id_base: 0,
            backoff_base: Duration::from_millis(250),
            // Phoenix's and Socket.IO's clients cap at 5 s too: after a server restart a
            // client is back within 2.5–5 s of it (equal jitter), and 20,000 clients spread
            // over that window are ~8,000 logins a second, what one node takes.
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            acks: AckMode::OnHandover,
        }
    }
}

impl fmt::Debug for ClientConfig {
    // Hand-written so the password never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("user", &self.user)
            .field("status", &self.status)
            .field("client_name", &self.client_name)
            .field("mode", &self.mode)
            .field("seed", &self.seed)
            .field("id_base", &self.id_base)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("acks", &self.acks)
            .finish_non_exhaustive()
    }
}
