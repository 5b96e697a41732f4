//! What the user types in `chat`: read on a thread of its own (a blocking read must not hold up
//! the runtime), with the line editor on a terminal and as plain lines otherwise (scripts,
//! tests), parsed into actions.

use crate::cli::StatusArg;
use crate::editor::{self, Names};
use crate::screen::Screen;
use breeze_core::UserId;
use breeze_core::storage::MAX_HISTORY;
use clap::ValueEnum;
use std::io::{BufRead, IsTerminal};
use tokio::sync::mpsc;

/// The page `/history` asks for without an N; an N may be up to `MAX_HISTORY`, the most the
/// server returns.
const DEFAULT_HISTORY: u16 = 20;

/// A line from the reader thread.
#[derive(Debug)]
pub enum Input {
    Line(String),
    /// `/passwd`, with both passwords already read: the reader thread is the only reader of
    /// the terminal, so it asks for them itself.
    Passwd {
        old: String,
        new: String,
    },
    /// `/passwd` that could not get its passwords.
    PasswdFailed(String),
    /// Ctrl-C in the line editor (which reads it as a key, not a signal).
    Quit,
}

/// Starts the reader thread: the line editor when both standard input and output are a
/// terminal (printing through `screen` above the line being typed, completing `names`),
/// plain lines otherwise. The channel closes at end of input. The thread is not joined: the
/// process exits while it may still be blocked in a read (`Screen::detach` puts the terminal
/// back).
pub fn spawn_reader(screen: &Screen, names: &Names) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(64);
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let tx = if terminal {
        match editor::spawn(tx.clone(), screen, names) {
            Ok(()) => return rx,
            Err(e) => {
                let _ = screen.line(&format!("! no line editing ({e}); reading plain lines"));
                tx
            }
        }
    } else {
        tx
    };
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || read_plain(&tx));
    if spawned.is_err() {
        // Without a reader the channel is closed at once, which the chat takes for /quit.
        eprintln!("breeze: cannot start the input thread");
    }
    rx
}

fn read_plain(tx: &mpsc::Sender<Input>) {
    let interactive = std::io::stdin().is_terminal();
    let stdin = std::io::stdin();
    // Lossy: a stray invalid byte must not end the session as end of input would.
    let mut lines = stdin.lock().split(b'\n').map(|line| {
        line.map(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            text.strip_suffix('\r').unwrap_or(&text).to_string()
        })
    });
    while let Some(Ok(line)) = lines.next() {
        let input = if line.trim() == "/passwd" {
            if interactive {
                ask_passwords()
            } else {
                // Piped input: the next two lines are the old and the new password.
                match (lines.next(), lines.next()) {
                    (Some(Ok(old)), Some(Ok(new))) => Input::Passwd { old, new },
                    _ => Input::PasswdFailed(
                        "/passwd: expected the old and the new password on the next two lines"
                            .into(),
                    ),
                }
            }
        } else {
            Input::Line(line)
        };
        if tx.blocking_send(input).is_err() {
            break;
        }
    }
}

/// Asks on the terminal for the old password and the new one twice, without echo.
pub fn ask_passwords() -> Input {
    let ask = |prompt: &str| rpassword::prompt_password(prompt);
    let asked = (|| {
        let old = ask("old password: ")?;
        let new = ask("new password: ")?;
        let again = ask("new password again: ")?;
        Ok::<_, std::io::Error>((old, new, again))
    })();
    match asked {
        Ok((_, new, again)) if new != again => {
            Input::PasswdFailed("/passwd: the new passwords do not match".into())
        }
        Ok((old, new, _)) => Input::Passwd { old, new },
        Err(e) => Input::PasswdFailed(format!("/passwd: cannot read the password: {e}")),
    }
}

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Msg {
        to: UserId,
        text: String,
    },
    Status(StatusArg),
    Who,
    Contacts,
    AddContact(UserId),
    RemoveContact(UserId),
    /// Show the contacts in their groups, with online counts.
    Groups,
    GroupAdd(String),
    /// Move a contact to the group of that name.
    GroupMove(UserId, String),
    GroupRename {
        from: String,
        to: String,
    },
    GroupDelete(String),
    History {
        with: UserId,
        limit: u16,
    },
    /// Talk to USER: plain lines go to them until `/close`.
    Open(UserId),
    Close,
    /// `/profile name|sign TEXT`: change one text field (an empty TEXT clears it).
    ProfileText {
        field: ProfileField,
        text: String,
    },
    /// `/profile avatar FILE|none`.
    ProfileAvatar(Option<String>),
    /// `/whois USER`: that user's profile card.
    Whois(UserId),
    /// `/send-file USER FILE`: offer FILE to USER for a direct transfer.
    SendFile {
        to: UserId,
        path: String,
    },
    /// `/accept [USER]`: accept the oldest file offered (by USER).
    Accept(Option<UserId>),
    /// `/decline [USER]`: decline it.
    Decline(Option<UserId>),
    /// A line that is not a command: a message for the open conversation.
    Say(String),
    /// A room command (servers of protocol version 2).
    Room(RoomAction),
    Help,
    Quit,
    /// An empty line.
    Nothing,
}

