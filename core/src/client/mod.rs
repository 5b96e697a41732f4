//! The client state machine: connect, handshake, log in, stay alive, reconnect.
//!
//! Sans-IO like the server: the host opens the socket when asked (`ClientOutput::Connect`),
//! reports what happened (`handle_connected`, `handle_frame`, `handle_disconnected`), wakes the
//! client at `poll_timeout()`, and performs `poll_output()` in order. The application talks to
//! the same value: commands in (`send_message`, `set_status`, …), `poll_event()` out.
//!
//! What survives a reconnect: the outbox (re-sent with the same ids, the server dedupes), the
//! desired status (re-asserted by `Login`), contact changes made while offline, the resume
//! token, and the set of delivered seqs (so a redelivery never reaches the application twice).
//!
//! Deliveries are acknowledged only once the application has them ([`AckMode`]): when
//! `poll_event` returns the `Message` (the default), or when the application calls
//! [`Client::ack`]. Acks wait in the client until the host next calls `poll_output`, so a host
//! that drains `poll_event` and then `poll_output` sends everything taken together as one
//! `Ack` frame. An ack the application gives while no session is up is not queued: the
//! server delivers the message again at the next login, and the client acks the repeat itself.
//!
//! Commands that only make sense online — `request_history`, `admin_who`, `change_password` —
//! are not queued while not logged in: they answer at once with
//! `ClientEvent::Error { code: NotLoggedIn }`, since a stale history page or a password change
//! landing minutes later would surprise the user more than a refusal.

mod backoff;
mod config;
mod connection;
mod dedupe;
mod event;
mod groups;
mod outbox;
#[cfg(test)]
mod tests;
mod view;

pub use backoff::jitter_bounds;
pub use config::{AckMode, ClientConfig, Mode};
pub use event::{AdminAction, ClientEvent, ClientOutput, ClientState, StopReason};
pub use groups::{DEFAULT_GROUP_NAME, GroupBook, GroupListing};

use crate::codec::{self, encode};
use crate::ids::UserId;
use crate::message::{
    Attachment, ClientMsg, CloseReason, ContactGroup, Credential, ErrorCode, GROUPS_VERSION,
    GroupEdit, MAGIC, MAX_ACK_SEQS, MAX_CLIENT_NAME, PROTOCOL_VERSION, Presence, PresenceEntry,
    ProfileCard, ROOMS_VERSION, RequestKind, RoomMember, RoomRole, ServerMsg, Status, WatchScope,
};
use crate::time::{Duration, Instant};
use backoff::Backoff;
use connection::{Connection, Heartbeat, LoginStep, Stage};
use dedupe::{Arrival, REMEMBERED_SEQS, SeenSeqs};
use outbox::{Outbox, Outgoing, Target};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use view::PresenceView;

/// How long a message refused with `Busy` or `StorageFailed` waits before it is sent again:
/// long enough for a server's budget to drain (its storage commits take milliseconds), short
/// enough that a user barely notices.
pub const RESEND_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Phase {
    Disconnected { retry_at: Instant },
    Connecting { login_deadline: Instant },
    Connected(Connection),
    Stopped(StopReason),
}

/// Whether the host still holds a socket the client must tell it to close.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Socket {
    Open,
    ClosedByHost,
}

/// One user's connection to a Breeze server, across reconnects.
pub struct Client {
    user: UserId,
    password: String,
    client_name: String,
    mode: Mode,
    connect_timeout: Duration,
    acks: AckMode,
    phase: Phase,
    backoff: Backoff,
    token: Option<Vec<u8>>,
    /// A `Register` went out on a connection that died before the answer: the account may be
    /// ours already, so `UserTaken` is checked with a password login before giving up.
    register_in_doubt: bool,
    /// New passwords of `ChangePassword`s in flight, oldest first (answers come in order).
    password_changes: VecDeque<String>,
    /// A password change whose answer was lost with its connection: tried when the known
    /// password is refused.
    password_in_doubt: Option<String>,
    /// Desired, and as last confirmed: re-asserted at every login.
    status: Status,
    /// `SetStatus` requests on this connection whose `OwnStatus` echo has not come back: an
    /// echo of an older choice must not overwrite a newer one still on its way.
    status_in_flight: u32,
    contacts: BTreeSet<UserId>,
    /// Contact changes the server has not confirmed yet; `true` adds. The last change per
    /// user wins. A change sent on a connection that died is sent again after the next login,
    /// as outbox messages are, until the server's list agrees.
    contact_changes: BTreeMap<UserId, bool>,
    /// Contact requests sent on this connection, oldest first, each with the users it names:
    /// the server answers each with `ContactsChanged` or an `Error` naming no user, so
    /// answers are matched by order.
    contacts_in_flight: VecDeque<Vec<UserId>>,
    /// Whose presence the server shows (from `Welcome`): under `Contacts`, a removed contact
    /// leaves the view.
    scope: WatchScope,
    /// The protocol version the server agreed in `Welcome` (0 before it): requests a later
    /// version added are not sent to a server that does not speak them.
    version: u16,
    /// The contact groups as the server last described them (version 2 servers only).
    groups: GroupBook,
    view: PresenceView,
    /// The newest card known per user (version 2): kept across reconnects, since a card is
    /// only ever replaced by a newer one (`rev`).
    profiles: BTreeMap<UserId, ProfileCard>,
    seen: SeenSeqs,
    outbox: Outbox,
    /// Ids of outbox messages the server refused for now (`Busy`, `StorageFailed`), to be
    /// sent again at `resend_at` on the same connection rather than only at the next login.
    refused_for_now: BTreeSet<u64>,
    resend_at: Option<Instant>,
    /// Seqs the application has (or that are repeats of ones it acked), to be sent as one
    /// `Ack` by the next `poll_output`. Only filled while logged in; emptied when the
    /// connection ends.
    pending_acks: Vec<u64>,
    /// The latest time known when a pending ack was noted: sending it counts as sending from
    /// then on for the ping timer (never later than the truth, so a ping is never late).
    acks_noted_at: Instant,
    next_nonce: u64,
    /// When the server said the next login would be considered (`Throttled`).
    not_before: Option<Instant>,
    outputs: VecDeque<ClientOutput>,
    events: VecDeque<ClientEvent>,
    /// Rooms the user is in (version 2), as the last `RoomMembers` frames drew them.
    rooms: BTreeMap<u64, RoomView>,
    /// Per room, the highest seq told to the application: the server sends each room in
    /// seq order and repeats only what was not acked, so a seq at or below it is a repeat.
    /// Kept across reconnects and leaving (a room id is never reused).
    rooms_told: BTreeMap<u64, u64>,
    /// Per room, the highest seq the application acked.
    rooms_acked: BTreeMap<u64, u64>,
    /// Room acks for the next `poll_output`: the highest seq per room.
    pending_room_acks: BTreeMap<u64, u64>,
}

