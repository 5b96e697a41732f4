//! The structured input of `server_core`, decoded by `arbitrary`'s derive.
//!
//! Choices are indices into small pools (users `u0`..`u4`, a few passwords, bodies, labels) so
//! that names collide, logins succeed and messages find their recipients often; raw frames are
//! bytes as they come. Everything is fixed-size except [`Blob`], whose length byte comes first
//! (`arbitrary`'s own collections take their lengths from the end of the data, which makes
//! hand-written seeds impractical).

use arbitrary::{Arbitrary, Unstructured};

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct ServerInput {
    pub setup: Setup,
    pub steps: Vec<Step>,
}

/// Server policy for the whole run.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setup {
    /// `DuplicateLogin::Multi` instead of `Replace`.
    pub multi: bool,
    /// `WatchScope::Contacts` instead of `Everyone`.
    pub contacts_scope: bool,
    /// A 5 s offline grace instead of none.
    pub grace: bool,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub op: Op,
    /// Leave the server's output undrained after this step, so that the next steps' inputs
    /// land in the same batch (the way a host handles a burst of sockets before draining).
    pub hold: bool,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new connection, from no known address (`from % 4 == 0`) or from one of three.
    Open { from: u8 },
    /// A well-formed frame on the `conn % opened`th connection ever opened.
    Frame { conn: u8, msg: Msg },
    /// Raw payload bytes on a connection.
    Raw { conn: u8, bytes: Blob },
    /// The peer closed the connection.
    Close { conn: u8 },
    /// The host ended the connection for `reason`.
    Abort { conn: u8, reason: Reason },
    /// Virtual time moves on by `ms`, every deadline firing exactly when due.
    Advance { ms: u16 },
    /// Storage performs one waiting request (writes strictly in order) and holds the result.
    Apply { pick: u8 },
    /// The host reports one held result (writes strictly in order).
    Report { pick: u8 },
    /// Apply then report one request.
    Complete { pick: u8 },
    /// Like `Complete`, but the request fails in storage (and changes nothing).
    Fail { pick: u8 },
    /// Storage performs and reports everything, in order, until nothing is waiting.
    Settle,
    /// The host shuts the server down (no connections are opened after this).
    Shutdown,
}

#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Hello {
        bad_magic: bool,
        bad_version: bool,
        long_client: bool,
    },
    Register {
        user: Name,
        password: Pw,
    },
    Login {
        user: Name,
        credential: Cred,
        status: St,
    },
    Logout,
    ChangePassword {
        old: Pw,
        new: Pw,
    },
    SetStatus {
        status: St,
    },
    AddContact {
        user: Name,
    },
    RemoveContact {
        user: Name,
    },
    Send {
        id: u8,
        to: Name,
        body: Body,
        attachment: Option<Att>,
    },
    Ack {
        /// Each byte a seq.
        seqs: Blob,
        /// One more seq than the server accepts in one `Ack`.
        too_many: bool,
    },
    Ping {
        nonce: u8,
    },
    History {
        with: Name,
        before: Option<u8>,
        limit: u16,
    },
    AdminWho,
}

/// A user name: mostly `u0`..`u4` (`u0`..`u2` exist at start), sometimes an invalid one.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name(pub u8);

/// A password from a pool whose first entry is the initial accounts' password.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pw(pub u8);

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cred {
    Password(Pw),
    /// The `n % (issued + 1)`th resume token storage has issued (to anyone), or a bogus one.
    Token(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum St {
    Online,
    Busy,
    Away,
    Invisible,
}

/// A message body from a pool (one is over the fuzz configuration's `max_body`).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body(pub u8);

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Att {
    pub mime: Label,
    pub name: Label,
    /// Bytes of data; the fuzz configuration's `max_attachment` is 64.
    pub size: u8,
}

/// An attachment label from a pool (one is over the 255-byte limit).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(pub u8);

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    HandshakeTimeout,
    HeartbeatTimeout,
    Replaced,
    LoggedOut,
    BadHandshake,
    UnsupportedVersion,
    FrameTooLarge,
    Malformed,
    SlowReader,
    ServerFull,
    ServerShutdown,
    Flooding,
}

/// Bytes with their length first: one byte `n`, then `n` bytes (fewer if the input ends).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Blob {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u8::arbitrary(u)? as usize;
        let n = n.min(u.len());
        Ok(Blob(u.bytes(n)?.to_vec()))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(256))
    }
}

/// The inverse of the derived decoding, for writing seeds: `encode(x)` decodes back to `x`
/// (checked by the tests for every seed).
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

/// The four bytes the derive turns into variant `index` of `count`: it takes a u32 `x` and
/// picks `(x * count) >> 32`.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let x = (index << 32).div_ceil(count);
    out.extend_from_slice(&(x as u32).to_le_bytes());
}

impl Encode for u8 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}

impl Encode for u16 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.is_some().encode(out);
        if let Some(x) = self {
            x.encode(out);
        }
    }
}

