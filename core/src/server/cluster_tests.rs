//! Scenario tests of the cluster port: several server cores in one virtual time, joined by a
//! bus that delivers at once, in order per sender, and drops what a test tells it to.

use crate::cluster::{Body, ClusterConfig, ClusterMsg, Dest};
use crate::config::{DuplicateLogin, ServerConfig};
use crate::ids::{ConnId, NodeId};
use crate::message::{
    ClientMsg, CloseReason, ErrorCode, Presence, PresenceEntry, RequestKind, ServerMsg, Status,
};
use crate::testkit::Rig;
use crate::testkit::rig::user;
use crate::time::{Duration, Instant};
use std::collections::BTreeSet;

const USERS: &[&str] = &["u", "v", "w", "x"];

fn cfg(node: u32) -> ServerConfig {
    ServerConfig {
        node: NodeId(node),
        // Long, so that sessions outlive the node deadlines these tests are about.
        heartbeat_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    }
}

type DropRule = Box<dyn FnMut(usize, usize, &ClusterMsg) -> bool>;

struct Net {
    nodes: Vec<Rig>,
    /// A crashed node neither runs nor hears anything.
    crashed: Vec<bool>,
    /// A node whose bus link is cut: what it publishes and what is meant for it is lost.
    cut: Vec<bool>,
    /// When each node last got a bus message from each other node.
    heard: Vec<Vec<Option<Instant>>>,
    /// Drops a message from `from` to `to` when it answers true.
    drop: Option<DropRule>,
}

impl Net {
    fn new(n: usize, each: impl Fn(u32) -> ServerConfig) -> Net {
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut rig = Rig::new(each(i as u32), USERS);
            rig.server
                .enable_cluster(Instant::ZERO, ClusterConfig::new(1));
            rig.server.handle_bus_link(Instant::ZERO, true);
            rig.pump();
            nodes.push(rig);
        }
        let mut net = Net {
            nodes,
            crashed: vec![false; n],
            cut: vec![false; n],
            heard: vec![vec![None; n]; n],
            drop: None,
        };
        net.settle();
        net
    }

    /// The simulation's time: a crashed node's clock stands still, so the latest of all.
    fn now(&self) -> Instant {
        self.nodes.iter().map(|r| r.now).max().expect("nodes")
    }

    /// Delivers everything published until nobody has more to say.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            for from in 0..self.nodes.len() {
                let msgs = std::mem::take(&mut self.nodes[from].bus);
                for (dest, msg) in msgs {
                    moved = true;
                    if self.crashed[from] || self.cut[from] {
                        continue;
                    }
                    for to in 0..self.nodes.len() {
                        let meant = match dest {
                            Dest::All => to != from,
                            Dest::Node(n) => n.0 as usize == to,
                        };
                        if !meant || self.crashed[to] || self.cut[to] {
                            continue;
                        }
                        if let Some(drop) = &mut self.drop
                            && drop(from, to, &msg)
                        {
                            continue;
                        }
                        let rig = &mut self.nodes[to];
                        self.heard[to][from] = Some(rig.now);
                        rig.server
                            .handle_cluster(rig.now, NodeId(from as u32), msg.clone());
                        rig.pump();
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the bus never went quiet");
    }

    /// Moves every running node's clock to `end`, firing each deadline at its instant and
    /// delivering the bus in between.
    fn advance(&mut self, d: Duration) {
        let end = self.now() + d;
        for _ in 0..100_000 {
            let next = (0..self.nodes.len())
                .filter(|&i| !self.crashed[i])
                .filter_map(|i| self.nodes[i].server.poll_timeout())
                .filter(|&t| t <= end)
                .min();
            let Some(t) = next else { break };
            self.step_to(t);
        }
        self.step_to(end);
    }

    fn step_to(&mut self, t: Instant) {
        for (rig, crashed) in self.nodes.iter_mut().zip(&self.crashed) {
            if !crashed {
                let d = t.saturating_duration_since(rig.now);
                rig.advance(d);
            }
        }
        self.settle();
    }

    fn login(&mut self, node: usize, name: &str) -> ConnId {
        let c = self.nodes[node].login(name, Status::Online);
        self.settle();
        c
    }

    fn diffs(&mut self, node: usize, conn: ConnId) -> Vec<Vec<PresenceEntry>> {
        self.nodes[node]
            .take(conn)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::PresenceDiff { entries } => Some(entries),
                _ => None,
            })
            .collect()
    }
}

