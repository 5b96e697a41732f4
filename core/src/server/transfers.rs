//! Direct transfers between two clients (PROTOCOL.md, "Direct transfers").
//!
//! The server introduces a sender and a receiver, hands both a one-time token for the
//! direct link the clients open themselves, and, when they cannot connect, forwards the
//! chunks between them (the relay). It never stores file data: a relayed chunk goes straight
//! into the receiver's outbound queue, and the sender may run at most `window` bytes ahead of
//! the receiver's acks, so what one transfer holds on the server is bounded by the window.
//!
//! State is in memory only: a transfer lives as long as both sessions taking part in it, and
//! every way a session ends passes `conn_gone` (from `Server::forget`), so a transfer can
//! never outlive a side. A dropped transfer is resumed by offering it again: the receiver
//! answers with how much of the file it already holds.

use super::Server;
use crate::ids::{ConnId, UserId};
use crate::message::{
    DirectEndpoint, ErrorCode, MAX_DIRECT_ADDR_LEN, MAX_DIRECT_ADDRS, RequestKind, ServerMsg,
    TRANSFERS_VERSION, TransferOutcome,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// A transfer is named by its sender and the sender's id for it.
type Key = (UserId, u64);

/// Every transfer in progress on this node.
#[derive(Default)]
pub(crate) struct Transfers {
    live: BTreeMap<Key, Transfer>,
    /// How many live transfers each user takes part in, as sender or receiver.
    involved: BTreeMap<UserId, u32>,
    /// The secret tokens are derived from, from the host's entropy (`set_transfer_key`):
    /// the core draws no randomness of its own. `None`: transfers are off.
    secret: Option<[u8; 32]>,
    /// Tokens issued so far: each is derived from a new count, so none repeats.
    issued: u64,
}

impl fmt::Debug for Transfers {
    // Hand-written so the token secret never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transfers")
            .field("live", &self.live)
            .field("enabled", &self.secret.is_some())
            .field("issued", &self.issued)
            .finish()
    }
}

#[derive(Debug)]
struct Transfer {
    /// The session that offered it: only it may send chunks, and its end ends the transfer.
    sender_conn: ConnId,
    to: UserId,
    size: u64,
    direct: Option<DirectEndpoint>,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// Told to these sessions of the receiver; the first answer wins.
    Offered { told: Vec<ConnId> },
    /// Accepted by the receiver's session `conn`, which tries the direct link.
    Accepted { conn: ConnId },
    /// Relayed to `conn`: `sent` bytes of the file forwarded, the first `acked` acknowledged.
    Relaying { conn: ConnId, sent: u64, acked: u64 },
}

impl Stage {
    /// The receiver's session that accepted, once one did.
    fn receiver(&self) -> Option<ConnId> {
        match self {
            Stage::Offered { .. } => None,
            Stage::Accepted { conn } | Stage::Relaying { conn, .. } => Some(*conn),
        }
    }
}

/// What a sender offers (`ClientMsg::OfferFile`).
pub(crate) struct Offer {
    pub(crate) transfer: u64,
    pub(crate) to: UserId,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) sha256: [u8; 32],
    pub(crate) direct: Option<DirectEndpoint>,
}

impl Transfers {
    fn count(&self, user: &UserId) -> u32 {
        self.involved.get(user).copied().unwrap_or(0)
    }

    fn enter(&mut self, user: &UserId) {
        *self.involved.entry(user.clone()).or_default() += 1;
    }

    fn leave(&mut self, user: &UserId) {
        if let Some(n) = self.involved.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                self.involved.remove(user);
            }
        }
    }

    /// A new token: SHA-256 of the secret and a count never used before, so tokens are
    /// unpredictable to anyone without the secret (seeing earlier tokens does not help) and
    /// distinct.
    fn token(&mut self, secret: &[u8; 32]) -> [u8; 32] {
        self.issued += 1;
        let mut h = Sha256::new();
        h.update(b"breeze transfer token v1");
        h.update(secret);
        h.update(self.issued.to_le_bytes());
        h.finalize().into()
    }
}

/// Whether a direct endpoint is what the protocol allows: a few `ip:port` addresses.
fn endpoint_ok(direct: &DirectEndpoint) -> bool {
    direct.addrs.len() <= MAX_DIRECT_ADDRS
        && direct
            .addrs
            .iter()
            .all(|a| a.len() <= MAX_DIRECT_ADDR_LEN && a.parse::<SocketAddr>().is_ok())
}

impl Server {
    /// Turns transfers on with the secret their tokens are derived from. The host draws it
    /// from the operating system's entropy at start; a simulation passes a fixed one. Until
    /// it is set, `OfferFile` is refused (`Forbidden`).
    pub fn set_transfer_key(&mut self, secret: [u8; 32]) {
        self.transfers.secret = Some(secret);
    }

    /// How many transfers are in progress on this node.
    pub fn transfers_in_progress(&self) -> usize {
        self.transfers.live.len()
    }

