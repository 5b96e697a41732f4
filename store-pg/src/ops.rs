//! What each storage request does to the database: the same semantics as breeze-store's
//! SQLite `ops.rs`, in PostgreSQL's SQL, written for several nodes writing at once.
//!
//! Every statement here runs at READ COMMITTED, which is enough because each write that
//! could race another node's is a single conditional statement the database arbitrates:
//! a name is taken by `INSERT … ON CONFLICT DO NOTHING` on the primary key, a password is
//! replaced by a compare-and-swap `UPDATE` (re-checked on the newest row version), a resent
//! message is found by the `(sender, client_id)` unique key, and seqs come from a sequence,
//! drawn under the recipients' mailbox locks (`breeze_write_batch`, `schema.rs`). What reads
//! and then writes — spending resume tokens — first locks the account's row, so two nodes
//! never spend the same token twice.
//!
//! Expected refusals (a taken name, an unknown user) are found by queries, never by a failed
//! statement: a failed statement aborts PostgreSQL's whole transaction, and with it a batch
//! of other clients' writes.

use crate::error::PgError;
use crate::groups;
use breeze_core::UserId;
use breeze_core::message::{Attachment, AttachmentInfo, Delivery, HistoryItem};
use breeze_core::storage::{
    Account, MAX_HISTORY, MAX_TOKENS_PER_USER, MailboxPage, StorageError, StorageResult, Stored,
};
use breeze_store::job::Finish;
use breeze_store::{Hasher, TOKEN_LEN};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Row;

/// Every registered user, sorted bytewise.
pub(crate) async fn users(c: &impl GenericClient) -> Result<Vec<UserId>, PgError> {
    let rows = c
        .query("SELECT name FROM accounts ORDER BY name", &[])
        .await?;
    rows.iter().map(|r| user_at(r, 0)).collect()
}

pub(crate) async fn user_exists(c: &impl GenericClient, user: &UserId) -> Result<bool, PgError> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM accounts WHERE name = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&user.as_str()]).await?.is_some())
}

pub(crate) async fn password_hash(
    c: &impl GenericClient,
    user: &UserId,
) -> Result<Option<String>, PgError> {
    let stmt = c
        .prepare_cached("SELECT password_hash FROM accounts WHERE name = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&user.as_str()])
        .await?
        .map(|r| r.get(0)))
}

/// Holds the account's row until the transaction ends: token logins and password changes of
/// one user, from any node, run one after another. `NO KEY`: storing messages to or from the
/// user (whose foreign keys take a key-share lock) need not wait.
async fn lock_account(c: &impl GenericClient, user: &UserId) -> Result<bool, PgError> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM accounts WHERE name = $1 FOR NO KEY UPDATE")
        .await?;
    Ok(c.query_opt(&stmt, &[&user.as_str()]).await?.is_some())
}

/// Writes what a `HashJob` decided; the caller's transaction makes it all or nothing.
pub(crate) async fn finish(
    c: &impl GenericClient,
    finish: Finish,
    now_ms: u64,
    hasher: &Hasher,
) -> Result<StorageResult, PgError> {
    use StorageResult as R;
    Ok(match finish {
        Finish::Register { user, hash } => {
            // Two nodes registering one name at once: the primary key lets one in.
            let stmt = c
                .prepare_cached(
                    "INSERT INTO accounts (name, password_hash, created_at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING",
                )
                .await?;
            let inserted = c
                .execute(&stmt, &[&user.as_str(), &hash, &ms_to_sql(now_ms)])
                .await?;
            R::Registered(if inserted == 1 {
                Ok(())
            } else {
                Err(StorageError::UserTaken)
            })
        }
        Finish::Login {
            user,
            verified,
            rehash,
            issue_token,
        } => {
            // The password may have changed while this one was being verified; a login with
            // the old password must not hand out a token that outlives the change.
            let new_hash = rehash.as_deref().unwrap_or(&verified);
            if !swap_hash(c, &user, &verified, new_hash).await? {
                R::Authenticated(Err(StorageError::BadCredentials))
            } else if is_banned(c, &user).await? {
                R::Authenticated(Ok(Account::banned()))
            } else if !issue_token {
                R::Authenticated(Ok(Account {
                    contacts: contacts(c, &user).await?,
                    resume_token: Vec::new(),
                    banned: false,
                    groups: groups::contact_groups(c, &user).await?,
                }))
            } else {
                R::Authenticated(Ok(login(c, &user, None, now_ms, hasher).await?))
            }
        }
        Finish::ChangePassword {
            user,
            verified,
            new_hash,
        } => {
            if swap_hash(c, &user, &verified, &new_hash).await? {
                let stmt = c
                    .prepare_cached("DELETE FROM tokens WHERE name = $1")
                    .await?;
                c.execute(&stmt, &[&user.as_str()]).await?;
                R::PasswordChanged(Ok(()))
            } else {
                R::PasswordChanged(Err(StorageError::BadCredentials))
            }
        }
        Finish::Done(result) => result,
    })
}

