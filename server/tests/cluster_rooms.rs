//! A room across the nodes of a real cluster: three `breeze-server` processes on a real NATS
//! and PostgreSQL (`cluster_rig`), members on every node, the real client for each. Messages
//! stored through all three nodes at once reach every member's application once and in the
//! one order of the room's seqs; a member who was offline logs in on another node and reads
//! the backlog in that order; a member removed through one node is told on another. Skips
//! with a line without the services, fails instead under `BREEZE_REQUIRE_SERVICES=1`.

mod cluster_rig;

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{RoomDelivery, RoomRole};
use breeze_testsupport::{Driven, Events, PASSWORD, client_config, drive, user};
use breeze_transport_tokio::{ClientCommand, RoomCommand, TcpConnector};
use cluster_rig::{Cluster, register};
use std::net::SocketAddr;

const NAMES: [&str; 6] = ["ria", "rob", "rue", "ray", "rex", "roy"];
const EACH: usize = 6;

async fn start(addr: SocketAddr, name: &str) -> (Driven, Events) {
    let (driven, mut events) = drive(
        client_config(name, PASSWORD, Mode::Login),
        TcpConnector,
        addr,
    );
    events.logged_in().await;
    (driven, events)
}

/// The next `n` room messages, as (seq, body).
async fn room_messages(events: &mut Events, n: usize) -> Vec<(u64, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        if let ClientEvent::RoomMessage(RoomDelivery { seq, body, .. }) = events
            .expect("a room message", |e| {
                matches!(e, ClientEvent::RoomMessage(_))
            })
            .await
        {
            got.push((seq, body));
        }
    }
    got
}

async fn say(driven: &Driven, room: u64, body: String) {
    driven
        .command(ClientCommand::Room(RoomCommand::Send {
            room,
            body,
            id: None,
        }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_spread_over_three_nodes_reads_one_order_live_and_after_a_login_elsewhere() {
    let Some(cluster) = Cluster::new(
        "a_room_spread_over_three_nodes_reads_one_order_live_and_after_a_login_elsewhere",
    ) else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let nodes = [
        cluster.node(1, &bus).await,
        cluster.node(2, &bus).await,
        cluster.node(3, &bus).await,
    ];
    let addr = |i: usize| nodes[i % 3].addr;
    register(addr(0), &NAMES).await;
    // Member i on node i mod 3.
    let mut members = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        members.push(start(addr(i), name).await);
    }

    // ria (node 1) creates the room and invites everyone: those on nodes 2 and 3 hear of it
    // through the bus.
    members[0]
        .0
        .command(ClientCommand::Room(RoomCommand::Create("三个节点".into())))
        .await;
    let room = match members[0]
        .1
        .expect("the new room", |e| {
            matches!(e, ClientEvent::RoomMembers { full: true, .. })
        })
        .await
    {
        ClientEvent::RoomMembers { room, .. } => room,
        _ => unreachable!(),
    };
    for name in &NAMES[1..] {
        members[0]
            .0
            .command(ClientCommand::Room(RoomCommand::Invite {
                room,
                user: user(name),
                role: RoomRole::Member,
            }))
            .await;
    }
    for (i, (_, events)) in members.iter_mut().enumerate().skip(1) {
        let ClientEvent::RoomMembers { room: told, .. } = events
            .expect("joining the room", |e| {
                matches!(e, ClientEvent::RoomMembers { full: true, .. })
            })
            .await
        else {
            unreachable!()
        };
        assert_eq!(told, room, "{} (node {})", NAMES[i], i % 3 + 1);
    }

    // roy (node 3) goes offline; everyone else speaks at once, through all three nodes.
    let (roy, _) = members.pop().expect("six members");
    roy.quit().await;
    for round in 0..EACH {
        for (i, (driven, _)) in members.iter().enumerate() {
            say(driven, room, format!("{} {round}", NAMES[i])).await;
        }
    }
    let total = EACH * members.len();
    let reference = room_messages(&mut members[0].1, total).await;
    let seqs: Vec<u64> = reference.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    for (i, (_, events)) in members.iter_mut().enumerate().skip(1) {
        assert_eq!(
            room_messages(events, total).await,
            reference,
            "{} on node {}",
            NAMES[i],
            i % 3 + 1
        );
    }

    // roy logs in on node 1: the backlog by its cursor, in the same order, once.
    let (roy, mut roy_events) = start(addr(0), NAMES[5]).await;
    assert_eq!(room_messages(&mut roy_events, total).await, reference);

    // rob (node 2) is removed through node 1: told there, and gets nothing more.
    members[0]
        .0
        .command(ClientCommand::Room(RoomCommand::Remove {
            room,
            user: user("rob"),
        }))
        .await;
    members[1]
        .1
        .expect(
            "rob is told he left",
            |e| matches!(e, ClientEvent::RoomLeft { room: r } if *r == room),
        )
        .await;
    say(&members[2].0, room, "after rob".into()).await;
    let last = room_messages(&mut roy_events, 1).await;
    assert_eq!(last, [(total as u64 + 1, "after rob".to_string())]);
    // roy has it, so its news is out; rob's node pushes only to the members at the commit,
    // so nothing of it may be waiting for rob (a check that can miss a late frame, never
    // invent one).
    while let Ok(e) = members[1].1.0.try_recv() {
        assert!(
            !matches!(e, ClientEvent::RoomMessage(_)),
            "rob got a message after he left: {e:?}"
        );
    }

    roy.quit().await;
    for (driven, _) in members {
        driven.quit().await;
    }
}
