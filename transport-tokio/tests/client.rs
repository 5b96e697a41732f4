//! `run_client` against a real host over loopback TCP.

mod common;

use breeze_core::client::{AckMode, ClientConfig, ClientEvent, Mode};
use breeze_core::message::{ClientMsg, CloseReason, Presence, ServerMsg};
use breeze_testsupport::{Driven, Events, PASSWORD, Peer, client_config, drive, drive_with, user};
use breeze_transport_tokio::{ClientCommand, ClientSettings, TcpConnector};
use common::{TestServer, fast_config, host_config};

#[tokio::test]
async fn run_client_logs_in_and_reconnects_after_a_server_restart() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let addr = server.addr;
    let store = server.store.clone();

    let (carol, mut events) = drive(
        client_config("carol", PASSWORD, Mode::Register),
        TcpConnector,
        addr,
    );
    events
        .expect("registered", |e| *e == ClientEvent::Registered)
        .await;
    events.logged_in().await;

    // A second client sees carol online, and a message reaches her.
    let (dave, mut dave_events) = drive(
        client_config("dave", PASSWORD, Mode::Register),
        TcpConnector,
        addr,
    );
    dave_events.logged_in().await;
    let (id_tx, id_rx) = tokio::sync::oneshot::channel();
    dave.command(ClientCommand::SendMessage {
        to: user("carol"),
        body: "hello carol".into(),
        attachment: None,
        id: Some(id_tx),
    })
    .await;
    let id = id_rx.await.unwrap();
    dave_events
        .expect(
            "sent",
            |e| matches!(e, ClientEvent::MessageSent { id: i, .. } if *i == id),
        )
        .await;
    assert_eq!(events.message().await.body, "hello carol");
    dave.quit().await;
    events
        .expect("dave offline", |e| {
            *e == ClientEvent::PresenceChanged {
                user: user("dave"),
                presence: Presence::Offline,
            }
        })
        .await;

    // The server goes away and comes back on the same address with the same accounts.
    server.stop().await;
    events
        .expect("disconnected", |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    reason: Some(CloseReason::ServerShutdown),
                    retry_at: Some(_)
                }
            )
        })
        .await;
    let server = TestServer::start_on(addr, store, fast_config(), host_config()).await;
    events.logged_in().await;
    server
        .wait_stats("carol's session", |s| s.sessions == 1)
        .await;

    // Quit logs out and hands the client back.
    let client = carol.quit().await;
    assert!(!client.is_logged_in());
    server.wait_stats("carol gone", |s| s.sessions == 0).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_given_several_servers_skips_a_dead_one_and_moves_on_when_its_server_goes() {
    // Two nodes sharing one store (what a login needs of a cluster), and an address where
    // nobody listens, first in the list.
    let a = TestServer::start(fast_config(), host_config()).await;
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let b = TestServer::start_on(any, a.store.clone(), fast_config(), host_config()).await;
    let dead = std::net::TcpListener::bind(any)
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = ClientSettings::new(dead);
    settings.fallbacks = vec![a.addr, b.addr];

    let (erin, mut events) = drive_with(
        client_config("erin", PASSWORD, Mode::Register),
        TcpConnector,
        settings,
    );
    events.logged_in().await;
    a.wait_stats("erin on a", |s| s.sessions == 1).await;

    // Her node goes away: the next attempt is the next server, not the same one again.
    a.stop().await;
    events
        .expect("disconnected", |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    retry_at: Some(_),
                    ..
                }
            )
        })
        .await;
    events.logged_in().await;
    b.wait_stats("erin on b", |s| s.sessions == 1).await;
    erin.quit().await;
    b.stop().await;
}

/// A request answered through the store after everything the runner wrote before it: once
/// it is back, any ack written earlier has reached the store.
async fn round_trip(client: &Driven, events: &mut Events) {
    client
        .command(ClientCommand::History {
            with: user("dave"),
            before: None,
            limit: 1,
        })
        .await;
    events
        .expect("history", |e| matches!(e, ClientEvent::History { .. }))
        .await;
}

#[tokio::test]
async fn run_client_acks_only_what_the_application_has() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let addr = server.addr;
    let undelivered = || server.store.lock().unwrap().undelivered(&user("carol"));
    let mut dave = Peer::user(addr, "dave").await;
    let mut send = async |id: u64| {
        dave.send(&ClientMsg::Send {
            id,
            to: user("carol"),
            body: format!("message {id}"),
            attachment: None,
        })
        .await;
        dave.recv_until("sent", |m| matches!(m, ServerMsg::Sent { .. }))
            .await;
    };
    let manual = |mode| ClientConfig {
        acks: AckMode::Manual,
        ..client_config("carol", PASSWORD, mode)
    };

    // Manual: the application has the message, and has not acked it.
    let (carol, mut events) = drive(manual(Mode::Register), TcpConnector, addr);
    events.logged_in().await;
    send(1).await;
    let seq = events.message().await.seq;
    round_trip(&carol, &mut events).await;
    assert_eq!(undelivered(), 1);

    // Its process dies: the next one gets the message again, and acks it.
    carol.task.abort();
    let (carol, mut events) = drive(manual(Mode::Login), TcpConnector, addr);
    assert_eq!(events.message().await.seq, seq);
    carol.command(ClientCommand::Ack(seq)).await;
    round_trip(&carol, &mut events).await;
    assert_eq!(undelivered(), 0);
    carol.quit().await;

    // The default acks what the runner handed to the application.
    let (carol, mut events) = drive(
        client_config("carol", PASSWORD, Mode::Login),
        TcpConnector,
        addr,
    );
    events.logged_in().await;
    send(2).await;
    assert_ne!(events.message().await.seq, seq);
    round_trip(&carol, &mut events).await;
    assert_eq!(undelivered(), 0);
    carol.quit().await;
    server.stop().await;
}
