//! Floods of storage work from many connections against the whole server (core, tokio host,
//! SQLite store) over loopback: the work budgets refuse what does not fit (`Busy`), the
//! registration throttle refuses what an address may not register (`RateLimited`), every
//! request is answered, and the server's memory stays flat from one flood to the next.
//!
//! A file of its own so that the resident set it measures is this test's alone (the tests of
//! one file share a process and run in parallel).

#![cfg(target_os = "linux")]

mod hostile;

use breeze_core::codec::encode_frame;
use breeze_core::config::{Budget, RegisterThrottle};
use breeze_core::message::{ClientMsg, ErrorCode, RequestKind, ServerMsg};
use breeze_testsupport::{PASSWORD, Peer, user};
use bytes::BytesMut;
use hostile::{rss_kib, start, stop};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const SENDERS: u8 = 8;
const SENDS_PER_FLOOD: u64 = 1000;
const BODY: usize = 4096;
/// Sends written per `write_all`, so the test's own buffers stay small.
const CHUNK: u64 = 100;
const REGISTER_ADDRESSES: u8 = 4;
const REGISTER_CONNS: u8 = 4;
const REGISTERS_PER_CONN: usize = 50;
const REGISTER_BURST: u32 = 10;
/// Growth of the resident set allowed from the first flood's peak to the second's. A flood
/// pushes 32 MiB of messages at the server; unbounded queues would hold what the store has
/// not written yet.
const FLAT_KIB: u64 = 16 * 1024;

fn addr(third: u8, fourth: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, third, fourth))
}

/// A raw peer from `local`, registered as `name` and logged in.
async fn user_from(local: IpAddr, server: SocketAddr, name: &str) -> Peer {
    let mut peer = Peer::connect_from(local, server).await;
    peer.say_hello().await;
    peer.register(name).await;
    peer.login(name).await;
    peer
}

#[derive(Debug, Default)]
struct SendTally {
    sent: u64,
    busy: u64,
}

/// Every sender pipelines `SENDS_PER_FLOOD` messages to `sink` (offline, so they wait in its
/// mailbox); each must be answered, once, with `Sent` or `Busy` naming its id.
async fn send_flood(senders: Vec<Peer>, flood: u64) -> (Vec<Peer>, SendTally) {
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|mut peer| {
            tokio::spawn(async move {
                let first = flood * SENDS_PER_FLOOD;
                let ids = first..first + SENDS_PER_FLOOD;
                for chunk in ids.clone().step_by(CHUNK as usize) {
                    let mut frames = BytesMut::new();
                    for id in chunk..chunk + CHUNK {
                        frames.extend_from_slice(&encode_frame(&ClientMsg::Send {
                            id,
                            to: user("sink"),
                            body: "x".repeat(BODY),
                            attachment: None,
                        }));
                    }
                    assert!(peer.send_raw(&frames).await, "the server cut a sender");
                }
                let mut answered = BTreeSet::new();
                let mut tally = SendTally::default();
                while (answered.len() as u64) < SENDS_PER_FLOOD {
                    let id = match peer.recv().await.expect("answers, not a close") {
                        ServerMsg::Sent { id, .. } => {
                            tally.sent += 1;
                            id
                        }
                        ServerMsg::Error {
                            request: RequestKind::Send,
                            code: ErrorCode::Busy,
                            id: Some(id),
                        } => {
                            tally.busy += 1;
                            id
                        }
                        // Left over from the login, and users joining.
                        ServerMsg::OfflineDone { .. } | ServerMsg::PresenceDiff { .. } => continue,
                        other => panic!("unexpected answer to a Send: {other:?}"),
                    };
                    assert!(ids.contains(&id), "an answer for id {id}");
                    assert!(answered.insert(id), "id {id} answered twice");
                }
                (peer, tally)
            })
        })
        .collect();
    let mut peers = Vec::new();
    let mut total = SendTally::default();
    for task in tasks {
        let (peer, tally) = task.await.unwrap();
        peers.push(peer);
        total.sent += tally.sent;
        total.busy += tally.busy;
    }
    (peers, total)
}

#[derive(Debug, Default)]
struct RegisterTally {
    registered: u64,
    rate_limited: u64,
    busy: u64,
}

