//! The server speaking TLS (`--tls-cert`/`--tls-key`), with certificates made by rcgen for
//! each test: clients that verify it chat through `run_client`, clients that do not trust it
//! are refused, plain-TCP peers are cut, and the binary reports unusable files in one line.

mod hostile;

use breeze_core::client::{Client, ClientConfig, ClientEvent, Mode};
use breeze_core::codec::{DEFAULT_MAX_FRAME, decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, MAGIC, PROTOCOL_VERSION, ServerMsg};
use breeze_server::TlsFiles;
use breeze_transport_tokio::tls::TlsConnector;
use breeze_transport_tokio::{ClientCommand, ClientSettings, Clock, Connector, run_client};
use bytes::BytesMut;
use hostile::{Peer, WAIT, start, stop, user};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

/// A CA, a server certificate it signed for `localhost` and 127.0.0.1 with its key, and an
/// unrelated self-signed certificate, as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    stranger: PathBuf,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Breeze test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("cert.pem", cert.pem()),
        key: write("key.pem", key.serialize_pem()),
        stranger: write("stranger.pem", stranger.cert.pem()),
        dir,
    }
}

struct Chatter {
    commands: mpsc::Sender<ClientCommand>,
    events: mpsc::Receiver<ClientEvent>,
    task: JoinHandle<Client>,
}

impl Chatter {
    /// Registers `name` and logs in through `run_client` over `connector`.
    async fn start<C: Connector>(addr: SocketAddr, connector: C, name: &str) -> Chatter {
        let clock = Clock::start();
        let cfg = ClientConfig {
            mode: Mode::Register,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..ClientConfig::new(user(name), hostile::PASSWORD)
        };
        let (commands, command_rx) = mpsc::channel(8);
        let (event_tx, events) = mpsc::channel(256);
        let task = tokio::spawn(run_client(
            Client::new(cfg, clock.now()),
            clock,
            connector,
            ClientSettings::new(addr),
            command_rx,
            event_tx,
        ));
        let mut chatter = Chatter {
            commands,
            events,
            task,
        };
        chatter
            .expect(|e| matches!(e, ClientEvent::LoggedIn { .. }))
            .await;
        chatter
    }

    async fn expect(&mut self, f: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
        timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                if f(&ev) {
                    return ev;
                }
            }
            panic!("events closed");
        })
        .await
        .expect("event within the wait bound")
    }

    async fn say(&mut self, to: &str, body: &str) {
        let (id, _) = oneshot::channel();
        self.commands
            .send(ClientCommand::SendMessage {
                to: user(to),
                body: body.into(),
                attachment: None,
                id: Some(id),
            })
            .await
            .unwrap();
        self.expect(|e| matches!(e, ClientEvent::MessageSent { .. }))
            .await;
    }

    async fn hears(&mut self, body: &str) {
        let ev = self.expect(|e| matches!(e, ClientEvent::Message(_))).await;
        let ClientEvent::Message(d) = ev else {
            unreachable!()
        };
        assert_eq!(d.body, body);
    }

    async fn quit(self) {
        self.commands.send(ClientCommand::Quit).await.unwrap();
        timeout(WAIT, self.task).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_verify_the_server_chat_over_tls_and_others_are_refused() {
    let pki = pki();
    let files = TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    };
    let (server, _dir) = start(|s| s.tls = Some(files)).await;
    let addr = server.local_addr();

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
    assert_eq!(server.stats().await.unwrap().sessions, 2);
    alice.quit().await;
    bob.quit().await;
    stop(server).await;
}

/// Says Hello over a stream; the answer.
async fn hello<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> ServerMsg {
    let hello = ClientMsg::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: "tls-binary".into(),
    };
    stream.write_all(&encode_frame(&hello)).await.unwrap();
    let mut buf = BytesMut::new();
    timeout(WAIT, async {
        loop {
            if let Some(payload) = split_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                return decode(&payload).unwrap();
            }
            assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "closed");
        }
    })
    .await
    .unwrap()
}

fn server_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--argon2-memory-kib", "8"])
        .args(["--argon2-iterations", "1"])
        .arg("--db")
        .arg(dir.join("breeze.db"))
        .env("RUST_LOG", "info")
        .env_remove("BREEZE_LISTEN")
        .env_remove("BREEZE_DB")
        .env_remove("BREEZE_TLS_CERT")
        .env_remove("BREEZE_TLS_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
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
    let pki = pki();
    let dir = pki.dir.path();
    let missing = dir.join("missing.pem");

    let line = fails_with(
        server_command(dir)
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
        server_command(dir)
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
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let line = fails_with(
        server_command(dir)
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
    let out = server_command(dir)
        .arg("--tls-cert")
        .arg(&pki.cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));

    // From the environment, it serves TLS.
    let mut child = server_command(dir)
        .env("BREEZE_TLS_CERT", &pki.cert)
        .env("BREEZE_TLS_KEY", &pki.key)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            assert!(line.contains("tls=true"), "{line}");
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let mut stream = TlsConnector::pinned(&pki.cert)
        .unwrap()
        .connect(addr)
        .await
        .unwrap();
    assert!(matches!(
        hello(&mut stream).await,
        ServerMsg::Welcome { .. }
    ));
    let _ = child.kill();
    let _ = child.wait();
}
