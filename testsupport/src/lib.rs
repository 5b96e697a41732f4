//! What the Breeze crates' tests share, in one place (dev-only, never published):
//!
//! * [`Peer`]: a raw wire peer over a socket (or any byte stream, TLS included, or a
//!   WebSocket: [`WsPeer`]) that speaks the protocol through the core codec and can
//!   misbehave on purpose;
//! * [`drive`]: the real client (`run_client` over the client core) with its channels;
//! * [`InProcess`]: the whole server (core, tokio host, SQLite store) started in the test's
//!   runtime over a database in a temporary directory;
//! * [`process`]: the `breeze-server` binary as a child process;
//! * [`pg::TestPg`]: a PostgreSQL schema of its own per test, or a skip line;
//! * [`nats::TestNats`]: NATS and a cluster name of its own per test, or a skip line, and
//!   [`nats::Relay`], a link to it the test cuts and heals;
//! * [`Pki`]: a CA, a server certificate it signed, and a stranger's certificate, as PEM files;
//! * [`TINY_PNG`]: an avatar image the server accepts.
//!
//! Every wait is bounded by [`WAIT`]: a test that would hang fails instead.

mod driven;
mod in_process;
pub mod nats;
mod peer;
pub mod pg;
mod pki;
pub mod process;

pub use driven::{Driven, Events, client_config, drive, drive_with};
pub use in_process::{InProcess, test_settings};
pub use peer::{Peer, WsPeer, take_msg};
pub use pki::Pki;

use breeze_core::UserId;
use std::time::Duration;

/// Bound on every wait; reaching it fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// Sends `request` (raw HTTP/1.1) to `addr` and reads the answer to its end: ask with
/// `Connection: close` (the server also closes after a refusal).
pub async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("answered and closed within the wait bound")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A plain `GET path` that asks the server to close after answering.
pub fn http_get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

/// The password `Peer` registers and logs in with.
pub const PASSWORD: &str = "correct horse";

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// A 2×2 red RGBA PNG, as a file on disk would hold it: an avatar the server accepts.
pub const TINY_PNG: [u8; 74] = [
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x00, 0x00, 0x72, 0xb6, 0x0d,
    0x24, 0x00, 0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x84, 0x19, 0x60, 0x0c, 0x00, 0x47, 0xca, 0x07, 0xf9, 0x67, 0x59, 0x6e, 0xb7, 0x00, 0x00,
    0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];
