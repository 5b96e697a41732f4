//! The schema, as an append-only list of migrations, and the `schema_version` table that
//! counts how many have been applied. A step is never edited once released, only followed by
//! another.
//!
//! Several server nodes share one database and may start at once: migrating runs in one
//! transaction under an advisory lock keyed by the schema, so exactly one node applies each
//! step and the others find it done; a crash leaves the database at the old version (DDL is
//! transactional in PostgreSQL).

use crate::error::PgError;
use deadpool_postgres::Client;

/// Migration `i` takes a database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, resume tokens, contacts, messages, the message sequence.
    r#"
    -- COLLATE "C": names compare bytewise, as `UserId`'s `Ord` does, whatever the database's
    -- locale; contacts and the user directory come back in that order.
    CREATE TABLE accounts (
        name          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
        password_hash TEXT   NOT NULL,
        created_at_ms BIGINT NOT NULL
    );

    -- Only the SHA-256 of a token is kept, so a copy of the database logs nobody in.
    -- `parent` is the token this one was issued for; it stays valid until this one is used.
    CREATE TABLE tokens (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name          TEXT COLLATE "C" NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        token_sha256  BYTEA  NOT NULL UNIQUE,
        parent        BIGINT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX tokens_by_user ON tokens(name, id);

    CREATE TABLE contacts (
        owner   TEXT COLLATE "C" NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        contact TEXT COLLATE "C" NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        PRIMARY KEY (owner, contact)
    );

    -- The last seq handed out: one row, updated (once per batch, for all its messages) in the
    -- transaction that stores messages and locked by it until commit. Two nodes storing at once therefore commit their seqs in
    -- order: a reader never sees seq n+1 before seq n, which the core's mailbox floor (a live
    -- delivery at or below what a mailbox read returned is dropped) depends on. A PostgreSQL
    -- SEQUENCE would hand out unique numbers too, but commit them in any order.
    CREATE TABLE message_seq (
        singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        last      BIGINT  NOT NULL
    );
    INSERT INTO message_seq (last) VALUES (0);

    -- client_id holds the sender's u64 id bit-cast to i64. Bodies and attachment names are
    -- bytes (UTF-8 checked on the way out): PostgreSQL's TEXT refuses NUL, SQLite's does not.
    CREATE TABLE messages (
        seq             BIGINT PRIMARY KEY,
        sender          TEXT COLLATE "C" NOT NULL REFERENCES accounts(name),
        recipient       TEXT COLLATE "C" NOT NULL REFERENCES accounts(name),
        client_id       BIGINT  NOT NULL,
        body            BYTEA   NOT NULL,
        attachment_mime BYTEA,
        attachment_name BYTEA,
        attachment_data BYTEA,
        sent_at_ms      BIGINT  NOT NULL,
        delivered       BOOLEAN NOT NULL DEFAULT FALSE,
        UNIQUE (sender, client_id)
    );
    -- Partial: delivered messages, the vast majority, drop out of the mailbox index.
    CREATE INDEX messages_mailbox ON messages(recipient, seq) WHERE NOT delivered;
    -- One range scan per conversation, whichever side sent each message.
    CREATE INDEX messages_history
        ON messages(LEAST(sender, recipient), GREATEST(sender, recipient), seq);
    "#,
    // 2: an administrator can ban an account (`breeze admin ban`): the credential is still
    // checked, the login refused. Existing accounts are not banned.
    r#"
    ALTER TABLE accounts ADD COLUMN banned BOOLEAN NOT NULL DEFAULT FALSE;
    "#,
    // 3: a live session reads every message above its login's high-water mark, acked by a
    // sibling device or not (`LoadMailbox::all_above`), and the mark is the recipient's
    // highest seq: both are range scans of all of a recipient's messages, which the partial
    // `messages_mailbox` (unacked only) cannot serve.
    r#"
    CREATE INDEX messages_recipient ON messages(recipient, seq);
    "#,
    // 4: seqs from a sequence, visible in order per recipient (the mailbox locks: schema 9), not
    // from the `message_seq` row that every message of the cluster queued for until the
    // previous one's commit. The sequence goes on from the row's last seq. The row is dropped,
    // not left behind: a node of an older build still running would draw seqs from it that
    // the sequence hands out too; without it that node's messages fail (their clients send
    // them again, through an upgraded node) instead.
    r#"
    CREATE SEQUENCE message_seqs AS BIGINT;
    SELECT setval('message_seqs', last + 1, false) FROM message_seq;
    DROP TABLE message_seq;
    "#,
    // 5: contact groups (protocol version 2). A contact's group is a column of its contact
    // row (0: the default group, never stored), so a contact taken off the list leaves its
    // group with it. `accounts.last_group` numbers a user's groups (a deleted group's id is
    // never handed out again) and its row is the lock that serialises one user's group
    // changes across nodes. Names are bytes, as message bodies are.
    r#"
    CREATE TABLE contact_groups (
        owner    TEXT COLLATE "C" NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        id       BIGINT NOT NULL CHECK (id > 0),
        name     BYTEA  NOT NULL,
        position BIGINT NOT NULL,
        PRIMARY KEY (owner, id),
        UNIQUE (owner, name)
    );
    ALTER TABLE contacts ADD COLUMN group_id BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN last_group BIGINT NOT NULL DEFAULT 0;
    "#,
    // 6: profiles (protocol version 2), as in the SQLite store. No foreign key from
    // `avatar_sha256` (see `profiles.rs`). Names and signatures are TEXT: the core refuses
    // control characters, NUL among them.
    r#"
    CREATE TABLE avatars (
        sha256 BYTEA PRIMARY KEY,
        mime   TEXT  NOT NULL,
        data   BYTEA NOT NULL
    );
    CREATE TABLE profiles (
        name          TEXT COLLATE "C" PRIMARY KEY REFERENCES accounts(name) ON DELETE CASCADE,
        rev           BIGINT NOT NULL,
        display_name  TEXT   NOT NULL,
        signature     TEXT   NOT NULL,
        avatar_sha256 BYTEA
    );
    CREATE INDEX profiles_by_avatar ON profiles(avatar_sha256) WHERE avatar_sha256 IS NOT NULL;
    "#,
    // 7: rooms (protocol version 3): a room's messages stored once, a row per member with
    // role and read cursor. `rooms.last_seq` numbers a room's messages: the storing
    // transaction updates it and holds its lock to commit, so a room's seqs commit in order
    // across nodes, like `message_seq`'s. Names and bodies are bytes, as in `messages`.
    r#"
    CREATE TABLE rooms (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name          BYTEA  NOT NULL,
        last_seq      BIGINT NOT NULL DEFAULT 0,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE room_members (
        room     BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        name     TEXT COLLATE "C" NOT NULL REFERENCES accounts(name) ON DELETE CASCADE,
        role     SMALLINT NOT NULL CHECK (role IN (0, 1, 2)),
        read_seq BIGINT NOT NULL,
        PRIMARY KEY (room, name)
    );
    CREATE INDEX room_members_by_user ON room_members(name, room);
    CREATE TABLE room_messages (
        room       BIGINT NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
        seq        BIGINT NOT NULL,
        sender     TEXT COLLATE "C" NOT NULL REFERENCES accounts(name),
        client_id  BIGINT NOT NULL,
        body       BYTEA  NOT NULL,
        sent_at_ms BIGINT NOT NULL,
        PRIMARY KEY (room, seq),
        UNIQUE (room, sender, client_id)
    );
    "#,
    // 8: the mailbox (unacked messages) as a table of its own, and no foreign keys on
    // `messages`. Measured at 5,000 cross-node msg/s (BENCHMARKS.md): PostgreSQL spent more CPU
    // per message than the three nodes together, and its WAL said why: an ack was a non-HOT
    // UPDATE of the whole message row (`delivered` is named by the partial mailbox index), so
    // it wrote a new row version and four index entries; and each insert's two foreign-key
    // checks locked both account rows (a WAL record each, a multixact when two nodes lock one
    // row at once). Now a stored message is a row in `messages` and one in `mailbox`, and an
    // ack deletes the latter: no index entry written. The foreign keys guarded nothing the
    // store does not already: the writer inserts only rows whose sender and recipient
    // exist (`EXISTS`, which takes no lock), and this store never deletes an account. A node
    // of an older build still running must not store a message either: its insert would leave
    // the message out of `mailbox`, so an offline recipient would never be owed it. The
    // sequence its inserts draw seqs from is renamed, so they fail (the sender is not told
    // `Sent` and sends again, through an upgraded node), as its acks and mailbox reads do;
    // the seqs go on where they were.
    r#"
    ALTER SEQUENCE message_seqs RENAME TO message_seqs_8;
    CREATE TABLE mailbox (
        recipient TEXT COLLATE "C" NOT NULL,
        seq       BIGINT NOT NULL,
        PRIMARY KEY (recipient, seq)
    );
    INSERT INTO mailbox (recipient, seq) SELECT recipient, seq FROM messages WHERE NOT delivered;
    DROP INDEX messages_mailbox;
    ALTER TABLE messages
        DROP COLUMN delivered,
        DROP CONSTRAINT messages_sender_fkey,
        DROP CONSTRAINT messages_recipient_fkey;
    "#,
    // 9: a batch's messages and acks in one statement, `breeze_write_batch` (`ops::write_batch`),
    // doing what the writer's flight sent as four: the same SQL, in the same order, in one
    // transaction. Measured at 5,000 cross-node msg/s (BENCHMARKS.md): a flight carried two or
    // three messages, and each of its statements was an answer the node's connection task was
    // woken for; in one statement the nodes spent 5–15 % less CPU a message, and the median
    // was lower in 13 of 14 alternated pairs of runs. Nodes of schema 8 still running keep
    // working: the tables are unchanged.
    //
    // What each step is for:
    // - Each recipient's mailbox is locked until the commit by a transaction-level advisory lock
    //   (in PostgreSQL's lock table: no row written, nothing logged) keyed by the schema and
    //   the recipient's name, all in one order so that two batches never wait for each other
    //   crosswise, and before any row, so that no transaction holds a message row another
    //   waits for while it waits for a mailbox. A message to one of them stored through
    //   another node waits, then draws its seq after this batch's and commits after it: a
    //   recipient's seqs become visible in order (`core::storage`), which its sessions'
    //   mailbox reads above their floor rely on, while messages to different recipients, from
    //   any node, commit side by side, sharing WAL flushes. Two names with one hash share a
    //   lock: they only wait for each other.
    // - The highs (each recipient's latest seq before the batch, for `Stored::prev`) are read
    //   after the locks, by a statement of its own: a function that is VOLATILE takes a fresh
    //   snapshot for each statement, so this one sees every message committed by whoever held a
    //   lock before us.
    // - The messages go in in one insert, each row checked as a single-row insert would be:
    //   the users by `EXISTS` (a message naming an unknown user is skipped, not an error that
    //   would abort the transaction and every other client's write in it; accounts are never
    //   deleted here, so that is all the integrity `messages` needs), a resend skipped by the
    //   `(sender, client_id)` key, also one resent within the batch, as the rows go in in
    //   `ord` order. Seqs are drawn after the sort (PostgreSQL evaluates a volatile output
    //   column after the ORDER BY), so a batch's seqs follow its order; a skipped row may still
    //   have drawn one (seqs may skip, as SQLite's AUTOINCREMENT's do). Each stored message also
    //   goes into its recipient's `mailbox`, until acked.
    // - Acks take the messages out of their mailboxes (the messages stay, for history), each
    //   (recipient, seq) an index probe, never a scan (`PgStore::open`).
    // - `durable = false` (a batch of acks alone) commits without waiting for the WAL flush.
    // The highs come back as rows with `o_sender` NULL, the stored messages with it set.
    r#"
    CREATE FUNCTION breeze_write_batch(
        senders TEXT[], recipients TEXT[], ids BIGINT[], bodies BYTEA[], mimes BYTEA[],
        att_names BYTEA[], att_data BYTEA[], sent_ats BIGINT[],
        ack_users TEXT[], ack_seqs BIGINT[], durable BOOLEAN)
    RETURNS TABLE (o_recipient TEXT, o_seq BIGINT, o_sender TEXT, o_client_id BIGINT)
    LANGUAGE plpgsql VOLATILE AS $fn$
    BEGIN
        IF NOT durable THEN
            PERFORM set_config('synchronous_commit', 'off', true);
        END IF;
        IF cardinality(recipients) > 0 THEN
            PERFORM pg_advisory_xact_lock(hashtext('breeze-mailbox:' || current_schema()), keys.k)
            FROM (SELECT DISTINCT hashtext(r) AS k FROM unnest(recipients) AS r ORDER BY k) AS keys;
            RETURN QUERY SELECT d.r, (SELECT max(m.seq) FROM messages m WHERE m.recipient = d.r),
                                NULL::TEXT, NULL::BIGINT
                FROM (SELECT DISTINCT r FROM unnest(recipients) AS r) AS d;
            RETURN QUERY WITH stored AS (
                INSERT INTO messages (seq, sender, recipient, client_id, body,
                                      attachment_mime, attachment_name, attachment_data, sent_at_ms)
                SELECT nextval('message_seqs_8'), m.sender, m.recipient, m.client_id,
                       m.body, m.mime, m.name, m.data, m.sent_at
                FROM unnest(senders, recipients, ids, bodies, mimes, att_names, att_data, sent_ats)
                     WITH ORDINALITY AS m(sender, recipient, client_id, body, mime, name, data,
                                          sent_at, ord)
                WHERE EXISTS (SELECT 1 FROM accounts a WHERE a.name = m.sender)
                  AND EXISTS (SELECT 1 FROM accounts a WHERE a.name = m.recipient)
                ORDER BY m.ord
                ON CONFLICT (sender, client_id) DO NOTHING
                RETURNING messages.seq, messages.sender, messages.client_id, messages.recipient),
              waiting AS (INSERT INTO mailbox (recipient, seq)
                          SELECT s.recipient, s.seq FROM stored s)
              SELECT NULL::TEXT, s.seq, s.sender, s.client_id FROM stored s;
        END IF;
        IF cardinality(ack_users) > 0 THEN
            DELETE FROM mailbox USING unnest(ack_users, ack_seqs) AS a(r, s)
            WHERE mailbox.recipient = a.r AND mailbox.seq = a.s;
        END IF;
    END
    $fn$;
    "#,
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema's current version; 0 before the first migration.
pub(crate) async fn version(client: &Client) -> Result<i64, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM schema_version", &[])
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// Brings the schema up to `SCHEMA_VERSION` in one transaction, or refuses a schema newer
/// than this build.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    // A search_path that names no existing schema leaves nowhere to create the tables, and
    // PostgreSQL would say only "no schema has been selected to create in".
    let row = tx
        .query_one(
            "SELECT current_schema(), current_setting('search_path')",
            &[],
        )
        .await?;
    if row.get::<_, Option<String>>(0).is_none() {
        return Err(PgError::NoSchema {
            search_path: row.get(1),
        });
    }
    // Nodes starting together wait here for each other; keyed by the schema so that
    // databases in separate schemas (tests) do not.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('breeze-migrate:' || current_schema()))",
        &[],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
             version   BIGINT  NOT NULL
         )",
    )
    .await?;
    let found: i64 = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if found > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    let from = usize::try_from(found).map_err(|_| {
        PgError::Corrupt(format!(
            "schema version {found}, which no Breeze build writes"
        ))
    })?;
    for step in &MIGRATIONS[from..] {
        tx.batch_execute(step).await?;
    }
    if found < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)
             ON CONFLICT (singleton) DO UPDATE SET version = EXCLUDED.version",
            &[&SCHEMA_VERSION],
        )
        .await?;
    }
    tx.commit().await?;
    if found < SCHEMA_VERSION {
        tracing::info!(
            from = found,
            to = SCHEMA_VERSION,
            "migrated PostgreSQL schema"
        );
    }
    Ok(())
}
