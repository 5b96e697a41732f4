//! Tests that need the connection inside a `Db`.

use crate::db::{HashMode, Outcome, Work};
use crate::job::{HashJob, Kind};
use crate::{Db, DbOptions, HashCost, Hasher, StorageService};
use breeze_core::config::{Budget, ServerConfig, WorkBudget};
use breeze_core::message::Credential;
use breeze_core::storage::{StorageError, StorageOp, StorageResult};
use breeze_core::{RequestId, UserId};
use std::collections::BTreeMap;
use std::sync::mpsc;

const NOW: u64 = 1_700_000_000_000;

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid user name")
}

fn hasher() -> Hasher {
    Hasher::new(HashCost::fast_for_tests()).expect("hasher")
}

fn register(name: &str) -> StorageOp {
    StorageOp::Register {
        user: user(name),
        password: "password".to_owned(),
    }
}

fn message(id: u64) -> StorageOp {
    StorageOp::StoreMessage {
        from: user("alice"),
        to: user("alice"),
        id,
        body: "hi".to_owned(),
        attachment: None,
    }
}

fn count(db: &Db, table: &str) -> i64 {
    db.conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// Every later COMMIT turns into a rollback and fails, as a full disk would make it.
fn break_commits(db: &mut Db) {
    db.conn.commit_hook(Some(|| true)).expect("commit hook");
}

#[test]
fn a_batch_whose_commit_fails_leaves_nothing() {
    let mut db = Db::open_in_memory(&DbOptions::default()).expect("db");
    let hasher = hasher();
    db.apply(RequestId(0), register("alice"), NOW, &hasher);
    break_commits(&mut db);
    let ops = vec![
        (RequestId(1), register("bob")),
        (RequestId(2), message(1)),
        (
            RequestId(3),
            StorageOp::Authenticate {
                user: user("alice"),
                credential: Credential::Password("password".to_owned()),
                issue_token: true,
            },
        ),
        (
            RequestId(4),
            StorageOp::LoadMailbox {
                user: user("alice"),
                after: 0,
                all_above: None,
                limit: 100,
                max_bytes: 1 << 20,
            },
        ),
    ];
    let results = db.apply_batch(ops, NOW, &hasher);
    assert_eq!(results.len(), 4);
    for (i, (id, result)) in results.iter().enumerate() {
        assert_eq!(id.0, i as u64 + 1);
        let failed = match result {
            StorageResult::Registered(r) => matches!(r, Err(StorageError::Failed(_))),
            StorageResult::MessageStored(r) => matches!(r, Err(StorageError::Failed(_))),
            StorageResult::Authenticated(r) => matches!(r, Err(StorageError::Failed(_))),
            StorageResult::MailboxLoaded(r) => matches!(r, Err(StorageError::Failed(_))),
            _ => false,
        };
        assert!(failed, "{result:?}");
    }
    assert_eq!(count(&db, "accounts"), 1);
    assert_eq!(count(&db, "messages"), 0);
    assert_eq!(count(&db, "tokens"), 0);

    db.conn.commit_hook(None::<fn() -> bool>).expect("unhook");
    assert_eq!(
        db.apply(RequestId(5), register("bob"), NOW, &hasher),
        StorageResult::Registered(Ok(()))
    );
}

#[test]
fn the_service_reports_a_failed_commit_for_every_request() {
    let mut db = Db::open_in_memory(&DbOptions::default()).expect("db");
    db.apply(RequestId(0), register("alice"), NOW, &hasher());
    break_commits(&mut db);
    let (tx, rx) = mpsc::channel();
    let budget = ServerConfig::default().work;
    let service = StorageService::start(db, hasher(), 1, budget, move |id, result| {
        let _ = tx.send((id, result));
    })
    .expect("start");
    service.submit(RequestId(1), message(1));
    service.submit(RequestId(2), register("bob"));
    service.shutdown();
    let mut results: Vec<_> = rx.try_iter().collect();
    results.sort_by_key(|(id, _)| *id);
    assert!(matches!(
        results.as_slice(),
        [
            (
                RequestId(1),
                StorageResult::MessageStored(Err(StorageError::Failed(_)))
            ),
            (
                RequestId(2),
                StorageResult::Registered(Err(StorageError::Failed(_)))
            ),
        ]
    ));
}

#[test]
fn a_password_changed_during_verification_does_not_log_in() {
    let mut db = Db::open_in_memory(&DbOptions::default()).expect("db");
    let hasher = hasher();
    db.apply(RequestId(0), register("alice"), NOW, &hasher);
    let login = StorageOp::Authenticate {
        user: user("alice"),
        credential: Credential::Password("password".to_owned()),
        issue_token: true,
    };
    let mut outcomes = db.run_batch(
        vec![(RequestId(1), Work::Op(login))],
        NOW,
        &hasher,
        HashMode::Defer,
    );
    let Some((_, Outcome::Hash(job))) = outcomes.pop() else {
        panic!("expected a hash job");
    };
    assert!(matches!(job, HashJob::Login { .. }));
    let verified = job.run(&hasher);

    let change = StorageOp::ChangePassword {
        user: user("alice"),
        old: "password".to_owned(),
        new: "new password".to_owned(),
    };
    assert_eq!(
        db.apply(RequestId(2), change, NOW, &hasher),
        StorageResult::PasswordChanged(Ok(()))
    );
    let mut outcomes = db.run_batch(
        vec![(RequestId(1), Work::Hashed(Kind::Authenticate, verified))],
        NOW,
        &hasher,
        HashMode::Defer,
    );
    assert!(matches!(
        outcomes.pop(),
        Some((
            RequestId(1),
            Outcome::Done(StorageResult::Authenticated(Err(
                StorageError::BadCredentials
            )))
        ))
    ));
    assert_eq!(count(&db, "tokens"), 0);
}

#[test]
fn mailbox_and_history_queries_use_their_indexes() {
    let db = Db::open_in_memory(&DbOptions::default()).expect("db");
    let plan = |sql: &str, params: &[&str]| -> String {
        let mut stmt = db
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .expect("plan");
        rows.collect::<Result<Vec<_>, _>>()
            .expect("plan rows")
            .join("; ")
    };
    let history = plan(
        "SELECT seq FROM messages
         WHERE min(sender, recipient) = ?1 AND max(sender, recipient) = ?2 AND seq < 10
         ORDER BY seq DESC LIMIT 5",
        &["a", "b"],
    );
    assert!(history.contains("messages_history"), "{history}");
    assert!(!history.contains("TEMP B-TREE"), "{history}");
    let mailbox = plan(
        "SELECT seq FROM messages WHERE recipient = ?1 AND delivered = 0 ORDER BY seq",
        &["a"],
    );
    assert!(mailbox.contains("messages_mailbox"), "{mailbox}");
    assert!(!mailbox.contains("TEMP B-TREE"), "{mailbox}");
}

/// Without a savepoint per message, a storage error midway through a batch must still leave
/// the truth behind: every message reported stored is in the database, every one reported
/// failed is not, and the file is sound. A page limit makes the database run out of room
/// partway through a batch of large messages, as a full disk would.
#[test]
fn a_full_database_keeps_exactly_the_messages_it_reported_stored() {
    let mut db = Db::open_in_memory(&DbOptions::default()).expect("db");
    let hasher = hasher();
    db.apply(RequestId(0), register("alice"), NOW, &hasher);
    let pages: i64 = db
        .conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .expect("page_count");
    db.conn
        .pragma_update(None, "max_page_count", pages + 40)
        .expect("max_page_count");
    let big = |id: u64| StorageOp::StoreMessage {
        from: user("alice"),
        to: user("alice"),
        id,
        body: "x".repeat(16 * 1024),
        attachment: None,
    };
    let ops = (1..=40).map(|id| (RequestId(id), big(id))).collect();
    let results = db.apply_batch(ops, NOW, &hasher);
    let mut stored = Vec::new();
    for (id, result) in &results {
        match result {
            StorageResult::MessageStored(Ok(s)) => stored.push(s.delivery.id),
            StorageResult::MessageStored(Err(StorageError::Failed(_))) => {}
            other => panic!("request {id:?}: {other:?}"),
        }
    }
    assert!(stored.len() < 40, "the page limit never bit");

    db.conn
        .pragma_update(None, "max_page_count", 1_000_000)
        .expect("max_page_count");
    let in_db: Vec<u64> = db
        .conn
        .prepare("SELECT client_id FROM messages ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| r.get::<_, i64>(0))
        .expect("query")
        .map(|id| id.map(|id| id as u64))
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(in_db, stored);
    let check: String = db
        .conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
}

/// The queues are sized from the core's budget, and that is enough: a core that keeps the
/// budget full — hashing requests included, which pass through the request queue twice —
/// never finds a queue full (that would panic in `submit` or on the writer thread).
#[test]
fn a_full_budget_fits_the_service_queues() {
    let budget = WorkBudget {
        storage: Budget {
            per_conn: 4,
            total: 4,
        },
        hashing: Budget {
            per_conn: 2,
            total: 2,
        },
    };
    let mut db = Db::open_in_memory(&DbOptions::default()).expect("db");
    db.apply(RequestId(0), register("alice"), NOW, &hasher());
    let (tx, rx) = mpsc::channel();
    let service = StorageService::start(db, hasher(), 2, budget, move |id, result| {
        let _ = tx.send((id, result));
    })
    .expect("start");
    // As the core would: fill the budget, then one more request per result handled.
    let mut in_flight = std::collections::BTreeMap::new();
    let submit = |service: &StorageService, in_flight: &mut BTreeMap<u64, bool>, n: u64| {
        let hashes = in_flight.values().filter(|&&h| h).count() < 2;
        in_flight.insert(n, hashes);
        let op = if hashes {
            register(&format!("u{n}"))
        } else {
            message(n)
        };
        service.submit(RequestId(n), op);
    };
    for n in 1..=4 {
        submit(&service, &mut in_flight, n);
    }
    for n in 5..=200 {
        let (id, _) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("every request is answered");
        in_flight.remove(&id.0).expect("a request of ours");
        submit(&service, &mut in_flight, n);
    }
    service.shutdown();
    assert_eq!(
        rx.try_iter().count(),
        4,
        "the last four, answered at shutdown"
    );
}

#[test]
fn a_full_database_writes_its_wal_through_the_joined_vfs_and_a_normal_one_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hasher = hasher();
    for (sync, joined) in [
        (crate::Synchronous::Full, true),
        (crate::Synchronous::Normal, false),
    ] {
        let opts = DbOptions {
            synchronous: sync,
            ..DbOptions::default()
        };
        let mut db = Db::open(&dir.path().join(format!("{sync:?}.db")), &opts).expect("db");
        crate::joined_wal::take_counts();
        db.apply(RequestId(0), register("alice"), NOW, &hasher);
        db.apply(RequestId(1), message(1), NOW, &hasher);
        let (asked, made) = crate::joined_wal::take_counts();
        assert_eq!(
            asked > 0 && made > 0,
            joined,
            "{sync:?}: {asked} asked, {made} made"
        );
        assert_eq!(count(&db, "messages"), 1);
    }
}
