//! The server's connections by id: a hash table whose only walk is in id order.
//!
//! Every frame and every heartbeat re-filing looks a connection up, so with 19,900 idle
//! clients pinging every 30 s this is the core's hottest structure. A `BTreeMap` kept each
//! 312-byte `Conn` inside its nodes, and a lookup descended through several of them, each a
//! cache miss on an idle server: `perf annotate` of that steady state put 45 % of
//! `handle_frame`'s own samples on one node load. A hash table reaches the entry in one probe;
//! with it (and the host's table hashed too) the idle server used 136–138 ms of CPU in 10 s
//! against 157–160 ms (BENCHMARKS.md, "Hashed connection tables").
//!
//! Hash order must never reach the outputs (a seed replays a simulation only if every run
//! does the same things in the same order), so the table has no iterator: whatever is done
//! for all connections walks `ids()`, sorted. The hash is foldhash with a fixed seed, as the
//! core has no randomness of its own; connection ids are the host's, never a peer's, so
//! nobody can choose keys that collide.

use super::session::Conn;
use crate::ids::ConnId;
use foldhash::fast::FixedState;
use std::collections::HashMap;
use std::ops::Index;

#[derive(Debug, Default)]
pub(super) struct Conns(HashMap<ConnId, Conn, FixedState>);

impl Conns {
    pub(super) fn get(&self, id: &ConnId) -> Option<&Conn> {
        self.0.get(id)
    }

    pub(super) fn get_mut(&mut self, id: &ConnId) -> Option<&mut Conn> {
        self.0.get_mut(id)
    }

    pub(super) fn contains_key(&self, id: &ConnId) -> bool {
        self.0.contains_key(id)
    }

    pub(super) fn insert(&mut self, id: ConnId, conn: Conn) -> Option<Conn> {
        self.0.insert(id, conn)
    }

    pub(super) fn remove(&mut self, id: &ConnId) -> Option<Conn> {
        self.0.remove(id)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Every connection's id, in id order.
    pub(super) fn ids(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self.0.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// How many connections `pred` holds for; the count does not depend on the order.
    pub(super) fn count(&self, pred: impl Fn(&Conn) -> bool) -> usize {
        self.0.values().filter(|c| pred(c)).count()
    }
}

impl Index<&ConnId> for Conns {
    type Output = Conn;

    fn index(&self, id: &ConnId) -> &Conn {
        &self.0[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;

    #[test]
    fn ids_come_in_order_whatever_the_insertion_order() {
        let mut conns = Conns::default();
        let now = Instant::ZERO;
        // Enough that hash order and id order differ.
        for id in (0..200u64).rev().step_by(3).chain((0..200).step_by(7)) {
            conns.insert(ConnId(id * 1_000_003), Conn::new(now, None));
        }
        let ids = conns.ids();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_eq!(ids.len(), conns.len());
    }
}
