//! Chat across the nodes of a real cluster: three `breeze-server` processes on a real NATS and
//! PostgreSQL (`cluster_rig`), and the real client (`run_client`) for every user, told the
//! list of servers. What the applications see is counted against what the senders were told
//! is durable (`MessageSent`): each acknowledged message reaches its recipient's application
//! exactly once, in its sender's order, across nodes, at a later login on another node,
//! through a rolling restart of every node (SIGTERM, and SIGKILL with the node back under
//! its id before its deadline), and through a node SIGKILLed in a burst. Skips with a line
//! without the services, fails instead under `BREEZE_REQUIRE_SERVICES=1`.
//!
//! `BREEZE_CLUSTER_BURST` sets the burst's size (default 2,000 messages).

mod cluster_rig;

use breeze_core::UserId;
use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::Presence;
use breeze_core::message::{CloseReason, Delivery, ErrorCode};
use breeze_testsupport::process::ServerProcess;
use breeze_testsupport::{Driven, PASSWORD, client_config, drive_with, user};
use breeze_transport_tokio::{ClientCommand, ClientSettings, Connector, TcpConnector};
use cluster_rig::{Cluster, NODE_TIMEOUT, SOON, Watcher, register, until_who};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// How often a wait looks at the applications' logs again.
const POLL: Duration = Duration::from_millis(10);
/// Bound on the wait for every message of a run to be acknowledged and delivered.
const SETTLE: Duration = Duration::from_secs(60);
/// After the last expected delivery, how long a late duplicate is given to show up.
const LATE: Duration = Duration::from_millis(500);

/// A message a user's application asked to send.
#[derive(Debug, Clone)]
struct Sent {
    id: u64,
    to: UserId,
    body: String,
}

/// What one user's application did and was told, in order.
#[derive(Debug, Default)]
struct ChatLog {
    sent: Vec<Sent>,
    /// `MessageSent`: the message id and the seq it was stored under.
    acked: BTreeMap<u64, u64>,
    /// `Message`: what the application was handed (the client core dedups by seq).
    received: Vec<Delivery>,
    logins: usize,
    /// Each connection's end, with the server's reason if it gave one.
    drops: Vec<Option<CloseReason>>,
    refused: Vec<(u64, ErrorCode)>,
    /// `SendDeferred`: the server could not take the message then (busy, or its database
    /// failing); the client sends it again.
    deferred: Vec<(u64, ErrorCode)>,
    /// Ids told `MessageSent` a second time (the client core should say it once).
    acked_twice: Vec<u64>,
}

impl ChatLog {
    fn unacked(&self) -> usize {
        self.sent.len().saturating_sub(self.acked.len())
    }
}

/// The client's connector, remembering where it connected last: the node that holds its
/// session once it is logged in, which every node's `who` must agree with.
#[derive(Clone)]
struct Tracked(Arc<Mutex<Option<SocketAddr>>>);

impl Connector for Tracked {
    type Stream = tokio::net::TcpStream;

    async fn connect(&mut self, addr: SocketAddr) -> std::io::Result<Self::Stream> {
        let stream = TcpConnector.connect(addr).await?;
        *self.0.lock().unwrap() = Some(addr);
        Ok(stream)
    }
}

/// A user's real client, its application's log, and a way to send.
struct Chatter {
    name: &'static str,
    driven: Driven,
    log: Arc<Mutex<ChatLog>>,
    at: Tracked,
    collector: JoinHandle<()>,
}

/// What sends for one user: the client's command queue and the log the sends go into.
#[derive(Clone)]
struct Sender {
    name: &'static str,
    commands: mpsc::Sender<ClientCommand>,
    log: Arc<Mutex<ChatLog>>,
}

impl Sender {
    async fn send(&self, to: &str) {
        self.send_all(&[to]).await;
    }

