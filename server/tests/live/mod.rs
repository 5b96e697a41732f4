//! Acceptance-test support: the server's timings for these tests, and `Live`, a raw protocol
//! client that keeps its connection alive on its own.
//!
//! `Live` owns its socket through two tasks: a reader that stamps every frame with its
//! arrival time (so latencies are measured when bytes arrive, not when the test gets round to
//! looking), and a writer that sends what the test asks for plus a `Ping` every half
//! heartbeat interval, as a real client must. `go_silent` stops those pings while keeping the
//! socket open (a peer behind a partition); dropping a `Live` closes its socket at once (a
//! killed client).

use breeze_core::UserId;
use breeze_core::codec::encode_frame;
use breeze_core::message::{
    ClientMsg, CloseReason, Credential, ErrorCode, Presence, PresenceEntry, RequestKind, ServerMsg,
    Status,
};
use breeze_server::Settings;
use breeze_testsupport::{InProcess, Peer, WAIT, take_msg, user};
use bytes::{Bytes, BytesMut};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, timeout};

/// Keep-alive pings carry nonces with this bit set; their pongs never reach the test.
const KEEPALIVE_NONCE: u64 = 1 << 63;

/// Fails the test, instead of hanging it, when `f` takes longer than `limit`.
pub async fn bounded<F: Future>(limit: Duration, f: F) -> F::Output {
    match timeout(limit, f).await {
        Ok(out) => out,
        Err(_) => panic!("the test did not finish within {limit:?}"),
    }
}

/// The password every acceptance-test user registers with.
pub fn password(name: &str) -> String {
    format!("{name}-password")
}

/// `name`'s entry in a presence snapshot.
pub fn presence_in(entries: &[PresenceEntry], name: &str) -> Option<Presence> {
    entries
        .iter()
        .find(|e| e.user.as_str() == name)
        .map(|e| e.presence)
}

/// Whether `msg` is a `PresenceDiff` that says `name` is now `presence`.
pub fn says(msg: &ServerMsg, name: &str, presence: Presence) -> bool {
    matches!(msg, ServerMsg::PresenceDiff { entries } if presence_in(entries, name) == Some(presence))
}

/// Every presence the diffs among `msgs` announced for `name`, in order.
pub fn announced(msgs: &[ServerMsg], name: &str) -> Vec<Presence> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::PresenceDiff { entries } => presence_in(entries, name),
            _ => None,
        })
        .collect()
}

/// A whole server in-process (`InProcess`) with the timings these tests assume: a 100 ms
/// heartbeat interval, a 1 s heartbeat timeout (tests that measure the timeout shorten it)
/// and a 500 ms handshake deadline; then `tweak`.
pub async fn start_server(tweak: impl FnOnce(&mut Settings)) -> InProcess {
    InProcess::start(|s| {
        s.server.heartbeat_interval = Duration::from_millis(100);
        s.server.heartbeat_timeout = Duration::from_secs(1);
        s.server.handshake_timeout = Duration::from_millis(500);
        tweak(s);
    })
    .await
}

#[derive(Debug)]
enum Inbound {
    Msg(Instant, ServerMsg),
    Closed,
    Garbled(String),
}

/// What a successful login returned.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub status: Status,
    pub resume_token: Vec<u8>,
    pub contacts: Vec<UserId>,
    pub snapshot: Vec<PresenceEntry>,
}

/// A handshaken connection that keeps itself alive. See the module documentation.
pub struct Live {
    pub welcome: ServerMsg,
    out: mpsc::UnboundedSender<Bytes>,
    inbox: mpsc::UnboundedReceiver<Inbound>,
    closed: bool,
    keepalive: Arc<AtomicBool>,
    last_sent: Arc<Mutex<Instant>>,
    next_nonce: u64,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Live {
    fn drop(&mut self) {
        // Both halves go with their tasks: the socket closes, as when a client is killed.
        self.reader.abort();
        self.writer.abort();
    }
}

impl Live {
    /// Connects and completes the handshake.
    pub async fn connect(addr: SocketAddr) -> Live {
        let mut peer = Peer::connect(addr).await;
        let sent = Instant::now();
        let welcome = peer.say_hello().await;
        let (stream, buf) = peer.into_parts();
        let ServerMsg::Welcome {
            heartbeat_interval_ms,
            ..
        } = welcome
        else {
            panic!("expected Welcome, got {welcome:?}");
        };
        let (rd, wr) = stream.into_split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let keepalive = Arc::new(AtomicBool::new(true));
        let last_sent = Arc::new(Mutex::new(sent));
        let every = Duration::from_millis(u64::from(heartbeat_interval_ms) / 2)
            .max(Duration::from_millis(1));
        let reader = tokio::spawn(read_loop(rd, buf, in_tx));
        let writer = tokio::spawn(write_loop(
            wr,
            out_rx,
            every,
            keepalive.clone(),
            last_sent.clone(),
        ));
        Live {
            welcome,
            out,
            inbox,
            closed: false,
            keepalive,
            last_sent,
            next_nonce: 1,
            reader,
            writer,
        }
    }

