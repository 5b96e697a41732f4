//! Two real hosts joined by an in-process bus through the host's cluster port: what the core
//! says crosses between hosts, and a lost link fences a node.

mod common;

use breeze_core::cluster::{ClusterConfig, ClusterMsg, Dest};
use breeze_core::message::{CloseReason, Presence, ServerMsg};
use breeze_core::testkit::MemStore;
use breeze_core::{NodeId, ServerConfig};
use breeze_testsupport::{Peer, user};
use breeze_transport_tokio::{ClusterBackend, ClusterSender, cluster_channel};
use common::{TestServer, host_config};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// Delivers at once to the other hosts' inboxes, as core NATS would to their subjects.
struct Loopback {
    from: NodeId,
    to: Vec<(NodeId, ClusterSender)>,
}

impl ClusterBackend for Loopback {
    fn publish(&mut self, to: Dest, msg: ClusterMsg) {
        for (node, sender) in &self.to {
            if to == Dest::All || to == Dest::Node(*node) {
                sender.message(self.from, msg.clone());
            }
        }
    }
}

fn cluster() -> ClusterConfig {
    ClusterConfig {
        node_timeout: Duration::from_millis(600),
        heartbeat_every: Duration::from_millis(100),
        fence_margin: Duration::from_millis(200),
        ..ClusterConfig::new(1)
    }
}

#[tokio::test]
async fn presence_crosses_between_hosts_and_a_lost_link_fences_a_node() {
    let store = Arc::new(Mutex::new(MemStore::new()));
    let (tx0, inbox0) = cluster_channel(1024);
    let (tx1, inbox1) = cluster_channel(1024);
    let mut inboxes = [Some(inbox0), Some(inbox1)];
    let mut servers = Vec::new();
    for node in 0..2u32 {
        let other = [&tx0, &tx1][1 - node as usize].clone();
        let inbox = inboxes[node as usize].take().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = ServerConfig {
            node: NodeId(node),
            ..ServerConfig::default()
        };
        servers.push(TestServer::start_with(
            listener,
            store.clone(),
            cfg,
            host_config(),
            move |host| {
                let bus = Loopback {
                    from: NodeId(node),
                    to: vec![(NodeId(1 - node), other)],
                };
                host.join_cluster(cluster(), bus, inbox);
            },
        ));
    }
    tx0.link(true);
    tx1.link(true);

    let mut alice = Peer::user(servers[0].addr, "alice").await;
    let bob = Peer::user(servers[1].addr, "bob").await;
    alice
        .recv_until("bob online, from the other host", |m| {
            matches!(m, ServerMsg::PresenceDiff { entries }
                if entries.iter().any(|e| e.user == user("bob") && e.presence == Presence::Online))
        })
        .await;

    // Node 1 loses its bus: it closes bob before node 0 may declare it dead.
    tx1.link(false);
    let mut bob = bob;
    bob.recv_until("fenced", |m| {
        *m == ServerMsg::Bye {
            reason: CloseReason::NodeFenced,
        }
    })
    .await;
    alice
        .recv_until("bob offline", |m| {
            matches!(m, ServerMsg::PresenceDiff { entries }
                if entries.iter().any(|e| e.user == user("bob") && e.presence == Presence::Offline))
        })
        .await;
    for server in servers {
        server.stop().await;
    }
}
