//! Contact groups (protocol version 2): the owner names groups, files contacts in them,
//! renames, reorders and deletes them. The store is the one authority — it holds the groups,
//! enforces the limit and unique names, and reports what changed — so the core keeps no
//! group state: a node never disagrees with the database, and a change made through another
//! node of a cluster needs nothing from this one but its `GroupsChanged` to pass on.
//!
//! Every answer is a diff to every session of the user that speaks version 2, on every node:
//! the whole (short) list of named groups, and the contacts whose group changed. The login
//! snapshot (`ServerMsg::Groups`) comes with the account, read with its contacts, so a client
//! draws its grouped list without one more round trip.

use super::{Pending, Server};
use crate::ids::{ConnId, UserId};
use crate::message::{ErrorCode, GROUPS_VERSION, GroupEdit, RequestKind, ServerMsg};
use crate::storage::{ContactGroups, GroupChange, GroupsDiff, StorageError, StorageOp};
use crate::text;

impl Server {
    /// `CreateGroup`, `EditGroup` or `MoveContacts`: checked here what needs no state, then
    /// asked of the store.
    pub(super) fn change_groups(
        &mut self,
        conn: ConnId,
        user: UserId,
        kind: RequestKind,
        change: GroupChange,
    ) {
        let change = match change {
            GroupChange::Create { name } => match text::group_name(&name) {
                Ok(name) => GroupChange::Create { name },
                Err(_) => return self.error(conn, kind, ErrorCode::InvalidName, None),
            },
            GroupChange::Rename { group, name } => match text::group_name(&name) {
                Ok(name) => GroupChange::Rename { group, name },
                Err(_) => return self.error(conn, kind, ErrorCode::InvalidName, None),
            },
            // More names than a list may hold cannot be a sensible request, and bounds the
            // work one frame can ask for.
            GroupChange::File { contacts, .. } if contacts.len() > self.cfg.max_contacts => {
                return self.error(conn, kind, ErrorCode::TooLarge, None);
            }
            other => other,
        };
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, kind, ErrorCode::Busy, None);
        }
        let op = StorageOp::ChangeGroups {
            user: user.clone(),
            change,
            max_groups: self.cfg.max_groups,
        };
        self.request(conn, op, Pending::ChangeGroups { conn, user, kind });
    }

    /// The store has the change: every session of the user hears it, here and on the other
    /// nodes.
    pub(super) fn groups_changed(
        &mut self,
        conn: ConnId,
        user: UserId,
        kind: RequestKind,
        r: Result<GroupsDiff, StorageError>,
    ) {
        let diff = match r {
            Ok(diff) => diff,
            Err(e) => {
                let code = match e {
                    StorageError::NoSuchGroup => ErrorCode::NoSuchGroup,
                    StorageError::NoSuchUser => ErrorCode::NoSuchUser,
                    StorageError::GroupNameTaken => ErrorCode::InvalidName,
                    StorageError::TooManyGroups => ErrorCode::TooLarge,
                    _ => ErrorCode::StorageFailed,
                };
                if self.conns.contains_key(&conn) {
                    self.error(conn, kind, code, None);
                }
                return;
            }
        };
        self.tell_groups_changed(&user, &diff);
        self.publish_groups(&user, diff);
    }

    /// Sends a change of `user`'s groups to the user's sessions on this node.
    pub(super) fn tell_groups_changed(&mut self, user: &UserId, diff: &GroupsDiff) {
        let msg = ServerMsg::GroupsChanged {
            groups: diff.groups.clone(),
            moved: diff.moved.clone(),
        };
        self.send_to_user(user, &msg);
    }

    /// A version 2 login's groups, right after its `LoginOk`.
    pub(super) fn send_groups(&mut self, conn: ConnId, groups: ContactGroups) {
        let speaks = self
            .conns
            .get(&conn)
            .is_some_and(|c| c.speaks(GROUPS_VERSION));
        if !speaks {
            return;
        }
        let msg = ServerMsg::Groups {
            max_groups: self.cfg.max_groups,
            groups: groups.groups,
            placements: groups.placements,
        };
        self.send(conn, &msg);
    }
}

