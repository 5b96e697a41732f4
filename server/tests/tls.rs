//! The server speaking TLS (`--tls-cert`/`--tls-key`), with certificates made by rcgen for
//! each test: clients that verify it chat through `run_client`, clients that do not trust it
//! are refused, plain-TCP peers are cut, and the binary reports unusable files in one line.

use breeze_core::client::{ClientEvent, Mode};
use breeze_core::codec::encode_frame;
use breeze_core::message::{ClientMsg, MAGIC, PROTOCOL_VERSION};
use breeze_server::TlsFiles;
use breeze_testsupport::process::{server_command, watch_log};
use breeze_testsupport::{
    Driven, Events, InProcess, PASSWORD, Peer, Pki, WAIT, client_config, drive, user,
};
use breeze_transport_tokio::tls::TlsConnector;
use breeze_transport_tokio::{ClientCommand, Connector};
use std::net::SocketAddr;
use std::process::Command;
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

/// A user chatting through `run_client` over a TLS connector.
struct Chatter {
    client: Driven,
    events: Events,
}

impl Chatter {
    /// Registers `name` and logs in.
    async fn start<C: Connector>(addr: SocketAddr, connector: C, name: &str) -> Chatter {
        let (client, mut events) = drive(
            client_config(name, PASSWORD, Mode::Register),
            connector,
            addr,
        );
        events.logged_in().await;
        Chatter { client, events }
    }

    async fn say(&mut self, to: &str, body: &str) {
        self.client
            .command(ClientCommand::SendMessage {
                to: user(to),
                body: body.into(),
                attachment: None,
                id: None,
            })
            .await;
        self.events
            .expect("sent", |e| matches!(e, ClientEvent::MessageSent { .. }))
            .await;
    }

    async fn hears(&mut self, body: &str) {
        assert_eq!(self.events.message().await.body, body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_verify_the_server_chat_over_tls_and_others_are_refused() {
    let pki = Pki::new();
    let files = TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    };
    let server = InProcess::start(|s| s.tls = Some(files)).await;
    let addr = server.addr();

    // One client trusts the CA (and checks the address it dialled is in the certificate);
    // the other pins the server's certificate file.
    let mut alice =
        Chatter::start(addr, TlsConnector::from_ca_file(&pki.ca).unwrap(), "alice").await;
    let mut bob = Chatter::start(addr, TlsConnector::pinned(&pki.cert).unwrap(), "bob").await;
    alice.say("bob", "over TLS").await;
    bob.hears("over TLS").await;

    // A client pinning another certificate does not connect.
    let mut wrong = TlsConnector::pinned(&pki.stranger).unwrap();
    let err = wrong.connect(addr).await.unwrap_err();
    println!("a client pinning another certificate: {err}");
    assert_eq!(
        err.to_string(),
        "the server's certificate is not the pinned one"
    );

    // A plain-TCP peer speaking Breeze to the TLS port is cut, without a Breeze answer.
    let mut plain = Peer::connect(addr).await;
    let hello = encode_frame(&ClientMsg::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "plain".into(),
    });
    plain.send_raw(&hello).await;
    let mut answer = Vec::new();
    let read = timeout(WAIT, plain.stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the plain peer was not disconnected");
    println!(
        "a plain-TCP peer got {} bytes, then the close",
        answer.len()
    );
    assert!(
        answer.len() < 64 && answer.first() != Some(&0),
        "a TLS alert at most: {answer:?}"
    );

    // The TLS clients never noticed.
    bob.say("alice", "still here").await;
    alice.hears("still here").await;
    assert_eq!(server.stats().await.sessions, 2);
    alice.client.quit().await;
    bob.client.quit().await;
    server.stop().await;
}

/// The server binary on a database in `dir`, on a free loopback port.
fn server(dir: &std::path::Path) -> Command {
    server_command(
        BIN.as_ref(),
        &dir.join("breeze.db"),
        ([127, 0, 0, 1], 0).into(),
    )
}

/// Runs the binary to its exit; its status and its last stderr line.
fn fails_with(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_binary_serves_tls_from_env_and_names_unusable_files() {
    let pki = Pki::new();
    let dir = pki.dir();
    let missing = dir.join("missing.pem");

    let line = fails_with(
        server(dir)
            .arg("--tls-cert")
            .arg(&missing)
            .arg("--tls-key")
            .arg(&pki.key),
    );
    assert!(
        line.starts_with(&format!(
            "breeze-server: cannot read TLS certificate file {}: ",
            missing.display()
        )),
        "{line}"
    );
    // The key file given as the certificate and the other way round.
    let line = fails_with(
        server(dir)
            .arg("--tls-cert")
            .arg(&pki.key)
            .arg("--tls-key")
            .arg(&pki.cert),
    );
    assert_eq!(
        line,
        format!(
            "breeze-server: TLS certificate file {} holds no PEM CERTIFICATE block",
            pki.key.display()
        )
    );
    // A key that is not the certificate's.
    let other_key = pki.unrelated_key("other-key.pem");
    let line = fails_with(
        server(dir)
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&other_key),
    );
    assert!(
        line.starts_with(&format!(
            "breeze-server: cannot use TLS certificate {} with key {}: ",
            pki.cert.display(),
            other_key.display()
        )),
        "{line}"
    );
    // Half a pair is refused by the parser.
    let out = server(dir)
        .arg("--tls-cert")
        .arg(&pki.cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));

    // From the environment, it serves TLS.
    let mut child = server(dir)
        .env("BREEZE_TLS_CERT", &pki.cert)
        .env("BREEZE_TLS_KEY", &pki.key)
        .spawn()
        .unwrap();
    let listening = watch_log(&mut child).expect("listening");
    assert!(listening.line.contains("tls=true"), "{}", listening.line);
    let stream = TlsConnector::pinned(&pki.cert)
        .unwrap()
        .connect(listening.addr)
        .await
        .unwrap();
    Peer::over(stream).say_hello().await;
    let _ = child.kill();
    let _ = child.wait();
}
