//! The client side, for Rust programs (the tests, the bench, a CLI that wants to go through
//! an HTTP proxy one day): [`WsConnector`] opens `/ws` with the `breeze.v1` subprotocol over
//! any [`Connector`] (TCP, TLS) and hands back a [`WsByteStream`], which looks like the
//! length-prefixed byte stream of TCP (PROTOCOL.md §1.1). So everything written for TCP —
//! the client runner, the tests' raw peer, the bench's clients — speaks WebSocket unchanged:
//! each length-prefixed frame written becomes one binary message, and each binary message
//! read comes out behind its length.
//!
//! It answers the server's Pings whenever it is read: a client that keeps reading keeps its
//! connection alive with no pings of its own, as a browser does.

use crate::listener::SUBPROTOCOL;
use crate::read_ahead::ReadAhead;
use breeze_core::codec::{LENGTH_PREFIX, split_frame};
use breeze_transport_tokio::{Connector, Stream, TcpConnector};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream as _};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Frames a client accepts from the server: generous (PROTOCOL.md §1.1).
const MAX_SERVER_FRAME: usize = 64 << 20;

/// Opens Breeze WebSocket connections to `ws://ADDR/ws` over `inner`.
#[derive(Debug, Clone)]
pub struct WsConnector<C = TcpConnector> {
    pub inner: C,
    /// Sent as `Origin` when set (a browser always sends one; a program need not).
    pub origin: Option<String>,
    /// `wss` instead of `ws` in the request (over a TLS `inner`).
    pub secure: bool,
}

impl Default for WsConnector {
    fn default() -> Self {
        WsConnector::new(TcpConnector)
    }
}

impl<C> WsConnector<C> {
    pub fn new(inner: C) -> Self {
        WsConnector {
            inner,
            origin: None,
            secure: false,
        }
    }

    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

/// The client's tungstenite settings: a small read buffer, as on the server.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_SERVER_FRAME))
        .max_frame_size(Some(MAX_SERVER_FRAME))
}

impl<C: Connector> WsConnector<C> {
    /// Connects and upgrades; the server's refusal (a 4xx) is an error naming its status.
    pub async fn open(&mut self, addr: SocketAddr) -> io::Result<WsByteStream<C::Stream>> {
        let stream = self.inner.connect(addr).await?;
        self.upgrade(stream, addr).await
    }
}

impl<C> WsConnector<C> {
    /// Upgrades `stream`, already connected to `addr`, to a Breeze WebSocket connection.
    pub async fn upgrade<S: Stream>(
        &self,
        stream: S,
        addr: SocketAddr,
    ) -> io::Result<WsByteStream<S>> {
        let scheme = if self.secure { "wss" } else { "ws" };
        let mut request = format!("{scheme}://{addr}/ws")
            .into_client_request()
            .map_err(io_error)?;
        let headers = request.headers_mut();
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(origin) = &self.origin {
            let value = HeaderValue::from_str(origin).map_err(io::Error::other)?;
            headers.insert("Origin", value);
        }
        let (ws, response) = tokio_tungstenite::client_async_with_config(
            request,
            ReadAhead::new(stream),
            Some(client_config()),
        )
        .await
        .map_err(io_error)?;
        let echoed = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if echoed != Some(SUBPROTOCOL) {
            return Err(io::Error::other(format!(
                "the server did not agree to subprotocol {SUBPROTOCOL} (said {echoed:?})"
            )));
        }
        Ok(WsByteStream::new(ws))
    }
}

impl<C: Connector + Sync> Connector for WsConnector<C> {
    type Stream = WsByteStream<C::Stream>;

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<Self::Stream> {
        self.open(addr).await
    }
}

/// A Breeze WebSocket connection seen as a length-prefixed byte stream.
#[derive(Debug)]
pub struct WsByteStream<S> {
    ws: WebSocketStream<ReadAhead<S>>,
    /// Bytes written but not yet a whole frame.
    out: BytesMut,
    /// A received payload behind its length, being read out.
    inbound: Bytes,
    /// Messages were handed to tungstenite since the last flush.
    unflushed: bool,
    /// An error that came after data the last read returned, for the next read.
    failed: Option<io::Error>,
}

impl<S> WsByteStream<S> {
    pub fn new(ws: WebSocketStream<ReadAhead<S>>) -> Self {
        WsByteStream {
            ws,
            out: BytesMut::new(),
            inbound: Bytes::new(),
            unflushed: false,
            failed: None,
        }
    }

