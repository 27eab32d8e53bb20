//! What the daemon counts as it runs: checks and their latency per group, failover
//! outcomes, and the monitor's heartbeat.
//!
//! The monitor calls [`Metrics::on_check`] when a master check completes and beats
//! [`Metrics::monitor_heartbeat`] on every turn of its loop; the failover worker calls
//! [`Metrics::on_failover`] when an attempt ends. Those are the only writers, and they
//! take one short lock (counters) or none (the histogram and the heartbeat are atomics).
//! The `/metrics` page (`api/metrics.rs`) reads them at scrape time.

use crate::broker::{Outcome, ReplicatedState};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds, in seconds, of the check latency histogram's buckets (`+Inf` follows).
pub const CHECK_DURATION_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Failover outcomes as the API spells them, in the order of [`GroupCounters::failovers`].
pub const OUTCOMES: [(Outcome, &str); 3] = [
    (Outcome::Succeeded, "succeeded"),
    (Outcome::Aborted, "aborted"),
    (Outcome::Failed, "failed"),
];

/// Counters of one group, kept by this process, as the page shows them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupCounters {
    pub checks: u64,
    pub check_failures: u64,
    /// By outcome, in [`OUTCOMES`] order.
    pub failovers: [u64; 3],
}

/// A group's check counters, counted without a lock: the monitor holds one per watch,
/// so a check costs two atomic additions rather than a lookup under a lock.
#[derive(Debug, Default)]
pub struct CheckCounts {
    checks: AtomicU64,
    failures: AtomicU64,
}

