//! The bus model: what core NATS does to the nodes' messages, on turmoil's clock.
//!
//! Core NATS is at-most-once and keeps each publisher's order; it loses what is published
//! while a node's connection is down and what is meant for a node that is not connected.
//! The model does exactly that, and nothing kinder:
//!
//! * `publish` draws, per recipient, whether the message is lost (the seed's loss rate) and
//!   a small delay; a message never overtakes an earlier one from the same publisher to the
//!   same recipient (its due time is at least the previous one's);
//! * a node's link can be cut: what it publishes is lost, and so is whatever comes due for
//!   it while cut (messages already on the wire when it publishes were accepted by the
//!   server and still reach the others). The node's adapter hears of the cut after a lag
//!   (NATS notices a dead connection by its pings), reported through
//!   `ClusterSender::link`; a heal is reported at once (the reconnect is the adapter's own);
//! * a node that crashes loses what was on its way to it, and a restarted node attaches
//!   afresh.
//!
//! Deliveries are made by a task on the receiving node's host that sleeps, in simulated
//! time, until the next message is due, so a crash of that host ends it. Every draw comes
//! from one generator seeded by the plan, drawn in publish order, which turmoil makes the
//! same on every run of a seed.

use crate::oracle::now;
use crate::plan::Rng;
use breeze_core::NodeId;
use breeze_core::cluster::{ClusterMsg, Dest};
use breeze_transport_tokio::{ClusterBackend, ClusterInbox, ClusterSender, cluster_channel};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How many messages a node's inbox holds before the adapter drops (as a slow NATS
/// subscriber does). Large: the model's losses are the drawn ones.
const INBOX: usize = 4096;

/// What the bus did, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub published: u64,
    pub delivered: u64,
    /// Lost to the loss rate.
    pub dropped: u64,
    /// Lost because a link was cut, or the recipient was down.
    pub cut_off: u64,
}

/// Something due at a node.
#[derive(Debug)]
enum Arrival {
    Message(NodeId, ClusterMsg),
    Link(bool),
}

#[derive(Debug, Default)]
struct Port {
    /// The current incarnation's adapter end; `None` while the node is down.
    sender: Option<ClusterSender>,
    wake: Arc<Notify>,
    cut: bool,
    /// Keyed by (due, publish order): per-publisher order is kept by the due times.
    due: BTreeMap<(Duration, u64), Arrival>,
    /// The due time of the last message from each node to this one.
    last_from: BTreeMap<usize, Duration>,
    /// The due time of the last link report, so that reports keep their order.
    last_link: Duration,
    /// When this node last published with its link up.
    last_published: Option<Duration>,
}

#[derive(Debug)]
struct State {
    ports: Vec<Port>,
    rng: Rng,
    loss: u8,
    delay: (Duration, Duration),
    max_lag: Duration,
    order: u64,
    stats: BusStats,
}

/// The bus every node of one simulation shares.
#[derive(Debug, Clone)]
pub struct Bus {
    state: Arc<Mutex<State>>,
}

