//! The server a scenario runs against, with its process figures: one process, or a cluster
//! of `--nodes` processes the bench starts against NATS and PostgreSQL.

use crate::net::{Transport, set_transport};
use crate::procfs::Sample;
use crate::server::{ServerProc, Spawn, find_server_bin};
use breeze_testsupport::nats::{Relay, TestNats};
use breeze_testsupport::pg::TestPg;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

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
    /// Start this many `breeze-server` nodes as one cluster instead of one server: NATS from
    /// `BREEZE_TEST_NATS` (default nats://127.0.0.1:4222) under a cluster name of this run's
    /// own, PostgreSQL from `BREEZE_TEST_PG` (default postgres://postgres@127.0.0.1:5432/test)
    /// in a fresh schema dropped at the end. Client `i` connects to node `i mod nodes`.
    #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "addr")]
    pub nodes: usize,
    /// `--node-timeout` of every node (with `--nodes` above 1).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub node_timeout: Duration,
    /// The node (0-based) whose NATS connection goes through a relay the bench can cut
    /// (`node-kill --cut`).
    #[arg(skip)]
    pub relayed_node: Option<usize>,
}

/// One server process this bench starts (again) with the same flags.
#[derive(Debug)]
struct Node {
    spawn: Spawn,
    proc: Option<ServerProc>,
    addr: SocketAddr,
}

