//! Scenario tests of the admin requests that act on a user: kick, ban, unban.

use crate::config::{DuplicateLogin, ServerConfig};
use crate::ids::ConnId;
use crate::message::{
    ClientMsg, CloseReason, Credential, ErrorCode, Presence, PresenceEntry, RequestKind, ServerMsg,
    Status,
};
use crate::server::ServerEvent;
use crate::testkit::Rig;
use crate::testkit::rig::{PASSWORD, user};
use crate::time::Duration;

/// Root is the admin; a 5 s offline grace, so that an end that wrongly waited it out shows.
fn rig(policy: DuplicateLogin) -> Rig {
    Rig::new(
        ServerConfig {
            admins: [user("root")].into(),
            duplicate_login: policy,
            offline_grace: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(600),
            ..ServerConfig::default()
        },
        &["root", "bob", "w"],
    )
}

fn offline(name: &str) -> ServerMsg {
    ServerMsg::PresenceDiff {
        entries: vec![PresenceEntry {
            user: user(name),
            presence: Presence::Offline,
        }],
    }
}

fn done(request: RequestKind, name: &str, sessions: u32) -> ServerMsg {
    ServerMsg::AdminDone {
        request,
        user: user(name),
        sessions,
    }
}

fn refused(request: RequestKind, code: ErrorCode) -> ServerMsg {
    ServerMsg::Error {
        request,
        code,
        id: None,
    }
}

fn bye(reason: CloseReason) -> ServerMsg {
    ServerMsg::Bye { reason }
}

/// A login's answer on a fresh connection: the resume token, or the error code.
fn try_login(rig: &mut Rig, name: &str, credential: Credential) -> Result<Vec<u8>, ErrorCode> {
    let conn = rig.hello();
    rig.take(conn);
    rig.frame(
        conn,
        ClientMsg::Login {
            user: user(name),
            credential,
            status: Status::Online,
        },
    );
    first_answer(rig, conn)
}

fn first_answer(rig: &mut Rig, conn: ConnId) -> Result<Vec<u8>, ErrorCode> {
    for msg in rig.take(conn) {
        match msg {
            ServerMsg::LoginOk { resume_token, .. } => return Ok(resume_token),
            ServerMsg::Error { code, .. } => return Err(code),
            _ => {}
        }
    }
    panic!("no answer to the login on {conn:?}")
}

/// What `conn` received but presence (an agent is told presence like anyone).
fn answers(rig: &mut Rig, conn: ConnId) -> Vec<ServerMsg> {
    rig.take(conn)
        .into_iter()
        .filter(|m| !matches!(m, ServerMsg::PresenceDiff { .. }))
        .collect()
}

fn token_of(rig: &mut Rig, conn: ConnId) -> Vec<u8> {
    first_answer(rig, conn).expect("logged in")
}

#[test]
fn a_kick_ends_every_session_of_the_user_once_and_leaves_the_admin() {
    let mut rig = rig(DuplicateLogin::Multi);
    let w = rig.login("w", Status::Online);
    let phone = rig.login("bob", Status::Online);
    let laptop = rig.login("bob", Status::Busy);
    let script = rig.agent("bob");
    let root_chat = rig.login("root", Status::Online);
    let admin = rig.agent("root");
    for conn in [w, phone, laptop, script, root_chat, admin] {
        rig.take(conn);
    }

    rig.frame(admin, ClientMsg::AdminKick { user: user("bob") });
    assert_eq!(
        answers(&mut rig, admin),
        [done(RequestKind::AdminKick, "bob", 3)],
        "the two devices and the script"
    );
    for conn in [phone, laptop, script] {
        assert_eq!(rig.closed.get(&conn), Some(&CloseReason::Kicked));
        assert_eq!(rig.take(conn), [bye(CloseReason::Kicked)]);
    }
    // At once and once: no offline grace for a session an admin ended.
    assert_eq!(rig.take(w), [offline("bob")]);
    rig.advance(Duration::from_secs(10));
    assert_eq!(rig.take(w), []);
    for conn in [w, root_chat, admin] {
        assert!(!rig.closed.contains_key(&conn), "{conn:?} was closed");
    }
    assert!(rig.events.contains(&ServerEvent::AdminAction {
        admin: user("root"),
        request: RequestKind::AdminKick,
        user: user("bob"),
        sessions: 3,
    }));
    assert!(rig.server.sessions_of(&user("bob")).is_empty());
    assert_eq!(rig.server.stats().online_users, 2);

    // A kick is not a ban: bob may come back.
    assert!(try_login(&mut rig, "bob", Credential::Password(PASSWORD.into())).is_ok());
    // Kicking a user with no session is done too, ending none.
    rig.frame(admin, ClientMsg::AdminKick { user: user("w") });
    rig.frame(w, ClientMsg::Logout);
    rig.frame(admin, ClientMsg::AdminKick { user: user("w") });
    assert_eq!(
        answers(&mut rig, admin),
        [
            done(RequestKind::AdminKick, "w", 1),
            done(RequestKind::AdminKick, "w", 0)
        ]
    );
}

