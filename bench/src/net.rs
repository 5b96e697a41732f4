//! Raw protocol over loopback TCP with the core's codec: connect (from a chosen 127.0.0.x),
//! write one frame, read frames. No client state machine: the load clients are deliberately
//! thin, so the bench measures the server, not a client library.
//!
//! `--transport ws` runs the same clients over WebSocket (`/ws` of the server's HTTP
//! listener): a [`Conn`] is then a WebSocket seen as the length-prefixed byte stream
//! (`breeze_transport_ws::WsByteStream`), so every scenario's code is the same for both.

use breeze_core::codec::{decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, MAGIC, PROTOCOL_VERSION, ServerMsg};
use breeze_transport_ws::{WsByteStream, WsConnector};
use bytes::BytesMut;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

/// How the load clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Transport {
    /// Length-prefixed frames on TCP (`--listen`).
    #[default]
    Tcp,
    /// One frame per binary WebSocket message on `/ws` (`--http-listen`).
    Ws,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

/// The one transport of this run: every connection of a bench process uses the same, so it
/// is set once (by `Target::new`) rather than passed through every scenario.
static TRANSPORT: OnceLock<Transport> = OnceLock::new();

/// Sets the run's transport; the first call wins.
pub fn set_transport(t: Transport) {
    let _ = TRANSPORT.set(t);
}

pub fn transport() -> Transport {
    TRANSPORT.get().copied().unwrap_or_default()
}

/// A load client's connection: TCP, or a WebSocket seen as a byte stream.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    /// Boxed: a WebSocket's state is ten times a socket's.
    Ws(Box<WsByteStream<TcpStream>>),
}

/// The reading half of a [`Conn`].
#[derive(Debug)]
pub enum ConnRead<'a> {
    Tcp(tokio::net::tcp::ReadHalf<'a>),
    Ws(tokio::io::ReadHalf<&'a mut WsByteStream<TcpStream>>),
}

/// The writing half of a [`Conn`].
#[derive(Debug)]
pub enum ConnWrite<'a> {
    Tcp(tokio::net::tcp::WriteHalf<'a>),
    Ws(tokio::io::WriteHalf<&'a mut WsByteStream<TcpStream>>),
}

impl Conn {
    /// Both halves, to read and write from one task.
    pub fn split(&mut self) -> (ConnRead<'_>, ConnWrite<'_>) {
        match self {
            Conn::Tcp(s) => {
                let (r, w) = s.split();
                (ConnRead::Tcp(r), ConnWrite::Tcp(w))
            }
            Conn::Ws(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (ConnRead::Ws(r), ConnWrite::Ws(w))
            }
        }
    }
}

impl ConnRead<'_> {
    /// The TCP socket, where this is one (a reset needs it).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ConnRead::Tcp(r) => Some(r.as_ref()),
            ConnRead::Ws(_) => None,
        }
    }
}

macro_rules! delegate_io {
    ($ty:ty) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Ws(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
    ($ty:ty, write) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_write(cx, data),
                    Self::Ws(s) => Pin::new(s).poll_write(cx, data),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_flush(cx),
                    Self::Ws(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Ws(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

delegate_io!(Conn);
delegate_io!(Conn, write);
delegate_io!(ConnRead<'_>);
delegate_io!(ConnWrite<'_>, write);

/// Server frames larger than this are taken for a broken stream (PROTOCOL.md §1 suggests a
/// generous limit of the client's own).
pub const MAX_SERVER_FRAME: u32 = 16 * 1024 * 1024;

/// Clients per source address before the next 127.0.0.x is used. One source address can make
/// at most ~28k connections to one server port (the ephemeral port range); staying well below
/// keeps port reuse and TIME_WAIT out of the figures.
pub const CLIENTS_PER_SOURCE: usize = 8000;

/// The source address of client `i` of `n`: the kernel's choice up to `CLIENTS_PER_SOURCE`
/// clients, else spread round-robin over 127.0.0.2, 127.0.0.3, ….
pub fn source_ip(i: usize, n: usize) -> Option<Ipv4Addr> {
    if n <= CLIENTS_PER_SOURCE {
        return None;
    }
    let sources = n.div_ceil(CLIENTS_PER_SOURCE);
    let k = (i % sources) as u8;
    Some(Ipv4Addr::new(127, 0, 0, 2 + k))
}

/// Connects to `addr`, bound first to `source` (port chosen by the kernel) when given, with
/// TCP_NODELAY (as the server sets on its side), and over WebSocket upgrades `/ws`.
pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<Conn> {
    let tcp = connect_tcp(addr, source).await?;
    match transport() {
        Transport::Tcp => Ok(Conn::Tcp(tcp)),
        Transport::Ws => {
            let ws = WsConnector::default().upgrade(tcp, addr).await?;
            Ok(Conn::Ws(Box::new(ws)))
        }
    }
}

/// A TCP connection to `addr` (from `source` when given) with TCP_NODELAY, whatever the run's
/// transport: what `connect` starts from, and what `mosquitto-hold`'s MQTT clients use.
pub async fn connect_tcp(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let (Some(ip), SocketAddr::V4(_)) = (source, addr) {
        socket.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Writes one frame; the flush is a no-op on TCP and sends the message on WebSocket.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, msg: &ClientMsg) -> io::Result<()> {
    w.write_all(&encode_frame(msg)).await?;
    w.flush().await
}

pub fn hello() -> ClientMsg {
    ClientMsg::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "breeze-bench".into(),
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Takes the next complete server message out of `buf`, if there is one.
pub fn next_msg(buf: &mut BytesMut) -> io::Result<Option<ServerMsg>> {
    match split_frame(buf, MAX_SERVER_FRAME).map_err(invalid)? {
        Some(payload) => decode::<ServerMsg>(&payload).map(Some).map_err(invalid),
        None => Ok(None),
    }
}

/// Reads more bytes into `buf`; an end of stream is an `UnexpectedEof` error.
pub async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<()> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    if r.read_buf(buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads until one whole message is there, and returns it.
pub async fn recv<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<ServerMsg> {
    loop {
        if let Some(msg) = next_msg(buf)? {
            return Ok(msg);
        }
        fill(r, buf).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::message::{Presence, PresenceEntry};
    use bytes::BufMut;

    #[test]
    fn sources_spread_only_beyond_the_threshold() {
        assert_eq!(source_ip(5, 1000), None);
        assert_eq!(source_ip(0, 19_900), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_ip(1, 19_900), Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source_ip(3, 19_900), Some(Ipv4Addr::new(127, 0, 0, 2)));
    }

    #[test]
    fn messages_come_out_of_a_byte_stream_whole() {
        let msg = ServerMsg::PresenceDiff {
            entries: vec![PresenceEntry {
                user: "u1".parse().unwrap(),
                presence: Presence::Offline,
            }],
        };
        let frame = encode_frame(&msg);
        let mut buf = BytesMut::new();
        buf.put_slice(&frame[..3]);
        assert!(next_msg(&mut buf).unwrap().is_none());
        buf.put_slice(&frame[3..]);
        buf.put_slice(&frame);
        assert_eq!(next_msg(&mut buf).unwrap(), Some(msg.clone()));
        assert_eq!(next_msg(&mut buf).unwrap(), Some(msg));
        assert!(next_msg(&mut buf).unwrap().is_none());
    }
}
