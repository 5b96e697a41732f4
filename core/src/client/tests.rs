//! The client driven by hand: server frames in, decoded client frames and events out.

use super::*;
use crate::codec::{DEFAULT_MAX_FRAME, decode, encode};
use crate::message::{Delivery, WatchScope};
use bytes::Bytes;
use proptest::prelude::*;

const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(30);
const PASSWORD: &str = "correct horse";

fn at(ms: u64) -> Instant {
    Instant::from_epoch(Duration::from_millis(ms))
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn config() -> ClientConfig {
    ClientConfig {
        seed: 7,
        id_base: 1000,
        ..ClientConfig::new(user("alice"), PASSWORD)
    }
}

/// A host action, with `Send` decoded.
#[derive(Debug, PartialEq)]
enum Out {
    Connect,
    Msg(ClientMsg),
    Disconnect,
}

fn outputs(client: &mut Client) -> Vec<Out> {
    std::iter::from_fn(|| client.poll_output())
        .map(|out| match out {
            ClientOutput::Connect => Out::Connect,
            ClientOutput::Disconnect => Out::Disconnect,
            ClientOutput::Send(payload) => Out::Msg(decode::<ClientMsg>(&payload).unwrap()),
        })
        .collect()
}

fn events(client: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| client.poll_event()).collect()
}

fn feed(client: &mut Client, now: Instant, msg: ServerMsg) {
    client.handle_frame(now, &encode(&msg));
}

fn welcome() -> ServerMsg {
    ServerMsg::Welcome {
        version: PROTOCOL_VERSION,
        heartbeat_interval_ms: INTERVAL.as_millis() as u32,
        heartbeat_timeout_ms: TIMEOUT.as_millis() as u32,
        max_frame: DEFAULT_MAX_FRAME,
        max_attachment: 1024 * 1024,
        max_body: 16 * 1024,
        scope: WatchScope::Everyone,
        max_contacts: 1000,
        frame_rate: 2000,
        frame_burst: 4000,
    }
}

fn login_ok(token: &[u8], contacts: &[&str]) -> ServerMsg {
    ServerMsg::LoginOk {
        user: user("alice"),
        status: Status::Online,
        resume_token: token.to_vec(),
        contacts: contacts.iter().map(|c| user(c)).collect(),
    }
}

fn password_login(status: Status) -> Out {
    Out::Msg(ClientMsg::Login {
        user: user("alice"),
        credential: Credential::Password(PASSWORD.into()),
        status,
    })
}

fn deliver(seq: u64) -> ServerMsg {
    ServerMsg::Deliver(Delivery {
        seq,
        from: user("bob"),
        id: seq * 10,
        body: format!("message {seq}"),
        attachment: None,
        sent_at_ms: 0,
    })
}

/// From `Connect` to the server's `LoginOk` at `now`, outputs and events drained.
fn connect_and_log_in(client: &mut Client, now: Instant, token: &[u8]) {
    client.handle_connected(now);
    feed(client, now, welcome());
    feed(client, now, login_ok(token, &[]));
    assert!(client.is_logged_in(), "{:?}", client.state());
    outputs(client);
    events(client);
}

/// A new client at time 0, its `Connect` taken.
fn started(cfg: ClientConfig) -> Client {
    let mut client = Client::new(cfg, at(0));
    assert_eq!(outputs(&mut client), [Out::Connect]);
    client
}

fn registering() -> Client {
    started(ClientConfig {
        mode: Mode::Register,
        ..config()
    })
}

fn logged_in(now: Instant) -> Client {
    let mut client = Client::new(config(), now);
    connect_and_log_in(&mut client, now, b"token-1");
    client
}

/// Drops the connection at `now` and reconnects at the scheduled retry; returns that instant.
fn drop_and_retry(client: &mut Client, now: Instant) -> Instant {
    outputs(client);
    client.handle_disconnected(now);
    let retry_at = client.poll_timeout().unwrap();
    client.handle_timeout(retry_at);
    assert_eq!(outputs(client), [Out::Connect]);
    retry_at
}

#[test]
fn handshake_then_login_then_snapshot() {
    let mut client = Client::new(config(), at(0));
    assert_eq!(client.state(), ClientState::Connecting);
    assert_eq!(outputs(&mut client), [Out::Connect]);

    client.handle_connected(at(5));
    assert_eq!(client.state(), ClientState::Handshaking);
    let [Out::Msg(ClientMsg::Hello { magic, version, .. })] = &outputs(&mut client)[..] else {
        panic!("expected a Hello");
    };
    assert_eq!((*magic, *version), (MAGIC, PROTOCOL_VERSION));

    feed(&mut client, at(10), welcome());
    assert_eq!(client.state(), ClientState::LoggingIn);
    assert_eq!(client.heartbeat(), Some((INTERVAL, TIMEOUT)));
    assert_eq!(outputs(&mut client), [password_login(Status::Online)]);

    feed(&mut client, at(20), login_ok(b"tok", &["bob"]));
    assert_eq!(client.state(), ClientState::LoggedIn);
    assert_eq!(client.contacts().iter().collect::<Vec<_>>(), [&user("bob")]);

    let entry = |name: &str, presence| PresenceEntry {
        user: user(name),
        presence,
    };
    feed(
        &mut client,
        at(21),
        ServerMsg::PresenceSnapshot {
            entries: vec![
                entry("alice", Presence::Online),
                entry("bob", Presence::Online),
                entry("carol", Presence::Offline),
            ],
        },
    );
    feed(
        &mut client,
        at(22),
        ServerMsg::PresenceDiff {
            entries: vec![
                entry("bob", Presence::Online),
                entry("carol", Presence::Away),
            ],
        },
    );
    assert_eq!(
        events(&mut client),
        [
            ClientEvent::Connected,
            ClientEvent::Limits {
                max_body: 16 * 1024,
                max_attachment: 1024 * 1024
            },
            ClientEvent::LoggedIn {
                user: user("alice")
            },
            ClientEvent::Contacts(vec![user("bob")]),
            ClientEvent::PresenceSnapshot(vec![
                entry("bob", Presence::Online),
                entry("carol", Presence::Offline)
            ]),
            ClientEvent::PresenceChanged {
                user: user("carol"),
                presence: Presence::Away
            },
        ]
    );
    let view: Vec<_> = client
        .presence()
        .iter()
        .map(|(u, p)| (u.as_str(), *p))
        .collect();
    assert_eq!(view, [("bob", Presence::Online), ("carol", Presence::Away)]);
}

