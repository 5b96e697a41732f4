//! Soak: runs many random seeds and reports seeds run, failures and time.
//!
//! `cargo run -p breeze-sim-tests --release --bin sim-soak -- [COUNT] [FIRST]`
//! (default 10,000 seeds from 0; `SIM_THREADS` sets the parallelism).

use breeze_sim_tests::runner::{replay_command, run_seeds, threads};

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let first: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let threads = threads();
    eprintln!(
        "sim-soak: seeds {first}..{} on {threads} threads",
        first + count
    );
    let report = run_seeds(first, count, threads, true);
    println!(
        "seeds run: {}, failures: {}, time: {:.1?}, simulated: {:.0?}",
        report.seeds,
        report.failures.len(),
        report.elapsed,
        report.simulated
    );
    for f in &report.failures {
        println!("  failed: seed {} — {}", f.seed, replay_command(f.seed));
    }
    if !report.failures.is_empty() {
        std::process::exit(1);
    }
}
