//! `breeze-server user add|reset-password|delete|ban|unban|list`: accounts managed on the database
//! while no server runs on it (`Db::open` takes the file's lock, so a running server refuses
//! these, naming itself). Changes are logged, as the server logs registrations.

use crate::cli::UserCommand;
use breeze_core::UserId;
use breeze_core::config::password_is_acceptable;
use breeze_store::{Db, DbOptions, HashCost, Hasher, StoreError};
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use tracing::info;

/// Performs `command` on the database at `db`; the error is one line for the user.
pub fn run(db: &Path, cost: HashCost, command: UserCommand) -> Result<(), String> {
    let opened = |db: &Path| {
        Db::open(db, &DbOptions::default())
            .map_err(|e| format!("cannot open database {}: {e}", db.display()))
    };
    match command {
        UserCommand::List => {
            let store = opened(db)?;
            let banned = store.banned_users().map_err(|e| e.to_string())?;
            for user in store.users().map_err(|e| e.to_string())? {
                if banned.binary_search(&user).is_ok() {
                    println!("{user} (banned)");
                } else {
                    println!("{user}");
                }
            }
        }
        UserCommand::Ban { user } => {
            opened(db)?
                .set_banned(&user, true)
                .map_err(|e| format!("cannot ban {user}: {e}"))?;
            info!(%user, db = %db.display(), "user banned");
            println!("banned {user}");
        }
        UserCommand::Unban { user } => {
            opened(db)?
                .set_banned(&user, false)
                .map_err(|e| format!("cannot unban {user}: {e}"))?;
            info!(%user, db = %db.display(), "user unbanned");
            println!("unbanned {user}");
        }
        UserCommand::Add { user } => {
            check_name(&user)?;
            let password = password(&user)?;
            let mut store = opened(db)?;
            let hasher = hasher(cost)?;
            store
                .add_user(&user, &password, &hasher, now_ms())
                .map_err(|e| format!("cannot add {user}: {e}"))?;
            info!(%user, db = %db.display(), "user added");
            println!("added {user}");
        }
        UserCommand::ResetPassword { user } => {
            let password = password(&user)?;
            let mut store = opened(db)?;
            let hasher = hasher(cost)?;
            store
                .reset_password(&user, &password, &hasher)
                .map_err(|e| format!("cannot reset the password of {user}: {e}"))?;
            info!(%user, db = %db.display(), "password reset");
            println!("password of {user} reset; each of its devices must log in with it");
        }
        UserCommand::Delete { user } => {
            let deleted = opened(db)?
                .delete_user(&user)
                .map_err(|e| format!("cannot delete {user}: {e}"))?;
            info!(%user, db = %db.display(), messages = deleted.messages, "user deleted");
            println!(
                "deleted {user} and the {} messages to or from it",
                deleted.messages
            );
        }
    }
    Ok(())
}

/// Names are checked where they are typed: clap builds a `UserId` without the core's rules.
fn check_name(user: &UserId) -> Result<(), String> {
    user.validate()
        .map_err(|e| format!("cannot add {user}: {e}"))
}

fn hasher(cost: HashCost) -> Result<Hasher, String> {
    Hasher::new(cost).map_err(|e: StoreError| format!("cannot set up password hashing: {e}"))
}

/// BREEZE_PASSWORD, else asked twice on a terminal, else one line of standard input.
fn password(user: &UserId) -> Result<String, String> {
    let password = if let Ok(p) = std::env::var("BREEZE_PASSWORD") {
        p
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {user}: "))
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("the same again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if !password_is_acceptable(&password) {
        return Err(format!(
            "the password for {user} must be 8 to 1024 bytes (BREEZE_PASSWORD, a terminal, or \
             one line on standard input)"
        ));
    }
    Ok(password)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
