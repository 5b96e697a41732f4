//! Pings answered in place: a connection's task answers its peer's `Ping` itself, without the
//! hop to the core task and back, whenever the core would have answered the same at the same
//! place in the stream (the rules are the core's: `breeze_core::server::pings`). The core
//! learns when the peer was last heard only when that connection's heartbeat deadline comes
//! due (`Server::handle_timeout_with`).
//!
//! What the two tasks share lives in the connection's [`Link`](crate::link::Link): whether
//! the core allowed it, how many frames the core task has handled, and when the peer was last
//! heard in place. Atomics, not the queue's lock: the connection task reads two of them per
//! `Ping`, the core task writes one per batch for each connection that sent frames in it.

use breeze_core::Instant;
use breeze_core::server::{Counters, InlinePong, may_keep_in_place, ping_nonce};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// One connection's share, kept in its `Link`.
#[derive(Debug, Default)]
pub(crate) struct PingState {
    /// The core sent `Output::AnswerPings`: the handshake is done.
    allowed: AtomicBool,
    /// Frames of this connection the core task has handled and queued the replies to.
    handled: AtomicU64,
    /// When the peer was last heard in place: nanoseconds since the clock's epoch, plus one
    /// (0: never).
    heard: AtomicU64,
}

impl PingState {
    /// The core task: the core allowed pings in place for this connection.
    pub(crate) fn allow(&self) {
        self.allowed.store(true, Ordering::Release);
    }

    /// The core task: it handled `frames` more of this connection's frames, and queued the
    /// replies the core made for them. Release: a connection task that sees the count sees
    /// those replies in the queue, so its `Pong` goes behind them.
    pub(crate) fn handled(&self, frames: u64) {
        self.handled.fetch_add(frames, Ordering::Release);
    }

    /// The core task: when the peer was last heard in place, for `handle_timeout_with`.
    pub(crate) fn heard(&self) -> Option<Instant> {
        match self.heard.load(Ordering::Acquire) {
            0 => None,
            n => Some(Instant::from_epoch(Duration::from_nanos(n - 1))),
        }
    }

    /// The connection task: may something heard at `now` be kept here rather than passed to
    /// the core? Only once allowed, and once per `IN_PLACE_GAP`: the rest goes to the core,
    /// whose frame budget counts it.
    fn may_keep(&self, now: Instant) -> bool {
        self.allowed.load(Ordering::Acquire) && may_keep_in_place(self.heard(), now)
    }

    fn keep(&self, now: Instant) {
        let nanos = u64::try_from(now.since_epoch().as_nanos()).unwrap_or(u64::MAX - 1);
        self.heard.store(nanos + 1, Ordering::Release);
    }
}

/// What the connection task decides about a frame it read.
pub(crate) enum Answer {
    /// A `Pong` in reply, to go behind what the core queued; `heard` is when.
    Pong { pong: InlinePong, heard: Instant },
    /// Pass it to the core.
    PassOn,
}

/// The connection task's look at a frame it read after passing `forwarded` to the core.
/// `Pong` only for a `Ping`, when it may be answered in place: allowed, within the gap,
/// and with every frame passed on before already handled by the core.
pub(crate) fn answer(
    state: &PingState,
    forwarded: u64,
    payload: &[u8],
    now: impl FnOnce() -> Instant,
) -> Answer {
    // One byte for every frame but a Ping, before any shared state is read.
    let Some(nonce) = ping_nonce(payload) else {
        return Answer::PassOn;
    };
    if state.handled.load(Ordering::Acquire) != forwarded {
        return Answer::PassOn;
    }
    let now = now();
    if !state.may_keep(now) {
        return Answer::PassOn;
    }
    Answer::Pong {
        pong: InlinePong::new(nonce),
        heard: now,
    }
}

/// The connection task: the `Pong` was queued; the peer was heard at `heard`.
pub(crate) fn answered(state: &PingState, tally: &Tally, heard: Instant, ping: usize, pong: usize) {
    state.keep(heard);
    tally.pings.fetch_add(1, Ordering::Relaxed);
    tally.bytes_in.fetch_add(ping as u64, Ordering::Relaxed);
    tally.bytes_out.fetch_add(pong as u64, Ordering::Relaxed);
}

/// The connection task: life without a frame (a WebSocket Pong) at `now`. `true` when it is
/// kept in place; otherwise the core must hear of it.
pub(crate) fn keep_alive(state: &PingState, now: Instant) -> bool {
    let keep = state.may_keep(now);
    if keep {
        state.keep(now);
    }
    keep
}

/// Pings answered in place by every connection of one host, for its metrics.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pings: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Tally {
    /// Adds what was answered in place to the core's totals.
    pub(crate) fn add_to(&self, counters: &mut Counters) {
        counters.answered_in_place(
            self.pings.load(Ordering::Relaxed),
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::codec::encode;
    use breeze_core::message::{ClientMsg, Status};
    use breeze_core::server::pong;

    fn at(ms: u64) -> Instant {
        Instant::from_epoch(Duration::from_millis(ms))
    }

    fn ping(nonce: u64) -> bytes::Bytes {
        encode(&ClientMsg::Ping { nonce })
    }

    fn is_pong(a: Answer) -> bool {
        matches!(a, Answer::Pong { .. })
    }

    #[test]
    fn only_allowed_pings_with_nothing_in_flight_once_per_gap_are_answered() {
        let s = PingState::default();
        assert!(
            !is_pong(answer(&s, 0, &ping(1), || at(0))),
            "not yet allowed"
        );
        s.allow();
        let status = encode(&ClientMsg::SetStatus {
            status: Status::Away,
        });
        assert!(!is_pong(answer(&s, 0, &status, || at(0))), "not a Ping");
        assert!(
            !is_pong(answer(&s, 1, &ping(1), || at(0))),
            "a frame passed on is not handled yet"
        );
        s.handled(1);
        let Answer::Pong { pong: p, heard } = answer(&s, 1, &ping(7), || at(5)) else {
            panic!("a quiet, allowed ping is answered");
        };
        assert_eq!(&p[..], &pong(7)[..]);
        assert_eq!(s.heard(), None, "nothing is kept until the Pong is queued");
        let tally = Tally::default();
        answered(&s, &tally, heard, 3, p.len());
        assert_eq!(s.heard(), Some(at(5)));
        assert!(
            !is_pong(answer(&s, 1, &ping(8), || at(504))),
            "within the gap"
        );
        assert!(!keep_alive(&s, at(504)), "within the gap");
        assert!(is_pong(answer(&s, 1, &ping(8), || at(505))));
        assert!(keep_alive(&s, at(505)));
        assert_eq!(s.heard(), Some(at(505)));
        let mut c = Counters::default();
        tally.add_to(&mut c);
        assert_eq!((c.frames_in, c.bytes_in, c.sent("Pong")), (1, 3, 1));
    }
}
