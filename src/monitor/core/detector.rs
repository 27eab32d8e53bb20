//! Decides, from the outcomes of successive checks, when a master is down.
//!
//! The rule: a master is down once no check has succeeded for `max_down_time` AND at
//! least two checks in a row have failed. The window is measured from the last success,
//! so a single blip never moves a master (the Go original failed over on the first failed
//! check when `max_down_time` was one interval). This module is pure logic over
//! `Instant`s, so the rule is unit-tested without servers.

use std::time::{Duration, Instant};

/// Failed checks in a row needed, besides the elapsed window, before a master is down.
pub const MIN_FAILED_CHECKS: u32 = 2;

/// What the detector concludes after a failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Checks fail, but the window has not passed yet: check again at `recheck_at`
    /// at the latest, so the verdict comes on time.
    Suspect { recheck_at: Instant },
    /// Down: fail over.
    Down,
}

/// The down detector of one master.
#[derive(Debug, Clone)]
pub struct DownDetector {
    max_down_time: Duration,
    last_success: Instant,
    /// The last success itself, which a restart of the window does not move: how long
    /// the master has really been without an answer, for Sentinel's staleness rule and
    /// the failover record.
    last_answer: Instant,
    failures_in_a_row: u32,
    first_failure: Option<Instant>,
}

impl DownDetector {
    /// Starts a window at `now`, as if the master had just answered: a master that was
    /// never reached is still given the full window.
    pub fn new(max_down_time: Duration, now: Instant) -> DownDetector {
        DownDetector {
            max_down_time,
            last_success: now,
            last_answer: now,
            failures_in_a_row: 0,
            first_failure: None,
        }
    }

    pub fn on_success(&mut self, at: Instant) {
        self.last_success = self.last_success.max(at);
        self.last_answer = self.last_answer.max(at);
        self.failures_in_a_row = 0;
        self.first_failure = None;
    }

    pub fn on_failure(&mut self, at: Instant) -> Verdict {
        self.failures_in_a_row += 1;
        self.first_failure.get_or_insert(at);
        let deadline = self.deadline();
        if at >= deadline && self.failures_in_a_row >= MIN_FAILED_CHECKS {
            Verdict::Down
        } else {
            Verdict::Suspect {
                recheck_at: deadline.max(at),
            }
        }
    }

    /// Whether the master is down by now: the verdict a failed check would get.
    pub fn is_down(&self, now: Instant) -> bool {
        now >= self.deadline() && self.failures_in_a_row >= MIN_FAILED_CHECKS
    }

    /// Restarts the window (after an aborted failover, the master gets a full new one);
    /// the last answer stays what it was.
    pub fn restart(&mut self, now: Instant) {
        let last_answer = self.last_answer;
        *self = DownDetector::new(self.max_down_time, now);
        self.last_answer = last_answer;
    }

    /// When the window ends if no check succeeds.
    pub fn deadline(&self) -> Instant {
        self.last_success + self.max_down_time
    }

    pub fn last_success(&self) -> Instant {
        self.last_success
    }

    /// When the master last answered, across restarts of the window.
    pub fn last_answer(&self) -> Instant {
        self.last_answer
    }

    /// When the current run of failures began.
    pub fn first_failure(&self) -> Option<Instant> {
        self.first_failure
    }

    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_restarted_window_keeps_the_last_answer() {
        let t0 = Instant::now();
        let mut d = DownDetector::new(SEC, t0);
        d.on_success(t0);
        d.on_failure(t0 + 500 * MS);
        assert_eq!(d.on_failure(t0 + SEC), Verdict::Down);
        // An aborted attempt: a new window, but the master has not answered since t0.
        d.restart(t0 + 2 * SEC);
        assert_eq!(d.last_success(), t0 + 2 * SEC);
        assert_eq!(d.last_answer(), t0);
        d.on_success(t0 + 3 * SEC);
        assert_eq!(d.last_answer(), t0 + 3 * SEC);
    }

    #[test]
    fn down_only_after_the_whole_window_and_two_failures() {
        let t0 = Instant::now();
        let mut d = DownDetector::new(SEC, t0);
        d.on_success(t0);
        assert!(matches!(
            d.on_failure(t0 + 10 * MS),
            Verdict::Suspect { .. }
        ));
        assert!(
            matches!(d.on_failure(t0 + 999 * MS), Verdict::Suspect { recheck_at } if recheck_at == t0 + SEC)
        );
        assert_eq!(d.on_failure(t0 + SEC), Verdict::Down);
    }

    #[test]
    fn one_failure_is_never_down_even_after_the_window() {
        let t0 = Instant::now();
        let mut d = DownDetector::new(SEC, t0);
        assert!(matches!(
            d.on_failure(t0 + 5 * SEC),
            Verdict::Suspect { .. }
        ));
        assert_eq!(d.on_failure(t0 + 5 * SEC + MS), Verdict::Down);
    }

    #[test]
    fn a_success_inside_the_window_resets_it() {
        let t0 = Instant::now();
        let mut d = DownDetector::new(SEC, t0);
        d.on_failure(t0 + 100 * MS);
        d.on_failure(t0 + 900 * MS);
        d.on_success(t0 + 950 * MS);
        assert!(matches!(
            d.on_failure(t0 + 1500 * MS),
            Verdict::Suspect { .. }
        ));
        assert_eq!(d.on_failure(t0 + 1950 * MS), Verdict::Down);
        d.restart(t0 + 2 * SEC);
        assert!(matches!(
            d.on_failure(t0 + 2500 * MS),
            Verdict::Suspect { .. }
        ));
    }
}
