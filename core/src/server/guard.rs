//! Abuse limits the core enforces on its own, in virtual time: a frame budget per connection,
//! growing delays after failed logins, per user and per source address, and a registration
//! rate per source address.

use super::deadline::DeadlineQueue;
use crate::config::{FrameRate, LoginThrottle, RegisterThrottle};
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
    gcra(
        tat,
        now,
        Duration::from_secs(1) / limit.per_second,
        limit.burst,
    )
}

/// One more event at `now` under "one per `interval`, bursts of `burst`", if it fits.
fn gcra(tat: &mut Instant, now: Instant, interval: Duration, burst: u32) -> bool {
    let next = (*tat).max(now) + interval;
    if next - now > interval * burst.max(1) {
        return false;
    }
    *tat = next;
    true
}

/// Registrations per source address (GCRA, one `Instant` per address that registered
/// lately). An address is forgotten once its burst has refilled, when it would behave as a
/// new one anyway, so the map holds only addresses active within `burst × every`.
#[derive(Debug, Default)]
pub(crate) struct RegisterGuard {
    tat: BTreeMap<IpAddr, Instant>,
    /// One entry per remembered address, at or before its `tat` (lazily moved on).
    forget: DeadlineQueue<IpAddr>,
}

impl RegisterGuard {
    /// Admits one registration from `addr` at `now`, or says it must wait.
    pub(crate) fn admit(&mut self, addr: IpAddr, now: Instant, cfg: &RegisterThrottle) -> bool {
        if cfg.burst == 0 {
            return true;
        }
        let known = self.tat.contains_key(&addr);
        let tat = self.tat.entry(addr).or_insert(now);
        let admitted = gcra(tat, now, cfg.every, cfg.burst);
        if !known {
            let at = *tat;
            self.forget.push(at, addr);
        }
        admitted
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some((_, addr)) = self.forget.pop_due(now) {
            match self.tat.get(&addr) {
                Some(&tat) if tat > now => self.forget.push(tat, addr),
                Some(_) => {
                    self.tat.remove(&addr);
                }
                None => {}
            }
        }
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.forget.next()
    }
}

/// Whose failures a login attempt counts against (`LoginThrottle` says why three).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Culprit {
    /// One account from one address.
    Pair(UserId, IpAddr),
    /// One account from anywhere.
    User(UserId),
    /// One address, any account.
    Addr(IpAddr),
}

impl Culprit {
    fn allowance(&self, cfg: &LoginThrottle) -> u32 {
        match self {
            Culprit::Pair(..) => cfg.free_attempts,
            Culprit::User(_) => cfg.account_free_attempts,
            Culprit::Addr(_) => cfg.address_free_attempts,
        }
    }
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
        let free = culprit.allowance(cfg).max(1);
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
    fn registrations_per_address_come_in_a_burst_then_at_the_rate_and_are_forgotten() {
        let cfg = RegisterThrottle {
            burst: 3,
            every: Duration::from_secs(10),
        };
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let mut g = RegisterGuard::default();
        let admitted = (0..10).filter(|_| g.admit(a, ms(0), &cfg)).count();
        assert_eq!(admitted, 3, "the burst");
        assert!(g.admit(b, ms(0), &cfg), "another address has its own burst");
        assert!(!g.admit(a, ms(9_999), &cfg));
        assert!(g.admit(a, ms(10_000), &cfg), "one more per interval");
        assert!(!g.admit(a, ms(10_000), &cfg));
        // Quiet until the burst has refilled: forgotten, and a full burst again.
        g.expire(ms(39_999));
        assert!(g.tat.contains_key(&a));
        g.expire(ms(40_000));
        assert!(!g.tat.contains_key(&a) && !g.tat.contains_key(&b));
        assert_eq!(g.next_expiry(), None);
        assert_eq!((0..10).filter(|_| g.admit(a, ms(40_000), &cfg)).count(), 3);
        let off = RegisterThrottle { burst: 0, ..cfg };
        assert!((0..100).all(|_| g.admit(a, ms(40_000), &off)));
    }

    #[test]
    fn delays_double_after_the_free_attempts_and_are_forgotten() {
        let cfg = LoginThrottle {
            free_attempts: 9,
            account_free_attempts: 2,
            address_free_attempts: 9,
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
