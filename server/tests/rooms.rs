//! Rooms end to end (protocol version 2): the whole server in-process, SQLite on disk, real
//! client cores over TCP. A room of 100 members chats while 30 of them are offline; every
//! member, online or not, ends up with the same messages in the same order, and the room's
//! history reads the same for all of them.

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{RoomDelivery, RoomRole};
use breeze_server::Settings;
use breeze_testsupport::{Driven, Events, InProcess, client_config, drive, user};
use breeze_transport_tokio::{ClientCommand, RoomCommand, TcpConnector};
use std::net::SocketAddr;
use std::time::Duration;

const MEMBERS: usize = 100;
const OFFLINE: usize = 30;
const SPEAKERS: usize = 10;
const EACH: usize = 5;

fn timings(s: &mut Settings) {
    s.server.heartbeat_interval = Duration::from_millis(500);
    s.server.heartbeat_timeout = Duration::from_secs(10);
    // Offline members' backlogs come in pages: exercise the paging.
    s.server.mailbox_page = 16;
    // A hundred accounts from one loopback address.
    s.server.register_throttle.burst = MEMBERS as u32;
}

fn name(i: usize) -> String {
    format!("m{i:03}")
}

fn password(i: usize) -> String {
    format!("password-of-{}", name(i))
}

async fn start(addr: SocketAddr, i: usize, mode: Mode) -> (Driven, Events) {
    let (driven, mut events) = drive(
        client_config(&name(i), &password(i), mode),
        TcpConnector,
        addr,
    );
    events.logged_in().await;
    (driven, events)
}

/// The next `n` room messages `events` gives, as (seq, sender, id, body).
async fn room_messages(events: &mut Events, n: usize) -> Vec<(u64, String, u64, String)> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        if let ClientEvent::RoomMessage(RoomDelivery {
            seq,
            from,
            id,
            body,
            ..
        }) = events
            .expect("a room message", |e| {
                matches!(e, ClientEvent::RoomMessage(_))
            })
            .await
        {
            got.push((seq, from.to_string(), id, body));
        }
    }
    got
}

async fn history(driven: &Driven, events: &mut Events, room: u64) -> Vec<u64> {
    driven
        .command(ClientCommand::Room(RoomCommand::History {
            room,
            before: None,
            limit: 500,
        }))
        .await;
    match events
        .expect("room history", |e| {
            matches!(e, ClientEvent::RoomHistory { .. })
        })
        .await
    {
        ClientEvent::RoomHistory { items, .. } => items.iter().rev().map(|d| d.seq).collect(),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_100_with_members_offline_reads_one_history_in_one_order() {
    let server = InProcess::start(timings).await;
    let addr = server.addr();
    let mut clients = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        clients.push(start(addr, i, Mode::Register).await);
    }

    // The owner creates the room and invites everyone else.
    let room = {
        let (owner, events) = &mut clients[0];
        owner
            .command(ClientCommand::Room(RoomCommand::Create(
                "all hands 🎉".into(),
            )))
            .await;
        match events
            .expect("the new room", |e| {
                matches!(e, ClientEvent::RoomMembers { full: true, .. })
            })
            .await
        {
            ClientEvent::RoomMembers { room, .. } => room,
            _ => unreachable!(),
        }
    };
    for i in 1..MEMBERS {
        clients[0]
            .0
            .command(ClientCommand::Room(RoomCommand::Invite {
                room,
                user: user(&name(i)),
                role: RoomRole::Member,
            }))
            .await;
    }
    for (i, (_, events)) in clients.iter_mut().enumerate().skip(1) {
        let ClientEvent::RoomMembers { members, .. } = events
            .expect("joining the room", |e| {
                matches!(e, ClientEvent::RoomMembers { full: true, .. })
            })
            .await
        else {
            unreachable!()
        };
        assert!(
            members.len() > i,
            "{} sees {} members",
            name(i),
            members.len()
        );
    }

    // The last 30 go offline; ten of the others say five things each.
    let online = MEMBERS - OFFLINE;
    for (driven, _) in clients.drain(online..) {
        driven.quit().await;
    }
    for round in 0..EACH {
        for (i, (driven, _)) in clients.iter().enumerate().take(SPEAKERS) {
            driven
                .command(ClientCommand::Room(RoomCommand::Send {
                    room,
                    body: format!("{} says {round}", name(i)),
                    id: None,
                }))
                .await;
        }
    }
    let total = SPEAKERS * EACH;
    let reference = room_messages(&mut clients[0].1, total).await;
    let seqs: Vec<u64> = reference.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "one row per seq"
    );
    for (i, (_, events)) in clients.iter_mut().enumerate().skip(1) {
        assert_eq!(
            room_messages(events, total).await,
            reference,
            "{} live",
            name(i)
        );
    }

    // The offline members log in: the room's backlog, by cursor, in the same order.
    for i in online..MEMBERS {
        clients.push(start(addr, i, Mode::Login).await);
    }
    for (i, (_, events)) in clients.iter_mut().enumerate().skip(online) {
        assert_eq!(
            room_messages(events, total).await,
            reference,
            "{} offline",
            name(i)
        );
    }

    // Everyone's history of the room is the same.
    for (i, (driven, events)) in clients.iter_mut().enumerate() {
        assert_eq!(
            history(driven, events, room).await,
            seqs,
            "{}'s history",
            name(i)
        );
    }
    for (driven, _) in clients {
        driven.quit().await;
    }
    server.stop().await;
}
