//! The bounded outbound queue between the core task and one connection.
//!
//! A hand-made queue rather than an `mpsc` channel for two reasons. Memory: an idle
//! connection's queue is an empty `VecDeque` (no allocation), where a tokio channel allocates
//! a block of 32 slots up front — 20k idle connections would carry 20 MiB of empty slots.
//! Control out of band: when a slow reader overflows its queue, the connection must learn
//! *now* that it is to write `Bye{SlowReader}` and go, not after it has written the very
//! frames it cannot get rid of; a channel only delivers in order.

use breeze_core::codec::{LENGTH_PREFIX, put_frame};
use breeze_core::message::CloseReason;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// How much a connection may have queued before its peer counts as a slow reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Frames waiting to be written.
    pub frames: usize,
    /// Bytes waiting to be written. A single frame larger than this still goes through an
    /// empty queue, so a large attachment is not mistaken for a slow reader.
    pub bytes: usize,
}

/// The queue is full: the peer reads too slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// How the connection is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Write everything queued, then close.
    Close,
    /// Drop the queue, write `Bye{reason}` if the socket takes it at once, then close.
    Abort(CloseReason),
}

/// What the connection should do next.
#[derive(Debug)]
pub(crate) enum Next {
    /// Write these bytes: the next queued frame, or several joined.
    Write(Bytes),
    /// Nothing to do until `changed()`.
    Wait,
    /// Everything queued before the close was taken: finish writing, then close.
    Flushed,
    /// Give up on the queue: say `Bye{reason}` if possible and close.
    Abort(CloseReason),
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    bytes: usize,
    end: Option<End>,
}

/// Shared by the core task (producer) and the connection task (consumer).
#[derive(Debug, Default)]
pub(crate) struct Link {
    queue: Mutex<Queue>,
    wake: Notify,
}

/// Keeps a queue below this many slots when it drains, so a burst does not pin memory.
const SHRINK_ABOVE: usize = 16;

/// Queued frames are joined into one write up to this size. A busy connection (a chat peer
/// at saturation) has several small frames waiting each time it wakes, and one `write` per
/// frame made the loopback send path the largest cost in the server's profile; the copy is
/// cheap next to a system call. Larger frames (attachments) go out alone, uncopied.
const COALESCE_UP_TO: usize = 64 * 1024;

