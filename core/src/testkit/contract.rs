//! The storage contract (`crate::storage`) as named checks that any store can be put through.
//!
//! The core is tested against `MemStore` and deployed against SQLite; a behaviour the two
//! disagree on is a behaviour the core's tests never saw. Every store runs this one suite:
//! `MemStore` in the core's tests, SQLite in `breeze-store`'s. A check gets a factory of fresh,
//! empty stores and reports the first thing that broke the contract.

use super::store::MemStore;
use crate::ids::UserId;
use crate::message::{
    Attachment, AttachmentInfo, AvatarImage, ContactGroup, Credential, DEFAULT_GROUP, Delivery,
    HistoryItem, Placement, ProfileCard, RoomDelivery, RoomRole,
};
use crate::storage::{
    Account, ContactGroups, GroupChange, GroupsDiff, MAX_HISTORY, MAX_TOKENS_PER_USER, MailboxPage,
    MemberRoom, NewAvatar, ProfileChange, RoomChange, RoomRange, RoomStored, RoomView,
    StorageError, StorageOp, StorageResult, Stored,
};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A store under test: performs one request at `now_ms`, as a host would.
pub trait Backend {
    fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult;
}

impl Backend for MemStore {
    fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult {
        MemStore::apply(self, op, now_ms)
    }
}

/// Makes a fresh, empty store.
pub type Fresh<'a> = dyn FnMut() -> Box<dyn Backend> + 'a;

/// What broke, if anything.
pub type Outcome<T = ()> = Result<T, String>;

/// One behaviour every store must show.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    pub name: &'static str,
    pub run: fn(&mut Fresh<'_>) -> Outcome,
}

/// The whole contract.
pub const CHECKS: &[Check] = &[
    Check {
        name: "a_name_is_registered_once",
        run: a_name_is_registered_once,
    },
    Check {
        name: "a_password_login_issues_a_fresh_token",
        run: a_password_login_issues_a_fresh_token,
    },
    Check {
        name: "a_token_login_rotates_the_token",
        run: a_token_login_rotates_the_token,
    },
    Check {
        name: "a_token_belongs_to_its_user",
        run: a_token_belongs_to_its_user,
    },
    Check {
        name: "an_agent_login_issues_no_token_and_spends_none",
        run: an_agent_login_issues_no_token_and_spends_none,
    },
    Check {
        name: "only_the_newest_tokens_are_kept",
        run: only_the_newest_tokens_are_kept,
    },
    Check {
        name: "a_password_change_revokes_every_token",
        run: a_password_change_revokes_every_token,
    },
    Check {
        name: "contacts_are_added_and_removed",
        run: contacts_are_added_and_removed,
    },
    Check {
        name: "a_contacts_change_is_all_or_nothing",
        run: a_contacts_change_is_all_or_nothing,
    },
    Check {
        name: "a_stored_message_waits_in_the_mailbox",
        run: a_stored_message_waits_in_the_mailbox,
    },
    Check {
        name: "a_resent_message_returns_the_first_copy",
        run: a_resent_message_returns_the_first_copy,
    },
    Check {
        name: "a_stored_message_names_the_recipients_previous_one",
        run: a_stored_message_names_the_recipients_previous_one,
    },
    Check {
        name: "a_message_needs_known_users",
        run: a_message_needs_known_users,
    },
    Check {
        name: "only_the_recipient_marks_delivered",
        run: only_the_recipient_marks_delivered,
    },
    Check {
        name: "the_mailbox_is_read_in_pages",
        run: the_mailbox_is_read_in_pages,
    },
    Check {
        name: "a_read_above_a_mark_brings_acked_messages_too",
        run: a_read_above_a_mark_brings_acked_messages_too,
    },
    Check {
        name: "history_pages_newest_first_through_one_conversation",
        run: history_pages_newest_first_through_one_conversation,
    },
    Check {
        name: "history_is_capped",
        run: history_is_capped,
    },
    Check {
        name: "attachments_are_kept_whole",
        run: attachments_are_kept_whole,
    },
    Check {
        name: "a_banned_login_is_verified_and_marked_and_spends_nothing",
        run: a_banned_login_is_verified_and_marked_and_spends_nothing,
    },
    Check {
        name: "an_unban_lets_the_user_back_with_the_same_tokens",
        run: an_unban_lets_the_user_back_with_the_same_tokens,
    },
    Check {
        name: "a_ban_needs_a_known_user",
        run: a_ban_needs_a_known_user,
    },
    Check {
        name: "groups_are_created_renamed_reordered_and_deleted",
        run: groups_are_created_renamed_reordered_and_deleted,
    },
    Check {
        name: "contacts_are_filed_in_groups",
        run: contacts_are_filed_in_groups,
    },
    Check {
        name: "groups_are_limited_per_user",
        run: groups_are_limited_per_user,
    },
    Check {
        name: "a_profile_change_is_counted_and_read_back",
        run: a_profile_change_is_counted_and_read_back,
    },
    Check {
        name: "profiles_are_listed_only_once_set",
        run: profiles_are_listed_only_once_set,
    },
    Check {
        name: "an_avatar_is_kept_while_a_profile_shows_it",
        run: an_avatar_is_kept_while_a_profile_shows_it,
    },
    Check {
        name: "a_profile_needs_a_known_user",
        run: a_profile_needs_a_known_user,
    },
    Check {
        name: "a_room_is_created_with_its_owner",
        run: a_room_is_created_with_its_owner,
    },
    Check {
        name: "room_roles_decide_who_changes_membership",
        run: room_roles_decide_who_changes_membership,
    },
    Check {
        name: "room_limits_hold",
        run: room_limits_hold,
    },
    Check {
        name: "a_room_message_is_stored_once_in_room_order",
        run: a_room_message_is_stored_once_in_room_order,
    },
    Check {
        name: "room_mail_is_read_above_a_cursor_that_only_rises",
        run: room_mail_is_read_above_a_cursor_that_only_rises,
    },
];

/// Runs every check on fresh stores from `fresh`: one line per failed check, naming it and
/// `backend`.
pub fn violations(backend: &str, mut fresh: impl FnMut() -> Box<dyn Backend>) -> Vec<String> {
    CHECKS
        .iter()
        .filter_map(|check| {
            // A store that panics breaks the contract too; the other checks still run.
            let outcome = catch_unwind(AssertUnwindSafe(|| (check.run)(&mut fresh)))
                .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))));
            outcome
                .err()
                .map(|why| format!("{} on {backend}: {why}", check.name))
        })
        .collect()
}