impl Encode for Blob {
    fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.0.len() <= 255);
        out.push(self.0.len() as u8);
        out.extend_from_slice(&self.0);
    }
}

macro_rules! encode_newtype {
    ($($t:ident),*) => {$(
        impl Encode for $t {
            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out);
            }
        }
    )*};
}
encode_newtype!(Name, Pw, Body, Label);

impl Encode for ServerInput {
    fn encode(&self, out: &mut Vec<u8>) {
        self.setup.encode(out);
        // The last field takes the rest: each element is preceded by a `true`.
        for step in &self.steps {
            true.encode(out);
            step.encode(out);
        }
    }
}

impl Encode for Setup {
    fn encode(&self, out: &mut Vec<u8>) {
        self.multi.encode(out);
        self.contacts_scope.encode(out);
        self.grace.encode(out);
    }
}

impl Encode for Step {
    fn encode(&self, out: &mut Vec<u8>) {
        self.op.encode(out);
        self.hold.encode(out);
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        const N: u64 = 12;
        match self {
            Op::Open { from } => {
                variant(out, 0, N);
                from.encode(out);
            }
            Op::Frame { conn, msg } => {
                variant(out, 1, N);
                conn.encode(out);
                msg.encode(out);
            }
            Op::Raw { conn, bytes } => {
                variant(out, 2, N);
                conn.encode(out);
                bytes.encode(out);
            }
            Op::Close { conn } => {
                variant(out, 3, N);
                conn.encode(out);
            }
            Op::Abort { conn, reason } => {
                variant(out, 4, N);
                conn.encode(out);
                reason.encode(out);
            }
            Op::Advance { ms } => {
                variant(out, 5, N);
                ms.encode(out);
            }
            Op::Apply { pick } => {
                variant(out, 6, N);
                pick.encode(out);
            }
            Op::Report { pick } => {
                variant(out, 7, N);
                pick.encode(out);
            }
            Op::Complete { pick } => {
                variant(out, 8, N);
                pick.encode(out);
            }
            Op::Fail { pick } => {
                variant(out, 9, N);
                pick.encode(out);
            }
            Op::Settle => variant(out, 10, N),
            Op::Shutdown => variant(out, 11, N),
        }
    }
}

impl Encode for Msg {
    fn encode(&self, out: &mut Vec<u8>) {
        const N: u64 = 13;
        match self {
            Msg::Hello {
                bad_magic,
                bad_version,
                long_client,
            } => {
                variant(out, 0, N);
                bad_magic.encode(out);
                bad_version.encode(out);
                long_client.encode(out);
            }
            Msg::Register { user, password } => {
                variant(out, 1, N);
                user.encode(out);
                password.encode(out);
            }
            Msg::Login {
                user,
                credential,
                status,
            } => {
                variant(out, 2, N);
                user.encode(out);
                credential.encode(out);
                status.encode(out);
            }
            Msg::Logout => variant(out, 3, N),
            Msg::ChangePassword { old, new } => {
                variant(out, 4, N);
                old.encode(out);
                new.encode(out);
            }
            Msg::SetStatus { status } => {
                variant(out, 5, N);
                status.encode(out);
            }
            Msg::AddContact { user } => {
                variant(out, 6, N);
                user.encode(out);
            }
            Msg::RemoveContact { user } => {
                variant(out, 7, N);
                user.encode(out);
            }
            Msg::Send {
                id,
                to,
                body,
                attachment,
            } => {
                variant(out, 8, N);
                id.encode(out);
                to.encode(out);
                body.encode(out);
                attachment.encode(out);
            }
            Msg::Ack { seqs, too_many } => {
                variant(out, 9, N);
                seqs.encode(out);
                too_many.encode(out);
            }
            Msg::Ping { nonce } => {
                variant(out, 10, N);
                nonce.encode(out);
            }
            Msg::History {
                with,
                before,
                limit,
            } => {
                variant(out, 11, N);
                with.encode(out);
                before.encode(out);
                limit.encode(out);
            }
            Msg::AdminWho => variant(out, 12, N),
        }
    }
}

impl Encode for Cred {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Cred::Password(pw) => {
                variant(out, 0, 2);
                pw.encode(out);
            }
            Cred::Token(n) => {
                variant(out, 1, 2);
                n.encode(out);
            }
        }
    }
}

impl Encode for St {
    fn encode(&self, out: &mut Vec<u8>) {
        variant(out, *self as u64, 4);
    }
}

impl Encode for Att {
    fn encode(&self, out: &mut Vec<u8>) {
        self.mime.encode(out);
        self.name.encode(out);
        self.size.encode(out);
    }
}

impl Encode for Reason {
    fn encode(&self, out: &mut Vec<u8>) {
        variant(out, *self as u64, 12);
    }
}

/// `x` encoded, from scratch.
pub fn to_bytes<T: Encode>(x: &T) -> Vec<u8> {
    let mut out = Vec::new();
    x.encode(&mut out);
    out
}
