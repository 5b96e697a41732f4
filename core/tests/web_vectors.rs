//! Golden vectors for the web client's hand-written postcard codec (web/codec.js): every
//! `ClientMsg` and `ServerMsg` variant and every shared type, with edge values, encoded by the
//! real Rust types. They are checked in at `web/test/vectors.json`; `node --test web/test/`
//! checks that the JavaScript codec encodes and decodes each one byte for byte. This test
//! fails when the checked-in file is not what the types produce today, so a protocol change
//! cannot leave the browser's codec silently behind. Regenerate with
//! `BREEZE_WRITE_VECTORS=1 cargo test -p breeze-core --test web_vectors`.

use breeze_core::codec::encode;
use breeze_core::ids::UserId;
use breeze_core::message::*;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::PathBuf;

/// JavaScript numbers are exact only up to 2^53 - 1; larger integers go into the JSON as
/// decimal strings (the JS test reads every u64 with `BigInt(...)`, which takes both).
const MAX_SAFE_JS: u64 = (1 << 53) - 1;

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid name")
}

fn vector<T: Serialize>(ty: &str, name: &str, msg: &T) -> Value {
    let bytes = encode(msg);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let value = js_safe(serde_json::to_value(msg).expect("serializable"));
    json!({ "type": ty, "name": name, "hex": hex, "value": value })
}

fn js_safe(value: Value) -> Value {
    match value {
        Value::Number(n) if n.as_u64().is_some_and(|v| v > MAX_SAFE_JS) => {
            Value::String(n.to_string())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(js_safe).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, js_safe(v))).collect())
        }
        other => other,
    }
}

fn png() -> Attachment {
    Attachment {
        mime: "image/png".into(),
        name: "pixel ☃.png".into(),
        data: vec![0x89, b'P', b'N', b'G', 0, 0xff, 0x80, 0x7f],
    }
}

