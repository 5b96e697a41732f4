//! The core task: the one owner of the `Server` state machine.
//!
//! Every input — frames, connects and closes from connection tasks, storage results, timer
//! expiries, console requests — arrives here and is fed to the core; then its outputs are
//! performed. Inputs that are ready together are handled together before any output is
//! drained, so the core can batch presence changes (a hundred clients dropping at once make
//! one diff per watcher, not a hundred).

use crate::acceptor::Acceptor;
use crate::cluster::{ClusterBackend, ClusterEvent, ClusterInbox, next_event};
use crate::connection::{ConnSettings, Inbound};
use crate::length_prefixed::LengthPrefixed;
use crate::link::{LinkHandle, QueueLimits};
use crate::listener::Listener;
use crate::storage::{ResultReceiver, StorageBackend};
use crate::time::Clock;
use breeze_core::cluster::ClusterConfig;
use breeze_core::message::{CloseReason, RequestKind, WhoEntry};
use breeze_core::server::{self, Counters, Output, Server, ServerEvent, Stats};
use breeze_core::{ConnId, Instant};
use foldhash::fast::FixedState;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

/// Transport limits and timings; the protocol's own policy lives in `ServerConfig`.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Open sockets at most; one more is told `Bye{ServerFull}` and closed, and the core
    /// never hears of it. Connections still closing count, since they still hold memory.
    pub max_connections: usize,
    /// Per-connection outbound queue; a peer that lets it fill up is a slow reader.
    pub outbound_queue: QueueLimits,
    /// How long a connection told to close may take to write what it has queued.
    pub close_timeout: Duration,
    /// How long a closed connection waits for its peer to close too (see `linger` in
    /// `connection.rs`: it keeps the last `Bye` from being destroyed by a reset).
    pub linger: Duration,
    /// How long writing a `Bye` to a slow reader or a refused connection may take.
    pub bye_timeout: Duration,
    /// At shutdown, how long to wait for connections to write their `Bye` and close.
    pub shutdown_grace: Duration,
    /// Events from connections waiting for the core task; a full queue stops reading
    /// (backpressure through TCP).
    pub inbound_capacity: usize,
    /// Inputs handled at most in one batch, so outputs are not held back for ever.
    pub batch: usize,
    /// Refused connections being told `ServerFull` at once; beyond that they are just
    /// dropped, so a connection flood cannot make the refusals themselves a cost.
    pub max_refusals: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            max_connections: 20_000,
            // Bytes are the real bound; the frame count only caps the per-frame overhead, and
            // is generous because one batch of pipelined requests can queue hundreds of small
            // answers before the connection task gets to write any.
            outbound_queue: QueueLimits {
                frames: 4096,
                bytes: 4 * 1024 * 1024,
            },
            close_timeout: Duration::from_secs(2),
            linger: Duration::from_secs(1),
            bye_timeout: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(2),
            inbound_capacity: 4096,
            batch: 1024,
            max_refusals: 64,
        }
    }
}

/// The host has stopped; its handle can no longer reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server host has stopped")]
pub struct HostStopped;

enum Control {
    Stats(oneshot::Sender<Stats>),
    Metrics(oneshot::Sender<(Stats, Counters)>),
    Who(oneshot::Sender<Vec<WhoEntry>>),
    Shutdown(oneshot::Sender<()>),
}

/// Talks to a running host: introspection for the console, admission for transports that
/// are not a [`Listener`], and shutdown. Cheap to clone. When every handle is dropped the
/// host shuts down as if told to.
#[derive(Debug, Clone)]
pub struct HostHandle {
    control: mpsc::Sender<Control>,
    local_addr: SocketAddr,
    acceptor: Acceptor,
}

impl HostHandle {
    /// The address of the listener the host was made with (the real port when bound to
    /// port 0). [`Host::listen`] returns the addresses of the others.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Admits connections into this host under its one id space and connection limit: for
    /// a transport that accepts on its own (an HTTP server upgrading to WebSocket).
    pub fn acceptor(&self) -> Acceptor {
        self.acceptor.clone()
    }

    /// Connection, session and user counts.
    pub async fn stats(&self) -> Result<Stats, HostStopped> {
        self.ask(Control::Stats).await
    }

    /// The counts of `stats` and the core's totals since start, read together: what an
    /// operator's `/metrics` shows.
    pub async fn metrics(&self) -> Result<(Stats, Counters), HostStopped> {
        self.ask(Control::Metrics).await
    }

