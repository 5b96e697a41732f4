//! `breeze chat`: the interactive client. Line-based: every event is a line. The whole
//! presence list is printed at login and on `/who`; each change after that is one line of its
//! own. A line for the date comes first whenever the day has changed since the last line.

use crate::Fatal;
use crate::cli::{Account, StatusArg};
use crate::editor::Names;
use crate::input::{self, Action, HELP, Input, ProfileField, RoomAction};
use crate::rooms::Rooms;
use crate::screen::Screen;
use crate::session::{self, Session, Setup};
use crate::transfers::{Line as TransferLine, Transfers};
use crate::ui::{self, Colour, Style};
use breeze_core::UserId;
use breeze_core::client::{ClientEvent, GroupBook, Mode, StopReason};
use breeze_core::message::{
    CloseReason, Delivery, ErrorCode, GroupEdit, HistoryItem, Presence, ProfileCard, RequestKind,
    RoomDelivery, RoomRole, Status,
};
use breeze_transport_tokio::{ClientCommand, RoomCommand};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a chat whose input ended waits for the login and the offline messages.
const FINISH_LOGIN: Duration = Duration::from_secs(10);
/// How long quitting waits for the server to confirm messages still unconfirmed.
const UNSENT_GRACE: Duration = Duration::from_secs(5);

pub async fn run(
    account: Account,
    status: StatusArg,
    downloads: Option<PathBuf>,
    style: Style,
) -> Result<(), Fatal> {
    let screen = Screen::default();
    let result = chat(account, status, downloads, style, &screen).await;
    // Whatever ended the chat, the terminal is the shell's again before the last words.
    screen.detach();
    result
}

async fn chat(
    account: Account,
    status: StatusArg,
    downloads: Option<PathBuf>,
    style: Style,
    screen: &Screen,
) -> Result<(), Fatal> {
    let password = session::password(&account, false)?;
    let status = Status::from(status);
    let session = Session::start(
        &account,
        password,
        Setup {
            mode: Mode::Login,
            status,
        },
    )
    .await?;
    let transfers = Transfers::new(
        session.user.clone(),
        downloads.unwrap_or_else(default_downloads),
        session.servers[0],
        session.tls,
        session.runner.clone(),
    );
    let mut chat = Chat {
        transfers,
        style,
        screen: screen.clone(),
        names: Names::default(),
        session,
        status,
        logged_in: false,
        ever_logged_in: false,
        failures_before_login: 0,
        mailbox_done: false,
        presence: BTreeMap::new(),
        presence_dirty: false,
        profiles: BTreeMap::new(),
        contacts: None,
        groups: GroupBook::default(),
        groups_shown: false,
        unresolved: Vec::new(),
        outgoing: HashMap::new(),
        day: Cell::new(chrono::Local::now().date_naive()),
        bell: std::io::stdout().is_terminal(),
        away_header: None,
        open: None,
        rooms: Rooms::default(),
        room_open: None,
        max_body: None,
    };
    chat.info(&format!(
        "connecting to {} as {}",
        chat.session.servers_shown(),
        chat.session.user
    ));
    let mut input = input::spawn_reader(&chat.screen, &chat.names);
    let mut input_open = true;
    // Set when input ended before the mailbox was out: quit once it is, or at this time.
    let mut finish_by: Option<tokio::time::Instant> = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if finish_by.is_some() && chat.mailbox_done {
            return chat.quit().await;
        }
        tokio::select! {
            event = chat.session.events.recv() => {
                let Some(event) = event else {
                    return Err(Fatal("the client stopped unexpectedly".into()));
                };
                // Transfer news goes to the agent; the rest is the chat's.
                if let Some(event) = chat.transfers.agent.handle(event).await
                    && let Some(end) = chat.on_event(event)
                {
                    return end;
                }
                // Take whatever else is ready before showing the list, so that a batch of
                // presence changes prints the list once.
                while let Ok(event) = chat.session.events.try_recv() {
                    if let Some(event) = chat.transfers.agent.handle(event).await
                        && let Some(end) = chat.on_event(event)
                    {
                        return end;
                    }
                }
                chat.show_presence_if_changed();
            }
            Some(report) = chat.transfers.reports.recv() => {
                if let Some(line) = chat.transfers.show(report) {
                    chat.transfer_line(line);
                }
            }
            line = input.recv(), if input_open => match line {
                // End of input is as good as /quit, but `breeze chat < /dev/null` should still
                // show the offline messages: wait (bounded) for them first.
                None => {
                    input_open = false;
                    finish_by = Some(tokio::time::Instant::now() + FINISH_LOGIN);
                }
                Some(Input::Line(line)) => match input::parse(&line) {
                    Ok(Action::Quit) => return chat.quit().await,
                    Ok(action @ (Action::SendFile { .. } | Action::Accept(_) | Action::Decline(_))) => {
                        if let Some(line) = chat.transfers.act(action).await {
                            chat.transfer_line(line);
                        }
                    }
                    Ok(action) => chat.act(action),
                    Err(e) => chat.error(&e),
                },
                Some(Input::Passwd { old, new }) => {
                    chat.session.command(ClientCommand::ChangePassword { old, new });
                }
                Some(Input::PasswdFailed(e)) => chat.error(&e),
                Some(Input::Quit) => return chat.quit().await,
            },
            _ = &mut ctrl_c => return chat.quit().await,
            () = tokio::time::sleep_until(finish_by.unwrap_or_else(tokio::time::Instant::now)),
                if finish_by.is_some() =>
            {
                if chat.ever_logged_in {
                    return chat.quit().await;
                }
                let why = chat.session.connection_failure();
                chat.session.quit().await;
                return Err(Fatal(format!("input ended before login ({why})")));
            }
        }
    }
}

