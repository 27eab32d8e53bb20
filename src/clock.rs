//! Time as the API and the log show it: Unix milliseconds for records, and durations in
//! milliseconds with one decimal for step logs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