/// `first`, followed by as many of the next queued payloads as fit in `COALESCE_UP_TO`, each
/// framed with its length, as one buffer. Returns the buffer and the payload bytes it took.
fn coalesce(first: Bytes, rest: &mut VecDeque<Bytes>) -> (Bytes, usize) {
    let mut len = LENGTH_PREFIX + first.len();
    let mut joined = 0;
    for payload in rest.iter() {
        if len + LENGTH_PREFIX + payload.len() > COALESCE_UP_TO {
            break;
        }
        len += LENGTH_PREFIX + payload.len();
        joined += 1;
    }
    let mut buf = BytesMut::with_capacity(len);
    put_frame(&mut buf, &first);
    for payload in rest.drain(..joined) {
        put_frame(&mut buf, &payload);
    }
    (buf.freeze(), len - LENGTH_PREFIX * (joined + 1))
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The critical sections cannot panic halfway through; a poisoned lock still holds a
        // consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame. Frames after an end are dropped: the connection is going away.
    pub(crate) fn push(&self, frame: Bytes, limits: QueueLimits) -> Result<(), Full> {
        let mut q = self.lock();
        if q.end.is_some() {
            return Ok(());
        }
        if !q.frames.is_empty()
            && (q.frames.len() >= limits.frames || q.bytes + frame.len() > limits.bytes)
        {
            return Err(Full);
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// Flush what is queued, then close. An abort already asked for stands.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        if q.end.is_none() {
            q.end = Some(End::Close);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Drop what is queued (its memory is freed now), say `reason` and close.
    pub(crate) fn abort(&self, reason: CloseReason) {
        let mut q = self.lock();
        q.frames = VecDeque::new();
        q.bytes = 0;
        q.end = Some(End::Abort(reason));
        drop(q);
        self.wake.notify_one();
    }

    /// What to do next. With `take` the next queued frame is taken; without (a frame is
    /// still being written) only an abort is reported, so a slow reader stuck mid-frame is
    /// noticed.
    pub(crate) fn next(&self, take: bool) -> Next {
        let mut q = self.lock();
        if let Some(End::Abort(reason)) = q.end {
            return Next::Abort(reason);
        }
        if !take {
            return Next::Wait;
        }
        if let Some(first) = q.frames.pop_front() {
            let (frame, took) = coalesce(first, &mut q.frames);
            q.bytes -= took;
            if q.frames.is_empty() && q.frames.capacity() > SHRINK_ABOVE {
                q.frames = VecDeque::new();
            }
            return Next::Write(frame);
        }
        match q.end {
            Some(_) => Next::Flushed,
            None => Next::Wait,
        }
    }

    /// Whether the connection has been told to end, so its remaining writes get a deadline.
    pub(crate) fn closing(&self) -> bool {
        self.lock().end.is_some()
    }

    /// Resolves after the next `push`, `close` or `abort` (or at once if one happened since
    /// the last wait: `Notify` keeps a permit, so no wake-up is lost between check and wait).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await
    }
}

/// The core task's handle on a connection's queue. Dropping it closes the connection, so a
/// connection can never be forgotten by the host and left open: whether the host removed it
/// from its table or the host itself is gone.
#[derive(Debug)]
pub(crate) struct LinkHandle(Arc<Link>);

impl LinkHandle {
    pub(crate) fn new() -> (LinkHandle, Arc<Link>) {
        let link = Arc::new(Link::default());
        (LinkHandle(link.clone()), link)
    }

    pub(crate) fn push(&self, frame: Bytes, limits: QueueLimits) -> Result<(), Full> {
        self.0.push(frame, limits)
    }

    pub(crate) fn abort(&self, reason: CloseReason) {
        self.0.abort(reason)
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits {
        frames: 3,
        bytes: 10,
    };

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn a_full_queue_refuses_by_count_and_by_bytes() {
        let link = Link::default();
        for _ in 0..3 {
            link.push(frame(1), LIMITS).unwrap();
        }
        assert_eq!(link.push(frame(1), LIMITS), Err(Full));

        let link = Link::default();
        link.push(frame(6), LIMITS).unwrap();
        assert_eq!(link.push(frame(5), LIMITS), Err(Full));
        link.push(frame(4), LIMITS).unwrap();
    }

    #[test]
    fn one_large_frame_fits_an_empty_queue() {
        let link = Link::default();
        link.push(frame(100), LIMITS).unwrap();
        assert!(matches!(link.next(true), Next::Write(f) if f.len() == LENGTH_PREFIX + 100));
    }

    #[test]
    fn small_queued_frames_go_out_as_one_write_in_order() {
        let link = Link::default();
        let limits = QueueLimits {
            frames: 8,
            bytes: 1 << 20,
        };
        for i in 0..3u8 {
            link.push(Bytes::from(vec![i; 2]), limits).unwrap();
        }
        let big = vec![9u8; COALESCE_UP_TO];
        link.push(Bytes::from(big.clone()), limits).unwrap();
        let framed = |parts: &[&[u8]]| {
            let mut out = BytesMut::new();
            parts.iter().for_each(|p| put_frame(&mut out, p));
            out
        };
        assert!(
            matches!(link.next(true), Next::Write(f) if f[..] == framed(&[&[0, 0], &[1, 1], &[2, 2]])[..])
        );
        assert!(matches!(link.next(true), Next::Write(f) if f[..] == framed(&[&big])[..]));
        assert!(matches!(link.next(true), Next::Wait));
        // The byte count followed what was taken, so the queue is empty, not "full".
        for _ in 0..8 {
            link.push(frame(1), limits).unwrap();
        }
    }

    #[test]
    fn close_flushes_first_and_abort_drops_everything() {
        let link = Link::default();
        link.push(frame(1), LIMITS).unwrap();
        link.close();
        assert!(link.closing());
        assert!(matches!(link.next(true), Next::Write(_)));
        assert!(matches!(link.next(true), Next::Flushed));

        let link = Link::default();
        link.push(frame(1), LIMITS).unwrap();
        link.abort(CloseReason::SlowReader);
        link.close();
        assert!(matches!(
            link.next(false),
            Next::Abort(CloseReason::SlowReader)
        ));
    }

    #[test]
    fn dropping_the_handle_closes() {
        let (handle, link) = LinkHandle::new();
        assert!(matches!(link.next(true), Next::Wait));
        assert!(!link.closing());
        drop(handle);
        assert!(matches!(link.next(true), Next::Flushed));
    }
}
