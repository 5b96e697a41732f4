//! Command-line flags, each with an environment-variable fallback, and their checks.

use crate::settings::{ClusterSettings, DbLocation, NatsUrl, PgUrl, Settings, TlsFiles};
use breeze_core::codec::DEFAULT_MAX_FRAME;
use breeze_core::config::{
    Budget, FrameRate, LoginThrottle, RegisterThrottle, Registration, TransferLimits, WorkBudget,
};
use breeze_core::message::WatchScope;
use breeze_core::{DuplicateLogin, NodeId, ServerConfig, UserId};
use breeze_store::{DbOptions, HashCost, Synchronous};
use breeze_transport_tokio::{HostConfig, QueueLimits};
use clap::{Parser, Subcommand, ValueEnum};
use humantime::format_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The Breeze chat and presence server.
///
/// Every flag can also be set through the environment variable named in its help; a flag on
/// the command line wins. Durations are written like `10s`, `500ms` or `2m`.
#[derive(Debug, Parser)]
#[command(name = "breeze-server", version)]
pub struct Args {
    /// Without a command the server serves.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// A TOML file of settings: each key a flag's long name (`listen = "0.0.0.0:7878"`,
    /// `heartbeat-timeout = "30s"`, `admin = ["root"]`). Flags and BREEZE_* variables override
    /// it (contrib/breeze.toml is an example).
    #[arg(long, env = "BREEZE_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Address and port to listen on: IPv4 or IPv6 (`0.0.0.0:7878`, `[::]:7878`), or a host
    /// name (`localhost:7878`; its first IPv4 address, else its first address).
    #[arg(
        long,
        env = "BREEZE_LISTEN",
        default_value = "127.0.0.1:7878",
        value_name = "ADDR",
        value_parser = listen_addr
    )]
    pub listen: SocketAddr,

    /// Address and port of the HTTP listener: the web client at `/`, WebSocket at `/ws`,
    /// `/healthz`. `off` switches it off. With --tls-cert it speaks only https/wss.
    #[arg(
        long,
        env = "BREEZE_HTTP_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR|off"
    )]
    pub http_listen: HttpListen,

    /// A web page origin (`https://chat.example.com`) allowed to open `/ws` besides the
    /// server's own; any other page's upgrade is refused (403). Repeat the flag or give a
    /// comma-separated list. Clients that send no Origin (programs, not browsers) are let in.
    #[arg(
        long = "allowed-origin",
        env = "BREEZE_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allowed_origins: Vec<String>,

    /// SQLite database file holding accounts, contacts and messages; created if missing.
    /// One server at a time: a second one on the same file is refused.
    #[arg(
        long,
        env = "BREEZE_DB",
        default_value = "./breeze.db",
        value_name = "PATH",
        global = true
    )]
    pub db: PathBuf,

    /// Store in PostgreSQL instead of the SQLite file: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    /// Several servers may share one database. The schema is created (or migrated) at start.
    #[arg(long, env = "BREEZE_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// Run as one node of a cluster whose bus is the NATS server at URL (`nats://HOST:PORT`):
    /// presence is shared over it, accounts and messages through --store (PostgreSQL),
    /// which every node must name alike. Needs --node-id. See README, "Running a cluster".
    #[arg(long, env = "BREEZE_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,

    /// This node's number in the cluster (--cluster), unique among its nodes. A restarted
    /// node keeps its number: its sessions of before the restart end everywhere.
    #[arg(long, env = "BREEZE_NODE_ID", value_name = "N")]
    pub node_id: Option<u32>,

    /// The cluster's name, part of every NATS subject (`breeze.NAME.…`), so that clusters
    /// sharing one NATS server do not hear each other. Letters, digits, `-` and `_`.
    #[arg(
        long,
        env = "BREEZE_CLUSTER_NAME",
        default_value = "breeze",
        value_name = "NAME"
    )]
    pub cluster_name: String,

    /// A node not heard from on the bus for this long is dead: its users go offline on
    /// every other node.
    #[arg(long, env = "BREEZE_NODE_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub node_timeout: Duration,

    /// How often a node tells the others it is alive. Shorter than --fence-margin.
    #[arg(long, env = "BREEZE_NODE_HEARTBEAT", default_value = "500ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub node_heartbeat: Duration,

    /// A node that lost NATS closes its clients (`Bye NodeFenced`: reconnect elsewhere)
    /// this long before the others can declare it dead. Between --node-heartbeat and
    /// --node-timeout; it must cover noticing the loss (see CLUSTER.md).
    #[arg(long, env = "BREEZE_FENCE_MARGIN", default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub fence_margin: Duration,

    /// How each commit reaches the disk. `full`: a message is confirmed to its sender only
    /// once it would survive a power loss. `normal`: faster; a power loss (not a crash) may
    /// lose the last confirmed messages, never corrupt the database.
    #[arg(long, env = "BREEZE_SYNCHRONOUS", value_enum, default_value_t = SyncMode::Full)]
    pub synchronous: SyncMode,

    /// How often clients must send something (a ping if nothing else); told to them at
    /// connect.
    #[arg(long, env = "BREEZE_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat_interval: Duration,

    /// A connection silent for this long is dead: it is closed and its user announced
    /// offline. Must be longer than the heartbeat interval.
    #[arg(long, env = "BREEZE_HEARTBEAT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat_timeout: Duration,

    /// A new connection must introduce itself (Hello) within this long.
    #[arg(long, env = "BREEZE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub handshake_timeout: Duration,

    /// How long a user whose connection died (rather than logged out) still shows online, so
    /// that a quick reconnect is not seen as offline-online flapping. `0s` announces at once.
    #[arg(long, env = "BREEZE_OFFLINE_GRACE", default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub offline_grace: Duration,

    /// What a second login of a user who is logged in does. `replace`: the older session is
    /// told it was replaced and closed. `multi`: both stay; the user is offline only when the
    /// last one ends.
    #[arg(long, env = "BREEZE_DUPLICATE_LOGIN", value_enum, default_value_t = DuplicateMode::Replace)]
    pub duplicate_login: DuplicateMode,

    /// Whose presence each user sees. `everyone`: every registered user. `contacts`: the users
    /// on their own contact list.
    #[arg(long, env = "BREEZE_SCOPE", value_enum, default_value_t = Scope::Everyone)]
    pub scope: Scope,

    /// Largest frame a client may send, in bytes. A client announcing a larger one is told
    /// why and disconnected before a byte of it is buffered.
    #[arg(long, env = "BREEZE_MAX_FRAME", default_value_t = DEFAULT_MAX_FRAME, value_name = "BYTES")]
    pub max_frame: u32,

    /// Largest message attachment, in bytes. A frame must hold it plus a message body.
    #[arg(long, env = "BREEZE_MAX_ATTACHMENT", default_value_t = 1024 * 1024, value_name = "BYTES")]
    pub max_attachment: u32,

    /// Most connections open at once; one more is told the server is full and closed.
    #[arg(
        long,
        env = "BREEZE_MAX_CONNECTIONS",
        default_value_t = 20_000,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Frames waiting to be written to one client before it counts as a slow reader and is
    /// disconnected, so that one stuck client cannot make the server's memory grow.
    #[arg(
        long,
        env = "BREEZE_OUTBOUND_QUEUE",
        default_value_t = 4096,
        value_name = "FRAMES"
    )]
    pub outbound_queue: usize,

    /// Bytes waiting to be written to one client before it counts as a slow reader.
    #[arg(long, env = "BREEZE_OUTBOUND_QUEUE_BYTES", default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    pub outbound_queue_bytes: usize,

    /// Frames per second one connection may send on average; a connection that goes beyond
    /// it (after its burst) is closed as flooding. 0 switches the limit off.
    #[arg(long, env = "BREEZE_FRAME_RATE", default_value_t = ServerConfig::default().frame_rate.per_second, value_name = "PER_SECOND")]
    pub frame_rate: u32,

    /// Frames one connection may send at once above the average rate.
    #[arg(long, env = "BREEZE_FRAME_BURST", default_value_t = ServerConfig::default().frame_rate.burst, value_name = "FRAMES")]
    pub frame_burst: u32,

    /// Contacts one user may list (also the longest list one bulk change may carry).
    /// At most 10 000: the whole list travels in one `LoginOk` frame (33 bytes a name at
    /// most), which must stay well inside the 1 MiB frames clients accept.
    #[arg(long, env = "BREEZE_MAX_CONTACTS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "N")]
    pub max_contacts: u32,

    /// The largest file a user may offer in a direct transfer, in bytes (PROTOCOL.md, "Direct
    /// transfers"). The server never stores it; relayed, it passes in bounded chunks.
    #[arg(long, env = "BREEZE_MAX_TRANSFER_SIZE", default_value_t = ServerConfig::default().transfers.max_size, value_name = "BYTES")]
    pub max_transfer_size: u64,

    /// Direct transfers one user may take part in at once, as sender or receiver (offers not
    /// yet answered included). 0 switches transfers off.
    #[arg(long, env = "BREEZE_MAX_TRANSFERS", default_value_t = ServerConfig::default().transfers.per_user, value_name = "N")]
    pub max_transfers: u32,

    /// Failed password logins for one user from one address that go unpunished; the next
    /// password login of that user from that address is then refused for a delay that doubles
    /// with each failure (the refusal says how long). Ten times as many for the user from
    /// anywhere, twenty times as many from one address across users, so one colleague
    /// mistyping behind an office NAT locks nobody else out. Token logins are never throttled.
    #[arg(long, env = "BREEZE_LOGIN_FREE_ATTEMPTS", default_value_t = ServerConfig::default().login_throttle.free_attempts, value_name = "N")]
    pub login_free_attempts: u32,

    /// Registrations one source address may make at once; beyond them, one more per
    /// --register-every, and the rest are refused (`RateLimited`). 0 switches the limit off.
    #[arg(long, env = "BREEZE_REGISTER_BURST", default_value_t = ServerConfig::default().register_throttle.burst, value_name = "N")]
    pub register_burst: u32,

    /// How often one source address earns one more registration after its burst.
    #[arg(long, env = "BREEZE_REGISTER_EVERY", default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub register_every: Duration,

    /// Storage requests (messages, logins, contact changes, reads) the whole server may
    /// have waiting for the database; one more is refused as busy, and the client retries.
    /// Also the size of the queues to and from the storage threads.
    #[arg(long, env = "BREEZE_MAX_STORAGE", default_value_t = ServerConfig::default().work.storage.total, value_name = "N")]
    pub max_storage: u32,

    /// Storage requests one connection may have waiting for the database.
    #[arg(long, env = "BREEZE_MAX_STORAGE_PER_CONNECTION", default_value_t = ServerConfig::default().work.storage.per_conn, value_name = "N")]
    pub max_storage_per_connection: u32,

    /// Password hashes (registrations, password logins and changes) the whole server may
    /// have waiting for the hashing threads; one more is refused as busy.
    #[arg(long, env = "BREEZE_MAX_HASHING", default_value_t = ServerConfig::default().work.hashing.total, value_name = "N")]
    pub max_hashing: u32,

    /// Password hashes one connection may have waiting.
    #[arg(long, env = "BREEZE_MAX_HASHING_PER_CONNECTION", default_value_t = ServerConfig::default().work.hashing.per_conn, value_name = "N")]
    pub max_hashing_per_connection: u32,

    /// Who may create accounts: `open`, anyone who can connect (throttled per address);
    /// `closed`, nobody but the operator (`breeze-server user add`).
    #[arg(long, env = "BREEZE_REGISTRATION", value_enum, default_value_t = RegistrationMode::Open)]
    pub registration: RegistrationMode,

    /// A user allowed the administrators' `who` query. Repeat the flag or give a
    /// comma-separated list.
    #[arg(
        long = "admin",
        env = "BREEZE_ADMINS",
        value_delimiter = ',',
        value_name = "USER"
    )]
    pub admins: Vec<UserId>,

    /// Argon2id memory cost of a password hash, in KiB. Higher is harder to crack and
    /// slower to log in.
    #[arg(long, env = "BREEZE_ARGON2_MEMORY_KIB", default_value_t = HashCost::default().memory_kib, value_name = "KIB")]
    pub argon2_memory_kib: u32,

    /// Argon2id passes over that memory.
    #[arg(long, env = "BREEZE_ARGON2_ITERATIONS", default_value_t = HashCost::default().iterations, value_name = "N")]
    pub argon2_iterations: u32,

    /// Threads computing password hashes, so logins never hold up the rest of the storage.
    #[arg(
        long,
        env = "BREEZE_HASH_THREADS",
        default_value_t = 2,
        value_name = "N"
    )]
    pub hash_threads: usize,

    /// Threads of the async runtime that runs the connections, the core and the cluster links
    /// (default: one per CPU less one with the SQLite store, whose writer is a thread of its
    /// own; one per CPU with --store). Nodes that share a machine do better with a share each:
    /// three nodes on two cores spent 5–24 % less CPU per message with one each (BENCHMARKS.md,
    /// cluster).
    #[arg(
        long,
        env = "BREEZE_WORKER_THREADS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub worker_threads: Option<u16>,

    /// PEM file with the server's TLS certificate chain (its own certificate first). Given
    /// with --tls-key, the server speaks only TLS on --listen and on --http-listen (https,
    /// wss); clients verify it with the CA that signed it, or by pinning this very file.
    #[arg(
        long,
        env = "BREEZE_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert.
    #[arg(
        long,
        env = "BREEZE_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// What to do instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy the database (--db) to DEST while a server may be running on it, with SQLite's
    /// online backup, and check the copy.
    ///
    /// To restore: stop the server, delete the database's `-wal` and `-shm` files, copy the
    /// backup over the database file, start the server.
    Backup {
        /// The backup file to write; an existing file is never overwritten.
        #[arg(value_name = "DEST")]
        dest: PathBuf,
    },
    /// Manage accounts in the database (--db) while no server runs on it (the server holds
    /// the database's lock). Each change is logged.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