    /// Queues a message to each of `to` at once, without waiting between them, so that a
    /// whole window is on its way (and in the server's hands) together.
    async fn send_all(&self, to: &[&str]) {
        let first = self.log.lock().unwrap().sent.len();
        let mut queued = Vec::with_capacity(to.len());
        for (k, to) in to.iter().enumerate() {
            let body = format!("{} to {to}, #{}", self.name, first + k);
            let (id_tx, id_rx) = oneshot::channel();
            let command = ClientCommand::SendMessage {
                to: user(to),
                body: body.clone(),
                attachment: None,
                id: Some(id_tx),
            };
            timeout(SOON, self.commands.send(command))
                .await
                .expect("the runner takes commands")
                .expect("the runner is running");
            queued.push((id_rx, to, body));
        }
        for (id_rx, to, body) in queued {
            let id = timeout(SOON, id_rx)
                .await
                .expect("the runner names the message in time")
                .expect("the runner names the message");
            self.log.lock().unwrap().sent.push(Sent {
                id,
                to: user(to),
                body,
            });
        }
    }

    fn unacked(&self) -> usize {
        self.log.lock().unwrap().unacked()
    }
}

impl Chatter {
    /// `name`'s client with its list of servers: each connection goes to the next in turn.
    /// Message ids start at `number << 40`, apart from every other user's.
    fn start(name: &'static str, number: u64, servers: &[SocketAddr]) -> Chatter {
        let settings = ClientSettings {
            fallbacks: servers[1..].to_vec(),
            ..ClientSettings::new(servers[0])
        };
        let cfg = breeze_core::client::ClientConfig {
            id_base: number << 40,
            seed: number,
            ..client_config(name, PASSWORD, Mode::Login)
        };
        let at = Tracked(Arc::default());
        let (driven, mut events) = drive_with(cfg, at.clone(), settings);
        let log = Arc::new(Mutex::new(ChatLog::default()));
        let collector = {
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(event) = events.0.recv().await {
                    let mut log = log.lock().unwrap();
                    match event {
                        ClientEvent::Message(d) => log.received.push(d),
                        ClientEvent::MessageSent { id, seq } => {
                            let twice = log.acked.insert(id, seq).map(|_| id);
                            log.acked_twice.extend(twice);
                        }
                        ClientEvent::SendFailed { id, code } => log.refused.push((id, code)),
                        ClientEvent::SendDeferred { id, code } => log.deferred.push((id, code)),
                        ClientEvent::LoggedIn { .. } => log.logins += 1,
                        ClientEvent::Disconnected { reason, .. } => log.drops.push(reason),
                        _ => {}
                    }
                }
            })
        };
        Chatter {
            name,
            driven,
            log,
            at,
            collector,
        }
    }

    fn sender(&self) -> Sender {
        Sender {
            name: self.name,
            commands: self.driven.commands.clone(),
            log: self.log.clone(),
        }
    }

    fn logins(&self) -> usize {
        self.log.lock().unwrap().logins
    }

    /// Where the client connected last.
    fn node(&self, addrs: &[SocketAddr]) -> u32 {
        let at = self.at.0.lock().unwrap().expect("connected somewhere");
        let index = addrs
            .iter()
            .position(|a| *a == at)
            .expect("a node's address");
        u32::try_from(index).unwrap() + 1
    }

    async fn quit(self) {
        self.driven.quit().await;
        let _ = timeout(SOON, self.collector).await;
    }
}

/// Waits (bounded) until `cond` holds; `what` names it in the failure.
async fn until(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        sleep(POLL).await;
    }
    Instant::now()
}

async fn all_logged_in(chatters: &[&Chatter]) {
    until("every client logged in", SOON, || {
        chatters.iter().all(|c| c.logins() >= 1)
    })
    .await;
}

/// Messages among `chatters`: sent, acknowledged, and those of them their recipients'
/// applications have.
fn totals(chatters: &[&Chatter]) -> (usize, usize, usize) {
    let logs: Vec<_> = chatters.iter().map(|c| c.log.lock().unwrap()).collect();
    let present: Vec<UserId> = chatters.iter().map(|c| user(c.name)).collect();
    let to_present = |s: &&Sent| present.contains(&s.to);
    let sent = logs
        .iter()
        .map(|l| l.sent.iter().filter(to_present).count())
        .sum();
    let acked = logs
        .iter()
        .map(|l| {
            l.sent
                .iter()
                .filter(to_present)
                .filter(|s| l.acked.contains_key(&s.id))
                .count()
        })
        .sum();
    let received = logs.iter().map(|l| l.received.len()).sum();
    (sent, acked, received)
}

