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
    /// tokio-postgres's own `Display` of a server's error is only "db error": the server's
    /// message (and its detail and hint) is what says what went wrong.
    #[error("database error: {}", db_reason(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(
        "no schema to keep Breeze's tables in: the connection's search_path is {search_path}, \
         and no schema it names exists; create one (CREATE SCHEMA name) or name an existing \
         one in the URL (options=-csearch_path%3Dname)"
    )]
    NoSchema { search_path: String },
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

/// The server's message for an error it reported, with its detail and hint; the error and
/// its causes for any other (a connection lost, a value that did not convert).
fn db_reason(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return with_causes(e);
    };
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    for (label, part) in [("detail", db.detail()), ("hint", db.hint())] {
        if let Some(part) = part {
            text.push_str(&format!("; {label}: {part}"));
        }
    }
    text
}