#[test]
fn an_idle_client_pings_exactly_at_the_interval() {
    let mut client = logged_in(at(0));
    assert_eq!(client.poll_timeout(), Some(at(0) + INTERVAL));

    client.handle_timeout(at(9_999));
    assert_eq!(outputs(&mut client), []);
    client.handle_timeout(at(10_000));
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ping { nonce: 0 })]
    );
    assert_eq!(client.poll_timeout(), Some(at(20_000)));
}

#[test]
fn a_busy_client_does_not_ping() {
    let mut client = logged_in(at(0));
    client.send_message(at(5_000), user("bob"), "hi".into(), None);
    outputs(&mut client);

    client.handle_timeout(at(10_000));
    assert_eq!(outputs(&mut client), []);
    assert_eq!(client.poll_timeout(), Some(at(15_000)));
}

#[test]
fn a_silent_server_is_declared_dead_exactly_at_the_timeout() {
    let mut client = logged_in(at(0));
    feed(&mut client, at(1_000), ServerMsg::Pong { nonce: 0 });
    for ping_at in [11_000, 21_000] {
        client.handle_timeout(at(ping_at));
        assert!(matches!(
            &outputs(&mut client)[..],
            [Out::Msg(ClientMsg::Ping { .. })]
        ));
    }
    client.handle_timeout(at(30_999));
    assert_eq!(outputs(&mut client), []);
    assert_eq!(client.poll_timeout(), Some(at(31_000)));

    client.handle_timeout(at(31_000));
    assert_eq!(outputs(&mut client), [Out::Disconnect]);
    let ClientState::Disconnected { retry_at } = client.state() else {
        panic!("{:?}", client.state());
    };
    let (low, high) = jitter_bounds(Duration::from_millis(250), Duration::from_secs(30), 0);
    assert!(at(31_000) + low <= retry_at && retry_at <= at(31_000) + high);
    assert_eq!(
        events(&mut client),
        [ClientEvent::Disconnected {
            reason: None,
            retry_at: Some(retry_at)
        }]
    );
    assert_eq!(client.heartbeat(), None);
}

#[test]
fn connect_handshake_and_login_are_bounded_by_the_connect_timeout() {
    let mut client = Client::new(config(), at(0));
    outputs(&mut client);
    client.handle_connected(at(100));
    feed(&mut client, at(200), welcome());
    outputs(&mut client);
    // The server never answers the login, but the heartbeat keeps the connection busy.
    client.handle_timeout(at(9_999));
    assert_eq!(outputs(&mut client), []);
    client.handle_timeout(at(10_000));
    assert_eq!(outputs(&mut client), [Out::Disconnect]);
    assert!(matches!(client.state(), ClientState::Disconnected { .. }));

    // A connect that never completes is abandoned the same way.
    let retry_at = client.poll_timeout().unwrap();
    client.handle_timeout(retry_at);
    assert_eq!(outputs(&mut client), [Out::Connect]);
    assert_eq!(
        client.poll_timeout(),
        Some(retry_at + Duration::from_secs(10))
    );
}

#[test]
fn reconnect_delays_follow_equal_jitter_and_replay_from_the_seed() {
    let delays = |seed: u64| {
        let mut client = Client::new(ClientConfig { seed, ..config() }, at(0));
        let mut now = at(0);
        let mut delays = Vec::new();
        for _ in 0..10 {
            client.handle_disconnected(now);
            let ClientState::Disconnected { retry_at } = client.state() else {
                panic!("{:?}", client.state());
            };
            delays.push(retry_at - now);
            client.handle_timeout(retry_at);
            assert_eq!(client.state(), ClientState::Connecting);
            now = retry_at;
        }
        delays
    };
    let first = delays(99);
    let cfg = config();
    for (n, d) in first.iter().enumerate() {
        let (low, high) = jitter_bounds(cfg.backoff_base, cfg.backoff_max, n as u32);
        assert!(low <= *d && *d <= high, "attempt {n}: {d:?}");
    }
    assert!(first[6] > first[0] * 16, "delays grow: {first:?}");
    assert_eq!(first, delays(99));
    assert_ne!(first, delays(100));
}

#[test]
fn a_successful_login_resets_the_backoff() {
    let mut client = Client::new(config(), at(0));
    let mut now = at(0);
    for _ in 0..6 {
        now = drop_and_retry(&mut client, now);
    }
    connect_and_log_in(&mut client, now, b"");
    client.handle_disconnected(now);
    let ClientState::Disconnected { retry_at } = client.state() else {
        panic!();
    };
    assert!(retry_at - now <= config().backoff_base);
}

