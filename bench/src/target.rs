//! The server a scenario runs against, with its process figures.

use crate::net::{Transport, set_transport};
use crate::procfs::Sample;
use crate::server::{ServerProc, Spawn, find_server_bin};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Options every scenario shares about the server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerOpts {
    /// Use the server already listening here instead of starting one. Its CPU and memory are
    /// read only if `--server-pid` is given too; the reconnect storm needs our own server.
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// The pid of the server at `--addr`, to read its CPU time and memory from /proc.
    #[arg(long, value_name = "PID", requires = "addr")]
    pub server_pid: Option<u32>,
    /// The breeze-server binary to start (default: the one next to this executable, i.e.
    /// target/release/breeze-server).
    #[arg(long, value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Argon2 memory cost (KiB) given to the server we start. The bench's default is the
    /// cheapest argon2 allows, so registering 20k users takes seconds: password logins are
    /// then cheap too, which the report says.
    #[arg(long, default_value_t = 8, value_name = "KIB")]
    pub argon2_memory_kib: u32,
    /// Argon2 passes given to the server we start.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub argon2_iterations: u32,
    /// SQLite `synchronous` for the server we start (`full`: a message is fsynced before its
    /// `Sent`).
    #[arg(long, default_value = "full", value_name = "full|normal")]
    pub synchronous: String,
    /// More flags for the server we start (repeat; e.g. `--server-arg=--hash-threads=1`).
    #[arg(long = "server-arg", value_name = "FLAG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// User names are `{prefix}{i}`; change it to reuse an `--addr` server's database.
    #[arg(long, default_value = "u")]
    pub prefix: String,
    /// Keep the temporary directory (database, server log) and print where it is.
    #[arg(long)]
    pub keep_dir: bool,
    /// How the clients connect: `tcp` (length-prefixed frames on --listen) or `ws` (one
    /// frame per WebSocket message on `/ws` of the HTTP listener; `--addr` is then the
    /// HTTP listener's address).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
}

/// The server under test.
#[derive(Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pid: Option<u32>,
    spawn: Option<Spawn>,
    dir: Option<tempfile::TempDir>,
    proc: Option<ServerProc>,
    starts: u32,
    keep: bool,
}

/// Flags of the protocol policy a scenario needs from a server it starts.
#[derive(Debug, Clone)]
pub struct Policy {
    pub scope: &'static str,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub max_connections: usize,
}

impl Target {
    pub fn new(opts: &ServerOpts, policy: &Policy) -> Result<Target, String> {
        set_transport(opts.transport);
        if let Some(addr) = opts.addr {
            return Ok(Target {
                addr,
                pid: opts.server_pid,
                spawn: None,
                dir: None,
                proc: None,
                starts: 0,
                keep: false,
            });
        }
        let bin = find_server_bin(opts.server_bin.clone()).map_err(|e| e.to_string())?;
        let mut args: Vec<String> = vec![
            format!("--scope={}", policy.scope),
            format!(
                "--heartbeat-interval={}",
                humantime::format_duration(policy.heartbeat_interval)
            ),
            format!(
                "--heartbeat-timeout={}",
                humantime::format_duration(policy.heartbeat_timeout)
            ),
            format!("--max-connections={}", policy.max_connections),
            format!("--argon2-memory-kib={}", opts.argon2_memory_kib),
            format!("--argon2-iterations={}", opts.argon2_iterations),
            format!("--synchronous={}", opts.synchronous),
            // Setup pipelines `REGISTER_CHUNK` registrations on each of `SETUP_CONNECTIONS`
            // connections at once (then logs 128 users in at once), and `--rate max` keeps a
            // window of sends per client: the bench measures throughput, so the server's
            // abuse limits must not be what it hits.
            "--register-burst=0".to_owned(),
            format!(
                "--max-hashing-per-connection={}",
                crate::pop::REGISTER_CHUNK
            ),
            format!(
                "--max-hashing={}",
                crate::pop::REGISTER_CHUNK * crate::pop::SETUP_CONNECTIONS
            ),
            "--max-storage-per-connection=4096".to_owned(),
            "--max-storage=65536".to_owned(),
            // A free port, never the default 8080 a developer's own server may hold.
            "--http-listen=127.0.0.1:0".to_owned(),
        ];
        args.extend(opts.server_args.iter().cloned());
        let dir = tempfile::Builder::new()
            .prefix("breeze-bench-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let mut target = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: None,
            spawn: Some(Spawn { bin, args }),
            dir: Some(dir),
            proc: None,
            starts: 0,
            keep: opts.keep_dir,
        };
        target.start()?;
        Ok(target)
    }

    pub fn spawned(&self) -> bool {
        self.spawn.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// CPU time and RSS of the server now, where we can read them.
    pub fn sample(&self) -> Option<Sample> {
        self.pid.and_then(|pid| Sample::take(Some(pid)))
    }

    /// Starts our server (again), on the same database.
    pub fn start(&mut self) -> Result<(), String> {
        let (Some(spawn), Some(dir)) = (&self.spawn, &self.dir) else {
            return Err("not our server: cannot start it".into());
        };
        self.starts += 1;
        let log = dir.path().join(format!("server-{}.log", self.starts));
        let p = ServerProc::start(spawn, &dir.path().join("breeze.db"), &log)
            .map_err(|e| e.to_string())?;
        self.addr = match crate::net::transport() {
            Transport::Tcp => p.addr,
            Transport::Ws => p
                .http_addr
                .ok_or("the server logged no HTTP listener (web=) for --transport ws")?,
        };
        self.pid = Some(p.pid());
        self.proc = Some(p);
        Ok(())
    }

    /// Stops our server gracefully (SIGTERM).
    pub fn stop(&mut self) -> Result<(), String> {
        self.pid = None;
        match self.proc.take() {
            Some(p) => p.stop().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Stops our server and returns the warnings it logged over all its runs.
    pub fn finish(mut self) -> Vec<String> {
        let _ = self.stop();
        let mut warnings = Vec::new();
        if let Some(dir) = self.dir.take() {
            for k in 1..=self.starts {
                warnings.extend(ServerProc::warnings(
                    &dir.path().join(format!("server-{k}.log")),
                ));
            }
            if self.keep {
                eprintln!("kept {}", dir.keep().display());
            }
        }
        warnings
    }
}
