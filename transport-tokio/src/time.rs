//! The bridge between tokio's clock and the core's virtual time.
//!
//! Only `tokio::time` is read here, never `std::time::Instant::now()`: tokio's clock is the
//! one turmoil simulates and `tokio::time::pause` freezes, so the same host code runs in real
//! time, in a simulation and in a paused-time test.

use breeze_core::Instant;
use std::time::Duration;

/// Maps tokio instants to core instants, measured from the moment the clock was started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Self {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    /// A clock whose epoch is `start`.
    pub fn with_epoch(start: tokio::time::Instant) -> Self {
        Clock { start }
    }

    /// The current core instant.
    pub fn now(&self) -> Instant {
        self.core(tokio::time::Instant::now())
    }

    /// The core instant for a tokio instant; instants before the epoch map to the epoch.
    pub fn core(&self, at: tokio::time::Instant) -> Instant {
        Instant::from_epoch(at.saturating_duration_since(self.start))
    }

    /// The tokio instant for a core instant, for `sleep_until`.
    pub fn tokio(&self, at: Instant) -> tokio::time::Instant {
        // A deadline too far out to represent is as good as never; a year is far enough.
        self.start
            .checked_add(at.since_epoch())
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(365 * 86_400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn core_time_follows_tokio_time() {
        let clock = Clock::start();
        assert_eq!(clock.now(), Instant::ZERO);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            clock.now(),
            Instant::from_epoch(Duration::from_millis(1500))
        );
        let at = Instant::from_epoch(Duration::from_secs(3));
        assert_eq!(clock.core(clock.tokio(at)), at);
    }
}
