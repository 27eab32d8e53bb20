//! TILT: the daemon distrusts its own checks while its own loops run late.
//!
//! A watcher that is starved of CPU, stopped (SIGSTOP, a VM paused), or whose clock jumps
//! sees its checks go out late and its replies read late; counted against the masters,
//! its own slowness would look like their death. Redis Sentinel enters TILT mode when its
//! timer runs 2 s late or backwards, and then does nothing for 30 s. Here the rule is
//! tied to the down window instead:
//!
//! - **Enter** when a loop (the monitor's or a checker's) is late by at least
//!   [`Tilt::threshold`]: a quarter of `max_down_time`, between 200 ms and 2 s; or when
//!   the wall clock moves differently from the monotonic clock by more than
//!   [`CLOCK_JUMP`].
//! - **While in tilt** checks go on and their outcomes are shown, but no failover begins
//!   and this daemon's view counts no master down towards the quorum.
//! - **Leave** once the loops have been on time for a whole window plus one check
//!   interval ([`Tilt::recovery`]): a master found down then has failed on-time checks for
//!   at least `max_down_time`, so the verdict rests on evidence the daemon can trust.
//!
//! The trade-off: a master that dies while the daemon is in tilt is failed over at most
//! `recovery` after the daemon is on time again, not `max_down_time` after it died.
//!
//! This module is pure: it is given the lateness it should judge and the time.

use std::time::{Duration, Instant, SystemTime};

/// The wall clock may drift from the monotonic clock by this much between two turns
/// before it counts as a jump (NTP slews far less; a step of the clock, or a machine
/// resumed after a suspend, moves more).
pub const CLOCK_JUMP: Duration = Duration::from_secs(1);
/// The lowest and highest lateness that enters tilt.
pub const MIN_THRESHOLD: Duration = Duration::from_millis(200);
pub const MAX_THRESHOLD: Duration = Duration::from_secs(2);

/// A change of the tilt state, for the log, the metrics and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TiltChange {
    Entered { why: String },
    Left { lasted: Duration },
}

/// One spell of tilt.
#[derive(Debug, Clone)]
struct Spell {
    since: Instant,
    /// When the last lateness was seen: the spell ends `recovery` after it.
    last_late: Instant,
}

/// The tilt state of one daemon.
#[derive(Debug, Clone)]
pub struct Tilt {
    threshold: Duration,
    recovery: Duration,
    spell: Option<Spell>,
}

impl Tilt {
    pub fn new(check_interval: Duration, max_down_time: Duration) -> Tilt {
        Tilt {
            threshold: (max_down_time / 4).clamp(MIN_THRESHOLD, MAX_THRESHOLD),
            recovery: max_down_time + check_interval,
            spell: None,
        }
    }

    /// How late a loop must be to enter tilt.
    #[cfg(test)]
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// How long the loops must be on time before tilt ends.
    pub fn recovery(&self) -> Duration {
        self.recovery
    }

    pub fn is_on(&self) -> bool {
        self.spell.is_some()
    }

    /// `what` ran `late` behind, as measured at `now`: enters tilt (or prolongs it) when
    /// that is at least the threshold.
    pub fn on_lateness(&mut self, what: &str, late: Duration, now: Instant) -> Option<TiltChange> {
        if late < self.threshold {
            return None;
        }
        let why = format!(
            "{what} ran {} ms late (tilt at {} ms)",
            late.as_millis(),
            self.threshold.as_millis()
        );
        self.late(why, now)
    }

    /// The wall clock moved `wall` while the monotonic clock moved `mono`: a difference
    /// beyond [`CLOCK_JUMP`] enters tilt (or prolongs it).
    pub fn on_clocks(
        &mut self,
        wall: Option<Duration>,
        mono: Duration,
        now: Instant,
    ) -> Option<TiltChange> {
        let why = match wall {
            None => "the wall clock went backwards".to_string(),
            Some(wall) if wall.abs_diff(mono) > CLOCK_JUMP => format!(
                "the wall clock moved {} ms while {} ms passed",
                wall.as_millis(),
                mono.as_millis()
            ),
            Some(_) => return None,
        };
        self.late(why, now)
    }

    fn late(&mut self, why: String, now: Instant) -> Option<TiltChange> {
        match &mut self.spell {
            Some(spell) => {
                spell.last_late = spell.last_late.max(now);
                None
            }
            None => {
                self.spell = Some(Spell {
                    since: now,
                    last_late: now,
                });
                Some(TiltChange::Entered { why })
            }
        }
    }

