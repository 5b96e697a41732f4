//! `PgStore`: a connection pool to one migrated database.

use crate::error::{PgError, with_causes};
use crate::{ops, schema};
use breeze_core::UserId;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::time::Duration;

/// How the pool behaves.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections held open: one for the ordered writer, the rest for reads and logins,
    /// which run side by side.
    pub pool_size: usize,
    /// How long to wait for a connection (a new one, or a free one from the pool) before
    /// failing the request that needs it: a database that went away fails requests, it does
    /// not hang them.
    pub timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 8,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A PostgreSQL database for Breeze, migrated to `SCHEMA_VERSION`. Cheap to clone: clones
/// share the pool.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: Pool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database[?options]`), makes
    /// sure the database is reachable, and migrates it. Must run inside a tokio runtime.
    pub async fn open(url: &str, opts: &PgOptions) -> Result<PgStore, PgError> {
        let config = session_config(url, opts)?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                // Checking a connection costs a round trip per checkout; a broken one is
                // found by the request that uses it, which fails and is retried by its client
                // (and then the idle ones are dropped: `forget_idle`).
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.timeout))
            .create_timeout(Some(opts.timeout))
            .recycle_timeout(Some(opts.timeout))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| PgError::Unreachable(pool_error(&e)))?;
        schema::migrate(&mut client).await?;
        Ok(PgStore { pool })
    }

    /// The schema version of the open database (after `open`, `SCHEMA_VERSION`).
    pub async fn schema_version(&self) -> Result<i64, PgError> {
        let client = self.client().await?;
        schema::version(&client).await
    }

    /// Every registered user, sorted.
    pub async fn users(&self) -> Result<Vec<UserId>, PgError> {
        let client = self.client().await?;
        ops::users(&client).await
    }

    /// Closes the pool's idle connections, after a write found the database out of reach:
    /// they lived through the same outage, and each would fail one more request when handed
    /// out (the pool checks only whether a connection's task has ended, and a connection cut
    /// at the same moment may not have yet). New ones are opened as needed.
    pub(crate) fn forget_idle(&self) {
        let dropped = self.pool.retain(|_, _| false).removed.len();
        if dropped > 0 {
            tracing::info!(
                dropped,
                "idle database connections closed after a failed write"
            );
        }
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, PgError> {
        self.pool
            .get()
            .await
            .map_err(|e| PgError::Unreachable(pool_error(&e)))
    }
}

/// How each of the store's connections to `url` is made: its timeouts, its name, and the
/// session settings every statement of this store is planned under.
pub(crate) fn session_config(
    url: &str,
    opts: &PgOptions,
) -> Result<tokio_postgres::Config, PgError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url(with_causes(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(opts.timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("breeze-server");
    }
    // Every statement is prepared once per connection (`prepare_cached`); left to choose,
    // PostgreSQL kept planning each execution afresh (a custom plan) for the statements
    // with array parameters, and planning was 14 % of its CPU at 5,000 msg/s over 3 nodes
    // (BENCHMARKS.md, cluster). The generic plans were checked with EXPLAIN against
    // 100,000 accounts and 1,000,000 messages: the same index scans as the custom ones.
    //
    // And no sequential scan where an index can serve: every statement here is a lookup
    // by key, but each generic plan is made from the statistics of the moment (at the
    // statement's first execution on a connection, and again whenever they change), and
    // `mailbox` is a queue no statistics describe: a row per message, deleted at its ack,
    // it holds few live rows and, until autovacuum comes (a minute apart at best), every
    // dead one. Planned while it looked small (a new database; after each vacuum) the
    // ack's DELETE hashed a sequential scan of the whole table per statement, which grew
    // with the dead rows: 145–959 µs a statement in 40 s runs at 5,000 cross-node msg/s,
    // where the index probes take 18–84 µs. The insert's account checks, planned on a new
    // database's near-empty `accounts`, hashed a scan of it per batch too; probing the
    // index instead made the insert cheaper at that rate (87 against 144 µs a statement)
    // and no dearer at saturation (BENCHMARKS.md, cluster). A statement with no index to
    // use still scans.
    //
    // A URL's own `options` come after, so they can say otherwise.
    let generic = "-c plan_cache_mode=force_generic_plan -c enable_seqscan=off";
    let options = match config.get_options() {
        Some(given) => format!("{generic} {given}"),
        None => generic.to_owned(),
    };
    config.options(options);
    Ok(config)
}

/// The pool's error, with the database's own reason when there is one (deadpool's wording
/// alone says only "backend error").
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => with_causes(e),
        e => e.to_string(),
    }
}
