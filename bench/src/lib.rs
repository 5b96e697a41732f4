//! breeze-bench: a load generator for breeze-server over real loopback TCP.
//!
//! One tokio runtime, one task per simulated client, the core's codec on raw sockets. See
//! BENCHMARKS.md at the repository root for the scenarios, how to run them and what they
//! measured.

pub mod chat;
pub mod delivery;
pub mod import;
pub mod mosquitto;
pub mod net;
pub mod pacer;
pub mod plot;
pub mod pop;
pub mod presence;
pub mod procfs;
pub mod report;
pub mod room;
pub mod scenarios;
pub mod server;
pub mod stalls;
pub mod stats;
pub mod target;
