//! The HTTP listener: `GET /` and the web client's files, `GET /healthz`, and `GET /ws`, the
//! upgrade that turns the connection into a Breeze WebSocket connection admitted to the host.

use crate::frames::{WsFrames, ws_config};
use crate::http::{ReadError, Request, Response, read_request};
use crate::origin::OriginPolicy;
use crate::read_ahead::ReadAhead;
use crate::site::{Site, secure};
use breeze_transport_tokio::{Acceptor, Listener, Stream};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, warn};

/// The WebSocket subprotocol of Breeze's wire protocol version 1. A client must offer it;
/// the server echoes it. A later protocol version gets a new name, so an old server refuses
/// a new client at the upgrade, with a plain HTTP answer.
pub const SUBPROTOCOL: &str = "breeze.v1";

/// Everything the HTTP listener needs to know.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub site: Site,
    pub origins: OriginPolicy,
    /// The listener speaks TLS: our own pages' `Origin` is `https://…`.
    pub secure: bool,
    /// An HTTP request (the upgrade included) must arrive whole within this long of the
    /// accept or of the previous answer; else the connection is dropped (slowloris).
    pub handshake_timeout: Duration,
    /// A WebSocket peer silent for this long is sent a Ping (the heartbeat interval).
    pub ping_after: Duration,
    /// The largest message a WebSocket peer may send (the core's frame limit).
    pub max_frame: u32,
    /// HTTP connections not yet upgraded, at most; one more is closed unanswered.
    pub max_pending: usize,
}

impl HttpConfig {
    /// Defaults around a site: the core's default timers and limits.
    pub fn new(site: Site) -> HttpConfig {
        let core = breeze_core::ServerConfig::default();
        HttpConfig {
            site,
            origins: OriginPolicy::default(),
            secure: false,
            handshake_timeout: core.handshake_timeout,
            ping_after: core.heartbeat_interval,
            max_frame: core.max_frame,
            max_pending: 1024,
        }
    }

    fn scheme(&self) -> &'static str {
        if self.secure { "https" } else { "http" }
    }
}

/// Pause after a failed accept (usually out of file descriptors), so as not to spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts HTTP connections from `listener` for ever, each on a task of its own; upgraded
/// ones are admitted through `acceptor` (the host's one id space and connection limit).
/// Run it with `Host::serve`, so that the host ends if it ever does.
pub async fn serve<L: Listener>(mut listener: L, acceptor: Acceptor, cfg: HttpConfig) {
    let cfg = Arc::new(cfg);
    let pending = Arc::new(Semaphore::new(cfg.max_pending.max(1)));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    debug!(%peer, "too many HTTP connections in progress; closing one");
                    continue;
                };
                tokio::spawn(connection(
                    stream,
                    peer,
                    acceptor.clone(),
                    cfg.clone(),
                    permit,
                ));
            }
            Err(e) => {
                warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// One HTTP connection: requests answered until it upgrades, closes, errs or dawdles.
async fn connection<S: Stream>(
    mut io: S,
    peer: SocketAddr,
    acceptor: Acceptor,
    cfg: Arc<HttpConfig>,
    permit: OwnedSemaphorePermit,
) {
    let mut buf = BytesMut::new();
    loop {
        let deadline = Instant::now() + cfg.handshake_timeout;
        let req = match timeout_at(deadline, read_request(&mut io, &mut buf)).await {
            Err(_) => {
                debug!(%peer, "HTTP request not finished within the handshake timeout");
                return;
            }
            Ok(Ok(req)) => req,
            Ok(Err(e)) => {
                let answer = match e {
                    ReadError::TooLarge => Response::new(431).text("request head too large\n"),
                    ReadError::Malformed(_) => Response::new(400).text("not an HTTP request\n"),
                    ReadError::Closed | ReadError::Io(_) => return,
                };
                debug!(%peer, "bad HTTP request: {e}");
                let _ = timeout_at(deadline, secure(answer).write(&mut io)).await;
                return;
            }
        };
        let (answer, upgrade) = respond(&req, &cfg);
        if answer.status >= 400 {
            debug!(%peer, path = %req.path, status = answer.status, "HTTP request refused");
        }
        let keep = req.keep_alive() && answer.status < 400;
        let wrote = timeout_at(deadline, answer.write(&mut io)).await;
        if !matches!(wrote, Ok(Ok(()))) {
            return;
        }
        if upgrade {
            drop(permit);
            let ws = WebSocketStream::from_partially_read(
                ReadAhead::new(io),
                buf.to_vec(),
                Role::Server,
                Some(ws_config(cfg.max_frame)),
            )
            .await;
            acceptor
                .admit(peer, WsFrames::new(ws, cfg.ping_after))
                .await;
            return;
        }
        if !keep {
            return;
        }
    }
}

/// The answer to one request, and whether it switches the connection to WebSocket.
fn respond(req: &Request, cfg: &HttpConfig) -> (Response, bool) {
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        let answer = Response::new(405)
            .header("Allow", "GET, HEAD")
            .text("only GET here\n");
        return (secure(answer), false);
    }
    if req.has_body() {
        return (
            secure(Response::new(400).text("no request bodies here\n")),
            false,
        );
    }
    let answer = match req.path.as_str() {
        "/ws" if !head => match upgrade(req, cfg) {
            Ok(switch) => return (switch, true),
            Err(refusal) => refusal,
        },
        "/healthz" => Response::new(200)
            .header("Cache-Control", "no-store")
            .text("ok\n"),
        path => cfg.site.get(path),
    };
    let mut answer = secure(answer);
    answer.head_only = head;
    (answer, false)
}

