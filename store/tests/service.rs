mod common;

use breeze_core::RequestId;
use breeze_core::config::ServerConfig;
use breeze_core::message::Credential;
use breeze_core::storage::{StorageError, StorageOp, StorageResult};
use breeze_store::{Db, DbOptions, StorageService};
use common::{Store, hasher, user};
use std::sync::mpsc;
use std::time::Duration;

fn start(
    db: Db,
    hash_threads: usize,
) -> (StorageService, mpsc::Receiver<(RequestId, StorageResult)>) {
    let (tx, rx) = mpsc::channel();
    let on_done = move |id, result| {
        let _ = tx.send((id, result));
    };
    // The default budget: more than any test here has in flight.
    let budget = ServerConfig::default().work;
    let service =
        StorageService::start(db, hasher(), hash_threads, budget, on_done).expect("start");
    (service, rx)
}

fn register(name: &str) -> StorageOp {
    StorageOp::Register {
        user: user(name),
        password: format!("{name}'s password"),
    }
}

fn message(from: &str, to: &str, id: u64) -> StorageOp {
    StorageOp::StoreMessage {
        from: user(from),
        to: user(to),
        id,
        body: format!("message {id}"),
        attachment: None,
    }
}

#[test]
fn results_come_back_and_shutdown_flushes_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let (service, rx) = start(Db::open(&path, &DbOptions::default()).expect("open"), 2);

    service.submit(RequestId(1), register("alice"));
    service.submit(RequestId(2), register("bob"));
    // Registration finishes on the hash pool; wait for it before using the accounts.
    let mut registered: Vec<_> = (0..2).map(|_| rx.recv().expect("result")).collect();
    registered.sort_by_key(|(id, _)| *id);
    assert_eq!(
        registered,
        vec![
            (RequestId(1), StorageResult::Registered(Ok(()))),
            (RequestId(2), StorageResult::Registered(Ok(()))),
        ]
    );

    service.submit(
        RequestId(3),
        StorageOp::Authenticate {
            user: user("alice"),
            credential: Credential::Password("alice's password".to_owned()),
            issue_token: true,
        },
    );
    service.submit(
        RequestId(4),
        StorageOp::Authenticate {
            user: user("alice"),
            credential: Credential::Password("wrong".to_owned()),
            issue_token: true,
        },
    );
    for i in 0..200 {
        service.submit(RequestId(100 + i), message("alice", "bob", i));
    }
    service.submit(
        RequestId(5),
        StorageOp::SetContacts {
            user: user("alice"),
            add: vec![user("bob")],
            remove: vec![],
        },
    );
    let commits = service.commit_stats();
    service.shutdown();

    let results: Vec<_> = rx.try_iter().collect();
    assert_eq!(results.len(), 203);
    // Grouped: fewer commits than requests, each one timed, none failed.
    let commits = commits.snapshot();
    assert!(commits.count >= 2 && commits.count < 205, "{commits:?}");
    assert_eq!(commits.buckets.iter().sum::<u64>(), commits.count);
    assert!(!commits.failing && commits.failures == 0);
    // Everything but the verifying requests completes in submission order.
    let ordered: Vec<RequestId> = results
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| id.0 >= 5)
        .collect();
    let mut expected: Vec<RequestId> = (100..300).map(RequestId).collect();
    expected.push(RequestId(5));
    assert_eq!(ordered, expected);
    let mut last_seq = 0;
    for (id, result) in &results {
        match (id.0, result) {
            (3, StorageResult::Authenticated(Ok(account))) => {
                assert_eq!(account.resume_token.len(), breeze_store::TOKEN_LEN);
            }
            (4, StorageResult::Authenticated(Err(StorageError::BadCredentials))) => {}
            (5, StorageResult::ContactsSet(Ok(()))) => {}
            (100.., StorageResult::MessageStored(Ok(stored))) => {
                assert!(stored.delivery.seq > last_seq);
                last_seq = stored.delivery.seq;
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    let mut s = Store::new(Db::open(&path, &DbOptions::default()).expect("reopen"));
    assert_eq!(s.mailbox("bob").len(), 200);
    let account = s
        .password_login("alice", "alice's password")
        .expect("login");
    assert_eq!(account.contacts, vec![user("bob")]);
}

#[test]
fn shutdown_waits_for_hashing_in_flight() {
    let (service, rx) = start(Db::open_in_memory(&DbOptions::default()).expect("db"), 1);
    for i in 0..20 {
        service.submit(RequestId(i), register(&format!("user{i}")));
    }
    service.submit(RequestId(99), register("user3"));
    service.shutdown();
    let mut results: Vec<_> = rx.try_iter().collect();
    results.sort_by_key(|(id, _)| *id);
    assert_eq!(results.len(), 21);
    assert!(
        results[..20]
            .iter()
            .all(|(_, r)| *r == StorageResult::Registered(Ok(())))
    );
    assert_eq!(
        results[20],
        (
            RequestId(99),
            StorageResult::Registered(Err(StorageError::UserTaken))
        )
    );
}

#[test]
fn dropping_the_service_also_flushes() {
    let (service, rx) = start(Db::open_in_memory(&DbOptions::default()).expect("db"), 0);
    service.submit(RequestId(1), register("alice"));
    drop(service);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).expect("result"),
        (RequestId(1), StorageResult::Registered(Ok(())))
    );
}

/// Checkpoints run beside the writer, and the writer lets the WAL start over once it is
/// large, so a long run of small commits reuses the WAL file instead of growing it: 3,000
/// one-message commits write ~16,000 WAL frames (~65 MB, which is what the file grows to
/// without the catch-up), and the file stays within the catch-up size (32 MiB) plus a margin.
/// Nothing is lost on the way.
#[test]
fn the_wal_is_reused_under_a_long_run_of_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let wal = dir.path().join("breeze.db-wal");
    let (service, rx) = start(Db::open(&path, &DbOptions::default()).expect("open"), 1);
    service.submit(RequestId(1), register("alice"));
    service.submit(RequestId(2), register("bob"));
    for _ in 0..2 {
        rx.recv().expect("registered");
    }
    let mut largest = 0;
    for id in 0..3_000u64 {
        // One at a time: each its own commit, the worst case for the WAL.
        service.submit(RequestId(10 + id), message("alice", "bob", id));
        let (_, result) = rx.recv().expect("result");
        assert!(
            matches!(result, StorageResult::MessageStored(Ok(_))),
            "{result:?}"
        );
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    service.shutdown();
    assert!(largest < 40 << 20, "the WAL grew to {largest} bytes");
    let mut store = Store::new(Db::open(&path, &DbOptions::default()).expect("reopen"));
    assert_eq!(store.mailbox("bob").len(), 3_000);
}
