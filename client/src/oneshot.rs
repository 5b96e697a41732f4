//! The subcommands that log in, do one thing and leave: `register`, `send`, `admin …`.
//!
//! Unlike `chat` they do not wait out a server that cannot be reached: the first failed
//! connection before login is the answer. `send` and `admin who` log in as agents, so the
//! user's own sessions are neither replaced nor shown differently; `register` logs in
//! invisible, so that nobody sees the new user come online for a moment.

use crate::Fatal;
use crate::cli::{Account, AdminTarget};
use crate::session::{self, Session, Setup};
use crate::ui;
use breeze_core::UserId;
use breeze_core::client::{AdminAction, ClientEvent, Mode, StopReason};
use breeze_core::config::password_is_acceptable;
use breeze_core::message::{ErrorCode, RequestKind, Status, WhoEntry};
use breeze_transport_tokio::ClientCommand;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What one event means for a one-shot command.
enum Step<T> {
    Continue,
    Done(T),
    Fail(String),
}

/// Feeds events to `on_event` until it is done or fails, the login fails, or `timeout`
/// passes; then logs out. Events the generic part decides are shown to `on_event` first.
async fn drive<T>(
    mut session: Session,
    timeout: Duration,
    waiting_for: &str,
    mut on_event: impl FnMut(&Session, &ClientEvent) -> Step<T>,
) -> Result<T, Fatal> {
    let deadline = Instant::now() + timeout;
    let mut logged_in = false;
    // Attempts that failed before a login: each server of --server gets its try.
    let mut failures = 0;
    // What the server said about waiting (`Throttled`), for the refusal that follows.
    let mut wait = None;
    let result = loop {
        let event = match tokio::time::timeout_at(deadline, session.events.recv()).await {
            Err(_) => {
                break Err(format!(
                    "timed out after {} waiting for {waiting_for}",
                    humantime::format_duration(timeout)
                ));
            }
            Ok(None) => break Err("the client stopped unexpectedly".into()),
            Ok(Some(event)) => event,
        };
        match on_event(&session, &event) {
            Step::Done(value) => break Ok(value),
            Step::Fail(e) => break Err(e),
            Step::Continue => {}
        }
        match event {
            ClientEvent::LoggedIn { .. } => logged_in = true,
            ClientEvent::Throttled { retry_after, .. } => wait = Some(retry_after),
            // After login, a `Login` error only says the mailbox could not be read.
            ClientEvent::Error {
                request:
                    request @ (RequestKind::Login | RequestKind::AgentLogin | RequestKind::Register),
                code,
            } if !logged_in => {
                let why = ui::request_error(request, code);
                break Err(match wait {
                    Some(wait) => format!("{why}; try again in {}", ui::duration(wait)),
                    None => why,
                });
            }
            ClientEvent::Disconnected {
                reason,
                retry_at: Some(_),
            } => {
                match reason {
                    Some(reason) if !logged_in => {
                        break Err(format!("disconnected before login: {reason}"));
                    }
                    // With several servers, the next one is tried before giving up.
                    None if !logged_in => {
                        failures += 1;
                        if session.tried_every_server(failures) {
                            break Err(session.connection_failure());
                        }
                    }
                    _ => {}
                }
                // After login the client reconnects by itself, and re-sends what is unsent;
                // the deadline bounds the wait.
                logged_in = false;
            }
            ClientEvent::Stopped(reason) => break Err(stop_reason(&session.user, reason)),
            _ => {}
        }
    };
    session.quit().await;
    result.map_err(Fatal)
}

fn stop_reason(user: &UserId, reason: StopReason) -> String {
    match reason {
        StopReason::LoggedOut => "logged out".into(),
        StopReason::BadCredentials => "wrong user name or password".into(),
        StopReason::UserTaken => format!("the user name {user} is taken"),
        StopReason::Refused { request, code } => ui::request_error(request, code),
        StopReason::Closed(reason) => format!("disconnected: {reason}"),
    }
}

