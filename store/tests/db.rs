mod common;

use breeze_core::RequestId;
use breeze_core::message::Credential;
use breeze_core::storage::{StorageError, StorageOp, StorageResult};
use breeze_store::{
    Db, DbOptions, HashCost, Hasher, SCHEMA_VERSION, StoreError, Synchronous, TOKEN_LEN,
};
use common::{NOW, Store, user};
use sha2::{Digest, Sha256};

fn open(path: &std::path::Path) -> Db {
    Db::open(path, &DbOptions::default()).expect("open db")
}

#[test]
fn fresh_database_is_migrated_in_wal_mode_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let db = open(&path);
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    drop(db);

    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let mode: String = raw
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    drop(raw);

    let opts = DbOptions {
        synchronous: Synchronous::Normal,
        ..DbOptions::default()
    };
    let db = Db::open(&path, &opts).expect("reopen");
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
}

#[test]
fn a_database_from_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    drop(open(&path));
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    drop(raw);
    match Db::open(&path, &DbOptions::default()) {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// What the storage contract (tests/contract.rs) leaves to each store: the user list, and
/// tokens of `TOKEN_LEN` random bytes, of which the database keeps only a digest.
#[test]
fn users_are_listed_and_tokens_are_kept_as_digests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let mut s = Store::new(open(&path));
    s.register("bob", "password").expect("register");
    s.register("alice", "password").expect("register");
    assert_eq!(
        s.db.users().expect("users"),
        vec![user("alice"), user("bob")]
    );
    let token = s
        .password_login("alice", "password")
        .expect("login")
        .resume_token;
    assert_eq!(token.len(), TOKEN_LEN);
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let kept: Vec<u8> = raw
        .query_row("SELECT token_sha256 FROM tokens", [], |r| r.get(0))
        .expect("one token");
    assert_eq!(kept, Sha256::digest(&token).to_vec());
}

#[test]
fn an_outdated_hash_is_upgraded_at_login() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let mut db = open(&path);
    let weak = Hasher::new(HashCost::fast_for_tests()).expect("hasher");
    let stronger = Hasher::new(HashCost {
        memory_kib: 16,
        ..HashCost::fast_for_tests()
    })
    .expect("hasher");
    let register = StorageOp::Register {
        user: user("alice"),
        password: "password".to_owned(),
    };
    assert_eq!(
        db.apply(RequestId(1), register, NOW, &weak),
        StorageResult::Registered(Ok(()))
    );
    let login = StorageOp::Authenticate {
        user: user("alice"),
        credential: Credential::Password("password".to_owned()),
        issue_token: true,
    };
    assert!(matches!(
        db.apply(RequestId(2), login.clone(), NOW, &stronger),
        StorageResult::Authenticated(Ok(_))
    ));
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let hash: String = raw
        .query_row("SELECT password_hash FROM accounts", [], |r| r.get(0))
        .expect("hash");
    assert!(hash.contains("m=16,"), "{hash}");
    assert!(matches!(
        db.apply(RequestId(3), login, NOW, &weak),
        StorageResult::Authenticated(Ok(_))
    ));
}

