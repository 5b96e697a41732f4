//! The NATS bus of a Breeze cluster (CLUSTER.md): the host's cluster port
//! (`breeze_transport_tokio::ClusterBackend`) over core NATS.
//!
//! Subjects, under a cluster name so that several clusters (or test runs) share one NATS
//! without hearing each other:
//!
//! * `breeze.<cluster>.all.<from>`: to every node;
//! * `breeze.<cluster>.node.<to>.<from>`: to node `<to>` alone.
//!
//! The sender's node id is the last token, so a receiver knows it without a header; a node
//! subscribes to `breeze.<cluster>.all.*` and `breeze.<cluster>.node.<itself>.*`. Each
//! payload is one `ClusterMsg` in postcard (`breeze_core::codec`).
//!
//! Core NATS delivers at most once, in order per publisher: what the core's per-node
//! numbering expects. Nothing here makes the core task wait: `publish` puts the bytes in a
//! bounded queue (full: dropped, and the receivers' resync repairs it), a task of its own
//! publishes them, another forwards what the subscriptions bring, and the client's
//! connection events become the link state the core fences by.

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use breeze_core::NodeId;
use breeze_core::cluster::{ClusterConfig, ClusterMsg, Dest};
use breeze_transport_tokio::{ClusterBackend, ClusterInbox, ClusterSender, cluster_channel};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Messages waiting to be published; one more is dropped. A burst of user changes (a
/// thousand logins at once) fits; a backlog beyond it means NATS is not taking them anyway.
const OUTBOX: usize = 8192;
/// Messages from the bus waiting for the core task; beyond, dropped like a bus loss.
const INBOX: usize = 8192;
/// At shutdown, how long the last messages (this node's users leaving) may take to reach
/// NATS before the process goes anyway; the others' node deadline covers the rest.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The longest pause between reconnection attempts. async-nats's own backoff grows to 4 s,
/// which would keep a healed node fenced for seconds after NATS is back.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// The shortest ping interval `ping_interval` gives, whatever the timings.
const MIN_PING: Duration = Duration::from_millis(10);

/// Where and how this node joins the bus.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// The NATS server: `nats://HOST:PORT` (or `tls://…`).
    pub url: String,
    /// The cluster's name, a token of every subject: letters, digits, `-` and `_`.
    pub cluster: String,
    pub node: NodeId,
    /// The core's timings: the client's ping interval is derived from them.
    pub timing: ClusterConfig,
}

/// Why the bus could not be joined, in one line. The server's URL is not in it: it may hold
/// a password, and the caller knows it (and how to show it masked).
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "the cluster name {0:?} cannot be part of a NATS subject: use letters, digits, `-` and `_`"
    )]
    BadName(String),
    #[error("cannot connect to NATS: {source}")]
    Connect {
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject} on NATS: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// The subjects of one cluster, seen from one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    /// `breeze.<cluster>`
    root: String,
    me: NodeId,
}

impl Subjects {
    pub fn new(cluster: &str, me: NodeId) -> Result<Subjects, NatsError> {
        let valid = !cluster.is_empty()
            && cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(NatsError::BadName(cluster.to_owned()));
        }
        Ok(Subjects {
            root: format!("breeze.{cluster}"),
            me,
        })
    }

    /// Where a message from this node to `to` is published.
    pub fn to(&self, to: Dest) -> String {
        let (root, me) = (&self.root, self.me.0);
        match to {
            Dest::All => format!("{root}.all.{me}"),
            Dest::Node(node) => format!("{root}.node.{}.{me}", node.0),
        }
    }

    /// What this node subscribes to: every broadcast, and what is sent to it alone.
    pub fn subscriptions(&self) -> [String; 2] {
        let root = &self.root;
        [
            format!("{root}.all.*"),
            format!("{root}.node.{}.*", self.me.0),
        ]
    }

    /// The sender of a message that arrived on `subject`, unless it is this node itself
    /// (its own broadcasts come back to it) or the subject is not one of ours.
    pub fn sender(&self, subject: &str) -> Option<NodeId> {
        let from = subject.rsplit('.').next()?.parse().ok().map(NodeId)?;
        (from != self.me).then_some(from)
    }
}

