//! Profiles (protocol version 2): display names, signatures and avatars, set by their owner,
//! read by whoever can see the user, and pushed to watchers when they change.
//!
//! A change is stored first (the store counts it: `ProfileCard::rev`), then announced. Like
//! presence, announcements are batched: changes marked since the last drain go out as one
//! `ProfileDiff` per watcher connection, the newest card per user. A profile change is not a
//! presence change: it never touches the presence board, so no watcher sees its user greyed
//! or lit by it.
//!
//! Cards carry their `rev`, and a client keeps the higher of two cards of one user: a login's
//! snapshot (read from storage) and a diff racing it, or cards arriving from two nodes of a
//! cluster, settle on the newest whatever their order.

use super::session::Phase;
use super::{Output, Pending, Server};
use crate::codec::encode;
use crate::ids::{ConnId, UserId};
use crate::message::{
    AvatarImage, ErrorCode, MAX_PROFILE_CARDS, ProfileCard, RequestKind, ServerMsg, WatchScope,
};
use crate::profile::{self, ImageError};
use crate::storage::{NewAvatar, ProfileChange, StorageError, StorageOp};
use std::collections::BTreeMap;

/// The version of the protocol that added profiles.
pub(super) const PROFILES: u16 = 2;

#[derive(Debug, Default)]
pub(super) struct ProfileBoard {
    /// Cards to announce at the next drain: the newest per user.
    changed: BTreeMap<UserId, ProfileCard>,
    /// The highest `rev` this node announced per user: a card no newer (a bus message
    /// repeated by a snapshot, a change stored here and heard back) is not announced again.
    announced: BTreeMap<UserId, u64>,
}

impl ProfileBoard {
    /// `card` is stored: announce it at the next drain, unless a card as new is known.
    pub(super) fn offer(&mut self, card: ProfileCard) {
        let known = self
            .announced
            .get(&card.user)
            .copied()
            .max(self.changed.get(&card.user).map(|c| c.rev))
            .unwrap_or(0);
        if card.rev > known {
            self.changed.insert(card.user.clone(), card);
        }
    }
}

impl Server {
    pub(super) fn set_profile(
        &mut self,
        conn: ConnId,
        user: UserId,
        display_name: String,
        signature: String,
    ) {
        let kind = RequestKind::SetProfile;
        let (Ok(display_name), Ok(signature)) = (
            profile::display_name(&display_name),
            profile::signature(&signature),
        ) else {
            return self.error(conn, kind, ErrorCode::InvalidProfile, None);
        };
        let change = ProfileChange::Text {
            display_name,
            signature,
        };
        self.change_profile(conn, user, kind, change);
    }

    pub(super) fn set_avatar(&mut self, conn: ConnId, user: UserId, image: Option<Vec<u8>>) {
        let kind = RequestKind::SetAvatar;
        let avatar = match image {
            None => None,
            Some(data) => match profile::check_avatar(&data) {
                Ok(format) => Some(NewAvatar {
                    hash: profile::avatar_hash(&data),
                    image: AvatarImage {
                        mime: format.mime().to_string(),
                        data,
                    },
                }),
                Err(ImageError::TooLarge) => {
                    return self.error(conn, kind, ErrorCode::TooLarge, None);
                }
                Err(_) => return self.error(conn, kind, ErrorCode::InvalidImage, None),
            },
        };
        self.change_profile(conn, user, kind, ProfileChange::Avatar(avatar));
    }

