//! Scenario tests of direct transfers: offers and their refusals, the answer, the relay's
//! window, and the one teardown path.

use crate::config::{DuplicateLogin, ServerConfig, TransferLimits};
use crate::ids::ConnId;
use crate::message::{
    ClientMsg, DirectEndpoint, ErrorCode, GROUPS_VERSION, RequestKind, ServerMsg, Status,
    TransferOutcome,
};
use crate::testkit::Rig;
use crate::testkit::rig::user;

const HASH: [u8; 32] = [7; 32];

/// What a connection was told about transfers: presence and profile news, which sessions
/// coming and going cause, are beside the point here.
trait News {
    fn news(&mut self, conn: ConnId) -> Vec<ServerMsg>;
}

impl News for Rig {
    fn news(&mut self, conn: ConnId) -> Vec<ServerMsg> {
        self.take(conn)
            .into_iter()
            .filter(|m| {
                !matches!(
                    m,
                    ServerMsg::PresenceDiff { .. }
                        | ServerMsg::PresenceSnapshot { .. }
                        | ServerMsg::ProfileDiff { .. }
                        | ServerMsg::ProfileSnapshot { .. }
                )
            })
            .collect()
    }
}

fn new_rig() -> Rig {
    let mut rig = Rig::new(
        ServerConfig {
            duplicate_login: DuplicateLogin::Multi,
            transfers: TransferLimits {
                max_size: 1000,
                per_user: 2,
                window: 100,
            },
            ..ServerConfig::default()
        },
        &["alice", "bob", "carol"],
    );
    rig.server.set_transfer_key([42; 32]);
    rig
}

/// A logged-in session of `name` with its login frames taken.
fn session(rig: &mut Rig, name: &str) -> ConnId {
    let conn = rig.login(name, Status::Online);
    rig.news(conn);
    conn
}

fn offer(transfer: u64, to: &str, size: u64) -> ClientMsg {
    ClientMsg::OfferFile {
        transfer,
        to: user(to),
        name: "photos.zip".into(),
        size,
        sha256: HASH,
        direct: Some(DirectEndpoint {
            addrs: vec!["127.0.0.1:4000".into()],
            tls_fingerprint: None,
        }),
    }
}

fn answer(transfer: u64, accept: bool, offset: u64) -> ClientMsg {
    ClientMsg::AnswerFile {
        from: user("alice"),
        transfer,
        accept,
        offset,
    }
}

fn refused(request: RequestKind, code: ErrorCode, id: u64) -> ServerMsg {
    ServerMsg::Error {
        request,
        code,
        id: Some(id),
    }
}

fn ended(transfer: u64, outcome: TransferOutcome) -> ServerMsg {
    ServerMsg::TransferEnded {
        sender: user("alice"),
        transfer,
        outcome,
    }
}

fn token_of(msgs: &[ServerMsg]) -> [u8; 32] {
    match msgs {
        [ServerMsg::TransferAccepted { token, .. }] => *token,
        other => panic!("expected TransferAccepted, got {other:?}"),
    }
}

#[test]
fn an_offer_reaches_every_session_and_the_first_answer_wins() {
    let mut rig = new_rig();
    let alice = session(&mut rig, "alice");
    let (bob1, bob2) = (session(&mut rig, "bob"), session(&mut rig, "bob"));
    rig.frame(alice, offer(1, "bob", 500));
    let offered = ServerMsg::FileOffered {
        from: user("alice"),
        transfer: 1,
        name: "photos.zip".into(),
        size: 500,
        sha256: HASH,
    };
    assert_eq!(rig.news(bob1), std::slice::from_ref(&offered));
    assert_eq!(rig.news(bob2), [offered]);
    assert_eq!(rig.news(alice), []);

    rig.frame(bob2, answer(1, true, 120));
    let token = token_of(&rig.news(alice));
    assert_eq!(
        rig.news(bob2),
        [ServerMsg::TransferStart {
            from: user("alice"),
            transfer: 1,
            offset: 120,
            token,
            direct: Some(DirectEndpoint {
                addrs: vec!["127.0.0.1:4000".into()],
                tls_fingerprint: None,
            }),
        }]
    );
    assert_eq!(
        rig.news(bob1),
        [ended(1, TransferOutcome::AnsweredElsewhere)]
    );
    // The late answer finds no offer.
    rig.frame(bob1, answer(1, true, 0));
    assert_eq!(
        rig.news(bob1),
        [refused(
            RequestKind::AnswerFile,
            ErrorCode::NoSuchTransfer,
            1
        )]
    );
}