struct Chat {
    /// Direct transfers: the agent and what its lines need.
    transfers: Transfers,
    style: Style,
    /// Where every line goes: shared with the line editor.
    screen: Screen,
    /// The user names seen, for the line editor's completion.
    names: Names,
    session: Session,
    /// Our own status as last asserted or confirmed.
    status: Status,
    logged_in: bool,
    ever_logged_in: bool,
    /// Connection attempts that failed before any login: with `--server` naming several
    /// servers, each gets its try before the chat gives up.
    failures_before_login: usize,
    /// `OfflineDone` came for the current session.
    mailbox_done: bool,
    presence: BTreeMap<UserId, Presence>,
    presence_dirty: bool,
    /// The newest profile card of each user the server told of (version 2 servers).
    profiles: BTreeMap<UserId, ProfileCard>,
    /// As the server last sent it; unknown until the list changes in this session (the
    /// client core keeps the login's list to itself).
    contacts: Option<Vec<UserId>>,
    /// The contact groups as the server last described them (empty from an older server).
    groups: GroupBook,
    /// This session printed its grouped list: later changes print it again.
    groups_shown: bool,
    /// Messages whose id the runner has not told yet.
    unresolved: Vec<(oneshot::Receiver<u64>, Outgoing)>,
    /// Messages not yet confirmed, by id.
    outgoing: HashMap<u64, Outgoing>,
    /// The local date of the last line printed.
    day: Cell<chrono::NaiveDate>,
    /// Ring the terminal's bell on a message (stdout is a terminal).
    bell: bool,
    /// The header of this session's offline messages is out, with the count it announced
    /// (0: a header without one).
    away_header: Option<u32>,
    /// The conversation plain lines go to (`/open`).
    open: Option<UserId>,
    /// The rooms the user is in, as the server last described them.
    rooms: Rooms,
    /// The room plain lines go to (`/room ROOM`); never set together with `open`.
    room_open: Option<u64>,
    /// The longest body the server takes (from its `Welcome`).
    max_body: Option<u32>,
}

struct Outgoing {
    to: UserId,
    /// Sent while not logged in: say so when the server confirms it.
    queued: bool,
}

impl Chat {
    fn line(&self, text: &str) {
        let _ = self.print(text);
    }

