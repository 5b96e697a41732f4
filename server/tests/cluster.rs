//! Three real `breeze-server` processes as one cluster (`--cluster`): presence over a real
//! NATS, accounts in a real PostgreSQL. What a user on one node sees of users on the others,
//! `who` across nodes, a SIGKILLed node's users going offline everywhere within the node
//! timeout (and at once after a clean stop or a restart), a node cut off from NATS fencing
//! itself before the others declare it dead, and its return; the real client coming back
//! through another node after a fence. Needs NATS (`BREEZE_TEST_NATS`) and PostgreSQL (`BREEZE_TEST_PG`); skips with
//! a line without them, fails instead under `BREEZE_REQUIRE_SERVICES=1`.
//!
//! Every test has a schema and a cluster name (the NATS subjects' prefix) of its own, and
//! short cluster timings so that it stays quick.

use breeze_core::UserId;
use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{
    ClientMsg, CloseReason, Credential, MAGIC, PROTOCOL_VERSION, Presence, ServerMsg, Status,
    WhoEntry,
};
use breeze_testsupport::nats::{Relay, TestNats};
use breeze_testsupport::pg::TestPg;
use breeze_testsupport::process::{ServerProcess, temp_db};
use breeze_testsupport::{PASSWORD, Peer, client_config, drive, user};
use breeze_transport_tokio::{Connector, TcpConnector};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::{Instant, timeout};

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

/// The cluster timings of these tests (`--node-timeout` …), short to keep them quick.
const NODE_TIMEOUT: Duration = Duration::from_millis(1500);
const HEARTBEAT: Duration = Duration::from_millis(200);
/// The ping interval follows: (900 − 200) / 4 = 175 ms, a cut noticed within 525 ms, so the node
/// fences by 1.125 s after it and nobody declares it dead before 1.3 s after it.
const FENCE_MARGIN: Duration = Duration::from_millis(900);
/// Room for a loaded test machine on top of a deadline the cluster promises: a bound that
/// turns a missed deadline into a failure, not a measurement (the delays are printed).
const SLACK: Duration = Duration::from_millis(1500);
/// Bound on a wait for something that happens soon (a message across nodes).
const SOON: Duration = Duration::from_secs(10);

/// The services and the settings every node of one test shares.
struct Cluster {
    pg: TestPg,
    nats: TestNats,
    _dir: tempfile::TempDir,
    /// Named because the server command always names one; `--store` wins.
    db: PathBuf,
}

impl Cluster {
    fn new(test: &str) -> Option<Cluster> {
        let nats = TestNats::reach(test)?;
        let pg = TestPg::create(test)?;
        let (dir, db) = temp_db();
        Some(Cluster {
            pg,
            nats,
            _dir: dir,
            db,
        })
    }

    /// Node `id`, on the bus at `bus` (the test's NATS, or a relay to it).
    async fn node(&self, id: u32, bus: &str) -> ServerProcess {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let args: Vec<String> = vec![
            "--store".into(),
            self.pg.url().into(),
            "--cluster".into(),
            bus.into(),
            "--cluster-name".into(),
            self.nats.cluster().into(),
            "--node-id".into(),
            id.to_string(),
            "--node-timeout".into(),
            ms(NODE_TIMEOUT),
            "--node-heartbeat".into(),
            ms(HEARTBEAT),
            "--fence-margin".into(),
            ms(FENCE_MARGIN),
            "--admin".into(),
            "alice".into(),
        ];
        let db = self.db.clone();
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ServerProcess::spawn(BIN.as_ref(), &db, any_port, &args)
        })
        .await
        .expect("spawn")
    }
}

/// A logged-in user and the presence it has been told of, kept up to date as frames come.
struct Watcher {
    name: &'static str,
    peer: Peer,
    view: BTreeMap<UserId, Presence>,
}

