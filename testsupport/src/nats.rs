//! NATS for one test: the server named by `BREEZE_TEST_NATS`, a cluster name of its own (so
//! that tests running at once, sharing that server, never hear each other's nodes), and a
//! TCP relay the test can cut and heal between a node and NATS.

use crate::pg::services_required;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Where the tests' NATS is, unless `BREEZE_TEST_NATS` says otherwise.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// A NATS server that answered, and a cluster name no other test uses.
#[derive(Debug, Clone)]
pub struct TestNats {
    url: String,
    addr: SocketAddr,
    cluster: String,
}

impl TestNats {
    /// NATS, or `None` (after a skip line naming `test`) when it cannot be reached.
    ///
    /// # Panics
    /// When NATS cannot be reached and `BREEZE_REQUIRE_SERVICES=1`.
    pub fn reach(test: &str) -> Option<TestNats> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let url = std::env::var("BREEZE_TEST_NATS").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        match greet(&url) {
            Ok(addr) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let cluster = format!(
                    "test_{}_{}_{nanos}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                Some(TestNats { url, addr, cluster })
            }
            Err(e) if services_required() => {
                panic!("{test}: NATS at {url} is required (BREEZE_REQUIRE_SERVICES=1): {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIP {test}: NATS at {url} is unreachable ({e}); set BREEZE_TEST_NATS, \
                     or BREEZE_REQUIRE_SERVICES=1 to fail instead"
                );
                None
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's address (for a relay in front of it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster name of this test (`--cluster-name`).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

/// Connects to the NATS server at `url` and reads its greeting (`INFO {…}`): something
/// listening there is not enough.
fn greet(url: &str) -> Result<SocketAddr, String> {
    let hostport = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport} resolves to no address"))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("cannot connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("no greeting: {e}"))?;
    if line.starts_with("INFO ") {
        Ok(addr)
    } else {
        Err(format!("not a NATS greeting: {:?}", line.trim_end()))
    }
}

/// A loopback TCP relay to `upstream` that the test can cut — every relayed connection
/// falls silent in both directions, as in a network partition, and new ones are closed at
/// once — and heal. Stops with the runtime (or when dropped). A node's link to NATS, or to
/// PostgreSQL (`addr`).
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    cut: Arc<Cut>,
    /// Woken at a heal: silenced connections are closed then, so the client reconnects
    /// through the healed relay rather than stay on a dead one.
    healed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(Cut::default());
        let healed = Arc::new(Notify::new());
        let task = tokio::spawn(accept(listener, upstream, cut.clone(), healed.clone()));
        Relay {
            addr,
            cut,
            healed,
            task,
        }
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://` at the relay.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// From now on nothing passes either way.
    pub fn cut(&self) {
        self.cut.cuts.fetch_add(1, Ordering::SeqCst);
        self.cut.now.store(true, Ordering::SeqCst);
    }

    /// Connections made from now on pass again.
    pub fn heal(&self) {
        self.cut.now.store(false, Ordering::SeqCst);
        self.healed.notify_waiters();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the relay is cut now, and how many cuts there were.
#[derive(Debug, Default)]
struct Cut {
    now: AtomicBool,
    cuts: AtomicU64,
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cut: Arc<Cut>, healed: Arc<Notify>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if cut.now.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let started = cut.cuts.load(Ordering::SeqCst);
        let (cut, healed) = (cut.clone(), healed.clone());
        conns.spawn(async move {
            let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let relayed = async {
                tokio::join!(pipe(cr, sw, &cut.now), pipe(sr, cw, &cut.now));
            };
            tokio::select! {
                () = relayed => {}
                () = closed_at_heal(started, &cut.cuts, &healed) => {}
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

/// Resolves at the first heal after a cut that the connection made before `started` cuts
/// lived through.
async fn closed_at_heal(started: u64, cuts: &AtomicU64, healed: &Notify) {
    loop {
        healed.notified().await;
        if cuts.load(Ordering::SeqCst) != started {
            return;
        }
    }
}

/// Copies `from` to `to` while the relay is not cut; once it is, reads nothing more (and so
/// writes nothing), holding the connection open and silent.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // Swallowed, as a partition would; and nothing more is read.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
