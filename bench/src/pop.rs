//! The simulated users: their names and contacts, the setup that registers them, and the
//! login every scenario starts with.

use crate::net::{Conn, connect, fill, hello, next_msg, recv, send, source_ip};
use breeze_core::UserId;
use breeze_core::codec::encode_frame;
use breeze_core::message::{ClientMsg, Credential, ErrorCode, RequestKind, ServerMsg, Status};
use bytes::{BufMut, BytesMut};
use indicatif::ProgressBar;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Whose presence each client watches; must match the server's `--scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    Everyone,
    Contacts,
}

impl Scope {
    pub fn flag(self) -> &'static str {
        match self {
            Scope::Everyone => "everyone",
            Scope::Contacts => "contacts",
        }
    }
}

/// `n` users named `{prefix}{i}`. Under scope contacts user `i` watches the `contacts` users
/// after it on a ring (`i+1 … i+contacts`, mod `n`), so every user also has `contacts`
/// watchers.
#[derive(Debug, Clone)]
pub struct Population {
    pub n: usize,
    pub prefix: String,
    pub scope: Scope,
    pub contacts: usize,
}

impl Population {
    pub fn name(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    pub fn user(&self, i: usize) -> UserId {
        UserId::new(self.name(i)).expect("bench user names are valid")
    }

    pub fn password(&self, i: usize) -> String {
        format!("bench-password-{i}")
    }

    /// The index of a bench user's name, `None` for anyone else.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.prefix)?
            .parse()
            .ok()
            .filter(|&i| i < self.n)
    }

    pub fn contacts_of(&self, i: usize) -> Vec<usize> {
        let k = self.contacts.min(self.n.saturating_sub(1));
        (1..=k).map(|d| (i + d) % self.n).collect()
    }

    /// Who is told about user `v`'s presence.
    pub fn watchers_of(&self, v: usize) -> Vec<usize> {
        match self.scope {
            Scope::Everyone => (0..self.n).filter(|&w| w != v).collect(),
            Scope::Contacts => {
                let k = self.contacts.min(self.n.saturating_sub(1));
                (1..=k).map(|d| (v + self.n - d) % self.n).collect()
            }
        }
    }

    /// How many users a client sees once everyone is online.
    pub fn view_size(&self) -> usize {
        match self.scope {
            Scope::Everyone => self.n.saturating_sub(1),
            Scope::Contacts => self.contacts.min(self.n.saturating_sub(1)),
        }
    }

    /// `count` indices spread evenly over the population (so that, on the contacts ring,
    /// victims rarely watch each other).
    pub fn spread(&self, count: usize) -> Vec<usize> {
        let count = count.min(self.n);
        (0..count).map(|j| j * self.n / count.max(1)).collect()
    }
}

/// What setting up went like.
#[derive(Debug, Default, Clone)]
pub struct SetupStats {
    pub registered: usize,
    pub already_there: usize,
    pub contacts_added: usize,
    pub errors: usize,
    pub last_error: Option<String>,
}

pub const REGISTER_CHUNK: usize = 100;
/// Connections registering (or setting up contacts) at once.
pub const SETUP_CONNECTIONS: usize = 16;
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);