impl Watcher {
    /// Logs `name` in at `addr`; panics if the node refuses.
    async fn login(addr: SocketAddr, name: &'static str) -> Watcher {
        match Watcher::try_login(addr, name).await {
            Ok(w) => w,
            Err(refused) => panic!("{name} was refused at {addr}: {refused:?}"),
        }
    }

    /// Logs `name` in at `addr`, or what the node said instead (a fenced node's `Bye`).
    async fn try_login(addr: SocketAddr, name: &'static str) -> Result<Watcher, Option<ServerMsg>> {
        let mut peer = Peer::connect(addr).await;
        peer.send(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "cluster test".into(),
        })
        .await;
        match peer.recv().await {
            Some(ServerMsg::Welcome { .. }) => {}
            other => return Err(other),
        }
        peer.send(&ClientMsg::Login {
            user: user(name),
            credential: Credential::Password(PASSWORD.into()),
            status: Status::Online,
        })
        .await;
        let mut w = Watcher {
            name,
            peer,
            view: BTreeMap::new(),
        };
        loop {
            match w.peer.recv().await {
                Some(ServerMsg::LoginOk { .. }) => {}
                Some(ServerMsg::PresenceSnapshot { entries }) => {
                    w.view = entries.into_iter().map(|e| (e.user, e.presence)).collect();
                    return Ok(w);
                }
                other @ (Some(ServerMsg::Error { .. } | ServerMsg::Bye { .. }) | None) => {
                    return Err(other);
                }
                Some(_) => {}
            }
        }
    }

    fn sees(&self, who: &str) -> Presence {
        self.view
            .get(&user(who))
            .copied()
            .unwrap_or(Presence::Offline)
    }

    /// Applies what arrives until `who` is seen as `presence`; when that happened. Fails
    /// past `bound`.
    async fn until(&mut self, who: &str, presence: Presence, bound: Duration) -> Instant {
        let deadline = Instant::now() + bound;
        while self.sees(who) != presence {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.peer.recv()).await {
                Ok(Some(msg)) => self.apply(msg),
                Ok(None) => panic!(
                    "{}'s connection closed before {who} was {presence:?}",
                    self.name
                ),
                Err(_) => panic!(
                    "{} did not see {who} {presence:?} within {bound:?}; sees {:?}",
                    self.name, self.view
                ),
            }
        }
        Instant::now()
    }

    fn apply(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::PresenceSnapshot { entries } => {
                self.view = entries.into_iter().map(|e| (e.user, e.presence)).collect();
            }
            ServerMsg::PresenceDiff { entries } => {
                self.view
                    .extend(entries.into_iter().map(|e| (e.user, e.presence)));
            }
            _ => {}
        }
    }

    /// `who` as an administrator: each online user and the nodes of its sessions.
    async fn who(&mut self) -> BTreeMap<String, Vec<u32>> {
        self.peer.send(&ClientMsg::AdminWho).await;
        loop {
            match timeout(SOON, self.peer.recv()).await {
                Ok(Some(ServerMsg::Who { users, .. })) => return nodes_of(&users),
                Ok(Some(other)) => self.apply(other),
                Ok(None) => panic!("{}'s connection closed before Who", self.name),
                Err(_) => panic!("no Who within {SOON:?}"),
            }
        }
    }

    /// Reads until the server closes; its last word.
    async fn bye(&mut self, bound: Duration) -> (Option<CloseReason>, Instant) {
        let mut last = None;
        loop {
            match timeout(bound, self.peer.recv()).await {
                Ok(Some(ServerMsg::Bye { reason })) => last = Some(reason),
                Ok(Some(other)) => self.apply(other),
                Ok(None) => return (last, Instant::now()),
                Err(_) => panic!("{}'s connection was not closed within {bound:?}", self.name),
            }
        }
    }
}

