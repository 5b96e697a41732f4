//! What each storage request does to the database.
//!
//! A request that needs argon2 (`Register`, `Authenticate` with a password, `ChangePassword`)
//! is cut in three: `start` reads what the hash needs, `HashJob::run` does the expensive part
//! away from the database, `finish` writes the verdict. `Db::apply_batch` runs the three back
//! to back; `StorageService` runs the middle one on its hash pool, so argon2 never holds the
//! write transaction. Both paths go through these same functions.

use crate::error::StoreError;
use crate::groups;
use crate::hash::Hasher;
use crate::job::{Finish, HashJob};
use crate::profiles;
use crate::rooms;
use breeze_core::UserId;
use breeze_core::message::{Attachment, AttachmentInfo, Credential, Delivery, HistoryItem};
use breeze_core::storage::{
    Account, MAX_HISTORY, MAX_TOKENS_PER_USER, MailboxPage, StorageError, StorageOp, StorageResult,
    Stored,
};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use sha2::{Digest, Sha256};

/// Resume tokens are this many random bytes.
pub const TOKEN_LEN: usize = 32;

/// What `start` got to.
pub(crate) enum Step {
    Done(StorageResult),
    Hash(HashJob),
}

/// Does `op`, or as much of it as comes before the hashing.
pub(crate) fn start(
    conn: &Connection,
    op: StorageOp,
    now_ms: u64,
    hasher: &Hasher,
    report_prev: bool,
) -> Result<Step, StoreError> {
    use StorageResult as R;
    Ok(match op {
        StorageOp::Register { user, password } => {
            // Checked here as well as in `finish` so a taken name costs no hash.
            if user_exists(conn, &user)? {
                Step::Done(R::Registered(Err(StorageError::UserTaken)))
            } else {
                Step::Hash(HashJob::Register { user, password })
            }
        }
        StorageOp::Authenticate {
            user,
            credential: Credential::Password(password),
            issue_token,
        } => Step::Hash(HashJob::Login {
            stored: password_hash(conn, &user)?,
            user,
            password,
            issue_token,
        }),
        // A token is spent and succeeded by a login of the device holding it; the core never
        // asks for a token login without one (agents log in by password).
        StorageOp::Authenticate {
            user,
            credential: Credential::Token(token),
            ..
        } => Step::Done(R::Authenticated(resume(
            conn, &user, &token, now_ms, hasher,
        )?)),
        StorageOp::ChangePassword { user, old, new } => Step::Hash(HashJob::ChangePassword {
            stored: password_hash(conn, &user)?,
            user,
            old,
            new,
        }),
        StorageOp::SetContacts { user, add, remove } => {
            Step::Done(R::ContactsSet(set_contacts(conn, &user, &add, &remove)?))
        }
        StorageOp::StoreMessage {
            from,
            to,
            id,
            body,
            attachment,
        } => Step::Done(R::MessageStored(store_message(
            conn,
            NewMessage {
                from,
                to,
                id,
                body,
                attachment,
            },
            now_ms,
            report_prev,
        )?)),
        StorageOp::LoadMailbox {
            user,
            after,
            all_above,
            limit,
            max_bytes,
        } => Step::Done(R::MailboxLoaded(Ok(mailbox(
            conn, &user, after, all_above, limit, max_bytes,
        )?))),
        StorageOp::MarkDelivered { user, seqs } => {
            mark_delivered(conn, &user, &seqs)?;
            Step::Done(R::DeliveredMarked(Ok(())))
        }
        StorageOp::LoadHistory {
            user,
            with,
            before,
            limit,
        } => Step::Done(R::HistoryLoaded(Ok(history(
            conn, &user, &with, before, limit,
        )?))),
        StorageOp::SetBanned { user, banned } => {
            Step::Done(R::BannedSet(set_banned(conn, &user, banned)?))
        }
        StorageOp::ChangeGroups {
            user,
            change,
            max_groups,
        } => Step::Done(R::GroupsChanged(groups::change_groups(
            conn, &user, change, max_groups,
        )?)),
        StorageOp::SetProfile { user, change } => {
            Step::Done(R::ProfileSet(profiles::set_profile(conn, &user, change)?))
        }
        StorageOp::LoadProfiles { users } => {
            Step::Done(R::ProfilesLoaded(Ok(profiles::load_profiles(conn, users)?)))
        }
        StorageOp::LoadProfile { user, avatar } => Step::Done(R::ProfileLoaded(
            profiles::load_profile(conn, user, avatar)?,
        )),
        StorageOp::CreateRoom {
            owner,
            name,
            max_rooms,
        } => Step::Done(R::RoomCreated(rooms::create(
            conn, &owner, &name, max_rooms, now_ms,
        )?)),
        StorageOp::ChangeRoom {
            by,
            room,
            user,
            change,
            max_members,
            max_rooms,
        } => Step::Done(R::RoomChanged(rooms::change(
            conn,
            &by,
            room,
            &user,
            change,
            max_members,
            max_rooms,
        )?)),
        StorageOp::StoreRoomMessage {
            room,
            from,
            id,
            body,
        } => Step::Done(R::RoomMessageStored(rooms::store(
            conn, room, &from, id, body, now_ms,
        )?)),
        StorageOp::LoadRooms { user } => {
            Step::Done(R::RoomsLoaded(Ok(rooms::of_user(conn, &user)?)))
        }
        StorageOp::LoadRoom {
            user,
            room,
            range,
            limit,
        } => Step::Done(R::RoomLoaded(rooms::load(conn, &user, room, range, limit)?)),
        StorageOp::MarkRoomRead { user, reads } => {
            rooms::mark_read(conn, &user, &reads)?;
            Step::Done(R::RoomReadMarked(Ok(())))
        }
    })
}

