//! The scenarios: each sets up users, runs bounded phases, and returns its report.

use crate::chat::{self, ChatShared, Pace, To};
use crate::delivery::{
    drain, login_all, pace, report_cpu, report_deliveries, run_window, stop_all,
};
use crate::plot::{self, Mark};
use crate::pop::{self, Population, Scope};
use crate::presence::{self, Close, Control, Go, Leave, Shared};
use crate::procfs::{self, Sample};
use crate::report::{Report, round};
use crate::stalls::StallProbe;
use crate::stats::{Summary, ms};
use crate::target::{Policy, ServerOpts, Target};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Sockets kept free for everything else in this process (and the server's own files).
pub const FD_RESERVE: u64 = 100;

/// Options every scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub server: ServerOpts,
    /// Write a latency histogram (PNG) here.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Logins in flight at most during a login storm (connect to `LoginOk`). The server's
    /// listen backlog is 4096 (`LISTEN_BACKLOG` in server/src/lib.rs), so this is not about
    /// dropped SYNs; it keeps the storm a queue of logins the server works through, so that
    /// the latencies measured are the server's and not a queue the bench built itself.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub inflight: usize,
    /// Longest any one phase may take before the scenario gives up on it and reports what
    /// it has.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub phase_timeout: Duration,
}

/// The most clients this process can hold open: the file limit (raised to its hard limit at
/// start) less a reserve. Says so, plainly, when asked for more.
pub fn cap_clients(asked: usize, fd_limit: u64) -> usize {
    let cap = fd_limit.saturating_sub(FD_RESERVE) as usize;
    if asked > cap {
        eprintln!(
            "breeze-bench: asked for {asked} clients, but RLIMIT_NOFILE allows {fd_limit} open \
             files per process (the server has the same limit), so this run uses {cap} clients. \
             Raise the hard limit (ulimit -Hn, /etc/security/limits.conf) to go further."
        );
        cap
    } else {
        asked
    }
}

pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg:>18} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_owned());
    pb
}

