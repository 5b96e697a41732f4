//! Totals since start, for an operator's metrics (`/metrics`).
//!
//! Plain integers the core bumps as it works, read whenever a scrape asks: one add per frame
//! and per output, no locks, no atomics (the core is single-threaded), so counting costs the
//! hot path nothing measurable. Gauges (connections, sessions, online users, storage in
//! flight) are not kept here: `Server::stats` computes them at the moment they are read.
//!
//! Outbound frames are counted by kind from the first byte of their payload, which is the
//! `ServerMsg` variant index (PROTOCOL.md §2.2: normative, one byte below 128): one place
//! sees every frame, however it was built (encoded once and shared among watchers, or not).

use crate::message::CloseReason;

/// Names of the `ServerMsg` variants by wire index, for labels.
pub const SERVER_MSG_KINDS: &[&str] = &[
    "Welcome",
    "Registered",
    "LoginOk",
    "PresenceSnapshot",
    "PresenceDiff",
    "OwnStatus",
    "ContactsChanged",
    "PasswordChanged",
    "Sent",
    "Deliver",
    "OfflineDone",
    "History",
    "Pong",
    "Error",
    "Who",
    "Bye",
    "Throttled",
    "AdminDone",
    "OfflineWaiting",
];

/// Room for every variant index that fits the first byte's varint (0..128), so a variant
/// added later is counted before it is named.
const KINDS: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    pub frames_in: u64,
    pub bytes_in: u64,
    /// Of `frames_in`, the `Ping`s the host answered in place (`pings.rs`).
    pub pings_in_place: u64,
    /// Outbound frames by `ServerMsg` variant index.
    pub frames_out: [u64; KINDS],
    pub bytes_out: u64,
    /// Connections the server closed, by the reason it gave.
    pub closes: Vec<(CloseReason, u64)>,
    /// Connections the peer closed or the network lost.
    pub connections_lost: u64,
    pub logins: u64,
    pub agent_logins: u64,
    pub logins_failed: u64,
    pub logins_throttled: u64,
    pub registrations: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            frames_in: 0,
            bytes_in: 0,
            pings_in_place: 0,
            frames_out: [0; KINDS],
            bytes_out: 0,
            closes: Vec::new(),
            connections_lost: 0,
            logins: 0,
            agent_logins: 0,
            logins_failed: 0,
            logins_throttled: 0,
            registrations: 0,
        }
    }
}

impl Counters {
    pub(crate) fn frame_in(&mut self, len: usize) {
        self.frames_in += 1;
        self.bytes_in += len as u64;
    }

    pub(crate) fn frame_out(&mut self, payload: &[u8]) {
        if let Some(&kind) = payload.first() {
            self.frames_out[usize::from(kind) % KINDS] += 1;
        }
        self.bytes_out += payload.len() as u64;
    }

    pub(crate) fn closed(&mut self, reason: CloseReason) {
        match self.closes.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.closes.push((reason, 1)),
        }
    }

    /// Outbound frames of the `ServerMsg` variant named `kind`.
    pub fn sent(&self, kind: &str) -> u64 {
        SERVER_MSG_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.frames_out[i])
    }

    /// Every named kind with its count, in wire order.
    pub fn frames_out_by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        SERVER_MSG_KINDS
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, self.frames_out[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::message::{RequestKind, ServerMsg};

    /// The names are the wire's: a frame of each kind below counts under its own name.
    #[test]
    fn outbound_frames_are_counted_under_their_variant_name() {
        let mut c = Counters::default();
        let frames = [
            ("Pong", ServerMsg::Pong { nonce: 7 }),
            ("PresenceDiff", ServerMsg::PresenceDiff { entries: vec![] }),
            ("Sent", ServerMsg::Sent { id: 1, seq: 2 }),
            ("OfflineDone", ServerMsg::OfflineDone { count: 0 }),
            (
                "Bye",
                ServerMsg::Bye {
                    reason: CloseReason::LoggedOut,
                },
            ),
            (
                "Throttled",
                ServerMsg::Throttled {
                    request: RequestKind::Login,
                    retry_after_ms: 1,
                },
            ),
        ];
        for (_, msg) in &frames {
            c.frame_out(&encode(msg));
        }
        for (name, _) in &frames {
            assert_eq!(c.sent(name), 1, "{name}");
        }
        assert_eq!(c.frames_out.iter().sum::<u64>(), frames.len() as u64);
        c.closed(CloseReason::HeartbeatTimeout);
        c.closed(CloseReason::HeartbeatTimeout);
        c.closed(CloseReason::LoggedOut);
        assert_eq!(
            c.closes,
            [
                (CloseReason::HeartbeatTimeout, 2),
                (CloseReason::LoggedOut, 1)
            ]
        );
    }
}