/// Writes what a `HashJob` decided.
pub(crate) fn finish(
    conn: &Connection,
    finish: Finish,
    now_ms: u64,
    hasher: &Hasher,
) -> Result<StorageResult, StoreError> {
    use StorageResult as R;
    Ok(match finish {
        Finish::Register { user, hash } => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO accounts (user, password_hash, created_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user) DO NOTHING",
                )?
                .execute(params![user.as_str(), hash, ms_to_sql(now_ms)])?;
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
            if !swap_hash(conn, &user, &verified, new_hash)? {
                R::Authenticated(Err(StorageError::BadCredentials))
            } else if is_banned(conn, &user)? {
                R::Authenticated(Ok(Account::banned()))
            } else if !issue_token {
                R::Authenticated(Ok(Account {
                    contacts: contacts(conn, &user)?,
                    resume_token: Vec::new(),
                    banned: false,
                    groups: groups::contact_groups(conn, &user)?,
                }))
            } else {
                R::Authenticated(Ok(login(conn, &user, None, now_ms, hasher)?))
            }
        }
        Finish::ChangePassword {
            user,
            verified,
            new_hash,
        } => {
            if swap_hash(conn, &user, &verified, &new_hash)? {
                conn.prepare_cached("DELETE FROM tokens WHERE user = ?1")?
                    .execute([user.as_str()])?;
                R::PasswordChanged(Ok(()))
            } else {
                R::PasswordChanged(Err(StorageError::BadCredentials))
            }
        }
        Finish::Done(result) => result,
    })
}

pub(crate) fn users(conn: &Connection) -> Result<Vec<UserId>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user FROM accounts ORDER BY user")?;
    let users = stmt
        .query_map([], |row| user_at(row, 0))?
        .collect::<Result<_, _>>()?;
    Ok(users)
}

pub(crate) fn user_exists(conn: &Connection, user: &UserId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM accounts WHERE user = ?1")?
        .query_row([user.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Bans or unbans `user`, online (`SetBanned`) or offline (`Db::set_banned`).
pub(crate) fn set_banned(
    conn: &Connection,
    user: &UserId,
    banned: bool,
) -> Result<Result<(), StorageError>, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE accounts SET banned = ?2 WHERE user = ?1")?
        .execute(params![user.as_str(), banned])?;
    Ok(if changed == 1 {
        Ok(())
    } else {
        Err(StorageError::NoSuchUser)
    })
}

fn is_banned(conn: &Connection, user: &UserId) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT banned FROM accounts WHERE user = ?1")?
        .query_row([user.as_str()], |row| row.get(0))
        .optional()?
        .unwrap_or(false))
}

fn password_hash(conn: &Connection, user: &UserId) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT password_hash FROM accounts WHERE user = ?1")?
        .query_row([user.as_str()], |row| row.get(0))
        .optional()?)
}

/// Replaces the hash only if it still is `expected`: whether it was.
fn swap_hash(
    conn: &Connection,
    user: &UserId,
    expected: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "UPDATE accounts SET password_hash = ?3 WHERE user = ?1 AND password_hash = ?2",
        )?
        .execute(params![user.as_str(), expected, new_hash])?;
    Ok(changed == 1)
}

