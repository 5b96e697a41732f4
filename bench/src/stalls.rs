//! A probe for the moments the whole machine stops running, so that a latency figure can be
//! told apart from the machine it was measured on.
//!
//! Why: on the 2-core VM these benchmarks run on, most messages that arrived late at 10,000
//! msg/s (one node), and 94 % of them at 5,000 cross-node msg/s (three nodes), arrived in the
//! last tenth of a 100 ms wall-clock period (BENCHMARKS.md, "Machine stalls"): the host stops
//! both virtual CPUs for several milliseconds once the VM has used its CPU quota for the
//! period, and the host's work for the VM's disk writes counts against that quota. No server
//! can answer while its machine is stopped, so a p99 taken over such a run measures the host's
//! quota as much as the server.
//!
//! How: a thread at real-time priority (`SCHED_FIFO`, so that nothing in the VM delays it)
//! sleeps 0.5 ms at a time and records each wake-up that came more than 2 ms after the
//! previous one: a span in which the CPU it was woken on was not running the VM at all. Without
//! the priority (not root, say) it still runs, but a gap may then be the VM's own run queue,
//! and the report says so.

use crate::report::Report;
use crate::stats::{Summary, ms};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the probe sleeps between looks at the clock.
const TICK: Duration = Duration::from_micros(500);
/// A wake-up this much later than the previous one is a stall. Sleeping `TICK` at real-time
/// priority overshoots by tens of microseconds on an idle or busy VM; 2 ms is far above that
/// and below the stalls seen (4–20 ms).
const GAP: Duration = Duration::from_millis(2);
/// The period of the kernel's CPU bandwidth control (`cpu.cfs_period_us`, 100 ms by
/// default): a quota exhausted stops the group until the period ends, so the stalls of one
/// cluster at the same point of every period.
const PERIOD_MS: u128 = 100;
const PHASE_BINS: usize = 10;

/// A span in which the probe could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub from: Instant,
    pub until: Instant,
    /// Milliseconds since the Unix epoch when it ended, for its place in the wall-clock period.
    pub wall_end_ms: u128,
}

/// Turns the probe's successive wake-ups into stalls.
#[derive(Debug)]
struct Detector {
    last: Instant,
}

impl Detector {
    /// A wake-up at `now` (wall clock `wall_ms`): a stall from where the sleep should have
    /// ended to `now` when it came more than `GAP` after the previous one.
    fn woke(&mut self, now: Instant, wall_ms: u128) -> Option<Stall> {
        let from = self.last + TICK;
        self.last = now;
        (now.saturating_duration_since(from) + TICK > GAP).then_some(Stall {
            from,
            until: now,
            wall_end_ms: wall_ms,
        })
    }
}

/// The probe while it runs.
#[derive(Debug)]
pub struct StallProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Stalls>,
}

/// What the probe saw, in the order it saw it.
#[derive(Debug, Clone, Default)]
pub struct Stalls {
    /// Whether the probe ran at real-time priority, so that a stall is the machine's and not
    /// the VM's run queue.
    pub realtime: bool,
    pub list: Vec<Stall>,
}

