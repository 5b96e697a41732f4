//! One server and several clients on a virtual network, in virtual time: the core's own
//! whole-system harness, in the manner of quinn-proto's test `Pair`. Time jumps straight to
//! the next thing that happens — a frame arriving, a storage result, a deadline — so a
//! minute of heartbeats costs microseconds.
//!
//! The harness is also an oracle. While it runs it checks, independently of the server's
//! state: a silent connection is closed exactly at its last frame + timeout; no watcher is
//! told the same presence twice in a row, nor about itself; an invisible user is never
//! announced visible; no application sees a message twice or a message for someone else; no
//! client acks a message its application has not taken (under `AckMode::Manual`: acked).
//! `check_converged` compares every logged-in client's view with the truth the harness
//! derives from what each client was asked to do.

use super::store::MemStore;
use crate::client::{
    AckMode, Client, ClientConfig, ClientEvent, ClientOutput, ClientState, GroupBook, Mode,
};
use crate::codec::decode;
use crate::config::ServerConfig;
use crate::ids::{ConnId, RequestId, UserId};
use crate::message::{
    ClientMsg, CloseReason, DEFAULT_GROUP, GroupEdit, Presence, ServerMsg, Status, WatchScope,
};
use crate::server::{Output, Server, may_keep_in_place, ping_nonce, pong};
use crate::storage::StorageResult;
use crate::time::{Duration, Instant};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub use super::rig::PASSWORD;

/// A contact group request a test asks of a client (`World::group_request`); groups are
/// named by their place in the client's view, contacts by user number.
#[derive(Debug, Clone, Copy)]
pub enum GroupRequest {
    Create(u8),
    Rename(usize, u8),
    Delete(usize),
    Reorder(usize, u32),
    /// Contact `j` to the `k`th group (the default group when the client has none).
    Move(usize, usize),
}

#[derive(Debug, Clone)]
pub struct WorldConfig {
    pub server: ServerConfig,
    pub users: usize,
    /// One-way network latency.
    pub latency: Duration,
    /// Time from a storage request to its result.
    pub storage_latency: Duration,
    pub seed: u64,
}

#[derive(Debug)]
enum Packet {
    Open,
    Connected,
    Frame(Bytes),
    Fin,
}

#[derive(Debug)]
struct Link {
    node: usize,
    to_server: VecDeque<(Instant, Packet)>,
    to_client: VecDeque<(Instant, Packet)>,
    /// Silently dropping everything both ways: a half-open connection.
    partitioned: bool,
    server_open: bool,
    client_open: bool,
    last_frame_at_server: Instant,
    /// The presence view the server has told this connection, rebuilt from raw frames.
    told: BTreeMap<UserId, Presence>,
    /// The server allowed its pings answered in place (`Output::AnswerPings`).
    answers_pings: bool,
    /// When the world last answered one of its pings in place.
    heard_in_place: Option<Instant>,
}

#[derive(Debug)]
pub struct Node {
    pub user: UserId,
    pub client: Client,
    conn: Option<ConnId>,
    /// What the test asked this client to be.
    pub status: Status,
    pub contacts: BTreeSet<UserId>,
    /// Logged out by the test (and not started again).
    pub stopped: bool,
    /// Messages the application received, by (sender, id).
    pub received: BTreeMap<(UserId, u64), u32>,
    /// Under `AckMode::Manual`: messages the application took and has not acked, by seq.
    pub held: BTreeMap<u64, (UserId, u64)>,
    /// Seqs the application took (`OnHandover`) or acked (`Manual`): the only ones its
    /// client may ack. Kept across `restart_client`, since acks of the old process may still
    /// be on the wire.
    released: BTreeSet<u64>,
    /// Clients this node has had before the current one (`restart_client`).
    restarts: u64,
    /// Room messages the application received, in the order it received them: (seq,
    /// sender, id).
    pub room_received: Vec<(u64, UserId, u64)>,
}

