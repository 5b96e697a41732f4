//! Profiles (protocol version 2) end to end: the whole server in-process over SQLite, real
//! sockets, hostile input, an old client beside new ones, and a restart.

use breeze_core::message::{
    ClientMsg, CloseReason, Credential, ErrorCode, MAGIC, ProfileCard, RequestKind, ServerMsg,
    Status,
};
use breeze_core::profile::avatar_hash;
use breeze_testsupport::{InProcess, PASSWORD, Peer, TINY_PNG as PNG, user};

fn card_of(m: &ServerMsg, who: &str) -> Option<ProfileCard> {
    match m {
        ServerMsg::ProfileDiff { cards } | ServerMsg::ProfileSnapshot { cards, .. } => {
            cards.iter().find(|c| c.user == user(who)).cloned()
        }
        _ => None,
    }
}

#[tokio::test]
async fn two_users_see_each_others_names_and_avatars_and_an_old_client_is_unchanged() {
    let mut server = InProcess::start(|_| {}).await;
    let addr = server.addr();
    let mut alice = Peer::user(addr, "alice").await;
    let mut bob = Peer::user(addr, "bob").await;

    alice
        .send(&ClientMsg::SetProfile {
            display_name: "王小明 🐼".into(),
            signature: "在开会".into(),
        })
        .await;
    alice
        .send(&ClientMsg::SetAvatar {
            image: Some(PNG.to_vec()),
        })
        .await;
    let hash = avatar_hash(&PNG);
    let seen = bob
        .recv_until("alice's avatar", |m| {
            card_of(m, "alice").is_some_and(|c| c.avatar == Some(hash))
        })
        .await;
    let card = card_of(&seen, "alice").expect("matched above");
    assert_eq!((card.rev, card.display_name.as_str()), (2, "王小明 🐼"));
    bob.send(&ClientMsg::GetProfile {
        user: user("alice"),
        avatar: true,
    })
    .await;
    let answer = bob
        .recv_until("the profile", |m| matches!(m, ServerMsg::Profile { .. }))
        .await;
    let ServerMsg::Profile {
        avatar: Some(image),
        ..
    } = answer
    else {
        panic!("no image: {answer:?}");
    };
    assert_eq!(
        (image.mime.as_str(), &image.data[..]),
        ("image/png", &PNG[..])
    );

    // Hostile input: a bidi override is refused and nothing changes.
    alice
        .send(&ClientMsg::SetProfile {
            display_name: "alice\u{202E}txt.exe".into(),
            signature: String::new(),
        })
        .await;
    let refused = alice
        .recv_until("the refusal", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert_eq!(
        refused,
        ServerMsg::Error {
            request: RequestKind::SetProfile,
            code: ErrorCode::InvalidProfile,
            id: None
        }
    );

    // A version-1 client logs in as before: every frame decodes, none of version 2 comes.
    let mut old = Peer::connect(addr).await;
    old.send(&ClientMsg::Hello {
        magic: MAGIC,
        version: 1,
        client: "old".into(),
    })
    .await;
    let welcome = old.recv().await;
    assert!(
        matches!(welcome, Some(ServerMsg::Welcome { version: 1, .. })),
        "{welcome:?}"
    );
    old.register("carol").await;
    old.send(&ClientMsg::Login {
        user: user("carol"),
        credential: Credential::Password(PASSWORD.into()),
        status: Status::Online,
    })
    .await;
    let mut got = Vec::new();
    loop {
        let m = old.recv().await.expect("open");
        let done = matches!(m, ServerMsg::OfflineDone { .. });
        got.push(m);
        if done {
            break;
        }
    }
    assert!(got.iter().all(|m| m.since() == 1), "{got:?}");

    // A 100 MiB "avatar" is refused by its length prefix, before it is read.
    let mut frame = (100u32 << 20).to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x13; 64]);
    assert!(alice.send_raw(&frame).await);
    assert_eq!(
        alice.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::FrameTooLarge
        })
    );

    // The profile is in the database: after a restart bob's login brings it.
    server.restart().await;
    bob.last_before_close().await;
    let mut bob = Peer::hello(server.addr()).await;
    bob.login("bob").await;
    let snapshot = bob
        .recv_until("the profile snapshot", |m| {
            matches!(m, ServerMsg::ProfileSnapshot { .. })
        })
        .await;
    assert_eq!(card_of(&snapshot, "alice"), Some(card));
}
