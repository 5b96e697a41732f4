//! Contact lists: adding and removing contacts, one at a time or many in one request, each
//! request answered once with what changed.
//!
//! A client importing n contacts one `AddContact` at a time used to get the whole list and a
//! whole presence snapshot back after each: ~n²/2 entries, 5.3 MB for 1,000 contacts, enough
//! to be closed as a slow reader. Now one `ChangeContacts` carries them all, and every answer
//! is a diff: `ContactsChanged` with the names that changed, plus (under scope `Contacts`) a
//! `PresenceDiff` with the presence of the contacts just added.

use super::{Pending, Server};
use crate::ids::{ConnId, UserId};
use crate::message::{ErrorCode, RequestKind, ServerMsg, WatchScope};
use crate::storage::{StorageError, StorageOp};
use std::collections::BTreeSet;

impl Server {
    /// A contact request: `AddContact`/`RemoveContact` (`kind` says which, one name) or
    /// `ChangeContacts` (any number, within the limits).
    pub(super) fn change_contacts(
        &mut self,
        conn: ConnId,
        user: UserId,
        kind: RequestKind,
        add: Vec<UserId>,
        remove: Vec<UserId>,
    ) {
        let Some(u) = self.users.get(&user) else {
            return;
        };
        let max = self.cfg.max_contacts;
        // More names than a list may hold cannot be a sensible request, and bounds the work
        // one frame can ask for.
        if add.len() > max || remove.len() > max {
            return self.error(conn, kind, ErrorCode::TooLarge, None);
        }
        let remove: BTreeSet<UserId> = remove.into_iter().collect();
        let mut adding = BTreeSet::new();
        let mut rejected = BTreeSet::new();
        for name in add {
            if remove.contains(&name) {
                // Both added and removed: no order between them makes sense.
                return self.error(conn, kind, ErrorCode::InvalidName, None);
            }
            if name == user || !self.users.contains_key(&name) {
                rejected.insert(name);
            } else {
                adding.insert(name);
            }
        }
        if kind == RequestKind::AddContact {
            // The one-name form keeps its errors: the client asked for exactly this name.
            if let Some(name) = rejected.first() {
                let code = if *name == user {
                    ErrorCode::InvalidName
                } else {
                    ErrorCode::NoSuchUser
                };
                return self.error(conn, kind, code, None);
            }
        }
        let after = u.contacts.len() + adding.iter().filter(|c| !u.contacts.contains(c)).count()
            - remove.iter().filter(|c| u.contacts.contains(c)).count();
        // A list already above a lowered limit may still shrink.
        if after > max && after > u.contacts.len() {
            return self.error(conn, kind, ErrorCode::TooManyContacts, None);
        }
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, kind, ErrorCode::Busy, None);
        }
        let add: Vec<UserId> = adding.into_iter().collect();
        let remove: Vec<UserId> = remove.into_iter().collect();
        self.request(
            conn,
            StorageOp::SetContacts {
                user: user.clone(),
                add: add.clone(),
                remove: remove.clone(),
            },
            Pending::SetContacts {
                conn,
                user,
                kind,
                add,
                remove,
                rejected: rejected.into_iter().collect(),
            },
        );
    }

    /// Storage has the change: apply it to the user's list in memory (if online) and tell
    /// every session of the user what changed.
    pub(super) fn contacts_set(&mut self, pending: Pending, r: Result<(), StorageError>) {
        let Pending::SetContacts {
            conn,
            user,
            kind,
            add,
            remove,
            rejected,
        } = pending
        else {
            unreachable!("contacts_set answers SetContacts only");
        };
        if let Err(e) = r {
            let code = match e {
                StorageError::NoSuchUser => ErrorCode::NoSuchUser,
                _ => ErrorCode::StorageFailed,
            };
            if self.conns.contains_key(&conn) {
                self.error(conn, kind, code, None);
            }
            return;
        }
        let add: Vec<UserId> = add
            .into_iter()
            .map(|c| self.interned(&c).unwrap_or(c))
            .collect();
        let Some(u) = self.users.get_mut(&user) else {
            return;
        };
        // Storage has it; memory only tracks contacts of connected users, reloaded at login.
        if u.sessions.is_empty() {
            return;
        }
        let added: Vec<UserId> = add
            .into_iter()
            .filter(|c| u.contacts.insert(c.clone()))
            .collect();
        let removed: Vec<UserId> = remove
            .into_iter()
            .filter(|c| u.contacts.remove(c))
            .collect();
        self.presence.watch(&user, &added);
        self.presence.unwatch(&user, &removed);
        // Under scope `Contacts` the new contacts enter the watcher's view with the diff that
        // ends this batch; removed ones leave it on the client's side, as the answer says.
        if self.cfg.scope == WatchScope::Contacts {
            self.presence.introduce(&user, &added);
            self.introduce_profiles(conn, user.clone(), &added);
        }
        let answer = ServerMsg::ContactsChanged {
            added,
            removed,
            rejected,
        };
        self.send_to_user(&user, &answer);
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::encode;
    use crate::config::ServerConfig;
    use crate::message::{
        ClientMsg, ErrorCode, Presence, PresenceEntry, RequestKind, ServerMsg, Status, WatchScope,
    };
    use crate::testkit::Rig;
    use crate::testkit::rig::user;

    fn contacts_scope() -> ServerConfig {
        ServerConfig {
            scope: WatchScope::Contacts,
            ..ServerConfig::default()
        }
    }

    /// Importing 1,000 names (998 users, 2 that cannot be contacts) is one request and one
    /// answer of a few bytes per contact, not ~n²/2 entries.
    #[test]
    fn a_thousand_contacts_import_in_one_round_trip() {
        let names: Vec<String> = (0..998).map(|i| format!("user{i:04}")).collect();
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.push("importer");
        let mut rig = Rig::new(contacts_scope(), &all);
        let online = rig.login("user0007", Status::Busy);
        let me = rig.login("importer", Status::Online);
        rig.take(me);
        rig.take(online);
        let mut add: Vec<_> = names.iter().map(|n| user(n)).collect();
        add.push(user("nobody"));
        add.push(user("importer"));
        rig.frame(
            me,
            ClientMsg::ChangeContacts {
                add,
                remove: vec![],
            },
        );
        let got = rig.take(me);
        assert_eq!(got.len(), 2, "one answer and one presence diff: {got:?}");
        let ServerMsg::ContactsChanged {
            added,
            removed,
            rejected,
        } = &got[0]
        else {
            panic!("not ContactsChanged: {:?}", got[0]);
        };
        assert_eq!(added.len(), 998);
        assert!(removed.is_empty());
        assert_eq!(rejected, &vec![user("importer"), user("nobody")]);
        let ServerMsg::PresenceDiff { entries } = &got[1] else {
            panic!("not a PresenceDiff: {:?}", got[1]);
        };
        assert_eq!(entries.len(), 998);
        assert!(entries.contains(&PresenceEntry {
            user: user("user0007"),
            presence: Presence::Busy
        }));
        let bytes: usize = got.iter().map(|m| encode(m).len()).sum();
        assert!(bytes < 1000 * 32, "{bytes} bytes for 1,000 contacts");
        // One storage write did it all: the list survives a new login.
        rig.close(me);
        let again = rig.login("importer", Status::Online);
        let login = rig.take(again);
        assert!(
            login
                .iter()
                .any(|m| matches!(m, ServerMsg::LoginOk { contacts, .. } if contacts.len() == 998))
        );
    }

    #[test]
    fn one_change_is_answered_with_a_diff() {
        let mut rig = Rig::new(contacts_scope(), &["a", "b", "c"]);
        let a = rig.login("a", Status::Online);
        rig.frame(a, ClientMsg::AddContact { user: user("b") });
        rig.frame(a, ClientMsg::AddContact { user: user("c") });
        rig.take(a);
        rig.frame(a, ClientMsg::RemoveContact { user: user("b") });
        assert_eq!(
            rig.take(a),
            vec![ServerMsg::ContactsChanged {
                added: vec![],
                removed: vec![user("b")],
                rejected: vec![],
            }]
        );
        // Removing it again changes nothing, and says so.
        rig.frame(a, ClientMsg::RemoveContact { user: user("b") });
        assert_eq!(
            rig.take(a),
            vec![ServerMsg::ContactsChanged {
                added: vec![],
                removed: vec![],
                rejected: vec![],
            }]
        );
    }

    #[test]
    fn a_bulk_change_past_the_limit_changes_nothing() {
        let cfg = ServerConfig {
            max_contacts: 2,
            ..contacts_scope()
        };
        let mut rig = Rig::new(cfg, &["a", "b", "c", "d"]);
        let a = rig.login("a", Status::Online);
        rig.frame(a, ClientMsg::AddContact { user: user("b") });
        rig.take(a);
        let too_many = ClientMsg::ChangeContacts {
            add: vec![user("c"), user("d")],
            remove: vec![],
        };
        rig.frame(a, too_many);
        let refused = ServerMsg::Error {
            request: RequestKind::ChangeContacts,
            code: ErrorCode::TooManyContacts,
            id: None,
        };
        assert_eq!(rig.take(a), vec![refused]);
        // Exactly at the limit is fine, removals counted first.
        let swap = ClientMsg::ChangeContacts {
            add: vec![user("c"), user("d")],
            remove: vec![user("b")],
        };
        rig.frame(a, swap);
        assert!(matches!(
            &rig.take(a)[0],
            ServerMsg::ContactsChanged { added, removed, .. } if added.len() == 2 && removed.len() == 1
        ));
        // More names than a list may hold is refused unread; a name on both lists too.
        let huge = ClientMsg::ChangeContacts {
            add: vec![],
            remove: vec![user("b"), user("c"), user("d")],
        };
        rig.frame(a, huge);
        let both = ClientMsg::ChangeContacts {
            add: vec![user("b")],
            remove: vec![user("b")],
        };
        rig.frame(a, both);
        let codes: Vec<_> = rig
            .take(a)
            .into_iter()
            .map(|m| match m {
                ServerMsg::Error { code, .. } => code,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(codes, vec![ErrorCode::TooLarge, ErrorCode::InvalidName]);
    }
}
