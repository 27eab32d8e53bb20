//! [`Timers`]: things due at instants, in buckets by instant.
//!
//! The monitor's timers fall on a few phase points and grid slots, and a checker
//! thread's probe deadlines are shared by every probe of a batch, so thousands of
//! entries share a handful of instants. A bucket per instant makes setting a timer and
//! taking every due one cheap (an ordered map of a few keys), where a binary heap would
//! pay a logarithmic sift for every single entry.

use std::collections::BTreeMap;
use std::time::Instant;

/// Entries due at instants.
pub struct Timers<T> {
    by_time: BTreeMap<Instant, Vec<T>>,
}

impl<T> Default for Timers<T> {
    fn default() -> Timers<T> {
        Timers {
            by_time: BTreeMap::new(),
        }
    }
}

impl<T> Timers<T> {
    pub fn push(&mut self, at: Instant, item: T) {
        self.by_time.entry(at).or_default().push(item);
    }

    /// When the earliest entry is due.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.keys().next().copied()
    }

    /// The earliest bucket, if it is due by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, Vec<T>)> {
        let first = self.next()?;
        if first > now {
            return None;
        }
        self.by_time.remove(&first).map(|items| (first, items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_buckets_come_out_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.push(t0 + Duration::from_millis(20), 'c');
        timers.push(t0 + Duration::from_millis(10), 'a');
        timers.push(t0 + Duration::from_millis(10), 'b');
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        assert!(timers.pop_due(t0).is_none());
        let (at, items) = timers.pop_due(t0 + Duration::from_millis(15)).unwrap();
        assert_eq!(
            (at, items),
            (t0 + Duration::from_millis(10), vec!['a', 'b'])
        );
        assert!(timers.pop_due(t0 + Duration::from_millis(15)).is_none());
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(1)).unwrap().1,
            vec!['c']
        );
        assert_eq!(timers.next(), None);
    }
}
