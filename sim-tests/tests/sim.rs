//! The simulation suite: random seeds, determinism, and named scenarios.
//!
//! * `random_seeds` runs `SIM_SEEDS` seeds (default 500) from `SIM_FIRST` (default 0), or the
//!   single seed `SIM_SEED`. A failure prints the seed, the violations, the last events and
//!   the command that replays it.
//! * `the_same_seed_gives_the_same_trace` runs seeds twice and compares the event logs' hashes.
//! * The named scenarios each build a plan by hand and check what it is about on top of
//!   everything the oracle checks anyway.

use breeze_core::DuplicateLogin;
use breeze_core::client::StopReason;
use breeze_core::message::{CloseReason, Presence, Status};
use breeze_sim_tests::oracle::Oracle;
use breeze_sim_tests::runner::env_u64;
use breeze_sim_tests::runner::{describe, replay_command, run_seeds, threads};
use breeze_sim_tests::{Action, Harness, Outcome, Plan, SimConfig, run, run_seed};
use std::time::Duration;

/// Seeds a plain `cargo test` runs.
const CI_SEEDS: u64 = 500;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn random_seeds() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let outcome = run_seed(seed);
        eprintln!(
            "seed {seed}: {} violations, trace hash {:016x}, {:?} simulated, {:?}",
            outcome.violations.len(),
            outcome.trace_hash,
            outcome.simulated,
            outcome.stats
        );
        assert!(outcome.passed(), "{}", describe(&outcome));
        return;
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(CI_SEEDS);
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let report = run_seeds(first, count, threads(), count > 1000);
    eprintln!(
        "seeds run: {}, failures: {}, time: {:.1?}, simulated: {:.0?}",
        report.seeds,
        report.failures.len(),
        report.elapsed,
        report.simulated
    );
    let failed: Vec<String> = report
        .failures
        .iter()
        .map(|f| format!("seed {}: {}", f.seed, replay_command(f.seed)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} seeds failed (details above):\n{}",
        failed.len(),
        report.seeds,
        failed.join("\n")
    );
}

/// Runs each seed twice in this one process. Runs before it leave process-wide state behind
/// (tokio's task ids, which order a crashed runtime's teardown), so a second run of a seed
/// starts from different such state than its first; several seeds cover several offsets.
#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [7, 1234, 99_999, 1, 2, 3, 5, 8, 13, 21] {
        let a = run_seed(seed);
        let b = run_seed(seed);
        assert_eq!(
            (a.trace_hash, a.simulated, a.violations.len()),
            (b.trace_hash, b.simulated, b.violations.len()),
            "seed {seed} ran differently twice: {}",
            replay_command(seed)
        );
    }
    assert_ne!(run_seed(1).trace_hash, run_seed(2).trace_hash);
}

// ---- named scenarios ----

/// Runs `plan` and fails the test with the oracle's report if anything was violated.
fn run_checked(plan: &Plan) -> Harness {
    let mut harness = Harness::new(plan.cfg.clone());
    harness.run_plan(plan);
    let outcome = harness.outcome();
    assert!(outcome.passed(), "{}", describe(&outcome));
    harness
}

fn oracle(h: &Harness) -> std::sync::MutexGuard<'_, Oracle> {
    breeze_sim_tests::oracle::lock(&h.oracle)
}

/// Everyone but `user` saw `user` go offline within `(from, to]`, exactly once.
fn everyone_saw_offline(h: &Harness, user: usize, from: Duration, to: Duration) -> Vec<Duration> {
    let o = oracle(h);
    let mut times = Vec::new();
    for host in (0..h.cfg.clients()).filter(|&host| h.cfg.devices[host] != user) {
        let offline: Vec<Duration> = o
            .seen(host, user)
            .into_iter()
            .filter(|&(at, p)| p == Presence::Offline && at > from && at <= to)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(
            offline.len(),
            1,
            "c{host} saw u{user} go offline {} times in ({from:?}, {to:?}]: {:?}",
            offline.len(),
            o.seen(host, user)
        );
        times.push(offline[0]);
    }
    times
}

