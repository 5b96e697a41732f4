//! The host over real loopback TCP, driven by raw sockets speaking the wire protocol.

mod common;

use breeze_core::message::{ClientMsg, CloseReason, Presence, PresenceEntry, ServerMsg};
use breeze_core::testkit::MemStore;
use breeze_testsupport::{Peer, WAIT, user};
use common::{TestServer, fast_config, host_config};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn handshake_gets_welcome_with_the_configured_limits() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut peer = Peer::connect(server.addr).await;
    let ServerMsg::Welcome {
        heartbeat_interval_ms,
        heartbeat_timeout_ms,
        max_frame,
        ..
    } = peer.say_hello().await
    else {
        unreachable!()
    };
    assert_eq!((heartbeat_interval_ms, heartbeat_timeout_ms), (100, 400));
    assert_eq!(max_frame, fast_config().max_frame);
    server.stop().await;
}

#[tokio::test]
async fn register_login_and_presence() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut alice = Peer::hello(server.addr).await;
    alice.register("alice").await;
    let got = alice.login("alice").await;
    assert_eq!(got, ServerMsg::PresenceSnapshot { entries: vec![] });

    let mut bob = Peer::hello(server.addr).await;
    bob.register("bob").await;
    let got = bob.login("bob").await;
    assert_eq!(
        got,
        ServerMsg::PresenceSnapshot {
            entries: vec![PresenceEntry {
                user: user("alice"),
                presence: Presence::Online
            }]
        }
    );
    // Bob's registration is announced first (as offline), then his login.
    alice
        .recv_until("bob online", |m| {
            *m == ServerMsg::PresenceDiff {
                entries: vec![PresenceEntry {
                    user: user("bob"),
                    presence: Presence::Online,
                }],
            }
        })
        .await;

    // A message goes through storage and back out to the recipient.
    bob.send(&ClientMsg::Send {
        id: 1,
        to: user("alice"),
        body: "hi".into(),
        attachment: None,
    })
    .await;
    bob.recv_until("sent", |m| matches!(m, ServerMsg::Sent { id: 1, .. }))
        .await;
    let ServerMsg::Deliver(d) = alice
        .recv_until("delivery", |m| matches!(m, ServerMsg::Deliver(_)))
        .await
    else {
        unreachable!()
    };
    assert_eq!((d.from, d.body.as_str()), (user("bob"), "hi"));

    let stats = server.handle.stats().await.unwrap();
    assert_eq!(
        (stats.connections, stats.sessions, stats.online_users),
        (2, 2, 2)
    );
    let who = server.handle.who().await.unwrap();
    let names: Vec<_> = who.iter().map(|w| w.user.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);

    // Logging out is announced to the other user, and the server says why it closes.
    bob.send(&ClientMsg::Logout).await;
    assert_eq!(
        bob.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::LoggedOut
        })
    );
    alice
        .recv_until("bob offline", |m| {
            matches!(m, ServerMsg::PresenceDiff { entries } if entries[0].presence == Presence::Offline)
        })
        .await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_frame_is_refused_and_others_keep_working() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut other = Peer::hello(server.addr).await;

    let mut big = Peer::hello(server.addr).await;
    let max = fast_config().max_frame;
    // Only the length is sent: the server must refuse on it, not wait for the bytes.
    big.send_raw(&(max + 1).to_be_bytes()).await;
    assert_eq!(
        big.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::FrameTooLarge
        })
    );
    other.ping(7).await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_frame_with_its_bytes_still_gets_the_bye() {
    // The peer has sent a lot that the server never reads; closing must not reset the
    // connection (which would destroy the Bye) before the peer has read why.
    let cfg = breeze_core::ServerConfig {
        max_frame: 100_000,
        ..fast_config()
    };
    let server = TestServer::start(cfg, host_config()).await;
    let peer = Peer::hello(server.addr).await;
    let (rd, mut wr) = peer.stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut frame = 200_000u32.to_be_bytes().to_vec();
        frame.resize(4 + 200_000, 0);
        // May fail once the server has closed; the Bye is what counts.
        let _ = wr.write_all(&frame).await;
        wr
    });
    let wr = writer.await.unwrap();
    let mut peer = Peer::over(rd.reunite(wr).unwrap());
    assert_eq!(
        peer.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::FrameTooLarge
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn garbage_is_malformed() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut peer = Peer::hello(server.addr).await;
    peer.send_raw(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await;
    assert_eq!(
        peer.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::Malformed
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn silence_before_hello_is_a_handshake_timeout() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let started = Instant::now();
    let mut peer = Peer::connect(server.addr).await;
    assert_eq!(
        peer.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::HandshakeTimeout
        })
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_told_server_full() {
    let host = breeze_transport_tokio::HostConfig {
        max_connections: 2,
        ..host_config()
    };
    let server = TestServer::start(fast_config(), host).await;
    let mut a = Peer::hello(server.addr).await;
    let b = Peer::hello(server.addr).await;
    let mut c = Peer::connect(server.addr).await;
    assert_eq!(
        c.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::ServerFull
        })
    );
    // The core never heard of the refused one.
    assert_eq!(server.handle.stats().await.unwrap().connections, 2);
    a.ping(1).await;

    // A freed slot is usable again.
    drop(b);
    server.wait_stats("b gone", |s| s.connections == 1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        // The slot is released when b's connection task has fully closed, a little after the
        // core forgot it.
        let mut d = Peer::connect(server.addr).await;
        d.send(&ClientMsg::Hello {
            magic: breeze_core::message::MAGIC,
            version: breeze_core::message::PROTOCOL_VERSION,
            client: "t".into(),
        })
        .await;
        match d.recv().await {
            Some(ServerMsg::Welcome { .. }) => break,
            other => {
                assert_eq!(
                    other,
                    Some(ServerMsg::Bye {
                        reason: CloseReason::ServerFull
                    })
                );
                assert!(Instant::now() < deadline, "the slot never came back");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    server.stop().await;
}

/// Two listeners feed one core: their users see each other, and one connection limit and
/// one id space cover both.
#[tokio::test]
async fn two_listeners_share_one_core_and_one_limit() {
    let host = breeze_transport_tokio::HostConfig {
        max_connections: 2,
        ..host_config()
    };
    let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = second.local_addr().unwrap();
    let store = std::sync::Arc::new(std::sync::Mutex::new(MemStore::new()));
    let server = TestServer::start_with(first, store, fast_config(), host, |h| {
        assert_eq!(h.listen(second).unwrap(), second_addr);
    });
    let mut alice = Peer::user(server.addr, "alice").await;
    let mut bob = Peer::hello(second_addr).await;
    bob.register("bob").await;
    let got = bob.login("bob").await;
    assert_eq!(
        got,
        ServerMsg::PresenceSnapshot {
            entries: vec![PresenceEntry {
                user: user("alice"),
                presence: Presence::Online
            }]
        }
    );
    alice
        .recv_until("bob online", |m| {
            matches!(m, ServerMsg::PresenceDiff { entries } if entries.iter().any(|e| e.user == user("bob") && e.presence == Presence::Online))
        })
        .await;
    let who = server.handle.who().await.unwrap();
    let conns: Vec<u64> = who
        .iter()
        .flat_map(|u| u.sessions.iter().map(|s| s.conn))
        .collect();
    assert_eq!(conns.len(), 2);
    assert_ne!(conns[0], conns[1], "one id space across listeners");
    // The limit counts both listeners' connections.
    for addr in [server.addr, second_addr] {
        let mut extra = Peer::connect(addr).await;
        assert_eq!(
            extra.last_before_close().await,
            Some(ServerMsg::Bye {
                reason: CloseReason::ServerFull
            })
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_silent_peer_is_announced_offline() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut watcher = Peer::user(server.addr, "watcher").await;
    let silent = Peer::user(server.addr, "silent").await;
    watcher
        .recv_until("silent online", |m| {
            matches!(m, ServerMsg::PresenceDiff { entries } if entries[0].presence == Presence::Online)
        })
        .await;
    let went_quiet = Instant::now();
    // The watcher keeps its own connection alive while it waits.
    let offline = tokio::time::timeout(WAIT, async {
        let mut nonce = 0;
        loop {
            nonce += 1;
            watcher.send(&ClientMsg::Ping { nonce }).await;
            let msg = watcher.recv().await.expect("watcher closed");
            let offline = ServerMsg::PresenceDiff {
                entries: vec![PresenceEntry {
                    user: user("silent"),
                    presence: Presence::Offline,
                }],
            };
            if msg == offline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(offline.is_ok(), "never announced offline");
    let took = went_quiet.elapsed();
    // The deadline counts from the silent peer's last frame, a little before `went_quiet`.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_millis(400) + Duration::from_secs(2),
        "{took:?}"
    );
    drop(silent);
    server.stop().await;
}

/// Pings the connection's task answers in place (not the core) keep a session alive: the
/// core learns of them only when its deadline comes due, so a client that pings every
/// interval outlives several timeouts, and once it goes quiet it is closed one timeout after
/// its last ping. A `Ping` behind a request is still answered behind the request's reply.
#[tokio::test]
async fn pings_answered_in_place_keep_a_session_alive_until_exactly_the_timeout() {
    let timeout = Duration::from_millis(1500);
    let cfg = breeze_core::ServerConfig {
        heartbeat_interval: Duration::from_millis(1000),
        heartbeat_timeout: timeout,
        ..fast_config()
    };
    let server = TestServer::start(cfg, host_config()).await;
    let mut peer = Peer::user(server.addr, "pinger").await;
    let logged_in = Instant::now();
    let mut last = logged_in;
    // Spaced beyond `IN_PLACE_GAP` (0.5 s), so each may be answered in place.
    for nonce in 1..=4 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        peer.ping(nonce).await;
        last = Instant::now();
    }
    assert!(last - logged_in > timeout * 2, "outlived two timeouts");
    let (_, counters) = server.handle.metrics().await.unwrap();
    assert!(
        counters.pings_in_place >= 3,
        "{} of 4 pings answered in place",
        counters.pings_in_place
    );
    assert_eq!(counters.sent("Pong"), 4, "every Pong counted once");

    // Two writes, so the Ping may be read before the core has handled the request; after a
    // gap, so it may be answered in place.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    peer.send(&ClientMsg::SetStatus {
        status: breeze_core::message::Status::Away,
    })
    .await;
    peer.send(&ClientMsg::Ping { nonce: 5 }).await;
    let mut got = Vec::new();
    while got.last() != Some(&ServerMsg::Pong { nonce: 5 }) {
        got.push(peer.recv().await.expect("open"));
    }
    assert!(
        got.iter().any(|m| matches!(m, ServerMsg::OwnStatus { .. })),
        "the request's reply came before the Pong: {got:?}"
    );
    let last = Instant::now();

    let bye = peer.last_before_close().await;
    let took = last.elapsed();
    assert_eq!(
        bye,
        Some(ServerMsg::Bye {
            reason: CloseReason::HeartbeatTimeout
        })
    );
    // The deadline counts from when the server read the last Ping, a little before `last`.
    assert!(took >= timeout - Duration::from_millis(100), "{took:?}");
    assert!(took < timeout + Duration::from_secs(1), "{took:?}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_to_everyone() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut alice = Peer::user(server.addr, "alice").await;
    let mut anon = Peer::hello(server.addr).await;
    let addr = server.addr;
    server.stop().await;
    let bye = Some(ServerMsg::Bye {
        reason: CloseReason::ServerShutdown,
    });
    assert_eq!(alice.last_before_close().await, bye);
    assert_eq!(anon.last_before_close().await, bye);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn ipv6_loopback_works() {
    let Ok(probe) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    drop(probe);
    let server = TestServer::start_on(
        "[::1]:0".parse().unwrap(),
        Default::default(),
        fast_config(),
        host_config(),
    )
    .await;
    assert!(server.addr.is_ipv6());
    Peer::hello(server.addr).await;
    server.stop().await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_disconnected() {
    let cfg = breeze_core::ServerConfig {
        // Long enough that the reader is not dropped for silence first.
        heartbeat_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(10),
        ..fast_config()
    };
    let host = breeze_transport_tokio::HostConfig {
        outbound_queue: breeze_transport_tokio::QueueLimits {
            frames: 1024,
            bytes: 256 * 1024,
        },
        ..host_config()
    };
    let server = TestServer::start(cfg, host).await;
    // A small receive buffer, so the kernel does not absorb megabytes before the queue does.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut stuck = Peer::over(stream);
    stuck.say_hello().await;
    stuck.register("stuck").await;
    stuck.login("stuck").await;
    // From here on `stuck` reads nothing.

    let sender = Peer::user(server.addr, "sender").await;
    let attachment = breeze_core::message::Attachment {
        mime: "application/octet-stream".into(),
        name: "blob".into(),
        data: vec![7; 200 * 1024],
    };
    let (mut rd, mut wr) = sender.stream.into_split();
    // The sender reads its own answers so that it is not a slow reader itself.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        use tokio::io::AsyncReadExt;
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        rd
    });
    let sending = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for id in 0..60u64 {
            let msg = ClientMsg::Send {
                id,
                to: user("stuck"),
                body: "big".into(),
                attachment: Some(attachment.clone()),
            };
            if wr
                .write_all(&breeze_core::codec::encode_frame(&msg))
                .await
                .is_err()
            {
                break;
            }
        }
        wr
    });
    server
        .wait_stats("the slow reader dropped", |s| {
            s.sessions == 1 && s.connections == 1
        })
        .await;
    let wr = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
    drain.abort();
    drop(wr);
    // What reached the stuck peer ends with a close (a Bye if there was room for one).
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(msg) = stuck.recv().await {
            if let ServerMsg::Bye { reason } = msg {
                assert_eq!(reason, CloseReason::SlowReader);
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    let mut other = Peer::user(server.addr, "other").await;
    other.ping(1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_half_closed_peer_still_gets_the_answer_to_its_last_frame() {
    let server = TestServer::start(fast_config(), host_config()).await;
    let mut alice = Peer::user(server.addr, "alice").await;
    alice.send(&ClientMsg::Logout).await;
    use tokio::io::AsyncWriteExt;
    alice.stream.shutdown().await.unwrap();
    assert_eq!(
        alice.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: CloseReason::LoggedOut
        })
    );
    server
        .wait_stats("alice gone", |s| s.connections == 0)
        .await;
    server.stop().await;
}
