//! Drives a `breeze_core::client::Client` over a `Connector`: the client core decides when
//! to connect, what to send and when to give up; this performs it with real (or simulated)
//! sockets and tokio time.
//!
//! Acks follow the client core's `AckMode`: by default a message is acked once the runner
//! has put its `ClientEvent::Message` into the application's event queue; under
//! `AckMode::Manual` only when the application sends `ClientCommand::Ack` for its seq.

use crate::listener::{Connector, Stream};
use crate::reader::FrameReader;
use crate::time::Clock;
use breeze_core::UserId;
use breeze_core::client::{AdminAction, Client, ClientEvent, ClientOutput};
use breeze_core::message::{Attachment, ClientMsg, GroupEdit, RoomRole, Status};
use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout};
use tracing::debug;

/// What the application asks of the client. Each is applied with the current time; commands
/// the client core only takes online answer `ClientEvent::Error{NotLoggedIn}` otherwise.
pub enum ClientCommand {
    /// Queue a message; its id (which `MessageSent`/`SendFailed` will name) goes to `id`.
    SendMessage {
        to: UserId,
        body: String,
        attachment: Option<Attachment>,
        id: Option<oneshot::Sender<u64>>,
    },
    /// The application has the message with this seq for good (`AckMode::Manual`; see
    /// `Client::ack`). Acks given together go out in one frame.
    Ack(u64),
    SetStatus(Status),
    AddContact(UserId),
    RemoveContact(UserId),
    /// Contact groups (a version 2 server; `ClientEvent::Groups` answers).
    CreateGroup(String),
    EditGroup(u32, GroupEdit),
    MoveContacts(Vec<UserId>, u32),
    ChangePassword {
        old: String,
        new: String,
    },
    History {
        with: UserId,
        before: Option<u64>,
        limit: u16,
    },
    /// The admin `who` query.
    Who,
    /// An admin's kick, ban or unban of a user (`ClientEvent::AdminDone` answers).
    Admin(AdminAction, UserId),
    /// Version 2: set the display name and signature (`ClientEvent::Profile` answers).
    SetProfile {
        display_name: String,
        signature: String,
    },
    /// Version 2: set (or with `None` remove) the avatar image.
    SetAvatar(Option<Vec<u8>>),
    /// Version 2: a user's profile card, with the image when `avatar`.
    GetProfile {
        user: UserId,
        avatar: bool,
    },
    /// Version 3: a transfer request, sent as given (`Client::send_transfer`); the
    /// `transfer` module's agent makes these.
    Transfer(ClientMsg),
    /// End the session; the client stays stopped until `Start`.
    Logout,
    /// Connect again after a stop, or retry now while waiting to reconnect.
    Start,
    /// Log out and return from `run_client`.
    Quit,
    /// A room request (protocol version 2).
    Room(RoomCommand),
}

/// What the application asks of the user's rooms (see `Client::create_room` and the rest).
pub enum RoomCommand {
    Create(String),
    Invite {
        room: u64,
        user: UserId,
        role: RoomRole,
    },
    /// Takes `user` out of `room`; the user's own name leaves it.
    Remove {
        room: u64,
        user: UserId,
    },
    /// Queue a message to `room`; its id goes to `id`, as for `SendMessage`.
    Send {
        room: u64,
        body: String,
        id: Option<oneshot::Sender<u64>>,
    },
    /// The application has every message of `room` up to `seq` (`AckMode::Manual`).
    Ack {
        room: u64,
        seq: u64,
    },
    History {
        room: u64,
        before: Option<u64>,
        limit: u16,
    },
}

impl fmt::Debug for RoomCommand {
    // Hand-written so message bodies never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomCommand::Create(_) => f.write_str("Create"),
            RoomCommand::Invite { room, user, role } => {
                write!(f, "Invite({user} to {room} as {role:?})")
            }
            RoomCommand::Remove { room, user } => write!(f, "Remove({user} from {room})"),
            RoomCommand::Send { room, .. } => write!(f, "Send(to {room})"),
            RoomCommand::Ack { room, seq } => write!(f, "Ack({room} {seq})"),
            RoomCommand::History { room, .. } => write!(f, "History({room})"),
        }
    }
}

