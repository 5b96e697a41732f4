//! A WebSocket connection as a Breeze frame connection: one payload per binary message, no
//! length prefix (PROTOCOL.md §1.3). It implements the host's `Framed` seam, so the
//! connection driver in breeze-transport-tokio runs it exactly like a TCP connection: the
//! same outbound queue, slow-reader handling, `Bye` on close and connection limit.
//!
//! Two things are WebSocket's own:
//! * **The server asks for heartbeats.** A browser in a hidden tab runs timers at most once
//!   a minute, so it cannot be trusted to ping on time; but it answers a WebSocket Ping with
//!   a Pong without running any JavaScript. So the reader sends a Ping whenever the peer has
//!   been silent for `ping_after` (the heartbeat interval), and reports every Ping or Pong it
//!   receives as life (`heard_alive`), which the core counts like a frame. The dead-peer rule
//!   is unchanged: dead at the last inbound message + the heartbeat timeout.
//! * **What it refuses.** A text message is no Breeze frame (`Bye{Malformed}`, close code
//!   1003); a message over `max_frame` is refused by tungstenite from its header, before
//!   its payload is buffered (`Bye{FrameTooLarge}`, close code 1009); a protocol violation
//!   (an unmasked frame, a bad opcode) is `Bye{Malformed}` with close code 1002.

use breeze_transport_tokio::{BadInput, FrameRead, FrameWrite, Framed, Stream, WriteStep};
use bytes::Bytes;
use futures_util::{Sink, Stream as _};
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Bytes tungstenite reads from the socket at a time, and the read buffer it allocates for
/// every connection up front. Its default is 128 KiB, zero-filled: 2.5 GiB for 20,000 idle
/// connections. A Breeze frame is typically under 100 bytes; a 1 MiB attachment takes
/// more reads, which is cheap next to what the default would cost every idle connection.
pub const READ_BUFFER: usize = 512;
/// Outbound messages are gathered up to this many bytes before a write (a flush writes the
/// rest), so that a burst of small frames costs one system call rather than one each.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// tungstenite's settings for a server connection accepting messages of up to `max_frame`
/// bytes (the core's frame limit: one message is one frame).
pub fn ws_config(max_frame: u32) -> WebSocketConfig {
    let max = max_frame as usize;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // The host's outbound queue is the real bound on what waits for a slow reader
        // (`Bye{SlowReader}`); this one only has to hold what the driver hands over at once.
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// A server-side WebSocket connection, ready to be admitted to a host.
#[derive(Debug)]
pub struct WsFrames<S> {
    ws: WebSocketStream<S>,
    ping_after: Duration,
}

impl<S: Stream> WsFrames<S> {
    /// `ws` must have been made with [`ws_config`]; the server sends a Ping whenever the
    /// peer has been silent for `ping_after`.
    pub fn new(ws: WebSocketStream<S>, ping_after: Duration) -> Self {
        WsFrames { ws, ping_after }
    }
}

/// Both halves share the one tungstenite state machine: it answers Pings and Closes from its
/// reading side, and the reader sends our Pings. A plain mutex, only ever held inside one
/// `poll` (never across an await), and both halves live in the same task.
struct Shared<S> {
    ws: WebSocketStream<S>,
    /// The close code our Close frame carries: 1000 unless the peer sent what we refuse.
    close_code: CloseCode,
}

type Link<S> = Arc<Mutex<Shared<S>>>;

fn lock<S>(link: &Link<S>) -> MutexGuard<'_, Shared<S>> {
    // A poll that panicked left the tungstenite state as it was; the connection is going
    // away anyway.
    link.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: Stream> Framed for WsFrames<S> {
    type Reader = WsReader<S>;
    type Writer = WsWriter<S>;

    fn split(self, max_frame: u32) -> (WsReader<S>, WsWriter<S>) {
        let link = Arc::new(Mutex::new(Shared {
            ws: self.ws,
            close_code: CloseCode::Normal,
        }));
        let reader = WsReader {
            link: link.clone(),
            frames: VecDeque::new(),
            bad: None,
            alive: false,
            max_frame,
            ping_after: self.ping_after,
            quiet_since: Instant::now(),
            ping: Box::pin(sleep_until(Instant::now() + self.ping_after)),
            ping_unflushed: false,
            broken: false,
        };
        let writer = WsWriter {
            link,
            pending: VecDeque::new(),
            pending_bytes: 0,
        };
        (reader, writer)
    }
}

/// Messages taken from tungstenite in one `fill` at most: enough to batch a busy peer's
/// frames, few enough that one peer cannot hold the task.
const READ_BATCH: usize = 64;

/// The reading half: binary messages in, payloads out; Pings out when the peer is quiet.
pub struct WsReader<S> {
    link: Link<S>,
    frames: VecDeque<Bytes>,
    bad: Option<BadInput>,
    alive: bool,
    max_frame: u32,
    ping_after: Duration,
    /// When the peer was last heard from, or last asked: the next Ping is due `ping_after`
    /// later.
    quiet_since: Instant,
    /// Wakes the reader when a Ping may be due. Lazy, like the core's deadline queue: a
    /// message does not move it; when it fires before the Ping is really due (the peer
    /// spoke meanwhile) it is set to the real instant. So a busy connection touches the
    /// timer once an interval, not once a message (re-arming a timer per message was a
    /// visible cost at chat saturation). Boxed: a timer is large and `Sleep` is not `Unpin`.
    ping: Pin<Box<Sleep>>,
    ping_unflushed: bool,
    /// tungstenite gave up on the stream (an oversize header, a protocol violation): its
    /// framing is lost, so `discard` reads raw bytes.
    broken: bool,
}

impl<S> std::fmt::Debug for WsReader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsReader")
            .field("frames", &self.frames.len())
            .field("bad", &self.bad)
            .finish_non_exhaustive()
    }
}