#[derive(Debug)]
pub struct World {
    pub now: Instant,
    pub server: Server,
    pub store: MemStore,
    pub nodes: Vec<Node>,
    cfg: WorldConfig,
    links: BTreeMap<ConnId, Link>,
    storage: VecDeque<(Instant, RequestId, StorageResult)>,
    next_conn: u64,
    /// Status each user last set, as the server received it: the invisibility oracle.
    status_at_server: BTreeMap<UserId, Status>,
    /// Messages acknowledged to their sender: (sender, id) → recipient.
    acked: BTreeMap<(UserId, u64), UserId>,
    sent: BTreeMap<(UserId, u64), UserId>,
    pub violations: Vec<String>,
    /// A hash of everything that happened, for determinism checks.
    pub trace_hash: u64,
    /// Print every traced event (`BREEZE_TRACE` set), read once rather than per event.
    verbose: bool,
    /// Connections the server closed for silence.
    pub heartbeat_timeouts: usize,
    /// The display name each user last asked for while logged in (`set_display_name`).
    names_wanted: BTreeMap<usize, String>,
    /// The room of `with_room`, if any.
    room: Option<u64>,
    /// Room messages sent by the applications: (sender, id).
    room_sent: BTreeSet<(UserId, u64)>,
    /// Room messages acknowledged to their sender.
    room_acked: BTreeSet<(UserId, u64)>,
    /// Room messages as committed: (sender, id) → (room seq, members at the commit).
    room_committed: BTreeMap<(UserId, u64), (u64, Vec<UserId>)>,
    /// Server crashes so far (`crash_server`).
    pub server_crashes: u64,
}

pub fn user_name(i: usize) -> UserId {
    UserId::new(format!("u{i}")).expect("valid")
}

/// How client `i` of a world is set up, after `restarts` earlier ones.
fn client_config(cfg: &WorldConfig, i: usize, restarts: u64, acks: AckMode) -> ClientConfig {
    ClientConfig {
        mode: Mode::Login,
        seed: cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9) ^ restarts,
        // Unique per client and run, as a real host's random base is: the server takes a
        // reused id for a re-send.
        id_base: ((i as u64) << 32) + (restarts << 24),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(3),
        acks,
        ..ClientConfig::new(user_name(i), PASSWORD)
    }
}

impl World {
    pub fn new(cfg: WorldConfig) -> Self {
        let mut store = MemStore::new();
        let users: Vec<UserId> = (0..cfg.users).map(user_name).collect();
        for u in &users {
            store.add_account(u.clone(), PASSWORD);
        }
        let server = Server::new(cfg.server.clone(), users.clone());
        let now = Instant::ZERO;
        let nodes = (0..users.len())
            .map(|i| Node {
                user: users[i].clone(),
                client: Client::new(client_config(&cfg, i, 0, AckMode::OnHandover), now),
                conn: None,
                status: Status::Online,
                contacts: BTreeSet::new(),
                stopped: false,
                received: BTreeMap::new(),
                held: BTreeMap::new(),
                released: BTreeSet::new(),
                restarts: 0,
                room_received: Vec::new(),
            })
            .collect();
        World {
            now,
            server,
            store,
            nodes,
            cfg,
            links: BTreeMap::new(),
            storage: VecDeque::new(),
            next_conn: 0,
            status_at_server: BTreeMap::new(),
            acked: BTreeMap::new(),
            sent: BTreeMap::new(),
            violations: Vec::new(),
            trace_hash: 0xcbf2_9ce4_8422_2325,
            verbose: std::env::var_os("BREEZE_TRACE").is_some(),
            heartbeat_timeouts: 0,
            names_wanted: BTreeMap::new(),
            room: None,
            room_sent: BTreeSet::new(),
            room_acked: BTreeSet::new(),
            room_committed: BTreeMap::new(),
            server_crashes: 0,
        }
    }

    /// Puts every user in one room (owned by user 0), as stored before the server started:
    /// call it right after `new`.
    pub fn with_room(mut self) -> Self {
        let members: Vec<UserId> = self.nodes.iter().map(|n| n.user.clone()).collect();
        self.room = Some(self.store.add_room("all", &members));
        self
    }

    /// Client `i` sends a message to the room of `with_room`.
    pub fn room_send(&mut self, i: usize, body: &str) {
        let room = self.room.expect("with_room");
        let now = self.now;
        let id = self.nodes[i]
            .client
            .send_room_message(now, room, body.to_string());
        self.room_sent.insert((self.nodes[i].user.clone(), id));
        self.settle_outputs();
    }

