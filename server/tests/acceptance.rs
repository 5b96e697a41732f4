//! Acceptance tests: the whole server — core, tokio host, SQLite store, and for the crash
//! test the real binary — driven over loopback TCP the way clients use it, one behaviour per
//! test, each bounded in time.
//!
//! Timings (PROTOCOL.md §11): the servers here announce a 100 ms heartbeat interval; the
//! heartbeat timeout is 1 s, except where a test measures it (300 ms). `Live` clients ping
//! every half interval on their own, so only a peer told to go silent ever times out.
//! Latency figures are printed with `eprintln!` (see them with `--nocapture`).

mod live;

use breeze_core::client::{ClientConfig, ClientEvent, Mode};
use breeze_core::codec::{decode, encode_frame};
use breeze_core::message::{
    Attachment, ClientMsg, CloseReason, Credential, Delivery, ErrorCode, MAGIC, PROTOCOL_VERSION,
    Presence, RequestKind, ServerMsg, Status, WatchScope,
};
use breeze_core::{DuplicateLogin, UserId};
use breeze_testsupport::process::{ServerProcess, temp_db};
use breeze_testsupport::{WAIT, client_config, drive, user};
use breeze_transport_tokio::{ClientCommand, TcpConnector};
use live::{Live, announced, bounded, presence_in, says, start_server};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, timeout};

/// No in-process test may take longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(20);

fn error(request: RequestKind, code: ErrorCode) -> ServerMsg {
    ServerMsg::Error {
        request,
        code,
        id: None,
    }
}

/// A user name as any byte string on the wire: serde does not validate, so this is how a
/// client in another language can send a name the server must refuse.
fn wire_name(name: &str) -> UserId {
    let mut bytes = vec![u8::try_from(name.len()).unwrap()];
    bytes.extend_from_slice(name.as_bytes());
    decode(&bytes).unwrap()
}

fn send_msg(id: u64, to: &str, body: &str) -> ClientMsg {
    ClientMsg::Send {
        id,
        to: user(to),
        body: body.into(),
        attachment: None,
    }
}

// ---- 1. accounts ----

#[tokio::test]
async fn register_then_log_in_and_bad_credentials_never_say_whether_the_user_exists() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|_| {}).await;
        let addr = server.addr();

        let mut reg = Live::connect(addr).await;
        reg.register("alice").await;
        // Refusals at registration name their reason, and the connection stays usable.
        for (name, pw, code) in [
            (user("alice"), "another-password", ErrorCode::UserTaken),
            (
                wire_name("-alice"),
                "alice-password",
                ErrorCode::InvalidName,
            ),
            (
                wire_name("al ice"),
                "alice-password",
                ErrorCode::InvalidName,
            ),
            (user("bob"), "short", ErrorCode::InvalidPassword),
        ] {
            assert_eq!(
                reg.try_register(name.clone(), pw).await,
                error(RequestKind::Register, code),
                "registering {name:?}"
            );
        }

        // Wrong password, unknown user, a name that cannot exist: one and the same answer.
        let mut mallory = Live::connect(addr).await;
        let bad = error(RequestKind::Login, ErrorCode::BadCredentials);
        for (name, cred) in [
            ("alice", Credential::Password("wrong-password".into())),
            ("nobody", Credential::Password("nobody-password".into())),
            ("alice", Credential::Token(vec![0xde, 0xad, 0xbe, 0xef])),
        ] {
            let refused = mallory.try_login(name, cred, Status::Online).await;
            assert_eq!(refused.unwrap_err(), bad, "login as {name}");
        }
        mallory.send(&ClientMsg::Login {
            user: wire_name("no such name!"),
            credential: Credential::Password("whatever-password".into()),
            status: Status::Online,
        });
        assert_eq!(
            mallory.error_for(RequestKind::Login).await,
            ErrorCode::BadCredentials
        );

        // The same connection still logs in with the right password.
        let ok = mallory.login("alice", Status::Away).await;
        assert_eq!(ok.status, Status::Away);
        assert!(!ok.resume_token.is_empty(), "a resume token is issued");
        assert!(ok.contacts.is_empty());
        assert!(ok.snapshot.is_empty(), "alice is the only user");
        // The mailbox is read after LoginOk; OfflineDone ends it.
        mallory
            .recv_until("offline done", |m| {
                *m == ServerMsg::OfflineDone { count: 0 }
            })
            .await;

        // The resume token logs in instead of the password (and replaces that session).
        let mut again = Live::connect(addr).await;
        let resumed = again
            .try_login("alice", Credential::Token(ok.resume_token), Status::Online)
            .await
            .expect("the resume token is accepted");
        assert_eq!(resumed.status, Status::Online);
        mallory.expect_bye(CloseReason::Replaced).await;
        server.stop().await;
    })
    .await;
}

