//! What a cluster simulation runs: its settings and a schedule, from a seed or by hand.
//!
//! Per node, non-overlapping episodes: a crash and a restart under a new epoch, or a cut of
//! its bus link healed after a while (shorter or longer than its fence deadline). Per
//! client, non-overlapping episodes: a crash and a restart, a bounce, a logout and a new
//! start. Messages between users throughout, and a few at the very instant of each node
//! fault (in flight when it strikes). The bus loses a per-seed share of messages (up to
//! 30 %) until the heal.

use crate::plan::Rng;
use std::time::Duration;

/// Settings of one simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterSimConfig {
    pub seed: u64,
    /// Server nodes (`n0`, `n1`, …), node `i` under `NodeId(i)`.
    pub nodes: usize,
    /// Users, one client host each (`c0` logs in as `u0`, …). Client `h` dials node
    /// `h % nodes` first and then the others in turn.
    pub users: usize,
    pub tick: Duration,
    pub min_latency: Duration,
    pub max_latency: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub handshake_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// The nodes' cluster timings (`breeze_core::cluster::ClusterConfig`).
    pub node_timeout: Duration,
    pub node_heartbeat: Duration,
    pub fence_margin: Duration,
    /// A bus message takes this long (a range).
    pub bus_delay: (Duration, Duration),
    /// The longest a node's adapter takes to notice that its link was cut. Below
    /// `fence_margin - node_heartbeat`: the margin must cover it (CLUSTER.md).
    pub max_link_lag: Duration,
    /// Percent of bus messages lost until the heal.
    pub loss: u8,
    pub schedule_end: Duration,
}

impl ClusterSimConfig {
    pub fn new(seed: u64, nodes: usize, users: usize) -> ClusterSimConfig {
        ClusterSimConfig {
            seed,
            nodes,
            users,
            tick: Duration::from_millis(10),
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(20),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(2),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            node_timeout: Duration::from_secs(3),
            node_heartbeat: Duration::from_millis(500),
            fence_margin: Duration::from_secs(1),
            bus_delay: (Duration::from_millis(1), Duration::from_millis(15)),
            max_link_lag: Duration::from_millis(400),
            loss: 0,
            schedule_end: Duration::from_secs(20),
        }
    }

    /// How long a node may keep a session after its link was cut: its fence deadline after
    /// the adapter noticed.
    pub fn fence_after(&self) -> Duration {
        self.node_timeout - self.fence_margin
    }

    /// Long enough after a heal for everything to play out: a dead node's deadline at the
    /// others, a stream the client no longer hears noticed within two heartbeat timeouts,
    /// a connect attempt into a node that is gone, and a round of the node list at the
    /// largest backoff.
    pub fn settle(&self) -> Duration {
        self.node_timeout * 2
            + self.heartbeat_timeout * 2
            + self.connect_timeout
            + self.backoff_max * (self.nodes as u32 + 1)
            + self.max_latency * 10
            + Duration::from_secs(1)
    }
}

/// Something the driver does at a given instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAction {
    /// Client `h` sends a message to user `u`.
    Send(usize, usize),
    Logout(usize),
    Start(usize),
    CrashClient(usize),
    RestartClient(usize),
    BounceClient(usize),
    /// The node's process dies: its connections close, its sessions end. With `true`, the
    /// clients it was serving die with it (a rack losing power) and come back only in the
    /// final round: nobody else ends their sessions, so only the node deadline at the
    /// others can.
    CrashNode(usize, bool),
    /// The node dies with its clients and never comes back: the cluster goes on without it.
    KillNode(usize),
    /// It starts again over the same database, under a higher epoch.
    RestartNode(usize),
    /// Its bus link is cut: it must fence itself before the others declare it dead.
    Cut(usize),
    Heal(usize),
    /// Percent of bus messages lost from now on.
    Loss(u8),
    /// Client `h` sends a message to the room every user is in.
    RoomSend(usize),
}

#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub cfg: ClusterSimConfig,
    /// Sorted by time; actions at the same instant run in order.
    pub actions: Vec<(Duration, ClusterAction)>,
}

impl ClusterPlan {
    pub fn new(cfg: ClusterSimConfig) -> ClusterPlan {
        ClusterPlan {
            cfg,
            actions: Vec::new(),
        }
    }

    pub fn at(mut self, at: Duration, action: ClusterAction) -> ClusterPlan {
        self.actions.push((at, action));
        self
    }

    fn sort(&mut self) {
        self.actions.sort_by_key(|(at, _)| *at);
    }
}

/// Busy intervals of one node or client, so that its episodes do not overlap.
#[derive(Debug, Default)]
struct Lane(Vec<(Duration, Duration)>);

