//! Scenario tests of the server state machine, one behaviour each, in virtual time.

use crate::config::{DuplicateLogin, ServerConfig};
use crate::ids::ConnId;
use crate::message::{
    ClientMsg, CloseReason, ErrorCode, MAGIC, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, Presence,
    PresenceEntry, RequestKind, ServerMsg, Status, WatchScope,
};
use crate::server::ServerEvent;
use crate::testkit::Rig;
use crate::testkit::rig::user;
use crate::time::Duration;

fn cfg() -> ServerConfig {
    ServerConfig {
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

fn diff(entries: &[(&str, Presence)]) -> ServerMsg {
    ServerMsg::PresenceDiff {
        entries: entries
            .iter()
            .map(|(u, p)| PresenceEntry {
                user: user(u),
                presence: *p,
            })
            .collect(),
    }
}

fn diffs(msgs: &[ServerMsg]) -> Vec<&ServerMsg> {
    msgs.iter()
        .filter(|m| matches!(m, ServerMsg::PresenceDiff { .. }))
        .collect()
}

#[test]
fn hello_is_answered_with_the_servers_heartbeat_terms() {
    let mut rig = Rig::new(cfg(), &[]);
    let c = rig.hello();
    match &rig.take(c)[..] {
        [
            ServerMsg::Welcome {
                heartbeat_interval_ms: 1000,
                heartbeat_timeout_ms: 3000,
                ..
            },
        ] => {}
        other => panic!("unexpected {other:?}"),
    }
}

/// PROTOCOL.md §3: a `Login` may follow `Hello` without waiting for `Welcome`, saving a
/// round trip; a refused `Hello` takes what followed it down with it.
#[test]
fn login_may_be_pipelined_behind_hello() {
    let mut rig = Rig::new(cfg(), &["alice"]);
    let login = || ClientMsg::Login {
        user: user("alice"),
        credential: crate::message::Credential::Password(crate::testkit::rig::PASSWORD.into()),
        status: Status::Online,
    };
    let c = rig.open();
    rig.frame(
        c,
        ClientMsg::Hello {
            magic: MAGIC,
            version: 1,
            client: String::new(),
        },
    );
    rig.frame(c, login());
    let got = rig.take(c);
    assert!(
        matches!(
            &got[..],
            [
                ServerMsg::Welcome { .. },
                ServerMsg::LoginOk { .. },
                ServerMsg::PresenceSnapshot { .. },
                ..
            ]
        ),
        "{got:?}"
    );

    let refused = rig.open();
    rig.frame(
        refused,
        ClientMsg::Hello {
            magic: *b"NOPE",
            version: 1,
            client: String::new(),
        },
    );
    rig.frame(refused, login());
    assert_eq!(
        rig.take(refused),
        [ServerMsg::Bye {
            reason: CloseReason::BadHandshake
        }]
    );
}

#[test]
fn a_first_frame_that_is_not_hello_is_refused() {
    let mut rig = Rig::new(cfg(), &[]);
    let c = rig.open();
    rig.frame(c, ClientMsg::Ping { nonce: 1 });
    assert_eq!(
        rig.take(c),
        vec![ServerMsg::Bye {
            reason: CloseReason::BadHandshake
        }]
    );
    assert_eq!(rig.closed[&c], CloseReason::BadHandshake);

    let c = rig.open();
    rig.frame(
        c,
        ClientMsg::Hello {
            magic: *b"HTTP",
            version: 1,
            client: String::new(),
        },
    );
    assert_eq!(rig.closed[&c], CloseReason::BadHandshake);

    let c = rig.open();
    rig.frame(
        c,
        ClientMsg::Hello {
            magic: MAGIC,
            version: OLDEST_PROTOCOL_VERSION - 1,
            client: String::new(),
        },
    );
    assert_eq!(rig.closed[&c], CloseReason::UnsupportedVersion);
}

#[test]
fn a_client_of_a_newer_version_gets_the_newest_the_server_speaks() {
    let mut rig = Rig::new(cfg(), &[]);
    for offered in [
        OLDEST_PROTOCOL_VERSION,
        PROTOCOL_VERSION,
        PROTOCOL_VERSION + 1,
        u16::MAX,
    ] {
        let c = rig.open();
        rig.frame(
            c,
            ClientMsg::Hello {
                magic: MAGIC,
                version: offered,
                client: String::new(),
            },
        );
        let [ServerMsg::Welcome { version, .. }] = &rig.take(c)[..] else {
            panic!("no Welcome for version {offered}");
        };
        assert_eq!(*version, offered.min(PROTOCOL_VERSION));
        assert!(!rig.closed.contains_key(&c));
    }
}

#[test]
fn garbage_closes_the_connection_as_malformed() {
    let mut rig = Rig::new(cfg(), &[]);
    let c = rig.hello();
    rig.server.handle_frame(rig.now, c, &[0xff, 0xff, 0xff]);
    rig.pump();
    assert_eq!(rig.closed[&c], CloseReason::Malformed);
}

#[test]
fn a_connection_that_never_says_hello_is_dropped_at_the_handshake_deadline() {
    let mut rig = Rig::new(cfg(), &[]);
    let c = rig.open();
    rig.advance(Duration::from_millis(1999));
    assert!(rig.closed.is_empty());
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.closed[&c], CloseReason::HandshakeTimeout);
}

/// A WebSocket Pong (`handle_alive`) is life like a frame: a session that says nothing but
/// answers the host's pings stays, and dies exactly `heartbeat_timeout` after the last one.
#[test]
fn life_without_a_frame_moves_the_deadline_and_its_absence_kills_on_time() {
    let mut rig = Rig::new(cfg(), &["web", "watcher"]);
    let web = rig.login("web", Status::Online);
    let watcher = rig.login("watcher", Status::Online);
    // Nine intervals (three timeouts) of nothing but pongs, one a second.
    for _ in 0..9 {
        rig.advance(Duration::from_secs(1));
        rig.alive(web);
        rig.frame(watcher, ClientMsg::Ping { nonce: 0 });
    }
    assert!(rig.closed.is_empty(), "{:?}", rig.closed);
    dies_exactly_one_timeout_after_its_last_life(&mut rig, web, "web", watcher);
}

/// `conn` (user `name`) was last heard now; from here on it is silent while `watcher` keeps
/// pinging. It is dead at exactly now plus the timeout (3 s), not a tick later, and the
/// watcher is told.
fn dies_exactly_one_timeout_after_its_last_life(
    rig: &mut Rig,
    conn: ConnId,
    name: &str,
    watcher: ConnId,
) {
    rig.take(watcher);
    rig.advance(Duration::from_millis(1500));
    rig.frame(watcher, ClientMsg::Ping { nonce: 1 });
    rig.advance(Duration::from_millis(1499));
    assert!(!rig.closed.contains_key(&conn));
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.closed.get(&conn), Some(&CloseReason::HeartbeatTimeout));
    assert!(
        rig.take(watcher)
            .contains(&diff(&[(name, Presence::Offline)]))
    );
}

/// Pings a host answers in place (`pings.rs`) reach the core only as the last-heard time it
/// hands over when a deadline comes due: the session lives while they keep coming, dies
/// exactly one timeout after the last, and they are not activity for `who`'s idle time.
#[test]
fn pings_answered_in_place_are_life_handed_over_at_the_deadline() {
    let mut rig = Rig::new(cfg(), &["pinger", "watcher"]);
    let raw = rig.open();
    assert!(!rig.in_place.contains_key(&raw), "not before the handshake");
    let pinger = rig.login("pinger", Status::Online);
    let watcher = rig.login("watcher", Status::Online);
    assert!(rig.in_place.contains_key(&pinger));
    // Three timeouts of nothing but pings answered in place, one a second.
    for nonce in 0..9 {
        rig.advance(Duration::from_secs(1));
        assert_eq!(rig.ping_in_place(pinger, nonce), ServerMsg::Pong { nonce });
        rig.frame(watcher, ClientMsg::Ping { nonce });
    }
    assert!(!rig.closed.contains_key(&pinger), "{:?}", rig.closed);
    let who = rig.server.who(rig.now);
    let session = &who
        .iter()
        .find(|e| e.user == user("pinger"))
        .unwrap()
        .sessions[0];
    assert_eq!(session.idle_ms, 9_000, "pings are not activity");
    dies_exactly_one_timeout_after_its_last_life(&mut rig, pinger, "pinger", watcher);
}

