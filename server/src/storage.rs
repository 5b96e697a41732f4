//! The stores as the host's `StorageBackend`: breeze-store's SQLite `StorageService`, or
//! breeze-store-pg's `PgService`.

use breeze_core::RequestId;
use breeze_core::config::WorkBudget;
use breeze_core::storage::StorageOp;
use breeze_store::{Db, Hasher, StorageService, StoreError};
use breeze_store_pg::PgService;
use breeze_transport_tokio::{ResultSender, StorageBackend};

/// The SQLite store on threads of its own: `submit` only queues, so the core task never
/// waits for a disk or for argon2.
#[derive(Debug)]
pub struct StoreBackend {
    service: Option<StorageService>,
}

impl StoreBackend {
    /// Starts the store's writer thread and `hash_threads` password hashing threads, with
    /// queues sized for the core's `budget`; results go to `results`.
    pub fn start(
        db: Db,
        hasher: Hasher,
        hash_threads: usize,
        budget: WorkBudget,
        results: ResultSender,
    ) -> Result<StoreBackend, StoreError> {
        let service =
            StorageService::start(db, hasher, hash_threads, budget, move |id, result| {
                // After the host is gone nobody waits for the result; the write is done anyway.
                results.send(id, result);
            })?;
        Ok(StoreBackend {
            service: Some(service),
        })
    }
}

impl StoreBackend {
    /// How the store's commits go, for `/metrics` and `/readyz`.
    pub fn commit_stats(&self) -> Option<std::sync::Arc<breeze_store::CommitStats>> {
        self.service.as_ref().map(StorageService::commit_stats)
    }
}

impl StorageBackend for StoreBackend {
    fn submit(&mut self, id: RequestId, op: StorageOp) {
        if let Some(service) = &self.service {
            service.submit(id, op);
            // The writer ends only when shut down, which takes the service; so here it can
            // only have died of a panic. Without it no login or message can be stored:
            // end the core task, and with it the process (ARCHITECTURE.md, Invariants).
            assert!(
                service.is_running(),
                "invariant: the storage writer thread died"
            );
        }
    }

    async fn shutdown(&mut self) {
        if let Some(service) = self.service.take() {
            // Joining the store's threads blocks; keep that off the runtime's workers.
            let joined = tokio::task::spawn_blocking(move || service.shutdown()).await;
            if joined.is_err() {
                tracing::error!("the storage service panicked while shutting down");
            }
        }
    }
}

/// The PostgreSQL store on tasks of the server's runtime: `submit` only queues.
#[derive(Debug)]
pub struct PgBackend {
    service: Option<PgService>,
}

impl PgBackend {
    pub fn new(service: PgService) -> PgBackend {
        PgBackend {
            service: Some(service),
        }
    }
}

impl StorageBackend for PgBackend {
    fn submit(&mut self, id: RequestId, op: StorageOp) {
        if let Some(service) = &self.service {
            service.submit(id, op);
            // As for SQLite: the service ends only when shut down, so here it can only have
            // died of a panic, and nothing can be stored any more (ARCHITECTURE.md,
            // Invariants). A database that went away is not that: requests fail one by one
            // and succeed again once it is back.
            assert!(
                service.is_running(),
                "invariant: the PostgreSQL storage service died"
            );
        }
    }

    async fn shutdown(&mut self) {
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
    }
}