/// `violations`, as a test assertion.
pub fn assert_keeps_contract(backend: &str, fresh: impl FnMut() -> Box<dyn Backend>) {
    let broken = violations(backend, fresh);
    assert!(
        broken.is_empty(),
        "{backend} breaks {} of {} storage contract checks:\n{}",
        broken.len(),
        CHECKS.len(),
        broken.join("\n")
    );
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

const PASSWORD: &str = "correct horse";
/// The first request's clock; each further request is a millisecond later.
const START_MS: u64 = 1_700_000_000_000;

fn user(name: &str) -> UserId {
    UserId::new(name).expect("a valid user name")
}

fn users(names: &[&str]) -> Vec<UserId> {
    names.iter().map(|n| user(n)).collect()
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Outcome {
    if ok { Ok(()) } else { Err(what()) }
}

fn ensure_eq<T: PartialEq + Debug>(got: T, want: T, what: &str) -> Outcome {
    ensure(got == want, || {
        format!("{what}: got {got:?}, want {want:?}")
    })
}

fn unexpected<T>(asked: &str, got: StorageResult) -> Outcome<T> {
    Err(format!("{asked} answered {got:?}"))
}

/// A store and its clock, with one method per request.
struct Store {
    backend: Box<dyn Backend>,
    now_ms: u64,
}

impl Store {
    fn new(fresh: &mut Fresh<'_>) -> Store {
        Store {
            backend: fresh(),
            now_ms: START_MS - 1,
        }
    }

    /// A fresh store where each of `names` is registered with `PASSWORD`.
    fn with_users(fresh: &mut Fresh<'_>, names: &[&str]) -> Outcome<Store> {
        let mut s = Store::new(fresh);
        for name in names {
            ensure_eq(s.register(name, PASSWORD)?, Ok(()), "registering")?;
        }
        Ok(s)
    }

    /// Performs `op` a millisecond after the previous request: returns when it did.
    fn apply(&mut self, op: StorageOp) -> (StorageResult, u64) {
        self.now_ms += 1;
        (self.backend.apply(op, self.now_ms), self.now_ms)
    }

    fn register(&mut self, name: &str, password: &str) -> Outcome<Result<(), StorageError>> {
        match self.apply(StorageOp::Register {
            user: user(name),
            password: password.to_owned(),
        }) {
            (StorageResult::Registered(r), _) => Ok(r),
            (other, _) => unexpected("Register", other),
        }
    }

    fn login(
        &mut self,
        name: &str,
        credential: Credential,
    ) -> Outcome<Result<Account, StorageError>> {
        self.authenticate(name, credential, true)
    }

    fn authenticate(
        &mut self,
        name: &str,
        credential: Credential,
        issue_token: bool,
    ) -> Outcome<Result<Account, StorageError>> {
        match self.apply(StorageOp::Authenticate {
            user: user(name),
            credential,
            issue_token,
        }) {
            (StorageResult::Authenticated(r), _) => Ok(r),
            (other, _) => unexpected("Authenticate", other),
        }
    }

    fn password_login(
        &mut self,
        name: &str,
        password: &str,
    ) -> Outcome<Result<Account, StorageError>> {
        self.login(name, Credential::Password(password.to_owned()))
    }

    fn token_login(&mut self, name: &str, token: &[u8]) -> Outcome<Result<Account, StorageError>> {
        self.login(name, Credential::Token(token.to_vec()))
    }

    /// The token of a login that must succeed.
    fn token_of(&mut self, name: &str, credential: Credential, what: &str) -> Outcome<Vec<u8>> {
        match self.login(name, credential)? {
            Ok(account) => Ok(account.resume_token),
            Err(e) => Err(format!("{what}: login refused with {e:?}")),
        }
    }

    fn contacts(&mut self, name: &str) -> Outcome<Vec<UserId>> {
        match self.password_login(name, PASSWORD)? {
            Ok(account) => Ok(account.contacts),
            Err(e) => Err(format!("login of {name} refused with {e:?}")),
        }
    }

    fn change_password(
        &mut self,
        name: &str,
        old: &str,
        new: &str,
    ) -> Outcome<Result<(), StorageError>> {
        match self.apply(StorageOp::ChangePassword {
            user: user(name),
            old: old.to_owned(),
            new: new.to_owned(),
        }) {
            (StorageResult::PasswordChanged(r), _) => Ok(r),
            (other, _) => unexpected("ChangePassword", other),
        }
    }

    fn set_contacts(
        &mut self,
        name: &str,
        add: &[&str],
        remove: &[&str],
    ) -> Outcome<Result<(), StorageError>> {
        match self.apply(StorageOp::SetContacts {
            user: user(name),
            add: users(add),
            remove: users(remove),
        }) {
            (StorageResult::ContactsSet(r), _) => Ok(r),
            (other, _) => unexpected("SetContacts", other),
        }
    }

    fn change_groups(
        &mut self,
        name: &str,
        change: GroupChange,
        max_groups: u32,
    ) -> Outcome<Result<GroupsDiff, StorageError>> {
        match self.apply(StorageOp::ChangeGroups {
            user: user(name),
            change,
            max_groups,
        }) {
            (StorageResult::GroupsChanged(r), _) => Ok(r),
            (other, _) => unexpected("ChangeGroups", other),
        }
    }

    /// A change of `name`'s groups under a limit of 100 that must succeed.
    fn group_change(&mut self, name: &str, change: GroupChange) -> Outcome<GroupsDiff> {
        let what = format!("{change:?}");
        self.change_groups(name, change, 100)?
            .map_err(|e| format!("{what} refused with {e:?}"))
    }

    /// `name`'s groups as a password login and a token login read them: both must agree.
    fn groups(&mut self, name: &str) -> Outcome<ContactGroups> {
        let token = self.token_of(name, Credential::Password(PASSWORD.into()), "login")?;
        let by_password = match self.password_login(name, PASSWORD)? {
            Ok(account) => account.groups,
            Err(e) => return Err(format!("login of {name} refused with {e:?}")),
        };
        match self.token_login(name, &token)? {
            Ok(account) => ensure_eq(&account.groups, &by_password, "groups at a token login")?,
            Err(e) => return Err(format!("token login of {name} refused with {e:?}")),
        }
        Ok(by_password)
    }

    fn set_banned(&mut self, name: &str, banned: bool) -> Outcome<Result<(), StorageError>> {
        match self.apply(StorageOp::SetBanned {
            user: user(name),
            banned,
        }) {
            (StorageResult::BannedSet(r), _) => Ok(r),
            (other, _) => unexpected("SetBanned", other),
        }
    }

    fn set_profile(
        &mut self,
        name: &str,
        change: ProfileChange,
    ) -> Outcome<Result<ProfileCard, StorageError>> {
        match self.apply(StorageOp::SetProfile {
            user: user(name),
            change,
        }) {
            (StorageResult::ProfileSet(r), _) => Ok(r),
            (other, _) => unexpected("SetProfile", other),
        }
    }

    fn profiles(&mut self, names: Option<&[&str]>) -> Outcome<Vec<ProfileCard>> {
        match self.apply(StorageOp::LoadProfiles {
            users: names.map(users),
        }) {
            (StorageResult::ProfilesLoaded(Ok(cards)), _) => Ok(cards),
            (other, _) => unexpected("LoadProfiles", other),
        }
    }

    fn profile(
        &mut self,
        name: &str,
        avatar: bool,
    ) -> Outcome<Result<(ProfileCard, Option<AvatarImage>), StorageError>> {
        match self.apply(StorageOp::LoadProfile {
            user: user(name),
            avatar,
        }) {
            (StorageResult::ProfileLoaded(r), _) => Ok(r),
            (other, _) => unexpected("LoadProfile", other),
        }
    }

    /// Stores a message: its result, and when it was stored.
    fn send_with(
        &mut self,
        from: &str,
        to: &str,
        id: u64,
        body: &str,
        attachment: Option<Attachment>,
    ) -> Outcome<(Result<Stored, StorageError>, u64)> {
        match self.apply(StorageOp::StoreMessage {
            from: user(from),
            to: user(to),
            id,
            body: body.to_owned(),
            attachment,
        }) {
            (StorageResult::MessageStored(r), at) => Ok((r, at)),
            (other, _) => unexpected("StoreMessage", other),
        }
    }

    fn send(
        &mut self,
        from: &str,
        to: &str,
        id: u64,
        body: &str,
    ) -> Outcome<Result<Stored, StorageError>> {
        Ok(self.send_with(from, to, id, body, None)?.0)
    }

    /// A message that must be stored afresh: its delivery.
    fn stored(&mut self, from: &str, to: &str, id: u64, body: &str) -> Outcome<Delivery> {
        match self.send(from, to, id, body)? {
            Ok(s) if !s.duplicate => Ok(s.delivery),
            other => Err(format!("storing {from}->{to} #{id} answered {other:?}")),
        }
    }

    fn mailbox_page(
        &mut self,
        name: &str,
        after: u64,
        all_above: Option<u64>,
        limit: u32,
        max_bytes: u64,
    ) -> Outcome<MailboxPage> {
        match self.apply(StorageOp::LoadMailbox {
            user: user(name),
            after,
            all_above,
            limit,
            max_bytes,
        }) {
            (StorageResult::MailboxLoaded(Ok(page)), _) => Ok(page),
            (other, _) => unexpected("LoadMailbox", other),
        }
    }

    /// The whole mailbox, which must fit one page.
    fn mailbox(&mut self, name: &str) -> Outcome<Vec<Delivery>> {
        let page = self.mailbox_page(name, 0, None, u32::MAX, u64::MAX)?;
        ensure(!page.more, || {
            format!("an unbounded page of {name}'s mailbox has more")
        })?;
        Ok(page.messages)
    }

    fn mark_delivered(&mut self, name: &str, seqs: Vec<u64>) -> Outcome {
        match self.apply(StorageOp::MarkDelivered {
            user: user(name),
            seqs,
        }) {
            (StorageResult::DeliveredMarked(Ok(())), _) => Ok(()),
            (other, _) => unexpected("MarkDelivered", other),
        }
    }

    fn history(
        &mut self,
        name: &str,
        with: &str,
        before: Option<u64>,
        limit: u16,
    ) -> Outcome<Vec<HistoryItem>> {
        match self.apply(StorageOp::LoadHistory {
            user: user(name),
            with: user(with),
            before,
            limit,
        }) {
            (StorageResult::HistoryLoaded(Ok(items)), _) => Ok(items),
            (other, _) => unexpected("LoadHistory", other),
        }
    }

    fn history_seqs(
        &mut self,
        name: &str,
        with: &str,
        before: Option<u64>,
        limit: u16,
    ) -> Outcome<Vec<u64>> {
        Ok(self
            .history(name, with, before, limit)?
            .iter()
            .map(|h| h.seq)
            .collect())
    }
}

fn seqs(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.seq).collect()
}

fn a_name_is_registered_once(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::new(fresh);
    ensure_eq(s.register("alice", PASSWORD)?, Ok(()), "first registration")?;
    ensure_eq(
        s.register("alice", "another password")?,
        Err(StorageError::UserTaken),
        "second registration",
    )?;
    ensure(s.password_login("alice", PASSWORD)?.is_ok(), || {
        "the first password stopped working".to_owned()
    })?;
    ensure_eq(
        s.password_login("alice", "another password")?.map(|_| ()),
        Err(StorageError::BadCredentials),
        "the refused registration's password",
    )
}

fn a_password_login_issues_a_fresh_token(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let first = s
        .password_login("alice", PASSWORD)?
        .map_err(|e| format!("password login refused with {e:?}"))?;
    ensure_eq(first.contacts, vec![], "a new account's contacts")?;
    ensure(!first.resume_token.is_empty(), || {
        "an empty resume token".to_owned()
    })?;
    let second = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "second login",
    )?;
    ensure(second != first.resume_token, || {
        "two logins got the same token".to_owned()
    })?;
    // A password login spends no token: the first device still resumes.
    for (which, token) in [("first", &first.resume_token), ("second", &second)] {
        ensure(s.token_login("alice", token)?.is_ok(), || {
            format!("the {which} password login's token was refused")
        })?;
    }
    for (name, password, what) in [
        ("alice", "wrong horse", "a wrong password"),
        ("alice", "", "an empty password"),
        ("carol", PASSWORD, "an unknown user"),
    ] {
        ensure_eq(
            s.password_login(name, password)?.map(|_| ()),
            Err(StorageError::BadCredentials),
            what,
        )?;
    }
    Ok(())
}

