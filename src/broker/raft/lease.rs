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
