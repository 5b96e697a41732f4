//! What a user shows of themselves (PROTOCOL.md §15): the checks a display name, a signature
//! and an avatar image pass before the server stores them. Pure functions of their input, so
//! the server core, the clients and the fuzzers share one definition of "acceptable".
//!
//! Text is checked after NFC normalisation (a name typed on two keyboards compares equal) and
//! refuses what can disguise a name rather than show one: control characters (a newline would
//! forge a second line in a terminal) and bidirectional overrides and isolates (U+202E, right-to-left
//! override, makes `alice` + U+202E + `txt.exe` show as `aliceexe.txt`). Any script is fine: Chinese, emoji with
//! their zero-width joiners.
//!
//! An avatar is decoded whole before it is stored, so every client can draw what it is sent;
//! its dimensions are read from the header first, so a decompression bomb (a few kilobytes
//! of PNG that inflate to gigabytes of pixels) is refused before one pixel is inflated.

use sha2::{Digest, Sha256};

/// Longest display name, in Unicode scalar values after normalisation (64 CJK characters
/// are 192 bytes of UTF-8).
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;
/// Longest signature, in Unicode scalar values after normalisation: one line, like a status
/// message.
pub const MAX_SIGNATURE_CHARS: usize = 140;
/// Largest avatar image, in bytes as sent. A 256×256 photo is 20-60 KiB as JPEG or WebP;
/// the cap leaves room for a lossless PNG and keeps a `SetAvatar` well inside one frame.
pub const MAX_AVATAR_BYTES: usize = 256 * 1024;
/// Widest and tallest avatar, in pixels: decoded, one is at most 1024 × 1024 × 4 bytes
/// (4 MiB), whatever its compressed size.
pub const MAX_AVATAR_SIDE: u32 = 1024;

/// Why a display name or signature was refused: the checks every name people type passes
/// (`crate::text`).
pub use crate::text::TextError;
use crate::text::one_line;

/// Why an avatar image was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("larger than {MAX_AVATAR_BYTES} bytes")]
    TooLarge,
    #[error("not a PNG, JPEG or WebP image")]
    UnknownFormat,
    #[error("wider or taller than {MAX_AVATAR_SIDE} pixels, or empty")]
    BadDimensions,
    #[error("the image could not be decoded")]
    Corrupt,
}

/// The image formats an avatar may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
    WebP,
}

impl ImageFormat {
    /// The media type a client labels the image with.
    pub fn mime(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::WebP => "image/webp",
        }
    }

    /// The format the first bytes name, if any of the three.
    pub fn sniff(data: &[u8]) -> Option<Self> {
        if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(ImageFormat::Jpeg)
        } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
            Some(ImageFormat::WebP)
        } else {
            None
        }
    }
}

/// A display name as stored: NFC, trimmed, checked. Empty means "none" (clients show the
/// user id alone).
pub fn display_name(raw: &str) -> Result<String, TextError> {
    one_line(raw, MAX_DISPLAY_NAME_CHARS)
}

/// A signature as stored: NFC, trimmed, checked. Empty means none.
pub fn signature(raw: &str) -> Result<String, TextError> {
    one_line(raw, MAX_SIGNATURE_CHARS)
}

/// How clients show a user: `Alice Wang (alice)` with a display name (names are not unique,
/// the id is), else the id alone.
pub fn label(user: &crate::ids::UserId, card: Option<&crate::message::ProfileCard>) -> String {
    match card {
        Some(card) if !card.display_name.is_empty() => format!("{} ({user})", card.display_name),
        _ => user.to_string(),
    }
}

/// The content hash an avatar is named by: clients cache images under it.
pub fn avatar_hash(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Checks an avatar image: size first, then the format by its magic bytes, then the
/// dimensions from the header, and only then a whole decode into a buffer that the
/// dimensions bound.
pub fn check_avatar(data: &[u8]) -> Result<ImageFormat, ImageError> {
    if data.len() > MAX_AVATAR_BYTES {
        return Err(ImageError::TooLarge);
    }
    let format = ImageFormat::sniff(data).ok_or(ImageError::UnknownFormat)?;
    let max_pixels_bytes = (MAX_AVATAR_SIDE as usize).pow(2) * 8;
    let fits = |w: u32, h: u32| w > 0 && h > 0 && w <= MAX_AVATAR_SIDE && h <= MAX_AVATAR_SIDE;
    match format {
        ImageFormat::Png => {
            let limits = png::Limits {
                bytes: max_pixels_bytes,
            };
            let decoder = png::Decoder::new_with_limits(data, limits);
            let mut reader = decoder.read_info().map_err(|_| ImageError::Corrupt)?;
            let (w, h) = reader.info().size();
            if !fits(w, h) {
                return Err(ImageError::BadDimensions);
            }
            let mut buf = vec![0; reader.output_buffer_size()];
            reader
                .next_frame(&mut buf)
                .map_err(|_| ImageError::Corrupt)?;
        }
        ImageFormat::Jpeg => {
            let mut decoder = jpeg_decoder::Decoder::new(data);
            decoder.set_max_decoding_buffer_size(max_pixels_bytes);
            decoder.read_info().map_err(|_| ImageError::Corrupt)?;
            let info = decoder.info().ok_or(ImageError::Corrupt)?;
            if !fits(u32::from(info.width), u32::from(info.height)) {
                return Err(ImageError::BadDimensions);
            }
            decoder.decode().map_err(|_| ImageError::Corrupt)?;
        }
        ImageFormat::WebP => {
            let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(data))
                .map_err(|_| ImageError::Corrupt)?;
            let (w, h) = decoder.dimensions();
            if !fits(w, h) {
                return Err(ImageError::BadDimensions);
            }
            decoder.set_memory_limit(max_pixels_bytes);
            let size = decoder.output_buffer_size().ok_or(ImageError::Corrupt)?;
            let mut buf = vec![0; size];
            decoder
                .read_image(&mut buf)
                .map_err(|_| ImageError::Corrupt)?;
        }
    }
    Ok(format)
}