/// Replaced by another login, or removed by an administrator: reconnecting by itself would
/// undo what someone meant, so the client stops until its user starts it again.
#[test]
fn replaced_kicked_or_banned_stops_and_never_reconnects_by_itself() {
    for reason in [
        CloseReason::Replaced,
        CloseReason::Kicked,
        CloseReason::Banned,
    ] {
        let mut client = logged_in(at(0));
        feed(&mut client, at(1_000), ServerMsg::Bye { reason });
        let stop = StopReason::Closed(reason);
        assert_eq!(outputs(&mut client), [Out::Disconnect]);
        assert_eq!(
            events(&mut client),
            [
                ClientEvent::Disconnected {
                    reason: Some(reason),
                    retry_at: None
                },
                ClientEvent::Stopped(stop)
            ]
        );
        assert_eq!(client.state(), ClientState::Stopped(stop));
        assert_eq!(client.poll_timeout(), None);
        client.handle_disconnected(at(1_001));
        client.handle_timeout(at(3_600_000));
        assert_eq!(outputs(&mut client), []);

        client.start(at(3_600_000));
        assert_eq!(outputs(&mut client), [Out::Connect]);
    }
}

#[test]
fn a_bye_that_allows_reconnecting_schedules_a_retry() {
    let mut client = logged_in(at(0));
    feed(
        &mut client,
        at(1_000),
        ServerMsg::Bye {
            reason: CloseReason::ServerShutdown,
        },
    );
    assert_eq!(outputs(&mut client), [Out::Disconnect]);
    let [ClientEvent::Disconnected { reason, retry_at }] = &events(&mut client)[..] else {
        panic!();
    };
    assert_eq!(*reason, Some(CloseReason::ServerShutdown));
    assert_eq!(*retry_at, client.poll_timeout());
}

#[test]
fn the_outbox_is_resent_after_reconnect_with_the_same_ids_until_sent() {
    let mut client = logged_in(at(0));
    let a = client.send_message(at(1), user("bob"), "a".into(), None);
    let b = client.send_message(at(2), user("bob"), "b".into(), None);
    assert_eq!((a, b), (1000, 1001));
    assert_eq!(outputs(&mut client).len(), 2);

    client.handle_disconnected(at(3));
    let c = client.send_message(at(4), user("carol"), "c".into(), None);
    assert_eq!(outputs(&mut client), [], "queued while offline");
    assert_eq!(client.unacked(), 3);

    let retry_at = client.poll_timeout().unwrap();
    client.handle_timeout(retry_at);
    connect_and_log_in_keeping_outputs(&mut client, retry_at);
    let resent: Vec<(u64, String)> = outputs(&mut client)
        .into_iter()
        .filter_map(|out| match out {
            Out::Msg(ClientMsg::Send { id, body, .. }) => Some((id, body)),
            _ => None,
        })
        .collect();
    assert_eq!(resent, [(a, "a".into()), (b, "b".into()), (c, "c".into())]);

    feed(&mut client, retry_at, ServerMsg::Sent { id: b, seq: 7 });
    feed(&mut client, retry_at, ServerMsg::Sent { id: b, seq: 7 });
    assert_eq!(
        events(&mut client),
        [ClientEvent::MessageSent { id: b, seq: 7 }],
        "a repeated Sent is reported once"
    );
    assert_eq!(client.unacked(), 2);
}

/// Like `connect_and_log_in`, but leaves what the login made the client send.
fn connect_and_log_in_keeping_outputs(client: &mut Client, now: Instant) {
    outputs(client);
    client.handle_connected(now);
    feed(client, now, welcome());
    outputs(client);
    feed(client, now, login_ok(b"token-2", &[]));
    events(client);
}

#[test]
fn a_refused_message_leaves_the_outbox_unless_storage_failed() {
    let mut client = logged_in(at(0));
    let a = client.send_message(at(1), user("bob"), "a".into(), None);
    let b = client.send_message(at(1), user("nobody"), "b".into(), None);
    outputs(&mut client);
    let error = |id, code| ServerMsg::Error {
        request: RequestKind::Send,
        code,
        id: Some(id),
    };
    feed(&mut client, at(2), error(a, ErrorCode::StorageFailed));
    feed(&mut client, at(2), error(b, ErrorCode::NoSuchUser));
    assert_eq!(
        events(&mut client),
        [
            ClientEvent::SendDeferred {
                id: a,
                code: ErrorCode::StorageFailed
            },
            ClientEvent::SendFailed {
                id: b,
                code: ErrorCode::NoSuchUser
            }
        ]
    );
    assert_eq!(client.unacked(), 1);

    let now = drop_and_retry(&mut client, at(3));
    connect_and_log_in_keeping_outputs(&mut client, now);
    assert!(outputs(&mut client).contains(&Out::Msg(ClientMsg::Send {
        id: a,
        to: user("bob"),
        body: "a".into(),
        attachment: None
    })));
}

