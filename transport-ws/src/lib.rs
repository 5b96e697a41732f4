//! Breeze over WebSocket: the same `breeze-core` server as TCP, reached from a browser.
//!
//! * [`serve`] runs an HTTP/1.1 listener (plain or TLS: any `Listener`) that answers
//!   `GET /` and the web client's files ([`Site`]), `GET /healthz`, and upgrades `GET /ws`
//!   (subprotocol [`SUBPROTOCOL`], the [`OriginPolicy`]) into a WebSocket connection that
//!   it admits through the host's one `Acceptor`: one `ConnId` space, one connection limit
//!   for TCP and WebSocket together.
//! * [`WsFrames`] is that connection as the host's `Framed` seam: one Breeze payload per
//!   binary message; the server pings a quiet peer and counts its Pongs as life.
//! * [`WsConnector`] and [`WsByteStream`] are the client side for Rust programs.
//!
//! Why a crate of its own rather than a module of breeze-transport-tokio: the WebSocket and
//! HTTP code and its dependencies (tungstenite, sha1, httparse, rand) are needed only by the
//! server binary, while breeze-transport-tokio is also the command-line client's runtime;
//! the seams this crate plugs into (`Framed`, `Acceptor`, `Listener`, `Host::serve`) are
//! public there, so nothing here reaches into the host's insides.

mod client;
mod frames;
mod http;
mod listener;
mod origin;
mod read_ahead;
mod site;

pub use client::{WsByteStream, WsConnector};
pub use frames::{READ_BUFFER, WRITE_BUFFER, WsFrames, WsReader, WsWriter, ws_config};
pub use listener::{HttpConfig, SUBPROTOCOL, serve};
pub use origin::OriginPolicy;
pub use read_ahead::ReadAhead;
pub use site::{Asset, CSP, Site, content_type};