/// The original Breeze IM case: a client's connection drops, and every other client greys
/// it out — at once, since the server reads the EOF.
#[test]
fn breeze_im_case_a_dropped_client_is_seen_offline_by_everyone() {
    let mut cfg = SimConfig::small(11, 5);
    cfg.final_round = false;
    let crash = secs(3.0);
    let plan = Plan::new(cfg.clone()).at(crash, Action::CrashClient(2));
    let h = run_checked(&plan);
    // The EOF reaches the server within one network latency, the news the watchers within a
    // second one: a tick of rounding each way.
    let soon = crash + cfg.max_latency * 2 + cfg.tick * 2;
    let seen = everyone_saw_offline(&h, 2, crash, soon);
    assert_eq!(seen.len(), 4);
    // Nobody saw u2 come back.
    let o = oracle(&h);
    for host in [0, 1, 3, 4] {
        let last = o.seen(host, 2).last().copied();
        assert_eq!(last.map(|(_, p)| p), Some(Presence::Offline), "c{host}");
    }
}

/// A partition longer than the timeout: the silent peer is announced offline exactly one
/// heartbeat timeout after the last frame the server received from it — not before — and is
/// online again once the network heals and it reconnects.
#[test]
fn a_partition_longer_than_the_timeout_is_offline_then_online_again() {
    for seed in 0..4 {
        let mut cfg = SimConfig::small(100 + seed, 5);
        cfg.final_round = false;
        let t = cfg.heartbeat_timeout;
        let cut = secs(3.0) + Duration::from_millis(137 * seed);
        let heal = cut + t * 2;
        let plan = Plan::new(cfg.clone())
            .at(cut, Action::Partition(1))
            .at(heal, Action::Repair(1));
        let h = run_checked(&plan);
        let o = oracle(&h);
        // The server closed the silent connection for its silence (the oracle checked it was
        // exactly one timeout after its last frame), within a timeout of the cut.
        let timeouts = o.heartbeat_timeouts(1);
        assert_eq!(timeouts.len(), 1, "seed {seed}: {timeouts:?}");
        let dead = timeouts[0];
        assert!(
            dead > cut && dead <= cut + t + cfg.tick,
            "seed {seed}: {dead:?}"
        );
        // The last frame before the cut was at most a heartbeat interval (plus latency) old.
        assert!(dead >= cut + t - cfg.heartbeat_interval - cfg.max_latency * 2);
        drop(o);
        let offline = everyone_saw_offline(&h, 1, cut, heal);
        let o = oracle(&h);
        for (host, &at) in [0, 2, 3, 4].iter().zip(&offline) {
            assert!(
                at >= dead,
                "c{host} saw u1 offline at {at:?}, before {dead:?}"
            );
            let back: Vec<Duration> = o
                .seen(*host, 1)
                .into_iter()
                .filter(|&(at, p)| at > heal && p == Presence::Online)
                .map(|(at, _)| at)
                .collect();
            assert_eq!(back.len(), 1, "c{host} saw u1 come back {back:?}");
        }
        assert_eq!(o.host_logins(1), 2, "u1 logged in again once");
    }
}

/// A silent outage shorter than the timeout (segments held, then delivered, as TCP's
/// retransmission would): nothing is announced, and the client never even reconnects.
#[test]
fn a_partition_shorter_than_the_timeout_announces_nothing() {
    for seed in 0..4 {
        let mut cfg = SimConfig::small(200 + seed, 5);
        cfg.final_round = false;
        let t = cfg.heartbeat_timeout;
        let cut = secs(3.0) + Duration::from_millis(211 * seed);
        let plan = Plan::new(cfg.clone())
            .at(cut, Action::Hold(1))
            .at(cut + t / 2, Action::Release(1))
            .at(cut + t / 4, Action::SetStatus(3, Status::Busy));
        let h = run_checked(&plan);
        let o = oracle(&h);
        assert!(o.heartbeat_timeouts(1).is_empty());
        assert!(o.offline_announcements(1).is_empty());
        for host in [0, 2, 3, 4] {
            let changes: Vec<_> = o
                .seen(host, 1)
                .into_iter()
                .filter(|&(at, _)| at > cut)
                .collect();
            assert!(changes.is_empty(), "c{host} saw u1 change: {changes:?}");
        }
        assert_eq!(o.host_logins(1), 1, "u1 never reconnected");
        // What happened during the outage reached u1 once it was over.
        assert_eq!(
            o.host_view(1).get(&breeze_sim_tests::oracle::user_name(3)),
            Some(&Presence::Busy)
        );
    }
}