/// Which text field of the profile `/profile` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileField {
    Name,
    Signature,
}

/// What a `/room` (or `/rooms`, `/join`) line asks. ROOM is a room's name (one word) or
/// `#ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAction {
    List,
    Create(String),
    /// Talk in ROOM: plain lines go to it until `/close`.
    Open(String),
    Invite {
        room: String,
        user: UserId,
    },
    Kick {
        room: String,
        user: UserId,
    },
    /// Leave ROOM, or the open room.
    Leave(Option<String>),
    History {
        room: String,
        limit: u16,
    },
}

pub const HELP: &str = "\
commands:
  /msg USER TEXT                      send TEXT to USER (kept if offline)
  /open USER                          talk to USER: plain lines go to them
  /close                              end that; plain lines are refused
  /status online|busy|away|invisible  change your status
  /who                                show the user list again
  /contacts                           show your contact list
  /contacts add|remove USER           change your contact list
  /groups                             your contacts in groups, with who is on
  /group add NAME                     a new group (any script, e.g. 家人)
  /group move USER NAME               put a contact in a group
  /group rename NAME NEW              rename a group (NAME one word)
  /group delete NAME                  delete it; its contacts go to Contacts
  /history USER [N]                   the last N messages with USER (20)
  /profile name|sign [TEXT]           set (or clear) your name or signature
  /profile avatar FILE|none           set your avatar (PNG, JPEG, WebP)
  /whois USER                         show USER's profile
  /rooms                              your rooms, with who is online
  /room create NAME                   create a room (you own it)
  /room ROOM                          talk in ROOM (a name or #ID)
  /room invite|kick ROOM USER         add or remove a member (owner, admins)
  /room leave [ROOM]                  leave ROOM (or the open one)
  /room history ROOM [N]              the last N messages of ROOM (20)
  /join ROOM                          the same as /room ROOM
  /send-file USER FILE                send FILE to USER directly (any size)
  /accept [USER]                      take the file offered (by USER)
  /decline [USER]                     refuse it
  /passwd                             change your password (asks for both)
  /help                               this list
  /quit                               log out and exit (or Ctrl-D, Ctrl-C)";

/// The commands as completion offers them, each with whether words follow it. `HELP` lists
/// the same (a test holds them together) and `parse` takes them.
pub const COMMANDS: &[(&str, bool)] = &[
    ("msg", true),
    ("open", true),
    ("close", false),
    ("status", true),
    ("who", false),
    ("contacts", true),
    ("groups", false),
    ("group", true),
    ("history", true),
    ("profile", true),
    ("whois", true),
    ("rooms", false),
    ("room", true),
    ("join", true),
    ("send-file", true),
    ("accept", true),
    ("decline", true),
    ("passwd", false),
    ("help", false),
    ("quit", false),
];

/// Parses one line; the error is a one-line explanation for the user.
pub fn parse(line: &str) -> Result<Action, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Action::Nothing);
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Action::Say(line.to_string()));
    };
    let (name, rest) = split_word(command);
    match name {
        "msg" | "m" => {
            let (to, text) = split_word(rest);
            if to.is_empty() || text.is_empty() {
                return Err("usage: /msg USER TEXT".into());
            }
            Ok(Action::Msg {
                to: user(to)?,
                text: text.to_string(),
            })
        }
        "status" => {
            let status = StatusArg::from_str(rest, true)
                .map_err(|_| "usage: /status online|busy|away|invisible".to_string())?;
            Ok(Action::Status(status))
        }
        "who" | "list" => no_args(rest, Action::Who, "/who"),
        "open" | "o" => match rest {
            "" => Err("usage: /open USER".into()),
            who if !who.contains(' ') => Ok(Action::Open(user(who)?)),
            _ => Err("usage: /open USER".into()),
        },
        "close" => no_args(rest, Action::Close, "/close"),
        "contacts" => {
            let (verb, who) = split_word(rest);
            match (verb, who) {
                ("", _) => Ok(Action::Contacts),
                ("add", who) if !who.is_empty() && !who.contains(' ') => {
                    Ok(Action::AddContact(user(who)?))
                }
                ("remove" | "rm", who) if !who.is_empty() && !who.contains(' ') => {
                    Ok(Action::RemoveContact(user(who)?))
                }
                _ => Err("usage: /contacts [add|remove USER]".into()),
            }
        }
        "groups" => no_args(rest, Action::Groups, "/groups"),
        "group" => {
            let (verb, rest) = split_word(rest);
            let usage = "usage: /group add NAME | move USER NAME | rename NAME NEW | delete NAME";
            match verb {
                "add" if !rest.is_empty() => Ok(Action::GroupAdd(rest.to_string())),
                "move" | "mv" => match split_word(rest) {
                    (who, name) if !who.is_empty() && !name.is_empty() => {
                        Ok(Action::GroupMove(user(who)?, name.to_string()))
                    }
                    _ => Err(usage.into()),
                },
                "rename" => match split_word(rest) {
                    (from, to) if !from.is_empty() && !to.is_empty() => Ok(Action::GroupRename {
                        from: from.to_string(),
                        to: to.to_string(),
                    }),
                    _ => Err(usage.into()),
                },
                "delete" | "rm" if !rest.is_empty() => Ok(Action::GroupDelete(rest.to_string())),
                _ => Err(usage.into()),
            }
        }
        "history" => {
            let (with, count) = split_word(rest);
            if with.is_empty() || count.contains(' ') {
                return Err("usage: /history USER [N]".into());
            }
            let limit = history_limit(count, "/history")?;
            Ok(Action::History {
                with: user(with)?,
                limit,
            })
        }
        "profile" => {
            let (field, text) = split_word(rest);
            match field {
                "name" => Ok(Action::ProfileText {
                    field: ProfileField::Name,
                    text: text.to_string(),
                }),
                "sign" | "signature" => Ok(Action::ProfileText {
                    field: ProfileField::Signature,
                    text: text.to_string(),
                }),
                "avatar" if text == "none" => Ok(Action::ProfileAvatar(None)),
                "avatar" if !text.is_empty() => Ok(Action::ProfileAvatar(Some(text.to_string()))),
                _ => Err("usage: /profile name|sign [TEXT], /profile avatar FILE|none".into()),
            }
        }
        "whois" => match rest {
            who if !who.is_empty() && !who.contains(' ') => Ok(Action::Whois(user(who)?)),
            _ => Err("usage: /whois USER".into()),
        },
        "rooms" => no_args(rest, Action::Room(RoomAction::List), "/rooms"),
        "join" => match rest {
            "" => Err("usage: /join ROOM".into()),
            room if !room.contains(' ') => Ok(Action::Room(RoomAction::Open(room.into()))),
            _ => Err("usage: /join ROOM (a name of one word, or #ID)".into()),
        },
        "room" => parse_room(rest).map(Action::Room),
        "send-file" | "sendfile" => match split_word(rest) {
            (to, path) if !to.is_empty() && !path.is_empty() => Ok(Action::SendFile {
                to: user(to)?,
                path: path.to_string(),
            }),
            _ => Err("usage: /send-file USER FILE".into()),
        },
        "accept" | "decline" => {
            let from = match rest {
                "" => None,
                who if !who.contains(' ') => Some(user(who)?),
                _ => return Err(format!("usage: /{name} [USER]")),
            };
            Ok(if name == "accept" {
                Action::Accept(from)
            } else {
                Action::Decline(from)
            })
        }
        "help" | "?" => Ok(Action::Help),
        "quit" | "exit" | "q" => no_args(rest, Action::Quit, "/quit"),
        _ => Err(format!("unknown command /{name}; /help lists them")),
    }
}

