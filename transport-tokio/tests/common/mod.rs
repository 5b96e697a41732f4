//! Test support: a host on an ephemeral loopback port over the core's in-memory store, and a
//! raw-socket peer that speaks the wire protocol through the core codec.

#![allow(dead_code)]

use breeze_core::codec::{DEFAULT_MAX_FRAME, decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, Credential, MAGIC, PROTOCOL_VERSION, ServerMsg, Status};
use breeze_core::server::Server;
use breeze_core::storage::StorageOp;
use breeze_core::testkit::MemStore;
use breeze_core::{RequestId, ServerConfig, UserId};
use breeze_transport_tokio::{
    Clock, Host, HostConfig, HostHandle, Listener, QueueLimits, ResultSender, StorageBackend,
    result_channel,
};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bound on every wait in these tests; reaching it fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// Performs requests at once on the core's in-memory store (shared, so a restarted host sees
/// the same accounts).
pub struct MemBackend {
    pub store: Arc<Mutex<MemStore>>,
    pub results: ResultSender,
}

impl StorageBackend for MemBackend {
    fn submit(&mut self, id: RequestId, op: StorageOp) {
        let result = self.store.lock().unwrap().apply(op, 0);
        self.results.send(id, result);
    }
}

/// Short timings so tests run fast.
pub fn fast_config() -> ServerConfig {
    ServerConfig {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(400),
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    }
}

pub fn host_config() -> HostConfig {
    HostConfig {
        max_connections: 64,
        outbound_queue: QueueLimits {
            frames: 64,
            bytes: 1 << 20,
        },
        linger: Duration::from_millis(300),
        shutdown_grace: Duration::from_secs(1),
        ..HostConfig::default()
    }
}

pub struct TestServer {
    pub handle: HostHandle,
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
    pub store: Arc<Mutex<MemStore>>,
}

impl TestServer {
    pub async fn start(cfg: ServerConfig, host: HostConfig) -> TestServer {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Self::start_on(addr, Arc::new(Mutex::new(MemStore::new())), cfg, host).await
    }

    pub async fn start_on(
        addr: SocketAddr,
        store: Arc<Mutex<MemStore>>,
        cfg: ServerConfig,
        host: HostConfig,
    ) -> TestServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::start_listener(listener, store, cfg, host)
    }

    /// Serves `listener` (TLS over TCP, say) instead of a plain TCP port.
    pub fn start_listener<L: Listener>(
        listener: L,
        store: Arc<Mutex<MemStore>>,
        cfg: ServerConfig,
        host: HostConfig,
    ) -> TestServer {
        Self::start_with(listener, store, cfg, host, |_| {})
    }

    /// Like `start_listener`, with `more` adding to the host before it runs (listeners).
    pub fn start_with<L: Listener>(
        listener: L,
        store: Arc<Mutex<MemStore>>,
        cfg: ServerConfig,
        host: HostConfig,
        more: impl FnOnce(&mut Host<MemBackend>),
    ) -> TestServer {
        // RUST_LOG=debug shows the host's view when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let users = store.lock().unwrap().users();
        let (results, receiver) = result_channel(&cfg);
        let backend = MemBackend {
            store: store.clone(),
            results,
        };
        let clock = Clock::start();
        let (mut host, handle) = Host::new(
            Server::new(cfg, users),
            listener,
            backend,
            receiver,
            clock,
            host,
        )
        .unwrap();
        more(&mut host);
        let addr = handle.local_addr();
        TestServer {
            handle,
            addr,
            task: host.spawn(),
            store,
        }
    }

    pub async fn stop(self) {
        timeout(WAIT, self.handle.shutdown()).await.unwrap();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }

    /// Waits until `f(stats)` holds, polling.
    pub async fn wait_stats(&self, what: &str, f: impl Fn(&breeze_core::server::Stats) -> bool) {
        let polled = timeout(WAIT, async {
            loop {
                let stats = self.handle.stats().await.unwrap();
                if f(&stats) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let stats = self.handle.stats().await.unwrap();
        assert!(
            polled.is_ok(),
            "waited {WAIT:?} for {what}; stats: {stats:?}"
        );
    }
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// A raw protocol peer on a plain socket.
pub struct Peer {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        Peer::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    pub fn from_stream(stream: TcpStream) -> Peer {
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.stream.write_all(&encode_frame(msg)).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next message, or `None` when the server closed (or reset) the connection.
    pub async fn recv(&mut self) -> Option<ServerMsg> {
        timeout(WAIT, self.recv_unbounded())
            .await
            .expect("no frame and no close within the wait bound")
    }

    async fn recv_unbounded(&mut self) -> Option<ServerMsg> {
        loop {
            if let Some(payload) = split_frame(&mut self.buf, DEFAULT_MAX_FRAME).unwrap() {
                return Some(decode(&payload).unwrap());
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

    pub async fn hello(&mut self) -> ServerMsg {
        self.send(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "test".into(),
        })
        .await;
        let welcome = self.recv().await.expect("welcome");
        assert!(matches!(welcome, ServerMsg::Welcome { .. }), "{welcome:?}");
        welcome
    }

    /// Connects, says hello, registers `name` and logs in; returns after the snapshot.
    pub async fn register_and_login(addr: SocketAddr, name: &str) -> (Peer, Vec<ServerMsg>) {
        let mut peer = Peer::connect(addr).await;
        peer.hello().await;
        peer.send(&ClientMsg::Register {
            user: user(name),
            password: "password1".into(),
        })
        .await;
        let registered = peer.recv().await.unwrap();
        assert_eq!(registered, ServerMsg::Registered { user: user(name) });
        let got = peer.login(name).await;
        (peer, got)
    }

    /// Logs in; returns `LoginOk` and the presence snapshot.
    pub async fn login(&mut self, name: &str) -> Vec<ServerMsg> {
        self.send(&ClientMsg::Login {
            user: user(name),
            credential: Credential::Password("password1".into()),
            status: Status::Online,
        })
        .await;
        let ok = self.recv().await.unwrap();
        assert!(matches!(ok, ServerMsg::LoginOk { .. }), "{ok:?}");
        let snapshot = self
            .recv_until("presence snapshot", |m| {
                matches!(m, ServerMsg::PresenceSnapshot { .. })
            })
            .await;
        vec![ok, snapshot]
    }

    pub async fn ping(&mut self, nonce: u64) {
        self.send(&ClientMsg::Ping { nonce }).await;
        self.recv_until("pong", |m| *m == ServerMsg::Pong { nonce })
            .await;
    }
}
