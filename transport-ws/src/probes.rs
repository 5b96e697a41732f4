//! The operator's endpoints that need the running server, not just files: `GET /metrics`
//! (Prometheus scrapes it) and `GET /readyz` (a load balancer or orchestrator asks whether to
//! send traffic here). `/healthz` needs nothing: answering at all is the health.
//!
//! The listener knows nothing of the core or the store; whoever starts it hands in a
//! [`Probes`] that does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a probe answer is: a body and its content type, or why the server cannot answer
/// (served as 503 with that sentence).
pub type ProbeResult = Result<(String, &'static str), String>;

/// A boxed probe answer (trait objects cannot return `impl Future`).
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'a>>;

pub trait Probes: Send + Sync + 'static {
    /// `/metrics`: the exposition.
    fn metrics(&self) -> ProbeFuture<'_>;
    /// `/readyz`: `Ok` when the server can take work now (its core running, its storage
    /// writable), else why not.
    fn ready(&self) -> ProbeFuture<'_>;
}

/// The probes an `HttpConfig` carries; without them `/metrics` and `/readyz` are 404.
#[derive(Clone)]
pub struct ProbeSet(pub Arc<dyn Probes>);

impl fmt::Debug for ProbeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProbeSet")
    }
}