/// The server crashes with 40 clients connected and comes back over the same storage:
/// every client reconnects at once (backoff jitter spreads them), the server survives the
/// storm, nobody is left shown online who is not, and messages stored before the crash are
/// still delivered.
#[test]
fn a_server_restart_brings_everyone_back_without_ghosts() {
    let clients = 40;
    let mut cfg = SimConfig::small(300, clients);
    cfg.schedule_end = secs(12.0);
    let crash = secs(4.0);
    let restart = secs(6.0);
    let mut plan = Plan::new(cfg.clone());
    // Traffic before the crash, some to users who are down during it.
    plan.push(secs(1.0), Action::CrashClient(7));
    for (i, from) in (0..11).filter(|&h| h != 7).enumerate() {
        plan.push(
            secs(2.0) + Duration::from_millis(i as u64 * 50),
            Action::Send(from, 7),
        );
    }
    plan.push(secs(3.0), Action::SetStatus(3, Status::Away));
    plan.push(secs(3.5), Action::Logout(5));
    plan.push(crash, Action::CrashServer);
    // While the server is down, one client dies for good and another logs out: after the
    // restart both must be shown offline, though nobody saw them leave.
    plan.push(secs(5.0), Action::CrashClient(9));
    plan.push(secs(5.0), Action::Logout(10));
    plan.push(restart, Action::RestartServer);
    plan.actions.sort_by_key(|(at, _)| *at);
    let h = run_checked(&plan);
    let o = oracle(&h);
    for host in (0..clients).filter(|h| ![5, 7, 9, 10].contains(h)) {
        assert_eq!(o.host_logins(host), 2, "c{host} reconnected once");
    }
    assert_eq!(o.stats.server_restarts, 1);
    // The final round brought 7 back: its ten messages, stored before the crash, arrived.
    assert_eq!(o.stats.deliveries, 10);
}

/// Two devices of one user log in at the same moment under `replace`: one session remains,
/// the other device is told `Replaced` and stays down — no kick loop.
#[test]
fn racing_devices_under_replace_end_with_one_session() {
    for seed in 0..8 {
        let mut cfg = SimConfig::small(400 + seed, 5);
        cfg.devices = vec![0, 0, 1, 2, 3];
        cfg.users = 4;
        cfg.duplicate_login = DuplicateLogin::Replace;
        cfg.final_round = false;
        // Sometimes the loser comes back on its own user's say-so later, and wins in turn.
        let mut plan = Plan::new(cfg.clone()).at(secs(2.0), Action::SetStatus(2, Status::Busy));
        if seed % 2 == 1 {
            plan.push(secs(4.0), Action::Start(0));
            plan.push(secs(4.0), Action::Start(1));
        }
        let h = run_checked(&plan);
        let o = oracle(&h);
        let logged_in: Vec<usize> = (0..2).filter(|&d| o.host_logged_in(d)).collect();
        let replaced: Vec<usize> = (0..2)
            .filter(|&d| o.host_stopped(d) == Some(StopReason::Closed(CloseReason::Replaced)))
            .collect();
        assert_eq!(logged_in.len(), 1, "seed {seed}: logged in: {logged_in:?}");
        assert_eq!(replaced.len(), 1, "seed {seed}: replaced: {replaced:?}");
        assert_eq!(o.live_sessions(0), 1, "seed {seed}");
        let logins = o.host_logins(0) + o.host_logins(1);
        let kicks = o.replaced(0);
        let restarts = if seed % 2 == 1 { 1 } else { 0 };
        assert_eq!(
            kicks,
            logins - 1,
            "seed {seed}: every login but the first replaced one"
        );
        assert!(
            kicks <= 1 + restarts,
            "seed {seed}: {kicks} replacements: a kick loop"
        );
        // Once everyone was in, the other users saw u0 online throughout, never flapping.
        for host in 2..5 {
            let seen: Vec<_> = o
                .seen(host, 0)
                .into_iter()
                .filter(|s| s.0 > secs(1.0))
                .collect();
            let last = o
                .host_view(host)
                .get(&breeze_sim_tests::oracle::user_name(0));
            assert_eq!(last, Some(&Presence::Online), "c{host}");
            assert!(
                seen.iter().all(|s| s.1 == Presence::Online),
                "c{host}: {seen:?}"
            );
        }
    }
}

