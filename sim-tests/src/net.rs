//! The transport's `Listener` and `Connector` over turmoil's simulated TCP.
//!
//! The server's streams are wrapped in [`Observed`], a pass-through that shows the oracle
//! every byte the real host reads and writes, with the simulated instant it happened. That
//! is the only window the oracle has on the server: it never looks at the server's state.

use crate::oracle::{Shared, now};
use breeze_transport_tokio::{Connector, Listener};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The port the simulated server listens on.
pub const PORT: u16 = 7700;

/// The server's listener: turmoil's, with every accepted stream observed.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    oracle: Shared,
}

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimListener")
            .field("addr", &self.inner.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl SimListener {
    /// Binds the server's port on the current simulated host.
    pub async fn bind(oracle: Shared) -> io::Result<SimListener> {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
        let inner = turmoil::net::TcpListener::bind(addr).await?;
        Ok(SimListener { inner, oracle })
    }
}

impl Listener for SimListener {
    type Stream = Observed;

    async fn accept(&mut self) -> io::Result<(Observed, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        let conn = crate::oracle::lock(&self.oracle).server_accepted(now(), peer);
        let observed = Observed {
            inner: stream,
            conn,
            oracle: self.oracle.clone(),
        };
        Ok((observed, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A server-side stream that reports what passes through it.
#[derive(Debug)]
pub struct Observed {
    inner: turmoil::net::TcpStream,
    conn: u64,
    oracle: Shared,
}

impl AsyncRead for Observed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // turmoil answers a read into a full buffer with "nothing", which is not an EOF.
        let watch = buf.remaining() > 0;
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if watch {
            match &polled {
                Poll::Ready(Ok(())) => {
                    let data = &buf.filled()[before..];
                    crate::oracle::lock(&self.oracle).server_read(self.conn, now(), data);
                }
                Poll::Ready(Err(e)) => {
                    crate::oracle::lock(&self.oracle).server_read_failed(self.conn, now(), e);
                }
                Poll::Pending => {}
            }
        }
        polled
    }
}

impl AsyncWrite for Observed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            crate::oracle::lock(&self.oracle).server_wrote(self.conn, now(), &buf[..*n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        crate::oracle::lock(&self.oracle).server_dropped(self.conn, now());
    }
}

/// Opens simulated TCP connections from the current client host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimConnector;

impl Connector for SimConnector {
    type Stream = turmoil::net::TcpStream;

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}