/// Connections pinging out of phase leave a stale heartbeat entry each per period; a wake-up
/// re-files those due within the look-ahead, so the host wakes about once a second for all of
/// them instead of once per entry, and a silent connection still dies at exactly its deadline.
#[test]
fn stale_heartbeat_entries_are_refiled_together_and_deadlines_stay_exact() {
    let mut rig = Rig::new(cfg(), &[]);
    let conns: Vec<_> = (0..40).map(|_| rig.hello()).collect();
    let tick = Duration::from_millis(25);
    let start = rig.now;
    let mut wakes = 0;
    // 20 s of pings, one a second per connection, each at its own 25 ms phase; the last
    // connection stops pinging after 10 s.
    let silent = conns[39];
    let mut silent_last = start;
    let mut closed_at = None;
    for step in 1..=800u32 {
        let at = start + tick * step;
        while let Some(t) = rig.server.poll_timeout().filter(|&t| t <= at) {
            rig.now = rig.now.max(t);
            rig.server.handle_timeout(rig.now);
            rig.pump();
            wakes += 1;
            if closed_at.is_none() && rig.closed.contains_key(&silent) {
                closed_at = Some(rig.now);
            }
        }
        rig.now = at;
        let conn = conns[(step % 40) as usize];
        if conn != silent || step <= 400 {
            rig.frame(conn, ClientMsg::Ping { nonce: 0 });
            if conn == silent {
                silent_last = at;
            }
        }
    }
    // About one wake-up a second: each re-files what falls due in the next second. Without
    // the look-ahead this is 319 (every stale entry wakes the host on its own).
    assert!(wakes <= 25, "{wakes} wake-ups in 20 s");
    let deadline = silent_last + Duration::from_secs(3);
    assert!(deadline < rig.now);
    assert_eq!(rig.closed.len(), 1, "{:?}", rig.closed);
    assert_eq!(
        rig.closed.get(&silent),
        Some(&CloseReason::HeartbeatTimeout)
    );
    assert_eq!(closed_at, Some(deadline));
}

/// A heartbeat timeout shorter than the handshake's moves the deadline earlier at `Hello`; the
/// handshake's later entry is then superseded and passes without effect.
#[test]
fn a_deadline_moved_earlier_at_hello_fires_on_time_and_the_superseded_entry_is_dropped() {
    let short = ServerConfig {
        heartbeat_timeout: Duration::from_secs(1),
        ..cfg()
    };
    let mut rig = Rig::new(short, &[]);
    let c = rig.hello();
    rig.advance(Duration::from_millis(500));
    rig.frame(c, ClientMsg::Ping { nonce: 0 });
    rig.advance(Duration::from_millis(999));
    assert!(rig.closed.is_empty(), "{:?}", rig.closed);
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.closed.get(&c), Some(&CloseReason::HeartbeatTimeout));
    // Past the handshake's deadline (2 s): its entry goes without a second close.
    rig.advance(Duration::from_secs(1));
    assert_eq!(rig.server.poll_timeout(), None);
    assert_eq!(rig.closed.len(), 1);
}

#[test]
fn life_without_a_frame_counts_against_the_frame_budget_and_ignores_unknown_conns() {
    use crate::config::FrameRate;
    let limited = ServerConfig {
        frame_rate: FrameRate {
            per_second: 10,
            burst: 5,
        },
        ..cfg()
    };
    let mut rig = Rig::new(limited, &["pongs"]);
    let c = rig.login("pongs", Status::Online);
    rig.advance(Duration::from_secs(1));
    rig.alive(crate::ids::ConnId(999));
    for _ in 0..20 {
        rig.alive(c);
    }
    assert_eq!(rig.closed.get(&c), Some(&CloseReason::Flooding));
}

/// Before `Hello`, only the handshake deadline counts: pongs do not keep a connection that
/// never introduces itself.
#[test]
fn life_without_a_frame_does_not_extend_the_handshake() {
    let mut rig = Rig::new(cfg(), &[]);
    let c = rig.open();
    for _ in 0..3 {
        rig.advance(Duration::from_millis(600));
        rig.alive(c);
    }
    rig.advance(Duration::from_millis(200));
    assert_eq!(rig.closed.get(&c), Some(&CloseReason::HandshakeTimeout));
}

#[test]
fn registration_then_login_and_duplicate_names_are_refused() {
    let mut rig = Rig::new(cfg(), &["taken"]);
    let c = rig.hello();
    rig.take(c);
    rig.frame(
        c,
        ClientMsg::Register {
            user: user("newbie"),
            password: "long enough".into(),
        },
    );
    assert_eq!(
        rig.take(c),
        vec![ServerMsg::Registered {
            user: user("newbie")
        }]
    );
    rig.frame(
        c,
        ClientMsg::Register {
            user: user("taken"),
            password: "long enough".into(),
        },
    );
    assert!(matches!(
        rig.take(c)[..],
        [ServerMsg::Error {
            code: ErrorCode::UserTaken,
            ..
        }]
    ));
    rig.frame(
        c,
        ClientMsg::Register {
            user: user("short"),
            password: "1234".into(),
        },
    );
    assert!(matches!(
        rig.take(c)[..],
        [ServerMsg::Error {
            code: ErrorCode::InvalidPassword,
            ..
        }]
    ));
    assert_eq!(rig.server.stats().registered_users, 2);
}

#[test]
fn wrong_password_and_unknown_user_fail_alike() {
    let mut rig = Rig::new(cfg(), &["alice"]);
    for name in ["alice", "nobody"] {
        let c = rig.hello();
        rig.take(c);
        rig.frame(
            c,
            ClientMsg::Login {
                user: user(name),
                credential: crate::message::Credential::Password("wrong password".into()),
                status: Status::Online,
            },
        );
        assert_eq!(
            rig.take(c),
            vec![ServerMsg::Error {
                request: RequestKind::Login,
                code: ErrorCode::BadCredentials,
                id: None
            }]
        );
    }
    assert_eq!(rig.server.stats().sessions, 0);
}

#[test]
fn requests_before_login_are_refused_without_closing() {
    let mut rig = Rig::new(cfg(), &["alice"]);
    let c = rig.hello();
    rig.take(c);
    rig.frame(
        c,
        ClientMsg::SetStatus {
            status: Status::Busy,
        },
    );
    assert!(matches!(
        rig.take(c)[..],
        [ServerMsg::Error {
            code: ErrorCode::NotLoggedIn,
            ..
        }]
    ));
    assert!(rig.closed.is_empty());
}

#[test]
fn login_gets_a_snapshot_and_watchers_get_one_diff() {
    let mut rig = Rig::new(cfg(), &["alice", "bob", "carol"]);
    let a = rig.login("alice", Status::Online);
    let got = rig.take(a);
    assert!(matches!(got[0], ServerMsg::Welcome { .. }));
    assert!(matches!(got[1], ServerMsg::LoginOk { .. }));
    // A version 2 login hears its contact groups before the presence snapshot.
    assert!(matches!(got[2], ServerMsg::Groups { .. }));
    assert_eq!(
        got[3],
        ServerMsg::PresenceSnapshot {
            entries: vec![
                PresenceEntry {
                    user: user("bob"),
                    presence: Presence::Offline
                },
                PresenceEntry {
                    user: user("carol"),
                    presence: Presence::Offline
                },
            ]
        }
    );
    let b = rig.login("bob", Status::Busy);
    assert_eq!(diffs(&rig.take(a)), vec![&diff(&[("bob", Presence::Busy)])]);
    let got = rig.take(b);
    assert!(got.contains(&ServerMsg::PresenceSnapshot {
        entries: vec![
            PresenceEntry {
                user: user("alice"),
                presence: Presence::Online
            },
            PresenceEntry {
                user: user("carol"),
                presence: Presence::Offline
            },
        ]
    }));
    assert!(
        diffs(&got).is_empty(),
        "bob hears nothing about himself: {got:?}"
    );
}

#[test]
fn logout_close_and_timeout_all_announce_offline() {
    let mut rig = Rig::new(cfg(), &["w", "x", "y", "z"]);
    let w = rig.login("w", Status::Online);
    let x = rig.login("x", Status::Online);
    let y = rig.login("y", Status::Online);
    let _z = rig.login("z", Status::Online);
    rig.take(w);
    rig.frame(x, ClientMsg::Logout);
    assert_eq!(rig.closed[&x], CloseReason::LoggedOut);
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("x", Presence::Offline)])]
    );
    rig.close(y);
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("y", Presence::Offline)])]
    );
    // w keeps pinging; z stays silent and dies at exactly its deadline.
    for _ in 0..2 {
        rig.advance(Duration::from_secs(1));
        rig.frame(w, ClientMsg::Ping { nonce: 0 });
    }
    rig.advance(Duration::from_millis(999));
    assert!(diffs(&rig.take(w)).is_empty());
    rig.advance(Duration::from_millis(1));
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("z", Presence::Offline)])]
    );
    assert_eq!(rig.server.stats().online_users, 1);
}

#[test]
fn any_frame_counts_as_life_not_only_pings() {
    let mut rig = Rig::new(cfg(), &["a", "b"]);
    let a = rig.login("a", Status::Online);
    let _b = rig.login("b", Status::Online);
    for i in 0..10 {
        rig.advance(Duration::from_millis(2500));
        rig.frame(
            a,
            ClientMsg::Send {
                id: i,
                to: user("b"),
                body: "hi".into(),
                attachment: None,
            },
        );
    }
    assert!(!rig.closed.contains_key(&a));
}