    pub(super) fn offer_file(&mut self, conn: ConnId, user: UserId, offer: Offer) {
        let limits = self.cfg.transfers;
        let id = offer.transfer;
        let refuse = |s: &mut Self, code| s.error(conn, RequestKind::OfferFile, code, Some(id));
        if self.transfers.secret.is_none() || limits.per_user == 0 {
            return refuse(self, ErrorCode::Forbidden);
        }
        if offer.size > limits.max_size {
            return refuse(self, ErrorCode::TooLarge);
        }
        let Ok(name) = crate::text::file_name(&offer.name) else {
            return refuse(self, ErrorCode::InvalidName);
        };
        if offer.direct.as_ref().is_some_and(|d| !endpoint_ok(d)) {
            return refuse(self, ErrorCode::Malformed);
        }
        let Some(to) = self.interned(&offer.to) else {
            return refuse(self, ErrorCode::NoSuchUser);
        };
        let key = (user.clone(), id);
        if to == user || self.transfers.live.contains_key(&key) {
            return refuse(self, ErrorCode::Forbidden);
        }
        if self.transfers.count(&user) >= limits.per_user
            || self.transfers.count(&to) >= limits.per_user
        {
            return refuse(self, ErrorCode::TooManyTransfers);
        }
        let told: Vec<ConnId> = self.users[&to]
            .sessions
            .iter()
            .copied()
            .filter(|c| {
                self.conns
                    .get(c)
                    .is_some_and(|c| c.speaks(TRANSFERS_VERSION))
            })
            .collect();
        if told.is_empty() {
            return refuse(self, ErrorCode::ReceiverOffline);
        }
        let offered = ServerMsg::FileOffered {
            from: user.clone(),
            transfer: id,
            name,
            size: offer.size,
            sha256: offer.sha256,
        };
        for &c in &told {
            self.send(c, &offered);
        }
        self.transfers.enter(&user);
        self.transfers.enter(&to);
        self.transfers.live.insert(
            key,
            Transfer {
                sender_conn: conn,
                to,
                size: offer.size,
                direct: offer.direct,
                stage: Stage::Offered { told },
            },
        );
    }