/// The storage change an `EditGroup` asks for.
pub(super) fn edit(group: u32, edit: GroupEdit) -> GroupChange {
    match edit {
        GroupEdit::Rename { name } => GroupChange::Rename { group, name },
        GroupEdit::Delete => GroupChange::Delete { group },
        GroupEdit::Reorder { position } => GroupChange::Reorder { group, position },
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{DuplicateLogin, ServerConfig};
    use crate::message::{
        ClientMsg, CloseReason, ContactGroup, DEFAULT_GROUP, ErrorCode, GroupEdit, Placement,
        RequestKind, ServerMsg, Status,
    };
    use crate::testkit::Rig;
    use crate::testkit::rig::user;

    fn multi() -> ServerConfig {
        ServerConfig {
            duplicate_login: DuplicateLogin::Multi,
            ..ServerConfig::default()
        }
    }

    fn create(name: &str) -> ClientMsg {
        ClientMsg::CreateGroup { name: name.into() }
    }

    fn error(request: RequestKind, code: ErrorCode) -> ServerMsg {
        ServerMsg::Error {
            request,
            code,
            id: None,
        }
    }

    /// The groups a `GroupsChanged` lists, and the contacts it moved.
    fn changed(got: &[ServerMsg]) -> (Vec<ContactGroup>, Vec<Placement>) {
        match got {
            [ServerMsg::GroupsChanged { groups, moved }] => (groups.clone(), moved.clone()),
            other => panic!("not one GroupsChanged: {other:?}"),
        }
    }

    /// A version 1 client logs in exactly as before: no `Groups`, and a group request from it
    /// is what a version 1 server would make of it. A version 2 client on the same server
    /// hears its groups right after `LoginOk`.
    #[test]
    fn only_a_version_2_login_hears_its_groups() {
        let mut rig = Rig::new(multi(), &["a", "b"]);
        let old = rig.login_speaking("a", Status::Online, 1);
        let got = rig.take(old);
        assert!(
            matches!(
                &got[..2],
                [
                    ServerMsg::Welcome { version: 1, .. },
                    ServerMsg::LoginOk { .. }
                ]
            ),
            "{got:?}"
        );
        assert!(
            matches!(got[2], ServerMsg::PresenceSnapshot { .. }),
            "{got:?}"
        );
        assert!(!got.iter().any(|m| matches!(m, ServerMsg::Groups { .. })));

        let new = rig.login("a", Status::Online);
        let got = rig.take(new);
        assert!(matches!(got[1], ServerMsg::LoginOk { .. }));
        assert_eq!(
            got[2],
            ServerMsg::Groups {
                max_groups: 100,
                groups: vec![],
                placements: vec![],
            }
        );
        // A change from the new device is not sent to the old one, which could not decode it.
        rig.frame(new, create("Work"));
        assert_eq!(changed(&rig.take(new)).0.len(), 1);
        assert_eq!(rig.take(old), vec![]);
        rig.frame(old, create("Play"));
        assert_eq!(rig.closed.get(&old), Some(&CloseReason::Malformed));
    }

    /// Two devices of one user: a change made on one is shown on both, and the next login
    /// draws the same grouped list from its snapshot alone.
    #[test]
    fn group_changes_reach_every_device_and_the_next_login() {
        let mut rig = Rig::new(multi(), &["me", "mum", "dad", "boss"]);
        let phone = rig.login("me", Status::Online);
        let laptop = rig.login("me", Status::Online);
        rig.frame(
            phone,
            ClientMsg::ChangeContacts {
                add: vec![user("mum"), user("dad"), user("boss")],
                remove: vec![],
            },
        );
        rig.take(phone);
        rig.take(laptop);

        rig.frame(phone, create(" 家人 "));
        let (groups, _) = changed(&rig.take(phone));
        assert_eq!(changed(&rig.take(laptop)).0, groups);
        let family = groups[0].id;
        assert_eq!(groups[0].name, "家人", "trimmed");
        rig.frame(laptop, create("Colleagues"));
        let (groups, _) = changed(&rig.take(laptop));
        let work = groups[1].id;
        rig.take(phone);

        rig.frame(
            phone,
            ClientMsg::MoveContacts {
                contacts: vec![user("mum"), user("dad")],
                group: family,
            },
        );
        let moved = changed(&rig.take(laptop)).1;
        assert_eq!(
            moved,
            vec![
                Placement {
                    contact: user("dad"),
                    group: family
                },
                Placement {
                    contact: user("mum"),
                    group: family
                },
            ]
        );
        rig.take(phone);
        rig.frame(
            laptop,
            ClientMsg::EditGroup {
                group: work,
                edit: GroupEdit::Reorder { position: 0 },
            },
        );
        rig.frame(
            laptop,
            ClientMsg::EditGroup {
                group: work,
                edit: GroupEdit::Rename {
                    name: "Work".into(),
                },
            },
        );
        rig.take(laptop);
        let got = rig.take(phone);
        assert_eq!(got.len(), 2, "{got:?}");
        let ServerMsg::GroupsChanged { groups, .. } = &got[1] else {
            panic!("{got:?}");
        };
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["Work", "家人"]);

        rig.close(phone);
        let tablet = rig.login("me", Status::Online);
        let snapshot = rig
            .take(tablet)
            .into_iter()
            .find(|m| matches!(m, ServerMsg::Groups { .. }));
        assert_eq!(
            snapshot,
            Some(ServerMsg::Groups {
                max_groups: 100,
                groups: groups.clone(),
                placements: moved,
            })
        );

        // Deleting a group sends its contacts back to the default group, on every device.
        rig.frame(
            tablet,
            ClientMsg::EditGroup {
                group: family,
                edit: GroupEdit::Delete,
            },
        );
        let (left, moved) = changed(&rig.take(laptop));
        assert_eq!(left, vec![groups[0].clone()]);
        assert!(moved.iter().all(|p| p.group == DEFAULT_GROUP) && moved.len() == 2);
    }

    /// Hostile input is refused as PROTOCOL.md says, and refused cheaply: thousands of groups
    /// stop at the limit, disguised names never reach the store.
    #[test]
    fn hostile_group_requests_are_refused_as_documented() {
        let cfg = ServerConfig {
            max_groups: 5,
            max_contacts: 3,
            ..multi()
        };
        let mut rig = Rig::new(cfg, &["a", "b"]);
        let a = rig.login("a", Status::Online);
        rig.frame(a, ClientMsg::AddContact { user: user("b") });
        rig.take(a);
        let kind = RequestKind::CreateGroup;
        for (name, code) in [
            ("evil\u{202E}txt.exe", ErrorCode::InvalidName),
            ("\u{2067}isolate", ErrorCode::InvalidName),
            ("two\nlines", ErrorCode::InvalidName),
            ("  ", ErrorCode::InvalidName),
            (&"x".repeat(33), ErrorCode::InvalidName),
        ] {
            rig.frame(a, create(name));
            assert_eq!(rig.take(a), vec![error(kind, code)], "{name:?}");
        }
        let mut created = 0;
        let mut refused = 0;
        for i in 0..2000 {
            rig.frame(a, create(&format!("g{i}")));
            match &rig.take(a)[..] {
                [ServerMsg::GroupsChanged { .. }] => created += 1,
                [e] if *e == error(kind, ErrorCode::TooLarge) => refused += 1,
                other => panic!("group {i}: {other:?}"),
            }
        }
        assert_eq!((created, refused), (5, 1995));
        rig.frame(a, create("g0"));
        assert_eq!(
            rig.take(a),
            vec![error(kind, ErrorCode::InvalidName)],
            "taken"
        );

        let edit = RequestKind::EditGroup;
        for group in [DEFAULT_GROUP, 999] {
            rig.frame(
                a,
                ClientMsg::EditGroup {
                    group,
                    edit: GroupEdit::Delete,
                },
            );
            assert_eq!(rig.take(a), vec![error(edit, ErrorCode::NoSuchGroup)]);
        }
        let moving = RequestKind::MoveContacts;
        for (contacts, code) in [
            (vec![user("b"); 4], ErrorCode::TooLarge),
            (vec![user("a")], ErrorCode::NoSuchUser),
        ] {
            rig.frame(a, ClientMsg::MoveContacts { contacts, group: 1 });
            assert_eq!(rig.take(a), vec![error(moving, code)]);
        }
        // An agent is not where the user's list is kept.
        let agent = rig.agent("a");
        rig.take(agent);
        rig.frame(agent, create("bots"));
        assert_eq!(rig.take(agent), vec![error(kind, ErrorCode::Forbidden)]);
    }
}
