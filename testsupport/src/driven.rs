//! The real client — the client core run by `run_client` — in a task of the test's runtime,
//! commanded and watched through its two channels.

use crate::{WAIT, user};
use breeze_core::client::{Client, ClientConfig, ClientEvent, Mode};
use breeze_core::message::Delivery;
use breeze_transport_tokio::{ClientCommand, ClientSettings, Clock, Connector, run_client};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Commands waiting for the runner; a test that sends many at once does not wait on them.
const COMMAND_QUEUE: usize = 1024;
/// Events waiting for the test; the runner waits for room rather than drop one.
const EVENT_QUEUE: usize = 4096;

/// `name` with `password` in `mode`, reconnecting after 50 to 200 ms and giving a connect
/// attempt 3 s: quick enough for a test, slow enough not to spin.
pub fn client_config(name: &str, password: &str, mode: Mode) -> ClientConfig {
    ClientConfig {
        mode,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(3),
        ..ClientConfig::new(user(name), password)
    }
}

/// A running client: commands in; its events come out of the [`Events`] that `drive`
/// returns beside it.
#[derive(Debug)]
pub struct Driven {
    pub commands: mpsc::Sender<ClientCommand>,
    pub task: JoinHandle<Client>,
}

/// Starts `run_client` on a new client core made from `cfg`, connecting to `addr` through
/// `connector`.
pub fn drive<C: Connector>(cfg: ClientConfig, connector: C, addr: SocketAddr) -> (Driven, Events) {
    drive_with(cfg, connector, ClientSettings::new(addr))
}

/// [`drive`] with settings of the test's own (a list of servers).
pub fn drive_with<C: Connector>(
    cfg: ClientConfig,
    connector: C,
    settings: ClientSettings,
) -> (Driven, Events) {
    let clock = Clock::start();
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
    let task = tokio::spawn(run_client(
        Client::new(cfg, clock.now()),
        clock,
        connector,
        settings,
        command_rx,
        event_tx,
    ));
    (Driven { commands, task }, Events(events))
}

impl Driven {
    pub async fn command(&self, command: ClientCommand) {
        self.commands
            .send(command)
            .await
            .expect("the runner is running");
    }

    /// Logs out and waits (bounded) for the runner to hand the client core back.
    pub async fn quit(self) -> Client {
        self.command(ClientCommand::Quit).await;
        timeout(WAIT, self.task)
            .await
            .expect("the runner quit within the wait bound")
            .expect("the runner task")
    }
}

/// What a driven client tells its application.
#[derive(Debug)]
pub struct Events(pub mpsc::Receiver<ClientEvent>);

impl Events {
    /// The next event, whatever it is.
    pub async fn next(&mut self, what: &str) -> ClientEvent {
        match timeout(WAIT, self.0.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the client ended while waiting for {what}"),
            Err(_) => panic!("waited {WAIT:?} for {what}"),
        }
    }

    /// Skips events until one matches `f`.
    pub async fn expect(&mut self, what: &str, f: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
        let found = timeout(WAIT, async {
            loop {
                match self.0.recv().await {
                    Some(event) if f(&event) => return event,
                    Some(_) => {}
                    None => panic!("the client ended while waiting for {what}"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"))
    }

    pub async fn logged_in(&mut self) {
        self.expect("login", |e| matches!(e, ClientEvent::LoggedIn { .. }))
            .await;
    }

    /// Skips events until a message.
    pub async fn message(&mut self) -> Delivery {
        match self
            .expect("a message", |e| matches!(e, ClientEvent::Message(_)))
            .await
        {
            ClientEvent::Message(delivery) => delivery,
            _ => unreachable!(),
        }
    }
}
