//! The files the HTTP listener serves (the web client, embedded in the binary by whoever
//! starts the listener) and the headers every answer carries.

use crate::http::Response;
use bytes::Bytes;

/// One embedded file: its path under the site root (`index.html`, `js/app.js`) and bytes.
pub type Asset = (&'static str, &'static [u8]);

/// The files served under `/`; `/` itself is `index.html`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Site {
    pub files: &'static [Asset],
}

/// The Content-Security-Policy of every answer. No inline script or style, nothing from
/// another origin, no plugins, no `<base>` rewriting, no framing (clickjacking); images may
/// also be `blob:`/`data:` URLs, which is how the client shows attachments it received as
/// bytes. `connect-src 'self'` covers `ws:`/`wss:` to this same host (CSP Level 3).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// Headers on every answer, whatever it is.
pub fn secure(response: Response) -> Response {
    response
        .header("Content-Security-Policy", CSP)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .header("X-Frame-Options", "DENY")
        .header("Cross-Origin-Opener-Policy", "same-origin")
        .header("Cross-Origin-Resource-Policy", "same-origin")
}

/// The Content-Type for a file name, by its extension; unknown ones are opaque bytes (and
/// `nosniff` keeps a browser from guessing otherwise).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map_or("", |(_, e)| e);
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

impl Site {
    /// The answer to a GET (or HEAD) of `path`: the file, or 404.
    pub fn get(&self, path: &str) -> Response {
        let name = match path {
            "/" | "/index.html" => "index.html",
            other => other.trim_start_matches('/'),
        };
        match self.files.iter().find(|(p, _)| *p == name) {
            Some((p, body)) => Response::new(200)
                .header("Content-Type", content_type(p))
                // The page is small and the server restarts with new versions: always ask.
                .header(
                    "Cache-Control",
                    if name == "index.html" {
                        "no-store"
                    } else {
                        "no-cache"
                    },
                )
                .body(Bytes::from_static(body)),
            None if name == "index.html" => {
                Response::new(404).text("this server was built without the web client (web/)\n")
            }
            None => Response::new(404).text("not found\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &[Asset] = &[("index.html", b"<!doctype html>"), ("js/app.js", b"x")];

    #[test]
    fn files_are_served_with_their_types_and_the_rest_is_404() {
        let site = Site { files: FILES };
        let index = site.get("/");
        assert_eq!(index.status, 200);
        assert_eq!(&index.body[..], b"<!doctype html>");
        assert!(
            index
                .headers
                .contains(&("Content-Type", "text/html; charset=utf-8".into()))
        );
        assert!(
            index
                .headers
                .contains(&("Cache-Control", "no-store".into()))
        );
        let js = site.get("/js/app.js");
        assert!(
            js.headers
                .contains(&("Content-Type", "text/javascript; charset=utf-8".into()))
        );
        for missing in ["/nope", "/../Cargo.toml", "/js", "//etc/passwd"] {
            assert_eq!(site.get(missing).status, 404, "{missing}");
        }
        assert_eq!(Site::default().get("/").status, 404);
    }

    #[test]
    fn types_follow_extensions() {
        assert_eq!(content_type("a.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("a.svg"), "image/svg+xml");
        assert_eq!(content_type("README"), "application/octet-stream");
    }
}
