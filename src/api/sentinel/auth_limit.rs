//! A rate limit on failed `AUTH` (and `HELLO ... AUTH`) on the Sentinel port, per source
//! address, with a log line for each failure it lets through.
//!
//! The token is the password of the port. Without a limit, one connection can pipeline
//! thousands of guesses per packet. Each address may fail [`BURST`] times at once, then
//! once per [`REFILL`]; an attempt beyond is refused without being checked, and the
//! connection is closed. A right password never costs anything. So a client that
//! mistyped gets its retries, and guessing runs at one try a second per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed attempts an address may make at once.
pub const BURST: u32 = 10;
/// One more failed attempt is allowed per this long.
pub const REFILL: Duration = Duration::from_secs(1);
/// Addresses tracked before those back at a full allowance are forgotten.
const TRACKED: usize = 4096;

/// An address's allowance of failed attempts.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: u32,
    /// When `left` was last topped up.
    updated: Instant,
    /// Whether the refusal was logged since the allowance last ran out.
    logged_refusal: bool,
}

/// The failed `AUTH` limit of the port (on its loop thread).
#[derive(Debug, Default)]
pub struct AuthLimiter {
    by_source: HashMap<IpAddr, Allowance>,
}

impl AuthLimiter {
    /// Whether `source` may try a password now.
    pub fn may_try(&mut self, source: IpAddr, now: Instant) -> bool {
        let Some(allowance) = self.by_source.get_mut(&source) else {
            return true;
        };
        refill(allowance, now);
        if allowance.left > 0 {
            return true;
        }
        if !allowance.logged_refusal {
            allowance.logged_refusal = true;
            log::warn!(
                "sentinel: AUTH from {source} refused without checking: more than {BURST} failed attempts (one more allowed per {} s); closing its connections as they try",
                REFILL.as_secs()
            );
        }
        false
    }

    /// Records a failed attempt from `source`, and logs it.
    pub fn failed(&mut self, source: IpAddr, now: Instant) {
        if self.by_source.len() >= TRACKED && !self.by_source.contains_key(&source) {
            self.by_source.retain(|_, a| {
                refill(a, now);
                a.left < BURST
            });
        }
        let allowance = self.by_source.entry(source).or_insert(Allowance {
            left: BURST,
            updated: now,
            logged_refusal: false,
        });
        refill(allowance, now);
        allowance.left = allowance.left.saturating_sub(1);
        log::warn!(
            "sentinel: failed AUTH from {source} ({} more failures allowed now)",
            allowance.left
        );
    }
}

/// Adds the attempts earned since the last top-up.
fn refill(allowance: &mut Allowance, now: Instant) {
    let earned = now.saturating_duration_since(allowance.updated).as_millis() / REFILL.as_millis();
    if earned > 0 {
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        allowance.left = allowance.left.saturating_add(earned).min(BURST);
        allowance.updated += REFILL * earned.min(BURST);
        if allowance.left == BURST {
            allowance.updated = now;
        }
        allowance.logged_refusal = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_limited_per_address_and_refill() {
        let mut limiter = AuthLimiter::default();
        let now = Instant::now();
        let guesser: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..BURST {
            assert!(limiter.may_try(guesser, now));
            limiter.failed(guesser, now);
        }
        assert!(!limiter.may_try(guesser, now), "the burst is spent");
        assert!(
            limiter.may_try(other, now),
            "another address is not limited"
        );
        let later = now + REFILL;
        assert!(limiter.may_try(guesser, later), "one more a second");
        limiter.failed(guesser, later);
        assert!(!limiter.may_try(guesser, later));
        assert!(limiter.may_try(guesser, now + REFILL * (BURST + 5)));
    }
}