fn a_token_login_rotates_the_token(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice"])?;
    let pw = || Credential::Password(PASSWORD.into());
    let tok = |t: &[u8]| Credential::Token(t.to_vec());
    let t1 = s.token_of("alice", pw(), "password login")?;
    let t2 = s.token_of("alice", tok(&t1), "login with t1")?;
    ensure(t2 != t1, || {
        "a token login handed back the same token".to_owned()
    })?;
    // Until a successor of t1 is used, t1 still works: t2's LoginOk may have been lost.
    let t2b = s.token_of("alice", tok(&t1), "t1 again, t2 unused")?;
    let t3 = s.token_of("alice", tok(&t2b), "login with t2b")?;
    // Using t2b proved it arrived: t1 and its other successor t2 are spent.
    for (which, token) in [("t1", &t1), ("t2", &t2)] {
        ensure_eq(
            s.token_login("alice", token)?.map(|_| ()),
            Err(StorageError::BadCredentials),
            &format!("{which} after t1's successor t2b was used"),
        )?;
    }
    // t2b is t3's parent: it lives until t3 is used.
    let t3b = s.token_of("alice", tok(&t2b), "t2b again, t3 unused")?;
    s.token_of("alice", tok(&t3), "login with t3")?;
    for (which, token) in [("t2b", &t2b), ("t3b", &t3b)] {
        ensure_eq(
            s.token_login("alice", token)?.map(|_| ()),
            Err(StorageError::BadCredentials),
            &format!("{which} after t2b's successor t3 was used"),
        )?;
    }
    Ok(())
}

fn a_token_belongs_to_its_user(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let token = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "password login",
    )?;
    let mut altered = token.clone();
    if let Some(last) = altered.last_mut() {
        *last ^= 1;
    }
    for (name, token, what) in [
        ("bob", token.clone(), "alice's token for bob"),
        ("carol", token.clone(), "alice's token for an unknown user"),
        ("alice", altered, "an altered token"),
        ("alice", token[..token.len() / 2].to_vec(), "half a token"),
        ("alice", vec![], "an empty token"),
    ] {
        ensure_eq(
            s.token_login(name, &token)?.map(|_| ()),
            Err(StorageError::BadCredentials),
            what,
        )?;
    }
    s.token_of("alice", Credential::Token(token), "alice's own token")?;
    Ok(())
}

fn only_the_newest_tokens_are_kept(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let bobs = s.token_of("bob", Credential::Password(PASSWORD.into()), "bob's login")?;
    let mut tokens = Vec::new();
    for i in 0..MAX_TOKENS_PER_USER + 2 {
        tokens.push(s.token_of(
            "alice",
            Credential::Password(PASSWORD.into()),
            &format!("login {i}"),
        )?);
    }
    // Oldest first: each login below issues one more token, which forgets the one it used.
    for (i, token) in tokens.iter().enumerate() {
        let kept = i >= 2;
        ensure_eq(
            s.token_login("alice", token)?.is_ok(),
            kept,
            &format!("token {i} of {} accepted", tokens.len()),
        )?;
    }
    s.token_of(
        "bob",
        Credential::Token(bobs),
        "bob's token after alice's many logins",
    )?;
    Ok(())
}

/// A script logging in every minute (`AgentLogin`) must not push the user's devices'
/// tokens out of the newest `MAX_TOKENS_PER_USER`, and gets none of its own.
fn an_agent_login_issues_no_token_and_spends_none(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    ensure_eq(
        s.set_contacts("alice", &["bob"], &[])?,
        Ok(()),
        "alice adds bob",
    )?;
    let device = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "device login",
    )?;
    for i in 0..MAX_TOKENS_PER_USER + 2 {
        let account = s
            .authenticate("alice", Credential::Password(PASSWORD.into()), false)?
            .map_err(|e| format!("agent login {i} refused: {e:?}"))?;
        ensure_eq(
            account,
            Account {
                contacts: users(&["bob"]),
                resume_token: Vec::new(),
                banned: false,
                groups: ContactGroups::default(),
            },
            &format!("agent login {i}"),
        )?;
    }
    ensure_eq(
        s.authenticate(
            "alice",
            Credential::Password("wrong password".into()),
            false,
        )?,
        Err(StorageError::BadCredentials),
        "agent login with a wrong password",
    )?;
    s.token_of(
        "alice",
        Credential::Token(device),
        "the device's token after many agent logins",
    )?;
    Ok(())
}

fn a_password_change_revokes_every_token(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let by_password = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "password login",
    )?;
    let by_token = s.token_of(
        "alice",
        Credential::Token(by_password.clone()),
        "token login",
    )?;
    let bobs = s.token_of("bob", Credential::Password(PASSWORD.into()), "bob's login")?;
    for (name, old, what) in [
        ("alice", "wrong", "a wrong old password"),
        ("carol", PASSWORD, "an unknown user"),
    ] {
        ensure_eq(
            s.change_password(name, old, "new password")?,
            Err(StorageError::BadCredentials),
            what,
        )?;
    }
    // Using the parent keeps its successor `by_token` alive.
    ensure(s.token_login("alice", &by_password)?.is_ok(), || {
        "a refused change revoked a token".to_owned()
    })?;
    ensure_eq(
        s.change_password("alice", PASSWORD, "new password")?,
        Ok(()),
        "the change",
    )?;
    for (which, token) in [("password", &by_password), ("token", &by_token)] {
        ensure_eq(
            s.token_login("alice", token)?.map(|_| ()),
            Err(StorageError::BadCredentials),
            &format!("the {which} login's token after the change"),
        )?;
    }
    ensure_eq(
        s.password_login("alice", PASSWORD)?.map(|_| ()),
        Err(StorageError::BadCredentials),
        "the old password",
    )?;
    s.token_of(
        "alice",
        Credential::Password("new password".into()),
        "the new password",
    )?;
    s.token_of(
        "bob",
        Credential::Token(bobs),
        "bob's token after alice's change",
    )?;
    Ok(())
}

fn contacts_are_added_and_removed(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    for (add, what) in [
        ("carol", "adding carol"),
        ("bob", "adding bob"),
        ("bob", "adding bob again"),
    ] {
        ensure_eq(s.set_contacts("alice", &[add], &[])?, Ok(()), what)?;
    }
    ensure_eq(
        s.set_contacts("alice", &["nobody"], &[])?,
        Err(StorageError::NoSuchUser),
        "adding an unknown user",
    )?;
    // Sorted, whatever the order of adding.
    ensure_eq(
        s.contacts("alice")?,
        users(&["bob", "carol"]),
        "contacts at a password login",
    )?;
    let token = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "password login",
    )?;
    match s.token_login("alice", &token)? {
        Ok(account) => ensure_eq(
            account.contacts,
            users(&["bob", "carol"]),
            "contacts at a token login",
        )?,
        Err(e) => return Err(format!("token login refused with {e:?}")),
    }
    for what in ["removing carol", "removing carol again"] {
        ensure_eq(s.set_contacts("alice", &[], &["carol"])?, Ok(()), what)?;
    }
    ensure_eq(
        s.contacts("alice")?,
        users(&["bob"]),
        "contacts after the removal",
    )?;
    ensure_eq(
        s.contacts("bob")?,
        vec![],
        "bob's contacts: lists are one-way",
    )?;
    ensure_eq(
        s.set_contacts("nobody", &["bob"], &[])?,
        Err(StorageError::NoSuchUser),
        "an unknown user adding a contact",
    )?;
    ensure_eq(
        s.set_contacts("nobody", &[], &["bob"])?,
        Err(StorageError::NoSuchUser),
        "an unknown user removing a contact",
    )
}

fn a_contacts_change_is_all_or_nothing(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol", "dave"])?;
    ensure_eq(
        s.set_contacts("alice", &["dave"], &[])?,
        Ok(()),
        "adding dave",
    )?;
    ensure_eq(
        s.set_contacts("alice", &["bob", "carol", "nobody"], &["dave"])?,
        Err(StorageError::NoSuchUser),
        "a change naming an unknown user",
    )?;
    ensure_eq(
        s.contacts("alice")?,
        users(&["dave"]),
        "contacts after the refused change",
    )?;
    ensure_eq(
        s.set_contacts("alice", &["bob", "carol"], &["dave"])?,
        Ok(()),
        "the same change without the unknown user",
    )?;
    ensure_eq(
        s.contacts("alice")?,
        users(&["bob", "carol"]),
        "contacts after the change",
    )
}

fn a_stored_message_waits_in_the_mailbox(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let (stored, at) = s.send_with("alice", "bob", 7, "one", None)?;
    let stored = stored.map_err(|e| format!("storing refused with {e:?}"))?;
    ensure_eq(
        stored.to.clone(),
        user("bob"),
        "the stored message's addressee",
    )?;
    ensure(!stored.duplicate, || {
        "a first store reported a duplicate".to_owned()
    })?;
    let a = stored.delivery;
    ensure_eq(
        (
            a.from.clone(),
            a.id,
            a.body.as_str(),
            a.attachment.clone(),
            a.sent_at_ms,
        ),
        (user("alice"), 7, "one", None, at),
        "the stored delivery (from, id, body, attachment, sent_at_ms)",
    )?;
    let b = s.stored("carol", "bob", 1, "two")?;
    let to_carol = s.stored("alice", "carol", 8, "for carol")?;
    let c = s.stored("alice", "bob", 9, "three")?;
    ensure(
        a.seq < b.seq && b.seq < to_carol.seq && to_carol.seq < c.seq,
        || {
            format!(
                "seqs not increasing in storage order: {:?}",
                [a.seq, b.seq, to_carol.seq, c.seq]
            )
        },
    )?;
    ensure_eq(
        s.mailbox("bob")?,
        vec![a.clone(), b.clone(), c.clone()],
        "bob's mailbox",
    )?;
    ensure_eq(s.mailbox("carol")?, vec![to_carol], "carol's mailbox")?;
    ensure_eq(s.mailbox("alice")?, vec![], "the sender's mailbox")?;
    ensure_eq(s.mailbox("nobody")?, vec![], "an unknown user's mailbox")?;
    // Reading is not delivering.
    ensure_eq(
        seqs(&s.mailbox("bob")?),
        seqs(&[a, b, c]),
        "bob's mailbox read again",
    )
}

