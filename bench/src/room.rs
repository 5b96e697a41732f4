//! The `room` scenario: rooms of `--members` users (protocol version 3), some of them kept
//! offline, members sending to their room at a fixed rate. Measures deliveries to member
//! sessions per second, send → `RoomDeliver` latency at every online member, and server CPU
//! per delivered and per sent message; then logs the offline members in and checks that each
//! gets the room's backlog exactly once, in order.

use crate::chat::{self, ChatShared, Pace, To};
use crate::delivery::{
    drain, login_all, pace, report_cpu, report_deliveries, run_window, stop_all,
};
use crate::net::{fill, next_msg};
use crate::pop::{Population, Scope, Session};
use crate::procfs;
use crate::report::{Report, round};
use crate::scenarios::{
    Common, FD_RESERVE, Rate, bar, block, common_fields, finish, parse_rate, run_setup,
};
use crate::target::{Policy, Target};
use breeze_core::codec::encode_frame;
use breeze_core::message::{ClientMsg, RoomRole, ServerMsg};
use bytes::{BufMut, BytesMut};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Invites an owner keeps unanswered at once: under the per-connection storage budget the
/// bench gives the server (4096), so none is refused as `Busy`.
const INVITE_WINDOW: usize = 256;
/// How long the backlog check reads on after every offline member has its last message, to
/// catch a duplicate sent late.
const LINGER: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, clap::Args)]
pub struct RoomArgs {
    /// Members per room, the owner included (the server allows 1,000).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Rooms, each with its own members.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Share of each room's members (never its owner) who stay offline during the run and
    /// log in at the end to read the backlog.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub offline: f64,
    /// Online members per room who send (default: all of them); the others only read.
    #[arg(long)]
    pub senders: Option<usize>,
    /// Messages per second sent in all, over every room (a fixed rate: each message is
    /// delivered to every online member, so deliveries are this × online members).
    #[arg(long, default_value = "10", value_parser = parse_rate)]
    pub rate: Rate,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Sending before the measured window starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..1.0).contains(&x) => Ok(x),
        _ => Err(format!(
            "`{s}` is not a share from 0 up to (not including) 1"
        )),
    }
}

/// Who is in which room: room `k`'s members are users `k × members …`, its owner first and
/// its offline members last.
#[derive(Debug, Clone, Copy)]
struct Layout {
    rooms: usize,
    members: usize,
    offline: usize,
    senders: usize,
}

impl Layout {
    fn user(&self, room: usize, member: usize) -> usize {
        room * self.members + member
    }

    fn online(&self) -> usize {
        self.members - self.offline
    }

    /// Every online user, room by room.
    fn online_users(&self) -> Vec<usize> {
        (0..self.rooms)
            .flat_map(|k| (0..self.online()).map(move |j| self.user(k, j)))
            .collect()
    }

    fn offline_users(&self) -> Vec<usize> {
        (0..self.rooms)
            .flat_map(|k| (self.online()..self.members).map(move |j| self.user(k, j)))
            .collect()
    }

    fn room_of(&self, user: usize) -> usize {
        user / self.members
    }

    fn sends(&self, user: usize) -> bool {
        user % self.members < self.senders
    }
}