/// Polls `count` until it reaches `target` or `timeout` passes; returns whether it did.
pub(crate) async fn wait_for(
    count: impl Fn() -> usize,
    target: usize,
    timeout: Duration,
    pb: &ProgressBar,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let c = count();
        pb.set_position(c as u64);
        if c >= target {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Sleeps `d`, showing it as a bar of seconds.
pub(crate) async fn timed(d: Duration, msg: &str) {
    let pb = bar(d.as_secs().max(1), msg);
    let end = Instant::now() + d;
    while Instant::now() < end {
        pb.set_position((d.as_secs_f64() - (end - Instant::now()).as_secs_f64()) as u64);
        tokio::time::sleep(Duration::from_millis(100).min(end - Instant::now())).await;
    }
    pb.finish_and_clear();
}

pub(crate) fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub(crate) fn common_fields(r: &mut Report, opts: &ServerOpts, target: &Target) {
    r.field("loadavg_at_start", loadavg())
        .field(
            "server",
            if target.spawned() {
                "spawned"
            } else {
                "external"
            },
        )
        .field("argon2_memory_kib", opts.argon2_memory_kib)
        .field("argon2_iterations", opts.argon2_iterations)
        .field("synchronous", opts.synchronous.clone())
        .field("transport", opts.transport.name())
        .field("nodes", target.node_count());
    if target.node_count() > 1 {
        r.row(
            "nodes",
            format!(
                "{} (NATS + PostgreSQL, node timeout {:?}), clients round-robin",
                target.node_count(),
                opts.node_timeout
            ),
        )
        .field("node_timeout_ms", opts.node_timeout.as_millis() as u64)
        .field("store", "postgresql");
    } else if target.spawned() {
        r.field("store", "sqlite");
    }
}

pub(crate) fn finish(r: &mut Report, target: Target, errors: usize, last_error: Option<String>) {
    let warnings = target.finish();
    r.both("client errors", errors.to_string(), "errors", errors);
    if let Some(e) = &last_error {
        r.both("last client error", e.clone(), "last_error", e.clone());
    }
    r.both(
        "server warnings logged",
        warnings.len().to_string(),
        "server_warnings",
        warnings.len(),
    );
    if let Some(w) = warnings.last() {
        r.field("last_server_warning", w.clone());
    }
}

pub(crate) fn write_plot(
    path: &Option<PathBuf>,
    title: &str,
    samples: &[u64],
    marks: &[Mark],
    r: &mut Report,
) {
    if let Some(path) = path {
        match plot::histogram(path, title, samples, marks) {
            Ok(()) => {
                r.both(
                    "histogram",
                    path.display().to_string(),
                    "plot",
                    path.display().to_string(),
                );
            }
            Err(e) => eprintln!("breeze-bench: cannot write {}: {e}", path.display()),
        }
    }
}

fn setup_report(r: &mut Report, s: &pop::SetupStats, took: Duration) {
    r.row(
        "setup",
        format!(
            "{} registered ({} already), {} contacts added, {} errors, {:.1} s",
            s.registered,
            s.already_there,
            s.contacts_added,
            s.errors,
            took.as_secs_f64()
        ),
    );
    r.field("setup", json!({"registered": s.registered, "already_registered": s.already_there,
        "contacts_added": s.contacts_added, "errors": s.errors, "seconds": round(took.as_secs_f64(), 2),
        "last_error": s.last_error}));
    if let Some(e) = &s.last_error {
        eprintln!("breeze-bench: setup error: {e}");
    }
}

pub(crate) async fn run_setup(addr: std::net::SocketAddr, pop: &Arc<Population>, r: &mut Report) {
    let pb = bar(pop.n as u64, "setup");
    let t = Instant::now();
    let s = pop::setup(addr, pop, &pb).await;
    pb.finish_and_clear();
    setup_report(r, &s, t.elapsed());
}

/// Presence clients, spawned and controlled together.
struct Crowd {
    shared: Arc<Shared>,
    go: watch::Sender<Go>,
    stop: watch::Sender<bool>,
    strike: watch::Sender<Option<Instant>>,
    census: watch::Sender<u64>,
    tasks: JoinSet<()>,
    round: u64,
}

impl Crowd {
    fn spawn(
        pop: &Arc<Population>,
        inflight: usize,
        victims: &[usize],
        stagger: Duration,
        leave: Leave,
    ) -> Crowd {
        let shared = Arc::new(Shared::new(pop.clone(), inflight, victims));
        let (go, go_rx) = watch::channel(Go {
            round: 0,
            addrs: Arc::from([]),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (strike, strike_rx) = watch::channel(None);
        let (census, census_rx) = watch::channel(0);
        let mut tasks = JoinSet::new();
        for i in 0..pop.n {
            let ctl = Control {
                go: go_rx.clone(),
                stop: stop_rx.clone(),
                strike: strike_rx.clone(),
                stagger,
                leave,
                census: census_rx.clone(),
            };
            tasks.spawn(presence::client(i, shared.clone(), ctl));
        }
        Crowd {
            shared,
            go,
            stop,
            strike,
            census,
            tasks,
            round: 0,
        }
    }

    /// Asks every watcher still connected how many victims its view shows online, and
    /// returns (those pairs, watchers that answered), waiting up to 5 s for `watchers`
    /// answers.
    async fn census(&self, watchers: usize) -> (usize, usize) {
        let s = &self.shared;
        s.ghosts.store(0, Ordering::Relaxed);
        s.census_answers.store(0, Ordering::Relaxed);
        self.census.send_modify(|k| *k += 1);
        let pb = bar(watchers as u64, "census");
        wait_for(
            || s.census_answers.load(Ordering::Relaxed),
            watchers,
            Duration::from_secs(5),
            &pb,
        )
        .await;
        pb.finish_and_clear();
        (
            s.ghosts.load(Ordering::Relaxed),
            s.census_answers.load(Ordering::Relaxed),
        )
    }

    /// A login storm to `addr`: returns (seconds to the last LoginOk, seconds until every
    /// view was complete), `None` where the phase timed out.
    async fn storm(&mut self, target: &Target, timeout: Duration, what: &str) -> Storm {
        let addrs: Arc<[std::net::SocketAddr]> = target.addrs().into();
        let server0 = target.sample();
        let bench0 = Sample::take(None);
        let n = self.shared.pop.n;
        self.shared.logged_in.store(0, Ordering::Relaxed);
        self.shared.complete.store(0, Ordering::Relaxed);
        self.round += 1;
        let overflows0 = crate::procfs::listen_overflows();
        let t0 = Instant::now();
        let _ = self.go.send(Go {
            round: self.round,
            addrs,
        });
        let pb = bar(n as u64, &format!("{what}: logins"));
        let s = &self.shared;
        let logged = wait_for(|| s.logged_in.load(Ordering::Relaxed), n, timeout, &pb).await;
        let login_s = t0.elapsed().as_secs_f64();
        let cpu = match (server0, target.sample(), bench0, Sample::take(None)) {
            (Some(s0), Some(s1), Some(b0), Some(b1)) => {
                Some((s1.cpu_s - s0.cpu_s, b1.cpu_s - b0.cpu_s))
            }
            _ => None,
        };
        pb.set_message(format!("{what}: presence"));
        let left = timeout.saturating_sub(t0.elapsed());
        let complete = wait_for(|| s.complete.load(Ordering::Relaxed), n, left, &pb).await;
        let presence_s = t0.elapsed().as_secs_f64();
        pb.finish_and_clear();
        let mut login_us = s.take_login_us();
        Storm {
            logins: s.logged_in.load(Ordering::Relaxed),
            login_s: logged.then_some(login_s),
            presence_s: complete.then_some(presence_s),
            complete: s.complete.load(Ordering::Relaxed),
            latency: Summary::of(&mut login_us),
            samples: login_us,
            cpu,
            listen_overflows: crate::procfs::listen_overflows()
                .zip(overflows0)
                .map(|(b, a)| b.saturating_sub(a)),
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(15), all)
            .await
            .is_err()
        {
            self.tasks.abort_all();
        }
    }
}

/// A login storm's figures: `hold`'s and the departures', and `mosquitto-hold`'s (where a
/// login is CONNECT to SUBACK).
pub(crate) struct Storm {
    pub(crate) logins: usize,
    pub(crate) login_s: Option<f64>,
    pub(crate) presence_s: Option<f64>,
    pub(crate) complete: usize,
    pub(crate) latency: Option<Summary>,
    pub(crate) samples: Vec<u64>,
    /// Connections the kernel dropped meanwhile because an accept queue was full (each
    /// costs its client a 1 s SYN retransmission).
    pub(crate) listen_overflows: Option<u64>,
    /// Server and bench CPU seconds from the first connect to the last `LoginOk`.
    pub(crate) cpu: Option<(f64, f64)>,
}

impl Storm {
    pub(crate) fn report(&self, r: &mut Report, label: &str, key: &str, n: usize) {
        let rate = self.login_s.map(|s| n as f64 / s);
        r.row(
            format!("{label}: logins"),
            match (self.login_s, rate) {
                (Some(s), Some(rate)) => format!("{n} in {s:.3} s = {rate:.0} logins/s"),
                _ => format!("only {} of {n} logged in (timed out)", self.logins),
            },
        );
        r.row(
            format!("{label}: all presence known"),
            match self.presence_s {
                Some(s) => format!("{s:.3} s after the first connect"),
                None => format!("only {} of {n} views complete (timed out)", self.complete),
            },
        );
        if let Some(l) = &self.latency {
            r.row(
                format!("{label}: login latency"),
                format!("p50 {} p99 {} max {}", ms(l.p50), ms(l.p99), ms(l.max)),
            );
        }
        if let Some(o) = self.listen_overflows {
            r.row(format!("{label}: accept queue overflows"), o.to_string());
        }
        if let Some((server, bench)) = self.cpu {
            r.row(
                format!("{label}: CPU until last login"),
                format!(
                    "server {server:.2} s ({:.0} µs per login), bench {bench:.2} s",
                    server * 1e6 / self.logins.max(1) as f64
                ),
            );
        }
        r.field(
            key,
            json!({
                "clients": n,
                "logged_in": self.logins,
                "seconds_to_last_login": self.login_s.map(|s| round(s, 4)),
                "logins_per_s": rate.map(|x| round(x, 1)),
                "seconds_to_all_presence": self.presence_s.map(|s| round(s, 4)),
                "views_complete": self.complete,
                "login_latency": Summary::json(self.latency.as_ref()),
                "listen_overflows": self.listen_overflows,
                "server_cpu_s": self.cpu.map(|c| round(c.0, 3)),
                "server_cpu_us_per_login": self.cpu.map(|c| round(c.0 * 1e6 / self.logins.max(1) as f64, 1)),
                "bench_cpu_s": self.cpu.map(|c| round(c.1, 3)),
            }),
        );
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    #[arg(long, value_enum, default_value_t = Scope::Contacts)]
    pub scope: Scope,
    /// Contacts per user (scope contacts), on a ring: user i watches i+1 … i+contacts.
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    /// The idle window, with heartbeats only, over which server CPU is measured.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub idle: Duration,
    /// How long everyone idles after the login storm before the window opens. The default
    /// lets the storm's last work settle; one past the heartbeat timeout (e.g. 50s) puts the
    /// server's heartbeat deadlines inside the window, the state a long-running server is in.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Skip the reconnect storm (restart the server; everyone returns with a resume token).
    #[arg(long)]
    pub no_restart: bool,
    #[command(flatten)]
    pub common: Common,
}

/// What `hold` and `mosquitto-hold` sample around their idle window, reported under the same
/// labels and JSON keys for both servers, so one run's two lines compare row by row.
pub(crate) struct IdleWindow {
    /// The server before the first login, and just after the storm.
    pub base: Option<Sample>,
    pub after_storm: Option<Sample>,
    /// The server, then the bench itself, at the window's start and end.
    pub server: (Option<Sample>, Option<Sample>),
    pub bench: (Option<Sample>, Option<Sample>),
    pub online: usize,
    pub pings: usize,
    pub idle: Duration,
    /// How long after the storm the window opened.
    pub settle: Duration,
}

impl IdleWindow {
    /// `before`: what the base sample came before ("logins"); `pings_note`: appended to the
    /// pings row; `unmeasured`: why, when the server's /proc could not be read.
    pub(crate) fn report(&self, r: &mut Report, before: &str, pings_note: &str, unmeasured: &str) {
        let online = self.online.max(1);
        match (self.base, self.server.0, self.server.1) {
            (Some(base), Some(i0), Some(i1)) => {
                let per_conn = (i1.rss as f64 - base.rss as f64) / online as f64;
                let cpu = i1.cpu_s - i0.cpu_s;
                let per_ping = cpu * 1e6 / self.pings.max(1) as f64;
                r.both(
                    format!("server RSS before {before}"),
                    format!("{:.1} MiB", base.rss as f64 / 1048576.0),
                    "server_rss_base_bytes",
                    base.rss,
                )
                .both(
                    "server RSS, all idle",
                    format!("{:.1} MiB", i1.rss as f64 / 1048576.0),
                    "server_rss_idle_bytes",
                    i1.rss,
                )
                .both(
                    "server RSS per idle client",
                    format!("{:.2} kB ((idle - base) / {online})", per_conn / 1000.0),
                    "rss_per_client_bytes",
                    round(per_conn, 1),
                )
                .both(
                    format!(
                        "server CPU in {:?} idle ({:?} after the storm)",
                        self.idle, self.settle
                    ),
                    format!("{cpu:.3} s"),
                    "idle_server_cpu_s",
                    round(cpu, 4),
                )
                .both(
                    "pings in the idle window",
                    format!(
                        "{} ({per_ping:.1} µs of server CPU each){pings_note}",
                        self.pings
                    ),
                    "idle_pings",
                    self.pings,
                )
                .field("idle_server_cpu_us_per_ping", round(per_ping, 2))
                .field("idle_seconds", self.idle.as_secs_f64())
                .field("idle_settle_seconds", self.settle.as_secs_f64());
                if let Some(s) = self.after_storm {
                    r.field("server_rss_after_storm_bytes", s.rss);
                }
            }
            _ => {
                r.row("server CPU and RSS", format!("not measured ({unmeasured})"));
            }
        }
        if let (Some(b0), Some(b1)) = self.bench {
            r.both(
                "bench CPU in idle window",
                format!("{:.3} s", b1.cpu_s - b0.cpu_s),
                "idle_bench_cpu_s",
                round(b1.cpu_s - b0.cpu_s, 4),
            );
        }
    }
}

pub async fn hold(a: HoldArgs, fd_limit: u64) -> Result<Report, String> {
    let n = cap_clients(a.clients, fd_limit);
    let pop = Arc::new(Population {
        n,
        prefix: a.common.server.prefix.clone(),
        scope: a.scope,
        contacts: a.contacts,
    });
    let policy = Policy {
        scope: a.scope.flag(),
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_timeout: a.heartbeat_timeout,
        max_connections: n + 100,
    };
    let mut target = block(|| Target::new(&a.common.server, &policy))?;
    let mut r = Report::new("hold");
    common_fields(&mut r, &a.common.server, &target);
    r.both(
        "clients",
        format!("{n} (asked {})", a.clients),
        "clients",
        n,
    )
    .field("clients_asked", a.clients)
    .both(
        "scope",
        format!("{} ({} contacts each)", a.scope.flag(), pop.view_size()),
        "scope",
        a.scope.flag(),
    )
    .field("contacts", a.contacts);
    heartbeat_fields(&mut r, a.heartbeat_interval, a.heartbeat_timeout)
        .field("inflight", a.common.inflight);
    run_setup(target.addr, &pop, &mut r).await;
    if target.spawned() {
        // A fresh process, so the setup's allocations do not hide in the baseline.
        block(|| target.stop().and_then(|()| target.start()))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = target.sample();
    let bench0 = Sample::take(None);
    let mut crowd = Crowd::spawn(&pop, a.common.inflight, &[], Duration::ZERO, Leave::Silent);
    let first = crowd
        .storm(&target, a.common.phase_timeout, "password storm")
        .await;
    first.report(&mut r, "password storm", "password_storm", n);
    let after_storm = target.sample();

    // Idle: only heartbeats. Let the storm's last work settle first.
    timed(a.settle, "settling").await;
    let idle0 = target.sample();
    let bench_idle0 = Sample::take(None);
    let pings0 = crowd.shared.pings.load(Ordering::Relaxed);
    timed(a.idle, "idle window").await;
    let idle1 = target.sample();
    let bench_idle1 = Sample::take(None);
    let pings = crowd.shared.pings.load(Ordering::Relaxed) - pings0;
    let online = crowd.shared.logged_in.load(Ordering::Relaxed).max(1);
    IdleWindow {
        base,
        after_storm,
        server: (idle0, idle1),
        bench: (bench_idle0, bench_idle1),
        online,
        pings,
        idle: a.idle,
        settle: a.settle,
    }
    .report(&mut r, "logins", "", "no server pid");

    if target.spawned() && !a.no_restart {
        crowd.shared.ended.store(0, Ordering::Relaxed);
        block(|| target.stop())?;
        let pb = bar(n as u64, "server stopped");
        let s = crowd.shared.clone();
        wait_for(
            || s.ended.load(Ordering::Relaxed),
            online,
            Duration::from_secs(30),
            &pb,
        )
        .await;
        pb.finish_and_clear();
        block(|| target.start())?;
        let second = crowd
            .storm(&target, a.common.phase_timeout, "reconnect storm")
            .await;
        second.report(&mut r, "reconnect storm (token)", "reconnect_storm", n);
    } else {
        r.both(
            "reconnect storm",
            "not measured (needs a server the bench starts)",
            "reconnect_storm",
            Value::Null,
        );
    }
    if let (Some(b0), Some(b1)) = (bench0, Sample::take(None)) {
        r.both(
            "bench CPU, whole run after setup",
            format!("{:.2} s", b1.cpu_s - b0.cpu_s),
            "bench_cpu_s",
            round(b1.cpu_s - b0.cpu_s, 3),
        );
    }
    write_plot(
        &a.common.plot,
        &format!("hold: password login latency, {n} clients"),
        &first.samples,
        &[],
        &mut r,
    );
    let errors = crowd.shared.errors.count();
    let last = crowd.shared.errors.last();
    crowd.stop().await;
    finish(&mut r, target, errors, last);
    Ok(r)
}

#[derive(Debug, Clone, clap::Args)]
pub struct DetectArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Clients that go silent: stop sending and reading, socket kept open.
    #[arg(long, default_value_t = 100)]
    pub silent: usize,
    /// Silent client j goes quiet j × this after the first.
    #[arg(long, default_value_t = 10)]
    pub stagger_ms: u64,
    #[arg(long, value_enum, default_value_t = Scope::Contacts)]
    pub scope: Scope,
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AbruptArgs {
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Clients that close.
    #[arg(long, default_value_t = 100)]
    pub drop: usize,
    #[arg(long, value_enum, default_value_t = Close::Fin)]
    pub close: Close,
    /// Closing client j closes j × this after the first (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub stagger_ms: u64,
    #[arg(long, value_enum, default_value_t = Scope::Contacts)]
    pub scope: Scope,
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NodeKillArgs {
    /// Clients, spread round-robin over `--nodes` (at least 2).
    #[arg(long, default_value_t = 3000)]
    pub clients: usize,
    /// The node SIGKILLed (1-based): every client on it is a victim.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub kill: usize,
    /// Cut that node's bus link (its NATS connection runs through a relay the bench
    /// controls) instead of killing it: it must fence itself (`Bye{NodeFenced}` to its
    /// clients) and the others declare it dead; its users must end offline everywhere.
    #[arg(long)]
    pub cut: bool,
    #[arg(long, value_enum, default_value_t = Scope::Contacts)]
    pub scope: Scope,
    /// Contacts per user on the ring: user i's watchers sit on every node.
    #[arg(long, default_value_t = 20)]
    pub contacts: usize,
    /// After the last expected notice (or the deadline), the wait before ghosts are counted.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

/// What `detect`, `abrupt` and `node-kill` share: victims leave, watchers are timed, and
/// the watchers still showing a victim online afterwards are counted (ghosts).
struct Departure {
    name: &'static str,
    clients: usize,
    victims: usize,
    stagger: Duration,
    scope: Scope,
    contacts: usize,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    leave: Leave,
    /// With `Leave::NodeKilled` or `NodeCut`: the node (0-based) that goes, whose clients are
    /// the victims.
    kill: usize,
    settle: Duration,
    common: Common,
}

pub async fn detect(a: DetectArgs, fd_limit: u64) -> Result<Report, String> {
    departure(
        Departure {
            name: "detect",
            clients: a.clients,
            victims: a.silent,
            stagger: Duration::from_millis(a.stagger_ms),
            scope: a.scope,
            contacts: a.contacts,
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_timeout: a.heartbeat_timeout,
            leave: Leave::Silent,
            kill: 0,
            settle: Duration::from_millis(500),
            common: a.common,
        },
        fd_limit,
    )
    .await
}

pub async fn abrupt(a: AbruptArgs, fd_limit: u64) -> Result<Report, String> {
    departure(
        Departure {
            name: "abrupt",
            clients: a.clients,
            victims: a.drop,
            stagger: Duration::from_millis(a.stagger_ms),
            scope: a.scope,
            contacts: a.contacts,
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_timeout: a.heartbeat_timeout,
            leave: Leave::Close(a.close),
            kill: 0,
            settle: Duration::from_millis(500),
            common: a.common,
        },
        fd_limit,
    )
    .await
}

pub async fn node_kill(mut a: NodeKillArgs, fd_limit: u64) -> Result<Report, String> {
    let nodes = a.common.server.nodes;
    if nodes < 2 {
        return Err("node-kill needs a cluster: --nodes 2 or more".into());
    }
    if a.kill == 0 || a.kill > nodes {
        return Err(format!("--kill {}: the nodes are 1 to {nodes}", a.kill));
    }
    if a.cut {
        a.common.server.relayed_node = Some(a.kill - 1);
    }
    departure(
        Departure {
            name: if a.cut { "node-cut" } else { "node-kill" },
            clients: a.clients,
            victims: 0,
            stagger: Duration::ZERO,
            scope: a.scope,
            contacts: a.contacts,
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_timeout: a.heartbeat_timeout,
            leave: if a.cut {
                Leave::NodeCut
            } else {
                Leave::NodeKilled
            },
            kill: a.kill - 1,
            settle: a.settle,
            common: a.common,
        },
        fd_limit,
    )
    .await
}

async fn departure(d: Departure, fd_limit: u64) -> Result<Report, String> {
    let n = cap_clients(d.clients, fd_limit);
    let pop = Arc::new(Population {
        n,
        prefix: d.common.server.prefix.clone(),
        scope: d.scope,
        contacts: d.contacts,
    });
    let victims = match d.leave {
        Leave::NodeKilled | Leave::NodeCut => {
            let nodes = d.common.server.nodes.max(1);
            (0..n).filter(|i| i % nodes == d.kill).collect()
        }
        _ => pop.spread(d.victims),
    };
    let policy = Policy {
        scope: d.scope.flag(),
        heartbeat_interval: d.heartbeat_interval,
        heartbeat_timeout: d.heartbeat_timeout,
        max_connections: n + 100,
    };
    let mut target = block(|| Target::new(&d.common.server, &policy))?;
    let mut r = Report::new(d.name);
    common_fields(&mut r, &d.common.server, &target);
    let how = match d.leave {
        Leave::Silent => "silent (no writes, no reads, socket open)".to_owned(),
        Leave::Close(Close::Fin) => "close with FIN".to_owned(),
        Leave::Close(Close::Rst) => "close with RST (SO_LINGER 0)".to_owned(),
        Leave::NodeKilled => format!("their node {} SIGKILLed", d.kill + 1),
        Leave::NodeCut => format!("their node {}'s bus link cut", d.kill + 1),
    };
    r.both("clients", n.to_string(), "clients", n)
        .both(
            "leaving",
            format!(
                "{} clients, {how}, {} ms apart",
                victims.len(),
                d.stagger.as_millis()
            ),
            "leaving",
            victims.len(),
        )
        .field(
            "how",
            match d.leave {
                Leave::Silent => "silent",
                Leave::Close(Close::Fin) => "fin",
                Leave::Close(Close::Rst) => "rst",
                Leave::NodeKilled => "node-kill",
                Leave::NodeCut => "node-cut",
            },
        )
        .field("stagger_ms", d.stagger.as_millis() as u64)
        .both(
            "scope",
            format!(
                "{} ({} watchers each)",
                d.scope.flag(),
                pop.watchers_of(0).len()
            ),
            "scope",
            d.scope.flag(),
        );
    heartbeat_fields(&mut r, d.heartbeat_interval, d.heartbeat_timeout);
    run_setup(target.addr, &pop, &mut r).await;
    let mut crowd = Crowd::spawn(&pop, d.common.inflight, &victims, d.stagger, d.leave);
    let storm = crowd.storm(&target, d.common.phase_timeout, "logins").await;
    storm.report(&mut r, "login storm", "login_storm", n);

    // Expected notifications: every watcher of a victim that is not itself a victim.
    let is_victim: std::collections::HashSet<usize> = victims.iter().copied().collect();
    let expected: Vec<usize> = victims
        .iter()
        .map(|&v| {
            pop.watchers_of(v)
                .into_iter()
                .filter(|w| !is_victim.contains(w))
                .count()
        })
        .collect();
    let total_expected: usize = expected.iter().sum();
    crowd.shared.recording.store(true, Ordering::Relaxed);
    let strike = Instant::now() + Duration::from_millis(300);
    let threads = |target: &Target| target.pid().and_then(|pid| procfs::thread_cpu_ns(pid).ok());
    let cpu0 = threads(&target);
    let own0 = procfs::thread_cpu_ns(std::process::id()).ok();
    if d.leave.node_goes() {
        tokio::time::sleep_until(strike).await;
        let at = if d.leave == Leave::NodeCut {
            target.cut_node(d.kill)?
        } else {
            block(|| target.kill_node(d.kill))?
        };
        crowd
            .shared
            .left_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fill(Some(at));
    } else {
        let _ = crowd.strike.send(Some(strike));
    }
    // What the offline notices are measured against: the timeout that detects the leaving.
    let deadline = match d.leave {
        Leave::Silent => Some(d.heartbeat_timeout),
        Leave::NodeKilled | Leave::NodeCut => Some(d.common.server.node_timeout),
        Leave::Close(_) => None,
    };
    let wait = match deadline {
        Some(t) => t + Duration::from_secs(5),
        None => Duration::from_secs(10),
    } + d.stagger * victims.len() as u32
        + Duration::from_millis(300);
    let pb = bar(total_expected as u64, "offline notices");
    let s = crowd.shared.clone();
    wait_for(
        || s.offline_seen.lock().map(|v| v.len()).unwrap_or(0),
        total_expected,
        wait,
        &pb,
    )
    .await;
    pb.finish_and_clear();
    let cpu1 = threads(&target);
    let own1 = procfs::thread_cpu_ns(std::process::id()).ok();
    // A notice that arrives late still counts, if it arrives while we look.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = std::mem::take(
        &mut *crowd
            .shared
            .offline_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let left_at = crowd
        .shared
        .left_at
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut first = vec![None::<Instant>; victims.len()];
    let mut last = vec![None::<Instant>; victims.len()];
    let mut got = vec![0usize; victims.len()];
    let mut pairs_us = Vec::new();
    for &(slot, at) in &seen {
        got[slot] += 1;
        first[slot] = Some(first[slot].map_or(at, |f: Instant| f.min(at)));
        last[slot] = Some(last[slot].map_or(at, |l: Instant| l.max(at)));
        if let Some(left) = left_at[slot] {
            pairs_us.push(at.saturating_duration_since(left).as_micros() as u64);
        }
    }
    let mut all_us = Vec::new();
    let mut first_us = Vec::new();
    let mut missed = 0usize;
    for j in 0..victims.len() {
        missed += expected[j].saturating_sub(got[j]);
        if let (Some(left), Some(l), Some(f)) = (left_at[j], last[j], first[j])
            && got[j] >= expected[j]
        {
            all_us.push(l.saturating_duration_since(left).as_micros() as u64);
            first_us.push(f.saturating_duration_since(left).as_micros() as u64);
        }
    }
    let left_count = left_at.iter().filter(|x| x.is_some()).count();
    let samples = all_us.clone();
    let all = Summary::of(&mut all_us);
    let first_s = Summary::of(&mut first_us);
    let pairs = Summary::of(&mut pairs_us);
    let base = match d.leave {
        Leave::Silent => "last frame",
        Leave::Close(_) => "close",
        Leave::NodeKilled => "SIGKILL",
        Leave::NodeCut => "the cut",
    };
    r.both(
        "victims that left",
        left_count.to_string(),
        "left",
        left_count,
    )
    .both(
        "notices seen / expected",
        format!("{} / {total_expected} (missed {missed})", seen.len()),
        "notices_seen",
        seen.len(),
    )
    .field("notices_expected", total_expected)
    .field("notices_missed", missed);
    if let Some(s) = &all {
        r.row(
            format!("{base} → all watchers told"),
            format!(
                "p50 {} p99 {} max {} (n={})",
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                s.count
            ),
        );
    } else {
        r.row(
            format!("{base} → all watchers told"),
            "no complete victim".to_string(),
        );
    }
    if let Some(s) = &first_s {
        r.row(
            format!("{base} → first watcher told"),
            format!("p50 {} p99 {} max {}", ms(s.p50), ms(s.p99), ms(s.max)),
        );
    }
    if let Some(s) = &pairs {
        r.row(
            format!("{base} → each watcher told"),
            format!(
                "p50 {} p99 {} p99.9 {} max {}",
                ms(s.p50),
                ms(s.p99),
                ms(s.p999),
                ms(s.max)
            ),
        );
    }
    r.field("latency_all_watchers", Summary::json(all.as_ref()))
        .field("latency_first_watcher", Summary::json(first_s.as_ref()))
        .field("latency_each_watcher", Summary::json(pairs.as_ref()));
    let mut marks = Vec::new();
    if let Some(deadline) = deadline {
        let timeout_us = deadline.as_micros() as u64;
        let over = |s: &Summary| {
            json!({
                "p50_us": s.p50 as i64 - timeout_us as i64,
                "p99_us": s.p99 as i64 - timeout_us as i64,
                "max_us": s.max as i64 - timeout_us as i64,
            })
        };
        if let Some(s) = &all {
            r.row(
                "overshoot beyond timeout",
                format!(
                    "p50 {:+.3} ms p99 {:+.3} ms max {:+.3} ms",
                    (s.p50 as f64 - timeout_us as f64) / 1000.0,
                    (s.p99 as f64 - timeout_us as f64) / 1000.0,
                    (s.max as f64 - timeout_us as f64) / 1000.0
                ),
            );
            r.field("overshoot", over(s));
        }
        if d.leave.node_goes() {
            // Issue 12's goal: every watcher told within the node timeout + 100 ms.
            let goal_us = timeout_us + 100_000;
            let met = pairs.as_ref().is_some_and(|s| s.p99 <= goal_us) && missed == 0;
            r.both(
                "goal: each watcher p99 ≤ node timeout + 100 ms",
                format!(
                    "{} ({} ms)",
                    if met { "met" } else { "missed" },
                    goal_us / 1000
                ),
                "goal_p99_met",
                met,
            );
        }
        marks.push(Mark {
            label: "timeout".into(),
            us: timeout_us,
        });
    }
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let ns = procfs::cpu_ns_between(&c0, &c1);
        r.both(
            "server CPU while they left",
            format!("{:.2} ms", ns as f64 / 1e6),
            "server_cpu_s",
            round(ns as f64 / 1e9, 6),
        );
        // Closes are over in milliseconds; a silent leave spans the heartbeat timeout, whose
        // CPU is mostly everyone's heartbeats, so a share per leaver would mean nothing there.
        if let Leave::Close(_) = d.leave {
            let per_leaver = ns as f64 / 1000.0 / victims.len().max(1) as f64;
            r.both(
                "server CPU per leaving client",
                format!("{per_leaver:.0} µs"),
                "server_cpu_us_per_leaver",
                round(per_leaver, 1),
            );
        }
    }
    if let (Some(c0), Some(c1)) = (own0, own1) {
        let ns = procfs::cpu_ns_between(&c0, &c1);
        r.both(
            "bench CPU while they left",
            format!("{:.2} ms", ns as f64 / 1e6),
            "bench_cpu_s",
            round(ns as f64 / 1e9, 6),
        );
    }
    write_plot(
        &d.common.plot,
        &format!("{}: {base} to all watchers told", d.name),
        &samples,
        &marks,
        &mut r,
    );
    // Ghosts: after the settle, a watcher's view showing a victim online although it has no
    // session anywhere.
    tokio::time::sleep(d.settle).await;
    let watchers = n - victims.len();
    let (ghosts, answered) = crowd.census(watchers).await;
    r.both(
        format!("ghosts {:?} later", d.settle),
        format!("{ghosts} (watcher, victim) pairs shown online; {answered} of {watchers} watchers counted"),
        "ghosts",
        ghosts,
    )
    .field("ghost_census_answers", answered)
    .field("settle_ms", d.settle.as_millis() as u64)
    .both(
        "false offline notices",
        crowd.shared.false_offline.load(Ordering::Relaxed).to_string(),
        "false_offline",
        crowd.shared.false_offline.load(Ordering::Relaxed),
    );
    let errors = crowd.shared.errors.count();
    let last_err = crowd.shared.errors.last();
    crowd.stop().await;
    finish(&mut r, target, errors, last_err);
    Ok(r)
}

/// `--rate`: messages per second over all senders, or `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Max,
    PerSecond(f64),
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match s.replace('_', "").parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(Rate::PerSecond(r)),
        _ => Err(format!(
            "`{s}` is not a positive number of messages per second or `max`"
        )),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// Pairs of users writing to each other (each of the 2 × pairs clients sends).
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
    /// Messages per second over all senders, or `max` (each sender keeps `--window`
    /// messages unconfirmed).
    #[arg(long, default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Sending before the measured window starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Unconfirmed messages per sender with `--rate max`.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Watch for moments the whole machine stops running (a real-time thread waking every
    /// 0.5 ms; `bench::stalls`) and report them beside the latency of the messages none of
    /// them delayed
    #[arg(long)]
    pub stall_probe: bool,
    #[command(flatten)]
    pub common: Common,
}

pub async fn chat(a: ChatArgs, fd_limit: u64) -> Result<Report, String> {
    let n = cap_clients(a.pairs * 2, fd_limit) / 2 * 2;
    let pairs = n / 2;
    let pop = Arc::new(Population {
        n,
        prefix: a.common.server.prefix.clone(),
        scope: Scope::Contacts,
        contacts: 0,
    });
    let policy = Policy {
        scope: "contacts",
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_timeout: a.heartbeat_timeout,
        max_connections: n + 100,
    };
    let target = block(|| Target::new(&a.common.server, &policy))?;
    let mut r = Report::new("chat");
    common_fields(&mut r, &a.common.server, &target);
    // Client i and its peer i ^ 1 are neighbours, so with round-robin over 2 or more nodes
    // every pair spans two nodes.
    r.both(
        "pairs",
        if target.node_count() > 1 {
            format!("{pairs} ({n} clients, each sends to its peer on another node)")
        } else {
            format!("{pairs} ({n} clients, each sends to its peer)")
        },
        "pairs",
        pairs,
    )
    .both(
        "rate",
        match a.rate {
            Rate::Max => format!("max (window {} per sender)", a.window),
            Rate::PerSecond(x) => format!("{x:.0} msg/s in all"),
        },
        "rate",
        match a.rate {
            Rate::Max => Value::from("max"),
            Rate::PerSecond(x) => Value::from(x),
        },
    )
    .both(
        "measured window",
        format!("{:?} after {:?} warm-up", a.duration, a.warmup),
        "duration_s",
        a.duration.as_secs_f64(),
    )
    .field("warmup_s", a.warmup.as_secs_f64())
    .field("window", a.window);
    run_setup(target.addr, &pop, &mut r).await;

    // Log everyone in first.
    let indices: Vec<usize> = (0..n).collect();
    let (sessions, login_errors) = login_all(&target, &pop, &indices, a.common.inflight).await;

    let shared = Arc::new(ChatShared::starting(a.warmup, a.duration));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut paced = pace(n, a.rate, &shared)?;
    let mut tasks = JoinSet::new();
    for (i, s) in sessions.into_iter().enumerate() {
        // Taken for every client, logged in or not, so each keeps its own schedule.
        let times = paced.as_mut().and_then(|(_, times)| times.next());
        let Some(s) = s else { continue };
        let to = To::Peer(pop.user(i ^ 1));
        let pace = match times {
            Some(times) => Pace::Rate(times),
            None => Pace::Max {
                window: a.window.max(1),
            },
        };
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        tasks.spawn(async move { chat::client(s, to, pace, &shared, stop).await });
    }
    let probe = a.stall_probe.then(StallProbe::start);
    let window = run_window(&target, &shared, "chatting (s)").await;
    drain(&shared, 1).await;
    let stalls = probe.map(StallProbe::stop);
    stop_all(&mut tasks, &stop_tx).await;
    // It stopped at the end of the window, long before the drain ended.
    if let Some((thread, _)) = paced
        && thread.join().is_err()
    {
        return Err("the pacing thread panicked".to_owned());
    }
    r.field("login_errors", login_errors.len());
    let samples = report_deliveries(
        &mut r,
        &shared,
        a.duration,
        1,
        "send → Deliver",
        stalls.as_ref(),
    );
    report_cpu(&mut r, &target, &window, &shared, a.duration, false);
    write_plot(
        &a.common.plot,
        &format!("chat: send to Deliver, {pairs} pairs"),
        &samples,
        &[],
        &mut r,
    );
    finish(&mut r, target, shared.errors.count(), shared.errors.last());
    Ok(r)
}

/// The heartbeat settings the server ran with, as a table row and two JSON fields.
pub(crate) fn heartbeat_fields(
    r: &mut Report,
    interval: Duration,
    timeout: Duration,
) -> &mut Report {
    r.both(
        "heartbeat",
        format!("interval {interval:?}, timeout {timeout:?}"),
        "heartbeat_interval_ms",
        interval.as_millis() as u64,
    )
    .field("heartbeat_timeout_ms", timeout.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("10_000"), Ok(Rate::PerSecond(10_000.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn clients_are_capped_by_the_file_limit() {
        assert_eq!(cap_clients(1000, 20_000), 1000);
        assert_eq!(cap_clients(25_000, 20_000), 19_900);
    }
}