/// `Stored::prev` is what lets a cluster node push a message without reading the mailbox: it
/// must be exactly the recipient's previous seq, whoever sent that, and never skip one.
fn a_stored_message_names_the_recipients_previous_one(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let prev_of = |s: &mut Store, from: &str, to: &str, id: u64| -> Outcome<(u64, u64)> {
        match s.send(from, to, id, "hi")? {
            Ok(Stored {
                duplicate: false,
                prev: Some(prev),
                delivery,
                ..
            }) => Ok((delivery.seq, prev)),
            other => Err(format!("storing {from}->{to} #{id} answered {other:?}")),
        }
    };
    let (a, prev) = prev_of(&mut s, "alice", "bob", 1)?;
    ensure_eq(prev, 0, "bob's first message follows nothing")?;
    // Messages to others in between do not count.
    let (c, prev) = prev_of(&mut s, "alice", "carol", 2)?;
    ensure_eq(prev, 0, "carol's first message follows nothing")?;
    let (b, prev) = prev_of(&mut s, "carol", "bob", 1)?;
    ensure_eq(
        prev,
        a,
        "bob's second follows his first, from another sender",
    )?;
    let (_, prev) = prev_of(&mut s, "bob", "carol", 1)?;
    ensure_eq(prev, c, "carol's second follows her first")?;
    let (_, prev) = prev_of(&mut s, "alice", "bob", 3)?;
    ensure_eq(prev, b, "bob's third follows his second")?;
    // A resend names none: it was delivered (or kept) the first time.
    match s.send("alice", "bob", 1, "hi")? {
        Ok(Stored {
            duplicate: true,
            prev: None,
            ..
        }) => Ok(()),
        other => Err(format!("a resend answered {other:?}")),
    }
}

fn a_resent_message_returns_the_first_copy(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let (first, at) = s.send_with("alice", "bob", u64::MAX, "hello", None)?;
    let first = first.map_err(|e| format!("storing refused with {e:?}"))?;
    let want = Stored {
        duplicate: true,
        prev: None,
        ..first.clone()
    };
    // Whatever the resend says, even naming another or an unknown addressee.
    for (to, body, what) in [
        ("bob", "hello", "an identical resend"),
        ("carol", "changed", "a resend to carol"),
        ("nobody", "changed", "a resend to an unknown user"),
    ] {
        ensure_eq(s.send("alice", to, u64::MAX, body)?, Ok(want.clone()), what)?;
    }
    ensure_eq(first.delivery.sent_at_ms, at, "the first copy's time")?;
    // Ids are per sender.
    let bobs = s.stored("bob", "alice", u64::MAX, "hi")?;
    ensure(bobs.seq > first.delivery.seq, || {
        "a later message got a lower seq".to_owned()
    })?;
    ensure_eq(
        s.mailbox("bob")?,
        vec![first.delivery],
        "bob's mailbox after the resends",
    )?;
    ensure_eq(
        s.mailbox("carol")?,
        vec![],
        "carol's mailbox after a resend named her",
    )
}

fn a_message_needs_known_users(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    for (from, to, what) in [
        ("alice", "nobody", "a message to an unknown user"),
        ("nobody", "bob", "a message from an unknown user"),
    ] {
        ensure_eq(
            s.send(from, to, 1, "hello?")?,
            Err(StorageError::NoSuchUser),
            what,
        )?;
    }
    ensure_eq(s.mailbox("bob")?, vec![], "bob's mailbox")?;
    ensure_eq(s.mailbox("nobody")?, vec![], "the unknown user's mailbox")?;
    ensure_eq(
        s.history("alice", "nobody", None, 10)?,
        vec![],
        "history with the unknown user",
    )?;
    // The refused id was not taken.
    let stored = s.stored("alice", "bob", 1, "hello")?;
    ensure_eq(
        s.mailbox("bob")?,
        vec![stored],
        "bob's mailbox after a good message",
    )
}

fn only_the_recipient_marks_delivered(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let a = s.stored("alice", "bob", 1, "one")?;
    let b = s.stored("carol", "bob", 1, "two")?;
    let c = s.stored("alice", "bob", 2, "three")?;
    let to_carol = s.stored("alice", "carol", 3, "for carol")?;
    // Bob cannot mark carol's message; unknown and absurd seqs change nothing.
    s.mark_delivered(
        "bob",
        vec![b.seq, to_carol.seq, to_carol.seq + 1000, u64::MAX],
    )?;
    ensure_eq(
        s.mailbox("bob")?,
        vec![a.clone(), c.clone()],
        "bob's mailbox after marking",
    )?;
    ensure_eq(
        s.mailbox("carol")?,
        vec![to_carol.clone()],
        "carol's mailbox after bob marked",
    )?;
    s.mark_delivered("alice", vec![a.seq])?;
    ensure_eq(
        seqs(&s.mailbox("bob")?),
        seqs(&[a.clone(), c.clone()]),
        "bob's after the sender marked",
    )?;
    s.mark_delivered("nobody", vec![a.seq])?;
    s.mark_delivered("bob", vec![a.seq, c.seq, a.seq])?;
    ensure_eq(s.mailbox("bob")?, vec![], "bob's mailbox after marking all")?;
    // Delivered is not forgotten.
    ensure_eq(
        s.history_seqs("bob", "alice", None, 10)?,
        vec![c.seq, a.seq],
        "bob's history with alice",
    )
}

fn the_mailbox_is_read_in_pages(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(s.stored("alice", "bob", i, &"x".repeat(100))?.seq);
    }
    let big = Attachment {
        mime: "application/octet-stream".to_owned(),
        name: "big".to_owned(),
        data: vec![0; 300],
    };
    let (with_file, _) = s.send_with("alice", "bob", 9, "", Some(big))?;
    all.push(
        with_file
            .map_err(|e| format!("storing refused with {e:?}"))?
            .delivery
            .seq,
    );
    let mut waiting = Vec::new();
    let mut page = |after: u64, limit: u32, max_bytes: u64| -> Outcome<(Vec<u64>, bool)> {
        let page = s.mailbox_page("bob", after, None, limit, max_bytes)?;
        waiting.push(page.waiting);
        Ok((seqs(&page.messages), page.more))
    };
    ensure_eq(
        page(0, 2, u64::MAX)?,
        (all[..2].to_vec(), true),
        "two by count",
    )?;
    ensure_eq(
        page(all[1], 2, 250)?,
        (all[2..4].to_vec(), true),
        "two fitting 250 bytes",
    )?;
    ensure_eq(
        page(all[1], 9, 250)?,
        (all[2..4].to_vec(), true),
        "250 bytes, count to spare",
    )?;
    ensure_eq(
        page(all[3], 9, 50)?,
        (vec![all[4]], true),
        "one above the byte budget",
    )?;
    // Attachment data counts: 100 + 300 bytes do not fit 350.
    ensure_eq(
        page(all[3], 9, 350)?,
        (vec![all[4]], true),
        "a body, then an attachment",
    )?;
    ensure_eq(
        page(all[3], 9, 400)?,
        (all[4..].to_vec(), false),
        "the last two, exactly",
    )?;
    ensure_eq(
        page(all[4], 0, u64::MAX)?,
        (vec![all[5]], false),
        "a limit of 0 reads one",
    )?;
    ensure_eq(
        page(0, 0, 0)?,
        (vec![all[0]], true),
        "a limit and budget of 0 read one",
    )?;
    ensure_eq(
        page(all[5], 9, u64::MAX)?,
        (vec![], false),
        "after the last",
    )?;
    ensure_eq(
        page(u64::MAX, 9, u64::MAX)?,
        (vec![], false),
        "after u64::MAX",
    )?;
    // Each read counts every undelivered message above its `after`, not only its page's.
    ensure_eq(
        waiting,
        vec![6, 4, 4, 2, 2, 2, 1, 6, 0, 0],
        "the waiting count of each read",
    )
}