#[test]
fn a_message_refused_as_busy_goes_again_on_the_same_connection() {
    let mut client = logged_in(at(0));
    let a = client.send_message(at(1), user("bob"), "a".into(), None);
    let b = client.send_message(at(1), user("bob"), "b".into(), None);
    outputs(&mut client);
    for (id, code) in [(a, ErrorCode::Busy), (b, ErrorCode::StorageFailed)] {
        let refusal = ServerMsg::Error {
            request: RequestKind::Send,
            code,
            id: Some(id),
        };
        feed(&mut client, at(2), refusal);
    }
    // Told, but still queued: the application may wait or give up.
    assert_eq!(
        events(&mut client),
        [
            ClientEvent::SendDeferred {
                id: a,
                code: ErrorCode::Busy
            },
            ClientEvent::SendDeferred {
                id: b,
                code: ErrorCode::StorageFailed
            }
        ]
    );
    assert_eq!(client.unacked(), 2);
    let due = at(2) + super::RESEND_AFTER;
    assert_eq!(client.poll_timeout(), Some(due));
    client.handle_timeout(at(2) + (super::RESEND_AFTER - Duration::from_millis(1)));
    assert!(outputs(&mut client).is_empty());
    client.handle_timeout(due);
    let again = |id, body: &str| {
        Out::Msg(ClientMsg::Send {
            id,
            to: user("bob"),
            body: body.into(),
            attachment: None,
        })
    };
    assert_eq!(outputs(&mut client), [again(a, "a"), again(b, "b")]);
    assert_ne!(
        client.poll_timeout(),
        Some(due),
        "sent once, not again and again"
    );
}

#[test]
fn a_redelivered_message_reaches_the_app_once_but_is_acked_each_time() {
    let mut client = logged_in(at(0));
    feed(&mut client, at(1), deliver(5));
    assert!(matches!(&events(&mut client)[..], [ClientEvent::Message(d)] if d.seq == 5));
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![5] })]
    );
    // The server did not get that ack: the repeat is acked again, and not shown.
    feed(&mut client, at(2), deliver(5));
    assert_eq!(events(&mut client), []);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![5] })]
    );

    // Across a reconnect too: the seen set lives as long as the client.
    let now = drop_and_retry(&mut client, at(3));
    connect_and_log_in(&mut client, now, b"");
    feed(&mut client, now, deliver(5));
    assert_eq!(events(&mut client), []);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![5] })]
    );
}

#[test]
fn an_echo_of_an_older_status_does_not_overwrite_a_newer_choice() {
    // Found by the simulation: Busy then Away; Busy's echo arrives after Away was sent.
    let mut client = logged_in(at(0));
    client.set_status(at(1), Status::Busy);
    client.set_status(at(2), Status::Away);
    feed(
        &mut client,
        at(3),
        ServerMsg::OwnStatus {
            status: Status::Busy,
        },
    );
    assert_eq!(client.own_status(), Status::Away);
    feed(
        &mut client,
        at(4),
        ServerMsg::OwnStatus {
            status: Status::Away,
        },
    );
    assert_eq!(client.own_status(), Status::Away);
    // With nothing of ours in flight, another device's change is adopted.
    feed(
        &mut client,
        at(5),
        ServerMsg::OwnStatus {
            status: Status::Busy,
        },
    );
    assert_eq!(client.own_status(), Status::Busy);
}

#[test]
fn a_contact_change_reversed_in_flight_is_kept_until_the_last_answer() {
    // Found by the simulation: remove, add, remove within one round trip; the answer to
    // the first agrees with the last wish, but the last is still out and may be lost.
    let mut client = logged_in(at(0));
    client.remove_contact(at(1), user("bob"));
    client.add_contact(at(1), user("bob"));
    client.remove_contact(at(1), user("bob"));
    outputs(&mut client);
    feed(
        &mut client,
        at(2),
        ServerMsg::ContactsChanged {
            added: vec![],
            removed: vec![user("bob")],
            rejected: vec![],
        },
    );
    // The connection dies before the other answers: the last wish is sent again.
    let now = drop_and_retry(&mut client, at(3));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    feed(&mut client, now, login_ok(b"", &["bob"]));
    assert!(
        outputs(&mut client).contains(&Out::Msg(ClientMsg::ChangeContacts {
            add: vec![],
            remove: vec![user("bob")]
        }))
    );
}

fn manual() -> Client {
    let mut client = started(ClientConfig {
        acks: AckMode::Manual,
        ..config()
    });
    connect_and_log_in(&mut client, at(0), b"");
    client
}

#[test]
fn a_client_that_does_not_ack_leaves_messages_in_the_mailbox() {
    let mut client = manual();
    feed(&mut client, at(1), deliver(5));
    assert_eq!(outputs(&mut client), []);
    assert!(matches!(&events(&mut client)[..], [ClientEvent::Message(d)] if d.seq == 5));
    assert_eq!(outputs(&mut client), []);
}

#[test]
fn nothing_is_acked_before_the_application_takes_the_message() {
    let mut client = logged_in(at(0));
    feed(&mut client, at(1), deliver(5));
    feed(&mut client, at(2), deliver(6));
    assert_eq!(outputs(&mut client), [], "not taken yet");
    // A repeat of a message still waiting for the application is not acked either.
    feed(&mut client, at(3), deliver(5));
    assert_eq!(outputs(&mut client), []);
    assert!(matches!(client.poll_event(), Some(ClientEvent::Message(d)) if d.seq == 5));
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![5] })],
        "only what was taken"
    );
    assert!(matches!(client.poll_event(), Some(ClientEvent::Message(d)) if d.seq == 6));
    assert_eq!(client.poll_event(), None);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![6] })]
    );
}

#[test]
fn manual_acks_go_out_only_when_the_application_acks() {
    let mut client = manual();
    feed(&mut client, at(1), deliver(5));
    feed(&mut client, at(1), deliver(6));
    assert_eq!(events(&mut client).len(), 2);
    assert_eq!(outputs(&mut client), []);
    // Redelivered while the application holds it: neither shown again nor acked.
    feed(&mut client, at(2), deliver(5));
    assert_eq!(events(&mut client), []);
    assert_eq!(outputs(&mut client), []);
    client.ack(at(3), 6);
    client.ack(at(3), 5);
    client.ack(at(3), 5);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![6, 5] })],
        "one frame, each seq once"
    );
    // The ack counts as traffic for the ping timer.
    assert_eq!(client.poll_timeout(), Some(at(3) + INTERVAL));
}

