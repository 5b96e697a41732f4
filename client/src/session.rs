//! What every subcommand needs: the server's address, a password, a client core set up with
//! OS randomness, and the runner from breeze-transport-tokio started on it.

use crate::Fatal;
use crate::cli::Account;
use breeze_core::UserId;
use breeze_core::client::{AckMode, Client, ClientConfig, ClientEvent, Mode};
use breeze_core::message::Status;
use breeze_transport_tokio::tls::{TlsConnector, TlsError};
use breeze_transport_tokio::{
    ClientCommand, ClientSettings, Clock, Connector, TcpConnector, run_client,
};
use std::future::Future;
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Events buffered between the runner and the application.
const EVENT_QUEUE: usize = 1024;

/// A running client: commands in, events out, and the task that drives it.
#[derive(Debug)]
pub struct Session {
    pub user: UserId,
    /// The servers of `--server`, tried in turn.
    pub servers: Vec<SocketAddr>,
    /// Unbounded, so that the application never blocks on sending a command while the
    /// runner waits for room in `events`.
    pub commands: mpsc::UnboundedSender<ClientCommand>,
    /// The runner's own queue, for a transfer agent (which waits for room, so a relayed
    /// file cannot pile up in memory). Held, it keeps the runner from taking a dropped
    /// `commands` for `Quit`: `quit` sends `Quit` itself.
    pub runner: mpsc::Sender<ClientCommand>,
    /// The session to the server is in TLS.
    pub tls: bool,
    pub events: mpsc::Receiver<ClientEvent>,
    pub task: JoinHandle<()>,
    pub clock: Clock,
    /// How the last connection attempt went, TLS handshake included.
    pub attempts: Recorder,
}

/// How a subcommand wants the client core set up. Acks are always manual: `chat` acks each
/// message once it has printed it (`ClientCommand::Ack`); the one-shot commands never ack,
/// so the messages waiting for the user stay in the mailbox for their chat.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub mode: Mode,
    pub status: Status,
}

impl Session {
    /// Resolves the server, and starts a client that connects at once.
    pub async fn start(account: &Account, password: String, setup: Setup) -> Result<Self, Fatal> {
        let servers = resolve_all(&account.server).await?;
        let mut cfg = ClientConfig::new(account.user.clone(), password);
        cfg.mode = setup.mode;
        cfg.status = setup.status;
        // A message is acked once printed, not when the runner hands it over: one still in
        // the event queue when the process dies comes again at the next login.
        cfg.acks = AckMode::Manual;
        cfg.client_name = concat!("breeze/", env!("CARGO_PKG_VERSION")).to_string();
        // Jitter must differ between clients, or a server restart brings them all back at
        // the same instant; ids must differ between runs, or the server takes a new message
        // for a re-send of an old one with the same id and drops it.
        cfg.seed = os_random();
        cfg.id_base = os_random();

        let clock = Clock::start();
        let client = Client::new(cfg, clock.now());
        let attempts = Recorder::default();
        let (command_tx, mut command_rx) = mpsc::unbounded_channel();
        let (runner_tx, runner_rx) = mpsc::channel(64);
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let mut settings = ClientSettings::new(servers[0]);
        settings.fallbacks = servers[1..].to_vec();
        // The two connectors make different stream types, hence one boxed runner.
        let runner_queue = runner_tx.clone();
        let tls = tls(account)?;
        let in_tls = tls.is_some();
        let runner: Pin<Box<dyn Future<Output = Client> + Send>> = match tls {
            None => Box::pin(run_client(
                client,
                clock,
                attempts.around(TcpConnector),
                settings,
                runner_rx,
                event_tx,
            )),
            Some(tls) => Box::pin(run_client(
                client,
                clock,
                attempts.around(tls.over(TcpConnector)),
                settings,
                runner_rx,
                event_tx,
            )),
        };
        // Forwards the unbounded queue into the runner's bounded one. When the application
        // drops its sender this drops the runner's, which the runner takes for `Quit`.
        tokio::spawn(async move {
            while let Some(command) = command_rx.recv().await {
                if runner_tx.send(command).await.is_err() {
                    break;
                }
            }
        });
        let task = tokio::spawn(async move {
            runner.await;
        });
        Ok(Session {
            user: account.user.clone(),
            servers,
            commands: command_tx,
            runner: runner_queue,
            tls: in_tls,
            events: event_rx,
            task,
            clock,
            attempts,
        })
    }