/// Replaces the hash only if it still is `expected`: whether it was. Locks the account's
/// row (the update does) for the rest of the transaction.
async fn swap_hash(
    c: &impl GenericClient,
    user: &UserId,
    expected: &str,
    new_hash: &str,
) -> Result<bool, PgError> {
    let stmt = c
        .prepare_cached(
            "UPDATE accounts SET password_hash = $3 WHERE name = $1 AND password_hash = $2",
        )
        .await?;
    Ok(c.execute(&stmt, &[&user.as_str(), &expected, &new_hash])
        .await?
        == 1)
}

fn sha256(token: &[u8]) -> Vec<u8> {
    Sha256::digest(token).to_vec()
}

/// A login by resume token, in the caller's transaction. The presented token stays valid
/// until the one issued now is used: if this LoginOk never reaches the client, it can still
/// resume with what it has.
pub(crate) async fn resume(
    c: &impl GenericClient,
    user: &UserId,
    token: &[u8],
    now_ms: u64,
    hasher: &Hasher,
) -> Result<Result<Account, StorageError>, PgError> {
    if token.len() != TOKEN_LEN || !lock_account(c, user).await? {
        return Ok(Err(StorageError::BadCredentials));
    }
    let stmt = c
        .prepare_cached("SELECT id, parent FROM tokens WHERE name = $1 AND token_sha256 = $2")
        .await?;
    let Some(found) = c
        .query_opt(&stmt, &[&user.as_str(), &sha256(token)])
        .await?
    else {
        return Ok(Err(StorageError::BadCredentials));
    };
    let (id, parent): (i64, Option<i64>) = (found.get(0), found.get(1));
    if is_banned(c, user).await? {
        // Refused: nothing is spent, so the device resumes as before after an unban.
        return Ok(Ok(Account::banned()));
    }
    if let Some(parent) = parent {
        // The client has this token, so it got the LoginOk that carried it: the token it was
        // issued for is spent, and so are its other successors, whose LoginOk got lost.
        let stmt = c
            .prepare_cached(
                "DELETE FROM tokens WHERE name = $1 AND (id = $2 OR (parent = $2 AND id <> $3))",
            )
            .await?;
        c.execute(&stmt, &[&user.as_str(), &parent, &id]).await?;
    }
    Ok(Ok(login(c, user, Some(id), now_ms, hasher).await?))
}

/// Issues a fresh resume token and reads the account. The caller holds the account's row
/// (`swap_hash` or `lock_account`), so trimming to the newest tokens races nobody.
async fn login(
    c: &impl GenericClient,
    user: &UserId,
    parent: Option<i64>,
    now_ms: u64,
    hasher: &Hasher,
) -> Result<Account, PgError> {
    let mut token = vec![0u8; TOKEN_LEN];
    hasher.fill_random(&mut token)?;
    let insert = c
        .prepare_cached(
            "INSERT INTO tokens (name, token_sha256, parent, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    c.execute(
        &insert,
        &[&user.as_str(), &sha256(&token), &parent, &ms_to_sql(now_ms)],
    )
    .await?;
    let trim = c
        .prepare_cached(
            "DELETE FROM tokens WHERE name = $1 AND id NOT IN
                 (SELECT id FROM tokens WHERE name = $1 ORDER BY id DESC LIMIT $2)",
        )
        .await?;
    c.execute(&trim, &[&user.as_str(), &(MAX_TOKENS_PER_USER as i64)])
        .await?;
    Ok(Account {
        contacts: contacts(c, user).await?,
        resume_token: token,
        banned: false,
        groups: groups::contact_groups(c, user).await?,
    })
}

