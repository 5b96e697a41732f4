//! The schema, as an append-only list of migrations. `PRAGMA user_version` counts how many
//! have been applied; a step is never edited once released, only followed by another.

use crate::error::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// Migration `i` takes a database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, resume tokens, contacts, messages.
    "
    CREATE TABLE accounts (
        user          TEXT    NOT NULL PRIMARY KEY,
        password_hash TEXT    NOT NULL,
        created_at_ms INTEGER NOT NULL
    ) STRICT;

    -- Only the SHA-256 of a token is kept, so a copy of the database logs nobody in.
    -- `parent` is the token this one was issued for; it stays valid until this one is used,
    -- so a client whose LoginOk got lost can still resume with the token it has.
    CREATE TABLE tokens (
        id            INTEGER NOT NULL PRIMARY KEY,
        user          TEXT    NOT NULL REFERENCES accounts(user) ON DELETE CASCADE,
        token_sha256  BLOB    NOT NULL UNIQUE,
        parent        INTEGER,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX tokens_by_user ON tokens(user, id);

    CREATE TABLE contacts (
        user    TEXT NOT NULL REFERENCES accounts(user) ON DELETE CASCADE,
        contact TEXT NOT NULL REFERENCES accounts(user) ON DELETE CASCADE,
        PRIMARY KEY (user, contact)
    ) STRICT, WITHOUT ROWID;

    -- AUTOINCREMENT: a seq is never reused, even for a deleted newest row, because clients
    -- acknowledge and page history by seq.
    -- client_id holds the sender's u64 id bit-cast to i64: SQLite integers are signed.
    CREATE TABLE messages (
        seq             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        sender          TEXT    NOT NULL REFERENCES accounts(user),
        recipient       TEXT    NOT NULL REFERENCES accounts(user),
        client_id       INTEGER NOT NULL,
        body            TEXT    NOT NULL,
        attachment_mime TEXT,
        attachment_name TEXT,
        attachment_data BLOB,
        sent_at_ms      INTEGER NOT NULL,
        delivered       INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
        UNIQUE (sender, client_id)
    ) STRICT;
    -- Partial: delivered messages, the vast majority, drop out of the mailbox index.
    CREATE INDEX messages_mailbox ON messages(recipient, seq) WHERE delivered = 0;
    -- One range scan per conversation, whichever side sent each message.
    CREATE INDEX messages_history
        ON messages(min(sender, recipient), max(sender, recipient), seq);
    ",
    // 2: user names are case-insensitive (`UserId` folds them to lowercase), so names stored
    // before are folded too. `migrate` first refuses a database where two accounts differ
    // only in case. Foreign keys are checked at commit, once every table agrees.
    "
    PRAGMA defer_foreign_keys = ON;
    UPDATE accounts SET user = lower(user) WHERE user <> lower(user);
    UPDATE tokens SET user = lower(user) WHERE user <> lower(user);
    UPDATE contacts SET user = lower(user), contact = lower(contact)
        WHERE user <> lower(user) OR contact <> lower(contact);
    UPDATE messages SET sender = lower(sender), recipient = lower(recipient)
        WHERE sender <> lower(sender) OR recipient <> lower(recipient);
    ",
    // 3: an administrator can ban an account (`breeze admin ban`, `breeze-server user ban`):
    // the credential is still checked, the login refused. Existing accounts are not banned.
    "
    ALTER TABLE accounts ADD COLUMN banned INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1));
    ",
    // 4: a live session reads every message above its login's high-water mark, acked by a
    // sibling device or not (`LoadMailbox::all_above`), and the mark is the recipient's
    // highest seq: both are range scans of all of a recipient's messages, which the partial
    // `messages_mailbox` (unacked only) cannot serve.
    "
    CREATE INDEX messages_recipient ON messages(recipient, seq);
    ",
    // 5: contact groups (protocol version 2). A contact's group is a column of its contact
    // row (0: the default group, never stored), so a contact taken off the list leaves its
    // group with it. `accounts.last_group` numbers a user's groups: a deleted group's id is
    // never handed out again, so a stale client cannot file a contact in its successor.
    "
    CREATE TABLE contact_groups (
        user     TEXT    NOT NULL REFERENCES accounts(user) ON DELETE CASCADE,
        id       INTEGER NOT NULL CHECK (id > 0),
        name     TEXT    NOT NULL,
        position INTEGER NOT NULL,
        PRIMARY KEY (user, id),
        UNIQUE (user, name)
    ) STRICT, WITHOUT ROWID;
    ALTER TABLE contacts ADD COLUMN group_id INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN last_group INTEGER NOT NULL DEFAULT 0;
    ",
    // 6: profiles (protocol version 2). One row per
    // user who ever set one; `rev` counts the changes, so of two cards the newer wins. An
    // avatar is kept once per SHA-256 however many profiles show it, and deleted with the
    // last profile that names it.
    "
    CREATE TABLE avatars (
        sha256 BLOB NOT NULL PRIMARY KEY,
        mime   TEXT NOT NULL,
        data   BLOB NOT NULL
    ) STRICT;
    CREATE TABLE profiles (
        user          TEXT    NOT NULL PRIMARY KEY REFERENCES accounts(user) ON DELETE CASCADE,
        rev           INTEGER NOT NULL,
        display_name  TEXT    NOT NULL,
        signature     TEXT    NOT NULL,
        avatar_sha256 BLOB    REFERENCES avatars(sha256)
    ) STRICT;
    CREATE INDEX profiles_by_avatar ON profiles(avatar_sha256) WHERE avatar_sha256 IS NOT NULL;
    ",
    // 7: rooms (protocol version 3): a room's messages are stored once (`room_messages`); each
    // member has a row with their role and read cursor, so a message costs one row however
    // many members are offline. `last_seq` on the room's row numbers its messages in commit
    // order. Member rows are looked up by room (the primary key) and by user (a login's
    // rooms, the rooms-per-user limit).
    "
    CREATE TABLE rooms (
        id            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
        name          TEXT    NOT NULL,
        last_seq      INTEGER NOT NULL DEFAULT 0,
        created_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE room_members (
        room     INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        user     TEXT    NOT NULL REFERENCES accounts(user) ON DELETE CASCADE,
        role     INTEGER NOT NULL CHECK (role IN (0, 1, 2)),
        read_seq INTEGER NOT NULL,
        PRIMARY KEY (room, user)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX room_members_by_user ON room_members(user, room);
    CREATE TABLE room_messages (
        room       INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        seq        INTEGER NOT NULL,
        sender     TEXT    NOT NULL REFERENCES accounts(user),
        client_id  INTEGER NOT NULL,
        body       TEXT    NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        PRIMARY KEY (room, seq),
        UNIQUE (room, sender, client_id)
    ) STRICT;
    ",
];

/// Accounts whose names differ only in case, which migration 2 cannot fold into one.
fn case_collisions(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT group_concat(user, ' and ') FROM accounts
         GROUP BY lower(user) HAVING count(*) > 1 ORDER BY lower(user)",
    )?;
    let found = stmt
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(found)
}

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the schema up to `SCHEMA_VERSION`, one transaction per step, so a crash leaves the
/// database at some whole version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        // Immediate, and the version read inside: another process opening the same file
        // must not run the same step twice.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version = user_version(&tx)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        let Ok(index) = usize::try_from(version) else {
            return Err(StoreError::SchemaUnknown(version));
        };
        let Some(step) = MIGRATIONS.get(index) else {
            return Ok(());
        };
        if index == 1 {
            let collisions = case_collisions(&tx)?;
            if !collisions.is_empty() {
                return Err(StoreError::CaseCollision(collisions));
            }
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "migrated database schema");
    }
}
