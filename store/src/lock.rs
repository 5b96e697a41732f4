//! One server per database file.
//!
//! Two servers on one SQLite file both start and both write, and each delivers live only to
//! its own clients: a message stored by one waits unseen while its recipient is online on
//! the other, until their next login. So whoever opens a database file for serving holds an
//! exclusive lock on `<db>-lock` (beside SQLite's own `-wal` and `-shm`) for as long as the
//! `Db` lives, and a second opener is refused, naming the file. The lock is the kernel's
//! (`flock`), so it ends with the process: a SIGKILLed server leaves nothing to clean up.
//! A backup (`Db::backup`) reads without it: SQLite's own locks make that safe.

use crate::error::StoreError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Held for as long as a `Db` serves from a file.
#[derive(Debug)]
pub(crate) struct DbLock {
    _file: File,
}

/// The lock file of the database at `db`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

/// Takes the database's lock, or says who has it.
pub(crate) fn lock(db: &Path) -> Result<DbLock, StoreError> {
    let path = lock_path(db);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::LockFile {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DbLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(StoreError::InUse {
            db: db.to_path_buf(),
            lock: path,
        }),
        Err(TryLockError::Error(source)) => Err(StoreError::LockFile { path, source }),
    }
}
