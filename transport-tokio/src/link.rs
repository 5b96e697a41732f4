//! The bounded outbound queue between the core task and one connection.
//!
//! A hand-made queue rather than an `mpsc` channel for two reasons. Memory: an idle
//! connection's queue is an empty `VecDeque` (no allocation), where a tokio channel allocates
//! a block of 32 slots up front — 20k idle connections would carry 20 MiB of empty slots.
//! Control out of band: when a slow reader overflows its queue, the connection must learn
//! *now* that it is to write `Bye{SlowReader}` and go, not after it has written the very
//! frames it cannot get rid of; a channel only delivers in order.
//!
//! It holds payloads; the connection's frame writer frames them as its transport does.

use crate::in_place::PingState;
use breeze_core::message::CloseReason;
use bytes::Bytes;
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
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Payloads were handed to the writer: write them.
    Write,
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
    /// What the two tasks share to answer pings in place (`in_place.rs`).
    pub(crate) pings: PingState,
}

/// Keeps a queue below this many slots when it drains, so a burst does not pin memory.
const SHRINK_ABOVE: usize = 16;

impl Link {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The critical sections cannot panic halfway through; a poisoned lock still holds a
        // consistent queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a payload. Payloads after an end are dropped: the connection is going away.
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

    /// Queues a frame the connection's own task made (a `Pong` answered in place): only into
    /// an empty queue of a connection that is not ending, so that it overtakes nothing and
    /// never needs the limits. No wake-up: the caller's loop takes it on its next turn.
    pub(crate) fn push_own(&self, frame: Bytes) -> bool {
        let mut q = self.lock();
        if q.end.is_some() || !q.frames.is_empty() {
            return false;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        true
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

    /// What to do next. With `take` queued payloads are handed to `put` (the connection's
    /// frame writer) for as long as it wants more; without (the writer still has bytes to
    /// write) only an abort is reported, so a slow reader stuck mid-frame is noticed.
    pub(crate) fn next(&self, take: bool, mut put: impl FnMut(Bytes) -> bool) -> Next {
        let mut q = self.lock();
        if let Some(End::Abort(reason)) = q.end {
            return Next::Abort(reason);
        }
        if !take {
            return Next::Wait;
        }
        if !q.frames.is_empty() {
            while let Some(payload) = q.frames.pop_front() {
                q.bytes -= payload.len();
                if !put(payload) {
                    break;
                }
            }
            if q.frames.is_empty() && q.frames.capacity() > SHRINK_ABOVE {
                q.frames = VecDeque::new();
            }
            return Next::Write;
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

    pub(crate) fn pings(&self) -> &PingState {
        &self.0.pings
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

    /// Takes what `next` hands out, as a writer that wants at most `up_to` payloads.
    fn take(link: &Link, up_to: usize) -> (Next, Vec<Bytes>) {
        let mut got = Vec::new();
        let next = link.next(true, |p| {
            got.push(p);
            got.len() < up_to
        });
        (next, got)
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
        let (next, got) = take(&link, usize::MAX);
        assert_eq!(next, Next::Write);
        assert_eq!(got, [frame(100)]);
    }

    #[test]
    fn payloads_go_to_the_writer_in_order_while_it_wants_more() {
        let link = Link::default();
        let limits = QueueLimits {
            frames: 8,
            bytes: 1 << 20,
        };
        for i in 0..3u8 {
            link.push(Bytes::from(vec![i; 2]), limits).unwrap();
        }
        let (_, got) = take(&link, 2);
        assert_eq!(got, [Bytes::from(vec![0; 2]), Bytes::from(vec![1; 2])]);
        assert_eq!(link.next(false, |_| unreachable!()), Next::Wait);
        let (_, got) = take(&link, 2);
        assert_eq!(got, [Bytes::from(vec![2; 2])]);
        assert_eq!(take(&link, 2).0, Next::Wait);
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
        assert_eq!(take(&link, 8).0, Next::Write);
        assert_eq!(take(&link, 8).0, Next::Flushed);

        let link = Link::default();
        link.push(frame(1), LIMITS).unwrap();
        link.abort(CloseReason::SlowReader);
        link.close();
        assert_eq!(
            link.next(false, |_| true),
            Next::Abort(CloseReason::SlowReader)
        );
    }

    #[test]
    fn a_frame_of_its_own_goes_only_into_an_empty_open_queue() {
        let link = Link::default();
        link.push(frame(1), LIMITS).unwrap();
        assert!(
            !link.push_own(frame(2)),
            "it would overtake nothing, so it waits"
        );
        assert_eq!(take(&link, 8).1, [frame(1)]);
        assert!(link.push_own(frame(2)));
        assert_eq!(take(&link, 8).1, [frame(2)]);
        link.close();
        assert!(!link.push_own(frame(3)), "the connection is ending");
    }

    #[test]
    fn dropping_the_handle_closes() {
        let (handle, link) = LinkHandle::new();
        assert_eq!(take(&link, 8).0, Next::Wait);
        assert!(!link.closing());
        drop(handle);
        assert_eq!(take(&link, 8).0, Next::Flushed);
    }
}
