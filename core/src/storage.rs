//! The persistence contract between the server core and its host.
//!
//! The core asks (`Output::Storage`), the host performs — hashing passwords, writing to disk —
//! and reports back with `Server::handle_storage`. Password hashes never reach the core: it
//! receives verdicts.
//!
//! Ordering: the host applies the plain writes (`SetContact`, `StoreMessage`,
//! `MarkDelivered`) in the order they were emitted and reports their results in that order.
//! Verifying requests (`Register`, `Authenticate`, `ChangePassword`: they hash off the
//! writer's thread) and reads (`LoadMailbox`, `LoadHistory`) may complete in any order, but a
//! read reflects every write whose result was reported before the read was emitted. The core
//! relies on no more: it adds a user to its directory only once `Registered` is back, and
//! allows one login per connection at a time.

use crate::ids::UserId;
use crate::message::{Attachment, Credential, Delivery, HistoryItem};

#[derive(Clone, PartialEq, Eq)]
pub enum StorageOp {
    /// Create an account; the host hashes the password.
    Register { user: UserId, password: String },
    /// Verify a password or resume token; on success return the account and a fresh token.
    Authenticate {
        user: UserId,
        credential: Credential,
    },
    /// Replace the password after verifying the old one; invalidate the user's resume tokens.
    ChangePassword {
        user: UserId,
        old: String,
        new: String,
    },
    /// Add (or remove) `contact` on `user`'s contact list.
    SetContact {
        user: UserId,
        contact: UserId,
        add: bool,
    },
    /// Make a message durable. `(from, id)` is unique: a second store of the same pair changes
    /// nothing and reports the first copy with `duplicate: true`.
    StoreMessage {
        from: UserId,
        to: UserId,
        id: u64,
        body: String,
        attachment: Option<Attachment>,
    },
    /// Every message to `user` not yet marked delivered, in sequence order.
    LoadMailbox { user: UserId },
    /// The recipient's application has these messages. Seqs addressed to anyone else are
    /// ignored.
    MarkDelivered { user: UserId, seqs: Vec<u64> },
    /// The conversation between `user` and `with`, newest first, below `before`.
    LoadHistory {
        user: UserId,
        with: UserId,
        before: Option<u64>,
        limit: u16,
    },
}

impl std::fmt::Debug for StorageOp {
    // Hand-written so passwords and message bodies never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageOp::Register { user, .. } => write!(f, "Register({user})"),
            StorageOp::Authenticate { user, .. } => write!(f, "Authenticate({user})"),
            StorageOp::ChangePassword { user, .. } => write!(f, "ChangePassword({user})"),
            StorageOp::SetContact { user, contact, add } => {
                write!(f, "SetContact({user}, {contact}, add={add})")
            }
            StorageOp::StoreMessage { from, to, id, .. } => {
                write!(f, "StoreMessage({from}->{to} #{id})")
            }
            StorageOp::LoadMailbox { user } => write!(f, "LoadMailbox({user})"),
            StorageOp::MarkDelivered { user, seqs } => {
                write!(f, "MarkDelivered({user}, {} seqs)", seqs.len())
            }
            StorageOp::LoadHistory { user, with, .. } => write!(f, "LoadHistory({user}, {with})"),
        }
    }
}

/// A verified account.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Account {
    pub contacts: Vec<UserId>,
    /// A fresh resume token, handed to the client in `LoginOk`.
    pub resume_token: Vec<u8>,
}

/// A stored message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Stored {
    pub to: UserId,
    pub delivery: Delivery,
    /// The `(from, id)` pair was stored before; `delivery` is the first copy.
    pub duplicate: bool,
}

#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum StorageError {
    #[error("user name taken")]
    UserTaken,
    #[error("wrong user name or credential")]
    BadCredentials,
    #[error("no such user")]
    NoSuchUser,
    #[error("storage failed: {0}")]
    Failed(String),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StorageResult {
    Registered(Result<(), StorageError>),
    Authenticated(Result<Account, StorageError>),
    PasswordChanged(Result<(), StorageError>),
    ContactSet(Result<(), StorageError>),
    MessageStored(Result<Stored, StorageError>),
    MailboxLoaded(Result<Vec<Delivery>, StorageError>),
    DeliveredMarked(Result<(), StorageError>),
    HistoryLoaded(Result<Vec<HistoryItem>, StorageError>),
}