pub async fn register(account: Account, timeout: Duration) -> Result<(), Fatal> {
    let password = session::password(&account, true)?;
    if !password_is_acceptable(&password) {
        return Err(Fatal(format!(
            "cannot register: {}",
            ErrorCode::InvalidPassword
        )));
    }
    // A new account has no other session whose status this could change.
    let setup = Setup {
        mode: Mode::Register,
        status: Status::Invisible,
    };
    let session = Session::start(&account, password, setup).await?;
    let user = account.user.clone();
    let mut registered = false;
    // Registration is followed by a login on the same connection; waiting for it lets the
    // session end with a proper logout rather than a dropped login.
    let outcome = drive(session, timeout, "the server to register", |_, event| {
        match event {
            ClientEvent::Registered => registered = true,
            ClientEvent::LoggedIn { .. } => return Step::Done(()),
            _ if registered => {
                if matches!(
                    event,
                    ClientEvent::Disconnected { .. } | ClientEvent::Stopped(_)
                ) {
                    return Step::Done(());
                }
            }
            _ => {}
        }
        Step::Continue
    })
    .await;
    match outcome {
        // The account exists even if the login after it failed or timed out.
        Err(_) if registered => {}
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    println!("registered {user}");
    Ok(())
}

/// The agent logins of `send` and `admin who`: outside the user's presence, so the status
/// is only what `LoginOk` is asked to carry; the server reports agents as invisible.
const AGENT: Setup = Setup {
    mode: Mode::Agent,
    status: Status::Invisible,
};

/// The body `send` was given: its words joined, or standard input for a lone `-`.
fn body(text: Vec<String>) -> Result<String, Fatal> {
    let body = if text.len() == 1 && text[0] == "-" {
        let mut body = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut body)
            .map_err(|e| Fatal(format!("cannot read the message from standard input: {e}")))?;
        if body.ends_with('\n') {
            body.pop();
            if body.ends_with('\r') {
                body.pop();
            }
        }
        body
    } else {
        text.join(" ")
    };
    if body.trim().is_empty() {
        return Err(Fatal("the message is empty: nothing to send".into()));
    }
    Ok(body)
}

pub async fn send(
    account: Account,
    to: UserId,
    text: Vec<String>,
    timeout: Duration,
) -> Result<(), Fatal> {
    let text = body(text)?;
    let password = session::password(&account, false)?;
    let setup = AGENT;
    let session = Session::start(&account, password, setup).await?;
    let (tx, mut rx) = oneshot::channel();
    session.command(ClientCommand::SendMessage {
        to: to.clone(),
        body: text,
        attachment: None,
        id: Some(tx),
    });
    let mut id = None;
    // The server's limits (from its Welcome), to say what "too large" means.
    let mut limits = None;
    let seq = drive(
        session,
        timeout,
        "the server to confirm the message",
        |_, event| {
            // The runner answers the id as it queues the message, before any answer to it.
            if id.is_none() {
                id = rx.try_recv().ok();
            }
            match *event {
                ClientEvent::MessageSent { id: sent, seq } if Some(sent) == id => Step::Done(seq),
                ClientEvent::Limits {
                    max_body,
                    max_attachment,
                } => {
                    limits = Some((max_body, max_attachment));
                    Step::Continue
                }
                ClientEvent::SendFailed { id: failed, code } if Some(failed) == id => {
                    Step::Fail(match (code, limits) {
                        (ErrorCode::TooLarge, Some((body, attachment))) => format!(
                            "cannot send to {to}: too large (this server takes bodies of at \
                             most {body} bytes and attachments of at most {attachment})"
                        ),
                        _ => format!("cannot send to {to}: {code}"),
                    })
                }
                // A busy server is worth the wait; a failing database is not: say so now,
                // rather than time out saying nothing.
                ClientEvent::SendDeferred {
                    id: deferred,
                    code: ErrorCode::StorageFailed,
                } if Some(deferred) == id => Step::Fail(format!(
                    "cannot send to {to}: the server could not store the message (its \
                     database is failing; see its log); not sent"
                )),
                _ => Step::Continue,
            }
        },
    )
    .await?;
    println!("sent to {to} (seq {seq})");
    Ok(())
}

