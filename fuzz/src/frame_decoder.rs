//! `frame_decoder`: a byte stream cut into arbitrary chunks and fed to `split_frame` the way a
//! host's read loop does, every payload decoded as both message types.
//!
//! Input layout (so that seeds are easy to write by hand):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0 | the frame limit: `max = 2 * byte` (0..=510) |
//! | 1 | `n = byte % 16`: how many chunk lengths follow |
//! | 2..2+n | chunk lengths, used in turn: `len = byte % (MAX_CHUNK + 1)` (0 is an empty read) |
//! | rest | the stream |
//!
//! With no chunk lengths (or only zeros) the whole stream is one read.
//!
//! Checked, against a reference parse of the whole stream:
//! * the payloads `split_frame` hands out are exactly the stream's frames, in order;
//! * a length over the limit is an error as soon as its four bytes are in, not later, and that
//!   call does not grow the buffer; nothing is handed out after it;
//! * a pending frame never holds more than `max + 4` bytes, the reservation for it covers the
//!   announced frame, and the buffer's capacity stays linear in `max` plus the largest read
//!   (never in the announced length);
//! * whatever decodes as a `ClientMsg` or a `ServerMsg` survives encode → decode, its encoding
//!   is canonical (re-encoding gives the same bytes) and never longer than what was decoded.

use breeze_core::codec::{FrameError, LENGTH_PREFIX, decode, encode_frame, split_frame};
use breeze_core::message::{ClientMsg, ServerMsg};
use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Longest chunk one read hands over.
pub const MAX_CHUNK: usize = 64;

/// The parsed input.
#[derive(Debug)]
pub struct FrameInput<'a> {
    pub max: u32,
    pub chunks: &'a [u8],
    pub stream: &'a [u8],
}

impl<'a> FrameInput<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&max, rest) = data.split_first()?;
        let (&n, rest) = rest.split_first()?;
        let n = (n as usize % 16).min(rest.len());
        let (chunks, stream) = rest.split_at(n);
        Some(FrameInput {
            max: 2 * max as u32,
            chunks,
            stream,
        })
    }
}

