//! Soak: runs many random seeds and reports seeds run, failures and time.
//!
//! `cargo run -p breeze-sim-tests --release --bin sim-soak -- [--cluster] [COUNT] [FIRST]`
//! (default 10,000 seeds; `SIM_THREADS` sets the parallelism). `--cluster` soaks the
//! cluster simulation (`breeze_sim_tests::cluster`) instead of the single server. Without `FIRST` (or
//! `SIM_FIRST`) the seeds start from a random base, printed at the start, so that every soak
//! explores new ground, as TigerBeetle's VOPR does; every failure prints the one-line command
//! that replays it, with the seed and the commit. `cargo test` keeps to fixed seeds.

use breeze_sim_tests::cluster::{cluster_replay_command, run_cluster_seed};
use breeze_sim_tests::runner::{
    Report, SeedRun, commit, replay_command, run_seeds, run_seeds_with, threads,
};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// A base seed nobody chose: the operating system's randomness (through the standard
/// library's hash keys) mixed with the time. 48 bits, so that any count after it fits.
fn random_base() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish() >> 16
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let cluster = args.next_if(|a| a == "--cluster").is_some();
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let chosen = args
        .next()
        .or_else(|| std::env::var("SIM_FIRST").ok())
        .map(|a| {
            a.parse::<u64>()
                .unwrap_or_else(|_| panic!("FIRST must be a number, not {a:?}"))
        });
    let first = chosen.unwrap_or_else(random_base);
    let threads = threads();
    let how = if chosen.is_some() { "given" } else { "random" };
    let what = if cluster { "cluster " } else { "" };
    eprintln!(
        "sim-soak: {what}seeds {first}..{} ({how} base; SIM_FIRST={first} runs them again) on {threads} threads, commit {}",
        first + count,
        commit()
    );
    if cluster {
        let report = run_seeds_with(first, count, threads, true, run_cluster_seed);
        finish(&report, first, cluster_replay_command);
    } else {
        let report = run_seeds(first, count, threads, true);
        finish(&report, first, replay_command);
    }
}

/// Prints the result, a replay line per failure, and fails the process on any failure.
fn finish<O: SeedRun>(report: &Report<O>, first: u64, replay: fn(u64) -> String) {
    println!(
        "seeds run: {}, failures: {}, time: {:.1?}, simulated: {:.0?}, base seed {first}",
        report.seeds,
        report.failures.len(),
        report.elapsed,
        report.simulated
    );
    for f in &report.failures {
        println!("failed: {}", replay(f.seed()));
    }
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
}
