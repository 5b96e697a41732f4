//! Identifiers. Where a session lives is explicit — a node and a connection on it — so that a
//! later multi-node deployment (presence shared through a broker) extends these, not rewrites.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A connection on one node, numbered by the host that accepted it. Never reused by a host
/// while the server state machine lives.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ConnId(pub u64);

/// A server node. A single-node deployment is node 0.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct NodeId(pub u32);

/// Where a session lives: which node, which connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct SessionLocation {
    pub node: NodeId,
    pub conn: ConnId,
}

/// A storage request issued by the server core, echoed back with its result.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// A validated user name: 1–32 characters from `A-Z a-z 0-9 _ - .`, not starting with `.` or
/// `-`. Restricting the alphabet keeps names unambiguous on a terminal and safe in logs.
///
/// Case-insensitive: a name is folded to lowercase wherever one is made, from text or off the
/// wire, so `Alice` and `alice` are one user (registering the second is `UserTaken`, logging
/// in as either reaches the same account) and lists never show both. Folding at the type,
/// rather than comparing without case at each use, keeps every map, index and store key
/// consistent by construction.
///
/// Shared, not copied: a name sits in many places at once (sessions, contact lists, the
/// watcher index, presence batches), and a clone is a reference count, not an allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(Arc<str>);

impl<'de> Deserialize<'de> for UserId {
    /// Folds, but does not validate: the core checks names off the wire where it must refuse
    /// them (`validate`), with the error the request calls for.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut name = String::deserialize(d)?;
        name.make_ascii_lowercase();
        Ok(UserId(name.into()))
    }
}

pub const MAX_USER_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    #[error("user name is empty")]
    Empty,
    #[error("user name is longer than {MAX_USER_LEN} characters")]
    TooLong,
    #[error("user name may only contain letters, digits, '_', '-' and '.'")]
    BadCharacter,
    #[error("user name may not start with '.' or '-'")]
    BadStart,
}

impl UserId {
    /// Checks `name` and folds it to lowercase.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidUserId> {
        let mut name = name.into();
        check(&name)?;
        name.make_ascii_lowercase();
        Ok(UserId(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a name that arrived off the wire (serde skips validation).
    pub fn validate(&self) -> Result<(), InvalidUserId> {
        check(&self.0)
    }
}

fn check(name: &str) -> Result<(), InvalidUserId> {
    if name.is_empty() {
        return Err(InvalidUserId::Empty);
    }
    if name.len() > MAX_USER_LEN {
        return Err(InvalidUserId::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(InvalidUserId::BadCharacter);
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(InvalidUserId::BadStart);
    }
    Ok(())
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::str::FromStr for UserId {
    type Err = InvalidUserId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_whatever_their_case() {
        let upper = UserId::new("Alice.B").unwrap();
        assert_eq!(upper, UserId::new("alice.b").unwrap());
        assert_eq!(upper.as_str(), "alice.b");
        let wire = crate::codec::encode(&"ALICE".to_string());
        let decoded: UserId = crate::codec::decode(&wire).unwrap();
        assert_eq!(decoded.as_str(), "alice");
    }

    #[test]
    fn accepts_plain_names_and_rejects_the_rest() {
        assert!(UserId::new("alice").is_ok());
        assert!(UserId::new("bob_2.x-y").is_ok());
        assert_eq!(UserId::new(""), Err(InvalidUserId::Empty));
        assert_eq!(UserId::new("a".repeat(33)), Err(InvalidUserId::TooLong));
        assert_eq!(UserId::new("a b"), Err(InvalidUserId::BadCharacter));
        assert_eq!(UserId::new("é"), Err(InvalidUserId::BadCharacter));
        assert_eq!(UserId::new(".hidden"), Err(InvalidUserId::BadStart));
    }
}
