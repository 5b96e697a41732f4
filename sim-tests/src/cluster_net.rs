//! A node's listener over turmoil's TCP, showing the cluster oracle what each node writes.
//!
//! As `net.rs` does for the single server, but per node and for writes only: the oracle
//! needs from a node's sockets just when a session opens (`LoginOk`) and ends (`Bye`, or the
//! stream closing), to tell which node holds whom.

use crate::cluster_oracle::{self, SharedClusterOracle};
use crate::net::{Morgue, Observed, PORT, Watch};
use crate::oracle::now;
use breeze_transport_tokio::Listener;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

/// One node's listener.
pub struct NodeListener {
    inner: turmoil::net::TcpListener,
    node: usize,
    oracle: SharedClusterOracle,
    morgue: Arc<Mutex<Morgue>>,
}

impl std::fmt::Debug for NodeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeListener")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeListener {
    /// Binds the server port on the current simulated host, node `node`.
    pub async fn bind(node: usize, oracle: SharedClusterOracle) -> io::Result<NodeListener> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
        Ok(NodeListener {
            inner: turmoil::net::TcpListener::bind(addr).await?,
            node,
            oracle,
            morgue: Arc::default(),
        })
    }
}

impl Listener for NodeListener {
    type Stream = NodeStream;

    async fn accept(&mut self) -> io::Result<(NodeStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        let conn = cluster_oracle::lock(&self.oracle).accepted(self.node, now());
        Morgue::opened(&self.morgue);
        let watch = NodeWatch {
            node: self.node,
            oracle: self.oracle.clone(),
        };
        let stream = Observed::new(stream, conn, watch, self.morgue.clone());
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A stream a node accepted, reporting what the node writes.
pub type NodeStream = Observed<NodeWatch>;

/// The cluster oracle, as one node's streams report to it.
pub struct NodeWatch {
    node: usize,
    oracle: SharedClusterOracle,
}

impl std::fmt::Debug for NodeWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeWatch")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Watch for NodeWatch {
    fn wrote(&self, conn: u64, data: &[u8]) {
        cluster_oracle::lock(&self.oracle).server_wrote(conn, now(), data);
    }

    fn dropped(&self, conn: u64) -> bool {
        let mut oracle = cluster_oracle::lock(&self.oracle);
        oracle.server_dropped(conn, now());
        !oracle.node_up(self.node)
    }
}
