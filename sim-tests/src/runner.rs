//! Running many seeds: on every core, with a report a person can act on.

use crate::harness::{Outcome, run_seed};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One seed's result, as a batch of seeds needs it.
pub trait SeedRun: Send {
    fn seed(&self) -> u64;
    fn passed(&self) -> bool;
    fn simulated(&self) -> Duration;
    /// The failure as the test output shows it, ending with the replay line.
    fn describe(&self) -> String;
}

impl SeedRun for Outcome {
    fn seed(&self) -> u64 {
        self.seed
    }
    fn passed(&self) -> bool {
        Outcome::passed(self)
    }
    fn simulated(&self) -> Duration {
        self.simulated
    }
    fn describe(&self) -> String {
        describe(self)
    }
}

/// What a batch of seeds found.
#[derive(Debug)]
pub struct Report<O = Outcome> {
    pub seeds: u64,
    pub failures: Vec<O>,
    pub elapsed: Duration,
    pub simulated: Duration,
}

/// The command that replays one seed, on one line: the knobs it ran with, the seed, and the
/// commit it ran at (a seed replays the same only on the same code).
pub fn replay_command(seed: u64) -> String {
    let knobs = crate::plan::Knobs::from_env().env_prefix();
    format!(
        "{knobs}SIM_SEED={seed} cargo test -p breeze-sim-tests --release -- random_seeds --nocapture  # at commit {}",
        commit()
    )
}

/// The commit of the checkout the simulation runs from (`git rev-parse --short HEAD`),
/// marked when tracked files differ from it; `unknown` without git or outside a checkout.
pub fn commit() -> &'static str {
    static COMMIT: OnceLock<String> = OnceLock::new();
    COMMIT.get_or_init(|| {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .ok()
                .filter(|out| out.status.success())
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        match git(&["rev-parse", "--short", "HEAD"]) {
            Some(hash) if !hash.is_empty() => {
                let changed = git(&["status", "--porcelain", "--untracked-files=no"])
                    .is_some_and(|s| !s.is_empty());
                if changed {
                    format!("{hash} with uncommitted changes")
                } else {
                    hash
                }
            }
            _ => "unknown".to_string(),
        }
    })
}

/// A failure, as the test output shows it.
pub fn describe(outcome: &Outcome) -> String {
    let mut text = format!(
        "seed {} failed with {} violation(s):\n",
        outcome.seed,
        outcome.violations.len()
    );
    for v in outcome.violations.iter().take(20) {
        text.push_str(&format!("  {v}\n"));
    }
    text.push_str("last events:\n");
    for line in &outcome.tail {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str(&format!(
        "replay: {}\n  (SIM_TRACE=1 prints every event)\n",
        replay_command(outcome.seed)
    ));
    text
}

/// Runs the single-server seeds `first .. first + count` on `threads` threads.
pub fn run_seeds(first: u64, count: u64, threads: usize, progress: bool) -> Report {
    run_seeds_with(first, count, threads, progress, run_seed)
}

/// Runs seeds `first .. first + count` of `run` on `threads` threads.
pub fn run_seeds_with<O: SeedRun>(
    first: u64,
    count: u64,
    threads: usize,
    progress: bool,
    run: impl Fn(u64) -> O + Sync,
) -> Report<O> {
    let start = Instant::now();
    let next = AtomicU64::new(first);
    let end = first + count;
    let failures = Mutex::new(Vec::new());
    let simulated = Mutex::new(Duration::ZERO);
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let outcome = run(seed);
                    *simulated.lock().expect("lock") += outcome.simulated();
                    if !outcome.passed() {
                        eprintln!("{}", outcome.describe());
                        failures.lock().expect("lock").push(outcome);
                    }
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if progress && n.is_multiple_of(500) {
                        eprintln!("{n} seeds run, {:?}", start.elapsed());
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("lock");
    failures.sort_by_key(SeedRun::seed);
    Report {
        seeds: count,
        failures,
        elapsed: start.elapsed(),
        simulated: simulated.into_inner().expect("lock"),
    }
}

/// How many threads to use: `SIM_THREADS`, else every core.
pub fn threads() -> usize {
    std::env::var("SIM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A number from the environment (`SIM_SEED`, `SIM_SEEDS`, …), if set; anything else set
/// there stops the run, naming the variable.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}