#[test]
fn a_failing_request_fails_alone_in_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let mut s = Store::new(open(&path));
    for name in ["alice", "bob", "carol"] {
        s.register(name, "password").expect("register");
    }
    // Every request the store answers is well-formed; a failure has to be planted.
    rusqlite::Connection::open(&path)
        .expect("raw open")
        .execute_batch(
            "CREATE TRIGGER no_carol BEFORE INSERT ON contacts WHEN NEW.contact = 'carol'
             BEGIN SELECT RAISE(ABORT, 'planted failure'); END;",
        )
        .expect("trigger");
    let message = |id: u64| StorageOp::StoreMessage {
        from: user("alice"),
        to: user("bob"),
        id,
        body: format!("message {id}"),
        attachment: None,
    };
    let ops = vec![
        (RequestId(1), message(1)),
        // Two rows: bob is written, then carol fails, and the savepoint takes bob back.
        (
            RequestId(2),
            StorageOp::SetContacts {
                user: user("alice"),
                add: vec![user("bob"), user("carol")],
                remove: vec![],
            },
        ),
        (
            RequestId(3),
            StorageOp::Register {
                user: user("dave"),
                password: "password".to_owned(),
            },
        ),
        // One row, no savepoint: the failed statement undoes itself.
        (
            RequestId(4),
            StorageOp::SetContacts {
                user: user("bob"),
                add: vec![user("carol")],
                remove: vec![],
            },
        ),
        (RequestId(5), message(2)),
    ];
    let results = s.db.apply_batch(ops, NOW, &s.hasher);
    assert_eq!(
        results.iter().map(|(id, _)| id.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    for i in [1, 3] {
        assert!(
            matches!(
                results[i].1,
                StorageResult::ContactsSet(Err(StorageError::Failed(_)))
            ),
            "{:?}",
            results[i]
        );
    }
    assert_eq!(results[2].1, StorageResult::Registered(Ok(())));
    assert_eq!(s.mailbox("bob").len(), 2);
    assert!(s.password_login("dave", "password").is_ok());
    for name in ["alice", "bob"] {
        let account = s.password_login(name, "password").expect("login");
        assert!(
            account.contacts.is_empty(),
            "{name}: {:?}",
            account.contacts
        );
    }
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let (token, seq) = {
        let mut s = Store::new(open(&path));
        s.register("alice", "password").expect("register");
        s.register("bob", "password").expect("register");
        s.set_contact("alice", "bob", true).expect("contact");
        let seq = s
            .send("bob", "alice", 9, "while you were out")
            .expect("store");
        let token = s
            .password_login("alice", "password")
            .expect("login")
            .resume_token;
        (token, seq.delivery.seq)
    };
    let mut s = Store::new(open(&path));
    assert_eq!(
        s.db.users().expect("users"),
        vec![user("alice"), user("bob")]
    );
    let account = s
        .login("alice", Credential::Token(token))
        .expect("token login");
    assert_eq!(account.contacts, vec![user("bob")]);
    let mailbox = s.mailbox("alice");
    assert_eq!(mailbox.len(), 1);
    assert_eq!(mailbox[0].seq, seq);
    assert_eq!(mailbox[0].body, "while you were out");
    // Seqs keep growing across restarts.
    assert!(
        s.send("bob", "alice", 10, "more")
            .expect("store")
            .delivery
            .seq
            > seq
    );
}

/// Two servers on one file would split live delivery between them: the second is refused,
/// naming the file, and gets it once the first is gone (the lock dies with its holder).
#[test]
fn a_database_serves_one_server_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let first = open(&path);
    match Db::open(&path, &DbOptions::default()) {
        Err(e @ StoreError::InUse { .. }) => {
            let said = e.to_string();
            assert!(said.contains("breeze.db-lock"), "{said}");
            assert!(said.contains("in use by another Breeze server"), "{said}");
        }
        other => panic!("a second open: {other:?}"),
    }
    drop(first);
    open(&path);
}

/// Registers `n` users so the file spans many pages.
fn populate(path: &std::path::Path, n: usize) {
    let mut store = Store::new(open(path));
    for i in 0..n {
        assert_eq!(
            store.register(&format!("user{i}"), "a fine password"),
            Ok(())
        );
    }
}

/// A damaged file is refused at start, loudly, rather than served with messages missing.
#[test]
fn a_damaged_database_is_refused_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    populate(&path, 300);
    // Fold the WAL into the file, then scribble over a page in the middle of it.
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    raw.pragma_update(None, "journal_mode", "DELETE")
        .expect("checkpoint");
    let page_size: i64 = raw
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .expect("page size");
    let pages: i64 = raw
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .expect("page count");
    drop(raw);
    assert!(pages > 4, "{pages} pages");
    let mut bytes = std::fs::read(&path).expect("read");
    let at = (page_size * (pages / 2)) as usize;
    bytes[at..at + page_size as usize].fill(0xA5);
    std::fs::write(&path, &bytes).expect("write");
    match Db::open(&path, &DbOptions::default()) {
        Err(e @ StoreError::Damaged(_)) => {
            assert!(e.to_string().contains("restore it from a backup"), "{e}");
        }
        other => panic!("a damaged file opened: {other:?}"),
    }

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x5A; 8192]).expect("write");
    assert!(matches!(
        Db::open(&junk, &DbOptions::default()),
        Err(StoreError::Damaged(_))
    ));
}