    /// The WebSocket itself, for a test that sends what a byte stream cannot (text, Pongs).
    pub fn into_inner(self) -> WebSocketStream<ReadAhead<S>> {
        self.ws
    }
}

impl<S: Stream> AsyncRead for WsByteStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Every message tungstenite has ready goes out in this one read while `buf` has
        // room, as a TCP read returns every frame that has arrived. One message per read made
        // a reader act per message where over TCP it acts per burst — the bench's clients
        // wrote one `Ack` frame (a `send` here, a frame to handle there) per message: at chat
        // saturation they burned 6.3 s of CPU per run against 1.6 s over TCP, and the server
        // 19.6 against 15.1 µs per message. With whole bursts per read both are TCP's
        // (BENCHMARKS.md, WebSocket).
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Err(e));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut gave = false;
        loop {
            if !this.inbound.is_empty() {
                let n = this.inbound.len().min(buf.remaining());
                buf.put_slice(&this.inbound[..n]);
                this.inbound.advance(n);
                gave = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            let next = match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(next) => next,
                Poll::Pending if gave => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            };
            match next {
                // The end is seen again by the next read, after what was given (tungstenite
                // says `None` once ended).
                None => return Poll::Ready(Ok(())),
                // An error after some data is kept for the next read: tungstenite reports it
                // once.
                Some(Err(e)) if gave => {
                    this.failed = Some(io_error(e));
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Some(Ok(Message::Binary(payload)))
                    if buf.remaining() >= LENGTH_PREFIX + payload.len() =>
                {
                    buf.put_slice(&(payload.len() as u32).to_be_bytes());
                    buf.put_slice(&payload);
                    gave = true;
                }
                Some(Ok(Message::Binary(payload))) => {
                    let mut framed = BytesMut::with_capacity(LENGTH_PREFIX + payload.len());
                    framed.put_u32(payload.len() as u32);
                    framed.put_slice(&payload);
                    this.inbound = framed.freeze();
                }
                Some(Ok(Message::Text(_))) => {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server sent a text message",
                    );
                    if gave {
                        this.failed = Some(e);
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(e));
                }
                // Pongs to the server's Pings are queued by tungstenite and go out with the
                // next read or write.
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: Stream> AsyncWrite for WsByteStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        this.out.put_slice(data);
        loop {
            let frame = split_frame(&mut this.out, MAX_SERVER_FRAME as u32)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let Some(payload) = frame else { break };
            Pin::new(&mut this.ws)
                .start_send(Message::Binary(payload))
                .map_err(io_error)?;
            this.unflushed = true;
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(io_error)?;
        this.unflushed = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_close(cx)
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A client `WsByteStream` and the server's end of the same in-memory socket.
    async fn pair() -> (
        WsByteStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let client =
            WebSocketStream::from_raw_socket(ReadAhead::new(ours), Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(theirs, Role::Server, None).await;
        (WsByteStream::new(client), server)
    }

    #[tokio::test]
    async fn one_read_returns_every_message_that_has_arrived_each_behind_its_length() {
        let (mut client, mut server) = pair().await;
        for payload in [&b"one"[..], b"two", b"three"] {
            server
                .feed(Message::binary(payload.to_vec()))
                .await
                .unwrap();
        }
        server.flush().await.unwrap();
        let mut buf = [0u8; 256];
        let n = client.read(&mut buf).await.unwrap();
        let want = b"\0\0\0\x03one\0\0\0\x03two\0\0\0\x05three";
        assert_eq!(&buf[..n], &want[..]);
    }

    #[tokio::test]
    async fn a_message_larger_than_the_read_is_handed_out_across_reads() {
        let (mut client, mut server) = pair().await;
        server.send(Message::binary(vec![7u8; 10])).await.unwrap();
        server.send(Message::binary(vec![8u8; 2])).await.unwrap();
        let mut got = Vec::new();
        let mut small = [0u8; 5];
        while got.len() < 4 + 10 + 4 + 2 {
            let n = client.read(&mut small).await.unwrap();
            assert!(n > 0, "no end before the data");
            got.extend_from_slice(&small[..n]);
        }
        let mut want = vec![0, 0, 0, 10];
        want.extend([7u8; 10]);
        want.extend([0, 0, 0, 2, 8, 8]);
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn an_error_after_data_comes_with_the_next_read_not_instead_of_the_data() {
        let (mut client, mut server) = pair().await;
        server.feed(Message::binary(b"ok".to_vec())).await.unwrap();
        server.feed(Message::text("not a frame")).await.unwrap();
        server.flush().await.unwrap();
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\0\0\0\x02ok");
        let err = client.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