/// Whether an administrator banned the account (false for an unknown one).
async fn is_banned(c: &impl GenericClient, user: &UserId) -> Result<bool, PgError> {
    let stmt = c
        .prepare_cached("SELECT banned FROM accounts WHERE name = $1")
        .await?;
    Ok(c.query_opt(&stmt, &[&user.as_str()])
        .await?
        .is_some_and(|r| r.get(0)))
}

/// Bans or unbans `user`: one conditional statement, so an unknown user is an answer, not
/// a failed statement.
pub(crate) async fn set_banned(
    c: &impl GenericClient,
    user: &UserId,
    banned: bool,
) -> Result<Result<(), StorageError>, PgError> {
    let stmt = c.prepare_cached(SET_BANNED).await?;
    Ok(
        if c.execute(&stmt, &[&user.as_str(), &banned]).await? == 1 {
            Ok(())
        } else {
            Err(StorageError::NoSuchUser)
        },
    )
}

async fn contacts(c: &impl GenericClient, user: &UserId) -> Result<Vec<UserId>, PgError> {
    let stmt = c
        .prepare_cached("SELECT contact FROM contacts WHERE owner = $1 ORDER BY contact")
        .await?;
    let rows = c.query(&stmt, &[&user.as_str()]).await?;
    rows.iter().map(|r| user_at(r, 0)).collect()
}

// All or nothing, in one statement: the user and every addition are checked (`missing`)
// before anything is written, and nothing after the checks can be refused. A name both added
// and removed ends up off the list, as adding then removing it would leave it.
const SET_CONTACTS: &str = "WITH missing AS (
        SELECT 1 FROM unnest(array_prepend($1::text, $2::text[])) AS n(name)
        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.name = n.name) LIMIT 1),
    added AS (
        INSERT INTO contacts (owner, contact)
        SELECT $1, n.name FROM unnest($2::text[]) AS n(name)
        WHERE NOT EXISTS (SELECT 1 FROM missing) AND NOT n.name = ANY($3::text[])
        ON CONFLICT DO NOTHING),
    removed AS (
        DELETE FROM contacts WHERE owner = $1 AND contact = ANY($3::text[])
          AND NOT EXISTS (SELECT 1 FROM missing))
    SELECT NOT EXISTS (SELECT 1 FROM missing)";

/// One statement, so that the writer can send it without waiting for an answer first
/// (`writer.rs`).
pub(crate) async fn set_contacts(
    c: &impl GenericClient,
    user: &UserId,
    add: &[UserId],
    remove: &[UserId],
) -> Result<Result<(), StorageError>, PgError> {
    let add: Vec<&str> = add.iter().map(UserId::as_str).collect();
    let remove: Vec<&str> = remove.iter().map(UserId::as_str).collect();
    let stmt = c.prepare_cached(SET_CONTACTS).await?;
    let known: bool = c
        .query_one(&stmt, &[&user.as_str(), &add, &remove])
        .await?
        .try_get(0)?;
    Ok(if known {
        Ok(())
    } else {
        Err(StorageError::NoSuchUser)
    })
}

const SET_BANNED: &str = "UPDATE accounts SET banned = $2 WHERE name = $1";

/// Prepares every statement the writer sends, so that sending them never waits for a
/// prepare: a statement prepared on first use inside a pipelined batch would let the ones
/// after it overtake it (`writer.rs`).
pub(crate) async fn prepare_writes(c: &impl GenericClient) -> Result<(), PgError> {
    for sql in [WRITE_BATCH, SET_CONTACTS, SET_BANNED] {
        c.prepare_cached(sql).await?;
    }
    Ok(())
}

