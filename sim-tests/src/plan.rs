//! What a simulation runs: its settings and a schedule of actions, from a seed or by hand.
//!
//! The random generator lays out, per client, non-overlapping fault episodes (a partition,
//! a hold, a crash, a bounce, a logout), a few cluster-wide ones (the server crashing and
//! restarting, a group of clients cut off at once so that they all come back together), and
//! ordinary traffic in between: status and contact changes and messages. Some seeds also
//! give the storage a bad spell: slow, failing, or both; some send messages to the room every
//! user is in, and some change display names (each from a random stream of its own, so
//! that adding them left every older seed's schedule as it was).

use crate::storage::StorageFaults;
use breeze_core::DuplicateLogin;
use breeze_core::message::{Status, WatchScope};
use breeze_core::rng::SplitMix64;
use std::time::Duration;

/// Settings of one simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// Client hosts. Host `h` logs in as user `devices[h]`.
    pub devices: Vec<usize>,
    /// Registered users (`u0`, `u1`, …).
    pub users: usize,
    /// turmoil's step: the network delivers on tick boundaries, timers fire in between.
    pub tick: Duration,
    pub min_latency: Duration,
    pub max_latency: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub handshake_timeout: Duration,
    pub offline_grace: Duration,
    pub duplicate_login: DuplicateLogin,
    pub scope: WatchScope,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// The client's budget for connect, handshake and login together.
    pub connect_timeout: Duration,
    /// When the schedule ends and the network heals.
    pub schedule_end: Duration,
    /// After the heal, every client is started again and every message must arrive.
    pub final_round: bool,
}

impl SimConfig {
    /// One device per user, timings small enough that a minute of simulated time covers many
    /// timeouts, and a network with a few to a few tens of milliseconds of latency.
    pub fn small(seed: u64, clients: usize) -> SimConfig {
        SimConfig {
            seed,
            devices: (0..clients).collect(),
            users: clients,
            tick: Duration::from_millis(5),
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(40),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(2),
            offline_grace: Duration::ZERO,
            duplicate_login: DuplicateLogin::Replace,
            scope: WatchScope::Everyone,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            schedule_end: Duration::from_secs(20),
            final_round: true,
        }
    }

    /// Long enough after a heal for everything to play out: a stream broken by a partition
    /// is noticed within a heartbeat timeout (by the server, and by the client from its own
    /// silence), the server's offline grace runs, and the client waits out one connect
    /// attempt that may have started into the dead network plus its largest backoff.
    pub fn settle(&self) -> Duration {
        self.heartbeat_timeout * 2
            + self.offline_grace
            + self.connect_timeout
            + self.backoff_max * 2
            + self.max_latency * 10
            + Duration::from_secs(1)
    }

    pub fn clients(&self) -> usize {
        self.devices.len()
    }
}

/// Something the driver does to the cluster at a given instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetStatus(usize, Status),
    /// Host `h` adds (`true`) or removes user `u` as a contact.
    Contact(usize, usize, bool),
    /// Host `h` sends a message to user `u`.
    Send(usize, usize),
    Logout(usize),
    Start(usize),
    /// Segments between the server and host `h` are dropped from now on: an established
    /// stream goes silent for good (turmoil does not retransmit), like a NAT losing state.
    Partition(usize),
    Repair(usize),
    /// Segments between the server and host `h` are held and delivered on release: a
    /// silent outage that TCP survives when it is short.
    Hold(usize),
    Release(usize),
    /// The client process dies; its sockets close (the server reads an EOF).
    CrashClient(usize),
    /// A crashed client host starts again, with a fresh client.
    RestartClient(usize),
    /// Crash and restart at once.
    BounceClient(usize),
    CrashServer,
    /// The server starts again over the same storage.
    RestartServer,
    /// The storage behaves so from now on (`StorageFaults::HEALTHY` ends a bad spell).
    Storage(StorageFaults),
    /// Host `h` sends a message to the room every user is in (`Harness::new`).
    RoomSend(usize),
    /// Host `h` sets its user's display name to the `k`th name (`profile_name(k)`): watchers
    /// must end up holding the card the store last committed for the user.
    SetProfile(usize, u64),
}

/// The display name of the `k`th profile change: any script, unique per change.
pub fn profile_name(k: u64) -> String {
    format!("名前 {k} 🐼")
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub cfg: SimConfig,
    /// Sorted by time; actions at the same instant run in order.
    pub actions: Vec<(Duration, Action)>,
}

impl Plan {
    pub fn new(cfg: SimConfig) -> Plan {
        Plan {
            cfg,
            actions: Vec::new(),
        }
    }