#[test]
fn simultaneous_changes_reach_a_watcher_as_one_frame() {
    let mut rig = Rig::new(cfg(), &["w", "x", "y"]);
    let w = rig.login("w", Status::Online);
    let x = rig.login("x", Status::Online);
    let y = rig.login("y", Status::Online);
    rig.take(w);
    // Both closes handled before the host drains: one diff.
    rig.server.handle_closed(rig.now, x);
    rig.server.handle_closed(rig.now, y);
    rig.pump();
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("x", Presence::Offline), ("y", Presence::Offline)])]
    );
}

#[test]
fn replace_kicks_the_old_session_without_a_flap() {
    let mut rig = Rig::new(cfg(), &["w", "u"]);
    let w = rig.login("w", Status::Online);
    let old = rig.login("u", Status::Online);
    rig.take(w);
    let new = rig.login("u", Status::Online);
    assert_eq!(rig.closed[&old], CloseReason::Replaced);
    assert!(rig.take(old).contains(&ServerMsg::Bye {
        reason: CloseReason::Replaced
    }));
    assert!(diffs(&rig.take(w)).is_empty(), "no offline/online flap");
    assert_eq!(rig.server.sessions_of(&user("u")).len(), 1);
    assert!(!rig.closed.contains_key(&new));
}

#[test]
fn a_session_ended_as_replaced_with_no_replacement_goes_offline() {
    // Found by fuzzing: the reason alone once meant "a replacement follows".
    let mut rig = Rig::new(cfg(), &["w", "u"]);
    let w = rig.login("w", Status::Online);
    let u = rig.login("u", Status::Online);
    rig.take(w);
    rig.server.handle_aborted(rig.now, u, CloseReason::Replaced);
    rig.pump();
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("u", Presence::Offline)])]
    );
    assert_eq!(rig.server.stats().online_users, 1);
}

#[test]
fn multi_keeps_a_user_online_until_the_last_session_ends() {
    let mut rig = Rig::new(
        ServerConfig {
            duplicate_login: DuplicateLogin::Multi,
            ..cfg()
        },
        &["w", "u"],
    );
    let w = rig.login("w", Status::Online);
    let phone = rig.login("u", Status::Online);
    let desk = rig.login("u", Status::Online);
    rig.take(w);
    rig.close(phone);
    assert!(diffs(&rig.take(w)).is_empty());
    rig.close(desk);
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("u", Presence::Offline)])]
    );
}

#[test]
fn a_reconnect_inside_the_grace_announces_nothing() {
    let grace = ServerConfig {
        offline_grace: Duration::from_secs(5),
        ..cfg()
    };
    let mut rig = Rig::new(grace, &["w", "u"]);
    let w = rig.login("w", Status::Online);
    let u = rig.login("u", Status::Online);
    rig.take(w);
    rig.close(u);
    rig.advance(Duration::from_millis(900));
    rig.frame(w, ClientMsg::Ping { nonce: 0 });
    let u = rig.login("u", Status::Online);
    for _ in 0..6 {
        rig.advance(Duration::from_secs(1));
        rig.frame(w, ClientMsg::Ping { nonce: 0 });
        rig.frame(u, ClientMsg::Ping { nonce: 0 });
    }
    assert!(diffs(&rig.take(w)).is_empty());
    // A clean logout is announced at once, grace or not.
    rig.frame(u, ClientMsg::Logout);
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("u", Presence::Offline)])]
    );
}

#[test]
fn grace_expiry_announces_offline_exactly_once() {
    let grace = ServerConfig {
        offline_grace: Duration::from_secs(2),
        ..cfg()
    };
    let mut rig = Rig::new(grace, &["w", "u"]);
    let w = rig.login("w", Status::Online);
    let u = rig.login("u", Status::Online);
    rig.take(w);
    rig.close(u);
    rig.advance(Duration::from_millis(1999));
    assert!(diffs(&rig.take(w)).is_empty());
    rig.advance(Duration::from_millis(1));
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("u", Presence::Offline)])]
    );
}

#[test]
fn an_invisible_user_looks_offline_and_is_never_announced_online() {
    let mut rig = Rig::new(cfg(), &["w", "ghost"]);
    let w = rig.login("w", Status::Online);
    rig.take(w);
    let g = rig.login("ghost", Status::Invisible);
    assert!(diffs(&rig.take(w)).is_empty());
    rig.frame(
        g,
        ClientMsg::SetStatus {
            status: Status::Away,
        },
    );
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("ghost", Presence::Away)])]
    );
    rig.frame(
        g,
        ClientMsg::SetStatus {
            status: Status::Invisible,
        },
    );
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("ghost", Presence::Offline)])]
    );
    rig.close(g);
    assert!(diffs(&rig.take(w)).is_empty(), "already looked offline");
}

#[test]
fn contacts_scope_only_tells_users_who_listed_the_contact() {
    let scope = ServerConfig {
        scope: WatchScope::Contacts,
        ..cfg()
    };
    let mut rig = Rig::new(scope, &["fan", "stranger", "star"]);
    let fan = rig.login("fan", Status::Online);
    let stranger = rig.login("stranger", Status::Online);
    rig.frame(fan, ClientMsg::AddContact { user: user("star") });
    let got = rig.take(fan);
    assert!(got.contains(&ServerMsg::ContactsChanged {
        added: vec![user("star")],
        removed: vec![],
        rejected: vec![],
    }));
    assert!(got.contains(&ServerMsg::PresenceDiff {
        entries: vec![PresenceEntry {
            user: user("star"),
            presence: Presence::Offline
        }]
    }));
    rig.take(stranger);
    let _star = rig.login("star", Status::Online);
    assert_eq!(
        diffs(&rig.take(fan)),
        vec![&diff(&[("star", Presence::Online)])]
    );
    assert!(diffs(&rig.take(stranger)).is_empty());
    // Contacts survive a re-login (they are stored).
    rig.close(fan);
    let fan = rig.login("fan", Status::Online);
    assert!(rig.take(fan).contains(&ServerMsg::PresenceSnapshot {
        entries: vec![PresenceEntry {
            user: user("star"),
            presence: Presence::Online
        }]
    }));
}

#[test]
fn messages_are_acked_after_storage_and_kept_for_offline_users() {
    let mut rig = Rig::new(cfg(), &["a", "b"]);
    let a = rig.login("a", Status::Online);
    rig.take(a);
    let send = |id| ClientMsg::Send {
        id,
        to: user("b"),
        body: format!("m{id}"),
        attachment: None,
    };
    rig.frame(a, send(1));
    rig.frame(a, send(2));
    rig.frame(a, send(1)); // a re-send after a lost ack
    let acks: Vec<_> = rig
        .take(a)
        .into_iter()
        .filter(|m| matches!(m, ServerMsg::Sent { .. }))
        .collect();
    assert_eq!(
        acks,
        vec![
            ServerMsg::Sent { id: 1, seq: 1 },
            ServerMsg::Sent { id: 2, seq: 2 },
            ServerMsg::Sent { id: 1, seq: 1 }
        ]
    );
    let b = rig.login("b", Status::Online);
    let got = rig.take(b);
    let delivered: Vec<u64> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Deliver(d) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![1, 2]);
    assert_eq!(got.last(), Some(&ServerMsg::OfflineDone { count: 2 }));
    assert_eq!(
        got.iter()
            .filter(|m| matches!(m, ServerMsg::OfflineWaiting { .. }))
            .collect::<Vec<_>>(),
        vec![&ServerMsg::OfflineWaiting { count: 2 }]
    );
    rig.frame(b, ClientMsg::Ack { seqs: vec![1, 2] });
    assert_eq!(rig.store.borrow().undelivered(&user("b")), 0);
    // Live delivery once b is online.
    rig.frame(a, send(3));
    assert!(
        rig.take(b)
            .iter()
            .any(|m| matches!(m, ServerMsg::Deliver(d) if d.id == 3))
    );
}

#[test]
fn a_message_to_an_unknown_user_or_too_large_is_refused_with_its_id() {
    let mut rig = Rig::new(cfg(), &["a"]);
    let a = rig.login("a", Status::Online);
    rig.take(a);
    rig.frame(
        a,
        ClientMsg::Send {
            id: 9,
            to: user("nobody"),
            body: "x".into(),
            attachment: None,
        },
    );
    rig.frame(
        a,
        ClientMsg::Send {
            id: 10,
            to: user("a"),
            body: "x".repeat(1 << 20),
            attachment: None,
        },
    );
    assert_eq!(
        rig.take(a),
        vec![
            ServerMsg::Error {
                request: RequestKind::Send,
                code: ErrorCode::NoSuchUser,
                id: Some(9)
            },
            ServerMsg::Error {
                request: RequestKind::Send,
                code: ErrorCode::TooLarge,
                id: Some(10)
            },
        ]
    );
}