/// Registers every user: chunks of `REGISTER_CHUNK` pipelined on one connection each, a few
/// connections at a time. Then, under scope contacts, every user logs in once with its
/// password and adds its contacts (pipelined), and logs out.
pub async fn setup(addr: SocketAddr, pop: &Arc<Population>, pb: &ProgressBar) -> SetupStats {
    let mut stats = SetupStats::default();
    pb.set_length(pop.n as u64);
    pb.set_position(0);
    pb.set_message("registering");
    let mut tasks = JoinSet::new();
    let slots = Arc::new(Semaphore::new(SETUP_CONNECTIONS));
    for start in (0..pop.n).step_by(REGISTER_CHUNK) {
        let (pop, slots, pb) = (pop.clone(), slots.clone(), pb.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire().await;
            let end = (start + REGISTER_CHUNK).min(pop.n);
            let r = tokio::time::timeout(SETUP_TIMEOUT, register_chunk(addr, &pop, start, end))
                .await
                .unwrap_or_else(|_| Err("registration timed out".into()));
            pb.inc((end - start) as u64);
            r
        });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok((fresh, taken))) => {
                stats.registered += fresh;
                stats.already_there += taken;
            }
            Ok(Err(e)) => {
                stats.errors += 1;
                stats.last_error = Some(e);
            }
            Err(e) => {
                stats.errors += 1;
                stats.last_error = Some(e.to_string());
            }
        }
    }
    if pop.scope == Scope::Contacts && pop.contacts > 0 {
        pb.set_position(0);
        pb.set_message("adding contacts");
        let slots = Arc::new(Semaphore::new(128));
        for i in 0..pop.n {
            let (pop, slots, pb) = (pop.clone(), slots.clone(), pb.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire().await;
                let r = tokio::time::timeout(SETUP_TIMEOUT, add_contacts(addr, &pop, i))
                    .await
                    .unwrap_or_else(|_| Err("adding contacts timed out".into()));
                pb.inc(1);
                r.map(|added| (added, 0))
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok((added, _))) => stats.contacts_added += added,
                Ok(Err(e)) => {
                    stats.errors += 1;
                    stats.last_error = Some(e);
                }
                Err(e) => {
                    stats.errors += 1;
                    stats.last_error = Some(e.to_string());
                }
            }
        }
    }
    stats
}

async fn register_chunk(
    addr: SocketAddr,
    pop: &Population,
    start: usize,
    end: usize,
) -> Result<(usize, usize), String> {
    let mut stream = connect(addr, source_ip(start, pop.n))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    out.put_slice(&encode_frame(&hello()));
    for i in start..end {
        out.put_slice(&encode_frame(&ClientMsg::Register {
            user: pop.user(i),
            password: pop.password(i),
        }));
    }
    send_bytes(&mut stream, &out).await?;
    let mut buf = BytesMut::new();
    let (mut fresh, mut taken) = (0, 0);
    while fresh + taken < end - start {
        match recv(&mut stream, &mut buf)
            .await
            .map_err(|e| e.to_string())?
        {
            ServerMsg::Registered { .. } => fresh += 1,
            ServerMsg::Error {
                request: RequestKind::Register,
                code: ErrorCode::UserTaken,
                ..
            } => taken += 1,
            ServerMsg::Error {
                request: RequestKind::Register,
                code,
                ..
            } => {
                return Err(format!("register: {code}"));
            }
            ServerMsg::Bye { reason } => {
                return Err(format!("register: server said bye: {reason}"));
            }
            _ => {}
        }
    }
    Ok((fresh, taken))
}

async fn send_bytes(stream: &mut Conn, bytes: &[u8]) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

async fn add_contacts(addr: SocketAddr, pop: &Population, i: usize) -> Result<usize, String> {
    let mut s = login(addr, pop, i, Credential::Password(pop.password(i))).await?;
    // The whole list in one request, answered once.
    let add = pop.contacts_of(i).iter().map(|&c| pop.user(c)).collect();
    send(
        &mut s.stream,
        &ClientMsg::ChangeContacts {
            add,
            remove: vec![],
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let added = loop {
        match recv(&mut s.stream, &mut s.buf)
            .await
            .map_err(|e| e.to_string())?
        {
            ServerMsg::ContactsChanged { added, .. } => break added.len(),
            ServerMsg::Error {
                request: RequestKind::ChangeContacts,
                code,
                ..
            } => {
                return Err(format!("add contacts: {code}"));
            }
            ServerMsg::Bye { reason } => return Err(format!("add contacts: bye: {reason}")),
            _ => {}
        }
    };
    // A clean end, so the setup leaves nobody in a grace period.
    let _ = send(&mut s.stream, &ClientMsg::Logout).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while recv(&mut s.stream, &mut s.buf).await.is_ok() {}
    })
    .await;
    Ok(added)
}