fn sha256(token: &[u8]) -> Vec<u8> {
    Sha256::digest(token).to_vec()
}

/// A login by resume token. The presented token stays valid until the one issued now is used:
/// if this LoginOk never reaches the client, it can still resume with what it has.
fn resume(
    conn: &Connection,
    user: &UserId,
    token: &[u8],
    now_ms: u64,
    hasher: &Hasher,
) -> Result<Result<Account, StorageError>, StoreError> {
    if token.len() != TOKEN_LEN {
        return Ok(Err(StorageError::BadCredentials));
    }
    let found: Option<(i64, Option<i64>)> = conn
        .prepare_cached("SELECT id, parent FROM tokens WHERE user = ?1 AND token_sha256 = ?2")?
        .query_row(params![user.as_str(), sha256(token)], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let Some((id, parent)) = found else {
        return Ok(Err(StorageError::BadCredentials));
    };
    if is_banned(conn, user)? {
        // Refused: nothing is spent, so the device resumes as before after an unban.
        return Ok(Ok(Account::banned()));
    }
    if let Some(parent) = parent {
        // The client has this token, so it got the LoginOk that carried it: the token it was
        // issued for is spent, and so are its other successors, whose LoginOk got lost.
        conn.prepare_cached(
            "DELETE FROM tokens WHERE user = ?1 AND (id = ?2 OR (parent = ?2 AND id <> ?3))",
        )?
        .execute(params![user.as_str(), parent, id])?;
    }
    Ok(Ok(login(conn, user, Some(id), now_ms, hasher)?))
}

/// Issues a fresh resume token and reads the account.
fn login(
    conn: &Connection,
    user: &UserId,
    parent: Option<i64>,
    now_ms: u64,
    hasher: &Hasher,
) -> Result<Account, StoreError> {
    let mut token = vec![0u8; TOKEN_LEN];
    hasher.fill_random(&mut token)?;
    conn.prepare_cached(
        "INSERT INTO tokens (user, token_sha256, parent, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        user.as_str(),
        sha256(&token),
        parent,
        ms_to_sql(now_ms)
    ])?;
    conn.prepare_cached(
        "DELETE FROM tokens WHERE user = ?1 AND id NOT IN
             (SELECT id FROM tokens WHERE user = ?1 ORDER BY id DESC LIMIT ?2)",
    )?
    .execute(params![user.as_str(), MAX_TOKENS_PER_USER as i64])?;
    Ok(Account {
        contacts: contacts(conn, user)?,
        resume_token: token,
        banned: false,
        groups: groups::contact_groups(conn, user)?,
    })
}

fn contacts(conn: &Connection, user: &UserId) -> Result<Vec<UserId>, StoreError> {
    // SQLite's BINARY collation orders like `UserId`'s `Ord`: bytewise.
    let mut stmt =
        conn.prepare_cached("SELECT contact FROM contacts WHERE user = ?1 ORDER BY contact")?;
    let contacts = stmt
        .query_map([user.as_str()], |row| user_at(row, 0))?
        .collect::<Result<_, _>>()?;
    Ok(contacts)
}

