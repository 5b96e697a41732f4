//! Splitting frames off a byte stream with little memory per connection.
//!
//! The buffer starts empty, is topped up in small steps and is let go once drained, so an idle
//! connection holds none, not a fixed 8 KiB. A large frame grows it — only after
//! `split_frame` has checked the announced length against the limit — and once that frame has
//! been handed on, the buffer goes back to small.

use breeze_core::codec::{FrameError, LENGTH_PREFIX, complete_frame, split_frame};
use bytes::{Buf, Bytes, BytesMut};

/// How much room a read gets when the buffer has none left: a typical frame or several.
const READ_STEP: usize = 256;
/// A drained buffer above this capacity is released, giving large-frame memory back.
const SHRINK_ABOVE: usize = 4 * 1024;

#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    max_frame: u32,
}

impl FrameReader {
    pub(crate) fn new(max_frame: u32) -> Self {
        FrameReader {
            buf: BytesMut::new(),
            max_frame,
        }
    }

    /// The buffer to read into, with room for at least one more small read.
    pub(crate) fn buf_for_read(&mut self) -> &mut BytesMut {
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve(READ_STEP);
        }
        &mut self.buf
    }

    /// The next complete frame payload that `here` does not take, if the buffer holds one.
    /// `here` sees each payload in the buffer first; one it takes (`true`) is skipped without
    /// becoming a `Bytes`, which for a payload that does not fill the buffer means turning
    /// the buffer into a shared one: an allocation and a free per frame (callgrind,
    /// BENCHMARKS.md: an idle ping answered in place).
    pub(crate) fn next_frame_unless(
        &mut self,
        mut here: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<Bytes>, FrameError> {
        while let Some(len) = complete_frame(&mut self.buf, self.max_frame)? {
            if !here(&self.buf[LENGTH_PREFIX..LENGTH_PREFIX + len]) {
                break;
            }
            self.buf.advance(LENGTH_PREFIX + len);
        }
        self.next_frame()
    }

    /// The next complete frame payload, if the buffer holds one.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let frame = split_frame(&mut self.buf, self.max_frame)?;
        if frame.is_some() && self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
            self.buf = BytesMut::new();
        }
        if frame.is_none() && self.buf.is_empty() {
            // Everything read has been handed on: an idle connection holds no buffer. The
            // spare room of the last read would otherwise keep its allocation (up to a read
            // step) alive on every idle connection; the next read allocates afresh, which is
            // cheap next to the read itself.
            self.buf = BytesMut::new();
        }
        Ok(frame)
    }

    /// Bytes held for this connection, buffered or reserved.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::codec::encode_frame;
    use breeze_core::message::ClientMsg;
    use bytes::BufMut;

    fn feed(reader: &mut FrameReader, bytes: &[u8]) {
        reader.buf_for_read().put_slice(bytes);
    }

    #[test]
    fn a_large_frame_grows_the_buffer_and_it_shrinks_back() {
        let mut reader = FrameReader::new(1 << 20);
        let big = ClientMsg::Register {
            user: "a".parse().unwrap(),
            password: "x".repeat(100_000),
        };
        let frame = encode_frame(&big);
        feed(&mut reader, &frame[..10]);
        assert_eq!(reader.next_frame().unwrap(), None);
        assert!(reader.capacity() >= frame.len());
        feed(&mut reader, &frame[10..]);
        let payload = reader.next_frame().unwrap().unwrap();
        assert_eq!(payload.len(), frame.len() - 4);
        drop(payload);
        assert!(reader.capacity() <= SHRINK_ABOVE);
        feed(&mut reader, &encode_frame(&ClientMsg::Ping { nonce: 1 }));
        assert!(reader.next_frame().unwrap().is_some());
        assert!(reader.capacity() <= SHRINK_ABOVE);
    }

    #[test]
    fn a_drained_reader_holds_no_buffer() {
        let mut reader = FrameReader::new(1000);
        let ping = encode_frame(&ClientMsg::Ping { nonce: 1 });
        feed(&mut reader, &ping[..3]);
        assert_eq!(reader.next_frame().unwrap(), None);
        assert!(reader.capacity() > 0, "a partial frame is kept");
        feed(&mut reader, &ping[3..]);
        assert!(reader.next_frame().unwrap().is_some());
        assert_eq!(reader.next_frame().unwrap(), None);
        assert_eq!(reader.capacity(), 0);
    }

    #[test]
    fn frames_taken_where_they_are_read_are_skipped_in_order() {
        let mut reader = FrameReader::new(1000);
        let ping = |nonce| encode_frame(&ClientMsg::Ping { nonce });
        let logout = encode_frame(&ClientMsg::Logout);
        feed(
            &mut reader,
            &[ping(1), ping(2), logout.clone(), ping(3)].concat(),
        );
        let mut seen = Vec::new();
        let is_ping = |p: &[u8]| p.len() == ping(1).len() - 4;
        let next = reader
            .next_frame_unless(|p| {
                seen.push(p.to_vec());
                is_ping(p)
            })
            .unwrap();
        assert_eq!(
            next.as_deref(),
            Some(&logout[4..]),
            "the first frame not taken"
        );
        assert_eq!(
            seen,
            [&ping(1)[4..], &ping(2)[4..], &logout[4..]],
            "each offered once"
        );
        assert_eq!(reader.next_frame_unless(is_ping).unwrap(), None);
        assert_eq!(reader.capacity(), 0, "drained by skipping: no buffer held");
    }

    #[test]
    fn an_oversize_length_is_refused_without_growing() {
        let mut reader = FrameReader::new(1000);
        feed(&mut reader, &100_000u32.to_be_bytes());
        assert!(reader.next_frame().is_err());
        assert!(reader.capacity() <= READ_STEP);
    }
}
