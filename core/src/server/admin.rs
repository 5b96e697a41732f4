//! What an administrator (a user in `cfg.admins`) may do online: list who is on
//! (`AdminWho`), end a user's sessions (`AdminKick`), bar a user (`AdminBan`) and let them
//! back (`AdminUnban`).
//!
//! A ban is stored before it is answered, like any account change, and is read back with
//! the credential at every login (`Account::banned`), so it costs logins no extra request.
//! Sessions end through `close`, the one teardown path: watchers see the user go offline
//! once, with no offline grace, as after a logout.

use super::{Output, Pending, Server, ServerEvent};
use crate::ids::{ConnId, RequestId, UserId};
use crate::message::{CloseReason, ErrorCode, RequestKind, ServerMsg};
use crate::storage::{StorageError, StorageOp};
use crate::time::Instant;

impl Server {
    /// `AdminWho`: who is online, with their sessions.
    pub(super) fn admin_who(&mut self, now: Instant, conn: ConnId, admin: &UserId) {
        if !self.cfg.admins.contains(admin) {
            return self.error(conn, RequestKind::AdminWho, ErrorCode::Forbidden, None);
        }
        let who = ServerMsg::Who {
            users: self.who(now),
            connections: self.conns.len() as u64,
        };
        self.send(conn, &who);
    }

    /// `AdminKick`: every session of `user` ends, here and on the other nodes.
    pub(super) fn admin_kick(&mut self, now: Instant, conn: ConnId, admin: UserId, user: UserId) {
        let request = RequestKind::AdminKick;
        let Some(user) = self.admin_target(conn, &admin, request, &user) else {
            return;
        };
        let sessions = self.announce_end(&user, CloseReason::Kicked);
        self.answer_admin(conn, admin, request, user.clone(), sessions);
        // Answered first: the admin may have named themselves.
        self.close_sessions(now, &user, CloseReason::Kicked);
    }

    /// `AdminBan` (`banned`) or `AdminUnban`: stored first; `banned_set` goes on.
    pub(super) fn admin_ban(&mut self, conn: ConnId, admin: UserId, user: UserId, banned: bool) {
        let request = if banned {
            RequestKind::AdminBan
        } else {
            RequestKind::AdminUnban
        };
        let Some(user) = self.admin_target(conn, &admin, request, &user) else {
            return;
        };
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, request, ErrorCode::Busy, None);
        }
        self.request(
            conn,
            StorageOp::SetBanned {
                user: user.clone(),
                banned,
            },
            Pending::SetBanned {
                conn,
                admin,
                user,
                banned,
            },
        );
    }

    /// The directory's copy of `user` if `admin` is one and `user` is registered; else the
    /// refusal is sent and `None` returned. The directory holds every registered user (in a
    /// cluster, those registered through other nodes too), so an unknown name costs storage
    /// nothing.
    fn admin_target(
        &mut self,
        conn: ConnId,
        admin: &UserId,
        request: RequestKind,
        user: &UserId,
    ) -> Option<UserId> {
        if !self.cfg.admins.contains(admin) {
            self.error(conn, request, ErrorCode::Forbidden, None);
            return None;
        }
        let found = self.interned(user);
        if found.is_none() {
            self.error(conn, request, ErrorCode::NoSuchUser, None);
        }
        found
    }

    /// A ban or unban is stored (or failed). The admin is answered; after a ban the user's
    /// sessions end.
    pub(super) fn banned_set(
        &mut self,
        now: Instant,
        conn: ConnId,
        admin: UserId,
        user: UserId,
        banned: bool,
        r: Result<(), StorageError>,
    ) {
        let request = if banned {
            RequestKind::AdminBan
        } else {
            RequestKind::AdminUnban
        };
        if let Err(e) = r {
            let code = match e {
                StorageError::NoSuchUser => ErrorCode::NoSuchUser,
                _ => ErrorCode::StorageFailed,
            };
            if self.conns.contains_key(&conn) {
                self.error(conn, request, code, None);
            }
            return;
        }
        if let Some(u) = self.users.get_mut(&user) {
            // A login whose credential was read before this commit may not have seen it;
            // `ban_known` refuses the logins asked for before this point.
            u.banned_since = banned.then_some(RequestId(self.next_request));
        }
        if !banned {
            return self.answer_admin(conn, admin, request, user, 0);
        }
        let sessions = self.announce_end(&user, CloseReason::Banned);
        self.answer_admin(conn, admin, request, user.clone(), sessions);
        self.close_sessions(now, &user, CloseReason::Banned);
    }

    /// Whether a ban this node stored after the login `login` was asked for applies to it:
    /// the login's credential may have been read before the ban committed.
    pub(super) fn ban_known(&self, user: &UserId, login: RequestId) -> bool {
        self.users
            .get(user)
            .and_then(|u| u.banned_since)
            .is_some_and(|since| login < since)
    }

    /// Tells the other nodes to end `user`'s sessions there with `reason`, and counts the
    /// sessions ending: here (agents' too) and there, as far as this node knows.
    fn announce_end(&mut self, user: &UserId, reason: CloseReason) -> u32 {
        let here = self.local_sessions(user).count();
        let elsewhere = self.end_sessions_elsewhere(user, reason);
        u32::try_from(here + elsewhere).unwrap_or(u32::MAX)
    }

    /// Closes every session of `user` on this node, agents' too, with `reason`.
    pub(super) fn close_sessions(&mut self, now: Instant, user: &UserId, reason: CloseReason) {
        let conns: Vec<ConnId> = self.local_sessions(user).collect();
        for conn in conns {
            self.close(now, conn, reason);
        }
    }

    /// `user`'s sessions on this node, devices and agents, in connection order.
    fn local_sessions<'a>(&'a self, user: &'a UserId) -> impl Iterator<Item = ConnId> + 'a {
        self.conns
            .ids()
            .into_iter()
            .filter(move |id| self.conns[id].user() == Some(user))
    }

    /// Logs what an admin did (even if the admin has gone meanwhile: it is done) and tells
    /// the admin.
    fn answer_admin(
        &mut self,
        conn: ConnId,
        admin: UserId,
        request: RequestKind,
        user: UserId,
        sessions: u32,
    ) {
        self.out.push_back(Output::Event(ServerEvent::AdminAction {
            admin,
            request,
            user: user.clone(),
            sessions,
        }));
        if self.conns.contains_key(&conn) {
            let done = ServerMsg::AdminDone {
                request,
                user,
                sessions,
            };
            self.send(conn, &done);
        }
    }
}
