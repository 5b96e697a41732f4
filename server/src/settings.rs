//! Everything a running server needs to know, whether it came from flags or from a test.

use breeze_core::cluster::ClusterConfig;
use breeze_core::{NodeId, ServerConfig};
use breeze_store::{DbOptions, HashCost};
use breeze_transport_tokio::HostConfig;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    File(PathBuf),
    /// A private in-memory database, gone at shutdown: for tests.
    Memory,
    /// A PostgreSQL database, which several servers may share (`--store`).
    Postgres(PgUrl),
}

/// A PostgreSQL connection URL. Shown with its password masked, since it is logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    pub fn new(url: impl Into<String>) -> PgUrl {
        PgUrl(url.into())
    }

    /// The URL itself, password included: for connecting, never for printing.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        masked(&self.0, f)
    }
}

/// Writes `url` with its password, if any, as `***`.
fn masked(url: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    // `scheme://user:password@rest`: the password is what lies between the first `:`
    // after the scheme and the last `@` of the authority.
    let Some((scheme, rest)) = url.split_once("://") else {
        return f.write_str(url);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => write!(f, "{scheme}://{user}:***@{host}{tail}"),
            None => f.write_str(url),
        },
        None => f.write_str(url),
    }
}

/// The NATS server of a cluster (`--cluster`). Shown with its password masked, like
/// [`PgUrl`].
#[derive(Clone, PartialEq, Eq)]
pub struct NatsUrl(String);

impl NatsUrl {
    pub fn new(url: impl Into<String>) -> NatsUrl {
        NatsUrl(url.into())
    }

    /// The URL itself, password included: for connecting, never for printing.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        masked(&self.0, f)
    }
}

impl fmt::Debug for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsUrl({self})")
    }
}

/// This server as one node of a cluster (CLUSTER.md): presence shared over NATS, accounts
/// and messages in the PostgreSQL store every node shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub nats: NatsUrl,
    /// A token of every subject (`breeze.<name>.…`): clusters sharing one NATS stay apart.
    pub name: String,
    /// Unique in the cluster; a restarted node keeps it (its epoch tells the processes apart).
    pub node: NodeId,
    pub node_timeout: Duration,
    pub heartbeat_every: Duration,
    pub fence_margin: Duration,
}

impl ClusterSettings {
    /// The core's cluster settings for a process started now: the epoch is the wall clock
    /// in milliseconds, which grows across restarts (as long as the clock is not set back
    /// by more than a restart takes).
    pub fn config(&self) -> ClusterConfig {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ClusterConfig {
            node_timeout: self.node_timeout,
            heartbeat_every: self.heartbeat_every,
            fence_margin: self.fence_margin,
            ..ClusterConfig::new(epoch)
        }
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::File(path) => write!(f, "{}", path.display()),
            DbLocation::Memory => f.write_str("(in memory)"),
            DbLocation::Postgres(url) => url.fmt(f),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// IPv4 or IPv6; port 0 picks a free port (see `Running::local_addr`).
    pub listen: SocketAddr,
    pub db: DbLocation,
    pub db_options: DbOptions,
    pub hash_cost: HashCost,
    pub hash_threads: usize,
    /// Protocol policy for the core.
    pub server: ServerConfig,
    /// Transport limits.
    pub host: HostConfig,
    /// Speak TLS, and only TLS, on `listen` (and on `http_listen`: https and wss).
    pub tls: Option<TlsFiles>,
    /// Where the HTTP listener serves the web client and WebSocket (`/ws`); `None`: no
    /// HTTP listener. Port 0 picks a free port (see `Running::http_addr`).
    pub http_listen: Option<SocketAddr>,
    /// Page origins allowed to open `/ws` besides the server's own (PROTOCOL.md §1.3).
    pub allowed_origins: Vec<String>,
    /// One node of a cluster (`--cluster`), or a server on its own.
    pub cluster: Option<ClusterSettings>,
}

/// The server's TLS certificate chain and private key, as PEM files; read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Defaults for a server at `db` on `listen`.
    pub fn new(listen: SocketAddr, db: DbLocation) -> Settings {
        Settings {
            listen,
            db,
            db_options: DbOptions::default(),
            hash_cost: HashCost::default(),
            hash_threads: 2,
            server: ServerConfig::default(),
            host: HostConfig::default(),
            tls: None,
            http_listen: None,
            allowed_origins: Vec::new(),
            cluster: None,
        }
    }

    /// For tests: loopback, free ports (TCP and HTTP), and the cheapest password hashing
    /// argon2 allows (which protects no password).
    pub fn for_tests(db: DbLocation) -> Settings {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Settings {
            hash_cost: HashCost::fast_for_tests(),
            hash_threads: 1,
            http_listen: Some(loopback),
            ..Settings::new(loopback, db)
        }
    }
}
