//! The host's side of the storage contract (see `breeze_core::storage`).
//!
//! The core task never waits for storage: it hands each request to a `StorageBackend` and
//! goes on; results come back on a channel the host owns and are fed to the core with the
//! next batch of inputs. How a backend does the work — a thread pool over SQLite, an inline
//! map in a simulation — is its own business.

use breeze_core::RequestId;
use breeze_core::ServerConfig;
use breeze_core::storage::{StorageOp, StorageResult};
use std::future::Future;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Performs the core's storage requests.
///
/// `submit` must not block: it runs on the core task, between two inputs of every client.
/// Each request must be answered exactly once through the `ResultSender` the backend was
/// built with, honouring the ordering rules of `breeze_core::storage`.
pub trait StorageBackend: Send + 'static {
    fn submit(&mut self, id: RequestId, op: StorageOp);

    /// Finishes every submitted request (so that what the core was told is stored really is)
    /// and releases the backend. Called once, at graceful shutdown, after the last `submit`.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Where a backend reports results. Bounded by the core's storage budget
/// (`WorkBudget::storage.total`): the core has at most that many requests in flight, and
/// each has at most one result on its way, so a send always finds room and a backend never
/// waits for a busy core. A full channel would mean a broken budget or a backend answering
/// twice: an invariant violation, which panics (ARCHITECTURE.md, Invariants).
#[derive(Debug, Clone)]
pub struct ResultSender(mpsc::Sender<(RequestId, StorageResult)>);

impl ResultSender {
    /// Reports one result without waiting. Returns `false` when the host is gone, and the
    /// result with it.
    ///
    /// # Panics
    /// If more results are waiting than the core can have requests in flight.
    pub fn send(&self, id: RequestId, result: StorageResult) -> bool {
        match self.0.try_send((id, result)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                panic!("invariant: more storage results waiting than requests in flight")
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// The host's end of the result channel; hand it to `Host::new`.
#[derive(Debug)]
pub struct ResultReceiver(pub(crate) mpsc::Receiver<(RequestId, StorageResult)>);

/// A channel from a storage backend to the host of a core configured with `cfg`, sized from
/// its storage budget.
pub fn result_channel(cfg: &ServerConfig) -> (ResultSender, ResultReceiver) {
    let (tx, rx) = mpsc::channel(cfg.work.storage.capacity());
    (ResultSender(tx), ResultReceiver(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::config::{Budget, WorkBudget};
    use breeze_core::storage::StorageError;

    fn two_in_flight() -> ServerConfig {
        ServerConfig {
            work: WorkBudget {
                storage: Budget {
                    per_conn: 2,
                    total: 2,
                },
                ..ServerConfig::default().work
            },
            ..ServerConfig::default()
        }
    }

    fn result() -> StorageResult {
        StorageResult::DeliveredMarked(Err(StorageError::Failed("test".into())))
    }

    #[test]
    fn the_channel_holds_one_result_per_request_the_budget_admits() {
        let (tx, rx) = result_channel(&two_in_flight());
        assert_eq!(rx.0.max_capacity(), 2);
        assert!(tx.send(RequestId(1), result()));
        assert!(tx.send(RequestId(2), result()));
        drop(rx);
        assert!(!tx.send(RequestId(3), result()), "the host is gone");
    }

    #[test]
    #[should_panic(expected = "invariant")]
    fn a_result_beyond_the_budget_is_a_broken_invariant() {
        let (tx, _rx) = result_channel(&two_in_flight());
        for id in 0..3 {
            tx.send(RequestId(id), result());
        }
    }
}
