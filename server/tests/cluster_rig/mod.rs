//! The cluster tests' rig, shared by `cluster.rs` (presence, liveness, fencing) and
//! `cluster_chat.rs` (messages across nodes): three real `breeze-server` processes on one
//! test's PostgreSQL schema and NATS cluster name, a raw wire user that keeps the presence it
//! is told of up to date, and the admin `who` across nodes. Needs NATS (`BREEZE_TEST_NATS`)
//! and PostgreSQL (`BREEZE_TEST_PG`); `Cluster::new` prints a skip line without them, and
//! fails instead under `BREEZE_REQUIRE_SERVICES=1`.

// Each test file uses its own part of the rig.
#![allow(dead_code)]

use breeze_core::UserId;
use breeze_core::message::{
    ClientMsg, CloseReason, Credential, MAGIC, PROTOCOL_VERSION, Presence, ServerMsg, Status,
    WhoEntry,
};
use breeze_testsupport::nats::TestNats;
use breeze_testsupport::pg::TestPg;
use breeze_testsupport::process::{ServerProcess, temp_db};
use breeze_testsupport::{PASSWORD, Peer, user};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::{Instant, timeout};

pub const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

/// The cluster timings of these tests (`--node-timeout` …), short to keep them quick.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(1500);
pub const HEARTBEAT: Duration = Duration::from_millis(200);
/// The ping interval follows: (900 − 200) / 4 = 175 ms, a cut noticed within 525 ms, so the node
/// fences by 1.125 s after it and nobody declares it dead before 1.3 s after it.
pub const FENCE_MARGIN: Duration = Duration::from_millis(900);
/// Room for a loaded test machine on top of a deadline the cluster promises: a bound that
/// turns a missed deadline into a failure, not a measurement (the delays are printed).
pub const SLACK: Duration = Duration::from_millis(1500);
/// Bound on a wait for something that happens soon (a message across nodes).
pub const SOON: Duration = Duration::from_secs(10);

/// The services and the settings every node of one test shares.
pub struct Cluster {
    pg: TestPg,
    pub nats: TestNats,
    _dir: tempfile::TempDir,
    /// Named because the server command always names one; `--store` wins.
    db: PathBuf,
}

impl Cluster {
    pub fn new(test: &str) -> Option<Cluster> {
        let nats = TestNats::reach(test)?;
        let pg = TestPg::create(test)?;
        let (dir, db) = temp_db();
        Some(Cluster {
            pg,
            nats,
            _dir: dir,
            db,
        })
    }

    /// Node `id`, on the bus at `bus` (the test's NATS, or a relay to it).
    pub async fn node(&self, id: u32, bus: &str) -> ServerProcess {
        self.node_at(id, bus, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
    }

    /// Node `id` listening on `listen`: a node started again where its clients' list of
    /// servers says it is.
    pub async fn node_at(&self, id: u32, bus: &str, listen: SocketAddr) -> ServerProcess {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let args: Vec<String> = vec![
            "--store".into(),
            self.pg.url().into(),
            "--cluster".into(),
            bus.into(),
            "--cluster-name".into(),
            self.nats.cluster().into(),
            "--node-id".into(),
            id.to_string(),
            "--node-timeout".into(),
            ms(NODE_TIMEOUT),
            "--node-heartbeat".into(),
            ms(HEARTBEAT),
            "--fence-margin".into(),
            ms(FENCE_MARGIN),
            "--admin".into(),
            "alice".into(),
        ];
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ServerProcess::spawn(BIN.as_ref(), &db, listen, &args)
        })
        .await
        .expect("spawn")
    }
}

/// A logged-in user and the presence it has been told of, kept up to date as frames come.
pub struct Watcher {
    pub name: &'static str,
    peer: Peer,
    view: BTreeMap<UserId, Presence>,
}

impl Watcher {
    /// Logs `name` in at `addr`; panics if the node refuses.
    pub async fn login(addr: SocketAddr, name: &'static str) -> Watcher {
        match Watcher::try_login(addr, name).await {
            Ok(w) => w,
            Err(refused) => panic!("{name} was refused at {addr}: {refused:?}"),
        }
    }

