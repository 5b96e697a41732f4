//! The tokio host of the Breeze core: sockets in, core outputs performed.
//!
//! * [`Host`] owns a `breeze_core::server::Server` on one task and serves any number of
//!   [`Listener`]s: one task per connection reads frames for it and writes what it queues.
//!   Every connection enters through the host's one [`Acceptor`] (one `ConnId` space, one
//!   connection limit), whatever its transport.
//! * [`Framed`] is the seam a transport implements: payloads in, payloads out.
//!   [`LengthPrefixed`] frames a byte stream (TCP, TLS, turmoil) as PROTOCOL.md §2 says.
//!   A connection's task answers its peer's pings itself where the core would answer the
//!   same (`in_place.rs`), so an idle connection costs the core task nothing per ping.
//! * [`StorageBackend`] is how the host performs the core's storage requests.
//! * [`run_client`] drives a `breeze_core::client::Client` over a [`Connector`].
//! * [`tls`] puts TLS under either: [`tls::TlsListener`] and [`tls::TlsConnector`].
//!
//! Everything is generic over the listener and connector and reads only tokio's clock, so
//! the same code runs over real TCP and over turmoil's simulated network.

mod acceptor;
mod client;
mod cluster;
mod connection;
mod frames;
mod host;
mod in_place;
mod length_prefixed;
mod link;
mod listener;
mod reader;
mod storage;
mod time;
pub mod tls;
pub mod transfer;

pub use acceptor::{Acceptor, Admission};
pub use client::{ClientCommand, ClientSettings, RoomCommand, run_client};
pub use cluster::{ClusterBackend, ClusterEvent, ClusterInbox, ClusterSender, cluster_channel};
pub use frames::{BadInput, FrameRead, FrameWrite, Framed, WriteStep};
pub use host::{Host, HostConfig, HostHandle, HostStopped};
pub use length_prefixed::{LengthPrefixed, StreamReader, StreamWriter};
pub use link::QueueLimits;
pub use listener::{Connector, Listener, Stream, TcpConnector};
pub use storage::{ResultReceiver, ResultSender, StorageBackend, result_channel};
pub use time::Clock;