/// The client's ping interval, chosen so that a dead link is noticed inside the fence
/// margin.
///
/// async-nats pings after `P` without traffic from the server and drops the connection when
/// a third ping falls due with two unanswered: a link cut at `c` is reported down by
/// `c + 3P`, and this node fences at `c + 3P + node_timeout − fence_margin`. The others
/// last heard it at its last heartbeat before the cut, `≥ c − heartbeat_every`, and declare
/// it dead at that plus `node_timeout`. Fencing first needs `3P + heartbeat_every <
/// fence_margin`; `P = (fence_margin − heartbeat_every) / 4` keeps one `P` of slack for
/// scheduling. With the defaults (3 s, 500 ms, 1 s): P = 125 ms, a cut is noticed within
/// 375 ms, the node fences at most 2.375 s after the cut, and nobody declares it dead
/// before 2.5 s after it.
pub fn ping_interval(timing: &ClusterConfig) -> Duration {
    (timing.fence_margin.saturating_sub(timing.heartbeat_every) / 4).max(MIN_PING)
}

/// This node on the bus: hand `backend` and `inbox` to `Host::join_cluster`, keep `link`
/// to close it after the host stopped.
#[derive(Debug)]
pub struct NatsBus {
    pub backend: NatsBackend,
    pub inbox: ClusterInbox,
    pub link: NatsLink,
}

/// Publishes the core's messages; never waits.
#[derive(Debug)]
pub struct NatsBackend {
    subjects: Subjects,
    outbox: mpsc::Sender<(String, Bytes)>,
    dropped: u64,
}

impl ClusterBackend for NatsBackend {
    fn publish(&mut self, to: Dest, msg: ClusterMsg) {
        let payload = breeze_core::codec::encode(&msg);
        if self
            .outbox
            .try_send((self.subjects.to(to), payload))
            .is_err()
        {
            // Like a loss on the bus: the receivers notice the gap in the numbering at the
            // next heartbeat and ask for a snapshot.
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    dropped = self.dropped,
                    "cluster bus: outgoing queue full, message dropped"
                );
            }
        }
    }
}

/// The connection's tasks, for a clean end.
#[derive(Debug)]
pub struct NatsLink {
    client: Client,
    publisher: JoinHandle<()>,
    receiver: JoinHandle<()>,
}

impl NatsLink {
    /// After the host stopped (its backend is dropped): lets the last queued messages reach
    /// NATS — the node's users leaving, which the others then announce at once instead of
    /// at the node deadline — and closes the connection. Bounded by `CLOSE_WAIT`.
    pub async fn close(self) {
        let NatsLink {
            client,
            publisher,
            receiver,
        } = self;
        receiver.abort();
        if tokio::time::timeout(CLOSE_WAIT, publisher).await.is_err() {
            warn!("cluster bus: the last messages did not reach NATS within {CLOSE_WAIT:?}");
        }
        drop(client);
    }
}

/// Connects to NATS, subscribes, and starts the tasks that carry messages both ways. Fails
/// if NATS cannot be reached now: a node that starts without its bus would only fence
/// itself; after the start, a lost connection is retried for ever.
pub async fn connect(cfg: &NatsConfig) -> Result<NatsBus, NatsError> {
    let subjects = Subjects::new(&cfg.cluster, cfg.node)?;
    let (sender, inbox) = cluster_channel(INBOX);
    let events = sender.clone();
    let options = ConnectOptions::new()
        .name(format!("breeze {} node {}", cfg.cluster, cfg.node.0))
        // Own broadcasts are not for this node; the server need not send them back.
        .no_echo()
        .ping_interval(ping_interval(&cfg.timing))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(50)
                .saturating_mul(attempts.min(64) as u32)
                .min(MAX_RECONNECT_DELAY)
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move { link_event(&events, event) }
        });
    let client = options
        .connect(cfg.url.as_str())
        .await
        .map_err(|source| NatsError::Connect { source })?;
    let [all, mine] = subjects.subscriptions();
    let subscribe = |subject: String| {
        let client = client.clone();
        async move {
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| NatsError::Subscribe { subject, source })
        }
    };
    let all = subscribe(all).await?;
    let mine = subscribe(mine).await?;
    // The subscriptions are in place at the server before the core says anything (its
    // first words ask the others for their state, and their answers must not be missed).
    if let Err(e) = client.flush().await {
        warn!(error = %e, "cluster bus: NATS did not confirm the subscriptions");
    }
    sender.link(true);
    let (outbox, queued) = mpsc::channel(OUTBOX);
    let publisher = tokio::spawn(publish(client.clone(), queued));
    let receiver = tokio::spawn(receive(subjects.clone(), all, mine, sender));
    info!(
        ping_interval = ?ping_interval(&cfg.timing),
        "cluster bus: connected as node {} of {}",
        cfg.node.0,
        cfg.cluster
    );
    Ok(NatsBus {
        backend: NatsBackend {
            subjects,
            outbox,
            dropped: 0,
        },
        inbox,
        link: NatsLink {
            client,
            publisher,
            receiver,
        },
    })
}

