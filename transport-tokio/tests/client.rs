//! `run_client` against a real host over loopback TCP.

mod common;

use breeze_core::client::{AckMode, Client, ClientConfig, ClientEvent, Mode};
use breeze_core::message::{ClientMsg, CloseReason, Presence, ServerMsg};
use breeze_transport_tokio::{ClientCommand, ClientSettings, Clock, TcpConnector, run_client};
use common::{Peer, TestServer, WAIT, fast_config, host_config, user};
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

/// A `run_client` task and its channels.
struct Running {
    commands: mpsc::Sender<ClientCommand>,
    events: mpsc::Receiver<ClientEvent>,
    task: tokio::task::JoinHandle<Client>,
}

fn run(cfg: ClientConfig, addr: std::net::SocketAddr) -> Running {
    let clock = Clock::start();
    let client = Client::new(cfg, clock.now());
    let (commands, command_rx) = mpsc::channel(16);
    let (event_tx, events) = mpsc::channel(256);
    let task = tokio::spawn(run_client(
        client,
        clock,
        TcpConnector,
        ClientSettings::new(addr),
        command_rx,
        event_tx,
    ));
    Running {
        commands,
        events,
        task,
    }
}

impl Running {
    /// The next message delivered to the application: its seq.
    async fn message(&mut self) -> u64 {
        match expect(&mut self.events, "a message", |e| {
            matches!(e, ClientEvent::Message(_))
        })
        .await
        {
            ClientEvent::Message(d) => d.seq,
            _ => unreachable!(),
        }
    }

    /// A request answered through the store after everything the runner wrote before it:
    /// once it is back, any ack written earlier has reached the store.
    async fn round_trip(&mut self) {
        self.commands
            .send(ClientCommand::History {
                with: user("dave"),
                before: None,
                limit: 1,
            })
            .await
            .unwrap();
        expect(&mut self.events, "history", |e| {
            matches!(e, ClientEvent::History { .. })
        })
        .await;
    }
}

#[tokio::test]
async fn run_client_acks_only_what_the_application_has() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let addr = server.addr;
    let undelivered = || server.store.lock().unwrap().undelivered(&user("carol"));
    let (mut dave, _) = Peer::register_and_login(addr, "dave").await;
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
        ..config("carol", mode)
    };

    // Manual: the application has the message, and has not acked it.
    let mut carol = run(manual(Mode::Register), addr);
    expect(&mut carol.events, "logged in", |e| {
        matches!(e, ClientEvent::LoggedIn { .. })
    })
    .await;
    send(1).await;
    let seq = carol.message().await;
    carol.round_trip().await;
    assert_eq!(undelivered(), 1);

    // Its process dies: the next one gets the message again, and acks it.
    carol.task.abort();
    let mut carol = run(manual(Mode::Login), addr);
    assert_eq!(carol.message().await, seq);
    carol.commands.send(ClientCommand::Ack(seq)).await.unwrap();
    carol.round_trip().await;
    assert_eq!(undelivered(), 0);
    carol.commands.send(ClientCommand::Quit).await.unwrap();
    timeout(WAIT, carol.task).await.unwrap().unwrap();

    // The default acks what the runner handed to the application.
    let mut carol = run(config("carol", Mode::Login), addr);
    expect(&mut carol.events, "logged in", |e| {
        matches!(e, ClientEvent::LoggedIn { .. })
    })
    .await;
    send(2).await;
    assert_ne!(carol.message().await, seq);
    carol.round_trip().await;
    assert_eq!(undelivered(), 0);
    carol.commands.send(ClientCommand::Quit).await.unwrap();
    timeout(WAIT, carol.task).await.unwrap().unwrap();
    server.stop().await;
}
