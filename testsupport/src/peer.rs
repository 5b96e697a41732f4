//! A raw protocol peer: frames written and read through the core codec, nothing else. It
//! keeps no session state, so a test can make it say anything at any time.

use crate::{PASSWORD, WAIT, user};
use breeze_core::codec::{decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, Credential, MAGIC, PROTOCOL_VERSION, ServerMsg, Status};
use breeze_transport_ws::{WsByteStream, WsConnector};
use bytes::BytesMut;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Server frames are not bounded by `max_frame` (PROTOCOL.md §1): be generous.
const MAX_SERVER_FRAME: u32 = 64 << 20;

/// Takes the next whole server message out of `buf`, if there is one; what is not a frame
/// or not a message is an error, in words.
pub fn take_msg(buf: &mut BytesMut) -> Result<Option<ServerMsg>, String> {
    match split_frame(buf, MAX_SERVER_FRAME).map_err(|e| e.to_string())? {
        Some(payload) => decode(&payload).map(Some).map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

/// A raw protocol peer on a plain socket, or over any other byte stream (`Peer::over`):
/// TLS, or a WebSocket seen as a byte stream ([`Peer::ws`]).
#[derive(Debug)]
pub struct Peer<S = TcpStream> {
    pub stream: S,
    buf: BytesMut,
}

impl Peer {
    /// Connects without saying anything.
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect within the wait bound")
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Peer::over(stream)
    }

    /// Connects from a chosen local address (any 127.0.0.0/8 address works on loopback).
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> Peer {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        let stream = timeout(WAIT, socket.connect(addr))
            .await
            .expect("connect within the wait bound")
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Peer::over(stream)
    }

    /// Connects and completes the handshake.
    pub async fn hello(addr: SocketAddr) -> Peer {
        let mut peer = Peer::connect(addr).await;
        peer.say_hello().await;
        peer
    }

    /// Connects, registers `name` with [`PASSWORD`] and logs in.
    pub async fn user(addr: SocketAddr, name: &str) -> Peer {
        let mut peer = Peer::hello(addr).await;
        peer.register(name).await;
        peer.login(name).await;
        peer
    }
}

/// A peer over WebSocket: `/ws` of the HTTP listener at the address, the payloads of the
/// same frames carried one per binary message. It answers the server's Pings while it
/// reads.
pub type WsPeer = Peer<WsByteStream<TcpStream>>;

impl WsPeer {
    /// Opens `/ws` (no `Origin`, as a program) without saying anything.
    pub async fn ws(http: SocketAddr) -> WsPeer {
        Peer::ws_with(http, WsConnector::default()).await
    }

    /// Opens `/ws` through `connector` (an `Origin`, TLS underneath).
    pub async fn ws_with(http: SocketAddr, mut connector: WsConnector) -> WsPeer {
        let stream = timeout(WAIT, connector.open(http))
            .await
            .expect("upgrade within the wait bound")
            .expect("upgraded");
        Peer::over(stream)
    }

    /// Over WebSocket: connects, registers `name` with [`PASSWORD`] and logs in.
    pub async fn ws_user(http: SocketAddr, name: &str) -> WsPeer {
        let mut peer = Peer::ws(http).await;
        peer.say_hello().await;
        peer.register(name).await;
        peer.login(name).await;
        peer
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    pub fn over(stream: S) -> Peer<S> {
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The stream and the bytes read from it but not taken as messages yet.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.stream, self.buf)
    }

    /// Says `Hello`; the `Welcome` that answers it.
    pub async fn say_hello(&mut self) -> ServerMsg {
        self.send(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "breeze-testsupport".into(),
        })
        .await;
        let welcome = self.recv().await;
        match welcome {
            Some(welcome @ ServerMsg::Welcome { .. }) => welcome,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.stream.write_all(&encode_frame(msg)).await.unwrap();
        // A no-op on a socket; a WebSocket sends its buffered messages.
        self.stream.flush().await.unwrap();
    }

    /// Writes bytes; false if that failed (the server may have cut us already).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// The next message, `None` once the server closed (or reset) the connection.
    pub async fn recv(&mut self) -> Option<ServerMsg> {
        timeout(WAIT, self.recv_unbounded())
            .await
            .expect("no frame and no close within the wait bound")
    }

    async fn recv_unbounded(&mut self) -> Option<ServerMsg> {
        loop {
            if let Some(msg) = take_msg(&mut self.buf).unwrap() {
                return Some(msg);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn recv_until(&mut self, what: &str, f: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        let found = timeout(WAIT, async {
            loop {
                match self.recv_unbounded().await {
                    Some(msg) if f(&msg) => return msg,
                    Some(_) => {}
                    None => panic!("closed while waiting for {what}"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"))
    }

    /// Reads until the close; the last message before it.
    pub async fn last_before_close(&mut self) -> Option<ServerMsg> {
        let mut last = None;
        while let Some(msg) = self.recv().await {
            last = Some(msg);
        }
        last
    }

    /// Registers `name` with [`PASSWORD`]; panics unless it succeeds.
    pub async fn register(&mut self, name: &str) {
        self.send(&ClientMsg::Register {
            user: user(name),
            password: PASSWORD.into(),
        })
        .await;
        let got = self
            .recv_until("registered", |m| {
                matches!(m, ServerMsg::Registered { .. } | ServerMsg::Error { .. })
            })
            .await;
        assert_eq!(got, ServerMsg::Registered { user: user(name) });
    }

    /// Sends a password login and returns the answer: `LoginOk` or an `Error`.
    pub async fn try_login(&mut self, name: &str, password: &str) -> ServerMsg {
        self.send(&ClientMsg::Login {
            user: user(name),
            credential: Credential::Password(password.into()),
            status: Status::Online,
        })
        .await;
        self.recv_until("login answer", |m| {
            matches!(m, ServerMsg::LoginOk { .. } | ServerMsg::Error { .. })
        })
        .await
    }

    /// Logs in with [`PASSWORD`]; the presence snapshot that follows.
    pub async fn login(&mut self, name: &str) -> ServerMsg {
        let ok = self.try_login(name, PASSWORD).await;
        assert!(matches!(ok, ServerMsg::LoginOk { .. }), "{ok:?}");
        self.recv_until("snapshot", |m| {
            matches!(m, ServerMsg::PresenceSnapshot { .. })
        })
        .await
    }

    /// Waits for `Sent` of the message `id` (skipping anything before it); its seq.
    pub async fn sent(&mut self, id: u64) -> u64 {
        match self
            .recv_until(
                "sent",
                |m| matches!(m, ServerMsg::Sent { id: i, .. } if *i == id),
            )
            .await
        {
            ServerMsg::Sent { seq, .. } => seq,
            other => unreachable!("recv_until returned {other:?}"),
        }
    }

    /// A round trip: everything the server queued before the `Pong` is skipped.
    pub async fn ping(&mut self, nonce: u64) {
        self.send(&ClientMsg::Ping { nonce }).await;
        self.recv_until("pong", |m| *m == ServerMsg::Pong { nonce })
            .await;
    }
}
