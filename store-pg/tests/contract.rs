//! The PostgreSQL store against the storage contract suite that the core's `MemStore` and
//! the SQLite store also run: one suite, three backends.

mod common;

use breeze_core::storage::{StorageOp, StorageResult};
use breeze_core::testkit::contract::{self, Backend};
use breeze_testsupport::pg::TestPg;
use common::Node;

/// A fresh schema per check, a service on it, and a runtime to drive the service from the
/// suite's synchronous calls.
struct OnPostgres {
    rt: tokio::runtime::Runtime,
    node: Option<Node>,
    // Dropped after the service is shut down (see `Drop`): the schema goes last.
    _db: TestPg,
}

impl OnPostgres {
    fn new() -> OnPostgres {
        let db = TestPg::create("postgres_keeps_the_contract")
            .expect("PostgreSQL was reachable when the suite began");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let node = rt.block_on(Node::start(db.url()));
        OnPostgres {
            rt,
            node: Some(node),
            _db: db,
        }
    }
}

impl Backend for OnPostgres {
    fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult {
        let node = self.node.as_mut().expect("running");
        self.rt.block_on(node.apply(op, now_ms))
    }
}

impl Drop for OnPostgres {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown());
        }
    }
}

#[test]
fn postgres_keeps_the_contract() {
    // Whether to run at all: a skip line, or a failure under BREEZE_REQUIRE_SERVICES=1.
    if TestPg::create("postgres_keeps_the_contract").is_none() {
        return;
    }
    contract::assert_keeps_contract("PostgreSQL", || Box::new(OnPostgres::new()));
}
