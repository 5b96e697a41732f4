//! Command-line flags, each account flag with an environment-variable fallback.

use breeze_core::UserId;
use breeze_core::message::Status;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The Breeze chat client.
///
/// `register` creates an account, `chat` is the interactive client, `send` delivers one
/// message from a script, `admin who|kick|ban|unban` are for the server's administrators. The account flags can also be set
/// through BREEZE_SERVER, BREEZE_USER and BREEZE_PASSWORD; a flag on the command line wins.
/// Without a password the client asks for one when standard input is a terminal.
#[derive(Debug, Parser)]
#[command(name = "breeze", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account (asks for the password twice on a terminal).
    Register {
        #[command(flatten)]
        account: Account,
        /// Give up when the server has not answered within this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// Chat interactively: the user list live, messages as they come. Type /help inside.
    ///
    /// Lines starting with `/` are commands (/msg, /status, /who, /contacts, /passwd,
    /// /history, /send-file, /accept, /help, /quit); end of input (Ctrl-D) or Ctrl-C also
    /// logs out. The client reconnects by itself after a lost connection, except when the
    /// same user logs in elsewhere.
    Chat {
        #[command(flatten)]
        account: Account,
        /// The status to log in with; `invisible` shows you offline to everyone else.
        #[arg(long, value_enum, default_value_t = StatusArg::Online)]
        status: StatusArg,
        /// Where files others send you (/accept) are saved; ~/Downloads if there is one,
        /// else the current directory.
        #[arg(long, value_name = "DIR")]
        downloads: Option<PathBuf>,
    },
    /// Send one message and wait until the server has stored it; prints its sequence number.
    ///
    /// For scripts and bots: logs in as an agent, which takes no part in USER's presence or
    /// the duplicate-login policy — USER's chat stays connected, visible and unchanged —
    /// sends, waits for the server's confirmation that the message is durable, logs out.
    /// Messages waiting for USER are left for USER's chat.
    Send {
        #[command(flatten)]
        account: Account,
        /// The recipient; online or not (the server keeps it for them).
        #[arg(long, value_name = "USER")]
        to: UserId,
        /// Fail if the server has not confirmed the message within this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
        /// The message; several words are joined with spaces. `-` alone reads it from
        /// standard input (up to the end, a final newline dropped).
        #[arg(required = true, num_args = 1.., value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Administration (the user must be listed in the server's --admin).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the users online and their sessions: node, connection, connected for, idle.
    ///
    /// Logs in as an agent for the query and out again, like `send`: the admin's own chat
    /// is neither replaced nor changed.
    Who {
        #[command(flatten)]
        account: Account,
        /// Give up when the server has not answered within this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        timeout: Duration,
    },
    /// End every session of a user, on every node: their clients say "removed by an
    /// administrator" and do not reconnect by themselves. They may log in again.
    Kick(AdminTarget),
    /// Bar a user from logging in, then end their sessions like `kick`. Stored: it lasts
    /// across restarts until `unban`.
    Ban(AdminTarget),
    /// Let a banned user log in again.
    Unban(AdminTarget),
}

/// The account an admin command acts as, and the user it acts on. Like `who`, it logs in
/// as an agent: the admin's own chat is neither replaced nor changed.
#[derive(Debug, Args)]
pub struct AdminTarget {
    #[command(flatten)]
    pub account: Account,
    /// Give up when the server has not answered within this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// The user to act on.
    #[arg(value_name = "USER")]
    pub target: UserId,
}

/// Where to connect and as whom.
#[derive(Debug, Args)]
pub struct Account {
    /// The server's address, `HOST:PORT`; or the nodes of a cluster, `HOST:PORT,HOST:PORT,…`,
    /// tried in turn: each new connection goes to the next (after a node died or fenced
    /// itself, the client comes back through another).
    #[arg(
        long,
        env = "BREEZE_SERVER",
        default_value = "127.0.0.1:7878",
        value_name = "HOST:PORT[,…]"
    )]
    pub server: String,

    /// Your user name: 1–32 of `A-Z a-z 0-9 _ - .`, not starting with `.` or `-`.
    #[arg(long, env = "BREEZE_USER", value_name = "USER")]
    pub user: UserId,

    /// Your password (8 to 1024 bytes). Better set through BREEZE_PASSWORD, or left out to
    /// be asked for on a terminal, than visible to everyone in the process list.
    #[arg(
        long,
        env = "BREEZE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,

    /// Speak TLS and verify the server's certificate chain against this CA certificate (PEM),
    /// and its name against --tls-name (or the host name of --server, or the address dialled).
    #[arg(
        long,
        env = "BREEZE_TLS_CA",
        value_name = "PEM",
        conflicts_with = "tls_pin"
    )]
    pub tls_ca: Option<PathBuf>,

    /// Speak TLS and accept only the server whose certificate is exactly the first one in
    /// this PEM file (normally a copy of the server's --tls-cert). Name and expiry are not
    /// checked: the pin is the trust.
    #[arg(long, env = "BREEZE_TLS_PIN", value_name = "PEM")]
    pub tls_pin: Option<PathBuf>,

    /// The name the server's certificate must carry with --tls-ca; also sent as the TLS
    /// server name.
    #[arg(long, env = "BREEZE_TLS_NAME", value_name = "NAME")]
    pub tls_name: Option<String>,
}

/// A status as typed on the command line and in `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Online,
    Busy,
    Away,
    /// Connected, but shown as offline to everyone else.
    Invisible,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Status {
        match s {
            StatusArg::Online => Status::Online,
            StatusArg::Busy => Status::Busy,
            StatusArg::Away => Status::Away,
            StatusArg::Invisible => Status::Invisible,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }
}
