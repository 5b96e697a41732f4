//! Abuse limits the core enforces on its own, in virtual time: a frame budget per connection,
//! and growing delays after failed logins, per user and per source address.

use super::deadline::DeadlineQueue;
use crate::config::{FrameRate, LoginThrottle};
use crate::ids::UserId;
use crate::time::{Duration, Instant};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Admits one frame under `limit` (GCRA: `tat` is the theoretical arrival time of the next
/// frame at the sustained rate). One `Instant` per connection, no timers.
pub(crate) fn admit_frame(tat: &mut Instant, now: Instant, limit: &FrameRate) -> bool {
    if limit.per_second == 0 {
        return true;
    }
    let interval = Duration::from_secs(1) / limit.per_second;
    let next = (*tat).max(now) + interval;
    if next - now > interval * limit.burst.max(1) {
        return false;
    }
    *tat = next;
    true
}

/// Whose failures a login attempt counts against.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Culprit {
    User(UserId),
    Addr(IpAddr),
}

#[derive(Debug)]
struct Failures {
    count: u32,
    blocked_until: Instant,
    forget_at: Instant,
}

/// Failed logins, remembered for a while per user and per address.
#[derive(Debug, Default)]
pub(crate) struct LoginGuard {
    failures: BTreeMap<Culprit, Failures>,
    forget: DeadlineQueue<Culprit>,
}

impl LoginGuard {
    /// Until when `culprit` may not try again, if it is blocked at `now`.
    pub(crate) fn blocked(&self, culprit: &Culprit, now: Instant) -> Option<Instant> {
        self.failures
            .get(culprit)
            .map(|f| f.blocked_until)
            .filter(|&until| until > now)
    }

    /// Records a failure; returns how many `culprit` has now.
    pub(crate) fn failed(&mut self, culprit: Culprit, now: Instant, cfg: &LoginThrottle) -> u32 {
        let f = self.failures.entry(culprit.clone()).or_insert(Failures {
            count: 0,
            blocked_until: now,
            forget_at: now,
        });
        f.count = f.count.saturating_add(1);
        // `free_attempts` failures go unpunished; the one that reaches the count blocks the
        // next attempt. (No failure can be refused before it happened, so 0 acts as 1.)
        let free = cfg.free_attempts.max(1);
        if f.count >= free {
            // Doubling delays: 1, 2, 4 … × base, capped.
            let doublings = (f.count - free).min(20);
            let delay = cfg
                .base_delay
                .saturating_mul(1 << doublings)
                .min(cfg.max_delay);
            f.blocked_until = now + delay;
        }
        f.forget_at = now + cfg.forget_after;
        let count = f.count;
        self.forget.push(now + cfg.forget_after, culprit);
        count
    }

    pub(crate) fn succeeded(&mut self, culprit: &Culprit) {
        self.failures.remove(culprit);
    }

    /// Forgets failures that have been quiet long enough.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((at, culprit)) = self.forget.pop_due(now) {
            if self
                .failures
                .get(&culprit)
                .is_some_and(|f| f.forget_at == at)
            {
                self.failures.remove(&culprit);
            }
        }
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.forget.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_epoch(Duration::from_millis(n))
    }

    #[test]
    fn a_burst_is_admitted_and_a_sustained_flood_is_not() {
        let limit = FrameRate {
            per_second: 100,
            burst: 10,
        };
        let mut tat = Instant::ZERO;
        let admitted = (0..50)
            .filter(|_| admit_frame(&mut tat, ms(0), &limit))
            .count();
        assert_eq!(admitted, 10);
        // At the sustained rate (one per 10 ms) everything passes.
        let mut tat = Instant::ZERO;
        assert!((0..1000).all(|i| admit_frame(&mut tat, ms(i * 10), &limit)));
    }

    #[test]
    fn delays_double_after_the_free_attempts_and_are_forgotten() {
        let cfg = LoginThrottle {
            free_attempts: 2,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
            forget_after: Duration::from_secs(60),
        };
        let mut g = LoginGuard::default();
        let who = Culprit::User(UserId::new("x").unwrap());
        g.failed(who.clone(), ms(0), &cfg);
        assert_eq!(g.blocked(&who, ms(0)), None, "the first free failure");
        g.failed(who.clone(), ms(0), &cfg);
        assert_eq!(
            g.blocked(&who, ms(0)),
            Some(ms(1000)),
            "two free failures: the third attempt waits"
        );
        g.failed(who.clone(), ms(1000), &cfg);
        assert_eq!(g.blocked(&who, ms(1000)), Some(ms(3000)));
        for _ in 0..10 {
            g.failed(who.clone(), ms(3000), &cfg);
        }
        assert_eq!(g.blocked(&who, ms(3000)), Some(ms(8000)), "capped");
        g.expire(ms(62_999));
        assert!(g.blocked(&who, ms(4000)).is_some());
        g.expire(ms(63_000));
        assert_eq!(g.blocked(&who, ms(4000)), None);
    }
}
