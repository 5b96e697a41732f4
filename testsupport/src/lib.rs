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
//! * [`Pki`]: a CA, a server certificate it signed, and a stranger's certificate, as PEM files.
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

/// The password `Peer` registers and logs in with.
pub const PASSWORD: &str = "correct horse";

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}
