#![allow(dead_code)] // Each test binary uses its own share of these.

use breeze_core::message::{Attachment, Credential};
use breeze_core::storage::{Account, StorageError, StorageOp, StorageResult, Stored};
use breeze_core::{RequestId, UserId};
use breeze_store::{Db, DbOptions, HashCost, Hasher};

pub const NOW: u64 = 1_700_000_000_000;

pub fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid user name")
}

pub fn hasher() -> Hasher {
    Hasher::new(HashCost::fast_for_tests()).expect("hasher")
}

pub fn memory_db() -> Db {
    Db::open_in_memory(&DbOptions::default()).expect("in-memory db")
}

/// A test's view of a `Db`: one request at a time, ids counted for it.
pub struct Store {
    pub db: Db,
    pub hasher: Hasher,
    next_id: u64,
}

impl Store {
    pub fn new(db: Db) -> Store {
        Store {
            db,
            hasher: hasher(),
            next_id: 0,
        }
    }

    pub fn memory() -> Store {
        Store::new(memory_db())
    }

    pub fn apply(&mut self, op: StorageOp) -> StorageResult {
        self.next_id += 1;
        self.db.apply(
            RequestId(self.next_id),
            op,
            NOW + self.next_id,
            &self.hasher,
        )
    }

    pub fn register(&mut self, name: &str, password: &str) -> Result<(), StorageError> {
        match self.apply(StorageOp::Register {
            user: user(name),
            password: password.to_owned(),
        }) {
            StorageResult::Registered(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn login(&mut self, name: &str, credential: Credential) -> Result<Account, StorageError> {
        match self.apply(StorageOp::Authenticate {
            user: user(name),
            credential,
            issue_token: true,
        }) {
            StorageResult::Authenticated(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn password_login(&mut self, name: &str, password: &str) -> Result<Account, StorageError> {
        self.login(name, Credential::Password(password.to_owned()))
    }

    pub fn change_password(
        &mut self,
        name: &str,
        old: &str,
        new: &str,
    ) -> Result<(), StorageError> {
        match self.apply(StorageOp::ChangePassword {
            user: user(name),
            old: old.to_owned(),
            new: new.to_owned(),
        }) {
            StorageResult::PasswordChanged(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn set_contact(
        &mut self,
        name: &str,
        contact: &str,
        add: bool,
    ) -> Result<(), StorageError> {
        let (adds, removes) = if add {
            (vec![user(contact)], vec![])
        } else {
            (vec![], vec![user(contact)])
        };
        self.set_contacts(name, adds, removes)
    }

    pub fn set_contacts(
        &mut self,
        name: &str,
        add: Vec<UserId>,
        remove: Vec<UserId>,
    ) -> Result<(), StorageError> {
        match self.apply(StorageOp::SetContacts {
            user: user(name),
            add,
            remove,
        }) {
            StorageResult::ContactsSet(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn send(
        &mut self,
        from: &str,
        to: &str,
        id: u64,
        body: &str,
    ) -> Result<Stored, StorageError> {
        self.send_with(from, to, id, body, None)
    }

    pub fn send_with(
        &mut self,
        from: &str,
        to: &str,
        id: u64,
        body: &str,
        attachment: Option<Attachment>,
    ) -> Result<Stored, StorageError> {
        match self.apply(StorageOp::StoreMessage {
            from: user(from),
            to: user(to),
            id,
            body: body.to_owned(),
            attachment,
        }) {
            StorageResult::MessageStored(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn mailbox(&mut self, name: &str) -> Vec<breeze_core::message::Delivery> {
        match self.apply(StorageOp::LoadMailbox {
            user: user(name),
            after: 0,
            all_above: None,
            limit: u32::MAX,
            max_bytes: u64::MAX,
        }) {
            StorageResult::MailboxLoaded(Ok(page)) => page.messages,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn mailbox_page(
        &mut self,
        name: &str,
        after: u64,
        all_above: Option<u64>,
        limit: u32,
        max_bytes: u64,
    ) -> breeze_core::storage::MailboxPage {
        match self.apply(StorageOp::LoadMailbox {
            user: user(name),
            after,
            all_above,
            limit,
            max_bytes,
        }) {
            StorageResult::MailboxLoaded(Ok(page)) => page,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn mark_delivered(&mut self, name: &str, seqs: Vec<u64>) {
        match self.apply(StorageOp::MarkDelivered {
            user: user(name),
            seqs,
        }) {
            StorageResult::DeliveredMarked(Ok(())) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn history(
        &mut self,
        name: &str,
        with: &str,
        before: Option<u64>,
        limit: u16,
    ) -> Vec<breeze_core::message::HistoryItem> {
        match self.apply(StorageOp::LoadHistory {
            user: user(name),
            with: user(with),
            before,
            limit,
        }) {
            StorageResult::HistoryLoaded(Ok(h)) => h,
            other => panic!("unexpected {other:?}"),
        }
    }
}