/// Waits (bounded) until every message among `chatters` is acknowledged and as many have
/// reached the applications, then a moment more for a late duplicate. When it happened.
async fn settle(chatters: &[&Chatter], bound: Duration) -> Instant {
    let deadline = Instant::now() + bound;
    loop {
        let (sent, acked, received) = totals(chatters);
        if acked == sent && received >= sent {
            let done = Instant::now();
            sleep(LATE).await;
            return done;
        }
        if Instant::now() >= deadline {
            // The check names what is missing.
            let report = check(chatters);
            panic!(
                "not settled within {bound:?}: {sent} sent, {acked} acknowledged, {received} \
                 received; {report:?}"
            );
        }
        sleep(POLL).await;
    }
}

/// How the applications' logs compare with what the senders were told.
#[derive(Debug, Default, PartialEq, Eq)]
struct Check {
    acked: usize,
    /// Acknowledged, never in the recipient's application.
    lost: Vec<String>,
    /// In the recipient's application more than once.
    duplicated: Vec<String>,
    /// In the recipient's application after a later message of the same sender.
    out_of_order: Vec<String>,
    /// Delivered under another seq or body than the sender was told, or never sent.
    wrong: Vec<String>,
    refused: Vec<String>,
    /// Not a failure: sends the server put off (`Busy`, `StorageFailed`) …
    deferred: Vec<String>,
    /// … and those of them that arrived after later messages of their sender, which the
    /// protocol allows: the client sends a put-off message again a second later (§9.3), and
    /// what it sent meanwhile may be stored first.
    resent_late: Vec<String>,
}

impl Check {
    fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.out_of_order.is_empty()
            && self.wrong.is_empty()
            && self.refused.is_empty()
    }
}

/// Every acknowledged message among `chatters` in its recipient's application exactly once,
/// as acknowledged, and each sender's messages to one recipient in the order sent.
fn check(chatters: &[&Chatter]) -> Check {
    let logs: BTreeMap<UserId, _> = chatters
        .iter()
        .map(|c| (user(c.name), c.log.lock().unwrap()))
        .collect();
    let mut check = Check::default();
    for (from, log) in &logs {
        check.refused.extend(
            log.refused
                .iter()
                .map(|(id, code)| format!("{from} {id}: {code:?}")),
        );
        check.deferred.extend(
            log.deferred
                .iter()
                .map(|(id, code)| format!("{from} {id}: {code:?}")),
        );
        check.wrong.extend(
            log.acked_twice
                .iter()
                .map(|id| format!("{from}'s message {id} acknowledged twice")),
        );
        let sent: BTreeMap<u64, &Sent> = log.sent.iter().map(|s| (s.id, s)).collect();
        for s in &log.sent {
            let Some(to) = logs.get(&s.to) else { continue };
            let Some(seq) = log.acked.get(&s.id) else {
                continue;
            };
            check.acked += 1;
            let copies: Vec<&Delivery> = to
                .received
                .iter()
                .filter(|d| &d.from == from && d.id == s.id)
                .collect();
            let what = format!("{from} to {}: id {} seq {seq}", s.to, s.id);
            match copies.as_slice() {
                [] => check.lost.push(what),
                [d] if d.seq != *seq || d.body != s.body => {
                    check.wrong.push(format!("{what}, delivered as {d:?}"));
                }
                [_] => {}
                _ => check
                    .duplicated
                    .push(format!("{what}, {} times", copies.len())),
            }
        }
        for (to, to_log) in &logs {
            let mut last = None;
            for d in to_log.received.iter().filter(|d| &d.from == from) {
                if !sent.contains_key(&d.id) {
                    check.wrong.push(format!("{to} got {d:?}, never sent"));
                }
                if let Some(last) = last.filter(|last| d.id <= *last) {
                    let what = format!("{to} got {from}'s id {} after id {last}", d.id);
                    if log.deferred.iter().any(|(id, _)| *id == d.id) {
                        check.resent_late.push(what);
                    } else {
                        check.out_of_order.push(what);
                    }
                }
                last = Some(d.id);
            }
        }
    }
    check
}