    /// Online users and their sessions, sorted by name.
    pub async fn who(&self) -> Result<Vec<WhoEntry>, HostStopped> {
        self.ask(Control::Who).await
    }

    /// Shuts down gracefully: every session is told `Bye{ServerShutdown}`, connections get
    /// `shutdown_grace` to write it, then storage is flushed. Returns when all that is done
    /// (at once if the host had already stopped).
    pub async fn shutdown(&self) {
        let _ = self.ask(Control::Shutdown).await;
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Control,
    ) -> Result<T, HostStopped> {
        let (tx, rx) = oneshot::channel();
        self.control.send(make(tx)).await.map_err(|_| HostStopped)?;
        rx.await.map_err(|_| HostStopped)
    }
}

/// An accept loop, made by `listen` and started by `run`.
type AcceptLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server core, its listeners and a storage backend, ready to run.
pub struct Host<B: StorageBackend> {
    server: Server,
    backend: B,
    results: ResultReceiver,
    cfg: HostConfig,
    clock: Clock,
    control: mpsc::Receiver<Control>,
    acceptor: Acceptor,
    inbound: mpsc::Receiver<Inbound>,
    listeners: Vec<(SocketAddr, AcceptLoop)>,
    cluster: Option<(Box<dyn ClusterBackend>, ClusterInbox)>,
}

impl<B: StorageBackend> fmt::Debug for Host<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("cfg", &self.cfg)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl<B: StorageBackend> Host<B> {
    /// A host serving `listener` (more can be added with [`listen`](Host::listen)).
    /// `results` is the receiving end of the channel `backend` reports on. The core's
    /// instants count from `clock`'s epoch: start it when the `Server` is made.
    pub fn new<L: Listener>(
        server: Server,
        listener: L,
        backend: B,
        results: ResultReceiver,
        clock: Clock,
        cfg: HostConfig,
    ) -> io::Result<(Self, HostHandle)> {
        // The backend's sends never wait only if the channel holds every result the core
        // can have outstanding (`result_channel` sizes it so).
        assert!(
            results.0.max_capacity() >= server.config().work.storage.capacity(),
            "the result channel is smaller than the core's storage budget"
        );
        let settings = ConnSettings {
            max_frame: server.config().max_frame,
            close_timeout: cfg.close_timeout,
            linger: cfg.linger,
            bye_timeout: cfg.bye_timeout,
            clock,
        };
        let (inbound_tx, inbound) = mpsc::channel(cfg.inbound_capacity.max(1));
        let acceptor = Acceptor::new(cfg.max_connections, cfg.max_refusals, inbound_tx, settings);
        let (tx, rx) = mpsc::channel(16);
        let mut host = Host {
            server,
            backend,
            results,
            cfg,
            clock,
            control: rx,
            acceptor: acceptor.clone(),
            inbound,
            listeners: Vec::new(),
            cluster: None,
        };
        let local_addr = host.listen(listener)?;
        let handle = HostHandle {
            control: tx,
            local_addr,
            acceptor,
        };
        Ok((host, handle))
    }

    /// Serves another listener of length-prefixed streams (plain TCP beside TLS, a second
    /// address) from the same core, under the same connection limit and id space. Returns
    /// its address.
    pub fn listen<L: Listener>(&mut self, listener: L) -> io::Result<SocketAddr> {
        let addr = listener.local_addr()?;
        let accept = accept_loop(listener, self.acceptor.clone());
        self.listeners.push((addr, Box::pin(accept)));
        Ok(addr)
    }

    /// Runs `accept`, the accept loop of a transport that admits through
    /// [`acceptor`](Host::acceptor) on its own (an HTTP listener upgrading to WebSocket),
    /// as one of the host's listeners: it starts with the host, is stopped at shutdown, and
    /// if it ever ends the host ends too (panics), like the host's own accept loops.
    pub fn serve(&mut self, addr: SocketAddr, accept: impl Future<Output = ()> + Send + 'static) {
        self.listeners.push((addr, Box::pin(accept)));
    }

    /// Makes this node one of a cluster (CLUSTER.md): the core publishes through `backend`
    /// and hears the bus through `inbox` (from `cluster_channel`). Call once, before `run`.
    pub fn join_cluster(
        &mut self,
        cfg: ClusterConfig,
        backend: impl ClusterBackend,
        inbox: ClusterInbox,
    ) {
        self.server.enable_cluster(self.clock.now(), cfg);
        self.cluster = Some((Box::new(backend), inbox));
    }

