//! Accepting connections without ever giving up: what each `accept` error means, the
//! spare descriptor kept for when the process runs out of them, refusing a connection
//! with a clear answer, and a throttle for the warnings.
//!
//! A listener whose accept loop ends while the process lives is the worst failure a
//! port can have: systemd sees a running daemon and nobody can reach it. So every error
//! is either retried at once (the connection died in the queue), or handled by making
//! room (out of descriptors), or waited out with a short pause (anything else).

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// How long the listener rests after an error it cannot work around.
pub const PAUSE: Duration = Duration::from_millis(100);

/// What an `accept` error calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// Nothing more to accept now.
    Empty,
    /// That one connection failed (reset or aborted in the queue): accept the next.
    Retry,
    /// The process or the system is out of descriptors (EMFILE, ENFILE).
    Descriptors,
    /// Anything else (ENOBUFS, ENOMEM, ...): pause, then try again.
    Pause,
}

pub fn classify(e: &io::Error) -> AcceptError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => return AcceptError::Descriptors,
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR) => {
            return AcceptError::Retry;
        }
        _ => {}
    }
    match e.kind() {
        ErrorKind::WouldBlock => AcceptError::Empty,
        ErrorKind::Interrupted | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset => {
            AcceptError::Retry
        }
        _ => AcceptError::Pause,
    }
}

/// One descriptor held in reserve. When `accept` fails for want of descriptors, the
/// connection stays in the kernel's queue and the listener stays readable: without a
/// way to take it off the queue, the loop would spin and the client would wait for
/// nothing. Closing the spare frees one descriptor to accept that connection, answer it
/// and close it; then the spare is taken back.
pub struct Spare(Option<File>);

impl Spare {
    pub fn new() -> Spare {
        Spare(File::open("/dev/null").ok())
    }

    /// With the process out of descriptors: accepts one queued connection on the
    /// spare's descriptor and refuses it with `answer`. False when nothing could be
    /// accepted that way.
    pub fn shed(&mut self, listener: &TcpListener, answer: &[u8]) -> bool {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
            if self.0.is_none() {
                return false;
            }
        }
        self.0 = None;
        let refused = match listener.accept() {
            Ok((stream, _)) => {
                // Closes the connection, which frees the descriptor for the spare.
                refuse(stream, answer);
                true
            }
            Err(_) => false,
        };
        self.0 = File::open("/dev/null").ok();
        refused
    }
}

impl Default for Spare {
    fn default() -> Self {
        Spare::new()
    }
}

/// Tells a connection it is refused, as far as its socket takes without waiting, and
/// closes it. What the client already sent is read first (a close with unread input
/// would reset the connection and could lose the answer).
pub fn refuse(mut stream: TcpStream, answer: &[u8]) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.write(answer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Lets a repeated warning through at most once per period, and counts the rest.
#[derive(Default)]
pub struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(n)` when a warning may be logged now, `n` being how many were held back
    /// since the last one.
    pub fn allow(&mut self, now: Instant, every: Duration) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(classify(&os(libc::EMFILE)), AcceptError::Descriptors);
        assert_eq!(classify(&os(libc::ENFILE)), AcceptError::Descriptors);
        assert_eq!(classify(&os(libc::ECONNABORTED)), AcceptError::Retry);
        assert_eq!(classify(&os(libc::EAGAIN)), AcceptError::Empty);
        assert_eq!(classify(&os(libc::ENOBUFS)), AcceptError::Pause);
    }

    #[test]
    fn the_throttle_counts_what_it_holds_back() {
        let mut throttle = Throttle::default();
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        assert_eq!(throttle.allow(t0, every), Some(0));
        assert_eq!(throttle.allow(t0 + Duration::from_secs(1), every), None);
        assert_eq!(throttle.allow(t0 + Duration::from_secs(2), every), None);
        assert_eq!(throttle.allow(t0 + Duration::from_secs(11), every), Some(2));
    }

    #[test]
    fn the_spare_refuses_a_queued_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut spare = Spare::new();
        assert!(spare.shed(&listener, b"go away\n"));
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert_eq!(got, "go away\n");
        assert!(spare.0.is_some(), "the spare is taken back");
    }
}