    pub fn at(mut self, at: Duration, action: Action) -> Plan {
        self.push(at, action);
        self
    }

    pub fn push(&mut self, at: Duration, action: Action) {
        self.actions.push((at, action));
    }

    fn sort(&mut self) {
        // Stable: actions placed at the same instant keep their order.
        self.actions.sort_by_key(|(at, _)| *at);
    }
}

/// A small random generator over the core's SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.0.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.0.below_inclusive(hi.saturating_sub(lo))
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        self.millis(lo, hi.max(lo))
    }

    pub fn status(&mut self) -> Status {
        match self.below(4) {
            0 => Status::Online,
            1 => Status::Busy,
            2 => Status::Away,
            _ => Status::Invisible,
        }
    }
}

/// Busy intervals of one client, so its fault episodes do not overlap.
#[derive(Debug, Default, Clone)]
struct Lane(Vec<(Duration, Duration)>);

impl Lane {
    fn free(&self, from: Duration, to: Duration) -> bool {
        // A little air between episodes, so each one's effects can be told apart.
        let air = Duration::from_millis(300);
        self.0
            .iter()
            .all(|&(a, b)| to + air <= a || b + air <= from)
    }

    fn take(&mut self, from: Duration, to: Duration) {
        self.0.push((from, to));
    }
}

/// What the random generator may do beyond its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Knobs {
    /// Status and contact changes of mind in flight at the instant of a fault. They found
    /// two client-core races (an `OwnStatus` echo of an older `SetStatus` overwrote a newer
    /// status; a stale `Contacts` answer confirmed a change whose reversal was still in
    /// flight), now fixed. On by default; `SIM_RACES=0` turns them off.
    pub in_flight_races: bool,
    /// Spells of slow and failing storage in some seeds. On by default;
    /// `SIM_STORAGE_FAULTS=0` turns them off.
    pub storage_faults: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            in_flight_races: true,
            storage_faults: true,
        }
    }
}

impl Knobs {
    /// The knobs the environment asks for (`SIM_RACES=0`, `SIM_STORAGE_FAULTS=0`).
    pub fn from_env() -> Knobs {
        let on = |name: &str| std::env::var(name).map_or(true, |v| v != "0");
        Knobs {
            in_flight_races: on("SIM_RACES"),
            storage_faults: on("SIM_STORAGE_FAULTS"),
        }
    }

    /// The environment that sets these knobs, for a replay command: empty for the defaults.
    pub fn env_prefix(&self) -> String {
        let mut prefix = String::new();
        if !self.in_flight_races {
            prefix.push_str("SIM_RACES=0 ");
        }
        if !self.storage_faults {
            prefix.push_str("SIM_STORAGE_FAULTS=0 ");
        }
        prefix
    }
}

/// The random plan for `seed` with the default knobs.
pub fn random(seed: u64) -> Plan {
    random_with(seed, Knobs::default())
}