fn entry(name: &str, presence: Presence) -> Vec<PresenceEntry> {
    vec![PresenceEntry {
        user: user(name),
        presence,
    }]
}

#[test]
fn a_single_node_publishes_nothing_on_the_bus() {
    let mut rig = Rig::new(cfg(0), USERS);
    let u = rig.login("u", Status::Online);
    rig.frame(
        u,
        ClientMsg::SetStatus {
            status: Status::Busy,
        },
    );
    rig.advance(Duration::from_secs(10));
    rig.close(u);
    assert!(rig.bus.is_empty(), "{:?}", rig.bus);
}

#[test]
fn a_login_on_one_node_reaches_watchers_on_the_others_once() {
    let mut net = Net::new(3, cfg);
    let w1 = net.login(1, "w");
    let w2 = net.login(2, "x");
    net.nodes[1].take(w1);
    net.nodes[2].take(w2);
    let u = net.login(0, "u");
    assert_eq!(net.diffs(1, w1), [entry("u", Presence::Online)]);
    assert_eq!(net.diffs(2, w2), [entry("u", Presence::Online)]);
    // A snapshot taken on another node shows it too.
    let v = net.login(2, "v");
    let snap = net.nodes[2].take(v);
    assert!(
        snap.iter()
            .any(|m| matches!(m, ServerMsg::PresenceSnapshot { entries }
            if entries.contains(&entry("u", Presence::Online)[0]))),
        "{snap:?}"
    );
    net.nodes[1].take(w1);
    net.nodes[2].take(w2);
    net.nodes[0].frame(u, ClientMsg::Logout);
    net.settle();
    assert_eq!(net.diffs(1, w1), [entry("u", Presence::Offline)]);
    assert_eq!(net.diffs(2, w2), [entry("u", Presence::Offline)]);
}

#[test]
fn a_lost_message_is_noticed_at_the_next_heartbeat_and_resynced() {
    let mut net = Net::new(2, cfg);
    let w = net.login(1, "w");
    net.nodes[1].take(w);
    // The bus loses node 0's first user state on its way to node 1.
    let mut lost = 0;
    net.drop = Some(Box::new(move |from, to, msg| {
        let hit = from == 0 && to == 1 && matches!(msg.body, Body::User(_)) && lost == 0;
        lost += u32::from(hit);
        hit
    }));
    net.login(0, "u");
    assert!(net.diffs(1, w).is_empty(), "lost: node 1 cannot know yet");
    // Node 0's next heartbeat carries a seq node 1 has not seen: it asks for a snapshot.
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.diffs(1, w), [entry("u", Presence::Online)]);
}

#[test]
fn a_gap_in_the_middle_drops_later_messages_until_the_snapshot() {
    let mut net = Net::new(2, cfg);
    let w = net.login(1, "w");
    net.nodes[1].take(w);
    let u = net.login(0, "u");
    assert_eq!(net.diffs(1, w), [entry("u", Presence::Online)]);
    // u's status change is lost; v's login behind it arrives out of numbering.
    let mut lost = 0;
    net.drop = Some(Box::new(move |from, _, msg| {
        let hit = from == 0 && matches!(msg.body, Body::User(_)) && lost == 0;
        lost += u32::from(hit);
        hit
    }));
    net.nodes[0].frame(
        u,
        ClientMsg::SetStatus {
            status: Status::Away,
        },
    );
    net.settle();
    net.login(0, "v");
    // The snapshot is asked for at once (the gap showed on v's message) and brings both.
    let got: Vec<PresenceEntry> = net.diffs(1, w).concat();
    assert!(got.contains(&entry("u", Presence::Away)[0]), "{got:?}");
    assert!(got.contains(&entry("v", Presence::Online)[0]), "{got:?}");
}

