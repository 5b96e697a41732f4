//! `breeze-server`: parses flags, sets up logging, serves until SIGINT or SIGTERM.

use breeze_server::cli::{Args, Command};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Keeps glibc's malloc from handing freed memory back to the kernel until this much sits
/// free at the top of a heap (the default is 128 KiB). The store writer frees a batch's worth
/// after every commit, and each time glibc gave it back (madvise, with a TLB shootdown on
/// every core) only to fault it in again for the next batch: a fifth of the server's CPU at
/// chat saturation. Raising the threshold keeps that memory for reuse; glibc stays the
/// allocator because it packs 20,000 idle connections tighter than mimalloc did (3.4 against
/// 4.0 kB each in the bench).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn tune_malloc() {
    const TRIM_THRESHOLD: libc::c_int = 16 << 20;
    // SAFETY: mallopt only sets a tunable of the allocator; it is called before any other
    // thread exists, and a refusal (0) leaves the default in place.
    let applied = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
    if applied == 0 {
        let _ = writeln!(
            std::io::stderr(),
            "breeze-server: could not raise malloc's trim threshold; going on"
        );
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
    let mut args = match Args::parse_with_config(std::env::args_os().collect()) {
        Ok(Ok(args)) => args,
        Ok(Err(clap_error)) => clap_error.exit(),
        Err(e) => return fail(&e),
    };
    // Logs go to stderr, leaving stdout to whatever wraps the server.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A log line that cannot be written (stderr's reader gone: a log shipper that exited,
        // a closed terminal) is dropped. Left on, tracing-subscriber reports the failure with
        // `eprintln!` to the same broken stderr, which panics: the task that logged (the core
        // task, at a login) died and took its connections with it.
        .log_internal_errors(false)
        .init();
    let command = args.command.take();
    if command.is_some() && args.store.is_some() {
        // Both work on the SQLite file; PostgreSQL has its own tools for either.
        return fail(
            &"`backup` and `user` work on the SQLite database (--db); with --store (PostgreSQL) \
              use pg_dump for backups and SQL for accounts",
        );
    }
    match command {
        Some(Command::Backup { dest }) => return backup(&args.db, &dest),
        Some(Command::User { command }) => {
            return match breeze_server::users::run(&args.db, args.hash_cost(), command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            };
        }
        None => {}
    }
    let worker_threads = args.runtime_threads();
    let settings = match args.into_settings() {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    // `Runtime::new()`'s runtime, with the thread count of `--worker-threads` or its default.
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().worker_threads(worker_threads);
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(breeze_server::run(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `breeze-server backup DEST`: one line on success, one naming both files on failure.
fn backup(db: &std::path::Path, dest: &std::path::Path) -> ExitCode {
    // As long as a server's writer may wait for the database: the backup pauses between
    // steps, so a busy server delays it rather than fails it.
    let patience = std::time::Duration::from_secs(30);
    match breeze_store::Db::backup(db, dest, patience) {
        Ok(report) => {
            println!(
                "backed up {} to {} ({} pages, {} bytes), checked",
                db.display(),
                dest.display(),
                report.pages,
                report.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!(
            "cannot back up {} to {}: {e}",
            db.display(),
            dest.display()
        )),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    // Written, not `eprintln!`, which panics when stderr's reader is gone: the exit status
    // would then be a panic's 101 instead of the failure it is.
    let _ = writeln!(std::io::stderr(), "breeze-server: {error}");
    ExitCode::FAILURE
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
