//! [`Secret`]: a password or token that never shows up in a log line, an error, a
//! `Debug` dump of the config, or the API.
//!
//! The value is only reachable through [`Secret::expose`], so every place that sends it
//! somewhere (`AUTH` to a Redis server) is easy to find, and [`Secret::matches`] compares
//! a presented value in constant time, so a client cannot learn a token byte by byte from
//! how long a refusal takes.

use serde::Deserialize;
use std::fmt;

/// A credential. `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
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
        constant_time_eq(self.0.as_bytes(), presented)
    }
}

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

/// Compares every byte of the longer input, accumulating differences, so the loop never
/// exits early. `black_box` keeps the optimiser from turning it back into a `memcmp`.
pub fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let len = expected.len().max(presented.len());
    let mut difference = (expected.len() != presented.len()) as u8;
    for i in 0..len {
        let a = expected.get(i).copied().unwrap_or(0);
        let b = presented.get(i).copied().unwrap_or(0);
        difference |= std::hint::black_box(a ^ b);
    }
    difference == 0
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