    pub fn command(&self, command: ClientCommand) {
        // Only fails when the runner has returned, and then there is nobody to tell.
        let _ = self.commands.send(command);
    }

    /// Logs out and waits (bounded) for the runner to write the `Logout` and close.
    pub async fn quit(self) {
        let Session {
            commands,
            mut events,
            task,
            ..
        } = self;
        let _ = commands.send(ClientCommand::Quit);
        drop(commands);
        let drain = async {
            // The runner waits for room to send events: keep taking them until it ends.
            while events.recv().await.is_some() {}
            let _ = task.await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), drain).await;
    }

    /// The servers as the user gave them, for messages.
    pub fn servers_shown(&self) -> String {
        let all: Vec<String> = self.servers.iter().map(|a| a.to_string()).collect();
        all.join(", ")
    }

    /// Whether `failures` attempts that never reached a login have tried every server of
    /// the list: a client that never logged in gives up then, not at the first server
    /// that is down.
    pub fn tried_every_server(&self, failures: usize) -> bool {
        failures >= self.servers.len()
    }

    /// Why the last connection attempt or connection ended, as the end of a sentence.
    pub fn connection_failure(&self) -> String {
        let (addr, attempt) = self.attempts.last();
        let addr = addr.map_or_else(|| self.servers_shown(), |a| a.to_string());
        let failed = match attempt {
            Attempt::Failed(e) => format!("cannot connect to {addr}: {e}"),
            Attempt::Connecting => format!("cannot connect to {addr}: timed out"),
            Attempt::Connected => format!(
                "the connection to {addr} closed before login (is it a Breeze server? one that \
                 speaks TLS needs --tls-ca or --tls-pin)"
            ),
        };
        if self.servers.len() > 1 {
            format!("{failed} (and every other server in --server)")
        } else {
            failed
        }
    }
}

/// How the most recent connect attempt went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Attempt {
    /// Started and not finished: still going, or abandoned by the runner's timeout.
    #[default]
    Connecting,
    Failed(String),
    Connected,
}

/// Remembers how the last connection attempt went, which the client core's events do not
/// carry: where it went, a refused TCP connection, or a TLS handshake that failed and why.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    last: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Clone, Default)]
struct Recorded {
    addr: Option<SocketAddr>,
    attempt: Attempt,
}

impl Recorder {
    /// The server of the last attempt, and how it went.
    pub fn last(&self) -> (Option<SocketAddr>, Attempt) {
        self.last
            .lock()
            .map(|r| (r.addr, r.attempt.clone()))
            .unwrap_or_default()
    }

    fn record(&self, addr: SocketAddr, attempt: Attempt) {
        if let Ok(mut last) = self.last.lock() {
            *last = Recorded {
                addr: Some(addr),
                attempt,
            };
        }
    }

    /// `inner`, with each of its attempts recorded here.
    fn around<C: Connector>(&self, inner: C) -> Recording<C> {
        Recording {
            inner,
            recorder: self.clone(),
        }
    }
}

/// A connector whose attempts a [`Recorder`] sees, over TLS when `C` is TLS: so a failed
/// handshake is reported with its reason, not as a connection closed before login.
#[derive(Debug, Clone)]
pub struct Recording<C> {
    inner: C,
    recorder: Recorder,
}

impl<C: Connector> Connector for Recording<C> {
    type Stream = C::Stream;

