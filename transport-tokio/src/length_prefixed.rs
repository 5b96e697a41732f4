//! Frames on a byte stream: each payload behind its u32 big-endian length (PROTOCOL.md §2).
//! TCP, TLS and turmoil's simulated TCP all carry Breeze this way.

use crate::frames::{BadInput, FrameRead, FrameWrite, Framed, WriteStep};
use crate::listener::Stream;
use crate::reader::FrameReader;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

/// A byte stream carrying length-prefixed frames.
#[derive(Debug)]
pub struct LengthPrefixed<S>(pub S);

impl<S: Stream> Framed for LengthPrefixed<S> {
    type Reader = StreamReader<S>;
    type Writer = StreamWriter<S>;

    fn split(self, max_frame: u32) -> (StreamReader<S>, StreamWriter<S>) {
        let (rd, wr) = tokio::io::split(self.0);
        let reader = StreamReader {
            rd,
            frames: FrameReader::new(max_frame),
        };
        let writer = StreamWriter {
            wr,
            joined: BytesMut::new(),
            large: Bytes::new(),
        };
        (reader, writer)
    }
}

/// The reading half: bytes in, payloads out.
#[derive(Debug)]
pub struct StreamReader<S> {
    rd: ReadHalf<S>,
    frames: FrameReader,
}

impl<S: Stream> FrameRead for StreamReader<S> {
    async fn fill(&mut self) -> io::Result<bool> {
        Ok(self.rd.read_buf(self.frames.buf_for_read()).await? > 0)
    }

    fn next_frame(&mut self) -> Result<Option<Bytes>, BadInput> {
        Ok(self.frames.next_frame()?)
    }

    fn next_frame_unless(
        &mut self,
        here: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<Bytes>, BadInput> {
        Ok(self.frames.next_frame_unless(here)?)
    }

    async fn discard(&mut self) {
        let mut sink = [0u8; 512];
        while let Ok(n) = self.rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// Queued frames are joined into one write up to this size. A busy connection (a chat peer
/// at saturation) has several small frames waiting each time it wakes, and one `write` per
/// frame made the loopback send path the largest cost in the server's profile; the copy is
/// cheap next to a system call.
const JOIN_UP_TO: usize = 64 * 1024;
/// A payload this large (an attachment) is written from its own buffer, not copied.
const WRITE_ALONE_FROM: usize = 16 * 1024;

/// The writing half. Pending bytes are `joined` (prefixes and small payloads, copied
/// together), then `large` (one large payload, uncopied, whose prefix ends `joined`).
#[derive(Debug)]
pub struct StreamWriter<S> {
    wr: WriteHalf<S>,
    joined: BytesMut,
    large: Bytes,
}

impl<S> StreamWriter<S> {
    /// The driver puts only into an empty writer or after a `true`; a put behind an unwritten
    /// large payload would go out before it.
    fn behind_nothing_large(&self) {
        assert!(
            self.large.is_empty(),
            "put behind an unwritten large payload"
        );
    }
}

impl<S: Stream> FrameWrite for StreamWriter<S> {
    fn put(&mut self, payload: Bytes) -> bool {
        if payload.len() < WRITE_ALONE_FROM {
            return self.put_copy(&payload);
        }
        self.behind_nothing_large();
        self.joined.put_u32(payload.len() as u32);
        self.large = payload;
        false
    }

    fn put_copy(&mut self, payload: &[u8]) -> bool {
        self.behind_nothing_large();
        self.joined.put_u32(payload.len() as u32);
        self.joined.put_slice(payload);
        self.joined.len() < JOIN_UP_TO
    }

    fn has_pending(&self) -> bool {
        !self.joined.is_empty() || !self.large.is_empty()
    }

    async fn write_step(&mut self) -> io::Result<WriteStep> {
        if !self.joined.is_empty() {
            let n = self.wr.write(&self.joined).await?;
            self.joined.advance(n);
            if self.joined.is_empty() {
                // An idle connection holds no write buffer: the next batch allocates afresh.
                self.joined = BytesMut::new();
            }
            Ok(WriteStep::Wrote(n))
        } else if !self.large.is_empty() {
            let n = self.wr.write(&self.large).await?;
            self.large.advance(n);
            Ok(WriteStep::Wrote(n))
        } else {
            self.wr.flush().await.map(|()| WriteStep::Flushed)
        }
    }

    async fn finish(&mut self) -> io::Result<()> {
        self.wr.write_all(&self.joined).await?;
        self.joined = BytesMut::new();
        self.wr.write_all(&self.large).await?;
        self.large = Bytes::new();
        self.wr.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breeze_core::codec::{LENGTH_PREFIX, put_frame};

    fn framed(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = BytesMut::new();
        parts.iter().for_each(|p| put_frame(&mut out, p));
        out.to_vec()
    }

    /// Small frames are joined into one write and a large one follows uncopied, in order,
    /// each behind its length.
    #[tokio::test]
    async fn frames_go_out_joined_in_order_with_their_lengths() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let (_rd, mut wr) = LengthPrefixed(ours).split(1 << 20);
        assert!(wr.put(Bytes::from_static(b"ab")));
        assert!(wr.put(Bytes::from_static(b"c")));
        let large = vec![7u8; WRITE_ALONE_FROM];
        assert!(
            !wr.put(Bytes::from(large.clone())),
            "a large payload ends the batch"
        );
        assert_eq!(
            wr.write_step().await.unwrap(),
            WriteStep::Wrote(3 * LENGTH_PREFIX + 3)
        );
        assert_eq!(
            wr.write_step().await.unwrap(),
            WriteStep::Wrote(large.len())
        );
        assert!(!wr.has_pending());
        assert_eq!(wr.write_step().await.unwrap(), WriteStep::Flushed);
        wr.finish().await.unwrap();
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, framed(&[b"ab", b"c", &large]));
    }

    #[tokio::test]
    async fn payloads_come_out_of_the_stream_whole() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let (mut rd, _wr) = LengthPrefixed(ours).split(100);
        let bytes = framed(&[b"one", b"two"]);
        theirs.write_all(&bytes[..5]).await.unwrap();
        assert!(rd.fill().await.unwrap());
        assert_eq!(rd.next_frame().unwrap(), None);
        theirs.write_all(&bytes[5..]).await.unwrap();
        drop(theirs);
        assert!(rd.fill().await.unwrap());
        assert_eq!(rd.next_frame().unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(rd.next_frame().unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!rd.fill().await.unwrap(), "end of stream");
    }
}