/// Builds an input in the layout above (for seeds and tests). `max` is rounded down to even.
pub fn input(max: u32, chunks: &[u8], stream: &[u8]) -> Vec<u8> {
    assert!(max <= 510 && chunks.len() < 16);
    let mut out = vec![(max / 2) as u8, chunks.len() as u8];
    out.extend_from_slice(chunks);
    out.extend_from_slice(stream);
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    Payload(&'a [u8]),
    TooLarge(u32),
}

/// The reference: the stream parsed in one go, and the tail left pending (if no error).
fn reference(stream: &[u8], max: u32) -> (Vec<Event<'_>>, &[u8]) {
    let mut events = Vec::new();
    let mut rest = stream;
    while rest.len() >= LENGTH_PREFIX {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len > max {
            events.push(Event::TooLarge(len));
            return (events, &[]);
        }
        let total = LENGTH_PREFIX + len as usize;
        if rest.len() < total {
            break;
        }
        events.push(Event::Payload(&rest[LENGTH_PREFIX..total]));
        rest = &rest[total..];
    }
    (events, rest)
}

/// The whole check for one input.
pub fn check(data: &[u8]) {
    let Some(input) = FrameInput::parse(data) else {
        return;
    };
    let max = input.max;
    let (expected, tail) = reference(input.stream, max);
    // Pending bytes never exceed max + 4 and a read adds its own length: allocation growth
    // (doubling) stays within twice that. Anything sized by an announced length over the
    // limit (up to 4 GiB) is far above.
    let mut largest_read = 0;
    let mut cap_bound;

    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut stream = input.stream;
    // Chunk lengths that are all zero would never feed anything: then one read takes all.
    let all_empty = input
        .chunks
        .iter()
        .all(|&b| (b as usize).is_multiple_of(MAX_CHUNK + 1));
    let chunks = if all_empty { &[][..] } else { input.chunks };
    let mut lens = chunks.iter().cycle();
    'reads: while !stream.is_empty() {
        let n = match lens.next() {
            Some(&b) => (b as usize % (MAX_CHUNK + 1)).min(stream.len()),
            None => stream.len(),
        };
        let (chunk, rest) = stream.split_at(n);
        stream = rest;
        largest_read = largest_read.max(n);
        cap_bound = 2 * (max as usize + LENGTH_PREFIX + largest_read) + 64;
        buf.extend_from_slice(chunk);
        loop {
            let len_before = buf.len();
            let cap_before = buf.capacity();
            let prefix = (len_before >= LENGTH_PREFIX)
                .then(|| u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
            match split_frame(&mut buf, max) {
                Ok(Some(payload)) => {
                    let len = prefix.expect("a frame needs a length prefix");
                    assert_eq!(payload.len() as u64, len as u64, "payload length");
                    assert!(len <= max, "a frame of {len} bytes passed the limit {max}");
                    assert_eq!(buf.len(), len_before - LENGTH_PREFIX - len as usize);
                    check_payload(&payload);
                    events.push(payload);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), len_before, "Ok(None) consumed bytes");
                    if let Some(len) = prefix {
                        assert!(
                            len <= max,
                            "announced {len} > max {max} but split_frame waits for more bytes"
                        );
                        let total = LENGTH_PREFIX + len as usize;
                        assert!(buf.len() < total, "a complete frame was left in the buffer");
                        assert!(
                            buf.capacity() >= total,
                            "room for the announced frame was not reserved"
                        );
                    }
                    assert!(
                        buf.len() <= max as usize + LENGTH_PREFIX,
                        "{} bytes pending, max {max}",
                        buf.len()
                    );
                    break;
                }
                Err(FrameError::TooLarge { len, max: m }) => {
                    assert_eq!(m, max);
                    assert_eq!(Some(len), prefix, "the error names the announced length");
                    assert!(len > max, "refused a frame of {len} within the limit {max}");
                    assert!(
                        buf.capacity() <= cap_before,
                        "buffer grew for a frame over the limit"
                    );
                    assert_eq!(buf.len(), len_before, "the refusing call consumed bytes");
                    assert!(
                        events.len() == expected.len() - 1,
                        "frame error came late or early"
                    );
                    assert_eq!(expected.last(), Some(&Event::TooLarge(len)));
                    // The host closes the connection here.
                    break 'reads;
                }
            }
            assert!(
                buf.capacity() <= cap_bound,
                "buffer capacity {} for max {max}",
                buf.capacity()
            );
        }
        assert!(
            buf.capacity() <= cap_bound,
            "buffer capacity {} for max {max}",
            buf.capacity()
        );
    }
    let payloads: Vec<&[u8]> = expected
        .iter()
        .filter_map(|e| match e {
            Event::Payload(p) => Some(*p),
            Event::TooLarge(_) => None,
        })
        .collect();
    let got: Vec<&[u8]> = events.iter().map(|b| &b[..]).collect();
    assert_eq!(
        got, payloads,
        "split_frame's frames differ from the stream's"
    );
    if !matches!(expected.last(), Some(Event::TooLarge(_))) {
        assert_eq!(&buf[..], tail, "the pending tail differs from the stream's");
    }
}

/// Decodes one payload as both message types; whatever decodes must survive a round trip.
pub fn check_payload(payload: &[u8]) {
    round_trip::<ClientMsg>(payload);
    round_trip::<ServerMsg>(payload);
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(payload: &[u8]) {
    let Ok(msg) = decode::<T>(payload) else {
        return;
    };
    let frame = encode_frame(&msg);
    let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(
        len,
        frame.len() - LENGTH_PREFIX,
        "length prefix of a re-encoded frame"
    );
    assert!(
        len <= payload.len(),
        "re-encoding {msg:?} took {len} bytes, the input only {}",
        payload.len()
    );
    let again = decode::<T>(&frame[LENGTH_PREFIX..]).unwrap_or_else(|e| {
        panic!("{msg:?} re-encoded does not decode: {e}");
    });
    assert_eq!(again, msg, "round trip changed the message");
    assert_eq!(encode_frame(&again), frame, "encoding is not canonical");
    // And the re-encoded frame passes the framing as one frame, exactly.
    let mut buf = BytesMut::from(&frame[..]);
    let split = split_frame(&mut buf, len as u32).expect("within its own length");
    assert_eq!(split.as_deref(), Some(&frame[LENGTH_PREFIX..]));
    assert!(buf.is_empty());
}