impl<S: Stream> WsReader<S> {
    fn refuse(&mut self, shared: &mut Shared<S>, bad: BadInput, code: CloseCode) {
        self.bad = Some(bad);
        shared.close_code = code;
    }

    /// Takes what tungstenite has ready; when nothing is, sends a Ping if one is due.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let link = self.link.clone();
        let mut shared = lock(&link);
        let mut got = false;
        for _ in 0..READ_BATCH {
            let next = Pin::new(&mut shared.ws).poll_next(cx);
            let msg = match next {
                Poll::Pending => break,
                Poll::Ready(None) => return Poll::Ready(Ok(got)),
                Poll::Ready(Some(Ok(msg))) => msg,
                Poll::Ready(Some(Err(e))) => {
                    self.broken = true;
                    match e {
                        WsError::Io(e) => return Poll::Ready(Err(e)),
                        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => {
                            let bad = BadInput::TooLarge { len: size as u64 };
                            self.refuse(&mut shared, bad, CloseCode::Size);
                        }
                        WsError::Utf8(_) => {
                            self.refuse(&mut shared, BadInput::NotAFrame, CloseCode::Unsupported);
                        }
                        _ => self.refuse(&mut shared, BadInput::NotAFrame, CloseCode::Protocol),
                    }
                    return Poll::Ready(Ok(true));
                }
            };
            if !got {
                // One clock read per batch: the batch arrived together.
                self.quiet_since = Instant::now();
            }
            match msg {
                Message::Binary(payload) => {
                    if payload.len() > self.max_frame as usize {
                        let bad = BadInput::TooLarge {
                            len: payload.len() as u64,
                        };
                        self.refuse(&mut shared, bad, CloseCode::Size);
                        return Poll::Ready(Ok(true));
                    }
                    self.frames.push_back(payload);
                }
                Message::Text(_) => {
                    self.refuse(&mut shared, BadInput::NotAFrame, CloseCode::Unsupported);
                    return Poll::Ready(Ok(true));
                }
                // tungstenite has queued the Pong to a Ping already.
                Message::Ping(_) | Message::Pong(_) => self.alive = true,
                // Answered by tungstenite; the stream ends at the next poll.
                Message::Close(_) | Message::Frame(_) => {}
            }
            got = true;
        }
        if got {
            return Poll::Ready(Ok(true));
        }
        if self.ping_unflushed {
            match Pin::new(&mut shared.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.ping_unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Poll::Pending => {}
            }
        }
        // Bounded: each pass moves the timer to a later instant than now.
        while self.ping.as_mut().poll(cx).is_ready() {
            let due = self.quiet_since + self.ping_after;
            let now = Instant::now();
            if due > now {
                // The peer spoke since the timer was set: not due yet.
                self.ping.as_mut().reset(due);
                continue;
            }
            Pin::new(&mut shared.ws)
                .start_send(Message::Ping(Bytes::new()))
                .map_err(io_error)?;
            self.quiet_since = now;
            self.ping.as_mut().reset(now + self.ping_after);
            match Pin::new(&mut shared.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.ping_unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Poll::Pending => self.ping_unflushed = true,
            }
        }
        Poll::Pending
    }
}

