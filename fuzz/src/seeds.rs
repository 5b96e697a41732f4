//! The checked-in seed corpus, as code: `fuzz/corpus/<target>/seed-*` are these inputs.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml` checks that the files match; run it with
//! `BREEZE_FUZZ_WRITE_SEEDS=1` to (re)write them after changing this file.

use crate::frame_decoder;
use crate::server_core::input::{Att, Body, Cred, Label, Msg, Name, Op, Pw, Reason, St};
use crate::server_core::{Blob, Encode, ServerInput, Setup, Step};
use breeze_core::UserId;
use breeze_core::codec::encode_frame;
use breeze_core::message::{
    Attachment, ClientMsg, CloseReason, Credential, Delivery, ErrorCode, MAGIC, PROTOCOL_VERSION,
    Presence, PresenceEntry, RequestKind, ServerMsg, Status, WatchScope,
};

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid")
}

fn frames(msgs: &[ClientMsg]) -> Vec<u8> {
    msgs.iter().flat_map(|m| encode_frame(m).to_vec()).collect()
}

fn server_frames(msgs: &[ServerMsg]) -> Vec<u8> {
    msgs.iter().flat_map(|m| encode_frame(m).to_vec()).collect()
}

fn hello() -> ClientMsg {
    ClientMsg::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "seed".into(),
    }
}

/// Seeds for `frame_decoder`: (file name, bytes).
pub fn frame_decoder() -> Vec<(&'static str, Vec<u8>)> {
    let session = frames(&[
        hello(),
        ClientMsg::Login {
            user: user("alice"),
            credential: Credential::Password("correct horse".into()),
            status: Status::Away,
        },
        ClientMsg::Send {
            id: 300,
            to: user("bob"),
            body: "hello bob".into(),
            attachment: Some(Attachment {
                mime: "text/plain".into(),
                name: "a.txt".into(),
                data: b"attached".to_vec(),
            }),
        },
        ClientMsg::Ack {
            seqs: vec![1, 2, 300],
        },
        ClientMsg::History {
            with: user("bob"),
            before: Some(99),
            limit: 20,
        },
        ClientMsg::Ping { nonce: 300 },
        ClientMsg::Logout,
    ]);
    let server = server_frames(&[
        ServerMsg::Welcome {
            version: PROTOCOL_VERSION,
            heartbeat_interval_ms: 10_000,
            heartbeat_timeout_ms: 30_000,
            max_frame: 1024,
            max_attachment: 512,
            max_body: 256,
            scope: WatchScope::Contacts,
            max_contacts: 10,
            frame_rate: 100,
            frame_burst: 200,
        },
        ServerMsg::LoginOk {
            user: user("alice"),
            status: Status::Online,
            resume_token: b"token-1".to_vec(),
            contacts: vec![user("bob")],
        },
        ServerMsg::PresenceSnapshot {
            entries: vec![PresenceEntry {
                user: user("bob"),
                presence: Presence::Busy,
            }],
        },
        ServerMsg::Deliver(Delivery {
            seq: 7,
            from: user("bob"),
            id: 1,
            body: "hi".into(),
            attachment: None,
            sent_at_ms: 1_700_000_000_000,
        }),
        ServerMsg::Error {
            request: RequestKind::Send,
            code: ErrorCode::TooLarge,
            id: Some(3),
        },
        ServerMsg::Bye {
            reason: CloseReason::Replaced,
        },
    ]);
    let big = frames(&[
        ClientMsg::Ping { nonce: 1 },
        ClientMsg::Send {
            id: 1,
            to: user("bob"),
            body: "far too long for a limit of sixteen bytes".into(),
            attachment: None,
        },
        ClientMsg::Ping { nonce: 2 },
    ]);
    let hello = encode_frame(&hello()).to_vec();
    let mut truncated = frames(&[ClientMsg::AdminWho, ClientMsg::Logout]);
    truncated.extend_from_slice(&hello[..hello.len() - 3]);
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(b"not buffered");
    vec![
        ("seed-hello", frame_decoder::input(510, &[], &hello)),
        (
            "seed-client-session-chunked",
            frame_decoder::input(510, &[1, 3, 7, 0, 64], &session),
        ),
        (
            "seed-server-msgs",
            frame_decoder::input(510, &[5, 11], &server),
        ),
        ("seed-over-limit", frame_decoder::input(16, &[2], &big)),
        (
            "seed-huge-length",
            frame_decoder::input(100, &[2, 1], &huge),
        ),
        ("seed-truncated", frame_decoder::input(64, &[4], &truncated)),
        // Chunk lengths that are all empty reads (0 and 65 are both 0 mod 65).
        (
            "seed-empty-reads",
            frame_decoder::input(510, &[0, 65], &hello),
        ),
    ]
}

