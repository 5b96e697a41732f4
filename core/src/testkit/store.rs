//! An in-memory implementation of the storage contract, for tests, fuzzing and the
//! in-memory harness. Passwords are compared in plain text: hashing belongs to real hosts,
//! and this store never leaves a test process. Otherwise it answers as the SQLite store
//! does, which `testkit::contract` checks against both.

use crate::ids::UserId;
use crate::message::{
    AttachmentInfo, AvatarImage, ContactGroup, Credential, DEFAULT_GROUP, Delivery, HistoryItem,
    Placement, ProfileCard, RoomDelivery, RoomRole,
};
use crate::storage::{
    Account, ContactGroups, GroupChange, GroupsDiff, MAX_HISTORY, MAX_TOKENS_PER_USER, MailboxPage,
    MemberRoom, ProfileChange, RoomChange, RoomRange, RoomStored, RoomView, StorageError,
    StorageOp, StorageResult, Stored,
};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
struct Row {
    from: UserId,
    to: UserId,
    delivery: Delivery,
    delivered: bool,
}

/// A resume token, kept the way the SQLite store keeps one.
#[derive(Debug, Clone)]
struct Token {
    id: u64,
    value: Vec<u8>,
    /// The token this one was issued for, at a token login.
    parent: Option<u64>,
}

/// One user's contact groups, kept the way the SQL stores keep them.
#[derive(Debug, Default, Clone)]
struct Groups {
    /// In the user's order.
    list: Vec<ContactGroup>,
    /// The last id handed out: ids are never reused.
    last_id: u32,
    /// Contacts filed in a named group.
    placed: BTreeMap<UserId, u32>,
}

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    passwords: BTreeMap<UserId, String>,
    /// Each user's live tokens, oldest first.
    tokens: BTreeMap<UserId, Vec<Token>>,
    contacts: BTreeMap<UserId, BTreeSet<UserId>>,
    messages: BTreeMap<u64, Row>,
    by_sender_id: BTreeMap<(UserId, u64), u64>,
    banned: BTreeSet<UserId>,
    groups: BTreeMap<UserId, Groups>,
    /// Cards ever set (`rev` above 0).
    profiles: BTreeMap<UserId, ProfileCard>,
    /// Avatar images by content hash, while some card names them.
    avatars: BTreeMap<[u8; 32], AvatarImage>,
    next_seq: u64,
    next_token: u64,
    rooms: BTreeMap<u64, Room>,
    next_room: u64,
    /// `LoadMailbox` reads answered, so a test can tell a push from a read.
    pub mailbox_reads: u64,
}

/// A room kept the way the SQLite store keeps one: its messages once, a cursor per member.
#[derive(Debug, Clone, Default)]
struct Room {
    name: String,
    /// Member → (role, read cursor).
    members: BTreeMap<UserId, (RoomRole, u64)>,
    /// By room seq.
    messages: BTreeMap<u64, RoomDelivery>,
    by_sender_id: BTreeMap<(UserId, u64), u64>,
}

impl Room {
    fn last(&self) -> u64 {
        self.messages.keys().next_back().copied().unwrap_or(0)
    }

    fn view(&self, room: u64) -> RoomView {
        RoomView {
            room,
            name: self.name.clone(),
            last: self.last(),
            members: self
                .members
                .iter()
                .map(|(u, (role, _))| (u.clone(), *role))
                .collect(),
        }
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore {
            next_seq: 1,
            next_room: 1,
            ..Default::default()
        }
    }

    /// Creates an account directly (test setup).
    pub fn add_account(&mut self, user: UserId, password: &str) {
        self.passwords.insert(user, password.to_string());
    }

    pub fn users(&self) -> Vec<UserId> {
        self.passwords.keys().cloned().collect()
    }

    /// The highest seq handed out so far, to anyone (0 before the first message).
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// `user`'s contact groups as a login would read them.
    pub fn groups_of(&self, user: &UserId) -> ContactGroups {
        self.account(user).groups
    }

    /// Messages stored for `user` and not yet acknowledged.
    pub fn undelivered(&self, user: &UserId) -> usize {
        self.messages
            .values()
            .filter(|r| &r.to == user && !r.delivered)
            .count()
    }

    /// Creates a room directly (test setup): `members[0]` owns it, the rest are members.
    /// Returns its id.
    pub fn add_room(&mut self, name: &str, members: &[UserId]) -> u64 {
        let id = self.next_room;
        self.next_room += 1;
        let mut r = Room {
            name: name.to_string(),
            ..Room::default()
        };
        for (i, m) in members.iter().enumerate() {
            let role = if i == 0 {
                RoomRole::Owner
            } else {
                RoomRole::Member
            };
            r.members.insert(m.clone(), (role, 0));
        }
        self.rooms.insert(id, r);
        id
    }