fn client_vectors() -> Vec<(&'static str, ClientMsg)> {
    let long = "x".repeat(300);
    vec![
        (
            "hello",
            ClientMsg::Hello {
                magic: MAGIC,
                version: PROTOCOL_VERSION,
                client: "breeze-web/1".into(),
            },
        ),
        (
            "hello empty client",
            ClientMsg::Hello {
                magic: MAGIC,
                version: u16::MAX,
                client: String::new(),
            },
        ),
        (
            "register",
            ClientMsg::Register {
                user: user("alice"),
                password: "correct horse".into(),
            },
        ),
        (
            "login password",
            ClientMsg::Login {
                user: user("bob_2.x-y"),
                credential: Credential::Password("pässwörd 🔑".into()),
                status: Status::Online,
            },
        ),
        (
            "login token busy",
            ClientMsg::Login {
                user: user("bob"),
                credential: Credential::Token((0..=255).collect()),
                status: Status::Busy,
            },
        ),
        (
            "login token empty away",
            ClientMsg::Login {
                user: user("bob"),
                credential: Credential::Token(vec![]),
                status: Status::Away,
            },
        ),
        (
            "login invisible",
            ClientMsg::Login {
                user: user("c"),
                credential: Credential::Password(String::new()),
                status: Status::Invisible,
            },
        ),
        ("logout", ClientMsg::Logout),
        (
            "change password",
            ClientMsg::ChangePassword {
                old: "old".into(),
                new: long.clone(),
            },
        ),
        (
            "set status away",
            ClientMsg::SetStatus {
                status: Status::Away,
            },
        ),
        (
            "add contact",
            ClientMsg::AddContact {
                user: user("carol"),
            },
        ),
        (
            "remove contact",
            ClientMsg::RemoveContact {
                user: user("carol"),
            },
        ),
        (
            "send text",
            ClientMsg::Send {
                id: 1,
                to: user("bob"),
                body: "hi <img src=x onerror=alert(1)> 日本語 👋".into(),
                attachment: None,
            },
        ),
        (
            "send u64 max with attachment",
            ClientMsg::Send {
                id: u64::MAX,
                to: user("bob"),
                body: String::new(),
                attachment: Some(png()),
            },
        ),
        (
            "send long body id 2^53",
            ClientMsg::Send {
                id: 1 << 53,
                to: user("bob"),
                body: long.clone(),
                attachment: None,
            },
        ),
        (
            "ack",
            ClientMsg::Ack {
                seqs: vec![0, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX],
            },
        ),
        ("ack empty", ClientMsg::Ack { seqs: vec![] }),
        (
            "ping",
            ClientMsg::Ping {
                nonce: 0x0123_4567_89ab_cdef,
            },
        ),
        (
            "history newest",
            ClientMsg::History {
                with: user("bob"),
                before: None,
                limit: 50,
            },
        ),
        (
            "history before",
            ClientMsg::History {
                with: user("bob"),
                before: Some(u64::MAX - 1),
                limit: u16::MAX,
            },
        ),
        ("admin who", ClientMsg::AdminWho),
        (
            "change contacts",
            ClientMsg::ChangeContacts {
                add: vec![user("a"), user("b")],
                remove: vec![user("z")],
            },
        ),
        (
            "change contacts empty",
            ClientMsg::ChangeContacts {
                add: vec![],
                remove: vec![],
            },
        ),
        (
            "agent login",
            ClientMsg::AgentLogin {
                user: user("bot"),
                password: "agent password".into(),
            },
        ),
        ("admin kick", ClientMsg::AdminKick { user: user("bob") }),
        (
            "admin ban",
            ClientMsg::AdminBan {
                user: user("mallory"),
            },
        ),
        (
            "admin unban",
            ClientMsg::AdminUnban {
                user: user("mallory"),
            },
        ),
        (
            "create group",
            ClientMsg::CreateGroup {
                name: "家人 👨\u{200D}👩\u{200D}👧".into(),
            },
        ),
        (
            "rename group",
            ClientMsg::EditGroup {
                group: 300,
                edit: GroupEdit::Rename {
                    name: "Colleagues".into(),
                },
            },
        ),
        (
            "delete group",
            ClientMsg::EditGroup {
                group: 1,
                edit: GroupEdit::Delete,
            },
        ),
        (
            "reorder group",
            ClientMsg::EditGroup {
                group: u32::MAX,
                edit: GroupEdit::Reorder { position: 0 },
            },
        ),
        (
            "move contacts",
            ClientMsg::MoveContacts {
                contacts: vec![user("bob"), user("carol")],
                group: DEFAULT_GROUP,
            },
        ),
        (
            "set profile",
            ClientMsg::SetProfile {
                display_name: "王小明 🐼".into(),
                signature: String::new(),
            },
        ),
        (
            "set avatar",
            ClientMsg::SetAvatar {
                image: Some(vec![0x89, b'P', b'N', b'G', 0, 255]),
            },
        ),
        ("remove avatar", ClientMsg::SetAvatar { image: None }),
        (
            "get profile",
            ClientMsg::GetProfile {
                user: user("alice"),
                avatar: true,
            },
        ),
        (
            "create room",
            ClientMsg::CreateRoom {
                name: "家人 🎉".into(),
            },
        ),
        (
            "room invite",
            ClientMsg::RoomInvite {
                room: u64::MAX,
                user: user("bob"),
                role: RoomRole::Admin,
            },
        ),
        (
            "room remove",
            ClientMsg::RoomRemove {
                room: 300,
                user: user("bob"),
            },
        ),
        (
            "room send",
            ClientMsg::RoomSend {
                id: u64::MAX,
                room: 1,
                body: "hello room".into(),
            },
        ),
        (
            "room ack",
            ClientMsg::RoomAck {
                room: 1,
                seq: 1 << 53,
            },
        ),
        (
            "room history",
            ClientMsg::RoomHistory {
                room: 1,
                before: Some(300),
                limit: 500,
            },
        ),
        (
            "room history newest",
            ClientMsg::RoomHistory {
                room: 1,
                before: None,
                limit: 0,
            },
        ),
        (
            "offer file",
            ClientMsg::OfferFile {
                transfer: u64::MAX,
                to: user("bob"),
                name: "报告 2024.pdf".into(),
                size: 50 << 20,
                sha256: std::array::from_fn(|i| i as u8),
                direct: Some(DirectEndpoint {
                    addrs: vec!["192.0.2.7:40123".into(), "[2001:db8::1]:40123".into()],
                    tls_fingerprint: Some([0xab; 32]),
                }),
            },
        ),
        (
            "offer file relay only",
            ClientMsg::OfferFile {
                transfer: 1,
                to: user("bob"),
                name: "a".into(),
                size: 0,
                sha256: [0; 32],
                direct: None,
            },
        ),
        (
            "answer file",
            ClientMsg::AnswerFile {
                from: user("alice"),
                transfer: 1,
                accept: true,
                offset: 1 << 20,
            },
        ),
        (
            "relay file",
            ClientMsg::RelayFile {
                from: user("alice"),
                transfer: 1,
                offset: 300,
            },
        ),
        (
            "transfer chunk",
            ClientMsg::TransferChunk {
                transfer: 1,
                offset: 300,
                data: vec![0, 1, 254, 255],
            },
        ),
        (
            "transfer ack",
            ClientMsg::TransferAck {
                from: user("alice"),
                transfer: 1,
                received: 304,
            },
        ),
        (
            "transfer done",
            ClientMsg::TransferDone {
                from: user("alice"),
                transfer: 1,
                verified: false,
            },
        ),
        (
            "cancel file",
            ClientMsg::CancelFile {
                sender: user("alice"),
                transfer: 1,
            },
        ),
    ]
}