#[test]
fn admin_who_is_for_admins_only() {
    let admins = [user("root")].into_iter().collect();
    let mut rig = Rig::new(ServerConfig { admins, ..cfg() }, &["root", "joe"]);
    let root = rig.login("root", Status::Online);
    let joe = rig.login("joe", Status::Busy);
    rig.take(root);
    rig.take(joe);
    rig.frame(joe, ClientMsg::AdminWho);
    assert!(matches!(
        rig.take(joe)[..],
        [ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }]
    ));
    rig.frame(root, ClientMsg::AdminWho);
    match &rig.take(root)[..] {
        [
            ServerMsg::Who {
                users,
                connections: 2,
            },
        ] => {
            assert_eq!(users.len(), 2);
            assert_eq!(users[0].user, user("joe"));
            assert_eq!(users[0].status, Status::Busy);
            assert_eq!(users[0].sessions.len(), 1);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn change_password_needs_the_old_one() {
    let mut rig = Rig::new(cfg(), &["a"]);
    let a = rig.login("a", Status::Online);
    rig.take(a);
    rig.frame(
        a,
        ClientMsg::ChangePassword {
            old: "not it at all".into(),
            new: "new password".into(),
        },
    );
    assert!(matches!(
        rig.take(a)[..],
        [ServerMsg::Error {
            code: ErrorCode::BadCredentials,
            ..
        }]
    ));
    rig.frame(
        a,
        ClientMsg::ChangePassword {
            old: crate::testkit::rig::PASSWORD.into(),
            new: "new password".into(),
        },
    );
    assert_eq!(rig.take(a), vec![ServerMsg::PasswordChanged]);
    // Only the change that happened is logged.
    let logged: Vec<_> = rig
        .events
        .iter()
        .filter(|e| matches!(e, ServerEvent::PasswordChanged { .. }))
        .collect();
    assert_eq!(logged, [&ServerEvent::PasswordChanged { user: user("a") }]);
}

#[test]
fn shutdown_says_goodbye_to_everyone() {
    let mut rig = Rig::new(cfg(), &["a", "b"]);
    let a = rig.login("a", Status::Online);
    let b = rig.login("b", Status::Online);
    rig.take(a);
    rig.server.shutdown(rig.now);
    rig.pump();
    assert_eq!(
        rig.take(a),
        vec![ServerMsg::Bye {
            reason: CloseReason::ServerShutdown
        }]
    );
    assert_eq!(rig.closed[&b], CloseReason::ServerShutdown);
    assert_eq!(rig.server.stats().connections, 0);
}

#[test]
fn a_stored_result_arriving_after_the_mailbox_read_is_not_delivered_twice() {
    let mut rig = Rig::new(cfg(), &["a", "b"]);
    let a = rig.login("a", Status::Online);
    rig.take(a);
    rig.deferred = Some(Vec::new());
    rig.frame(
        a,
        ClientMsg::Send {
            id: 1,
            to: user("b"),
            body: "hi".into(),
            attachment: None,
        },
    );
    let b = rig.login("b", Status::Online);
    rig.complete(1); // b's login
    rig.complete(1); // b's profile cards (version 2), read before the mailbox
    rig.complete(1); // b's mailbox, which already holds the message
    rig.complete(0); // only now the result of storing it
    let seqs: Vec<u64> = rig
        .take(b)
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Deliver(d) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![1]);
    assert!(rig.take(a).contains(&ServerMsg::Sent { id: 1, seq: 1 }));
}

#[test]
fn a_user_registered_in_the_same_drain_as_a_login_is_listed_once() {
    let mut rig = Rig::new(cfg(), &["w", "y"]);
    let w = rig.login("w", Status::Online);
    rig.take(w);
    rig.deferred = Some(Vec::new());
    let x = rig.hello();
    rig.frame(
        x,
        ClientMsg::Register {
            user: user("newbie"),
            password: "long enough".into(),
        },
    );
    let y = rig.login("y", Status::Online);
    rig.take(y);
    // Both results handled before the host drains.
    let waiting = rig.deferred.take().unwrap();
    for (id, result) in waiting {
        rig.server.handle_storage(rig.now, id, result);
    }
    rig.pump();
    let got = rig.take(y);
    let newbie_mentions = got
        .iter()
        .map(|m| match m {
            ServerMsg::PresenceSnapshot { entries } | ServerMsg::PresenceDiff { entries } => {
                entries.iter().filter(|e| e.user == user("newbie")).count()
            }
            _ => 0,
        })
        .sum::<usize>();
    assert_eq!(newbie_mentions, 1, "{got:?}");
}

#[test]
fn a_connection_the_host_aborts_ends_its_session_like_any_other() {
    let mut rig = Rig::new(cfg(), &["w", "slow"]);
    let w = rig.login("w", Status::Online);
    let slow = rig.login("slow", Status::Online);
    rig.take(w);
    rig.server
        .handle_aborted(rig.now, slow, CloseReason::SlowReader);
    rig.pump();
    assert_eq!(
        diffs(&rig.take(w)),
        vec![&diff(&[("slow", Presence::Offline)])]
    );
    assert!(rig.events.iter().any(|e| matches!(
        e,
        crate::server::ServerEvent::SessionEnded {
            reason: crate::server::SessionEnd::Closed(CloseReason::SlowReader),
            ..
        }
    )));
}

#[test]
fn a_flooding_connection_is_cut_while_a_steady_one_is_not() {
    use crate::config::FrameRate;
    let limited = ServerConfig {
        frame_rate: FrameRate {
            per_second: 10,
            burst: 5,
        },
        ..cfg()
    };
    let mut rig = Rig::new(limited, &["flood", "calm"]);
    let flood = rig.login("flood", Status::Online);
    let calm = rig.login("calm", Status::Online);
    rig.advance(Duration::from_secs(1));
    for nonce in 0..20 {
        rig.frame(flood, ClientMsg::Ping { nonce });
    }
    assert_eq!(rig.closed.get(&flood), Some(&CloseReason::Flooding));
    for nonce in 0..50 {
        rig.advance(Duration::from_millis(100));
        rig.frame(calm, ClientMsg::Ping { nonce });
    }
    assert!(!rig.closed.contains_key(&calm));
}

fn throttled() -> ServerConfig {
    ServerConfig {
        login_throttle: crate::config::LoginThrottle {
            free_attempts: 2,
            account_free_attempts: 2,
            address_free_attempts: 2,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
        },
        ..cfg()
    }
}

fn try_login(rig: &mut Rig, conn: crate::ids::ConnId, name: &str, password: &str) -> ErrorCodeOrOk {
    rig.take(conn);
    rig.frame(
        conn,
        ClientMsg::Login {
            user: user(name),
            credential: crate::message::Credential::Password(password.into()),
            status: Status::Online,
        },
    );
    let answer = rig
        .take(conn)
        .into_iter()
        .find(|m| !matches!(m, ServerMsg::Throttled { .. }));
    match answer {
        Some(ServerMsg::LoginOk { .. }) => Ok(()),
        Some(ServerMsg::Error { code, .. }) => Err(code),
        other => panic!("unexpected {other:?}"),
    }
}

type ErrorCodeOrOk = Result<(), ErrorCode>;

#[test]
fn password_guessing_on_a_user_meets_doubling_delays() {
    let mut rig = Rig::new(throttled(), &["victim"]);
    let good = crate::testkit::rig::PASSWORD;
    let c = rig.hello();
    for _ in 0..2 {
        assert_eq!(
            try_login(&mut rig, c, "victim", "guess guess"),
            Err(ErrorCode::BadCredentials)
        );
    }
    // Two free failures, and the second starts the delay: blocked for 1 s now, even the
    // right password is refused unchecked.
    assert_eq!(
        try_login(&mut rig, c, "victim", good),
        Err(ErrorCode::RateLimited)
    );
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, ServerEvent::LoginThrottled { .. }))
    );
    assert!(
        rig.events
            .iter()
            .any(|e| matches!(e, ServerEvent::LoginFailed { failures: 2, .. }))
    );
    rig.advance(Duration::from_millis(1000));
    assert_eq!(
        try_login(&mut rig, c, "victim", "guess again"),
        Err(ErrorCode::BadCredentials)
    );
    // The third failure doubles the delay.
    rig.advance(Duration::from_millis(1999));
    assert_eq!(
        try_login(&mut rig, c, "victim", good),
        Err(ErrorCode::RateLimited)
    );
    rig.advance(Duration::from_millis(1));
    assert_eq!(try_login(&mut rig, c, "victim", good), Ok(()));
}

