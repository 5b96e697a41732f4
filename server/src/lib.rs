//! The Breeze server: the core, hosted by breeze-transport-tokio over TCP and by
//! breeze-transport-ws over WebSocket (with the web client, embedded), storing in
//! breeze-store's SQLite (or breeze-store-pg's PostgreSQL, with `--store`). The binary is
//! `main.rs` (flags in `cli.rs`); this library exposes
//! the same wiring so tests and benchmarks can start a real server in-process.

pub mod cli;
pub mod config_file;
pub mod metrics;
mod probes;
mod settings;
mod storage;
pub mod users;

pub use settings::{ClusterSettings, DbLocation, NatsUrl, PgUrl, Settings, TlsFiles};
pub use storage::{PgBackend, StoreBackend};

/// The web client (`web/`), embedded at build time by build.rs.
mod web {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

/// The files the HTTP listener serves: the web client as it was when this was built.
pub fn web_site() -> breeze_transport_ws::Site {
    breeze_transport_ws::Site {
        files: web::WEB_FILES,
    }
}

use breeze_cluster_nats::{NatsBus, NatsConfig, NatsError, NatsLink};
use breeze_core::cluster::ClusterConfig;
use breeze_core::message::WhoEntry;
use breeze_core::server::{Server, Stats};
use breeze_store::{Db, Hasher, StoreError};
use breeze_store_pg::{PgError, PgOptions, PgService, PgStore};
use breeze_transport_tokio::tls::{TlsError, TlsListener, TlsListenerConfig};
use breeze_transport_tokio::{
    Clock, Host, HostHandle, HostStopped, Listener, StorageBackend, result_channel,
};
use breeze_transport_ws::{HttpConfig, OriginPolicy};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

/// Why the server could not start. Each reads as a sentence after `breeze-server: `.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open database {db}: {source}")]
    OpenDb {
        db: DbLocation,
        #[source]
        source: StoreError,
    },
    #[error("cannot read the user directory from {db}: {source}")]
    LoadUsers {
        db: DbLocation,
        #[source]
        source: StoreError,
    },
    #[error("cannot use the PostgreSQL store {db} (--store): {source}")]
    OpenPg {
        db: DbLocation,
        #[source]
        source: PgError,
    },
    #[error("cannot join the cluster through {nats} (--cluster): {source}")]
    Cluster {
        nats: NatsUrl,
        #[source]
        source: NatsError,
    },
    #[error("cannot set up password hashing: {0}")]
    Hashing(#[source] StoreError),
    #[error("cannot start the storage threads: {0}")]
    Storage(#[source] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The TLS certificate or key cannot be used; the message names the file.
    #[error("{0}")]
    Tls(#[source] TlsError),
    #[error("the startup work panicked")]
    Panicked,
    /// The core task ended without being asked: it panicked (an accept loop or the storage
    /// writer died, or an invariant failed). The process must end rather than linger with
    /// its listener closed; a supervisor restarts it, everyone offline.
    #[error("the server stopped by itself ({0}); exiting so that it can be restarted")]
    Died(String),
}

/// A server that is up and serving.
#[derive(Debug)]
pub struct Running {
    handle: HostHandle,
    task: JoinHandle<()>,
    http_addr: Option<SocketAddr>,
    /// The cluster bus, closed after the host so that its last words (this node's users
    /// leaving) reach the other nodes.
    bus: Option<NatsLink>,
}

impl Running {
    /// Where it listens for TCP (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Where its HTTP listener (web client, WebSocket) listens, if it has one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// A handle for introspection and shutdown, usable from anywhere.
    pub fn handle(&self) -> HostHandle {
        self.handle.clone()
    }

    pub async fn stats(&self) -> Result<Stats, HostStopped> {
        self.handle.stats().await
    }

    pub async fn who(&self) -> Result<Vec<WhoEntry>, HostStopped> {
        self.handle.who().await
    }

    /// Tells every session `Bye{ServerShutdown}`, lets connections flush, flushes storage,
    /// and returns once all of that is done.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        let _ = self.task.await;
        if let Some(bus) = self.bus {
            bus.close().await;
        }
    }
}

/// Reads the TLS files (if any), opens the database, loads the user directory, binds and
/// starts serving.
pub async fn start(settings: Settings) -> Result<Running, StartError> {
    // First, since it is cheap and a typo in a path should not wait for a database.
    let tls = match &settings.tls {
        Some(files) => Some(
            breeze_transport_tokio::tls::server_config(&files.cert, &files.key)
                .map_err(StartError::Tls)?,
        ),
        None => None,
    };
    let (results, receiver) = result_channel(&settings.server);
    if let DbLocation::Postgres(url) = &settings.db {
        let pg_error = |source| StartError::OpenPg {
            db: settings.db.clone(),
            source,
        };
        let store = PgStore::open(url.as_str(), &PgOptions::default())
            .await
            .map_err(pg_error)?;
        let users = store.users().await.map_err(pg_error)?;
        let cost = settings.hash_cost;
        let hasher = tokio::task::spawn_blocking(move || Hasher::new(cost))
            .await
            .map_err(|_| StartError::Panicked)?
            .map_err(StartError::Hashing)?;
        let (listener, http) = bind_all(&settings)?;
        let bus = match &settings.cluster {
            Some(cluster) => Some(join_bus(cluster).await?),
            None => None,
        };
        let service = PgService::start(
            store,
            hasher,
            settings.hash_threads,
            settings.server.work,
            std::sync::Arc::new(breeze_store_pg::system_now_ms),
            move |id, result| {
                // After the host is gone nobody waits for the result; the write is done anyway.
                results.send(id, result);
            },
        );
        let commits = Some(service.commit_stats());
        let backend = PgBackend::new(service);
        let serve = Serve::new(&settings, backend, commits, receiver, users);
        return Serve { bus, ..serve }.on_any(listener, http, tls);
    }
    // Opening and migrating the database and computing the hasher's first hash block; do it
    // off the runtime's workers.
    let opened = {
        let (db_at, options, cost) = (
            settings.db.clone(),
            settings.db_options.clone(),
            settings.hash_cost,
        );
        tokio::task::spawn_blocking(move || open_store(&db_at, &options, cost))
            .await
            .map_err(|_| StartError::Panicked)??
    };
    let (db, users, hasher) = opened;
    let (listener, http) = bind_all(&settings)?;
    let backend = StoreBackend::start(
        db,
        hasher,
        settings.hash_threads,
        settings.server.work,
        results,
    )
    .map_err(StartError::Storage)?;
    let commits = backend.commit_stats();
    Serve::new(&settings, backend, commits, receiver, users).on_any(listener, http, tls)
}

/// Connects this node to its cluster's bus, for a process starting now (its epoch).
async fn join_bus(cluster: &ClusterSettings) -> Result<(ClusterConfig, NatsBus), StartError> {
    let timing = cluster.config();
    let bus = breeze_cluster_nats::connect(&NatsConfig {
        url: cluster.nats.as_str().to_owned(),
        cluster: cluster.name.clone(),
        node: cluster.node,
        timing,
    })
    .await
    .map_err(|source| StartError::Cluster {
        nats: cluster.nats.clone(),
        source,
    })?;
    Ok((timing, bus))
}

/// Binds the Breeze listener and, unless switched off, the HTTP one.
fn bind_all(settings: &Settings) -> Result<(TcpListener, Option<TcpListener>), StartError> {
    let listener = bind(settings.listen).map_err(|source| StartError::Listen {
        addr: settings.listen,
        source,
    })?;
    let http = match settings.http_listen {
        Some(addr) => Some(bind(addr).map_err(|source| StartError::Listen { addr, source })?),
        None => None,
    };
    Ok((listener, http))
}

/// Everything `start` made, waiting for its listener.
struct Serve<'a, B> {
    server: Server,
    backend: B,
    /// The store's commit figures, for `/metrics` and `/readyz`.
    commits: Option<std::sync::Arc<breeze_store::CommitStats>>,
    receiver: breeze_transport_tokio::ResultReceiver,
    clock: Clock,
    settings: &'a Settings,
    registered: usize,
    /// The cluster bus this node joins, if it is one of a cluster.
    bus: Option<(ClusterConfig, NatsBus)>,
}

impl<'a, B: StorageBackend> Serve<'a, B> {
    fn new(
        settings: &'a Settings,
        backend: B,
        commits: Option<std::sync::Arc<breeze_store::CommitStats>>,
        receiver: breeze_transport_tokio::ResultReceiver,
        users: Vec<breeze_core::UserId>,
    ) -> Self {
        // A typo in --admin would otherwise show only as a refused `who` much later.
        for admin in &settings.server.admins {
            if users.binary_search(admin).is_err() {
                tracing::warn!(%admin, "--admin names a user that is not registered (yet)");
            }
        }
        let registered = users.len();
        let mut server = Server::new(settings.server.clone(), users);
        // The secret transfer tokens derive from: from the OS, as the core has no entropy.
        let mut secret = [0u8; 32];
        match getrandom::fill(&mut secret) {
            Ok(()) => server.set_transfer_key(secret),
            Err(error) => tracing::warn!(%error, "no entropy for transfer tokens: transfers off"),
        }
        Serve {
            registered,
            server,
            backend,
            commits,
            receiver,
            clock: Clock::start(),
            settings,
            bus: None,
        }
    }