/// With an offline grace, a client that drops and is back within it is never shown
/// offline; one that stays away is shown offline once the grace has run out.
#[test]
fn a_reconnect_inside_the_grace_is_invisible() {
    let mut cfg = SimConfig::small(500, 5);
    cfg.offline_grace = secs(2.0);
    cfg.final_round = false;
    let plan = Plan::new(cfg.clone())
        .at(secs(3.0), Action::BounceClient(1))
        .at(secs(6.0), Action::CrashClient(2));
    let h = run_checked(&plan);
    let o = oracle(&h);
    assert_eq!(
        o.host_logins(1),
        2,
        "the bounced client logged in anew, once"
    );
    for host in [0, 3, 4] {
        let seen: Vec<_> = o
            .seen(host, 1)
            .into_iter()
            .filter(|s| s.0 > secs(1.0))
            .collect();
        assert!(
            seen.iter().all(|s| s.1 == Presence::Online),
            "c{host} saw u1: {seen:?}"
        );
    }
    drop(o);
    let crash = secs(6.0);
    let seen = everyone_saw_offline(&h, 2, crash, crash + secs(4.0));
    for at in seen {
        assert!(
            at >= crash + cfg.offline_grace,
            "offline at {at:?}, inside the grace"
        );
        assert!(at <= crash + cfg.offline_grace + cfg.max_latency * 2 + cfg.tick * 2);
    }
}

/// Every kind of fault at once on a bigger cluster, with long outages: the random plans
/// but 25 clients and the contacts scope.
#[test]
fn a_bigger_cluster_under_every_fault() {
    for seed in [1_000_001, 1_000_002] {
        let mut plan = breeze_sim_tests::plan::random(seed);
        let small = plan.cfg.clone();
        let clients = 25;
        let mut cfg = SimConfig::small(seed, clients);
        cfg.scope = breeze_core::message::WatchScope::Contacts;
        cfg.heartbeat_timeout = small.heartbeat_timeout;
        cfg.heartbeat_interval = small.heartbeat_interval;
        cfg.offline_grace = small.offline_grace;
        cfg.schedule_end = small.schedule_end;
        // The random plan's actions for its first clients, and everyone befriends everyone.
        for h in 0..clients {
            for u in 0..clients {
                if u != h && (u + h) % 3 == 0 {
                    plan.actions.push((secs(0.5), Action::Contact(h, u, true)));
                }
            }
        }
        plan.actions.sort_by_key(|(at, _)| *at);
        plan.cfg = cfg;
        let outcome: Outcome = run(&plan);
        assert!(outcome.passed(), "{}", describe(&outcome));
    }
}

