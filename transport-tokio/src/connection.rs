//! One task per connection: it reads frames for the core and writes what the core queued.
//!
//! The driver is generic over [`Framed`]: it sees payloads, never a transport's framing, so
//! every transport shares the queue, slow-reader, closing and `Bye` handling here. Reading
//! and writing share one task (over the two halves, driven from one `select!`) rather than a task each: a task costs memory at 20k connections, and one task
//! sees both directions, so ending a connection needs no coordination between two.

use crate::frames::{BadInput, FrameRead, FrameWrite, Framed, WriteStep};
use crate::in_place::{self, Answer, Tally};
use crate::link::{Link, LinkHandle, Next};
use crate::time::Clock;
use breeze_core::ConnId;
use breeze_core::message::CloseReason;
use breeze_core::server;
use bytes::Bytes;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::{Instant, Sleep, sleep, timeout_at};

/// What connections tell the core task.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A new connection; sent before its task starts, so it precedes all of its frames.
    Accepted {
        conn: ConnId,
        peer: SocketAddr,
        link: LinkHandle,
    },
    Frame {
        conn: ConnId,
        payload: Bytes,
    },
    /// The peer sent what its transport refuses (a frame over the limit, a WebSocket text
    /// message); nothing more is read from it.
    Refused {
        conn: ConnId,
        bad: BadInput,
    },
    /// The peer showed life without a frame (a WebSocket Pong).
    Alive {
        conn: ConnId,
    },
    /// The peer closed or reset the connection.
    Closed {
        conn: ConnId,
    },
}

/// Per-connection settings, the same for every connection of a host (`Shared`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    pub(crate) max_frame: u32,
    /// How long a connection told to close may take to write what is queued and close.
    pub(crate) close_timeout: Duration,
    /// After closing our side, how long to wait for the peer's close (see `FrameRead::discard`).
    pub(crate) linger: Duration,
    /// How long a `Bye` to a slow reader or a refused connection may take to write.
    pub(crate) bye_timeout: Duration,
    /// The core's clock, for when a ping answered in place was heard.
    pub(crate) clock: Clock,
}

/// What every connection of one host shares: one `Arc` in each connection's task rather
/// than a copy of each part, since 19,900 idle connections are 19,900 of these futures. With
/// the settings, the pings' clock and their tally copied in, an idle client's share of the
/// server's memory (`hold`, 19,900 clients) was 3.77 kB where it had been 3.52; shared, 3.63
/// (96.5 MiB all idle against 95.9, the rest the core's `last_active`).
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: ConnSettings,
    /// Pings its connections answered in place, for the host's metrics.
    pub(crate) tally: Tally,
}

/// How the main loop ended.
enum Ending {
    /// The host closed the connection and everything queued was written.
    Flushed,
    /// The host gave up on the queue.
    Abort(CloseReason),
    /// The socket failed, or the closing deadline passed.
    Broken,
    /// The core task is gone.
    HostGone,
}

