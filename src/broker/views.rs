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
//!
//! A view counts for the member it came from, as the broker knows it, never for the
//! name written in it: the `daemon` field is the sender's to write, so a member that
//! wrote several names would count several times. The Raft broker keys views by the
//! peer id its transport authenticated (the `raft_secret` handshake, or the peer's
//! certificate with `tls_raft`), a member's only; the ZooKeeper broker by the name of
//! the znode the view was read from (one per daemon; who may write there is
//! ZooKeeper's ACLs' business). So [`Views`] holds at most one view per member, and
//! the quorum never counts more daemons than the cluster has.

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
    /// Who shared it: the sender writes its advertised HTTP address; a view received
    /// holds the member it came from as the broker knows it (see the module doc).
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

/// The views received from the other daemons, at most one per member, each with when
/// it was last renewed.
#[derive(Default)]
pub struct Views {
    by_member: Mutex<HashMap<String, (MastersView, Instant)>>,
}

impl Views {
    /// Keeps `view` as the one of `member` (the sender as the broker authenticated it,
    /// whatever name the view carries); it counts as renewed now if its number changed.
    pub fn record(&self, member: &str, mut view: MastersView) {
        view.daemon = member.to_string();
        let mut views = lock(&self.by_member);
        let renewed = views.get(member).is_none_or(|(old, _)| old.seq != view.seq);
        match views.get_mut(member) {
            Some(entry) if !renewed => entry.0 = view,
            _ => {
                views.insert(member.to_string(), (view, Instant::now()));
            }
        }
    }

    /// Forgets the view of a daemon that left the cluster.
    pub fn forget(&self, member: &str) {
        lock(&self.by_member).remove(member);
    }

    /// The views renewed within `max_age`.
    pub fn fresh(&self, max_age: Duration) -> Vec<MastersView> {
        let mut views = lock(&self.by_member);
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
        views.record("a", view("a", 1, &["g"]));
        views.record("b", view("b", 1, &[]));
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
        views.record("a", view("a", 1, &["g"]));
        views.record("b", view("b", 2, &[]));
        let fresh = views.fresh(Duration::from_millis(20));
        assert_eq!(fresh.len(), 1, "{fresh:?}");
        assert_eq!(fresh[0].daemon, "b");
        let round = MastersView::from_bytes(&view("a", 3, &["g"]).to_bytes()).unwrap();
        assert_eq!(round, view("a", 3, &["g"]));
        assert!(MastersView::from_bytes(b"{").is_err());
    }

    #[test]
    fn a_member_counts_once_whatever_names_it_writes() {
        let views = Views::default();
        for (seq, name) in ["a", "b", "c", "d"].iter().enumerate() {
            views.record("member-1", view(name, seq as u64, &["g"]));
        }
        views.record("member-2", view("a", 1, &["g"]));
        let fresh = views.fresh(Duration::from_secs(5));
        assert_eq!(fresh.len(), 2, "{fresh:?}");
        let mut who: Vec<&str> = fresh.iter().map(|v| v.daemon.as_str()).collect();
        who.sort_unstable();
        assert_eq!(
            who,
            ["member-1", "member-2"],
            "views carry the member, not the name"
        );
        views.forget("member-1");
        assert_eq!(views.fresh(Duration::from_secs(5)).len(), 1);
    }
}