fn assert_clean(check: &Check) {
    assert!(
        check.clean(),
        "{} acknowledged; lost {}, duplicated {}, out of order {}, wrong {}, refused {}: {check:#?}",
        check.acked,
        check.lost.len(),
        check.duplicated.len(),
        check.out_of_order.len(),
        check.wrong.len(),
        check.refused.len()
    );
}

/// Sends from `sender` to `to` in turn until `stop` (or `quota` messages), with at most
/// `window` unacknowledged and `pace` between sends: a client that keeps typing through
/// whatever happens to its node (what it sends while disconnected waits in its outbox).
fn stream(
    sender: Sender,
    to: Vec<&'static str>,
    window: usize,
    pace: Duration,
    quota: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < quota && !stop.load(Ordering::SeqCst) {
            let room = window.saturating_sub(sender.unacked());
            if room == 0 {
                sleep(POLL).await;
                continue;
            }
            // Paced: one at a time; unpaced: the whole room at once.
            let batch = if pace.is_zero() { room } else { 1 };
            let batch: Vec<&str> = (sent..quota.min(sent + batch))
                .map(|k| to[k % to.len()])
                .collect();
            sender.send_all(&batch).await;
            sent += batch.len();
            if !pace.is_zero() {
                sleep(pace).await;
            }
        }
    })
}

/// Every node in `live` lists exactly the chatters' sessions where their clients are (and
/// the admin asking), nobody twice, no ghost of a stopped or killed node.
async fn no_ghosts(chatters: &[&Chatter], addrs: &[SocketAddr], live: &[u32]) {
    for &node in live {
        let mut expected: BTreeMap<String, Vec<u32>> = chatters
            .iter()
            .map(|c| (c.name.to_owned(), vec![c.node(addrs)]))
            .collect();
        expected.insert("alice".into(), vec![node]);
        let at = addrs[usize::try_from(node).unwrap() - 1];
        let mut admin = Watcher::login(at, "alice").await;
        until_who(&mut admin, &expected).await;
    }
}

fn addrs(nodes: &[&ServerProcess]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.addr).collect()
}

/// The nodes' addresses in the order `order` gives by index.
fn servers(addrs: &[SocketAddr], order: [usize; 3]) -> Vec<SocketAddr> {
    order.iter().map(|&i| addrs[i]).collect()
}

