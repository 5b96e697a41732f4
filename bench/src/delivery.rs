//! A measured delivery run, shared by the chat and room scenarios: log the clients in, pace
//! their sends, sample the server over the window, drain, and report deliveries, latency
//! and server CPU. The scenarios differ only in whom a client writes to (`chat::To`) and in
//! how many sessions each message is delivered to (`fanout`).

use crate::chat::ChatShared;
use crate::pacer;
use crate::pop::{self, Population};
use crate::procfs::{self, Sample};
use crate::report::{Report, round};
use crate::scenarios::{Rate, bar};
use crate::stalls::Stalls;
use crate::stats::{Summary, ms};
use crate::target::Target;
use breeze_core::message::Credential;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a login may take before it counts as failed.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after the window the run waits for every confirmed message to be delivered.
const DRAIN: Duration = Duration::from_secs(5);
/// How long stopped clients have to hand in their figures before they are aborted.
const STOP: Duration = Duration::from_secs(10);

/// Logs users `indices` in with their passwords, `inflight` at a time. Returns one entry per
/// index, in order (`None` where the login failed), and the errors.
pub async fn login_all(
    target: &Target,
    pop: &Arc<Population>,
    indices: &[usize],
    inflight: usize,
) -> (Vec<Option<pop::Session>>, Vec<String>) {
    let pb = bar(indices.len() as u64, "logins");
    let slots = Arc::new(Semaphore::new(inflight.max(1)));
    let done = Arc::new(AtomicUsize::new(0));
    let mut logins = JoinSet::new();
    for (k, &i) in indices.iter().enumerate() {
        let (pop, slots, done, addr) =
            (pop.clone(), slots.clone(), done.clone(), target.addr_of(i));
        logins.spawn(async move {
            let _slot = slots.acquire().await;
            let s = tokio::time::timeout(
                LOGIN_TIMEOUT,
                pop::login(addr, &pop, i, Credential::Password(pop.password(i))),
            )
            .await
            .unwrap_or_else(|_| Err("login timed out".into()));
            done.fetch_add(1, Ordering::Relaxed);
            (k, s)
        });
    }
    let mut sessions: Vec<Option<pop::Session>> = indices.iter().map(|_| None).collect();
    let mut errors = Vec::new();
    while let Some(j) = logins.join_next().await {
        pb.set_position(done.load(Ordering::Relaxed) as u64);
        match j {
            Ok((k, Ok(s))) => sessions[k] = Some(s),
            Ok((_, Err(e))) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    pb.finish_and_clear();
    if let Some(e) = errors.last() {
        eprintln!("breeze-bench: {} logins failed, e.g. {e}", errors.len());
    }
    (sessions, errors)
}

/// The pacing thread and each client's intended send times.
pub type Paced = (
    JoinHandle<()>,
    std::vec::IntoIter<UnboundedReceiver<Instant>>,
);

/// Under a set rate, `n` clients each send every n/rate seconds from `shared.start`, evenly
/// staggered, until the window ends; `None` under `--rate max`.
pub fn pace(n: usize, rate: Rate, shared: &ChatShared) -> Result<Option<Paced>, String> {
    let Rate::PerSecond(rate) = rate else {
        return Ok(None);
    };
    let interval = Duration::from_secs_f64(n as f64 / rate);
    let schedules: Vec<_> = (0..n)
        .map(|i| pacer::Schedule {
            first: shared.start + interval.mul_f64(i as f64 / n as f64),
            interval,
        })
        .collect();
    let (thread, times) = pacer::start(&schedules, shared.window_end)
        .map_err(|e| format!("cannot start the pacing thread: {e}"))?;
    Ok(Some((thread, times.into_iter())))
}

/// The server, each node and the bench at one moment, and in a cluster the CPU seconds of
/// every PostgreSQL process on this machine (the nodes' shared database, when it runs here).
#[derive(Debug)]
struct Samples {
    server: Option<Sample>,
    nodes: Vec<Option<Sample>>,
    bench: Option<Sample>,
    postgres_cpu_s: Option<f64>,
}

impl Samples {
    fn take(target: &Target) -> Samples {
        Samples {
            server: target.sample(),
            nodes: target.samples(),
            bench: Sample::take(None),
            postgres_cpu_s: if target.node_count() > 1 {
                procfs::cpu_seconds_named("postgres").ok().flatten()
            } else {
                None
            },
        }
    }
}

/// The samples at both ends of the measured window (`start` is `None` if it never began).
#[derive(Debug)]
pub struct Window {
    start: Option<Samples>,
    end: Samples,
}

/// Waits out the warm-up and the window, sampling at both ends, then stops the sending.
pub async fn run_window(target: &Target, shared: &ChatShared, what: &str) -> Window {
    let total = shared
        .window_end
        .saturating_duration_since(shared.start)
        .as_secs()
        .max(1);
    let pb = bar(total, what);
    let mut start = None;
    loop {
        let now = Instant::now();
        if start.is_none() && now >= shared.window_start {
            start = Some(Samples::take(target));
        }
        if now >= shared.window_end {
            break;
        }
        pb.set_position(now.saturating_duration_since(shared.start).as_secs());
        tokio::time::sleep(
            Duration::from_millis(5).min(shared.window_end.saturating_duration_since(now)),
        )
        .await;
    }
    shared.stop_sending.store(true, Ordering::Relaxed);
    let end = Samples::take(target);
    pb.finish_and_clear();
    Window { start, end }
}

/// Waits (at most `DRAIN`) until everything sent is confirmed and every confirmed message
/// has reached its `fanout` sessions.
pub async fn drain(shared: &ChatShared, fanout: u64) {
    let until = Instant::now() + DRAIN;
    while Instant::now() < until {
        let c = shared.confirmed.load(Ordering::Relaxed);
        if shared.delivered.load(Ordering::Relaxed) >= c * fanout
            && c >= shared.sent.load(Ordering::Relaxed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stops the clients and collects what they return; any not done within `STOP` are aborted.
pub async fn stop_all<T: 'static>(tasks: &mut JoinSet<T>, stop: &watch::Sender<bool>) -> Vec<T> {
    let _ = stop.send(true);
    let mut results = Vec::new();
    let all = async {
        while let Some(j) = tasks.join_next().await {
            if let Ok(t) = j {
                results.push(t);
            }
        }
    };
    if tokio::time::timeout(STOP, all).await.is_err() {
        tasks.abort_all();
    }
    results
}

/// Deliveries, losses, duplicates and latency, each message owed to `fanout` sessions, and,
/// when a probe watched the run, the machine's stalls and the latency of the messages they did
/// not delay. Returns the latency samples (µs), for a plot.
pub fn report_deliveries(
    r: &mut Report,
    shared: &ChatShared,
    duration: Duration,
    fanout: u64,
    what: &str,
    stalls: Option<&Stalls>,
) -> Vec<u64> {
    let secs = duration.as_secs_f64();
    let sent = shared.sent.load(Ordering::Relaxed);
    let confirmed = shared.confirmed.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let in_window = shared.delivered_in_window.load(Ordering::Relaxed);
    let owed = confirmed * fanout;
    let rate = in_window as f64 / secs;
    let timed = std::mem::take(
        &mut *shared
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let samples: Vec<u64> = timed.iter().map(|&(_, us)| us).collect();
    let l = Summary::of(&mut samples.clone());
    r.both(
        "delivered",
        format!("{rate:.0} msg/s ({in_window} in the window)"),
        "delivered_per_s",
        round(rate, 1),
    )
    .field("delivered_in_window", in_window)
    .field(
        "sent_in_window",
        shared.sent_in_window.load(Ordering::Relaxed),
    )
    .both(
        "sent / durable (Sent) / delivered",
        format!("{sent} / {confirmed} / {delivered}"),
        "sent",
        sent,
    )
    .field("confirmed", confirmed)
    .field("delivered_total", delivered)
    .both(
        "lost (durable, never delivered)",
        if fanout > 1 {
            format!(
                "{} (of {owed} owed: {confirmed} × {fanout} sessions)",
                owed.saturating_sub(delivered)
            )
        } else {
            owed.saturating_sub(delivered).to_string()
        },
        "lost",
        owed.saturating_sub(delivered),
    )
    .field("unconfirmed", sent.saturating_sub(confirmed))
    .both(
        "duplicates delivered",
        shared.duplicates.load(Ordering::Relaxed).to_string(),
        "duplicates",
        shared.duplicates.load(Ordering::Relaxed),
    );
    let label = format!("latency {what}");
    match &l {
        Some(s) => r.row(
            label,
            format!(
                "p50 {} p99 {} p99.9 {} max {} (n={})",
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                ms(s.max),
                s.count
            ),
        ),
        None => r.row(label, "no samples"),
    };
    r.field("latency", Summary::json(l.as_ref()));
    if let Some(stalls) = stalls {
        let timed: Vec<(std::time::Instant, u64)> =
            timed.iter().map(|&(at, us)| (at.into_std(), us)).collect();
        let window = (shared.window_start.into_std(), shared.window_end.into_std());
        stalls.report(r, window, &timed);
    }
    samples
}

/// Server CPU over the window, per delivered message and, with `per_sent` (a message
/// delivered to many), per message sent too; per node in a cluster; the bench's own CPU.
pub fn report_cpu(
    r: &mut Report,
    target: &Target,
    w: &Window,
    shared: &ChatShared,
    duration: Duration,
    per_sent: bool,
) {
    let secs = duration.as_secs_f64();
    let (
        Some(Samples {
            server: Some(s0),
            bench: b0,
            nodes: nodes0,
            postgres_cpu_s: pg0,
        }),
        Some(s1),
    ) = (&w.start, w.end.server)
    else {
        r.row("server CPU", "not measured (no server pid)");
        return;
    };
    let cpu = s1.cpu_s - s0.cpu_s;
    let delivered = shared.delivered_in_window.load(Ordering::Relaxed);
    let per = cpu * 1e6 / delivered.max(1) as f64;
    r.both(
        "server CPU in window",
        format!("{cpu:.2} s = {:.0} % of one core", cpu / secs * 100.0),
        "server_cpu_s",
        round(cpu, 3),
    )
    .both(
        "server CPU per delivered message",
        format!("{per:.2} µs"),
        "server_cpu_us_per_msg",
        round(per, 2),
    )
    .field("server_rss_bytes", s1.rss);
    if per_sent {
        let sent = shared.sent_in_window.load(Ordering::Relaxed);
        let per = cpu * 1e6 / sent.max(1) as f64;
        r.both(
            "server CPU per sent message",
            format!("{per:.1} µs ({sent} sent in the window)"),
            "server_cpu_us_per_sent",
            round(per, 1),
        );
    }
    if target.node_count() > 1 {
        let per: Vec<Value> = nodes0
            .iter()
            .zip(&w.end.nodes)
            .map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => {
                    json!({"cpu_s": round(b.cpu_s - a.cpu_s, 3), "rss_bytes": b.rss})
                }
                _ => Value::Null,
            })
            .collect();
        let shown: Vec<String> = per
            .iter()
            .map(|p| match (p["cpu_s"].as_f64(), p["rss_bytes"].as_u64()) {
                (Some(c), Some(m)) => {
                    format!(
                        "{:.0} % / {:.0} MiB",
                        c / secs * 100.0,
                        m as f64 / 1048576.0
                    )
                }
                _ => "not read".to_owned(),
            })
            .collect();
        r.both(
            "per node: CPU of one core / RSS",
            shown.join(", "),
            "server_per_node",
            per,
        );
    }
    if let (Some(pg0), Some(pg1)) = (pg0, w.end.postgres_cpu_s) {
        // Every `postgres` process on this machine: the nodes' database if it runs here, and
        // whatever else it serves at the time.
        let pg = pg1 - pg0;
        let per = pg * 1e6 / delivered.max(1) as f64;
        r.both(
            "PostgreSQL CPU in window (every postgres process here)",
            format!(
                "{pg:.2} s = {:.0} % of one core, {per:.1} µs per delivered message",
                pg / secs * 100.0
            ),
            "postgres_cpu_s",
            round(pg, 3),
        )
        .field("postgres_cpu_us_per_msg", round(per, 1));
    }
    if let (Some(b0), Some(b1)) = (b0, w.end.bench) {
        let bcpu = b1.cpu_s - b0.cpu_s;
        r.both(
            "bench CPU in window",
            format!("{bcpu:.2} s = {:.0} % of one core", bcpu / secs * 100.0),
            "bench_cpu_s",
            round(bcpu, 3),
        );
    }
}
