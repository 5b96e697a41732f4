//! Soak: runs many random seeds and reports seeds run, failures and time.
//!
//! `cargo run -p breeze-sim-tests --release --bin sim-soak -- [COUNT] [FIRST]`
//! (default 10,000 seeds; `SIM_THREADS` sets the parallelism). Without `FIRST` (or
//! `SIM_FIRST`) the seeds start from a random base, printed at the start, so that every soak
//! explores new ground, as TigerBeetle's VOPR does; every failure prints the one-line command
//! that replays it, with the seed and the commit. `cargo test` keeps to fixed seeds.

use breeze_sim_tests::runner::{commit, replay_command, run_seeds, threads};
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
    let mut args = std::env::args().skip(1);
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
    eprintln!(
        "sim-soak: seeds {first}..{} ({how} base; SIM_FIRST={first} runs them again) on {threads} threads, commit {}",
        first + count,
        commit()
    );
    let report = run_seeds(first, count, threads, true);
    println!(
        "seeds run: {}, failures: {}, time: {:.1?}, simulated: {:.0?}, base seed {first}",
        report.seeds,
        report.failures.len(),
        report.elapsed,
        report.simulated
    );
    for f in &report.failures {
        println!("failed: {}", replay_command(f.seed));
    }
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
}
