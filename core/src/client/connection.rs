//! One connection's progress and timers: where the handshake and login stand, and when the
//! connection must ping or be given up.

use super::StopReason;
use crate::time::{Duration, Instant};

/// Send-something-this-often and silent-this-long-is-dead, as the server's `Welcome` set them.
/// Zero switches the respective timer off.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heartbeat {
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
}

#[derive(Debug)]
pub(super) enum LoginStep {
    Registering,
    Token,
    Password {
        password: String,
        /// What a `BadCredentials` means here: a wrong password, or, when claiming an
        /// account whose registration answer was lost, someone else's account.
        on_failure: StopReason,
    },
}

#[derive(Debug)]
pub(super) enum Stage {
    Handshaking,
    LoggingIn(LoginStep),
    LoggedIn,
}

#[derive(Debug)]
pub(super) struct Connection {
    /// When connect + handshake + login give up.
    pub(super) login_deadline: Instant,
    pub(super) stage: Stage,
    /// Known from `Welcome` on.
    pub(super) heartbeat: Option<Heartbeat>,
    pub(super) last_sent: Instant,
    pub(super) last_received: Instant,
}

impl Connection {
    /// When this connection counts as failed unless something happens first.
    pub(super) fn give_up_at(&self) -> Option<Instant> {
        let login = (!matches!(self.stage, Stage::LoggedIn)).then_some(self.login_deadline);
        let silence = self
            .heartbeat
            .filter(|h| !h.timeout.is_zero())
            .map(|h| self.last_received + h.timeout);
        login.into_iter().chain(silence).min()
    }

    pub(super) fn ping_at(&self) -> Option<Instant> {
        self.heartbeat
            .filter(|h| !h.interval.is_zero())
            .map(|h| self.last_sent + h.interval)
    }
}