/// A card with every field set: a name in two scripts, a signature, an avatar hash.
fn card() -> ProfileCard {
    ProfileCard {
        user: user("alice"),
        rev: u64::MAX,
        display_name: "Alice 王".into(),
        signature: "在开会 🙂".into(),
        avatar: Some(std::array::from_fn(|i| i as u8 * 8)),
    }
}

fn server_vectors() -> Vec<(&'static str, ServerMsg)> {
    let all_requests = [
        RequestKind::Hello,
        RequestKind::Register,
        RequestKind::Login,
        RequestKind::Logout,
        RequestKind::ChangePassword,
        RequestKind::SetStatus,
        RequestKind::AddContact,
        RequestKind::RemoveContact,
        RequestKind::Send,
        RequestKind::Ack,
        RequestKind::Ping,
        RequestKind::History,
        RequestKind::AdminWho,
        RequestKind::ChangeContacts,
        RequestKind::AgentLogin,
        RequestKind::AdminKick,
        RequestKind::AdminBan,
        RequestKind::AdminUnban,
        RequestKind::CreateGroup,
        RequestKind::EditGroup,
        RequestKind::MoveContacts,
        RequestKind::SetProfile,
        RequestKind::SetAvatar,
        RequestKind::GetProfile,
        RequestKind::Room,
        RequestKind::OfferFile,
        RequestKind::AnswerFile,
        RequestKind::RelayFile,
        RequestKind::TransferChunk,
        RequestKind::TransferAck,
        RequestKind::TransferDone,
        RequestKind::CancelFile,
    ];
    let all_codes = [
        ErrorCode::Malformed,
        ErrorCode::NotLoggedIn,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::InvalidName,
        ErrorCode::InvalidPassword,
        ErrorCode::UserTaken,
        ErrorCode::NoSuchUser,
        ErrorCode::BadCredentials,
        ErrorCode::TooLarge,
        ErrorCode::Forbidden,
        ErrorCode::TooManyContacts,
        ErrorCode::RateLimited,
        ErrorCode::StorageFailed,
        ErrorCode::Busy,
        ErrorCode::Banned,
        ErrorCode::NoSuchGroup,
        ErrorCode::InvalidProfile,
        ErrorCode::InvalidImage,
        ErrorCode::NoSuchRoom,
        ErrorCode::RoomLimit,
        ErrorCode::ReceiverOffline,
        ErrorCode::NoSuchTransfer,
        ErrorCode::TooManyTransfers,
    ];
    let all_reasons = CloseReason::ALL;
    let mut v = vec![
        (
            "welcome",
            ServerMsg::Welcome {
                version: 1,
                heartbeat_interval_ms: 15_000,
                heartbeat_timeout_ms: 45_000,
                max_frame: 1 << 20,
                max_attachment: 512 * 1024,
                max_body: 16 * 1024,
                scope: WatchScope::Everyone,
                max_contacts: 1000,
                frame_rate: 0,
                frame_burst: 200,
            },
        ),
        (
            "welcome max contacts scope",
            ServerMsg::Welcome {
                version: u16::MAX,
                heartbeat_interval_ms: u32::MAX,
                heartbeat_timeout_ms: 0,
                max_frame: u32::MAX,
                max_attachment: 0,
                max_body: 1,
                scope: WatchScope::Contacts,
                max_contacts: 128,
                frame_rate: 127,
                frame_burst: 16_384,
            },
        ),
        (
            "registered",
            ServerMsg::Registered {
                user: user("alice"),
            },
        ),
        (
            "login ok",
            ServerMsg::LoginOk {
                user: user("alice"),
                status: Status::Busy,
                resume_token: (0..32).map(|i| i * 8).collect(),
                contacts: vec![user("bob"), user("carol")],
            },
        ),
        (
            "login ok empty",
            ServerMsg::LoginOk {
                user: user("a"),
                status: Status::Invisible,
                resume_token: vec![],
                contacts: vec![],
            },
        ),
        (
            "presence snapshot",
            ServerMsg::PresenceSnapshot {
                entries: vec![
                    PresenceEntry {
                        user: user("bob"),
                        presence: Presence::Offline,
                    },
                    PresenceEntry {
                        user: user("carol"),
                        presence: Presence::Online,
                    },
                    PresenceEntry {
                        user: user("dave"),
                        presence: Presence::Busy,
                    },
                    PresenceEntry {
                        user: user("eve"),
                        presence: Presence::Away,
                    },
                ],
            },
        ),
        (
            "presence diff empty",
            ServerMsg::PresenceDiff { entries: vec![] },
        ),
        (
            "presence diff",
            ServerMsg::PresenceDiff {
                entries: vec![PresenceEntry {
                    user: user("bob"),
                    presence: Presence::Online,
                }],
            },
        ),
        (
            "own status",
            ServerMsg::OwnStatus {
                status: Status::Invisible,
            },
        ),
        (
            "contacts changed",
            ServerMsg::ContactsChanged {
                added: vec![user("bob")],
                removed: vec![user("carol"), user("dave")],
                rejected: vec![user("nobody")],
            },
        ),
        ("password changed", ServerMsg::PasswordChanged),
        (
            "sent",
            ServerMsg::Sent {
                id: u64::MAX,
                seq: 128,
            },
        ),
        (
            "deliver text",
            ServerMsg::Deliver(Delivery {
                seq: 1,
                from: user("bob"),
                id: 7,
                body: "<img src=x onerror=alert(1)> ünïcødé 🎉".into(),
                attachment: None,
                sent_at_ms: 1_765_000_000_000,
            }),
        ),
        (
            "deliver attachment",
            ServerMsg::Deliver(Delivery {
                seq: u64::MAX,
                from: user("bob"),
                id: 0,
                body: String::new(),
                attachment: Some(png()),
                sent_at_ms: u64::MAX,
            }),
        ),
        ("offline done", ServerMsg::OfflineDone { count: 3 }),
        ("offline waiting", ServerMsg::OfflineWaiting { count: 300 }),
        (
            "groups",
            ServerMsg::Groups {
                max_groups: 100,
                groups: vec![
                    ContactGroup {
                        id: 1,
                        name: "家人".into(),
                    },
                    ContactGroup {
                        id: 200,
                        name: "Work".into(),
                    },
                ],
                placements: vec![Placement {
                    contact: user("mum"),
                    group: 1,
                }],
            },
        ),
        (
            "groups changed",
            ServerMsg::GroupsChanged {
                groups: vec![],
                moved: vec![
                    Placement {
                        contact: user("bob"),
                        group: DEFAULT_GROUP,
                    },
                    Placement {
                        contact: user("carol"),
                        group: 70000,
                    },
                ],
            },
        ),
        (
            "room members",
            ServerMsg::RoomMembers {
                room: u64::MAX,
                name: "家人 🎉".into(),
                full: true,
                members: vec![
                    RoomMember {
                        user: user("alice"),
                        role: Some(RoomRole::Owner),
                        presence: Presence::Online,
                    },
                    RoomMember {
                        user: user("bob"),
                        role: Some(RoomRole::Admin),
                        presence: Presence::Away,
                    },
                    RoomMember {
                        user: user("carol"),
                        role: Some(RoomRole::Member),
                        presence: Presence::Offline,
                    },
                ],
            },
        ),
        (
            "profile snapshot",
            ServerMsg::ProfileSnapshot {
                cards: vec![card(), ProfileCard::blank(user("bob"))],
                more: true,
            },
        ),
        (
            "profile diff",
            ServerMsg::ProfileDiff {
                cards: vec![card()],
            },
        ),
        (
            "file offered",
            ServerMsg::FileOffered {
                from: user("alice"),
                transfer: 1,
                name: "报告 2024.pdf".into(),
                size: 50 << 20,
                sha256: std::array::from_fn(|i| 255 - i as u8),
            },
        ),
        (
            "transfer accepted",
            ServerMsg::TransferAccepted {
                transfer: 1,
                to: user("bob"),
                offset: 0,
                token: [0x5a; 32],
            },
        ),
        (
            "transfer start",
            ServerMsg::TransferStart {
                from: user("alice"),
                transfer: 1,
                offset: 7,
                token: [0x5a; 32],
                direct: Some(DirectEndpoint {
                    addrs: vec!["127.0.0.1:40123".into()],
                    tls_fingerprint: None,
                }),
            },
        ),
        (
            "transfer relay",
            ServerMsg::TransferRelay {
                transfer: 1,
                offset: 7,
                window: 4 << 20,
            },
        ),
        (
            "transfer data",
            ServerMsg::TransferData {
                from: user("alice"),
                transfer: 1,
                offset: 7,
                data: vec![9, 8, 7],
            },
        ),
        (
            "transfer progress",
            ServerMsg::TransferProgress {
                transfer: 1,
                received: 10,
            },
        ),
        (
            "profile with avatar",
            ServerMsg::Profile {
                card: card(),
                avatar: Some(AvatarImage {
                    mime: "image/webp".into(),
                    data: vec![b'R', b'I', b'F', b'F', 0, 255],
                }),
            },
        ),
        (
            "room members change",
            ServerMsg::RoomMembers {
                room: 300,
                name: String::new(),
                full: false,
                members: vec![RoomMember {
                    user: user("dave"),
                    role: None,
                    presence: Presence::Busy,
                }],
            },
        ),
        ("room left", ServerMsg::RoomLeft { room: 1 }),
        (
            "room deliver",
            ServerMsg::RoomDeliver(RoomDelivery {
                room: 7,
                seq: u64::MAX,
                from: user("alice"),
                id: 1 << 60,
                body: "hi ☃".into(),
                sent_at_ms: 1_700_000_000_000,
            }),
        ),
        (
            "room history",
            ServerMsg::RoomHistory {
                room: 7,
                items: vec![RoomDelivery {
                    room: 7,
                    seq: 2,
                    from: user("bob"),
                    id: 0,
                    body: String::new(),
                    sent_at_ms: 0,
                }],
            },
        ),
        (
            "history",
            ServerMsg::History {
                with: user("bob"),
                items: vec![
                    HistoryItem {
                        seq: 10,
                        id: 1,
                        from: user("alice"),
                        to: user("bob"),
                        body: "hello".into(),
                        attachment: None,
                        sent_at_ms: 1,
                    },
                    HistoryItem {
                        seq: 11,
                        id: u64::MAX,
                        from: user("bob"),
                        to: user("alice"),
                        body: "pic".into(),
                        attachment: Some(AttachmentInfo {
                            mime: "image/jpeg".into(),
                            name: "cat.jpg".into(),
                            size: 123_456,
                        }),
                        sent_at_ms: 1_765_000_000_000,
                    },
                ],
            },
        ),
        (
            "history empty",
            ServerMsg::History {
                with: user("bob"),
                items: vec![],
            },
        ),
        ("pong", ServerMsg::Pong { nonce: u64::MAX }),
        (
            "error send",
            ServerMsg::Error {
                request: RequestKind::Send,
                code: ErrorCode::NoSuchUser,
                id: Some(42),
            },
        ),
        (
            "who",
            ServerMsg::Who {
                users: vec![
                    WhoEntry {
                        user: user("alice"),
                        status: Status::Online,
                        sessions: vec![WhoSession {
                            node: u32::MAX,
                            conn: u64::MAX,
                            connected_for_ms: 1000,
                            idle_ms: 0,
                        }],
                    },
                    WhoEntry {
                        user: user("bob"),
                        status: Status::Away,
                        sessions: vec![],
                    },
                ],
                connections: 2,
            },
        ),
        (
            "throttled",
            ServerMsg::Throttled {
                request: RequestKind::Login,
                retry_after_ms: 4000,
            },
        ),
        (
            "admin done",
            ServerMsg::AdminDone {
                request: RequestKind::AdminBan,
                user: user("mallory"),
                sessions: 300,
            },
        ),
    ];
    for request in all_requests {
        v.push((
            "error every request",
            ServerMsg::Error {
                request,
                code: ErrorCode::Busy,
                id: None,
            },
        ));
    }
    for code in all_codes {
        v.push((
            "error every code",
            ServerMsg::Error {
                request: RequestKind::Login,
                code,
                id: None,
            },
        ));
    }
    for outcome in [
        TransferOutcome::Completed,
        TransferOutcome::Declined,
        TransferOutcome::Cancelled,
        TransferOutcome::PeerLeft,
        TransferOutcome::HashMismatch,
        TransferOutcome::AnsweredElsewhere,
        TransferOutcome::Broken,
    ] {
        v.push((
            "transfer ended every outcome",
            ServerMsg::TransferEnded {
                sender: user("alice"),
                transfer: 1,
                outcome,
            },
        ));
    }
    for reason in all_reasons {
        v.push(("bye every reason", ServerMsg::Bye { reason }));
    }
    v
}

