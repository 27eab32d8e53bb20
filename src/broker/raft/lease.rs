//! The leader's lease: when a Raft node may *act* (check masters, fail them over), as
//! pure functions of plain values, so the raft thread (`node.rs`) and the
//! deterministic simulator (`tests/sim/raft.rs`) follow the very same rule.
//!
//! A node acts while it leads, has applied an entry of its own term (so it knows every
//! committed failover-begin), has not been removed from the membership, and a majority
//! (itself included) answered it within the last half election timeout.

use super::ELECTION_TICKS;
use crate::broker::Action;
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Until when a leader may act: half an election timeout after the moment by which a
/// majority of `voters` (`me` included) had last answered it (`last_heard`, per peer,
/// in the current term). A follower that answered at that moment does not start an
/// election before a whole election timeout has passed, so the lease ends before any
/// other leader can be elected. `None` when no majority has answered yet.
pub fn lease_until(
    voters: &[u64],
    me: u64,
    last_heard: &HashMap<u64, Instant>,
    now: Instant,
    tick: Duration,
) -> Option<Instant> {
    let needed = voters.len() / 2; // answers needed besides this node's own
    let mut heard: Vec<Instant> = voters
        .iter()
        .filter(|id| **id != me)
        .filter_map(|id| last_heard.get(id).copied())
        .collect();
    heard.sort_unstable_by(|a, b| b.cmp(a));
    let quorum_at = if needed == 0 {
        now
    } else {
        *heard.get(needed - 1)?
    };
    Some(quorum_at + tick * (ELECTION_TICKS as u32) / 2)
}

/// Until when this node acts: only a leader that has applied an entry of its own term
/// (`applied_term == term`) and was not removed, for as long as its `lease` lasts.
pub fn acting_until(
    leader: bool,
    applied_term: u64,
    term: u64,
    removed: bool,
    lease: impl FnOnce() -> Option<Instant>,
) -> Option<Instant> {
    (leader && applied_term == term && !removed)
        .then(lease)
        .flatten()
}

/// Whether a node may propose `action` now: only the acting leader begins a failover,
/// so a deposed one's begin never reaches the new leader through raft-rs's forwarding.
pub fn may_propose(action: &Action, acting: bool) -> Result<()> {
    if matches!(action, Action::FailoverBegin { .. }) && !acting {
        return Err(Error::Unavailable(
            "only the acting leader may begin a failover; this node no longer acts".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(100);

    #[test]
    fn the_lease_runs_half_an_election_timeout_from_the_majoritys_answer() {
        let now = Instant::now();
        let heard = HashMap::from([(2, now), (3, now + Duration::from_millis(200))]);
        // Three voters: one answer besides this node's own; the latest counts.
        let until = lease_until(&[1, 2, 3], 1, &heard, now, TICK);
        assert_eq!(until, Some(now + Duration::from_millis(700)));
        // Five voters: two answers needed; the second latest counts.
        let until = lease_until(&[1, 2, 3, 4, 5], 1, &heard, now, TICK);
        assert_eq!(until, Some(now + Duration::from_millis(500)));
        // Nobody answered: no lease; alone, this node is its own majority.
        assert_eq!(lease_until(&[1, 2, 3], 1, &HashMap::new(), now, TICK), None);
        let alone = lease_until(&[1], 1, &HashMap::new(), now, TICK);
        assert_eq!(alone, Some(now + Duration::from_millis(500)));
    }

    #[test]
    fn only_a_caught_up_leader_acts_and_begins_failovers() {
        let at = Instant::now();
        assert_eq!(acting_until(true, 3, 3, false, || Some(at)), Some(at));
        assert_eq!(acting_until(true, 2, 3, false, || Some(at)), None);
        assert_eq!(acting_until(false, 3, 3, false, || Some(at)), None);
        assert_eq!(acting_until(true, 3, 3, true, || Some(at)), None);
        let addr = |host: &str| crate::address::Addr {
            host: host.into(),
            port: 6379,
        };
        let begin = Action::FailoverBegin {
            group: "g".into(),
            old_master: addr("10.0.0.1"),
            new_master: addr("10.0.0.2"),
            replicas: Vec::new(),
            started_at_ms: 0,
            passed_over: Vec::new(),
        };
        assert!(may_propose(&begin, false).is_err());
        assert!(may_propose(&begin, true).is_ok());
        assert!(may_propose(&Action::Delete(Vec::new()), false).is_ok());
    }
}
