//! Reads the socket in chunks for tungstenite, which reads it in slivers.
//!
//! tungstenite reads into what is left of its read buffer after the frames it has split off,
//! which shrinks to a few bytes, so a burst of small messages cost a `recv` per frame header
//! and payload: at chat saturation the server made 2.4 `recv` calls per delivered message
//! over WebSocket against 0.29 over TCP (`perf stat`, same run). This adapter reads up to
//! `CHUNK` bytes at once, into a stack buffer, and hands them out as asked; only what the
//! caller did not take at once is kept, on the heap, and let go as soon as it is taken, so
//! an idle connection holds nothing here.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once.
const CHUNK: usize = 4096;

/// A byte stream whose reads are made `CHUNK` bytes at a time.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Read but not yet handed out.
    ahead: Bytes,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            ahead: Bytes::new(),
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            if out.remaining() >= CHUNK {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let mut chunk = [0u8; CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let got = read.filled();
            let now = got.len().min(out.remaining());
            out.put_slice(&got[..now]);
            if now < got.len() {
                this.ahead = Bytes::copy_from_slice(&got[now..]);
            }
            return Poll::Ready(Ok(()));
        }
        let n = this.ahead.len().min(out.remaining());
        out.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        if this.ahead.is_empty() {
            this.ahead = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_come_from_one_chunk_in_order_and_the_end_is_seen() {
        let (mut theirs, ours) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        theirs.write_all(&data).await.unwrap();
        drop(theirs);
        let mut rd = ReadAhead::new(ours);
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        loop {
            let n = rd.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        assert!(rd.ahead.is_empty());
    }
}
