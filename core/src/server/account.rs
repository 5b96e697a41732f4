//! Accounts and sessions: registration, login (with the duplicate-login policy), password
//! changes and status.

use super::guard::Culprit;
use super::session::{Mailbox, Phase, Role, Session, User};
use super::{Output, Pending, Server, ServerEvent};
use crate::config::{DuplicateLogin, Registration, password_is_acceptable};
use crate::ids::{ConnId, UserId};
use crate::message::{CloseReason, Credential, ErrorCode, RequestKind, ServerMsg, Status};
use crate::storage::{Account, StorageError, StorageOp};
use crate::time::Instant;
use std::net::IpAddr;

impl Server {
    pub(super) fn register(&mut self, now: Instant, conn: ConnId, user: UserId, password: String) {
        if self.cfg.registration == Registration::Closed {
            return self.error(conn, RequestKind::Register, ErrorCode::Forbidden, None);
        }
        if user.validate().is_err() {
            return self.error(conn, RequestKind::Register, ErrorCode::InvalidName, None);
        }
        if !password_is_acceptable(&password) {
            return self.error(
                conn,
                RequestKind::Register,
                ErrorCode::InvalidPassword,
                None,
            );
        }
        if self.users.contains_key(&user) {
            return self.error(conn, RequestKind::Register, ErrorCode::UserTaken, None);
        }
        if !self.has_room(conn, 1, 1) {
            return self.error(conn, RequestKind::Register, ErrorCode::Busy, None);
        }
        // Counted only once the hash would be spent: refusals above cost nothing.
        let addr = self.conns.get(&conn).and_then(|c| c.addr);
        if let Some(addr) = addr
            && !self
                .registrations
                .admit(addr, now, &self.cfg.register_throttle)
        {
            self.out
                .push_back(Output::Event(ServerEvent::RegisterThrottled { user, addr }));
            return self.error(conn, RequestKind::Register, ErrorCode::RateLimited, None);
        }
        self.request(
            conn,
            StorageOp::Register {
                user: user.clone(),
                password,
            },
            Pending::Register { conn, user },
        );
    }

    pub(super) fn registered(&mut self, conn: ConnId, user: UserId, r: Result<(), StorageError>) {
        match r {
            Ok(()) => {
                let addr = self.conns.get(&conn).and_then(|c| c.addr);
                self.out.push_back(Output::Event(ServerEvent::Registered {
                    user: user.clone(),
                    addr,
                }));
                if !self.users.contains_key(&user) {
                    self.users.insert(user.clone(), User::new());
                    self.presence.joined(user.clone());
                }
                self.publish_registered(&user);
                if self.conns.contains_key(&conn) {
                    self.send(conn, &ServerMsg::Registered { user });
                }
            }
            Err(e) => {
                let code = match e {
                    StorageError::UserTaken => ErrorCode::UserTaken,
                    _ => ErrorCode::StorageFailed,
                };
                if self.conns.contains_key(&conn) {
                    self.error(conn, RequestKind::Register, code, None);
                }
            }
        }
    }

