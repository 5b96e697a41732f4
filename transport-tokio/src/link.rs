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
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

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
    /// Something changed since the connection task last looked: `changed` resolves at once.
    /// `next` clears it when it has seen everything, so a push made while the connection
    /// task was busy anyway costs it no extra turn.
    changed: bool,
    /// The connection task, while it waits in `changed`.
    waker: Option<Waker>,
}

/// Shared by the core task (producer) and the connection task (consumer).
#[derive(Debug, Default)]
pub(crate) struct Link {
    /// The queue, and the connection task's wake-up under the same lock: the task takes
    /// the lock on every turn of its loop anyway (`next`). A `tokio::sync::Notify` here
    /// cost an idle ping ~1,100 instructions (callgrind), for registering a waiter in its
    /// list and removing it again on every turn; the flag and waker here cost ~525 of them,
    /// 6,647 instructions a ping against 7,222.
    queue: Mutex<Queue>,
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
        Self::wake(q);
        Ok(())
    }

    /// Whether a frame the connection's own task makes now (a `Pong` answered in place) may
    /// go straight to its writer: nothing is queued that it would overtake, and the
    /// connection is not ending. What the core queues after this look was made after it too.
    pub(crate) fn nothing_queued(&self) -> bool {
        let q = self.lock();
        q.end.is_none() && q.frames.is_empty()
    }

    /// Flush what is queued, then close. An abort already asked for stands.
    pub(crate) fn close(&self) {
        let mut q = self.lock();
        if q.end.is_none() {
            q.end = Some(End::Close);
        }
        Self::wake(q);
    }

    /// Drop what is queued (its memory is freed now), say `reason` and close.
    pub(crate) fn abort(&self, reason: CloseReason) {
        let mut q = self.lock();
        q.frames = VecDeque::new();
        q.bytes = 0;
        q.end = Some(End::Abort(reason));
        Self::wake(q);
    }

    /// Marks a change and wakes the connection task if it waits, outside the lock.
    fn wake(mut q: MutexGuard<'_, Queue>) {
        q.changed = true;
        let waker = q.waker.take();
        drop(q);
        if let Some(waker) = waker {
            waker.wake();
        }
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
            if q.frames.is_empty() {
                // All of it seen (a close comes only after the frames, `Flushed` next turn).
                q.changed = false;
                if q.frames.capacity() > SHRINK_ABOVE {
                    q.frames = VecDeque::new();
                }
            }
            return Next::Write;
        }
        q.changed = false;
        match q.end {
            Some(_) => Next::Flushed,
            None => Next::Wait,
        }
    }

    /// Whether the connection has been told to end, so its remaining writes get a deadline.
    pub(crate) fn closing(&self) -> bool {
        self.lock().end.is_some()
    }

    /// Resolves after the next `push`, `close` or `abort`, or at once if one happened since
    /// `next` last saw everything: no wake-up is lost between a look and a wait. Cancel-safe:
    /// a dropped wait leaves at most a spurious wake-up behind.
    pub(crate) fn changed(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            let mut q = self.lock();
            if q.changed {
                q.changed = false;
                return Poll::Ready(());
            }
            match &mut q.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
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
    fn a_frame_of_its_own_goes_out_only_past_an_empty_open_queue() {
        let link = Link::default();
        assert!(link.nothing_queued());
        link.push(frame(1), LIMITS).unwrap();
        assert!(!link.nothing_queued(), "it would overtake a queued frame");
        assert_eq!(take(&link, 8).1, [frame(1)]);
        assert!(link.nothing_queued());
        link.close();
        assert!(!link.nothing_queued(), "the connection is ending");
    }

    /// Counts its wake-ups.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn poll_changed(link: &Link, waker: &Waker) -> Poll<()> {
        let mut cx = std::task::Context::from_waker(waker);
        std::pin::pin!(link.changed()).poll(&mut cx)
    }

    #[test]
    fn a_change_wakes_a_waiting_task_once_and_is_not_lost_while_it_looks_away() {
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = Waker::from(wakes.clone());
        let woken = || wakes.0.load(std::sync::atomic::Ordering::Relaxed);
        const ROOMY: QueueLimits = QueueLimits {
            frames: 8,
            bytes: 1 << 20,
        };
        let link = Link::default();
        assert_eq!(poll_changed(&link, &waker), Poll::Pending);
        link.push(frame(1), ROOMY).unwrap();
        link.push(frame(1), ROOMY).unwrap();
        assert_eq!(woken(), 1, "one wake-up for a waiting task");
        assert_eq!(poll_changed(&link, &waker), Poll::Ready(()));
        // Pushed while the task looked away (no wait registered): not lost.
        link.push(frame(1), ROOMY).unwrap();
        assert_eq!(poll_changed(&link, &waker), Poll::Ready(()));
        // Seen by `next` in full: no extra turn for it.
        link.push(frame(1), ROOMY).unwrap();
        assert_eq!(take(&link, 8).1.len(), 4);
        assert_eq!(poll_changed(&link, &waker), Poll::Pending);
        // Not in full: the writer wanted one, so the rest still counts as a change.
        link.push(frame(1), ROOMY).unwrap();
        link.push(frame(1), ROOMY).unwrap();
        assert_eq!(take(&link, 1).1.len(), 1);
        assert_eq!(poll_changed(&link, &waker), Poll::Ready(()));
        take(&link, 8);
        assert_eq!(poll_changed(&link, &waker), Poll::Pending);
        let before = woken();
        link.close();
        assert_eq!(woken(), before + 1, "a close wakes a waiting task too");
        assert_eq!(poll_changed(&link, &waker), Poll::Ready(()));
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