    /// Logs `name` in at `addr`, or what the node said instead (a fenced node's `Bye`).
    pub async fn try_login(
        addr: SocketAddr,
        name: &'static str,
    ) -> Result<Watcher, Option<ServerMsg>> {
        let mut peer = Peer::connect(addr).await;
        peer.send(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "cluster test".into(),
        })
        .await;
        match peer.recv().await {
            Some(ServerMsg::Welcome { .. }) => {}
            other => return Err(other),
        }
        peer.send(&ClientMsg::Login {
            user: user(name),
            credential: Credential::Password(PASSWORD.into()),
            status: Status::Online,
        })
        .await;
        let mut w = Watcher {
            name,
            peer,
            view: BTreeMap::new(),
        };
        loop {
            match w.peer.recv().await {
                Some(ServerMsg::LoginOk { .. }) => {}
                Some(ServerMsg::PresenceSnapshot { entries }) => {
                    w.view = entries.into_iter().map(|e| (e.user, e.presence)).collect();
                    return Ok(w);
                }
                other @ (Some(ServerMsg::Error { .. } | ServerMsg::Bye { .. }) | None) => {
                    return Err(other);
                }
                Some(_) => {}
            }
        }
    }

    pub fn sees(&self, who: &str) -> Presence {
        self.view
            .get(&user(who))
            .copied()
            .unwrap_or(Presence::Offline)
    }

    /// Applies what arrives until `who` is seen as `presence`; when that happened. Fails
    /// past `bound`.
    pub async fn until(&mut self, who: &str, presence: Presence, bound: Duration) -> Instant {
        let deadline = Instant::now() + bound;
        while self.sees(who) != presence {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.peer.recv()).await {
                Ok(Some(msg)) => self.apply(msg),
                Ok(None) => panic!(
                    "{}'s connection closed before {who} was {presence:?}",
                    self.name
                ),
                Err(_) => panic!(
                    "{} did not see {who} {presence:?} within {bound:?}; sees {:?}",
                    self.name, self.view
                ),
            }
        }
        Instant::now()
    }

    pub fn apply(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::PresenceSnapshot { entries } => {
                self.view = entries.into_iter().map(|e| (e.user, e.presence)).collect();
            }
            ServerMsg::PresenceDiff { entries } => {
                self.view
                    .extend(entries.into_iter().map(|e| (e.user, e.presence)));
            }
            _ => {}
        }
    }

    /// `who` as an administrator: each online user and the nodes of its sessions.
    pub async fn who(&mut self) -> BTreeMap<String, Vec<u32>> {
        self.peer.send(&ClientMsg::AdminWho).await;
        loop {
            match timeout(SOON, self.peer.recv()).await {
                Ok(Some(ServerMsg::Who { users, .. })) => return nodes_of(&users),
                Ok(Some(other)) => self.apply(other),
                Ok(None) => panic!("{}'s connection closed before Who", self.name),
                Err(_) => panic!("no Who within {SOON:?}"),
            }
        }
    }

    /// Reads until the server closes; its last word.
    pub async fn bye(&mut self, bound: Duration) -> (Option<CloseReason>, Instant) {
        let mut last = None;
        loop {
            match timeout(bound, self.peer.recv()).await {
                Ok(Some(ServerMsg::Bye { reason })) => last = Some(reason),
                Ok(Some(other)) => self.apply(other),
                Ok(None) => return (last, Instant::now()),
                Err(_) => panic!("{}'s connection was not closed within {bound:?}", self.name),
            }
        }
    }
}

pub fn nodes_of(users: &[WhoEntry]) -> BTreeMap<String, Vec<u32>> {
    users
        .iter()
        .map(|e| {
            let mut nodes: Vec<u32> = e.sessions.iter().map(|s| s.node).collect();
            nodes.sort_unstable();
            (e.user.as_str().to_owned(), nodes)
        })
        .collect()
}

pub fn who_is(expected: &[(&str, &[u32])]) -> BTreeMap<String, Vec<u32>> {
    expected
        .iter()
        .map(|(u, nodes)| ((*u).to_owned(), nodes.to_vec()))
        .collect()
}

/// Registers `names` through the node at `addr` (the accounts are the shared database's).
pub async fn register(addr: SocketAddr, names: &[&str]) {
    let mut peer = Peer::hello(addr).await;
    for name in names {
        peer.register(name).await;
    }
}

/// Waits (bounded) until `watcher`'s node lists exactly `expected` in `who`: remote sessions
/// arrive over the bus, a moment after the local ones.
pub async fn until_who(watcher: &mut Watcher, expected: &BTreeMap<String, Vec<u32>>) {
    let deadline = Instant::now() + SOON;
    loop {
        let got = watcher.who().await;
        if &got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "who at {}'s node: {got:?}, expected {expected:?}",
            watcher.name
        );
        tokio::time::sleep(HEARTBEAT).await;
    }
}
