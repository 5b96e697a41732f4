//! Reconnect delays: exponential backoff with "equal jitter".
//!
//! Attempt `n` waits uniformly in `[d/2, d]` with `d = min(max, base·2ⁿ)`. Half the delay is
//! fixed so a client never hammers a recovering server; the other half is random so that a
//! thousand clients dropped by one restart do not all come back in the same millisecond.

use crate::rng::SplitMix64;
use crate::time::Duration;

/// The inclusive range attempt `attempt` (counting from 0) draws its delay from.
pub fn jitter_bounds(base: Duration, max: Duration, attempt: u32) -> (Duration, Duration) {
    // Past 2³¹ the factor saturates; `max` caps the result long before that matters.
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    let ceiling = base.saturating_mul(factor).min(max);
    (ceiling / 2, ceiling)
}

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt; each call counts one more failed attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let (low, high) = jitter_bounds(self.base, self.max, self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let spread = nanos(high - low);
        low + Duration::from_nanos(self.rng.below_inclusive(spread))
    }

    /// After a successful login the next failure starts over from `base`.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Whole nanoseconds, saturating: a spread beyond 584 years is not worth a wider type.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn delays_grow_until_the_cap() {
        let mut backoff = Backoff::new(BASE, MAX, 1);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        for (n, d) in delays.iter().enumerate() {
            let (low, high) = jitter_bounds(BASE, MAX, n as u32);
            assert!(
                low <= *d && *d <= high,
                "attempt {n}: {d:?} not in [{low:?}, {high:?}]"
            );
        }
        // Ranges of consecutive attempts only touch at their ends, so the draws must grow
        // until the cap is reached (attempt 7: 250 ms · 128 = 32 s > 30 s).
        for n in 1..7 {
            assert!(delays[n] >= delays[n - 1], "attempt {n}: {delays:?}");
        }
        assert_eq!(jitter_bounds(BASE, MAX, 0), (BASE / 2, BASE));
        assert_eq!(jitter_bounds(BASE, MAX, 7), (MAX / 2, MAX));
        assert_eq!(jitter_bounds(BASE, MAX, 1000), (MAX / 2, MAX));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let draw = |seed| {
            let mut b = Backoff::new(BASE, MAX, seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn reset_starts_over_from_the_base() {
        let mut backoff = Backoff::new(BASE, MAX, 7);
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= BASE);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(1000)))]

        #[test]
        fn backoff_delay_always_within_equal_jitter_bounds(
            seed in any::<u64>(),
            base_ms in 0u64..10_000,
            max_ms in 0u64..1_000_000,
            attempts in 1usize..80,
        ) {
            let (base, max) = (Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let mut backoff = Backoff::new(base, max, seed);
            for n in 0..attempts {
                let d = backoff.next_delay();
                let (low, high) = jitter_bounds(base, max, n as u32);
                prop_assert!(low <= d && d <= high);
                prop_assert!(high <= max);
            }
        }

        #[test]
        fn the_jitter_range_never_shrinks_from_one_attempt_to_the_next(
            base_ms in 0u64..10_000,
            max_ms in 0u64..1_000_000,
            attempt in 0u32..100,
        ) {
            let (base, max) = (Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let (low, high) = jitter_bounds(base, max, attempt);
            let (next_low, next_high) = jitter_bounds(base, max, attempt + 1);
            prop_assert!(next_low >= low && next_high >= high);
        }
    }
}