pub async fn room(a: RoomArgs, fd_limit: u64) -> Result<Report, String> {
    if !matches!(a.rate, Rate::PerSecond(_)) {
        return Err("the room scenario runs at a fixed --rate (messages per second)".into());
    }
    let members = a.members.max(2);
    let offline = ((members as f64 * a.offline).round() as usize).min(members - 1);
    let online = members - offline;
    let layout = Layout {
        rooms: a.rooms.max(1),
        members,
        offline,
        senders: a.senders.unwrap_or(online).clamp(1, online),
    };
    let n = layout.rooms * members;
    let cap = fd_limit.saturating_sub(FD_RESERVE) as usize;
    if layout.rooms * online > cap {
        return Err(format!(
            "{} online members need as many sockets, RLIMIT_NOFILE allows {cap} clients",
            layout.rooms * online
        ));
    }
    let pop = Arc::new(Population {
        n,
        prefix: a.common.server.prefix.clone(),
        scope: Scope::Contacts,
        contacts: 0,
    });
    let policy = Policy {
        scope: "contacts",
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_timeout: a.heartbeat_timeout,
        max_connections: n + 100,
    };
    let target = block(|| Target::new(&a.common.server, &policy))?;
    let mut r = Report::new("room");
    common_fields(&mut r, &a.common.server, &target);
    let rate = match a.rate {
        Rate::PerSecond(x) => x,
        Rate::Max => unreachable!("refused above"),
    };
    r.both(
        "rooms",
        format!(
            "{} × {members} members ({online} online, {offline} offline; {} online send)",
            layout.rooms, layout.senders
        ),
        "rooms",
        layout.rooms,
    )
    .field("members", members)
    .field("online", online)
    .field("offline", offline)
    .field("senders_per_room", layout.senders)
    .both(
        "rate",
        format!(
            "{rate:.0} msg/s sent in all = {:.0} deliveries/s owed",
            rate * online as f64
        ),
        "rate",
        rate,
    )
    .both(
        "measured window",
        format!("{:?} after {:?} warm-up", a.duration, a.warmup),
        "duration_s",
        a.duration.as_secs_f64(),
    )
    .field("warmup_s", a.warmup.as_secs_f64());
    run_setup(target.addr, &pop, &mut r).await;

    // The owners make the rooms and invite everyone, offline members included.
    let owners: Vec<usize> = (0..layout.rooms).map(|k| layout.user(k, 0)).collect();
    let (owner_sessions, mut login_errors) =
        login_all(&target, &pop, &owners, a.common.inflight).await;
    let t = Instant::now();
    let pb = bar(layout.rooms as u64, "making rooms");
    let mut making = JoinSet::new();
    for (k, s) in owner_sessions.into_iter().enumerate() {
        let s = s.ok_or_else(|| format!("owner of room {k} did not log in"))?;
        let invitees: Vec<_> = (1..members).map(|j| pop.user(layout.user(k, j))).collect();
        making.spawn(tokio::time::timeout(
            a.common.phase_timeout,
            make_room(s, k, invitees),
        ));
    }
    let mut rooms = vec![0u64; layout.rooms];
    let mut owner_sessions: Vec<Option<Session>> = (0..layout.rooms).map(|_| None).collect();
    while let Some(j) = making.join_next().await {
        let (k, room, s) = j
            .map_err(|e| e.to_string())?
            .map_err(|_| "making a room timed out".to_owned())??;
        rooms[k] = room;
        owner_sessions[k] = Some(s);
        pb.inc(1);
    }
    pb.finish_and_clear();
    r.row(
        "rooms made",
        format!(
            "{} rooms, {} invites, {:.1} s",
            layout.rooms,
            layout.rooms * (members - 1),
            t.elapsed().as_secs_f64()
        ),
    );

    // Then the online members log in and wait for their room.
    let others: Vec<usize> = layout
        .online_users()
        .into_iter()
        .filter(|&i| i % members != 0)
        .collect();
    let (other_sessions, errors) = login_all(&target, &pop, &others, a.common.inflight).await;
    login_errors.extend(errors);
    let mut sessions: Vec<(usize, Option<Session>)> =
        owners.iter().copied().zip(owner_sessions).collect();
    sessions.extend(others.iter().copied().zip(other_sessions));
    let t = Instant::now();
    let pb = bar(sessions.len() as u64, "members ready");
    let mut waiting = JoinSet::new();
    // The sessions send nothing meanwhile, so the wait stays well inside the heartbeat
    // timeout.
    let patience = a.heartbeat_timeout / 2;
    for (i, s) in sessions {
        let Some(s) = s else { continue };
        let room = rooms[layout.room_of(i)];
        waiting.spawn(async move {
            if i % members == 0 {
                // An owner had its room's list when it made the room.
                return (i, Ok(s));
            }
            let r = tokio::time::timeout(patience, await_room(s, room)).await;
            (
                i,
                r.unwrap_or_else(|_| Err("no RoomMembers for the room".into())),
            )
        });
    }
    let mut ready = Vec::new();
    while let Some(j) = waiting.join_next().await {
        match j {
            Ok((i, Ok(s))) => ready.push((i, s)),
            Ok((_, Err(e))) => login_errors.push(e),
            Err(e) => login_errors.push(e.to_string()),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    // The pacer's schedules follow user order, whatever order the members became ready in.
    ready.sort_by_key(|(i, _)| *i);
    r.both(
        "online members ready",
        format!(
            "{} of {} in {:.1} s ({} login errors)",
            ready.len(),
            layout.rooms * online,
            t.elapsed().as_secs_f64(),
            login_errors.len()
        ),
        "ready",
        ready.len(),
    )
    .field("login_errors", login_errors.len());
    if let Some(e) = login_errors.last() {
        r.field("last_login_error", e.clone());
    }

    let shared = Arc::new(ChatShared::starting(a.warmup, a.duration));
    let (stop_tx, stop_rx) = watch::channel(false);
    let senders = ready.iter().filter(|(i, _)| layout.sends(*i)).count();
    let mut paced = pace(senders, a.rate, &shared)?;
    let mut tasks = JoinSet::new();
    for (i, s) in ready {
        let k = layout.room_of(i);
        let pace = match paced.as_mut().filter(|_| layout.sends(i)) {
            Some((_, times)) => times.next().map_or(Pace::Silent, Pace::Rate),
            None => Pace::Silent,
        };
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        let to = To::Room(rooms[k]);
        tasks.spawn(async move { (k, chat::client(s, to, pace, &shared, stop).await) });
    }
    let window = run_window(&target, &shared, "sending (s)").await;
    drain(&shared, online as u64).await;
    let tops = stop_all(&mut tasks, &stop_tx).await;
    if let Some((thread, _)) = paced
        && thread.join().is_err()
    {
        return Err("the pacing thread panicked".to_owned());
    }
    let samples = report_deliveries(
        &mut r,
        &shared,
        a.duration,
        online as u64,
        "send → RoomDeliver",
        None,
    );
    report_cpu(&mut r, &target, &window, &shared, a.duration, true);
    // Every online member of a room should end at the same seq: the room's last.
    let mut top = vec![0u64; layout.rooms];
    for &(k, seq) in &tops {
        top[k] = top[k].max(seq);
    }
    let behind = tops.iter().filter(|&&(k, seq)| seq < top[k]).count();
    r.both(
        "online members short of the room's last seq",
        format!("{behind} of {}", tops.len()),
        "online_behind",
        behind,
    )
    .field("room_messages", top.iter().sum::<u64>());
    if offline > 0 {
        backlog_check(&mut r, &target, &pop, &layout, &rooms, &top, &a.common).await;
    }
    crate::scenarios::write_plot(
        &a.common.plot,
        &format!(
            "room: send to RoomDeliver, {} × {members} members",
            layout.rooms
        ),
        &samples,
        &[],
        &mut r,
    );
    finish(&mut r, target, shared.errors.count(), shared.errors.last());
    Ok(r)
}

/// Writes `bytes` to the session's connection.
async fn write(s: &mut Session, bytes: &[u8]) -> Result<(), String> {
    s.stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("write: {e}"))?;
    s.stream.flush().await.map_err(|e| format!("flush: {e}"))
}

/// The next server message of a session.
async fn next(s: &mut Session) -> Result<ServerMsg, String> {
    loop {
        if let Some(msg) = next_msg(&mut s.buf).map_err(|e| format!("bad frame: {e}"))? {
            return Ok(msg);
        }
        fill(&mut s.stream, &mut s.buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
    }
}

/// Creates room `k` through its owner's session and invites `invitees` (at most
/// `INVITE_WINDOW` unanswered); returns once the owner's member list holds all of them.
async fn make_room(
    mut s: Session,
    k: usize,
    invitees: Vec<breeze_core::UserId>,
) -> Result<(usize, u64, Session), String> {
    write(
        &mut s,
        &encode_frame(&ClientMsg::CreateRoom {
            name: format!("bench room {k}"),
        }),
    )
    .await?;
    let room = loop {
        match next(&mut s).await? {
            ServerMsg::RoomMembers {
                room, full: true, ..
            } => break room,
            ServerMsg::Error { request, code, .. } => {
                return Err(format!("CreateRoom: {request:?}: {code}"));
            }
            _ => {}
        }
    };
    let mut joined: BTreeSet<breeze_core::UserId> = BTreeSet::new();
    let mut asked = 0;
    while joined.len() < invitees.len() {
        if asked < invitees.len() && asked < joined.len() + INVITE_WINDOW {
            let mut out = BytesMut::new();
            while asked < invitees.len() && asked < joined.len() + INVITE_WINDOW {
                out.put_slice(&encode_frame(&ClientMsg::RoomInvite {
                    room,
                    user: invitees[asked].clone(),
                    role: RoomRole::Member,
                }));
                asked += 1;
            }
            write(&mut s, &out).await?;
        }
        match next(&mut s).await? {
            ServerMsg::RoomMembers {
                room: r, members, ..
            } if r == room => {
                for m in members {
                    if m.role.is_some() && invitees.contains(&m.user) {
                        joined.insert(m.user);
                    }
                }
            }
            ServerMsg::Error { request, code, .. } => {
                return Err(format!("RoomInvite: {request:?}: {code}"));
            }
            ServerMsg::Bye { reason } => return Err(format!("bye: {reason}")),
            _ => {}
        }
    }
    Ok((k, room, s))
}

/// Reads a fresh session's frames up to its room's full member list: the room is then
/// loaded in its feed, and nothing of it was stored yet. What follows stays in the buffer.
async fn await_room(mut s: Session, room: u64) -> Result<Session, String> {
    loop {
        match next(&mut s).await? {
            ServerMsg::RoomMembers {
                room: r,
                full: true,
                ..
            } if r == room => return Ok(s),
            ServerMsg::Bye { reason } => return Err(format!("bye: {reason}")),
            _ => {}
        }
    }
}

/// What one offline member read of its room's backlog at login.
#[derive(Debug, Default)]
struct Backlog {
    /// Distinct seqs, in order.
    got: u64,
    duplicates: u64,
    /// Seqs that came before one below them was delivered.
    gaps: u64,
    last: u64,
    error: Option<String>,
}

/// Reads room `room`'s backlog from a fresh session as a client does: `RoomAck` of the
/// highest seq after every read (which brings the next page), until `top` has come and
/// `LINGER` more, or `deadline`.
async fn read_backlog(mut s: Session, room: u64, top: u64, deadline: Instant) -> Backlog {
    let mut b = Backlog::default();
    let mut acked = 0;
    let mut until = deadline;
    let mut next_ping = Instant::now() + s.heartbeat_interval;
    loop {
        loop {
            match next_msg(&mut s.buf) {
                Ok(Some(ServerMsg::RoomDeliver(d))) if d.room == room => {
                    if d.seq <= b.last {
                        b.duplicates += 1;
                    } else {
                        if d.seq != b.last + 1 {
                            b.gaps += 1;
                        }
                        b.got += 1;
                        b.last = d.seq;
                    }
                }
                Ok(Some(ServerMsg::Bye { reason })) => {
                    b.error = Some(format!("bye: {reason}"));
                    return b;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    b.error = Some(format!("bad frame: {e}"));
                    return b;
                }
            }
        }
        let mut out = BytesMut::new();
        if b.last > acked {
            out.put_slice(&encode_frame(&ClientMsg::RoomAck { room, seq: b.last }));
            acked = b.last;
        }
        if Instant::now() >= next_ping {
            out.put_slice(&encode_frame(&ClientMsg::Ping { nonce: 0 }));
            next_ping = Instant::now() + s.heartbeat_interval;
        }
        if !out.is_empty()
            && let Err(e) = write(&mut s, &out).await
        {
            b.error = Some(e);
            return b;
        }
        if b.last >= top {
            until = until.min(Instant::now() + LINGER);
        }
        let wake = until.min(next_ping);
        match tokio::time::timeout_at(wake, fill(&mut s.stream, &mut s.buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                b.error = Some(format!("read: {e}"));
                return b;
            }
            Err(_) if Instant::now() >= until => return b,
            Err(_) => {}
        }
    }
}

/// Logs the offline members in and checks that each gets its room's backlog — every message
/// of the run, seqs 1 up to the room's last — exactly once and in order.
async fn backlog_check(
    r: &mut Report,
    target: &Target,
    pop: &Arc<Population>,
    layout: &Layout,
    rooms: &[u64],
    top: &[u64],
    common: &Common,
) {
    let users = layout.offline_users();
    // Per-thread scheduler time: /proc's stat ticks (10 ms) are too coarse for a phase this
    // short.
    let server0 = target.pid().and_then(|p| procfs::thread_cpu_ns(p).ok());
    let t = Instant::now();
    let (sessions, login_errors) = login_all(target, pop, &users, common.inflight).await;
    let deadline = Instant::now() + common.phase_timeout;
    let mut reads = JoinSet::new();
    for (&i, s) in users.iter().zip(sessions) {
        let Some(s) = s else { continue };
        let k = layout.room_of(i);
        let (room, top) = (rooms[k], top[k]);
        reads.spawn(async move { (top, read_backlog(s, room, top, deadline).await) });
    }
    let pb = bar(users.len() as u64, "backlogs");
    let (mut exact, mut short, mut dups, mut gaps, mut got) = (0, 0, 0, 0, 0);
    let mut last_error = login_errors.last().cloned();
    while let Some(j) = reads.join_next().await {
        pb.inc(1);
        let Ok((top, b)) = j else { continue };
        got += b.got;
        dups += b.duplicates;
        gaps += b.gaps;
        if b.got == top && b.last == top && b.duplicates == 0 && b.gaps == 0 {
            exact += 1;
        } else if b.got < top {
            short += 1;
        }
        if b.error.is_some() {
            last_error = b.error;
        }
    }
    pb.finish_and_clear();
    // The lingering at the end is the check's, not the server's.
    let secs = t.elapsed().as_secs_f64() - LINGER.as_secs_f64();
    let owed: u64 = users.iter().map(|&i| top[layout.room_of(i)]).sum();
    let verdict = if exact == users.len() { "OK" } else { "FAILED" };
    r.both(
        "offline members' backlog at login",
        format!(
            "{verdict}: {exact} of {} got every message exactly once, in order ({got} of \
             {owed} owed; {short} short, {dups} duplicates, {gaps} out of order; {} login \
             errors), {secs:.2} s",
            users.len(),
            login_errors.len()
        ),
        "backlog",
        json!({
            "offline_members": users.len(),
            "exactly_once": exact,
            "short": short,
            "duplicates": dups,
            "out_of_order": gaps,
            "delivered": got,
            "owed": owed,
            "login_errors": login_errors.len(),
            "seconds": round(secs, 3),
            "last_error": last_error,
        }),
    );
    let server1 = target.pid().and_then(|p| procfs::thread_cpu_ns(p).ok());
    if let (Some(s0), Some(s1)) = (server0, server1) {
        let cpu = procfs::cpu_ns_between(&s0, &s1) as f64 / 1e9;
        r.both(
            "server CPU, offline logins + backlogs",
            format!(
                "{:.1} ms ({:.1} µs per backlog message, logins included)",
                cpu * 1e3,
                cpu * 1e6 / got.max(1) as f64
            ),
            "backlog_server_cpu_s",
            round(cpu, 4),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_hold_their_owner_first_and_their_offline_members_last() {
        let l = Layout {
            rooms: 2,
            members: 10,
            offline: 3,
            senders: 4,
        };
        assert_eq!(
            l.online_users(),
            vec![0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(l.offline_users(), vec![7, 8, 9, 17, 18, 19]);
        assert_eq!(l.room_of(17), 1);
        assert!(l.sends(13) && !l.sends(14));
    }

    #[test]
    fn the_offline_share_is_below_one() {
        assert_eq!(parse_share("0.3"), Ok(0.3));
        assert!(parse_share("1").is_err());
        assert!(parse_share("-0.1").is_err());
    }
}