    /// Connects, registers `name` with `password(name)` and logs in online.
    pub async fn signed_up(addr: SocketAddr, name: &str) -> (Live, LoggedIn) {
        let mut live = Live::connect(addr).await;
        live.register(name).await;
        let logged_in = live.login(name, Status::Online).await;
        (live, logged_in)
    }

    pub fn send(&self, msg: &ClientMsg) {
        self.out
            .send(encode_frame(msg))
            .expect("the writer task ended");
    }

    /// Stops the keep-alive pings; the socket stays open and nothing more is sent unless
    /// the test sends it.
    pub fn go_silent(&self) {
        self.keepalive.store(false, Ordering::SeqCst);
    }

    /// When the last frame started to be written (the server cannot have received it
    /// earlier).
    pub fn last_sent(&self) -> Instant {
        *self.last_sent.lock().unwrap()
    }

    /// The next message with its arrival time; `None` once the server closed the connection.
    pub async fn recv_at(&mut self) -> Option<(Instant, ServerMsg)> {
        if self.closed {
            return None;
        }
        let next = timeout(WAIT, self.inbox.recv())
            .await
            .expect("no frame and no close within the wait bound");
        match next {
            Some(Inbound::Msg(at, msg)) => Some((at, msg)),
            Some(Inbound::Closed) | None => {
                self.closed = true;
                None
            }
            Some(Inbound::Garbled(e)) => panic!("the server sent an undecodable frame: {e}"),
        }
    }

    pub async fn recv(&mut self) -> Option<ServerMsg> {
        self.recv_at().await.map(|(_, msg)| msg)
    }

    /// Everything received up to and including the first message matching `f`, and when
    /// that one arrived.
    pub async fn collect_until(
        &mut self,
        what: &str,
        f: impl Fn(&ServerMsg) -> bool,
    ) -> (Instant, Vec<ServerMsg>) {
        let mut seen = Vec::new();
        let found = timeout(WAIT, async {
            loop {
                match self.recv_at().await {
                    Some((at, msg)) => {
                        let hit = f(&msg);
                        seen.push(msg);
                        if hit {
                            return at;
                        }
                    }
                    None => return Instant::now(),
                }
            }
        })
        .await;
        match found {
            Ok(_) if self.closed => panic!("closed while waiting for {what}; got {seen:?}"),
            Ok(at) => (at, seen),
            Err(_) => panic!("waited {WAIT:?} for {what}; got {seen:?}"),
        }
    }

    /// Skips messages until one matches `f`.
    pub async fn recv_until(&mut self, what: &str, f: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        let (_, mut seen) = self.collect_until(what, f).await;
        seen.pop().unwrap()
    }

    /// A round trip through the server: everything it had queued for this connection before
    /// it answered the ping.
    pub async fn sync(&mut self) -> Vec<ServerMsg> {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        self.send(&ClientMsg::Ping { nonce });
        let (_, mut seen) = self
            .collect_until("pong", |m| *m == ServerMsg::Pong { nonce })
            .await;
        seen.pop();
        seen
    }

    /// Everything until the server closes the connection.
    pub async fn until_closed(&mut self) -> Vec<ServerMsg> {
        let mut seen = Vec::new();
        while let Some(msg) = self.recv().await {
            seen.push(msg);
        }
        seen
    }

    /// Reads until the close and checks that the server said `reason` last.
    pub async fn expect_bye(&mut self, reason: CloseReason) {
        let seen = self.until_closed().await;
        assert_eq!(
            seen.last(),
            Some(&ServerMsg::Bye { reason }),
            "expected Bye {{ {reason:?} }} then close; got {seen:?}"
        );
    }

