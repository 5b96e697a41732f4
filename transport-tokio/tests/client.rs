//! `run_client` against a real host over loopback TCP.

mod common;

use breeze_core::client::{Client, ClientConfig, ClientEvent, Mode};
use breeze_core::message::{CloseReason, Presence};
use breeze_transport_tokio::{ClientCommand, ClientSettings, Clock, TcpConnector, run_client};
use common::{TestServer, WAIT, fast_config, host_config, user};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Waits for an event matching `f`, skipping others.
async fn expect(
    events: &mut mpsc::Receiver<ClientEvent>,
    what: &str,
    f: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let found = timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(ev) if f(&ev) => return ev,
                Some(_) => {}
                None => panic!("events closed while waiting for {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"))
}

fn config(name: &str, mode: Mode) -> ClientConfig {
    ClientConfig {
        mode,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::new(user(name), "password1")
    }
}

#[tokio::test]
async fn run_client_logs_in_and_reconnects_after_a_server_restart() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let addr = server.addr;
    let store = server.store.clone();

    let clock = Clock::start();
    let client = Client::new(config("carol", Mode::Register), clock.now());
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, mut events) = mpsc::channel(256);
    let task = tokio::spawn(run_client(
        client,
        clock,
        TcpConnector,
        ClientSettings::new(addr),
        command_rx,
        event_tx,
    ));
    expect(&mut events, "registered", |e| *e == ClientEvent::Registered).await;
    expect(&mut events, "logged in", |e| {
        matches!(e, ClientEvent::LoggedIn { .. })
    })
    .await;

    // A second client sees carol online, and a message reaches her.
    let clock2 = Clock::start();
    let dave = Client::new(config("dave", Mode::Register), clock2.now());
    let (dave_commands, dave_rx) = mpsc::channel(16);
    let (dave_tx, mut dave_events) = mpsc::channel(256);
    let dave_task = tokio::spawn(run_client(
        dave,
        clock2,
        TcpConnector,
        ClientSettings::new(addr),
        dave_rx,
        dave_tx,
    ));
    expect(&mut dave_events, "dave logged in", |e| {
        matches!(e, ClientEvent::LoggedIn { .. })
    })
    .await;
    let (id_tx, id_rx) = tokio::sync::oneshot::channel();
    dave_commands
        .send(ClientCommand::SendMessage {
            to: user("carol"),
            body: "hello carol".into(),
            attachment: None,
            id: Some(id_tx),
        })
        .await
        .unwrap();
    let id = id_rx.await.unwrap();
    expect(
        &mut dave_events,
        "sent",
        |e| matches!(e, ClientEvent::MessageSent { id: i, .. } if *i == id),
    )
    .await;
    let ClientEvent::Message(d) = expect(&mut events, "message", |e| {
        matches!(e, ClientEvent::Message(_))
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(d.body, "hello carol");
    dave_commands.send(ClientCommand::Quit).await.unwrap();
    timeout(WAIT, dave_task).await.unwrap().unwrap();
    expect(&mut events, "dave offline", |e| {
        *e == ClientEvent::PresenceChanged {
            user: user("dave"),
            presence: Presence::Offline,
        }
    })
    .await;

    // The server goes away and comes back on the same address with the same accounts.
    server.stop().await;
    expect(&mut events, "disconnected", |e| {
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
    expect(&mut events, "logged in again", |e| {
        matches!(e, ClientEvent::LoggedIn { .. })
    })
    .await;
    server
        .wait_stats("carol's session", |s| s.sessions == 1)
        .await;

    // Quit logs out and hands the client back.
    commands.send(ClientCommand::Quit).await.unwrap();
    let client = timeout(WAIT, task).await.unwrap().unwrap();
    assert!(!client.is_logged_in());
    server.wait_stats("carol gone", |s| s.sessions == 0).await;
    server.stop().await;
}
