//! How things look on the terminal: colours (only on a terminal, and not under NO_COLOR),
//! times, durations, the presence list, and errors as sentences.

use breeze_core::UserId;
use breeze_core::message::{
    Attachment, AttachmentInfo, CloseReason, ErrorCode, Presence, RequestKind, Status,
};
use breeze_core::text::MAX_GROUP_NAME_CHARS;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

/// Past this many users the presence line names only those not offline.
const LIST_ALL_UP_TO: usize = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Green,
    Red,
    Yellow,
    Cyan,
    Grey,
    Bold,
}

#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    /// Colours when stdout is a terminal and NO_COLOR is unset or empty (no-color.org).
    pub fn detect() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            colour: std::io::stdout().is_terminal() && !no_color,
        }
    }

    pub fn paint(&self, colour: Colour, text: &str) -> String {
        if !self.colour {
            return text.to_string();
        }
        let code = match colour {
            Colour::Green => "32",
            Colour::Red => "31",
            Colour::Yellow => "33",
            Colour::Cyan => "36",
            Colour::Grey => "2;37",
            Colour::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// One user as the presence list shows them: a symbol, the name, the presence in words
    /// (so it reads without colour too); offline users greyed.
    pub fn user(&self, user: &str, presence: Presence) -> String {
        let (symbol, word, colour) = match presence {
            Presence::Online => ("●", "online", Colour::Green),
            Presence::Busy => ("●", "busy", Colour::Red),
            Presence::Away => ("◐", "away", Colour::Yellow),
            Presence::Offline => ("○", "offline", Colour::Grey),
        };
        self.paint(colour, &format!("{symbol} {user} {word}"))
    }

    /// One user's presence change: "bob is now offline", coloured like the list.
    pub fn change(&self, user: &str, presence: Presence) -> String {
        let colour = match presence {
            Presence::Online => Colour::Green,
            Presence::Busy => Colour::Red,
            Presence::Away => Colour::Yellow,
            Presence::Offline => Colour::Grey,
        };
        self.paint(
            colour,
            &format!("{user} is now {}", presence_word(presence)),
        )
    }

    /// The whole presence view on one line, each user shown as `label` says.
    pub fn presence_line(
        &self,
        users: &BTreeMap<UserId, Presence>,
        label: impl Fn(&UserId) -> String,
    ) -> String {
        if users.is_empty() {
            return format!("users: {}", self.paint(Colour::Grey, "(nobody else)"));
        }
        let offline = users.values().filter(|p| **p == Presence::Offline).count();
        let mut shown: Vec<String> = users
            .iter()
            .filter(|(_, p)| users.len() <= LIST_ALL_UP_TO || **p != Presence::Offline)
            .map(|(u, p)| self.user(&label(u), *p))
            .collect();
        if users.len() > LIST_ALL_UP_TO {
            shown.push(self.paint(Colour::Grey, &format!("(+{offline} offline)")));
        }
        format!("users: {}", shown.join("  "))
    }

    pub fn status(&self, status: Status) -> String {
        let colour = match status {
            Status::Online => Colour::Green,
            Status::Busy => Colour::Red,
            Status::Away => Colour::Yellow,
            Status::Invisible => Colour::Grey,
        };
        self.paint(colour, status_word(status))
    }
}

pub fn status_word(status: Status) -> &'static str {
    match status {
        Status::Online => "online",
        Status::Busy => "busy",
        Status::Away => "away",
        Status::Invisible => "invisible",
    }
}

pub fn presence_word(presence: Presence) -> &'static str {
    match presence {
        Presence::Online => "online",
        Presence::Busy => "busy",
        Presence::Away => "away",
        Presence::Offline => "offline",
    }
}

/// The local time of day now.
pub fn now_stamp() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// A server timestamp (ms since the Unix epoch) in local time: the time of day if it is
/// today, with the date otherwise.
pub fn stamp(ms: u64) -> String {
    let Some(at) = i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
    else {
        return "?".into();
    };
    let at = at.with_timezone(&chrono::Local);
    if at.date_naive() == chrono::Local::now().date_naive() {
        at.format("%H:%M:%S").to_string()
    } else {
        at.format("%Y-%m-%d %H:%M").to_string()
    }
}

/// `1.2 s` for short waits, `45 s`, `3m 20s`, `2h 05m` for longer ones.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 10 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h {:02}m", secs / 3600, (secs / 60) % 60)
    }
}

pub fn attachment(a: &Attachment) -> String {
    format!(
        "[attachment {} ({}, {} bytes)]",
        a.name,
        a.mime,
        a.data.len()
    )
}

pub fn attachment_info(a: &AttachmentInfo) -> String {
    format!("[attachment {} ({}, {} bytes)]", a.name, a.mime, a.size)
}

