//! The cluster driver: several real server hosts sharing one database and a bus model, and
//! real clients moving between them, run by a plan and checked by the cluster oracle.
//!
//! Node `i` is turmoil host `n{i}`: a real `Host` over the real core with `NodeId(i)`,
//! joined to the [`Bus`] with `Host::join_cluster`, storing through `SimStorage` into the one
//! `Db` every node shares (as PostgreSQL is shared in production), under an epoch that grows
//! with each start. Client `h` is turmoil host `c{h}`: the real `run_client` as user `u{h}`,
//! with the node list in `ClientSettings` starting at node `h % nodes`, so that a client whose
//! node dies or fences itself comes back through the next one.
//!
//! A run: the schedule; the heal (links healed, nodes restarted, the bus lossless) and the
//! settle time, after which every view must be the truth; the final round (every crashed
//! client restarted and every logged-out one started), settle, the same check, and then
//! every acknowledged message must have been delivered.

use crate::bus::{Bus, BusStats};
use crate::cluster_net::NodeListener;
use crate::cluster_oracle::{self, ClusterOracle, ClusterStats, SharedClusterOracle};
use crate::cluster_plan::{ClusterAction, ClusterPlan, ClusterSimConfig};
use crate::harness::{PASSWORD, everyone_in_a_room, host_config, new_store};
use crate::net::{PORT, SimConnector};
use crate::oracle::{now, user_name};
use crate::storage::{SharedStore, SimStorage};
use breeze_core::client::{Client, ClientConfig, Mode};
use breeze_core::cluster::ClusterConfig;
use breeze_core::server::Server;
use breeze_core::{NodeId, ServerConfig};
use breeze_transport_tokio::{
    ClientCommand, ClientSettings, Clock, Host, RoomCommand, result_channel, run_client,
};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// What a cluster run found.
#[derive(Debug, Clone)]
pub struct ClusterOutcome {
    pub seed: u64,
    pub violations: Vec<String>,
    pub trace_hash: u64,
    pub tail: Vec<String>,
    pub stats: ClusterStats,
    pub bus: BusStats,
    pub simulated: Duration,
}

impl ClusterOutcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// A message id the client has not reported yet.
struct PendingId {
    k: u64,
    host: usize,
    incarnation: u32,
    id: oneshot::Receiver<u64>,
}

/// The driver's handle on one client host.
type Slot = Rc<RefCell<Option<mpsc::Sender<ClientCommand>>>>;

/// A cluster simulation in progress.
pub struct ClusterHarness {
    sim: turmoil::Sim<'static>,
    pub oracle: SharedClusterOracle,
    pub cfg: ClusterSimConfig,
    bus: Bus,
    slots: Vec<Slot>,
    pending_ids: Vec<PendingId>,
    next_message: u64,
    /// The room every user is a member of.
    room: u64,
    down: Vec<bool>,
    /// Nodes lost for good: never restarted.
    lost: Vec<bool>,
    failed: bool,
}

impl std::fmt::Debug for ClusterHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHarness")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn node_name(n: usize) -> String {
    format!("n{n}")
}

fn client_name(h: usize) -> String {
    format!("c{h}")
}

fn server_config(cfg: &ClusterSimConfig, node: usize) -> ServerConfig {
    ServerConfig {
        node: NodeId(node as u32),
        heartbeat_interval: cfg.heartbeat_interval,
        heartbeat_timeout: cfg.heartbeat_timeout,
        handshake_timeout: cfg.handshake_timeout,
        offline_grace: Duration::ZERO,
        ..ServerConfig::default()
    }
}

fn cluster_config(cfg: &ClusterSimConfig, epoch: u64) -> ClusterConfig {
    ClusterConfig {
        epoch,
        node_timeout: cfg.node_timeout,
        heartbeat_every: cfg.node_heartbeat,
        fence_margin: cfg.fence_margin,
        // Small enough that every snapshot of more than a user or two comes in parts, some
        // of which the bus's losses and cuts then take away.
        snapshot_part_bytes: 128,
    }
}

