//! Contact groups (`StorageOp::ChangeGroups`, and the groups a login reads with the
//! contacts). A contact's group is a column of its contact row, so taking a contact off the
//! list forgets its group with it, and a group's id comes from a counter on the account, so a
//! deleted group's id is never handed out again.

use crate::error::StoreError;
use crate::ops::user_at;
use breeze_core::UserId;
use breeze_core::message::{ContactGroup, DEFAULT_GROUP, Placement};
use breeze_core::storage::{ContactGroups, GroupChange, GroupsDiff, StorageError};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;

/// The user's groups and placements, as a login reads them.
pub(crate) fn contact_groups(
    conn: &Connection,
    user: &UserId,
) -> Result<ContactGroups, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact, group_id FROM contacts WHERE user = ?1 AND group_id <> 0 ORDER BY contact",
    )?;
    let placements = stmt
        .query_map([user.as_str()], |row| {
            Ok(Placement {
                contact: user_at(row, 0)?,
                group: row.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(ContactGroups {
        groups: groups(conn, user)?,
        placements,
    })
}

fn groups(conn: &Connection, user: &UserId) -> Result<Vec<ContactGroup>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name FROM contact_groups WHERE user = ?1 ORDER BY position, id",
    )?;
    let groups = stmt
        .query_map([user.as_str()], |row| {
            Ok(ContactGroup {
                id: row.get(0)?,
                name: row.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(groups)
}

/// All or nothing: everything is checked before the first write, and the request runs under
/// a savepoint (`Work::needs_savepoint`).
pub(crate) fn change_groups(
    conn: &Connection,
    user: &UserId,
    change: GroupChange,
    max_groups: u32,
) -> Result<Result<GroupsDiff, StorageError>, StoreError> {
    let account = conn
        .prepare_cached("SELECT 1 FROM accounts WHERE user = ?1")?
        .query_row([user.as_str()], |_| Ok(()))
        .optional()?;
    if account.is_none() {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let list = groups(conn, user)?;
    let has = |id: u32| list.iter().any(|g| g.id == id);
    let taken = |name: &str, except: u32| list.iter().any(|g| g.name == name && g.id != except);
    let mut moved = Vec::new();
    match change {
        GroupChange::Create { name } => {
            if taken(&name, DEFAULT_GROUP) {
                return Ok(Err(StorageError::GroupNameTaken));
            }
            if list.len() >= max_groups as usize {
                return Ok(Err(StorageError::TooManyGroups));
            }
            let id: u32 = conn
                .prepare_cached(
                    "UPDATE accounts SET last_group = last_group + 1 WHERE user = ?1
                     RETURNING last_group",
                )?
                .query_row([user.as_str()], |row| row.get(0))?;
            conn.prepare_cached(
                "INSERT INTO contact_groups (user, id, name, position) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![user.as_str(), id, name, list.len() as i64])?;
        }
        GroupChange::Rename { group, name } => {
            if !has(group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            if taken(&name, group) {
                return Ok(Err(StorageError::GroupNameTaken));
            }
            conn.prepare_cached("UPDATE contact_groups SET name = ?3 WHERE user = ?1 AND id = ?2")?
                .execute(params![user.as_str(), group, name])?;
        }
        GroupChange::Delete { group } => {
            if !has(group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            let mut stmt = conn.prepare_cached(
                "UPDATE contacts SET group_id = 0 WHERE user = ?1 AND group_id = ?2
                 RETURNING contact",
            )?;
            let names: BTreeSet<UserId> = stmt
                .query_map(params![user.as_str(), group], |row| user_at(row, 0))?
                .collect::<Result<_, _>>()?;
            moved = names
                .into_iter()
                .map(|contact| Placement {
                    contact,
                    group: DEFAULT_GROUP,
                })
                .collect();
            conn.prepare_cached("DELETE FROM contact_groups WHERE user = ?1 AND id = ?2")?
                .execute(params![user.as_str(), group])?;
        }
        GroupChange::Reorder { group, position } => {
            if !has(group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            let mut ids: Vec<u32> = list
                .iter()
                .map(|g| g.id)
                .filter(|&id| id != group)
                .collect();
            ids.insert((position as usize).min(ids.len()), group);
            let mut stmt = conn.prepare_cached(
                "UPDATE contact_groups SET position = ?3 WHERE user = ?1 AND id = ?2",
            )?;
            for (at, id) in ids.into_iter().enumerate() {
                stmt.execute(params![user.as_str(), id, at as i64])?;
            }
        }
        GroupChange::File { contacts, group } => {
            if group != DEFAULT_GROUP && !has(group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            let contacts: BTreeSet<UserId> = contacts.into_iter().collect();
            let mut read = conn
                .prepare_cached("SELECT group_id FROM contacts WHERE user = ?1 AND contact = ?2")?;
            let mut filing = Vec::new();
            for contact in contacts {
                let at: Option<u32> = read
                    .query_row([user.as_str(), contact.as_str()], |row| row.get(0))
                    .optional()?;
                match at {
                    None => return Ok(Err(StorageError::NoSuchUser)),
                    Some(at) if at == group => {}
                    Some(_) => filing.push(contact),
                }
            }
            let mut write = conn.prepare_cached(
                "UPDATE contacts SET group_id = ?3 WHERE user = ?1 AND contact = ?2",
            )?;
            for contact in filing {
                write.execute(params![user.as_str(), contact.as_str(), group])?;
                moved.push(Placement { contact, group });
            }
        }
    }
    Ok(Ok(GroupsDiff {
        groups: groups(conn, user)?,
        moved,
    }))
}
