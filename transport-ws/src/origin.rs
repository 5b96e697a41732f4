//! Which pages may open a WebSocket to us (cross-site WebSocket hijacking).
//!
//! Browsers let any page open a WebSocket to any host and send the page's `Origin` with the
//! upgrade; nothing else stops evil.example from talking to a Breeze server on the victim's
//! machine or network. So an upgrade that carries an `Origin` must come from our own origin —
//! the scheme we serve and the `Host` the request was sent to — or from one the operator
//! listed (`--allowed-origin`). A request without `Origin` comes from a program, not a
//! browser page (browsers always send it on a WebSocket upgrade): it is let in, as a TCP
//! client would be.

/// The origin rule of one HTTP listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Origins allowed besides our own, as browsers write them: `https://chat.example.com`,
    /// `http://localhost:8080` (scheme, host, and the port unless it is the scheme's default).
    pub allowed: Vec<String>,
}

impl OriginPolicy {
    /// Whether an upgrade with this `Origin` (if any), sent to `host` (the request's `Host`
    /// header) over `scheme` (`http` or `https`), may proceed.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>, scheme: &str) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        let Some(authority) = origin
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
        else {
            return false;
        };
        // Both sides leave out a default port; anything else (a path, user info) is no
        // browser's Origin and does not match.
        authority.eq_ignore_ascii_case(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_and_no_origin_pass_and_strangers_do_not() {
        let p = OriginPolicy::default();
        assert!(p.allows(None, Some("127.0.0.1:8080"), "http"));
        assert!(p.allows(
            Some("http://127.0.0.1:8080"),
            Some("127.0.0.1:8080"),
            "http"
        ));
        assert!(p.allows(Some("http://Chat.Example"), Some("chat.example"), "http"));
        for (origin, host, scheme) in [
            ("http://evil.example", "127.0.0.1:8080", "http"),
            ("http://127.0.0.1:9999", "127.0.0.1:8080", "http"),
            ("https://127.0.0.1:8080", "127.0.0.1:8080", "http"),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", "https"),
            ("null", "127.0.0.1:8080", "http"),
            ("http://127.0.0.1:8080/x", "127.0.0.1:8080", "http"),
        ] {
            assert!(
                !p.allows(Some(origin), Some(host), scheme),
                "{origin} to {host}"
            );
        }
        assert!(
            !p.allows(Some("http://a"), None, "http"),
            "no Host, no match"
        );
    }

    #[test]
    fn listed_origins_pass() {
        let p = OriginPolicy {
            allowed: vec!["https://chat.example.com".into()],
        };
        assert!(p.allows(
            Some("https://chat.example.com"),
            Some("10.0.0.1:8080"),
            "http"
        ));
        assert!(!p.allows(
            Some("https://evil.example.com"),
            Some("10.0.0.1:8080"),
            "http"
        ));
    }
}
