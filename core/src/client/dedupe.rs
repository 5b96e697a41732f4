//! Which delivered sequence numbers the application already has, and which of those it has
//! acknowledged.
//!
//! The server redelivers whatever it has no `Ack` for (an ack lost with a dropped connection,
//! a mailbox load racing a live delivery, a message the application has not acked yet), so
//! the client filters by `seq`. A repeat of a message the application acked is acked again
//! at once (the first ack was lost); a repeat of one it holds but has not acked waits for
//! that ack, since acking it would tell the server the application has it for good.

use std::collections::BTreeMap;

/// How many seqs are remembered: far more than one reconnect's worth of redeliveries.
pub(crate) const REMEMBERED_SEQS: usize = 65_536;

/// What a delivery of a seq means, given what was seen before.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Arrival {
    /// Not seen before: for the application.
    New,
    /// The application has it and has not acked it yet: nothing to do until it does.
    Unacked,
    /// The application acked it, and the server did not get that ack: ack again.
    Acked,
}

#[derive(Debug, Clone)]
pub(crate) struct SeenSeqs {
    /// Seq → acked by the application.
    seqs: BTreeMap<u64, bool>,
    capacity: usize,
}

impl SeenSeqs {
    pub(crate) fn new(capacity: usize) -> Self {
        SeenSeqs {
            seqs: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records a delivery of `seq`.
    ///
    /// Seqs grow in storage order, so the smallest is forgotten first. A seq older than
    /// everything remembered counts as new: handing the application a (very unlikely)
    /// duplicate beats acking, and so losing, a message it never saw.
    pub(crate) fn arrived(&mut self, seq: u64) -> Arrival {
        match self.seqs.get(&seq) {
            Some(true) => Arrival::Acked,
            Some(false) => Arrival::Unacked,
            None => {
                self.remember(seq, false);
                Arrival::New
            }
        }
    }

    /// The application acked `seq`; true unless it had already. A seq not remembered (never
    /// delivered, or forgotten) counts as a first ack: the server ignores seqs that are not
    /// the user's, and one that is must not stay in the mailbox for want of memory here.
    pub(crate) fn acked(&mut self, seq: u64) -> bool {
        match self.seqs.get_mut(&seq) {
            Some(true) => false,
            Some(acked) => {
                *acked = true;
                true
            }
            None => {
                self.remember(seq, true);
                true
            }
        }
    }

    fn remember(&mut self, seq: u64, acked: bool) {
        self.seqs.insert(seq, acked);
        if self.seqs.len() > self.capacity {
            self.seqs.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_first() {
        let mut seen = SeenSeqs::new(3);
        for seq in 1..=5 {
            assert_eq!(seen.arrived(seq), Arrival::New);
        }
        assert_eq!(seen.seqs.len(), 3);
        assert_eq!(seen.arrived(5), Arrival::Unacked);
        assert_eq!(seen.arrived(3), Arrival::Unacked);
        assert_eq!(
            seen.arrived(1),
            Arrival::New,
            "forgotten, so treated as new"
        );
    }

    #[test]
    fn a_repeat_is_acked_again_only_once_the_application_acked_it() {
        let mut seen = SeenSeqs::new(REMEMBERED_SEQS);
        assert_eq!(seen.arrived(7), Arrival::New);
        assert_eq!(seen.arrived(7), Arrival::Unacked);
        assert!(seen.acked(7));
        assert!(!seen.acked(7), "a second ack adds nothing");
        assert_eq!(seen.arrived(7), Arrival::Acked);
        // An ack for a seq not remembered still goes out, and its repeat is acked again.
        assert!(seen.acked(9));
        assert_eq!(seen.arrived(9), Arrival::Acked);
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
                if seen.arrived(seq) == Arrival::New {
                    prop_assert!(new_ones.insert(seq), "seq {} reported twice", seq);
                }
            }
            let distinct: BTreeSet<u64> = seqs.into_iter().collect();
            prop_assert_eq!(new_ones, distinct);
        }
    }
}
