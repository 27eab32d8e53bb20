//! Fault injection for tests that need the daemon stopped at a precise moment (a leader
//! killed between failover-begin and promotion, a replica stopped while writes are
//! paused, a checker thread that stalls). Each point is named by an environment
//! variable holding milliseconds; unset, it costs one `getenv` on a path that runs once
//! per failover (or once per checker thread).

use crate::clock::Clock;
use std::time::Duration;

/// A point where the worker can be held: its variable and where it is.
pub type Point = (&'static str, &'static str);

/// Between failover-begin and promotion (`failover.rs`).
pub const PAUSE_AFTER_BEGIN: Point = (
    "REDIS_FAILOVER_PAUSE_AFTER_BEGIN_MS",
    "after failover-begin",
);
/// After a switchover paused the writes (`switchover.rs`).
pub const HOLD_AFTER_PAUSE: Point = ("REDIS_FAILOVER_SWITCHOVER_HOLD_MS", "after the pause");

/// Once the checker thread `checker-0` has run this long, it stops turning for a minute:
/// a stalled checker pool, which must stop the systemd watchdog's pings.
pub const STALL_CHECKER_AFTER: &str = "REDIS_FAILOVER_STALL_CHECKER_AFTER_MS";

/// The milliseconds in `variable`, if it is set.
pub fn duration(variable: &str) -> Option<Duration> {
    std::env::var(variable)
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// Sleeps on `clock` for the milliseconds in the point's variable, if it is set,
/// logging why.
pub fn pause_if_set((variable, place): Point, clock: &dyn Clock) {
    let pause = std::env::var(variable)
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = pause {
        log::warn!("pausing {ms} ms {place} ({variable})");
        clock.sleep(Duration::from_millis(ms));
    }
}
