//! The host's side of the storage contract (see `breeze_core::storage`).
//!
//! The core task never waits for storage: it hands each request to a `StorageBackend` and
//! goes on; results come back on a channel the host owns and are fed to the core with the
//! next batch of inputs. How a backend does the work — a thread pool over SQLite, an inline
//! map in a simulation — is its own business.

use breeze_core::RequestId;
use breeze_core::storage::{StorageOp, StorageResult};
use std::future::Future;
use tokio::sync::mpsc;

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

/// Where a backend reports results. Unbounded because it is bounded by the requests the
/// core has in flight, and a backend must never block on a busy core.
#[derive(Debug, Clone)]
pub struct ResultSender(mpsc::UnboundedSender<(RequestId, StorageResult)>);

impl ResultSender {
    /// Reports one result. Returns `false` when the host is gone, and the result with it.
    pub fn send(&self, id: RequestId, result: StorageResult) -> bool {
        self.0.send((id, result)).is_ok()
    }
}

/// The host's end of the result channel; hand it to `Host::new`.
#[derive(Debug)]
pub struct ResultReceiver(pub(crate) mpsc::UnboundedReceiver<(RequestId, StorageResult)>);

/// A channel from a storage backend to the host.
pub fn result_channel() -> (ResultSender, ResultReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ResultSender(tx), ResultReceiver(rx))
}