    /// The receiver's answer to an offer it was told.
    pub(super) fn answer_file(
        &mut self,
        conn: ConnId,
        user: UserId,
        key: Key,
        accept: bool,
        offset: u64,
    ) {
        let kind = RequestKind::AnswerFile;
        let Some(t) = self.transfers.live.get(&key) else {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(key.1));
        };
        let Stage::Offered { told } = &t.stage else {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(key.1));
        };
        if t.to != user || !told.contains(&conn) {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(key.1));
        }
        if !accept {
            return self.end_transfer(&key, TransferOutcome::Declined);
        }
        if offset > t.size {
            return self.error(conn, kind, ErrorCode::TooLarge, Some(key.1));
        }
        let secret = self
            .transfers
            .secret
            .expect("invariant: offers need the secret");
        let token = self.transfers.token(&secret);
        let t = self.transfers.live.get_mut(&key).expect("looked up above");
        let Stage::Offered { told } = std::mem::replace(&mut t.stage, Stage::Accepted { conn })
        else {
            unreachable!("invariant: checked to be offered above");
        };
        let (sender_conn, to, direct) = (t.sender_conn, t.to.clone(), t.direct.clone());
        let elsewhere = ServerMsg::TransferEnded {
            sender: key.0.clone(),
            transfer: key.1,
            outcome: TransferOutcome::AnsweredElsewhere,
        };
        for c in told.into_iter().filter(|&c| c != conn) {
            self.send(c, &elsewhere);
        }
        self.send(
            sender_conn,
            &ServerMsg::TransferAccepted {
                transfer: key.1,
                to,
                offset,
                token,
            },
        );
        self.send(
            conn,
            &ServerMsg::TransferStart {
                from: key.0,
                transfer: key.1,
                offset,
                token,
                direct,
            },
        );
    }

    /// The receiver asks for the relay, from `offset`: it could not reach the sender.
    pub(super) fn relay_file(&mut self, conn: ConnId, key: Key, offset: u64) {
        let window = self.cfg.transfers.window;
        let t = self.transfers.live.get_mut(&key);
        let Some(t) = t.filter(|t| matches!(t.stage, Stage::Accepted { conn: c } if c == conn))
        else {
            return self.error(
                conn,
                RequestKind::RelayFile,
                ErrorCode::NoSuchTransfer,
                Some(key.1),
            );
        };
        if offset > t.size {
            return self.error(
                conn,
                RequestKind::RelayFile,
                ErrorCode::TooLarge,
                Some(key.1),
            );
        }
        t.stage = Stage::Relaying {
            conn,
            sent: offset,
            acked: offset,
        };
        let sender_conn = t.sender_conn;
        self.send(
            sender_conn,
            &ServerMsg::TransferRelay {
                transfer: key.1,
                offset,
                window,
            },
        );
    }

    /// A relayed chunk from the sender: forwarded at once if it is where the file stands and
    /// within the window, never kept.
    pub(super) fn transfer_chunk(
        &mut self,
        conn: ConnId,
        user: UserId,
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
    ) {
        let window = u64::from(self.cfg.transfers.window);
        let key = (user, transfer);
        let kind = RequestKind::TransferChunk;
        let Some(t) = self.transfers.live.get_mut(&key) else {
            // Chunks the sender sent before it heard of the end arrive after it: the error
            // tells it, harmlessly.
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(transfer));
        };
        let Stage::Relaying {
            conn: to,
            sent,
            acked,
        } = &mut t.stage
        else {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(transfer));
        };
        if t.sender_conn != conn {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(transfer));
        }
        let len = data.len() as u64;
        let end = offset.saturating_add(len);
        if offset != *sent || len == 0 || end > t.size || end - *acked > window {
            self.error(conn, kind, ErrorCode::TooLarge, Some(transfer));
            return self.end_transfer(&key, TransferOutcome::Broken);
        }
        *sent = end;
        let to = *to;
        self.send(
            to,
            &ServerMsg::TransferData {
                from: key.0,
                transfer,
                offset,
                data,
            },
        );
    }

    /// The receiver of a relayed transfer holds `received` bytes: the sender may go on.
    pub(super) fn transfer_ack(&mut self, conn: ConnId, key: Key, received: u64) {
        let kind = RequestKind::TransferAck;
        let Some(t) = self.transfers.live.get_mut(&key) else {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(key.1));
        };
        let Stage::Relaying {
            conn: to,
            sent,
            acked,
        } = &mut t.stage
        else {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(key.1));
        };
        if *to != conn {
            return self.error(conn, kind, ErrorCode::NoSuchTransfer, Some(key.1));
        }
        if received < *acked || received > *sent {
            self.error(conn, kind, ErrorCode::TooLarge, Some(key.1));
            return self.end_transfer(&key, TransferOutcome::Broken);
        }
        *acked = received;
        let sender_conn = t.sender_conn;
        self.send(
            sender_conn,
            &ServerMsg::TransferProgress {
                transfer: key.1,
                received,
            },
        );
    }

    /// The receiver checked the whole file's hash: the transfer is over either way.
    pub(super) fn transfer_done(&mut self, conn: ConnId, key: Key, verified: bool) {
        let accepted_here = self
            .transfers
            .live
            .get(&key)
            .is_some_and(|t| t.stage.receiver() == Some(conn));
        if !accepted_here {
            return self.error(
                conn,
                RequestKind::TransferDone,
                ErrorCode::NoSuchTransfer,
                Some(key.1),
            );
        }
        let outcome = if verified {
            TransferOutcome::Completed
        } else {
            TransferOutcome::HashMismatch
        };
        self.end_transfer(&key, outcome);
    }

    /// Either side ends the transfer.
    pub(super) fn cancel_file(&mut self, conn: ConnId, user: UserId, key: Key) {
        let part_of = self.transfers.live.get(&key).is_some_and(|t| {
            t.sender_conn == conn
                || (t.to == user
                    && match &t.stage {
                        Stage::Offered { told } => told.contains(&conn),
                        stage => stage.receiver() == Some(conn),
                    })
        });
        if !part_of {
            return self.error(
                conn,
                RequestKind::CancelFile,
                ErrorCode::NoSuchTransfer,
                Some(key.1),
            );
        }
        self.end_transfer(&key, TransferOutcome::Cancelled);
    }

    /// The session `conn` ended: every transfer it takes part in ends with `PeerLeft`, told
    /// to the other side. An offer still unanswered stays while another session of the
    /// receiver that was told it remains. Scans the transfers in progress: there are at most
    /// `per_user` per online user, and sessions end far less often than frames arrive.
    pub(super) fn transfers_conn_gone(&mut self, conn: ConnId) {
        let mut ended = Vec::new();
        for (key, t) in self.transfers.live.iter_mut() {
            let gone = match &mut t.stage {
                _ if t.sender_conn == conn => true,
                Stage::Offered { told } => {
                    told.retain(|&c| c != conn);
                    told.is_empty()
                }
                stage => stage.receiver() == Some(conn),
            };
            if gone {
                ended.push(key.clone());
            }
        }
        for key in ended {
            self.end_transfer(&key, TransferOutcome::PeerLeft);
        }
    }

    /// The one way a transfer ends: both sides (and the receiver's sessions that were told
    /// the offer) hear `outcome`, and the places it held are freed. A side already gone
    /// hears nothing (`send` skips a closed connection).
    fn end_transfer(&mut self, key: &Key, outcome: TransferOutcome) {
        let Some(t) = self.transfers.live.remove(key) else {
            return;
        };
        self.transfers.leave(&key.0);
        self.transfers.leave(&t.to);
        let ended = ServerMsg::TransferEnded {
            sender: key.0.clone(),
            transfer: key.1,
            outcome,
        };
        self.send(t.sender_conn, &ended);
        match t.stage {
            Stage::Offered { told } => {
                for c in told {
                    self.send(c, &ended);
                }
            }
            Stage::Accepted { conn } | Stage::Relaying { conn, .. } => self.send(conn, &ended),
        }
    }
}
