//! Which peer messages the raft thread steps.
//!
//! The transport checks who a connection says it is (and, with `raft_secret`, that it
//! proved it); only the raft thread knows the cluster's configuration. So a message is
//! stepped here only if it is addressed to this node and comes from a member of the
//! configuration this node knows: a voter or a learner. A node with no configuration
//! yet (a new node waiting to be added) takes messages from anyone, since it cannot
//! tell its future leader from a stranger; see docs/raft.md on why a cluster reachable
//! by strangers needs `raft_secret`.
//!
//! Without this, a stranger could say hello as any address that is not a member, and
//! its proposals would be committed, or its heartbeats with a huge term would keep the
//! cluster from ever settling on a leader.
//!
//! One exception: a member that was just removed is still heard for a short grace
//! period, so that a removed leader can hand leadership over to a remaining member
//! (`node.rs`, `hand_over_if_removed`) instead of leaving it to an election timeout.

use super::log_limit::{LogLimiter, host_of, suppressed_note};
use raft::eraftpb::Message;
use raft::{Raft, Storage};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Drops the messages a node must not step, with a log line at a bounded rate.
pub struct Admission {
    refusals: LogLimiter,
    /// How long a removed member is still heard.
    grace: Duration,
    /// Members removed lately, and when.
    removed: HashMap<u64, Instant>,
}

impl Admission {
    pub fn new(grace: Duration) -> Admission {
        Admission {
            refusals: LogLimiter::new(20, Duration::from_secs(1)),
            grace,
            removed: HashMap::new(),
        }
    }

    /// A member has just been removed from the configuration.
    pub fn removed(&mut self, id: u64) {
        let grace = self.grace;
        self.removed.retain(|_, at| at.elapsed() < grace);
        self.removed.insert(id, Instant::now());
    }

    /// Whether `message`, received from the connection at `origin`, may be stepped.
    pub fn admits<S: Storage>(&self, raft: &Raft<S>, message: &Message, origin: &str) -> bool {
        let Some(why) = refusal(raft, message) else {
            return true;
        };
        let lately_removed = self
            .removed
            .get(&message.from)
            .is_some_and(|at| at.elapsed() < self.grace);
        if lately_removed && message.to == raft.id && message.from != raft.id {
            return true;
        }
        if let Some(suppressed) = self.refusals.admit(host_of(origin)) {
            log::warn!(
                "raft: dropped a {:?} (term {}) from peer {:x} to {:x}, on the connection from {origin}: {why}{}",
                message.get_msg_type(),
                message.term,
                message.from,
                message.to,
                suppressed_note(suppressed)
            );
        }
        false
    }
}

/// Why a message must not be stepped, if it must not.
fn refusal<S: Storage>(raft: &Raft<S>, message: &Message) -> Option<&'static str> {
    if message.to != raft.id {
        return Some("it is not addressed to this node");
    }
    if message.from == raft.id {
        return Some("it claims to come from this node");
    }
    let configured = raft.prs().conf().voters().ids().iter().next().is_some();
    if configured && raft.prs().get(message.from).is_none() {
        return Some("the sender is not a member of this node's configuration");
    }
    None
}
