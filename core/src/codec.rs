//! Encoding and the stream framing.
//!
//! The core speaks *payloads*: one message is one postcard payload ([`encode`], [`decode`]).
//! How payloads are delimited is the transport's business. A byte stream (TCP, TLS) frames
//! each payload with a u32 big-endian length ([`put_frame`], [`split_frame`]); the length is
//! checked against the limit before a single payload byte is buffered, so a peer announcing
//! a 4 GiB frame costs four bytes of memory, not four gigabytes. A message-oriented transport
//! (one WebSocket message per payload) needs no prefix at all.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub const LENGTH_PREFIX: usize = 4;
/// Default largest payload accepted (1 MiB attachments plus headroom).
pub const DEFAULT_MAX_FRAME: u32 = 1024 * 1024 + 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u32, max: u32 },
}

/// Encodes `msg` as one payload: what the core hands a transport and takes from one.
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    let writer = (&mut out).writer();
    // Writing into memory cannot fail, and our types have no fallible Serialize impls.
    postcard::to_io(msg, writer).expect("postcard encoding into memory");
    out.freeze()
}

/// Appends `payload` to `out` as one stream frame: its length, then its bytes.
pub fn put_frame(out: &mut BytesMut, payload: &[u8]) {
    out.reserve(LENGTH_PREFIX + payload.len());
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
}

/// Encodes `msg` as one stream frame, length prefix included: for raw stream peers (tests,
/// the fuzzers); the core itself only makes payloads.
pub fn encode_frame<T: Serialize>(msg: &T) -> Bytes {
    let payload = encode(msg);
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + payload.len());
    put_frame(&mut out, &payload);
    out.freeze()
}

/// Decodes one payload (without its length prefix). Any byte string gives a message or an
/// error, never a panic; bytes left over are an error, so one payload is one message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (msg, rest) =
        postcard::take_from_bytes(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}

/// `#[serde(with = "crate::codec::byte_vec")]` for a `Vec<u8>` of file data: the same
/// bytes on the wire as serde's default (postcard writes a sequence of `u8` and a byte
/// string alike: a varint length, then the bytes), but copied in one piece instead of
/// visited byte by byte, which is what makes a relayed chunk cheap to pass on.
pub mod byte_vec {
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteVec)
    }

    struct ByteVec;

    impl<'de> Visitor<'de> for ByteVec {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Formats without a byte string (JSON, in tests) hand over a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// Splits one complete frame payload off the front of `buf`, if one is there.
///
/// Returns `Ok(None)` when more bytes are needed. Reserves room for the announced frame
/// only after the length passed the limit.
pub fn split_frame(buf: &mut BytesMut, max: u32) -> Result<Option<Bytes>, FrameError> {
    let Some(len) = complete_frame(buf, max)? else {
        return Ok(None);
    };
    buf.advance(LENGTH_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The payload length of the complete frame at the front of `buf`, if one is there, without
/// taking it: `split_frame` takes it, or a reader that answers some payloads where it reads
/// them may look first and `advance` past them. Reserves room for the announced frame only
/// after the length passed the limit.
pub fn complete_frame(buf: &mut BytesMut, max: u32) -> Result<Option<usize>, FrameError> {
    if buf.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let total = LENGTH_PREFIX + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ClientMsg, MAGIC, PROTOCOL_VERSION, ServerMsg};
    use proptest::prelude::*;

    #[test]
    fn a_frame_round_trips() {
        let msg = ClientMsg::Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: "t".into(),
        };
        let frame = encode_frame(&msg);
        let mut buf = BytesMut::from(&frame[..]);
        let payload = split_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(decode::<ClientMsg>(&payload).unwrap(), msg);
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let frame = encode_frame(&ClientMsg::Ping { nonce: 7 });
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            assert_eq!(split_frame(&mut buf, 100).unwrap(), None, "byte {i}");
            buf.put_u8(*b);
        }
        assert!(split_frame(&mut buf, 100).unwrap().is_some());
    }

    #[test]
    fn an_oversize_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert_eq!(
            split_frame(&mut buf, 1000),
            Err(FrameError::TooLarge {
                len: u32::MAX,
                max: 1000
            })
        );
        assert!(buf.capacity() < 1000);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let frame = encode_frame(&ClientMsg::Logout);
        let mut payload = frame[LENGTH_PREFIX..].to_vec();
        payload.push(0);
        assert_eq!(decode::<ClientMsg>(&payload), Err(DecodeError::Trailing(1)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_cases(1000)))]

        /// Decoding never panics, whatever the bytes: each is a message or a typed error.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ClientMsg>(&bytes);
            let _ = decode::<ServerMsg>(&bytes);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(payload)) = split_frame(&mut buf, 256) {
                let _ = decode::<ClientMsg>(&payload);
            }
        }

        /// Whatever decodes re-encodes to a frame that decodes to the same message, so a
        /// message survives being relayed. (Not byte-identical: postcard accepts over-long
        /// varints, and the encoder writes the short form.)
        #[test]
        fn what_decodes_survives_a_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(msg) = decode::<ClientMsg>(&bytes) {
                let frame = encode_frame(&msg);
                prop_assert_eq!(decode::<ClientMsg>(&frame[LENGTH_PREFIX..]), Ok(msg));
            }
        }
    }
}