impl fmt::Debug for ClientCommand {
    // Hand-written so that passwords and message bodies stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCommand::SendMessage { to, .. } => write!(f, "SendMessage(to {to})"),
            ClientCommand::Ack(seq) => write!(f, "Ack({seq})"),
            ClientCommand::SetStatus(s) => write!(f, "SetStatus({s:?})"),
            ClientCommand::AddContact(u) => write!(f, "AddContact({u})"),
            ClientCommand::RemoveContact(u) => write!(f, "RemoveContact({u})"),
            ClientCommand::CreateGroup(name) => write!(f, "CreateGroup({name:?})"),
            ClientCommand::EditGroup(group, edit) => write!(f, "EditGroup({group}, {edit:?})"),
            ClientCommand::MoveContacts(users, group) => {
                write!(f, "MoveContacts({} to {group})", users.len())
            }
            ClientCommand::ChangePassword { .. } => f.write_str("ChangePassword"),
            ClientCommand::History { with, .. } => write!(f, "History({with})"),
            ClientCommand::Who => f.write_str("Who"),
            ClientCommand::Admin(action, user) => write!(f, "Admin({action:?} {user})"),
            ClientCommand::SetProfile { .. } => f.write_str("SetProfile"),
            ClientCommand::SetAvatar(image) => {
                write!(f, "SetAvatar({} bytes)", image.as_ref().map_or(0, Vec::len))
            }
            ClientCommand::GetProfile { user, .. } => write!(f, "GetProfile({user})"),
            // The kind only: a chunk's bytes have no place in a log.
            ClientCommand::Transfer(msg) => write!(f, "Transfer({:?})", msg.kind()),
            ClientCommand::Logout => f.write_str("Logout"),
            ClientCommand::Start => f.write_str("Start"),
            ClientCommand::Quit => f.write_str("Quit"),
            ClientCommand::Room(room) => write!(f, "Room({room:?})"),
        }
    }
}

/// Where and how the client connects.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub addr: SocketAddr,
    /// More servers of the same cluster (CLUSTER.md). Attempts go round the list, `addr`
    /// first: each new connection goes to the next server, so a client whose node died or
    /// fenced itself (`Bye{NodeFenced}`) comes back through another node, and one whose
    /// first choice is down tries the next.
    pub fallbacks: Vec<SocketAddr>,
    /// A connect attempt that takes longer fails (the client core also gives up on its own
    /// deadline for connect, handshake and login together).
    pub connect_timeout: Duration,
    /// How long writing what is queued may take when the client core closes a connection
    /// (the `Logout` before a quit).
    pub close_timeout: Duration,
    /// Largest frame accepted from the server; a larger one ends the connection.
    pub max_frame: u32,
}

impl ClientSettings {
    pub fn new(addr: SocketAddr) -> Self {
        ClientSettings {
            addr,
            fallbacks: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            // A delivery carries an attachment of up to the server's limit; be generous.
            max_frame: 16 * 1024 * 1024,
        }
    }

    /// The server to dial at connection attempt `attempt` (0, 1, 2, … over the run).
    pub fn server(&self, attempt: usize) -> SocketAddr {
        match attempt % (1 + self.fallbacks.len()) {
            0 => self.addr,
            i => self.fallbacks[i - 1],
        }
    }
}

type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send>>;

/// Commands applied in one turn of the loop when several are waiting, so that acks (and
/// other requests) given together leave in one batch, while a flood of commands still lets
/// the socket and timers have their turn.
const COMMANDS_PER_TURN: usize = 256;

