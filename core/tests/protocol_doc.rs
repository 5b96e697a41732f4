//! PROTOCOL.md is the wire contract: it must describe every message the code defines, at the
//! index the code encodes it with, and nothing the code lacks. The variant lists come from
//! the types themselves (through serde), not from a copy that could drift.

use breeze_core::message::{
    ClientMsg, CloseReason, Credential, ErrorCode, Presence, RequestKind, ServerMsg, Status,
    WatchScope,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A deserializer that only records the variant names serde hands to `deserialize_enum`.
struct VariantNames(Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for &mut VariantNames {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only enums"))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(variants);
        Err(de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

fn variants<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = VariantNames(None);
    let _ = T::deserialize(&mut names);
    names.0.expect("an enum")
}

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md"))
        .expect("PROTOCOL.md at the repository root")
}

/// The `### N \`Name...` headings of one section, in order.
fn headings(doc: &str, section: &str) -> Vec<(usize, String)> {
    let start = doc
        .find(section)
        .unwrap_or_else(|| panic!("section {section:?}"));
    let body = &doc[start + section.len()..];
    let end = body.find("\n## ").unwrap_or(body.len());
    body[..end]
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .filter_map(|l| {
            let (index, rest) = l.split_once(' ')?;
            let name: String = rest
                .trim_start_matches('`')
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            Some((index.parse().ok()?, name))
        })
        .collect()
}

/// The `| N | \`Name\` |` rows of the table that follows `anchor`.
fn table_rows(doc: &str, anchor: &str) -> Vec<(usize, String)> {
    let start = doc.find(anchor).unwrap_or_else(|| panic!("{anchor:?}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let index = cells.get(1)?.parse().ok()?;
            Some((index, cells.get(2)?.trim_matches('`').to_string()))
        })
        .collect()
}

fn indexed(names: &[&str]) -> Vec<(usize, String)> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (i, n.to_string()))
        .collect()
}

#[test]
fn every_client_message_is_documented_at_its_wire_index_and_no_other() {
    let doc = doc();
    let documented = headings(&doc, "## 5. Client → server messages");
    assert_eq!(documented, indexed(variants::<ClientMsg>()));
}

#[test]
fn every_server_message_is_documented_at_its_wire_index_and_no_other() {
    let doc = doc();
    let documented = headings(&doc, "## 6. Server → client messages");
    assert_eq!(documented, indexed(variants::<ServerMsg>()));
}

#[test]
fn error_codes_and_close_reasons_match_their_tables() {
    let doc = doc();
    assert_eq!(
        table_rows(&doc, "| Idx | Code"),
        indexed(variants::<ErrorCode>())
    );
    assert_eq!(
        table_rows(&doc, "| Idx | Reason"),
        indexed(variants::<CloseReason>())
    );
}

#[test]
fn every_shared_enum_variant_is_named_in_the_contract() {
    let doc = doc();
    let all = [
        variants::<Status>(),
        variants::<Presence>(),
        variants::<WatchScope>(),
        variants::<Credential>(),
        variants::<RequestKind>(),
    ];
    for name in all.iter().flat_map(|v| v.iter()) {
        // In code style, as itself: `Away`, `Password(String)` — not as part of a longer word.
        let quoted = format!("`{name}");
        let named = doc.match_indices(&quoted).any(|(at, _)| {
            doc[at + quoted.len()..]
                .chars()
                .next()
                .is_some_and(|c| !c.is_alphanumeric())
        });
        assert!(named, "PROTOCOL.md never names `{name}`");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rows of the §2.4 table: the message as the table writes it, and its frame's bytes
/// with the table's grouping backticks removed.
fn vector_rows(doc: &str) -> Vec<(String, String)> {
    let start = doc.find("### 2.4 More test vectors").expect("§2.4");
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| Message"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let message = cells[1].trim_matches('`').to_string();
            let bytes = cells[2].replace("` `", " ").trim_matches('`').to_string();
            (message, bytes)
        })
        .collect()
}