/// A room as the client knows it: its name and members with role and presence.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct RoomView {
    pub name: String,
    pub members: BTreeMap<UserId, (RoomRole, Presence)>,
}

impl Client {
    /// A client that wants to connect at once: `poll_output` yields `Connect`.
    pub fn new(cfg: ClientConfig, now: Instant) -> Client {
        let mut client = Client {
            view: PresenceView::new(cfg.user.clone()),
            user: cfg.user,
            password: cfg.password,
            client_name: truncate(cfg.client_name, MAX_CLIENT_NAME),
            mode: cfg.mode,
            connect_timeout: cfg.connect_timeout,
            acks: cfg.acks,
            phase: Phase::Stopped(StopReason::LoggedOut),
            backoff: Backoff::new(cfg.backoff_base, cfg.backoff_max, cfg.seed),
            token: None,
            register_in_doubt: false,
            password_changes: VecDeque::new(),
            password_in_doubt: None,
            status: cfg.status,
            status_in_flight: 0,
            contacts: BTreeSet::new(),
            contact_changes: BTreeMap::new(),
            contacts_in_flight: VecDeque::new(),
            scope: WatchScope::Everyone,
            version: 0,
            groups: GroupBook::default(),
            profiles: BTreeMap::new(),
            seen: SeenSeqs::new(REMEMBERED_SEQS),
            outbox: Outbox::new(cfg.id_base),
            refused_for_now: BTreeSet::new(),
            resend_at: None,
            pending_acks: Vec::new(),
            acks_noted_at: now,
            next_nonce: 0,
            not_before: None,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            rooms: BTreeMap::new(),
            rooms_told: BTreeMap::new(),
            rooms_acked: BTreeMap::new(),
            pending_room_acks: BTreeMap::new(),
        };
        client.begin_connect(now);
        client
    }

    // ---- host inputs ----

    /// The connection requested by `Connect` is up.
    pub fn handle_connected(&mut self, now: Instant) {
        match self.phase {
            Phase::Connecting { login_deadline } => {
                self.phase = Phase::Connected(Connection {
                    login_deadline,
                    stage: Stage::Handshaking,
                    heartbeat: None,
                    last_sent: now,
                    last_received: now,
                });
                self.events.push_back(ClientEvent::Connected);
                let hello = ClientMsg::Hello {
                    magic: MAGIC,
                    version: PROTOCOL_VERSION,
                    client: self.client_name.clone(),
                };
                self.send(now, &hello);
            }
            Phase::Connected(_) => {}
            // A connect that completed after the client stopped wanting it.
            Phase::Disconnected { .. } | Phase::Stopped(_) => {
                self.outputs.push_back(ClientOutput::Disconnect)
            }
        }
    }

    /// One frame payload, without its length prefix.
    pub fn handle_frame(&mut self, now: Instant, payload: &[u8]) {
        self.handle_frames(now, [payload]);
    }

