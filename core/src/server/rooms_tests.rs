//! Rooms on one server (`rooms.rs`), frame by frame.

use crate::config::ServerConfig;
use crate::ids::ConnId;
use crate::message::{
    ClientMsg, CloseReason, Credential, ErrorCode, MAGIC, Presence, RequestKind, RoomDelivery,
    RoomMember, RoomRole, ServerMsg, Status, WatchScope,
};
use crate::testkit::Rig;
use crate::testkit::rig::{PASSWORD, user};

fn cfg() -> ServerConfig {
    ServerConfig {
        scope: WatchScope::Contacts,
        mailbox_page: 2,
        ..ServerConfig::default()
    }
}

fn room_of(msgs: &[ServerMsg]) -> u64 {
    msgs.iter()
        .find_map(|m| match m {
            ServerMsg::RoomMembers { room, .. } => Some(*room),
            _ => None,
        })
        .expect("a RoomMembers frame")
}

fn delivered(msgs: &[ServerMsg]) -> Vec<(u64, String)> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::RoomDeliver(RoomDelivery { seq, body, .. }) => Some((*seq, body.clone())),
            _ => None,
        })
        .collect()
}

fn room_error(code: ErrorCode, id: Option<u64>) -> ServerMsg {
    ServerMsg::Error {
        request: RequestKind::Room,
        code,
        id,
    }
}

/// `owner` creates a room and invites each of `members`; returns the room.
fn room(rig: &mut Rig, owner: ConnId, members: &[&str]) -> u64 {
    rig.frame(
        owner,
        ClientMsg::CreateRoom {
            name: "team".into(),
        },
    );
    let room = room_of(&rig.take(owner));
    for m in members {
        rig.frame(
            owner,
            ClientMsg::RoomInvite {
                room,
                user: user(m),
                role: RoomRole::Member,
            },
        );
    }
    room
}

fn say(rig: &mut Rig, conn: ConnId, room: u64, id: u64, body: &str) {
    rig.frame(
        conn,
        ClientMsg::RoomSend {
            id,
            room,
            body: body.into(),
        },
    );
}

#[test]
fn a_room_message_reaches_every_online_session_and_offline_members_at_login() {
    let mut rig = Rig::new(cfg(), &["ann", "bob", "cat"]);
    let ann = rig.login("ann", Status::Online);
    let bob = rig.login("bob", Status::Online);
    let r = room(&mut rig, ann, &["bob", "cat"]);
    let got = rig.take(bob);
    assert!(
        got.iter().any(|m| matches!(m, ServerMsg::RoomMembers { full: true, members, .. } if members.len() == 2)),
        "bob is told the room when invited: {got:?}"
    );
    say(&mut rig, ann, r, 1, "one");
    say(&mut rig, bob, r, 2, "two");
    let ann_got = rig.take(ann);
    assert!(ann_got.contains(&ServerMsg::Sent { id: 1, seq: 1 }));
    assert_eq!(delivered(&ann_got), [(1, "one".into()), (2, "two".into())]);
    assert_eq!(
        delivered(&rig.take(bob)),
        [(1, "one".into()), (2, "two".into())]
    );
    // One row for the room, whoever is offline: cat reads it by cursor when it logs in.
    let cat = rig.login("cat", Status::Online);
    let got = rig.take(cat);
    assert_eq!(room_of(&got), r);
    assert_eq!(delivered(&got), [(1, "one".into()), (2, "two".into())]);
}

#[test]
fn an_offline_backlog_comes_in_pages_each_after_the_ack_of_the_last() {
    let mut rig = Rig::new(cfg(), &["ann", "bob"]);
    let ann = rig.login("ann", Status::Online);
    let r = room(&mut rig, ann, &["bob"]);
    for i in 1..=5 {
        say(&mut rig, ann, r, i, &format!("m{i}"));
    }
    let bob = rig.login("bob", Status::Online);
    let seqs =
        |msgs: Vec<ServerMsg>| -> Vec<u64> { delivered(&msgs).into_iter().map(|d| d.0).collect() };
    assert_eq!(seqs(rig.take(bob)), [1, 2]);
    // A message stored while a page waits for its ack comes with the pages, once.
    say(&mut rig, ann, r, 6, "m6");
    assert_eq!(seqs(rig.take(bob)), Vec::<u64>::new());
    rig.frame(bob, ClientMsg::RoomAck { room: r, seq: 2 });
    assert_eq!(seqs(rig.take(bob)), [3, 4]);
    rig.frame(bob, ClientMsg::RoomAck { room: r, seq: 4 });
    assert_eq!(seqs(rig.take(bob)), [5, 6]);
    rig.frame(bob, ClientMsg::RoomAck { room: r, seq: 6 });
    say(&mut rig, ann, r, 7, "m7");
    assert_eq!(seqs(rig.take(bob)), [7]);
    // The cursor is what was acked; a new login starts above it.
    assert_eq!(rig.store.borrow().room_cursor(r, &user("bob")), Some(6));
    rig.frame(
        bob,
        ClientMsg::RoomAck {
            room: r,
            seq: u64::MAX,
        },
    );
    assert_eq!(
        rig.store.borrow().room_cursor(r, &user("bob")),
        Some(7),
        "an ack never moves the cursor above what the session was sent"
    );
}

