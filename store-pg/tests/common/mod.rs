#![allow(dead_code)] // Each test binary uses its own share of these.

//! A `PgService` driven one request at a time, as the contract suite and these tests want.

use breeze_core::RequestId;
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_store::{HashCost, Hasher};
use breeze_store_pg::{PgOptions, PgService, PgStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

pub const NOW: u64 = 1_700_000_000_000;

pub fn hasher() -> Hasher {
    Hasher::new(HashCost::fast_for_tests()).expect("hasher")
}

/// One node's service over a test schema, with a clock the test sets.
pub struct Node {
    pub store: PgStore,
    service: Option<PgService>,
    results: mpsc::UnboundedReceiver<(RequestId, StorageResult)>,
    now: Arc<AtomicU64>,
    next_id: u64,
}

impl Node {
    /// Opens (migrating) the database at `url` and starts a service on it; call inside a
    /// runtime.
    pub async fn start(url: &str) -> Node {
        let store = PgStore::open(url, &PgOptions::default())
            .await
            .expect("open the test schema");
        let (tx, results) = mpsc::unbounded_channel();
        let now = Arc::new(AtomicU64::new(NOW));
        let clock = Arc::clone(&now);
        let service = PgService::start(
            store.clone(),
            hasher(),
            2,
            breeze_core::ServerConfig::default().work,
            Arc::new(move || clock.load(Ordering::SeqCst)),
            move |id, result| {
                let _ = tx.send((id, result));
            },
        );
        Node {
            store,
            service: Some(service),
            results,
            now,
            next_id: 0,
        }
    }

    /// Performs `op` at `now_ms` and waits for its result.
    pub async fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult {
        self.now.store(now_ms, Ordering::SeqCst);
        self.next_id += 1;
        let id = RequestId(self.next_id);
        self.service.as_ref().expect("running").submit(id, op);
        let (got, result) = self.results.recv().await.expect("a result");
        assert_eq!(got, id, "the result answers the request");
        result
    }

    pub async fn shutdown(mut self) {
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
    }
}