/// The columns `delivery_at` reads, in its order.
macro_rules! delivery_columns {
    () => {
        "seq, sender, client_id, body, attachment_mime, attachment_name, attachment_data, \
         sent_at_ms, recipient"
    };
}

/// A row selected with `delivery_columns!`, and its recipient.
fn delivery_at(row: &Row) -> Result<(Delivery, UserId), PgError> {
    let mime: Option<Vec<u8>> = row.try_get(4)?;
    let attachment = match mime {
        Some(mime) => Some(Attachment {
            mime: text(mime)?,
            name: text(row.try_get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default())?,
            data: row.try_get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default(),
        }),
        None => None,
    };
    let delivery = Delivery {
        seq: u64_from_sql(row.try_get(0)?),
        from: user_at(row, 1)?,
        id: id_from_sql(row.try_get(2)?),
        body: text(row.try_get(3)?)?,
        attachment,
        sent_at_ms: u64_from_sql(row.try_get(7)?),
    };
    Ok((delivery, user_at(row, 8)?))
}

/// One `StoreMessage` of a batch that `write_batch` stores.
pub(crate) struct NewMessage<'a> {
    pub from: &'a UserId,
    pub to: &'a UserId,
    pub id: u64,
    pub body: &'a str,
    pub attachment: Option<&'a Attachment>,
    pub now_ms: u64,
}

/// A batch's messages and acks in one statement (`breeze_write_batch`, schema 9): the
/// recipients' mailbox locks, their highs read under them, the messages stored and the acked
/// seqs taken out of their mailboxes, in that order, in the caller's transaction or, alone, in
/// one of its own. `durable: false` lets that transaction commit without waiting for its WAL
/// flush (a batch of acks alone: `writer.rs`).
const WRITE_BATCH: &str = "SELECT o_recipient, o_seq, o_sender, o_client_id
    FROM breeze_write_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// What `write_batch` did: each recipient's highest seq before the batch, and the seq each
/// message was inserted at (`None`: stored before, `first_copy` has it, or naming an unknown
/// user), in the batch's order.
pub(crate) struct Written {
    pub highs: BTreeMap<String, u64>,
    pub inserted: Vec<Option<i64>>,
}

pub(crate) async fn write_batch(
    c: &impl GenericClient,
    run: &[NewMessage<'_>],
    marks: &[(&UserId, &[u64])],
    durable: bool,
) -> Result<Written, PgError> {
    let senders: Vec<&str> = run.iter().map(|m| m.from.as_str()).collect();
    let recipients: Vec<&str> = run.iter().map(|m| m.to.as_str()).collect();
    let ids: Vec<i64> = run.iter().map(|m| id_to_sql(m.id)).collect();
    let bodies: Vec<&[u8]> = run.iter().map(|m| m.body.as_bytes()).collect();
    let mimes: Vec<Option<&[u8]>> = run
        .iter()
        .map(|m| m.attachment.map(|a| a.mime.as_bytes()))
        .collect();
    let names: Vec<Option<&[u8]>> = run
        .iter()
        .map(|m| m.attachment.map(|a| a.name.as_bytes()))
        .collect();
    let data: Vec<Option<&[u8]>> = run
        .iter()
        .map(|m| m.attachment.map(|a| a.data.as_slice()))
        .collect();
    let sent_at: Vec<i64> = run.iter().map(|m| ms_to_sql(m.now_ms)).collect();
    let (ack_users, ack_seqs) = mark_pairs(marks);
    let stmt = c.prepare_cached(WRITE_BATCH).await?;
    let rows = c
        .query(
            &stmt,
            &[
                &senders,
                &recipients,
                &ids,
                &bodies,
                &mimes,
                &names,
                &data,
                &sent_at,
                &ack_users,
                &ack_seqs,
                &durable,
            ],
        )
        .await?;
    let mut highs = BTreeMap::new();
    // Each inserted row answers the first message of the run with its (sender, id).
    let mut inserted: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for row in &rows {
        let seq: Option<i64> = row.try_get(1)?;
        match row.try_get::<_, Option<String>>(0)? {
            Some(recipient) => {
                highs.insert(recipient, seq.map_or(0, u64_from_sql));
            }
            None => {
                let seq =
                    seq.ok_or_else(|| PgError::Corrupt("a stored message without a seq".into()))?;
                inserted.insert((row.try_get(2)?, row.try_get(3)?), seq);
            }
        }
    }
    Ok(Written {
        highs,
        inserted: senders
            .iter()
            .zip(&ids)
            .map(|(from, id)| inserted.remove(&((*from).to_owned(), *id)))
            .collect(),
    })
}

/// Each user's seqs as (user, seq) pairs, sorted and without repeats: two nodes marking
/// overlapping seqs lock the rows in the same order. A seq beyond i64 was never issued, so it
/// names nothing to mark.
fn mark_pairs<'a>(marks: &[(&'a UserId, &[u64])]) -> (Vec<&'a str>, Vec<i64>) {
    let pairs: BTreeSet<(&str, i64)> = marks
        .iter()
        .flat_map(|(user, seqs)| {
            seqs.iter()
                .filter_map(|&s| Some((user.as_str(), i64::try_from(s).ok()?)))
        })
        .collect();
    pairs.into_iter().unzip()
}

