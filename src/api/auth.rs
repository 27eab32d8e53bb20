//! Who may use the API: the `api_token` check shared by the HTTP API and the Sentinel
//! port (where the token is the `AUTH` password).
//!
//! With no token set, everything is open, as in the Go original. With `api_token` set,
//! every request that changes something must present it (`Authorization: Bearer <token>`);
//! reads stay open unless `api_token_reads` is true. The comparison takes the same time
//! wherever the presented token first differs.

use crate::secret::Secret;
use std::net::SocketAddr;

/// The access policy of the API.
#[derive(Debug, Clone, Default)]
pub struct ApiAccess {
    token: Option<Secret>,
    reads_need_token: bool,
    /// `http_allowed_hosts`: the `Host` names the HTTP API answers to besides its own
    /// (see `cross_site.rs`).
    allowed_hosts: Vec<String>,
}

/// Why a request was refused: the reason line for the 401 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl ApiAccess {
    pub fn new(token: Option<Secret>, reads_need_token: bool) -> ApiAccess {
        ApiAccess {
            token: token.filter(|t| !t.is_empty()),
            reads_need_token,
            allowed_hosts: Vec::new(),
        }
    }

    /// With the `http_allowed_hosts` setting.
    pub fn with_allowed_hosts(mut self, hosts: Vec<String>) -> ApiAccess {
        self.allowed_hosts = hosts;
        self
    }

    /// The `http_allowed_hosts` setting.
    pub fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    /// Whether `authorization` carries the configured token (false when none is set).
    pub fn token_presented(&self, authorization: Option<&str>) -> bool {
        self.has_token() && self.check(false, authorization).is_ok()
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a request: `read` for requests that change nothing, `authorization` the
    /// raw value of its `Authorization` header, if any.
    pub fn check(&self, read: bool, authorization: Option<&str>) -> Result<(), Refused> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if read && !self.reads_need_token {
            return Ok(());
        }
        let Some(header) = authorization else {
            return Err(Refused(
                "this request needs the API token: send Authorization: Bearer <api_token>",
            ));
        };
        let presented = header
            .trim()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, value)| value.trim());
        match presented {
            None => Err(Refused(
                "the Authorization header must be of the form: Bearer <api_token>",
            )),
            Some(value) if token.matches(value.as_bytes()) => Ok(()),
            Some(_) => Err(Refused("wrong API token")),
        }
    }

    /// Whether a password presented with RESP `AUTH` (Sentinel port) is the token, or
    /// no token is needed.
    pub fn accepts(&self, presented: &str) -> bool {
        self.token
            .as_ref()
            .is_none_or(|token| token.matches(presented.as_bytes()))
    }

    /// Logs a warning when the API listens beyond loopback with nothing guarding it.
    pub fn warn_if_exposed(&self, listening: SocketAddr) {
        if !listening.ip().is_loopback() && self.token.is_none() {
            log::warn!(
                "the HTTP API listens on {listening}, beyond loopback, and no api_token is set: anyone who can reach it can add, remove and move masters"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_without_a_token() {
        let open = ApiAccess::new(None, true);
        assert_eq!(open.check(false, None), Ok(()));
        assert_eq!(
            ApiAccess::new(Some(Secret::new("")), true).check(false, None),
            Ok(())
        );
    }

    #[test]
    fn writes_need_the_token_and_reads_only_when_asked() {
        let access = ApiAccess::new(Some(Secret::new("s3cret")), false);
        assert_eq!(access.check(true, None), Ok(()));
        assert!(access.check(false, None).is_err());
        assert_eq!(access.check(false, Some("Bearer s3cret")), Ok(()));
        assert_eq!(access.check(false, Some("bearer  s3cret ")), Ok(()));
        assert_eq!(
            access.check(false, Some("Bearer s3cre")),
            Err(Refused("wrong API token"))
        );
        assert!(access.check(false, Some("Basic czNjcmV0")).is_err());
        assert!(access.check(false, Some("s3cret")).is_err());
        let strict = ApiAccess::new(Some(Secret::new("s3cret")), true);
        assert!(strict.check(true, None).is_err());
        assert_eq!(strict.check(true, Some("Bearer s3cret")), Ok(()));
    }
}