/// A logged-in connection: what is left of the login exchange, and the server's terms.
#[derive(Debug)]
pub struct Session {
    pub stream: Conn,
    /// Bytes read past the `LoginOk` (the snapshot may already be in here).
    pub buf: BytesMut,
    pub heartbeat_interval: Duration,
    pub resume_token: Vec<u8>,
}

/// Connects, says `Hello` and `Login` in one write (the server reads them in order), and
/// reads until `LoginOk`. Errors are one-line strings, counted by the caller.
pub async fn login(
    addr: SocketAddr,
    pop: &Population,
    i: usize,
    credential: Credential,
) -> Result<Session, String> {
    let mut stream = connect(addr, source_ip(i, pop.n))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut out = BytesMut::new();
    out.put_slice(&encode_frame(&hello()));
    out.put_slice(&encode_frame(&ClientMsg::Login {
        user: pop.user(i),
        credential,
        status: Status::Online,
    }));
    send_bytes(&mut stream, &out).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut heartbeat_interval = Duration::from_secs(10);
    loop {
        let msg = loop {
            if let Some(msg) = next_msg(&mut buf).map_err(|e| e.to_string())? {
                break msg;
            }
            fill(&mut stream, &mut buf)
                .await
                .map_err(|e| format!("login read: {e}"))?;
        };
        match msg {
            ServerMsg::Welcome {
                heartbeat_interval_ms,
                ..
            } => {
                heartbeat_interval = Duration::from_millis(heartbeat_interval_ms.into());
            }
            ServerMsg::LoginOk { resume_token, .. } => {
                return Ok(Session {
                    stream,
                    buf,
                    heartbeat_interval,
                    resume_token,
                });
            }
            ServerMsg::Error {
                request: RequestKind::Login,
                code,
                ..
            } => {
                return Err(format!("login: {code}"));
            }
            ServerMsg::Bye { reason } => return Err(format!("login: bye: {reason}")),
            _ => {}
        }
    }
}

/// Counts errors and remembers the last one, for the report.
#[derive(Debug, Default)]
pub struct Errors {
    pub count: AtomicUsize,
    pub last: std::sync::Mutex<Option<String>>,
}

impl Errors {
    pub fn add(&self, e: impl Into<String>) {
        self.count.fetch_add(1, Ordering::Relaxed);
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.into());
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize, k: usize) -> Population {
        Population {
            n,
            prefix: "u".into(),
            scope: Scope::Contacts,
            contacts: k,
        }
    }

    #[test]
    fn contacts_and_watchers_are_mirror_images() {
        let pop = ring(100, 20);
        for v in [0, 1, 57, 99] {
            for w in pop.watchers_of(v) {
                assert!(pop.contacts_of(w).contains(&v), "{w} should watch {v}");
            }
            assert_eq!(pop.watchers_of(v).len(), 20);
        }
        assert_eq!(pop.contacts_of(99)[0], 0);
        // Fewer users than contacts: everyone else, once.
        assert_eq!(ring(5, 20).contacts_of(0), vec![1, 2, 3, 4]);
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let pop = ring(1000, 20);
        assert_eq!(pop.index_of(&pop.name(421)), Some(421));
        assert_eq!(pop.index_of("alice"), None);
        assert_eq!(pop.index_of("u1000"), None);
        assert!(pop.password(0).len() >= 8);
    }

    #[test]
    fn victims_are_spread_and_view_sizes_follow_the_scope() {
        let pop = ring(1000, 20);
        assert_eq!(pop.spread(4), vec![0, 250, 500, 750]);
        assert_eq!(pop.view_size(), 20);
        let all = Population {
            scope: Scope::Everyone,
            ..pop
        };
        assert_eq!(all.view_size(), 999);
        assert_eq!(all.watchers_of(3).len(), 999);
    }
}
