//! Rooms in SQLite: a room's messages once each (`room_messages`), a row per member with
//! their role and read cursor (`room_members`), and the room's last seq on its own row
//! (`rooms.last_seq`), bumped in the writer's transaction so seqs follow commit order.

use crate::error::StoreError;
use crate::ops::{id_from_sql, id_to_sql, ms_to_sql, u64_from_sql, user_at, user_exists};
use breeze_core::UserId;
use breeze_core::message::{RoomDelivery, RoomRole};
use breeze_core::storage::{
    MAX_HISTORY, MemberRoom, RoomChange, RoomRange, RoomStored, RoomView, StorageError, may_grant,
    may_remove,
};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

fn role_to_sql(role: RoomRole) -> i64 {
    match role {
        RoomRole::Owner => 0,
        RoomRole::Admin => 1,
        RoomRole::Member => 2,
    }
}

fn role_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<RoomRole> {
    match row.get::<_, i64>(idx)? {
        0 => Ok(RoomRole::Owner),
        1 => Ok(RoomRole::Admin),
        2 => Ok(RoomRole::Member),
        v => Err(rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Integer,
            format!("room role {v}").into(),
        )),
    }
}

fn rooms_of(conn: &Connection, user: &UserId) -> Result<u32, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM room_members WHERE user = ?1")?
        .query_row([user.as_str()], |r| r.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

fn role_of(conn: &Connection, room: u64, user: &UserId) -> Result<Option<RoomRole>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT role FROM room_members WHERE room = ?1 AND user = ?2")?
        .query_row(params![id_to_sql(room), user.as_str()], |r| role_at(r, 0))
        .optional()?)
}

pub(crate) fn view(conn: &Connection, room: u64) -> Result<Option<RoomView>, StoreError> {
    let Some((name, last)) = conn
        .prepare_cached("SELECT name, last_seq FROM rooms WHERE id = ?1")?
        .query_row([id_to_sql(room)], |r| {
            Ok((r.get::<_, String>(0)?, u64_from_sql(r.get(1)?)))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let members = conn
        .prepare_cached("SELECT user, role FROM room_members WHERE room = ?1 ORDER BY user")?
        .query_map([id_to_sql(room)], |r| Ok((user_at(r, 0)?, role_at(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(Some(RoomView {
        room,
        name,
        last,
        members,
    }))
}

pub(crate) fn create(
    conn: &Connection,
    owner: &UserId,
    name: &str,
    max_rooms: u32,
    now_ms: u64,
) -> Result<Result<RoomView, StorageError>, StoreError> {
    if !user_exists(conn, owner)? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    if rooms_of(conn, owner)? >= max_rooms {
        return Ok(Err(StorageError::RoomLimit));
    }
    let room: i64 = conn
        .prepare_cached(
            "INSERT INTO rooms (name, last_seq, created_at_ms) VALUES (?1, 0, ?2) RETURNING id",
        )?
        .query_row(params![name, ms_to_sql(now_ms)], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO room_members (room, user, role, read_seq) VALUES (?1, ?2, ?3, 0)",
    )?
    .execute(params![room, owner.as_str(), role_to_sql(RoomRole::Owner)])?;
    Ok(Ok(view(conn, id_from_sql(room))?.expect("just inserted")))
}

/// Every check comes before the one write, so a refused change writes nothing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn change(
    conn: &Connection,
    by: &UserId,
    room: u64,
    user: &UserId,
    change: RoomChange,
    max_members: u32,
    max_rooms: u32,
) -> Result<Result<RoomView, StorageError>, StoreError> {
    if !user_exists(conn, user)? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let Some(by_role) = role_of(conn, room, by)? else {
        return Ok(Err(StorageError::NoSuchRoom));
    };
    let current = role_of(conn, room, user)?;
    match change {
        RoomChange::Add(role) => {
            if !may_grant(by_role, role, current) {
                return Ok(Err(StorageError::Forbidden));
            }
            if current.is_some() {
                conn.prepare_cached(
                    "UPDATE room_members SET role = ?3 WHERE room = ?1 AND user = ?2",
                )?
                .execute(params![
                    id_to_sql(room),
                    user.as_str(),
                    role_to_sql(role)
                ])?;
            } else {
                let members: i64 = conn
                    .prepare_cached("SELECT count(*) FROM room_members WHERE room = ?1")?
                    .query_row([id_to_sql(room)], |r| r.get(0))?;
                if members >= i64::from(max_members) || rooms_of(conn, user)? >= max_rooms {
                    return Ok(Err(StorageError::RoomLimit));
                }
                // The cursor starts at the room's last seq: earlier messages are history.
                conn.prepare_cached(
                    "INSERT INTO room_members (room, user, role, read_seq)
                     SELECT id, ?2, ?3, last_seq FROM rooms WHERE id = ?1",
                )?
                .execute(params![
                    id_to_sql(room),
                    user.as_str(),
                    role_to_sql(role)
                ])?;
            }
        }
        RoomChange::Remove => {
            if let Some(role) = current {
                if !may_remove(by, by_role, user, role) {
                    return Ok(Err(StorageError::Forbidden));
                }
                conn.prepare_cached("DELETE FROM room_members WHERE room = ?1 AND user = ?2")?
                    .execute(params![id_to_sql(room), user.as_str()])?;
            }
        }
    }
    Ok(Ok(view(conn, room)?.expect("a member's room exists")))
}

fn members(conn: &Connection, room: u64) -> Result<Vec<UserId>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT user FROM room_members WHERE room = ?1 ORDER BY user")?
        .query_map([id_to_sql(room)], |r| user_at(r, 0))?
        .collect::<Result<_, _>>()?)
}

fn delivery_at(row: &Row<'_>) -> rusqlite::Result<RoomDelivery> {
    Ok(RoomDelivery {
        room: id_from_sql(row.get(0)?),
        seq: u64_from_sql(row.get(1)?),
        from: user_at(row, 2)?,
        id: id_from_sql(row.get(3)?),
        body: row.get(4)?,
        sent_at_ms: u64_from_sql(row.get(5)?),
    })
}

const COLUMNS: &str = "room, seq, sender, client_id, body, sent_at_ms";

pub(crate) fn store(
    conn: &Connection,
    room: u64,
    from: &UserId,
    id: u64,
    body: String,
    now_ms: u64,
) -> Result<Result<RoomStored, StorageError>, StoreError> {
    let first = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM room_messages WHERE room = ?1 AND sender = ?2 AND client_id = ?3"
        ))?
        .query_row(
            params![id_to_sql(room), from.as_str(), id_to_sql(id)],
            delivery_at,
        )
        .optional()?;
    if let Some(delivery) = first {
        return Ok(Ok(RoomStored {
            delivery,
            members: members(conn, room)?,
            duplicate: true,
        }));
    }
    if role_of(conn, room, from)?.is_none() {
        return Ok(Err(StorageError::NoSuchRoom));
    }
    let seq: i64 = conn
        .prepare_cached(
            "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
        )?
        .query_row([id_to_sql(room)], |r| r.get(0))?;
    let sent_at = ms_to_sql(now_ms);
    conn.prepare_cached(
        "INSERT INTO room_messages (room, seq, sender, client_id, body, sent_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        id_to_sql(room),
        seq,
        from.as_str(),
        id_to_sql(id),
        body,
        sent_at
    ])?;
    Ok(Ok(RoomStored {
        delivery: RoomDelivery {
            room,
            seq: u64_from_sql(seq),
            from: from.clone(),
            id,
            body,
            sent_at_ms: u64_from_sql(sent_at),
        },
        members: members(conn, room)?,
        duplicate: false,
    }))
}

