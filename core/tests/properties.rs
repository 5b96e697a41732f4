//! Properties of the whole protocol, checked over random event sequences: one server, a few
//! clients, a virtual network and clock (see `testkit::world`). Each case runs a random
//! schedule of logins, logouts, crashes, silent partitions, status, contact and contact group
//! changes and messages, lets every timer play out, and then asks the oracle.
//!
//! `PROPTEST_CASES=N` runs more cases than the CI default of 1,000.

use breeze_core::config::{DuplicateLogin, ServerConfig};
use breeze_core::message::{Status, WatchScope};
use breeze_core::testkit::{GroupRequest, World, WorldConfig};
use breeze_core::time::Duration;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Logout(usize),
    Start(usize),
    Crash(usize),
    Partition(usize),
    SetStatus(usize, Status),
    Contact(usize, usize, bool),
    Send(usize, usize),
    Group(usize, GroupRequest),
}

fn group_request(users: usize) -> impl Strategy<Value = GroupRequest> {
    prop_oneof![
        2 => (0u8..4).prop_map(GroupRequest::Create),
        1 => (0usize..4, 0u8..4).prop_map(|(k, n)| GroupRequest::Rename(k, n)),
        1 => (0usize..4).prop_map(GroupRequest::Delete),
        1 => (0usize..4, 0u32..4).prop_map(|(k, p)| GroupRequest::Reorder(k, p)),
        3 => (0..users, 0usize..4).prop_map(|(j, k)| GroupRequest::Move(j, k)),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Online),
        Just(Status::Busy),
        Just(Status::Away),
        Just(Status::Invisible)
    ]
}

fn op(users: usize) -> impl Strategy<Value = Op> {
    let u = 0..users;
    prop_oneof![
        4 => (0u64..5_000).prop_map(Op::Wait),
        1 => u.clone().prop_map(Op::Logout),
        2 => u.clone().prop_map(Op::Start),
        1 => u.clone().prop_map(Op::Crash),
        1 => u.clone().prop_map(Op::Partition),
        2 => (u.clone(), status()).prop_map(|(i, s)| Op::SetStatus(i, s)),
        2 => (u.clone(), u.clone(), any::<bool>()).prop_map(|(i, j, add)| Op::Contact(i, j, add)),
        3 => (u.clone(), u.clone()).prop_map(|(i, j)| Op::Send(i, j)),
        2 => (u, group_request(users)).prop_map(|(i, r)| Op::Group(i, r)),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    cfg: WorldConfig,
    ops: Vec<Op>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        2usize..6,
        prop_oneof![Just(WatchScope::Everyone), Just(WatchScope::Contacts)],
        prop_oneof![Just(DuplicateLogin::Replace), Just(DuplicateLogin::Multi)],
        prop_oneof![Just(0u64), Just(1_500)],
        0u64..30,
        0u64..15,
        any::<u64>(),
    )
        .prop_flat_map(|(users, scope, dup, grace_ms, lat, store_lat, seed)| {
            let cfg = WorldConfig {
                server: ServerConfig {
                    heartbeat_interval: Duration::from_millis(1_000),
                    heartbeat_timeout: Duration::from_millis(3_000),
                    offline_grace: Duration::from_millis(grace_ms),
                    duplicate_login: dup,
                    scope,
                    // Small pages, so mailbox paging is exercised across reconnects.
                    mailbox_page: 2,
                    ..ServerConfig::default()
                },
                users,
                latency: Duration::from_millis(lat),
                storage_latency: Duration::from_millis(store_lat),
                seed,
            };
            proptest::collection::vec(op(users), 0..40).prop_map(move |ops| Case {
                cfg: cfg.clone(),
                ops,
            })
        })
}

/// Runs a case to its end: schedule, settle, check presence; then start every client, settle,
/// check presence again and every acknowledged message.
fn run(case: &Case) -> World {
    let mut w = World::new(case.cfg.clone());
    w.advance(Duration::from_millis(500));
    for (n, op) in case.ops.iter().enumerate() {
        match *op {
            Op::Wait(ms) => w.advance(Duration::from_millis(ms)),
            Op::Logout(i) => w.logout(i),
            Op::Start(i) => w.start(i),
            Op::Crash(i) => w.crash_link(i),
            Op::Partition(i) => w.partition_link(i),
            Op::SetStatus(i, s) => w.set_status(i, s),
            Op::Contact(i, j, add) => w.set_contact(i, j, add),
            Op::Send(i, j) => w.send(i, j, &format!("message {n}")),
            Op::Group(i, request) => w.group_request(i, request),
        }
        if !w.violations.is_empty() {
            return w;
        }
    }
    let settle = w.settle_time();
    w.advance(settle);
    w.check_converged();
    for i in 0..w.nodes.len() {
        w.start(i);
    }
    w.advance(settle);
    w.check_converged();
    w.check_groups_converged();
    w.check_messages_delivered();
    w
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Convergence and safety: after any schedule, once every timer has fired, each live
    /// client's view equals the truth; along the way a silent session dies exactly at its last
    /// frame + timeout, no watcher hears a duplicate or hears about itself, an invisible user
    /// is never announced, every acknowledged message reaches its recipient exactly once, and
    /// every client's contact groups are the stored ones, whatever requests were lost.
    #[test]
    fn presence_converges_and_acked_messages_arrive_exactly_once(case in case()) {
        let w = run(&case);
        prop_assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    }
}

