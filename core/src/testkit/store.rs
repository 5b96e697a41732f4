//! An in-memory implementation of the storage contract, for tests, fuzzing and the
//! in-memory harness. Passwords are compared in plain text: hashing belongs to real hosts,
//! and this store never leaves a test process.

use crate::ids::UserId;
use crate::message::{AttachmentInfo, Credential, Delivery, HistoryItem};
use crate::storage::{Account, MailboxPage, StorageError, StorageOp, StorageResult, Stored};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
struct Row {
    from: UserId,
    to: UserId,
    delivery: Delivery,
    delivered: bool,
}

#[derive(Debug, Default, Clone)]
pub struct MemStore {
    passwords: BTreeMap<UserId, String>,
    tokens: BTreeMap<Vec<u8>, UserId>,
    contacts: BTreeMap<UserId, BTreeSet<UserId>>,
    messages: BTreeMap<u64, Row>,
    by_sender_id: BTreeMap<(UserId, u64), u64>,
    next_seq: u64,
    next_token: u64,
}

impl MemStore {
    pub fn new() -> Self {
        MemStore {
            next_seq: 1,
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

    /// Messages stored for `user` and not yet acknowledged.
    pub fn undelivered(&self, user: &UserId) -> usize {
        self.messages
            .values()
            .filter(|r| &r.to == user && !r.delivered)
            .count()
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
            StorageOp::Authenticate { user, credential } => {
                let ok = match &credential {
                    Credential::Password(p) => self.passwords.get(&user) == Some(p),
                    Credential::Token(t) => self.tokens.get(t) == Some(&user),
                };
                StorageResult::Authenticated(if ok {
                    self.next_token += 1;
                    let token = format!("token-{}", self.next_token).into_bytes();
                    self.tokens.insert(token.clone(), user.clone());
                    let contacts = self
                        .contacts
                        .get(&user)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect();
                    Ok(Account {
                        contacts,
                        resume_token: token,
                    })
                } else {
                    Err(StorageError::BadCredentials)
                })
            }
            StorageOp::ChangePassword { user, old, new } => {
                StorageResult::PasswordChanged(if self.passwords.get(&user) == Some(&old) {
                    self.passwords.insert(user.clone(), new);
                    self.tokens.retain(|_, u| *u != user);
                    Ok(())
                } else {
                    Err(StorageError::BadCredentials)
                })
            }
            StorageOp::SetContacts { user, add, remove } => {
                StorageResult::ContactsSet(if add.iter().any(|c| !self.passwords.contains_key(c)) {
                    Err(StorageError::NoSuchUser)
                } else {
                    let set = self.contacts.entry(user).or_default();
                    set.extend(add);
                    for c in &remove {
                        set.remove(c);
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
                    }));
                }
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
                }))
            }
            StorageOp::LoadMailbox {
                user,
                after,
                limit,
                max_bytes,
            } => {
                let undelivered = self
                    .messages
                    .range(after.saturating_add(1)..)
                    .map(|(_, r)| r)
                    .filter(|r| r.to == user && !r.delivered)
                    .map(|r| r.delivery.clone());
                StorageResult::MailboxLoaded(Ok(MailboxPage::take(undelivered, limit, max_bytes)))
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
                    .take(limit as usize)
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
        }
    }
}