#[test]
fn one_address_guessing_across_users_is_throttled_and_others_are_not() {
    let mut rig = Rig::new(throttled(), &["a", "b", "c", "d"]);
    let attacker = Some("192.0.2.7".parse().unwrap());
    let bystander = Some("192.0.2.8".parse().unwrap());
    let c = rig.open_from(attacker);
    rig.frame(
        c,
        ClientMsg::Hello {
            magic: MAGIC,
            version: 1,
            client: String::new(),
        },
    );
    for name in ["a", "b"] {
        assert_eq!(
            try_login(&mut rig, c, name, "guess guess"),
            Err(ErrorCode::BadCredentials)
        );
    }
    assert_eq!(
        try_login(&mut rig, c, "d", "guess guess"),
        Err(ErrorCode::RateLimited)
    );
    let other = rig.open_from(bystander);
    rig.frame(
        other,
        ClientMsg::Hello {
            magic: MAGIC,
            version: 1,
            client: String::new(),
        },
    );
    assert_eq!(
        try_login(&mut rig, other, "d", crate::testkit::rig::PASSWORD),
        Ok(())
    );
}

/// Resume tokens are not guessable, so they neither meet nor feed the throttle: a guesser
/// behind the same address (an office NAT) does not block the others' reconnects.
#[test]
fn a_throttled_address_still_takes_resume_tokens() {
    let mut rig = Rig::new(throttled(), &["a", "b", "victim"]);
    let office = Some("192.0.2.7".parse().unwrap());
    let hello = |rig: &mut Rig| {
        let c = rig.open_from(office);
        rig.frame(
            c,
            ClientMsg::Hello {
                magic: MAGIC,
                version: 1,
                client: String::new(),
            },
        );
        c
    };
    let device = hello(&mut rig);
    rig.take(device);
    rig.frame(
        device,
        ClientMsg::Login {
            user: user("victim"),
            credential: crate::message::Credential::Password(crate::testkit::rig::PASSWORD.into()),
            status: Status::Online,
        },
    );
    let Some(ServerMsg::LoginOk { resume_token, .. }) = rig.take(device).into_iter().next() else {
        panic!("the victim logs in")
    };
    rig.close(device);

    let token_login = |rig: &mut Rig, token: Vec<u8>| {
        let c = hello(rig);
        rig.take(c);
        rig.frame(
            c,
            ClientMsg::Login {
                user: user("victim"),
                credential: crate::message::Credential::Token(token),
                status: Status::Online,
            },
        );
        rig.take(c).into_iter().next()
    };
    // Failed token logins do not count against the address.
    for _ in 0..5 {
        let answer = token_login(&mut rig, b"stale".to_vec());
        assert!(
            matches!(
                answer,
                Some(ServerMsg::Error {
                    code: ErrorCode::BadCredentials,
                    ..
                })
            ),
            "{answer:?}"
        );
    }
    let guesser = hello(&mut rig);
    assert_eq!(
        try_login(&mut rig, guesser, "a", "guess guess"),
        Err(ErrorCode::BadCredentials),
        "five failed token logins left the address's count alone"
    );
    assert_eq!(
        try_login(&mut rig, guesser, "b", "guess guess"),
        Err(ErrorCode::BadCredentials)
    );
    assert_eq!(
        try_login(&mut rig, guesser, "victim", crate::testkit::rig::PASSWORD),
        Err(ErrorCode::RateLimited),
        "the address is throttled for passwords"
    );
    let answer = token_login(&mut rig, resume_token);
    assert!(
        matches!(answer, Some(ServerMsg::LoginOk { .. })),
        "a token login from the throttled address: {answer:?}"
    );
}

#[test]
fn a_session_can_only_act_as_its_own_user() {
    // The protocol names no acting user: every request acts as the session's. What a
    // session can still try is to touch what belongs to others.
    let mut rig = Rig::new(cfg(), &["alice", "mallory"]);
    let alice = rig.login("alice", Status::Online);
    let mallory = rig.login("mallory", Status::Online);
    rig.frame(
        alice,
        ClientMsg::Send {
            id: 1,
            to: user("alice"),
            body: "note to self".into(),
            attachment: None,
        },
    );
    rig.take(alice);
    // Acknowledging someone else's message does not take it from their mailbox.
    rig.frame(mallory, ClientMsg::Ack { seqs: vec![1] });
    assert_eq!(rig.store.borrow().undelivered(&user("alice")), 1);
    // Another user's conversations are not readable through History.
    rig.take(mallory);
    rig.frame(
        mallory,
        ClientMsg::History {
            with: user("alice"),
            before: None,
            limit: 10,
        },
    );
    assert_eq!(
        rig.take(mallory),
        vec![ServerMsg::History {
            with: user("alice"),
            items: vec![]
        }]
    );
    // Status changes touch only the sender's own presence.
    rig.take(alice);
    rig.frame(
        mallory,
        ClientMsg::SetStatus {
            status: Status::Away,
        },
    );
    assert_eq!(
        diffs(&rig.take(alice)),
        vec![&diff(&[("mallory", Presence::Away)])]
    );
    // And admin queries stay closed.
    rig.take(mallory);
    rig.frame(mallory, ClientMsg::AdminWho);
    assert!(matches!(
        rig.take(mallory)[..],
        [ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }]
    ));
}

#[test]
fn history_loads_in_flight_are_bounded_per_connection_and_in_all() {
    use super::messaging::{MAX_HISTORY_LOADS, MAX_HISTORY_LOADS_PER_CONN};
    let history = ClientMsg::History {
        with: user("b"),
        before: None,
        limit: 500,
    };
    let busy = ServerMsg::Error {
        request: RequestKind::History,
        code: ErrorCode::Busy,
        id: None,
    };
    let per_conn = usize::from(MAX_HISTORY_LOADS_PER_CONN);
    let names: Vec<String> = (0..=MAX_HISTORY_LOADS / per_conn)
        .map(|i| format!("u{i}"))
        .collect();
    let mut users: Vec<&str> = names.iter().map(String::as_str).collect();
    users.push("b");
    let mut rig = Rig::new(cfg(), &users);
    let conns: Vec<crate::ids::ConnId> = names
        .iter()
        .map(|name| {
            let c = rig.login(name, Status::Online);
            rig.take(c);
            c
        })
        .collect();
    for &c in &conns {
        rig.take(c);
    }
    rig.deferred = Some(Vec::new());

    // A pipelining connection gets its share; the rest is refused, not queued.
    let a = conns[0];
    for _ in 0..per_conn + 3 {
        rig.frame(a, history.clone());
    }
    assert_eq!(rig.take(a), vec![busy.clone(); 3]);
    // An answer frees a place.
    rig.complete(0);
    assert!(matches!(rig.take(a)[..], [ServerMsg::History { .. }]));
    rig.frame(a, history.clone());
    assert_eq!(rig.take(a), vec![]);
    rig.frame(a, history.clone());
    assert_eq!(rig.take(a), vec![busy.clone()]);

    // Many connections together are bounded too.
    let mut in_flight = per_conn;
    let mut next = conns[1..].iter();
    while in_flight < MAX_HISTORY_LOADS {
        let c = *next.next().unwrap();
        for _ in 0..per_conn {
            rig.frame(c, history.clone());
        }
        assert_eq!(rig.take(c), vec![]);
        in_flight += per_conn;
    }
    let late = *next.next().unwrap();
    rig.frame(late, history.clone());
    assert_eq!(rig.take(late), vec![busy.clone()]);
    // A closed connection's loads count until storage answers them.
    rig.close(a);
    rig.take(late);
    rig.frame(late, history.clone());
    assert_eq!(rig.take(late), vec![busy]);
    rig.complete(0);
    rig.complete(0);
    rig.frame(late, history);
    assert_eq!(rig.take(late), vec![]);
}

#[test]
fn a_large_mailbox_goes_out_page_by_page_as_the_client_acks() {
    let paged = ServerConfig {
        mailbox_page: 3,
        ..cfg()
    };
    let mut rig = Rig::new(paged, &["a", "b"]);
    let a = rig.login("a", Status::Online);
    for id in 0..7 {
        rig.frame(
            a,
            ClientMsg::Send {
                id,
                to: user("b"),
                body: format!("m{id}"),
                attachment: None,
            },
        );
    }
    let b = rig.login("b", Status::Online);
    let seqs = |msgs: &[ServerMsg]| -> Vec<u64> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMsg::Deliver(d) => Some(d.seq),
                _ => None,
            })
            .collect()
    };
    let got = rig.take(b);
    assert_eq!(seqs(&got), vec![1, 2, 3]);
    assert!(
        !got.iter()
            .any(|m| matches!(m, ServerMsg::OfflineDone { .. }))
    );
    // The count of all seven comes before the first page, not only the page's three.
    let waiting = got
        .iter()
        .position(|m| *m == ServerMsg::OfflineWaiting { count: 7 })
        .expect("OfflineWaiting { count: 7 }");
    let first = got
        .iter()
        .position(|m| matches!(m, ServerMsg::Deliver(_)))
        .expect("a Deliver");
    assert!(waiting < first, "{got:?}");
    // A message arriving meanwhile comes in its turn, once.
    rig.frame(
        a,
        ClientMsg::Send {
            id: 7,
            to: user("b"),
            body: "late".into(),
            attachment: None,
        },
    );
    assert_eq!(seqs(&rig.take(b)), Vec::<u64>::new());
    // Acking only part of the page does not move on; acking its last seq does.
    rig.frame(b, ClientMsg::Ack { seqs: vec![1, 2] });
    assert!(rig.take(b).is_empty());
    rig.frame(b, ClientMsg::Ack { seqs: vec![3] });
    assert_eq!(seqs(&rig.take(b)), vec![4, 5, 6]);
    rig.frame(
        b,
        ClientMsg::Ack {
            seqs: vec![4, 5, 6],
        },
    );
    let got = rig.take(b);
    assert_eq!(seqs(&got), vec![7, 8]);
    assert_eq!(got.last(), Some(&ServerMsg::OfflineDone { count: 8 }));
    rig.frame(
        a,
        ClientMsg::Send {
            id: 8,
            to: user("b"),
            body: "live".into(),
            attachment: None,
        },
    );
    assert_eq!(seqs(&rig.take(b)), vec![9]);
}

