//! The seam between a transport and the connection driver: connections that carry payloads
//! as frames.
//!
//! The core speaks payloads; how a transport delimits them is its own business. A byte
//! stream (TCP, TLS, turmoil's simulated TCP) puts a length before each one
//! ([`LengthPrefixed`](crate::LengthPrefixed)); a message-oriented transport (one WebSocket
//! message per payload) needs no prefix. The connection driver (`connection.rs`) is generic
//! over [`Framed`], so each transport implements these three traits and reuses everything
//! else: the outbound queue, slow-reader handling, closing with a `Bye`, the connection limit.

use breeze_core::codec::FrameError;
use breeze_core::message::CloseReason;
use bytes::Bytes;
use std::future::Future;
use std::io;

/// A connection that carries payloads as frames, split into its two directions so that one
/// task can read and write at once.
pub trait Framed: Send + 'static {
    type Reader: FrameRead;
    type Writer: FrameWrite;

    /// Splits the connection. Frames announcing more than `max_frame` payload bytes are
    /// refused by the reader before they are buffered.
    fn split(self, max_frame: u32) -> (Self::Reader, Self::Writer);
}

/// The reading half.
pub trait FrameRead: Send + 'static {
    /// Waits for more input. `Ok(false)` at the end of the stream. Cancel-safe: what a
    /// cancelled call read is kept.
    fn fill(&mut self) -> impl Future<Output = io::Result<bool>> + Send;

    /// The next complete payload among what `fill` brought, if there is one. After an
    /// error the reader must not be used for frames again.
    fn next_frame(&mut self) -> Result<Option<Bytes>, BadInput>;

    /// `next_frame`, but each payload is offered to `here` first, and one it takes (`true`:
    /// answered where it was read, a `Ping`) is skipped. A reader whose payloads are cut
    /// out of a buffer shows `here` the bytes in place and never makes a `Bytes` of a
    /// payload taken.
    fn next_frame_unless(
        &mut self,
        mut here: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<Bytes>, BadInput> {
        loop {
            match self.next_frame()? {
                Some(payload) if here(&payload) => {}
                next => return Ok(next),
            }
        }
    }

    /// Whether the peer showed life without a frame since the last call: a WebSocket Pong
    /// (or Ping). The core counts it like a frame for the heartbeat deadline
    /// (`Server::handle_alive`). A byte stream has nothing of the kind.
    fn heard_alive(&mut self) -> bool {
        false
    }

    /// Reads and discards until the peer closes. Closing a socket with unread input makes the
    /// kernel send a reset, which can destroy our last frames (the `Bye` saying why) before
    /// the peer reads them; reading until the peer closes avoids it. The caller bounds it.
    fn discard(&mut self) -> impl Future<Output = ()> + Send;
}

/// Input a transport refuses; the connection is told why (`Bye`) and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadInput {
    /// A frame announcing `len` payload bytes, more than the limit; refused before it is
    /// buffered.
    TooLarge { len: u64 },
    /// Something that is no Breeze frame on this transport: a WebSocket text message.
    NotAFrame,
}

impl BadInput {
    /// What the peer is told in its `Bye`.
    pub fn reason(self) -> CloseReason {
        match self {
            BadInput::TooLarge { .. } => CloseReason::FrameTooLarge,
            BadInput::NotAFrame => CloseReason::Malformed,
        }
    }
}

impl From<FrameError> for BadInput {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, .. } => BadInput::TooLarge { len: len.into() },
        }
    }
}

/// The writing half. It buffers the frames it was given ([`put`](FrameWrite::put)) and
/// writes them out step by step ([`write_step`](FrameWrite::write_step)), so the driver can
/// wait on reading and writing in one `select!`.
pub trait FrameWrite: Send + 'static {
    /// Takes `payload` as the next frame. Returns whether it would take another one before
    /// writing (small frames are joined into one write: fewer system calls per frame).
    fn put(&mut self, payload: Bytes) -> bool;

    /// `put` for a small payload made on the stack (a `Pong` answered in place): a writer
    /// that copies small payloads anyway takes it without an allocation of its own.
    fn put_copy(&mut self, payload: &[u8]) -> bool {
        self.put(Bytes::copy_from_slice(payload))
    }

    /// Whether frames taken by `put` are still (partly) unwritten.
    fn has_pending(&self) -> bool;

    /// Writes some of what is pending, or flushes once all of it is written. Cancel-safe: a
    /// write either took bytes (and they are accounted for) or did not.
    fn write_step(&mut self) -> impl Future<Output = io::Result<WriteStep>> + Send;

    /// Writes everything pending, flushes, and closes the write direction (TCP: FIN).
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

/// What one `write_step` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    /// Wrote this many bytes of what was pending; 0 means the peer is gone.
    Wrote(usize),
    /// Nothing was pending, and what was written before is flushed.
    Flushed,
}
