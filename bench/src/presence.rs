//! Presence clients: log in, keep a presence view, ping at the server's interval, and on
//! command go silent or close. One task each; one shared record of what they saw.

use crate::net::{fill, next_msg, send};
use crate::pop::{Errors, Population, Session, login};
use breeze_core::message::{ClientMsg, Credential, Presence, ServerMsg};
use breeze_core::rng::SplitMix64;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// How a victim leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Close {
    /// An orderly close: FIN.
    Fin,
    /// SO_LINGER 0, then close: the kernel sends RST.
    Rst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// Stop sending and reading; keep the socket open (a half-open peer).
    Silent,
    Close(Close),
    /// Nothing: the orchestrator SIGKILLs the node the victims are on, and they take the
    /// end of their connection as their leaving.
    NodeKilled,
    /// Nothing: the orchestrator cuts the bus link of the node the victims are on; it fences
    /// itself (`Bye{NodeFenced}`), and they take that as their leaving.
    NodeCut,
}

impl Leave {
    /// The victims' node goes, not the victims: the orchestrator acts, not the clients.
    pub fn node_goes(self) -> bool {
        matches!(self, Leave::NodeKilled | Leave::NodeCut)
    }
}

/// A login round: clients whose last round is older log in (again), client `i` to
/// `addrs[i mod len]` (one address per node).
#[derive(Debug, Clone)]
pub struct Go {
    pub round: u64,
    pub addrs: Arc<[SocketAddr]>,
}

/// What every client shares with the orchestrator.
#[derive(Debug)]
pub struct Shared {
    pub pop: Arc<Population>,
    /// Bounds logins in flight: taken before connecting, given back at `LoginOk`.
    pub login_slots: Semaphore,
    pub logged_in: AtomicUsize,
    /// Clients whose view holds every watched user online, this round.
    pub complete: AtomicUsize,
    /// Sessions that ended (the server went away, or a Bye).
    pub ended: AtomicUsize,
    /// Heartbeat `Ping`s written: with the server's CPU over a window, its cost per ping.
    pub pings: AtomicUsize,
    pub errors: Errors,
    /// Connect to `LoginOk`, per login, in microseconds.
    pub login_us: Mutex<Vec<u64>>,
    /// When set, offline notifications about victims are recorded.
    pub recording: AtomicBool,
    /// (victim slot, when a watcher read the offline notification).
    pub offline_seen: Mutex<Vec<(usize, Instant)>>,
    /// Per victim slot: when it sent its last frame (silent) or closed.
    pub left_at: Mutex<Vec<Option<Instant>>>,
    /// Victim slot of each client, if it is one.
    pub victim_slot: Vec<Option<usize>>,
    /// Offline notices, while recording, about users that did not leave.
    pub false_offline: AtomicUsize,
    /// At a census: (watcher, victim) pairs the watcher's view still shows online.
    pub ghosts: AtomicUsize,
    /// Watchers that answered the latest census.
    pub census_answers: AtomicUsize,
}

impl Shared {
    pub fn new(pop: Arc<Population>, inflight: usize, victims: &[usize]) -> Shared {
        let mut victim_slot = vec![None; pop.n];
        for (slot, &v) in victims.iter().enumerate() {
            victim_slot[v] = Some(slot);
        }
        Shared {
            pop,
            login_slots: Semaphore::new(inflight.max(1)),
            logged_in: AtomicUsize::new(0),
            complete: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            pings: AtomicUsize::new(0),
            errors: Errors::default(),
            login_us: Mutex::new(Vec::new()),
            recording: AtomicBool::new(false),
            offline_seen: Mutex::new(Vec::new()),
            left_at: Mutex::new(vec![None; victims.len()]),
            victim_slot,
            false_offline: AtomicUsize::new(0),
            ghosts: AtomicUsize::new(0),
            census_answers: AtomicUsize::new(0),
        }
    }