#[test]
fn a_mailbox_page_is_cut_by_bytes_but_always_holds_one_message() {
    use crate::message::{Attachment, Delivery};
    use crate::storage::MailboxPage;
    let big = |seq| Delivery {
        seq,
        from: user("a"),
        id: seq,
        body: String::new(),
        attachment: Some(Attachment {
            mime: "image/png".into(),
            name: "x.png".into(),
            data: vec![0; 600],
        }),
        sent_at_ms: 0,
    };
    let page = MailboxPage::take((1..=5).map(big), 100, 1000);
    assert_eq!(page.messages.len(), 1);
    assert!(page.more);
    let page = MailboxPage::take((1..=5).map(big), 100, 100);
    assert_eq!(
        page.messages.len(),
        1,
        "one message even above the byte budget"
    );
    let page = MailboxPage::take((1..=2).map(big), 100, 10_000);
    assert_eq!(page.messages.len(), 2);
    assert!(!page.more);
}

/// How a session can end, each through the path that really produces it.
#[derive(Debug, Clone, Copy)]
enum End {
    /// The host reports it cut the connection for this reason.
    Aborted(CloseReason),
    /// The client sends a frame that does not decode.
    Garbage,
    /// The client falls silent past the heartbeat timeout.
    Silence,
    /// The peer closes or resets the connection.
    ConnectionLost,
    /// The client logs out.
    Logout,
}

/// The grace is for clients that did not mean to leave: their connection died, or the server
/// cut it for something a reconnect fixes. Exhaustive, so a new reason must be placed here.
fn died_without_meaning_to(reason: CloseReason) -> bool {
    match reason {
        CloseReason::HeartbeatTimeout
        | CloseReason::FrameTooLarge
        | CloseReason::Malformed
        | CloseReason::SlowReader
        | CloseReason::Flooding => true,
        CloseReason::HandshakeTimeout
        | CloseReason::Replaced
        | CloseReason::LoggedOut
        | CloseReason::BadHandshake
        | CloseReason::UnsupportedVersion
        | CloseReason::ServerFull
        | CloseReason::ServerShutdown
        | CloseReason::NodeFenced
        | CloseReason::Kicked
        | CloseReason::Banned => false,
    }
}

/// Ends `u`'s only session by `end` at a 5 s grace, keeping watcher `w` alive, and returns
/// whether `w` was told `u` is offline at once (`Some(false)`), only when the grace ran out
/// (`Some(true)`), or never (`None`).
fn offline_after(end: End) -> Option<bool> {
    let grace = Duration::from_secs(5);
    let mut rig = Rig::new(
        ServerConfig {
            offline_grace: grace,
            ..cfg()
        },
        &["w", "u"],
    );
    let w = rig.login("w", Status::Online);
    let u = rig.login("u", Status::Online);
    rig.take(w);
    let keep_alive = |rig: &mut Rig, seconds: u64| {
        for _ in 0..seconds {
            rig.advance(Duration::from_secs(1));
            rig.frame(w, ClientMsg::Ping { nonce: 0 });
        }
    };
    match end {
        End::Aborted(reason) => {
            rig.server.handle_aborted(rig.now, u, reason);
            rig.pump();
        }
        End::Garbage => {
            rig.server.handle_frame(rig.now, u, &[0xff, 0xff, 0xff]);
            rig.pump();
            assert_eq!(rig.closed[&u], CloseReason::Malformed);
        }
        End::Silence => {
            keep_alive(&mut rig, 3);
            assert_eq!(rig.closed[&u], CloseReason::HeartbeatTimeout);
        }
        End::ConnectionLost => rig.close(u),
        End::Logout => rig.frame(u, ClientMsg::Logout),
    }
    let offline = vec![diff(&[("u", Presence::Offline)])];
    let now: Vec<ServerMsg> = diffs(&rig.take(w)).into_iter().cloned().collect();
    if now == offline {
        return Some(false);
    }
    assert!(now.is_empty(), "{end:?}: {now:?}");
    keep_alive(&mut rig, grace.as_secs());
    let later: Vec<ServerMsg> = diffs(&rig.take(w)).into_iter().cloned().collect();
    if later.is_empty() {
        return None;
    }
    assert_eq!(later, offline, "{end:?}");
    Some(true)
}

#[test]
fn every_close_reason_either_waits_out_the_grace_or_announces_at_once() {
    for reason in CloseReason::ALL {
        assert_eq!(
            offline_after(End::Aborted(reason)),
            Some(died_without_meaning_to(reason)),
            "{reason:?}"
        );
    }
    // The paths the core takes itself agree with the table.
    assert_eq!(offline_after(End::Garbage), Some(true));
    assert_eq!(offline_after(End::Silence), Some(true));
    assert_eq!(offline_after(End::ConnectionLost), Some(true));
    assert_eq!(offline_after(End::Logout), Some(false));
}

/// Under `multi` a device still paging its mailbox gets a message stored after its login even
/// when a sibling device acks it first; an offline message the sibling acked before the
/// page that held it was read is the sibling's (History), as it was before the fix too.
#[test]
fn under_multi_a_device_paging_its_mailbox_gets_what_a_sibling_acked_meanwhile() {
    let mut rig = Rig::new(
        ServerConfig {
            duplicate_login: DuplicateLogin::Multi,
            mailbox_page: 1,
            ..cfg()
        },
        &["u", "v"],
    );
    let u = rig.login("u", Status::Online);
    let send = |rig: &mut Rig, id: u64| {
        rig.frame(
            u,
            ClientMsg::Send {
                id,
                to: user("v"),
                body: format!("m{id}"),
                attachment: None,
            },
        );
    };
    let seqs = |msgs: Vec<ServerMsg>| -> Vec<u64> {
        msgs.into_iter()
            .filter_map(|m| match m {
                ServerMsg::Deliver(d) => Some(d.seq),
                _ => None,
            })
            .collect()
    };
    send(&mut rig, 1);
    send(&mut rig, 2);
    let phone = rig.login("v", Status::Online);
    let laptop = rig.login("v", Status::Online);
    assert_eq!(seqs(rig.take(phone)), [1]);
    assert_eq!(seqs(rig.take(laptop)), [1]);
    // Stored while both wait for the ack of their first page: each page brings it in turn.
    send(&mut rig, 3);
    for seq in 1..=3 {
        rig.frame(phone, ClientMsg::Ack { seqs: vec![seq] });
        let next: Vec<u64> = if seq < 3 { vec![seq + 1] } else { vec![] };
        assert_eq!(seqs(rig.take(phone)), next);
    }
    assert_eq!(rig.store.borrow().undelivered(&user("v")), 0);
    rig.frame(laptop, ClientMsg::Ack { seqs: vec![1] });
    assert_eq!(
        seqs(rig.take(laptop)),
        [3],
        "2 was waiting at its login and is acked"
    );
}

#[test]
fn under_multi_a_new_device_status_is_told_to_the_others_not_to_itself() {
    let mut rig = Rig::new(
        ServerConfig {
            duplicate_login: DuplicateLogin::Multi,
            ..cfg()
        },
        &["u"],
    );
    let phone = rig.login("u", Status::Online);
    let laptop = rig.login("u", Status::Online);
    let own = |msgs: Vec<ServerMsg>| -> Vec<ServerMsg> {
        msgs.into_iter()
            .filter(|m| matches!(m, ServerMsg::OwnStatus { .. }))
            .collect()
    };
    assert!(
        own(rig.take(phone)).is_empty(),
        "same status, nothing to say"
    );
    assert!(own(rig.take(laptop)).is_empty());
    let desk = rig.login("u", Status::Busy);
    let told = vec![ServerMsg::OwnStatus {
        status: Status::Busy,
    }];
    assert_eq!(own(rig.take(phone)), told);
    assert_eq!(own(rig.take(laptop)), told);
    assert!(
        own(rig.take(desk)).is_empty(),
        "the device that set it learns it from its LoginOk"
    );
}