fn step(op: Op) -> Step {
    Step { op, hold: false }
}

fn open() -> Op {
    Op::Open { from: 0 }
}

fn held(op: Op) -> Step {
    Step { op, hold: true }
}

fn f(conn: u8, msg: Msg) -> Step {
    step(Op::Frame { conn, msg })
}

fn hello_msg() -> Msg {
    Msg::Hello {
        bad_magic: false,
        bad_version: false,
        long_client: false,
    }
}

/// `Name(n)`: `u{n}` for n in 0..5.
fn u(n: u8) -> Name {
    Name(n)
}

fn login(user: u8, pw: u8, status: St) -> Msg {
    Msg::Login {
        user: u(user),
        credential: Cred::Password(Pw(pw)),
        status,
    }
}

fn send(id: u8, to: u8, body: u8, attachment: Option<Att>) -> Msg {
    Msg::Send {
        id,
        to: u(to),
        body: Body(body),
        attachment,
    }
}

/// Seeds for `server_core`: (file name, input).
pub fn server_core_inputs() -> Vec<(&'static str, ServerInput)> {
    use Op::*;
    let login_and_message = ServerInput {
        setup: Setup::default(),
        steps: vec![
            step(open()),
            f(0, hello_msg()),
            f(0, login(0, 0, St::Online)),
            step(Complete { pick: 0 }),
            step(Complete { pick: 0 }),
            step(open()),
            f(1, hello_msg()),
            f(1, login(1, 0, St::Busy)),
            step(Settle),
            f(1, send(1, 0, 0, None)),
            f(
                1,
                send(
                    2,
                    0,
                    2,
                    Some(Att {
                        mime: Label(0),
                        name: Label(0),
                        size: 8,
                    }),
                ),
            ),
            step(Settle),
            f(
                0,
                Msg::Ack {
                    seqs: Blob(vec![1, 2]),
                    too_many: false,
                },
            ),
            f(0, Msg::SetStatus { status: St::Away }),
            f(
                0,
                Msg::History {
                    with: u(1),
                    before: None,
                    limit: 10,
                },
            ),
            f(0, Msg::AdminWho),
            step(Settle),
            f(1, Msg::Ping { nonce: 9 }),
            f(0, Msg::Logout),
            step(Advance { ms: 40_000 }),
        ],
    };
    let register_token_contacts = ServerInput {
        setup: Setup {
            multi: true,
            contacts_scope: true,
            grace: true,
        },
        steps: vec![
            step(open()),
            f(0, hello_msg()),
            f(
                0,
                Msg::Register {
                    user: u(3),
                    password: Pw(1),
                },
            ),
            step(Settle),
            f(0, login(3, 1, St::Online)),
            step(Settle),
            f(0, Msg::AddContact { user: u(0) }),
            step(Settle),
            step(open()),
            f(1, hello_msg()),
            f(1, login(0, 0, St::Online)),
            step(Settle),
            f(1, Msg::AddContact { user: u(3) }),
            step(Settle),
            // One contact is the fuzz configuration's limit.
            f(1, Msg::AddContact { user: u(1) }),
            step(open()),
            f(2, hello_msg()),
            f(
                2,
                Msg::Login {
                    user: u(3),
                    credential: Cred::Token(0),
                    status: St::Invisible,
                },
            ),
            step(Settle),
            f(
                2,
                Msg::ChangePassword {
                    old: Pw(1),
                    new: Pw(2),
                },
            ),
            step(Settle),
            f(0, Msg::RemoveContact { user: u(0) }),
            step(Settle),
            step(Close { conn: 1 }),
            step(Advance { ms: 6_000 }),
            step(Abort {
                conn: 0,
                reason: Reason::SlowReader,
            }),
            f(2, Msg::Logout),
        ],
    };
    let deferred_storage = ServerInput {
        setup: Setup::default(),
        steps: vec![
            step(open()),
            f(0, hello_msg()),
            f(0, login(2, 0, St::Online)),
            step(Apply { pick: 0 }),
            step(Report { pick: 0 }),
            step(Complete { pick: 0 }),
            // Messages to u1 while it is offline.
            f(0, send(1, 1, 0, None)),
            f(0, send(2, 1, 0, None)),
            step(Settle),
            step(open()),
            f(1, hello_msg()),
            f(1, login(1, 0, St::Online)),
            step(Complete { pick: 0 }),
            // The mailbox is read but its result waits; a message stored and reported
            // meanwhile is held back, then comes after the mailbox, once.
            step(Apply { pick: 0 }),
            f(0, send(3, 1, 2, None)),
            step(Complete { pick: 0 }),
            step(Report { pick: 0 }),
            // A second login of u2 replaces the first; the history read fails in storage.
            step(open()),
            f(2, hello_msg()),
            f(2, login(2, 0, St::Busy)),
            f(
                1,
                Msg::History {
                    with: u(2),
                    before: Some(3),
                    limit: 2,
                },
            ),
            step(Fail { pick: 1 }),
            step(Settle),
            // A re-send of an id u2 already used: Sent again, not delivered again.
            f(2, send(1, 1, 0, None)),
            step(Settle),
            f(
                1,
                Msg::Ack {
                    seqs: Blob(vec![1, 2, 3]),
                    too_many: false,
                },
            ),
            f(
                1,
                Msg::Ack {
                    seqs: Blob(vec![]),
                    too_many: true,
                },
            ),
            step(Settle),
        ],
    };
    let raw_and_timeouts = ServerInput {
        setup: Setup {
            multi: false,
            contacts_scope: false,
            grace: true,
        },
        steps: vec![
            step(open()),
            step(Frame {
                conn: 0,
                msg: Msg::Ping { nonce: 1 },
            }),
            step(open()),
            step(Raw {
                conn: 1,
                bytes: Blob(encode_frame(&hello())[4..].to_vec()),
            }),
            step(Raw {
                conn: 1,
                bytes: Blob(vec![0xff, 0xff, 0xff]),
            }),
            step(open()),
            f(
                2,
                Msg::Hello {
                    bad_magic: true,
                    bad_version: false,
                    long_client: false,
                },
            ),
            step(open()),
            f(
                3,
                Msg::Hello {
                    bad_magic: false,
                    bad_version: true,
                    long_client: false,
                },
            ),
            step(open()),
            step(Advance { ms: 9_999 }),
            step(Advance { ms: 1 }),
            step(open()),
            f(5, hello_msg()),
            f(5, login(0, 3, St::Online)),
            f(5, login(0, 0, St::Online)),
            step(Settle),
            step(Advance { ms: 29_999 }),
            f(5, Msg::Ping { nonce: 2 }),
            step(Advance { ms: 30_000 }),
            step(Advance { ms: 4_000 }),
            step(open()),
            f(6, hello_msg()),
            step(Shutdown),
        ],
    };
    let batched = ServerInput {
        setup: Setup {
            multi: true,
            contacts_scope: false,
            grace: false,
        },
        steps: vec![
            held(open()),
            held(open()),
            held(open()),
            held(Frame {
                conn: 0,
                msg: hello_msg(),
            }),
            held(Frame {
                conn: 1,
                msg: hello_msg(),
            }),
            held(Frame {
                conn: 2,
                msg: hello_msg(),
            }),
            held(Frame {
                conn: 0,
                msg: login(0, 0, St::Online),
            }),
            held(Frame {
                conn: 1,
                msg: login(1, 0, St::Away),
            }),
            held(Frame {
                conn: 2,
                msg: login(0, 0, St::Busy),
            }),
            step(Settle),
            held(Frame {
                conn: 0,
                msg: Msg::SetStatus { status: St::Busy },
            }),
            held(Frame {
                conn: 0,
                msg: Msg::SetStatus { status: St::Online },
            }),
            held(Frame {
                conn: 1,
                msg: Msg::SetStatus {
                    status: St::Invisible,
                },
            }),
            held(Close { conn: 2 }),
            step(Frame {
                conn: 1,
                msg: send(5, 0, 0, None),
            }),
            held(Complete { pick: 0 }),
            held(Close { conn: 0 }),
            held(Abort {
                conn: 1,
                reason: Reason::Flooding,
            }),
            step(Settle),
        ],
    };
    let throttle_and_flood = ServerInput {
        setup: Setup::default(),
        steps: {
            let mut steps = vec![
                step(Open { from: 1 }),
                f(0, hello_msg()),
                f(0, login(0, 3, St::Online)),
                step(Settle),
                f(0, login(0, 2, St::Online)),
                step(Settle),
                f(0, login(0, 1, St::Online)),
                step(Settle),
                // Three failures: u0 and the address wait a second.
                f(0, login(0, 0, St::Online)),
                step(Settle),
                step(Advance { ms: 1_000 }),
                f(0, login(0, 0, St::Online)),
                step(Settle),
                // Another connection from the same address floods.
                step(Open { from: 1 }),
                f(1, hello_msg()),
            ];
            steps.extend((0..16).map(|n| f(1, Msg::Ping { nonce: n })));
            steps.push(step(Advance { ms: 20_000 }));
            steps
        },
    };
    let mailbox_pages = ServerInput {
        setup: Setup::default(),
        steps: vec![
            step(open()),
            f(0, hello_msg()),
            f(0, login(0, 0, St::Online)),
            step(Settle),
            f(0, send(1, 1, 0, None)),
            f(0, send(2, 1, 0, None)),
            f(0, send(3, 1, 0, None)),
            step(Settle),
            step(open()),
            f(1, hello_msg()),
            f(1, login(1, 0, St::Online)),
            // Page one: seqs 1 and 2, more to come.
            step(Settle),
            // Stored while the session waits for the ack: the next page brings it.
            f(0, send(4, 1, 0, None)),
            step(Settle),
            f(
                1,
                Msg::Ack {
                    seqs: Blob(vec![2]),
                    too_many: false,
                },
            ),
            step(Settle),
            f(
                1,
                Msg::Ack {
                    seqs: Blob(vec![1, 3, 4]),
                    too_many: false,
                },
            ),
            step(Settle),
            f(0, send(5, 1, 0, None)),
            step(Settle),
        ],
    };
    vec![
        ("seed-mailbox-pages", mailbox_pages),
        ("seed-login-and-message", login_and_message),
        ("seed-throttle-and-flood", throttle_and_flood),
        ("seed-register-token-contacts", register_token_contacts),
        ("seed-deferred-storage", deferred_storage),
        ("seed-raw-and-timeouts", raw_and_timeouts),
        ("seed-batched", batched),
    ]
}

/// Minimal reproducers of what the fuzzer found, kept as regression inputs
/// (`corpus/server_core/regress-*`).
pub fn server_core_regressions() -> Vec<(&'static str, ServerInput)> {
    use Op::*;
    vec![(
        // A host aborts a session's connection with `CloseReason::Replaced`: the core takes
        // it for a replacement in progress and never counts the user offline (see
        // fuzz/README.md, "Known crashes").
        "regress-abort-replaced-ghost",
        ServerInput {
            setup: Setup::default(),
            steps: vec![
                step(open()),
                f(0, hello_msg()),
                f(0, login(1, 0, St::Online)),
                step(Settle),
                step(Abort {
                    conn: 0,
                    reason: Reason::Replaced,
                }),
            ],
        },
    )]
}

/// Seeds and regressions for `server_core`, encoded: (file name, bytes).
pub fn server_core() -> Vec<(&'static str, Vec<u8>)> {
    server_core_inputs()
        .into_iter()
        .chain(server_core_regressions())
        .map(|(name, input)| {
            let mut bytes = Vec::new();
            input.encode(&mut bytes);
            (name, bytes)
        })
        .collect()
}