/// The server under test.
#[derive(Debug)]
pub struct Target {
    /// The first node's address: where setup registers everyone.
    pub addr: SocketAddr,
    /// `--addr`'s pid, if given.
    pid: Option<u32>,
    /// The processes we start; empty for `--addr`.
    nodes: Vec<Node>,
    dir: Option<tempfile::TempDir>,
    /// The cluster's PostgreSQL schema, dropped with it once the nodes are down.
    schema: Option<TestPg>,
    starts: u32,
    keep: bool,
    /// The relay between `relayed_node` and NATS, and which node it serves.
    relay: Option<(usize, Relay)>,
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
                nodes: Vec::new(),
                dir: None,
                schema: None,
                starts: 0,
                keep: false,
                relay: None,
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
        let count = opts.nodes.max(1);
        let services = if count > 1 {
            let nats = TestNats::reach("breeze-bench --nodes")
                .ok_or("--nodes needs NATS (BREEZE_TEST_NATS)")?;
            let pg = TestPg::create("breeze-bench --nodes")
                .ok_or("--nodes needs PostgreSQL (BREEZE_TEST_PG)")?;
            Some((pg, nats))
        } else {
            None
        };
        let relay = match (&services, opts.relayed_node) {
            (Some((_, nats)), Some(k)) if k < count => {
                let upstream = nats.addr();
                let relay = tokio::runtime::Handle::current().block_on(Relay::start(upstream));
                Some((k, relay))
            }
            (_, Some(k)) => return Err(format!("no node {} to cut on a bus", k + 1)),
            _ => None,
        };
        let nodes = (1..=count)
            .map(|id| {
                let mut args = args.clone();
                if let Some((pg, nats)) = &services {
                    let bus = match &relay {
                        Some((k, relay)) if k + 1 == id => relay.url(),
                        _ => nats.url().to_owned(),
                    };
                    args.extend([
                        format!("--store={}", pg.url()),
                        format!("--cluster={bus}"),
                        format!("--cluster-name={}", nats.cluster()),
                        format!("--node-id={id}"),
                        format!(
                            "--node-timeout={}",
                            humantime::format_duration(opts.node_timeout)
                        ),
                    ]);
                }
                Node {
                    spawn: Spawn {
                        bin: bin.clone(),
                        args,
                    },
                    proc: None,
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                }
            })
            .collect();
        let mut target = Target {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid: None,
            nodes,
            dir: Some(dir),
            schema: services.map(|(pg, _)| pg),
            starts: 0,
            keep: opts.keep_dir,
            relay,
        };
        target.start()?;
        Ok(target)
    }

    pub fn spawned(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// How many nodes serve the clients (1 for a single server, ours or `--addr`).
    pub fn node_count(&self) -> usize {
        self.nodes.len().max(1)
    }

    /// Where client `i` connects: node `i mod nodes`.
    pub fn addr_of(&self, i: usize) -> SocketAddr {
        self.addrs()[i % self.node_count()]
    }

    /// Every node's client address, in node order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        if self.nodes.is_empty() {
            vec![self.addr]
        } else {
            self.nodes.iter().map(|n| n.addr).collect()
        }
    }

    /// The one server process's pid, where there is exactly one: per-thread figures of
    /// one node would pass for the cluster's.
    pub fn pid(&self) -> Option<u32> {
        match self.nodes.as_slice() {
            [] => self.pid,
            [one] => one.proc.as_ref().map(ServerProc::pid),
            _ => None,
        }
    }

    /// CPU time and RSS of each node now (`None` for one we cannot read or that is down).
    pub fn samples(&self) -> Vec<Option<Sample>> {
        if self.nodes.is_empty() {
            return vec![self.pid.and_then(|pid| Sample::take(Some(pid)))];
        }
        self.nodes
            .iter()
            .map(|n| n.proc.as_ref().and_then(|p| Sample::take(Some(p.pid()))))
            .collect()
    }

    /// CPU time and RSS of the server now, summed over the nodes that are up, where we can
    /// read them.
    pub fn sample(&self) -> Option<Sample> {
        let up: Vec<Sample> = self.samples().into_iter().flatten().collect();
        (!up.is_empty()).then(|| Sample {
            cpu_s: up.iter().map(|s| s.cpu_s).sum(),
            rss: up.iter().map(|s| s.rss).sum(),
        })
    }

    /// Starts our server (every node) again, on the same database.
    pub fn start(&mut self) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Err("not our server: cannot start it".into());
        };
        self.starts += 1;
        for (k, node) in self.nodes.iter_mut().enumerate() {
            let log = dir
                .path()
                .join(format!("server-{}-{}.log", k + 1, self.starts));
            let p = ServerProc::start(&node.spawn, &dir.path().join("breeze.db"), &log)
                .map_err(|e| format!("node {}: {e}", k + 1))?;
            node.addr = match crate::net::transport() {
                Transport::Tcp => p.addr,
                Transport::Ws => p
                    .http_addr
                    .ok_or("the server logged no HTTP listener (web=) for --transport ws")?,
            };
            node.proc = Some(p);
        }
        self.addr = self.nodes[0].addr;
        Ok(())
    }

    /// Stops our server (every node) gracefully (SIGTERM).
    pub fn stop(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        for node in &mut self.nodes {
            if let Some(p) = node.proc.take()
                && let Err(e) = p.stop()
            {
                result = Err(e.to_string());
            }
        }
        result
    }

    /// Cuts node `k`'s bus link (0-based; the one `relayed_node` named): from now on nothing
    /// passes either way. Returns the moment just before the cut.
    pub fn cut_node(&mut self, k: usize) -> Result<Instant, String> {
        match &self.relay {
            Some((relayed, relay)) if *relayed == k => {
                let at = Instant::now();
                relay.cut();
                Ok(at)
            }
            _ => Err(format!(
                "node {}'s bus link does not go through a relay",
                k + 1
            )),
        }
    }

    /// SIGKILLs node `k` (0-based): no goodbye to anyone. Returns the moment just before the
    /// signal was sent.
    pub fn kill_node(&mut self, k: usize) -> Result<Instant, String> {
        let node = self
            .nodes
            .get_mut(k)
            .ok_or_else(|| format!("there is no node {}", k + 1))?;
        let p = node
            .proc
            .take()
            .ok_or_else(|| format!("node {} is not running", k + 1))?;
        let at = Instant::now();
        p.kill()
            .map_err(|e| format!("SIGKILL node {}: {e}", k + 1))?;
        Ok(at)
    }

    /// Stops our server and returns the warnings it logged over all its runs.
    pub fn finish(mut self) -> Vec<String> {
        let _ = self.stop();
        let mut warnings = Vec::new();
        if let Some(dir) = self.dir.take() {
            for start in 1..=self.starts {
                for k in 1..=self.nodes.len() {
                    warnings.extend(ServerProc::warnings(
                        &dir.path().join(format!("server-{k}-{start}.log")),
                    ));
                }
            }
            if self.keep {
                eprintln!("kept {}", dir.keep().display());
                if let Some(pg) = &self.schema {
                    eprintln!("PostgreSQL schema {} is dropped all the same", pg.schema());
                }
            }
        }
        // The nodes are down: now their schema may go.
        drop(self.schema.take());
        warnings
    }
}