    pub(super) fn login(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        credential: Credential,
        role: Role,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let kind = login_kind(role);
        if matches!(c.phase, Phase::Ready { login: Some(_) }) {
            return self.error(conn, kind, ErrorCode::Busy, None);
        }
        let addr = c.addr;
        let password = matches!(credential, Credential::Password(_));
        // Tokens are not guessable (128 random bits), so the throttle is for passwords only:
        // a stranger failing on a name cannot lock its owner's devices out, and one guesser
        // behind an office NAT cannot block everyone's reconnects from that address.
        let until = culprits(&user, addr, password)
            .iter()
            .filter_map(|c| self.logins.blocked(c, now))
            .max();
        if let Some(until) = until {
            self.out
                .push_back(Output::Event(ServerEvent::LoginThrottled { user, addr }));
            // Rounded up: a client that waits exactly this long is let in.
            let wait_ms = (until - now).as_nanos().div_ceil(1_000_000);
            let retry_after_ms = u32::try_from(wait_ms).unwrap_or(u32::MAX);
            self.send(
                conn,
                &ServerMsg::Throttled {
                    request: kind,
                    retry_after_ms,
                },
            );
            return self.error(conn, kind, ErrorCode::RateLimited, None);
        }
        if !self.has_room(conn, 1, u32::from(password)) {
            return self.error(conn, kind, ErrorCode::Busy, None);
        }
        // Unknown and invalid names go to storage too, so a failure looks and takes the same
        // as a wrong password and does not reveal who exists.
        let id = self.request(
            conn,
            StorageOp::Authenticate {
                user: user.clone(),
                credential,
                issue_token: role != Role::Agent,
            },
            Pending::Login {
                conn,
                user,
                role,
                password,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Ready { login: Some(id) };
        }
    }

    pub(super) fn authenticated(
        &mut self,
        now: Instant,
        conn: ConnId,
        user: UserId,
        role: Role,
        password: bool,
        r: Result<Account, StorageError>,
    ) {
        let kind = login_kind(role);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Phase::Ready { login } = &mut c.phase else {
            return;
        };
        *login = None;
        let addr = c.addr;
        let account = match r {
            Ok(account) => account,
            Err(StorageError::BadCredentials | StorageError::NoSuchUser) => {
                let throttle = self.cfg.login_throttle;
                let mut failures = 0;
                for culprit in culprits(&user, addr, password) {
                    let count = self.logins.failed(culprit.clone(), now, &throttle);
                    if matches!(culprit, Culprit::User(_)) {
                        failures = count;
                    }
                }
                self.out.push_back(Output::Event(ServerEvent::LoginFailed {
                    user,
                    addr,
                    failures,
                }));
                return self.error(conn, kind, ErrorCode::BadCredentials, None);
            }
            Err(_) => return self.error(conn, kind, ErrorCode::StorageFailed, None),
        };
        if account.banned {
            // The credential was right, so saying why reveals nothing a guesser could use.
            self.out
                .push_back(Output::Event(ServerEvent::LoginBanned { user, addr }));
            return self.error(conn, kind, ErrorCode::Banned, None);
        }
        self.logins.succeeded(&Culprit::User(user.clone()));
        if let Some(addr) = addr {
            self.logins.succeeded(&Culprit::Pair(user.clone(), addr));
        }
        if !self.users.contains_key(&user) {
            // Registered through another node since this one loaded its directory.
            self.users.insert(user.clone(), User::new());
            self.presence.joined(user.clone());
        }
        // From here on the name is the directory's own, so that every copy shares it.
        let user = self.interned(&user).expect("in the directory");
        let status = match role {
            Role::Device(status) => status,
            Role::Agent => return self.agent_started(now, conn, user, account),
        };
        if self.cfg.duplicate_login == DuplicateLogin::Replace {
            // The old sessions end like any other; the new one starts before the next drain,
            // and announcements compare what watchers were told with the state at the drain,
            // so watchers see no offline/online flap.
            let old: Vec<ConnId> = self.users[&user].sessions.iter().copied().collect();
            for old in old {
                self.close(now, old, CloseReason::Replaced);
            }
            if let Some(c) = self.cluster.as_mut() {
                c.kick_all(&user);
            }
        }
        let was_online = self.users[&user].is_online();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = Phase::Session(Session {
                user: user.clone(),
                since: now,
                mailbox: Mailbox::Reading {
                    floor: 0,
                    high: None,
                    offline: Some(0),
                    held: Vec::new(),
                    again: false,
                },
                marking: false,
                acks_waiting: Vec::new(),
                rooms: Default::default(),
                profiles_owed: false,
                agent: false,
            });
        }
        if self.users[&user].sessions.is_empty() {
            // Coming online (or back within the grace): contacts from storage are current.
            let contacts = account
                .contacts
                .iter()
                .filter(|c| **c != user)
                .filter_map(|c| self.interned(c))
                .collect();
            let u = self.users.get_mut(&user).expect("checked above");
            u.contacts = contacts;
            self.presence.watch(&user, &u.contacts);
        }
        let u = self.users.get_mut(&user).expect("checked above");
        u.lingering = None;
        u.sessions.insert(conn);
        let status_changed = u.status != status;
        u.status = status;
        let contacts: Vec<UserId> = u.contacts.iter().cloned().collect();
        if !was_online {
            self.online += 1;
        }
        self.stamp_status(&user);
        self.changed(user.clone());

        let ok = ServerMsg::LoginOk {
            user: user.clone(),
            status,
            resume_token: account.resume_token,
            contacts,
        };
        self.send(conn, &ok);
        self.send_groups(conn, account.groups);
        let entries = self.snapshot_for(&user);
        self.send(conn, &ServerMsg::PresenceSnapshot { entries });
        if status_changed {
            self.send_to_sessions(&user, Some(conn), &ServerMsg::OwnStatus { status });
        }
        self.out
            .push_back(Output::Event(ServerEvent::SessionStarted {
                user: user.clone(),
                at: self.location(conn),
                agent: false,
            }));
        self.read_login_profiles(conn, user);
    }