    /// Several frame payloads read together.
    pub fn handle_frames<'a>(
        &mut self,
        now: Instant,
        payloads: impl IntoIterator<Item = &'a [u8]>,
    ) {
        for payload in payloads {
            self.ingest(now, payload);
        }
    }

    /// The socket closed, or the connect failed.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Connecting { .. } | Phase::Connected(_)) {
            self.reconnect_later(now, None, Socket::ClosedByHost);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.phase {
            Phase::Disconnected { retry_at } if now >= *retry_at => self.begin_connect(now),
            Phase::Connecting { login_deadline } if now >= *login_deadline => {
                self.reconnect_later(now, None, Socket::Open)
            }
            Phase::Connected(_) => {
                if self.resend_at.is_some_and(|t| now >= t) && self.is_logged_in() {
                    self.resend_refused(now);
                }
                let Phase::Connected(conn) = &self.phase else {
                    return;
                };
                if conn.give_up_at().is_some_and(|t| now >= t) {
                    self.reconnect_later(now, None, Socket::Open);
                } else if conn.ping_at().is_some_and(|t| now >= t) {
                    let nonce = self.next_nonce;
                    self.next_nonce = self.next_nonce.wrapping_add(1);
                    self.send(now, &ClientMsg::Ping { nonce });
                }
            }
            _ => {}
        }
    }

    /// The next thing for the host to do. Acks noted since the last call go out, batched,
    /// once everything queued before them has been taken.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        if self.outputs.is_empty() {
            self.flush_acks();
        }
        self.outputs.pop_front()
    }

    /// The next event for the application. Under [`AckMode::OnHandover`] taking a `Message`
    /// here is what acknowledges it (sent with the next `poll_output`).
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let event = self.events.pop_front()?;
        if let (ClientEvent::Message(delivery), AckMode::OnHandover) = (&event, self.acks) {
            let noted_at = self.connection_mut().map(|c| c.last_received);
            self.ack_seq(noted_at, delivery.seq);
        }
        if let (ClientEvent::RoomMessage(d), AckMode::OnHandover) = (&event, self.acks) {
            let fallback = self.acks_noted_at;
            let noted_at = self.connection_mut().map_or(fallback, |c| c.last_received);
            self.ack_room(noted_at, d.room, d.seq);
        }
        Some(event)
    }

    /// When `handle_timeout` wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Disconnected { retry_at } => Some(*retry_at),
            Phase::Connecting { login_deadline } => Some(*login_deadline),
            Phase::Connected(conn) => conn
                .give_up_at()
                .into_iter()
                .chain(conn.ping_at())
                .chain(self.resend_at)
                .min(),
            Phase::Stopped(_) => None,
        }
    }

    // ---- application commands ----

    /// Queues a message and returns its id. It stays queued (and is re-sent after every
    /// reconnect) until `MessageSent` or `SendFailed` names that id.
    pub fn send_message(
        &mut self,
        now: Instant,
        to: UserId,
        body: String,
        attachment: Option<Attachment>,
    ) -> u64 {
        let msg = self.outbox.push(Target::User(to), body, attachment);
        let (id, wire) = (msg.id, msg.to_msg());
        if self.is_logged_in() {
            self.send(now, &wire);
        }
        id
    }

    /// Queues a message to `room` (version 2) and returns its id; like `send_message`, it
    /// is settled by `MessageSent` (its `seq` the room's) or `SendFailed`. A server of
    /// version 1 fails it with `SendFailed { code: NoSuchRoom }` at the login.
    pub fn send_room_message(&mut self, now: Instant, room: u64, body: String) -> u64 {
        let msg = self.outbox.push(Target::Room(room), body, None);
        let (id, wire) = (msg.id, msg.to_msg());
        if self.is_logged_in() && self.server_speaks(ROOMS_VERSION) {
            self.send(now, &wire);
        }
        id
    }

    /// The application has every message of `room` up to `seq`. Under
    /// [`AckMode::OnHandover`] taking the `RoomMessage` event already acked it.
    pub fn ack_room(&mut self, now: Instant, room: u64, seq: u64) {
        let acked = self.rooms_acked.entry(room).or_default();
        *acked = (*acked).max(seq);
        self.note_room_ack(now, room, seq);
    }

    fn note_room_ack(&mut self, now: Instant, room: u64, seq: u64) {
        if self.is_logged_in() {
            let pending = self.pending_room_acks.entry(room).or_default();
            *pending = (*pending).max(seq);
            self.acks_noted_at = self.acks_noted_at.max(now);
        }
    }

    /// Creates a room owned by the user; `RoomMembers` answers (version 2).
    pub fn create_room(&mut self, now: Instant, name: String) {
        self.send_room_request(now, ClientMsg::CreateRoom { name });
    }

    /// Adds `user` to `room` with `role`, or changes their role.
    pub fn room_invite(&mut self, now: Instant, room: u64, user: UserId, role: RoomRole) {
        self.send_room_request(now, ClientMsg::RoomInvite { room, user, role });
    }

    /// Takes `user` out of `room`; the user's own name leaves it.
    pub fn room_remove(&mut self, now: Instant, room: u64, user: UserId) {
        self.send_room_request(now, ClientMsg::RoomRemove { room, user });
    }

    /// Asks for `room`'s messages below `before`, newest first (`RoomHistory` event).
    pub fn room_history(&mut self, now: Instant, room: u64, before: Option<u64>, limit: u16) {
        self.send_room_request(
            now,
            ClientMsg::RoomHistory {
                room,
                before,
                limit,
            },
        );
    }

    /// The rooms the user is in, by id.
    pub fn rooms(&self) -> &BTreeMap<u64, RoomView> {
        &self.rooms
    }

    fn send_room_request(&mut self, now: Instant, msg: ClientMsg) {
        if self.is_logged_in() && !self.server_speaks(ROOMS_VERSION) {
            // A version-1 server would close the connection for it.
            return self.events.push_back(ClientEvent::Error {
                request: RequestKind::Room,
                code: ErrorCode::NoSuchRoom,
            });
        }
        self.send_online(now, msg);
    }

    /// The application has the message `seq` for good (saved, shown): the server may forget
    /// it. Sent with the next `poll_output`, batched with other acks; while no session is up
    /// the server delivers the message again at the next login and the client acks that
    /// repeat without telling the application. Under [`AckMode::OnHandover`] taking the
    /// event already acked it, and this adds nothing.
    pub fn ack(&mut self, now: Instant, seq: u64) {
        self.ack_seq(Some(now), seq);
    }

    /// Takes effect at once when logged in, otherwise with the next login.
    pub fn set_status(&mut self, now: Instant, status: Status) {
        self.status = status;
        if self.is_logged_in() {
            self.status_in_flight += 1;
            self.send(now, &ClientMsg::SetStatus { status });
        }
    }

    pub fn add_contact(&mut self, now: Instant, user: UserId) {
        self.change_contact(now, user, true);
    }

    pub fn remove_contact(&mut self, now: Instant, user: UserId) {
        self.change_contact(now, user, false);
    }

    /// Adds and removes many contacts in one request (an import), answered once; offline,
    /// the changes wait for the next login like single ones. A name in both lists is removed.
    pub fn change_contacts(&mut self, now: Instant, add: Vec<UserId>, remove: Vec<UserId>) {
        let changes: BTreeMap<UserId, bool> = add
            .into_iter()
            .map(|u| (u, true))
            .chain(remove.into_iter().map(|u| (u, false)))
            .collect();
        self.contact_changes
            .extend(changes.iter().map(|(u, a)| (u.clone(), *a)));
        if self.is_logged_in() {
            self.send_contact_changes(now, changes.into_iter().collect());
        }
    }

    /// Online only. On success later logins use `new`.
    pub fn change_password(&mut self, now: Instant, old: String, new: String) {
        if self.send_online(
            now,
            ClientMsg::ChangePassword {
                old,
                new: new.clone(),
            },
        ) {
            self.password_changes.push_back(new);
        }
    }

    /// Online only.
    pub fn request_history(&mut self, now: Instant, with: UserId, before: Option<u64>, limit: u16) {
        self.send_online(
            now,
            ClientMsg::History {
                with,
                before,
                limit,
            },
        );
    }

    /// Online only.
    pub fn admin_who(&mut self, now: Instant) {
        self.send_online(now, ClientMsg::AdminWho);
    }

    /// Online only, on a server that speaks version 2: a new contact group (answered by
    /// `ClientEvent::Groups`).
    pub fn create_group(&mut self, now: Instant, name: String) {
        self.send_grouping(now, ClientMsg::CreateGroup { name });
    }

    /// Online only, on a server that speaks version 2: renames, deletes or moves a group.
    pub fn edit_group(&mut self, now: Instant, group: u32, edit: GroupEdit) {
        self.send_grouping(now, ClientMsg::EditGroup { group, edit });
    }

    /// Online only, on a server that speaks version 2: files contacts in `group`
    /// (`DEFAULT_GROUP` for the default one).
    pub fn move_contacts(&mut self, now: Instant, contacts: Vec<UserId>, group: u32) {
        self.send_grouping(now, ClientMsg::MoveContacts { contacts, group });
    }

    /// A group request: refused here, as `Forbidden`, when the server is older than groups
    /// (it would close the connection as `Malformed`).
    fn send_grouping(&mut self, now: Instant, msg: ClientMsg) {
        if self.is_logged_in() && !self.server_speaks(GROUPS_VERSION) {
            let request = msg.kind();
            let code = ErrorCode::Forbidden;
            self.events.push_back(ClientEvent::Error { request, code });
            return;
        }
        self.send_online(now, msg);
    }

    /// Online only: kick, ban or unban `user` (answered by `ClientEvent::AdminDone`).
    pub fn admin(&mut self, now: Instant, action: AdminAction, user: UserId) {
        let msg = match action {
            AdminAction::Kick => ClientMsg::AdminKick { user },
            AdminAction::Ban => ClientMsg::AdminBan { user },
            AdminAction::Unban => ClientMsg::AdminUnban { user },
        };
        self.send_online(now, msg);
    }

    /// Online only, version 2: sets the display name and signature (answered by
    /// `ClientEvent::Profile`).
    pub fn set_profile(&mut self, now: Instant, display_name: String, signature: String) {
        self.send_v2(
            now,
            ClientMsg::SetProfile {
                display_name,
                signature,
            },
        );
    }

    /// Online only, version 2: sets (or with `None` removes) the avatar image.
    pub fn set_avatar(&mut self, now: Instant, image: Option<Vec<u8>>) {
        self.send_v2(now, ClientMsg::SetAvatar { image });
    }

    /// Online only, version 2: asks for `user`'s card, and the image with `avatar`
    /// (answered by `ClientEvent::Profile`).
    pub fn get_profile(&mut self, now: Instant, user: UserId, avatar: bool) {
        self.send_v2(now, ClientMsg::GetProfile { user, avatar });
    }

    /// Online only, version 3: one of the transfer requests (`OfferFile`, `AnswerFile`,
    /// `RelayFile`, `TransferChunk`, `TransferAck`, `TransferDone`, `CancelFile`), sent as
    /// given (any other request is refused here with `Forbidden`; one sent while not logged
    /// in, or to an older server, is answered `TransferError` at once). Transfers are driven by
    /// the application's transfer agent, which holds the files and the direct links; the
    /// answers come back as `ClientEvent::Transfer`.
    pub fn send_transfer(&mut self, now: Instant, msg: ClientMsg) {
        // Anything else has its own method, which keeps the client core's state with it.
        let Some(transfer) = transfer_of(&msg) else {
            self.events.push_back(ClientEvent::Error {
                request: msg.kind(),
                code: ErrorCode::Forbidden,
            });
            return;
        };
        // Refused here as the server would refuse it, naming the transfer, so the agent
        // can let go of it (a transfer does not wait for a reconnect: it dies with the
        // session anyway).
        let refusal = if !self.is_logged_in() {
            Some(ErrorCode::NotLoggedIn)
        } else if !self.server_speaks(msg.since()) {
            Some(ErrorCode::Malformed)
        } else {
            None
        };
        match refusal {
            Some(code) => self.events.push_back(ClientEvent::TransferError {
                request: msg.kind(),
                code,
                transfer,
            }),
            None => self.send(now, &msg),
        }
    }

    /// The newest profile card known per user (version 2 servers only; empty otherwise).
    pub fn profiles(&self) -> &BTreeMap<UserId, ProfileCard> {
        &self.profiles
    }

    /// How to show `user`: `Alice Wang (alice)` with a display name, else `alice`.
    pub fn display(&self, user: &UserId) -> String {
        crate::profile::label(user, self.profiles.get(user))
    }

    /// Ends the session for good: `Logout` if logged in, then `Disconnect` and `Stopped`.
    /// Unsent messages stay queued for a later `start`.
    pub fn logout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Stopped(_)) {
            return;
        }
        if self.is_logged_in() {
            // What the application acked just before leaving is not delivered again.
            self.flush_acks();
            self.send(now, &ClientMsg::Logout);
        }
        self.stop(StopReason::LoggedOut, None);
    }

    /// Connects again after `Stopped`; while waiting to retry, retries now.
    pub fn start(&mut self, now: Instant) {
        match self.phase {
            Phase::Stopped(_) => {
                self.backoff.reset();
                self.begin_connect(now);
            }
            Phase::Disconnected { .. } => self.begin_connect(now),
            Phase::Connecting { .. } | Phase::Connected(_) => {}
        }
    }

    // ---- views ----

    pub fn state(&self) -> ClientState {
        match &self.phase {
            Phase::Disconnected { retry_at } => ClientState::Disconnected {
                retry_at: *retry_at,
            },
            Phase::Connecting { .. } => ClientState::Connecting,
            Phase::Connected(conn) => match conn.stage {
                Stage::Handshaking => ClientState::Handshaking,
                Stage::LoggingIn(_) => ClientState::LoggingIn,
                Stage::LoggedIn => ClientState::LoggedIn,
            },
            Phase::Stopped(reason) => ClientState::Stopped(*reason),
        }
    }

    pub fn is_logged_in(&self) -> bool {
        matches!(&self.phase, Phase::Connected(c) if matches!(c.stage, Stage::LoggedIn))
    }

    /// Whether the server of the last handshake speaks `version` or later: what that version
    /// added may be asked of it. A server of an older version would close the connection as
    /// `Malformed` for it.
    pub fn server_speaks(&self, version: u16) -> bool {
        self.version >= version
    }

    /// Everyone the server lets this user see, the user excluded. Kept while disconnected
    /// (stale then) until the next snapshot replaces it.
    pub fn presence(&self) -> &BTreeMap<UserId, Presence> {
        self.view.users()
    }

    /// The status asserted at the next login, updated by the server's `OwnStatus`.
    pub fn own_status(&self) -> Status {
        self.status
    }

    /// The contact list as the server last sent it.
    pub fn contacts(&self) -> &BTreeSet<UserId> {
        &self.contacts
    }

    /// The named contact groups, in the user's order (empty from a server older than groups).
    pub fn groups(&self) -> &[ContactGroup] {
        self.groups.groups()
    }

    /// The groups as a whole, as `ClientEvent::Groups` carries them.
    pub fn group_book(&self) -> &GroupBook {
        &self.groups
    }

    /// The most named groups the server lets this user have.
    pub fn max_groups(&self) -> u32 {
        self.groups.max_groups()
    }

    /// The id of the group called `name`, as the server would normalise it; the default group
    /// is called `DEFAULT_GROUP_NAME`.
    pub fn group_named(&self, name: &str) -> Option<u32> {
        self.groups.named(name)
    }

    /// The contact list in its groups, the default group first, each group with how many of
    /// its members are online (from the presence view).
    pub fn grouped_contacts(&self) -> Vec<GroupListing> {
        self.groups.listing(&self.contacts, self.view.users())
    }

    /// When this client acknowledges deliveries.
    pub fn acks(&self) -> AckMode {
        self.acks
    }

    /// Messages not yet confirmed durable by the server.
    pub fn unacked(&self) -> usize {
        self.outbox.len()
    }

    /// How long connecting, the handshake and the login may take together; a host that
    /// connects for the client bounds its connect attempt by this too.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// `(interval, timeout)` from the current connection's `Welcome`.
    pub fn heartbeat(&self) -> Option<(Duration, Duration)> {
        match &self.phase {
            Phase::Connected(conn) => conn.heartbeat.map(|h| (h.interval, h.timeout)),
            _ => None,
        }
    }

    // ---- server messages ----

    fn ingest(&mut self, now: Instant, payload: &[u8]) {
        // Bytes read before a close the client already acted on belong to no session.
        let Phase::Connected(conn) = &mut self.phase else {
            return;
        };
        conn.last_received = now;
        // Variants are only ever appended: what does not decode is likely from a newer
        // server, and skipping it keeps the session.
        if let Ok(msg) = codec::decode::<ServerMsg>(payload) {
            self.on_message(now, msg);
        }
    }

    fn on_message(&mut self, now: Instant, msg: ServerMsg) {
        match msg {
            ServerMsg::Welcome {
                version,
                heartbeat_interval_ms,
                heartbeat_timeout_ms,
                scope,
                max_body,
                max_attachment,
                ..
            } => {
                self.scope = scope;
                self.version = version;
                self.events.push_back(ClientEvent::Limits {
                    max_body,
                    max_attachment,
                });
                self.on_welcome(
                    now,
                    Heartbeat {
                        interval: Duration::from_millis(heartbeat_interval_ms.into()),
                        timeout: Duration::from_millis(heartbeat_timeout_ms.into()),
                    },
                )
            }
            ServerMsg::Registered { .. } => self.on_registered(now),
            ServerMsg::LoginOk {
                user,
                status,
                resume_token,
                contacts,
            } => self.on_login_ok(now, user, status, resume_token, contacts),
            ServerMsg::PresenceSnapshot { entries } => {
                let taken = self.view.replace(entries);
                self.events.push_back(ClientEvent::PresenceSnapshot(taken));
            }
            ServerMsg::PresenceDiff { entries } => {
                for PresenceEntry { user, presence } in self.view.apply(entries) {
                    self.events
                        .push_back(ClientEvent::PresenceChanged { user, presence });
                }
            }
            ServerMsg::OwnStatus { status } => {
                if self.status_in_flight > 0 {
                    self.status_in_flight -= 1;
                } else {
                    self.status = status;
                }
                self.events.push_back(ClientEvent::OwnStatus(status));
            }
            ServerMsg::ContactsChanged {
                added,
                removed,
                rejected,
            } => self.on_contacts_changed(added, removed, rejected),
            ServerMsg::Groups {
                max_groups,
                groups,
                placements,
            } => {
                self.groups.replace(max_groups, groups, placements);
                self.events
                    .push_back(ClientEvent::Groups(self.groups.clone()));
            }
            ServerMsg::GroupsChanged { groups, moved } => {
                self.groups.apply(groups, moved);
                self.events
                    .push_back(ClientEvent::Groups(self.groups.clone()));
            }
            ServerMsg::PasswordChanged => {
                if let Some(new) = self.password_changes.pop_front() {
                    self.password = new;
                }
                // The server revokes every resume token with the old password.
                self.token = None;
                self.events.push_back(ClientEvent::PasswordChanged);
            }
            ServerMsg::Sent { id, seq } => {
                // A re-send of a message that had arrived is answered again: report once.
                if self.outbox.remove(id).is_some() {
                    self.events.push_back(ClientEvent::MessageSent { id, seq });
                }
            }
            ServerMsg::Deliver(delivery) => match self.seen.arrived(delivery.seq) {
                Arrival::New => self.events.push_back(ClientEvent::Message(delivery)),
                // The application has it; its ack (or the hand-over) will settle it.
                Arrival::Unacked => {}
                // The server redelivers until it has the ack: the first one was lost.
                Arrival::Acked => self.note_ack(now, delivery.seq),
            },
            ServerMsg::OfflineDone { count } => {
                self.events.push_back(ClientEvent::OfflineDone { count })
            }
            ServerMsg::OfflineWaiting { count } => {
                self.events.push_back(ClientEvent::OfflineWaiting { count })
            }
            ServerMsg::History { with, items } => {
                self.events.push_back(ClientEvent::History { with, items })
            }
            ServerMsg::Who { users, connections } => self
                .events
                .push_back(ClientEvent::Who { users, connections }),
            ServerMsg::AdminDone {
                request,
                user,
                sessions,
            } => self.events.push_back(ClientEvent::AdminDone {
                request,
                user,
                sessions,
            }),
            // Any frame proves the server alive; `ingest` already counted this one.
            ServerMsg::ProfileSnapshot { cards, .. } | ServerMsg::ProfileDiff { cards } => {
                self.merge_profiles(cards)
            }
            ServerMsg::Profile { card, avatar } => {
                self.merge_profiles(vec![card.clone()]);
                self.events.push_back(ClientEvent::Profile { card, avatar });
            }
            ServerMsg::Pong { .. } => {}
            ServerMsg::Throttled {
                request,
                retry_after_ms,
            } => {
                let retry_after = Duration::from_millis(retry_after_ms.into());
                if matches!(request, RequestKind::Login | RequestKind::AgentLogin) {
                    self.not_before = Some(now + retry_after);
                }
                self.events.push_back(ClientEvent::Throttled {
                    request,
                    retry_after,
                });
            }
            // Transfers are driven outside the client core (they need sockets and files): the
            // application's transfer agent gets the news as the server sent it.
            msg @ (ServerMsg::FileOffered { .. }
            | ServerMsg::TransferAccepted { .. }
            | ServerMsg::TransferStart { .. }
            | ServerMsg::TransferRelay { .. }
            | ServerMsg::TransferData { .. }
            | ServerMsg::TransferProgress { .. }
            | ServerMsg::TransferEnded { .. }) => {
                self.events.push_back(ClientEvent::Transfer(msg));
            }
            ServerMsg::Error { request, code, id } => self.on_error(now, request, code, id),
            ServerMsg::RoomMembers {
                room,
                name,
                full,
                members,
            } => self.on_room_members(room, name, full, members),
            ServerMsg::RoomLeft { room } => {
                self.rooms.remove(&room);
                self.events.push_back(ClientEvent::RoomLeft { room });
            }
            ServerMsg::RoomDeliver(d) => {
                let told = self.rooms_told.entry(d.room).or_default();
                if d.seq > *told {
                    *told = d.seq;
                    self.events.push_back(ClientEvent::RoomMessage(d));
                } else if self.rooms_acked.get(&d.room).is_some_and(|&a| d.seq <= a) {
                    // A repeat of what the application acked: that ack was lost.
                    self.note_room_ack(now, d.room, d.seq);
                }
            }
            ServerMsg::RoomHistory { room, items } => self
                .events
                .push_back(ClientEvent::RoomHistory { room, items }),
            ServerMsg::Bye { reason } => {
                if reason.allows_reconnect() {
                    self.reconnect_later(now, Some(reason), Socket::Open);
                } else {
                    self.stop(StopReason::Closed(reason), Some(reason));
                }
            }
        }
    }

    fn on_room_members(&mut self, room: u64, name: String, full: bool, members: Vec<RoomMember>) {
        let view = self.rooms.entry(room).or_default();
        view.name = name.clone();
        if full {
            view.members.clear();
        }
        for m in &members {
            match m.role {
                Some(role) => {
                    view.members.insert(m.user.clone(), (role, m.presence));
                }
                None => {
                    view.members.remove(&m.user);
                }
            }
        }
        self.events.push_back(ClientEvent::RoomMembers {
            room,
            name,
            full,
            members,
        });
    }

    fn on_welcome(&mut self, now: Instant, heartbeat: Heartbeat) {
        let Some(conn) = self.connection_mut() else {
            return;
        };
        if !matches!(conn.stage, Stage::Handshaking) {
            return;
        }
        conn.heartbeat = Some(heartbeat);
        if self.mode == Mode::Register {
            let register = ClientMsg::Register {
                user: self.user.clone(),
                password: self.password.clone(),
            };
            self.send(now, &register);
            self.set_stage(Stage::LoggingIn(LoginStep::Registering));
        } else if let (Some(token), false) = (self.token.clone(), self.mode == Mode::Agent) {
            self.send_login(now, Credential::Token(token));
            self.set_stage(Stage::LoggingIn(LoginStep::Token));
        } else {
            self.login_with_password(now, self.password.clone(), StopReason::BadCredentials);
        }
    }

    fn on_registered(&mut self, now: Instant) {
        if !matches!(self.login_step(), Some(LoginStep::Registering)) {
            return;
        }
        self.mode = Mode::Login;
        self.register_in_doubt = false;
        self.events.push_back(ClientEvent::Registered);
        self.login_with_password(now, self.password.clone(), StopReason::BadCredentials);
    }

    fn on_login_ok(
        &mut self,
        now: Instant,
        user: UserId,
        status: Status,
        token: Vec<u8>,
        contacts: Vec<UserId>,
    ) {
        let Some(step) = self.set_stage(Stage::LoggedIn) else {
            return;
        };
        if let LoginStep::Password { password, .. } = step {
            // Possibly the in-doubt new password: it is the one that works now.
            self.password = password;
        }
        let agent = self.mode == Mode::Agent;
        if !agent {
            self.mode = Mode::Login;
        }
        self.register_in_doubt = false;
        self.password_in_doubt = None;
        self.token = (!token.is_empty()).then_some(token);
        self.contacts = contacts.into_iter().collect();
        self.backoff.reset();
        self.events.push_back(ClientEvent::LoggedIn { user });
        let list = self.contacts.iter().cloned().collect();
        self.events.push_back(ClientEvent::Contacts(list));

        // Everything still in the outbox goes again, the ones refused for now included.
        self.refused_for_now.clear();
        self.resend_at = None;
        let rooms = self.server_speaks(ROOMS_VERSION);
        let unsendable: Vec<u64> = self
            .outbox
            .iter()
            .filter(|m| matches!(m.to, Target::Room(_)) && !rooms)
            .map(|m| m.id)
            .collect();
        for id in unsendable {
            self.outbox.remove(id);
            self.events.push_back(ClientEvent::SendFailed {
                id,
                code: ErrorCode::NoSuchRoom,
            });
        }
        // The server starts a login's room feeds afresh: what the old session had in
        // flight is not the new one's.
        self.rooms.clear();
        let resend: Vec<ClientMsg> = self.outbox.iter().map(Outgoing::to_msg).collect();
        for msg in &resend {
            self.send(now, msg);
        }
        if agent {
            // No status, no contact list of its own to keep: the server refuses both.
            return;
        }
        // `Login` carried the status; it differs only if changed while the login was out.
        if status != self.status {
            self.status_in_flight += 1;
            self.send(
                now,
                &ClientMsg::SetStatus {
                    status: self.status,
                },
            );
        }
        self.contacts_in_flight.clear();
        let confirmed = &self.contacts;
        self.contact_changes
            .retain(|user, add| confirmed.contains(user) != *add);
        // Everything changed while offline goes in one request, answered once.
        let pending: Vec<(UserId, bool)> = self
            .contact_changes
            .iter()
            .map(|(u, a)| (u.clone(), *a))
            .collect();
        self.send_contact_changes(now, pending);
    }

    fn on_error(&mut self, now: Instant, request: RequestKind, code: ErrorCode, id: Option<u64>) {
        match (request, id) {
            (RequestKind::Register | RequestKind::Login | RequestKind::AgentLogin, _)
                if self.login_step().is_some() =>
            {
                self.on_login_error(now, request, code)
            }
            // Not the message's fault: the server is busy or its disk failed this once. It
            // goes again after `RESEND_AFTER` (PROTOCOL.md §9.3), or with the next login.
            (RequestKind::Send | RequestKind::Room, Some(id))
                if matches!(code, ErrorCode::StorageFailed | ErrorCode::Busy) =>
            {
                if self.outbox.contains(id) {
                    self.refused_for_now.insert(id);
                    self.resend_at.get_or_insert(now + RESEND_AFTER);
                    self.events
                        .push_back(ClientEvent::SendDeferred { id, code });
                }
            }
            (RequestKind::Send | RequestKind::Room, Some(id)) => {
                if self.outbox.remove(id).is_some() {
                    self.events.push_back(ClientEvent::SendFailed { id, code });
                }
            }
            (
                RequestKind::OfferFile
                | RequestKind::AnswerFile
                | RequestKind::RelayFile
                | RequestKind::TransferChunk
                | RequestKind::TransferAck
                | RequestKind::TransferDone
                | RequestKind::CancelFile,
                Some(transfer),
            ) => self.events.push_back(ClientEvent::TransferError {
                request,
                code,
                transfer,
            }),
            _ => {
                if request == RequestKind::ChangePassword {
                    self.password_changes.pop_front();
                }
                if matches!(
                    request,
                    RequestKind::AddContact
                        | RequestKind::RemoveContact
                        | RequestKind::ChangeContacts
                ) {
                    let users = self.contacts_in_flight.pop_front().unwrap_or_default();
                    // Refused for good (unknown user, too many): retrying cannot help. Busy
                    // or a failed disk is the server's state, not the wish's: it stays, and
                    // goes again with the next login.
                    if !matches!(code, ErrorCode::Busy | ErrorCode::StorageFailed) {
                        for user in users {
                            self.contact_changes.remove(&user);
                        }
                    }
                }
                self.events.push_back(ClientEvent::Error { request, code });
            }
        }
    }

    /// Sends again, in the order the application sent them, the messages refused for now.
    fn resend_refused(&mut self, now: Instant) {
        self.resend_at = None;
        let refused = std::mem::take(&mut self.refused_for_now);
        let again: Vec<ClientMsg> = self
            .outbox
            .iter()
            .filter(|m| refused.contains(&m.id))
            .map(Outgoing::to_msg)
            .collect();
        for msg in &again {
            self.send(now, msg);
        }
    }

    fn on_login_error(&mut self, now: Instant, request: RequestKind, code: ErrorCode) {
        let step = self.login_step();
        match (step, code) {
            (Some(LoginStep::Registering), ErrorCode::UserTaken) if self.register_in_doubt => {
                self.register_in_doubt = false;
                self.mode = Mode::Login;
                self.login_with_password(now, self.password.clone(), StopReason::UserTaken);
            }
            (Some(LoginStep::Registering), ErrorCode::UserTaken) => {
                self.stop(StopReason::UserTaken, None)
            }
            (Some(LoginStep::Token), ErrorCode::BadCredentials) => {
                // Tokens expire and are revoked; the password is the fallback, once.
                self.token = None;
                self.login_with_password(now, self.password.clone(), StopReason::BadCredentials);
            }
            (Some(LoginStep::Password { on_failure, .. }), ErrorCode::BadCredentials) => {
                let on_failure = *on_failure;
                match self.password_in_doubt.take() {
                    Some(password) => self.login_with_password(now, password, on_failure),
                    None => self.stop(on_failure, None),
                }
            }
            (_, ErrorCode::StorageFailed | ErrorCode::RateLimited | ErrorCode::Busy) => {
                self.events.push_back(ClientEvent::Error { request, code });
                self.reconnect_later(now, None, Socket::Open);
            }
            _ => self.stop(StopReason::Refused { request, code }, None),
        }
    }

    // ---- transitions ----

    fn begin_connect(&mut self, now: Instant) {
        self.phase = Phase::Connecting {
            login_deadline: now + self.connect_timeout,
        };
        self.outputs.push_back(ClientOutput::Connect);
    }

    /// Ends the current attempt and schedules the next one after a backoff delay.
    fn reconnect_later(&mut self, now: Instant, reason: Option<CloseReason>, socket: Socket) {
        // No sooner than the server said it would let a login in (`Throttled`).
        let retry_at = (now + self.backoff.next_delay()).max(self.not_before.take().unwrap_or(now));
        self.end_attempt(socket, reason, Some(retry_at));
        self.phase = Phase::Disconnected { retry_at };
    }

    /// Ends any attempt for good.
    fn stop(&mut self, reason: StopReason, close_reason: Option<CloseReason>) {
        if matches!(self.phase, Phase::Connecting { .. } | Phase::Connected(_)) {
            self.end_attempt(Socket::Open, close_reason, None);
        }
        self.phase = Phase::Stopped(reason);
        self.events.push_back(ClientEvent::Stopped(reason));
    }

    /// What ending a connect attempt or connection means, whatever comes next.
    fn end_attempt(
        &mut self,
        socket: Socket,
        reason: Option<CloseReason>,
        retry_at: Option<Instant>,
    ) {
        if matches!(self.login_step(), Some(LoginStep::Registering)) {
            self.register_in_doubt = true;
        }
        if let Some(new) = std::mem::take(&mut self.password_changes).pop_back() {
            self.password_in_doubt = Some(new);
        }
        // The server redelivers what it has no ack for; the seen set acks the repeat.
        self.pending_acks.clear();
        self.pending_room_acks.clear();
        // The next login sends the whole outbox again.
        self.refused_for_now.clear();
        self.resend_at = None;
        self.status_in_flight = 0;
        if socket == Socket::Open {
            self.outputs.push_back(ClientOutput::Disconnect);
        }
        self.events
            .push_back(ClientEvent::Disconnected { reason, retry_at });
    }

    // ---- helpers ----

    fn connection_mut(&mut self) -> Option<&mut Connection> {
        match &mut self.phase {
            Phase::Connected(conn) => Some(conn),
            _ => None,
        }
    }

    fn login_step(&self) -> Option<&LoginStep> {
        match &self.phase {
            Phase::Connected(Connection {
                stage: Stage::LoggingIn(step),
                ..
            }) => Some(step),
            _ => None,
        }
    }

    /// Moves the connection to `stage`; returns the login step it was in, if any.
    fn set_stage(&mut self, stage: Stage) -> Option<LoginStep> {
        let conn = self.connection_mut()?;
        match std::mem::replace(&mut conn.stage, stage) {
            Stage::LoggingIn(step) => Some(step),
            _ => None,
        }
    }

    fn login_with_password(&mut self, now: Instant, password: String, on_failure: StopReason) {
        self.send_login(now, Credential::Password(password.clone()));
        self.set_stage(Stage::LoggingIn(LoginStep::Password {
            password,
            on_failure,
        }));
    }

    fn send_login(&mut self, now: Instant, credential: Credential) {
        let login = match (self.mode, credential) {
            (Mode::Agent, Credential::Password(password)) => ClientMsg::AgentLogin {
                user: self.user.clone(),
                password,
            },
            (_, credential) => ClientMsg::Login {
                user: self.user.clone(),
                credential,
                status: self.status,
            },
        };
        self.send(now, &login);
    }

    fn change_contact(&mut self, now: Instant, user: UserId, add: bool) {
        self.contact_changes.insert(user.clone(), add);
        if self.is_logged_in() {
            self.send(now, &contact_msg(user.clone(), add));
            self.contacts_in_flight.push_back(vec![user]);
        }
    }

    /// Sends every change in `changes` as one `ChangeContacts` request.
    fn send_contact_changes(&mut self, now: Instant, changes: Vec<(UserId, bool)>) {
        if changes.is_empty() {
            return;
        }
        let users = changes.iter().map(|(u, _)| u.clone()).collect();
        let (add, remove): (Vec<_>, Vec<_>) = changes.into_iter().partition(|(_, add)| *add);
        let msg = ClientMsg::ChangeContacts {
            add: add.into_iter().map(|(u, _)| u).collect(),
            remove: remove.into_iter().map(|(u, _)| u).collect(),
        };
        self.send(now, &msg);
        self.contacts_in_flight.push_back(users);
    }

    fn on_contacts_changed(
        &mut self,
        added: Vec<UserId>,
        removed: Vec<UserId>,
        rejected: Vec<UserId>,
    ) {
        self.contacts.extend(added);
        for user in &removed {
            self.contacts.remove(user);
        }
        self.groups.forget(&removed);
        self.contacts_in_flight.pop_front();
        let confirmed = &self.contacts;
        // A change whose request for that user is still out is not settled by an answer to an
        // earlier one; a rejected name (not a registered user) never will be.
        let in_flight = &self.contacts_in_flight;
        self.contact_changes.retain(|user, add| {
            in_flight.iter().any(|users| users.contains(user))
                || (!rejected.contains(user) && confirmed.contains(user) != *add)
        });
        if self.scope == WatchScope::Contacts
            && removed.iter().any(|u| self.view.users().contains_key(u))
        {
            let kept = self
                .view
                .users()
                .iter()
                .filter(|(u, _)| !removed.contains(u))
                .map(|(user, &presence)| PresenceEntry {
                    user: user.clone(),
                    presence,
                })
                .collect();
            let taken = self.view.replace(kept);
            self.events.push_back(ClientEvent::PresenceSnapshot(taken));
        }
        let list = self.contacts.iter().cloned().collect();
        self.events.push_back(ClientEvent::Contacts(list));
    }

    /// `send_online` for a request of a later version (2 or 3): a server of an earlier
    /// version would close the connection as `Malformed` for it, so it is refused here with
    /// that code instead.
    fn send_v2(&mut self, now: Instant, msg: ClientMsg) {
        if self.is_logged_in() && !self.server_speaks(msg.since()) {
            self.events.push_back(ClientEvent::Error {
                request: msg.kind(),
                code: ErrorCode::Malformed,
            });
            return;
        }
        self.send_online(now, msg);
    }

    /// Keeps each card newer than the one known; tells the application which were.
    fn merge_profiles(&mut self, cards: Vec<ProfileCard>) {
        let newer: Vec<ProfileCard> = cards
            .into_iter()
            .filter(|c| self.profiles.get(&c.user).is_none_or(|k| k.rev < c.rev))
            .collect();
        for card in &newer {
            self.profiles.insert(card.user.clone(), card.clone());
        }
        if !newer.is_empty() {
            self.events.push_back(ClientEvent::Profiles(newer));
        }
    }

    /// Sends `msg` if logged in, else tells the application it was refused; true if sent.
    fn send_online(&mut self, now: Instant, msg: ClientMsg) -> bool {
        if self.is_logged_in() {
            self.send(now, &msg);
            true
        } else {
            self.events.push_back(ClientEvent::Error {
                request: msg.kind(),
                code: ErrorCode::NotLoggedIn,
            });
            false
        }
    }

    /// The application acked `seq` at `now` (if known): queue it unless it was acked before.
    fn ack_seq(&mut self, now: Option<Instant>, seq: u64) {
        if self.seen.acked(seq) {
            let now = now.unwrap_or(self.acks_noted_at);
            self.note_ack(now, seq);
        }
    }

    /// Queues `seq` for the next `Ack`, if there is a session to send it on.
    fn note_ack(&mut self, now: Instant, seq: u64) {
        if self.is_logged_in() {
            self.pending_acks.push(seq);
            self.acks_noted_at = self.acks_noted_at.max(now);
        }
    }

    /// Sends the pending acks, as few `Ack` frames as the per-frame limit allows.
    fn flush_acks(&mut self) {
        let room_acks = std::mem::take(&mut self.pending_room_acks);
        for (room, seq) in room_acks {
            self.send(self.acks_noted_at, &ClientMsg::RoomAck { room, seq });
        }
        if self.pending_acks.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.pending_acks);
        let now = self.acks_noted_at;
        for chunk in seqs.chunks(MAX_ACK_SEQS) {
            self.send(
                now,
                &ClientMsg::Ack {
                    seqs: chunk.to_vec(),
                },
            );
        }
    }

    fn send(&mut self, now: Instant, msg: &ClientMsg) {
        // Every caller checks for a connection first (or runs on one's frames).
        let Some(conn) = self.connection_mut() else {
            unreachable!("invariant: {:?} sent with no connection", msg.kind());
        };
        // `max`: an ack noted earlier may be sent after something sent later.
        conn.last_sent = conn.last_sent.max(now);
        self.outputs.push_back(ClientOutput::Send(encode(msg)));
    }
}

/// The transfer `msg` is about, if it is one of the requests `send_transfer` carries.
fn transfer_of(msg: &ClientMsg) -> Option<u64> {
    match msg {
        ClientMsg::OfferFile { transfer, .. }
        | ClientMsg::AnswerFile { transfer, .. }
        | ClientMsg::RelayFile { transfer, .. }
        | ClientMsg::TransferChunk { transfer, .. }
        | ClientMsg::TransferAck { transfer, .. }
        | ClientMsg::TransferDone { transfer, .. }
        | ClientMsg::CancelFile { transfer, .. } => Some(*transfer),
        _ => None,
    }
}

impl fmt::Debug for Client {
    // Hand-written so passwords, the resume token and message bodies never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("user", &self.user)
            .field("state", &self.state())
            .field("status", &self.status)
            .field("unacked", &self.outbox.len())
            .field("outputs", &self.outputs.len())
            .field("events", &self.events.len())
            .finish_non_exhaustive()
    }
}

fn contact_msg(user: UserId, add: bool) -> ClientMsg {
    if add {
        ClientMsg::AddContact { user }
    } else {
        ClientMsg::RemoveContact { user }
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