/// A live session's read (`all_above`) brings every message above its mark, acked by a
/// sibling device or not, and below it only what is not yet acked; a login's first read
/// (`None`) marks at the user's highest seq, which every page reports.
fn a_read_above_a_mark_brings_acked_messages_too(fresh: &mut Fresh<'_>) -> Outcome {
    // (seqs, more, high) of one read.
    fn read(
        s: &mut Store,
        name: &str,
        after: u64,
        all_above: Option<u64>,
        limit: u32,
    ) -> Outcome<(Vec<u64>, bool, u64)> {
        let page = s.mailbox_page(name, after, all_above, limit, u64::MAX)?;
        Ok((seqs(&page.messages), page.more, page.high))
    }
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    ensure_eq(
        read(&mut s, "bob", 0, None, 9)?,
        (vec![], false, 0),
        "nothing yet",
    )?;
    ensure_eq(
        read(&mut s, "bob", 0, Some(0), 9)?,
        (vec![], false, 0),
        "nothing above 0",
    )?;
    let mut m = Vec::new();
    for i in 1..=5 {
        m.push(s.stored("alice", "bob", i, &format!("m{i}"))?.seq);
    }
    // Stored last, to someone else: not bob's high-water mark.
    let to_carol = s.stored("alice", "carol", 9, "for carol")?.seq;
    s.mark_delivered("bob", vec![m[0], m[1], m[3]])?;
    ensure_eq(
        read(&mut s, "bob", 0, None, 9)?,
        (vec![m[2], m[4]], false, m[4]),
        "a login's read: the unacked ones, marked at bob's highest",
    )?;
    ensure_eq(
        read(&mut s, "bob", 0, None, 1)?,
        (vec![m[2]], true, m[4]),
        "a login's first page",
    )?;
    ensure_eq(
        read(&mut s, "bob", 0, Some(m[1]), 9)?,
        (vec![m[2], m[3], m[4]], false, m[4]),
        "above the mark, the acked one too; below it, only the unacked",
    )?;
    ensure_eq(
        read(&mut s, "bob", 0, Some(0), 9)?,
        (m.clone(), false, m[4]),
        "above 0: all of them",
    )?;
    ensure_eq(
        read(&mut s, "bob", m[2], Some(m[1]), 1)?,
        (vec![m[3]], true, m[4]),
        "paged by count like any read",
    )?;
    ensure_eq(
        read(&mut s, "bob", m[3], Some(m[1]), 1)?,
        (vec![m[4]], false, m[4]),
        "the last page",
    )?;
    ensure_eq(
        read(&mut s, "bob", m[4], Some(0), 9)?,
        (vec![], false, m[4]),
        "after the last",
    )?;
    ensure_eq(
        read(&mut s, "bob", 0, Some(u64::MAX), 9)?,
        (vec![m[2], m[4]], false, m[4]),
        "a mark at u64::MAX is an unacked-only read",
    )?;
    ensure_eq(
        read(&mut s, "carol", 0, Some(0), 9)?,
        (vec![to_carol], false, to_carol),
        "carol's: nothing of bob's",
    )?;
    ensure_eq(
        read(&mut s, "alice", 0, Some(0), 9)?,
        (vec![], false, 0),
        "the sender's",
    )
}

fn history_pages_newest_first_through_one_conversation(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let mut sent = Vec::new();
    for i in 0..10u64 {
        let (from, to) = if i % 2 == 0 {
            ("alice", "bob")
        } else {
            ("bob", "alice")
        };
        let (r, at) = s.send_with(from, to, i, &format!("m{i}"), None)?;
        let d = r
            .map_err(|e| format!("storing refused with {e:?}"))?
            .delivery;
        sent.push(HistoryItem {
            seq: d.seq,
            // The sender's own id comes back, so a client without state finds its messages.
            id: i,
            from: user(from),
            to: user(to),
            body: format!("m{i}"),
            attachment: None,
            sent_at_ms: at,
        });
        s.stored("alice", "carol", 100 + i, "elsewhere")?;
    }
    let newest_first: Vec<HistoryItem> = sent.iter().rev().cloned().collect();
    ensure_eq(
        s.history("alice", "bob", None, 4)?,
        newest_first[..4].to_vec(),
        "the newest 4",
    )?;
    // The same conversation from the other side, paged by `before`.
    ensure_eq(
        s.history("bob", "alice", Some(sent[6].seq), 100)?,
        newest_first[4..].to_vec(),
        "bob's side below the 7th",
    )?;
    ensure_eq(
        s.history("alice", "bob", Some(sent[0].seq), 100)?,
        vec![],
        "below the first",
    )?;
    ensure_eq(
        s.history("alice", "bob", Some(0), 100)?,
        vec![],
        "below seq 0",
    )?;
    ensure_eq(s.history("alice", "bob", None, 0)?, vec![], "a limit of 0")?;
    ensure_eq(
        s.history("alice", "bob", Some(u64::MAX), 100)?.len(),
        10,
        "below u64::MAX",
    )?;
    ensure_eq(
        s.history("carol", "alice", None, u16::MAX)?.len(),
        10,
        "carol's conversation",
    )?;
    ensure_eq(
        s.history("bob", "carol", None, 10)?,
        vec![],
        "no conversation",
    )?;
    ensure_eq(
        s.history("nobody", "alice", None, 10)?,
        vec![],
        "an unknown user's",
    )?;
    // A note to oneself is one conversation, listed once.
    let note = s.stored("alice", "alice", 77, "note to self")?;
    ensure_eq(
        s.history_seqs("alice", "alice", None, 10)?,
        vec![note.seq],
        "notes to self",
    )?;
    ensure_eq(
        s.mailbox("alice")?.last(),
        Some(&note),
        "a note to self waits last in the mailbox",
    )
}

fn history_is_capped(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let extra = 5;
    let mut all = Vec::new();
    for i in 0..u64::from(MAX_HISTORY) + extra {
        all.push(s.stored("alice", "bob", i, "")?.seq);
    }
    all.reverse();
    let cap = usize::from(MAX_HISTORY);
    let page = s.history_seqs("bob", "alice", None, u16::MAX)?;
    ensure_eq(page.as_slice(), &all[..cap], "a page asking for u16::MAX")?;
    ensure_eq(
        s.history_seqs("bob", "alice", page.last().copied(), MAX_HISTORY)?,
        all[cap..].to_vec(),
        "the rest",
    )
}

fn attachments_are_kept_whole(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let pdf = Attachment {
        mime: "application/pdf".to_owned(),
        name: "doc.pdf".to_owned(),
        data: (0..=255).cycle().take(1234).collect(),
    };
    // Empty labels and data are still an attachment.
    let blank = Attachment {
        mime: String::new(),
        name: String::new(),
        data: vec![],
    };
    let mut stored = Vec::new();
    for (id, attachment) in [(1, pdf.clone()), (2, blank.clone())] {
        let (r, _) = s.send_with("alice", "bob", id, "file", Some(attachment.clone()))?;
        let d = r
            .map_err(|e| format!("storing refused with {e:?}"))?
            .delivery;
        ensure_eq(
            d.attachment.as_ref(),
            Some(&attachment),
            "the stored delivery's attachment",
        )?;
        stored.push(d);
    }
    ensure_eq(
        s.mailbox("bob")?,
        stored.clone(),
        "the mailbox's attachments",
    )?;
    let (again, _) = s.send_with("alice", "bob", 1, "other", Some(blank.clone()))?;
    ensure_eq(
        again.map(|r| r.delivery.attachment),
        Ok(Some(pdf.clone())),
        "a resend's attachment",
    )?;
    let info = |a: &Attachment| AttachmentInfo {
        mime: a.mime.clone(),
        name: a.name.clone(),
        size: a.data.len() as u64,
    };
    let history: Vec<Option<AttachmentInfo>> = s
        .history("alice", "bob", None, 10)?
        .into_iter()
        .map(|h| h.attachment)
        .collect();
    ensure_eq(
        history,
        vec![Some(info(&blank)), Some(info(&pdf))],
        "history's attachment info",
    )
}

/// A ban refuses the account, not the credential: a right one comes back as a banned account
/// (no token, no contacts), a wrong one as a wrong one, so a ban reveals nothing to a
/// guesser. A banned login issues no token and spends none, and other users are untouched.
fn a_banned_login_is_verified_and_marked_and_spends_nothing(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    ensure_eq(
        s.set_contacts("alice", &["bob"], &[])?,
        Ok(()),
        "alice adds bob",
    )?;
    let first = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "first login",
    )?;
    let second = s.token_of("alice", Credential::Token(first.clone()), "token login")?;
    ensure_eq(s.set_banned("alice", true)?, Ok(()), "the ban")?;
    ensure_eq(s.set_banned("alice", true)?, Ok(()), "banning again")?;
    for (what, credential, issue_token) in [
        (
            "a device's password login",
            Credential::Password(PASSWORD.into()),
            true,
        ),
        (
            "an agent's password login",
            Credential::Password(PASSWORD.into()),
            false,
        ),
        ("a token login", Credential::Token(second.clone()), true),
        (
            "the parent token's login",
            Credential::Token(first.clone()),
            true,
        ),
    ] {
        ensure_eq(
            s.authenticate("alice", credential, issue_token)?,
            Ok(Account::banned()),
            what,
        )?;
    }
    ensure_eq(
        s.password_login("alice", "wrong password")?,
        Err(StorageError::BadCredentials),
        "a wrong password while banned",
    )?;
    ensure_eq(
        s.token_login("alice", b"not a token of hers")?,
        Err(StorageError::BadCredentials),
        "a wrong token while banned",
    )?;
    let bob = s.password_login("bob", PASSWORD)?;
    ensure(bob.as_ref().is_ok_and(|a| !a.banned), || {
        format!("bob's login while alice is banned: {bob:?}")
    })?;
    Ok(())
}

/// An unban undoes the ban and nothing else: the tokens issued before it still resume
/// (the banned logins spent none of them).
fn an_unban_lets_the_user_back_with_the_same_tokens(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice"])?;
    let first = s.token_of(
        "alice",
        Credential::Password(PASSWORD.into()),
        "first login",
    )?;
    let second = s.token_of("alice", Credential::Token(first.clone()), "token login")?;
    ensure_eq(s.set_banned("alice", true)?, Ok(()), "the ban")?;
    ensure_eq(
        s.token_login("alice", &second)?,
        Ok(Account::banned()),
        "the token login while banned",
    )?;
    ensure_eq(s.set_banned("alice", false)?, Ok(()), "the unban")?;
    ensure_eq(s.set_banned("alice", false)?, Ok(()), "unbanning again")?;
    // The parent is still valid: the banned login above did not use its successor.
    s.token_of(
        "alice",
        Credential::Token(first),
        "the parent token after the unban",
    )?;
    let account = s
        .password_login("alice", PASSWORD)?
        .map_err(|e| format!("password login after the unban refused: {e:?}"))?;
    ensure(!account.banned && !account.resume_token.is_empty(), || {
        format!("password login after the unban: {account:?}")
    })
}

