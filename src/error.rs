//! One error type for the crate, so every failure carries a sentence a user can act on.
//!
//! Errors that come from the outside world (a bad flag, a bad config key, a Redis server
//! that answers garbage, a port that will not bind) are values, never panics: the daemon
//! logs them, answers them over HTTP, or exits non-zero with them at start-up.

use std::fmt;

/// What went wrong, with enough context to name the culprit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A value given by a user (flag, config key, HTTP parameter) is not acceptable.
    InvalidInput(String),
    /// A monitored server could not be reached or answered something unusable.
    Server(String),
    /// Reading or writing a local file or socket failed.
    Io(String),
    /// The cluster cannot take a change now: no leader, no quorum, or a shutdown.
    Unavailable(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(msg)
            | Error::Server(msg)
            | Error::Io(msg)
            | Error::Unavailable(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

/// Builds an [`Error::InvalidInput`] from a format string.
#[macro_export]
macro_rules! invalid_input {
    ($($arg:tt)*) => { $crate::error::Error::InvalidInput(format!($($arg)*)) };
}