/// `breeze-server user …`. Passwords come from BREEZE_PASSWORD, else are asked for on a
/// terminal, else read as one line from standard input.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account (with registration closed, the way accounts are made).
    Add {
        #[arg(value_name = "USER")]
        user: UserId,
    },
    /// Set a new password; every device must log in with it again.
    ResetPassword {
        #[arg(value_name = "USER")]
        user: UserId,
    },
    /// Delete an account, its contacts, and every message to or from it.
    Delete {
        #[arg(value_name = "USER")]
        user: UserId,
    },
    /// List the accounts, one name per line; a banned one is followed by ` (banned)`.
    List,
    /// Bar an account from logging in (its password and tokens are kept for an unban).
    /// Online, an admin does the same with `breeze admin ban`.
    Ban {
        #[arg(value_name = "USER")]
        user: UserId,
    },
    /// Let a banned account log in again.
    Unban {
        #[arg(value_name = "USER")]
        user: UserId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegistrationMode {
    Open,
    Closed,
}

/// `--http-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpListen(pub Option<SocketAddr>);

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(HttpListen(None));
        }
        s.parse().map(|a| HttpListen(Some(a))).map_err(|_| {
            format!("{s:?} is neither an address and port (127.0.0.1:8080, [::]:8080) nor `off`")
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DuplicateMode {
    Replace,
    Multi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    Everyone,
    Contacts,
}

/// Settings that are each valid but not together, or out of range. Messages name the flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("{0} is set but {1} is not: TLS needs both (flag, BREEZE_* variable or config file)")]
    HalfTls(&'static str, &'static str),
    #[error(
        "--store must be a PostgreSQL URL (postgres://USER@HOST:PORT/DATABASE), not {0:?}; \
         leave it out to store in the SQLite file named by --db"
    )]
    StoreNotPostgres(String),
    #[error(
        "--heartbeat-timeout ({timeout}) must be longer than --heartbeat-interval ({interval}), \
         or every client would time out between two heartbeats"
    )]
    TimeoutNotAboveInterval { timeout: String, interval: String },
    #[error(
        "--allowed-origin {0:?} is not an origin: write it as a browser does, scheme and host \
         and port without a path (https://chat.example.com, http://localhost:8080)"
    )]
    BadOrigin(String),
    #[error(
        "--cluster needs --store postgres://…: the nodes share accounts and messages through \
         PostgreSQL, and a SQLite file (--db) belongs to one server"
    )]
    ClusterNeedsPostgres,
    #[error("--cluster needs --node-id N, a number unique among the cluster's nodes")]
    ClusterNeedsNodeId,
    #[error("--node-id is set but --cluster is not: a node id means something only in a cluster")]
    NodeIdWithoutCluster,
    #[error("--cluster must be a NATS URL (nats://HOST:PORT or tls://HOST:PORT), not {0:?}")]
    ClusterNotNats(String),
    #[error("--cluster-name {0:?} is part of NATS subjects: use only letters, digits, `-` and `_`")]
    BadClusterName(String),
    #[error(
        "--node-heartbeat ({heartbeat}) must be shorter than --fence-margin ({margin}), and \
         that shorter than --node-timeout ({timeout}): a node must fence itself before the \
         others declare it dead"
    )]
    ClusterTimings {
        heartbeat: String,
        margin: String,
        timeout: String,
    },
    #[error("--http-listen and --listen are both {0}: give the HTTP listener its own port")]
    SameAddress(SocketAddr),
    #[error(
        "--max-frame ({max_frame} bytes) is too small to carry an attachment of \
         --max-attachment ({max_attachment} bytes) and a message body of up to {max_body} bytes"
    )]
    FrameTooSmall {
        max_frame: u32,
        max_attachment: u32,
        max_body: usize,
    },
}