#[test]
fn tokens_differ_per_transfer_and_per_secret() {
    let mut tokens = Vec::new();
    for secret in [[1; 32], [2; 32]] {
        let mut rig = new_rig();
        rig.server.set_transfer_key(secret);
        let alice = session(&mut rig, "alice");
        let bob = session(&mut rig, "bob");
        for id in 1..=2 {
            rig.frame(alice, offer(id, "bob", 10));
            rig.frame(bob, answer(id, true, 0));
            tokens.push(token_of(&rig.news(alice)));
            rig.news(bob);
        }
    }
    let mut distinct = tokens.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), tokens.len(), "{tokens:?}");
}

#[test]
fn refusals_are_clear_errors() {
    let mut rig = new_rig();
    let alice = session(&mut rig, "alice");
    let refusal = |rig: &mut Rig, msg: ClientMsg| {
        rig.frame(alice, msg);
        match rig.news(alice).as_slice() {
            [ServerMsg::Error { code, .. }] => *code,
            other => panic!("expected one error, got {other:?}"),
        }
    };
    // Carol is registered but not online.
    assert_eq!(
        refusal(&mut rig, offer(1, "carol", 10)),
        ErrorCode::ReceiverOffline
    );
    assert_eq!(
        refusal(&mut rig, offer(1, "nobody", 10)),
        ErrorCode::NoSuchUser
    );
    let bob = session(&mut rig, "bob");
    assert_eq!(
        refusal(&mut rig, offer(1, "bob", 1001)),
        ErrorCode::TooLarge
    );
    assert_eq!(
        refusal(&mut rig, offer(1, "alice", 10)),
        ErrorCode::Forbidden
    );
    for name in ["../../.bashrc", "a\u{202E}txt.exe", "two\nlines", ""] {
        let msg = ClientMsg::OfferFile {
            transfer: 1,
            to: user("bob"),
            name: name.into(),
            size: 10,
            sha256: HASH,
            direct: None,
        };
        assert_eq!(refusal(&mut rig, msg), ErrorCode::InvalidName, "{name:?}");
    }
    let bad_addr = ClientMsg::OfferFile {
        transfer: 1,
        to: user("bob"),
        name: "a".into(),
        size: 10,
        sha256: HASH,
        direct: Some(DirectEndpoint {
            addrs: vec!["not an address".into()],
            tls_fingerprint: None,
        }),
    };
    assert_eq!(refusal(&mut rig, bad_addr), ErrorCode::Malformed);
    // Two at once per user; the third is refused, a declined one frees its place.
    rig.frame(alice, offer(1, "bob", 10));
    rig.frame(alice, offer(2, "bob", 10));
    assert_eq!(
        refusal(&mut rig, offer(3, "bob", 10)),
        ErrorCode::TooManyTransfers
    );
    rig.news(bob);
    rig.frame(bob, answer(2, false, 0));
    assert_eq!(rig.news(alice), [ended(2, TransferOutcome::Declined)]);
    assert_eq!(rig.news(bob), [ended(2, TransferOutcome::Declined)]);
    rig.frame(alice, offer(3, "bob", 10));
    assert_eq!(rig.news(alice), []);
    assert_eq!(rig.server.transfers_in_progress(), 2);
}

#[test]
fn without_a_key_transfers_are_off() {
    let mut rig = Rig::new(ServerConfig::default(), &["alice", "bob"]);
    let alice = session(&mut rig, "alice");
    session(&mut rig, "bob");
    rig.frame(alice, offer(1, "bob", 10));
    assert_eq!(
        rig.news(alice),
        [refused(RequestKind::OfferFile, ErrorCode::Forbidden, 1)]
    );
}