/// `message` as stored at `seq`, the recipient's previous message at `prev`.
pub(crate) fn stored(message: &NewMessage<'_>, seq: i64, prev: u64) -> Stored {
    Stored {
        to: message.to.clone(),
        delivery: Delivery {
            seq: u64_from_sql(seq),
            from: message.from.clone(),
            id: message.id,
            body: message.body.to_owned(),
            attachment: message.attachment.cloned(),
            sent_at_ms: u64_from_sql(ms_to_sql(message.now_ms)),
        },
        duplicate: false,
        prev: Some(prev),
    }
}

/// The first copy of `(from, id)`, for a `StoreMessage` that inserted nothing: stored before,
/// whatever this one says, or else nothing (an unknown user).
pub(crate) async fn first_copy(
    c: &impl GenericClient,
    from: &UserId,
    id: u64,
) -> Result<Result<Stored, StorageError>, PgError> {
    let first = c
        .prepare_cached(concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM messages WHERE sender = $1 AND client_id = $2"
        ))
        .await?;
    match c
        .query_opt(&first, &[&from.as_str(), &id_to_sql(id)])
        .await?
    {
        Some(row) => {
            let (delivery, to) = delivery_at(&row)?;
            Ok(Ok(Stored {
                to,
                delivery,
                duplicate: true,
                prev: None,
            }))
        }
        None => Ok(Err(StorageError::NoSuchUser)),
    }
}

