//! Acks follow the application, end to end: a real server core and client cores on the
//! virtual network of `testkit::World`. The world's oracle also fails any `Ack` that names a
//! seq the application had not taken (`OnHandover`) or acked (`Manual`) when it was sent.

use breeze_core::client::AckMode;
use breeze_core::config::ServerConfig;
use breeze_core::testkit::world::user_name;
use breeze_core::testkit::{World, WorldConfig};
use breeze_core::time::Duration;

const PAGE: usize = 256;

fn world() -> World {
    World::new(WorldConfig {
        server: ServerConfig {
            mailbox_page: PAGE as u32,
            ..ServerConfig::default()
        },
        users: 2,
        latency: Duration::from_millis(5),
        storage_latency: Duration::from_millis(1),
        seed: 11,
    })
}

/// User 1 offline with `n` messages from user 0 waiting in its mailbox.
fn mailbox_of(n: usize) -> World {
    let mut w = world();
    w.advance(Duration::from_secs(1));
    w.logout(1);
    for k in 0..n {
        w.send(0, 1, &format!("m{k}"));
    }
    // More than the server's per-connection storage budget at once: the rest come back
    // `Busy` and the client sends them again a `RESEND_AFTER` later, until all are stored.
    w.advance(Duration::from_secs(5));
    assert_eq!(w.store.undelivered(&user_name(1)), n);
    w
}

fn check(w: &mut World) {
    w.check_messages_delivered();
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
}

#[test]
fn a_manual_client_acks_only_what_its_application_acked_page_by_page() {
    let total = PAGE + 44;
    let mut w = mailbox_of(total);
    w.restart_client(1, AckMode::Manual);
    w.advance(Duration::from_secs(1));
    // The first page reached the application; nothing is acked, so nothing more comes.
    assert_eq!(w.nodes[1].held.len(), PAGE);
    assert_eq!(w.store.undelivered(&user_name(1)), total);

    w.ack_held(1, usize::MAX);
    w.advance(Duration::from_secs(1));
    // The last page arrives with `OfflineDone`, and waits for its own ack like the first.
    assert_eq!(w.nodes[1].held.len(), total - PAGE);
    assert_eq!(w.store.undelivered(&user_name(1)), total - PAGE);

    w.ack_held(1, usize::MAX);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.store.undelivered(&user_name(1)), 0);
    check(&mut w);
}

#[test]
fn messages_a_crashed_application_never_acked_come_again_and_acked_ones_do_not() {
    let mut w = mailbox_of(10);
    w.restart_client(1, AckMode::Manual);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.nodes[1].held.len(), 10);

    // The application saves (acks) the first four, then dies holding the rest.
    w.ack_held(1, 4);
    let rest: Vec<u64> = w.nodes[1].held.keys().copied().collect();
    assert_eq!(rest.len(), 6);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.store.undelivered(&user_name(1)), 6);

    w.restart_client(1, AckMode::Manual);
    w.advance(Duration::from_secs(1));
    // Exactly the six unacked messages reached the new application.
    assert_eq!(w.nodes[1].held.keys().copied().collect::<Vec<_>>(), rest);
    w.ack_held(1, usize::MAX);
    w.advance(Duration::from_secs(1));
    assert_eq!(w.store.undelivered(&user_name(1)), 0);

    // Nothing comes a third time.
    w.restart_client(1, AckMode::Manual);
    w.advance(Duration::from_secs(1));
    assert!(w.nodes[1].held.is_empty());
    check(&mut w);
}

#[test]
fn the_default_client_acks_each_page_as_its_application_takes_it() {
    let total = 2 * PAGE + 1;
    let mut w = mailbox_of(total);
    w.start(1);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.store.undelivered(&user_name(1)), 0);
    check(&mut w);
}
