//! A min-queue of deadlines with lazy rescheduling.
//!
//! Each tracked key has at most one entry. Refreshing a key's deadline (an inbound frame) does
//! not touch the queue; when the old entry pops, its owner checks the real deadline and pushes
//! it again if it moved. A busy connection thus costs one heap operation per timeout period,
//! not one per frame, and nothing ever scans all sessions.

use crate::time::Instant;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug)]
pub(crate) struct DeadlineQueue<K: Ord> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for DeadlineQueue<K> {
    fn default() -> Self {
        DeadlineQueue {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> DeadlineQueue<K> {
    pub(crate) fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry, which may be stale (earlier than its key's real deadline).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest entry, without removing it.
    pub(crate) fn peek(&self) -> Option<(Instant, &K)> {
        self.heap.peek().map(|Reverse((at, key))| (*at, key))
    }

    /// Removes and returns the earliest entry, due or not.
    pub(crate) fn pop(&mut self) -> Option<(Instant, K)> {
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Removes and returns one entry due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.next()? > now {
            return None;
        }
        self.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t = |s| Instant::from_epoch(Duration::from_secs(s));
        let mut q = DeadlineQueue::default();
        q.push(t(5), 'b');
        q.push(t(3), 'a');
        q.push(t(9), 'c');
        assert_eq!(q.next(), Some(t(3)));
        assert_eq!(q.pop_due(t(2)), None);
        assert_eq!(q.pop_due(t(5)), Some((t(3), 'a')));
        assert_eq!(q.pop_due(t(5)), Some((t(5), 'b')));
        assert_eq!(q.pop_due(t(5)), None);
        assert_eq!(q.next(), Some(t(9)));
        assert_eq!(q.peek(), Some((t(9), &'c')));
        assert_eq!(q.pop(), Some((t(9), 'c')));
        assert_eq!(q.peek(), None);
    }
}
