//! Contact groups (`StorageOp::ChangeGroups`, and the groups a login reads with the
//! contacts), as the SQLite store keeps them: a contact's group is a column of its contact
//! row, and a counter on the account numbers a user's groups.
//!
//! Nodes sharing the database may change one user's groups at once (two devices on two
//! nodes): each change first locks the account's row, so the checks it makes (the limit, a
//! name taken, the group's existence) still hold when it writes, and two changes never both
//! pass a check that only one of them may.

use crate::error::PgError;
use crate::ops::user_at;
use breeze_core::UserId;
use breeze_core::message::{ContactGroup, DEFAULT_GROUP, Placement};
use breeze_core::storage::{ContactGroups, GroupChange, GroupsDiff, StorageError};
use deadpool_postgres::GenericClient;
use std::collections::BTreeSet;

fn id_from_sql(v: i64) -> Result<u32, PgError> {
    u32::try_from(v).map_err(|_| PgError::Corrupt(format!("a contact group id: {v}")))
}

/// The user's groups and placements, as a login reads them.
pub(crate) async fn contact_groups(
    c: &impl GenericClient,
    user: &UserId,
) -> Result<ContactGroups, PgError> {
    let stmt = c
        .prepare_cached(
            "SELECT contact, group_id FROM contacts WHERE owner = $1 AND group_id <> 0
             ORDER BY contact",
        )
        .await?;
    let placements = c
        .query(&stmt, &[&user.as_str()])
        .await?
        .iter()
        .map(|r| {
            Ok(Placement {
                contact: user_at(r, 0)?,
                group: id_from_sql(r.try_get(1)?)?,
            })
        })
        .collect::<Result<_, PgError>>()?;
    Ok(ContactGroups {
        groups: groups(c, user).await?,
        placements,
    })
}

async fn groups(c: &impl GenericClient, user: &UserId) -> Result<Vec<ContactGroup>, PgError> {
    let stmt = c
        .prepare_cached(
            "SELECT id, name FROM contact_groups WHERE owner = $1 ORDER BY position, id",
        )
        .await?;
    c.query(&stmt, &[&user.as_str()])
        .await?
        .iter()
        .map(|r| {
            let name: Vec<u8> = r.try_get(1)?;
            Ok(ContactGroup {
                id: id_from_sql(r.try_get(0)?)?,
                name: String::from_utf8(name)
                    .map_err(|e| PgError::Corrupt(format!("a contact group name: {e}")))?,
            })
        })
        .collect()
}

/// All or nothing: everything is checked, under the account's row lock, before the first
/// write.
pub(crate) async fn change_groups(
    c: &impl GenericClient,
    user: &UserId,
    change: &GroupChange,
    max_groups: u32,
) -> Result<Result<GroupsDiff, StorageError>, PgError> {
    let lock = c
        .prepare_cached("SELECT last_group FROM accounts WHERE name = $1 FOR UPDATE")
        .await?;
    let Some(row) = c.query_opt(&lock, &[&user.as_str()]).await? else {
        return Ok(Err(StorageError::NoSuchUser));
    };
    let last: i64 = row.try_get(0)?;
    let list = groups(c, user).await?;
    let has = |id: u32| list.iter().any(|g| g.id == id);
    let taken = |name: &str, except: u32| list.iter().any(|g| g.name == name && g.id != except);
    let owner = user.as_str();
    let mut moved = Vec::new();
    match change {
        GroupChange::Create { name } => {
            if taken(name, DEFAULT_GROUP) {
                return Ok(Err(StorageError::GroupNameTaken));
            }
            if list.len() >= max_groups as usize {
                return Ok(Err(StorageError::TooManyGroups));
            }
            let id = last + 1;
            let bump = c
                .prepare_cached("UPDATE accounts SET last_group = $2 WHERE name = $1")
                .await?;
            c.execute(&bump, &[&owner, &id]).await?;
            let insert = c
                .prepare_cached(
                    "INSERT INTO contact_groups (owner, id, name, position)
                     VALUES ($1, $2, $3, $4)",
                )
                .await?;
            let position = list.len() as i64;
            c.execute(&insert, &[&owner, &id, &name.as_bytes(), &position])
                .await?;
        }
        GroupChange::Rename { group, name } => {
            if !has(*group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            if taken(name, *group) {
                return Ok(Err(StorageError::GroupNameTaken));
            }
            let stmt = c
                .prepare_cached("UPDATE contact_groups SET name = $3 WHERE owner = $1 AND id = $2")
                .await?;
            c.execute(&stmt, &[&owner, &i64::from(*group), &name.as_bytes()])
                .await?;
        }
        GroupChange::Delete { group } => {
            if !has(*group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            let group = i64::from(*group);
            let release = c
                .prepare_cached(
                    "UPDATE contacts SET group_id = 0 WHERE owner = $1 AND group_id = $2
                     RETURNING contact",
                )
                .await?;
            let names: BTreeSet<UserId> = c
                .query(&release, &[&owner, &group])
                .await?
                .iter()
                .map(|r| user_at(r, 0))
                .collect::<Result<_, _>>()?;
            moved = names
                .into_iter()
                .map(|contact| Placement {
                    contact,
                    group: DEFAULT_GROUP,
                })
                .collect();
            let delete = c
                .prepare_cached("DELETE FROM contact_groups WHERE owner = $1 AND id = $2")
                .await?;
            c.execute(&delete, &[&owner, &group]).await?;
        }
        GroupChange::Reorder { group, position } => {
            if !has(*group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            let mut ids: Vec<i64> = list
                .iter()
                .map(|g| i64::from(g.id))
                .filter(|&id| id != i64::from(*group))
                .collect();
            ids.insert((*position as usize).min(ids.len()), i64::from(*group));
            let stmt = c
                .prepare_cached(
                    "UPDATE contact_groups AS g SET position = o.at - 1
                     FROM unnest($2::bigint[]) WITH ORDINALITY AS o(id, at)
                     WHERE g.owner = $1 AND g.id = o.id",
                )
                .await?;
            c.execute(&stmt, &[&owner, &ids]).await?;
        }
        GroupChange::File { contacts, group } => {
            if *group != DEFAULT_GROUP && !has(*group) {
                return Ok(Err(StorageError::NoSuchGroup));
            }
            let contacts: BTreeSet<&UserId> = contacts.iter().collect();
            let names: Vec<&str> = contacts.iter().map(|u| u.as_str()).collect();
            let read = c
                .prepare_cached(
                    "SELECT contact, group_id FROM contacts
                     WHERE owner = $1 AND contact = ANY($2) ORDER BY contact",
                )
                .await?;
            let rows = c.query(&read, &[&owner, &names]).await?;
            if rows.len() != names.len() {
                return Ok(Err(StorageError::NoSuchUser));
            }
            let group = i64::from(*group);
            let mut filing = Vec::new();
            for r in &rows {
                let at: i64 = r.try_get(1)?;
                if at != group {
                    filing.push(user_at(r, 0)?);
                }
            }
            let filed: Vec<&str> = filing.iter().map(UserId::as_str).collect();
            let write = c
                .prepare_cached(
                    "UPDATE contacts SET group_id = $3 WHERE owner = $1 AND contact = ANY($2)",
                )
                .await?;
            c.execute(&write, &[&owner, &filed, &group]).await?;
            let group = id_from_sql(group)?;
            moved = filing
                .into_iter()
                .map(|contact| Placement { contact, group })
                .collect();
        }
    }
    Ok(Ok(GroupsDiff {
        groups: groups(c, user).await?,
        moved,
    }))
}
