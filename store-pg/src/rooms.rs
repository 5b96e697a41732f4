//! Rooms in PostgreSQL, as breeze-store's `rooms.rs` keeps them in SQLite, for several nodes
//! writing at once: a room's seq comes from its own row (`rooms.last_seq`), updated in the
//! storing transaction and locked by it until commit, so a room's seqs commit in order across
//! nodes as the message counter's do (`schema.rs`); a membership change locks the room's row
//! and the invitee's account row first, so two nodes cannot both add the last member a limit
//! allows.

use crate::error::PgError;
use crate::ops::{id_from_sql, id_to_sql, ms_to_sql, text, u64_from_sql, user_at, user_exists};
use breeze_core::UserId;
use breeze_core::message::{RoomDelivery, RoomRole};
use breeze_core::storage::{
    MAX_HISTORY, MemberRoom, RoomChange, RoomRange, RoomStored, RoomView, StorageError, may_grant,
    may_remove,
};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

fn role_to_sql(role: RoomRole) -> i16 {
    match role {
        RoomRole::Owner => 0,
        RoomRole::Admin => 1,
        RoomRole::Member => 2,
    }
}

fn role_at(row: &Row, idx: usize) -> Result<RoomRole, PgError> {
    match row.try_get::<_, i16>(idx)? {
        0 => Ok(RoomRole::Owner),
        1 => Ok(RoomRole::Admin),
        2 => Ok(RoomRole::Member),
        v => Err(PgError::Corrupt(format!("room role {v}"))),
    }
}

async fn rooms_of(c: &impl GenericClient, user: &UserId) -> Result<i64, PgError> {
    let stmt = c
        .prepare_cached("SELECT count(*) FROM room_members WHERE name = $1")
        .await?;
    Ok(c.query_one(&stmt, &[&user.as_str()]).await?.get(0))
}

async fn role_of(
    c: &impl GenericClient,
    room: u64,
    user: &UserId,
) -> Result<Option<RoomRole>, PgError> {
    let stmt = c
        .prepare_cached("SELECT role FROM room_members WHERE room = $1 AND name = $2")
        .await?;
    c.query_opt(&stmt, &[&id_to_sql(room), &user.as_str()])
        .await?
        .map(|r| role_at(&r, 0))
        .transpose()
}

async fn members(c: &impl GenericClient, room: u64) -> Result<Vec<(UserId, RoomRole)>, PgError> {
    let stmt = c
        .prepare_cached("SELECT name, role FROM room_members WHERE room = $1 ORDER BY name")
        .await?;
    c.query(&stmt, &[&id_to_sql(room)])
        .await?
        .iter()
        .map(|r| Ok((user_at(r, 0)?, role_at(r, 1)?)))
        .collect()
}

async fn view(c: &impl GenericClient, room: u64) -> Result<Option<RoomView>, PgError> {
    let stmt = c
        .prepare_cached("SELECT name, last_seq FROM rooms WHERE id = $1")
        .await?;
    let Some(row) = c.query_opt(&stmt, &[&id_to_sql(room)]).await? else {
        return Ok(None);
    };
    Ok(Some(RoomView {
        room,
        name: text(row.try_get(0)?)?,
        last: u64_from_sql(row.try_get(1)?),
        members: members(c, room).await?,
    }))
}

/// Locks the account's row for the transaction: the rooms-per-user count cannot change
/// under a check.
async fn lock_user(c: &impl GenericClient, user: &UserId) -> Result<bool, PgError> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM accounts WHERE name = $1 FOR NO KEY UPDATE")
        .await?;
    Ok(c.query_opt(&stmt, &[&user.as_str()]).await?.is_some())
}

pub(crate) async fn create(
    c: &impl GenericClient,
    owner: &UserId,
    name: &str,
    max_rooms: u32,
    now_ms: u64,
) -> Result<Result<RoomView, StorageError>, PgError> {
    if !lock_user(c, owner).await? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    if rooms_of(c, owner).await? >= i64::from(max_rooms) {
        return Ok(Err(StorageError::RoomLimit));
    }
    let stmt = c
        .prepare_cached(
            "INSERT INTO rooms (name, last_seq, created_at_ms) VALUES ($1, 0, $2) RETURNING id",
        )
        .await?;
    let room: i64 = c
        .query_one(&stmt, &[&name.as_bytes(), &ms_to_sql(now_ms)])
        .await?
        .get(0);
    let stmt = c
        .prepare_cached(
            "INSERT INTO room_members (room, name, role, read_seq) VALUES ($1, $2, $3, 0)",
        )
        .await?;
    c.execute(
        &stmt,
        &[&room, &owner.as_str(), &role_to_sql(RoomRole::Owner)],
    )
    .await?;
    Ok(Ok(view(c, id_from_sql(room))
        .await?
        .expect("just inserted")))
}