impl CheckCounts {
    pub fn record(&self, ok: bool) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the registry keeps per group.
#[derive(Debug, Default)]
struct GroupEntry {
    checks: Arc<CheckCounts>,
    failovers: [u64; 3],
}

/// Proof that a thread keeps turning: it calls [`Heartbeat::beat`] on every turn of its
/// loop, and anyone can ask how long ago that was. The systemd watchdog pings only while
/// the monitor's heartbeat is fresh, so a monitor that hangs gets the daemon restarted.
pub struct Heartbeat {
    born: Instant,
    /// Milliseconds after `born` of the last beat.
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat (since creation when there was none).
    pub fn age(&self) -> Duration {
        let now = self.born.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat::new()
    }
}

/// A histogram as the page shows it.
pub struct CheckHistogram {
    /// Counts per bucket of [`CHECK_DURATION_BUCKETS`] (not cumulative), then above all.
    pub counts: Vec<u64>,
    pub sum_secs: f64,
}

/// Durations counted into the buckets of [`CHECK_DURATION_BUCKETS`], lock-free.
struct Histogram {
    /// Counts per bucket (not cumulative); the last slot is above every bound.
    buckets: [AtomicU64; CHECK_DURATION_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = CHECK_DURATION_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(CHECK_DURATION_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> CheckHistogram {
        CheckHistogram {
            counts: self
                .buckets
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// The registry shared by the monitor, the checkers, the failover worker and the API.
pub struct Metrics {
    groups: Mutex<HashMap<String, GroupEntry>>,
    check_durations: Histogram,
    /// From when a check was due to when it was sent.
    check_lags: Histogram,
    monitor_heartbeat: Heartbeat,
    /// The heartbeats of the checker threads, by thread name.
    heartbeats: Mutex<Vec<(String, Arc<Heartbeat>)>>,
    /// Daemons, this one included, whose view of the masters was fresh at the last
    /// exchange of views: those that can count toward the quorum.
    daemons_reporting: AtomicUsize,
    /// When this daemon's current tilt began (Unix ms), 0 when not in tilt.
    tilt_since_ms: AtomicU64,
    /// Times this daemon entered tilt.
    tilt_entries: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            groups: Mutex::new(HashMap::new()),
            check_durations: Histogram::new(),
            check_lags: Histogram::new(),
            monitor_heartbeat: Heartbeat::new(),
            heartbeats: Mutex::new(Vec::new()),
            daemons_reporting: AtomicUsize::new(1),
            tilt_since_ms: AtomicU64::new(0),
            tilt_entries: AtomicU64::new(0),
        }
    }

    /// When this daemon's tilt began (Unix ms), while it is in tilt.
    pub fn tilt_since_ms(&self) -> Option<u64> {
        Some(self.tilt_since_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Times this daemon entered tilt.
    pub fn tilt_entries(&self) -> u64 {
        self.tilt_entries.load(Ordering::Relaxed)
    }

    /// Tilt began (at `Some` Unix ms) or ended (`None`).
    pub fn set_tilt(&self, since_ms: Option<u64>) {
        if since_ms.is_some() {
            self.tilt_entries.fetch_add(1, Ordering::Relaxed);
        }
        // 0 means "not in tilt", so a spell that began at 0 is stored as 1.
        self.tilt_since_ms
            .store(since_ms.map_or(0, |ms| ms.max(1)), Ordering::Relaxed);
    }

    /// Daemons, this one included, whose view of the masters is fresh.
    pub fn daemons_reporting(&self) -> usize {
        self.daemons_reporting.load(Ordering::Relaxed)
    }

    pub fn set_daemons_reporting(&self, daemons: usize) {
        self.daemons_reporting.store(daemons, Ordering::Relaxed);
    }

    /// A master check of `group` completed after `took`, successfully or not.
    pub fn on_check(&self, group: &str, took: Duration, ok: bool) {
        self.check_durations.observe(took);
        self.update(group, |c| c.checks.record(ok));
    }

    /// The check counters of `group`, to count its checks with
    /// ([`Metrics::on_check_counted`]) without looking the group up each time.
    pub fn check_counts(&self, group: &str) -> Arc<CheckCounts> {
        let mut found = None;
        self.update(group, |c| found = Some(c.checks.clone()));
        found.unwrap_or_default()
    }

    /// A master check that took `took` and was counted in its group's [`CheckCounts`].
    pub fn on_check_counted(&self, counts: &CheckCounts, took: Duration, ok: bool) {
        self.check_durations.observe(took);
        counts.record(ok);
    }

    /// A failover attempt of `group` ended with `outcome`.
    pub fn on_failover(&self, group: &str, outcome: Outcome) {
        let slot = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.update(group, |c| c.failovers[slot] += 1);
    }

    /// A check was sent `lag` after it was due.
    pub fn on_check_lag(&self, lag: Duration) {
        self.check_lags.observe(lag);
    }

    /// The monitor loop's heartbeat (see [`Heartbeat`]).
    pub fn monitor_heartbeat(&self) -> &Heartbeat {
        &self.monitor_heartbeat
    }

    /// A heartbeat for another thread whose loop must keep turning (a checker).
    pub fn register_heartbeat(&self, thread: &str) -> Arc<Heartbeat> {
        let heartbeat = Arc::new(Heartbeat::new());
        lock(&self.heartbeats).push((thread.to_string(), heartbeat.clone()));
        heartbeat
    }

    /// Every thread's heartbeat age, the monitor's first.
    pub fn heartbeat_ages(&self) -> Vec<(String, Duration)> {
        let mut ages = vec![("monitor".to_string(), self.monitor_heartbeat.age())];
        ages.extend(
            lock(&self.heartbeats)
                .iter()
                .map(|(name, h)| (name.clone(), h.age())),
        );
        ages
    }

    /// The thread whose heartbeat is the oldest, and its age.
    pub fn stalest_heartbeat(&self) -> (String, Duration) {
        self.heartbeat_ages()
            .into_iter()
            .max_by_key(|(_, age)| *age)
            .unwrap_or_default()
    }

    fn update(&self, group: &str, change: impl FnOnce(&mut GroupEntry)) {
        let mut groups = lock(&self.groups);
        // Look up before inserting: this runs on every check, and `entry` would allocate
        // the key each time.
        match groups.get_mut(group) {
            Some(counters) => change(counters),
            None => change(groups.entry(group.to_string()).or_default()),
        }
    }

    /// Counters of the groups in `state`; those of groups no longer monitored are
    /// dropped (a group added again starts from zero, which Prometheus reads as a reset).
    pub fn counters_for(&self, state: &ReplicatedState) -> HashMap<String, GroupCounters> {
        let mut groups = lock(&self.groups);
        groups.retain(|name, _| state.groups.contains_key(name));
        groups
            .iter()
            .map(|(name, entry)| {
                let counters = GroupCounters {
                    checks: entry.checks.checks.load(Ordering::Relaxed),
                    check_failures: entry.checks.failures.load(Ordering::Relaxed),
                    failovers: entry.failovers,
                };
                (name.clone(), counters)
            })
            .collect()
    }

    /// The check latency histogram so far.
    pub fn check_histogram(&self) -> CheckHistogram {
        self.check_durations.snapshot()
    }

    /// The check lag histogram so far.
    pub fn lag_histogram(&self) -> CheckHistogram {
        self.check_lags.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_age_grows_until_the_next_beat() {
        let h = Heartbeat::new();
        h.beat();
        assert!(h.age() < Duration::from_secs(1));
    }
}