    pub fn take_login_us(&self) -> Vec<u64> {
        std::mem::take(&mut *self.login_us.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Channels from the orchestrator to every client.
#[derive(Debug, Clone)]
pub struct Control {
    pub go: watch::Receiver<Go>,
    /// Ends every client (and closes its socket).
    pub stop: watch::Receiver<bool>,
    /// When victims start leaving; victim slot `j` leaves at `strike + j × stagger`.
    pub strike: watch::Receiver<Option<Instant>>,
    pub stagger: Duration,
    pub leave: Leave,
    /// Each change asks every watcher still connected to count the victims it shows online.
    pub census: watch::Receiver<u64>,
}

/// One client, for as many rounds as the orchestrator runs: log in (password first, then the
/// newest resume token), watch, ping, and when its session ends wait for the next round.
pub async fn client(i: usize, shared: Arc<Shared>, mut ctl: Control) {
    let mut token: Option<Vec<u8>> = None;
    let mut round = 0;
    let mut rng = client_rng(i);
    loop {
        let go = loop {
            let go = ctl.go.borrow_and_update().clone();
            if go.round > round {
                break go;
            }
            tokio::select! {
                r = ctl.go.changed() => if r.is_err() { return },
                _ = ctl.stop.changed() => return,
            }
        };
        round = go.round;
        let session = {
            let Ok(_slot) = shared.login_slots.acquire().await else {
                return;
            };
            let started = Instant::now();
            let credential = match &token {
                Some(t) => Credential::Token(t.clone()),
                None => Credential::Password(shared.pop.password(i)),
            };
            let attempt = tokio::select! {
                s = tokio::time::timeout(Duration::from_secs(60), login(go.addrs[i % go.addrs.len()], &shared.pop, i, credential)) => {
                    s.unwrap_or_else(|_| Err("login timed out after 60 s".into()))
                }
                _ = ctl.stop.changed() => return,
            };
            match attempt {
                Ok(s) => {
                    let us = started.elapsed().as_micros() as u64;
                    shared
                        .login_us
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(us);
                    shared.logged_in.fetch_add(1, Ordering::Relaxed);
                    s
                }
                Err(e) => {
                    shared.errors.add(format!("client {i}: {e}"));
                    continue;
                }
            }
        };
        token = Some(session.resume_token.clone())
            .filter(|t| !t.is_empty())
            .or(token);
        let ended = watch_session(i, session, &shared, &mut ctl, &mut rng).await;
        match ended {
            Ended::Stopped => return,
            Ended::Left => {
                // A victim waits for the end of the run, gone.
                let _ = ctl.stop.changed().await;
                return;
            }
            Ended::Lost(why) => {
                shared.ended.fetch_add(1, Ordering::Relaxed);
                if let Some(why) = why {
                    shared.errors.add(format!("client {i}: {why}"));
                }
            }
        }
    }
}

/// Client `i`'s random numbers: the same every run, so two runs (and the Mosquitto run of
/// `mosquitto-hold`, which pings with the same clock) place every client's pings alike.
pub fn client_rng(i: usize) -> SplitMix64 {
    SplitMix64::new(0x5EED ^ i as u64)
}

/// When a client's next heartbeat is due: every `interval`, the first at a random point of
/// the first interval after the session starts, so that pings spread evenly over time rather
/// than arriving in one burst per interval.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    next: Instant,
    interval: Duration,
}

impl Heartbeat {
    /// The clock of a session starting now; intervals under 10 ms are taken as 10 ms.
    pub fn start(interval: Duration, rng: &mut SplitMix64) -> Heartbeat {
        let interval = interval.max(Duration::from_millis(10));
        let jitter = rng.below_inclusive(interval.as_micros() as u64);
        Heartbeat {
            next: Instant::now() + Duration::from_micros(jitter),
            interval,
        }
    }

    pub fn due(&self) -> Instant {
        self.next
    }

    /// The ping due was written: the next one is an interval later (not an interval after
    /// now, so a late wake-up does not shift the client's phase).
    pub fn sent(&mut self) {
        self.next += self.interval;
    }
}

enum Ended {
    Stopped,
    /// A victim left as told.
    Left,
    /// The session ended on the server's side: an error to report, or `None` when the server
    /// said it was shutting down.
    Lost(Option<String>),
}

/// A client's picture of whom it watches.
#[derive(Debug, Default)]
pub struct View {
    online: HashMap<u32, bool>,
    online_count: usize,
}

impl View {
    /// Applies a snapshot (`replace`) or a diff; calls `offline` for each user now offline.
    pub fn apply(
        &mut self,
        pop: &Population,
        entries: &[breeze_core::message::PresenceEntry],
        replace: bool,
        mut offline: impl FnMut(usize),
    ) {
        if replace {
            self.online.clear();
            self.online_count = 0;
        }
        for e in entries {
            let Some(u) = pop.index_of(e.user.as_str()) else {
                continue;
            };
            let now = e.presence != Presence::Offline;
            let before = self.online.insert(u as u32, now).unwrap_or(false);
            match (before, now) {
                (false, true) => self.online_count += 1,
                (true, false) => self.online_count -= 1,
                _ => {}
            }
            if !now {
                offline(u);
            }
        }
    }

    pub fn online(&self) -> usize {
        self.online_count
    }

    /// How many users for whom `counts` holds this view shows online.
    pub fn online_among(&self, counts: impl Fn(usize) -> bool) -> usize {
        self.online
            .iter()
            .filter(|&(&u, &on)| on && counts(u as usize))
            .count()
    }
}

async fn watch_session(
    i: usize,
    session: Session,
    shared: &Shared,
    ctl: &mut Control,
    rng: &mut SplitMix64,
) -> Ended {
    let Session {
        mut stream,
        mut buf,
        heartbeat_interval,
        ..
    } = session;
    let pop = &shared.pop;
    let expected = pop.view_size();
    let mut view = View::default();
    let mut complete = false;
    let mut heartbeat = Heartbeat::start(heartbeat_interval, rng);
    let mut nonce = 0u64;
    let victim = shared.victim_slot[i];
    let mut leave_at: Option<Instant> = None;
    let (mut r, mut w) = stream.split();
    // The login may have read past `LoginOk`: the snapshot can already be in `buf`.
    let mut unread = true;
    loop {
        if unread {
            unread = false;
            let now = Instant::now();
            loop {
                let msg = match next_msg(&mut buf) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => return Ended::Lost(Some(format!("bad frame: {e}"))),
                };
                match msg {
                    ServerMsg::PresenceSnapshot { entries } => {
                        view.apply(pop, &entries, true, |_| {});
                    }
                    ServerMsg::PresenceDiff { entries } => {
                        let recording = shared.recording.load(Ordering::Relaxed);
                        view.apply(pop, &entries, false, |u| {
                            // Only watchers that stay count: under `--stagger-ms` a victim
                            // still online hears of those that left before it.
                            if !recording || victim.is_some() {
                                return;
                            }
                            match shared.victim_slot[u] {
                                Some(slot) => shared
                                    .offline_seen
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .push((slot, now)),
                                None => {
                                    shared.false_offline.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        });
                    }
                    ServerMsg::Bye {
                        reason: breeze_core::message::CloseReason::NodeFenced,
                    } if victim.is_some() && ctl.leave == Leave::NodeCut => {
                        return Ended::Left;
                    }
                    ServerMsg::Bye { reason } => {
                        return Ended::Lost(
                            if reason == breeze_core::message::CloseReason::ServerShutdown {
                                None
                            } else {
                                Some(format!("bye: {reason}"))
                            },
                        );
                    }
                    ServerMsg::Error { request, code, .. } => {
                        shared
                            .errors
                            .add(format!("client {i}: {request:?}: {code}"));
                    }
                    _ => {}
                }
            }
            if !complete && view.online() >= expected {
                complete = true;
                shared.complete.fetch_add(1, Ordering::Relaxed);
            }
        }
        if leave_at.is_none()
            && !ctl.leave.node_goes()
            && let (Some(slot), Some(strike)) = (victim, *ctl.strike.borrow_and_update())
        {
            leave_at = Some(strike + ctl.stagger * slot as u32);
        }
        tokio::select! {
            biased;
            _ = ctl.stop.changed() => return Ended::Stopped,
            _ = ctl.strike.changed(), if victim.is_some() && leave_at.is_none() => {}
            _ = ctl.census.changed(), if victim.is_none() => {
                let ghosts = view.online_among(|u| shared.victim_slot[u].is_some());
                shared.ghosts.fetch_add(ghosts, Ordering::Relaxed);
                shared.census_answers.fetch_add(1, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(leave_at.unwrap_or_else(Instant::now)), if leave_at.is_some() => {
                let slot = victim.unwrap_or(0);
                let record = |at: Instant| {
                    shared.left_at.lock().unwrap_or_else(PoisonError::into_inner)[slot] = Some(at);
                };
                match ctl.leave {
                    Leave::Silent => {
                        // One last frame, then nothing: no writes, no reads, socket open.
                        nonce += 1;
                        if send(&mut w, &ClientMsg::Ping { nonce }).await.is_err() {
                            return Ended::Lost(Some("write failed".into()));
                        }
                        record(Instant::now());
                        let _ = ctl.stop.changed().await;
                        return Ended::Stopped;
                    }
                    Leave::Close(Close::Rst) => {
                        let Some(tcp) = r.tcp() else {
                            return Ended::Lost(Some("a reset needs --transport tcp".into()));
                        };
                        let sock = socket2::SockRef::from(tcp);
                        if let Err(e) = sock.set_linger(Some(Duration::ZERO)) {
                            return Ended::Lost(Some(format!("SO_LINGER: {e}")));
                        }
                        record(Instant::now());
                        // Returning drops the socket: with linger 0 the close is a reset.
                        return Ended::Left;
                    }
                    // Never set for these: the node goes, not the client.
                    Leave::NodeKilled | Leave::NodeCut => return Ended::Left,
                    Leave::Close(Close::Fin) => {
                        record(Instant::now());
                        let _ = w.shutdown().await;
                        // Read until the server closes too, so nothing unread turns our
                        // close into a reset.
                        let _ = tokio::time::timeout(Duration::from_secs(10), async {
                            while fill(&mut r, &mut buf).await.is_ok() {
                                buf.clear();
                            }
                        }).await;
                        return Ended::Left;
                    }
                }
            }
            read = fill(&mut r, &mut buf) => {
                if let Err(e) = read {
                    // A victim's node was killed under it: that is its leaving.
                    if victim.is_some() && ctl.leave.node_goes() {
                        return Ended::Left;
                    }
                    return Ended::Lost(Some(format!("read: {e}")));
                }
                unread = true;
            }
            () = tokio::time::sleep_until(heartbeat.due()) => {
                nonce += 1;
                if let Err(e) = send(&mut w, &ClientMsg::Ping { nonce }).await {
                    return Ended::Lost(Some(format!("ping: {e}")));
                }
                shared.pings.fetch_add(1, Ordering::Relaxed);
                heartbeat.sent();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop::Scope;
    use breeze_core::message::PresenceEntry;

    fn entry(pop: &Population, i: usize, presence: Presence) -> PresenceEntry {
        PresenceEntry {
            user: pop.user(i),
            presence,
        }
    }

    #[test]
    fn a_view_counts_only_the_users_asked_about_that_it_shows_online() {
        let pop = Population {
            n: 10,
            prefix: "u".into(),
            scope: Scope::Contacts,
            contacts: 4,
        };
        let mut view = View::default();
        let snapshot: Vec<_> = (1..=4).map(|i| entry(&pop, i, Presence::Online)).collect();
        view.apply(&pop, &snapshot, true, |_| {});
        let victims = |u: usize| u.is_multiple_of(2);
        // Users 2 and 4 are victims still shown online: two ghosts until told otherwise.
        assert_eq!(view.online_among(victims), 2);
        let mut told = Vec::new();
        view.apply(
            &pop,
            &[
                entry(&pop, 2, Presence::Offline),
                entry(&pop, 3, Presence::Away),
            ],
            false,
            |u| told.push(u),
        );
        assert_eq!(told, vec![2]);
        assert_eq!(view.online_among(victims), 1);
        assert_eq!(view.online(), 3);
    }
}