    /// The server process dies and a new one starts on the same store: every connection
    /// is reset (clients see a close and reconnect), storage results in flight are lost
    /// (their writes stay committed, as a crash after the commit leaves them), and the new
    /// server starts with no sessions.
    pub fn crash_server(&mut self) {
        self.server_crashes += 1;
        self.trace(format_args!("server crash"));
        let at = self.now + self.cfg.latency;
        for link in self.links.values_mut() {
            link.to_server.clear();
            if link.server_open {
                link.server_open = false;
                if !link.partitioned && link.client_open {
                    link.to_client.push_back((at, Packet::Fin));
                }
            }
        }
        self.storage.clear();
        self.server = Server::new(self.cfg.server.clone(), self.store.users());
        self.settle_outputs();
    }

    /// Every room message acknowledged to its sender reached the application of every
    /// member at its commit exactly once; each application saw the room in seq order
    /// (checked as they arrive), so all members see one order.
    pub fn check_room_delivered(&mut self) {
        let mut missing = Vec::new();
        for key in &self.room_acked {
            let Some((seq, members)) = self.room_committed.get(key) else {
                missing.push(format!("{key:?} acked but never committed"));
                continue;
            };
            for m in members {
                let node = self.nodes.iter().find(|n| &n.user == m).expect("member");
                let count = node
                    .room_received
                    .iter()
                    .filter(|(s, _, _)| s == seq)
                    .count();
                if count != 1 {
                    missing.push(format!(
                        "room seq {seq} {key:?} → {m} delivered {count} times"
                    ));
                }
            }
        }
        for m in missing {
            self.violation(m);
        }
    }