/// Test images, encoded with each format's own encoder (shared with the server's tests).
#[cfg(test)]
pub(crate) mod images {
    /// A `w`×`h` RGBA PNG of one colour.
    pub(crate) fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("png header");
        let pixels = vec![0x80u8; (w * h * 4) as usize];
        writer.write_image_data(&pixels).expect("png data");
        writer.finish().expect("png end");
        out
    }

    pub(crate) fn jpeg(w: u16, h: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut out, 80);
        let pixels = vec![0x40u8; usize::from(w) * usize::from(h) * 3];
        encoder
            .encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
            .expect("jpeg");
        out
    }

    pub(crate) fn webp(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let pixels = vec![0xC0u8; (w * h * 4) as usize];
        image_webp::WebPEncoder::new(&mut out)
            .encode(&pixels, w, h, image_webp::ColorType::Rgba8)
            .expect("webp");
        out
    }

    /// A decompression bomb: a real 1×1 PNG whose header then claims `w`×`h` pixels (the
    /// header's CRC fixed up, so only the dimensions give it away). A decoder that trusted
    /// it would allocate `w`×`h`×4 bytes before finding the data short.
    pub(crate) fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        let mut data = png(1, 1);
        // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
        data[16..20].copy_from_slice(&w.to_be_bytes());
        data[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&data[12..29]);
        data[29..33].copy_from_slice(&crc.to_be_bytes());
        data
    }

    /// PNG's CRC-32 (ISO 3309), bit by bit: a test needs a few, not a fast table.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

#[cfg(test)]
mod tests {
    use super::images::*;
    use super::*;

    #[test]
    fn names_in_any_script_are_kept_in_nfc() {
        assert_eq!(display_name("王小明").unwrap(), "王小明");
        // A family emoji is four code points joined by zero-width joiners: kept whole.
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(display_name(family).unwrap(), family);
        // `e` + combining acute (NFD) is stored as `é` (NFC), so the two spellings agree.
        assert_eq!(display_name("Jose\u{0301}").unwrap(), "Jos\u{00E9}");
        assert_eq!(display_name("  Alice Wang \u{3000}").unwrap(), "Alice Wang");
        assert_eq!(display_name("").unwrap(), "");
        assert_eq!(
            signature("在开会, back at 3 🙂").unwrap(),
            "在开会, back at 3 🙂"
        );
    }

    #[test]
    fn overrides_controls_and_long_names_are_refused() {
        // "alice" + RIGHT-TO-LEFT OVERRIDE + "txt.exe" shows as "aliceexe.txt".
        assert_eq!(display_name("alice\u{202E}txt.exe"), Err(TextError::Bidi));
        for bidi in ['\u{200F}', '\u{202A}', '\u{2066}', '\u{2069}', '\u{061C}'] {
            assert_eq!(display_name(&format!("a{bidi}b")), Err(TextError::Bidi));
        }
        for control in ['\n', '\r', '\t', '\u{0}', '\u{1B}', '\u{85}', '\u{2028}'] {
            assert_eq!(signature(&format!("a{control}b")), Err(TextError::Control));
        }
        let longest = "字".repeat(MAX_DISPLAY_NAME_CHARS);
        assert_eq!(display_name(&longest).unwrap(), longest);
        assert_eq!(
            display_name(&format!("{longest}字")),
            Err(TextError::TooLong {
                max: MAX_DISPLAY_NAME_CHARS
            })
        );
        assert!(signature(&"x".repeat(MAX_SIGNATURE_CHARS + 1)).is_err());
        assert!(signature(&"x".repeat(10_000_000)).is_err());
    }

    #[test]
    fn png_jpeg_and_webp_avatars_are_decoded_and_accepted() {
        assert_eq!(check_avatar(&png(64, 48)), Ok(ImageFormat::Png));
        assert_eq!(check_avatar(&jpeg(64, 48)), Ok(ImageFormat::Jpeg));
        assert_eq!(check_avatar(&webp(64, 48)), Ok(ImageFormat::WebP));
        let side = MAX_AVATAR_SIDE;
        assert_eq!(check_avatar(&png(side, 1)), Ok(ImageFormat::Png));
    }

    #[test]
    fn bombs_truncations_and_strangers_are_refused() {
        assert_eq!(
            check_avatar(&png_claiming(100_000, 100_000)),
            Err(ImageError::BadDimensions)
        );
        assert_eq!(
            check_avatar(&png_claiming(MAX_AVATAR_SIDE + 1, 1)),
            Err(ImageError::BadDimensions)
        );
        // Within the limits but with far fewer pixels than it claims: decoding finds out.
        assert_eq!(
            check_avatar(&png_claiming(512, 512)),
            Err(ImageError::Corrupt)
        );
        assert_eq!(
            check_avatar(&webp(MAX_AVATAR_SIDE + 1, 1)),
            Err(ImageError::BadDimensions)
        );
        let jpeg = jpeg(32, 32);
        assert_eq!(
            check_avatar(&jpeg[..jpeg.len() / 2]),
            Err(ImageError::Corrupt)
        );
        assert_eq!(check_avatar(b"GIF89a...."), Err(ImageError::UnknownFormat));
        assert_eq!(check_avatar(b""), Err(ImageError::UnknownFormat));
        let mut huge = png(8, 8);
        huge.resize(MAX_AVATAR_BYTES + 1, 0);
        assert_eq!(check_avatar(&huge), Err(ImageError::TooLarge));
    }
}
