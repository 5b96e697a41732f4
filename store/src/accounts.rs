//! Accounts as an operator manages them (`breeze-server user …`), on a database no server is
//! serving (`Db::open` holds the file's lock, so a running server and these never meet):
//! the core's view of users is loaded at start and kept current only by the core itself.

use crate::db::Db;
use crate::error::StoreError;
use crate::hash::Hasher;
use breeze_core::UserId;
use rusqlite::params;

/// What deleting an account removed besides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// Messages the user sent or was sent: both sides' copies of a conversation are one row.
    pub messages: u64,
}

impl Db {
    /// Creates an account. `StoreError::UserExists` if the (case-folded) name is taken.
    pub fn add_user(
        &mut self,
        user: &UserId,
        password: &str,
        hasher: &Hasher,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let hash = hasher.hash_password(password)?;
        let tx = self.conn.transaction()?;
        let added = tx
            .prepare_cached(
                "INSERT INTO accounts (user, password_hash, created_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user) DO NOTHING",
            )?
            .execute(params![
                user.as_str(),
                hash,
                i64::try_from(now_ms).unwrap_or(i64::MAX)
            ])?;
        if added == 0 {
            return Err(StoreError::UserExists(user.to_string()));
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets a new password and revokes every resume token, so each device must log in with
    /// the new password.
    pub fn reset_password(
        &mut self,
        user: &UserId,
        password: &str,
        hasher: &Hasher,
    ) -> Result<(), StoreError> {
        let hash = hasher.hash_password(password)?;
        let tx = self.conn.transaction()?;
        let changed = tx
            .prepare_cached("UPDATE accounts SET password_hash = ?2 WHERE user = ?1")?
            .execute(params![user.as_str(), hash])?;
        if changed == 0 {
            return Err(StoreError::NoSuchUser(user.to_string()));
        }
        tx.prepare_cached("DELETE FROM tokens WHERE user = ?1")?
            .execute([user.as_str()])?;
        tx.commit()?;
        Ok(())
    }

    /// Bars the account from logging in (`banned`), or lets it in again; its tokens are
    /// kept. The same as an admin's online `breeze admin ban|unban`.
    pub fn set_banned(&mut self, user: &UserId, banned: bool) -> Result<(), StoreError> {
        crate::ops::set_banned(&self.conn, user, banned)?
            .map_err(|_| StoreError::NoSuchUser(user.to_string()))
    }

    /// The banned accounts, sorted.
    pub fn banned_users(&self) -> Result<Vec<UserId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT user FROM accounts WHERE banned = 1 ORDER BY user")?;
        let banned = stmt
            .query_map([], |row| crate::ops::user_at(row, 0))?
            .collect::<Result<_, _>>()?;
        Ok(banned)
    }

    /// Deletes an account with its tokens, its contact list, its place on other users'
    /// lists, and every message to or from it (a conversation is one row per message, so
    /// the other side's history loses them too), and the messages it sent to rooms (their
    /// rooms keep their seqs, with a gap where each was).
    pub fn delete_user(&mut self, user: &UserId) -> Result<Deleted, StoreError> {
        let tx = self.conn.transaction()?;
        let messages = tx
            .prepare_cached("DELETE FROM messages WHERE sender = ?1 OR recipient = ?1")?
            .execute([user.as_str()])?
            + tx.prepare_cached("DELETE FROM room_messages WHERE sender = ?1")?
                .execute([user.as_str()])?;
        // Tokens, contacts (both directions), the profile and room memberships go by ON DELETE CASCADE.
        let deleted = tx
            .prepare_cached("DELETE FROM accounts WHERE user = ?1")?
            .execute([user.as_str()])?;
        if deleted == 0 {
            return Err(StoreError::NoSuchUser(user.to_string()));
        }
        // The avatar too, unless another profile shows the same image.
        tx.prepare_cached(
            "DELETE FROM avatars WHERE NOT EXISTS
             (SELECT 1 FROM profiles WHERE avatar_sha256 = avatars.sha256)",
        )?
        .execute([])?;
        tx.commit()?;
        Ok(Deleted {
            messages: messages as u64,
        })
    }
}
