//! Admission into one host: one connection-id space and one connection limit, shared by
//! every listener and transport that feeds it.
//!
//! A TCP listener, a TLS one and a WebSocket upgrade handler all hand their connections to
//! the same [`Acceptor`], so their `ConnId`s never collide and `max_connections` counts them
//! all together.

use crate::connection::{self, ConnSettings, Inbound, Shared};
use crate::frames::Framed;
use crate::in_place::Tally;
use crate::link::LinkHandle;
use breeze_core::ConnId;
use breeze_core::message::CloseReason;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{Semaphore, mpsc};
use tracing::debug;

/// What became of a connection offered to [`Acceptor::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It is the host's now, under this id.
    Accepted(ConnId),
    /// It was told `Bye{reason}` (when refusals were not themselves too many) and closed;
    /// the core never heard of it.
    Refused(CloseReason),
}

/// Hands connections to a running host. Cheap to clone; every clone admits into the same
/// host, under the same limit.
#[derive(Clone)]
pub struct Acceptor {
    gate: Arc<Gate>,
}

struct Gate {
    next_conn: AtomicU64,
    /// One permit per open connection, held by its task until the socket is really closed:
    /// connections still closing hold memory, so they count.
    permits: Arc<Semaphore>,
    slots: u32,
    /// Refused connections being told why at once; beyond that they are just dropped, so a
    /// connection flood cannot make the refusals themselves a cost.
    refusals: Arc<Semaphore>,
    /// Set once the host shuts down: later arrivals are refused with `ServerShutdown`.
    closing: AtomicBool,
    inbound: mpsc::Sender<Inbound>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("slots", &self.gate.slots)
            .field("free", &self.gate.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    pub(crate) fn new(
        max_connections: usize,
        max_refusals: usize,
        inbound: mpsc::Sender<Inbound>,
        settings: ConnSettings,
    ) -> Acceptor {
        let slots = max_connections
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize) as u32;
        Acceptor {
            gate: Arc::new(Gate {
                next_conn: AtomicU64::new(0),
                permits: Arc::new(Semaphore::new(slots as usize)),
                slots,
                refusals: Arc::new(Semaphore::new(max_refusals)),
                closing: AtomicBool::new(false),
                inbound,
                shared: Arc::new(Shared {
                    settings,
                    tally: Tally::default(),
                }),
            }),
        }
    }

    /// Offers the host a new connection from `peer`. Within the limit it gets the next
    /// `ConnId`, the core hears of it, and a task of its own drives it until it closes;
    /// beyond the limit (or once the host is shutting down) it is refused. Waits only while
    /// the core task's inbound queue is full (back-pressure on accepting).
    pub async fn admit<F: Framed>(&self, peer: SocketAddr, frames: F) -> Admission {
        let gate = &self.gate;
        let refusal = if gate.closing.load(Ordering::Acquire) {
            Some(CloseReason::ServerShutdown)
        } else {
            None
        };
        let permit = match refusal {
            Some(_) => None,
            None => gate.permits.clone().try_acquire_owned().ok(),
        };
        let Some(permit) = permit else {
            let reason = refusal.unwrap_or(CloseReason::ServerFull);
            debug!(%peer, "refusing connection: {reason}");
            if let Ok(slot) = gate.refusals.clone().try_acquire_owned() {
                let settings = gate.shared.settings;
                tokio::spawn(async move {
                    connection::refuse(frames, reason, settings).await;
                    drop(slot);
                });
            }
            return Admission::Refused(reason);
        };
        // Relaxed is enough: the counter only has to hand out each value once.
        let conn = ConnId(gate.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
        let (handle, link) = LinkHandle::new();
        let accepted = Inbound::Accepted {
            conn,
            peer,
            link: handle,
        };
        // Sent before the connection's task starts, so it precedes all of its frames.
        if gate.inbound.send(accepted).await.is_err() {
            return Admission::Refused(CloseReason::ServerShutdown);
        }
        tokio::spawn(connection::drive(
            conn,
            frames,
            link,
            gate.inbound.clone(),
            gate.shared.clone(),
            permit,
        ));
        Admission::Accepted(conn)
    }

    /// Pings answered in place by the connections admitted here.
    pub(crate) fn tally(&self) -> &Tally {
        &self.gate.shared.tally
    }

    /// Refuses every later arrival with `ServerShutdown`.
    pub(crate) fn close(&self) {
        self.gate.closing.store(true, Ordering::Release);
    }

    /// Resolves once every admitted connection has closed its socket.
    pub(crate) async fn all_closed(&self) {
        let _ = self.gate.permits.acquire_many(self.gate.slots).await;
    }
}