fn nodes_of(users: &[WhoEntry]) -> BTreeMap<String, Vec<u32>> {
    users
        .iter()
        .map(|e| {
            let mut nodes: Vec<u32> = e.sessions.iter().map(|s| s.node).collect();
            nodes.sort_unstable();
            (e.user.as_str().to_owned(), nodes)
        })
        .collect()
}

fn who_is(expected: &[(&str, &[u32])]) -> BTreeMap<String, Vec<u32>> {
    expected
        .iter()
        .map(|(u, nodes)| ((*u).to_owned(), nodes.to_vec()))
        .collect()
}

/// Registers `names` through the node at `addr` (the accounts are the shared database's).
async fn register(addr: SocketAddr, names: &[&str]) {
    let mut peer = Peer::hello(addr).await;
    for name in names {
        peer.register(name).await;
    }
}

/// Waits (bounded) until `watcher`'s node lists exactly `expected` in `who`: remote sessions
/// arrive over the bus, a moment after the local ones.
async fn until_who(watcher: &mut Watcher, expected: &BTreeMap<String, Vec<u32>>) {
    let deadline = Instant::now() + SOON;
    loop {
        let got = watcher.who().await;
        if &got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "who at {}'s node: {got:?}, expected {expected:?}",
            watcher.name
        );
        tokio::time::sleep(HEARTBEAT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_presence_and_a_killed_nodes_users_go_offline_everywhere() {
    let Some(cluster) =
        Cluster::new("three_nodes_share_presence_and_a_killed_nodes_users_go_offline_everywhere")
    else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let n1 = cluster.node(1, &bus).await;
    let n2 = cluster.node(2, &bus).await;
    let n3 = cluster.node(3, &bus).await;
    register(n1.addr, &["alice", "bob", "carol", "dave"]).await;

    let mut alice = Watcher::login(n1.addr, "alice").await;
    let mut bob = Watcher::login(n2.addr, "bob").await;
    let mut carol = Watcher::login(n3.addr, "carol").await;
    let mut dave = Watcher::login(n3.addr, "dave").await;
    for (w, others) in [
        (&mut alice, ["bob", "carol", "dave"]),
        (&mut bob, ["alice", "carol", "dave"]),
        (&mut carol, ["alice", "bob", "dave"]),
        (&mut dave, ["alice", "bob", "carol"]),
    ] {
        for other in others {
            w.until(other, Presence::Online, SOON).await;
        }
    }
    // `who` is cluster-wide, at every node alike.
    let everyone = who_is(&[
        ("alice", &[1]),
        ("bob", &[2]),
        ("carol", &[3]),
        ("dave", &[3]),
    ]);
    until_who(&mut alice, &everyone).await;

    // SIGKILL: no goodbye from node 3; the others' deadline for it is all there is.
    let killed = Instant::now();
    n3.sigkill();
    drop((carol, dave));
    let mut delays = Vec::new();
    for w in [&mut alice, &mut bob] {
        let carol_off = w
            .until("carol", Presence::Offline, NODE_TIMEOUT + SLACK)
            .await;
        let dave_off = w
            .until("dave", Presence::Offline, NODE_TIMEOUT + SLACK)
            .await;
        delays.push((w.name, carol_off - killed, dave_off - killed));
    }
    eprintln!(
        "node 3 SIGKILLed: its users offline at the other nodes' watchers after {delays:?} \
         (node timeout {NODE_TIMEOUT:?})"
    );
    assert_eq!(alice.sees("bob"), Presence::Online, "no one else went");
    assert_eq!(bob.sees("alice"), Presence::Online);
    until_who(&mut alice, &who_is(&[("alice", &[1]), ("bob", &[2])])).await;

    // A clean stop (SIGTERM) says goodbye: bob is offline at alice's before node 2's deadline
    // could have passed.
    let stopped = Instant::now();
    let exited = tokio::task::spawn_blocking(move || n2.sigterm());
    let bob_off = alice
        .until("bob", Presence::Offline, NODE_TIMEOUT + SLACK)
        .await;
    eprintln!(
        "node 2 stopped (SIGTERM): bob offline at alice's after {:?}",
        bob_off - stopped
    );
    assert!(exited.await.unwrap().success(), "node 2 stopped cleanly");
    until_who(&mut alice, &who_is(&[("alice", &[1])])).await;
    drop(n1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_fences_itself_before_the_others_declare_it_dead() {
    let Some(cluster) =
        Cluster::new("a_node_cut_off_from_nats_fences_itself_before_the_others_declare_it_dead")
    else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    // Node 3 reaches NATS through a relay the test cuts: a partition, not a closed socket.
    let relay = Relay::start(cluster.nats.addr()).await;
    let n1 = cluster.node(1, &bus).await;
    let n2 = cluster.node(2, &bus).await;
    let n3 = cluster.node(3, &relay.url()).await;
    register(n1.addr, &["alice", "bob", "carol", "dave"]).await;

    let mut alice = Watcher::login(n1.addr, "alice").await;
    let mut bob = Watcher::login(n2.addr, "bob").await;
    let mut carol = Watcher::login(n3.addr, "carol").await;
    for other in ["bob", "carol"] {
        alice.until(other, Presence::Online, SOON).await;
    }
    bob.until("carol", Presence::Online, SOON).await;
    carol.until("alice", Presence::Online, SOON).await;

    let cut = Instant::now();
    relay.cut();
    // Node 3 closes its clients, telling them to go elsewhere …
    let (reason, fenced) = carol.bye(NODE_TIMEOUT + SLACK).await;
    assert_eq!(reason, Some(CloseReason::NodeFenced));
    // … before the others declare it dead and announce carol offline.
    let gone_at_alice = alice
        .until("carol", Presence::Offline, NODE_TIMEOUT + SLACK)
        .await;
    let gone_at_bob = bob
        .until("carol", Presence::Offline, NODE_TIMEOUT + SLACK)
        .await;
    eprintln!(
        "NATS cut from node 3: fenced after {:?}; carol offline at alice's after {:?}, at \
         bob's after {:?} (node timeout {NODE_TIMEOUT:?}, fence margin {FENCE_MARGIN:?})",
        fenced - cut,
        gone_at_alice - cut,
        gone_at_bob - cut
    );
    assert!(
        fenced < gone_at_alice && fenced < gone_at_bob,
        "node 3 still held carol when the others declared it dead"
    );
    // While cut off, node 3 lets nobody in; carol comes back through node 1.
    let refused = Watcher::try_login(n3.addr, "carol").await.err();
    assert_eq!(
        refused,
        Some(Some(ServerMsg::Bye {
            reason: CloseReason::NodeFenced
        }))
    );
    let _carol = Watcher::login(n1.addr, "carol").await;
    bob.until("carol", Presence::Online, SOON).await;

    // Healed: node 3 rejoins and takes logins again, seen everywhere.
    relay.heal();
    let healed = Instant::now();
    let deadline = healed + SOON;
    let mut dave = loop {
        match Watcher::try_login(n3.addr, "dave").await {
            Ok(dave) => break dave,
            Err(refused) => {
                assert!(
                    Instant::now() < deadline,
                    "node 3 still refuses {SOON:?} after the heal: {refused:?}"
                );
                tokio::time::sleep(HEARTBEAT).await;
            }
        }
    };
    eprintln!(
        "node 3 took logins again {:?} after the heal",
        healed.elapsed()
    );
    alice.until("dave", Presence::Online, SOON).await;
    bob.until("dave", Presence::Online, SOON).await;
    dave.until("carol", Presence::Online, SOON).await;
    // No ghost: carol's old session on node 3 is nowhere, at any node.
    let everyone = who_is(&[
        ("alice", &[1]),
        ("bob", &[2]),
        ("carol", &[1]),
        ("dave", &[3]),
    ]);
    until_who(&mut alice, &everyone).await;
    drop((n1, n2, n3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_its_id_ends_its_old_sessions_everywhere() {
    let Some(cluster) =
        Cluster::new("a_node_restarted_under_its_id_ends_its_old_sessions_everywhere")
    else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let n1 = cluster.node(1, &bus).await;
    let n2 = cluster.node(2, &bus).await;
    register(n1.addr, &["alice", "carol", "dave"]).await;
    let mut alice = Watcher::login(n1.addr, "alice").await;
    let mut carol = Watcher::login(n2.addr, "carol").await;
    let _dave = Watcher::login(n2.addr, "dave").await;
    alice.until("carol", Presence::Online, SOON).await;
    alice.until("dave", Presence::Online, SOON).await;
    carol.until("alice", Presence::Online, SOON).await;

    // Node 2 crashes and is back under the same id (a new epoch) before its deadline: the
    // old process's sessions end, whatever the new one says.
    let killed = Instant::now();
    n2.sigkill();
    let n2 = cluster.node(2, &bus).await;
    let restarted = killed.elapsed();
    let mut carol = Watcher::login(n2.addr, "carol").await;
    carol.until("alice", Presence::Online, SOON).await;
    let dave_off = alice
        .until("dave", Presence::Offline, NODE_TIMEOUT + SLACK)
        .await;
    eprintln!(
        "node 2 restarted {restarted:?} after its SIGKILL; dave (not back) offline at alice's \
         after {:?}",
        dave_off - killed
    );
    // Carol's session is the new one, once: the old epoch's is nowhere.
    until_who(&mut alice, &who_is(&[("alice", &[1]), ("carol", &[2])])).await;
    assert_eq!(alice.sees("carol"), Presence::Online);
    drop((n1, n2));
}

/// A TCP load balancer as the client sees one: each connection goes to the next node in
/// turn, whatever address the client dials, and no health check spares it a fenced node.
#[derive(Clone)]
struct RoundRobin {
    nodes: Arc<Vec<SocketAddr>>,
    next: Arc<AtomicUsize>,
}

impl Connector for RoundRobin {
    type Stream = tokio::net::TcpStream;

    async fn connect(&mut self, _: SocketAddr) -> std::io::Result<Self::Stream> {
        let turn = self.next.fetch_add(1, Ordering::SeqCst);
        TcpConnector
            .connect(self.nodes[turn % self.nodes.len()])
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_of_a_fenced_node_comes_back_through_another() {
    let Some(cluster) = Cluster::new("the_real_client_of_a_fenced_node_comes_back_through_another")
    else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let relay = Relay::start(cluster.nats.addr()).await;
    let n1 = cluster.node(1, &bus).await;
    let n2 = cluster.node(2, &relay.url()).await;
    register(n1.addr, &["alice", "carol"]).await;
    let mut alice = Watcher::login(n1.addr, "alice").await;

    // Carol's client reaches node 2 first, then node 1, and so on.
    let balancer = RoundRobin {
        nodes: Arc::new(vec![n2.addr, n1.addr]),
        next: Arc::new(AtomicUsize::new(0)),
    };
    let cfg = client_config("carol", PASSWORD, Mode::Login);
    let (carol, mut events) = drive(cfg, balancer, n2.addr);
    events.logged_in().await;
    alice.until("carol", Presence::Online, SOON).await;
    until_who(&mut alice, &who_is(&[("alice", &[1]), ("carol", &[2])])).await;

    relay.cut();
    events
        .expect("the fence", |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    reason: Some(CloseReason::NodeFenced),
                    retry_at: Some(_)
                }
            )
        })
        .await;
    // The client reconnects by itself, and the balancer sends it to node 1.
    events.logged_in().await;
    until_who(&mut alice, &who_is(&[("alice", &[1]), ("carol", &[1])])).await;
    relay.heal();
    carol.quit().await;
    alice.until("carol", Presence::Offline, SOON).await;
    drop((n1, n2));
}
