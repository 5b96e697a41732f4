//! A server with an in-memory store, driven frame by frame in virtual time. Storage requests
//! complete at once, in order. Frames the server sends are decoded and kept per connection.

use super::store::MemStore;
use crate::cluster::{ClusterMsg, Dest};
use crate::codec::{decode, encode};
use crate::config::ServerConfig;
use crate::ids::{ConnId, RequestId, UserId};
use crate::message::{
    ClientMsg, CloseReason, Credential, MAGIC, PROTOCOL_VERSION, ServerMsg, Status,
};
use crate::server::{Output, Server, ServerEvent};
use crate::storage::StorageResult;
use crate::time::{Duration, Instant};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

#[derive(Debug)]
pub struct Rig {
    pub now: Instant,
    pub server: Server,
    /// The rig's store; the rigs of one simulated cluster share one, as the nodes of a real
    /// cluster share one database.
    pub store: Rc<RefCell<MemStore>>,
    inbox: BTreeMap<ConnId, Vec<ServerMsg>>,
    pub closed: BTreeMap<ConnId, CloseReason>,
    pub events: Vec<ServerEvent>,
    /// What the server published on the cluster bus (cluster mode), oldest first.
    pub bus: Vec<(Dest, ClusterMsg)>,
    /// When set, storage requests are applied to the store at once but their results wait
    /// here until `complete` hands them back — to test results arriving late or out of order.
    pub deferred: Option<Vec<(RequestId, StorageResult)>>,
    /// Connections whose pings the rig may answer in place (`Output::AnswerPings`), with when
    /// it last did: handed over at their deadlines, as a host does.
    pub in_place: BTreeMap<ConnId, Option<Instant>>,
    next_conn: u64,
}

pub const PASSWORD: &str = "correct horse";

impl Rig {
    /// A server whose directory holds `users`, each with password [`PASSWORD`].
    pub fn new(cfg: ServerConfig, users: &[&str]) -> Self {
        Rig::sharing(cfg, Rig::store_of(users))
    }

    /// A store holding `users`, each with password [`PASSWORD`], for rigs to share.
    pub fn store_of(users: &[&str]) -> Rc<RefCell<MemStore>> {
        let mut store = MemStore::new();
        for u in users {
            store.add_account(user(u), PASSWORD);
        }
        Rc::new(RefCell::new(store))
    }

    /// A server over `store`, with the store's users as its directory.
    pub fn sharing(cfg: ServerConfig, store: Rc<RefCell<MemStore>>) -> Self {
        let server = Server::new(cfg, store.borrow().users());
        Rig {
            now: Instant::ZERO,
            server,
            store,
            inbox: BTreeMap::new(),
            closed: BTreeMap::new(),
            events: Vec::new(),
            bus: Vec::new(),
            deferred: None,
            in_place: BTreeMap::new(),
            next_conn: 0,
        }
    }

    /// Drains the server, performing storage at once, until it has nothing more to say.
    pub fn pump(&mut self) {
        while let Some(out) = self.server.poll_output() {
            match out {
                Output::Send { conn, payload } => {
                    let msg = decode::<ServerMsg>(&payload).expect("server payloads decode");
                    self.inbox.entry(conn).or_default().push(msg);
                }
                Output::Close { conn, reason } => {
                    self.closed.insert(conn, reason);
                }
                Output::Storage { id, op } => {
                    let ms = self.now.since_epoch().as_millis() as u64;
                    let result = self.store.borrow_mut().apply(op, ms);
                    match &mut self.deferred {
                        Some(waiting) => waiting.push((id, result)),
                        None => self.server.handle_storage(self.now, id, result),
                    }
                }
                Output::Event(e) => self.events.push(e),
                Output::Cluster { to, msg } => self.bus.push((to, msg)),
                Output::AnswerPings { conn } => {
                    self.in_place.insert(conn, None);
                }
            }
        }
    }

    pub fn open(&mut self) -> ConnId {
        self.open_from(None)
    }

    /// A new connection from `addr`, as a host that knows its peers reports it.
    pub fn open_from(&mut self, addr: Option<std::net::IpAddr>) -> ConnId {
        self.next_conn += 1;
        let conn = ConnId(self.next_conn);
        self.server.handle_connect(self.now, conn, addr);
        self.pump();
        conn
    }

    pub fn frame(&mut self, conn: ConnId, msg: ClientMsg) {
        self.server.handle_frame(self.now, conn, &encode(&msg));
        self.pump();
    }

    pub fn hello(&mut self) -> ConnId {
        self.hello_speaking(PROTOCOL_VERSION)
    }

    /// A new connection whose client offers protocol `version` (an old client's).
    pub fn hello_speaking(&mut self, version: u16) -> ConnId {
        let conn = self.open();
        self.frame(
            conn,
            ClientMsg::Hello {
                magic: MAGIC,
                version,
                client: "rig".into(),
            },
        );
        conn
    }

    /// A new connection, logged in as `name` with `status`; its inbox is left as received.
    pub fn login(&mut self, name: &str, status: Status) -> ConnId {
        self.login_speaking(name, status, PROTOCOL_VERSION)
    }

    /// `login` by a client that offers protocol `version`.
    pub fn login_speaking(&mut self, name: &str, status: Status, version: u16) -> ConnId {
        let conn = self.hello_speaking(version);
        self.frame(
            conn,
            ClientMsg::Login {
                user: user(name),
                credential: Credential::Password(PASSWORD.into()),
                status,
            },
        );
        conn
    }

    /// A new connection, logged in as an agent (`AgentLogin`) of `name`.
    pub fn agent(&mut self, name: &str) -> ConnId {
        let conn = self.hello();
        self.frame(
            conn,
            ClientMsg::AgentLogin {
                user: user(name),
                password: PASSWORD.into(),
            },
        );
        conn
    }

    /// Everything `conn` received since the last call.
    pub fn take(&mut self, conn: ConnId) -> Vec<ServerMsg> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// Hands back the `index`th deferred storage result (in request order).
    pub fn complete(&mut self, index: usize) {
        let (id, result) = self
            .deferred
            .as_mut()
            .expect("storage is deferred")
            .remove(index);
        self.server.handle_storage(self.now, id, result);
        self.pump();
    }

    /// The transport heard life from `conn` without a frame (a WebSocket Pong).
    pub fn alive(&mut self, conn: ConnId) {
        self.server.handle_alive(self.now, conn);
        self.pump();
    }

    /// A `Ping` from `conn` answered in place, as a host may once the core allowed it: the
    /// core hears of it only at the connection's deadline. Returns the `Pong`.
    pub fn ping_in_place(&mut self, conn: ConnId, nonce: u64) -> ServerMsg {
        let heard = self
            .in_place
            .get_mut(&conn)
            .expect("the core allowed this connection's pings in place");
        *heard = Some(self.now);
        decode(&crate::server::pong(nonce)).expect("a Pong decodes")
    }

    pub fn close(&mut self, conn: ConnId) {
        self.server.handle_closed(self.now, conn);
        self.pump();
    }

    /// Moves virtual time forward by `d`, firing every deadline exactly when it falls due.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.server.poll_timeout().filter(|&t| t <= end) {
            self.now = self.now.max(t);
            let in_place = &self.in_place;
            self.server
                .handle_timeout_with(self.now, |c| in_place.get(&c).copied().flatten());
            self.pump();
        }
        self.now = end;
    }
}

pub fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid test user name")
}