/// Timeliness, on its own: many silent deaths, and each one is declared at exactly its last
/// frame + timeout (the harness checks every `HeartbeatTimeout` close to the tick).
#[test]
fn silent_sessions_die_exactly_at_last_seen_plus_timeout() {
    let cfg = WorldConfig {
        server: ServerConfig {
            heartbeat_interval: Duration::from_millis(700),
            heartbeat_timeout: Duration::from_millis(2_100),
            ..ServerConfig::default()
        },
        users: 4,
        latency: Duration::from_millis(3),
        storage_latency: Duration::from_millis(1),
        seed: 7,
    };
    let mut w = World::new(cfg);
    w.advance(Duration::from_secs(1));
    for round in 0..20 {
        w.partition_link(round % 4);
        w.advance(Duration::from_millis(5_000 + 137 * round as u64));
    }
    w.advance(w.settle_time());
    w.check_converged();
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    assert!(
        w.heartbeat_timeouts >= 15,
        "only {} silent deaths",
        w.heartbeat_timeouts
    );
}

/// The same seed and schedule give the same trace.
#[test]
fn the_same_case_replays_identically() {
    let strategy = case();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..20 {
        let c = strategy.new_tree(&mut runner).expect("case").current();
        assert_eq!(run(&c).trace_hash, run(&c).trace_hash);
    }
}

/// What a room case can make happen: the 1:1 case's faults, room messages, and crashes of
/// the server itself.
#[derive(Debug, Clone)]
enum RoomOp {
    Wait(u64),
    Logout(usize),
    Start(usize),
    Crash(usize),
    Partition(usize),
    Send(usize),
    CrashServer,
}

fn room_op(users: usize) -> impl Strategy<Value = RoomOp> {
    let u = 0..users;
    prop_oneof![
        4 => (0u64..5_000).prop_map(RoomOp::Wait),
        1 => u.clone().prop_map(RoomOp::Logout),
        2 => u.clone().prop_map(RoomOp::Start),
        1 => u.clone().prop_map(RoomOp::Crash),
        1 => u.clone().prop_map(RoomOp::Partition),
        5 => u.prop_map(RoomOp::Send),
        1 => Just(RoomOp::CrashServer),
    ]
}

#[derive(Debug, Clone)]
struct RoomCase {
    cfg: WorldConfig,
    ops: Vec<RoomOp>,
}

fn room_case() -> impl Strategy<Value = RoomCase> {
    (
        2usize..6,
        prop_oneof![Just(DuplicateLogin::Replace), Just(DuplicateLogin::Multi)],
        0u64..30,
        0u64..15,
        any::<u64>(),
    )
        .prop_flat_map(|(users, dup, lat, store_lat, seed)| {
            let cfg = WorldConfig {
                server: ServerConfig {
                    heartbeat_interval: Duration::from_millis(1_000),
                    heartbeat_timeout: Duration::from_millis(3_000),
                    duplicate_login: dup,
                    // Pages of two, so room paging is exercised across reconnects and crashes.
                    mailbox_page: 2,
                    ..ServerConfig::default()
                },
                users,
                latency: Duration::from_millis(lat),
                storage_latency: Duration::from_millis(store_lat),
                seed,
            };
            proptest::collection::vec(room_op(users), 0..40).prop_map(move |ops| RoomCase {
                cfg: cfg.clone(),
                ops,
            })
        })
}

fn run_room(case: &RoomCase) -> World {
    let mut w = World::new(case.cfg.clone()).with_room();
    w.advance(Duration::from_millis(500));
    for (n, op) in case.ops.iter().enumerate() {
        match *op {
            RoomOp::Wait(ms) => w.advance(Duration::from_millis(ms)),
            RoomOp::Logout(i) => w.logout(i),
            RoomOp::Start(i) => w.start(i),
            RoomOp::Crash(i) => w.crash_link(i),
            RoomOp::Partition(i) => w.partition_link(i),
            RoomOp::Send(i) => w.room_send(i, &format!("room message {n}")),
            RoomOp::CrashServer => w.crash_server(),
        }
        if !w.violations.is_empty() {
            return w;
        }
    }
    for i in 0..w.nodes.len() {
        w.start(i);
    }
    let settle = w.settle_time();
    w.advance(settle);
    w.check_room_delivered();
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4, ..ProptestConfig::default() })]

    /// Rooms: every member that was a member when a room message was acknowledged to its
    /// sender gets it exactly once, every application sees the room in seq order (so all
    /// see one order), across client faults, logouts and server crashes.
    #[test]
    fn room_messages_reach_every_member_once_in_one_order(case in room_case()) {
        let w = run_room(&case);
        prop_assert!(w.violations.is_empty(), "violations: {:#?}", w.violations);
    }
}

/// The room property's oracle can fail: a case with sends, crashes and offline members
/// does deliver room messages (so the property above is not vacuous).
#[test]
fn room_cases_deliver_room_messages_through_crashes() {
    let cfg = WorldConfig {
        server: ServerConfig {
            mailbox_page: 2,
            ..ServerConfig::default()
        },
        users: 4,
        latency: Duration::from_millis(5),
        storage_latency: Duration::from_millis(3),
        seed: 11,
    };
    let mut w = World::new(cfg).with_room();
    w.advance(Duration::from_secs(1));
    w.logout(3);
    for n in 0..7 {
        w.room_send(n % 3, &format!("m{n}"));
    }
    w.crash_server();
    w.room_send(1, "after the crash");
    w.advance(w.settle_time());
    w.start(3);
    w.advance(w.settle_time());
    w.check_room_delivered();
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    assert_eq!(w.server_crashes, 1);
    for n in &w.nodes {
        let seqs: Vec<u64> = n.room_received.iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<u64>>(), "{}", n.user);
    }
}
