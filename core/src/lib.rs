//! The sans-IO core of Breeze: wire types, codec, and the server and client state machines.
//!
//! Nothing here reads a clock, opens a socket, spawns a thread or draws entropy. Inputs carry
//! `now`; effects come out of `poll_output()`; the next deadline out of `poll_timeout()`. A
//! tokio host, a turmoil simulation and a proptest harness drive the very same code.
//!
//! # The run loop
//!
//! Every host — `breeze-transport-tokio`'s core task, the simulation, the test rig — is this
//! loop: feed what happened (`handle_*`, each with `now`), drain `poll_output()` performing
//! each effect, then sleep until `poll_timeout()` and call `handle_timeout`. Storage is an
//! effect like any other: the host performs the request and reports the result with
//! `handle_storage`, whenever it is done. Here the in-memory store of the `testkit` feature
//! answers at once, and a connection that goes silent after registering is closed exactly at
//! its last frame plus the heartbeat timeout:
//!
//! ```
//! use breeze_core::codec::{decode, encode};
//! use breeze_core::message::{ClientMsg, CloseReason, MAGIC, PROTOCOL_VERSION, ServerMsg};
//! use breeze_core::server::{Output, Server};
//! use breeze_core::testkit::MemStore;
//! use breeze_core::{ConnId, Duration, Instant, ServerConfig};
//!
//! let cfg = ServerConfig::default();
//! let mut store = MemStore::new();
//! let mut server = Server::new(cfg.clone(), store.users());
//! let mut now = Instant::ZERO;
//! let conn = ConnId(1);
//!
//! // Drains every effect: frames are "written" into `sent`, storage is performed at once.
//! let mut sent = Vec::new();
//! let mut closed = None;
//! let mut drain = |server: &mut Server, now: Instant, store: &mut MemStore| {
//!     while let Some(out) = server.poll_output() {
//!         match out {
//!             Output::Send { payload, .. } => sent.push(decode::<ServerMsg>(&payload).unwrap()),
//!             Output::Close { reason, .. } => closed = Some((now, reason)),
//!             Output::Storage { id, op } => {
//!                 let result = store.apply(op, now.since_epoch().as_millis() as u64);
//!                 server.handle_storage(now, id, result);
//!             }
//!             Output::Event(_) => {} // a log line or a metric
//!             Output::Cluster { .. } => unreachable!("cluster mode is off"),
//!             Output::AnswerPings { .. } => {} // this host hands every Ping to the core
//!         }
//!     }
//! };
//!
//! server.handle_connect(now, conn, None);
//! let hello = ClientMsg::Hello { magic: MAGIC, version: PROTOCOL_VERSION, client: "doc".into() };
//! server.handle_frame(now, conn, &encode(&hello));
//! now = now + Duration::from_millis(5);
//! let register = ClientMsg::Register { user: "alice".parse().unwrap(), password: "correct horse".into() };
//! server.handle_frame(now, conn, &encode(&register));
//! drain(&mut server, now, &mut store);
//! let last_frame = now;
//!
//! // Nothing more arrives: sleep until each deadline and fire it.
//! while let Some(at) = server.poll_timeout() {
//!     now = at;
//!     server.handle_timeout(now);
//!     drain(&mut server, now, &mut store);
//! }
//! assert!(matches!(sent[0], ServerMsg::Welcome { .. }));
//! assert!(matches!(sent[1], ServerMsg::Registered { .. }));
//! assert_eq!(closed, Some((last_frame + cfg.heartbeat_timeout, CloseReason::HeartbeatTimeout)));
//! ```

#![forbid(unsafe_code)]

pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod ids;
pub mod message;
pub mod profile;
pub mod rng;
pub mod server;
pub mod storage;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod text;
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