/// `REGISTER_CONNS` connections from each of `REGISTER_ADDRESSES` addresses register
/// `REGISTERS_PER_CONN` fresh names each; every one must be answered.
async fn register_flood(server: SocketAddr, flood: u64) -> RegisterTally {
    let mut tasks = Vec::new();
    for a in 1..=REGISTER_ADDRESSES {
        for c in 0..REGISTER_CONNS {
            tasks.push(tokio::spawn(async move {
                let mut peer = Peer::connect_from(addr(2, a), server).await;
                peer.say_hello().await;
                let mut tally = RegisterTally::default();
                // One at a time, as a script signing up accounts would: a pipelined burst
                // would mostly meet the hashing budget instead of the throttle.
                for i in 0..REGISTERS_PER_CONN {
                    peer.send(&ClientMsg::Register {
                        user: user(&format!("r{flood}-{a}-{c}-{i}")),
                        password: PASSWORD.into(),
                    })
                    .await;
                    match peer.recv().await.expect("an answer, not a close") {
                        ServerMsg::Registered { .. } => tally.registered += 1,
                        ServerMsg::Error {
                            request: RequestKind::Register,
                            code: ErrorCode::RateLimited,
                            ..
                        } => tally.rate_limited += 1,
                        ServerMsg::Error {
                            request: RequestKind::Register,
                            code: ErrorCode::Busy,
                            ..
                        } => tally.busy += 1,
                        other => panic!("unexpected answer to a Register: {other:?}"),
                    }
                }
                tally
            }));
        }
    }
    let mut total = RegisterTally::default();
    for task in tasks {
        let tally = task.await.unwrap();
        total.registered += tally.registered;
        total.rate_limited += tally.rate_limited;
        total.busy += tally.busy;
    }
    total
}

/// Runs `f` while sampling this process's resident set every 5 ms; returns its result and
/// the peak, in KiB.
async fn peak_during<T>(f: impl Future<Output = T>) -> (T, u64) {
    let peak = Arc::new(AtomicU64::new(rss_kib()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = f.await;
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (out, peak.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_register_floods_are_refused_and_memory_stays_flat() {
    let (server, _dir) = start(|s| {
        // Small enough that eight pipelining senders meet both the per-connection and the
        // server-wide budget.
        s.server.work.storage = Budget {
            per_conn: 16,
            total: 64,
        };
        s.server.register_throttle = RegisterThrottle {
            burst: REGISTER_BURST,
            // No allowance refills within the test: exactly the burst gets through.
            every: Duration::from_secs(3600),
        };
        s.server.heartbeat_timeout = Duration::from_secs(60);
    })
    .await;
    let server_addr = server.local_addr();
    let mut sink = Peer::connect_from(addr(1, 100), server_addr).await;
    sink.say_hello().await;
    sink.register("sink").await;
    let mut senders = Vec::new();
    for i in 1..=SENDERS {
        senders.push(user_from(addr(1, i), server_addr, &format!("sender{i}")).await);
    }

    let mut peaks = Vec::new();
    let mut sends = Vec::new();
    let mut registers = Vec::new();
    let before = rss_kib();
    for flood in 0..2 {
        let ((peers, sent), peak) = peak_during(async {
            let (sent, registered) = tokio::join!(
                send_flood(senders, flood),
                register_flood(server_addr, flood)
            );
            registers.push(registered);
            sent
        })
        .await;
        senders = peers;
        sends.push(sent);
        peaks.push(peak);
    }
    println!(
        "floods: resident set before {before} KiB, peak in the first flood {} KiB, in the \
         second {} KiB; sends {sends:?}; registrations {registers:?}",
        peaks[0], peaks[1]
    );

    for tally in &sends {
        assert!(
            tally.busy > 0,
            "pipelining senders meet the budget: {tally:?}"
        );
        assert!(tally.sent > 0, "and get their share stored: {tally:?}");
    }
    let registered: u64 = registers.iter().map(|t| t.registered).sum();
    // Some registrations meet the storage budget the send flood fills (`Busy`), so an
    // address may not use its whole burst; it never gets more.
    assert!(
        (1..=u64::from(REGISTER_ADDRESSES) * u64::from(REGISTER_BURST)).contains(&registered),
        "each address registers at most its burst: {registers:?}"
    );
    assert!(
        registers.iter().map(|t| t.rate_limited).sum::<u64>() > 0,
        "the rest are refused as rate limited: {registers:?}"
    );
    assert!(
        peaks[1] <= peaks[0] + FLAT_KIB,
        "the second flood grew the resident set by {} KiB over the first's peak",
        peaks[1].saturating_sub(peaks[0])
    );
    // The server is still itself: a sender's message gets through once the flood is over.
    let mut sender = senders.pop().unwrap();
    sender
        .send(&ClientMsg::Send {
            id: u64::MAX,
            to: user("sink"),
            body: "after".into(),
            attachment: None,
        })
        .await;
    sender
        .recv_until("sent", |m| {
            matches!(m, ServerMsg::Sent { id: u64::MAX, .. })
        })
        .await;
    stop(server).await;
}