// ---- 2. duplicate logins ----

#[tokio::test]
async fn a_second_login_under_replace_closes_the_first_without_a_presence_flap() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|s| s.server.duplicate_login = DuplicateLogin::Replace).await;
        let addr = server.addr();
        let (mut watcher, _) = Live::signed_up(addr, "watcher").await;
        let (mut first, _) = Live::signed_up(addr, "alice").await;
        watcher
            .recv_until("alice online", |m| says(m, "alice", Presence::Online))
            .await;

        let mut second = Live::connect(addr).await;
        let ok = second.login("alice", Status::Online).await;
        assert_eq!(presence_in(&ok.snapshot, "watcher"), Some(Presence::Online));
        first.expect_bye(CloseReason::Replaced).await;

        // A visible change made by the new session is the first thing the watcher hears about
        // alice since she came online: no Offline, no second Online.
        second.send(&ClientMsg::SetStatus {
            status: Status::Busy,
        });
        second
            .recv_until("own status", |m| {
                *m == ServerMsg::OwnStatus {
                    status: Status::Busy,
                }
            })
            .await;
        let (_, heard) = watcher
            .collect_until("alice busy", |m| says(m, "alice", Presence::Busy))
            .await;
        assert_eq!(
            announced(&heard, "alice"),
            vec![Presence::Busy],
            "{heard:?}"
        );

        // Exactly one session of alice remains.
        let who = server.who().await;
        let alice: Vec<_> = who.iter().filter(|w| w.user.as_str() == "alice").collect();
        assert_eq!(alice.len(), 1, "{who:?}");
        assert_eq!(alice[0].sessions.len(), 1, "{who:?}");
        assert_eq!(alice[0].status, Status::Busy);
        assert_eq!(server.stats().await.sessions, 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn under_multi_both_sessions_live_and_the_user_is_offline_only_after_both_end() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|s| s.server.duplicate_login = DuplicateLogin::Multi).await;
        let addr = server.addr();
        let (mut watcher, _) = Live::signed_up(addr, "watcher").await;
        let (mut phone, _) = Live::signed_up(addr, "alice").await;
        watcher
            .recv_until("alice online", |m| says(m, "alice", Presence::Online))
            .await;
        let mut laptop = Live::connect(addr).await;
        laptop.login("alice", Status::Online).await;

        // Both are live: a message reaches each, with the same seq.
        watcher.send(&send_msg(1, "alice", "to all your devices"));
        let ServerMsg::Sent { seq, .. } = watcher
            .recv_until("sent", |m| matches!(m, ServerMsg::Sent { id: 1, .. }))
            .await
        else {
            unreachable!()
        };
        for session in [&mut phone, &mut laptop] {
            let got = session
                .recv_until("delivery", |m| matches!(m, ServerMsg::Deliver(_)))
                .await;
            assert!(
                matches!(got, ServerMsg::Deliver(ref d) if d.seq == seq),
                "{got:?}"
            );
        }
        let who = server.who().await;
        let alice = who.iter().find(|w| w.user.as_str() == "alice").unwrap();
        assert_eq!(alice.sessions.len(), 2, "{who:?}");

        // One session ends: nothing for the watcher to hear.
        phone.send(&ClientMsg::Logout);
        phone.expect_bye(CloseReason::LoggedOut).await;
        laptop.sync().await;
        let heard = watcher.sync().await;
        assert_eq!(announced(&heard, "alice"), vec![], "{heard:?}");

        // The last one ends (its socket dies): now alice is offline.
        drop(laptop);
        let (_, heard) = watcher
            .collect_until("alice offline", |m| says(m, "alice", Presence::Offline))
            .await;
        assert_eq!(announced(&heard, "alice"), vec![Presence::Offline]);
        server.stop().await;
    })
    .await;
}

// ---- 3. presence ----