pub(crate) async fn change(
    c: &impl GenericClient,
    by: &UserId,
    room: u64,
    user: &UserId,
    change: RoomChange,
    limits: (u32, u32),
) -> Result<Result<RoomView, StorageError>, PgError> {
    let (max_members, max_rooms) = limits;
    // The room's row, then the account's: every membership change takes them in this order.
    let stmt = c
        .prepare_cached("SELECT 1 FROM rooms WHERE id = $1 FOR NO KEY UPDATE")
        .await?;
    if c.query_opt(&stmt, &[&id_to_sql(room)]).await?.is_none() {
        return Ok(Err(if user_exists(c, user).await? {
            StorageError::NoSuchRoom
        } else {
            StorageError::NoSuchUser
        }));
    }
    if !lock_user(c, user).await? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let Some(by_role) = role_of(c, room, by).await? else {
        return Ok(Err(StorageError::NoSuchRoom));
    };
    let current = role_of(c, room, user).await?;
    match change {
        RoomChange::Add(role) => {
            if !may_grant(by_role, role, current) {
                return Ok(Err(StorageError::Forbidden));
            }
            if current.is_some() {
                let stmt = c
                    .prepare_cached(
                        "UPDATE room_members SET role = $3 WHERE room = $1 AND name = $2",
                    )
                    .await?;
                c.execute(
                    &stmt,
                    &[&id_to_sql(room), &user.as_str(), &role_to_sql(role)],
                )
                .await?;
            } else {
                let stmt = c
                    .prepare_cached("SELECT count(*) FROM room_members WHERE room = $1")
                    .await?;
                let n: i64 = c.query_one(&stmt, &[&id_to_sql(room)]).await?.get(0);
                if n >= i64::from(max_members) || rooms_of(c, user).await? >= i64::from(max_rooms) {
                    return Ok(Err(StorageError::RoomLimit));
                }
                // The cursor starts at the room's last seq: earlier messages are history.
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO room_members (room, name, role, read_seq)
                         SELECT id, $2, $3, last_seq FROM rooms WHERE id = $1",
                    )
                    .await?;
                c.execute(
                    &stmt,
                    &[&id_to_sql(room), &user.as_str(), &role_to_sql(role)],
                )
                .await?;
            }
        }
        RoomChange::Remove => {
            if let Some(role) = current {
                if !may_remove(by, by_role, user, role) {
                    return Ok(Err(StorageError::Forbidden));
                }
                let stmt = c
                    .prepare_cached("DELETE FROM room_members WHERE room = $1 AND name = $2")
                    .await?;
                c.execute(&stmt, &[&id_to_sql(room), &user.as_str()])
                    .await?;
            }
        }
    }
    Ok(Ok(view(c, room).await?.expect("locked above")))
}

const COLUMNS: &str = "room, seq, sender, client_id, body, sent_at_ms";

fn delivery_at(row: &Row) -> Result<RoomDelivery, PgError> {
    Ok(RoomDelivery {
        room: id_from_sql(row.try_get(0)?),
        seq: u64_from_sql(row.try_get(1)?),
        from: user_at(row, 2)?,
        id: id_from_sql(row.try_get(3)?),
        body: text(row.try_get(4)?)?,
        sent_at_ms: u64_from_sql(row.try_get(5)?),
    })
}

async fn first_copy(
    c: &impl GenericClient,
    room: u64,
    from: &UserId,
    id: u64,
) -> Result<Option<RoomDelivery>, PgError> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM room_messages WHERE room = $1 AND sender = $2 AND client_id = $3"
        ))
        .await?;
    c.query_opt(&stmt, &[&id_to_sql(room), &from.as_str(), &id_to_sql(id)])
        .await?
        .map(|r| delivery_at(&r))
        .transpose()
}

