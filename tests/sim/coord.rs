//! The cluster a run simulates, behind the few calls the simulation makes: the
//! ZooKeeper-like coordinator (`cluster.rs`) or a Raft cluster on raft-rs itself
//! (`raft.rs`). Odd seeds run Raft, even seeds the coordinator (so the even seeds draw
//! exactly what they drew before Raft was simulated); a scenario picks with
//! `broker raft`. Here too: a daemon's contact with its cluster (its heartbeat) and its
//! restart.

use super::cluster::{Contact, Coordinator};
use super::raft::RaftCluster;
use super::run::{PROPOSAL_TIMEOUT, Sim, lock};
use super::world::{Ms, Net, Node};
use redis_failover::broker::views::MastersView;
use redis_failover::broker::{Action, ReplicatedState};
use redis_failover::monitor::core::Input;

/// Either cluster.
pub enum Coord {
    Zk(Box<Coordinator>),
    Raft(Box<RaftCluster>),
}

/// A proposal that did not fail.
pub enum Proposed {
    Done,
    /// Not applied yet: poll with this ticket until the proposal timeout.
    Pending(u64),
}

/// Why a proposal failed, and after how long its caller hears so.
pub struct Refusal {
    pub why: String,
    pub after: Ms,
}

impl Coord {
    /// The committed state (for the invariants, the client and the faults).
    pub fn state(&self) -> &ReplicatedState {
        match self {
            Coord::Zk(c) => &c.state,
            Coord::Raft(r) => &r.state,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Coord::Zk(_) => "zookeeper-like coordinator",
            Coord::Raft(_) => "raft (raft-rs)",
        }
    }

    /// What went wrong in the simulated cluster itself.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Coord::Zk(_) => Vec::new(),
            Coord::Raft(r) => r.problems.clone(),
        }
    }

    /// Daemon `d`'s contact (the coordinator's session, or its raft node's tick).
    pub fn contact(
        &mut self,
        d: usize,
        net: &Net,
        now: Ms,
        known: u64,
        running: &[bool],
    ) -> Option<Contact> {
        match self {
            Coord::Zk(c) => c.contact(d, net, now, known),
            Coord::Raft(r) => Some(r.contact(d, net, now, known, running)),
        }
    }

    pub fn propose(
        &mut self,
        d: usize,
        net: &Net,
        now: Ms,
        action: Action,
        running: &[bool],
        waits: bool,
    ) -> Result<Proposed, Refusal> {
        match self {
            Coord::Zk(c) => c
                .propose(d, net, now, action)
                .map(|()| Proposed::Done)
                .map_err(|why| Refusal {
                    why,
                    after: if net.connected(Node::Daemon(d), Node::Coordinator) {
                        2
                    } else {
                        PROPOSAL_TIMEOUT
                    },
                }),
            Coord::Raft(r) => r.propose(d, net, now, action, running, waits),
        }
    }

    /// The result of a pending proposal, once known; with `give_up`, it is dropped.
    pub fn poll(&mut self, d: usize, seq: u64, give_up: bool) -> Option<Result<(), String>> {
        let Coord::Raft(r) = self else {
            return Some(Err("no such proposal".into()));
        };
        let result = r.poll(d, seq);
        if result.is_none() && give_up {
            r.abandon(d, seq);
        }
        result
    }

    pub fn share_view(
        &mut self,
        d: usize,
        net: &Net,
        now: Ms,
        view: MastersView,
        running: &[bool],
    ) {
        match self {
            Coord::Zk(c) => c.share_view(d, net, now, view),
            Coord::Raft(r) => r.share_view(d, net, now, view, running),
        }
    }

    pub fn daemon_restarted(&mut self, d: usize) {
        match self {
            Coord::Zk(c) => c.daemon_restarted(d),
            Coord::Raft(r) => r.daemon_restarted(d),
        }
    }

    /// The state daemon `d`'s broker answers with, and its version.
    pub fn daemon_state(&self, d: usize) -> (u64, ReplicatedState) {
        match self {
            Coord::Zk(c) => (c.version, c.state.clone()),
            Coord::Raft(r) => r.daemon_state(d),
        }
    }
}

impl Sim {
    /// Whether each daemon's process runs now (up and not stalled).
    pub(super) fn running(&self) -> Vec<bool> {
        self.daemons
            .iter()
            .map(|d| d.up && d.stalled_until <= self.now)
            .collect()
    }

    pub(super) fn heartbeat(&mut self, d: usize) {
        let known = lock(&self.daemons[d].belief).version;
        let running = self.running();
        let Some(contact) = self.coord.contact(d, &self.net, self.now, known, &running) else {
            return;
        };
        let (changed, was_leader, state) = {
            let mut b = lock(&self.daemons[d].belief);
            let was_leader = b.leader;
            b.leader = contact.leader;
            b.acting_until = contact
                .lease_until
                .unwrap_or(self.now + self.settings.lease);
            b.views = contact.views;
            let new_state = contact.state.is_some();
            if let Some((version, state)) = contact.state {
                b.version = version;
                b.state = state;
            }
            (
                new_state || was_leader != b.leader,
                was_leader,
                b.state.clone(),
            )
        };
        if changed {
            let leader = contact.leader;
            match (was_leader, leader) {
                (false, true) => self.log(&format!("d{d}"), "leads"),
                (true, false) => self.log(&format!("d{d}"), "no longer acts"),
                _ => {}
            }
            self.step(d, Input::State(std::sync::Arc::new(state)));
        }
    }

    pub(super) fn restart_daemon(&mut self, d: usize) {
        let incarnation = self.daemons[d].incarnation + 1;
        self.coord.daemon_restarted(d);
        let fresh = self.new_daemon(d, incarnation);
        let old = std::mem::replace(&mut self.daemons[d], fresh);
        drop(old);
        self.log(&format!("d{d}"), "starts again with nothing in memory");
        self.at(self.now, super::run::Ev::Heartbeat(d, incarnation));
        self.at(self.now, super::run::Ev::Tick(d, incarnation));
    }

    /// The daemon's belief after its own proposal was applied (the real brokers apply
    /// a committed change locally before `propose` returns).
    pub(super) fn refresh_belief(&mut self, d: usize) {
        let (version, state) = self.coord.daemon_state(d);
        let mut b = lock(&self.daemons[d].belief);
        b.state = state;
        b.version = version;
    }
}
