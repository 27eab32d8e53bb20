//! What this daemon sees of each group right now, as shown by `GET /api/v1/groups`.
//!
//! The replicated state (names, masters, failover history) comes from the broker; the
//! observed part (is the master answering, which replicas it lists, their offsets and
//! links) is local to each daemon and is kept here, written by the monitor and the
//! failover worker and read by the API.

use crate::address::Addr;
use crate::broker::{FailoverRecord, Pause};
use crate::sync::lock;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// The watch state of a group as this daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WatchState {
    /// Added, not checked yet.
    #[default]
    Starting,
    /// The last check succeeded.
    Ok,
    /// Checks fail; the down window has not passed yet.
    Suspect,
    /// Down; a failover is queued.
    Down,
    /// The failover worker is at it.
    FailingOver,
    /// A planned switchover is under way (`switchover.rs`); the master is alive.
    SwitchingOver,
    /// A failover failed; automatic failover is off until the group is added again (it is
    /// still checked, and a returning old master is still fenced).
    Failed,
    /// The configured master says it is a replica; it is no longer watched.
    NotMaster,
    /// This daemon is not the leader, so it does not check.
    Follower,
}

/// A replica as this daemon last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaStatus {
    pub addr: Addr,
    /// Offset from the master's last `ROLE` reply.
    pub offset: i64,
    /// `up`, `down`, or `unknown` when its `INFO` could not be read.
    pub link: &'static str,
    /// `slave_priority`, when its `INFO` was read.
    pub priority: Option<u32>,
}

/// The observed part of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub state: WatchState,
    /// The daemon's link to the master is down: the server closed it, or the last
    /// check could not connect or get an answer (Sentinel's `disconnected` flag).
    pub disconnected: bool,
    /// When the current run of failed checks began (Unix ms).
    pub failing_since_ms: Option<u64>,
    /// Daemons of the cluster (this one included) that find the master down now.
    pub down_votes: u32,
    /// When the master last answered a check as master (Unix ms), for Sentinel's
    /// `last-ok-ping-reply`: set when a run of successful checks begins, and when a run
    /// of failed checks begins to the last success. A healthy check writes no
    /// observation, so while the master answers this stays at the run's first success.
    pub last_ok_ms: Option<u64>,
    pub last_error: Option<String>,
    /// For `NotMaster`: the address the configured master replicates from.
    pub replicating_from: Option<String>,
    pub replicas: Vec<ReplicaStatus>,
}

/// Observations of every group, shared between the monitor, the worker and the API.
#[derive(Default)]
pub struct Observations {
    groups: Mutex<HashMap<String, Observation>>,
}

impl Observations {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Observation>> {
        lock(&self.groups)
    }

    /// Changes one group's observation in place (creating it when missing).
    pub fn update(&self, group: &str, change: impl FnOnce(&mut Observation)) {
        let mut groups = self.lock();
        // Look up before inserting: this runs on every check, and `entry` would
        // allocate the key each time.
        match groups.get_mut(group) {
            Some(observation) => change(observation),
            None => change(groups.entry(group.to_string()).or_default()),
        }
    }
}

/// One group as reported by `GET /api/v1/groups`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub master: Addr,
    pub state: WatchState,
    /// This daemon's link to the master is down (see [`Observation::disconnected`]).
    pub disconnected: bool,
    /// Daemons of the cluster (this one included) that find the master down now.
    pub down_votes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_since_ms: Option<u64>,
    /// When the master last answered a check (see [`Observation::last_ok_ms`]); for the
    /// Sentinel port, not part of the HTTP API's reply.
    #[serde(skip)]
    pub last_ok_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub replicas: Vec<ReplicaStatus>,
    pub last_failover: Option<FailoverRecord>,
    /// This daemon is in tilt (its own loops ran late, see `monitor/core/tilt.rs`): the state
    /// shows what its checks say, but it starts no failover and counts no down vote.
    pub tilt: bool,
    /// Paused for maintenance (the group, or every group): no automatic failover.
    pub paused: Option<Pause>,
    /// Why an automatic failover would wait for an acknowledgement now
    /// (`failover_block`), if it would.
    pub blocked: Option<String>,
}