/// What a failed request means, as a sentence.
pub fn request_error(request: RequestKind, code: ErrorCode) -> String {
    let what = match request {
        RequestKind::Register => "cannot register",
        RequestKind::Login | RequestKind::AgentLogin => "cannot log in",
        RequestKind::ChangePassword => "cannot change the password",
        RequestKind::SetStatus => "cannot set the status",
        RequestKind::AddContact => "cannot add the contact",
        RequestKind::RemoveContact => "cannot remove the contact",
        RequestKind::Send => "cannot send",
        RequestKind::History => "cannot fetch the history",
        RequestKind::AdminWho => "cannot list who is online",
        RequestKind::AdminKick => "cannot kick",
        RequestKind::AdminBan => "cannot ban",
        RequestKind::AdminUnban => "cannot unban",
        RequestKind::CreateGroup => "cannot create the group",
        RequestKind::EditGroup => "cannot change the group",
        RequestKind::MoveContacts => "cannot move the contact",
        RequestKind::SetProfile | RequestKind::SetAvatar => "cannot change your profile",
        RequestKind::GetProfile => "cannot show the profile",
        RequestKind::Room => "room request refused",
        _ => "the server refused a request",
    };
    let why = match (request, code) {
        (_, ErrorCode::NotLoggedIn) => "not logged in right now, try again once reconnected".into(),
        (RequestKind::ChangePassword, ErrorCode::BadCredentials) => {
            "the old password is wrong".into()
        }
        (RequestKind::AdminWho, ErrorCode::Forbidden) => {
            "not allowed: you are not an administrator of this server".into()
        }
        (RequestKind::AddContact, ErrorCode::InvalidName) => "you cannot add yourself".into(),
        (RequestKind::CreateGroup | RequestKind::EditGroup, ErrorCode::InvalidName) => format!(
            "a group name is 1 to {MAX_GROUP_NAME_CHARS} characters on one line, without \
             direction overrides, and not the name of another of your groups"
        ),
        (RequestKind::CreateGroup, ErrorCode::TooLarge) => {
            "you have the most groups allowed".into()
        }
        (RequestKind::MoveContacts, ErrorCode::NoSuchUser) => "not on your contact list".into(),
        (
            RequestKind::CreateGroup | RequestKind::EditGroup | RequestKind::MoveContacts,
            ErrorCode::Forbidden,
        ) => "this server has no contact groups (it is older than them)".into(),
        (_, ErrorCode::Malformed) => {
            "this server does not have profiles (protocol version 1)".into()
        }
        (RequestKind::Room, ErrorCode::InvalidName) => {
            "a room name is 1 to 64 characters, without control or bidi characters".into()
        }
        (RequestKind::Room, ErrorCode::NoSuchRoom) => {
            "no such room, or you are not in it (or this server has no rooms)".into()
        }
        (RequestKind::Register, ErrorCode::Forbidden) => {
            "registration is closed on this server; ask its operator for an account".into()
        }
        _ => code.to_string(),
    };
    format!("{what}: {why}")
}

/// Why the server closed the connection, for "disconnected (…)".
pub fn close_reason(reason: CloseReason) -> String {
    reason.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::new(name).unwrap()
    }

    #[test]
    fn the_presence_line_reads_without_colour() {
        let plain = Style { colour: false };
        let users = BTreeMap::from([
            (user("alice"), Presence::Online),
            (user("bob"), Presence::Offline),
            (user("carol"), Presence::Busy),
        ]);
        assert_eq!(
            plain.presence_line(&users, |u| u.to_string()),
            "users: ● alice online  ○ bob offline  ● carol busy"
        );
        assert_eq!(
            plain.presence_line(&BTreeMap::new(), |u| u.to_string()),
            "users: (nobody else)"
        );
    }

    #[test]
    fn offline_users_are_greyed_and_online_ones_coloured() {
        let colour = Style { colour: true };
        assert_eq!(
            colour.user("bob", Presence::Offline),
            "\x1b[2;37m○ bob offline\x1b[0m"
        );
        assert_eq!(
            colour.user("王小明 (alice)", Presence::Online),
            "\x1b[32m● 王小明 (alice) online\x1b[0m"
        );
    }

    #[test]
    fn a_long_list_names_only_who_is_there() {
        let plain = Style { colour: false };
        let mut users: BTreeMap<UserId, Presence> = (0..40)
            .map(|i| (user(&format!("u{i:02}")), Presence::Offline))
            .collect();
        users.insert(user("u07"), Presence::Away);
        assert_eq!(
            plain.presence_line(&users, |u| u.to_string()),
            "users: ◐ u07 away  (+39 offline)"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(Duration::from_millis(1234)), "1.2 s");
        assert_eq!(duration(Duration::from_secs(45)), "45 s");
        assert_eq!(duration(Duration::from_secs(200)), "3m 20s");
        assert_eq!(duration(Duration::from_secs(7500)), "2h 05m");
    }
}