impl StallProbe {
    /// Starts the probe thread.
    pub fn start() -> StallProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-stall-probe".into())
            .spawn(move || {
                let realtime = realtime_priority();
                let mut d = Detector {
                    last: Instant::now(),
                };
                let mut list = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    if let Some(s) = d.woke(now, wall_ms()) {
                        list.push(s);
                    }
                }
                Stalls { realtime, list }
            })
            .expect("spawn the stall probe thread");
        StallProbe { stop, thread }
    }

    /// Stops the probe and hands over what it saw.
    pub fn stop(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Raises the calling thread to the lowest real-time priority; false if not allowed.
#[allow(unsafe_code)]
fn realtime_priority() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `sched_setscheduler` only reads `param` during the call; pid 0 is the calling
    // thread (Linux applies it per thread).
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

impl Stalls {
    /// The stalls that overlap `[from, until)`.
    pub fn within(&self, from: Instant, until: Instant) -> Vec<Stall> {
        self.list
            .iter()
            .filter(|s| s.until > from && s.from < until)
            .copied()
            .collect()
    }

    /// Whether any stall overlaps `[from, until]`: a message in flight then was delayed by it.
    pub fn overlaps(&self, from: Instant, until: Instant) -> bool {
        // Sorted by `from`, and they do not overlap each other: the last one starting at or
        // before `until` is the only candidate.
        let i = self.list.partition_point(|s| s.from <= until);
        i > 0 && self.list[i - 1].until >= from
    }

    /// The stall `at` fell in, if any.
    fn containing(&self, at: Instant) -> Option<&Stall> {
        let i = self.list.partition_point(|s| s.from <= at);
        (i > 0 && self.list[i - 1].until > at).then(|| &self.list[i - 1])
    }

    /// The least latency (µs) each message could have had, whatever the server: one due while
    /// the machine was stopped cannot even be sent before the stall ends, and its latency counts
    /// from the time it was due (`samples`' instants: the pacer's intended times). So these are
    /// the latencies of a server that costs nothing, on this run's machine; their p99 is a floor
    /// under the p99 of any server measured there. A lower bound: stalls under `GAP` are not
    /// seen, and a message the stall caught in flight is not counted.
    pub fn floor(&self, samples: &[(Instant, u64)]) -> Vec<u64> {
        samples
            .iter()
            .map(|&(at, _)| {
                self.containing(at).map_or(0, |s| {
                    u64::try_from((s.until - at).as_micros()).unwrap_or(u64::MAX)
                })
            })
            .collect()
    }

    /// How many of `stalls` ended in each tenth of the wall-clock period.
    fn phases(stalls: &[Stall]) -> [usize; PHASE_BINS] {
        let mut bins = [0; PHASE_BINS];
        for s in stalls {
            let bin = (s.wall_end_ms % PERIOD_MS) as usize * PHASE_BINS / PERIOD_MS as usize;
            bins[bin] += 1;
        }
        bins
    }

    /// The stalls in the measured window, the floor they put under the latency (`floor`), and
    /// the latency of the messages none of them delayed (`samples`: each message's intended send
    /// time and latency in µs).
    pub fn report(&self, r: &mut Report, window: (Instant, Instant), samples: &[(Instant, u64)]) {
        let seen = self.within(window.0, window.1);
        let total: Duration = seen.iter().map(|s| s.until - s.from).sum();
        let longest = seen.iter().map(|s| s.until - s.from).max();
        let phases = Stalls::phases(&seen);
        let top = phases.iter().copied().max().unwrap_or(0);
        let secs = (window.1 - window.0).as_secs_f64().max(1e-9);
        let how = if self.realtime {
            "probe at real-time priority"
        } else {
            "probe NOT at real-time priority (needs root): a gap may be the VM's own run queue"
        };
        r.both(
            "machine stalls (nothing ran ≥ 2 ms)",
            if seen.is_empty() {
                format!("none ({how})")
            } else {
                format!(
                    "{} in the window, {:.0} ms in all ({:.1} %), longest {:.1} ms; {top} of them \
                     ended in the same tenth of a 100 ms period ({how})",
                    seen.len(),
                    total.as_secs_f64() * 1e3,
                    total.as_secs_f64() / secs * 100.0,
                    longest.unwrap_or_default().as_secs_f64() * 1e3,
                )
            },
            "stalls",
            json!({
                "realtime_probe": self.realtime,
                "count": seen.len(),
                "total_ms": (total.as_secs_f64() * 1e4).round() / 10.0,
                "longest_ms": longest.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
                "ends_per_tenth_of_100ms": phases,
            }),
        );
        let mut floor = self.floor(samples);
        let due_in_stall = floor.iter().filter(|&&us| us > 0).count();
        let f = Summary::of(&mut floor);
        r.both(
            "latency floor from the stalls alone",
            match &f {
                Some(s) => format!(
                    "p99 {} p99.9 {} max {} ({due_in_stall} of {} messages were due while the \
                     machine was stopped; a server that cost nothing would show this)",
                    ms(s.p99),
                    ms(s.p999),
                    ms(s.max),
                    s.count
                ),
                None => "no samples".to_owned(),
            },
            "latency_floor",
            Summary::json(f.as_ref()),
        )
        .field("messages_due_in_stall", due_in_stall);
        let mut clear: Vec<u64> = samples
            .iter()
            .filter(|&&(at, us)| !self.overlaps(at, at + Duration::from_micros(us)))
            .map(|&(_, us)| us)
            .collect();
        let l = Summary::of(&mut clear);
        r.both(
            "latency of messages no stall delayed",
            match &l {
                Some(s) => format!(
                    "p50 {} p99 {} p99.9 {} max {} (n={}, {} left out)",
                    ms(s.p50),
                    ms(s.p99),
                    ms(s.p999),
                    ms(s.max),
                    s.count,
                    samples.len() - s.count
                ),
                None => "no samples".to_owned(),
            },
            "latency_outside_stalls",
            Summary::json(l.as_ref()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_late_wake_up_is_a_stall() {
        let t0 = Instant::now();
        let mut d = Detector { last: t0 };
        assert_eq!(d.woke(t0 + TICK + Duration::from_micros(80), 0), None);
        let t1 = d.last;
        let late = t1 + Duration::from_millis(6);
        let s = d.woke(late, 1_234_595).expect("a 6 ms wake-up is a stall");
        assert_eq!((s.from, s.until), (t1 + TICK, late));
        assert_eq!(d.woke(late + TICK, 0), None, "back on time");
    }

    #[test]
    fn overlap_and_phase() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let stalls = Stalls {
            realtime: true,
            list: vec![
                Stall {
                    from: at(10),
                    until: at(15),
                    wall_end_ms: 1_000_095,
                },
                Stall {
                    from: at(110),
                    until: at(115),
                    wall_end_ms: 1_000_195,
                },
                Stall {
                    from: at(150),
                    until: at(152),
                    wall_end_ms: 1_000_232,
                },
            ],
        };
        assert!(!stalls.overlaps(at(0), at(9)));
        assert!(stalls.overlaps(at(0), at(10)));
        assert!(stalls.overlaps(at(12), at(13)), "inside one");
        assert!(stalls.overlaps(at(14), at(120)), "spanning two");
        assert!(!stalls.overlaps(at(16), at(109)));
        assert!(!stalls.overlaps(at(153), at(400)));
        assert_eq!(stalls.within(at(100), at(200)).len(), 2);
        let due = |ms: u64| (at(ms), 50);
        assert_eq!(
            stalls.floor(&[due(9), due(10), due(12), due(15), due(151), due(300)]),
            [0, 5_000, 3_000, 0, 1_000, 0],
            "a message due in a stall waits for its end; at its end, or outside, not at all"
        );
        assert_eq!(
            Stalls::phases(&stalls.list),
            [0, 0, 0, 1, 0, 0, 0, 0, 0, 2],
            "two end at 95 ms of their period, one at 32"
        );
    }
}