/// The nodes' addresses starting at `first`, then round the list.
fn from(addrs: &[SocketAddr], first: usize) -> Vec<SocketAddr> {
    (0..addrs.len())
        .map(|k| addrs[(first + k) % addrs.len()])
        .collect()
}

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_nodes_arrives_once_in_order_and_offline_mail_at_a_login_elsewhere() {
    const ROUNDS: usize = 30;
    let Some(cluster) = Cluster::new(
        "chat_across_nodes_arrives_once_in_order_and_offline_mail_at_a_login_elsewhere",
    ) else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let n1 = cluster.node(1, &bus).await;
    let n2 = cluster.node(2, &bus).await;
    let n3 = cluster.node(3, &bus).await;
    let addrs = addrs(&[&n1, &n2, &n3]);
    register(n1.addr, &["alice", "ann", "ben", "cat", "dan"]).await;

    // One user on each node; dan is offline while they write.
    let ann = Chatter::start("ann", 1, &from(&addrs, 0));
    let ben = Chatter::start("ben", 2, &from(&addrs, 1));
    let cat = Chatter::start("cat", 3, &from(&addrs, 2));
    all_logged_in(&[&ann, &ben, &cat]).await;
    let started = Instant::now();
    let senders = [
        (&ann, ["ben", "cat"]),
        (&ben, ["cat", "ann"]),
        (&cat, ["ann", "ben"]),
    ];
    for _ in 0..ROUNDS {
        for (chatter, to) in &senders {
            let sender = chatter.sender();
            for to in to.iter().chain(&["dan"]) {
                sender.send(to).await;
            }
        }
    }
    let online = [&ann, &ben, &cat];
    let delivered = settle(&online, SETTLE).await;
    let across = check(&online);
    assert_clean(&across);
    assert_eq!(across.acked, 3 * 2 * ROUNDS);
    eprintln!(
        "{} messages across three nodes acknowledged and delivered {:?} after the first send",
        across.acked,
        delivered - started
    );
    // Every sender's node was up to date about the others: each message went through two.
    assert_eq!(
        [ann.node(&addrs), ben.node(&addrs), cat.node(&addrs)],
        [1, 2, 3]
    );

    // dan logs in on node 2: the mail from nodes 1 and 3 (and 2) is there.
    let login = Instant::now();
    let dan = Chatter::start("dan", 4, &from(&addrs, 1));
    let everyone = [&ann, &ben, &cat, &dan];
    let caught_up = settle(&everyone, SETTLE).await;
    let all = check(&everyone);
    assert_clean(&all);
    assert_eq!(all.acked, 3 * 3 * ROUNDS);
    assert_eq!(dan.log.lock().unwrap().received.len(), 3 * ROUNDS);
    assert_eq!(dan.node(&addrs), 2);
    eprintln!(
        "dan, offline while {} messages were sent to him, had them all {:?} after starting a \
         login on node 2",
        3 * ROUNDS,
        caught_up - login
    );
    no_ghosts(&everyone, &addrs, &[1, 2, 3]).await;
    for c in [ann, ben, cat, dan] {
        c.quit().await;
    }
    drop((n1, n2, n3));
}

