//! An inline storage backend: the real `breeze_store::Db`, applied synchronously in `submit`.
//!
//! The database belongs to the simulation, not to the server host, so it survives the
//! server's crash and restart exactly as a file on disk would: every request is committed
//! before its result is handed to the core, so what a crash loses is only what the core had
//! not been told yet. Applying inline keeps the order of results the order of requests,
//! and the hasher is seeded, so a seed replays byte for byte.

use breeze_core::RequestId;
use breeze_core::storage::StorageOp;
use breeze_store::{Db, Hasher};
use breeze_transport_tokio::{ResultSender, StorageBackend};
use std::sync::{Arc, Mutex, PoisonError};

/// The database and hasher shared by every incarnation of the server.
#[derive(Debug, Clone)]
pub struct SharedStore {
    pub db: Arc<Mutex<Db>>,
    pub hasher: Arc<Hasher>,
}

impl SharedStore {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Performs each request at once, stamping messages with simulated time.
#[derive(Debug)]
pub struct SimStorage {
    store: SharedStore,
    results: ResultSender,
}

impl SimStorage {
    pub fn new(store: SharedStore, results: ResultSender) -> Self {
        SimStorage { store, results }
    }
}

impl StorageBackend for SimStorage {
    fn submit(&mut self, id: RequestId, op: StorageOp) {
        let now_ms = turmoil::since_epoch()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let result = self.store.lock().apply(id, op, now_ms, &self.store.hasher);
        // A host that is gone (crashed mid-batch) loses the answer, as a real one would.
        let _ = self.results.send(id, result);
    }
}