fn render() -> String {
    let mut all = Vec::new();
    for (name, msg) in client_vectors() {
        all.push(vector("ClientMsg", name, &msg));
    }
    for (name, msg) in server_vectors() {
        all.push(vector("ServerMsg", name, &msg));
    }
    let mut text = serde_json::to_string_pretty(&json!({
        "about": "Generated by core/tests/web_vectors.rs from the Rust wire types; do not edit. \
                  Regenerate: BREEZE_WRITE_VECTORS=1 cargo test -p breeze-core --test web_vectors",
        "vectors": all,
    }))
    .expect("json");
    text.push('\n');
    text
}

#[test]
fn web_codec_vectors_are_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/test/vectors.json");
    let want = render();
    if std::env::var_os("BREEZE_WRITE_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write web/test/vectors.json");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale (or missing): the wire types changed. Regenerate it with \
         `BREEZE_WRITE_VECTORS=1 cargo test -p breeze-core --test web_vectors`, then run \
         `node --test web/test/` to see whether web/codec.js still agrees.",
        path.display()
    );
}

/// Each `ClientMsg` variant's index, by an exhaustive match: a variant appended to the enum
/// does not compile until it is listed here, which leads to giving it a vector (and JS code).
fn client_index(m: &ClientMsg) -> u8 {
    match m {
        ClientMsg::Hello { .. } => 0,
        ClientMsg::Register { .. } => 1,
        ClientMsg::Login { .. } => 2,
        ClientMsg::Logout => 3,
        ClientMsg::ChangePassword { .. } => 4,
        ClientMsg::SetStatus { .. } => 5,
        ClientMsg::AddContact { .. } => 6,
        ClientMsg::RemoveContact { .. } => 7,
        ClientMsg::Send { .. } => 8,
        ClientMsg::Ack { .. } => 9,
        ClientMsg::Ping { .. } => 10,
        ClientMsg::History { .. } => 11,
        ClientMsg::AdminWho => 12,
        ClientMsg::ChangeContacts { .. } => 13,
        ClientMsg::AgentLogin { .. } => 14,
        ClientMsg::AdminKick { .. } => 15,
        ClientMsg::AdminBan { .. } => 16,
        ClientMsg::AdminUnban { .. } => 17,
        ClientMsg::CreateGroup { .. } => 18,
        ClientMsg::EditGroup { .. } => 19,
        ClientMsg::MoveContacts { .. } => 20,
        ClientMsg::SetProfile { .. } => 21,
        ClientMsg::SetAvatar { .. } => 22,
        ClientMsg::GetProfile { .. } => 23,
        ClientMsg::CreateRoom { .. } => 24,
        ClientMsg::RoomInvite { .. } => 25,
        ClientMsg::RoomRemove { .. } => 26,
        ClientMsg::RoomSend { .. } => 27,
        ClientMsg::RoomAck { .. } => 28,
        ClientMsg::RoomHistory { .. } => 29,
        ClientMsg::OfferFile { .. } => 30,
        ClientMsg::AnswerFile { .. } => 31,
        ClientMsg::RelayFile { .. } => 32,
        ClientMsg::TransferChunk { .. } => 33,
        ClientMsg::TransferAck { .. } => 34,
        ClientMsg::TransferDone { .. } => 35,
        ClientMsg::CancelFile { .. } => 36,
    }
}
const CLIENT_VARIANTS: u8 = 37;