fn parse_room(rest: &str) -> Result<RoomAction, String> {
    let (verb, args) = split_word(rest);
    let one_word = |w: &str| !w.is_empty() && !w.contains(' ');
    match verb {
        "" => Ok(RoomAction::List),
        "create" if !args.is_empty() => Ok(RoomAction::Create(args.to_string())),
        "create" => Err("usage: /room create NAME".into()),
        "invite" | "kick" => {
            let (room, who) = split_word(args);
            if room.is_empty() || !one_word(who) {
                return Err(format!("usage: /room {verb} ROOM USER"));
            }
            let (room, user) = (room.to_string(), user(who)?);
            Ok(if verb == "invite" {
                RoomAction::Invite { room, user }
            } else {
                RoomAction::Kick { room, user }
            })
        }
        "leave" if args.is_empty() => Ok(RoomAction::Leave(None)),
        "leave" if one_word(args) => Ok(RoomAction::Leave(Some(args.to_string()))),
        "leave" => Err("usage: /room leave [ROOM]".into()),
        "history" => {
            let (room, count) = split_word(args);
            if room.is_empty() || count.contains(' ') {
                return Err("usage: /room history ROOM [N]".into());
            }
            let limit = history_limit(count, "/room history")?;
            Ok(RoomAction::History {
                room: room.to_string(),
                limit,
            })
        }
        room if args.is_empty() => Ok(RoomAction::Open(room.to_string())),
        _ => Err("usage: /room [create NAME | ROOM | invite|kick ROOM USER | leave [ROOM] | history ROOM [N]]".into()),
    }
}

