//! The cluster oracle: what really happened across the nodes, and whether Breeze told
//! everyone the truth about it.
//!
//! It never reads a node's state. It learns from the driver (which client wants to be
//! logged in, which node is down or cut off and since when), from every node's sockets
//! (the frames each host wrote: a `LoginOk` opens a session there, a `Bye` or the end of the
//! stream closes it) and from each client application's events.
//!
//! Checks made while the simulation runs:
//! * a node whose bus link is cut holds no session past its fence deadline (the instant its
//!   adapter noticed the cut plus `node_timeout - fence_margin`, plus a few ticks for the
//!   host to write): the others may declare it dead from then on, and nobody may be shown
//!   online by a node nobody can reach;
//! * no application sees a message twice, or one addressed to someone else, or one never
//!   sent; no client stops by itself; no request fails.
//!
//! Checks made after the heal (links healed, nodes up, the bus lossless again) and the
//! settle time, and again after the final round (every client running and logged in):
//! * every client that should be logged in is, and its view of every other user is the
//!   truth: online exactly when that user's client wants to be logged in (convergence, and
//!   no ghost in any view);
//! * at the nodes' sockets, each user has exactly one live session, across all nodes, when
//!   it wants one and none otherwise (no ghost session on any node);
//! * after the final round, every message acknowledged (`Sent`) to its sender reached its
//!   recipient's application, and every message a still-running client took was
//!   acknowledged.

use crate::cluster_plan::ClusterSimConfig;
use crate::log::EventLog;
use crate::oracle::user_name;
use crate::room_log::RoomLog;
use breeze_core::UserId;
use breeze_core::client::{ClientEvent, StopReason};
use breeze_core::codec::{decode, split_frame};
use breeze_core::message::{CloseReason, Presence, ServerMsg, Status};
use bytes::BytesMut;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub type SharedClusterOracle = Arc<Mutex<ClusterOracle>>;

pub fn lock(oracle: &SharedClusterOracle) -> MutexGuard<'_, ClusterOracle> {
    oracle.lock().unwrap_or_else(PoisonError::into_inner)
}

const MAX_VIOLATIONS: usize = 100;

/// A host writes what its core decided within a few ticks.
const WRITE_SLACK_TICKS: u32 = 4;

/// How late after a dead node's deadline its users may still be shown online: the bus's and
/// the network's delays and a tick or two (the goal is the node timeout + 100 ms).
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// What the oracle counted, for reports and scenario checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub node_crashes: u32,
    pub cuts: u32,
    pub fenced_byes: u32,
    pub logins: u32,
    pub messages_acked: u32,
    pub deliveries: u32,
}

/// One stream a node accepted.
#[derive(Debug)]
struct ServerConn {
    node: usize,
    tx: BytesMut,
    /// The user, from the `LoginOk` the node wrote; cleared by its `Bye`.
    session: Option<usize>,
    open: bool,
}

#[derive(Debug, Default)]
struct NodeLog {
    up: bool,
    epoch: u64,
    /// When the node must have fenced itself by, while its link is cut.
    fence_by: Option<Duration>,
    /// The violation was reported for this cut.
    told: bool,
}

/// Users whose sessions died with a node and whom nobody else will end: every watcher
/// must show them offline by the node's deadline at the others.
#[derive(Debug)]
struct Orphans {
    node: usize,
    died: Duration,
    by: Duration,
    users: Vec<usize>,
}

#[derive(Debug, Default)]
struct ClientLog {
    incarnation: u32,
    running: bool,
    logged_in: bool,
    view: BTreeMap<UserId, Presence>,
    stopped: Option<StopReason>,
    /// The driver's intent.
    alive: bool,
    logged_out: bool,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    from: usize,
    to: usize,
}

