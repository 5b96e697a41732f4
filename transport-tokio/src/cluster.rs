//! The host's side of the cluster port (CLUSTER.md), as `storage.rs` is for storage.
//!
//! The core task never waits for the bus: it hands each `Output::Cluster` to a
//! `ClusterBackend` and goes on. What the bus brings — messages from other nodes, and the
//! state of this node's link — comes back through a `ClusterInbox` that the host selects on
//! beside its connections. A NATS adapter implements it with one subject per node plus a
//! broadcast subject (`publish` never waits: core NATS is at-most-once, and so may this
//! be), forwards its subscriptions' messages with `ClusterSender::message`, and reports its
//! connection events (disconnected, reconnected) with `ClusterSender::link`.

use breeze_core::NodeId;
use breeze_core::cluster::{ClusterMsg, Dest};
use tokio::sync::{mpsc, watch};

/// Publishes the core's bus messages.
///
/// `publish` must not block: it runs on the core task. It may drop a message (a full
/// buffer, a link that is down): the core's per-node numbering notices the gap and resyncs.
pub trait ClusterBackend: Send + 'static {
    fn publish(&mut self, to: Dest, msg: ClusterMsg);
}

/// What the bus brought, for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    Message {
        from: NodeId,
        msg: ClusterMsg,
    },
    /// This node's link to the bus came up or went down.
    Link {
        up: bool,
    },
}

/// Where a bus adapter reports what arrives.
#[derive(Debug, Clone)]
pub struct ClusterSender {
    messages: mpsc::Sender<(NodeId, ClusterMsg)>,
    link: watch::Sender<bool>,
}

impl ClusterSender {
    /// Hands one message from `from` to the core without waiting. A full queue drops it, as
    /// the bus itself may: the numbering catches the loss. Returns `false` when the message
    /// was not taken.
    pub fn message(&self, from: NodeId, msg: ClusterMsg) -> bool {
        self.messages.try_send((from, msg)).is_ok()
    }

    /// The link's state. Never lost: a watch keeps the latest, so a flap the core task was
    /// too busy to see still ends in the right state.
    pub fn link(&self, up: bool) {
        self.link.send_replace(up);
    }
}

/// The host's end; hand it to `Host::join_cluster`.
#[derive(Debug)]
pub struct ClusterInbox {
    messages: mpsc::Receiver<(NodeId, ClusterMsg)>,
    link: watch::Receiver<bool>,
}

impl ClusterInbox {
    /// The next thing the bus brought; a link change goes before queued messages. Pends
    /// forever once the adapter is gone (the node then fences itself at its deadline).
    pub async fn next(&mut self) -> ClusterEvent {
        tokio::select! {
            biased;
            Ok(()) = self.link.changed() => ClusterEvent::Link { up: *self.link.borrow_and_update() },
            Some((from, msg)) = self.messages.recv() => ClusterEvent::Message { from, msg },
            else => std::future::pending().await,
        }
    }

    /// A message already waiting, if any (to batch a burst into one drain).
    pub fn try_next(&mut self) -> Option<ClusterEvent> {
        if self.link.has_changed().unwrap_or(false) {
            return Some(ClusterEvent::Link {
                up: *self.link.borrow_and_update(),
            });
        }
        self.messages
            .try_recv()
            .ok()
            .map(|(from, msg)| ClusterEvent::Message { from, msg })
    }
}

/// A channel from a bus adapter to the host, holding up to `capacity` messages. The link
/// starts down: the adapter says when it is connected.
pub fn cluster_channel(capacity: usize) -> (ClusterSender, ClusterInbox) {
    let (mtx, mrx) = mpsc::channel(capacity.max(1));
    let (ltx, lrx) = watch::channel(false);
    (
        ClusterSender {
            messages: mtx,
            link: ltx,
        },
        ClusterInbox {
            messages: mrx,
            link: lrx,
        },
    )
}

/// Awaits the next bus event, or forever when the host has no cluster.
pub(crate) async fn next_event(inbox: &mut Option<ClusterInbox>) -> ClusterEvent {
    match inbox {
        Some(inbox) => inbox.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::cluster::Body;

    fn beat(seq: u64) -> ClusterMsg {
        ClusterMsg {
            epoch: 1,
            seq,
            body: Body::Heartbeat,
        }
    }

    #[tokio::test]
    async fn the_link_state_goes_first_and_a_full_queue_drops_like_the_bus() {
        let (tx, mut rx) = cluster_channel(2);
        assert!(tx.message(NodeId(1), beat(1)));
        assert!(tx.message(NodeId(1), beat(2)));
        assert!(
            !tx.message(NodeId(1), beat(3)),
            "full: dropped, not waited for"
        );
        // Down then up while the core was busy: it sees the final state once.
        tx.link(false);
        tx.link(true);
        assert_eq!(rx.next().await, ClusterEvent::Link { up: true });
        assert_eq!(
            rx.next().await,
            ClusterEvent::Message {
                from: NodeId(1),
                msg: beat(1)
            }
        );
        assert_eq!(
            rx.try_next(),
            Some(ClusterEvent::Message {
                from: NodeId(1),
                msg: beat(2)
            })
        );
        assert_eq!(rx.try_next(), None);
    }
}
