//! Test support: a host on an ephemeral loopback port over the core's in-memory store. The
//! raw wire peer is `breeze_testsupport::Peer`.

#![allow(dead_code)]

use breeze_core::server::Server;
use breeze_core::storage::StorageOp;
use breeze_core::testkit::MemStore;
use breeze_core::{RequestId, ServerConfig};
use breeze_testsupport::WAIT;
use breeze_transport_tokio::{
    Clock, Host, HostConfig, HostHandle, Listener, QueueLimits, ResultSender, StorageBackend,
    result_channel,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::timeout;

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
