//! The driver: builds the turmoil world, runs a plan on it and asks the oracle.
//!
//! One server host runs the real `breeze_transport_tokio::Host` over `SimListener` and the
//! simulation's store (`SimStorage`); each client host runs the real `run_client` over `SimConnector`. The driver
//! steps the simulation one tick at a time, performs the plan's actions between ticks, and
//! after each tick lets the oracle check what it has seen.
//!
//! A run has three parts: the schedule (faults and traffic), the heal (every link repaired
//! and released, the server up) followed by the settle time, after which every view must be
//! the truth; then the final round (every crashed client restarted, every logged-out one
//! started, contact changes whose fate a crash or a storage failure made unknown made again,
//! and every client a storage failure left with work for its next login logged in again),
//! after which every acknowledged message must have been delivered.

use crate::net::{PORT, SimConnector, SimListener};
use crate::oracle::{self, Oracle, Shared, now, user_name};
use crate::plan::{Action, Plan, SimConfig, profile_name};
use crate::storage::{SharedStore, SimStorage, StorageFaults};
use breeze_core::client::{Client, ClientConfig, Mode};
use breeze_core::message::RoomRole;
use breeze_core::message::{ProfileCard, Status};
use breeze_core::server::Server;
use breeze_core::storage::RoomChange;
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_core::{RequestId, ServerConfig};
use breeze_store::{Db, DbOptions, HashCost, Hasher};
use breeze_transport_tokio::{
    ClientCommand, ClientSettings, Clock, Host, HostConfig, QueueLimits, RoomCommand,
    result_channel, run_client,
};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

pub const PASSWORD: &str = "correct horse battery";

/// What a run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub violations: Vec<String>,
    /// The fingerprint of the event log.
    pub trace_hash: u64,
    /// The last lines of the event log, for a failure report.
    pub tail: Vec<String>,
    pub stats: oracle::Stats,
    pub simulated: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The driver's handle on one client host.
#[derive(Default)]
struct Slot {
    commands: Option<mpsc::Sender<ClientCommand>>,
}

/// A message id the client has not reported yet.
struct PendingId {
    k: u64,
    host: usize,
    incarnation: u32,
    id: oneshot::Receiver<u64>,
}

