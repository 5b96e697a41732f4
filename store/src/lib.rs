//! SQLite persistence for Breeze: performs the `StorageOp`s the server core emits.
//!
//! - [`Db`]: one connection, synchronous. `apply_batch` runs a batch of requests in one
//!   transaction (hashing passwords inline), for simulations that need determinism.
//! - [`StorageService`]: the `Db` on a writer thread with group commit and argon2 on a pool,
//!   for the real host.
//! - [`Hasher`]: argon2id password hashes in PHC form, and the entropy for salts and tokens.
//!
//! Passwords are stored only as argon2id hashes and resume tokens only as SHA-256 digests.

// Denied everywhere but `joined_wal`, the one VFS shim, which says why it needs it.
#![deny(unsafe_code)]

mod accounts;
mod checkpoint;
mod commits;
mod db;
mod error;
mod groups;
mod hash;
pub mod job;
mod joined_wal;
mod lock;
mod ops;
mod profiles;
mod rooms;
mod schema;
mod service;

pub use accounts::Deleted;
pub use commits::{BUCKETS_MICROS, CommitSnapshot, CommitStats};
pub use db::{BackupReport, Db, DbOptions, Synchronous};
pub use error::StoreError;
pub use hash::{HashCost, Hasher};
pub use ops::TOKEN_LEN;
pub use schema::SCHEMA_VERSION;
pub use service::{MAX_BATCH, StorageService};

#[cfg(test)]
mod tests;
