//! PostgreSQL persistence for Breeze: performs the core's `StorageOp`s against a database that
//! several server nodes share (`breeze-server --store postgres://…`).
//!
//! A crate of its own rather than a feature of `breeze-store`: that crate is synchronous and
//! runtime-free (a writer thread over one SQLite file, also run inline by the simulation),
//! while this one is async through and through (tokio-postgres and a connection pool on the
//! server's runtime). Keeping them apart keeps tokio-postgres out of the simulation's build
//! and the async code out of the SQLite store. What both must agree on is shared, not copied:
//! the argon2 verdicts (`breeze_store::job`), the `Hasher`, the token length, and the storage
//! contract suite (`breeze_core::testkit::contract`), which this store passes as SQLite does.
//!
//! - [`PgStore`]: a pool over one database, migrated at open (`schema.rs`).
//! - [`PgService`]: the requests performed on tasks: plain writes in order with group commit
//!   (`writer.rs`), reads and logins side by side (`service.rs`).
//!
//! Several nodes sharing one database: every number and uniqueness is the database's
//! (message seqs from a sequence, in commit order per recipient under a mailbox lock, names
//! by primary key, resent messages by a unique key), never an in-process counter two nodes
//! could both hand out (`ops.rs`).

#![forbid(unsafe_code)]

mod error;
mod groups;
mod ops;
mod profiles;
mod rooms;
mod schema;
mod service;
mod store;
mod writer;

pub use error::{PgError, with_causes};
pub use schema::SCHEMA_VERSION;
pub use service::{NowMs, PgService, system_now_ms};
pub use store::{PgOptions, PgStore};
pub use writer::MAX_BATCH;