    /// Prints one line, after a line with the date if the day changed since the last one.
    fn print(&self, text: &str) -> std::io::Result<()> {
        let today = chrono::Local::now().date_naive();
        if self.day.replace(today) != today {
            let date = today.format("%A %-d %B %Y").to_string();
            self.screen
                .line(&self.style.paint(Colour::Grey, &format!("── {date} ──")))?;
        }
        self.screen.line(text)
    }

    fn info(&self, text: &str) {
        let stamp = self.style.paint(Colour::Grey, &ui::now_stamp());
        self.line(&format!(
            "{stamp} {} {text}",
            self.style.paint(Colour::Cyan, "*")
        ));
    }

    fn error(&self, text: &str) {
        let stamp = self.style.paint(Colour::Grey, &ui::now_stamp());
        self.line(&format!(
            "{stamp} {}",
            self.style.paint(Colour::Red, &format!("! {text}"))
        ));
    }

    fn transfer_line(&self, line: TransferLine) {
        match line {
            TransferLine::Info(text) => self.info(&text),
            TransferLine::Error(text) => self.error(&text),
        }
    }

    fn show_presence(&self) {
        if self.logged_in {
            let line = self.style.presence_line(&self.presence, |u| self.label(u));
            self.line(&line);
        } else {
            // What was seen before the connection dropped may be stale by now: nobody is
            // shown online until the server says so again.
            self.line(&format!(
                "users: {}",
                self.style
                    .paint(Colour::Grey, "(unknown until reconnected)")
            ));
        }
    }

    /// `Alice Wang (alice)`, or `alice` without a display name.
    fn label(&self, user: &UserId) -> String {
        breeze_core::profile::label(user, self.profiles.get(user))
    }

    fn show_profile(&self, card: &ProfileCard) {
        let mut text = self.label(&card.user);
        if !card.signature.is_empty() {
            text.push_str(&format!(" — {}", card.signature));
        }
        if let Some(hash) = card.avatar {
            let short: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
            text.push_str(&format!(" [avatar {short}…]"));
        }
        if card.rev == 0 {
            text.push_str(" (no profile set)");
        }
        self.info(&text);
    }

    fn show_presence_if_changed(&mut self) {
        if std::mem::take(&mut self.presence_dirty) {
            self.show_presence();
        }
    }

