//! The presence view: who the server says is online, as this user is allowed to see it.

use crate::ids::UserId;
use crate::message::{Presence, PresenceEntry};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub(crate) struct PresenceView {
    /// Never a key: a server that lists the user to itself must not make the UI show the user
    /// as their own contact.
    me: UserId,
    users: BTreeMap<UserId, Presence>,
}

impl PresenceView {
    pub(crate) fn new(me: UserId) -> Self {
        PresenceView {
            me,
            users: BTreeMap::new(),
        }
    }

    pub(crate) fn users(&self) -> &BTreeMap<UserId, Presence> {
        &self.users
    }

    /// Replaces the whole view. Offline entries stay: under scope `Everyone` the snapshot is
    /// the user list. Returns the entries that were taken.
    pub(crate) fn replace(&mut self, entries: Vec<PresenceEntry>) -> Vec<PresenceEntry> {
        let entries: Vec<PresenceEntry> =
            entries.into_iter().filter(|e| e.user != self.me).collect();
        self.users = entries
            .iter()
            .map(|e| (e.user.clone(), e.presence))
            .collect();
        entries
    }

    /// Applies a diff and returns the entries that changed the view, in diff order.
    pub(crate) fn apply(&mut self, entries: Vec<PresenceEntry>) -> Vec<PresenceEntry> {
        entries
            .into_iter()
            .filter(|e| e.user != self.me)
            .filter(|e| self.users.insert(e.user.clone(), e.presence) != Some(e.presence))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, presence: Presence) -> PresenceEntry {
        PresenceEntry {
            user: UserId::new(user).unwrap(),
            presence,
        }
    }

    #[test]
    fn a_snapshot_replaces_keeps_offline_users_and_drops_me() {
        let mut view = PresenceView::new(UserId::new("me").unwrap());
        view.replace(vec![entry("old", Presence::Online)]);
        let taken = view.replace(vec![
            entry("bob", Presence::Offline),
            entry("me", Presence::Online),
            entry("carol", Presence::Away),
        ]);
        assert_eq!(
            taken,
            [
                entry("bob", Presence::Offline),
                entry("carol", Presence::Away)
            ]
        );
        let users: Vec<(&str, Presence)> =
            view.users().iter().map(|(u, p)| (u.as_str(), *p)).collect();
        assert_eq!(
            users,
            [("bob", Presence::Offline), ("carol", Presence::Away)]
        );
    }

    #[test]
    fn a_diff_reports_only_real_changes() {
        let mut view = PresenceView::new(UserId::new("me").unwrap());
        view.replace(vec![entry("bob", Presence::Online)]);
        let changed = view.apply(vec![
            entry("bob", Presence::Online),
            entry("me", Presence::Busy),
            entry("bob", Presence::Away),
            entry("dave", Presence::Online),
        ]);
        assert_eq!(
            changed,
            [
                entry("bob", Presence::Away),
                entry("dave", Presence::Online)
            ]
        );
        assert!(!view.users().contains_key(&UserId::new("me").unwrap()));
    }
}