/// The online backup copies a database a server holds open (and locked), and the copy opens
/// as a database of its own with everything in it.
#[test]
fn an_online_backup_copies_a_database_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    populate(&path, 20);
    let serving = open(&path);
    let copy = dir.path().join("copy.db");
    let report = Db::backup(&path, &copy, std::time::Duration::from_secs(5)).expect("backup");
    assert!(
        report.pages > 0 && report.bytes >= report.pages,
        "{report:?}"
    );
    assert!(matches!(
        Db::backup(&path, &copy, std::time::Duration::from_secs(5)),
        Err(StoreError::BackupExists(_))
    ));
    let missing = dir.path().join("no-such.db");
    assert!(
        Db::backup(
            &missing,
            &dir.path().join("other.db"),
            std::time::Duration::from_secs(5)
        )
        .is_err()
    );
    assert!(!missing.exists(), "a mistyped source must not be created");
    let restored = open(&copy);
    assert_eq!(restored.users().expect("users").len(), 20);
    drop(serving);
}

/// Makes the database at `path` look as a build of schema `version` left it: the columns
/// and indexes later migrations add are dropped, and the version set back. Data stays where it fits.
fn rewind(path: &std::path::Path, version: i64) {
    let raw = rusqlite::Connection::open(path).expect("raw open");
    if version < 5 {
        raw.execute_batch(
            "DROP TABLE profiles; DROP TABLE avatars;
             DROP TABLE contact_groups;
             ALTER TABLE contacts DROP COLUMN group_id;
             ALTER TABLE accounts DROP COLUMN last_group;",
        )
        .expect("drop the profile tables and the contact groups");
    }
    if version < 7 {
        raw.execute_batch("DROP TABLE room_messages; DROP TABLE room_members; DROP TABLE rooms;")
            .expect("drop the room tables");
    }
    if version < 4 {
        raw.execute_batch("DROP INDEX messages_recipient")
            .expect("drop the recipient index");
    }
    if version < 3 {
        raw.execute_batch("ALTER TABLE accounts DROP COLUMN banned")
            .expect("drop the ban column");
    }
    raw.pragma_update(None, "user_version", version)
        .expect("version");
}

/// A database from before bans (schema 2) with accounts: opening it adds the ban, with
/// nobody banned and every password and token as it was.
#[test]
fn a_database_from_before_bans_is_upgraded_with_nobody_banned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let mut s = Store::new(open(&path));
    s.register("alice", "password").expect("register");
    s.register("bob", "password").expect("register");
    let token = s
        .password_login("alice", "password")
        .expect("login")
        .resume_token;
    drop(s);
    rewind(&path, 2);

    let mut db = open(&path);
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(db.banned_users().expect("banned"), vec![]);
    db.set_banned(&user("bob"), true).expect("ban");
    assert_eq!(db.banned_users().expect("banned"), vec![user("bob")]);
    assert!(matches!(
        db.set_banned(&user("carol"), true),
        Err(StoreError::NoSuchUser(_))
    ));
    let mut s = Store::new(db);
    let alice = s
        .login("alice", Credential::Token(token))
        .expect("alice's token still resumes");
    assert!(!alice.banned);
    assert!(
        s.password_login("bob", "password")
            .expect("verified")
            .banned,
        "bob is banned"
    );
}