/// Runs one connection to its end. Holds `_permit` (a slot of the connection limit) until the
/// socket is really closed.
pub(crate) async fn drive<F: Framed>(
    conn: ConnId,
    frames: F,
    link: Arc<Link>,
    core: mpsc::Sender<Inbound>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let settings = &shared.settings;
    let (mut rd, mut wr) = frames.split(settings.max_frame);
    // Frames handed to the core: a ping is answered in place only once the core has
    // handled as many (`in_place::answer`).
    let mut forwarded = 0;
    // Stops once the peer closed (reported to the core) or sent an oversize frame (likewise).
    let mut reading = true;
    // Bytes taken from the queue and not yet written and flushed: `write_out` runs while set.
    // Set, not cleared, by a turn that starts with bytes pending, since a `write_out` that
    // another branch cancelled may have written some and not flushed them.
    let mut unflushed = false;
    // Boxed, and only once closing: a timer is large, and an idle connection needs none.
    let mut deadline: Option<Pin<Box<Sleep>>> = None;

    let ending = loop {
        match link.next(!wr.has_pending(), |payload| wr.put(payload)) {
            Next::Write | Next::Wait => {}
            Next::Flushed if !unflushed => break Ending::Flushed,
            Next::Flushed => {}
            Next::Abort(reason) => break Ending::Abort(reason),
        }
        if deadline.is_none() && link.closing() {
            deadline = Some(Box::pin(sleep(settings.close_timeout)));
        }
        unflushed |= wr.has_pending();
        tokio::select! {
            biased;
            () = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() => {
                break Ending::Broken;
            }
            () = link.changed() => {}
            written = write_out(&mut wr), if unflushed => match written {
                Ok(()) => unflushed = false,
                Err(_) => break Ending::Broken,
            },
            read = rd.fill(), if reading => match read {
                Ok(false) | Err(_) => {
                    // The peer is gone, or half-closed. Stop reading but keep writing until
                    // the host closes us: after a `Logout` and a half-close the peer still
                    // gets its `Bye`.
                    reading = false;
                    if !to_core(&core, Inbound::Closed { conn }).await {
                        break Ending::HostGone;
                    }
                }
                Ok(true) => {
                    match forward_frames(
                        conn, &mut rd, &mut wr, &core, &link, &mut forwarded, &shared,
                    )
                    .await
                    {
                        Forwarded::All => {}
                        Forwarded::Refused => reading = false,
                        Forwarded::HostGone => break Ending::HostGone,
                    }
                    // What the writer holds now (nearly always a `Pong` answered in place)
                    // is written in this turn, as far as the socket takes it at once.
                    // Through the queue and a turn of its own (a `select!` over every
                    // branch, a look at the queue) an idle ping cost 371 more instructions:
                    // 6,784 against 6,413 (callgrind; BENCHMARKS.md). What the socket does
                    // not take waits for `write_out` in the `select!`, as before.
                    if wr.has_pending() {
                        unflushed = true;
                        match poll_once(write_out(&mut wr)).await {
                            Some(Ok(())) => unflushed = false,
                            Some(Err(_)) => break Ending::Broken,
                            None => {}
                        }
                    }
                }
            },
        }
    };

    // A socket that failed on a write, before a read noticed, was not reported yet; unless
    // the host already let go of it, the core must hear now rather than at its heartbeat
    // timeout.
    if reading && !link.closing() {
        to_core(&core, Inbound::Closed { conn }).await;
    }
    let deadline = match &deadline {
        Some(sleep) => sleep.deadline(),
        None => Instant::now() + settings.close_timeout,
    };
    // Boxed so that the rarely taken closing path adds nothing to every idle connection.
    Box::pin(finish(ending, rd, wr, deadline, *settings)).await;
}

/// Ends the connection the way the main loop decided. Whenever a last frame was written, the
/// write side is shut down first and the connection then reads until the peer closes (up to
/// the linger), so that the kernel does not answer unread input with a reset that destroys
/// the `Bye` before the peer reads it.
async fn finish<R: FrameRead, W: FrameWrite>(
    ending: Ending,
    mut rd: R,
    mut wr: W,
    deadline: Instant,
    settings: ConnSettings,
) {
    let said = match ending {
        Ending::Flushed => timeout_at(deadline, wr.finish()).await,
        Ending::Abort(reason) => {
            // A half-written frame must be finished first, or the Bye would land inside it.
            let said = async {
                while wr.has_pending() {
                    if let WriteStep::Wrote(0) = wr.write_step().await? {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                }
                wr.put(server::bye(reason));
                wr.finish().await
            };
            timeout_at(Instant::now() + settings.bye_timeout, said).await
        }
        Ending::Broken | Ending::HostGone => return,
    };
    if let Ok(Ok(())) = said {
        linger(&mut rd, Instant::now() + settings.linger).await;
    }
}

/// Writes everything the writer holds and flushes it, for as long as the socket takes it:
/// one turn of the driver's loop for a `Pong`'s write and flush, where a turn per write step
/// (each a `select!` over every branch and a look at the queue) cost an idle ping one more
/// (callgrind: BENCHMARKS.md, "Idle pings in instructions"). Cancel-safe, as `write_step`
/// is; `Err` when the peer is gone.
async fn write_out<W: FrameWrite>(wr: &mut W) -> io::Result<()> {
    loop {
        match wr.write_step().await? {
            WriteStep::Wrote(0) => return Err(io::ErrorKind::WriteZero.into()),
            WriteStep::Wrote(_) => {}
            WriteStep::Flushed => return Ok(()),
        }
    }
}

enum Forwarded {
    All,
    Refused,
    HostGone,
}

/// Polls `fut` once: its output if it is ready now, `None` if it would wait (and it is
/// dropped, so it must be cancel-safe).
async fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}

