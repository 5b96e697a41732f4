//! The argon2 half of the verifying requests (`Register`, a password `Authenticate`,
//! `ChangePassword`), apart from any database.
//!
//! A store reads what the hash needs, runs `HashJob::run` away from its transaction (and off
//! any async runtime: it takes as long as a login's argon2), then writes the `Finish`. Both
//! the SQLite store here and the PostgreSQL one (`breeze-store-pg`) go through this one
//! verdict, so they cannot disagree on what a wrong password or an old hash cost leads to.

use crate::hash::Hasher;
use breeze_core::UserId;
use breeze_core::storage::{StorageError, StorageOp, StorageResult};

/// Which request a result answers: a failure must still be reported as the right variant.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Register,
    Authenticate,
    ChangePassword,
    SetContacts,
    StoreMessage,
    LoadMailbox,
    MarkDelivered,
    LoadHistory,
    SetBanned,
    ChangeGroups,
    SetProfile,
    LoadProfiles,
    LoadProfile,
    CreateRoom,
    ChangeRoom,
    StoreRoomMessage,
    LoadRooms,
    LoadRoom,
    MarkRoomRead,
}

impl Kind {
    pub fn of(op: &StorageOp) -> Kind {
        match op {
            StorageOp::Register { .. } => Kind::Register,
            StorageOp::Authenticate { .. } => Kind::Authenticate,
            StorageOp::ChangePassword { .. } => Kind::ChangePassword,
            StorageOp::SetContacts { .. } => Kind::SetContacts,
            StorageOp::StoreMessage { .. } => Kind::StoreMessage,
            StorageOp::LoadMailbox { .. } => Kind::LoadMailbox,
            StorageOp::MarkDelivered { .. } => Kind::MarkDelivered,
            StorageOp::LoadHistory { .. } => Kind::LoadHistory,
            StorageOp::SetBanned { .. } => Kind::SetBanned,
            StorageOp::ChangeGroups { .. } => Kind::ChangeGroups,
            StorageOp::SetProfile { .. } => Kind::SetProfile,
            StorageOp::LoadProfiles { .. } => Kind::LoadProfiles,
            StorageOp::LoadProfile { .. } => Kind::LoadProfile,
            StorageOp::CreateRoom { .. } => Kind::CreateRoom,
            StorageOp::ChangeRoom { .. } => Kind::ChangeRoom,
            StorageOp::StoreRoomMessage { .. } => Kind::StoreRoomMessage,
            StorageOp::LoadRooms { .. } => Kind::LoadRooms,
            StorageOp::LoadRoom { .. } => Kind::LoadRoom,
            StorageOp::MarkRoomRead { .. } => Kind::MarkRoomRead,
        }
    }

    pub fn failed(self, why: &str) -> StorageResult {
        let e = StorageError::Failed(why.to_owned());
        match self {
            Kind::Register => StorageResult::Registered(Err(e)),
            Kind::Authenticate => StorageResult::Authenticated(Err(e)),
            Kind::ChangePassword => StorageResult::PasswordChanged(Err(e)),
            Kind::SetContacts => StorageResult::ContactsSet(Err(e)),
            Kind::StoreMessage => StorageResult::MessageStored(Err(e)),
            Kind::LoadMailbox => StorageResult::MailboxLoaded(Err(e)),
            Kind::MarkDelivered => StorageResult::DeliveredMarked(Err(e)),
            Kind::LoadHistory => StorageResult::HistoryLoaded(Err(e)),
            Kind::SetBanned => StorageResult::BannedSet(Err(e)),
            Kind::ChangeGroups => StorageResult::GroupsChanged(Err(e)),
            Kind::SetProfile => StorageResult::ProfileSet(Err(e)),
            Kind::LoadProfiles => StorageResult::ProfilesLoaded(Err(e)),
            Kind::LoadProfile => StorageResult::ProfileLoaded(Err(e)),
            Kind::CreateRoom => StorageResult::RoomCreated(Err(e)),
            Kind::ChangeRoom => StorageResult::RoomChanged(Err(e)),
            Kind::StoreRoomMessage => StorageResult::RoomMessageStored(Err(e)),
            Kind::LoadRooms => StorageResult::RoomsLoaded(Err(e)),
            Kind::LoadRoom => StorageResult::RoomLoaded(Err(e)),
            Kind::MarkRoomRead => StorageResult::RoomReadMarked(Err(e)),
        }
    }
}

