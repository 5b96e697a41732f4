//! A raw protocol peer for end-to-end tests: a plain socket and the core codec.

#![allow(dead_code)]

use breeze_core::UserId;
use breeze_core::codec::{DEFAULT_MAX_FRAME, decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, Credential, MAGIC, PROTOCOL_VERSION, ServerMsg, Status};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

pub mod live;
pub mod process;

/// Bound on every wait; reaching it fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

pub struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    /// Connects and completes the handshake.
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let mut peer = Peer {
            stream,
            buf: BytesMut::new(),
        };
        peer.send(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "e2e".into(),
        })
        .await;
        let welcome = peer.recv().await;
        assert!(
            matches!(welcome, Some(ServerMsg::Welcome { .. })),
            "{welcome:?}"
        );
        peer
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.stream.write_all(&encode_frame(msg)).await.unwrap();
    }

    /// The next message, `None` once the server closed the connection.
    pub async fn recv(&mut self) -> Option<ServerMsg> {
        let next = timeout(WAIT, async {
            loop {
                if let Some(payload) = split_frame(&mut self.buf, DEFAULT_MAX_FRAME).unwrap() {
                    return Some(decode(&payload).unwrap());
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await;
        next.expect("nothing within the wait bound")
    }

    pub async fn recv_until(&mut self, what: &str, f: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            match self.recv().await {
                Some(msg) if f(&msg) => return msg,
                Some(_) => {}
                None => panic!("closed while waiting for {what}"),
            }
        }
    }

    pub async fn register(&mut self, name: &str, password: &str) {
        self.send(&ClientMsg::Register {
            user: user(name),
            password: password.into(),
        })
        .await;
        let got = self
            .recv_until("registered", |m| {
                matches!(m, ServerMsg::Registered { .. } | ServerMsg::Error { .. })
            })
            .await;
        assert_eq!(got, ServerMsg::Registered { user: user(name) });
    }

    /// Logs in; returns the presence snapshot.
    pub async fn login(&mut self, name: &str, password: &str) -> ServerMsg {
        self.send(&ClientMsg::Login {
            user: user(name),
            credential: Credential::Password(password.into()),
            status: Status::Online,
        })
        .await;
        let ok = self
            .recv_until("login answer", |m| {
                matches!(m, ServerMsg::LoginOk { .. } | ServerMsg::Error { .. })
            })
            .await;
        assert!(matches!(ok, ServerMsg::LoginOk { .. }), "{ok:?}");
        self.recv_until("snapshot", |m| {
            matches!(m, ServerMsg::PresenceSnapshot { .. })
        })
        .await
    }

    /// Reads until the close; the last message before it.
    pub async fn last_before_close(&mut self) -> Option<ServerMsg> {
        let mut last = None;
        while let Some(msg) = self.recv().await {
            last = Some(msg);
        }
        last
    }
}
