//! The sans-IO core of Breeze: wire types, codec, and the server and client state machines.
//!
//! Nothing here reads a clock, opens a socket, spawns a thread or draws entropy. Inputs carry
//! `now`; effects come out of `poll_output()`; the next deadline out of `poll_timeout()`. A
//! tokio host, a turmoil simulation and a proptest harness drive the very same code.

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod config;
pub mod ids;
pub mod message;
pub mod rng;
pub mod server;
pub mod storage;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;

pub use config::{DuplicateLogin, ServerConfig};
pub use ids::{ConnId, NodeId, RequestId, SessionLocation, UserId};
pub use time::{Duration, Instant};

/// Proptest case count: `default` unless `PROPTEST_CASES` asks for more (or fewer).
#[cfg(test)]
pub(crate) fn test_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