impl ClusterHarness {
    pub fn new(cfg: ClusterSimConfig) -> ClusterHarness {
        let oracle: SharedClusterOracle = Arc::new(Mutex::new(ClusterOracle::new(&cfg)));
        let store = new_store(cfg.users, cfg.seed);
        let room = everyone_in_a_room(&store, cfg.users);
        let bus = Bus::new(cfg.nodes, cfg.seed, cfg.bus_delay, cfg.max_link_lag);
        let mut sim = turmoil::Builder::new()
            .epoch(UNIX_EPOCH)
            .rng_seed(cfg.seed)
            .tick_duration(cfg.tick)
            .simulation_duration(Duration::from_secs(24 * 3600))
            .min_message_latency(cfg.min_latency)
            .max_message_latency(cfg.max_latency)
            .tcp_capacity(1 << 16)
            .build();
        // Epochs grow with every start of a node, as a start time or a database counter would.
        let epochs = Arc::new(Mutex::new(vec![0u64; cfg.nodes]));
        for n in 0..cfg.nodes {
            let (oracle, store, bus, epochs, cfg2) = (
                oracle.clone(),
                store.clone(),
                bus.clone(),
                epochs.clone(),
                cfg.clone(),
            );
            sim.host(node_name(n).as_str(), move || {
                node_host(
                    n,
                    cfg2.clone(),
                    oracle.clone(),
                    store.clone(),
                    bus.clone(),
                    epochs.clone(),
                )
            });
        }
        let addrs: Vec<SocketAddr> = (0..cfg.nodes)
            .map(|n| SocketAddr::new(sim.lookup(node_name(n).as_str()), PORT))
            .collect();
        let mut slots = Vec::new();
        for h in 0..cfg.users {
            let slot: Slot = Rc::default();
            let (oracle, slot2, cfg2) = (oracle.clone(), slot.clone(), cfg.clone());
            let mut settings = ClientSettings::new(addrs[h % cfg.nodes]);
            settings.fallbacks = (1..cfg.nodes).map(|i| addrs[(h + i) % cfg.nodes]).collect();
            settings.connect_timeout = cfg.connect_timeout;
            settings.close_timeout = Duration::from_millis(500);
            sim.host(client_name(h).as_str(), move || {
                let (oracle, slot, cfg, settings) = (
                    oracle.clone(),
                    slot2.clone(),
                    cfg2.clone(),
                    settings.clone(),
                );
                async move {
                    client_host(h, cfg, settings, oracle, slot).await;
                    Ok(())
                }
            });
            slots.push(slot);
        }
        ClusterHarness {
            sim,
            oracle,
            down: vec![false; cfg.nodes],
            lost: vec![false; cfg.nodes],
            cfg,
            bus,
            slots,
            pending_ids: Vec::new(),
            next_message: 0,
            room,
            failed: false,
        }
    }

