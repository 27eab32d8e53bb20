//! Time as the API and the log show it: Unix milliseconds for records, and durations in
//! milliseconds with one decimal for step logs.
//!
//! Also [`Clock`], the failover worker's only source of time: the worker reads the time
//! and sleeps through it, so that a simulation can run the real failover steps on
//! simulated time ([`SystemClock`] is the real one).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the failover worker reads the time and sleeps.
pub trait Clock: Send + Sync {
    /// The monotonic time: step durations, deadlines, how long a master has been down.
    fn now(&self) -> Instant;
    /// Milliseconds since the Unix epoch, for records.
    fn wall_ms(&self) -> u64;
    /// Blocks the caller for `d`.
    fn sleep(&self, d: Duration);
}

/// The system's clocks and `std::thread::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_ms(&self) -> u64 {
        now_ms()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// A monotonic instant in the past, as Unix milliseconds.
pub fn instant_to_unix_ms(at: Instant) -> u64 {
    unix_ms(SystemTime::now() - at.elapsed())
}

/// Milliseconds with one decimal, for logs: most failover steps take well under one.
pub fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// FNV-1a of a text: a stable 64-bit name for an address, never 0 (Raft peer ids, the
/// Sentinel port's run id).
pub fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}