    /// Ends the spell once the loops have been on time for [`Tilt::recovery`].
    pub fn tick(&mut self, now: Instant) -> Option<TiltChange> {
        let spell = self.spell.as_ref()?;
        if now.saturating_duration_since(spell.last_late) < self.recovery {
            return None;
        }
        let lasted = now.saturating_duration_since(spell.since);
        self.spell = None;
        Some(TiltChange::Left { lasted })
    }
}

/// Compares how far the wall clock and the monotonic clock move between two looks.
#[derive(Debug, Clone, Copy)]
pub struct ClockWatch {
    last: Option<(Instant, SystemTime)>,
}

impl ClockWatch {
    pub fn new() -> ClockWatch {
        ClockWatch { last: None }
    }

    /// The wall clock's move (`None`: backwards) and the monotonic clock's since the last
    /// look; nothing on the first look.
    pub fn look(
        &mut self,
        mono: Instant,
        wall: SystemTime,
    ) -> Option<(Option<Duration>, Duration)> {
        let last = self.last.replace((mono, wall))?;
        let wall_moved = wall.duration_since(last.1).ok();
        Some((wall_moved, mono.saturating_duration_since(last.0)))
    }
}

impl Default for ClockWatch {
    fn default() -> ClockWatch {
        ClockWatch::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tilt() -> Tilt {
        // Checks every 100 ms, down after 1 s: tilt at 250 ms late, over after 1.1 s.
        Tilt::new(100 * MS, 1000 * MS)
    }

    #[test]
    fn the_threshold_is_a_quarter_of_the_window_within_bounds() {
        assert_eq!(tilt().threshold(), 250 * MS);
        assert_eq!(Tilt::new(MS * 10, MS * 300).threshold(), MIN_THRESHOLD);
        assert_eq!(Tilt::new(MS * 1000, MS * 60_000).threshold(), MAX_THRESHOLD);
    }

    #[test]
    fn small_lateness_is_not_tilt() {
        let t0 = Instant::now();
        let mut t = tilt();
        assert_eq!(t.on_lateness("checker", 249 * MS, t0), None);
        assert!(!t.is_on());
    }

    #[test]
    fn a_stall_enters_once_and_leaves_after_a_whole_recovery_on_time() {
        let t0 = Instant::now();
        let mut t = tilt();
        let entered = t.on_lateness("the monitor loop", 900 * MS, t0);
        assert!(
            matches!(&entered, Some(TiltChange::Entered { why }) if why.contains("900 ms late")),
            "{entered:?}"
        );
        assert!(t.is_on());
        // Stalled again 1 s later: still the same spell, no second entry.
        assert_eq!(t.on_lateness("checker-0", 900 * MS, t0 + 1000 * MS), None);
        // Recovery counts from the last lateness.
        assert_eq!(t.tick(t0 + 2000 * MS), None);
        assert_eq!(
            t.tick(t0 + 2100 * MS),
            Some(TiltChange::Left { lasted: 2100 * MS })
        );
        assert!(!t.is_on());
        assert_eq!(t.tick(t0 + 3000 * MS), None);
    }

    #[test]
    fn a_clock_jump_enters_tilt() {
        let t0 = Instant::now();
        let mut t = tilt();
        assert_eq!(t.on_clocks(Some(600 * MS), 500 * MS, t0), None);
        let jumped = t.on_clocks(Some(5000 * MS), 500 * MS, t0);
        assert!(
            matches!(jumped, Some(TiltChange::Entered { .. })),
            "{jumped:?}"
        );
        let mut t = tilt();
        assert!(matches!(
            t.on_clocks(None, 500 * MS, t0),
            Some(TiltChange::Entered { why }) if why.contains("backwards")
        ));
    }

    #[test]
    fn the_clock_watch_compares_both_clocks_between_looks() {
        let mono = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = ClockWatch::new();
        assert_eq!(c.look(mono, wall), None);
        assert_eq!(
            c.look(mono + 100 * MS, wall + 3100 * MS),
            Some((Some(3100 * MS), 100 * MS))
        );
        assert_eq!(c.look(mono + 200 * MS, wall), Some((None, 100 * MS)));
    }
}
