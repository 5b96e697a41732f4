//! Scenario tests of the cluster port: several server cores in one virtual time, joined by a
//! bus that delivers at once, in order per sender, and drops what a test tells it to, and
//! sharing one store, as real nodes share one database.

use crate::cluster::{Body, ClusterConfig, ClusterMsg, Dest};
use crate::config::{DuplicateLogin, ServerConfig};
use crate::ids::{ConnId, NodeId};
use crate::message::{
    Attachment, ClientMsg, CloseReason, Delivery, ErrorCode, Presence, PresenceEntry, RequestKind,
    ServerMsg, Status,
};
use crate::testkit::rig::user;
use crate::testkit::{MemStore, Rig};
use crate::time::{Duration, Instant};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

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
    /// The database every node shares.
    store: Rc<RefCell<MemStore>>,
    /// A crashed node neither runs nor hears anything.
    crashed: Vec<bool>,
    /// A node whose bus link is cut: what it publishes and what is meant for it is lost.
    cut: Vec<bool>,
    /// When each node last got a bus message from each other node.
    heard: Vec<Vec<Option<Instant>>>,
    /// Drops a message from `from` to `to` when it answers true.
    drop: Option<DropRule>,
    /// Every node's cluster settings for an epoch.
    cluster: fn(u64) -> ClusterConfig,
}

impl Net {
    fn new(n: usize, each: impl Fn(u32) -> ServerConfig) -> Net {
        Net::with_cluster(n, each, ClusterConfig::new)
    }

