//! The event log of one run, shared by the single-server and the cluster oracles: every
//! line hashed into the run's fingerprint (two runs of a seed must give the same one), the
//! last lines kept for a failure report, every line printed with `SIM_TRACE=1`, and the
//! violations found.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

/// How many trace lines a failure report shows.
const TAIL: usize = 60;

#[derive(Debug)]
pub struct EventLog {
    hash: u64,
    lines: u64,
    tail: VecDeque<String>,
    print: bool,
    violations: Vec<String>,
    /// Violations kept: the first ones are the interesting ones.
    max_violations: usize,
}

impl EventLog {
    pub fn new(max_violations: usize) -> EventLog {
        EventLog {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            tail: VecDeque::new(),
            print: std::env::var_os("SIM_TRACE").is_some(),
            violations: Vec::new(),
            max_violations,
        }
    }

    /// Adds a line, at simulated instant `at`.
    pub fn trace(&mut self, at: Duration, what: fmt::Arguments<'_>) {
        let line = format!("{:>9.3} {what}", at.as_secs_f64());
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.lines += 1;
        if self.print {
            eprintln!("{line}");
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// Records a violation (and traces it).
    pub fn violation(&mut self, at: Duration, what: String) {
        if self.violations.len() >= self.max_violations {
            return;
        }
        let line = format!("at {:.3}s: {what}", at.as_secs_f64());
        self.trace(at, format_args!("VIOLATION {what}"));
        self.violations.push(line);
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The run's fingerprint.
    pub fn trace_hash(&self) -> u64 {
        self.hash ^ self.lines
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