#[tokio::test]
async fn presence_is_a_snapshot_at_login_and_offline_at_logout() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|_| {}).await;
        let addr = server.addr();
        let (mut watcher, first) = Live::signed_up(addr, "watcher").await;
        assert!(first.snapshot.is_empty());
        let mut reg = Live::connect(addr).await;
        reg.register("bob").await;
        reg.register("carol").await;

        let (mut alice, ok) = Live::signed_up(addr, "alice").await;
        let view: Vec<(&str, Presence)> = ok
            .snapshot
            .iter()
            .map(|e| (e.user.as_str(), e.presence))
            .collect();
        // The whole directory, sorted, offline users included, alice herself left out.
        assert_eq!(
            view,
            [
                ("bob", Presence::Offline),
                ("carol", Presence::Offline),
                ("watcher", Presence::Online)
            ]
        );
        watcher
            .recv_until("alice online", |m| says(m, "alice", Presence::Online))
            .await;

        alice.send(&ClientMsg::Logout);
        let logged_out = Instant::now();
        alice.expect_bye(CloseReason::LoggedOut).await;
        let (at, _) = watcher
            .collect_until("alice offline", |m| says(m, "alice", Presence::Offline))
            .await;
        eprintln!(
            "logout announced {:?} after the Logout",
            at.duration_since(logged_out)
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_killed_client_socket_is_announced_offline_promptly() {
    bounded(TEST_LIMIT, async {
        // A long heartbeat timeout: only the closed socket can explain a prompt Offline.
        let server = start_server(|s| s.server.heartbeat_timeout = Duration::from_secs(10)).await;
        let addr = server.addr();
        let (mut watcher, _) = Live::signed_up(addr, "watcher").await;
        let (victim, _) = Live::signed_up(addr, "victim").await;
        watcher
            .recv_until("victim online", |m| says(m, "victim", Presence::Online))
            .await;

        let killed = Instant::now();
        drop(victim);
        let (at, heard) = watcher
            .collect_until("victim offline", |m| says(m, "victim", Presence::Offline))
            .await;
        let took = at.duration_since(killed);
        eprintln!("killed socket announced offline after {took:?}");
        assert_eq!(announced(&heard, "victim"), vec![Presence::Offline]);
        assert!(took < Duration::from_secs(2), "{took:?}");
        server.wait_stats("victim gone", |s| s.sessions == 1).await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_peer_is_announced_offline_between_the_timeout_and_a_second_later() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    const SLACK: Duration = Duration::from_secs(1);
    bounded(TEST_LIMIT, async {
        let server = start_server(|s| s.server.heartbeat_timeout = TIMEOUT).await;
        let addr = server.addr();
        let (mut watcher, _) = Live::signed_up(addr, "watcher").await;
        let mut overshoots = Vec::new();
        for round in 0..3 {
            let name = format!("silent{round}");
            let (mut silent, _) = Live::signed_up(addr, &name).await;
            watcher
                .recv_until("silent online", |m| says(m, &name, Presence::Online))
                .await;
            // Logged in, socket open, and from now on not one byte sent.
            silent.go_silent();
            let (at, heard) = watcher
                .collect_until("silent offline", |m| says(m, &name, Presence::Offline))
                .await;
            assert_eq!(announced(&heard, &name), vec![Presence::Offline]);
            // The last frame started out at `last_sent`; the server cannot have seen it
            // earlier, so the deadline cannot be earlier than last_sent + timeout.
            let silence = at.duration_since(silent.last_sent());
            assert!(
                silence >= TIMEOUT,
                "offline after only {silence:?} of silence"
            );
            assert!(
                silence <= TIMEOUT + SLACK,
                "offline only after {silence:?} of silence"
            );
            overshoots.push(silence - TIMEOUT);
            // The silent peer itself is told why, if it still reads.
            silent.expect_bye(CloseReason::HeartbeatTimeout).await;
        }
        eprintln!(
            "silent peer: heartbeat timeout {TIMEOUT:?}, Offline reached the watcher this much \
             later than last frame + timeout: {overshoots:?}"
        );
        server.stop().await;
    })
    .await;
}

// ---- 4. status and invisibility ----

#[tokio::test]
async fn status_changes_reach_watchers_and_invisible_users_look_offline() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|_| {}).await;
        let addr = server.addr();
        let (mut watcher, _) = Live::signed_up(addr, "watcher").await;
        let (mut alice, _) = Live::signed_up(addr, "alice").await;
        watcher
            .recv_until("alice online", |m| says(m, "alice", Presence::Online))
            .await;

        for (status, seen) in [
            (Status::Busy, Presence::Busy),
            (Status::Away, Presence::Away),
            (Status::Invisible, Presence::Offline),
        ] {
            alice.send(&ClientMsg::SetStatus { status });
            alice
                .recv_until("own status", |m| *m == ServerMsg::OwnStatus { status })
                .await;
            let (_, heard) = watcher
                .collect_until("alice's new presence", |m| says(m, "alice", seen))
                .await;
            assert_eq!(announced(&heard, "alice"), vec![seen], "{status:?}");
        }
        // Invisible is still connected, and the server knows the truth.
        let who = server.who().await;
        let entry = who.iter().find(|w| w.user.as_str() == "alice").unwrap();
        assert_eq!((entry.status, entry.sessions.len()), (Status::Invisible, 1));
        let (_, newcomer) = Live::signed_up(addr, "nina").await;
        assert_eq!(
            presence_in(&newcomer.snapshot, "alice"),
            Some(Presence::Offline)
        );

        // Bob logs in invisible: never announced online.
        let mut bob = Live::connect(addr).await;
        bob.register("bob").await;
        let ok = bob.login("bob", Status::Invisible).await;
        assert_eq!(ok.status, Status::Invisible);
        bob.sync().await;
        // A change after bob's login, as a marker in the watcher's stream.
        alice.send(&ClientMsg::SetStatus {
            status: Status::Online,
        });
        let (_, heard) = watcher
            .collect_until("alice online again", |m| says(m, "alice", Presence::Online))
            .await;
        let bob_heard = announced(&heard, "bob");
        assert!(
            bob_heard.iter().all(|p| *p == Presence::Offline),
            "an invisible login was announced: {heard:?}"
        );

        // An invisible user who logs out changes nothing anyone sees.
        bob.send(&ClientMsg::Logout);
        bob.expect_bye(CloseReason::LoggedOut).await;
        alice.send(&ClientMsg::SetStatus {
            status: Status::Away,
        });
        let (_, heard) = watcher
            .collect_until("alice away", |m| says(m, "alice", Presence::Away))
            .await;
        assert_eq!(announced(&heard, "bob"), vec![], "{heard:?}");
        server.stop().await;
    })
    .await;
}

