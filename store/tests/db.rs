mod common;

use breeze_core::RequestId;
use breeze_core::message::{Attachment, AttachmentInfo, Credential};
use breeze_core::storage::{
    MAX_HISTORY, MAX_TOKENS_PER_USER, StorageError, StorageOp, StorageResult,
};
use breeze_store::{
    Db, DbOptions, HashCost, Hasher, SCHEMA_VERSION, StoreError, Synchronous, TOKEN_LEN,
};
use common::{NOW, Store, user};

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

#[test]
fn register_and_log_in_with_a_password() {
    let mut s = Store::memory();
    assert_eq!(s.register("bob", "hunter2hunter2"), Ok(()));
    assert_eq!(s.register("alice", "correct horse"), Ok(()));
    assert_eq!(
        s.register("alice", "another one"),
        Err(StorageError::UserTaken)
    );
    assert_eq!(
        s.db.users().expect("users"),
        vec![user("alice"), user("bob")]
    );

    let account = s.password_login("alice", "correct horse").expect("login");
    assert!(account.contacts.is_empty());
    assert_eq!(account.resume_token.len(), TOKEN_LEN);
    let again = s.password_login("alice", "correct horse").expect("login");
    assert_ne!(account.resume_token, again.resume_token);

    assert_eq!(
        s.password_login("alice", "wrong horse"),
        Err(StorageError::BadCredentials)
    );
    assert_eq!(
        s.password_login("carol", "correct horse"),
        Err(StorageError::BadCredentials)
    );
}

#[test]
fn resume_tokens_are_rotated_and_die_with_a_password_change() {
    let mut s = Store::memory();
    s.register("alice", "old password").expect("register");
    let t1 = s
        .password_login("alice", "old password")
        .expect("login")
        .resume_token;

    let t2 = s
        .login("alice", Credential::Token(t1.clone()))
        .expect("token login")
        .resume_token;
    // Until t2 is used, t1 still works: its LoginOk might have been lost.
    let t2b = s
        .login("alice", Credential::Token(t1.clone()))
        .expect("t1 again")
        .resume_token;
    let t3 = s
        .login("alice", Credential::Token(t2b.clone()))
        .expect("t2b login")
        .resume_token;
    // Using t2b proved it arrived: t1 and its other successor t2 are spent.
    assert_eq!(
        s.login("alice", Credential::Token(t1.clone())),
        Err(StorageError::BadCredentials)
    );
    assert_eq!(
        s.login("alice", Credential::Token(t2)),
        Err(StorageError::BadCredentials)
    );

    // Tokens belong to one user, and have one length.
    s.register("bob", "bob's password").expect("register");
    assert_eq!(
        s.login("bob", Credential::Token(t3.clone())),
        Err(StorageError::BadCredentials)
    );
    assert_eq!(
        s.login("alice", Credential::Token(t3[..16].to_vec())),
        Err(StorageError::BadCredentials)
    );

    assert_eq!(
        s.change_password("alice", "wrong", "new password"),
        Err(StorageError::BadCredentials)
    );
    assert!(s.login("alice", Credential::Token(t3.clone())).is_ok());
    let t4 = s
        .password_login("alice", "old password")
        .expect("login")
        .resume_token;
    assert_eq!(
        s.change_password("alice", "old password", "new password"),
        Ok(())
    );
    for token in [t3, t4] {
        assert_eq!(
            s.login("alice", Credential::Token(token)),
            Err(StorageError::BadCredentials)
        );
    }
    assert_eq!(
        s.password_login("alice", "old password"),
        Err(StorageError::BadCredentials)
    );
    assert!(s.password_login("alice", "new password").is_ok());
    assert_eq!(
        s.change_password("nobody", "x", "y"),
        Err(StorageError::BadCredentials)
    );
}