    /// `user`'s read cursor in `room`, if a member.
    pub fn room_cursor(&self, room: u64, user: &UserId) -> Option<u64> {
        self.rooms.get(&room)?.members.get(user).map(|m| m.1)
    }

    /// Rooms `user` is a member of.
    fn rooms_of(&self, user: &UserId) -> usize {
        self.rooms
            .values()
            .filter(|r| r.members.contains_key(user))
            .count()
    }

    fn change_room(
        &mut self,
        by: UserId,
        room: u64,
        user: UserId,
        change: RoomChange,
        max_members: u32,
        max_rooms: u32,
    ) -> Result<RoomView, StorageError> {
        if !self.passwords.contains_key(&user) {
            return Err(StorageError::NoSuchUser);
        }
        let in_rooms = self.rooms_of(&user);
        let r = self.rooms.get_mut(&room).ok_or(StorageError::NoSuchRoom)?;
        let by_role = r.members.get(&by).ok_or(StorageError::NoSuchRoom)?.0;
        let current = r.members.get(&user).map(|m| m.0);
        let last = r.last();
        match change {
            RoomChange::Add(role) => {
                if !crate::storage::may_grant(by_role, role, current) {
                    return Err(StorageError::Forbidden);
                }
                match r.members.get_mut(&user) {
                    Some(m) => m.0 = role,
                    None => {
                        if r.members.len() >= max_members as usize || in_rooms >= max_rooms as usize
                        {
                            return Err(StorageError::RoomLimit);
                        }
                        r.members.insert(user, (role, last));
                    }
                }
            }
            RoomChange::Remove => {
                if let Some(role) = current {
                    if !crate::storage::may_remove(&by, by_role, &user, role) {
                        return Err(StorageError::Forbidden);
                    }
                    r.members.remove(&user);
                }
            }
        }
        Ok(r.view(room))
    }

    /// A login by resume token: the presented token stays valid until its successor is used
    /// (the `LoginOk` carrying the successor may be lost); using a successor spends its
    /// parent and the parent's other successors.
    fn resume(&mut self, user: &UserId, token: &[u8]) -> Result<Account, StorageError> {
        let live = self.tokens.get_mut(user);
        let Some((live, id, parent)) = live.and_then(|live| {
            let found = live.iter().find(|t| t.value == token)?;
            let (id, parent) = (found.id, found.parent);
            Some((live, id, parent))
        }) else {
            return Err(StorageError::BadCredentials);
        };
        if self.banned.contains(user) {
            return Ok(Account::banned());
        }
        if let Some(parent) = parent {
            live.retain(|t| t.id != parent && (t.parent != Some(parent) || t.id == id));
        }
        Ok(self.login(user, Some(id)))
    }

    /// Reads the account, issuing no token (an agent's login).
    fn account(&self, user: &UserId) -> Account {
        Account {
            contacts: self
                .contacts
                .get(user)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            resume_token: Vec::new(),
            banned: false,
            groups: self
                .groups
                .get(user)
                .map_or_else(ContactGroups::default, |g| ContactGroups {
                    groups: g.list.clone(),
                    placements: g
                        .placed
                        .iter()
                        .map(|(contact, &group)| Placement {
                            contact: contact.clone(),
                            group,
                        })
                        .collect(),
                }),
        }
    }

