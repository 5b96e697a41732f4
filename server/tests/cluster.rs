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

mod cluster_rig;

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{CloseReason, Presence, ServerMsg};
use breeze_testsupport::nats::Relay;
use breeze_testsupport::process::ServerProcess;
use breeze_testsupport::{PASSWORD, client_config, drive};
use breeze_transport_tokio::{Connector, TcpConnector};
use cluster_rig::{
    Cluster, FENCE_MARGIN, HEARTBEAT, NODE_TIMEOUT, SLACK, SOON, Watcher, register, until_who,
    who_is,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

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
    // A load balancer asking `/readyz` sends no one to the fenced node; the others stay ready.
    let ready = |node: &ServerProcess| {
        let addr = node.http.expect("the nodes serve HTTP");
        async move { breeze_testsupport::http(addr, &breeze_testsupport::http_get("/readyz")).await }
    };
    let answer = ready(&n3).await;
    assert!(
        answer.starts_with("HTTP/1.1 503 ") && answer.contains("fenced"),
        "{answer}"
    );
    let answer = ready(&n1).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
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
    let answer = ready(&n3).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
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
