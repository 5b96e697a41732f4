//! Contact groups end to end (protocol version 2): the whole server over SQLite, raw peers of
//! both protocol versions, a restart in between.

use breeze_core::config::DuplicateLogin;
use breeze_core::message::{
    ClientMsg, ContactGroup, Credential, ErrorCode, GroupEdit, MAGIC, Placement, RequestKind,
    ServerMsg, Status,
};
use breeze_testsupport::{InProcess, PASSWORD, Peer, user};

fn error(request: RequestKind, code: ErrorCode) -> ServerMsg {
    ServerMsg::Error {
        request,
        code,
        id: None,
    }
}

/// Waits for the answer to a group request: `GroupsChanged` or an `Error`.
async fn answer(peer: &mut Peer) -> ServerMsg {
    peer.recv_until("a group answer", |m| {
        matches!(m, ServerMsg::GroupsChanged { .. } | ServerMsg::Error { .. })
    })
    .await
}

/// A login of alice at protocol `version`: everything up to the presence snapshot.
async fn login_speaking(addr: std::net::SocketAddr, version: u16) -> (Peer, Vec<ServerMsg>) {
    let mut peer = Peer::connect(addr).await;
    peer.send(&ClientMsg::Hello {
        magic: MAGIC,
        version,
        client: "groups test".into(),
    })
    .await;
    peer.send(&ClientMsg::Login {
        user: user("alice"),
        credential: Credential::Password(PASSWORD.into()),
        status: Status::Online,
    })
    .await;
    let mut got = Vec::new();
    loop {
        let m = peer.recv().await.expect("the login's frames");
        let done = matches!(m, ServerMsg::PresenceSnapshot { .. });
        got.push(m);
        if done {
            return (peer, got);
        }
    }
}

#[tokio::test]
async fn groups_are_kept_across_a_restart_and_old_clients_log_in_unchanged() {
    let mut server = InProcess::start(|s| {
        s.server.duplicate_login = DuplicateLogin::Multi;
        s.server.max_groups = 3;
    })
    .await;
    let addr = server.addr();
    for name in ["bob", "carol"] {
        Peer::user(addr, name).await;
    }
    let mut alice = Peer::user(addr, "alice").await;
    alice
        .send(&ClientMsg::ChangeContacts {
            add: vec![user("bob"), user("carol")],
            remove: vec![],
        })
        .await;
    alice
        .recv_until("contacts", |m| {
            matches!(m, ServerMsg::ContactsChanged { .. })
        })
        .await;

    alice
        .send(&ClientMsg::CreateGroup {
            name: " 家人 ".into(),
        })
        .await;
    let ServerMsg::GroupsChanged { groups, .. } = answer(&mut alice).await else {
        panic!("not created");
    };
    let family = groups[0].clone();
    assert_eq!(family.name, "家人");
    // Hostile names and too many groups are refused as PROTOCOL.md says.
    for name in ["evil\u{202E}txt.exe", "a\nb", &"x".repeat(10_000)] {
        alice
            .send(&ClientMsg::CreateGroup { name: name.into() })
            .await;
        assert_eq!(
            answer(&mut alice).await,
            error(RequestKind::CreateGroup, ErrorCode::InvalidName)
        );
    }
    let mut created = 1;
    for i in 0..1000 {
        alice
            .send(&ClientMsg::CreateGroup {
                name: format!("g{i}"),
            })
            .await;
    }
    // Pipelined, most are refused `Busy` by the storage budget before the store sees them;
    // of those it sees, only the first two fit under the limit.
    let (mut too_many, mut busy) = (0, 0);
    for _ in 0..1000 {
        match answer(&mut alice).await {
            ServerMsg::GroupsChanged { .. } => created += 1,
            e if e == error(RequestKind::CreateGroup, ErrorCode::TooLarge) => too_many += 1,
            e => {
                assert_eq!(e, error(RequestKind::CreateGroup, ErrorCode::Busy));
                busy += 1;
            }
        }
    }
    assert_eq!(created, 3, "the limit");
    assert!(too_many > 0 && too_many + busy == 998, "{too_many} {busy}");
    alice
        .send(&ClientMsg::MoveContacts {
            contacts: vec![user("bob")],
            group: family.id,
        })
        .await;
    let ServerMsg::GroupsChanged { moved, .. } = answer(&mut alice).await else {
        panic!("not moved");
    };
    let bob_in_family = Placement {
        contact: user("bob"),
        group: family.id,
    };
    assert_eq!(moved, vec![bob_in_family.clone()]);
    alice
        .send(&ClientMsg::EditGroup {
            group: family.id,
            edit: GroupEdit::Reorder { position: 9 },
        })
        .await;
    let ServerMsg::GroupsChanged { groups, .. } = answer(&mut alice).await else {
        panic!("not reordered");
    };
    assert_eq!(groups.last(), Some(&family));

    server.restart().await;
    let addr = server.addr();
    let (mut phone, got) = login_speaking(addr, 2).await;
    let snapshot = got.iter().find(|m| matches!(m, ServerMsg::Groups { .. }));
    assert_eq!(
        snapshot,
        Some(&ServerMsg::Groups {
            max_groups: 3,
            groups: groups.clone(),
            placements: vec![bob_in_family],
        }),
        "the groups survive the restart and come with the login"
    );
    // A version 1 client logs in exactly as before: no frame it cannot decode.
    let (mut old, got) = login_speaking(addr, 1).await;
    assert!(
        matches!(got[0], ServerMsg::Welcome { version: 1, .. }),
        "{got:?}"
    );
    assert!(matches!(got[1], ServerMsg::LoginOk { .. }), "{got:?}");
    assert!(
        matches!(got[2], ServerMsg::PresenceSnapshot { .. }),
        "{got:?}"
    );
    // A delete on one device: the other version 2 device hears it; the old one does not.
    let (mut laptop, _) = login_speaking(addr, 2).await;
    phone
        .send(&ClientMsg::EditGroup {
            group: family.id,
            edit: GroupEdit::Delete,
        })
        .await;
    let left: Vec<ContactGroup> = groups.iter().filter(|g| **g != family).cloned().collect();
    let deleted = ServerMsg::GroupsChanged {
        groups: left,
        moved: vec![Placement {
            contact: user("bob"),
            group: 0,
        }],
    };
    assert_eq!(answer(&mut phone).await, deleted);
    assert_eq!(answer(&mut laptop).await, deleted);
    old.send(&ClientMsg::Ping { nonce: 7 }).await;
    loop {
        let m = old.recv().await.expect("the old device's frames");
        assert!(
            !matches!(
                m,
                ServerMsg::Groups { .. } | ServerMsg::GroupsChanged { .. }
            ),
            "a version 1 device was sent {m:?}"
        );
        if m == (ServerMsg::Pong { nonce: 7 }) {
            break;
        }
    }
    server.stop().await;
}
