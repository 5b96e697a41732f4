//! Presence fan-out: who watches whom, what each watcher has been told, and the batching of
//! changes into one frame per watcher.
//!
//! Watchers are told the *announced* state, not the instantaneous one: changes mark a user
//! dirty, and at flush time a user whose visible presence differs from what was announced is
//! announced once. A status flipped and flipped back between two flushes announces nothing,
//! and a snapshot built from the announced state never disagrees with the diffs that follow
//! it — so no watcher hears the same thing twice or out of order.

use super::vec_set::VecSet;
use super::{Output, Server};
use crate::codec::encode;
use crate::ids::{ConnId, UserId};
use crate::message::{Presence, PresenceEntry, ServerMsg, WatchScope};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub(super) struct PresenceBoard {
    /// Last presence announced per user; absent means offline.
    announced: BTreeMap<UserId, Presence>,
    dirty: BTreeSet<UserId>,
    /// Users registered since the last flush: the everyone scope lists them (as offline).
    joined: BTreeSet<UserId>,
    /// Contacts scope: watched user → connected users who have them as a contact.
    watchers: BTreeMap<UserId, VecSet<UserId>>,
    /// Contacts scope: watcher → contacts it added since the last flush. The flush tells the
    /// watcher their announced presence in the same diff as the batch's changes, so a
    /// contact change costs no snapshot and no second diff.
    introduced: BTreeMap<UserId, BTreeSet<UserId>>,
}

impl PresenceBoard {
    pub(super) fn touch(&mut self, user: UserId) {
        self.dirty.insert(user);
    }

    pub(super) fn joined(&mut self, user: UserId) {
        self.joined.insert(user);
    }

    pub(super) fn announced(&self, user: &UserId) -> Presence {
        self.announced
            .get(user)
            .copied()
            .unwrap_or(Presence::Offline)
    }

    /// `watcher` is connected and watches each of `contacts`.
    pub(super) fn watch<'a>(
        &mut self,
        watcher: &UserId,
        contacts: impl IntoIterator<Item = &'a UserId>,
    ) {
        for c in contacts {
            self.watchers
                .entry(c.clone())
                .or_default()
                .insert(watcher.clone());
        }
    }

    pub(super) fn unwatch<'a>(
        &mut self,
        watcher: &UserId,
        contacts: impl IntoIterator<Item = &'a UserId>,
    ) {
        for c in contacts {
            if let Some(set) = self.watchers.get_mut(c) {
                set.remove(watcher);
                if set.is_empty() {
                    self.watchers.remove(c);
                }
            }
        }
    }

    /// Contacts scope: the connected users who have `user` as a contact.
    pub(super) fn watchers_of(&self, user: &UserId) -> impl Iterator<Item = &UserId> {
        self.watchers.get(user).into_iter().flat_map(|w| w.iter())
    }

    /// `watcher` has just added `contacts`: the next flush tells it their presence.
    pub(super) fn introduce(&mut self, watcher: &UserId, contacts: &[UserId]) {
        if !contacts.is_empty() {
            self.introduced
                .entry(watcher.clone())
                .or_default()
                .extend(contacts.iter().cloned());
        }
    }

    pub(super) fn clear(&mut self) {
        *self = PresenceBoard::default();
    }
}