#[test]
fn a_dead_nodes_users_go_offline_at_exactly_last_heard_plus_timeout_once_per_watcher() {
    let mut net = Net::new(3, cfg);
    let timeout = ClusterConfig::new(1).node_timeout;
    let w1 = net.login(1, "w");
    let w2 = net.login(2, "x");
    net.login(0, "u");
    net.login(0, "v");
    net.advance(Duration::from_millis(700));
    net.nodes[1].take(w1);
    net.nodes[2].take(w2);
    net.crashed[0] = true;
    let last = net.heard[1][0].expect("node 1 heard node 0");
    assert_eq!(
        net.heard[2][0],
        Some(last),
        "the bus delivers to both at once"
    );
    let deadline = last + timeout;
    net.advance(deadline - net.now() - Duration::from_millis(1));
    assert!(net.diffs(1, w1).is_empty(), "not a millisecond early");
    net.advance(Duration::from_millis(1));
    assert_eq!(net.now(), deadline);
    let offline = [vec![
        PresenceEntry {
            user: user("u"),
            presence: Presence::Offline,
        },
        PresenceEntry {
            user: user("v"),
            presence: Presence::Offline,
        },
    ]];
    assert_eq!(net.diffs(1, w1), offline);
    assert_eq!(net.diffs(2, w2), offline);
    net.advance(Duration::from_secs(10));
    assert!(net.diffs(1, w1).is_empty(), "once");
    assert!(net.diffs(2, w2).is_empty(), "once");
    assert!(
        net.nodes[1]
            .server
            .who(net.now())
            .iter()
            .all(|e| e.user != user("u"))
    );
}

#[test]
fn a_cut_off_node_fences_itself_before_the_others_declare_it_dead() {
    let mut net = Net::new(2, cfg);
    let c = ClusterConfig::new(1);
    let w = net.login(1, "w");
    let u = net.login(0, "u");
    net.advance(Duration::from_millis(300));
    net.nodes[1].take(w);
    // The link dies; the adapter notices at once (its lag is what the margin is for).
    net.cut[0] = true;
    let cut_at = net.now();
    net.nodes[0].server.handle_bus_link(cut_at, false);
    let last = net.heard[1][0].expect("heard before the cut");
    net.advance(c.fence_after() - Duration::from_millis(1));
    assert!(!net.nodes[0].closed.contains_key(&u), "not early");
    net.advance(Duration::from_millis(1));
    assert_eq!(net.nodes[0].closed[&u], CloseReason::NodeFenced);
    assert!(net.nodes[0].take(u).contains(&ServerMsg::Bye {
        reason: CloseReason::NodeFenced
    }));
    assert!(cut_at + c.fence_after() < last + c.node_timeout);
    // While fenced, nobody can log in there.
    let late = net.nodes[0].open();
    assert_eq!(net.nodes[0].closed[&late], CloseReason::NodeFenced);
    // The others declare it dead at their own deadline; its user is offline once.
    net.advance(last + c.node_timeout - net.now());
    assert_eq!(net.diffs(1, w), [entry("u", Presence::Offline)]);
    // The link heals: the node takes clients again and is seen again.
    net.cut[0] = false;
    let now = net.now();
    net.nodes[0].server.handle_bus_link(now, true);
    net.settle();
    net.login(0, "v");
    assert_eq!(net.diffs(1, w), [entry("v", Presence::Online)]);
}