#[test]
fn registrations_are_throttled_per_address_and_logged() {
    use crate::config::RegisterThrottle;
    let cfg = ServerConfig {
        register_throttle: RegisterThrottle {
            burst: 2,
            every: Duration::from_secs(60),
        },
        // The connections stay up while the allowance refills.
        heartbeat_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    };
    let mut rig = Rig::new(cfg, &[]);
    let script: std::net::IpAddr = "192.0.2.7".parse().unwrap();
    let office: std::net::IpAddr = "192.0.2.8".parse().unwrap();
    let from = |rig: &mut Rig, addr| {
        let c = rig.open_from(Some(addr));
        rig.frame(
            c,
            ClientMsg::Hello {
                magic: MAGIC,
                version: 1,
                client: String::new(),
            },
        );
        rig.take(c);
        c
    };
    let register = |rig: &mut Rig, c, name: &str| {
        rig.frame(
            c,
            ClientMsg::Register {
                user: user(name),
                password: "long enough".into(),
            },
        );
        rig.take(c)
    };
    let registered = |name: &str| vec![ServerMsg::Registered { user: user(name) }];
    let limited = vec![ServerMsg::Error {
        request: RequestKind::Register,
        code: ErrorCode::RateLimited,
        id: None,
    }];
    // The burst, over any number of connections from the address; then refused.
    let c1 = from(&mut rig, script);
    assert_eq!(register(&mut rig, c1, "s1"), registered("s1"));
    assert!(rig.events.contains(&ServerEvent::Registered {
        user: user("s1"),
        addr: Some(script)
    }));
    let c2 = from(&mut rig, script);
    assert_eq!(register(&mut rig, c2, "s2"), registered("s2"));
    assert_eq!(register(&mut rig, c2, "s3"), limited);
    assert!(rig.events.iter().any(|e| matches!(
        e,
        ServerEvent::RegisterThrottled { addr, .. } if *addr == script
    )));
    // Refusals that cost nothing (a taken name) do not use the allowance up, nor do they
    // tell a throttled address anything new.
    assert_eq!(
        register(&mut rig, c2, "s1"),
        vec![ServerMsg::Error {
            request: RequestKind::Register,
            code: ErrorCode::UserTaken,
            id: None,
        }]
    );
    // Another address has its own allowance.
    let o = from(&mut rig, office);
    assert_eq!(register(&mut rig, o, "o1"), registered("o1"));
    // One more per interval.
    rig.advance(Duration::from_secs(59));
    assert_eq!(register(&mut rig, c2, "s3"), limited);
    rig.advance(Duration::from_secs(1));
    assert_eq!(register(&mut rig, c2, "s3"), registered("s3"));
    assert_eq!(register(&mut rig, c2, "s4"), limited);
}

/// PROTOCOL.md §10.5: a script's or bot's login (`AgentLogin`) is not a device. Under either
/// duplicate-login policy it neither replaces, nor greys, nor re-statuses the user's
/// sessions, receives none of the user's messages, and its end announces nothing.
#[test]
fn an_agent_login_leaves_the_users_devices_alone() {
    for policy in [DuplicateLogin::Replace, DuplicateLogin::Multi] {
        let mut rig = Rig::new(
            ServerConfig {
                duplicate_login: policy,
                admins: [user("u")].into(),
                ..cfg()
            },
            &["w", "u"],
        );
        let w = rig.login("w", Status::Online);
        let device = rig.login("u", Status::Busy);
        rig.take(w);
        rig.take(device);

        let agent = rig.agent("u");
        match &rig.take(agent)[..] {
            [
                ServerMsg::Welcome { .. },
                ServerMsg::LoginOk {
                    status: Status::Invisible,
                    resume_token,
                    ..
                },
                // A script may want the user's groups, as it is told the contacts.
                ServerMsg::Groups { .. },
            ] => assert!(resume_token.is_empty(), "an agent gets no token"),
            other => panic!("{policy:?}: unexpected {other:?}"),
        }
        assert!(
            !rig.closed.contains_key(&device),
            "{policy:?}: not replaced"
        );
        assert_eq!(
            rig.take(device),
            vec![],
            "{policy:?}: the device is told nothing"
        );
        assert!(
            diffs(&rig.take(w)).is_empty(),
            "{policy:?}: watchers see nothing"
        );
        assert_eq!(rig.server.sessions_of(&user("u")).len(), 1);

        // It can send as the user; the user's messages still go to the device only.
        rig.frame(
            agent,
            ClientMsg::Send {
                id: 7,
                to: user("w"),
                body: "from a script".into(),
                attachment: None,
            },
        );
        assert!(rig.take(agent).contains(&ServerMsg::Sent { id: 7, seq: 1 }));
        assert!(
            rig.take(w)
                .iter()
                .any(|m| matches!(m, ServerMsg::Deliver(d) if d.from == user("u")))
        );
        rig.frame(
            w,
            ClientMsg::Send {
                id: 1,
                to: user("u"),
                body: "hi".into(),
                attachment: None,
            },
        );
        assert!(
            rig.take(device)
                .iter()
                .any(|m| matches!(m, ServerMsg::Deliver(d) if d.id == 1))
        );
        assert!(
            rig.take(agent).is_empty(),
            "{policy:?}: no delivery to an agent"
        );

        // An admin query from an agent; u shows with its one device session.
        rig.frame(agent, ClientMsg::AdminWho);
        match &rig.take(agent)[..] {
            [ServerMsg::Who { users, .. }] => {
                let u = users
                    .iter()
                    .find(|e| e.user == user("u"))
                    .expect("u listed");
                assert_eq!(u.sessions.len(), 1, "{policy:?}: {u:?}");
                assert_eq!(u.status, Status::Busy);
            }
            other => panic!("{policy:?}: unexpected {other:?}"),
        }

        rig.frame(agent, ClientMsg::Logout);
        assert_eq!(rig.closed[&agent], CloseReason::LoggedOut);
        assert!(
            diffs(&rig.take(w)).is_empty(),
            "{policy:?}: its end is silent"
        );
        assert!(!rig.closed.contains_key(&device));
        assert_eq!(rig.server.stats().online_users, 2);
    }
}

/// An agent of an offline user shows nobody online and leaves the mailbox for the user.
#[test]
fn an_agent_of_an_offline_user_keeps_it_offline_and_its_mailbox_whole() {
    let mut rig = Rig::new(cfg(), &["w", "u"]);
    let w = rig.login("w", Status::Online);
    rig.frame(
        w,
        ClientMsg::Send {
            id: 1,
            to: user("u"),
            body: "for later".into(),
            attachment: None,
        },
    );
    rig.take(w);
    let agent = rig.agent("u");
    let got = rig.take(agent);
    assert!(
        !got.iter().any(|m| matches!(
            m,
            ServerMsg::Deliver(_)
                | ServerMsg::OfflineDone { .. }
                | ServerMsg::PresenceSnapshot { .. }
        )),
        "{got:?}"
    );
    assert!(diffs(&rig.take(w)).is_empty());
    assert_eq!(rig.server.stats().online_users, 1);
    rig.close(agent);
    assert!(diffs(&rig.take(w)).is_empty());
    assert_eq!(rig.store.borrow().undelivered(&user("u")), 1);
}

/// What only a device may do is refused to an agent, which stays connected.
#[test]
fn an_agent_cannot_set_a_status_change_contacts_or_ack() {
    let mut rig = Rig::new(cfg(), &["w", "u"]);
    let agent = rig.agent("u");
    rig.take(agent);
    let refused = [
        ClientMsg::SetStatus {
            status: Status::Online,
        },
        ClientMsg::AddContact { user: user("w") },
        ClientMsg::RemoveContact { user: user("w") },
        ClientMsg::ChangeContacts {
            add: vec![user("w")],
            remove: vec![],
        },
        ClientMsg::Ack { seqs: vec![1] },
    ];
    for msg in refused {
        let request = msg.kind();
        rig.frame(agent, msg);
        assert_eq!(
            rig.take(agent),
            vec![ServerMsg::Error {
                request,
                code: ErrorCode::Forbidden,
                id: None
            }]
        );
    }
    rig.frame(
        agent,
        ClientMsg::AgentLogin {
            user: user("u"),
            password: crate::testkit::rig::PASSWORD.into(),
        },
    );
    assert_eq!(
        rig.take(agent),
        vec![ServerMsg::Error {
            request: RequestKind::AgentLogin,
            code: ErrorCode::AlreadyLoggedIn,
            id: None
        }]
    );
    assert!(!rig.closed.contains_key(&agent));
    assert_eq!(rig.server.stats().online_users, 0);
}