impl Server {
    /// The full view `watcher` is entitled to, as announced so far.
    pub(super) fn snapshot_for(&self, watcher: &UserId) -> Vec<PresenceEntry> {
        let entry = |user: &UserId| PresenceEntry {
            user: user.clone(),
            presence: self.presence.announced(user),
        };
        match self.cfg.scope {
            // Users registered since the last flush arrive in the diff that follows.
            WatchScope::Everyone => self
                .users
                .keys()
                .filter(|u| *u != watcher && !self.presence.joined.contains(*u))
                .map(entry)
                .collect(),
            WatchScope::Contacts => self
                .users
                .get(watcher)
                .map(|u| {
                    u.contacts
                        .iter()
                        .filter(|c| *c != watcher)
                        .map(entry)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Announces every net change since the last flush, one frame per watcher connection.
    pub(super) fn flush_presence(&mut self) {
        let board = &mut self.presence;
        if board.dirty.is_empty() && board.joined.is_empty() && board.introduced.is_empty() {
            return;
        }
        let mut changes: Vec<PresenceEntry> = Vec::new();
        for user in std::mem::take(&mut board.dirty) {
            let now = self
                .users
                .get(&user)
                .map_or(Presence::Offline, |u| u.visible());
            if now == board.announced(&user) {
                continue;
            }
            if now == Presence::Offline {
                board.announced.remove(&user);
            } else {
                board.announced.insert(user.clone(), now);
            }
            changes.push(PresenceEntry {
                user,
                presence: now,
            });
        }
        let joined = std::mem::take(&mut board.joined);
        self.fan_out_to_rooms(&changes);
        match self.cfg.scope {
            WatchScope::Everyone => {
                for user in joined {
                    if !changes.iter().any(|e| e.user == user) {
                        changes.push(PresenceEntry {
                            user,
                            presence: Presence::Offline,
                        });
                    }
                }
                self.fan_out_to_everyone(changes);
            }
            WatchScope::Contacts => self.fan_out_to_watchers(changes),
        }
    }

    /// Everyone scope: every session hears every change but its own user's, so one encoded
    /// frame serves all sessions whose user did not change.
    fn fan_out_to_everyone(&mut self, changes: Vec<PresenceEntry>) {
        if changes.is_empty() {
            return;
        }
        let changed: BTreeSet<&UserId> = changes.iter().map(|e| &e.user).collect();
        let shared = encode(&ServerMsg::PresenceDiff {
            entries: changes.clone(),
        });
        for conn in self.conns.ids() {
            let Some(user) = self.conns[&conn].user() else {
                continue;
            };
            let payload = if changed.contains(user) {
                let entries: Vec<PresenceEntry> = changes
                    .iter()
                    .filter(|e| &e.user != user)
                    .cloned()
                    .collect();
                if entries.is_empty() {
                    continue;
                }
                encode(&ServerMsg::PresenceDiff { entries })
            } else {
                shared.clone()
            };
            self.out.push_back(Output::Send { conn, payload });
        }
    }

    fn fan_out_to_watchers(&mut self, changes: Vec<PresenceEntry>) {
        let mut batches: BTreeMap<ConnId, Vec<PresenceEntry>> = BTreeMap::new();
        let changed: BTreeSet<&UserId> = changes.iter().map(|e| &e.user).collect();
        for (watcher, contacts) in std::mem::take(&mut self.presence.introduced) {
            let Some(w) = self.users.get(&watcher) else {
                continue;
            };
            // A contact whose change this batch announces is covered by that entry, which
            // goes to every watcher, the new one included.
            let entries: Vec<PresenceEntry> = contacts
                .iter()
                .filter(|c| !changed.contains(c) && w.contacts.contains(c))
                .map(|c| PresenceEntry {
                    user: c.clone(),
                    presence: self.presence.announced(c),
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            for &conn in w.sessions.iter() {
                batches
                    .entry(conn)
                    .or_default()
                    .extend(entries.iter().cloned());
            }
        }
        for entry in changes {
            let Some(watchers) = self.presence.watchers.get(&entry.user) else {
                continue;
            };
            for w in watchers {
                if *w == entry.user {
                    continue;
                }
                for &conn in self.users.get(w).map(|u| &u.sessions).into_iter().flatten() {
                    batches.entry(conn).or_default().push(entry.clone());
                }
            }
        }
        for (conn, entries) in batches {
            let payload = encode(&ServerMsg::PresenceDiff { entries });
            self.out.push_back(Output::Send { conn, payload });
        }
    }
}