    /// Serves on `listener` and, if given, `http`, both in TLS when `tls` is given.
    fn on_any(
        self,
        listener: TcpListener,
        http: Option<TcpListener>,
        tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Result<Running, StartError> {
        let settings = self.settings;
        let Some(config) = tls else {
            return self.on(listener, http);
        };
        // The TLS handshake gets the same deadline as the protocol's Hello after it.
        let limits = TlsListenerConfig {
            handshake_timeout: settings.server.handshake_timeout,
            ..TlsListenerConfig::default()
        };
        let listener = TlsListener::new(listener, config.clone(), limits).map_err(|source| {
            StartError::Listen {
                addr: settings.listen,
                source,
            }
        })?;
        let http = match http {
            Some(http) => {
                let addr = http.local_addr().unwrap_or(settings.listen);
                let tls = TlsListener::new(http, config, limits)
                    .map_err(|source| StartError::Listen { addr, source })?;
                Some(tls)
            }
            None => None,
        };
        self.on(listener, http)
    }

    /// Starts the host on `listener` (TCP, or TLS over it) and, if given, the HTTP listener
    /// `http` (likewise) admitting WebSocket connections into the same host.
    fn on<L: Listener, H: Listener>(
        self,
        listener: L,
        http: Option<H>,
    ) -> Result<Running, StartError> {
        let settings = self.settings;
        let (mut host, handle) = Host::new(
            self.server,
            listener,
            self.backend,
            self.receiver,
            self.clock,
            settings.host.clone(),
        )
        .map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;
        let bus = self.bus.map(|(cfg, bus)| {
            host.join_cluster(cfg, bus.backend, bus.inbox);
            bus.link
        });
        let http_addr = match http {
            Some(http) => {
                let addr = http.local_addr().map_err(|source| StartError::Listen {
                    addr: settings.http_listen.unwrap_or(settings.listen),
                    source,
                })?;
                let cfg = HttpConfig {
                    origins: OriginPolicy {
                        allowed: settings.allowed_origins.clone(),
                    },
                    secure: settings.tls.is_some(),
                    handshake_timeout: settings.server.handshake_timeout,
                    ping_after: settings.server.heartbeat_interval,
                    max_frame: settings.server.max_frame,
                    probes: Some(probes::ServerProbes::set(
                        handle.clone(),
                        self.commits.clone(),
                    )),
                    ..HttpConfig::new(web_site())
                };
                host.serve(addr, breeze_transport_ws::serve(http, host.acceptor(), cfg));
                Some(addr)
            }
            None => None,
        };
        log_startup(settings, handle.local_addr(), http_addr, self.registered);
        Ok(Running {
            handle,
            task: host.spawn(),
            http_addr,
            bus,
        })
    }
}

/// Runs a server until `shutdown_signal` resolves, then shuts it down gracefully.
pub async fn run(
    settings: Settings,
    shutdown_signal: impl Future<Output = ()>,
) -> Result<(), StartError> {
    serve(start(settings).await?, shutdown_signal).await
}

/// Serves until `shutdown_signal` resolves (then shuts down gracefully), or until the core
/// task dies, which is an error: no zombie server that keeps the process up with nothing
/// accepting (ARCHITECTURE.md, Invariants).
pub async fn serve(
    mut running: Running,
    shutdown_signal: impl Future<Output = ()>,
) -> Result<(), StartError> {
    tokio::select! {
        () = shutdown_signal => {
            info!("shutdown requested");
            running.shutdown().await;
            Ok(())
        }
        ended = &mut running.task => Err(StartError::Died(match ended {
            Ok(()) => "its core task returned".to_owned(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let text = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("no message");
                format!("its core task panicked: {text}")
            }
            Err(_) => "its core task was cancelled".to_owned(),
        })),
    }
}

fn open_store(
    db: &DbLocation,
    options: &breeze_store::DbOptions,
    cost: breeze_store::HashCost,
) -> Result<(Db, Vec<breeze_core::UserId>, Hasher), StartError> {
    let opened = match db {
        DbLocation::File(path) => Db::open(path, options),
        DbLocation::Memory => Db::open_in_memory(options),
        DbLocation::Postgres(_) => unreachable!("invariant: `start` opens PostgreSQL itself"),
    };
    let db_store = opened.map_err(|source| StartError::OpenDb {
        db: db.clone(),
        source,
    })?;
    let users = db_store.users().map_err(|source| StartError::LoadUsers {
        db: db.clone(),
        source,
    })?;
    let hasher = Hasher::new(cost).map_err(StartError::Hashing)?;
    Ok((db_store, users, hasher))
}

fn log_startup(settings: &Settings, addr: SocketAddr, http: Option<SocketAddr>, registered: usize) {
    let web = match http {
        Some(a) if settings.tls.is_some() => format!("https://{a}/"),
        Some(a) => format!("http://{a}/"),
        None => "off".to_owned(),
    };
    let cfg = &settings.server;
    let host = &settings.host;
    let admins: Vec<&str> = cfg.admins.iter().map(|a| a.as_str()).collect();
    let cluster = match &settings.cluster {
        Some(c) => format!(
            "node {} of {} on {} (node timeout {}, heartbeat {}, fence margin {})",
            c.node.0,
            c.name,
            c.nats,
            humantime::format_duration(c.node_timeout),
            humantime::format_duration(c.heartbeat_every),
            humantime::format_duration(c.fence_margin)
        ),
        None => "off".to_owned(),
    };
    info!(
        db = %settings.db,
        registered_users = registered,
        heartbeat_interval = %humantime::format_duration(cfg.heartbeat_interval),
        heartbeat_timeout = %humantime::format_duration(cfg.heartbeat_timeout),
        handshake_timeout = %humantime::format_duration(cfg.handshake_timeout),
        offline_grace = %humantime::format_duration(cfg.offline_grace),
        duplicate_login = ?cfg.duplicate_login,
        scope = ?cfg.scope,
        max_frame = cfg.max_frame,
        max_attachment = cfg.max_attachment,
        max_connections = host.max_connections,
        outbound_queue = host.outbound_queue.frames,
        outbound_queue_bytes = host.outbound_queue.bytes,
        synchronous = ?settings.db_options.synchronous,
        admins = ?admins,
        tls = settings.tls.is_some(),
        web = %web,
        web_files = web::WEB_FILES.len(),
        cluster = %cluster,
        "breeze-server listening on {addr}"
    );
}

/// Connections the kernel may queue before the server accepts them. The standard library's
/// 128 overflows when thousands of clients come back at once after a restart, and each
/// dropped SYN costs its client a second before the retry.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // A restarted server must not wait for the old one's TIME_WAIT sockets to clear.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Long enough for any machine to notice a finished task; `serve` hangs forever without
    /// the fix, so the bound only turns a hang into a failure.
    const BOUND: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_dead_core_task_ends_serve_with_an_error() {
        let running = start(Settings::for_tests(DbLocation::Memory))
            .await
            .unwrap();
        running.task.abort();
        let served = tokio::time::timeout(BOUND, serve(running, std::future::pending()))
            .await
            .expect("serve returned once its core task was gone");
        assert!(matches!(served, Err(StartError::Died(_))), "{served:?}");
    }

    #[tokio::test]
    async fn a_panicking_core_task_is_reported_with_its_message() {
        let mut running = start(Settings::for_tests(DbLocation::Memory))
            .await
            .unwrap();
        let host = std::mem::replace(
            &mut running.task,
            tokio::spawn(async { panic!("invariant: test") }),
        );
        host.abort();
        let served = tokio::time::timeout(BOUND, serve(running, std::future::pending()))
            .await
            .expect("serve returned once its core task panicked");
        let Err(StartError::Died(why)) = served else {
            panic!("{served:?}");
        };
        assert!(why.contains("panicked: invariant: test"), "{why}");
    }

    #[tokio::test]
    async fn a_shutdown_signal_ends_serve_cleanly() {
        let running = start(Settings::for_tests(DbLocation::Memory))
            .await
            .unwrap();
        let served = tokio::time::timeout(BOUND, serve(running, async {})).await;
        assert!(matches!(served, Ok(Ok(()))), "{served:?}");
    }
}
