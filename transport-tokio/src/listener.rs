//! Where connections come from. The host and the client runner are generic over these two
//! traits so that one body of code drives real TCP and turmoil's simulated network alike.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream the host can frame: a TCP stream, or a simulated one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Accepts inbound connections.
pub trait Listener: Send + 'static {
    type Stream: Stream;

    /// The next connection and its peer's address. Errors are reported and accepting goes on,
    /// so an error here must not mean the listener is finished for good.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    /// The address this listener is bound to (the real port when bound to port 0).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        // Frames are small and latency matters more than segment count: a presence diff
        // must not wait for Nagle's delayed-ACK dance.
        stream.set_nodelay(true)?;
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// Opens outbound connections, for the client runner. `Clone` so that an attempt in flight
/// owns its connector and can be abandoned by dropping it.
pub trait Connector: Clone + Send + 'static {
    type Stream: Stream;

    fn connect(
        &mut self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Connects with `tokio::net::TcpStream`, with TCP_NODELAY set.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