#[test]
fn an_older_client_is_never_offered_and_cannot_offer() {
    let mut rig = new_rig();
    let alice = session(&mut rig, "alice");
    let old_bob = rig.login_speaking("bob", Status::Online, GROUPS_VERSION);
    rig.news(old_bob);
    rig.frame(alice, offer(1, "bob", 10));
    assert_eq!(
        rig.news(alice),
        [refused(
            RequestKind::OfferFile,
            ErrorCode::ReceiverOffline,
            1
        )]
    );
    assert_eq!(rig.news(old_bob), []);
    // From a version-2 connection, a version-3 request is what its server could not decode.
    rig.frame(old_bob, offer(1, "alice", 10));
    assert!(rig.closed.contains_key(&old_bob));
}

/// Accepts transfer 1 of `size` bytes from alice to bob and switches it to the relay.
fn relaying(rig: &mut Rig, size: u64) -> (ConnId, ConnId) {
    let alice = session(rig, "alice");
    let bob = session(rig, "bob");
    rig.frame(alice, offer(1, "bob", size));
    rig.frame(bob, answer(1, true, 0));
    rig.news(alice);
    rig.news(bob);
    rig.frame(
        bob,
        ClientMsg::RelayFile {
            from: user("alice"),
            transfer: 1,
            offset: 0,
        },
    );
    assert_eq!(
        rig.news(alice),
        [ServerMsg::TransferRelay {
            transfer: 1,
            offset: 0,
            window: 100,
        }]
    );
    (alice, bob)
}

fn chunk(offset: u64, len: usize) -> ClientMsg {
    ClientMsg::TransferChunk {
        transfer: 1,
        offset,
        data: vec![offset as u8; len],
    }
}

fn ack(received: u64) -> ClientMsg {
    ClientMsg::TransferAck {
        from: user("alice"),
        transfer: 1,
        received,
    }
}

#[test]
fn the_relay_forwards_within_the_window_and_ends_on_the_hash_check() {
    let mut rig = new_rig();
    let (alice, bob) = relaying(&mut rig, 250);
    rig.frame(alice, chunk(0, 60));
    rig.frame(alice, chunk(60, 40));
    let got = rig.news(bob);
    assert_eq!(got.len(), 2);
    assert!(matches!(
        &got[1],
        ServerMsg::TransferData { offset: 60, data, .. } if data.len() == 40
    ));
    rig.frame(bob, ack(60));
    assert_eq!(
        rig.news(alice),
        [ServerMsg::TransferProgress {
            transfer: 1,
            received: 60
        }]
    );
    // 60 acked, 100 sent: 60 more fit the window of 100.
    rig.frame(alice, chunk(100, 60));
    assert_eq!(rig.news(bob).len(), 1);
    rig.frame(bob, ack(160));
    rig.frame(alice, chunk(160, 90));
    rig.frame(bob, ack(250));
    rig.news(alice);
    rig.frame(
        bob,
        ClientMsg::TransferDone {
            from: user("alice"),
            transfer: 1,
            verified: false,
        },
    );
    let mismatch = ended(1, TransferOutcome::HashMismatch);
    assert_eq!(rig.news(bob).last(), Some(&mismatch));
    assert_eq!(rig.news(alice), [mismatch]);
    assert_eq!(rig.server.transfers_in_progress(), 0);
}

#[test]
fn a_chunk_past_the_window_or_out_of_place_breaks_the_transfer() {
    for bad in [chunk(0, 101), chunk(10, 10), chunk(0, 0)] {
        let mut rig = new_rig();
        let (alice, bob) = relaying(&mut rig, 250);
        rig.frame(alice, bad.clone());
        assert_eq!(
            rig.news(alice),
            [
                refused(RequestKind::TransferChunk, ErrorCode::TooLarge, 1),
                ended(1, TransferOutcome::Broken)
            ],
            "{bad:?}"
        );
        assert_eq!(rig.news(bob), [ended(1, TransferOutcome::Broken)]);
    }
    // An ack for bytes never sent breaks it too.
    let mut rig = new_rig();
    let (alice, bob) = relaying(&mut rig, 250);
    rig.frame(alice, chunk(0, 50));
    rig.news(bob);
    rig.frame(bob, ack(51));
    assert_eq!(rig.news(alice), [ended(1, TransferOutcome::Broken)]);
}

