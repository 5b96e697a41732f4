//! The part of a connection's protocol that its host runs beside the socket, so that the
//! commonest frame of an idle server, a heartbeat `Ping`, is answered without a trip through
//! the core.
//!
//! Why: at 19,900 idle clients each `Ping` crossed from the connection task to the core task
//! and back before its `Pong` was written, ~47–49 µs of server CPU per ping (BENCHMARKS.md,
//! "Idle heartbeats"), about half of it waking and parking the two tasks. The core needs a
//! connection's liveness only when its heartbeat deadline comes due (its deadline queue is
//! lazy), so the front keeps it and the core asks then (`Output::AskLastHeard`, answered with
//! `Server::handle_last_heard`).
//!
//! Sans-IO like the rest of the core: the host's connection task (and the test rig) feeds it
//! every complete frame and every frameless sign of life with `now`, and it says what to do.
//! It keeps what the core no longer sees of the frames it answers: when the peer was last
//! heard from, and the frame budget (`frame_rate`), which it charges for every frame, so a
//! flood of pings still ends in `Bye{Flooding}`.

use super::guard::admit_frame;
use crate::codec::{decode, encode};
use crate::config::FrameRate;
use crate::message::{ClientMsg, ServerMsg};
use crate::time::Instant;
use bytes::Bytes;

/// The first payload byte of a `Ping`: its `ClientMsg` variant index (PROTOCOL.md §2.2, one
/// byte below 128). Checked before decoding, so every other frame passes the front without
/// being decoded twice.
const PING_TAG: u8 = 10;

/// One connection's front, kept by its connection task: two instants and a flag.
#[derive(Debug, Clone)]
pub struct Front {
    last_heard: Instant,
    /// The frame budget's theoretical arrival time (see `guard::admit_frame`).
    frame_tat: Instant,
    /// The first frame went to the core, which decides the handshake on it.
    introduced: bool,
}

/// What to do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontStep {
    /// Hand it to the core (`Server::handle_frame`).
    ToCore,
    /// Write this payload (the `Pong`) behind whatever the core queued for the connection;
    /// the core never sees the frame.
    Answer(Bytes),
    /// Over the frame budget: the host tells the peer `Bye{Flooding}`, reads no more from it
    /// and reports `Server::handle_aborted(Flooding)`.
    Flooding,
}

impl Front {
    /// The front of a connection opened at `now`.
    pub fn new(now: Instant) -> Front {
        Front {
            last_heard: now,
            frame_tat: now,
            introduced: false,
        }
    }

    /// One complete frame `payload`, arrived at `now`. `core_caught_up` (asked only of what
    /// looks like a `Ping`, so other frames pay nothing for it): the core has handled every
    /// frame of this connection handed to it so far and has not closed the connection.
    /// Only then is a `Ping` answered here: the answers to earlier frames are then already
    /// queued ahead of the `Pong` (frames are answered in order, PROTOCOL.md §7.2), and the
    /// connection's first frame, which the core never closes a connection over unless it is
    /// a good `Hello`, has made it handshaken: before that a `Ping` is the core's to refuse.
    pub fn frame(
        &mut self,
        now: Instant,
        payload: &[u8],
        limit: &FrameRate,
        core_caught_up: impl FnOnce() -> bool,
    ) -> FrontStep {
        // Any frame is life, answered here or not (PROTOCOL.md §11.1).
        self.last_heard = now;
        if !admit_frame(&mut self.frame_tat, now, limit) {
            return FrontStep::Flooding;
        }
        let introduced = std::mem::replace(&mut self.introduced, true);
        if introduced
            && payload.first() == Some(&PING_TAG)
            && core_caught_up()
            && let Ok(ClientMsg::Ping { nonce }) = decode::<ClientMsg>(payload)
        {
            return FrontStep::Answer(encode(&ServerMsg::Pong { nonce }));
        }
        FrontStep::ToCore
    }

    /// The transport heard from the peer without a frame: a WebSocket Pong answering the
    /// host's Ping, or the peer's own Ping (PROTOCOL.md §1.3). Life like a frame, and charged
    /// to the frame budget like one, so a flood of control messages is a flood too. `false`:
    /// over the budget, handled as `FrontStep::Flooding`.
    pub fn alive(&mut self, now: Instant, limit: &FrameRate) -> bool {
        self.last_heard = now;
        admit_frame(&mut self.frame_tat, now, limit)
    }

    /// When the peer was last heard from: what the host answers `Output::AskLastHeard` with.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MAGIC, PROTOCOL_VERSION};
    use crate::time::Duration;

    const OPEN: FrameRate = FrameRate {
        per_second: 0,
        burst: 0,
    };

    fn at(ms: u64) -> Instant {
        Instant::from_epoch(Duration::from_millis(ms))
    }

    fn ping(nonce: u64) -> Bytes {
        encode(&ClientMsg::Ping { nonce })
    }

    #[test]
    fn the_ping_tag_is_the_variant_index_on_the_wire() {
        assert_eq!(ping(300)[0], PING_TAG);
    }

    #[test]
    fn the_first_frame_and_frames_behind_unhandled_ones_go_to_the_core() {
        let mut front = Front::new(at(0));
        // A Ping first is the core's to refuse (BadHandshake), caught up or not.
        assert_eq!(
            front.frame(at(1), &ping(1), &OPEN, || true),
            FrontStep::ToCore
        );
        let mut front = Front::new(at(0));
        let hello = encode(&ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "t".into(),
        });
        assert_eq!(
            front.frame(at(1), &hello, &OPEN, || true),
            FrontStep::ToCore
        );
        // The Hello is not handled yet: the Pong must not overtake the Welcome.
        assert_eq!(
            front.frame(at(2), &ping(2), &OPEN, || false),
            FrontStep::ToCore
        );
        assert_eq!(
            front.frame(at(3), &ping(3), &OPEN, || true),
            FrontStep::Answer(encode(&ServerMsg::Pong { nonce: 3 }))
        );
        // Anything else, or what only starts like a Ping, is the core's.
        let logout = encode(&ClientMsg::Logout);
        assert_eq!(
            front.frame(at(4), &logout, &OPEN, || true),
            FrontStep::ToCore
        );
        assert_eq!(
            front.frame(at(5), &[PING_TAG], &OPEN, || true),
            FrontStep::ToCore
        );
        assert_eq!(front.last_heard(), at(5));
    }

    #[test]
    fn every_frame_and_sign_of_life_is_charged_to_one_budget() {
        let limit = FrameRate {
            per_second: 10,
            burst: 5,
        };
        let mut front = Front::new(at(0));
        assert_eq!(
            front.frame(at(0), &ping(0), &limit, || true),
            FrontStep::ToCore
        );
        for n in 1..3 {
            assert!(matches!(
                front.frame(at(0), &ping(n), &limit, || true),
                FrontStep::Answer(_)
            ));
        }
        assert!(front.alive(at(0), &limit));
        assert!(front.alive(at(0), &limit));
        assert_eq!(
            front.frame(at(0), &ping(9), &limit, || true),
            FrontStep::Flooding
        );
        // A tenth of a second refills one place.
        assert!(matches!(
            front.frame(at(100), &ping(10), &limit, || true),
            FrontStep::Answer(_)
        ));
        assert!(!front.alive(at(100), &limit));
        assert_eq!(front.last_heard(), at(100));
    }
}