/// All or nothing: every addition is checked before anything is written, and a request
/// that writes more than one row runs under a savepoint (`Work::needs_savepoint`).
fn set_contacts(
    conn: &Connection,
    user: &UserId,
    add: &[UserId],
    remove: &[UserId],
) -> Result<Result<(), StorageError>, StoreError> {
    // The owner is checked too: the foreign key would catch an unknown one only when
    // something is added, and as a failed statement rather than an answer.
    for name in std::iter::once(user).chain(add) {
        if !user_exists(conn, name)? {
            return Ok(Err(StorageError::NoSuchUser));
        }
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO contacts (user, contact) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?;
    for contact in add {
        insert.execute([user.as_str(), contact.as_str()])?;
    }
    let mut delete =
        conn.prepare_cached("DELETE FROM contacts WHERE user = ?1 AND contact = ?2")?;
    for contact in remove {
        delete.execute([user.as_str(), contact.as_str()])?;
    }
    Ok(Ok(()))
}

struct NewMessage {
    from: UserId,
    to: UserId,
    id: u64,
    body: String,
    attachment: Option<Attachment>,
}

/// The columns `delivery_at` reads, in its order.
macro_rules! delivery_columns {
    () => {
        "seq, sender, client_id, body, attachment_mime, attachment_name, attachment_data, \
         sent_at_ms, recipient"
    };
}

/// A row selected with `delivery_columns!`, and its recipient.
fn delivery_at(row: &Row<'_>) -> rusqlite::Result<(Delivery, UserId)> {
    let mime: Option<String> = row.get(4)?;
    let attachment = match mime {
        Some(mime) => Some(Attachment {
            mime,
            name: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
            data: row.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default(),
        }),
        None => None,
    };
    let delivery = Delivery {
        seq: u64_from_sql(row.get(0)?),
        from: user_at(row, 1)?,
        id: id_from_sql(row.get(2)?),
        body: row.get(3)?,
        attachment,
        sent_at_ms: u64_from_sql(row.get(7)?),
    };
    Ok((delivery, user_at(row, 8)?))
}

fn store_message(
    conn: &Connection,
    msg: NewMessage,
    now_ms: u64,
    report_prev: bool,
) -> Result<Result<Stored, StorageError>, StoreError> {
    let (mime, name, data) = match &msg.attachment {
        Some(a) => (Some(&a.mime), Some(&a.name), Some(&a.data)),
        None => (None, None, None),
    };
    let sent_at = ms_to_sql(now_ms);
    // One statement for the common case: the unique (sender, client_id) index finds a resent
    // message, and the foreign keys find an unknown sender or recipient, both while inserting.
    // The seq is the row's id, read back with `last_insert_rowid`, not with `RETURNING`: to
    // SQLite a `RETURNING` clause is a trigger, and a statement with a trigger that may abort
    // writes each page it first touches to a statement journal first, so that it can be
    // undone alone. That copying was 11.7 % of the writer thread's time at chat saturation
    // (BENCHMARKS.md). Without a trigger the insert is one row, whose every check runs before
    // it writes, and needs no journal; an I/O error or a full disk then rolls the whole
    // transaction back, which `Db::run_batch` notices and reports.
    let inserted = conn
        .prepare_cached(
            "INSERT INTO messages (sender, recipient, client_id, body, attachment_mime,
                                   attachment_name, attachment_data, sent_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (sender, client_id) DO NOTHING",
        )?
        .execute(params![
            msg.from.as_str(),
            msg.to.as_str(),
            id_to_sql(msg.id),
            msg.body,
            mime,
            name,
            data,
            sent_at
        ]);
    let seq = match inserted {
        Ok(1) => conn.last_insert_rowid(),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            return Ok(Err(StorageError::NoSuchUser));
        }
        Err(e) => return Err(e.into()),
        // Stored before: answer with the first copy, whatever this one says.
        Ok(_) => {
            let (delivery, to) = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    delivery_columns!(),
                    " FROM messages WHERE sender = ?1 AND client_id = ?2"
                ))?
                .query_row(params![msg.from.as_str(), id_to_sql(msg.id)], delivery_at)?;
            return Ok(Ok(Stored {
                to,
                delivery,
                duplicate: true,
                prev: None,
            }));
        }
    };
    // One probe of `messages_recipient`. The one writer gives seqs in commit order, so
    // nothing to this recipient can come between `prev` and `seq`.
    let prev = if report_prev {
        let prev: Option<i64> = conn
            .prepare_cached("SELECT max(seq) FROM messages WHERE recipient = ?1 AND seq < ?2")?
            .query_row(params![msg.to.as_str(), seq], |row| row.get(0))?;
        Some(prev.map_or(0, u64_from_sql))
    } else {
        None
    };
    Ok(Ok(Stored {
        to: msg.to,
        delivery: Delivery {
            seq: u64_from_sql(seq),
            from: msg.from,
            id: msg.id,
            body: msg.body,
            attachment: msg.attachment,
            sent_at_ms: u64_from_sql(sent_at),
        },
        duplicate: false,
        prev,
    }))
}

