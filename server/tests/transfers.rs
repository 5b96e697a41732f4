//! Direct transfers (protocol version 3) end to end: the whole server in-process, real
//! clients (`run_client`) each with a `TransferAgent`, files in temporary folders, loopback
//! only. The direct path in TLS, the relay when the direct path is blocked, an interrupted
//! transfer resumed, a corrupt part caught by the hash, and the refusals; and issue 14's
//! whole story: two colleagues with Chinese names and avatars, in named groups, seeing each
//! other come and go, then sending each other a 50 MiB file directly.

use breeze_core::UserId;
use breeze_core::client::{ClientEvent, Mode};
use breeze_core::message::{ErrorCode, RequestKind, TransferOutcome};
use breeze_core::message::{Presence, ProfileCard};
use breeze_core::profile::avatar_hash;
use breeze_testsupport::{InProcess, PASSWORD, TINY_PNG, client_config, drive, user};
use breeze_transport_tokio::transfer::{TransferAgent, TransferReport, TransferSettings, Via};
use breeze_transport_tokio::{ClientCommand, TcpConnector};
use sha2::{Digest, Sha256};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

/// A 50 MiB transfer in a debug build, hashed twice, must end within this.
const TRANSFER_WAIT: Duration = Duration::from_secs(120);
const MIB: usize = 1024 * 1024;

/// What a test asks of one side's agent.
enum Op {
    Offer(UserId, PathBuf, oneshot::Sender<u64>),
    Accept(UserId, u64),
    Decline(UserId, u64),
    /// Anything else the application asks of its client.
    Command(ClientCommand),
}

/// One user: a real client and its transfer agent, run together in a task that hands every
/// client event to the agent (as an application does), and the agent's reports.
struct Side {
    ops: mpsc::UnboundedSender<Op>,
    reports: mpsc::UnboundedReceiver<TransferReport>,
    /// Events the agent did not take.
    events: mpsc::UnboundedReceiver<ClientEvent>,
    task: tokio::task::JoinHandle<()>,
    downloads: tempfile::TempDir,
}

impl Side {
    async fn start(
        addr: SocketAddr,
        name: &str,
        mode: Mode,
        tweak: impl FnOnce(&mut TransferSettings),
    ) -> Side {
        Side::start_in(addr, name, mode, tempfile::tempdir().unwrap(), tweak).await
    }

