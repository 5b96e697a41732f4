//! A PostgreSQL schema of its own for one test: tests run in parallel against one database,
//! and each leaves nothing behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where the tests' PostgreSQL is, unless `BREEZE_TEST_PG` says otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Whether a test must fail, not skip, when a service it needs is missing (CI sets it).
pub fn services_required() -> bool {
    std::env::var("BREEZE_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A uniquely named schema in the test database, dropped with everything in it when this is
/// dropped. `url()` connects with that schema as the search path, so a store opened on it
/// creates its tables there.
#[derive(Debug)]
pub struct TestPg {
    base: String,
    schema: String,
    url: String,
}

impl TestPg {
    /// A fresh schema, or `None` (after a skip line naming `test`) when PostgreSQL cannot be
    /// reached.
    ///
    /// # Panics
    /// When PostgreSQL cannot be reached and `BREEZE_REQUIRE_SERVICES=1`.
    pub fn create(test: &str) -> Option<TestPg> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var("BREEZE_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!(
            "breeze_test_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        match run_sql(&base, format!("CREATE SCHEMA {schema}")) {
            Ok(()) => {}
            Err(e) if services_required() => {
                panic!("{test}: PostgreSQL at {base} is required (BREEZE_REQUIRE_SERVICES=1): {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIP {test}: PostgreSQL at {base} is unreachable ({e}); set BREEZE_TEST_PG, \
                     or BREEZE_REQUIRE_SERVICES=1 to fail instead"
                );
                return None;
            }
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Some(TestPg { base, schema, url })
    }

    /// Connects into this test's schema.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Runs `sql` (one or more statements) in this test's schema.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        run_sql(&self.url, sql.to_owned())
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let dropped = run_sql(&self.base, format!("DROP SCHEMA {} CASCADE", self.schema));
        if let Err(e) = dropped {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own: callable from a plain
/// test, from inside a runtime, and from `Drop`.
fn run_sql(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
            config.connect_timeout(Duration::from_secs(5));
            let (client, conn) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| breeze_store_pg::with_causes(&e))?;
            let conn = tokio::spawn(conn);
            let done = client
                .batch_execute(&sql)
                .await
                .map_err(|e| breeze_store_pg::with_causes(&e));
            drop(client);
            let _ = conn.await;
            done
        })
    })
    .join()
    .map_err(|_| "the SQL thread panicked".to_owned())?
}
