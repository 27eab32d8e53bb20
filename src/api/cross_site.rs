//! Requests a web browser sends on behalf of a page the operator never chose: cross-site
//! requests (a form or `fetch` on any page open in a browser on a host that can reach
//! the API) and DNS rebinding (a page whose name is re-pointed at the API's address,
//! so that the browser treats the API as that page's own origin and lets it read the
//! answers).
//!
//! The rules, checked before the token:
//!
//! - **Host** (every request): the `Host` header must name the API: an IP literal (an
//!   address cannot be rebound), `localhost`, the listen address's host, or a name in
//!   `http_allowed_hosts` (`*` turns the check off). The port is not compared (a proxy
//!   may change it). A request with no `Host` (HTTP/1.0 by hand) passes: browsers
//!   always send one.
//! - **Origin** (requests that change something): when present it must be the API's
//!   own, `http(s)://` plus the request's `Host`. `Origin: null` (sandboxed frames,
//!   local files) is refused.
//! - **Form bodies** (requests that change something): a browser sends a
//!   `text/plain` or `multipart/form-data` body cross-site without asking first, so
//!   they need a valid `Authorization: Bearer <api_token>` (a header no page can add
//!   to another site's request without a preflight the API never approves). A body
//!   that is `application/x-www-form-urlencoded` (or has no type) is what `curl -d`
//!   sends and is accepted without a token, unless the request carries a mark only a
//!   browser sets (`Origin`, `Referer`, `Sec-Fetch-*`, `Cookie`).
//!
//! What stays the operator's job: who can reach the port at all (a token, TLS and the
//! network), and a browser old enough to send neither `Origin` nor `Sec-Fetch-*` on a
//! form post with its `Referer` suppressed.

use crate::net::http::Request;
use std::net::{IpAddr, SocketAddr};

/// Which `Host` names the API answers to.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// Lowercase names from `http_allowed_hosts`, without ports.
    names: Vec<String>,
    /// `*` was given: any `Host` passes.
    any: bool,
}

/// Why a request was refused: the reason line of the 403 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forbidden(pub String);

impl AllowedHosts {
    /// From the `http_allowed_hosts` setting (names, `name:port` or `*`), plus the
    /// listen address's host.
    pub fn new(configured: &[String], listen_host: &str) -> AllowedHosts {
        let mut names = Vec::new();
        let mut any = false;
        for item in configured
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            if item == "*" {
                any = true;
            } else {
                names.push(normalize(host_part(item)));
            }
        }
        names.push(normalize(listen_host));
        AllowedHosts { names, any }
    }

    /// Whether `host` (a `Host` header value, with or without a port) names the API.
    fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = normalize(host_part(host));
        name == "localhost" || name.parse::<IpAddr>().is_ok() || self.names.contains(&name)
    }
}

/// A host name as compared: lowercase, no trailing dot, no IPv6 brackets.
fn normalize(host: &str) -> String {
    let host = host.trim().trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.to_ascii_lowercase()
}

/// The host of `host[:port]` or `[v6][:port]`.
fn host_part(authority: &str) -> &str {
    let authority = authority.trim();
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has more than one colon: keep it whole.
        Some((host, _)) if !host.contains(':') => host,
        _ => authority,
    }
}

/// The media type of a `Content-Type` value, lowercase, without parameters.
fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Headers only a browser sets on its own.
const BROWSER_MARKS: &[&str] = &[
    "origin",
    "referer",
    "sec-fetch-site",
    "sec-fetch-mode",
    "cookie",
];

