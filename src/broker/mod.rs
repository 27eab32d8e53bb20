//! The broker owns the replicated state (the monitored groups and their failover history)
//! and decides which daemon acts.
//!
//! Everything above the broker (checker, detector, failover worker, HTTP) is the same
//! code whatever the cluster: it proposes [`Action`]s and reads [`ReplicatedState`]. A
//! standalone daemon applies actions in memory ([`standalone`]); the Raft broker
//! ([`raft`]) replicates the same actions in the same order to every daemon, so every
//! node computes the same state from them; the ZooKeeper broker ([`zk`]) keeps the state
//! itself in a znode and changes it with version-checked writes.

pub mod holds;
pub mod raft;
pub mod standalone;
mod state;
pub mod views;
pub mod zk;

pub use state::{
    Action, AttemptKind, DaemonInfo, FAILOVER_HISTORY, FailoverRecord, Group, GroupSpec, Outcome,
    PassedOver, Pause, ReplicatedState, Step,
};

use crate::address::Addr;
use crate::error::Result;
use crate::invalid_input;
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;
use views::MastersView;

/// How long a change may wait to become part of the replicated state before the caller
/// gets 503 (no leader, no quorum, ZooKeeper unreachable).
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The cluster behind a daemon: where actions are agreed on and who may act.
pub trait Broker: Send + Sync {
    /// Applies an action through the cluster; returns once it is part of the state.
    fn propose(&self, action: Action) -> Result<()>;
    /// Proposes without waiting for the outcome (for threads that must not block).
    fn propose_detached(&self, action: Action) {
        if let Err(e) = self.propose(action) {
            log::warn!("cannot record a change: {e}");
        }
    }
    /// The current replicated state, as a shared snapshot: reading it copies nothing
    /// (a broker makes a new snapshot when the state changes, not when it is read).
    fn state(&self) -> std::sync::Arc<ReplicatedState>;
    /// Whether this daemon acts: checks masters and fails them over. True for a
    /// standalone daemon, and for a cluster's leader while it holds its lease.
    fn is_acting(&self) -> bool;
    /// A channel that receives a message after each change of the state or leadership.
    fn subscribe(&self) -> Receiver<()>;
    /// This daemon's view of the cluster.
    fn cluster(&self) -> ClusterStatus;
    /// Adds or removes a daemon; returns once the change is committed.
    fn change_members(&self, change: MemberChange, addr: &Addr) -> Result<()> {
        let _ = (change, addr);
        Err(invalid_input!(
            "cluster membership can only change with -broker=raft"
        ))
    }
    /// Shares this daemon's view of the masters with the other daemons; best effort,
    /// never blocks (see `views.rs`). A standalone daemon has nobody to tell.
    fn share_view(&self, view: MastersView) {
        let _ = view;
    }
    /// The views of the other daemons renewed within `max_age`.
    fn peer_views(&self, max_age: Duration) -> Vec<MastersView> {
        let _ = max_age;
        Vec::new()
    }
    /// Stops the broker's threads (the raft thread flushes its log first).
    fn shutdown(&self) {}
}

/// Adding or removing a cluster member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    Add,
    Remove,
}

/// What `GET /api/v1/cluster` shows: this node and the cluster as it sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterStatus {
    /// standalone, raft or zk.
    pub broker: String,
    /// Raft peer id (derived from the raft address), as 16 hex digits: JSON numbers
    /// cannot hold every u64 exactly.
    pub id: Option<String>,
    pub raft_addr: Option<String>,
    pub http_addr: String,
    /// leader, follower, candidate, pre_candidate (raft) or leader (standalone).
    pub role: String,
    /// Whether this node checks masters and fails them over.
    pub acting: bool,
    pub term: Option<u64>,
    pub leader: Option<PeerStatus>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub peers: Vec<PeerStatus>,
    /// Set when the broker has stopped working (e.g. its disk failed), or, with ZooKeeper,
    /// the last problem with the ensemble.
    pub error: Option<String>,
    /// The ZooKeeper session (zk only): `connected`, `connecting`, `disconnected` or
    /// `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zk_session: Option<String>,
}

impl ClusterStatus {
    /// The HTTP address of the leader when it is another daemon (where a change that
    /// only the leader makes should be sent).
    pub fn other_leader_http(self) -> Option<String> {
        self.leader
            .filter(|l| !l.this_node)
            .and_then(|l| l.http_addr)
    }

    /// Daemons that must find a master down before it is failed over: the `quorum`
    /// setting, or (0) a majority of the cluster's members (1 when standalone).
    pub fn quorum(&self, setting: usize) -> usize {
        match setting {
            0 => self.peers.len().max(1) / 2 + 1,
            set => set,
        }
    }
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStatus {
    /// Peer id as 16 hex digits.
    pub id: String,
    pub raft_addr: Option<String>,
    /// Known once the peer has connected to this node.
    pub http_addr: Option<String>,
    /// The peer's Sentinel-compatible port, if it has one.
    pub sentinel_addr: Option<String>,
    pub voter: bool,
    /// How far the peer's log matches the leader's (shown on the leader only).
    pub match_index: Option<u64>,
    pub this_node: bool,
}

/// The channels to wake when the state or leadership changes.
#[derive(Default)]
pub struct Subscribers(Mutex<Vec<Sender<()>>>);

impl Subscribers {
    /// A new channel that receives a message after each change.
    pub fn subscribe(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        lock(&self.0).push(tx);
        rx
    }

    /// Wakes every subscriber (a full channel already holds a wake-up).
    pub fn notify(&self) {
        let mut subscribers = lock(&self.0);
        subscribers.retain(|tx| {
            !matches!(
                tx.try_send(()),
                Err(crossbeam_channel::TrySendError::Disconnected(_))
            )
        });
    }
}