pub(crate) fn of_user(conn: &Connection, user: &UserId) -> Result<Vec<MemberRoom>, StoreError> {
    let reads: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT room, read_seq FROM room_members WHERE user = ?1 ORDER BY room")?
        .query_map([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut rooms = Vec::with_capacity(reads.len());
    for (room, read) in reads {
        if let Some(view) = view(conn, id_from_sql(room))? {
            rooms.push(MemberRoom {
                view,
                read: u64_from_sql(read),
            });
        }
    }
    Ok(rooms)
}

pub(crate) fn load(
    conn: &Connection,
    user: &UserId,
    room: u64,
    range: RoomRange,
    limit: u16,
) -> Result<Result<Vec<RoomDelivery>, StorageError>, StoreError> {
    if role_of(conn, room, user)?.is_none() {
        return Ok(Err(StorageError::NoSuchRoom));
    }
    let limit = i64::from(limit.min(MAX_HISTORY));
    let items = match range {
        RoomRange::After(after) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM room_messages WHERE room = ?1 AND seq > ?2
                 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(
                params![id_to_sql(room), ms_to_sql(after), limit],
                delivery_at,
            )?
            .collect::<Result<_, _>>()?,
        RoomRange::Before(before) => conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM room_messages WHERE room = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT ?3"
            ))?
            .query_map(
                params![
                    id_to_sql(room),
                    ms_to_sql(before.unwrap_or(u64::MAX)),
                    limit
                ],
                delivery_at,
            )?
            .collect::<Result<_, _>>()?,
    };
    Ok(Ok(items))
}

pub(crate) fn mark_read(
    conn: &Connection,
    user: &UserId,
    reads: &[(u64, u64)],
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE room_members SET read_seq = max(read_seq, ?3) WHERE room = ?1 AND user = ?2",
    )?;
    for &(room, seq) in reads {
        stmt.execute(params![id_to_sql(room), user.as_str(), ms_to_sql(seq)])?;
    }
    Ok(())
}