#[test]
fn a_ban_is_answered_once_stored_then_refuses_every_kind_of_login_until_the_unban() {
    let mut rig = rig(DuplicateLogin::Replace);
    let w = rig.login("w", Status::Online);
    let bob = rig.login("bob", Status::Online);
    let token = token_of(&mut rig, bob);
    let admin = rig.agent("root");
    rig.take(w);
    rig.take(admin);

    // The answer and the kick wait for the store.
    rig.deferred = Some(Vec::new());
    rig.frame(admin, ClientMsg::AdminBan { user: user("bob") });
    assert_eq!(answers(&mut rig, admin), []);
    assert!(
        !rig.closed.contains_key(&bob),
        "kicked before the ban was stored"
    );
    rig.complete(0);
    rig.deferred = None;
    assert_eq!(
        answers(&mut rig, admin),
        [done(RequestKind::AdminBan, "bob", 1)]
    );
    assert_eq!(rig.closed.get(&bob), Some(&CloseReason::Banned));
    assert_eq!(rig.take(bob), [bye(CloseReason::Banned)]);
    assert_eq!(rig.take(w), [offline("bob")]);

    let password = || Credential::Password(PASSWORD.into());
    assert_eq!(
        try_login(&mut rig, "bob", password()),
        Err(ErrorCode::Banned)
    );
    assert_eq!(
        try_login(&mut rig, "bob", Credential::Token(token.clone())),
        Err(ErrorCode::Banned),
        "a resume token is no way around a ban"
    );
    let agent = rig.hello();
    rig.take(agent);
    rig.frame(
        agent,
        ClientMsg::AgentLogin {
            user: user("bob"),
            password: PASSWORD.into(),
        },
    );
    assert_eq!(
        rig.take(agent),
        [refused(RequestKind::AgentLogin, ErrorCode::Banned)]
    );
    // The ban is not told to whoever does not know the password.
    assert_eq!(
        try_login(&mut rig, "bob", Credential::Password("a wrong one".into())),
        Err(ErrorCode::BadCredentials)
    );
    assert!(rig.events.contains(&ServerEvent::LoginBanned {
        user: user("bob"),
        addr: None
    }));
    assert!(rig.server.sessions_of(&user("bob")).is_empty());
    assert_eq!(rig.take(w), [], "the refused logins showed bob to nobody");

    rig.frame(admin, ClientMsg::AdminUnban { user: user("bob") });
    assert_eq!(
        answers(&mut rig, admin),
        [done(RequestKind::AdminUnban, "bob", 0)]
    );
    assert!(rig.events.contains(&ServerEvent::AdminAction {
        admin: user("root"),
        request: RequestKind::AdminUnban,
        user: user("bob"),
        sessions: 0,
    }));
    // The device's token survived the ban: it resumes as before.
    assert!(try_login(&mut rig, "bob", Credential::Token(token)).is_ok());
    assert!(try_login(&mut rig, "bob", password()).is_ok());
}