fn a_ban_needs_a_known_user(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice"])?;
    for banned in [true, false] {
        ensure_eq(
            s.set_banned("carol", banned)?,
            Err(StorageError::NoSuchUser),
            &format!("setting banned={banned} on an unknown user"),
        )?;
    }
    ensure_eq(
        s.register("carol", PASSWORD)?,
        Ok(()),
        "registering the name a ban was refused for",
    )?;
    let account = s.password_login("carol", PASSWORD)?;
    ensure(account.as_ref().is_ok_and(|a| !a.banned), || {
        format!("carol's login: {account:?}")
    })
}

fn group(id: u32, name: &str) -> ContactGroup {
    ContactGroup {
        id,
        name: name.to_owned(),
    }
}

fn placed(contact: &str, group: u32) -> Placement {
    Placement {
        contact: user(contact),
        group,
    }
}

fn groups_are_created_renamed_reordered_and_deleted(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let mut ids = Vec::new();
    for name in ["Work", "家人", "Play"] {
        let diff = s.group_change(
            "alice",
            GroupChange::Create {
                name: name.to_owned(),
            },
        )?;
        ensure(diff.moved.is_empty(), || {
            format!("creating {name} moved {diff:?}")
        })?;
        let Some(new) = diff.groups.last() else {
            return Err(format!("creating {name}: no groups in {diff:?}"));
        };
        ensure_eq(new.name.as_str(), name, "a new group comes last")?;
        ensure(new.id != DEFAULT_GROUP && !ids.contains(&new.id), || {
            format!("creating {name}: id {} not fresh among {ids:?}", new.id)
        })?;
        ids.push(new.id);
    }
    let [work, family, play] = ids[..] else {
        unreachable!("three created")
    };
    ensure_eq(
        s.change_groups(
            "alice",
            GroupChange::Create {
                name: "Work".into(),
            },
            100,
        )?,
        Err(StorageError::GroupNameTaken),
        "creating a name the user has",
    )?;
    // Another user's groups are theirs: the same name is free there.
    s.group_change(
        "bob",
        GroupChange::Create {
            name: "Work".into(),
        },
    )?;
    ensure_eq(
        s.change_groups(
            "alice",
            GroupChange::Rename {
                group: family,
                name: "Play".into(),
            },
            100,
        )?,
        Err(StorageError::GroupNameTaken),
        "renaming to another group's name",
    )?;
    let renamed = s.group_change(
        "alice",
        GroupChange::Rename {
            group: work,
            name: "Colleagues".into(),
        },
    )?;
    ensure_eq(
        renamed.groups,
        vec![
            group(work, "Colleagues"),
            group(family, "家人"),
            group(play, "Play"),
        ],
        "after a rename",
    )?;
    s.group_change(
        "alice",
        GroupChange::Rename {
            group: play,
            name: "Play".into(),
        },
    )?;
    let reordered = s.group_change(
        "alice",
        GroupChange::Reorder {
            group: play,
            position: 0,
        },
    )?;
    ensure_eq(
        reordered.groups,
        vec![
            group(play, "Play"),
            group(work, "Colleagues"),
            group(family, "家人"),
        ],
        "after moving the last group first",
    )?;
    let last = s.group_change(
        "alice",
        GroupChange::Reorder {
            group: play,
            position: 99,
        },
    )?;
    ensure_eq(
        last.groups,
        vec![
            group(work, "Colleagues"),
            group(family, "家人"),
            group(play, "Play"),
        ],
        "after moving a group past the end",
    )?;
    let deleted = s.group_change("alice", GroupChange::Delete { group: play })?;
    ensure_eq(
        deleted.groups,
        vec![group(work, "Colleagues"), group(family, "家人")],
        "after a delete",
    )?;
    // The newest group was deleted: its id is still not handed out again.
    let again = s.group_change(
        "alice",
        GroupChange::Create {
            name: "Play".into(),
        },
    )?;
    let new = again.groups.last().map(|g| g.id);
    ensure(new.is_some_and(|id| !ids.contains(&id)), || {
        format!("a deleted group's id came back: {again:?}")
    })?;
    for (change, what) in [
        (
            GroupChange::Delete { group: play },
            "deleting a deleted group",
        ),
        (
            GroupChange::Rename {
                group: DEFAULT_GROUP,
                name: "Default".into(),
            },
            "renaming the default group",
        ),
        (
            GroupChange::Delete {
                group: DEFAULT_GROUP,
            },
            "deleting the default group",
        ),
        (
            GroupChange::Reorder {
                group: 9999,
                position: 0,
            },
            "moving an unknown group",
        ),
    ] {
        ensure_eq(
            s.change_groups("alice", change, 100)?,
            Err(StorageError::NoSuchGroup),
            what,
        )?;
    }
    ensure_eq(
        s.change_groups(
            "nobody",
            GroupChange::Create {
                name: "Work".into(),
            },
            100,
        )?,
        Err(StorageError::NoSuchUser),
        "an unknown user creating a group",
    )?;
    let at_login = s.groups("alice")?;
    ensure_eq(at_login.groups, again.groups, "the groups at login")?;
    ensure_eq(
        s.groups("bob")?.groups.len(),
        1,
        "bob's groups: each user has their own",
    )
}

fn contacts_are_filed_in_groups(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol", "dave", "erin"])?;
    ensure_eq(
        s.set_contacts("alice", &["bob", "carol", "dave"], &[])?,
        Ok(()),
        "adding contacts",
    )?;
    let create = |name: &str| GroupChange::Create {
        name: name.to_owned(),
    };
    let work = s.group_change("alice", create("Work"))?.groups[0].id;
    let family = s.group_change("alice", create("Family"))?.groups[1].id;
    let file = |names: &[&str], group: u32| GroupChange::File {
        contacts: users(names),
        group,
    };
    let filed = s.group_change("alice", file(&["dave", "bob"], work))?;
    ensure_eq(
        filed.moved,
        vec![placed("bob", work), placed("dave", work)],
        "filing two contacts (reported by name)",
    )?;
    let again = s.group_change("alice", file(&["bob", "carol"], work))?;
    ensure_eq(
        again.moved,
        vec![placed("carol", work)],
        "filing one already there: only the other moved",
    )?;
    for (change, want, what) in [
        (
            file(&["carol", "erin"], family),
            StorageError::NoSuchUser,
            "filing someone not on the list",
        ),
        (
            file(&["carol", "nobody"], family),
            StorageError::NoSuchUser,
            "filing an unknown user",
        ),
        (
            file(&["carol"], 9999),
            StorageError::NoSuchGroup,
            "filing in an unknown group",
        ),
    ] {
        ensure_eq(s.change_groups("alice", change, 100)?, Err(want), what)?;
    }
    ensure_eq(
        s.groups("alice")?.placements,
        vec![
            placed("bob", work),
            placed("carol", work),
            placed("dave", work),
        ],
        "placements after refused changes: all or nothing",
    )?;
    let home = s.group_change("alice", file(&["carol"], family))?;
    ensure_eq(home.moved, vec![placed("carol", family)], "moving carol")?;
    let back = s.group_change("alice", file(&["dave"], DEFAULT_GROUP))?;
    ensure_eq(
        back.moved,
        vec![placed("dave", DEFAULT_GROUP)],
        "filing in the default group",
    )?;
    // Taken off the list, a contact leaves its group; added again, it is in the default one.
    ensure_eq(
        s.set_contacts("alice", &[], &["carol"])?,
        Ok(()),
        "removing carol",
    )?;
    ensure_eq(
        s.set_contacts("alice", &["carol"], &[])?,
        Ok(()),
        "adding carol again",
    )?;
    ensure_eq(
        s.groups("alice")?.placements,
        vec![placed("bob", work)],
        "placements after carol left and came back",
    )?;
    s.group_change("alice", file(&["carol"], work))?;
    let deleted = s.group_change("alice", GroupChange::Delete { group: work })?;
    ensure_eq(
        deleted,
        GroupsDiff {
            groups: vec![group(family, "Family")],
            moved: vec![placed("bob", DEFAULT_GROUP), placed("carol", DEFAULT_GROUP)],
        },
        "deleting a group moves its contacts to the default group",
    )?;
    ensure_eq(
        s.groups("alice")?,
        ContactGroups {
            groups: vec![group(family, "Family")],
            placements: vec![],
        },
        "the groups at login after the delete",
    )
}

fn groups_are_limited_per_user(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice"])?;
    let create = |name: &str| GroupChange::Create {
        name: name.to_owned(),
    };
    for name in ["a", "b"] {
        ensure(s.change_groups("alice", create(name), 2)?.is_ok(), || {
            format!("creating {name} under a limit of 2")
        })?;
    }
    ensure_eq(
        s.change_groups("alice", create("c"), 2)?,
        Err(StorageError::TooManyGroups),
        "a third group under a limit of 2",
    )?;
    // A list above a lowered limit may still be renamed, reordered and shrunk.
    ensure_eq(
        s.change_groups("alice", create("c"), 1)?
            .map(|d| d.groups.len()),
        Err(StorageError::TooManyGroups),
        "a new group above a lowered limit",
    )?;
    let first = s.groups("alice")?.groups[0].id;
    ensure(
        s.change_groups("alice", GroupChange::Delete { group: first }, 1)?
            .is_ok(),
        || "deleting above a lowered limit".to_string(),
    )?;
    ensure_eq(
        s.change_groups("alice", create("c"), 1)?
            .map(|d| d.groups.len()),
        Err(StorageError::TooManyGroups),
        "a new group at the limit",
    )?;
    ensure_eq(
        s.change_groups("alice", create("c"), 2)?
            .map(|d| d.groups.len()),
        Ok(2),
        "a new group under the limit again",
    )
}