/// Checks an upgrade request (RFC 6455 §4.2.1, our subprotocol, the `Origin` rule) and
/// makes the 101 answer, or the refusal: 426 for no or a wrong WebSocket version, 403 for
/// an origin not allowed, 400 for the rest, each with a sentence saying what was wrong.
fn upgrade(req: &Request, cfg: &HttpConfig) -> Result<Response, Response> {
    let needs_upgrade = || {
        Response::new(426)
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
    };
    if !req.has_token("upgrade", "websocket") || !req.has_token("connection", "upgrade") {
        return Err(needs_upgrade().text(&format!(
            "/ws is a WebSocket endpoint: upgrade with subprotocol {SUBPROTOCOL}\n"
        )));
    }
    if req.minor != 1 {
        return Err(Response::new(400).text("a WebSocket upgrade needs HTTP/1.1\n"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(needs_upgrade().text("WebSocket version 13 only\n"));
    }
    let key = match req.header("sec-websocket-key") {
        Some(key) if key.len() == 24 => key,
        _ => return Err(Response::new(400).text("missing or bad Sec-WebSocket-Key\n")),
    };
    let origin = req.header("origin");
    if !cfg.origins.allows(origin, req.header("host"), cfg.scheme()) {
        debug!(
            origin = origin.unwrap_or(""),
            "WebSocket upgrade from a foreign origin refused"
        );
        return Err(Response::new(403).text(&format!(
            "origin {} may not open a WebSocket here\n",
            origin.unwrap_or("")
        )));
    }
    if !req.has_token("sec-websocket-protocol", SUBPROTOCOL) {
        return Err(Response::new(400).text(&format!(
            "subprotocol {SUBPROTOCOL} required (Sec-WebSocket-Protocol)\n"
        )));
    }
    Ok(Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes()))
        .header("Sec-WebSocket-Protocol", SUBPROTOCOL))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    const UPGRADE: &[(&str, &str)] = &[
        ("Host", "127.0.0.1:8080"),
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Protocol", "breeze.v1"),
    ];

    fn with(
        extra: &[(&'static str, &'static str)],
        without: &str,
    ) -> Vec<(&'static str, &'static str)> {
        UPGRADE
            .iter()
            .copied()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(without))
            .chain(extra.iter().copied())
            .collect()
    }

    #[test]
    fn an_upgrade_is_switched_with_the_accept_key_and_the_subprotocol_echoed() {
        let cfg = HttpConfig::new(Site::default());
        let (answer, up) = respond(&request("/ws", UPGRADE), &cfg);
        assert!(up);
        assert_eq!(answer.status, 101);
        // RFC 6455's own example.
        assert!(answer.headers.contains(&(
            "Sec-WebSocket-Accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
        )));
        assert!(
            answer
                .headers
                .contains(&("Sec-WebSocket-Protocol", "breeze.v1".into()))
        );
    }

    #[test]
    fn bad_upgrades_are_refused_with_the_documented_status() {
        let cfg = HttpConfig::new(Site::default());
        for (headers, status) in [
            (with(&[], "sec-websocket-protocol"), 400),
            (
                with(
                    &[("Sec-WebSocket-Protocol", "chat")],
                    "sec-websocket-protocol",
                ),
                400,
            ),
            (with(&[("Origin", "http://evil.example")], ""), 403),
            (with(&[], "upgrade"), 426),
            (
                with(&[("Sec-WebSocket-Version", "8")], "sec-websocket-version"),
                426,
            ),
            (with(&[], "sec-websocket-key"), 400),
        ] {
            let (answer, up) = respond(&request("/ws", &headers), &cfg);
            assert!(!up, "{headers:?}");
            assert_eq!(answer.status, status, "{headers:?}");
        }
        let ok = with(&[("Origin", "http://127.0.0.1:8080")], "");
        assert!(respond(&request("/ws", &ok), &cfg).1, "our own origin");
    }

    #[test]
    fn every_answer_carries_the_security_headers() {
        let cfg = HttpConfig::new(Site::default());
        for path in ["/", "/healthz", "/nope", "/ws"] {
            let (answer, _) = respond(&request(path, &[("Host", "x")]), &cfg);
            for name in ["Content-Security-Policy", "X-Content-Type-Options"] {
                assert!(
                    answer.headers.iter().any(|(n, _)| *n == name),
                    "{path}: {name}"
                );
            }
        }
        let (health, _) = respond(&request("/healthz", &[]), &cfg);
        assert_eq!((health.status, &health.body[..]), (200, &b"ok\n"[..]));
        let mut post = request("/", &[]);
        post.method = "POST".into();
        assert_eq!(respond(&post, &cfg).0.status, 405);
    }
}
