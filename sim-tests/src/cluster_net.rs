//! A node's listener over turmoil's TCP, showing the cluster oracle what each node writes.
//!
//! As `net.rs` does for the single server, but per node and for writes only: the oracle
//! needs from a node's sockets just when a session opens (`LoginOk`) and ends (`Bye`, or the
//! stream closing), to tell which node holds whom.

use crate::cluster_oracle::{self, SharedClusterOracle};
use crate::net::{Morgue, PORT};
use crate::oracle::now;
use breeze_transport_tokio::Listener;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        let stream = NodeStream {
            inner: Some(stream),
            node: self.node,
            conn,
            oracle: self.oracle.clone(),
            morgue: self.morgue.clone(),
        };
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A stream a node accepted, reporting what the node writes.
pub struct NodeStream {
    /// Taken only by `drop`.
    inner: Option<turmoil::net::TcpStream>,
    node: usize,
    conn: u64,
    oracle: SharedClusterOracle,
    morgue: Arc<Mutex<Morgue>>,
}

impl std::fmt::Debug for NodeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStream")
            .field("node", &self.node)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl NodeStream {
    fn stream(&mut self) -> Pin<&mut turmoil::net::TcpStream> {
        Pin::new(self.inner.as_mut().expect("only drop takes the stream"))
    }
}

impl AsyncRead for NodeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.stream().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            cluster_oracle::lock(&self.oracle).server_wrote(self.conn, now(), &buf[..*n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl Drop for NodeStream {
    fn drop(&mut self) {
        let crashing = {
            let mut oracle = cluster_oracle::lock(&self.oracle);
            oracle.server_dropped(self.conn, now());
            !oracle.node_up(self.node)
        };
        if let Some(stream) = self.inner.take() {
            Morgue::close(&self.morgue, self.conn, stream, crashing);
        }
    }
}
