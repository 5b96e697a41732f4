//! Everything a running server needs to know, whether it came from flags or from a test.

use breeze_core::ServerConfig;
use breeze_store::{DbOptions, HashCost};
use breeze_transport_tokio::HostConfig;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbLocation {
    File(PathBuf),
    /// A private in-memory database, gone at shutdown: for tests.
    Memory,
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::File(path) => write!(f, "{}", path.display()),
            DbLocation::Memory => f.write_str("(in memory)"),
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
