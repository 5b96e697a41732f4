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
}

impl<S> WsByteStream<S> {
    pub fn new(ws: WebSocketStream<ReadAhead<S>>) -> Self {
        WsByteStream {
            ws,
            out: BytesMut::new(),
            inbound: Bytes::new(),
            unflushed: false,
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
        loop {
            if !this.inbound.is_empty() {
                let n = this.inbound.len().min(buf.remaining());
                buf.put_slice(&this.inbound[..n]);
                this.inbound.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Some(Ok(Message::Binary(payload))) => {
                    let mut framed = BytesMut::with_capacity(LENGTH_PREFIX + payload.len());
                    framed.put_u32(payload.len() as u32);
                    framed.put_slice(&payload);
                    this.inbound = framed.freeze();
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server sent a text message",
                    )));
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