    fn change_groups(
        &mut self,
        user: UserId,
        change: GroupChange,
        max_groups: u32,
    ) -> Result<GroupsDiff, StorageError> {
        if !self.passwords.contains_key(&user) {
            return Err(StorageError::NoSuchUser);
        }
        let contacts = self.contacts.get(&user).cloned().unwrap_or_default();
        let g = self.groups.entry(user).or_default();
        let index = |g: &Groups, id: u32| {
            g.list
                .iter()
                .position(|x| x.id == id)
                .ok_or(StorageError::NoSuchGroup)
        };
        let taken = |g: &Groups, name: &str, except: u32| {
            g.list.iter().any(|x| x.name == name && x.id != except)
        };
        let mut moved = Vec::new();
        match change {
            GroupChange::Create { name } => {
                if taken(g, &name, DEFAULT_GROUP) {
                    return Err(StorageError::GroupNameTaken);
                }
                if g.list.len() >= max_groups as usize {
                    return Err(StorageError::TooManyGroups);
                }
                g.last_id += 1;
                g.list.push(ContactGroup {
                    id: g.last_id,
                    name,
                });
            }
            GroupChange::Rename { group, name } => {
                let i = index(g, group)?;
                if taken(g, &name, group) {
                    return Err(StorageError::GroupNameTaken);
                }
                g.list[i].name = name;
            }
            GroupChange::Delete { group } => {
                let i = index(g, group)?;
                g.list.remove(i);
                g.placed.retain(|contact, &mut at| {
                    if at == group {
                        moved.push(Placement {
                            contact: contact.clone(),
                            group: DEFAULT_GROUP,
                        });
                    }
                    at != group
                });
            }
            GroupChange::Reorder { group, position } => {
                let i = index(g, group)?;
                let it = g.list.remove(i);
                let at = (position as usize).min(g.list.len());
                g.list.insert(at, it);
            }
            GroupChange::File {
                contacts: filed,
                group,
            } => {
                if group != DEFAULT_GROUP {
                    index(g, group)?;
                }
                if filed.iter().any(|c| !contacts.contains(c)) {
                    return Err(StorageError::NoSuchUser);
                }
                let filed: BTreeSet<UserId> = filed.into_iter().collect();
                for contact in filed {
                    let before = g.placed.get(&contact).copied().unwrap_or(DEFAULT_GROUP);
                    if before == group {
                        continue;
                    }
                    if group == DEFAULT_GROUP {
                        g.placed.remove(&contact);
                    } else {
                        g.placed.insert(contact.clone(), group);
                    }
                    moved.push(Placement { contact, group });
                }
            }
        }
        Ok(GroupsDiff {
            groups: g.list.clone(),
            moved,
        })
    }

    /// Issues a fresh token, forgetting the oldest beyond `MAX_TOKENS_PER_USER`, and reads
    /// the account.
    fn login(&mut self, user: &UserId, parent: Option<u64>) -> Account {
        self.next_token += 1;
        let id = self.next_token;
        let value = format!("token-{id}").into_bytes();
        let live = self.tokens.entry(user.clone()).or_default();
        live.push(Token {
            id,
            value: value.clone(),
            parent,
        });
        let excess = live.len().saturating_sub(MAX_TOKENS_PER_USER);
        live.drain(..excess);
        Account {
            resume_token: value,
            ..self.account(user)
        }
    }