/// A database from before live reads above a mark (schema 3), with acked and unacked
/// messages: opening it adds the recipient index, and a read above a mark brings the acked
/// messages above it and the unacked below it, as on a new database.
#[test]
fn a_database_from_before_the_recipient_index_is_upgraded_and_read_above_a_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let mut s = Store::new(open(&path));
    s.register("alice", "password").expect("register");
    s.register("bob", "password").expect("register");
    let seqs: Vec<u64> = (1..=4)
        .map(|i| s.send("alice", "bob", i, "hi").expect("store").delivery.seq)
        .collect();
    s.mark_delivered("bob", vec![seqs[0], seqs[2]]);
    drop(s);
    rewind(&path, 3);

    let mut s = Store::new(open(&path));
    assert_eq!(s.db.schema_version().expect("version"), SCHEMA_VERSION);
    let page = s.mailbox_page("bob", 0, Some(seqs[1]), 9, u64::MAX);
    let got: Vec<u64> = page.messages.iter().map(|d| d.seq).collect();
    assert_eq!(got, [seqs[1], seqs[2], seqs[3]]);
    assert_eq!(page.high, seqs[3]);
    drop(s);
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let plan: String = raw
        .query_row(
            "EXPLAIN QUERY PLAN SELECT max(seq) FROM messages WHERE recipient = 'bob'",
            [],
            |row| row.get(3),
        )
        .expect("plan");
    assert!(plan.contains("messages_recipient"), "{plan}");
}

/// A database written before names were case-insensitive (schema 1) with a mixed-case name:
/// opening it folds the name everywhere it is stored. Two accounts differing only in case
/// cannot be folded into one, and the server refuses to start, naming them.
#[test]
fn names_stored_before_case_folding_are_folded_and_collisions_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    drop(open(&path));
    let as_schema_1 = |rows: &str| {
        rewind(&path, 1);
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        raw.execute_batch(rows).expect("rows");
    };
    as_schema_1(
        "INSERT INTO accounts VALUES ('Alice', 'x', 0), ('bob', 'x', 0);
         INSERT INTO tokens (user, token_sha256, created_at_ms) VALUES ('Alice', x'01', 0);
         INSERT INTO contacts VALUES ('Alice', 'bob'), ('bob', 'Alice');
         INSERT INTO messages (sender, recipient, client_id, body, sent_at_ms)
             VALUES ('Alice', 'bob', 1, 'hi', 0), ('bob', 'Alice', 1, 'hello', 0);",
    );
    let db = open(&path);
    assert_eq!(db.schema_version().expect("version"), SCHEMA_VERSION);
    assert_eq!(db.users().expect("users"), vec![user("alice"), user("bob")]);
    drop(db);
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let mixed: i64 = raw
        .query_row(
            "SELECT (SELECT count(*) FROM tokens WHERE user <> lower(user))
                  + (SELECT count(*) FROM contacts WHERE contact <> lower(contact) OR user <> lower(user))
                  + (SELECT count(*) FROM messages WHERE sender <> lower(sender) OR recipient <> lower(recipient))",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(mixed, 0);
    drop(raw);

    as_schema_1("INSERT INTO accounts VALUES ('Carol', 'x', 0), ('carol', 'x', 0);");
    match Db::open(&path, &DbOptions::default()) {
        Err(e @ StoreError::CaseCollision(_)) => {
            assert!(e.to_string().contains("Carol and carol"), "{e}");
        }
        other => panic!("expected CaseCollision, got {other:?}"),
    }
}

/// A database from before contact groups (schema 4) with contacts: opening it puts every
/// contact in the default group, and groups can be made at once.
#[test]
fn a_database_from_before_groups_is_upgraded_with_every_contact_in_the_default_group() {
    use breeze_core::storage::GroupChange;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("breeze.db");
    let mut s = Store::new(open(&path));
    s.register("alice", "password").expect("register");
    s.register("bob", "password").expect("register");
    s.set_contact("alice", "bob", true).expect("contacts");
    drop(s);
    rewind(&path, 4);

    let mut s = Store::new(open(&path));
    assert_eq!(s.db.schema_version().expect("version"), SCHEMA_VERSION);
    let account = s.password_login("alice", "password").expect("login");
    assert_eq!(account.contacts, vec![user("bob")]);
    assert_eq!(account.groups, Default::default());
    let change = StorageOp::ChangeGroups {
        user: user("alice"),
        change: GroupChange::Create {
            name: "家人".into(),
        },
        max_groups: 10,
    };
    match s.apply(change) {
        StorageResult::GroupsChanged(Ok(diff)) => assert_eq!(diff.groups[0].id, 1),
        other => panic!("{other:?}"),
    }
}
