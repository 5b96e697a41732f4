//! Watchers converge on the latest profile under faults: a real server core and client cores
//! on the virtual network of `testkit::World`, with watchers' connections reset or cut
//! half-open while names change, and storage slower than the network.

use breeze_core::config::ServerConfig;
use breeze_core::message::WatchScope;
use breeze_core::testkit::{World, WorldConfig};
use breeze_core::time::Duration;

const USERS: usize = 5;

fn run(scope: WatchScope, seed: u64) {
    let mut w = World::new(WorldConfig {
        server: ServerConfig {
            scope,
            ..ServerConfig::default()
        },
        users: USERS,
        latency: Duration::from_millis(3 + seed % 7),
        storage_latency: Duration::from_millis(1 + seed % 11),
        seed,
    });
    // Starting them drains the clients' first outputs (their connects).
    for i in 0..USERS {
        w.start(i);
    }
    w.advance(Duration::from_secs(1));
    if scope == WatchScope::Contacts {
        // Everyone watches the next two users round the ring.
        for i in 0..USERS {
            w.set_contact(i, (i + 1) % USERS, true);
            w.set_contact(i, (i + 2) % USERS, true);
        }
        w.advance(Duration::from_secs(1));
    }
    for round in 0..8u64 {
        let setter = ((seed + round) % USERS as u64) as usize;
        let reset = (setter + 1 + (round % 2) as usize) % USERS;
        let cut = (setter + 3) % USERS;
        w.crash_link(reset);
        w.partition_link(cut);
        // Two changes close together: watchers must end on the second, whichever batch
        // or snapshot brings it.
        w.set_display_name(setter, &format!("名字 {round}a"));
        w.advance(Duration::from_millis(seed % 5));
        w.set_display_name(setter, &format!("名字 {round}b 🐼"));
        let settle = w.settle_time();
        w.advance(settle);
    }
    w.check_converged();
    w.check_profiles_converged();
    assert!(
        w.violations.is_empty(),
        "seed {seed}, scope {scope:?}: {:#?}",
        w.violations
    );
}

#[test]
fn watchers_converge_on_the_latest_profile_under_faults() {
    for seed in 0..12 {
        run(WatchScope::Everyone, seed);
        run(WatchScope::Contacts, seed);
    }
}
