//! 1:1 messages: durable before acknowledged, delivered to every session of the recipient,
//! kept for offline users and pushed at login in sequence order.

use super::session::{Mailbox, Phase};
use super::{Output, Pending, Server};
use crate::codec::encode;
use crate::ids::{ConnId, UserId};
use crate::message::{
    Attachment, Delivery, ErrorCode, HistoryItem, MAX_ACK_SEQS, RequestKind, ServerMsg,
};
use crate::storage::{MAX_HISTORY, MailboxPage, StorageError, StorageOp, Stored};
use bytes::Bytes;
use std::collections::BTreeMap;

/// History loads in flight at once, per connection and on the whole server; one more is
/// answered `Busy`. A `History` request is a few bytes, its answer up to `MAX_HISTORY` bodies
/// read and held in memory (megabytes): without a bound, a client pipelining requests and
/// never reading would make the server hold gigabytes, and fill the store's queue ahead of
/// everyone's messages.
pub(crate) const MAX_HISTORY_LOADS_PER_CONN: u8 = 2;
pub(crate) const MAX_HISTORY_LOADS: usize = 16;
const MAX_ATTACHMENT_LABEL: usize = 255;

impl Server {
    pub(super) fn submit_message(
        &mut self,
        conn: ConnId,
        from: UserId,
        id: u64,
        to: UserId,
        body: String,
        attachment: Option<Attachment>,
    ) {
        let too_large = body.len() > self.cfg.max_body
            || attachment.as_ref().is_some_and(|a| {
                a.data.len() > self.cfg.max_attachment as usize
                    || a.mime.len() > MAX_ATTACHMENT_LABEL
                    || a.name.len() > MAX_ATTACHMENT_LABEL
            });
        let refusal = if too_large {
            Some(ErrorCode::TooLarge)
        } else if !self.users.contains_key(&to) {
            Some(ErrorCode::NoSuchUser)
        } else if !self.has_room(conn, 1, 0) {
            // Not stored: the client sends it again with the same id (PROTOCOL.md §13.1).
            Some(ErrorCode::Busy)
        } else {
            None
        };
        if let Some(code) = refusal {
            return self.error(conn, RequestKind::Send, code, Some(id));
        }
        self.request(
            conn,
            StorageOp::StoreMessage {
                from,
                to,
                id,
                body,
                attachment,
            },
            Pending::Send { conn, id },
        );
    }

    pub(super) fn message_stored(
        &mut self,
        conn: ConnId,
        id: u64,
        r: Result<Stored, StorageError>,
    ) {
        let stored = match r {
            Ok(stored) => stored,
            Err(_) => {
                if self.conns.contains_key(&conn) {
                    self.error(conn, RequestKind::Send, ErrorCode::StorageFailed, Some(id));
                }
                return;
            }
        };
        if self.conns.contains_key(&conn) {
            self.send(
                conn,
                &ServerMsg::Sent {
                    id,
                    seq: stored.delivery.seq,
                },
            );
        }
        // A duplicate was delivered (or kept for delivery) the first time.
        if !stored.duplicate {
            self.publish_mail(&stored);
            self.deliver(&stored.to, stored.delivery, stored.prev);
        }
    }

    /// Pushes a stored message to every session of `to`; for a session still paging
    /// through its mailbox, the mailbox brings it (see `Mailbox`), so order and uniqueness
    /// hold per session.
    fn deliver(&mut self, to: &UserId, delivery: Delivery, prev: Option<u64>) {
        if self.cluster.is_some() {
            // A push could overtake a lower seq stored through another node whose news is
            // still on the bus: only a session that has the message before this one gets it
            // pushed; a read brings the others both, in seq order.
            return match prev {
                Some(prev) => self.push_mail(to, prev, delivery),
                None => self.catch_up(to, Some(delivery.seq)),
            };
        }
        let Some(u) = self.users.get(to) else { return };
        let seq = delivery.seq;
        let payload = encode(&ServerMsg::Deliver(delivery));
        for conn in &u.sessions {
            let Some(c) = self.conns.get_mut(conn) else {
                continue;
            };
            match &mut c.phase {
                Phase::Session(s) => match &mut s.mailbox {
                    Mailbox::Reading { held, .. } => held.push((seq, payload.clone())),
                    Mailbox::AwaitingAck { .. } => {}
                    Mailbox::Live { floor, .. } if seq <= *floor => {}
                    Mailbox::Live { .. } => self.out.push_back(Output::Send {
                        conn: *conn,
                        payload: payload.clone(),
                    }),
                },
                _ => unreachable!("invariant: a user's session list holds only sessions"),
            }
        }
    }

