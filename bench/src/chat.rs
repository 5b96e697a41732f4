//! Chat clients: pairs send each other messages (or members send to their room) at a set
//! rate (or as fast as a window of unconfirmed messages allows), ack what they receive, and
//! time each message from its (intended) send to its `Deliver` (`RoomDeliver`).

use crate::net::{fill, next_msg};
use crate::pop::{Errors, Session};
use breeze_core::UserId;
use breeze_core::codec::encode_frame;
use breeze_core::message::{ClientMsg, ServerMsg};
use bytes::{BufMut, BytesMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::Instant;

/// How a client paces its sends.
#[derive(Debug)]
pub enum Pace {
    /// Send one message at each intended time the pacer (`crate::pacer`) hands over; latency
    /// counts from that time, so a late sender is not excused (no coordinated omission).
    Rate(UnboundedReceiver<Instant>),
    /// Keep `window` messages sent and not yet confirmed by `Sent`.
    Max { window: usize },
    /// Never send: a room member who only reads.
    Silent,
}

/// Counters all chat clients add to.
#[derive(Debug)]
pub struct ChatShared {
    /// Message bodies carry their intended send time as nanoseconds since this instant.
    pub epoch: Instant,
    /// Sending starts here…
    pub start: Instant,
    /// …and latencies and deliveries count in `[window_start, window_end)`…
    pub window_start: Instant,
    pub window_end: Instant,
    /// …and sending stops when this is set (at `window_end`).
    pub stop_sending: AtomicBool,
    pub sent: AtomicU64,
    /// Sends whose intended time is in the window.
    pub sent_in_window: AtomicU64,
    /// `Sent` received: the message is durable.
    pub confirmed: AtomicU64,
    pub delivered: AtomicU64,
    pub delivered_in_window: AtomicU64,
    pub duplicates: AtomicU64,
    pub errors: Errors,
    /// Each message's intended send time and its latency (µs), for those sent in the window.
    pub latencies: Mutex<Vec<(Instant, u64)>>,
}

impl ChatShared {
    pub fn new(epoch: Instant, start: Instant, warmup: Duration, duration: Duration) -> ChatShared {
        ChatShared {
            epoch,
            start,
            window_start: start + warmup,
            window_end: start + warmup + duration,
            stop_sending: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            sent_in_window: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            delivered_in_window: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            errors: Errors::default(),
            latencies: Mutex::new(Vec::new()),
        }
    }

    /// Counters for a run whose sending starts 200 ms from now (time for every client task
    /// to be waiting first).
    pub fn starting(warmup: Duration, duration: Duration) -> ChatShared {
        let epoch = Instant::now();
        ChatShared::new(epoch, epoch + Duration::from_millis(200), warmup, duration)
    }
}

/// The body of a message meant to leave at `at`: its send time, for the receiver's clock
/// (the same process, so the same clock).
pub fn body_for(epoch: Instant, at: Instant) -> String {
    at.saturating_duration_since(epoch).as_nanos().to_string()
}

/// The intended send time a body carries.
pub fn sent_at(epoch: Instant, body: &str) -> Option<Instant> {
    body.parse::<u64>()
        .ok()
        .map(|ns| epoch + Duration::from_nanos(ns))
}

/// Whom a chat client writes to.
#[derive(Debug, Clone)]
pub enum To {
    /// One user, with `Send`; deliveries come as `Deliver` and are acked by seq.
    Peer(UserId),
    /// A room the client is a member of, with `RoomSend`; deliveries come as `RoomDeliver`
    /// (its own messages included) and are acked by the highest seq read.
    Room(u64),
}

impl To {
    fn message(&self, id: u64, body: String) -> ClientMsg {
        match self {
            To::Peer(peer) => ClientMsg::Send {
                id,
                to: peer.clone(),
                body,
                attachment: None,
            },
            To::Room(room) => ClientMsg::RoomSend {
                id,
                room: *room,
                body,
            },
        }
    }
}

/// Runs one chat client until `stop`, and returns the highest seq it was delivered (its
/// mailbox's, or its room's).
pub async fn client(
    session: Session,
    to: To,
    mut pace: Pace,
    shared: &ChatShared,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let Session {
        mut stream,
        mut buf,
        heartbeat_interval,
        ..
    } = session;
    let (mut r, mut w) = stream.split();
    let mut out = BytesMut::with_capacity(8 * 1024);
    let mut next_id = 1u64;
    let mut outstanding = 0usize;
    let mut last_seq = 0u64;
    let mut lat: Vec<(Instant, u64)> = Vec::new();
    let mut next_ping = Instant::now() + heartbeat_interval;
    let mut send_one = |out: &mut BytesMut, at: Instant| {
        let msg = to.message(next_id, body_for(shared.epoch, at));
        next_id += 1;
        if at >= shared.window_start && at < shared.window_end {
            shared.sent_in_window.fetch_add(1, Ordering::Relaxed);
        }
        out.put_slice(&encode_frame(&msg));
    };
    let mut acked = 0u64;
    // The login may have read past `LoginOk`.
    let mut unread = true;
    'run: loop {
        if unread {
            unread = false;
            let now = Instant::now();
            let mut seqs = Vec::new();
            loop {
                let msg = match next_msg(&mut buf) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => {
                        shared.errors.add(format!("bad frame: {e}"));
                        break 'run;
                    }
                };
                let (seq, body) = match (&to, msg) {
                    (_, ServerMsg::Sent { .. }) => {
                        outstanding = outstanding.saturating_sub(1);
                        shared.confirmed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    (To::Peer(_), ServerMsg::Deliver(d)) => {
                        seqs.push(d.seq);
                        (d.seq, d.body)
                    }
                    (To::Room(room), ServerMsg::RoomDeliver(d)) if d.room == *room => {
                        (d.seq, d.body)
                    }
                    (_, ServerMsg::Error { request, code, .. }) => {
                        shared.errors.add(format!("{request:?}: {code}"));
                        outstanding = outstanding.saturating_sub(1);
                        continue;
                    }
                    (_, ServerMsg::Bye { reason }) => {
                        shared.errors.add(format!("bye: {reason}"));
                        break 'run;
                    }
                    _ => continue,
                };
                // Seqs grow per recipient (per room) while nothing is redelivered.
                if seq <= last_seq {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                last_seq = seq;
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                if now >= shared.window_start && now < shared.window_end {
                    shared.delivered_in_window.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(at) = sent_at(shared.epoch, &body)
                    && at >= shared.window_start
                    && at < shared.window_end
                {
                    lat.push((at, now.saturating_duration_since(at).as_micros() as u64));
                }
            }
            match &to {
                To::Peer(_) => {
                    for chunk in seqs.chunks(4096) {
                        out.put_slice(&encode_frame(&ClientMsg::Ack {
                            seqs: chunk.to_vec(),
                        }));
                    }
                }
                // One ack per read moves the cursor over everything read; it is also what
                // lets the server send a backlog's next page.
                To::Room(room) if last_seq > acked => {
                    out.put_slice(&encode_frame(&ClientMsg::RoomAck {
                        room: *room,
                        seq: last_seq,
                    }));
                    acked = last_seq;
                }
                To::Room(_) => {}
            }
        }
        // Under `--rate max`, top the window up after every read (a `Sent` frees a slot) and
        // when the start comes.
        if let Pace::Max { window } = pace
            && !shared.stop_sending.load(Ordering::Relaxed)
            && outstanding < window
        {
            let now = Instant::now();
            if now >= shared.start {
                let mut n = 0;
                while outstanding < window {
                    send_one(&mut out, now);
                    outstanding += 1;
                    n += 1;
                }
                shared.sent.fetch_add(n, Ordering::Relaxed);
            }
        }
        if !out.is_empty() {
            if let Err(e) = w.write_all(&out).await {
                shared.errors.add(format!("write: {e}"));
                break;
            }
            // A no-op on TCP; on WebSocket it sends what the write gathered.
            if let Err(e) = w.flush().await {
                shared.errors.add(format!("flush: {e}"));
                break;
            }
            out.clear();
        }
        let sending = !shared.stop_sending.load(Ordering::Relaxed);
        let wake = match pace {
            Pace::Max { window } if sending && outstanding < window => shared.start,
            _ => next_ping,
        }
        .min(next_ping);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            read = fill(&mut r, &mut buf) => {
                if let Err(e) = read {
                    shared.errors.add(format!("read: {e}"));
                    break;
                }
                unread = true;
            }
            Some(at) = intended(&mut pace), if sending => {
                send_one(&mut out, at);
                let mut n = 1;
                // Catch up on every send already due, each stamped with its own time.
                if let Pace::Rate(times) = &mut pace {
                    while let Ok(at) = times.try_recv() {
                        send_one(&mut out, at);
                        n += 1;
                    }
                }
                shared.sent.fetch_add(n, Ordering::Relaxed);
            }
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_ping {
                    out.put_slice(&encode_frame(&ClientMsg::Ping { nonce: 0 }));
                    next_ping = now + heartbeat_interval;
                }
            }
        }
    }
    shared
        .latencies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .extend(lat);
    last_seq
}

/// The next intended send time under `Pace::Rate`; never resolves otherwise.
async fn intended(pace: &mut Pace) -> Option<Instant> {
    match pace {
        Pace::Rate(times) => times.recv().await,
        Pace::Max { .. } | Pace::Silent => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_carries_its_send_time() {
        let epoch = Instant::now();
        let at = epoch + Duration::from_micros(1234);
        let body = body_for(epoch, at);
        assert_eq!(body, "1234000");
        assert_eq!(sent_at(epoch, &body), Some(at));
        assert_eq!(sent_at(epoch, "hello"), None);
    }
}
