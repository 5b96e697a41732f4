//! A set kept as a sorted vector: the shape of the server's many small per-user sets (a
//! user's contacts, the users watching someone, a user's sessions).
//!
//! Memory is why. A `BTreeSet` of 20 user names takes three to four B-tree nodes, about
//! 800 bytes; the same 20 in a vector take 320. With two such sets per user (whom they watch,
//! who watches them), that difference was most of a connected user's footprint at 20,000
//! users. Lookups stay logarithmic; an insert or remove moves the elements after it, which
//! is cheap at the sizes these sets have (contacts are capped, and even a user watched by
//! 20,000 others moves 320 kB per change, far from the hot paths). Iteration is in order,
//! so output built from these sets stays deterministic.

/// A set of `T` in ascending order, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VecSet<T>(Vec<T>);

impl<T> Default for VecSet<T> {
    fn default() -> Self {
        VecSet(Vec::new())
    }
}

impl<T: Ord> VecSet<T> {
    pub(crate) fn new() -> Self {
        VecSet(Vec::new())
    }

    /// Adds `value`; whether it was new.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                if self.0.len() == self.0.capacity() {
                    // Grow by a quarter, not double: most sets reach their size and stay.
                    self.0.reserve_exact((self.0.len() / 4).max(1));
                }
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Removes `value`; whether it was there.
    pub(crate) fn remove(&mut self, value: &T) -> bool {
        match self.0.binary_search(value) {
            Ok(at) => {
                self.0.remove(at);
                if self.0.capacity() > 2 * self.0.len() + 4 {
                    self.0.shrink_to_fit();
                }
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn contains(&self, value: &T) -> bool {
        self.0.binary_search(value).is_ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T: Ord> FromIterator<T> for VecSet<T> {
    /// Sized exactly: a set built whole (contacts loaded at login) carries no spare room.
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v: Vec<T> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        v.shrink_to_fit();
        VecSet(v)
    }
}

impl<'a, T> IntoIterator for &'a VecSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::VecSet;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// Whatever inserts and removes happen, the set holds what a `BTreeSet` would, in
        /// the same order, and answers `insert`, `remove` and `contains` the same way.
        #[test]
        fn behaves_like_a_btreeset(ops in proptest::collection::vec((any::<bool>(), 0u8..40), 0..300)) {
            let mut ours = VecSet::new();
            let mut model = BTreeSet::new();
            for (add, x) in ops {
                if add {
                    prop_assert_eq!(ours.insert(x), model.insert(x));
                } else {
                    prop_assert_eq!(ours.remove(&x), model.remove(&x));
                }
                prop_assert_eq!(ours.contains(&x), model.contains(&x));
                prop_assert_eq!(ours.len(), model.len());
            }
            prop_assert!(ours.iter().eq(model.iter()));
        }
    }

    #[test]
    fn built_whole_it_is_sorted_without_duplicates_or_spare_room() {
        let set: VecSet<u32> = [5, 1, 5, 3].into_iter().collect();
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![1, 3, 5]);
        assert_eq!(set.0.capacity(), 3);
    }
}
