//! WebSocket users on the same core as TCP users (PROTOCOL.md §1.3): they chat with each
//! other and watch each other's presence; the server's Pings keep a quiet client alive and
//! find a silent one dead at the timeout; hostile input is refused as documented.

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{ClientMsg, Presence, PresenceEntry, ServerMsg};
use breeze_server::Settings;
use breeze_testsupport::{InProcess, Peer, WsPeer, client_config, drive, user};
use breeze_transport_tokio::ClientCommand;
use breeze_transport_ws::{ReadAhead, WsConnector};
use std::time::Duration;

/// The TCP peers here (`Peer`) never ping, so the timeout must outlast a whole test on a
/// loaded machine: at 600 ms, CI once closed `tia` while a debug build was still logging
/// `wanda` in.
fn timings(s: &mut Settings) {
    s.server.heartbeat_interval = Duration::from_millis(200);
    s.server.heartbeat_timeout = Duration::from_secs(5);
}

fn presence(name: &str, presence: Presence) -> impl Fn(&ServerMsg) -> bool {
    let entry = PresenceEntry {
        user: user(name),
        presence,
    };
    move |m| matches!(m, ServerMsg::PresenceDiff { entries } if entries.contains(&entry))
}

fn send(to: &str, id: u64, body: &str) -> ClientMsg {
    ClientMsg::Send {
        id,
        to: user(to),
        body: body.into(),
        attachment: None,
    }
}

async fn hears(
    peer: &mut Peer<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>,
    body: &str,
) {
    let got = peer
        .recv_until(
            body,
            |m| matches!(m, ServerMsg::Deliver(d) if d.body == body),
        )
        .await;
    let ServerMsg::Deliver(d) = got else {
        unreachable!()
    };
    // Acked, as a client does once it has shown it.
    peer.send(&ClientMsg::Ack { seqs: vec![d.seq] }).await;
}

#[tokio::test]
async fn a_tcp_user_and_a_websocket_user_chat_and_watch_each_other() {
    let server = InProcess::start(timings).await;
    let mut tia = Peer::user(server.addr(), "tia").await;
    let mut wes = WsPeer::ws_user(server.http_addr(), "wes").await;
    tia.recv_until("wes online", presence("wes", Presence::Online))
        .await;

    wes.send(&send("tia", 1, "hello from the browser side"))
        .await;
    hears(&mut tia, "hello from the browser side").await;
    tia.send(&send("wes", 1, "hello from the terminal")).await;
    hears(&mut wes, "hello from the terminal").await;
    assert_eq!(server.stats().await.sessions, 2);

    // One id space and one limit for both: the server counts them together.
    assert_eq!(server.stats().await.connections, 2);
    drop(wes);
    tia.recv_until("wes offline", presence("wes", Presence::Offline))
        .await;
    server.stop().await;
}

/// The real client (the client core under `run_client`) runs over WebSocket unchanged.
#[tokio::test]
async fn the_real_client_runs_over_websocket() {
    let server = InProcess::start(timings).await;
    let mut tia = Peer::user(server.addr(), "tia").await;
    let mut reg = Peer::ws(server.http_addr()).await;
    reg.say_hello().await;
    reg.register("wanda").await;
    drop(reg);

    let cfg = client_config("wanda", breeze_testsupport::PASSWORD, Mode::Login);
    let (wanda, mut events) = drive(cfg, WsConnector::default(), server.http_addr());
    events.logged_in().await;
    tia.recv_until("wanda online", presence("wanda", Presence::Online))
        .await;
    tia.send(&send("wanda", 7, "over the web")).await;
    assert_eq!(events.message().await.body, "over the web");
    wanda
        .command(ClientCommand::SendMessage {
            to: user("tia"),
            body: "back over tcp".into(),
            attachment: None,
            id: None,
        })
        .await;
    hears(&mut tia, "back over tcp").await;
    events
        .expect("sent", |e| matches!(e, ClientEvent::MessageSent { .. }))
        .await;
    wanda.quit().await;
    tia.recv_until("wanda offline", presence("wanda", Presence::Offline))
        .await;
    server.stop().await;
}

// ---- heartbeats: the server asks ----