    fn change_profile(
        &mut self,
        conn: ConnId,
        user: UserId,
        kind: RequestKind,
        change: ProfileChange,
    ) {
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, kind, ErrorCode::Busy, None);
        }
        self.request(
            conn,
            StorageOp::SetProfile { user, change },
            Pending::SetProfile { conn, kind },
        );
    }

    /// Storage has the change: the setter gets the card, everyone who sees the user gets it
    /// at the drain (the user's other sessions included), other nodes over the bus.
    pub(super) fn profile_set(
        &mut self,
        conn: ConnId,
        kind: RequestKind,
        r: Result<ProfileCard, StorageError>,
    ) {
        match r {
            Ok(card) => {
                self.send(
                    conn,
                    &ServerMsg::Profile {
                        card: card.clone(),
                        avatar: None,
                    },
                );
                self.publish_profile(&card);
                self.profiles.offer(card);
            }
            Err(e) if self.conns.contains_key(&conn) => {
                self.error(conn, kind, storage_code(e), None)
            }
            Err(_) => {}
        }
    }

    pub(super) fn get_profile(&mut self, conn: ConnId, me: UserId, user: UserId, avatar: bool) {
        let kind = RequestKind::GetProfile;
        let Some(u) = self.users.get(&me) else {
            return;
        };
        if !self.users.contains_key(&user) {
            return self.error(conn, kind, ErrorCode::NoSuchUser, None);
        }
        // Readable by whoever can see the user: everyone, or under scope `Contacts` the users
        // who have them as a contact (and the user itself).
        if self.cfg.scope == WatchScope::Contacts && user != me && !u.contacts.contains(&user) {
            return self.error(conn, kind, ErrorCode::Forbidden, None);
        }
        if !self.has_room(conn, 1, 0) {
            return self.error(conn, kind, ErrorCode::Busy, None);
        }
        self.request(
            conn,
            StorageOp::LoadProfile { user, avatar },
            Pending::GetProfile { conn },
        );
    }

    pub(super) fn profile_loaded(
        &mut self,
        conn: ConnId,
        r: Result<(ProfileCard, Option<AvatarImage>), StorageError>,
    ) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        match r {
            Ok((card, avatar)) => self.send(conn, &ServerMsg::Profile { card, avatar }),
            Err(e) => self.error(conn, RequestKind::GetProfile, storage_code(e), None),
        }
    }

    /// A device session has just logged in and been sent its presence snapshot. A session of
    /// version 2 reads the cards of everyone that snapshot lists (and its own) before its
    /// mailbox: the login's storage place passes to this read, and from it to the mailbox's.
    pub(super) fn read_login_profiles(&mut self, conn: ConnId, user: UserId) {
        if !self.conns.get(&conn).is_some_and(|c| c.speaks(PROFILES)) {
            return self.read_mailbox(conn, user, 0, None);
        }
        let users = self.seen_by(&user);
        self.request(
            conn,
            StorageOp::LoadProfiles { users },
            Pending::LoginProfiles { conn, user },
        );
    }

    /// The users whose cards `user`'s sessions hold: everyone (`None`), or under scope
    /// `Contacts` the user's contacts and the user itself.
    fn seen_by(&self, user: &UserId) -> Option<Vec<UserId>> {
        match self.cfg.scope {
            WatchScope::Everyone => None,
            WatchScope::Contacts => Some(
                self.users
                    .get(user)
                    .into_iter()
                    .flat_map(|u| u.contacts.iter().cloned())
                    .chain([user.clone()])
                    .collect(),
            ),
        }
    }

    /// Marks `user`'s version-2 sessions as missing cards: each reads them at its next frame.
    fn owe_profiles(&mut self, user: &UserId) {
        let conns: Vec<ConnId> = self
            .users
            .get(user)
            .map(|u| u.sessions.iter().copied().collect())
            .unwrap_or_default();
        for conn in conns {
            if let Some(c) = self.conns.get_mut(&conn)
                && c.speaks(PROFILES)
                && let Phase::Session(s) = &mut c.phase
            {
                s.profiles_owed = true;
            }
        }
    }

    /// A session that missed cards reads every card it should hold again (one request,
    /// answered with a `ProfileDiff` to each of the user's sessions: cards never replace
    /// newer ones, so a card a session already holds costs nothing but bytes).
    pub(super) fn retry_profiles(&mut self, conn: ConnId) {
        let owed = matches!(
            self.conns.get(&conn).map(|c| &c.phase),
            Some(Phase::Session(s)) if s.profiles_owed
        );
        if !owed || !self.has_room(conn, 1, 0) {
            return;
        }
        let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase) else {
            return;
        };
        s.profiles_owed = false;
        let user = s.user.clone();
        let users = self.seen_by(&user);
        self.request(
            conn,
            StorageOp::LoadProfiles { users },
            Pending::IntroducedProfiles { user },
        );
    }

    pub(super) fn login_profiles_loaded(
        &mut self,
        conn: ConnId,
        user: UserId,
        r: Result<Vec<ProfileCard>, StorageError>,
    ) {
        let ours = self
            .conns
            .get(&conn)
            .is_some_and(|c| matches!(&c.phase, Phase::Session(s) if s.user == user));
        if !ours {
            return;
        }
        // A failed read sends no snapshot now: the mailbox matters more than names, and the
        // cards are read again at the session's next frame (`retry_profiles`).
        // No cards, no frame: a login without profiles around looks as it did in version 1.
        if r.is_err()
            && let Some(Phase::Session(s)) = self.conns.get_mut(&conn).map(|c| &mut c.phase)
        {
            s.profiles_owed = true;
        }
        if let Ok(cards) = r {
            let mut chunks = cards.chunks(MAX_PROFILE_CARDS).peekable();
            while let Some(chunk) = chunks.next() {
                let more = chunks.peek().is_some();
                let cards = chunk.to_vec();
                self.send(conn, &ServerMsg::ProfileSnapshot { cards, more });
            }
        }
        self.read_mailbox(conn, user, 0, None);
    }

    /// Contacts scope: `user` has just added `added`; its version-2 sessions get their
    /// cards in a diff. Without room in the work budget they are owed, and read at each
    /// session's next frame.
    pub(super) fn introduce_profiles(&mut self, conn: ConnId, user: UserId, added: &[UserId]) {
        let speaks = self.users.get(&user).is_some_and(|u| {
            u.sessions
                .iter()
                .any(|s| self.conns.get(s).is_some_and(|c| c.speaks(PROFILES)))
        });
        if added.is_empty() || !speaks {
            return;
        }
        if !self.has_room(conn, 1, 0) {
            return self.owe_profiles(&user);
        }
        self.request(
            conn,
            StorageOp::LoadProfiles {
                users: Some(added.to_vec()),
            },
            Pending::IntroducedProfiles { user },
        );
    }

    pub(super) fn introduced_profiles_loaded(
        &mut self,
        user: UserId,
        r: Result<Vec<ProfileCard>, StorageError>,
    ) {
        let Ok(cards) = r else {
            return self.owe_profiles(&user);
        };
        let Some(u) = self.users.get(&user) else {
            return;
        };
        let conns: Vec<ConnId> = u.sessions.iter().copied().collect();
        for chunk in cards.chunks(MAX_PROFILE_CARDS) {
            let msg = ServerMsg::ProfileDiff {
                cards: chunk.to_vec(),
            };
            for &conn in &conns {
                self.send(conn, &msg);
            }
        }
    }

    /// Announces every card changed since the last drain: one `ProfileDiff` per version-2
    /// device session that sees the user (the user's own sessions included).
    pub(super) fn flush_profiles(&mut self) {
        if self.profiles.changed.is_empty() {
            return;
        }
        let changed = std::mem::take(&mut self.profiles.changed);
        for card in changed.values() {
            self.profiles.announced.insert(card.user.clone(), card.rev);
        }
        let speaks = |conn: &ConnId| self.conns.get(conn).is_some_and(|c| c.speaks(PROFILES));
        let mut batches: BTreeMap<ConnId, Vec<&ProfileCard>> = BTreeMap::new();
        match self.cfg.scope {
            WatchScope::Everyone => {
                // Every device session sees every user: one encoding serves them all.
                let cards: Vec<ProfileCard> = changed.into_values().collect();
                let conns: Vec<ConnId> = self
                    .users
                    .values()
                    .flat_map(|u| u.sessions.iter().copied())
                    .filter(speaks)
                    .collect();
                for chunk in cards.chunks(MAX_PROFILE_CARDS) {
                    let payload = encode(&ServerMsg::ProfileDiff {
                        cards: chunk.to_vec(),
                    });
                    for &conn in &conns {
                        self.out.push_back(Output::Send {
                            conn,
                            payload: payload.clone(),
                        });
                    }
                }
                return;
            }
            WatchScope::Contacts => {
                for card in changed.values() {
                    let watchers = self.presence.watchers_of(&card.user);
                    for w in watchers.chain([&card.user]) {
                        for conn in self
                            .users
                            .get(w)
                            .into_iter()
                            .flat_map(|u| u.sessions.iter())
                        {
                            if speaks(conn) {
                                batches.entry(*conn).or_default().push(card);
                            }
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (conn, cards) in batches {
            for chunk in cards.chunks(MAX_PROFILE_CARDS) {
                let cards = chunk.iter().map(|&c| c.clone()).collect();
                out.push(Output::Send {
                    conn,
                    payload: encode(&ServerMsg::ProfileDiff { cards }),
                });
            }
        }
        self.out.extend(out);
    }
}

fn storage_code(e: StorageError) -> ErrorCode {
    match e {
        StorageError::NoSuchUser => ErrorCode::NoSuchUser,
        _ => ErrorCode::StorageFailed,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ServerConfig;
    use crate::message::{
        ClientMsg, CloseReason, ErrorCode, ProfileCard, RequestKind, ServerMsg, Status, WatchScope,
    };
    use crate::profile::{avatar_hash, images};
    use crate::testkit::Rig;
    use crate::testkit::rig::user;

    fn set(name: &str, sign: &str) -> ClientMsg {
        ClientMsg::SetProfile {
            display_name: name.into(),
            signature: sign.into(),
        }
    }

    fn refused(request: RequestKind, code: ErrorCode) -> ServerMsg {
        ServerMsg::Error {
            request,
            code,
            id: None,
        }
    }

    fn is_v2(m: &ServerMsg) -> bool {
        m.since() >= 2
    }

    /// The cards in the `ProfileDiff`s of `msgs`, in order.
    fn diffed(msgs: &[ServerMsg]) -> Vec<ProfileCard> {
        msgs.iter()
            .filter_map(|m| match m {
                ServerMsg::ProfileDiff { cards } => Some(cards.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn a_login_snapshot_carries_the_cards_a_list_needs_and_a_v1_login_is_unchanged() {
        let mut rig = Rig::new(ServerConfig::default(), &["alice", "bob", "carol"]);
        let a = rig.login("alice", Status::Online);
        rig.take(a);
        rig.frame(a, set("王小明 🐼", "在开会"));
        let answer = rig.take(a);
        let Some(ServerMsg::Profile { card, avatar: None }) = answer.first() else {
            panic!("no Profile answer: {answer:?}");
        };
        assert_eq!((card.rev, card.display_name.as_str()), (1, "王小明 🐼"));
        let card = card.clone();

        let b = rig.login("bob", Status::Online);
        let got = rig.take(b);
        let snapshot = got
            .iter()
            .position(|m| matches!(m, ServerMsg::PresenceSnapshot { .. }))
            .expect("a presence snapshot");
        assert_eq!(
            got[snapshot + 1],
            ServerMsg::ProfileSnapshot {
                cards: vec![card.clone()],
                more: false
            },
            "{got:?}"
        );
        // A version-1 client logs in exactly as before: no frame it could not decode.
        let old = rig.login_speaking("carol", Status::Online, 1);
        let got = rig.take(old);
        assert!(!got.iter().any(is_v2), "{got:?}");
        assert!(
            matches!(
                &got[..],
                [
                    ServerMsg::Welcome { version: 1, .. },
                    ServerMsg::LoginOk { .. },
                    ServerMsg::PresenceSnapshot { .. },
                    ServerMsg::OfflineDone { count: 0 },
                ]
            ),
            "{got:?}"
        );
        // A change later reaches the version-2 watcher only.
        rig.take(a);
        rig.take(b);
        rig.frame(a, set("Alice Wang", ""));
        assert_eq!(diffed(&rig.take(b)).len(), 1);
        assert!(rig.take(old).is_empty());
        // And a version-1 client asking for a profile is closed as its server would.
        rig.frame(old, set("x", ""));
        assert_eq!(rig.closed[&old], CloseReason::Malformed);
    }

    #[test]
    fn cards_a_login_could_not_read_come_after_the_sessions_next_frame() {
        use crate::storage::{StorageError, StorageResult};
        let mut rig = Rig::new(ServerConfig::default(), &["alice", "bob"]);
        let a = rig.login("alice", Status::Online);
        rig.frame(a, set("Alice Wang", ""));
        let card = match rig
            .take(a)
            .into_iter()
            .find(|m| matches!(m, ServerMsg::Profile { .. }))
        {
            Some(ServerMsg::Profile { card, .. }) => card,
            other => panic!("no Profile answer: {other:?}"),
        };
        rig.deferred = Some(Vec::new());
        let b = rig.login("bob", Status::Online);
        rig.complete(0); // authenticate
        // The login's read of the cards fails.
        let waiting = rig.deferred.as_mut().expect("deferred");
        assert!(matches!(waiting[0].1, StorageResult::ProfilesLoaded(_)));
        waiting[0].1 = StorageResult::ProfilesLoaded(Err(StorageError::Failed("disk".into())));
        while rig.deferred.as_ref().is_some_and(|w| !w.is_empty()) {
            rig.complete(0);
        }
        rig.deferred = None;
        let got = rig.take(b);
        assert!(
            !got.iter()
                .any(|m| matches!(m, ServerMsg::ProfileSnapshot { .. })),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMsg::OfflineDone { .. })),
            "the mail goes on"
        );
        rig.frame(b, ClientMsg::Ping { nonce: 1 });
        assert_eq!(diffed(&rig.take(b)), [card]);
        rig.frame(b, ClientMsg::Ping { nonce: 2 });
        assert!(diffed(&rig.take(b)).is_empty(), "read again once");
    }

    #[test]
    fn changes_between_drains_go_out_as_one_diff_with_the_newest_card_and_no_presence() {
        let mut rig = Rig::new(ServerConfig::default(), &["alice", "bob"]);
        let a = rig.login("alice", Status::Online);
        let b = rig.login("bob", Status::Online);
        rig.take(a);
        rig.take(b);
        rig.deferred = Some(Vec::new());
        rig.frame(a, set("one", ""));
        rig.frame(a, set("two", ""));
        rig.frame(
            a,
            ClientMsg::SetAvatar {
                image: Some(images::png(32, 32)),
            },
        );
        // All three committed before the host drains the server: one diff per watcher.
        for (id, result) in rig.deferred.take().expect("deferred") {
            rig.server.handle_storage(rig.now, id, result);
        }
        rig.pump();
        let got = rig.take(b);
        assert_eq!(got.len(), 1, "one frame, no presence diff: {got:?}");
        let cards = diffed(&got);
        assert_eq!(cards.len(), 1);
        assert_eq!(cards[0].rev, 3);
        assert_eq!(cards[0].display_name, "two");
        assert_eq!(cards[0].avatar, Some(avatar_hash(&images::png(32, 32))));
        // The setter's session got its three answers and the same diff.
        let mine = rig.take(a);
        assert_eq!(
            mine.iter()
                .filter(|m| matches!(m, ServerMsg::Profile { .. }))
                .count(),
            3
        );
        assert_eq!(diffed(&mine), cards);
    }

    #[test]
    fn under_scope_contacts_only_who_sees_the_user_reads_or_hears_the_profile() {
        let cfg = ServerConfig {
            scope: WatchScope::Contacts,
            ..ServerConfig::default()
        };
        let mut rig = Rig::new(cfg, &["alice", "bob", "eve"]);
        let a = rig.login("alice", Status::Online);
        let b = rig.login("bob", Status::Online);
        let e = rig.login("eve", Status::Online);
        rig.frame(
            b,
            ClientMsg::AddContact {
                user: user("alice"),
            },
        );
        let image = images::jpeg(40, 40);
        rig.frame(
            a,
            ClientMsg::SetAvatar {
                image: Some(image.clone()),
            },
        );
        rig.take(a);
        assert_eq!(diffed(&rig.take(b)).len(), 1);
        assert!(diffed(&rig.take(e)).is_empty());
        rig.frame(
            e,
            ClientMsg::GetProfile {
                user: user("alice"),
                avatar: true,
            },
        );
        assert_eq!(
            rig.take(e),
            vec![refused(RequestKind::GetProfile, ErrorCode::Forbidden)]
        );
        rig.frame(
            b,
            ClientMsg::GetProfile {
                user: user("alice"),
                avatar: true,
            },
        );
        let got = rig.take(b);
        let [
            ServerMsg::Profile {
                card,
                avatar: Some(img),
            },
        ] = &got[..]
        else {
            panic!("{got:?}");
        };
        assert_eq!(card.avatar, Some(avatar_hash(&image)));
        assert_eq!((img.mime.as_str(), &img.data), ("image/jpeg", &image));
        // A contact added later comes with its card.
        rig.frame(a, set("Alice", ""));
        rig.frame(
            e,
            ClientMsg::AddContact {
                user: user("alice"),
            },
        );
        let cards = diffed(&rig.take(e));
        assert_eq!(cards.len(), 1, "{cards:?}");
        assert_eq!(cards[0].display_name, "Alice");
    }

    #[test]
    fn hostile_profiles_are_refused_and_nothing_is_stored() {
        let mut rig = Rig::new(ServerConfig::default(), &["alice", "bob"]);
        let a = rig.login("alice", Status::Online);
        let b = rig.login("bob", Status::Online);
        rig.take(a);
        rig.take(b);
        let invalid = refused(RequestKind::SetProfile, ErrorCode::InvalidProfile);
        for (name, sign) in [
            ("alice\u{202E}txt.exe", ""),
            ("Alice", "line one\nline two"),
            (&*"字".repeat(65), ""),
        ] {
            rig.frame(a, set(name, sign));
            assert_eq!(rig.take(a), vec![invalid.clone()], "{name:?} {sign:?}");
        }
        let avatar = |image: Vec<u8>| ClientMsg::SetAvatar { image: Some(image) };
        rig.frame(a, avatar(images::png_claiming(100_000, 100_000)));
        rig.frame(a, avatar(b"<svg onload=alert(1)>".to_vec()));
        rig.frame(a, avatar(vec![0x89; crate::profile::MAX_AVATAR_BYTES + 1]));
        assert_eq!(
            rig.take(a),
            vec![
                refused(RequestKind::SetAvatar, ErrorCode::InvalidImage),
                refused(RequestKind::SetAvatar, ErrorCode::InvalidImage),
                refused(RequestKind::SetAvatar, ErrorCode::TooLarge),
            ]
        );
        assert!(rig.take(b).is_empty(), "no watcher heard of any of it");
        rig.frame(
            b,
            ClientMsg::GetProfile {
                user: user("alice"),
                avatar: true,
            },
        );
        assert_eq!(
            rig.take(b),
            vec![ServerMsg::Profile {
                card: ProfileCard::blank(user("alice")),
                avatar: None
            }]
        );
    }
}