    pub fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult {
        match op {
            StorageOp::Register { user, password } => {
                StorageResult::Registered(match self.passwords.entry(user) {
                    std::collections::btree_map::Entry::Occupied(_) => Err(StorageError::UserTaken),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(password);
                        Ok(())
                    }
                })
            }
            StorageOp::Authenticate {
                user,
                credential,
                issue_token,
            } => StorageResult::Authenticated(match credential {
                Credential::Password(p) if self.passwords.get(&user) == Some(&p) => {
                    Ok(if self.banned.contains(&user) {
                        Account::banned()
                    } else if issue_token {
                        self.login(&user, None)
                    } else {
                        self.account(&user)
                    })
                }
                Credential::Password(_) => Err(StorageError::BadCredentials),
                Credential::Token(t) => self.resume(&user, &t),
            }),
            StorageOp::ChangePassword { user, old, new } => {
                StorageResult::PasswordChanged(if self.passwords.get(&user) == Some(&old) {
                    self.passwords.insert(user.clone(), new);
                    self.tokens.remove(&user);
                    Ok(())
                } else {
                    Err(StorageError::BadCredentials)
                })
            }
            StorageOp::SetContacts { user, add, remove } => {
                let unknown = std::iter::once(&user)
                    .chain(&add)
                    .any(|u| !self.passwords.contains_key(u));
                StorageResult::ContactsSet(if unknown {
                    Err(StorageError::NoSuchUser)
                } else {
                    let set = self.contacts.entry(user.clone()).or_default();
                    set.extend(add);
                    for c in &remove {
                        set.remove(c);
                    }
                    // A contact taken off the list leaves its group: added again, it is in
                    // the default group, as the SQL stores' contact row (which holds the
                    // group) is deleted and created anew.
                    if let Some(g) = self.groups.get_mut(&user) {
                        for c in &remove {
                            g.placed.remove(c);
                        }
                    }
                    Ok(())
                })
            }
            StorageOp::StoreMessage {
                from,
                to,
                id,
                body,
                attachment,
            } => {
                if let Some(seq) = self.by_sender_id.get(&(from.clone(), id)) {
                    let row = &self.messages[seq];
                    return StorageResult::MessageStored(Ok(Stored {
                        to: row.to.clone(),
                        delivery: row.delivery.clone(),
                        duplicate: true,
                        prev: None,
                    }));
                }
                if !self.passwords.contains_key(&from) || !self.passwords.contains_key(&to) {
                    return StorageResult::MessageStored(Err(StorageError::NoSuchUser));
                }
                let prev = self
                    .messages
                    .values()
                    .rev()
                    .find(|row| row.to == to)
                    .map_or(0, |row| row.delivery.seq);
                let seq = self.next_seq;
                self.next_seq += 1;
                let delivery = Delivery {
                    seq,
                    from: from.clone(),
                    id,
                    body,
                    attachment,
                    sent_at_ms: now_ms,
                };
                self.by_sender_id.insert((from.clone(), id), seq);
                let row = Row {
                    from,
                    to: to.clone(),
                    delivery: delivery.clone(),
                    delivered: false,
                };
                self.messages.insert(seq, row);
                StorageResult::MessageStored(Ok(Stored {
                    to,
                    delivery,
                    duplicate: false,
                    prev: Some(prev),
                }))
            }
            StorageOp::LoadMailbox {
                user,
                after,
                all_above,
                limit,
                max_bytes,
            } => {
                self.mailbox_reads += 1;
                let high = self
                    .messages
                    .values()
                    .rev()
                    .find(|r| r.to == user)
                    .map_or(0, |r| r.delivery.seq);
                let all_above = all_above.unwrap_or(high);
                let selected = self
                    .messages
                    .range(after.saturating_add(1)..)
                    .map(|(_, r)| r)
                    .filter(|r| r.to == user && (!r.delivered || r.delivery.seq > all_above))
                    .map(|r| r.delivery.clone());
                let waiting = u32::try_from(selected.clone().count()).unwrap_or(u32::MAX);
                StorageResult::MailboxLoaded(Ok(MailboxPage {
                    high,
                    waiting,
                    ..MailboxPage::take(selected, limit, max_bytes)
                }))
            }
            StorageOp::MarkDelivered { user, seqs } => {
                for seq in seqs {
                    if let Some(r) = self.messages.get_mut(&seq)
                        && r.to == user
                    {
                        r.delivered = true;
                    }
                }
                StorageResult::DeliveredMarked(Ok(()))
            }
            StorageOp::LoadHistory {
                user,
                with,
                before,
                limit,
            } => {
                let items = self
                    .messages
                    .values()
                    .rev()
                    .filter(|r| before.is_none_or(|b| r.delivery.seq < b))
                    .filter(|r| {
                        (r.from == user && r.to == with) || (r.from == with && r.to == user)
                    })
                    .take(usize::from(limit.min(MAX_HISTORY)))
                    .map(|r| HistoryItem {
                        seq: r.delivery.seq,
                        id: r.delivery.id,
                        from: r.from.clone(),
                        to: r.to.clone(),
                        body: r.delivery.body.clone(),
                        attachment: r.delivery.attachment.as_ref().map(|a| AttachmentInfo {
                            mime: a.mime.clone(),
                            name: a.name.clone(),
                            size: a.data.len() as u64,
                        }),
                        sent_at_ms: r.delivery.sent_at_ms,
                    })
                    .collect();
                StorageResult::HistoryLoaded(Ok(items))
            }
            StorageOp::SetProfile { user, change } => {
                if !self.passwords.contains_key(&user) {
                    return StorageResult::ProfileSet(Err(StorageError::NoSuchUser));
                }
                let card = self
                    .profiles
                    .entry(user.clone())
                    .or_insert_with(|| ProfileCard::blank(user));
                card.rev += 1;
                match change {
                    ProfileChange::Text {
                        display_name,
                        signature,
                    } => {
                        card.display_name = display_name;
                        card.signature = signature;
                    }
                    ProfileChange::Avatar(avatar) => {
                        card.avatar = avatar.as_ref().map(|a| a.hash);
                        if let Some(a) = avatar {
                            self.avatars.insert(a.hash, a.image);
                        }
                    }
                }
                let card = card.clone();
                let named: BTreeSet<[u8; 32]> =
                    self.profiles.values().filter_map(|c| c.avatar).collect();
                self.avatars.retain(|hash, _| named.contains(hash));
                StorageResult::ProfileSet(Ok(card))
            }
            StorageOp::LoadProfiles { users } => {
                let cards = match users {
                    None => self.profiles.values().cloned().collect(),
                    Some(users) => users
                        .iter()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .filter_map(|u| self.profiles.get(u).cloned())
                        .collect(),
                };
                StorageResult::ProfilesLoaded(Ok(cards))
            }
            StorageOp::LoadProfile { user, avatar } => {
                StorageResult::ProfileLoaded(if !self.passwords.contains_key(&user) {
                    Err(StorageError::NoSuchUser)
                } else {
                    let card = self
                        .profiles
                        .get(&user)
                        .cloned()
                        .unwrap_or_else(|| ProfileCard::blank(user));
                    let image = card
                        .avatar
                        .filter(|_| avatar)
                        .and_then(|h| self.avatars.get(&h).cloned());
                    Ok((card, image))
                })
            }
            StorageOp::CreateRoom {
                owner,
                name,
                max_rooms,
            } => StorageResult::RoomCreated(if !self.passwords.contains_key(&owner) {
                Err(StorageError::NoSuchUser)
            } else if self.rooms_of(&owner) >= max_rooms as usize {
                Err(StorageError::RoomLimit)
            } else {
                let id = self.next_room;
                self.next_room += 1;
                let mut r = Room {
                    name,
                    ..Room::default()
                };
                r.members.insert(owner, (RoomRole::Owner, 0));
                let view = r.view(id);
                self.rooms.insert(id, r);
                Ok(view)
            }),
            StorageOp::ChangeRoom {
                by,
                room,
                user,
                change,
                max_members,
                max_rooms,
            } => StorageResult::RoomChanged(self.change_room(
                by,
                room,
                user,
                change,
                max_members,
                max_rooms,
            )),
            StorageOp::StoreRoomMessage {
                room,
                from,
                id,
                body,
            } => StorageResult::RoomMessageStored((|| {
                let r = self.rooms.get_mut(&room).ok_or(StorageError::NoSuchRoom)?;
                let members = r.members.keys().cloned().collect();
                if let Some(seq) = r.by_sender_id.get(&(from.clone(), id)) {
                    return Ok(RoomStored {
                        delivery: r.messages[seq].clone(),
                        members,
                        duplicate: true,
                    });
                }
                if !r.members.contains_key(&from) {
                    return Err(StorageError::NoSuchRoom);
                }
                let seq = r.last() + 1;
                let delivery = RoomDelivery {
                    room,
                    seq,
                    from: from.clone(),
                    id,
                    body,
                    sent_at_ms: now_ms,
                };
                r.by_sender_id.insert((from, id), seq);
                r.messages.insert(seq, delivery.clone());
                Ok(RoomStored {
                    delivery,
                    members,
                    duplicate: false,
                })
            })()),
            StorageOp::LoadRooms { user } => StorageResult::RoomsLoaded(Ok(self
                .rooms
                .iter()
                .filter_map(|(&id, r)| {
                    let read = r.members.get(&user)?.1;
                    Some(MemberRoom {
                        view: r.view(id),
                        read,
                    })
                })
                .collect())),
            StorageOp::LoadRoom {
                user,
                room,
                range,
                limit,
            } => StorageResult::RoomLoaded(match self.rooms.get(&room) {
                Some(r) if r.members.contains_key(&user) => {
                    let take = usize::from(limit.min(MAX_HISTORY));
                    Ok(match range {
                        RoomRange::After(after) => r
                            .messages
                            .range(after.saturating_add(1)..)
                            .take(take)
                            .map(|(_, d)| d.clone())
                            .collect(),
                        RoomRange::Before(before) => r
                            .messages
                            .range(..before.unwrap_or(u64::MAX))
                            .rev()
                            .take(take)
                            .map(|(_, d)| d.clone())
                            .collect(),
                    })
                }
                _ => Err(StorageError::NoSuchRoom),
            }),
            StorageOp::MarkRoomRead { user, reads } => {
                for (room, seq) in reads {
                    if let Some(m) = self
                        .rooms
                        .get_mut(&room)
                        .and_then(|r| r.members.get_mut(&user))
                    {
                        m.1 = m.1.max(seq);
                    }
                }
                StorageResult::RoomReadMarked(Ok(()))
            }
            StorageOp::SetBanned { user, banned } => {
                StorageResult::BannedSet(if !self.passwords.contains_key(&user) {
                    Err(StorageError::NoSuchUser)
                } else {
                    if banned {
                        self.banned.insert(user);
                    } else {
                        self.banned.remove(&user);
                    }
                    Ok(())
                })
            }
            StorageOp::ChangeGroups {
                user,
                change,
                max_groups,
            } => StorageResult::GroupsChanged(self.change_groups(user, change, max_groups)),
        }
    }
}
