//! Several server nodes sharing one PostgreSQL database: what the database must arbitrate
//! (a name registered at once on two nodes, seqs drawn at once on two nodes) and how the
//! schema behaves when nodes start together or a newer build has been there.

mod common;

use breeze_core::UserId;
use breeze_core::message::Credential;
use breeze_core::storage::{StorageError, StorageOp, StorageResult};
use breeze_store_pg::{PgError, PgOptions, PgStore, SCHEMA_VERSION};
use breeze_testsupport::pg::TestPg;
use common::{NOW, Node};
use std::collections::{BTreeMap, BTreeSet};

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid name")
}

fn register(name: &str) -> StorageOp {
    StorageOp::Register {
        user: user(name),
        password: "correct horse".into(),
    }
}

/// A node on `pg` with alice and bob registered through it.
async fn with_alice_and_bob(pg: &TestPg) -> Node {
    let mut node = Node::start(pg.url()).await;
    for name in ["alice", "bob"] {
        assert_eq!(
            node.apply(register(name), NOW).await,
            StorageResult::Registered(Ok(()))
        );
    }
    node
}

fn message(from: &str, to: &str, id: u64) -> StorageOp {
    StorageOp::StoreMessage {
        from: user(from),
        to: user(to),
        id,
        body: format!("{from} #{id}"),
        attachment: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_registered_on_two_nodes_at_once_goes_to_exactly_one() {
    let Some(pg) = TestPg::create("a_name_registered_on_two_nodes_at_once_goes_to_exactly_one")
    else {
        return;
    };
    let (mut a, mut b) = tokio::join!(Node::start(pg.url()), Node::start(pg.url()));
    for i in 0..20 {
        let name = format!("user{i}");
        let (ra, rb) = tokio::join!(a.apply(register(&name), NOW), b.apply(register(&name), NOW));
        let outcomes = [ra, rb].map(|r| match r {
            StorageResult::Registered(r) => r,
            other => panic!("unexpected {other:?}"),
        });
        let won = outcomes.iter().filter(|r| r.is_ok()).count();
        let taken = outcomes
            .iter()
            .filter(|r| **r == Err(StorageError::UserTaken))
            .count();
        assert_eq!((won, taken), (1, 1), "{name}: {outcomes:?}");
    }
    let users = a.store.users().await.expect("users");
    assert_eq!(users.len(), 20, "{users:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Two nodes store messages to one recipient at once while a third reads her mailbox over
/// and over. Seqs must be unique, and committed in order: a read never shows a seq below one
/// an earlier read already showed, or the core's mailbox floor would drop that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_drawn_on_two_nodes_are_unique_and_become_visible_in_order() {
    const EACH: u64 = 150;
    let Some(pg) = TestPg::create("seqs_drawn_on_two_nodes_are_unique_and_become_visible_in_order")
    else {
        return;
    };
    let mut a = Node::start(pg.url()).await;
    for name in ["alice", "bob", "carol"] {
        assert_eq!(
            a.apply(register(name), NOW).await,
            StorageResult::Registered(Ok(()))
        );
    }
    let b = Node::start(pg.url()).await;
    let mut reader = Node::start(pg.url()).await;

    let write = |mut node: Node, from: &'static str| async move {
        let mut seqs = Vec::new();
        for id in 1..=EACH {
            match node.apply(message(from, "alice", id), NOW + id).await {
                StorageResult::MessageStored(Ok(stored)) => {
                    seqs.push((stored.delivery.seq, stored.prev.expect("a new message")));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        node.shutdown().await;
        seqs
    };
    let writers = tokio::spawn(async move {
        let (sa, sb) = tokio::join!(write(a, "bob"), write(b, "carol"));
        (sa, sb)
    });

    let read = StorageOp::LoadMailbox {
        user: user("alice"),
        after: 0,
        all_above: None,
        limit: u32::MAX,
        max_bytes: u64::MAX,
    };
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut reads = 0;
    // Bounded: each read takes a round trip; the writers finish long before this.
    while seen.len() < (2 * EACH) as usize && reads < 20_000 {
        reads += 1;
        let StorageResult::MailboxLoaded(Ok(page)) = reader.apply(read.clone(), NOW).await else {
            panic!("mailbox read failed");
        };
        let now: BTreeSet<u64> = page.messages.iter().map(|d| d.seq).collect();
        let highest_before = seen.last().copied().unwrap_or(0);
        let late: Vec<u64> = now
            .difference(&seen)
            .copied()
            .filter(|&s| s < highest_before)
            .collect();
        assert!(
            late.is_empty(),
            "read {reads}: seqs {late:?} appeared after {highest_before} had been read"
        );
        assert!(
            now.is_superset(&seen),
            "read {reads}: a stored message vanished"
        );
        seen = now;
    }
    let (sa, sb) = writers.await.expect("writers");
    let chain: BTreeMap<u64, u64> = sa.iter().chain(&sb).copied().collect();
    let all: BTreeSet<u64> = chain.keys().copied().collect();
    assert_eq!(all.len(), (2 * EACH) as usize, "a seq was handed out twice");
    assert_eq!(seen, all, "the last read shows every stored message");
    // Each message names the one before it in alice's mailbox, whichever node stored that:
    // what lets a cluster node push it without a read (`Stored::prev`).
    let mut before = 0;
    for (seq, prev) in chain {
        assert_eq!(prev, before, "message {seq} names {prev}, not {before}");
        before = seq;
    }
    reader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let Some(pg) =
        TestPg::create("nodes_starting_together_migrate_once_and_a_newer_schema_is_refused")
    else {
        return;
    };
    let opts = PgOptions::default();
    let (a, b, c) = tokio::join!(
        PgStore::open(pg.url(), &opts),
        PgStore::open(pg.url(), &opts),
        PgStore::open(pg.url(), &opts)
    );
    for store in [a, b, c] {
        let store = store.expect("every node opens the fresh database");
        assert_eq!(
            store.schema_version().await.expect("version"),
            SCHEMA_VERSION
        );
    }
    // Opening again changes nothing.
    let again = PgStore::open(pg.url(), &opts).await.expect("reopen");
    assert_eq!(
        again.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );

    pg.execute("UPDATE schema_version SET version = 99")
        .expect("pretend a newer build migrated");
    let refused = PgStore::open(pg.url(), &opts).await;
    let Err(e) = refused else {
        panic!("a schema from a newer build was opened");
    };
    assert!(
        matches!(e, PgError::SchemaTooNew { found: 99, known } if known == SCHEMA_VERSION),
        "{e}"
    );
    assert!(e.to_string().contains("newer Breeze"), "{e}");
}

#[tokio::test]
async fn a_bad_url_and_an_unreachable_server_are_told_apart() {
    let opts = PgOptions {
        timeout: std::time::Duration::from_secs(2),
        ..PgOptions::default()
    };
    let bad = PgStore::open("postgres://u@h/db?no_such_option=1", &opts).await;
    assert!(matches!(bad, Err(PgError::Url(_))), "{bad:?}");
    // Port 1 on loopback: nothing listens there.
    let gone = PgStore::open("postgres://u@127.0.0.1:1/db", &opts).await;
    let Err(PgError::Unreachable(why)) = gone else {
        panic!("{gone:?}");
    };
    assert!(why.contains("refused"), "{why}");
}

/// A URL whose search_path names no schema that exists is refused with that said, and an
/// error the server reports carries the server's own words, not only "db error".
#[tokio::test]
async fn a_missing_schema_and_a_failed_statement_say_what_went_wrong() {
    let Some(pg) = TestPg::create("a_missing_schema_and_a_failed_statement_say_what_went_wrong")
    else {
        return;
    };
    let missing = format!("{}_missing", pg.schema());
    let url = pg.url().replace(pg.schema(), &missing);
    let refused = PgStore::open(&url, &PgOptions::default()).await;
    let Err(e @ PgError::NoSchema { .. }) = refused else {
        panic!("{refused:?}");
    };
    let said = e.to_string();
    assert!(
        said.contains(&missing) && said.contains("CREATE SCHEMA"),
        "{said}"
    );
    let (client, conn) = tokio_postgres::connect(pg.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    let conn = tokio::spawn(conn);
    let failed = client
        .batch_execute("SELECT * FROM no_such_table")
        .await
        .expect_err("no such table");
    // The server's words depend on its lc_messages; the name and the code do not.
    let said = PgError::from(failed).to_string();
    assert!(
        said.contains("no_such_table") && said.contains("(SQLSTATE 42P01)"),
        "{said}"
    );
    assert!(!said.contains("db error"), "{said}");
    drop(client);
    let _ = conn.await;
}

/// Shutdown finishes what was submitted: every request is answered, and every message it
/// answered as stored is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_and_commits_everything_submitted() {
    use breeze_core::RequestId;
    use breeze_store_pg::PgService;
    use std::sync::{Arc, Mutex};
    let Some(pg) = TestPg::create("shutdown_answers_and_commits_everything_submitted") else {
        return;
    };
    let node = with_alice_and_bob(&pg).await;
    let store = node.store.clone();
    node.shutdown().await;

    let answers: Arc<Mutex<Vec<(RequestId, StorageResult)>>> = Arc::default();
    let sink = Arc::clone(&answers);
    let service = PgService::start(
        store.clone(),
        common::hasher(),
        1,
        breeze_core::ServerConfig::default().work,
        Arc::new(|| NOW),
        move |id, result| sink.lock().expect("answers").push((id, result)),
    );
    for id in 1..=200 {
        service.submit(RequestId(id), message("bob", "alice", id));
    }
    service.submit(RequestId(201), register("carol"));
    service.shutdown().await;

    let answers = std::mem::take(&mut *answers.lock().expect("answers"));
    assert_eq!(answers.len(), 201, "every request answered");
    let stored = answers
        .iter()
        .filter(|(_, r)| matches!(r, StorageResult::MessageStored(Ok(_))))
        .count();
    assert_eq!(stored, 200);
    // Plain writes are answered in the order they were submitted.
    let order: Vec<u64> = answers
        .iter()
        .filter(|(_, r)| matches!(r, StorageResult::MessageStored(_)))
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(order, (1..=200).collect::<Vec<u64>>());
    // And applied in that order, though sent pipelined: seqs grow with submission.
    let seqs: Vec<u64> = answers
        .iter()
        .filter_map(|(_, r)| match r {
            StorageResult::MessageStored(Ok(s)) => Some(s.delivery.seq),
            _ => None,
        })
        .collect();
    assert!(seqs.is_sorted(), "seqs out of submission order: {seqs:?}");

    let mut reader = Node::start(pg.url()).await;
    let StorageResult::MailboxLoaded(Ok(page)) = reader
        .apply(
            StorageOp::LoadMailbox {
                user: user("alice"),
                after: 0,
                all_above: None,
                limit: u32::MAX,
                max_bytes: u64::MAX,
            },
            NOW,
        )
        .await
    else {
        panic!("mailbox read failed");
    };
    assert_eq!(page.messages.len(), 200);
    assert!(store.users().await.expect("users").contains(&user("carol")));
    reader.shutdown().await;
}

/// A database a build before bans migrated (schema 1), with an account in it: opening it adds
/// the ban column, nobody banned, and the account logs in as before; message seqs, drawn
/// from a sequence since schema 4, go on after the last one schema 1's counter row gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_bans_is_upgraded_with_nobody_banned() {
    let Some(pg) = TestPg::create("a_database_from_before_bans_is_upgraded_with_nobody_banned")
    else {
        return;
    };
    let node = with_alice_and_bob(&pg).await;
    node.shutdown().await;
    // Schema 1 numbered messages from a counter row; 40 were handed out.
    pg.execute(&format!(
        "{UNDO_MAILBOX_TABLE}
         DROP TABLE room_messages, room_members, rooms;
         DROP TABLE profiles; DROP TABLE avatars;
         DROP TABLE contact_groups; ALTER TABLE contacts DROP COLUMN group_id;
         ALTER TABLE accounts DROP COLUMN last_group;
         DROP SEQUENCE message_seqs;
         CREATE TABLE message_seq (
             singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
             last      BIGINT  NOT NULL);
         INSERT INTO message_seq (last) VALUES (40);
         DROP INDEX messages_recipient; ALTER TABLE accounts DROP COLUMN banned;
         UPDATE schema_version SET version = 1"
    ))
    .expect("rewind to schema 1");

    let mut node = Node::start(pg.url()).await;
    let login = StorageOp::Authenticate {
        user: user("alice"),
        credential: Credential::Password("correct horse".into()),
        issue_token: false,
    };
    match node.apply(login, NOW + 1).await {
        StorageResult::Authenticated(Ok(account)) => assert!(!account.banned),
        other => panic!("alice after the upgrade: {other:?}"),
    }
    // Seqs go on after the counter's last.
    match node.apply(message("alice", "bob", 1), NOW + 2).await {
        StorageResult::MessageStored(Ok(stored)) => assert_eq!(stored.delivery.seq, 41),
        other => panic!("a message after the upgrade: {other:?}"),
    }
    node.shutdown().await;
    let store = PgStore::open(pg.url(), &PgOptions::default())
        .await
        .expect("open");
    assert_eq!(
        store.schema_version().await.expect("version"),
        SCHEMA_VERSION
    );
}

/// Schemas 9 and 8 undone: no batch function; unacked messages marked in their rows again, not
/// listed in `mailbox`, and the foreign keys back. Leaves every message unacked; `delivered` is
/// set by the caller.
const UNDO_MAILBOX_TABLE: &str = "
    DROP FUNCTION breeze_write_batch;
    DROP TABLE mailbox;
    ALTER SEQUENCE message_seqs_8 RENAME TO message_seqs;
    ALTER TABLE messages
        ADD COLUMN delivered BOOLEAN NOT NULL DEFAULT FALSE,
        ADD CONSTRAINT messages_sender_fkey FOREIGN KEY (sender) REFERENCES accounts(name),
        ADD CONSTRAINT messages_recipient_fkey FOREIGN KEY (recipient) REFERENCES accounts(name);
    CREATE INDEX messages_mailbox ON messages(recipient, seq) WHERE NOT delivered;";

/// A database of schema 7, where an ack set `delivered` in the message's row, with one acked
/// and two unacked messages: after the upgrade to the `mailbox` table a login owes exactly the
/// two unacked ones, an ack takes one out, and the acked one is still in the history. A node
/// of the older build can no longer store a message (it would leave it out of the mailbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_survive_the_move_to_the_mailbox_table() {
    let Some(pg) = TestPg::create("unacked_messages_survive_the_move_to_the_mailbox_table") else {
        return;
    };
    let mut node = with_alice_and_bob(&pg).await;
    let mut seqs = Vec::new();
    for id in 1..=3 {
        match node.apply(message("alice", "bob", id), NOW + id).await {
            StorageResult::MessageStored(Ok(stored)) => seqs.push(stored.delivery.seq),
            other => panic!("message {id}: {other:?}"),
        }
    }
    node.shutdown().await;
    pg.execute(&format!(
        "{UNDO_MAILBOX_TABLE}
         UPDATE messages SET delivered = TRUE WHERE seq = {};
         UPDATE schema_version SET version = 7",
        seqs[1]
    ))
    .expect("rewind to schema 7");

    let mut node = Node::start(pg.url()).await;
    let owed = |page: &breeze_core::storage::MailboxPage| {
        page.messages.iter().map(|d| d.seq).collect::<Vec<u64>>()
    };
    let read = || StorageOp::LoadMailbox {
        user: user("bob"),
        after: 0,
        all_above: Some(u64::MAX),
        limit: u32::MAX,
        max_bytes: u64::MAX,
    };
    match node.apply(read(), NOW + 10).await {
        StorageResult::MailboxLoaded(Ok(page)) => {
            assert_eq!(
                owed(&page),
                vec![seqs[0], seqs[2]],
                "unacked after the upgrade"
            );
            assert_eq!(page.high, seqs[2]);
        }
        other => panic!("mailbox after the upgrade: {other:?}"),
    }
    let ack = StorageOp::MarkDelivered {
        user: user("bob"),
        seqs: vec![seqs[0]],
    };
    assert_eq!(
        node.apply(ack, NOW + 11).await,
        StorageResult::DeliveredMarked(Ok(()))
    );
    match node.apply(read(), NOW + 12).await {
        StorageResult::MailboxLoaded(Ok(page)) => assert_eq!(owed(&page), vec![seqs[2]]),
        other => panic!("mailbox after an ack: {other:?}"),
    }
    let history = StorageOp::LoadHistory {
        user: user("bob"),
        with: user("alice"),
        before: None,
        limit: 10,
    };
    match node.apply(history, NOW + 13).await {
        StorageResult::HistoryLoaded(Ok(items)) => assert_eq!(items.len(), 3, "{items:?}"),
        other => panic!("history after the upgrade: {other:?}"),
    }
    node.shutdown().await;
    // Schema 7's insert, as an older node still running would send it.
    let old_insert = pg.execute(
        "INSERT INTO messages (seq, sender, recipient, client_id, body, sent_at_ms)
         VALUES (nextval('message_seqs'), 'alice', 'bob', 4, 'alice #4', 0)",
    );
    let why = old_insert.expect_err("an older node stored a message");
    assert!(why.contains("message_seqs"), "{why}");
}