    fn with_cluster(
        n: usize,
        each: impl Fn(u32) -> ServerConfig,
        cluster: fn(u64) -> ClusterConfig,
    ) -> Net {
        let store = Rig::store_of(USERS);
        let nodes = (0..n)
            .map(|i| process(&store, each(i as u32), cluster(1), Instant::ZERO))
            .collect();
        let mut net = Net {
            nodes,
            store,
            cluster,
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

    /// Node `node`'s process starts again under `epoch`: its connections are gone.
    fn restart(&mut self, node: usize, cfg: ServerConfig, epoch: u64) {
        let now = self.now();
        self.nodes[node] = process(&self.store, cfg, (self.cluster)(epoch), now);
        self.crashed[node] = false;
        self.cut[node] = false;
        self.settle();
    }

    fn login(&mut self, node: usize, name: &str) -> ConnId {
        let c = self.nodes[node].login(name, Status::Online);
        self.settle();
        c
    }

    /// `conn` on `node` sends `body` to `to` as its message `id`; the seq its `Sent` names.
    fn send(&mut self, node: usize, conn: ConnId, id: u64, to: &str, body: &str) -> u64 {
        self.send_with(node, conn, id, to, body, None)
    }

    /// `send` with an attachment (which `Body::Mail` does not carry: the recipient's node
    /// reads it from the mailbox).
    fn send_with(
        &mut self,
        node: usize,
        conn: ConnId,
        id: u64,
        to: &str,
        body: &str,
        attachment: Option<Attachment>,
    ) -> u64 {
        self.nodes[node].frame(
            conn,
            ClientMsg::Send {
                id,
                to: user(to),
                body: body.into(),
                attachment,
            },
        );
        self.settle();
        let sent = self.nodes[node]
            .take(conn)
            .into_iter()
            .find_map(|m| match m {
                ServerMsg::Sent { id: sent, seq } if sent == id => Some(seq),
                _ => None,
            });
        sent.expect("the message is stored")
    }

    /// The messages `conn` on `node` got since the last look, as (seq, body).
    fn delivered(&mut self, node: usize, conn: ConnId) -> Vec<(u64, String)> {
        self.nodes[node]
            .take(conn)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Deliver(Delivery { seq, body, .. }) => Some((seq, body)),
                _ => None,
            })
            .collect()
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

/// A node's process over the shared store, in cluster mode under `epoch`, its link up at `now`.
fn process(
    store: &Rc<RefCell<MemStore>>,
    cfg: ServerConfig,
    cluster: ClusterConfig,
    now: Instant,
) -> Rig {
    let mut rig = Rig::sharing(cfg, store.clone());
    rig.now = now;
    rig.server.enable_cluster(now, cluster);
    rig.server.handle_bus_link(now, true);
    rig.pump();
    rig
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
fn a_snapshot_too_big_for_one_bus_message_comes_in_parts_and_a_lost_part_is_asked_again() {
    let mut net = Net::with_cluster(2, cfg, |epoch| ClusterConfig {
        // Room for one user's state per part.
        snapshot_part_bytes: 16,
        ..ClusterConfig::new(epoch)
    });
    let x = net.login(1, "x");
    net.nodes[1].take(x);
    // Node 0's user states never reach node 1 one by one, and the first snapshot loses its
    // second part.
    let parts = Rc::new(RefCell::new(Vec::new()));
    let seen = parts.clone();
    net.drop = Some(Box::new(move |from, _, msg| match &msg.body {
        Body::User(_) => from == 0,
        Body::Snapshot { part, parts, .. } => {
            let mut seen = seen.borrow_mut();
            seen.push((*part, *parts));
            *part == 1 && seen.iter().filter(|(p, _)| *p == 1).count() == 1
        }
        _ => false,
    }));
    for name in ["u", "v", "w"] {
        net.login(0, name);
    }
    assert!(net.diffs(1, x).is_empty(), "lost: node 1 cannot know yet");
    // The heartbeat due now shows node 1 it is behind; the snapshot that answers lacks a
    // part.
    net.advance(Duration::ZERO);
    assert_eq!(parts.borrow().len(), 3, "one snapshot so far");
    assert!(
        net.diffs(1, x).is_empty(),
        "a snapshot missing a part was applied: {:?}",
        parts.borrow()
    );
    let every = ClusterConfig::new(1).heartbeat_every;
    // The next heartbeat asks again, and the whole snapshot comes.
    net.advance(every);
    let got: Vec<PresenceEntry> = net.diffs(1, x).concat();
    for name in ["u", "v", "w"] {
        assert!(got.contains(&entry(name, Presence::Online)[0]), "{got:?}");
    }
    let parts = parts.borrow();
    assert!(
        parts.iter().all(|&(_, n)| n >= 3) && parts.len() >= 6,
        "one user a part, twice: {parts:?}"
    );
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
    net.restart(0, cfg(0), 2);
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

/// The users' applications as the chaos run's message oracle sees them. Each takes every
/// `Deliver` its sessions get and acks it at once; the rig's storage answers at once, so an
/// ack sent on an open connection is never lost, and a message delivered to a session that
/// logged in after its ack is a server bug, not the at-least-once repeat a lost ack would
/// explain. A message acked after a session's login is still that session's: under `multi`
/// each session is a device of its own, which must get every message stored after its login,
/// whichever device acked it first.
#[derive(Default)]
struct Apps {
    /// Every message whose sender got `Sent`: seq → recipient.
    stored: BTreeMap<u64, String>,
    /// The recipient of each message sent, by its id, until its `Sent` comes.
    sending: BTreeMap<u64, String>,
    next_id: u64,
    /// Counts logins and rounds of acks, to order them.
    tick: u64,
    /// Per user, each seq its application has → the tick of its ack, once acked.
    has: BTreeMap<String, BTreeMap<u64, Option<u64>>>,
    /// Each session's login: the tick, and the store's last seq then.
    since: BTreeMap<(usize, u64, ConnId), (u64, u64)>,
    /// The seqs each session got.
    got: BTreeMap<(usize, u64, ConnId), BTreeSet<u64>>,
    /// The last seq each session (node, epoch, conn) got.
    last: BTreeMap<(usize, u64, ConnId), u64>,
    /// The last message id each session got from each sender (ids grow in sending order).
    last_from: BTreeMap<(usize, u64, ConnId, String), u64>,
    wrong: Vec<String>,
}

impl Apps {
    /// `name` logs in on `node`.
    fn login(&mut self, net: &mut Net, node: usize, name: &str, epochs: &[u64]) -> ConnId {
        let c = net.login(node, name);
        self.tick += 1;
        let last = net.store.borrow().last_seq();
        self.since
            .insert((node, epochs[node], c), (self.tick, last));
        c
    }

    /// Takes what every session on a running node received, then acks each delivery (all
    /// were made before any of these acks).
    fn collect(&mut self, net: &mut Net, conns: &[Vec<(ConnId, &'static str)>], epochs: &[u64]) {
        let mut acking = Vec::new();
        for node in (0..net.nodes.len()).filter(|&i| !net.crashed[i]) {
            for &(conn, name) in &conns[node] {
                let mut acks = Vec::new();
                for m in net.nodes[node].take(conn) {
                    match m {
                        ServerMsg::Sent { id, seq } => {
                            if let Some(to) = self.sending.remove(&id) {
                                self.stored.insert(seq, to);
                            }
                        }
                        ServerMsg::Deliver(d) => {
                            let last = self.last.entry((node, epochs[node], conn)).or_default();
                            if d.seq <= *last {
                                self.wrong.push(format!(
                                    "{name}'s session {conn:?} on node {node} got seq {} after {}",
                                    d.seq, *last
                                ));
                            }
                            *last = d.seq;
                            let from = d.from.as_str().to_string();
                            let key = (node, epochs[node], conn, from.clone());
                            let last_id = self.last_from.entry(key).or_default();
                            if d.id <= *last_id {
                                self.wrong.push(format!(
                                    "{name}'s session {conn:?} on node {node} got {from}'s #{} after #{}",
                                    d.id, *last_id
                                ));
                            }
                            *last_id = d.id;
                            let session = (node, epochs[node], conn);
                            self.got.entry(session).or_default().insert(d.seq);
                            let login = self.since.get(&session).map_or(0, |s| s.0);
                            let has = self.has.entry(name.to_string()).or_default();
                            if let Some(Some(acked)) = has.get(&d.seq)
                                && *acked < login
                            {
                                self.wrong.push(format!(
                                    "{name}'s session {conn:?} on node {node} got seq {} acked before its login",
                                    d.seq
                                ));
                            }
                            has.entry(d.seq).or_insert(None);
                            acks.push(d.seq);
                        }
                        _ => {}
                    }
                }
                if !acks.is_empty() && !net.nodes[node].closed.contains_key(&conn) {
                    acking.push((node, conn, name, acks));
                }
            }
        }
        self.tick += 1;
        for (node, conn, name, acks) in acking {
            let has = self.has.entry(name.to_string()).or_default();
            for seq in &acks {
                has.entry(*seq).or_default().get_or_insert(self.tick);
            }
            net.nodes[node].frame(conn, ClientMsg::Ack { seqs: acks });
        }
    }

    /// `from` on `node` sends a message to `to`.
    fn send(&mut self, net: &mut Net, node: usize, from: ConnId, to: &str) {
        self.next_id += 1;
        let id = self.next_id;
        self.sending.insert(id, to.to_string());
        net.nodes[node].frame(
            from,
            ClientMsg::Send {
                id,
                to: user(to),
                body: format!("m{id}"),
                attachment: None,
            },
        );
        net.settle();
    }

    /// Every stored message to `name` its application does not have.
    fn missing(&self, name: &str) -> Vec<u64> {
        let has = self.has.get(name);
        self.stored
            .iter()
            .filter(|(seq, to)| *to == name && !has.is_some_and(|h| h.contains_key(seq)))
            .map(|(&seq, _)| seq)
            .collect()
    }

    /// Every stored message to `name` above the store's last seq at the session's login that
    /// the session did not get.
    fn session_lacks(&self, name: &str, session: (usize, u64, ConnId)) -> Vec<u64> {
        let after = self.since.get(&session).map_or(0, |s| s.1);
        let got = self.got.get(&session);
        self.stored
            .range(after + 1..)
            .filter(|(seq, to)| *to == name && !got.is_some_and(|g| g.contains(seq)))
            .map(|(&seq, _)| seq)
            .collect()
    }
}

#[test]
fn a_message_reaches_a_recipient_on_another_node_once() {
    let mut net = Net::new(2, cfg);
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    let seq = net.send(0, u, 1, "v", "hello");
    assert_eq!(net.delivered(1, v), [(seq, "hello".to_string())]);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(1, v).is_empty(), "once");
}

#[test]
fn a_lost_mail_notice_is_made_good_by_the_next_heartbeats_resync() {
    let mut net = Net::new(2, cfg);
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    net.drop = Some(Box::new(|_, _, msg| matches!(msg.body, Body::Mail { .. })));
    let seq = net.send(0, u, 1, "v", "hello");
    net.drop = None;
    assert!(
        net.delivered(1, v).is_empty(),
        "lost: node 1 cannot know yet"
    );
    // Node 0's next heartbeat shows node 1 the gap; the snapshot makes v's session read.
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.delivered(1, v), [(seq, "hello".to_string())]);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(1, v).is_empty(), "once");
}

#[test]
fn a_dead_nodes_lost_notice_is_made_good_when_it_is_declared_dead() {
    let mut net = Net::new(2, cfg);
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    net.drop = Some(Box::new(|_, _, msg| matches!(msg.body, Body::Mail { .. })));
    let seq = net.send(0, u, 1, "v", "last words");
    // Node 0 dies before any number of its could show the loss.
    net.crashed[0] = true;
    net.drop = None;
    let deadline = net.heard[1][0].expect("heard") + ClusterConfig::new(1).node_timeout;
    net.advance(deadline - net.now() - Duration::from_millis(1));
    assert!(net.delivered(1, v).is_empty());
    net.advance(Duration::from_millis(1));
    assert_eq!(net.delivered(1, v), [(seq, "last words".to_string())]);
}

/// Node 1 is cut off before node 0 (re)starts, so node 0 never hears of it: no gap and no
/// deadline can tell node 0 of a message stored through node 1 before it fenced itself and
/// died. The read one node timeout after node 0's link came up brings it.
#[test]
fn a_message_stored_through_a_node_never_heard_from_comes_one_node_timeout_after_the_start() {
    let mut net = Net::new(2, cfg);
    let now = net.now();
    net.cut[1] = true;
    net.nodes[1].server.handle_bus_link(now, false);
    net.restart(0, cfg(0), 2);
    let started = net.now();
    let v = net.login(0, "v");
    net.nodes[0].take(v);
    let u = net.login(1, "u");
    let seq = net.send(1, u, 1, "v", "unheard");
    net.crashed[1] = true;
    let timeout = ClusterConfig::new(1).node_timeout;
    net.advance(started + timeout - net.now() - Duration::from_millis(1));
    assert!(net.delivered(0, v).is_empty());
    net.advance(Duration::from_millis(1));
    assert_eq!(net.delivered(0, v), [(seq, "unheard".to_string())]);
}

#[test]
fn a_recipient_on_two_nodes_gets_each_message_once_on_both() {
    let mut net = Net::new(3, |n| ServerConfig {
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let phone = net.login(0, "v");
    let laptop = net.login(1, "v");
    net.nodes[0].take(phone);
    net.nodes[1].take(laptop);
    // From the phone's own node, then from a third.
    let u = net.login(0, "u");
    let w = net.login(2, "w");
    let a = net.send(0, u, 1, "v", "from u");
    let b = net.send(2, w, 1, "v", "from w");
    let want = [(a, "from u".to_string()), (b, "from w".to_string())];
    assert_eq!(net.delivered(0, phone), want);
    assert_eq!(net.delivered(1, laptop), want);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(0, phone).is_empty());
    assert!(net.delivered(1, laptop).is_empty());
}

/// Under `multi` the phone acks a message before the laptop's read on another node has run
/// (its notice was lost): the laptop still gets it, once.
#[test]
fn a_device_gets_a_message_its_sibling_acked_before_its_read_ran() {
    let mut net = Net::new(2, |n| ServerConfig {
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let phone = net.login(0, "v");
    let laptop = net.login(1, "v");
    net.nodes[0].take(phone);
    net.nodes[1].take(laptop);
    let u = net.login(0, "u");
    net.drop = Some(Box::new(|_, _, msg| matches!(msg.body, Body::Mail { .. })));
    let seq = net.send(0, u, 1, "v", "hello");
    net.drop = None;
    let want = [(seq, "hello".to_string())];
    assert_eq!(net.delivered(0, phone), want);
    net.nodes[0].frame(phone, ClientMsg::Ack { seqs: vec![seq] });
    assert_eq!(net.store.borrow().undelivered(&user("v")), 0, "acked");
    assert!(net.delivered(1, laptop).is_empty(), "not read yet");
    // Node 0's next heartbeat shows node 1 the gap; the laptop reads after the ack.
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.delivered(1, laptop), want);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(0, phone).is_empty());
    assert!(net.delivered(1, laptop).is_empty(), "once");
}

/// A device logging in later is not sent what its sibling acked before (that is History),
/// at the login nor at any catch-up after it; what is stored after the login it gets.
#[test]
fn a_later_device_gets_no_acked_history_but_everything_after_its_login() {
    let mut net = Net::new(2, |n| ServerConfig {
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let phone = net.login(0, "v");
    let u = net.login(0, "u");
    let old = net.send(0, u, 1, "v", "old");
    assert_eq!(net.delivered(0, phone), [(old, "old".to_string())]);
    net.nodes[0].frame(phone, ClientMsg::Ack { seqs: vec![old] });
    let laptop = net.login(1, "v");
    let login: Vec<ServerMsg> = net.nodes[1]
        .take(laptop)
        .into_iter()
        .filter(|m| matches!(m, ServerMsg::Deliver(_) | ServerMsg::OfflineDone { .. }))
        .collect();
    assert_eq!(login, [ServerMsg::OfflineDone { count: 0 }]);
    net.drop = Some(Box::new(|_, _, msg| matches!(msg.body, Body::Mail { .. })));
    let new = net.send(0, u, 2, "v", "new");
    net.drop = None;
    assert_eq!(net.delivered(0, phone), [(new, "new".to_string())]);
    net.nodes[0].frame(phone, ClientMsg::Ack { seqs: vec![new] });
    // The resync makes the laptop read above its login's mark: the new one, not the old.
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.delivered(1, laptop), [(new, "new".to_string())]);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(1, laptop).is_empty());
}

#[test]
fn a_recipient_offline_everywhere_gets_it_at_the_next_login_on_any_node() {
    let mut net = Net::new(3, cfg);
    let u = net.login(0, "u");
    let seq = net.send(0, u, 1, "v", "while you were out");
    net.advance(ClusterConfig::new(1).heartbeat_every);
    let v = net.login(2, "v");
    let got = net.nodes[2].take(v);
    let tail: Vec<&ServerMsg> = got
        .iter()
        .filter(|m| matches!(m, ServerMsg::Deliver(_) | ServerMsg::OfflineDone { .. }))
        .collect();
    assert!(
        matches!(tail[..], [ServerMsg::Deliver(d), ServerMsg::OfflineDone { count: 1 }] if d.seq == seq),
        "{got:?}"
    );
}

#[test]
fn messages_from_two_nodes_arrive_in_seq_order_once_even_with_notices_lost() {
    let mut net = Net::new(3, cfg);
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    let w = net.login(2, "w");
    // Every other notice from node 0 is lost.
    let mut mails = 0;
    net.drop = Some(Box::new(move |from, _, msg| {
        let mail = from == 0 && matches!(msg.body, Body::Mail { .. });
        mails += u32::from(mail);
        mail && mails % 2 == 0
    }));
    let mut want = Vec::new();
    for i in 1..=4 {
        for (node, conn, name) in [(0, u, "u"), (2, w, "w")] {
            let body = format!("{name}{i}");
            want.push((net.send(node, conn, i, "v", &body), body));
        }
    }
    net.drop = None;
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.delivered(1, v), want);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(1, v).is_empty());
}

fn picture() -> Option<Attachment> {
    Some(Attachment {
        mime: "image/png".into(),
        name: "p.png".into(),
        data: vec![7; 64],
    })
}

#[test]
fn a_carried_message_is_pushed_without_a_mailbox_read_on_either_node() {
    let mut net = Net::new(2, |n| ServerConfig {
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let v = net.login(1, "v");
    let v0 = net.login(0, "v");
    net.nodes[1].take(v);
    net.nodes[0].take(v0);
    let u = net.login(0, "u");
    let reads = net.store.borrow().mailbox_reads;
    let first = net.send(0, u, 1, "v", "one");
    let second = net.send(0, u, 2, "v", "two");
    let want = [(first, "one".to_string()), (second, "two".to_string())];
    assert_eq!(net.delivered(1, v), want, "on the other node");
    assert_eq!(net.delivered(0, v0), want, "on the sender's node");
    assert_eq!(net.store.borrow().mailbox_reads, reads, "pushed, not read");
    // An attachment is not carried on the bus: the other node reads that one; the sender's
    // node has it in hand and pushes it.
    let third = net.send_with(0, u, 3, "v", "three", picture());
    assert_eq!(net.delivered(1, v), [(third, "three".to_string())]);
    assert_eq!(net.delivered(0, v0), [(third, "three".to_string())]);
    assert_eq!(net.store.borrow().mailbox_reads, reads + 1);
}

#[test]
fn a_carried_message_whose_predecessor_is_missing_is_read_not_pushed() {
    let mut net = Net::new(3, cfg);
    let v = net.login(2, "v");
    net.nodes[2].take(v);
    let u = net.login(0, "u");
    let w = net.login(1, "w");
    // u's message to v reaches node 2 late: its notice is held back.
    net.drop = Some(Box::new(|from, to, msg| {
        from == 0 && to == 2 && matches!(msg.body, Body::Mail { .. })
    }));
    let first = net.send(0, u, 1, "v", "first");
    net.drop = None;
    // w's message names the first as its predecessor, which v's session lacks: the read
    // brings both, in order, rather than a push of the second alone.
    let second = net.send(1, w, 1, "v", "second");
    assert_eq!(
        net.delivered(2, v),
        [(first, "first".to_string()), (second, "second".to_string())]
    );
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(net.delivered(2, v).is_empty(), "once");
}

#[test]
fn a_burst_of_notices_makes_one_mailbox_read_at_a_time_per_session() {
    let mut net = Net::new(2, cfg);
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    // Node 1's storage answers only when the test says.
    net.nodes[1].deferred = Some(Vec::new());
    // With attachments, so the notices carry no message and each asks for a read.
    let want: Vec<(u64, String)> = (1..=5)
        .map(|i| {
            let body = format!("m{i}");
            (net.send_with(0, u, i, "v", &body, picture()), body)
        })
        .collect();
    let reads = |net: &Net| net.nodes[1].deferred.as_ref().map_or(0, Vec::len);
    assert_eq!(reads(&net), 1, "five notices, one read in flight");
    // The first read was made after the first message only; the others asked for one more.
    net.nodes[1].complete(0);
    assert_eq!(net.delivered(1, v), want[..1]);
    assert_eq!(reads(&net), 1);
    net.nodes[1].complete(0);
    assert_eq!(net.delivered(1, v), want[1..]);
    assert_eq!(reads(&net), 0, "nothing more to read");
}

#[test]
fn a_message_stored_while_the_logins_mailbox_is_read_comes_before_offline_done() {
    let mut net = Net::new(2, cfg);
    let u = net.login(0, "u");
    net.nodes[1].deferred = Some(Vec::new());
    let v = net.nodes[1].login("v", Status::Online);
    net.nodes[1].complete(0);
    // The profile cards (version 2), read before the mailbox.
    net.nodes[1].complete(0);
    net.settle();
    // The login's read is out (and found the mailbox empty) when the message is stored.
    let seq = net.send(0, u, 1, "v", "just in time");
    net.nodes[1].complete(0);
    net.nodes[1].complete(0);
    let got: Vec<ServerMsg> = net.nodes[1]
        .take(v)
        .into_iter()
        .filter(|m| matches!(m, ServerMsg::Deliver(_) | ServerMsg::OfflineDone { .. }))
        .collect();
    assert!(
        matches!(&got[..], [ServerMsg::Deliver(d), ServerMsg::OfflineDone { count: 1 }] if d.seq == seq),
        "{got:?}"
    );
}

#[test]
fn a_catch_up_pages_like_a_login_and_tells_no_offline_done() {
    let mut net = Net::new(2, |n| ServerConfig {
        mailbox_page: 2,
        ..cfg(n)
    });
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    net.drop = Some(Box::new(|_, _, msg| matches!(msg.body, Body::Mail { .. })));
    let want: Vec<(u64, String)> = (1..=5)
        .map(|i| (net.send(0, u, i, "v", &format!("m{i}")), format!("m{i}")))
        .collect();
    net.drop = None;
    net.advance(ClusterConfig::new(1).heartbeat_every);
    let mut got = Vec::new();
    for _ in 0..5 {
        let page: Vec<ServerMsg> = net.nodes[1].take(v);
        assert!(
            !page
                .iter()
                .any(|m| matches!(m, ServerMsg::OfflineDone { .. })),
            "{page:?}"
        );
        let seqs: Vec<u64> = page
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Deliver(d) => Some(d.seq),
                _ => None,
            })
            .collect();
        got.extend(page.into_iter().filter_map(|m| match m {
            ServerMsg::Deliver(d) => Some((d.seq, d.body)),
            _ => None,
        }));
        if seqs.is_empty() {
            break;
        }
        assert!(seqs.len() <= 2, "pages of two: {seqs:?}");
        net.nodes[1].frame(v, ClientMsg::Ack { seqs });
    }
    assert_eq!(got, want);
}

#[test]
fn a_mailbox_read_without_room_in_the_budget_is_made_at_the_next_heartbeat() {
    use crate::config::Budget;
    let mut net = Net::new(2, |n| {
        let mut c = cfg(n);
        c.work.storage = Budget {
            per_conn: 1,
            total: 64,
        };
        c
    });
    let v = net.login(1, "v");
    net.nodes[1].take(v);
    let u = net.login(0, "u");
    // v's one storage place is taken by a history read that storage has not answered yet.
    net.nodes[1].deferred = Some(Vec::new());
    net.nodes[1].frame(
        v,
        ClientMsg::History {
            with: user("u"),
            before: None,
            limit: 10,
        },
    );
    // An attachment, so the notice carries no message and v's session must read.
    let seq = net.send_with(0, u, 1, "v", "hello", picture());
    assert!(net.delivered(1, v).is_empty(), "no room: owed");
    net.nodes[1].complete(0);
    net.nodes[1].deferred = None;
    assert!(
        net.delivered(1, v).is_empty(),
        "made at the heartbeat, not before"
    );
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(net.delivered(1, v), [(seq, "hello".to_string())]);
}

/// The sessions on running nodes, as (node, conn).
fn senders(net: &Net, conns: &[Vec<(ConnId, &'static str)>]) -> Vec<(usize, ConnId)> {
    (0..net.nodes.len())
        .filter(|&i| !net.crashed[i])
        .flat_map(|i| conns[i].iter().map(move |&(c, _)| (i, c)))
        .collect()
}

/// A seeded run: nodes crash and restart under new epochs, links are cut and healed, the bus
/// drops at a seeded rate, clients log in, out and move between nodes, and send each other
/// messages. After every fault is healed and one node timeout plus a second has passed:
/// every node's `who` must list exactly the sessions the running nodes hold (no ghost, no one
/// missing); every user with a session must have every message stored for them, and every
/// user, once logged in, too; no session may get a seq twice or out of order, and no
/// application a message again after acking it. Returns what differed.
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
    let planting = |rig: &mut Rig| {
        if planted {
            rig.server.plant_dead_nodes_users_stay();
        }
    };
    net.nodes.iter_mut().for_each(planting);
    let drop_per_mille = rng.below_inclusive(300);
    let mut bus_rng = SplitMix64::new(seed ^ 0xB05);
    let dropping = std::rc::Rc::new(std::cell::Cell::new(true));
    let on = dropping.clone();
    net.drop = Some(Box::new(move |_, _, _| {
        on.get() && bus_rng.below_inclusive(999) < drop_per_mille
    }));
    let mut epochs = vec![1u64; n];
    let mut conns: Vec<Vec<(ConnId, &'static str)>> = vec![Vec::new(); n];
    let mut apps = Apps::default();
    // "x" is kept out of logins and messages: it is the observer at the end.
    let people = &USERS[..USERS.len() - 1];
    let pick = |rng: &mut SplitMix64, len: usize| rng.below_inclusive(len as u64 - 1) as usize;
    for _ in 0..60 {
        let node = pick(&mut rng, n);
        let senders = senders(&net, &conns);
        match rng.below_inclusive(13) {
            0..=3 if !net.crashed[node] => {
                let name = people[pick(&mut rng, people.len())];
                let c = apps.login(&mut net, node, name, &epochs);
                conns[node].push((c, name));
            }
            4 | 5 if !net.crashed[node] && !conns[node].is_empty() => {
                let i = pick(&mut rng, conns[node].len());
                let (c, _) = conns[node].swap_remove(i);
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
                epochs[node] += 1;
                net.restart(node, each(node as u32), epochs[node]);
                planting(&mut net.nodes[node]);
            }
            7 if !net.crashed[node] => {
                let now = net.now();
                let up = net.cut[node];
                net.cut[node] = !up;
                net.nodes[node].server.handle_bus_link(now, up);
                net.nodes[node].pump();
                net.settle();
            }
            10..=13 if !senders.is_empty() => {
                let (node, from) = senders[pick(&mut rng, senders.len())];
                let to = people[pick(&mut rng, people.len())];
                apps.send(&mut net, node, from, to);
            }
            _ => net.advance(Duration::from_millis(rng.below_inclusive(1500))),
        }
        apps.collect(&mut net, &conns, &epochs);
    }
    // A last burst while the bus still drops: the news of these can only come back through
    // the heartbeat's seq check and the resync.
    for (node, from) in senders(&net, &conns) {
        let to = people[pick(&mut rng, people.len())];
        apps.send(&mut net, node, from, to);
    }
    apps.collect(&mut net, &conns, &epochs);
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
    apps.collect(&mut net, &conns, &epochs);
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
    let mut wrong = std::mem::take(&mut apps.wrong);
    for name in truth.iter().map(|t| t.0.as_str()).collect::<BTreeSet<_>>() {
        let missing = apps.missing(name);
        if !missing.is_empty() {
            wrong.push(format!("{name} is online and lacks seqs {missing:?}"));
        }
    }
    // Each session (each device, under `multi`) has every message stored since its login.
    for node in (0..n).filter(|&i| !net.crashed[i]) {
        for &(conn, name) in &conns[node] {
            if net.nodes[node].closed.contains_key(&conn) {
                continue;
            }
            let lacks = apps.session_lacks(name, (node, epochs[node], conn));
            if !lacks.is_empty() {
                wrong.push(format!(
                    "{name}'s session {conn:?} on node {node} lacks seqs {lacks:?} stored since its login"
                ));
            }
        }
    }
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
    for &node in &running {
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
    // Everyone logs in (on a running node; node 0 restarts if none runs) and gets the rest.
    let node = running.first().copied().unwrap_or_else(|| {
        epochs[0] += 1;
        net.restart(0, each(0), epochs[0]);
        conns[0].clear();
        0
    });
    for &name in people {
        let c = apps.login(&mut net, node, name, &epochs);
        conns[node].push((c, name));
        apps.collect(&mut net, &conns, &epochs);
        let missing = apps.missing(name);
        if !missing.is_empty() {
            wrong.push(format!("{name} logged in and lacks seqs {missing:?}"));
        }
    }
    wrong.extend(apps.wrong);
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
fn presence_and_messages_converge_under_crashes_restarts_cuts_and_bus_loss() {
    for seed in chaos_seeds() {
        let wrong = chaos(seed, false);
        assert!(
            wrong.is_empty(),
            "seed {seed}: {wrong:#?}\nreplay: BREEZE_CLUSTER_SEED={seed} cargo test -p breeze-core --lib presence_and_messages_converge"
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

/// A contact group change made through one node reaches the user's devices on the others
/// (the groups are in the shared store; the bus carries the change), but not a device whose
/// connection speaks version 1, nor the user's watchers: groups are private.
#[test]
fn a_group_change_reaches_the_users_devices_on_every_node() {
    let mut net = Net::new(3, |n| ServerConfig {
        duplicate_login: DuplicateLogin::Multi,
        ..cfg(n)
    });
    let w = net.login(2, "w");
    let phone = net.login(0, "u");
    let laptop = net.login(1, "u");
    let old = net.nodes[2].login_speaking("u", Status::Online, 1);
    net.settle();
    for (node, conn) in [(0, phone), (1, laptop), (2, old), (2, w)] {
        net.nodes[node].take(conn);
    }
    net.nodes[0].frame(
        phone,
        ClientMsg::CreateGroup {
            name: "家人".into(),
        },
    );
    net.settle();
    let told = |msgs: Vec<ServerMsg>| {
        msgs.into_iter()
            .filter(|m| matches!(m, ServerMsg::GroupsChanged { .. }))
            .count()
    };
    assert_eq!(told(net.nodes[0].take(phone)), 1);
    assert_eq!(
        told(net.nodes[1].take(laptop)),
        1,
        "the device on another node"
    );
    assert_eq!(told(net.nodes[2].take(old)), 0, "a version 1 device");
    assert_eq!(told(net.nodes[2].take(w)), 0, "a watcher");
}

// ---- rooms across nodes ----

fn room_frames(net: &mut Net, node: usize, conn: ConnId) -> (Vec<u64>, Vec<(u64, String)>) {
    let mut rooms = Vec::new();
    let mut got = Vec::new();
    for m in net.nodes[node].take(conn) {
        match m {
            ServerMsg::RoomMembers {
                room, full: true, ..
            } => rooms.push(room),
            ServerMsg::RoomDeliver(d) => got.push((d.seq, d.body)),
            _ => {}
        }
    }
    (rooms, got)
}

fn room_say(net: &mut Net, node: usize, conn: ConnId, room: u64, id: u64, body: &str) {
    net.nodes[node].frame(
        conn,
        ClientMsg::RoomSend {
            id,
            room,
            body: body.into(),
        },
    );
    net.settle();
}

/// u (node 0) creates a room with v (node 1) and w (node 2) in it; every session has been
/// told of the room and has nothing waiting.
fn room_on_three_nodes(net: &mut Net) -> (u64, [ConnId; 3]) {
    let conns = [net.login(0, "u"), net.login(1, "v"), net.login(2, "w")];
    for (node, &c) in conns.iter().enumerate() {
        net.nodes[node].take(c);
    }
    net.nodes[0].frame(
        conns[0],
        ClientMsg::CreateRoom {
            name: "team".into(),
        },
    );
    net.settle();
    let (rooms, _) = room_frames(net, 0, conns[0]);
    let room = rooms[0];
    for name in ["v", "w"] {
        net.nodes[0].frame(
            conns[0],
            ClientMsg::RoomInvite {
                room,
                user: user(name),
                role: crate::message::RoomRole::Member,
            },
        );
        net.settle();
    }
    for (node, &c) in conns.iter().enumerate().skip(1) {
        let (rooms, _) = room_frames(net, node, c);
        assert_eq!(
            rooms,
            [room],
            "node {node}'s member is told of the room through the bus"
        );
    }
    net.nodes[0].take(conns[0]);
    (room, conns)
}

#[test]
fn a_room_message_reaches_members_on_every_node_once_in_seq_order() {
    let mut net = Net::new(3, cfg);
    let (room, conns) = room_on_three_nodes(&mut net);
    let mut id = 0;
    for round in 0..3 {
        for (node, &c) in conns.iter().enumerate() {
            id += 1;
            room_say(&mut net, node, c, room, id, &format!("{round}/{node}"));
        }
    }
    for (node, &c) in conns.iter().enumerate() {
        let (_, got) = room_frames(&mut net, node, c);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (1..=9).collect::<Vec<_>>(), "node {node}: {got:?}");
    }
}

#[test]
fn a_room_seq_whose_news_is_late_is_read_before_the_next_and_a_lost_one_is_resynced() {
    let mut net = Net::new(3, cfg);
    let (room, [u, v, w]) = room_on_three_nodes(&mut net);
    // Node 0's notice of seq 1 never reaches node 1: v's session sees seq 2 (from node 2)
    // first, and reads the room rather than skip seq 1.
    net.drop = Some(Box::new(|from, to, msg| {
        from == 0 && to == 1 && matches!(msg.body, Body::RoomMail { .. })
    }));
    room_say(&mut net, 0, u, room, 1, "one");
    net.drop = None;
    assert!(
        room_frames(&mut net, 1, v).1.is_empty(),
        "lost: node 1 cannot know yet"
    );
    room_say(&mut net, 2, w, room, 2, "two");
    assert_eq!(
        room_frames(&mut net, 1, v).1,
        [(1, "one".to_string()), (2, "two".to_string())]
    );
    // Node 0's next heartbeat shows node 1 the gap; the resync reads the rooms again and
    // finds nothing new: nothing is sent twice.
    net.drop = Some(Box::new(|from, to, msg| {
        from == 0 && to == 1 && matches!(msg.body, Body::RoomMail { .. })
    }));
    room_say(&mut net, 0, u, room, 3, "three");
    net.drop = None;
    assert!(room_frames(&mut net, 1, v).1.is_empty());
    net.advance(ClusterConfig::new(1).heartbeat_every);
    assert_eq!(room_frames(&mut net, 1, v).1, [(3, "three".to_string())]);
    net.advance(ClusterConfig::new(1).node_timeout);
    assert!(room_frames(&mut net, 1, v).1.is_empty(), "once");
    for (node, c) in [(0, u), (2, w)] {
        let seqs: Vec<u64> = room_frames(&mut net, node, c)
            .1
            .iter()
            .map(|g| g.0)
            .collect();
        assert_eq!(seqs, [1, 2, 3], "node {node}");
    }
}

#[test]
fn a_member_removed_through_one_node_is_told_on_another_and_gets_no_more() {
    let mut net = Net::new(3, cfg);
    let (room, [u, v, w]) = room_on_three_nodes(&mut net);
    net.nodes[0].frame(
        u,
        ClientMsg::RoomRemove {
            room,
            user: user("v"),
        },
    );
    net.settle();
    let left = net.nodes[1]
        .take(v)
        .into_iter()
        .any(|m| m == ServerMsg::RoomLeft { room });
    assert!(left, "v's session on node 1 is told it left");
    let change = net.nodes[2].take(w).into_iter().any(|m| {
        matches!(m, ServerMsg::RoomMembers { full: false, ref members, .. }
            if members.iter().any(|m| m.user == user("v") && m.role.is_none()))
    });
    assert!(change, "w on node 2 sees v leave");
    room_say(&mut net, 2, w, room, 1, "after");
    assert!(room_frames(&mut net, 1, v).1.is_empty());
    assert_eq!(room_frames(&mut net, 0, u).1, [(1, "after".to_string())]);
}

#[test]
fn a_member_whose_removal_news_was_lost_is_told_at_its_next_read_of_the_room() {
    let mut net = Net::new(3, cfg);
    let (room, [u, v, _]) = room_on_three_nodes(&mut net);
    net.drop = Some(Box::new(|_, to, msg| {
        to == 1 && matches!(msg.body, Body::RoomChanged { .. } | Body::RoomMail { .. })
    }));
    net.nodes[0].frame(
        u,
        ClientMsg::RoomRemove {
            room,
            user: user("v"),
        },
    );
    net.settle();
    room_say(&mut net, 0, u, room, 1, "not for v");
    net.drop = None;
    assert!(net.nodes[1].take(v).is_empty(), "node 1 heard nothing");
    // The heartbeat shows node 1 a gap; the resync reads v's rooms, and the store says v
    // is no longer in this one.
    net.advance(ClusterConfig::new(1).heartbeat_every);
    let got = net.nodes[1].take(v);
    assert!(got.contains(&ServerMsg::RoomLeft { room }), "{got:?}");
    assert!(
        !got.iter().any(|m| matches!(m, ServerMsg::RoomDeliver(_))),
        "{got:?}"
    );
}