#[test]
fn only_the_newest_tokens_are_kept() {
    let mut s = Store::memory();
    s.register("alice", "password").expect("register");
    let tokens: Vec<Vec<u8>> = (0..MAX_TOKENS_PER_USER + 2)
        .map(|_| {
            s.password_login("alice", "password")
                .expect("login")
                .resume_token
        })
        .collect();
    for (i, token) in tokens.into_iter().enumerate() {
        let kept = i >= 2;
        assert_eq!(
            s.login("alice", Credential::Token(token)).is_ok(),
            kept,
            "token {i}"
        );
    }
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
fn contacts_are_added_removed_and_checked() {
    let mut s = Store::memory();
    for name in ["alice", "bob", "carol"] {
        s.register(name, "password").expect("register");
    }
    assert_eq!(s.set_contact("alice", "carol", true), Ok(()));
    assert_eq!(s.set_contact("alice", "bob", true), Ok(()));
    assert_eq!(s.set_contact("alice", "bob", true), Ok(()));
    assert_eq!(
        s.set_contact("alice", "nobody", true),
        Err(StorageError::NoSuchUser)
    );
    let account = s.password_login("alice", "password").expect("login");
    assert_eq!(account.contacts, vec![user("bob"), user("carol")]);

    assert_eq!(s.set_contact("alice", "carol", false), Ok(()));
    assert_eq!(s.set_contact("alice", "carol", false), Ok(()));
    let account = s.password_login("alice", "password").expect("login");
    assert_eq!(account.contacts, vec![user("bob")]);
    assert!(
        s.password_login("bob", "password")
            .expect("login")
            .contacts
            .is_empty()
    );
}

/// Many contacts in one request: added and removed together, or, if one addition names no
/// user, nothing at all.
#[test]
fn many_contacts_change_in_one_request_all_or_nothing() {
    let mut s = Store::memory();
    for name in ["alice", "bob", "carol", "dave"] {
        s.register(name, "password").expect("register");
    }
    assert_eq!(s.set_contact("alice", "dave", true), Ok(()));
    assert_eq!(
        s.set_contacts(
            "alice",
            vec![user("bob"), user("carol"), user("nobody")],
            vec![user("dave")]
        ),
        Err(StorageError::NoSuchUser)
    );
    let account = s.password_login("alice", "password").expect("login");
    assert_eq!(account.contacts, vec![user("dave")], "nothing changed");

    assert_eq!(
        s.set_contacts(
            "alice",
            vec![user("bob"), user("carol")],
            vec![user("dave")]
        ),
        Ok(())
    );
    let account = s.password_login("alice", "password").expect("login");
    assert_eq!(account.contacts, vec![user("bob"), user("carol")]);
}

#[test]
fn a_resent_message_returns_the_first_copy() {
    let mut s = Store::memory();
    s.register("alice", "password").expect("register");
    s.register("bob", "password").expect("register");
    s.register("carol", "password").expect("register");

    let first = s.send("alice", "bob", u64::MAX, "hello").expect("store");
    assert!(!first.duplicate);
    assert_eq!(first.to, user("bob"));
    assert_eq!(first.delivery.id, u64::MAX);

    let again = s
        .send("alice", "carol", u64::MAX, "changed")
        .expect("store");
    assert!(again.duplicate);
    assert_eq!(again.to, user("bob"));
    assert_eq!(again.delivery, first.delivery);

    // Ids are per sender.
    let bobs = s.send("bob", "alice", u64::MAX, "hi").expect("store");
    assert!(!bobs.duplicate);
    assert!(bobs.delivery.seq > first.delivery.seq);

    assert_eq!(
        s.send("alice", "nobody", 1, "hello?"),
        Err(StorageError::NoSuchUser)
    );
    assert_eq!(s.mailbox("bob").len(), 1);
}

#[test]
fn mailbox_is_in_seq_order_and_only_the_recipient_marks_it() {
    let mut s = Store::memory();
    for name in ["alice", "bob", "carol"] {
        s.register(name, "password").expect("register");
    }
    let attachment = Attachment {
        mime: "image/png".to_owned(),
        name: "cat.png".to_owned(),
        data: vec![1, 2, 3, 4],
    };
    let a = s.send("alice", "bob", 1, "one").expect("store").delivery;
    let b = s
        .send_with("carol", "bob", 1, "two", Some(attachment.clone()))
        .expect("store")
        .delivery;
    let c = s.send("alice", "bob", 2, "three").expect("store").delivery;
    let to_carol = s
        .send("alice", "carol", 3, "for carol")
        .expect("store")
        .delivery;
    assert_eq!(b.attachment, Some(attachment));
    assert_eq!(a.sent_at_ms, NOW + 4);

    assert_eq!(s.mailbox("bob"), vec![a.clone(), b.clone(), c.clone()]);

    // Bob cannot mark Carol's message; unknown and absurd seqs change nothing.
    s.mark_delivered("bob", vec![b.seq, to_carol.seq, 999_999, u64::MAX]);
    assert_eq!(s.mailbox("bob"), vec![a.clone(), c.clone()]);
    assert_eq!(s.mailbox("carol"), vec![to_carol]);
    s.mark_delivered("bob", vec![a.seq, c.seq]);
    assert!(s.mailbox("bob").is_empty());
}

#[test]
fn the_mailbox_is_read_in_pages_by_count_and_bytes() {
    let mut s = Store::memory();
    for name in ["alice", "bob"] {
        s.register(name, "password").expect("register");
    }
    let seqs: Vec<u64> = (0..5)
        .map(|i| {
            s.send("alice", "bob", i, &"x".repeat(100))
                .expect("store")
                .delivery
                .seq
        })
        .collect();
    let page = s.mailbox_page("bob", 0, 2, u64::MAX);
    assert_eq!(
        page.messages.iter().map(|d| d.seq).collect::<Vec<_>>(),
        seqs[..2]
    );
    assert!(page.more);
    let page = s.mailbox_page("bob", seqs[1], 2, 250);
    assert_eq!(
        page.messages.iter().map(|d| d.seq).collect::<Vec<_>>(),
        seqs[2..4]
    );
    assert!(page.more);
    let page = s.mailbox_page("bob", seqs[3], 2, 50);
    assert_eq!(
        page.messages.len(),
        1,
        "one message even above the byte budget"
    );
    assert!(!page.more);
    assert!(s.mailbox_page("bob", seqs[4], 2, 50).messages.is_empty());
}

#[test]
fn history_pages_newest_first_through_one_conversation() {
    let mut s = Store::memory();
    for name in ["alice", "bob", "carol"] {
        s.register(name, "password").expect("register");
    }
    let mut seqs = Vec::new();
    for i in 0..10u64 {
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        seqs.push(
            s.send(from, to, i, &format!("m{i}"))
                .expect("store")
                .delivery
                .seq,
        );
        s.send("alice", "carol", 100 + i, "elsewhere")
            .expect("store");
    }
    let pdf = Attachment {
        mime: "application/pdf".to_owned(),
        name: "doc.pdf".to_owned(),
        data: vec![0; 1234],
    };
    let with_file = s
        .send_with("bob", "alice", 50, "file", Some(pdf))
        .expect("store")
        .delivery
        .seq;

    let page = s.history("alice", "bob", None, 4);
    assert_eq!(page[0].seq, with_file);
    assert_eq!(
        page[0].attachment,
        Some(AttachmentInfo {
            mime: "application/pdf".to_owned(),
            name: "doc.pdf".to_owned(),
            size: 1234,
        })
    );
    assert_eq!(
        page.iter().skip(1).map(|h| h.seq).collect::<Vec<_>>(),
        vec![seqs[9], seqs[8], seqs[7]]
    );
    assert_eq!(
        (page[1].from.as_str(), page[1].to.as_str()),
        ("bob", "alice")
    );
    assert_eq!(page[1].body, "m9");

    // The same conversation from the other side, paged by `before`.
    let next = s.history("bob", "alice", Some(page[3].seq), 100);
    assert_eq!(
        next.iter().map(|h| h.seq).rev().collect::<Vec<_>>(),
        seqs[..7].to_vec()
    );
    assert!(s.history("alice", "bob", Some(seqs[0]), 100).is_empty());
    assert!(s.history("alice", "bob", None, 0).is_empty());
    assert_eq!(s.history("carol", "alice", None, u16::MAX).len(), 10);
    assert!(s.history("bob", "carol", None, 10).is_empty());

    s.send("alice", "alice", 77, "note to self").expect("store");
    let notes = s.history("alice", "alice", None, 10);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].body, "note to self");
}

#[test]
fn history_is_capped() {
    let mut s = Store::memory();
    s.register("alice", "password").expect("register");
    s.register("bob", "password").expect("register");
    let ops = (0..600)
        .map(|i| {
            (
                RequestId(i),
                StorageOp::StoreMessage {
                    from: user("alice"),
                    to: user("bob"),
                    id: i,
                    body: String::new(),
                    attachment: None,
                },
            )
        })
        .collect();
    let results = s.db.apply_batch(ops, NOW, &s.hasher);
    assert!(
        results
            .iter()
            .all(|(_, r)| matches!(r, StorageResult::MessageStored(Ok(_))))
    );
    assert_eq!(
        s.history("alice", "bob", None, u16::MAX).len(),
        usize::from(MAX_HISTORY)
    );
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