/// A simulation in progress.
pub struct Harness {
    sim: turmoil::Sim<'static>,
    pub oracle: Shared,
    pub cfg: SimConfig,
    store: SharedStore,
    slots: Vec<Rc<RefCell<Slot>>>,
    names: Vec<String>,
    pending_ids: Vec<PendingId>,
    next_message: u64,
    /// The room every user is a member of (`everyone_in_a_room`).
    room: u64,
    server_down: bool,
    partitioned: Vec<bool>,
    held: Vec<bool>,
    failed: Option<String>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn server_config(cfg: &SimConfig) -> ServerConfig {
    ServerConfig {
        heartbeat_interval: cfg.heartbeat_interval,
        heartbeat_timeout: cfg.heartbeat_timeout,
        handshake_timeout: cfg.handshake_timeout,
        offline_grace: cfg.offline_grace,
        duplicate_login: cfg.duplicate_login,
        scope: cfg.scope,
        ..ServerConfig::default()
    }
}

pub(crate) fn host_config() -> HostConfig {
    HostConfig {
        max_connections: 1000,
        outbound_queue: QueueLimits {
            frames: 4096,
            bytes: 4 * 1024 * 1024,
        },
        close_timeout: Duration::from_millis(500),
        linger: Duration::from_millis(200),
        bye_timeout: Duration::from_millis(200),
        shutdown_grace: Duration::from_millis(500),
        ..HostConfig::default()
    }
}

/// One room, owned by `u0`, with every user in it, stored before the server starts: every
/// login reads it, and every message to it is owed to everyone.
pub(crate) fn everyone_in_a_room(store: &SharedStore, users: usize) -> u64 {
    let id = |n: usize| RequestId(u64::MAX - n as u64);
    let op = StorageOp::CreateRoom {
        owner: user_name(0),
        name: "everyone".into(),
        max_rooms: 1,
    };
    let room = match store.apply(id(0), op) {
        StorageResult::RoomCreated(Ok(view)) => view.room,
        other => panic!("creating the room: {other:?}"),
    };
    for u in 1..users {
        let op = StorageOp::ChangeRoom {
            by: user_name(0),
            room,
            user: user_name(u),
            change: RoomChange::Add(RoomRole::Member),
            max_members: users as u32,
            max_rooms: 1,
        };
        let result = store.apply(id(u), op);
        assert!(
            matches!(result, StorageResult::RoomChanged(Ok(_))),
            "adding u{u} to the room: {result:?}"
        );
    }
    room
}

/// A fresh store with users `u0 .. u{users - 1}` registered.
pub(crate) fn new_store(users: usize, seed: u64) -> SharedStore {
    let hasher = Hasher::seeded_for_simulation(HashCost::fast_for_tests(), seed)
        .expect("a hasher for the simulation");
    // With `prev`, as PostgreSQL reports it: the cluster simulation's nodes push by it.
    let opts = DbOptions {
        report_prev: true,
        ..DbOptions::default()
    };
    let mut db = Db::open_in_memory(&opts).expect("an in-memory database");
    for u in 0..users {
        let op = StorageOp::Register {
            user: user_name(u),
            password: PASSWORD.to_string(),
        };
        let result = db.apply(RequestId(u as u64), op, 0, &hasher);
        assert_eq!(
            result,
            StorageResult::Registered(Ok(())),
            "registering u{u}"
        );
    }
    SharedStore::new(db, hasher, seed)
}

impl Harness {
    pub fn new(cfg: SimConfig) -> Harness {
        let oracle: Shared = Arc::new(Mutex::new(Oracle::new(&cfg)));
        let store = new_store(cfg.users, cfg.seed);
        let room = everyone_in_a_room(&store, cfg.users);
        let mut sim = turmoil::Builder::new()
            .epoch(UNIX_EPOCH)
            .rng_seed(cfg.seed)
            .tick_duration(cfg.tick)
            .simulation_duration(Duration::from_secs(24 * 3600))
            .min_message_latency(cfg.min_latency)
            .max_message_latency(cfg.max_latency)
            // Plenty of room: a held link must not block writers, and the server's accept
            // queue must take a storm of held SYNs.
            .tcp_capacity(1 << 16)
            .build();

        {
            let (oracle, store) = (oracle.clone(), store.clone());
            let server_cfg = server_config(&cfg);
            sim.host("server", move || {
                let (oracle, store, server_cfg) =
                    (oracle.clone(), store.clone(), server_cfg.clone());
                async move {
                    let users = store.lock().users()?;
                    let listener = SimListener::bind(oracle.clone()).await?;
                    let (results, receiver) = result_channel(&server_cfg);
                    let (backend, late_results) =
                        SimStorage::new(store, results, Some(oracle.clone()));
                    tokio::spawn(late_results);
                    let clock = Clock::start();
                    let server = Server::new(server_cfg, users);
                    let (host, _handle) =
                        Host::new(server, listener, backend, receiver, clock, host_config())?;
                    oracle::lock(&oracle).server_started(now());
                    // The handle stays alive for as long as the host runs: dropping every
                    // handle would shut the host down.
                    host.run().await;
                    Ok(())
                }
            });
        }
        let server_addr = SocketAddr::new(sim.lookup("server"), PORT);

        let mut slots = Vec::new();
        let mut names = Vec::new();
        for (host, &user) in cfg.devices.iter().enumerate() {
            let slot = Rc::new(RefCell::new(Slot::default()));
            let name = format!("c{host}");
            let (oracle, slot2, cfg2) = (oracle.clone(), slot.clone(), cfg.clone());
            sim.host(name.as_str(), move || {
                let (oracle, slot, cfg) = (oracle.clone(), slot2.clone(), cfg2.clone());
                async move {
                    client_host(host, user, cfg, server_addr, oracle, slot).await;
                    Ok(())
                }
            });
            slots.push(slot);
            names.push(name);
        }
        let hosts = cfg.clients();
        Harness {
            sim,
            oracle,
            cfg,
            store,
            slots,
            names,
            pending_ids: Vec::new(),
            next_message: 0,
            room,
            server_down: false,
            partitioned: vec![false; hosts],
            held: vec![false; hosts],
            failed: None,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    fn oracle(&self) -> std::sync::MutexGuard<'_, Oracle> {
        oracle::lock(&self.oracle)
    }

    /// Runs the simulation until `until`, checking after every tick.
    pub fn run_until(&mut self, until: Duration) {
        while self.failed.is_none() && self.sim.elapsed() < until {
            self.step();
        }
    }

    fn step(&mut self) {
        if let Err(e) = self.sim.step() {
            let at = self.sim.elapsed();
            let what = format!("the simulation failed: {e}");
            self.oracle().violation(at, what.clone());
            self.failed = Some(what);
            return;
        }
        self.resolve_ids();
        let t = self.sim.elapsed();
        self.oracle().check_now(t);
    }

    fn resolve_ids(&mut self) {
        let oracle = self.oracle.clone();
        self.pending_ids.retain_mut(|p| match p.id.try_recv() {
            Ok(id) => {
                oracle::lock(&oracle).message_id(p.host, p.incarnation, id, p.k);
                false
            }
            Err(oneshot::error::TryRecvError::Empty) => true,
            // The client died before it took the message: it was never sent.
            Err(oneshot::error::TryRecvError::Closed) => false,
        });
    }

    fn command(&mut self, host: usize, cmd: ClientCommand) -> bool {
        let slot = self.slots[host].borrow();
        let Some(tx) = &slot.commands else {
            return false;
        };
        tx.try_send(cmd).is_ok()
    }

    fn running(&self, host: usize) -> bool {
        self.oracle().host_running(host) && self.oracle().intents[host].alive
    }

    /// Performs one action now.
    pub fn perform(&mut self, action: &Action) {
        let t = self.sim.elapsed();
        self.oracle().trace(t, format_args!("driver: {action:?}"));
        match *action {
            Action::SetStatus(h, status) => {
                if self.running(h) && self.command(h, ClientCommand::SetStatus(status)) {
                    self.oracle().intents[h].status = status;
                }
            }
            Action::Contact(h, u, add) => {
                let cmd = if add {
                    ClientCommand::AddContact(user_name(u))
                } else {
                    ClientCommand::RemoveContact(user_name(u))
                };
                if self.running(h) && self.command(h, cmd) {
                    let mut oracle = self.oracle();
                    let intent = &mut oracle.intents[h];
                    if add {
                        intent.contacts.insert(u);
                    } else {
                        intent.contacts.remove(&u);
                    }
                    intent.pending.insert(u, add);
                    intent.uncertain.remove(&u);
                    // Sent at once when logged in; otherwise queued for the next login.
                    if oracle.host_logged_in(h) {
                        oracle.intents[h].in_flight.push_back(u);
                    }
                }
            }
            Action::Send(h, to) => {
                if !self.running(h) {
                    return;
                }
                let k = self.next_message;
                self.next_message += 1;
                let (tx, rx) = oneshot::channel();
                let cmd = ClientCommand::SendMessage {
                    to: user_name(to),
                    body: format!("m{k}"),
                    attachment: None,
                    id: Some(tx),
                };
                if self.command(h, cmd) {
                    let incarnation = self.oracle().host_incarnation(h);
                    self.oracle().message_sent(k, h, to);
                    self.pending_ids.push(PendingId {
                        k,
                        host: h,
                        incarnation,
                        id: rx,
                    });
                }
            }
            Action::RoomSend(h) => {
                if !self.running(h) {
                    return;
                }
                let k = self.next_message;
                self.next_message += 1;
                let (tx, rx) = oneshot::channel();
                let cmd = ClientCommand::Room(RoomCommand::Send {
                    room: self.room,
                    body: format!("r{k}"),
                    id: Some(tx),
                });
                if self.command(h, cmd) {
                    let incarnation = self.oracle().host_incarnation(h);
                    self.oracle().room_message_sent(k, h);
                    self.pending_ids.push(PendingId {
                        k,
                        host: h,
                        incarnation,
                        id: rx,
                    });
                }
            }
            Action::Logout(h) => {
                if self.running(h) && self.command(h, ClientCommand::Logout) {
                    self.oracle().intents[h].logged_out = true;
                }
            }
            Action::Start(h) => {
                if self.running(h) && self.command(h, ClientCommand::Start) {
                    self.oracle().intents[h].logged_out = false;
                }
            }
            Action::Partition(h) => {
                self.sim.partition("server", self.names[h].as_str());
                self.partitioned[h] = true;
            }
            Action::Repair(h) => {
                self.sim.repair("server", self.names[h].as_str());
                self.partitioned[h] = false;
            }
            Action::Hold(h) => {
                self.sim.hold("server", self.names[h].as_str());
                self.held[h] = true;
            }
            Action::Release(h) => {
                self.sim.release("server", self.names[h].as_str());
                self.held[h] = false;
            }
            Action::CrashClient(h) => {
                if !self.oracle().intents[h].alive {
                    return;
                }
                self.crash_client(h, t);
                self.sim.crash(self.names[h].as_str());
            }
            Action::RestartClient(h) => {
                if self.oracle().intents[h].alive {
                    return;
                }
                self.restart_client(h);
                self.sim.bounce(self.names[h].as_str());
            }
            Action::BounceClient(h) => {
                if !self.oracle().intents[h].alive {
                    return;
                }
                self.crash_client(h, t);
                self.restart_client(h);
                self.sim.bounce(self.names[h].as_str());
            }
            Action::CrashServer => {
                if self.server_down {
                    return;
                }
                self.server_down = true;
                self.oracle().server_crashed(t);
                self.sim.crash("server");
            }
            Action::RestartServer => {
                if !self.server_down {
                    return;
                }
                self.server_down = false;
                self.sim.bounce("server");
            }
            Action::Storage(faults) => self.store.set_faults(faults),
            Action::SetProfile(h, k) => {
                if self.running(h) {
                    self.command(
                        h,
                        ClientCommand::SetProfile {
                            display_name: profile_name(k),
                            signature: String::new(),
                        },
                    );
                }
            }
        }
    }

    fn crash_client(&mut self, h: usize, t: Duration) {
        self.slots[h].borrow_mut().commands = None;
        let mut oracle = self.oracle();
        oracle.client_crashed(h, t);
        let intent = &mut oracle.intents[h];
        intent.alive = false;
        // Unconfirmed contact changes died with the client: stored or not, nobody knows.
        let pending = std::mem::take(&mut intent.pending);
        intent.uncertain.extend(pending.into_keys());
        intent.in_flight.clear();
    }

    fn restart_client(&mut self, h: usize) {
        let mut oracle = self.oracle();
        let intent = &mut oracle.intents[h];
        intent.alive = true;
        intent.logged_out = false;
        intent.status = Status::Online;
    }

    /// Repairs and releases every link, brings the server back and ends a storage spell.
    pub fn heal(&mut self) {
        if !self.store.faults().is_healthy() {
            self.perform(&Action::Storage(StorageFaults::HEALTHY));
        }
        for h in 0..self.cfg.clients() {
            if self.partitioned[h] {
                self.perform(&Action::Repair(h));
            }
            if self.held[h] {
                self.perform(&Action::Release(h));
            }
        }
        if self.server_down {
            self.perform(&Action::RestartServer);
        }
    }

    /// Brings every client back: crashed ones restarted, logged-out ones started, contact
    /// changes whose fate is unknown made again, and clients with work that only a login
    /// does (a message whose store failed is sent again after a reconnect, a mailbox that
    /// could not be read comes with the next login) logged out and in again, as the
    /// protocol's "try again later" asks of an application.
    pub fn everyone_back(&mut self) {
        let mut again = Vec::new();
        for h in 0..self.cfg.clients() {
            let (alive, logged_out, needs_login) = {
                let oracle = self.oracle();
                let intent = &oracle.intents[h];
                (intent.alive, intent.logged_out, oracle.needs_login(h))
            };
            if !alive {
                self.perform(&Action::RestartClient(h));
            } else if logged_out {
                self.perform(&Action::Start(h));
            } else if needs_login {
                self.perform(&Action::Logout(h));
                again.push(h);
            }
        }
        // The restarted ones take their commands once they run; the logged-out ones report
        // that they stopped before they are started again (else the stop looks unasked for).
        let t = self.elapsed() + self.cfg.tick * 2;
        self.run_until(t);
        for h in again {
            self.perform(&Action::Start(h));
        }
        for h in 0..self.cfg.clients() {
            let (uncertain, contacts) = {
                let oracle = self.oracle();
                let i = &oracle.intents[h];
                (i.uncertain.clone(), i.contacts.clone())
            };
            for u in uncertain {
                self.perform(&Action::Contact(h, u, contacts.contains(&u)));
            }
        }
    }

    /// Runs the whole plan: schedule, heal, settle, check; final round, settle, check.
    pub fn run_plan(&mut self, plan: &Plan) {
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
        if self.cfg.final_round {
            self.everyone_back();
            let settled = self.elapsed() + self.cfg.settle();
            self.run_until(settled);
            let cards = self.stored_profiles();
            let mut oracle = self.oracle();
            oracle.check_converged(settled, "with everyone back");
            oracle.check_profiles(settled, &cards);
            oracle.check_messages(settled);
        }
        self.finish();
    }

    /// Every profile card the store holds: what watchers must hold in the end.
    fn stored_profiles(&self) -> Vec<ProfileCard> {
        let op = StorageOp::LoadProfiles { users: None };
        match self.store.apply(RequestId(u64::MAX), op) {
            StorageResult::ProfilesLoaded(Ok(cards)) => cards,
            other => panic!("reading the store's profiles: {other:?}"),
        }
    }

    /// The checks made on the whole history.
    pub fn finish(&mut self) {
        self.oracle().check_offline_announcements();
    }

    pub fn outcome(&self) -> Outcome {
        let oracle = self.oracle();
        Outcome {
            seed: self.cfg.seed,
            violations: oracle.violations().to_vec(),
            trace_hash: oracle.trace_hash(),
            tail: oracle.tail(),
            stats: oracle.stats,
            simulated: self.sim.elapsed(),
        }
    }
}

/// One client host's software: a fresh client each time the host (re)starts.
async fn client_host(
    host: usize,
    user: usize,
    cfg: SimConfig,
    server: SocketAddr,
    oracle: Shared,
    slot: Rc<RefCell<Slot>>,
) {
    let incarnation = oracle::lock(&oracle).client_started(host, now());
    let (commands, command_rx) = mpsc::channel(1024);
    let (event_tx, mut events) = mpsc::channel(1024);
    slot.borrow_mut().commands = Some(commands);
    let clock = Clock::start();
    let mix = cfg.seed ^ ((host as u64 + 1) << 48) ^ (u64::from(incarnation) << 32);
    let client_cfg = ClientConfig {
        mode: Mode::Login,
        seed: breeze_core::rng::SplitMix64::new(mix).next_u64(),
        // Unique per host and incarnation: the server dedupes by (sender, id).
        id_base: ((host as u64 + 1) << 40) | (u64::from(incarnation) << 28),
        backoff_base: cfg.backoff_base,
        backoff_max: cfg.backoff_max,
        connect_timeout: cfg.connect_timeout,
        ..ClientConfig::new(user_name(user), PASSWORD)
    };
    let client = Client::new(client_cfg, clock.now());
    let mut settings = ClientSettings::new(server);
    settings.connect_timeout = cfg.connect_timeout;
    settings.close_timeout = Duration::from_millis(500);
    let run = run_client(client, clock, SimConnector, settings, command_rx, event_tx);
    let pump = async {
        while let Some(ev) = events.recv().await {
            oracle::lock(&oracle).client_event(host, incarnation, now(), ev);
        }
    };
    let _ = tokio::join!(run, pump);
}

/// Runs one plan from start to end.
pub fn run(plan: &Plan) -> Outcome {
    let mut harness = Harness::new(plan.cfg.clone());
    harness.run_plan(plan);
    harness.outcome()
}

/// Runs the random plan of `seed`, with the knobs the environment asks for.
pub fn run_seed(seed: u64) -> Outcome {
    run(&crate::plan::random_with(
        seed,
        crate::plan::Knobs::from_env(),
    ))
}
