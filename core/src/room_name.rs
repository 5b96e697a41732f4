//! The rule for room names (SECURITY.md, "Rooms"): any script, stored normalised, bounded,
//! and free of characters that could make one name pass for another on a member's screen.

use unicode_normalization::UnicodeNormalization;

/// Longest room name, in characters after normalisation: a line's heading, not a paragraph.
pub const MAX_ROOM_NAME_CHARS: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RoomNameError {
    #[error("a room name cannot be empty")]
    Empty,
    #[error("a room name is at most {MAX_ROOM_NAME_CHARS} characters")]
    TooLong,
    /// Control characters break the terminal client's lines; bidi overrides and isolates
    /// reorder what follows them, so "evil\u{202E}moc.knab" would show as another name.
    #[error("a room name cannot contain control or bidi-override characters")]
    ForbiddenCharacter,
}

/// The stored form of a requested room name: NFC-normalised (so "é" typed two ways is one
/// name) and trimmed, or why it is refused.
pub fn normalize_room_name(name: &str) -> Result<String, RoomNameError> {
    let name: String = name.trim().nfc().collect();
    if name.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if name.chars().count() > MAX_ROOM_NAME_CHARS {
        return Err(RoomNameError::TooLong);
    }
    if name.chars().any(forbidden) {
        return Err(RoomNameError::ForbiddenCharacter);
    }
    Ok(name)
}

fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // LRM, RLM, ALM; embeddings and overrides; isolates.
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            // Line and paragraph separators end a line like a newline does.
            | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_script_are_kept_normalised() {
        assert_eq!(normalize_room_name("  家人  ").unwrap(), "家人");
        assert_eq!(normalize_room_name("🎉 team").unwrap(), "🎉 team");
        // "é" as e + combining acute becomes the one precomposed character.
        assert_eq!(
            normalize_room_name("caf\u{65}\u{301}").unwrap(),
            "caf\u{e9}"
        );
        let longest = "字".repeat(MAX_ROOM_NAME_CHARS);
        assert_eq!(normalize_room_name(&longest).unwrap(), longest);
    }

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(normalize_room_name("   "), Err(RoomNameError::Empty));
        let long = "字".repeat(MAX_ROOM_NAME_CHARS + 1);
        assert_eq!(normalize_room_name(&long), Err(RoomNameError::TooLong));
        for bad in [
            "a\u{202E}b",
            "a\u{2066}b",
            "a\nb",
            "a\u{1b}[2Jb",
            "a\u{200F}b",
            "a\u{2028}b",
        ] {
            assert_eq!(
                normalize_room_name(bad),
                Err(RoomNameError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }
}
