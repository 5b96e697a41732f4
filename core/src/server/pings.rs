//! Pings answered in place: what a host may do with a `Ping` without handing it to the core.
//!
//! An idle server spends its life answering heartbeats. Handed to the core, each `Ping`
//! crosses from the connection's task to the core's and its `Pong` crosses back: 12,321
//! instructions per ping, about 5,000 of them in the core task (callgrind; BENCHMARKS.md,
//! "Idle pings in instructions"), and usually a thread wake-up each way. The core needs none
//! of it per ping: its deadline queue is lazy, so a connection's last-heard time only matters
//! when its deadline comes due. So once the core says so (`Output::AnswerPings`), a host may
//! answer a `Ping` itself, note when it heard it, and hand that over in
//! `Server::handle_timeout_with`. It may do so only when the answer is one the core would
//! have given at the same place in the stream:
//!
//! * after `AnswerPings` only: before the handshake a `Ping` is a `BadHandshake`;
//! * only when the core has handled every frame the connection passed on before, and what it
//!   queued for them is ahead of the `Pong`: frames are processed in order and a
//!   connection's replies are written in order (PROTOCOL.md §7.2), so clients use a `Ping` as
//!   a barrier;
//! * at most one every [`IN_PLACE_GAP`] per connection; the rest go to the core, whose frame
//!   budget counts them, so a flood of pings is still `Flooding`. The two a second answered
//!   in place are not charged: a client may send two frames a second over `frame_rate`
//!   unnoticed, which no honest client needs and no flood gains from;
//! * counted in the core's totals ([`Counters::answered_in_place`]), so `/metrics` sees every
//!   frame however it was answered.
//!
//! What is handed over counts as a frame for the heartbeat deadline and for a session's
//! postponed work, but not for `who`'s idle time, which counts only requests (`Conn::
//! last_active`). A WebSocket Pong (`handle_alive`) may be kept in place the same way.

use super::counters::Counters;
use crate::codec::decode;
use crate::message::{ClientMsg, ServerMsg};
use crate::time::{Duration, Instant};
use bytes::Bytes;

/// How often per connection a host may answer a `Ping` (or keep a WebSocket Pong) in place.
/// A client pings once per heartbeat interval (30 s by default), so only floods and
/// intervals under half a second reach the core; a client pinging every second, as the
/// instruction profile's do (`bench/ping-instructions.sh`), is answered in place despite
/// its timer's jitter.
pub const IN_PLACE_GAP: Duration = Duration::from_millis(500);

/// Whether something heard at `now` may be kept in place, when the last thing kept in place
/// was heard at `last` (`None`: nothing yet): the one rule every host applies.
pub fn may_keep_in_place(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= IN_PLACE_GAP)
}

/// `ClientMsg::Ping`'s variant index: its payload's first byte (PROTOCOL.md §2.3).
const PING: u8 = 10;

/// The nonce, when `payload` is exactly one `Ping`. Looks at one byte for every other frame,
/// so a host may ask it of everything it reads.
pub fn ping_nonce(payload: &[u8]) -> Option<u64> {
    if payload.first() != Some(&PING) {
        return None;
    }
    match decode::<ClientMsg>(payload) {
        Ok(ClientMsg::Ping { nonce }) => Some(nonce),
        _ => None,
    }
}

/// The payload of the `Pong` answering `Ping { nonce }`.
pub fn pong(nonce: u64) -> Bytes {
    Bytes::copy_from_slice(&InlinePong::new(nonce))
}

/// The payload of the `Pong` answering `Ping { nonce }`, held inline: a host answering pings
/// in place writes it from here without an allocation of its own. Encoding into a fresh
/// buffer, and freeing it once copied into the connection's writer, was 464 of the 6,413
/// user-space instructions an idle ping cost (callgrind; BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlinePong {
    buf: [u8; INLINE_PONG_MAX],
    len: usize,
}

/// The variant index and a postcard varint of a `u64` (at most ten bytes) fit with room.
const INLINE_PONG_MAX: usize = 16;

impl InlinePong {
    pub fn new(nonce: u64) -> InlinePong {
        let mut buf = [0; INLINE_PONG_MAX];
        let len = postcard::to_slice(&ServerMsg::Pong { nonce }, &mut buf)
            .expect("a Pong fits in INLINE_PONG_MAX bytes")
            .len();
        InlinePong { buf, len }
    }
}

impl std::ops::Deref for InlinePong {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Counters {
    /// Adds `pings` answered in place: `bytes_in` of `Ping` payloads read, `bytes_out` of
    /// `Pong` payloads written.
    pub fn answered_in_place(&mut self, pings: u64, bytes_in: u64, bytes_out: u64) {
        self.frames_in += pings;
        self.pings_in_place += pings;
        self.bytes_in += bytes_in;
        self.frames_out[usize::from(PONG)] += pings;
        self.bytes_out += bytes_out;
    }
}

/// `ServerMsg::Pong`'s variant index.
const PONG: u8 = 12;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::ids::UserId;
    use crate::message::Status;

    #[test]
    fn a_ping_and_only_a_ping_has_a_nonce() {
        for nonce in [0, 1, 300, u64::MAX] {
            assert_eq!(ping_nonce(&encode(&ClientMsg::Ping { nonce })), Some(nonce));
        }
        let mut trailing = encode(&ClientMsg::Ping { nonce: 5 }).to_vec();
        trailing.push(0);
        assert_eq!(ping_nonce(&trailing), None, "one payload is one message");
        assert_eq!(ping_nonce(&[PING]), None, "a nonce is missing");
        assert_eq!(ping_nonce(&[]), None);
        let status = ClientMsg::SetStatus {
            status: Status::Away,
        };
        assert_eq!(ping_nonce(&encode(&status)), None);
        let history = ClientMsg::History {
            with: UserId::new("bob").unwrap(),
            before: None,
            limit: 10,
        };
        assert_eq!(ping_nonce(&encode(&history)), None);
    }

    #[test]
    fn an_inline_pong_is_the_encoded_pong() {
        for nonce in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let inline = InlinePong::new(nonce);
            assert_eq!(&inline[..], &encode(&ServerMsg::Pong { nonce })[..]);
            assert_eq!(pong(nonce), &inline[..]);
        }
    }

    #[test]
    fn pings_answered_in_place_count_as_frames_in_and_pongs_out() {
        let mut c = Counters::default();
        let pong = pong(300);
        assert_eq!(pong[0], PONG, "Pong's variant index");
        c.answered_in_place(2, 6, 2 * pong.len() as u64);
        assert_eq!((c.frames_in, c.pings_in_place), (2, 2));
        assert_eq!(c.bytes_in, 6);
        assert_eq!(c.sent("Pong"), 2);
        assert_eq!(c.bytes_out, 2 * pong.len() as u64);
    }
}
