//! What each daemon of a cluster sees of the masters, shared among them: Sentinel's
//! "is this master down for you too?" without a vote per question.
//!
//! Every daemon checks every master. Each one shares its view, the masters it finds down
//! (no successful check for the whole window), with the others at every check interval:
//! over the Raft links, or through a znode of its own with ZooKeeper. The acting daemon
//! fails a master over only when at least `quorum` daemons, itself included, find it
//! down and their views are fresh: a view not renewed for a few check intervals (its
//! daemon is dead, or cut off) does not count. So a leader cut off from a master alone
//! never begins a failover, and a minority of dead daemons does not stop one.

use crate::address::Addr;
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest view accepted from a peer (10,000 groups all down take about 600 KB).
pub const MAX_VIEW_BYTES: usize = 4 * 1024 * 1024;

/// One daemon's view of the masters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MastersView {
    /// The daemon's advertised HTTP address: unique in a cluster, and stable.
    pub daemon: String,
    /// Grows with every view the daemon shares; a view whose number does not change
    /// is not renewed (how a ZooKeeper reader tells a fresh view from an old one).
    pub seq: u64,
    /// The masters this daemon finds down.
    pub down: Vec<DownMaster>,
}

/// A master one daemon finds down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownMaster {
    pub group: String,
    pub master: Addr,
}

impl MastersView {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<MastersView, String> {
        if bytes.len() > MAX_VIEW_BYTES {
            return Err(format!("a view of {} bytes is over the limit", bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable view: {e}"))
    }

    /// Whether this view finds `master` of `group` down.
    pub fn finds_down(&self, group: &str, master: &Addr) -> bool {
        self.down
            .iter()
            .any(|d| d.group == group && d.master == *master)
    }
}

/// The views received from the other daemons, each with when it was last renewed.
#[derive(Default)]
pub struct Views {
    by_daemon: Mutex<HashMap<String, (MastersView, Instant)>>,
}

impl Views {
    /// Keeps a view; it counts as renewed now if its number changed.
    pub fn record(&self, view: MastersView) {
        let mut views = lock(&self.by_daemon);
        let renewed = views
            .get(&view.daemon)
            .is_none_or(|(old, _)| old.seq != view.seq);
        match views.get_mut(&view.daemon) {
            Some(entry) if !renewed => entry.0 = view,
            _ => {
                views.insert(view.daemon.clone(), (view, Instant::now()));
            }
        }
    }

    /// The views renewed within `max_age`.
    pub fn fresh(&self, max_age: Duration) -> Vec<MastersView> {
        let mut views = lock(&self.by_daemon);
        // Views of daemons gone for long are forgotten.
        views.retain(|_, (_, at)| at.elapsed() < max_age.max(Duration::from_secs(60)));
        views
            .values()
            .filter(|(_, at)| at.elapsed() <= max_age)
            .map(|(view, _)| view.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(daemon: &str, seq: u64, down: &[&str]) -> MastersView {
        MastersView {
            daemon: daemon.into(),
            seq,
            down: down
                .iter()
                .map(|g| DownMaster {
                    group: (*g).into(),
                    master: Addr::parse("h:1").unwrap(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_view_counts_while_it_is_renewed() {
        let views = Views::default();
        views.record(view("a", 1, &["g"]));
        views.record(view("b", 1, &[]));
        let fresh = views.fresh(Duration::from_secs(1));
        assert_eq!(fresh.len(), 2);
        assert!(
            fresh
                .iter()
                .any(|v| v.finds_down("g", &Addr::parse("h:1").unwrap()))
        );
        assert!(!fresh[0].finds_down("g", &Addr::parse("h:2").unwrap()));
        std::thread::sleep(Duration::from_millis(30));
        // The same number again is no renewal.
        views.record(view("a", 1, &["g"]));
        views.record(view("b", 2, &[]));
        let fresh = views.fresh(Duration::from_millis(20));
        assert_eq!(fresh.len(), 1, "{fresh:?}");
        assert_eq!(fresh[0].daemon, "b");
        let round = MastersView::from_bytes(&view("a", 3, &["g"]).to_bytes()).unwrap();
        assert_eq!(round, view("a", 3, &["g"]));
        assert!(MastersView::from_bytes(b"{").is_err());
    }
}