/// Names are one whatever their case: `Alice` is taken once `alice` exists, and a login as
/// `ALICE` is alice's, under the folded name.
#[test]
fn user_names_are_case_insensitive() {
    let mut rig = Rig::new(cfg(), &["alice"]);
    let c = rig.hello();
    rig.take(c);
    rig.frame(
        c,
        ClientMsg::Register {
            user: user("Alice"),
            password: "long enough".into(),
        },
    );
    assert_eq!(
        rig.take(c),
        vec![ServerMsg::Error {
            request: RequestKind::Register,
            code: ErrorCode::UserTaken,
            id: None
        }]
    );
    let a = rig.login("ALICE", Status::Online);
    assert!(
        rig.take(a)
            .iter()
            .any(|m| matches!(m, ServerMsg::LoginOk { user: u, .. } if u.as_str() == "alice"))
    );
    assert_eq!(rig.server.sessions_of(&user("alice")).len(), 1);
}

/// With registration closed, `Register` is `Forbidden` before anything is checked or spent,
/// and logins go on as before.
#[test]
fn closed_registration_refuses_register_and_keeps_logins() {
    let mut rig = Rig::new(
        ServerConfig {
            registration: crate::config::Registration::Closed,
            ..cfg()
        },
        &["alice"],
    );
    let c = rig.hello();
    rig.take(c);
    rig.frame(
        c,
        ClientMsg::Register {
            user: user("newcomer"),
            password: "long enough".into(),
        },
    );
    assert_eq!(
        rig.take(c),
        vec![ServerMsg::Error {
            request: RequestKind::Register,
            code: ErrorCode::Forbidden,
            id: None
        }]
    );
    assert!(
        !rig.events
            .iter()
            .any(|e| matches!(e, ServerEvent::Registered { .. }))
    );
    let a = rig.login("alice", Status::Online);
    assert!(
        rig.take(a)
            .iter()
            .any(|m| matches!(m, ServerMsg::LoginOk { .. }))
    );
}

/// One colleague mistyping behind an office NAT: after the pair's allowance that user, from
/// that address, is refused with the wait (`Throttled` before the `Error`); colleagues at the
/// same address log in, and so does the user from elsewhere. Only the address-wide allowance,
/// far larger, stops the address as a whole.
#[test]
fn an_office_behind_one_address_is_not_locked_out_by_one_mistyping_colleague() {
    let mut rig = Rig::new(
        ServerConfig {
            login_throttle: crate::config::LoginThrottle {
                free_attempts: 2,
                account_free_attempts: 5,
                address_free_attempts: 6,
                base_delay: Duration::from_secs(12),
                max_delay: Duration::from_secs(60),
                forget_after: Duration::from_secs(600),
            },
            ..cfg()
        },
        &["a", "b", "c", "d"],
    );
    let office = Some("192.0.2.7".parse().unwrap());
    let home = Some("192.0.2.8".parse().unwrap());
    let at = |rig: &mut Rig, addr| {
        let c = rig.open_from(addr);
        rig.frame(
            c,
            ClientMsg::Hello {
                magic: MAGIC,
                version: 1,
                client: String::new(),
            },
        );
        c
    };
    let c = at(&mut rig, office);
    for _ in 0..2 {
        assert_eq!(
            try_login(&mut rig, c, "a", "mistyped!"),
            Err(ErrorCode::BadCredentials)
        );
    }
    rig.take(c);
    rig.frame(
        c,
        ClientMsg::Login {
            user: user("a"),
            credential: crate::message::Credential::Password(crate::testkit::rig::PASSWORD.into()),
            status: Status::Online,
        },
    );
    assert_eq!(
        rig.take(c),
        vec![
            ServerMsg::Throttled {
                request: RequestKind::Login,
                retry_after_ms: 12_000
            },
            ServerMsg::Error {
                request: RequestKind::Login,
                code: ErrorCode::RateLimited,
                id: None
            }
        ]
    );
    let colleague = at(&mut rig, office);
    assert_eq!(
        try_login(&mut rig, colleague, "b", crate::testkit::rig::PASSWORD),
        Ok(())
    );
    let away = at(&mut rig, home);
    assert_eq!(
        try_login(&mut rig, away, "a", crate::testkit::rig::PASSWORD),
        Ok(())
    );
    // Four more failures from the office, on two other names (two each, the pair's
    // allowance): the address's allowance of six is spent, and now the whole address waits.
    let guesser = at(&mut rig, office);
    for name in ["c", "c", "d", "d"] {
        assert_eq!(
            try_login(&mut rig, guesser, name, "guess"),
            Err(ErrorCode::BadCredentials)
        );
    }
    let late = at(&mut rig, office);
    assert_eq!(
        try_login(&mut rig, late, "b", crate::testkit::rig::PASSWORD),
        Err(ErrorCode::RateLimited)
    );
}

/// The counters behind `/metrics` follow what happened: logins, failures, frames by kind,
/// closes by reason, connections lost.
#[test]
fn counters_follow_what_happened() {
    let mut rig = Rig::new(cfg(), &["w", "u"]);
    let w = rig.login("w", Status::Online);
    let u = rig.login("u", Status::Online);
    let agent = rig.agent("u");
    let c = rig.hello();
    assert_eq!(
        try_login(&mut rig, c, "u", "wrong password"),
        Err(ErrorCode::BadCredentials)
    );
    rig.frame(
        u,
        ClientMsg::Send {
            id: 1,
            to: user("w"),
            body: "hi".into(),
            attachment: None,
        },
    );
    rig.frame(u, ClientMsg::Logout);
    rig.close(agent);
    rig.advance(Duration::from_secs(4));
    let counters = rig.server.counters().clone();
    assert_eq!(counters.logins, 2);
    assert_eq!(counters.agent_logins, 1);
    assert_eq!(counters.logins_failed, 1);
    assert_eq!(counters.sent("Sent"), 1);
    assert_eq!(counters.sent("Deliver"), 1);
    assert!(counters.sent("PresenceDiff") >= 1, "{counters:?}");
    assert_eq!(counters.connections_lost, 1);
    let closed = |reason| {
        counters
            .closes
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(closed(CloseReason::LoggedOut), 1);
    // w and the failed login's connection went silent past the timeout.
    assert_eq!(closed(CloseReason::HeartbeatTimeout), 2);
    assert!(counters.frames_in >= 8 && counters.bytes_in > counters.frames_in);
    let out: u64 = counters.frames_out_by_kind().map(|(_, n)| n).sum();
    assert!(out > 0 && counters.bytes_out > out);
    let _ = (w, c);
}

#[test]
fn acks_waiting_for_a_mark_go_before_the_sessions_next_write() {
    let mut rig = Rig::new(cfg(), &["a", "b"]);
    let a = rig.login("a", Status::Online);
    let b = rig.login("b", Status::Online);
    for id in 1..=2 {
        rig.frame(
            a,
            ClientMsg::Send {
                id,
                to: user("b"),
                body: format!("m{id}"),
                attachment: None,
            },
        );
    }
    rig.take(b);
    // The store applies each request at once; its answers wait.
    rig.deferred = Some(Vec::new());
    rig.frame(b, ClientMsg::Ack { seqs: vec![1] });
    rig.frame(b, ClientMsg::Ack { seqs: vec![2] });
    assert_eq!(
        rig.store.borrow().undelivered(&user("b")),
        1,
        "the second ack waits for the first mark's answer"
    );
    // b's next request is a write: the waiting ack is stored before it, so the answer to
    // it tells b that both acks are stored.
    rig.frame(b, ClientMsg::AddContact { user: user("a") });
    assert_eq!(rig.store.borrow().undelivered(&user("b")), 0);
    while rig.deferred.as_ref().is_some_and(|w| !w.is_empty()) {
        rig.complete(0);
    }
    rig.deferred = None;
    assert!(
        rig.take(b)
            .iter()
            .any(|m| matches!(m, ServerMsg::ContactsChanged { .. }))
    );
}

#[test]
fn a_history_page_is_halved_until_its_frame_fits_and_keeps_the_newest() {
    use crate::codec::decode;
    use crate::message::RoomDelivery;
    let items: Vec<RoomDelivery> = (0..8)
        .rev()
        .map(|seq| RoomDelivery {
            room: 1,
            seq,
            from: user("a"),
            id: seq,
            body: "x".repeat(1000),
            sent_at_ms: 0,
        })
        .collect();
    let frame = |items| ServerMsg::RoomHistory { room: 1, items };
    let fits = super::messaging::fitting_page(items.clone(), 4500, frame);
    assert!(fits.len() <= 4500);
    let ServerMsg::RoomHistory { items: kept, .. } = decode(&fits).unwrap() else {
        panic!("not a RoomHistory");
    };
    assert_eq!(kept, items[..4], "the newest four");
    // One item always goes, however large: the client must be able to page on.
    let one = super::messaging::fitting_page(items.clone(), 10, frame);
    let ServerMsg::RoomHistory { items: kept, .. } = decode(&one).unwrap() else {
        panic!("not a RoomHistory");
    };
    assert_eq!(kept.len(), 1);
}
