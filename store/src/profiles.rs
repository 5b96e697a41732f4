//! Profiles (`SetProfile`, `LoadProfiles`, `LoadProfile`): one row per user who ever set
//! one, avatar images kept once per content hash and forgotten when no profile names them.

use crate::error::StoreError;
use breeze_core::UserId;
use breeze_core::message::{AvatarImage, ProfileCard};
use breeze_core::storage::{NewAvatar, ProfileChange, StorageError};
use rusqlite::{Connection, OptionalExtension, Row, params};

const CARD: &str = "user, rev, display_name, signature, avatar_sha256";

/// Counts the change (`rev` + 1) and returns the card as stored. Several statements: runs
/// under a savepoint (`Work::needs_savepoint`).
pub(crate) fn set_profile(
    conn: &Connection,
    user: &UserId,
    change: ProfileChange,
) -> Result<Result<ProfileCard, StorageError>, StoreError> {
    if !super::ops::user_exists(conn, user)? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let old: Option<Vec<u8>> = conn
        .prepare_cached("SELECT avatar_sha256 FROM profiles WHERE user = ?1")?
        .query_row([user.as_str()], |row| row.get(0))
        .optional()?
        .flatten();
    let card = match change {
        ProfileChange::Text {
            display_name,
            signature,
        } => conn
            .prepare_cached(&format!(
                "INSERT INTO profiles (user, rev, display_name, signature) VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (user) DO UPDATE SET rev = profiles.rev + 1,
                     display_name = excluded.display_name, signature = excluded.signature
                 RETURNING {CARD}"
            ))?
            .query_row(params![user.as_str(), display_name, signature], card)?,
        ProfileChange::Avatar(avatar) => {
            let hash = avatar.as_ref().map(|a| a.hash.to_vec());
            if let Some(NewAvatar { hash, image }) = &avatar {
                conn.prepare_cached(
                    "INSERT INTO avatars (sha256, mime, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (sha256) DO NOTHING",
                )?
                .execute(params![&hash[..], image.mime, image.data])?;
            }
            conn.prepare_cached(&format!(
                "INSERT INTO profiles (user, rev, display_name, signature, avatar_sha256)
                 VALUES (?1, 1, '', '', ?2)
                 ON CONFLICT (user) DO UPDATE SET rev = profiles.rev + 1,
                     avatar_sha256 = excluded.avatar_sha256
                 RETURNING {CARD}"
            ))?
            .query_row(params![user.as_str(), hash], card)?
        }
    };
    if let Some(old) = old
        && card.avatar.is_none_or(|new| new[..] != old[..])
    {
        conn.prepare_cached(
            "DELETE FROM avatars WHERE sha256 = ?1
             AND NOT EXISTS (SELECT 1 FROM profiles WHERE avatar_sha256 = ?1)",
        )?
        .execute([old])?;
    }
    Ok(Ok(card))
}

/// The cards ever set of `users` (`None`: everyone's), sorted by user.
pub(crate) fn load_profiles(
    conn: &Connection,
    users: Option<Vec<UserId>>,
) -> Result<Vec<ProfileCard>, StoreError> {
    let Some(mut users) = users else {
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {CARD} FROM profiles ORDER BY user"))?;
        let cards = stmt.query_map([], card)?.collect::<Result<_, _>>()?;
        return Ok(cards);
    };
    users.sort();
    users.dedup();
    let mut stmt = conn.prepare_cached(&format!("SELECT {CARD} FROM profiles WHERE user = ?1"))?;
    let mut cards = Vec::new();
    for user in &users {
        if let Some(c) = stmt.query_row([user.as_str()], card).optional()? {
            cards.push(c);
        }
    }
    Ok(cards)
}

/// `user`'s card (blank if never set), with the image when `avatar` asks for it.
pub(crate) fn load_profile(
    conn: &Connection,
    user: UserId,
    avatar: bool,
) -> Result<Result<(ProfileCard, Option<AvatarImage>), StorageError>, StoreError> {
    if !super::ops::user_exists(conn, &user)? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let found = conn
        .prepare_cached(&format!("SELECT {CARD} FROM profiles WHERE user = ?1"))?
        .query_row([user.as_str()], card)
        .optional()?;
    let card = found.unwrap_or_else(|| ProfileCard::blank(user));
    let image = match card.avatar {
        Some(hash) if avatar => conn
            .prepare_cached("SELECT mime, data FROM avatars WHERE sha256 = ?1")?
            .query_row([&hash[..]], |row| {
                Ok(AvatarImage {
                    mime: row.get(0)?,
                    data: row.get(1)?,
                })
            })
            .optional()?,
        _ => None,
    };
    Ok(Ok((card, image)))
}

fn card(row: &Row<'_>) -> rusqlite::Result<ProfileCard> {
    let rev: i64 = row.get(1)?;
    let hash: Option<Vec<u8>> = row.get(4)?;
    Ok(ProfileCard {
        user: super::ops::user_at(row, 0)?,
        rev: u64::try_from(rev).unwrap_or(0),
        display_name: row.get(2)?,
        signature: row.get(3)?,
        avatar: hash.and_then(|h| <[u8; 32]>::try_from(h).ok()),
    })
}