/// A history command's N: `DEFAULT_HISTORY` when absent.
fn history_limit(count: &str, command: &str) -> Result<u16, String> {
    if count.is_empty() {
        return Ok(DEFAULT_HISTORY);
    }
    match count.parse::<u16>() {
        Ok(n) if (1..=MAX_HISTORY).contains(&n) => Ok(n),
        _ => Err(format!("{command}: N must be 1 to {MAX_HISTORY}")),
    }
}

fn no_args(rest: &str, action: Action, usage: &str) -> Result<Action, String> {
    if rest.is_empty() {
        Ok(action)
    } else {
        Err(format!("usage: {usage}"))
    }
}

/// The first word and the rest, both trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim();
    match s.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

fn user(name: &str) -> Result<UserId, String> {
    UserId::new(name).map_err(|e| format!("{name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse("/msg bob  hello  there "),
            Ok(Action::Msg {
                to: u("bob"),
                text: "hello  there".into()
            })
        );
        assert_eq!(parse("/status BUSY"), Ok(Action::Status(StatusArg::Busy)));
        assert_eq!(parse("/who"), Ok(Action::Who));
        assert_eq!(parse("/contacts"), Ok(Action::Contacts));
        assert_eq!(parse("/contacts add bob"), Ok(Action::AddContact(u("bob"))));
        assert_eq!(
            parse("/contacts remove bob"),
            Ok(Action::RemoveContact(u("bob")))
        );
        assert_eq!(
            parse("/history bob"),
            Ok(Action::History {
                with: u("bob"),
                limit: 20
            })
        );
        assert_eq!(
            parse("/history bob 5"),
            Ok(Action::History {
                with: u("bob"),
                limit: 5
            })
        );
        assert_eq!(parse("/quit"), Ok(Action::Quit));
        assert_eq!(parse("/groups"), Ok(Action::Groups));
        assert_eq!(
            parse("/group add  家人 "),
            Ok(Action::GroupAdd("家人".into()))
        );
        assert_eq!(
            parse("/group move bob Old friends"),
            Ok(Action::GroupMove(u("bob"), "Old friends".into()))
        );
        assert_eq!(
            parse("/group rename Work Day job"),
            Ok(Action::GroupRename {
                from: "Work".into(),
                to: "Day job".into()
            })
        );
        assert_eq!(
            parse("/group delete Work"),
            Ok(Action::GroupDelete("Work".into()))
        );
        assert!(parse("/group move bob").unwrap_err().starts_with("usage"));
        assert!(parse("/group add").unwrap_err().starts_with("usage"));
        assert_eq!(
            parse("/profile name 王小明 🐼"),
            Ok(Action::ProfileText {
                field: ProfileField::Name,
                text: "王小明 🐼".into()
            })
        );
        assert_eq!(
            parse("/profile sign"),
            Ok(Action::ProfileText {
                field: ProfileField::Signature,
                text: String::new()
            })
        );
        assert_eq!(
            parse("/profile avatar me.png"),
            Ok(Action::ProfileAvatar(Some("me.png".into())))
        );
        assert_eq!(
            parse("/profile avatar none"),
            Ok(Action::ProfileAvatar(None))
        );
        assert!(parse("/profile avatar").is_err());
        assert_eq!(
            parse("/send-file bob /tmp/my photos.zip"),
            Ok(Action::SendFile {
                to: user("bob").unwrap(),
                path: "/tmp/my photos.zip".into()
            })
        );
        assert!(parse("/send-file bob").is_err());
        assert_eq!(parse("/accept"), Ok(Action::Accept(None)));
        assert_eq!(
            parse("/decline alice"),
            Ok(Action::Decline(Some(user("alice").unwrap())))
        );
        assert!(parse("/accept alice bob").is_err());
        assert_eq!(
            parse("/whois bob"),
            Ok(Action::Whois(UserId::new("bob").unwrap()))
        );
        let room = |a| Ok(Action::Room(a));
        assert_eq!(parse("/rooms"), room(RoomAction::List));
        assert_eq!(
            parse("/room create 家人 and friends"),
            room(RoomAction::Create("家人 and friends".into()))
        );
        assert_eq!(parse("/room team"), room(RoomAction::Open("team".into())));
        assert_eq!(parse("/join #7"), room(RoomAction::Open("#7".into())));
        assert_eq!(
            parse("/room invite team bob"),
            room(RoomAction::Invite {
                room: "team".into(),
                user: u("bob")
            })
        );
        assert_eq!(
            parse("/room kick team bob"),
            room(RoomAction::Kick {
                room: "team".into(),
                user: u("bob")
            })
        );
        assert_eq!(parse("/room leave"), room(RoomAction::Leave(None)));
        assert_eq!(
            parse("/room history team 5"),
            room(RoomAction::History {
                room: "team".into(),
                limit: 5
            })
        );
        assert!(parse("/room invite team").unwrap_err().starts_with("usage"));
        assert!(parse("/room create").unwrap_err().starts_with("usage"));
        assert_eq!(parse("   "), Ok(Action::Nothing));
    }

    #[test]
    fn the_help_fits_a_narrow_terminal() {
        assert!(HELP.lines().all(|l| l.chars().count() <= 78), "{HELP}");
    }

    #[test]
    fn the_completed_commands_are_the_listed_and_parsed_ones() {
        let mut listed: Vec<&str> = HELP
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('/'))
            .map(|l| l.split(' ').next().unwrap_or(l))
            .collect();
        // `/contacts` has two lines, `/group` four.
        listed.dedup();
        let completed: Vec<&str> = COMMANDS.iter().map(|(name, _)| *name).collect();
        assert_eq!(listed, completed);
        for (name, _) in COMMANDS {
            // The reader takes /passwd before parsing; the rest are the parser's.
            if *name == "passwd" {
                continue;
            }
            if let Err(e) = parse(&format!("/{name}")) {
                assert!(!e.contains("unknown command"), "/{name}: {e}");
            }
        }
    }

    #[test]
    fn mistakes_explain_themselves() {
        assert_eq!(
            parse("hello there").unwrap(),
            Action::Say("hello there".into())
        );
        assert_eq!(
            parse("/open bob").unwrap(),
            Action::Open(UserId::new("bob").unwrap())
        );
        assert_eq!(parse("/open").unwrap_err(), "usage: /open USER");
        assert_eq!(parse("/close").unwrap(), Action::Close);
        assert_eq!(parse("/msg bob").unwrap_err(), "usage: /msg USER TEXT");
        assert!(
            parse("/msg b@d hi")
                .unwrap_err()
                .contains("may only contain")
        );
        assert!(parse("/status asleep").unwrap_err().starts_with("usage"));
        assert!(parse("/history bob 0").unwrap_err().contains("1 to 500"));
        assert!(parse("/contacts add").unwrap_err().starts_with("usage"));
        assert!(
            parse("/frobnicate")
                .unwrap_err()
                .contains("unknown command")
        );
    }
}
