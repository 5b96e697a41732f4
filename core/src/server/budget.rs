//! The work budgets: how much storage work and password hashing the core has handed out and
//! not yet seen answered, per connection and on the whole server.
//!
//! Every storage request holds one place in the storage budget from `request` until its
//! result is handled, and a request that costs an argon2 hash holds one in the hashing budget
//! too. A request that would go beyond a budget is refused with `Busy` before it is made
//! (PROTOCOL.md §9.1), so neither the pending map nor any queue between the core and storage
//! grows with what clients send: the host sizes those queues from the same totals
//! (`WorkBudget`). A connection's places are held until storage answers, even if it closes
//! first, since the work is still queued.

use super::{Pending, Server};
use crate::ids::{ConnId, RequestId};
use crate::storage::StorageOp;

/// Storage requests and password hashes in flight, for one connection or for the server.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub(crate) storage: u32,
    pub(crate) hashing: u32,
}

/// What one storage request holds until its result comes back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charge {
    conn: ConnId,
    hashing: bool,
}

impl InFlight {
    fn add(&mut self, charge: Charge) {
        self.storage += 1;
        self.hashing += u32::from(charge.hashing);
    }

    fn sub(&mut self, charge: Charge) {
        self.storage = self
            .storage
            .checked_sub(1)
            .expect("invariant: a storage place is released once");
        self.hashing = self
            .hashing
            .checked_sub(u32::from(charge.hashing))
            .expect("invariant: a hashing place is released once");
    }
}