#[derive(Debug)]
pub struct ClusterOracle {
    cfg: ClusterSimConfig,
    users: Vec<UserId>,
    nodes: Vec<NodeLog>,
    clients: Vec<ClientLog>,
    conns: BTreeMap<u64, ServerConn>,
    next_conn: u64,
    messages: BTreeMap<u64, Sent>,
    /// (client, incarnation, client message id) → message.
    message_ids: BTreeMap<(usize, u32, u64), u64>,
    /// The room every user is in: what the applications got of it.
    rooms: RoomLog,
    acked: BTreeSet<(usize, u32, u64)>,
    /// Message → the (client, incarnation) applications that got it.
    deliveries: BTreeMap<u64, Vec<(usize, u32)>>,
    orphans: Vec<Orphans>,
    /// By user: (node, instant) of each of its sessions' ends.
    ended: BTreeMap<usize, Vec<(usize, Duration)>>,
    /// By node: when it crashed or its link was cut.
    lost_at: Vec<Vec<Duration>>,
    pub stats: ClusterStats,
    log: EventLog,
}

impl ClusterOracle {
    pub fn new(cfg: &ClusterSimConfig) -> ClusterOracle {
        ClusterOracle {
            cfg: cfg.clone(),
            users: (0..cfg.users).map(user_name).collect(),
            nodes: (0..cfg.nodes).map(|_| NodeLog::default()).collect(),
            clients: (0..cfg.users)
                .map(|_| ClientLog {
                    alive: true,
                    ..ClientLog::default()
                })
                .collect(),
            conns: BTreeMap::new(),
            next_conn: 0,
            messages: BTreeMap::new(),
            message_ids: BTreeMap::new(),
            rooms: RoomLog::default(),
            acked: BTreeSet::new(),
            deliveries: BTreeMap::new(),
            orphans: Vec::new(),
            ended: BTreeMap::new(),
            lost_at: vec![Vec::new(); cfg.nodes],
            stats: ClusterStats::default(),
            log: EventLog::new(MAX_VIOLATIONS),
        }
    }

    // ---- the record ----

    /// Adds a line to the event log; its hash is the run's fingerprint.
    pub fn trace(&mut self, at: Duration, what: fmt::Arguments<'_>) {
        self.log.trace(at, what);
    }

    pub fn violation(&mut self, at: Duration, what: String) {
        self.log.violation(at, what);
    }

    pub fn violations(&self) -> &[String] {
        self.log.violations()
    }

    pub fn trace_hash(&self) -> u64 {
        self.log.trace_hash()
    }

    pub fn tail(&self) -> Vec<String> {
        self.log.tail()
    }

    fn user_of(&self, user: &UserId) -> Option<usize> {
        self.users.iter().position(|u| u == user)
    }

    // ---- the nodes ----

    pub fn node_started(&mut self, node: usize, epoch: u64, cut: bool, at: Duration) {
        let fence = self.cfg.fence_after() + self.cfg.tick * WRITE_SLACK_TICKS;
        let n = &mut self.nodes[node];
        n.up = true;
        n.epoch = epoch;
        // Started with its link cut: it hears so at once.
        n.fence_by = cut.then_some(at + fence);
        n.told = false;
        self.trace(at, format_args!("n{node} starts (epoch {epoch})"));
    }