/// How a rolling restart stops each node before starting it again under its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: the node closes its clients and says goodbye on the bus.
    Term,
    /// SIGKILL: a crash; the node is back under a new epoch before its deadline.
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_chat_running_loses_and_duplicates_no_acked_message() {
    rolling_restart(
        "a_rolling_restart_with_chat_running_loses_and_duplicates_no_acked_message",
        Stop::Term,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_crash_and_restart_with_chat_running_loses_and_duplicates_no_acked_message() {
    rolling_restart(
        "a_rolling_crash_and_restart_with_chat_running_loses_and_duplicates_no_acked_message",
        Stop::Kill,
    )
    .await;
}

/// Three nodes, two clients on each and a steady stream of messages among them; each node in
/// turn stopped (`how`) and started again under its id and address, the next one only once
/// it is back in the cluster; then the senders stop and every acknowledged message must be
/// in its recipient's application once, in order, with no ghost in any node's `who`.
async fn rolling_restart(test: &str, how: Stop) {
    const NAMES: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
    /// Each client's pace; six of them make a steady ~100 messages a second.
    const PACE: Duration = Duration::from_millis(60);
    const WINDOW: usize = 16;
    /// Acknowledged messages after a node is back before the next one goes.
    const BETWEEN: usize = 60;
    let Some(cluster) = Cluster::new(test) else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let mut nodes = vec![
        cluster.node(1, &bus).await,
        cluster.node(2, &bus).await,
        cluster.node(3, &bus).await,
    ];
    let addrs = addrs(&nodes.iter().collect::<Vec<_>>());
    let mut names = vec!["alice"];
    names.extend(NAMES);
    register(addrs[0], &names).await;

    // Two clients on each node, each with the list of servers starting at its own, one going
    // round it forwards and one backwards: the clients of a stopped node part ways, so that
    // they end up on two nodes, not all on one, and the last messages cross nodes too.
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [1, 2, 0],
        [2, 0, 1],
        [0, 2, 1],
        [1, 0, 2],
        [2, 1, 0],
    ];
    let chatters: Vec<Chatter> = NAMES
        .iter()
        .zip(ORDERS)
        .enumerate()
        .map(|(i, (name, order))| Chatter::start(name, i as u64 + 1, &servers(&addrs, order)))
        .collect();
    let all: Vec<&Chatter> = chatters.iter().collect();
    all_logged_in(&all).await;
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<JoinHandle<()>> = chatters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let to = vec![NAMES[(i + 1) % 6], NAMES[(i + 3) % 6]];
            stream(c.sender(), to, WINDOW, PACE, usize::MAX, stop.clone())
        })
        .collect();
    let started = Instant::now();
    let acked = || totals(&all).1;
    until("chat under way", SOON, || acked() >= BETWEEN).await;

    let mut report = Vec::new();
    for index in 0..nodes.len() {
        let id = u32::try_from(index).unwrap() + 1;
        let on_it: Vec<&Chatter> = all
            .iter()
            .filter(|c| c.node(&addrs) == id)
            .copied()
            .collect();
        let logins: Vec<usize> = on_it.iter().map(|c| c.logins()).collect();
        let node = nodes.remove(index);
        let stopping = Instant::now();
        let exited = tokio::task::spawn_blocking(move || match how {
            Stop::Term => node.sigterm(),
            Stop::Kill => node.sigkill(),
        })
        .await
        .unwrap();
        assert_eq!(exited.success(), how == Stop::Term, "node {id}: {exited:?}");
        let stopped = stopping.elapsed();
        // Its clients come back through the next server on their lists.
        let moved = until(
            &format!("node {id}'s clients logged in elsewhere"),
            SOON,
            || on_it.iter().zip(&logins).all(|(c, n)| c.logins() > *n),
        )
        .await;
        let node = cluster.node_at(id, &bus, addrs[index]).await;
        let listening = stopping.elapsed();
        nodes.insert(index, node);
        // Back in the cluster: it has every other node's sessions.
        let mut admin = Watcher::login(addrs[index], "alice").await;
        for name in NAMES {
            admin.until(name, Presence::Online, SOON).await;
        }
        drop(admin);
        let back = stopping.elapsed();
        let before = acked();
        until(
            &format!("chat going on after node {id} is back"),
            SOON,
            || acked() >= before + BETWEEN,
        )
        .await;
        report.push(format!(
            "node {id}: gone in {stopped:?}, its {} clients logged in elsewhere {:?} after the \
             signal, listening again after {listening:?}, seeing everyone after {back:?}",
            on_it.len(),
            moved - stopping
        ));
    }
    stop.store(true, Ordering::SeqCst);
    for s in streams {
        timeout(SOON, s).await.expect("a sender stopped").unwrap();
    }
    let stopped = Instant::now();
    let settled = settle(&all, SETTLE).await;
    let result = check(&all);
    assert_clean(&result);
    let logins: usize = all.iter().map(|c| c.logins()).sum();
    eprintln!(
        "rolling restart ({how:?}): {}; {} messages acknowledged over {:?}, every one \
         delivered once in order ({:?} after the senders stopped), {logins} logins of {} \
         clients",
        report.join("; "),
        result.acked,
        stopped - started,
        settled - stopped,
        all.len()
    );
    no_ghosts(&all, &addrs, &[1, 2, 3]).await;
    for c in chatters {
        c.quit().await;
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_in_a_burst_loses_and_duplicates_no_acked_message() {
    const WINDOW: usize = 64;
    /// Messages per pair after the kill.
    const TAIL: usize = 25;
    let burst: usize = std::env::var("BREEZE_CLUSTER_BURST")
        .ok()
        .map_or(2000, |n| n.parse().expect("BREEZE_CLUSTER_BURST: a number"));
    let Some(cluster) =
        Cluster::new("a_node_killed_in_a_burst_loses_and_duplicates_no_acked_message")
    else {
        return;
    };
    let bus = cluster.nats.url().to_owned();
    let n1 = cluster.node(1, &bus).await;
    let n2 = cluster.node(2, &bus).await;
    let n3 = cluster.node(3, &bus).await;
    let addrs = addrs(&[&n1, &n2, &n3]);
    register(n1.addr, &["alice", "amy", "bea", "cid", "dee"]).await;

    // Node 3, the one to die, holds a sender and a recipient of each kind of pair.
    let amy = Chatter::start("amy", 1, &from(&addrs, 0));
    let bea = Chatter::start("bea", 2, &from(&addrs, 1));
    let cid = Chatter::start("cid", 3, &from(&addrs, 2));
    // After node 3 they part ways: cid to node 1, dee to node 2.
    let dee = Chatter::start("dee", 4, &servers(&addrs, [2, 1, 0]));
    let all = [&amy, &bea, &cid, &dee];
    all_logged_in(&all).await;
    let stop = Arc::new(AtomicBool::new(false));
    let pairs = [(&amy, "cid"), (&cid, "bea"), (&bea, "dee"), (&dee, "amy")];
    let started = Instant::now();
    let streams: Vec<JoinHandle<()>> = pairs
        .iter()
        .map(|(c, to)| {
            let quota = burst / pairs.len();
            stream(
                c.sender(),
                vec![*to],
                WINDOW,
                Duration::ZERO,
                quota,
                stop.clone(),
            )
        })
        .collect();
    let kill_at = burst * 2 / 5;
    until("the burst under way", SETTLE, || totals(&all).1 >= kill_at).await;

    let logins = [cid.logins(), dee.logins()];
    let killed = Instant::now();
    let acked_at_kill = totals(&all).1;
    n3.sigkill();
    let killed_ms = unix_ms();
    // What node 3's clients had sent and not yet heard back about.
    let in_flight: Vec<(UserId, u64)> = [&cid, &dee]
        .iter()
        .flat_map(|c| {
            let log = c.log.lock().unwrap();
            log.sent
                .iter()
                .filter(|s| !log.acked.contains_key(&s.id))
                .map(|s| (user(c.name), s.id))
                .collect::<Vec<_>>()
        })
        .collect();
    let moved = until("node 3's clients logged in elsewhere", SOON, || {
        cid.logins() > logins[0] && dee.logins() > logins[1]
    })
    .await;
    for s in streams {
        timeout(SETTLE, s)
            .await
            .expect("a sender finished")
            .unwrap();
    }
    let settled = settle(&all, SETTLE).await;
    let result = check(&all);
    assert_clean(&result);
    assert_eq!(result.acked, burst / pairs.len() * pairs.len());
    // Which of those the dead node had stored (their re-sends were deduplicated), by the
    // time the server stamped them.
    let stored_before = all
        .iter()
        .flat_map(|c| c.log.lock().unwrap().received.clone())
        .filter(|d| in_flight.contains(&(d.from.clone(), d.id)) && d.sent_at_ms <= killed_ms)
        .count();
    eprintln!(
        "burst of {} messages in {:?}: node 3 SIGKILLed at {acked_at_kill} acknowledged with \
         {} of its clients' messages in flight ({stored_before} of them already stored by it), \
         its clients logged in elsewhere {:?} after; 0 lost, 0 duplicated, 0 out of order \
         ({} sends put off by a server, {} of them stored after later ones) (node timeout \
         {NODE_TIMEOUT:?})",
        result.acked,
        settled - started,
        in_flight.len(),
        moved - killed,
        result.deferred.len(),
        result.resent_late.len()
    );
    // The survivors list everyone where they are now, nobody on node 3 (once its deadline
    // has passed).
    no_ghosts(&all, &addrs, &[1, 2]).await;
    eprintln!(
        "node 3's sessions gone from both survivors' who when looked at, {:?} after the \
         SIGKILL (after the burst settled: cluster.rs times the deadline itself)",
        killed.elapsed()
    );

    // The survivors chat on, past node 3's deadline: no restart or deadline is left to
    // make every session read its mailbox, so each message crosses on its own notice (amy
    // and bea are on two nodes, so some pair crosses wherever cid and dee are now).
    let tail_started = Instant::now();
    for (c, to) in &pairs {
        let sender = c.sender();
        for _ in 0..TAIL {
            sender.send(to).await;
        }
    }
    let tail_done = settle(&all, SETTLE).await;
    let after = check(&all);
    assert_clean(&after);
    assert_eq!(after.acked, result.acked + TAIL * pairs.len());
    eprintln!(
        "after the kill: {} more messages delivered once in order, {:?} after the first",
        TAIL * pairs.len(),
        tail_done - tail_started
    );
    for c in [amy, bea, cid, dee] {
        c.quit().await;
    }
    drop((n1, n2));
}
