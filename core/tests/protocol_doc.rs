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