/// As `client_index`, for `ServerMsg`.
fn server_index(m: &ServerMsg) -> u8 {
    match m {
        ServerMsg::Welcome { .. } => 0,
        ServerMsg::Registered { .. } => 1,
        ServerMsg::LoginOk { .. } => 2,
        ServerMsg::PresenceSnapshot { .. } => 3,
        ServerMsg::PresenceDiff { .. } => 4,
        ServerMsg::OwnStatus { .. } => 5,
        ServerMsg::ContactsChanged { .. } => 6,
        ServerMsg::PasswordChanged => 7,
        ServerMsg::Sent { .. } => 8,
        ServerMsg::Deliver(_) => 9,
        ServerMsg::OfflineDone { .. } => 10,
        ServerMsg::History { .. } => 11,
        ServerMsg::Pong { .. } => 12,
        ServerMsg::Error { .. } => 13,
        ServerMsg::Who { .. } => 14,
        ServerMsg::Bye { .. } => 15,
        ServerMsg::Throttled { .. } => 16,
        ServerMsg::AdminDone { .. } => 17,
        ServerMsg::OfflineWaiting { .. } => 18,
        ServerMsg::Groups { .. } => 19,
        ServerMsg::GroupsChanged { .. } => 20,
        ServerMsg::ProfileSnapshot { .. } => 21,
        ServerMsg::ProfileDiff { .. } => 22,
        ServerMsg::Profile { .. } => 23,
        ServerMsg::RoomMembers { .. } => 24,
        ServerMsg::RoomLeft { .. } => 25,
        ServerMsg::RoomDeliver(_) => 26,
        ServerMsg::RoomHistory { .. } => 27,
        ServerMsg::FileOffered { .. } => 28,
        ServerMsg::TransferAccepted { .. } => 29,
        ServerMsg::TransferStart { .. } => 30,
        ServerMsg::TransferRelay { .. } => 31,
        ServerMsg::TransferData { .. } => 32,
        ServerMsg::TransferProgress { .. } => 33,
        ServerMsg::TransferEnded { .. } => 34,
    }
}
const SERVER_VARIANTS: u8 = 35;

#[test]
fn every_variant_has_a_vector() {
    let mut client = Vec::new();
    for (name, m) in client_vectors() {
        assert_eq!(
            encode(&m)[0],
            client_index(&m),
            "ClientMsg vector {name:?}: index"
        );
        client.push(client_index(&m));
    }
    let mut server = Vec::new();
    for (name, m) in server_vectors() {
        assert_eq!(
            encode(&m)[0],
            server_index(&m),
            "ServerMsg vector {name:?}: index"
        );
        server.push(server_index(&m));
    }
    for i in 0..CLIENT_VARIANTS {
        assert!(
            client.contains(&i),
            "no ClientMsg vector with variant index {i}"
        );
    }
    for i in 0..SERVER_VARIANTS {
        assert!(
            server.contains(&i),
            "no ServerMsg vector with variant index {i}"
        );
    }
}