#[test]
fn a_message_stored_while_the_rooms_are_read_is_held_and_sent_once_in_order() {
    let mut rig = Rig::new(cfg(), &["ann", "bob"]);
    let ann = rig.login("ann", Status::Online);
    let r = room(&mut rig, ann, &["bob"]);
    say(&mut rig, ann, r, 1, "before");
    // Bob has read seq 1: at his next login the room is live at once.
    let bob = rig.login("bob", Status::Online);
    rig.frame(bob, ClientMsg::RoomAck { room: r, seq: 1 });
    rig.close(bob);
    rig.deferred = Some(Vec::new());
    let bob = rig.login("bob", Status::Online);
    rig.complete(0); // authenticate
    rig.complete(0); // the login's profile cards
    rig.complete(0); // the 1:1 mailbox: the rooms' read goes out (and sees seq 1 only)
    say(&mut rig, ann, r, 2, "during");
    // The store's result overtakes the read's, as a write may: its push waits for the read.
    rig.complete(1);
    assert!(delivered(&rig.take(bob)).is_empty());
    rig.complete(0);
    assert_eq!(delivered(&rig.take(bob)), [(2, "during".into())]);
    say(&mut rig, ann, r, 3, "after");
    rig.complete(0);
    assert_eq!(delivered(&rig.take(bob)), [(3, "after".into())]);
}

#[test]
fn only_members_may_speak_and_roles_decide_who_manages_the_room() {
    let mut rig = Rig::new(cfg(), &["ann", "bob", "cat", "dan"]);
    let ann = rig.login("ann", Status::Online);
    let bob = rig.login("bob", Status::Online);
    let cat = rig.login("cat", Status::Online);
    let r = room(&mut rig, ann, &["bob"]);
    rig.take(bob);
    rig.take(cat);
    say(&mut rig, cat, r, 9, "let me in");
    assert_eq!(rig.take(cat), [room_error(ErrorCode::NoSuchRoom, Some(9))]);
    let invite = |who: &str, role| ClientMsg::RoomInvite {
        room: r,
        user: user(who),
        role,
    };
    // A member cannot invite; an admin can invite members but not admins.
    rig.frame(bob, invite("cat", RoomRole::Member));
    assert_eq!(rig.take(bob), [room_error(ErrorCode::Forbidden, None)]);
    rig.frame(ann, invite("bob", RoomRole::Admin));
    rig.frame(bob, invite("cat", RoomRole::Admin));
    assert!(
        rig.take(bob)
            .contains(&room_error(ErrorCode::Forbidden, None))
    );
    rig.frame(bob, invite("cat", RoomRole::Member));
    rig.frame(bob, invite("nobody", RoomRole::Member));
    assert!(
        rig.take(bob)
            .contains(&room_error(ErrorCode::NoSuchUser, None))
    );
    assert!(
        rig.take(cat)
            .iter()
            .any(|m| matches!(m, ServerMsg::RoomMembers { full: true, .. }))
    );
    // The owner cannot leave; an admin cannot remove the owner; a member leaves.
    rig.frame(
        ann,
        ClientMsg::RoomRemove {
            room: r,
            user: user("ann"),
        },
    );
    assert!(
        rig.take(ann)
            .contains(&room_error(ErrorCode::Forbidden, None))
    );
    rig.frame(
        bob,
        ClientMsg::RoomRemove {
            room: r,
            user: user("ann"),
        },
    );
    assert!(
        rig.take(bob)
            .contains(&room_error(ErrorCode::Forbidden, None))
    );
    rig.frame(
        cat,
        ClientMsg::RoomRemove {
            room: r,
            user: user("cat"),
        },
    );
    assert!(rig.take(cat).contains(&ServerMsg::RoomLeft { room: r }));
    let left = RoomMember {
        user: user("cat"),
        role: None,
        presence: Presence::Online,
    };
    assert!(rig.take(ann).iter().any(
        |m| matches!(m, ServerMsg::RoomMembers { full: false, members, .. } if members == std::slice::from_ref(&left))
    ));
    say(&mut rig, ann, r, 2, "after cat left");
    assert!(delivered(&rig.take(cat)).is_empty());
    rig.frame(
        cat,
        ClientMsg::RoomHistory {
            room: r,
            before: None,
            limit: 10,
        },
    );
    assert_eq!(rig.take(cat), [room_error(ErrorCode::NoSuchRoom, None)]);
}