#[test]
fn a_message_held_across_a_reconnect_is_acked_on_the_new_connection() {
    let mut client = manual();
    feed(&mut client, at(1), deliver(5));
    feed(&mut client, at(1), deliver(6));
    assert_eq!(events(&mut client).len(), 2);
    let now = drop_and_retry(&mut client, at(2));
    // Acked while disconnected: nothing to send it on, and nothing is queued for later.
    client.ack(now, 6);
    assert_eq!(outputs(&mut client), []);
    connect_and_log_in(&mut client, now, b"");
    // The mailbox comes again: 5 waits for the application, 6 is acked at once.
    feed(&mut client, now, deliver(5));
    feed(&mut client, now, deliver(6));
    assert_eq!(events(&mut client), []);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![6] })]
    );
    client.ack(now, 5);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![5] })]
    );
}

#[test]
fn an_ack_never_crosses_into_the_next_connection_unsent() {
    // Taken, but the connection dies before the host polls the ack out: the next session's
    // redelivery is what gets acked, on that session.
    let mut client = logged_in(at(0));
    feed(&mut client, at(1), deliver(5));
    assert_eq!(events(&mut client).len(), 1);
    client.handle_disconnected(at(2));
    assert_eq!(outputs(&mut client), []);
    let retry_at = client.poll_timeout().unwrap();
    client.handle_timeout(retry_at);
    assert_eq!(outputs(&mut client), [Out::Connect]);
    connect_and_log_in(&mut client, retry_at, b"");
    feed(&mut client, retry_at, deliver(5));
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![5] })]
    );
}

#[test]
fn acks_given_just_before_a_logout_go_out_before_it() {
    let mut client = manual();
    feed(&mut client, at(1), deliver(5));
    assert_eq!(events(&mut client).len(), 1);
    client.ack(at(2), 5);
    client.logout(at(2));
    assert_eq!(
        outputs(&mut client),
        [
            Out::Msg(ClientMsg::Ack { seqs: vec![5] }),
            Out::Msg(ClientMsg::Logout),
            Out::Disconnect
        ]
    );
}

#[test]
fn deliveries_taken_together_are_acked_in_one_frame() {
    let mut client = logged_in(at(0));
    let frames: Vec<Bytes> = [deliver(1), deliver(2), deliver(1)]
        .iter()
        .map(encode)
        .collect();
    client.handle_frames(at(1), frames.iter().map(|f| &f[..]));
    assert_eq!(events(&mut client).len(), 2);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Ack { seqs: vec![1, 2] })]
    );
}

#[test]
fn more_acks_than_one_frame_may_carry_are_split() {
    let mut client = manual();
    let total = MAX_ACK_SEQS as u64 + 1;
    for seq in 0..total {
        client.ack(at(1), seq);
    }
    let sizes: Vec<usize> = outputs(&mut client)
        .into_iter()
        .map(|out| match out {
            Out::Msg(ClientMsg::Ack { seqs }) => seqs.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, [MAX_ACK_SEQS, 1]);
}

#[test]
fn a_refused_token_falls_back_to_the_password_once() {
    let mut client = logged_in(at(0));
    let now = drop_and_retry(&mut client, at(1));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    let token_login = Out::Msg(ClientMsg::Login {
        user: user("alice"),
        credential: Credential::Token(b"token-1".to_vec()),
        status: Status::Online,
    });
    assert_eq!(outputs(&mut client).last(), Some(&token_login));

    let bad_credentials = ServerMsg::Error {
        request: RequestKind::Login,
        code: ErrorCode::BadCredentials,
        id: None,
    };
    feed(&mut client, now, bad_credentials.clone());
    assert_eq!(outputs(&mut client), [password_login(Status::Online)]);
    assert_eq!(client.state(), ClientState::LoggingIn);

    // The password is refused too: no reconnect loop.
    feed(&mut client, now, bad_credentials);
    assert_eq!(outputs(&mut client), [Out::Disconnect]);
    assert_eq!(
        client.state(),
        ClientState::Stopped(StopReason::BadCredentials)
    );
    assert_eq!(client.poll_timeout(), None);
}

/// A banned account's token is refused with `Banned`: the password would be refused the
/// same way, so the client stops at once, saying why, instead of trying it.
#[test]
fn a_banned_token_login_stops_without_trying_the_password() {
    let mut client = logged_in(at(0));
    let now = drop_and_retry(&mut client, at(1));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    outputs(&mut client);
    feed(
        &mut client,
        now,
        ServerMsg::Error {
            request: RequestKind::Login,
            code: ErrorCode::Banned,
            id: None,
        },
    );
    assert_eq!(outputs(&mut client), [Out::Disconnect]);
    let stop = StopReason::Refused {
        request: RequestKind::Login,
        code: ErrorCode::Banned,
    };
    assert_eq!(client.state(), ClientState::Stopped(stop));
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn register_mode_registers_then_logs_in_and_later_only_logs_in() {
    let mut client = registering();
    client.handle_connected(at(0));
    feed(&mut client, at(0), welcome());
    let register = Out::Msg(ClientMsg::Register {
        user: user("alice"),
        password: PASSWORD.into(),
    });
    assert_eq!(outputs(&mut client)[1..], [register]);
    feed(
        &mut client,
        at(1),
        ServerMsg::Registered {
            user: user("alice"),
        },
    );
    assert_eq!(outputs(&mut client), [password_login(Status::Online)]);
    assert!(events(&mut client).contains(&ClientEvent::Registered));

    let now = drop_and_retry(&mut client, at(2));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    assert_eq!(outputs(&mut client)[1..], [password_login(Status::Online)]);
}

#[test]
fn a_taken_name_stops_registration() {
    let mut client = registering();
    client.handle_connected(at(0));
    feed(&mut client, at(0), welcome());
    feed(
        &mut client,
        at(1),
        ServerMsg::Error {
            request: RequestKind::Register,
            code: ErrorCode::UserTaken,
            id: None,
        },
    );
    assert_eq!(client.state(), ClientState::Stopped(StopReason::UserTaken));
}

#[test]
fn a_registration_whose_answer_was_lost_is_claimed_with_the_password() {
    let mut client = registering();
    client.handle_connected(at(0));
    feed(&mut client, at(0), welcome());
    let now = drop_and_retry(&mut client, at(1));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    outputs(&mut client);
    let taken = ServerMsg::Error {
        request: RequestKind::Register,
        code: ErrorCode::UserTaken,
        id: None,
    };
    feed(&mut client, now, taken);
    assert_eq!(outputs(&mut client), [password_login(Status::Online)]);
    feed(
        &mut client,
        now,
        ServerMsg::Error {
            request: RequestKind::Login,
            code: ErrorCode::BadCredentials,
            id: None,
        },
    );
    assert_eq!(
        client.state(),
        ClientState::Stopped(StopReason::UserTaken),
        "the password does not open it: someone else's account"
    );
}

#[test]
fn changes_made_offline_are_sent_after_login() {
    let mut client = logged_in(at(0));
    client.handle_disconnected(at(1));
    client.set_status(at(2), Status::Busy);
    client.add_contact(at(2), user("bob"));
    client.remove_contact(at(2), user("carol"));
    client.add_contact(at(2), user("dave"));
    client.remove_contact(at(2), user("dave"));
    client.add_contact(at(2), user("erin"));
    assert_eq!(client.own_status(), Status::Busy);

    let retry_at = client.poll_timeout().unwrap();
    client.handle_timeout(retry_at);
    outputs(&mut client);
    client.handle_connected(retry_at);
    feed(&mut client, retry_at, welcome());
    let login = outputs(&mut client).pop();
    assert!(
        matches!(
            login,
            Some(Out::Msg(ClientMsg::Login {
                status: Status::Busy,
                ..
            }))
        ),
        "the status rides on the login: {login:?}"
    );
    feed(
        &mut client,
        retry_at,
        ServerMsg::LoginOk {
            user: user("alice"),
            status: Status::Busy,
            resume_token: vec![],
            contacts: vec![user("carol"), user("erin")],
        },
    );
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::ChangeContacts {
            add: vec![user("bob")],
            remove: vec![user("carol")],
        })],
        "one request for all of them; dave came and went, erin is there already"
    );
}

