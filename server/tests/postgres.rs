//! The real `breeze-server` binary storing in PostgreSQL (`--store postgres://…`): accounts,
//! messages to an offline user and their acknowledgement all survive a SIGKILL and restart,
//! as they do in SQLite. Needs PostgreSQL (`BREEZE_TEST_PG`); skips with a line without it,
//! fails instead under `BREEZE_REQUIRE_SERVICES=1`.

use breeze_core::message::{ClientMsg, Delivery, ErrorCode, RequestKind, ServerMsg};
use breeze_server::{DbLocation, PgUrl};
use breeze_testsupport::nats::Relay;
use breeze_testsupport::pg::TestPg;
use breeze_testsupport::process::{ServerProcess, temp_db};
use breeze_testsupport::{InProcess, PASSWORD, Peer, http_get, user};
use std::net::SocketAddr;
use std::path::PathBuf;

const BIN: &str = env!("CARGO_BIN_EXE_breeze-server");

async fn spawn(db: PathBuf, listen: SocketAddr, url: String) -> ServerProcess {
    tokio::task::spawn_blocking(move || {
        ServerProcess::spawn(BIN.as_ref(), &db, listen, &["--store", &url])
    })
    .await
    .expect("spawn")
}

/// Logs in as `name` and reads the mailbox delivered at login, up to `OfflineDone`.
async fn log_in_and_read_mailbox(addr: SocketAddr, name: &str) -> (Peer, Vec<Delivery>, u32) {
    let mut peer = Peer::hello(addr).await;
    peer.login(name).await;
    let mut got = Vec::new();
    loop {
        match peer.recv().await {
            Some(ServerMsg::Deliver(d)) => got.push(d),
            Some(ServerMsg::OfflineDone { count }) => return (peer, got, count),
            Some(_) => {}
            None => panic!("{name}'s connection closed before OfflineDone"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_offline_messages_in_postgres_survive_a_sigkill_and_restart() {
    let Some(pg) =
        TestPg::create("accounts_and_offline_messages_in_postgres_survive_a_sigkill_and_restart")
    else {
        return;
    };
    // `--db` is given too (the test command always names one): `--store` must win, and no
    // SQLite file may appear.
    let (_dir, db) = temp_db();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = spawn(db.clone(), loopback, pg.url().to_owned()).await;
    let addr = server.addr;

    let mut alice = Peer::hello(addr).await;
    alice.register("alice").await;
    drop(alice);
    let mut bob = Peer::user(addr, "bob").await;
    let mut seqs = Vec::new();
    for (id, body) in [(1, "while you were out"), (2, "and again")] {
        bob.send(&ClientMsg::Send {
            id,
            to: user("alice"),
            body: body.into(),
            attachment: None,
        })
        .await;
        // `Sent` comes only once the message is committed.
        seqs.push(bob.sent(id).await);
    }
    assert!(seqs[0] < seqs[1], "seqs grow in storage order: {seqs:?}");

    // No goodbye, no flush: what was acknowledged must already be in the database.
    drop(bob);
    server.sigkill();
    let server = spawn(db.clone(), addr, pg.url().to_owned()).await;

    let (mut alice, got, count) = log_in_and_read_mailbox(addr, "alice").await;
    assert_eq!(count, 2, "{got:?}");
    let summary: Vec<(u64, u64, &str, &str)> = got
        .iter()
        .map(|d| (d.seq, d.id, d.from.as_str(), d.body.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (seqs[0], 1, "bob", "while you were out"),
            (seqs[1], 2, "bob", "and again")
        ]
    );
    // Ack, then a write as a barrier (plain writes complete in order), then log out.
    alice.send(&ClientMsg::Ack { seqs: seqs.clone() }).await;
    alice
        .send(&ClientMsg::AddContact { user: user("bob") })
        .await;
    alice
        .recv_until("contacts", |m| {
            matches!(m, ServerMsg::ContactsChanged { .. })
        })
        .await;
    drop(alice);

    // The directory came back from PostgreSQL: bob's name is still taken, and a wrong
    // password is still wrong.
    let mut again = Peer::hello(addr).await;
    again
        .send(&ClientMsg::Register {
            user: user("bob"),
            password: PASSWORD.into(),
        })
        .await;
    let answer = again
        .recv_until("register answer", |m| {
            matches!(m, ServerMsg::Registered { .. } | ServerMsg::Error { .. })
        })
        .await;
    assert!(
        matches!(
            answer,
            ServerMsg::Error {
                request: RequestKind::Register,
                code: ErrorCode::UserTaken,
                ..
            }
        ),
        "{answer:?}"
    );
    let wrong = again.try_login("bob", "not the password").await;
    assert!(matches!(wrong, ServerMsg::Error { .. }), "{wrong:?}");
    drop(again);

    // Acknowledged means gone, across another restart too.
    server.sigkill();
    let server = spawn(db.clone(), addr, pg.url().to_owned()).await;
    let (_alice, got, count) = log_in_and_read_mailbox(addr, "alice").await;
    assert_eq!((count, got.len()), (0, 0), "{got:?}");
    assert!(!db.exists(), "--store postgres left a SQLite file behind");
    drop(server);
}

#[test]
fn an_unreachable_postgres_is_reported_naming_the_flag() {
    let (_dir, db) = temp_db();
    let out = breeze_testsupport::process::server_command(
        BIN.as_ref(),
        &db,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    // Port 1 on loopback: nothing listens there.
    .args(["--store", "postgres://breeze:hunter2@127.0.0.1:1/breeze"])
    .output()
    .expect("run breeze-server");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("breeze-server: cannot use the PostgreSQL store")
            && last.contains("(--store)")
            && last.contains("cannot reach PostgreSQL"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2"),
        "the password was printed: {text}"
    );
}

/// A node on PostgreSQL reports its store as one on SQLite does (README, Monitoring): each
/// transaction in `/metrics`' commit histogram, and `/readyz` 503 after a write that could
/// not reach the database, until one commits again. The database is reached through a relay
/// the test cuts: the write in flight falls silent, and fails when the cut heals (the relay
/// closes the connections it silenced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_shows_its_commits_and_a_failed_write_in_metrics_and_readiness() {
    let Some(pg) = TestPg::create("a_postgres_store_shows_its_commits_and_a_failed_write") else {
        return;
    };
    let (head, rest) = pg.url().split_once('@').expect("user@host in the test URL");
    let (host, tail) = rest.split_once('/').expect("a database in the test URL");
    let upstream = tokio::net::lookup_host(host)
        .await
        .expect("the test database's host")
        .next()
        .expect("an address");
    let relay = Relay::start(upstream).await;
    let url = PgUrl::new(format!("{head}@{}/{tail}", relay.addr()));
    let server = InProcess::start(|s| s.db = DbLocation::Postgres(url)).await;
    let http = server.http_addr();
    let get =
        |path: &'static str| async move { breeze_testsupport::http(http, &http_get(path)).await };
    let figure = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    let commits = |metrics: &str| figure(metrics, "breeze_storage_commit_seconds_count ");

    let mut alice = Peer::user(server.addr(), "alice").await;
    let _bob = Peer::user(server.addr(), "bob").await;
    let send = |id| ClientMsg::Send {
        id,
        to: user("bob"),
        body: format!("message {id}"),
        attachment: None,
    };
    alice.send(&send(1)).await;
    alice.sent(1).await;
    let before = get("/metrics").await;
    assert!(commits(&before) >= 1, "{before}");
    assert!(
        before.contains("\nbreeze_storage_commit_failures_total 0\n"),
        "{before}"
    );
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");

    relay.cut();
    alice.send(&send(2)).await;
    // The write is with the store (a heal before it reached the writer would let it through
    // on a new connection); then a while for the writer to send it on the silenced one.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while figure(&get("/metrics").await, "breeze_storage_in_flight ") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "message 2 never reached the store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    relay.heal();
    let refused = alice
        .recv_until("message 2 refused", |m| {
            matches!(m, ServerMsg::Error { .. })
        })
        .await;
    assert!(
        matches!(
            refused,
            ServerMsg::Error {
                code: ErrorCode::StorageFailed,
                ..
            }
        ),
        "{refused:?}"
    );
    let failing = get("/readyz").await;
    assert!(
        failing.starts_with("HTTP/1.1 503") && failing.contains("storage is failing"),
        "{failing}"
    );
    let after = get("/metrics").await;
    assert!(
        after.contains("\nbreeze_storage_commit_failures_total 1\n"),
        "{after}"
    );

    // The next write commits through the healed relay, on a new connection: the failed one
    // closed the pool's idle connections, which the heal cut too (without that, one of them
    // could be handed out before the pool noticed, and fail this write as well).
    alice.send(&send(3)).await;
    let answer = alice
        .recv_until("message 3 answered", |m| {
            matches!(m, ServerMsg::Sent { id: 3, .. } | ServerMsg::Error { .. })
        })
        .await;
    assert!(matches!(answer, ServerMsg::Sent { .. }), "{answer:?}");
    let ready = get("/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");
    assert!(commits(&get("/metrics").await) > commits(&after));
    server.stop().await;
}