#[test]
fn room_limits_and_names_are_enforced() {
    let cfg = ServerConfig {
        max_room_members: 2,
        max_rooms_per_user: 1,
        ..cfg()
    };
    let mut rig = Rig::new(cfg, &["ann", "bob", "cat"]);
    let ann = rig.login("ann", Status::Online);
    let r = room(&mut rig, ann, &["bob", "cat"]);
    assert_eq!(
        rig.take(ann).last(),
        Some(&room_error(ErrorCode::RoomLimit, None))
    );
    rig.frame(
        ann,
        ClientMsg::CreateRoom {
            name: "second".into(),
        },
    );
    assert_eq!(rig.take(ann), [room_error(ErrorCode::RoomLimit, None)]);
    for bad in ["", "evil\u{202E}gnp.exe", "a\nb", &"x".repeat(65)] {
        rig.frame(ann, ClientMsg::CreateRoom { name: bad.into() });
        assert_eq!(
            rig.take(ann),
            [room_error(ErrorCode::InvalidName, None)],
            "{bad:?}"
        );
    }
    say(&mut rig, ann, r, 1, &"x".repeat(cfg_body() + 1));
    assert_eq!(rig.take(ann), [room_error(ErrorCode::TooLarge, Some(1))]);
}

fn cfg_body() -> usize {
    ServerConfig::default().max_body
}

#[test]
fn members_see_each_others_presence_in_the_room_whatever_the_scope() {
    let mut rig = Rig::new(cfg(), &["ann", "bob"]);
    let ann = rig.login("ann", Status::Online);
    let bob = rig.login("bob", Status::Online);
    room(&mut rig, ann, &["bob"]);
    rig.take(ann);
    rig.frame(
        bob,
        ClientMsg::SetStatus {
            status: Status::Away,
        },
    );
    let changes: Vec<ServerMsg> = rig
        .take(ann)
        .into_iter()
        .filter(|m| {
            matches!(
                m,
                ServerMsg::RoomMembers { .. } | ServerMsg::PresenceDiff { .. }
            )
        })
        .collect();
    // Not a contact: no PresenceDiff; a member: one RoomMembers change.
    assert!(
        matches!(&changes[..], [ServerMsg::RoomMembers { full: false, members, .. }]
            if members == &[RoomMember { user: user("bob"), role: Some(RoomRole::Member), presence: Presence::Away }]),
        "{changes:?}"
    );
}

#[test]
fn a_version_1_connection_gets_no_room_frames_and_may_not_ask_for_them() {
    let mut rig = Rig::new(cfg(), &["ann", "bob"]);
    let ann = rig.login("ann", Status::Online);
    let r = room(&mut rig, ann, &["bob"]);
    let old = rig.open();
    rig.frame(
        old,
        ClientMsg::Hello {
            magic: MAGIC,
            version: 1,
            client: "old".into(),
        },
    );
    rig.frame(
        old,
        ClientMsg::Login {
            user: user("bob"),
            credential: Credential::Password(PASSWORD.into()),
            status: Status::Online,
        },
    );
    say(&mut rig, ann, r, 1, "hi");
    let got = rig.take(old);
    assert!(
        got.iter().all(|m| m.since() == 1),
        "a version-1 session got a later frame: {got:?}"
    );
    say(&mut rig, old, r, 2, "from the past");
    assert_eq!(rig.closed.get(&old), Some(&CloseReason::Malformed));
}

#[test]
fn room_history_pages_back_newest_first() {
    let mut rig = Rig::new(cfg(), &["ann"]);
    let ann = rig.login("ann", Status::Online);
    let r = room(&mut rig, ann, &[]);
    for i in 1..=5 {
        say(&mut rig, ann, r, i, &format!("m{i}"));
    }
    rig.take(ann);
    rig.frame(
        ann,
        ClientMsg::RoomHistory {
            room: r,
            before: Some(5),
            limit: 3,
        },
    );
    let [ServerMsg::RoomHistory { room, items }] = &rig.take(ann)[..] else {
        panic!("no history");
    };
    assert_eq!(*room, r);
    let seqs: Vec<u64> = items.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, [4, 3, 2]);
}