/// An import is one request; the answer settles every name it covered, and a name the
/// server rejected is not retried.
#[test]
fn an_import_is_one_request_and_one_answer_settles_it() {
    let mut client = logged_in(at(0));
    outputs(&mut client);
    client.change_contacts(at(1), vec![user("bob"), user("ghost")], vec![]);
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::ChangeContacts {
            add: vec![user("bob"), user("ghost")],
            remove: vec![],
        })]
    );
    feed(
        &mut client,
        at(2),
        ServerMsg::ContactsChanged {
            added: vec![user("bob")],
            removed: vec![],
            rejected: vec![user("ghost")],
        },
    );
    assert_eq!(client.contacts().iter().collect::<Vec<_>>(), [&user("bob")]);
    assert!(events(&mut client).contains(&ClientEvent::Contacts(vec![user("bob")])));
    // Nothing is left to send again at the next login.
    let now = drop_and_retry(&mut client, at(3));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    feed(&mut client, now, login_ok(b"", &["bob"]));
    assert!(
        !outputs(&mut client)
            .iter()
            .any(|o| matches!(o, Out::Msg(ClientMsg::ChangeContacts { .. })))
    );
}

#[test]
fn a_status_set_while_the_login_is_out_is_sent_after_it() {
    let mut client = Client::new(config(), at(0));
    client.handle_connected(at(0));
    feed(&mut client, at(0), welcome());
    client.set_status(at(1), Status::Away);
    outputs(&mut client);
    feed(&mut client, at(2), login_ok(b"", &[]));
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::SetStatus {
            status: Status::Away
        })]
    );
    assert_eq!(client.own_status(), Status::Away);
}

#[test]
fn online_only_commands_are_refused_while_offline() {
    let mut client = Client::new(config(), at(0));
    outputs(&mut client);
    client.request_history(at(0), user("bob"), None, 50);
    client.admin_who(at(0));
    client.admin(at(0), AdminAction::Ban, user("bob"));
    client.change_password(at(0), PASSWORD.into(), "new password".into());
    assert_eq!(outputs(&mut client), []);
    let refused = |request| ClientEvent::Error {
        request,
        code: ErrorCode::NotLoggedIn,
    };
    assert_eq!(
        events(&mut client),
        [
            refused(RequestKind::History),
            refused(RequestKind::AdminWho),
            refused(RequestKind::AdminBan),
            refused(RequestKind::ChangePassword)
        ]
    );
}