/// A login whose credential was read just before the ban committed, answered just after:
/// it must not slip in behind the kick.
#[test]
fn a_login_read_before_the_ban_committed_is_refused() {
    let mut rig = rig(DuplicateLogin::Multi);
    let admin = rig.agent("root");
    rig.take(admin);
    rig.deferred = Some(Vec::new());
    let bob = rig.hello();
    rig.take(bob);
    rig.frame(
        bob,
        ClientMsg::Login {
            user: user("bob"),
            credential: Credential::Password(PASSWORD.into()),
            status: Status::Online,
        },
    );
    rig.frame(admin, ClientMsg::AdminBan { user: user("bob") });
    // The ban's result comes back first, then the login's (read unbanned).
    rig.complete(1);
    assert_eq!(
        answers(&mut rig, admin),
        [done(RequestKind::AdminBan, "bob", 0)]
    );
    rig.complete(0);
    rig.deferred = None;
    assert_eq!(
        rig.take(bob),
        [refused(RequestKind::Login, ErrorCode::Banned)]
    );
    assert!(rig.server.sessions_of(&user("bob")).is_empty());
    // After an unban the same race is no reason to refuse.
    rig.frame(admin, ClientMsg::AdminUnban { user: user("bob") });
    assert!(try_login(&mut rig, "bob", Credential::Password(PASSWORD.into())).is_ok());
}

#[test]
fn only_admins_may_kick_ban_or_unban() {
    let mut rig = rig(DuplicateLogin::Multi);
    let w = rig.login("w", Status::Online);
    let bob = rig.login("bob", Status::Online);
    rig.take(w);
    rig.take(bob);
    let requests = [
        (
            RequestKind::AdminKick,
            ClientMsg::AdminKick { user: user("w") },
        ),
        (
            RequestKind::AdminBan,
            ClientMsg::AdminBan { user: user("w") },
        ),
        (
            RequestKind::AdminUnban,
            ClientMsg::AdminUnban { user: user("w") },
        ),
    ];
    for (kind, msg) in requests.clone() {
        rig.frame(bob, msg);
        assert_eq!(rig.take(bob), [refused(kind, ErrorCode::Forbidden)]);
    }
    // Before login, too, and without closing.
    let anonymous = rig.hello();
    rig.take(anonymous);
    for (kind, msg) in requests {
        rig.frame(anonymous, msg);
        assert_eq!(rig.take(anonymous), [refused(kind, ErrorCode::NotLoggedIn)]);
    }
    assert!(rig.closed.is_empty(), "{:?}", rig.closed);
    assert_eq!(rig.take(w), []);
    assert!(try_login(&mut rig, "w", Credential::Password(PASSWORD.into())).is_ok());
    assert!(
        !rig.events
            .iter()
            .any(|e| matches!(e, ServerEvent::AdminAction { .. }))
    );
}

#[test]
fn an_unknown_user_is_refused_without_asking_storage() {
    let mut rig = rig(DuplicateLogin::Multi);
    let admin = rig.agent("root");
    rig.take(admin);
    rig.deferred = Some(Vec::new());
    for (kind, msg) in [
        (
            RequestKind::AdminKick,
            ClientMsg::AdminKick {
                user: user("ghost"),
            },
        ),
        (
            RequestKind::AdminBan,
            ClientMsg::AdminBan {
                user: user("ghost"),
            },
        ),
        (
            RequestKind::AdminUnban,
            ClientMsg::AdminUnban {
                user: user("ghost"),
            },
        ),
    ] {
        rig.frame(admin, msg);
        assert_eq!(
            answers(&mut rig, admin),
            [refused(kind, ErrorCode::NoSuchUser)]
        );
    }
    assert_eq!(rig.deferred.as_ref().map(Vec::len), Some(0));
}

/// An admin who names themselves is answered, then ends like everyone else.
#[test]
fn an_admin_kicking_themselves_hears_the_answer_first() {
    let mut rig = rig(DuplicateLogin::Multi);
    let admin = rig.agent("root");
    rig.take(admin);
    rig.frame(admin, ClientMsg::AdminKick { user: user("root") });
    assert_eq!(
        answers(&mut rig, admin),
        [
            done(RequestKind::AdminKick, "root", 1),
            bye(CloseReason::Kicked)
        ]
    );
}
