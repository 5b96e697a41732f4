//! The cluster simulation (`breeze_sim_tests::cluster`): three or four real server hosts
//! sharing one database over a bus model of core NATS, real clients moving between them.
//!
//! * `cluster_seeds` runs `SIM_CLUSTER_SEEDS` seeds (default 500) from `SIM_CLUSTER_FIRST`
//!   (default 0), or the one seed `SIM_CLUSTER_SEED`; every failure prints its replay line.
//! * The scenarios pin one story each.

use breeze_sim_tests::cluster::{
    ClusterHarness, cluster_replay_command, run_cluster, run_cluster_seed,
};
use breeze_sim_tests::cluster_plan::{ClusterAction, ClusterPlan, ClusterSimConfig};
use breeze_sim_tests::runner::{SeedRun, env_u64, run_seeds_with, threads};
use std::time::Duration;

/// Seeds `cargo test` runs.
const CI_SEEDS: u64 = 500;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn cluster_seeds() {
    if let Some(seed) = env_u64("SIM_CLUSTER_SEED") {
        let outcome = run_cluster_seed(seed);
        eprintln!(
            "cluster seed {seed}: {} violations, trace hash {:016x}, {:?} simulated, {:?}, {:?}",
            outcome.violations.len(),
            outcome.trace_hash,
            outcome.simulated,
            outcome.stats,
            outcome.bus
        );
        assert!(outcome.passed(), "{}", outcome.describe());
        return;
    }
    let count = env_u64("SIM_CLUSTER_SEEDS").unwrap_or(CI_SEEDS);
    let first = env_u64("SIM_CLUSTER_FIRST").unwrap_or(0);
    let report = run_seeds_with(first, count, threads(), count > 1000, run_cluster_seed);
    eprintln!(
        "cluster seeds run: {}, failures: {}, time: {:.1?}, simulated: {:.0?}",
        report.seeds,
        report.failures.len(),
        report.elapsed,
        report.simulated
    );
    let failed: Vec<String> = report
        .failures
        .iter()
        .map(|f| format!("seed {}: {}", f.seed, cluster_replay_command(f.seed)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cluster seeds failed (details above):\n{}",
        failed.len(),
        report.seeds,
        failed.join("\n")
    );
}

#[test]
fn the_same_cluster_seed_gives_the_same_trace() {
    for seed in [1, 2] {
        let a = run_cluster_seed(seed);
        let b = run_cluster_seed(seed);
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} ran two ways");
    }
}

/// A node whose bus link is cut past its fence deadline closes its clients with
/// `NodeFenced`; they come back through another node, and nobody is a ghost.
#[test]
fn a_cut_node_fences_and_its_clients_come_back_elsewhere() {
    let cfg = ClusterSimConfig::new(7, 3, 6);
    let plan = ClusterPlan::new(cfg)
        .at(secs(3.0), ClusterAction::Cut(0))
        .at(secs(3.0), ClusterAction::Send(0, 1))
        .at(secs(9.0), ClusterAction::Heal(0))
        .at(secs(10.0), ClusterAction::Send(3, 4));
    let outcome = run_cluster(&plan);
    assert!(outcome.passed(), "{}", outcome.describe());
    // Clients 0 and 3 dial node 0 first.
    assert!(
        outcome.stats.fenced_byes >= 2,
        "node 0's clients were fenced: {:?}",
        outcome.stats
    );
}

/// A crashed node's users go offline everywhere, or come back through another node; a
/// restart under a new epoch brings no ghost back.
#[test]
fn a_crashed_node_restarts_without_ghosts() {
    let cfg = ClusterSimConfig::new(8, 3, 6);
    let plan = ClusterPlan::new(cfg)
        .at(secs(3.0), ClusterAction::Logout(4))
        .at(secs(4.0), ClusterAction::CrashNode(1, false))
        .at(secs(4.0), ClusterAction::Send(1, 2))
        .at(secs(9.0), ClusterAction::RestartNode(1))
        .at(secs(12.0), ClusterAction::Send(2, 1));
    let mut h = ClusterHarness::new(plan.cfg.clone());
    h.run_plan(&plan);
    let outcome = h.outcome();
    assert!(outcome.passed(), "{}", outcome.describe());
    assert_eq!(outcome.stats.node_crashes, 1);
}

/// A node lost for good together with the clients it served: nobody ends their sessions
/// but the node deadline at the others, which must show them offline.
#[test]
fn a_node_lost_with_its_clients_leaves_no_ghost() {
    let cfg = ClusterSimConfig::new(9, 3, 6);
    let plan = ClusterPlan::new(cfg).at(secs(4.0), ClusterAction::KillNode(2));
    let outcome = run_cluster(&plan);
    assert!(outcome.passed(), "{}", outcome.describe());
    assert_eq!(outcome.stats.node_crashes, 1);
}
