//! Raw protocol over loopback TCP with the core's codec: connect (from a chosen 127.0.0.x),
//! write one frame, read frames. No client state machine: the load clients are deliberately
//! thin, so the bench measures the server, not a client library.

use breeze_core::codec::{decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, MAGIC, PROTOCOL_VERSION, ServerMsg};
use bytes::BytesMut;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
/// TCP_NODELAY (as the server sets on its side).
pub async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
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

pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, msg: &ClientMsg) -> io::Result<()> {
    w.write_all(&encode_frame(msg)).await
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