/// Runs `client` until `Quit` (or until `commands` is closed, which counts as `Quit`), and
/// returns it. `clock` must be the clock whose `now()` the client was created with.
///
/// Events are sent to `events` as they happen; the application must keep receiving them,
/// since the runner waits for room rather than drop a message. If `events` is closed, events
/// are discarded. An application that acks (`AckMode::Manual`) must not wait for room in
/// `commands` while it is not receiving events: the two would wait for each other. (The
/// `breeze` CLI forwards an unbounded queue into `commands`.)
pub async fn run_client<C: Connector>(
    mut client: Client,
    clock: Clock,
    connector: C,
    settings: ClientSettings,
    mut commands: mpsc::Receiver<ClientCommand>,
    events: mpsc::Sender<ClientEvent>,
) -> Client {
    let mut conn: Option<ClientConn<C::Stream>> = None;
    let mut connecting: Option<Connecting<C::Stream>> = None;
    let mut quitting = false;
    // Connection attempts so far: which server the next one dials.
    let mut attempts = 0usize;
    // The server of the attempt in progress or of the connection up, for the logs.
    let mut dialled = settings.addr;
    loop {
        // Events first: taking a `Message` may queue its ack, which the outputs then carry.
        while let Some(event) = client.poll_event() {
            let _ = events.send(event).await;
        }
        while let Some(out) = client.poll_output() {
            match out {
                ClientOutput::Connect => {
                    conn = None;
                    // The future owns its own connector, so it can be kept across loop turns
                    // and simply dropped when the client core abandons the attempt.
                    let mut connector = connector.clone();
                    dialled = settings.server(attempts);
                    attempts += 1;
                    let (addr, limit) = (dialled, settings.connect_timeout);
                    connecting = Some(Box::pin(async move {
                        match timeout(limit, connector.connect(addr)).await {
                            Ok(result) => result,
                            Err(_) => {
                                Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
                            }
                        }
                    }));
                }
                ClientOutput::Send(payload) => {
                    // Without a connection there is nobody to send to; the client core only
                    // sends on a connection it was told is up.
                    if let Some(conn) = &mut conn {
                        conn.queue.push_back(stream_frame(&payload));
                    }
                }
                ClientOutput::Disconnect => {
                    connecting = None;
                    if let Some(conn) = conn.take() {
                        conn.close(settings.close_timeout).await;
                    }
                }
            }
        }
        if quitting {
            if let Some(conn) = conn.take() {
                conn.close(settings.close_timeout).await;
            }
            return client;
        }

        let wake = client.poll_timeout().map(|at| clock.tokio(at));
        tokio::select! {
            biased;
            command = commands.recv() => {
                let now = clock.now();
                match command {
                    Some(ClientCommand::Quit) | None => {
                        client.logout(now);
                        quitting = true;
                    }
                    Some(command) => {
                        apply(&mut client, now, command);
                        for _ in 1..COMMANDS_PER_TURN {
                            match commands.try_recv() {
                                Ok(ClientCommand::Quit) | Err(TryRecvError::Disconnected) => {
                                    client.logout(now);
                                    quitting = true;
                                    break;
                                }
                                Ok(command) => apply(&mut client, now, command),
                                Err(TryRecvError::Empty) => break,
                            }
                        }
                    }
                }
            }
            connected = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                connecting = None;
                let now = clock.now();
                match connected {
                    Ok(stream) => {
                        conn = Some(ClientConn::new(stream, settings.max_frame));
                        client.handle_connected(now);
                    }
                    Err(e) => {
                        debug!(addr = %dialled, error = %e, "connect failed");
                        client.handle_disconnected(now);
                    }
                }
            }
            io = async { conn.as_mut().expect("guarded").step().await }, if conn.is_some() => {
                match io {
                    Io::Wrote => {}
                    Io::Frames(frames) => {
                        client.handle_frames(clock.now(), frames.iter().map(|f| &f[..]));
                    }
                    Io::Closed => {
                        conn = None;
                        client.handle_disconnected(clock.now());
                    }
                }
            }
            () = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {
                client.handle_timeout(clock.now());
            }
        }
    }
}