/// §2.3 and §2.4 are what an implementer checks an encoder against first: each vector is
/// encoded here by the real `encode_frame`, and the document must show exactly these.
#[test]
fn the_documented_test_vectors_are_what_the_encoder_produces() {
    use breeze_core::codec::encode_frame;
    use breeze_core::ids::UserId;
    use breeze_core::message::{Attachment, Delivery, PresenceEntry};
    let user = |n: &str| UserId::new(n).expect("valid name");
    let vectors: Vec<(&str, bytes::Bytes)> = vec![
        (
            r#"ClientMsg::Hello { magic: *b"BRZE", version: 1, client: "cli/1" }"#,
            encode_frame(&ClientMsg::Hello {
                magic: *b"BRZE",
                version: 1,
                client: "cli/1".into(),
            }),
        ),
        (
            "ServerMsg::Welcome { version: 1, heartbeat_interval_ms: 10000, heartbeat_timeout_ms: 30000, max_frame: 1114112, max_attachment: 1048576, max_body: 16384, scope: Everyone, max_contacts: 1000, frame_rate: 2000, frame_burst: 4000 }",
            encode_frame(&ServerMsg::Welcome {
                version: 1,
                heartbeat_interval_ms: 10_000,
                heartbeat_timeout_ms: 30_000,
                max_frame: 1_114_112,
                max_attachment: 1_048_576,
                max_body: 16_384,
                scope: WatchScope::Everyone,
                max_contacts: 1000,
                frame_rate: 2000,
                frame_burst: 4000,
            }),
        ),
        (
            r#"ClientMsg::Login { user: "alice", credential: Password("hunter22"), status: Away }"#,
            encode_frame(&ClientMsg::Login {
                user: user("alice"),
                credential: Credential::Password("hunter22".into()),
                status: Status::Away,
            }),
        ),
        (
            r#"ClientMsg::Login { user: "bob", credential: Token([0xDE, 0xAD]), status: Invisible }"#,
            encode_frame(&ClientMsg::Login {
                user: user("bob"),
                credential: Credential::Token(vec![0xDE, 0xAD]),
                status: Status::Invisible,
            }),
        ),
        ("ClientMsg::Logout", encode_frame(&ClientMsg::Logout)),
        (
            r#"ClientMsg::Send { id: 1, to: "bob", body: "hi", attachment: None }"#,
            encode_frame(&ClientMsg::Send {
                id: 1,
                to: user("bob"),
                body: "hi".into(),
                attachment: None,
            }),
        ),
        (
            r#"ClientMsg::Send { id: 7, to: "bob", body: "", attachment: Some(Attachment { mime: "a/b", name: "f", data: [1, 2, 3] }) }"#,
            encode_frame(&ClientMsg::Send {
                id: 7,
                to: user("bob"),
                body: String::new(),
                attachment: Some(Attachment {
                    mime: "a/b".into(),
                    name: "f".into(),
                    data: vec![1, 2, 3],
                }),
            }),
        ),
        (
            "ClientMsg::Ack { seqs: [42, 43] }",
            encode_frame(&ClientMsg::Ack { seqs: vec![42, 43] }),
        ),
        (
            r#"ClientMsg::History { with: "bob", before: Some(1000), limit: 50 }"#,
            encode_frame(&ClientMsg::History {
                with: user("bob"),
                before: Some(1000),
                limit: 50,
            }),
        ),
        (
            "ServerMsg::Sent { id: 1, seq: 42 }",
            encode_frame(&ServerMsg::Sent { id: 1, seq: 42 }),
        ),
        (
            r#"ServerMsg::Deliver(Delivery { seq: 42, from: "alice", id: 1, body: "hi", attachment: None, sent_at_ms: 0 })"#,
            encode_frame(&ServerMsg::Deliver(Delivery {
                seq: 42,
                from: user("alice"),
                id: 1,
                body: "hi".into(),
                attachment: None,
                sent_at_ms: 0,
            })),
        ),
        (
            r#"ServerMsg::PresenceDiff { entries: [PresenceEntry { user: "bob", presence: Away }] }"#,
            encode_frame(&ServerMsg::PresenceDiff {
                entries: vec![PresenceEntry {
                    user: user("bob"),
                    presence: Presence::Away,
                }],
            }),
        ),
        (
            "ServerMsg::Error { request: Send, code: NoSuchUser, id: Some(1) }",
            encode_frame(&ServerMsg::Error {
                request: RequestKind::Send,
                code: ErrorCode::NoSuchUser,
                id: Some(1),
            }),
        ),
        (
            "ServerMsg::Bye { reason: FrameTooLarge }",
            encode_frame(&ServerMsg::Bye {
                reason: CloseReason::FrameTooLarge,
            }),
        ),
    ];
    let doc = doc();
    let expected: Vec<(String, String)> = vectors
        .iter()
        .map(|(m, frame)| (m.to_string(), hex(frame)))
        .collect();
    let documented = vector_rows(&doc);
    for (e, d) in expected.iter().zip(&documented) {
        assert_eq!(
            d, e,
            "a §2.4 row differs from the encoder (left: the document)"
        );
    }
    assert_eq!(
        documented.len(),
        expected.len(),
        "§2.4 rows vs vectors here"
    );

    // §2.3, the worked example.
    let ping = hex(&encode_frame(&ClientMsg::Ping { nonce: 300 }));
    let pong = hex(&encode_frame(&ServerMsg::Pong { nonce: 300 }));
    let worked = &doc[doc.find("### 2.3").expect("§2.3")..doc.find("### 2.4").expect("§2.4")];
    assert_eq!(ping, "00 00 00 03 0A AC 02");
    assert!(
        worked.contains(&format!("```\n{ping}\n```")),
        "§2.3 shows {ping}"
    );
    assert!(
        worked.contains(&format!("```\n{pong}\n```")),
        "§2.3 shows {pong}"
    );
}
