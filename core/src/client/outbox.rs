//! Messages the server has not yet confirmed durable.
//!
//! A message stays here from `send_message` until `Sent` (or a final `Error`), and is re-sent
//! with its original id after every login: the server stores `(sender, id)` once, so a re-send
//! of something that did arrive costs a duplicate `Sent`, never a duplicate message.

use crate::ids::UserId;
use crate::message::{Attachment, ClientMsg};
use std::collections::BTreeMap;

/// Where a queued message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    User(UserId),
    /// A room (version 2): sent as `RoomSend`, sharing the id space, so one outbox keeps
    /// the order of everything the application sent.
    Room(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) id: u64,
    pub(crate) to: Target,
    pub(crate) body: String,
    pub(crate) attachment: Option<Attachment>,
}

impl Outgoing {
    pub(crate) fn to_msg(&self) -> ClientMsg {
        match &self.to {
            Target::User(to) => ClientMsg::Send {
                id: self.id,
                to: to.clone(),
                body: self.body.clone(),
                attachment: self.attachment.clone(),
            },
            Target::Room(room) => ClientMsg::RoomSend {
                id: self.id,
                room: *room,
                body: self.body.clone(),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    id_base: u64,
    issued: u64,
    /// Keyed by issue number, not id: ids wrap around `u64::MAX` when `id_base` is near it,
    /// and re-sends must keep the order the application sent in.
    pending: BTreeMap<u64, Outgoing>,
}

impl Outbox {
    pub(crate) fn new(id_base: u64) -> Self {
        Outbox {
            id_base,
            issued: 0,
            pending: BTreeMap::new(),
        }
    }

    /// Queues a message under a fresh id and returns it.
    pub(crate) fn push(
        &mut self,
        to: Target,
        body: String,
        attachment: Option<Attachment>,
    ) -> &Outgoing {
        let number = self.issued;
        self.issued += 1;
        let id = self.id_base.wrapping_add(number);
        self.pending.entry(number).or_insert(Outgoing {
            id,
            to,
            body,
            attachment,
        })
    }

    /// Takes the message with this id out, if it is still pending.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Outgoing> {
        self.pending.remove(&id.wrapping_sub(self.id_base))
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.pending.contains_key(&id.wrapping_sub(self.id_base))
    }

    /// Pending messages in the order the application sent them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Outgoing> {
        self.pending.values()
    }

    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> UserId {
        UserId::new("bob").unwrap()
    }

    #[test]
    fn ids_count_up_from_the_base_and_keep_send_order_across_wrap_around() {
        let mut outbox = Outbox::new(u64::MAX - 1);
        let ids: Vec<u64> = (0..4)
            .map(|i| outbox.push(Target::User(bob()), format!("m{i}"), None).id)
            .collect();
        assert_eq!(ids, [u64::MAX - 1, u64::MAX, 0, 1]);
        let order: Vec<u64> = outbox.iter().map(|m| m.id).collect();
        assert_eq!(order, ids);
    }

    #[test]
    fn remove_takes_a_message_out_once() {
        let mut outbox = Outbox::new(100);
        let id = outbox.push(Target::User(bob()), "hi".into(), None).id;
        outbox.push(Target::User(bob()), "there".into(), None);
        assert_eq!(outbox.remove(id).map(|m| m.body), Some("hi".to_string()));
        assert_eq!(outbox.remove(id), None);
        assert_eq!(outbox.remove(99), None);
        assert_eq!(outbox.len(), 1);
    }
}