    /// Admission into this host for transports that accept on their own.
    pub fn acceptor(&self) -> Acceptor {
        self.acceptor.clone()
    }

    /// Runs the host on a task of its own.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// Runs the host until it is shut down.
    pub async fn run(self) {
        let Host {
            server,
            backend,
            results,
            cfg,
            clock,
            mut control,
            acceptor,
            mut inbound,
            listeners,
            cluster,
        } = self;
        let (bus, mut bus_inbox) = cluster.map_or((None, None), |(b, i)| (Some(b), Some(i)));
        let mut accepting = JoinSet::new();
        let mut addrs = BTreeMap::new();
        for (addr, accept) in listeners {
            let id = accepting.spawn(accept).id();
            addrs.insert(id, addr);
        }
        let mut core = Core {
            server,
            backend,
            conns: HashMap::default(),
            ended: Vec::new(),
            handled: Vec::new(),
            limits: cfg.outbound_queue,
            bus,
        };
        let mut ready_bus: Vec<ClusterEvent> = Vec::new();
        let mut results = results.0;
        let mut results_open = true;
        let batch = cfg.batch.max(1);
        let mut ready_results = Vec::with_capacity(batch);
        let mut ready_inbound = Vec::with_capacity(batch);

        // One timer for the loop's life, moved only when the core's next deadline moves: a
        // `sleep_until` per turn registered and removed a timer-wheel entry for every input,
        // 710 of an idle ping's 13,500 instructions (callgrind; BENCHMARKS.md, "Idle pings in
        // instructions").
        let sleep = tokio::time::sleep_until(far_future());
        tokio::pin!(sleep);
        let mut armed = None;
        let reply = loop {
            let timer = core.server.poll_timeout();
            if timer != armed {
                armed = timer;
                sleep
                    .as_mut()
                    .reset(timer.map_or_else(far_future, |at| clock.tokio(at)));
            }
            tokio::select! {
                biased;
                msg = control.recv() => match msg {
                    Some(Control::Stats(reply)) => {
                        let _ = reply.send(core.server.stats());
                        continue;
                    }
                    Some(Control::Metrics(reply)) => {
                        let server = &core.server;
                        let mut counters = server.counters().clone();
                        acceptor.tally().add_to(&mut counters);
                        let _ = reply.send((server.stats(), counters));
                        continue;
                    }
                    Some(Control::Who(reply)) => {
                        let _ = reply.send(core.server.who(clock.now()));
                        continue;
                    }
                    Some(Control::Shutdown(reply)) => break Some(reply),
                    None => break None,
                },
                n = results.recv_many(&mut ready_results, batch), if results_open => {
                    if n == 0 {
                        // Nothing will ever answer the requests in flight; the sessions
                        // waiting on them time out, the rest keep working.
                        tracing::error!("the storage backend stopped reporting results");
                        results_open = false;
                    }
                }
                // The host's own acceptor holds a sender, so the channel never closes.
                _ = inbound.recv_many(&mut ready_inbound, batch) => {}
                Some(ended) = accepting.join_next_with_id() => {
                    // An accept loop only ends by panicking. A server that silently stopped
                    // accepting would be a zombie: end the host, so the process ends too.
                    let id = match &ended {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    panic!("the accept loop for {} ended: {ended:?}", addrs[&id]);
                }
                ev = next_event(&mut bus_inbox) => ready_bus.push(ev),
                () = sleep.as_mut(), if timer.is_some() => {}
            }
            while let Some(inbox) = bus_inbox.as_mut()
                && ready_bus.len() < batch
                && let Some(ev) = inbox.try_next()
            {
                ready_bus.push(ev);
            }
            // Whatever else is ready joins this batch.
            while results_open && ready_results.len() < batch {
                match results.try_recv() {
                    Ok(r) => ready_results.push(r),
                    Err(_) => break,
                }
            }
            while ready_inbound.len() < batch {
                match inbound.try_recv() {
                    Ok(ev) => ready_inbound.push(ev),
                    Err(_) => break,
                }
            }
            let now = clock.now();
            for (id, result) in ready_results.drain(..) {
                core.server.handle_storage(now, id, result);
            }
            for ev in ready_inbound.drain(..) {
                core.inbound(now, ev);
            }
            for ev in ready_bus.drain(..) {
                match ev {
                    ClusterEvent::Message { from, msg } => {
                        core.server.handle_cluster(now, from, msg)
                    }
                    ClusterEvent::Link { up } => core.server.handle_bus_link(now, up),
                }
            }
            if timer.is_some_and(|at| at <= now) {
                let conns = &core.conns;
                core.server.handle_timeout_with(now, |conn| {
                    conns.get(&conn).and_then(|p| p.link.pings().heard())
                });
            }
            core.settle(now);
            core.frames_handled();
        };

        // Shutdown. Stop accepting first, so nobody connects to a server that is leaving.
        acceptor.close();
        accepting.shutdown().await;
        let now = clock.now();
        // Connections accepted but not yet seen are told too.
        while let Ok(ev) = inbound.try_recv() {
            if let Inbound::Accepted { .. } = ev {
                core.inbound(now, ev);
            }
        }
        core.server.shutdown(now);
        core.settle(now);
        let conns = core.conns.len();
        core.conns.clear();
        info!(
            connections = conns,
            "shutting down: sessions told, waiting for writes"
        );
        // Wait for every connection to finish writing, while still draining their events
        // so none of them blocks on a full inbound queue.
        let all_closed = acceptor.all_closed();
        tokio::pin!(all_closed);
        let waited = tokio::time::timeout(cfg.shutdown_grace, async {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut all_closed => break,
                    ev = inbound.recv() => drop(ev),
                }
            }
        })
        .await;
        if waited.is_err() {
            warn!(
                "some connections did not close within {:?}",
                cfg.shutdown_grace
            );
        }
        core.backend.shutdown().await;
        info!("shutdown complete");
        if let Some(reply) = reply {
            let _ = reply.send(());
        }
    }
}

