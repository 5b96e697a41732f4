//! The whole server — core, tokio host, SQLite store — started in-process on a free
//! loopback port over a database in a temporary directory.

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{ClientMsg, CloseReason, Presence, PresenceEntry, ServerMsg};
use breeze_server::{DbLocation, Settings};
use breeze_testsupport::{InProcess, Peer, client_config, drive, user};
use breeze_transport_tokio::TcpConnector;
use std::time::Duration;

fn timings(s: &mut Settings) {
    s.server.heartbeat_interval = Duration::from_millis(200);
    s.server.heartbeat_timeout = Duration::from_secs(5);
}

#[tokio::test]
async fn accounts_and_messages_survive_a_restart() {
    let mut server = InProcess::start(timings).await;
    let addr = server.addr();

    let mut alice = Peer::hello(addr).await;
    alice.register("alice").await;
    let mut bob = Peer::user(addr, "bob").await;
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
    assert_eq!(server.stats().await.registered_users, 2);

    server.restart().await;
    let shutdown = Some(ServerMsg::Bye {
        reason: CloseReason::ServerShutdown,
    });
    assert_eq!(bob.last_before_close().await, shutdown);
    assert_eq!(alice.last_before_close().await, shutdown);

    // Same database, new server state: the directory is loaded, the message is waiting.
    assert_eq!(server.stats().await.registered_users, 2);
    let mut alice = Peer::hello(server.addr()).await;
    let snapshot = alice.login("alice").await;
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
    let who = server.who().await;
    assert_eq!(who.len(), 1);
    assert_eq!(who[0].user, user("alice"));

    // A wrong password is refused without saying whether the user exists.
    let mut mallory = Peer::hello(server.addr()).await;
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
    server.stop().await;
}

#[tokio::test]
async fn an_in_memory_store_serves_too() {
    let server = InProcess::start(|s| s.db = DbLocation::Memory).await;
    Peer::user(server.addr(), "solo").await;
    server.stop().await;
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
    let mut server = InProcess::start(timings).await;
    let (frank, mut events) = drive(
        client_config("frank", "frank-password", Mode::Register),
        TcpConnector,
        server.addr(),
    );
    events.logged_in().await;
    // Back on the same address and database.
    server.restart().await;
    events
        .expect("shutdown", |e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    reason: Some(CloseReason::ServerShutdown),
                    ..
                }
            )
        })
        .await;
    // Back in on its own: resume token first (the database kept it), password otherwise.
    events.logged_in().await;
    assert_eq!(server.stats().await.sessions, 1);
    frank.quit().await;
    server.stop().await;
}