fn text(display_name: &str, signature: &str) -> ProfileChange {
    ProfileChange::Text {
        display_name: display_name.into(),
        signature: signature.into(),
    }
}

/// An avatar as the core would pass it. The store does not look inside the image (the core
/// checked it), so any bytes do; the hash is the core's to compute, and the store keys by it.
fn avatar(byte: u8) -> ProfileChange {
    let data = vec![byte; 64];
    ProfileChange::Avatar(Some(NewAvatar {
        hash: crate::profile::avatar_hash(&data),
        image: AvatarImage {
            mime: "image/png".into(),
            data,
        },
    }))
}

fn a_profile_change_is_counted_and_read_back(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let blank = s.profile("alice", true)?;
    ensure_eq(
        blank,
        Ok((ProfileCard::blank(user("alice")), None)),
        "a profile never set",
    )?;
    let first = s
        .set_profile("alice", text("王小明 🐼", "在开会"))?
        .map_err(|e| format!("setting the text: {e:?}"))?;
    ensure_eq(
        (
            first.rev,
            first.display_name.as_str(),
            first.signature.as_str(),
        ),
        (1, "王小明 🐼", "在开会"),
        "the first change",
    )?;
    let with_avatar = s
        .set_profile("alice", avatar(7))?
        .map_err(|e| format!("setting the avatar: {e:?}"))?;
    ensure_eq(with_avatar.rev, 2, "the avatar's rev")?;
    ensure_eq(
        with_avatar.display_name.as_str(),
        "王小明 🐼",
        "the text kept by an avatar change",
    )?;
    let ProfileChange::Avatar(Some(sent)) = avatar(7) else {
        unreachable!("built above")
    };
    ensure_eq(with_avatar.avatar, Some(sent.hash), "the avatar's hash")?;
    let renamed = s
        .set_profile("alice", text("Alice", ""))?
        .map_err(|e| format!("renaming: {e:?}"))?;
    ensure_eq(
        (renamed.rev, renamed.avatar),
        (3, Some(sent.hash)),
        "a text change keeps the avatar",
    )?;
    ensure_eq(
        s.profile("alice", true)?,
        Ok((renamed.clone(), Some(sent.image.clone()))),
        "the card with its image",
    )?;
    ensure_eq(
        s.profile("alice", false)?,
        Ok((renamed, None)),
        "the card without its image",
    )
}

fn profiles_are_listed_only_once_set(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    ensure_eq(s.profiles(None)?, vec![], "no profile set yet")?;
    let carol = s
        .set_profile("carol", text("Carol", ""))?
        .map_err(|e| format!("carol's change: {e:?}"))?;
    let alice = s
        .set_profile("alice", text("Alice", "hi"))?
        .map_err(|e| format!("alice's change: {e:?}"))?;
    ensure_eq(
        s.profiles(None)?,
        vec![alice.clone(), carol.clone()],
        "every profile, sorted by user",
    )?;
    ensure_eq(
        s.profiles(Some(&["carol", "bob", "nobody", "alice", "carol"]))?,
        vec![alice, carol],
        "the ones asked for, sorted, once each; unknown and unset names skipped",
    )
}

fn an_avatar_is_kept_while_a_profile_shows_it(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let ProfileChange::Avatar(Some(shared)) = avatar(1) else {
        unreachable!("built above")
    };
    for name in ["alice", "bob"] {
        s.set_profile(name, avatar(1))?
            .map_err(|e| format!("{name}'s avatar: {e:?}"))?;
    }
    // Alice moves on: bob still shows the image, so it stays.
    s.set_profile("alice", avatar(2))?
        .map_err(|e| format!("alice's second avatar: {e:?}"))?;
    let bob = s.profile("bob", true)?.map_err(|e| format!("{e:?}"))?;
    ensure_eq(
        bob.1,
        Some(shared.image),
        "bob's image after alice's change",
    )?;
    // Removed: the card has no hash and no image comes back.
    let removed = s
        .set_profile("alice", ProfileChange::Avatar(None))?
        .map_err(|e| format!("removing alice's avatar: {e:?}"))?;
    ensure_eq(removed.avatar, None, "the card after the removal")?;
    let alice = s.profile("alice", true)?.map_err(|e| format!("{e:?}"))?;
    ensure_eq(alice.1, None, "alice's image after the removal")
}

fn a_profile_needs_a_known_user(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice"])?;
    ensure_eq(
        s.set_profile("carol", text("Carol", ""))?,
        Err(StorageError::NoSuchUser),
        "a change for an unknown user",
    )?;
    ensure_eq(
        s.profile("carol", true)?,
        Err(StorageError::NoSuchUser),
        "reading an unknown user's profile",
    )?;
    ensure_eq(s.profiles(None)?, vec![], "nothing stored for carol")
}

// ---- rooms ----

const MANY: u32 = 1000;

impl Store {
    fn create_room(
        &mut self,
        owner: &str,
        name: &str,
        max_rooms: u32,
    ) -> Outcome<Result<RoomView, StorageError>> {
        match self.apply(StorageOp::CreateRoom {
            owner: user(owner),
            name: name.to_owned(),
            max_rooms,
        }) {
            (StorageResult::RoomCreated(r), _) => Ok(r),
            (other, _) => unexpected("CreateRoom", other),
        }
    }

    fn change_room(
        &mut self,
        by: &str,
        room: u64,
        who: &str,
        change: RoomChange,
        limits: (u32, u32),
    ) -> Outcome<Result<RoomView, StorageError>> {
        match self.apply(StorageOp::ChangeRoom {
            by: user(by),
            room,
            user: user(who),
            change,
            max_members: limits.0,
            max_rooms: limits.1,
        }) {
            (StorageResult::RoomChanged(r), _) => Ok(r),
            (other, _) => unexpected("ChangeRoom", other),
        }
    }

    fn invite(
        &mut self,
        by: &str,
        room: u64,
        who: &str,
        role: RoomRole,
    ) -> Outcome<Result<RoomView, StorageError>> {
        self.change_room(by, room, who, RoomChange::Add(role), (MANY, MANY))
    }

    fn say(
        &mut self,
        room: u64,
        from: &str,
        id: u64,
        body: &str,
    ) -> Outcome<Result<RoomStored, StorageError>> {
        match self.apply(StorageOp::StoreRoomMessage {
            room,
            from: user(from),
            id,
            body: body.to_owned(),
        }) {
            (StorageResult::RoomMessageStored(r), _) => Ok(r),
            (other, _) => unexpected("StoreRoomMessage", other),
        }
    }

    fn rooms(&mut self, name: &str) -> Outcome<Vec<MemberRoom>> {
        match self.apply(StorageOp::LoadRooms { user: user(name) }) {
            (StorageResult::RoomsLoaded(Ok(r)), _) => Ok(r),
            (other, _) => unexpected("LoadRooms", other),
        }
    }

    fn load_room(
        &mut self,
        name: &str,
        room: u64,
        range: RoomRange,
        limit: u16,
    ) -> Outcome<Result<Vec<RoomDelivery>, StorageError>> {
        match self.apply(StorageOp::LoadRoom {
            user: user(name),
            room,
            range,
            limit,
        }) {
            (StorageResult::RoomLoaded(r), _) => Ok(r),
            (other, _) => unexpected("LoadRoom", other),
        }
    }

    fn mark_room_read(&mut self, name: &str, reads: Vec<(u64, u64)>) -> Outcome {
        match self.apply(StorageOp::MarkRoomRead {
            user: user(name),
            reads,
        }) {
            (StorageResult::RoomReadMarked(Ok(())), _) => Ok(()),
            (other, _) => unexpected("MarkRoomRead", other),
        }
    }

    /// Creates a room of `owner` with `members` (as members); its id.
    fn team(&mut self, owner: &str, members: &[&str]) -> Outcome<u64> {
        let room = self
            .create_room(owner, "team", MANY)?
            .map_err(|e| format!("creating a room refused with {e:?}"))?
            .room;
        for m in members {
            self.invite(owner, room, m, RoomRole::Member)?
                .map_err(|e| format!("inviting {m} refused with {e:?}"))?;
        }
        Ok(room)
    }
}

fn room_seqs(r: &[RoomDelivery]) -> Vec<u64> {
    r.iter().map(|d| d.seq).collect()
}

fn a_room_is_created_with_its_owner(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob"])?;
    let view = s
        .create_room("alice", "家人 🎉", MANY)?
        .map_err(|e| format!("refused with {e:?}"))?;
    ensure_eq(
        (view.name.as_str(), view.last, view.members.clone()),
        ("家人 🎉", 0, vec![(user("alice"), RoomRole::Owner)]),
        "the new room",
    )?;
    let other = s
        .create_room("alice", "家人 🎉", MANY)?
        .map_err(|e| format!("{e:?}"))?;
    ensure(other.room != view.room, || {
        "two rooms got one id".to_owned()
    })?;
    ensure_eq(
        s.create_room("nobody", "x", MANY)?,
        Err(StorageError::NoSuchUser),
        "a room of an unknown owner",
    )?;
    ensure_eq(
        s.rooms("alice")?,
        vec![
            MemberRoom {
                view: view.clone(),
                read: 0,
            },
            MemberRoom {
                view: other,
                read: 0,
            },
        ],
        "alice's rooms, in room order",
    )?;
    ensure_eq(s.rooms("bob")?, vec![], "bob's rooms")
}