impl Lane {
    fn take(&mut self, from: Duration, to: Duration) -> bool {
        // Air between episodes, so that each one's effects play out.
        let air = Duration::from_millis(500);
        let free = self
            .0
            .iter()
            .all(|&(a, b)| to + air <= a || b + air <= from);
        if free {
            self.0.push((from, to));
        }
        free
    }
}

/// The random plan of `seed`.
pub fn random(seed: u64) -> ClusterPlan {
    let mut rng = Rng::new(seed ^ 0xC1A5_7E20_0000_0000);
    let nodes = 3 + rng.index(2);
    let users = 4 + rng.index(6);
    let mut cfg = ClusterSimConfig::new(seed, nodes, users);
    cfg.loss = if rng.chance(20) {
        0
    } else {
        rng.range(1, 30) as u8
    };
    let end = cfg.schedule_end;
    let mut plan = ClusterPlan::new(cfg);
    let ms = |d: Duration| d.as_millis() as u64;
    let at_random = |rng: &mut Rng, lo: Duration| rng.millis(ms(lo), ms(end) - 1);

    plan.actions
        .push((Duration::ZERO, ClusterAction::Loss(plan.cfg.loss)));
    let start = Duration::from_secs(2);
    // In some seeds one node is lost for good.
    let lost = rng.chance(30).then(|| rng.index(nodes));
    for n in 0..nodes {
        let mut lane = Lane::default();
        if lost == Some(n) {
            let at = rng.millis(ms(start), ms(end) - 3000);
            lane.take(at, end);
            plan.actions.push((at, ClusterAction::KillNode(n)));
        }
        for _ in 0..rng.range(0, 2) {
            let at = at_random(&mut rng, start);
            let (long, kind) = if rng.chance(50) {
                (rng.millis(300, 8000), true)
            } else {
                // Shorter and longer than the fence deadline (2 s by default).
                (rng.millis(200, 6000), false)
            };
            if !lane.take(at, at + long) {
                continue;
            }
            let (down, up) = if kind {
                let with_clients = rng.chance(50);
                (
                    ClusterAction::CrashNode(n, with_clients),
                    ClusterAction::RestartNode(n),
                )
            } else {
                (ClusterAction::Cut(n), ClusterAction::Heal(n))
            };
            plan.actions.push((at, down));
            // Messages in flight at the instant the node goes.
            for _ in 0..rng.range(0, 2) {
                let h = rng.index(users);
                let to = (h + 1 + rng.index(users - 1)) % users;
                plan.actions.push((at, ClusterAction::Send(h, to)));
            }
            if at + long < end {
                plan.actions.push((at + long, up));
            }
        }
    }
    // An episode that would end after the schedule is ended by the final round instead:
    // a `Start` at the instant of its `Logout` would race the client's own stop.
    let back = |plan: &mut ClusterPlan, at: Duration, action: ClusterAction| {
        if at < end {
            plan.actions.push((at, action));
        }
    };
    for h in 0..users {
        let mut lane = Lane::default();
        for _ in 0..rng.range(0, 2) {
            let at = at_random(&mut rng, Duration::from_secs(1));
            let long = rng.millis(300, 5000);
            match rng.below(3) {
                0 if lane.take(at, at + long) => {
                    plan.actions.push((at, ClusterAction::CrashClient(h)));
                    back(&mut plan, at + long, ClusterAction::RestartClient(h));
                }
                1 if lane.take(at, at) => {
                    plan.actions.push((at, ClusterAction::BounceClient(h)));
                }
                2 if lane.take(at, at + long) => {
                    plan.actions.push((at, ClusterAction::Logout(h)));
                    back(&mut plan, at + long, ClusterAction::Start(h));
                }
                _ => {}
            }
        }
    }
    for _ in 0..users * 4 {
        let at = at_random(&mut rng, Duration::from_secs(1));
        let h = rng.index(users);
        let to = (h + 1 + rng.index(users - 1)) % users;
        plan.actions.push((at, ClusterAction::Send(h, to)));
    }
    // Room traffic from a stream of its own, so every older seed keeps its schedule: members
    // on every node, messages stored through several nodes at once, news of them lost on
    // the bus.
    let mut rooms = Rng::new(seed ^ 0x0200_3000_C1A5_0000);
    if rooms.chance(70) {
        for _ in 0..rooms.range(users as u64, users as u64 * 4) {
            let at = at_random(&mut rooms, Duration::from_secs(1));
            let h = rooms.index(users);
            plan.actions.push((at, ClusterAction::RoomSend(h)));
        }
    }
    plan.sort();
    plan
}