#[test]
fn a_restart_under_the_same_id_ends_the_old_epochs_sessions_and_keeps_the_new() {
    let mut net = Net::new(2, cfg);
    let w = net.login(1, "w");
    net.login(0, "u");
    net.nodes[1].take(w);
    let old_epoch = net.nodes[0].bus.clone();
    assert!(old_epoch.is_empty(), "settled");
    // Keep one of the old process's messages to replay late.
    let stale = ClusterMsg {
        epoch: 1,
        seq: 99,
        body: Body::User(crate::cluster::UserState {
            user: user("u"),
            sessions: vec![ConnId(1)],
            lingering: false,
            status: Status::Online,
            status_clock: 1,
            status_node: NodeId(0),
            replaced: vec![],
        }),
    };
    // The process dies and comes back at once under node 0 with epoch 2.
    let now = net.now();
    let mut fresh = Rig::new(cfg(0), USERS);
    fresh.now = now;
    fresh.server.enable_cluster(now, ClusterConfig::new(2));
    fresh.server.handle_bus_link(now, true);
    fresh.pump();
    net.nodes[0] = fresh;
    net.settle();
    net.login(0, "v");
    let got: Vec<PresenceEntry> = net.diffs(1, w).concat();
    assert_eq!(
        got,
        [entry("u", Presence::Offline), entry("v", Presence::Online)].concat(),
        "the old epoch's u is gone, the new epoch's v is online"
    );
    // A late message of the old process resurrects nothing.
    net.nodes[1].server.handle_cluster(now, NodeId(0), stale);
    net.nodes[1].pump();
    net.advance(Duration::from_secs(10));
    assert!(net.diffs(1, w).is_empty());
}

#[test]
fn replace_across_nodes_ends_the_old_session_without_a_flap() {
    let mut net = Net::new(3, cfg);
    let w = net.login(2, "w");
    let old = net.login(0, "u");
    net.nodes[2].take(w);
    let new = net.login(1, "u");
    assert_eq!(net.nodes[0].closed[&old], CloseReason::Replaced);
    assert!(!net.nodes[1].closed.contains_key(&new));
    assert!(net.diffs(2, w).is_empty(), "no offline/online flap");
    net.advance(Duration::from_secs(10));
    assert!(net.diffs(2, w).is_empty());
    let who = net.nodes[2].server.who(net.now());
    let u: Vec<_> = who.iter().filter(|e| e.user == user("u")).collect();
    assert_eq!(u.len(), 1);
    assert_eq!(
        u[0].sessions.iter().map(|s| s.node).collect::<Vec<_>>(),
        [1]
    );
}

#[test]
fn two_logins_racing_on_two_nodes_under_replace_leave_one_session() {
    let mut net = Net::new(2, cfg);
    // Each login happens before the other node hears of the other.
    net.drop = Some(Box::new(|_, _, _| true));
    let a = net.nodes[0].login("u", Status::Online);
    let b = net.nodes[1].login("u", Status::Online);
    net.settle();
    net.drop = None;
    // Both stamps are 1: node 1 wins the tie; the resync at the next heartbeat brings the news.
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.nodes[0].closed.get(&a), Some(&CloseReason::Replaced));
    assert_eq!(net.nodes[1].closed.get(&b), None);
    for node in 0..2 {
        let who = net.nodes[node].server.who(net.now());
        let sessions: Vec<u32> = who
            .iter()
            .filter(|e| e.user == user("u"))
            .flat_map(|e| e.sessions.iter().map(|s| s.node))
            .collect();
        assert_eq!(sessions, [1], "node {node}");
    }
}

