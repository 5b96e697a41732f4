//! How the store's commits go, for `/metrics` and `/readyz`: a latency histogram and whether
//! the last commit failed. Written by the store's one writer (SQLite's writer thread,
//! PostgreSQL's writer task), read by whoever scrapes, with relaxed atomics: each figure is a
//! count on its own, and a scrape that sees one commit more in one bucket than in `count` is
//! off by one commit, never wrong for long.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in microseconds: an fsync on an SSD is ~0.1–2 ms,
/// a batch of a thousand messages a few ms, a stalled disk seconds.
pub const BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commits that took at most `BUCKETS_MICROS[i]` (not cumulative; the last slot is the
    /// overflow).
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
    failures: AtomicU64,
    last_failed: AtomicBool,
}

/// A copy of the figures at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CommitSnapshot {
    /// Commits per bucket: `buckets[i]` took at most `BUCKETS_MICROS[i]` (and more than the
    /// bound before); the last entry, one past the bounds, took longer than them all.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_micros: u64,
    pub failures: u64,
    /// The most recent commit failed: the store cannot write now.
    pub failing: bool,
}

impl CommitStats {
    /// A transaction committed after `took`: for the writer that committed it.
    pub fn committed(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let slot = BUCKETS_MICROS
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS_MICROS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.last_failed.store(false, Ordering::Relaxed);
    }

    /// A batch could not be committed: the store cannot write now, until the next commit.
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.last_failed.store(true, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CommitSnapshot {
        CommitSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            failing: self.last_failed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_land_in_their_bucket_and_a_failure_shows_until_the_next_success() {
        let stats = CommitStats::default();
        stats.committed(Duration::from_micros(80));
        stats.committed(Duration::from_micros(900));
        stats.committed(Duration::from_secs(3));
        let s = stats.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], 1, "≤ 100 µs");
        assert_eq!(s.buckets[3], 1, "≤ 1 ms");
        assert_eq!(*s.buckets.last().unwrap(), 1, "3 s is over every bound");
        assert_eq!(s.buckets.iter().sum::<u64>(), s.count);
        assert_eq!(s.sum_micros, 3_000_980);
        assert!(!s.failing);
        stats.failed();
        assert!(stats.snapshot().failing);
        stats.committed(Duration::from_micros(1));
        let s = stats.snapshot();
        assert!(!s.failing && s.failures == 1);
    }
}
