//! Profiles in PostgreSQL: the same semantics as breeze-store's `profiles.rs`. Two nodes
//! changing one user's profile at once are ordered by the row lock of the upsert, so each
//! change gets its own `rev`. An avatar is kept once per SHA-256 and deleted when no profile
//! names it; `avatar_sha256` has no foreign key here, so a deletion racing another node's
//! use of the same image cannot abort a batch: at worst that card names an image no longer
//! stored, which `LoadProfile` answers without an image until the owner sets one again.

use crate::error::PgError;
use breeze_core::UserId;
use breeze_core::message::{AvatarImage, ProfileCard};
use breeze_core::storage::{NewAvatar, ProfileChange, StorageError};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

const CARD: &str = "name, rev, display_name, signature, avatar_sha256";

pub(crate) async fn set_profile(
    c: &impl GenericClient,
    user: &UserId,
    change: &ProfileChange,
) -> Result<Result<ProfileCard, StorageError>, PgError> {
    if !crate::ops::user_exists(c, user).await? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let stmt = c
        .prepare_cached("SELECT avatar_sha256 FROM profiles WHERE name = $1")
        .await?;
    let old: Option<Vec<u8>> = c
        .query_opt(&stmt, &[&user.as_str()])
        .await?
        .and_then(|r| r.get(0));
    let row = match change {
        ProfileChange::Text {
            display_name,
            signature,
        } => {
            let stmt = c
                .prepare_cached(&format!(
                    "INSERT INTO profiles (name, rev, display_name, signature)
                     VALUES ($1, 1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET rev = profiles.rev + 1,
                         display_name = excluded.display_name, signature = excluded.signature
                     RETURNING {CARD}"
                ))
                .await?;
            c.query_one(&stmt, &[&user.as_str(), display_name, signature])
                .await?
        }
        ProfileChange::Avatar(avatar) => {
            if let Some(NewAvatar { hash, image }) = avatar {
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO avatars (sha256, mime, data) VALUES ($1, $2, $3)
                         ON CONFLICT (sha256) DO NOTHING",
                    )
                    .await?;
                c.execute(&stmt, &[&&hash[..], &image.mime, &image.data])
                    .await?;
            }
            let hash: Option<&[u8]> = avatar.as_ref().map(|a| &a.hash[..]);
            let stmt = c
                .prepare_cached(&format!(
                    "INSERT INTO profiles (name, rev, display_name, signature, avatar_sha256)
                     VALUES ($1, 1, '', '', $2)
                     ON CONFLICT (name) DO UPDATE SET rev = profiles.rev + 1,
                         avatar_sha256 = excluded.avatar_sha256
                     RETURNING {CARD}"
                ))
                .await?;
            c.query_one(&stmt, &[&user.as_str(), &hash]).await?
        }
    };
    let card = card(&row)?;
    if let Some(old) = old
        && card.avatar.is_none_or(|new| new[..] != old[..])
    {
        let stmt = c
            .prepare_cached(
                "DELETE FROM avatars WHERE sha256 = $1
                 AND NOT EXISTS (SELECT 1 FROM profiles WHERE avatar_sha256 = $1)",
            )
            .await?;
        c.execute(&stmt, &[&old]).await?;
    }
    Ok(Ok(card))
}

pub(crate) async fn load_profiles(
    c: &impl GenericClient,
    users: Option<Vec<UserId>>,
) -> Result<Vec<ProfileCard>, PgError> {
    let rows = match users {
        None => {
            let stmt = c
                .prepare_cached(&format!("SELECT {CARD} FROM profiles ORDER BY name"))
                .await?;
            c.query(&stmt, &[]).await?
        }
        Some(users) => {
            let names: Vec<&str> = users.iter().map(UserId::as_str).collect();
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {CARD} FROM profiles WHERE name = ANY($1) ORDER BY name"
                ))
                .await?;
            c.query(&stmt, &[&names]).await?
        }
    };
    rows.iter().map(card).collect()
}

pub(crate) async fn load_profile(
    c: &impl GenericClient,
    user: UserId,
    avatar: bool,
) -> Result<Result<(ProfileCard, Option<AvatarImage>), StorageError>, PgError> {
    if !crate::ops::user_exists(c, &user).await? {
        return Ok(Err(StorageError::NoSuchUser));
    }
    let stmt = c
        .prepare_cached(&format!("SELECT {CARD} FROM profiles WHERE name = $1"))
        .await?;
    let card = match c.query_opt(&stmt, &[&user.as_str()]).await? {
        Some(row) => card(&row)?,
        None => ProfileCard::blank(user),
    };
    let image = match card.avatar {
        Some(hash) if avatar => {
            let stmt = c
                .prepare_cached("SELECT mime, data FROM avatars WHERE sha256 = $1")
                .await?;
            c.query_opt(&stmt, &[&&hash[..]])
                .await?
                .map(|r| AvatarImage {
                    mime: r.get(0),
                    data: r.get(1),
                })
        }
        _ => None,
    };
    Ok(Ok((card, image)))
}

fn card(row: &Row) -> Result<ProfileCard, PgError> {
    let name: String = row.try_get(0)?;
    let rev: i64 = row.try_get(1)?;
    let hash: Option<Vec<u8>> = row.try_get(4)?;
    Ok(ProfileCard {
        user: UserId::new(name).map_err(|e| PgError::Corrupt(format!("a user name: {e}")))?,
        rev: u64::try_from(rev).unwrap_or(0),
        display_name: row.try_get(2)?,
        signature: row.try_get(3)?,
        avatar: hash.and_then(|h| <[u8; 32]>::try_from(h).ok()),
    })
}