/// `--listen`: an address, or a name resolved once at start. IPv4 first, because that is
/// what `breeze --server localhost:7878` dials first here, and a server on `::1` alone
/// would not be found by it.
fn listen_addr(arg: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = arg.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(arg)
        .map_err(|e| format!("expected HOST:PORT or IP:PORT; cannot resolve it: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| "the name resolves to no address".to_owned())
}

/// Room in a frame for everything around an attachment and the body: names, ids, mime type.
const FRAME_OVERHEAD: u64 = 1024;

impl Args {
    /// Parses `argv` with the config file it names (`--config`, or `BREEZE_CONFIG`) under the
    /// flags and the environment. `Err` for a config file that cannot be used; clap's own
    /// errors (and `--help`) are clap's to print, a refused value explained
    /// (`breeze_flags::explain`).
    pub fn parse_with_config(
        argv: Vec<std::ffi::OsString>,
    ) -> Result<Result<Args, clap::Error>, crate::config_file::ConfigFileError> {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Args::command();
        let file = crate::config_file::named(&argv);
        if let Some(path) = &file {
            cmd = crate::config_file::apply(cmd, path)?;
        }
        // A refused value names its flag, and its variable or this file when it came from
        // one of them.
        let defaults_from = file.map(|path| format!("the config file {}", path.display()));
        Ok(cmd
            .clone()
            .try_get_matches_from(&argv)
            .and_then(|m| Args::from_arg_matches(&m))
            .map_err(|e| breeze_flags::explain(e, &cmd, &argv, defaults_from.as_deref())))
    }

    /// The argon2 cost of new password hashes (--argon2-*), for the server and for
    /// `breeze-server user`, so that both hash alike.
    pub fn hash_cost(&self) -> HashCost {
        HashCost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            ..HashCost::default()
        }
    }

    /// The async runtime's thread count: `--worker-threads`, else [`default_worker_threads`]
    /// for this machine's CPUs and the store chosen.
    pub fn runtime_threads(&self) -> usize {
        match self.worker_threads {
            Some(n) => usize::from(n),
            None => {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                default_worker_threads(cpus, self.store.is_none())
            }
        }
    }

    /// Checks the flags and turns them into settings.
    pub fn into_settings(mut self) -> Result<Settings, ConfigError> {
        for (flag, zero) in [
            ("--heartbeat-interval", self.heartbeat_interval.is_zero()),
            ("--heartbeat-timeout", self.heartbeat_timeout.is_zero()),
            ("--handshake-timeout", self.handshake_timeout.is_zero()),
            ("--max-connections", self.max_connections == 0),
            ("--outbound-queue", self.outbound_queue == 0),
            ("--outbound-queue-bytes", self.outbound_queue_bytes == 0),
            ("--hash-threads", self.hash_threads == 0),
            ("--argon2-iterations", self.argon2_iterations == 0),
            ("--argon2-memory-kib", self.argon2_memory_kib == 0),
            ("--max-storage", self.max_storage == 0),
            (
                "--max-storage-per-connection",
                self.max_storage_per_connection == 0,
            ),
            ("--max-hashing", self.max_hashing == 0),
            (
                "--max-hashing-per-connection",
                self.max_hashing_per_connection == 0,
            ),
            ("--register-every", self.register_every.is_zero()),
        ] {
            if zero {
                return Err(ConfigError::Zero(flag));
            }
        }
        let cluster = self.cluster_settings()?;
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(ConfigError::TimeoutNotAboveInterval {
                timeout: format_duration(self.heartbeat_timeout).to_string(),
                interval: format_duration(self.heartbeat_interval).to_string(),
            });
        }
        let defaults = ServerConfig::default();
        let needed = u64::from(self.max_attachment) + defaults.max_body as u64 + FRAME_OVERHEAD;
        if u64::from(self.max_frame) < needed {
            return Err(ConfigError::FrameTooSmall {
                max_frame: self.max_frame,
                max_attachment: self.max_attachment,
                max_body: defaults.max_body,
            });
        }
        let hash_cost = self.hash_cost();
        let server = ServerConfig {
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
            handshake_timeout: self.handshake_timeout,
            offline_grace: self.offline_grace,
            duplicate_login: match self.duplicate_login {
                DuplicateMode::Replace => DuplicateLogin::Replace,
                DuplicateMode::Multi => DuplicateLogin::Multi,
            },
            scope: match self.scope {
                Scope::Everyone => WatchScope::Everyone,
                Scope::Contacts => WatchScope::Contacts,
            },
            max_frame: self.max_frame,
            max_attachment: self.max_attachment,
            admins: self.admins.into_iter().collect(),
            registration: match self.registration {
                RegistrationMode::Open => Registration::Open,
                RegistrationMode::Closed => Registration::Closed,
            },
            max_contacts: self.max_contacts as usize,
            frame_rate: FrameRate {
                per_second: self.frame_rate,
                burst: self.frame_burst,
            },
            login_throttle: LoginThrottle {
                free_attempts: self.login_free_attempts,
                account_free_attempts: self.login_free_attempts.saturating_mul(10),
                address_free_attempts: self.login_free_attempts.saturating_mul(20),
                ..defaults.login_throttle
            },
            register_throttle: RegisterThrottle {
                burst: self.register_burst,
                every: self.register_every,
            },
            transfers: TransferLimits {
                max_size: self.max_transfer_size,
                per_user: self.max_transfers,
                ..defaults.transfers
            },
            work: WorkBudget {
                storage: Budget {
                    per_conn: self.max_storage_per_connection,
                    total: self.max_storage,
                },
                hashing: Budget {
                    per_conn: self.max_hashing_per_connection,
                    total: self.max_hashing,
                },
            },
            ..defaults
        };
        let host = HostConfig {
            max_connections: self.max_connections,
            outbound_queue: QueueLimits {
                frames: self.outbound_queue,
                bytes: self.outbound_queue_bytes,
            },
            ..HostConfig::default()
        };
        let db = match self.store.take() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DbLocation::Postgres(PgUrl::new(url))
            }
            Some(other) => {
                return Err(ConfigError::StoreNotPostgres(PgUrl::new(other).to_string()));
            }
            // Absolute, so that the startup line and every error say which file it is: started
            // from another folder, a relative path silently made a new, empty database.
            None => DbLocation::File(std::path::absolute(&self.db).unwrap_or(self.db)),
        };
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            // The parser insists on both or neither among flags, but not among a config
            // file's settings (defaults to it): half a TLS setup must not mean plain text.
            (Some(_), None) => return Err(ConfigError::HalfTls("--tls-cert", "--tls-key")),
            (None, Some(_)) => return Err(ConfigError::HalfTls("--tls-key", "--tls-cert")),
        };
        for origin in &self.allowed_origins {
            if !origin.contains("://") || origin.ends_with('/') {
                return Err(ConfigError::BadOrigin(origin.clone()));
            }
        }
        // Port 0 (any free port) twice is two different ports.
        if self.http_listen.0 == Some(self.listen) && self.listen.port() != 0 {
            return Err(ConfigError::SameAddress(self.listen));
        }
        Ok(Settings {
            listen: self.listen,
            http_listen: self.http_listen.0,
            allowed_origins: self.allowed_origins,
            tls,
            db,
            db_options: DbOptions {
                synchronous: match self.synchronous {
                    SyncMode::Full => Synchronous::Full,
                    SyncMode::Normal => Synchronous::Normal,
                },
                ..DbOptions::default()
            },
            hash_cost,
            hash_threads: self.hash_threads,
            server: ServerConfig {
                node: cluster.as_ref().map_or(server.node, |c| c.node),
                ..server
            },
            host,
            cluster,
        })
    }

    /// `--cluster` and the flags that go with it, checked against each other and the store.
    fn cluster_settings(&self) -> Result<Option<ClusterSettings>, ConfigError> {
        let Some(url) = &self.cluster else {
            return match self.node_id {
                Some(_) => Err(ConfigError::NodeIdWithoutCluster),
                None => Ok(None),
            };
        };
        // A --store that is not PostgreSQL is refused on its own account.
        if self.store.is_none() {
            return Err(ConfigError::ClusterNeedsPostgres);
        }
        if !(url.starts_with("nats://") || url.starts_with("tls://")) {
            return Err(ConfigError::ClusterNotNats(NatsUrl::new(url).to_string()));
        }
        let node = self.node_id.ok_or(ConfigError::ClusterNeedsNodeId)?;
        let name = &self.cluster_name;
        if breeze_cluster_nats::Subjects::new(name, NodeId(node)).is_err() {
            return Err(ConfigError::BadClusterName(name.clone()));
        }
        let (heartbeat, margin, timeout) =
            (self.node_heartbeat, self.fence_margin, self.node_timeout);
        if heartbeat.is_zero() || heartbeat >= margin || margin >= timeout {
            return Err(ConfigError::ClusterTimings {
                heartbeat: format_duration(heartbeat).to_string(),
                margin: format_duration(margin).to_string(),
                timeout: format_duration(timeout).to_string(),
            });
        }
        Ok(Some(ClusterSettings {
            nats: NatsUrl::new(url),
            name: name.clone(),
            node: NodeId(node),
            node_timeout: timeout,
            heartbeat_every: heartbeat,
            fence_margin: margin,
        }))
    }
}