fn room_roles_decide_who_changes_membership(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["owner", "admin", "member", "dave", "erin"])?;
    let room = s.team("owner", &["member"])?;
    ensure_eq(
        s.invite("member", room, "dave", RoomRole::Member)?,
        Err(StorageError::Forbidden),
        "a member inviting",
    )?;
    ensure_eq(
        s.invite("dave", room, "erin", RoomRole::Member)?,
        Err(StorageError::NoSuchRoom),
        "a non-member inviting",
    )?;
    ensure_eq(
        s.invite("owner", room + 1000, "dave", RoomRole::Member)?,
        Err(StorageError::NoSuchRoom),
        "an unknown room",
    )?;
    ensure_eq(
        s.invite("owner", room, "nobody", RoomRole::Member)?,
        Err(StorageError::NoSuchUser),
        "an unknown user",
    )?;
    s.invite("owner", room, "admin", RoomRole::Admin)?
        .map_err(|e| format!("the owner adding an admin: {e:?}"))?;
    for (role, what) in [
        (RoomRole::Admin, "an admin making an admin"),
        (RoomRole::Owner, "an admin making an owner"),
    ] {
        ensure_eq(
            s.invite("admin", room, "dave", role)?,
            Err(StorageError::Forbidden),
            what,
        )?;
    }
    let view = s
        .invite("admin", room, "dave", RoomRole::Member)?
        .map_err(|e| format!("an admin adding a member: {e:?}"))?;
    ensure_eq(
        view.members,
        vec![
            (user("admin"), RoomRole::Admin),
            (user("dave"), RoomRole::Member),
            (user("member"), RoomRole::Member),
            (user("owner"), RoomRole::Owner),
        ],
        "the members, in user order",
    )?;
    for (by, who, what) in [
        ("owner", "owner", "the owner leaving"),
        ("admin", "owner", "an admin removing the owner"),
        ("member", "dave", "a member removing a member"),
        ("admin", "admin", "nobody: an admin may leave"),
    ] {
        let r = s.change_room(by, room, who, RoomChange::Remove, (MANY, MANY))?;
        let want_ok = what.starts_with("nobody");
        ensure(r.is_ok() == want_ok, || format!("{what}: {r:?}"))?;
        if !want_ok {
            ensure_eq(r, Err(StorageError::Forbidden), what)?;
        }
    }
    let view = s
        .change_room("owner", room, "dave", RoomChange::Remove, (MANY, MANY))?
        .map_err(|e| format!("the owner removing a member: {e:?}"))?;
    ensure_eq(
        view.members,
        vec![
            (user("member"), RoomRole::Member),
            (user("owner"), RoomRole::Owner),
        ],
        "after two left",
    )?;
    ensure_eq(
        s.change_room("owner", room, "dave", RoomChange::Remove, (MANY, MANY))?
            .map(|v| v.members.len()),
        Ok(2),
        "removing a non-member changes nothing",
    )
}

fn room_limits_hold(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let room = s.team("alice", &["bob"])?;
    ensure_eq(
        s.change_room(
            "alice",
            room,
            "carol",
            RoomChange::Add(RoomRole::Member),
            (2, MANY),
        )?,
        Err(StorageError::RoomLimit),
        "a full room",
    )?;
    ensure_eq(
        s.create_room("bob", "second", 1)?,
        Err(StorageError::RoomLimit),
        "a user in the most rooms creating one",
    )?;
    let second = s.team("carol", &[])?;
    ensure_eq(
        s.change_room(
            "carol",
            second,
            "bob",
            RoomChange::Add(RoomRole::Member),
            (MANY, 1),
        )?,
        Err(StorageError::RoomLimit),
        "inviting a user in the most rooms",
    )?;
    // A role change is no new membership: limits do not stand in its way.
    ensure(
        s.change_room(
            "alice",
            room,
            "bob",
            RoomChange::Add(RoomRole::Admin),
            (2, 1),
        )?
        .is_ok(),
        || "a role change in a full room was refused".to_owned(),
    )
}

fn a_room_message_is_stored_once_in_room_order(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let room = s.team("alice", &["bob"])?;
    let other = s.team("carol", &[])?;
    let first = s
        .say(room, "alice", u64::MAX, "hello")?
        .map_err(|e| format!("{e:?}"))?;
    ensure_eq(
        (first.delivery.seq, first.duplicate, first.members.clone()),
        (1, false, users(&["alice", "bob"])),
        "the first message: seq 1, owed to the members",
    )?;
    // Seqs are per room.
    let elsewhere = s
        .say(other, "carol", 1, "hi")?
        .map_err(|e| format!("{e:?}"))?;
    ensure_eq(elsewhere.delivery.seq, 1, "another room's first seq")?;
    let again = s
        .say(room, "alice", u64::MAX, "changed")?
        .map_err(|e| format!("{e:?}"))?;
    ensure_eq(
        again,
        RoomStored {
            duplicate: true,
            ..first.clone()
        },
        "a resend",
    )?;
    let second = s
        .say(room, "bob", u64::MAX, "ids are per sender")?
        .map_err(|e| format!("{e:?}"))?;
    ensure_eq(second.delivery.seq, 2, "the next seq")?;
    ensure_eq(
        s.say(room, "carol", 5, "not a member")?,
        Err(StorageError::NoSuchRoom),
        "a non-member's message",
    )?;
    ensure_eq(
        s.load_room("alice", room, RoomRange::After(0), 10)?
            .map(|r| room_seqs(&r)),
        Ok(vec![1, 2]),
        "one row per message",
    )?;
    ensure_eq(
        s.load_room("carol", room, RoomRange::Before(None), 10)?,
        Err(StorageError::NoSuchRoom),
        "a non-member's history",
    )
}

fn room_mail_is_read_above_a_cursor_that_only_rises(fresh: &mut Fresh<'_>) -> Outcome {
    let mut s = Store::with_users(fresh, &["alice", "bob", "carol"])?;
    let room = s.team("alice", &["bob"])?;
    for i in 1..=5 {
        s.say(room, "alice", i, &format!("m{i}"))?
            .map_err(|e| format!("{e:?}"))?;
    }
    ensure_eq(
        s.load_room("bob", room, RoomRange::After(1), 2)?
            .map(|r| room_seqs(&r)),
        Ok(vec![2, 3]),
        "a page above seq 1",
    )?;
    ensure_eq(
        s.load_room("bob", room, RoomRange::Before(Some(5)), 3)?
            .map(|r| room_seqs(&r)),
        Ok(vec![4, 3, 2]),
        "history below seq 5, newest first",
    )?;
    ensure_eq(
        s.load_room("bob", room, RoomRange::Before(None), u16::MAX)?
            .map(|r| r.len()),
        Ok(5),
        "history capped at MAX_HISTORY, here all five",
    )?;
    s.mark_room_read("bob", vec![(room, 3), (room + 1000, 9)])?;
    s.mark_room_read("bob", vec![(room, 2)])?;
    s.mark_room_read("carol", vec![(room, 5)])?;
    let rooms = s.rooms("bob")?;
    ensure_eq(
        rooms
            .iter()
            .map(|r| (r.view.room, r.view.last, r.read))
            .collect::<Vec<_>>(),
        vec![(room, 5, 3)],
        "bob's cursor rose to 3 and did not fall back",
    )?;
    // A new member's cursor starts at the room's last seq.
    s.invite("alice", room, "carol", RoomRole::Member)?
        .map_err(|e| format!("{e:?}"))?;
    let carols = s.rooms("carol")?;
    ensure_eq(
        carols.iter().map(|r| r.read).collect::<Vec<_>>(),
        vec![5],
        "a new member's cursor",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_keeps_the_contract() {
        assert_keeps_contract("MemStore", || Box::new(MemStore::new()));
    }

    /// A store that forgets deliveries and pages history past the cap: the suite must say
    /// so, by check and by backend, and find nothing else wrong.
    struct Broken(MemStore);

    impl Backend for Broken {
        fn apply(&mut self, op: StorageOp, now_ms: u64) -> StorageResult {
            let StorageOp::LoadHistory {
                user,
                with,
                mut before,
                limit,
            } = op
            else {
                return match op {
                    StorageOp::MarkDelivered { .. } => StorageResult::DeliveredMarked(Ok(())),
                    op => self.0.apply(op, now_ms),
                };
            };
            let mut items = Vec::new();
            while items.len() < usize::from(limit) {
                let page = StorageOp::LoadHistory {
                    user: user.clone(),
                    with: with.clone(),
                    before,
                    limit: limit - items.len() as u16,
                };
                let StorageResult::HistoryLoaded(Ok(page)) = self.0.apply(page, now_ms) else {
                    unreachable!("MemStore reads history");
                };
                let Some(last) = page.last() else { break };
                before = Some(last.seq);
                items.extend(page);
            }
            StorageResult::HistoryLoaded(Ok(items))
        }
    }

    #[test]
    fn a_broken_store_is_caught_by_name() {
        let broken = violations("broken", || Box::new(Broken(MemStore::new())));
        let names: Vec<&str> = broken
            .iter()
            .map(|line| line.split(" on broken: ").next().unwrap_or(line))
            .collect();
        assert_eq!(
            names,
            [
                "only_the_recipient_marks_delivered",
                "a_read_above_a_mark_brings_acked_messages_too",
                "history_is_capped"
            ],
            "{broken:#?}"
        );
    }
}