/// Runs in the writer's transaction, so `high` and the page are one snapshot. Two range
/// scans, each on its index: the unacked messages up to the mark (`messages_mailbox`, which
/// holds only those), then every message above it (`messages_recipient`).
fn mailbox(
    conn: &Connection,
    user: &UserId,
    after: u64,
    all_above: Option<u64>,
    limit: u32,
    max_bytes: u64,
) -> Result<MailboxPage, StoreError> {
    let high: i64 = conn
        .prepare_cached("SELECT coalesce(max(seq), 0) FROM messages WHERE recipient = ?1")?
        .query_row(params![user.as_str()], |row| row.get(0))?;
    let mark = all_above.map_or(high, |a| i64::try_from(a).unwrap_or(i64::MAX));
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    // One row past the page tells whether more follow.
    let fetch = i64::from(limit.max(1)) + 1;
    let mut unacked = conn.prepare_cached(concat!(
        "SELECT ",
        delivery_columns!(),
        // Named: the planner, without statistics, would take `messages_recipient` and step
        // over every acked message below the mark.
        " FROM messages INDEXED BY messages_mailbox
          WHERE recipient = ?1 AND delivered = 0 AND seq > ?2 AND seq <= ?3
          ORDER BY seq LIMIT ?4"
    ))?;
    let mut above = conn.prepare_cached(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM messages INDEXED BY messages_recipient
          WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
    ))?;
    let delivery = |row: &Row<'_>| delivery_at(row).map(|(d, _)| d);
    // Stepped lazily, so a page cut by `max_bytes` reads no bodies past the cut.
    let mut rows = unacked
        .query_map(params![user.as_str(), after, mark, fetch], delivery)?
        .chain(above.query_map(params![user.as_str(), after.max(mark), fetch], delivery)?);
    let mut failure = None;
    let page = MailboxPage::take(
        std::iter::from_fn(|| match rows.next()? {
            Ok(d) => Some(d),
            Err(e) => {
                failure = Some(e);
                None
            }
        }),
        limit,
        max_bytes,
    );
    if let Some(e) = failure {
        return Err(e.into());
    }
    let mut page = MailboxPage {
        high: u64_from_sql(high),
        ..page
    };
    if page.more {
        // The same selection as the page's two scans, counted whole.
        let waiting: i64 = conn
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM messages INDEXED BY messages_mailbox
                          WHERE recipient = ?1 AND delivered = 0 AND seq > ?2 AND seq <= ?3)
                      + (SELECT COUNT(*) FROM messages INDEXED BY messages_recipient
                          WHERE recipient = ?1 AND seq > max(?2, ?3))",
            )?
            .query_row(params![user.as_str(), after, mark], |row| row.get(0))?;
        page.waiting = u32::try_from(waiting).unwrap_or(u32::MAX);
    }
    Ok(page)
}

fn mark_delivered(conn: &Connection, user: &UserId, seqs: &[u64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE messages SET delivered = 1 WHERE seq = ?1 AND recipient = ?2 AND delivered = 0",
    )?;
    // A seq beyond i64 was never issued, so it names nothing to mark.
    for seq in seqs.iter().filter_map(|&s| i64::try_from(s).ok()) {
        stmt.execute(params![seq, user.as_str()])?;
    }
    Ok(())
}

fn history(
    conn: &Connection,
    user: &UserId,
    with: &UserId,
    before: Option<u64>,
    limit: u16,
) -> Result<Vec<HistoryItem>, StoreError> {
    let limit = limit.min(MAX_HISTORY);
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    // The same pair whichever way round, to match the `messages_history` index expressions.
    let (lo, hi) = if user <= with {
        (user, with)
    } else {
        (with, user)
    };
    let mut stmt = conn.prepare_cached(
        "SELECT seq, sender, recipient, body, attachment_mime, attachment_name,
                length(attachment_data), sent_at_ms, client_id
         FROM messages
         WHERE min(sender, recipient) = ?1 AND max(sender, recipient) = ?2 AND seq < ?3
         ORDER BY seq DESC LIMIT ?4",
    )?;
    let items = stmt
        .query_map(
            params![lo.as_str(), hi.as_str(), before, i64::from(limit)],
            |row| {
                let mime: Option<String> = row.get(4)?;
                let attachment = match mime {
                    Some(mime) => Some(AttachmentInfo {
                        mime,
                        name: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                        size: u64_from_sql(row.get::<_, Option<i64>>(6)?.unwrap_or(0)),
                    }),
                    None => None,
                };
                Ok(HistoryItem {
                    seq: u64_from_sql(row.get(0)?),
                    id: id_from_sql(row.get(8)?),
                    from: user_at(row, 1)?,
                    to: user_at(row, 2)?,
                    body: row.get(3)?,
                    attachment,
                    sent_at_ms: u64_from_sql(row.get(7)?),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    Ok(items)
}

pub(crate) fn user_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<UserId> {
    let name: String = row.get(idx)?;
    UserId::new(name)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

/// Sender ids span all of u64 and SQLite integers are signed: stored bit for bit.
pub(crate) fn id_to_sql(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

pub(crate) fn id_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

pub(crate) fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// For values this crate only ever writes non-negative (seqs, times, sizes).
pub(crate) fn u64_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
