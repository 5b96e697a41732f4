use std::path::PathBuf;
use thiserror::Error;

/// Why the store could not be opened or could not do what it was asked.
///
/// Failures of single requests never surface as this type: `apply_batch` reports them to the
/// core as `StorageError::Failed`, which the core turns into a "try again" for the client.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "the database has schema version {found}, but this build only knows versions up to \
         {known}; it was written by a newer Breeze"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database has schema version {0}, which no Breeze build writes")]
    SchemaUnknown(i64),
    #[error("invalid password hashing cost: {0}")]
    HashCost(#[source] argon2::Error),
    #[error("password hashing failed: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    #[error("the operating system's random source failed: {0}")]
    Entropy(#[source] getrandom::Error),
    #[error("could not start a storage thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(
        "the database {} is in use by another Breeze server (it holds {}); stop that one \
         first, or give this one a database of its own",
        db.display(),
        lock.display()
    )]
    InUse { db: PathBuf, lock: PathBuf },
    #[error("cannot lock the database through {}: {source}", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite's `quick_check` found damage; the report is SQLite's, first lines only.
    #[error(
        "the database is damaged ({0}); restore it from a backup (README, \"Backups\") rather \
         than serve from it"
    )]
    Damaged(String),
    #[error(
        "user names no longer differ by case, but these accounts do: {}; keep one of each \
         (after a backup: sqlite3 DB \"DELETE FROM accounts WHERE user = 'NAME'\") and start \
         again",
        .0.join("; ")
    )]
    CaseCollision(Vec<String>),
    #[error("the user {0} already exists")]
    UserExists(String),
    #[error("there is no user {0}")]
    NoSuchUser(String),
    #[error("{} already exists; a backup never overwrites a file", .0.display())]
    BackupExists(PathBuf),
}