pub async fn admin_who(account: Account, timeout: Duration) -> Result<(), Fatal> {
    let password = session::password(&account, false)?;
    let setup = AGENT;
    let session = Session::start(&account, password, setup).await?;
    let (users, connections) = drive(session, timeout, "the server's answer", |session, event| {
        match event {
            ClientEvent::LoggedIn { .. } => session.command(ClientCommand::Who),
            ClientEvent::Who { users, connections } => {
                return Step::Done((users.clone(), *connections));
            }
            ClientEvent::Error {
                request: RequestKind::AdminWho,
                code: ErrorCode::Forbidden,
            } => {
                return Step::Fail(format!(
                    "not allowed: {} is not an administrator of this server",
                    session.user
                ));
            }
            ClientEvent::Error {
                request: RequestKind::AdminWho,
                code,
            } => return Step::Fail(ui::request_error(RequestKind::AdminWho, *code)),
            _ => {}
        }
        Step::Continue
    })
    .await?;
    print!("{}", who_table(&users, connections));
    Ok(())
}

/// `admin kick|ban|unban USER`: one request as an agent, its answer printed.
pub async fn admin(action: AdminAction, t: AdminTarget) -> Result<(), Fatal> {
    let password = session::password(&t.account, false)?;
    let session = Session::start(&t.account, password, AGENT).await?;
    let request = match action {
        AdminAction::Kick => RequestKind::AdminKick,
        AdminAction::Ban => RequestKind::AdminBan,
        AdminAction::Unban => RequestKind::AdminUnban,
    };
    let target = t.target;
    let sessions = drive(
        session,
        t.timeout,
        "the server's answer",
        |session, event| {
            match event {
                ClientEvent::LoggedIn { .. } => {
                    session.command(ClientCommand::Admin(action, target.clone()))
                }
                ClientEvent::AdminDone {
                    request: done,
                    sessions,
                    ..
                } if *done == request => return Step::Done(*sessions),
                ClientEvent::Error {
                    request: failed,
                    code,
                } if *failed == request => {
                    return Step::Fail(match code {
                        ErrorCode::Forbidden => format!(
                            "not allowed: {} is not an administrator of this server",
                            session.user
                        ),
                        ErrorCode::NoSuchUser => format!("there is no user {target}"),
                        _ => ui::request_error(request, *code),
                    });
                }
                _ => {}
            }
            Step::Continue
        },
    )
    .await?;
    let ended = match sessions {
        1 => "1 session ended".to_string(),
        n => format!("{n} sessions ended"),
    };
    match action {
        AdminAction::Kick => println!("kicked {target} ({ended})"),
        AdminAction::Ban => {
            println!("banned {target} ({ended}); logins are refused until `breeze admin unban`")
        }
        AdminAction::Unban => println!("unbanned {target}"),
    }
    Ok(())
}

/// The `admin who` table: one row per session, a user in their offline grace on a row of
/// their own with dashes.
pub fn who_table(users: &[WhoEntry], connections: u64) -> String {
    let header = ["USER", "STATUS", "NODE", "CONN", "CONNECTED", "IDLE"].map(String::from);
    let mut rows = vec![header];
    for entry in users {
        let status = ui::status_word(entry.status).to_string();
        if entry.sessions.is_empty() {
            rows.push([
                entry.user.to_string(),
                status.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for s in &entry.sessions {
            rows.push([
                entry.user.to_string(),
                status.clone(),
                s.node.to_string(),
                s.conn.to_string(),
                ui::duration(Duration::from_millis(s.connected_for_ms)),
                ui::duration(Duration::from_millis(s.idle_ms)),
            ]);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let s = if users.len() == 1 { "" } else { "s" };
    let c = if connections == 1 { "" } else { "s" };
    out.push_str(&format!(
        "{} user{s} online, {connections} open connection{c}\n",
        users.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::message::WhoSession;

    #[test]
    fn the_who_table_lines_up() {
        let users = vec![
            WhoEntry {
                user: UserId::new("alice").unwrap(),
                status: Status::Busy,
                sessions: vec![WhoSession {
                    node: 0,
                    conn: 12,
                    connected_for_ms: 200_000,
                    idle_ms: 1_500,
                }],
            },
            WhoEntry {
                user: UserId::new("bob").unwrap(),
                status: Status::Online,
                sessions: vec![],
            },
        ];
        assert_eq!(
            who_table(&users, 3),
            "USER   STATUS  NODE  CONN  CONNECTED  IDLE\n\
             alice  busy    0     12    3m 20s     1.5 s\n\
             bob    online  -     -     -          -\n\
             2 users online, 3 open connections\n"
        );
    }
}