/// Hands every complete frame read so far to the core (and life without a frame, first),
/// but for the pings answered in place (`in_place.rs`), whose `Pong`s go to `writer`.
/// Waiting on a full core channel is the backpressure: this connection stops reading, and
/// the transport slows the peer down.
async fn forward_frames<R: FrameRead, W: FrameWrite>(
    conn: ConnId,
    reader: &mut R,
    writer: &mut W,
    core: &mpsc::Sender<Inbound>,
    link: &Link,
    forwarded: &mut u64,
    shared: &Shared,
) -> Forwarded {
    let clock = &shared.settings.clock;
    if reader.heard_alive()
        && !in_place::keep_alive(&link.pings, clock.now())
        && !to_core(core, Inbound::Alive { conn }).await
    {
        return Forwarded::HostGone;
    }
    loop {
        // A `Ping` answered in place goes straight to the writer, past the queue: only while
        // the writer holds nothing and nothing is queued that the `Pong` would overtake (the
        // core's replies to the frames before it are queued by now: `in_place::answer`).
        // Otherwise the core answers it.
        let answered_here = |payload: &[u8]| {
            if !writer.has_pending()
                && let Answer::Pong { pong, heard } =
                    in_place::answer(&link.pings, *forwarded, payload, || clock.now())
                && link.nothing_queued()
            {
                writer.put_copy(&pong);
                in_place::answered(&link.pings, &shared.tally, heard, payload.len(), pong.len());
                return true;
            }
            false
        };
        let event = match reader.next_frame_unless(answered_here) {
            Ok(Some(payload)) => {
                *forwarded += 1;
                Inbound::Frame { conn, payload }
            }
            Ok(None) => return Forwarded::All,
            Err(bad) => Inbound::Refused { conn, bad },
        };
        let refused = matches!(event, Inbound::Refused { .. });
        if !to_core(core, event).await {
            return Forwarded::HostGone;
        }
        if refused {
            return Forwarded::Refused;
        }
    }
}

/// Hands an event to the core task; `false` when it is gone. Waiting for room in a full
/// channel is the backpressure; that wait is boxed because it is rare and its state would
/// otherwise be part of every connection's future.
async fn to_core(core: &mpsc::Sender<Inbound>, event: Inbound) -> bool {
    match core.try_send(event) {
        Ok(()) => true,
        Err(TrySendError::Closed(_)) => false,
        Err(TrySendError::Full(event)) => Box::pin(core.send(event)).await.is_ok(),
    }
}

/// Reads and discards until the peer closes or `until`.
async fn linger<R: FrameRead>(rd: &mut R, until: Instant) {
    let _ = timeout_at(until, rd.discard()).await;
}

/// Tells a connection the host will not serve it why (`ServerFull`, `ServerShutdown`) and
/// closes it, all within `settings.bye_timeout` plus the linger.
pub(crate) async fn refuse<F: Framed>(frames: F, reason: CloseReason, settings: ConnSettings) {
    let (mut rd, mut wr) = frames.split(settings.max_frame);
    wr.put(server::bye(reason));
    if let Ok(Ok(())) = timeout_at(Instant::now() + settings.bye_timeout, wr.finish()).await {
        linger(&mut rd, Instant::now() + settings.linger).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    /// Every open connection is one of these futures; at 20k connections each byte counts
    /// 20k times. Rare paths (closing, waiting on a full core queue) are boxed to keep it so.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (core, _inbound) = mpsc::channel(1);
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let (_handle, link) = LinkHandle::new();
        let settings = ConnSettings {
            max_frame: 1024,
            close_timeout: Duration::ZERO,
            linger: Duration::ZERO,
            bye_timeout: Duration::ZERO,
            clock: Clock::start(),
        };
        let shared = Arc::new(Shared {
            settings,
            tally: Tally::default(),
        });
        let task = drive(
            ConnId(1),
            crate::LengthPrefixed(stream),
            link,
            core,
            shared,
            permit,
        );
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "a connection future takes {size} bytes");
    }
}