// ---- 5. contacts scope ----

#[tokio::test]
async fn under_contacts_scope_only_those_who_listed_a_user_hear_of_it_and_the_list_persists() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|s| s.server.scope = WatchScope::Contacts).await;
        let addr = server.addr();
        let mut reg = Live::connect(addr).await;
        assert!(matches!(
            reg.welcome,
            ServerMsg::Welcome {
                scope: WatchScope::Contacts,
                ..
            }
        ));
        for name in ["amy", "ben", "cat", "dan"] {
            reg.register(name).await;
        }

        // amy lists cat; ben lists dan. Each view is exactly the own list.
        let mut amy = Live::connect(addr).await;
        assert!(amy.login("amy", Status::Online).await.snapshot.is_empty());
        let mut ben = Live::connect(addr).await;
        ben.login("ben", Status::Online).await;
        for (who, contact) in [(&mut amy, "cat"), (&mut ben, "dan")] {
            who.send(&ClientMsg::AddContact {
                user: user(contact),
            });
            let contacts = who
                .recv_until("contacts", |m| {
                    matches!(m, ServerMsg::ContactsChanged { .. })
                })
                .await;
            assert_eq!(
                contacts,
                ServerMsg::ContactsChanged {
                    added: vec![user(contact)],
                    removed: vec![],
                    rejected: vec![],
                }
            );
            // The new contact's presence, as a diff: not the whole view again.
            let diff = who
                .recv_until("its presence", |m| {
                    matches!(m, ServerMsg::PresenceDiff { .. })
                })
                .await;
            let ServerMsg::PresenceDiff { entries } = diff else {
                unreachable!()
            };
            assert_eq!(entries.len(), 1);
            assert_eq!(presence_in(&entries, contact), Some(Presence::Offline));
        }

        // cat comes online: amy hears it.
        let mut cat = Live::connect(addr).await;
        assert!(cat.login("cat", Status::Online).await.snapshot.is_empty());
        let (_, heard) = amy
            .collect_until("cat online", |m| says(m, "cat", Presence::Online))
            .await;
        assert_eq!(announced(&heard, "cat"), vec![Presence::Online]);
        // dan comes online after cat: ben hears of dan, and never of cat; amy not of dan.
        let mut dan = Live::connect(addr).await;
        dan.login("dan", Status::Online).await;
        let (_, heard) = ben
            .collect_until("dan online", |m| says(m, "dan", Presence::Online))
            .await;
        assert_eq!(announced(&heard, "cat"), vec![], "{heard:?}");
        assert_eq!(announced(&amy.sync().await, "dan"), vec![]);
        // Watching is one-way: cat, who lists nobody, hears nothing.
        assert_eq!(announced(&cat.sync().await, "amy"), vec![]);

        // The list survives a logout and a new login.
        amy.send(&ClientMsg::Logout);
        amy.expect_bye(CloseReason::LoggedOut).await;
        let mut amy = Live::connect(addr).await;
        let back = amy.login("amy", Status::Online).await;
        assert_eq!(back.contacts, vec![user("cat")]);
        assert_eq!(back.snapshot.len(), 1);
        assert_eq!(presence_in(&back.snapshot, "cat"), Some(Presence::Online));
        drop(dan);
        server.stop().await;
    })
    .await;
}

// ---- 6. offline messages across a restart ----