    async fn start_in(
        addr: SocketAddr,
        name: &str,
        mode: Mode,
        downloads: tempfile::TempDir,
        tweak: impl FnOnce(&mut TransferSettings),
    ) -> Side {
        let (driven, mut client_events) =
            drive(client_config(name, PASSWORD, mode), TcpConnector, addr);
        let mut settings = TransferSettings::new(downloads.path().to_owned());
        settings.listen = Some(Ipv4Addr::LOCALHOST.into());
        settings.direct_timeout = Duration::from_secs(2);
        tweak(&mut settings);
        let (mut agent, reports) =
            TransferAgent::new(user(name), settings, driven.commands.clone());
        let (ops, mut op_rx) = mpsc::unbounded_channel();
        let (other, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = client_events.0.recv() => {
                        let Some(event) = event else { return };
                        if let Some(rest) = agent.handle(event).await {
                            let _ = other.send(rest);
                        }
                    }
                    op = op_rx.recv() => match op {
                        Some(Op::Offer(to, path, reply)) => {
                            let id = agent.offer(to, &path).await.expect("offer");
                            let _ = reply.send(id);
                        }
                        Some(Op::Accept(from, id)) => assert!(agent.accept(from, id).await),
                        Some(Op::Decline(from, id)) => assert!(agent.decline(from, id).await),
                        Some(Op::Command(c)) => {
                            let _ = driven.commands.send(c).await;
                        }
                        None => return,
                    },
                }
            }
        });
        let mut side = Side {
            ops,
            reports,
            events,
            task,
            downloads,
        };
        side.logged_in().await;
        side
    }

    async fn logged_in(&mut self) {
        timeout(Duration::from_secs(10), async {
            loop {
                match self.events.recv().await {
                    Some(ClientEvent::LoggedIn { .. }) => return,
                    Some(_) => {}
                    None => panic!("the client ended before logging in"),
                }
            }
        })
        .await
        .expect("logged in within 10 s");
    }

    async fn offer(&self, to: &str, path: &Path) -> u64 {
        let (reply, id) = oneshot::channel();
        self.ops
            .send(Op::Offer(user(to), path.to_owned(), reply))
            .unwrap();
        id.await.expect("the offer was made")
    }

    fn accept(&self, from: &str, id: u64) {
        self.ops.send(Op::Accept(user(from), id)).unwrap();
    }

    fn decline(&self, from: &str, id: u64) {
        self.ops.send(Op::Decline(user(from), id)).unwrap();
    }

    fn command(&self, c: ClientCommand) {
        self.ops.send(Op::Command(c)).unwrap();
    }

    /// Skips client events until one matches (bounded).
    async fn event(&mut self, what: &str, f: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
        timeout(Duration::from_secs(10), async {
            loop {
                match self.events.recv().await {
                    Some(e) if f(&e) => return e,
                    Some(_) => {}
                    None => panic!("the client ended while waiting for {what}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("waited 10 s for {what}"))
    }

    /// Skips reports until one matches; every report seen on the way is returned too.
    async fn until(
        &mut self,
        what: &str,
        f: impl Fn(&TransferReport) -> bool,
    ) -> (TransferReport, Vec<TransferReport>) {
        let mut seen = Vec::new();
        let found = timeout(TRANSFER_WAIT, async {
            loop {
                let report = self.reports.recv().await.expect("the agent is running");
                if f(&report) {
                    return report;
                }
                seen.push(report);
            }
        })
        .await;
        match found {
            Ok(report) => (report, seen),
            Err(_) => panic!("waited {TRANSFER_WAIT:?} for {what}; saw {seen:?}"),
        }
    }

    /// Waits for an offer and returns its id and how much of it is already here.
    async fn offered(&mut self) -> (u64, u64) {
        match self
            .until("an offer", |r| matches!(r, TransferReport::Offered { .. }))
            .await
            .0
        {
            TransferReport::Offered { transfer, held, .. } => (transfer, held),
            _ => unreachable!(),
        }
    }

    async fn ended(&mut self) -> (TransferOutcome, Vec<TransferReport>) {
        match self
            .until("the end", |r| matches!(r, TransferReport::Ended { .. }))
            .await
        {
            (TransferReport::Ended { outcome, .. }, seen) => (outcome, seen),
            _ => unreachable!(),
        }
    }

    /// Stops the client and its agent at once (a crash, or a closed laptop).
    fn kill(self) -> tempfile::TempDir {
        self.task.abort();
        self.downloads
    }
}

/// A file of `len` pseudo-random bytes (incompressible, so nothing along the way can make a
/// mistake look right) in `dir`.
fn make_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut data = Vec::with_capacity(len);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn digest(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

/// Runs one whole transfer of `source` from alice to bob (bob accepts); the saved path, the
/// way the bytes went, and how long from the offer to the end.
async fn transfer(
    alice: &mut Side,
    bob: &mut Side,
    source: &Path,
) -> (PathBuf, Vec<Via>, Duration) {
    let started = Instant::now();
    let id = alice.offer("bob", source).await;
    let (offered, held) = bob.offered().await;
    assert_eq!((offered, held), (id, 0));
    bob.accept("alice", id);
    let (outcome, seen) = bob.ended().await;
    let elapsed = started.elapsed();
    assert_eq!(outcome, TransferOutcome::Completed, "{seen:?}");
    let vias = seen
        .iter()
        .filter_map(|r| match r {
            TransferReport::Streaming { via, .. } => Some(*via),
            _ => None,
        })
        .collect();
    let saved = seen
        .iter()
        .find_map(|r| match r {
            TransferReport::Saved { path, .. } => Some(path.clone()),
            _ => None,
        })
        .expect("saved before the end");
    assert_eq!(alice.ended().await.0, TransferOutcome::Completed);
    (saved, vias, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_50_mib_file_goes_directly_in_tls_and_arrives_whole() {
    let server = InProcess::start(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let source = make_file(files.path(), "报告.bin", 50 * MIB);
    let mut alice = Side::start(server.addr(), "alice", Mode::Register, |s| s.tls = true).await;
    let mut bob = Side::start(server.addr(), "bob", Mode::Register, |_| {}).await;

    let (saved, vias, elapsed) = transfer(&mut alice, &mut bob, &source).await;
    assert_eq!(vias, [Via::Direct]);
    assert_eq!(saved.file_name().unwrap(), "报告.bin");
    assert_eq!(digest(&saved), digest(&source));
    eprintln!("50 MiB direct (TLS): {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_direct_path_blocked_50_mib_go_by_the_relay() {
    let server = InProcess::start(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let source = make_file(files.path(), "big.bin", 50 * MIB);
    // Alice announces a port nobody listens on: bob's connect is refused, as a firewall
    // would refuse it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut alice = Side::start(server.addr(), "alice", Mode::Register, |s| {
        s.advertise = Some(vec![closed]);
    })
    .await;
    let mut bob = Side::start(server.addr(), "bob", Mode::Register, |_| {}).await;

    let (saved, vias, elapsed) = transfer(&mut alice, &mut bob, &source).await;
    assert_eq!(vias, [Via::Relay]);
    assert_eq!(digest(&saved), digest(&source));
    eprintln!("50 MiB relayed: {elapsed:?}");
    // The server kept nothing of it.
    assert!(std::fs::read_dir(bob.downloads.path()).unwrap().count() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_transfer_resumes_where_it_stopped() {
    let server = InProcess::start(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let source = make_file(files.path(), "video.bin", 40 * MIB);
    // The relay, so the receiver's progress is paced by its acks and the cut lands early.
    let relay_only = |s: &mut TransferSettings| s.listen = None;
    let alice = Side::start(server.addr(), "alice", Mode::Register, relay_only).await;
    let mut bob = Side::start(server.addr(), "bob", Mode::Register, |_| {}).await;

    let id = alice.offer("bob", &source).await;
    let (offered, _) = bob.offered().await;
    assert_eq!(offered, id);
    bob.accept("alice", id);
    bob.until(
        "some progress",
        |r| matches!(r, TransferReport::Progress { done, .. } if *done >= 4 * MIB as u64),
    )
    .await;
    // Alice's client dies mid-transfer; the server tells bob, who keeps the part.
    drop(alice.kill());
    assert_eq!(bob.ended().await.0, TransferOutcome::PeerLeft);

    let mut alice = Side::start(server.addr(), "alice", Mode::Login, relay_only).await;
    let id = alice.offer("bob", &source).await;
    let (offered, held) = bob.offered().await;
    assert_eq!(offered, id);
    assert!(
        held >= 4 * MIB as u64 && held < 40 * MIB as u64,
        "held {held}"
    );
    bob.accept("alice", id);
    let (accepted, _) = alice
        .until("the accept", |r| {
            matches!(r, TransferReport::Accepted { .. })
        })
        .await;
    assert!(matches!(accepted, TransferReport::Accepted { offset, .. } if offset == held));
    let (outcome, seen) = bob.ended().await;
    assert_eq!(outcome, TransferOutcome::Completed, "{seen:?}");
    let saved = seen
        .iter()
        .find_map(|r| match r {
            TransferReport::Saved { path, .. } => Some(path.clone()),
            _ => None,
        })
        .expect("saved");
    assert_eq!(digest(&saved), digest(&source));
    // Only the rest went the second time.
    assert!(seen.iter().any(
        |r| matches!(r, TransferReport::Streaming { via: Via::Relay, offset, .. } if *offset == held)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_part_is_caught_by_the_hash_and_discarded() {
    let server = InProcess::start(|_| {}).await;
    let files = tempfile::tempdir().unwrap();
    let source = make_file(files.path(), "data.bin", 3 * MIB);
    let mut alice = Side::start(server.addr(), "alice", Mode::Register, |_| {}).await;
    let mut bob = Side::start(server.addr(), "bob", Mode::Register, |_| {}).await;

    // Bob holds a part of this file from an earlier attempt, but one byte of it rotted.
    let mut part = std::fs::read(&source).unwrap();
    part.truncate(MIB);
    part[1000] ^= 0x40;
    let hex: String = digest(&source).iter().map(|b| format!("{b:02x}")).collect();
    let part_path = bob.downloads.path().join(format!("{hex}.breeze-part"));
    std::fs::write(&part_path, &part).unwrap();

    let id = alice.offer("bob", &source).await;
    let (_, held) = bob.offered().await;
    assert_eq!(held, MIB as u64, "the part is offered for a resume");
    bob.accept("alice", id);
    assert_eq!(bob.ended().await.0, TransferOutcome::HashMismatch);
    assert_eq!(alice.ended().await.0, TransferOutcome::HashMismatch);
    assert!(!part_path.exists(), "the corrupt part is discarded");
    assert_eq!(std::fs::read_dir(bob.downloads.path()).unwrap().count(), 0);

    // Offered again, the file comes whole from the start.
    let (saved, _, _) = transfer(&mut alice, &mut bob, &source).await;
    assert_eq!(digest(&saved), digest(&source));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_clear_errors() {
    let server = InProcess::start(|s| s.server.transfers.max_size = 2 * MIB as u64).await;
    let files = tempfile::tempdir().unwrap();
    let small = make_file(files.path(), "small.bin", 1000);
    let large = make_file(files.path(), "large.bin", 2 * MIB + 1);
    let mut alice = Side::start(server.addr(), "alice", Mode::Register, |_| {}).await;
    // Carol exists but is not online: her client is gone, and alice has seen her go (an offer
    // made before the server noticed would reach her dying session and end PeerLeft).
    Side::start(server.addr(), "carol", Mode::Register, |_| {})
        .await
        .kill();
    // Online first (a new account is announced offline as it is registered), then offline.
    for (what, presence) in [
        ("carol online", Presence::Online),
        ("carol offline", Presence::Offline),
    ] {
        alice
            .event(what, |e| {
                matches!(e, ClientEvent::PresenceChanged { user: u, presence: p } if *u == user("carol") && *p == presence)
            })
            .await;
    }

    let refused = |r: &TransferReport| matches!(r, TransferReport::Refused { .. });
    let id = alice.offer("carol", &small).await;
    let (report, _) = alice.until("a refusal", refused).await;
    assert_eq!(
        report,
        TransferReport::Refused {
            transfer: id,
            request: RequestKind::OfferFile,
            code: ErrorCode::ReceiverOffline
        }
    );

    let mut bob = Side::start(server.addr(), "bob", Mode::Register, |_| {}).await;
    let id = alice.offer("bob", &large).await;
    let (report, _) = alice.until("a refusal", refused).await;
    assert_eq!(
        report,
        TransferReport::Refused {
            transfer: id,
            request: RequestKind::OfferFile,
            code: ErrorCode::TooLarge
        }
    );

    let id = alice.offer("bob", &small).await;
    let (offered, _) = bob.offered().await;
    assert_eq!(offered, id);
    bob.decline("alice", id);
    assert_eq!(alice.ended().await.0, TransferOutcome::Declined);
    assert_eq!(bob.ended().await.0, TransferOutcome::Declined);
    assert_eq!(std::fs::read_dir(bob.downloads.path()).unwrap().count(), 0);
}

/// A card `f` accepts for `who`, among the cards of a `Profiles` event.
fn card_in(e: &ClientEvent, who: &str, f: impl Fn(&ProfileCard) -> bool) -> bool {
    matches!(e, ClientEvent::Profiles(cards) if cards.iter().any(|c| c.user == user(who) && f(c)))
}

/// Issue 14's "done when": two users with Chinese display names and avatars, in named
/// groups, see each other greyed and coloured as they come and go, and send each other a
/// 50 MiB file directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colleagues_with_chinese_names_and_avatars_in_groups_see_each_other_and_swap_50_mib() {
    let server = InProcess::start(|_| {}).await;
    let addr = server.addr();
    let mut alice = Side::start(addr, "alice", Mode::Register, |s| s.tls = true).await;
    let mut bob = Side::start(addr, "bob", Mode::Register, |s| s.tls = true).await;
    let hash = avatar_hash(&TINY_PNG);
    for (side, name) in [(&alice, "王小明"), (&bob, "李华")] {
        side.command(ClientCommand::SetProfile {
            display_name: name.into(),
            signature: "在开会".into(),
        });
        side.command(ClientCommand::SetAvatar(Some(TINY_PNG.to_vec())));
    }
    // Each holds the other's name and avatar (and draws it in colour: online).
    for (side, other, name) in [(&mut alice, "bob", "李华"), (&mut bob, "alice", "王小明")] {
        side.event("the other's card", |e| {
            card_in(e, other, |c| {
                c.display_name == name && c.avatar == Some(hash)
            })
        })
        .await;
    }
    // Each files the other in a named group.
    for (side, other, group) in [(&mut alice, "bob", "同事"), (&mut bob, "alice", "家人")] {
        side.command(ClientCommand::AddContact(user(other)));
        side.command(ClientCommand::CreateGroup(group.into()));
        let ClientEvent::Groups(book) = side
            .event(
                "the new group",
                |e| matches!(e, ClientEvent::Groups(b) if b.named(group).is_some()),
            )
            .await
        else {
            unreachable!()
        };
        let id = book.named(group).expect("matched above");
        side.command(ClientCommand::MoveContacts(vec![user(other)], id));
        side.event("the contact filed", |e| {
            matches!(e, ClientEvent::Groups(b) if b.listing(
                &[user(other)].into_iter().collect(),
                &[(user(other), Presence::Online)].into_iter().collect(),
            ).iter().any(|g| g.name == group && g.members == [user(other)] && g.online == 1))
        })
        .await;
    }
    // bob goes: alice greys him out; he comes back: in colour again, his card still known.
    let downloads = bob.kill();
    alice
        .event("bob offline", |e| {
            matches!(e, ClientEvent::PresenceChanged { user: u, presence: Presence::Offline } if *u == user("bob"))
        })
        .await;
    let mut bob = Side::start_in(addr, "bob", Mode::Login, downloads, |s| s.tls = true).await;
    alice
        .event("bob online", |e| {
            matches!(e, ClientEvent::PresenceChanged { user: u, presence: Presence::Online } if *u == user("bob"))
        })
        .await;
    bob.event("alice's card at login", |e| {
        card_in(e, "alice", |c| {
            c.display_name == "王小明" && c.avatar == Some(hash)
        })
    })
    .await;

    // And a 50 MiB file, directly, whole.
    let files = tempfile::tempdir().unwrap();
    let source = make_file(files.path(), "季度报告.bin", 50 * MIB);
    let (saved, vias, elapsed) = transfer(&mut alice, &mut bob, &source).await;
    assert_eq!(vias, [Via::Direct]);
    assert_eq!(digest(&saved), digest(&source));
    eprintln!("colleagues: 50 MiB direct (TLS) in {elapsed:?}");
}