/// Longer heartbeat terms for the tests that wait through several of them: room for a
/// loaded machine between a Ping and its Pong.
fn slow_timings(s: &mut Settings) {
    s.server.heartbeat_interval = Duration::from_millis(200);
    s.server.heartbeat_timeout = Duration::from_secs(1);
}

/// Reads (answering the server's Pings as it goes) for `d`; fails if the server closes or
/// says what `forbidden` matches.
async fn only_listen(peer: &mut WsPeer, d: Duration, forbidden: impl Fn(&ServerMsg) -> bool) {
    let _ = tokio::time::timeout(d, async {
        loop {
            match peer.recv().await {
                None => panic!("the server closed a connection that answered its pings"),
                Some(msg) if forbidden(&msg) => panic!("unexpected {msg:?}"),
                Some(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_websocket_client_that_only_answers_pings_stays_online() {
    let server = InProcess::start(slow_timings).await;
    let mut watcher = WsPeer::ws_user(server.http_addr(), "watcher").await;
    let mut quiet = WsPeer::ws_user(server.http_addr(), "quiet").await;
    watcher
        .recv_until("quiet online", presence("quiet", Presence::Online))
        .await;
    // Three heartbeat timeouts (fifteen intervals) without a frame from either: only the
    // Pongs their WebSocket library sends to the server's Pings. A TCP client this quiet
    // is dead after one timeout.
    let offline = presence("quiet", Presence::Offline);
    tokio::join!(
        only_listen(&mut quiet, Duration::from_secs(3), |_| false),
        only_listen(&mut watcher, Duration::from_secs(3), offline),
    );
    assert_eq!(server.stats().await.sessions, 2);
    quiet.ping(1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_websocket_peer_is_declared_dead_at_the_timeout() {
    let server = InProcess::start(slow_timings).await;
    let mut watcher = WsPeer::ws_user(server.http_addr(), "watcher").await;
    let mut mute = WsPeer::ws_user(server.http_addr(), "mute").await;
    watcher
        .recv_until("mute online", presence("mute", Presence::Online))
        .await;
    // `mute` stops reading, so its Pongs stop; its socket stays open. The watcher reads
    // (and so answers its own Pings) until it is told.
    let silent_since = tokio::time::Instant::now();
    watcher
        .recv_until("mute offline", presence("mute", Presence::Offline))
        .await;
    // Never before its timeout: the last thing it said came at most one interval before
    // `silent_since` (a Pong), and its deadline is that plus the timeout.
    assert!(silent_since.elapsed() >= Duration::from_millis(800));
    assert_eq!(server.stats().await.sessions, 1);
    assert_eq!(
        mute.last_before_close().await,
        Some(ServerMsg::Bye {
            reason: breeze_core::message::CloseReason::HeartbeatTimeout
        })
    );
    server.stop().await;
}

// ---- hostile input over WebSocket: each refused as documented, bystanders unaffected ----

use breeze_core::codec::{decode, encode};
use breeze_core::message::{CloseReason, MAGIC, PROTOCOL_VERSION};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn hostile_timings(s: &mut Settings) {
    s.server.handshake_timeout = Duration::from_millis(500);
}

/// A TCP user and a WebSocket user who chat; every hostile test checks they still can.
struct Bystanders {
    tia: Peer,
    bob: WsPeer,
    round: u64,
}

impl Bystanders {
    async fn new(server: &InProcess) -> Bystanders {
        let tia = Peer::user(server.addr(), "tia").await;
        let bob = WsPeer::ws_user(server.http_addr(), "bob").await;
        Bystanders { tia, bob, round: 0 }
    }

    async fn still_chat(&mut self) {
        self.round += 1;
        let body = format!("still here {}", self.round);
        self.tia.send(&send("bob", self.round, &body)).await;
        hears(&mut self.bob, &body).await;
        self.bob.send(&send("tia", self.round, &body)).await;
        hears(&mut self.tia, &body).await;
    }
}

/// A raw WebSocket to `/ws` (no Origin), after the handshake: `Welcome` read.
async fn raw_ws(server: &InProcess) -> WebSocketStream<ReadAhead<TcpStream>> {
    let mut ws = WsConnector::default()
        .open(server.http_addr())
        .await
        .unwrap()
        .into_inner();
    let hello = ClientMsg::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "hostile".into(),
    };
    ws.send(Message::Binary(encode(&hello))).await.unwrap();
    let welcome = next_breeze(&mut ws).await;
    assert!(
        matches!(welcome, Some(ServerMsg::Welcome { .. })),
        "{welcome:?}"
    );
    ws
}

async fn next_breeze(ws: &mut WebSocketStream<ReadAhead<TcpStream>>) -> Option<ServerMsg> {
    ending_or_next(ws, true).await.0.pop()
}

/// Reads to the end of the connection (or one message if `one`): the Breeze messages and
/// the code of the server's Close frame.
async fn ending_or_next(
    ws: &mut WebSocketStream<ReadAhead<TcpStream>>,
    one: bool,
) -> (Vec<ServerMsg>, Option<CloseCode>) {
    let read = async {
        let (mut msgs, mut code) = (Vec::new(), None);
        while let Some(Ok(msg)) = ws.next().await {
            match msg {
                Message::Binary(p) => {
                    msgs.push(decode::<ServerMsg>(&p).unwrap());
                    if one {
                        break;
                    }
                }
                Message::Close(frame) => code = frame.map(|f| f.code),
                _ => {}
            }
        }
        (msgs, code)
    };
    tokio::time::timeout(breeze_testsupport::WAIT, read)
        .await
        .expect("an answer within the wait bound")
}

async fn ending(
    ws: &mut WebSocketStream<ReadAhead<TcpStream>>,
) -> (Vec<ServerMsg>, Option<CloseCode>) {
    ending_or_next(ws, false).await
}

fn bye(reason: CloseReason) -> ServerMsg {
    ServerMsg::Bye { reason }
}

#[tokio::test]
async fn a_text_message_is_malformed_and_closed_with_1003() {
    let server = InProcess::start(hostile_timings).await;
    let mut others = Bystanders::new(&server).await;
    let mut ws = raw_ws(&server).await;
    ws.send(Message::text("{\"type\":\"hello\"}"))
        .await
        .unwrap();
    let (msgs, code) = ending(&mut ws).await;
    assert_eq!(msgs.last(), Some(&bye(CloseReason::Malformed)));
    assert_eq!(code, Some(CloseCode::Unsupported));
    others.still_chat().await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversize_message_is_refused_from_its_header_and_closed_with_1009() {
    let server = InProcess::start(hostile_timings).await;
    let mut others = Bystanders::new(&server).await;
    let mut ws = raw_ws(&server).await;
    let max = server.settings().server.max_frame as usize;
    ws.send(Message::Binary(vec![0u8; max + 1].into()))
        .await
        .unwrap();
    let (msgs, code) = ending(&mut ws).await;
    assert_eq!(msgs.last(), Some(&bye(CloseReason::FrameTooLarge)));
    assert_eq!(code, Some(CloseCode::Size));
    // A message of exactly the limit is a frame like any other (here: not a ClientMsg).
    let mut ws = raw_ws(&server).await;
    ws.send(Message::Binary(vec![0xffu8; max].into()))
        .await
        .unwrap();
    let (msgs, _) = ending(&mut ws).await;
    assert_eq!(msgs.last(), Some(&bye(CloseReason::Malformed)));
    others.still_chat().await;
    server.stop().await;
}

/// Sends `request` to the HTTP listener and reads the answer to its end (the server
/// closes after a refusal).
async fn http(server: &InProcess, request: &str) -> String {
    breeze_testsupport::http(server.http_addr(), request).await
}

fn upgrade_request(host: &str, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn foreign_origins_and_missing_subprotocols_are_refused_before_the_upgrade() {
    let server = InProcess::start(hostile_timings).await;
    let mut others = Bystanders::new(&server).await;
    let host = server.http_addr().to_string();
    let proto = "Sec-WebSocket-Protocol: breeze.v1\r\n";

    let evil = http(
        &server,
        &upgrade_request(&host, &format!("Origin: http://evil.example\r\n{proto}")),
    )
    .await;
    assert!(evil.starts_with("HTTP/1.1 403 "), "{evil}");
    assert!(
        evil.contains("origin http://evil.example may not open a WebSocket here"),
        "{evil}"
    );

    let bare = http(&server, &upgrade_request(&host, "Connection: close\r\n")).await;
    assert!(bare.starts_with("HTTP/1.1 400 "), "{bare}");
    assert!(bare.contains("subprotocol breeze.v1 required"), "{bare}");

    // Our own origin passes, and the subprotocol is echoed.
    let own = format!("Origin: http://{host}\r\n{proto}");
    let mut tcp = TcpStream::connect(server.http_addr()).await.unwrap();
    tcp.write_all(upgrade_request(&host, &own).as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 512];
    let n = tcp.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Protocol: breeze.v1\r\n"),
        "{head}"
    );
    assert_eq!(
        server.stats().await.connections,
        3,
        "admitted like any connection"
    );
    others.still_chat().await;
    server.stop().await;
}

#[tokio::test]
async fn an_upgrade_that_never_finishes_is_dropped_at_the_handshake_timeout() {
    let server = InProcess::start(hostile_timings).await;
    let mut others = Bystanders::new(&server).await;
    // Slowloris: a request head that never ends. The server answers nothing and closes.
    let mut tcp = TcpStream::connect(server.http_addr()).await.unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(breeze_testsupport::WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("closed within the wait bound");
    assert!(read.is_ok() && answer.is_empty(), "{read:?} {answer:?}");
    others.still_chat().await;
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_upgrades_without_hello_are_closed_at_the_handshake_deadline() {
    let server = InProcess::start(hostile_timings).await;
    let mut others = Bystanders::new(&server).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let ws = WsConnector::default()
            .open(server.http_addr())
            .await
            .unwrap()
            .into_inner();
        idle.push(ws);
    }
    others.still_chat().await;
    for ws in &mut idle {
        let (msgs, code) = ending(ws).await;
        assert_eq!(msgs, [bye(CloseReason::HandshakeTimeout)]);
        assert_eq!(code, Some(CloseCode::Normal));
    }
    server
        .wait_stats("only the bystanders left", |s| s.connections == 2)
        .await;
    others.still_chat().await;
    server.stop().await;
}

#[tokio::test]
async fn pages_and_health_carry_the_security_headers() {
    let server = InProcess::start(hostile_timings).await;
    let health = http(
        &server,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        health.starts_with("HTTP/1.1 200 OK\r\n") && health.ends_with("\r\n\r\nok\n"),
        "{health}"
    );
    for path in ["/", "/healthz", "/no-such-file"] {
        let answer = http(
            &server,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(
            answer.contains(&format!(
                "Content-Security-Policy: {}\r\n",
                breeze_transport_ws::CSP
            )),
            "{path}: {answer}"
        );
        assert!(
            answer.contains("X-Content-Type-Options: nosniff\r\n"),
            "{path}: {answer}"
        );
    }
    // Every embedded file is served whole, with its type.
    for (path, bytes) in breeze_server::web_site().files {
        let answer = http(
            &server,
            &format!("GET /{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{path}");
        let ty = breeze_transport_ws::content_type(path);
        assert!(
            answer.contains(&format!("Content-Type: {ty}\r\n")),
            "{path}"
        );
        assert!(answer.as_bytes().ends_with(bytes), "{path}");
    }
    server.stop().await;
}

// ---- TLS: wss and https with the same --tls-cert/--tls-key ----

#[tokio::test]
async fn wss_and_tls_users_share_the_core_with_the_same_certificate() {
    use breeze_testsupport::Pki;
    use breeze_transport_tokio::Connector;
    use breeze_transport_tokio::tls::TlsConnector;
    let pki = Pki::new();
    let server = InProcess::start(|s| {
        s.tls = Some(breeze_server::TlsFiles {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        });
    })
    .await;
    let tls = || {
        TlsConnector::from_ca_file(&pki.ca)
            .unwrap()
            .with_server_name("localhost")
            .unwrap()
    };
    let mut tia = Peer::over(tls().connect(server.addr()).await.unwrap());
    tia.say_hello().await;
    tia.register("tia").await;
    tia.login("tia").await;

    // A browser page served over https sends an https Origin.
    let http = server.http_addr();
    let mut wss = WsConnector::new(tls()).with_origin(format!("https://{http}"));
    wss.secure = true;
    let mut wes = Peer::over(wss.open(http).await.unwrap());
    wes.say_hello().await;
    wes.register("wes").await;
    wes.login("wes").await;
    tia.recv_until("wes online", presence("wes", Presence::Online))
        .await;
    wes.send(&send("tia", 1, "over wss")).await;
    hears(&mut tia, "over wss").await;
    tia.send(&send("wes", 1, "over tls")).await;
    hears(&mut wes, "over tls").await;

    // The same page's origin in plain http is another origin.
    let mut plain_origin = WsConnector::new(tls()).with_origin(format!("http://{http}"));
    plain_origin.secure = true;
    let refused = plain_origin.open(http).await.unwrap_err().to_string();
    assert!(refused.contains("403"), "{refused}");
    // Plain HTTP to the TLS listener gets no HTTP answer.
    let mut tcp = TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(breeze_testsupport::WAIT, tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    server.stop().await;
}

/// One connection limit for both transports: with two slots taken (one TCP, one WebSocket),
/// a third connection is told `ServerFull` whichever way it comes.
#[tokio::test]
async fn tcp_and_websocket_share_one_connection_limit() {
    let server = InProcess::start(|s| s.host.max_connections = 2).await;
    let _tia = Peer::user(server.addr(), "tia").await;
    let _wes = WsPeer::ws_user(server.http_addr(), "wes").await;
    let full = Some(bye(CloseReason::ServerFull));
    let mut ws = WsPeer::ws(server.http_addr()).await;
    assert_eq!(ws.last_before_close().await, full);
    let mut tcp = Peer::connect(server.addr()).await;
    assert_eq!(tcp.last_before_close().await, full);
    assert_eq!(server.stats().await.connections, 2);
    server.stop().await;
}

/// The operator's endpoints on the HTTP listener: `/metrics` moves with what happens (a
/// login, a message, a commit), `/readyz` says ready while the store commits.
#[tokio::test]
async fn metrics_and_readiness_follow_the_server() {
    let server = InProcess::start(timings).await;
    let get = breeze_testsupport::http_get;
    let before = http(&server, &get("/metrics")).await;
    assert!(before.starts_with("HTTP/1.1 200 OK\r\n"), "{before}");
    assert!(
        before.contains("Content-Type: application/openmetrics-text"),
        "{before}"
    );
    assert!(before.contains("\nbreeze_sessions 0\n"), "{before}");
    assert!(before.trim_end().ends_with("# EOF"), "{before}");

    let mut alice = Peer::user(server.addr(), "alice").await;
    let mut bob = Peer::user(server.addr(), "bob").await;
    alice.send(&send("bob", 1, "counted")).await;
    alice
        .recv_until("Sent", |m| matches!(m, ServerMsg::Sent { .. }))
        .await;
    // Counted when it is sent to bob, which may follow `Sent` (bob's mailbox read may still
    // be running): wait for bob to have it.
    bob.recv_until("Deliver", |m| matches!(m, ServerMsg::Deliver(_)))
        .await;
    let after = http(&server, &get("/metrics")).await;
    for line in [
        "\nbreeze_sessions 2\n",
        "\nbreeze_logins_total{result=\"ok\"} 2\n",
        "\nbreeze_registrations_total 2\n",
        "\nbreeze_messages_stored_total 1\n",
        "\nbreeze_messages_delivered_total 1\n",
    ] {
        assert!(after.contains(line), "no {line:?} in\n{after}");
    }
    let commits = after
        .lines()
        .find_map(|l| l.strip_prefix("breeze_storage_commit_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a commit count");
    assert!(commits >= 1, "{after}");

    let ready = http(&server, &get("/readyz")).await;
    assert!(
        ready.starts_with("HTTP/1.1 200 OK\r\n") && ready.ends_with("ready\n"),
        "{ready}"
    );
    server.stop().await;
}