/// The argon2 part of a request, with what it read from the database. Holds passwords, so
/// its `Debug` names only the request.
pub enum HashJob {
    Register {
        user: UserId,
        password: String,
    },
    Login {
        user: UserId,
        password: String,
        stored: Option<String>,
        issue_token: bool,
    },
    ChangePassword {
        user: UserId,
        old: String,
        new: String,
        stored: Option<String>,
    },
}

/// What a `HashJob` leaves for the database to do.
pub enum Finish {
    Register {
        user: UserId,
        hash: String,
    },
    /// The password matched `verified`, the hash read in `start`.
    Login {
        user: UserId,
        verified: String,
        rehash: Option<String>,
        issue_token: bool,
    },
    ChangePassword {
        user: UserId,
        verified: String,
        new_hash: String,
    },
    /// The verdict needs no database: wrong password, or hashing failed.
    Done(StorageResult),
}

impl HashJob {
    pub fn kind(&self) -> Kind {
        match self {
            HashJob::Register { .. } => Kind::Register,
            HashJob::Login { .. } => Kind::Authenticate,
            HashJob::ChangePassword { .. } => Kind::ChangePassword,
        }
    }

    /// The expensive part; touches no database.
    pub fn run(self, hasher: &Hasher) -> Finish {
        let kind = self.kind();
        let bad = |kind: Kind| match kind {
            Kind::ChangePassword => {
                StorageResult::PasswordChanged(Err(StorageError::BadCredentials))
            }
            _ => StorageResult::Authenticated(Err(StorageError::BadCredentials)),
        };
        let finish = match self {
            HashJob::Register { user, password } => hasher
                .hash_password(&password)
                .map(|hash| Finish::Register { user, hash }),
            HashJob::Login {
                user,
                password,
                stored,
                issue_token,
            } => hasher.verify_stored(&password, stored).map(|verified| {
                let Some(verified) = verified else {
                    return Finish::Done(bad(kind));
                };
                // Upgrading an old hash while the password is at hand is a courtesy: if it
                // fails, the old hash still works.
                let rehash = hasher
                    .needs_rehash(&verified)
                    .then(|| hasher.hash_password(&password).ok())
                    .flatten();
                Finish::Login {
                    user,
                    verified,
                    rehash,
                    issue_token,
                }
            }),
            HashJob::ChangePassword {
                user,
                old,
                new,
                stored,
            } => hasher
                .verify_stored(&old, stored)
                .and_then(|verified| match verified {
                    Some(verified) => Ok(Finish::ChangePassword {
                        user,
                        verified,
                        new_hash: hasher.hash_password(&new)?,
                    }),
                    None => Ok(Finish::Done(bad(kind))),
                }),
        };
        finish.unwrap_or_else(|e| {
            tracing::warn!(error = %e, ?kind, "password hashing failed");
            Finish::Done(kind.failed("password hashing failed"))
        })
    }
}

impl std::fmt::Debug for HashJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashJob({:?})", self.kind())
    }
}

impl std::fmt::Debug for Finish {
    // Hashes stay out of logs too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finish::Register { user, .. } => write!(f, "Finish::Register({user})"),
            Finish::Login { user, .. } => write!(f, "Finish::Login({user})"),
            Finish::ChangePassword { user, .. } => write!(f, "Finish::ChangePassword({user})"),
            Finish::Done(result) => write!(f, "Finish::Done({result:?})"),
        }
    }
}