/// The state the core task keeps besides the `Server`.
struct Core<B> {
    server: Server,
    backend: B,
    /// Hashed, as the core's own table is (`breeze_core::server`'s `Conns`): every frame out
    /// looks its connection up here, and with 19,900 idle clients the ordered map this was
    /// cost a few cache misses per lookup (`settle` was 5 % of an idle server's samples,
    /// nearly all of it that descent). Nothing walks it, so its order reaches no output.
    conns: HashMap<ConnId, Peer, FixedState>,
    /// Connections that ended on the transport's side in this batch, with the reason to tell
    /// the peer, if any. Handled after the batch's outputs, so that frames the core queued
    /// for them first (the answer to a `Logout` sent just before a half-close, or to the
    /// frames before an oversize one) go out before they close.
    ended: Vec<(ConnId, Option<CloseReason>)>,
    /// The connection of each frame the core handled in this batch, in order: once the
    /// batch's outputs are queued, each connection learns how many of its frames are done,
    /// which is when it may answer a ping in place again (`in_place.rs`).
    handled: Vec<ConnId>,
    limits: QueueLimits,
    /// Where the core's bus messages go, in a cluster.
    bus: Option<Box<dyn ClusterBackend>>,
}

struct Peer {
    link: LinkHandle,
    addr: SocketAddr,
}

impl<B: StorageBackend> Core<B> {
    fn inbound(&mut self, now: Instant, ev: Inbound) {
        match ev {
            Inbound::Accepted { conn, peer, link } => {
                debug!(conn = conn.0, %peer, "connection accepted");
                self.conns.insert(conn, Peer { link, addr: peer });
                self.server.handle_connect(now, conn, Some(peer.ip()));
            }
            Inbound::Frame { conn, payload } => {
                self.server.handle_frame(now, conn, &payload);
                self.handled.push(conn);
            }
            Inbound::Alive { conn } => self.server.handle_alive(now, conn),
            Inbound::Refused { conn, bad } => {
                if let Some(peer) = self.conns.get(&conn) {
                    info!(conn = conn.0, peer = %peer.addr, ?bad, "closing: {}", bad.reason());
                }
                self.ended.push((conn, Some(bad.reason())));
            }
            Inbound::Closed { conn } => self.ended.push((conn, None)),
        }
    }

    /// Performs every output, then closes the connections that ended in this batch (which
    /// makes more outputs: presence changes), until there is nothing left to do.
    fn settle(&mut self, now: Instant) {
        loop {
            while let Some(out) = self.server.poll_output() {
                self.perform(now, out);
            }
            if self.ended.is_empty() {
                return;
            }
            for (conn, reason) in std::mem::take(&mut self.ended) {
                // Dropping the link closes the connection once what is queued is written.
                let peer = self.conns.remove(&conn);
                match reason {
                    Some(reason) => {
                        if let Some(peer) = &peer {
                            self.say_bye(peer, reason);
                        }
                        self.server.handle_aborted(now, conn, reason);
                    }
                    None => self.server.handle_closed(now, conn),
                }
            }
        }
    }