#[test]
fn admin_actions_go_out_as_their_requests_and_come_back_as_admin_done() {
    let mut client = logged_in(at(0));
    for (action, msg) in [
        (
            AdminAction::Kick,
            ClientMsg::AdminKick { user: user("bob") },
        ),
        (AdminAction::Ban, ClientMsg::AdminBan { user: user("bob") }),
        (
            AdminAction::Unban,
            ClientMsg::AdminUnban { user: user("bob") },
        ),
    ] {
        client.admin(at(1), action, user("bob"));
        assert_eq!(outputs(&mut client), [Out::Msg(msg)]);
    }
    let done = ServerMsg::AdminDone {
        request: RequestKind::AdminKick,
        user: user("bob"),
        sessions: 2,
    };
    feed(&mut client, at(2), done);
    assert_eq!(
        events(&mut client),
        [ClientEvent::AdminDone {
            request: RequestKind::AdminKick,
            user: user("bob"),
            sessions: 2
        }]
    );
}

#[test]
fn a_changed_password_is_used_for_the_next_login() {
    let mut client = logged_in(at(0));
    client.change_password(at(1), PASSWORD.into(), "new password".into());
    outputs(&mut client);
    feed(&mut client, at(2), ServerMsg::PasswordChanged);
    let now = drop_and_retry(&mut client, at(3));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    // The change revoked the token, so the login goes straight to the new password.
    assert_eq!(
        outputs(&mut client)[1..],
        [Out::Msg(ClientMsg::Login {
            user: user("alice"),
            credential: Credential::Password("new password".into()),
            status: Status::Online,
        })]
    );
}

#[test]
fn a_password_change_lost_with_its_connection_is_tried_when_the_old_one_fails() {
    let mut client = logged_in(at(0));
    client.change_password(at(1), PASSWORD.into(), "new password".into());
    let now = drop_and_retry(&mut client, at(2));
    client.handle_connected(now);
    feed(&mut client, now, welcome());
    outputs(&mut client);
    let bad_credentials = ServerMsg::Error {
        request: RequestKind::Login,
        code: ErrorCode::BadCredentials,
        id: None,
    };
    // The change went through: it revoked the token and replaced the old password.
    feed(&mut client, now, bad_credentials.clone());
    assert_eq!(outputs(&mut client), [password_login(Status::Online)]);
    feed(&mut client, now, bad_credentials);
    let [Out::Msg(ClientMsg::Login { credential, .. })] = &outputs(&mut client)[..] else {
        panic!();
    };
    assert_eq!(*credential, Credential::Password("new password".into()));
    feed(&mut client, now, login_ok(b"", &[]));
    assert!(client.is_logged_in());
}

#[test]
fn logout_sends_logout_then_closes_and_stays_stopped() {
    let mut client = logged_in(at(0));
    client.logout(at(1));
    assert_eq!(
        outputs(&mut client),
        [Out::Msg(ClientMsg::Logout), Out::Disconnect]
    );
    assert_eq!(
        events(&mut client).last(),
        Some(&ClientEvent::Stopped(StopReason::LoggedOut))
    );
    // The server's goodbye and the close arrive after the client stopped listening.
    feed(
        &mut client,
        at(2),
        ServerMsg::Bye {
            reason: CloseReason::LoggedOut,
        },
    );
    client.handle_disconnected(at(2));
    assert_eq!(outputs(&mut client), []);
    assert_eq!(events(&mut client), []);
    assert_eq!(client.poll_timeout(), None);
}

#[test]
fn a_connect_completing_after_the_client_gave_up_is_closed() {
    let mut client = Client::new(config(), at(0));
    client.logout(at(1));
    outputs(&mut client);
    client.handle_connected(at(2));
    assert_eq!(outputs(&mut client), [Out::Disconnect]);
    assert!(!client.is_logged_in());
}

#[test]
fn undecodable_frames_are_skipped_but_count_as_life() {
    let mut client = logged_in(at(0));
    client.handle_timeout(at(10_000));
    client.handle_frame(at(20_000), &[0xff, 0xff, 0xff]);
    assert!(client.is_logged_in());
    client.handle_timeout(at(20_000));
    client.handle_timeout(at(30_000));
    assert!(
        client.is_logged_in(),
        "the frame at 20 s moved the deadline from 30 s to 50 s"
    );
}

#[test]
fn debug_output_never_shows_the_password() {
    assert!(!format!("{:?}", config()).contains(PASSWORD));
    let mut client = Client::new(config(), at(0));
    client.handle_connected(at(0));
    feed(&mut client, at(0), welcome());
    assert!(!format!("{client:?}").contains(PASSWORD));
    let login = std::iter::from_fn(|| client.poll_output()).last().unwrap();
    assert!(!format!("{login:?}").contains(PASSWORD));
}

