//! `/metrics` and `/readyz` for the HTTP listener, answered from the running server: the
//! core's counts and totals (one request to the core task) and the store's commit figures.

use crate::metrics;
use breeze_store::CommitStats;
use breeze_transport_tokio::HostHandle;
use breeze_transport_ws::{ProbeFuture, ProbeSet, Probes};
use std::sync::Arc;

pub(crate) struct ServerProbes {
    host: HostHandle,
    commits: Option<Arc<CommitStats>>,
}

impl ServerProbes {
    pub(crate) fn set(host: HostHandle, commits: Option<Arc<CommitStats>>) -> ProbeSet {
        ProbeSet(Arc::new(ServerProbes { host, commits }))
    }
}

const STOPPING: &str = "the server is stopping";

impl Probes for ServerProbes {
    fn metrics(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let (stats, counters) = self.host.metrics().await.map_err(|_| STOPPING.to_owned())?;
            let commits = self.commits.as_ref().map(|c| c.snapshot());
            Ok((
                metrics::render(&stats, &counters, commits.as_ref()),
                metrics::CONTENT_TYPE,
            ))
        })
    }

    /// Ready: the core task answers (it ends if the store's writer dies), the node is not
    /// fenced off its cluster, and the store's last commit went through. A load balancer
    /// that asks sends no one to a fenced node, which would only refuse them.
    fn ready(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let stats = self.host.stats().await.map_err(|_| STOPPING.to_owned())?;
            if stats.fenced {
                return Err(
                    "fenced: this node has lost the cluster bus (NATS) for longer \
                            than the fence margin; it lets nobody in until the bus is back"
                        .to_owned(),
                );
            }
            if self.commits.as_ref().is_some_and(|c| c.snapshot().failing) {
                return Err("storage is failing: the last commit did not go through \
                            (see the server's log)"
                    .to_owned());
            }
            Ok(("ready\n".to_owned(), "text/plain; charset=utf-8"))
        })
    }
}
