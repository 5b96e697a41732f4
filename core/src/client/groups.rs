//! The user's contact groups as the server last described them (protocol version 2), and the
//! grouped contact list a client draws from them: each group with its members and how many
//! of them are online ("3/10"), as QQ-style messengers show.

use crate::ids::UserId;
use crate::message::{ContactGroup, DEFAULT_GROUP, Placement, Presence};
use crate::text;
use std::collections::{BTreeMap, BTreeSet};

/// What a client shows as the default group's name: the server never names it.
pub const DEFAULT_GROUP_NAME: &str = "Contacts";

/// The user's contact groups as the server last described them; `Client` keeps one and
/// hands a copy to the application with each change (`ClientEvent::Groups`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupBook {
    /// The named groups, in the user's order.
    groups: Vec<ContactGroup>,
    /// Contacts filed in a named group; every other contact is in the default group.
    placed: BTreeMap<UserId, u32>,
    /// From the login snapshot: `CreateGroup` past it is refused.
    max_groups: u32,
}

/// One group of the grouped contact list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GroupListing {
    pub id: u32,
    /// `DEFAULT_GROUP_NAME` for the default group.
    pub name: String,
    /// By name.
    pub members: Vec<UserId>,
    /// Members whose presence is anything but offline.
    pub online: usize,
}

impl GroupBook {
    /// The login snapshot: replaces everything.
    pub fn replace(&mut self, max_groups: u32, groups: Vec<ContactGroup>, placed: Vec<Placement>) {
        self.max_groups = max_groups;
        self.groups = groups;
        self.placed = placed.into_iter().map(|p| (p.contact, p.group)).collect();
    }

    /// A `GroupsChanged`: the new list, and the contacts that moved.
    pub fn apply(&mut self, groups: Vec<ContactGroup>, moved: Vec<Placement>) {
        self.groups = groups;
        for p in moved {
            if p.group == DEFAULT_GROUP {
                self.placed.remove(&p.contact);
            } else {
                self.placed.insert(p.contact, p.group);
            }
        }
        // A group deleted elsewhere, whose moves this diff does not carry, holds no one.
        let known: BTreeSet<u32> = self.groups.iter().map(|g| g.id).collect();
        self.placed.retain(|_, g| known.contains(g));
    }

    /// Contacts taken off the list leave their groups (the server forgets them too).
    pub fn forget(&mut self, removed: &[UserId]) {
        for c in removed {
            self.placed.remove(c);
        }
    }

    pub fn groups(&self) -> &[ContactGroup] {
        &self.groups
    }

    pub fn max_groups(&self) -> u32 {
        self.max_groups
    }

    /// The group called `name` (checked and normalised as the server does), or the default
    /// group for `DEFAULT_GROUP_NAME`.
    pub fn named(&self, name: &str) -> Option<u32> {
        let name = text::group_name(name).ok()?;
        self.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id)
            .or((name == DEFAULT_GROUP_NAME).then_some(DEFAULT_GROUP))
    }

    /// The default group first, then the named ones in the user's order, each with its
    /// members from `contacts` and how many of them `presence` shows online.
    pub fn listing(
        &self,
        contacts: &BTreeSet<UserId>,
        presence: &BTreeMap<UserId, Presence>,
    ) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = std::iter::once((DEFAULT_GROUP, DEFAULT_GROUP_NAME))
            .chain(self.groups.iter().map(|g| (g.id, g.name.as_str())))
            .map(|(id, name)| GroupListing {
                id,
                name: name.to_string(),
                members: Vec::new(),
                online: 0,
            })
            .collect();
        let index: BTreeMap<u32, usize> = out.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
        for contact in contacts {
            let group = self.placed.get(contact).copied().unwrap_or(DEFAULT_GROUP);
            let g = &mut out[index.get(&group).copied().unwrap_or(0)];
            g.members.push(contact.clone());
            if presence
                .get(contact)
                .is_some_and(|p| *p != Presence::Offline)
            {
                g.online += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::new(name).expect("valid")
    }

    #[test]
    fn contacts_are_listed_in_their_groups_with_online_counts() {
        let mut book = GroupBook::default();
        let family = ContactGroup {
            id: 3,
            name: "家人".into(),
        };
        let work = ContactGroup {
            id: 1,
            name: "Work".into(),
        };
        book.replace(
            100,
            vec![family, work],
            vec![
                Placement {
                    contact: user("mum"),
                    group: 3,
                },
                Placement {
                    contact: user("boss"),
                    group: 1,
                },
            ],
        );
        let contacts: BTreeSet<UserId> = ["mum", "dad", "boss", "pal"].map(user).into();
        let presence: BTreeMap<UserId, Presence> = [
            (user("mum"), Presence::Online),
            (user("boss"), Presence::Offline),
            (user("pal"), Presence::Away),
        ]
        .into();
        let listing = book.listing(&contacts, &presence);
        let got: Vec<(&str, usize, usize)> = listing
            .iter()
            .map(|g| (g.name.as_str(), g.online, g.members.len()))
            .collect();
        assert_eq!(
            got,
            vec![(DEFAULT_GROUP_NAME, 1, 2), ("家人", 1, 1), ("Work", 0, 1)]
        );
        // Deleted elsewhere: its members fall back to the default group.
        book.apply(
            vec![ContactGroup {
                id: 1,
                name: "Work".into(),
            }],
            vec![],
        );
        assert_eq!(book.listing(&contacts, &presence)[0].members.len(), 3);
        assert_eq!(book.named(" Work "), Some(1));
        assert_eq!(book.named(DEFAULT_GROUP_NAME), Some(DEFAULT_GROUP));
        assert_eq!(book.named("家人"), None);
    }
}
