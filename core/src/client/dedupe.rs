//! Which delivered sequence numbers the application already has.
//!
//! The server redelivers whatever it has no `Ack` for (an ack lost with a dropped connection,
//! a mailbox load racing a live delivery), so the client filters by `seq`.

use std::collections::BTreeSet;

/// How many seqs are remembered: far more than one reconnect's worth of redeliveries.
pub(crate) const REMEMBERED_SEQS: usize = 65_536;

#[derive(Debug, Clone)]
pub(crate) struct SeenSeqs {
    seqs: BTreeSet<u64>,
    capacity: usize,
}

impl SeenSeqs {
    pub(crate) fn new(capacity: usize) -> Self {
        SeenSeqs {
            seqs: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `seq`; true when it had not been seen.
    ///
    /// Seqs grow in storage order, so the smallest is forgotten first. A seq older than
    /// everything remembered counts as new: handing the application a (very unlikely)
    /// duplicate beats acking, and so losing, a message it never saw.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        if !self.seqs.insert(seq) {
            return false;
        }
        if self.seqs.len() > self.capacity {
            self.seqs.pop_first();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_first() {
        let mut seen = SeenSeqs::new(3);
        for seq in 1..=5 {
            assert!(seen.insert(seq));
        }
        assert_eq!(seen.seqs.len(), 3);
        assert!(!seen.insert(5));
        assert!(!seen.insert(3));
        assert!(seen.insert(1), "forgotten, so treated as new");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(1000)))]

        /// Within the remembered window, however the server repeats and reorders deliveries,
        /// each seq is reported new exactly once.
        #[test]
        fn each_seq_counts_as_new_exactly_once(seqs in proptest::collection::vec(0u64..200, 0..400)) {
            let mut seen = SeenSeqs::new(REMEMBERED_SEQS);
            let mut new_ones = BTreeSet::new();
            for seq in seqs.iter().copied() {
                if seen.insert(seq) {
                    prop_assert!(new_ones.insert(seq), "seq {} reported twice", seq);
                }
            }
            let distinct: BTreeSet<u64> = seqs.into_iter().collect();
            prop_assert_eq!(new_ones, distinct);
        }
    }
}