/// Two client-core races the simulation found (now fixed), kept as regressions: random
/// seeds with the in-flight changes of mind turned on. Seed 22: the user sets Busy then Away; the
/// `OwnStatus(Busy)` echo of the first arrives after the second was sent and overwrites
/// the desired status; the link then goes silent, and the client logs in again as Busy.
/// Seed 36: remove, add, remove a contact within 15 ms; the answer to the first remove
/// confirms "removed" and drops the pending change while the last remove is still in
/// flight; the partition loses it, and the contact stays added for good.
#[test]
fn changes_of_mind_in_flight_at_a_fault_are_not_lost() {
    let knobs = breeze_sim_tests::plan::Knobs {
        in_flight_races: true,
        storage_faults: false,
    };
    // 22 and 36 found the races; 73 and 299 catch the contact race with the core as it is now.
    for seed in [22, 36, 73, 299] {
        let outcome = run(&breeze_sim_tests::plan::random_with(seed, knobs));
        assert!(outcome.passed(), "{}", describe(&outcome));
    }
}

/// Storage fails a message's store: the sender is told `StorageFailed` (the oracle checks
/// that a failure stands behind it), nothing is stored, so nothing is delivered or
/// acknowledged; the client keeps the message and sends it again `RESEND_AFTER` later on the
/// same connection, and then it arrives, once.
#[test]
fn a_message_whose_store_fails_is_not_delivered_until_sent_again() {
    let cfg = SimConfig::small(600, 5);
    let failing = breeze_sim_tests::storage::StorageFaults {
        failing: 100,
        ..breeze_sim_tests::storage::StorageFaults::HEALTHY
    };
    let healthy = breeze_sim_tests::storage::StorageFaults::HEALTHY;
    let sent = secs(3.2);
    let plan = Plan::new(cfg)
        .at(secs(3.0), Action::Storage(failing))
        .at(sent, Action::Send(0, 1))
        .at(secs(3.6), Action::Storage(healthy));
    let h = run_checked(&plan);
    let o = oracle(&h);
    assert_eq!(o.stats.storage_failures, 1, "only the store failed");
    assert_eq!(o.stats.storage_failures_told, 1, "and the sender was told");
    assert!(o.message_acked(0), "acknowledged once stored");
    let delivered = o.delivery_times(0);
    assert_eq!(delivered.len(), 1, "delivered once: {delivered:?}");
    let again = sent + breeze_core::client::RESEND_AFTER;
    assert!(
        delivered[0] > again,
        "delivered at {:?}, before it was sent again",
        delivered[0]
    );
}

/// Storage answers logins later than the client waits: each login completes at the server
/// after its client gave up on it and hung up. A late answer for a connection that is gone
/// makes no session, so the user is never shown online until a login completes in time,
/// and then once.
#[test]
fn a_login_that_completes_after_the_client_gave_up_leaves_no_ghost() {
    let mut cfg = SimConfig::small(700, 5);
    cfg.final_round = false;
    let late = cfg.connect_timeout + Duration::from_millis(500);
    let slow = breeze_sim_tests::storage::StorageFaults {
        slow: Some((late, late)),
        ..breeze_sim_tests::storage::StorageFaults::HEALTHY
    };
    let (bounce, healed) = (secs(3.1), secs(9.0));
    let plan = Plan::new(cfg.clone())
        .at(secs(3.0), Action::Storage(slow))
        .at(bounce, Action::BounceClient(2))
        .at(
            healed,
            Action::Storage(breeze_sim_tests::storage::StorageFaults::HEALTHY),
        );
    let h = run_checked(&plan);
    let o = oracle(&h);
    // The first incarnation's session and the one login after the heal: no session for any
    // of the abandoned attempts.
    assert_eq!(o.sessions_of(2), 2);
    assert_eq!(
        o.host_logins(2),
        2,
        "once before the bounce, once after the heal"
    );
    assert!(o.host_logged_in(2));
    for host in [0, 1, 3, 4] {
        let seen: Vec<_> = o
            .seen(host, 2)
            .into_iter()
            .filter(|&(at, _)| at > bounce)
            .collect();
        let online: Vec<_> = seen.iter().filter(|s| s.1 == Presence::Online).collect();
        assert_eq!(online.len(), 1, "c{host} saw u2: {seen:?}");
        assert!(
            online[0].0 > healed,
            "c{host} saw u2 online early: {seen:?}"
        );
    }
}