    async fn connect(&mut self, addr: SocketAddr) -> io::Result<C::Stream> {
        self.recorder.record(addr, Attempt::Connecting);
        let result = self.inner.connect(addr).await;
        self.recorder.record(
            addr,
            match &result {
                Ok(_) => Attempt::Connected,
                Err(e) => Attempt::Failed(e.to_string()),
            },
        );
        result
    }
}

fn tls(account: &Account) -> Result<Option<TlsConnector>, Fatal> {
    let fatal = |e: TlsError| Fatal(e.to_string());
    let connector = match (&account.tls_ca, &account.tls_pin) {
        (Some(ca), _) => TlsConnector::from_ca_file(ca).map_err(fatal)?,
        (None, Some(pin)) => TlsConnector::pinned(pin).map_err(fatal)?,
        (None, None) if account.tls_name.is_some() => {
            return Err(Fatal("--tls-name needs --tls-ca or --tls-pin".to_string()));
        }
        (None, None) => return Ok(None),
    };
    // The name to verify: --tls-name, else the host of (the first) --server when it is a
    // name (a certificate for chat.example.com must be checked against that, not against
    // whichever address the name resolved to), else the address dialled. The nodes of a
    // cluster behind several names need a certificate for one --tls-name.
    let name = account
        .tls_name
        .clone()
        .or_else(|| host_name(account.server.split(',').next().unwrap_or_default().trim()));
    match name {
        Some(name) => connector.with_server_name(&name).map(Some).map_err(fatal),
        None => Ok(Some(connector)),
    }
}

/// The host part of `HOST:PORT` when it is a DNS name rather than an IP address.
fn host_name(server: &str) -> Option<String> {
    let (host, _port) = server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host.parse::<std::net::IpAddr>().is_err() && !host.is_empty()).then(|| host.to_owned())
}

/// `--server`: one `HOST:PORT`, or several separated by commas (the nodes of a cluster).
async fn resolve_all(servers: &str) -> Result<Vec<SocketAddr>, Fatal> {
    let mut all = Vec::new();
    for server in servers.split(',').map(str::trim) {
        if server.is_empty() {
            return Err(Fatal(format!(
                "--server {servers:?} has an empty entry: give HOST:PORT[,HOST:PORT...]"
            )));
        }
        all.push(resolve(server).await?);
    }
    Ok(all)
}

async fn resolve(server: &str) -> Result<SocketAddr, Fatal> {
    let mut addrs = tokio::net::lookup_host(server)
        .await
        .map_err(|e| Fatal(format!("cannot resolve server address {server:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| Fatal(format!("server address {server:?} resolves to nothing")))
}

/// 64 random bits from the operating system; the clock and process id if that fails.
pub fn os_random() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    })
}

/// The password from the flags or the environment; else asked for on a terminal (twice
/// when `confirm`); else an error, since a script must not hang on a prompt.
pub fn password(account: &Account, confirm: bool) -> Result<String, Fatal> {
    if let Some(password) = &account.password {
        return Ok(password.clone());
    }
    if !io::stdin().is_terminal() {
        return Err(Fatal(
            "no password: give --password or set BREEZE_PASSWORD (standard input is not a \
             terminal to ask on)"
                .into(),
        ));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt)
            .map_err(|e| Fatal(format!("cannot read the password: {e}")))
    };
    let password = ask(&format!("password for {}: ", account.user))?;
    if confirm && ask("again: ")? != password {
        return Err(Fatal("the passwords do not match".into()));
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn the_tls_name_defaults_to_the_servers_host_name_not_its_address() {
        assert_eq!(
            host_name("chat.example.com:7878").as_deref(),
            Some("chat.example.com")
        );
        assert_eq!(host_name("localhost:7878").as_deref(), Some("localhost"));
        assert_eq!(host_name("127.0.0.1:7878"), None);
        assert_eq!(host_name("[::1]:7878"), None);
        assert_eq!(host_name("no-port"), None);
    }
}