    pub async fn register(&mut self, name: &str) {
        self.send(&ClientMsg::Register {
            user: user(name),
            password: password(name),
        });
        let got = self
            .recv_until("register answer", |m| {
                matches!(m, ServerMsg::Registered { .. } | ServerMsg::Error { .. })
            })
            .await;
        assert_eq!(got, ServerMsg::Registered { user: user(name) });
    }

    /// Registers with an explicit password; the answer (`Registered` or `Error`).
    pub async fn try_register(&mut self, name: UserId, password: &str) -> ServerMsg {
        self.send(&ClientMsg::Register {
            user: name,
            password: password.into(),
        });
        self.recv_until("register answer", |m| {
            matches!(m, ServerMsg::Registered { .. } | ServerMsg::Error { .. })
        })
        .await
    }

    /// Logs in with `password(name)`; panics unless it succeeds.
    pub async fn login(&mut self, name: &str, status: Status) -> LoggedIn {
        match self
            .try_login(name, Credential::Password(password(name)), status)
            .await
        {
            Ok(logged_in) => logged_in,
            Err(refused) => panic!("login of {name} refused: {refused:?}"),
        }
    }

    /// Logs in; on success the `LoginOk` and the snapshot, else the `Error`.
    pub async fn try_login(
        &mut self,
        name: &str,
        credential: Credential,
        status: Status,
    ) -> Result<LoggedIn, ServerMsg> {
        self.send(&ClientMsg::Login {
            user: user(name),
            credential,
            status,
        });
        let answer = self
            .recv_until("login answer", |m| {
                matches!(
                    m,
                    ServerMsg::LoginOk { .. }
                        | ServerMsg::Error {
                            request: RequestKind::Login,
                            ..
                        }
                )
            })
            .await;
        let ServerMsg::LoginOk {
            user: who,
            status,
            resume_token,
            contacts,
        } = answer
        else {
            return Err(answer);
        };
        assert_eq!(who.as_str(), name);
        // The snapshot follows the LoginOk directly (PROTOCOL.md §10.2), after the contact
        // groups on a connection of version 2 or later.
        let mut next = self.recv().await;
        if matches!(next, Some(ServerMsg::Groups { .. })) {
            next = self.recv().await;
        }
        let Some(ServerMsg::PresenceSnapshot { entries }) = next else {
            panic!("expected the presence snapshot after LoginOk, got {next:?}");
        };
        Ok(LoggedIn {
            status,
            resume_token,
            contacts,
            snapshot: entries,
        })
    }

    /// The error a request got.
    pub async fn error_for(&mut self, request: RequestKind) -> ErrorCode {
        let got = self
            .recv_until(
                "error",
                |m| matches!(m, ServerMsg::Error { request: r, .. } if *r == request),
            )
            .await;
        let ServerMsg::Error { code, .. } = got else {
            unreachable!()
        };
        code
    }
}

async fn read_loop(mut rd: OwnedReadHalf, mut buf: BytesMut, tx: mpsc::UnboundedSender<Inbound>) {
    loop {
        loop {
            match take_msg(&mut buf) {
                Ok(Some(ServerMsg::Pong { nonce })) if nonce & KEEPALIVE_NONCE != 0 => {}
                Ok(Some(msg)) => {
                    let _ = tx.send(Inbound::Msg(Instant::now(), msg));
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Inbound::Garbled(e));
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Inbound::Closed);
                return;
            }
            Ok(_) => {}
        }
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
    every: Duration,
    keepalive: Arc<AtomicBool>,
    last_sent: Arc<Mutex<Instant>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut nonce = KEEPALIVE_NONCE;
    loop {
        let frame = tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            _ = tick.tick() => {
                if !keepalive.load(Ordering::SeqCst) {
                    continue;
                }
                nonce += 1;
                encode_frame(&ClientMsg::Ping { nonce })
            }
        };
        *last_sent.lock().unwrap() = Instant::now();
        if wr.write_all(&frame).await.is_err() {
            // The server closed; keep the half open (a write error is not ours to report) and
            // wait to be dropped.
            std::future::pending::<()>().await;
        }
    }
}
