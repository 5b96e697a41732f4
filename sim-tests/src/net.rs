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
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The port the simulated server listens on.
pub const PORT: u16 = 7700;

/// The server's listener: turmoil's, with every accepted stream observed.
pub struct SimListener {
    inner: turmoil::net::TcpListener,
    oracle: Shared,
    morgue: Arc<Mutex<Morgue>>,
}

/// The server's streams dropped while its host crashes, held back so that they close in
/// connection order.
///
/// A crash drops the host's tokio runtime, and tokio drops the tasks in an order set by
/// process-wide task ids (the current-thread scheduler shards its task list by id). Each
/// stream's close sends a segment, and turmoil draws each segment's latency from the seeded
/// RNG, so two runs of one seed in one process drew those latencies in different orders and
/// went different ways. Here the last of a crashing incarnation's streams to go closes them
/// all, sorted.
#[derive(Default)]
pub(crate) struct Morgue {
    /// Streams of this server incarnation not dropped yet.
    live: usize,
    /// Sorted by connection.
    held: Vec<(u64, turmoil::net::TcpStream)>,
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
        Ok(SimListener {
            inner,
            oracle,
            morgue: Arc::default(),
        })
    }
}

impl Listener for SimListener {
    type Stream = Observed;

    async fn accept(&mut self) -> io::Result<(Observed, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        let conn = crate::oracle::lock(&self.oracle).server_accepted(now(), peer);
        Morgue::opened(&self.morgue);
        let observed = Observed::new(stream, conn, self.oracle.clone(), self.morgue.clone());
        Ok((observed, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Morgue {
    /// A stream of this incarnation was accepted.
    pub(crate) fn opened(morgue: &Mutex<Morgue>) {
        morgue.lock().unwrap_or_else(PoisonError::into_inner).live += 1;
    }

    /// A stream of this incarnation is dropped: closed at once, or, while its host crashes,
    /// held until the last one goes and then closed with the others in connection order.
    pub(crate) fn close(
        morgue: &Mutex<Morgue>,
        conn: u64,
        stream: turmoil::net::TcpStream,
        crashing: bool,
    ) {
        let mut morgue = morgue.lock().unwrap_or_else(PoisonError::into_inner);
        morgue.live -= 1;
        if !crashing {
            drop(morgue);
            return drop(stream);
        }
        let at = morgue.held.partition_point(|(c, _)| *c < conn);
        morgue.held.insert(at, (conn, stream));
        if morgue.live == 0 {
            let held = std::mem::take(&mut morgue.held);
            drop(morgue);
            // A vector drops its elements first to last.
            drop(held);
        }
    }
}

/// What a server-side stream reports to: the single server's oracle, or a node of a
/// cluster's (`cluster_net.rs`). One stream type serves both.
pub trait Watch: Send + Sync + Unpin + 'static {
    /// The host read `data` (`Ok`) or its read failed; a watcher of writes only ignores it.
    fn read(&self, _conn: u64, _data: Result<&[u8], &io::Error>) {}
    fn wrote(&self, conn: u64, data: &[u8]);
    /// The host dropped the stream; whether that host is crashing (`Morgue`).
    fn dropped(&self, conn: u64) -> bool;
}

impl Watch for Shared {
    fn read(&self, conn: u64, data: Result<&[u8], &io::Error>) {
        let mut oracle = crate::oracle::lock(self);
        match data {
            Ok(data) => oracle.server_read(conn, now(), data),
            Err(e) => oracle.server_read_failed(conn, now(), e),
        }
    }

    fn wrote(&self, conn: u64, data: &[u8]) {
        crate::oracle::lock(self).server_wrote(conn, now(), data);
    }

    fn dropped(&self, conn: u64) -> bool {
        let mut oracle = crate::oracle::lock(self);
        oracle.server_dropped(conn, now());
        !oracle.server_is_up()
    }
}

/// A server-side stream that reports what passes through it.
pub struct Observed<W: Watch = Shared> {
    /// Taken only by `drop`.
    inner: Option<turmoil::net::TcpStream>,
    conn: u64,
    watch: W,
    morgue: Arc<Mutex<Morgue>>,
}

impl<W: Watch> Observed<W> {
    pub(crate) fn new(
        stream: turmoil::net::TcpStream,
        conn: u64,
        watch: W,
        morgue: Arc<Mutex<Morgue>>,
    ) -> Self {
        Observed {
            inner: Some(stream),
            conn,
            watch,
            morgue,
        }
    }

    fn stream(&mut self) -> Pin<&mut turmoil::net::TcpStream> {
        Pin::new(self.inner.as_mut().expect("only drop takes the stream"))
    }
}

impl<W: Watch> std::fmt::Debug for Observed<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<W: Watch> AsyncRead for Observed<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // turmoil answers a read into a full buffer with "nothing", which is not an EOF.
        let watch = buf.remaining() > 0;
        let before = buf.filled().len();
        let polled = self.stream().poll_read(cx, buf);
        if watch {
            match &polled {
                Poll::Ready(Ok(())) => {
                    let data = &buf.filled()[before..];
                    self.watch.read(self.conn, Ok(data));
                }
                Poll::Ready(Err(e)) => self.watch.read(self.conn, Err(e)),
                Poll::Pending => {}
            }
        }
        polled
    }
}

impl<W: Watch> AsyncWrite for Observed<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = self.stream().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.watch.wrote(self.conn, &buf[..*n]);
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

impl<W: Watch> Drop for Observed<W> {
    fn drop(&mut self) {
        let crashing = self.watch.dropped(self.conn);
        let Some(stream) = self.inner.take() else {
            return;
        };
        Morgue::close(&self.morgue, self.conn, stream, crashing);
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