/// The client's connection events as the link state the core fences by.
fn link_event(link: &ClusterSender, event: Event) {
    match event {
        Event::Connected => {
            info!("cluster bus: connected to NATS");
            link.link(true);
        }
        Event::Disconnected | Event::Closed => {
            warn!("cluster bus: {event}");
            link.link(false);
        }
        other => warn!("cluster bus: {other}"),
    }
}

/// Publishes what the core queued, until the host drops its backend; then flushes.
async fn publish(client: Client, mut queued: mpsc::Receiver<(String, Bytes)>) {
    while let Some((subject, payload)) = queued.recv().await {
        // While disconnected, the client would buffer and send it all after the reconnect:
        // stale states and heartbeats, late. Dropped instead; the reconnect resyncs anyway.
        if client.connection_state() != State::Connected {
            continue;
        }
        if let Err(e) = client.publish(subject, payload).await {
            // Too large (a snapshot beyond NATS's max_payload) or the client is gone.
            warn!(error = %e, "cluster bus: cannot publish");
        }
    }
    if let Err(e) = client.flush().await {
        debug!(error = %e, "cluster bus: final flush");
    }
}

/// Hands what the subscriptions bring to the core, dropping what it cannot take.
async fn receive(subjects: Subjects, mut all: Subscriber, mut mine: Subscriber, to: ClusterSender) {
    let mut full = 0u64;
    loop {
        let message = tokio::select! {
            Some(m) = all.next() => m,
            Some(m) = mine.next() => m,
            else => return,
        };
        let Some(from) = subjects.sender(&message.subject) else {
            continue;
        };
        let msg = match breeze_core::codec::decode::<ClusterMsg>(&message.payload) {
            Ok(msg) => msg,
            Err(e) => {
                warn!(from = from.0, error = %e, "cluster bus: undecodable message skipped");
                continue;
            }
        };
        if !to.message(from, msg) {
            full += 1;
            if full.is_power_of_two() {
                warn!(
                    dropped = full,
                    "cluster bus: the core is behind, message dropped"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_sender_and_a_node_ignores_its_own() {
        let s = Subjects::new("prod-1", NodeId(2)).unwrap();
        assert_eq!(s.to(Dest::All), "breeze.prod-1.all.2");
        assert_eq!(s.to(Dest::Node(NodeId(7))), "breeze.prod-1.node.7.2");
        assert_eq!(
            s.subscriptions(),
            ["breeze.prod-1.all.*", "breeze.prod-1.node.2.*"]
        );
        assert_eq!(s.sender("breeze.prod-1.all.7"), Some(NodeId(7)));
        assert_eq!(s.sender("breeze.prod-1.node.2.3"), Some(NodeId(3)));
        assert_eq!(s.sender("breeze.prod-1.all.2"), None, "its own broadcast");
        assert_eq!(s.sender("breeze.prod-1.all.x"), None);
        for bad in ["", "a.b", "a b", "a*", ">"] {
            assert!(
                matches!(Subjects::new(bad, NodeId(1)), Err(NatsError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_ping_interval_notices_a_cut_inside_the_fence_margin() {
        let defaults = ClusterConfig::new(1);
        assert_eq!(ping_interval(&defaults), Duration::from_millis(125));
        for (timeout, beat, margin) in [(3000, 500, 1000), (1500, 200, 900), (1200, 100, 500)] {
            let t = ClusterConfig {
                node_timeout: Duration::from_millis(timeout),
                heartbeat_every: Duration::from_millis(beat),
                fence_margin: Duration::from_millis(margin),
                ..defaults
            };
            // Noticed by 3 pings, plus the heartbeat the others may have missed: inside the
            // margin, with room to spare.
            assert!(
                3 * ping_interval(&t) + t.heartbeat_every < t.fence_margin,
                "{t:?}"
            );
        }
    }
}