    /// Cluster: `delivery` was stored through some node, and `prev` is the seq of the
    /// recipient's message before it. A live session here whose floor is at `prev` or above
    /// has every earlier message, and no message lies between: it gets this one now, and its
    /// floor moves to it. Any other session reads its mailbox above its floor, as `catch_up`
    /// has it, so each session still gets every message once and in seq order. At 5,000
    /// msg/s over 3 nodes a read per message was a third of PostgreSQL's statements
    /// (BENCHMARKS.md, cluster).
    pub(super) fn push_mail(&mut self, to: &UserId, prev: u64, delivery: Delivery) {
        let Some(u) = self.users.get(to) else { return };
        let seq = delivery.seq;
        let conns: Vec<ConnId> = u.sessions.iter().copied().collect();
        let mut payload: Option<Bytes> = None;
        for conn in conns {
            let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
                continue;
            };
            let agent = s.agent;
            match &mut s.mailbox {
                Mailbox::Live { floor, .. } if !agent && *floor >= prev => {
                    if seq > *floor {
                        *floor = seq;
                        let payload = payload
                            .get_or_insert_with(|| encode(&ServerMsg::Deliver(delivery.clone())));
                        self.out.push_back(Output::Send {
                            conn,
                            payload: payload.clone(),
                        });
                    }
                }
                _ => self.catch_up_session(conn, Some(seq)),
            }
        }
    }

    /// Cluster: a message to `user` was stored (at `seq`, when known) through some node, or
    /// news of such messages may have been lost. Each of the user's sessions here reads its
    /// mailbox above its floor, so it gets them in seq order and each once.
    pub(super) fn catch_up(&mut self, user: &UserId, seq: Option<u64>) {
        let Some(u) = self.users.get(user) else {
            return;
        };
        let conns: Vec<ConnId> = u.sessions.iter().copied().collect();
        for conn in conns {
            self.catch_up_session(conn, seq);
        }
    }

    /// One read in flight per session, whatever the number of notices: one arriving during
    /// a read asks for one more read after it, and a session waiting for a page's ack gets
    /// the message with the next page. Without room in the work budget the read is owed and
    /// tried again at the next heartbeat.
    pub(super) fn catch_up_session(&mut self, conn: ConnId, seq: Option<u64>) {
        let room = self.has_room(conn, 1, 0);
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        let (floor, high) = (s.mailbox.floor(), s.mailbox.high());
        if s.agent || seq.is_some_and(|seq| seq <= floor) {
            return;
        }
        match &mut s.mailbox {
            Mailbox::Reading { again, .. } => *again = true,
            Mailbox::AwaitingAck { .. } => {}
            Mailbox::Live { .. } if room => {
                s.mailbox = Mailbox::Reading {
                    floor,
                    high,
                    offline: None,
                    held: Vec::new(),
                    again: false,
                };
                let user = s.user.clone();
                self.read_mailbox(conn, user, floor, high);
            }
            Mailbox::Live { .. } => self.owe_catch_up(conn),
        }
    }

    /// Reads the session's mailbox above `after`; `all_above` is its login's high-water mark
    /// (`Mailbox`), `None` for the login's first read.
    pub(super) fn read_mailbox(
        &mut self,
        conn: ConnId,
        user: UserId,
        after: u64,
        all_above: Option<u64>,
    ) {
        let op = StorageOp::LoadMailbox {
            user,
            after,
            all_above,
            limit: self.cfg.mailbox_page,
            max_bytes: self.cfg.mailbox_page_bytes,
        };
        self.request(conn, op, Pending::Mailbox { conn });
    }

    pub(super) fn mailbox_loaded(&mut self, conn: ConnId, r: Result<MailboxPage, StorageError>) {
        // This read's place is free again (released before the result is handled).
        let room = self.has_room(conn, 1, 0);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Phase::Session(s) = &mut c.phase else {
            return;
        };
        let Mailbox::Reading {
            floor,
            high,
            offline,
            held,
            again,
        } = &mut s.mailbox
        else {
            return;
        };
        let (mut floor, mut high, mut offline, held, again) =
            (*floor, *high, *offline, std::mem::take(held), *again);
        let (page, failed) = match r {
            Ok(page) => (page, false),
            // The messages stay stored; the next login delivers them (in a cluster, the
            // read owed to the next heartbeat).
            Err(_) => (MailboxPage::default(), true),
        };
        if offline == Some(0) && page.waiting > 0 {
            // The login's first page: say how many wait before the first of them.
            self.out.push_back(Output::Send {
                conn,
                payload: encode(&ServerMsg::OfflineWaiting {
                    count: page.waiting,
                }),
            });
        }
        if !failed {
            // The first read that answers fixes the mark for the session's life.
            high = high.or(Some(page.high));
        }
        for d in page.messages {
            if d.seq > floor {
                floor = d.seq;
                if let Some(n) = offline.as_mut() {
                    *n += 1;
                }
                self.out.push_back(Output::Send {
                    conn,
                    payload: encode(&ServerMsg::Deliver(d)),
                });
            }
        }
        if page.more && !failed {
            // What was held is above this page and was reported before the next read: the
            // next page brings it.
            s.mailbox = Mailbox::AwaitingAck {
                floor,
                high,
                offline,
                last: floor,
            };
            return;
        }
        if again && !failed && room {
            // Stored through another node while this page was read: read on, in the place
            // this read held.
            s.mailbox = Mailbox::Reading {
                floor,
                high,
                offline,
                held,
                again: false,
            };
            let user = s.user.clone();
            self.read_mailbox(conn, user, floor, high);
            return;
        }
        let mut late: BTreeMap<u64, Bytes> = BTreeMap::new();
        for (seq, payload) in held.into_iter().filter(|(seq, _)| *seq > floor) {
            late.entry(seq).or_insert(payload);
        }
        if !failed {
            // Every message at or below the mark was paged or acknowledged before its page
            // was read: none is owed any more, so a notice there needs no read.
            floor = floor.max(high.unwrap_or(0));
        }
        s.mailbox = Mailbox::Live { floor, high };
        for payload in late.into_values() {
            self.out.push_back(Output::Send { conn, payload });
        }
        if (failed || again) && self.cluster.is_some() {
            // Messages stored through other nodes may wait: read again at the next
            // heartbeat rather than at the next login.
            self.owe_catch_up(conn);
        }
        let Some(count) = offline else { return };
        if failed {
            self.error(conn, RequestKind::Login, ErrorCode::StorageFailed, None);
        }
        self.send(conn, &ServerMsg::OfflineDone { count });
        // The login's 1:1 mail is out: its rooms follow (a version-2 connection's).
        self.start_rooms(conn);
    }

    pub(super) fn ack(&mut self, conn: ConnId, user: UserId, seqs: Vec<u64>) {
        if seqs.len() > MAX_ACK_SEQS {
            return self.error(conn, RequestKind::Ack, ErrorCode::TooLarge, None);
        }
        if seqs.is_empty() {
            return;
        }
        let Some(Phase::Session(session)) = self.conns.get(&conn).map(|c| &c.phase) else {
            return;
        };
        let next_page = match session.mailbox {
            Mailbox::AwaitingAck {
                floor,
                high,
                offline,
                last,
            } if seqs.contains(&last) => Some((floor, high, offline)),
            _ => None,
        };
        let marking = session.marking;
        // While a mark is in flight these wait for it, bounded like one Ack frame.
        let joins = marking && session.acks_waiting.len() + seqs.len() <= MAX_ACK_SEQS;
        // The mark (unless it joins the one in flight) and, if this acks a page, the next
        // page's read: both or neither, so a refused ack leaves the mailbox waiting for it
        // to come again.
        let places = u32::from(!marking) + u32::from(next_page.is_some());
        if (marking && !joins) || !self.has_room(conn, places, 0) {
            return self.error(conn, RequestKind::Ack, ErrorCode::Busy, None);
        }
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        if let Some((floor, high, offline)) = next_page {
            s.mailbox = Mailbox::Reading {
                floor,
                high,
                offline,
                held: Vec::new(),
                again: false,
            };
        }
        if joins {
            s.acks_waiting.extend(seqs);
        } else {
            s.marking = true;
            self.mark_delivered(conn, user.clone(), seqs);
        }
        if let Some((after, high, _)) = next_page {
            self.read_mailbox(conn, user, after, high);
        }
    }

    fn mark_delivered(&mut self, conn: ConnId, user: UserId, seqs: Vec<u64>) {
        self.request(
            conn,
            StorageOp::MarkDelivered { user, seqs },
            Pending::MarkDelivered { conn },
        );
    }

    /// A frame other than an ack came while acks wait for the mark in flight: they go now,
    /// beside it, so that a session's writes reach the store in the order of its frames. A
    /// client that sees the answer to a later request (`ContactsChanged`, `Sent`) then knows
    /// its earlier acks are stored, and a crash after it cannot deliver those messages again.
    /// Without room in the work budget they keep waiting.
    pub(super) fn flush_waiting_acks(&mut self, conn: ConnId) {
        // Called for every frame: the common case (nothing waits) costs one lookup.
        let waiting = matches!(
            self.conns.get(&conn).map(|c| &c.phase),
            Some(Phase::Session(s)) if !s.acks_waiting.is_empty()
        );
        if !waiting || !self.has_room(conn, 1, 0) {
            return;
        }
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        let seqs = std::mem::take(&mut s.acks_waiting);
        let user = s.user.clone();
        self.mark_delivered(conn, user, seqs);
    }

    /// A mark is answered (its place already free): the acks that waited for it go next.
    pub(super) fn delivered_marked(&mut self, conn: ConnId) {
        let room = self.has_room(conn, 1, 0);
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        let seqs = std::mem::take(&mut s.acks_waiting);
        // Without room the waiting acks are dropped, as a crash would lose them: the
        // messages stay undelivered and come again at the next login (PROTOCOL.md §13.2).
        s.marking = room && !seqs.is_empty();
        if s.marking {
            let user = s.user.clone();
            self.mark_delivered(conn, user, seqs);
        }
    }

    pub(super) fn history(
        &mut self,
        conn: ConnId,
        user: UserId,
        with: UserId,
        before: Option<u64>,
        limit: u16,
    ) {
        if !self.users.contains_key(&with) {
            return self.error(conn, RequestKind::History, ErrorCode::NoSuchUser, None);
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.history_loads >= MAX_HISTORY_LOADS_PER_CONN
            || self.history_loads >= MAX_HISTORY_LOADS
            || !self.has_room(conn, 1, 0)
        {
            return self.error(conn, RequestKind::History, ErrorCode::Busy, None);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.history_loads += 1;
        }
        self.history_loads += 1;
        let limit = limit.min(MAX_HISTORY);
        self.request(
            conn,
            StorageOp::LoadHistory {
                user,
                with: with.clone(),
                before,
                limit,
            },
            Pending::History { conn, with },
        );
    }

    pub(super) fn history_loaded(
        &mut self,
        conn: ConnId,
        with: UserId,
        r: Result<Vec<HistoryItem>, StorageError>,
    ) {
        self.history_loads -= 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.history_loads -= 1;
        match r {
            Ok(items) => {
                let payload = fitting_page(items, self.cfg.max_frame, |items| ServerMsg::History {
                    with: with.clone(),
                    items,
                });
                self.out.push_back(Output::Send { conn, payload });
            }
            Err(_) => self.error(conn, RequestKind::History, ErrorCode::StorageFailed, None),
        }
    }
}

/// A history page as one frame within `max_frame`: halved from its oldest end until it fits
/// (newest first, so the newest stay); the client pages on from the oldest item it got.
pub(super) fn fitting_page<T: Clone>(
    mut items: Vec<T>,
    max_frame: u32,
    frame: impl Fn(Vec<T>) -> ServerMsg,
) -> Bytes {
    let mut payload = encode(&frame(items.clone()));
    while payload.len() > max_frame as usize && items.len() > 1 {
        items.truncate(items.len() / 2);
        payload = encode(&frame(items.clone()));
    }
    payload
}
