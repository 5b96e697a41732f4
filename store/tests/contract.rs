//! The SQLite store against the storage contract suite the core's `MemStore` also runs.

mod common;

use breeze_core::RequestId;
use breeze_core::storage::{StorageOp, StorageResult};
use breeze_core::testkit::contract::{self, Backend};
use breeze_store::{Db, DbOptions, Hasher, Synchronous};

/// A database in a file of its own, as the server opens one.
struct OnDisk {
    db: Db,
    hasher: Hasher,
    next_id: u64,
    // Dropped last: the directory goes with the database.
    _dir: tempfile::TempDir,
}

impl OnDisk {
    fn new() -> OnDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = DbOptions {
            // Durability is not what the contract checks; a sync per request would make
            // the history check's hundreds of messages slow.
            synchronous: Synchronous::Normal,
            // `Stored::prev` is part of the contract; the server leaves it off (`DbOptions`).
            report_prev: true,
            ..DbOptions::default()
        };
        OnDisk {
            db: Db::open(&dir.path().join("breeze.db"), &opts).expect("open"),
            hasher: common::hasher(),
            next_id: 0,
            _dir: dir,
        }
    }
}

impl Backend for OnDisk {
    fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult {
        self.next_id += 1;
        self.db
            .apply(RequestId(self.next_id), op, now_ms, &self.hasher)
    }
}

#[test]
fn sqlite_keeps_the_contract() {
    contract::assert_keeps_contract("SQLite", || Box::new(OnDisk::new()));
}
