//! Just enough HTTP/1.1 for four kinds of GET: requests read with a size bound (the caller
//! bounds the time), responses written whole.
//!
//! Hand-rolled on `httparse` rather than hyper because the server answers nothing but small
//! GETs and one upgrade: owning the socket means the upgraded connection carries no HTTP
//! machinery (hyper hands over a boxed stream and keeps its connection state alive beside
//! it), the handshake deadline covers exactly "accepted → 101 sent", and the build pulls in
//! no HTTP stack (a cold CI build is the budget that matters here). Requests with a body
//! are refused: nothing here takes one.

use bytes::{BufMut, BytesMut};
use std::fmt::Write as _;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The request head (request line and headers) may be this long at most; a longer one is
/// answered 431. Browsers send well under 2 KiB to a fresh origin with no cookies.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 48;

/// One parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// HTTP/1.0 (0) or HTTP/1.1 (1).
    pub minor: u8,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Every comma-separated token of every header `name`, trimmed.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether the client wants the connection kept open after the answer.
    pub fn keep_alive(&self) -> bool {
        match self.minor {
            0 => self.has_token("connection", "keep-alive"),
            _ => !self.has_token("connection", "close"),
        }
    }

    /// Whether the request says it carries a body.
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self.header("content-length").is_some_and(|len| len != "0")
    }
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the connection closed")]
    Closed,
    #[error("request head over {MAX_HEAD} bytes")]
    TooLarge,
    #[error("not HTTP: {0}")]
    Malformed(httparse::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one request head. Bytes read past it (a pipelined request, or a client's first
/// WebSocket frames) stay in `buf`.
pub async fn read_request<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
) -> Result<Request, ReadError> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let path = req.path.unwrap_or("/");
                    let request = Request {
                        method: req.method.unwrap_or("").to_owned(),
                        path: path.split('?').next().unwrap_or("/").to_owned(),
                        minor: req.version.unwrap_or(1),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| (h.name.to_owned(), h.value.to_owned()))
                            .collect(),
                    };
                    let _ = buf.split_to(len);
                    return Ok(request);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(ReadError::Malformed(e)),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        buf.reserve(1024.min(MAX_HEAD - buf.len()));
        let room = MAX_HEAD - buf.len();
        let read = (&mut *io).take(room as u64).read_buf(buf).await?;
        if read == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// A response, written whole by [`Response::write`].
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: bytes::Bytes,
    /// HEAD: the headers (with the body's length) but not the body.
    pub head_only: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
            head_only: false,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// A plain-text body (an error's explanation).
    pub fn text(self, body: &str) -> Response {
        Response {
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            ..self
        }
        .header("Content-Type", "text/plain; charset=utf-8")
    }

    pub fn body(self, body: bytes::Bytes) -> Response {
        Response { body, ..self }
    }

    /// The status line, headers and body as bytes. `Content-Length` is added unless the
    /// response is a 101 (whose connection is no longer HTTP).
    pub fn to_bytes(&self) -> BytesMut {
        let mut head = String::new();
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if self.status != 101 {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        head.push_str("\r\n");
        let mut out = BytesMut::with_capacity(head.len() + self.body.len());
        out.put_slice(head.as_bytes());
        if !self.head_only {
            out.put_slice(&self.body);
        }
        out
    }

    pub async fn write<S: AsyncWrite + Unpin>(&self, io: &mut S) -> io::Result<()> {
        io.write_all(&self.to_bytes()).await?;
        io.flush().await
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> (Result<Request, ReadError>, BytesMut) {
        let mut io = bytes;
        let mut buf = BytesMut::new();
        let r = read_request(&mut io, &mut buf).await;
        (r, buf)
    }

    #[tokio::test]
    async fn a_request_head_is_parsed_and_what_follows_it_is_kept() {
        let (req, rest) = parse(
            b"GET /ws?x=1 HTTP/1.1\r\nHost: a:1\r\nSec-WebSocket-Protocol: x, breeze.v1\r\n\r\n\x82\x00",
        )
        .await;
        let req = req.unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/ws"));
        assert_eq!(req.header("HOST"), Some("a:1"));
        assert!(req.has_token("sec-websocket-protocol", "breeze.v1"));
        assert!(req.keep_alive());
        assert_eq!(&rest[..], b"\x82\x00");
    }

    #[tokio::test]
    async fn oversize_garbage_and_closed_requests_are_errors() {
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            parse(long.as_bytes()).await.0,
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            parse(b"\x00\x00\x00\x05hello").await.0,
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(parse(b"GET / HT").await.0, Err(ReadError::Closed)));
    }

    #[test]
    fn responses_carry_their_length_except_a_switch() {
        let ok = Response::new(200).text("hi").to_bytes();
        let text = std::str::from_utf8(&ok).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("Content-Length: 2\r\n") && text.ends_with("\r\n\r\nhi"));
        let up = Response::new(101).header("Upgrade", "websocket").to_bytes();
        assert!(!std::str::from_utf8(&up).unwrap().contains("Content-Length"));
    }
}
