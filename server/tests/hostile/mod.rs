//! Support for the abuse tests: the server they run against, a pair of well-behaved
//! bystanders whose message round trip is timed, the process's resident memory, and captured
//! log lines. The raw peer is `breeze_testsupport::Peer`.

#![allow(dead_code)]

use breeze_core::message::{ClientMsg, ServerMsg};
use breeze_server::{Running, Settings};
use breeze_store::Synchronous;
use breeze_testsupport::{InProcess, Peer, WAIT, user};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// A bystander's message round trip must stay under this, abuse or not.
pub const NORMAL_LATENCY: Duration = Duration::from_millis(500);

/// A server in-process (`InProcess`): no fsync per commit (latency here should measure the
/// server, not the disk), a 1 s heartbeat interval and 10 s timeout, adjusted by `tweak`.
pub async fn start(tweak: impl FnOnce(&mut Settings)) -> (Running, tempfile::TempDir) {
    capture_logs();
    InProcess::start(|s| {
        s.db_options.synchronous = Synchronous::Normal;
        s.server.heartbeat_interval = Duration::from_secs(1);
        s.server.heartbeat_timeout = Duration::from_secs(10);
        tweak(s);
    })
    .await
    .into_parts()
}

pub async fn stop(server: Running) {
    timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time");
}

/// Two logged-in users chatting; `a` sends to `b`, `b` acks.
pub struct Bystanders {
    a: Peer,
    b: Peer,
    b_name: String,
    next_id: u64,
}

impl Bystanders {
    pub async fn new(addr: SocketAddr, tag: &str) -> Bystanders {
        let a = Peer::user(addr, &format!("{tag}-a")).await;
        let b_name = format!("{tag}-b");
        let b = Peer::user(addr, &b_name).await;
        Bystanders {
            a,
            b,
            b_name,
            next_id: 1,
        }
    }

    /// Sends one message from `a` and waits until `b` has it: the time from the write to the
    /// `Deliver`. Then `b` acks it and `a` collects its `Sent`.
    pub async fn round_trip(&mut self) -> Duration {
        let id = self.next_id;
        self.next_id += 1;
        let started = Instant::now();
        self.a
            .send(&ClientMsg::Send {
                id,
                to: user(&self.b_name),
                body: format!("bystander message {id}"),
                attachment: None,
            })
            .await;
        let ServerMsg::Deliver(d) = self
            .b
            .recv_until(
                "the bystander's message",
                |m| matches!(m, ServerMsg::Deliver(d) if d.id == id),
            )
            .await
        else {
            unreachable!()
        };
        let took = started.elapsed();
        self.b.send(&ClientMsg::Ack { seqs: vec![d.seq] }).await;
        self.a.sent(id).await;
        took
    }

    /// `n` round trips one after the other.
    pub async fn baseline(&mut self, n: usize) -> Latencies {
        let mut all = Vec::with_capacity(n);
        for _ in 0..n {
            all.push(self.round_trip().await);
        }
        Latencies(all)
    }

    /// Keeps making round trips (every 20 ms) until the probe is stopped. The traffic also
    /// keeps both bystanders alive for the heartbeat.
    pub fn probe(mut self) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut all = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                all.push(self.round_trip().await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (self, Latencies(all))
        });
        Probe { stop, task }
    }
}

pub struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(Bystanders, Latencies)>,
}

impl Probe {
    pub async fn finish(self) -> (Bystanders, Latencies) {
        self.stop.store(true, Ordering::Relaxed);
        timeout(WAIT, self.task)
            .await
            .expect("the bystanders kept chatting")
            .expect("the probe task")
    }
}

#[derive(Debug, Clone)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }

    pub fn median(&self) -> Duration {
        let v = self.sorted();
        v[v.len() / 2]
    }

    pub fn max(&self) -> Duration {
        self.sorted().last().copied().unwrap_or_default()
    }
}

/// Prints the figures and checks that the bystanders went on chatting, at normal latency.
pub fn assert_unaffected(case: &str, before: &Latencies, during: &Latencies, min_during: usize) {
    println!(
        "{case}: bystander round trip before: median {:?}, max {:?} ({} messages); \
         during the abuse: median {:?}, max {:?} ({} messages)",
        before.median(),
        before.max(),
        before.0.len(),
        during.median(),
        during.max(),
        during.0.len()
    );
    assert!(
        during.0.len() >= min_during,
        "{case}: only {} bystander messages got through during the abuse",
        during.0.len()
    );
    assert!(
        during.max() < NORMAL_LATENCY,
        "{case}: a bystander message took {:?}",
        during.max()
    );
}

/// This process's resident set, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Everything logged at info and above in this test process, for the tests that check a
/// warning was written.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once for the whole test binary.
pub fn capture_logs() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let buffer = log_buffer().clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Capture(buffer.clone()))
            .try_init();
    });
}

/// The captured log lines containing every one of `needles`.
pub fn log_lines(needles: &[&str]) -> Vec<String> {
    let logs = log_buffer().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(str::to_owned)
        .collect()
}