#[tokio::test]
async fn an_offline_message_survives_a_restart_and_is_delivered_once_until_acked() {
    bounded(TEST_LIMIT, async {
        let mut server = start_server(|_| {}).await;
        let mut reg = Live::connect(server.addr()).await;
        reg.register("alice").await;
        drop(reg);
        let (mut bob, _) = Live::signed_up(server.addr(), "bob").await;
        let note = Attachment {
            mime: "text/plain".into(),
            name: "note.txt".into(),
            data: b"see you".to_vec(),
        };
        bob.send(&send_msg(77, "alice", "while you were out"));
        bob.send(&ClientMsg::Send {
            id: 78,
            to: user("alice"),
            body: "and a note".into(),
            attachment: Some(note.clone()),
        });
        let mut seqs = Vec::new();
        for id in [77, 78] {
            let sent = bob
                .recv_until(
                    "sent",
                    |m| matches!(m, ServerMsg::Sent { id: i, .. } if *i == id),
                )
                .await;
            let ServerMsg::Sent { seq, .. } = sent else {
                unreachable!()
            };
            seqs.push(seq);
        }
        assert!(seqs[0] < seqs[1], "seqs grow in storage order: {seqs:?}");

        server.restart().await;
        bob.expect_bye(CloseReason::ServerShutdown).await;

        // At login the mailbox: both messages, in seq order, each once, then OfflineDone.
        let mut alice = Live::connect(server.addr()).await;
        alice.login("alice", Status::Online).await;
        let (_, got) = alice
            .collect_until("offline done", |m| {
                matches!(m, ServerMsg::OfflineDone { .. })
            })
            .await;
        let delivered: Vec<&Delivery> = got
            .iter()
            .filter_map(|m| match m {
                ServerMsg::Deliver(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(got.last(), Some(&ServerMsg::OfflineDone { count: 2 }));
        assert_eq!(delivered.len(), 2, "{got:?}");
        assert_eq!(
            (
                delivered[0].seq,
                delivered[0].id,
                delivered[0].from.as_str()
            ),
            (seqs[0], 77, "bob")
        );
        assert_eq!(delivered[0].body, "while you were out");
        assert_eq!((delivered[1].seq, delivered[1].id), (seqs[1], 78));
        assert_eq!(delivered[1].attachment, Some(note));
        assert!(delivered[0].sent_at_ms > 0);
        let late = alice.sync().await;
        assert!(
            !late.iter().any(|m| matches!(m, ServerMsg::Deliver(_))),
            "delivered again in the same session: {late:?}"
        );

        // Ack, then a storage write as a barrier (writes complete in order, §7.2), so the
        // ack is on disk before the next login reads the mailbox.
        alice.send(&ClientMsg::Ack { seqs: seqs.clone() });
        alice.send(&ClientMsg::AddContact { user: user("bob") });
        alice
            .recv_until("contacts", |m| {
                matches!(m, ServerMsg::ContactsChanged { .. })
            })
            .await;
        alice.send(&ClientMsg::Logout);
        alice.expect_bye(CloseReason::LoggedOut).await;

        for restart in [false, true] {
            if restart {
                server.restart().await;
            }
            let mut alice = Live::connect(server.addr()).await;
            alice.login("alice", Status::Online).await;
            let (_, got) = alice
                .collect_until("offline done", |m| {
                    matches!(m, ServerMsg::OfflineDone { .. })
                })
                .await;
            assert_eq!(
                got.last(),
                Some(&ServerMsg::OfflineDone { count: 0 }),
                "after restart: {restart}"
            );
            assert!(
                !got.iter().any(|m| matches!(m, ServerMsg::Deliver(_))),
                "{got:?}"
            );
            alice.send(&ClientMsg::Logout);
            alice.expect_bye(CloseReason::LoggedOut).await;
        }
        server.stop().await;
    })
    .await;
}

// ---- 7. hostile connections while others chat ----

/// Raw bytes from a connection that does not follow the protocol, and what the server must
/// answer before closing it.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Hello, then a length prefix above `max_frame` followed by some of the bytes.
    OversizeFrame,
    /// An HTTP request where the Hello should be: its first four bytes read as ~1.2 GB.
    HttpRequest,
    /// Hello, then a frame whose payload is no message.
    GarbageAfterHello,
    /// A first frame whose payload is no message.
    GarbageFirst,
    /// A valid message, but not a Hello, first.
    PingFirst,
    /// Connect and say nothing.
    Silent,
    /// Half a Hello, a byte at a time, then nothing more.
    HalfHello,
}

impl Misbehaviour {
    const ALL: [Misbehaviour; 7] = [
        Misbehaviour::OversizeFrame,
        Misbehaviour::HttpRequest,
        Misbehaviour::GarbageAfterHello,
        Misbehaviour::GarbageFirst,
        Misbehaviour::PingFirst,
        Misbehaviour::Silent,
        Misbehaviour::HalfHello,
    ];

    fn expected(self) -> CloseReason {
        match self {
            Misbehaviour::OversizeFrame | Misbehaviour::HttpRequest => CloseReason::FrameTooLarge,
            Misbehaviour::GarbageAfterHello | Misbehaviour::GarbageFirst => CloseReason::Malformed,
            Misbehaviour::PingFirst => CloseReason::BadHandshake,
            Misbehaviour::Silent | Misbehaviour::HalfHello => CloseReason::HandshakeTimeout,
        }
    }

    /// Plays the part; returns what the server sent and how long after connecting it
    /// closed.
    async fn play(self, addr: SocketAddr, max_frame: u32) -> (Vec<ServerMsg>, Duration) {
        let opened = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let hello = encode_frame(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "hostile".into(),
        });
        let mut got = Vec::new();
        let mut buf = bytes::BytesMut::new();
        if matches!(
            self,
            Misbehaviour::OversizeFrame | Misbehaviour::GarbageAfterHello
        ) {
            stream.write_all(&hello).await.unwrap();
            got.push(read_frame(&mut stream, &mut buf).await.expect("welcome"));
        }
        // Writes may fail once the server has closed; what it said is what counts.
        match self {
            Misbehaviour::OversizeFrame => {
                let mut frame = (max_frame + 1).to_be_bytes().to_vec();
                frame.resize(4 + 16 * 1024, 0xab);
                let _ = stream.write_all(&frame).await;
            }
            Misbehaviour::HttpRequest => {
                let _ = stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: breeze\r\n\r\n")
                    .await;
            }
            Misbehaviour::GarbageAfterHello | Misbehaviour::GarbageFirst => {
                let _ = stream
                    .write_all(&[0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                    .await;
            }
            Misbehaviour::PingFirst => {
                let _ = stream
                    .write_all(&encode_frame(&ClientMsg::Ping { nonce: 1 }))
                    .await;
            }
            Misbehaviour::Silent => {}
            Misbehaviour::HalfHello => {
                for byte in &hello[..hello.len() / 2] {
                    if stream.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
        while let Some(msg) = read_frame(&mut stream, &mut buf).await {
            got.push(msg);
        }
        (got, opened.elapsed())
    }
}

/// The next server frame, `None` at the close; bounded by `WAIT`.
async fn read_frame(stream: &mut TcpStream, buf: &mut bytes::BytesMut) -> Option<ServerMsg> {
    let next = timeout(WAIT, async {
        loop {
            if let Some(payload) = breeze_core::codec::split_frame(buf, 1 << 24).unwrap() {
                return Some(decode(&payload).unwrap());
            }
            match stream.read_buf(buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    next.expect("no frame and no close within the wait bound")
}

/// One chat exchange: alice writes to bob, bob (on delivery, after acking it) answers; the
/// time until alice has the answer.
async fn chat_round(alice: &mut Live, bob: &mut Live, round: u64) -> Duration {
    let started = Instant::now();
    alice.send(&send_msg(round, "bob", &format!("ping {round}")));
    let got = bob
        .recv_until(
            "alice's message",
            |m| matches!(m, ServerMsg::Deliver(d) if d.id == round),
        )
        .await;
    let ServerMsg::Deliver(d) = got else {
        unreachable!()
    };
    bob.send(&ClientMsg::Ack { seqs: vec![d.seq] });
    bob.send(&send_msg(round, "alice", &format!("pong {round}")));
    let got = alice
        .recv_until(
            "bob's answer",
            |m| matches!(m, ServerMsg::Deliver(d) if d.id == round),
        )
        .await;
    let ServerMsg::Deliver(d) = got else {
        unreachable!()
    };
    alice.send(&ClientMsg::Ack { seqs: vec![d.seq] });
    started.elapsed()
}

fn summary(rtts: &[Duration]) -> String {
    let mut sorted = rtts.to_vec();
    sorted.sort();
    format!(
        "{} rounds, median {:?}, max {:?}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    )
}

#[tokio::test]
async fn hostile_connections_are_refused_with_their_reason_while_others_keep_chatting() {
    bounded(TEST_LIMIT, async {
        let server = start_server(|_| {}).await;
        let addr = server.addr();
        let max_frame = server.settings().server.max_frame;
        let handshake = server.settings().server.handshake_timeout;
        let (mut alice, _) = Live::signed_up(addr, "alice").await;
        let (mut bob, _) = Live::signed_up(addr, "bob").await;

        let mut before = Vec::new();
        for round in 0..10 {
            before.push(chat_round(&mut alice, &mut bob, round).await);
        }

        let hostile: Vec<_> = Misbehaviour::ALL
            .into_iter()
            .map(|m| (m, tokio::spawn(m.play(addr, max_frame))))
            .collect();
        // Chat for as long as any of them is still connected.
        let mut during = Vec::new();
        let mut round = 100;
        while hostile.iter().any(|(_, h)| !h.is_finished()) {
            assert!(round < 10_000, "the hostile connections were never closed");
            during.push(chat_round(&mut alice, &mut bob, round).await);
            round += 1;
        }
        for (m, handle) in hostile {
            let (got, took) = handle.await.unwrap();
            assert_eq!(
                got.last(),
                Some(&ServerMsg::Bye {
                    reason: m.expected()
                }),
                "{m:?}: {got:?}"
            );
            if m.expected() == CloseReason::HandshakeTimeout {
                assert!(took >= handshake, "{m:?} closed after only {took:?}");
            }
            assert!(
                took < handshake + Duration::from_secs(2),
                "{m:?} took {took:?}"
            );
        }
        eprintln!("chat round trip before: {}", summary(&before));
        eprintln!("chat round trip during: {}", summary(&during));
        assert!(!during.is_empty());
        let worst = *during.iter().max().unwrap();
        assert!(
            worst < Duration::from_secs(2),
            "the chat stalled for {worst:?}"
        );
        // Only the two chatting clients are left.
        server
            .wait_stats("hostile connections gone", |s| s.connections == 2)
            .await;
        assert_eq!(server.stats().await.sessions, 2);
        server.stop().await;
    })
    .await;
}

// ---- 8. the binary, SIGKILLed mid-load ----

/// `name` registering through `run_client`, with message ids from `id_base` on.
fn client(name: &str, id_base: u64) -> ClientConfig {
    ClientConfig {
        id_base,
        seed: id_base,
        ..client_config(name, &live::password(name), Mode::Register)
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");
const BINARY_FLAGS: &[&str] = &[
    "--heartbeat-interval",
    "250ms",
    "--heartbeat-timeout",
    "1500ms",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkills_and_reach_the_app_exactly_once() {
    const TOTAL: usize = 1200;
    const WINDOW: usize = 64;
    const KILL_AT_ACKS: [usize; 3] = [250, 600, 950];
    bounded(Duration::from_secs(60), async {
        let (_dir, db) = temp_db();
        let spawn = |db: std::path::PathBuf, listen: SocketAddr| {
            tokio::task::spawn_blocking(move || {
                ServerProcess::spawn(BIN.as_ref(), &db, listen, BINARY_FLAGS)
            })
        };
        let mut server = spawn(db.clone(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.addr;

        let (recipient, mut recipient_events) =
            drive(client("recipient", 1 << 40), TcpConnector, addr);
        recipient_events.logged_in().await;
        // The recipient's application: every message handed to it, in order. The client core
        // has already deduplicated by seq, and acks each as the runner hands it over.
        let app_log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let (count_tx, mut count_rx) = watch::channel(0usize);
        let (other_tx, mut recipient_other) = mpsc::unbounded_channel();
        let collector = {
            let app_log = app_log.clone();
            tokio::spawn(async move {
                while let Some(ev) = recipient_events.0.recv().await {
                    match ev {
                        ClientEvent::Message(d) => {
                            let mut log = app_log.lock().unwrap();
                            log.push(d);
                            let _ = count_tx.send(log.len());
                        }
                        other => {
                            let _ = other_tx.send(other);
                        }
                    }
                }
            })
        };

        let (sender, mut sender_events) = drive(client("sender", 1 << 50), TcpConnector, addr);
        sender_events.logged_in().await;

        let started = Instant::now();
        let mut ids: Vec<u64> = Vec::new();
        let mut bodies: BTreeMap<u64, String> = BTreeMap::new();
        let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
        let mut kills = KILL_AT_ACKS.iter().peekable();
        // Per kill: the messages not yet confirmed, and the wall clock (as the server stamps
        // `sent_at_ms`) once the killed process was gone.
        let mut kill_points: Vec<(usize, Vec<u64>, u64)> = Vec::new();
        let mut logins = 1;
        while acked.len() < TOTAL {
            // Keep a window of messages in flight.
            while ids.len() < TOTAL && ids.len() - acked.len() < WINDOW {
                let body = format!("message {} of {TOTAL}", ids.len());
                let (id_tx, id_rx) = oneshot::channel();
                sender
                    .commands
                    .send(ClientCommand::SendMessage {
                        to: user("recipient"),
                        body: body.clone(),
                        attachment: None,
                        id: Some(id_tx),
                    })
                    .await
                    .unwrap();
                let id = id_rx.await.unwrap();
                ids.push(id);
                bodies.insert(id, body);
            }
            if kills.next_if(|at| acked.len() >= **at).is_some() {
                let in_flight: Vec<u64> = ids
                    .iter()
                    .filter(|id| !acked.contains_key(id))
                    .copied()
                    .collect();
                let status = server.sigkill();
                assert!(!status.success(), "the server survived SIGKILL: {status:?}");
                kill_points.push((acked.len(), in_flight, unix_ms()));
                server = spawn(db.clone(), addr).await.unwrap();
            }
            let ev = timeout(WAIT, sender_events.0.recv()).await;
            let Ok(Some(ev)) = ev else {
                panic!(
                    "no sender event within {WAIT:?}; {} of {TOTAL} acked; server log:\n{}",
                    acked.len(),
                    server.log_so_far().join("\n")
                );
            };
            match ev {
                ClientEvent::MessageSent { id, seq } => {
                    assert!(
                        bodies.contains_key(&id),
                        "an ack for an id never sent: {id}"
                    );
                    let before = acked.insert(id, seq);
                    assert_eq!(before, None, "message {id} acknowledged twice");
                }
                ClientEvent::SendFailed { id, code } => panic!("message {id} refused: {code:?}"),
                ClientEvent::LoggedIn { .. } => logins += 1,
                _ => {}
            }
        }
        assert_eq!(kills.next(), None, "every planned kill happened");

        // Every acknowledged message reaches the recipient's application.
        let all_there = timeout(WAIT, count_rx.wait_for(|n| *n >= TOTAL)).await;
        let log = app_log.lock().unwrap().clone();
        assert!(
            all_there.is_ok(),
            "the recipient's application has {} of {TOTAL} messages",
            log.len()
        );
        // Which of the messages in flight at each kill the killed process had stored (their
        // re-send was deduplicated) and which it lost before storing (stored after restart).
        let stored_at: BTreeMap<u64, u64> = log.iter().map(|d| (d.id, d.sent_at_ms)).collect();
        let kill_report: Vec<String> = kill_points
            .iter()
            .map(|(acked, in_flight, dead_ms)| {
                let before = in_flight
                    .iter()
                    .filter(|id| stored_at.get(id).is_some_and(|at| at <= dead_ms))
                    .count();
                format!(
                    "at {acked} acked: {} in flight, {before} already stored by the killed \
                     process, {} stored after the restart",
                    in_flight.len(),
                    in_flight.len() - before
                )
            })
            .collect();
        eprintln!(
            "{TOTAL} messages through {} SIGKILLs in {:?}, the sender logged in {logins} times; {}",
            kill_points.len(),
            started.elapsed(),
            kill_report.join("; ")
        );

        // ... each exactly once, as stored once: one seq per id, one entry per seq.
        let mut seqs_seen = BTreeSet::new();
        let mut ids_seen = BTreeMap::new();
        for d in &log {
            assert!(
                seqs_seen.insert(d.seq),
                "seq {} handed to the app twice",
                d.seq
            );
            assert_eq!(d.from, user("sender"));
            assert_eq!(
                ids_seen.insert(d.id, d.seq),
                None,
                "message id {} stored and delivered twice",
                d.id
            );
            assert_eq!(bodies.get(&d.id), Some(&d.body), "id {}", d.id);
        }
        assert_eq!(
            ids_seen, acked,
            "the app's messages are exactly the acknowledged ones"
        );
        assert_eq!(log.len(), TOTAL);

        // A storage write after the last acks makes them durable (writes complete in order).
        recipient
            .commands
            .send(ClientCommand::AddContact(user("sender")))
            .await
            .unwrap();
        loop {
            let ev = timeout(WAIT, recipient_other.recv())
                .await
                .expect("contacts confirmed within the wait bound")
                .expect("recipient events open");
            // Every login reports the list too; only the one naming the sender confirms the add.
            if matches!(&ev, ClientEvent::Contacts(list) if list.contains(&user("sender"))) {
                break;
            }
        }
        for driven in [sender, recipient] {
            driven.quit().await;
        }
        collector.abort();

        // One last kill, then the database as the next start would find it.
        server.sigkill();
        tokio::task::spawn_blocking(move || check_database(&db, TOTAL))
            .await
            .unwrap();
    })
    .await;
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    u64::try_from(since.unwrap().as_millis()).unwrap()
}

/// After the kills: SQLite finds no corruption, the server's own store opens it, and every
/// message is stored once and marked acknowledged.
fn check_database(db: &std::path::Path, total: usize) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let (stored, distinct, unacked): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT client_id), count(*) FILTER (WHERE delivered = 0)
             FROM messages WHERE sender = 'sender' AND recipient = 'recipient'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!((stored, distinct, unacked), (total as i64, total as i64, 0));
    drop(conn);
    let store = breeze_store::Db::open(db, &breeze_store::DbOptions::default()).unwrap();
    let users: Vec<String> = store
        .users()
        .unwrap()
        .into_iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    assert_eq!(users, ["recipient", "sender"]);
}