    fn oracle(&self) -> std::sync::MutexGuard<'_, ClusterOracle> {
        cluster_oracle::lock(&self.oracle)
    }

    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Runs the simulation until `until`, checking after every tick.
    pub fn run_until(&mut self, until: Duration) {
        while !self.failed && self.sim.elapsed() < until {
            if let Err(e) = self.sim.step() {
                let at = self.sim.elapsed();
                self.oracle()
                    .violation(at, format!("the simulation failed: {e}"));
                self.failed = true;
                return;
            }
            self.resolve_ids();
            let t = self.sim.elapsed();
            let mut oracle = cluster_oracle::lock(&self.oracle);
            for n in 0..self.cfg.nodes {
                if self.bus.is_cut(n)
                    && let Some(heard) = self.bus.last_heard_at_best(n)
                {
                    oracle.check_declarable(t, n, heard + self.cfg.node_timeout);
                }
            }
            oracle.check_now(t);
        }
    }

    fn resolve_ids(&mut self) {
        let oracle = self.oracle.clone();
        self.pending_ids.retain_mut(|p| match p.id.try_recv() {
            Ok(id) => {
                cluster_oracle::lock(&oracle).message_id(p.host, p.incarnation, id, p.k);
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
    }

    fn command(&self, h: usize, cmd: ClientCommand) -> bool {
        let alive = self.oracle().client_alive(h);
        alive
            && self.slots[h]
                .borrow()
                .as_ref()
                .is_some_and(|tx| tx.try_send(cmd).is_ok())
    }

    /// Performs one action now.
    pub fn perform(&mut self, action: &ClusterAction) {
        let t = self.sim.elapsed();
        self.oracle().trace(t, format_args!("driver: {action:?}"));
        match *action {
            ClusterAction::Send(h, to) => {
                let k = self.next_message;
                let (tx, rx) = oneshot::channel();
                let cmd = ClientCommand::SendMessage {
                    to: user_name(to),
                    body: format!("m{k}"),
                    attachment: None,
                    id: Some(tx),
                };
                if self.command(h, cmd) {
                    self.next_message += 1;
                    let incarnation = self.oracle().client_incarnation(h);
                    self.oracle().message_sent(k, h, to);
                    self.pending_ids.push(PendingId {
                        k,
                        host: h,
                        incarnation,
                        id: rx,
                    });
                }
            }
            ClusterAction::RoomSend(h) => {
                let k = self.next_message;
                let (tx, rx) = oneshot::channel();
                let cmd = ClientCommand::Room(RoomCommand::Send {
                    room: self.room,
                    body: format!("r{k}"),
                    id: Some(tx),
                });
                if self.command(h, cmd) {
                    self.next_message += 1;
                    let incarnation = self.oracle().client_incarnation(h);
                    self.oracle().room_message_sent(k, h);
                    self.pending_ids.push(PendingId {
                        k,
                        host: h,
                        incarnation,
                        id: rx,
                    });
                }
            }
            ClusterAction::Logout(h) => {
                if self.command(h, ClientCommand::Logout) {
                    self.oracle().set_logged_out(h, true);
                }
            }
            ClusterAction::Start(h) => {
                if self.command(h, ClientCommand::Start) {
                    self.oracle().set_logged_out(h, false);
                }
            }
            ClusterAction::CrashClient(h) => self.crash_client(h, t),
            ClusterAction::RestartClient(h) => {
                if !self.oracle().client_alive(h) {
                    self.oracle().client_restarting(h);
                    self.sim.bounce(client_name(h).as_str());
                }
            }
            ClusterAction::BounceClient(h) => {
                if self.oracle().client_alive(h) {
                    *self.slots[h].borrow_mut() = None;
                    let mut oracle = self.oracle();
                    oracle.client_crashed(h, t);
                    oracle.client_restarting(h);
                    drop(oracle);
                    self.sim.bounce(client_name(h).as_str());
                }
            }
            ClusterAction::CrashNode(n, with_clients) => {
                if !self.down[n] {
                    let served = self.oracle().clients_on(n);
                    self.down[n] = true;
                    self.oracle().node_crashed(n, t);
                    self.bus.detach(n);
                    self.sim.crash(node_name(n).as_str());
                    if with_clients {
                        for &h in &served {
                            self.crash_client(h, t);
                        }
                        self.oracle().orphaned(n, t, served);
                    }
                }
            }
            ClusterAction::KillNode(n) => {
                self.perform(&ClusterAction::CrashNode(n, true));
                self.lost[n] = true;
            }
            ClusterAction::RestartNode(n) => {
                if self.down[n] && !self.lost[n] {
                    self.down[n] = false;
                    self.sim.bounce(node_name(n).as_str());
                }
            }
            ClusterAction::Cut(n) => {
                if !self.bus.is_cut(n) {
                    let noticed = self.bus.cut(n, t);
                    self.oracle().node_cut(n, t, noticed);
                }
            }
            ClusterAction::Heal(n) => {
                if self.bus.is_cut(n) {
                    self.bus.heal(n, t);
                    self.oracle().node_healed(n, t);
                }
            }
            ClusterAction::Loss(percent) => self.bus.set_loss(percent),
        }
    }

    fn crash_client(&mut self, h: usize, t: Duration) {
        if self.oracle().client_alive(h) {
            *self.slots[h].borrow_mut() = None;
            self.oracle().client_crashed(h, t);
            self.sim.crash(client_name(h).as_str());
        }
    }

    /// Heals every link, restarts every node not lost for good, and makes the bus lossless.
    pub fn heal(&mut self) {
        self.perform(&ClusterAction::Loss(0));
        for n in 0..self.cfg.nodes {
            self.perform(&ClusterAction::Heal(n));
            self.perform(&ClusterAction::RestartNode(n));
        }
    }

    /// Brings every client back: crashed ones restarted, logged-out ones started.
    pub fn everyone_back(&mut self) {
        for h in 0..self.cfg.users {
            self.perform(&ClusterAction::RestartClient(h));
            self.perform(&ClusterAction::Start(h));
        }
    }

    /// Runs the whole plan: schedule, heal, settle, check; final round, settle, check.
    pub fn run_plan(&mut self, plan: &ClusterPlan) {
        for (at, action) in &plan.actions {
            self.run_until(*at);
            self.perform(action);
        }
        let end = self.cfg.schedule_end;
        self.run_until(end);
        self.heal();
        let settled = end + self.cfg.settle();
        self.run_until(settled);
        self.oracle().check_converged(settled, "after the heal");
        self.everyone_back();
        let settled = self.elapsed() + self.cfg.settle();
        self.run_until(settled);
        let mut oracle = self.oracle();
        oracle.check_converged(settled, "with everyone back");
        oracle.check_messages(settled);
    }

    pub fn outcome(&self) -> ClusterOutcome {
        let oracle = self.oracle();
        ClusterOutcome {
            seed: self.cfg.seed,
            violations: oracle.violations().to_vec(),
            trace_hash: oracle.trace_hash(),
            tail: oracle.tail(),
            stats: oracle.stats,
            bus: self.bus.stats(),
            simulated: self.sim.elapsed(),
        }
    }
}

/// One node's software: a fresh process, under a higher epoch, each time the host starts.
async fn node_host(
    n: usize,
    cfg: ClusterSimConfig,
    oracle: SharedClusterOracle,
    store: SharedStore,
    bus: Bus,
    epochs: Arc<Mutex<Vec<u64>>>,
) -> turmoil::Result {
    let epoch = {
        let mut epochs = epochs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        epochs[n] += 1;
        epochs[n]
    };
    let server_cfg = server_config(&cfg, n);
    let users = store.lock().users()?;
    let listener = NodeListener::bind(n, oracle.clone()).await?;
    let (results, receiver) = result_channel(&server_cfg);
    let (backend, late_results) = SimStorage::new(store, results, None);
    tokio::spawn(late_results);
    let clock = Clock::start();
    let server = Server::new(server_cfg, users);
    let (mut host, _handle) = Host::new(server, listener, backend, receiver, clock, host_config())?;
    let (publisher, inbox, deliveries) = bus.attach(n);
    tokio::spawn(deliveries);
    host.join_cluster(cluster_config(&cfg, epoch), publisher, inbox);
    cluster_oracle::lock(&oracle).node_started(n, epoch, bus.is_cut(n), now());
    // The handle stays alive while the host runs: dropping every handle shuts it down.
    host.run().await;
    Ok(())
}

/// One client host's software: a fresh client each time the host (re)starts.
async fn client_host(
    h: usize,
    cfg: ClusterSimConfig,
    settings: ClientSettings,
    oracle: SharedClusterOracle,
    slot: Slot,
) {
    let incarnation = cluster_oracle::lock(&oracle).client_started(h, now());
    let (commands, command_rx) = mpsc::channel(1024);
    let (event_tx, mut events) = mpsc::channel(1024);
    *slot.borrow_mut() = Some(commands);
    let clock = Clock::start();
    let mix = cfg.seed ^ ((h as u64 + 1) << 48) ^ (u64::from(incarnation) << 32);
    let client_cfg = ClientConfig {
        mode: Mode::Login,
        seed: breeze_core::rng::SplitMix64::new(mix).next_u64(),
        // Unique per host and incarnation: the server dedupes by (sender, id).
        id_base: ((h as u64 + 1) << 40) | (u64::from(incarnation) << 28),
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
        connect_timeout: cfg.connect_timeout,
        ..ClientConfig::new(user_name(h), PASSWORD)
    };
    let client = Client::new(client_cfg, clock.now());
    let run = run_client(client, clock, SimConnector, settings, command_rx, event_tx);
    let pump = async {
        while let Some(ev) = events.recv().await {
            cluster_oracle::lock(&oracle).client_event(h, incarnation, now(), ev);
        }
    };
    let _ = tokio::join!(run, pump);
}

/// Runs one plan from start to end.
pub fn run_cluster(plan: &ClusterPlan) -> ClusterOutcome {
    let mut harness = ClusterHarness::new(plan.cfg.clone());
    harness.run_plan(plan);
    harness.outcome()
}

/// Runs the random cluster plan of `seed`.
pub fn run_cluster_seed(seed: u64) -> ClusterOutcome {
    run_cluster(&crate::cluster_plan::random(seed))
}

/// The command that replays one cluster seed, on one line, with the commit it ran at.
pub fn cluster_replay_command(seed: u64) -> String {
    format!(
        "SIM_CLUSTER_SEED={seed} cargo test -p breeze-sim-tests --release --test cluster -- cluster_seeds --nocapture  # at commit {}",
        crate::runner::commit()
    )
}

impl crate::runner::SeedRun for ClusterOutcome {
    fn seed(&self) -> u64 {
        self.seed
    }

    fn passed(&self) -> bool {
        ClusterOutcome::passed(self)
    }

    fn simulated(&self) -> Duration {
        self.simulated
    }

    fn describe(&self) -> String {
        let mut text = format!(
            "cluster seed {} failed with {} violation(s):\n",
            self.seed,
            self.violations.len()
        );
        for v in self.violations.iter().take(20) {
            text.push_str(&format!("  {v}\n"));
        }
        text.push_str("last events:\n");
        for line in &self.tail {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str(&format!(
            "replay: {}\n  (SIM_TRACE=1 prints every event)\n",
            cluster_replay_command(self.seed)
        ));
        text
    }
}
