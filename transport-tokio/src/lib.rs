//! The tokio host of the Breeze core: sockets in, core outputs performed.
//!
//! * [`Host`] owns a `breeze_core::server::Server` on one task and serves a [`Listener`]:
//!   one task per connection reads frames for it and writes what it queues.
//! * [`StorageBackend`] is how the host performs the core's storage requests.
//! * [`run_client`] drives a `breeze_core::client::Client` over a [`Connector`].
//! * [`tls`] puts TLS under either: [`tls::TlsListener`] and [`tls::TlsConnector`].
//!
//! Everything is generic over the listener and connector and reads only tokio's clock, so
//! the same code runs over real TCP and over turmoil's simulated network.

mod client;
mod connection;
mod host;
mod link;
mod listener;
mod reader;
mod storage;
mod time;
pub mod tls;

pub use client::{ClientCommand, ClientSettings, run_client};
pub use host::{Host, HostConfig, HostHandle, HostStopped};
pub use link::QueueLimits;
pub use listener::{Connector, Listener, Stream, TcpConnector};
pub use storage::{ResultReceiver, ResultSender, StorageBackend, result_channel};
pub use time::Clock;