/// The random plan for `seed`: 5–8 clients, 15–25 s of faults and traffic, then the heal.
pub fn random_with(seed: u64, knobs: Knobs) -> Plan {
    let mut rng = Rng::new(seed ^ 0x5EED_B4EE_2E00_0000);
    let clients = rng.range(5, 8) as usize;
    let mut cfg = SimConfig::small(seed, clients);
    cfg.heartbeat_timeout = rng.millis(2000, 4000);
    cfg.heartbeat_interval = cfg.heartbeat_timeout / 3;
    if rng.chance(40) {
        cfg.offline_grace = rng.millis(300, 2000);
    }
    if rng.chance(25) {
        cfg.duplicate_login = DuplicateLogin::Multi;
    }
    if rng.chance(30) {
        cfg.scope = WatchScope::Contacts;
    }
    cfg.max_latency = rng.millis(5, 60);
    cfg.schedule_end = rng.millis(15_000, 25_000);
    let mut plan = Plan::new(cfg.clone());
    let end = cfg.schedule_end;
    let t = cfg.heartbeat_timeout;
    let mut lanes = vec![Lane::default(); clients];

    // The server goes down and comes back: every client reconnects at once.
    if rng.chance(30) {
        let at = rng.between(Duration::from_secs(2), end - Duration::from_secs(4));
        let down = rng.millis(50, 3000);
        plan.push(at, Action::CrashServer);
        plan.push(at + down, Action::RestartServer);
    }
    // A group of clients loses the network together and comes back together.
    if rng.chance(30) {
        let at = rng.between(Duration::from_secs(1), end - Duration::from_secs(3));
        let len = rng.between(Duration::from_millis(200), t * 2);
        let until = (at + len).min(end);
        let hold = rng.chance(50);
        for (h, lane) in lanes.iter_mut().enumerate() {
            if rng.chance(60) && lane.free(at, until) {
                lane.take(at, until);
                let (cut, heal) = if hold {
                    (Action::Hold(h), Action::Release(h))
                } else {
                    (Action::Partition(h), Action::Repair(h))
                };
                plan.push(at, cut);
                plan.push(until, heal);
            }
        }
    }
    // Each client's own misfortunes.
    for (h, lane) in lanes.iter_mut().enumerate() {
        for _ in 0..rng.range(0, 3) {
            let at = rng.between(Duration::from_millis(500), end - Duration::from_millis(500));
            let kind = rng.below(6);
            let len = match kind {
                // Around the timeout on both sides: shorter and longer outages alike.
                0 | 1 => rng.between(Duration::from_millis(100), t * 2 + t / 2),
                _ => rng.between(Duration::from_millis(100), Duration::from_secs(6)),
            };
            // Some crashes and logouts last past the end: those users stay offline.
            let forever = kind >= 3 && rng.chance(25);
            let until = if forever { end } else { (at + len).min(end) };
            if !lane.free(at, until) {
                continue;
            }
            lane.take(at, until);
            match kind {
                0 => {
                    plan.push(at, Action::Partition(h));
                    plan.push(until, Action::Repair(h));
                }
                1 => {
                    plan.push(at, Action::Hold(h));
                    plan.push(until, Action::Release(h));
                }
                2 => plan.push(at, Action::BounceClient(h)),
                3 => {
                    plan.push(at, Action::CrashClient(h));
                    if !forever {
                        plan.push(until, Action::RestartClient(h));
                    }
                }
                _ => {
                    plan.push(at, Action::Logout(h));
                    if !forever {
                        plan.push(until, Action::Start(h));
                    }
                }
            }
        }
    }
    // Messages in flight when a fault hits: stored but not yet acknowledged to the sender,
    // or delivered but not yet acknowledged by the recipient. Their re-sends and
    // redeliveries must reach each application once.
    let users = cfg.users;
    let faults: Vec<(Duration, Option<usize>)> = plan
        .actions
        .iter()
        .filter_map(|(at, a)| match *a {
            Action::Partition(h)
            | Action::Hold(h)
            | Action::CrashClient(h)
            | Action::BounceClient(h)
            | Action::Logout(h) => Some((*at, Some(h))),
            Action::CrashServer => Some((*at, None)),
            _ => None,
        })
        .collect();
    for (at, victim) in faults {
        if !rng.chance(70) {
            continue;
        }
        for _ in 0..rng.range(1, 4) {
            let lead = rng.between(Duration::ZERO, cfg.max_latency * 3);
            let when = at.saturating_sub(lead);
            let from = match victim {
                Some(h) if rng.chance(50) => h,
                _ => rng.index(clients),
            };
            let to = match victim {
                Some(h) if from != h => cfg.devices[h],
                _ => (cfg.devices[from] + 1 + rng.index(users - 1)) % users,
            };
            if to != cfg.devices[from] {
                plan.push(when, Action::Send(from, to));
            }
        }
        // Changes of mind in flight when the fault hits: some requests processed, the
        // answers to some lost, the last one maybe never arriving.
        let Some(h) = victim else { continue };
        if !knobs.in_flight_races {
            continue;
        }
        if rng.chance(40) {
            let mut leads: Vec<Duration> = (0..3)
                .map(|_| rng.between(Duration::ZERO, cfg.max_latency * 4))
                .collect();
            leads.sort_by(|a, b| b.cmp(a));
            let other = (cfg.devices[h] + 1 + rng.index(users - 1)) % users;
            let first = rng.chance(50);
            for (n, lead) in leads.into_iter().enumerate() {
                plan.push(
                    at.saturating_sub(lead),
                    Action::Contact(h, other, (n % 2 == 0) == first),
                );
            }
        }
        if rng.chance(40) {
            let early = rng.between(Duration::ZERO, cfg.max_latency * 4);
            let late = rng.between(Duration::ZERO, early);
            let (a, b) = (rng.status(), rng.status());
            plan.push(at.saturating_sub(early), Action::SetStatus(h, a));
            plan.push(at.saturating_sub(late), Action::SetStatus(h, b));
        }
    }
    // Ordinary use, some of it while its host is cut off or down.
    for _ in 0..rng.range(15, 45) {
        let at = rng.between(Duration::from_millis(200), end);
        let h = rng.index(clients);
        let other = (cfg.devices[h] + 1 + rng.index(users - 1)) % users;
        match rng.below(10) {
            0..=3 => plan.push(at, Action::Send(h, other)),
            4 | 5 => {
                let status = rng.status();
                plan.push(at, Action::SetStatus(h, status));
            }
            6..=8 => {
                let add = rng.chance(70);
                plan.push(at, Action::Contact(h, other, add));
            }
            _ => {
                // A quick change of mind: several contact requests in flight at once.
                let step = rng.millis(1, 30);
                plan.push(at, Action::Contact(h, other, true));
                plan.push(at + step, Action::Contact(h, other, false));
                plan.push(at + step * 2, Action::Contact(h, other, true));
            }
        }
    }
    // A stream of its own too: adding profile changes kept every older seed's schedule.
    profile_changes(&mut plan, &mut Rng::new(seed ^ 0x9E0F_11E5_0000_0000));
    room_traffic(&mut plan, &mut Rng::new(seed ^ 0x0200_3000_0000_0000));
    if knobs.storage_faults {
        // A stream of its own, so that the rest of a seed's plan is the same with the storage
        // faults on or off, and seeds found before they existed still tell their story.
        storage_spells(&mut plan, &mut Rng::new(seed ^ 0x5707_A6E0_FA17_0000));
    }
    plan.actions.retain(|(at, _)| *at <= end);
    plan.sort();
    plan
}

