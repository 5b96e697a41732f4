//! The chat's rooms (protocol version 3): what the server said of each room the user is in,
//! kept from `RoomMembers` and `RoomLeft` events, and the lines that show them.

use crate::ui::{Colour, Style};
use breeze_core::UserId;
use breeze_core::message::{Presence, RoomMember, RoomRole};
use std::collections::BTreeMap;

/// How a user is named on screen: the display name beside the id once the profile is known
/// (`breeze_core::profile::label`).
pub type Label<'a> = &'a dyn Fn(&UserId) -> String;

#[derive(Debug, Default)]
pub struct Rooms {
    rooms: BTreeMap<u64, Room>,
}

#[derive(Debug)]
struct Room {
    name: String,
    members: BTreeMap<UserId, (RoomRole, Presence)>,
}

impl Rooms {
    /// A room by what the user typed: `#ID`, or a name (case-insensitive; the lowest id
    /// wins when two rooms share it).
    pub fn find(&self, typed: &str) -> Option<u64> {
        if let Some(id) = typed.strip_prefix('#').and_then(|n| n.parse().ok()) {
            return self.rooms.contains_key(&id).then_some(id);
        }
        let typed = typed.to_lowercase();
        self.rooms
            .iter()
            .find(|(_, r)| r.name.to_lowercase() == typed)
            .map(|(id, _)| *id)
    }

    pub fn name(&self, room: u64) -> String {
        self.rooms
            .get(&room)
            .map_or_else(|| format!("#{room}"), |r| r.name.clone())
    }

    /// Takes a `RoomMembers` in; returns the lines worth showing (joins, leaves, a room
    /// shown for the first time), not presence changes: the list shows those.
    pub fn update(
        &mut self,
        style: &Style,
        label: Label<'_>,
        room: u64,
        name: String,
        full: bool,
        members: Vec<RoomMember>,
    ) -> Vec<String> {
        let known = self.rooms.contains_key(&room);
        let r = self.rooms.entry(room).or_insert_with(|| Room {
            name: name.clone(),
            members: BTreeMap::new(),
        });
        r.name = name;
        if full {
            r.members.clear();
        }
        let mut lines = Vec::new();
        for m in members {
            match m.role {
                Some(role) => {
                    if r.members
                        .insert(m.user.clone(), (role, m.presence))
                        .is_none()
                        && !full
                    {
                        lines.push(format!("{} joined {}", label(&m.user), r.name));
                    }
                }
                None => {
                    if r.members.remove(&m.user).is_some() {
                        lines.push(format!("{} left {}", label(&m.user), r.name));
                    }
                }
            }
        }
        if full && !known {
            lines.push(self.line(style, label, room));
        }
        lines
    }

    pub fn left(&mut self, room: u64) -> Option<String> {
        self.rooms.remove(&room).map(|r| r.name)
    }

    /// "team #3 (2/5 online): ann★, bob, …": names coloured by presence, the owner starred.
    pub fn line(&self, style: &Style, label: Label<'_>, room: u64) -> String {
        let Some(r) = self.rooms.get(&room) else {
            return format!("#{room}: not one of your rooms");
        };
        let online = r
            .members
            .values()
            .filter(|(_, p)| *p != Presence::Offline)
            .count();
        let members: Vec<String> = r
            .members
            .iter()
            .map(|(user, (role, presence))| {
                let mark = match role {
                    RoomRole::Owner => "★",
                    RoomRole::Admin => "+",
                    RoomRole::Member => "",
                };
                format!("{}{mark}", style.user(&label(user), *presence))
            })
            .collect();
        format!(
            "{} {} ({online}/{} online): {}",
            style.paint(Colour::Bold, &r.name),
            style.paint(Colour::Grey, &format!("#{room}")),
            r.members.len(),
            members.join(", ")
        )
    }

    pub fn lines(&self, style: &Style, label: Label<'_>) -> Vec<String> {
        self.rooms
            .keys()
            .map(|&room| self.line(style, label, room))
            .collect()
    }

    /// Everyone in any room, for name completion.
    pub fn members(&self) -> impl Iterator<Item = &UserId> {
        self.rooms.values().flat_map(|r| r.members.keys())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: Option<RoomRole>, presence: Presence) -> RoomMember {
        RoomMember {
            user: UserId::new(name).unwrap(),
            role,
            presence,
        }
    }

    #[test]
    fn a_room_is_found_by_name_or_id_and_shows_who_is_online() {
        let style = Style { colour: false };
        let id = |u: &UserId| u.to_string();
        let mut rooms = Rooms::default();
        let shown = rooms.update(
            &style,
            &id,
            3,
            "Team".into(),
            true,
            vec![
                member("ann", Some(RoomRole::Owner), Presence::Online),
                member("bob", Some(RoomRole::Member), Presence::Offline),
            ],
        );
        assert_eq!(shown.len(), 1);
        assert_eq!(rooms.find("team"), Some(3));
        assert_eq!(rooms.find("#3"), Some(3));
        assert_eq!(rooms.find("#4"), None);
        assert!(
            rooms.line(&style, &id, 3).contains("(1/2 online)"),
            "{}",
            rooms.line(&style, &id, 3)
        );
        let shown = rooms.update(
            &style,
            &id,
            3,
            "Team".into(),
            false,
            vec![
                member("bob", None, Presence::Offline),
                member("cat", Some(RoomRole::Member), Presence::Away),
            ],
        );
        assert_eq!(shown, ["bob left Team", "cat joined Team"]);
        assert_eq!(rooms.left(3), Some("Team".into()));
        assert_eq!(rooms.find("team"), None);
    }
}
