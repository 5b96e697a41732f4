//! The host behind a `TlsListener`, reached with `TlsConnector`, over loopback, with
//! certificates made for the test by rcgen.

mod common;

use breeze_core::ServerConfig;
use breeze_core::codec::encode_frame;
use breeze_core::message::{ClientMsg, ServerMsg};
use breeze_core::testkit::MemStore;
use breeze_testsupport::{Peer, Pki, WAIT};
use breeze_transport_tokio::Connector;
use breeze_transport_tokio::tls::{
    TlsConnector, TlsError, TlsListener, TlsListenerConfig, server_config,
};
use common::{TestServer, fast_config, host_config};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

async fn tls_server(pki: &Pki, limits: TlsListenerConfig) -> TestServer {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener =
        TlsListener::new(tcp, server_config(&pki.cert, &pki.key).unwrap(), limits).unwrap();
    TestServer::start_listener(
        listener,
        Arc::new(Mutex::new(MemStore::new())),
        // Long enough a heartbeat that silent test clients stay connected.
        ServerConfig {
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(20),
            ..fast_config()
        },
        host_config(),
    )
}

#[tokio::test]
async fn a_client_verifying_by_ca_or_pin_gets_in_and_others_do_not() {
    let pki = Pki::new();
    let server = tls_server(&pki, TlsListenerConfig::default()).await;

    // By the CA, checking the IP address connected to, then a DNS name.
    let mut by_ca = TlsConnector::from_ca_file(&pki.ca).unwrap();
    let mut by_ca = Peer::over(by_ca.connect(server.addr).await.unwrap());
    by_ca.say_hello().await;
    let mut by_name = TlsConnector::from_ca_file(&pki.ca)
        .unwrap()
        .with_server_name("localhost")
        .unwrap();
    assert!(by_name.connect(server.addr).await.is_ok());

    // By the pinned certificate: the server's own PEM file.
    let mut pinned = TlsConnector::pinned(&pki.cert).unwrap();
    let mut pinned = Peer::over(pinned.connect(server.addr).await.unwrap());
    pinned.say_hello().await;

    // A name the certificate does not carry, a CA that did not sign it, a different pin.
    let mut wrong_name = TlsConnector::from_ca_file(&pki.ca)
        .unwrap()
        .with_server_name("breeze.example")
        .unwrap();
    let err = wrong_name.connect(server.addr).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let mut wrong_ca = TlsConnector::from_ca_file(&pki.stranger).unwrap();
    assert!(wrong_ca.connect(server.addr).await.is_err());
    let mut wrong_pin = TlsConnector::pinned(&pki.stranger).unwrap();
    let err = wrong_pin.connect(server.addr).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the server's certificate is not the pinned one"
    );

    // None of the refused ones reached the core: the two verified streams still open are
    // all it has (the one checked by name was dropped).
    server
        .wait_stats("only the verified connections", |s| s.connections == 2)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn stalled_and_plain_handshakes_do_not_hold_up_the_accept_loop() {
    let pki = Pki::new();
    let limits = TlsListenerConfig {
        handshake_timeout: Duration::from_millis(400),
        ..TlsListenerConfig::default()
    };
    let server = tls_server(&pki, limits).await;

    // Silent connections: a TLS handshake that never starts.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // A peer speaking plain Breeze to the TLS port.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();

    // Meanwhile a TLS client gets in at once.
    let started = Instant::now();
    let mut connector = TlsConnector::pinned(&pki.cert).unwrap();
    let mut tls = Peer::over(connector.connect(server.addr).await.unwrap());
    tls.say_hello().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(300),
        "TLS login took {took:?} behind stalled handshakes"
    );

    // The plain peer is cut without a Breeze answer (it may see a TLS alert first).
    let answer = timeout(WAIT, async {
        let mut buf = Vec::new();
        let _ = plain
            .write_all(&encode_frame(&ClientMsg::Ping { nonce: 1 }))
            .await;
        let _ = plain.read_to_end(&mut buf).await;
        buf
    })
    .await
    .expect("the plain peer is disconnected");
    assert!(answer.len() < 64, "{answer:?}");

    // The silent ones are cut at the handshake deadline.
    for mut s in silent {
        let mut buf = [0u8; 16];
        let n = timeout(WAIT, s.read(&mut buf)).await.expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(350));

    // The TLS client is still served.
    tls.send(&ClientMsg::Ping { nonce: 7 }).await;
    assert_eq!(tls.recv().await, Some(ServerMsg::Pong { nonce: 7 }));
    server
        .wait_stats("one connection left", |s| s.connections == 1)
        .await;
    server.stop().await;
}

#[test]
fn bad_files_are_named_in_the_error() {
    let pki = Pki::new();
    let missing = pki.cert.with_file_name("missing.pem");
    let text = |e: TlsError| e.to_string();

    let err = text(server_config(&missing, &pki.key).unwrap_err());
    assert!(
        err.starts_with(&format!(
            "cannot read TLS certificate file {}: ",
            missing.display()
        )),
        "{err}"
    );
    // Certificate and key swapped.
    let err = text(server_config(&pki.key, &pki.cert).unwrap_err());
    assert_eq!(
        err,
        format!(
            "TLS certificate file {} holds no PEM CERTIFICATE block",
            pki.key.display()
        )
    );
    // A key that is not the certificate's.
    let other_key = pki.unrelated_key("other-key.pem");
    let err = text(server_config(&pki.cert, &other_key).unwrap_err());
    assert!(
        err.starts_with(&format!(
            "cannot use TLS certificate {} with key {}: ",
            pki.cert.display(),
            other_key.display()
        )),
        "{err}"
    );
    // Broken PEM.
    let broken = pki.cert.with_file_name("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n").unwrap();
    let err = text(server_config(&broken, &pki.key).unwrap_err());
    assert!(err.contains("is not valid PEM"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");

    assert!(TlsConnector::from_ca_file(&missing).is_err());
    assert!(TlsConnector::pinned(&pki.key).is_err());
    assert!(matches!(
        TlsConnector::pinned(&pki.cert)
            .unwrap()
            .with_server_name("not a name"),
        Err(TlsError::BadServerName(_))
    ));
}