/// In 60% of the seeds, messages to the room everyone is in, from random hosts at random
/// moments (faults, crashes and bad storage spells land on some of them).
fn room_traffic(plan: &mut Plan, rng: &mut Rng) {
    if !rng.chance(60) {
        return;
    }
    let clients = plan.cfg.clients();
    let end = plan.cfg.schedule_end;
    for _ in 0..rng.range(3, 15) {
        let at = rng.between(Duration::from_millis(200), end);
        let h = rng.index(clients);
        plan.push(at, Action::RoomSend(h));
    }
}

/// In half the seeds, a few display-name changes at random moments (some while the host is
/// cut off, crashed or logged out, some inside a bad storage spell).
fn profile_changes(plan: &mut Plan, rng: &mut Rng) {
    if !rng.chance(50) {
        return;
    }
    let clients = plan.cfg.clients();
    let end = plan.cfg.schedule_end;
    for k in 0..rng.range(1, 6) {
        let at = rng.between(Duration::from_millis(200), end);
        let h = rng.index(clients);
        plan.push(at, Action::SetProfile(h, k));
    }
}

/// In 30% of seeds, one or two spells of bad storage, each with traffic so that the faults
/// hit requests: results held back (some past the client's connect timeout, so that logins
/// complete after the client gave up), requests failing, or both.
fn storage_spells(plan: &mut Plan, rng: &mut Rng) {
    if !rng.chance(30) {
        return;
    }
    let cfg = plan.cfg.clone();
    let (users, clients) = (cfg.users, cfg.clients());
    let latest = cfg.schedule_end - Duration::from_secs(3);
    let mut from = Duration::from_secs(1);
    for _ in 0..rng.range(1, 2) {
        if from >= latest {
            break;
        }
        let at = rng.between(from, latest);
        let len = rng.between(Duration::from_millis(500), Duration::from_secs(6));
        let until = (at + len).min(cfg.schedule_end - Duration::from_secs(1));
        let slow = |rng: &mut Rng| {
            let fastest = rng.millis(5, 300);
            let slowest = rng.between(fastest, cfg.connect_timeout + Duration::from_secs(1));
            Some((fastest, slowest))
        };
        let faults = match rng.below(3) {
            0 => StorageFaults {
                slow: slow(rng),
                commit_first: rng.chance(50),
                failing: 0,
            },
            1 => StorageFaults {
                failing: rng.range(10, 60) as u8,
                ..StorageFaults::HEALTHY
            },
            _ => StorageFaults {
                slow: slow(rng),
                commit_first: rng.chance(50),
                failing: rng.range(10, 40) as u8,
            },
        };
        plan.push(at, Action::Storage(faults));
        plan.push(until, Action::Storage(StorageFaults::HEALTHY));
        for _ in 0..rng.range(2, 6) {
            let when = rng.between(at, until);
            let h = rng.index(clients);
            let other = (cfg.devices[h] + 1 + rng.index(users - 1)) % users;
            if rng.chance(60) {
                plan.push(when, Action::Send(h, other));
            } else {
                let add = rng.chance(60);
                plan.push(when, Action::Contact(h, other, add));
            }
        }
        from = until + Duration::from_millis(300);
    }
}
