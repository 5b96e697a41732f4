//! Support for the abuse and TLS tests: an in-process server, a raw protocol peer that can
//! misbehave, a pair of well-behaved bystanders whose message round trip is timed, the
//! process's resident memory, and captured log lines.

#![allow(dead_code)]

use breeze_core::UserId;
use breeze_core::codec::{decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, Credential, MAGIC, PROTOCOL_VERSION, ServerMsg, Status};
use breeze_server::{DbLocation, Running, Settings};
use breeze_store::Synchronous;
use bytes::BytesMut;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// Bound on every wait; reaching it fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A bystander's message round trip must stay under this, abuse or not.
pub const NORMAL_LATENCY: Duration = Duration::from_millis(500);

pub const PASSWORD: &str = "correct horse";

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// A server in-process over a database in a temporary directory: cheap hashing, no fsync
/// per commit (latency here should measure the server, not the disk), a 1 s heartbeat
/// interval and 10 s timeout, adjusted by `tweak`.
pub async fn start(tweak: impl FnOnce(&mut Settings)) -> (Running, tempfile::TempDir) {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut s = Settings::for_tests(DbLocation::File(dir.path().join("breeze.db")));
    s.db_options.synchronous = Synchronous::Normal;
    s.server.heartbeat_interval = Duration::from_secs(1);
    s.server.heartbeat_timeout = Duration::from_secs(10);
    s.host.linger = Duration::from_millis(200);
    s.host.shutdown_grace = Duration::from_secs(1);
    tweak(&mut s);
    let running = breeze_server::start(s).await.unwrap();
    (running, dir)
}

pub async fn stop(server: Running) {
    timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time");
}

/// A raw protocol peer on a plain socket.
pub struct Peer {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Peer {
    /// Connects without saying anything.
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Peer::from(stream)
    }

    /// Connects from a chosen local address (any 127.0.0.0/8 address works on loopback).
    pub async fn connect_from(local: IpAddr, addr: SocketAddr) -> Peer {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(local, 0)).unwrap();
        let stream = timeout(WAIT, socket.connect(addr)).await.unwrap().unwrap();
        stream.set_nodelay(true).unwrap();
        Peer::from(stream)
    }

    pub fn from(stream: TcpStream) -> Peer {
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and completes the handshake.
    pub async fn hello(addr: SocketAddr) -> Peer {
        let mut peer = Peer::connect(addr).await;
        peer.say_hello().await;
        peer
    }

    pub async fn say_hello(&mut self) {
        self.send(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "abuse-test".into(),
        })
        .await;
        let welcome = self.recv().await;
        assert!(
            matches!(welcome, Some(ServerMsg::Welcome { .. })),
            "{welcome:?}"
        );
    }

    pub async fn send(&mut self, msg: &ClientMsg) {
        self.stream.write_all(&encode_frame(msg)).await.unwrap();
    }

    /// Writes bytes, ignoring a failure (the server may have cut us already).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next message, `None` once the server closed (or reset) the connection.
    pub async fn recv(&mut self) -> Option<ServerMsg> {
        timeout(WAIT, self.recv_unbounded())
            .await
            .expect("no frame and no close within the wait bound")
    }

    async fn recv_unbounded(&mut self) -> Option<ServerMsg> {
        loop {
            if let Some(payload) = split_frame(&mut self.buf, 64 << 20).unwrap() {
                return Some(decode(&payload).unwrap());
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Skips messages until one matches.
    pub async fn recv_until(&mut self, what: &str, f: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        let found = timeout(WAIT, async {
            loop {
                match self.recv_unbounded().await {
                    Some(msg) if f(&msg) => return msg,
                    Some(_) => {}
                    None => panic!("closed while waiting for {what}"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"))
    }

    /// Reads until the close; the last message before it.
    pub async fn last_before_close(&mut self) -> Option<ServerMsg> {
        let mut last = None;
        while let Some(msg) = self.recv().await {
            last = Some(msg);
        }
        last
    }

    pub async fn register(&mut self, name: &str) {
        self.send(&ClientMsg::Register {
            user: user(name),
            password: PASSWORD.into(),
        })
        .await;
        let got = self
            .recv_until("registered", |m| {
                matches!(m, ServerMsg::Registered { .. } | ServerMsg::Error { .. })
            })
            .await;
        assert_eq!(got, ServerMsg::Registered { user: user(name) });
    }

    /// Sends a password login and returns the answer: `LoginOk` or an `Error`.
    pub async fn try_login(&mut self, name: &str, password: &str) -> ServerMsg {
        self.send(&ClientMsg::Login {
            user: user(name),
            credential: Credential::Password(password.into()),
            status: Status::Online,
        })
        .await;
        self.recv_until("login answer", |m| {
            matches!(m, ServerMsg::LoginOk { .. } | ServerMsg::Error { .. })
        })
        .await
    }

    /// Logs in and waits for the presence snapshot.
    pub async fn login(&mut self, name: &str) {
        let ok = self.try_login(name, PASSWORD).await;
        assert!(matches!(ok, ServerMsg::LoginOk { .. }), "{ok:?}");
        self.recv_until("snapshot", |m| {
            matches!(m, ServerMsg::PresenceSnapshot { .. })
        })
        .await;
    }

    /// Connects, registers `name` and logs in.
    pub async fn user(addr: SocketAddr, name: &str) -> Peer {
        let mut peer = Peer::hello(addr).await;
        peer.register(name).await;
        peer.login(name).await;
        peer
    }

    pub async fn ping(&mut self, nonce: u64) {
        self.send(&ClientMsg::Ping { nonce }).await;
        self.recv_until("pong", |m| *m == ServerMsg::Pong { nonce })
            .await;
    }
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
        self.a
            .recv_until(
                "sent",
                |m| matches!(m, ServerMsg::Sent { id: i, .. } if *i == id),
            )
            .await;
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