    async fn quit(mut self) -> Result<(), Fatal> {
        // Messages typed just before /quit may not be stored yet, and the outbox dies with
        // the process: give the server a moment to confirm them.
        let deadline = tokio::time::Instant::now() + UNSENT_GRACE;
        while self.unsent() > 0 {
            match tokio::time::timeout_at(deadline, self.session.events.recv()).await {
                Ok(Some(event)) => {
                    if let Some(end) = self.on_event(event) {
                        return end;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let unsent = self.unsent();
        if unsent > 0 {
            let s = if unsent == 1 { "" } else { "s" };
            self.error(&format!(
                "{unsent} message{s} not confirmed by the server, maybe lost"
            ));
        }
        let style = self.style;
        self.session.quit().await;
        // The editor's thread draws what it is given in its own time; this last line must
        // be out before the process ends, so it goes straight to the terminal.
        self.screen.detach();
        let stamp = style.paint(Colour::Grey, &ui::now_stamp());
        let _ = self.screen.line(&format!(
            "{stamp} {} logged out",
            style.paint(Colour::Cyan, "*")
        ));
        Ok(())
    }

    /// Messages the server has not confirmed (nor refused).
    fn unsent(&mut self) -> usize {
        self.resolve_ids();
        self.unresolved.len() + self.outgoing.len()
    }

    /// Handles one event; `Some` ends the chat with that result.
    fn on_event(&mut self, event: ClientEvent) -> Option<Result<(), Fatal>> {
        match event {
            ClientEvent::Connected | ClientEvent::Registered => {}
            ClientEvent::Limits { max_body, .. } => self.max_body = Some(max_body),
            ClientEvent::LoggedIn { user } => {
                self.logged_in = true;
                self.ever_logged_in = true;
                self.mailbox_done = false;
                self.away_header = None;
                self.groups_shown = false;
                let status = self.style.status(self.status);
                self.info(&format!("logged in as {user} ({status})"));
            }
            ClientEvent::PresenceSnapshot(entries) => {
                self.presence = entries.into_iter().map(|e| (e.user, e.presence)).collect();
                self.presence_dirty = true;
                self.names.add(self.presence.keys());
            }
            ClientEvent::PresenceChanged { user, presence } => {
                self.names.add([&user]);
                // A user new to the list (just registered) shows up offline: that is no news.
                let new = self.presence.insert(user.clone(), presence).is_none();
                if !(new && presence == Presence::Offline) {
                    self.info(&self.style.change(&self.label(&user), presence));
                }
            }
            ClientEvent::Profiles(cards) => {
                // Newer than what we had (the client core compared `rev`): a name changed
                // is news only once the list is up.
                for card in cards {
                    self.profiles.insert(card.user.clone(), card);
                }
                self.presence_dirty = true;
            }
            ClientEvent::Profile { card, .. } => {
                self.profiles.insert(card.user.clone(), card.clone());
                self.show_profile(&card);
            }
            ClientEvent::OfflineWaiting { count } => {
                self.away_header = Some(count);
                let s = if count == 1 { "" } else { "s" };
                self.info(&format!("{count} offline message{s}:"));
            }
            ClientEvent::Message(delivery) => {
                if !self.mailbox_done && self.away_header.is_none() {
                    // A server from before `OfflineWaiting` says no count first.
                    self.away_header = Some(0);
                    self.info("messages that came while you were away:");
                }
                // Acked only once on the screen (or in the file standard output goes to):
                // one that could not be written comes again at the next login.
                if self.show_message(&delivery).is_ok() {
                    self.session.command(ClientCommand::Ack(delivery.seq));
                }
            }
            ClientEvent::MessageSent { id, .. } => {
                self.resolve_ids();
                if let Some(out) = self.outgoing.remove(&id)
                    && out.queued
                {
                    self.info(&format!("queued message to {} sent", out.to));
                }
            }
            ClientEvent::SendDeferred {
                id,
                code: ErrorCode::StorageFailed,
            } => {
                self.resolve_ids();
                let to = self
                    .outgoing
                    .get(&id)
                    .map_or_else(|| "?".to_string(), |o| o.to.to_string());
                self.error(&format!(
                    "message to {to}: the server could not store it (its database is failing); \
                     trying again"
                ));
            }
            ClientEvent::SendDeferred { .. } => {}
            ClientEvent::SendFailed { id, code } => {
                self.resolve_ids();
                let to = self
                    .outgoing
                    .remove(&id)
                    .map_or_else(|| "?".to_string(), |o| o.to.to_string());
                self.error(&format!("message to {to} not sent: {code}"));
            }
            ClientEvent::OfflineDone { count } => {
                self.mailbox_done = true;
                // Said already before them, unless more came or some could not be read.
                if count > 0 && self.away_header != Some(count) {
                    let s = if count == 1 { "" } else { "s" };
                    self.info(&format!("{count} offline message{s}"));
                }
            }
            ClientEvent::OwnStatus(status) => {
                if status != self.status {
                    self.status = status;
                    self.info(&format!("your status: {}", self.style.status(status)));
                }
            }
            ClientEvent::Contacts(list) => {
                self.names.add(&list);
                self.contacts = Some(list);
                self.show_contacts();
            }
            ClientEvent::Groups(book) => {
                self.groups = book;
                // At login only when there are groups to show; every change after that.
                if self.groups_shown || !self.groups.groups().is_empty() {
                    self.groups_shown = true;
                    self.show_groups();
                }
            }
            ClientEvent::History { with, items } => self.show_history(&with, &items),
            ClientEvent::RoomMembers {
                room,
                name,
                full,
                members,
            } => {
                let profiles = &self.profiles;
                let label = |u: &UserId| breeze_core::profile::label(u, profiles.get(u));
                for line in self
                    .rooms
                    .update(&self.style, &label, room, name, full, members)
                {
                    self.info(&line);
                }
                self.names.add(self.rooms.members());
            }
            ClientEvent::RoomLeft { room } => {
                let name = self.rooms.left(room).unwrap_or_else(|| format!("#{room}"));
                if self.room_open == Some(room) {
                    self.room_open = None;
                }
                self.info(&format!("you are no longer in {name}"));
            }
            ClientEvent::RoomMessage(d) => {
                // Acked once on the screen, like a 1:1 message.
                if self.show_room_message(&d).is_ok() {
                    self.session.command(ClientCommand::Room(RoomCommand::Ack {
                        room: d.room,
                        seq: d.seq,
                    }));
                }
            }
            ClientEvent::RoomHistory { room, items } => {
                let name = self.rooms.name(room);
                if items.is_empty() {
                    self.info(&format!("no messages in {name}"));
                }
                for d in items.iter().rev() {
                    let _ = self.show_room_message(d);
                }
            }
            ClientEvent::Who { .. } | ClientEvent::AdminDone { .. } => {}
            // The transfer agent takes these before the chat sees events.
            ClientEvent::Transfer(_) | ClientEvent::TransferError { .. } => {}
            ClientEvent::PasswordChanged => self.info("password changed"),
            // After login a `Login` error can only be about the mailbox.
            ClientEvent::Error {
                request: RequestKind::Login,
                code: ErrorCode::StorageFailed,
            } if self.logged_in => self.error(
                "the server cannot read your offline messages now; they come with the next login",
            ),
            ClientEvent::Error { request, code } => self.error(&ui::request_error(request, code)),
            ClientEvent::Throttled {
                request,
                retry_after,
            } => self.error(&format!(
                "{}: the server takes the next attempt in {}",
                ui::request_error(request, ErrorCode::RateLimited),
                ui::duration(retry_after)
            )),
            ClientEvent::Disconnected {
                reason,
                retry_at: Some(retry_at),
            } => {
                if reason.is_none() && !self.ever_logged_in {
                    // Never in: a wrong address or a server that is not there (every one of
                    // them, with several). Say so at once, as `send` does, rather than
                    // retry forever.
                    self.failures_before_login += 1;
                    if self.session.tried_every_server(self.failures_before_login) {
                        return Some(Err(Fatal(self.session.connection_failure())));
                    }
                }
                let wait = ui::duration(retry_at - self.session.clock.now());
                if self.logged_in {
                    let why = reason.map_or_else(|| "connection lost".into(), ui::close_reason);
                    self.error(&format!("disconnected ({why}), reconnecting in {wait}"));
                } else {
                    let why = match reason {
                        Some(reason) => format!("disconnected ({})", ui::close_reason(reason)),
                        None => self.session.connection_failure(),
                    };
                    self.error(&format!("{why}; retrying in {wait}"));
                }
                if std::mem::replace(&mut self.logged_in, false) {
                    self.presence.clear();
                    self.show_presence();
                }
            }
            // `Stopped` follows and says why.
            ClientEvent::Disconnected { retry_at: None, .. } => self.logged_in = false,
            ClientEvent::Stopped(reason) => return Some(stopped(reason)),
        }
        None
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Say(text) if self.room_open.is_some() => {
                let room = self.room_open.unwrap_or_default();
                self.say_in_room(room, text);
            }
            Action::Say(text) => match self.open.clone() {
                Some(to) => self.act(Action::Msg { to, text }),
                None => self.error(
                    "not a command: /open USER to talk to someone, /msg USER TEXT for one \
                     message, /help for more",
                ),
            },
            Action::Open(user) => {
                self.info(&format!(
                    "talking to {user}: plain lines go to them; /close to stop"
                ));
                self.open = Some(user);
                self.room_open = None;
            }
            Action::Close => match (self.open.take(), self.room_open.take()) {
                (Some(user), _) => self.info(&format!("no longer talking to {user}")),
                (_, Some(room)) => {
                    let name = self.rooms.name(room);
                    self.info(&format!("no longer talking in {name}"));
                }
                (None, None) => self.error("no conversation is open"),
            },
            Action::Room(action) => self.room(action),
            Action::Msg { to, text }
                if self.max_body.is_some_and(|max| text.len() > max as usize) =>
            {
                let max = self.max_body.unwrap_or(0);
                self.error(&format!(
                    "message to {to} not sent: {} bytes, and this server takes at most {max}",
                    text.len()
                ));
            }
            Action::Msg { to, text } => {
                let (tx, rx) = oneshot::channel();
                let queued = !self.logged_in;
                let you = self.style.paint(Colour::Bold, "you");
                let note = if queued {
                    self.style.paint(Colour::Grey, " (queued until logged in)")
                } else {
                    String::new()
                };
                let stamp = self.style.paint(Colour::Grey, &ui::now_stamp());
                self.line(&format!("{stamp} {you} → {to}: {text}{note}"));
                self.unresolved.push((
                    rx,
                    Outgoing {
                        to: to.clone(),
                        queued,
                    },
                ));
                self.session.command(ClientCommand::SendMessage {
                    to,
                    body: text,
                    attachment: None,
                    id: Some(tx),
                });
            }
            Action::Status(status) => self
                .session
                .command(ClientCommand::SetStatus(status.into())),
            Action::Who => {
                self.info(&format!(
                    "you are {} ({})",
                    self.session.user,
                    self.style.status(self.status)
                ));
                self.show_presence();
            }
            Action::Contacts => self.show_contacts(),
            Action::AddContact(user) => self.session.command(ClientCommand::AddContact(user)),
            Action::RemoveContact(user) => self.session.command(ClientCommand::RemoveContact(user)),
            Action::Groups => self.show_groups(),
            Action::GroupAdd(name) => self.session.command(ClientCommand::CreateGroup(name)),
            Action::GroupMove(user, name) => {
                if let Some(group) = self.group_named(&name) {
                    self.session
                        .command(ClientCommand::MoveContacts(vec![user], group));
                }
            }
            Action::GroupRename { from, to } => {
                if let Some(group) = self.group_named(&from) {
                    let edit = GroupEdit::Rename { name: to };
                    self.session.command(ClientCommand::EditGroup(group, edit));
                }
            }
            Action::GroupDelete(name) => {
                if let Some(group) = self.group_named(&name) {
                    let edit = GroupEdit::Delete;
                    self.session.command(ClientCommand::EditGroup(group, edit));
                }
            }
            Action::History { with, limit } => self.session.command(ClientCommand::History {
                with,
                before: None,
                limit,
            }),
            Action::ProfileText { field, text } => {
                // One request sets both fields: the other one is kept as last known.
                let mine = self.profiles.get(&self.session.user);
                let (mut name, mut sign) = mine.map_or((String::new(), String::new()), |c| {
                    (c.display_name.clone(), c.signature.clone())
                });
                match field {
                    ProfileField::Name => name = text,
                    ProfileField::Signature => sign = text,
                }
                self.session.command(ClientCommand::SetProfile {
                    display_name: name,
                    signature: sign,
                });
            }
            Action::ProfileAvatar(None) => self.session.command(ClientCommand::SetAvatar(None)),
            Action::ProfileAvatar(Some(file))
                if std::fs::metadata(&file)
                    .is_ok_and(|m| m.len() > breeze_core::profile::MAX_AVATAR_BYTES as u64) =>
            {
                // Refused by its size before a byte of it is read.
                self.error(&format!(
                    "{file}: larger than the {} KiB an avatar may be",
                    breeze_core::profile::MAX_AVATAR_BYTES / 1024
                ));
            }
            Action::ProfileAvatar(Some(file)) => match std::fs::read(&file) {
                // Checked here too, so a wrong file gets a reason naming it.
                Ok(image) => match breeze_core::profile::check_avatar(&image) {
                    Ok(_) => self.session.command(ClientCommand::SetAvatar(Some(image))),
                    Err(e) => self.error(&format!("{file}: {e}")),
                },
                Err(e) => self.error(&format!("{file}: {e}")),
            },
            Action::Whois(user) => self.session.command(ClientCommand::GetProfile {
                user,
                avatar: false,
            }),
            Action::Help => self.line(HELP),
            // Taken in the loop, which can wait for the agent.
            Action::SendFile { .. } | Action::Accept(_) | Action::Decline(_) => {}
            Action::Quit | Action::Nothing => {}
        }
    }

    fn room(&mut self, action: RoomAction) {
        let command = |c| ClientCommand::Room(c);
        match action {
            RoomAction::List => {
                let lines = self.rooms.lines(&self.style, &|u| self.label(u));
                if lines.is_empty() {
                    self.info("you are in no room; /room create NAME makes one");
                }
                for line in lines {
                    self.line(&line);
                }
            }
            RoomAction::Create(name) => self.session.command(command(RoomCommand::Create(name))),
            RoomAction::Open(typed) => {
                let Some(room) = self.find_room(&typed) else {
                    return;
                };
                self.info(&format!(
                    "talking in {}: plain lines go to the room; /close to stop",
                    self.rooms.name(room)
                ));
                self.room_open = Some(room);
                self.open = None;
            }
            RoomAction::Invite { room, user } => {
                let Some(room) = self.find_room(&room) else {
                    return;
                };
                self.session.command(command(RoomCommand::Invite {
                    room,
                    user,
                    role: RoomRole::Member,
                }));
            }
            RoomAction::Kick { room, user } => {
                let Some(room) = self.find_room(&room) else {
                    return;
                };
                self.session
                    .command(command(RoomCommand::Remove { room, user }));
            }
            RoomAction::Leave(typed) => {
                let room = match typed {
                    Some(typed) => self.find_room(&typed),
                    None if self.room_open.is_none() => {
                        return self.error("no room is open: /room leave ROOM");
                    }
                    None => self.room_open,
                };
                let Some(room) = room else { return };
                let user = self.session.user.clone();
                self.session
                    .command(command(RoomCommand::Remove { room, user }));
            }
            RoomAction::History { room, limit } => {
                let Some(room) = self.find_room(&room) else {
                    return;
                };
                self.session.command(command(RoomCommand::History {
                    room,
                    before: None,
                    limit,
                }));
            }
        }
    }

    /// The room the user named, or an error line saying there is none.
    fn find_room(&self, typed: &str) -> Option<u64> {
        let found = self.rooms.find(typed);
        if found.is_none() {
            self.error(&format!("you are in no room {typed}; /rooms lists yours"));
        }
        found
    }

    fn say_in_room(&mut self, room: u64, text: String) {
        if let Some(max) = self.max_body.filter(|&max| text.len() > max as usize) {
            let name = self.rooms.name(room);
            return self.error(&format!(
                "message to {name} not sent: {} bytes, and this server takes at most {max}",
                text.len()
            ));
        }
        // The room echoes it back in its order, with the others' messages.
        self.session.command(ClientCommand::Room(RoomCommand::Send {
            room,
            body: text,
            id: None,
        }));
    }

    fn show_room_message(&self, d: &RoomDelivery) -> std::io::Result<()> {
        let stamp = self.style.paint(Colour::Grey, &ui::stamp(d.sent_at_ms));
        let room = self
            .style
            .paint(Colour::Grey, &format!("[{}]", self.rooms.name(d.room)));
        let from = self.style.paint(Colour::Bold, d.from.as_str());
        let mut text = format!("{stamp} {room} {from}: {}", d.body);
        if self.bell && d.from != self.session.user {
            text.push('\x07');
        }
        self.print(&text)
    }

    /// Picks up the ids of messages sent so far. The runner answers the id as it queues the
    /// message, so by the time the server confirms one its id is here.
    fn resolve_ids(&mut self) {
        for (mut rx, out) in std::mem::take(&mut self.unresolved) {
            match rx.try_recv() {
                Ok(id) => {
                    self.outgoing.insert(id, out);
                }
                Err(oneshot::error::TryRecvError::Empty) => self.unresolved.push((rx, out)),
                Err(oneshot::error::TryRecvError::Closed) => {}
            }
        }
    }

    fn show_message(&self, d: &Delivery) -> std::io::Result<()> {
        let stamp = self.style.paint(Colour::Grey, &ui::stamp(d.sent_at_ms));
        let from = self.style.paint(Colour::Bold, &self.label(&d.from));
        let mut text = format!("{stamp} {from}: {}", d.body);
        if let Some(a) = &d.attachment {
            text.push(' ');
            text.push_str(&ui::attachment(a));
        }
        if self.bell {
            text.push('\x07');
        }
        self.print(&text)
    }

    fn show_contacts(&self) {
        match &self.contacts {
            Some(list) if list.is_empty() => self.line("contacts: (none)"),
            Some(list) => {
                let shown: Vec<String> = list
                    .iter()
                    .map(|u| match self.presence.get(u) {
                        Some(p) => self.style.user(&self.label(u), *p),
                        None => u.to_string(),
                    })
                    .collect();
                self.line(&format!("contacts: {}", shown.join("  ")));
            }
            None => self.line(
                "contacts: not known yet in this session; /contacts add|remove USER shows the \
                 list",
            ),
        }
    }

    /// The group called `name`, or an error line saying there is none.
    fn group_named(&self, name: &str) -> Option<u32> {
        let found = self.groups.named(name);
        if found.is_none() {
            self.error(&format!("no group called {name:?}; /groups lists them"));
        }
        found
    }

    /// One line per group, the default one first: its name, how many of its members are on
    /// out of how many ("3/10"), and the members coloured by presence.
    fn show_groups(&self) {
        let contacts = self.contacts.iter().flatten().cloned().collect();
        for g in self.groups.listing(&contacts, &self.presence) {
            let header = self.style.paint(
                Colour::Bold,
                &format!("{} {}/{}", g.name, g.online, g.members.len()),
            );
            let members: Vec<String> = g
                .members
                .iter()
                .map(|u| match self.presence.get(u) {
                    Some(p) => self.style.user(&self.label(u), *p),
                    None => self.label(u),
                })
                .collect();
            self.line(&format!("{header}: {}", members.join("  ")));
        }
    }

    fn show_history(&self, with: &UserId, items: &[HistoryItem]) {
        if items.is_empty() {
            self.info(&format!("no messages with {with}"));
            return;
        }
        let s = if items.len() == 1 { "" } else { "s" };
        self.info(&format!("last {} message{s} with {with}:", items.len()));
        // Newest first on the wire; oldest first reads like a conversation.
        for item in items.iter().rev() {
            let stamp = self.style.paint(Colour::Grey, &ui::stamp(item.sent_at_ms));
            let from = if item.from == self.session.user {
                "you".to_string()
            } else {
                item.from.to_string()
            };
            let mut text = format!(
                "  {stamp} {} → {}: {}",
                self.style.paint(Colour::Bold, &from),
                if item.to == self.session.user {
                    "you"
                } else {
                    item.to.as_str()
                },
                item.body
            );
            if let Some(a) = &item.attachment {
                text.push(' ');
                text.push_str(&ui::attachment_info(a));
            }
            self.line(&text);
        }
    }
}

/// How the chat ends when the client core gives up.
/// Where received files go without `--downloads`: `~/Downloads` if there is one, else the
/// current directory.
fn default_downloads() -> PathBuf {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join("Downloads"))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("."))
}

fn stopped(reason: StopReason) -> Result<(), Fatal> {
    Err(Fatal(match reason {
        StopReason::LoggedOut => return Ok(()),
        StopReason::Closed(CloseReason::Replaced) => "kicked: logged in from another place".into(),
        StopReason::Closed(reason) => format!("disconnected: {reason}"),
        StopReason::BadCredentials => "wrong user name or password".into(),
        StopReason::UserTaken => "that user name is taken".into(),
        StopReason::Refused { request, code } => ui::request_error(request, code),
    }))
}
