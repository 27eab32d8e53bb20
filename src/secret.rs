//! [`Secret`]: a password or token that never shows up in a log line, an error, a
//! `Debug` dump of the config, or the API.
//!
//! The value is only reachable through [`Secret::expose`], so every place that sends it
//! somewhere (`AUTH` to a Redis server) is easy to find, and [`Secret::matches`] (and
//! `==`) compares in constant time (the `subtle` crate), so a client cannot learn a token
//! byte by byte from how long a refusal takes.

use serde::Deserialize;
use std::fmt;
use subtle::ConstantTimeEq;

/// A credential. `Debug` and `Display` print `<redacted>`; `==` takes constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `presented` equals this secret. The time taken depends only on the lengths,
    /// never on where the first differing byte is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

/// Two secrets are compared like a presented one: in constant time.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.matches(other.0.as_bytes())
    }
}

impl Eq for Secret {}

/// For flags (argh parses option values with `FromStr`): any text is a secret.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret::new(text))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(
            format!("{:?}", Some(s.clone())),
            "Some(<redacted>)",
            "inside an Option too"
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn matches_only_the_exact_value() {
        let s = Secret::new("token");
        assert!(s.matches(b"token"));
        for other in [&b""[..], b"toke", b"tokens", b"Token", b"token\0"] {
            assert!(!s.matches(other), "{other:?}");
        }
        assert!(Secret::new("").matches(b""));
    }
}
