//! The whole server — core, tokio host, SQLite store — started in-process on a free
//! loopback port over a database in a temporary directory.

mod common;

use breeze_core::message::{ClientMsg, CloseReason, Presence, PresenceEntry, ServerMsg};
use breeze_server::{DbLocation, Settings};
use common::{Peer, WAIT, user};
use std::time::Duration;
use tokio::time::timeout;

fn settings(dir: &tempfile::TempDir) -> Settings {
    let mut s = Settings::for_tests(DbLocation::File(dir.path().join("breeze.db")));
    s.server.heartbeat_interval = Duration::from_millis(200);
    s.server.heartbeat_timeout = Duration::from_secs(5);
    s
}

#[tokio::test]
async fn accounts_and_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = breeze_server::start(settings(&dir)).await.unwrap();
    let addr = server.local_addr();

    let mut alice = Peer::connect(addr).await;
    alice.register("alice", "alice-password").await;
    let mut bob = Peer::connect(addr).await;
    bob.register("bob", "bob-password").await;
    bob.login("bob", "bob-password").await;
    // A message for alice, who is not logged in: stored, confirmed to bob.
    bob.send(&ClientMsg::Send {
        id: 42,
        to: user("alice"),
        body: "while you were out".into(),
        attachment: None,
    })
    .await;
    bob.recv_until("sent", |m| matches!(m, ServerMsg::Sent { id: 42, .. }))
        .await;
    assert_eq!(server.stats().await.unwrap().registered_users, 2);

    timeout(WAIT, server.shutdown()).await.unwrap();
    let shutdown = Some(ServerMsg::Bye {
        reason: CloseReason::ServerShutdown,
    });
    assert_eq!(bob.last_before_close().await, shutdown);
    assert_eq!(alice.last_before_close().await, shutdown);

    // Same database, new process state: the directory is loaded, the message is waiting.
    let server = breeze_server::start(settings(&dir)).await.unwrap();
    assert_eq!(server.stats().await.unwrap().registered_users, 2);
    let mut alice = Peer::connect(server.local_addr()).await;
    let snapshot = alice.login("alice", "alice-password").await;
    assert_eq!(
        snapshot,
        ServerMsg::PresenceSnapshot {
            entries: vec![PresenceEntry {
                user: user("bob"),
                presence: Presence::Offline
            }]
        }
    );
    let ServerMsg::Deliver(d) = alice
        .recv_until("delivery", |m| matches!(m, ServerMsg::Deliver(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!(
        (d.from, d.id, d.body.as_str()),
        (user("bob"), 42, "while you were out")
    );
    let who = server.who().await.unwrap();
    assert_eq!(who.len(), 1);
    assert_eq!(who[0].user, user("alice"));

    // A wrong password is refused without saying whether the user exists.
    let mut mallory = Peer::connect(server.local_addr()).await;
    mallory
        .send(&ClientMsg::Login {
            user: user("alice"),
            credential: breeze_core::message::Credential::Password("guess-guess".into()),
            status: breeze_core::message::Status::Online,
        })
        .await;
    let refused = mallory
        .recv_until("refusal", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(
        matches!(
            refused,
            ServerMsg::Error {
                code: breeze_core::message::ErrorCode::BadCredentials,
                ..
            }
        ),
        "{refused:?}"
    );
    timeout(WAIT, server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn an_in_memory_store_serves_too() {
    let server = breeze_server::start(Settings::for_tests(DbLocation::Memory))
        .await
        .unwrap();
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.register("solo", "solo-password").await;
    peer.login("solo", "solo-password").await;
    timeout(WAIT, server.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_busy_port_is_reported_in_plain_words() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = Settings::for_tests(DbLocation::Memory);
    s.listen = taken.local_addr().unwrap();
    let err = breeze_server::start(s).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot listen on {}: ",
            taken.local_addr().unwrap()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn run_client_comes_back_after_a_restart_on_the_same_database() {
    use breeze_core::client::{Client, ClientConfig, ClientEvent, Mode};
    use breeze_transport_tokio::{ClientCommand, ClientSettings, Clock, TcpConnector, run_client};
    use tokio::sync::mpsc;

    async fn expect(events: &mut mpsc::Receiver<ClientEvent>, f: impl Fn(&ClientEvent) -> bool) {
        timeout(WAIT, async {
            while let Some(ev) = events.recv().await {
                if f(&ev) {
                    return;
                }
            }
            panic!("events closed");
        })
        .await
        .expect("event within the wait bound");
    }

    let dir = tempfile::tempdir().unwrap();
    let server = breeze_server::start(settings(&dir)).await.unwrap();
    let addr = server.local_addr();
    let clock = Clock::start();
    let cfg = ClientConfig {
        mode: Mode::Register,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..ClientConfig::new(user("frank"), "frank-password")
    };
    let (commands, command_rx) = mpsc::channel(8);
    let (event_tx, mut events) = mpsc::channel(256);
    let task = tokio::spawn(run_client(
        Client::new(cfg, clock.now()),
        clock,
        TcpConnector,
        ClientSettings::new(addr),
        command_rx,
        event_tx,
    ));
    expect(&mut events, |e| matches!(e, ClientEvent::LoggedIn { .. })).await;
    timeout(WAIT, server.shutdown()).await.unwrap();
    expect(&mut events, |e| {
        matches!(
            e,
            ClientEvent::Disconnected {
                reason: Some(CloseReason::ServerShutdown),
                ..
            }
        )
    })
    .await;

    let mut again = settings(&dir);
    again.listen = addr;
    let server = breeze_server::start(again).await.unwrap();
    // Back in on its own: resume token first (the database kept it), password otherwise.
    expect(&mut events, |e| matches!(e, ClientEvent::LoggedIn { .. })).await;
    assert_eq!(server.stats().await.unwrap().sessions, 1);
    commands.send(ClientCommand::Quit).await.unwrap();
    timeout(WAIT, task).await.unwrap().unwrap();
    timeout(WAIT, server.shutdown()).await.unwrap();
}