/// Checks a request against the rules above. `changes` is true for requests that change
/// something; `token_valid` whether it carries the configured API token.
pub fn check(
    allowed: &AllowedHosts,
    request: &Request,
    changes: bool,
    token_valid: bool,
) -> Result<(), Forbidden> {
    let host = request.header("host");
    if let Some(host) = host.filter(|h| !allowed.allows(h)) {
        return Err(Forbidden(format!(
            "Host {host:?} is not a name this API answers to (a DNS rebinding page?); add it to http_allowed_hosts if it is yours"
        )));
    }
    if !changes {
        return Ok(());
    }
    if let Some(origin) = request.header("origin") {
        let own = host.is_some_and(|host| {
            let origin = origin.trim().to_ascii_lowercase();
            let host = host.trim().to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
        if !own {
            return Err(Forbidden(format!(
                "cross-site request refused: Origin {origin:?} is not this API's own"
            )));
        }
    }
    if token_valid {
        return Ok(());
    }
    let content_type = request.header("content-type").map(media_type);
    match content_type.as_deref() {
        Some("text/plain" | "multipart/form-data") => Err(Forbidden(
            "a text/plain or multipart/form-data body (what any web page can make a browser send) needs Authorization: Bearer <api_token>; send the parameters in the query string or as application/x-www-form-urlencoded".into(),
        )),
        Some("application/x-www-form-urlencoded") | None
            if !request.body.is_empty() || content_type.is_some() =>
        {
            match BROWSER_MARKS.iter().find(|mark| request.header(mark).is_some()) {
                Some(mark) => Err(Forbidden(format!(
                    "a form post from a browser (it sent {mark}) needs Authorization: Bearer <api_token>"
                ))),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// The listen address's host, as [`AllowedHosts::new`] takes it.
pub fn listen_host(addr: SocketAddr) -> String {
    addr.ip().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: method.into(),
            target: "/master".into(),
            minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.as_bytes().to_vec(),
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        }
    }

    fn allowed() -> AllowedHosts {
        AllowedHosts::new(&["Failover.Example.".into(), "ops:8080".into()], "0.0.0.0")
    }

    #[test]
    fn hosts_that_name_the_api() {
        let a = allowed();
        for host in [
            "127.0.0.1:11000",
            "localhost:11000",
            "LOCALHOST",
            "[::1]:11000",
            "::1",
            "10.1.2.3",
            "failover.example:11000",
            "ops",
        ] {
            assert!(a.allows(host), "{host}");
        }
        for host in ["evil.example:11000", "localhost.evil.example", "[::1", ""] {
            assert!(!a.allows(host), "{host}");
        }
        assert!(AllowedHosts::new(&["*".into()], "127.0.0.1").allows("evil.example"));
    }

    #[test]
    fn curl_forms_pass_and_browser_forms_do_not() {
        let a = allowed();
        let host = ("Host", "127.0.0.1:11000");
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        let ok = |r: Request, token: bool| check(&a, &r, r.method != "GET", token);
        assert_eq!(ok(request("POST", &[host], ""), false), Ok(()));
        assert_eq!(
            ok(request("POST", &[host, form], "masters=a:1"), false),
            Ok(())
        );
        assert_eq!(ok(request("POST", &[host], "masters=a:1"), false), Ok(()));
        let evil = ("Origin", "http://evil.example");
        assert!(ok(request("POST", &[host, evil, form], "masters=a:1"), true).is_err());
        assert!(ok(request("POST", &[("Host", "evil.example:11000")], ""), true).is_err());
        assert!(ok(request("GET", &[("Host", "evil.example:11000")], ""), false).is_err());
        assert_eq!(ok(request("GET", &[host, evil], ""), false), Ok(()));
        let own = ("Origin", "http://127.0.0.1:11000");
        assert!(ok(request("POST", &[host, own, form], "masters=a:1"), false).is_err());
        assert_eq!(
            ok(request("POST", &[host, own, form], "masters=a:1"), true),
            Ok(())
        );
        assert_eq!(ok(request("POST", &[host, own], ""), false), Ok(()));
        let plain = ("Content-Type", "text/plain;charset=UTF-8");
        assert!(ok(request("POST", &[host, plain], "masters=a:1"), false).is_err());
        assert_eq!(
            ok(request("POST", &[host, plain], "masters=a:1"), true),
            Ok(())
        );
        assert!(ok(request("POST", &[host, ("Origin", "null")], ""), true).is_err());
        let json = ("Content-Type", "application/json");
        assert_eq!(ok(request("POST", &[host, json], "{}"), false), Ok(()));
    }
}