#[test]
fn multi_across_nodes_keeps_a_user_online_until_the_last_node_lets_go() {
    let mut net = Net::new(3, |n| ServerConfig {
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let w = net.login(2, "w");
    let phone = net.login(0, "u");
    let laptop = net.login(1, "u");
    net.nodes[2].take(w);
    assert_eq!(
        net.nodes[2]
            .server
            .who(net.now())
            .iter()
            .find(|e| e.user == user("u"))
            .map(|e| e.sessions.len()),
        Some(2)
    );
    // A status set on one device reaches the other node's device and every watcher.
    net.nodes[0].frame(
        phone,
        ClientMsg::SetStatus {
            status: Status::Busy,
        },
    );
    net.settle();
    assert!(net.nodes[1].take(laptop).contains(&ServerMsg::OwnStatus {
        status: Status::Busy
    }));
    assert_eq!(net.diffs(2, w), [entry("u", Presence::Busy)]);
    net.nodes[0].frame(phone, ClientMsg::Logout);
    net.settle();
    assert!(net.diffs(2, w).is_empty());
    net.nodes[1].frame(laptop, ClientMsg::Logout);
    net.settle();
    assert_eq!(net.diffs(2, w), [entry("u", Presence::Offline)]);
}

#[test]
fn reconnecting_to_another_node_inside_the_grace_shows_no_flap() {
    let grace = Duration::from_secs(5);
    let mut net = Net::new(3, |n| ServerConfig {
        offline_grace: grace,
        ..cfg(n)
    });
    let w0 = net.login(0, "w");
    let w2 = net.login(2, "x");
    let u = net.login(0, "u");
    net.nodes[0].take(w0);
    net.nodes[2].take(w2);
    net.nodes[0].close(u);
    net.settle();
    net.advance(Duration::from_secs(2));
    net.login(1, "u");
    net.advance(grace * 3);
    assert!(
        net.diffs(0, w0).is_empty(),
        "the node it left shows no flap"
    );
    assert!(net.diffs(2, w2).is_empty(), "a third node shows no flap");
}

#[test]
fn users_registered_on_one_node_are_known_on_every_node_even_if_the_news_is_lost() {
    let mut net = Net::new(3, cfg);
    // Node 2 misses the news itself; it learns from the snapshot its gap asks for.
    net.drop = Some(Box::new(|from, to, msg| {
        from == 0 && to == 2 && matches!(msg.body, Body::Registered(_))
    }));
    let c = net.nodes[0].hello();
    net.nodes[0].frame(
        c,
        ClientMsg::Register {
            user: user("newbie"),
            password: crate::testkit::rig::PASSWORD.into(),
        },
    );
    net.settle();
    assert!(net.nodes[0].take(c).contains(&ServerMsg::Registered {
        user: user("newbie")
    }));
    net.advance(ClusterConfig::new(1).heartbeat_every);
    for node in 0..3 {
        assert_eq!(
            net.nodes[node].server.stats().registered_users,
            USERS.len() + 1
        );
    }
    for node in 1..3 {
        let s = net.login(node, "w");
        net.nodes[node].take(s);
        net.nodes[node].frame(
            s,
            ClientMsg::Send {
                id: 1,
                to: user("newbie"),
                body: "hi".into(),
                attachment: None,
            },
        );
        let got = net.nodes[node].take(s);
        assert!(
            !got.contains(&ServerMsg::Error {
                request: RequestKind::Send,
                code: ErrorCode::NoSuchUser,
                id: Some(1)
            }),
            "node {node}: {got:?}"
        );
    }
}

/// A seeded run: nodes crash and restart under new epochs, links are cut and healed, the bus
/// drops at a seeded rate, clients log in, out and move between nodes. After every fault is
/// healed and one node timeout plus a second has passed, every node's `who` must list exactly
/// the sessions the running nodes hold: no ghost, no one missing. Returns what differed.
fn chaos(seed: u64, planted: bool) -> Vec<String> {
    use crate::rng::SplitMix64;
    let mut rng = SplitMix64::new(seed);
    let n = 3;
    let multi = rng.below_inclusive(1) == 1;
    let each = move |node: u32| ServerConfig {
        duplicate_login: if multi {
            DuplicateLogin::Multi
        } else {
            DuplicateLogin::Replace
        },
        ..cfg(node)
    };
    let mut net = Net::new(n, each);
    if planted {
        for rig in &mut net.nodes {
            rig.server.plant_dead_nodes_users_stay();
        }
    }
    let drop_per_mille = rng.below_inclusive(300);
    let mut bus_rng = SplitMix64::new(seed ^ 0xB05);
    let dropping = std::rc::Rc::new(std::cell::Cell::new(true));
    let on = dropping.clone();
    net.drop = Some(Box::new(move |_, _, _| {
        on.get() && bus_rng.below_inclusive(999) < drop_per_mille
    }));
    let mut epochs = vec![1u64; n];
    let mut conns: Vec<Vec<ConnId>> = vec![Vec::new(); n];
    for _ in 0..60 {
        let node = rng.below_inclusive(n as u64 - 1) as usize;
        match rng.below_inclusive(9) {
            0..=3 if !net.crashed[node] => {
                // "x" is kept out: it is the observer at the end.
                let name = USERS[rng.below_inclusive(USERS.len() as u64 - 2) as usize];
                let c = net.login(node, name);
                conns[node].push(c);
            }
            4 | 5 if !net.crashed[node] && !conns[node].is_empty() => {
                let i = rng.below_inclusive(conns[node].len() as u64 - 1) as usize;
                let c = conns[node].swap_remove(i);
                if rng.below_inclusive(1) == 0 {
                    net.nodes[node].frame(c, ClientMsg::Logout);
                } else {
                    net.nodes[node].close(c);
                }
                net.settle();
            }
            6 if !net.crashed[node] => {
                net.crashed[node] = true;
                conns[node].clear();
            }
            6 => {
                let now = net.now();
                epochs[node] += 1;
                let mut fresh = Rig::new(each(node as u32), USERS);
                fresh.now = now;
                fresh
                    .server
                    .enable_cluster(now, ClusterConfig::new(epochs[node]));
                if planted {
                    fresh.server.plant_dead_nodes_users_stay();
                }
                fresh.server.handle_bus_link(now, true);
                fresh.pump();
                net.nodes[node] = fresh;
                net.crashed[node] = false;
                net.cut[node] = false;
                net.settle();
            }
            7 if !net.crashed[node] => {
                let now = net.now();
                let up = net.cut[node];
                net.cut[node] = !up;
                net.nodes[node].server.handle_bus_link(now, up);
                net.nodes[node].pump();
                net.settle();
            }
            _ => net.advance(Duration::from_millis(rng.below_inclusive(1500))),
        }
    }
    // Heal: links back, the bus reliable again. Crashed nodes stay down: their users must be
    // gone everywhere.
    dropping.set(false);
    for node in 0..n {
        if net.cut[node] && !net.crashed[node] {
            net.cut[node] = false;
            let now = net.now();
            net.nodes[node].server.handle_bus_link(now, true);
            net.nodes[node].pump();
        }
    }
    net.settle();
    net.advance(ClusterConfig::new(1).node_timeout + Duration::from_secs(1));
    let now = net.now();
    let mut truth: Vec<(String, u32, u64)> = Vec::new();
    for node in (0..n).filter(|&i| !net.crashed[i]) {
        for name in USERS {
            for at in net.nodes[node].server.sessions_of(&user(name)) {
                truth.push((name.to_string(), at.node.0, at.conn.0));
            }
        }
    }
    truth.sort();
    let mut wrong = Vec::new();
    for node in (0..n).filter(|&i| !net.crashed[i]) {
        let who = net.nodes[node].server.who(now);
        let online: BTreeSet<&str> = who.iter().map(|e| e.user.as_str()).collect();
        let truly: BTreeSet<&str> = truth.iter().map(|t| t.0.as_str()).collect();
        if online != truly {
            wrong.push(format!(
                "node {node} shows {online:?} online, the truth is {truly:?}"
            ));
        }
        let mut seen: Vec<(String, u32, u64)> = who
            .clone()
            .into_iter()
            .flat_map(|e| {
                e.sessions
                    .into_iter()
                    .map(move |s| (e.user.as_str().to_string(), s.node, s.conn))
            })
            .collect();
        seen.sort();
        if seen != truth {
            wrong.push(format!("node {node} sees {seen:?}, the truth is {truth:?}"));
        }
    }
    // What watchers are told (the announced state behind snapshots and diffs) agrees too.
    let running: Vec<usize> = (0..n).filter(|&i| !net.crashed[i]).collect();
    for node in running {
        let x = net.login(node, "x");
        let told: BTreeSet<String> = net.nodes[node]
            .take(x)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::PresenceSnapshot { entries } => Some(entries),
                _ => None,
            })
            .flatten()
            .filter(|e| e.presence != Presence::Offline)
            .map(|e| e.user.as_str().to_string())
            .collect();
        let truly: BTreeSet<String> = truth.iter().map(|t| t.0.clone()).collect();
        if told != truly {
            wrong.push(format!(
                "node {node} tells a watcher {told:?}, the truth is {truly:?}"
            ));
        }
        net.nodes[node].frame(x, ClientMsg::Logout);
        net.settle();
    }
    wrong
}