impl Bus {
    /// A bus for `nodes` nodes delivering after `delay` (a range), reporting a cut to the
    /// cut node's adapter after up to `max_lag`.
    pub fn new(nodes: usize, seed: u64, delay: (Duration, Duration), max_lag: Duration) -> Bus {
        Bus {
            state: Arc::new(Mutex::new(State {
                ports: (0..nodes).map(|_| Port::default()).collect(),
                rng: Rng::new(seed ^ 0xB05_0000_0000_0000),
                loss: 0,
                delay,
                max_lag,
                order: 0,
                stats: BusStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn stats(&self) -> BusStats {
        self.lock().stats
    }

    /// Percent of messages lost from now on.
    pub fn set_loss(&self, percent: u8) {
        self.lock().loss = percent.min(100);
    }

    /// Node `node`'s process starts: its adapter connects (or finds its link cut). Returns
    /// the backend and inbox for `Host::join_cluster`, and the delivery task to spawn on the
    /// node's host.
    pub fn attach(
        &self,
        node: usize,
    ) -> (
        BusPublisher,
        ClusterInbox,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (sender, inbox) = cluster_channel(INBOX);
        let wake = {
            let mut s = self.lock();
            let port = &mut s.ports[node];
            port.due.clear();
            // The others know nothing of this process until it publishes.
            port.last_published = None;
            // The core starts believing its link is up: say how it really is.
            sender.link(!port.cut);
            port.sender = Some(sender.clone());
            port.wake = Arc::new(Notify::new());
            port.wake.clone()
        };
        let publisher = BusPublisher {
            bus: self.clone(),
            node,
        };
        (publisher, inbox, self.clone().deliver(node, sender, wake))
    }

    /// Node `node`'s process died: whatever was on its way to it is lost.
    pub fn detach(&self, node: usize) {
        let mut s = self.lock();
        let port = &mut s.ports[node];
        port.sender = None;
        let lost = port.due.len() as u64;
        port.due.clear();
        s.stats.cut_off += lost;
    }

    /// Cuts node `node`'s link at `at`; returns when its adapter will notice.
    pub fn cut(&self, node: usize, at: Duration) -> Duration {
        let mut s = self.lock();
        let lag = {
            let max = s.max_lag;
            s.rng.between(Duration::ZERO, max)
        };
        let port = &mut s.ports[node];
        port.cut = true;
        let due = (at + lag).max(port.last_link);
        port.last_link = due;
        let order = s.order;
        s.order += 1;
        let port = &mut s.ports[node];
        port.due.insert((due, order), Arrival::Link(false));
        port.wake.notify_one();
        due
    }

    /// Heals node `node`'s link at `at`; its adapter reconnects at once.
    pub fn heal(&self, node: usize, at: Duration) {
        let mut s = self.lock();
        let order = s.order;
        s.order += 1;
        let port = &mut s.ports[node];
        port.cut = false;
        let due = at.max(port.last_link);
        port.last_link = due;
        port.due.insert((due, order), Arrival::Link(true));
        port.wake.notify_one();
    }

    pub fn is_cut(&self, node: usize) -> bool {
        self.lock().ports[node].cut
    }

    /// The earliest instant another node can stop hearing from `node` — its last message
    /// published with the link up, arriving as early as the bus allows — had the bus lost
    /// nothing. A peer's deadline runs `node_timeout` from then.
    pub fn last_heard_at_best(&self, node: usize) -> Option<Duration> {
        let s = self.lock();
        s.ports[node].last_published.map(|at| at + s.delay.0)
    }

    fn publish(&self, from: usize, to: Dest, msg: ClusterMsg) {
        let at = now();
        let mut s = self.lock();
        s.stats.published += 1;
        if s.ports[from].cut {
            s.stats.cut_off += 1;
            return;
        }
        s.ports[from].last_published = Some(at);
        let targets: Vec<usize> = match to {
            Dest::All => (0..s.ports.len()).filter(|&n| n != from).collect(),
            Dest::Node(NodeId(n)) => vec![n as usize],
        };
        for to in targets {
            if to >= s.ports.len() {
                continue;
            }
            let loss = u64::from(s.loss);
            if loss > 0 && s.rng.chance(loss) {
                s.stats.dropped += 1;
                continue;
            }
            let (lo, hi) = s.delay;
            let delay = s.rng.between(lo, hi);
            let order = s.order;
            s.order += 1;
            let port = &mut s.ports[to];
            if port.sender.is_none() {
                // Nobody subscribed: NATS drops it.
                s.stats.cut_off += 1;
                continue;
            }
            let last = port.last_from.get(&from).copied().unwrap_or_default();
            let due = (at + delay).max(last);
            port.last_from.insert(from, due);
            port.due.insert(
                (due, order),
                Arrival::Message(NodeId(from as u32), msg.clone()),
            );
            port.wake.notify_one();
        }
    }

    /// Hands node `node`'s arrivals to its adapter end as they come due.
    async fn deliver(self, node: usize, sender: ClusterSender, wake: Arc<Notify>) {
        loop {
            let next = self.lock().ports[node].due.keys().next().map(|k| k.0);
            match next {
                // A publish in between leaves a permit: the wake-up is not lost.
                None => wake.notified().await,
                Some(due) => {
                    tokio::select! {
                        biased;
                        () = wake.notified() => {}
                        () = tokio::time::sleep(due.saturating_sub(now())) => {}
                    }
                }
            }
            let at = now();
            loop {
                let arrival = {
                    let mut s = self.lock();
                    let port = &mut s.ports[node];
                    match port.due.first_key_value() {
                        Some((&(due, _), _)) if due <= at => {
                            let cut = port.cut;
                            let arrival = port.due.pop_first().map(|(_, a)| a);
                            match arrival {
                                Some(Arrival::Message(..)) if cut => {
                                    s.stats.cut_off += 1;
                                    continue;
                                }
                                Some(Arrival::Message(..)) => s.stats.delivered += 1,
                                _ => {}
                            }
                            arrival
                        }
                        _ => None,
                    }
                };
                match arrival {
                    None => break,
                    Some(Arrival::Link(up)) => sender.link(up),
                    Some(Arrival::Message(from, msg)) => {
                        if !sender.message(from, msg) {
                            self.lock().stats.dropped += 1;
                        }
                    }
                }
            }
        }
    }
}

/// One node's publishing end of the bus.
#[derive(Debug)]
pub struct BusPublisher {
    bus: Bus,
    node: usize,
}

impl ClusterBackend for BusPublisher {
    fn publish(&mut self, to: Dest, msg: ClusterMsg) {
        self.bus.publish(self.node, to, msg);
    }
}