impl Server {
    /// Whether `conn` may start `requests` more storage requests, `hashes` of which cost a
    /// password hash, within its own budget and the server's. A budget of 0 acts as 1.
    pub(super) fn has_room(&self, conn: ConnId, requests: u32, hashes: u32) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let work = &self.cfg.work;
        let fits = |used: u32, more: u32, limit: u32| used + more <= limit.max(1);
        fits(c.in_flight.storage, requests, work.storage.per_conn)
            && fits(self.in_flight.storage, requests, work.storage.total)
            && fits(c.in_flight.hashing, hashes, work.hashing.per_conn)
            && fits(self.in_flight.hashing, hashes, work.hashing.total)
    }

    /// Issues a storage request for `conn`, charging it to the budgets. Callers check
    /// `has_room` first, except where a result hands its place straight on (a login's place
    /// to the mailbox read that follows it); either way the budgets hold, and a request that
    /// would break them is a bug.
    pub(super) fn request(&mut self, conn: ConnId, op: StorageOp, pending: Pending) -> RequestId {
        let charge = Charge {
            conn,
            hashing: op.hashes(),
        };
        let work = self.cfg.work;
        self.in_flight.add(charge);
        assert!(
            self.in_flight.storage <= work.storage.total.max(1)
                && self.in_flight.hashing <= work.hashing.total.max(1),
            "invariant: the work budget holds ({:?})",
            self.in_flight
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.in_flight.add(charge);
            assert!(
                c.in_flight.storage <= work.storage.per_conn.max(1)
                    && c.in_flight.hashing <= work.hashing.per_conn.max(1),
                "invariant: a connection's work budget holds ({:?})",
                c.in_flight
            );
        }
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(id, (charge, pending));
        self.out.push_back(super::Output::Storage { id, op });
        id
    }

    /// The request's result is in: its places are free again.
    pub(super) fn release(&mut self, charge: Charge) {
        self.in_flight.sub(charge);
        if let Some(c) = self.conns.get_mut(&charge.conn) {
            c.in_flight.sub(charge);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Budget, ServerConfig, WorkBudget};
    use crate::ids::ConnId;
    use crate::message::{
        ClientMsg, Credential, ErrorCode, RequestKind, ServerMsg, Status, WatchScope,
    };
    use crate::testkit::Rig;
    use crate::testkit::rig::{PASSWORD, user};

    /// Three storage requests per connection, five on the server; one hash per connection,
    /// two on the server.
    fn tight() -> ServerConfig {
        ServerConfig {
            work: WorkBudget {
                storage: Budget {
                    per_conn: 3,
                    total: 5,
                },
                hashing: Budget {
                    per_conn: 1,
                    total: 2,
                },
            },
            // No presence diffs in the inboxes: users here are not each other's contacts.
            scope: WatchScope::Contacts,
            ..ServerConfig::default()
        }
    }

    fn send(id: u64) -> ClientMsg {
        ClientMsg::Send {
            id,
            to: user("b"),
            body: format!("m{id}"),
            attachment: None,
        }
    }

    fn busy(request: RequestKind, id: Option<u64>) -> ServerMsg {
        ServerMsg::Error {
            request,
            code: ErrorCode::Busy,
            id,
        }
    }

    fn sent_ids(msgs: &[ServerMsg]) -> Vec<u64> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMsg::Sent { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Logged-in connections for `names`, their inboxes emptied, with storage deferred from
    /// here on.
    fn logged_in(rig: &mut Rig, names: &[&str]) -> Vec<ConnId> {
        let conns: Vec<ConnId> = names.iter().map(|n| rig.login(n, Status::Online)).collect();
        for &c in &conns {
            rig.take(c);
        }
        rig.deferred = Some(Vec::new());
        conns
    }

    #[test]
    fn a_connection_gets_its_share_of_storage_and_a_refused_send_names_its_id() {
        let mut rig = Rig::new(tight(), &["a", "b"]);
        let [a] = logged_in(&mut rig, &["a"])[..] else {
            unreachable!()
        };
        for id in 0..3 {
            rig.frame(a, send(id));
        }
        assert_eq!(
            rig.take(a),
            vec![],
            "within the budget: waiting for storage"
        );
        rig.frame(a, send(3));
        assert_eq!(rig.take(a), vec![busy(RequestKind::Send, Some(3))]);
        assert_eq!(
            rig.server.stats().pending_storage,
            3,
            "the refused one was not made"
        );
        // An answer frees a place; the refused message goes again with its id.
        rig.complete(0);
        assert_eq!(sent_ids(&rig.take(a)), vec![0]);
        rig.frame(a, send(3));
        assert_eq!(rig.take(a), vec![]);
        // Every kind of storage request counts against the same places.
        rig.frame(a, ClientMsg::Ack { seqs: vec![1] });
        assert_eq!(rig.take(a), vec![busy(RequestKind::Ack, None)]);
        let add = ClientMsg::AddContact { user: user("b") };
        rig.frame(a, add);
        assert_eq!(rig.take(a), vec![busy(RequestKind::AddContact, None)]);
        let history = ClientMsg::History {
            with: user("b"),
            before: None,
            limit: 10,
        };
        rig.frame(a, history);
        assert_eq!(rig.take(a), vec![busy(RequestKind::History, None)]);
        while !rig.deferred.as_ref().unwrap().is_empty() {
            rig.complete(0);
        }
        assert_eq!(sent_ids(&rig.take(a)), vec![1, 2, 3]);
        assert_eq!(rig.server.stats().pending_storage, 0);
    }

    #[test]
    fn the_server_wide_storage_budget_holds_across_connections_and_closes() {
        let mut rig = Rig::new(tight(), &["a", "b", "c"]);
        let [a, b, c] = logged_in(&mut rig, &["a", "b", "c"])[..] else {
            unreachable!()
        };
        for id in 0..3 {
            rig.frame(a, send(id));
        }
        for id in 10..12 {
            rig.frame(b, send(id));
        }
        assert_eq!(rig.server.stats().pending_storage, 5);
        rig.frame(c, send(20));
        assert_eq!(rig.take(c), vec![busy(RequestKind::Send, Some(20))]);
        // A closed connection's requests hold their places until storage answers them.
        rig.close(a);
        rig.frame(c, send(20));
        assert_eq!(rig.take(c), vec![busy(RequestKind::Send, Some(20))]);
        rig.complete(0);
        rig.frame(c, send(20));
        assert_eq!(rig.take(c), vec![]);
        assert_eq!(rig.server.stats().pending_storage, 5);
    }

    #[test]
    fn a_login_hands_its_place_to_the_mailbox_read_even_when_the_server_is_full() {
        let mut rig = Rig::new(tight(), &["a", "b", "c"]);
        let [a, b] = logged_in(&mut rig, &["a", "b"])[..] else {
            unreachable!()
        };
        for id in 0..3 {
            rig.frame(a, send(id));
        }
        rig.frame(b, send(10));
        let fresh = rig.hello();
        rig.take(fresh);
        rig.frame(
            fresh,
            ClientMsg::Login {
                user: user("c"),
                credential: Credential::Password(PASSWORD.into()),
                status: Status::Online,
            },
        );
        assert_eq!(rig.server.stats().pending_storage, 5, "the server is full");
        rig.frame(b, send(11));
        assert_eq!(rig.take(b), vec![busy(RequestKind::Send, Some(11))]);
        // The login's answer makes the first read in its place: no refusal.
        rig.complete(4);
        assert!(matches!(
            rig.take(fresh)[..],
            [ServerMsg::LoginOk { .. }, ..]
        ));
        assert_eq!(rig.server.stats().pending_storage, 5);
        // A version-2 login reads its profile cards first; that read hands the place on.
        rig.complete(4);
        assert_eq!(rig.server.stats().pending_storage, 5);
        rig.complete(4);
        assert!(
            rig.take(fresh)
                .contains(&ServerMsg::OfflineDone { count: 0 })
        );
        // The read of the user's rooms (version 2) follows in the mailbox read's place.
        assert_eq!(rig.server.stats().pending_storage, 5);
        rig.complete(4);
        assert_eq!(rig.server.stats().pending_storage, 4);
    }

    #[test]
    fn password_hashing_is_budgeted_per_connection_and_on_the_server() {
        let mut rig = Rig::new(tight(), &["a", "b"]);
        let [a, b] = logged_in(&mut rig, &["a", "b"])[..] else {
            unreachable!()
        };
        let register = |name: &str| ClientMsg::Register {
            user: user(name),
            password: PASSWORD.into(),
        };
        let change = ClientMsg::ChangePassword {
            old: PASSWORD.into(),
            new: "new password".into(),
        };
        // One hash per connection: a second hashing request waits for the first's answer.
        rig.frame(a, register("n1"));
        rig.frame(a, change.clone());
        assert_eq!(rig.take(a), vec![busy(RequestKind::ChangePassword, None)]);
        // Storage work that hashes nothing still fits.
        rig.frame(a, send(1));
        assert_eq!(rig.take(a), vec![]);
        // Two hashes on the server: a fresh connection's login is refused, and told so.
        rig.frame(b, register("n2"));
        rig.take(b);
        let fresh = rig.hello();
        rig.take(fresh);
        let login = |credential| ClientMsg::Login {
            user: user("b"),
            credential,
            status: Status::Online,
        };
        rig.frame(fresh, login(Credential::Password(PASSWORD.into())));
        assert_eq!(rig.take(fresh), vec![busy(RequestKind::Login, None)]);
        let register_too = ClientMsg::Register {
            user: user("n3"),
            password: PASSWORD.into(),
        };
        rig.frame(fresh, register_too);
        assert_eq!(rig.take(fresh), vec![busy(RequestKind::Register, None)]);
        // A token login costs no hash: only the storage budget applies (and it has room).
        rig.frame(fresh, login(Credential::Token(vec![0; 32])));
        assert_eq!(rig.take(fresh), vec![]);
        rig.complete(0);
        assert_eq!(
            rig.take(a),
            vec![ServerMsg::Registered { user: user("n1") }]
        );
        rig.frame(a, change);
        assert_eq!(rig.take(a), vec![]);
    }

    #[test]
    fn acks_arriving_while_one_is_marked_wait_and_go_as_one_mark() {
        let mut rig = Rig::new(tight(), &["a"]);
        let [a] = logged_in(&mut rig, &["a"])[..] else {
            unreachable!()
        };
        // Far more single-seq acks than the connection has places: one mark in flight.
        for seq in 1..=100 {
            rig.frame(a, ClientMsg::Ack { seqs: vec![seq] });
        }
        assert_eq!(rig.take(a), vec![], "none refused");
        assert_eq!(rig.server.stats().pending_storage, 1);
        // Its answer sends everything that waited, as one mark.
        rig.complete(0);
        assert_eq!(rig.server.stats().pending_storage, 1);
        rig.complete(0);
        assert_eq!(rig.server.stats().pending_storage, 0);
        // Idle again: the next ack is a mark of its own at once.
        rig.frame(a, ClientMsg::Ack { seqs: vec![101] });
        assert_eq!(rig.server.stats().pending_storage, 1);
        // What waits is bounded like one Ack frame.
        let many: Vec<u64> = (1_000..1_000 + crate::message::MAX_ACK_SEQS as u64).collect();
        rig.frame(a, ClientMsg::Ack { seqs: many });
        assert_eq!(rig.take(a), vec![]);
        rig.frame(a, ClientMsg::Ack { seqs: vec![9] });
        assert_eq!(rig.take(a), vec![busy(RequestKind::Ack, None)]);
    }

    #[test]
    fn an_ack_that_asks_for_the_next_mailbox_page_needs_room_for_both() {
        let cfg = ServerConfig {
            mailbox_page: 1,
            ..tight()
        };
        let mut rig = Rig::new(cfg, &["a", "b"]);
        let a = rig.login("a", Status::Online);
        for id in 0..2 {
            rig.frame(
                a,
                ClientMsg::Send {
                    id,
                    to: user("b"),
                    body: "hi".into(),
                    attachment: None,
                },
            );
        }
        let b = rig.login("b", Status::Online);
        let first = rig
            .take(b)
            .into_iter()
            .find_map(|m| match m {
                ServerMsg::Deliver(d) => Some(d.seq),
                _ => None,
            })
            .expect("the first page");
        rig.deferred = Some(Vec::new());
        // Two sends leave one place: not enough for the mark and the next page's read.
        for id in [100, 101] {
            let to_a = ClientMsg::Send {
                id,
                to: user("a"),
                body: "back".into(),
                attachment: None,
            };
            rig.frame(b, to_a);
        }
        rig.frame(b, ClientMsg::Ack { seqs: vec![first] });
        assert_eq!(rig.take(b), vec![busy(RequestKind::Ack, None)]);
        rig.complete(0);
        rig.take(b);
        // The same ack again, now with room: marked, and the next page comes.
        rig.frame(b, ClientMsg::Ack { seqs: vec![first] });
        while !rig.deferred.as_ref().unwrap().is_empty() {
            rig.complete(0);
        }
        let got = rig.take(b);
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMsg::Deliver(d) if d.seq > first)),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMsg::OfflineDone { count: 2 }))
        );
    }
}
