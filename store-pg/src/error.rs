use thiserror::Error;

/// Why the PostgreSQL store could not be opened, or could not do what it was asked.
///
/// Failures of single requests never surface as this type: the service reports them to the
/// core as `StorageError::Failed`, which the core turns into a "try again" for the client.
#[derive(Debug, Error)]
pub enum PgError {
    /// The parser's reason, with its causes (tokio-postgres keeps the detail in `source`).
    #[error("not a PostgreSQL connection URL: {0}")]
    Url(String),
    #[error("cannot set up the connection pool: {0}")]
    Pool(String),
    #[error("cannot reach PostgreSQL: {0}")]
    Unreachable(String),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "the database has schema version {found}, but this build only knows versions up to \
         {known}; it was written by a newer Breeze"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database holds a value this build cannot read: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] breeze_store::StoreError),
}

/// An error and its chain of causes, on one line: tokio-postgres's own `Display` says only
/// "error connecting to server" or "invalid connection string", and keeps the why below.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
