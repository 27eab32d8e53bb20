//! Log lines that a stranger can trigger, at a bounded rate.
//!
//! Anyone who reaches the Raft port can make a node refuse a connection or drop a
//! message, and each refusal is worth a line in the log, with the address it came from.
//! But a flood of them must not fill the disk or drown the lines that matter. So each
//! source (an IP address, a peer id) gets a small burst of lines, then one more per
//! interval; the next line that gets through says how many were left out.

use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sources tracked at once; beyond this, new sources share one budget.
const MAX_SOURCES: usize = 256;
/// The key of the budget shared by sources past [`MAX_SOURCES`].
const OVERFLOW: &str = "*";

/// One source's budget: a token bucket, and the lines it had to refuse.
struct Bucket {
    tokens: u32,
    refilled_at: Instant,
    suppressed: u64,
}

/// A per-source token bucket for log lines.
pub struct LogLimiter {
    burst: u32,
    every: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LogLimiter {
    /// Up to `burst` lines at once per source, then one per `every`.
    pub fn new(burst: u32, every: Duration) -> LogLimiter {
        LogLimiter {
            burst: burst.max(1),
            every: every.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line about `source` may be logged now. `Some(n)`: yes, and `n` lines
    /// about it were left out since the last one that was logged.
    pub fn admit(&self, source: &str) -> Option<u64> {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if !buckets.contains_key(source) && buckets.len() >= MAX_SOURCES {
            // Forget the sources that have been quiet long enough to be full again.
            let full_after = self.every * self.burst;
            buckets
                .retain(|_, b| b.suppressed > 0 || now.duration_since(b.refilled_at) < full_after);
        }
        let key = if buckets.contains_key(source) || buckets.len() < MAX_SOURCES {
            source
        } else {
            OVERFLOW
        };
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
            suppressed: 0,
        });
        let earned = now.duration_since(bucket.refilled_at).as_nanos() / self.every.as_nanos();
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned).min(self.burst);
            bucket.refilled_at = now;
        }
        if bucket.tokens == 0 {
            bucket.suppressed += 1;
            return None;
        }
        bucket.tokens -= 1;
        Some(std::mem::take(&mut bucket.suppressed))
    }
}

/// The tail of a logged line that follows suppressed ones: empty when none were.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar line(s) from this source were not logged)")
    }
}

/// The IP part of `ip:port` (the key for connections from one host).
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_with_a_count_of_the_rest() {
        let limiter = LogLimiter::new(3, Duration::from_millis(200));
        assert_eq!(limiter.admit("a"), Some(0));
        assert_eq!(limiter.admit("a"), Some(0));
        assert_eq!(limiter.admit("a"), Some(0));
        assert_eq!(limiter.admit("a"), None);
        assert_eq!(limiter.admit("a"), None);
        // Another source has its own budget.
        assert_eq!(limiter.admit("b"), Some(0));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            limiter.admit("a"),
            Some(2),
            "the next line counts the left-out ones"
        );
        assert_eq!(limiter.admit("a"), None);
    }

    #[test]
    fn many_sources_share_one_budget_past_the_limit() {
        let limiter = LogLimiter::new(1, Duration::from_secs(3600));
        for n in 0..MAX_SOURCES {
            assert_eq!(limiter.admit(&format!("10.0.0.{n}")), Some(0));
        }
        assert_eq!(limiter.admit("new-1"), Some(0), "the overflow budget");
        assert_eq!(limiter.admit("new-2"), None, "shares it");
        assert!(lock(&limiter.buckets).len() <= MAX_SOURCES + 1);
    }

    #[test]
    fn host_of_drops_the_port() {
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("?"), "?");
    }
}