    fn trace(&mut self, what: std::fmt::Arguments<'_>) {
        // FNV-1a over a rendering of each event: cheap, stable, enough to compare two runs.
        let text = format!("{:?} {what}", self.now);
        if self.verbose {
            eprintln!("{text}");
        }
        for b in text.bytes() {
            self.trace_hash = (self.trace_hash ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(format!("at {:?}: {what}", self.now));
    }

    // ---- what a test can make happen ----

    pub fn set_status(&mut self, i: usize, status: Status) {
        self.nodes[i].status = status;
        let now = self.now;
        self.nodes[i].client.set_status(now, status);
        self.settle_outputs();
    }

    pub fn set_contact(&mut self, i: usize, j: usize, add: bool) {
        let now = self.now;
        let other = user_name(j);
        let node = &mut self.nodes[i];
        if i == j {
            return;
        }
        if add {
            node.contacts.insert(other.clone());
            node.client.add_contact(now, other);
        } else {
            node.contacts.remove(&other);
            node.client.remove_contact(now, other);
        }
        self.settle_outputs();
    }

    /// A contact group request from client `i`, naming its groups by their place in the
    /// client's own view (as a user clicking them would): the request may be refused (a group
    /// deleted meanwhile, a contact not on the list) or lost with its connection; the groups
    /// must converge all the same (`check_groups_converged`).
    pub fn group_request(&mut self, i: usize, request: GroupRequest) {
        let now = self.now;
        let client = &mut self.nodes[i].client;
        let nth = |client: &Client, k: usize| {
            let groups = client.groups();
            (!groups.is_empty()).then(|| groups[k % groups.len()].id)
        };
        match request {
            GroupRequest::Create(k) => client.create_group(now, format!("group {k}")),
            GroupRequest::Rename(k, name) => {
                if let Some(g) = nth(client, k) {
                    let edit = GroupEdit::Rename {
                        name: format!("group {name}"),
                    };
                    client.edit_group(now, g, edit);
                }
            }
            GroupRequest::Delete(k) => {
                if let Some(g) = nth(client, k) {
                    client.edit_group(now, g, GroupEdit::Delete);
                }
            }
            GroupRequest::Reorder(k, position) => {
                if let Some(g) = nth(client, k) {
                    client.edit_group(now, g, GroupEdit::Reorder { position });
                }
            }
            GroupRequest::Move(j, k) => {
                let group = nth(client, k).unwrap_or(DEFAULT_GROUP);
                client.move_contacts(now, vec![user_name(j)], group);
            }
        }
        self.settle_outputs();
    }

    /// Every logged-in client's contact groups are the store's: a change whose answer was
    /// lost with its connection reaches the client with its next login's snapshot.
    pub fn check_groups_converged(&mut self) {
        let mut problems = Vec::new();
        for n in self.nodes.iter().filter(|n| !n.stopped) {
            let stored = self.store.groups_of(&n.user);
            let mut truth = GroupBook::default();
            let max = n.client.max_groups();
            truth.replace(max, stored.groups, stored.placements);
            let mine = n.client.group_book();
            if mine != &truth {
                problems.push(format!(
                    "{}'s groups {mine:?} differ from the store's {truth:?}",
                    n.user
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    pub fn send(&mut self, i: usize, j: usize, body: &str) {
        let now = self.now;
        let to = user_name(j);
        let id = self.nodes[i]
            .client
            .send_message(now, to.clone(), body.to_string(), None);
        self.sent.insert((self.nodes[i].user.clone(), id), to);
        self.settle_outputs();
    }

    /// Client `i`, logged in, sets its display name. Fault its own link only once the
    /// change is answered: a request lost with its connection leaves the truth unknown.
    pub fn set_display_name(&mut self, i: usize, name: &str) {
        let now = self.now;
        assert!(self.nodes[i].client.is_logged_in(), "u{i} is not logged in");
        self.names_wanted.insert(i, name.to_string());
        self.nodes[i]
            .client
            .set_profile(now, name.to_string(), String::new());
        self.settle_outputs();
    }

    /// Every logged-in client that sees a user (the user itself included) holds the display
    /// name that user last set.
    pub fn check_profiles_converged(&mut self) {
        let mut problems = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.stopped || !n.client.is_logged_in() {
                continue;
            }
            for (&j, wanted) in &self.names_wanted {
                let user = &self.nodes[j].user;
                let sees = j == i
                    || self.cfg.server.scope == WatchScope::Everyone
                    || n.contacts.contains(user);
                let held = n.client.profiles().get(user).map(|c| &c.display_name);
                if sees && held != Some(wanted) {
                    problems.push(format!(
                        "{} holds {held:?} for {user}, wanted {wanted:?}",
                        n.user
                    ));
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }

    pub fn logout(&mut self, i: usize) {
        let now = self.now;
        self.nodes[i].stopped = true;
        self.nodes[i].client.logout(now);
        self.settle_outputs();
    }

    pub fn start(&mut self, i: usize) {
        let now = self.now;
        if matches!(self.nodes[i].client.state(), ClientState::Stopped(_)) {
            self.nodes[i].client.start(now);
        }
        self.nodes[i].stopped = false;
        self.settle_outputs();
    }

    /// The client's socket is reset: the client notices at once, the server after latency.
    pub fn crash_link(&mut self, i: usize) {
        let Some(conn) = self.nodes[i].conn.take() else {
            return;
        };
        let now = self.now;
        let at = now + self.cfg.latency;
        if let Some(link) = self.links.get_mut(&conn) {
            link.client_open = false;
            if !link.partitioned && link.server_open {
                link.to_server.push_back((at, Packet::Fin));
            }
        }
        self.trace(format_args!("crash {i}"));
        self.nodes[i].client.handle_disconnected(now);
        self.settle_outputs();
    }

    /// The application's process dies and a new one starts, with a new `Client` acking by
    /// `acks` (same user, settings and status; contacts and unsent messages die with the old
    /// one). Messages the old application held unacked may reach the new one: the oracle
    /// forgets them. (Acks still in flight when it dies may bring messages back too, which the
    /// oracle reports: restart when the network is quiet.)
    pub fn restart_client(&mut self, i: usize, acks: AckMode) {
        self.crash_link(i);
        let now = self.now;
        let node = &mut self.nodes[i];
        node.restarts += 1;
        let cfg = ClientConfig {
            status: node.status,
            ..client_config(&self.cfg, i, node.restarts, acks)
        };
        for (_, key) in std::mem::take(&mut node.held) {
            node.received.remove(&key);
        }
        node.client = Client::new(cfg, now);
        node.contacts.clear();
        node.stopped = false;
        self.trace(format_args!("restart {i} acking {acks:?}"));
        self.settle_outputs();
    }

    /// The application of client `i` acks the `n` oldest messages it holds, or all if it
    /// holds fewer (`AckMode::Manual`).
    pub fn ack_held(&mut self, i: usize, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        for _ in 0..n {
            let Some((seq, _)) = node.held.pop_first() else {
                break;
            };
            node.released.insert(seq);
            node.client.ack(now, seq);
        }
        self.settle_outputs();
    }

    /// The client's connection goes silent both ways, without a close on either side.
    pub fn partition_link(&mut self, i: usize) {
        let Some(conn) = self.nodes[i].conn else {
            return;
        };
        if let Some(link) = self.links.get_mut(&conn) {
            link.partitioned = true;
            // A connection whose opening is lost never existed for the server.
            if link
                .to_server
                .iter()
                .any(|(_, p)| matches!(p, Packet::Open))
            {
                link.server_open = false;
            }
            link.to_server.clear();
            link.to_client.clear();
        }
        self.trace(format_args!("partition {i}"));
    }

    /// Runs until `now + d`.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.next_event().filter(|&t| t <= end) {
            self.now = self.now.max(t);
            self.step();
        }
        self.now = end;
    }

    /// Long enough for every timeout, grace and backoff to have played out.
    pub fn settle_time(&self) -> Duration {
        let s = &self.cfg.server;
        s.heartbeat_timeout * 2
            + s.offline_grace
            + Duration::from_secs(2) * 3
            + self.cfg.latency * 10
    }

    // ---- the oracle ----

    /// What `watcher` should see of `j` now, from what the test asked of each client.
    fn truth(&self, j: usize) -> Presence {
        let n = &self.nodes[j];
        if n.stopped {
            Presence::Offline
        } else {
            n.status.visible()
        }
    }

    /// Every client the test did not stop is logged in, and its view equals the truth.
    pub fn check_converged(&mut self) {
        let mut problems = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.stopped {
                continue;
            }
            if !n.client.is_logged_in() {
                problems.push(format!(
                    "{} is not logged in: {:?}",
                    n.user,
                    n.client.state()
                ));
                continue;
            }
            let watched: Vec<usize> = match self.cfg.server.scope {
                WatchScope::Everyone => (0..self.nodes.len()).filter(|&j| j != i).collect(),
                WatchScope::Contacts => (0..self.nodes.len())
                    .filter(|&j| n.contacts.contains(&self.nodes[j].user))
                    .collect(),
            };
            let expected: BTreeMap<UserId, Presence> = watched
                .into_iter()
                .map(|j| (self.nodes[j].user.clone(), self.truth(j)))
                .collect();
            if n.client.presence() != &expected {
                problems.push(format!(
                    "{}'s view {:?} differs from the truth {:?}",
                    n.user,
                    n.client.presence(),
                    expected
                ));
            }
            if n.client.own_status() != n.status {
                problems.push(format!(
                    "{} has status {:?}, wanted {:?}",
                    n.user,
                    n.client.own_status(),
                    n.status
                ));
            }
        }
        for p in problems {
            self.violation(p);
        }
        // No half-open connection outlives its timeout on the server.
        let ghosts: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, l)| l.partitioned && l.server_open)
            .map(|(c, _)| *c)
            .collect();
        if !ghosts.is_empty() {
            self.violation(format!(
                "half-open connections still open on the server: {ghosts:?}"
            ));
        }
    }

    /// Every message acknowledged to its sender reached its recipient's application once.
    pub fn check_messages_delivered(&mut self) {
        let mut missing = Vec::new();
        for ((from, id), to) in &self.acked {
            let node = self
                .nodes
                .iter()
                .find(|n| &n.user == to)
                .expect("known recipient");
            let count = node
                .received
                .get(&(from.clone(), *id))
                .copied()
                .unwrap_or(0);
            if count != 1 {
                missing.push(format!("{from}#{id} → {to} delivered {count} times"));
            }
        }
        for m in missing {
            self.violation(m);
        }
    }

    // ---- the machinery ----

    fn next_event(&self) -> Option<Instant> {
        let links = self.links.values().flat_map(|l| {
            l.to_server
                .front()
                .map(|(t, _)| *t)
                .into_iter()
                .chain(l.to_client.front().map(|(t, _)| *t))
        });
        let clients = self.nodes.iter().filter_map(|n| n.client.poll_timeout());
        links
            .chain(clients)
            .chain(self.server.poll_timeout())
            .chain(self.storage.front().map(|(t, _, _)| *t))
            .min()
    }

    /// Handles everything due at `self.now`.
    fn step(&mut self) {
        let now = self.now;
        let conns: Vec<ConnId> = self.links.keys().copied().collect();
        for conn in conns {
            self.deliver_due(conn);
        }
        while self.storage.front().is_some_and(|(t, _, _)| *t <= now) {
            let (_, id, result) = self.storage.pop_front().expect("checked");
            self.server.handle_storage(now, id, result);
            self.settle_outputs();
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            let links = &self.links;
            self.server
                .handle_timeout_with(now, |conn| links.get(&conn).and_then(|l| l.heard_in_place));
        }
        for node in &mut self.nodes {
            if node.client.poll_timeout().is_some_and(|t| t <= now) {
                node.client.handle_timeout(now);
            }
        }
        self.settle_outputs();
    }

    fn deliver_due(&mut self, conn: ConnId) {
        let now = self.now;
        loop {
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            if let Some((t, _)) = link.to_server.front()
                && *t <= now
            {
                let (_, p) = link.to_server.pop_front().expect("checked");
                match p {
                    Packet::Open => self.server.handle_connect(now, conn, None),
                    Packet::Frame(payload) if link.server_open => {
                        link.last_frame_at_server = now;
                        let node = link.node;
                        self.observe_client_frame(node, &payload);
                        if !self.answer_in_place(conn, &payload) {
                            self.server.handle_frame(now, conn, &payload);
                        }
                    }
                    Packet::Fin if link.server_open => {
                        link.server_open = false;
                        self.server.handle_closed(now, conn);
                    }
                    _ => {}
                }
                self.settle_outputs();
                continue;
            }
            if let Some((t, _)) = link.to_client.front()
                && *t <= now
            {
                let (_, p) = link.to_client.pop_front().expect("checked");
                let node = link.node;
                let current = link.client_open && self.nodes[node].conn == Some(conn);
                if current {
                    let client = &mut self.nodes[node].client;
                    match p {
                        Packet::Connected => client.handle_connected(now),
                        Packet::Frame(payload) => client.handle_frame(now, &payload),
                        Packet::Fin => {
                            link.client_open = false;
                            self.nodes[node].conn = None;
                            self.nodes[node].client.handle_disconnected(now);
                        }
                        Packet::Open => {}
                    }
                }
                self.settle_outputs();
                continue;
            }
            return;
        }
    }

    /// Answers a `Ping` as the tokio host's connection task does (`pings.rs`), in the worlds
    /// of even seeds: once the server allowed it, and at most once per `IN_PLACE_GAP`. Nothing
    /// is ever in flight before it here, since the server handles each frame as it arrives and
    /// its replies are queued before the next. `false`: the server must handle the frame.
    fn answer_in_place(&mut self, conn: ConnId, payload: &[u8]) -> bool {
        let now = self.now;
        let at = now + self.cfg.latency;
        let in_place = self.cfg.seed.is_multiple_of(2);
        let link = self.links.get_mut(&conn).expect("known link");
        let Some(nonce) = ping_nonce(payload) else {
            return false;
        };
        if !(in_place && link.answers_pings && may_keep_in_place(link.heard_in_place, now)) {
            return false;
        }
        link.heard_in_place = Some(now);
        let pong = pong(nonce);
        if !link.partitioned && link.client_open {
            link.to_client.push_back((at, Packet::Frame(pong.clone())));
        }
        self.observe_server_frame(conn, &pong);
        true
    }

    /// Drains every output of the server and the clients until all are quiet.
    fn settle_outputs(&mut self) {
        loop {
            let mut busy = false;
            while let Some(out) = self.server.poll_output() {
                busy = true;
                self.perform_server(out);
            }
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].client.poll_output() {
                    busy = true;
                    self.perform_client(i, out);
                }
                while let Some(ev) = self.nodes[i].client.poll_event() {
                    // Taking an event may queue an ack: poll the outputs again.
                    busy = true;
                    self.observe_event(i, ev);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn perform_server(&mut self, out: Output) {
        let now = self.now;
        let at = now + self.cfg.latency;
        match out {
            Output::Send { conn, payload } => {
                self.observe_server_frame(conn, &payload);
                let link = self
                    .links
                    .get_mut(&conn)
                    .expect("server writes only to known links");
                if !link.partitioned && link.client_open {
                    link.to_client.push_back((at, Packet::Frame(payload)));
                }
            }
            Output::Close { conn, reason } => {
                self.trace(format_args!("server closes {conn:?}: {reason:?}"));
                let link = self.links.get_mut(&conn).expect("known link");
                link.server_open = false;
                let last = link.last_frame_at_server;
                if !link.partitioned && link.client_open {
                    link.to_client.push_back((at, Packet::Fin));
                }
                if reason == CloseReason::HeartbeatTimeout {
                    self.heartbeat_timeouts += 1;
                    let due = last + self.cfg.server.heartbeat_timeout;
                    if now != due {
                        self.violation(format!(
                            "{conn:?} declared dead at {now:?}, its deadline was {due:?}"
                        ));
                    }
                }
            }
            Output::Storage { id, op } => {
                self.trace(format_args!("storage {id:?} {op:?}"));
                let ms = now.since_epoch().as_millis() as u64;
                let result = self.store.apply(op, ms);
                if let StorageResult::RoomMessageStored(Ok(stored)) = &result
                    && !stored.duplicate
                {
                    let d = &stored.delivery;
                    self.room_committed
                        .insert((d.from.clone(), d.id), (d.seq, stored.members.clone()));
                }
                self.storage
                    .push_back((now + self.cfg.storage_latency, id, result));
            }
            Output::Event(e) => self.trace(format_args!("{e:?}")),
            Output::Cluster { .. } => unreachable!("invariant: the world is one node"),
            Output::AnswerPings { conn } => {
                if let Some(link) = self.links.get_mut(&conn) {
                    link.answers_pings = true;
                }
            }
        }
    }

    fn perform_client(&mut self, i: usize, out: ClientOutput) {
        let now = self.now;
        let at = now + self.cfg.latency;
        match out {
            ClientOutput::Connect => {
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                self.trace(format_args!("{i} connects as {conn:?}"));
                let mut link = Link {
                    node: i,
                    to_server: VecDeque::new(),
                    to_client: VecDeque::new(),
                    partitioned: false,
                    server_open: true,
                    client_open: true,
                    last_frame_at_server: now,
                    told: BTreeMap::new(),
                    answers_pings: false,
                    heard_in_place: None,
                };
                link.to_server.push_back((at, Packet::Open));
                link.to_client.push_back((at, Packet::Connected));
                self.links.insert(conn, link);
                self.nodes[i].conn = Some(conn);
            }
            ClientOutput::Send(payload) => {
                let Some(conn) = self.nodes[i].conn else {
                    return;
                };
                let link = self.links.get_mut(&conn).expect("known link");
                if !link.partitioned && link.server_open {
                    link.to_server.push_back((at, Packet::Frame(payload)));
                }
            }
            ClientOutput::Disconnect => {
                let Some(conn) = self.nodes[i].conn.take() else {
                    return;
                };
                self.trace(format_args!("{i} disconnects {conn:?}"));
                let link = self.links.get_mut(&conn).expect("known link");
                link.client_open = false;
                if !link.partitioned && link.server_open {
                    link.to_server.push_back((at, Packet::Fin));
                }
            }
        }
    }

    fn observe_client_frame(&mut self, node: usize, payload: &[u8]) {
        let user = self.nodes[node].user.clone();
        match decode::<ClientMsg>(payload) {
            Ok(ClientMsg::SetStatus { status }) => {
                self.status_at_server.insert(user, status);
            }
            Ok(ClientMsg::Ack { seqs }) => {
                let early: Vec<u64> = seqs
                    .iter()
                    .copied()
                    .filter(|seq| !self.nodes[node].released.contains(seq))
                    .collect();
                if !early.is_empty() {
                    self.violation(format!(
                        "{user} acked {early:?} before its application had them"
                    ));
                }
                self.trace(format_args!("{user} → Ack {seqs:?}"));
            }
            Ok(msg) => self.trace(format_args!("{user} → {msg:?}")),
            Err(e) => self.violation(format!("{user} sent an undecodable frame: {e}")),
        }
    }

    fn observe_server_frame(&mut self, conn: ConnId, payload: &Bytes) {
        let msg = match decode::<ServerMsg>(payload) {
            Ok(msg) => msg,
            Err(e) => return self.violation(format!("server sent an undecodable frame: {e}")),
        };
        let node = self.links[&conn].node;
        let me = self.nodes[node].user.clone();
        let mut problems = Vec::new();
        match &msg {
            ServerMsg::LoginOk { user, status, .. } => {
                self.status_at_server.insert(user.clone(), *status);
            }
            ServerMsg::PresenceSnapshot { entries } => {
                let link = self.links.get_mut(&conn).expect("known");
                link.told = entries
                    .iter()
                    .map(|e| (e.user.clone(), e.presence))
                    .collect();
            }
            // Under scope Contacts a removed contact leaves the watcher's view (PROTOCOL.md,
            // RemoveContact), so a later re-add rightly introduces it again: what it was told is gone.
            ServerMsg::ContactsChanged { removed, .. }
                if self.cfg.server.scope == WatchScope::Contacts =>
            {
                let link = self.links.get_mut(&conn).expect("known");
                for user in removed {
                    link.told.remove(user);
                }
            }
            ServerMsg::PresenceDiff { entries } => {
                for e in entries {
                    if e.user == me {
                        problems.push(format!("{me} was told about itself"));
                    }
                    let invisible = self.status_at_server.get(&e.user) == Some(&Status::Invisible);
                    if invisible && e.presence != Presence::Offline {
                        problems.push(format!(
                            "invisible {} announced {:?} to {me}",
                            e.user, e.presence
                        ));
                    }
                    let link = self.links.get_mut(&conn).expect("known");
                    if link.told.insert(e.user.clone(), e.presence) == Some(e.presence) {
                        problems.push(format!("{me} told {} is {:?} twice", e.user, e.presence));
                    }
                }
            }
            _ => {}
        }
        self.trace(format_args!(
            "→ {conn:?} {:?}",
            std::mem::discriminant(&msg)
        ));
        for p in problems {
            self.violation(p);
        }
    }

    fn observe_event(&mut self, i: usize, ev: ClientEvent) {
        let me = self.nodes[i].user.clone();
        match ev {
            ClientEvent::MessageSent { id, .. } if self.room_sent.contains(&(me.clone(), id)) => {
                self.room_acked.insert((me, id));
            }
            ClientEvent::RoomMessage(d) => {
                let key = (d.from.clone(), d.id);
                match self.room_committed.get(&key) {
                    Some((seq, _)) if *seq == d.seq => {}
                    other => self.violation(format!(
                        "{me} got room seq {} as {key:?}, committed as {other:?}",
                        d.seq
                    )),
                }
                let node = &mut self.nodes[i];
                if let Some(&(last, _, _)) = node.room_received.last()
                    && d.seq <= last
                {
                    self.violation(format!(
                        "{me}'s application got room seq {} after {last}",
                        d.seq
                    ));
                }
                self.nodes[i].room_received.push((d.seq, d.from, d.id));
            }
            ClientEvent::MessageSent { id, .. } => {
                if let Some(to) = self.sent.get(&(me.clone(), id)) {
                    self.acked.insert((me, id), to.clone());
                } else {
                    self.violation(format!("{me} got an ack for unknown message {id}"));
                }
            }
            ClientEvent::Message(d) => {
                let key = (d.from.clone(), d.id);
                if self.sent.get(&key) != Some(&me) {
                    self.violation(format!("{me} received {key:?}, addressed to someone else"));
                }
                let node = &mut self.nodes[i];
                if node.client.acks() == AckMode::Manual {
                    node.held.insert(d.seq, key.clone());
                } else {
                    node.released.insert(d.seq);
                }
                let count = node.received.entry(key.clone()).or_default();
                *count += 1;
                let count = *count;
                if count > 1 {
                    self.violation(format!("{me}'s application got {key:?} {count} times"));
                }
            }
            ClientEvent::Stopped(reason) if !self.nodes[i].stopped => {
                self.violation(format!("{me} stopped by itself: {reason:?}"));
            }
            _ => {}
        }
    }
}