impl<S: Stream> FrameRead for WsReader<S> {
    async fn fill(&mut self) -> io::Result<bool> {
        // Cancel-safe: all state is in `self`.
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    fn next_frame(&mut self) -> Result<Option<Bytes>, BadInput> {
        if let Some(payload) = self.frames.pop_front() {
            return Ok(Some(payload));
        }
        if self.frames.capacity() > 0 {
            // An idle connection holds no queue.
            self.frames = VecDeque::new();
        }
        match self.bad.take() {
            Some(bad) => Err(bad),
            None => Ok(None),
        }
    }

    fn heard_alive(&mut self) -> bool {
        std::mem::take(&mut self.alive)
    }

    async fn discard(&mut self) {
        let link = self.link.clone();
        if !self.broken {
            // Until the peer's Close (answering ours) ends the stream.
            poll_fn(|cx| {
                let mut shared = lock(&link);
                loop {
                    match Pin::new(&mut shared.ws).poll_next(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(None) => return Poll::Ready(()),
                        Poll::Ready(Some(Err(_))) => {
                            self.broken = true;
                            return Poll::Ready(());
                        }
                    }
                }
            })
            .await;
        }
        if self.broken {
            // The framing is lost: read raw bytes until the peer closes.
            let mut sink = [0u8; 512];
            poll_fn(|cx| {
                let mut shared = lock(&link);
                loop {
                    let mut buf = tokio::io::ReadBuf::new(&mut sink);
                    let raw = Pin::new(shared.ws.get_mut());
                    match tokio::io::AsyncRead::poll_read(raw, cx, &mut buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                        Poll::Ready(_) => return Poll::Ready(()),
                    }
                }
            })
            .await;
        }
    }
}

/// Payloads joined into tungstenite's buffer before the driver is told how much it took.
const JOIN_UP_TO: usize = 64 * 1024;
const JOIN_FRAMES: usize = 256;

/// The writing half: each payload one binary message.
pub struct WsWriter<S> {
    link: Link<S>,
    pending: VecDeque<Bytes>,
    pending_bytes: usize,
}

impl<S> std::fmt::Debug for WsWriter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsWriter")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<S: Stream> WsWriter<S> {
    /// Hands pending payloads to tungstenite while it takes them; how many bytes it took.
    fn poll_hand_over(
        &mut self,
        shared: &mut Shared<S>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let mut took = 0;
        while !self.pending.is_empty() {
            match Pin::new(&mut shared.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Poll::Pending => break,
            }
            let payload = self.pending.pop_front().expect("checked non-empty");
            took += payload.len().max(1);
            self.pending_bytes -= payload.len();
            Pin::new(&mut shared.ws)
                .start_send(Message::Binary(payload))
                .map_err(io_error)?;
        }
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        if took > 0 {
            Poll::Ready(Ok(took))
        } else {
            Poll::Pending
        }
    }
}

impl<S: Stream> FrameWrite for WsWriter<S> {
    fn put(&mut self, payload: Bytes) -> bool {
        self.pending_bytes += payload.len();
        self.pending.push_back(payload);
        self.pending_bytes < JOIN_UP_TO && self.pending.len() < JOIN_FRAMES
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    async fn write_step(&mut self) -> io::Result<WriteStep> {
        let link = self.link.clone();
        poll_fn(|cx| {
            let mut shared = lock(&link);
            if self.pending.is_empty() {
                return Pin::new(&mut shared.ws)
                    .poll_flush(cx)
                    .map(|r| r.map(|()| WriteStep::Flushed).map_err(io_error));
            }
            self.poll_hand_over(&mut shared, cx)
                .map(|r| r.map(WriteStep::Wrote))
        })
        .await
    }

    async fn finish(&mut self) -> io::Result<()> {
        let link = self.link.clone();
        poll_fn(|cx| {
            let mut shared = lock(&link);
            while !self.pending.is_empty() {
                std::task::ready!(self.poll_hand_over(&mut shared, cx))?;
            }
            Poll::Ready(Ok::<(), io::Error>(()))
        })
        .await?;
        let code = lock(&link).close_code;
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(""),
        }));
        poll_fn(|cx| {
            let mut shared = lock(&link);
            std::task::ready!(Pin::new(&mut shared.ws).poll_ready(cx)).map_err(io_error)?;
            Poll::Ready(
                Pin::new(&mut shared.ws)
                    .start_send(close.clone())
                    .map_err(io_error),
            )
        })
        .await?;
        poll_fn(|cx| Pin::new(&mut lock(&link).ws).poll_flush(cx))
            .await
            .map_err(io_error)
    }
}