    /// Tells each connection how many of its frames this batch handled. Called after
    /// `settle`, so the replies to them are queued before a ping can be answered behind them.
    fn frames_handled(&mut self) {
        let mut run = self.handled.drain(..).peekable();
        while let Some(conn) = run.next() {
            // Consecutive frames of one connection (a pipelined burst) make one update.
            let mut frames = 1;
            while run.next_if_eq(&conn).is_some() {
                frames += 1;
            }
            if let Some(peer) = self.conns.get(&conn) {
                peer.link.pings().handled(frames);
            }
        }
    }

    fn perform(&mut self, now: Instant, out: Output) {
        match out {
            Output::Send { conn, payload } => {
                let Some(peer) = self.conns.get(&conn) else {
                    return;
                };
                if peer.link.push(payload, self.limits).is_err() {
                    let Some(peer) = self.conns.remove(&conn) else {
                        return;
                    };
                    warn!(conn = conn.0, peer = %peer.addr, "closing: {}", CloseReason::SlowReader);
                    peer.link.abort(CloseReason::SlowReader);
                    self.server
                        .handle_aborted(now, conn, CloseReason::SlowReader);
                }
            }
            Output::Close { conn, reason } => {
                if let Some(peer) = self.conns.remove(&conn) {
                    debug!(conn = conn.0, peer = %peer.addr, %reason, "closing");
                }
            }
            Output::Storage { id, op } => self.backend.submit(id, op),
            Output::Event(ev) => self.log(ev),
            Output::Cluster { to, msg } => match &mut self.bus {
                Some(bus) => bus.publish(to, msg),
                None => unreachable!("invariant: only a core in a cluster publishes"),
            },
            Output::AnswerPings { conn } => {
                if let Some(peer) = self.conns.get(&conn) {
                    peer.link.pings().allow();
                }
            }
        }
    }

    /// Queues `Bye{reason}` behind whatever is already queued, or, if the queue is full,
    /// gives up on the queue and lets the connection say it directly.
    fn say_bye(&self, peer: &Peer, reason: CloseReason) {
        if peer.link.push(server::bye(reason), self.limits).is_err() {
            peer.link.abort(reason);
        }
    }

    fn log(&self, ev: ServerEvent) {
        match ev {
            ServerEvent::SessionStarted { user, at, agent } => {
                let what = if agent {
                    "agent session started"
                } else {
                    "session started"
                };
                let peer = self.conns.get(&at.conn).map(|p| p.addr);
                match peer {
                    Some(peer) => info!(%user, conn = at.conn.0, %peer, "{what}"),
                    None => info!(%user, conn = at.conn.0, "{what}"),
                }
            }
            ServerEvent::SessionEnded { user, at, reason } => {
                info!(%user, conn = at.conn.0, reason = %reason, "session ended");
            }
            ServerEvent::LoginFailed {
                user,
                addr,
                failures,
            } => {
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                warn!(%user, %addr, failures, "login failed");
            }
            ServerEvent::LoginThrottled { user, addr } => {
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                warn!(%user, %addr, "login refused: too many failures");
            }
            ServerEvent::RegisterThrottled { user, addr } => {
                warn!(%user, %addr, "registration refused: too many from this address");
            }
            ServerEvent::Registered { user, addr } => {
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                info!(%user, %addr, "user registered");
            }
            ServerEvent::PasswordChanged { user } => info!(%user, "password changed"),
            ServerEvent::AdminAction {
                admin,
                request,
                user,
                sessions,
            } => {
                let what = match request {
                    RequestKind::AdminKick => "admin kicked user",
                    RequestKind::AdminBan => "admin banned user",
                    RequestKind::AdminUnban => "admin unbanned user",
                    _ => "admin request",
                };
                info!(%admin, %user, sessions, "{what}");
            }
            ServerEvent::LoginBanned { user, addr } => {
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                warn!(%user, %addr, "login refused: the account is banned");
            }
        }
    }
}

/// Pause after a failed accept: the usual cause is running out of file descriptors, and
/// retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts byte streams from `listener` and admits them as length-prefixed frame connections.
async fn accept_loop<L: Listener>(mut listener: L, acceptor: Acceptor) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                acceptor.admit(peer, LengthPrefixed(stream)).await;
            }
            Err(e) => {
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 86_400)
}
