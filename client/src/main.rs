//! `breeze`: the command-line client of the Breeze chat and presence server.

mod chat;
mod cli;
mod editor;
mod input;
mod oneshot;
mod rooms;
mod screen;
mod session;
mod transfers;
mod ui;

use breeze_core::client::AdminAction;
use cli::{AdminCommand, Cli, Command};
use std::io::Write;
use std::process::ExitCode;

/// An error that ends the program: printed as `breeze: …` on one line, exit status 1.
#[derive(Debug)]
pub struct Fatal(pub String);

fn main() -> ExitCode {
    let cli: Cli = breeze_flags::parse();
    // Logs (the transport's debug lines) only when asked for, and to stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&Fatal(format!("cannot start the async runtime: {e}"))),
    };
    let style = ui::Style::detect();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Register { account, timeout } => oneshot::register(account, timeout).await,
            Command::Chat {
                account,
                status,
                downloads,
            } => chat::run(account, status, downloads, style).await,
            Command::Send {
                account,
                to,
                timeout,
                text,
            } => oneshot::send(account, to, text, timeout).await,
            Command::Admin { command } => match command {
                AdminCommand::Who { account, timeout } => {
                    oneshot::admin_who(account, timeout).await
                }
                AdminCommand::Kick(t) => oneshot::admin(AdminAction::Kick, t).await,
                AdminCommand::Ban(t) => oneshot::admin(AdminAction::Ban, t).await,
                AdminCommand::Unban(t) => oneshot::admin(AdminAction::Unban, t).await,
            },
        }
    });
    // The stdin thread of `chat` may be blocked in a read: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Fatal) -> ExitCode {
    // Written, not `eprintln!`, which panics when stderr's reader is gone: the exit status
    // would then be a panic's 101 instead of the failure it is.
    let _ = writeln!(std::io::stderr(), "breeze: {}", e.0);
    ExitCode::FAILURE
}