    /// An agent's login succeeded. It joins none of the user's state: no session in
    /// `User::sessions`, no presence, no replacement, no mailbox. It is told the user's
    /// contacts (a script may want them) and `Invisible`, which is what others see of it.
    fn agent_started(&mut self, now: Instant, conn: ConnId, user: UserId, account: Account) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Session(Session {
            user: user.clone(),
            since: now,
            // Nothing is ever delivered to it; `Live` is the state that holds nothing back.
            mailbox: Mailbox::Live {
                floor: 0,
                high: None,
            },
            marking: false,
            acks_waiting: Vec::new(),
            rooms: Default::default(),
            profiles_owed: false,
            agent: true,
        });
        let ok = ServerMsg::LoginOk {
            user: user.clone(),
            status: Status::Invisible,
            resume_token: Vec::new(),
            contacts: account.contacts,
        };
        self.send(conn, &ok);
        self.send_groups(conn, account.groups);
        self.out
            .push_back(Output::Event(ServerEvent::SessionStarted {
                user,
                at: self.location(conn),
                agent: true,
            }));
    }

    pub(super) fn change_password(&mut self, conn: ConnId, user: UserId, old: String, new: String) {
        if !password_is_acceptable(&new) {
            return self.error(
                conn,
                RequestKind::ChangePassword,
                ErrorCode::InvalidPassword,
                None,
            );
        }
        if !self.has_room(conn, 1, 1) {
            return self.error(conn, RequestKind::ChangePassword, ErrorCode::Busy, None);
        }
        self.request(
            conn,
            StorageOp::ChangePassword {
                user: user.clone(),
                old,
                new,
            },
            Pending::ChangePassword { conn, user },
        );
    }

    pub(super) fn password_changed(
        &mut self,
        conn: ConnId,
        user: UserId,
        r: Result<(), StorageError>,
    ) {
        if r.is_ok() {
            // Logged even if the connection is gone: the change is made.
            self.out
                .push_back(Output::Event(ServerEvent::PasswordChanged { user }));
        }
        if !self.conns.contains_key(&conn) {
            return;
        }
        match r {
            Ok(()) => self.send(conn, &ServerMsg::PasswordChanged),
            Err(StorageError::BadCredentials) => self.error(
                conn,
                RequestKind::ChangePassword,
                ErrorCode::BadCredentials,
                None,
            ),
            Err(_) => self.error(
                conn,
                RequestKind::ChangePassword,
                ErrorCode::StorageFailed,
                None,
            ),
        }
    }

    pub(super) fn set_status(&mut self, user: UserId, status: Status) {
        let Some(u) = self.users.get_mut(&user) else {
            return;
        };
        u.status = status;
        self.stamp_status(&user);
        self.changed(user.clone());
        self.send_to_user(&user, &ServerMsg::OwnStatus { status });
    }
}

/// Whose failure a failed login is, and whose wait refuses the next (none for tokens).
fn culprits(user: &UserId, addr: Option<IpAddr>, password: bool) -> Vec<Culprit> {
    if !password {
        return Vec::new();
    }
    let mut culprits = vec![Culprit::User(user.clone())];
    if let Some(addr) = addr {
        culprits.push(Culprit::Pair(user.clone(), addr));
        culprits.push(Culprit::Addr(addr));
    }
    culprits
}

/// The request a login's errors answer.
fn login_kind(role: Role) -> RequestKind {
    match role {
        Role::Device(_) => RequestKind::Login,
        Role::Agent => RequestKind::AgentLogin,
    }
}