pub(crate) async fn store(
    c: &impl GenericClient,
    room: u64,
    from: &UserId,
    id: u64,
    body: &str,
    now_ms: u64,
) -> Result<Result<RoomStored, StorageError>, PgError> {
    let names = |m: Vec<(UserId, RoomRole)>| m.into_iter().map(|(u, _)| u).collect();
    if let Some(delivery) = first_copy(c, room, from, id).await? {
        return Ok(Ok(RoomStored {
            delivery,
            members: names(members(c, room).await?),
            duplicate: true,
        }));
    }
    if role_of(c, room, from).await?.is_none() {
        return Ok(Err(StorageError::NoSuchRoom));
    }
    // Locks the room's row until commit: the next store to the room, from any node, draws
    // the next seq and commits after this one.
    let stmt = c
        .prepare_cached("UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq")
        .await?;
    let seq: i64 = c.query_one(&stmt, &[&id_to_sql(room)]).await?.get(0);
    let sent_at = ms_to_sql(now_ms);
    // The same (room, sender, id) stored by another node meanwhile: its copy is the one.
    let stmt = c
        .prepare_cached(
            "INSERT INTO room_messages (room, seq, sender, client_id, body, sent_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (room, sender, client_id) DO NOTHING",
        )
        .await?;
    let inserted = c
        .execute(
            &stmt,
            &[
                &id_to_sql(room),
                &seq,
                &from.as_str(),
                &id_to_sql(id),
                &body.as_bytes(),
                &sent_at,
            ],
        )
        .await?;
    let members = names(members(c, room).await?);
    if inserted == 0 {
        // Give the seq back (the room's row is still locked by this transaction), so a room's
        // seqs stay 1, 2, 3, … without holes, as PROTOCOL.md promises.
        let stmt = c
            .prepare_cached("UPDATE rooms SET last_seq = last_seq - 1 WHERE id = $1")
            .await?;
        c.execute(&stmt, &[&id_to_sql(room)]).await?;
        let delivery = first_copy(c, room, from, id)
            .await?
            .ok_or_else(|| PgError::Corrupt("a conflicting room message vanished".into()))?;
        return Ok(Ok(RoomStored {
            delivery,
            members,
            duplicate: true,
        }));
    }
    Ok(Ok(RoomStored {
        delivery: RoomDelivery {
            room,
            seq: u64_from_sql(seq),
            from: from.clone(),
            id,
            body: body.to_owned(),
            sent_at_ms: u64_from_sql(sent_at),
        },
        members,
        duplicate: false,
    }))
}

pub(crate) async fn of_user(
    c: &impl GenericClient,
    user: &UserId,
) -> Result<Vec<MemberRoom>, PgError> {
    let stmt = c
        .prepare_cached("SELECT room, read_seq FROM room_members WHERE name = $1 ORDER BY room")
        .await?;
    let reads: Vec<(i64, i64)> = c
        .query(&stmt, &[&user.as_str()])
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, PgError>>()?;
    let mut rooms = Vec::with_capacity(reads.len());
    for (room, read) in reads {
        if let Some(view) = view(c, id_from_sql(room)).await? {
            rooms.push(MemberRoom {
                view,
                read: u64_from_sql(read),
            });
        }
    }
    Ok(rooms)
}

pub(crate) async fn load(
    c: &impl GenericClient,
    user: &UserId,
    room: u64,
    range: RoomRange,
    limit: u16,
) -> Result<Result<Vec<RoomDelivery>, StorageError>, PgError> {
    if role_of(c, room, user).await?.is_none() {
        return Ok(Err(StorageError::NoSuchRoom));
    }
    let limit = i64::from(limit.min(MAX_HISTORY));
    let (sql, bound) = match range {
        RoomRange::After(after) => (
            format!(
                "SELECT {COLUMNS} FROM room_messages WHERE room = $1 AND seq > $2
                 ORDER BY seq LIMIT $3"
            ),
            ms_to_sql(after),
        ),
        RoomRange::Before(before) => (
            format!(
                "SELECT {COLUMNS} FROM room_messages WHERE room = $1 AND seq < $2
                 ORDER BY seq DESC LIMIT $3"
            ),
            ms_to_sql(before.unwrap_or(u64::MAX)),
        ),
    };
    let stmt = c.prepare_cached(&sql).await?;
    let rows = c.query(&stmt, &[&id_to_sql(room), &bound, &limit]).await?;
    Ok(Ok(rows
        .iter()
        .map(delivery_at)
        .collect::<Result<_, _>>()?))
}

pub(crate) async fn mark_read(
    c: &impl GenericClient,
    user: &UserId,
    reads: &[(u64, u64)],
) -> Result<(), PgError> {
    let stmt = c
        .prepare_cached(
            "UPDATE room_members SET read_seq = GREATEST(read_seq, $3) WHERE room = $1 AND name = $2",
        )
        .await?;
    for &(room, seq) in reads {
        c.execute(&stmt, &[&id_to_sql(room), &user.as_str(), &ms_to_sql(seq)])
            .await?;
    }
    Ok(())
}