/// Seeds for `cargo test`; `BREEZE_CLUSTER_SEEDS` asks for more (a soak), and
/// `BREEZE_CLUSTER_SEED` replays one.
fn chaos_seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("BREEZE_CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count: u64 = std::env::var("BREEZE_CLUSTER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    (0..count).collect()
}

#[test]
fn presence_converges_with_no_ghosts_under_crashes_restarts_cuts_and_bus_loss() {
    for seed in chaos_seeds() {
        let wrong = chaos(seed, false);
        assert!(
            wrong.is_empty(),
            "seed {seed}: {wrong:#?}\nreplay: BREEZE_CLUSTER_SEED={seed} cargo test -p breeze-core --lib presence_converges"
        );
    }
}

#[test]
fn the_chaos_oracle_catches_a_dead_nodes_users_never_going_offline() {
    let caught = (0..200).find(|&seed| !chaos(seed, true).is_empty());
    assert!(
        caught.is_some(),
        "the planted bug went unnoticed in 200 seeds"
    );
}

/// An admin on one node kicks a user whose sessions are on two others: both end with the
/// admin's reason, and watchers everywhere see the user go offline once.
#[test]
fn an_admin_kick_on_one_node_ends_the_users_sessions_on_every_node() {
    let mut net = Net::new(3, |n| ServerConfig {
        admins: [user("x")].into(),
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let w = net.login(0, "w");
    let a = net.login(1, "u");
    let b = net.login(2, "u");
    let admin = net.nodes[0].agent("x");
    net.settle();
    net.nodes[0].take(w);
    net.nodes[0].take(admin);
    net.nodes[0].frame(admin, ClientMsg::AdminKick { user: user("u") });
    net.settle();
    let answers: Vec<ServerMsg> = net.nodes[0]
        .take(admin)
        .into_iter()
        .filter(|m| !matches!(m, ServerMsg::PresenceDiff { .. }))
        .collect();
    assert_eq!(
        answers,
        [ServerMsg::AdminDone {
            request: RequestKind::AdminKick,
            user: user("u"),
            sessions: 2,
        }]
    );
    assert_eq!(net.nodes[1].closed.get(&a), Some(&CloseReason::Kicked));
    assert_eq!(net.nodes[2].closed.get(&b), Some(&CloseReason::Kicked));
    assert_eq!(net.diffs(0, w), [entry("u", Presence::Offline)]);
    net.advance(Duration::from_secs(10));
    assert!(net.diffs(0, w).is_empty());
    for node in 0..3 {
        let who = net.nodes[node].server.who(net.now());
        assert!(
            !who.iter().any(|e| e.user == user("u")),
            "node {node}: {who:?}"
        );
    }
    assert!(!net.nodes[0].closed.contains_key(&admin));
}