/// Server frames a property test throws at a logged-in client.
fn server_msg() -> impl Strategy<Value = ServerMsg> {
    let name = prop::sample::select(vec!["alice", "bob", "carol", "dave"]);
    let presence = prop::sample::select(vec![
        Presence::Offline,
        Presence::Online,
        Presence::Busy,
        Presence::Away,
    ]);
    let entries = prop::collection::vec(
        (name, presence).prop_map(|(n, presence)| PresenceEntry {
            user: user(n),
            presence,
        }),
        0..6,
    );
    prop_oneof![
        entries
            .clone()
            .prop_map(|entries| ServerMsg::PresenceSnapshot { entries }),
        entries.prop_map(|entries| ServerMsg::PresenceDiff { entries }),
        (0u64..20).prop_map(deliver),
        (0u64..20).prop_map(|nonce| ServerMsg::Pong { nonce }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::test_cases(1000)))]

    /// Whatever mix of presence and deliveries the server sends, across reconnects: the user
    /// never appears in its own view, each seq reaches the application exactly once, no ack
    /// goes out for a message the application has not taken (under `Manual`: acked), and
    /// every delivery of a message the application has is acked (each repeat included).
    #[test]
    fn every_seq_reaches_the_app_once_and_every_delivery_is_acked(
        manual_acks in any::<bool>(),
        script in prop::collection::vec((server_msg(), any::<bool>(), any::<bool>()), 0..60)
    ) {
        let acks = if manual_acks { AckMode::Manual } else { AckMode::OnHandover };
        let mut client = started(ClientConfig { acks, ..config() });
        connect_and_log_in(&mut client, at(0), b"");
        let mut now = at(0);
        let (mut delivered, mut acked, mut seqs_sent) = (BTreeMap::new(), 0usize, 0usize);
        // Seqs the application took (`OnHandover`) or acked (`Manual`), and those taken and
        // not acked yet (`Manual`).
        let (mut released, mut held) = (BTreeSet::new(), BTreeSet::new());
        for (msg, app_acks, drop_after) in script {
            if let ServerMsg::Deliver(d) = &msg {
                delivered.entry(d.seq).or_insert(0usize);
                // Under `Manual` a delivery is acked when the application acks it, or at
                // once if it already had.
                if !manual_acks || released.contains(&d.seq) {
                    seqs_sent += 1;
                }
            }
            feed(&mut client, now, msg);
            for event in events(&mut client) {
                if let ClientEvent::Message(d) = event {
                    *delivered.get_mut(&d.seq).unwrap() += 1;
                    if manual_acks {
                        held.insert(d.seq);
                    } else {
                        released.insert(d.seq);
                    }
                }
            }
            if app_acks {
                for seq in std::mem::take(&mut held) {
                    client.ack(now, seq);
                    released.insert(seq);
                    seqs_sent += 1;
                }
            }
            for out in outputs(&mut client) {
                if let Out::Msg(ClientMsg::Ack { seqs }) = out {
                    for seq in &seqs {
                        prop_assert!(released.contains(seq), "acked {} before the app", seq);
                    }
                    acked += seqs.len();
                }
            }
            prop_assert!(!client.presence().contains_key(&user("alice")));
            if drop_after {
                now = drop_and_retry(&mut client, now);
                connect_and_log_in(&mut client, now, b"");
            }
        }
        prop_assert_eq!(acked, seqs_sent);
        prop_assert!(delivered.values().all(|&n| n == 1), "{:?}", delivered);
    }
}

/// `Mode::Agent` logs in with `AgentLogin` on every connection, by password, and asserts
/// neither a status nor contact changes after `LoginOk` (an agent may set neither).
#[test]
fn an_agent_logs_in_by_password_and_asserts_no_status_or_contacts() {
    let mut client = started(ClientConfig {
        mode: Mode::Agent,
        status: Status::Busy,
        ..config()
    });
    client.add_contact(at(0), user("bob"));
    let agent_login = Out::Msg(ClientMsg::AgentLogin {
        user: user("alice"),
        password: PASSWORD.into(),
    });
    client.handle_connected(at(0));
    let hello_and_login = outputs(&mut client);
    feed(&mut client, at(1), welcome());
    let mut sent = hello_and_login;
    sent.extend(outputs(&mut client));
    assert!(sent.contains(&agent_login), "{sent:?}");
    // The server's answer to an agent: invisible, no token.
    feed(
        &mut client,
        at(2),
        ServerMsg::LoginOk {
            user: user("alice"),
            status: Status::Invisible,
            resume_token: Vec::new(),
            contacts: vec![],
        },
    );
    assert!(client.is_logged_in());
    assert_eq!(outputs(&mut client), [], "no SetStatus, no ChangeContacts");

    // A reconnect logs in as an agent again, still by password.
    let retry = drop_and_retry(&mut client, at(3));
    client.handle_connected(retry);
    feed(&mut client, retry, welcome());
    assert!(outputs(&mut client).contains(&agent_login));
}

#[test]
fn transfer_requests_pass_through_and_their_news_comes_back_as_is() {
    let chunk = ClientMsg::TransferChunk {
        transfer: 5,
        offset: 0,
        data: vec![1, 2, 3],
    };
    // Not logged in: refused here, naming the transfer, so the agent can let go of it.
    let mut client = started(config());
    client.send_transfer(at(0), chunk.clone());
    assert_eq!(
        events(&mut client),
        [ClientEvent::TransferError {
            request: RequestKind::TransferChunk,
            code: ErrorCode::NotLoggedIn,
            transfer: 5
        }]
    );

    let mut client = logged_in(at(0));
    outputs(&mut client);
    events(&mut client);
    client.send_transfer(at(1), chunk.clone());
    assert_eq!(outputs(&mut client), [Out::Msg(chunk)]);
    // Only transfer requests: anything else has its own method.
    client.send_transfer(at(2), ClientMsg::Logout);
    assert_eq!(outputs(&mut client), []);
    assert_eq!(
        events(&mut client),
        [ClientEvent::Error {
            request: RequestKind::Logout,
            code: ErrorCode::Forbidden
        }]
    );
    let news = ServerMsg::TransferProgress {
        transfer: 5,
        received: 3,
    };
    feed(&mut client, at(3), news.clone());
    feed(
        &mut client,
        at(3),
        ServerMsg::Error {
            request: RequestKind::TransferChunk,
            code: ErrorCode::NoSuchTransfer,
            id: Some(5),
        },
    );
    assert_eq!(
        events(&mut client),
        [
            ClientEvent::Transfer(news),
            ClientEvent::TransferError {
                request: RequestKind::TransferChunk,
                code: ErrorCode::NoSuchTransfer,
                transfer: 5
            }
        ]
    );
}