/// Runtime threads when `--worker-threads` is not given: one per CPU, less one with the SQLite
/// store. Its writer is a thread of its own that needs a core under load, and tokio's default
/// (one per CPU) puts a runtime thread beside it on every core: on two cores an idle server's
/// second runtime thread is woken per heartbeat `Ping` only to find nothing and park (a futex
/// each way, tokio-rs/tokio#4383). Measured on two CPUs, 19,900 clients pinging every 30 s,
/// `perf stat` over 10 s of the steady state: 191 ms of CPU, 9,694 context switches and 2,289
/// futex calls with two threads; 153 ms, 8,864 and none with one (Mosquitto: 120 ms, 8,215).
/// Chat lost nothing measurable (BENCHMARKS.md, "One runtime thread fewer than the CPUs").
/// PostgreSQL's writer is a task on the runtime, so with `--store` the runtime keeps them all.
pub fn default_worker_threads(cpus: usize, sqlite: bool) -> usize {
    if sqlite {
        cpus.saturating_sub(1).max(1)
    } else {
        cpus.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The flags parsed, as `breeze-server` would be given them.
    fn args(flags: &[&str]) -> Args {
        let mut argv = vec!["breeze-server"];
        argv.extend_from_slice(flags);
        Args::try_parse_from(argv).unwrap()
    }

    fn parse(flags: &[&str]) -> Result<Settings, ConfigError> {
        args(flags).into_settings()
    }

    #[test]
    fn the_flag_definitions_are_consistent() {
        Args::command().debug_assert();
    }

    /// A config file under the flags: its settings count, a flag overrides one, a bad key or
    /// value is refused naming it, and the example in contrib/ stays valid.
    #[test]
    fn a_config_file_sets_what_flags_do_not() {
        let dir = std::env::temp_dir().join(format!("breeze-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let parse_with = |path: &std::path::Path, flags: &[&str]| {
            let mut argv: Vec<std::ffi::OsString> =
                vec!["breeze-server".into(), "--config".into(), path.into()];
            argv.extend(flags.iter().map(Into::into));
            Args::parse_with_config(argv)
        };
        let good = file(
            "good.toml",
            "listen = \"0.0.0.0:7000\"\nheartbeat-timeout = \"45s\"\n\
             admin = [\"root\", \"Ops\"]\nmax-connections = 100\nregistration = \"closed\"\n",
        );
        let s = parse_with(&good, &[])
            .unwrap()
            .unwrap()
            .into_settings()
            .unwrap();
        assert_eq!(s.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(s.server.heartbeat_timeout, Duration::from_secs(45));
        assert_eq!(s.host.max_connections, 100);
        assert_eq!(s.server.registration, Registration::Closed);
        let admins: Vec<&str> = s.server.admins.iter().map(|a| a.as_str()).collect();
        assert_eq!(admins, ["ops", "root"]);
        let s = parse_with(&good, &["--listen", "127.0.0.1:7001"])
            .unwrap()
            .unwrap()
            .into_settings()
            .unwrap();
        assert_eq!(s.listen, "127.0.0.1:7001".parse().unwrap(), "the flag wins");

        let unknown = file("unknown.toml", "lisen = \"0.0.0.0:7000\"\n");
        let err = parse_with(&unknown, &[]).unwrap_err().to_string();
        assert!(err.contains("`lisen`, which is not a setting"), "{err}");
        let bad = file("bad.toml", "heartbeat-timeout = \"soon\"\n");
        let err = parse_with(&bad, &[]).unwrap().unwrap_err().to_string();
        let named = format!(
            "invalid value 'soon' for heartbeat-timeout in the config file {} (flag \
             --heartbeat-timeout): expected a duration",
            bad.display()
        );
        assert!(err.contains(&named), "{err}");
        let syntax = file("syntax.toml", "listen = \n");
        let err = parse_with(&syntax, &[]).unwrap_err().to_string();
        assert!(err.contains("is not valid TOML"), "{err}");
        let half = file("half.toml", "tls-cert = \"c.pem\"\n");
        let err = parse_with(&half, &[])
            .unwrap()
            .unwrap()
            .into_settings()
            .unwrap_err();
        assert_eq!(err, ConfigError::HalfTls("--tls-cert", "--tls-key"));

        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/breeze.toml");
        let s = parse_with(&example, &[])
            .unwrap()
            .unwrap()
            .into_settings()
            .unwrap();
        assert_eq!(s.listen, "0.0.0.0:7878".parse().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listen_takes_a_host_name_and_says_what_it_expects_otherwise() {
        let s = parse(&["--listen", "localhost:7879"]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7879".parse().unwrap());
        let err = Args::try_parse_from(["breeze-server", "--listen", "no-port-here"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--listen") && err.contains("expected HOST:PORT"),
            "{err}"
        );
    }

    #[test]
    fn cluster_flags_reach_the_settings_with_the_cores_defaults() {
        let pg = ["--store", "postgres://breeze@db/breeze"];
        let mut flags = pg.to_vec();
        flags.extend(["--cluster", "nats://u:pw@nats:4222", "--node-id", "3"]);
        let s = parse(&flags).unwrap();
        let c = s.cluster.clone().expect("a cluster");
        assert_eq!((c.node, s.server.node), (NodeId(3), NodeId(3)));
        assert_eq!(c.name, "breeze");
        assert_eq!(c.nats.as_str(), "nats://u:pw@nats:4222");
        assert_eq!(
            c.nats.to_string(),
            "nats://u:***@nats:4222",
            "logged masked"
        );
        let core = breeze_core::cluster::ClusterConfig::new(0);
        let cfg = c.config();
        assert_eq!(
            (cfg.node_timeout, cfg.heartbeat_every, cfg.fence_margin),
            (core.node_timeout, core.heartbeat_every, core.fence_margin),
            "the flags' defaults are the core's"
        );
        assert!(
            cfg.epoch > 1_700_000_000_000,
            "milliseconds of the wall clock"
        );

        flags.extend(["--cluster-name", "eu-1", "--node-timeout", "1500ms"]);
        flags.extend(["--node-heartbeat", "200ms", "--fence-margin", "600ms"]);
        let c = parse(&flags).unwrap().cluster.unwrap();
        assert_eq!(c.name, "eu-1");
        assert_eq!(
            (c.node_timeout, c.heartbeat_every, c.fence_margin),
            (
                Duration::from_millis(1500),
                Duration::from_millis(200),
                Duration::from_millis(600)
            )
        );
        assert_eq!(parse(&pg).unwrap().cluster, None, "off by default");
    }

    #[test]
    fn cluster_flags_are_refused_in_plain_words() {
        let refused = |flags: &[&str]| parse(flags).unwrap_err();
        let e = refused(&["--cluster", "nats://127.0.0.1:4222", "--node-id", "1"]);
        assert_eq!(e, ConfigError::ClusterNeedsPostgres);
        let text = e.to_string();
        assert!(
            text.contains("--cluster") && text.contains("--store") && text.contains("--db"),
            "{text}"
        );
        let pg = ["--store", "postgres://breeze@db/breeze"];
        let with = |more: &[&'static str]| {
            let mut v = pg.to_vec();
            v.extend_from_slice(more);
            v
        };
        assert_eq!(
            refused(&with(&["--cluster", "nats://n:4222"])),
            ConfigError::ClusterNeedsNodeId
        );
        assert_eq!(
            refused(&with(&["--node-id", "1"])),
            ConfigError::NodeIdWithoutCluster
        );
        let e = refused(&with(&[
            "--cluster",
            "http://u:pw@n:4222",
            "--node-id",
            "1",
        ]));
        assert!(matches!(e, ConfigError::ClusterNotNats(_)), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = refused(&with(&[
            "--cluster",
            "nats://n:4222",
            "--node-id",
            "1",
            "--cluster-name",
            "a.b",
        ]));
        assert_eq!(e, ConfigError::BadClusterName("a.b".into()));
        for (beat, margin, timeout) in [
            ("1s", "1s", "3s"),
            ("500ms", "3s", "3s"),
            ("0s", "1s", "3s"),
        ] {
            let e = refused(&with(&[
                "--cluster",
                "nats://n:4222",
                "--node-id",
                "1",
                "--node-heartbeat",
                beat,
                "--fence-margin",
                margin,
                "--node-timeout",
                timeout,
            ]));
            assert!(matches!(e, ConfigError::ClusterTimings { .. }), "{e}");
            assert!(e.to_string().contains("--fence-margin"), "{e}");
        }
    }

    #[test]
    fn store_takes_a_postgres_url_and_names_the_flag_otherwise() {
        let s = parse(&["--store", "postgres://breeze:secret@db.example:5432/breeze"]).unwrap();
        let DbLocation::Postgres(url) = &s.db else {
            panic!("{:?}", s.db);
        };
        assert_eq!(
            url.as_str(),
            "postgres://breeze:secret@db.example:5432/breeze"
        );
        assert_eq!(
            s.db.to_string(),
            "postgres://breeze:***@db.example:5432/breeze",
            "the password stays out of logs"
        );
        let e = parse(&["--store", "mysql://u:pw@h/db"]).unwrap_err();
        assert!(matches!(e, ConfigError::StoreNotPostgres(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("--store must be a PostgreSQL URL"),
            "{text}"
        );
        assert!(!text.contains("pw"), "{text}");
    }

    #[test]
    fn defaults_are_valid() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.listen, "127.0.0.1:7878".parse().unwrap());
        assert_eq!(
            s.db,
            DbLocation::File(std::env::current_dir().unwrap().join("breeze.db"))
        );
        assert_eq!(s.server.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(s.server.offline_grace, Duration::ZERO);
    }

    #[test]
    fn flags_reach_the_settings() {
        let s = parse(&[
            "--listen",
            "[::1]:9000",
            "--heartbeat-interval",
            "500ms",
            "--heartbeat-timeout",
            "2s",
            "--offline-grace",
            "1m",
            "--duplicate-login",
            "multi",
            "--scope",
            "contacts",
            "--admin",
            "alice,bob",
            "--admin",
            "carol",
            "--synchronous",
            "normal",
            "--argon2-memory-kib",
            "64",
            "--outbound-queue",
            "10",
            "--max-contacts",
            "5000",
        ])
        .unwrap();
        assert!(s.listen.is_ipv6());
        assert_eq!(s.server.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(s.server.offline_grace, Duration::from_secs(60));
        assert_eq!(s.server.duplicate_login, DuplicateLogin::Multi);
        assert_eq!(s.server.scope, WatchScope::Contacts);
        let admins: Vec<&str> = s.server.admins.iter().map(|a| a.as_str()).collect();
        assert_eq!(admins, ["alice", "bob", "carol"]);
        assert_eq!(s.db_options.synchronous, Synchronous::Normal);
        assert_eq!(s.hash_cost.memory_kib, 64);
        assert_eq!(s.host.outbound_queue.frames, 10);
        assert_eq!(s.server.max_contacts, 5000);
    }

    #[test]
    fn work_budgets_and_the_registration_throttle_reach_the_core() {
        assert_eq!(
            parse(&[]).unwrap().server.work,
            ServerConfig::default().work
        );
        let s = parse(&[
            "--max-storage",
            "100",
            "--max-storage-per-connection",
            "10",
            "--max-hashing",
            "8",
            "--max-hashing-per-connection",
            "1",
            "--register-burst",
            "0",
            "--register-every",
            "1m",
        ])
        .unwrap();
        let work = s.server.work;
        assert_eq!((work.storage.total, work.storage.per_conn), (100, 10));
        assert_eq!((work.hashing.total, work.hashing.per_conn), (8, 1));
        assert_eq!(s.server.register_throttle.burst, 0);
        assert_eq!(s.server.register_throttle.every, Duration::from_secs(60));
        assert_eq!(
            parse(&["--max-storage", "0"]).unwrap_err().to_string(),
            "--max-storage must be greater than zero"
        );
    }

    #[test]
    fn a_timeout_not_above_the_interval_is_refused_in_plain_words() {
        let err = parse(&["--heartbeat-interval", "5s", "--heartbeat-timeout", "5s"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--heartbeat-timeout (5s) must be longer than --heartbeat-interval (5s), or every \
             client would time out between two heartbeats"
        );
    }

    #[test]
    fn an_attachment_that_cannot_fit_a_frame_is_refused() {
        let err = parse(&["--max-frame", "1000", "--max-attachment", "2000"]).unwrap_err();
        assert!(matches!(err, ConfigError::FrameTooSmall { .. }), "{err}");
        assert_eq!(
            parse(&["--max-connections", "0"]).unwrap_err().to_string(),
            "--max-connections must be greater than zero"
        );
    }

    #[test]
    fn the_http_listener_is_on_by_default_and_can_be_switched_off() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.http_listen, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(s.allowed_origins.is_empty());
        assert_eq!(parse(&["--http-listen", "off"]).unwrap().http_listen, None);
        let s = parse(&[
            "--http-listen",
            "[::1]:9090",
            "--allowed-origin",
            "https://a.example,http://localhost:8080",
        ])
        .unwrap();
        assert_eq!(s.http_listen, Some("[::1]:9090".parse().unwrap()));
        assert_eq!(
            s.allowed_origins,
            ["https://a.example", "http://localhost:8080"]
        );
        assert!(matches!(
            parse(&["--allowed-origin", "a.example"]),
            Err(ConfigError::BadOrigin(_))
        ));
        assert!(matches!(
            parse(&["--http-listen", "127.0.0.1:7878"]),
            Err(ConfigError::SameAddress(_))
        ));
        let free = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"];
        assert!(parse(&free).is_ok());
        let argv = ["breeze-server", "--http-listen", "nowhere"];
        let err = Args::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("nor `off`"), "{err}");
    }

    #[test]
    fn tls_needs_both_files() {
        assert_eq!(parse(&[]).unwrap().tls, None);
        let s = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        for args in [&["--tls-cert", "c.pem"][..], &["--tls-key", "k.pem"]] {
            let mut argv = vec!["breeze-server"];
            argv.extend_from_slice(args);
            assert!(Args::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn worker_threads_given_replace_the_default() {
        assert_eq!(args(&[]).worker_threads, None);
        assert_eq!(args(&["--worker-threads", "1"]).worker_threads, Some(1));
        assert_eq!(args(&["--worker-threads", "3"]).runtime_threads(), 3);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            args(&[]).runtime_threads(),
            default_worker_threads(cpus, true)
        );
        let pg = ["--store", "postgres://breeze@db/breeze"];
        assert_eq!(args(&pg).runtime_threads(), cpus);
    }

    #[test]
    fn sqlite_leaves_its_writer_a_cpu_and_postgresql_takes_them_all() {
        assert_eq!(default_worker_threads(1, true), 1);
        assert_eq!(default_worker_threads(2, true), 1);
        assert_eq!(default_worker_threads(16, true), 15);
        assert_eq!(default_worker_threads(2, false), 2);
        assert_eq!(default_worker_threads(16, false), 16);
        assert_eq!(default_worker_threads(0, false), 1);
    }

    #[test]
    fn bad_values_are_refused_by_the_parser() {
        for args in [
            &["--heartbeat-interval", "soon"][..],
            &["--admin", "not a name"],
            &["--scope", "world"],
            &["--listen", "localhost"],
            &["--max-contacts", "0"],
            &["--max-contacts", "10001"],
            &["--worker-threads", "0"],
        ] {
            let mut argv = vec!["breeze-server"];
            argv.extend_from_slice(args);
            assert!(Args::try_parse_from(argv).is_err(), "{args:?}");
        }
    }
}