/// One statement, so one snapshot: `high` is read with the page, never after it. Two range
/// scans, each on its index: the unacked messages up to the mark (the `mailbox` table, which
/// holds only those, each joined to its row in `messages`), then every message above it
/// (`messages_recipient`). A user with an empty page still gets a row, all NULL but `high`.
pub(crate) async fn mailbox(
    c: &impl GenericClient,
    user: &UserId,
    after: u64,
    all_above: Option<u64>,
    limit: u32,
    max_bytes: u64,
) -> Result<MailboxPage, PgError> {
    let stmt = c
        .prepare_cached(concat!(
            "WITH h AS (SELECT coalesce(max(seq), 0) AS high FROM messages WHERE recipient = $1),
                  m AS (SELECT coalesce($3::BIGINT, high) AS mark FROM h),
                  page AS (
                      (SELECT ",
            delivery_columns!(),
            " FROM mailbox JOIN messages USING (recipient, seq)
                       WHERE recipient = $1 AND seq > $2 AND seq <= (SELECT mark FROM m)
                       ORDER BY seq LIMIT $4)
                      UNION ALL
                      (SELECT ",
            delivery_columns!(),
            " FROM messages WHERE recipient = $1
                         AND seq > GREATEST($2, (SELECT mark FROM m))
                       ORDER BY seq LIMIT $4))
             SELECT page.*, h.high FROM h LEFT JOIN page ON TRUE ORDER BY page.seq LIMIT $4"
        ))
        .await?;
    // One row past the page tells whether more follow.
    let fetch = i64::from(limit.max(1)) + 1;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let all_above = all_above.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
    let rows = c
        .query(&stmt, &[&user.as_str(), &after, &all_above, &fetch])
        .await?;
    let high = rows.first().map_or(Ok(0), |r| r.try_get::<_, i64>(9))?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<_, Option<i64>>(0)?.is_some() {
            deliveries.push(delivery_at(row)?.0);
        }
    }
    let mut page = MailboxPage {
        high: u64_from_sql(high),
        ..MailboxPage::take(deliveries, limit, max_bytes)
    };
    if page.more {
        // The same selection as the page's two scans, counted whole.
        let mark = all_above.unwrap_or(high);
        let stmt = c
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM mailbox WHERE recipient = $1
                           AND seq > $2 AND seq <= $3)
                      + (SELECT COUNT(*) FROM messages WHERE recipient = $1
                           AND seq > GREATEST($2, $3))",
            )
            .await?;
        let waiting: i64 = c
            .query_one(&stmt, &[&user.as_str(), &after, &mark])
            .await?
            .get(0);
        page.waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
    }
    Ok(page)
}

pub(crate) async fn history(
    c: &impl GenericClient,
    user: &UserId,
    with: &UserId,
    before: Option<u64>,
    limit: u16,
) -> Result<Vec<HistoryItem>, PgError> {
    let limit = limit.min(MAX_HISTORY);
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    // The same pair whichever way round, to match the `messages_history` index expressions.
    let (lo, hi) = if user <= with {
        (user, with)
    } else {
        (with, user)
    };
    let stmt = c
        .prepare_cached(
            "SELECT seq, sender, recipient, body, attachment_mime, attachment_name,
                    octet_length(attachment_data), sent_at_ms, client_id
             FROM messages
             WHERE LEAST(sender, recipient) = $1 AND GREATEST(sender, recipient) = $2
               AND seq < $3
             ORDER BY seq DESC LIMIT $4",
        )
        .await?;
    let rows = c
        .query(
            &stmt,
            &[&lo.as_str(), &hi.as_str(), &before, &i64::from(limit)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let mime: Option<Vec<u8>> = row.try_get(4)?;
            let attachment = match mime {
                Some(mime) => Some(AttachmentInfo {
                    mime: text(mime)?,
                    name: text(row.try_get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default())?,
                    size: row
                        .try_get::<_, Option<i32>>(6)?
                        .map_or(0, |n| u64::try_from(n).unwrap_or(0)),
                }),
                None => None,
            };
            Ok(HistoryItem {
                seq: u64_from_sql(row.try_get(0)?),
                id: id_from_sql(row.try_get(8)?),
                from: user_at(row, 1)?,
                to: user_at(row, 2)?,
                body: text(row.try_get(3)?)?,
                attachment,
                sent_at_ms: u64_from_sql(row.try_get(7)?),
            })
        })
        .collect()
}

pub(crate) fn user_at(row: &Row, idx: usize) -> Result<UserId, PgError> {
    let name: String = row.try_get(idx)?;
    UserId::new(name).map_err(|e| PgError::Corrupt(format!("a user name: {e}")))
}

pub(crate) fn text(bytes: Vec<u8>) -> Result<String, PgError> {
    String::from_utf8(bytes).map_err(|e| PgError::Corrupt(format!("a text column: {e}")))
}

/// Sender ids span all of u64 and PostgreSQL's BIGINT is signed: stored bit for bit.
pub(crate) fn id_to_sql(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

pub(crate) fn id_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

pub(crate) fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// For values this crate only ever writes non-negative (seqs, times).
pub(crate) fn u64_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
