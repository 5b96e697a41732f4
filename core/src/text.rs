//! Names people type and others read (contact groups, room names, display names, signatures): the one
//! check every such name passes before it is stored. A pure function of its input, so the
//! server core, the clients and the fuzzers share one definition of "acceptable".
//!
//! Text is checked after NFC normalisation (a name typed on two keyboards compares equal, so
//! two groups cannot differ only in how "é" was composed) and refuses what can disguise a name
//! rather than show one: control characters (a newline would forge a second line in a
//! terminal) and bidirectional overrides and isolates (a U+202E before `txt.exe` shows it as
//! `exe.txt`). Any script is fine: Chinese, emoji with their zero-width joiners.

use unicode_normalization::UnicodeNormalization;

/// Longest contact group name, in Unicode scalar values after normalisation (32 CJK
/// characters are 96 bytes of UTF-8): a group is a heading in a list, not a sentence.
pub const MAX_GROUP_NAME_CHARS: usize = 32;

/// Longest room name, in characters after normalisation: a heading other members read, not a
/// paragraph.
pub const MAX_ROOM_NAME_CHARS: usize = 64;

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("empty")]
    Empty,
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains a line break or another control character")]
    Control,
    #[error("contains a bidirectional override or isolate character")]
    Bidi,
    /// A file name that is a path or a path step (`/`, `\\`, `.`, `..`): a receiver that
    /// saved it as given could write outside its download folder.
    #[error("a file name may not be a path")]
    Path,
}

/// A contact group's name as stored: NFC, trimmed, non-empty, checked.
pub fn group_name(raw: &str) -> Result<String, TextError> {
    let name = one_line(raw, MAX_GROUP_NAME_CHARS)?;
    if name.is_empty() {
        return Err(TextError::Empty);
    }
    Ok(name)
}

/// A room's name as stored: NFC, trimmed, non-empty, checked like every other name.
pub fn room_name(raw: &str) -> Result<String, TextError> {
    let name = one_line(raw, MAX_ROOM_NAME_CHARS)?;
    if name.is_empty() {
        return Err(TextError::Empty);
    }
    Ok(name)
}

/// A file name offered in a transfer (`OfferFile::name`): one line of at most
/// `MAX_TRANSFER_NAME` characters, non-empty, and no path: the receiver saves under it.
pub fn file_name(raw: &str) -> Result<String, TextError> {
    let name = one_line(raw, crate::message::MAX_TRANSFER_NAME)?;
    if name.is_empty() {
        return Err(TextError::Empty);
    }
    if name == "." || name == ".." || name.contains(['/', '\\']) {
        return Err(TextError::Path);
    }
    Ok(name)
}

/// One line of text of at most `max` characters: NFC, trimmed of white space, free of control
/// and bidirectional control characters. May be empty.
pub fn one_line(raw: &str, max: usize) -> Result<String, TextError> {
    // Checked on the input too, before normalising it: a megabyte of text costs a scan, not
    // a normalisation (NFC never makes a string more than 3 times longer, and combining
    // sequences shrink it, so 4× is a bound no acceptable input reaches).
    if raw.chars().count() > max * 4 {
        return Err(TextError::TooLong { max });
    }
    let text: String = raw.nfc().collect();
    let text = text.trim();
    for c in text.chars() {
        if is_bidi_control(c) {
            return Err(TextError::Bidi);
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}') {
            return Err(TextError::Control);
        }
    }
    if text.chars().count() > max {
        return Err(TextError::TooLong { max });
    }
    Ok(text.to_string())
}

/// Characters that reorder the text around them (Unicode's Bidi_Control property).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_script_is_a_name_once_normalised_and_trimmed() {
        assert_eq!(group_name("  家人 ").as_deref(), Ok("家人"));
        assert_eq!(group_name("Colleagues").as_deref(), Ok("Colleagues"));
        // A family emoji is one picture made of four code points and three joiners.
        let family = "👨\u{200D}👩\u{200D}👧\u{200D}👦";
        assert_eq!(group_name(family).as_deref(), Ok(family));
        // "é" typed as e + combining acute is stored as the one precomposed character.
        assert_eq!(group_name("Caf\u{65}\u{301}").as_deref(), Ok("Caf\u{e9}"));
    }

    #[test]
    fn disguises_are_refused() {
        assert_eq!(group_name("work\u{202E}txt.exe"), Err(TextError::Bidi));
        assert_eq!(group_name("a\u{2066}b"), Err(TextError::Bidi));
        assert_eq!(group_name("two\nlines"), Err(TextError::Control));
        assert_eq!(group_name("bell\u{7}"), Err(TextError::Control));
        assert_eq!(group_name("   "), Err(TextError::Empty));
        assert_eq!(group_name(""), Err(TextError::Empty));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let longest = "家".repeat(MAX_GROUP_NAME_CHARS);
        assert_eq!(group_name(&longest).as_deref(), Ok(longest.as_str()));
        let too_long = "家".repeat(MAX_GROUP_NAME_CHARS + 1);
        let max = MAX_GROUP_NAME_CHARS;
        assert_eq!(group_name(&too_long), Err(TextError::TooLong { max }));
        // A megabyte is refused by the cheap count, before any normalisation.
        assert_eq!(
            group_name(&"x".repeat(1 << 20)),
            Err(TextError::TooLong { max })
        );
    }

    #[test]
    fn a_room_name_is_one_checked_line() {
        assert_eq!(room_name("  家人 🎉 ").as_deref(), Ok("家人 🎉"));
        assert_eq!(room_name("caf\u{65}\u{301}").as_deref(), Ok("caf\u{e9}"));
        let longest = "字".repeat(MAX_ROOM_NAME_CHARS);
        assert_eq!(room_name(&longest), Ok(longest.clone()));
        assert_eq!(
            room_name(&format!("{longest}字")),
            Err(TextError::TooLong {
                max: MAX_ROOM_NAME_CHARS
            })
        );
        assert_eq!(room_name("   "), Err(TextError::Empty));
        assert_eq!(room_name("evil\u{202E}moc"), Err(TextError::Bidi));
        assert_eq!(room_name("a\u{2028}b"), Err(TextError::Control));
    }
}