fn apply(client: &mut Client, now: breeze_core::Instant, command: ClientCommand) {
    match command {
        ClientCommand::SendMessage {
            to,
            body,
            attachment,
            id,
        } => {
            let sent = client.send_message(now, to, body, attachment);
            if let Some(reply) = id {
                let _ = reply.send(sent);
            }
        }
        ClientCommand::Ack(seq) => client.ack(now, seq),
        ClientCommand::SetStatus(status) => client.set_status(now, status),
        ClientCommand::AddContact(user) => client.add_contact(now, user),
        ClientCommand::RemoveContact(user) => client.remove_contact(now, user),
        ClientCommand::CreateGroup(name) => client.create_group(now, name),
        ClientCommand::EditGroup(group, edit) => client.edit_group(now, group, edit),
        ClientCommand::MoveContacts(users, group) => client.move_contacts(now, users, group),
        ClientCommand::ChangePassword { old, new } => client.change_password(now, old, new),
        ClientCommand::History {
            with,
            before,
            limit,
        } => client.request_history(now, with, before, limit),
        ClientCommand::Who => client.admin_who(now),
        ClientCommand::Admin(action, user) => client.admin(now, action, user),
        ClientCommand::SetProfile {
            display_name,
            signature,
        } => client.set_profile(now, display_name, signature),
        ClientCommand::SetAvatar(image) => client.set_avatar(now, image),
        ClientCommand::GetProfile { user, avatar } => client.get_profile(now, user, avatar),
        ClientCommand::Transfer(msg) => client.send_transfer(now, msg),
        ClientCommand::Logout => client.logout(now),
        ClientCommand::Start => client.start(now),
        // Handled by the loop.
        ClientCommand::Quit => {}
        ClientCommand::Room(room) => match room {
            RoomCommand::Create(name) => client.create_room(now, name),
            RoomCommand::Invite { room, user, role } => client.room_invite(now, room, user, role),
            RoomCommand::Remove { room, user } => client.room_remove(now, room, user),
            RoomCommand::Send { room, body, id } => {
                let sent = client.send_room_message(now, room, body);
                if let Some(reply) = id {
                    let _ = reply.send(sent);
                }
            }
            RoomCommand::Ack { room, seq } => client.ack_room(now, room, seq),
            RoomCommand::History {
                room,
                before,
                limit,
            } => client.room_history(now, room, before, limit),
        },
    }
}

enum Io {
    Wrote,
    Frames(Vec<Bytes>),
    Closed,
}

/// One connection to the server: both halves, the read buffer and the frames to write.
struct ClientConn<S> {
    rd: ReadHalf<S>,
    wr: WriteHalf<S>,
    reader: FrameReader,
    queue: VecDeque<Bytes>,
    current: Bytes,
}

impl<S: Stream> ClientConn<S> {
    fn new(stream: S, max_frame: u32) -> Self {
        let (rd, wr) = tokio::io::split(stream);
        ClientConn {
            rd,
            wr,
            reader: FrameReader::new(max_frame),
            queue: VecDeque::new(),
            current: Bytes::new(),
        }
    }

    /// Makes progress writing or reading, whichever comes first. Cancel-safe: a write either
    /// took bytes (accounted for) or not, and bytes read stay in the buffer.
    async fn step(&mut self) -> Io {
        use tokio::io::AsyncReadExt;
        if self.current.is_empty() {
            self.current = self.queue.pop_front().unwrap_or_default();
        }
        let writing = !self.current.is_empty();
        tokio::select! {
            biased;
            written = self.wr.write(&self.current), if writing => match written {
                Ok(0) | Err(_) => Io::Closed,
                Ok(n) => {
                    self.current.advance(n);
                    Io::Wrote
                }
            },
            read = self.rd.read_buf(self.reader.buf_for_read()) => match read {
                Ok(0) | Err(_) => Io::Closed,
                Ok(_) => {
                    let mut frames = Vec::new();
                    loop {
                        match self.reader.next_frame() {
                            Ok(Some(frame)) => frames.push(frame),
                            Ok(None) => break Io::Frames(frames),
                            Err(e) => {
                                debug!(error = %e, "server sent an oversize frame");
                                break Io::Closed;
                            }
                        }
                    }
                }
            },
        }
    }

    /// Writes what is queued (within `limit`) and closes.
    async fn close(mut self, limit: Duration) {
        let flush = async {
            self.wr.write_all(&self.current).await?;
            while let Some(frame) = self.queue.pop_front() {
                self.wr.write_all(&frame).await?;
            }
            self.wr.shutdown().await
        };
        let _ = timeout(limit, flush).await;
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(365 * 86_400)
}

/// `payload` with its length prefix, as the byte stream carries it.
fn stream_frame(payload: &[u8]) -> bytes::Bytes {
    let mut out = bytes::BytesMut::new();
    breeze_core::codec::put_frame(&mut out, payload);
    out.freeze()
}