    pub fn node_crashed(&mut self, node: usize, at: Duration) {
        self.stats.node_crashes += 1;
        self.nodes[node].up = false;
        self.lost_at[node].push(at);
        self.trace(at, format_args!("n{node} crashes"));
        // Its streams close as its runtime drops their tasks, in an order that is not the
        // seed's (tokio's process-wide task ids): settle them here, in order, instead.
        let gone: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.node == node)
            .map(|(&k, _)| k)
            .collect();
        for conn in gone {
            self.server_dropped(conn, at);
        }
    }

    /// Node `node` died at `at` with the clients of `users`: a bus message it sent just
    /// before may still arrive within the bus's delay, and the others' deadline runs from
    /// the last one.
    pub fn orphaned(&mut self, node: usize, at: Duration, users: Vec<usize>) {
        if users.is_empty() {
            return;
        }
        let by = at + self.cfg.bus_delay.1 + self.cfg.node_timeout + DEADLINE_SLACK;
        self.orphans.push(Orphans {
            node,
            died: at,
            by,
            users,
        });
    }

    /// The node a client's live session is on, if the oracle saw exactly one.
    fn node_of(&self, h: usize) -> Option<usize> {
        let mut on = self
            .conns
            .values()
            .filter(|c| c.open && c.session == Some(h))
            .map(|c| c.node);
        match (on.next(), on.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        }
    }

    /// The node's link was cut; its adapter notices at `noticed`.
    pub fn node_cut(&mut self, node: usize, at: Duration, noticed: Duration) {
        self.stats.cuts += 1;
        self.lost_at[node].push(at);
        let fence = self.cfg.fence_after() + self.cfg.tick * WRITE_SLACK_TICKS;
        let n = &mut self.nodes[node];
        n.fence_by = Some(noticed + fence);
        n.told = false;
        self.trace(
            at,
            format_args!("n{node}'s bus link is cut (noticed at {noticed:?})"),
        );
    }

    pub fn node_healed(&mut self, node: usize, at: Duration) {
        self.nodes[node].fence_by = None;
        self.trace(at, format_args!("n{node}'s bus link is healed"));
    }

    pub fn node_up(&self, node: usize) -> bool {
        self.nodes[node].up
    }

    pub fn accepted(&mut self, node: usize, at: Duration) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            ServerConn {
                node,
                tx: BytesMut::new(),
                session: None,
                open: true,
            },
        );
        self.trace(at, format_args!("n{node} accepts s{conn}"));
        conn
    }

    pub fn server_wrote(&mut self, conn: u64, at: Duration, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.tx.extend_from_slice(data);
        let mut payloads = Vec::new();
        while let Ok(Some(p)) = split_frame(&mut c.tx, u32::MAX) {
            payloads.push(p);
        }
        for payload in payloads {
            match decode::<ServerMsg>(&payload) {
                Ok(ServerMsg::LoginOk { user, .. }) => {
                    let u = self.user_of(&user);
                    let node = self.conns[&conn].node;
                    self.trace(at, format_args!("n{node} s{conn}: session of {user}"));
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.session = u;
                    }
                }
                Ok(ServerMsg::Bye { reason }) => {
                    if reason == CloseReason::NodeFenced {
                        self.stats.fenced_byes += 1;
                    }
                    let node = self.conns[&conn].node;
                    self.trace(at, format_args!("n{node} s{conn}: Bye {reason:?}"));
                    self.session_ended(conn, at);
                }
                Ok(_) => {}
                Err(e) => self.violation(at, format!("s{conn}: undecodable server frame: {e}")),
            }
        }
    }

    /// A session's end, remembered per user: a node that missed the news (a lost bus
    /// message) keeps showing the user until it resyncs, or until the session's node dies.
    fn session_ended(&mut self, conn: u64, at: Duration) {
        if let Some(c) = self.conns.get_mut(&conn)
            && let Some(u) = c.session.take()
        {
            self.ended.entry(u).or_default().push((c.node, at));
        }
    }

    pub fn server_dropped(&mut self, conn: u64, at: Duration) {
        self.session_ended(conn, at);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.open = false;
            let node = c.node;
            self.trace(at, format_args!("n{node} s{conn} closed"));
        }
        // Closed streams tell nothing more.
        self.conns.remove(&conn);
    }

    /// The users with a live session on `node`, by stream.
    fn sessions_on(&self, node: usize) -> Vec<(u64, usize)> {
        self.conns
            .iter()
            .filter(|(_, c)| c.node == node && c.open)
            .filter_map(|(&k, c)| c.session.map(|u| (k, u)))
            .collect()
    }

    /// The clients with a live session on `node` now.
    pub fn clients_on(&self, node: usize) -> Vec<usize> {
        let users: BTreeSet<usize> = self.sessions_on(node).into_iter().map(|(_, u)| u).collect();
        users.into_iter().collect()
    }

    // ---- the clients ----

    pub fn client_started(&mut self, h: usize, at: Duration) -> u32 {
        let c = &mut self.clients[h];
        c.incarnation += 1;
        c.running = true;
        c.logged_in = false;
        c.view.clear();
        c.stopped = None;
        let incarnation = c.incarnation;
        self.trace(at, format_args!("c{h} starts (incarnation {incarnation})"));
        incarnation
    }

    pub fn client_crashed(&mut self, h: usize, at: Duration) {
        let c = &mut self.clients[h];
        c.running = false;
        c.logged_in = false;
        c.alive = false;
        self.trace(at, format_args!("c{h} crashes"));
    }

    pub fn client_restarting(&mut self, h: usize) {
        let c = &mut self.clients[h];
        c.alive = true;
        c.logged_out = false;
    }

    pub fn set_logged_out(&mut self, h: usize, out: bool) {
        self.clients[h].logged_out = out;
    }

    pub fn client_alive(&self, h: usize) -> bool {
        self.clients[h].alive && self.clients[h].running
    }

    pub fn client_incarnation(&self, h: usize) -> u32 {
        self.clients[h].incarnation
    }

    pub fn client_event(&mut self, h: usize, incarnation: u32, at: Duration, ev: ClientEvent) {
        if self.clients[h].incarnation != incarnation {
            return;
        }
        match &ev {
            ClientEvent::PresenceChanged { .. }
            | ClientEvent::PresenceSnapshot(_)
            | ClientEvent::Message(_)
            | ClientEvent::LoggedIn { .. }
            | ClientEvent::Disconnected { .. }
            | ClientEvent::Stopped(_)
            | ClientEvent::MessageSent { .. }
            | ClientEvent::Error { .. }
            | ClientEvent::SendFailed { .. } => self.trace(at, format_args!("c{h} {ev:?}")),
            _ => {}
        }
        match ev {
            ClientEvent::LoggedIn { user } => {
                if self.user_of(&user) != Some(h) {
                    self.violation(at, format!("c{h} logged in as {user}"));
                }
                self.stats.logins += 1;
                let c = &mut self.clients[h];
                c.logged_in = true;
                c.stopped = None;
            }
            ClientEvent::Disconnected { .. } => self.clients[h].logged_in = false,
            ClientEvent::Stopped(reason) => {
                let c = &mut self.clients[h];
                c.logged_in = false;
                c.stopped = Some(reason);
                if !(reason == StopReason::LoggedOut && c.logged_out) {
                    self.violation(at, format!("c{h} stopped by itself: {reason:?}"));
                }
            }
            ClientEvent::PresenceSnapshot(entries) => {
                let view = &mut self.clients[h].view;
                view.clear();
                for e in entries {
                    view.insert(e.user, e.presence);
                }
            }
            ClientEvent::PresenceChanged { user, presence } => {
                self.clients[h].view.insert(user, presence);
            }
            ClientEvent::MessageSent { id, .. } => {
                self.stats.messages_acked += 1;
                self.acked.insert((h, incarnation, id));
            }
            ClientEvent::Message(d) => {
                self.stats.deliveries += 1;
                let Some(k) = d.body.strip_prefix('m').and_then(|k| k.parse::<u64>().ok()) else {
                    return self.violation(at, format!("c{h}: unknown message {:?}", d.body));
                };
                let Some(sent) = self.messages.get(&k).copied() else {
                    return self.violation(at, format!("c{h}: message m{k} was never sent"));
                };
                if sent.to != h {
                    self.violation(at, format!("c{h}: got m{k}, addressed to u{}", sent.to));
                }
                if self.user_of(&d.from) != Some(sent.from) {
                    self.violation(at, format!("c{h}: m{k} claims to be from {}", d.from));
                }
                let got = self.deliveries.entry(k).or_default();
                if got.contains(&(h, incarnation)) {
                    self.violation(at, format!("c{h}'s application got m{k} twice"));
                } else {
                    got.push((h, incarnation));
                }
            }
            ClientEvent::RoomMessage(d) => {
                let users = &self.users;
                for w in self
                    .rooms
                    .delivered(h, incarnation, &d, |c| users[c].clone())
                {
                    self.violation(at, w);
                }
            }
            ClientEvent::SendFailed { id, code } => {
                self.violation(at, format!("c{h}: message #{id} refused: {code:?}"));
            }
            ClientEvent::Error { request, code } => {
                self.violation(at, format!("c{h}: {request:?} failed: {code:?}"));
            }
            _ => {}
        }
    }

    /// Room message `k` was handed to client `h`.
    pub fn room_message_sent(&mut self, k: u64, h: usize) {
        self.rooms.sent(k, h);
    }

    pub fn message_sent(&mut self, k: u64, from: usize, to: usize) {
        self.messages.insert(k, Sent { from, to });
    }

    pub fn message_id(&mut self, h: usize, incarnation: u32, id: u64, k: u64) {
        self.message_ids.insert((h, incarnation, id), k);
    }

    // ---- the checks ----

    /// Node `node`, whose link is cut, may be declared dead by the others from `at` on (the
    /// driver's reckoning from the bus): it must hold no session by then, whatever its
    /// adapter's lag — the property fencing exists for.
    pub fn check_declarable(&mut self, t: Duration, node: usize, at: Duration) {
        let n = &self.nodes[node];
        if !n.up || n.fence_by.is_none() || n.told || t < at {
            return;
        }
        let why = format!("can be declared dead since {:.3}s", at.as_secs_f64());
        self.report_held_sessions(t, node, &why);
    }

    /// A violation naming the sessions `node` still holds, if any, when it must hold none
    /// (`why`); told once per node.
    fn report_held_sessions(&mut self, t: Duration, node: usize, why: &str) {
        let live = self.sessions_on(node);
        if live.is_empty() {
            return;
        }
        self.nodes[node].told = true;
        let list: Vec<String> = live
            .iter()
            .map(|&(conn, u)| format!("{} (s{conn})", self.users[u]))
            .collect();
        self.violation(
            t,
            format!(
                "n{node} {why} but still holds sessions: {}",
                list.join(", ")
            ),
        );
    }

    /// After every tick: no session on a node past its fence deadline; a dead node's
    /// orphaned users offline at every watcher by its deadline.
    pub fn check_now(&mut self, t: Duration) {
        let due: Vec<Orphans> = {
            let (due, later) = std::mem::take(&mut self.orphans)
                .into_iter()
                .partition(|o| t >= o.by);
            self.orphans = later;
            due
        };
        for o in due {
            self.check_orphans(t, &o);
        }
        for node in 0..self.nodes.len() {
            let n = &self.nodes[node];
            let late = n.up && !n.told && n.fence_by.is_some_and(|by| t > by);
            if late {
                self.report_held_sessions(t, node, "has its link cut past its fence deadline");
            }
        }
    }

    /// Every watcher logged in through a node that is up and not cut off shows each orphan
    /// that has not come back offline.
    /// Until when a watcher's node may rightly still show `u` online although its session
    /// died with `node`: a session of `u` that ended on another node whose link was then cut
    /// (or which crashed) may never have been heard of as ended — the bus is at-most-once —
    /// so it lasts until that node's deadline at the others.
    fn stale_until(&self, u: usize, node: usize, t: Duration) -> Option<Duration> {
        let deadline = self.cfg.bus_delay.1 + self.cfg.node_timeout + DEADLINE_SLACK;
        self.ended
            .get(&u)?
            .iter()
            .filter(|&&(n, _)| n != node)
            .filter_map(|&(n, end)| {
                self.lost_at[n]
                    .iter()
                    .filter(|&&lost| lost >= end && lost <= t)
                    .map(|&lost| lost + deadline)
                    .max()
            })
            .max()
    }

    fn check_orphans(&mut self, t: Duration, o: &Orphans) {
        // Users whose news may be stale elsewhere are checked again at that deadline.
        let mut now = Vec::new();
        for &u in &o.users {
            match self.stale_until(u, o.node, t) {
                Some(later) if later > t => self.orphans.push(Orphans {
                    node: o.node,
                    died: o.died,
                    by: later,
                    users: vec![u],
                }),
                _ => now.push(u),
            }
        }
        let o = &Orphans {
            node: o.node,
            died: o.died,
            by: o.by,
            users: now,
        };
        let mut problems = Vec::new();
        for w in 0..self.clients.len() {
            let c = &self.clients[w];
            if !c.running || !c.logged_in {
                continue;
            }
            let Some(node) = self.node_of(w) else {
                continue;
            };
            if !self.nodes[node].up || self.nodes[node].fence_by.is_some() {
                continue;
            }
            for &u in &o.users {
                let back = self.clients[u].running;
                let shown = c.view.get(&self.users[u]).copied();
                if !back && shown.is_some_and(|p| p != Presence::Offline) {
                    problems.push(format!(
                        "{} (orphaned by n{} at {:.3}s) is still shown {shown:?} to c{w} on n{node}",
                        self.users[u],
                        o.node,
                        o.died.as_secs_f64()
                    ));
                }
            }
        }
        for p in problems {
            self.violation(t, format!("past the node deadline: {p}"));
        }
    }

    fn wants_online(&self, h: usize) -> bool {
        let c = &self.clients[h];
        c.alive && !c.logged_out
    }

    /// Views equal to the truth, one live session per wanted user, none for the others.
    pub fn check_converged(&mut self, t: Duration, when: &str) {
        let mut problems = Vec::new();
        let online = Status::Online.visible();
        for h in 0..self.clients.len() {
            let c = &self.clients[h];
            if !self.wants_online(h) {
                if c.running && c.logged_in {
                    problems.push(format!("c{h} is logged in, but was logged out"));
                }
                continue;
            }
            if !c.logged_in {
                problems.push(format!("c{h} is not logged in"));
                continue;
            }
            let expected: BTreeMap<UserId, Presence> = (0..self.users.len())
                .filter(|&u| u != h)
                .map(|u| {
                    let p = if self.wants_online(u) {
                        online
                    } else {
                        Presence::Offline
                    };
                    (self.users[u].clone(), p)
                })
                .collect();
            if c.view != expected {
                let diff: Vec<String> = expected
                    .iter()
                    .filter(|(u, p)| c.view.get(*u) != Some(*p))
                    .map(|(u, p)| format!("{u}: shown {:?}, truly {p:?}", c.view.get(u)))
                    .collect();
                problems.push(format!(
                    "c{h}'s view differs from the truth: {}",
                    diff.join(", ")
                ));
            }
        }
        let mut sessions: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for node in 0..self.nodes.len() {
            for (conn, u) in self.sessions_on(node) {
                sessions
                    .entry(u)
                    .or_default()
                    .push(format!("n{node} s{conn}"));
            }
        }
        for u in 0..self.users.len() {
            let live = sessions.get(&u).map_or(0, Vec::len);
            let wanted = usize::from(self.wants_online(u));
            if live != wanted {
                problems.push(format!(
                    "{} has {live} live sessions on the nodes ({}), wanted {wanted}",
                    self.users[u],
                    sessions.get(&u).map_or(String::new(), |l| l.join(", "))
                ));
            }
        }
        for p in problems {
            self.violation(t, format!("{when}: {p}"));
        }
    }

    /// After the final round: every acknowledged message reached its recipient, and no
    /// running client holds a message unacknowledged.
    pub fn check_messages(&mut self, t: Duration) {
        let mut problems = Vec::new();
        for (&(h, incarnation, id), &k) in &self.message_ids {
            let c = &self.clients[h];
            let current = c.incarnation == incarnation && c.running;
            if current && !self.acked.contains(&(h, incarnation, id)) {
                problems.push(format!("m{k} from c{h} (#{id}) was never acknowledged"));
            }
        }
        for key in &self.acked {
            let Some(&k) = self.message_ids.get(key) else {
                problems.push(format!("c{} got an ack for unknown id {}", key.0, key.2));
                continue;
            };
            if self.rooms.is_room_message(k) {
                let users = &self.users;
                let hosts = self.clients.len();
                problems.extend(
                    self.rooms
                        .check_reached(k, key.0, hosts, |c| users[c].clone()),
                );
                continue;
            }
            if self.deliveries.get(&k).is_none_or(Vec::is_empty) {
                let to = self.messages[&k].to;
                problems.push(format!(
                    "m{k} from c{} to {} was acknowledged but never delivered",
                    key.0, self.users[to]
                ));
            }
        }
        for p in problems {
            self.violation(t, p);
        }
    }
}