#[test]
fn only_the_sides_may_touch_a_transfer() {
    let mut rig = new_rig();
    let (alice, bob) = relaying(&mut rig, 250);
    let carol = session(&mut rig, "carol");
    rig.frame(carol, ack(0));
    rig.frame(
        carol,
        ClientMsg::CancelFile {
            sender: user("alice"),
            transfer: 1,
        },
    );
    // Carol's own transfer 1 does not exist: chunks are keyed by their sender.
    rig.frame(carol, chunk(0, 10));
    assert_eq!(
        rig.news(carol),
        [
            refused(RequestKind::TransferAck, ErrorCode::NoSuchTransfer, 1),
            refused(RequestKind::CancelFile, ErrorCode::NoSuchTransfer, 1),
            refused(RequestKind::TransferChunk, ErrorCode::NoSuchTransfer, 1),
        ]
    );
    assert_eq!(rig.news(alice), []);
    assert_eq!(rig.news(bob), []);
    rig.frame(
        bob,
        ClientMsg::CancelFile {
            sender: user("alice"),
            transfer: 1,
        },
    );
    assert_eq!(rig.news(alice), [ended(1, TransferOutcome::Cancelled)]);
    assert_eq!(rig.news(bob), [ended(1, TransferOutcome::Cancelled)]);
}

#[test]
fn a_side_leaving_ends_its_transfers_for_the_other() {
    // The receiver's session ends mid-relay.
    let mut rig = new_rig();
    let (alice, bob) = relaying(&mut rig, 250);
    rig.close(bob);
    assert_eq!(rig.news(alice), [ended(1, TransferOutcome::PeerLeft)]);
    assert_eq!(rig.server.transfers_in_progress(), 0);

    // The sender logs out with an offer pending at two sessions of the receiver.
    let mut rig = new_rig();
    let alice = session(&mut rig, "alice");
    let (bob1, bob2) = (session(&mut rig, "bob"), session(&mut rig, "bob"));
    rig.frame(alice, offer(1, "bob", 10));
    rig.news(bob1);
    rig.news(bob2);
    rig.frame(alice, ClientMsg::Logout);
    assert_eq!(rig.news(bob1), [ended(1, TransferOutcome::PeerLeft)]);
    assert_eq!(rig.news(bob2), [ended(1, TransferOutcome::PeerLeft)]);

    // One of two told sessions leaving keeps the offer for the other.
    let alice = session(&mut rig, "alice");
    rig.frame(alice, offer(2, "bob", 10));
    rig.news(bob1);
    rig.close(bob1);
    assert_eq!(rig.news(alice), []);
    rig.close(bob2);
    assert_eq!(rig.news(alice), [ended(2, TransferOutcome::PeerLeft)]);
    // Its places are free again.
    assert_eq!(rig.server.transfers_in_progress(), 0);
}

#[test]
fn a_resumed_transfer_starts_the_relay_at_the_receivers_offset() {
    let mut rig = new_rig();
    let alice = session(&mut rig, "alice");
    let bob = session(&mut rig, "bob");
    rig.frame(alice, offer(9, "bob", 250));
    rig.frame(bob, answer(9, true, 200));
    assert!(matches!(
        rig.news(alice).as_slice(),
        [ServerMsg::TransferAccepted { offset: 200, .. }]
    ));
    rig.news(bob);
    rig.frame(
        bob,
        ClientMsg::RelayFile {
            from: user("alice"),
            transfer: 9,
            offset: 200,
        },
    );
    rig.news(alice);
    let early = ClientMsg::TransferChunk {
        transfer: 9,
        offset: 0,
        data: vec![0; 10],
    };
    rig.frame(alice, early);
    assert_eq!(
        rig.news(alice),
        [
            refused(RequestKind::TransferChunk, ErrorCode::TooLarge, 9),
            ended(9, TransferOutcome::Broken)
        ]
    );
    // An offset past the file is refused outright.
    rig.frame(alice, offer(10, "bob", 250));
    rig.frame(bob, answer(10, true, 251));
    assert!(
        rig.news(bob)
            .contains(&refused(RequestKind::AnswerFile, ErrorCode::TooLarge, 10))
    );
}
